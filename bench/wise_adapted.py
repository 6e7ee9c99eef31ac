"""Would the weight-space average of the label-free model and the fine-tuned one (WiSE-FT) do better on a lab's
other cells than the fine-tuned model itself? Scored on models `bcauto adapt` already wrote.

For each adapted model directory (written with ``--adapt-im``, as `bench/adapt_recipes.py` does): the parent is
loaded, restricted to the same ``--classes``, and adapted label-free on all the data's images with the draw's
seed, as `bcauto adapt` did before fine-tuning; its score on the kept-out cells (every image but the record's
shots) must match the record's ``after_information_maximization``, or the rebuild is not the model the
fine-tuning started from and the run stops. Then the kept-out cells are scored for: the label-free model
(mixing 0), the adapted model (mixing 1), the weight-space averages at mixings 0.25, 0.5 and 0.75, the 0.5
average with BatchNorm statistics recomputed on the data's images, and the mean of the two models' probabilities.

    python bench/wise_adapted.py --data bench/out/zero/bv-mid-s2.npz --adapted bench/out/zero/pl96-0/models/pl-s0 \\
        --out bench/out/zero/wise-bv-0.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, quiet

MIXINGS = (0.0, 0.25, 0.5, 0.75, 1.0)


def mix(model, start: list[np.ndarray], end: list[np.ndarray], mixing: float) -> None:
    """``model``'s float variables set to ``start + mixing * (end - start)``; the others (seed states) to ``end``'s."""
    for variable, a, b in zip(model.variables, start, end):
        variable.assign(a + mixing * (b - a) if np.issubdtype(a.dtype, np.floating) else b)


def score(bundle_path, model, info, images, labels, classes) -> dict:
    from bcauto.adapt import _scores
    from bcauto.bundle import Bundle
    from bcauto.data import Dataset

    result = _scores(Bundle(bundle_path, model, info), Dataset(images, labels, classes, "kept-out cells"), tta=False)
    return {"accuracy": round(result["accuracy"], 4), "macro_f1": round(result["macro_f1"], 4)}


@dataclass
class Rebuilt:
    """The label-free model a `bcauto adapt --adapt-im` run fine-tuned from, rebuilt, with what it was scored on."""

    model: Any
    parent: Any
    info: dict
    classes: tuple
    all_images: np.ndarray  # every image of the data (the label-free step read them all, labels unread)
    all_labels: np.ndarray
    shots: np.ndarray
    images: np.ndarray  # the kept-out cells (every image but the shots)
    kept: np.ndarray  # their labels
    scores: dict


def rebuild_label_free(adapted_path: str, data_path: str) -> tuple[Any, Rebuilt]:
    """The adapted bundle and its label-free start rebuilt: the parent loaded, restricted to the same ``--classes``
    and adapted label-free on all the data's images with the draw's seed, as `bcauto adapt` did before fine-tuning.
    Its score on the kept-out cells must match the record's ``after_information_maximization``, or the rebuild is
    not the model the fine-tuning started from and the run stops."""
    import keras

    from bcauto.adapt import among_classes
    from bcauto.bundle import load_bundle
    from bcauto.data.sources import load_data
    from bcauto.evaluate import label_map
    from bcauto.plugins import components
    from bcauto.test_time import maximize_information

    adapted = load_bundle(adapted_path)
    record = adapted.info["adapted"]
    if not record["recipe"].get("adapt_im"):
        raise SystemExit(f"{adapted_path}: not adapted with --adapt-im; there is no label-free model to rebuild")
    seed = int(record["seed"])
    keras.utils.set_random_seed(seed)  # as `bcauto adapt` does, before loading
    parent = load_bundle(record["parent"])
    data = load_data(data_path, parent.image_size, components(), {"seed": seed})
    labels = label_map(data.class_names, parent.class_names, what="the data")[data.labels]
    names = None if record["classes"] == "all the parent's" else ",".join(record["classes"])
    model, classes, labels = among_classes(parent, names, labels, data.source, console=_Silent())
    maximize_information(model, data.images, seed=seed)
    shots = np.asarray(record["shot_indices"])
    rest = np.setdiff1d(np.arange(len(labels)), shots)
    info = {**parent.info, "class_names": list(classes)}
    scores = score(parent.path, model, info, data.images[rest], labels[rest], classes)
    recorded = record["after_information_maximization"]
    if abs(scores["accuracy"] - recorded["accuracy"]) > 1e-3:
        raise SystemExit(
            f"the rebuilt label-free model scores {scores['accuracy']}, the record says {recorded['accuracy']:.4f}: "
            "not the model the fine-tuning started from"
        )
    return adapted, Rebuilt(model, parent, info, classes, data.images, labels, shots, data.images[rest], labels[rest], scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the lab's labelled cells the adapted model was adapted on")
    parser.add_argument("--adapted", required=True, help="model directory `bcauto adapt --adapt-im` wrote")
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args()

    quiet()
    from bcauto.few_shot import Snapshot, as_ensemble
    from bcauto.test_time import recompute_batchnorm

    started = time.perf_counter()
    adapted, rebuilt = rebuild_label_free(args.adapted, args.data)
    model, info, images, kept, classes = rebuilt.model, rebuilt.info, rebuilt.images, rebuilt.kept, rebuilt.classes
    record = adapted.info["adapted"]
    rows: dict[str, dict] = {"label-free (rebuilt)": rebuilt.scores}
    recorded = record["after_information_maximization"]
    start = [np.array(v.numpy()) for v in model.variables]
    end = [np.array(v.numpy()) for v in adapted.model.variables]
    if [a.shape for a in start] != [b.shape for b in end]:
        raise SystemExit(f"{args.adapted}: its variables do not match the rebuilt label-free model's")
    for mixing in MIXINGS:
        mix(model, start, end, mixing)
        rows[f"mixing {mixing}"] = score(rebuilt.parent.path, model, info, images, kept, classes)
    if abs(rows["mixing 1.0"]["accuracy"] - record["after"]["accuracy"]) > 1e-3:
        raise SystemExit(f"mixing 1 scores {rows['mixing 1.0']['accuracy']}, the record says {record['after']['accuracy']:.4f}")
    mix(model, start, end, 0.5)
    recompute_batchnorm(model, rebuilt.all_images)
    rows["mixing 0.5, BatchNorm recomputed"] = score(rebuilt.parent.path, model, info, images, kept, classes)
    snapshots = []
    for mixing in (0.0, 1.0):
        mix(model, start, end, mixing)
        snapshots.append(Snapshot(model))
    both = as_ensemble(model, snapshots)
    rows["mean of the probabilities"] = score(rebuilt.parent.path, both, info, images, kept, classes)
    result = {
        "adapted": args.adapted,
        "data": args.data,
        "seed": int(record["seed"]),
        "scored": len(kept),
        "recorded": {"label-free": recorded["accuracy"], "adapted": record["after"]["accuracy"]},
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, row in rows.items():
        print(f"{name:36s} accuracy {row['accuracy']:.4f}  macro-F1 {row['macro_f1']:.4f}")


class _Silent:
    def print(self, *args, **kwargs) -> None:
        pass


if __name__ == "__main__":
    main()
