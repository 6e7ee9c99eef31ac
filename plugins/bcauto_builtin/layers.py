"""Layers the built-in augmentation policies need beyond Keras 3.15's own, or in place of a flawed one.

All are registered under the ``bcauto`` package: a saved model that contains them loads with
``safe_mode=True`` once this module is imported (loading the bcauto plugins imports it).
"""

from __future__ import annotations

import math

import keras
from keras.src.utils import backend_utils
from skimage.color.colorconv import hed_from_rgb, rgb_from_hed

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
        choices = self.backend.random.randint((self.num_chains, self.chain_depth), 0, len(self._augment_layers) + 1, seed=seed)
        steps = [
            [
                {name: getattr(self, name).get_random_transformation(data, seed=seed) for name in self._augment_layers}
                for _ in range(self.chain_depth)
            ]
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
class ReflectedGaussianBlur(keras.layers.RandomGaussianBlur):
    """:class:`keras.layers.RandomGaussianBlur` with the image's edge reflected instead of padded with zeros, and
    blurred one axis at a time.

    Keras 3.15 blurs with a zero-padded convolution, which darkens every blurred image towards its border (near
    sigma 1 with a 5-pixel kernel, the outer row of a plain field loses 28% and a fifth of a 40x40 image is
    darkened): a frame the model learns and no microscope draws. A lens blurs a field that goes on past the
    frame, which reflection imitates, as the ``defocus_blur`` shift does.

    Keras convolves with the whole k x k kernel; a Gaussian is the product of one along each axis, so two passes
    of k taps give the same image for 2k multiplications a pixel instead of k squared (the 17-pixel kernel
    ``robust`` uses at 96 x 96 cost more than the rest of a training step on a CPU: bench/augmentation_speed.py).
    Same random draws as Keras's layer: the same seed blurs the same images with the same sigmas.
    """

    def transform_images(self, images, transformation=None, training=True):
        if not training or transformation is None:
            return super().transform_images(images, transformation, training)
        if len(images.shape) == 3:  # one image: the padding below is written for a batch
            return self.transform_images(images[None], transformation, training)[0]
        images = self.backend.cast(images, self.compute_dtype)
        blurred = self._blur(images, transformation["blur_factor"])
        chosen = self.backend.numpy.where(transformation["should_apply_blur"][:, None, None, None], blurred, images)
        return self.backend.numpy.clip(chosen, self.value_range[0], self.value_range[1])

    def _blur(self, images, sigma):
        """Reflect-pad by half the kernel, then a valid convolution down the rows and one along the columns.
        Keras's kernel is the outer product of a row kernel with ``sigma[1]`` and a column kernel with ``sigma[0]``."""
        rows, columns = self.kernel_size
        channels_last = self.data_format == "channels_last"
        spatial = [[rows // 2, rows // 2], [columns // 2, columns // 2]]
        padded = self.backend.numpy.pad(images, [[0, 0], *spatial, [0, 0]] if channels_last else [[0, 0], [0, 0], *spatial], mode="reflect")
        channels = self.backend.shape(images)[-1 if channels_last else 1]
        down_rows = self._kernel(rows, sigma[1], (rows, 1), channels)
        along_columns = self._kernel(columns, sigma[0], (1, columns), channels)
        for kernel in (down_rows, along_columns):
            padded = self.backend.nn.depthwise_conv(padded, kernel, strides=1, padding="valid", data_format=self.data_format)
        return padded

    def _kernel(self, size: int, sigma, shape: tuple[int, int], channels: int):
        """A normalized 1-D Gaussian of ``size`` taps as a depthwise kernel of ``shape`` for every channel."""
        ops = self.backend
        offsets = ops.numpy.arange(size, dtype=self.compute_dtype) - (size - 1) / 2
        taps = ops.numpy.exp(-0.5 * (offsets / ops.cast(sigma, self.compute_dtype)) ** 2)
        taps = taps / ops.numpy.sum(taps)
        return ops.numpy.tile(ops.numpy.reshape(taps, (*shape, 1, 1)), (1, 1, channels, 1))


class SeededAugmentation(keras.layers.Layer):
    """Base of the random layers below: seeded, they change images only in training and keep their shape.

    A subclass draws with ``self.seed_generator`` in ``augment``, and adds its own fields to ``get_config``.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        return self.augment(inputs) if training else inputs

    def augment(self, inputs):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="bcauto")
class PixelNoise(SeededAugmentation):
    """Additive Gaussian noise in pixel units, in training only.

    ``keras.layers.GaussianNoise`` refuses a ``stddev`` above 1, a third of one grey level on [0, 255] images.
    """

    def __init__(self, stddev: float, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.stddev = float(stddev)
        self.supports_masking = True

    def augment(self, inputs):
        noise = keras.random.normal(keras.ops.shape(inputs), stddev=self.stddev, dtype=self.compute_dtype, seed=self.seed_generator)
        return keras.ops.cast(inputs, self.compute_dtype) + noise

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev}


@keras.saving.register_keras_serializable(package="bcauto")
class RandomOcclusion(SeededAugmentation):
    """A square patch of one random colour over part of the image, in training only: debris, a label, a fibre.

    Each image is occluded with probability ``rate``; the patch covers a fraction of the image drawn from
    U(``area``), at a uniformly random position, in a colour uniform over the RGB cube. ``keras.layers.
    RandomErasing`` fills with Gaussian noise and sizes its patch per side, so a patch of a fifth of the image
    is rare and never of one flat colour.
    """

    def __init__(self, rate: float, area: tuple[float, float] = (0.05, 0.4), seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"need 0 <= rate <= 1, got {rate}")
        if not 0.0 < area[0] <= area[1] <= 1.0:
            raise ValueError(f"need 0 < area[0] <= area[1] <= 1, got {area}")
        self.rate = float(rate)
        self.area = (float(area[0]), float(area[1]))

    def augment(self, inputs):
        ops = keras.ops
        images = ops.cast(inputs, self.compute_dtype)
        batch, height, width = ops.shape(images)[0], ops.shape(images)[1], ops.shape(images)[2]
        draw = keras.random.uniform((batch, 4), dtype=self.compute_dtype, seed=self.seed_generator)
        occluded = draw[:, 0] < self.rate
        fraction = self.area[0] + (self.area[1] - self.area[0]) * draw[:, 1]
        side_h = ops.sqrt(fraction) * ops.cast(height, self.compute_dtype)
        side_w = ops.sqrt(fraction) * ops.cast(width, self.compute_dtype)
        top = draw[:, 2] * (ops.cast(height, self.compute_dtype) - side_h)
        left = draw[:, 3] * (ops.cast(width, self.compute_dtype) - side_w)
        rows = ops.cast(ops.arange(height), self.compute_dtype)[None, :, None]
        cols = ops.cast(ops.arange(width), self.compute_dtype)[None, None, :]
        inside = (
            (rows >= top[:, None, None])
            & (rows < (top + side_h)[:, None, None])
            & (cols >= left[:, None, None])
            & (cols < (left + side_w)[:, None, None])
            & occluded[:, None, None]
        )
        colour = keras.random.uniform((batch, 1, 1, 3), 0.0, 255.0, dtype=self.compute_dtype, seed=self.seed_generator)
        return ops.where(inside[..., None], colour, images)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "area": self.area}


@keras.saving.register_keras_serializable(package="bcauto")
class RandomTranspose(SeededAugmentation):
    """Swaps the height and width axes of half the images (square, channels-last), in training only.

    After ``RandomFlip("horizontal_and_vertical")`` this makes each of the square's 8 symmetries equally
    likely: rotations by quarter turns with no interpolation and no filled corners. Unlike
    ``RandomRotation``, it compiles with XLA.
    """

    def build(self, input_shape):
        if input_shape[1] != input_shape[2]:
            raise ValueError(f"RandomTranspose needs square images, got shape {input_shape}")

    def augment(self, inputs):
        swap = keras.random.uniform((keras.ops.shape(inputs)[0], 1, 1, 1), seed=self.seed_generator) < 0.5
        return keras.ops.where(swap, keras.ops.transpose(inputs, (0, 2, 1, 3)), inputs)


# scikit-image's stain matrices (Ruifrok and Johnston's H, E and DAB vectors), as plain lists for the graph
RGB_FROM_HED = rgb_from_hed.tolist()
HED_FROM_RGB = hed_from_rgb.tolist()
# scikit-image floors intensities in [0, 1] at this before the log, and divides optical densities by its log
INTENSITY_FLOOR = 1e-6


@keras.saving.register_keras_serializable(package="bcauto")
class RandomHEDJitter(SeededAugmentation):
    """Tellez et al.'s HED stain augmentation, drawn per image, in training only.

    Each image in [0, 255] is turned into optical densities, unmixed into haematoxylin, eosin and DAB
    concentrations with scikit-image's ``hed_from_rgb``, and each concentration ``c`` becomes
    ``c * alpha + beta`` with ``alpha ~ U(1 - sigma, 1 + sigma)`` and ``beta ~ U(-bias, bias)`` drawn per
    image and stain; the result is mixed back with ``rgb_from_hed`` and clipped to [0, 255].

    The maths is ``skimage.color.rgb2hed`` / ``hed2rgb`` (intensities floored at 1e-6, output clipped) with
    two differences. Concentrations are in optical density units, ``-ln(I / I0)``, so ``bias`` is an optical
    density: scikit-image's are these divided by ``-ln(1e-6)`` (about 13.8). And negative concentrations are
    kept, where ``rgb2hed`` sets them to 0: pale and off-palette pixels (the smear background among them)
    unmix to some, so zeroing them would change the image even with no jitter. Here ``sigma = bias = 0``
    returns the image (up to float32 rounding), and on pixels whose concentrations are all non-negative
    the layer equals ``hed2rgb(rgb2hed(x) * alpha + beta / 13.8)``.
    """

    def __init__(self, sigma: float, bias: float, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not 0.0 <= sigma < 1.0 or bias < 0.0:
            raise ValueError(f"need 0 <= sigma < 1 and bias >= 0, got sigma={sigma}, bias={bias}")
        self.sigma = float(sigma)
        self.bias = float(bias)

    def jitter(self, images, alpha, beta):
        """The images with each stain concentration scaled by ``alpha`` and shifted by ``beta``.

        ``alpha`` and ``beta`` broadcast against ``(batch, height, width, 3)``, the last axis H, E, D.
        """
        ops, dtype = keras.ops, self.compute_dtype
        intensity = ops.maximum(ops.cast(images, dtype) / 255.0, INTENSITY_FLOOR)
        density = -ops.log(intensity)
        stains = ops.matmul(density, ops.convert_to_tensor(HED_FROM_RGB, dtype=dtype))
        stains = stains * ops.cast(alpha, dtype) + ops.cast(beta, dtype)
        density = ops.matmul(stains, ops.convert_to_tensor(RGB_FROM_HED, dtype=dtype))
        return ops.clip(ops.exp(-density) * 255.0, 0.0, 255.0)

    def augment(self, inputs):
        draws = (keras.ops.shape(inputs)[0], 1, 1, 3)
        alpha = keras.random.uniform(draws, 1.0 - self.sigma, 1.0 + self.sigma, dtype=self.compute_dtype, seed=self.seed_generator)
        beta = keras.random.uniform(draws, -self.bias, self.bias, dtype=self.compute_dtype, seed=self.seed_generator)
        return self.jitter(inputs, alpha, beta)

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma, "bias": self.bias}


@keras.saving.register_keras_serializable(package="bcauto")
class RandomWhiteBalance(SeededAugmentation):
    """A colour cast per image, in training only: each channel times a gain from U(1 - factor, 1 + factor).

    The three gains of an image are divided by their mean, so a grey keeps its brightness and only its
    tint changes (a lamp's colour temperature, a camera's white balance). Output clipped to [0, 255].
    """

    def __init__(self, factor: float, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not 0.0 <= factor < 1.0:
            raise ValueError(f"need 0 <= factor < 1, got {factor}")
        self.factor = float(factor)

    def augment(self, inputs):
        ops = keras.ops
        gains = keras.random.uniform(
            (ops.shape(inputs)[0], 1, 1, 3), 1.0 - self.factor, 1.0 + self.factor, dtype=self.compute_dtype, seed=self.seed_generator
        )
        gains = gains / ops.mean(gains, axis=-1, keepdims=True)
        return ops.clip(ops.cast(inputs, self.compute_dtype) * gains, 0.0, 255.0)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="bcauto")
class RandomMagnification(SeededAugmentation):
    """Shows each image's centre at another magnification, per image, in training only (square images).

    The scale (the cell's size on the output over its size on the input) is log-uniform in
    ``[1 / max_zoom, max_zoom]``, so halving and doubling are equally likely. Zooming out needs pixels
    beyond the image: they come from the image's outer ``border`` (a fraction of the side) mirrored again
    and again, smear background and the edges of neighbouring red cells, never the centred cell.
    ``keras.layers.RandomZoom(fill_mode="reflect")`` mirrors the whole image, so past a scale of about 2/3
    its borders show mirrored copies of the cell itself. Bilinear sampling; not XLA-compatible.
    """

    def __init__(self, max_zoom: float, border: float = 0.125, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not 1.0 <= max_zoom <= 4.0 or not 0.0 < border <= 0.5:
            raise ValueError(f"need 1 <= max_zoom <= 4 and 0 < border <= 0.5, got {max_zoom}, {border}")
        self.max_zoom = float(max_zoom)
        self.border = float(border)

    def build(self, input_shape):
        if input_shape[1] != input_shape[2] or input_shape[1] is None:
            raise ValueError(f"RandomMagnification needs square images of known size, got shape {input_shape}")

    def _padded(self, images, side: int):
        """The images with their outer band mirrored outwards until a zoom of ``max_zoom`` stays inside."""
        band = max(1, round(self.border * side))
        needed = math.ceil((self.max_zoom - 1.0) * (side - 1) / 2) + 1
        padded = 0
        while padded < needed:
            width = min(band, needed - padded)
            images = keras.ops.pad(images, ((0, 0), (width, width), (width, width), (0, 0)), mode="symmetric")
            padded += width
        return images, padded

    def augment(self, inputs):
        ops = keras.ops
        side = inputs.shape[1]
        images = ops.cast(inputs, self.compute_dtype)
        padded, pad = self._padded(images, side)
        log_zoom = math.log(self.max_zoom)
        scale = ops.exp(keras.random.uniform((ops.shape(inputs)[0], 1), -log_zoom, log_zoom, dtype="float32", seed=self.seed_generator))
        zoom = 1.0 / scale  # input pixels per output pixel
        # output pixel (x, y) samples the padded image at centre + zoom * (x - centre) on each axis
        centre = (side - 1) / 2
        offset = centre + pad - zoom * centre
        zeros = ops.zeros_like(zoom)
        transform = ops.concatenate([zoom, zeros, offset, zeros, zoom, offset, zeros, zeros], axis=1)
        out = ops.image.affine_transform(padded, transform, interpolation="bilinear", fill_mode="reflect")
        return ops.cast(out[:, :side, :side, :], self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "max_zoom": self.max_zoom, "border": self.border}
