"""Quiet start-up of the heavy frameworks (TensorFlow, MLflow, Optuna), for the command line and the workers."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings


@contextlib.contextmanager
def native_stderr_silenced():
    """Silence C++ start-up logging (oneDNN, CUDA probing) that ignores Python's logging settings."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class RetracingNoticeFilter(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning.

    Every trial builds new models, and Keras traces a predict function for each (once more for a last, smaller
    batch); TensorFlow counts these traces of the same code across models as retraces and warns, although a few
    traces per trial are what new models need and cost little beside their training.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


class InterruptedTrialNoticeFilter(logging.Filter):
    """Drops Optuna's two warnings about a trial stopped by Ctrl-C or SIGTERM: a KeyboardInterrupt traceback and
    "failed with value None".

    bcauto says itself that the trial was interrupted and how to resume; a traceback there reads as a crash. Other
    failures keep Optuna's traceback, which a plugin's author needs.
    """

    def __init__(self):
        super().__init__()
        self.interrupted: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        trial = message.split(" failed with ")[0]
        if record.exc_info and record.exc_info[0] is KeyboardInterrupt:
            self.interrupted.add(trial)
            return False
        if trial in self.interrupted and message.startswith(f"{trial} failed with value"):
            self.interrupted.discard(trial)
            return False
        return True


def filter_once(logger: logging.Logger, kind: type[logging.Filter]) -> None:
    """Add a ``kind`` filter to ``logger`` unless it has one (quiet_frameworks runs once per command, tests more)."""
    if not any(isinstance(f, kind) for f in logger.filters):
        logger.addFilter(kind())


def quiet_frameworks(tensorflow: bool = True, optuna: bool = True) -> None:
    """Keep TensorFlow's, MLflow's and Optuna's start-up chatter out of the user's terminal.

    ``tensorflow=False`` (commands that neither train nor track: ``best``, ``plugins``) imports neither
    TensorFlow nor MLflow, which take seconds to start, and ``optuna=False`` (``plugins``) not Optuna; the log
    levels set here still hold for a framework imported later, except its import-time messages.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if tensorflow:
        with native_stderr_silenced():
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")
        import mlflow  # noqa: F401  (mlflow sets its own log level on import; override it afterwards)

    for name in ("alembic", "absl", "tensorflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    filter_once(logging.getLogger("tensorflow"), RetracingNoticeFilter)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="optuna")
    warnings.filterwarnings("ignore", category=UserWarning, module="keras")
    if optuna:
        import optuna as optuna_module

        optuna_module.logging.set_verbosity(optuna_module.logging.WARNING)
        filter_once(logging.getLogger("optuna.study._optimize"), InterruptedTrialNoticeFilter)
