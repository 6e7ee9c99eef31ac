"""The built wheel holds what the commands read at run time: every package and the shipped study files.

The full check (the wheel installed with its dependencies in a fresh venv, a search run outside the repo) is
``.ci/wheel_check.sh``; it takes minutes, so CI runs it as a step of its own.
"""

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from bcauto.cli import studies_dir

ROOT = Path(__file__).resolve().parent.parent
STUDIES = sorted(p.name for p in (ROOT / "studies").glob("*.toml"))
BUILD_TIMEOUT = 300


def _setuptools_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed_in_pyproject():
    config = _setuptools_config()
    folders = {"": ".", **config["package-dir"]}

    def folder(package: str) -> Path:
        head = max((p for p in folders if p == "" or package == p or package.startswith(p + ".")), key=len)
        rest = package[len(head) :].lstrip(".").split(".") if package != head else []
        return ROOT / folders[head] / Path(*[r for r in rest if r])

    listed = {folder(p).resolve() for p in config["packages"]}
    present = {
        p.parent.resolve()
        for top in ("bcauto", "plugins/bcauto_builtin", "studies")
        for p in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert present == listed, f"package folders not in pyproject's [tool.setuptools] packages: {present - listed}"


def test_shipped_studies_come_from_the_package_not_the_current_folder(tmp_path, monkeypatch):
    decoy = tmp_path / "studies"
    decoy.mkdir()
    (decoy / "cpu.toml").write_text("[study]\ntrials = 1\n")
    monkeypatch.chdir(tmp_path)
    found = studies_dir()
    assert found.resolve() != decoy.resolve()
    assert set(STUDIES) <= {p.name for p in found.iterdir()}


def _source_copy(target: Path) -> Path:
    """The files git tracks or would track, copied: a build of the checkout itself could pick up a stale build/."""
    listed = (
        subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(source.read_bytes())
    return target


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = _source_copy(tmp_path_factory.mktemp("source"))
    dist = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(source)],
        check=False,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return next(dist.glob("bcauto-*.whl"))


@pytest.mark.packaging
def test_wheel_ships_the_study_files_as_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"bcauto/studies/{name}" for name in STUDIES} <= names
    assert {"bcauto/cli.py", "bcauto/templates/backbone.py", "bcauto_builtin/datasets.py"} <= names


@pytest.mark.packaging
def test_default_study_loads_from_the_installed_wheel(wheel, tmp_path):
    """The wheel's files alone (its dependencies from this venv): the CLI finds and reads its default study."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=BUILD_TIMEOUT,
    )
    code = (
        "import sys; from rich.console import Console; from bcauto.cli import default_study; "
        "from bcauto.config import load_study; "
        "path = default_study(Console(file=sys.stderr), gpu=False); cfg = load_study(path); "
        "print(path); print(cfg.choices('backbone'))"
    )
    # the wheel's copy of bcauto comes first on the path, before this venv's editable install
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, check=False, capture_output=True, text=True, timeout=BUILD_TIMEOUT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    path, backbones = result.stdout.strip().splitlines()
    assert Path(path).resolve() == (target / "bcauto" / "studies" / "cpu.toml").resolve()
    assert "mini_cnn" in backbones
