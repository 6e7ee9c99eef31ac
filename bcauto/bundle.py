"""A refitted model on disk: ``model.keras`` (one Keras model, uint8-range images in, class probabilities out)
and ``bcauto-model.json`` (class names, image size, preprocessing, study, trials, metrics).

The directory is self-contained: :func:`load_bundle` needs bcauto (for its registered layers) but neither the
study, its storage nor MLflow. Models load with ``safe_mode=True``: no Lambda layer, no pickled code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bcauto.errors import BcautoError
from bcauto.files import write_text_whole, written_whole
from bcauto.plugins import load_keras_objects
from bcauto.text import plural

MODEL_FILE = "model.keras"
INFO_FILE = "bcauto-model.json"
BUNDLE_FORMAT = 1


@dataclass
class Bundle:
    """A loaded model directory."""

    path: Path
    model: Any  # keras.Model
    info: dict

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.info["class_names"])

    @property
    def image_size(self) -> int:
        return int(self.info["image_size"])


def register_layers() -> None:
    """Import every module that registers serializable layers: bcauto's own, and those of every enabled plugin
    (its modules, and what its ``load_keras_objects`` hook imports)."""
    import bcauto.model  # noqa: F401  (ReverseChannels, ClassSubset, TrainingOnly)

    load_keras_objects()


def ensemble(members: list, name: str = "ensemble"):
    """One functional model whose output is the mean of the members' softmax outputs (a single member as is)."""
    import keras

    if len(members) == 1:
        return members[0]
    shape = members[0].input_shape[1:]
    if any(m.input_shape[1:] != shape for m in members) or len({m.output_shape[-1] for m in members}) != 1:
        raise BcautoError("ensemble members must share the input shape and the number of classes")
    inputs = keras.Input(shape=shape, name="image")
    # each member wrapped under its own name: the trained classifiers are all called "classifier"
    outputs = [keras.Model(m.input, m.output, name=f"member_{i}")(inputs) for i, m in enumerate(members)]
    mean = keras.layers.Average(dtype="float32", name="mean_probabilities")(outputs)
    return keras.Model(inputs, mean, name=name)


def save_bundle(model, info: dict, out: str | Path) -> Path:
    """Write ``model.keras`` and ``bcauto-model.json`` into ``out`` (created); returns ``out``.

    Both files are written under temporary names in ``out`` and renamed into place only once both are complete: a
    write that fails or is interrupted (a full disk, Ctrl-C) leaves a model directory that was already there as it
    was. The old ``bcauto-model.json`` is removed just before the renames, so the one moment a new model could meet
    the old description leaves a directory that :func:`load_bundle` refuses instead (description missing).
    """
    out = Path(out)
    info = {"format": BUNDLE_FORMAT, **info}
    for key in ("class_names", "image_size"):
        if key not in info:
            raise ValueError(f"bundle info needs {key!r}")
    out.mkdir(parents=True, exist_ok=True)
    with written_whole(out / INFO_FILE) as staged_info, written_whole(out / MODEL_FILE) as staged_model:
        model.save(staged_model)
        staged_info.write_text(_info_text(info), encoding="utf-8")
        (out / INFO_FILE).unlink(missing_ok=True)  # renamed in after the model: see the docstring
    return out


def update_info(out: Path, info: dict) -> None:
    """Replace the model directory's ``bcauto-model.json`` with ``info``, written whole."""
    write_text_whole(out / INFO_FILE, _info_text({"format": BUNDLE_FORMAT, **info}))


def _info_text(info: dict) -> str:
    return json.dumps(info, indent=2, default=str) + "\n"


def load_bundle(path: str | Path) -> Bundle:
    """A model directory written by :func:`save_bundle` (or its ``model.keras``), loaded with ``safe_mode=True``."""
    path = Path(path).expanduser()
    if path.is_file() and path.name in (MODEL_FILE, INFO_FILE):
        path = path.parent
    if not path.is_dir():
        raise BcautoError(
            f"{path}: no model directory there (expected a folder with {MODEL_FILE} and {INFO_FILE}, as `bcauto refit` writes)"
        )
    missing = [name for name in (MODEL_FILE, INFO_FILE) if not (path / name).is_file()]
    if missing:
        raise BcautoError(f"{path}: not a bcauto model directory: {', '.join(missing)} missing")
    try:
        info = json.loads((path / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BcautoError(f"{path / INFO_FILE}: cannot be read ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != BUNDLE_FORMAT:
        raise BcautoError(
            f"{path / INFO_FILE}: unknown format {info.get('format') if isinstance(info, dict) else info!r}; "
            f"this bcauto reads format {BUNDLE_FORMAT}"
        )
    register_layers()
    import keras

    try:
        model = keras.saving.load_model(path / MODEL_FILE, compile=False, safe_mode=True)
    except Exception as exc:
        raise BcautoError(
            f"{path / MODEL_FILE}: cannot be loaded ({type(exc).__name__}: {exc}); a layer from a plugin "
            "that is not installed here, or a file from a newer Keras"
        ) from None
    classes = model.output_shape[-1]
    if classes != len(info.get("class_names", ())):
        raise BcautoError(
            f"{path}: the model has {plural(classes, 'output')} but {INFO_FILE} names {plural(len(info.get('class_names', ())), 'class')}"
        )
    return Bundle(path=path, model=model, info=info)
