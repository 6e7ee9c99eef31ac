"""Hand-crafted colour and texture features of each image's frame (border) and centre, for the outlier detector.

A blood-smear image is one stained cell in the middle of a pale, low-saturation background dotted with red
cells, so the frame shows smear background and red cells only. A cell pasted over a foreign picture
(drawing, photograph) keeps its own look but changes the frame: other colours, flat fills with hard edges,
straight or oriented structure, fine grain, and a background colour that no longer matches the one left
around the cell. The features measure those properties without absolute colours: each image is first
white-balanced on its own brightest pixels (labs differ in stain and white balance), the colour model
(:mod:`bcauto.audit.colour`) is learned from the dataset itself, and the rest compare the image with itself.

Images are reduced to about ``WORK`` pixels a side (area averaging) and processed in chunks, so memory stays
small; blurs run in the DCT domain (mirror boundaries), all chunk images at once.
"""

from __future__ import annotations

import numpy as np
from scipy.fft import dctn, idctn

WORK = 48  # working resolution (pixels a side)
FRAME_INNER = 0.32  # frame = pixels farther than this (fraction of the side) from the centre along x or y
CENTRE_RADIUS = 0.3  # the centre disc, where the cell is
WHITE_SHARE = 0.15  # brightest share of an image's pixels that defines its white point
CHUNK = 512
COVER_MARGIN = 20.0  # luminance levels below the frame's background (white-balanced to 230) that count as a red cell
LUMA = np.array([0.299, 0.587, 0.114], np.float32)

NAMES = (
    "colour_nll",  # filled in by bcauto.audit.colour: frame colours unusual for this dataset
    "background_mismatch",
    "foreign_colours",
    "saturation",
    "chroma_spread",
    "colour_count",
    "fine_texture",
    "mid_texture",
    "contrast",
    "chroma_fine",
    "chroma_coarse",
    "flat_fraction",
    "edge_peak",
    "orientation",
    "lbp_flat",
    "lbp_edge",
    "lbp_noise",
    "dark_fraction",
    "red_cell_cover",
    "frame_to_centre_texture",
)


def resize_matrix(size: int, target: int, zoom: float = 1.0) -> np.ndarray:
    """``target`` x ``size`` area-averaging weights: ``R @ img @ R.T`` resizes a square image (zoom: centre crop)."""
    span = size / zoom
    edges = np.linspace((size - span) / 2, (size + span) / 2, target + 1)
    pixels = np.arange(size)
    weights = np.clip(np.minimum(edges[1:, None], pixels[None] + 1) - np.maximum(edges[:-1, None], pixels[None]), 0, None)
    return (weights / weights.sum(1, keepdims=True)).astype(np.float32)


def work_size(size: int) -> int:
    """The working resolution for ``size``-pixel images: about ``WORK``, never upsampled."""
    return min(size, WORK)


def working_copies(images: np.ndarray, size: int) -> np.ndarray:
    """float32 RGB copies ``size`` pixels a side (area averaging), N x size x size x 3."""
    if images.shape[1] == size:
        return images.astype(np.float32)
    r = resize_matrix(images.shape[1], size)
    rows = np.matmul(r, images.astype(np.float32).transpose(0, 3, 1, 2))  # N x 3 x size x S
    return np.matmul(rows, r.T).transpose(0, 2, 3, 1)


def regions(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (size x size) of the frame and of the centre disc."""
    yy, xx = (np.mgrid[:size, :size] + 0.5) / size - 0.5
    return np.maximum(np.abs(yy), np.abs(xx)) > FRAME_INNER, np.hypot(yy, xx) < CENTRE_RADIUS


def colour_codes(pixels: np.ndarray, bits: int = 4) -> np.ndarray:
    """Quantised colour of every pixel (``bits`` per channel packed in one integer) of float RGB ``pixels``."""
    q = np.clip(pixels, 0, 255).astype(np.int32) >> (8 - bits)
    return (q[..., 0] << (2 * bits)) | (q[..., 1] << bits) | q[..., 2]


# uniform local binary patterns (8 neighbours): 0..8 = bits set in one run, 9 = any other pattern
_LBP_TABLE = np.array([bin(c).count("1") if bin(c ^ ((c << 1 | c >> 7) & 255)).count("1") <= 2 else 9 for c in range(256)])
_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


def image_features(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image features (N x len(NAMES), float64; ``colour_nll`` left at 0) and white-balanced frame colour
    codes (N x frame pixels, int16) for the dataset's colour model."""
    size = work_size(images.shape[1])
    frame, centre = regions(size)
    features = np.zeros((len(images), len(NAMES)))
    codes = np.empty((len(images), int(frame.sum())), np.int16)
    for start in range(0, len(images), CHUNK):
        work = white_balanced(working_copies(images[start : start + CHUNK], size))
        features[start : start + len(work), 1:] = _chunk_features(work, frame, centre)
        codes[start : start + len(work)] = colour_codes(work[:, frame])
    return features, codes


def white_balanced(work: np.ndarray) -> np.ndarray:
    """Each image scaled per channel so that its brightest pixels (the smear background) become a neutral 230."""
    n = len(work)
    flat = work.reshape(n, -1, 3)
    lum = flat @ LUMA
    k = int((1 - WHITE_SHARE) * lum.shape[1])
    bright = lum >= np.partition(lum, k, axis=1)[:, k : k + 1]
    white = (flat * bright[..., None]).sum(1) / bright.sum(1)[:, None]
    return work * (230.0 / np.maximum(white, 8.0))[:, None, None, :]


def _blurs(values: np.ndarray, sigmas) -> list[np.ndarray]:
    """Gaussian blurs of N x H x W ``values`` (mirror boundaries), one per sigma (pixels), through one DCT."""
    h = values.shape[1]
    spectrum = dctn(values, axes=(1, 2), norm="ortho")
    freq = (np.pi * np.arange(h) / h) ** 2
    out = []
    for sigma in sigmas:
        gain = np.exp(-0.5 * sigma**2 * (freq[:, None] + freq[None, :])).astype(np.float32)
        out.append(idctn(spectrum * gain, axes=(1, 2), norm="ortho"))
    return out


def band_pass(values: np.ndarray, fine: float, coarse: float) -> np.ndarray:
    """Blur of ``fine`` minus blur of ``coarse`` pixels (Gaussian sigmas, mirror boundaries), through one DCT."""
    h = values.shape[1]
    freq = (np.pi * np.arange(h) / h) ** 2
    radius = freq[:, None] + freq[None, :]
    gain = (np.exp(-0.5 * fine**2 * radius) - np.exp(-0.5 * coarse**2 * radius)).astype(np.float32)
    return idctn(dctn(values, axes=(1, 2), norm="ortho") * gain, axes=(1, 2), norm="ortho")


def _quantile(values: np.ndarray, q: float) -> np.ndarray:
    """Per-row ``q`` quantile (nearest rank) of N x P ``values``."""
    k = min(int(q * values.shape[1]), values.shape[1] - 1)
    return np.partition(values, k, axis=1)[:, k]


def _chunk_features(work: np.ndarray, frame: np.ndarray, centre: np.ndarray) -> np.ndarray:
    lum = work @ LUMA
    c1 = work[..., 0] - work[..., 1]  # red-green
    c2 = 0.5 * (work[..., 0] + work[..., 1]) - work[..., 2]  # yellow-blue
    cols = [_background_mismatch(work, lum, frame, centre), _foreign_colours(work, frame, centre)]

    # colour of the frame: saturation, spread, number of distinct colours
    top, bottom = work[:, frame].max(-1), work[:, frame].min(-1)
    cols.append(_quantile((top - bottom) / (top + 8.0), 0.9))
    cols.append(np.log1p(np.hypot(c1[:, frame].std(1), c2[:, frame].std(1))))
    codes = np.sort(colour_codes(work[:, frame], bits=5), axis=1)
    cols.append(np.log((np.diff(codes, axis=1) != 0).sum(1) + 1.0))

    # texture: band-pass energy of luminance at three scales (shares of the total) and of the chroma
    blur1, blur2, blur4 = _blurs(lum, (1.0, 2.0, 4.0))
    bands = [np.abs(b)[:, frame].mean(1) for b in (lum - blur1, blur1 - blur2, blur2 - blur4)]
    total = bands[0] + bands[1] + bands[2] + 1.0
    cols += [np.log((bands[0] + 0.1) / total), np.log((bands[1] + 0.1) / total), np.log(total)]
    chroma = [_blurs(c, (1.5, 5.0)) for c in (c1, c2)]
    cols.append(np.log1p(sum(np.abs(c - b[0])[:, frame].mean(1) for c, b in zip((c1, c2), chroma))))
    cols.append(np.log1p(sum(np.abs(b[0] - b[1])[:, frame].mean(1) for b in chroma)))

    # gradients: flat fills with hard edges (drawings), and the orientation of the structure
    gy, gx = np.gradient(blur1, axis=(1, 2))
    magnitude = np.hypot(gx, gy)[:, frame]
    cols.append((magnitude < 0.25).mean(1))
    cols.append(np.log((_quantile(magnitude, 0.98) + 0.1) / (np.median(magnitude, axis=1) + 0.1)))
    energies = np.stack([(d * d)[:, frame].mean(1) for d in (gx, gy, gx + gy, gx - gy)], 1)
    energies[:, 2:] *= 0.5
    cols.append(np.log((energies.max(1) + 0.01) / (energies.min(1) + 0.01)))  # ~0 for the isotropic smear

    hist = _lbp_histogram(blur1, frame)
    cols += [hist[:, 0] + hist[:, 8], hist[:, 3:6].sum(1), hist[:, 9]]
    cols.append((np.median(lum[:, frame], axis=1) - _quantile(lum[:, frame], 0.03)) / 230.0)

    # what focus barely changes: how much of the frame red cells cover (pixels clearly darker than its
    # bright background; a blur moves their edges, not their area), and the frame's fine texture against the
    # cell's (a blur smooths both; a fill behind a sharp cell smooths only the frame)
    background = _quantile(lum[:, frame], 0.9)
    cols.append(np.log((lum[:, frame] < background[:, None] - COVER_MARGIN).mean(1) + 0.02))  # log: a bare frame stands out
    detail = np.abs(lum - blur1) + np.abs(blur1 - blur2)
    cols.append(np.log((detail[:, frame].mean(1) + 0.1) / (detail[:, centre].mean(1) + 0.1)))
    return np.stack(cols, 1)


def _lbp_histogram(lum: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Shares of the uniform-LBP classes (10) among frame pixels; a neighbour counts if brighter by > 1 level."""
    n, h, w = lum.shape
    padded = np.pad(lum, ((0, 0), (1, 1), (1, 1)), mode="edge")
    code = np.zeros((n, h, w), np.int32)
    for bit, (dy, dx) in enumerate(_NEIGHBOURS):
        code |= (padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] > lum + 1.0).astype(np.int32) << bit
    classes = _LBP_TABLE[code[:, frame]]
    hist = np.bincount((classes + 10 * np.arange(n)[:, None]).ravel(), minlength=10 * n).reshape(n, 10)
    return hist / classes.shape[1]


def _bright_mean(pixels: np.ndarray, lum: np.ndarray, share: float) -> np.ndarray:
    """Mean colour (N x 3) of the brightest ``share`` of each row of ``pixels`` (N x P x 3)."""
    bright = lum >= _quantile(lum, 1 - share)[:, None]
    return (pixels * bright[..., None]).sum(1) / np.maximum(bright.sum(1), 1)[:, None]


def _background_mismatch(work, lum, frame, centre) -> np.ndarray:
    """Colour distance between the background left near the cell and the frame's (brightest quarter of each)."""
    inner = _bright_mean(work[:, centre], lum[:, centre], 0.25)
    outer = _bright_mean(work[:, frame], lum[:, frame], 0.25)
    return np.log1p(np.linalg.norm(inner - outer, axis=1))


def _foreign_colours(work, frame, centre) -> np.ndarray:
    """Share of frame pixels whose (coarse) colour appears nowhere in the centre disc: a smear's frame repeats
    the background and red-cell colours found around the cell."""
    n = len(work)
    inner, outer = colour_codes(work[:, centre], bits=3), colour_codes(work[:, frame], bits=3)
    offsets = 512 * np.arange(n)[:, None]
    present = np.bincount((inner + offsets).ravel(), minlength=512 * n) > 1
    return 1.0 - present[(outer + offsets)].mean(1)
