"""Bring images of any size to the study's square size: centre crop to a square, then resize (Lanczos)."""

from __future__ import annotations

import numpy as np
from PIL import Image

RESAMPLE = Image.Resampling.LANCZOS


def square_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) box of the largest centred square inside a ``width`` x ``height`` image."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def fit_square(image: Image.Image, size: int) -> Image.Image:
    """``image`` centre-cropped to a square and resized to ``size`` x ``size`` (aspect ratio kept)."""
    box = square_box(*image.size)
    if box == (0, 0, size, size):
        return image
    return image.resize((size, size), RESAMPLE, box=box)


def resize_images(images: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB ``images`` (N x H x W x 3) centre-cropped and resized to N x ``size`` x ``size`` x 3.

    Images already at ``size`` come back as they are (no copy) unless ``out`` is given. Otherwise each image
    is resized on its own into ``out`` (allocated when None), so memory never exceeds input plus output.
    """
    n, height, width = images.shape[:3]
    if out is None:
        if height == width == size:
            return images
        out = np.empty((n, size, size, 3), np.uint8)
    if out.shape != (n, size, size, 3):
        raise ValueError(f"out has shape {out.shape}, expected {(n, size, size, 3)}")
    if height == width == size:
        out[...] = images
        return out
    for i in range(n):
        out[i] = np.asarray(fit_square(Image.fromarray(images[i]), size))
    return out
