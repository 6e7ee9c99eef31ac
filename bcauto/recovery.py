"""Resuming after a crash: a trial whose process is gone is failed, in Optuna and MLflow alike, and retried once.

A trial's process is known to be gone, without waiting on any clock, when it ran on this host and its process no
longer exists, is a zombie (killed, not yet reaped: ``os.kill(pid, 0)`` still succeeds on it) or its pid now
belongs to a newer process. For workers on other hosts, Optuna's heartbeat (RDB storages) fails a trial whose
heartbeat is older than the grace period, and calls the storage's stale-trial callback. Retries are Optuna's
:class:`~optuna.storages.RetryFailedTrialCallback` (the parameters enqueued once, the link kept in the new
trial's ``retry_history``). Everything goes through Optuna's public API: the reason a trial was failed from
outside is a study attribute (``reason.N``), since only a trial's own process can set its attributes.
"""

from __future__ import annotations

import copy
import inspect
import os
import socket
import warnings
from typing import TYPE_CHECKING

import optuna
import psutil

if TYPE_CHECKING:  # annotations only: importing MLflow takes seconds
    from bcauto.tracking import Tracker

State = optuna.trial.TrialState
INTERRUPTED = "interrupted"
HEARTBEAT_INTERVAL_S = 30
GRACE_PERIOD_S = 90

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    _OptunaRetry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback


def worker_identity() -> dict[str, object]:
    """Which process runs a trial (trial user attributes): host and pid, and the process's start time, so a pid
    taken over by a newer process is not mistaken for the worker."""
    return {"worker": f"{socket.gethostname()}:{os.getpid()}", "worker_started": psutil.Process().create_time()}


def process_gone(worker: str, started: float | None = None) -> bool:
    """Whether the process ``host:pid`` is known to be gone (False for another host: this one cannot tell)."""
    host, _, pid = worker.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        process = psutil.Process(int(pid))
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        return started is not None and abs(process.create_time() - float(started)) > 1.0
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:  # another user's process: alive
        return False


def reason_key(number: int) -> str:
    return f"reason.{number}"


def failure_reason(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    """Why a trial failed: its own record, or the one written when it was failed from outside."""
    return trial.user_attrs.get("reason") or study.user_attrs.get(reason_key(trial.number), "")


def retried(study: optuna.Study, number: int) -> bool:
    """Whether a trial already retries trial ``number``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks retry_history experimental
        return any(_OptunaRetry.retry_history(t)[-1:] == [number] for t in study.get_trials(deepcopy=False))


class RetryOnce(_OptunaRetry):
    """Optuna's retry (at most once per original trial), carrying over the parameters only: the failed trial's
    MLflow run id, worker, reason and scores are its own, and the retry records ``retry_of``."""

    def __init__(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            super().__init__(max_retry=1)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if retried(study, trial.number):
            return
        bare = copy.copy(trial)
        bare.user_attrs = {"retry_of": trial.number}
        super().__call__(study, bare)


class StaleTrialCallback:
    """The storage's callback for a trial Optuna failed because its heartbeat stopped: say why, retry it."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        worker = trial.user_attrs.get("worker", "unknown")
        if not failure_reason(study, trial):
            study.set_user_attr(reason_key(trial.number), f"{INTERRUPTED}: worker {worker} sent no heartbeat for {GRACE_PERIOD_S} s")
        RetryOnce()(study, trial)


def heartbeat_options() -> dict[str, object]:
    """``RDBStorage`` keyword arguments: heartbeats, and the stale-trial callback under this Optuna's name for it."""
    names = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    callback = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in names else "failed_trial_callback"
    return {"heartbeat_interval": HEARTBEAT_INTERVAL_S, "grace_period": GRACE_PERIOD_S, callback: StaleTrialCallback()}


def fail_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, tracker: Tracker | None, reason: str) -> bool:
    """Fail a RUNNING trial whose process is gone, and its MLflow run, both with ``reason``; False when another
    process finished it first."""
    study.set_user_attr(reason_key(trial.number), reason)
    finished = study.tell(trial.number, state=State.FAIL, skip_if_finished=True)
    if finished.state != State.FAIL:
        return False
    close_run(tracker, trial.user_attrs.get("mlflow_run_id"), reason)
    return True


def close_run(tracker: Tracker | None, run_id: str | None, reason: str) -> None:
    if tracker is not None and run_id:
        tracker.set_tags(run_id, {"bcauto.state": "failed", "bcauto.reason": reason})
        tracker.finish(run_id, "FAILED")


def fail_trials_of(study: optuna.Study, tracker: Tracker | None, workers: set[str], reason: str) -> list[int]:
    """Fail the RUNNING trials that ``workers`` (``host:pid``) were running: the supervisor saw them exit."""
    return [
        t.number
        for t in study.get_trials(deepcopy=False, states=(State.RUNNING,))
        if t.user_attrs.get("worker") in workers and fail_trial(study, t, tracker, reason)
    ]


def fail_trials_of_dead_workers(study: optuna.Study, tracker: Tracker | None) -> list[int]:
    """Fail the RUNNING trials whose process on this host is gone (killed with its supervisor, for instance)."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(State.RUNNING,)):
        worker = trial.user_attrs.get("worker", "")
        gone = process_gone(worker, trial.user_attrs.get("worker_started"))
        if gone and fail_trial(study, trial, tracker, f"{INTERRUPTED}: worker {worker} is gone"):
            failed.append(trial.number)
    return failed


def retry_interrupted(study: optuna.Study) -> list[int]:
    """Enqueue, once each, the parameters of trials that failed because they were interrupted (not because they
    crashed: a trial that kills its worker would kill the next one too)."""
    new = []
    for trial in study.get_trials(deepcopy=False, states=(State.FAIL,)):
        if failure_reason(study, trial).startswith(INTERRUPTED) and not retried(study, trial.number):
            before = len(study.get_trials(deepcopy=False))
            RetryOnce()(study, trial)
            if len(study.get_trials(deepcopy=False)) > before:
                new.append(trial.number)
    return new


def close_runs_of_failed_trials(study: optuna.Study, tracker: Tracker | None) -> list[int]:
    """Mark FAILED the MLflow runs still RUNNING whose trial Optuna has failed (by its heartbeat, in a worker)."""
    if tracker is None:
        return []
    closed = []
    states = {t.number: t for t in study.get_trials(deepcopy=False)}
    for number, run_id in tracker.running_trial_runs().items():
        trial = states.get(number)
        if trial is not None and trial.state == State.FAIL:
            close_run(tracker, run_id, failure_reason(study, trial) or "failed")
            closed.append(number)
    return closed


def recover(study: optuna.Study, tracker: Tracker | None) -> tuple[list[int], list[int]]:
    """What a resumed study does first: (trials marked failed, trials whose parameters are retried)."""
    failed = fail_trials_of_dead_workers(study, tracker)
    before = {t.number for t in study.get_trials(deepcopy=False, states=(State.FAIL,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)  # other hosts' trials whose heartbeat stopped
    failed += sorted({t.number for t in study.get_trials(deepcopy=False, states=(State.FAIL,))} - before - set(failed))
    close_runs_of_failed_trials(study, tracker)
    return failed, retry_interrupted(study)


def failure_streak(study: optuna.Study, limit: int) -> str | None:
    """Why the study should stop, when its last ``limit`` trials all failed."""
    recent = study.get_trials(deepcopy=False)[-limit:] if limit else []
    if len(recent) < max(limit, 1) or not all(t.state == State.FAIL for t in recent):
        return None
    reasons = sorted({failure_reason(study, t) or "unknown" for t in recent})
    return f"{limit} failed trials in a row: {'; '.join(reasons)}"
