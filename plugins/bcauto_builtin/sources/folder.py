"""Image folders: one subfolder per class (label order = sorted folder names), images of any size and mode.

Each image is centre-cropped to a square and resized straight into one preallocated array, by a few threads
(Pillow releases the GIL while decoding), so memory stays at the final array plus one image per thread.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bcauto.data import Dataset
from bcauto.data.images import (
    decode_image,
    enlarged_note,
    file_names,
    ignored_notes,
    scan_class_folders,
)
from bcauto.errors import BcautoError

MAX_THREADS = 8


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
    class_names, files, labels, ignored = scan_class_folders(root)
    notes = ignored_notes(root, ignored)
    images = np.empty((len(files), image_size, image_size, 3), np.uint8)

    def decode(i: int):
        try:
            images[i], mode, side = decode_image(files[i], image_size)
            return mode, side, None
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files; all mean "cannot decode"
            return None, 0, exc

    pool = ThreadPoolExecutor(min(MAX_THREADS, os.cpu_count() or 1))
    results = []
    try:
        for i, (mode, side, exc) in enumerate(pool.map(decode, range(len(files)))):
            if exc is not None and on_bad_image == "stop":
                raise BcautoError(
                    f"{files[i]}: cannot decode this image ({exc}); fix or remove it, or pass "
                    "--on-bad-image skip to leave undecodable images out"
                )
            results.append((mode, side, exc))
    finally:
        pool.shutdown(cancel_futures=True)
    bad = [i for i, (_, _, exc) in enumerate(results) if exc is not None]
    converted = sorted({mode for mode, _, _ in results if mode not in (None, "RGB")})
    if converted:
        count = sum(mode not in (None, "RGB") for mode, _, _ in results)
        notes.append(f"{root}: {count} image(s) converted to RGB from {', '.join(converted)}")
    notes += enlarged_note(str(root), np.array([side for _, side, exc in results if exc is None]), image_size)
    left_out = [(_relative(path, root), _why_ignored(path, root)) for path in ignored]
    if bad:
        images, labels = _drop(images, labels, bad)
        notes.append(f"{root}: skipped {len(bad)} undecodable image(s): {file_names(files[i] for i in bad)}")
        left_out += [(_relative(files[i], root), f"cannot be decoded ({results[i][2]})") for i in bad]
        emptied = np.flatnonzero(np.bincount(labels, minlength=len(class_names)) == 0)
        if len(emptied):
            raise BcautoError(f"{root / class_names[emptied[0]]}: none of its images could be decoded")
    dropped = set(bad)
    names = tuple(_relative(path, root) for i, path in enumerate(files) if i not in dropped)
    return Dataset(images, labels, class_names, str(root), tuple(notes), names, tuple(left_out))


def _why_ignored(path: Path, root: Path) -> str:
    if path.parent == root:
        return "an image outside any class folder"
    return "a folder, not an image" if path.is_dir() else "not an image file"


def _drop(images: np.ndarray, labels: np.ndarray, bad: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``images`` and ``labels`` without the rows in ``bad``; images are compacted in place (no second array)."""
    keep = np.setdiff1d(np.arange(len(labels)), bad)
    for target, source in enumerate(keep):
        if target != source:
            images[target] = images[source]
    return images[: len(keep)], labels[keep]


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
