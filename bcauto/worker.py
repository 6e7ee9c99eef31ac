"""A search worker: one process that runs trials of a study until told to stop or recycled.

The supervisor (``bcauto search``) writes a job file and starts ``python -m bcauto.worker JOB``; the worker
maps the prepared data from disk, rebuilds the trial context and runs ``study.optimize``. A trial that
crashes the process takes only this worker down: the supervisor marks that trial failed and starts another.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bcauto.data import Dataset
from bcauto.files import written_whole
from bcauto.interrupts import stopped_by_the_first_signal


@dataclass
class WorkerJob:
    """Everything a worker needs, as JSON."""

    config: str  # the validated study file (StudyConfig JSON): the file may change while the search runs
    study_name: str
    storage: str
    tracking_uri: str
    data_dir: str
    settings: dict
    sampler_seed: int
    trials: int
    max_failures: int
    parent_run_id: str | None
    run_params: dict
    run_tags: dict
    precision: str = "float32"
    deadline: float | None = None
    recycle_after: int = 20
    # TensorFlow keeps every trial's traced train step alive in the process (about 30 MiB per trial in
    # bench/memory.py; clear_session does not release them), so a worker is replaced once it grew 10%.
    memory_growth_limit: float = 1.1
    env: dict = field(default_factory=dict)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the storage URL may hold a password: the job file is readable by its owner only
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(self), out)
        return path

    @classmethod
    def read(cls, path: str | Path) -> WorkerJob:
        return cls(**json.loads(Path(path).read_text()))


def save_split_data(
    train: Dataset,
    val: Dataset,
    folder: Path,
    shifted: Dataset | None = None,
    shift_tags: np.ndarray | None = None,
    domain_val: Dataset | None = None,
) -> Path:
    """Write the split data once, for workers to memory-map instead of loading and decoding again."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = (
        [("train", train), ("val", val)]
        + ([("shifted", shifted)] if shifted is not None else [])
        + ([("domain_val", domain_val)] if domain_val is not None else [])
    )
    if shift_tags is not None:
        np.save(folder / "shift_tags.npy", shift_tags.astype(str))
    for name, data in parts:
        if not (folder / f"{name}_images.npy").exists():
            with written_whole(folder / f"{name}_images.npy") as staged:
                np.save(staged, data.images)
        np.save(folder / f"{name}_labels.npy", data.labels)
    (folder / "meta.json").write_text(json.dumps({"class_names": list(train.class_names), "source": train.source}))
    return folder


def load_split_data(folder: str | Path) -> tuple[Dataset, Dataset, Dataset | None, np.ndarray | None, Dataset | None]:
    """Train, validation, shifted validation (or None), the shift of each shifted image, and the held-out domain
    (or None)."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    parts = []
    for name in ("train", "val", "shifted", "domain_val"):
        if not (folder / f"{name}_images.npy").exists():
            parts.append(None)
            continue
        images = np.load(folder / f"{name}_images.npy", mmap_mode="r")
        labels = np.load(folder / f"{name}_labels.npy")
        parts.append(Dataset(images, labels, tuple(meta["class_names"]), meta["source"]))
    tags = np.load(folder / "shift_tags.npy") if (folder / "shift_tags.npy").exists() else None
    return parts[0], parts[1], parts[2], tags, parts[3]


def resident_memory_mb() -> float:
    """This process's resident set size in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def die_with_parent() -> None:
    """Ask Linux to kill this worker when the supervisor dies (kill -9 included), so no orphan keeps training."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Recycle:
    """Stops this worker after ``limit`` trials or when its memory grew past ``growth`` x the first trial's."""

    def __init__(self, limit: int, growth: float):
        self.limit, self.growth = limit, growth
        self.count, self.baseline = 0, None

    def __call__(self, study, trial) -> None:
        self.count += 1
        rss = resident_memory_mb()
        self.baseline = self.baseline or rss
        if self.count >= self.limit or rss > self.baseline * self.growth:
            study.stop()


def run(job: WorkerJob) -> int:
    import keras
    import optuna

    from bcauto.config import StudyConfig
    from bcauto.objective import Objective, SearchContext
    from bcauto.plugins import components
    from bcauto.study import FINISHED, FailureLimit, continue_sampling, make_pruner, make_storage
    from bcauto.tracking import Tracker
    from bcauto.training import TrainSettings

    keras.mixed_precision.set_global_policy(job.precision)
    cfg = StudyConfig.model_validate_json(job.config)
    train_data, val_data, shifted_val, shift_tags, domain_val = load_split_data(job.data_dir)
    study = optuna.load_study(study_name=job.study_name, storage=make_storage(job.storage), pruner=make_pruner(cfg))
    continue_sampling(study, cfg, job.sampler_seed)
    context = SearchContext(
        cfg=cfg,
        components=components(),
        train_data=train_data,
        val_data=val_data,
        settings=TrainSettings(**job.settings),
        tracker=Tracker(job.tracking_uri, experiment=job.study_name),
        parent_run_id=job.parent_run_id,
        run_tags=job.run_tags,
        run_params=job.run_params,
        shifted_val=shifted_val,
        shift_tags=shift_tags,
        domain_val=domain_val,
    )
    timeout = None if job.deadline is None else max(1.0, job.deadline - __import__("time").time())
    callbacks = [
        optuna.study.MaxTrialsCallback(job.trials, states=FINISHED),
        FailureLimit(job.max_failures),
        Recycle(job.recycle_after, job.memory_growth_limit),
    ]
    study.optimize(Objective(context), n_trials=None, timeout=timeout, callbacks=callbacks, catch=(Exception,), gc_after_trial=True)
    return 0


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    die_with_parent()
    from bcauto.frameworks import quiet_frameworks

    quiet_frameworks()
    try:
        with stopped_by_the_first_signal():
            return run(WorkerJob.read(args[0]))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
