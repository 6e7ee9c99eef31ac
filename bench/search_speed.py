"""bcauto search vs the hand-written Optuna + Keras search: same space, trials, epochs, data and split.

Prints both wall times, both best validation macro-F1, and the speed ratio (last line).

The machine has no network for ImageNet weights, and a frozen ResNet50 with random weights gives features on
which every head sits at chance, so comparing best macro-F1 would compare noise. Both sides therefore load the
same local weights file: ResNet50 trained for a few epochs on pbc96 images *outside* the bench's subset
(``common.domain_pretrained_resnet50``, BatchNorm statistics recomputed after training; cached in
``--weights-cache``; not timed, like a weights download).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from common import DEFAULT_DATA, domain_pretrained_resnet50, load_subset, machine, quiet, save_npz, stratified_subset

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--pretrain-images", type=int, default=3000, help="images outside the subset to pretrain on")
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--weights-cache", default=str(Path.home() / ".cache" / "bcauto-bench"))
    parser.add_argument("--prepare-only", action="store_true", help="fill the weights cache and stop (nothing timed)")
    args = parser.parse_args()
    quiet()
    import handwritten_search

    from bcauto.config import load_study
    from bcauto.data.split import stratified_split

    tmp = Path(tempfile.mkdtemp(prefix="bcauto-speed-"))
    study_text = (HERE / "studies" / "speed.toml").read_text()
    size = tomllib.loads(study_text)["data"]["image_size"]
    data, rest = load_subset(args.data, size, args.images, with_rest=True)
    pretrain, _ = stratified_subset(rest, args.pretrain_images)
    weights = (
        Path(args.weights_cache) / f"resnet50-{Path(args.data).name}-{size}px-{len(pretrain.labels)}x{args.pretrain_epochs}.weights.h5"
    )
    print(domain_pretrained_resnet50(pretrain, weights, args.pretrain_epochs))
    if args.prepare_only:
        return
    (tmp / "speed.toml").write_text(study_text.replace("{weights}", str(weights)))
    cfg = load_study(tmp / "speed.toml")
    epochs, patience, seed = cfg.train.head_epochs, cfg.train.patience, cfg.study.seed
    npz = save_npz(data, tmp / "subset.npz")
    split = stratified_split(data, cfg.data.val_fraction, seed)
    print(f"machine: {machine()}")
    print(
        f"data: {len(data.labels)} images {size}x{size} from {args.data}; {len(split.train)} train / {len(split.val)} val; "
        f"{args.trials} trials x {epochs} epochs"
    )

    start = time.perf_counter()
    baseline = handwritten_search.run(
        data.images[split.train],
        data.labels[split.train],
        data.images[split.val],
        data.labels[split.val],
        str(weights),
        args.trials,
        epochs,
        patience,
        seed,
    )
    baseline_time = time.perf_counter() - start
    print(f"hand-written: {baseline_time:.1f} s, best val macro-F1 {baseline.best_value:.4f}")

    stores = ["--storage", f"sqlite:///{tmp}/optuna.db"]
    command = [
        sys.executable,
        "-m",
        "bcauto.cli",
        "search",
        "--study",
        str(tmp / "speed.toml"),
        "--data",
        str(npz),
        "--trials",
        str(args.trials),
        "--tracking-uri",
        f"sqlite:///{tmp}/mlflow.db",
        "--work-dir",
        str(tmp / "work"),
        *stores,
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=tmp, stdout=subprocess.DEVNULL)
    bcauto_time = time.perf_counter() - start
    best = json.loads(
        subprocess.run(
            [sys.executable, "-m", "bcauto.cli", "best", "--json", *stores], check=True, cwd=tmp, capture_output=True, text=True
        ).stdout
    )
    print(f"bcauto:       {bcauto_time:.1f} s, best val macro-F1 {best['value']:.4f} (trial {best['number']})")
    print(f"macro-F1 difference (bcauto - hand-written): {best['value'] - baseline.best_value:+.4f}")
    print(f"speed ratio (hand-written / bcauto): {baseline_time / bcauto_time:.1f}x")


if __name__ == "__main__":
    main()
