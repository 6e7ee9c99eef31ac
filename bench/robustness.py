"""Robustness (issue 6): does selecting on shifted validation give a model that holds up better under corruptions?

Two studies of equal budget (same data, seed, search space, trials and epochs) differ only in ``[study] metric``:
``val_macro_f1`` (clean validation) and ``val_shift_macro_f1`` (a corrupted copy of the validation split). Both
search augmentation policies, among them corruption, stain and augmix. The top K trials of each are refitted as one
ensemble (``bcauto refit --top K``) and both models are scored on a held-out split that neither search saw: clean,
and through the whole corruption suite (every shift at every severity, ``bcauto.shift.every_shift``), macro-F1
averaged over all. Everything is repeated for each seed (its own held-out split, pool, studies and corruptions);
the mean differences over the seeds are printed last.

    python bench/robustness.py                  # pbc96 at 32x32, seeds 0 and 1: 2 x 2 x 10 trials x 10 epochs (~2 h on 2 cores)
    python bench/robustness.py --seeds 0 --trials 3 --startup 1 --epochs 1 --pool 800 --holdout-max 400 --top 1   # smoke
    python bench/robustness.py --report run1/robustness.json run2/robustness.json   # seeds run apart, reported as one

Why an ensemble and several seeds: a single refit of a short from-scratch run can land on a bad epoch (a first run
saw one fall from 0.83 validation to 0.29 held-out macro-F1), and one seed's difference mixes that luck with the
effect of the metric.

The backbone is the home-made ``resnet_cnn``: in a few epochs from scratch at
48x48 on pbc96, ``mini_cnn`` stayed at the majority class for every learning rate tried (1e-4 to 1e-3), so it would
only have spent trials. The space is narrowed to the levers that trade clean accuracy for robustness (augmentation
policy and its strength, label smoothing) around a recipe that trains stably in 10 epochs (class weights, a fixed
head, a narrow learning-rate range): a first run with 6 epochs on 2,000 images at 48x48 and loss, imbalance and
head searched as well left every configuration too unstable to refit. The first ``--startup`` trials (TPE's random
start-up) are the same in both studies of a seed; after them each study's metric steers its sampler, so the
studies differ in what they train, not only in which trials they refit. With the same sampler seed they still draw
the same configurations for as long as both metrics agree on which trials lead; the script reports whether they
trained the same configurations.

Everything the studies write (Optuna and MLflow stores, models) goes to --work (a temporary folder by default).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, machine, quiet, save_npz, split_holdout  # noqa: E402

STUDY = """
[study]
description = "bench/robustness.py: {metric}"
metric = "{metric}"
trials = {trials}
seed = {seed}
sampler = "tpe"
startup_trials = {startup}
pruner = "none"
shift_validation = true

[data]
image_size = {size}
val_fraction = 0.2

[train]
weights = "none"
batch_size = 64
head_epochs = {epochs}
finetune_epochs = 0
patience = 3
lr_patience = 2

[search]
backbone = ["resnet_cnn"]
augmentation = ["none", "flip_rotate_zoom", "stain", "augmix", "corruption"]
imbalance = "class_weights"
lr_head = {{ low = 7e-4, high = 1.5e-3, log = true }}
head_units1 = 128
head_units2 = 64
head_dropout = 0.3
loss = "crossentropy"
label_smoothing = [0.0, 0.1]
"""

METRICS = {"clean": "val_macro_f1", "shifted": "val_shift_macro_f1"}
# shifts that no searched augmentation policy imitates (stain and corruption train on colour, blur, noise and
# erasing; all but "none" turn and flip): the held-out score on these is robustness to shifts nobody trained for
UNTRAINED_SHIFTS = ("jpeg", "pixelate", "stain_deposits", "bubbles")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help=f"image folder (default {DEFAULT_DATA})")
    parser.add_argument("--size", type=int, default=32, help="image side (default 32)")
    parser.add_argument("--holdout", type=float, default=0.2, help="stratified share kept aside for the final scores (default 0.2)")
    parser.add_argument("--holdout-max", type=int, default=1500, help="score on at most this many held-out images (default 1500; 0: all)")
    parser.add_argument("--pool", type=int, default=4000, help="images the searches use, drawn from the rest (default 4000)")
    parser.add_argument("--trials", type=int, default=10, help="trials per study (default 10)")
    parser.add_argument("--startup", type=int, default=3, help="random start-up trials before TPE models the metric (default 3)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per trial (default 10)")
    parser.add_argument(
        "--seeds", default="0,1", help="comma-separated seeds; each gives its own split, pair of studies and corruptions (default 0,1)"
    )
    parser.add_argument("--top", type=int, default=3, help="refit the K best trials of each study as an ensemble (default 3)")
    parser.add_argument("--work", help="folder for stores, data and models (default: a new temporary folder)")
    parser.add_argument(
        "--report",
        metavar="JSON",
        nargs="+",
        help="only print the report of earlier runs' robustness.json files (the seeds they finished), as one run",
    )
    args = parser.parse_args(argv)
    quiet()
    from rich.console import Console

    if args.report:
        saved = [json.loads(Path(path).read_text()) for path in args.report]
        runs = {int(seed): run for one in saved for seed, run in one["runs"].items()}
        settings = {k: v for k, v in saved[0]["args"].items() if k not in ("seeds", "work", "report")}
        if any({k: v for k, v in one["args"].items() if k in settings} != settings for one in saved[1:]):
            parser.error("--report: these runs used different settings; report them one at a time")
        timed = [one["elapsed_s"] for one in saved if one.get("elapsed_s") is not None]
        elapsed = sum(timed) if len(timed) == len(saved) else None
        machines = sorted({one.get("machine") or "machine not recorded" for one in saved})
        report(runs, argparse.Namespace(**{**vars(parser.parse_args([])), **settings}), Console(), elapsed, " + ".join(machines))
        return 0
    from bcauto.data.sources import load_data
    from bcauto.plugins import components

    console = Console()
    work = Path(args.work or tempfile.mkdtemp(prefix="bcauto-robustness-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    comps = components()
    data = load_data(args.data, args.size, comps, {"on_bad_image": "skip"})
    runs = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        run = run_seed(data, seed, args, comps, work, console)
        if run is None:
            return 1
        runs[seed] = run
        # saved after every seed, so that a long run cut short keeps the seeds it finished
        (work / "robustness.json").write_text(
            json.dumps(
                {"runs": runs, "args": vars(args), "elapsed_s": time.perf_counter() - started, "machine": machine()}, indent=2, default=str
            )
        )
        console.print("\n".join(seed_lines(seed, run)), markup=False, highlight=False, soft_wrap=True)
    report(runs, args, console, time.perf_counter() - started)
    return 0


def run_seed(data, seed: int, args, comps, work: Path, console):
    """One seed: its held-out split, both studies, their refits and held-out scores (None when a command failed)."""
    from bcauto.bundle import load_bundle
    from bcauto.cli import main as bcauto
    from bcauto.evaluate import evaluate

    pool, held = split_holdout(data, args.holdout, args.pool, args.holdout_max, seed)
    search_data = save_npz(pool, work / f"search-s{seed}.npz")
    console.print(
        f"seed {seed}: {args.data} at {args.size}px: {len(data.labels)} images; searches use {len(pool.labels)}, "
        f"held out {len(held.labels)} (never seen by a search)"
    )
    stores = ["--storage", f"sqlite:///{work}/optuna.db", "--tracking-uri", f"sqlite:///{work}/mlflow.db"]
    results, timings = {}, {}
    for label, metric in METRICS.items():
        name = f"robust_{label}_s{seed}"
        study_file = work / f"{name}.toml"
        study_file.write_text(
            STUDY.format(metric=metric, trials=args.trials, startup=args.startup, seed=seed, size=args.size, epochs=args.epochs)
        )
        t0 = time.perf_counter()
        if bcauto(["search", "--study", str(study_file), "--name", name, "--data", str(search_data), "--workers", "0", *stores]) != 0:
            return None
        t1 = time.perf_counter()
        if bcauto(["refit", "--name", name, "--top", str(args.top), *stores, "--out", str(work / name)]) != 0:
            return None
        t2 = time.perf_counter()
        bundle = load_bundle(work / name)
        result, _, _ = evaluate(bundle, held, comps.shifts, seed=seed)
        timings[label] = {"search_s": t1 - t0, "refit_s": t2 - t1, "evaluate_s": time.perf_counter() - t2}
        members = [
            {"trial": m["trial"], "params": m["params"], "search": m["metrics"], "epochs": m["epochs"]} for m in bundle.info["members"]
        ]
        results[label] = {"study": name, "metric": metric, "members": members, "holdout": result}
    return {
        "results": results,
        "timings": timings,
        "same_trials": same_trials(work, seed),
        "pool": len(pool.labels),
        "held": len(held.labels),
    }


def same_trials(work: Path, seed: int) -> bool:
    """Whether both studies of ``seed`` trained the same configurations (the same sampler seed draws the same
    parameters until TPE's random start-up ends and each metric steers its own study)."""
    import optuna

    storage = f"sqlite:///{work}/optuna.db"
    params = [[t.params for t in optuna.load_study(study_name=f"robust_{label}_s{seed}", storage=storage).trials] for label in METRICS]
    return params[0] == params[1]


def member_row(metric: str, m: dict) -> str:
    p, s = m["params"], m["search"]
    return (
        f"| {metric} | {m['trial']} | {p['augmentation']}, smoothing {p['label_smoothing']}, "
        f"lr {p['lr_head']:.2e}, "
        f"{m['epochs']['head']} epochs | {s.get('val_macro_f1', float('nan')):.4f} | {s.get('val_shift_macro_f1', float('nan')):.4f} |"
    )


def holdout_scores(holdout: dict) -> dict[str, float]:
    """Held-out macro-F1: clean, over the whole suite, and over the shifts no policy trains on."""
    by_corruption = holdout["shift"]["by_corruption"]
    return {
        "clean": holdout["macro_f1"],
        "shifted": holdout["shift"]["mean_macro_f1"],
        "untrained shifts": float(np.mean([by_corruption[n] for n in UNTRAINED_SHIFTS if n in by_corruption])),
    }


def seed_lines(seed: int, run: dict) -> list[str]:
    """One seed's report: the refitted members, both ensembles' held-out scores, and the scores by corruption."""
    results = run["results"]
    clean, shifted = results["clean"]["holdout"], results["shifted"]["holdout"]
    spent = ", ".join(
        f"{k}: search {v['search_s']:.0f} s, refit {v['refit_s']:.0f} s, evaluate {v['evaluate_s']:.0f} s"
        for k, v in run["timings"].items()
    )
    return [
        (
            f"seed {seed}: search pool {run['pool']} images (split 80/20 by each study), held-out {run['held']}; "
            f"both studies trained the same configurations: {run['same_trials']}; {spent}"
        ),
        "",
        "| selected by | trial | configuration | val clean F1 | val shifted F1 |",
        "| --- | --- | --- | --- | --- |",
        *(member_row(r["metric"], m) for r in results.values() for m in r["members"]),
        "",
        (
            "| refit ensemble selected by | held-out clean F1 | held-out shifted F1 | severity 1 / 3 / 5 | "
            f"untrained shifts F1 ({', '.join(UNTRAINED_SHIFTS)}) |"
        ),
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {r['metric']} | {r['holdout']['macro_f1']:.4f} | {r['holdout']['shift']['mean_macro_f1']:.4f} | "
            + " / ".join(f"{r['holdout']['shift']['by_severity'][s]:.3f}" for s in ("1", "3", "5"))
            + f" | {holdout_scores(r['holdout'])['untrained shifts']:.4f} |"
            for r in results.values()
        ),
        "",
        "held-out shifted macro-F1 by corruption (clean-selected / shifted-selected): "
        + ", ".join(
            f"{n}: {clean['shift']['by_corruption'][n]:.3f} / {shifted['shift']['by_corruption'][n]:.3f}"
            for n in clean["shift"]["by_corruption"]
        ),
        "",
    ]


def report(runs: dict, args, console, total_s: float | None, machine_name: str | None = None) -> None:
    """Every seed's report, then the mean differences (shifted-selected minus clean-selected) over the seeds."""
    total = f"total {total_s / 60:.1f} min" if total_s is not None else "total time not recorded"
    lines = [
        f"machine: {machine_name or machine()}; {total}",
        (
            f"data: {args.data} at {args.size}x{args.size}; {args.trials} trials ({args.startup} random start-up) x "
            f"{args.epochs} epochs per study; refit: top {args.top} trials of each study as one ensemble"
        ),
        "",
    ]
    gaps: dict[str, list[float]] = {}
    for seed, run in runs.items():
        lines += seed_lines(seed, run)
        clean, shifted = (holdout_scores(run["results"][label]["holdout"]) for label in METRICS)
        for kind in clean:
            gaps.setdefault(kind, []).append(shifted[kind] - clean[kind])
    for kind, values in gaps.items():
        listed = ", ".join(f"{g:+.4f}" for g in values)
        lines.append(
            f"held-out {kind} macro-F1, shifted-selected minus clean-selected: mean {np.mean(values):+.4f} "
            f"over {len(values)} seed(s) ({listed})"
        )
    console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)


if __name__ == "__main__":
    sys.exit(main())
