"""``bcauto new-plugin augmentation``: random flips and a brightness jitter of searched strength."""

USAGE = 'in a study file\'s [search] table, `augmentation = ["$name"]`.'

MODULE = '''\
"""$package: the augmentation policy $name for bcauto."""

import keras
from keras import layers

from bcauto import hookimpl
from bcauto.specs import AugmentationSpec


def search_space(trial):
    """The policy's own hyperparameters, suggested under plain names.

    bcauto prefixes them with the component's name in Optuna (``$name.brightness``, which a study file narrows
    or fixes in a ``[search.$name]`` table) and with its kind in the trial's record (``augmentation.brightness``
    in MLflow, the leaderboard and ``bcauto best``).
    """
    return {"brightness": trial.suggest_float("brightness", 0.0, 0.3)}


def build(params, image_size, seed):
    """Flips and a brightness jitter of float images in [0, 255]; Keras applies them only in training."""
    # float32 whatever the global policy, like the built-in policies: mixed precision starts at the backbone
    return keras.Sequential([
        layers.RandomFlip("horizontal_and_vertical", seed=seed, dtype="float32"),
        layers.RandomBrightness(params["brightness"], value_range=(0.0, 255.0), seed=seed, dtype="float32"),
    ], name="$name")


@hookimpl
def register_augmentations(register):
    register(AugmentationSpec(
        name="$name", build=build, search_space=search_space,
        description="random flips and a brightness jitter of up to brightness x 255",
    ))
'''

THIRD_PARTY_IMPORTS = '''\
import numpy as np
from optuna.trial import FixedTrial

'''

BCAUTO_IMPORTS = '''\
from bcauto.testing import check_augmentation
'''

TEST = '''\
def test_component_works():
    spec = component()
    check_augmentation(spec)  # bcauto's plugin contract, as bcauto checks its own policies
    layer = spec.build(spec.search_space(FixedTrial({"brightness": 0.2})), 32, 0)
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    augmented = np.asarray(layer(images, training=True))
    assert augmented.shape == images.shape
    assert -1e-3 <= augmented.min() and augmented.max() <= 255 + 1e-3
'''
