"""Image folders: one subfolder per class (label order = sorted folder names), images of any size and mode.

Each image is centre-cropped to a square and resized straight into one preallocated array, by a few threads
(Pillow releases the GIL while decoding), so memory stays at the final array plus one image per thread.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from bcauto.data import Dataset
from bcauto.data.images import fit_square
from bcauto.errors import BcautoError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MAX_THREADS = 8
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "F")  # more than 8 bits per pixel
_LISTED = 5  # file names shown in a notice before "..."


def claims(spec: str) -> bool:
    """True for ``--data`` strings naming an existing folder."""
    return Path(spec).expanduser().is_dir()


def load(arg, image_size: int, options: dict) -> Dataset:
    """The ``folder`` source: ``--data PATH`` or ``--data folder:PATH``."""
    if not arg:
        raise BcautoError("folder: give the folder, as --data PATH or --data folder:PATH")
    return load_folder(Path(arg).expanduser(), image_size, options.get("on_bad_image", "stop"))


def load_folder(root: Path, image_size: int, on_bad_image: str = "stop") -> Dataset:
    """Every image under ``root/<class>/``, as RGB uint8 ``image_size`` squares.

    ``on_bad_image``: ``"stop"`` raises on the first file that cannot be decoded, ``"skip"`` leaves such
    files out and counts them in the notes. Every image is named by its path relative to ``root``
    (``Dataset.item_names``); ``Dataset.left_out`` lists each file found but not loaded, and why.
    """
    if on_bad_image not in ("stop", "skip"):
        raise BcautoError(f"on_bad_image must be 'stop' or 'skip', got {on_bad_image!r}")
    class_names, files, labels, ignored = _scan(root)
    notes = _ignored_notes(root, ignored)
    images = np.empty((len(files), image_size, image_size, 3), np.uint8)

    def decode(i: int):
        try:
            images[i], mode = _decode(files[i], image_size)
            return mode, None
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files; all mean "cannot decode"
            return None, exc

    pool = ThreadPoolExecutor(min(MAX_THREADS, os.cpu_count() or 1))
    results = []
    try:
        for i, (mode, exc) in enumerate(pool.map(decode, range(len(files)))):
            if exc is not None and on_bad_image == "stop":
                raise BcautoError(f"{files[i]}: cannot decode this image ({exc}); fix or remove it, or pass "
                                  "--on-bad-image skip to leave undecodable images out")
            results.append((mode, exc))
    finally:
        pool.shutdown(cancel_futures=True)
    bad = [i for i, (_, exc) in enumerate(results) if exc is not None]
    converted = sorted({mode for mode, _ in results if mode not in (None, "RGB")})
    if converted:
        count = sum(mode not in (None, "RGB") for mode, _ in results)
        notes.append(f"{root}: {count} image(s) converted to RGB from {', '.join(converted)}")
    left_out = [(_relative(path, root), "a folder, not an image" if path.is_dir() else "not an image file") for path in ignored]
    if bad:
        images, labels = _drop(images, labels, bad)
        notes.append(f"{root}: skipped {len(bad)} undecodable image(s): {_names(files[i] for i in bad)}")
        left_out += [(_relative(files[i], root), f"cannot be decoded ({results[i][1]})") for i in bad]
        emptied = np.flatnonzero(np.bincount(labels, minlength=len(class_names)) == 0)
        if len(emptied):
            raise BcautoError(f"{root / class_names[emptied[0]]}: none of its images could be decoded")
    dropped = set(bad)
    names = tuple(_relative(path, root) for i, path in enumerate(files) if i not in dropped)
    return Dataset(images, labels, class_names, str(root), tuple(notes), names, tuple(left_out))


def list_images(root: Path) -> tuple[tuple[str, ...], list[Path], np.ndarray, list[str]]:
    """Class names (sorted subfolders), image files, their int64 labels and notices about ignored files."""
    class_names, files, labels, ignored = _scan(root)
    return class_names, files, labels, _ignored_notes(root, ignored)


def _scan(root: Path) -> tuple[tuple[str, ...], list[Path], np.ndarray, list[Path]]:
    """Class names (sorted subfolders), image files, their int64 labels, and the entries of class folders ignored."""
    if not root.exists():
        raise BcautoError(f"{root}: folder not found")
    if not root.is_dir():
        raise BcautoError(f"{root}: not a folder; expected one subfolder per class holding images")
    entries = [entry for entry in root.iterdir() if not entry.name.startswith(".")]
    class_dirs = sorted((entry for entry in entries if entry.is_dir()), key=lambda entry: entry.name)
    if not class_dirs:
        what = "is empty" if not entries else "has no class subfolders"
        raise BcautoError(f"{root}: {what}; expected one subfolder per class holding its images "
                          f"({root}/<class>/<image>.png)")
    files, labels, ignored = [], [], []
    for label, class_dir in enumerate(class_dirs):
        members = sorted(entry for entry in class_dir.iterdir() if not entry.name.startswith("."))
        images = [entry for entry in members if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES]
        if not images:
            raise BcautoError(f"{class_dir}: class folder without images; expected files ending in "
                              f"{', '.join(IMAGE_SUFFIXES)} (any case)")
        ignored += sorted(set(members) - set(images))
        files += images
        labels += [label] * len(images)
    return tuple(d.name for d in class_dirs), files, np.asarray(labels, np.int64), ignored


def _ignored_notes(root: Path, ignored: list[Path]) -> list[str]:
    stray = "entry that is not an image" if len(ignored) == 1 else "entries that are not images"
    return [f"{root}: ignored {len(ignored)} {stray}: {_names(ignored)}"] if ignored else []


def _decode(path: Path, size: int) -> tuple[np.ndarray, str]:
    with Image.open(path) as image:
        mode = image.mode
        image.draft("RGB", (size, size))  # JPEG: let the decoder shrink large images by up to 8x first
        if image.mode in WIDE_MODES:
            image = _to_8bit(image)
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(fit_square(image, size)), mode


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit or float grayscale (microscopy TIFF, PNG) scaled to 8 bits; Pillow's own conversion would clip."""
    pixels = np.asarray(image, np.float32)
    top = 1.0 if pixels.max() <= 1.0 else 255.0 if pixels.max() <= 255 else 65535.0
    return Image.fromarray(np.clip(pixels * (255.0 / top), 0, 255).astype(np.uint8))


def _drop(images: np.ndarray, labels: np.ndarray, bad: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``images`` and ``labels`` without the rows in ``bad``; images are compacted in place (no second array)."""
    keep = np.setdiff1d(np.arange(len(labels)), bad)
    for target, source in enumerate(keep):
        if target != source:
            images[target] = images[source]
    return images[:len(keep)], labels[keep]


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _names(paths) -> str:
    paths = list(paths)
    shown = ", ".join(path.name for path in paths[:_LISTED])
    return shown + (f", ... ({len(paths)} in all)" if len(paths) > _LISTED else "")
