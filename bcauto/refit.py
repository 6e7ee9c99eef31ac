"""``bcauto refit``: the best configuration of a study (or its top K, as an ensemble) trained again on all of the
study's data (training plus validation split), saved as a self-contained model directory, logged to MLflow and
registered in its model registry.

The plan of each trial is rebuilt by the search's own code (:func:`suggest_plan` on an
``optuna.trial.FixedTrial`` of the trial's parameters) and checked against the parameters the trial logged. There
is no validation set left to stop on, so each phase trains for the epochs the trial settled on: by default the
epoch whose weights the trial kept (early stopping restores the lowest validation loss; a fine-tune that never
beat the frozen model is dropped), read from the trial's MLflow curves, with the learning rate the trial had at
each of those epochs. Without those curves, or with ``epochs="trained"``, the phases run for every epoch the
trial trained (its ``phase_epochs``) at a constant learning rate.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna
from rich.markup import escape

from bcauto.config import StudyConfig
from bcauto.data import Dataset
from bcauto.errors import BcautoError
from bcauto.search_space import plan_params, suggest_plan
from bcauto.training import TrainSettings, Trainer, TrialPlan, batches, compile_model

REFIT_ROLE = "refit"
EPOCH_MODES = ("best", "trained")


def plan_from_trial(trial: optuna.trial.FrozenTrial, cfg: StudyConfig, components, settings: TrainSettings | None = None) -> TrialPlan:
    """The plan ``trial`` ran, rebuilt by :func:`suggest_plan` from the trial's parameters.

    Refused (BcautoError) when the study file no longer yields that plan: a parameter it does not ask for, one
    the trial does not have, or a logged parameter that now comes out different.
    """
    if settings is None:
        from bcauto.study import settings_from

        settings = settings_from(cfg, cfg.study.seed, has_gpu=False)
    fixed = optuna.trial.FixedTrial(dict(trial.params), number=trial.number)
    where = f"trial {trial.number}: {cfg.path}"
    try:
        plan = suggest_plan(fixed, cfg, components, settings)
    except ValueError as exc:  # FixedTrial: a parameter the trial never had
        raise BcautoError(f"{where} asks for a parameter the trial does not have ({exc}); the study file changed since "
                          "the search; pass the study file the search ran with (--study)") from None
    unused = sorted(set(trial.params) - set(fixed.params))
    if unused:
        raise BcautoError(f"{where} no longer asks for the trial's parameter(s) {', '.join(unused)}; the study file changed "
                          "since the search; pass the study file the search ran with (--study)")
    logged = trial.user_attrs.get("params", {})
    differing = [f"{key}: logged {logged[key]!r}, now {value!r}" for key, value in plan_params(plan, settings).items()
                 if key in logged and not _same(logged[key], value)]
    if differing:
        raise BcautoError(f"{where} gives another plan than the trial ran ({'; '.join(differing)}); pass the study file "
                          "the search ran with (--study)")
    return plan


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return str(a) == str(b)


def select_trials(study: optuna.Study, top: int) -> list[optuna.trial.FrozenTrial]:
    """The ``top`` best completed trials: by the objective, or for two objectives (clean, shifted) the Pareto front
    first, by the shifted score, then the other trials by the shifted score."""
    if top < 1:
        raise BcautoError(f"--top must be 1 or more, got {top}")
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if t.values]
    if len(study.directions) > 1:
        front = {t.number for t in study.best_trials}
        ranked = sorted(complete, key=lambda t: (t.number in front, t.values[-1]), reverse=True)
    else:
        ranked = sorted(complete, key=lambda t: t.values[0], reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)
    if len(ranked) < top:
        raise BcautoError(f"study {study.study_name!r} has {len(ranked)} completed trial(s); --top {top} needs {top}")
    return ranked[:top]


@dataclass
class PhaseSchedule:
    """Epochs of each phase, and the learning rate of each of those epochs (None: the plan's, constant)."""

    epochs: dict[str, int]
    learning_rates: dict[str, list[float] | None] = field(default_factory=dict)
    source: str = "phase_epochs"


def phase_schedule(trial: optuna.trial.FrozenTrial, curves: dict[str, dict[int, float]] | None, mode: str = "best") -> PhaseSchedule:
    """How long each phase of the refit trains, from the trial's ``phase_epochs`` and its per-epoch curves.

    ``curves`` maps ``val_loss`` and ``lr`` to {global epoch: value} (the trial's MLflow history). In ``best`` mode
    a phase ends at its lowest validation loss, the weights the trial kept; the fine-tune phase is dropped when it
    never went below the head phase's best, as the trial then kept the frozen model.
    """
    if mode not in EPOCH_MODES:
        raise BcautoError(f"--epochs must be one of {', '.join(EPOCH_MODES)}, got {mode!r}")
    trained = {k: int(v) for k, v in trial.user_attrs.get("phase_epochs", {}).items()}
    if not trained.get("head"):
        raise BcautoError(f"trial {trial.number} has no phase_epochs; it was not run by this version of bcauto")
    head, finetune = trained["head"], trained.get("finetune", 0)
    val_loss = (curves or {}).get("val_loss") or {}
    lrs = (curves or {}).get("lr") or {}
    steps = range(head + finetune)
    if mode == "trained" or any(step not in val_loss for step in steps):
        return PhaseSchedule({"head": head, "finetune": finetune}, {"head": None, "finetune": None}, "phase_epochs")
    head_losses = [val_loss[s] for s in range(head)]
    best_head = int(np.argmin(head_losses)) + 1
    best_finetune = 0
    if finetune:
        tune_losses = [val_loss[s] for s in range(head, head + finetune)]
        if min(tune_losses) <= min(head_losses):
            best_finetune = int(np.argmin(tune_losses)) + 1
    epochs = {"head": best_head, "finetune": best_finetune}
    if any(step not in lrs for step in steps):
        return PhaseSchedule(epochs, {"head": None, "finetune": None}, "best val_loss epoch (constant learning rate)")
    # the lr logged at the end of an epoch is the one the next epoch of the same phase trains with
    rates = {"head": [None] + [lrs[s] for s in range(best_head - 1)],
             "finetune": [None] + [lrs[head + s] for s in range(best_finetune - 1)]}
    return PhaseSchedule(epochs, rates, "best val_loss epoch, learning rates replayed")


def describe_schedule(schedule: PhaseSchedule) -> str:
    """The epochs a member trains, in words: "epochs: head 12, fine-tuning 3 (best val_loss epoch, ...)"."""
    source = "as the trial trained" if schedule.source == "phase_epochs" else schedule.source
    return f"epochs: head {schedule.epochs.get('head', 0)}, fine-tuning {schedule.epochs.get('finetune', 0)} ({source})"


@contextlib.contextmanager
def mlflow_messages_silenced():
    """MLflow prints "Successfully registered model ..." and "Created version ..." to its own stream, beside bcauto's
    output; bcauto says what it registered in one line of its own. The stream is off only for this call."""
    from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM

    before = MLFLOW_LOGGING_STREAM.enabled
    MLFLOW_LOGGING_STREAM.enabled = False
    try:
        yield
    finally:
        MLFLOW_LOGGING_STREAM.enabled = before


def trial_curves(client, run_id: str | None) -> dict[str, dict[int, float]] | None:
    """The trial's per-epoch ``val_loss`` and ``lr`` from MLflow, or None when they cannot be read."""
    if client is None or not run_id:
        return None
    try:
        return {key: {m.step: m.value for m in client.get_metric_history(run_id, key)} for key in ("val_loss", "lr")}
    except Exception:
        return None


class RefitTrainer(Trainer):
    """The trial's phases on all the data: no validation set, so no early stopping and no plateau schedule."""

    def __init__(self, plan: TrialPlan, settings: TrainSettings, data: Dataset, callbacks=()):
        super().__init__(plan, settings, data, None, list(callbacks))
        self.rates: list[float | None] | None = None

    def fit(self, model, learning_rate: float, epochs: int, train_ds, val_ds=None, steps_per_epoch=None) -> None:
        compile_model(model, learning_rate, self.settings.jit_compile, self.plan.loss, self.plan.label_smoothing)
        schedule = [ReplayRates(self.done, learning_rate, self.rates)] if self.rates else []
        model.fit(train_ds, initial_epoch=self.done, epochs=self.done + epochs, steps_per_epoch=steps_per_epoch,
                  class_weight=self.imbalance.class_weight, shuffle=False, verbose=0,
                  callbacks=[*schedule, *self.callbacks, keras.callbacks.TerminateOnNaN()])

    def image_batches(self):
        s, batch_fn = self.settings, None
        if self.plan.augmentation.mixes_labels:
            batch_fn = self.plan.augmentation.build_batch(self.plan.augmentation_params, self.num_classes, s.seed)
        idx = self.train_index
        return batches(self.train_data.images[idx], self.train_data.labels[idx], self.num_classes, s.batch_size, s.seed, batch_fn), None

    def run(self, schedule: PhaseSchedule, pretrained: bool):
        """Both phases as the trial ran them; returns the trained classifier."""
        plan, parts = self.plan, self.parts
        parts.backbone.trainable = not pretrained  # from scratch: one phase training everything
        self.rates = schedule.learning_rates.get("head")
        self.fit_full(plan.lr_head, schedule.epochs["head"])
        if pretrained and schedule.epochs["finetune"] > 0:
            from bcauto.model import set_trainable_blocks

            set_trainable_blocks(plan.backbone, parts.backbone, plan.unfreeze_blocks)
            self.rates = schedule.learning_rates.get("finetune")
            self.fit_full(plan.lr_finetune, schedule.epochs["finetune"])
        return parts.model


class ReplayRates(keras.callbacks.Callback):
    """Sets the learning rate of each epoch of a phase from a list (None entries keep the rate as it is)."""

    def __init__(self, start: int, first: float, rates: list[float | None]):
        super().__init__()
        self.start, self.first, self.rates = start, first, rates

    def on_epoch_begin(self, epoch, logs=None):
        i = epoch - self.start
        if 0 <= i < len(self.rates) and self.rates[i] is not None:
            self.model.optimizer.learning_rate = float(self.rates[i])


@dataclass
class RefitRequest:
    """A resolved ``bcauto refit`` invocation."""

    study_name: str | None
    storage: str
    tracking_uri: str
    top: int = 1
    data: str | None = None
    out: str | None = None
    study_file: str | None = None
    epochs: str = "best"
    has_gpu: bool = False
    register: bool = True


@dataclass
class RefitResult:
    path: Path
    run_id: str | None
    model_name: str | None
    model_version: int | None
    info: dict[str, Any]


def _load_study(name: str | None, storage: str) -> optuna.Study:
    from bcauto.stores import load_existing_study

    return load_existing_study(name, storage)


def study_run_params(client, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The study's parent-run parameters (data source, fingerprint, image size, seed); the trial's copy of them
    when MLflow cannot be read."""
    parent = study.user_attrs.get("mlflow_parent_run_id")
    if client is not None and parent:
        try:
            return dict(client.get_run(parent).data.params)
        except Exception:
            pass
    return {k: v for k, v in trial.user_attrs.get("params", {}).items()}


def load_study_data(spec: str | None, params: dict[str, Any], cfg: StudyConfig, components, study_name: str) -> Dataset:
    """The data the study searched on (``spec`` overrides where it is read from; cleaned again by the audit where
    the study had ``[data] clean``), refused when its fingerprint differs from the one the study logged."""
    from bcauto.data.sources import load_data

    source = spec or params.get("data.source")
    if not source:
        raise BcautoError(f"study {study_name!r} logged no data source; pass --data")
    image_size = int(params.get("image_size", cfg.data.image_size))
    seed = int(params.get("study_seed", cfg.study.seed))
    # "skip" reproduces either setting of the search: with "stop" every image decoded, with "skip" the same ones are left out
    options = {"seed": seed, "synthetic_size": cfg.data.synthetic_size, "on_bad_image": "skip"}
    data = load_data(source, image_size, components, options)
    if str(params.get("data.clean", cfg.data.clean)) == "True":  # the search removed the audit's flags; so does the refit
        from bcauto.audit import audit_and_clean

        data, _, _ = audit_and_clean(data)
    expected = params.get("data.fingerprint")
    if expected and data.fingerprint() != str(expected):
        given = f"--data {spec!r}" if spec else f"the study's data source {source!r}"
        raise BcautoError(f"{given} now holds other data (fingerprint {data.fingerprint()}) than study {study_name!r} searched on "
                          f"(fingerprint {expected}, source {params.get('data.source')!r}); refit needs the same images, "
                          "pass --data with the data the search used")
    return data


def refit(request: RefitRequest, components, console) -> RefitResult:
    """Train the selected trial(s) on all the study's data and save, log and register the model."""
    from bcauto.bundle import ensemble, load_bundle, register_layers, save_bundle
    from bcauto.config import load_study
    from bcauto.objective import model_requirements, start_fresh
    from bcauto.study import configure_precision, environment_versions, plugin_versions, settings_from
    from bcauto.tracking import Tracker

    study = _load_study(request.study_name, request.storage)
    chosen = select_trials(study, request.top)
    study_file = request.study_file or study.user_attrs.get("study_file")
    if not study_file:
        raise BcautoError(f"study {study.study_name!r} does not record its study file; pass --study")
    cfg = load_study(study_file)
    tracker = Tracker(request.tracking_uri, experiment=study.study_name)
    client = tracker.client if tracker.available else None
    params = study_run_params(client, study, chosen[0])
    data = load_study_data(request.data, params, cfg, components, study.study_name)
    console.print(f"refit data: {data.source}: {len(data.labels)} images (training and validation split together), "
                  f"fingerprint {data.fingerprint()}")
    logged_batch = params.get("batch_size")
    if logged_batch is not None and int(logged_batch) != cfg.train.batch_size:
        raise BcautoError(f"{study_file}: [train] batch_size = {cfg.train.batch_size}, but the search ran with {logged_batch}; "
                          "pass the study file the search ran with (--study)")
    precision = configure_precision(cfg, request.has_gpu)
    register_layers()
    out = Path(request.out or f"models/{study.study_name}")
    members, member_files = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k, trial in enumerate(chosen, start=1):
            seed = int(trial.user_attrs.get("params", {}).get("seed", cfg.study.seed + trial.number))
            settings = replace(settings_from(cfg, seed, request.has_gpu), seed=seed)
            plan = plan_from_trial(trial, cfg, components, settings)
            schedule = phase_schedule(trial, trial_curves(client, trial.user_attrs.get("mlflow_run_id")), request.epochs)
            total = sum(schedule.epochs.values())
            console.print(f"[{k}/{len(chosen)}] trial {trial.number}: {plan.backbone.name} {plan.augmentation.name} "
                          f"{plan.imbalance.name}, {describe_schedule(schedule)}")
            start_fresh()
            with EpochBar(console, f"trial {trial.number}", total) as bar:
                trainer = RefitTrainer(plan, settings, data, [bar])
                model = trainer.run(schedule, plan.weights_for(settings) is not None)
            path = Path(tmp) / f"trial_{trial.number}.keras"
            model.save(path)
            member_files.append(path)
            members.append({
                "trial": trial.number, "values": list(trial.values), "params": plan_params(plan, settings), "seed": seed,
                "epochs": schedule.epochs, "epochs_source": schedule.source, "trial_phase_epochs": trial.user_attrs.get("phase_epochs"),
                "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"), "metrics": trial_metrics(client, trial),
            })
        start_fresh()
        loaded = [keras.saving.load_model(p, compile=False, safe_mode=True) for p in member_files]
        model = ensemble(loaded, name=f"bcauto_{study.study_name}".replace("-", "_"))
        info = {
            "class_names": list(data.class_names), "image_size": data.image_size,
            "input": "RGB images, pixel values 0-255 (uint8 or float), N x S x S x 3; the model scales them itself",
            "output": "class probabilities (softmax" + (", mean of the members'" if len(loaded) > 1 else "") + ")",
            "preprocessing": sorted({m["params"]["preprocessing"] for m in members}),
            "canonicalization": sorted({m["params"]["canonicalization"] for m in members}),
            "backbones": [m["params"]["backbone"] for m in members],
            "study": study.study_name, "study_file": str(study_file), "metric": cfg.study.metric,
            "trials": [m["trial"] for m in members], "ensemble": len(members) > 1, "members": members,
            "data": {"source": data.source, "fingerprint": data.fingerprint(), "images": int(len(data.labels)),
                     "class_counts": dict(zip(data.class_names, map(int, data.class_counts())))},
            "precision": precision, "bcauto": _bcauto_version(), "environment": environment_versions(),
            "plugins": plugin_versions(components),
        }
        # a member that learned nothing in the search is trained the same way here: say so in the model's info
        useless = [f"trial {t.number} of the search {t.user_attrs['prediction_problem']} This model is trained the same way."
                   for t in chosen if t.user_attrs.get("prediction_problem")]
        if useless:
            info["warnings"] = useless
        save_bundle(model, info, out)
    load_bundle(out)  # what was written must load with safe_mode=True
    run_id, name, version = log_refit(tracker, study, model, out, info, request.register, model_requirements())
    if run_id:
        info["mlflow"] = {"run_id": run_id, "registered_model": name, "version": version}
        _update_info(out, info)
    for problem in tracker.problems:
        console.print(f"[yellow]warning:[/] {problem}")
    for warning in info.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    return RefitResult(out, run_id, name, version, info)


def _update_info(out: Path, info: dict) -> None:
    import json

    from bcauto.bundle import BUNDLE_FORMAT, INFO_FILE

    (out / INFO_FILE).write_text(json.dumps({"format": BUNDLE_FORMAT, **info}, indent=2, default=str) + "\n", encoding="utf-8")


def _bcauto_version() -> str:
    from bcauto import __version__

    return __version__


def trial_metrics(client, trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """The trial's validation scores from the search (clean, and shifted where it was scored)."""
    metrics = {k: trial.user_attrs[k] for k in ("val_accuracy", "val_macro_f1") if k in trial.user_attrs}
    run_id = trial.user_attrs.get("mlflow_run_id")
    if client is not None and run_id:
        try:
            logged = client.get_run(run_id).data.metrics
            metrics.update({k: v for k, v in logged.items() if k.startswith(("val_shift", "final_val_", "shift."))})
        except Exception:
            pass
    return metrics


def log_refit(tracker, study: optuna.Study, model, out: Path, info: dict, register: bool,
              requirements: list[str]) -> tuple[str | None, str | None, int | None]:
    """A new run (tag ``bcauto.role = refit``) in the study's experiment, under the study's parent run, with the model
    directory as artifacts and the model logged and registered as ``bcauto-<study>``; returns (run id, model name,
    version)."""
    trials = ",".join(str(t) for t in info["trials"])
    tags = {"bcauto.study": study.study_name, "bcauto.role": REFIT_ROLE, "bcauto.trials": trials,
            "bcauto.data_fingerprint": info["data"]["fingerprint"]}
    run_name = f"refit {study.study_name} trial{'s' if ',' in trials else ''} {trials}"
    run_id = tracker.start_run(study.user_attrs.get("mlflow_parent_run_id") or None, run_name, tags)
    if not run_id:
        return None, None, None
    tracker.log_params(run_id, {"trials": trials, "ensemble": info["ensemble"], "data.source": info["data"]["source"],
                                "data.fingerprint": info["data"]["fingerprint"], "images": info["data"]["images"],
                                **{f"member{i}.{k}": v for i, m in enumerate(info["members"]) for k, v in
                                   {"trial": m["trial"], "epochs.head": m["epochs"]["head"], "epochs.finetune": m["epochs"]["finetune"]}.items()}})
    for i, member in enumerate(info["members"]):
        tracker.log_metrics(run_id, {f"member{i}.search.{k}": v for k, v in member["metrics"].items() if k.startswith(("val_", "final_val_"))})
    from bcauto.bundle import INFO_FILE, MODEL_FILE

    tracker.log_artifact(run_id, out / INFO_FILE, "bundle")
    tracker.log_artifact(run_id, out / MODEL_FILE, "bundle")
    name = f"bcauto-{study.study_name}"
    version = None

    def log_model():
        import mlflow
        import mlflow.keras

        mlflow.set_tracking_uri(tracker.tracking_uri)
        with mlflow.start_run(run_id=run_id), mlflow_messages_silenced():
            logged = mlflow.keras.log_model(model, name="model", pip_requirements=requirements,
                                            registered_model_name=name if register else None)
        return getattr(logged, "registered_model_version", None)

    version = tracker._guard("log and register the model", log_model)
    tracker.finish(run_id, "FINISHED")
    return run_id, name if register else None, version


class EpochBar:
    """A rich progress bar over one member's epochs (a Keras callback)."""

    def __init__(self, console, label: str, total: int):
        from bcauto.progress import transient_progress

        self.progress = transient_progress(console)
        self.task = self.progress.add_task(label, total=max(total, 1))
        self.callback = _bar_callback(self)

    def __enter__(self):
        self.progress.start()
        return self.callback

    def __exit__(self, *exc):
        self.progress.stop()


def _bar_callback(bar: EpochBar):
    class Advance(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            loss = (logs or {}).get("loss")
            bar.progress.update(bar.task, advance=1, info=f"loss {loss:.4f}" if loss is not None else "")

    return Advance()
