"""The search a user writes by hand, the optuna-examples way: every trial builds a Keras model and fits it
on images, paying the frozen backbone's forward pass every epoch. No cache, no pruning.

Same space and recipe as bench/studies/speed.toml: frozen ResNet50 + the seed's head, Lion, ReduceLROnPlateau
on val accuracy, EarlyStopping on val loss, class weights or none.
"""

from __future__ import annotations

import keras
import numpy as np
import optuna
from sklearn.metrics import f1_score


def class_weights(labels: np.ndarray) -> dict[int, float]:
    counts = np.bincount(labels)
    return {c: len(labels) / (len(counts) * n) for c, n in enumerate(counts)}


def make_objective(x_train, y_train, x_val, y_val, weights_file: str, epochs: int, patience: int, batch_size: int = 64):
    num_classes = int(max(y_train.max(), y_val.max())) + 1
    size = x_train.shape[1]

    def objective(trial: optuna.Trial) -> float:
        keras.backend.clear_session()
        imbalance = trial.suggest_categorical("imbalance", ["none", "class_weights"])
        units1 = trial.suggest_categorical("head_units1", [128, 256, 512])
        units2 = trial.suggest_categorical("head_units2", [64, 128])
        dropout = trial.suggest_float("head_dropout", 0.0, 0.5)
        lr = trial.suggest_float("lr_head", 1e-4, 3e-3, log=True)

        base = keras.applications.ResNet50(include_top=False, weights=weights_file, input_shape=(size, size, 3))
        base.trainable = False
        inputs = keras.Input((size, size, 3))
        x = keras.applications.resnet50.preprocess_input(inputs)
        x = base(x, training=False)
        x = keras.layers.GlobalAveragePooling2D()(x)
        for units in (units1, units2):
            x = keras.layers.Dense(units, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-4))(x)
            x = keras.layers.Dropout(dropout)(x)
        outputs = keras.layers.Dense(num_classes, activation="softmax", kernel_regularizer=keras.regularizers.L2(1e-4))(x)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=keras.optimizers.Lion(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(
            x_train.astype("float32"),
            y_train,
            validation_data=(x_val.astype("float32"), y_val),
            epochs=epochs,
            batch_size=batch_size,
            verbose=0,
            class_weight=class_weights(y_train) if imbalance == "class_weights" else None,
            callbacks=[
                keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy", mode="max", factor=0.5, patience=2),
                keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True),
            ],
        )
        predicted = model.predict(x_val.astype("float32"), verbose=0).argmax(axis=1)
        return float(f1_score(y_val, predicted, average="macro"))

    return objective


def run(x_train, y_train, x_val, y_val, weights_file: str, trials: int, epochs: int, patience: int, seed: int) -> optuna.Study:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(make_objective(x_train, y_train, x_val, y_val, weights_file, epochs, patience), n_trials=trials)
    return study
