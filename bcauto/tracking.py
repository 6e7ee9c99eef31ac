"""MLflow tracking: one parent run per study, one child run per trial, through an explicit client.

Every call is guarded: when the tracking store is unreachable or the disk is full, the study goes on
(Optuna keeps the results) and the problem is reported once as a warning instead of crashing the trial.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from bcauto.uris import artifact_root, redact_uri

log = logging.getLogger("bcauto")

PARENT_ROLE = "study"
TRIAL_ROLE = "trial"
MAX_PARAM_LENGTH = 6000
MAX_FAILURES_IN_A_ROW = 3


def flat_params(params: dict[str, Any]) -> dict[str, str]:
    return {k: str(v)[:MAX_PARAM_LENGTH] for k, v in params.items()}


class Tracker:
    """Writes a study to MLflow. Failures become warnings (``self.problems``), never exceptions."""

    def __init__(self, tracking_uri: str, experiment: str):
        self.tracking_uri = tracking_uri
        self.problems: list[str] = []
        self.failures_in_a_row = 0
        # MLflow opens (and may fail to create) the store here already: a folder that is a file, a bad scheme
        self.client = self._guard("open the tracking store", lambda: MlflowClient(tracking_uri=tracking_uri))
        self.experiment_id = self._guard("open the experiment", lambda: self._experiment(experiment)) if self.client else None

    def _guard(self, what: str, action: Callable[[], Any]) -> Any:
        if self.failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            return None  # the store is gone: stop paying its timeouts on every call
        try:
            result = action()
            self.failures_in_a_row = 0
            return result
        except Exception as exc:  # tracking must never cost a trial its result
            self.failures_in_a_row += 1
            self._warn(f"MLflow ({redact_uri(self.tracking_uri)}): could not {what}: {type(exc).__name__}: {str(exc)[:300]}")
            if self.failures_in_a_row == MAX_FAILURES_IN_A_ROW:
                self._warn(
                    f"MLflow ({redact_uri(self.tracking_uri)}): {MAX_FAILURES_IN_A_ROW} failures in a row, logging is off for "
                    "the rest of this process; results stay in the Optuna study"
                )
            return None

    def _warn(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)
            log.warning(message)

    @property
    def available(self) -> bool:
        return self.experiment_id is not None

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        return self.client.create_experiment(name, artifact_location=artifact_root(self.tracking_uri), tags={"bcauto": "study"})

    def parent_run(self, study_name: str, params: dict[str, Any], tags: dict[str, str]) -> str | None:
        """The study's parent run: reused when the study resumes, created otherwise."""

        def find_or_create():
            query = f"tags.`bcauto.study` = '{study_name}' and tags.`bcauto.role` = '{PARENT_ROLE}'"
            runs = self.client.search_runs([self.experiment_id], query, max_results=1, order_by=["attributes.start_time ASC"])
            if runs:
                run_id = runs[0].info.run_id
                if runs[0].info.status != "RUNNING":
                    self.client.update_run(run_id, status="RUNNING")
                return run_id
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"study {study_name}",
                tags={"bcauto.study": study_name, "bcauto.role": PARENT_ROLE, **tags},
            )
            self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flat_params(params).items()])
            return run.info.run_id

        return self._guard("open the study's parent run", find_or_create) if self.available else None

    def start_run(self, parent_id: str | None, run_name: str, tags: dict[str, str]) -> str | None:
        """A new run in the experiment (a trial's, a refit's or an adaptation's), a child of ``parent_id`` when given,
        tagged ``bcauto.role = trial`` unless ``tags`` names another role."""
        if not self.available:
            return None

        def create():
            all_tags = {"bcauto.role": TRIAL_ROLE, **tags}
            if parent_id:
                all_tags["mlflow.parentRunId"] = parent_id
            return self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags).info.run_id

        return self._guard(f"create the run {run_name!r}", create)

    def running_trial_runs(self) -> dict[int, str]:
        """Trial number -> run id of this experiment's trial runs still marked RUNNING."""
        if not self.available:
            return {}

        def search():
            query = f"tags.`bcauto.role` = '{TRIAL_ROLE}' and attributes.status = 'RUNNING'"
            runs = self.client.search_runs([self.experiment_id], query, max_results=1000)
            return {int(r.data.tags["bcauto.trial"]): r.info.run_id for r in runs if r.data.tags.get("bcauto.trial", "").isdigit()}

        return self._guard("list the running trial runs", search) or {}

    def log_params(self, run_id: str | None, params: dict[str, Any]) -> None:
        if run_id:
            items = [Param(k, v) for k, v in flat_params(params).items()]
            self._guard("log params", lambda: [self.client.log_batch(run_id, params=items[i : i + 100]) for i in range(0, len(items), 100)])

    def log_metrics(self, run_id: str | None, metrics: dict[str, float], step: int = 0) -> None:
        if run_id and metrics:
            import time

            now = int(time.time() * 1000)
            items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
            self._guard("log metrics", lambda: self.client.log_batch(run_id, metrics=items))

    def set_tags(self, run_id: str | None, tags: dict[str, str]) -> None:
        if run_id and tags:
            items = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
            self._guard("set tags", lambda: self.client.log_batch(run_id, tags=items))

    def log_artifact(self, run_id: str | None, path: Path, folder: str | None = None) -> None:
        if run_id:
            self._guard(f"log artifact {Path(path).name}", lambda: self.client.log_artifact(run_id, str(path), folder))

    def log_json(self, run_id: str | None, payload: Any, name: str) -> None:
        if run_id:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / name
                path.write_text(json.dumps(payload, indent=2, default=str))
                self.log_artifact(run_id, path)

    def log_keras_model(self, run_id: str | None, model, requirements: list[str]) -> None:
        """The model as an MLflow Keras model (``runs:/<run>/model``)."""
        if not run_id:
            return

        def log():
            import mlflow
            import mlflow.keras

            mlflow.set_tracking_uri(self.tracking_uri)
            with mlflow.start_run(run_id=run_id, nested=True):
                mlflow.keras.log_model(model, name="model", pip_requirements=requirements)

        self._guard("log the Keras model", log)

    def finish(self, run_id: str | None, status: str) -> None:
        """End a run: ``FINISHED``, ``FAILED`` or ``KILLED``."""
        if run_id:
            self._guard("end the run", lambda: self.client.set_terminated(run_id, status=status))
