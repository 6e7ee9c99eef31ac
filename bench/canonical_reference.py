"""The reference constants of the built-in canonicalizers, measured on a data set of the training lab.

    python bench/canonical_reference.py --data ../shared/data/pbc96

Prints the mean over images of each image's CIELAB channel means and standard deviations (stain_norm's
reference style) and the distribution of the nucleus spread as a fraction of the image side over the white
cells under each spread estimate (cell_crop's canonical size). Another --data shows how far another lab's images are from them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from skimage.color import rgb2lab

from bcauto.data.sources import load_data
from bcauto.plugins import components
from bcauto_builtin.canonical_layers import SPREAD_ESTIMATES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WHITE_CELLS, find_nuclei


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--image-size", type=int, default=96)
    args = parser.parse_args()
    data = load_data(args.data, args.image_size, components(), {"seed": 0})
    lab = rgb2lab(data.images)
    means, stds = lab.mean(axis=(1, 2)), lab.std(axis=(1, 2))
    print(f"{data.source}: {len(data.labels)} images")
    print("LAB mean of per-image means:", np.round(means.mean(axis=0), 1), " of per-image stds:", np.round(stds.mean(axis=0), 1))
    white = np.isin(np.array(data.class_names)[data.labels], WHITE_CELLS)
    cells = data.images[white]
    for estimate in SPREAD_ESTIMATES:
        fraction = find_nuclei(cells, estimate)[:, 2] / args.image_size
        print(
            f"nucleus spread ({estimate}) / side over {white.sum()} white cells: median {np.median(fraction):.3f}, "
            f"quartiles {np.quantile(fraction, 0.25):.3f}-{np.quantile(fraction, 0.75):.3f}"
        )


if __name__ == "__main__":
    main()
