"""bcauto's built-in components, registered through the ``bcauto`` entry points like any plugin."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy(module: str, name: str) -> Callable[..., Any]:
    """A function that imports ``module`` on its first call and calls its ``name``: the built-ins register their
    specs without importing Keras, whose TensorFlow start-up takes seconds, and import it when a model is built."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{module}.{name}, imported on the first call."
    return call
