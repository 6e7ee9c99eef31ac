"""Memory over a long study: peak RSS after 30 trials vs after 5 (the growth of the default mode is printed last).

Runs ``bcauto search`` twice on the same data and space, as a user would, and samples the resident memory of
its whole process tree (the supervisor and its worker processes) four times a second:

- ``--workers 1`` (the default): trials run in a worker process that is replaced when its memory has grown
  past ``WorkerJob.memory_growth_limit`` times its size after its first trial (or after ``recycle_after``
  trials);
- ``--workers 0``: every trial in one process, which shows what TensorFlow itself keeps per trial.

"Peak RSS after n trials" is the largest sum over the tree seen until the n-th trial finished.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DEFAULT_DATA, load_subset, machine, quiet, save_npz

STUDY = """
[study]
seed = 0
pruner = "none"
[data]
image_size = {size}
[train]
weights = "none"
batch_size = 64
head_epochs = 2
finetune_epochs = 0
[search]
backbone = ["mini_cnn", "resnet_cnn", "inception_cnn"]
augmentation = ["none", "flip_rotate_zoom", "stain"]
imbalance = ["none", "class_weights", "oversample"]
head_units1 = [64, 128]
head_units2 = [32, 64]
lr_head = {{ low = 3e-4, high = 3e-3, log = true }}
"""


def tree_rss_mb(root: int) -> float:
    """Resident memory of ``root`` and all its descendants, in MiB."""
    from bcauto.supervisor import process_memory_mb

    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, grown = {root}, True
    while grown:
        children = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= children
        grown = bool(children)
    return sum(process_memory_mb(pid) for pid in tree)


def finished_trials(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED', 'FAIL')").fetchone()[0]
    except sqlite3.Error:
        return -1


def peaks_of_search(npz: Path, study: Path, trials: int, workers: int, folder: Path) -> dict[int, float]:
    """Run one search and return {n: peak tree RSS until trial n finished}."""
    folder.mkdir(parents=True)
    db = folder / "optuna.db"
    command = [
        sys.executable,
        "-m",
        "bcauto.cli",
        "search",
        "--study",
        str(study),
        "--data",
        str(npz),
        "--trials",
        str(trials),
        "--workers",
        str(workers),
        "--storage",
        f"sqlite:///{db}",
        "--tracking-uri",
        f"sqlite:///{folder}/mlflow.db",
        "--work-dir",
        str(folder / "work"),
    ]
    process = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peaks: dict[int, float] = {}
    peak, done = 0.0, 0
    while process.poll() is None:
        peak = max(peak, tree_rss_mb(process.pid))
        now = finished_trials(db)
        for n in range(done + 1, now + 1):
            peaks[n] = peak
        done = max(done, now)
        time.sleep(0.25)
    if process.returncode != 0:
        raise SystemExit(f"bcauto search --workers {workers} exited with {process.returncode}")
    for n in range(done + 1, trials + 1):
        peaks[n] = peak
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    quiet()
    tmp = Path(tempfile.mkdtemp(prefix="bcauto-memory-"))
    (tmp / "memory.toml").write_text(STUDY.format(size=args.size))
    npz = save_npz(load_subset(args.data, args.size, args.images), tmp / "subset.npz")
    print(f"machine: {machine()}")
    print(f"{args.trials} trials, {args.images} images {args.size}x{args.size}, memory of the search's whole process tree")
    growth = {}
    for workers, label in ((0, "one process (--workers 0)"), (1, "default (--workers 1)")):
        peaks = peaks_of_search(npz, tmp / "memory.toml", args.trials, workers, tmp / f"workers{workers}")
        shown = ", ".join(f"{n}: {peaks[n]:.0f}" for n in (1, 5, 10, 20, args.trials) if n in peaks)
        growth[label] = peaks[args.trials] / peaks[5] - 1
        print(f"{label}: peak RSS MiB after n trials {shown}; trial {args.trials} vs 5: {growth[label]:+.1%}")
    print(f"peak RSS growth of the default mode, trial {args.trials} vs trial 5: {growth['default (--workers 1)']:+.1%}")


if __name__ == "__main__":
    main()
