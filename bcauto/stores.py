"""Optuna storages: opening one from a URL, the file it names, and loading an existing study from it."""

from __future__ import annotations

from pathlib import Path

import optuna

from bcauto.errors import BcautoError
from bcauto.recovery import heartbeat_options
from bcauto.uris import redact_uri


def make_storage(url: str):
    """An Optuna storage for a URL: RDB (SQLite, PostgreSQL, MySQL) with heartbeats, or a journal file (one host:
    its dead workers' trials are found by process, see :mod:`bcauto.recovery`)."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:") :]))
    try:
        return optuna.storages.RDBStorage(url, **heartbeat_options())
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy and drivers raise many types; all mean "cannot open"
        raise BcautoError(f"cannot open the Optuna storage {redact_uri(url)}: {exc}") from None


def storage_file(url: str) -> Path | None:
    """The file a SQLite or journal storage URL names (None for a database server or an in-memory SQLite)."""
    if url.startswith("journal:"):
        return Path(url[len("journal:") :])
    if url.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        database = make_url(url).database
        return Path(database) if database and database != ":memory:" else None
    return None


def load_existing_study(name: str | None, storage: str) -> optuna.Study:
    """The study ``name`` in ``storage`` (the only one there when ``name`` is None); never creates a store."""
    missing = storage_file(storage)
    if missing is not None and not missing.is_file():  # opening it would create an empty store
        raise BcautoError(f"no Optuna storage at {missing}; run `bcauto search` first, or pass --storage")
    store = make_storage(storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(store)]
    if not names:
        raise BcautoError(f"no study in {storage}; run `bcauto search` first")
    if name is None:
        if len(names) > 1:
            raise BcautoError(f"{storage} holds several studies ({', '.join(names)}); pass --name")
        name = names[0]
    if name not in names:
        raise BcautoError(f"no study named {name!r} in {storage}; studies there: {', '.join(names)}")
    return optuna.load_study(study_name=name, storage=store)
