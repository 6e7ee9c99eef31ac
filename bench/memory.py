"""Memory over a long study: peak RSS after 30 trials vs after 5, all trials in one process (ratio last).

Runs trials in this process (``workers = 0``), the harder case: by default bcauto also recycles its worker
processes, which bounds growth regardless.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import DEFAULT_DATA, load_subset, machine, quiet

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
augmentation = ["none", "seed", "stain"]
imbalance = ["none", "class_weights", "oversample"]
head_units1 = [64, 128]
head_units2 = [32, 64]
lr_head = {{ low = 3e-4, high = 3e-3, log = true }}
"""


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    quiet()
    import optuna
    from rich.console import Console

    from bcauto.config import load_study
    from bcauto.plugins import components
    from bcauto.study import SearchRequest, run_search

    tmp = Path(tempfile.mkdtemp(prefix="bcauto-memory-"))
    (tmp / "memory.toml").write_text(STUDY.format(size=args.size))
    cfg = load_study(tmp / "memory.toml")
    data = load_subset(args.data, args.size, args.images)
    peaks: dict[int, float] = {}

    original = optuna.Study.optimize

    def optimize_with_probe(study, *a, callbacks=None, **kw):
        def probe(study, trial):
            peaks[trial.number + 1] = peak_rss_mb()
        return original(study, *a, callbacks=[*(callbacks or []), probe], **kw)

    optuna.Study.optimize = optimize_with_probe
    request = SearchRequest(cfg=cfg, data=data, study_name="memory", trials=args.trials, storage=f"sqlite:///{tmp}/optuna.db",
                            tracking_uri=f"sqlite:///{tmp}/mlflow.db", seed=0, timeout=None, workers=0, work_dir=str(tmp))
    run_search(request, components(), Console(quiet=True))
    print(f"machine: {machine()}")
    print(f"{args.trials} trials in one process, {len(data.labels)} images {args.size}x{args.size}")
    for n in (1, 5, 10, 20, args.trials):
        if n in peaks:
            print(f"peak RSS after {n:2d} trials: {peaks[n]:.0f} MiB")
    print(f"peak RSS growth, trial {args.trials} vs trial 5: {peaks[args.trials] / peaks[5] - 1:+.1%}")


if __name__ == "__main__":
    main()
