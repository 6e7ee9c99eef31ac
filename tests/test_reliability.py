"""Crashing trials, a killed study, parallel workers: real stores, real processes, no mocks."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from bcauto.recovery import failure_reason

FAULT_PLUGIN = Path(__file__).parent / "fault_plugin"
State = optuna.trial.TrialState

STUDY = """
[study]
seed = 3
pruner = "none"
max_failures = 10
[data]
image_size = 32
[train]
weights = "none"
batch_size = 32
head_epochs = {epochs}
finetune_epochs = 0
[search]
backbone = {backbones}
augmentation = "none"
imbalance = "none"
lr_head = 2e-3
head_units1 = 32
head_units2 = 16
"""


def flat(text: str) -> str:
    """Terminal output with rich's line wrapping undone."""
    return " ".join(text.split())


def bcauto(root: Path, *args: str, timeout=600, extra_env=None, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(FAULT_PLUGIN), "BCAUTO_TEST_HOG_MB": "3000", **(extra_env or {})}
    command = [sys.executable, "-m", "bcauto.cli", *args]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout, **popen)


def stores(root: Path) -> list[str]:
    return ["--storage", f"sqlite:///{root}/optuna.db", "--tracking-uri", f"sqlite:///{root}/mlflow.db"]


def mlflow_runs(root: Path, name: str):
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id], "tags.`bcauto.role` = 'trial'", max_results=500)


def test_each_fault_fails_only_its_own_trial(tmp_path):
    (tmp_path / "faults.toml").write_text(
        STUDY.format(epochs=1, backbones='["mini_cnn", "fault_raises", "fault_kills", "fault_nan", "fault_hog"]')
    )
    study = optuna.create_study(study_name="faults", storage=f"sqlite:///{tmp_path}/optuna.db", direction="maximize")
    for backbone in ("fault_raises", "fault_kills", "fault_nan", "fault_hog", "mini_cnn"):
        study.enqueue_trial({"backbone": backbone})
    result = bcauto(
        tmp_path,
        "search",
        "--study",
        "faults.toml",
        "--trials",
        "2",
        "--data",
        "synthetic:160",
        "--worker-memory-gb",
        "2.5",
        *stores(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="faults", storage=f"sqlite:///{tmp_path}/optuna.db")
    trials = study.trials
    reason = {t.user_attrs["params"]["backbone"]: failure_reason(study, t) for t in trials}
    assert [t.state for t in trials] == [State.FAIL, State.FAIL, State.PRUNED, State.FAIL, State.COMPLETE]
    assert "RuntimeError: this backbone always fails to build" in reason["fault_raises"]
    assert "signal SIGKILL" in reason["fault_kills"]
    assert "non-finite training loss" in reason["fault_nan"]
    assert "memory limit of 2560 MiB" in reason["fault_hog"]
    runs = {r.data.params["backbone"]: r for r in mlflow_runs(tmp_path, "faults")}
    assert len(runs) == 5 and all(r.info.status != "RUNNING" for r in runs.values())
    assert runs["fault_kills"].info.status == "FAILED" and "SIGKILL" in runs["fault_kills"].data.tags["bcauto.reason"]
    assert runs["fault_nan"].data.tags["bcauto.state"] == "pruned"
    assert runs["mini_cnn"].data.tags["bcauto.state"] == "complete"


def test_study_that_only_fails_stops_with_a_summary(tmp_path):
    (tmp_path / "bad.toml").write_text(STUDY.format(epochs=1, backbones='"fault_raises"'))
    result = bcauto(
        tmp_path, "search", "--study", "bad.toml", "--trials", "5", "--data", "synthetic:160", "--max-failures", "2", *stores(tmp_path)
    )
    assert result.returncode == 3
    assert "2 failed trials in a row: RuntimeError: this backbone always fails to build" in flat(result.stdout)
    trials = optuna.load_study(study_name="bad", storage=f"sqlite:///{tmp_path}/optuna.db").trials
    assert [t.state for t in trials] == [State.FAIL, State.FAIL]


def test_kill_minus_nine_then_resume_keeps_finished_trials_and_retries_the_interrupted_one(tmp_path):
    (tmp_path / "long.toml").write_text(STUDY.format(epochs=6, backbones='"mini_cnn"'))
    args = ["search", "--study", "long.toml", "--trials", "2", "--data", "synthetic:400", *stores(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(FAULT_PLUGIN)}
    process = subprocess.Popen(
        [sys.executable, "-m", "bcauto.cli", *args], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    storage = f"sqlite:///{tmp_path}/optuna.db"
    deadline, trials = time.time() + 300, []
    try:
        while time.time() < deadline:  # wait until the second trial is mid-way
            time.sleep(1)
            try:
                trials = optuna.load_study(study_name="long", storage=storage).trials
            except KeyError:
                continue
            if len(trials) >= 2 and trials[1].state == State.RUNNING and len(trials[1].intermediate_values) >= 1:
                break
        else:
            pytest.fail("the study never reached its second trial")
    finally:  # supervisor and worker, as `kill -9` of both does; the same command again at once, no waiting
        process.send_signal(signal.SIGKILL)
        worker = trials[1].user_attrs.get("worker", "") if len(trials) >= 2 else ""
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(worker.rpartition(":")[2]), signal.SIGKILL)
        process.wait()

    result = bcauto(tmp_path, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="long", storage=storage)
    trials = study.trials
    states = [t.state for t in trials]
    assert states.count(State.RUNNING) == 0
    assert sum(s in (State.COMPLETE, State.PRUNED) for s in states) == 2
    assert trials[1].state == State.FAIL and failure_reason(study, trials[1]).startswith("interrupted")
    retry = [t for t in trials if t.user_attrs.get("retry_of") == 1]
    assert len(retry) == 1 and retry[0].params == trials[1].params and retry[0].state == State.COMPLETE
    runs = mlflow_runs(tmp_path, "long")
    assert len(runs) == len(trials) and all(r.info.status != "RUNNING" for r in runs)
    killed = [r for r in runs if r.data.tags["bcauto.trial"] == "1"]
    assert killed[0].info.status == "FAILED" and killed[0].data.tags["bcauto.reason"].startswith("interrupted")
    assert sorted(int(r.data.tags["bcauto.trial"]) for r in runs) == [t.number for t in trials]


def test_malicious_npz_is_refused_without_running_its_payload(tmp_path):
    import numpy as np

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    np.savez(tmp_path / "evil.npz", images=np.array([Payload()], dtype=object), labels=np.array([0]))
    result = bcauto(tmp_path, "search", "--data", str(tmp_path / "evil.npz"), "--trials", "1", *stores(tmp_path), timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "evil.npz" in result.stderr and "holds Python objects (pickled data), refused" in flat(result.stderr)
    assert not marker.exists()
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()


POSTGRES = os.environ.get("BCAUTO_TEST_POSTGRES_URL")


@pytest.mark.skipif(not POSTGRES, reason="needs a PostgreSQL server: .ci/postgres.sh starts one and sets BCAUTO_TEST_POSTGRES_URL")
def test_two_workers_on_postgresql_lose_and_duplicate_nothing(tmp_path):
    from sqlalchemy import create_engine, text

    name = f"pg{os.getpid()}"
    (tmp_path / f"{name}.toml").write_text(STUDY.format(epochs=1, backbones='["mini_cnn", "resnet_cnn"]'))
    optuna_url, mlflow_url = f"{POSTGRES}/optuna", f"{POSTGRES}/mlflow"
    result = bcauto(
        tmp_path,
        "search",
        "--study",
        f"{name}.toml",
        "--trials",
        "4",
        "--workers",
        "2",
        "--data",
        "synthetic:160",
        "--storage",
        optuna_url,
        "--tracking-uri",
        mlflow_url,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = optuna.load_study(study_name=name, storage=optuna_url).trials
    finished = [t for t in trials if t.state in (State.COMPLETE, State.PRUNED)]
    assert 4 <= len(finished) <= 5  # the second worker may finish the trial it had started
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "both workers ran trials"
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    client = MlflowClient(tracking_uri=mlflow_url)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], "tags.`bcauto.role` = 'trial'", max_results=500)
    assert sorted(int(r.data.tags["bcauto.trial"]) for r in runs) == [t.number for t in trials]
    assert {r.info.run_id for r in runs} == {t.user_attrs["mlflow_run_id"] for t in trials}
    assert len(client.search_runs([experiment.experiment_id], "tags.`bcauto.role` = 'study'")) == 1
    with create_engine(optuna_url).connect() as db:  # nothing left RUNNING in the database itself
        assert db.execute(text("select count(*) from trials where state = 'RUNNING'")).scalar() == 0


def test_sqlite_is_refused_for_several_workers(tmp_path):
    result = bcauto(tmp_path, "search", "--workers", "2", "--data", "synthetic:160", *stores(tmp_path), timeout=300)
    assert result.returncode == 2
    assert "--workers 2 needs a storage several processes can share" in flat(result.stderr)


@contextlib.contextmanager
def failing_tracking_server():
    """An HTTP server on loopback that answers every request with 503: a tracking server that is up but failing."""
    import http.server
    import threading

    class Unavailable(http.server.BaseHTTPRequestHandler):
        def answer(self):
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = do_PATCH = do_DELETE = answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_failing_tracking_store_loses_no_trial_and_says_so(tmp_path):
    (tmp_path / "offline.toml").write_text(STUDY.format(epochs=1, backbones='"mini_cnn"'))
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
    with failing_tracking_server() as uri:
        result = bcauto(
            tmp_path,
            "search",
            "--study",
            "offline.toml",
            "--trials",
            "2",
            "--data",
            "synthetic:160",
            "--storage",
            f"sqlite:///{tmp_path}/optuna.db",
            "--tracking-uri",
            uri,
            extra_env=env,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = optuna.load_study(study_name="offline", storage=f"sqlite:///{tmp_path}/optuna.db").trials
    assert [t.state for t in trials] == [State.COMPLETE, State.COMPLETE] and all(t.value is not None for t in trials)
    assert f"MLflow ({uri}): could not open the experiment" in flat(result.stdout + result.stderr)


def search_stopped_mid_trial(tmp_path, stop) -> tuple[subprocess.Popen, str, str, optuna.Study, list[str]]:
    """Start a two-trial search with one worker, call ``stop(process)`` once its first epoch is reported, wait."""
    (tmp_path / "stop.toml").write_text(STUDY.format(epochs=6, backbones='"mini_cnn"'))
    args = ["search", "--study", "stop.toml", "--trials", "2", "--data", "synthetic:400", *stores(tmp_path)]
    storage = f"sqlite:///{tmp_path}/optuna.db"
    env = {**os.environ, "PYTHONPATH": str(FAULT_PLUGIN)}
    # a terminal's Ctrl-C reaches a foreground search; a test run started in the background inherits SIGINT ignored
    process = subprocess.Popen(
        [sys.executable, "-m", "bcauto.cli", *args],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        time.sleep(1)
        try:
            trials = optuna.load_study(study_name="stop", storage=storage).trials
        except KeyError:
            continue
        if trials and trials[-1].state == State.RUNNING and len(trials[-1].intermediate_values) >= 1:
            break
    stop(process)
    out, err = process.communicate(timeout=120)
    return process, out, err, optuna.load_study(study_name="stop", storage=storage), args


def test_ctrl_c_marks_the_running_trial_prints_the_leaderboard_and_resumes(tmp_path):
    # what Ctrl-C does: the whole foreground group gets SIGINT
    process, out, err, study, args = search_stopped_mid_trial(tmp_path, lambda process: os.killpg(process.pid, signal.SIGINT))
    assert "interrupted" in out and "run the same command to resume" in flat(out), (process.returncode, out[-2000:], err[-3000:])
    assert "study stop" in out, "the leaderboard is printed"
    assert process.returncode == 130, "the exit status says the study is not done"
    trials = study.trials
    assert trials[-1].state == State.FAIL and failure_reason(study, trials[-1]).startswith("interrupted")
    assert all(r.info.status != "RUNNING" for r in mlflow_runs(tmp_path, "stop"))
    assert bcauto(tmp_path, *args).returncode == 0
    trials = optuna.load_study(study_name="stop", storage=f"sqlite:///{tmp_path}/optuna.db").trials
    assert sum(t.state == State.COMPLETE for t in trials) == 2 and not any(t.state == State.RUNNING for t in trials)


def test_sigterm_to_the_search_alone_stops_it_as_ctrl_c_does_and_its_worker_marks_its_own_trial(tmp_path):
    # `kill PID`, or a scheduler that signals the main process only: the workers hear it from the supervisor
    process, out, err, study, _ = search_stopped_mid_trial(tmp_path, lambda process: process.send_signal(signal.SIGTERM))
    assert process.returncode == 130, (process.returncode, out[-2000:], err[-3000:])
    assert "run the same command to resume" in flat(out) and "study stop" in out and "Traceback" not in err
    last = study.trials[-1]
    assert last.state == State.FAIL and failure_reason(study, last) == "interrupted: KeyboardInterrupt", failure_reason(study, last)
    assert all(r.info.status != "RUNNING" for r in mlflow_runs(tmp_path, "stop"))
    assert not list(tmp_path.rglob(".writing-*")), "nothing half-written is left behind"


def test_a_worker_is_recycled_when_its_memory_grew_past_the_limit_or_after_its_trial_quota(monkeypatch):
    from bcauto import worker

    class Study:
        stopped = 0

        def stop(self):
            self.stopped += 1

    rss = iter([1000.0, 1050.0, 1099.0, 1101.0])
    monkeypatch.setattr(worker, "resident_memory_mb", lambda: next(rss))
    study, recycle = Study(), worker.Recycle(limit=20, growth=worker.WorkerJob.memory_growth_limit)
    for expected in (0, 0, 0, 1):  # baseline 1000 MiB after the first trial; 1101 MiB is past +10%
        recycle(study, None)
        assert study.stopped == expected
    quota = worker.Recycle(limit=2, growth=10.0)
    monkeypatch.setattr(worker, "resident_memory_mb", lambda: 1000.0)
    study = Study()
    quota(study, None)
    assert study.stopped == 0
    quota(study, None)
    assert study.stopped == 1


def dead_trial_study(tmp_path, worker: str, started: float | None):
    """A study holding one RUNNING trial, with an MLflow run, 'run' by ``worker``: what a killed search leaves."""
    from bcauto.study import make_storage
    from bcauto.tracking import Tracker

    study = optuna.create_study(study_name="s", storage=make_storage(f"sqlite:///{tmp_path}/optuna.db"), direction="maximize")
    trial = study.ask()
    trial.suggest_float("lr_head", 1e-4, 1e-2, log=True)
    trial.suggest_categorical("backbone", ["mini_cnn", "resnet_cnn"])
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", experiment="s")
    run_id = tracker.start_run(None, "trial-000", {"bcauto.study": "s", "bcauto.trial": "0"})
    trial.set_user_attr("mlflow_run_id", run_id)
    trial.set_user_attr("worker", worker)
    if started is not None:
        trial.set_user_attr("worker_started", started)
    return study, tracker, run_id


def assert_failed_and_retried(study, tracker, run_id, reason_start="interrupted"):
    trials = study.get_trials()
    assert [t.state for t in trials] == [State.FAIL, State.WAITING]
    assert failure_reason(study, trials[0]).startswith(reason_start)
    assert trials[1].params == trials[0].params and trials[1].user_attrs == {"retry_of": 0}
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["bcauto.reason"].startswith(reason_start)


def test_a_trial_whose_worker_is_a_zombie_is_failed_and_retried_at_once(tmp_path):
    """kill -9 leaves the worker a zombie until someone reaps it, and `os.kill(pid, 0)` still succeeds on a
    zombie: the trial must not stay RUNNING, whatever the time since the kill."""
    import socket

    from bcauto.recovery import recover

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie, without a sleep
    try:
        study, tracker, run_id = dead_trial_study(tmp_path, f"{socket.gethostname()}:{child.pid}", None)
        failed, retried = recover(study, tracker)
    finally:
        child.wait()
    assert (failed, retried) == ([0], [0])
    assert_failed_and_retried(study, tracker, run_id)
    assert recover(study, tracker) == ([], []), "a trial is retried once, not at every resume"


def test_a_trial_whose_pid_now_belongs_to_another_process_is_failed(tmp_path):
    import socket

    from bcauto.recovery import recover

    worker = f"{socket.gethostname()}:{os.getpid()}"  # alive, but started long after the trial's worker
    study, tracker, run_id = dead_trial_study(tmp_path, worker, started=1.0)
    assert recover(study, tracker) == ([0], [0])
    assert_failed_and_retried(study, tracker, run_id)


def test_a_trial_of_another_host_is_failed_once_its_heartbeat_is_stale(tmp_path):
    """Another host's worker cannot be looked up; Optuna's heartbeat tells. A stale heartbeat is written
    directly, so the test waits on no clock."""
    import datetime

    from sqlalchemy import create_engine, text

    from bcauto.recovery import GRACE_PERIOD_S, recover

    study, tracker, run_id = dead_trial_study(tmp_path, "another-host:4242", started=1.0)
    assert recover(study, tracker) == ([], []), "a fresh trial of another host is left alone"
    old = datetime.datetime.now() - datetime.timedelta(seconds=GRACE_PERIOD_S + 60)
    with create_engine(f"sqlite:///{tmp_path}/optuna.db").begin() as db:
        db.execute(
            text("insert into trial_heartbeats (trial_id, heartbeat) select trial_id, :old from trials where number = 0"), {"old": old}
        )
    failed, _ = recover(study, tracker)
    assert failed == [0]
    assert_failed_and_retried(study, tracker, run_id)


def write_check_is_enforced(folder: Path) -> bool:
    """Whether a read-only folder refuses this process (root writes anywhere the mount allows)."""
    try:
        (folder / ".probe").touch()
    except OSError:
        return True
    (folder / ".probe").unlink()
    return False


@pytest.mark.parametrize(
    "case",
    [
        "storage in a read-only folder",
        "storage under a file",
        "storage in a missing folder",
        "tracking under a file",
        "tracking in a missing folder",
        "unreachable postgres",
        "unreachable tracking server",
    ],
)
def test_a_store_that_cannot_be_written_is_refused_before_anything_is_created(case, tmp_path, monkeypatch, capsys):
    from bcauto.cli import main

    (tmp_path / "a-file").write_text("not a folder")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    if case == "storage in a read-only folder" and not write_check_is_enforced(readonly):
        readonly.chmod(0o755)
        pytest.skip("this user writes into read-only folders (root); 'storage under a file' covers the refusal")
    storage, tracking = f"journal:{tmp_path}/optuna.journal", f"sqlite:///{tmp_path}/mlflow.db"
    storage, tracking, expected = {
        "storage in a read-only folder": (f"journal:{readonly}/optuna.journal", tracking, f"cannot write in the folder {readonly}"),
        "storage under a file": (f"journal:{tmp_path}/a-file/optuna.journal", tracking, f"{tmp_path}/a-file is a file, not a folder"),
        "storage in a missing folder": (
            f"sqlite:///{tmp_path}/missing/optuna.db",
            tracking,
            f"the folder {tmp_path}/missing does not exist",
        ),
        "tracking under a file": (storage, f"{tmp_path}/a-file/mlruns", f"{tmp_path}/a-file is a file, not a folder"),
        "tracking in a missing folder": (storage, f"file://{tmp_path}/missing/mlruns", f"the folder {tmp_path}/missing (where mlruns"),
        "unreachable postgres": ("postgresql://u:secret@127.0.0.1:1/db", tracking, "cannot connect to 127.0.0.1:1"),
        "unreachable tracking server": (storage, "http://127.0.0.1:9", "no MLflow server answers at http://127.0.0.1:9"),
    }[case]
    monkeypatch.chdir(tmp_path)  # the default stores, and MLflow's ./mlruns, would land here
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["search", "--data", "synthetic:160", "--trials", "1", "--storage", storage, "--tracking-uri", tracking])
    err = flat(capsys.readouterr().err)
    readonly.chmod(0o755)
    assert code == 2
    assert expected in err and "Traceback" not in err and "secret" not in err
    assert ("--storage" if case.startswith(("storage", "unreachable postgres")) else "--tracking-uri") in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "nothing was created"
    assert list(readonly.iterdir()) == []


def test_the_artifacts_of_a_local_sqlite_tracking_store_are_kept_beside_it_whatever_the_current_folder(tmp_path, monkeypatch):
    from bcauto.tracking import Tracker

    (tmp_path / "stores").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "note.txt").write_text("logged")
    monkeypatch.chdir(tmp_path / "elsewhere")
    tracker = Tracker(f"sqlite:///{tmp_path}/stores/mlflow.db", experiment="s")
    tracker.log_artifact(tracker.start_run(None, "trial-000", {}), tmp_path / "note.txt")
    assert [p.read_text() for p in (tmp_path / "stores" / "mlruns").rglob("note.txt")] == ["logged"]
    assert not (tmp_path / "elsewhere" / "mlruns").exists()
    # the default store, mlflow.db in the current folder, keeps them in ./mlruns as before
    monkeypatch.chdir(tmp_path / "stores")
    tracker = Tracker("sqlite:///mlflow.db", experiment="t")
    tracker.log_artifact(tracker.start_run(None, "trial-000", {}), tmp_path / "note.txt")
    assert len(list((tmp_path / "stores" / "mlruns").rglob("note.txt"))) == 2


def _write_half_then_fail(path, *args, **kwargs):
    Path(path).write_bytes(b"half a file")
    raise OSError(28, "No space left on device")


def test_a_model_directory_written_again_stays_whole_when_the_write_fails(tmp_path, monkeypatch):
    from helpers import untrained_model_dir

    from bcauto.bundle import load_bundle, save_bundle

    out = untrained_model_dir(tmp_path / "model", ["a", "b"])
    newer = untrained_model_dir(tmp_path / "newer", ["a", "b", "c"])
    model = load_bundle(newer).model
    monkeypatch.setattr(type(model), "save", lambda self, path, *a, **k: _write_half_then_fail(path))
    with pytest.raises(OSError, match="No space left"):
        save_bundle(model, {"class_names": ["a", "b", "c"], "image_size": 32}, out)
    kept = load_bundle(out)
    assert kept.class_names == ("a", "b") and kept.model.output_shape[-1] == 2
    assert sorted(p.name for p in out.iterdir()) == ["bcauto-model.json", "model.keras"]


def test_a_model_description_rewritten_stays_whole_when_the_write_fails(tmp_path, monkeypatch):
    from helpers import untrained_model_dir

    from bcauto.bundle import INFO_FILE, load_bundle, update_info

    out = untrained_model_dir(tmp_path / "model", ["a", "b"])
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: _write_half_then_fail(self))
    with pytest.raises(OSError, match="No space left"):
        update_info(out, {"class_names": ["a", "b"], "image_size": 32, "mlflow": {"run_id": "r"}})
    monkeypatch.undo()
    assert load_bundle(out).info.get("mlflow") is None
    assert sorted(p.name for p in out.iterdir()) == [INFO_FILE, "model.keras"]
    update_info(out, {"class_names": ["a", "b"], "image_size": 32, "mlflow": {"run_id": "r"}})
    assert load_bundle(out).info["mlflow"] == {"run_id": "r"}
