"""Blank and corrupt images, by fixed rules: no photograph of a smear looks like these, whatever the lab.

* blank: (nearly) one colour everywhere;
* broken: a band of identical rows or columns, a fifth of the image or more (a JPEG cut short decodes grey
  from some row down; a broken decoder repeats a row or column);
* noise: no spatial structure at all (neighbouring pixels uncorrelated).
"""

from __future__ import annotations

import numpy as np

BLANK_STD = 2.0  # pixel standard deviation (0..255) under which an image is blank
BAND_SHARE = 0.2  # identical consecutive rows (or columns) covering this share of the image: broken
NOISE_CORRELATION = 0.2  # neighbouring-pixel correlation under which an image is noise
_CHUNK = 1024


def blank_or_corrupt(images: np.ndarray) -> list[str]:
    """One reason per image: ``""`` for a plausible image, else what is wrong with it."""
    reasons = []
    for start in range(0, len(images), _CHUNK):
        reasons += _chunk_reasons(images[start : start + _CHUNK])
    return reasons


def _chunk_reasons(chunk: np.ndarray) -> list[str]:
    n, height, width = chunk.shape[:3]
    flat = chunk.reshape(n, -1)
    spread = np.full(n, np.inf)
    narrow = np.flatnonzero(flat.max(axis=1) - flat.min(axis=1) < 8 * BLANK_STD)  # only these can be blank
    if len(narrow):
        spread[narrow] = flat[narrow].astype(np.float32).std(axis=1)
    rows = chunk.reshape(n, height, width * 3)
    same_rows = _longest_run((rows[:, 1:] == rows[:, :-1]).all(axis=2)) + 1
    cols = np.ascontiguousarray(chunk.transpose(0, 2, 1, 3)).reshape(n, width, height * 3)
    same_cols = _longest_run((cols[:, 1:] == cols[:, :-1]).all(axis=2)) + 1
    top, left = max(0, (height - 48) // 2), max(0, (width - 48) // 2)
    grey = chunk[:, top : top + 48, left : left + 48, 1].astype(np.float32)  # green, centre: enough to see noise
    correlation = np.maximum(_neighbour_correlation(grey, 1), _neighbour_correlation(grey, 2))
    out = []
    for i in range(n):
        if spread[i] < BLANK_STD:
            out.append(f"blank: one colour (pixel spread {spread[i]:.1f})")
        elif same_rows[i] >= max(4, BAND_SHARE * height):
            out.append(f"broken: {same_rows[i]} identical rows in a row (truncated or damaged file)")
        elif same_cols[i] >= max(4, BAND_SHARE * width):
            out.append(f"broken: {same_cols[i]} identical columns in a row (damaged file)")
        elif correlation[i] < NOISE_CORRELATION:
            out.append(f"noise: neighbouring pixels uncorrelated ({correlation[i]:.2f})")
        else:
            out.append("")
    return out


def _longest_run(equal: np.ndarray) -> np.ndarray:
    """Longest run of True along axis 1 of a boolean N x L array."""
    best = np.zeros(len(equal), np.int64)
    current = np.zeros(len(equal), np.int64)
    for column in equal.T:
        current = np.where(column, current + 1, 0)
        np.maximum(best, current, out=best)
    return best


def _neighbour_correlation(grey: np.ndarray, axis: int) -> np.ndarray:
    """Correlation of each pixel with its neighbour along ``axis`` (1 = rows, 2 = columns), per image."""
    n = len(grey)
    grey = grey - grey.mean(axis=(1, 2), keepdims=True)
    a = (grey[:, 1:] if axis == 1 else grey[:, :, 1:]).reshape(n, -1)
    b = (grey[:, :-1] if axis == 1 else grey[:, :, :-1]).reshape(n, -1)
    return np.einsum("ij,ij->i", a, b) / np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b) + 1e-6)
