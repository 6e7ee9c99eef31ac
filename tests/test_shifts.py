"""The corruption suite: deterministic, every severity changes the image, heavier changes it more."""

import itertools

import numpy as np
import pytest
from helpers import blob_data

from bcauto.plugins import components
from bcauto.shift import every_shift, shifted_copy
from bcauto.testing import check_shift

SHIFTS = components().shifts.names()


@pytest.fixture(scope="module")
def data():
    return blob_data(24, 48, seed=5)


@pytest.mark.parametrize("name", SHIFTS)
def test_shift_is_deterministic_and_every_severity_changes_the_image(name, data):
    spec = components().shifts.get(name)
    check_shift(spec, data.images)  # the contract every shift plugin meets
    changes = [np.abs(spec.apply(data.images, s, np.random.default_rng(1)).astype(float) - data.images).mean() for s in spec.severities]
    assert min(changes) > 0.5, f"{name}: some severity barely changes the images: {changes}"


def test_builtin_suite_covers_microscopy_shifts():
    assert {
        "defocus_blur",
        "motion_blur",
        "jpeg",
        "pixelate",
        "brightness",
        "contrast",
        "saturation",
        "hue",
        "gaussian_noise",
        "stain_deposits",
        "bubbles",
        "occlusion",
        "rotation",
    } <= set(SHIFTS)


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


LAB_SHIFTS = {"magnification", "framing", "stain_style", "white_balance", "camera_optics", "other_lab"}


def test_suite_has_both_groups_and_the_lab_shifts_are_lab():
    groups = {name: components().shifts.get(name).group for name in SHIFTS}
    assert set(groups.values()) == {"corruption", "lab"}
    assert {name for name, group in groups.items() if group == "lab"} == LAB_SHIFTS


@pytest.mark.parametrize("name", sorted(LAB_SHIFTS))
def test_lab_shift_severities_differ_from_one_another(name, data):
    spec = components().shifts.get(name)
    outputs = [spec.apply(data.images, severity, np.random.default_rng(3)).astype(float) for severity in spec.severities]
    steps = [np.abs(b - a).mean() for a, b in itertools.pairwise(outputs)]
    assert min(steps) > 2.0, f"{name}: consecutive severities look alike: {steps}"


def test_magnification_zoom_out_fills_the_border_with_background():
    from bcauto_builtin.lab_shifts import zoom

    images = blob_data(8, 64, seed=3).images
    out = zoom(images, np.full(len(images), 1 / 2.7), np.random.default_rng(0)).astype(float)
    border = np.concatenate([out[:, :2], out[:, -2:], out[:, :, :2].transpose(0, 2, 1, 3), out[:, :, -2:].transpose(0, 2, 1, 3)], 1)
    background = np.concatenate([images[:, :3], images[:, -3:]], 1).astype(float)
    assert border.std(axis=(1, 2)).min() > 3, "the border is flat"
    assert np.abs(border.mean(axis=(1, 2, 3)) - background.mean(axis=(1, 2, 3))).max() < 20


def _saturation_and_value(images):
    from PIL import Image

    hsv = np.stack([np.asarray(Image.fromarray(im).convert("HSV"), float) for im in images])
    return hsv[..., 1].mean(axis=(1, 2)), hsv[..., 2].mean(axis=(1, 2))


@pytest.mark.parametrize("name, changes_more_than_hue", [("stain_style", True), ("hue", False)])
def test_stain_style_changes_more_than_a_hue_rotation(name, changes_more_than_hue, data):
    """A stain palette moves saturation or lightness too; a hue rotation (the control) keeps both."""
    out = components().shifts.get(name).apply(data.images, 5, np.random.default_rng(4))
    (s0, v0), (s1, v1) = _saturation_and_value(data.images), _saturation_and_value(out)
    moved = np.maximum(np.abs(s1 - s0), np.abs(v1 - v0)) > 8
    assert (moved.mean() > 0.8) == changes_more_than_hue, np.round(np.maximum(np.abs(s1 - s0), np.abs(v1 - v0)), 1)


def test_stain_palettes_differ_from_one_another(data):
    from bcauto_builtin.lab_shifts import PALETTES, stain_transfer

    means = [
        stain_transfer(data.images, [p] * len(data.images), np.ones(len(data.images))).astype(float).mean(axis=(0, 1, 2))
        for p in sorted(PALETTES)
    ]
    gaps = [np.abs(a - b).max() for k, a in enumerate(means) for b in means[k + 1 :]]
    assert min(gaps) > 8, gaps
    assert np.array_equal(stain_transfer(data.images, ["pale"] * len(data.images), np.zeros(len(data.images))), data.images)


@pytest.mark.parametrize("name", ["jpeg", "gaussian_noise", "camera_optics"])
def test_pixel_grid_damage_is_what_a_96_pixel_image_suffers_brought_down(name):
    """JPEG blocks and per-pixel noise on a 40-pixel image match the damage of a 96-pixel image brought down to 40
    (within 20%), not the 2.4 times coarser damage of the corruption applied at 40."""
    from bcauto_builtin.shifts import _resize

    spec = components().shifts.get(name)
    big = blob_data(32, 96, seed=7).images
    small = _resize(big, (40, 40))
    for severity in (1, 5):
        expected = np.abs(_resize(spec.apply(big, severity, np.random.default_rng(2)), (40, 40)).astype(float) - small).mean()
        damage = np.abs(spec.apply(small, severity, np.random.default_rng(2)).astype(float) - small).mean()
        assert abs(damage - expected) < 0.2 * expected, f"{name} {severity}: {damage:.2f} against {expected:.2f} at 96 brought down"
