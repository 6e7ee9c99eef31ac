"""Pilot: which input canonicalization lets a small CNN trained in one lab recognise another lab's cells?

One fixed configuration, no search: mini_cnn (16 filters) at --size pixels, an augmentation pipeline,
cell_crop at strength 0.83 where a chain has it, a 128-unit head, Lion at 3.3e-4, class weights, --epochs epochs
on a stratified 80% of --data. Each configuration is scored by macro-F1 on the other 20% and by accuracy on
--otherlab, as is and restricted to the classes its labels contain (what `--classes` would list). The other lab
is only scored: nothing here is trained, selected or tuned on it, and what this pilot shows must not pick a
study's search space (that is the shifted validation's job). ``--shift N`` also scores N of the 20% under every
registered shift at every severity and prints each shift group's mean macro-F1, as ``bcauto evaluate --shift``
does: that, unlike the other lab, may choose between configurations. ``--stats`` prints the background level and
nucleus density of both sets instead.

A configuration is ``CHAIN:NORM:AUGMENTATION``, AUGMENTATION one of ``stain`` (strength 0.7), ``lab`` (0.6,
zoom 1.4), ``corruption`` (0.7) and ``robust`` (0.7), CHAIN being steps joined by ``+``:

- ``crop``, ``stain_norm``: the built-in canonicalizers' layers (cell_crop, Reinhard colour transfer);
- ``density``, ``mask``: two experiments defined here, not in the product. ``density`` brings each image's
  background (per channel, its 90th percentile) to the reference background and scales its optical density so
  that its 99th percentile is the reference's: exposure and stain strength, hue ratios kept (Beer-Lambert).
  ``mask`` replaces everything beyond the white cell (2.6 nucleus spreads from its nucleus) by the mean colour
  of what lies there.

    python bench/canonical_pilot.py --configs crop:batch:stain,crop+stain_norm:batch:stain
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, DEFAULT_OTHERLAB, machine, quiet

# pbc96 at 40x40: the median over images of each channel's 90th percentile, and of the 99th percentile of the
# summed optical density (`--stats` prints them for --data and --otherlab)
REFERENCE_BACKGROUND = (254.1, 227.7, 202.8)
REFERENCE_DENSITY = 3.16


def experimental_layers():
    import keras
    from keras import ops

    from bcauto_builtin.canonical_layers import nucleus_centre_and_spread

    class DensityNormalization(keras.layers.Layer):
        def call(self, images):
            x = ops.clip(ops.cast(images, "float32"), 1.0, 255.0)
            shape = ops.shape(x)
            flat = ops.reshape(x, (-1, shape[1] * shape[2], 3))
            background = ops.quantile(flat, 0.9, axis=1)[:, None, :]
            density = -ops.log(ops.minimum(flat / background, 1.0))
            dense = ops.quantile(ops.sum(density, axis=-1), 0.99, axis=1)[:, None, None]
            scale = ops.clip(REFERENCE_DENSITY / ops.maximum(dense, 1e-3), 0.33, 4.0)
            out = ops.convert_to_tensor(np.array(REFERENCE_BACKGROUND, "float32")) * ops.exp(-density * scale)
            return ops.reshape(out, shape)

    class CellMask(keras.layers.Layer):
        def call(self, images):
            x = ops.cast(images, "float32")
            side = ops.cast(ops.shape(x)[1], "float32")
            row, col, spread = nucleus_centre_and_spread(x)
            radius = ops.clip(2.6 * spread, 0.15 * side, 0.45 * side)
            coords = ops.cast(ops.arange(ops.shape(x)[1]), "float32")
            distance = ops.sqrt((coords[None, :, None] - row[:, None, None]) ** 2 + (coords[None, None, :] - col[:, None, None]) ** 2)
            inside = ops.sigmoid((radius[:, None, None] - distance) / (0.04 * side))[..., None]
            outside_mean = ops.sum(x * (1 - inside), axis=(1, 2), keepdims=True) / (ops.sum(1 - inside, axis=(1, 2), keepdims=True) + 1e-3)
            return x * inside + outside_mean * (1 - inside)

    return DensityNormalization, CellMask


def density_statistics(images: np.ndarray) -> tuple[np.ndarray, float]:
    """The medians over images of what ``density`` normalizes: each channel's background level and the
    optical density of the darkest percentile (the nucleus)."""
    flat = np.clip(images.reshape(len(images), -1, 3).astype(np.float64), 1.0, 255.0)
    background = np.quantile(flat, 0.9, axis=1)
    density = -np.log(np.minimum(flat / background[:, None, :], 1.0)).sum(axis=-1)
    return np.median(background, axis=0), float(np.median(np.quantile(density, 0.99, axis=1)))


def build_model(chain: str, norm: str, augmentation: str, size: int, seed: int, learning_rate: float):
    import keras
    from keras import layers

    from bcauto_builtin.augmentation_pipelines import build_corruption, build_lab, build_robust, build_stain
    from bcauto_builtin.canonical_layers import CellCentredCrop, StainNormalization
    from bcauto_builtin.small_cnns import build_mini_cnn

    density, mask = experimental_layers()
    steps = {"crop": lambda: CellCentredCrop(strength=0.83), "stain_norm": StainNormalization, "density": density, "mask": mask}
    augment = {
        "stain": lambda: build_stain({"strength": 0.7}, size, seed),
        "lab": lambda: build_lab({"strength": 0.6, "zoom": 1.4}, size, seed),
        "corruption": lambda: build_corruption({"strength": 0.7}, size, seed),
        "robust": lambda: build_robust({"strength": 0.7}, size, seed),
    }
    inputs = keras.Input((size, size, 3))
    x = augment[augmentation]()(inputs)
    for step in chain.split("+"):
        if step != "none":
            x = steps[step]()(x)
    x = build_mini_cnn((size, size, 3), base_filters=16, norm=norm)(layers.Rescaling(1 / 255.0)(x))
    x = layers.Dropout(0.3)(layers.Dense(128, activation="relu")(layers.GlobalAveragePooling2D()(x)))
    model = keras.Model(inputs, layers.Dense(8, activation="softmax")(x))
    model.compile(keras.optimizers.Lion(learning_rate), "sparse_categorical_crossentropy")
    return model


def shift_scores(model, images, labels, names, size: int, registry) -> dict:
    """Macro-F1 under every registered shift and severity, as `bcauto evaluate --shift` (its ``shift`` entry)."""
    from bcauto.bundle import Bundle
    from bcauto.data import Dataset
    from bcauto.evaluate import evaluate

    bundle = Bundle(Path("pilot"), model, {"class_names": names, "image_size": size})
    result, _, _ = evaluate(
        bundle, Dataset(np.clip(np.round(images), 0, 255).astype(np.uint8), labels, tuple(names), "pilot"), shifts=registry
    )
    return result["shift"]


def load(path: str, size: int):
    import tensorflow as tf

    from bcauto.data.sources import load_data
    from bcauto.plugins import components

    data = load_data(path, 96, components(), {"seed": 0, "on_bad_image": "skip"})
    return tf.image.resize(data.images, (size, size), antialias=True).numpy(), np.asarray(data.labels), list(data.class_names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--otherlab", default=DEFAULT_OTHERLAB, help="another lab's labelled images, scored only")
    parser.add_argument("--configs", default="crop:batch:stain,crop+stain_norm:batch:stain", help="CHAIN:NORM:AUGMENTATION, ...")
    parser.add_argument("--size", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--recalibrate",
        action="store_true",
        help="also score each model after recomputing its BatchNorm statistics on the un-augmented training images",
    )
    parser.add_argument("--lr", type=float, default=1e-3 / 3, help="Lion's learning rate (its first, with --cosine)")
    parser.add_argument(
        "--cosine", action="store_true", help="the learning rate along a half cosine towards zero, epoch by epoch, as in `bcauto refit`"
    )
    parser.add_argument("--stats", action="store_true", help="only print both sets' background and nucleus density")
    parser.add_argument(
        "--shift", type=int, default=0, metavar="N", help="also score N validation images under every registered shift (group means)"
    )
    args = parser.parse_args()
    quiet()
    import keras
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    from bcauto.test_time import recompute_batchnorm

    images, labels, names = load(args.data, args.size)
    other, other_labels, other_names = load(args.otherlab, args.size)
    if args.stats:
        for name, batch in (("data", images), ("otherlab", other)):
            background, dense = density_statistics(batch)
            print(f"{name}: background (R/G/B) {np.round(background, 1)}, nucleus optical density {dense:.2f}")
        return
    other_truth = np.array([names.index(other_names[i]) for i in other_labels])
    present = np.unique(other_truth)
    train, val = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=args.seed)
    weights = len(train) / (len(names) * np.bincount(labels[train], minlength=len(names)))
    schedule = "half cosine" if args.cosine else "constant"
    print(f"{machine()}; {args.size}x{args.size}, {args.epochs} epochs, Lion {args.lr:g} ({schedule}), seed {args.seed}")
    shifted = ""
    if args.shift:
        from bcauto.plugins import components

        registry = components().shifts
        groups = sorted({registry.get(name).group for name in registry.names()})
        shifted = "".join(f" {group + ' F1':>14s}" for group in groups)
    print(f"{'configuration':34s} {'val F1':>7s}{shifted} {'other acc':>9s} {'its classes':>11s}  other lab's cells called")
    for config in args.configs.split(","):
        chain, norm, augmentation = config.split(":")
        keras.utils.set_random_seed(args.seed)
        model = build_model(chain, norm, augmentation, args.size, args.seed, args.lr)
        started = time.perf_counter()
        cosine = keras.callbacks.LearningRateScheduler(lambda e: args.lr * (1 + math.cos(math.pi * e / args.epochs)) / 2)
        fit = {"class_weight": dict(enumerate(weights)), "callbacks": [cosine] if args.cosine else [], "verbose": 0}
        model.fit(images[train], labels[train], batch_size=64, epochs=args.epochs, **fit)
        seconds = time.perf_counter() - started

        def report(label: str, model=model, seconds=seconds) -> None:
            val_f1 = f1_score(labels[val], model.predict(images[val], verbose=0).argmax(1), average="macro")
            subset = val[: args.shift]
            shift = shift_scores(model, images[subset], labels[subset], names, args.size, registry) if args.shift else {}
            by_group = shift.get("by_group", {})
            scores = model.predict(other, verbose=0)
            accuracy = np.mean(scores.argmax(1) == other_truth)
            restricted = np.mean(present[scores[:, present].argmax(1)] == other_truth)
            called = np.bincount(scores.argmax(1), minlength=len(names))
            group_columns = "".join(f" {by_group[group]:14.3f}" for group in sorted(by_group))
            print(f"{label:34s} {val_f1:7.3f}{group_columns} {accuracy:9.3f} {restricted:11.3f}  {called}  ({seconds:.0f} s)", flush=True)
            if shift:
                print("    per shift: " + ", ".join(f"{name} {value:.2f}" for name, value in shift["by_corruption"].items()), flush=True)

        report(config)
        if args.recalibrate:
            recompute_batchnorm(model, images[train])
            report(f"{config} +clean BN")


if __name__ == "__main__":
    main()
