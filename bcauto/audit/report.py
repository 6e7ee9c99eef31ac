"""What an audit found: groups of copies, flagged images with reasons, scores, counts; JSON in and out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KINDS = ("exact_duplicates", "near_duplicates", "label_conflicts", "blank_or_corrupt", "outliers")
GROUP_KINDS = ("exact_duplicates", "near_duplicates", "label_conflicts")
DESCRIPTIONS = {
    "exact_duplicates": "byte-identical copies; all but the first of each group are flagged",
    "near_duplicates": (
        "copies re-encoded, brightened, shifted or cropped (exact copies included); all but the first of each group are flagged"
    ),
    "label_conflicts": "copies (exact or near) filed under different classes; every member is flagged, its label cannot be trusted",
    "blank_or_corrupt": "one colour everywhere, bands of identical rows or columns, or pure noise",
    "outliers": "not one cell on a smear background: a foreign picture behind the cell, unusual colours or texture",
}


@dataclass
class AuditReport:
    """The audit of one dataset.

    ``groups[kind]`` (for GROUP_KINDS) lists groups of image indices, first image first; ``flagged[kind]``
    (blank_or_corrupt, outliers) lists image indices; ``reasons`` says why each of those was flagged.
    ``scores`` holds per-image arrays (``colour``, ``learned`` and ``bare`` outlier z-scores, ``near_group`` ids).
    ``item_names`` names each image within ``source`` (a path relative to a folder, ``images[17]`` in an
    .npz; empty for generated data); ``left_out`` lists ``(name, why)`` for each file the source did not load.
    ``notes`` holds the data source's notes (conversions, skipped and ignored files), then the audit's own.
    """

    source: str
    n_images: int
    image_size: int
    class_names: tuple[str, ...]
    labels: np.ndarray
    groups: dict[str, list[list[int]]]
    flagged: dict[str, list[int]]
    reasons: dict[int, list[str]]
    scores: dict[str, np.ndarray]
    thresholds: dict[str, float]
    checks: tuple[str, ...] = KINDS
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    fingerprint: str = ""
    item_names: tuple[str, ...] = ()
    left_out: tuple[tuple[str, str], ...] = ()

    # ---- queries -------------------------------------------------------------------------------------------

    def item_name(self, index: int) -> str | None:
        """Where image ``index`` is within the source (a relative path, ``images[17]``), or None without names."""
        return self.item_names[index] if self.item_names else None

    def flagged_indices(self, kinds=None) -> np.ndarray:
        """Sorted indices of the images the given kinds (default: all) flag for removal.

        Duplicates keep the first image of each group; label conflicts flag every member; blank, corrupt and
        outlier images are flagged themselves.
        """
        kinds = self._kinds(kinds)
        out: set[int] = set()
        for kind in kinds:
            if kind in ("exact_duplicates", "near_duplicates"):
                for group in self.groups.get(kind, []):
                    out.update(group[1:])
            elif kind == "label_conflicts":
                for group in self.groups.get(kind, []):
                    out.update(group)
            else:
                out.update(self.flagged.get(kind, []))
        return np.array(sorted(out), np.int64)

    def group_ids(self, kind: str) -> np.ndarray:
        """Per image: the index of its group in ``groups[kind]``, or -1 when it is in none."""
        ids = np.full(self.n_images, -1, np.int64)
        for g, group in enumerate(self.groups.get(kind, [])):
            ids[group] = g
        return ids

    def flag_map(self, kinds=None) -> dict[int, list[str]]:
        """Each flagged image (by the given kinds, default all) with the kinds that flag it."""
        out: dict[int, list[str]] = {}
        for kind in self._kinds(kinds):
            for i in self.flagged_indices([kind]).tolist():
                out.setdefault(i, []).append(kind)
        return dict(sorted(out.items()))

    def summary(self) -> dict[str, dict[str, int]]:
        """Per kind: groups found (group kinds), images involved, images flagged for removal."""
        out = {}
        for kind in self.checks:
            flagged = len(self.flagged_indices([kind]))
            if kind in GROUP_KINDS:
                groups = self.groups.get(kind, [])
                out[kind] = {"groups": len(groups), "images": sum(len(g) for g in groups), "flagged": flagged}
            else:
                out[kind] = {"images": len(self.flagged.get(kind, [])), "flagged": flagged}
        out["all"] = {"flagged": len(self.flagged_indices()), "kept": self.n_images - len(self.flagged_indices())}
        return out

    def class_distribution(self) -> list[dict]:
        """Per class: images, flagged (any kind), kept."""
        total = np.bincount(self.labels, minlength=len(self.class_names))
        flagged = np.bincount(self.labels[self.flagged_indices()], minlength=len(self.class_names))
        return [
            {"class": name, "label": c, "images": int(total[c]), "flagged": int(flagged[c]), "kept": int(total[c] - flagged[c])}
            for c, name in enumerate(self.class_names)
        ]

    def _kinds(self, kinds) -> tuple[str, ...]:
        if kinds is None:
            return tuple(self.checks)
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown audit kind(s) {', '.join(map(repr, unknown))}; kinds: {', '.join(KINDS)}")
        return kinds

    # ---- JSON ----------------------------------------------------------------------------------------------

    def to_dict(self, include_scores: bool = False) -> dict:
        """A JSON-ready dict: counts, class distribution, groups and flagged images with labels and reasons."""

        def item(i: int) -> dict:
            entry = {"index": int(i)}
            if self.item_names:
                entry["path"] = self.item_names[i]
            entry["label"] = self.class_names[self.labels[i]]
            if i in self.reasons:
                entry["reasons"] = self.reasons[i]
            if "colour" in self.scores:
                entry["colour_z"] = round(float(self.scores["colour"][i]), 2)
                entry["learned_z"] = round(float(self.scores["learned"][i]), 2)
                entry["bare_z"] = round(float(self.scores["bare"][i]), 2)
            return entry

        kinds = {}
        for kind in self.checks:
            entry = {"description": DESCRIPTIONS[kind], **self.summary()[kind]}
            if kind in GROUP_KINDS:
                entry["groups"] = [[item(i) for i in group] for group in self.groups.get(kind, [])]
            else:
                entry["flagged_images"] = [item(i) for i in self.flagged.get(kind, [])]
            kinds[kind] = entry
        out = {
            "source": self.source,
            "images": self.n_images,
            "image_size": self.image_size,
            "fingerprint": self.fingerprint,
            "class_names": list(self.class_names),
            "class_distribution": self.class_distribution(),
            "flagged": len(self.flagged_indices()),
            "kept": self.n_images - len(self.flagged_indices()),
            "kinds": kinds,
            "thresholds": self.thresholds,
            "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
            "notes": self.notes,
            "left_out": [{"path": name, "why": why} for name, why in self.left_out],
        }
        if include_scores:
            out["scores"] = {k: np.round(v, 3).tolist() for k, v in self.scores.items()}
        return out

    def to_json(self, path: str | Path | None = None, include_scores: bool = False) -> str:
        text = json.dumps(self.to_dict(include_scores), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text
