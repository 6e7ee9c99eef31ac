"""Shared bench helpers: a fixed stratified subset of a real image folder, saved as an .npz, and timing."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

DEFAULT_DATA = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "pbc96")


def quiet():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bcauto.cli import quiet_frameworks

    quiet_frameworks()


def load_subset(path: str, image_size: int, n: int, seed: int = 0):
    """A stratified, seeded subset of ``n`` images from an image folder or npz, at ``image_size``."""
    from sklearn.model_selection import train_test_split

    from bcauto.data.sources import load_data
    from bcauto.plugins import components

    data = load_data(path, image_size, components(), {"seed": seed, "on_bad_image": "skip"})
    if n < len(data.labels):
        keep, _ = train_test_split(np.arange(len(data.labels)), train_size=n, stratify=data.labels, random_state=seed)
        data = data.subset(np.sort(keep))
    return data


def save_npz(data, path: Path) -> Path:
    np.savez(path, images=data.images, labels=data.labels, class_names=np.array(data.class_names))
    return path


@contextmanager
def timed(results: dict, key: str):
    start = time.perf_counter()
    yield
    results[key] = time.perf_counter() - start


def machine() -> str:
    import platform

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"{platform.node()} ({os.cpu_count()} CPUs{', GPU ' + str(len(gpus)) if gpus else ', no GPU'}), TF {tf.__version__}"


def epoch_timer():
    """A Keras callback recording each epoch's wall time in ``.times``."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    return EpochTimer()
