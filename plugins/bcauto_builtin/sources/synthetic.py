"""Synthetic blood-smear images: eight cell types drawn with NumPy, for runs without real data.

Each image is a crop of a pale pink smear (red cells with central pallor) with one white cell (or a few
platelets) on top. The classes differ the way real cells do: size, nucleus shape (round, bilobed,
multilobed, kidney), nucleus-to-cytoplasm ratio, cytoplasm colour and granules (orange in eosinophils, dark
and covering the nucleus in basophils). Position, size, rotation, stain and noise vary per image and the
class ranges overlap, so a small CNN has something to learn but does not score 1.0 at once.

Rendering is vectorised over chunks of images; lengths are fractions of the image side, so any size works.
"""

from __future__ import annotations

import numpy as np

from bcauto.data import Dataset
from bcauto_builtin.sources import BLOOD_CELL_CLASSES, BLOOD_CELL_COUNTS, parse_positive_int

DEFAULT_SIZE = 4000
LOBES = 4  # nucleus = union of up to LOBES discs, minus one notch disc (kidney shapes)
CANVASES = 8  # smear backgrounds per call; images take random crops of them
ABSENT = -1e4  # radius of a disc that is not there
_CHUNK_PIXELS = 400_000  # pixels rendered at once: float32 temporaries of ~5 MB stay cheap to allocate


def class_counts(n: int) -> np.ndarray:
    """How many of ``n`` images each class gets: proportional to the PBC counts, summing to exactly ``n``."""
    share = np.asarray(BLOOD_CELL_COUNTS, float) / sum(BLOOD_CELL_COUNTS) * n
    counts = np.floor(share).astype(np.int64)
    counts[np.argsort(share - counts)[::-1][: n - counts.sum()]] += 1  # largest remainders
    return counts


def generate(n: int, image_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images (n x S x S x 3) and int64 labels; the same seed gives the same data."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(BLOOD_CELL_CLASSES)), class_counts(n)))
    params = _sample(labels, rng)
    canvases = _smear_canvases(image_size, rng)
    images = np.empty((n, image_size, image_size, 3), np.uint8)
    chunk = max(1, _CHUNK_PIXELS // (image_size * image_size))
    for label in range(len(BLOOD_CELL_CLASSES)):  # one class at a time: _render skips the features it lacks
        members = np.flatnonzero(labels == label)
        for start in range(0, len(members), chunk):
            part = members[start : start + chunk]
            images[part] = _render({key: value[part] for key, value in params.items()}, canvases, image_size, rng)
    return images, labels.astype(np.int64)


def load(arg, image_size: int, options: dict) -> Dataset:
    """The ``synthetic`` source: ``options["synthetic_size"]`` images, or ``arg`` (``synthetic:2000``)."""
    if arg:
        n = parse_positive_int(arg, "synthetic:N (number of images)")
    else:
        n = int(options.get("synthetic_size", DEFAULT_SIZE))
    seed = int(options.get("seed", 0))
    images, labels = generate(n, image_size, seed)
    return Dataset(
        images, labels, BLOOD_CELL_CLASSES, f"synthetic:{n}", (f"synthetic: {n} generated blood-cell images (seed {seed}), not real data",)
    )


# ---- per-class parameters ---------------------------------------------------------------------------------


def _sample(labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-image drawing parameters: lengths as fractions of the image side, in the cell's rotated frame."""
    n = len(labels)
    p = {
        "cx": rng.uniform(0.42, 0.58, n),
        "cy": rng.uniform(0.42, 0.58, n),
        "theta": rng.uniform(0, 2 * np.pi, n),
        "cell_r": np.zeros(n),
        "aspect": rng.uniform(0.88, 1.12, n),
        "wobble": np.zeros(n),
        "wobble_k": rng.integers(3, 7, n).astype(float),
        "wobble_phase": rng.uniform(0, 2 * np.pi, n),
        "cyt_rgb": np.zeros((n, 3)),
        "nuc_rgb": np.zeros((n, 3)),
        "chromatin": np.zeros(n),
        "lobe_u": np.zeros((n, LOBES)),
        "lobe_v": np.zeros((n, LOBES)),
        "lobe_r": np.full((n, LOBES), ABSENT),
        "cut_u": np.zeros(n),
        "cut_v": np.zeros(n),
        "cut_r": np.full(n, ABSENT),
        "gran_density": np.zeros(n),
        "gran_rgb": np.zeros((n, 3)),
        "gran_over_nucleus": np.zeros(n, bool),
        # stain and acquisition
        "gain": _stain_gain(n, rng),
        "noise": rng.uniform(2.0, 9.0, n),
        "canvas": rng.integers(0, CANVASES, n),
        "offset": rng.uniform(0, 1, (n, 2)),
        "dihedral": rng.integers(0, 8, n),
    }
    for label, make in enumerate(_CLASS_MAKERS):
        idx = np.flatnonzero(labels == label)
        if len(idx):
            for key, value in make(len(idx), rng).items():
                p[key][idx] = value
    return p


def _stain_gain(n, rng):
    """Per-image RGB gains: brightness, a shift along the pink-to-lilac stain axis, a little per channel."""
    lilac = rng.exponential(0.8, (n, 1)) * np.array([-0.02, -0.03, 0.03])
    return rng.uniform(0.9, 1.06, (n, 1)) * (1 + lilac + rng.normal(0, 0.01, (n, 3)))


def _colour(rgb, m, rng, spread=10.0):
    return np.clip(np.asarray(rgb, float) + rng.normal(0, spread, (m, 3)), 0, 255)


def _round_nucleus(r, m, rng, size, offset):
    """One lobe: radius in ``size`` x cell radius, off centre by ``offset`` x cell radius (ranges)."""
    angle = rng.uniform(0, 2 * np.pi, m)
    shift = rng.uniform(*offset, m) * r
    lobe_u, lobe_v, lobe_r = np.zeros((m, LOBES)), np.zeros((m, LOBES)), np.full((m, LOBES), ABSENT)
    lobe_u[:, 0], lobe_v[:, 0] = shift * np.cos(angle), shift * np.sin(angle)
    lobe_r[:, 0] = rng.uniform(*size, m) * r
    return {"lobe_u": lobe_u, "lobe_v": lobe_v, "lobe_r": lobe_r}


def _lobes_on_arc(r, m, rng, count, arc_radius, spread_deg, size):
    """``count`` lobes (int array) evenly spaced on an arc: bilobed and multilobed (segmented) nuclei."""
    lobe_u, lobe_v, lobe_r = np.zeros((m, LOBES)), np.zeros((m, LOBES)), np.full((m, LOBES), ABSENT)
    radius = rng.uniform(*arc_radius, m) * r
    spread = np.deg2rad(rng.uniform(*spread_deg, m))
    for j in range(LOBES):
        present = j < count
        angle = np.pi / 2 + spread * (j / np.maximum(count - 1, 1) - 0.5) + rng.normal(0, 0.15, m)
        lobe_u[:, j] = radius * np.cos(angle) + rng.normal(0, 0.04, m) * r
        lobe_v[:, j] = radius * np.sin(angle) - radius * 0.55
        lobe_r[:, j] = np.where(present, rng.uniform(*size, m) * r, ABSENT)
    return {"lobe_u": lobe_u, "lobe_v": lobe_v, "lobe_r": lobe_r}


def _basophil(m, rng):
    r = rng.uniform(0.135, 0.18, m)
    lobes = _lobes_on_arc(r, m, rng, rng.integers(2, 4, m), (0.15, 0.3), (60, 160), (0.4, 0.55))
    return {
        "cell_r": r,
        "wobble": rng.uniform(0.03, 0.09, m),
        "cyt_rgb": _colour((150, 100, 175), m, rng, 14),
        "nuc_rgb": _colour((72, 32, 112), m, rng),
        "chromatin": rng.uniform(0.1, 0.3, m),
        "gran_density": rng.uniform(0.25, 0.55, m),
        "gran_rgb": _colour((48, 18, 78), m, rng),
        "gran_over_nucleus": np.ones(m, bool),
        **lobes,
    }


def _eosinophil(m, rng):
    r = rng.uniform(0.165, 0.22, m)
    lobes = _lobes_on_arc(r, m, rng, np.where(rng.random(m) < 0.85, 2, 3), (0.3, 0.45), (90, 150), (0.27, 0.36))
    return {
        "cell_r": r,
        "cyt_rgb": _colour((228, 178, 160), m, rng, 12),
        "nuc_rgb": _colour((98, 48, 146), m, rng),
        "chromatin": rng.uniform(0.1, 0.3, m),
        "gran_density": rng.uniform(0.2, 0.6, m),
        "gran_rgb": _colour((218, 118, 82), m, rng, 14),
        **lobes,
    }


def _erythroblast(m, rng):
    r = rng.uniform(0.1, 0.145, m)
    return {
        "cell_r": r,
        "cyt_rgb": _colour((196, 164, 192), m, rng, 16),
        "nuc_rgb": _colour((52, 22, 82), m, rng),
        "chromatin": rng.uniform(0.05, 0.2, m),
        **_round_nucleus(r, m, rng, (0.55, 0.76), (0.0, 0.3)),
    }


def _immature_granulocyte(m, rng):
    r = rng.uniform(0.175, 0.24, m)
    nucleus = _round_nucleus(r, m, rng, (0.5, 0.68), (0.12, 0.32))
    notch = rng.random(m) < 0.12  # some metamyelocytes start to indent, like a monocyte
    return {
        "cell_r": r,
        "cyt_rgb": _colour((172, 168, 222), m, rng, 14),
        "nuc_rgb": _colour((112, 66, 166), m, rng),
        "chromatin": rng.uniform(0.2, 0.4, m),
        "gran_density": rng.uniform(0.0, 0.15, m),
        "gran_rgb": _colour((196, 150, 196), m, rng),
        **nucleus,
        **_notch(r, m, rng, notch, nucleus),
    }


def _lymphocyte(m, rng):
    r = rng.uniform(0.115, 0.155, m)
    return {
        "cell_r": r,
        "cyt_rgb": _colour((182, 186, 228), m, rng, 14),
        "nuc_rgb": _colour((76, 36, 126), m, rng),
        "chromatin": rng.uniform(0.15, 0.35, m),
        **_round_nucleus(r, m, rng, (0.72, 0.9), (0.0, 0.14)),
    }


def _monocyte(m, rng):
    r = rng.uniform(0.185, 0.25, m)
    nucleus = _round_nucleus(r, m, rng, (0.55, 0.7), (0.0, 0.15))
    return {
        "cell_r": r,
        "wobble": rng.uniform(0.03, 0.1, m),
        "cyt_rgb": _colour((214, 204, 212), m, rng, 12),
        "nuc_rgb": _colour((132, 88, 172), m, rng),
        "chromatin": rng.uniform(0.2, 0.4, m),
        "gran_density": rng.uniform(0.0, 0.06, m),
        "gran_rgb": _colour((238, 228, 240), m, rng),
        **nucleus,
        **_notch(r, m, rng, np.ones(m, bool), nucleus),
    }


def _notch(r, m, rng, where, nucleus):
    """A disc cut out of the nucleus edge: the kidney shape of monocytes (and some metamyelocytes)."""
    angle = rng.uniform(0, 2 * np.pi, m)
    lobe_r = nucleus["lobe_r"][:, 0]
    distance = lobe_r * rng.uniform(0.75, 1.05, m)
    return {
        "cut_u": nucleus["lobe_u"][:, 0] + distance * np.cos(angle),
        "cut_v": nucleus["lobe_v"][:, 0] + distance * np.sin(angle),
        "cut_r": np.where(where, lobe_r * rng.uniform(0.55, 0.8, m), ABSENT),
    }


def _neutrophil(m, rng):
    r = rng.uniform(0.165, 0.21, m)
    lobes = _lobes_on_arc(r, m, rng, rng.integers(3, 5, m), (0.34, 0.47), (160, 240), (0.21, 0.28))
    return {
        "cell_r": r,
        "cyt_rgb": _colour((228, 204, 216), m, rng, 12),
        "nuc_rgb": _colour((92, 42, 142), m, rng),
        "chromatin": rng.uniform(0.1, 0.3, m),
        "gran_density": rng.uniform(0.05, 0.25, m),
        "gran_rgb": _colour((204, 164, 200), m, rng),
        **lobes,
    }


def _platelet(m, rng):
    count = rng.integers(1, 4, m)
    lobe_u, lobe_v, lobe_r = (rng.normal(0, 0.05, (m, LOBES)), rng.normal(0, 0.05, (m, LOBES)), np.full((m, LOBES), ABSENT))
    lobe_u[:, 0] = lobe_v[:, 0] = 0.0
    for j in range(LOBES):
        lobe_r[:, j] = np.where(j < count, rng.uniform(0.025, 0.05, m), ABSENT)
    return {
        "cell_r": np.full(m, ABSENT),
        "nuc_rgb": _colour((146, 96, 186), m, rng, 14),
        "chromatin": rng.uniform(0.4, 0.8, m),
        "lobe_u": lobe_u,
        "lobe_v": lobe_v,
        "lobe_r": lobe_r,
    }


_CLASS_MAKERS = (
    _basophil,
    _eosinophil,
    _erythroblast,
    _immature_granulocyte,
    _lymphocyte,
    _monocyte,
    _neutrophil,
    _platelet,
)  # in BLOOD_CELL_CLASSES order


# ---- drawing ----------------------------------------------------------------------------------------------


def _smear_canvases(size: int, rng: np.random.Generator) -> np.ndarray:
    """CANVASES float32 smears of 3 x ``size`` pixels a side: peach background, overlapping red cells."""
    side = 3 * size
    canvases = np.empty((CANVASES, side, side, 3), np.float32)
    yy, xx = np.mgrid[:side, :side].astype(np.float32) + 0.5
    for canvas in canvases:
        canvas[...] = np.asarray((238, 216, 200)) + rng.normal(0, 4, 3)
        radius = rng.uniform(0.085, 0.12, 160) * size
        for cy, cx, r in zip(rng.uniform(0, side, 160), rng.uniform(0, side, 160), radius):
            box = (slice(max(int(cy - r - 2), 0), int(cy + r + 2)), slice(max(int(cx - r - 2), 0), int(cx + r + 2)))
            distance = np.hypot(yy[box] - cy, xx[box] - cx)
            body = np.clip(r - distance + 0.5, 0, 1)[..., None]
            pallor = np.clip((0.5 * r - distance) / (0.3 * r), 0, 1)[..., None]
            colour = np.asarray((226, 172, 168)) + rng.normal(0, 5, 3)
            rim = colour - 18 * np.clip(1 - np.abs(r - 1 - distance), 0, 1)[..., None]
            canvas[box] += body * (rim + pallor * ((236, 204, 194) - colour) - canvas[box])
    return canvases


def _backgrounds(p, canvases, size):
    """Each image's crop of its canvas, turned by one of the eight square symmetries."""
    out = np.empty((len(p["canvas"]), size, size, 3), np.float32)
    room = canvases.shape[1] - size
    for i, (canvas, (oy, ox), turn) in enumerate(zip(p["canvas"], p["offset"], p["dihedral"])):
        y, x = int(oy * room), int(ox * room)
        crop = np.rot90(canvases[canvas, y : y + size, x : x + size], turn % 4)
        out[i] = crop.transpose(1, 0, 2) if turn >= 4 else crop
    return out


def _coarse_noise(rng, n, size, grain):
    """Uniform noise in blobs of ``grain`` pixels (granules, chromatin)."""
    cells = -(-size // grain)
    field = rng.random((n, cells, cells), dtype=np.float32)
    return field.repeat(grain, axis=1).repeat(grain, axis=2)[:, :size, :size]


def _disc(u, v, cu, cv, r):
    """Anti-aliased coverage of discs centred (cu, cv) with radius r (all in pixels), per image."""
    return np.clip(r[:, None, None] + 0.5 - _length(u - cu[:, None, None], v - cv[:, None, None]), 0, 1)


def _length(x, y):
    """sqrt(x^2 + y^2), in place on the temporaries (np.hypot is several times slower)."""
    x = x * x
    x += y * y
    return np.sqrt(x, out=x)


def _paint(image, alpha, colour):
    """Blend ``colour`` (per image RGB, or per pixel) over ``image`` with coverage ``alpha``, in place."""
    delta = colour - image
    delta *= alpha[..., None]
    image += delta


def _render(p, canvases, size, rng):
    """uint8 images for one chunk of parameters ``p``."""
    n = len(p["theta"])
    f32 = {key: (value * size if key in _LENGTHS else value).astype(np.float32) for key, value in p.items()}
    image = _backgrounds(p, canvases, size)
    top, bottom = _window(p, size)  # cells cover only the middle of the image: draw them there alone
    _draw_cell(image[:, top:bottom, top:bottom], f32, top, size, rng)
    image *= f32["gain"][:, None, None]
    image = _blur(image)
    # uniform noise of the same spread as Gaussian noise: looks the same, draws several times faster
    noise = rng.random((n, size, size, 1), dtype=np.float32) - 0.5
    noise *= np.sqrt(12, dtype=np.float32) * f32["noise"][:, None, None, None]
    image += noise
    return np.clip(image, 0, 255, out=image).astype(np.uint8)


def _window(p, size):
    """First and last+1 pixel rows (and columns) that any cell of the chunk can touch."""
    lobe_reach = np.hypot(p["lobe_u"], p["lobe_v"]) + p["lobe_r"]
    cell_reach = p["cell_r"] * (1 + p["wobble"]) * np.maximum(p["aspect"], 1)
    reach = np.maximum(lobe_reach.max(axis=1), cell_reach)
    low = np.minimum(p["cx"], p["cy"]) - reach
    high = np.maximum(p["cx"], p["cy"]) + reach
    return max(int(np.floor(low.min() * size)) - 2, 0), min(int(np.ceil(high.max() * size)) + 2, size)


def _draw_cell(image, f32, offset, size, rng):
    """Paint cytoplasm, nucleus and granules onto ``image`` (a view whose first pixel is ``offset``), in place.

    Features that no image of the chunk has (lobes, notch, wobble, granules, cytoplasm) are skipped; chunks
    hold one class each, so this skips most of them.
    """
    n, side = image.shape[:2]
    yy, xx = np.mgrid[offset : offset + side, offset : offset + side].astype(np.float32) + 0.5
    dx, dy = xx - f32["cx"][:, None, None], yy - f32["cy"][:, None, None]
    cos, sin = np.cos(f32["theta"])[:, None, None], np.sin(f32["theta"])[:, None, None]
    u, v = dx * cos + dy * sin, dy * cos - dx * sin
    grain = max(1, round(size / 48))

    cytoplasm = None
    if (f32["cell_r"] > 0).any():
        radius = f32["cell_r"][:, None, None]
        if (f32["wobble"] > 0).any():  # irregular outline: the radius wobbles with the angle
            angle = np.arctan2(v, u)
            radius = radius * (
                1 + f32["wobble"][:, None, None] * np.cos(f32["wobble_k"][:, None, None] * angle + f32["wobble_phase"][:, None, None])
            )
        cytoplasm = np.clip(radius + 0.5 - _length(u / f32["aspect"][:, None, None], v), 0, 1)
        _paint(image, cytoplasm, f32["cyt_rgb"][:, None, None])

    nucleus = np.zeros_like(u)
    for j in np.flatnonzero((f32["lobe_r"] > 0).any(axis=0)):
        np.maximum(nucleus, _disc(u, v, f32["lobe_u"][:, j], f32["lobe_v"][:, j], f32["lobe_r"][:, j]), out=nucleus)
    if (f32["cut_r"] > 0).any():
        nucleus *= 1 - _disc(u, v, f32["cut_u"], f32["cut_v"], f32["cut_r"])
    chromatin = 1 + f32["chromatin"][:, None, None] * (_coarse_noise(rng, n, side, grain) - 0.5)
    _paint(image, nucleus, f32["nuc_rgb"][:, None, None] * chromatin[..., None])

    if cytoplasm is not None and (f32["gran_density"] > 0).any():
        granules = (_coarse_noise(rng, n, side, grain) < f32["gran_density"][:, None, None]) * cytoplasm
        granules *= np.where(f32["gran_over_nucleus"][:, None, None] > 0, 1, 1 - nucleus)
        _paint(image, 0.85 * granules, f32["gran_rgb"][:, None, None])


_LENGTHS = {"cx", "cy", "cell_r", "lobe_u", "lobe_v", "lobe_r", "cut_u", "cut_v", "cut_r"}


def _blur(image):
    """A [1, 2, 1] / 4 blur along both image axes (optics are never perfectly sharp)."""
    for axis in (1, 2):
        inner, before, after = [slice(None)] * 4, [slice(None)] * 4, [slice(None)] * 4
        inner[axis], before[axis], after[axis] = slice(1, -1), slice(None, -2), slice(2, None)
        out = image * np.float32(2)
        out[tuple(inner)] += image[tuple(before)] + image[tuple(after)]
        edge = [slice(None)] * 4
        for side in (0, -1):  # border pixels are left unblurred
            edge[axis] = side
            out[tuple(edge)] *= 2
        out *= np.float32(0.25)
        image = out
    return image
