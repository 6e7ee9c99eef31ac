"""Outliers: images that are not one cell on a smear background (pasted over a foreign picture, unusual).

Two detectors, each with a threshold taken from the data's own score distribution:

* colour: how improbable the frame's white-balanced colours are under the dataset's colour model
  (:mod:`bcauto.audit.colour`); the strongest single signal of a foreign background;
* learned: a robust covariance (scikit-learn ``MinCovDet``, 40% breakdown) over every feature of
  :mod:`bcauto.audit.features`, each robustly standardised; the Mahalanobis distance catches a frame
  whose colours pass but whose texture, saturation or background colour do not.

Each score becomes a robust z-score: distance from the median in units of the spread of the *lower* half of
the scores (median minus lower quartile), which a share of outliers (all on the upper side) barely moves. An
image is an outlier when either z-score passes its threshold. Nothing is fitted to a particular lab: another
stain moves every image and the model with it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from bcauto.audit.colour import colour_scores
from bcauto.audit.features import NAMES, image_features

COLOUR_THRESHOLD = 4.0
LEARNED_THRESHOLD = 4.5
SUPPORT = 0.6  # share of images the robust covariance is fitted on (its breakdown point is 1 - SUPPORT)
MIN_IMAGES = 20  # fewer images than this: no outlier detection (no distribution to learn from)
MIN_IMAGES_PER_FEATURE = 10  # the covariance needs this many images per feature, else colour only
MIN_CLASS = 30  # classes with fewer images are standardised with the whole dataset
# texture energies: a frame smoother than usual (defocus, stronger JPEG) is no sign of a foreign picture, so
# these count at most SMOOTH_FLOOR sigmas below the median
SMOOTHER_IS_FINE = ("fine_texture", "contrast", "chroma_fine", "chroma_coarse")
SMOOTH_FLOOR = -2.0


@dataclass(frozen=True)
class OutlierResult:
    """Per-image robust z-scores (colour, learned), features, and which images are outliers and why."""

    colour: np.ndarray
    learned: np.ndarray
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
        return OutlierResult(zeros, zeros, features, np.zeros(n, bool), [""] * n, (note,))
    features[:, 0] = colour_scores(codes, fit)
    colour = robust_z(features[:, 0], fit)
    notes: list[str] = []
    if fit.sum() >= MIN_IMAGES_PER_FEATURE * features.shape[1]:
        learned, standardised = _learned_scores(features, fit, seed, labels)
    else:
        learned, standardised = np.zeros(n), standardise(features, fit)
        notes.append(
            f"outliers: {int(fit.sum())} images are too few for the learned detector "
            f"(need {MIN_IMAGES_PER_FEATURE * features.shape[1]}); colour check only"
        )
    flagged = (colour > colour_threshold) | (learned > learned_threshold)
    reasons = [_reason(colour[i], learned[i], standardised[i], colour_threshold, learned_threshold) if flagged[i] else "" for i in range(n)]
    return OutlierResult(colour, learned, features, flagged, reasons, tuple(notes))


def robust_z(values: np.ndarray, fit: np.ndarray | None = None) -> np.ndarray:
    """(value - median) / lower-half spread, the spread being (median - lower quartile) / 0.6745."""
    reference = values if fit is None else values[fit]
    median = np.median(reference)
    spread = (median - np.quantile(reference, 0.25)) / 0.6745
    if not spread > 1e-9:
        spread = np.std(reference) or 1.0
    return (values - median) / spread


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


def _reason(colour: float, learned: float, standardised: np.ndarray, colour_threshold: float, learned_threshold: float) -> str:
    parts = []
    if colour > colour_threshold:
        parts.append(f"frame colours unusual for this dataset (z {colour:.1f})")
    if learned > learned_threshold:
        top = np.argsort(-np.abs(standardised[1:]))[:3] + 1
        names = ", ".join(f"{NAMES[k]} {standardised[k]:+.1f}" for k in top)
        parts.append(f"colour/texture features unusual (z {learned:.1f}: {names})")
    return "; ".join(parts)
