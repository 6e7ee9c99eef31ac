"""Wording shared by the commands' messages."""

from __future__ import annotations

import re

IRREGULAR = {"child": "children", "index": "indices"}


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``count`` and ``noun``, the noun in the plural unless the count is one: ``plural(1, "class")`` is "1 class",
    ``plural(3, "entry")`` is "3 entries"."""
    if count == 1:
        return f"{count} {noun}"
    if plural_form is None:
        if noun in IRREGULAR:
            plural_form = IRREGULAR[noun]
        elif re.search(r"(s|x|z|ch|sh)$", noun):
            plural_form = noun + "es"
        elif re.search(r"[^aeiou]y$", noun):
            plural_form = noun[:-1] + "ies"
        else:
            plural_form = noun + "s"
    return f"{count} {plural_form}"
