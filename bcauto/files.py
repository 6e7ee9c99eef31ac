"""Files written whole: whoever reads one (a rerun, another worker, a user) meets the old file or the new one,
never half of the new one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def written_whole(path: Path) -> Iterator[Path]:
    """A new, uniquely named file beside ``path`` to write into; renamed over ``path`` when the block ends, removed
    (and ``path`` left as it was) when it raises or is interrupted.

    Beside, so that the rename is atomic (one file system); uniquely named, so that two processes writing the same
    file at once each finish their own; ending in ``path``'s name, so that writers that check the suffix (Keras's
    ``.keras``, NumPy's ``.npz``) accept it.
    """
    staged = path.with_name(f".writing-{uuid.uuid4().hex[:12]}-{path.name}")  # created by the writer, with its usual mode
    try:
        yield staged
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


def write_text_whole(path: Path, text: str) -> None:
    """``path.write_text(text)`` (UTF-8), written whole (:func:`written_whole`)."""
    with written_whole(path) as staged:
        staged.write_text(text, encoding="utf-8")
