"""Every command keeps its options; the options several commands share read the same in each."""

import argparse

import pytest

from bcauto.cli import DEFAULT_STORAGE, DEFAULT_TRACKING, build_parser, main

OPTIONS = {
    "search": {
        "--study",
        "--trials",
        "--data",
        "--name",
        "--storage",
        "--tracking-uri",
        "--seed",
        "--timeout",
        "--workers",
        "--gpus",
        "--max-failures",
        "--worker-memory-gb",
        "--work-dir",
        "--on-bad-image",
    },
    "best": {"--name", "--storage", "--top", "--json"},
    "plugins": {"--json"},
    "ui": {"--name", "--tracking-uri", "--storage", "--host", "--port"},
    "new-plugin": {"KIND", "NAME", "--dir"},
    "refit": {"--name", "--top", "--storage", "--tracking-uri", "--data", "--study", "--epochs", "--image-size", "--out"},
    "evaluate": {"MODEL", "--data", "--shift", "--tta", "--seed", "--adapt-bn", "--adapt-im", "--classes", "--json", "--out"},
    "predict": {"MODEL", "INPUT", "--out", "--tta", "--on-bad-image", "--adapt-bn", "--adapt-im", "--seed", "--classes"},
    "adapt": {
        *("MODEL", "--data", "--shots", "--pool", "--per-class", "--choose-shots", "--seed", "--epochs", "--lr"),
        *("--adapt-bn", "--adapt-im", "--pseudo-labels", "--align-to-shots", "--classes", "--tta", "--ensemble", "--out", "--tracking-uri"),
    },
    "suggest": {"MODEL", "INPUT", "--shots", "--out", "--seed", "--adapt-bn", "--adapt-im", "--classes"},
    "audit": {"--data", "--image-size", "--out", "--json", "--write-clean", "--seed", "--on-bad-image"},
}

# option -> (help, default) in every command listed; search words --storage and --name its own way
SHARED = {
    "--tracking-uri": (("search", "ui", "refit", "adapt"), f"MLflow tracking URI (default {DEFAULT_TRACKING})", DEFAULT_TRACKING),
    "--storage": (("best", "ui", "refit"), f"Optuna storage URL (default {DEFAULT_STORAGE})", DEFAULT_STORAGE),
    "--name": (("best", "refit"), "study name (needed when the storage holds several)", None),
}
REQUIRED = {"adapt": ["MODEL", "--data", "DATA", "--shots", "1"]}


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_command_is_listed():
    assert set(commands()) == set(OPTIONS)


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_help_lists_each_option_of_the_command_once(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    parser = commands()[command]
    listed = {a.option_strings[-1] if a.option_strings else a.metavar for a in parser._actions} - {"--help"}
    assert listed == OPTIONS[command]
    for option in OPTIONS[command]:
        assert f"  {option}" in text, f"bcauto {command} --help does not list {option}"


@pytest.mark.parametrize("option", sorted(SHARED))
def test_a_shared_option_reads_the_same_in_every_command(option):
    names, help_text, default = SHARED[option]
    for name in names:
        [action] = [a for a in commands()[name]._actions if option in a.option_strings]
        assert (action.help, action.default) == (help_text, default), f"bcauto {name} {option}"
        parsed = build_parser().parse_args([name, *REQUIRED.get(name, [])])
        assert getattr(parsed, option.lstrip("-").replace("-", "_")) == default, f"bcauto {name} {option}"


@pytest.mark.parametrize("option", ["--classes", "--adapt-im"])
def test_a_label_free_option_reads_the_same_for_evaluate_predict_and_suggest(option):
    first, *others = (next(a for a in commands()[c]._actions if option in a.option_strings) for c in ("evaluate", "predict", "suggest"))
    for other in others:
        assert other.help.startswith(first.help) and other.metavar == first.metavar
