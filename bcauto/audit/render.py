"""The audit's outputs: report.json, one PNG contact sheet per flagged kind, and the terminal summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bcauto.audit.report import DESCRIPTIONS, GROUP_KINDS, AuditReport
from bcauto.data import Dataset
from bcauto.errors import BcautoError

TILE = 96  # pixels a side of each image on a sheet (images are scaled to it)
COLUMNS = 10
MAX_ROWS = 25  # rows per sheet; the rest is counted in the header (and listed in report.json)
LINE = 12  # pixels per caption line
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
SHORT = {
    "exact_duplicates": "byte-identical copies (first kept)",
    "near_duplicates": "re-encoded / shifted / cropped copies (first kept)",
    "label_conflicts": "copies under different classes (all flagged)",
    "blank_or_corrupt": "one colour, broken rows, noise",
    "outliers": "not one cell on a smear background",
}


def write_outputs(report: AuditReport, data: Dataset, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json`` and ``<kind>.png`` for each kind that flagged something; returns their paths."""
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BcautoError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from exc
    if not out.is_dir():
        raise BcautoError(f"--out {out}: not a folder")
    paths = {"report": out / "report.json"}
    report.to_json(paths["report"])
    for kind in report.checks:
        rows = _rows(report, kind)
        if rows:
            paths[kind] = out / f"{kind}.png"
            contact_sheet(data.images, rows, _title(report, kind)).save(paths[kind])
    return paths


def _title(report: AuditReport, kind: str) -> str:
    counts = report.summary()[kind]
    found = f"{counts['groups']} groups, {counts['images']} images" if kind in GROUP_KINDS else f"{counts['images']} images"
    named = f"; under each: #index, class, file within {report.source}" if report.item_names else "; under each: #index, class"
    if report.item_names and all(
        name.startswith(f"{report.class_names[label]}/") for name, label in zip(report.item_names, report.labels.tolist())
    ):
        named = f"; under each: #index, class, file within {report.source}/CLASS"
    return f"{kind}: {found}, {counts['flagged']} flagged. {DESCRIPTIONS[kind]}{named}"


def _rows(report: AuditReport, kind: str) -> list[list[tuple[int, str]]]:
    """The sheet's rows of (image index, caption): one group per row, or flagged images COLUMNS to a row."""
    names = report.class_names

    def caption(i: int) -> str:
        text = f"#{i} {names[report.labels[i]]}"
        if report.item_names:
            # a folder's class subfolder is the class on the line above: the tile's width goes to the file name
            text += f"\n{report.item_names[i].removeprefix(names[report.labels[i]] + '/')}"
        if kind == "outliers" and "colour" in report.scores:
            text += f"\nz {report.scores['colour'][i]:.1f} / {report.scores['learned'][i]:.1f} / {report.scores['bare'][i]:.1f}"
        return text

    if kind in GROUP_KINDS:
        return [[(i, caption(i)) for i in group] for group in report.groups.get(kind, [])]
    indices = list(report.flagged.get(kind, []))
    if kind == "outliers" and "colour" in report.scores:  # most unusual first
        strength = np.maximum.reduce([report.scores["colour"], report.scores["learned"], report.scores["bare"]])
        indices.sort(key=lambda i: -strength[i])
    items = [(i, caption(i)) for i in indices]
    return [items[k : k + COLUMNS] for k in range(0, len(items), COLUMNS)]


def contact_sheet(images: np.ndarray, rows: list[list[tuple[int, str]]], title: str) -> Image.Image:
    """A grid of ``images[index]`` with captions, one list of (index, caption) per row, under ``title``.

    A caption line too wide for its tile is cut with an ellipsis: the first line (index and class) at its end,
    later lines (a file name, scores) at their start, so a file name keeps its end, where names differ.
    """
    import textwrap

    shown = rows[:MAX_ROWS]
    columns = min(COLUMNS, max(len(row) for row in shown))
    lines_per_caption = max(text.count("\n") + 1 for row in shown for _, text in row)
    cell_w, cell_h = TILE + 6, TILE + 2 + LINE * lines_per_caption
    width = max(columns * cell_w, 600)
    font = _font()
    hidden = len(rows) - len(shown)
    lines = textwrap.wrap(title, width=max(40, width // 6))
    if hidden:
        lines.append(f"(first {len(shown)} rows shown; {hidden} more in report.json)")
    header = 6 + 13 * len(lines)
    sheet = Image.new("RGB", (width, header + len(shown) * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.multiline_text((4, 2), "\n".join(lines), fill=INK, font=font, spacing=2)
    resample = Image.Resampling.NEAREST if images.shape[1] < TILE else Image.Resampling.LANCZOS
    for r, row in enumerate(shown):
        for c, (index, text) in enumerate(row[:COLUMNS]):
            x, y = c * cell_w + 3, header + r * cell_h
            sheet.paste(Image.fromarray(images[index]).resize((TILE, TILE), resample), (x, y))
            caption = "\n".join(_fit(line, font, TILE + 4, keep_end=k > 0) for k, line in enumerate(text.split("\n")))
            draw.multiline_text((x, y + TILE + 1), caption, fill=INK, font=font, spacing=1)
        if len(row) > COLUMNS:
            draw.text((width - 40, header + r * cell_h + TILE // 2), f"+{len(row) - COLUMNS}", fill=INK, font=font)
    return sheet


def _fit(text: str, font, width: int, keep_end: bool = False) -> str:
    """``text`` cut (with an ellipsis) to ``width`` pixels: its end dropped, or its start with ``keep_end``."""
    if draw_length(text, font) <= width:
        return text
    if keep_end:
        while text and draw_length("…" + text, font) > width:
            text = text[1:]
        return "…" + text
    while text and draw_length(text + "…", font) > width:
        text = text[:-1]
    return text + "…"


def draw_length(text: str, font) -> float:
    try:
        return font.getlength(text)
    except AttributeError:  # bitmap fonts of old Pillow
        return 6 * len(text)


def _font():
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def print_summary(report: AuditReport, console) -> None:
    """Rich tables: flagged counts per kind, then the class distribution before and after cleaning."""
    from rich.table import Table

    summary = report.summary()
    kinds = Table(title=f"audit of {report.source}: {report.n_images} images {report.image_size}x{report.image_size}")
    for column in ("kind", "groups", "images", "flagged", "what it is"):
        kinds.add_column(column, justify="right" if column in ("groups", "images", "flagged") else "left")
    for kind in report.checks:
        counts = summary[kind]
        kinds.add_row(kind, str(counts.get("groups", "")), str(counts["images"]), str(counts["flagged"]), SHORT[kind])
    kinds.add_row("all kinds", "", "", str(summary["all"]["flagged"]), f"{summary['all']['kept']} images kept", style="bold")
    console.print(kinds)
    classes = Table(title="class distribution")
    for column in ("label", "class", "images", "share", "flagged", "kept", "kept share"):
        classes.add_column(column, justify="left" if column == "class" else "right")
    rows = report.class_distribution()
    total, kept = sum(r["images"] for r in rows), sum(r["kept"] for r in rows)
    for row in rows:
        classes.add_row(
            str(row["label"]),
            row["class"],
            str(row["images"]),
            f"{row['images'] / max(total, 1):.1%}",
            str(row["flagged"]),
            str(row["kept"]),
            f"{row['kept'] / max(kept, 1):.1%}",
        )
    console.print(classes)
