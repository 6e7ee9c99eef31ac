"""The dataset's own colour model: how unusual each image's frame colours are for this dataset.

A smoothed histogram of the (white-balanced, quantised) frame colours of the dataset's typical images; an
image's score is the mean negative log-probability of its frame pixels, leaving out the least probable
``TRIM`` of them: another cell reaching into the frame is a rare colour there, but covers only a part of it.
The model is fitted twice: first on
every image, then only on the images that the first fit found typical (up to ``TYPICAL_SHARE``), so a large
share of foreign pictures cannot teach the model their colours.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

BITS = 4  # per channel: 16 x 16 x 16 colour bins
TYPICAL_SHARE = 0.6  # refit on this share of images, the most typical first
SMOOTH = 0.7  # Gaussian smoothing of the histogram, in bins
FLOOR = 1e-7  # probability floor: colours never seen
TRIM = 0.25  # share of each frame (its least probable pixels) left out of the score


def colour_scores(codes: np.ndarray, fit: np.ndarray | None = None) -> np.ndarray:
    """Trimmed mean negative log-probability of each image's frame colours (``codes``: N x P colour codes),
    under a model of the images where ``fit`` is True (default: all)."""
    fit = np.ones(len(codes), bool) if fit is None else fit
    scores = _score(codes, _model(codes[fit]))
    typical = fit & (scores <= np.quantile(scores[fit], TYPICAL_SHARE))
    return _score(codes, _model(codes[typical]))


def _model(codes: np.ndarray) -> np.ndarray:
    bins = 1 << BITS
    counts = np.bincount(codes.ravel(), minlength=bins**3).astype(np.float64).reshape(bins, bins, bins)
    smooth = ndimage.gaussian_filter(counts, SMOOTH, mode="constant")
    probability = smooth.ravel() / smooth.sum()
    return -np.log(probability + FLOOR)


def _score(codes: np.ndarray, neg_log: np.ndarray) -> np.ndarray:
    keep = max(1, int(round((1 - TRIM) * codes.shape[1])))
    out = np.empty(len(codes))
    for start in range(0, len(codes), 2048):
        values = neg_log[codes[start : start + 2048]]
        out[start : start + 2048] = np.partition(values, keep - 1, axis=1)[:, :keep].mean(1)
    return out
