"""`bcauto search` end to end on tiny synthetic data: what lands in Optuna and in MLflow."""

import json
import logging
import re
import subprocess
import sys

import keras
import mlflow
import numpy as np
import optuna
import pytest
from helpers import tiny_study_toml
from mlflow.tracking import MlflowClient

from bcauto import hookimpl
from bcauto.cli import main
from bcauto.specs import BackboneSpec

TINY_STUDY = tiny_study_toml(
    study={"seed": 7, "startup_trials": 2, "pruner": "median"},
    search={"imbalance": ["none", "class_weights"], "head_units1": 64, "head_units2": 32},
)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    study = root / "tiny.toml"
    study.write_text(TINY_STUDY)
    stores = ["--storage", f"sqlite:///{root}/optuna.db", "--tracking-uri", f"sqlite:///{root}/mlflow.db"]
    args = ["search", "--study", str(study), "--data", "synthetic:240", *stores]
    assert main([*args, "--trials", "3"]) == 0
    return root, args, stores


def flat(text: str) -> str:
    """Terminal output with rich's line wrapping undone."""
    return " ".join(text.split())


def trial_runs(client, experiment_id):
    runs = client.search_runs([experiment_id], "tags.`bcauto.role` = 'trial'", max_results=100)
    return sorted(runs, key=lambda r: int(r.data.tags["bcauto.trial"]))


def test_one_parent_and_one_child_run_per_trial_with_params_curves_and_artifacts(searched):
    root, _, _ = searched
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name("tiny")
    parents = client.search_runs([experiment.experiment_id], "tags.`bcauto.role` = 'study'")
    assert len(parents) == 1
    parent = parents[0]
    children = trial_runs(client, experiment.experiment_id)
    assert len(children) == 3
    for number, run in enumerate(children):
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.run_name.startswith(f"trial-{number:03d} ")
        assert run.data.params["backbone"] in ("mini_cnn", "resnet_cnn")
        assert run.data.params["backbone"] in run.info.run_name
        assert run.data.params["augmentation"] in ("none", "flip_rotate_zoom")
        assert run.data.params["imbalance"] in ("none", "class_weights")
        assert {
            "lr_head",
            "head.units1",
            "head.dropout",
            "unfreeze_blocks",
            "seed",
            "backbone.base_filters",
            "data.fingerprint",
            "split.fingerprint",
        } <= set(run.data.params)
        assert run.data.params["data.fingerprint"] == parent.data.params["data.fingerprint"]
        assert json.loads(run.data.tags["bcauto.plugins"])["bcauto"] == "0.1.0"
        assert run.data.tags["bcauto.state"] == "complete" and run.info.status == "FINISHED"
        curve = client.get_metric_history(run.info.run_id, "val_macro_f1")
        assert sorted(m.step for m in curve) == [0, 1]
        assert {"loss", "val_loss", "val_accuracy", "lr"} <= set(run.data.metrics)
        assert 0.0 <= run.data.metrics["final_val_macro_f1"] <= 1.0 and run.data.metrics["epochs"] == 2
        assert {"final_val_accuracy", "final_val_macro_recall", "final_val_macro_precision", "val_shift_macro_f1"} <= set(run.data.metrics)
        assert any(key.startswith("shift.") for key in run.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"confusion_matrix.png", "classification_report.json"} <= artifacts
    assert parent.info.status == "FINISHED"
    assert (parent.data.params["sampler"], parent.data.params["startup_trials"]) == ("tpe", "2")


def test_optuna_study_holds_the_trials_linked_to_their_runs(searched):
    root, _, _ = searched
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{root}/optuna.db")
    assert len(study.trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    for trial in study.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.metrics["final_val_macro_f1"] == pytest.approx(trial.value)
        assert sorted(trial.intermediate_values) == [0, 1]


def test_best_reports_number_value_params_and_run_and_the_model_is_logged(searched, capsys):
    root, _, stores = searched
    capsys.readouterr()
    assert main(["best", "--json", "--name", "tiny", *stores[:2]]) == 0
    best = json.loads(capsys.readouterr().out)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{root}/optuna.db")
    assert best["number"] == study.best_trial.number and best["value"] == pytest.approx(study.best_value)
    assert best["params"]["backbone"] == study.best_trial.user_attrs["params"]["backbone"]
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    experiment = MlflowClient().get_experiment_by_name("tiny")
    models = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id], output_format="list")
    assert best["mlflow_run_id"] in {m.source_run_id for m in models}


def test_rerun_resumes_the_same_study_and_parent_run(searched, capsys):
    root, args, _ = searched
    capsys.readouterr()
    assert main([*args, "--trials", "4"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith(f"Optuna: sqlite:///{root}/optuna.db") and last.endswith("(open with `bcauto ui --name tiny` or `mlflow ui`)")
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{root}/optuna.db")
    assert len(study.trials) == 4 and [t.number for t in study.trials] == [0, 1, 2, 3]
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name("tiny")
    assert len(client.search_runs([experiment.experiment_id], "tags.`bcauto.role` = 'study'")) == 1
    assert len(trial_runs(client, experiment.experiment_id)) == 4


def test_a_resumed_search_proposes_configurations_it_has_not_tried(tmp_path):
    study = tmp_path / "random_start.toml"
    study.write_text(TINY_STUDY.replace("startup_trials = 2", "startup_trials = 10"))  # every trial from the seeded random start-up
    args = [
        "search",
        "--study",
        str(study),
        "--data",
        "synthetic:160",
        "--storage",
        f"sqlite:///{tmp_path}/optuna.db",
        "--tracking-uri",
        f"sqlite:///{tmp_path}/mlflow.db",
    ]
    # the first run in this process (quicker); the resumed one through a worker process, as users run it
    assert main([*args, "--trials", "2", "--workers", "0"]) == 0
    assert main([*args, "--trials", "4"]) == 0
    trials = optuna.load_study(study_name="random_start", storage=f"sqlite:///{tmp_path}/optuna.db").trials
    assert len(trials) == 4
    configurations = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(configurations)) == 4, f"the second run repeated the first run's configurations: {configurations}"


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_trials_must_be_a_positive_count(value, capsys):
    from bcauto.cli import build_parser

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["search", "--trials", value])
    assert exited.value.code == 2
    assert "argument --trials:" in capsys.readouterr().err


def test_resuming_on_other_data_is_refused_and_adds_no_trial(tmp_path, capsys):
    study = tmp_path / "tiny.toml"
    study.write_text(TINY_STUDY)
    # the check runs before any trial, whichever way trials run: in this process, which is quicker
    stores = ["--workers", "0", "--storage", f"sqlite:///{tmp_path}/optuna.db", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    assert main(["search", "--study", str(study), "--data", "synthetic:160", "--trials", "1", *stores]) == 0
    capsys.readouterr()
    assert main(["search", "--study", str(study), "--data", "synthetic:200", "--trials", "2", *stores]) == 2
    assert "was searched on other data" in " ".join(capsys.readouterr().err.split())
    assert len(optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/optuna.db").trials) == 1
    assert main(["search", "--study", str(study), "--data", "synthetic:200", "--trials", "1", "--name", "tiny-200", *stores]) == 0


def test_cli_errors_are_one_clear_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[search]\nbackbone = ['resnet5O']\n")
    result = subprocess.run(
        [sys.executable, "-m", "bcauto.cli", "search", "--study", str(bad), "--data", "synthetic"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "bad.toml: [search] backbone: unknown backbone 'resnet5O' (did you mean 'resnet50'?)" in flat(result.stderr)
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("command", [["best"], ["refit"]])
@pytest.mark.parametrize("store", ["sqlite:///{}/optuna.db", "journal:{}/optuna.journal"])
def test_commands_that_read_a_study_never_create_a_store(command, store, tmp_path, capsys):
    url = store.format(tmp_path)
    assert main([*command, "--storage", url]) == 2
    assert "no Optuna storage at" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_bare_bcauto_lists_the_commands(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "usage: bcauto" in err and all(command in err for command in ("search", "refit", "evaluate", "adapt", "predict"))


def test_every_command_has_help():
    for command in ([], ["search"], ["best"], ["plugins"], ["ui"]):
        result = subprocess.run([sys.executable, "-m", "bcauto.cli", *command, "--help"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "usage: bcauto" in result.stdout


def test_tensorflows_retracing_notice_is_dropped_and_its_other_warnings_kept(caplog):
    """A search builds a new model per trial; TensorFlow calls each new predict trace a retrace and warns."""
    import keras

    from bcauto.frameworks import RetracingNoticeFilter, quiet_frameworks

    quiet_frameworks()
    quiet_frameworks()  # twice, as every main() call in one process does: one filter, not two
    tf_logger = logging.getLogger("tensorflow")
    for _ in range(7):  # TensorFlow warns from the 5th traced call in a row
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.predict(np.zeros((300, 4), "float32"), batch_size=256, verbose=0)
    tf_logger.warning("a tensorflow warning")
    assert [r.getMessage() for r in caplog.records if r.name == "tensorflow"] == ["a tensorflow warning"]
    assert sum(isinstance(f, RetracingNoticeFilter) for f in tf_logger.filters) == 1


SHIFTED_STUDY = TINY_STUDY.replace('pruner = "median"', 'pruner = "median"\nmetric = "val_shift_macro_f1"\nshift_validation = true')


def test_trials_of_a_shifted_study_report_the_shifted_score_each_epoch(tmp_path):
    """The pruner compares trials on what the study optimizes, not on clean validation macro-F1."""
    study_file = tmp_path / "shifted.toml"
    study_file.write_text(SHIFTED_STUDY)
    stores = ["--storage", f"sqlite:///{tmp_path}/optuna.db", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    assert main(["search", "--study", str(study_file), "--data", "synthetic:160", "--trials", "2", "--workers", "0", *stores]) == 0
    trials = optuna.load_study(study_name="shifted", storage=f"sqlite:///{tmp_path}/optuna.db").trials
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    for trial in trials:
        assert trial.user_attrs["reported_metric"] == "val_shift_macro_f1"
        run = trial.user_attrs["mlflow_run_id"]
        curve = {m.step: m.value for m in client.get_metric_history(run, "val_shift_macro_f1")}
        clean = {m.step: m.value for m in client.get_metric_history(run, "val_macro_f1")}
        assert sorted(curve) == [0, 1, 2], "two epochs, then the kept model's score"
        assert trial.intermediate_values == pytest.approx({step: curve[step] for step in (0, 1)})
        assert trial.intermediate_values != pytest.approx(clean)
        assert client.get_run(run).data.metrics["val_shift_macro_f1"] == pytest.approx(trial.value)


def test_the_mean_metric_is_reported_as_the_mean_of_clean_and_shifted_each_epoch():
    from bcauto.objective import epoch_metric, epoch_value

    assert epoch_metric("val_mean_macro_f1", shifted=True) == "val_mean_macro_f1"
    assert epoch_metric("val_shift_macro_f1", shifted=False) == "val_macro_f1"  # no shifted copy: the study scores clean
    assert epoch_metric("val_accuracy", shifted=True) == "val_accuracy"
    assert epoch_value("val_mean_macro_f1", {"val_macro_f1": 0.8, "val_shift_macro_f1": 0.4}) == pytest.approx(0.6)
    assert epoch_value("val_mean_macro_f1", {"val_macro_f1": 0.8}) is None


@pytest.mark.parametrize("mode", ["online", "cached head", "cached fine-tune"])
def test_the_per_epoch_shifted_score_is_the_score_of_the_model_at_that_epoch(mode, tmp_path, tiny_plugin):
    from helpers import blob_data

    from bcauto.data.split import stratified_split
    from bcauto.model import HeadParams
    from bcauto.scoring import predict_batches, score
    from bcauto.shift import shifted_copy
    from bcauto.training import TrainSettings, TrialPlan, train

    full = blob_data(160, 32, seed=1)
    split = stratified_split(full, 0.25, seed=0)
    train_data, val_data = full.subset(split.train), full.subset(split.val)
    shifted, _ = shifted_copy(val_data, tiny_plugin.shifts, 0)
    backbone = "mini_cnn" if mode == "online" else "tiny_pretrained"
    plan = TrialPlan(
        backbone=tiny_plugin.backbones.get(backbone),
        augmentation=tiny_plugin.augmentations.get("none"),
        imbalance=tiny_plugin.imbalance.get("none"),
        head=HeadParams(32, 16, 0.1, 1e-5),
        lr_head=3e-3,
        lr_finetune=1e-3,
        unfreeze_blocks=1,
    )
    settings = TrainSettings(
        batch_size=32,
        head_epochs=1,
        finetune_epochs=1 if mode == "cached fine-tune" else 0,
        patience=5,
        weights=None if mode == "online" else "imagenet",
        seed=0,
        cache_dir=str(tmp_path / "cache"),
    )
    result = train(plan, settings, train_data, val_data, epoch_sets={"val_shift": shifted})
    expected_modes = {
        "online": {"head": "online"},
        "cached head": {"head": "cached"},
        "cached fine-tune": {"head": "cached", "finetune": "cached_activations"},
    }[mode]
    assert expected_modes.items() <= result.modes.items()
    kept = len(result.history) - 1 if result.predict is None or mode == "cached head" else 0  # a fine-tune never kept
    now = score(shifted.labels, predict_batches(result.model, shifted.images).argmax(axis=1), shifted.class_names).macro_f1
    assert all("val_shift_macro_f1" in epoch for epoch in result.history)
    assert result.history[kept]["val_shift_macro_f1"] == pytest.approx(now, abs=1e-6)


@pytest.mark.parametrize(
    "confusion, expected",
    [
        ([[10, 0, 0], [9, 1, 0], [10, 0, 0]], "predicts 'a' for 97% of the images (they hold 33% of them)"),
        ([[4, 3, 3], [3, 4, 3], [3, 3, 4]], "scores at chance level on the images: balanced accuracy 0.40, where guessing among 3"),
        ([[9, 1, 0], [1, 8, 1], [0, 1, 9]], None),
        ([[28, 0, 0], [1, 1, 0], [0, 0, 0]], None),  # one class is nearly all the data, and it is right to predict it
        ([[5, 5, 0], [0, 0, 0], [0, 0, 0]], None),  # one class among the labels: nothing to tell apart
    ],
)
def test_a_model_that_predicts_one_class_or_guesses_is_named(confusion, expected):
    from bcauto.sanity import prediction_problem

    problem = prediction_problem(np.array(confusion), ("a", "b", "c"), "the images")
    assert problem == expected if expected is None else expected in problem


def build_blind(input_shape, weights=None):
    """A backbone that sees nothing (every image scaled to zero): its classifier can only predict one class."""
    from keras import layers

    inputs = keras.Input(shape=input_shape)
    x = layers.Rescaling(0.0, name="blind")(inputs)
    x = layers.Conv2D(4, 3, padding="same", name="b1_out")(x)
    return keras.Model(inputs, x, name="blind")


class BlindPlugin:
    @hookimpl
    def register_backbones(self, register):
        register(
            BackboneSpec(
                name="blind_cnn",
                build=build_blind,
                preprocessing="unit",
                blocks=("b1_out",),
                min_input_size=8,
                description="test backbone that sees nothing",
            )
        )


@pytest.fixture
def blind_plugin():
    from bcauto import plugins

    plugins.register_plugin(BlindPlugin(), "tests:blind")
    try:
        yield
    finally:
        plugins.unregister_plugin("tests:blind")


def test_search_refit_and_evaluate_say_when_the_model_predicts_one_class(blind_plugin, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blind.toml").write_text(TINY_STUDY.replace('backbone = ["mini_cnn", "resnet_cnn"]', 'backbone = "blind_cnn"'))
    stores = ["--storage", f"sqlite:///{tmp_path}/optuna.db", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    assert main(["search", "--study", "blind.toml", "--data", "synthetic:160", "--trials", "1", "--workers", "0", *stores]) == 0
    out = flat(capsys.readouterr().out)
    assert "warning: the best trial (#0) predicts" in out and "the model hardly tells the classes apart" in out
    assert re.search(r"Likely causes: too few images \(120, \d+ in the smallest class\), too few epochs \(2\)", out)
    assert main(["refit", "--name", "blind", *stores, "--out", "model"]) == 0
    out = flat(capsys.readouterr().out)
    assert "warning: trial 0 of the search predicts" in out and "This model is trained the same way." in out
    assert main(["evaluate", "model", "--data", "synthetic:160", "--seed", "7", "--out", "evaluation"]) == 0  # the study's images
    out = flat(capsys.readouterr().out)
    assert "warning: the model predicts" in out and "of the evaluation images" in out and "Likely causes: too few images (160" in out
    assert "another lab" not in out  # the images it was trained on: only the training can be the cause
    assert json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())["warning"].startswith("the model predicts")
