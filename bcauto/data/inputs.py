"""Unlabelled image inputs, as ``bcauto predict``, ``bcauto suggest`` and ``bcauto adapt --pool`` read them: image
files, folders (searched recursively) and .npz files (an ``images`` array, or the only array). Images are decoded
the way the image-folder data source decodes them (centre square, Lanczos to the model's size).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bcauto.data.dataset import validate_arrays
from bcauto.data.images import IMAGE_SUFFIXES, decode_image, resize_images
from bcauto.errors import BcautoError

CHUNK = 256  # images decoded and predicted at a time


@dataclass(frozen=True)
class Source:
    """One input: an image file (``index`` None) or one row of an .npz file."""

    path: Path
    index: int | None = None


def collect_inputs(inputs: list[str]) -> tuple[list[Path], list[Path]]:
    """(image files, .npz files) named by ``inputs``: files, and folders searched recursively (sorted)."""
    images, archives = [], []
    suffixes = IMAGE_SUFFIXES
    for spec in inputs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in suffixes and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise BcautoError(f"{path}: no image files in this folder or below (expected {', '.join(suffixes)})")
            images += found
        elif path.is_file() and path.suffix.lower() == ".npz":
            archives.append(path)
        elif path.is_file() and path.suffix.lower() in suffixes:
            images.append(path)
        elif path.exists():
            raise BcautoError(f"{path}: not an image ({', '.join(suffixes)}), an .npz file or a folder")
        else:
            raise BcautoError(f"{path}: not found")
    return images, archives


def npz_images(path: Path, image_size: int) -> np.ndarray:
    """The images of an .npz file as uint8 RGB at ``image_size`` (pickled arrays refused)."""
    if not zipfile.is_zipfile(path):
        raise BcautoError(f"{path}: not an .npz archive")
    with np.load(path, allow_pickle=False) as npz:
        keys = list(npz.files)
        key = "images" if "images" in keys else keys[0] if len(keys) == 1 else None
        if key is None:
            raise BcautoError(f"{path}: expected an 'images' array (or a single array); arrays found: {', '.join(keys)}")
        try:
            raw = npz[key]
        except ValueError as exc:
            raise BcautoError(f"{path}: array {key!r} cannot be read without unpickling ({exc}); save plain numeric arrays") from None
    images, _, _ = validate_arrays(raw, np.zeros(len(raw), np.int64), f"{path} [{key}]")
    return resize_images(images, image_size)


def decode_images(paths: list[Path], image_size: int, skipped: list[str] | None = None) -> tuple[list[Path], np.ndarray]:
    """(the paths decoded, their images). An undecodable file stops with an error naming it, or, when ``skipped``
    is a list, is left out and described there (``--on-bad-image skip``)."""
    kept, out = [], np.empty((len(paths), image_size, image_size, 3), np.uint8)
    for path in paths:
        try:
            out[len(kept)], _, _ = decode_image(path, image_size)
        except Exception as exc:
            if skipped is None:
                raise BcautoError(f"{path}: cannot decode this image ({exc}); --on-bad-image skip leaves such files out") from None
            skipped.append(f"{path} ({exc})")
            continue
        kept.append(path)
    return kept, out[: len(kept)]


def chunks(
    images: list[Path], archives: list[Path], image_size: int, skipped: list[str] | None = None
) -> Iterator[tuple[list[Source], np.ndarray]]:
    for start in range(0, len(images), CHUNK):
        kept, batch = decode_images(images[start : start + CHUNK], image_size, skipped)
        yield [Source(p) for p in kept], batch
    for archive in archives:
        array = npz_images(archive, image_size)
        for start in range(0, len(array), CHUNK):
            yield [Source(archive, i) for i in range(start, min(start + CHUNK, len(array)))], array[start : start + CHUNK]


def read_inputs(inputs: list[str], image_size: int, skipped: list[str] | None = None) -> tuple[list[Source], np.ndarray]:
    """Every image named by ``inputs`` (as :func:`collect_inputs` finds them), decoded at ``image_size`` and held in
    memory, with where each came from."""
    images, archives = collect_inputs(inputs)
    sources, batches = [], []
    for part, batch in chunks(images, archives, image_size, skipped):
        sources += part
        batches.append(batch)
    if not sources:
        raise BcautoError(f"{', '.join(inputs)}: no image could be read")
    return sources, np.concatenate(batches)


def count_inputs(images: list[Path], archives: list[Path]) -> int:
    total = len(images)
    for archive in archives:
        with np.load(archive, allow_pickle=False) as npz:
            keys = list(npz.files)
            key = "images" if "images" in keys else keys[0] if keys else None
            if key is not None:
                try:
                    total += len(npz[key])
                except ValueError:
                    pass
    return total
