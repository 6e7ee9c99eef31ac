"""Outliers: images that are not one cell on a smear background (pasted over a foreign picture, unusual).

Three detectors, each with a threshold taken from the data's own score distribution:

* colour: how improbable the frame's white-balanced colours are under the dataset's colour model
  (:mod:`bcauto.audit.colour`); the strongest single signal of a foreign background;
* learned: a robust covariance (scikit-learn ``MinCovDet``, 40% breakdown) over every feature of
  :mod:`bcauto.audit.features`, each robustly standardised; the Mahalanobis distance catches a frame
  whose colours pass but whose texture, saturation or background colour do not;
* bare frame: a frame with far fewer red cells, or far less fine detail next to its own cell, than this
  dataset's frames: a cell pasted over a fill in the smear's own colour (flat, blurred, mottled), which the
  colour check cannot see and which one feature among twenty moves too little for the covariance. Focus
  barely moves either feature (a blur keeps the red cells' area and smooths the cell as much as the frame),
  so a soft image is not flagged.

Each score becomes a robust z-score: distance from the median in units of the spread of the half of the
scores away from the outliers (for colour and learned, the median minus the lower quartile; for a bare
frame, which sits on the low side, the upper quartile minus the median), which a share of outliers barely
moves. An image is an outlier when any z-score passes its threshold. Nothing is fitted to a particular lab:
another stain moves every image and the model with it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from bcauto.audit.colour import colour_scores
from bcauto.audit.features import NAMES, image_features

COLOUR_THRESHOLD = 4.0
LEARNED_THRESHOLD = 4.5
BARE_THRESHOLD = 6.0
# features that focus barely moves, whose low side marks a frame with no smear in it: what a bare frame lacks
BARE_FEATURES = {"red_cell_cover": "far fewer red cells", "frame_to_centre_texture": "far less fine detail next to its cell"}
SUPPORT = 0.6  # share of images the robust covariance is fitted on (its breakdown point is 1 - SUPPORT)
MIN_IMAGES = 20  # fewer images than this: no outlier detection (no distribution to learn from)
MIN_IMAGES_PER_FEATURE = 10  # the covariance needs this many images per feature, else colour only
MIN_CLASS = 30  # classes with fewer images are standardised with the whole dataset
# texture energies: a frame smoother than usual (defocus, stronger JPEG) is no sign of a foreign picture, so
# these count at most SMOOTH_FLOOR sigmas below the median
SMOOTHER_IS_FINE = ("fine_texture", "contrast", "chroma_fine", "chroma_coarse")
SMOOTH_FLOOR = -2.0
# more of the frame covered by red cells than usual (a thicker part of the smear) is no sign either: at most
# DENSE_CEILING sigmas above the median
DENSER_IS_FINE = ("red_cell_cover",)
DENSE_CEILING = 2.0


@dataclass(frozen=True)
class OutlierResult:
    """Per-image robust z-scores (colour, learned), features, and which images are outliers and why."""

    colour: np.ndarray
    learned: np.ndarray
    bare: np.ndarray
    features: np.ndarray
    flagged: np.ndarray  # bool
    reasons: list[str]
    notes: tuple[str, ...] = ()


def detect_outliers(
    images: np.ndarray,
    fit: np.ndarray | None = None,
    seed: int = 0,
    colour_threshold: float = COLOUR_THRESHOLD,
    learned_threshold: float = LEARNED_THRESHOLD,
    labels: np.ndarray | None = None,
    bare_threshold: float = BARE_THRESHOLD,
) -> OutlierResult:
    """Score every image; the models are fitted on the images where ``fit`` is True (default: all).

    With ``labels``, the learned detector standardises features within each class large enough
    (``MIN_CLASS``): what is usual for a big pale monocyte is not unusual, whatever the other classes do.
    """
    n = len(images)
    fit = np.ones(n, bool) if fit is None else np.asarray(fit, bool)
    features, codes = image_features(images)
    if fit.sum() < MIN_IMAGES:
        note = f"outliers: not checked, {int(fit.sum())} images are too few to learn what is usual (need {MIN_IMAGES})"
        zeros = np.zeros(n)
        return OutlierResult(zeros, zeros, zeros, features, np.zeros(n, bool), [""] * n, (note,))
    features[:, 0] = colour_scores(codes, fit)
    colour = robust_z(features[:, 0], fit)
    notes: list[str] = []
    if fit.sum() >= MIN_IMAGES_PER_FEATURE * features.shape[1]:
        learned, standardised = _learned_scores(features, fit, seed, labels)
    else:
        learned, standardised = np.zeros(n), standardise(features, fit)
        notes.append(
            f"outliers: {int(fit.sum())} images are too few for the learned detector "
            f"(need {MIN_IMAGES_PER_FEATURE * features.shape[1]}); colour and bare-frame checks only"
        )
    bare, bare_parts = _bare_scores(features, fit)
    flagged = (colour > colour_threshold) | (learned > learned_threshold) | (bare > bare_threshold)
    thresholds = (colour_threshold, learned_threshold, bare_threshold)
    reasons = [_reason(colour[i], learned[i], bare_parts[i], standardised[i], thresholds) if flagged[i] else "" for i in range(n)]
    return OutlierResult(colour, learned, bare, features, flagged, reasons, tuple(notes))


def robust_z(values: np.ndarray, fit: np.ndarray | None = None) -> np.ndarray:
    """(value - median) / lower-half spread, the spread being (median - lower quartile) / 0.6745."""
    reference = values if fit is None else values[fit]
    median = np.median(reference)
    spread = (median - np.quantile(reference, 0.25)) / 0.6745
    if not spread > 1e-9:
        spread = np.std(reference) or 1.0
    return (values - median) / spread


def low_z(values: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """(median - value) / upper-half spread: how far below the usual a value is, in units that the low
    outliers do not move."""
    reference = values[fit]
    median = np.median(reference)
    spread = (np.quantile(reference, 0.75) - median) / 0.6745
    if not spread > 1e-9:
        spread = np.std(reference) or 1.0
    return (median - values) / spread


def _bare_scores(features: np.ndarray, fit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the larger low-side z of the bare-frame features, and each feature's (N x len(BARE_FEATURES))."""
    columns = features[:, [NAMES.index(name) for name in BARE_FEATURES]]
    parts = np.stack([low_z(column, fit) for column in columns.T], 1)
    return parts.max(1), parts


def standardise(features: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """Each feature centred on its median and divided by its interquartile range (as a sigma)."""
    reference = features[fit]
    median = np.median(reference, axis=0)
    spread = (np.quantile(reference, 0.75, axis=0) - np.quantile(reference, 0.25, axis=0)) / 1.349
    fallback = reference.std(axis=0)
    spread = np.where(spread > 1e-9, spread, np.where(fallback > 1e-9, fallback, 1.0))
    return (features - median) / spread


def _learned_scores(features: np.ndarray, fit: np.ndarray, seed: int, labels=None) -> tuple[np.ndarray, np.ndarray]:
    """Robust z of the log robust-Mahalanobis distance over all (compressed, standardised) features."""
    from sklearn.covariance import MinCovDet

    standardised = standardise(features, fit)
    if labels is not None:
        for label in np.unique(labels):
            members = labels == label
            if (members & fit).sum() >= MIN_CLASS:
                standardised[members] = standardise(features[members], fit[members])
    floored = standardised.copy()
    for name in SMOOTHER_IS_FINE:
        floored[:, NAMES.index(name)] = np.maximum(floored[:, NAMES.index(name)], SMOOTH_FLOOR)
    for name in DENSER_IS_FINE:
        floored[:, NAMES.index(name)] = np.minimum(floored[:, NAMES.index(name)], DENSE_CEILING)
    compressed = np.arcsinh(floored)  # extreme values stay extreme but cannot dominate the fit
    usable = compressed[:, compressed[fit].std(axis=0) > 1e-9]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "covariance matrix not full rank" on degenerate data: handled below
        try:
            model = MinCovDet(support_fraction=SUPPORT, random_state=seed).fit(usable[fit])
            distance = model.mahalanobis(usable)
        except (ValueError, np.linalg.LinAlgError):
            from sklearn.ensemble import IsolationForest

            forest = IsolationForest(n_estimators=200, random_state=seed).fit(usable[fit])
            distance = np.exp(-forest.score_samples(usable))
    distance = np.log(np.maximum(distance, 1e-12))
    return robust_z(distance, fit), standardised


def _reason(colour: float, learned: float, bare: np.ndarray, standardised: np.ndarray, thresholds: tuple[float, float, float]) -> str:
    colour_threshold, learned_threshold, bare_threshold = thresholds
    parts = []
    if colour > colour_threshold:
        parts.append(f"frame colours unusual for this dataset (z {colour:.1f})")
    if learned > learned_threshold:
        top = np.argsort(-np.abs(standardised[1:]))[:3] + 1
        names = ", ".join(f"{NAMES[k]} {standardised[k]:+.1f}" for k in top)
        parts.append(f"colour/texture features unusual (z {learned:.1f}: {names})")
    if bare.max() > bare_threshold:
        low = " and ".join(f"{lacks} (z {z:.1f})" for lacks, z in zip(BARE_FEATURES.values(), bare) if z > bare_threshold)
        parts.append(f"frame bare: {low} than this dataset's frames")
    return "; ".join(parts)
