import numpy as np
import pytest

from bcauto.plugins import components

LABELS = np.array([0] * 50 + [1] * 20 + [2] * 5)


def strategy(name):
    return components().imbalance.get(name)


def test_class_weights_are_inverse_frequency():
    plan = strategy("class_weights").apply(LABELS, 0)
    assert plan.indices.tolist() == list(range(75))
    assert plan.class_weight == {0: 75 / 150, 1: 75 / 60, 2: 75 / 15}  # exactly: n / (classes x count)
    assert all(type(c) is int and type(w) is float for c, w in plan.class_weight.items()), "plain types, for Keras and JSON"


def test_class_weights_cover_only_the_classes_present_and_average_one_per_sample():
    labels = np.array([2] * 3 + [0] * 4 + [5] * 7)
    weights = strategy("class_weights").apply(labels, 0).class_weight
    assert weights == {0: 14 / (3 * 4), 2: 14 / (3 * 3), 5: 14 / (3 * 7)}
    assert np.mean([weights[int(c)] for c in labels]) == pytest.approx(1.0)


def test_downsample_cuts_every_class_to_the_smallest_without_repeats():
    plan = strategy("downsample").apply(LABELS, 1)
    assert np.bincount(LABELS[plan.indices]).tolist() == [5, 5, 5]
    assert len(set(plan.indices.tolist())) == 15 and plan.class_weight is None


def test_oversample_draws_every_class_up_to_the_largest_and_keeps_all_originals():
    plan = strategy("oversample").apply(LABELS, 2)
    assert np.bincount(LABELS[plan.indices]).tolist() == [50, 50, 50]
    assert set(range(75)) <= set(plan.indices.tolist())


def test_resampling_is_seeded():
    a, b = (strategy("downsample").apply(LABELS, 7).indices for _ in range(2))
    assert a.tolist() == b.tolist()
    assert a.tolist() != strategy("downsample").apply(LABELS, 8).indices.tolist()
