"""Built-in class-imbalance strategies: none, class weights (seed section 4), down- and oversampling."""

from __future__ import annotations

import numpy as np

from bcauto import hookimpl
from bcauto.specs import ImbalancePlan, ImbalanceSpec


def keep_all(labels: np.ndarray, seed: int) -> ImbalancePlan:
    return ImbalancePlan(indices=np.arange(len(labels)))


def class_weights(labels: np.ndarray, seed: int) -> ImbalancePlan:
    """Loss weights inversely proportional to class frequency, scaled so the mean weight per sample is 1:
    scikit-learn's "balanced" weights, n / (classes x count), over the classes present."""
    from sklearn.utils.class_weight import compute_class_weight  # slow to import

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    return ImbalancePlan(indices=np.arange(len(labels)), class_weight=dict(zip(present.tolist(), weights.tolist())))


def _resample_each_class(labels: np.ndarray, seed: int, target: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) >= target:
            chosen.append(rng.choice(members, size=target, replace=False))
        else:  # keep every original once, then draw the rest with replacement
            chosen.append(np.concatenate([members, rng.choice(members, size=target - len(members), replace=True)]))
    return rng.permutation(np.concatenate(chosen))


def downsample(labels: np.ndarray, seed: int) -> ImbalancePlan:
    """Every class cut to the size of the smallest one (seed section 6.1)."""
    return ImbalancePlan(indices=_resample_each_class(labels, seed, int(np.bincount(labels)[np.unique(labels)].min())))


def oversample(labels: np.ndarray, seed: int) -> ImbalancePlan:
    """Every class drawn up to the size of the largest one (with replacement)."""
    return ImbalancePlan(indices=_resample_each_class(labels, seed, int(np.bincount(labels).max())))


@hookimpl
def register_imbalance_strategies(register):
    register(ImbalanceSpec("none", keep_all, "train on the data as it is"))
    register(ImbalanceSpec("class_weights", class_weights, "loss weights inversely proportional to class frequency"))
    register(ImbalanceSpec("downsample", downsample, "every class cut to the smallest class's size"))
    register(ImbalanceSpec("oversample", oversample, "every class drawn with replacement up to the largest class's size"))
