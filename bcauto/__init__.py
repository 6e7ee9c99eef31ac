"""bcauto: a plugin-based AutoML experiment runner for blood-cell image classification."""

from bcauto.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
