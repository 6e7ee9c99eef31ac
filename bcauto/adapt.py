"""``bcauto adapt``: a saved model fine-tuned on a few labelled images of another lab (other microscope, stain,
camera), for a number of epochs chosen by cross-validation within them and among the classes the lab's slides show
when ``--classes`` names them; scored before and after on the rest of those images, written as a new model
directory with its lineage, and logged to MLflow. The label-free adaptation that may come first, on all the lab's
images with their labels unread (``--adapt-bn``: BatchNorm statistics; ``--adapt-im``: information maximization),
is in :mod:`bcauto.test_time`; the choice of shots and epochs and the fine-tuning itself in :mod:`bcauto.few_shot`;
the self-training that may follow the fine-tuning (``--pseudo-labels``) in :mod:`bcauto.self_training`; the
label-free choice of which images to label (``--choose-shots typical``) in :mod:`bcauto.shot_choice`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.markup import escape

from bcauto.bundle import INFO_FILE, MODEL_FILE, Bundle, load_bundle, save_bundle, update_info
from bcauto.data import Dataset
from bcauto.data.images import list_images, pixel_digests
from bcauto.data.inputs import read_inputs
from bcauto.data.sources import load_data
from bcauto.errors import BcautoError
from bcauto.evaluate import TTA_DESCRIPTION, class_subset, evaluate, label_map, predict_probs, span
from bcauto.few_shot import (
    DEFAULT_LEARNING_RATE,
    EPOCH_CHOICES,
    Snapshot,
    as_ensemble,
    choose_epochs,
    choose_shots,
    cross_validation_epochs,
    fine_tune,
)
from bcauto.progress import EpochBar
from bcauto.self_training import choose_pseudo_labels, pseudo_label_record, shot_prior
from bcauto.shot_choice import SHOT_CHOICES, choose_typical
from bcauto.test_time import label_free_step
from bcauto.text import plural

ADAPT_ROLE = "adapt"


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
    (:func:`bcauto.few_shot.choose_shots`; with ``--choose-shots typical`` after the label-free step, by
    :func:`bcauto.shot_choice.typical_shots`; with ``--pool`` every image of ``request.data``, the pool being the
    rest, :func:`read_pool`), score the model as it was on the rest (not with a pool: its labels are unknown), adapt
    it to all the images with their labels unread when asked (:func:`bcauto.test_time.label_free_step`), fine-tune
    (:func:`bcauto.few_shot.fine_tune`), self-train on the rest when asked (:func:`self_train`), score again on the same rest, write
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
    epochs, choice = epochs_for(request, model, images[shots], labels[shots], len(classes), console)
    finished, shots_only, recipe = fine_tune_members(request, model, images, labels, shots, rest, classes, epochs, console)
    if shots_only:
        score("fine-tuned on the shots", Bundle(out, as_ensemble(model, shots_only), start.info))
    model = as_ensemble(model, finished)
    recipe["epochs_choice"] = choice or "--epochs"
    recipe["adapt_bn"] = label_free[1] if label_free and not request.adapt_im else False
    recipe["adapt_im"] = label_free[1] if label_free and request.adapt_im else False
    score("adapted", Bundle(out, model, start.info))
    model = _without_optimizer(model)

    scored_images = len(rest) if scored is not None else 0
    adapted = lineage(request, parent, data, len(labels), classes, shots, counts, scored_images, pool, rows, recipe)
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
        if "warning" in adapted:
            console.print(f"[yellow]warning:[/] {escape(adapted['warning'])}")
    else:
        console.print(
            "[cyan]note:[/] with --pool no labelled image was kept aside, so the adapted model is not scored here: "
            f"score it with `bcauto evaluate {out} --data CELLS` on labelled cells of your lab that were not shots",
            soft_wrap=True,
        )
    return AdaptResult(out, run_id, info)


def epochs_for(request: AdaptRequest, model, shot_images, shot_labels, num_classes: int, console) -> tuple[int, dict[str, Any] | None]:
    """``--epochs``, or the count :func:`choose_epochs` finds best by cross-validation within the shots (said, with
    the scores of every count tried); the record of the choice, None for ``--epochs``."""
    if request.epochs is not None:
        return request.epochs, None
    label = f"choosing the epochs by cross-validation within the {plural(len(shot_labels), 'shot')}"
    with EpochBar(console, label, cross_validation_epochs(shot_labels), across_fits=True) as bar:
        epochs, choice = choose_epochs(model, shot_images, shot_labels, num_classes, request.learning_rate, request.seed, callbacks=(bar,))
    tried = ", ".join(f"{k}: {v:.3f}" for k, v in choice.get("macro_f1_by_epochs", {}).items())
    start = f" (the model as it stands: {choice['macro_f1_as_it_stands']:.3f})" if tried else ""
    console.print(f"epochs: {epochs}, chosen by {choice['chosen_by']}" + (f"; macro-F1 by epochs {tried}{start}" if tried else ""))
    if tried and epochs == max(EPOCH_CHOICES):
        console.print(
            f"[cyan]note:[/] the longest fine-tuning tried ({epochs} epochs) scored best in the cross-validation; "
            "a longer one (--epochs N) may score higher still"
        )
    doubt = fine_tuning_doubt(epochs, choice)
    if doubt:
        choice["warning"] = doubt
        console.print(f"[yellow]warning:[/] {escape(doubt)}", soft_wrap=True)
    return epochs, choice


def fine_tuning_doubt(epochs: int, choice: dict[str, Any]) -> str | None:
    """What to say when every epoch count tried in the cross-validation scored below the model as it stands on
    the shots: the fine-tuning then goes ahead with the best count, and nothing within the shots says it will help.
    This reads the shots only, so it is the one warning that comes before training, and the only one with
    ``--pool`` (no cell is kept aside to compare rows on). None when some count scored as high as the start or
    higher (a level count is no alarm: on a stand-in lab, bench/RESULTS.md "thirty-ninth run", the fine-tuning from
    such a draw gained)."""
    scores = choice.get("macro_f1_by_epochs")
    if not scores or choice["macro_f1_as_it_stands"] <= max(scores.values()):
        return None
    return (
        f"every fine-tuning tried scored below the model as it stands in the cross-validation within the shots (best "
        f"{scores[str(epochs)]:.3f} at {epochs} epochs, against {choice['macro_f1_as_it_stands']:.3f}): on these "
        "shots the fine-tuning may end below where it starts; compare the adapted model with the model as it stands "
        "on cells that were not shots, or label more cells"
    )


def fine_tune_members(
    request: AdaptRequest, model, images, labels, shots, rest, classes, epochs: int, console
) -> tuple[list[Snapshot], list[Snapshot], dict[str, Any]]:
    """``--ensemble`` fine-tunings of ``model`` from where it is now (seeds ``request.seed``, + 1, ...), each on the
    shots and, with ``--pseudo-labels``, again on the shots and the surest other images (:func:`self_train`).
    Returns each member as it finished, each as it was after the shots alone (with ``--pseudo-labels``; else
    none), and the first member's recipe, with the others' seeds and losses when there are several."""
    before_fine_tuning = Snapshot(model)
    finished, shots_only, members = [], [], []
    for member, seed in enumerate(range(request.seed, request.seed + request.ensemble)):
        before_fine_tuning.restore()
        which = f" (member {member + 1} of {request.ensemble})" if request.ensemble > 1 else ""
        with EpochBar(console, f"fine-tuning on {plural(len(shots), 'image')}{which}", epochs) as bar:
            recipe = fine_tune(model, images[shots], labels[shots], len(classes), epochs, request.learning_rate, seed, callbacks=(bar,))
        if request.pseudo_labels:
            shots_only.append(Snapshot(model))
            recipe["pseudo_labels"] = self_train(
                model, before_fine_tuning, images, labels, shots, rest, classes, epochs, request, seed, console
            )
        finished.append(Snapshot(model))
        members.append(recipe)
    recipe = members[0]
    if request.ensemble > 1:
        recipe["ensemble"] = [
            {"seed": request.seed + i, "final_loss": m["final_loss"], "pseudo_labels_correct": m.get("pseudo_labels", {}).get("correct")}
            for i, m in enumerate(members)
        ]
    return finished, shots_only, recipe


# what a user can do instead when an earlier row of the scores beat the adapted model (the last row)
BETTER_WITHOUT = {
    "information maximized": "the label-free step alone did better: score or predict with the parent and --adapt-im "
    "(and the same --classes and --tta) instead",
    "BatchNorm recomputed": "the label-free step alone did better: score or predict with the parent and --adapt-bn "
    "(and the same --classes and --tta) instead",
    "fine-tuned on the shots": "the fine-tuning without --pseudo-labels did better: run `bcauto adapt` again without it",
}


def shortfall(rows: list[tuple[str, dict[str, Any]]]) -> str | None:
    """The warning to give when the adapted model (the last row) gets fewer of the kept-out images right than an
    earlier row, at a lower macro-F1 too: with a few dozen shots a fine-tuning can end below where it started, and
    the adapted model would otherwise be used as if it were the better one. None when it does at least as well
    (as many images right at a macro-F1 lower in the fourth decimal is not a shortfall)."""
    if len(rows) < 2:
        return None
    *earlier, (_, last) = rows

    def right(scores: dict[str, Any]) -> int:
        return round(scores["accuracy"] * scores["images"])

    name, best = max(earlier, key=lambda row: (right(row[1]), row[1]["macro_f1"]))
    fewer = right(best) - right(last)
    if fewer <= 0 or last["macro_f1"] >= best["macro_f1"]:
        return None
    instead = BETTER_WITHOUT.get(name, "the model as it was did better: keep using the parent")
    return (
        f"the adapted model gets {fewer} fewer of the {last['images']} images kept out right than the row '{name}' "
        f"(accuracy {last['accuracy']:.3f} against {best['accuracy']:.3f}, macro-F1 {last['macro_f1']:.3f} against "
        f"{best['macro_f1']:.3f}; the intervals say how much of that the draw of shots can explain): {instead}, "
        "or label more cells and adapt again"
    )


def lineage(
    request: AdaptRequest, parent: Bundle, data, images: int, classes, shots, counts, scored_images: int, pool, rows, recipe
) -> dict[str, Any]:
    """The adapted model's ``adapted`` record: its parent, the lab's data, the shots, the scores of every step
    (``rows``: the parent first, the adapted model last) and the recipe."""
    adapted: dict[str, Any] = {
        "parent": str(parent.path),
        "parent_mlflow": parent.info.get("mlflow"),
        "data": data.source,
        "fingerprint": data.fingerprint(),
        "images": images,
        "shots": len(shots) if pool else int(request.shots),
        "per_class": bool(request.per_class),
        "choose_shots": "every image of --data (--pool)" if pool else request.choose_shots,
        "shot_choice": "the lab's own: every image of --data" if pool else SHOT_CHOICES[request.choose_shots],
        "seed": int(request.seed),
        "shot_indices": shots.tolist(),
        "shot_counts": counts,
        "classes": list(classes) if len(classes) < len(parent.class_names) else "all the parent's",
        "scored_images": scored_images,
        "tta": TTA_DESCRIPTION if request.tta else "none",
        "before": rows[0][1] if rows else None,
        "after": rows[-1][1] if rows else None,
        "recipe": recipe,
    }
    if pool:
        adapted["pool"] = pool
    warning = shortfall(rows)
    if warning:
        adapted["warning"] = warning
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
    return adapted


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
    label = f"fine-tuning again on {plural(len(shots), 'shot')} and {plural(len(chosen), 'pseudo-labelled image')}"
    with EpochBar(console, label, epochs) as bar:
        second = fine_tune(
            model,
            np.concatenate([images[shots], images[chosen]]),
            np.concatenate([labels[shots], predicted]),
            len(classes),
            epochs,
            request.learning_rate,
            seed,
            callbacks=(bar,),
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
    if adapted.get("warning"):  # findable in the MLflow UI: tags."bcauto.warning" != ""
        tags["bcauto.warning"] = adapted["warning"]
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
