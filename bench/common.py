"""Shared bench helpers: a fixed stratified subset of a real image folder, saved as an .npz, and timing."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

DEFAULT_DATA = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "pbc96")
DEFAULT_OTHERLAB = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "otherlab_dev" / "chula_wbc")
WHITE_CELLS = ("basophil", "eosinophil", "immature_granulocyte", "lymphocyte", "monocyte", "neutrophil")


def quiet():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bcauto.frameworks import quiet_frameworks

    quiet_frameworks()


def stratified_subset(data, n: int, seed: int = 0):
    """(a stratified, seeded ``n``-image subset of ``data``, the images left out of it)."""
    from sklearn.model_selection import train_test_split

    keep, rest = np.arange(len(data.labels)), np.arange(0)
    if n < len(data.labels):
        keep, rest = train_test_split(keep, train_size=n, stratify=data.labels, random_state=seed)
    return data.subset(np.sort(keep)), data.subset(np.sort(rest))


def load_subset(path: str, image_size: int, n: int, seed: int = 0, with_rest: bool = False):
    """A stratified, seeded subset of ``n`` images from an image folder or npz, at ``image_size``; with
    ``with_rest``, also the images left out of it (for pretraining on data the bench never scores)."""
    from bcauto.data.sources import load_data
    from bcauto.plugins import components

    data = load_data(path, image_size, components(), {"seed": seed, "on_bad_image": "skip"})
    subset, rest = stratified_subset(data, n, seed)
    return (subset, rest) if with_rest else subset


def domain_pretrained_resnet50(data, weights_file: Path, epochs: int = 3, seed: int = 0) -> str:
    """Train ResNet50 from scratch on ``data`` (a classifier over its classes) and save the backbone's weights.

    Stands in for ImageNet weights on a machine without network: a frozen backbone with random weights gives
    near-constant features and every head sits at chance, which makes a quality comparison meaningless. The
    file is reused when it exists. Returns a one-line summary for the bench's output.

    A few hundred steps leave BatchNorm's moving statistics (momentum 0.99) far from the data, and a frozen
    backbone runs on exactly those statistics; so they are recomputed on ``data`` after training
    (:func:`recalibrate_batchnorm`), as converged pretrained weights would have them.
    """
    import keras

    size = data.images.shape[1]
    if weights_file.exists():
        return f"domain-pretrained ResNet50 reused from {weights_file}"
    raw_file = weights_file.with_name(weights_file.name.replace(".weights.h5", "-raw.weights.h5"))
    keras.utils.set_random_seed(seed)
    base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(size, size, 3))
    start, summary = time.perf_counter(), f"training reused from {raw_file}"
    if raw_file.exists():
        base.load_weights(raw_file)
    else:
        inputs = keras.Input((size, size, 3))
        x = base(keras.applications.resnet50.preprocess_input(inputs))
        outputs = keras.layers.Dense(len(data.class_names), activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(data.images.astype("float32"), data.labels, epochs=epochs, batch_size=64, verbose=0)
        weights_file.parent.mkdir(parents=True, exist_ok=True)
        base.save_weights(raw_file)
        summary = f"{epochs} epochs, training accuracy {history.history['accuracy'][-1]:.3f}"
    recalibrate_batchnorm(base, keras.applications.resnet50.preprocess_input(data.images.astype("float32")))
    base.save_weights(weights_file)
    return (
        f"domain-pretrained ResNet50: {len(data.labels)} images outside the subset, {summary}, BatchNorm statistics "
        f"recomputed; {time.perf_counter() - start:.0f} s"
    )


def recalibrate_batchnorm(model, inputs: np.ndarray, batch_size: int = 100) -> None:
    """Set every BatchNormalization layer's moving mean and variance to the average over ``inputs``' batches:
    forward passes in training mode with a cumulative-average momentum; no weight changes."""
    import keras

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for step, first in enumerate(range(0, len(inputs), batch_size)):
        for layer in norms:
            layer.momentum = step / (step + 1)  # moving = (step * moving + batch) / (step + 1)
        model(inputs[first : first + batch_size], training=True)
    for layer in norms:
        layer.momentum = 0.99


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


def split_holdout(data, fraction: float, pool: int, holdout_max: int, seed: int):
    """(search pool, held-out set): a stratified ``fraction`` kept aside first, then both subsampled (stratified)."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(data.labels))
    rest, held = train_test_split(index, test_size=fraction, stratify=data.labels, random_state=seed)
    if pool and pool < len(rest):
        rest, _ = train_test_split(rest, train_size=pool, stratify=data.labels[rest], random_state=seed)
    if holdout_max and holdout_max < len(held):
        held, _ = train_test_split(held, train_size=holdout_max, stratify=data.labels[held], random_state=seed)
    return data.subset(np.sort(rest)), data.subset(np.sort(held))


def find_nuclei(images: np.ndarray, estimate: str, batch: int = 256) -> np.ndarray:
    """``cell_crop``'s cell finder on ``images`` in batches: (row, column, spread) per image, N x 3, the spread
    measured as ``estimate`` says (``bcauto_builtin.canonical_layers.SPREAD_ESTIMATES``)."""
    from bcauto_builtin.canonical_layers import nucleus_centre_and_spread

    rows = []
    for start in range(0, len(images), batch):
        found = nucleus_centre_and_spread(images[start : start + batch].astype("float32"), spread_estimate=estimate)
        rows.append(np.stack([np.asarray(v) for v in found], 1))
    return np.concatenate(rows)
