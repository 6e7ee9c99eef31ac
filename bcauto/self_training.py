"""Self-training for ``bcauto adapt --pseudo-labels``: after fine-tuning on the few labelled shots, the model labels
the new lab's other images (their labels unread), and the images it is surest of join the shots for a second
fine-tuning, so that hundreds of the lab's images teach the model its look rather than a few dozen.

The choice is class-balanced (CBST, Zou et al., ECCV 2018): a threshold per predicted class, the most confident
share of each, so a class the model is less sure of in the new lab still gets pseudo-labelled images and the
common classes do not crowd it out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PSEUDO_SHARE = 0.5  # of the images predicted as each class, the most confident half are pseudo-labelled


def choose_pseudo_labels(probs: np.ndarray, share: float = PSEUDO_SHARE) -> tuple[np.ndarray, np.ndarray]:
    """(indices into ``probs`` sorted, their predicted classes): for every class predicted at least once, the
    ``share`` of the images predicted as it with the highest probability (at least one; ties by index)."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    chosen = []
    for c in np.unique(predicted):
        members = np.flatnonzero(predicted == c)
        keep = max(1, int(round(share * len(members))))
        chosen.append(members[np.argsort(-confidence[members], kind="stable")[:keep]])
    index = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    return index.astype(np.int64), predicted[index]


def pseudo_label_record(index: np.ndarray, predicted: np.ndarray, pool: int, class_names) -> dict[str, Any]:
    """What was pseudo-labelled, for the lineage: how many of the pool, and how many as each class."""
    counts = np.bincount(predicted, minlength=len(class_names))
    return {
        "method": f"class-balanced self-training: the most confident {PSEUDO_SHARE:.0%} of the images predicted as each class",
        "pool": int(pool),
        "pseudo_labelled": int(len(index)),
        "by_class": {class_names[c]: int(n) for c, n in enumerate(counts) if n},
    }
