"""Self-training for ``bcauto adapt --pseudo-labels``: after fine-tuning on the few labelled shots, the model labels
the new lab's other images (their labels unread), and the images it is surest of join the shots for a second
fine-tuning, so that hundreds of the lab's images teach the model its look rather than a few dozen.

The choice is class-balanced (CBST, Zou et al., ECCV 2018): a threshold per predicted class, the most confident
share of each, so a class the model is less sure of in the new lab still gets pseudo-labelled images and the
common classes do not crowd it out. On request (``--align-to-shots``) the probabilities are first aligned to the
new lab's class mix as the shots show it (distribution alignment, Berthelot et al., ReMixMatch, ICLR 2020): a model
trained on another lab's mix may under-predict a class that is commoner in the new lab, and the surest images of a
class it under-predicts are its most typical ones, so its borderline members are pseudo-labelled as the
neighbouring class and the second fine-tuning learns the model's own bias.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PSEUDO_SHARE = 0.5  # of the images predicted as each class, the most confident half are pseudo-labelled


def shot_prior(shot_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The new lab's class mix as ``shot_labels`` show it, Laplace-smoothed (add one to every class) so that a class
    the shots happen to miss keeps a small share rather than none."""
    counts = np.bincount(shot_labels, minlength=num_classes).astype(np.float64)
    return (counts + 1) / (counts.sum() + num_classes)


def align(probs: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """``probs`` with each class scaled by ``prior`` over the mean prediction for that class across ``probs``, each
    row renormalized: the mean prediction moves to ``prior`` (exactly so before the renormalization)."""
    if prior.shape != (probs.shape[1],) or not np.all(prior > 0):
        raise ValueError(f"prior must hold {probs.shape[1]} positive class shares, got {prior}")
    scaled = probs * (prior / np.maximum(probs.mean(axis=0), 1e-12))
    return scaled / scaled.sum(axis=1, keepdims=True)


def choose_pseudo_labels(probs: np.ndarray, share: float = PSEUDO_SHARE, prior: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(indices into ``probs`` sorted, their predicted classes): for every class predicted at least once, the
    ``share`` of the images predicted as it with the highest probability (at least one; ties by index). With a
    ``prior`` (the new lab's class shares), the probabilities are first aligned to it (:func:`align`)."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    if prior is not None:
        probs = align(probs, prior)
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    chosen = []
    for c in np.unique(predicted):
        members = np.flatnonzero(predicted == c)
        keep = max(1, int(round(share * len(members))))
        chosen.append(members[np.argsort(-confidence[members], kind="stable")[:keep]])
    index = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    return index.astype(np.int64), predicted[index]


def pseudo_label_record(
    index: np.ndarray, predicted: np.ndarray, pool: int, class_names, prior: np.ndarray | None = None
) -> dict[str, Any]:
    """What was pseudo-labelled, for the lineage: how many of the pool, how many as each class, and the class mix
    the probabilities were aligned to."""
    counts = np.bincount(predicted, minlength=len(class_names))
    return {
        "method": f"class-balanced self-training: the most confident {PSEUDO_SHARE:.0%} of the images predicted as each class",
        "aligned_to": {class_names[c]: round(float(p), 4) for c, p in enumerate(prior)} if prior is not None else None,
        "pool": int(pool),
        "pseudo_labelled": int(len(index)),
        "by_class": {class_names[c]: int(n) for c, n in enumerate(counts) if n},
    }
