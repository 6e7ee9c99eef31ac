"""Typed, frozen descriptions of the components plugins register."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _no_params(trial) -> dict:
    return {}


@dataclass(frozen=True)
class BackboneSpec:
    """A feature extractor.

    Attributes:
        name: unique lower-case name used in study files (``resnet50``).
        build: ``build(input_shape, weights, **params)`` -> Keras model without top; ``weights`` is
            ``"imagenet"`` or ``None``. Its input is the image after ``preprocessing``.
        preprocessing: how [0, 255] pixels are scaled before the backbone, one of
            :data:`bcauto.model.PREPROCESSING` (``"none"`` when the model has its own rescaling layers,
            ``"tf"``: [-1, 1], ``"caffe"``: BGR minus ImageNet mean, ``"torch"``: ImageNet mean/std,
            ``"unit"``: [0, 1]). Part of the feature-cache key and of the logged params.
        blocks: names of the layers that end each block, first to last.
        pretrained: weight sets that ``build`` can load (``("imagenet",)``, or ``()`` for home-made nets).
        min_input_size: smallest image side the architecture accepts.
        normalizations: the normalization layers ``build`` can use through its ``norm`` keyword (``"batch"``,
            ``"group"``, ``"layer"``, ``"none"``), for networks trained from scratch; a study searches them with
            ``[search] normalization``. Empty: the architecture's own, not searchable.
        default_input_size: the image side it was designed for.
        search_space: ``search_space(trial)`` -> dict of the backbone's own hyperparameters (optional);
            they reach ``build`` as keyword arguments.
        description: one line for ``bcauto plugins``.
    """

    name: str
    build: Callable[..., Any]
    preprocessing: str
    blocks: tuple[str, ...]
    pretrained: tuple[str, ...] = ()
    min_input_size: int = 32
    default_input_size: int = 224
    search_space: Callable[[Any], dict] = _no_params
    description: str = ""
    normalizations: tuple[str, ...] = ()

    def resolve_weights(self, weights: str | None) -> str | None:
        """The weights this backbone starts from: a named set it offers (``"imagenet"``), a local weights file
        (``"ckpt/{backbone}.weights.h5"``, for offline machines), or None (trained from scratch)."""
        if not weights or weights == "none" or not self.pretrained:
            return None
        if weights in self.pretrained:
            return weights
        if weights.endswith(".h5"):
            return weights.format(backbone=self.name)
        return None


@dataclass(frozen=True)
class AugmentationSpec:
    """An augmentation policy (see ``register_augmentations``).

    Attributes:
        name: unique name used in study files.
        build: ``build(params, image_size, seed)`` -> Keras layer or None (for no augmentation); ignored when
            ``mixes_labels`` is set.
        search_space: ``search_space(trial)`` -> the policy's own hyperparameters.
        mixes_labels: True for batch-level policies that mix images and labels (MixUp, CutMix).
        build_batch: ``build_batch(params, num_classes, seed)`` -> function on ``(images, one_hot)``
            batches, for label-mixing policies.
        description: one line for ``bcauto plugins``.
    """

    name: str
    build: Callable[..., Any]
    search_space: Callable[[Any], dict] = _no_params
    mixes_labels: bool = False
    build_batch: Callable[..., Any] | None = None
    description: str = ""


@dataclass(frozen=True)
class CanonicalizerSpec:
    """Input canonicalization (see ``register_canonicalizers``): one standard look for every image.

    Attributes:
        name: unique name used in study files (``[search] canonicalization``).
        build: ``build(params, image_size)`` -> a Keras layer mapping float [0, 255] images to float [0, 255]
            images of the same size, or None (images pass unchanged). It runs in the model, in front of the
            backbone, in training and prediction alike, so it must be Keras-serializable (registered with
            ``keras.saving.register_keras_serializable``) for refit, evaluate and predict to load it.
        search_space: ``search_space(trial)`` -> the canonicalizer's own hyperparameters.
        description: one line for ``bcauto plugins``.
    """

    name: str
    build: Callable[..., Any]
    search_space: Callable[[Any], dict] = _no_params
    description: str = ""


@dataclass(frozen=True)
class ImbalancePlan:
    """What an imbalance strategy decided: which training examples to use and how to weight classes."""

    indices: np.ndarray
    class_weight: dict[int, float] | None = None


@dataclass(frozen=True)
class ImbalanceSpec:
    """A class-imbalance strategy: ``apply(labels, seed)`` -> :class:`ImbalancePlan`."""

    name: str
    apply: Callable[[np.ndarray, int], ImbalancePlan]
    description: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """A data source: ``load(arg, image_size, options)`` -> :class:`bcauto.data.Dataset`.

    Attributes:
        claims: ``claims(spec)`` -> True when a ``--data`` string (such as a path) belongs to this source.
        available: ``available(image_size, options)`` -> the argument to ``load`` with when the source's data can
            be had now (cached, or its server answers), else None; ``--data auto`` asks it. None: always available,
            loaded without an argument.
    """

    name: str
    load: Callable[..., Any]
    claims: Callable[[str], bool] = field(default=lambda spec: False)
    description: str = ""
    available: Callable[[int, dict], str | None] | None = None


SHIFT_GROUPS = ("corruption", "lab")


@dataclass(frozen=True)
class ShiftSpec:
    """An image corruption: ``apply(images, severity, rng)`` -> corrupted uint8 images.

    ``group`` says what the shift imitates: ``"corruption"`` (damage within one lab: blur, JPEG, debris) or
    ``"lab"`` (what differs between labs: magnification, framing, stain style, white balance, camera optics).
    Reports give a score per group.
    """

    name: str
    apply: Callable[..., np.ndarray]
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    description: str = ""
    group: str = "corruption"
