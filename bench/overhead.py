"""One trial's training throughput in bcauto vs a bare model.fit of the identical model and data (ratio last).

bcauto side: the trainer with the trial's callbacks (MLflow per-epoch logging into a local store, Optuna
reporting, learning-rate logging, the seed's callbacks). Bare side: the same model, compiled the same way,
fit on the same tf.data pipeline with no callbacks. Throughput excludes the first epoch (tracing).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from common import DEFAULT_DATA, epoch_timer, load_subset, machine, quiet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--backbone", default="resnet_cnn")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    quiet()
    import keras
    import optuna

    from bcauto.data.split import stratified_split
    from bcauto.model import HeadParams
    from bcauto.objective import MlflowEpochLogger, OptunaReporter
    from bcauto.plugins import components
    from bcauto.tracking import Tracker
    from bcauto.training import TrainSettings, TrialPlan, batches, build_parts, compile_model, train

    data = load_subset(args.data, args.size, args.images)
    split = stratified_split(data, 0.2, 0)
    train_data, val_data = data.subset(split.train), data.subset(split.val)
    comps = components()
    plan = TrialPlan(
        backbone=comps.backbones.get(args.backbone),
        augmentation=comps.augmentations.get("none"),
        imbalance=comps.imbalance.get("none"),
        head=HeadParams(256, 128, 0.3, 1e-4),
        lr_head=1e-3,
        lr_finetune=0.0,
    )
    settings = TrainSettings(
        batch_size=64, head_epochs=args.epochs, finetune_epochs=0, patience=99, weights=None, seed=0, jit_compile=False
    )
    tmp = Path(tempfile.mkdtemp(prefix="bcauto-overhead-"))
    tracker = Tracker(f"sqlite:///{tmp}/mlflow.db", "overhead")
    print(f"machine: {machine()}")
    print(
        f"{args.backbone} from scratch, {len(train_data.labels)} train / {len(val_data.labels)} val images {args.size}x{args.size}, "
        f"{args.epochs} epochs, best of {args.repeats}"
    )

    def bcauto_epoch_time() -> float:
        trial = optuna.create_study(direction="maximize").ask()
        run_id = tracker.start_run(None, "overhead", {})
        timer = epoch_timer()
        train(
            plan,
            settings,
            train_data,
            val_data,
            callbacks=[MlflowEpochLogger(tracker, run_id), OptunaReporter(trial, "val_macro_f1", True), timer],
        )
        return float(np.mean(timer.times[1:]))

    def bare_epoch_time() -> float:
        keras.utils.set_random_seed(0)
        model = build_parts(plan, settings, args.size, train_data.num_classes).model
        compile_model(model, plan.lr_head, False)
        timer = epoch_timer()
        model.fit(
            batches(train_data.images, train_data.labels, train_data.num_classes, 64, shuffle_seed=0),
            validation_data=batches(val_data.images, val_data.labels, val_data.num_classes, 64).cache(),
            epochs=args.epochs,
            verbose=0,
            callbacks=[timer],
        )
        return float(np.mean(timer.times[1:]))

    bare, ours = [], []
    for _ in range(args.repeats):  # interleaved, so background load hits both sides alike
        bare.append(bare_epoch_time())
        ours.append(bcauto_epoch_time())
    n = len(train_data.labels)
    print(f"bare model.fit: {min(bare):.3f} s/epoch ({n / min(bare):.0f} images/s)")
    print(f"bcauto trial:   {min(ours):.3f} s/epoch ({n / min(ours):.0f} images/s)")
    print(f"throughput ratio (bcauto / bare): {min(bare) / min(ours):.3f}")


if __name__ == "__main__":
    main()
