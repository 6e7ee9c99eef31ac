"""One trial's training: the seed's two-phase recipe (frozen backbone, then the last blocks unfrozen).

Phase 1 trains the head with Lion, ReduceLROnPlateau on validation accuracy and EarlyStopping on validation
loss (best weights restored). Phase 2 unfreezes the chosen blocks and continues at a lower learning rate.
One epoch counter runs across both phases (``initial_epoch``), so per-epoch reports to Optuna and MLflow
never collide. Whenever the result cannot differ, work is skipped: the head trains on cached pooled
features, and the fine-tune trains only the unfrozen tail on activations computed once.

The same :class:`Trainer` runs a plan without validation data (``bcauto refit``, :func:`train_fixed`): each phase
then trains a given number of epochs, with a given learning rate per epoch, instead of stopping on validation loss,
and can back up each epoch so that a rerun goes on where an interrupted one stopped (``backup_dir``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from bcauto.data import Dataset
from bcauto.errors import BcautoError
from bcauto.feature_cache import FeatureCache, pooled_features
from bcauto.files import write_text_whole
from bcauto.interrupts import stop_asked
from bcauto.model import HeadParams, assemble, build_backbone, build_head, set_trainable_blocks, split_at_block
from bcauto.scoring import predict_batches, score
from bcauto.specs import AugmentationSpec, BackboneSpec, CanonicalizerSpec, ImbalanceSpec

AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class TrainSettings:
    """Study-wide training settings (the study file's [train] table plus the seed)."""

    batch_size: int = 64
    head_epochs: int = 30
    finetune_epochs: int = 70
    patience: int = 15
    lr_patience: int = 5
    lr_factor: float = 0.5
    weights: str | None = "imagenet"
    seed: int = 42
    jit_compile: Any = "auto"
    cache_dir: str | None = None
    augmented_views: int = 0
    activation_cache_gb: float = 4.0


@dataclass(frozen=True)
class TrialPlan:
    """Everything one trial decided: components, their parameters, and the learning rates."""

    backbone: BackboneSpec
    augmentation: AugmentationSpec
    imbalance: ImbalanceSpec
    head: HeadParams
    lr_head: float
    lr_finetune: float
    unfreeze_blocks: Any = 0
    backbone_params: dict = field(default_factory=dict)
    augmentation_params: dict = field(default_factory=dict)
    loss: str = "crossentropy"
    label_smoothing: float = 0.0
    canonicalizer: CanonicalizerSpec | None = None
    canonicalizer_params: dict = field(default_factory=dict)

    @property
    def canonicalizer_name(self) -> str:
        return self.canonicalizer.name if self.canonicalizer is not None else "none"

    def canonicalize_layer(self, image_size: int):
        """The canonicalizer's layer for this plan, or None (images pass unchanged)."""
        if self.canonicalizer is None:
            return None
        return self.canonicalizer.build(self.canonicalizer_params, image_size)

    def weights_for(self, settings: TrainSettings) -> str | None:
        """Pretrained weights this trial uses: None when the backbone has none of the requested kind."""
        return self.backbone.resolve_weights(settings.weights)


@dataclass
class TrainResult:
    """The trained model, its per-epoch history (global epoch numbers) and how the epochs were spent."""

    model: keras.Model
    history: list[dict[str, float]]
    phase_epochs: dict[str, int]
    unfrozen_blocks: int | str
    modes: dict[str, str] = field(default_factory=dict)
    predict: Callable[[Dataset], np.ndarray] | None = None
    learning_rates: list[float] = field(default_factory=list)
    kept_epochs: dict[str, int] = field(default_factory=dict)
    resumed_epochs: int = 0  # epochs restored from a backup rather than trained by this run

    def probabilities(self, data: Dataset) -> np.ndarray:
        """Class probabilities of ``data``: through cached backbone features when the backbone ended the trial
        frozen and unchanged (the same outputs as ``model``, without its forward pass), else through ``model``."""
        return self.predict(data) if self.predict is not None else predict_batches(self.model, data.images)


@dataclass
class Parts:
    """The pieces of one trial's classifier; the assembled model shares their layers."""

    backbone: keras.Model
    head: keras.Model
    augmentation: keras.layers.Layer | None
    model: keras.Model


def build_parts(plan: TrialPlan, settings: TrainSettings, image_size: int, num_classes: int) -> Parts:
    weights = plan.weights_for(settings)
    backbone = build_backbone(plan.backbone, image_size, weights, plan.backbone_params, plan.canonicalize_layer(image_size))
    head = build_head(backbone.output_shape[-1], num_classes, plan.head)
    augmentation = plan.augmentation.build(plan.augmentation_params, image_size, settings.seed)
    return Parts(backbone, head, augmentation, assemble(backbone, head, augmentation, frozen_inference=weights is not None))


def batches(
    x, labels: np.ndarray, num_classes: int, batch_size: int, shuffle_seed: int | None = None, batch_fn: Callable | None = None
) -> tf.data.Dataset:
    """Inputs and integer labels as a batched, prefetched pipeline of (float32, one-hot)."""
    ds = tf.data.Dataset.from_tensor_slices((x, labels.astype(np.int32)))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda a, y: (tf.cast(a, tf.float32), tf.one_hot(y, num_classes)), num_parallel_calls=AUTOTUNE)
    if batch_fn is not None:
        ds = ds.map(batch_fn, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def view_batches(views: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int, seed: int) -> tf.data.Dataset:
    """K precomputed views (K x N x D), one view per epoch in turn, repeated forever (use steps_per_epoch)."""
    per_view = [batches(v, labels, num_classes, batch_size, shuffle_seed=seed + i) for i, v in enumerate(views)]
    ds = per_view[0]
    for other in per_view[1:]:
        ds = ds.concatenate(other)
    return ds.repeat()


def make_loss(loss: str = "crossentropy", label_smoothing: float = 0.0) -> keras.losses.Loss:
    """The training loss: categorical cross-entropy or focal cross-entropy, with optional label smoothing."""
    if loss == "focal":
        return keras.losses.CategoricalFocalCrossentropy(label_smoothing=label_smoothing)
    return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)


def compile_model(model: keras.Model, learning_rate: float, jit_compile, loss: str = "crossentropy", label_smoothing: float = 0.0) -> None:
    model.compile(
        optimizer=keras.optimizers.Lion(learning_rate=learning_rate),
        loss=make_loss(loss, label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"), keras.metrics.F1Score(average="macro", name="macro_f1")],
        jit_compile=jit_compile,
    )


class StopWhenAsked(keras.callbacks.Callback):
    """Raises KeyboardInterrupt before the next batch once Ctrl-C or SIGTERM asked this process to stop
    (:func:`bcauto.interrupts.stop_asked`): the KeyboardInterrupt the signal raised may have been lost. The check
    is at the start of a batch, where a hook costs nothing on any Keras backend (one at a batch's end turns off the
    asynchronous dispatch of batch metrics on the backends that have it, JAX and PyTorch; TensorFlow has none)."""

    def on_train_batch_begin(self, batch, logs=None):
        if stop_asked():
            raise KeyboardInterrupt

    on_test_batch_begin = on_train_batch_begin


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's current learning rate to each epoch's logs as ``lr``."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class HistoryRecorder(keras.callbacks.Callback):
    """Collects every epoch's logs, numbered by the global epoch counter, and the learning rate each epoch trained
    with (the logged ``lr`` is the one after the epoch, which a plateau schedule may have lowered).

    With ``backup`` set (a JSON file), the record is written there after each epoch and read back when a phase
    begins, so a phase resumed from a weights backup keeps the epochs trained before the interruption."""

    def __init__(self):
        super().__init__()
        self.epochs: list[dict[str, float]] = []
        self.learning_rates: list[float] = []
        self.backup: Path | None = None
        self.trained_here = 0

    def on_train_begin(self, logs=None):
        if self.backup is not None and self.backup.is_file():
            saved = json.loads(self.backup.read_text(encoding="utf-8"))
            self.epochs, self.learning_rates = saved["epochs"], saved["learning_rates"]

    def on_epoch_begin(self, epoch, logs=None):
        if len(self.epochs) < epoch:
            raise BcautoError(
                f"{self.backup.parent}: its weights were backed up after epoch {epoch}, but its record ({self.backup.name}) "
                f"holds {len(self.epochs)} epochs; delete {self.backup.parent} to train this phase from its start"
            )
        # the record is written just before the weights: a run stopped between the two recorded an epoch it must train again
        del self.epochs[epoch:], self.learning_rates[epoch:]
        self.learning_rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})
        self.trained_here += 1
        if self.backup is not None:
            self.backup.parent.mkdir(parents=True, exist_ok=True)
            write_text_whole(self.backup, json.dumps({"epochs": self.epochs, "learning_rates": self.learning_rates}))


class EpochScores(keras.callbacks.Callback):
    """Adds ``NAME_macro_f1`` to each epoch's logs: the model as trained so far, scored on more labelled sets (the
    shifted validation copy), so that the pruner and the curves follow the metric a study optimizes."""

    def __init__(self, trainer: Trainer, sets: dict[str, Dataset]):
        super().__init__()
        self.trainer, self.sets = trainer, sets

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for name, data in self.sets.items():
            predicted = self.trainer.current_probabilities(data).argmax(axis=1)
            # over the classes the set has: another lab's images may lack some of the training classes
            logs[f"{name}_macro_f1"] = score(data.labels, predicted, data.class_names, present_only=True).macro_f1


class ReplayRates(keras.callbacks.Callback):
    """Sets the learning rate of each epoch of a phase from a list (epochs past its end keep the last rate)."""

    def __init__(self, start: int, rates: list[float]):
        super().__init__()
        self.start, self.rates = start, rates

    def on_epoch_begin(self, epoch, logs=None):
        i = epoch - self.start
        if 0 <= i < len(self.rates):
            self.model.optimizer.learning_rate = float(self.rates[i])


def kept_epochs(val_losses: list[float], phase_epochs: dict[str, int]) -> dict[str, int]:
    """The epochs of each phase whose weights the trial kept: early stopping restores a phase's lowest validation
    loss, and a fine-tune that never went below the head phase's best is dropped (the frozen model is kept)."""
    head, finetune = phase_epochs["head"], phase_epochs.get("finetune", 0)
    head_losses = val_losses[:head]
    kept = {"head": int(np.argmin(head_losses)) + 1 if head_losses else 0, "finetune": 0}
    tune_losses = val_losses[head : head + finetune]
    if tune_losses and head_losses and min(tune_losses) <= min(head_losses):
        kept["finetune"] = int(np.argmin(tune_losses)) + 1
    return kept


def phase_callbacks(settings: TrainSettings) -> list[keras.callbacks.Callback]:
    """The seed's callbacks, fresh for each phase."""
    return [
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_accuracy", mode="max", factor=settings.lr_factor, patience=settings.lr_patience, min_lr=1e-8
        ),
        keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=settings.patience, restore_best_weights=True),
    ]


def head_feature_mode(plan: TrialPlan, settings: TrainSettings, parts: Parts) -> str:
    """How the head phase sees the backbone: ``cached`` features, ``cached_views:K``, or ``online``."""
    if plan.weights_for(settings) is None or settings.cache_dir is None or plan.augmentation.mixes_labels:
        return "online"
    if parts.augmentation is None:
        return "cached"
    return f"cached_views:{settings.augmented_views}" if settings.augmented_views > 0 else "online"


def weights_identity(weights: str | None) -> str | None:
    """A weights name, or a weights file with its size and modification time (a changed file is new data)."""
    if weights and weights.endswith(".h5") and os.path.exists(weights):
        stat = os.stat(weights)
        return f"{os.path.abspath(weights)}:{stat.st_size}:{stat.st_mtime_ns}"
    return weights


class Trainer:
    """Runs the phases of one plan, sharing the epoch counter, history and callbacks between them.

    With ``val_data`` a phase stops early on validation loss and lowers its learning rate on a plateau
    (:meth:`head_phase`, :meth:`finetune_phase`); without it (None) a phase trains the epochs it is given, at the
    learning rates it is given (:meth:`fit_full` with ``rates``).
    """

    def __init__(
        self,
        plan: TrialPlan,
        settings: TrainSettings,
        train_data: Dataset,
        val_data: Dataset | None,
        callbacks=(),
        epoch_sets: dict[str, Dataset] | None = None,
    ):
        self.plan, self.settings = plan, settings
        self.train_data, self.val_data = train_data, val_data
        self.num_classes = train_data.num_classes
        keras.utils.set_random_seed(settings.seed)
        self.parts = build_parts(plan, settings, train_data.image_size, self.num_classes)
        self.imbalance = plan.imbalance.apply(train_data.labels, settings.seed)
        self.train_index = self.imbalance.indices
        self.recorder = HistoryRecorder()
        scorers = [EpochScores(self, epoch_sets)] if epoch_sets else []
        self.callbacks = [StopWhenAsked(), LearningRateLogger(), *scorers, self.recorder, *callbacks]
        # the model being fitted, as probabilities of a data set (per phase: through cached inputs where it can)
        self.current_probabilities: Callable[[Dataset], np.ndarray] = self.predict_full
        self.inputs: dict[tuple[str, int], tuple[Dataset, np.ndarray]] = {}
        self.modes: dict[str, str] = {}
        self.backbone_trained = False
        self.val_features: np.ndarray | None = None

    @property
    def epochs_run(self) -> int:
        """Epochs trained so far, over all phases (the global epoch counter)."""
        return len(self.recorder.epochs)

    def fit(
        self,
        model,
        learning_rate: float,
        epochs: int,
        train_ds,
        val_ds,
        steps_per_epoch=None,
        rates: list[float] | None = None,
        backup: Path | None = None,
    ) -> None:
        """One phase: with ``val_ds``, early stopping and a plateau schedule; without, ``epochs`` epochs at ``rates``
        (one learning rate per epoch) or at ``learning_rate`` throughout. With ``backup`` (a folder for this phase),
        the weights, optimizer state and record after each epoch are kept there, and a phase that finds them goes
        on from the epoch after them."""
        compile_model(model, learning_rate, self.settings.jit_compile, self.plan.loss, self.plan.label_smoothing)
        if val_ds is not None:
            schedule = phase_callbacks(self.settings)
        else:
            schedule = [ReplayRates(self.epochs_run, rates)] if rates else []
        backups = []
        if backup is not None:
            self.recorder.backup = backup / "record.json"
            # last, so that the record is written before the weights (HistoryRecorder relies on that order)
            backups = [keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True, delete_checkpoint=False)]
        model.fit(
            train_ds,
            validation_data=val_ds,
            initial_epoch=self.epochs_run,
            epochs=self.epochs_run + epochs,
            steps_per_epoch=steps_per_epoch,
            class_weight=self.imbalance.class_weight,
            shuffle=False,
            verbose=0,
            callbacks=[*schedule, *self.callbacks, *backups],
        )
        if backup is not None:
            self.recorder.backup = None
            model._initial_epoch = None  # set by BackupAndRestore and never cleared by Keras: the next phase would start there

    def image_batches(self):
        s, batch_fn = self.settings, None
        if self.plan.augmentation.mixes_labels:
            batch_fn = self.plan.augmentation.build_batch(self.plan.augmentation_params, self.num_classes, s.seed)
        idx = self.train_index
        train_ds = batches(self.train_data.images[idx], self.train_data.labels[idx], self.num_classes, s.batch_size, s.seed, batch_fn)
        if self.val_data is None:
            return train_ds, None
        val_ds = batches(self.val_data.images, self.val_data.labels, self.num_classes, s.batch_size).cache()
        return train_ds, val_ds

    def fit_full(self, learning_rate: float, epochs: int, rates: list[float] | None = None, backup: Path | None = None) -> None:
        self.current_probabilities = self.predict_full
        self.fit(self.parts.model, learning_rate, epochs, *self.image_batches(), rates=rates, backup=backup)

    def predict_full(self, data: Dataset) -> np.ndarray:
        return predict_batches(self.parts.model, data.images)

    def memo(self, kind: str, data: Dataset, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """Inputs computed once per data set and kind (frozen features, frozen-prefix activations)."""
        key = (kind, id(data))
        if key not in self.inputs:
            self.inputs[key] = (data, compute())  # the data set is kept, so its id is not reused
        return self.inputs[key][1]

    def head_phase(self, epochs: int) -> None:
        mode = head_feature_mode(self.plan, self.settings, self.parts)
        self.modes["head"] = mode
        if mode == "online":
            self.fit_full(self.plan.lr_head, epochs)
            return
        views, val_features = self.cached_features(mode)
        self.current_probabilities = self.predict_frozen
        s, labels = self.settings, self.train_data.labels[self.train_index]
        val_ds = batches(val_features, self.val_data.labels, self.num_classes, s.batch_size).cache()
        if len(views) == 1:  # the same pipeline as on images, so the same seed gives the same batches
            train_ds = batches(views[0][self.train_index], labels, self.num_classes, s.batch_size, s.seed)
            self.fit(self.parts.head, self.plan.lr_head, epochs, train_ds, val_ds)
            return
        train_ds = view_batches(views[:, self.train_index], labels, self.num_classes, s.batch_size, s.seed)
        steps = -(-len(labels) // s.batch_size)
        self.fit(self.parts.head, self.plan.lr_head, epochs, train_ds, val_ds, steps_per_epoch=steps)

    def feature_parts(self, views: int = 0) -> dict[str, Any]:
        """What the frozen backbone's pooled features depend on, besides the images (the feature cache's key)."""
        s, plan = self.settings, self.plan
        return {
            "backbone": plan.backbone.name,
            "weights": weights_identity(plan.weights_for(s)),
            "params": plan.backbone_params,
            "preprocessing": plan.backbone.preprocessing,
            "image_size": self.train_data.image_size,
            "canonicalization": [plan.canonicalizer_name, plan.canonicalizer_params],
            "policy": keras.mixed_precision.global_policy().name,
            "views": views,
            "augmentation": [plan.augmentation.name, plan.augmentation_params] if views else None,
        }

    def cached_features(self, mode: str) -> tuple[np.ndarray, np.ndarray]:
        s, backbone = self.settings, self.parts.backbone
        views = int(mode.split(":")[1]) if ":" in mode else 0
        parts = {**self.feature_parts(views), "train": self.train_data.fingerprint(), "val": self.val_data.fingerprint()}

        def compute():
            if views:
                train = np.stack(
                    [pooled_features(backbone, self.train_data.images, s.batch_size, self._view_augmenter(i)) for i in range(views)]
                )
            else:
                train = pooled_features(backbone, self.train_data.images, s.batch_size)[None]
            return {"train": train, "val": pooled_features(backbone, self.val_data.images, s.batch_size)}

        arrays, hit = FeatureCache(s.cache_dir).get_or_compute(parts, compute)
        self.modes["head_cache"] = "hit" if hit else "miss"
        self.val_features = arrays["val"]
        return arrays["train"], arrays["val"]

    def predict_frozen(self, data: Dataset) -> np.ndarray:
        """Probabilities of ``data`` from the head on the frozen backbone's pooled features (cached per data set)."""
        s = self.settings
        if data is self.val_data:
            features = self.val_features
        else:

            def compute():
                parts = {**self.feature_parts(), "images": data.fingerprint()}
                return FeatureCache(s.cache_dir).get_or_compute(
                    parts, lambda: {"features": pooled_features(self.parts.backbone, data.images, s.batch_size)}
                )[0]["features"]

            features = self.memo("features", data, compute)
        return self.parts.head.predict(features, batch_size=256, verbose=0)

    def _view_augmenter(self, view: int):
        # seeded by view, not by trial, so trials with the same policy and parameters share the views
        return self.plan.augmentation.build(self.plan.augmentation_params, self.train_data.image_size, 1000 + view)

    def finetune_phase(self, epochs: int) -> int:
        plan, parts = self.plan, self.parts
        unfrozen = set_trainable_blocks(plan.backbone, parts.backbone, plan.unfreeze_blocks)
        if unfrozen == 0:
            return 0
        head_weights, head_best = parts.model.get_weights(), min(e["val_loss"] for e in self.recorder.epochs)
        start = self.epochs_run
        split = split_at_block(plan.backbone, parts.backbone, unfrozen)
        if parts.augmentation is None and not plan.augmentation.mixes_labels and split and self._fits_in_memory(split[0]):
            self.modes["finetune"] = "cached_activations"
            self.fit_tail(*split, epochs)
        else:
            self.modes["finetune"] = "online"
            self.fit_full(plan.lr_finetune, epochs)
        if min(e["val_loss"] for e in self.recorder.epochs[start:]) > head_best:
            parts.model.set_weights(head_weights)  # fine-tuning never beat the frozen model: keep the frozen one
        else:
            self.backbone_trained = True
        return unfrozen

    def _fits_in_memory(self, prefix: keras.Model) -> bool:
        per_image = int(np.prod(prefix.output_shape[1:])) * 4
        return per_image * (len(self.train_data.labels) + len(self.val_data.labels)) <= self.settings.activation_cache_gb * 2**30

    def fit_tail(self, prefix: keras.Model, tail: keras.Model, epochs: int) -> None:
        """Fine-tune on activations at the first unfrozen block: the frozen blocks run once, not every epoch."""
        s = self.settings
        activations = keras.Input(shape=prefix.output_shape[1:])
        outputs = self.parts.head(keras.layers.GlobalAveragePooling2D()(tail(activations, training=False)))
        model = keras.Model(activations, outputs, name="finetune_tail")
        train_x, val_x = (predict_batches(prefix, data.images, s.batch_size) for data in (self.train_data, self.val_data))
        self.current_probabilities = lambda data: model.predict(
            val_x if data is self.val_data else self.memo("prefix", data, lambda: predict_batches(prefix, data.images, s.batch_size)),
            batch_size=256,
            verbose=0,
        )
        idx = self.train_index
        train_ds = batches(train_x[idx], self.train_data.labels[idx], self.num_classes, s.batch_size, s.seed)
        val_ds = batches(val_x, self.val_data.labels, self.num_classes, s.batch_size).cache()
        self.fit(model, self.plan.lr_finetune, epochs, train_ds, val_ds)


def train(
    plan: TrialPlan,
    settings: TrainSettings,
    train_data: Dataset,
    val_data: Dataset,
    callbacks: list[keras.callbacks.Callback] = (),
    epoch_sets: dict[str, Dataset] | None = None,
) -> TrainResult:
    """Train one plan. ``callbacks`` (reporting, pruning) see both phases with one epoch counter, and the macro-F1 on
    each of ``epoch_sets`` in the epoch's logs (``NAME_macro_f1``)."""
    trainer = Trainer(plan, settings, train_data, val_data, callbacks, epoch_sets)
    pretrained = plan.weights_for(settings) is not None
    if pretrained:
        trainer.parts.backbone.trainable = False
        trainer.head_phase(settings.head_epochs)
    else:  # a backbone without pretrained weights learns from the first epoch, in one phase
        trainer.parts.backbone.trainable = True
        trainer.modes["head"] = "online"
        trainer.fit_full(plan.lr_head, settings.head_epochs + settings.finetune_epochs)
    phase_epochs = {"head": trainer.epochs_run, "finetune": 0}
    unfrozen: int | str = "all" if not pretrained else 0
    if pretrained and settings.finetune_epochs > 0:
        unfrozen = trainer.finetune_phase(settings.finetune_epochs)
        phase_epochs["finetune"] = trainer.epochs_run - phase_epochs["head"]
    frozen_scoring = trainer.modes["head"] != "online" and not trainer.backbone_trained
    history = trainer.recorder.epochs
    return TrainResult(
        trainer.parts.model,
        history,
        phase_epochs,
        unfrozen,
        trainer.modes,
        predict=trainer.predict_frozen if frozen_scoring else None,
        learning_rates=trainer.recorder.learning_rates,
        kept_epochs=kept_epochs([e["val_loss"] for e in history], phase_epochs),
    )


def train_fixed(
    plan: TrialPlan,
    settings: TrainSettings,
    data: Dataset,
    epochs: dict[str, int],
    learning_rates: dict[str, list[float] | None] | None = None,
    callbacks: list[keras.callbacks.Callback] = (),
    backup_dir: Path | None = None,
) -> TrainResult:
    """Train one plan on ``data`` without a validation split: ``epochs[phase]`` epochs per phase (``head``, then
    ``finetune`` for a pretrained backbone), each epoch at its rate in ``learning_rates[phase]`` where given, else at
    the plan's learning rate throughout. A backbone without pretrained weights trains whole in the one head phase.

    With ``backup_dir``, every epoch is backed up there (a folder per phase) and a call that finds a backup goes on
    after its last epoch: the same plan and data must be given again. The epochs after the resumption see their
    batches in the order of a fresh start, so the result is not bit-identical to an uninterrupted run."""
    rates = learning_rates or {}
    trainer = Trainer(plan, settings, data, None, callbacks)
    pretrained = plan.weights_for(settings) is not None
    trainer.parts.backbone.trainable = not pretrained
    trainer.modes["head"] = "online"
    trainer.fit_full(plan.lr_head, epochs["head"], rates.get("head"), backup_dir / "head" if backup_dir else None)
    phase_epochs = {"head": trainer.epochs_run, "finetune": 0}
    unfrozen: int | str = "all" if not pretrained else 0
    if pretrained and epochs.get("finetune", 0) > 0:
        unfrozen = set_trainable_blocks(plan.backbone, trainer.parts.backbone, plan.unfreeze_blocks)
        trainer.modes["finetune"] = "online"
        trainer.fit_full(plan.lr_finetune, epochs["finetune"], rates.get("finetune"), backup_dir / "finetune" if backup_dir else None)
        phase_epochs["finetune"] = trainer.epochs_run - phase_epochs["head"]
    return TrainResult(
        trainer.parts.model,
        trainer.recorder.epochs,
        phase_epochs,
        unfrozen,
        trainer.modes,
        learning_rates=trainer.recorder.learning_rates,
        kept_epochs=dict(phase_epochs),
        resumed_epochs=trainer.epochs_run - trainer.recorder.trained_here,
    )
