"""``bcauto new-plugin``: every kind generates a package whose own tests pass; one is really pip-installed."""

import importlib.util
import re
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
        "pyproject.toml",
        "README.md",
        f"{module_name}/__init__.py",
        "tests/test_plugin.py",
    }
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
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet", *args, *isolation],
        check=True,
        timeout=PIP_TIMEOUT,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("kind,name", [("backbone", "scaffolded_net"), ("shift", "scaffolded_vignette")])
def test_generated_package_installs_and_its_tests_pass(kind, name, tmp_path):
    """The full author's path: generate, ``pip install -e``, run the generated tests (entry point included)."""
    assert main(["new-plugin", kind, name, "--dir", str(tmp_path)]) == 0
    package = package_names(name)[0]
    target = tmp_path / package
    try:
        _pip("install", "--no-deps", "-e", str(target))
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            cwd=target,
            check=False,
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "2 passed" in result.stdout
    finally:
        subprocess.run(
            [sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet", package], check=False, capture_output=True, timeout=PIP_TIMEOUT
        )
        plugins.reload()


@pytest.mark.parametrize(
    "kind,name,registry", [("backbone", "scaffolded_net", "backbone"), ("augmentation", "scaffolded_flips", "augmentation")]
)
def test_docstring_names_the_parameters_as_optuna_and_the_record_do(kind, name, registry, tmp_path):
    """The generated ``search_space`` docstring names each parameter as a search really calls it."""
    import optuna

    from bcauto.config import check_components, parse_study
    from bcauto.search_space import plan_params, suggest_plan
    from bcauto.study import settings_from

    target = new_plugin(kind, name, tmp_path)
    _, module_name = package_names(name)
    plugin = _import(target / module_name / "__init__.py", module_name)
    named = set(re.findall(r"``([a-z_]+\.[a-z_]+)``", plugin.search_space.__doc__))
    plugins.register_plugin(plugin, f"tests:{name}")
    try:
        cfg = parse_study(f'[train]\nweights = "none"\n[search]\n{kind} = ["{name}"]\n', Path("s.toml"))
        check_components(cfg, plugins.components())
        trial = optuna.create_study().ask()
        settings = settings_from(cfg, 0, has_gpu=False)
        recorded = plan_params(suggest_plan(trial, cfg, plugins.components(), settings), settings)
    finally:
        plugins.unregister_plugin(f"tests:{name}")
    own = {key for key in trial.params if key.startswith(f"{name}.")}
    assert own and own <= named, f"Optuna calls them {own}; the docstring says {named}"
    in_record = {key for key in recorded if key.startswith(f"{registry}.")}
    assert in_record and in_record <= named, f"the trial's record calls them {in_record}; the docstring says {named}"


@pytest.mark.parametrize(
    "kind,name,taken_by",
    [
        ("backbone", "resnet50", "backbone 'resnet50'"),
        ("shift", "stain", "augmentation 'stain'"),
        ("backbone", "densenet121", "bcauto-densenet"),
    ],
)
def test_a_name_an_installed_plugin_uses_is_refused(kind, name, taken_by, tmp_path, capsys):
    assert main(["new-plugin", kind, name, "--dir", str(tmp_path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"plugin name '{name}' is taken" in err and taken_by in err and "choose another NAME" in err
    assert not any(tmp_path.iterdir())


def test_a_name_whose_package_is_installed_is_refused(tmp_path):
    # bcauto-densenet (the example plugin) registers densenet121, not densenet: its package name is the clash
    with pytest.raises(BcautoError, match="bcauto-densenet is already installed"):
        new_plugin("backbone", "densenet", tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_study_naming_an_uninstalled_plugin_says_a_package_may_be_missing(tmp_path):
    from bcauto.config import check_components, parse_study

    new_plugin("backbone", "scaffolded_net", tmp_path)  # written, not installed
    cfg = parse_study('[search]\nbackbone = ["scaffolded_net"]\n', Path("s.toml"))
    with pytest.raises(BcautoError) as err:
        check_components(cfg, plugins.components())
    message = str(err.value)
    assert "unknown backbone 'scaffolded_net'" in message and "; available: " in message
    assert "plugin package provides 'scaffolded_net', it may not be installed" in message
    cfg = parse_study('[search]\nbackbone = ["resnet_50"]\n', Path("s.toml"))
    with pytest.raises(BcautoError, match=r"\(did you mean 'resnet50'\?\).*may not be installed"):
        check_components(cfg, plugins.components())


def test_existing_target_is_refused(tmp_path):
    new_plugin("imbalance", "twice", tmp_path)
    with pytest.raises(BcautoError, match="already exists"):
        new_plugin("imbalance", "twice", tmp_path)


@pytest.mark.parametrize("name", ["TinyNet", "tiny-net", "9net", "tiny__net", "net_", "", "x" * 41])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(BcautoError, match="lower-case letters"):
        new_plugin("backbone", name, tmp_path)
    assert not any(tmp_path.iterdir())


def test_cli_says_how_to_install_and_test_the_new_package_on_one_line_to_copy(tmp_path, capsys):
    folder = tmp_path / "a folder deep enough that the path alone is wider than a terminal of 80 columns"
    assert main(["new-plugin", "dataset", "my_lab_cells", "--dir", str(folder)]) == 0
    target = folder / package_names("my_lab_cells")[0]
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("created ")]
    assert f"`pip install -e {target}`" in line and line.endswith(f"`pytest {target}` runs its tests")


def test_cli_reports_errors_and_rejects_unknown_kinds(tmp_path, capsys):
    assert main(["new-plugin", "dataset", "Bad-Name", "--dir", str(tmp_path)]) == 2
    assert "lower-case letters" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["new-plugin", "optimizer", "lion2", "--dir", str(tmp_path)])
