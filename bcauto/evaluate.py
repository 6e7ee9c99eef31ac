"""``bcauto evaluate``: a saved model on a labelled set: accuracy, macro precision/recall/F1, per-class scores, the
confusion matrix, optionally under every registered corruption at every severity, and with test-time augmentation.

The evaluation set's labels are matched to the model's classes by name, so a set holding some of the classes
(white cells only, say) is scored over the classes it has.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bcauto.data import Dataset
from bcauto.data.domains import class_key
from bcauto.errors import BcautoError
from bcauto.scoring import Scores, intervals, predict_batches, score
from bcauto.text import plural

TTA_VIEWS = 8
TTA_DESCRIPTION = "mean over the 8 dihedral views (4 quarter-turn rotations, each also mirrored)"


def dihedral_view(images: np.ndarray, k: int) -> np.ndarray:
    """View ``k`` (0-7) of N x S x S x C images: ``k % 4`` quarter turns, mirrored left-right for ``k >= 4``."""
    view = images[:, :, ::-1] if k >= 4 else images
    return np.ascontiguousarray(np.rot90(view, k % 4, axes=(1, 2)))


def predict_probs(model, images: np.ndarray, tta: bool = False, batch_size: int = 256) -> np.ndarray:
    """Class probabilities for uint8 images; with ``tta`` the mean over the 8 dihedral views."""
    if not tta:
        return np.asarray(predict_batches(model, images, batch_size), np.float64)
    if images.shape[1] != images.shape[2]:
        raise BcautoError(f"test-time augmentation needs square images, got {images.shape[1]}x{images.shape[2]}")
    total = None
    for k in range(TTA_VIEWS):
        probs = np.asarray(predict_batches(model, dihedral_view(images, k), batch_size), np.float64)
        total = probs if total is None else total + probs
    return total / TTA_VIEWS


def label_map(data_classes, model_classes, what: str = "the evaluation data") -> np.ndarray:
    """For each class of the data (by index), the index of the model's class of the same name.

    Names match ignoring case and the difference between spaces, hyphens and underscores. A data class the model
    does not know is refused.
    """
    index = {class_key(name): i for i, name in enumerate(model_classes)}
    unknown = [name for name in data_classes if class_key(name) not in index]
    if unknown:
        raise BcautoError(
            f"{what} has classes the model does not know: {', '.join(map(repr, unknown))}; "
            f"the model's classes are {', '.join(model_classes)} (classes are matched by name)"
        )
    return np.array([index[class_key(name)] for name in data_classes], np.int64)


def match_classes(data: Dataset, model_classes) -> tuple[np.ndarray, list[dict[str, str]], str | None]:
    """How the labels of ``data`` map to the model's classes: the model's class index for each data class, the
    ``{"data": name, "model": name}`` pairs matched other than by identical names, and what was assumed (None
    when nothing was).

    Data that names no classes (an .npz without ``class_names``) has its labels taken in the model's class order.
    """
    classes = list(model_classes)
    if not data.class_names_given:
        count = data.num_classes
        if count > len(classes):
            raise BcautoError(
                f"{data.source} names no classes (no 'class_names') and has labels 0..{count - 1}, more than "
                f"the model's {len(classes)} classes; add a 'class_names' array naming each label"
            )
        order = ", ".join(f"{i} = {name}" for i, name in enumerate(classes[:count]))
        return (
            np.arange(count, dtype=np.int64),
            [],
            f"{data.source} names no classes (no 'class_names'): its labels were taken in the model's class order: {order}",
        )
    mapping = label_map(data.class_names, classes)
    matched = [{"data": name, "model": classes[i]} for name, i in zip(data.class_names, mapping) if name != classes[i]]
    return mapping, matched, None


def class_subset(names: str | None, model_classes, what: str = "--classes") -> np.ndarray | None:
    """The indices of the model's classes named in ``names`` (comma-separated, matched as :func:`label_map`
    matches), or None when ``names`` is empty."""
    if not names:
        return None
    wanted = [name for name in (part.strip() for part in names.split(",")) if name]
    if not wanted:
        raise BcautoError(f"{what}: no class names given (expected a comma-separated list of the model's classes)")
    return np.unique(label_map(wanted, model_classes, what))


def restrict(probs: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    """``probs`` with every class outside ``allowed`` set to 0 and each row renormalised to sum to 1, so the
    prediction is the most likely class a lab's slides can show (white cells only, say); unchanged for None."""
    if allowed is None:
        return probs
    kept = np.zeros_like(probs)
    kept[:, allowed] = probs[:, allowed]
    return kept / np.maximum(kept.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)


def per_class(scores: Scores, class_names, present: np.ndarray) -> list[dict[str, Any]]:
    rows = []
    for c in present:
        entry = scores.report[class_names[c]]
        rows.append(
            {
                "class": class_names[c],
                "precision": entry["precision"],
                "recall": entry["recall"],
                "f1": entry["f1-score"],
                "support": int(entry["support"]),
            }
        )
    return rows


def evaluate(
    bundle,
    data: Dataset,
    shifts=None,
    tta: bool = False,
    seed: int = 0,
    on_step: Callable[[str], None] | None = None,
    allowed: np.ndarray | None = None,
) -> tuple[dict[str, Any], Scores, np.ndarray]:
    """Scores of ``bundle`` on ``data`` (and on every shift of ``shifts``, a registry, when given).

    ``allowed`` (model class indices, see :func:`class_subset`) restricts the predictions to those classes.
    Returns the result as plain data (for JSON), the clean :class:`Scores` over the model's classes (macro averages
    over the classes present), and the labels mapped to the model's classes.
    """
    from bcauto.shift import every_shift

    classes = bundle.class_names
    if data.image_size != bundle.image_size:
        raise BcautoError(f"the data is {data.image_size}x{data.image_size}, the model takes {bundle.image_size}x{bundle.image_size}")
    mapping, matched, assumed = match_classes(data, classes)
    labels = mapping[data.labels]
    present = np.unique(labels)
    probs = restrict(predict_probs(bundle.model, data.images, tta), allowed)
    predicted = probs.argmax(axis=1)
    scores = score(labels, predicted, classes, present_only=True)
    if on_step:
        on_step("clean")
    result: dict[str, Any] = {
        "model": str(bundle.path),
        "data": data.source,
        "images": len(labels),
        "tta": TTA_DESCRIPTION if tta else "none",
        "class_matching": matched,
        "assumed": assumed,
        "classes_present": [classes[c] for c in present],
        "classes_absent": [c for i, c in enumerate(classes) if i not in set(present)],
        "predicted_among": "all the model's classes" if allowed is None else [classes[c] for c in allowed],
        **scores.metrics(),
        "averaged_over": "classes present in the data",
        "interval": intervals(labels, predicted, present, seed),
        "per_class": per_class(scores, classes, present),
    }
    if shifts is not None:
        mapped = Dataset(data.images, labels, classes, data.source)
        table: dict[str, dict[str, float]] = {}
        for name, severity, images in every_shift(mapped, shifts, seed):
            predicted = restrict(predict_probs(bundle.model, images, tta), allowed).argmax(axis=1)
            table.setdefault(name, {})[str(severity)] = score(labels, predicted, classes, present_only=True).macro_f1
            if on_step:
                on_step(f"{name} {severity}")
        values = [v for row in table.values() for v in row.values()]
        severities = sorted({s for row in table.values() for s in row}, key=int)
        result["shift"] = {
            "seed": seed,
            "macro_f1": table,
            "mean_macro_f1": float(np.mean(values)),
            "by_corruption": {name: float(np.mean(list(row.values()))) for name, row in table.items()},
            "by_severity": {s: float(np.mean([row[s] for row in table.values() if s in row])) for s in severities},
            "by_group": group_means(table, shifts),
        }
    return result, scores, labels


def group_means(table: dict[str, dict[str, float]], shifts) -> dict[str, float]:
    """Mean macro-F1 over every shift and severity of each shift group (``corruption``, ``lab``, ...)."""
    groups: dict[str, list[float]] = {}
    for name, row in table.items():
        groups.setdefault(shifts.get(name).group, []).extend(row.values())
    return {group: float(np.mean(values)) for group, values in sorted(groups.items())}


def shift_steps(shifts) -> int:
    """How many (corruption, severity) passes ``--shift`` makes."""
    return sum(len(shifts.get(name).severities) for name in shifts.names())


def confusion_png(scores: Scores, class_names, labels: np.ndarray, path: Path, title: str) -> Path:
    """The confusion matrix over the classes present in the labels or the predictions (rows: true class)."""
    from bcauto.scoring import save_confusion_matrix

    confusion = scores.confusion
    shown = np.flatnonzero((confusion.sum(axis=0) + confusion.sum(axis=1)) > 0)
    return save_confusion_matrix(confusion[np.ix_(shown, shown)], [class_names[i] for i in shown], path, title=title)


def span(bounds) -> str:
    """A confidence interval as text: "0.669-0.777"."""
    return f"{bounds[0]:.3f}-{bounds[1]:.3f}"


def render(result: dict[str, Any], console) -> None:
    """The result as rich tables: summary, per class, and the corruption x severity grid."""
    from rich.markup import escape
    from rich.table import Table

    console.print(f"[bold]{result['model']}[/] on {result['data']}: {plural(result['images'], 'image')}, TTA: {result['tta']}")
    if result.get("assumed"):
        console.print(f"[yellow]assumed:[/] {escape(result['assumed'])}")
    if result.get("class_matching"):
        pairs = ", ".join(f"{pair['data']!r} as {pair['model']!r}" for pair in result["class_matching"])
        console.print(escape(f"data classes matched to the model's by name, case, spaces, hyphens and underscores ignored: {pairs}"))
    if result["predicted_among"] != "all the model's classes":
        console.print(f"predictions restricted to: {', '.join(result['predicted_among'])}")
    if result["classes_absent"]:
        console.print(f"classes not in the data (left out of the macro averages): {', '.join(result['classes_absent'])}")
    console.print(
        f"accuracy {result['accuracy']:.4f}  macro precision {result['macro_precision']:.4f}  "
        f"macro recall {result['macro_recall']:.4f}  macro F1 {result['macro_f1']:.4f}"
    )
    interval = result["interval"]
    if interval["accuracy"] and interval["macro_f1"]:
        console.print(
            f"{interval['level']:.0%} confidence intervals over images like these: accuracy {span(interval['accuracy'])}, "
            f"macro F1 {span(interval['macro_f1'])}"
        )
    table = Table(title="per class")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in result["per_class"]:
        table.add_row(row["class"], f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    console.print(table)
    shift = result.get("shift")
    if shift:
        severities = list(shift["by_severity"])
        grid = Table(title=f"macro F1 under each corruption and severity (mean {shift['mean_macro_f1']:.4f})")
        grid.add_column("corruption")
        for s in severities:
            grid.add_column(s, justify="right")
        grid.add_column("mean", justify="right")
        for name, row in shift["macro_f1"].items():
            grid.add_row(name, *(f"{row[s]:.3f}" if s in row else "" for s in severities), f"{shift['by_corruption'][name]:.3f}")
        grid.add_row("[bold]mean[/]", *(f"{shift['by_severity'][s]:.3f}" for s in severities), f"{shift['mean_macro_f1']:.3f}")
        console.print(grid)
        console.print("mean macro F1 by shift group: " + ", ".join(f"{g} {v:.4f}" for g, v in shift["by_group"].items()))
