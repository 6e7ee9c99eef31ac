"""The seeded, stratified train/validation split that never puts a copy of a validation image in training.

Copies are exact duplicates and near duplicates (re-encoded, brightened, shifted or cropped), found by the
data audit (:func:`bcauto.audit.near_duplicate_groups`): every group lands on one side of the split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from bcauto.data.dataset import Dataset
from bcauto.errors import BcautoError
from bcauto.text import plural


@dataclass(frozen=True)
class Split:
    """Indices into a dataset, and a hash of them for the logs."""

    train: np.ndarray
    val: np.ndarray

    def fingerprint(self) -> str:
        digest = hashlib.sha256(np.sort(self.train).tobytes() + b"|" + np.sort(self.val).tobytes())
        return digest.hexdigest()[:16]


def copy_groups(images: np.ndarray) -> np.ndarray:
    """One group id per image; exact and near duplicates share an id (the split's default grouping)."""
    from bcauto.audit.near import near_duplicate_groups

    return near_duplicate_groups(images)


def stratified_split(data: Dataset, val_fraction: float, seed: int, groups: np.ndarray | None = None) -> Split:
    """Split ``data`` keeping class proportions; images of one group (copies) land on one side.

    ``groups`` (one id per image) defaults to :func:`copy_groups`: exact and near duplicates, so no copy or
    near copy of a validation image is in training.
    """
    counts = data.class_counts()
    present = [data.class_names[c] for c, n in enumerate(counts) if n > 0]
    if len(present) < 2:
        raise BcautoError(
            f"{data.source}: only one class has images ({', '.join(present) or 'none'}); a classifier needs "
            "at least two (an image folder needs one subfolder per class)"
        )
    n_splits = max(2, int(round(1 / val_fraction)))
    small = [(data.class_names[c], int(n)) for c, n in enumerate(counts) if 0 < n < n_splits]
    if small:
        names = ", ".join(f"{name} ({n})" for name, n in small)
        raise BcautoError(
            f"{data.source}: classes with fewer than {n_splits} images cannot be split {1 - val_fraction:.0%}/{val_fraction:.0%}: "
            f"{names}; add images or remove the class"
        )
    if groups is None:
        groups = copy_groups(data.images)
    elif len(groups) != len(data.labels):
        raise BcautoError(f"{data.source}: {plural(len(groups), 'group id')} for {plural(len(data.labels), 'image')}")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train, val = next(splitter.split(np.zeros(len(data.labels)), data.labels, groups))
    return Split(train=np.sort(train), val=np.sort(val))


def hold_out_domain(data: Dataset, name: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(indices of the other domains, indices of the held-out domain, its name) for data from several sources.

    ``name`` picks the domain to hold out (default: the last source given), so a study validates on a lab it
    never trains on.
    """
    if data.domains is None or len(data.domain_names) < 2:
        raise BcautoError(
            f"{data.source}: a held-out domain needs data from several sources "
            "(--data 'LAB_A + LAB_B', or --data LAB_A --data LAB_B in bcauto search)"
        )
    chosen = name or data.domain_names[-1]
    if chosen not in data.domain_names:
        raise BcautoError(f"[data] validation_domain = {chosen!r} is none of the sources' domains: {', '.join(data.domain_names)}")
    held = data.domains == data.domain_names.index(chosen)
    if not held.any():
        raise BcautoError(f"{data.source}: the domain {chosen!r} has no images")
    return np.flatnonzero(~held), np.flatnonzero(held), chosen
