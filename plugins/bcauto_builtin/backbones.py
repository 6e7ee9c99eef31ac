"""Built-in backbones: the seed report's four transfer-learning nets, four newer keras.applications nets,
and the report's three home-made CNNs (section 6.2)."""

from __future__ import annotations

from bcauto import hookimpl
from bcauto.errors import BcautoError
from bcauto.specs import BackboneSpec
from bcauto_builtin import lazy


def keras_application(constructor, **extra):
    """A ``build`` function for a ``keras.applications`` constructor, with a clear error when weights are
    unavailable (no network, no cache). Give the constructor's name (``"DenseNet121"``) rather than the
    constructor itself to keep Keras, and TensorFlow's seconds of start-up, out of commands that build no model."""

    def build(input_shape, weights=None):
        make = constructor
        if isinstance(make, str):
            import keras

            make = getattr(keras.applications, make)
        try:
            return make(include_top=False, weights=weights, input_shape=tuple(input_shape), **extra)
        except Exception as exc:
            if weights is None:
                raise
            raise BcautoError(
                f"could not load {weights!r} weights for {make.__name__}: {exc}. They download on first "
                'use and are cached in ~/.keras/models; offline, set weights = "none" in the study\'s [train] table.'
            ) from exc

    return build


NORMALIZATIONS = ("batch", "group", "layer", "none")


def _filters(*choices):
    def search_space(trial):
        return {"base_filters": trial.suggest_categorical("base_filters", list(choices))}

    return search_space


_CNNS = "bcauto_builtin.small_cnns"  # the home-made CNNs' Keras code
build_mini_cnn = lazy(_CNNS, "build_mini_cnn")
build_resnet_cnn = lazy(_CNNS, "build_resnet_cnn")
build_inception_cnn = lazy(_CNNS, "build_inception_cnn")


BUILTIN_BACKBONES = (
    BackboneSpec(
        name="resnet50",
        build=keras_application("ResNet50"),
        preprocessing="caffe",
        blocks=("pool1_pool", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
        pretrained=("imagenet",),
        min_input_size=32,
        default_input_size=224,
        description="ResNet50, 5 stages",
    ),
    BackboneSpec(
        name="xception",
        build=keras_application("Xception"),
        preprocessing="tf",
        blocks=("block1_conv2_act", "block2_pool", "block3_pool", "block4_pool")
        + tuple(f"block{i}_sepconv3_bn" for i in range(5, 13))
        + ("block13_pool", "block14_sepconv2_act"),
        pretrained=("imagenet",),
        min_input_size=71,
        default_input_size=299,
        description="Xception, 14 blocks",
    ),
    BackboneSpec(
        name="inception_v3",
        build=keras_application("InceptionV3"),
        preprocessing="tf",
        blocks=tuple(f"mixed{i}" for i in range(11)),
        pretrained=("imagenet",),
        min_input_size=75,
        default_input_size=299,
        description="InceptionV3, 11 mixed blocks",
    ),
    BackboneSpec(
        name="inception_resnet_v2",
        build=keras_application("InceptionResNetV2"),
        preprocessing="tf",
        blocks=("mixed_5b", "block35_10_ac", "mixed_6a", "block17_20_ac", "mixed_7a", "block8_10_conv", "conv_7b_ac"),
        pretrained=("imagenet",),
        min_input_size=75,
        default_input_size=299,
        description="InceptionResNetV2, 7 stages",
    ),
    BackboneSpec(
        name="efficientnet_b0",
        build=keras_application("EfficientNetB0"),
        preprocessing="none",
        blocks=(
            "block1a_project_bn",
            "block2b_add",
            "block3b_add",
            "block4c_add",
            "block5c_add",
            "block6d_add",
            "block7a_project_bn",
            "top_activation",
        ),
        pretrained=("imagenet",),
        min_input_size=32,
        default_input_size=224,
        description="EfficientNetB0, 7 stages + top",
    ),
    BackboneSpec(
        name="efficientnet_v2_s",
        build=keras_application("EfficientNetV2S"),
        preprocessing="none",
        blocks=("block1b_add", "block2d_add", "block3d_add", "block4f_add", "block5i_add", "block6o_add", "top_activation"),
        pretrained=("imagenet",),
        min_input_size=32,
        default_input_size=384,
        description="EfficientNetV2-S, 6 stages + top",
    ),
    BackboneSpec(
        name="convnext_tiny",
        build=keras_application("ConvNeXtTiny"),
        preprocessing="none",
        blocks=tuple(f"convnext_tiny_stage_{s}_block_{b}_identity" for s, b in ((0, 2), (1, 2), (2, 8), (3, 2))),
        pretrained=("imagenet",),
        min_input_size=32,
        default_input_size=224,
        description="ConvNeXt-Tiny, 4 stages",
    ),
    BackboneSpec(
        name="mobilenet_v3_small",
        build=keras_application("MobileNetV3Small"),
        preprocessing="none",
        blocks=(
            "expanded_conv_project_bn",
            "expanded_conv_2_add",
            "expanded_conv_5_add",
            "expanded_conv_7_add",
            "expanded_conv_10_add",
            "conv_1_bn",
        ),
        pretrained=("imagenet",),
        min_input_size=32,
        default_input_size=224,
        description="MobileNetV3-Small, 6 stages",
    ),
    BackboneSpec(
        name="mini_cnn",
        build=build_mini_cnn,
        preprocessing="unit",
        blocks=tuple(f"block{i}_out" for i in range(1, 6)),
        min_input_size=32,
        default_input_size=96,
        search_space=_filters(16, 32),
        normalizations=NORMALIZATIONS,
        description="small CNN: 5 conv/max-pool blocks, trained from scratch",
    ),
    BackboneSpec(
        name="resnet_cnn",
        build=build_resnet_cnn,
        preprocessing="unit",
        blocks=tuple(f"block{i}_out" for i in range(1, 4)),
        min_input_size=8,
        default_input_size=96,
        search_space=_filters(16, 32),
        normalizations=NORMALIZATIONS,
        description="small ResNet: 3 residual blocks, trained from scratch",
    ),
    BackboneSpec(
        name="inception_cnn",
        build=build_inception_cnn,
        preprocessing="unit",
        blocks=tuple(f"block{i}_out" for i in range(1, 5)),
        min_input_size=16,
        default_input_size=96,
        search_space=_filters(8, 16),
        normalizations=NORMALIZATIONS,
        description="small Inception net: 4 inception blocks, trained from scratch",
    ),
)


@hookimpl
def register_backbones(register):
    for spec in BUILTIN_BACKBONES:
        register(spec)
