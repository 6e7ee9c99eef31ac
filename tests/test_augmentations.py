"""The built-in augmentation policies: contract of every registered policy, label mixing, saving, strength."""

import keras
import numpy as np
import optuna
import pytest
import tensorflow as tf
from helpers import blob_data
from skimage.color import hed2rgb, rgb2hed

from bcauto.model import TrainingOnly, assemble
from bcauto.plugins import components
from bcauto.search_space import PrefixedTrial
from bcauto_builtin.layers import (
    CellAugMix,
    RandomHEDJitter,
    RandomMagnification,
    RandomOcclusion,
    RandomWhiteBalance,
    ReflectedGaussianBlur,
)

SIZE, BATCH, CLASSES, SEED = 32, 8, 3, 7
POLICIES = components().augmentations.names()
IMAGE_POLICIES = [name for name in POLICIES if name != "none"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


def policy(name):
    return components().augmentations.get(name)


def sampled_trial(name):
    """A real trial of a seeded study, after the policy suggested its parameters through bcauto's prefixing."""
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=SEED)).ask()
    params = policy(name).search_space(PrefixedTrial(trial, f"{name}."))
    return trial, params


def params_at(name, end):
    """The policy's parameters with every distribution at its ``low`` or ``high`` end."""
    trial, _ = sampled_trial(name)
    fixed = {key: getattr(dist, end) for key, dist in trial.distributions.items()}
    return policy(name).search_space(PrefixedTrial(optuna.trial.FixedTrial(fixed), f"{name}."))


def build(name, params=None):
    return policy(name).build(params if params is not None else sampled_trial(name)[1], SIZE, SEED)


@pytest.fixture(scope="module")
def images():
    """Float32 images in [0, 255] with no symmetry, touching both ends of the range."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (BATCH, SIZE, SIZE, 3)).astype("float32")
    x[0, 0, 0], x[0, 0, 1] = 0.0, 255.0
    return x


@pytest.fixture(scope="module")
def cells():
    """Purple discs centred on a pink background: every symmetry of the square leaves them unchanged."""
    centre = (SIZE - 1) / 2
    yy, xx = np.mgrid[:SIZE, :SIZE]
    disc = ((yy - centre) ** 2 + (xx - centre) ** 2 < (SIZE / 3) ** 2)[..., None]
    image = np.where(disc, [120.0, 60.0, 150.0], [235.0, 205.0, 215.0]).astype("float32")
    return np.repeat(image[None], 2 * BATCH, axis=0)


def test_every_policy_is_registered_with_a_description():
    assert set(POLICIES) >= {"none", "flip_rotate_zoom", "randaugment", "augmix", "mixup_cutmix", "stain", "corruption", "lab", "robust"}
    assert all(policy(name).description and "\n" not in policy(name).description for name in POLICIES)
    assert [name for name in POLICIES if policy(name).mixes_labels] == ["mixup_cutmix"]


@pytest.mark.parametrize("name", POLICIES)
def test_search_space_uses_plain_names(name):
    trial, params = sampled_trial(name)
    assert {f"{name}.{key}" for key in params} == set(trial.params)
    assert len(params) <= 3


def test_none_builds_no_layer():
    assert build("none") is None


@pytest.mark.parametrize("name", IMAGE_POLICIES)
def test_augments_in_training_only_keeping_shape_dtype_and_range(name, images):
    layer = build(name)
    trained = keras.ops.convert_to_numpy(layer(images, training=True))
    assert trained.shape == images.shape and trained.dtype == np.float32
    assert trained.min() >= 0.0 and trained.max() <= 255.0
    assert np.abs(trained - images).mean() > 1.0
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images)


@pytest.mark.parametrize("name", IMAGE_POLICIES)
@pytest.mark.parametrize("end", ["low", "high"])
def test_builds_at_both_ends_of_its_space(name, end, images):
    out = keras.ops.convert_to_numpy(build(name, params_at(name, end))(images[:2], training=True))
    assert out.shape == images[:2].shape and 0.0 <= out.min() and out.max() <= 255.0


@pytest.mark.parametrize("name", IMAGE_POLICIES)
def test_model_with_the_layer_round_trips_through_keras_file(name, images, tmp_path):
    inputs = keras.Input((SIZE, SIZE, 3))
    features = keras.layers.GlobalAveragePooling2D()(build(name)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(CLASSES, activation="softmax")(features))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    assert [type(layer) for layer in loaded.layers[1].layers] == [type(layer) for layer in model.layers[1].layers]


def assembled(name):
    """A classifier around the policy's layer, assembled as every trial's is (:func:`bcauto.model.assemble`)."""
    inputs, features = keras.Input((SIZE, SIZE, 3)), keras.Input((4,))
    backbone = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    head = keras.Model(features, keras.layers.Dense(CLASSES, activation="softmax")(features))
    return assemble(backbone, head, build(name), frozen_inference=False)


def seed_states(model):
    return [np.array(v) for v in model.variables if "seed_generator" in v.path]


@pytest.mark.parametrize("name", IMAGE_POLICIES)
def test_a_model_draws_its_augmentation_only_while_it_trains(name, images):
    # Keras's RandomHue and RandomSaturation draw even at inference: a prediction would then change the
    # augmentation of the next training, and bcauto adapt's result would depend on what was scored before it
    model = assembled(name)
    start = seed_states(model)
    model.predict(images, verbose=0)
    model(images)
    assert all(np.array_equal(a, b) for a, b in zip(start, seed_states(model)))
    model(images, training=True)
    assert not all(np.array_equal(a, b) for a, b in zip(start, seed_states(model))), "training drew no augmentation"


def test_a_model_with_its_augmentation_wrapped_saves_and_loads(images, tmp_path):
    model = assembled("robust")
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert isinstance(loaded.get_layer("augmentation"), TrainingOnly)
    assert [type(layer) for layer in loaded.get_layer("augmentation").layer.layers] == [
        type(layer) for layer in model.get_layer("augmentation").layer.layers
    ]
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def test_under_mixed_precision_the_model_passes_float32_pixels_past_its_augmentation():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")  # as bcauto trains on a GPU
    try:
        passed = TrainingOnly(build("robust"))(keras.Input((SIZE, SIZE, 3)))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert passed.dtype == "float32"  # float16 would round 254.9 to 254.875 before canonicalization


@pytest.mark.parametrize("name", ["flip_rotate_zoom", "stain", "corruption", "lab", "robust"])
def test_strength_grows_the_change(name, cells):
    def change(end):
        out = build(name, params_at(name, end))(cells, training=True)
        return float(np.abs(keras.ops.convert_to_numpy(out) - cells).mean())

    weak, strong = change("low"), change("high")
    assert strong > 2 * weak > 0


def mixed_batches(params, images, count=4):
    labels = keras.utils.to_categorical(np.arange(len(images)) % CLASSES, CLASSES).astype("float32")
    mix = policy("mixup_cutmix").build_batch(params, CLASSES, SEED)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(BATCH).map(mix).repeat(count)
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_mixup_cutmix_mixes_images_and_labels_in_tf_data(images):
    params = {"mixup_prob": 0.5, "cutmix_prob": 0.5, "alpha": 0.5}
    batches = mixed_batches(params, images)
    for x, y in batches:
        assert x.shape == images.shape and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 255.0
        assert y.dtype == np.float32 and y.min() >= 0.0
        np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
    assert any((y.max(axis=1) < 0.99).any() for _, y in batches)
    assert any(np.abs(x - images).mean() > 1.0 for x, _ in batches)


def test_mixup_cutmix_leaves_unmixed_images_with_their_labels(images):
    params = {"mixup_prob": 0.1, "cutmix_prob": 0.1, "alpha": 0.5}
    for x, y in mixed_batches(params, images):
        one_hot = y.max(axis=1) > 1 - 1e-5  # an image mixed with itself keeps its label up to rounding
        untouched = np.all(x == images, axis=(1, 2, 3))
        assert untouched.any() and np.all(one_hot[untouched])


def test_mixup_cutmix_builds_geometry_inside_the_model(images):
    layer = build("mixup_cutmix")
    assert layer is not None
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images)


def square_symmetries(image):
    turns = [np.rot90(image, k) for k in range(4)]
    return turns + [np.flip(turn, axis=0) for turn in turns]


def test_orientation_draws_every_symmetry_of_the_square(images):
    orientation = build("mixup_cutmix")  # nothing but the orientation layers
    out = keras.ops.convert_to_numpy(orientation(np.repeat(images[:1], 64, axis=0), training=True))
    symmetries = square_symmetries(images[0])
    seen = {next((k for k, s in enumerate(symmetries) if np.array_equal(o, s)), None) for o in out}
    assert seen == set(range(8))


def test_augmix_draws_its_operations_on_every_call_of_a_compiled_function(images):
    layer = CellAugMix(value_range=(0, 255), factor=0.3, seed=SEED)
    choices = tf.function(lambda x: layer.get_random_transformation(x, training=True)["choices"])
    drawn = {tuple(choices(images).numpy().ravel()) for _ in range(5)}
    assert len(drawn) > 1


# --- the lab and robust policies' layers ------------------------------------------------------------------

LAB_LAYERS = {
    "hed": lambda seed: RandomHEDJitter(0.2, 0.05, seed=seed),
    "white_balance": lambda seed: RandomWhiteBalance(0.15, seed=seed),
    "magnification": lambda seed: RandomMagnification(2.0, seed=seed),
    "occlusion": lambda seed: RandomOcclusion(1.0, seed=seed),
}
OD_PER_SKIMAGE_UNIT = -np.log(1e-6)  # skimage's rgb2hed divides optical densities by this
BACKGROUND = np.array([235.0, 205.0, 215.0])  # the cells fixture's, outside the disc
DISC = np.array([120.0, 60.0, 150.0])


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def stained(n=4, seed=0):
    """Images mixed by ``hed2rgb`` from non-negative H, E, D concentrations: ``rgb2hed`` sets nothing to 0."""
    hed = np.random.default_rng(seed).uniform(0.0, 0.06, (n, SIZE, SIZE, 3))
    return (hed2rgb(hed) * 255).astype("float32")


def border(x, width=2):
    """The outer ring of pixels of each image, as (batch, pixels, 3)."""
    ring = np.ones(x.shape[1:3], bool)
    ring[width:-width, width:-width] = False
    return x[:, ring]


def test_hed_jitter_without_jitter_returns_the_image(images):
    out = numpy(RandomHEDJitter(0.0, 0.0, seed=SEED)(images, training=True))
    np.testing.assert_allclose(out, images, atol=1e-3)


@pytest.mark.parametrize("alpha, beta", [((1.5, 1.0, 1.0), (0.0, 0.0, 0.0)), ((0.8, 1.2, 1.1), (0.05, -0.03, 0.02))])
def test_hed_jitter_follows_skimage_stain_unmixing(alpha, beta):
    x = stained()
    expected = hed2rgb(rgb2hed(x / 255) * np.array(alpha) + np.array(beta) / OD_PER_SKIMAGE_UNIT) * 255
    out = numpy(RandomHEDJitter(0.2, 0.05, seed=SEED).jitter(x, np.array(alpha), np.array(beta)))
    assert np.abs(expected - x).mean() > 2.0  # the stain change is visible
    np.testing.assert_allclose(out, expected, atol=0.02)


@pytest.mark.parametrize("name", LAB_LAYERS)
def test_lab_layer_leaves_images_alone_in_inference(name, cells):
    np.testing.assert_array_equal(numpy(LAB_LAYERS[name](SEED)(cells, training=False)), cells)


@pytest.mark.parametrize("name", LAB_LAYERS)
def test_lab_layer_draws_per_image_on_every_call_of_a_compiled_function(name, cells):
    layer = LAB_LAYERS[name](SEED)
    augment = tf.function(lambda x: layer(x, training=True))
    first, second = augment(cells).numpy(), augment(cells).numpy()
    assert first.shape == cells.shape and first.dtype == np.float32
    assert 0.0 <= first.min() and first.max() <= 255.0
    # the batch holds one image repeated: per-image draws give as many different outputs
    assert len({o.tobytes() for o in first}) == len(cells)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("name", LAB_LAYERS)
def test_lab_layer_is_seeded_and_round_trips_its_config(name, cells):
    layer = LAB_LAYERS[name](SEED)
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer), safe_mode=True)
    assert type(rebuilt) is type(layer) and rebuilt.get_config() == layer.get_config()
    out = numpy(layer(cells, training=True))
    np.testing.assert_array_equal(numpy(rebuilt(cells, training=True)), out)
    assert not np.array_equal(numpy(LAB_LAYERS[name](SEED + 1)(cells, training=True)), out)


def test_white_balance_casts_colour_and_keeps_grey_brightness():
    grey = np.full((2 * BATCH, 4, 4, 3), 120.0, "float32")
    out = numpy(RandomWhiteBalance(0.15, seed=SEED)(grey, training=True))[:, 0, 0]
    np.testing.assert_allclose(out.mean(axis=1), 120.0, rtol=1e-5)
    assert (out.max(axis=1) - out.min(axis=1)).mean() > 5.0


def test_magnification_zooms_out_with_background_never_black_nor_a_copy_of_the_cell(cells):
    out = numpy(RandomMagnification(2.0, seed=SEED)(cells, training=True))
    disc_pixels = (np.abs(out - DISC).max(axis=-1) < 20).sum(axis=(1, 2))
    original = (np.abs(cells[0] - DISC).max(axis=-1) < 20).sum()
    smaller, larger = disc_pixels < 0.8 * original, disc_pixels > 1.25 * original
    assert smaller.any() and larger.any()  # both ways, per image
    assert disc_pixels[smaller].min() > original / 4 - 20  # at most halved in size
    ring = border(out[smaller], width=4)  # the cells fixture's disc leaves a wider ring of background
    np.testing.assert_allclose(ring, np.broadcast_to(BACKGROUND, ring.shape), atol=1e-3)


def test_lab_policy_at_strength_one_spreads_the_mean_colours():
    x = blob_data(n=2 * BATCH, size=SIZE).images.astype("float32")

    def spread(strength):
        out = numpy(build("lab", {"strength": strength, "zoom": 1.1})(x, training=True))
        return np.std(out.mean(axis=(1, 2)) - x.mean(axis=(1, 2)), axis=0).mean()

    weak, strong = spread(0.1), spread(1.0)
    assert strong > 3 * weak and strong > 5.0


def test_lab_policy_zooming_out_fills_no_black_border(cells):
    out = numpy(build("lab", params_at("lab", "high"))(cells, training=True))
    # a black fill sums to 0; the background and the disc, even restained, far more
    assert border(out).sum(axis=-1).min() > 150.0


def test_lab_policy_trains_inside_model_fit():
    data = blob_data(n=2 * BATCH, size=SIZE)
    inputs = keras.Input((SIZE, SIZE, 3))
    features = keras.layers.GlobalAveragePooling2D()(build("lab", params_at("lab", "high"))(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(features))
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=False)
    history = model.fit(data.images.astype("float32"), data.labels, batch_size=BATCH, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_occlusion_covers_a_square_of_one_colour_within_its_area_bounds(cells):
    out = numpy(RandomOcclusion(1.0, (0.1, 0.3), seed=SEED)(cells, training=True))
    for image, before in zip(out, cells):
        changed = np.any(image != before, axis=-1)
        rows, cols = np.nonzero(changed)
        box = image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert np.all(box == box[0, 0])
        assert 0.1 * 0.8 <= box.shape[0] * box.shape[1] / SIZE**2 <= 0.3 * 1.2
        assert abs(box.shape[0] - box.shape[1]) <= 1


def test_occlusion_rate_sets_the_share_of_images_occluded(cells):
    batch = np.repeat(cells, 16, axis=0)
    out = numpy(RandomOcclusion(0.5, seed=SEED)(batch, training=True))
    share = np.mean([np.any(o != c) for o, c in zip(out, batch)])
    assert 0.35 < share < 0.65
    np.testing.assert_array_equal(numpy(RandomOcclusion(0.0, seed=SEED)(batch, training=True)), batch)


@pytest.mark.parametrize("rate, area", [(1.5, (0.1, 0.2)), (0.5, (0.0, 0.2)), (0.5, (0.3, 0.2))])
def test_occlusion_refuses_a_rate_or_area_out_of_range(rate, area):
    with pytest.raises(ValueError, match="need"):
        RandomOcclusion(rate, area)


def blur_layers(seed=SEED):
    """Keras's blur and bcauto's, always applied, with the same settings and seed (so the same sigma)."""
    settings = dict(factor=(1.0, 1.0), kernel_size=5, sigma=(0.9, 1.0), value_range=(0.0, 255.0), seed=seed)
    return keras.layers.RandomGaussianBlur(**settings), ReflectedGaussianBlur(**settings)


def test_blur_keeps_a_plain_field_plain_up_to_its_edge():
    field = np.full((2, SIZE, SIZE, 3), 200.0, "float32")
    zero_padded, reflected = blur_layers()
    # Keras's dark frame, which this layer exists to remove: if Keras stops drawing it, the subclass can go
    assert numpy(zero_padded(field, training=True))[:, 0].min() < 160.0
    np.testing.assert_allclose(numpy(reflected(field, training=True)), field, atol=1e-3)


def test_blur_is_keras_blur_away_from_the_edge(images):
    zero_padded, reflected = blur_layers()
    ours, theirs = numpy(reflected(images, training=True)), numpy(zero_padded(images, training=True))
    assert ours.shape == images.shape
    np.testing.assert_allclose(ours[:, 2:-2, 2:-2], theirs[:, 2:-2, 2:-2], atol=1e-3)
    assert ours.std() < 0.6 * images.std()  # it blurs
    np.testing.assert_array_equal(numpy(reflected(images, training=False)), images)
    assert numpy(reflected(images[0], training=True)).shape == images[0].shape  # one image, unbatched


def test_blur_crops_images_whose_size_is_known_only_at_run_time(images):
    _, reflected = blur_layers()
    blur = tf.function(lambda x: reflected(x, training=True), input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    field = np.full((2, SIZE + 4, SIZE, 3), 200.0, "float32")
    np.testing.assert_allclose(numpy(blur(field)), field, atol=1e-3)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_blur_one_axis_at_a_time_is_the_whole_kernel_on_the_reflected_image(images, data_format):
    # unequal sigmas (each axis has its own) and one image left sharp: the draw a training batch gets
    transformation = {"blur_factor": np.array([0.7, 2.5], "float32"), "should_apply_blur": np.array([True] * (BATCH - 1) + [False])}
    blur = ReflectedGaussianBlur(kernel_size=9, value_range=(0.0, 255.0), data_format=data_format)
    batch = images if data_format == "channels_last" else np.transpose(images, (0, 3, 1, 2))
    ours = numpy(blur.transform_images(batch, transformation, training=True))
    if data_format == "channels_first":
        ours = np.transpose(ours, (0, 2, 3, 1))
    reflected = np.pad(images, [(0, 0), (4, 4), (4, 4), (0, 0)], mode="reflect")
    whole_kernel = numpy(keras.ops.image.gaussian_blur(reflected, (9, 9), transformation["blur_factor"]))[:, 4:-4, 4:-4]
    np.testing.assert_allclose(ours[:-1], np.clip(whole_kernel[:-1], 0, 255), atol=1e-3)
    np.testing.assert_array_equal(ours[-1], images[-1])


@pytest.mark.parametrize("size", [40, 96])
@pytest.mark.parametrize("strength", [0.3, 1.0])
def test_robust_blur_reaches_the_suite_defocus_range_at_every_strength(size, strength):
    # the suite's defocus blur at severity 5: sigma 3.6 pixels on a 96-pixel image, in proportion on others
    heaviest = 3.6 * size / 96
    pipeline = policy("robust").build({"strength": strength}, size, SEED)
    (blur,) = [layer for layer in pipeline.layers if isinstance(layer, ReflectedGaussianBlur)]
    assert heaviest <= max(blur.sigma) <= 1.25 * heaviest
    assert blur.kernel_size[0] >= 4 * max(blur.sigma)  # the kernel covers +-2 sigma
