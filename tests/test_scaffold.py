"""``bcauto new-plugin``: every kind generates a package whose own tests pass; one is really pip-installed."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from bcauto import plugins
from bcauto.cli import main
from bcauto.errors import BcautoError
from bcauto.scaffold import KINDS, new_plugin, package_names

PIP_TIMEOUT = 120


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "backbone"])
def test_generated_component_works_when_registered_at_runtime(kind, tmp_path):
    name = f"scaffolded_{kind}"
    target = new_plugin(kind, name, tmp_path)
    _, module_name = package_names(name)
    assert {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()} == {
        "pyproject.toml", "README.md", f"{module_name}/__init__.py", "tests/test_plugin.py"}
    assert f'{name} = "{module_name}"' in (target / "pyproject.toml").read_text()
    plugin = _import(target / module_name / "__init__.py", module_name)
    generated_tests = _import(target / "tests" / "test_plugin.py", f"{module_name}_tests")
    plugins.register_plugin(plugin, f"tests:{name}")
    try:
        assert name in plugins.components().by_kind()[KINDS[kind]]
        generated_tests.test_component_works()
    finally:
        plugins.unregister_plugin(f"tests:{name}")


def _pip(*args: str) -> None:
    # the venv's own setuptools when it has one: no download, and the same result for a pure-Python package
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet", *args, *isolation],
                   check=True, timeout=PIP_TIMEOUT, capture_output=True, text=True)


def test_generated_backbone_package_installs_and_its_tests_pass(tmp_path):
    """The full author's path: generate, ``pip install -e``, run the generated tests (entry point included)."""
    assert main(["new-plugin", "backbone", "scaffolded_net", "--dir", str(tmp_path)]) == 0
    target = tmp_path / "bcauto-scaffolded-net"
    try:
        _pip("install", "--no-deps", "-e", str(target))
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=target,
                                capture_output=True, text=True, timeout=PIP_TIMEOUT)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "2 passed" in result.stdout
    finally:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet", "bcauto-scaffolded-net"],
                       capture_output=True, timeout=PIP_TIMEOUT)
        plugins.reload()


def test_existing_target_is_refused(tmp_path):
    new_plugin("imbalance", "twice", tmp_path)
    with pytest.raises(BcautoError, match="already exists"):
        new_plugin("imbalance", "twice", tmp_path)


@pytest.mark.parametrize("name", ["TinyNet", "tiny-net", "9net", "tiny__net", "net_", "", "x" * 41])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(BcautoError, match="lower-case letters"):
        new_plugin("backbone", name, tmp_path)
    assert not any(tmp_path.iterdir())


def test_cli_reports_errors_and_rejects_unknown_kinds(tmp_path, capsys):
    assert main(["new-plugin", "dataset", "Bad-Name", "--dir", str(tmp_path)]) == 2
    assert "lower-case letters" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["new-plugin", "optimizer", "lion2", "--dir", str(tmp_path)])
