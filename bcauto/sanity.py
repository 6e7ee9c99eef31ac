"""Models that learned nothing: predictions (nearly) all of one class, or no better than guessing.

Tiny data, too few epochs or a learning rate far off give such models; their macro-F1 is low, but nothing else
says the model is useless. ``search``, ``refit`` and ``evaluate`` say it in plain words, with the likely causes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ONE_CLASS_SHARE = 0.9  # this share of the predictions in one class is a constant model...
ONE_CLASS_EXCESS = 0.2  # ...when that class is this much rarer among the labels
CHANCE_MARGIN = 0.05  # balanced accuracy within this (or a quarter of chance) above guessing is "at chance"


def prediction_problem(confusion: np.ndarray, class_names: Sequence[str], what: str = "the validation images") -> str | None:
    """What is wrong with a classifier, from its confusion matrix (rows: true class, columns: predicted), in plain
    words; None when nothing is. Only the classes present among the labels count."""
    confusion = np.asarray(confusion, dtype=float)
    total = confusion.sum()
    present = confusion.sum(axis=1) > 0
    if total == 0 or present.sum() < 2:
        return None
    predicted_share = confusion.sum(axis=0) / total
    top = int(predicted_share.argmax())
    true_share = confusion[top].sum() / total
    if predicted_share[top] >= ONE_CLASS_SHARE and predicted_share[top] - true_share >= ONE_CLASS_EXCESS:
        return (
            f"predicts {class_names[top]!r} for {predicted_share[top]:.0%} of {what} (they hold {true_share:.0%} of "
            f"them): the model hardly tells the classes apart"
        )
    recall = np.diag(confusion)[present] / confusion.sum(axis=1)[present]
    chance = 1.0 / present.sum()
    balanced = float(recall.mean())
    if balanced <= chance + max(CHANCE_MARGIN, chance / 4):
        return (
            f"scores at chance level on {what}: balanced accuracy {balanced:.2f}, where guessing among "
            f"{int(present.sum())} classes gives {chance:.2f}"
        )
    return None


def likely_causes(images: int | None = None, smallest_class: int | None = None, epochs: int | None = None, lr: float | None = None) -> str:
    """The usual reasons a model learns nothing, with the figures at hand."""
    data = "too few images"
    if images is not None:
        data += f" ({images}" + (f", {smallest_class} in the smallest class" if smallest_class is not None else "") + ")"
    trained = "too few epochs" + (f" ({epochs})" if epochs is not None else "")
    rate = "a learning rate too high or too low" + (f" (lr_head {lr:.1e})" if lr is not None else "")
    return (
        f"Likely causes: {data}, {trained}, or {rate}. Add images (a few hundred per class), raise [train] "
        "head_epochs, or widen [search] lr_head."
    )


def model_info_causes(info: dict) -> str:
    """:func:`likely_causes` with the figures a saved model's info records (its training data, epochs, learning rate)."""
    data = info.get("data") or {}
    counts = list((data.get("class_counts") or {}).values())
    member = (info.get("members") or [{}])[0]
    epochs = member.get("epochs")
    lr = (member.get("params") or {}).get("lr_head")
    return likely_causes(
        images=data.get("images"),
        smallest_class=min(counts) if counts else None,
        epochs=sum(epochs.values()) if isinstance(epochs, dict) else epochs,
        lr=float(lr) if lr is not None else None,
    )


def evaluation_causes(info: dict, fingerprint: str) -> str:
    """The likely causes for a model that learned nothing on the images it is evaluated on (of ``fingerprint``).

    On images other than those the model was trained on, another lab's microscope, camera or stain is as likely
    a cause as the training, and it calls for other remedies, so it comes first.
    """
    trained_on = (info.get("data") or {}).get("fingerprint")
    if not trained_on or trained_on == fingerprint:
        return model_info_causes(info)
    return (
        "If these images come from another lab, microscope, camera or stain than the model's training images, that "
        "shift is the likely cause: see docs/deploying-in-another-lab.md (--classes, --adapt-bn, bcauto adapt). "
        f"If they do not, the usual causes apply. {model_info_causes(info)}"
    )
