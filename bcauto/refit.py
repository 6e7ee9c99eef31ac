"""``bcauto refit``: the best configuration of a study (or its top K, as an ensemble) trained again on all of the
study's data (training plus validation split), saved as a self-contained model directory, logged to MLflow and
registered in its model registry.

What each member trains is read from the Optuna study (:mod:`bcauto.refit_trials`), trained by the search's own
:class:`~bcauto.training.Trainer` without validation data (:func:`~bcauto.training.train_fixed`), written as a model
directory (:mod:`bcauto.refit_bundle`) and then, best effort, logged and registered (:mod:`bcauto.refit_tracking`):
with tracking off or unreachable the model directory is complete all the same.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna
from rich.markup import escape

from bcauto.config import StudyConfig
from bcauto.data import Dataset
from bcauto.errors import BcautoError
from bcauto.progress import EpochBar
from bcauto.refit_bundle import model_info
from bcauto.refit_checkpoints import MemberCheckpoint, partial_dir
from bcauto.refit_tracking import (
    REFIT_ROLE,
    log_refit,
    mlflow_messages_silenced,
    study_run_params,
    trial_metrics,
)
from bcauto.refit_trials import (
    EPOCH_MODES,
    PhaseSchedule,
    cosine_schedule,
    describe_schedule,
    phase_schedule,
    plan_from_trial,
    select_trials,
)
from bcauto.search_space import plan_params
from bcauto.training import TrainResult, TrainSettings, TrialPlan, train_fixed
from bcauto.uris import redact_uri

__all__ = [
    "EPOCH_MODES",
    "REFIT_ROLE",
    "PhaseSchedule",
    "RefitRequest",
    "RefitResult",
    "cosine_schedule",
    "describe_schedule",
    "load_study_data",
    "log_refit",
    "mlflow_messages_silenced",
    "phase_schedule",
    "plan_from_trial",
    "refit",
    "select_trials",
    "study_run_params",
    "train_member",
    "trial_metrics",
]


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
    epochs: str | int | None = None  # None: the study file's [train] refit_epochs, else "best"
    image_size: int | None = None  # None: the study file's [train] refit_image_size, else the size searched at
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


def study_config(study: optuna.Study, given: str | None, console) -> tuple[str, StudyConfig, list[str]]:
    """The study file to refit with (``given``, else the one the search ran with), its config, and how it differs
    from the copy the search recorded (:func:`~bcauto.config.config_changes`), said on the console: an edit since
    the search (a longer ``refit_epochs``, say) may be meant, so it is not refused; each trial's plan is checked
    against the file all the same (:func:`plan_from_trial`). When the search's own file is gone (moved, or the
    refit runs from another folder), the recorded copy is used and that is said too."""
    from bcauto.config import config_changes, config_from_record, load_study

    recorded = study.user_attrs.get("study_config")
    study_file = given or study.user_attrs.get("study_file")
    if not study_file:
        raise BcautoError(f"study {study.study_name!r} does not record its study file; pass --study")
    if not given and recorded and not Path(study_file).is_file():
        console.print(
            f"[cyan]note:[/] the study file {escape(study_file)} is not there; refitting with the copy of it recorded "
            "with the study when it searched"
        )
        return study_file, config_from_record(recorded, study_file), []
    cfg = load_study(study_file)
    changes = config_changes(recorded, cfg) if recorded else []
    if changes:
        console.print(
            f"[cyan]note:[/] {escape(study_file)} differs from the file the study searched with: {escape('; '.join(changes))}. "
            "The refit uses it as it is now; each trial's plan is still checked against the one it ran"
        )
    return study_file, cfg, changes


def load_study_data(
    spec: str | None, params: dict[str, Any], cfg: StudyConfig, components, study_name: str, image_size: int | None = None
) -> Dataset:
    """The data the study searched on (``spec`` overrides where it is read from; cleaned again by the audit where
    the study had ``[data] clean``), refused when its fingerprint differs from the one the study logged; read again
    at ``image_size`` when that differs from the size the study searched at (the same images, checked at the
    searched size first, and the same ones left out by the audit there: run again at another size, the audit
    could flag others)."""
    from bcauto.data.sources import load_data

    source = spec or params.get("data.source")
    if not source:
        raise BcautoError(f"study {study_name!r} logged no data source; pass --data")
    searched_size = searched_image_size(params, cfg)
    seed = int(params.get("study_seed", cfg.study.seed))
    # "skip" reproduces either setting of the search: with "stop" every image decoded, with "skip" the same ones are left out
    options = {"seed": seed, "synthetic_size": cfg.data.synthetic_size, "on_bad_image": "skip"}
    data = load_data(source, searched_size, components, options)
    kept = np.arange(len(data.labels))
    if str(params.get("data.clean", cfg.data.clean)) == "True":  # the search removed the audit's flags; so does the refit
        from bcauto.audit import audit_and_clean

        data, removed, _ = audit_and_clean(data)
        kept = np.setdiff1d(kept, [entry["index"] for entry in removed])
    expected = params.get("data.fingerprint")
    if expected and data.fingerprint() != str(expected):
        given = f"--data {spec!r}" if spec else f"the study's data source {source!r}"
        raise BcautoError(
            f"{given} now holds other data (fingerprint {data.fingerprint()}) than study {study_name!r} searched on "
            f"(fingerprint {expected}, source {params.get('data.source')!r}); refit needs the same images, "
            "pass --data with the data the search used"
        )
    if image_size is not None and image_size != searched_size:
        resized = load_data(source, image_size, components, options)
        new_notes = tuple(note for note in resized.notes if note not in data.notes)  # e.g. images enlarged to this size
        return replace(resized.subset(kept), notes=data.notes + new_notes)
    return data


def searched_image_size(params: dict[str, Any], cfg: StudyConfig) -> int:
    """The image side the study searched at: as its trials logged it, else the study file's."""
    return int(params.get("image_size", cfg.data.image_size))


def train_member(
    plan: TrialPlan, settings: TrainSettings, data: Dataset, schedule: PhaseSchedule, callbacks=(), backup_dir: Path | None = None
) -> TrainResult:
    """One member: the trial's phases on all the data, for the schedule's epochs at its learning rates."""
    return train_fixed(
        plan, settings, data, schedule.epochs, schedule.learning_rates, [*callbacks, keras.callbacks.TerminateOnNaN()], backup_dir
    )


def trained_member(heading: str, trial, plan, settings, data, schedule, checkpoint: MemberCheckpoint, client, console) -> dict[str, Any]:
    """One member's entry of the model's info: kept from an interrupted refit that finished it, else trained (going
    on from its backup where there is one) and kept in its checkpoint folder."""
    from bcauto.objective import start_fresh

    finished = checkpoint.finished()
    if finished is not None:
        console.print(f"{heading}: trained before the interruption, kept in {escape(str(checkpoint.folder))}")
        return finished
    resuming = checkpoint.begin()
    console.print(heading + (f"; going on from its backup in {escape(str(checkpoint.backup_dir))}" if resuming else ""))
    start_fresh()
    with EpochBar(console, f"trial {trial.number}", sum(schedule.epochs.values())) as bar:
        result = train_member(plan, settings, data, schedule, [bar], checkpoint.backup_dir)
    member = {
        "trial": trial.number,
        "values": list(trial.values),
        "params": plan_params(plan, settings),
        "seed": settings.seed,
        "epochs": schedule.epochs,
        "epochs_source": schedule.source,
        "trial_phase_epochs": trial.user_attrs.get("phase_epochs"),
        "learning_rates": result.learning_rates,
        "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
        "metrics": trial_metrics(client, trial),
    }
    if result.resumed_epochs:
        # the epochs after it saw their batches in a fresh start's order: not bit-identical to an uninterrupted refit
        member["resumed_after_epoch"] = result.resumed_epochs
    checkpoint.finish(result.model, member)
    return json.loads(json.dumps(member, default=str))


def refit(request: RefitRequest, components, console) -> RefitResult:
    """Train the selected trial(s) on all the study's data and save, log and register the model."""
    from bcauto.bundle import ensemble, load_bundle, register_layers, save_bundle, update_info
    from bcauto.objective import model_requirements, start_fresh
    from bcauto.study import configure_precision, settings_from
    from bcauto.tracking import Tracker

    study = _load_study(request.study_name, request.storage)
    chosen = select_trials(study, request.top)
    study_file, cfg, changes = study_config(study, request.study_file, console)
    mode = request.epochs if request.epochs is not None else cfg.train.refit_epochs or "best"
    stretch_to = mode if isinstance(mode, int) else None
    schedules = [phase_schedule(trial, "best" if stretch_to is not None else str(mode)) for trial in chosen]
    tracker = Tracker(request.tracking_uri, experiment=study.study_name)
    client = tracker.client if tracker.available else None
    params = study_run_params(client, study, chosen[0])
    searched_size = searched_image_size(params, cfg)
    refit_size = request.image_size or cfg.train.refit_image_size or None
    data = load_study_data(request.data, params, cfg, components, study.study_name, refit_size)
    resized = ""
    if data.image_size != searched_size:
        resized = f" at {data.image_size}x{data.image_size} (searched at {searched_size}x{searched_size})"
    for note in data.notes:
        console.print(f"[cyan]note:[/] {escape(note)}")
    fingerprint = data.fingerprint()
    console.print(
        f"refit data: {data.source}: {len(data.labels)} images{resized} (training and validation split together), fingerprint {fingerprint}"
    )
    logged_batch = params.get("batch_size")
    if logged_batch is not None and int(logged_batch) != cfg.train.batch_size:
        raise BcautoError(
            f"{study_file}: [train] batch_size = {cfg.train.batch_size}, but the search ran with {logged_batch}; "
            "pass the study file the search ran with (--study)"
        )
    precision = configure_precision(cfg, request.has_gpu)
    register_layers()
    out = Path(request.out or f"models/{study.study_name}")
    partial = partial_dir(out)
    members, member_files = [], []
    try:
        for k, (trial, schedule) in enumerate(zip(chosen, schedules), start=1):
            seed = int(trial.user_attrs.get("params", {}).get("seed", cfg.study.seed + trial.number))
            settings = replace(settings_from(cfg, seed, request.has_gpu), seed=seed)
            outside: list[str] = []
            plan = plan_from_trial(trial, cfg, components, settings, outside)
            if outside:
                console.print(
                    f"[cyan]note:[/] trial {trial.number}'s {escape(', '.join(outside))} is outside what {escape(study_file)} "
                    "searches now; the refit trains the trial's value"
                )
            if stretch_to is not None:
                schedule = cosine_schedule(schedule, stretch_to, {"head": plan.lr_head, "finetune": plan.lr_finetune})
            heading = (
                f"[{k}/{len(chosen)}] trial {trial.number}: {plan.backbone.name} {plan.augmentation.name} "
                f"{plan.imbalance.name}, {describe_schedule(schedule)}"
            )
            checkpoint = MemberCheckpoint(
                partial / f"trial_{trial.number}",
                {
                    "data": fingerprint,
                    "image size": data.image_size,
                    "parameters": plan_params(plan, settings),
                    "epochs": schedule.epochs,
                    "learning rates": schedule.learning_rates,
                },
            )
            members.append(trained_member(heading, trial, plan, settings, data, schedule, checkpoint, client, console))
            member_files.append(checkpoint.model_file)
    except KeyboardInterrupt:
        console.print(
            f"[yellow]interrupted:[/] the epochs trained so far are kept in {escape(str(partial))}; "
            "run the same command again to go on from there"
        )
        raise
    start_fresh()
    loaded = [keras.saving.load_model(p, compile=False, safe_mode=True) for p in member_files]
    model = ensemble(loaded, name=f"bcauto_{study.study_name}".replace("-", "_"))
    info = model_info(study, study_file, cfg, data, members, chosen, precision, components)
    if changes:
        info["study_file_changes"] = changes
    if data.image_size != searched_size:
        info["searched_image_size"] = searched_size
    save_bundle(model, info, out)
    load_bundle(out)  # what was written must load with safe_mode=True
    shutil.rmtree(partial)
    run_id, name, version = log_refit(tracker, study, model, out, info, request.register, model_requirements())
    if run_id:
        info["mlflow"] = {"run_id": run_id, "registered_model": name, "version": version}
        update_info(out, info)
    for problem in tracker.problems:
        console.print(f"[yellow]warning:[/] {escape(problem)}")
    if not run_id:
        console.print(
            f"[yellow]MLflow tracking skipped[/] ({escape(redact_uri(request.tracking_uri))} could not be written): "
            f"no refit run was logged or registered; {escape(str(out))} is complete without it"
        )
    for warning in info.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    return RefitResult(out, run_id, name, version, info)
