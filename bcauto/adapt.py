"""``bcauto adapt``: a saved model fine-tuned on a few labelled images of another lab (other microscope, stain,
camera), for a number of epochs chosen by cross-validation within them and among the classes the lab's slides show
when ``--classes`` names them; scored before and after on the rest of those images, written as a new model
directory with its lineage, and logged to MLflow. The label-free adaptation that may come first, on all the lab's
images with their labels unread (``--adapt-bn``: BatchNorm statistics; ``--adapt-im``: information maximization),
is in :mod:`bcauto.test_time`; the self-training that may follow the fine-tuning (``--pseudo-labels``) in
:mod:`bcauto.self_training`; the label-free choice of which images to label (``--choose-shots typical``) in
:mod:`bcauto.shot_choice`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bcauto.bundle import INFO_FILE, MODEL_FILE, Bundle, ensemble, load_bundle, save_bundle, update_info
from bcauto.data import Dataset
from bcauto.data.images import content_order, list_images, pixel_digests
from bcauto.data.inputs import read_inputs
from bcauto.data.sources import load_data
from bcauto.errors import BcautoError
from bcauto.evaluate import TTA_DESCRIPTION, class_subset, evaluate, label_map, predict_probs, span
from bcauto.self_training import choose_pseudo_labels, pseudo_label_record, shot_prior
from bcauto.shot_choice import choose_typical
from bcauto.test_time import batchnorm_layers, label_free_step
from bcauto.text import plural

ADAPT_ROLE = "adapt"
EPOCH_CHOICES = (10, 20, 40, 80, 160)  # what --epochs auto cross-validates
CV_FOLDS = 5
UNCHECKED_EPOCHS = 40  # when no class has two shots to cross-validate with
DEFAULT_LEARNING_RATE = 3e-4
DEFAULT_BATCH = 8
SHOT_CHOICES = {
    "random": "drawn at random with --seed, stratified by class (or --per-class)",
    "typical": "the most typical image of each of --shots k-means clusters of the model's features (TypiClust), "
    "after the label-free step; labels unread",
}


# --- few-shot fine-tuning ------------------------------------------------------------------------------------------


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


def source_paths(data) -> list[str] | None:
    """The file of each image when ``data`` was read from an image folder (and every file decoded), else None."""
    root = Path(str(data.source)).expanduser()
    if not root.is_dir():
        return None
    try:
        names, files, labels, _ = list_images(root)
    except Exception:
        return None
    if len(files) != len(data.labels) or tuple(names) != tuple(data.class_names) or not np.array_equal(labels, data.labels):
        return None
    return [str(f) for f in files]


@dataclass
class AdaptRequest:
    """A resolved ``bcauto adapt`` invocation."""

    model: str
    data: str
    shots: int | None = None  # None with a pool: every image of ``data`` is a shot
    pool: list[str] | None = None  # the lab's unlabelled images (files, folders, .npz), read as bcauto predict reads them
    per_class: bool = False
    choose_shots: str = "random"  # a key of SHOT_CHOICES
    seed: int = 0
    epochs: int | None = None  # None: chosen by cross-validation within the shots (choose_epochs)
    learning_rate: float = DEFAULT_LEARNING_RATE
    out: str | None = None
    adapt_bn: bool = False
    adapt_im: bool = False
    pseudo_labels: bool = False
    align_to_shots: bool = False  # align the pseudo-labelling predictions to the shots' class mix
    classes: str | None = None
    tta: bool = False  # score, and choose pseudo-labels, on the mean of the 8 dihedral views
    ensemble: int = 1  # fine-tunings from the same start (seeds seed, seed + 1, ...), saved as the mean of their predictions
    tracking_uri: str = "sqlite:///mlflow.db"


@dataclass
class AdaptResult:
    path: Path
    run_id: str | None
    info: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _scores(bundle, data, tta: bool) -> dict[str, Any]:
    result, _, _ = evaluate(bundle, data, tta=tta)
    return {
        "accuracy": result["accuracy"],
        "macro_f1": result["macro_f1"],
        "interval": result["interval"],
        "images": result["images"],
        "per_class": {row["class"]: row["f1"] for row in result["per_class"]},
    }


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
        history = model.fit(shuffled, epochs=epochs, verbose=0, class_weight=weights, shuffle=False, callbacks=list(callbacks))
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
) -> tuple[int, dict[str, Any]]:
    """How many epochs :func:`fine_tune` should train on these shots, chosen by stratified k-fold cross-validation
    within them: for each fold the model, from the weights it has now, is fine-tuned on the other folds for
    ``max(choices)`` epochs, and its predictions for the fold are taken after each epoch count in ``choices``. The
    count with the highest macro-F1 over all these out-of-fold predictions wins (the fewer epochs on a tie). The
    model's variables are restored afterwards. Returns (epochs, the record of the choice); with one shot a class,
    there is no fold to score, and it returns ``UNCHECKED_EPOCHS`` and says so.

    Nothing but the shots is read: the images kept to score the adapted model play no part; the folds are drawn over
    the shots in the order of their contents, so the same shots, listed in any order, choose alike. How long to train
    depends on the model, the shift and the number of shots (too short leaves the parent's view of its own lab, too
    long learns the few shots by heart), so it is measured here rather than fixed; in the one comparison made so
    far (bench/RESULTS.md, "how `bcauto adapt` fine-tunes") it mattered more than the other settings tried.

    Without ``decay`` each fold is one constant-rate run read at every count; with it, each count is its own run
    whose rate decays over that count (as :func:`fine_tune` then trains), which costs the sum of the counts per fold
    rather than the largest.
    """
    import warnings

    import keras
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold

    order = content_order(images)
    images, labels = images[order], labels[order]
    counts = np.bincount(labels)[np.unique(labels)]
    if counts.max() < 2:
        return UNCHECKED_EPOCHS, {"chosen_by": "a fixed default: no class has two shots, so there is nothing to cross-validate"}
    smallest = int(counts.min())
    splits = max(2, min(folds, smallest, len(labels) // 2))
    choices = sorted({int(c) for c in choices})
    predicted = {c: np.full(len(labels), -1) for c in choices}
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
                    callbacks=() if decay else (FoldPredictions(held),),
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
    }
    return best, record


def check_request(request: AdaptRequest) -> None:
    """Options that contradict each other, refused before anything is read."""
    if request.epochs is not None and request.epochs < 1:
        raise BcautoError(f"--epochs must be 1 or more, got {request.epochs}")
    if request.align_to_shots and not request.pseudo_labels:
        raise BcautoError("--align-to-shots aligns the predictions that choose pseudo-labels; add --pseudo-labels")
    if request.align_to_shots and request.per_class:
        raise BcautoError(
            "--align-to-shots aligns to the class mix of the shots, and --per-class draws as many of every class; drop one of them"
        )
    if request.choose_shots not in SHOT_CHOICES:
        raise BcautoError(f"--choose-shots must be one of {', '.join(SHOT_CHOICES)}, got {request.choose_shots!r}")
    if request.choose_shots == "typical" and (request.per_class or request.align_to_shots):
        raise BcautoError("--choose-shots typical chooses from the images alone, not by class: drop --per-class and --align-to-shots")
    if request.ensemble < 1:
        raise BcautoError(f"--ensemble must be 1 or more, got {request.ensemble}")
    if not request.learning_rate > 0:
        raise BcautoError(f"--lr must be positive, got {request.learning_rate}")
    if request.pool and (request.shots is not None or request.per_class or request.choose_shots != "random"):
        raise BcautoError(
            "with --pool every image of --data is a shot (the cells your lab labelled); drop --shots, --per-class and --choose-shots"
        )
    if not request.pool and request.shots is None:
        raise BcautoError(
            "--shots is needed: how many of --data's images to fine-tune on (or give --pool, and every image of --data is a shot)"
        )


def adapt(request: AdaptRequest, components, console) -> AdaptResult:
    """Fine-tune the model directory ``request.model`` on a few labelled images of ``request.data``: choose the shots
    (:func:`choose_shots`; with ``--choose-shots typical`` after the label-free step, by
    :func:`bcauto.shot_choice.typical_shots`; with ``--pool`` every image of ``request.data``, the pool being the
    rest, :func:`read_pool`), score the model as it was on the rest (not with a pool: its labels are unknown), adapt
    it to all the images with their labels unread when asked (:func:`bcauto.test_time.label_free_step`), fine-tune
    (:func:`fine_tune`), self-train on the rest when asked (:func:`self_train`), score again on the same rest, write
    the adapted model directory with its lineage, log an MLflow run (tag ``bcauto.role = adapt``) and print the
    scores before and after."""
    import keras

    check_request(request)
    keras.utils.set_random_seed(request.seed)  # before loading: layers draw their seed generators' states then
    parent = load_bundle(request.model)
    out = Path(request.out).expanduser() if request.out else parent.path.with_name(parent.path.name + "-adapted")
    if out.resolve() == parent.path.resolve():
        raise BcautoError(f"--out {out} is the model being adapted; write the adapted model to another folder")
    data = load_data(request.data, parent.image_size, components, {"seed": request.seed})
    for note in data.notes:
        console.print(f"[cyan]note:[/] {note}")
    labels = label_map(data.class_names, parent.class_names, what="the adaptation data")[data.labels]
    model, classes, labels = among_classes(parent, request.classes, labels, data.source, console)
    images, pool, seen = data.images, None, data.source  # seen: the images the label-free step reads, in words
    if request.pool:  # the labelled images first, so the shots are 0..n-1; the pool's labels are unknown (-1)
        unlabelled, pool = read_pool(request.pool, parent.image_size, data.images, console)
        seen = f"{data.source} and --pool {', '.join(request.pool)}"
        images = np.concatenate([data.images, unlabelled])
        labels = np.concatenate([labels, np.full(len(images) - len(labels), -1)])
    if pool:
        shots = np.arange(len(data.labels))
    elif request.choose_shots == "typical":  # chosen on the features the label-free step leaves; the parent scored as it was
        untouched = Snapshot(model)
        label_free = label_free_step(request, model, images, seen, console)
        with console.status(f"choosing {plural(request.shots, 'typical image')} to label"):
            shots = choose_typical(model, images, request.shots, request.seed)
        label_freed = Snapshot(model)
        untouched.restore()
    else:
        shots = choose_shots(labels, request.shots, request.per_class, request.seed, classes)
    rest = np.setdiff1d(np.arange(len(labels)), shots)
    scored = None if pool else Dataset(images[rest], labels[rest], classes, data.source)
    unscored = sorted(set(labels[shots].tolist()) - set(labels[rest].tolist()))
    if scored is not None and unscored:  # choose_shots leaves every class an image; typical shots may take a small class whole
        raise BcautoError(f"class(es) {', '.join(classes[c] for c in unscored)} have no image left to score")
    counts = {classes[c]: int((labels[shots] == c).sum()) for c in np.unique(labels[labels >= 0])}
    drawn = f"{plural(len(shots), 'shot')} to fine-tune on ({', '.join(f'{k}={v}' for k, v in counts.items())})"
    console.print(
        f"data: {data.source}: {drawn}; {plural(pool['images'], 'unlabelled image')} in --pool"
        if pool
        else f"data: {data.source}: {plural(len(labels), 'image')}; {drawn}, {len(rest)} to score on"
    )

    start = Bundle(parent.path, model, {**parent.info, "class_names": list(classes)})
    rows: list[tuple[str, dict[str, Any]]] = []

    def score(row: str, bundle: Bundle = start) -> None:
        if scored is not None:  # with --pool no labelled image is kept aside to score on
            rows.append((row, _scores(bundle, scored, request.tta)))

    score("parent" if model is parent.model else "parent, among --classes")
    if request.choose_shots == "typical":
        label_freed.restore()
    else:
        label_free = label_free_step(request, model, images, seen, console)
    if label_free and label_free[0]:
        score(label_free[0])
    epochs, choice = request.epochs, None
    if epochs is None:
        with console.status(f"choosing the epochs by cross-validation within the {plural(len(shots), 'shot')}"):
            epochs, choice = choose_epochs(model, images[shots], labels[shots], len(classes), request.learning_rate, request.seed)
        tried = ", ".join(f"{k}: {v:.3f}" for k, v in choice.get("macro_f1_by_epochs", {}).items())
        console.print(f"epochs: {epochs}, chosen by {choice['chosen_by']}" + (f"; macro-F1 by epochs {tried}" if tried else ""))
        if tried and epochs == max(EPOCH_CHOICES):
            console.print(
                f"[cyan]note:[/] the longest fine-tuning tried ({epochs} epochs) scored best in the cross-validation; "
                "a longer one (--epochs N) may score higher still"
            )
    before_fine_tuning = Snapshot(model)
    shots_only, finished, members = [], [], []
    for member, seed in enumerate(range(request.seed, request.seed + request.ensemble)):
        before_fine_tuning.restore()
        which = f" (member {member + 1} of {request.ensemble})" if request.ensemble > 1 else ""
        with console.status(f"fine-tuning on {plural(len(shots), 'image')} for {plural(epochs, 'epoch')}{which}"):
            recipe = fine_tune(model, images[shots], labels[shots], len(classes), epochs, request.learning_rate, seed)
        if request.pseudo_labels:
            shots_only.append(Snapshot(model))
            recipe["pseudo_labels"] = self_train(
                model, before_fine_tuning, images, labels, shots, rest, classes, epochs, request, seed, console
            )
        finished.append(Snapshot(model))
        members.append(recipe)
    if request.pseudo_labels:
        score("fine-tuned on the shots", Bundle(out, as_ensemble(model, shots_only), start.info))
    model = as_ensemble(model, finished)
    recipe = members[0]
    if request.ensemble > 1:
        recipe["ensemble"] = [
            {"seed": request.seed + i, "final_loss": m["final_loss"], "pseudo_labels_correct": m.get("pseudo_labels", {}).get("correct")}
            for i, m in enumerate(members)
        ]
    recipe["epochs_choice"] = choice or "--epochs"
    recipe["adapt_bn"] = label_free[1] if label_free and not request.adapt_im else False
    recipe["adapt_im"] = label_free[1] if label_free and request.adapt_im else False
    score("adapted", Bundle(out, model, start.info))
    model = _without_optimizer(model)

    parent_mlflow = parent.info.get("mlflow")
    adapted: dict[str, Any] = {
        "parent": str(parent.path),
        "parent_mlflow": parent_mlflow,
        "data": data.source,
        "fingerprint": data.fingerprint(),
        "images": len(labels),
        "shots": len(shots) if pool else int(request.shots),
        "per_class": bool(request.per_class),
        "choose_shots": "every image of --data (--pool)" if pool else request.choose_shots,
        "shot_choice": "the lab's own: every image of --data" if pool else SHOT_CHOICES[request.choose_shots],
        "seed": int(request.seed),
        "shot_indices": shots.tolist(),
        "shot_counts": counts,
        "classes": list(classes) if len(classes) < len(parent.class_names) else "all the parent's",
        "scored_images": len(rest) if scored is not None else 0,
        "tta": TTA_DESCRIPTION if request.tta else "none",
        "before": rows[0][1] if rows else None,
        "after": rows[-1][1] if rows else None,
        "recipe": recipe,
    }
    if pool:
        adapted["pool"] = pool
    steps = dict(rows[1:-1])
    for row, key in (
        ("information maximized", "after_information_maximization"),
        ("BatchNorm recomputed", "after_batchnorm_only"),
        ("fine-tuned on the shots", "after_shots_only"),
    ):
        if row in steps:
            adapted[key] = steps[row]
    paths = source_paths(data)
    if paths is not None:
        adapted["shot_files"] = [paths[i] for i in shots]
    info = {k: v for k, v in start.info.items() if k not in ("format", "mlflow")}
    info["adapted"] = adapted
    save_bundle(model, info, out)
    load_bundle(out)  # what was written must load with safe_mode=True
    run_id, problems = log_adapt(request.tracking_uri, out, info)
    if run_id:
        info["mlflow"] = {"run_id": run_id}
        update_info(out, info)
    for problem in problems:
        console.print(f"[yellow]warning:[/] {problem}")
    if rows:
        render(rows, console, request.tta)
    else:
        console.print(
            "[cyan]note:[/] with --pool no labelled image was kept aside, so the adapted model is not scored here: "
            f"score it with `bcauto evaluate {out} --data CELLS` on labelled cells of your lab that were not shots",
            soft_wrap=True,
        )
    return AdaptResult(out, run_id, info)


def read_pool(inputs: list[str], image_size: int, shots: np.ndarray, console) -> tuple[np.ndarray, dict[str, Any]]:
    """``--pool``: the lab's unlabelled images, read as ``bcauto predict`` reads its inputs, less any copy of one of
    the labelled ``shots`` (the same pixels at the model's size: the cells a lab labelled usually come from its
    pool, and an image must not be both a shot and unlabelled); and the record of what was read, for the lineage."""
    import hashlib

    _, images = read_inputs(inputs, image_size)
    labelled = set(pixel_digests(shots))
    kept = np.array([digest not in labelled for digest in pixel_digests(images)], bool)
    if not kept.any():
        raise BcautoError(
            f"--pool {' '.join(inputs)}: every image is one of the shots of --data; the pool must hold the lab's other, unlabelled images"
        )
    copies = int((~kept).sum())
    if copies:
        what = "is a shot" if copies == 1 else "are shots"
        console.print(f"[cyan]note:[/] --pool: left out {plural(copies, 'image')} that {what} of --data")
    images = images[kept]
    return images, {
        "inputs": list(inputs),
        "images": len(images),
        "copies_of_shots_left_out": copies,
        "fingerprint": hashlib.sha256(images.tobytes()).hexdigest()[:16],
    }


def self_train(model, before_fine_tuning, images, labels, shots, rest, classes, epochs: int, request, seed: int, console) -> dict[str, Any]:
    """``--pseudo-labels``: the model fine-tuned on the shots labels the images that are not shots (their labels
    unread), the most confident of each predicted class are chosen (:func:`choose_pseudo_labels`; with
    ``--align-to-shots`` the probabilities first aligned to the class mix of the shots), and the fine-tuning starts
    again from where it began (``before_fine_tuning``), on the shots and those images, for the same epochs. Starting again rather than going
    on keeps the model from learning its own mistakes on the few shots twice over. With ``--tta`` the labels come
    from the mean over the 8 dihedral views of each image. Returns the record for the lineage; how many
    pseudo-labels were right is read from the labels afterwards, only to report it."""
    probs = predict_probs(model, images[rest], request.tta)
    prior = shot_prior(labels[shots], len(classes)) if request.align_to_shots else None
    index, predicted = choose_pseudo_labels(probs, prior=prior)
    record = pseudo_label_record(index, predicted, len(rest), classes, prior)
    before_fine_tuning.restore()
    chosen = rest[index]
    with console.status(f"fine-tuning again on {plural(len(shots), 'shot')} and {plural(len(chosen), 'pseudo-labelled image')}"):
        second = fine_tune(
            model,
            np.concatenate([images[shots], images[chosen]]),
            np.concatenate([labels[shots], predicted]),
            len(classes),
            epochs,
            request.learning_rate,
            seed,
        )
    record["indices"] = chosen.tolist()
    record["labels"] = predicted.tolist()
    known = labels[chosen] >= 0  # none with --pool
    record["correct"] = round(float((predicted[known] == labels[chosen][known]).mean()), 4) if known.all() else None
    record["final_loss"] = second["final_loss"]
    record["class_weight"] = second["class_weight"]
    console.print(
        f"pseudo-labelled {len(chosen)} of the {len(rest)} images that are not shots ("
        + ", ".join(f"{k}={v}" for k, v in record["by_class"].items())
        + (f"; {record['correct']:.0%} of them right, read afterwards" if record["correct"] is not None else "")
        + ") and fine-tuned again on them and the shots"
    )
    return record


def among_classes(parent: Bundle, names: str | None, labels: np.ndarray, source, console) -> tuple[Any, tuple[str, ...], np.ndarray]:
    """The model to adapt, its classes and the labels as its class indices: the parent as it is, or, with
    ``names`` (``--classes``), the parent predicting among those of its classes only (:func:`restrict_classes`),
    which the fine-tuning then trains as a classifier of those classes. Without ``names``, data holding fewer
    classes than the model gets a note saying how to restrict it."""
    from bcauto.model import restrict_classes

    classes = parent.class_names
    kept = class_subset(names, classes)
    present = np.unique(labels)
    if kept is None:
        if len(present) < len(classes):
            named = ",".join(classes[c] for c in present)
            console.print(
                f"[cyan]note:[/] the data holds {len(present)} of the model's {len(classes)} classes; if the new lab's "
                f"slides show no others, --classes {named} makes the adapted model predict among these only"
            )
        return parent.model, classes, labels
    outside = [classes[c] for c in present[~np.isin(present, kept)]]
    if outside:
        raise BcautoError(
            f"--classes leaves out {', '.join(map(repr, outside))}, which {source} holds; "
            "name every class of the adaptation data (and any other the model should still predict)"
        )
    if len(kept) < 2:
        raise BcautoError(f"--classes names {plural(len(kept), 'class')}; a classifier needs at least 2")
    return restrict_classes(parent.model, kept), tuple(classes[c] for c in kept), np.searchsorted(kept, labels)


def _without_optimizer(model):
    """``model`` saved and loaded again without its compiled state: the model directory holds no optimizer, like
    those `bcauto refit` writes."""
    import tempfile

    import keras

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "adapted.keras"
        model.save(path)
        return keras.saving.load_model(path, compile=False, safe_mode=True)


def _parent_run_id(parent_mlflow) -> str | None:
    return parent_mlflow.get("run_id") if isinstance(parent_mlflow, dict) else None


def log_adapt(tracking_uri: str, out: Path, info: dict) -> tuple[str | None, list[str]]:
    """A run (tag ``bcauto.role = adapt``, ``bcauto.parent_run_id``) in the parent's study's experiment (else
    ``bcauto-adapt``) with the parameters, the scores before and after, and the model directory as artifacts.
    Returns (run id or None, warnings); a tracking store that fails costs the run, never the model."""
    from bcauto.tracking import Tracker

    adapted = info["adapted"]
    try:
        tracker = Tracker(tracking_uri, experiment=str(info.get("study") or "bcauto-adapt"))
    except Exception as exc:
        return None, [f"MLflow: could not open {tracking_uri} ({type(exc).__name__}: {exc}); the model is saved all the same"]
    tags = {"bcauto.role": ADAPT_ROLE, "bcauto.data_fingerprint": adapted["fingerprint"]}
    parent_run = _parent_run_id(adapted["parent_mlflow"])
    if parent_run:
        tags["bcauto.parent_run_id"] = parent_run
    if info.get("study"):
        tags["bcauto.study"] = str(info["study"])
    run_id = tracker.start_run(None, f"adapt {Path(adapted['parent']).name} to {Path(str(adapted['data'])).name}", tags)
    recipe = adapted["recipe"]
    tracker.log_params(
        run_id,
        {
            "shots": adapted["shots"],
            "per_class": adapted["per_class"],
            "choose_shots": adapted["choose_shots"],
            "seed": adapted["seed"],
            "epochs": recipe["epochs"],
            "lr": recipe["learning_rate"],
            "lr_schedule": recipe["learning_rate_schedule"],
            "batch_size": recipe["batch_size"],
            "adapt_bn": bool(recipe["adapt_bn"]),
            "adapt_im": bool(recipe["adapt_im"]),
            "pseudo_labels": bool(recipe.get("pseudo_labels")),
            "align_to_shots": bool(recipe.get("pseudo_labels", {}).get("aligned_to")),
            "classes": ",".join(adapted["classes"]) if isinstance(adapted["classes"], list) else "all",
            "data.source": adapted["data"],
            "data.fingerprint": adapted["fingerprint"],
            "parent": adapted["parent"],
            "shots_taken": len(adapted["shot_indices"]),
            "scored_images": adapted["scored_images"],
            "pool_images": adapted.get("pool", {}).get("images", 0),
            "tta": adapted["tta"] != "none",
            "ensemble": len(recipe.get("ensemble", ())) or 1,
        },
    )
    metrics = {f"{when}_{key}": adapted[when][key] for when in ("before", "after") if adapted[when] for key in ("accuracy", "macro_f1")}
    steps = (("after_batchnorm_only", "adapt_bn"), ("after_information_maximization", "adapt_im"), ("after_shots_only", "shots_only"))
    for step, prefix in steps:
        if step in adapted:
            metrics.update({f"{prefix}_{key}": adapted[step][key] for key in ("accuracy", "macro_f1")})
    tracker.log_metrics(run_id, metrics)
    tracker.log_artifact(run_id, out / INFO_FILE, "bundle")
    tracker.log_artifact(run_id, out / MODEL_FILE, "bundle")
    tracker.finish(run_id, "FINISHED")
    return run_id, list(tracker.problems)


def render(rows: list[tuple[str, dict[str, Any]]], console, tta: bool = False) -> None:
    """The scores on the kept-out images: the parent, after BatchNorm recomputation (if any), after fine-tuning."""
    from rich.table import Table

    first = rows[0][1]
    level = f"{first['interval']['level']:.0%}"
    views = ", TTA: mean of the 8 dihedral views" if tta else ""
    table = Table(title=f"scores on the {first['images']} images not fine-tuned on{views}")
    for column in ("model", "accuracy", f"{level} interval", "macro F1", f"{level} interval", "change in macro F1"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, s in rows:
        change = s["macro_f1"] - first["macro_f1"]
        interval = s["interval"]
        table.add_row(
            name,
            f"{s['accuracy']:.4f}",
            span(interval["accuracy"]) if interval["accuracy"] else "",
            f"{s['macro_f1']:.4f}",
            span(interval["macro_f1"]) if interval["macro_f1"] else "",
            "" if s is first else f"{change:+.4f}",
        )
    console.print(table)
