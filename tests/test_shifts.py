"""The corruption suite: deterministic, every severity changes the image, heavier changes it more."""

import numpy as np
import pytest

from bcauto.plugins import components
from bcauto.shift import every_shift, shifted_copy
from helpers import blob_data

SHIFTS = components().shifts.names()


@pytest.fixture(scope="module")
def data():
    return blob_data(24, 48, seed=5)


@pytest.mark.parametrize("name", SHIFTS)
def test_shift_is_deterministic_and_every_severity_changes_the_image(name, data):
    spec = components().shifts.get(name)
    changes = []
    for severity in spec.severities:
        a = spec.apply(data.images, severity, np.random.default_rng(1))
        b = spec.apply(data.images, severity, np.random.default_rng(1))
        assert a.dtype == np.uint8 and a.shape == data.images.shape
        assert np.array_equal(a, b)
        changes.append(np.abs(a.astype(float) - data.images).mean())
    assert min(changes) > 0.5, f"{name}: some severity barely changes the images: {changes}"
    assert changes[-1] > changes[0], f"{name}: the heaviest severity changes less than the mildest: {changes}"


def test_builtin_suite_covers_microscopy_shifts():
    assert {"defocus_blur", "motion_blur", "jpeg", "pixelate", "brightness", "contrast", "saturation", "hue",
            "gaussian_noise", "stain_deposits", "bubbles", "occlusion", "rotation"} <= set(SHIFTS)


def test_shifted_copy_is_seeded_keeps_labels_and_uses_every_shift(data):
    big = blob_data(400, 32, seed=2)
    copy, tags = shifted_copy(big, components().shifts, seed=9)
    again, tags_again = shifted_copy(big, components().shifts, seed=9)
    assert np.array_equal(copy.images, again.images) and list(tags) == list(tags_again)
    assert np.array_equal(copy.labels, big.labels)
    assert {t.split(":")[0] for t in tags} == set(SHIFTS)
    assert not np.array_equal(copy.images, big.images)
    other, _ = shifted_copy(big, components().shifts, seed=10)
    assert not np.array_equal(copy.images, other.images)


def test_every_shift_yields_each_corruption_at_each_severity(data):
    seen = [(name, severity) for name, severity, images in every_shift(data, components().shifts, 0)]
    expected = [(n, s) for n in SHIFTS for s in components().shifts.get(n).severities]
    assert seen == expected
