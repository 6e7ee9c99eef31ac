"""Commands that build no model start without TensorFlow, Keras or MLflow (seconds each), and a saved model's
custom layers still load: the plugins import them through the ``load_keras_objects`` hook."""

import json
import subprocess
import sys
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("tensorflow", "keras", "mlflow")


def _run(code: str, cwd: Path):
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _modules_after(argv: list[str], cwd: Path) -> list[str]:
    code = (
        "import contextlib, io, json, sys\n"
        "from bcauto.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    return _run(code, cwd)


def test_help_plugins_and_best_import_no_tensorflow_keras_or_mlflow(tmp_path):
    study = optuna.create_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/optuna.db", direction="maximize")
    for value in (0.5, 0.7):
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        study.tell(trial, value)
    assert _modules_after(["--help"], tmp_path) == []
    assert _modules_after(["plugins"], tmp_path) == []
    assert _modules_after(["best", "--storage", f"sqlite:///{tmp_path}/optuna.db"], tmp_path) == []


def test_load_keras_objects_registers_the_builtin_layers(tmp_path):
    code = (
        "import json, keras\n"
        "from bcauto import plugins\n"
        "names = ['bcauto>RandomHEDJitter', 'bcauto>CellAugMix', 'bcauto>StainNormalization', 'bcauto>CellCentredCrop']\n"
        "before = [keras.saving.get_registered_object(n) is not None for n in names]\n"
        "plugins.components()\n"
        "listed = [keras.saving.get_registered_object(n) is not None for n in names]\n"
        "plugins.load_keras_objects()\n"
        "after = [keras.saving.get_registered_object(n) is not None for n in names]\n"
        "print(json.dumps({'before': before, 'listed': listed, 'after': after}))\n"
    )
    seen = _run(code, ROOT)
    assert not any(seen["before"]) and not any(seen["listed"])  # listing the plugins builds no layer
    assert all(seen["after"])
