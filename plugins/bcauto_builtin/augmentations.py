"""Built-in augmentation policies: none, flip_rotate_zoom (the seed report's), RandAugment, AugMix, MixUp/CutMix, stain, corruption, lab,
robust.

Each image policy is a ``keras.Sequential`` of Keras preprocessing layers ending in a clip to [0, 255]. Its
random layers act only when called with ``training=True``, so the trained model predicts on untouched
images. Every layer runs in float32 whatever the global dtype policy: under mixed precision the float16
cast happens at the backbone, not inside colour-space conversions.

A cell on a smear has no up, down, left or right, so every policy but ``none`` draws one of the square's 8
symmetries (flips and quarter turns, exact and XLA-compatible); only ``flip_rotate_zoom`` adds the report's free
rotation and zoom, and ``lab`` a zoom, which keep Keras from compiling the model with XLA. None translates:
the classified cell must stay centred.

This module registers the policies without importing Keras (TensorFlow takes seconds to start); their
pipelines are built by :mod:`bcauto_builtin.augmentation_pipelines`, imported on the first build.
"""

from __future__ import annotations

from bcauto import hookimpl
from bcauto.specs import AugmentationSpec
from bcauto_builtin import lazy

_PIPELINES = "bcauto_builtin.augmentation_pipelines"
build_flip_rotate_zoom = lazy(_PIPELINES, "build_flip_rotate_zoom")
build_randaugment = lazy(_PIPELINES, "build_randaugment")
build_augmix = lazy(_PIPELINES, "build_augmix")
build_mix_geometry = lazy(_PIPELINES, "build_mix_geometry")
build_mix_batch = lazy(_PIPELINES, "build_mix_batch")
build_stain = lazy(_PIPELINES, "build_stain")
build_corruption = lazy(_PIPELINES, "build_corruption")
build_lab = lazy(_PIPELINES, "build_lab")
build_robust = lazy(_PIPELINES, "build_robust")


# --- none -------------------------------------------------------------------------------------------------


def build_none(params: dict, image_size: int, seed: int | None) -> None:
    """No augmentation layer."""
    return None  # noqa: RET501 - the spec's contract: a layer or None


# --- flip_rotate_zoom -------------------------------------------------------------------------------------


def flip_rotate_zoom_space(trial) -> dict:
    """``strength`` scales every factor of the flip_rotate_zoom policy (1.0 gives the REPORT_* values)."""
    return {"strength": trial.suggest_float("strength", 0.25, 2.0)}


# --- randaugment ------------------------------------------------------------------------------------------


def randaugment_space(trial) -> dict:
    """Operations per image and their magnitude, both kept low for small centred cells."""
    return {"num_ops": trial.suggest_int("num_ops", 1, 3), "factor": trial.suggest_float("factor", 0.05, 0.3)}


# --- augmix -----------------------------------------------------------------------------------------------


def augmix_space(trial) -> dict:
    """``severity``: the magnitude of every operation in the chains."""
    return {"severity": trial.suggest_float("severity", 0.1, 0.6)}


# --- mixup_cutmix -----------------------------------------------------------------------------------------


def mix_space(trial) -> dict:
    """Per-image chances of MixUp and of CutMix (the rest stays unmixed) and their Beta ``alpha``."""
    return {
        "mixup_prob": trial.suggest_float("mixup_prob", 0.1, 0.5),
        "cutmix_prob": trial.suggest_float("cutmix_prob", 0.1, 0.5),
        "alpha": trial.suggest_float("alpha", 0.1, 1.0),
    }


# --- stain ------------------------------------------------------------------------------------------------


def stain_space(trial) -> dict:
    """``strength`` scales every colour jitter together."""
    return {"strength": trial.suggest_float("strength", 0.1, 1.0)}


# --- corruption -------------------------------------------------------------------------------------------


def corruption_space(trial) -> dict:
    """``strength`` scales blur, noise, contrast, brightness and the chance of an occluding patch."""
    return {"strength": trial.suggest_float("strength", 0.1, 1.0)}


# --- lab --------------------------------------------------------------------------------------------------


def lab_space(trial) -> dict:
    """``strength`` scales the colour and blur jitter; ``zoom`` bounds the change of magnification."""
    return {
        "strength": trial.suggest_float("strength", 0.1, 1.0),
        "zoom": trial.suggest_float("zoom", 1.1, 2.0),
    }


# --- robust -----------------------------------------------------------------------------------------------


def robust_space(trial) -> dict:
    """``strength`` scales the colour jitter, contrast, brightness and noise (not the blur's reach nor the occluding patch)."""
    return {"strength": trial.suggest_float("strength", 0.3, 1.0)}


@hookimpl
def load_keras_objects():
    from bcauto_builtin import layers  # noqa: F401  (registers the policies' own layers)


@hookimpl
def register_augmentations(register):
    register(AugmentationSpec("none", build_none, description="no augmentation"))
    register(
        AugmentationSpec(
            "flip_rotate_zoom",
            build_flip_rotate_zoom,
            flip_rotate_zoom_space,
            description="flips, rotation, zoom, brightness and Gaussian noise (the policy of studies/report-reproduction.toml)",
        )
    )
    register(
        AugmentationSpec(
            "randaugment",
            build_randaugment,
            randaugment_space,
            description="flips/quarter turns + RandAugment without translate, posterize, solarize",
        )
    )
    register(
        AugmentationSpec(
            "augmix", build_augmix, augmix_space, description="flips/quarter turns + AugMix over cell-safe operations drawn per batch"
        )
    )
    register(
        AugmentationSpec(
            "mixup_cutmix",
            build_mix_geometry,
            mix_space,
            mixes_labels=True,
            build_batch=build_mix_batch,
            description="flips/quarter turns in the model, MixUp or CutMix per image in tf.data",
        )
    )
    register(
        AugmentationSpec(
            "stain", build_stain, stain_space, description="flips/quarter turns + hue, saturation, contrast and brightness jitter"
        )
    )
    register(
        AugmentationSpec(
            "corruption",
            build_corruption,
            corruption_space,
            description="flips/quarter turns + blur, contrast, brightness, noise, random erasing",
        )
    )
    register(
        AugmentationSpec(
            "lab", build_lab, lab_space, description="flips/quarter turns + zoom, HED stain, white balance, blur, contrast, brightness"
        )
    )
    register(
        AugmentationSpec(
            "robust",
            build_robust,
            robust_space,
            description="flips/quarter turns + stain colour jitter, contrast loss, blur, noise, an occluding patch",
        )
    )
