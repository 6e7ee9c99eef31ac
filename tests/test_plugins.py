"""The plugin seam: entry points, provenance, broken and disabled plugins, and one test per hook."""

import inspect
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bcauto import hookimpl, hookspecs, plugins
from bcauto.cli import main
from bcauto.errors import BcautoError
from bcauto.specs import AugmentationSpec, BackboneSpec, CanonicalizerSpec, DatasetSpec, ImbalancePlan, ImbalanceSpec, ShiftSpec

HOOK_NAMES = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")]
DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_builtins_come_from_bcauto_entry_points():
    comps = plugins.reload()
    assert not comps.failures

    def builtin(registry):  # other installed plugins (bcauto-densenet, ...) may add to every registry
        return {name: provider for name, _, provider in registry if provider.plugin.startswith("bcauto_builtin.")}

    for registry in comps.by_kind().values():
        assert builtin(registry) and {p.package for p in builtin(registry).values()} == {"bcauto"}
    assert {
        "resnet50",
        "xception",
        "inception_v3",
        "inception_resnet_v2",
        "efficientnet_b0",
        "efficientnet_v2_s",
        "convnext_tiny",
        "mobilenet_v3_small",
        "mini_cnn",
        "resnet_cnn",
        "inception_cnn",
    } <= set(builtin(comps.backbones))
    assert set(builtin(comps.imbalance)) == {"none", "class_weights", "downsample", "oversample"}
    if "densenet121" in comps.backbones.names():  # the example plugin, when installed (CI installs it)
        assert comps.backbones.provider("densenet121").package == "bcauto-densenet"


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_is_documented(hook):
    spec = getattr(hookspecs, hook)
    assert spec.__doc__ and len(spec.__doc__.strip()) > 80
    assert hook in (DOCS / "hooks.md").read_text(), f"docs/hooks.md does not document {hook}"


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_has_its_test(hook):
    tests = {
        name
        for path in Path(__file__).parent.glob("test_*.py")
        for name in (line.split("def ")[1].split("(")[0] for line in path.read_text().splitlines() if line.startswith("def test_hook_"))
    }
    assert f"test_hook_{hook}" in tests


def _with_plugin(plugin):
    plugins.register_plugin(plugin, "tests:hook")
    try:
        return plugins.components()
    finally:
        plugins.unregister_plugin("tests:hook")


def test_hook_register_backbones(tiny_plugin):
    assert tiny_plugin.backbones.get("tiny_pretrained").blocks == ("b1_out", "b2_out")
    assert tiny_plugin.backbones.provider("tiny_pretrained").plugin == "tests:tiny"


def test_hook_register_augmentations():
    class Plugin:
        @hookimpl
        def register_augmentations(self, register):
            register(AugmentationSpec("test_aug", build=lambda params, size, seed: None, description="d"))

    comps = _with_plugin(Plugin())
    assert comps.augmentations.get("test_aug").description == "d"


def test_hook_register_imbalance_strategies():
    class Plugin:
        @hookimpl
        def register_imbalance_strategies(self, register):
            register(ImbalanceSpec("first_half", apply=lambda labels, seed: ImbalancePlan(np.arange(len(labels) // 2))))

    plan = _with_plugin(Plugin()).imbalance.get("first_half").apply(np.zeros(10, int), 0)
    assert plan.indices.tolist() == [0, 1, 2, 3, 4]


def test_hook_register_datasets():
    class Plugin:
        @hookimpl
        def register_datasets(self, register):
            register(DatasetSpec("lab_x", load=lambda arg, size, options: arg, claims=lambda spec: spec.endswith(".labx")))

    spec = _with_plugin(Plugin()).datasets.get("lab_x")
    assert spec.claims("a.labx") and not spec.claims("a.npz")


def test_hook_register_shifts():
    class Plugin:
        @hookimpl
        def register_shifts(self, register):
            register(ShiftSpec("invert", apply=lambda images, severity, rng: 255 - images, severities=(1,)))

    spec = _with_plugin(Plugin()).shifts.get("invert")
    assert spec.apply(np.zeros((1, 2, 2, 3), np.uint8), 1, None).max() == 255


def test_wrong_spec_type_is_refused_with_the_plugin_name():
    class Plugin:
        @hookimpl
        def register_backbones(self, register):
            register(ImbalanceSpec("oops", apply=None))

    with pytest.raises(BcautoError, match=r"registered a ImbalanceSpec as a backbone; expected BackboneSpec"):
        _with_plugin(Plugin())


def test_hook_name_typo_is_reported_not_fatal():
    class Plugin:
        @hookimpl
        def register_backbone(self, register):  # missing "s"
            pass

    comps = _with_plugin(Plugin())
    assert "resnet50" in comps.backbones
    assert any("register_backbone" in f.error for f in comps.failures)


def _install_fake_distribution(root: Path, name: str, module_source: str) -> None:
    (root / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{name}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[bcauto]\n{name} = {name}\n")


def test_broken_third_party_plugin_is_reported_and_builtins_survive(tmp_path, monkeypatch, capsys):
    _install_fake_distribution(tmp_path, "bcauto_broken", "raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        comps = plugins.reload()
        assert "resnet50" in comps.backbones
        [failure] = comps.failures
        assert failure.package == "bcauto_broken" and "boom at import" in failure.error
        assert main(["plugins", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert listed["failures"][0]["package"] == "bcauto_broken"
    finally:
        monkeypatch.undo()
        plugins.reload()


def test_third_party_entry_point_is_listed_with_package_and_version(tmp_path, monkeypatch, capsys):
    _install_fake_distribution(
        tmp_path,
        "bcauto_extra",
        """
        from bcauto import hookimpl
        from bcauto.specs import ImbalanceSpec, ImbalancePlan

        @hookimpl
        def register_imbalance_strategies(register):
            register(ImbalanceSpec("keep", apply=lambda labels, seed: ImbalancePlan(list(range(len(labels))))))
    """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        plugins.reload()
        assert main(["plugins", "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)["components"]
        assert {"kind": "imbalance", "name": "keep", "package": "bcauto_extra", "version": "1.2.3"}.items() <= next(
            r for r in rows if r["name"] == "keep"
        ).items()
        monkeypatch.setenv(plugins.DISABLE_ENV, "bcauto_extra")
        assert "keep" not in plugins.reload().imbalance
    finally:
        monkeypatch.undo()
        plugins.reload()


def _build(input_shape, weights=None):
    raise AssertionError("a refused spec is never built")


@pytest.mark.parametrize(
    "spec, problem",
    [
        (BackboneSpec("bad", _build, preprocessing="imagenet", blocks=("b1",)), "preprocessing 'imagenet' is not one of none, unit"),
        (BackboneSpec("bad", _build, preprocessing="unit", blocks=()), "blocks must be a non-empty tuple"),
        (BackboneSpec("bad", "build", preprocessing="unit", blocks=("b1",)), "build must be a function, got str"),
        (BackboneSpec("Bad.Net", _build, preprocessing="unit", blocks=("b1",)), "name 'Bad.Net' must be lower-case"),
        (BackboneSpec("bad", _build, preprocessing="unit", blocks=("b1",), min_input_size=0), "min_input_size must be a positive"),
        (BackboneSpec("bad", _build, preprocessing="unit", blocks=("b1",), pretrained=("ssl",)), "pretrained 'ssl' not among imagenet"),
        (BackboneSpec("bad", _build, preprocessing="unit", blocks=("b1",), normalizations=("instance",)), "normalizations 'instance'"),
        (AugmentationSpec("bad", _build, mixes_labels=True), "mixes_labels is set but build_batch is missing"),
        (AugmentationSpec("bad", _build, build_batch=_build), "build_batch is given but mixes_labels is not set"),
        (CanonicalizerSpec("bad", None), "build must be a function, got NoneType"),
        (ImbalanceSpec("", apply=_build), "name '' must be lower-case"),
        (DatasetSpec("bad", _build, claims=True), "claims must be a function, got bool"),
        (ShiftSpec("bad", _build, severities=()), "severities must be a non-empty tuple of distinct integers 1 to 5"),
        (ShiftSpec("bad", _build, severities=(0, 6)), "severities must be"),
        (ShiftSpec("bad", _build, group="scanner"), "group 'scanner' is not one of corruption, lab"),
    ],
)
def test_a_bad_spec_is_refused_at_registration_and_the_plugins_other_specs_survive(spec, problem):
    hook = next(hook for hook, (_, spec_type) in plugins.HOOKS.items() if isinstance(spec, spec_type))

    class Plugin:
        pass

    def register_all(register):
        register(spec)
        register(ImbalanceSpec("kept", apply=lambda labels, seed: ImbalancePlan(np.arange(len(labels)))))

    def register_one(register):
        register(spec)

    if hook == "register_imbalance_strategies":
        Plugin.register_imbalance_strategies = staticmethod(hookimpl(register_all))
    else:
        setattr(Plugin, hook, staticmethod(hookimpl(register_one)))
        Plugin.register_imbalance_strategies = staticmethod(
            hookimpl(lambda register: register(ImbalanceSpec("kept", apply=lambda labels, seed: ImbalancePlan(np.arange(len(labels))))))
        )
    comps = _with_plugin(Plugin())
    kind = plugins.HOOKS[hook][0]
    [failure] = [f for f in comps.failures if f.package == "(registered at runtime)"]
    assert failure.error.startswith(f"{kind} {spec.name!r} refused: ") and problem in failure.error
    assert "kept" in comps.imbalance and "resnet50" in comps.backbones
    assert spec.name not in comps.by_kind()[next(k for k, r in comps.by_kind().items() if r.kind == kind)]


def test_a_refused_spec_is_listed_by_bcauto_plugins_with_its_package(tmp_path, monkeypatch, capsys):
    _install_fake_distribution(
        tmp_path,
        "bcauto_badnet",
        """
        from bcauto import hookimpl
        from bcauto.specs import BackboneSpec

        @hookimpl
        def register_backbones(register):
            register(BackboneSpec("badnet", build=lambda shape, weights: None, preprocessing="rgb", blocks=()))
    """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        comps = plugins.reload()
        assert "badnet" not in comps.backbones and "resnet50" in comps.backbones
        assert main(["plugins"]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert "failed to load bcauto_badnet (bcauto_badnet): backbone 'badnet' refused: preprocessing 'rgb'" in out
        assert "blocks must be a non-empty tuple of layer names" in out
    finally:
        monkeypatch.undo()
        plugins.reload()
