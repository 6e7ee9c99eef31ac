"""How Ctrl-C and SIGTERM stop bcauto: the same way, through the code that marks trials and keeps partial work.

A cluster's scheduler stops a job with SIGTERM (Slurm at its time limit or on ``scancel``, then SIGKILL after a
grace period), and ``kill PID`` sends it too. Python's default for SIGTERM ends the process at once, skipping every
``finally``: the running trial stays "running" until a later run notices, staged files stay beside their targets.
"""

from __future__ import annotations

import contextlib
import signal
import threading


def _as_ctrl_c(signum, frame) -> None:
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler):  # Ctrl-C ignored (a job started with `&` or nohup): SIGTERM must still stop it
        handler = signal.default_int_handler
    handler(signal.SIGINT, frame)


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """While the block runs, SIGTERM does whatever Ctrl-C does at that moment (by default, KeyboardInterrupt).

    Outside the main thread, where signals cannot be handled, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _as_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
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
    handled = [signal.SIGTERM] + ([signal.SIGINT] if signal.getsignal(signal.SIGINT) is signal.default_int_handler else [])

    def stop(signum, frame):
        for sig in handled:
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
