"""``audit(data, options)``: every check on one dataset, in one report."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields

import numpy as np

from bcauto.audit import near as near_module
from bcauto.audit import outliers as outlier_module
from bcauto.audit.blank import blank_or_corrupt
from bcauto.audit.hashing import exact_duplicate_groups
from bcauto.audit.report import KINDS, AuditReport
from bcauto.data import Dataset
from bcauto.errors import BcautoError


@dataclass(frozen=True)
class AuditOptions:
    """Settings of an audit. The defaults suit any blood-smear dataset; thresholds are in the units below.

    Attributes:
        checks: the kinds to look for (see ``bcauto.audit.KINDS``).
        near_threshold: band-passed correlation (0..1) at or above which two images are near duplicates.
        neighbours: near-duplicate candidates per image.
        colour_threshold: robust z-score of the colour check above which an image is an outlier.
        learned_threshold: robust z-score of the learned (robust covariance) detector above which an image is an outlier.
        bare_threshold: low-side robust z-score of the bare-frame check (red cells, fine detail) above which an image
            is an outlier.
        seed: seed of the robust covariance fit.
    """

    checks: tuple[str, ...] = KINDS
    near_threshold: float = near_module.THRESHOLD
    neighbours: int = near_module.NEIGHBOURS
    colour_threshold: float = outlier_module.COLOUR_THRESHOLD
    learned_threshold: float = outlier_module.LEARNED_THRESHOLD
    bare_threshold: float = outlier_module.BARE_THRESHOLD
    seed: int = 0

    @classmethod
    def from_mapping(cls, values: dict | None, where: str = "audit options") -> AuditOptions:
        """Options from a dict (a study file's table, say); unknown keys and bad values are BcautoErrors."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise BcautoError(f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "checks" in values:
            values["checks"] = tuple(values["checks"])
        options = cls(**values)
        options.check(where)
        return options

    def check(self, where: str = "audit options") -> None:
        bad = [k for k in self.checks if k not in KINDS]
        if bad:
            raise BcautoError(f"{where}: unknown check(s) {', '.join(map(repr, bad))}; checks: {', '.join(KINDS)}")
        if not 0 < self.near_threshold <= 1:
            raise BcautoError(f"{where}: near_threshold must lie in (0, 1], got {self.near_threshold}")
        if self.neighbours < 1:
            raise BcautoError(f"{where}: neighbours must be 1 or more, got {self.neighbours}")
        for name in ("colour_threshold", "learned_threshold", "bare_threshold"):
            if not getattr(self, name) > 0:
                raise BcautoError(f"{where}: {name} must be positive, got {getattr(self, name)}")


def audit(data: Dataset, options: AuditOptions | dict | None = None, progress=None) -> AuditReport:
    """Look for exact and near duplicates, label conflicts, blank/corrupt images and outliers in ``data``.

    ``options``: AuditOptions, a dict of its fields, or None for the defaults. ``progress``: an optional
    callable taking a message, called as each step starts. Indices in the report are positions in ``data``;
    the report also names each image (``data.item_names``) and carries the source's notes and left-out files.
    """
    if not isinstance(options, AuditOptions):
        options = AuditOptions.from_mapping(options)
    options.check()
    say = progress or (lambda message: None)
    images, labels, n = data.images, data.labels, len(data.labels)
    timings: dict[str, float] = {}
    notes: list[str] = list(data.notes)  # what loading skipped or ignored belongs in the report, not only on screen
    checks = set(options.checks)
    groups: dict[str, list[list[int]]] = {}
    flagged: dict[str, list[int]] = {}
    reasons: dict[int, list[str]] = {}
    scores: dict[str, np.ndarray] = {}

    say("exact duplicates")
    start = time.perf_counter()
    exact = exact_duplicate_groups(images)
    timings["exact_duplicates"] = time.perf_counter() - start
    if "exact_duplicates" in checks:
        groups["exact_duplicates"] = _groups(exact)

    near_ids = exact
    if checks & {"near_duplicates", "label_conflicts"}:
        say("near duplicates")
        start = time.perf_counter()
        found = near_module.near_duplicate_pairs(images, options.near_threshold, options.neighbours, exact)
        near_ids = found.groups(exact, options.near_threshold)
        timings["near_duplicates"] = time.perf_counter() - start
        if "near_duplicates" in checks:
            groups["near_duplicates"] = [g for g in _groups(near_ids) if len(np.unique(exact[g])) > 1]
        if "label_conflicts" in checks:
            groups["label_conflicts"] = [g for g in _groups(near_ids) if len(np.unique(labels[g])) > 1]
            for group in groups["label_conflicts"]:
                names = ", ".join(sorted({data.class_names[labels[i]] for i in group}))
                for i in group:
                    reasons.setdefault(i, []).append(f"copies of this image are filed as {names}")
    scores["near_group"] = near_ids

    say("blank and corrupt images")
    start = time.perf_counter()
    broken = blank_or_corrupt(images)
    timings["blank_or_corrupt"] = time.perf_counter() - start
    is_broken = np.array([bool(r) for r in broken])
    if "blank_or_corrupt" in checks:
        flagged["blank_or_corrupt"] = np.flatnonzero(is_broken).tolist()
        for i in flagged["blank_or_corrupt"]:
            reasons.setdefault(i, []).append(broken[i])

    if "outliers" in checks:
        say("outliers (colour and texture features)")
        start = time.perf_counter()
        fit = ~is_broken
        _, first = np.unique(exact, return_index=True)
        once = np.zeros(n, bool)
        once[first] = True
        result = outlier_module.detect_outliers(
            images, fit & once, options.seed, options.colour_threshold, options.learned_threshold, labels, options.bare_threshold
        )
        timings["outliers"] = time.perf_counter() - start
        if "blank_or_corrupt" in checks:  # listed there already, with what this check saw added to the reasons:
            # a cell pasted over a flat fill has identical rows like a truncated file, but is a foreign picture
            flagged["outliers"] = np.flatnonzero(result.flagged & ~is_broken).tolist()
            for i in np.flatnonzero(result.flagged & is_broken):
                reasons.setdefault(int(i), []).append(result.reasons[i])
        else:
            flagged["outliers"] = np.flatnonzero(result.flagged | is_broken).tolist()
        for i in flagged["outliers"]:
            reasons.setdefault(i, []).append(result.reasons[i] or broken[i])
        scores["colour"], scores["learned"], scores["bare"] = result.colour, result.learned, result.bare
        notes += result.notes
    return AuditReport(
        source=data.source,
        n_images=n,
        image_size=data.image_size,
        class_names=tuple(data.class_names),
        labels=labels,
        groups=groups,
        flagged=flagged,
        reasons=reasons,
        scores=scores,
        checks=tuple(k for k in KINDS if k in checks),
        thresholds={k: v for k, v in asdict(options).items() if k.endswith("threshold")},
        timings=timings,
        notes=notes,
        fingerprint=data.fingerprint(),
        item_names=tuple(data.item_names),
        left_out=tuple(data.left_out),
    )


def _groups(ids: np.ndarray) -> list[list[int]]:
    """Groups of two or more images sharing an id, each in index order, ordered by first image."""
    order = np.argsort(ids, kind="stable")
    bounds = np.flatnonzero(np.diff(ids[order])) + 1
    out = [part.tolist() for part in np.split(order, bounds) if len(part) > 1]
    return sorted(out, key=lambda g: g[0])
