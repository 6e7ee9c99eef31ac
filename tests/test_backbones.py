"""Every registered backbone builds and runs; unfreezing counts the backbone's own blocks."""

import keras
import numpy as np
import pytest
from plugins_under_test import keras_application_error_builder

from bcauto.errors import BcautoError
from bcauto.model import build_backbone, core_of, set_trainable_blocks
from bcauto.plugins import components

BACKBONES = components().backbones.names()


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_builds_and_runs_forward(name):
    keras.backend.clear_session()
    spec = components().backbones.get(name)
    size = max(spec.min_input_size, 32)
    model = build_backbone(spec, size, weights=None)
    features = model.predict(np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32"), verbose=0)
    assert features.ndim == 4 and features.shape[0] == 2 and features.shape[-1] > 0
    assert np.isfinite(features).all()
    assert spec.preprocessing in ("none", "unit", "tf", "torch", "caffe")
    assert len(spec.blocks) >= 3 and spec.description


@pytest.mark.parametrize("name", ["resnet50", "mini_cnn", "efficientnet_b0"])
def test_unfreezing_counts_blocks_and_keeps_batchnorm_frozen(name):
    keras.backend.clear_session()
    spec = components().backbones.get(name)
    model = build_backbone(spec, max(spec.min_input_size, 32), weights=None)
    trainable_counts = []
    for k in range(len(spec.blocks) + 1):
        assert set_trainable_blocks(spec, model, k) == k
        trainable = [layer for layer in core_of(model).layers if layer.trainable]
        assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
        trainable_counts.append(len(model.trainable_weights))
    assert trainable_counts[0] == 0
    assert trainable_counts == sorted(trainable_counts) and trainable_counts[-1] > trainable_counts[1] > 0
    assert set_trainable_blocks(spec, model, "all") == len(spec.blocks)
    core = core_of(model)
    names = [layer.name for layer in core.layers]
    for k in (1, 2):
        set_trainable_blocks(spec, model, k)
        # the last k blocks are every layer after the end of the block before them
        tail = core.layers[names.index(spec.blocks[-k - 1]) + 1 :]
        expected = {layer.name for layer in tail if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)}
        unfrozen = {layer.name for layer in core.layers if layer.weights and layer.trainable}
        assert expected and unfrozen == expected, f"unfreezing {k} blocks"


def test_too_small_images_are_refused_before_building():
    spec = components().backbones.get("xception")
    with pytest.raises(BcautoError, match=r"'xception' needs images of at least 71x71.*image_size is 32"):
        build_backbone(spec, 32, weights=None)


def test_unavailable_pretrained_weights_name_the_offline_fix():
    with pytest.raises(BcautoError, match=r'could not load .imagenet. weights for FakeNet.*weights = "none"'):
        keras_application_error_builder()((32, 32, 3), "imagenet")
