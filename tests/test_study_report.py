"""The study report on the parent run (bcauto.study_report): plots and leaderboard, and never an exception."""

import csv
import io

import optuna
import pytest
from mlflow.tracking import MlflowClient

from bcauto.study_report import HISTORY_PNG, IMPORTANCES_PNG, LEADERBOARD_CSV, log_study_report
from bcauto.tracking import Tracker

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def tracked(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, experiment="report")
    parent = tracker.parent_run("report", {"metric": "val_macro_f1"}, {})
    return tracker, parent


def fill(study, n, states=None):
    """``n`` trials with bcauto-like params; ``states`` overrides some trials' state."""
    states = states or {}
    for i in range(n):
        trial = study.ask()
        backbone = trial.suggest_categorical("backbone", ["mini_cnn", "resnet_cnn"])
        lr = trial.suggest_float("lr_head", 1e-4, 1e-2, log=True)
        trial.set_user_attr("mlflow_run_id", f"run{i}")
        trial.set_user_attr("params", {"backbone": backbone, "lr_head": lr, "head.units": [64, 32]})
        value = 0.5 + 0.1 * (backbone == "resnet_cnn") + lr
        state = states.get(i, optuna.trial.TrialState.COMPLETE)
        if state == optuna.trial.TrialState.COMPLETE:
            study.tell(trial, [value, value / 2] if len(study.directions) > 1 else value)
        else:
            study.tell(trial, state=state)
    return study


def artifacts(tracker, run_id):
    return {a.path for a in tracker.client.list_artifacts(run_id)}


def leaderboard(tracker, run_id):
    text = tracker.client.download_artifacts(run_id, LEADERBOARD_CSV)
    with open(text, encoding="utf-8") as f:
        return list(csv.DictReader(io.StringIO(f.read())))


def test_single_objective_report_has_both_plots_and_the_ranked_leaderboard(tracked):
    tracker, parent = tracked
    study = fill(
        optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)), 6, {5: optuna.trial.TrialState.FAIL}
    )
    log_study_report(study, tracker, parent)
    assert {HISTORY_PNG, IMPORTANCES_PNG, LEADERBOARD_CSV} <= artifacts(tracker, parent)
    rows = leaderboard(tracker, parent)
    assert len(rows) == 5 and [r["rank"] for r in rows] == ["1", "2", "3", "4", "5"]
    values = [float(r["val_macro_f1"]) for r in rows]  # named after the parent run's metric param
    assert values == sorted(values, reverse=True)
    assert rows[0]["mlflow_run_id"].startswith("run") and rows[0]["head.units"] == "[64, 32]"
    assert not tracker.problems
    log_study_report(study, tracker, parent)  # a resumed study reports again: same files, replaced
    assert len(leaderboard(tracker, parent)) == 5


def test_multi_objective_report_plots_the_first_objective_and_marks_the_pareto_front(tracked):
    tracker, _ = tracked
    parent = tracker.parent_run("both", {"metric": "both"}, {})  # [study] metric = "both": clean and shifted macro-F1
    study = fill(optuna.create_study(directions=["maximize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=1)), 5)
    log_study_report(study, tracker, parent)
    assert {HISTORY_PNG, IMPORTANCES_PNG, LEADERBOARD_CSV} <= artifacts(tracker, parent)
    rows = leaderboard(tracker, parent)
    assert {"val_macro_f1", "val_shift_macro_f1", "pareto_front"} <= set(rows[0]) and rows[0]["pareto_front"] == "True"
    assert not tracker.problems


def test_too_few_trials_skip_the_importances_without_a_warning(tracked):
    tracker, parent = tracked
    study = fill(optuna.create_study(direction="maximize"), 2, {1: optuna.trial.TrialState.PRUNED})
    log_study_report(study, tracker, parent)
    found = artifacts(tracker, parent)
    assert HISTORY_PNG in found and LEADERBOARD_CSV in found and IMPORTANCES_PNG not in found
    assert not tracker.problems
    log_study_report(optuna.create_study(), tracker, parent)  # no trial at all
    assert not tracker.problems


def test_failures_never_raise(tracked, monkeypatch, tmp_path):
    tracker, parent = tracked
    study = fill(optuna.create_study(direction="maximize"), 4)
    monkeypatch.setattr(optuna.importance.FanovaImportanceEvaluator, "evaluate", lambda *a, **k: 1 / 0)
    log_study_report(study, tracker, parent)  # importances fail: skipped, the rest is logged
    found = artifacts(tracker, parent)
    assert IMPORTANCES_PNG not in found and HISTORY_PNG in found and not tracker.problems

    monkeypatch.setattr(optuna.visualization.matplotlib, "plot_optimization_history", lambda *a, **k: 1 / 0)
    log_study_report(study, tracker, parent)  # a plot that fails is a warning
    assert any("optimization history" in p for p in tracker.problems)

    monkeypatch.setattr(MlflowClient, "log_artifact", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    monkeypatch.setattr(MlflowClient, "get_run", lambda *a, **k: 1 / 0)
    log_study_report(study, tracker, parent)  # the store refuses everything: warnings only
    assert any("disk full" in p for p in tracker.problems)
    log_study_report(study, tracker, None)  # no parent run (tracking unavailable): nothing to do
