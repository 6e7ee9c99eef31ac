"""What an interrupted ``bcauto refit`` keeps, so that running the same command again goes on where it stopped.

Beside the model directory ``OUT``, ``OUT.partial/`` holds a folder per member (``trial_N/``): what the member is
(``key.json``: the data's fingerprint and size, the plan's parameters, the epochs and learning rates), the backup of
its training after each epoch while it trains (``backup/``, :func:`bcauto.training.train_fixed`), and once it is
trained its model and its entry of the model's info (``model.keras``, ``member.json``). The whole folder is removed
once the model directory is written and loads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bcauto.errors import BcautoError
from bcauto.files import write_text_whole, written_whole

MEMBER_MODEL = "model.keras"
MEMBER_INFO = "member.json"


def partial_dir(out: Path) -> Path:
    """Where a refit into ``out`` keeps its members until the model directory is written."""
    return out.with_name(out.name + ".partial")


class MemberCheckpoint:
    """One member's folder in :func:`partial_dir`, for the member ``key`` describes."""

    def __init__(self, folder: Path, key: dict[str, Any]):
        self.folder, self.key = folder, json.loads(json.dumps(key, default=str))
        self.backup_dir = folder / "backup"
        self.model_file = folder / MEMBER_MODEL

    def check(self) -> None:
        """Refuse a folder left by a refit of the same trial with other settings: its epochs are not this member's."""
        key_file = self.folder / "key.json"
        if not key_file.is_file():
            return
        saved = json.loads(key_file.read_text(encoding="utf-8"))
        changed = sorted(name for name in {*saved, *self.key} if saved.get(name) != self.key.get(name))
        if changed:
            raise BcautoError(
                f"{self.folder}: kept by an interrupted refit of the same trial with other {', '.join(changed)}; "
                f"delete {self.folder.parent} to start this refit over, or pass another --out"
            )

    def finished(self) -> dict[str, Any] | None:
        """The member's entry of the model's info, when it finished training before the interruption."""
        self.check()
        info = self.folder / MEMBER_INFO
        return json.loads(info.read_text(encoding="utf-8")) if info.is_file() and self.model_file.is_file() else None

    def begin(self) -> bool:
        """Ready the folder for training; True when a backup of earlier epochs is there to go on from."""
        self.check()
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_whole(self.folder / "key.json", json.dumps(self.key, indent=1))
        return self.backup_dir.is_dir()

    def finish(self, model, member: dict[str, Any]) -> None:
        """Keep the trained member; its epoch backups are no longer needed."""
        with written_whole(self.model_file) as staged:
            model.save(staged)
        write_text_whole(self.folder / MEMBER_INFO, json.dumps(member, indent=1, default=str))
        shutil.rmtree(self.backup_dir, ignore_errors=True)
