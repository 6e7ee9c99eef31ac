"""Code blocks in hand-written pages, filled from the files they show, so a tutorial cannot go stale.

Plain MkDocs has no include directive, so a page marks a region and the generator rewrites what is between::

    <!-- include: plugins/bcauto-densenet/bcauto_densenet/__init__.py -->
    <!-- end include -->

The path is relative to the repository. ``<!-- include: new-plugin KIND NAME FILE -->`` shows FILE of the
package that ``bcauto new-plugin KIND NAME`` writes (such as ``bcauto_blur/__init__.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

from bcauto.scaffold import render

REPO = Path(__file__).resolve().parent.parent
REGION = re.compile(r"(<!-- include: (?P<source>[^>]*?) -->\n)(?P<body>.*?)(<!-- end include -->)", re.S)
LANGUAGES = {".py": "python", ".toml": "toml", ".md": "markdown", ".yml": "yaml", ".sh": "bash"}


def source_text(source: str) -> tuple[str, str]:
    """(text, file name) of an include source: a repository path or ``new-plugin KIND NAME FILE``."""
    words = source.split()
    if words[0] == "new-plugin":
        if len(words) != 4:
            raise ValueError(f"include {source!r}: expected new-plugin KIND NAME FILE")
        kind, name, file = words[1:]
        files = render(kind, name)
        if file not in files:
            raise ValueError(f"include {source!r}: new-plugin writes {', '.join(files)}, not {file}")
        return files[file], file
    path = REPO / source
    if not path.is_file():
        raise ValueError(f"include {source!r}: no such file in the repository")
    return path.read_text(encoding="utf-8"), source


def code_block(source: str) -> str:
    """A fenced block with the source's text, fenced longer than any fence inside it."""
    text, name = source_text(source)
    longest = max((len(m) for m in re.findall(r"^`{3,}", text, re.M)), default=2)
    fence = "`" * max(3, longest + 1)
    language = LANGUAGES.get(Path(name).suffix, "text")
    return f"{fence}{language}\n{text.rstrip()}\n{fence}\n"


def fill_includes(page: str) -> str:
    """``page`` with every include region holding its source's current text."""
    return REGION.sub(lambda m: m.group(1) + code_block(m.group("source").strip()) + m.group(4), page)


def pages_with_includes(docs: Path) -> list[Path]:
    """The hand-written pages that have include regions."""
    return sorted(p for p in docs.glob("*.md") if "<!-- include: " in p.read_text(encoding="utf-8"))
