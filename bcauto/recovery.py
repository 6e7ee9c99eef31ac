"""Resuming after a crash: trials whose worker died are marked failed everywhere, and retried once."""

from __future__ import annotations

import os
import socket

import optuna

from bcauto.objective import INTERRUPTED
from bcauto.tracking import Tracker

State = optuna.trial.TrialState


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, tracker: Tracker | None, reason: str) -> None:
    """Mark a RUNNING trial failed in Optuna and its MLflow run failed, both with ``reason``."""
    study._storage.set_trial_user_attr(trial._trial_id, "reason", reason)
    study.tell(trial.number, state=State.FAIL)
    run_id = trial.user_attrs.get("mlflow_run_id")
    if tracker is not None and run_id:
        tracker.set_tags(run_id, {"bcauto.state": "failed", "bcauto.reason": reason})
        tracker.finish(run_id, "FAILED")


def fail_trials_of_dead_workers(study: optuna.Study, tracker: Tracker | None, workers: set[str] | None = None,
                                reason: str | None = None) -> list[int]:
    """Fail RUNNING trials run by ``workers`` (default: by any process of this host that no longer exists)."""
    host, failed = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(State.RUNNING,)):
        worker = trial.user_attrs.get("worker", "")
        worker_host, _, pid = worker.partition(":")
        if workers is not None:
            gone = worker in workers
        else:
            gone = worker_host == host and pid.isdigit() and not pid_alive(int(pid))
        if gone:
            fail_trial(study, trial, tracker, reason or f"{INTERRUPTED}: worker {worker} is gone")
            failed.append(trial.number)
    return failed


def retry_interrupted(study: optuna.Study) -> list[int]:
    """Enqueue, once each, the parameters of trials that failed because they were interrupted."""
    retried = set(study.user_attrs.get("retried_trials", []))
    new = []
    for trial in study.get_trials(deepcopy=False, states=(State.FAIL,)):
        if trial.user_attrs.get("reason", "").startswith(INTERRUPTED) and trial.number not in retried:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            new.append(trial.number)
    if new:
        study.set_user_attr("retried_trials", sorted(retried | set(new)))
    return new


def recover(study: optuna.Study, tracker: Tracker | None) -> tuple[list[int], list[int]]:
    """What a resumed study does first: (trials marked failed, trials whose parameters are retried)."""
    return fail_trials_of_dead_workers(study, tracker), retry_interrupted(study)


def failure_streak(study: optuna.Study, limit: int) -> str | None:
    """Why the study should stop, when its last ``limit`` trials all failed."""
    recent = study.get_trials(deepcopy=False)[-limit:] if limit else []
    if len(recent) < max(limit, 1) or not all(t.state == optuna.trial.TrialState.FAIL for t in recent):
        return None
    reasons = sorted({t.user_attrs.get("reason", "unknown") for t in recent})
    return f"{limit} failed trials in a row: {'; '.join(reasons)}"
