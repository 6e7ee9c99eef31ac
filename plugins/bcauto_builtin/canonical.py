"""Built-in input canonicalizers: one standard look for every image, whichever lab, stain or camera made it.

- ``stain_norm``: Reinhard's colour transfer in CIELAB: each image's per-channel mean and spread are moved to
  those of a reference style (the PBC/CellaVision May-Grünwald-Giemsa look), so a pale, blue-violet or
  yellow-cast smear reaches the network in the colours it learned from.
- ``cell_crop``: finds the white cell by its nucleus (the darkest, bluest pixels of the image) and
  zooms so that it sits in the centre at a canonical size (its nucleus's median distance from its centre a fixed
  fraction of the side), so another microscope's magnification or an
  off-centre crop reaches the network at the scale it learned from.
- ``cell_crop_stain_norm``: both, crop first, so the colour statistics are those of the canonical window.

They are Keras layers inside the model (in front of the backbone, after the augmentation), so search, refit,
evaluate and predict apply exactly the same transform and it is saved with the model. The colour conversions
follow scikit-image's ``rgb2lab``/``lab2rgb`` (same constants, imported from it; the tests compare
the two), written in ``keras.ops`` because scikit-image runs on NumPy arrays, outside the model graph.

This module registers them without importing Keras; the layers are in :mod:`bcauto_builtin.canonical_layers`.
"""

from __future__ import annotations

from bcauto import hookimpl
from bcauto.specs import CanonicalizerSpec
from bcauto_builtin import lazy

_LAYERS = "bcauto_builtin.canonical_layers"
build_stain_norm = lazy(_LAYERS, "build_stain_norm")
build_cell_crop = lazy(_LAYERS, "build_cell_crop")
build_cell_crop_stain_norm = lazy(_LAYERS, "build_cell_crop_stain_norm")


# how the nucleus spread that sets the zoom is measured (canonical_layers.nucleus_centre_and_spread): the median
# distance, which stain deposits and a zoomed-out field's other cells move little (bench/RESULTS.md, "the cell
# finder's spread"). Logged with each trial's parameters; models saved before it existed measured "rms".
SPREAD_ESTIMATE = "median"


def crop_space(trial) -> dict:
    """``strength``: how much of the zoom correction to apply (0.5: its square root; 1: all of it)."""
    return {"strength": trial.suggest_float("strength", 0.5, 1.0), "spread_estimate": SPREAD_ESTIMATE}


def build_none(params: dict, image_size: int) -> None:
    return None


@hookimpl
def load_keras_objects():
    from bcauto_builtin import canonical_layers  # noqa: F401  (registers StainNormalization, CellCentredCrop)


@hookimpl
def register_canonicalizers(register):
    register(CanonicalizerSpec("none", build_none, description="images reach the backbone as loaded"))
    register(
        CanonicalizerSpec("stain_norm", build_stain_norm, description="Reinhard colour transfer (CIELAB) to the PBC/MGG reference style")
    )
    register(
        CanonicalizerSpec(
            "cell_crop", build_cell_crop, crop_space, description="centred on the white cell's nucleus, zoomed to a canonical size"
        )
    )
    register(CanonicalizerSpec("cell_crop_stain_norm", build_cell_crop_stain_norm, crop_space, description="cell_crop, then stain_norm"))
