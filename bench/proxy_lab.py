"""A stand-in for another lab, made from the training lab's own held-out images, to compare `bcauto adapt` recipes
without choosing them on a real other lab's cells (those only score the choice afterwards).

The white-cell classes of a held-out npz (the one `bench/cross_lab.py` writes), all moved to one stain palette at
one strength and taken through one camera: one lab's look for every image, as in a real lab, and a class mix unlike
the training lab's (there, eosinophils and neutrophils outnumber the other white cells 2.5 to 1): as many of each
class (``--per-class``), or the counts ``--counts`` names (a lab whose mix the model's prior gets wrong).

    python bench/proxy_lab.py bench/out/s2_crop/heldout-s2.npz bench/out/proxy-blue.npz --palette blue_violet
    python bench/proxy_lab.py HELDOUT.npz OUT.npz --counts basophil=20,eosinophil=20,lymphocyte=90,monocyte=90,neutrophil=60
    python bench/proxy_lab.py HELDOUT.npz OUT.npz --palette pale --magnify 1.6 --optics 4
    python bench/adapt_recipes.py --model MODEL --otherlab bench/out/proxy-blue.npz --recipes "..."
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
from bcauto_builtin.lab_shifts import PALETTES, camera_optics, stain_transfer, zoom

WHITE_CELLS = ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")


def parse_counts(text: str) -> dict[str, int]:
    """``basophil=20,eosinophil=20,...`` (every white-cell class, once, at least one image each) as {class: count};
    an argparse ``type``."""
    counts = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, number = item.partition("=")
        if name not in WHITE_CELLS or not number.isdigit() or int(number) < 1 or name in counts:
            raise argparse.ArgumentTypeError(f"{item!r} is not CLASS=N (N >= 1) for a new one of {', '.join(WHITE_CELLS)}")
        counts[name] = int(number)
    if set(counts) != set(WHITE_CELLS):
        raise argparse.ArgumentTypeError(f"it names {', '.join(sorted(counts)) or 'no class'}; it needs each of {', '.join(WHITE_CELLS)}")
    return counts


def proxy_lab(
    images, labels, class_names, counts: dict[str, int], palette: str, strength: float, optics: int, seed: int, magnify: float = 1.0
):
    """(images, labels, class names) of the stand-in lab: ``counts[c]`` images of each white-cell class ``c`` drawn
    with ``seed``, moved towards ``palette`` by ``strength``, zoomed by ``magnify`` about the centre (one objective
    for the whole lab: > 1 the cell fills more of the frame, < 1 less) and through :func:`camera_optics` at severity
    ``optics``."""
    rng = np.random.default_rng(seed)
    names = [str(n) for n in class_names]
    chosen = []
    for name in WHITE_CELLS:
        members = np.flatnonzero(labels == names.index(name))
        if len(members) < counts[name]:
            raise SystemExit(f"{name}: {len(members)} images, fewer than the {counts[name]} asked for")
        chosen.append(np.sort(rng.choice(members, counts[name], replace=False)))
    index = np.concatenate(chosen)
    moved = stain_transfer(images[index], [palette] * len(index), [strength] * len(index))
    if magnify != 1.0:
        moved = zoom(moved, magnify, rng)
    through_camera = camera_optics(moved, optics, rng)
    return through_camera, np.repeat(np.arange(len(WHITE_CELLS)), [counts[n] for n in WHITE_CELLS]), np.array(WHITE_CELLS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("heldout", help="held-out npz of the training lab (images, labels, class_names)")
    parser.add_argument("out", help="npz to write")
    parser.add_argument("--palette", choices=sorted(PALETTES), default="blue_violet")
    parser.add_argument("--strength", type=float, default=0.6, help="of the palette's full change (default 0.6)")
    parser.add_argument("--optics", type=int, default=2, help="camera_optics severity, 1-5 (default 2)")
    parser.add_argument("--magnify", type=float, default=1.0, help="zoom of every image about its centre (default 1: none)")
    mix = parser.add_mutually_exclusive_group()
    mix.add_argument("--per-class", type=int, default=60, help="images of each white-cell class (default 60)")
    mix.add_argument("--counts", type=parse_counts, help="CLASS=N for each white-cell class, comma-separated: a skewed class mix")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = args.counts or dict.fromkeys(WHITE_CELLS, args.per_class)
    held = np.load(args.heldout)
    images, labels, names = proxy_lab(
        held["images"], held["labels"], held["class_names"], counts, args.palette, args.strength, args.optics, args.seed, args.magnify
    )
    np.savez_compressed(args.out, images=images, labels=labels, class_names=names)
    print(f"{args.out}: {len(labels)} images: {', '.join(f'{n} {k}' for n, k in counts.items())}")


if __name__ == "__main__":
    main()
