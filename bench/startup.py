"""Start-up time of the commands that build no model: ``bcauto --help``, ``bcauto plugins`` and ``bcauto best``.

Each runs as its own process (the installed ``bcauto`` script, as a user types it), ``--runs`` times; the
median wall-clock time is printed, and the median CPU time (user + system) of the process, which a busy shared
machine inflates far less than the wall-clock time; the load average is printed too. ``best``
reads a tiny study (three trials) that the script writes into a temporary folder first.

    python bench/startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def tiny_study(folder: Path) -> str:
    """A SQLite storage holding one study with three finished trials; its URL."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{folder / 'optuna.db'}"
    study = optuna.create_study(study_name="tiny", storage=url, direction="maximize")
    for value in (0.5, 0.6, 0.7):
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        study.tell(trial, value)
    return url


def seconds(argv: list[str], cwd: Path) -> tuple[float, float]:
    """(wall-clock, CPU) seconds of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per command (default 3); the median is shown")
    args = parser.parse_args()
    bcauto = shutil.which("bcauto", path=str(Path(sys.executable).parent)) or shutil.which("bcauto")
    if bcauto is None:
        sys.exit("the bcauto command is not installed (pip install -e .)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = tiny_study(folder)
        commands = {
            "bcauto --help": [bcauto, "--help"],
            "bcauto plugins": [bcauto, "plugins"],
            "bcauto best": [bcauto, "best", "--storage", url],
        }
        print(f"{os.cpu_count()} CPUs, load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for name, argv in commands.items():
            runs = [seconds(argv, folder) for _ in range(args.runs)]
            wall, cpu = (statistics.median(run[i] for run in runs) for i in (0, 1))
            print(f"{name:16} median {wall:5.2f} s wall, {cpu:5.2f} s CPU   wall of each run: {', '.join(f'{run[0]:.2f}' for run in runs)}")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
