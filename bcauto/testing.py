"""The plugin contract as tests a plugin's own test suite can run (the timm way): one ``check_*`` per kind.

Each check builds or runs a component on tiny generated inputs and fails with an ``AssertionError`` that says
which rule of the contract it broke; bcauto's tests run them over every installed component. A plugin runs them
over its own components::

    import pytest
    from bcauto.testing import check_component, contract_cases

    @pytest.mark.parametrize("kind, spec", contract_cases(package="my-plugin"))
    def test_contract(kind, spec, tmp_path):
        check_component(kind, spec, tmp_path)

Backbones are built without pretrained weights at their smallest input size, so the checks run offline and fast.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from bcauto.specs import AugmentationSpec, BackboneSpec, CanonicalizerSpec, DatasetSpec, ImbalancePlan, ImbalanceSpec, ShiftSpec

KINDS = ("backbones", "augmentations", "canonicalizers", "imbalance", "datasets", "shifts")


class MidpointTrial:
    """A stand-in Optuna trial answering every suggestion with the middle of its range (or the first choice)."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def _keep(self, name: str, value: Any) -> Any:
        self.params[name] = value
        return value

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False, **kwargs: Any) -> float:
        return self._keep(name, math.sqrt(low * high) if log else (low + high) / 2)

    def suggest_int(self, name: str, low: int, high: int, **kwargs: Any) -> int:
        return self._keep(name, (low + high) // 2)

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._keep(name, choices[0])


def sample_images(n: int = 4, size: int = 32, seed: int = 0) -> np.ndarray:
    """``n`` uint8 smear-like images (cream background, pink red cells, one purple nucleus), ``size`` x ``size``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        image = np.ones((size, size, 3), np.float32) * (235, 222, 205)
        for _ in range(4):
            cy, cx = rng.uniform(0, size, 2)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < (size / 9) ** 2] = (225, 160, 165)
        cy, cx = rng.uniform(size / 3, 2 * size / 3, 2)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < (size / 5) ** 2] = (215, 190, 215)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < (size / 9) ** 2] = (90, 40, 130)
        images[i] = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    return images


def _valid(spec: Any) -> None:
    problems = spec.problems()
    assert not problems, f"{type(spec).__name__} {spec.name!r}: {'; '.join(problems)}"


def _params(spec: Any) -> dict:
    params = spec.search_space(MidpointTrial())
    assert isinstance(params, dict), f"{spec.name}: search_space must return a dict, got {type(params).__name__}"
    return params


def _in_range(name: str, what: str, values: np.ndarray, low: float = 0.0, high: float = 255.0) -> None:
    assert np.isfinite(values).all(), f"{name}: {what} holds NaN or infinity"
    assert values.min() >= low - 1e-3 and values.max() <= high + 1e-3, (
        f"{name}: {what} must stay in [{low}, {high}], got [{values.min():.3f}, {values.max():.3f}]"
    )


def check_serializable(name: str, model: Any) -> None:
    """Every layer of ``model`` is a Keras layer or registered with ``keras.saving.register_keras_serializable``,
    so a saved model holding it loads again (refit, evaluate and predict load saved models)."""
    import keras

    for layer in model._flatten_layers(include_self=False):
        cls = type(layer)
        if cls.__module__.split(".")[0] in ("keras", "tf_keras"):
            continue
        assert keras.saving.get_registered_object(keras.saving.get_registered_name(cls)) is cls, (
            f"{name}: layer {layer.name!r} is a {cls.__module__}.{cls.__qualname__}, which is not registered with "
            "keras.saving.register_keras_serializable, so a saved model holding it cannot be loaded"
        )


def _round_trip(name: str, layer: Any, images: np.ndarray, tmp_path: Path | None) -> None:
    """Save a model holding ``layer`` and load it back: the same output in inference."""
    import keras

    inputs = keras.Input(images.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    check_serializable(name, model)
    if tmp_path is None:
        return
    path = Path(tmp_path) / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        np.asarray(loaded(images, training=False)),
        np.asarray(model(images, training=False)),
        atol=1e-3,
        err_msg=f"{name}: the saved and reloaded model computes something else",
    )


def check_backbone(spec: BackboneSpec, params: dict | None = None) -> None:
    """Built without weights at ``min_input_size``: a 4-D feature map, finite, every block found, every block
    unfreezable, every layer Keras-serializable."""
    from bcauto.model import build_backbone, core_of, set_trainable_blocks

    _valid(spec)
    params = _params(spec) if params is None else params
    size = spec.min_input_size
    model = build_backbone(spec, size, weights=None, params=params)  # also checks that every block exists
    features = np.asarray(model(sample_images(2, size).astype("float32"), training=False))
    assert features.ndim == 4 and features.shape[0] == 2, f"{spec.name}: expected N x H x W x C features, got {features.shape}"
    assert np.isfinite(features).all(), f"{spec.name}: features hold NaN or infinity"
    assert set_trainable_blocks(spec, model, "all") == len(spec.blocks)
    assert set_trainable_blocks(spec, model, 1) == 1
    assert any(layer.trainable for layer in core_of(model).layers), f"{spec.name}: unfreezing the last block unfroze no layer"
    check_serializable(spec.name, model)


def check_augmentation(spec: AugmentationSpec, tmp_path: Path | None = None, image_size: int = 32) -> None:
    """``build``'s layer keeps shape and the [0, 255] range in training and survives saving; a label-mixing
    policy's ``build_batch`` keeps shapes, the range and labels that sum to one, inside ``tf.data``."""
    _valid(spec)
    params = _params(spec)
    images = sample_images(4, image_size).astype("float32")
    layer = spec.build(params, image_size, 0)
    if layer is not None:
        out = np.asarray(layer(images, training=True))
        assert out.shape == images.shape, f"{spec.name}: augmented images have shape {out.shape}, expected {images.shape}"
        _in_range(spec.name, "augmented images", out)
        _round_trip(spec.name, layer, images, tmp_path)
    if spec.mixes_labels:
        import tensorflow as tf

        assert spec.build_batch is not None
        batch_fn = spec.build_batch(params, 3, 0)
        labels = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
        ds = tf.data.Dataset.from_tensors((images, labels)).map(batch_fn)
        mixed_images, mixed_labels = (np.asarray(t) for t in next(iter(ds)))
        assert mixed_images.shape == images.shape and mixed_labels.shape == labels.shape, f"{spec.name}: build_batch changed shapes"
        _in_range(spec.name, "mixed images", mixed_images)
        np.testing.assert_allclose(mixed_labels.sum(axis=1), 1.0, atol=1e-4, err_msg=f"{spec.name}: mixed labels must sum to one")


def check_canonicalizer(spec: CanonicalizerSpec, tmp_path: Path | None = None, images: np.ndarray | None = None) -> None:
    """The layer maps float [0, 255] images to images of the same shape in [0, 255] and survives saving."""
    _valid(spec)
    images = (sample_images(3, 64) if images is None else images).astype("float32")
    layer = spec.build(_params(spec), images.shape[1])
    if layer is None:
        return
    out = np.asarray(layer(images))
    assert out.shape == images.shape, f"{spec.name}: canonicalized images have shape {out.shape}, expected {images.shape}"
    _in_range(spec.name, "canonicalized images", out)
    _round_trip(spec.name, layer, images, tmp_path)


def check_imbalance(spec: ImbalanceSpec) -> None:
    """An :class:`ImbalancePlan` of valid indices that keeps every class, positive weights, the same for one seed."""
    _valid(spec)
    labels = np.repeat([0, 1, 2], [30, 8, 3])
    plan = spec.apply(labels, 0)
    assert isinstance(plan, ImbalancePlan), f"{spec.name}: apply must return an ImbalancePlan, got {type(plan).__name__}"
    indices = np.asarray(plan.indices)
    assert indices.ndim == 1 and indices.dtype.kind in "iu", f"{spec.name}: indices must be a 1-D integer array"
    assert len(indices) and indices.min() >= 0 and indices.max() < len(labels), f"{spec.name}: indices out of range"
    assert set(labels[indices].tolist()) == {0, 1, 2}, f"{spec.name}: the plan drops a class entirely"
    if plan.class_weight is not None:
        assert set(plan.class_weight) <= {0, 1, 2}, f"{spec.name}: class_weight names classes that do not exist"
        assert all(math.isfinite(w) and w > 0 for w in plan.class_weight.values()), f"{spec.name}: class weights must be positive"
    again = spec.apply(labels, 0)
    assert np.array_equal(np.asarray(again.indices), indices), f"{spec.name}: the same labels and seed give another plan"


def check_dataset(spec: DatasetSpec, arg: str | None = None, image_size: int = 32, options: dict | None = None) -> None:
    """``claims`` answers True or False without raising; with ``arg`` (for a source that needs no download, such
    as ``"20"`` for ``synthetic``), ``load`` returns uint8 images at ``image_size`` and labels that name a class."""
    from bcauto.data import Dataset

    _valid(spec)
    for probe in ("no-such-source.xyz", "no/such/folder"):
        assert isinstance(spec.claims(probe), bool), f"{spec.name}: claims must return True or False"
    if arg is None:
        return
    data = spec.load(arg, image_size, options or {"seed": 0})
    assert isinstance(data, Dataset), f"{spec.name}: load must return a bcauto.data.Dataset, got {type(data).__name__}"
    n = len(data.labels)
    assert data.images.dtype == np.uint8, f"{spec.name}: images must be uint8, got {data.images.dtype}"
    assert data.images.shape == (n, image_size, image_size, 3), f"{spec.name}: images have shape {data.images.shape}"
    assert n and data.labels.min() >= 0 and data.labels.max() < len(data.class_names), f"{spec.name}: labels outside the classes"


def check_shift(spec: ShiftSpec, images: np.ndarray | None = None) -> None:
    """Each severity returns uint8 images of the input's shape, the same for the same seed, changed; the
    heaviest severity changes them more than the mildest."""
    _valid(spec)
    images = sample_images(6, 32) if images is None else images
    changes = []
    for severity in spec.severities:
        a = spec.apply(images, severity, np.random.default_rng(1))
        b = spec.apply(images, severity, np.random.default_rng(1))
        assert a.dtype == np.uint8 and a.shape == images.shape, f"{spec.name}: severity {severity} gave {a.dtype} {a.shape}"
        assert np.array_equal(a, b), f"{spec.name}: severity {severity} differs between two runs with one seed"
        changes.append(float(np.abs(a.astype(float) - images).mean()))
    assert min(changes) > 0, f"{spec.name}: some severity leaves the images unchanged: {changes}"
    if len(changes) > 1:
        assert changes[-1] > changes[0], f"{spec.name}: the heaviest severity changes less than the mildest: {changes}"


def check_component(kind: str, spec: Any, tmp_path: Path | None = None) -> None:
    """The check for ``kind`` (a key of :data:`KINDS`); datasets other than ``synthetic`` are checked without
    loading (they need files or a download)."""
    if kind == "backbones":
        check_backbone(spec)
    elif kind == "augmentations":
        check_augmentation(spec, tmp_path)
    elif kind == "canonicalizers":
        check_canonicalizer(spec, tmp_path)
    elif kind == "imbalance":
        check_imbalance(spec)
    elif kind == "datasets":
        check_dataset(spec, "20" if spec.name == "synthetic" else None)
    elif kind == "shifts":
        check_shift(spec)
    else:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")


def contract_cases(kind: str | None = None, package: str | None = None) -> list:
    """``pytest.param(kind, spec)`` for every installed component of ``kind`` (all kinds when None), only those
    of ``package`` (a distribution name such as ``"bcauto-densenet"``) when given; ids are ``kind:name``."""
    import pytest

    from bcauto.plugins import components

    kinds = KINDS if kind is None else (kind,)
    registries = components().by_kind()
    return [
        pytest.param(k, spec, id=f"{k}:{name}")
        for k in kinds
        for name, spec, provider in registries[k]
        if package is None or provider.package == package
    ]
