"""Storage and tracking URIs: shown to people without passwords, and checked before a search creates anything."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from bcauto.errors import BcautoError

CONNECT_TIMEOUT_S = 5
DATABASE_SCHEMES = ("postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle")


def redact_uri(uri: str | None) -> str:
    """``uri`` with any password replaced by ``***``."""
    if not uri:
        return ""
    return re.sub(r"(?<=://)([^:/@]+):(.*)@(?=[^@]*$)", r"\1:***@", uri)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, without the driver's hints and background links."""
    text = " ".join(str(exc).split("(Background on this error")[0].split())
    return text[:300] or type(exc).__name__


def folder_problem(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (None when they can): tried for real, since permission bits do not
    tell (root, read-only mounts, ACLs)."""
    if not folder.exists():
        missing = folder
        while not missing.parent.exists() and missing.parent != missing:
            missing = missing.parent
        if missing.parent.exists() and not missing.parent.is_dir():
            return f"{missing.parent} is a file, not a folder"
        return f"the folder {folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".bcauto-write-check-"):
            pass
    except OSError as exc:
        return f"cannot write in the folder {folder} ({exc.strerror or exc})"
    return None


def file_problem(path: Path) -> str | None:
    """Why a store file at ``path`` cannot be created or written (None when it can); SQLite and the journal also
    write lock and journal files beside it, so its folder must be writable too."""
    if path.is_dir():
        return f"{path} is a folder, not a file"
    problem = folder_problem(path.parent if str(path.parent) else Path("."))
    if problem or not path.exists():
        return problem
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
    except OSError as exc:
        return f"cannot write the file {path} ({exc.strerror or exc})"
    return None


def database_problem(url: str) -> str | None:
    """Why the database server at ``url`` cannot be used (None when a connection opens)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    try:
        parsed = make_url(url)
    except (SQLAlchemyError, ValueError) as exc:
        return f"not a database URL ({one_line(exc)})"
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            return None
        return file_problem(Path(parsed.database))
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if backend in ("postgresql", "mysql", "mariadb") else {}
    try:
        engine = create_engine(url, connect_args=connect_args)
    except ModuleNotFoundError as exc:
        extra = ' (pip install "bcauto[postgres]")' if backend == "postgresql" else ""
        return f"its database driver is not installed: {exc.name}{extra}"
    except (SQLAlchemyError, ValueError, TypeError) as exc:
        return f"not a usable database URL ({one_line(exc)})"
    try:
        with engine.connect():
            pass
    except (SQLAlchemyError, OSError) as exc:
        orig = getattr(exc, "orig", None) or exc
        return f"cannot connect to {parsed.host or 'the server'}{f':{parsed.port}' if parsed.port else ''} ({one_line(orig)})"
    finally:
        engine.dispose()
    return None


def artifact_root(tracking_uri: str) -> str | None:
    """Where a new MLflow experiment keeps its artifacts: ``mlruns`` beside a local SQLite tracking store, so that a
    study's stores stay together whichever folder a command runs from (MLflow's default is ``./mlruns`` of the
    current folder); None, MLflow's default, for every other store."""
    if urlparse(tracking_uri).scheme != "sqlite":
        return None
    from sqlalchemy.engine import make_url

    database = make_url(tracking_uri).database
    if not database or database == ":memory:":
        return None
    return (Path(database).resolve().parent / "mlruns").as_uri()


def check_optuna_storage(url: str) -> None:
    """Refuse an Optuna storage URL a search could not write, before anything is created."""
    if url.startswith("journal:"):
        path = url[len("journal:") :]
        problem = "no file named after journal:" if not path else file_problem(Path(path))
    else:
        problem = database_problem(url)
    if problem:
        raise BcautoError(f"--storage {redact_uri(url)}: {problem}")


def http_problem(uri: str) -> str | None:
    """Why nothing answers HTTP at ``uri`` (None when a server answers, whatever its reply)."""
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=CONNECT_TIMEOUT_S)
    except requests.exceptions.RequestException as exc:
        reason = exc.__class__.__name__
        if isinstance(exc, requests.exceptions.ConnectionError):
            reason = "connection refused or host unreachable"
        elif isinstance(exc, requests.exceptions.Timeout):
            reason = f"no answer within {CONNECT_TIMEOUT_S} s"
        return f"no MLflow server answers at {redact_uri(uri)} ({reason})"
    return None


def check_tracking_uri(uri: str) -> None:
    """Refuse an MLflow tracking URI a search could not write, before anything is created.

    Checked: a local file store's folder, a SQLite file, a database server, and that an HTTP server answers. A
    tracking store that fails later, during the search, costs no trial: tracking problems become warnings.
    """
    scheme = urlparse(uri).scheme.split("+")[0].lower()
    if scheme in ("http", "https"):
        problem = http_problem(uri)
    elif scheme == "sqlite" or scheme in DATABASE_SCHEMES:
        problem = database_problem(uri)
    elif scheme in ("", "file"):  # a file store: MLflow creates the folder (and its parents would be a typo)
        folder = Path(urlparse(uri).path if scheme == "file" else uri)
        problem = folder_problem(folder) if folder.exists() else folder_problem(folder.parent)
        if problem and not folder.exists() and "does not exist" in problem:
            problem = f"the folder {folder.parent} (where {folder.name} would be created) does not exist"
    else:  # databricks, uc, plugins' schemes: left to MLflow
        problem = None
    if problem:
        raise BcautoError(f"--tracking-uri {redact_uri(uri)}: {problem}")


def check_stores(storage: str, tracking_uri: str) -> None:
    """Both stores of a search, checked before either is opened: one line naming the URI and the cause."""
    check_optuna_storage(storage)
    check_tracking_uri(tracking_uri)
