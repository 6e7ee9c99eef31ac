"""The seeded, stratified train/validation split that never puts a copy of a validation image in training."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from bcauto.data.dataset import Dataset
from bcauto.errors import BcautoError


@dataclass(frozen=True)
class Split:
    """Indices into a dataset, and a hash of them for the logs."""

    train: np.ndarray
    val: np.ndarray

    def fingerprint(self) -> str:
        digest = hashlib.sha256(np.sort(self.train).tobytes() + b"|" + np.sort(self.val).tobytes())
        return digest.hexdigest()[:16]


def exact_duplicate_groups(images: np.ndarray) -> np.ndarray:
    """One group id per image; byte-identical images share an id."""
    ids: dict[bytes, int] = {}
    return np.array([ids.setdefault(hashlib.blake2b(img.tobytes(), digest_size=16).digest(), len(ids)) for img in images])


def stratified_split(data: Dataset, val_fraction: float, seed: int, groups: np.ndarray | None = None) -> Split:
    """Split ``data`` keeping class proportions; images of one group (duplicates) land on one side.

    ``groups`` defaults to exact-duplicate groups; the audit passes near-duplicate groups as well.
    """
    counts = data.class_counts()
    n_splits = max(2, int(round(1 / val_fraction)))
    small = [(data.class_names[c], int(n)) for c, n in enumerate(counts) if 0 < n < n_splits]
    if small:
        names = ", ".join(f"{name} ({n})" for name, n in small)
        raise BcautoError(
            f"{data.source}: classes with fewer than {n_splits} images cannot be split {1 - val_fraction:.0%}/{val_fraction:.0%}: "
            f"{names}; add images or remove the class"
        )
    if groups is None:
        groups = exact_duplicate_groups(data.images)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train, val = next(splitter.split(np.zeros(len(data.labels)), data.labels, groups))
    return Split(train=np.sort(train), val=np.sort(val))
