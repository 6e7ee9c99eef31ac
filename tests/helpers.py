"""Small generated data and a throw-away plugin for tests (never the real data folder)."""

from __future__ import annotations

import json

import keras
import numpy as np
from keras import layers

from bcauto import hookimpl
from bcauto.data import Dataset
from bcauto.specs import BackboneSpec

CLASSES = ("round", "square", "bright", "dark")


def blob_data(n: int = 240, size: int = 32, seed: int = 0) -> Dataset:
    """Four easy classes (shape and brightness cues) with noise: learnable in an epoch or two."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    rng.shuffle(labels)
    yy, xx = np.mgrid[:size, :size]
    images = rng.integers(90, 140, (n, size, size, 3)).astype(np.float32)
    for i, label in enumerate(labels):
        cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
        r = size // 4
        if label == 0:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        else:
            mask = (abs(yy - cy) < r) & (abs(xx - cx) < r)
        colour = {0: (200, 60, 200), 1: (60, 60, 200), 2: (250, 250, 120), 3: (20, 20, 20)}[int(label)]
        images[i][mask] = colour
    images += rng.normal(0, 8, images.shape)
    return Dataset(np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64), CLASSES, "blobs")


def build_tiny_pretrained(input_shape, weights=None, width=8):
    """A two-block net that claims ImageNet weights, to exercise the frozen-then-fine-tune path offline."""
    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(width, 3, padding="same", name="b1_conv")(inputs)
    x = layers.BatchNormalization(name="b1_bn")(x)
    x = layers.MaxPooling2D(2, name="b1_out")(x)
    x = layers.Conv2D(width * 2, 3, padding="same", name="b2_conv")(x)
    x = layers.BatchNormalization(name="b2_bn")(x)
    x = layers.Activation("relu", name="b2_out")(x)
    return keras.Model(inputs, x, name="tiny_pretrained")


TINY_PRETRAINED = BackboneSpec(
    name="tiny_pretrained",
    build=build_tiny_pretrained,
    preprocessing="unit",
    blocks=("b1_out", "b2_out"),
    pretrained=("imagenet",),
    min_input_size=8,
    default_input_size=32,
    description="test backbone",
)


class TinyPlugin:
    """A test plugin registering one backbone."""

    @hookimpl
    def register_backbones(self, register):
        register(TINY_PRETRAINED)


# two epochs per trial on 32x32 images, no pretrained weights: the study the end-to-end tests share
TINY_STUDY = {
    "study": {"trials": 3, "seed": 3, "pruner": "none"},
    "data": {"image_size": 32, "val_fraction": 0.25},
    "train": {"weights": "none", "batch_size": 32, "head_epochs": 2, "finetune_epochs": 0, "patience": 5},
    "search": {
        "backbone": ["mini_cnn", "resnet_cnn"],
        "augmentation": ["none", "flip_rotate_zoom"],
        "imbalance": ["none"],
        "lr_head": {"low": 1e-3, "high": 3e-3, "log": True},
        "head_units1": 32,
        "head_units2": 0,
    },
}


def tiny_study_toml(**changes: dict) -> str:
    """:data:`TINY_STUDY` as a study file, with ``changes`` ({table: {key: value}}) applied: a value of None
    leaves the key out, so the study's default applies."""
    tables = {name: dict(TINY_STUDY.get(name, {})) for name in {**TINY_STUDY, **changes}}
    for name, keys in changes.items():
        tables[name].update(keys)
    return "".join(
        f"[{name}]\n" + "".join(f"{key} = {toml_value(value)}\n" for key, value in keys.items() if value is not None)
        for name, keys in tables.items()
    )


def toml_value(value) -> str:
    """A TOML value: JSON's spelling of strings, numbers, booleans and lists is TOML's; tables are written inline."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + " }"
    return json.dumps(value)


def untrained_model_dir(out, class_names, size: int = 32):
    """A model directory (as `bcauto refit` writes) holding a small untrained classifier: for commands that only
    need a model to load, not a good one."""
    from bcauto.bundle import save_bundle

    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(4, 3, padding="same")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(len(class_names), activation="softmax")(x)
    return save_bundle(keras.Model(inputs, outputs), {"class_names": list(class_names), "image_size": size}, out)


class Interrupt(keras.callbacks.Callback):
    """Stops training when epoch ``at`` begins, as a killed process would (no end-of-training callbacks), keeping
    the weights the model had then."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.weights = at, None

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            self.weights = self.model.get_weights()
            raise KeyboardInterrupt
