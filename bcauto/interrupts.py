"""How Ctrl-C and SIGTERM stop bcauto: the same way, through the code that marks trials and keeps partial work.

A cluster's scheduler stops a job with SIGTERM (Slurm at its time limit or on ``scancel``, then SIGKILL after a
grace period), and ``kill PID`` sends it too. Python's default for SIGTERM ends the process at once, skipping every
``finally``: the running trial stays "running" until a later run notices, staged files stay beside their targets.
"""

from __future__ import annotations

import contextlib
import signal
import threading

# Set by every Ctrl-C or SIGTERM the handlers here turn into KeyboardInterrupt. Python runs a signal's handler at
# the next instruction of the main thread, which may be inside a garbage collector's callback or a __del__; a
# KeyboardInterrupt raised there is printed as "Exception ignored" and lost, and a refit went on to its last epoch
# after it. Training loops check this (bcauto.training.StopWhenAsked) and raise it again.
_stop_asked = threading.Event()


def stop_asked() -> bool:
    """Whether a Ctrl-C or SIGTERM asked this process to stop since the command began."""
    return _stop_asked.is_set()


def _ctrl_c(signum, frame) -> None:
    _stop_asked.set()
    raise KeyboardInterrupt


def ctrl_c_raises() -> bool:
    """Whether Ctrl-C raises KeyboardInterrupt now (Python's default, or this module's handler that also records it)."""
    return signal.getsignal(signal.SIGINT) in (signal.default_int_handler, _ctrl_c)


def _as_ctrl_c(signum, frame) -> None:
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler):  # Ctrl-C ignored (a job started with `&` or nohup): SIGTERM must still stop it
        handler = _ctrl_c
    handler(signal.SIGINT, frame)


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """While the block runs, SIGTERM does whatever Ctrl-C does at that moment (by default, KeyboardInterrupt), and
    either, when it raises KeyboardInterrupt, is recorded for :func:`stop_asked`.

    Outside the main thread, where signals cannot be handled, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {signal.SIGTERM: _as_ctrl_c}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        handlers[signal.SIGINT] = _ctrl_c
    with _handling(handlers):
        yield


@contextlib.contextmanager
def ctrl_c_between_polls():
    """Turn Ctrl-C (and SIGTERM, under :func:`sigterm_as_ctrl_c`) into an event a polling loop checks, so it never
    lands inside a storage call.

    A KeyboardInterrupt raised in the middle of an Optuna or SQLAlchemy call can leave the study's storage half
    way through a request; the supervisor then has to mark the workers' trials failed through that storage.
    Only the main thread may take signals; elsewhere, and where SIGINT is ignored or has another handler, nothing
    changes.
    """
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread() or not ctrl_c_raises():
        yield interrupted
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def stopped_by_the_first_signal():
    """For a worker process: the first Ctrl-C or SIGTERM raises KeyboardInterrupt, and later ones are ignored.

    The worker then marks its trial failed through the study's storage; a second signal (a second Ctrl-C, the
    supervisor passing on a SIGTERM that reached only itself) must not interrupt that. A Ctrl-C this process
    was started ignoring stays ignored.
    """
    handled = [signal.SIGTERM] + ([signal.SIGINT] if ctrl_c_raises() else [])

    def stop(signum, frame):
        for sig in handled:
            signal.signal(sig, signal.SIG_IGN)
        _ctrl_c(signum, frame)

    with _handling(dict.fromkeys(handled, stop)):
        yield


@contextlib.contextmanager
def _handling(handlers: dict):
    """``handlers`` ({signal: handler}) installed while the block runs, the previous ones put back after it; the
    stop request is cleared on entry and on exit, so one block's signal never stops the next block's training."""
    _stop_asked.clear()
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_asked.clear()
