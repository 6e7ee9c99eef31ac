"""Test-time adaptation: a saved model brought to another lab's images without reading a label.

* :func:`recompute_batchnorm` (``--adapt-bn`` of ``bcauto evaluate``, ``predict`` and ``adapt``): BatchNorm
  adaptation (AdaBN). Every BatchNormalization layer, in nested models too, gets the mean and variance of its
  inputs over the unlabelled target images in place of the training lab's. Nothing else in the model changes.
* :func:`maximize_information` (``--adapt-im`` of ``bcauto evaluate`` and ``predict``): BatchNorm adaptation,
  then the feature layers fine-tuned on the unlabelled images so that each gets a confident prediction while the
  images as a whole spread over the classes (SHOT's information maximization, Liang et al., ICML 2020), the
  classifier layer kept as trained.
* :func:`label_free_step`: either of them as ``bcauto adapt`` and ``bcauto suggest`` take it, said on the console.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bcauto.data.images import content_order
from bcauto.errors import BcautoError
from bcauto.text import plural

BN_BATCH = 256
IM_EPOCHS = 10
IM_LEARNING_RATE = 3e-4
IM_BATCH = 64


# --- BatchNorm statistics ------------------------------------------------------------------------------------------


def nested_layers(model) -> list:
    """``model`` and every layer in it, nested models and layers included (each once, outermost first)."""
    found, seen = [], set()
    stack = [model]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        found.append(layer)
        stack.extend(reversed(list(getattr(layer, "_layers", ()))))
    return found


def batchnorm_layers(model) -> list:
    """Every BatchNormalization layer of ``model``, nested models and layers included (each once)."""
    import keras

    return [layer for layer in nested_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]


class _Moments:
    """Count, mean and sum of squared deviations per channel, merged batch by batch (Chan et al.) in float64."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, None, None

    def add(self, n: int, mean: np.ndarray, var: np.ndarray) -> None:
        mean, m2 = mean.astype(np.float64), var.astype(np.float64) * n
        if self.n == 0:
            self.n, self.mean, self.m2 = n, mean, m2
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.n * n / total)
        self.n = total

    @property
    def variance(self) -> np.ndarray:
        return self.m2 / self.n


def _capturing_call(layer, moments: _Moments):
    """A replacement for ``layer.call``: normalises by the batch's own statistics (as BatchNorm does in training,
    so the layers after it see inputs normalised for the target domain) and records them, whatever ``training``
    it is called with; never touches the layer's variables."""
    from keras import ops

    def call(inputs, training=None, mask=None):
        x = ops.cast(inputs, "float32")
        axis = layer.axis if layer.axis >= 0 else len(x.shape) + layer.axis
        reduce = [a for a in range(len(x.shape)) if a != axis]
        mean, variance = ops.moments(x, axes=reduce)
        count = int(np.prod([x.shape[a] for a in reduce]))
        moments.add(count, ops.convert_to_numpy(mean), ops.convert_to_numpy(variance))
        outputs = ops.batch_normalization(
            x,
            mean,
            variance,
            axis=axis,
            epsilon=layer.epsilon,
            offset=ops.cast(layer.beta, "float32") if layer.center else None,
            scale=ops.cast(layer.gamma, "float32") if layer.scale else None,
        )
        return ops.cast(outputs, layer.compute_dtype)

    return call


def recompute_batchnorm(model, images: np.ndarray, batch_size: int = BN_BATCH) -> int:
    """Set the moving mean and variance of every BatchNormalization layer of ``model`` (nested models included)
    to the statistics of its inputs over ``images`` (uint8 or float pixels, N x S x S x 3); returns how many
    layers were set (0, and nothing changed, when the model has none).

    The model runs once over the images in inference mode (``training=False``: augmentation layers and dropout do
    nothing), with each BatchNorm layer's ``call`` replaced for the pass. That reaches the layers of pretrained
    backbones, which the classifier calls with ``training=False`` and so a training-mode call would not. During the
    pass each BatchNorm layer normalises by the statistics of the current batch, as in training and in AdaBN, and
    accumulates the exact mean and (biased, as Keras's) variance of its inputs over all images, merged batch by
    batch (the images are split into batches of nearly equal size, at most ``batch_size``). A layer whose inputs
    come through no other BatchNorm layer thus gets the population statistics of its inputs exactly; a deeper one
    those of its inputs with the layers before it normalising per batch of
    ``batch_size`` images, which are the population statistics whenever the images fit in one batch. The batches
    follow the order of the images' contents (:func:`bcauto.data.images.content_order`), so the same images, listed
    in any order, give the same statistics. Trainable
    weights, other non-trainable variables (seed generators included) and the layers' configuration stay as they
    were.
    """
    import keras

    layers = batchnorm_layers(model)
    if not layers or len(images) == 0:
        return 0
    moments = {id(layer): _Moments() for layer in layers}
    for layer in layers:
        layer.__dict__["call"] = _capturing_call(layer, moments[id(layer)])
    try:
        parts = -(-len(images) // batch_size)  # batches of nearly equal size: no small last batch to normalise by
        for index in np.array_split(content_order(images), parts):
            model(keras.ops.convert_to_tensor(np.asarray(images[index], np.float32)), training=False)
    finally:
        for layer in layers:
            layer.__dict__.pop("call", None)
    unreached = [layer.name for layer in layers if moments[id(layer)].n == 0]
    if unreached:
        raise BcautoError(
            f"--adapt-bn: BatchNorm layer(s) {', '.join(unreached)} were not reached by a pass over the images; "
            "their statistics cannot be recomputed"
        )
    for layer in layers:
        m = moments[id(layer)]
        layer.moving_mean.assign(m.mean.astype(np.float32))
        layer.moving_variance.assign(m.variance.astype(np.float32))
    return len(layers)


def adapt_bn_summary(model, images: np.ndarray, source: str) -> tuple[dict[str, Any], str]:
    """Recompute the BatchNorm statistics of ``model`` on ``images``; returns (the record for JSON, the line to print)."""
    layers = recompute_batchnorm(model, images)
    record: dict[str, Any] = {"images": len(images), "layers": layers}
    if layers == 0:
        record["note"] = "the model has no BatchNorm layer; nothing was changed"
        return record, "--adapt-bn: the model has no BatchNorm layer, so there are no statistics to recompute; the model is unchanged"
    return record, f"BatchNorm statistics recomputed on {plural(len(images), 'image')} of {source} ({plural(layers, 'layer')})"


# --- information maximization ------------------------------------------------------------------------------------


def classifier_layers(model) -> list:
    """The layers that turn features into class probabilities: every Dense layer with a softmax activation (one per
    member of an ensemble)."""
    import keras

    return [
        layer
        for layer in nested_layers(model)
        if isinstance(layer, keras.layers.Dense) and getattr(layer.activation, "__name__", "") == "softmax"
    ]


def information_loss(probs):
    """The mean entropy of the predictions minus the entropy of their mean: low when each image gets one confident
    class (the first term) while the images together spread over the classes (the second, which keeps the first
    from being met by calling every image the same class)."""
    from keras import ops

    p = ops.clip(probs, 1e-6, 1.0)
    conditional = -ops.mean(ops.sum(p * ops.log(p), axis=1))
    mean = ops.mean(p, axis=0)
    marginal = -ops.sum(mean * ops.log(mean))
    return conditional - marginal


def maximize_information(
    model,
    images: np.ndarray,
    allowed: np.ndarray | None = None,
    epochs: int = IM_EPOCHS,
    learning_rate: float = IM_LEARNING_RATE,
    batch_size: int = IM_BATCH,
    seed: int = 0,
) -> dict[str, Any]:
    """Adapt ``model`` to the unlabelled ``images`` of another lab (SHOT-IM); returns the record of what was done.

    1. BatchNorm statistics recomputed on the images (:func:`recompute_batchnorm`).
    2. ``epochs`` passes over the images, in the order of their contents (so the same images, listed in any order,
       adapt the model alike) shuffled by a seeded RNG, in batches of nearly equal size (at most
       ``batch_size``), each batch a step of Adam at ``learning_rate`` on :func:`information_loss`, computed on the
       probabilities among ``allowed`` (model class indices, renormalised) when given. The model runs in inference
       mode (no augmentation or dropout; BatchNorm normalises by the statistics of step 1 while its scale and offset
       train); the classifier layers (:func:`classifier_layers`) stay fixed, so the features move to where the
       classifier the training lab taught is confident, rather than the classifier to the features.
    3. BatchNorm statistics recomputed again, for the features as they are now.

    The defaults: Adam at the learning rate ``bcauto adapt`` fine-tunes with, for ten epochs (in a first run on
    the training lab's own held-out images under the ``other_lab`` shift, macro-F1 after 5, 10 and 15 epochs was
    0.462, 0.461 and 0.452). Measured since (bench/RESULTS.md, "label-free adaptation"): a small gain over BatchNorm
    recomputation alone where the classes are about equally common, a loss where they are not, as the second term
    of the loss, which pulls the predictions towards equal shares, leads one to expect.
    """
    import keras
    import tensorflow as tf
    from keras import ops

    if epochs < 1:
        raise BcautoError(f"--adapt-im: epochs must be 1 or more, got {epochs}")
    if len(images) < 2:
        raise BcautoError(f"--adapt-im needs at least 2 images to adapt on, got {len(images)}")
    fixed = classifier_layers(model)
    if not fixed:
        raise BcautoError("--adapt-im: the model has no softmax Dense layer (its classifier) to keep fixed; use --adapt-bn alone")
    keras.utils.set_random_seed(seed)
    layers = recompute_batchnorm(model, images)
    was_trainable = [layer.trainable for layer in fixed]
    for layer in fixed:
        layer.trainable = False
    try:
        variables = list(model.trainable_variables)
        if not variables:
            raise BcautoError("--adapt-im: the model has no trainable layer before its classifier; use --adapt-bn alone")
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        rng = np.random.default_rng(seed)
        order = content_order(images)
        parts = -(-len(images) // batch_size)
        kept = None if allowed is None else ops.convert_to_tensor(np.asarray(allowed, np.int32))
        losses = []
        for _ in range(epochs):
            total = 0.0
            for index in np.array_split(rng.permutation(len(images)), parts):
                batch = ops.convert_to_tensor(np.asarray(images[order[np.sort(index)]], np.float32))
                with tf.GradientTape() as tape:
                    probs = ops.cast(model(batch, training=False), "float32")
                    if kept is not None:
                        probs = ops.take(probs, kept, axis=1) + keras.config.epsilon()
                        probs = probs / ops.sum(probs, axis=1, keepdims=True)
                    loss = information_loss(probs)
                optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
                total += float(loss) * len(index)
            losses.append(total / len(images))
    finally:
        for layer, trainable in zip(fixed, was_trainable):
            layer.trainable = trainable
    recompute_batchnorm(model, images)
    return {
        "method": "information maximization (SHOT-IM) after BatchNorm recomputation",
        "images": len(images),
        "batchnorm_layers": layers,
        "fixed": [layer.name for layer in fixed],
        "epochs": epochs,
        "learning_rate": learning_rate,
        "batch_size": min(batch_size, -(-len(images) // parts)),
        "seed": seed,
        "loss_by_epoch": [round(v, 5) for v in losses],
    }


def adapt_im_summary(
    model, images: np.ndarray, source: str, allowed: np.ndarray | None = None, seed: int = 0
) -> tuple[dict[str, Any], str]:
    """:func:`maximize_information` on ``images``; returns (the record for JSON, the line to print)."""
    record = maximize_information(model, images, allowed, seed=seed)
    losses = record["loss_by_epoch"]
    return record, (
        f"adapted to {plural(len(images), 'image')} of {source}, labels unread: BatchNorm statistics recomputed "
        f"({plural(record['batchnorm_layers'], 'layer')}), then {plural(record['epochs'], 'epoch')} of information "
        f"maximization with {', '.join(record['fixed'])} kept fixed (loss {losses[0]:.3f} -> {losses[-1]:.3f})"
    )


def label_free_step(request, model, images: np.ndarray, source: str, console) -> tuple[str | None, dict[str, Any]] | None:
    """``--adapt-im`` or ``--adapt-bn`` of ``bcauto adapt`` and ``bcauto suggest`` (``request``'s ``adapt_im``,
    ``adapt_bn`` and ``seed``) on all the lab's images, their labels unread, before the fine-tuning or the choice of
    images to label: (the name of the row for the scores after it, None when the model was left unchanged; its
    record), or None when neither was asked for. Information maximization recomputes the BatchNorm statistics
    first, so it includes ``--adapt-bn``; a model restricted to ``--classes`` maximizes among them."""
    if request.adapt_im:
        with console.status(f"information maximization on {plural(len(images), 'image')}"):
            record, line = adapt_im_summary(model, images, source, seed=request.seed)
        console.print(line)
        return "information maximized", record
    if request.adapt_bn:
        record, line = adapt_bn_summary(model, images, source)
        console.print(line)
        return ("BatchNorm recomputed" if record["layers"] else None), record
    return None
