"""Data audit on a contaminated copy of a real image folder: recall and false positives per kind, wall time.

The contamination is generated here, procedurally (no downloads), the way the seed team's training set was
spoiled: a share of the cells is cut out and pasted over a foreign picture (cartoon-like drawings and
photo-like natural textures), and exact and near duplicates (re-encoded JPEG, brightness, shift, crop) are
added, some of them under another label, with a few blank and corrupt images. Six generator variants can
be scored: ``dev`` (the one the detector was developed against), ``held-out`` (other shapes, palettes,
textures and paste geometry, never looked at while developing), ``photos`` (crops of real photographs
shipped with scikit-image, some faded towards white, under every paste shape), ``plain`` (flat, grainy or
gradient fills in the colour of the image's own smear background) and ``bare`` (the image itself blurred,
mottled fills, its own background pixels resampled), against which the bare-frame check was developed, and
``bare-held-out`` (a tiled corner patch, a wide median filter, blur plus sensor noise), fixed before that
check was first run on it. Another run audits the clean images after a global stain change (another lab's
colours) and with one image in ten defocused, to check that the false-positive rate depends on neither.
Only the images of ``--data`` are read; nothing is written into the repository.

    python bench/audit.py [--data ../shared/data/pbc96] [--variants dev,held-out,photos,plain,bare,bare-held-out]
        [--stain-check] [--sheets DIR]
"""

from __future__ import annotations

import argparse
import functools
import io
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

DEFAULT_DATA = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "pbc96")


# ---- foreign pictures ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """Parameters of one foreign-background generator."""

    name: str
    photo_kinds: tuple[str, ...]
    palettes: tuple[str, ...]
    paste: tuple[str, ...]  # how the cell is cut out
    dilate: tuple[int, int]  # pixels added around a segmented cell
    jpeg: tuple[int, int]
    cartoon_share: float = 0.0  # of the pasted images; the rest get photo-like textures
    cartoon_saturation: tuple[float, float] = (0.0, 0.0)
    cartoon_value: tuple[float, float] = (0.0, 0.0)
    cartoon_shapes: tuple[int, int] = (0, 0)
    cartoon_outline: float = 0.0  # chance of black outlines
    cartoon_patterns: tuple[str, ...] = ("flat",)  # fills besides flat colour
    photo_beta: tuple[float, float] = (2.0, 2.0)  # spectral slope of the fractal noise
    wash: tuple[float, float] = (0.0, 0.0)  # share of white blended into the foreign picture (faded prints, pale scans)


PALETTES = {  # natural colour ramps, dark to light (RGB)
    "foliage": ((18, 40, 12), (50, 96, 30), (112, 150, 60), (190, 210, 120)),
    "earth": ((40, 28, 18), (96, 70, 44), (150, 118, 80), (210, 186, 150)),
    "sky": ((40, 80, 150), (90, 140, 210), (170, 200, 235), (245, 248, 252)),
    "water": ((8, 40, 60), (20, 90, 110), (60, 150, 160), (200, 230, 230)),
    "rock": ((50, 50, 52), (100, 98, 95), (150, 148, 142), (210, 208, 200)),
    "sand": ((150, 120, 80), (196, 170, 126), (222, 200, 160), (244, 232, 206)),
    "sunset": ((60, 20, 50), (180, 60, 40), (240, 150, 60), (255, 230, 150)),
    "skin": ((120, 70, 50), (190, 130, 100), (230, 180, 150), (250, 220, 200)),
    "lavender": ((70, 50, 100), (140, 110, 170), (200, 180, 220), (240, 230, 248)),
    "night": ((5, 5, 20), (20, 30, 70), (60, 70, 120), (200, 200, 160)),
}

VARIANTS = {
    "dev": Variant(
        name="dev",
        cartoon_share=0.5,
        cartoon_saturation=(0.5, 1.0),
        cartoon_value=(0.55, 1.0),
        cartoon_shapes=(3, 14),
        cartoon_outline=0.6,
        cartoon_patterns=("flat", "gradient"),
        photo_kinds=("fractal", "landscape"),
        photo_beta=(1.6, 2.4),
        palettes=("foliage", "earth", "sky", "water", "rock"),
        paste=("mask", "disc", "square"),
        dilate=(1, 4),
        jpeg=(85, 95),
    ),
    "held-out": Variant(
        name="held-out",
        cartoon_share=0.45,
        cartoon_saturation=(0.12, 0.6),
        cartoon_value=(0.7, 1.0),
        cartoon_shapes=(1, 24),
        cartoon_outline=0.3,
        cartoon_patterns=("stripes", "dots", "checker", "flat"),
        photo_kinds=("wood", "marble", "bokeh", "bricks", "grain"),
        photo_beta=(1.2, 3.0),
        palettes=("sand", "sunset", "skin", "lavender", "night", "rock"),
        paste=("ellipse", "mask", "rounded"),
        dilate=(3, 9),
        jpeg=(75, 98),
    ),
    "photos": Variant(
        name="photos",
        photo_kinds=("real",),
        palettes=tuple(PALETTES),
        paste=("mask", "disc", "square", "ellipse", "rounded"),
        dilate=(1, 9),
        jpeg=(70, 98),
        wash=(0.0, 0.6),
    ),
    "plain": Variant(
        name="plain",
        photo_kinds=("flat", "noise", "gradient"),
        palettes=("rock",),
        paste=("mask", "disc", "square", "ellipse", "rounded"),
        dilate=(1, 9),
        jpeg=(80, 95),
    ),
    "bare": Variant(
        name="bare",
        photo_kinds=("blurred", "mottled", "resampled"),
        palettes=("rock",),
        paste=("mask", "disc", "square", "ellipse", "rounded"),
        dilate=(1, 9),
        jpeg=(75, 95),
    ),
    "bare-held-out": Variant(
        name="bare-held-out",
        photo_kinds=("tiled", "median", "noisy-blur"),
        palettes=("rock",),
        paste=("mask", "disc", "square", "ellipse", "rounded"),
        dilate=(1, 9),
        jpeg=(70, 95),
    ),
}
SMEAR_FILLS = {"flat", "noise", "gradient", "blurred", "mottled", "resampled", "tiled", "median", "noisy-blur"}

# real photographs shipped with scikit-image (no download): colour ones as they are, grey ones tinted
COLOUR_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel")
GREY_PHOTOS = ("camera", "moon", "coins", "page", "text", "clock", "brick", "grass", "gravel", "cell")


def hsv_colour(rng, saturation, value) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*saturation), rng.uniform(*value))
    return int(r * 255), int(g * 255), int(b * 255)


def cartoon(size: int, rng: np.random.Generator, v: Variant) -> np.ndarray:
    """A clip-art-like drawing: flat or patterned fills, simple shapes, optional black outlines."""
    scale = 2  # drawn at twice the size, then reduced: anti-aliased edges
    side = size * scale

    def colour():
        return hsv_colour(rng, v.cartoon_saturation, v.cartoon_value)

    image = Image.new("RGB", (side, side), colour())
    draw = ImageDraw.Draw(image)
    pattern = rng.choice(v.cartoon_patterns)
    if pattern == "gradient":
        top, bottom = np.array(colour(), float), np.array(colour(), float)
        ramp = np.linspace(0, 1, side)[:, None, None]
        image = Image.fromarray(np.broadcast_to(top + ramp * (bottom - top), (side, side, 3)).astype(np.uint8))
        draw = ImageDraw.Draw(image)
    elif pattern == "stripes":
        width, other = int(rng.integers(4, 24)) * scale // 2, colour()
        for x in range(-side, 2 * side, 2 * width):
            draw.polygon([(x, 0), (x + width, 0), (x + width + side // 2, side), (x + side // 2, side)], fill=other)
    elif pattern == "dots":
        step, radius, other = int(rng.integers(10, 30)), int(rng.integers(3, 8)), colour()
        for y in range(0, side, step):
            for x in range((y // step % 2) * step // 2, side, step):
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=other)
    elif pattern == "checker":
        step, other = int(rng.integers(12, 40)), colour()
        for y in range(0, side, step):
            for x in range((y // step % 2) * step, side, 2 * step):
                draw.rectangle([x, y, x + step - 1, y + step - 1], fill=other)
    outline = rng.random() < v.cartoon_outline
    line = int(rng.integers(2, 7)) if outline else 0
    for _ in range(int(rng.integers(*v.cartoon_shapes, endpoint=True))):
        cx, cy = rng.uniform(-0.1, 1.1, 2) * side
        w, h = rng.uniform(0.08, 0.6, 2) * side
        fill = colour()
        kind = rng.choice(["ellipse", "rect", "polygon", "star"])
        kwargs = {"fill": fill, "outline": (0, 0, 0) if outline else None, "width": line}
        if kind == "ellipse":
            draw.ellipse([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], **kwargs)
        elif kind == "rect":
            draw.rectangle([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], **kwargs)
        else:
            corners = int(rng.integers(3, 7)) if kind == "polygon" else 2 * int(rng.integers(4, 7))
            angle = np.linspace(0, 2 * np.pi, corners, endpoint=False) + rng.uniform(0, np.pi)
            radius = np.where(np.arange(corners) % 2, 0.45, 1.0) if kind == "star" else rng.uniform(0.6, 1.0, corners)
            points = list(zip(cx + radius * w / 2 * np.cos(angle), cy + radius * h / 2 * np.sin(angle)))
            draw.polygon(points, fill=fill, outline=(0, 0, 0) if outline else None, width=line)
    return np.asarray(image.resize((size, size), Image.Resampling.LANCZOS))


def fractal_noise(size: int, rng: np.random.Generator, beta: float) -> np.ndarray:
    """Noise with a 1 / f^beta power spectrum in [0, 1] (clouds, foliage, rock at different betas)."""
    freq = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
    freq[0, 0] = 1.0
    spectrum = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) / freq ** (beta / 2)
    field = np.fft.ifft2(spectrum).real
    return (field - field.min()) / (np.ptp(field) + 1e-9)


def ramp(values: np.ndarray, palette: str, rng: np.random.Generator) -> np.ndarray:
    stops = np.asarray(PALETTES[palette], float) + rng.normal(0, 12, (4, 3))
    positions = np.linspace(0, 1, len(stops))
    return np.stack([np.interp(values, positions, stops[:, c]) for c in range(3)], axis=-1)


def photo(size: int, rng: np.random.Generator, v: Variant) -> np.ndarray:
    """A photo-like natural texture: fractal terrain, landscapes, wood, marble, bokeh, bricks, grain."""
    kind = rng.choice(v.photo_kinds)
    beta = rng.uniform(*v.photo_beta)

    def palette():
        return str(rng.choice(v.palettes))

    yy, xx = np.mgrid[:size, :size] / size
    if kind == "real":
        image = real_photo(size, rng, palette())
    elif kind == "fractal":
        image = ramp(fractal_noise(size, rng, beta), palette(), rng)
    elif kind == "landscape":
        horizon = rng.uniform(0.25, 0.7) + 0.08 * (fractal_noise(size, rng, 3.0)[0] - 0.5)
        sky = ramp(np.clip(yy / horizon[None, :] * 0.6 + 0.25 * fractal_noise(size, rng, 2.6), 0, 1), "sky", rng)
        ground = ramp(fractal_noise(size, rng, beta), palette(), rng)
        image = np.where((yy < horizon[None, :])[..., None], sky, ground)
    elif kind == "wood":
        turbulence = fractal_noise(size, rng, 2.2)
        rings = np.sin(2 * np.pi * (np.hypot(xx - rng.uniform(-1, 2), yy - rng.uniform(-1, 2)) * rng.uniform(8, 30) + 2.5 * turbulence))
        image = ramp(0.5 + 0.35 * rings + 0.15 * fractal_noise(size, rng, beta), palette(), rng)
    elif kind == "marble":
        veins = np.abs(np.sin(2 * np.pi * (xx * rng.uniform(1, 4) + yy * rng.uniform(1, 4)) + 6 * fractal_noise(size, rng, beta)))
        image = ramp(veins ** rng.uniform(0.3, 1.5), palette(), rng)
    elif kind == "bokeh":
        image = ramp(0.3 * fractal_noise(size, rng, 3.0), palette(), rng)
        for _ in range(int(rng.integers(5, 30))):
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.18)
            light = np.clip((r - np.hypot(xx - cx, yy - cy)) / (0.3 * r), 0, 1)[..., None]
            image = image + light * (np.array(hsv_colour(rng, (0.2, 0.9), (0.8, 1.0))) - image) * rng.uniform(0.3, 0.9)
    elif kind == "bricks":
        rows = rng.uniform(5, 14)
        row = np.floor(yy * rows)
        cols = np.floor(xx * rows / 2 + 0.5 * (row % 2))
        mortar = (np.abs((yy * rows) % 1 - 0.5) > 0.42) | (np.abs((xx * rows / 2 + 0.5 * (row % 2)) % 1 - 0.5) > 0.46)
        tone = (np.sin(row * 12.9898 + cols * 78.233) * 43758.5453) % 1
        base = 0.45 + 0.3 * tone + 0.2 * fractal_noise(size, rng, beta)
        image = ramp(np.where(mortar, 0.9, base), palette(), rng)
    else:  # grain: sand, paper, concrete
        image = ramp(0.5 + 0.5 * (fractal_noise(size, rng, beta) - 0.5) + 0.15 * rng.normal(size=(size, size)), palette(), rng)
    wash = rng.uniform(*v.wash) if v.wash[1] > 0 else 0.0  # no draw otherwise: the older variants stay as they were
    image = np.clip((1 - wash) * image + wash * 255.0, 0, 255).astype(np.uint8)
    blur = rng.uniform(0, 1.2)
    result = Image.fromarray(image).filter(ImageFilter.GaussianBlur(blur)) if blur > 0.3 else Image.fromarray(image)
    return np.clip(np.asarray(result, float) + rng.normal(0, rng.uniform(0, 6), (size, size, 1)), 0, 255).astype(np.uint8)


@functools.cache
def photo_source(name: str) -> np.ndarray:
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    return image[..., :3] if image.ndim == 3 else image


def real_photo(size: int, rng: np.random.Generator, palette: str) -> np.ndarray:
    """A random crop (15-70% of the shorter side, flipped at random) of a real photograph, ``size`` pixels a side."""
    name = str(rng.choice(COLOUR_PHOTOS + GREY_PHOTOS))
    source = photo_source(name)
    side = int(min(source.shape[:2]) * rng.uniform(0.15, 0.7))
    top, left = (int(rng.integers(0, extent - side + 1)) for extent in source.shape[:2])
    crop = source[top : top + side, left : left + side]
    crop = crop[:, ::-1] if rng.random() < 0.5 else crop
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.Resampling.LANCZOS), float)
    return resized if resized.ndim == 3 else ramp(resized / 255.0, palette, rng)


# ---- pasting ------------------------------------------------------------------------------------------------


def cell_mask(image: np.ndarray, rng: np.random.Generator, v: Variant) -> np.ndarray:
    """Soft mask (0..1) of the centre cell, cut out the way ``v.paste`` says."""
    size = image.shape[0]
    yy, xx = (np.mgrid[:size, :size] + 0.5) / size - 0.5
    mode = rng.choice(v.paste)
    pixels = image.astype(float)
    border = np.concatenate(
        [pixels[:4].reshape(-1, 3), pixels[-4:].reshape(-1, 3), pixels[:, :4].reshape(-1, 3), pixels[:, -4:].reshape(-1, 3)]
    )
    stain = ndimage.gaussian_filter(np.linalg.norm(pixels - np.median(border, 0), axis=-1), 1.5)
    stained = stain > max(np.percentile(stain, 70), 40)  # the cell (and touching red cells): far from the background
    labels, count = ndimage.label(stained)
    if count:
        centres = ndimage.center_of_mass(stained, labels, range(1, count + 1))
        distance = np.array([np.hypot(*(np.array(c) / size - 0.5)) for c in centres])
        area = ndimage.sum(stained, labels, range(1, count + 1))
        cell = ndimage.binary_fill_holes(labels == int(np.argmin(distance - 1e-4 * area)) + 1)
    else:
        cell = np.hypot(xx, yy) < 0.2
    extent = np.sqrt(cell.sum() / np.pi) / size  # the cell's radius, as a fraction of the side
    if mode == "mask":
        mask = ndimage.binary_dilation(cell, iterations=int(rng.integers(*v.dilate, endpoint=True)))
    elif mode == "disc":
        mask = np.hypot(xx, yy) < np.clip(extent * rng.uniform(1.1, 1.5), 0.18, 0.45)
    elif mode == "square":
        half = np.clip(extent * rng.uniform(1.1, 1.5), 0.2, 0.4)
        mask = (np.abs(xx) < half) & (np.abs(yy) < half)
    elif mode == "ellipse":
        a, b = np.clip(extent * rng.uniform(1.1, 1.6, 2), 0.16, 0.45)
        t = rng.uniform(0, np.pi)
        u, w = xx * np.cos(t) + yy * np.sin(t), yy * np.cos(t) - xx * np.sin(t)
        mask = (u / a) ** 2 + (w / b) ** 2 < 1
        mask |= ndimage.binary_dilation(cell, iterations=2)
    else:  # rounded square
        half, corner = np.clip(extent * rng.uniform(1.1, 1.5), 0.2, 0.42), rng.uniform(0.04, 0.12)
        qx, qy = np.maximum(np.abs(xx) - half + corner, 0), np.maximum(np.abs(yy) - half + corner, 0)
        mask = np.hypot(qx, qy) < corner
        mask |= (np.abs(xx) < half - corner) & (np.abs(yy) < half) | (np.abs(yy) < half - corner) & (np.abs(xx) < half)
    return ndimage.gaussian_filter(mask.astype(float), rng.uniform(0, 1.2))


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=int(quality))
    return np.asarray(Image.open(buffer).convert("RGB"))


def smear_coloured_fill(image: np.ndarray, rng: np.random.Generator, kind: str) -> np.ndarray:
    """A flat, grainy or gradient fill in the colour of ``image``'s own smear background (about): the hardest
    foreign background, since only the missing red cells and the cut give it away."""
    size = image.shape[0]
    border = np.concatenate([image[:4].reshape(-1, 3), image[-4:].reshape(-1, 3)]).astype(float)
    colour = np.median(border, axis=0) + rng.normal(0, 8, 3)
    fill = np.broadcast_to(colour, (size, size, 3)).astype(float)
    if kind == "noise":
        fill = fill + rng.normal(0, rng.uniform(3, 12), (size, size, 1)) * rng.uniform(0.5, 1.5, 3)
    elif kind == "gradient":
        other = colour + rng.normal(0, 20, 3)
        fill = colour + np.linspace(0, 1, size)[:, None, None] * (other - colour)
        fill = fill.transpose(1, 0, 2) if rng.random() < 0.5 else fill
    elif kind == "blurred":  # the image itself, out of focus: its red cells smeared into the background
        sigma = rng.uniform(4, 8) * size / 96
        fill = ndimage.gaussian_filter(image.astype(float), (sigma, sigma, 0), mode="reflect")
    elif kind == "mottled":  # uneven illumination or a thick film: low-frequency blotches of the background colour
        fill = fill + (fractal_noise(size, rng, rng.uniform(2.5, 3.5))[..., None] - 0.5) * rng.uniform(10, 40) * rng.uniform(0.7, 1.3, 3)
    elif kind == "resampled":  # the image's own brightest pixels shuffled into place, lightly smoothed
        pixels = image.reshape(-1, 3).astype(float)
        bright = pixels[pixels.sum(1) >= np.quantile(pixels.sum(1), 0.7)]
        fill = bright[rng.integers(0, len(bright), size * size)].reshape(size, size, 3)
        sigma = rng.uniform(0.5, 1.0)
        fill = ndimage.gaussian_filter(fill, (sigma, sigma, 0))
    elif kind == "tiled":  # the brightest corner patch of the image repeated, mirrored at every seam
        side = size // 6
        corners = [image[:side, :side], image[:side, -side:], image[-side:, :side], image[-side:, -side:]]
        patch = max(corners, key=lambda c: float(c.mean())).astype(float)
        pair = np.concatenate([patch, patch[:, ::-1]], axis=1)
        block = np.concatenate([pair, pair[::-1]], axis=0)
        reps = -(-size // block.shape[0])
        fill = np.tile(block, (reps, reps, 1))[:size, :size]
    elif kind == "median":  # the image under a wide median filter: red cells flattened into the background
        width = int(rng.integers(9, 16)) * size // 96 | 1
        fill = ndimage.median_filter(image.astype(float), size=(width, width, 1), mode="reflect")
    elif kind == "noisy-blur":  # the image out of focus, then sensor noise: the grain comes back, the cells do not
        sigma = rng.uniform(3, 6) * size / 96
        fill = ndimage.gaussian_filter(image.astype(float), (sigma, sigma, 0), mode="reflect")
        fill = fill + rng.normal(0, rng.uniform(2, 6), (size, size, 1))
    return np.clip(fill, 0, 255)


def paste_foreign(image: np.ndarray, rng: np.random.Generator, v: Variant) -> np.ndarray:
    size = image.shape[0]
    if set(v.photo_kinds) <= SMEAR_FILLS:
        background = smear_coloured_fill(image, rng, str(rng.choice(v.photo_kinds)))
    elif rng.random() < v.cartoon_share:
        background = cartoon(size, rng, v)
    else:
        background = photo(size, rng, v)
    alpha = cell_mask(image, rng, v)[..., None]
    mixed = alpha * image + (1 - alpha) * background
    return jpeg(np.clip(mixed, 0, 255).astype(np.uint8), rng.integers(*v.jpeg, endpoint=True))


# ---- near copies, blanks ------------------------------------------------------------------------------------


def near_copy(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A re-encoded, slightly brighter or darker, shifted or cropped copy (one to three of these edits)."""
    size = image.shape[0]
    out = image
    edits = rng.choice(["crop", "shift", "bright"], size=int(rng.integers(1, 4)), replace=False)
    if "crop" in edits:
        c = int(rng.integers(2, max(3, round(0.06 * size)), endpoint=True))
        left, top = (int(x) for x in rng.integers(0, c + 1, 2))
        out = np.asarray(
            Image.fromarray(out).resize((size, size), Image.Resampling.BILINEAR, box=(left, top, size - c + left, size - c + top))
        )
    if "shift" in edits:
        m = max(1, round(0.03 * size))
        dy, dx = (int(x) for x in rng.integers(-m, m + 1, 2))
        padded = np.pad(out, ((m, m), (m, m), (0, 0)), mode="reflect")
        out = padded[m + dy : m + dy + size, m + dx : m + dx + size]
    if "bright" in edits:
        out = np.clip(out.astype(float) * rng.uniform(0.92, 1.08) + rng.uniform(-8, 8), 0, 255).astype(np.uint8)
    return jpeg(out, rng.integers(70, 95, endpoint=True))


def blank_or_corrupt(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    kind = rng.choice(["constant", "black", "white", "truncated", "noise", "stripes"])
    if kind == "constant":
        return np.broadcast_to(rng.integers(0, 256, 3).astype(np.uint8), image.shape).copy()
    if kind in ("black", "white"):
        return np.full(image.shape, 0 if kind == "black" else 255, np.uint8)
    if kind == "truncated":  # a JPEG cut short decodes as grey from some row down
        out = image.copy()
        out[int(rng.uniform(0.2, 0.7) * size) :] = 128
        return out
    if kind == "noise":
        return rng.integers(0, 256, image.shape).astype(np.uint8)
    out = image.copy()
    out[:, :] = out[:, :1]  # the first column smeared across: a broken decoder
    return out


# ---- the contaminated set -----------------------------------------------------------------------------------


@dataclass
class Truth:
    """What was done to which index of the contaminated set."""

    foreign: list[int] = field(default_factory=list)
    exact: list[tuple[int, int]] = field(default_factory=list)  # (copy, source)
    near: list[tuple[int, int]] = field(default_factory=list)
    conflicting: list[int] = field(default_factory=list)  # copies carrying a label other than their source's
    blank: list[int] = field(default_factory=list)
    clean: list[int] = field(default_factory=list)  # untouched originals (no copy of them was added)


def contaminate(images, labels, v: Variant, seed: int, foreign: int, exact: int, near: int, conflicting: int, blanks: int):
    rng = np.random.default_rng(seed)
    n, classes = len(images), int(labels.max()) + 1
    images, labels = images.copy(), labels.copy()
    order = rng.permutation(n)
    pasted, rest = order[:foreign], order[foreign:]
    truth = Truth(foreign=sorted(int(i) for i in pasted))
    for i in pasted:
        images[i] = paste_foreign(images[i], rng, v)
    sources = rng.choice(rest, exact + near + blanks, replace=False)
    extra_images, extra_labels = [], []
    for k, source in enumerate(sources):
        index = n + k
        label = labels[source]
        if k < exact:
            copy = images[source].copy()
            truth.exact.append((index, int(source)))
        elif k < exact + near:
            copy = near_copy(images[source], rng)
            truth.near.append((index, int(source)))
        else:
            copy = blank_or_corrupt(images[source], rng)
            truth.blank.append(index)
        if k < conflicting or exact <= k < exact + conflicting:  # some exact and some near copies get a wrong label
            label = (label + rng.integers(1, classes)) % classes
            truth.conflicting.append(index)
        extra_images.append(copy)
        extra_labels.append(label)
    copied = {int(s) for s in sources[: exact + near]}
    truth.clean = sorted(int(i) for i in rest if int(i) not in copied)
    return np.concatenate([images, np.stack(extra_images)]), np.concatenate([labels, extra_labels]).astype(np.int64), truth


# ---- scoring ------------------------------------------------------------------------------------------------


def score(report, truth: Truth, n_original: int) -> list[tuple[str, str, str]]:
    rows = []
    exact_groups = report.group_ids("exact_duplicates")
    near_groups = report.group_ids("near_duplicates")
    found = [exact_groups[c] >= 0 and exact_groups[c] == exact_groups[s] for c, s in truth.exact]
    rows.append(
        (
            "exact duplicates",
            _rate(found),
            f"{_grouped_originals(exact_groups, n_original, set())} original images grouped with another original",
        )
    )
    found = [near_groups[c] >= 0 and near_groups[c] == near_groups[s] for c, s in truth.near]
    foreign = set(truth.foreign)
    among_clean = _grouped_originals(near_groups, n_original, foreign)
    rows.append(
        (
            "near duplicates",
            _rate(found),
            f"{_grouped_originals(near_groups, n_original, set())} original images grouped "
            f"with another original, {among_clean} of them not foreign-background images",
        )
    )
    conflicts = set(report.flagged_indices(kinds=("label_conflicts",)).tolist())
    found = [c in conflicts for c in truth.conflicting]
    consistent = [c for c, _ in truth.exact + truth.near if c not in set(truth.conflicting)]
    rows.append(("conflicting labels", _rate(found), f"{np.mean([c in conflicts for c in consistent]):.2%} of same-label copies flagged"))
    outliers = set(report.flagged_indices(kinds=("outliers",)).tolist())
    found = [i in outliers for i in truth.foreign]
    false = [i in outliers for i in truth.clean]
    rows.append(("foreign background (outliers)", _rate(found), f"{np.mean(false):.2%} of clean images ({sum(false)}/{len(false)})"))
    broken = set(report.flagged_indices(kinds=("blank_or_corrupt",)).tolist())
    # a cell over a flat fill can have rows of one colour, like a truncated file: listed as blank/corrupt, with the
    # outlier check's reason added; either way the audit flags it for removal
    found = [i in outliers or i in broken for i in truth.foreign]
    false = [i in outliers or i in broken for i in truth.clean]
    rows.append(("foreign background (flagged at all)", _rate(found), f"{np.mean(false):.2%} of clean images ({sum(false)}/{len(false)})"))
    found = [i in broken for i in truth.blank]
    false = [i in broken for i in truth.clean]
    rows.append(("blank / corrupt", _rate(found), f"{np.mean(false):.2%} of clean images ({sum(false)}/{len(false)})"))
    return rows


def _rate(found: list[bool]) -> str:
    return f"{np.mean(found):.1%} ({sum(found)}/{len(found)})"


def _grouped_originals(groups: np.ndarray, n_original: int, leave_out: set[int]) -> int:
    """Original images in a group with another original (unknown duplicates in the source, or false matches);
    ``leave_out``: originals not counted (nor their partners)."""
    originals = groups[:n_original].copy()
    if leave_out:
        originals[list(leave_out)] = -1
    _, counts = np.unique(originals[originals >= 0], return_counts=True)
    return int(counts[counts > 1].sum())


def print_table(title: str, rows) -> None:
    print(f"\n{title}")
    print("| kind | recall | false positives |\n|---|---|---|")
    for kind, recall, false in rows:
        print(f"| {kind} | {recall} | {false} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DEFAULT_DATA, help="image folder or .npz (default: shared/data/pbc96)")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--foreign", type=int, default=1800, help="images pasted over a foreign picture")
    parser.add_argument("--exact", type=int, default=300)
    parser.add_argument("--near", type=int, default=300)
    parser.add_argument("--conflicting", type=int, default=40, help="of the exact and of the near copies, each")
    parser.add_argument("--blanks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stain-check", action="store_true", help="also audit the clean images re-stained (another lab's colours)")
    parser.add_argument("--sheets", help="write the report and contact sheets of each run under this folder")
    args = parser.parse_args(argv)

    import os
    import platform

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import quiet

    quiet()  # TensorFlow's start-up logging (the data sources load the plugins, which import it)
    from bcauto.audit import AuditOptions, audit
    from bcauto.audit.near import near_duplicate_groups
    from bcauto.data import Dataset
    from bcauto.data.sources import load_data
    from bcauto.plugins import components

    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, no GPU; numpy {np.__version__}")
    start = time.perf_counter()
    data = load_data(args.data, args.image_size, components(), {"on_bad_image": "skip"})
    print(
        f"data: {data.source}: {len(data.labels)} images {data.image_size}x{data.image_size} "
        f"(loaded in {time.perf_counter() - start:.1f} s)"
    )
    n = len(data.labels)
    for name in args.variants.split(","):
        v = VARIANTS[name.strip()]
        start = time.perf_counter()
        images, labels, truth = contaminate(
            data.images, data.labels, v, args.seed, args.foreign, args.exact, args.near, args.conflicting, args.blanks
        )
        made = time.perf_counter() - start
        dirty = Dataset(images, labels, data.class_names, f"{data.source} + {v.name} contamination")
        start = time.perf_counter()
        report = audit(dirty, AuditOptions(seed=args.seed))
        wall = time.perf_counter() - start
        steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in report.timings.items())
        print_table(
            f"variant {v.name}: {len(labels)} images = {n} originals ({len(truth.foreign)} of them pasted over foreign "
            f"pictures) + {len(truth.exact)} exact and {len(truth.near)} near copies ({len(truth.conflicting)} of the "
            f"copies under another label) + {len(truth.blank)} blank/corrupt; generated in {made:.0f} s\n"
            f"audit wall time {wall:.1f} s ({steps})",
            score(report, truth, n),
        )
        clean_pairs = [g for g in report.groups.get("near_duplicates", []) if sum(i < n and i not in set(truth.foreign) for i in g) > 1]
        print(f"groups of original, non-foreign images found as near duplicates: {clean_pairs}")
        start = time.perf_counter()
        near_duplicate_groups(dirty.images)
        print(f"near_duplicate_groups (the split's grouping) on {len(labels)} images: {time.perf_counter() - start:.1f} s")
        if args.sheets:
            from bcauto.audit.render import write_outputs

            write_outputs(report, dirty, Path(args.sheets) / v.name)
    if args.stain_check:
        print("\nclean images only (no contamination), as recorded and re-stained like other labs:")
        stains = (
            ("as recorded", np.eye(3)),
            ("bluish lab", [[0.85, 0.05, 0.1], [0.05, 0.9, 0.05], [0.0, 0.1, 1.05]]),
            ("saturated lab", [[1.15, -0.1, -0.05], [-0.15, 0.95, -0.1], [-0.05, -0.1, 1.15]]),
        )
        for label, matrix in stains:
            stained = np.clip(data.images.astype(np.float32) @ np.asarray(matrix, np.float32).T, 0, 255).astype(np.uint8)
            start = time.perf_counter()
            report = audit(Dataset(stained, data.labels, data.class_names, label), AuditOptions(seed=args.seed))
            wall = time.perf_counter() - start
            flagged = report.flagged_indices(kinds=("outliers", "blank_or_corrupt"))
            print(f"- {label}: {len(flagged)} of {n} flagged as outliers or blank/corrupt ({len(flagged) / n:.2%}); audit {wall:.1f} s")
        # a soft image is unusual focus, not a foreign picture: one in ten defocused must not be flagged more
        rng = np.random.default_rng(args.seed)
        soft = np.sort(rng.choice(n, n // 10, replace=False))
        blurred = data.images.copy()
        for i in soft:
            sigma = rng.uniform(1, 2) * args.image_size / 96
            blurred[i] = np.clip(ndimage.gaussian_filter(blurred[i].astype(np.float32), (sigma, sigma, 0)), 0, 255).astype(np.uint8)
        report = audit(Dataset(blurred, data.labels, data.class_names, "defocused"), AuditOptions(seed=args.seed))
        flagged = set(report.flagged_indices(kinds=("outliers", "blank_or_corrupt")).tolist())
        among = sum(int(i) in flagged for i in soft)
        print(
            f"- one in ten defocused (Gaussian sigma 1-2 px at 96): {among} of the {len(soft)} defocused and "
            f"{len(flagged) - among} of the other {n - len(soft)} flagged ({len(flagged) / n:.2%} in all)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
