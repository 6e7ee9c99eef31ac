"""Label-free adaptation to another lab: the parent model, ``--adapt-bn`` and ``--adapt-im`` side by side.

Two kinds of target, each adapted to and scored on by the same functions `bcauto evaluate` uses:

- a proxy that may choose settings: the training lab's held-out images (an .npz written by ``bench/cross_lab.py``,
  never searched or refitted on) through one registered shift (default ``other_lab`` at severity 3), one draw of
  the shift per ``--draws`` seed, scored by macro-F1 and accuracy over the model's classes; ``--balanced`` cuts
  every class to the smallest one's count first (the mix information maximization assumes);
- ``--otherlab``: another lab's labelled cells, scored only (never a basis for a setting), as is and among
  ``--classes``, each with and without TTA.

``--epochs`` and ``--lr`` list the information-maximization settings to run (every pair).

    python bench/label_free.py --model bench/out/cross_lab7/models/robust-cpu-s3 \\
        --heldout bench/out/cross_lab7/heldout-s3.npz --draws 0,1,2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_OTHERLAB, machine, quiet

OTHERLAB_CLASSES = "basophil,eosinophil,lymphocyte,monocyte,neutrophil"


def adapted_models(path: str, images: np.ndarray, settings, seed: int, allowed=None):
    """(name, model) for the parent, after --adapt-bn, and after --adapt-im at each (epochs, lr) in ``settings``;
    each adapted from a fresh load of the model directory."""
    from bcauto.bundle import load_bundle
    from bcauto.test_time import maximize_information, recompute_batchnorm

    yield "parent", load_bundle(path)
    bundle = load_bundle(path)
    recompute_batchnorm(bundle.model, images)
    yield "adapt-bn", bundle
    for epochs, lr in settings:
        bundle = load_bundle(path)
        started = time.perf_counter()
        maximize_information(bundle.model, images, allowed, epochs=epochs, learning_rate=lr, seed=seed)
        print(f"  (adapt-im {epochs} epochs at {lr:g}: {time.perf_counter() - started:.0f} s)", flush=True)
        yield f"adapt-im {epochs}ep {lr:g}", bundle


def proxy(args, settings) -> list[dict]:
    from PIL import Image

    from bcauto.bundle import load_bundle
    from bcauto.data import Dataset
    from bcauto.evaluate import evaluate
    from bcauto.plugins import components

    size = load_bundle(args.model).image_size
    shift = components().shifts.get(args.shift)
    rows = []
    with np.load(args.heldout) as npz:
        held = Dataset(npz["images"], npz["labels"], tuple(str(c) for c in npz["class_names"]), args.heldout)
    if args.balanced:  # every class cut to the smallest's count: the mix information maximization assumes
        rng = np.random.default_rng(0)
        smallest = np.bincount(held.labels).min()
        keep = np.sort(
            np.concatenate([rng.choice(np.flatnonzero(held.labels == c), smallest, replace=False) for c in np.unique(held.labels)])
        )
        held = Dataset(held.images[keep], held.labels[keep], held.class_names, f"{args.heldout} (balanced, {smallest} a class)")
    for draw in (int(s) for s in args.draws.split(",")):
        shifted = shift.apply(held.images, args.severity, np.random.default_rng(draw))
        images = np.stack([np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR)) for image in shifted])
        data = Dataset(images, held.labels, held.class_names, f"{args.heldout} ({args.shift}:{args.severity}, draw {draw})")
        for name, bundle in adapted_models(args.model, images, settings, seed=0):
            result, _, _ = evaluate(bundle, data)
            rows.append({"target": "proxy", "draw": draw, "model": name, "accuracy": result["accuracy"], "macro_f1": result["macro_f1"]})
            print(f"proxy draw {draw} {name:24s} accuracy {result['accuracy']:.3f}  macro-F1 {result['macro_f1']:.3f}", flush=True)
    return rows


def otherlab(args, settings) -> list[dict]:
    from bcauto.bundle import load_bundle
    from bcauto.data.sources import load_data
    from bcauto.evaluate import class_subset, evaluate
    from bcauto.plugins import components

    bundle = load_bundle(args.model)
    data = load_data(args.otherlab, bundle.image_size, components(), {"seed": 0})
    rows = []
    for among in (None, args.classes):
        allowed = class_subset(among, bundle.class_names)
        for name, adapted in adapted_models(args.model, data.images, settings, seed=0, allowed=allowed):
            for tta in (False, True):
                result, _, _ = evaluate(adapted, data, tta=tta, allowed=allowed)
                row = {"target": "otherlab", "classes": among or "all", "tta": tta, "model": name}
                row |= {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"], "interval": result["interval"]}
                rows.append(row)
                label = f"{'5 classes' if among else 'all'}{' +tta' if tta else ''}"
                print(f"otherlab {label:14s} {name:24s} accuracy {result['accuracy']:.3f}  macro-F1 {result['macro_f1']:.3f}", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model directory written by `bcauto refit`")
    parser.add_argument("--heldout", help="held-out images of the training lab (.npz), for the proxy")
    parser.add_argument("--shift", default="other_lab", help="registered shift of the proxy (default other_lab)")
    parser.add_argument("--severity", type=int, default=3, help="its severity (default 3)")
    parser.add_argument("--balanced", action="store_true", help="cut every class of the proxy to the smallest one's count")
    parser.add_argument("--draws", default="0", help="comma-separated seeds of the shift's draws (default 0)")
    parser.add_argument("--otherlab", default=DEFAULT_OTHERLAB, help="another lab's labelled cells, scored only ('' to skip)")
    parser.add_argument("--classes", default=OTHERLAB_CLASSES, help="the other lab's classes, for the rows among them")
    parser.add_argument("--epochs", default="10", help="comma-separated --adapt-im epochs to run (default 10)")
    parser.add_argument("--lr", default="3e-4", help="comma-separated --adapt-im learning rates (default 3e-4)")
    parser.add_argument("--out", help="JSON file for the rows")
    args = parser.parse_args(argv)
    quiet()
    settings = [(int(e), float(lr)) for e in args.epochs.split(",") for lr in args.lr.split(",")]
    rows = (proxy(args, settings) if args.heldout else []) + (otherlab(args, settings) if args.otherlab else [])
    if args.out:
        saved = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "args": vars(args), "rows": rows}
        Path(args.out).write_text(json.dumps(saved, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
