"""Image files and arrays brought to the study's square size (centre crop to a square, then resize, Lanczos), and
the layout of an image folder: one subfolder per class (label order = sorted folder names).

Data sources, ``predict`` and ``adapt`` all read image files through this module, so pixels match everywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bcauto.errors import BcautoError
from bcauto.text import plural

RESAMPLE = Image.Resampling.LANCZOS
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "F")  # more than 8 bits per pixel
_LISTED = 5  # file names shown in a notice before "..."


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


def enlarged_note(where: str, sides: np.ndarray, size: int) -> list[str]:
    """A notice when images whose shorter side (``sides``, one per image) is under ``size`` were enlarged to it;
    none when there were none. Enlarging adds no detail, only training time, so the user should hear of it."""
    small = np.asarray(sides) < size
    if not small.any():
        return []
    return [
        f"{where}: {int(small.sum())} of {plural(small.size, 'image')} enlarged to {size}x{size} (the smallest has a "
        f"{int(np.min(sides))}-pixel side): enlarging adds no detail, only training time"
    ]


def pixel_digests(images: np.ndarray) -> list[bytes]:
    """The SHA-256 of each image's pixels: equal digests, equal images."""
    import hashlib

    return [hashlib.sha256(np.ascontiguousarray(image).tobytes()).digest() for image in images]


def content_order(images: np.ndarray) -> np.ndarray:
    """A permutation that puts ``images`` in the order of their pixels' digests: the same images, however they were
    listed (files renamed, folders sorted another way), come out in the same order."""
    return np.argsort(np.array(pixel_digests(images), dtype=object), kind="stable")


def list_images(root: Path) -> tuple[tuple[str, ...], list[Path], np.ndarray, list[str]]:
    """Class names (sorted subfolders), image files, their int64 labels and notices about ignored files."""
    class_names, files, labels, ignored = scan_class_folders(root)
    return class_names, files, labels, ignored_notes(root, ignored)


def scan_class_folders(root: Path) -> tuple[tuple[str, ...], list[Path], np.ndarray, list[Path]]:
    """Class names (sorted subfolders), image files, their int64 labels, and the entries ignored: those of class
    folders that are not images, and images outside any class folder."""
    if not root.exists():
        raise BcautoError(f"{root}: folder not found")
    if not root.is_dir():
        raise BcautoError(f"{root}: not a folder; expected one subfolder per class holding images")
    entries = [entry for entry in root.iterdir() if not entry.name.startswith(".")]
    class_dirs = sorted((entry for entry in entries if entry.is_dir()), key=lambda entry: entry.name)
    if not class_dirs:
        what = "is empty" if not entries else "has no class subfolders"
        raise BcautoError(f"{root}: {what}; expected one subfolder per class holding its images ({root}/<class>/<image>.png)")
    files, labels = [], []
    ignored = sorted(entry for entry in entries if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES)
    for label, class_dir in enumerate(class_dirs):
        members = sorted(entry for entry in class_dir.iterdir() if not entry.name.startswith("."))
        images = [entry for entry in members if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES]
        if not images:
            raise BcautoError(f"{class_dir}: class folder without images; expected files ending in {', '.join(IMAGE_SUFFIXES)} (any case)")
        ignored += sorted(set(members) - set(images))
        files += images
        labels += [label] * len(images)
    return tuple(d.name for d in class_dirs), files, np.asarray(labels, np.int64), ignored


def ignored_notes(root: Path, ignored: list[Path]) -> list[str]:
    """A notice naming the images outside any class folder, and one naming the entries of class folders that are not
    images (none when ``ignored`` is empty)."""
    loose = [path for path in ignored if path.parent == root]
    others = [path for path in ignored if path.parent != root]
    notes = []
    if loose:
        images = "image" if len(loose) == 1 else "images"
        notes.append(f"{root}: ignored {len(loose)} {images} outside any class folder: {file_names(loose)}")
    if others:
        stray = "entry that is not an image" if len(others) == 1 else "entries that are not images"
        notes.append(f"{root}: ignored {len(others)} {stray}: {file_names(others)}")
    return notes


def decode_image(path: Path, size: int) -> tuple[np.ndarray, str, int]:
    """The image file at ``path`` as an RGB uint8 ``size`` square (centre crop, resize), its original mode and
    the original's shorter side in pixels.

    Every command that reads image files decodes them here, so training and prediction see the same pixels.
    """
    with Image.open(path) as image:
        mode, side = image.mode, min(image.size)
        image.draft("RGB", (size, size))  # JPEG: let the decoder shrink large images by up to 8x first
        if image.mode in WIDE_MODES:
            image = to_8bit(image)
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(fit_square(image, size)), mode, side


def to_8bit(image: Image.Image) -> Image.Image:
    """16-bit or float grayscale (microscopy TIFF, PNG) scaled to 8 bits; Pillow's own conversion would clip."""
    pixels = np.asarray(image, np.float32)
    top = 1.0 if pixels.max() <= 1.0 else 255.0 if pixels.max() <= 255 else 65535.0
    return Image.fromarray(np.clip(pixels * (255.0 / top), 0, 255).astype(np.uint8))


def file_names(paths) -> str:
    """The names of the first few ``paths``, and how many there are when there are more."""
    paths = list(paths)
    shown = ", ".join(path.name for path in paths[:_LISTED])
    return shown + (f", ... ({len(paths)} in all)" if len(paths) > _LISTED else "")
