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
    data = merge_domains(
        [
            Dataset(np.zeros((n, 8, 8, 3), np.uint8), np.arange(n) % 2, ("a", "b"), name)
            for n, name in ((4, "one"), (3, "two"), (2, "three"))
        ],
        ["one", "two", "three"],
    )
    rest, held, name = hold_out_domain(data)
    assert name == "three" and held.tolist() == [7, 8] and rest.tolist() == list(range(7))
    rest, held, name = hold_out_domain(data, "one")
    assert name == "one" and held.tolist() == [0, 1, 2, 3] and rest.tolist() == [4, 5, 6, 7, 8]
    with pytest.raises(BcautoError, match="'four' is none of the sources' domains: one, two, three"):
        hold_out_domain(data, "four")
    with pytest.raises(BcautoError, match="needs data from several sources"):
        hold_out_domain(Dataset(np.zeros((2, 8, 8, 3), np.uint8), np.array([0, 1]), ("a", "b"), "one"))


DOMAIN_STUDY = """
[study]
trials = 2
seed = 1
metric = "val_domain_macro_f1"
pruner = "none"
shift_validation = false

[data]
image_size = 32
val_fraction = 0.25

[train]
weights = "none"
batch_size = 32
head_epochs = 2
finetune_epochs = 0

[search]
backbone = ["mini_cnn"]
augmentation = ["none"]
imbalance = ["none"]
head_units1 = 32
head_units2 = 0
"""


def _lab(path, seed, cast=(0, 0, 0)):
    """A synthetic lab: generated cells, optionally with a colour cast (another stain and camera)."""
    from bcauto_builtin.sources.synthetic import generate

    images, labels = generate(160, 32, seed)
    images = np.clip(images.astype(np.int16) + np.array(cast, np.int16), 0, 255).astype(np.uint8)
    from bcauto_builtin.sources import BLOOD_CELL_CLASSES

    np.savez(path, images=images, labels=labels, class_names=np.array(BLOOD_CELL_CLASSES))
    return str(path)


def test_split_by_domain_never_trains_on_the_held_out_domain_and_stratifies_the_rest(tmp_path):
    from bcauto.config import load_study
    from bcauto.study import split_by_domain

    (tmp_path / "domain.toml").write_text(DOMAIN_STUDY)
    cfg = load_study(tmp_path / "domain.toml")
    data = load_data(f"{_lab(tmp_path / 'lab_a.npz', 0)} + {_lab(tmp_path / 'lab_b.npz', 1, (40, 0, -30))}", 32, components())
    split, held, domain = split_by_domain(data, cfg, seed=1)
    assert domain == "lab_b" and set(held.tolist()) == set(np.flatnonzero(data.domains == 1).tolist())
    assert set(split.train.tolist()) | set(split.val.tolist()) == set(np.flatnonzero(data.domains == 0).tolist())
    assert not set(split.train.tolist()) & set(split.val.tolist())
    assert abs(len(split.val) / 160 - 0.25) < 0.05
    single = load_data(str(tmp_path / "lab_a.npz"), 32, components())
    with pytest.raises(BcautoError, match="metric = 'val_domain_macro_f1' needs data from several sources"):
        split_by_domain(single, cfg, seed=1)


def test_a_search_on_two_labs_optimizes_the_held_out_labs_macro_f1_each_epoch_and_at_the_end(tmp_path):
    # in a worker process, so the held-out lab also travels through the prepared-data files
    import optuna
    from mlflow.tracking import MlflowClient

    from bcauto.cli import main

    (tmp_path / "domain.toml").write_text(DOMAIN_STUDY)
    lab_a, lab_b = _lab(tmp_path / "lab_a.npz", 0), _lab(tmp_path / "lab_b.npz", 1, (40, 0, -30))
    stores = ["--storage", f"sqlite:///{tmp_path}/optuna.db", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    assert (
        main(
            [
                "search",
                "--study",
                str(tmp_path / "domain.toml"),
                "--data",
                lab_a,
                "--data",
                lab_b,
                "--workers",
                "1",
                "--work-dir",
                str(tmp_path / "work"),
                *stores,
            ]
        )
        == 0
    )
    study = optuna.load_study(study_name="domain", storage=f"sqlite:///{tmp_path}/optuna.db")
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 2
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    for trial in trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.params["validation_domain"] == "lab_b" and run.data.params["data.domains"] == "lab_a,lab_b"
        assert trial.user_attrs["reported_metric"] == "val_domain_macro_f1"
        curve = client.get_metric_history(run.info.run_id, "val_domain_macro_f1")
        # one value per epoch, reported to the pruner as they came, then the kept model's: the trial's value
        assert [m.value for m in curve][:2] == [trial.intermediate_values[0], trial.intermediate_values[1]]
        assert curve[-1].value == pytest.approx(trial.value)
        assert run.data.metrics["val_domain_accuracy"] >= 0.0
    # refit reads the same two labs back (the logged source) and trains on both
    assert main(["refit", "--name", "domain", *stores, "--out", str(tmp_path / "model")]) == 0
    import json

    info = json.loads((tmp_path / "model" / "bcauto-model.json").read_text())
    assert info["data"]["images"] == 320
