"""The feature cache: pooled backbone features computed once and shared by every trial that can use them.

A frozen pretrained backbone maps the same image to the same features in every trial, so the head phase
only needs them once per (backbone, weights, image size, preprocessing, data, split). Files are written to
a temporary name and renamed into place, so several workers filling the cache at once never see half a file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from bcauto.files import written_whole

CACHE_VERSION = 1


def cache_key(parts: dict) -> str:
    """A stable hash of everything that determines the cached arrays."""
    payload = json.dumps({"v": CACHE_VERSION, "keras": keras.__version__, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


class FeatureCache:
    """Arrays on disk under ``root``, keyed by :func:`cache_key`; safe for concurrent writers."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def get_or_compute(self, parts: dict, compute: Callable[[], dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], bool]:
        """The arrays for ``parts``, computed and stored on a miss; also whether it was a hit."""
        path = self.path(cache_key(parts))
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as stored:
                    return {name: stored[name] for name in stored.files}, True
            except (OSError, ValueError):
                pass  # a damaged file is recomputed and replaced
        arrays = compute()
        self.root.mkdir(parents=True, exist_ok=True)
        with written_whole(path) as staged:
            np.savez(staged, **arrays)
        return arrays, False


def pooled_features(backbone: keras.Model, images: np.ndarray, batch_size: int, augment: keras.layers.Layer | None = None) -> np.ndarray:
    """Global-average-pooled backbone features of uint8 ``images`` (optionally augmented first), float32."""
    pool = keras.layers.GlobalAveragePooling2D()

    @tf.function
    def embed(batch):
        x = tf.cast(batch, tf.float32)
        if augment is not None:
            x = augment(x, training=True)
        return tf.cast(pool(backbone(x, training=False)), tf.float32)

    batches = tf.data.Dataset.from_tensor_slices(images).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    return (
        np.concatenate([embed(batch).numpy() for batch in batches]) if len(images) else np.zeros((0, backbone.output_shape[-1]), np.float32)
    )
