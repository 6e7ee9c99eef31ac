"""Small classifiers saved as model directories and a "new lab" of blob images for the tests of ``bcauto adapt`` and
``bcauto suggest``: a backbone with BatchNorm called in inference mode, as bcauto calls a pretrained one."""

from pathlib import Path

import keras
import numpy as np
from helpers import CLASSES, blob_data
from keras import layers

SIZE = 32


def backbone(name="features", batchnorm=True):
    """A nested feature extractor with its own preprocessing, like bcauto's backbones (BatchNorm after each conv)."""
    inputs = keras.Input((SIZE, SIZE, 3), name="pixels")
    x = layers.Rescaling(1 / 255.0, name="scale")(inputs)
    for i, width in enumerate((8, 16), start=1):
        x = layers.Conv2D(width, 3, padding="same", name=f"conv{i}")(x)
        if batchnorm:
            x = layers.BatchNormalization(momentum=0.8, name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        if i == 1:
            x = layers.MaxPooling2D(2, name="pool1")(x)
    return keras.Model(inputs, x, name=name)


NUM_CLASSES = len(CLASSES)


def classifier(features, num_classes=NUM_CLASSES, frozen_inference=True, noise=40.0):
    """Augmentation (noise, active in training only) -> backbone (called with training=False, as bcauto calls a
    pretrained one) -> global average pooling -> softmax."""
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    from bcauto_builtin.layers import PixelNoise

    x = PixelNoise(noise, seed=1, name="augment_noise")(inputs)
    x = features(x, training=False) if frozen_inference else features(x)
    x = layers.GlobalAveragePooling2D(name="head_gap")(x)
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax", name="out")(x), name="classifier")


def save(model, path, **info):
    from bcauto.bundle import save_bundle

    return save_bundle(model, {"class_names": list(CLASSES), "image_size": SIZE, **info}, path)


def inverted(data):
    """The same cells photographed in another lab, as far as the model can tell: every colour inverted."""
    from bcauto.data import Dataset

    return Dataset(255 - data.images, data.labels, data.class_names, "other-lab")


def save_npz(path, data, order=None):
    """``data`` as an .npz file, its classes listed in ``order`` (labels renumbered to match)."""
    order = list(order or data.class_names)
    remap = np.array([order.index(name) for name in data.class_names])
    np.savez(path, images=data.images, labels=remap[data.labels], class_names=np.array(order))
    return path


def trained_parent(root: Path) -> Path:
    """A classifier trained on blob data (BatchNorm statistics learned, as a pretrained backbone's are), saved as a
    model directory whose info names a refit run."""
    keras.utils.set_random_seed(0)
    features = backbone()
    train = classifier(features, frozen_inference=False, noise=5.0)
    train.compile(optimizer=keras.optimizers.Adam(3e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    data = blob_data(240, SIZE, seed=0)
    train.fit(data.images.astype(np.float32), np.eye(4)[data.labels], batch_size=32, epochs=3, verbose=0)
    model = classifier(features, noise=5.0)  # the same backbone, called in inference mode, and the trained head
    model.get_layer("out").set_weights(train.get_layer("out").get_weights())
    accuracy = float((model.predict(data.images.astype(np.float32), verbose=0).argmax(1) == data.labels).mean())
    assert accuracy > 0.9, accuracy
    return save(model, root / "model", study="blobs", mlflow={"run_id": "refit-run-0"})


def new_lab(path: Path) -> Path:
    """A new lab's labelled images (colours inverted) as an .npz, its classes listed in another order than the model's."""
    return save_npz(path, inverted(blob_data(96, SIZE, seed=7)), order=list(reversed(CLASSES)))
