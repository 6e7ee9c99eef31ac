"""Typed, frozen descriptions of the components plugins register.

Each spec says what is wrong with it through ``problems()``; bcauto asks when a plugin registers the spec and
refuses it (reported with the plugin's package by ``bcauto plugins``) rather than letting it fail trials later.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# how [0, 255] pixels are scaled before a backbone (bcauto.model builds the matching layers)
PREPROCESSING = ("none", "unit", "tf", "torch", "caffe")
# the named weight sets a study file can ask for (``[train] weights``); a local weights file is the other way
WEIGHT_SETS = ("imagenet",)
NORMALIZATIONS = ("batch", "group", "layer", "none")
SHIFT_GROUPS = ("corruption", "lab")
SEVERITIES = (1, 2, 3, 4, 5)
# names appear in study files (``[search.NAME]``), Optuna parameter names (``NAME.strength``) and ``--data NAME:ARG``
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]*")


def _no_params(trial) -> dict:
    return {}


def _name_problems(name: object) -> list[str]:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        return [f"name {name!r} must be lower-case letters, digits, '_' or '-' (it is used in study files and parameter names)"]
    return []


def _callable_problems(spec: object, *fields: str, optional: tuple[str, ...] = ()) -> list[str]:
    problems = []
    for name in (*fields, *optional):
        value = getattr(spec, name)
        if name in optional and value is None:
            continue
        if not callable(value):
            problems.append(f"{name} must be a function, got {type(value).__name__}")
    return problems


def _choice_problems(field_name: str, values: object, allowed: tuple[str, ...]) -> list[str]:
    if not isinstance(values, tuple):
        return [f"{field_name} must be a tuple, got {type(values).__name__}"]
    wrong = [v for v in values if v not in allowed]
    return [f"{field_name} {', '.join(map(repr, wrong))} not among {', '.join(allowed)}"] if wrong else []


@dataclass(frozen=True)
class BackboneSpec:
    """A feature extractor.

    Attributes:
        name: unique lower-case name used in study files (``resnet50``).
        build: ``build(input_shape, weights, **params)`` -> Keras model without top; ``weights`` is
            ``"imagenet"``, the path of a local weights file, or None (see :meth:`resolve_weights`); ``params``
            are ``search_space``'s, plus ``norm`` when ``normalizations`` is searched. Its input is the image
            after ``preprocessing``. Layers of its own must be Keras-serializable.
        preprocessing: how [0, 255] pixels are scaled before the backbone, one of
            :data:`PREPROCESSING` (``"none"`` when the model has its own rescaling layers,
            ``"tf"``: [-1, 1], ``"caffe"``: BGR minus ImageNet mean, ``"torch"``: ImageNet mean/std,
            ``"unit"``: [0, 1]). Part of the feature-cache key and of the logged params.
        blocks: names of the layers that end each block, first to last.
        pretrained: weight sets that ``build`` can load: ``("imagenet",)``, or ``()`` for nets always trained
            from scratch (a study asking for ImageNet weights then trains them from scratch). ``"imagenet"`` is the
            only set a study file can name, so no other is accepted.
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

    def problems(self) -> list[str]:
        """What makes this spec unusable (empty when none): checked when a plugin registers it."""
        problems = _name_problems(self.name) + _callable_problems(self, "build", "search_space")
        if self.preprocessing not in PREPROCESSING:
            problems.append(f"preprocessing {self.preprocessing!r} is not one of {', '.join(PREPROCESSING)}")
        if not isinstance(self.blocks, tuple) or not self.blocks or not all(isinstance(b, str) and b for b in self.blocks):
            problems.append(f"blocks must be a non-empty tuple of layer names, got {self.blocks!r}")
        elif len(set(self.blocks)) != len(self.blocks):
            problems.append(f"blocks names a layer twice: {self.blocks!r}")
        problems += _choice_problems("pretrained", self.pretrained, WEIGHT_SETS)
        problems += _choice_problems("normalizations", self.normalizations, NORMALIZATIONS)
        for size_field in ("min_input_size", "default_input_size"):
            value = getattr(self, size_field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                problems.append(f"{size_field} must be a positive integer, got {value!r}")
        if not problems and self.default_input_size < self.min_input_size:
            problems.append(f"default_input_size {self.default_input_size} is below min_input_size {self.min_input_size}")
        return problems


@dataclass(frozen=True)
class AugmentationSpec:
    """An augmentation policy (see ``register_augmentations``).

    Attributes:
        name: unique name used in study files.
        build: ``build(params, image_size, seed)`` -> Keras-serializable layer or None (for no augmentation),
            run in the model in training; called for label-mixing policies too (their per-image part).
        search_space: ``search_space(trial)`` -> the policy's own hyperparameters, suggested under plain names
            (Optuna sees ``POLICY.name``, MLflow ``augmentation.name``).
        mixes_labels: True for batch-level policies that mix images and labels (MixUp, CutMix).
        build_batch: ``build_batch(params, num_classes, seed)`` -> function on ``(images, one_hot)``
            batches in ``tf.data``; required when ``mixes_labels`` is set, refused otherwise.
        description: one line for ``bcauto plugins``.
    """

    name: str
    build: Callable[..., Any]
    search_space: Callable[[Any], dict] = _no_params
    mixes_labels: bool = False
    build_batch: Callable[..., Any] | None = None
    description: str = ""

    def problems(self) -> list[str]:
        """What makes this spec unusable (empty when none): checked when a plugin registers it."""
        problems = _name_problems(self.name) + _callable_problems(self, "build", "search_space", optional=("build_batch",))
        if self.mixes_labels and self.build_batch is None:
            problems.append("mixes_labels is set but build_batch is missing")
        if not self.mixes_labels and self.build_batch is not None:
            problems.append("build_batch is given but mixes_labels is not set, so it would never run")
        return problems


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

    def problems(self) -> list[str]:
        """What makes this spec unusable (empty when none): checked when a plugin registers it."""
        return _name_problems(self.name) + _callable_problems(self, "build", "search_space")


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

    def problems(self) -> list[str]:
        """What makes this spec unusable (empty when none): checked when a plugin registers it."""
        return _name_problems(self.name) + _callable_problems(self, "apply")


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

    def problems(self) -> list[str]:
        """What makes this spec unusable (empty when none): checked when a plugin registers it."""
        return _name_problems(self.name) + _callable_problems(self, "load", "claims", optional=("available",))


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

    def problems(self) -> list[str]:
        """What makes this spec unusable (empty when none): checked when a plugin registers it."""
        problems = _name_problems(self.name) + _callable_problems(self, "apply")
        severities = self.severities
        if (
            not isinstance(severities, tuple)
            or not severities
            or not all(isinstance(v, int) and not isinstance(v, bool) and v in SEVERITIES for v in severities)
            or len(set(severities)) != len(severities)
        ):
            problems.append(f"severities must be a non-empty tuple of distinct integers 1 to 5, got {severities!r}")
        if self.group not in SHIFT_GROUPS:
            problems.append(f"group {self.group!r} is not one of {', '.join(SHIFT_GROUPS)}")
        return problems
