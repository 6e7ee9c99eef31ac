"""The plugin contract, run over every installed component (built-ins and bcauto-densenet alike) with the same
checks a third-party plugin imports from :mod:`bcauto.testing`; and each check fails on a component breaking it."""

import keras
import numpy as np
import pytest

from bcauto.specs import AugmentationSpec, BackboneSpec, CanonicalizerSpec, ImbalancePlan, ImbalanceSpec, ShiftSpec
from bcauto.testing import (
    check_augmentation,
    check_backbone,
    check_canonicalizer,
    check_component,
    check_imbalance,
    check_shift,
    contract_cases,
)


@pytest.mark.parametrize("kind, spec", contract_cases())
def test_every_installed_component_meets_the_contract(kind, spec, tmp_path):
    check_component(kind, spec, tmp_path)


def test_cases_cover_every_kind_and_filter_by_package():
    kinds = {param.values[0] for param in contract_cases()}
    assert kinds == {"backbones", "augmentations", "canonicalizers", "imbalance", "datasets", "shifts"}
    assert [param.id for param in contract_cases(package="bcauto-densenet")] == ["backbones:densenet121"]


class Unregistered(keras.layers.Layer):
    def call(self, x):
        return x


def _tiny(input_shape, weights=None):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3, name="b1_out")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(4, 3, name="b2_out")(Unregistered()(x)))


def _noise(images, severity, rng):
    return np.clip(images + rng.integers(0, 20 * severity, images.shape), 0, 255).astype(np.uint8)


def _scale(images, severity, rng):
    return (images * (1 - severity / 10)).astype(np.uint8)


@pytest.mark.parametrize(
    "check, spec, message",
    [
        (check_backbone, BackboneSpec("tiny", _tiny, "unit", ("b1_out", "b2_out"), min_input_size=8), "not registered with keras"),
        (
            check_augmentation,
            AugmentationSpec("darken", lambda params, size, seed: keras.layers.Rescaling(2.0)),
            r"must stay in \[0.0, 255.0\]",
        ),
        (check_canonicalizer, CanonicalizerSpec("crop", lambda params, size: keras.layers.CenterCrop(size // 2, size // 2)), "shape"),
        (check_imbalance, ImbalanceSpec("drop", lambda labels, seed: ImbalancePlan(np.flatnonzero(labels == 0))), "drops a class"),
        (
            check_shift,
            ShiftSpec("unseeded", lambda images, severity, rng: _noise(images, severity, np.random.default_rng())),
            "differs between two runs",
        ),
        (check_shift, ShiftSpec("float", lambda images, severity, rng: images / 2.0), "gave float64"),
        (check_shift, ShiftSpec("lighter", lambda images, severity, rng: _scale(images, 6 - severity, rng)), "heaviest severity"),
    ],
)
def test_each_check_fails_on_a_component_breaking_the_contract(check, spec, message):
    with pytest.raises(AssertionError, match=message):
        check(spec)
