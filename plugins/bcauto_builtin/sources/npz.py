""".npz files: the seed layout (``images``, ``labels``) or the MedMNIST layout (``train_images``, ...).

Files are opened with ``allow_pickle=False``: an array of Python objects is refused before anything in it is
unpickled, so a crafted file cannot run code. Of the MedMNIST splits only train and val are read; the test
split is left for a final, independent evaluation.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from bcauto.data import Dataset, validate_arrays
from bcauto.data.images import enlarged_note, resize_images
from bcauto.errors import BcautoError
from bcauto_builtin.sources import BLOOD_CELL_CLASSES

SEED_KEYS = ("images", "labels")
SEARCH_SPLITS = ("train", "val")  # never "test": it stays unseen by the search


def claims(spec: str) -> bool:
    """True for ``--data`` strings naming an .npz file."""
    return spec.lower().endswith(".npz")


def load(arg, image_size: int, options: dict) -> Dataset:
    """The ``npz`` source: ``--data PATH.npz`` or ``--data npz:PATH``."""
    if not arg:
        raise BcautoError("npz: give the file, as --data PATH.npz or --data npz:PATH")
    return load_npz(Path(arg).expanduser(), image_size)


def load_npz(path: Path, image_size: int, class_names: tuple[str, ...] | None = None) -> Dataset:
    """Images and labels of an .npz file, checked, converted to RGB uint8 and resized to ``image_size``.

    Class names come from the file's ``class_names`` array, else ``class_names``, else are made up. Each image
    is named by its array and index in the file (``images[17]``, ``val_images[3]``).
    """
    with _open(path) as npz:
        pairs, notes = _layout(npz, path)
        given_names = _given_class_names(npz, path) or class_names
        parts, labels, names = [], [], []
        for images_key, labels_key in pairs:
            where = f"{path} [{images_key}, {labels_key}]" if len(pairs) > 1 else str(path)
            images, split_labels, split_notes = validate_arrays(
                _array(npz, images_key, path), _array(npz, labels_key, path), where, given_names
            )
            parts.append(resize_images(images, image_size))
            notes += enlarged_note(where, np.full(len(images), min(images.shape[1:3])), image_size)
            labels.append(split_labels)
            names += [f"{images_key}[{i}]" for i in range(len(split_labels))]
            notes += split_notes
            del images  # frees a full-size split (when it was resized) before the next one is read
    labels = np.concatenate(labels)
    images = parts[0] if len(parts) == 1 else np.concatenate(parts)
    class_names, name_notes = _class_names(given_names, labels, path)
    return Dataset(
        images,
        labels,
        class_names,
        str(path),
        tuple(notes + name_notes),
        item_names=tuple(names),
        class_names_given=given_names is not None,
    )


def _open(path: Path):
    if not path.exists():
        raise BcautoError(f"{path}: file not found")
    if not path.is_file():
        raise BcautoError(f"{path}: not a file; expected an .npz archive")
    if not zipfile.is_zipfile(path):  # np.load would otherwise try other formats, pickle among them
        raise BcautoError(f"{path}: not an .npz archive (expected a zip of .npy arrays, as numpy.savez writes)")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise BcautoError(f"{path}: cannot be read as an .npz archive ({exc})") from None


def _array(npz, key: str, path: Path) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise BcautoError(
                f"{path}: array {key!r} holds Python objects (pickled data), refused because unpickling can run "
                "code; save plain numeric arrays (uint8 images, integer labels)"
            ) from None
        raise BcautoError(f"{path}: array {key!r} cannot be read ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise BcautoError(f"{path}: array {key!r} cannot be read ({exc})") from None


def _layout(npz, path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """The (images key, labels key) pairs to read, and a notice about the layout."""
    found = set(npz.files)
    if set(SEED_KEYS) <= found:
        return [SEED_KEYS], []
    if {"train_images", "train_labels"} <= found:
        splits = [split for split in SEARCH_SPLITS if f"{split}_images" in found or f"{split}_labels" in found]
        for split in splits:
            missing = [key for key in (f"{split}_images", f"{split}_labels") if key not in found]
            if missing:
                raise BcautoError(f"{path}: the {split} split has no {missing[0]!r} array; arrays found: {', '.join(sorted(found))}")
        test = " (the test split is not loaded: keep it for a final evaluation)" if "test_images" in found else ""
        return (
            [(f"{split}_images", f"{split}_labels") for split in splits],
            [f"{path}: MedMNIST layout, using the {' and '.join(splits)} splits{test}"],
        )
    raise BcautoError(
        f"{path}: expected arrays 'images' and 'labels' (or the MedMNIST layout 'train_images', 'train_labels', "
        f"'val_images', 'val_labels'); arrays found: {', '.join(sorted(found)) or 'none'}"
    )


def _given_class_names(npz, path: Path) -> tuple[str, ...] | None:
    if "class_names" not in npz.files:
        return None
    names = _array(npz, "class_names", path)
    if names.ndim != 1 or names.dtype.kind not in "US" or len(names) == 0:
        raise BcautoError(f"{path}: 'class_names' must be a non-empty 1-D array of strings, got {names.dtype} with shape {names.shape}")
    names = tuple(name.decode() if isinstance(name, bytes) else str(name) for name in names.tolist())
    if len(set(names)) != len(names):
        raise BcautoError(f"{path}: 'class_names' repeats a name: {', '.join(names)}")
    return names


def _class_names(given, labels: np.ndarray, path: Path) -> tuple[tuple[str, ...], list[str]]:
    if given is not None:
        return given, []
    count = int(labels.max()) + 1
    if count == len(BLOOD_CELL_CLASSES):
        return BLOOD_CELL_CLASSES, [
            (f"{path}: 8 classes and no 'class_names' array: named as the BloodMNIST classes ({', '.join(BLOOD_CELL_CLASSES)})")
        ]
    return tuple(f"class_{i}" for i in range(count)), []
