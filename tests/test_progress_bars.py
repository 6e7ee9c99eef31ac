"""One progress display for the search, refit, evaluate and predict: done/total, time so far, the task's info last."""

import io

from rich.console import Console

from bcauto.progress import EpochBar, SearchProgress, transient_progress


def terminal() -> Console:
    return Console(file=io.StringIO(), width=80, force_terminal=True, record=True)


def last_frame(console: Console, label: str) -> str:
    """The last drawing of the bar labelled ``label``, rich's wrapping undone."""
    return label + " ".join(console.export_text(clear=False).split()).rsplit(label, 1)[-1]


def test_evaluate_and_predict_bars_count_steps_and_show_the_time_so_far():
    console = terminal()
    with transient_progress(console) as progress:  # transient: gone when done, so read it while it runs
        task = progress.add_task("predicting", total=40)
        progress.update(task, advance=15)
        progress.refresh()
        assert "15/40 0:00:0" in last_frame(console, "predicting")


def test_a_refit_member_bar_shows_its_loss_last_like_the_search_bars():
    console = terminal()
    bar = EpochBar(console, "trial 3", 5)
    with bar as callback:
        callback.on_epoch_end(0, {"loss": 0.25})
        bar.progress.refresh()
        refit = last_frame(console, "trial 3")
    assert "1/5 0:00:0" in refit and refit.endswith("loss 0.2500"), refit
    console = terminal()
    with SearchProgress(console, total_trials=3, epochs_per_trial=5) as progress:
        progress.trial_started(1, "mini_cnn none none", 5)
        progress.epoch_done(0, {"val_macro_f1": 0.5})
    search = last_frame(console, "epochs")
    assert "1/5 0:00:0" in search and search.endswith("trial 1: mini_cnn none none val_macro_f1=0.500"), search


def test_a_bar_across_fits_counts_every_epoch_of_each_fit_it_sees():
    console = terminal()
    bar = EpochBar(console, "choosing the epochs", 6, across_fits=True)
    with bar as callback:
        for _fold in range(2):  # each fold's fit numbers its epochs from 0
            for epoch in range(2):
                callback.on_epoch_end(epoch, {"loss": 0.5})
        bar.progress.refresh()
        shown = last_frame(console, "choosing the epochs")
    assert "4/6 0:00:0" in shown, shown


def test_transient_bars_print_nothing_outside_a_terminal():
    out = io.StringIO()
    with transient_progress(Console(file=out, width=80)) as progress:
        progress.update(progress.add_task("evaluating", total=2), advance=1)
    assert out.getvalue() == ""
