"""What the terminal shows while bcauto works: rich progress bars (a search's trials and epochs, best so far; the epochs
of a refit's members and of `bcauto adapt`'s fine-tunings) and the leaderboard."""

from __future__ import annotations

import keras
import optuna
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column

from bcauto.leaderboard import Leaderboard, ranked_trials  # noqa: F401  (ranked_trials: imported from here)
from bcauto.text import plural


def ending(state: str, epochs: int, planned: int, stopped_early: bool) -> str:
    """Why a trial's epochs bar ended where it did, for the bar's last words."""
    of = f"epoch {epochs} of {planned}"
    if state == "pruned":
        return f"pruned at {of}" if epochs else "pruned before its first epoch"
    if state == "failed":
        return f"failed at {of}" if epochs else "failed before its first epoch"
    if epochs >= planned:
        return f"done, {plural(epochs, 'epoch')}"
    # a pretrained backbone with unfreeze_blocks = 0 has no fine-tuning phase: its planned epochs are not all run
    return f"stopped early at {of}" if stopped_early else f"done at {of} (no fine-tuning phase)"


def planned_phases(trial: optuna.trial.FrozenTrial) -> tuple[bool, bool]:
    """(whether early stopping shortened a phase, whether the trial had a fine-tuning phase) from its records."""
    params, phases = trial.user_attrs.get("params") or {}, trial.user_attrs.get("phase_epochs") or {}
    head, finetune = int(params.get("head_epochs", 0)), int(params.get("finetune_epochs", 0))
    done_head, done_finetune = int(phases.get("head", 0)), int(phases.get("finetune", 0))
    if trial.user_attrs.get("unfreeze_blocks") == "all" and not done_finetune:  # trained from scratch, in one phase
        return done_head < head + finetune, True
    finetuned = trial.user_attrs.get("unfreeze_blocks") not in (0, None) and finetune > 0
    return done_head < head or (finetuned and done_finetune < finetune), finetuned


class SearchProgress:
    """Two bars: trials of the study, epochs of the current trial.

    A trial that ends before its planned epochs (pruned, stopped early, failed) completes its epochs bar at the
    epoch it reached and says why, so the bar never sits part-way as if the search had stalled.
    """

    def __init__(self, console: Console, total_trials: int, done: int = 0, epochs_per_trial: int = 1):
        self.console = console
        self.progress = Bars(console, transient=False)
        self.trials = self.progress.add_task("trials", total=total_trials, completed=done, info="")
        self.epochs = self.progress.add_task("epochs", total=1, info="")
        self.best: float | None = None
        self.epochs_per_trial = epochs_per_trial
        self.label, self.planned, self.reached, self.stopped_early = "", 1, 0, False
        self.shown: int | None = None  # the trial on the epochs bar, when refreshed from the storage

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def trial_started(self, number: int, label: str, total_epochs: int) -> None:
        self.label, self.planned, self.reached, self.stopped_early = f"trial {number}: {label}", max(total_epochs, 1), 0, False
        self.progress.reset(self.epochs, total=self.planned, info=self.label)

    def epoch_done(self, epoch: int, logs: dict) -> None:
        self.reached = epoch + 1
        metric = logs.get("val_macro_f1")
        info = f"{self.label} val_macro_f1={metric:.3f}" if metric is not None else self.label
        self.progress.update(self.epochs, completed=self.reached, info=info)

    def phase_done(self, stopped_early: bool) -> None:
        self.stopped_early = self.stopped_early or stopped_early

    def trial_done(self, value: float | None, state: str, maximize: bool = True) -> None:
        if value is not None and state == "complete" and (self.best is None or (value > self.best if maximize else value < self.best)):
            self.best = value
        best = f"best {self.best:.4f}" if self.best is not None else ""
        self.progress.update(self.trials, advance=1 if state in ("complete", "pruned") else 0, info=best)
        self.end_epochs(self.label, state, self.reached, self.planned, self.stopped_early)

    def end_epochs(self, label: str, state: str, reached: int, planned: int, stopped_early: bool) -> None:
        """Complete the epochs bar at the epoch the trial reached, with why it ended there."""
        bar = {"total": reached, "completed": reached} if reached else {}
        self.progress.update(self.epochs, **bar, info=f"{label} {ending(state, reached, planned, stopped_early)}")

    def show(self, study: optuna.Study) -> None:
        """Refresh both bars from the study's storage (for trials running in worker processes)."""
        State = optuna.trial.TrialState
        trials = study.get_trials(deepcopy=False)
        values = [t.value for t in trials if t.state == State.COMPLETE and t.values is not None and len(t.values) == 1]
        self.best = max(values) if values else self.best
        finished = sum(t.state in (State.COMPLETE, State.PRUNED) for t in trials)
        self.progress.update(self.trials, completed=finished, info=f"best {self.best:.4f}" if self.best is not None else "")
        shown = next((t for t in trials if t.number == self.shown), None)
        if shown is not None and shown.state.is_finished():
            self.shown = None
            state = {State.COMPLETE: "complete", State.PRUNED: "pruned"}.get(shown.state, "failed")
            reached = shown.user_attrs.get("epochs", len(shown.intermediate_values))
            self.end_epochs(trial_label(shown), state, reached, self.epochs_per_trial, planned_phases(shown)[0])
        running = [t for t in trials if t.state == State.RUNNING]
        if running:
            t = running[-1]
            if t.number != self.shown:
                self.shown = t.number
                self.progress.reset(self.epochs, total=self.epochs_per_trial)
            label = trial_label(t)
            last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
            self.progress.update(
                self.epochs,
                total=self.epochs_per_trial,
                completed=len(t.intermediate_values),
                description="epochs",
                info=f"{label} val={last:.3f}" if last is not None else label,
            )


def trial_label(trial: optuna.trial.FrozenTrial) -> str:
    p = trial.user_attrs.get("params", {})
    return f"trial {trial.number}: {p.get('backbone', '')} {p.get('augmentation', '')} {p.get('imbalance', '')}"


class EpochProgress(keras.callbacks.Callback):
    """Feeds epoch ends, and phases ended by early stopping, to the progress display."""

    def __init__(self, progress: SearchProgress | None):
        super().__init__()
        self.display = progress

    def on_epoch_end(self, epoch, logs=None):
        if self.display is not None:
            self.display.epoch_done(epoch, logs or {})

    def on_train_end(self, logs=None):
        if self.display is not None:  # EarlyStopping ends a phase by setting stop_training
            self.display.phase_done(bool(getattr(self.model, "stop_training", False)))


def leaderboard(study: optuna.Study, top: int = 10) -> Leaderboard:
    """The best finished trials (the Pareto front for two objectives), laid out for the console's width."""
    return Leaderboard(study, top)


def bar_columns() -> tuple[ProgressColumn, ...]:
    """The columns of every bcauto progress bar: what it counts, the bar, done/total, the time so far, then the task's
    ``info`` (a trial's label and state, a loss) last, wrapping rather than cut at a narrow width."""
    return (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}", table_column=Column(overflow="fold")),
    )


class Bars(Progress):
    """rich's Progress with :func:`bar_columns`, the one progress display of the search, refit, adapt, evaluate and predict.

    A transient display disappears when done and prints nothing where the console is not a terminal (there it
    would leave an empty line behind: rich ends it with a newline it cannot erase)."""

    def __init__(self, console: Console, transient: bool):
        super().__init__(*bar_columns(), console=console, transient=transient, disable=transient and not console.is_terminal)

    def add_task(self, description: str, *args, info: str = "", **fields):
        return super().add_task(description, *args, info=info, **fields)


def transient_progress(console: Console) -> Bars:
    """Bars that disappear when done (see :class:`Bars`)."""
    return Bars(console, transient=True)


class EpochBar:
    """A rich progress bar over epochs, fed by a Keras callback: ``with EpochBar(...) as callback: model.fit(...,
    callbacks=[callback])``; gone when the block ends (:func:`transient_progress`).

    It shows the epoch the fit reports, so that a refit going on from a backup shows the epochs it had trained; with
    ``across_fits`` it counts every epoch of every fit it sees, for one bar over several trainings (``bcauto adapt``'s
    cross-validation folds)."""

    def __init__(self, console: Console, label: str, total: int, across_fits: bool = False):
        self.progress = transient_progress(console)
        self.task = self.progress.add_task(label, total=max(total, 1))
        self.callback = _bar_callback(self, across_fits)

    def __enter__(self) -> keras.callbacks.Callback:
        self.progress.start()
        return self.callback

    def __exit__(self, *exc):
        self.progress.stop()


def _bar_callback(bar: EpochBar, across_fits: bool) -> keras.callbacks.Callback:
    class Advance(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            loss = (logs or {}).get("loss")
            info = f"loss {loss:.4f}" if loss is not None else ""
            if across_fits:
                bar.progress.update(bar.task, advance=1, info=info)
            else:
                bar.progress.update(bar.task, completed=epoch + 1, info=info)

    return Advance()
