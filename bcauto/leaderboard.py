"""The leaderboard of a study: the best complete trials, for the terminal (fitted to its width) and as JSON.

Shown at the end of ``bcauto search`` and by ``bcauto best``. The terminal table follows one rule at every width:

- columns: the trial number, the objective value(s) headed by their metric's name, and every parameter that
  differs between the study's complete trials (``epochs`` is the number of epochs a trial trained);
- when one column per parameter fits the width, that is the table (a dotted name's header breaks after its last
  dot); otherwise the parameters share one column as ``name=value`` items, wrapped between items, never inside one;
- a parameter with the same value in every complete trial gets no column: one line under the table names them all
  ("same in all 12 complete trials: ..."); the study-wide settings (data, fingerprints, epochs budget, sampler)
  are left out of that line, as every trial has them by construction;
- floats are shown to 4 significant digits; ``bcauto best --json`` has every parameter in full.
"""

from __future__ import annotations

import json
from typing import Any

import optuna
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from bcauto.text import plural

COMPLETE = optuna.trial.TrialState.COMPLETE
OBJECTIVES_OF_METRIC = {"both": ("val_macro_f1", "val_shift_macro_f1")}  # see StudyConfig.directions
# Logged with every trial (bcauto.study.describe_run) but set by the study file or the command line, not searched.
STUDY_SETTINGS = frozenset(
    {
        "study",
        "study_file",
        "data.source",
        "data.fingerprint",
        "split.fingerprint",
        "image_size",
        "val_fraction",
        "batch_size",
        "head_epochs",
        "finetune_epochs",
        "patience",
        "sampler",
        "startup_trials",
        "pruner",
        "study_seed",
        "metric",
        "precision",
        "xla",
        "augmented_views",
        "data.clean",
        "data.removed",
        "data.domains",
        "validation_domain",
    }
)
# Different in every trial by construction (the trial's own seed is the study seed plus its number).
PER_TRIAL = frozenset({"trial", "seed"})


def ranked_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Completed trials best first; for two objectives, the Pareto front ordered by the first."""
    if len(study.directions) > 1:
        return sorted(study.best_trials, key=lambda t: t.values[0], reverse=True)
    finished = [t for t in study.get_trials(deepcopy=False, states=(COMPLETE,)) if t.values]
    return sorted(finished, key=lambda t: t.values[0], reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)


def metric_names(study: optuna.Study) -> tuple[str, ...]:
    """What each objective measures: the study's metric names, else the ``metric`` its trials ran with."""
    count = len(study.directions)
    if study.metric_names and len(study.metric_names) == count:
        return tuple(study.metric_names)
    for trial in study.get_trials(deepcopy=False):
        metric = (trial.user_attrs.get("params") or {}).get("metric")
        if metric:
            names = OBJECTIVES_OF_METRIC.get(metric, (metric,))
            if len(names) == count:
                return tuple(names)
            break
    return ("value",) if count == 1 else tuple(f"objective {i + 1}" for i in range(count))


def all_params(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """Every parameter the trial ran with (bcauto logs them as the ``params`` user attribute)."""
    return dict(trial.user_attrs.get("params") or trial.params)


def searched_params(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The trial's own configuration: its parameters less the study-wide settings, plus the epochs it trained."""
    params = {k: v for k, v in all_params(trial).items() if k not in STUDY_SETTINGS and k not in PER_TRIAL}
    if "epochs" in trial.user_attrs:
        params["epochs"] = trial.user_attrs["epochs"]
    return params


def shown(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (int, str)):
        return str(value)
    return json.dumps(value, default=str)


def leaderboard_json(study: optuna.Study, top: int | None = None) -> list[dict[str, Any]]:
    """The ranked trials with every parameter in full (``bcauto best --json``)."""
    names = metric_names(study)
    return [
        {
            "rank": rank,
            "trial": t.number,
            "values": dict(zip(names, t.values)),
            "epochs": t.user_attrs.get("epochs"),
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
            "params": all_params(t),
        }
        for rank, t in enumerate(ranked_trials(study)[:top], start=1)
    ]


class Leaderboard:
    """The best complete trials as a rich renderable laid out for the width it is printed at (see the module doc)."""

    def __init__(self, study: optuna.Study, top: int = 10):
        complete = [t for t in study.get_trials(deepcopy=False, states=(COMPLETE,)) if t.values]
        self.ranked = ranked_trials(study)
        self.rows = self.ranked[:top]
        self.names = metric_names(study)
        self.multi = len(study.directions) > 1
        params = [searched_params(t) for t in complete]
        keys = list(dict.fromkeys(key for p in params for key in p))
        self.constant: dict[str, Any] = {}
        if len(complete) > 1:  # with one trial every parameter is "the same in all": show them instead
            first = params[0]
            self.constant = {k: first[k] for k in keys if all(k in p and p[k] == first[k] for p in params)}
        self.keys = [k for k in keys if k not in self.constant]
        self.params = {t.number: searched_params(t) for t in self.rows}
        self.complete, self.total = len(complete), len(study.trials)
        metric = " and ".join(self.names)
        what = f"Pareto front by {metric}" if self.multi else f"top {len(self.rows)} by {metric}"
        self.title = f"study {study.study_name}: {what} ({self.complete} of {plural(self.total, 'trial')} complete)"

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = self.wide()
        natural = Measurement.get(console, options.update_width(10_000), table).maximum
        yield table if natural <= options.max_width else self.compact()
        if self.constant:
            items = ", ".join(f"{k}={shown(v)}" for k, v in self.constant.items())
            yield Text(f"same in all {self.complete} complete trials: {items}")

    def _table(self) -> Table:
        table = Table(title=self.title)
        table.add_column("#", justify="right", no_wrap=True)
        for name in self.names:
            table.add_column(name, justify="right", no_wrap=True)
        return table

    def _values(self, trial: optuna.trial.FrozenTrial) -> list[str]:
        return [str(trial.number), *(f"{v:.4f}" for v in trial.values)]

    def wide(self) -> Table:
        table = self._table()
        for key in self.keys:
            head, dot, tail = key.rpartition(".")
            numbers = all(isinstance(self.params[t.number].get(key, 0), (int, float)) for t in self.rows)
            table.add_column(f"{head}{dot}\n{tail}" if dot else key, no_wrap=True, justify="right" if numbers else "left")
        for t in self.rows:
            p = self.params[t.number]
            table.add_row(*self._values(t), *(shown(p[k]) if k in p else "" for k in self.keys))
        return table

    def compact(self) -> Table:
        table = self._table()
        table.add_column("parameters", overflow="fold")
        for t in self.rows:
            p = self.params[t.number]
            table.add_row(*self._values(t), " ".join(f"{k}={shown(p[k])}" for k in self.keys if k in p))
        return table
