import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import pytest

from bcauto import plugins


@pytest.fixture
def tiny_plugin():
    """The test backbone ``tiny_pretrained`` registered for one test."""
    from helpers import TinyPlugin

    plugins.register_plugin(TinyPlugin(), "tests:tiny")
    try:
        yield plugins.components()
    finally:
        plugins.unregister_plugin("tests:tiny")


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """(a folder for the module's files, a small classifier's model directory): the model ``bcauto adapt`` and
    ``bcauto suggest`` are tested on (tests/adapt_models.py), trained once per test module."""
    from adapt_models import trained_parent

    root = tmp_path_factory.mktemp("adapt")
    return root, trained_parent(root)
