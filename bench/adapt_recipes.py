"""How should `bcauto adapt` fine-tune? One refitted model, one other lab, several recipes and shot draws.

Each recipe is one `bcauto adapt` command line (the product's own path: shots drawn with --seed, BatchNorm
statistics, fine-tuning, scoring on the cells that were not shots), run for every seed in --seeds; the table
has the accuracy and macro-F1 on the kept-out cells, the epochs trained, and the mean and spread over seeds.
The other lab's images are only scored, except for `bcauto adapt`'s own shots (and, with `--epochs auto`,
its cross-validation within them): nothing here is selected on them.

A recipe is a name and `bcauto adapt` options, ``NAME=OPTION OPTION ...``, recipes separated by ``;``:

    python bench/adapt_recipes.py --model bench/out/NAME/models/MODEL --shots 50 --seeds 0,1,2 \\
        --recipes "fixed 40=--epochs 40 --adapt-bn;auto=--adapt-bn"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_OTHERLAB, machine, quiet

OTHERLAB_CLASSES = "basophil,eosinophil,lymphocyte,monocyte,neutrophil"
DEFAULT_RECIPES = ";".join(
    [
        "40 epochs=--epochs 40",
        "40 epochs, bn=--epochs 40 --adapt-bn",
        "80 epochs, bn=--epochs 80 --adapt-bn",
        "auto, bn=--adapt-bn",
        f"40 epochs, bn, classes=--epochs 40 --adapt-bn --classes {OTHERLAB_CLASSES}",
        f"auto, bn, classes=--adapt-bn --classes {OTHERLAB_CLASSES}",
    ]
)


def run_adapt(model: str, data: str, shots: int, seed: int, options: list[str], out: Path, tracking: str) -> dict:
    started = time.perf_counter()
    command = [sys.executable, "-m", "bcauto.cli", "adapt", model, "--data", data, "--shots", str(shots), "--seed", str(seed)]
    command += [*options, "--out", str(out), "--tracking-uri", tracking]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed (rc {result.returncode}):\n{result.stderr[-2000:]}")
    adapted = json.loads((out / "bcauto-model.json").read_text())["adapted"]
    return {
        "seed": seed,
        "accuracy": adapted["after"]["accuracy"],
        "macro_f1": adapted["after"]["macro_f1"],
        "before_accuracy": adapted["before"]["accuracy"],
        "epochs": adapted["recipe"]["epochs"],
        "epochs_choice": adapted["recipe"]["epochs_choice"],
        "scored": adapted["scored_images"],
        # with --pseudo-labels: the model fine-tuned on the shots alone, and how many of its pseudo-labels were right
        "shots_only_accuracy": adapted.get("after_shots_only", {}).get("accuracy"),
        "pseudo_labels_correct": (adapted["recipe"].get("pseudo_labels") or {}).get("correct"),
        # the label-free step alone (--adapt-im or --adapt-bn), on the same kept-out cells
        "label_free_accuracy": adapted.get("after_information_maximization", adapted.get("after_batchnorm_only", {})).get("accuracy"),
        "seconds": time.perf_counter() - started,
    }


def report(saved: dict, console) -> None:
    from rich.table import Table

    table = Table(title=f"bcauto adapt recipes, {saved['shots']} shots ({saved['machine']}, {saved['date']})")
    for column in ("recipe", "seed", "accuracy", "macro F1", "epochs", "seconds"):
        table.add_column(column, justify="left" if column == "recipe" else "right")
    for name, rows in saved["recipes"].items():
        for row in rows:
            scores = (f"{row['accuracy']:.3f}", f"{row['macro_f1']:.3f}", str(row["epochs"]), f"{row['seconds']:.0f}")
            table.add_row(name, str(row["seed"]), *scores)
        if rows:
            acc, f1 = [r["accuracy"] for r in rows], [r["macro_f1"] for r in rows]
            table.add_row(
                f"[bold]{name} mean±sd[/]",
                f"n={len(rows)}",
                f"{np.mean(acc):.3f}±{np.std(acc):.3f}",
                f"{np.mean(f1):.3f}±{np.std(f1):.3f}",
                "",
                "",
            )
    console.print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a model directory written by `bcauto refit`")
    parser.add_argument("--otherlab", default=DEFAULT_OTHERLAB, help="another lab's labelled images (adapt's --data)")
    parser.add_argument("--shots", type=int, default=50, help="labelled cells to adapt on (default 50)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds of the shot draws (default 0,1,2)")
    parser.add_argument("--recipes", default=DEFAULT_RECIPES, help="NAME=OPTIONS;... (default: %(default)s)")
    parser.add_argument("--work", default="bench/out/adapt_recipes", help="folder for the adapted models and results")
    parser.add_argument("--report", metavar="JSON", help="only print the table of a saved adapt_recipes.json")
    args = parser.parse_args(argv)
    quiet()
    from rich.console import Console

    console = Console(width=160)
    if args.report:
        report(json.loads(Path(args.report).read_text()), console)
        return 0
    if not args.model:
        parser.error("--model is required (or --report)")
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results = work / "adapt_recipes.json"
    saved = json.loads(results.read_text()) if results.exists() else {"recipes": {}}
    saved.update({"machine": machine(), "date": time.strftime("%Y-%m-%d"), "model": args.model, "shots": args.shots, "data": args.otherlab})
    recipes = dict(part.split("=", 1) for part in args.recipes.split(";") if part.strip())
    for name, options in recipes.items():
        rows = saved["recipes"].setdefault(name, [])
        for seed in (int(s) for s in args.seeds.split(",")):
            if any(row["seed"] == seed for row in rows):
                continue  # measured by an earlier run with the same --work
            out = work / "models" / f"{name.replace(' ', '').replace(',', '-')}-s{seed}"
            tracking = f"sqlite:///{work / 'mlflow.db'}"
            rows.append(run_adapt(args.model, args.otherlab, args.shots, seed, shlex.split(options), out, tracking))
            results.write_text(json.dumps(saved, indent=2) + "\n")
            console.print(name, rows[-1])
    report(saved, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
