"""Few-shot fine-tuning, the learning part of ``bcauto adapt``: which labelled images to take (:func:`choose_shots`),
how to weight their classes, how long to train (:func:`choose_epochs`, cross-validated within the shots), the
fine-tuning itself (:func:`fine_tune`), and the means to start it again from the same point (:class:`Snapshot`)
and to average several runs (:func:`as_ensemble`). What is read, scored, written and logged is in
:mod:`bcauto.adapt`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bcauto.bundle import ensemble
from bcauto.data.images import content_order
from bcauto.errors import BcautoError
from bcauto.test_time import batchnorm_layers
from bcauto.text import plural

EPOCH_CHOICES = (10, 20, 40, 80, 160)  # what --epochs auto cross-validates
CV_FOLDS = 5
UNCHECKED_EPOCHS = 40  # when no class has two shots to cross-validate with
DEFAULT_LEARNING_RATE = 3e-4
DEFAULT_BATCH = 8


class Snapshot:
    """Every variable of a model as it is now (weights, BatchNorm statistics, the augmentation's seed states), to
    put back with :meth:`restore`."""

    def __init__(self, model):
        self.model = model
        self.values = [np.array(v.numpy()) for v in model.variables]

    def restore(self, into=None) -> None:
        """Put the values back into the model, or into ``into``, a copy of it (``keras.models.clone_model``)."""
        for variable, value in zip((into or self.model).variables, self.values):
            variable.assign(value)


def as_ensemble(model, members: list[Snapshot]):
    """``model`` with the one member's values, or one model averaging the probabilities of a copy of ``model`` per
    member (:func:`bcauto.bundle.ensemble`, as `bcauto refit --top K` builds)."""
    if len(members) == 1:
        members[0].restore()
        return model
    import keras

    copies = []
    for member in members:
        copy = keras.models.clone_model(model)
        member.restore(into=copy)
        copies.append(copy)
    return ensemble(copies, name=model.name)


def choose_shots(labels: np.ndarray, shots: int, per_class: bool, seed: int, class_names=None) -> np.ndarray:
    """Indices of the images to fine-tune on (sorted), chosen with a seeded RNG; every class keeps at least one image
    to be scored on.

    ``per_class``: ``shots`` images of every class present. Otherwise ``shots`` in all, stratified: each class
    present gets one first (when ``shots`` allows; else ``shots`` classes drawn at random get one), the rest are
    shared in proportion to the class sizes (largest remainders), no class giving more than all but one image.
    """
    names = list(class_names) if class_names is not None else [str(c) for c in range(int(labels.max()) + 1)]
    if shots < 1:
        raise BcautoError(f"--shots must be 1 or more, got {shots}")
    rng = np.random.default_rng(seed)
    present = np.unique(labels)
    counts = {int(c): int((labels == c).sum()) for c in present}
    if per_class:
        short = [f"{names[c]!r} has {n}" for c, n in counts.items() if n <= shots]
        if short:
            raise BcautoError(
                f"--shots {shots} --per-class leaves no image to score in class(es) {', '.join(short)} "
                f"(each class needs more than {shots} images)"
            )
        take = {c: shots for c in counts}
    else:
        spare = {c: n - 1 for c, n in counts.items()}
        if shots > sum(spare.values()):
            raise BcautoError(
                f"--shots {shots} is more than the data allows: {plural(len(labels), 'image')} in {plural(len(counts), 'class')}, "
                f"and each class keeps at least one image to score (at most {sum(spare.values())} shots)"
            )
        take = {c: 0 for c in counts}
        eligible = [c for c in counts if spare[c] > 0]
        if shots < len(eligible):
            for c in rng.choice(eligible, size=shots, replace=False):
                take[int(c)] = 1
        else:
            for c in eligible:
                take[c] = 1
            while sum(take.values()) < shots:  # the rest in proportion to class sizes, within each class's spare images
                room = [c for c in counts if take[c] < spare[c]]
                if not room:  # cannot happen after the check above; never loop forever
                    raise BcautoError(f"--shots {shots}: not enough images to choose from")
                left = shots - sum(take.values())
                size = sum(counts[c] for c in room)
                quota = {c: left * counts[c] / size for c in room}
                added = {c: min(int(quota[c]), spare[c] - take[c]) for c in room}
                if sum(added.values()) == 0:  # hand out the largest remainders one by one
                    for c in sorted(room, key=lambda c: (-(quota[c] - int(quota[c])), c))[:left]:
                        added[c] = 1
                for c, k in added.items():
                    take[c] += k
    chosen = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c, k in take.items() if k]
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, np.int64)


def class_weights(labels: np.ndarray) -> dict[int, float] | None:
    """Balanced weights (n / (classes x count), scikit-learn's "balanced") over the classes in ``labels``; None
    when the classes are already balanced."""
    from sklearn.utils.class_weight import compute_class_weight  # slow to import

    present, counts = np.unique(labels, return_counts=True)
    if counts.min() == counts.max():
        return None
    return dict(zip(present.tolist(), compute_class_weight("balanced", classes=present, y=labels).tolist()))


def fine_tune(
    model,
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    epochs: int,
    learning_rate: float,
    seed: int,
    batch_size: int = DEFAULT_BATCH,
    callbacks: tuple = (),
    decay: bool = True,
) -> dict[str, Any]:
    """Train ``model`` on the few labelled ``images`` (labels: the model's class indices); returns the recipe used.

    Every layer trains except BatchNormalization, which stays frozen (inference mode: a handful of images gives no
    usable batch statistics, and moving statistics updated from them would wreck the layer), with Adam at a small
    learning rate for ``epochs`` epochs (:func:`choose_epochs` picks them by cross-validation within the shots:
    there are too few images to hold some back for early stopping). The model's own augmentation layers act, as
    they do in training, so each epoch sees other views of the few images; the images, in the order of their
    contents (the same shots, listed in any order, train the same model), are shuffled into batches by a seeded RNG,
    and the classes weighted to balance when the shots are imbalanced. ``callbacks`` (Keras callbacks) see the
    training.

    Adam at 3e-4 in batches of 8 takes small steps: a pretrained network moves towards the new lab's look
    without being trained away from what it learned, and the number of epochs is the one knob left to set.
    With ``decay`` the rate falls from ``learning_rate`` to zero along a cosine over the whole fine-tuning
    (``keras.optimizers.schedules.CosineDecay``): at a constant rate the predictions of a model trained on a few
    dozen augmented images swing with the epoch it stops at, and where the fine-tuning stops decides where it lands;
    with the decay, its last steps settle (bench/RESULTS.md, "twenty-sixth run"). The cross-validation
    (:func:`choose_epochs`) reads one constant-rate run at several epoch counts, so it passes ``decay=False``.
    """
    import keras

    from bcauto.training import StopWhenAsked

    keras.utils.set_random_seed(seed)
    order = content_order(images)
    images, labels = images[order], labels[order]
    norms = batchnorm_layers(model)
    was_trainable = [layer.trainable for layer in norms]
    for layer in norms:
        layer.trainable = False
    weights = class_weights(labels)
    batch = min(batch_size, len(labels))
    steps = epochs * -(-len(labels) // batch)
    rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps) if decay else learning_rate
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=rate), loss=keras.losses.CategoricalCrossentropy(), jit_compile=False)
    import tensorflow as tf

    y = np.eye(num_classes, dtype=np.float32)[labels]
    shuffled = (
        tf.data.Dataset.from_tensor_slices((images.astype(np.float32), y))
        .shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
        .batch(batch)
    )
    try:
        history = model.fit(
            shuffled, epochs=epochs, verbose=0, class_weight=weights, shuffle=False, callbacks=[StopWhenAsked(), *callbacks]
        )
        losses = [float(v) for v in history.history["loss"]]
    finally:
        for layer, trainable in zip(norms, was_trainable):  # the saved model keeps the parent's settings
            layer.trainable = trainable
    return {
        "optimizer": "Adam",
        "learning_rate": learning_rate,
        "learning_rate_schedule": f"cosine decay to 0 over {plural(steps, 'step')}" if decay else "constant",
        "epochs": epochs,
        "batch_size": batch,
        "batchnorm": f"frozen during fine-tuning ({plural(len(norms), 'layer')}, inference mode)",
        "augmentation": "the model's own layers, active",
        "trainable": "every layer but BatchNorm",
        "loss": "categorical crossentropy",
        "class_weight": {str(k): round(v, 4) for k, v in weights.items()} if weights else None,
        "final_loss": losses[-1] if losses else None,
    }


def cross_validation_folds(labels: np.ndarray, folds: int = CV_FOLDS) -> int:
    """How many folds :func:`choose_epochs` splits these shots' labels into: ``folds``, fewer when the smallest class
    or the shots are too few, at least 2; 0 when no class has two shots (nothing to cross-validate)."""
    counts = np.bincount(labels)[np.unique(labels)]
    if counts.max() < 2:
        return 0
    return max(2, min(folds, int(counts.min()), len(labels) // 2))


def cross_validation_epochs(labels: np.ndarray, choices=EPOCH_CHOICES, folds: int = CV_FOLDS, decay: bool = False) -> int:
    """How many epochs :func:`choose_epochs` trains in all on shots with these labels (for a progress bar)."""
    counts = {int(c) for c in choices}
    return cross_validation_folds(labels, folds) * (sum(counts) if decay else max(counts))


def choose_epochs(
    model,
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    learning_rate: float,
    seed: int,
    choices=EPOCH_CHOICES,
    folds: int = CV_FOLDS,
    decay: bool = False,
    callbacks: tuple = (),
) -> tuple[int, dict[str, Any]]:
    """How many epochs :func:`fine_tune` should train on these shots, chosen by stratified k-fold cross-validation
    within them: for each fold the model, from the weights it has now, is fine-tuned on the other folds for
    ``max(choices)`` epochs, and its predictions for the fold are taken after each epoch count in ``choices``. The
    count with the highest macro-F1 over all these out-of-fold predictions wins (the fewer epochs on a tie). The
    model's variables are restored afterwards. The record also scores the model as it stands on every shot (it has
    trained on none, so the score is out-of-sample as the folds' are): what the fine-tuning starts from. It is not a
    choice: on a stand-in lab the best count scored above it in each of six draws (bench/RESULTS.md, "thirty-fifth
    run"). Returns (epochs, the record of the choice); with one shot a class,
    there is no fold to score, and it returns ``UNCHECKED_EPOCHS`` and says so.

    Nothing but the shots is read: the images kept to score the adapted model play no part; the folds are drawn over
    the shots in the order of their contents, so the same shots, listed in any order, choose alike. How long to train
    depends on the model, the shift and the number of shots (too short leaves the parent's view of its own lab, too
    long learns the few shots by heart), so it is measured here rather than fixed; in the one comparison made so
    far (bench/RESULTS.md, "how `bcauto adapt` fine-tunes") it mattered more than the other settings tried.

    Without ``decay`` each fold is one constant-rate run read at every count; with it, each count is its own run
    whose rate decays over that count (as :func:`fine_tune` then trains), which costs the sum of the counts per fold
    rather than the largest (:func:`cross_validation_epochs`). ``callbacks`` (Keras callbacks) see every run.
    """
    import warnings

    import keras
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold

    order = content_order(images)
    images, labels = images[order], labels[order]
    splits = cross_validation_folds(labels, folds)
    if not splits:
        return UNCHECKED_EPOCHS, {"chosen_by": "a fixed default: no class has two shots, so there is nothing to cross-validate"}
    choices = sorted({int(c) for c in choices})
    predicted = {c: np.full(len(labels), -1) for c in choices}
    as_it_stands = model.predict(images.astype(np.float32), verbose=0).argmax(axis=1)
    start = Snapshot(model)

    class FoldPredictions(keras.callbacks.Callback):
        def __init__(self, held):
            super().__init__()
            self.held = held

        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 in predicted:
                probs = self.model.predict(images[self.held].astype(np.float32), verbose=0)
                predicted[epoch + 1][self.held] = probs.argmax(axis=1)

    with warnings.catch_warnings():  # a class with fewer shots than folds is left out of some folds, knowingly
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        folds_of = list(StratifiedKFold(splits, shuffle=True, random_state=seed).split(images, labels))
    runs = [(c, c) for c in choices] if decay else [(choices[-1], None)]  # (epochs trained, the count read at the end)
    try:
        for k, (train, held) in enumerate(folds_of):
            for epochs, read_at_end in runs:
                start.restore()
                fine_tune(
                    model,
                    images[train],
                    labels[train],
                    num_classes,
                    epochs,
                    learning_rate,
                    seed + k,
                    callbacks=tuple(callbacks) if decay else (*callbacks, FoldPredictions(held)),
                    decay=decay,
                )
                if read_at_end is not None:
                    predicted[read_at_end][held] = model.predict(images[held].astype(np.float32), verbose=0).argmax(axis=1)
    finally:
        start.restore()
    scores = {c: float(f1_score(labels, predicted[c], average="macro")) for c in choices}
    best = max(choices, key=lambda c: (round(scores[c], 6), -c))
    record = {
        "chosen_by": f"{splits}-fold cross-validation within the shots (macro-F1 of the out-of-fold predictions)",
        "learning_rate_schedule": "cosine decay over each count, one run per count" if decay else "constant, one run read at each count",
        "folds": splits,
        "macro_f1_by_epochs": {str(c): round(scores[c], 4) for c in choices},
        "macro_f1_as_it_stands": round(float(f1_score(labels, as_it_stands, average="macro")), 4),
    }
    return best, record
