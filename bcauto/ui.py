"""``bcauto ui``: the MLflow UI (and optuna-dashboard, when installed) for a study's stores."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

from bcauto.errors import BcautoError
from bcauto.uris import redact_uri

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def mlflow_ui_command(tracking_uri: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri, "--host", host, "--port", str(port)]


def experiment_url(tracking_uri: str, name: str | None, host: str, port: int) -> str:
    """The UI address, opened on the study's experiment when it exists."""
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    if not name:
        return base
    try:
        from mlflow.tracking import MlflowClient

        experiment = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(name)
    except Exception:
        experiment = None
    return f"{base}/#/experiments/{experiment.experiment_id}" if experiment else base


def serve(args, console) -> int:
    """Start the servers, print their URLs, and keep them running until Ctrl-C."""
    if args.host not in LOCAL_HOSTS:
        console.print(f"[yellow]warning:[/] serving on {args.host}: the MLflow UI has no login, anyone who can reach this address sees the runs")
    processes = [subprocess.Popen(mlflow_ui_command(args.tracking_uri, args.host, args.port))]
    console.print(f"MLflow UI ({redact_uri(args.tracking_uri)}): {experiment_url(args.tracking_uri, args.name, args.host, args.port)}")
    dashboard = shutil.which("optuna-dashboard")
    if dashboard:
        port = args.port + 1
        processes.append(subprocess.Popen([dashboard, args.storage, "--host", args.host, "--port", str(port)]))
        console.print(f"optuna-dashboard ({redact_uri(args.storage)}): http://{args.host}:{port}")
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        failed = [p for p in processes if p.returncode not in (0, None)]
        if failed:
            raise BcautoError(f"the UI server exited with code {failed[0].returncode}; is port {args.port} already in use?")
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for p in processes:
            if p.poll() is None:
                p.terminate()
