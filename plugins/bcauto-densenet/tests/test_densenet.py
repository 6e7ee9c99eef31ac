"""The example plugin, as its CI sees it: installed, listed, buildable offline, unfreezable by block."""

import json

import numpy as np
import pytest

from bcauto import plugins
from bcauto.cli import main
from bcauto.model import build_backbone, core_of, set_trainable_blocks
from bcauto.testing import check_component, contract_cases


@pytest.fixture(scope="module")
def spec():
    return plugins.reload().backbones.get("densenet121")


@pytest.fixture(scope="module")
def backbone(spec):
    return build_backbone(spec, 32, weights=None)


def test_listed_by_bcauto_plugins_with_package_and_version(capsys):
    plugins.reload()
    assert main(["plugins", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    row = next(r for r in listed["components"] if r["name"] == "densenet121")
    assert (row["kind"], row["package"], row["version"]) == ("backbone", "bcauto-densenet", "0.1.0")
    assert row["plugin"] == "bcauto_densenet"
    assert not [f for f in listed["failures"] if f["package"] == "bcauto-densenet"]


@pytest.mark.parametrize("kind, spec", contract_cases(package="bcauto-densenet"))
def test_meets_the_bcauto_plugin_contract(kind, spec, tmp_path):
    """The contract tests bcauto runs over its own components, run by the plugin over its own."""
    check_component(kind, spec, tmp_path)


def test_builds_without_weights_at_32_and_runs_forward(backbone):
    features = backbone(np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32"))
    assert tuple(features.shape) == (2, 1, 1, 1024)
    assert np.isfinite(np.asarray(features)).all()


@pytest.mark.parametrize("unfreeze, expected", [(0, 0), (1, 1), (2, 2), ("all", 5), (9, 5)])
def test_unfreezing_counts_dense_blocks(spec, backbone, unfreeze, expected):
    assert set_trainable_blocks(spec, backbone, unfreeze) == expected


def test_last_block_unfrozen_means_the_fourth_dense_block(spec, backbone):
    set_trainable_blocks(spec, backbone, 1)
    trainable = {layer.name for layer in core_of(backbone).layers if layer.trainable}
    assert "conv5_block16_2_conv" in trainable and "conv5_block1_1_conv" in trainable
    assert "pool4_conv" not in trainable and "conv4_block24_2_conv" not in trainable
    assert not any(name.endswith("_bn") or name == "bn" for name in trainable)  # BatchNorm stays frozen


def test_one_trial_search_uses_the_plugin_backbone(tmp_path):
    import optuna
    from mlflow.tracking import MlflowClient

    from bcauto.cli import main

    (tmp_path / "densenet.toml").write_text(
        '[data]\nimage_size = 32\n[train]\nweights = "none"\nbatch_size = 32\nhead_epochs = 1\nfinetune_epochs = 0\n'
        '[search]\nbackbone = "densenet121"\naugmentation = "none"\nimbalance = "none"\nhead_units1 = 32\nhead_units2 = 16\n'
    )
    stores = ["--storage", f"sqlite:///{tmp_path}/optuna.db", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    assert (
        main(
            [
                "search",
                "--study",
                str(tmp_path / "densenet.toml"),
                "--trials",
                "1",
                "--workers",
                "0",
                "--data",
                "synthetic:120",
                "--work-dir",
                str(tmp_path / "work"),
                *stores,
            ]
        )
        == 0
    )
    [trial] = optuna.load_study(study_name="densenet", storage=stores[1]).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    run = MlflowClient(tracking_uri=stores[3]).get_run(trial.user_attrs["mlflow_run_id"])
    assert run.data.params["backbone"] == "densenet121" and run.data.tags["bcauto.state"] == "complete"
