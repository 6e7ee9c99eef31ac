"""Built-in backbones: the seed report's four transfer-learning nets, four newer keras.applications nets,
and the report's three home-made CNNs (section 6.2)."""

from __future__ import annotations

import keras
from keras import layers

from bcauto import hookimpl
from bcauto.errors import BcautoError
from bcauto.specs import BackboneSpec


def keras_application(constructor, **extra):
    """A ``build`` function for a ``keras.applications`` constructor, with a clear error when weights are
    unavailable (no network, no cache)."""

    def build(input_shape, weights=None):
        try:
            return constructor(include_top=False, weights=weights, input_shape=tuple(input_shape), **extra)
        except Exception as exc:
            if weights is None:
                raise
            raise BcautoError(
                f"could not load {weights!r} weights for {constructor.__name__}: {exc}. They download on first "
                "use and are cached in ~/.keras/models; offline, set weights = \"none\" in the study's [train] table."
            ) from exc

    return build


NORMALIZATIONS = ("batch", "group", "layer", "none")


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
        filters, kernel, padding="same", activation="relu" if norm == "none" else None,
        kernel_initializer="glorot_normal", kernel_regularizer=keras.regularizers.L2(l2), name=name,
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
        pp = _conv(layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x), f // 2, 1, f"{name}_pool_proj",
                   norm=norm)
        x = layers.Concatenate(name=f"{name}_concat")([p1, p3, p5, pp])
        x = layers.MaxPooling2D(2, padding="same", name=f"{name}_out")(x)
    return keras.Model(inputs, x, name="inception_cnn")


def _filters(*choices):
    def search_space(trial):
        return {"base_filters": trial.suggest_categorical("base_filters", list(choices))}

    return search_space


A = keras.applications
BUILTIN_BACKBONES = (
    BackboneSpec(
        name="resnet50", build=keras_application(A.ResNet50), preprocessing="caffe",
        blocks=("pool1_pool", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
        pretrained=("imagenet",), min_input_size=32, default_input_size=224,
        description="ResNet50, 5 stages",
    ),
    BackboneSpec(
        name="xception", build=keras_application(A.Xception), preprocessing="tf",
        blocks=("block1_conv2_act", "block2_pool", "block3_pool", "block4_pool")
        + tuple(f"block{i}_sepconv3_bn" for i in range(5, 13)) + ("block13_pool", "block14_sepconv2_act"),
        pretrained=("imagenet",), min_input_size=71, default_input_size=299,
        description="Xception, 14 blocks",
    ),
    BackboneSpec(
        name="inception_v3", build=keras_application(A.InceptionV3), preprocessing="tf",
        blocks=tuple(f"mixed{i}" for i in range(11)),
        pretrained=("imagenet",), min_input_size=75, default_input_size=299,
        description="InceptionV3, 11 mixed blocks",
    ),
    BackboneSpec(
        name="inception_resnet_v2", build=keras_application(A.InceptionResNetV2), preprocessing="tf",
        blocks=("mixed_5b", "block35_10_ac", "mixed_6a", "block17_20_ac", "mixed_7a", "block8_10_conv", "conv_7b_ac"),
        pretrained=("imagenet",), min_input_size=75, default_input_size=299,
        description="InceptionResNetV2, 7 stages",
    ),
    BackboneSpec(
        name="efficientnet_b0", build=keras_application(A.EfficientNetB0), preprocessing="none",
        blocks=("block1a_project_bn", "block2b_add", "block3b_add", "block4c_add", "block5c_add", "block6d_add",
                "block7a_project_bn", "top_activation"),
        pretrained=("imagenet",), min_input_size=32, default_input_size=224,
        description="EfficientNetB0, 7 stages + top",
    ),
    BackboneSpec(
        name="efficientnet_v2_s", build=keras_application(A.EfficientNetV2S), preprocessing="none",
        blocks=("block1b_add", "block2d_add", "block3d_add", "block4f_add", "block5i_add", "block6o_add", "top_activation"),
        pretrained=("imagenet",), min_input_size=32, default_input_size=384,
        description="EfficientNetV2-S, 6 stages + top",
    ),
    BackboneSpec(
        name="convnext_tiny", build=keras_application(A.ConvNeXtTiny), preprocessing="none",
        blocks=tuple(f"convnext_tiny_stage_{s}_block_{b}_identity" for s, b in ((0, 2), (1, 2), (2, 8), (3, 2))),
        pretrained=("imagenet",), min_input_size=32, default_input_size=224,
        description="ConvNeXt-Tiny, 4 stages",
    ),
    BackboneSpec(
        name="mobilenet_v3_small", build=keras_application(A.MobileNetV3Small), preprocessing="none",
        blocks=("expanded_conv_project_bn", "expanded_conv_2_add", "expanded_conv_5_add", "expanded_conv_7_add",
                "expanded_conv_10_add", "conv_1_bn"),
        pretrained=("imagenet",), min_input_size=32, default_input_size=224,
        description="MobileNetV3-Small, 6 stages",
    ),
    BackboneSpec(
        name="mini_cnn", build=build_mini_cnn, preprocessing="unit",
        blocks=tuple(f"block{i}_out" for i in range(1, 6)), min_input_size=32, default_input_size=96,
        search_space=_filters(16, 32), normalizations=NORMALIZATIONS,
        description="small CNN: 5 conv/max-pool blocks, trained from scratch",
    ),
    BackboneSpec(
        name="resnet_cnn", build=build_resnet_cnn, preprocessing="unit",
        blocks=tuple(f"block{i}_out" for i in range(1, 4)), min_input_size=8, default_input_size=96,
        search_space=_filters(16, 32), normalizations=NORMALIZATIONS,
        description="small ResNet: 3 residual blocks, trained from scratch",
    ),
    BackboneSpec(
        name="inception_cnn", build=build_inception_cnn, preprocessing="unit",
        blocks=tuple(f"block{i}_out" for i in range(1, 5)), min_input_size=16, default_input_size=96,
        search_space=_filters(8, 16), normalizations=NORMALIZATIONS,
        description="small Inception net: 4 inception blocks, trained from scratch",
    ),
)


@hookimpl
def register_backbones(register):
    for spec in BUILTIN_BACKBONES:
        register(spec)
