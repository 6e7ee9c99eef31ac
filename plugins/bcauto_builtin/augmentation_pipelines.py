"""The Keras side of the built-in augmentation policies, imported when a model is built (what each policy does
and why: see :mod:`bcauto_builtin.augmentations`, which registers them without importing Keras)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import keras
from keras import layers

from bcauto_builtin.layers import (
    CellAugMix,
    CellRandAugment,
    PixelNoise,
    RandomHEDJitter,
    RandomMagnification,
    RandomOcclusion,
    RandomTranspose,
    RandomWhiteBalance,
    ReflectedGaussianBlur,
)

VALUE_RANGE = (0.0, 255.0)


DTYPE = "float32"


Seeds = Iterator[int | None]


# Factors at strength 1: the common Keras values for the seed report's transforms (the repository does not
# record the report's own numbers; set them here if they differ).
REPORT_ROTATION = 0.1


REPORT_ZOOM = 0.1


REPORT_BRIGHTNESS = 0.1


REPORT_NOISE = 0.02 * 255


def _seeds(seed: int | None) -> Seeds:
    """A distinct seed for each layer of a pipeline, so no two layers draw the same numbers."""
    return itertools.repeat(None) if seed is None else itertools.count(seed)


def _pipeline(name: str, steps: list[layers.Layer]) -> keras.Sequential:
    """The steps followed by a clip to [0, 255] (noise and colour maths can leave the range)."""
    clip = layers.ReLU(max_value=VALUE_RANGE[1], name=f"{name}_clip", dtype=DTYPE)
    return keras.Sequential([*steps, clip], name=f"augment_{name}")


def _flips(seeds: Seeds) -> list[layers.Layer]:
    """Independent horizontal and vertical flips.

    Keras 3's ``RandomFlip("horizontal_and_vertical")`` draws once for both axes, so it only ever turns the
    image by 180 degrees.
    """
    return [layers.RandomFlip(mode, seed=next(seeds), dtype=DTYPE) for mode in ("horizontal", "vertical")]


def _orientation(seeds: Seeds) -> list[layers.Layer]:
    """One of the 8 symmetries of the square, uniformly: flips, then a transpose half the time."""
    return [*_flips(seeds), RandomTranspose(seed=next(seeds), dtype=DTYPE)]


def _hue_saturation(strength: float, seeds: Seeds) -> list[layers.Layer]:
    """Hue within +-18 ``strength`` degrees, saturation x0.54..x1.86 at strength 1: a stain's palette."""
    return [
        layers.RandomHue(0.1 * strength, value_range=VALUE_RANGE, seed=next(seeds), dtype=DTYPE),
        # RandomSaturation's factor f multiplies saturation by f / (1 - f): 0.5 keeps it
        layers.RandomSaturation((0.5 - 0.15 * strength, 0.5 + 0.15 * strength), value_range=VALUE_RANGE, seed=next(seeds), dtype=DTYPE),
    ]


def _brightness(factor: float, seeds: Seeds) -> layers.Layer:
    return layers.RandomBrightness(factor, value_range=VALUE_RANGE, seed=next(seeds), dtype=DTYPE)


def _contrast(factor: float, seeds: Seeds) -> layers.Layer:
    return layers.RandomContrast(factor, value_range=VALUE_RANGE, seed=next(seeds), dtype=DTYPE)


def _noise(stddev: float, seeds: Seeds) -> layers.Layer:
    return PixelNoise(stddev, seed=next(seeds), dtype=DTYPE)


def build_flip_rotate_zoom(params: dict, image_size: int, seed: int | None) -> keras.Sequential:
    """Flips, rotation, zoom, brightness and Gaussian noise, each scaled by ``strength``."""
    s, seeds = params["strength"], _seeds(seed)
    return _pipeline(
        "flip_rotate_zoom",
        [
            *_flips(seeds),
            layers.RandomRotation(REPORT_ROTATION * s, seed=next(seeds), dtype=DTYPE),
            layers.RandomZoom(REPORT_ZOOM * s, seed=next(seeds), dtype=DTYPE),
            _brightness(REPORT_BRIGHTNESS * s, seeds),
            _noise(REPORT_NOISE * s, seeds),
        ],
    )


def build_randaugment(params: dict, image_size: int, seed: int | None) -> keras.Sequential:
    """Orientation, then RandAugment over the cell-safe operations (see :mod:`bcauto_builtin.layers`)."""
    seeds = _seeds(seed)
    augment = CellRandAugment(value_range=VALUE_RANGE, num_ops=params["num_ops"], factor=params["factor"], seed=next(seeds), dtype=DTYPE)
    return _pipeline("randaugment", [*_orientation(seeds), augment])


def build_augmix(params: dict, image_size: int, seed: int | None) -> keras.Sequential:
    """Orientation, then AugMix (3 chains of up to 3 cell-safe operations, mixed with the original)."""
    seeds = _seeds(seed)
    augment = CellAugMix(value_range=VALUE_RANGE, factor=params["severity"], seed=next(seeds), dtype=DTYPE)
    return _pipeline("augmix", [*_orientation(seeds), augment])


def build_mix_geometry(params: dict, image_size: int, seed: int | None) -> keras.Sequential:
    """The in-model part of ``mixup_cutmix``: orientation only."""
    return _pipeline("mixup_cutmix", _orientation(_seeds(seed)))


def build_mix_batch(params: dict, num_classes: int, seed: int | None) -> Callable:
    """``f(images, one_hot) -> (images, labels)`` mixing each image by MixUp, CutMix or not at all.

    Both mixes are computed for the whole batch and one is kept per image, so a batch holds all three
    kinds. Made for ``tf.data`` ``.map`` on batches of float32 images in [0, 255] and float32 one-hot labels.
    """
    seeds = _seeds(seed)
    alpha = params["alpha"]
    mixup = layers.MixUp(alpha=alpha, seed=next(seeds), dtype=DTYPE)
    cutmix = layers.CutMix(factor=(alpha, alpha), seed=next(seeds), dtype=DTYPE)
    generator = keras.random.SeedGenerator(next(seeds))
    # one uniform draw per image: below mixup_until MixUp, then up to cutmix_until CutMix, above it neither
    mixup_until = params["mixup_prob"]
    cutmix_until = mixup_until + params["cutmix_prob"]

    def mix(images, labels):
        batch = {"images": images, "labels": labels}
        by_mixup, by_cutmix = mixup(dict(batch)), cutmix(dict(batch))
        draw = keras.random.uniform(keras.ops.shape(labels)[:1], seed=generator)

        def pick(key, original):
            rows = (-1,) + (1,) * (len(original.shape) - 1)
            use_mixup = keras.ops.reshape(draw < mixup_until, rows)
            use_cutmix = keras.ops.reshape(draw < cutmix_until, rows)
            return keras.ops.where(use_mixup, by_mixup[key], keras.ops.where(use_cutmix, by_cutmix[key], original))

        return pick("images", images), pick("labels", labels)

    return mix


def build_stain(params: dict, image_size: int, seed: int | None) -> keras.Sequential:
    """Orientation, then hue, saturation, contrast and brightness jitter, as between stains and scanners.

    At strength 1: hue within +-18 degrees, saturation x0.54..x1.86, contrast x0.7..x1.3, brightness
    +-20% of the range.
    """
    s, seeds = params["strength"], _seeds(seed)
    return _pipeline(
        "stain",
        [
            *_orientation(seeds),
            *_hue_saturation(s, seeds),
            _contrast(0.3 * s, seeds),
            _brightness(0.2 * s, seeds),
        ],
    )


def _blur(strength: float, image_size: int, seeds: Seeds, reach: float = 1 / 64) -> layers.Layer:
    """Gaussian blur on half the images; sigma, drawn per batch, up to ``strength`` x ``reach`` of the image side."""
    sigma = max(strength * image_size * reach, 0.1)
    kernel = 2 * max(1, round(2 * sigma)) + 1  # covers +-2 sigma
    return ReflectedGaussianBlur(
        factor=(0.5, 0.5), kernel_size=kernel, sigma=(0.05, sigma), value_range=VALUE_RANGE, seed=next(seeds), dtype=DTYPE
    )


def build_corruption(params: dict, image_size: int, seed: int | None) -> keras.Sequential:
    """Orientation, then the shifts a microscope or scanner brings: blur, exposure, noise and debris."""
    s, seeds = params["strength"], _seeds(seed)
    return _pipeline(
        "corruption",
        [
            *_orientation(seeds),
            _blur(s, image_size, seeds),
            _contrast(0.4 * s, seeds),
            _brightness(0.3 * s, seeds),
            _noise(0.05 * 255 * s, seeds),
            layers.RandomErasing(factor=(0.5 * s, 0.5 * s), scale=(0.02, 0.08), value_range=VALUE_RANGE, seed=next(seeds), dtype=DTYPE),
        ],
    )


# Stain jitter at strength 1. Tellez et al. (2019, Med. Image Anal.) call scale and shift ranges of +-0.05
# "HED-light" and +-0.2 "HED-strong". The scale is unit-free: 0.2 here is HED-strong. The shift is not:
# implementations derived from theirs add 2 to intensities in [0, 1] before the log, where 0.2 moves a white
# background's intensity by about 0.5 (a pale stain washing over every pixel); here it is a true optical
# density, in which 0.05 darkens or lightens a white background by about 5% and tints it with the stain.
LAB_HED_SIGMA = 0.2


LAB_HED_BIAS = 0.05


LAB_WHITE_BALANCE = 0.15  # channel gains 0.85..1.15 before renormalising: a clearly warm, cool or green cast


LAB_CONTRAST = 0.2


LAB_BRIGHTNESS = 0.1


def build_lab(params: dict, image_size: int, seed: int | None) -> keras.Sequential:
    """Orientation, then what changes from one lab to another: magnification, stain, light, focus, exposure.

    Parameters:

    - ``zoom`` (1.1 to 2): the cell is shown between ``1 / zoom`` and ``zoom`` times its size, the scale
      log-uniform and drawn per image; zooming out fills the border with the image's outer eighth mirrored
      outwards (smear background and red-cell edges), never black and never a copy of the cell.
    - ``strength`` (0.1 to 1) scales, per image: the HED stain jitter (each of the haematoxylin, eosin and
      DAB concentrations times U(1 - 0.2 s, 1 + 0.2 s) plus U(-0.05 s, 0.05 s) optical density, Tellez et
      al.'s method); a white-balance cast (channel gains from U(1 - 0.15 s, 1 + 0.15 s), mean gain 1);
      a camera blur (half the images, sigma up to ``s`` x 1/64 of the side, per batch); contrast x(1 +-
      0.2 s) and brightness +-10 s % of the range.
    """
    s, seeds = params["strength"], _seeds(seed)
    return _pipeline(
        "lab",
        [
            *_orientation(seeds),
            RandomMagnification(params["zoom"], seed=next(seeds), dtype=DTYPE),
            RandomHEDJitter(LAB_HED_SIGMA * s, LAB_HED_BIAS * s, seed=next(seeds), dtype=DTYPE),
            RandomWhiteBalance(LAB_WHITE_BALANCE * s, seed=next(seeds), dtype=DTYPE),
            _blur(s, image_size, seeds),
            _contrast(LAB_CONTRAST * s, seeds),
            _brightness(LAB_BRIGHTNESS * s, seeds),
        ],
    )


# robust at strength 1: contrast down to x0.3, as the corruption suite's contrast loss reaches 0.2 at severity 5;
# an occluding patch of 5-40% of the image on half the images (the suite's covers 10-50%). At every strength, blur up
# to 1/24 of the side, where the suite's defocus blur reaches 1/27 at severity 5: at 1/64 the models lost most of the
# blur shifts (bench/RESULTS.md, "pilot: robust's blur over the suite's range"), and scaled by the strengths searches
# chose (0.38-0.47) it reached about half the suite's range ("Cross-lab, fifteenth run")
ROBUST_CONTRAST = 0.7


ROBUST_BLUR_REACH = 1 / 24


ROBUST_NOISE = 0.04 * 255


ROBUST_OCCLUSION_RATE = 0.5


ROBUST_OCCLUSION_AREA = (0.05, 0.4)


def build_robust(params: dict, image_size: int, seed: int | None) -> keras.Sequential:
    """Orientation, the ``stain`` policy's colour jitter, then the damage a smear and a camera bring: contrast loss,
    blur, sensor noise and an occluding patch.

    At strength ``s``: hue within +-18 s degrees and saturation as in ``stain`` (x0.54..x1.86 at 1); contrast
    x(1 +- 0.7 s); brightness +-20 s % of the range; Gaussian noise of 0.04 s of the range. At every strength: blur
    on half the images (sigma up to 1/24 of the side) and, on half the images, a patch of one random colour over
    5-40% of it.
    """
    s, seeds = params["strength"], _seeds(seed)
    return _pipeline(
        "robust",
        [
            *_orientation(seeds),
            *_hue_saturation(s, seeds),
            _contrast(ROBUST_CONTRAST * s, seeds),
            _brightness(0.2 * s, seeds),
            _blur(1.0, image_size, seeds, ROBUST_BLUR_REACH),
            _noise(ROBUST_NOISE * s, seeds),
            RandomOcclusion(ROBUST_OCCLUSION_RATE, ROBUST_OCCLUSION_AREA, seed=next(seeds), dtype=DTYPE),
        ],
    )
