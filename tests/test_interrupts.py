"""Ctrl-C and SIGTERM: both stop bcauto through the code that marks trials and keeps partial work."""

import os
import signal
import time

import pytest

from bcauto.interrupts import ctrl_c_between_polls, sigterm_as_ctrl_c, stopped_by_the_first_signal


@pytest.fixture
def terminal_signals():
    """SIGINT as in a terminal (pytest may have been started in the background, with it ignored); both restored."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def delivered(sig: int) -> None:
    """Send ``sig`` to this process and give Python the moment it needs to run the handler."""
    os.kill(os.getpid(), sig)
    time.sleep(0.5)


def test_the_supervisor_takes_ctrl_c_between_polls_and_leaves_an_ignored_sigint_ignored(terminal_signals):
    with ctrl_c_between_polls() as interrupted:
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt here, in the middle of whatever runs
        assert interrupted.wait(5)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a search started with nohup or `&` by a script
    with ctrl_c_between_polls() as interrupted:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert not interrupted.is_set()


@pytest.mark.parametrize("sigint", ["terminal", "ignored"])
def test_sigterm_raises_keyboard_interrupt_even_where_ctrl_c_is_ignored(terminal_signals, sigint):
    if sigint == "ignored":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), sigterm_as_ctrl_c():
        delivered(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_reaches_the_supervisors_poll_as_ctrl_c_does(terminal_signals):
    with sigterm_as_ctrl_c(), ctrl_c_between_polls() as interrupted:
        delivered(signal.SIGTERM)  # no KeyboardInterrupt: an event, like Ctrl-C
        assert interrupted.is_set()


INT, TERM = signal.SIGINT, signal.SIGTERM


@pytest.mark.parametrize("first, second", [(INT, TERM), (TERM, INT), (TERM, TERM)])
def test_a_worker_stops_on_the_first_signal_and_ignores_the_next_while_it_marks_its_trial(terminal_signals, first, second):
    marked = False
    with stopped_by_the_first_signal():
        try:
            delivered(first)
        except KeyboardInterrupt:
            delivered(second)  # raises here when the second signal is not ignored
            marked = True
    assert marked
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_worker_started_ignoring_ctrl_c_keeps_ignoring_it_but_stops_on_sigterm(terminal_signals):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with stopped_by_the_first_signal():
        delivered(signal.SIGINT)  # raises here when Ctrl-C is no longer ignored
        with pytest.raises(KeyboardInterrupt):
            delivered(signal.SIGTERM)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_optunas_notice_of_an_interrupted_trial_is_dropped_and_a_failed_trials_traceback_kept():
    import logging
    import sys

    from optuna.study._optimize import _log_failed_trial

    from bcauto.frameworks import quiet_frameworks

    quiet_frameworks(tensorflow=False)
    shown: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = shown.append
    logger = logging.getLogger("optuna.study._optimize")
    logger.addHandler(handler)
    try:
        for number, error in ((3, KeyboardInterrupt()), (4, ValueError("bad plugin"))):
            try:
                raise error
            except BaseException as exc:
                _log_failed_trial(number, {"lr": 0.1}, repr(exc), exc_info=sys.exc_info(), value_or_values=None)
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage().split(" because")[0] for r in shown] == [
        "Trial 4 failed with parameters: {'lr': 0.1}",
        "Trial 4 failed with value None.",
    ]
    assert shown[0].exc_info[0] is ValueError
