"""Removing what an audit flagged: a clean Dataset and the list of what was removed (for the logs)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bcauto.audit.report import AuditReport
from bcauto.data import Dataset
from bcauto.errors import BcautoError


def clean_dataset(data: Dataset, report: AuditReport, kinds=None) -> tuple[Dataset, list[dict]]:
    """``data`` without the images ``report`` flags (by ``kinds``, default all), and one dict per removed image.

    Each removed entry: ``index`` (in ``data``), ``path`` (where it is in the source, when the source names its
    images), ``label`` (class name), ``label_index``, ``kinds`` (what flagged it), ``reasons`` and ``group`` (its
    near-duplicate group id, shared with its copies). The report must come from this very dataset (same
    fingerprint), else a BcautoError. Classes left empty raise too.
    """
    if report.n_images != len(data.labels) or (report.fingerprint and report.fingerprint != data.fingerprint()):
        raise BcautoError(
            f"{data.source}: the audit report is of other data ({report.n_images} images, fingerprint "
            f"{report.fingerprint}); audit this dataset again before cleaning it"
        )
    flags = report.flag_map(kinds)
    removed_index = np.array(sorted(flags), np.int64)
    keep = np.ones(len(data.labels), bool)
    keep[removed_index] = False
    emptied = [
        data.class_names[c]
        for c in np.flatnonzero((data.class_counts() > 0) & (np.bincount(data.labels[keep], minlength=data.num_classes) == 0))
    ]
    if emptied:
        raise BcautoError(
            f"{data.source}: cleaning would remove every image of class(es) {', '.join(emptied)}; "
            "look at the audit's contact sheets (bcauto audit --out DIR) before cleaning"
        )
    near_group = report.scores.get("near_group")
    removed = []
    for i, kinds_of_i in flags.items():
        entry = {"index": int(i)}
        if data.item_names:
            entry["path"] = data.item_names[i]
        removed.append(
            {
                **entry,
                "label": data.class_names[data.labels[i]],
                "label_index": int(data.labels[i]),
                "kinds": kinds_of_i,
                "reasons": report.reasons.get(i, []),
                "group": int(near_group[i]) if near_group is not None else None,
            }
        )
    counts = ", ".join(
        f"{kind} {len(report.flagged_indices([kind]))}" for kind in (kinds or report.checks) if len(report.flagged_indices([kind]))
    )
    note = f"audit: removed {len(removed)} of {len(data.labels)} images ({counts or 'nothing flagged'})"
    cleaned = data.subset(np.flatnonzero(keep))
    return dataclasses.replace(cleaned, notes=(*data.notes, note)), removed


def audit_and_clean(data: Dataset, options=None, kinds=None) -> tuple[Dataset, list[dict], AuditReport]:
    """Audit ``data`` and remove what it flags: (clean data, removed entries, report)."""
    from bcauto.audit.run import audit

    report = audit(data, options)
    cleaned, removed = clean_dataset(data, report, kinds)
    return cleaned, removed, report


def write_clean_npz(data: Dataset, report: AuditReport, path: str | Path, kinds=None) -> tuple[Path, list[dict]]:
    """Write the cleaned images as an .npz (``images``, ``labels``, ``class_names``) that ``--data`` reads back."""
    path = Path(path).expanduser()
    if path.suffix.lower() != ".npz":
        raise BcautoError(f"--write-clean {path}: the file name must end in .npz")
    if not path.parent.is_dir():
        raise BcautoError(f"--write-clean {path}: folder {path.parent} does not exist")
    cleaned, removed = clean_dataset(data, report, kinds)
    try:
        np.savez_compressed(path, images=cleaned.images, labels=cleaned.labels, class_names=np.array(cleaned.class_names))
    except OSError as exc:
        raise BcautoError(f"--write-clean {path}: cannot write ({exc.strerror or exc})") from exc
    return path, removed
