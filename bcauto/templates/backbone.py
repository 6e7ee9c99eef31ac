"""``bcauto new-plugin backbone``: a two-block CNN trained from scratch."""

USAGE = 'in a study file\'s [search] table, `backbone = ["$name"]`, with [train] `weights = "none"`.'

MODULE = '''\
"""$package: the backbone $name for bcauto."""

import keras
from keras import layers

from bcauto import hookimpl
from bcauto.specs import BackboneSpec


def build(input_shape, weights=None, width=16):
    """Two conv blocks; ``weights`` is always None, since the spec lists no pretrained weight set."""
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for i in (1, 2):
        x = layers.Conv2D(width * i, 3, padding="same", activation="relu", name=f"block{i}_conv")(x)
        x = layers.MaxPooling2D(2, name=f"block{i}_out")(x)
    return keras.Model(inputs, x, name="$name")


def search_space(trial):
    """The backbone's own hyperparameters, suggested under plain names.

    bcauto prefixes them with the component's name in Optuna (``$name.width``, which a study file narrows or
    fixes in a ``[search.$name]`` table) and with its kind in the trial's record (``backbone.width`` in
    MLflow, the leaderboard and ``bcauto best``).
    """
    return {"width": trial.suggest_categorical("width", [8, 16])}


@hookimpl
def register_backbones(register):
    register(BackboneSpec(
        name="$name", build=build, preprocessing="unit", blocks=("block1_out", "block2_out"),
        min_input_size=8, default_input_size=32, search_space=search_space,
        description="two conv blocks, trained from scratch",
    ))
'''

THIRD_PARTY_IMPORTS = '''\
import numpy as np
from optuna.trial import FixedTrial

'''

BCAUTO_IMPORTS = '''\
from bcauto.model import build_backbone, set_trainable_blocks
from bcauto.testing import check_backbone
'''

TEST = '''\
def test_component_works():
    spec = component()
    check_backbone(spec)  # bcauto's plugin contract, as bcauto checks its own backbones
    params = spec.search_space(FixedTrial({"width": 8}))
    model = build_backbone(spec, 32, weights=None, params=params)
    features = model(np.zeros((2, 32, 32, 3), "float32"))
    assert features.shape[0] == 2 and len(features.shape) == 4
    assert set_trainable_blocks(spec, model, "all") == len(spec.blocks)
'''
