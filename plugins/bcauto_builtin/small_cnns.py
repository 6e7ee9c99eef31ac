"""The built-in home-made CNNs (the seed report's section 6.2), imported when one is built: see backbones.py."""

from __future__ import annotations

import keras
from keras import layers

from bcauto.errors import BcautoError
from bcauto_builtin.backbones import NORMALIZATIONS


def _normalize(x, norm: str, name: str):
    """The normalization layer ``norm`` names (none: ``x`` as is).

    BatchNorm momentum 0.9: trials are short, and the default 0.99 leaves the moving statistics far from the
    data after a few hundred steps, so validation scores lag far behind training. Group and layer normalization
    keep no statistics of the training lab (Tsutsui et al. 2023: a main cause of the drop in other labs).
    """
    if norm == "batch":
        return layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    if norm == "group":
        return layers.GroupNormalization(groups=_groups(x.shape[-1]), name=f"{name}_gn")(x)
    if norm == "layer":
        return layers.LayerNormalization(name=f"{name}_ln")(x)
    if norm == "none":
        return x
    raise BcautoError(f"unknown normalization {norm!r}; expected one of {', '.join(NORMALIZATIONS)}")


def _groups(channels: int) -> int:
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def _conv(x, filters, kernel, name, l2=1e-4, norm="none"):
    x = layers.Conv2D(
        filters,
        kernel,
        padding="same",
        activation="relu" if norm == "none" else None,
        kernel_initializer="glorot_normal",
        kernel_regularizer=keras.regularizers.L2(l2),
        name=name,
    )(x)
    if norm == "none":
        return x
    return layers.Activation("relu", name=f"{name}_relu")(_normalize(x, norm, name))


def build_mini_cnn(input_shape, weights=None, base_filters=32, norm="none"):
    """Seed 6.2, first CNN: five conv + max-pool blocks (GlorotNormal, L2), optionally normalized.

    Without normalization it rarely leaves chance on real cells in a short trial (plain ReLU stack under Lion's
    sign updates); with batch or group normalization it trains like the others.
    """
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for i in range(5):
        x = _conv(x, base_filters * min(2**i, 8), 3, f"block{i + 1}_conv", norm=norm)
        x = layers.MaxPooling2D(2, padding="same", name=f"block{i + 1}_out")(x)
    return keras.Model(inputs, x, name="mini_cnn")


def build_resnet_cnn(input_shape, weights=None, base_filters=32, norm="batch"):
    """Seed 6.2, second CNN: three ResNet blocks, filters growing 32 -> 64 -> 128."""
    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(base_filters, 3, padding="same", name="stem_conv")(inputs)
    for i in range(3):
        filters = base_filters * 2**i
        shortcut = layers.Conv2D(filters, 1, padding="same", name=f"block{i + 1}_shortcut")(x)
        y = layers.Conv2D(filters, 3, padding="same", name=f"block{i + 1}_conv1")(x)
        y = _normalize(y, norm, f"block{i + 1}_norm1")
        y = layers.Activation("relu", name=f"block{i + 1}_relu1")(y)
        y = layers.Conv2D(filters, 3, padding="same", name=f"block{i + 1}_conv2")(y)
        y = _normalize(y, norm, f"block{i + 1}_norm2")
        x = layers.Add(name=f"block{i + 1}_add")([shortcut, y])
        x = layers.Activation("relu", name=f"block{i + 1}_relu2")(x)
        x = layers.MaxPooling2D(2, padding="same", name=f"block{i + 1}_out")(x)
    return keras.Model(inputs, x, name="resnet_cnn")


def build_inception_cnn(input_shape, weights=None, base_filters=16, norm="none"):
    """Seed 6.2, third CNN: four inception blocks (parallel 1x1, 3x3, 5x5 and pooling paths)."""
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for i in range(4):
        f = base_filters * 2**i
        name = f"block{i + 1}"
        p1 = _conv(x, f, 1, f"{name}_1x1", norm=norm)
        p3 = _conv(_conv(x, f, 1, f"{name}_3x3_reduce", norm=norm), f, 3, f"{name}_3x3", norm=norm)
        p5 = _conv(_conv(x, f // 2, 1, f"{name}_5x5_reduce", norm=norm), f // 2, 5, f"{name}_5x5", norm=norm)
        pp = _conv(layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x), f // 2, 1, f"{name}_pool_proj", norm=norm)
        x = layers.Concatenate(name=f"{name}_concat")([p1, p3, p5, pp])
        x = layers.MaxPooling2D(2, padding="same", name=f"{name}_out")(x)
    return keras.Model(inputs, x, name="inception_cnn")
