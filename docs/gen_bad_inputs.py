"""Writes docs/bad-inputs.md: bad inputs, each run through `bcauto`, with the exit code and the exact error it gets.

Every case builds its files (tiny generated data, a small untrained model directory) in an empty folder, runs the
command there in-process and keeps the first error line it printed. tests/test_bad_inputs.py runs the same cases,
checks each code and message, and fails when the page no longer shows what a case prints; run
`python docs/gen_bad_inputs.py` after changing a message, `--check` to only compare.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
DOCS = Path(__file__).resolve().parent
PAGE = DOCS / "bad-inputs.md"
TINY_STUDY = """[study]
trials = 2
seed = 3
pruner = "none"

[data]
image_size = 32

[train]
weights = "none"
head_epochs = 1
finetune_epochs = 0

[search]
backbone = "mini_cnn"
augmentation = "none"
imbalance = "none"
"""
STUDY_ARGS = ["search", "--study", "study.toml", "--workers", "0"]


class Workspace:
    """The empty folder a case runs in, and a model directory built once for every case that needs one."""

    def __init__(self, root: Path, models: Path):
        self.root, self.models = root, models
        self.values: dict[str, str] = {}  # PLACEHOLDER -> what it stands for in this run (a free port number)
        self.listener: socket.socket | None = None

    def write(self, name: str, text: str) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def npz(self, name: str, **arrays) -> None:
        np.savez(self.root / name, **arrays)

    def images(self, n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        from bcauto_builtin.sources.synthetic import generate

        return generate(n, size, seed)

    def folder(self, name: str, counts: dict[str, int]) -> None:
        """An image folder with ``counts[class]`` PNG files in each class's subfolder."""
        from PIL import Image

        images, _ = self.images(sum(counts.values()))
        i = 0
        for cls, n in counts.items():
            (self.root / name / cls).mkdir(parents=True, exist_ok=True)
            for _ in range(n):
                Image.fromarray(images[i]).save(self.root / name / cls / f"cell{i}.png")
                i += 1

    def model(self, name: str = "model") -> None:
        """A copy of a small untrained 32x32 model directory with the eight BloodMNIST classes."""
        source = self.models / "model"
        if not source.exists():
            build_model(source)
        shutil.copytree(source, self.root / name)


def build_model(out: Path) -> None:
    import keras

    from bcauto.bundle import save_bundle
    from bcauto_builtin.sources import BLOOD_CELL_CLASSES

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(BLOOD_CELL_CLASSES), activation="softmax")(x)
    save_bundle(keras.Model(inputs, outputs), {"class_names": list(BLOOD_CELL_CLASSES), "image_size": 32}, out)


@dataclass
class Case:
    id: str
    what: str  # what the user does, in words
    argv: list[str]  # after `bcauto`
    code: int
    expect: str  # a part of the message that must stay
    setup: Callable[[Workspace], None] | None = None


def study(text: str) -> Callable[[Workspace], None]:
    return lambda ws: ws.write("study.toml", text)


def tiny_study_and(setup: Callable[[Workspace], None]) -> Callable[[Workspace], None]:
    def both(ws: Workspace) -> None:
        ws.write("study.toml", TINY_STUDY)
        setup(ws)

    return both


def npz_of(**changes) -> Callable[[Workspace], None]:
    """cells.npz holding 32 synthetic images and labels, with ``changes`` (None drops an array)."""

    def write(ws: Workspace) -> None:
        from bcauto_builtin.sources import BLOOD_CELL_CLASSES

        images, labels = ws.images(32)
        arrays = {"images": images, "labels": labels, "class_names": np.array(BLOOD_CELL_CLASSES)}
        for key, value in changes.items():
            value = value(images, labels) if callable(value) else value
            if value is None:
                arrays.pop(key)
            else:
                arrays[key] = value
        ws.npz("cells.npz", **arrays)

    return write


def with_model(*then: Callable[[Workspace], None]) -> Callable[[Workspace], None]:
    def setup(ws: Workspace) -> None:
        ws.model()
        for step in then:
            step(ws)

    return setup


def truncated_image(ws: Workspace) -> None:
    ws.folder("slides", {"cells": 2})
    (ws.root / "slides" / "cells" / "cell9.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")


def busy_port(ws: Workspace) -> None:
    """A port this process listens on (closed when the case ends), shown as PORT."""
    ws.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ws.listener.bind(("127.0.0.1", 0))
    ws.listener.listen(1)
    ws.values["PORT"] = str(ws.listener.getsockname()[1])


def storage_with_study(ws: Workspace) -> None:
    import optuna

    optuna.create_study(study_name="tiny", storage="sqlite:///optuna.db")


def interrupted_refit(ws: Workspace) -> None:
    """A one-trial search of cells.npz, then `bcauto refit --epochs 300 --out model` in another process, stopped by
    SIGTERM (as a cluster's scheduler stops a job) once it has begun its member: the folder a rerun finds."""
    import subprocess
    import time

    from bcauto.cli import main
    from bcauto_builtin.sources import BLOOD_CELL_CLASSES

    ws.write("study.toml", TINY_STUDY.replace("trials = 2", "trials = 1"))
    images, labels = ws.images(96)  # enough for every class to split 80/20
    ws.npz("cells.npz", images=images, labels=labels, class_names=np.array(BLOOD_CELL_CLASSES))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if main([*STUDY_ARGS, "--data", "cells.npz"]) != 0:
            raise RuntimeError("the search before the interrupted refit failed")
    refit = subprocess.Popen(
        [sys.executable, "-m", "bcauto.cli", "refit", "--epochs", "300", "--out", "model"],
        cwd=ws.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    key = ws.root / "model.partial" / "trial_0" / "key.json"
    deadline = time.monotonic() + 300
    while not key.exists() and refit.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    refit.send_signal(signal.SIGTERM)
    if refit.wait(timeout=300) != 130 or not key.exists():
        raise RuntimeError(f"the refit to interrupt ended with {refit.returncode}, {'with' if key.exists() else 'without'} {key}")


def data_search(what: str, data: str, expect: str, setup, case_id: str, code: int = 2) -> Case:
    return Case(case_id, what, [*STUDY_ARGS, "--data", data], code, expect, tiny_study_and(setup))


def nothing(ws: Workspace) -> None:
    pass


def nan_images(images, labels):
    pixels = images.astype(np.float32)
    pixels[3, 0, 0, 0] = np.nan
    return pixels


CASES: list[Case] = [
    # study files
    Case(
        "study-typo",
        "misspells a study-file field (`lr_factr` in `[train]`)",
        STUDY_ARGS,
        2,
        "did you mean 'lr_factor'",
        study("[train]\nlr_factr = 0.5\n"),
    ),
    Case(
        "study-lr-factor",
        "sets `lr_factor = 7.0` in `[train]` (a factor that raises the learning rate)",
        STUDY_ARGS,
        2,
        "lr_factor",
        study("[train]\nlr_factor = 7.0\n"),
    ),
    Case(
        "study-units-word",
        'writes `head_units1 = "big"` in `[search]`',
        STUDY_ARGS,
        2,
        "head_units1",
        study('[search]\nhead_units1 = "big"\n'),
    ),
    Case(
        "study-wrong-table",
        "misspells a table (`[trian]`)",
        STUDY_ARGS,
        2,
        "unknown table or top-level field 'trian'",
        study("[trian]\nhead_epochs = 2\n"),
    ),
    Case(
        "study-field-wrong-table",
        "puts `head_epochs` under `[search]` instead of `[train]`",
        STUDY_ARGS,
        2,
        "'head_epochs' (it belongs in [train])",
        study("[search]\nhead_epochs = 2\n"),
    ),
    Case(
        "study-val-fraction", "sets `val_fraction = 1.5` in `[data]`", STUDY_ARGS, 2, "val_fraction", study("[data]\nval_fraction = 1.5\n")
    ),
    Case(
        "study-not-toml",
        "gives a study file that is not valid TOML (an unclosed `[train`)",
        STUDY_ARGS,
        2,
        "not valid TOML",
        study("[train\nhead_epochs = 2\n"),
    ),
    Case("study-missing", "names a study file that does not exist", ["search", "--study", "nothere.toml"], 2, "nothere.toml"),
    Case(
        "study-refit-epochs-negative",
        "asks the refit for a negative number of epochs (`refit_epochs = -5` in `[train]`)",
        STUDY_ARGS,
        2,
        "refit_epochs",
        study("[train]\nrefit_epochs = -5\n"),
    ),
    Case(
        "unknown-backbone",
        "asks for a backbone no installed plugin provides (`resnet5O`)",
        STUDY_ARGS,
        2,
        "resnet5O",
        study('[search]\nbackbone = ["mini_cnn", "resnet5O"]\n'),
    ),
    Case(
        "unknown-augmentation",
        "asks for an augmentation no installed plugin provides (`flip_rotate_zom`)",
        STUDY_ARGS,
        2,
        "flip_rotate_zom",
        study('[search]\naugmentation = ["none", "flip_rotate_zom"]\n'),
    ),
    # search options
    Case("trials-zero", "runs `search --trials 0`", ["search", "--trials", "0"], 2, "--trials"),
    Case("trials-negative", "runs `search --trials -3`", ["search", "--trials", "-3"], 2, "--trials"),
    Case("trials-word", "runs `search --trials many`", ["search", "--trials", "many"], 2, "--trials"),
    Case("workers-negative", "runs `search --workers -1`", ["search", "--workers", "-1"], 2, "--workers"),
    Case(
        "storage-scheme", "gives an Optuna storage URL of an unknown scheme", ["search", "--storage", "ftp://host/optuna"], 2, "--storage"
    ),
    Case(
        "storage-missing-folder",
        "puts the SQLite storage in a folder that does not exist",
        ["search", "--storage", "sqlite:///missing/optuna.db"],
        2,
        "missing",
    ),
    Case(
        "tracking-missing-folder",
        "puts the MLflow store in a folder that does not exist",
        ["search", "--tracking-uri", "sqlite:///missing/mlflow.db"],
        2,
        "missing",
    ),
    # data
    data_search("points --data at a path that does not exist", "nothere", "path nothere was not found", nothing, "data-missing"),
    data_search("names a data source that is not installed (`bloodmnst:64`)", "bloodmnst:64", "bloodmnst", nothing, "data-unknown-source"),
    data_search(
        "gives a text file named .npz",
        "cells.npz",
        "not an .npz archive",
        lambda ws: ws.write("cells.npz", "images,labels\n"),
        "npz-not-zip",
    ),
    data_search("gives an .npz without an 'images' array", "cells.npz", "'images'", npz_of(images=None), "npz-no-images"),
    data_search(
        "gives an .npz whose labels are Python objects",
        "cells.npz",
        "Python objects",
        npz_of(labels=lambda images, labels: np.array([str(y) for y in labels], dtype=object)),
        "npz-object-array",
    ),
    data_search(
        "gives an .npz with fewer labels than images",
        "cells.npz",
        "labels",
        npz_of(labels=lambda images, labels: labels[:-2]),
        "npz-label-count",
    ),
    data_search(
        "gives an .npz with a label past the last class name",
        "cells.npz",
        "labels",
        npz_of(labels=lambda images, labels: np.where(np.arange(len(labels)) == 5, 9, labels)),
        "npz-label-range",
    ),
    data_search("gives an .npz with a NaN pixel", "cells.npz", "NaN", npz_of(images=nan_images), "npz-nan"),
    data_search(
        "gives an .npz whose `class_names` repeat a name",
        "cells.npz",
        "class_names",
        npz_of(class_names=np.array(["a", "b", "a"])),
        "npz-repeated-names",
    ),
    data_search(
        "gives an image folder with one class",
        "slides",
        "one class",
        lambda ws: ws.folder("slides", {"neutrophil": 12}),
        "folder-one-class",
    ),
    data_search(
        "gives an image folder where one class has too few images for the split",
        "slides",
        "rare",
        lambda ws: ws.folder("slides", {"common": 20, "rare": 1}),
        "folder-tiny-class",
    ),
    data_search(
        "gives an image folder with an empty class folder",
        "slides",
        "empty",
        lambda ws: (ws.folder("slides", {"full": 8}), (ws.root / "slides" / "empty").mkdir()),
        "folder-empty-class",
    ),
    data_search(
        "gives an image folder holding a truncated PNG (default --on-bad-image stop)",
        "slides",
        "cell9.png",
        truncated_image,
        "folder-truncated-image",
    ),
    # commands on a study or a model
    Case("refit-epochs-zero", "runs `refit --epochs 0`", ["refit", "--epochs", "0"], 2, "--epochs"),
    Case("refit-epochs-word", "runs `refit --epochs longer`", ["refit", "--epochs", "longer"], 2, "--epochs"),
    Case(
        "refit-partial-other-settings",
        "runs a refit again with other epochs after it was interrupted (`refit --epochs 300` stopped by SIGTERM)",
        ["refit", "--epochs", "4", "--out", "model"],
        2,
        "kept by an interrupted refit of the same trial with other epochs",
        interrupted_refit,
    ),
    Case("best-empty-folder", "runs `bcauto best` in a folder without a study", ["best"], 2, "optuna.db"),
    Case(
        "refit-unknown-study", "refits a study name the storage does not hold", ["refit", "--name", "tni"], 2, "'tni'", storage_with_study
    ),
    Case(
        "evaluate-no-model",
        "evaluates a model folder that does not exist",
        ["evaluate", "nomodel", "--data", "cells.npz"],
        2,
        "nomodel",
        npz_of(),
    ),
    Case(
        "evaluate-unknown-class",
        "evaluates on data holding a class the model does not know",
        ["evaluate", "model", "--data", "cells.npz"],
        2,
        "'blast'",
        with_model(npz_of(labels=lambda images, labels: labels % 2, class_names=np.array(["neutrophil", "blast"]))),
    ),
    Case(
        "evaluate-classes-unknown",
        "restricts evaluate to a class the model does not know",
        ["evaluate", "model", "--data", "cells.npz", "--classes", "neutrophil,blast"],
        2,
        "'blast'",
        with_model(npz_of()),
    ),
    Case(
        "evaluate-unnamed-labels",
        "evaluates on an .npz without class names holding more labels than the model has classes",
        ["evaluate", "model", "--data", "cells.npz"],
        2,
        "add a 'class_names' array",
        with_model(npz_of(class_names=None, labels=lambda images, labels: np.arange(len(labels)) % 10)),
    ),
    Case(
        "predict-truncated",
        "predicts a folder holding a truncated PNG with `--on-bad-image stop`",
        ["predict", "model", "slides", "--on-bad-image", "stop"],
        2,
        "cell9.png",
        with_model(truncated_image),
    ),
    Case(
        "predict-missing-input",
        "predicts an input path that does not exist",
        ["predict", "model", "nothere.png"],
        2,
        "nothere.png",
        with_model(),
    ),
    Case(
        "adapt-too-many-shots",
        "asks `adapt` for more shots than the data allows",
        ["adapt", "model", "--data", "cells.npz", "--shots", "500"],
        2,
        "--shots 500",
        with_model(npz_of()),
    ),
    Case(
        "adapt-zero-shots",
        "asks `adapt` for 0 shots",
        ["adapt", "model", "--data", "cells.npz", "--shots", "0"],
        2,
        "--shots",
        with_model(npz_of()),
    ),
    Case(
        "adapt-pool-of-shots",
        "gives `adapt --pool` the same images as its labelled --data",
        ["adapt", "model", "--data", "cells.npz", "--pool", "cells.npz"],
        2,
        "every image is one of the shots of --data",
        with_model(npz_of()),
    ),
    Case(
        "suggest-too-many-shots",
        "asks `suggest` for as many images to label as the inputs hold",
        ["suggest", "model", "cells.npz", "--shots", "32", "--out", "to-label"],
        2,
        "--shots 32",
        with_model(npz_of()),
    ),
    Case(
        "suggest-out-exists",
        "asks `suggest` to copy the images to label into a folder that exists",
        ["suggest", "model", "cells.npz", "--shots", "4", "--out", "slides"],
        2,
        "already exists",
        with_model(npz_of(), lambda ws: ws.folder("slides", {"cells": 1})),
    ),
    Case("new-plugin-bad-name", "names a new plugin with capitals and a hyphen", ["new-plugin", "backbone", "Tiny-Net"], 2, "Tiny-Net"),
    Case("new-plugin-clash", "names a new plugin after a built-in backbone", ["new-plugin", "backbone", "resnet50"], 2, "resnet50"),
    Case("new-plugin-kind", "asks for a plugin kind that does not exist", ["new-plugin", "sampler", "tiny"], 2, "sampler"),
    Case(
        "ui-busy-port",
        "starts `bcauto ui` on a port another program listens on",
        ["ui", "--port", "PORT"],
        2,
        "127.0.0.1:PORT: ",
        busy_port,
    ),
    Case("audit-missing-data", "audits a path that does not exist", ["audit", "--data", "nothere"], 2, "nothere"),
]

ERROR_LINE = re.compile(r"(^|: )error: ")


@dataclass
class Outcome:
    code: int
    message: str  # the first error line, with the case's folder shown as "."
    stderr: str
    created: list[str]  # what the command left in the case's folder


def run_case(case: Case, root: Path, models: Path) -> Outcome:
    """Run ``case`` in the empty folder ``root``; its model directory (if any) comes from the cache ``models``."""
    from bcauto.cli import main

    ws = Workspace(root, models)
    previous = os.getcwd()
    os.chdir(root)
    err, out = io.StringIO(), io.StringIO()
    try:
        if case.setup:
            case.setup(ws)
        before = set(root.rglob("*"))
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main([ws.values.get(arg, arg) for arg in case.argv])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception as exc:  # noqa: BLE001 - a traceback is what a case must never get; shown as such
                code, err = 1, io.StringIO(f"Traceback: {type(exc).__name__}: {exc}\n")
    finally:
        os.chdir(previous)
        if ws.listener:
            ws.listener.close()
    text = err.getvalue().replace(str(root) + os.sep, "").replace(str(root), ".")
    for placeholder, value in ws.values.items():
        text = text.replace(value, placeholder)
    lines = [line.rstrip() for line in text.splitlines()]
    message = next((line for line in lines if ERROR_LINE.search(line)), next((line for line in lines if line), ""))
    return Outcome(code, message, text, sorted(str(p.relative_to(root)) for p in set(root.rglob("*")) - before))


def shown_command(case: Case) -> str:
    import shlex

    return "bcauto " + shlex.join(case.argv)


def code_span(text: str) -> str:
    ticks = "``" if "`" in text else "`"
    pad = " " if ticks == "``" else ""
    return f"{ticks}{pad}{text.replace('|', '&#124;')}{pad}{ticks}"


def row(case: Case, outcome: Outcome) -> str:
    return (
        f"| {case.id} | {case.what.replace('|', '&#124;')} | {code_span(shown_command(case))} | {outcome.code} | "
        f"{code_span(outcome.message)} |"
    )


HEADER = """# Bad inputs and the errors they get

<!-- generated by docs/gen_bad_inputs.py from the cases tests/test_bad_inputs.py runs; do not edit by hand -->

Each row is a mistake a user can make, the command run, its exit code and the first error line bcauto prints
(exit code 2: a usage or input error; nothing was trained or created). Files named in a command (`study.toml`,
`cells.npz`, `slides/`, `model/`) are built by the case in an empty folder: tiny generated images and, for the
commands that take a model, a small untrained model directory with the eight BloodMNIST classes. A case whose study
file is not shown otherwise uses a small valid one. Every row is checked by the test suite: when a message changes,
this page is regenerated with `python docs/gen_bad_inputs.py`.

| case | what the user does | command | exit | error |
|---|---|---|---|---|
"""


def page(rows: list[str]) -> str:
    return HEADER + "\n".join(rows) + "\n"


def render_all() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        rows = []
        for case in CASES:
            root = Path(tmp) / case.id
            root.mkdir()
            rows.append(row(case, run_case(case, root, models)))
    return page(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if docs/bad-inputs.md differs from what the cases print")
    check = parser.parse_args(argv).check
    text = render_all()
    if check:
        if not PAGE.exists() or PAGE.read_text(encoding="utf-8") != text:
            print("stale generated docs: bad-inputs.md; run python docs/gen_bad_inputs.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
