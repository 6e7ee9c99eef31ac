"""One-way imports: the core never imports the built-in plugin or the command line (import-linter's contracts
in pyproject.toml), and the built-ins can be switched off like any other plugin."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    result = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


# bcauto-densenet (installed in CI) builds on bcauto_builtin.backbones, so it goes too
@pytest.mark.parametrize(
    "disabled", ["bcauto,bcauto-densenet", "backbones,augmentations,imbalance,datasets,shifts,canonicalizers,bcauto-densenet"]
)
def test_with_the_builtins_disabled_the_core_loads_and_lists_none_of_them(disabled):
    code = (
        "import json, sys\n"
        "from bcauto.cli import main\n"
        "main(['plugins', '--json'])\n"
        "assert not [m for m in sys.modules if m.startswith('bcauto_builtin')], 'a built-in module was imported'\n"
    )
    env = {**os.environ, "BCAUTO_DISABLE_PLUGINS": disabled}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout)["components"]
    assert not [row for row in rows if row["package"] == "bcauto"], rows
