"""Input canonicalizers: the colour maths match scikit-image, each one gives other labs' images the training lab's
look, and the same transform runs in training and in a saved and reloaded model."""

import keras
import numpy as np
import pytest
from helpers import blob_data
from skimage.color import lab2rgb, rgb2lab

from bcauto.bundle import load_bundle, save_bundle
from bcauto.model import HeadParams
from bcauto.plugins import components
from bcauto.testing import check_canonicalizer
from bcauto.training import TrainSettings, TrialPlan, build_parts
from bcauto_builtin.canonical_layers import (
    CANONICAL_NUCLEUS_SPREAD,
    REFERENCE_LAB_MEAN,
    REFERENCE_LAB_STD,
    CellCentredCrop,
    StainNormalization,
    lab_to_rgb,
    nucleus_centre_and_spread,
    rgb_to_lab,
    weighted_median,
)

CANONICALIZERS = components().canonicalizers.names()
SIZE = 64


def smear_cell(size=SIZE, centre=(32, 32), radius=7.0, seed=0) -> np.ndarray:
    """A cream background with pink red cells and one purple nucleus of ``radius`` pixels: an MGG-like field."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = np.ones((size, size, 3), np.float32) * (235, 222, 205)
    for _ in range(6):
        cy, cx = rng.uniform(0, size, 2)
        if np.hypot(cy - centre[0], cx - centre[1]) > 2.2 * radius:
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < (0.9 * radius) ** 2] = (225, 160, 165)
    image[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < (1.8 * radius) ** 2] = (215, 190, 215)  # cytoplasm
    image[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2] = (90, 40, 130)  # nucleus
    return np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)


def test_lab_conversions_match_scikit_image():
    images = blob_data(6, 24, seed=3).images
    np.testing.assert_allclose(np.asarray(rgb_to_lab(images.astype("float32"))), rgb2lab(images), atol=0.05)
    lab = rgb2lab(images)
    np.testing.assert_allclose(np.asarray(lab_to_rgb(lab.astype("float32"))), lab2rgb(lab) * 255, atol=0.1)


def test_stain_normalization_gives_each_image_the_reference_statistics_and_removes_a_colour_cast():
    image = smear_cell()[None].astype("float32")
    cast = np.clip(image * (0.8, 0.9, 1.15) + (0, 0, 10), 0, 255)  # a blue, dimmer camera
    normalised = np.asarray(StainNormalization()(np.concatenate([image, cast])))
    lab = rgb2lab(normalised.astype(np.uint8))
    np.testing.assert_allclose(lab.mean(axis=(1, 2))[0], REFERENCE_LAB_MEAN, atol=1.5)
    np.testing.assert_allclose(lab.std(axis=(1, 2))[0], REFERENCE_LAB_STD, rtol=0.12)
    before = np.abs(cast - image).mean()
    after = np.abs(normalised[1] - normalised[0]).mean()
    assert after < before / 4, f"the cast is not removed: mean difference {before:.1f} before, {after:.1f} after"


def test_nucleus_is_found_off_centre_and_its_size_measured():
    images = np.stack([smear_cell(centre=(20, 40), radius=5, seed=1), smear_cell(centre=(32, 32), radius=10, seed=2)])
    row, col, spread = (np.asarray(v) for v in nucleus_centre_and_spread(images.astype("float32")))
    np.testing.assert_allclose(row, [20, 32], atol=1.5)
    np.testing.assert_allclose(col, [40, 32], atol=1.5)
    assert spread[1] > 1.6 * spread[0], f"a nucleus twice as large must measure larger: {spread}"


def test_weighted_median_matches_the_definition():
    rng = np.random.default_rng(0)
    values, weights = rng.uniform(0, 10, (5, 40)).astype("float32"), rng.uniform(0, 1, (5, 40)).astype("float32")
    weights[0, :30] = 0.0  # most weight on a few values
    found = np.asarray(weighted_median(values, weights))
    for row in range(5):
        order = np.argsort(values[row])
        cumulative = np.cumsum(weights[row][order])
        expected = values[row][order][np.searchsorted(cumulative, 0.5 * cumulative[-1])]
        assert found[row] == pytest.approx(expected), row


def specks(image: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``image`` with ``count`` dark purple dots of stain deposit away from its centre."""
    rng = np.random.default_rng(seed)
    out = image.copy()
    size = image.shape[0]
    for _ in range(count):
        angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.45) * size
        y, x = int(size / 2 + distance * np.sin(angle)), int(size / 2 + distance * np.cos(angle))
        out[y - 1 : y + 1, x - 1 : x + 1] = (70, 30, 110)
    return out


def test_the_median_spread_holds_under_stain_deposits_where_the_root_mean_square_inflates():
    clean = np.stack([smear_cell(radius=r, seed=s) for s, r in enumerate((5, 7, 9))])
    speckled = np.stack([specks(image, 8, seed) for seed, image in enumerate(clean)])
    ratio = {}
    for estimate in ("median", "rms"):
        before, after = (np.asarray(nucleus_centre_and_spread(x.astype("float32"), spread_estimate=estimate)[2]) for x in (clean, speckled))
        ratio[estimate] = after / before
    assert np.all(np.abs(ratio["median"] - 1) < 0.15), ratio
    assert np.all(ratio["rms"] > 1.25), f"the specks must be enough to inflate the root-mean-square spread: {ratio}"


def test_a_cell_crop_saved_before_the_spread_estimate_existed_loads_measuring_the_root_mean_square():
    saved = CellCentredCrop(spread=0.117, strength=0.8).get_config()
    assert saved["spread_estimate"] == "median"
    del saved["spread_estimate"]
    old = CellCentredCrop.from_config(saved)
    assert (old.spread_estimate, old.spread, old.strength) == ("rms", 0.117, 0.8)
    images = np.stack([specks(smear_cell(radius=6, seed=s), 10, s) for s in range(2)]).astype("float32")
    assert not np.allclose(np.asarray(old(images)), np.asarray(CellCentredCrop(spread=0.117, strength=0.8)(images)), atol=1.0)
    with pytest.raises(ValueError, match="spread_estimate must be one of"):
        CellCentredCrop(spread_estimate="mean")


def test_cell_crop_brings_cells_of_two_magnifications_and_positions_to_one_canonical_size_in_the_centre():
    small_off_centre = smear_cell(centre=(24, 38), radius=4.5, seed=4)
    large_centred = smear_cell(centre=(32, 32), radius=9, seed=5)
    images = np.stack([small_off_centre, large_centred]).astype("float32")
    cropped = np.asarray(CellCentredCrop()(images))
    row, col, spread = (np.asarray(v) for v in nucleus_centre_and_spread(cropped))
    _, _, spread_before = (np.asarray(v) for v in nucleus_centre_and_spread(images))
    np.testing.assert_allclose(row, (SIZE - 1) / 2, atol=2.5)
    np.testing.assert_allclose(col, (SIZE - 1) / 2, atol=2.5)
    ratio_before, ratio_after = spread_before[1] / spread_before[0], spread[1] / spread[0]
    assert abs(np.log(ratio_after)) < abs(np.log(ratio_before)) / 3, (ratio_before, ratio_after)
    np.testing.assert_allclose(spread / SIZE, CANONICAL_NUCLEUS_SPREAD["median"], rtol=0.25)
    # zooming out mirrors smear background in: no black border
    assert cropped[1][[0, -1]].mean() > 150 and cropped[1][:, [0, -1]].mean() > 150


@pytest.mark.parametrize("name", CANONICALIZERS)
def test_every_canonicalizer_keeps_shape_and_range_and_survives_saving(name, tmp_path):
    """The contract a canonicalizer plugin must meet (bcauto.testing.check_canonicalizer), on smear-like cells."""
    images = np.stack([smear_cell(seed=s) for s in range(3)])
    check_canonicalizer(components().canonicalizers.get(name), tmp_path, images)


def test_the_trained_model_and_the_saved_bundle_apply_the_same_canonicalization(tmp_path):
    comps = components()
    canonicalizer = comps.canonicalizers.get("cell_crop_stain_norm")
    plan = TrialPlan(
        backbone=comps.backbones.get("mini_cnn"),
        augmentation=comps.augmentations.get("none"),
        imbalance=comps.imbalance.get("none"),
        head=HeadParams(16, 0, 0.0, 0.0),
        lr_head=1e-3,
        lr_finetune=0.0,
        unfreeze_blocks="all",
        backbone_params={"base_filters": 8, "norm": "group"},
        canonicalizer=canonicalizer,
        canonicalizer_params={"strength": 0.8},
    )
    parts = build_parts(plan, TrainSettings(weights="none"), SIZE, 4)
    images = np.stack([smear_cell(centre=(26, 36), radius=5, seed=s) for s in range(4)]).astype("float32")
    canonical = parts.backbone.get_layer("canonical_cell_crop_stain_norm")
    expected = np.asarray(canonical(images))
    assert np.abs(expected - images).mean() > 5, "the canonicalization must change these images"
    save_bundle(parts.model, {"class_names": list("abcd"), "image_size": SIZE}, tmp_path / "model")
    loaded = load_bundle(tmp_path / "model").model
    np.testing.assert_allclose(np.asarray(loaded.predict(images, verbose=0)), np.asarray(parts.model.predict(images, verbose=0)), atol=1e-5)
    reloaded_layer = loaded.get_layer("mini_cnn_features").get_layer("canonical_cell_crop_stain_norm")
    np.testing.assert_allclose(np.asarray(reloaded_layer(images)), expected, atol=1e-3)


def test_hook_register_canonicalizers():
    from bcauto import hookimpl, plugins
    from bcauto.specs import CanonicalizerSpec

    class Plugin:
        @hookimpl
        def register_canonicalizers(self, register):
            register(CanonicalizerSpec("grey", build=lambda params, size: keras.layers.Identity(), description="d"))

    plugins.register_plugin(Plugin(), "tests:hook")
    try:
        comps = plugins.components()
        assert comps.canonicalizers.get("grey").description == "d"
        assert {"none", "stain_norm", "cell_crop", "cell_crop_stain_norm"} <= set(comps.canonicalizers.names())
    finally:
        plugins.unregister_plugin("tests:hook")
