"""How far the shift suite moves the cell finder that sets `cell_crop`'s crop, per spread estimate.

    python bench/cell_finder.py --data ../shared/data/pbc96 --image-size 40 --cells 400

`cell_crop` centres each image on the nucleus and zooms it so the nucleus spread reaches a canonical fraction of
the side (`nucleus_centre_and_spread`). A shift that moves the centre or the spread moves the crop, and the model
then sees a cell at another place or scale than in training. For a seeded random sample of white cells this prints,
for every shift and severity and each spread estimate (`rms`, `median`): the median ratio of the spread to the
clean image's, the share of cells whose spread moved by more than 20%, and the share whose centre moved by more
than a tenth of the side. It also prints each estimate's median spread on the clean cells as a fraction of the
side (the canonical size `cell_crop` aims for under that estimate), how well each follows a known zoom (the
magnification shift zooms in or out at random, so its ratios mix both: the zoom factors below are fixed), and,
with --otherlab, the spread on another lab's cells, which the crop would bring to the canonical size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, WHITE_CELLS, find_nuclei, machine, quiet

ESTIMATES = ("rms", "median")
ZOOMS = (0.4, 0.55, 0.75, 1.35, 1.8, 2.25)


def quartiles(fraction: np.ndarray) -> str:
    return f"median {np.median(fraction):.3f}, quartiles {np.quantile(fraction, 0.25):.3f}-{np.quantile(fraction, 0.75):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--image-size", type=int, default=40)
    parser.add_argument("--cells", type=int, default=400)
    parser.add_argument("--shifts", default="", help="comma-separated shift names (default: every registered shift)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--otherlab", default="", help="another lab's image folder: its spreads as a fraction of the side")
    args = parser.parse_args()
    quiet()
    from bcauto.data.sources import load_data
    from bcauto.plugins import components
    from bcauto.shift import corrupt

    registered = components()
    data = load_data(args.data, args.image_size, registered, {"seed": args.seed, "on_bad_image": "skip"})
    white = np.flatnonzero(np.isin(np.array(data.class_names)[data.labels], WHITE_CELLS))
    chosen = np.sort(np.random.default_rng(args.seed).choice(white, size=min(args.cells, len(white)), replace=False))
    images = data.images[chosen]
    side = args.image_size
    print(f"{data.source}: {len(chosen)} white cells at {side} x {side}; {machine()}")
    clean = {e: find_nuclei(images, e) for e in ESTIMATES}
    for e in ESTIMATES:
        print(f"  {e:>6} spread / side on clean cells: {quartiles(clean[e][:, 2] / side)}")
    from bcauto_builtin.lab_shifts import zoom

    print(f"\n{'zoom':<8}" + "".join(f"{e + ' ratio / zoom':>24}{e + ' within 20%':>18}" for e in ESTIMATES))
    for factor in ZOOMS:
        zoomed = zoom(images, factor, np.random.default_rng(args.seed))
        line = f"{factor:<8}"
        for e in ESTIMATES:
            relative = find_nuclei(zoomed, e)[:, 2] / np.maximum(clean[e][:, 2], 1e-6) / factor
            line += f"{np.median(relative):>24.2f}{np.mean(np.abs(relative - 1) <= 0.2):>18.0%}"
        print(line, flush=True)
    if args.otherlab:
        other = load_data(args.otherlab, side, registered, {"seed": args.seed, "on_bad_image": "skip"})
        for e in ESTIMATES:
            print(f"{other.source}: {e} spread / side {quartiles(find_nuclei(other.images, e)[:, 2] / side)}")
    names = [n for n in args.shifts.split(",") if n] or registered.shifts.names()
    print(f"\n{'shift':<16}{'sev':>4}" + "".join(f"{e + ' ratio':>14}{e + ' >20%':>14}{e + ' moved':>14}" for e in ESTIMATES))
    for k, name in enumerate(names):
        spec = registered.shifts.get(name)
        for severity in spec.severities:
            shifted = corrupt(images, spec, severity, args.seed + 100 * k + severity)
            line = f"{name:<16}{severity:>4}"
            for e in ESTIMATES:
                found = find_nuclei(shifted, e)
                ratio = found[:, 2] / np.maximum(clean[e][:, 2], 1e-6)
                moved = np.hypot(found[:, 0] - clean[e][:, 0], found[:, 1] - clean[e][:, 1]) > side / 10
                line += f"{np.median(ratio):>14.2f}{np.mean(np.abs(ratio - 1) > 0.2):>14.0%}{np.mean(moved):>14.0%}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
