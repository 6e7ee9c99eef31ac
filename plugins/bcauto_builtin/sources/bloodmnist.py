"""BloodMNIST (MedMNIST v2/v3, Yang et al. 2023, CC BY 4.0): the PBC images at 28, 64, 128 or 224 pixels.

The .npz file is downloaded once with ``keras.utils.get_file`` (MD5-checked) into
``<cache_dir>/bloodmnist/`` (``cache_dir`` defaults to ``$KERAS_HOME`` or ``~/.keras``, as in Keras) and read
by the npz source, so only the train and val splits are used: the official test split is never returned.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.request
from pathlib import Path

from bcauto.data import Dataset
from bcauto.errors import BcautoError
from bcauto_builtin.sources import BLOOD_CELL_CLASSES, npz

RECORD = "https://zenodo.org/records/10519652/files"
CACHE_SUBDIR = "bloodmnist"
# size -> (file name, MD5) as in medmnist.info.INFO["bloodmnist"]
FILES = {
    28: ("bloodmnist.npz", "7053d0359d879ad8a5505303e11de1dc"),
    64: ("bloodmnist_64.npz", "2b94928a2ae4916078ca51e05b6b800b"),
    128: ("bloodmnist_128.npz", "adace1e0ed228fccda1f39692059dd4c"),
    224: ("bloodmnist_224.npz", "b718ff6835fcbdb22ba9eacccd7b2601"),
}


def url(size: int) -> str:
    """Where the ``size`` variant is downloaded from."""
    return f"{RECORD}/{FILES[size][0]}?download=1"


def variant_for(image_size: int) -> int:
    """The smallest published size at least ``image_size`` (so images are shrunk, not blown up), else 224."""
    return next((size for size in sorted(FILES) if size >= image_size), max(FILES))


def cache_root(cache_dir=None) -> Path:
    """The folder holding ``bloodmnist/``: ``cache_dir``, else where Keras caches downloads."""
    root = Path(cache_dir or os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()
    if root.is_dir() and not os.access(root, os.W_OK):
        return Path("/tmp/.keras")  # where keras.utils.get_file goes when the cache folder is read-only
    return root


def bloodmnist_cached(size: int, cache_dir=None) -> Path | None:
    """The cached file of the ``size`` variant, or None when it has not been downloaded."""
    path = cache_root(cache_dir) / CACHE_SUBDIR / FILES[size][0]
    return path if path.is_file() else None


def bloodmnist_reachable(timeout: float = 3.0) -> bool:
    """Whether the download server answers within ``timeout`` seconds."""
    request = urllib.request.Request(RECORD, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except Exception:  # noqa: BLE001 - offline, DNS failure, proxy, HTTP error: all mean "do not count on it"
        return False


def available(image_size: int, options: dict) -> str | None:
    """The size to load for ``image_size`` (as ``load``'s argument) when it is cached or the server answers."""
    size = variant_for(image_size)
    return str(size) if bloodmnist_cached(size, options.get("cache_dir")) or bloodmnist_reachable() else None


def download(size: int, cache_dir=None) -> Path:
    """The ``size`` variant's file, downloaded and MD5-checked unless already cached."""
    import keras  # imported here: TensorFlow start-up is slow and most sources never need it

    fname, md5 = FILES[size]
    root = cache_root(cache_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)  # get_file would use /tmp/.keras for a missing folder
        return Path(keras.utils.get_file(fname, url(size), file_hash=md5, cache_dir=str(root), cache_subdir=CACHE_SUBDIR))
    except Exception as exc:  # noqa: BLE001 - get_file raises bare Exception for network errors, ValueError for bad hashes
        raise BcautoError(
            f"BloodMNIST {size}px could not be downloaded from {url(size)} ({exc}); check the network, or use "
            "--data synthetic, or pass local data with --data PATH (an .npz file or an image folder)"
        ) from None


def load(arg, image_size: int, options: dict) -> Dataset:
    """The ``bloodmnist`` source; ``bloodmnist:64`` picks a size, else the smallest one >= ``image_size``."""
    size = _size(arg) if arg else variant_for(image_size)
    path = download(size, options.get("cache_dir"))
    data = npz.load_npz(path, image_size, class_names=BLOOD_CELL_CLASSES)
    return dataclasses.replace(data, source=f"bloodmnist:{size}")


def _size(arg: str) -> int:
    try:
        size = int(arg)
    except ValueError:
        size = None
    if size not in FILES:
        raise BcautoError(f"bloodmnist:{arg}: no such BloodMNIST size; choose one of {', '.join(map(str, FILES))}")
    return size
