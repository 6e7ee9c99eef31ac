"""Lab shifts: what differs between one lab's smear images and another's.

Where the corruptions in :mod:`bcauto_builtin.shifts` damage an image within one lab (blur, JPEG, debris),
these imitate a whole other set-up: another objective's magnification, another way of framing the cell,
another stain protocol, another lamp and camera white balance, a cheaper camera. Each maps a uint8 batch
N x H x W x 3 to a shifted batch of the same shape, deterministically for a given NumPy generator, at
severities 1 (mild) to 5 (heavy). Spatial sizes are written for 96-pixel crops and follow the image size.

They assume single-cell crops with the cell near the centre (as in PBC, BloodMNIST and most cell datasets):
the smear background that fills a zoomed-out or shifted image comes from the batch's crops with their
central discs replaced by their corners.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage, special
from skimage.color import hed_from_rgb, rgb_from_hed

from bcauto_builtin.shifts import _clip, _jpeg_at, _level, _resize, _scale, at_reference_size

# ---------------------------------------------------------------------------------------------------------
# geometry: zoom and translate about the centre, the uncovered border filled with smear background


def _background(image: np.ndarray) -> np.ndarray:
    """``image`` (float, H x W x 3) with its central disc (where the cell is) replaced by its corners.

    Rolling the crop by half its size brings the corners, smear background and red cells, to the centre;
    a feathered disc blends them in. Mirroring this instead of the crop keeps copies of the cell out of the
    border a zoom-out or a translation uncovers.
    """
    h, w, _ = image.shape
    yy, xx = np.mgrid[:h, :w]
    radius = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2) / min(h, w)
    alpha = np.clip((0.34 - radius) / 0.06, 0, 1)[..., None]
    return image * (1 - alpha) + np.roll(image, (h // 2, w // 2), axis=(0, 1)) * alpha


def _antialias(image: np.ndarray, factor: float) -> np.ndarray:
    return ndimage.gaussian_filter(image, (0.4 / factor, 0.4 / factor, 0)) if factor < 1 else image


def _box(coords: np.ndarray, lo: float, hi: float, soft: float) -> np.ndarray:
    """A box [lo, hi) along ``coords`` with Gaussian-blurred sides: side by side, such boxes sum to one."""
    return 0.5 * (special.erf((coords - lo) / soft) - special.erf((coords - hi) / soft))


def _resample(images: np.ndarray, factors, shifts, rng) -> np.ndarray:
    """Each image zoomed by ``factors[i]`` (> 1: in) about its centre and moved by ``shifts[i]`` = (dy, dx) pixels.

    What the output sees past the crop's edge is more smear: the crop sits in a grid of tiles of the same size,
    each the background (:func:`_background`) of an image of the batch drawn by ``rng``, turned or flipped at
    random, so the border shows neither black nor a mirror image; tiles blend over a few pixels.
    """
    n, h, w, _ = images.shape
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    soft = 1.5 * _scale(images) * np.sqrt(2)
    yy, xx = np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32)
    backgrounds: dict[tuple, np.ndarray] = {}  # (zoom factor, image): its background, pre-blurred when shrinking
    out = np.zeros(images.shape, np.float32)
    for i in range(n):
        f, shift = float(factors[i]), np.asarray(shifts[i], float)
        if f >= 1 and not np.any(shift):
            offset = centre - centre / f
            out[i] = ndimage.affine_transform(images[i].astype(np.float32), (1 / f, 1 / f, 1), (*offset, 0), order=1, mode="mirror")
            continue
        pitch = np.array([h, w]) * f
        reach = np.ceil((np.array([h, w]) / 2 + np.abs(shift) + 2 * soft) / pitch + 0.5).astype(int)
        for a in range(-reach[0], reach[0] + 1):
            for b in range(-reach[1], reach[1] + 1):
                lo = centre + shift + np.array([a, b]) * pitch - pitch / 2
                wy, wx = _box(yy, lo[0], lo[0] + pitch[0], soft), _box(xx, lo[1], lo[1] + pitch[1], soft)
                rows, cols = np.flatnonzero(wy > 1e-3), np.flatnonzero(wx > 1e-3)
                if not len(rows) or not len(cols):
                    continue
                if a == 0 and b == 0:
                    tile = _antialias(images[i].astype(np.float32), f)
                else:
                    j = int(rng.integers(n))
                    if (f, j) not in backgrounds:
                        backgrounds[f, j] = _antialias(_background(images[j].astype(np.float32)), f)
                    tile = backgrounds[f, j]
                    tile = np.ascontiguousarray(np.rot90(tile[:, ::-1] if rng.random() < 0.5 else tile, rng.integers(4)))
                (y0, y1), (x0, x1) = (rows[0], rows[-1] + 1), (cols[0], cols[-1] + 1)
                # source = output / f + offset, for the output window [y0:y1, x0:x1] of this tile
                offset = centre - (centre + shift + np.array([a, b]) * pitch) / f + np.array([y0, x0]) / f
                patch = ndimage.affine_transform(
                    tile, (1 / f, 1 / f, 1), (*offset, 0), output_shape=(y1 - y0, x1 - x0, 3), order=1, mode="mirror"
                )
                out[i, y0:y1, x0:x1] += (wy[y0:y1, None] * wx[None, x0:x1])[..., None] * patch
    return _clip(out)


def zoom(images: np.ndarray, factors, rng) -> np.ndarray:
    """Each image zoomed about its centre by ``factors[i]``: > 1 crops the centre, < 1 shows more smear."""
    return _resample(images, np.broadcast_to(factors, len(images)), np.zeros((len(images), 2)), rng)


MAGNIFY_IN = (1.15, 1.35, 1.6, 1.9, 2.25)
MAGNIFY_OUT = (1.25, 1.55, 1.9, 2.3, 2.7)


def magnification(images, severity, rng):
    """Another objective or camera adapter: the rng zooms each image in or out, severity says how far.

    A centred cell filling ~40% of a 96-pixel crop fills 46% to 90% zoomed in (severity 1 to 5, the centre
    cropped) and 32% to 15% zoomed out (the rest of the frame mirrored smear background).
    """
    zoom_in = rng.random(len(images)) < 0.5
    factors = np.where(zoom_in, _level(severity, MAGNIFY_IN), 1 / _level(severity, MAGNIFY_OUT))
    return zoom(images, factors, rng)


def _donors(n: int, rng) -> np.ndarray:
    """For each image, another image of the batch (itself only in a batch of one)."""
    return (np.arange(n) + rng.integers(1, n, n)) % n if n > 1 else np.zeros(1, int)


def framing(images, severity, rng):
    """Another cropping habit: the cell off-centre and a neighbour cell cut by the frame's edge.

    Each image moves by 6% to 26% of its side (severity 1 to 5) in a random direction, the uncovered
    border filled with mirrored smear background; a disc cut from the centre of another image of the batch
    (a neighbouring cell) is pasted on the opposite side, a quarter to 85% of its width inside the frame.
    """
    n, h, w, _ = images.shape
    size = min(h, w)
    angle = rng.uniform(0, 2 * np.pi, n)
    distance = _level(severity, (0.06, 0.11, 0.16, 0.21, 0.26)) * size * rng.uniform(0.85, 1.15, n)
    moved = _resample(images, np.ones(n), np.stack([np.sin(angle), np.cos(angle)], 1) * distance[:, None], rng)
    moved = moved.astype(np.float32)
    donors = _donors(n, rng)
    side = angle + np.pi + rng.uniform(-0.5, 0.5, n)
    radius = 0.22 * size
    inside = _level(severity, (0.25, 0.4, 0.55, 0.7, 0.85)) * 2 * radius
    uy, ux = np.sin(side), np.cos(side)
    edge = (size / 2) / np.maximum(np.abs(uy), np.abs(ux))
    reach = edge + radius - inside
    py, px = np.rint((h - 1) / 2 + uy * reach).astype(int), np.rint((w - 1) / 2 + ux * reach).astype(int)
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        dy, dx = py[i] - h // 2, px[i] - w // 2
        alpha = np.clip((radius - np.hypot(yy - py[i], xx - px[i])) / (0.08 * size), 0, 1)[..., None]
        donor = np.roll(images[donors[i]].astype(np.float32), (dy, dx), axis=(0, 1))
        moved[i] = moved[i] * (1 - alpha) + donor * alpha
    return _clip(moved)


# ---------------------------------------------------------------------------------------------------------
# colour: stain palettes in optical density, white balance, vignetting


def _to_stains(images: np.ndarray) -> np.ndarray:
    """Haematoxylin, eosin and residual concentrations (Ruifrok and Johnston's H&E-DAB basis, as in
    :func:`skimage.color.rgb2hed`, without its clipping so that the transform inverts exactly)."""
    od = -np.log((images.astype(np.float32) + 1) / 256)
    return od @ hed_from_rgb.astype(np.float32)


def _from_stains(stains: np.ndarray, extra_od=0.0) -> np.ndarray:
    od = stains @ rgb_from_hed.astype(np.float32) + extra_od
    return _clip(256 * np.exp(-od) - 1)


# per palette at full strength: haematoxylin gain, eosin gain, and optical density added to every pixel
# (a tinted background: eosin, haematoxylin, or a yellowing mountant that absorbs blue)
PALETTES = {
    "eosin_heavy": {"h": -0.15, "e": 1.4, "od": 0.10 * rgb_from_hed[1]},
    "blue_violet": {"h": 0.6, "e": -0.7, "od": np.array([0.16, 0.07, 0.0])},
    "pale": {"h": -0.6, "e": -0.6, "od": np.array([-0.02, -0.04, -0.08])},
    "yellow_background": {"h": 0.1, "e": -0.2, "od": np.array([0.0, 0.08, 0.35])},
}


def stain_transfer(images: np.ndarray, palettes, strengths) -> np.ndarray:
    """Each image moved towards ``palettes[i]`` (a :data:`PALETTES` key) by ``strengths[i]`` (0: unchanged)."""
    stains = _to_stains(images)
    k = np.asarray(strengths, np.float32)[:, None, None]
    h = np.array([PALETTES[p]["h"] for p in palettes], np.float32)[:, None, None]
    e = np.array([PALETTES[p]["e"] for p in palettes], np.float32)[:, None, None]
    od = np.stack([PALETTES[p]["od"] for p in palettes]).astype(np.float32)[:, None, None, :]
    stains[..., 0] *= 1 + h * k
    stains[..., 1] *= 1 + e * k
    return _from_stains(stains, od * k[..., None])


def stain_style(images, severity, rng):
    """Another staining protocol: each image's haematoxylin and eosin rescaled and its background tinted.

    The rng picks a palette per image (eosin-heavy pink, blue-violet, pale and faded, yellow background)
    and a strength within 15% of the severity's (0.2 to 1.0 of the palette's full change).
    """
    names = sorted(PALETTES)
    palettes = [names[j] for j in rng.integers(0, len(names), len(images))]
    strengths = _level(severity, (0.2, 0.4, 0.6, 0.8, 1.0)) * rng.uniform(0.85, 1.15, len(images))
    return stain_transfer(images, palettes, strengths)


CASTS = {  # relative channel gains at full strength
    "blue": (-0.7, -0.15, 0.6),
    "yellow": (0.35, 0.2, -0.9),
    "green": (-0.45, 0.45, -0.45),
    "magenta": (0.35, -0.6, 0.35),
    "cyan": (-0.8, 0.2, 0.35),
    "warm": (0.4, -0.1, -0.6),
}


def white_balance(images, severity, rng):
    """Another lamp, filter and camera white balance: a colour cast, and light falling off towards the corners.

    The rng picks a cast per image (blue, yellow, green, magenta, cyan, warm) and the vignette's centre;
    channel gains move 6% to 30% of the way (severity 1 to 5) and the corners darken by 10% to 50%.
    """
    n, h, w, _ = images.shape
    names = sorted(CASTS)
    direction = np.array([CASTS[names[j]] for j in rng.integers(0, len(names), n)], np.float32)
    strength = _level(severity, (0.06, 0.12, 0.18, 0.24, 0.3)) * rng.uniform(0.85, 1.15, (n, 1))
    gains = np.clip(1 + direction * strength, 0.2, None)[:, None, None, :]
    y, x = np.mgrid[-1 : 1 : h * 1j, -1 : 1 : w * 1j].astype(np.float32)
    cy, cx = rng.uniform(-0.25, 0.25, (2, n, 1, 1))
    falloff = _level(severity, (0.1, 0.2, 0.3, 0.4, 0.5)) * rng.uniform(0.85, 1.15, (n, 1, 1))
    light = np.clip(1 - falloff * ((y - cy) ** 2 + (x - cx) ** 2) / 2, 0.2, 1)[..., None]
    return _clip(images.astype(np.float32) * gains * light)


# ---------------------------------------------------------------------------------------------------------
# a cheap camera


@at_reference_size
def camera_optics(images, severity, rng):
    """A low-resolution camera behind soft optics: blur, a small sensor, noise, bled colour, JPEG.

    The image is blurred (sigma 0.4 to 1.6 pixels, severity 1 to 5), taken down to 80% to 32% of its side,
    given sensor noise, its colour (YCbCr chroma) blurred further, brought back up bilinearly and saved as
    JPEG at quality 85 to 40; all at 96 pixels (:func:`at_reference_size`), whatever the images' size.
    """
    _, h, w, _ = images.shape
    sigma = _level(severity, (0.4, 0.7, 1.0, 1.3, 1.6))
    blurred = _clip(ndimage.gaussian_filter(images.astype(np.float32), (0, sigma, sigma, 0)))
    factor = _level(severity, (0.8, 0.65, 0.5, 0.4, 0.32))
    small = (max(2, round(w * factor)), max(2, round(h * factor)))
    low = _resize(blurred, small, Image.BILINEAR).astype(np.float32)
    low += rng.normal(0, _level(severity, (1.5, 2.5, 3.5, 4.5, 6.0)), low.shape)
    ycc = np.stack([np.asarray(Image.fromarray(im).convert("YCbCr"), np.float32) for im in _clip(low)])
    bleed = _level(severity, (0.5, 1.0, 1.5, 2.0, 2.5)) * factor
    ycc[..., 1:] = ndimage.gaussian_filter(ycc[..., 1:], (0, bleed, bleed, 0))
    low = np.stack([np.asarray(Image.fromarray(im, "YCbCr").convert("RGB")) for im in _clip(ycc)])
    return _jpeg_at(_resize(low, (w, h), Image.BILINEAR), int(_level(severity, (85, 75, 65, 52, 40))))


# ---------------------------------------------------------------------------------------------------------
# a whole other lab

PARTS = (stain_style, magnification, framing, white_balance, camera_optics)  # in the order light meets them
PARTS_PER_SEVERITY = (2, 2, 3, 4, 5)


def other_lab(images, severity, rng):
    """Another lab altogether: several of the lab shifts at once, in the order the light meets them.

    At severity s each image goes through ``PARTS_PER_SEVERITY[s]`` of stain style, magnification,
    framing, white balance and camera optics (two at 1 and 2, all five at 5), the rng choosing which, and
    each at severity s or s - 1 (at least 1). Stain style or white balance is always among them: a colour
    difference is the one thing every other lab shows.
    """
    n = len(images)
    count = _level(severity, PARTS_PER_SEVERITY)
    chosen = np.zeros((n, len(PARTS)), bool)
    for i in range(n):
        colour = rng.choice([0, 3])
        rest = rng.permutation([j for j in range(len(PARTS)) if j != colour])[: count - 1]
        chosen[i, [colour, *rest]] = True
    levels = np.maximum(1, severity - rng.integers(0, 2, (n, len(PARTS))))
    out = images.copy()
    for j, part in enumerate(PARTS):
        for level in np.unique(levels[:, j]):
            members = np.flatnonzero(chosen[:, j] & (levels[:, j] == level))
            if len(members):
                out[members] = part(out[members], int(level), rng)
    return out
