"""Data from several sources (labs): merged by class name, each image keeping its domain; a domain held out."""

import numpy as np
import pytest

from bcauto.data import Dataset
from bcauto.data.domains import domain_name, merge_domains
from bcauto.data.sources import load_data
from bcauto.data.split import hold_out_domain
from bcauto.errors import BcautoError
from bcauto.plugins import components


def _npz(path, class_names, labels, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (len(labels), 16, 16, 3), dtype=np.uint8)
    np.savez(path, images=images, labels=np.asarray(labels), class_names=np.array(class_names))
    return images


def test_sources_joined_by_plus_load_as_one_dataset_with_a_domain_each_and_classes_matched_by_name(tmp_path):
    a = _npz(tmp_path / "lab_a.npz", ["neutrophil", "lymphocyte"], [0, 1, 1, 0, 1], seed=0)
    # another lab: other class order and spelling, and a class the first lab has not
    b = _npz(tmp_path / "lab_b.npz", ["Lymphocyte", "monocyte", "Neutrophil"], [0, 1, 2, 2], seed=1)
    data = load_data(f"{tmp_path / 'lab_a.npz'} + {tmp_path / 'lab_b.npz'}", 16, components())
    assert data.class_names == ("neutrophil", "lymphocyte", "monocyte")
    assert data.labels.tolist() == [0, 1, 1, 0, 1] + [1, 2, 0, 0]
    assert data.domains.tolist() == [0] * 5 + [1] * 4 and data.domain_names == ("lab_a", "lab_b")
    np.testing.assert_array_equal(data.images, np.concatenate([a, b]))
    assert data.source == f"{tmp_path / 'lab_a.npz'} + {tmp_path / 'lab_b.npz'}"
    # the same images are other data when cut into other domains (a resumed study must not mix them)
    pooled = Dataset(data.images, data.labels, data.class_names, data.source)
    assert data.fingerprint() != pooled.fingerprint()
    part = data.subset(np.array([1, 6]))
    assert part.domains.tolist() == [0, 1] and part.domain_names == data.domain_names


def test_merged_item_names_say_which_domain_an_image_is_from_and_repeated_names_stay_apart(tmp_path):
    first = Dataset(np.zeros((2, 8, 8, 3), np.uint8), np.array([0, 1]), ("a", "b"), "x/images", item_names=("a/1.png", "b/2.png"))
    second = Dataset(np.zeros((1, 8, 8, 3), np.uint8), np.array([0]), ("a", "b"), "y/images")
    merged = merge_domains([first, second], [domain_name("x/images"), domain_name("y/images/")])
    assert merged.domain_names == ("images", "images-2")
    assert merged.item_names == ("images/a/1.png", "images/b/2.png", "images-2/0")
    assert domain_name("bloodmnist:64") == "bloodmnist:64" and domain_name("cells.npz") == "cells"


def test_an_empty_source_between_plus_signs_is_refused(tmp_path):
    _npz(tmp_path / "a.npz", ["x", "y"], [0, 1], seed=0)
    with pytest.raises(BcautoError, match="empty source"):
        load_data(f"{tmp_path / 'a.npz'} +  + {tmp_path / 'a.npz'}", 16, components())


def test_hold_out_domain_takes_the_last_source_by_default_or_the_one_named():
    data = merge_domains([Dataset(np.zeros((n, 8, 8, 3), np.uint8), np.arange(n) % 2, ("a", "b"), name)
                          for n, name in ((4, "one"), (3, "two"), (2, "three"))], ["one", "two", "three"])
    rest, held, name = hold_out_domain(data)
    assert name == "three" and held.tolist() == [7, 8] and rest.tolist() == list(range(7))
    rest, held, name = hold_out_domain(data, "one")
    assert name == "one" and held.tolist() == [0, 1, 2, 3] and rest.tolist() == [4, 5, 6, 7, 8]
    with pytest.raises(BcautoError, match="'four' is none of the sources' domains: one, two, three"):
        hold_out_domain(data, "four")
    with pytest.raises(BcautoError, match="needs data from several sources"):
        hold_out_domain(Dataset(np.zeros((2, 8, 8, 3), np.uint8), np.array([0, 1]), ("a", "b"), "one"))
