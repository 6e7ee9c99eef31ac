import pytest

from bcauto.errors import BcautoError
from bcauto.registry import Provider, Registry
from bcauto.specs import ImbalanceSpec

P = Provider("p", "pkg", "1.0")


def make(*names):
    registry = Registry("imbalance strategy")
    for name in names:
        registry.add(ImbalanceSpec(name, apply=lambda labels, seed: None), P)
    return registry


def test_names_match_wildcards_sorted():
    registry = make("efficientnet_b0", "resnet50", "efficientnet_v2_s")
    assert registry.names("efficient*") == ["efficientnet_b0", "efficientnet_v2_s"]
    assert registry.names() == ["efficientnet_b0", "efficientnet_v2_s", "resnet50"]


def test_unknown_name_lists_available_and_suggests_closest():
    registry = make("class_weights", "downsample")
    with pytest.raises(BcautoError) as err:
        registry.get("class_weight")
    message = str(err.value)
    assert "unknown imbalance strategy 'class_weight'" in message
    assert "(did you mean 'class_weights'?)" in message
    assert "; available: class_weights, downsample" in message


def test_duplicate_name_names_both_packages():
    registry = make("none")
    with pytest.raises(BcautoError, match="registered twice: by pkg .* and by other"):
        registry.add(ImbalanceSpec("none", apply=lambda labels, seed: None), Provider("q", "other", "2"))


def test_provider_is_recorded():
    assert make("none").provider("none") == P


def test_unknown_name_says_a_plugin_package_may_be_missing_unless_it_is_a_path():
    registry = make("class_weights")
    assert "(did you mean 'class_weights'?)" in registry.unknown_message("class_weight")
    assert "if a plugin package provides 'focal_weights', it may not be installed" in registry.unknown_message("focal_weights")
    assert "plugin package" not in registry.unknown_message("data/cells.h5")


def test_one_did_you_mean_serves_study_files_and_registries():
    from pathlib import Path

    from bcauto.config import parse_study
    from bcauto.text import did_you_mean

    assert did_you_mean("lr_haed", ["lr_finetune", "lr_head"]) == " (did you mean 'lr_head'?)"
    assert did_you_mean("batch", ["lr_head"]) == ""
    with pytest.raises(BcautoError, match=r"unknown field 'lr_haed' \(did you mean 'lr_head'\?\)"):
        parse_study("[search]\nlr_haed = 1e-4", Path("s.toml"))
    # registries accept a looser match: a short prefix of a long component name, below the default bar
    assert did_you_mean("mobile", ["mobilenet_v3_small"]) == ""
    assert "(did you mean 'mobilenet_v3_small'?)" in make("mobilenet_v3_small", "resnet50").unknown_message("mobile")
