"""What an augmentation policy costs a training step, layer by layer, and what blurring one axis at a time saves.

Part 1: each layer of the policy alone, in training mode, in milliseconds an image, beside the whole-kernel blur
Keras 3.15's ``RandomGaussianBlur`` computes (k x k multiplications a pixel where bcauto's blur does 2k).
Part 2: whole training epochs of one model (the canonicalization, ``mini_cnn`` and the head, as a lab-robust trial
builds them) with the policy as shipped and with its blur swapped for the whole-kernel one, alternating, the first
epoch of each fit (tracing) left out. Same seeds, so both blur the same images with the same sigmas.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from common import DEFAULT_DATA, epoch_timer, load_subset, machine, quiet


def whole_kernel_blur_class():
    """bcauto's blur as it was before it went one axis at a time: reflect, Keras's k x k kernel, crop."""
    import keras

    from bcauto_builtin.layers import ReflectedGaussianBlur

    class WholeKernelBlur(ReflectedGaussianBlur):
        def transform_images(self, images, transformation=None, training=True):
            if not training or transformation is None:
                return super().transform_images(images, transformation, training)
            rows, columns = (k // 2 for k in self.kernel_size)
            padded = keras.ops.pad(images, [[0, 0], [rows, rows], [columns, columns], [0, 0]], mode="reflect")
            blurred = keras.layers.RandomGaussianBlur.transform_images(self, padded, transformation, training)
            return blurred[:, rows:-rows, columns:-columns]

    return WholeKernelBlur


def with_whole_kernel_blur(pipeline):
    import keras

    from bcauto_builtin.layers import ReflectedGaussianBlur

    whole = whole_kernel_blur_class()
    layers = [whole.from_config(layer.get_config()) if isinstance(layer, ReflectedGaussianBlur) else layer for layer in pipeline.layers]
    return keras.Sequential(layers, name=pipeline.name)


def per_image_ms(fn, images: np.ndarray, batch: int) -> float:
    fn(images[:batch])  # tracing
    started = time.perf_counter()
    count = 0
    for start in range(0, len(images) - batch + 1, batch):
        np.asarray(fn(images[start : start + batch]))
        count += batch
    return (time.perf_counter() - started) * 1000 / count


def layer_costs(pipeline, images: np.ndarray, batch: int) -> dict[str, float]:
    import tensorflow as tf

    costs = {}
    for layer in [*pipeline.layers, *with_whole_kernel_blur(pipeline).layers]:
        label = f"{layer.name} ({type(layer).__name__})"
        if label in costs:  # the layers both pipelines share
            continue
        costs[label] = per_image_ms(tf.function(lambda x, layer=layer: layer(x, training=True)), images, batch)
    return costs


def epoch_ms(augmentation, args, data) -> list[float]:
    """Per-image milliseconds of each epoch after the first, training one fresh model with ``augmentation``."""
    import keras

    from bcauto.model import HeadParams, assemble, build_backbone, build_head
    from bcauto.plugins import components
    from bcauto.training import batches, compile_model

    c = components()
    canonicalize = c.canonicalizers.get(args.canonicalization).build({"strength": 0.54, "spread_estimate": "median"}, args.size)
    backbone = build_backbone(c.backbones.get("mini_cnn"), args.size, None, {"base_filters": 16, "norm": "batch"}, canonicalize)
    head = build_head(backbone.output_shape[-1], len(data.class_names), HeadParams(128, 128, 0.15, 2.5e-6))
    model = assemble(backbone, head, augmentation, frozen_inference=False)
    compile_model(model, 6e-4, jit_compile=False)
    timer = epoch_timer()
    keras.utils.set_random_seed(0)
    pipeline_data = batches(data.images, data.labels, len(data.class_names), args.batch, shuffle_seed=0)
    model.fit(pipeline_data, epochs=args.epochs, callbacks=[timer], verbose=0)
    return [t * 1000 / len(data.labels) for t in timer.times[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--policy", default="robust")
    parser.add_argument("--strength", type=float, default=0.41)
    parser.add_argument("--canonicalization", default="cell_crop_stain_norm")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="per fit; the first is left out")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    quiet()
    from bcauto.plugins import components

    data = load_subset(args.data, args.size, args.images)
    images = data.images.astype("float32")

    def pipeline():
        return components().augmentations.get(args.policy).build({"strength": args.strength}, args.size, 0)

    print(f"{machine()}; {args.policy} at strength {args.strength}, {args.size} x {args.size}, batches of {args.batch}")
    costs = layer_costs(pipeline(), images, args.batch)
    print("\nlayer alone, training mode                         ms an image")
    for label, ms in costs.items():
        print(f"  {label:50s} {ms:7.2f}")

    variants = {"as shipped (one axis at a time)": pipeline, "whole-kernel blur": lambda: with_whole_kernel_blur(pipeline())}
    epochs: dict[str, list[float]] = {label: [] for label in variants}
    for repeat in range(args.repeats):
        for label in list(variants)[:: 1 if repeat % 2 == 0 else -1]:  # each goes first in turn
            epochs[label] += epoch_ms(variants[label](), args, data)
    print(f"\ntraining epochs, {len(data.labels)} images (ms an image, each epoch after the first)")
    for label, values in epochs.items():
        print(f"  {label:35s} {' '.join(f'{v:6.1f}' for v in values)}   mean {np.mean(values):6.1f}")
    ratio = np.mean(epochs["whole-kernel blur"]) / np.mean(epochs["as shipped (one axis at a time)"])
    print(f"  whole-kernel / as shipped: {ratio:.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine(), "args": vars(args), "layers_ms": costs, "epochs_ms": epochs, "ratio": ratio}, handle, indent=1)


if __name__ == "__main__":
    main()
