"""refit, evaluate and predict on a tiny in-process study (synthetic 32x32 images, two epochs per trial)."""

import csv
import json
from pathlib import Path

import keras
import numpy as np
import optuna
import pytest
from helpers import Interrupt, tiny_study_toml
from mlflow.tracking import MlflowClient
from PIL import Image

from bcauto.cli import main

TINY_SEARCH = {"loss": ["crossentropy", "focal"], "label_smoothing": {"low": 0.0, "high": 0.2}}
TINY_STUDY = tiny_study_toml(search=TINY_SEARCH)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("refit")
    (root / "tiny.toml").write_text(TINY_STUDY)
    stores = ["--storage", f"sqlite:///{root}/optuna.db", "--tracking-uri", f"sqlite:///{root}/mlflow.db"]
    assert main(["search", "--study", str(root / "tiny.toml"), "--data", "synthetic:240", "--workers", "0", *stores]) == 0
    return root, stores


@pytest.fixture(scope="module")
def refitted(study):
    root, stores = study
    assert main(["refit", "--name", "tiny", *stores, "--out", str(root / "model")]) == 0
    return root / "model"


@pytest.fixture(scope="module")
def ensembled(study):
    root, stores = study
    assert main(["refit", "--name", "tiny", "--top", "2", *stores, "--out", str(root / "ensemble")]) == 0
    return root / "ensemble"


def load(root):
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{root}/optuna.db")


def synthetic_npz(path, class_subset=None, n=48, seed=5):
    """Synthetic 32x32 images saved as an .npz, optionally only some classes (relabelled, in another order)."""
    from bcauto_builtin.sources import BLOOD_CELL_CLASSES
    from bcauto_builtin.sources.synthetic import generate

    images, labels = generate(n * 4, 32, seed)
    names = list(BLOOD_CELL_CLASSES)
    if class_subset:
        keep = np.isin(labels, [names.index(c) for c in class_subset])
        images, labels = images[keep], np.array([class_subset.index(names[y]) for y in labels[keep]])
        names = list(class_subset)
    np.savez(path, images=images[:n], labels=labels[:n], class_names=np.array(names))
    return path


def test_plan_from_trial_reproduces_the_trials_params(study):
    from bcauto.config import load_study
    from bcauto.plugins import components
    from bcauto.refit import plan_from_trial
    from bcauto.search_space import plan_params
    from bcauto.study import settings_from

    root, _ = study
    cfg = load_study(root / "tiny.toml")
    trials = load(root).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 3
    for trial in trials:
        logged = trial.user_attrs["params"]
        settings = settings_from(cfg, logged["seed"], has_gpu=False)
        params = plan_params(plan_from_trial(trial, cfg, components(), settings), settings)
        assert {"loss", "label_smoothing"} <= set(params)
        for key, value in params.items():
            assert logged[key] == (pytest.approx(value) if isinstance(value, float) else value), key


def test_plan_from_trial_refuses_a_changed_study_file(study, tmp_path):
    from bcauto.config import load_study
    from bcauto.errors import BcautoError
    from bcauto.plugins import components
    from bcauto.refit import plan_from_trial

    root, _ = study
    changed = tmp_path / "tiny.toml"
    changed.write_text(
        TINY_STUDY.replace('loss = ["crossentropy", "focal"]', 'loss = "focal"').replace("head_units1 = 32", "head_units1 = 48")
    )
    trial = load(root).trials[0]
    with pytest.raises(BcautoError, match="another plan|no longer asks"):
        plan_from_trial(trial, load_study(changed), components())


def test_plan_from_trial_lists_a_value_outside_a_narrowed_range_instead_of_optunas_warning(study, tmp_path):
    import warnings

    from bcauto.config import load_study
    from bcauto.plugins import components
    from bcauto.refit import plan_from_trial

    root, _ = study
    trial = load(root).trials[0]
    value = trial.params["label_smoothing"]
    narrowed = tmp_path / "tiny.toml"
    narrowed.write_text(tiny_study_toml(search={**TINY_SEARCH, "label_smoothing": {"low": value + 0.1, "high": value + 0.2}}))
    outside: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = plan_from_trial(trial, load_study(narrowed), components(), outside=outside)
    assert plan.label_smoothing == pytest.approx(value)
    assert outside == [f"label_smoothing = {value}"]
    assert not [w for w in caught if "out of the range" in str(w.message)]


def test_refit_writes_the_model_directory_logs_a_refit_run_and_registers_a_version(study, refitted):
    from bcauto.bundle import load_bundle

    root, _ = study
    assert (refitted / "model.keras").is_file() and (refitted / "bcauto-model.json").is_file()
    info = json.loads((refitted / "bcauto-model.json").read_text())
    best = load(root).best_trial
    assert info["trials"] == [best.number] and info["study"] == "tiny" and info["image_size"] == 32
    assert len(info["class_names"]) == 8 and info["preprocessing"] == ["unit"]
    assert info["canonicalization"] == [info["members"][0]["params"]["canonicalization"]]
    assert info["data"]["fingerprint"] == best.user_attrs["params"]["data.fingerprint"]
    assert info["data"]["images"] == 240  # training and validation split together
    assert info["members"][0]["epochs"]["head"] <= best.user_attrs["phase_epochs"]["head"]
    assert info["members"][0]["params"]["loss"] == best.user_attrs["params"]["loss"]
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id], "tags.`bcauto.role` = 'refit'")
    assert info["mlflow"]["run_id"] in {r.info.run_id for r in runs}
    run = client.get_run(info["mlflow"]["run_id"])
    assert run.data.tags["bcauto.trials"] == str(best.number) and run.info.status == "FINISHED"
    versions = client.search_model_versions("name = 'bcauto-tiny'")
    assert info["mlflow"]["version"] in {v.version for v in versions}
    assert {v.run_id for v in versions} >= {info["mlflow"]["run_id"]}
    bundle = load_bundle(refitted)
    probs = bundle.model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0)
    assert probs.shape == (2, 8) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_refit_refuses_other_data_than_the_study_searched(study, capsys):
    root, stores = study
    capsys.readouterr()
    assert main(["refit", "--name", "tiny", *stores, "--data", "synthetic:200", "--out", str(root / "other")]) == 2
    assert "other data" in capsys.readouterr().err.replace("\n", " ")
    assert not (root / "other").exists()


def test_refit_data_of_a_cleaned_study_is_cleaned_again_before_the_fingerprint_check(tmp_path):
    from bcauto.audit import audit_and_clean
    from bcauto.config import load_study
    from bcauto.data.sources import load_data
    from bcauto.errors import BcautoError
    from bcauto.plugins import components
    from bcauto.refit import load_study_data

    path = tmp_path / "dirty.npz"
    with np.load(synthetic_npz(tmp_path / "clean.npz", n=60)) as clean:
        images, labels = clean["images"], clean["labels"]
        np.savez(
            path, images=np.concatenate([images, images[:4]]), labels=np.concatenate([labels, labels[:4]]), class_names=clean["class_names"]
        )  # four exact copies for the audit to remove
    comps = components()
    cleaned, removed, _ = audit_and_clean(load_data(str(path), 32, comps, {"seed": 0}))
    assert len(removed) >= 4 and len(cleaned.labels) == 64 - len(removed)
    cfg_file = tmp_path / "tiny.toml"
    cfg_file.write_text(TINY_STUDY)
    params = {"data.source": str(path), "image_size": "32", "study_seed": "0", "data.fingerprint": cleaned.fingerprint()}
    data = load_study_data(None, {**params, "data.clean": "True"}, load_study(cfg_file), comps, "tiny")
    assert data.fingerprint() == cleaned.fingerprint() and len(data.labels) == len(cleaned.labels)
    with pytest.raises(BcautoError, match="other data"):  # without the flag the raw file differs from what was searched
        load_study_data(None, {**params, "data.clean": "False"}, load_study(cfg_file), comps, "tiny")


def test_refit_at_another_size_keeps_the_images_the_audit_kept_at_the_searched_size(tmp_path, monkeypatch):
    """Run again at another size, the audit could flag other images; the refit trains on the ones the search kept."""
    import dataclasses

    import bcauto.audit
    from bcauto.config import load_study
    from bcauto.data.sources import load_data
    from bcauto.plugins import components
    from bcauto.refit import load_study_data

    def audit_that_depends_on_the_size(data, options=None, kinds=None):
        flagged = len(data.labels) - 1 if data.image_size == 32 else 0
        kept = np.setdiff1d(np.arange(len(data.labels)), [flagged])
        note = f"audit: removed 1 of {len(data.labels)} images"
        return dataclasses.replace(data.subset(kept), notes=(*data.notes, note)), [{"index": flagged}], None

    monkeypatch.setattr(bcauto.audit, "audit_and_clean", audit_that_depends_on_the_size)
    path = synthetic_npz(tmp_path / "cells.npz", n=40)
    comps = components()
    searched, _, _ = audit_that_depends_on_the_size(load_data(str(path), 32, comps, {"seed": 0}))
    cfg_file = tmp_path / "tiny.toml"
    cfg_file.write_text(TINY_STUDY)
    params = {"data.source": str(path), "image_size": "32", "study_seed": "0", "data.clean": "True"}
    params["data.fingerprint"] = searched.fingerprint()
    data = load_study_data(None, params, load_study(cfg_file), comps, "tiny", image_size=40)
    expected = load_data(str(path), 40, comps, {"seed": 0}).subset(np.arange(39))
    assert data.image_size == 40 and np.array_equal(data.images, expected.images) and np.array_equal(data.labels, expected.labels)
    assert data.notes[: len(searched.notes)] == searched.notes and any("audit: removed 1 of 40" in note for note in data.notes)
    (enlarged,) = data.notes[len(searched.notes) :]  # the only note new at 40: the 32-pixel images were enlarged
    assert enlarged.startswith(f"{path}: 40 of 40 images enlarged to 40x40 (the smallest has a 32-pixel side)")


def test_top2_ensemble_outputs_the_mean_of_its_members(study, ensembled):
    from bcauto.bundle import load_bundle
    from bcauto.data.sources import load_data
    from bcauto.plugins import components

    bundle = load_bundle(ensembled)
    assert len(bundle.info["trials"]) == 2 and bundle.info["ensemble"]
    images = load_data("synthetic:24", 32, components(), {"seed": 11}).images.astype(np.float32)
    members = [bundle.model.get_layer(f"member_{i}") for i in range(2)]
    outputs = [m.predict(images, verbose=0) for m in members]
    assert not np.allclose(outputs[0], outputs[1])
    np.testing.assert_allclose(bundle.model.predict(images, verbose=0), np.mean(outputs, axis=0), atol=1e-6)


def test_select_trials_takes_the_pareto_front_by_shifted_score_for_two_objectives():
    from bcauto.refit import select_trials

    study = optuna.create_study(directions=["maximize", "maximize"])
    for values in ([0.9, 0.5], [0.8, 0.7], [0.6, 0.8], [0.5, 0.4]):
        study.add_trial(optuna.trial.create_trial(values=values))
    assert [t.values for t in select_trials(study, 2)] == [[0.6, 0.8], [0.8, 0.7]]
    assert select_trials(study, 4)[-1].values == [0.5, 0.4]


def test_phase_schedule_takes_the_kept_epochs_and_their_learning_rates_from_the_trial():
    from bcauto.refit import phase_schedule

    lrs = [1e-3, 1e-3, 5e-4, 5e-4, 1e-5, 1e-5, 5e-6]
    trial = optuna.trial.create_trial(
        value=0.5, user_attrs={"phase_epochs": {"head": 4, "finetune": 3}, "kept_epochs": {"head": 3, "finetune": 2}, "epoch_lr": lrs}
    )
    schedule = phase_schedule(trial)
    assert schedule.epochs == {"head": 3, "finetune": 2}
    assert schedule.learning_rates == {"head": [1e-3, 1e-3, 5e-4], "finetune": [1e-5, 1e-5]}
    assert phase_schedule(trial, "trained").epochs == {"head": 4, "finetune": 3}
    older = optuna.trial.create_trial(value=0.5, user_attrs={"phase_epochs": {"head": 4, "finetune": 3}})
    assert phase_schedule(older).epochs == {"head": 4, "finetune": 3}  # recorded nothing more: every epoch it trained
    assert phase_schedule(older).learning_rates == {"head": None, "finetune": None}


def test_cosine_schedule_stretches_the_kept_epochs_and_lowers_each_phases_rate_from_the_trials_first():
    from bcauto.errors import BcautoError
    from bcauto.refit import PhaseSchedule, cosine_schedule

    kept = PhaseSchedule({"head": 3, "finetune": 2}, {"head": [1e-3, 1e-3, 5e-4], "finetune": [1e-5, 5e-6]})
    stretched = cosine_schedule(kept, 10, {"head": 9.0, "finetune": 9.0})
    assert stretched.epochs == {"head": 6, "finetune": 4}  # the trial's 3:2
    head, finetune = stretched.learning_rates["head"], stretched.learning_rates["finetune"]
    assert head[0] == pytest.approx(1e-3) and finetune[0] == pytest.approx(1e-5)  # the trial's rates, not the plan's
    assert all(a > b for a, b in zip(head, head[1:])) and head[-1] < 0.1 * head[0]
    assert head[3] == pytest.approx(1e-3 * (1 + np.cos(np.pi * 3 / 6)) / 2)
    assert all(a > b for a, b in zip(finetune, finetune[1:]))
    untimed = PhaseSchedule({"head": 4, "finetune": 0}, {"head": None, "finetune": None})
    constant = cosine_schedule(untimed, 5, {"head": 2e-3, "finetune": 1e-5})
    assert constant.epochs == {"head": 5, "finetune": 0} and constant.learning_rates["head"][0] == pytest.approx(2e-3)
    assert cosine_schedule(kept, 1, {"head": 1.0, "finetune": 1.0}).epochs == {"head": 1, "finetune": 0}
    with pytest.raises(BcautoError, match="1 or more, got 0"):
        cosine_schedule(kept, 0, {"head": 1.0, "finetune": 1.0})


def test_refit_for_a_number_of_epochs_trains_them_at_a_falling_rate_and_records_it(study, capsys):
    from bcauto.bundle import load_bundle

    root, stores = study
    longer = root / "longer.toml"  # the search's study file, but for [train] refit_epochs
    longer.write_text(tiny_study_toml(search=TINY_SEARCH, train={"refit_epochs": 4}))
    assert main(["refit", "--name", "tiny", *stores, "--study", str(longer), "--out", str(root / "longer")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "head 4, fine-tuning 0 (4 epochs" in out
    # the edit is said and kept with the model, not refused
    assert f"{longer} differs from the file the study searched with: [train] refit_epochs: 0 -> 4." in out
    assert load_bundle(root / "longer").info["study_file_changes"] == ["[train] refit_epochs: 0 -> 4"]
    member = load_bundle(root / "longer").info["members"][0]
    best = load(root).best_trial
    first = best.user_attrs["epoch_lr"][0]
    assert member["epochs"] == {"head": 4, "finetune": 0} and member["epochs_source"].startswith("4 epochs")
    # the optimizer's rate at each epoch: the trial's first, then down a half cosine
    assert member["learning_rates"] == pytest.approx([first * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(4)], rel=1e-5)
    # --epochs overrides the study file
    assert main(["refit", "--name", "tiny", *stores, "--study", str(longer), "--epochs", "best", "--out", str(root / "kept")]) == 0
    assert load_bundle(root / "kept").info["members"][0]["epochs"] == best.user_attrs["kept_epochs"]


def test_an_interrupted_refit_run_again_keeps_its_finished_member_and_goes_on_after_the_last_epoch(study, monkeypatch, capsys):
    import bcauto.refit
    from bcauto.bundle import load_bundle
    from bcauto.refit import select_trials

    root, stores = study
    three = root / "three.toml"
    three.write_text(tiny_study_toml(search=TINY_SEARCH, train={"refit_epochs": 3}))
    command = ["refit", "--name", "tiny", *stores, "--study", str(three), "--top", "2", "--out", str(root / "resumed")]
    train_member, trained = bcauto.refit.train_member, []

    def stopping_in_the_second_member(plan, settings, data, schedule, callbacks=(), backup_dir=None):
        trained.append(backup_dir)
        stop = [Interrupt(2)] if len(trained) == 2 else []
        return train_member(plan, settings, data, schedule, [*callbacks, *stop], backup_dir)

    monkeypatch.setattr(bcauto.refit, "train_member", stopping_in_the_second_member)
    capsys.readouterr()
    assert main(command) == 130
    printed = "".join(capsys.readouterr().out.split())
    assert f"interrupted:theepochstrainedsofararekeptin{root / 'resumed.partial'};runthesamecommandagain" in printed
    assert not (root / "resumed").exists()
    # a rerun with other settings would mix two refits' epochs: refused, and what was kept is left as it was
    kept = sorted(str(path.relative_to(root)) for path in (root / "resumed.partial").rglob("*"))
    assert main([*command, "--epochs", "4"]) == 2
    assert "withotherepochs,learningrates;delete" in "".join(capsys.readouterr().err.split())
    assert sorted(str(path.relative_to(root)) for path in (root / "resumed.partial").rglob("*")) == kept
    trained.clear()
    assert main(command) == 0
    printed = "".join(capsys.readouterr().out.split())
    first, second = select_trials(load(root), 2)
    assert f"trial{first.number}:" in printed and "trainedbeforetheinterruption" in printed
    assert f"goingonfromitsbackupin{root / 'resumed.partial' / f'trial_{second.number}' / 'backup'}" in printed
    assert len(trained) == 1  # only the interrupted member trains again
    members = load_bundle(root / "resumed").info["members"]
    assert [m["trial"] for m in members] == [first.number, second.number]
    assert "resumed_after_epoch" not in members[0] and members[1]["resumed_after_epoch"] == 2
    assert [len(m["learning_rates"]) for m in members] == [3, 3]
    assert not (root / "resumed.partial").exists()


def test_a_signal_whose_keyboard_interrupt_is_lost_still_stops_the_refit_at_the_next_batch(study, monkeypatch, capsys):
    """SIGTERM's handler run inside a ``__del__``, as when the signal lands while the garbage collector runs a
    callback: Python prints its KeyboardInterrupt as ignored and goes on. The refit stops all the same before the next
    batch (bcauto.training.StopWhenAsked) and keeps the epochs trained so far, as after any Ctrl-C."""
    import signal
    import sys

    import bcauto.refit

    root, stores = study
    three = root / "lost.toml"
    three.write_text(tiny_study_toml(search=TINY_SEARCH, train={"refit_epochs": 3}))
    train_member, lost = bcauto.refit.train_member, []

    class Doomed:
        def __del__(self):
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)

    class SigtermInADestructor(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                Doomed()  # dropped at once: its __del__ runs here

    def with_a_lost_signal(plan, settings, data, schedule, callbacks=(), backup_dir=None):
        return train_member(plan, settings, data, schedule, [*callbacks, SigtermInADestructor()], backup_dir)

    monkeypatch.setattr(bcauto.refit, "train_member", with_a_lost_signal)
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: lost.append(unraisable.exc_type))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever started pytest
    try:
        code = main(["refit", "--name", "tiny", *stores, "--study", str(three), "--out", str(root / "lost")])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert lost == [KeyboardInterrupt]  # the signal's own KeyboardInterrupt went nowhere
    assert code == 130 and "interrupted:" in capsys.readouterr().out
    assert not (root / "lost").exists()
    assert sorted(p.name for p in (root / "lost.partial").iterdir()) and list((root / "lost.partial").rglob("record.json"))


def test_refit_of_an_unchanged_study_file_says_nothing_of_changes(refitted):
    from bcauto.bundle import load_bundle

    assert "study_file_changes" not in load_bundle(refitted).info


def test_refit_uses_the_study_file_recorded_by_the_search_when_the_file_is_gone(study, capsys):
    from bcauto.bundle import load_bundle

    root, stores = study
    moved = root / "tiny.moved"
    (root / "tiny.toml").rename(moved)
    try:
        capsys.readouterr()
        assert main(["refit", "--name", "tiny", *stores, "--epochs", "1", "--out", str(root / "recorded")]) == 0
    finally:
        moved.rename(root / "tiny.toml")
    assert "is not there; refitting with the copy of it recorded with the study" in " ".join(capsys.readouterr().out.split())
    info = load_bundle(root / "recorded").info
    assert info["study_file"] == str(root / "tiny.toml") and info["members"][0]["trial"] == load(root).best_trial.number


def test_refit_at_another_image_size_checks_the_images_at_the_searched_size_and_trains_at_the_new_one(study, capsys):
    from bcauto.bundle import load_bundle

    root, stores = study
    capsys.readouterr()
    assert main(["refit", "--name", "tiny", *stores, "--image-size", "40", "--out", str(root / "larger")]) == 0
    assert "at 40x40 (searched at 32x32)" in " ".join(capsys.readouterr().out.split())
    bundle = load_bundle(root / "larger")
    assert bundle.info["image_size"] == 40 and bundle.info["searched_image_size"] == 32
    assert tuple(bundle.model.input_shape[1:]) == (40, 40, 3)
    probs = bundle.model.predict(np.zeros((2, 40, 40, 3), np.float32), verbose=0)
    assert probs.shape == (2, 8) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # the study file's [train] refit_image_size asks the same; other data is refused at the searched size first
    sized = root / "sized.toml"
    sized.write_text(tiny_study_toml(search=TINY_SEARCH, train={"refit_image_size": 40}))
    args = ["refit", "--name", "tiny", *stores, "--study", str(sized)]
    assert main([*args, "--data", "synthetic:200", "--out", str(root / "sized-other")]) == 2
    assert "other data" in capsys.readouterr().err.replace("\n", " ") and not (root / "sized-other").exists()
    assert main([*args, "--epochs", "1", "--out", str(root / "sized")]) == 0
    assert load_bundle(root / "sized").info["image_size"] == 40


def test_kept_epochs_end_each_phase_at_its_lowest_validation_loss_and_drop_a_fine_tune_that_never_beat_the_head():
    from bcauto.training import kept_epochs

    assert kept_epochs([1.0, 0.5, 0.6, 0.7, 0.55, 0.4, 0.45], {"head": 4, "finetune": 3}) == {"head": 2, "finetune": 2}
    assert kept_epochs([1.0, 0.5, 0.6, 0.7, 0.55, 0.6, 0.65], {"head": 4, "finetune": 3}) == {"head": 2, "finetune": 0}
    assert kept_epochs([0.9, 0.8, 0.7], {"head": 3, "finetune": 0}) == {"head": 3, "finetune": 0}


# learning rates that must fall during the search (a plateau of one epoch halves them), so replaying them is visible
SCHEDULED_STUDY = tiny_study_toml(
    study={"trials": 2, "seed": 3, "pruner": "none"},
    train={"weights": "none", "batch_size": 32, "head_epochs": 4, "finetune_epochs": 0, "patience": 2, "lr_patience": 1, "lr_factor": 0.5},
)


@pytest.fixture(scope="module")
def untracked_refit(tmp_path_factory):
    """A search tracked in MLflow, its MLflow store then deleted, and a refit whose tracking store cannot be opened."""
    root = tmp_path_factory.mktemp("untracked")
    (root / "scheduled.toml").write_text(SCHEDULED_STUDY)
    storage = ["--storage", f"sqlite:///{root}/optuna.db"]
    assert (
        main(
            [
                "search",
                "--study",
                str(root / "scheduled.toml"),
                "--data",
                "synthetic:160",
                "--workers",
                "0",
                *storage,
                "--tracking-uri",
                f"sqlite:///{root}/mlflow.db",
            ]
        )
        == 0
    )
    (root / "mlflow.db").unlink()
    (root / "not-a-folder").write_text("")  # a file where the tracking store's folder should be: it cannot be created
    return root, storage, f"sqlite:///{root}/not-a-folder/mlflow.db"


def test_refit_with_tracking_off_writes_a_working_model_trained_at_the_trials_recorded_learning_rates(untracked_refit, capsys):
    from bcauto.bundle import load_bundle

    root, storage, tracking = untracked_refit
    capsys.readouterr()
    assert main(["refit", "--name", "scheduled", *storage, "--tracking-uri", tracking, "--out", str(root / "model")]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "MLflow tracking skipped" in printed and "MLflow run -" in printed
    bundle = load_bundle(root / "model")
    assert "mlflow" not in bundle.info
    probs = bundle.model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0)
    assert probs.shape == (2, 8) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    best = optuna.load_study(study_name="scheduled", storage=storage[1]).best_trial
    member, kept, recorded = bundle.info["members"][0], best.user_attrs["kept_epochs"], best.user_attrs["epoch_lr"]
    assert len(recorded) == best.user_attrs["phase_epochs"]["head"]
    assert member["epochs"] == kept and member["epochs_source"] == "the epochs the trial kept, at its learning rates"
    # the learning rate the refit's optimizer had at each epoch, as the trial had it at the same epoch
    assert member["learning_rates"] == pytest.approx(recorded[: kept["head"]], rel=1e-6)


def test_evaluate_on_a_class_subset_reports_only_the_present_classes(refitted, tmp_path, capsys):
    subset = ["platelet", "lymphocyte", "neutrophil"]
    data = synthetic_npz(tmp_path / "subset.npz", subset)
    capsys.readouterr()
    assert main(["evaluate", str(refitted), "--data", str(data), "--json", "--out", str(tmp_path / "eval")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(result["classes_present"]) == sorted(subset) and len(result["classes_absent"]) == 5
    assert sorted(row["class"] for row in result["per_class"]) == sorted(subset)
    assert sum(row["support"] for row in result["per_class"]) == result["images"] == 48
    assert 0.0 <= result["macro_f1"] <= 1.0 and result["averaged_over"] == "classes present in the data"
    interval = result["interval"]
    assert interval["accuracy"][0] <= result["accuracy"] <= interval["accuracy"][1]
    assert interval["macro_f1"][0] <= result["macro_f1"] <= interval["macro_f1"][1] and interval["level"] == 0.95
    assert (tmp_path / "eval" / "confusion_matrix.png").stat().st_size > 0
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["macro_f1"] == result["macro_f1"]


def test_evaluate_refuses_class_names_the_model_does_not_know(refitted, tmp_path, capsys):
    from bcauto_builtin.sources.synthetic import generate

    images, labels = generate(16, 32, 0)
    np.savez(tmp_path / "odd.npz", images=images, labels=labels % 2, class_names=np.array(["neutrophil", "blast"]))
    capsys.readouterr()
    assert main(["evaluate", str(refitted), "--data", str(tmp_path / "odd.npz"), "--out", str(tmp_path / "e")]) == 2
    assert "'blast'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """An untrained model with the eight BloodMNIST classes: enough to check how evaluate reads the data's classes."""
    from helpers import untrained_model_dir

    from bcauto_builtin.sources import BLOOD_CELL_CLASSES

    return untrained_model_dir(tmp_path_factory.mktemp("untrained") / "model", BLOOD_CELL_CLASSES)


def test_a_model_that_learned_nothing_on_other_images_is_told_that_another_lab_may_be_the_cause(untrained, tmp_path):
    """A model trained on other images than it is scored on may fail because those come from another lab: evaluate's
    warning says so before the training causes, which alone would send the user to retrain."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(untrained, model)
    info = json.loads((model / "bcauto-model.json").read_text())
    info["data"] = {"source": "training-lab", "fingerprint": "0123456789abcdef", "images": 5000}
    (model / "bcauto-model.json").write_text(json.dumps(info))
    assert main(["evaluate", str(model), "--data", "synthetic:80", "--out", str(tmp_path / "evaluation")]) == 0
    warning = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())["warning"]
    assert "another lab, microscope, camera or stain" in warning and "docs/deploying-in-another-lab.md" in warning
    assert warning.index("another lab") < warning.index("Likely causes: too few images (5000")


def test_evaluate_says_which_data_class_it_matched_to_which_model_class(untrained, tmp_path, capsys):
    from bcauto_builtin.sources.synthetic import generate

    images, labels = generate(24, 32, 0)
    names = ["Neutrophil", "immature-granulocyte", "platelet"]
    np.savez(tmp_path / "lab.npz", images=images, labels=labels % 3, class_names=np.array(names))
    command = ["evaluate", str(untrained), "--data", str(tmp_path / "lab.npz"), "--out", str(tmp_path / "e")]
    capsys.readouterr()
    assert main([*command, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["class_matching"] == [
        {"data": "Neutrophil", "model": "neutrophil"},
        {"data": "immature-granulocyte", "model": "immature_granulocyte"},
    ]
    assert result["assumed"] is None
    assert main(command) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "'Neutrophil' as 'neutrophil', 'immature-granulocyte' as 'immature_granulocyte'" in printed
    assert "'platelet' as" not in printed


def test_evaluate_of_an_npz_without_class_names_takes_the_models_class_order_and_says_so(untrained, tmp_path, capsys):
    from bcauto_builtin.sources.synthetic import generate

    images, labels = generate(24, 32, 0)
    np.savez(tmp_path / "unnamed.npz", images=images, labels=labels % 3)
    command = ["evaluate", str(untrained), "--data", str(tmp_path / "unnamed.npz"), "--out", str(tmp_path / "e")]
    capsys.readouterr()
    assert main([*command, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["assumed"].endswith("its labels were taken in the model's class order: 0 = basophil, 1 = eosinophil, 2 = erythroblast")
    assert sorted(result["classes_present"]) == ["basophil", "eosinophil", "erythroblast"]
    assert result["class_matching"] == []
    assert main(command) == 0
    assert "assumed: " in capsys.readouterr().out
    np.savez(tmp_path / "many.npz", images=images[:10], labels=np.arange(10))
    assert main(["evaluate", str(untrained), "--data", str(tmp_path / "many.npz"), "--out", str(tmp_path / "e")]) == 2
    assert "add a 'class_names' array" in capsys.readouterr().err


def test_classes_restricts_predictions_to_the_named_classes_in_evaluate_and_predict(refitted, tmp_path, capsys):
    from bcauto.bundle import load_bundle
    from bcauto.evaluate import predict_probs

    subset = ["platelet", "lymphocyte", "neutrophil"]
    data = synthetic_npz(tmp_path / "subset.npz", subset)
    allowed = "Neutrophil, lymphocyte,platelet"  # matched by name, as the data's classes are
    capsys.readouterr()
    assert main(["evaluate", str(refitted), "--data", str(data), "--json", "--out", str(tmp_path / "e"), "--classes", allowed]) == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(result["predicted_among"]) == sorted(subset)
    # what the unrestricted model says, restricted by hand: the argmax over the three named classes
    bundle = load_bundle(refitted)
    names = list(bundle.class_names)
    keep = [names.index(c) for c in subset]
    with np.load(data) as npz:
        images, labels = npz["images"], npz["labels"]
    expected = np.array(keep)[predict_probs(bundle.model, images)[:, keep].argmax(axis=1)]
    truth = np.array([names.index(subset[y]) for y in labels])
    assert result["accuracy"] == pytest.approx(float(np.mean(expected == truth)))
    np.savez(tmp_path / "plain.npz", images=images)
    out = tmp_path / "preds.csv"
    assert main(["predict", str(refitted), str(tmp_path / "plain.npz"), "--out", str(out), "--classes", allowed]) == 0
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["predicted"] for row in rows] == [names[i] for i in expected]
    for row in rows:
        assert all(float(row[f"prob_{c}"]) == 0.0 for c in names if c not in subset)
        assert sum(float(row[f"prob_{c}"]) for c in subset) == pytest.approx(1.0, abs=1e-4)
    assert main(["predict", str(refitted), str(tmp_path / "plain.npz"), "--out", str(out), "--classes", "neutrophil,blast"]) == 2
    assert "'blast'" in capsys.readouterr().err


def test_evaluate_shift_json_has_every_corruption_and_severity(refitted, tmp_path, capsys):
    from bcauto.plugins import components

    data = synthetic_npz(tmp_path / "small.npz", n=16)
    capsys.readouterr()
    assert main(["evaluate", str(refitted), "--data", str(data), "--shift", "--json", "--out", str(tmp_path / "e")]) == 0
    shift = json.loads(capsys.readouterr().out)["shift"]
    shifts = components().shifts
    assert set(shift["macro_f1"]) == set(shifts.names())
    for name in shifts.names():
        assert set(shift["macro_f1"][name]) == {str(s) for s in shifts.get(name).severities}
        assert all(0.0 <= v <= 1.0 for v in shift["macro_f1"][name].values())
    assert 0.0 <= shift["mean_macro_f1"] <= 1.0 and set(shift["by_severity"]) == {"1", "2", "3", "4", "5"}
    assert set(shift["by_group"]) == {"corruption", "lab"}
    lab = [v for name in shifts.names() if shifts.get(name).group == "lab" for v in shift["macro_f1"][name].values()]
    assert shift["by_group"]["lab"] == pytest.approx(sum(lab) / len(lab))


def test_tta_changes_the_probabilities_but_not_their_shape(refitted):
    from bcauto.bundle import load_bundle
    from bcauto.evaluate import dihedral_view, predict_probs
    from bcauto_builtin.sources.synthetic import generate

    images, _ = generate(12, 32, 2)
    model = load_bundle(refitted).model
    plain, tta = predict_probs(model, images), predict_probs(model, images, tta=True)
    assert plain.shape == tta.shape == (12, 8)
    assert not np.allclose(plain, tta) and np.allclose(tta.sum(axis=1), 1.0, atol=1e-5)
    views = {dihedral_view(images[:1], k).tobytes() for k in range(8)}
    assert len(views) == 8  # eight distinct views of an asymmetric image


def test_predict_writes_one_row_per_image_with_probabilities_summing_to_one(refitted, tmp_path):
    from bcauto_builtin.sources.synthetic import generate

    images, _ = generate(7, 40, 4)
    folder = tmp_path / "images"
    for i, image in enumerate(images[:5]):
        target = folder / ("nested" if i % 2 else "") / f"cell{i}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target)
    (folder / "notes.txt").write_text("not an image")
    np.savez(tmp_path / "more.npz", images=images[5:])
    out = tmp_path / "preds.csv"
    assert main(["predict", str(refitted), str(folder), str(tmp_path / "more.npz"), "--out", str(out)]) == 0
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 7
    classes = json.loads((refitted / "bcauto-model.json").read_text())["class_names"]
    for row in rows:
        probs = [float(row[f"prob_{c}"]) for c in classes]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert row["predicted"] == classes[int(np.argmax(probs))]
    assert [row["index"] for row in rows[-2:]] == ["0", "1"] and rows[0]["index"] == ""


def test_predict_stops_at_an_undecodable_file_or_skips_and_lists_it(refitted, tmp_path, capsys):
    from bcauto_builtin.sources.synthetic import generate

    images, _ = generate(3, 40, 4)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"cell{i}.png")
    (folder / "cell1b.png").write_bytes(b"\x89PNG truncated")
    out = tmp_path / "preds.csv"
    out.write_text("an earlier run's complete predictions\n")
    assert main(["predict", str(refitted), str(folder), "--out", str(out)]) == 2
    assert "cell1b.png: cannot decode this image" in capsys.readouterr().err
    # stopped half way: the earlier file is left as it was, and nothing half-written beside it
    assert out.read_text() == "an earlier run's complete predictions\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "preds.csv"]
    assert main(["predict", str(refitted), str(folder), "--out", str(out), "--on-bad-image", "skip"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "3 predictions written" in printed and "skipped 1 undecodable image file:" in printed and "cell1b.png" in printed
    with out.open() as handle:
        assert [Path(row["path"]).name for row in csv.DictReader(handle)] == ["cell0.png", "cell1.png", "cell2.png"]


def test_label_smoothing_and_focal_loss_change_the_compiled_loss():
    from bcauto.training import compile_model

    def compiled(*args):
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
        compile_model(model, 1e-3, False, *args)
        return model.loss

    default, smoothed, focal = compiled(), compiled("crossentropy", 0.1), compiled("focal", 0.2)
    assert type(default) is keras.losses.CategoricalCrossentropy and default.get_config()["label_smoothing"] == 0.0
    assert type(smoothed) is keras.losses.CategoricalCrossentropy and smoothed.get_config()["label_smoothing"] == 0.1
    assert type(focal) is keras.losses.CategoricalFocalCrossentropy and focal.get_config()["label_smoothing"] == 0.2
    y, p = np.eye(3)[[0, 1]], np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1]])
    assert len({float(loss(y, p)) for loss in (default, smoothed, focal)}) == 3


def test_study_files_check_loss_and_label_smoothing(tmp_path):
    from bcauto.config import parse_study
    from bcauto.errors import BcautoError

    cfg = parse_study('[search]\nloss = ["crossentropy", "focal"]\nlabel_smoothing = { low = 0.0, high = 0.2 }\n', tmp_path / "s.toml")
    assert cfg.search.loss == ("crossentropy", "focal")
    with pytest.raises(BcautoError, match=r"\[search\] loss = 'mse': expected one of 'crossentropy' or 'focal'"):
        parse_study('[search]\nloss = "mse"\n', tmp_path / "s.toml")
    with pytest.raises(BcautoError, match=r"\[search\] label_smoothing"):
        parse_study("[search]\nlabel_smoothing = [0.0, 1.0]\n", tmp_path / "s.toml")


def test_new_commands_have_help():
    import subprocess
    import sys

    for command in ("refit", "evaluate", "predict"):
        result = subprocess.run(
            [sys.executable, "-m", "bcauto.cli", command, "--help"], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0 and f"usage: bcauto {command}" in result.stdout
