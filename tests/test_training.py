"""The two-phase recipe: frozen backbone, then the last blocks; one epoch counter; BatchNorm kept frozen."""

import keras
import numpy as np
import optuna
import pytest
from helpers import Interrupt, blob_data

from bcauto.data.split import stratified_split
from bcauto.model import HeadParams
from bcauto.objective import OptunaReporter
from bcauto.scoring import predict_batches, score
from bcauto.training import TrainSettings, TrialPlan, train


def make_plan(comps, backbone, unfreeze=1, lr_head=3e-3, lr_finetune=1e-3):
    return TrialPlan(
        backbone=comps.backbones.get(backbone),
        augmentation=comps.augmentations.get("none"),
        imbalance=comps.imbalance.get("none"),
        head=HeadParams(64, 32, 0.1, 1e-5),
        lr_head=lr_head,
        lr_finetune=lr_finetune,
        unfreeze_blocks=unfreeze,
    )


@pytest.fixture(scope="module")
def data():
    full = blob_data(200, 32, seed=1)
    split = stratified_split(full, 0.2, seed=0)
    return full.subset(split.train), full.subset(split.val)


def weights_of(model, name):
    return [w.copy() for w in model.get_layer("tiny_pretrained_features").layers[-1].get_layer(name).get_weights()]


def test_phases_share_one_epoch_counter_and_report_each_epoch_to_optuna(tiny_plugin, data):
    train_data, val_data = data
    settings = TrainSettings(batch_size=32, head_epochs=2, finetune_epochs=2, patience=10, weights="imagenet", seed=0)
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    result = train(
        make_plan(tiny_plugin, "tiny_pretrained"),
        settings,
        train_data,
        val_data,
        callbacks=[OptunaReporter(trial, "val_macro_f1", prunable=True)],
    )
    assert [e["epoch"] for e in result.history] == [0, 1, 2, 3]
    assert result.phase_epochs == {"head": 2, "finetune": 2} and result.unfrozen_blocks == 1
    assert sorted(study.trials[trial.number].intermediate_values) == [0, 1, 2, 3]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1", "lr"} <= set(result.history[0])
    assert result.history[2]["lr"] == pytest.approx(1e-3) and result.history[0]["lr"] == pytest.approx(3e-3)


def test_frozen_blocks_and_batchnorm_statistics_do_not_change(tiny_plugin, data):
    train_data, val_data = data
    settings = TrainSettings(batch_size=32, head_epochs=1, finetune_epochs=2, patience=10, weights="imagenet", seed=0)
    keras.utils.set_random_seed(0)
    from bcauto.training import build_parts

    reference = build_parts(make_plan(tiny_plugin, "tiny_pretrained"), settings, 32, 4).model
    before = {name: weights_of(reference, name) for name in ("b1_conv", "b2_conv", "b2_bn")}
    # a head phase that barely moves (lr 1e-6), so the fine-tune certainly beats it and its weights are kept
    result = train(make_plan(tiny_plugin, "tiny_pretrained", lr_head=1e-6, lr_finetune=1e-2), settings, train_data, val_data)
    after = {name: weights_of(result.model, name) for name in ("b1_conv", "b2_conv", "b2_bn")}
    assert result.phase_epochs == {"head": 1, "finetune": 2}
    assert min(e["val_loss"] for e in result.history[1:]) < result.history[0]["val_loss"], "the fine-tune beat the head phase"
    assert all(np.array_equal(a, b) for a, b in zip(before["b1_conv"], after["b1_conv"])), "block 1 stayed frozen"
    assert all(np.array_equal(a, b) for a, b in zip(before["b2_bn"], after["b2_bn"])), "BatchNorm stayed frozen"
    assert not np.array_equal(before["b2_conv"][0], after["b2_conv"][0]), "block 2 was fine-tuned"


def test_backbone_without_pretrained_weights_trains_in_one_phase_and_learns(data):
    from bcauto.plugins import components

    train_data, val_data = data
    settings = TrainSettings(batch_size=32, head_epochs=6, finetune_epochs=2, patience=10, weights="imagenet", seed=0)
    result = train(make_plan(components(), "mini_cnn", lr_head=5e-4), settings, train_data, val_data)
    assert result.phase_epochs == {"head": 8, "finetune": 0} and result.unfrozen_blocks == "all"
    predicted = predict_batches(result.model, val_data.images).argmax(axis=1)
    assert score(val_data.labels, predicted, val_data.class_names).macro_f1 > 0.8


def test_same_seed_same_result(tiny_plugin, data):
    train_data, val_data = data
    settings = TrainSettings(batch_size=32, head_epochs=2, finetune_epochs=0, patience=10, weights="imagenet", seed=3)
    runs = [train(make_plan(tiny_plugin, "tiny_pretrained"), settings, train_data, val_data).history for _ in range(2)]
    assert [e["val_loss"] for e in runs[0]] == pytest.approx([e["val_loss"] for e in runs[1]], rel=1e-4)


def test_without_validation_data_each_phase_trains_its_epochs_at_the_learning_rates_given(tiny_plugin, data):
    from bcauto.training import train_fixed

    train_data, _ = data
    settings = TrainSettings(batch_size=32, head_epochs=30, finetune_epochs=30, patience=1, weights="imagenet", seed=0)
    rates = {"head": [3e-3, 1.5e-3, 7.5e-4], "finetune": [1e-3, 2.5e-4]}
    result = train_fixed(make_plan(tiny_plugin, "tiny_pretrained"), settings, train_data, {"head": 3, "finetune": 2}, rates)
    assert result.phase_epochs == {"head": 3, "finetune": 2} and result.unfrozen_blocks == 1
    assert [e["epoch"] for e in result.history] == [0, 1, 2, 3, 4] and "val_loss" not in result.history[0]
    assert result.learning_rates == pytest.approx([*rates["head"], *rates["finetune"]], rel=1e-6)
    constant = train_fixed(make_plan(tiny_plugin, "tiny_pretrained"), settings, train_data, {"head": 2, "finetune": 0})
    assert constant.learning_rates == pytest.approx([3e-3, 3e-3]) and constant.phase_epochs == {"head": 2, "finetune": 0}


def test_a_trial_records_the_learning_rate_each_epoch_trained_with_and_the_epochs_it_kept(tiny_plugin, data):
    train_data, val_data = data
    settings = TrainSettings(batch_size=32, head_epochs=3, finetune_epochs=2, patience=10, weights="imagenet", seed=0)
    result = train(make_plan(tiny_plugin, "tiny_pretrained"), settings, train_data, val_data)
    # the logged lr is the one after each epoch; an epoch trains with the one logged before it in its phase
    assert result.learning_rates[:3] == pytest.approx([3e-3, *[e["lr"] for e in result.history[:2]]])
    assert result.learning_rates[3] == pytest.approx(1e-3)
    losses = [e["val_loss"] for e in result.history]
    assert result.kept_epochs["head"] == int(np.argmin(losses[:3])) + 1


class FirstEpoch(keras.callbacks.Callback):
    """The weights the model starts its first epoch with, and the epochs it trains."""

    def __init__(self):
        super().__init__()
        self.weights, self.trained = None, []

    def on_epoch_begin(self, epoch, logs=None):
        if self.weights is None:
            self.weights = self.model.get_weights()
        self.trained.append(epoch)


@pytest.mark.parametrize("stopped_at", [1, 4], ids=["in-the-head-phase", "in-the-fine-tune"])
def test_training_stopped_with_a_backup_goes_on_after_its_last_epoch_with_its_weights_and_record(tiny_plugin, data, tmp_path, stopped_at):
    from bcauto.training import train_fixed

    train_data, _ = data
    settings = TrainSettings(batch_size=32, head_epochs=30, finetune_epochs=30, patience=1, weights="imagenet", seed=0)
    rates = {"head": [3e-3, 1.5e-3, 7.5e-4], "finetune": [1e-3, 2.5e-4]}
    plan, epochs = make_plan(tiny_plugin, "tiny_pretrained"), {"head": 3, "finetune": 2}
    interrupt = Interrupt(stopped_at)
    with pytest.raises(KeyboardInterrupt):
        train_fixed(plan, settings, train_data, epochs, rates, [interrupt], backup_dir=tmp_path)
    first = FirstEpoch()
    result = train_fixed(make_plan(tiny_plugin, "tiny_pretrained"), settings, train_data, epochs, rates, [first], backup_dir=tmp_path)
    assert first.trained == list(range(stopped_at, 5)) and result.resumed_epochs == stopped_at
    assert all(np.array_equal(a, b) for a, b in zip(first.weights, interrupt.weights, strict=True))
    assert result.phase_epochs == epochs and [e["epoch"] for e in result.history] == [0, 1, 2, 3, 4]
    assert result.learning_rates == pytest.approx([*rates["head"], *rates["finetune"]], rel=1e-6)
    # without a backup folder nothing is resumed
    assert train_fixed(plan, settings, train_data, {"head": 1, "finetune": 0}).resumed_epochs == 0


def test_a_backup_whose_record_is_missing_is_refused_with_what_to_delete(tiny_plugin, data, tmp_path):
    from bcauto.errors import BcautoError
    from bcauto.training import train_fixed

    train_data, _ = data
    settings = TrainSettings(batch_size=32, head_epochs=30, finetune_epochs=30, patience=1, weights="imagenet", seed=0)
    plan = make_plan(tiny_plugin, "tiny_pretrained")
    with pytest.raises(KeyboardInterrupt):
        train_fixed(plan, settings, train_data, {"head": 3, "finetune": 0}, callbacks=[Interrupt(2)], backup_dir=tmp_path)
    (tmp_path / "head" / "record.json").unlink()
    expected = f"backed up after epoch 2, but its record .record.json. holds 0 epochs; delete {tmp_path / 'head'} to train"
    with pytest.raises(BcautoError, match=expected):
        train_fixed(plan, settings, train_data, {"head": 3, "finetune": 0}, backup_dir=tmp_path)
