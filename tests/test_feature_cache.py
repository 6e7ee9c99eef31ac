"""The feature cache and the cached fine-tune: same results as training on images, and never stale."""

import dataclasses

import keras
import numpy as np
import pytest
from helpers import blob_data

from bcauto.data import Dataset
from bcauto.data.split import stratified_split
from bcauto.feature_cache import FeatureCache, cache_key
from bcauto.model import HeadParams
from bcauto.training import TrainSettings, TrialPlan, train

TOLERANCE = 2e-3  # absolute, on per-epoch losses: the features differ only by float rounding


@pytest.fixture(scope="module")
def data():
    full = blob_data(160, 32, seed=4)
    split = stratified_split(full, 0.25, seed=0)
    return full.subset(split.train), full.subset(split.val)


def plan_for(comps, augmentation="none", unfreeze=1, backbone=None):
    return TrialPlan(
        backbone=backbone or comps.backbones.get("tiny_pretrained"),
        augmentation=comps.augmentations.get(augmentation),
        imbalance=comps.imbalance.get("class_weights"),
        head=HeadParams(32, 16, 0.2, 1e-5),
        lr_head=2e-3,
        lr_finetune=5e-4,
        unfreeze_blocks=unfreeze,
        augmentation_params={"strength": 0.5} if augmentation == "stain" else {},
    )


def settings(cache_dir=None, finetune=0, views=0, activation_gb=4.0):
    return TrainSettings(
        batch_size=16,
        head_epochs=3,
        finetune_epochs=finetune,
        patience=99,
        weights="imagenet",
        seed=1,
        jit_compile=False,
        cache_dir=cache_dir,
        augmented_views=views,
        activation_cache_gb=activation_gb,
    )


def losses(result):
    return [(e["loss"], e["val_loss"]) for e in result.history]


def test_cached_head_phase_matches_training_on_images(tiny_plugin, data, tmp_path):
    online = train(plan_for(tiny_plugin), settings(None), *data)
    cached = train(plan_for(tiny_plugin), settings(str(tmp_path)), *data)
    assert online.modes["head"] == "online" and cached.modes["head"] == "cached"
    assert np.allclose(losses(online), losses(cached), atol=TOLERANCE), (losses(online), losses(cached))


def test_cached_fine_tune_matches_fine_tuning_on_images(tiny_plugin, data, tmp_path):
    online = train(plan_for(tiny_plugin), settings(None, finetune=2, activation_gb=0.0), *data)
    cached = train(plan_for(tiny_plugin), settings(str(tmp_path), finetune=2), *data)
    assert online.modes["finetune"] == "online" and cached.modes["finetune"] == "cached_activations"
    assert [e["epoch"] for e in cached.history] == [0, 1, 2, 3, 4]
    assert np.allclose(losses(online), losses(cached), atol=TOLERANCE), (losses(online), losses(cached))


def test_frozen_trial_scores_through_cached_features_like_the_full_model(tiny_plugin, data, tmp_path):
    from bcauto.scoring import predict_batches

    val_data = data[1]
    result = train(plan_for(tiny_plugin), settings(str(tmp_path)), *data)
    assert result.predict is not None
    other = Dataset(val_data.images[::-1].copy(), val_data.labels[::-1].copy(), val_data.class_names, "reversed")
    for subset in (val_data, other):
        assert np.allclose(result.probabilities(subset), predict_batches(result.model, subset.images), atol=1e-4)
    assert len(list(tmp_path.glob("*.npz"))) == 2  # train/val features, and the other set's, stored for the next trial


def test_scoring_uses_the_full_model_once_the_backbone_trained(tiny_plugin, data, tmp_path):
    online = train(plan_for(tiny_plugin), settings(None), *data)
    assert online.predict is None
    tuned = train(plan_for(tiny_plugin), settings(str(tmp_path), finetune=2), *data)
    assert min(e["val_loss"] for e in tuned.history[3:]) < min(e["val_loss"] for e in tuned.history[:3])  # fine-tune kept
    assert tuned.predict is None


def test_cache_is_reused_and_invalidated_by_data_or_preprocessing(tiny_plugin, data, tmp_path):
    train_data, val_data = data

    def run(plan, tr):
        return train(plan, settings(str(tmp_path)), tr, val_data).modes["head_cache"]

    assert run(plan_for(tiny_plugin), train_data) == "miss"
    assert run(plan_for(tiny_plugin), train_data) == "hit"
    changed = train_data.images.copy()
    changed[0, 0, 0, 0] ^= 1
    assert run(plan_for(tiny_plugin), Dataset(changed, train_data.labels, train_data.class_names, "changed")) == "miss"
    other_scale = dataclasses.replace(tiny_plugin.backbones.get("tiny_pretrained"), preprocessing="tf")
    assert run(plan_for(tiny_plugin, backbone=other_scale), train_data) == "miss"
    assert len(list(tmp_path.glob("*.npz"))) == 3


def test_augmented_views_are_cached_per_view_and_named_in_the_mode(tiny_plugin, data, tmp_path):
    result = train(plan_for(tiny_plugin, augmentation="stain"), settings(str(tmp_path), views=2), *data)
    assert result.modes["head"] == "cached_views:2"
    [stored] = tmp_path.glob("*.npz")
    with np.load(stored) as arrays:
        assert arrays["train"].shape[:2] == (2, len(data[0].labels))
        assert not np.allclose(arrays["train"][0], arrays["train"][1])
    assert train(plan_for(tiny_plugin, augmentation="stain"), settings(str(tmp_path)), *data).modes["head"] == "online"


def test_cached_features_are_shared_by_trials_and_recomputed_when_anything_they_depend_on_changes(tiny_plugin, tmp_path):
    """Through train(): the head cache hits when only what the features do not depend on differs (the head, its
    learning rate), and misses when the backbone's parameters, its weights file (or that file's contents), the
    canonicalizer, the mixed-precision policy, the validation images or the augmented views' parameters differ."""
    full = blob_data(48, 16, seed=4)
    split = stratified_split(full, 0.25, seed=0)
    train_data, val_data = full.subset(split.train), full.subset(split.val)
    base = dataclasses.replace(plan_for(tiny_plugin), head=HeadParams(8, 0, 0.0, 0.0))
    one_epoch = dataclasses.replace(settings(str(tmp_path / "cache")), head_epochs=1)

    def head_cache(plan=base, settings=one_epoch, val=val_data):
        return train(plan, settings, train_data, val).modes["head_cache"]

    assert head_cache() == "miss"
    assert head_cache() == "hit"
    assert head_cache(dataclasses.replace(base, head=HeadParams(16, 8, 0.1, 1e-4), lr_head=1e-4)) == "hit"
    assert head_cache(dataclasses.replace(base, backbone_params={"width": 4})) == "miss"
    stain = tiny_plugin.canonicalizers.get("stain_norm")
    assert head_cache(dataclasses.replace(base, canonicalizer=stain)) == "miss"
    weights_file = tmp_path / "tiny.weights.h5"
    weights_file.write_bytes(b"first")
    from_file = dataclasses.replace(one_epoch, weights=str(weights_file))
    assert head_cache(settings=from_file) == "miss"
    weights_file.write_bytes(b"retrained")
    assert head_cache(settings=from_file) == "miss", "a rewritten weights file is new weights"
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        assert head_cache() == "miss"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    other_val = Dataset(val_data.images[::-1].copy(), val_data.labels[::-1].copy(), val_data.class_names, "reversed")
    assert head_cache(val=other_val) == "miss"
    views = dataclasses.replace(one_epoch, augmented_views=1)
    assert head_cache(plan_for(tiny_plugin, "stain"), views) == "miss"
    stronger = dataclasses.replace(plan_for(tiny_plugin, "stain"), augmentation_params={"strength": 0.9})
    assert head_cache(stronger, views) == "miss"


def test_damaged_cache_file_is_recomputed(tmp_path):
    cache = FeatureCache(tmp_path)
    parts = {"k": 1}
    cache.get_or_compute(parts, lambda: {"a": np.ones(3)})
    cache.path(cache_key(parts)).write_bytes(b"not an npz")
    arrays, hit = cache.get_or_compute(parts, lambda: {"a": np.zeros(3)})
    assert not hit and arrays["a"].tolist() == [0, 0, 0]
