"""Layers the built-in augmentation policies need beyond Keras 3.15's own, or in place of a flawed one.

All are registered under the ``bcauto`` package: a saved model that contains them loads with
``safe_mode=True`` once this module is imported (loading the bcauto plugins imports it).
"""

from __future__ import annotations

import keras
from keras.src.utils import backend_utils

# Left out of the candidate operations: translation moves the cell off centre, and in keras 3.15
# posterization and solarization grow stronger as ``factor`` shrinks (posterize keeps 1 to int(8 * factor) - 1
# bits, so 1 bit below 0.375; solarize inverts every pixel above a threshold drawn under 255 * factor), so
# the small factors a cell needs binarise or invert the stain colours.
CELL_SAFE_OPS = (
    "random_shear",
    "random_rotation",
    "random_brightness",
    "random_color_degeneration",
    "random_contrast",
    "random_sharpness",
    "auto_contrast",
    "equalization",
)


@keras.saving.register_keras_serializable(package="bcauto")
class CellRandAugment(keras.layers.RandAugment):
    """:class:`keras.layers.RandAugment` restricted to :data:`CELL_SAFE_OPS`."""

    _AUGMENT_LAYERS = list(CELL_SAFE_OPS)


@keras.saving.register_keras_serializable(package="bcauto")
class CellAugMix(keras.layers.AugMix):
    """:class:`keras.layers.AugMix` over :data:`CELL_SAFE_OPS`, with each chain's operations drawn per batch.

    Keras's AugMix picks the operations with Python's ``random`` while the graph is traced, so inside
    ``model.fit`` every batch of a run gets the same operations; here they are drawn in the graph and the
    chosen one runs through a switch, as the mixing weights already were.
    """

    def __init__(self, **kwargs):
        kwargs["all_ops"] = True  # brightness, contrast, colour and sharpness are among the safe ops
        super().__init__(**kwargs)
        self._augment_layers = list(CELL_SAFE_OPS)

    def get_random_transformation(self, data, training=True, seed=None):
        if not training:
            return None
        if backend_utils.in_tf_graph():
            self.backend.set_backend("tensorflow")
            for name in self._augment_layers:
                getattr(self, name).backend.set_backend("tensorflow")
        seed = seed or self._get_seed_generator(self.backend._backend)
        # one index past the last operation means "skip this step": chains are up to chain_depth long
        choices = self.backend.random.randint(
            (self.num_chains, self.chain_depth), 0, len(self._augment_layers) + 1, seed=seed
        )
        steps = [
            [{name: getattr(self, name).get_random_transformation(data, seed=seed) for name in self._augment_layers}
             for _ in range(self.chain_depth)]
            for _ in range(self.num_chains)
        ]
        return {
            "chain_mixing_weights": self._sample_from_dirichlet([self.num_chains], self.alpha, seed),
            "weight_sample": self.backend.random.beta(shape=(), alpha=self.alpha, beta=self.alpha, seed=seed),
            "choices": choices,
            "steps": steps,
        }

    def _apply_step(self, images, choice, step):
        def branch(name):
            return lambda x: getattr(self, name).transform_images(x, step[name])

        branches = [branch(name) for name in self._augment_layers] + [lambda x: x]
        return self.backend.core.switch(choice, branches, images)

    def transform_images(self, images, transformation, training=True):
        images = self.backend.cast(images, self.compute_dtype)
        if not training or transformation is None:
            return images
        weights = self.backend.cast(transformation["chain_mixing_weights"], self.compute_dtype)
        keep = self.backend.cast(transformation["weight_sample"], self.compute_dtype)
        mixed = self.backend.numpy.zeros_like(images)
        for chain in range(self.num_chains):
            chained = images
            for depth in range(self.chain_depth):
                chosen = transformation["choices"][chain, depth]
                chained = self._apply_step(chained, chosen, transformation["steps"][chain][depth])
            mixed += self.backend.cast(chained, self.compute_dtype) * weights[chain]
        images = keep * images + (1 - keep) * mixed
        return self.backend.numpy.clip(images, self.value_range[0], self.value_range[1])


@keras.saving.register_keras_serializable(package="bcauto")
class PixelNoise(keras.layers.Layer):
    """Additive Gaussian noise in pixel units, in training only.

    ``keras.layers.GaussianNoise`` refuses a ``stddev`` above 1, a third of one grey level on [0, 255] images.
    """

    def __init__(self, stddev: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.stddev = float(stddev)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=False):
        if not training:
            return inputs
        noise = keras.random.normal(keras.ops.shape(inputs), stddev=self.stddev, dtype=self.compute_dtype,
                                    seed=self.seed_generator)
        return keras.ops.cast(inputs, self.compute_dtype) + noise

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}


@keras.saving.register_keras_serializable(package="bcauto")
class RandomTranspose(keras.layers.Layer):
    """Swaps the height and width axes of half the images (square, channels-last), in training only.

    After ``RandomFlip("horizontal_and_vertical")`` this makes each of the square's 8 symmetries equally
    likely: rotations by quarter turns with no interpolation and no filled corners. Unlike
    ``RandomRotation``, it compiles with XLA.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        if input_shape[1] != input_shape[2]:
            raise ValueError(f"RandomTranspose needs square images, got shape {input_shape}")

    def call(self, inputs, training=False):
        if not training:
            return inputs
        swap = keras.random.uniform((keras.ops.shape(inputs)[0], 1, 1, 1), seed=self.seed_generator) < 0.5
        return keras.ops.where(swap, keras.ops.transpose(inputs, (0, 2, 1, 3)), inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
