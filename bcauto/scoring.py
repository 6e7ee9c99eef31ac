"""Scores of a trained classifier: the seed's table 2 (accuracy, macro recall, macro F1) and more."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, precision_recall_fscore_support


@dataclass(frozen=True)
class Scores:
    """Classification scores on one labelled set."""

    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    confusion: np.ndarray
    report: dict

    def metrics(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}accuracy": self.accuracy,
            f"{prefix}macro_precision": self.macro_precision,
            f"{prefix}macro_recall": self.macro_recall,
            f"{prefix}macro_f1": self.macro_f1,
        }


def score(labels: np.ndarray, predicted: np.ndarray, class_names, present_only: bool = False) -> Scores:
    """Scores of ``predicted`` class indices against ``labels``.

    ``present_only`` averages over the classes present in ``labels`` (for evaluation sets holding a subset
    of the model's classes); otherwise over every class.
    """
    all_classes = np.arange(len(class_names))
    averaged = np.unique(labels) if present_only else all_classes
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predicted, labels=averaged, average="macro", zero_division=0)
    report = classification_report(labels, predicted, labels=all_classes, target_names=list(class_names), output_dict=True, zero_division=0)
    return Scores(
        accuracy=float(accuracy_score(labels, predicted)),
        macro_precision=float(precision),
        macro_recall=float(recall),
        macro_f1=float(f1),
        confusion=confusion_matrix(labels, predicted, labels=all_classes),
        report=report,
    )


CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_CELLS = 2_000_000  # resamples x images scored at once: bounds the bootstrap's memory on large sets


def macro_f1_of(labels: np.ndarray, predicted: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Macro-F1 of each row of ``labels`` / ``predicted`` (R x N class indices, or N) over those of ``classes``
    present in that row's labels, as evaluate averages over the classes present in the data; vectorized for the
    bootstrap, where a resample may miss a rare class (counted as F1 0, it would drag every such resample down)."""
    labels, predicted = np.atleast_2d(labels), np.atleast_2d(predicted)
    classes = np.asarray(classes)[:, None, None]
    truth, called = labels[None] == classes, predicted[None] == classes  # C x R x N
    tp = (truth & called).sum(axis=-1)
    support = truth.sum(axis=-1)
    present = support > 0
    f1 = np.divide(2 * tp, support + called.sum(axis=-1), out=np.zeros(tp.shape), where=present)
    return f1.sum(axis=0) / np.maximum(present.sum(axis=0), 1)


def intervals(labels: np.ndarray, predicted: np.ndarray, classes: np.ndarray, seed: int = 0) -> dict:
    """95% confidence intervals of the accuracy (Wilson score interval) and of the macro-F1 over ``classes``
    (percentile bootstrap over the images, seeded), as {"accuracy": [low, high], "macro_f1": [low, high], ...}.

    A score on a few hundred images is an estimate: another draw of images from the same lab would give another
    figure. The interval says how far, so that 0.73 on 259 cells reads as roughly 0.67 to 0.78.
    """
    from scipy.stats import binomtest, bootstrap

    n = len(labels)
    correct = int((labels == predicted).sum())
    accuracy = binomtest(correct, n).proportion_ci(CONFIDENCE, method="wilson") if n else None
    record = {
        "level": CONFIDENCE,
        "accuracy": [float(accuracy.low), float(accuracy.high)] if accuracy else None,
        "macro_f1": None,
        "method": f"accuracy: Wilson score interval; macro-F1: percentile bootstrap over the images ({BOOTSTRAP_RESAMPLES} resamples)",
    }
    if n > 1:
        f1 = bootstrap(
            (labels, predicted),
            lambda y, p, axis=-1: macro_f1_of(y, p, classes),
            paired=True,
            vectorized=True,
            n_resamples=BOOTSTRAP_RESAMPLES,
            confidence_level=CONFIDENCE,
            method="percentile",
            batch=max(1, BOOTSTRAP_CELLS // n),
            rng=np.random.default_rng(seed),
        ).confidence_interval
        record["macro_f1"] = [float(f1.low), float(f1.high)]
    return record


def predict_batches(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """A model's outputs (class probabilities, for a classifier) for uint8 images, cast to float per batch."""
    import tensorflow as tf

    batches = tf.data.Dataset.from_tensor_slices(images).batch(batch_size).map(lambda x: tf.cast(x, tf.float32))
    return model.predict(batches.prefetch(tf.data.AUTOTUNE), verbose=0)


def save_confusion_matrix(confusion: np.ndarray, class_names, path: Path, title: str = "") -> Path:
    """The confusion matrix as a PNG (counts, rows = true class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(5.0, 0.7 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(confusion, display_labels=list(class_names)).plot(ax=ax, colorbar=False, xticks_rotation=45)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
