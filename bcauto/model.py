"""Model assembly: preprocessing, backbone, the seed's classifier head, and block-wise unfreezing."""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from bcauto.errors import BcautoError
from bcauto.specs import PREPROCESSING, BackboneSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="bcauto")
class ReverseChannels(layers.Layer):
    """RGB <-> BGR, for backbones trained on Caffe-style inputs."""

    def call(self, x):
        return keras.ops.flip(x, axis=-1)


@keras.saving.register_keras_serializable(package="bcauto")
class ClassSubset(layers.Layer):
    """Class probabilities restricted to some of the classes (``indices``, in their order) and renormalised:
    the softmax over those classes' logits, so a model adapted to a lab whose slides show fewer classes trains
    and predicts among them only. Each kept probability gets Keras's epsilon first, so a row whose kept classes
    all underflowed to 0 becomes uniform rather than NaN."""

    def __init__(self, indices, **kwargs):
        super().__init__(**kwargs)
        self.indices = [int(i) for i in indices]

    def call(self, probs):
        kept = keras.ops.take(probs, self.indices, axis=-1) + keras.config.epsilon()
        return kept / keras.ops.sum(kept, axis=-1, keepdims=True)

    def get_config(self):
        return {**super().get_config(), "indices": self.indices}


def restrict_classes(model: keras.Model, indices) -> keras.Model:
    """``model`` (a classifier of N classes, its layers shared) followed by :class:`ClassSubset`."""
    outputs = ClassSubset(indices, dtype="float32", name="class_subset")(model.outputs[0])
    return keras.Model(model.inputs, outputs, name=model.name)


def preprocessing_layers(kind: str) -> list[layers.Layer]:
    """Serializable layers mapping [0, 255] RGB to the scale a backbone expects."""
    if kind == "none":
        return []
    if kind == "unit":
        return [layers.Rescaling(1 / 255.0, name="preprocess_unit")]
    if kind == "tf":
        return [layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess_tf")]
    if kind == "torch":
        return [
            layers.Rescaling(1 / 255.0, name="preprocess_torch_scale"),
            layers.Normalization(mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD], name="preprocess_torch"),
        ]
    if kind == "caffe":
        return [
            ReverseChannels(name="preprocess_caffe_bgr"),
            layers.Normalization(mean=CAFFE_MEAN_BGR, variance=[1.0, 1.0, 1.0], name="preprocess_caffe"),
        ]
    raise BcautoError(f"unknown preprocessing {kind!r}; expected one of {', '.join(PREPROCESSING)}")


@keras.saving.register_keras_serializable(package="bcauto")
class TrainingOnly(layers.Layer):
    """``layer`` (a model's augmentation) while training; outside training the images pass untouched and the layer
    is not called at all. Keras's RandomHue and RandomSaturation draw their random numbers even at inference
    (passing the images through unchanged), so each prediction would advance their seed generators and change
    the augmentation of any later training: ``bcauto adapt``'s fine-tuning would depend on how many images were
    scored or ranked before it."""

    def __init__(self, layer, **kwargs):
        kwargs.setdefault("dtype", "float32")  # under mixed precision the pixels reach canonicalization unrounded
        super().__init__(**kwargs)
        self.layer = layer

    def build(self, input_shape):
        self.layer.build(input_shape)

    def call(self, images, training=None):
        return self.layer(images, training=True) if training else images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "layer": keras.saving.serialize_keras_object(self.layer)}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config.pop("layer")), **config)


@dataclass(frozen=True)
class HeadParams:
    """The seed's classifier (table 1): GAP -> Dense(units1) -> Dropout -> Dense(units2) -> Dropout -> softmax."""

    units1: int = 512
    units2: int = 256
    dropout: float = 0.5
    l2: float = 1e-4


def build_head(feature_dim: int, num_classes: int, params: HeadParams) -> keras.Model:
    """The classifier after global average pooling, as its own model so it can also train on cached
    pooled features: Dense(units1) -> Dropout -> Dense(units2) -> Dropout -> softmax."""
    features = keras.Input(shape=(feature_dim,), name="pooled_features")
    x = features
    for i, units in enumerate((params.units1, params.units2), start=1):
        if units <= 0:
            continue
        x = layers.Dense(units, activation="relu", kernel_regularizer=keras.regularizers.L2(params.l2), name=f"head_dense{i}")(x)
        x = layers.Dropout(params.dropout, name=f"head_dropout{i}")(x)
    # float32 output keeps softmax and the loss stable under mixed precision
    outputs = layers.Dense(
        num_classes, activation="softmax", kernel_regularizer=keras.regularizers.L2(params.l2), dtype="float32", name="head_out"
    )(x)
    return keras.Model(features, outputs, name="head")


def build_backbone(
    spec: BackboneSpec, image_size: int, weights: str | None, params: dict | None = None, canonicalize: layers.Layer | None = None
) -> keras.Model:
    """The backbone with the canonicalization and its preprocessing in front: float [0, 255] images in, feature
    map out. The canonicalization belongs to the backbone because the frozen backbone's features (and their
    cache) depend on it."""
    if image_size < spec.min_input_size:
        raise BcautoError(
            f"backbone {spec.name!r} needs images of at least {spec.min_input_size}x{spec.min_input_size}, "
            f"but the study's [data] image_size is {image_size}; raise image_size or pick another backbone"
        )
    shape = (image_size, image_size, 3)
    core = spec.build(shape, weights, **(params or {}))
    check_blocks(spec, core)
    inputs = keras.Input(shape=shape, name="pixels")
    x = canonicalize(inputs) if canonicalize is not None else inputs
    for layer in preprocessing_layers(spec.preprocessing):
        x = layer(x)
    outputs = core(x)
    return keras.Model(inputs, outputs, name=f"{spec.name}_features")


def core_of(backbone: keras.Model) -> keras.Model:
    """The plugin-built network inside a model made by :func:`build_backbone`."""
    return backbone.layers[-1]


def check_blocks(spec: BackboneSpec, core: keras.Model) -> None:
    names = {layer.name for layer in core.layers}
    missing = [b for b in spec.blocks if b not in names]
    if missing or not spec.blocks:
        raise BcautoError(f"backbone {spec.name!r}: block layers {missing or '(none)'} are not in the built model")


def block_index_of_layers(spec: BackboneSpec, core: keras.Model) -> list[int]:
    """For each layer of ``core`` (in order), the index of the block it belongs to."""
    ends = {name: i for i, name in enumerate(spec.blocks)}
    block, result = 0, []
    for layer in core.layers:
        result.append(min(block, len(spec.blocks) - 1))
        if layer.name in ends:
            block = ends[layer.name] + 1
    return result


def resolve_unfreeze(spec: BackboneSpec, unfreeze) -> int:
    """Unfreeze depth as a number of blocks: ``"all"`` means every block; larger numbers are capped."""
    if unfreeze == "all":
        return len(spec.blocks)
    if isinstance(unfreeze, bool) or not isinstance(unfreeze, int) or unfreeze < 0:
        raise BcautoError(f'unfreeze_blocks must be a non-negative integer or "all", got {unfreeze!r}')
    return min(unfreeze, len(spec.blocks))


def set_trainable_blocks(spec: BackboneSpec, backbone: keras.Model, unfreeze) -> int:
    """Make the last ``unfreeze`` blocks trainable and the rest frozen; returns the number unfrozen.

    BatchNormalization layers stay frozen, so they keep their ImageNet statistics and run in inference
    mode: a fine-tune on small batches of a new domain would otherwise wreck them.
    """
    k = resolve_unfreeze(spec, unfreeze)
    core = core_of(backbone)
    first_trainable = len(spec.blocks) - k
    backbone.trainable = True
    core.trainable = True
    for layer, block in zip(core.layers, block_index_of_layers(spec, core)):
        trainable = block >= first_trainable and not isinstance(layer, layers.BatchNormalization)
        layer.trainable = trainable
    return k


def assemble(backbone: keras.Model, head: keras.Model, augmentation: layers.Layer | None, frozen_inference: bool) -> keras.Model:
    """Augmentation (in training only, :class:`TrainingOnly`) -> backbone -> global average pooling -> head, one
    model taking [0, 255] images.

    ``frozen_inference`` calls the backbone with ``training=False`` (the Keras transfer-learning recipe):
    pretrained backbones then never update BatchNorm statistics or apply their own dropout.
    """
    inputs = keras.Input(shape=backbone.input_shape[1:], name="image")
    x = TrainingOnly(augmentation, name="augmentation")(inputs) if augmentation is not None else inputs
    x = backbone(x, training=False) if frozen_inference else backbone(x)
    outputs = head(layers.GlobalAveragePooling2D(name="head_gap")(x))
    return keras.Model(inputs, outputs, name="classifier")


def split_at_block(spec: BackboneSpec, backbone: keras.Model, unfrozen: int) -> tuple[keras.Model, keras.Model] | None:
    """The backbone cut before its last ``unfrozen`` blocks: (frozen prefix, trainable tail).

    The prefix maps [0, 255] images to the activations entering the first unfrozen block, so they can be
    computed once; the tail maps those activations to the feature map. None when nothing stays frozen.
    """
    if unfrozen <= 0 or unfrozen >= len(spec.blocks):
        return None
    core = core_of(backbone)
    cut = core.get_layer(spec.blocks[len(spec.blocks) - unfrozen - 1]).output
    images = keras.Input(shape=backbone.input_shape[1:])
    x = images
    for layer in backbone.layers[1:-1]:  # the canonicalization and preprocessing layers in front of the core
        x = layer(x)
    prefix = keras.Model(images, keras.Model(core.input, cut)(x), name=f"{spec.name}_frozen_prefix")
    return prefix, keras.Model(cut, core.output, name=f"{spec.name}_tail")
