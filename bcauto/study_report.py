"""The study report on the MLflow parent run: Optuna's plots and the leaderboard as a table.

Called once when a search ends. Like everything that touches tracking, it never raises: a plot or table
that cannot be made is skipped and reported as a warning through the tracker, and the study goes on.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from bcauto.leaderboard import OBJECTIVES_OF_METRIC, ranked_trials
from bcauto.tracking import Tracker

log = logging.getLogger("bcauto")

IMPORTANCES_PNG = "param_importances.png"
HISTORY_PNG = "optimization_history.png"
# a CSV, not mlflow's log_table: log_table appends to an existing table, and a resumed study reuses its parent run
LEADERBOARD_CSV = "leaderboard.csv"


def log_study_report(study: optuna.Study, tracker: Tracker, parent_run_id: str | None) -> None:
    """Log the optimization history, the parameter importances and the leaderboard to the parent run."""
    if not parent_run_id:
        return
    try:
        _report(study, tracker, parent_run_id)
    except Exception as exc:  # tracking must never crash a study
        _skip(tracker, f"the study report: {type(exc).__name__}: {exc}")


def _report(study: optuna.Study, tracker: Tracker, run_id: str) -> None:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    names = objective_names(study, tracker, run_id)
    name = names[0]
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    with tempfile.TemporaryDirectory(prefix="bcauto-report-") as tmp:
        folder = Path(tmp)
        rows = leaderboard_rows(study, names)
        if rows:
            tracker.log_artifact(run_id, _write_csv(rows, folder / LEADERBOARD_CSV))
        plots = optuna.visualization.matplotlib
        if complete:
            history = _plot(folder / HISTORY_PNG, lambda: plots.plot_optimization_history(study, target=target, target_name=name))
            if isinstance(history, Path):
                tracker.log_artifact(run_id, history)
            else:
                _skip(tracker, f"the optimization history: {history}")
        if len(complete) < 2:
            log.info("study report: %d complete trial(s), too few for parameter importances", len(complete))
            return
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        importances = _plot(
            folder / IMPORTANCES_PNG,
            lambda: plots.plot_param_importances(study, evaluator=evaluator, target=target, target_name=name),
            tall=True,
        )
        if isinstance(importances, Path):
            tracker.log_artifact(run_id, importances)
        else:  # expected in small or degenerate studies (one value per parameter, ...): not worth a warning
            log.info("study report: no parameter importances: %s", importances)


def objective_names(study: optuna.Study, tracker: Tracker, run_id: str) -> tuple[str, ...]:
    """The objectives' metric names: the study's own, else from the parent run's ``metric`` param."""
    count = len(study.directions)
    if study.metric_names and len(study.metric_names) == count:
        return tuple(study.metric_names)
    run = tracker._guard("read the parent run", lambda: tracker.client.get_run(run_id))
    metric = run.data.params.get("metric") if run is not None else None
    names = OBJECTIVES_OF_METRIC.get(metric, (metric,)) if metric else ()
    return tuple(names) if len(names) == count else tuple(f"objective {i}" for i in range(count))


def leaderboard_rows(study: optuna.Study, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Complete trials, best first (the Pareto front first for several objectives), one flat row each."""
    ranked = ranked_trials(study)
    ranked_numbers = {t.number for t in ranked}
    # trials off the Pareto front follow it, still ordered by the first objective (maximized in bcauto)
    rest = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.number not in ranked_numbers and t.values
    ]
    rest.sort(key=lambda t: t.values[0], reverse=study.directions[0] == optuna.study.StudyDirection.MAXIMIZE)
    rows = []
    for rank, trial in enumerate([*ranked, *rest], start=1):
        row: dict[str, Any] = {"rank": rank, "trial": trial.number}
        row.update({name: value for name, value in zip(names, trial.values)})
        if len(names) > 1:
            row["pareto_front"] = trial.number in ranked_numbers
        row["mlflow_run_id"] = trial.user_attrs.get("mlflow_run_id", "")
        params = trial.user_attrs.get("params") or trial.params
        row.update({key: _cell(value) for key, value in params.items()})
        rows.append(row)
    return rows


def _cell(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) or value is None else json.dumps(value, default=str)


def _write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    keys = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _plot(path: Path, draw: Callable[[], Any], tall: bool = False) -> Path | str:
    """Draw one Optuna matplotlib plot into ``path``: the path, or why it could not be drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    try:
        # rc_context: Optuna's plots switch pyplot to the ggplot style for good; keep that to this figure
        with warnings.catch_warnings(), matplotlib.rc_context():
            warnings.simplefilter("ignore")  # ExperimentalWarning, and the fANOVA's small-sample notes
            figure = draw().figure
            # one bar per parameter: grow with their number
            height = max(4.0, 0.4 * len(figure.axes[0].get_yticklabels()) + 1.5) if tall else 4.5
            figure.set_size_inches(8, height)
            figure.tight_layout()
            figure.savefig(path, dpi=100)
        return path
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        for number in set(plt.get_fignums()) - before:
            plt.close(number)


def _skip(tracker: Tracker, what: str) -> None:
    message = f"study report: skipped {what}"
    if message not in tracker.problems:
        tracker.problems.append(message)
        log.warning(message)
