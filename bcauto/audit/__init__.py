"""Data audit: exact and near duplicates, label conflicts, blank/corrupt images and outliers (images that are
not one cell on a smear background, such as cells pasted over a foreign picture).

    report = audit(data)                     # bcauto.data.Dataset -> AuditReport
    report.flagged_indices(kinds=("outliers",))
    cleaned, removed = clean_dataset(data, report)
    groups = near_duplicate_groups(images)   # group id per image, for a leak-free split

Modules, one job each: ``hashing`` (exact copies), ``near`` (near copies), ``blank`` (blank/corrupt rules),
``features`` and ``colour`` (what the outlier detector sees), ``outliers`` (the detector), ``report``,
``run`` (the audit), ``clean`` (removal), ``render`` (JSON, contact sheets, terminal tables), ``command``
(``bcauto audit``).
"""

from bcauto.audit.clean import audit_and_clean, clean_dataset, write_clean_npz
from bcauto.audit.hashing import exact_duplicate_groups
from bcauto.audit.near import near_duplicate_groups
from bcauto.audit.report import DESCRIPTIONS, KINDS, AuditReport
from bcauto.audit.run import AuditOptions, audit

__all__ = [
    "AuditOptions",
    "AuditReport",
    "DESCRIPTIONS",
    "KINDS",
    "audit",
    "audit_and_clean",
    "clean_dataset",
    "exact_duplicate_groups",
    "near_duplicate_groups",
    "write_clean_npz",
]
