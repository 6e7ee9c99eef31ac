"""The Optuna study: storage, sampler, pruner, and the search loop that ties data, trials and tracking."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, replace
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from rich.console import Console
from rich.markup import escape

from bcauto import __version__
from bcauto.config import StudyConfig, check_components, config_changes, recorded_config
from bcauto.data.dataset import Dataset
from bcauto.data.split import Split, hold_out_domain, stratified_split
from bcauto.errors import BcautoError
from bcauto.objective import Objective, SearchContext
from bcauto.plugins import Components
from bcauto.progress import SearchProgress, leaderboard, ranked_trials
from bcauto.recovery import close_runs_of_failed_trials, failure_streak, recover
from bcauto.shift import shifted_copy
from bcauto.stores import make_storage
from bcauto.study_report import log_study_report
from bcauto.supervisor import Supervisor
from bcauto.tracking import Tracker
from bcauto.training import TrainSettings
from bcauto.uris import check_stores, redact_uri
from bcauto.worker import WorkerJob, save_split_data

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def make_sampler(cfg: StudyConfig, seed: int) -> optuna.samplers.BaseSampler:
    name = cfg.study.sampler
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2" or len(cfg.directions) > 1:
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=cfg.study.startup_trials)


# far apart, so that the seeds of one run's workers (seed + 1000 * restarts + slot) never meet the next run's
RESUME_SEED_STRIDE = 100_003


def continue_sampling(study: optuna.Study, cfg: StudyConfig, seed: int) -> None:
    """Seed the study's sampler from ``seed`` and the number of trials the study already holds, so a resumed
    study draws configurations it has not tried instead of replaying its first ones."""
    study.sampler = make_sampler(cfg, seed + RESUME_SEED_STRIDE * len(study.get_trials(deepcopy=False)))


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    name, warmup = cfg.study.pruner, cfg.study.pruner_warmup_epochs
    if len(cfg.directions) > 1:  # Optuna prunes single-objective studies only
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, warmup))
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, warmup))
    return optuna.pruners.NopPruner()


def switch(value: str, has_gpu: bool) -> bool:
    """An ``auto | on | off`` study setting: auto means on where a GPU is present."""
    return value == "on" or (value == "auto" and has_gpu)


def configure_precision(cfg: StudyConfig, has_gpu: bool) -> str:
    """Mixed float16 where it pays (GPU tensor cores), float32 elsewhere; returns the policy name."""
    import keras

    policy = "mixed_float16" if switch(cfg.train.mixed_precision, has_gpu) else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def settings_from(cfg: StudyConfig, seed: int, has_gpu: bool, cache_dir: str | None = None) -> TrainSettings:
    t = cfg.train
    jit = switch(t.xla, has_gpu)
    return TrainSettings(
        cache_dir=cache_dir if t.feature_cache else None,
        augmented_views=t.augmented_views,
        activation_cache_gb=float(t.activation_cache_gb),
        batch_size=t.batch_size,
        head_epochs=t.head_epochs,
        finetune_epochs=t.finetune_epochs,
        patience=t.patience,
        lr_patience=t.lr_patience,
        lr_factor=t.lr_factor,
        weights=None if t.weights == "none" else t.weights,
        seed=seed,
        jit_compile=jit,
    )


def plugin_versions(components: Components) -> dict[str, str]:
    packages = {provider.package: provider.version for registry in components.by_kind().values() for _, _, provider in registry}
    return dict(sorted(packages.items()))


def environment_versions() -> dict[str, str]:
    names = ("tensorflow", "keras", "optuna", "mlflow", "scikit-learn", "numpy")
    found = {}
    for name in names:
        try:
            found[name] = dist_version(name)
        except Exception:
            pass
    return {"python": platform.python_version(), **found}


@dataclass
class SearchRequest:
    """A resolved ``bcauto search`` invocation."""

    cfg: StudyConfig
    data: Dataset
    study_name: str
    trials: int
    storage: str
    tracking_uri: str
    seed: int
    timeout: float | None
    has_gpu: bool = False
    work_dir: str = ".bcauto"
    workers: int = 1
    gpus: list[str] | None = None
    worker_memory_gb: float = 0.0

    @property
    def cache_dir(self) -> str | None:
        return str(Path(self.work_dir) / "cache") if self.cfg.train.feature_cache else None


def finished_count(study: optuna.Study) -> int:
    return sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))


def check_storage_for_workers(request: SearchRequest) -> None:
    if request.workers > 1 and request.storage.startswith("sqlite"):
        raise BcautoError(
            f"--workers {request.workers} needs a storage several processes can share; SQLite ({redact_uri(request.storage)}) "
            "is not one. Use --storage journal:optuna.journal on one machine, or --storage postgresql://... (see docs/scaling.md)"
        )


@dataclass
class PreparedData:
    """The study's data after the split, the shifted copy of its validation part, and, for data from several
    sources, the domain held out of training (``domain_val``, named ``domain``)."""

    train: Dataset
    val: Dataset
    split_fingerprint: str
    data_fingerprint: str
    shifted: Dataset | None = None
    shift_tags: Any = None
    removed: list[dict] | None = None
    domain_val: Dataset | None = None
    domain: str | None = None


def prepare_data(request: SearchRequest, components: Components) -> PreparedData:
    """Split the data (duplicates on one side) and corrupt a copy of the validation part, once per study."""
    cfg, data = request.cfg, request.data
    removed: list[dict] = []
    if cfg.data.clean:  # the audit's flagged images never reach the split
        from bcauto.audit import audit_and_clean

        data, removed, _ = audit_and_clean(data)
    split, held, domain = split_by_domain(data, cfg, request.seed)
    train, val = data.subset(split.train), data.subset(split.val)
    shifted, tags = shifted_copy(val, components.shifts, request.seed) if cfg.study.shift_validation else (None, None)
    domain_val = data.subset(held) if held is not None else None
    return PreparedData(train, val, split.fingerprint(), data.fingerprint(), shifted, tags, removed, domain_val, domain)


def split_by_domain(data: Dataset, cfg: StudyConfig, seed: int) -> tuple[Split, np.ndarray | None, str | None]:
    """The train/validation split, and for data from several sources the held-out domain's indices and name.

    With several domains, one (``[data] validation_domain``, default the last source) never reaches training: the
    split is drawn from the others, and the held-out domain is a second validation set (``val_domain_macro_f1``),
    as another lab would be.
    """
    if data.domains is None or len(data.domain_names) < 2:
        if cfg.study.metric == "val_domain_macro_f1" or cfg.data.validation_domain:
            what = (
                "[study] metric = 'val_domain_macro_f1'"
                if cfg.study.metric == "val_domain_macro_f1"
                else f"[data] validation_domain = {cfg.data.validation_domain!r}"
            )
            raise BcautoError(
                f"{cfg.path}: {what} needs data from several sources, one per lab (--data LAB_A --data LAB_B); {data.source} is one"
            )
        return stratified_split(data, cfg.data.val_fraction, seed), None, None
    rest, held, domain = hold_out_domain(data, cfg.data.validation_domain or None)
    inner = stratified_split(data.subset(rest), cfg.data.val_fraction, seed)
    return Split(train=rest[inner.train], val=rest[inner.val]), held, domain


def open_study(request: SearchRequest) -> optuna.Study:
    """Create the study, or load it to resume; its objectives must match the study file's metric."""
    cfg = request.cfg
    study = optuna.create_study(
        study_name=request.study_name,
        storage=make_storage(request.storage),
        sampler=make_sampler(cfg, request.seed),
        pruner=make_pruner(cfg),
        directions=cfg.directions,
        load_if_exists=True,
    )
    if len(study.directions) != len(cfg.directions):
        raise BcautoError(
            f"study {request.study_name!r} in {redact_uri(request.storage)} has {len(study.directions)} objective(s), "
            f"but {cfg.path} [study] metric = {cfg.study.metric!r} needs {len(cfg.directions)}; use another --name"
        )
    continue_sampling(study, cfg, request.seed)
    return study


def check_same_data(study: optuna.Study, request: SearchRequest, prepared: PreparedData) -> None:
    """Refuse to resume a study on other data or another split than it searched on: its trials would be ranked
    together with the new ones as if they were comparable."""
    searched = study.user_attrs.get("data")
    if not searched:  # a new study, or one from before the data was recorded: the trials' own record
        logged = [t.user_attrs.get("params", {}) for t in study.get_trials(deepcopy=False)]
        logged = [p for p in logged if "data.fingerprint" in p]
        if not logged:
            return
        searched = {
            "source": logged[0].get("data.source"),
            "fingerprint": logged[0]["data.fingerprint"],
            "split": logged[0].get("split.fingerprint"),
        }
    now = {"source": request.data.source, "fingerprint": prepared.data_fingerprint, "split": prepared.split_fingerprint}
    if searched["fingerprint"] != now["fingerprint"] or searched.get("split") not in (None, now["split"]):
        what = "other data" if searched["fingerprint"] != now["fingerprint"] else "another split (another --seed or val_fraction)"
        raise BcautoError(
            f"study {request.study_name!r} in {redact_uri(request.storage)} was searched on {what}: "
            f"{searched['source']} (fingerprint {searched['fingerprint']}, split {searched.get('split')}), "
            f"not {now['source']} (fingerprint {now['fingerprint']}, split {now['split']}); its trials would be "
            "ranked with the new ones. Pass --name NEW_NAME to start a new study on this data"
        )


def describe_run(
    request: SearchRequest, prepared: PreparedData, settings: TrainSettings, precision: str, components: Components
) -> tuple[dict[str, Any], dict[str, str]]:
    """Study-wide params and tags, logged on the parent run and on every trial: enough to reproduce one."""
    cfg = request.cfg
    params = {
        "study": request.study_name,
        "study_file": str(cfg.path),
        "data.source": request.data.source,
        "data.fingerprint": prepared.data_fingerprint,
        "split.fingerprint": prepared.split_fingerprint,
        "image_size": request.data.image_size,
        "val_fraction": cfg.data.val_fraction,
        "batch_size": settings.batch_size,
        "head_epochs": settings.head_epochs,
        "finetune_epochs": settings.finetune_epochs,
        "patience": settings.patience,
        "sampler": cfg.study.sampler,
        "startup_trials": cfg.study.startup_trials,
        "pruner": cfg.study.pruner,
        "study_seed": request.seed,
        "metric": cfg.study.metric,
        "precision": precision,
        "xla": settings.jit_compile,
        "augmented_views": settings.augmented_views,
        "data.clean": request.cfg.data.clean,
        "data.removed": len(prepared.removed or []),
        "data.domains": ",".join(request.data.domain_names),
        "validation_domain": prepared.domain or "",
    }
    tags = {
        "bcauto.study": request.study_name,
        "bcauto.version": __version__,
        "bcauto.data_fingerprint": prepared.data_fingerprint,
        "bcauto.plugins": json.dumps(plugin_versions(components)),
        "bcauto.environment": json.dumps(environment_versions()),
        "bcauto.optuna_storage": redact_uri(request.storage),
    }
    return params, tags


def record_config(study: optuna.Study, cfg: StudyConfig, console: Console) -> None:
    """Keep the validated study file with the study (:func:`~bcauto.config.recorded_config`), for refit to compare
    with the file it reads later or to use when that file is gone; a study resumed under a file whose data, train or
    search tables changed says what changed, since its earlier trials ran without it."""
    recorded = study.user_attrs.get("study_config")
    changes = config_changes(recorded, cfg) if recorded else []
    if changes:
        console.print(
            f"[cyan]note:[/] {escape(str(cfg.path))} changed since this study last searched: {escape('; '.join(changes))}. "
            "The trials to come run with it as it is now; the earlier ones ran without these changes"
        )
    study.set_user_attr("study_config", recorded_config(cfg))


def run_search(request: SearchRequest, components: Components, console: Console) -> optuna.Study:
    """Run (or resume) a study until it holds ``request.trials`` finished trials.

    Raises KeyboardInterrupt, once the leaderboard is shown, when Ctrl-C or SIGTERM stopped it first."""
    cfg = request.cfg
    check_components(cfg, components)
    check_storage_for_workers(request)
    check_stores(request.storage, request.tracking_uri)
    prepared = prepare_data(request, components)
    settings = settings_from(cfg, request.seed, request.has_gpu, request.cache_dir)
    precision = configure_precision(cfg, request.has_gpu)
    study = open_study(request)
    check_same_data(study, request, prepared)
    tracker = Tracker(request.tracking_uri, experiment=request.study_name)
    failed, retried = recover(study, tracker)
    if failed or retried:
        console.print(
            f"resuming: trials {failed or '-'} were interrupted and are marked failed; parameters of trials {retried or '-'} are retried"
        )
    if finished_count(study) >= request.trials:
        console.print(
            f"study {request.study_name!r} already has {finished_count(study)} finished trials "
            f"(asked for {request.trials}); pass a larger --trials to add more"
        )
        return study

    params, tags = describe_run(request, prepared, settings, precision, components)
    parent = tracker.parent_run(request.study_name, params, tags)
    if prepared.removed:
        tracker.log_json(parent, prepared.removed, "cleaned_images.json")
        console.print(
            f"{escape('[data]')} clean: {len(prepared.removed)} flagged images removed before the split "
            "(cleaned_images.json on the parent run)"
        )
    study.set_user_attr("mlflow_parent_run_id", parent or "")
    study.set_user_attr("study_file", str(cfg.path))
    record_config(study, cfg, console)
    study.set_user_attr(
        "data", {"source": request.data.source, "fingerprint": prepared.data_fingerprint, "split": prepared.split_fingerprint}
    )
    context = SearchContext(
        cfg=cfg,
        components=components,
        train_data=prepared.train,
        val_data=prepared.val,
        settings=settings,
        tracker=tracker,
        parent_run_id=parent,
        run_tags=tags,
        run_params=params,
        shifted_val=prepared.shifted,
        shift_tags=prepared.shift_tags,
        domain_val=prepared.domain_val,
    )
    epochs = settings.head_epochs + settings.finetune_epochs
    interrupted = False
    with SearchProgress(console, request.trials, done=finished_count(study), epochs_per_trial=epochs) as progress:
        try:
            if request.workers == 0:
                optimize_here(study, replace(context, progress=progress), request)
            else:
                optimize_in_workers(study, context, request, prepared, precision, progress)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: the running trial is marked failed; run the same command to resume[/]")
            interrupted = True
    summarize(study, tracker, parent, console)
    for problem in tracker.problems:
        console.print(f"[yellow]warning:[/] {escape(problem)}")
    if interrupted:  # after the leaderboard; the exit status then says the study is not done
        raise KeyboardInterrupt
    return study


def optimize_here(study: optuna.Study, context: SearchContext, request: SearchRequest) -> None:
    """Trials in this process: no isolation, for debugging and notebooks (``--workers 0``)."""
    callbacks = [optuna.study.MaxTrialsCallback(request.trials, states=FINISHED), FailureLimit(request.cfg.study.max_failures)]
    study.optimize(
        Objective(context), n_trials=None, timeout=request.timeout or None, callbacks=callbacks, catch=(Exception,), gc_after_trial=True
    )


def optimize_in_workers(
    study: optuna.Study, context: SearchContext, request: SearchRequest, prepared: PreparedData, precision: str, progress: SearchProgress
) -> None:
    """Trials in supervised worker processes that map the prepared data from disk."""
    work = Path(request.work_dir)
    data_dir = save_split_data(
        prepared.train,
        prepared.val,
        work / "data" / f"{prepared.data_fingerprint}-{prepared.split_fingerprint}",
        prepared.shifted,
        prepared.shift_tags,
        prepared.domain_val,
    )
    job = WorkerJob(
        config=request.cfg.model_dump_json(),
        study_name=request.study_name,
        storage=request.storage,
        tracking_uri=request.tracking_uri,
        data_dir=str(data_dir),
        settings=asdict(context.settings),
        sampler_seed=request.seed,
        trials=request.trials,
        max_failures=request.cfg.study.max_failures,
        parent_run_id=context.parent_run_id,
        run_params=context.run_params,
        run_tags=context.run_tags,
        precision=precision,
        deadline=time.time() + request.timeout if request.timeout else None,
    )
    supervisor = Supervisor(
        job,
        work / "jobs" / request.study_name,
        request.workers,
        request.gpus,
        context.tracker,
        memory_limit_mb=request.worker_memory_gb * 1024,
    )
    supervisor.run(study, progress)


class FailureLimit:
    """Stops a study whose last ``limit`` trials all failed, and records why they failed."""

    def __init__(self, limit: int):
        self.limit = limit

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        reason = failure_streak(study, self.limit)
        if reason:
            study.set_user_attr("stopped_because", reason)
            study.stop()


def summarize(study: optuna.Study, tracker: Tracker, parent: str | None, console: Console) -> None:
    """Leaderboard in the terminal, study summary on the parent run."""
    close_runs_of_failed_trials(study, tracker)  # trials Optuna failed on a stopped heartbeat during this run
    ranked = ranked_trials(study)
    console.print(leaderboard(study) if ranked else f"study {study.study_name}: no completed trial among {len(study.trials)}")
    if study.user_attrs.get("stopped_because"):
        console.print(f"[red]study stopped:[/] {escape(study.user_attrs['stopped_because'])}")
    if ranked and ranked[0].user_attrs.get("prediction_problem"):
        console.print(f"[yellow]warning:[/] the best trial (#{ranked[0].number}) {escape(ranked[0].user_attrs['prediction_problem'])}")
    counts = {state.name.lower(): sum(t.state == state for t in study.trials) for state in optuna.trial.TrialState}
    tracker.log_metrics(parent, {f"trials_{k}": v for k, v in counts.items()})
    if ranked:
        rows = [
            {"trial": t.number, "values": t.values, "mlflow_run_id": t.user_attrs.get("mlflow_run_id"), **t.user_attrs.get("params", {})}
            for t in ranked
        ]
        tracker.log_json(parent, rows, "pareto_front.json" if len(study.directions) > 1 else "leaderboard.json")
        best = ranked[0]
        tracker.log_metrics(parent, {"best_value": best.values[0]})
        tracker.set_tags(parent, {"bcauto.best_trial": str(best.number), "bcauto.best_run_id": best.user_attrs.get("mlflow_run_id", "")})
    log_study_report(study, tracker, parent)
    tracker.finish(parent, "FINISHED")
