"""Runs a study's trials in supervised worker processes.

A trial that raises is marked failed by its worker; one that kills its process (segfault, out-of-memory
kill) is marked failed here, and a fresh worker takes over. Workers are also recycled after a number of
trials or when their memory grows, so a long study does not grow.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import optuna
import psutil

from bcauto.interrupts import ctrl_c_between_polls
from bcauto.progress import SearchProgress
from bcauto.recovery import INTERRUPTED, fail_trials_of, failure_streak
from bcauto.tracking import Tracker
from bcauto.worker import WorkerJob

State = optuna.trial.TrialState
POLL_SECONDS = 1.0


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        hint = " (killed: out of memory?)" if -code == signal.SIGKILL else ""
        return f"worker process died from signal {name}{hint}"
    return f"worker process exited with code {code}"


def process_memory_mb(pid: int) -> float:
    """Resident memory of a process in MiB (0 when it cannot be read)."""
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return 0.0


class Supervisor:
    """Starts ``workers`` worker processes for a study and keeps them going until the study is done."""

    def __init__(self, job: WorkerJob, jobs_dir: Path, workers: int, gpus: list[str] | None, tracker: Tracker, memory_limit_mb: float = 0):
        self.job, self.jobs_dir, self.workers, self.gpus, self.tracker = job, jobs_dir, workers, gpus, tracker
        self.memory_limit_mb = memory_limit_mb
        self.running: dict[int, tuple[subprocess.Popen, int]] = {}
        self.started = 0

    def spawn(self, slot: int) -> None:
        job = replace(self.job, sampler_seed=self.job.sampler_seed + 1000 * self.started + slot)
        path = job.write(self.jobs_dir / f"worker-{slot}.json")
        env = dict(os.environ)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
        process = subprocess.Popen([sys.executable, "-m", "bcauto.worker", str(path)], env=env)
        self.running[slot] = (process, self.started)
        self.started += 1

    def finished(self, study: optuna.Study) -> int:
        return sum(t.state in (State.COMPLETE, State.PRUNED) for t in study.get_trials(deepcopy=False))

    def done(self, study: optuna.Study) -> bool:
        deadline_passed = self.job.deadline is not None and time.time() >= self.job.deadline
        return deadline_passed or self.finished(study) >= self.job.trials or bool(study.user_attrs.get("stopped_because"))

    def reap(self, study: optuna.Study) -> None:
        """Fail the running trial of every worker that died (or grew past the memory limit), and free its slot."""
        for slot, (process, _) in list(self.running.items()):
            reason = None
            if self.memory_limit_mb and process.poll() is None and process_memory_mb(process.pid) > self.memory_limit_mb:
                process.kill()
                process.wait()
                reason = f"worker process used more than the memory limit of {self.memory_limit_mb:.0f} MiB and was stopped"
            code = process.poll()
            if code is None:
                continue
            del self.running[slot]
            if code != 0:
                worker = {f"{socket.gethostname()}:{process.pid}"}
                fail_trials_of(study, self.tracker, worker, reason or describe_exit(code))
                self.check_failure_limit(study)

    def check_failure_limit(self, study: optuna.Study) -> None:
        reason = failure_streak(study, self.job.max_failures)
        if reason:
            study.set_user_attr("stopped_because", reason)

    def run(self, study: optuna.Study, progress: SearchProgress | None) -> None:
        """Keep the workers going until the study is done; on Ctrl-C, stop them and raise KeyboardInterrupt."""
        try:
            with ctrl_c_between_polls() as interrupted:
                while not interrupted.is_set():
                    self.reap(study)
                    if progress:
                        progress.show(study)
                    if self.done(study):
                        if not self.running:
                            return
                    else:
                        for slot in range(self.workers):
                            if slot not in self.running:
                                self.spawn(slot)
                    interrupted.wait(POLL_SECONDS)
        except KeyboardInterrupt:  # where SIGINT has another handler, Ctrl-C still arrives as an exception
            pass
        self.stop(study)
        raise KeyboardInterrupt

    def stop(self, study: optuna.Study, grace: float = 30.0) -> None:
        """After Ctrl-C or SIGTERM: tell the workers (a signal sent to this process alone did not reach them; one sent
        to the whole group did, and they ignore the second), let them mark their own trials, then make sure."""
        end = time.time() + grace
        for process, _ in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process, _ in self.running.values():
            try:
                process.wait(timeout=max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        workers = {f"{socket.gethostname()}:{p.pid}" for p, _ in self.running.values()}
        fail_trials_of(study, self.tracker, workers, f"{INTERRUPTED}: Ctrl-C or SIGTERM")
        self.running.clear()
