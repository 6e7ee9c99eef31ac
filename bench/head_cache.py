"""Head-phase throughput for ResNet50 at 96x96, with and without the feature cache (ratio last).

Both runs train the same plan through bcauto's trainer; only the cache directory differs. Throughput is
training images per second of epoch wall time (validation included), first epoch (tracing) excluded. The
one-time feature extraction is reported separately. ResNet50 starts from a local random weights file
(no network here); speed does not depend on the weight values.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import DEFAULT_DATA, epoch_timer, load_subset, machine, quiet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    quiet()
    import keras

    from bcauto.data.split import stratified_split
    from bcauto.model import HeadParams
    from bcauto.plugins import components
    from bcauto.training import TrainSettings, TrialPlan, train

    tmp = Path(tempfile.mkdtemp(prefix="bcauto-headcache-"))
    weights = tmp / "resnet50.weights.h5"
    keras.applications.ResNet50(include_top=False, weights=None, input_shape=(args.size, args.size, 3)).save_weights(weights)
    data = load_subset(args.data, args.size, args.images)
    split = stratified_split(data, 0.2, 0)
    train_data, val_data = data.subset(split.train), data.subset(split.val)
    comps = components()
    plan = TrialPlan(
        backbone=comps.backbones.get("resnet50"),
        augmentation=comps.augmentations.get("none"),
        imbalance=comps.imbalance.get("none"),
        head=HeadParams(),
        lr_head=1e-4,
        lr_finetune=0.0,
    )
    print(f"machine: {machine()}")
    print(f"data: {len(train_data.labels)} train / {len(val_data.labels)} val images {args.size}x{args.size}, {args.epochs} epochs")
    throughput = {}
    for label, cache in (("without cache", None), ("with cache", str(tmp / "cache"))):
        settings = TrainSettings(
            batch_size=64,
            head_epochs=args.epochs,
            finetune_epochs=0,
            patience=99,
            weights=str(weights),
            seed=0,
            jit_compile=False,
            cache_dir=cache,
        )
        timer = epoch_timer()
        start = time.perf_counter()
        result = train(plan, settings, train_data, val_data, callbacks=[timer])
        total = time.perf_counter() - start
        per_epoch = float(np.mean(timer.times[1:]))
        throughput[label] = len(train_data.labels) / per_epoch
        print(
            f"{label}: mode {result.modes['head']}, {per_epoch:.3f} s/epoch, {throughput[label]:.0f} images/s, "
            f"whole phase {total:.1f} s (model build{' and the one-time feature extraction' if cache else ''} included)"
        )
    print(f"head-phase throughput ratio (with / without cache): {throughput['with cache'] / throughput['without cache']:.0f}x")


if __name__ == "__main__":
    main()
