"""What the terminal shows during a search: rich progress (trial i/N, epoch, best so far) and the leaderboard."""

from __future__ import annotations

import keras
import optuna
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


class SearchProgress:
    """Two bars: trials of the study, epochs of the current trial."""

    def __init__(self, console: Console, total_trials: int, done: int = 0, epochs_per_trial: int = 1):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), console=console, transient=False,
        )
        self.trials = self.progress.add_task("trials", total=total_trials, completed=done, info="")
        self.epochs = self.progress.add_task("epochs", total=1, info="")
        self.best: float | None = None
        self.epochs_per_trial = epochs_per_trial

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def trial_started(self, number: int, label: str, total_epochs: int) -> None:
        self.progress.reset(self.epochs, total=max(total_epochs, 1), info=f"trial {number}: {label}")

    def epoch_done(self, epoch: int, logs: dict) -> None:
        metric = logs.get("val_macro_f1")
        info = f"val_macro_f1={metric:.3f}" if metric is not None else ""
        self.progress.update(self.epochs, completed=epoch + 1, info=info)

    def trial_done(self, value: float | None, state: str, maximize: bool = True) -> None:
        if value is not None and state == "complete":
            if self.best is None or (value > self.best if maximize else value < self.best):
                self.best = value
        best = f"best {self.best:.4f}" if self.best is not None else ""
        self.progress.update(self.trials, advance=1 if state in ("complete", "pruned") else 0, info=best)


    def show(self, study: optuna.Study) -> None:
        """Refresh both bars from the study's storage (for trials running in worker processes)."""
        State = optuna.trial.TrialState
        trials = study.get_trials(deepcopy=False)
        values = [t.value for t in trials if t.state == State.COMPLETE and t.values is not None and len(t.values) == 1]
        self.best = max(values) if values else self.best
        finished = sum(t.state in (State.COMPLETE, State.PRUNED) for t in trials)
        self.progress.update(self.trials, completed=finished, info=f"best {self.best:.4f}" if self.best is not None else "")
        running = [t for t in trials if t.state == State.RUNNING]
        if running:
            t = running[-1]
            p = t.user_attrs.get("params", {})
            label = f"trial {t.number}: {p.get('backbone', '')} {p.get('augmentation', '')} {p.get('imbalance', '')}"
            last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
            self.progress.update(self.epochs, total=self.epochs_per_trial, completed=len(t.intermediate_values),
                                 description="epochs", info=f"{label} val={last:.3f}" if last is not None else label)


class EpochProgress(keras.callbacks.Callback):
    """Feeds epoch ends to the progress display."""

    def __init__(self, progress: SearchProgress | None):
        super().__init__()
        self.display = progress

    def on_epoch_end(self, epoch, logs=None):
        if self.display is not None:
            self.display.epoch_done(epoch, logs or {})


def ranked_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Completed trials best first; for two objectives, the Pareto front ordered by the first."""
    if len(study.directions) > 1:
        return sorted(study.best_trials, key=lambda t: t.values[0], reverse=True)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.values]
    return sorted(finished, key=lambda t: t.values[0], reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)


def leaderboard(study: optuna.Study, top: int = 10) -> Table:
    """The best finished trials as a table (the Pareto front for two objectives)."""
    ranked = ranked_trials(study)
    multi = len(study.directions) > 1
    title = "Pareto front (clean, shifted macro-F1)" if multi else f"top {min(top, len(ranked))}"
    table = Table(title=f"study {study.study_name}: {title} of {len(study.trials)} trials")
    for column in ("#", "values" if multi else "value", "backbone", "augmentation", "imbalance", "unfreeze", "lr_head", "epochs"):
        table.add_column(column)
    for t in ranked[:top]:
        p = t.user_attrs.get("params", {})
        table.add_row(
            str(t.number), " / ".join(f"{v:.4f}" for v in t.values), str(p.get("backbone", "")), str(p.get("augmentation", "")),
            str(p.get("imbalance", "")), str(t.user_attrs.get("unfreeze_blocks", "")),
            f"{p['lr_head']:.2e}" if "lr_head" in p else "", str(t.user_attrs.get("epochs", "")),
        )
    return table
