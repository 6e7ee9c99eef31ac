"""Data from several sources at once (labs, microscopes, scanners): one Dataset whose images remember their domain.

``--data "lab_a/ + lab_b.npz"`` (or ``--data lab_a/ --data lab_b.npz`` in ``bcauto search``) loads each source as
usual and merges them: classes are matched by name across sources (a class only one lab has is kept), and each
image keeps the index of its source in ``Dataset.domains``. A study then validates on a domain it never trains
on (see :func:`bcauto.data.split.hold_out_domain`), which is how a model for an unseen lab is chosen.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from bcauto.data.dataset import Dataset
from bcauto.errors import BcautoError

SEPARATOR = " + "


def class_key(name: str) -> str:
    """A class name as matched across sources and models: case, spaces, hyphens and underscores ignored."""
    return re.sub(r"[\s_-]+", "_", name.strip().lower())


def split_spec(spec: str) -> list[str]:
    """The sources of a ``--data`` string: several when joined by ``" + "``."""
    parts = [part.strip() for part in spec.split(SEPARATOR)]
    if len(parts) > 1 and not all(parts):
        raise BcautoError(f"--data {spec!r}: an empty source between {SEPARATOR.strip()!r} signs")
    return parts


def domain_name(spec: str) -> str:
    """A short name for the source ``spec``: the last part of a path without its suffix, or the spec itself."""
    path = Path(spec.rstrip("/\\"))
    return path.stem if (path.parent != Path(".") or path.suffix) else spec


def merge_domains(parts: list[Dataset], names: list[str]) -> Dataset:
    """One Dataset of ``parts`` (each loaded at the same image size), one domain per part, named ``names``.

    The class list is the first part's, followed by the classes later parts add, matched by :func:`class_key`.
    Image names become ``DOMAIN/name`` so a flagged image can be found again.
    """
    if len(parts) < 2:
        raise BcautoError("several sources are needed to merge domains")
    unique = _unique(names)
    sizes = {part.image_size for part in parts}
    if len(sizes) > 1:
        raise BcautoError(f"sources of different image sizes cannot be merged: {sorted(sizes)}")
    class_names: list[str] = []
    keys: dict[str, int] = {}
    labels = []
    for part in parts:
        mapping = []
        for name in part.class_names:
            if class_key(name) not in keys:
                keys[class_key(name)] = len(class_names)
                class_names.append(name)
            mapping.append(keys[class_key(name)])
        labels.append(np.asarray(mapping, np.int64)[part.labels] if len(part.labels) else part.labels)
    items: tuple[str, ...] = ()
    if any(part.item_names for part in parts):
        items = tuple(f"{domain}/{part.item_name(i) or i}" for domain, part in zip(unique, parts) for i in range(len(part.labels)))
    return Dataset(
        images=np.concatenate([part.images for part in parts]),
        labels=np.concatenate(labels).astype(np.int64),
        class_names=tuple(class_names),
        source=SEPARATOR.join(part.source for part in parts),
        notes=tuple(note for part in parts for note in part.notes),
        item_names=items,
        left_out=tuple((f"{domain}/{name}", why) for domain, part in zip(unique, parts) for name, why in part.left_out),
        domains=np.concatenate([np.full(len(part.labels), i, np.int64) for i, part in enumerate(parts)]),
        domain_names=tuple(unique),
    )


def _unique(names: list[str]) -> list[str]:
    """``names`` with repeats numbered (``lab``, ``lab-2``), so two folders both called ``images`` stay apart."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return out
