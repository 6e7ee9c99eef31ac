"""What the terminal shows: the leaderboard at any width, `bcauto plugins` in a pipe, the epochs bar of a trial
that ends early, and tidy wording."""

import io
import json
import re
from types import SimpleNamespace

import optuna
import pytest
from helpers import tiny_study_toml
from rich.console import Console

from bcauto.cli import main
from bcauto.leaderboard import STUDY_SETTINGS, Leaderboard
from bcauto.progress import SearchProgress

optuna.logging.set_verbosity(optuna.logging.WARNING)

BACKBONES = ["efficientnet_v2_s", "inception_resnet_v2", "resnet_cnn", "mobilenet_v3_small"]
IMBALANCE = ["class_weights", "oversample", "downsample"]
AUGMENTATIONS = ["mixup_cutmix", "randaugment", "corruption"]
SETTINGS = {  # study-wide, as bcauto.study.describe_run logs them with every trial
    "study": "wide",
    "study_file": "/home/someone/projects/blood/studies/a-rather-long-study-file-name.toml",
    "data.source": "bloodmnist:64",
    "data.fingerprint": "3f27ed7c75aa58e5",
    "split.fingerprint": "e03d70dc9173019e",
    "image_size": 64,
    "metric": "val_shift_macro_f1",
    "head_epochs": 20,
    "finetune_epochs": 0,
}


def bcauto_study(trials: int = 6, directions=("maximize",), metric: str = "val_shift_macro_f1") -> optuna.Study:
    """A study whose trials carry bcauto's records: long component names, constant and varying parameters."""
    study = optuna.create_study(study_name="wide", directions=list(directions))
    for i in range(trials):
        trial = study.ask()
        params = {
            **SETTINGS,
            "metric": metric,
            "backbone": BACKBONES[i % 4],
            "weights": "imagenet",
            "augmentation": AUGMENTATIONS[i % 3],
            "imbalance": IMBALANCE[i % 3],
            "loss": "crossentropy",
            "lr_head": 0.000123456789 * (i + 1),
            "head.dropout": 0.5,
            "backbone.width_multiplier": [0.5, 1.0][i % 2],
            "seed": 7 + i,
            "trial": i,
        }
        trial.set_user_attr("params", params)
        trial.set_user_attr("epochs", 20)
        trial.set_user_attr("mlflow_run_id", f"{i:032x}")
        value = 0.5 + 0.01 * i
        study.tell(trial, [value, value - 0.1] if len(directions) > 1 else value)
    return study


def render(renderable, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_leaderboard_at_80_columns_shows_every_value_whole_and_names_the_metric():
    study = bcauto_study()
    text = render(Leaderboard(study), 80)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    assert "…" not in text, "no value is cut"
    for value in (*BACKBONES, *IMBALANCE, *AUGMENTATIONS):
        assert re.search(rf"(?<![\w.]){re.escape(value)}(?![\w.])", text), f"{value} is shown whole"
    assert "val_shift_macro_f1" in text, "the metric is named"
    assert "6 of 6 trials complete" in text


def test_leaderboard_drops_constant_parameters_into_one_line_and_leaves_study_settings_out():
    text = render(Leaderboard(bcauto_study()), 80)
    same = text[text.index("same in all 6 complete trials:") :]
    for item in ("weights=imagenet", "loss=crossentropy", "head.dropout=0.5", "epochs=20"):
        assert item in same and text.count(item) == 1, f"{item}: named once, under the table"
    for setting in ("study_file", "data.fingerprint", "image_size", "seed=", "trial="):
        assert setting not in text, f"{setting} is a study setting or per-trial bookkeeping, not a searched choice"
    assert "width_multiplier" in text.split("same in all")[0], "a parameter that varies keeps its place in the table"


def test_leaderboard_at_200_columns_uses_one_column_per_parameter():
    study = bcauto_study()
    narrow, wide = render(Leaderboard(study), 80), render(Leaderboard(study), 200)
    header = next(line for line in wide.splitlines() if "backbone" in line and "imbalance" in line)
    assert "augmentation" in header and "lr_head" in header, "parameters as columns"
    assert "backbone=" not in wide, "no name=value items when the columns fit"
    assert len(wide.splitlines()) < len(narrow.splitlines())
    assert max(len(line.rstrip()) for line in wide.splitlines()) > 80, "the width is used"


def test_leaderboard_of_two_objectives_names_both_metrics():
    text = render(Leaderboard(bcauto_study(directions=("maximize", "maximize"), metric="both")), 200)
    assert "val_macro_f1" in text and "val_shift_macro_f1" in text and "Pareto front" in text


def test_leaderboard_of_one_trial_shows_its_parameters_instead_of_calling_them_constant():
    text = render(Leaderboard(bcauto_study(trials=1)), 80)
    assert "same in all" not in text and "efficientnet_v2_s" in text and "crossentropy" in text


def test_study_settings_cover_what_the_search_logs_with_every_trial():
    from bcauto.study import describe_run

    class Section(dict):  # a study-file section, read as cfg.data["key"] or cfg.data.key
        __getattr__ = dict.__getitem__

    cfg = SimpleNamespace(
        path="s.toml",
        data=Section(val_fraction=0.2, clean=False),
        study=Section(sampler="tpe", startup_trials=5, pruner="median", metric="val_macro_f1"),
    )
    request = SimpleNamespace(
        cfg=cfg,
        study_name="s",
        data=SimpleNamespace(source="synthetic", image_size=32, domain_names=()),
        seed=0,
        storage="sqlite:///optuna.db",
    )
    prepared = SimpleNamespace(data_fingerprint="d", split_fingerprint="s", removed=[], domain=None)
    settings = SimpleNamespace(batch_size=32, head_epochs=1, finetune_epochs=0, patience=5, jit_compile=False, augmented_views=0)
    params, _ = describe_run(request, prepared, settings, "float32", SimpleNamespace(by_kind=dict))
    assert set(params) <= STUDY_SETTINGS, f"add {set(params) - STUDY_SETTINGS} to bcauto.leaderboard.STUDY_SETTINGS"


def test_best_prints_the_leaderboard_and_json_has_every_parameter_in_full(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    source = bcauto_study()
    study = optuna.create_study(study_name="wide", storage=storage, direction="maximize")
    for trial in source.trials:
        study.add_trial(trial)
    assert main(["best", "--storage", storage]) == 0
    out = capsys.readouterr().out
    assert "val_shift_macro_f1" in out and "same in all" in out and "best: trial 5" in out
    assert f"MLflow run {5:032x}" in out, "the run id is whole, on the line"
    assert main(["best", "--storage", storage, "--json", "--top", "3"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["metric"] == "val_shift_macro_f1" and info["number"] == 5
    assert info["params"]["lr_head"] == 0.000123456789 * 6 and info["params"]["study_file"] == SETTINGS["study_file"]
    assert [row["trial"] for row in info["leaderboard"]] == [5, 4, 3]
    assert info["leaderboard"][0]["params"] == source.trials[5].user_attrs["params"]


def plugin_listing(capsys, *args) -> str:
    assert main(["plugins", *args]) == 0
    return capsys.readouterr().out


def test_plugins_in_a_pipe_prints_one_whole_line_per_component(capsys):
    rows = json.loads(plugin_listing(capsys, "--json"))["components"]
    lines = plugin_listing(capsys).splitlines()
    assert len(lines) == len(rows) + 1, "a header, then one line per component"
    for row in rows:
        [line] = [line for line in lines if re.match(rf"{row['kind']}\s+{row['name']}\s", line)]
        assert line.endswith(row["description"]) and row["package"] in line


def test_plugins_and_new_plugin_name_kinds_alike():
    from bcauto.cli import PLUGIN_KINDS
    from bcauto.plugins import components
    from bcauto.scaffold import KINDS

    assert set(PLUGIN_KINDS) == set(components().by_kind()), "every registry has a kind name"
    for kind, registry in KINDS.items():
        assert PLUGIN_KINDS[registry] == kind, f"`bcauto new-plugin {kind}` and `bcauto plugins` agree"


def test_plugins_json_names_kinds_like_new_plugin(capsys):
    kinds = {row["kind"] for row in json.loads(plugin_listing(capsys, "--json"))["components"]}
    assert {"backbone", "augmentation", "imbalance", "dataset", "shift", "canonicalizer"} == kinds


def test_builtin_descriptions_speak_to_users_not_of_report_sections(capsys):
    rows = json.loads(plugin_listing(capsys, "--json"))["components"]
    for row in rows:
        assert not re.search(r"\bseed \d|seed report|§", row["description"]), row


def epochs_bar(progress: SearchProgress):
    task = next(t for t in progress.progress.tasks if t.id == progress.epochs)
    return task.completed, task.total, task.fields["info"]


@pytest.fixture
def progress():
    with SearchProgress(Console(file=io.StringIO(), width=120), total_trials=3, epochs_per_trial=20) as shown:
        yield shown


def test_a_pruned_trial_completes_its_epochs_bar_and_says_so(progress):
    progress.trial_started(3, "mini_cnn none none", 20)
    for epoch in range(4):
        progress.epoch_done(epoch, {"val_macro_f1": 0.3})
    progress.trial_done(None, "pruned")
    completed, total, info = epochs_bar(progress)
    assert completed == total == 4 and "trial 3" in info and "pruned at epoch 4 of 20" in info


def test_an_early_stopped_trial_completes_its_epochs_bar_and_says_so(progress):
    progress.trial_started(4, "resnet_cnn seed none", 20)
    for epoch in range(7):
        progress.epoch_done(epoch, {})
    progress.phase_done(stopped_early=True)
    progress.trial_done(0.8, "complete")
    assert epochs_bar(progress) == (7, 7, "trial 4: resnet_cnn seed none stopped early at epoch 7 of 20")


def test_the_bar_refreshed_from_storage_ends_with_the_trial(progress):
    study = optuna.create_study(direction="maximize")
    records = {"params": {"backbone": "mini_cnn", "augmentation": "none", "imbalance": "none", "head_epochs": 20, "finetune_epochs": 0}}
    pruned = study.ask()
    for key, value in records.items():
        pruned.set_user_attr(key, value)
    for epoch in range(3):
        pruned.report(0.2, epoch)
    progress.show(study)
    assert epochs_bar(progress)[:2] == (3, 20)
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    progress.show(study)
    assert epochs_bar(progress) == (3, 3, "trial 0: mini_cnn none none pruned at epoch 3 of 20")

    stopped = study.ask()
    for key, value in {**records, "epochs": 9, "phase_epochs": {"head": 9, "finetune": 0}, "unfreeze_blocks": "all"}.items():
        stopped.set_user_attr(key, value)
    progress.show(study)
    study.tell(stopped, 0.7)
    progress.show(study)
    assert epochs_bar(progress) == (9, 9, "trial 1: mini_cnn none none stopped early at epoch 9 of 20")


def test_plural_counts_one_thing_in_the_singular():
    from bcauto.text import plural

    assert [
        plural(1, "class"),
        plural(2, "class"),
        plural(1, "entry"),
        plural(3, "entry"),
        plural(0, "image"),
        plural(1, "epoch"),
        plural(10, "epoch"),
        plural(4, "index"),
        plural(2, "batch"),
    ] == ["1 class", "2 classes", "1 entry", "3 entries", "0 images", "1 epoch", "10 epochs", "4 indices", "2 batches"]


def test_an_image_folder_with_one_stray_file_says_one_entry(tmp_path):
    from PIL import Image

    from bcauto.data.images import list_images

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / name / "cell.png")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    [note] = list_images(tmp_path)[3]
    assert "ignored 1 entry that is not an image: " in note


def test_search_data_line_counts_one_class_in_the_singular(tmp_path, monkeypatch, capsys):
    """The data line of `bcauto search`, before anything else can refuse one class."""
    from bcauto import cli
    from bcauto.errors import BcautoError

    def stop(*args, **kwargs):
        raise BcautoError("stop here")

    data = SimpleNamespace(
        source="one-class",
        labels=[0, 0, 0],
        image_size=32,
        num_classes=1,
        class_names=("blast",),
        notes=[],
        class_counts=lambda: [3],
        domain_names=(),
    )
    monkeypatch.setattr("bcauto.data.sources.load_data", lambda *args, **kwargs: data)
    monkeypatch.setattr("bcauto.study.run_search", stop)
    monkeypatch.setattr(cli, "has_gpu", lambda: False)
    assert (
        main(["search", "--data", "one-class", "--storage", f"sqlite:///{tmp_path}/o.db", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
        == 2
    )
    assert "3 images 32x32, 1 class (blast=3)" in capsys.readouterr().out


TINY_STUDY = tiny_study_toml(study={"trials": 1}, search={"backbone": ["mini_cnn"], "augmentation": ["none"], "head_units1": 16})


def test_refit_and_evaluate_print_bcauto_lines_only(tmp_path, capsys):
    (tmp_path / "tiny.toml").write_text(TINY_STUDY)
    stores = ["--storage", f"sqlite:///{tmp_path}/optuna.db", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    assert main(["search", "--study", str(tmp_path / "tiny.toml"), "--data", "synthetic:160", "--workers", "0", *stores]) == 0
    capsys.readouterr()
    assert main(["refit", "--name", "tiny", *stores, "--out", str(tmp_path / "model")]) == 0
    out, err = capsys.readouterr()
    out = " ".join(out.split())  # rich wraps at 80 columns
    assert "Successfully registered" not in out + err and "Created version" not in out + err, "MLflow's own lines"
    assert "registered as bcauto-tiny version 1" in out, "bcauto's line says it once"
    assert "{'head'" not in out and "epochs: head 2, fine-tuning 0" in out, "the epochs in words, not a dict"
    assert main(["evaluate", str(tmp_path / "model"), "--data", "synthetic:48", "--out", str(tmp_path / "ev")]) == 0
    out, err = capsys.readouterr()
    assert not out.startswith("\n") and not err.startswith("\n"), "no empty first line"
    assert "".join(out.split()).startswith("".join(f"{tmp_path / 'model'} on".split())), "the model first (wrapped by its path's length)"


def test_the_bars_fit_80_columns_without_cutting_the_trial_or_its_time():
    console = Console(file=io.StringIO(), width=80, force_terminal=True, record=True)
    with SearchProgress(console, total_trials=3, epochs_per_trial=20) as progress:
        progress.trial_started(1, "inception_resnet_v2 mixup_cutmix class_weights", 20)
        for epoch in range(7):
            progress.epoch_done(epoch, {})
        progress.phase_done(stopped_early=True)
        progress.trial_done(0.6, "complete")
    text = console.export_text()
    assert "…" not in text
    assert "trial 1: inception_resnet_v2 mixup_cutmix class_weights stopped early at epoch 7 of 20" in " ".join(text.split())


def test_plugins_in_an_80_column_terminal_cut_no_name_and_no_word(capsys):
    from bcauto.cli import cmd_plugins

    rows = json.loads(plugin_listing(capsys, "--json"))["components"]
    console = Console(file=io.StringIO(), width=80, force_terminal=True, record=True)
    assert cmd_plugins(SimpleNamespace(json=False), console) == 0
    text = console.export_text()
    assert "…" not in text and max(len(line.rstrip()) for line in text.splitlines()) <= 80
    words = set(text.split())
    for row in rows:
        assert row["name"] in words and set(row["description"].split()) <= words, row


def test_a_command_stopped_by_ctrl_c_or_sigterm_says_so_and_exits_130_without_a_traceback(monkeypatch, capsys):
    from bcauto import cli

    def stopped(args, console):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_plugins", stopped)
    assert main(["plugins"]) == 130
    captured = capsys.readouterr()
    assert "interrupted: bcauto plugins stopped" in captured.err and "Traceback" not in captured.err + captured.out
