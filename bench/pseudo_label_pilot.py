"""How should `bcauto adapt` end its fine-tuning? One model, one lab, several draws, from one shared start.

A pilot, not a product option. For each draw it runs `bcauto adapt`'s own steps once (the shots drawn with the
seed, information maximization on every image with labels unread, the epochs chosen by cross-validation within the
shots), then fine-tunes several ways from that point and scores each on the same kept-out images.

``--experiment second-stage`` (bench/RESULTS.md, "twenty-sixth run"), at the constant rate `bcauto adapt` used
until then:

- ``shots only``: the fine-tuning on the shots, no second one.
- ``default``: `--pseudo-labels` as `bcauto adapt` runs it: the shots' model labels the other images, and the
  fine-tuning starts again from the weights before it, on the shots and the pseudo-labelled images, for the epochs
  the cross-validation chose (so about as many more steps as there are more images).
- ``matched``: the same, for as many steps as the first fine-tuning took (the epochs scaled by shots / images).
- ``continue``: from the model fine-tuned on the shots, on the same images, for the matched epochs.

Each is also scored after its BatchNorm statistics are recomputed on all the lab's images, labels unread (``, bn``):
the fine-tuning keeps BatchNorm frozen with the statistics of before, while the weights under them move.

``--experiment schedule``: the shots alone and ``default``, each at a constant rate and with the rate decayed to
zero along a cosine (what `bcauto adapt` does since).

``--experiment epochs``: `--pseudo-labels` as `bcauto adapt` runs it (both fine-tunings decayed), for the epochs
chosen by the cross-validation at a constant rate (``cv constant``, the product), by a cross-validation whose runs
decay (``cv decay``: one run per count), and for fixed counts (``fixed N``). A count two rows share is trained once.

``--experiment augmentation``: the shots alone and `--pseudo-labels` as `bcauto adapt` runs them, the fine-tunings
trained through the model's own augmentation (the product) or through its geometric layers only (``flips only``:
flips and transposes, no colour, blur, noise or occlusion), the weights shared, for the cross-validation's epochs.

``--experiment layers``: the shots alone and `--pseudo-labels` as `bcauto adapt` runs them, with every layer but
BatchNorm trained (the product) or only some (the others frozen, in both fine-tunings): ``blocks 1-2`` (the first
two convolutions: a shift in the input, as a lab's stain and optics are, is said to be met best early in the
network), ``blocks 4-5 + head`` (the last two convolutions and the dense layers), ``head`` (the dense layers only),
for the cross-validation's epochs (chosen with every layer trained). `mini_cnn` models only (its layer names).

    python bench/pseudo_label_pilot.py --model MODEL --data LAB --seeds 0,1,2 --experiment schedule --out OUT.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_OTHERLAB, machine, quiet

WHITE_CELLS = "basophil,eosinophil,lymphocyte,monocyte,neutrophil"
SHOTS = 50
LEARNING_RATE = 3e-4  # `bcauto adapt`'s default
FIXED_EPOCHS = (40, 80)


def geometric_view(model):
    """``model`` (a chain: image, augmentation, backbone, ...) with only the flips and transposes of its
    augmentation, every layer shared: training it trains ``model``."""
    import keras

    augmentation = getattr(model.layers[1], "layer", model.layers[1])  # newer models wrap it (bcauto.model.TrainingOnly)
    if not augmentation.name.startswith("augment"):
        raise SystemExit(f"expected the model's second layer to be its augmentation, got {augmentation.name}")
    x = inputs = keras.Input(model.input_shape[1:])
    for layer in augmentation.layers:
        if type(layer).__name__ in ("RandomFlip", "RandomTranspose"):
            x = layer(x)
    for layer in model.layers[2:]:
        x = layer(x)
    return keras.Model(inputs, x, name=f"{model.name}_flips_only")


TRAINED_LAYERS = {
    "every layer": None,
    "blocks 1-2": ("block1_", "block2_"),
    "blocks 4-5 + head": ("block4_", "block5_", "dense"),
    "head": ("dense",),
}


def training_only(model, prefixes):
    """Freeze every layer of ``model`` whose name starts with none of ``prefixes`` (``dense``: every Dense layer),
    nested layers included; returns a function that restores the flags."""
    import keras

    from bcauto.test_time import nested_layers

    leaves = [layer for layer in nested_layers(model) if not getattr(layer, "layers", None)]
    before = [layer.trainable for layer in leaves]
    chosen = [
        layer
        for layer in leaves
        if layer.name.startswith(tuple(p for p in prefixes if p != "dense"))
        or ("dense" in prefixes and isinstance(layer, keras.layers.Dense))
    ]
    if not chosen:
        raise SystemExit(f"no layer of {model.name} matches {prefixes}: the layers experiment reads mini_cnn's names")
    for layer in leaves:
        layer.trainable = layer in chosen

    def restore() -> None:
        for layer, flag in zip(leaves, before):
            layer.trainable = flag

    return restore


def draw(model_dir: str, data_path: str, seed: int, experiment: str) -> dict:
    import keras
    from rich.console import Console
    from sklearn.metrics import f1_score

    from bcauto.adapt import among_classes
    from bcauto.bundle import load_bundle
    from bcauto.data.sources import load_data
    from bcauto.evaluate import label_map, predict_probs
    from bcauto.few_shot import Snapshot, choose_epochs, choose_shots, fine_tune
    from bcauto.plugins import components
    from bcauto.self_training import choose_pseudo_labels
    from bcauto.test_time import maximize_information, recompute_batchnorm

    loaded = components()  # before the seed, as `bcauto adapt` does: the plugins' imports must not move the draws
    keras.utils.set_random_seed(seed)
    parent = load_bundle(model_dir)
    data = load_data(data_path, parent.image_size, loaded, {"seed": seed})
    labels = label_map(data.class_names, parent.class_names, what="the lab")[data.labels]
    model, classes, labels = among_classes(parent, WHITE_CELLS, labels, data.source, Console(quiet=True))
    shots = choose_shots(labels, SHOTS, False, seed, classes)
    rest = np.setdiff1d(np.arange(len(labels)), shots)
    images = data.images

    def score() -> dict:
        predicted = predict_probs(model, images[rest]).argmax(axis=1)
        return {
            "accuracy": round(float((predicted == labels[rest]).mean()), 4),
            "macro_f1": round(float(f1_score(labels[rest], predicted, average="macro")), 4),
        }

    started = time.perf_counter()
    maximize_information(model, images, seed=seed)
    after_im = score()
    epochs, choice = choose_epochs(model, images[shots], labels[shots], len(classes), LEARNING_RATE, seed)
    before = Snapshot(model)
    rows = {"information maximized": after_im}

    def pseudo_labelled() -> tuple[np.ndarray, np.ndarray, float]:
        """The shots and the surest other images as the model now labels them, then how many of those were right."""
        index, predicted = choose_pseudo_labels(predict_probs(model, images[rest]))
        chosen = rest[index]
        x, y = np.concatenate([images[shots], images[chosen]]), np.concatenate([labels[shots], predicted])
        return x, y, round(float((predicted == labels[chosen]).mean()), 4)

    record: dict = {}

    def shots_then_pseudo_labels(trained, name: str, decay: bool = True) -> None:
        """From ``before``, ``trained`` fine-tuned on the shots, then again on the shots and its pseudo-labels, as
        `bcauto adapt --pseudo-labels` does: both scored as rows named after ``name``."""
        before.restore()
        fine_tune(trained, images[shots], labels[shots], len(classes), epochs, LEARNING_RATE, seed, decay=decay)
        rows[f"shots only, {name}"] = score()
        x, y, record[f"pseudo_labels_right, {name}"] = pseudo_labelled()
        before.restore()
        fine_tune(trained, x, y, len(classes), epochs, LEARNING_RATE, seed, decay=decay)
        rows[f"pseudo-labels, {name}"] = score()

    if experiment == "second-stage":
        fine_tune(model, images[shots], labels[shots], len(classes), epochs, LEARNING_RATE, seed, decay=False)
        rows["shots only"] = score()
        after_shots = Snapshot(model)
        recompute_batchnorm(model, images)
        rows["shots only, bn"] = score()
        after_shots.restore()
        x, y, record["pseudo_labels_right"] = pseudo_labelled()
        matched = max(1, round(epochs * len(shots) / len(y)))
        record["matched_epochs"] = matched
        for name, start, n in (("default", before, epochs), ("matched", before, matched), ("continue", after_shots, matched)):
            start.restore()
            fine_tune(model, x, y, len(classes), n, LEARNING_RATE, seed, decay=False)
            rows[name] = score()
            recompute_batchnorm(model, images)
            rows[f"{name}, bn"] = score()
    elif experiment == "epochs":
        decayed, record["epochs_choice_decay"] = choose_epochs(
            model, images[shots], labels[shots], len(classes), LEARNING_RATE, seed, decay=True
        )
        by_count: dict[int, dict] = {}
        recipes = {"cv constant": epochs, "cv decay": decayed, **{f"fixed {n}": n for n in FIXED_EPOCHS}}
        for name, n in recipes.items():
            if n not in by_count:
                before.restore()
                fine_tune(model, images[shots], labels[shots], len(classes), n, LEARNING_RATE, seed)
                shots_only = score()
                x, y, right = pseudo_labelled()
                before.restore()
                fine_tune(model, x, y, len(classes), n, LEARNING_RATE, seed)
                by_count[n] = {"shots only": shots_only, "pseudo-labels": score(), "pseudo_labels_right": right}
            rows[name] = {**by_count[n]["pseudo-labels"], "epochs": n}
        record["by_epochs"] = {str(n): v for n, v in by_count.items()}
    elif experiment == "augmentation":
        flips_only = geometric_view(model)
        for name, trained in (("own augmentation", model), ("flips only", flips_only)):
            shots_then_pseudo_labels(trained, name)
    elif experiment == "layers":
        for name, prefixes in TRAINED_LAYERS.items():
            restore = training_only(model, prefixes) if prefixes else (lambda: None)
            try:
                record[f"trainable weights, {name}"] = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
                shots_then_pseudo_labels(model, name)
            finally:
                restore()
    else:  # schedule
        for name in ("constant", "cosine"):
            shots_then_pseudo_labels(model, name, decay=name == "cosine")
    return {
        "seed": seed,
        "epochs": epochs,
        "epochs_choice": choice,
        **record,
        "scores": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument(
        "--data",
        required=True,
        help=f"the lab: a stand-in from bench/proxy_lab.py to choose on; the other lab ({DEFAULT_OTHERLAB}) only to score a choice made",
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--experiment", choices=("second-stage", "schedule", "epochs", "augmentation", "layers"), default="second-stage")
    parser.add_argument("--out", required=True, help="JSON to write (rewritten after every draw)")
    args = parser.parse_args()
    quiet()
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        results.append(draw(args.model, args.data, seed, args.experiment))
        Path(args.out).write_text(json.dumps({"model": args.model, "data": args.data, "machine": machine(), "draws": results}, indent=1))
        row = results[-1]
        accuracies = {k: v["accuracy"] for k, v in row["scores"].items()}
        print(seed, row["epochs"], accuracies, flush=True)
    names = list(results[0]["scores"])
    for name in names:
        values = [r["scores"][name]["accuracy"] for r in results]
        print(f"{name:24s} " + " ".join(f"{v:.3f}" for v in values) + f"   mean {np.mean(values):.3f}")


if __name__ == "__main__":
    main()
