"""From a ``--data`` string to a checked Dataset: a source name (``name:arg``), a path, or ``auto``."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from bcauto.data.dataset import Dataset
from bcauto.data.domains import domain_name, merge_domains, split_spec
from bcauto.errors import BcautoError
from bcauto.text import plural

AUTO = "auto"


def load_data(spec: str, image_size: int, components, options: dict | None = None) -> Dataset:
    """The dataset ``spec`` names, with uint8 images ``image_size`` pixels square.

    ``spec`` is ``auto``, a registered source's name with an optional argument (``synthetic:2000``,
    ``bloodmnist:64``), or a path that a source claims (an .npz file, an image folder); several of these joined
    by ``" + "`` are loaded as one dataset with a domain per source (:mod:`bcauto.data.domains`). ``components``
    is :func:`bcauto.plugins.components`; ``options`` go to the source (``seed``, ``synthetic_size``,
    ``on_bad_image``, ``cache_dir``).
    """
    options = dict(options or {})
    spec = spec.strip()
    parts = split_spec(spec)
    if len(parts) > 1:
        return merge_domains([load_data(part, image_size, components, options) for part in parts], [domain_name(part) for part in parts])
    registry = components.datasets
    if spec == AUTO:
        return _auto(image_size, registry, options)
    name, _, arg = spec.partition(":")
    if name in registry:
        return _checked(registry.get(name).load(arg or None, image_size, options), image_size, name)
    path = os.path.expanduser(spec)
    for source_name, source, _ in registry:
        if source.claims(path):
            return _checked(source.load(path, image_size, options), image_size, source_name)
    raise BcautoError(_unknown(spec, name, registry))


def _auto(image_size: int, registry, options: dict) -> Dataset:
    """BloodMNIST when its source says the data can be had now (cached, or its server answers), otherwise
    synthetic images (with a notice)."""
    if "bloodmnist" in registry:
        source = registry.get("bloodmnist")
        arg = source.available(image_size, options) if source.available else None
        if arg is not None or source.available is None:
            data = _checked(source.load(arg, image_size, options), image_size, "bloodmnist")
            what = f"BloodMNIST {arg}px" if arg else data.source
            return _with_note(data, f"--data auto: using {what}; pass --data PATH to use your own images")
    if "synthetic" not in registry:
        raise BcautoError(
            "--data auto: neither the 'bloodmnist' nor the 'synthetic' source is enabled; "
            "pass --data PATH (an .npz file or an image folder)"
        )
    data = _checked(registry.get("synthetic").load(None, image_size, options), image_size, "synthetic")
    return _with_note(
        data,
        "--data auto: BloodMNIST is neither cached nor reachable, so SYNTHETIC images are used; "
        "pass real data with --data PATH (an .npz file or an image folder) or --data bloodmnist",
    )


def _with_note(data: Dataset, note: str) -> Dataset:
    return dataclasses.replace(data, notes=(*data.notes, note))


def _checked(data, image_size: int, name: str) -> Dataset:
    """``data`` as a source returned it, refused if it breaks the Dataset contract (a plugin bug)."""
    where = f"data source {name!r}"
    if not isinstance(data, Dataset):
        raise BcautoError(f"{where} returned {type(data).__name__}; expected a bcauto.data.Dataset")
    images, labels = data.images, data.labels
    if images.dtype != np.uint8 or images.shape[1:] != (image_size, image_size, 3):
        raise BcautoError(
            f"{where} returned {images.dtype} images of shape {images.shape}; expected uint8 N x {image_size} x {image_size} x 3"
        )
    if labels.dtype != np.int64 or labels.shape != (len(images),):
        raise BcautoError(
            f"{where} returned {labels.dtype} labels of shape {labels.shape}; expected int64 with one label per image ({len(images)})"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(data.class_names)):
        raise BcautoError(f"{where} returned labels {labels.min()}..{labels.max()} for {plural(len(data.class_names), 'class')}")
    return data


def _unknown(spec: str, name: str, registry) -> str:
    if ":" in spec and not _looks_like_path(spec):  # NAME:ARG names a source; a bare word may as well be a path
        return f"--data {spec!r}: {registry.unknown_message(name)}"
    path = Path(spec).expanduser()
    if path.exists():
        problem = f"{path} exists but no data source reads it (expected an .npz file or a folder of class subfolders)"
    else:
        problem = f"path {path} was not found"
    return f"--data {spec!r}: {problem} (and it is no data source name: {registry.unknown_message(spec)})"


def _looks_like_path(spec: str) -> bool:
    return any(sep in spec for sep in ("/", "\\", os.sep)) or spec.startswith((".", "~")) or bool(Path(spec).suffix)
