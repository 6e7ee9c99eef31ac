"""Cross-lab benchmark: does the lab-robust study give models that keep working on another lab's images?

For each seed, a stratified held-out part of the training lab's images (pbc96) is set aside; each study searches
the rest with the same number of trials (`bcauto search`), its best trial is refitted (`bcauto refit`), and the
model is scored, through the same commands a user runs, on:

- the held-out pbc96 images: clean, and under every registered shift at every severity, averaged per group
  (``corruption``: damage within a lab; ``lab``: magnification, framing, stain style, white balance, optics);
- another lab's white cells (``--otherlab``, default ``../shared/data/otherlab_dev/chula_wbc``): as is, with
  ``--adapt-bn`` (BatchNorm statistics from that lab's unlabelled images), both again with the predictions
  restricted to the classes that lab's slides show (``--classes``: the lab's list of white-cell types, known
  without labelling a single image), with ``--adapt-im`` (information maximization on those unlabelled images, as
  is and among ``--classes``; rows from 2026-12-02 on), and after ``bcauto adapt`` with 10 and with 50 labelled cells of that lab
  (scored on the cells that were not shots), without and with ``--adapt-bn`` (BatchNorm statistics from all of
  that lab's images, unlabelled, before fine-tuning on the shots), with ``--adapt-bn --classes`` (the
  adapted model a classifier of that lab's classes only), and with ``--adapt-im`` and ``--adapt-im --classes``
  (information maximization on all that lab's images, unlabelled, before fine-tuning; from 2026-12-03 on),
  with ``--pseudo-labels``, and with the shots chosen by the model from the images alone (``--choose-shots
  typical``; from 2026-12-06 on), and with three fine-tunings on the shots alone averaged (``--ensemble 3``
  without ``--pseudo-labels``; from 2026-12-07 on).
  ``bcauto adapt`` chooses its epochs by cross-validation within the shots (its default, ``--epochs auto``) since
  2026-12-02; earlier rows trained 40.

``--refit-epochs`` is passed to ``bcauto refit --epochs`` (``best``, or a number of epochs to train the best
configuration for, on a half-cosine learning rate; default: the study file's ``refit_epochs``); each row
records the epochs its model was refitted for.
``--refit-image-size`` is passed to ``bcauto refit --image-size`` (default: the study file's ``refit_image_size``).
``--model`` scores a model already refitted from a ``--work`` split of the same seed instead of searching;
``--shots`` and ``--adapt`` choose which of the ``bcauto adapt`` runs to make (each one is minutes on a CPU).

The other lab's images are only scored: nothing is trained, selected or tuned on them, except inside ``bcauto
adapt``'s own shots. Each command's JSON and the elapsed times are saved under --work; the table at the end has
one row per study and seed and the mean and spread over seeds.

A run stopped part way can be started again with the same arguments: a finished search is not run again, an
interrupted refit goes on from its last epoch, a finished one is kept (its row's ``refit_s`` is then null; delete
the model folder to refit with other ``--refit-*`` options), and each evaluation or adaptation whose JSON was
written after the model was is read back instead of being run again.

    python bench/cross_lab.py --seeds 0,1,2                      # both studies at their own trial budget
    python bench/cross_lab.py --seeds 0 --trials 2 --pool 1500 --holdout-max 300   # smoke run
    python bench/cross_lab.py --seeds 0 --model WORK/models/NAME  # score an existing model
    python bench/cross_lab.py --seeds 0 --model WORK/models/NAME --shots 50 --adapt bn   # one adapt run
    python bench/cross_lab.py --report WORK/cross_lab.json       # print a saved run again
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, DEFAULT_OTHERLAB, machine, quiet, save_npz, split_holdout

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STUDIES = "studies/cpu.toml,studies/robust-cpu.toml"
SHOTS = "10,50"
ADAPT_VARIANTS = "plain,bn,bn+classes,im,im+classes,bn+pl,im+classes+pl,im+classes+pl+typical,im+classes+ens3"
OTHERLAB_CLASSES = "basophil,eosinophil,lymphocyte,monocyte,neutrophil"


def bcauto(*args: str, work: Path, log: Path) -> str:
    """Run one bcauto command in ``work`` (its stores live there); its output is appended to ``log``."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "bcauto.cli", *args],
        cwd=work,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    with log.open("a") as handle:
        handle.write(f"$ bcauto {' '.join(args)}  ({time.perf_counter() - started:.0f} s, rc {result.returncode})\n")
        handle.write(result.stdout + result.stderr + "\n")
    if result.returncode != 0:
        raise SystemExit(f"bcauto {' '.join(args)} failed (rc {result.returncode}); see {log}\n{result.stderr[-2000:]}")
    return result.stdout


def done_since(result: Path, model: Path) -> bool:
    """Whether ``result`` was written after ``model`` was: a scoring step an interrupted run already finished."""
    info = model / "bcauto-model.json"
    return result.is_file() and result.stat().st_mtime > info.stat().st_mtime


def evaluate(model: Path, data: str, work: Path, log: Path, *extra: str) -> dict:
    out = work / "evaluations" / f"{model.name}-{Path(data).stem}{''.join(extra).replace('-', '_')}"
    if not done_since(out / "evaluation.json", model):
        bcauto("evaluate", str(model), "--data", data, "--json", "--out", str(out), *extra, work=work, log=log)
    return json.loads((out / "evaluation.json").read_text())


def run_study(study: str, seed: int, args, work: Path, search_npz: Path, held_npz: Path) -> dict:
    name = f"{Path(study).stem}-s{seed}"
    log = work / f"{name}.log"
    common = ["--storage", f"sqlite:///{work / 'optuna.db'}", "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}"]
    started = time.perf_counter()
    if args.model:
        return score_model(Path(args.model).resolve(), study, seed, args, work, held_npz, started, search_s=0.0, refit_s=0.0, best={})
    search = [
        "search",
        "--study",
        str(ROOT / study),
        "--data",
        str(search_npz),
        "--name",
        name,
        "--seed",
        str(seed),
        "--work-dir",
        str(work / ".bcauto"),
        *common,
    ]
    if args.trials:
        search += ["--trials", str(args.trials)]
    bcauto(*search, work=work, log=log)
    search_s = time.perf_counter() - started
    model = work / "models" / name
    epochs = ["--epochs", args.refit_epochs] if args.refit_epochs else []
    size = ["--image-size", str(args.refit_image_size)] if args.refit_image_size else []
    info = model / "bcauto-model.json"
    if info.is_file() and json.loads(info.read_text()).get("study") == name:
        refit_s = None  # refitted by an earlier run of this --work, stopped while scoring
        print(f"{model}: kept from an earlier run (whatever --refit-epochs/--refit-image-size say); delete it to refit again")
    else:
        bcauto("refit", "--name", name, "--out", str(model), *epochs, *size, *common[:4], work=work, log=log)
        refit_s = time.perf_counter() - started - search_s
    best = json.loads(bcauto("best", "--name", name, "--storage", common[1], "--json", work=work, log=log))
    return score_model(model, study, seed, args, work, held_npz, started, search_s, refit_s, best)


def score_model(model: Path, study: str, seed: int, args, work: Path, held_npz: Path, started: float, search_s, refit_s, best) -> dict:
    name = model.name
    log = work / f"{name}.log"
    held = evaluate(model, str(held_npz), work, log, "--shift", "--seed", str(seed))
    other = evaluate(model, args.otherlab, work, log)
    adapted_bn = evaluate(model, args.otherlab, work, log, "--adapt-bn")
    among = ("--classes", args.otherlab_classes)
    other_among = evaluate(model, args.otherlab, work, log, *among)
    adapted_bn_among = evaluate(model, args.otherlab, work, log, "--adapt-bn", *among)
    adapted_im = evaluate(model, args.otherlab, work, log, "--adapt-im")
    adapted_im_among = evaluate(model, args.otherlab, work, log, "--adapt-im", *among)
    row = {
        "study": study,
        "seed": seed,
        "search_s": search_s,
        "refit_s": refit_s,
        "best_trial": best.get("number"),
        "best_value": best.get("value"),
        "best_params": best.get("params"),
        "refit_epochs": [member["epochs"] for member in json.loads((model / "bcauto-model.json").read_text()).get("members", [])],
        "heldout_clean_macro_f1": held["macro_f1"],
        **{f"heldout_{g}_macro_f1": v for g, v in held["shift"]["by_group"].items()},
        "otherlab_accuracy": other["accuracy"],
        "otherlab_macro_f1": other["macro_f1"],
        "otherlab_adapt_bn_accuracy": adapted_bn["accuracy"],
        "otherlab_adapt_bn_macro_f1": adapted_bn["macro_f1"],
        "otherlab_adapt_bn": adapted_bn.get("adapt_bn"),
        "otherlab_classes": other_among["predicted_among"],
        "otherlab_among_accuracy": other_among["accuracy"],
        "otherlab_among_macro_f1": other_among["macro_f1"],
        "otherlab_adapt_bn_among_accuracy": adapted_bn_among["accuracy"],
        "otherlab_adapt_bn_among_macro_f1": adapted_bn_among["macro_f1"],
        "otherlab_adapt_im_accuracy": adapted_im["accuracy"],
        "otherlab_adapt_im_macro_f1": adapted_im["macro_f1"],
        "otherlab_adapt_im_among_accuracy": adapted_im_among["accuracy"],
        "otherlab_adapt_im_among_macro_f1": adapted_im_among["macro_f1"],
    }
    # fine-tuning alone; after recomputing BatchNorm, or information maximization, on the lab's images; and each
    # of these two as a classifier of the lab's classes only (suffix: the key of the row's columns)
    variants = {
        "plain": ((), ""),
        "bn": (("--adapt-bn",), "_bn"),
        "bn+classes": (("--adapt-bn", *among), "_bn_cls"),
        "im": (("--adapt-im",), "_im"),
        "im+classes": (("--adapt-im", *among), "_im_cls"),
        "bn+pl": (("--adapt-bn", "--pseudo-labels"), "_bn_pl"),
        "im+classes+pl": (("--adapt-im", *among, "--pseudo-labels"), "_im_cls_pl"),
        # the shots the model chooses for the lab to label (thirty-first run), the recipe the deploying page recommends
        "im+classes+pl+typical": (("--adapt-im", *among, "--pseudo-labels", "--choose-shots", "typical"), "_im_cls_pl_typ"),
        # three fine-tunings on the shots alone, averaged: the recipe recommended since the thirty-sixth run
        "im+classes+ens3": (("--adapt-im", *among, "--ensemble", "3"), "_im_cls_ens3"),
    }
    for shots in (int(n) for n in args.shots.split(",") if n):
        for extra, suffix in (variants[v] for v in args.adapt.split(",")):
            key = f"adapt{shots}{suffix}"
            out = work / "models" / f"{name}-{key}"
            if not done_since(out / "bcauto-model.json", model):
                bcauto(
                    "adapt",
                    str(model),
                    "--data",
                    args.otherlab,
                    "--shots",
                    str(shots),
                    "--seed",
                    str(seed),
                    "--out",
                    str(out),
                    "--tracking-uri",
                    f"sqlite:///{work / 'mlflow.db'}",
                    *extra,
                    work=work,
                    log=log,
                )
            adapted = json.loads((out / "bcauto-model.json").read_text())["adapted"]
            row[f"{key}_before_accuracy"] = adapted["before"]["accuracy"]
            row[f"{key}_accuracy"] = adapted["after"]["accuracy"]
            row[f"{key}_macro_f1"] = adapted["after"]["macro_f1"]
            row[f"{key}_scored"] = adapted["scored_images"]
            row[f"{key}_epochs"] = adapted["recipe"]["epochs"]
            if "after_shots_only" in adapted:  # --pseudo-labels: the same run before its self-training
                row[f"{key}_shots_only_accuracy"] = adapted["after_shots_only"]["accuracy"]
    row["total_s"] = time.perf_counter() - started
    return row


COLUMNS = (
    ("heldout_clean_macro_f1", "held-out F1"),
    ("heldout_corruption_macro_f1", "corrupt. F1"),
    ("heldout_lab_macro_f1", "lab-shift F1"),
    ("otherlab_accuracy", "other acc"),
    ("otherlab_macro_f1", "other F1"),
    ("otherlab_adapt_bn_accuracy", "+adapt-bn acc"),
    ("otherlab_among_accuracy", "5-cls acc"),
    ("otherlab_adapt_bn_among_accuracy", "5-cls+bn acc"),
    ("otherlab_adapt_im_accuracy", "+adapt-im acc"),
    ("otherlab_adapt_im_among_accuracy", "5-cls+im acc"),
    ("adapt10_accuracy", "adapt 10 acc"),
    ("adapt50_accuracy", "adapt 50 acc"),
    ("adapt10_bn_accuracy", "adapt 10+bn acc"),
    ("adapt50_bn_accuracy", "adapt 50+bn acc"),
    ("adapt10_bn_cls_accuracy", "adapt 10+bn+cls acc"),
    ("adapt50_bn_cls_accuracy", "adapt 50+bn+cls acc"),
    ("adapt10_im_accuracy", "adapt 10+im acc"),
    ("adapt50_im_accuracy", "adapt 50+im acc"),
    ("adapt10_im_cls_accuracy", "adapt 10+im+cls acc"),
    ("adapt50_im_cls_accuracy", "adapt 50+im+cls acc"),
    ("adapt10_bn_pl_accuracy", "adapt 10+bn+pl acc"),
    ("adapt50_bn_pl_accuracy", "adapt 50+bn+pl acc"),
    ("adapt10_im_cls_pl_accuracy", "adapt 10+im+cls+pl acc"),
    ("adapt50_im_cls_pl_accuracy", "adapt 50+im+cls+pl acc"),
    ("adapt10_im_cls_pl_typ_accuracy", "adapt 10 typical+im+cls+pl acc"),
    ("adapt50_im_cls_pl_typ_accuracy", "adapt 50 typical+im+cls+pl acc"),
    ("adapt10_im_cls_ens3_accuracy", "adapt 10+im+cls+ens3 acc"),
    ("adapt50_im_cls_ens3_accuracy", "adapt 50+im+cls+ens3 acc"),
)


def report(saved: dict, console) -> None:
    from rich.table import Table

    rows = saved["rows"]
    columns = [(key, label) for key, label in COLUMNS if any(row.get(key) is not None for row in rows)]  # measured ones
    table = Table(title=f"cross-lab benchmark ({saved['machine']}, {saved['date']})")
    for column in ("study", "seed", "search min", *(label for _, label in columns)):
        table.add_column(column, justify="left" if column == "study" else "right")
    for row in rows:
        table.add_row(
            Path(row["study"]).stem,
            str(row["seed"]),
            f"{row['search_s'] / 60:.1f}",
            *(f"{row[key]:.3f}" if row.get(key) is not None else "-" for key, _ in columns),
        )
    for study in dict.fromkeys(row["study"] for row in rows):
        mine = [row for row in rows if row["study"] == study]
        cells = []
        for key, _ in columns:
            values = [row[key] for row in mine if row.get(key) is not None]
            cells.append(f"{np.mean(values):.3f}±{np.std(values):.3f}" if values else "-")
        table.add_row(
            f"[bold]{Path(study).stem} mean±sd[/]", f"n={len(mine)}", f"{np.mean([r['search_s'] for r in mine]) / 60:.1f}", *cells
        )
    console.print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help=f"the training lab's image folder (default {DEFAULT_DATA})")
    parser.add_argument("--otherlab", default=DEFAULT_OTHERLAB, help="another lab's labelled images, scored only")
    parser.add_argument(
        "--otherlab-classes",
        default=OTHERLAB_CLASSES,
        help=f"the classes the other lab's slides show, for --classes (default {OTHERLAB_CLASSES})",
    )
    parser.add_argument("--studies", default=DEFAULT_STUDIES, help=f"comma-separated study files (default {DEFAULT_STUDIES})")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--trials", type=int, default=0, help="trials per study (default: each study file's own)")
    parser.add_argument("--holdout", type=float, default=0.1, help="stratified share of --data kept aside (default 0.1)")
    parser.add_argument("--holdout-max", type=int, default=1500, help="score on at most this many held-out images (default 1500)")
    parser.add_argument("--pool", type=int, default=0, help="images the searches use, drawn from the rest (default 0: all)")
    parser.add_argument(
        "--shots", default=SHOTS, help=f"labelled cells of the other lab to adapt with (default {SHOTS}; empty: no `bcauto adapt` run)"
    )
    parser.add_argument(
        "--adapt",
        default=ADAPT_VARIANTS,
        help=f"which `bcauto adapt` runs, of {ADAPT_VARIANTS} (pl: with --pseudo-labels; default all)",
    )
    parser.add_argument(
        "--refit-epochs", default="", help="`bcauto refit --epochs`: best, trained or a number (default: the study file's refit_epochs)"
    )
    parser.add_argument(
        "--refit-image-size",
        type=int,
        default=0,
        help="`bcauto refit --image-size`: pixels a side to refit at (default: the study file's refit_image_size)",
    )
    parser.add_argument("--model", help="score this refitted model (trained on the --work split of the one --seeds) instead of searching")
    parser.add_argument("--work", default="bench/out/cross_lab", help="folder for stores, data, models and results")
    parser.add_argument("--report", metavar="JSON", help="only print the table of a saved cross_lab.json")
    args = parser.parse_args(argv)
    unknown = set(args.adapt.split(",")) - set(ADAPT_VARIANTS.split(","))
    if unknown:
        parser.error(f"--adapt: unknown {', '.join(sorted(unknown))}; choose among {ADAPT_VARIANTS}")
    if args.model and ("," in args.seeds or "," in args.studies):
        parser.error("--model scores one model: give one --seeds (the split it was trained on) and one --studies (its label)")
    quiet()
    from rich.console import Console

    console = Console(width=200)  # the table is as wide as its columns, in a terminal or in a log file
    if args.report:
        report(json.loads(Path(args.report).read_text()), console)
        return 0
    from bcauto.data.sources import load_data
    from bcauto.plugins import components

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results = work / "cross_lab.json"
    saved = json.loads(results.read_text()) if results.exists() else {"rows": []}
    saved.update({"machine": machine(), "date": time.strftime("%Y-%m-%d"), "args": vars(args)})
    data = load_data(args.data, 96, components(), {"on_bad_image": "skip"})
    for seed in (int(s) for s in args.seeds.split(",")):
        pool, held = split_holdout(data, args.holdout, args.pool, args.holdout_max, seed)
        search_npz, held_npz = work / f"search-s{seed}.npz", work / f"heldout-s{seed}.npz"
        save_npz(pool, search_npz)
        save_npz(held, held_npz)
        console.print(f"seed {seed}: {len(pool.labels)} images to search, {len(held.labels)} held out")
        for study in args.studies.split(","):
            if any(r["study"] == study and r["seed"] == seed for r in saved["rows"]):
                continue  # finished in an earlier run of the same --work
            row = run_study(study, seed, args, work, search_npz, held_npz)
            if results.exists():  # read again: another seed's run may share this --work and have written its row
                saved["rows"] = json.loads(results.read_text())["rows"]
            saved["rows"].append(row)
            results.write_text(json.dumps(saved, indent=2) + "\n")
            console.print({k: v for k, v in row.items() if k != "best_params"})
    report(saved, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
