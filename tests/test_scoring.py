"""Scores and their confidence intervals (bcauto.scoring)."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from bcauto.scoring import intervals, macro_f1_of


@pytest.mark.parametrize("seed", range(3))
def test_vectorized_macro_f1_equals_sklearns_over_the_classes_present_in_each_row(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, (4, 30))
    labels[0][labels[0] == 3] = 4  # class 3 absent from the first row: averaged over the other four there
    predicted = np.where(rng.random((4, 30)) < 0.6, labels, rng.integers(0, 8, (4, 30)))  # calls classes 5-7 too
    expected = [f1_score(y, p, labels=np.unique(y), average="macro", zero_division=0) for y, p in zip(labels, predicted)]
    assert np.allclose(macro_f1_of(labels, predicted, np.arange(5)), expected)
    assert np.allclose(macro_f1_of(labels[1], predicted[1], np.arange(5)), expected[1])


def test_intervals_are_wilsons_for_accuracy_and_a_seeded_bootstrap_for_macro_f1():
    labels = np.repeat(np.arange(4), 25)
    predicted = labels.copy()
    predicted[::2] = (labels[::2] + 1) % 4  # 50 of 100 right
    record = intervals(labels, predicted, np.arange(4))
    assert record["level"] == 0.95 and record["accuracy"] == pytest.approx([0.4038, 0.5962], abs=1e-4)  # Wilson, 50/100
    low, high = record["macro_f1"]
    point = f1_score(labels, predicted, average="macro")
    assert low < point < high and record == intervals(labels, predicted, np.arange(4))
    # four times the images, same error rate: about half as wide
    wide = high - low
    four = intervals(np.tile(labels, 4), np.tile(predicted, 4), np.arange(4))
    assert 0.35 * wide < four["macro_f1"][1] - four["macro_f1"][0] < 0.7 * wide


def test_a_perfect_or_a_single_score_still_gets_an_interval_where_one_is_defined():
    perfect = intervals(np.arange(4).repeat(5), np.arange(4).repeat(5), np.arange(4))
    assert perfect["accuracy"][1] == pytest.approx(1.0) and perfect["accuracy"][0] < 1.0 and perfect["macro_f1"] == [1.0, 1.0]
    single = intervals(np.array([2]), np.array([2]), np.array([2]))
    assert single["accuracy"] is not None and single["macro_f1"] is None
