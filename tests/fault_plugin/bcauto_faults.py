"""Backbones that fail on purpose, one way each, for the reliability tests (loaded through an entry point)."""

import os
import signal
import time

import keras
import numpy as np

from bcauto import hookimpl
from bcauto.specs import BackboneSpec

_hog = []


def _small(input_shape):
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Conv2D(4, 3, padding="same", name="b1_out")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="b2_out")(x)
    return inputs, x


def build_raises(input_shape, weights=None):
    raise RuntimeError("this backbone always fails to build")


def build_kills(input_shape, weights=None):
    os.kill(os.getpid(), signal.SIGKILL)


def build_nan(input_shape, weights=None):
    inputs, x = _small(input_shape)
    x = keras.layers.Lambda(lambda t: t * float("nan"), name="b3_out")(x)
    return keras.Model(inputs, x)


def build_hog(input_shape, weights=None):
    _hog.append(np.ones(int(os.environ.get("BCAUTO_TEST_HOG_MB", "3000")) * 2**20, dtype=np.uint8))
    time.sleep(30)
    inputs, x = _small(input_shape)
    return keras.Model(inputs, x)


def _spec(name, build, blocks=("b1_out", "b2_out")):
    return BackboneSpec(
        name=name, build=build, preprocessing="unit", blocks=blocks, min_input_size=8, description=f"fails on purpose: {name}"
    )


@hookimpl
def register_backbones(register):
    register(_spec("fault_raises", build_raises))
    register(_spec("fault_kills", build_kills))
    register(_spec("fault_nan", build_nan, ("b1_out", "b2_out", "b3_out")))
    register(_spec("fault_hog", build_hog))
