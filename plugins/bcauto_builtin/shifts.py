"""Built-in distribution shifts: what a smear image suffers between labs, scanners and stains.

Here the ``corruption`` group (damage within one lab); :mod:`bcauto_builtin.lab_shifts` holds the ``lab``
group (another magnification, framing, stain palette, white balance, camera). Each corruption maps a uint8
batch N x H x W x 3 to a corrupted uint8 batch, deterministically for a given NumPy generator, at
severities 1 (mild) to 5 (heavy). They score robustness (never train on them: the ``corruption``
augmentation policy covers training).
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image

from bcauto import hookimpl
from bcauto.specs import ShiftSpec
from bcauto_builtin import lazy


def _level(severity: int, values) -> float:
    return values[min(max(severity, 1), len(values)) - 1]


def _clip(images: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


REFERENCE_SIZE = 96


def _scale(images: np.ndarray) -> float:
    """Severity tables are written for 96-pixel cells; spatial sizes follow the image size."""
    return images.shape[1] / REFERENCE_SIZE


def _resize(images: np.ndarray, size: tuple[int, int], resample=Image.Resampling.LANCZOS) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(im).resize(size, resample)) for im in images])


def at_reference_size(shift):
    """``shift`` applied at the 96-pixel scale its severity table is written for, whatever the images' size.

    For damage that lives on the pixel grid and cannot be scaled by a parameter (JPEG's 8 x 8 blocks, noise
    drawn per pixel, a small camera sensor): at 40 x 40, JPEG's blocks would cover 2.4 times more of the cell
    than at 96, which is not what a lab's image suffers before it is brought down to a model's size. The
    images are brought up to 96, damaged there, and only the damage (the difference it made) is brought back
    down and added, so the round trip's own resampling leaves nothing behind.
    """

    @functools.wraps(shift)
    def applied(images, severity, rng):
        size = images.shape[2], images.shape[1]
        if size == (REFERENCE_SIZE, REFERENCE_SIZE):
            return shift(images, severity, rng)
        up = _resize(images, (REFERENCE_SIZE, REFERENCE_SIZE))
        damage = _resize(shift(up, severity, rng), size).astype(np.float32) - _resize(up, size)
        return _clip(images + damage)

    return applied


def defocus_blur(images, severity, rng):
    from scipy import ndimage  # here: SciPy takes a second to load

    sigma = max(0.5, _level(severity, (1.0, 1.5, 2.0, 2.8, 3.6)) * _scale(images))
    return _clip(ndimage.gaussian_filter(images.astype(np.float32), sigma=(0, sigma, sigma, 0)))


def motion_blur(images, severity, rng):
    from scipy import ndimage  # here: SciPy takes a second to load

    length = max(3, int(round(_level(severity, (3, 5, 7, 10, 14)) * _scale(images)))) | 1
    out = np.empty_like(images)
    for i, image in enumerate(images):
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0
        kernel = np.clip(ndimage.rotate(kernel, rng.uniform(0, 180), reshape=False, order=1), 0, None)
        kernel /= kernel.sum()
        out[i] = _clip(np.stack([ndimage.convolve(image[..., c].astype(np.float32), kernel, mode="reflect") for c in range(3)], -1))
    return out


def _jpeg_at(images: np.ndarray, quality: int) -> np.ndarray:
    out = np.empty_like(images)
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        out[i] = np.asarray(Image.open(buffer).convert("RGB"))
    return out


@at_reference_size
def jpeg(images, severity, rng):
    return _jpeg_at(images, int(_level(severity, (60, 40, 25, 15, 8))))


def pixelate(images, severity, rng):
    factor = _level(severity, (0.75, 0.6, 0.45, 0.33, 0.25))
    size = images.shape[1]
    small = max(2, int(size * factor))
    return np.stack(
        [np.asarray(Image.fromarray(im).resize((small, small), Image.BOX).resize((size, size), Image.NEAREST)) for im in images]
    )


def brightness(images, severity, rng):
    delta = _level(severity, (20, 40, 60, 80, 100)) * rng.choice([-1.0, 1.0], size=(len(images), 1, 1, 1))
    return _clip(images.astype(np.float32) + delta)


def contrast(images, severity, rng):
    factor = _level(severity, (0.75, 0.6, 0.45, 0.3, 0.2))
    x = images.astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return _clip((x - mean) * factor + mean)


def _hsv(images):
    return np.stack([np.asarray(Image.fromarray(im).convert("HSV"), dtype=np.float32) for im in images])


def _rgb(hsv):
    return np.stack([np.asarray(Image.fromarray(_clip(h), "HSV").convert("RGB")) for h in hsv])


def saturation(images, severity, rng):
    factor = _level(severity, (0.7, 0.5, 0.35, 1.6, 2.0))
    hsv = _hsv(images)
    hsv[..., 1] *= factor
    return _rgb(hsv)


def hue(images, severity, rng):
    """Stain shift: the hue wheel turned, as with another stain batch or protocol."""
    shift = _level(severity, (8, 16, 24, 34, 45)) * rng.choice([-1.0, 1.0], size=(len(images), 1, 1))
    hsv = _hsv(images)
    hsv[..., 0] = (hsv[..., 0] + shift) % 256
    return _rgb(hsv)


@at_reference_size
def gaussian_noise(images, severity, rng):
    sigma = _level(severity, (6, 12, 20, 30, 42))
    return _clip(images.astype(np.float32) + rng.normal(0, sigma, images.shape))


def _disc_masks(shape, centres, radii):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return [(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r for (cy, cx), r in zip(centres, radii)]


def stain_deposits(images, severity, rng):
    """Dark purple precipitate specks, as left by old or unfiltered stain."""
    count = int(_level(severity, (4, 8, 12, 18, 26)))
    size = images.shape[1]
    out = images.astype(np.float32)
    for image in out:
        centres = rng.integers(0, size, (count, 2))
        radii = rng.uniform(1.0, 3.0, count) * max(1.0, size / 48)
        for mask in _disc_masks(image.shape, centres, radii):
            image[mask] = image[mask] * 0.3 + np.array([70, 20, 90]) * 0.7
    return _clip(out)


def bubbles(images, severity, rng):
    """Air bubbles under the coverslip: bright discs with a dark rim."""
    count = int(_level(severity, (1, 2, 3, 4, 6)))
    size = images.shape[1]
    out = images.astype(np.float32)
    for image in out:
        centres = rng.integers(0, size, (count, 2))
        radii = rng.uniform(0.08, 0.2, count) * size
        for mask, rim in zip(_disc_masks(image.shape, centres, radii), _disc_masks(image.shape, centres, radii + max(1, size / 48))):
            image[rim & ~mask] *= 0.5
            image[mask] = image[mask] * 0.4 + 255 * 0.6
    return _clip(out)


def occlusion(images, severity, rng):
    """A patch of the image hidden (debris, a label, a dust fibre)."""
    fraction = _level(severity, (0.1, 0.2, 0.3, 0.4, 0.5))
    size = images.shape[1]
    side = max(1, int(size * np.sqrt(fraction)))
    out = images.copy()
    for image in out:
        y, x = rng.integers(0, size - side + 1, 2)
        image[y : y + side, x : x + side] = rng.integers(0, 256, 3)
    return out


def rotation(images, severity, rng):
    from scipy import ndimage  # here: SciPy takes a second to load

    degrees = _level(severity, (15, 30, 45, 90, 180))
    return np.stack(
        [
            _clip(ndimage.rotate(im.astype(np.float32), rng.uniform(-degrees, degrees), reshape=False, mode="reflect", order=1))
            for im in images
        ]
    )


SHIFTS = (
    (defocus_blur, "defocus blur (Gaussian)"),
    (motion_blur, "motion blur at a random angle"),
    (jpeg, "JPEG compression"),
    (pixelate, "pixelation (down- and up-sampling)"),
    (brightness, "brightness shift up or down"),
    (contrast, "contrast loss"),
    (saturation, "saturation change (faded or over-saturated stain)"),
    (hue, "hue rotation (stain shift)"),
    (gaussian_noise, "sensor noise"),
    (stain_deposits, "stain precipitate specks"),
    (bubbles, "air bubbles"),
    (occlusion, "occluding patch"),
    (rotation, "rotation"),
)


# in bcauto_builtin.lab_shifts, imported on first use (it builds on the helpers above, and on SciPy and scikit-image)
LAB_SHIFTS = (
    ("magnification", "magnification: zoomed in (centre cropped) or out (more smear)"),
    ("framing", "framing: the cell off-centre, a neighbour cell at the edge"),
    ("stain_style", "stain palette: eosin-heavy, blue-violet, pale or yellow background"),
    ("white_balance", "white balance cast and vignetting"),
    ("camera_optics", "low-resolution camera: blur, resampling, noise, chroma bleed, JPEG"),
    ("other_lab", "another lab: several lab shifts at once"),
)


@hookimpl
def register_shifts(register):
    for apply, description in SHIFTS:
        register(ShiftSpec(name=apply.__name__, apply=apply, description=description))
    for name, description in LAB_SHIFTS:
        register(ShiftSpec(name=name, apply=lazy("bcauto_builtin.lab_shifts", name), description=description, group="lab"))
