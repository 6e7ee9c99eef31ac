"""Does fine-tuning on the shots with information maximization kept on the lab's unlabelled images do better on
the lab's other cells than the fine-tuning `bcauto adapt` does now? A pilot on models `bcauto adapt` already wrote.

Why asked: on stand-in labs the fine-tuning on 50 shots ended below the label-free step it started from
(bench/RESULTS.md, thirty-fifth and thirty-sixth runs): what information maximization found on all of the lab's
images is trained away by a few dozen labelled ones. Here both act at once (semi-supervised adaptation: the
cross-entropy on the shots and SHOT's information loss on the lab's images, labels unread, summed in every step).

For each adapted model directory (written with ``--adapt-im``, e.g. by `bench/adapt_recipes.py`): the label-free
model is rebuilt and checked against the record (`wise_adapted.rebuild_label_free`), then fine-tuned jointly for
the epochs the record's own cross-validation chose, in a loop of its own (batches drawn by its own seeded RNG, where
`bcauto adapt` uses `model.fit`), with the product's settings otherwise (Adam at 3e-4 decaying
to zero along a cosine, batches of 8 shots, the model's augmentation active on them, BatchNorm frozen, classes
weighted to balance), plus a batch of ``--unlabelled-batch`` of the lab's images (all of them, labels unread, in
inference mode, as the label-free step reads them) whose information loss is added with weight ``--weight``. The
kept-out cells (every image but the shots) are scored.

    python bench/joint_pilot.py --data bench/out/zero/bv-mid-s2.npz --adapted bench/out/zero/pl96-0/models/pl-s0 \\
        --out bench/out/joint/bv-0.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, quiet
from wise_adapted import rebuild_label_free, score

SHOT_BATCH = 8


def fine_tune_jointly(
    model, shots, shot_labels, unlabelled, num_classes: int, epochs: int, seed: int, weight: float, unlabelled_batch: int
) -> list[float]:
    """The product's fine-tuning on ``shots`` with ``weight`` x the information loss on ``unlabelled_batch`` images
    drawn from ``unlabelled`` at every step; returns the mean loss of each epoch."""
    import keras
    import tensorflow as tf
    from keras import ops

    from bcauto.data.images import content_order
    from bcauto.few_shot import DEFAULT_LEARNING_RATE, class_weights
    from bcauto.test_time import batchnorm_layers, information_loss

    keras.utils.set_random_seed(seed)
    order = content_order(shots)
    shots, shot_labels = shots[order].astype(np.float32), shot_labels[order]
    unlabelled = unlabelled[content_order(unlabelled)].astype(np.float32)
    for layer in batchnorm_layers(model):
        layer.trainable = False
    weights = class_weights(shot_labels) or {}
    sample_weight = np.array([weights.get(int(c), 1.0) for c in shot_labels], np.float32)
    y = np.eye(num_classes, dtype=np.float32)[shot_labels]
    per_epoch = -(-len(shot_labels) // SHOT_BATCH)
    rate = keras.optimizers.schedules.CosineDecay(DEFAULT_LEARNING_RATE, decay_steps=epochs * per_epoch)
    optimizer = keras.optimizers.Adam(learning_rate=rate)
    crossentropy = keras.losses.CategoricalCrossentropy()
    variables = list(model.trainable_variables)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(epochs):
        total = 0.0
        for batch in np.array_split(rng.permutation(len(shot_labels)), per_epoch):
            drawn = rng.choice(len(unlabelled), size=min(unlabelled_batch, len(unlabelled)), replace=False)
            with tf.GradientTape() as tape:
                probs = model(ops.convert_to_tensor(shots[batch]), training=True)
                supervised = crossentropy(y[batch], probs, sample_weight=sample_weight[batch])
                others = model(ops.convert_to_tensor(unlabelled[np.sort(drawn)]), training=False)
                unsupervised = information_loss(ops.cast(others, "float32"))
                loss = supervised + weight * unsupervised
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            total += float(loss)
        losses.append(total / per_epoch)
    return losses


def accuracy_and_f1(scores: dict) -> dict:
    return {k: round(v, 4) for k, v in scores.items() if k in ("accuracy", "macro_f1")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the lab's labelled cells the adapted model was adapted on")
    parser.add_argument("--adapted", required=True, help="model directory `bcauto adapt --adapt-im` wrote")
    parser.add_argument("--weight", type=float, default=1.0, help="weight of the information loss (default 1)")
    parser.add_argument("--unlabelled-batch", type=int, default=32, help="unlabelled images a step (default 32)")
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args()

    quiet()
    started = time.perf_counter()
    adapted, rebuilt = rebuild_label_free(args.adapted, args.data)
    record = adapted.info["adapted"]
    epochs, seed = int(record["recipe"]["epochs"]), int(record["seed"])
    losses = fine_tune_jointly(
        rebuilt.model,
        rebuilt.all_images[rebuilt.shots],
        rebuilt.all_labels[rebuilt.shots],
        rebuilt.all_images,
        len(rebuilt.classes),
        epochs,
        seed,
        args.weight,
        args.unlabelled_batch,
    )
    joint = score(rebuilt.parent.path, rebuilt.model, rebuilt.info, rebuilt.images, rebuilt.kept, rebuilt.classes)
    result = {
        "adapted": args.adapted,
        "data": args.data,
        "seed": seed,
        "epochs": epochs,
        "weight": args.weight,
        "unlabelled_batch": args.unlabelled_batch,
        "scored": len(rebuilt.kept),
        "rows": {
            "label-free (rebuilt)": rebuilt.scores,
            "shots only (recorded)": accuracy_and_f1(record.get("after_shots_only", {})),
            "adapted (recorded)": accuracy_and_f1(record["after"]),
            "joint": joint,
        },
        "loss_by_epoch": [round(v, 4) for v in losses],
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, row in result["rows"].items():
        print(f"{name:24s} {row}")


if __name__ == "__main__":
    main()
