"""Shifted validation: a corrupted copy of a labelled set, made once per study from the registered shifts."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from bcauto.data import Dataset
from bcauto.registry import Registry


def corrupt(images: np.ndarray, shift, severity: int, seed: int) -> np.ndarray:
    """``images`` through one shift at one severity, deterministic for ``seed``."""
    return shift.apply(images, severity, np.random.default_rng(seed))


def shifted_copy(data: Dataset, shifts: Registry, seed: int) -> tuple[Dataset, np.ndarray]:
    """Each image through one (shift, severity) drawn with ``seed``; also the ``"name:severity"`` of each image.

    One corruption per image keeps the cost of scoring at one extra pass over the validation set, while
    every shift and severity is still represented.
    """
    rng = np.random.default_rng(seed)
    names = shifts.names()
    pairs = [(name, severity) for name in names for severity in shifts.get(name).severities]
    chosen = rng.integers(0, len(pairs), len(data.labels))
    images = np.array(data.images, copy=True)
    for k, (name, severity) in enumerate(pairs):
        members = np.flatnonzero(chosen == k)
        if len(members):
            images[members] = corrupt(images[members], shifts.get(name), severity, seed + k)
    tags = np.array([f"{pairs[k][0]}:{pairs[k][1]}" for k in chosen])
    return Dataset(images, data.labels, data.class_names, f"{data.source} (shifted)"), tags


def every_shift(data: Dataset, shifts: Registry, seed: int) -> Iterator[tuple[str, int, np.ndarray]]:
    """Every shift at every severity over the whole set: ``(name, severity, images)``."""
    for k, name in enumerate(shifts.names()):
        spec = shifts.get(name)
        for severity in spec.severities:
            yield name, severity, corrupt(data.images, spec, severity, seed + 100 * k + severity)
