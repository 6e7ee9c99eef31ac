"""Files written whole: whoever reads one (a rerun, another worker, a user) meets the old file or the new one,
never half of the new one."""

from __future__ import annotations

import glob
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

ABANDONED_AFTER_S = 600  # far longer than a writer leaves its staged file untouched before the rename


@contextmanager
def written_whole(path: Path) -> Iterator[Path]:
    """A new, uniquely named file beside ``path`` to write into; renamed over ``path`` when the block ends, removed
    (and ``path`` left as it was) when it raises or is interrupted.

    Beside, so that the rename is atomic (one file system); uniquely named, so that two processes writing the same
    file at once each finish their own; ending in ``path``'s name, so that writers that check the suffix (Keras's
    ``.keras``, NumPy's ``.npz``) accept it. The name holds the writer's machine and process, so that a later write
    of the same file removes what a killed writer (SIGKILL, out of memory) left: :func:`remove_abandoned`.
    """
    remove_abandoned(path)
    staged = path.with_name(f".writing-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield staged  # created by the writer, with its usual mode
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


def remove_abandoned(path: Path) -> None:
    """Remove the files staged for ``path`` by processes of this machine that are gone, untouched for
    ``ABANDONED_AFTER_S``. A staged file of a live process, or of another machine sharing the folder, is left alone:
    it may be being written. The age guards against containers that share a host name but not process numbers
    (Docker's host network)."""
    pattern = re.compile(rf"\.writing-{re.escape(socket.gethostname())}-(\d+)-[0-9a-f]{{8}}-{re.escape(path.name)}")
    for staged in path.parent.glob(f".writing-*-{glob.escape(path.name)}"):  # a name may hold [ or *
        match = pattern.fullmatch(staged.name)
        if match and not psutil.pid_exists(int(match.group(1))) and _age_s(staged) > ABANDONED_AFTER_S:
            staged.unlink(missing_ok=True)


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:  # finished or removed meanwhile
        return 0.0


def write_text_whole(path: Path, text: str) -> None:
    """``path.write_text(text)`` (UTF-8), written whole (:func:`written_whole`)."""
    with written_whole(path) as staged:
        staged.write_text(text, encoding="utf-8")
