"""`bcauto ui` without a browser or a server: URLs, the busy-port error, optuna-dashboard's command line."""

import socket
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from bcauto import ui
from bcauto.cli import main
from bcauto.errors import BcautoError


def args(**overrides):
    values = {"name": None, "tracking_uri": "sqlite:///mlflow.db", "storage": "sqlite:///optuna.db", "host": "127.0.0.1", "port": 5000}
    return SimpleNamespace(**{**values, **overrides})


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    return uri, client.create_experiment("tiny", tags={"bcauto": "study"})


def test_experiment_url_opens_the_study_in_the_model_training_view(store):
    uri, experiment_id = store
    expected = f"http://127.0.0.1:5000/#/experiments/{experiment_id}?workflowType=machine_learning"
    assert ui.experiment_url(uri, "tiny", "http://127.0.0.1:5000") == expected
    assert ui.experiment_url(uri, None, "http://127.0.0.1:5000") == expected  # the store's only study
    assert ui.experiment_url(uri, "other", "http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert ui.experiment_url("sqlite:////nonexistent/dir/x.db", "tiny", "http://h:1") == "http://h:1"


def test_base_url_for_wildcard_and_ipv6_hosts():
    assert ui.base_url("0.0.0.0", 5000) == "http://127.0.0.1:5000"
    assert ui.base_url("::1", 5000) == "http://[::1]:5000"
    assert ui.base_url("example.org", 80) == "http://example.org:80"


def test_a_busy_port_is_a_clear_error_before_any_server_starts(monkeypatch, capsys):
    started = []
    monkeypatch.setattr(ui.subprocess, "Popen", lambda *a, **k: started.append(a))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(BcautoError, match=f"127.0.0.1:{port}.*--port"):
            ui.serve(args(port=port), Console())
        assert main(["ui", "--port", str(port), "--tracking-uri", "sqlite:///unused.db"]) == 2
    assert "Pass --port" in capsys.readouterr().err
    assert not started


def test_a_tracking_server_uri_starts_nothing_and_prints_its_address(monkeypatch, capsys):
    monkeypatch.setattr(ui.subprocess, "Popen", lambda *a, **k: pytest.fail("nothing should start"))
    monkeypatch.setattr(ui, "find_experiment", lambda uri, name: None)
    assert ui.serve(args(tracking_uri="http://user:secret@mlflow.example:5000"), Console(width=200)) == 0
    out = capsys.readouterr().out
    assert "http://user:***@mlflow.example:5000" in out and "secret" not in out


def test_a_non_local_host_is_warned_about(monkeypatch, capsys):
    monkeypatch.setattr(ui, "check_port_free", lambda *a: (_ for _ in ()).throw(BcautoError("stop here")))
    with pytest.raises(BcautoError):
        ui.serve(args(host="0.0.0.0"), Console(width=200))
    assert "no login" in capsys.readouterr().out


def test_dashboard_command_reads_bcauto_journal_urls(monkeypatch):
    monkeypatch.setattr(ui.shutil, "which", lambda name, path=None: "/bin/optuna-dashboard")
    assert ui.dashboard_command("journal:/data/optuna.journal", "127.0.0.1", 5001) == [
        "/bin/optuna-dashboard",
        "/data/optuna.journal",
        "--storage-class",
        "JournalFileStorage",
        "--host",
        "127.0.0.1",
        "--port",
        "5001",
    ]
    assert ui.dashboard_command("sqlite:///optuna.db", "127.0.0.1", 5001)[1] == "sqlite:///optuna.db"
    monkeypatch.setattr(ui.shutil, "which", lambda name, path=None: None)
    assert ui.dashboard_command("sqlite:///optuna.db", "127.0.0.1", 5001) is None


def test_ctrl_c_stops_the_server_and_every_process_it_started_before_the_command_returns(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    with socket.socket() as probe:  # a port free now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "bcauto.cli",
        "ui",
        "--tracking-uri",
        f"sqlite:///{tmp_path}/mlflow.db",
        "--storage",
        f"sqlite:///{tmp_path}/optuna.db",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"}
    )
    try:
        lines = []
        for line in process.stdout:  # until the servers are up
            lines.append(line)
            if "Ctrl-C stops" in line:
                break
        assert any("Ctrl-C stops" in line for line in lines), "".join(lines)
        started = psutil.Process(process.pid).children(recursive=True)
        # the servers run in their own sessions: Ctrl-C in a terminal reaches only bcauto, which must stop them
        assert started and all(os.getsid(child.pid) != os.getsid(process.pid) for child in started)
        began = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        took = time.monotonic() - began
        alive = [child for child in started if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"still running after bcauto ui returned: {[child.cmdline() for child in alive]}"
        assert took < ui.STOP_TIMEOUT_S + 5
        assert "stopped" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
