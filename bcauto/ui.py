"""``bcauto ui``: the MLflow UI (and optuna-dashboard, when installed) for a study's stores.

The servers run in their own process groups, so that Ctrl-C (or SIGTERM) here stops them with every
worker they started; nothing is left listening on the port afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.markup import escape

from bcauto.errors import BcautoError
from bcauto.uris import redact_uri

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0


def mlflow_ui_command(tracking_uri: str, host: str, port: int) -> list[str]:
    # one worker: a UI for the people running the study, not a shared tracking server
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        tracking_uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def dashboard_command(storage: str, host: str, port: int) -> list[str] | None:
    """optuna-dashboard on the study's storage, or None when it is not installed."""
    found = shutil.which("optuna-dashboard") or shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    if not found:
        return None
    if storage.startswith("journal:"):  # bcauto's spelling of a journal file
        return [found, storage[len("journal:") :], "--storage-class", "JournalFileStorage", "--host", host, "--port", str(port)]
    return [found, storage, "--host", host, "--port", str(port)]


def base_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in WILDCARD_HOSTS else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def find_experiment(tracking_uri: str, name: str | None):
    """The study's MLflow experiment: by name, else the only bcauto study in the store; None if there is none."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    if name:
        return client.get_experiment_by_name(name)
    studies = client.search_experiments(filter_string="tags.bcauto = 'study'")
    return studies[0] if len(studies) == 1 else None


def experiment_url(tracking_uri: str, name: str | None, base: str) -> str:
    """The UI address ``base``, opened on the study's experiment when it exists."""
    try:
        experiment = find_experiment(tracking_uri, name)
    except Exception:
        experiment = None
    if not experiment:
        return base
    # the UI of MLflow 3 opens on GenAI tracing unless told that this is model training
    return f"{base.rstrip('/')}/#/experiments/{experiment.experiment_id}?workflowType=machine_learning"


def check_port_free(host: str, port: int, what: str) -> None:
    """Fail now, with a clear message, when something already listens on ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # like the servers: a port in TIME_WAIT is free, one with a listener is not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise BcautoError(
                f"cannot serve the {what} on {host}:{port}: {exc.strerror or exc}; "
                f"is another `bcauto ui` or `mlflow ui` running? Pass --port to use another port"
            ) from None


def listening(host: str, port: int) -> bool:
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    try:
        with socket.create_connection((target, port), timeout=1):
            return True
    except OSError:
        return False


class Server:
    """One server process in its own process group, its output in a log file."""

    def __init__(self, name: str, command: list[str], log_dir: Path):
        self.name = name
        self.log = log_dir / f"{name.replace(' ', '-')}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait()
        self._signal(signal.SIGKILL)  # workers the server left behind

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def wait_until_listening(server: Server, host: str, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not listening(host, port):
        if server.process.poll() is not None:
            raise BcautoError(
                f"the {server.name} exited with code {server.process.returncode} before serving on {host}:{port}:\n{server.tail()}"
            )
        if time.monotonic() > deadline:
            raise BcautoError(f"the {server.name} did not start listening on {host}:{port} in {START_TIMEOUT_S:.0f} s:\n{server.tail()}")
        time.sleep(0.25)


def serve(args, console) -> int:
    """Start the servers, print their URLs, and keep them running until Ctrl-C."""
    if args.tracking_uri.startswith(("http://", "https://")):
        # already a tracking server, with its own UI: nothing to start
        url = experiment_url(args.tracking_uri, args.name, redact_uri(args.tracking_uri))
        console.print(f"MLflow UI of the tracking server: {escape(url)}", soft_wrap=True)
        return 0
    if args.host not in LOCAL_HOSTS:
        console.print(
            f"[yellow]warning:[/] serving on {escape(args.host)}: the MLflow UI has no login, anyone who can reach "
            "this address sees (and can change) the runs"
        )
    check_port_free(args.host, args.port, "MLflow UI")
    dashboard = dashboard_command(args.storage, args.host, args.port + 1)
    if dashboard:
        try:
            check_port_free(args.host, args.port + 1, "optuna-dashboard")
        except BcautoError as exc:
            console.print(f"[yellow]warning:[/] {escape(str(exc))}; starting the MLflow UI only")
            dashboard = None

    # Ctrl-C stops the servers, even where SIGINT came ignored (a job started with `&` by a script); SIGTERM does what
    # Ctrl-C does (bcauto.interrupts)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    servers: list[Server] = []
    log_dir = Path(tempfile.mkdtemp(prefix="bcauto-ui-"))
    try:
        servers.append(Server("MLflow UI", mlflow_ui_command(args.tracking_uri, args.host, args.port), log_dir))
        if dashboard:
            servers.append(Server("optuna-dashboard", dashboard, log_dir))
        wait_until_listening(servers[0], args.host, args.port)
        url = experiment_url(args.tracking_uri, args.name, base_url(args.host, args.port))
        console.print(f"MLflow UI ({escape(redact_uri(args.tracking_uri))}): {escape(url)}", soft_wrap=True)
        if "/#/experiments/" not in url:
            console.print(
                f"[yellow]note:[/] no MLflow experiment named {escape(args.name)!r} in "
                f"{escape(redact_uri(args.tracking_uri))} yet; run `bcauto search` first"
                if args.name
                else "note: opened on the list of experiments; `--name STUDY` opens one study",
                soft_wrap=True,
            )
        if dashboard:
            wait_until_listening(servers[1], args.host, args.port + 1)
            console.print(
                f"optuna-dashboard ({escape(redact_uri(args.storage))}): {escape(base_url(args.host, args.port + 1))}", soft_wrap=True
            )
        console.print("Ctrl-C stops the server" + ("s" if len(servers) > 1 else ""), highlight=False)
        while True:
            for server in servers:
                if server.process.poll() is not None:
                    raise BcautoError(f"the {server.name} exited with code {server.process.returncode}:\n{server.tail()}")
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopped")
        return 0
    finally:
        for server in servers:
            server.stop()
        signal.signal(signal.SIGINT, previous)
        shutil.rmtree(log_dir, ignore_errors=True)
