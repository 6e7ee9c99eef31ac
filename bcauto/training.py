"""One trial's training: the seed's two-phase recipe (frozen backbone, then the last blocks unfrozen).

Phase 1 trains the head with Lion, ReduceLROnPlateau on validation accuracy and EarlyStopping on validation
loss (best weights restored). Phase 2 unfreezes the chosen blocks and continues at a lower learning rate.
One epoch counter runs across both phases (``initial_epoch``), so per-epoch reports to Optuna and MLflow
never collide.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from bcauto.data import Dataset
from bcauto.model import HeadParams, assemble, build_backbone, build_head, set_trainable_blocks
from bcauto.specs import AugmentationSpec, BackboneSpec, ImbalanceSpec

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

    def weights_for(self, settings: TrainSettings) -> str | None:
        """Pretrained weights this trial uses: None when the backbone has none of the requested kind."""
        return settings.weights if settings.weights in self.backbone.pretrained else None


@dataclass
class TrainResult:
    """The trained model, its per-epoch history (global epoch numbers) and how the epochs were spent."""

    model: keras.Model
    history: list[dict[str, float]]
    phase_epochs: dict[str, int]
    unfrozen_blocks: int | str


def one_hot_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int,
                    shuffle_seed: int | None = None, batch_fn: Callable | None = None) -> tf.data.Dataset:
    """uint8 images and integer labels as a batched, prefetched tf.data pipeline of (float32, one-hot)."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(
        lambda x, y: (tf.cast(x, tf.float32), tf.one_hot(y, num_classes)), num_parallel_calls=AUTOTUNE
    )
    if batch_fn is not None:
        ds = ds.map(batch_fn, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def compile_model(model: keras.Model, learning_rate: float, jit_compile) -> None:
    model.compile(
        optimizer=keras.optimizers.Lion(learning_rate=learning_rate),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"), keras.metrics.F1Score(average="macro", name="macro_f1")],
        jit_compile=jit_compile,
    )


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's current learning rate to each epoch's logs as ``lr``."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class HistoryRecorder(keras.callbacks.Callback):
    """Collects every epoch's logs, numbered by the global epoch counter."""

    def __init__(self):
        super().__init__()
        self.epochs: list[dict[str, float]] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})


def phase_callbacks(settings: TrainSettings) -> list[keras.callbacks.Callback]:
    """The seed's callbacks, fresh for each phase."""
    return [
        keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy", mode="max", factor=settings.lr_factor,
                                          patience=settings.lr_patience, min_lr=1e-8),
        keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=settings.patience, restore_best_weights=True),
    ]


def build_plan_model(plan: TrialPlan, settings: TrainSettings, image_size: int, num_classes: int):
    """Backbone, head, augmentation layer and the assembled classifier for a plan."""
    weights = plan.weights_for(settings)
    backbone = build_backbone(plan.backbone, image_size, weights, plan.backbone_params)
    head = build_head(backbone.output_shape[1:], num_classes, plan.head)
    augmentation = plan.augmentation.build(plan.augmentation_params, image_size, settings.seed)
    model = assemble(backbone, head, augmentation, frozen_inference=weights is not None)
    return backbone, head, model


def train(plan: TrialPlan, settings: TrainSettings, train_data: Dataset, val_data: Dataset,
          callbacks: list[keras.callbacks.Callback] = ()) -> TrainResult:
    """Train one plan. ``callbacks`` (reporting, pruning) see both phases with one epoch counter."""
    keras.utils.set_random_seed(settings.seed)
    num_classes = train_data.num_classes
    backbone, head, model = build_plan_model(plan, settings, train_data.image_size, num_classes)
    imbalance = plan.imbalance.apply(train_data.labels, settings.seed)
    batch_fn = None
    if plan.augmentation.mixes_labels:
        batch_fn = plan.augmentation.build_batch(plan.augmentation_params, num_classes, settings.seed)
    train_ds = one_hot_dataset(train_data.images[imbalance.indices], train_data.labels[imbalance.indices], num_classes,
                               settings.batch_size, shuffle_seed=settings.seed, batch_fn=batch_fn)
    val_ds = one_hot_dataset(val_data.images, val_data.labels, num_classes, settings.batch_size).cache()
    recorder = HistoryRecorder()
    common = [LearningRateLogger(), recorder, *callbacks]
    fit = dict(x=train_ds, validation_data=val_ds, class_weight=imbalance.class_weight, shuffle=False, verbose=0)

    pretrained = plan.weights_for(settings) is not None
    if pretrained:
        backbone.trainable = False
        head_epochs, finetune_epochs = settings.head_epochs, settings.finetune_epochs
    else:  # a backbone without pretrained weights learns from the first epoch, in one phase
        backbone.trainable = True
        head_epochs, finetune_epochs = settings.head_epochs + settings.finetune_epochs, 0

    compile_model(model, plan.lr_head, settings.jit_compile)
    model.fit(epochs=head_epochs, callbacks=[*phase_callbacks(settings), *common], **fit)
    done = len(recorder.epochs)
    phase_epochs = {"head": done, "finetune": 0}
    unfrozen: int | str = "all" if not pretrained else 0

    if pretrained and finetune_epochs > 0:
        unfrozen = set_trainable_blocks(plan.backbone, backbone, plan.unfreeze_blocks)
        if unfrozen > 0:
            head_weights = model.get_weights()
            head_best = min(e["val_loss"] for e in recorder.epochs)
            compile_model(model, plan.lr_finetune, settings.jit_compile)
            model.fit(initial_epoch=done, epochs=done + finetune_epochs, callbacks=[*phase_callbacks(settings), *common], **fit)
            phase_epochs["finetune"] = len(recorder.epochs) - done
            if min(e["val_loss"] for e in recorder.epochs[done:]) > head_best:
                model.set_weights(head_weights)  # fine-tuning never beat the frozen model: keep the frozen one
    return TrainResult(model=model, history=recorder.epochs, phase_epochs=phase_epochs, unfrozen_blocks=unfrozen)
