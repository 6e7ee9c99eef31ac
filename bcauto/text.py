"""Wording shared by the commands' messages."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

IRREGULAR = {"child": "children", "index": "indices", "epoch": "epochs"}  # "epoch": a hard "ch", no "es"


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


def did_you_mean(word: object, known: Iterable[str], cutoff: float = 0.6) -> str:
    """`` (did you mean 'NAME'?)`` for the name in ``known`` closest to ``word``, or "" when none is close enough
    (difflib's similarity ratio below ``cutoff``): the hint every unknown-name message ends with."""
    close = difflib.get_close_matches(str(word), list(known), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""
