"""A refit in MLflow, best effort: the study's parameters read back, and the refit run logged with the model
directory and the model registered. Nothing a refit trains depends on it; with tracking off or unreachable the
model directory is written all the same."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import optuna

REFIT_ROLE = "refit"


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


def study_run_params(client, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The study's parent-run parameters (data source, fingerprint, image size, seed); the trial's copy of them
    when MLflow cannot be read."""
    parent = study.user_attrs.get("mlflow_parent_run_id")
    if client is not None and parent:
        try:
            return dict(client.get_run(parent).data.params)
        except Exception:  # noqa: BLE001, S110 - tracking is best effort; the trial's copy follows
            pass
    return {k: v for k, v in trial.user_attrs.get("params", {}).items()}


def trial_metrics(client, trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """The trial's validation scores from the search (clean, and shifted where it was scored)."""
    metrics = {k: trial.user_attrs[k] for k in ("val_accuracy", "val_macro_f1") if k in trial.user_attrs}
    run_id = trial.user_attrs.get("mlflow_run_id")
    if client is not None and run_id:
        try:
            logged = client.get_run(run_id).data.metrics
            metrics.update({k: v for k, v in logged.items() if k.startswith(("val_shift", "final_val_", "shift."))})
        except Exception:  # noqa: BLE001, S110 - tracking is best effort; the scores Optuna holds are enough
            pass
    return metrics


def log_refit(
    tracker, study: optuna.Study, model, out: Path, info: dict, register: bool, requirements: list[str]
) -> tuple[str | None, str | None, int | None]:
    """A new run (tag ``bcauto.role = refit``) in the study's experiment, under the study's parent run, with the model
    directory as artifacts and the model logged and registered as ``bcauto-<study>``; returns (run id, model name,
    version), (None, None, None) when tracking is off."""
    trials = ",".join(str(t) for t in info["trials"])
    tags = {
        "bcauto.study": study.study_name,
        "bcauto.role": REFIT_ROLE,
        "bcauto.trials": trials,
        "bcauto.data_fingerprint": info["data"]["fingerprint"],
    }
    run_name = f"refit {study.study_name} trial{'s' if ',' in trials else ''} {trials}"
    run_id = tracker.start_run(study.user_attrs.get("mlflow_parent_run_id") or None, run_name, tags)
    if not run_id:
        return None, None, None
    tracker.log_params(
        run_id,
        {
            "trials": trials,
            "ensemble": info["ensemble"],
            "data.source": info["data"]["source"],
            "data.fingerprint": info["data"]["fingerprint"],
            "images": info["data"]["images"],
            **{
                f"member{i}.{k}": v
                for i, m in enumerate(info["members"])
                for k, v in {"trial": m["trial"], "epochs.head": m["epochs"]["head"], "epochs.finetune": m["epochs"]["finetune"]}.items()
            },
        },
    )
    for i, member in enumerate(info["members"]):
        tracker.log_metrics(
            run_id, {f"member{i}.search.{k}": v for k, v in member["metrics"].items() if k.startswith(("val_", "final_val_"))}
        )
    from bcauto.bundle import INFO_FILE, MODEL_FILE

    tracker.log_artifact(run_id, out / INFO_FILE, "bundle")
    tracker.log_artifact(run_id, out / MODEL_FILE, "bundle")
    name = f"bcauto-{study.study_name}"

    def log_model():
        import mlflow
        import mlflow.keras

        mlflow.set_tracking_uri(tracker.tracking_uri)
        with mlflow.start_run(run_id=run_id), mlflow_messages_silenced():
            logged = mlflow.keras.log_model(
                model, name="model", pip_requirements=requirements, registered_model_name=name if register else None
            )
        return getattr(logged, "registered_model_version", None)

    version = tracker._guard("log and register the model", log_model)
    tracker.finish(run_id, "FINISHED")
    return run_id, name if register else None, version
