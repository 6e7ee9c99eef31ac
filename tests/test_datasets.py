"""Built-in data sources and ``--data`` resolution, on small generated files (never the real data folder)."""

from __future__ import annotations

import hashlib
import pathlib

import numpy as np
import pytest
from PIL import Image

from bcauto import hookimpl, plugins
from bcauto.data import Dataset
from bcauto.data.images import resize_images
from bcauto.data.sources import load_data
from bcauto.errors import BcautoError
from bcauto_builtin.sources import BLOOD_CELL_CLASSES, BLOOD_CELL_COUNTS, bloodmnist, folder, npz, synthetic


@pytest.fixture(scope="module")
def comps():
    return plugins.components()


def _rgb(n, height=12, width=12, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def _save_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _medmnist_file(path, size=8, n=(16, 8, 8)):
    """A file in the MedMNIST layout; test images are all white so a leak would show."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        images = rng.integers(0, 200, (count, size, size, 3), dtype=np.uint8)
        arrays[f"{split}_images"] = np.full_like(images, 255) if split == "test" else images
        arrays[f"{split}_labels"] = (np.arange(count) % 8).reshape(-1, 1)
    return _save_npz(path, **arrays)


def _with_sides(width, height, centre=(0, 0, 255), side=(255, 0, 0)):
    """An image whose centred square is ``centre`` and whose leftover margins are ``side``."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:] = side
    left, top, right, bottom = (
        (width - min(width, height)) // 2,
        (height - min(width, height)) // 2,
        (width + min(width, height)) // 2,
        (height + min(width, height)) // 2,
    )
    pixels[top:bottom, left:right] = centre
    return pixels


# ---- images -----------------------------------------------------------------------------------------------


def test_resize_keeps_the_centre_square_and_skips_needless_copies():
    images = np.stack([_with_sides(40, 20), _with_sides(40, 20)])
    small = resize_images(images, 10)
    assert small.shape == (2, 10, 10, 3)
    assert small[..., 2].min() > 200 and small[..., 0].max() < 40  # only the blue centre is left
    same = _rgb(3, 10, 10)
    assert resize_images(same, 10) is same


# ---- synthetic --------------------------------------------------------------------------------------------


def test_synthetic_shape_names_and_notes():
    data = synthetic.load(None, 24, {"synthetic_size": 300, "seed": 0})
    assert data.images.shape == (300, 24, 24, 3) and data.images.dtype == np.uint8
    assert data.labels.dtype == np.int64 and data.class_names == BLOOD_CELL_CLASSES
    assert "synthetic" in data.notes[0] and data.source == "synthetic:300"


def test_synthetic_is_deterministic_per_seed():
    first, labels = synthetic.generate(120, 20, seed=3)
    again, labels_again = synthetic.generate(120, 20, seed=3)
    other, _ = synthetic.generate(120, 20, seed=4)
    assert np.array_equal(first, again) and np.array_equal(labels, labels_again)
    assert not np.array_equal(first, other)


def test_synthetic_has_the_real_class_imbalance():
    assert synthetic.class_counts(sum(BLOOD_CELL_COUNTS)).tolist() == list(BLOOD_CELL_COUNTS)
    counts = synthetic.class_counts(1000)
    assert counts.sum() == 1000
    assert np.abs(counts - np.asarray(BLOOD_CELL_COUNTS) / sum(BLOOD_CELL_COUNTS) * 1000).max() < 1
    _, labels = synthetic.generate(500, 8, seed=0)
    assert np.bincount(labels).tolist() == synthetic.class_counts(500).tolist()


@pytest.mark.parametrize("size", [5, 33])
def test_synthetic_any_image_size(size):
    images, _ = synthetic.generate(16, size, seed=0)
    assert images.shape == (16, size, size, 3)


def test_synthetic_classes_differ_but_not_trivially():
    """Nearest class mean on 4x4 colour thumbnails: well above chance (1/8), yet far from perfect."""
    images, labels = synthetic.generate(1200, 24, seed=0)
    features = images.reshape(-1, 4, 6, 4, 6, 3).mean(axis=(2, 4)).reshape(len(images), -1)
    train, test = slice(0, 800), slice(800, None)
    means = np.stack([features[train][labels[train] == c].mean(axis=0) for c in range(8)])
    predicted = ((features[test][:, None] - means[None]) ** 2).sum(axis=2).argmin(axis=1)
    accuracy = (predicted == labels[test]).mean()
    assert 0.3 < accuracy < 0.95


def test_synthetic_size_argument_must_be_a_positive_number():
    with pytest.raises(BcautoError, match="positive whole number"):
        synthetic.load("many", 16, {})


# ---- npz --------------------------------------------------------------------------------------------------


def test_npz_seed_layout_with_conversions(tmp_path):
    images = _rgb(6, 10, 14).astype(np.float64) / 255  # floats in [0, 1], not square
    path = _save_npz(tmp_path / "seed.npz", images=images, labels=np.arange(6).reshape(-1, 1) % 3)
    data = npz.load_npz(path, 8)
    assert data.images.shape == (6, 8, 8, 3) and data.images.dtype == np.uint8
    assert data.labels.tolist() == [0, 1, 2, 0, 1, 2] and data.class_names == ("class_0", "class_1", "class_2")
    assert any("converted to uint8" in note for note in data.notes)


def test_npz_says_when_its_images_are_enlarged(tmp_path):
    path = _save_npz(tmp_path / "small.npz", images=_rgb(6, 10, 14), labels=np.arange(6) % 3)
    assert not [note for note in npz.load_npz(path, 10).notes if "enlarged" in note]  # 10 x 14 read at 10: cropped, not enlarged
    assert [note for note in npz.load_npz(path, 12).notes if "enlarged" in note] == [
        f"{path}: 6 of 6 images enlarged to 12x12 (the smallest has a 10-pixel side): enlarging adds no detail, only training time"
    ]


@pytest.mark.parametrize("shape, note", [((4, 10, 10), "grayscale"), ((4, 10, 10, 1), "grayscale"), ((4, 10, 10, 4), "RGBA")])
def test_npz_grayscale_and_rgba_are_converted(tmp_path, shape, note):
    path = _save_npz(tmp_path / "x.npz", images=np.zeros(shape, np.uint8), labels=np.zeros(4, np.int64))
    data = npz.load_npz(path, 10)
    assert data.images.shape == (4, 10, 10, 3) and any(note in n for n in data.notes)


def test_npz_crops_to_the_centre_square(tmp_path):
    path = _save_npz(tmp_path / "wide.npz", images=_with_sides(30, 10)[None], labels=np.zeros(1, int))
    image = npz.load_npz(path, 6).images[0]
    assert image[..., 2].min() > 200 and image[..., 0].max() < 40


def test_npz_class_names_and_bloodmnist_names(tmp_path):
    named = _save_npz(tmp_path / "named.npz", images=_rgb(2), labels=np.array([0, 1]), class_names=np.array(["a", "b"]))
    assert npz.load_npz(named, 12).class_names == ("a", "b")
    eight = _save_npz(tmp_path / "eight.npz", images=_rgb(8), labels=np.arange(8))
    data = npz.load_npz(eight, 12)
    assert data.class_names == BLOOD_CELL_CLASSES and any("BloodMNIST" in note for note in data.notes)


def test_npz_medmnist_layout_uses_train_and_val_never_test(tmp_path):
    data = npz.load_npz(_medmnist_file(tmp_path / "m.npz"), 8)
    assert len(data.labels) == 16 + 8
    assert data.images.max() < 255  # the all-white test split was not read
    assert any("train and val" in note and "test split is not loaded" in note for note in data.notes)


BAD_NPZ = [
    ({"images": _rgb(2)}, "arrays found: images"),
    ({"pictures": _rgb(2), "targets": np.zeros(2)}, "arrays found: pictures, targets"),
    ({"train_images": _rgb(2), "train_labels": np.zeros(2), "val_images": _rgb(2)}, "no 'val_labels'"),
    ({"images": np.zeros((2, 10)), "labels": np.zeros(2)}, "expected N x H x W x 3"),
    ({"images": np.zeros((2, 4, 4, 2)), "labels": np.zeros(2)}, "has 2 channels"),
    ({"images": np.full((2, 4, 4, 3), "x"), "labels": np.zeros(2)}, "non-numeric dtype"),
    ({"images": np.full((2, 4, 4, 3), np.nan), "labels": np.zeros(2)}, "NaN or infinite pixels in 2 image"),
    ({"images": np.full((2, 4, 4, 3), 300.0), "labels": np.zeros(2)}, r"expected \[0, 1\] or \[0, 255\]"),
    ({"images": _rgb(2), "labels": np.array([0.5, 1.0])}, "must be integer class indices"),
    ({"images": _rgb(2), "labels": np.array(["a", "b"])}, "must be integer class indices"),
    ({"images": _rgb(2), "labels": np.array([0, -1])}, "labels must lie in"),
    ({"images": _rgb(2), "labels": np.array([0, 2]), "class_names": np.array(["a", "b"])}, r"lie in 0\.\.1"),
    ({"images": _rgb(3), "labels": np.zeros(2, int)}, "3 images but 2 labels"),
    ({"images": _rgb(2), "labels": np.zeros((2, 2), int)}, "'labels' has shape"),
]


@pytest.mark.parametrize("arrays, message", BAD_NPZ)
def test_npz_bad_contents_are_explained(tmp_path, arrays, message):
    path = _save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(BcautoError, match=message) as error:
        npz.load_npz(path, 8)
    assert str(path) in str(error.value)


def test_npz_missing_and_unreadable_files(tmp_path):
    with pytest.raises(BcautoError, match="missing.npz: file not found"):
        npz.load_npz(tmp_path / "missing.npz", 8)
    text = tmp_path / "notes.npz"
    text.write_text("images,labels\n1,2\n")
    with pytest.raises(BcautoError, match="notes.npz: not an .npz archive"):
        npz.load_npz(text, 8)


class _Payload:
    """Unpickling this runs Path.touch: what a malicious file could do."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.target),)


@pytest.mark.parametrize("key", ["images", "labels"])
def test_npz_pickled_objects_are_refused_without_running_them(tmp_path, key):
    marker = tmp_path / "pwned"
    arrays = {"images": _rgb(1), "labels": np.zeros(1, int)}
    arrays[key] = np.array([_Payload(marker)], dtype=object)
    path = _save_npz(tmp_path / "evil.npz", **arrays)
    with pytest.raises(BcautoError, match=f"array '{key}' holds Python objects"):
        npz.load_npz(path, 8)
    assert not marker.exists()
    np.load(path, allow_pickle=True)[key]  # the payload is live: loading it carelessly does run it
    assert marker.exists()


# ---- folder -----------------------------------------------------------------------------------------------


def _image_file(path, size=(20, 16), mode="RGB", fmt=None, colour=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(len(str(path))).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels if colour is None else np.full_like(pixels, colour))
    image.convert(mode).save(path, format=fmt)
    return path


def _class_tree(root):
    _image_file(root / "b_cells" / "one.png", (30, 20))
    _image_file(root / "b_cells" / "two.JPG", (16, 16), fmt="JPEG")
    _image_file(root / "a_cells" / "gray.png", (12, 40), mode="L")
    _image_file(root / "a_cells" / "alpha.png", (9, 9), mode="RGBA")
    _image_file(root / "a_cells" / "three.tiff", (25, 25))
    (root / "a_cells" / "README.txt").write_text("not an image")
    return root


def test_folder_loads_sorted_classes_any_size_and_mode(tmp_path):
    data = folder.load_folder(_class_tree(tmp_path / "cells"), 8)
    assert data.images.shape == (5, 8, 8, 3) and data.images.dtype == np.uint8
    assert data.class_names == ("a_cells", "b_cells") and data.labels.tolist() == [0, 0, 0, 1, 1]
    assert any("converted to RGB from L, RGBA" in note for note in data.notes)
    assert any("README.txt" in note for note in data.notes)


def test_folder_names_images_outside_any_class_folder_apart_from_entries_that_are_not_images(tmp_path):
    root = _class_tree(tmp_path / "cells")
    _image_file(root / "unsorted.png", (8, 8))  # one a user forgot to sort (bcauto suggest's folder)
    data = folder.load_folder(root, 8)
    assert len(data.labels) == 5
    assert f"{root}: ignored 1 image outside any class folder: unsorted.png" in data.notes
    assert f"{root}: ignored 1 entry that is not an image: README.txt" in data.notes
    assert dict(data.left_out) == {"unsorted.png": "an image outside any class folder", "a_cells/README.txt": "not an image file"}


def test_folder_says_how_many_of_its_images_are_enlarged(tmp_path):
    root = _class_tree(tmp_path / "cells")  # shorter sides 20, 16, 12, 9 and 25 pixels
    assert not [note for note in folder.load_folder(root, 9).notes if "enlarged" in note]
    (note,) = [note for note in folder.load_folder(root, 16).notes if "enlarged" in note]
    assert note.startswith(f"{root}: 2 of 5 images enlarged to 16x16 (the smallest has a 9-pixel side)")


def test_folder_crops_to_the_centre_square(tmp_path):
    path = tmp_path / "f" / "only" / "wide.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(_with_sides(60, 20)).save(path)
    image = folder.load_folder(tmp_path / "f", 10).images[0]
    assert image[..., 2].min() > 200 and image[..., 0].max() < 40


def test_folder_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "f" / "c" / "deep.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 1000, np.uint16)).save(path)  # dim in 16 bits: ~4 of 255
    assert folder.load_folder(tmp_path / "f", 8).images.max() < 10


def test_folder_errors(tmp_path):
    with pytest.raises(BcautoError, match="nowhere: folder not found"):
        folder.load_folder(tmp_path / "nowhere", 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BcautoError, match="empty: is empty"):
        folder.load_folder(tmp_path / "empty", 8)
    _image_file(tmp_path / "flat" / "loose.png")
    with pytest.raises(BcautoError, match="has no class subfolders"):
        folder.load_folder(tmp_path / "flat", 8)
    _image_file(tmp_path / "tree" / "good" / "x.png")
    (tmp_path / "tree" / "hollow").mkdir()
    (tmp_path / "tree" / "hollow" / "notes.txt").write_text("")
    with pytest.raises(BcautoError, match="hollow: class folder without images"):
        folder.load_folder(tmp_path / "tree", 8)


def test_folder_undecodable_image_stops_or_is_skipped(tmp_path):
    root = _class_tree(tmp_path / "cells")
    (root / "b_cells" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(BcautoError, match=r"broken\.png: cannot decode.*--on-bad-image skip"):
        folder.load_folder(root, 8)
    data = folder.load(str(root), 8, {"on_bad_image": "skip"})
    assert len(data.labels) == 5 and data.labels.tolist() == [0, 0, 0, 1, 1]
    assert any("skipped 1 undecodable image(s): broken.png" in note for note in data.notes)
    for good in (root / "b_cells").glob("[ot]*"):
        good.unlink()
    with pytest.raises(BcautoError, match="b_cells: none of its images could be decoded"):
        folder.load(str(root), 8, {"on_bad_image": "skip"})


# ---- bloodmnist -------------------------------------------------------------------------------------------


@pytest.fixture
def cached_bloodmnist(tmp_path, monkeypatch):
    """A small MedMNIST-layout file in a fresh cache, with its checksum registered: no network needed."""
    path = _medmnist_file(tmp_path / "cache" / "bloodmnist" / "bloodmnist_64.npz")
    monkeypatch.setitem(bloodmnist.FILES, 64, ("bloodmnist_64.npz", hashlib.md5(path.read_bytes()).hexdigest()))
    return tmp_path / "cache"


def test_bloodmnist_sizes_and_cache_lookup(tmp_path):
    assert [bloodmnist.variant_for(s) for s in (28, 32, 64, 96, 300)] == [28, 64, 64, 128, 224]
    assert bloodmnist.bloodmnist_cached(28, tmp_path) is None
    path = _medmnist_file(tmp_path / "bloodmnist" / "bloodmnist.npz")
    assert bloodmnist.bloodmnist_cached(28, tmp_path) == path
    with pytest.raises(BcautoError, match="choose one of 28, 64, 128, 224"):
        bloodmnist.load("65", 32, {"cache_dir": tmp_path})


def test_bloodmnist_loads_the_cached_file_without_test_split(cached_bloodmnist):
    data = bloodmnist.load("64", 16, {"cache_dir": cached_bloodmnist})
    assert data.images.shape == (24, 16, 16, 3)  # train 16 + val 8, not the 8 test images
    assert data.class_names == BLOOD_CELL_CLASSES and data.source == "bloodmnist:64"
    assert not any("no 'class_names'" in note for note in data.notes)


def test_bloodmnist_unreachable_download_is_explained(tmp_path, monkeypatch):
    monkeypatch.setattr(bloodmnist, "RECORD", "http://127.0.0.1:9/nothing-listens-here")
    with pytest.raises(BcautoError, match="could not be downloaded.*--data synthetic.*--data PATH"):
        bloodmnist.load("28", 28, {"cache_dir": tmp_path})


# ---- --data resolution ------------------------------------------------------------------------------------


def test_load_data_by_name_and_argument(comps):
    assert len(load_data("synthetic", 8, comps, {"synthetic_size": 40}).labels) == 40
    assert len(load_data("synthetic:24", 8, comps, {"synthetic_size": 40}).labels) == 24


def test_load_data_by_path(comps, tmp_path):
    path = _save_npz(tmp_path / "d.npz", images=_rgb(3), labels=np.arange(3))
    assert load_data(str(path), 6, comps, {}).images.shape == (3, 6, 6, 3)
    assert load_data(f"npz:{path}", 6, comps, {}).source == str(path)
    root = _class_tree(tmp_path / "cells")
    assert load_data(str(root), 6, comps, {}).class_names == ("a_cells", "b_cells")


def test_load_data_unknown_name_or_missing_path(comps, tmp_path):
    with pytest.raises(BcautoError, match="did you mean 'synthetic'"):
        load_data("synthtic", 8, comps, {})
    with pytest.raises(BcautoError, match="did you mean 'bloodmnist'"):
        load_data("bloodmnst:64", 8, comps, {})
    with pytest.raises(BcautoError, match="path .*cells.h5 was not found.*available: bloodmnist"):
        load_data(str(tmp_path / "cells.h5"), 8, comps, {})
    with pytest.raises(BcautoError, match="missing.npz: file not found"):
        load_data(str(tmp_path / "missing.npz"), 8, comps, {})


def test_auto_falls_back_to_synthetic_offline(comps, tmp_path, monkeypatch):
    monkeypatch.setattr(bloodmnist, "bloodmnist_reachable", lambda timeout=3.0: False)
    data = load_data("auto", 8, comps, {"synthetic_size": 30, "cache_dir": tmp_path})
    assert data.source == "synthetic:30"
    assert "SYNTHETIC images are used" in data.notes[-1] and "--data PATH" in data.notes[-1]


def test_auto_uses_cached_bloodmnist_without_network(comps, cached_bloodmnist, monkeypatch):
    monkeypatch.setattr(bloodmnist, "bloodmnist_reachable", lambda timeout=3.0: pytest.fail("network asked"))
    data = load_data("auto", 64, comps, {"cache_dir": cached_bloodmnist})
    assert data.source == "bloodmnist:64" and "BloodMNIST 64px" in data.notes[-1]


def test_a_source_breaking_the_contract_is_reported(tmp_path):
    class Broken:
        @hookimpl
        def register_datasets(self, register):
            from bcauto.specs import DatasetSpec

            register(
                DatasetSpec(
                    "broken",
                    lambda arg, size, options: Dataset(
                        np.zeros((2, size + 1, size + 1, 3), np.uint8), np.zeros(2, np.int64), ("x",), "broken"
                    ),
                )
            )

    plugins.register_plugin(Broken(), "tests:broken")
    try:
        with pytest.raises(BcautoError, match="data source 'broken' returned uint8 images of shape"):
            load_data("broken", 8, plugins.components(), {})
    finally:
        plugins.unregister_plugin("tests:broken")


def test_a_third_party_source_resizes_and_notes_enlargement_with_the_public_helpers():
    import bcauto.data as public

    small = np.arange(3 * 6 * 8 * 3, dtype=np.uint8).reshape(3, 6, 8, 3)

    class Reader:
        @hookimpl
        def register_datasets(self, register):
            from bcauto.specs import DatasetSpec

            def load(arg, size, options):
                notes = public.enlarged_note("reader", np.full(len(small), 6), size)
                return Dataset(public.resize_images(small, size), np.zeros(3, np.int64), ("x",), "reader", notes=tuple(notes))

            register(DatasetSpec("reader", load))

    plugins.register_plugin(Reader(), "tests:reader")
    try:
        data = load_data("reader", 10, plugins.components(), {})
        assert data.images.shape == (3, 10, 10, 3)
        assert data.notes == (
            "reader: 3 of 3 images enlarged to 10x10 (the smallest has a 6-pixel side): enlarging adds no detail, only training time",
        )
        assert load_data("reader", 6, plugins.components(), {}).notes == ()
    finally:
        plugins.unregister_plugin("tests:reader")


def test_a_folder_with_one_class_is_refused_before_any_store_or_training(tmp_path, capsys):
    from bcauto.cli import main

    for i in range(12):
        _image_file(tmp_path / "cells" / "neutrophil" / f"{i}.png", (16, 16))
    stores = tmp_path / "stores"
    stores.mkdir()
    code = main(
        [
            "search",
            "--data",
            str(tmp_path / "cells"),
            "--trials",
            "1",
            "--storage",
            f"sqlite:///{stores}/optuna.db",
            "--tracking-uri",
            f"sqlite:///{stores}/mlflow.db",
            "--work-dir",
            str(stores / ".bcauto"),
        ]
    )
    assert code == 2
    assert "only one class has images (neutrophil); a classifier needs at least two" in " ".join(capsys.readouterr().err.split())
    assert not (stores / "optuna.db").exists()
