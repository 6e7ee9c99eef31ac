"""Render every registered shift at every severity for a few example images, as one PNG contact sheet.

    python docs/gen_shift_sheet.py --data ../shared/data/pbc96 --out docs/images/shift-sheet.png

One row per shift, grouped (corruption, then lab) under a heading; for each example image, the original and
severities 1 to 5. Uses bcauto's own loaders and ``bcauto.shift.corrupt``, so the sheet shows exactly what a
study scores on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from bcauto.data.sources import load_data  # noqa: E402  (after the sys.path set-up)
from bcauto.plugins import components  # noqa: E402
from bcauto.shift import corrupt  # noqa: E402

LABEL_WIDTH = 190
GAP = 10
HEADER = 28


def pick_examples(data, classes: list[str], index: int) -> tuple[np.ndarray, list[str]]:
    """The ``index``-th image of each named class (or of the first classes when none are named)."""
    names = classes or list(data.class_names[:3])
    picks = []
    for name in names:
        if name not in data.class_names:
            raise SystemExit(f"no class {name!r} in {data.source}; classes: {', '.join(data.class_names)}")
        members = np.flatnonzero(data.labels == data.class_names.index(name))
        picks.append(members[min(index, len(members) - 1)])
    return data.images[picks], names


def render(images: np.ndarray, names: list[str], shifts, size: int, seed: int) -> Image.Image:
    font = ImageFont.load_default(size=15) if hasattr(ImageFont, "load_default") else None
    small = ImageFont.load_default(size=12)
    groups = {}
    for name in shifts.names():
        groups.setdefault(getattr(shifts.get(name), "group", "corruption"), []).append(name)
    columns = ["original", *(f"severity {s}" for s in (1, 2, 3, 4, 5))]
    block = len(columns) * size
    width = LABEL_WIDTH + len(images) * (block + GAP)
    height = HEADER + sum(HEADER + len(members) * size for members in groups.values())
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for k, name in enumerate(names):
        x0 = LABEL_WIDTH + k * (block + GAP)
        draw.text((x0 + 2, 2), name, fill="black", font=font)
        for c, column in enumerate(columns):
            draw.text((x0 + c * size + 2, 16), column, fill="dimgray", font=small)
    y = HEADER
    for group, members in groups.items():
        draw.rectangle((0, y, width, y + HEADER - 2), fill="#dde4ee")
        draw.text((6, y + 5), f"{group} shifts", fill="black", font=font)
        y += HEADER
        for r, name in enumerate(members):
            draw.text((6, y + size // 2 - 9), name, fill="black", font=font)
            spec = shifts.get(name)
            tiles = [images] + [corrupt(images, spec, s, seed + 100 * r + s) for s in (1, 2, 3, 4, 5)]
            for k in range(len(images)):
                for c, tile in enumerate(tiles):
                    sheet.paste(
                        Image.fromarray(tile[k]).resize((size, size), Image.NEAREST), (LABEL_WIDTH + k * (block + GAP) + c * size, y)
                    )
            y += size
    return sheet


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a --data spec or path (an image folder, an .npz file)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument(
        "--classes",
        default="neutrophil,lymphocyte,eosinophil",
        help="comma-separated classes to take one example each from (default: %(default)s)",
    )
    parser.add_argument("--index", type=int, default=0, help="which image of each class (default: the first)")
    parser.add_argument("--image-size", type=int, default=96, help="the size the images are loaded at")
    parser.add_argument("--tile", type=int, default=96, help="the size each image is drawn at")
    parser.add_argument(
        "--colors", type=int, default=160, help="palette size the PNG is quantised to, dithered, to keep it small (0: full colour)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    registry = components()
    data = load_data(args.data, args.image_size, registry, {"seed": args.seed})
    classes = [c for c in args.classes.split(",") if c]
    if not set(classes) <= set(data.class_names):
        classes = []  # another data set: its first classes
    images, names = pick_examples(data, classes, args.index)
    sheet = render(images, names, registry.shifts, args.tile, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if args.colors:
        sheet = sheet.quantize(args.colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out}: {sheet.width}x{sheet.height}, {Path(args.out).stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
