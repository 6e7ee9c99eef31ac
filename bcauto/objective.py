"""One Optuna trial as a list of named steps: plan, track, train, score, record."""

from __future__ import annotations

import gc
import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna

from bcauto.data import Dataset
from bcauto.progress import EpochProgress, SearchProgress
from bcauto.recovery import INTERRUPTED, worker_identity
from bcauto.sanity import likely_causes, prediction_problem
from bcauto.scoring import save_confusion_matrix, score
from bcauto.search_space import plan_params, suggest_plan
from bcauto.tracking import Tracker
from bcauto.training import TrainResult, TrainSettings, TrialPlan, train

EPOCH_METRICS = (
    "loss",
    "accuracy",
    "macro_f1",
    "val_loss",
    "val_accuracy",
    "val_macro_f1",
    "val_shift_macro_f1",
    "val_domain_macro_f1",
    "lr",
)
SHIFTED_METRICS = ("val_shift_macro_f1", "val_mean_macro_f1")


def epoch_metric(metric: str, shifted: bool, domain: bool = False) -> str:
    """What trials report to Optuna each epoch for ``[study] metric``: the metric the study optimizes, so that the
    pruner compares trials on it (clean macro-F1 for ``both``, which is never pruned)."""
    if (metric in SHIFTED_METRICS and shifted) or (metric == "val_domain_macro_f1" and domain):
        return metric
    return "val_accuracy" if metric == "val_accuracy" else "val_macro_f1"


def epoch_value(metric: str, logs: dict) -> float | None:
    """``metric`` from one epoch's logs (the mean of clean and shifted macro-F1 for ``val_mean_macro_f1``)."""
    if metric == "val_mean_macro_f1":
        clean, shifted = logs.get("val_macro_f1"), logs.get("val_shift_macro_f1")
        return None if clean is None or shifted is None else (float(clean) + float(shifted)) / 2
    value = logs.get(metric)
    return None if value is None else float(value)


class OptunaReporter(keras.callbacks.Callback):
    """Reports ``monitor`` (see :func:`epoch_value`) to Optuna each (global) epoch and stops a trial the pruner
    rejects."""

    def __init__(self, trial: optuna.Trial, monitor: str, prunable: bool):
        super().__init__()
        self.trial, self.monitor, self.prunable = trial, monitor, prunable

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise optuna.TrialPruned(f"non-finite training loss ({loss}) at epoch {epoch + 1}")
        value = epoch_value(self.monitor, logs or {})
        if value is None or not self.prunable:
            return
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}: {self.monitor} = {float(value):.4f}")


class MlflowEpochLogger(keras.callbacks.Callback):
    """Per-epoch curves under stable metric keys, stepped by the global epoch."""

    def __init__(self, tracker: Tracker, run_id: str | None):
        super().__init__()
        self.tracker, self.run_id = tracker, run_id
        self.last: dict[str, float] = {}

    def on_epoch_end(self, epoch, logs=None):
        self.last = {k: float(v) for k, v in (logs or {}).items() if k in EPOCH_METRICS}
        self.tracker.log_metrics(self.run_id, self.last, step=epoch)


@dataclass
class SearchContext:
    """What every trial of a study shares."""

    cfg: Any
    components: Any
    train_data: Dataset
    val_data: Dataset
    settings: TrainSettings
    tracker: Tracker
    parent_run_id: str | None
    run_tags: dict[str, str]
    run_params: dict[str, Any]
    progress: SearchProgress | None = None
    shifted_val: Dataset | None = None
    shift_tags: np.ndarray | None = None
    domain_val: Dataset | None = None


def run_name(number: int, plan: TrialPlan) -> str:
    return f"trial-{number:03d} {plan.backbone.name} {plan.augmentation.name} {plan.imbalance.name}"


class Objective:
    """Callable for ``study.optimize``: builds, trains and scores one classifier per trial."""

    def __init__(self, context: SearchContext):
        self.ctx = context

    def __call__(self, trial: optuna.Trial) -> float:
        ctx = self.ctx
        start_fresh()
        for key, value in worker_identity().items():  # so a resumed study can tell a dead worker's trial
            trial.set_user_attr(key, value)
        settings = replace(ctx.settings, seed=ctx.settings.seed + trial.number)
        plan = suggest_plan(trial, ctx.cfg, ctx.components, settings)
        params = {**ctx.run_params, **plan_params(plan, settings), "seed": settings.seed, "trial": trial.number}
        trial.set_user_attr("params", {k: v for k, v in params.items()})
        run_id = self.open_run(trial, plan, params)
        logger = MlflowEpochLogger(ctx.tracker, run_id)
        try:
            result = train(
                plan, settings, ctx.train_data, ctx.val_data, callbacks=self.callbacks(trial, logger), epoch_sets=self.epoch_sets()
            )
            value, scores, shift_metrics = self.evaluate(result)
            # one step past the last epoch: the kept model's score ends the per-epoch val_shift_macro_f1 curve and is
            # the run's latest value, as readers of the run expect
            ctx.tracker.log_metrics(run_id, shift_metrics, step=len(result.history))
            self.check_predictions(trial, run_id, scores, len(result.history), plan.lr_head)
            self.record(trial, run_id, result, scores, value)
            return value
        except optuna.TrialPruned as pruned:
            ctx.tracker.log_metrics(run_id, {f"final_{k}": v for k, v in logger.last.items()})
            self.close_run(trial, run_id, "pruned", str(pruned))
            raise
        except (KeyboardInterrupt, SystemExit) as exc:
            self.close_run(trial, run_id, "failed", f"{INTERRUPTED}: {type(exc).__name__}")
            raise
        except BaseException as exc:
            self.close_run(trial, run_id, "failed", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            start_fresh()

    def open_run(self, trial: optuna.Trial, plan: TrialPlan, params: dict) -> str | None:
        ctx = self.ctx
        total = ctx.settings.head_epochs + ctx.settings.finetune_epochs
        if ctx.progress:
            ctx.progress.trial_started(trial.number, f"{plan.backbone.name} {plan.augmentation.name} {plan.imbalance.name}", total)
        tags = {**ctx.run_tags, "bcauto.trial": str(trial.number), "bcauto.state": "running"}
        run_id = ctx.tracker.start_run(ctx.parent_run_id, run_name(trial.number, plan), tags)
        ctx.tracker.log_params(run_id, params)
        if run_id:
            trial.set_user_attr("mlflow_run_id", run_id)
        return run_id

    @property
    def monitor(self) -> str:
        return epoch_metric(self.ctx.cfg.study.metric, self.ctx.shifted_val is not None, self.ctx.domain_val is not None)

    def epoch_sets(self) -> dict[str, Dataset] | None:
        """The shifted validation copy, scored every epoch where the study's metric needs it (one prediction pass
        over a copy of the validation split per epoch, through the trial's cached inputs where it has them)."""
        sets = {"val_shift": self.ctx.shifted_val} if self.monitor in SHIFTED_METRICS else {}
        if self.ctx.domain_val is not None:  # the held-out lab's curve, whatever the study optimizes
            sets["val_domain"] = self.ctx.domain_val
        return sets or None

    def callbacks(self, trial: optuna.Trial, logger: MlflowEpochLogger) -> list:
        ctx = self.ctx
        prunable = len(trial.study.directions) == 1
        trial.set_user_attr("reported_metric", self.monitor)  # what the intermediate values (and a pruned trial's) are
        return [logger, OptunaReporter(trial, self.monitor, prunable), EpochProgress(ctx.progress)]

    def evaluate(self, result: TrainResult) -> tuple[Any, Any, dict[str, float]]:
        """The objective value(s), the clean scores, and the shifted-validation metrics of a trained trial."""
        ctx = self.ctx
        val = ctx.val_data
        scores = score(val.labels, result.probabilities(val).argmax(axis=1), val.class_names)
        shift_metrics = shifted_scores(result, ctx.shifted_val, ctx.shift_tags) if ctx.shifted_val is not None else {}
        if ctx.domain_val is not None:
            shift_metrics.update(domain_scores(result, ctx.domain_val))
        return objective_value(ctx.cfg.study.metric, scores, shift_metrics), scores, shift_metrics

    def check_predictions(self, trial: optuna.Trial, run_id: str | None, scores, epochs: int, lr: float) -> None:
        """Record, in words, a trial whose model predicts (nearly) one class or guesses: its score says little."""
        train = self.ctx.train_data
        problem = prediction_problem(scores.confusion, train.class_names)
        if problem:
            problem += ". " + likely_causes(len(train.labels), int(train.class_counts().min()), epochs, lr)
            trial.set_user_attr("prediction_problem", problem)
            self.ctx.tracker.set_tags(run_id, {"bcauto.warning": problem})

    def record(self, trial: optuna.Trial, run_id: str | None, result, scores, value) -> None:
        ctx = self.ctx
        epochs = len(result.history)
        trial.set_user_attr("epochs", epochs)
        trial.set_user_attr("phase_epochs", result.phase_epochs)
        # what `bcauto refit` replays, kept in the study as tracking may be off or lost
        trial.set_user_attr("kept_epochs", result.kept_epochs)
        trial.set_user_attr("epoch_lr", result.learning_rates)
        trial.set_user_attr("unfreeze_blocks", result.unfrozen_blocks)
        trial.set_user_attr("modes", result.modes)
        ctx.tracker.log_params(run_id, {f"mode.{phase}": mode for phase, mode in result.modes.items()})
        trial.set_user_attr("val_accuracy", scores.accuracy)
        trial.set_user_attr("val_macro_f1", scores.macro_f1)
        ctx.tracker.log_metrics(
            run_id,
            {
                **scores.metrics("final_val_"),
                "epochs": epochs,
                "head_epochs": result.phase_epochs["head"],
                "finetune_epochs": result.phase_epochs["finetune"],
            },
        )
        with tempfile.TemporaryDirectory() as tmp:
            image = save_confusion_matrix(
                scores.confusion,
                ctx.val_data.class_names,
                Path(tmp) / "confusion_matrix.png",
                title=f"trial {trial.number}: val macro-F1 {scores.macro_f1:.3f}",
            )
            ctx.tracker.log_artifact(run_id, image)
        ctx.tracker.log_json(run_id, scores.report, "classification_report.json")
        if is_new_best(trial, value):
            ctx.tracker.log_keras_model(run_id, result.model, requirements=model_requirements())
            ctx.tracker.set_tags(ctx.parent_run_id, {"bcauto.best_trial": str(trial.number), "bcauto.best_run_id": run_id or ""})
        self.close_run(trial, run_id, "complete", "", value=value[0] if isinstance(value, tuple) else value)

    def close_run(self, trial: optuna.Trial, run_id: str | None, state: str, reason: str, value: float | None = None) -> None:
        ctx = self.ctx
        tags = {"bcauto.state": state}
        if reason:
            tags["bcauto.reason"] = reason
            trial.set_user_attr("reason", reason)
        ctx.tracker.set_tags(run_id, tags)
        ctx.tracker.finish(run_id, "FAILED" if state == "failed" else "FINISHED")
        if ctx.progress:
            ctx.progress.trial_done(value, state)


def shifted_scores(result: TrainResult, shifted: Dataset, tags: np.ndarray) -> dict[str, float]:
    """Macro-F1 on the shifted validation copy, overall and per corruption (all severities pooled)."""
    predicted = result.probabilities(shifted).argmax(axis=1)
    overall = score(shifted.labels, predicted, shifted.class_names)
    metrics = {"val_shift_macro_f1": overall.macro_f1, "val_shift_accuracy": overall.accuracy}
    names = np.array([tag.split(":")[0] for tag in tags])
    for name in np.unique(names):
        members = names == name
        metrics[f"shift.{name}.macro_f1"] = score(
            shifted.labels[members], predicted[members], shifted.class_names, present_only=True
        ).macro_f1
    return metrics


def domain_scores(result: TrainResult, domain: Dataset) -> dict[str, float]:
    """Macro-F1 (over the classes it has) and accuracy on the held-out domain."""
    scores = score(domain.labels, result.probabilities(domain).argmax(axis=1), domain.class_names, present_only=True)
    return {"val_domain_macro_f1": scores.macro_f1, "val_domain_accuracy": scores.accuracy}


def objective_value(metric: str, scores, shift_metrics: dict[str, float]):
    """What Optuna maximises for ``[study] metric``: one number, or (clean, shifted) macro-F1 for ``both``."""
    clean, shifted = scores.macro_f1, shift_metrics.get("val_shift_macro_f1", scores.macro_f1)
    if metric == "val_domain_macro_f1":
        return shift_metrics["val_domain_macro_f1"]
    return {
        "val_macro_f1": clean,
        "val_accuracy": scores.accuracy,
        "val_shift_macro_f1": shifted,
        "val_mean_macro_f1": (clean + shifted) / 2,
        "both": (clean, shifted),
    }[metric]


def is_new_best(trial: optuna.Trial, value) -> bool:
    """Whether ``value`` beats every finished trial of the study so far (single objective)."""
    study = trial.study
    if len(study.directions) != 1:
        return False
    try:
        best = study.best_value
    except ValueError:
        return True
    return value > best if study.direction == optuna.study.StudyDirection.MAXIMIZE else value < best


def model_requirements() -> list[str]:
    import tensorflow as tf

    return [f"keras=={keras.__version__}", f"tensorflow=={tf.__version__}"]


def start_fresh() -> None:
    """Free the previous trial's graphs and tensors, so a long study does not grow."""
    keras.backend.clear_session(free_memory=True)
    gc.collect()
