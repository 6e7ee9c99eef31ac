"""The Keras layers of the built-in canonicalizers, imported when a model is built or loaded (what they do and why:
see :mod:`bcauto_builtin.canonical`, which registers them without importing Keras)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops
from skimage.color.colorconv import rgb_from_xyz, xyz_from_rgb

D65_WHITE = (0.95047, 1.0, 1.08883)  # scikit-image's default illuminant (D65, 2-degree observer)


EPSILON = 1e-6


# Reference style for stain_norm: the mean over PBC images (pbc96, 13,759 images, 96x96) of each image's CIELAB
# channel means and standard deviations (bench/canonical_reference.py prints them).
REFERENCE_LAB_MEAN = (79.6, 10.7, 7.3)


REFERENCE_LAB_STD = (15.4, 8.0, 12.8)


# cell_crop: the nucleus spread (how far nucleus stain lies from its centre, under each way of measuring it: see
# nucleus_centre_and_spread) as a fraction of the image side that the crop aims for: the median over PBC's white
# cells (bench/canonical_reference.py), so images of the training lab change little and other labs' images are
# brought to that scale.
CANONICAL_NUCLEUS_SPREAD = {"median": 0.106, "rms": 0.115}


ZOOM_RANGE = (0.5, 2.5)


NUCLEUS_THRESHOLD = 2.5


SPREAD_ESTIMATES = tuple(CANONICAL_NUCLEUS_SPREAD)


def rgb_to_lab(rgb):
    """CIELAB of float RGB images in [0, 255] (N x H x W x 3), as ``skimage.color.rgb2lab``."""
    x = ops.clip(rgb / 255.0, 0.0, 1.0)
    linear = ops.where(x > 0.04045, ops.power((x + 0.055) / 1.055, 2.4), x / 12.92)
    xyz = ops.matmul(linear, ops.convert_to_tensor(xyz_from_rgb.T.astype("float32"))) / ops.convert_to_tensor(
        np.array(D65_WHITE, "float32")
    )
    f = ops.where(xyz > 0.008856, ops.power(ops.maximum(xyz, EPSILON), 1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return ops.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_to_rgb(lab):
    """Float RGB in [0, 255] of CIELAB images, as ``skimage.color.lab2rgb`` (out-of-gamut values clipped)."""
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = lab[..., 1] / 500.0 + fy
    fz = ops.maximum(fy - lab[..., 2] / 200.0, 0.0)
    f = ops.stack([fx, fy, fz], axis=-1)
    xyz = ops.where(f > 0.2068966, ops.power(f, 3.0), (f - 16.0 / 116.0) / 7.787) * ops.convert_to_tensor(np.array(D65_WHITE, "float32"))
    linear = ops.matmul(xyz, ops.convert_to_tensor(rgb_from_xyz.T.astype("float32")))
    srgb = ops.where(linear > 0.0031308, 1.055 * ops.power(ops.maximum(linear, EPSILON), 1.0 / 2.4) - 0.055, 12.92 * linear)
    return ops.clip(srgb, 0.0, 1.0) * 255.0


@keras.saving.register_keras_serializable(package="bcauto")
class StainNormalization(keras.layers.Layer):
    """Reinhard colour transfer: each image's CIELAB channel means and standard deviations become the reference's."""

    def __init__(self, reference_mean=REFERENCE_LAB_MEAN, reference_std=REFERENCE_LAB_STD, **kwargs):
        super().__init__(**kwargs)
        self.reference_mean = tuple(float(v) for v in reference_mean)
        self.reference_std = tuple(float(v) for v in reference_std)

    def call(self, images):
        lab = rgb_to_lab(ops.cast(images, "float32"))
        mean = ops.mean(lab, axis=(1, 2), keepdims=True)
        std = ops.std(lab, axis=(1, 2), keepdims=True)
        target_mean = ops.convert_to_tensor(np.array(self.reference_mean, "float32"))
        target_std = ops.convert_to_tensor(np.array(self.reference_std, "float32"))
        # the floor keeps a flat image (a blank field) from being blown up into noise
        normalised = (lab - mean) / ops.maximum(std, 1.0) * target_std + target_mean
        return lab_to_rgb(normalised)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "reference_mean": self.reference_mean, "reference_std": self.reference_std}


def check_spread_estimate(name: str) -> None:
    if name not in SPREAD_ESTIMATES:
        raise ValueError(f"spread_estimate must be one of {', '.join(SPREAD_ESTIMATES)}, got {name!r}")


def nucleus_centre_and_spread(images, prior_width: float = 0.3, spread_estimate: str = "median", fallback: float | None = None):
    """Where the white cell's nucleus is and how large, per image: (row, column, spread) in pixels.

    Nucleus pixels are those that are both dark and blue for their image: the sum of the standardised (per
    image) CIELAB lightness and blue-yellow values, negated, stands more than ``NUCLEUS_THRESHOLD`` above its
    mean. Being relative, it holds across stain strengths and colour casts, where an absolute haematoxylin
    threshold (colour deconvolution) also fires on the dark rims of red cells under another lab's optics. The centre is found
    twice, each time weighted by a Gaussian prior (first around the image centre, then around the first
    estimate), so a neighbouring cell at the edge pulls the estimate little. The spread is the weighted
    median distance from that centre (``spread_estimate="median"``) or the root-mean-square distance (``"rms"``,
    what models saved before 2026-12-04 use): dark specks far from the cell (stain deposits, other cells in a
    zoomed-out field) inflate a mean of squared distances, but move a median only as far as the share of nucleus
    weight they take (bench/RESULTS.md, "the cell finder's spread"). Where no nucleus is found the spread is
    ``fallback`` (a fraction of the side; default the canonical spread), so the crop leaves the scale alone.
    """
    check_spread_estimate(spread_estimate)
    lab = rgb_to_lab(ops.cast(images, "float32"))
    standardised = (lab - ops.mean(lab, axis=(1, 2), keepdims=True)) / (ops.std(lab, axis=(1, 2), keepdims=True) + EPSILON)
    mask = ops.relu(-(standardised[..., 0] + standardised[..., 2]) - NUCLEUS_THRESHOLD)
    size = ops.shape(mask)[1]
    side = ops.cast(size, "float32")
    coords = ops.cast(ops.arange(size), "float32")
    rows, cols = coords[None, :, None], coords[None, None, :]
    centre_row = centre_col = ops.ones_like(mask[:, 0, 0]) * (side - 1.0) / 2.0
    for width in (prior_width, prior_width * 2 / 3):
        sigma = width * side
        d2 = (rows - centre_row[:, None, None]) ** 2 + (cols - centre_col[:, None, None]) ** 2
        weights = mask * ops.exp(-d2 / (2.0 * sigma * sigma))
        mass = ops.sum(weights, axis=(1, 2))
        total, found = mass + EPSILON, mass > 1e-3
        centre_row = ops.where(found, ops.sum(weights * rows, axis=(1, 2)) / total, centre_row)
        centre_col = ops.where(found, ops.sum(weights * cols, axis=(1, 2)) / total, centre_col)
    # the spread under the first, wider prior: the narrow one would shrink a large nucleus
    d2 = (rows - centre_row[:, None, None]) ** 2 + (cols - centre_col[:, None, None]) ** 2
    weights = mask * ops.exp(-d2 / (2.0 * (prior_width * side) ** 2))
    if spread_estimate == "median":
        spread = weighted_median(ops.sqrt(ops.reshape(d2, (-1, size * size))), ops.reshape(weights, (-1, size * size)))
    else:
        spread = ops.sqrt(ops.sum(weights * d2, axis=(1, 2)) / (ops.sum(weights, axis=(1, 2)) + EPSILON))
    fallback = CANONICAL_NUCLEUS_SPREAD[spread_estimate] if fallback is None else fallback
    spread = ops.where(found, spread, fallback * side)
    return centre_row, centre_col, spread


def weighted_median(values, weights):
    """Per row of ``values`` (N x P), the smallest value at which the cumulative ``weights`` reach half their sum."""
    order = ops.argsort(values, axis=1)
    values = ops.take_along_axis(values, order, axis=1)
    cumulative = ops.cumsum(ops.take_along_axis(weights, order, axis=1), axis=1)
    below = ops.sum(ops.cast(cumulative < 0.5 * cumulative[:, -1:], "int32"), axis=1)
    index = ops.minimum(below, ops.shape(values)[1] - 1)
    return ops.take_along_axis(values, index[:, None], axis=1)[:, 0]


@keras.saving.register_keras_serializable(package="bcauto")
class CellCentredCrop(keras.layers.Layer):
    """Centre each image on its white cell's nucleus and zoom it to a canonical size (smear background mirrored in
    where zooming out needs more than the frame).

    ``spread`` is the nucleus spread to reach, as a fraction of the side (default: the canonical one under
    ``spread_estimate``, how the spread is measured: see :func:`nucleus_centre_and_spread`); ``strength`` in
    [0, 1] damps the zoom (1: the full correction; 0.5: its square root), since part of a cell's size is a class
    cue; the centring is limited to the middle half of the frame and the zoom to ``zoom_range``.
    """

    def __init__(self, spread=None, strength=1.0, zoom_range=ZOOM_RANGE, spread_estimate="median", **kwargs):
        super().__init__(**kwargs)
        check_spread_estimate(spread_estimate)
        self.spread_estimate = spread_estimate
        self.spread = float(CANONICAL_NUCLEUS_SPREAD[spread_estimate] if spread is None else spread)
        self.strength = float(strength)
        self.zoom_range = tuple(float(v) for v in zoom_range)
        # keras.ops.image.affine_transform has no XLA kernel on TensorFlow
        self.supports_jit = False

    def call(self, images):
        images = ops.cast(images, "float32")
        side = ops.cast(ops.shape(images)[1], "float32")
        row, col, spread = nucleus_centre_and_spread(images, spread_estimate=self.spread_estimate, fallback=self.spread)
        zoom = ops.power(self.spread * side / ops.maximum(spread, 1.0), self.strength)
        zoom = ops.clip(zoom, self.zoom_range[0], self.zoom_range[1])
        row = ops.clip(row, 0.25 * side, 0.75 * side)
        col = ops.clip(col, 0.25 * side, 0.75 * side)
        half = (side - 1.0) / 2.0
        zeros = ops.zeros_like(zoom)
        # output pixel (x, y) samples input (x / zoom + col - half / zoom, y / zoom + row - half / zoom)
        transform = ops.stack([1.0 / zoom, zeros, col - half / zoom, zeros, 1.0 / zoom, row - half / zoom, zeros, zeros], axis=1)
        out = ops.image.affine_transform(images, transform, interpolation="bilinear", fill_mode="reflect")
        return ops.clip(out, 0.0, 255.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "spread": self.spread,
            "strength": self.strength,
            "zoom_range": self.zoom_range,
            "spread_estimate": self.spread_estimate,
        }

    @classmethod
    def from_config(cls, config):
        # models saved before the estimate was a setting measured the root-mean-square spread: they keep it
        return cls(**{"spread_estimate": "rms", **config})


def build_stain_norm(params: dict, image_size: int) -> keras.layers.Layer:
    return StainNormalization(name="canonical_stain_norm")


def build_cell_crop(params: dict, image_size: int) -> keras.layers.Layer:
    return CellCentredCrop(
        strength=params.get("strength", 1.0), spread_estimate=params.get("spread_estimate", "median"), name="canonical_cell_crop"
    )


def build_cell_crop_stain_norm(params: dict, image_size: int) -> keras.Sequential:
    return keras.Sequential(
        [build_cell_crop(params, image_size), build_stain_norm(params, image_size)], name="canonical_cell_crop_stain_norm"
    )
