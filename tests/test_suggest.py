"""Asking before labelling: ``bcauto suggest`` chooses which of a new lab's unlabelled images to label, and
``bcauto adapt --pool`` fine-tunes on the labelled ones and reads the rest of the lab's images unlabelled."""

import csv
import json

import keras
import numpy as np
import pytest
from adapt_models import SIZE
from helpers import CLASSES, blob_data
from mlflow.tracking import MlflowClient
from PIL import Image

from bcauto.cli import main


@pytest.fixture(scope="module")
def lab(parent):
    """A new lab's 96 cells (colours inverted) and their labels, which the lab does not yet have."""
    data = blob_data(96, SIZE, seed=7)
    return 255 - data.images, data.labels


def test_suggest_copies_the_most_typical_images_after_the_label_free_step_and_says_where_each_came_from(parent, lab, tmp_path, capsys):
    from bcauto.bundle import load_bundle
    from bcauto.shot_choice import choose_typical
    from bcauto.test_time import maximize_information

    _, model = parent
    images, _ = lab
    pool = tmp_path / "pool"
    pool.mkdir()
    for i in range(60):  # 60 image files and 36 rows of an .npz
        Image.fromarray(images[i]).save(pool / f"cell_{i:02d}.png")
    np.savez(tmp_path / "more.npz", images=images[60:])
    out = tmp_path / "to-label"
    args = ["suggest", str(model), str(pool), str(tmp_path / "more.npz"), "--shots", "6", "--seed", "1", "--adapt-im", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    said = " ".join(printed.split())

    keras.utils.set_random_seed(1)
    expected = load_bundle(model)
    maximize_information(expected.model, images, seed=1)
    chosen = choose_typical(expected.model, images, 6, seed=1)
    with (out / "suggested.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["source"] for row in rows] == [
        str(pool / f"cell_{i:02d}.png") if i < 60 else str(tmp_path / "more.npz") for i in chosen.tolist()
    ]
    assert [row["index"] for row in rows] == ["" if i < 60 else str(i - 60) for i in chosen.tolist()]
    for row, i in zip(rows, chosen.tolist()):
        copy = out / row["file"]
        if i < 60:  # the lab's own file, byte for byte
            assert copy.read_bytes() == (pool / f"cell_{i:02d}.png").read_bytes()
        else:
            assert np.array_equal(np.asarray(Image.open(copy)), images[i])
    assert sorted(p.name for p in out.iterdir()) == sorted([*(row["file"] for row in rows), "suggested.csv"])
    assert "".join(f"copied 6 images to label into {out}".split()) in "".join(said.split())  # wrapped by the path's length
    next_command = f"  bcauto adapt {model} --data {out} --pool {pool} --pool {tmp_path / 'more.npz'} --adapt-im --pseudo-labels"
    assert next_command in printed.splitlines(), "the command to run next is one line, however long, to copy whole"

    # a folder that exists is never written into
    assert main(args) == 2
    assert "already exists; name a new folder" in capsys.readouterr().err
    assert len(list(out.iterdir())) == 7


def test_adapt_with_a_pool_trains_the_model_a_labelled_split_of_the_same_images_trains_whatever_their_order(parent, lab, tmp_path, capsys):
    """The shots of a fully labelled run, sorted into class folders, and the rest as an unlabelled pool in another
    order (holding a copy of one shot) train the same model, through the label-free step, the cross-validation and
    the self-training; nothing is scored, and the lineage says so."""
    from bcauto.bundle import load_bundle

    _, model = parent
    images, labels = lab
    np.savez(tmp_path / "all.npz", images=images, labels=labels, class_names=np.array(CLASSES))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    common = ["--seed", "1", "--lr", "1e-3", "--adapt-im", "--pseudo-labels", "--tracking-uri", uri]
    assert main(["adapt", str(model), "--data", str(tmp_path / "all.npz"), "--shots", "8", *common, "--out", str(tmp_path / "split")]) == 0
    split = load_bundle(tmp_path / "split")

    shots = np.array(split.info["adapted"]["shot_indices"])
    rest = np.setdiff1d(np.arange(96), shots)
    labelled = tmp_path / "labelled"
    for rank, i in enumerate(shots):  # as a lab sorts bcauto suggest's folder: one subfolder per class
        (labelled / CLASSES[labels[i]]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(labelled / CLASSES[labels[i]] / f"{rank}.png")
    np.savez(tmp_path / "pool.npz", images=np.concatenate([images[rest[::-1]], images[shots[:1]]]))
    capsys.readouterr()
    run = ["adapt", str(model), "--data", str(labelled), "--pool", str(tmp_path / "pool.npz"), *common]
    assert main([*run, "--out", str(tmp_path / "pooled")]) == 0
    printed = capsys.readouterr().out
    said = " ".join(printed.split())

    pooled = load_bundle(tmp_path / "pooled")
    lineage = pooled.info["adapted"]
    assert lineage["pool"]["images"] == 88 and lineage["pool"]["copies_of_shots_left_out"] == 1
    assert lineage["shots"] == 8 and lineage["shot_indices"] == list(range(8)) and lineage["images"] == 96
    assert lineage["before"] is None and lineage["after"] is None and lineage["scored_images"] == 0
    record = lineage["recipe"]["pseudo_labels"]
    assert min(record["indices"]) >= 8 and record["correct"] is None
    assert "left out 1 image that is a shot of --data" in said and "88 unlabelled images in --pool" in said
    # long paths wrap wherever the console's width falls: compared without the wrapping's spaces
    assert "".join(f"adapted to 96 images of {labelled} and --pool {tmp_path / 'pool.npz'}, labels unread".split()) in "".join(said.split())
    assert "no labelled image was kept aside, so the adapted model is not scored here" in said
    # the command to copy is on one line, however long the path (the terminal wraps it, rich does not break it)
    assert any(f"`bcauto evaluate {tmp_path / 'pooled'} --data CELLS`" in line for line in printed.splitlines())

    # the same images in other orders: the same epochs, pseudo-labels and weights
    assert lineage["recipe"]["epochs_choice"] == split.info["adapted"]["recipe"]["epochs_choice"]
    pool_rows = images[rest[::-1]]  # the pool as read, less its copy of a shot (the last row)
    split_record = split.info["adapted"]["recipe"]["pseudo_labels"]
    assert sorted((pool_rows[i - 8].tobytes(), c) for i, c in zip(record["indices"], record["labels"])) == sorted(
        (images[i].tobytes(), c) for i, c in zip(split_record["indices"], split_record["labels"])
    )
    probe = images[:32].astype(np.float32)
    assert np.allclose(split.model.predict(probe, verbose=0), pooled.model.predict(probe, verbose=0), atol=1e-5)
    mlflow_run = MlflowClient(tracking_uri=uri).get_run(pooled.info["mlflow"]["run_id"])
    assert mlflow_run.data.params["pool_images"] == "88" and "after_accuracy" not in mlflow_run.data.metrics
    assert json.loads((tmp_path / "pooled" / "bcauto-model.json").read_text())["adapted"]["pool"]["inputs"] == [str(tmp_path / "pool.npz")]


def test_adapt_with_a_pool_trains_the_model_choose_shots_typical_trains_on_the_same_shots(parent, lab, tmp_path):
    """The shots ``--choose-shots typical`` took (its model saved and restored around the parent's score), sorted into
    class folders with the rest as a pool: the same epochs, pseudo-labels and weights."""
    from bcauto.bundle import load_bundle

    _, model = parent
    images, labels = lab
    np.savez(tmp_path / "all.npz", images=images, labels=labels, class_names=np.array(CLASSES))
    common = ["--seed", "1", "--lr", "1e-3", "--adapt-im", "--pseudo-labels", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    data = ["--data", str(tmp_path / "all.npz"), "--shots", "8", "--choose-shots", "typical"]
    assert main(["adapt", str(model), *data, *common, "--out", str(tmp_path / "typical")]) == 0
    typical = load_bundle(tmp_path / "typical")
    shots = np.array(typical.info["adapted"]["shot_indices"])
    labelled = tmp_path / "labelled"
    for rank, i in enumerate(shots):
        (labelled / CLASSES[labels[i]]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(labelled / CLASSES[labels[i]] / f"{rank}.png")
    np.savez(tmp_path / "pool.npz", images=images[np.setdiff1d(np.arange(96), shots)])
    pool = ["--data", str(labelled), "--pool", str(tmp_path / "pool.npz")]
    assert main(["adapt", str(model), *pool, *common, "--out", str(tmp_path / "pool")]) == 0
    pooled = load_bundle(tmp_path / "pool")
    first, second = typical.info["adapted"]["recipe"], pooled.info["adapted"]["recipe"]
    assert first["epochs_choice"] == second["epochs_choice"] and first["pseudo_labels"]["labels"] == second["pseudo_labels"]["labels"]
    probe = images[:32].astype(np.float32)
    assert np.allclose(typical.model.predict(probe, verbose=0), pooled.model.predict(probe, verbose=0), atol=1e-5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--pool", "POOL", "--shots", "4"], "with --pool every image of --data is a shot"),
        (["--pool", "POOL", "--choose-shots", "typical"], "with --pool every image of --data is a shot"),
        ([], "--shots is needed"),
    ],
)
def test_adapt_refuses_shots_to_draw_with_a_pool_and_needs_them_without_one(parent, lab, tmp_path, capsys, extra, message):
    _, model = parent
    images, labels = lab
    np.savez(tmp_path / "all.npz", images=images, labels=labels, class_names=np.array(CLASSES))
    extra = [str(tmp_path / "all.npz") if part == "POOL" else part for part in extra]
    assert main(["adapt", str(model), "--data", str(tmp_path / "all.npz"), *extra, "--out", str(tmp_path / "a")]) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "a").exists()
