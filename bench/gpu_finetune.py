"""ResNet50 at 96x96 on a GPU: fine-tune and head-phase throughput of bcauto's own classifier, float32 vs
mixed precision (and the cached-feature head for comparison).

Built with bcauto.model and the built-in backbone spec only (pure Keras), so it also runs where TensorFlow
cannot be installed: set KERAS_BACKEND (the device used for bench/RESULTS.md had JAX, not TensorFlow).
Random pixels: throughput does not depend on the image content or the weight values.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def throughput(model, x, y, batch_size: int, epochs: int) -> float:
    model.fit(x[: batch_size * 4], y[: batch_size * 4], batch_size=batch_size, epochs=1, verbose=0)  # compile and warm up
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    return len(x) * epochs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-sizes", default="64,256")
    args = parser.parse_args()
    import keras

    from bcauto.model import HeadParams, assemble, build_backbone, build_head, set_trainable_blocks
    from bcauto_builtin.backbones import BUILTIN_BACKBONES

    spec = next(s for s in BUILTIN_BACKBONES if s.name == "resnet50")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.images, 96, 96, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 8, args.images), 8)
    print(f"backend {keras.backend.backend()}, keras {keras.__version__}, devices: {os.environ.get('BCAUTO_DEVICE', '?')}")
    for policy in ("float32", "mixed_float16"):
        keras.mixed_precision.set_global_policy(policy)
        for batch_size in map(int, args.batch_sizes.split(",")):
            for unfreeze in (0, 1, "all"):
                keras.backend.clear_session()
                backbone = build_backbone(spec, 96, None)
                head = build_head(backbone.output_shape[-1], 8, HeadParams())
                model = assemble(backbone, head, None, frozen_inference=True)
                set_trainable_blocks(spec, backbone, unfreeze)
                if unfreeze == 0:
                    backbone.trainable = False
                model.compile(optimizer=keras.optimizers.Lion(1e-5), loss="categorical_crossentropy", jit_compile=True)
                rate = throughput(model, x, y, batch_size, args.epochs)
                phase = "head phase, frozen backbone" if unfreeze == 0 else f"fine-tune, unfreeze {unfreeze}"
                print(f"{policy:14s} batch {batch_size:3d}  {phase:30s} {rate:8.0f} images/s")
            keras.backend.clear_session()
            head = build_head(2048, 8, HeadParams())
            head.compile(optimizer=keras.optimizers.Lion(1e-4), loss="categorical_crossentropy", jit_compile=True)
            features = rng.normal(size=(args.images, 2048)).astype("float32")
            rate = throughput(head, features, y, batch_size, args.epochs)
            print(f"{policy:14s} batch {batch_size:3d}  {'head phase, cached features':30s} {rate:8.0f} images/s")


if __name__ == "__main__":
    main()
