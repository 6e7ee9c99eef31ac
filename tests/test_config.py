"""Study files: shipped studies are valid; every mistake names the file, the field and the expectation."""

from pathlib import Path

import pytest

from bcauto.config import Range, check_components, load_study, parse_study
from bcauto.errors import BcautoError
from bcauto.plugins import components

STUDIES = sorted((Path(__file__).resolve().parent.parent / "studies").glob("*.toml"))


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_shipped_studies_are_valid_and_name_installed_components(path):
    cfg = load_study(path)
    check_components(cfg, components())
    assert cfg.name == path.stem


def test_defaults_follow_the_seed_report():
    cfg = parse_study("", Path("empty.toml"))
    assert cfg.train["batch_size"] == 64 and cfg.train["head_epochs"] == 30 and cfg.train["finetune_epochs"] == 70
    assert cfg.train["patience"] == 15 and cfg.data["val_fraction"] == 0.2
    assert cfg.search["head_units1"] == 512 and cfg.search["head_dropout"] == 0.5
    assert cfg.search["lr_head"] == Range(3e-5, 3e-4, True)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[train]\nbatch_sise = 32", r"s.toml: \[train\]: unknown field 'batch_sise' \(did you mean 'batch_size'\?\)"),
        ("[trian]\nx = 1", r"s.toml: \[<top level>\]: unknown field 'trian' \(did you mean 'train'\?\)"),
        ("[train]\nbatch_size = 'big'", r"s.toml: \[train\] batch_size = 'big': expected int"),
        ("[train]\nbatch_size = 0", r"\[train\] batch_size must be > 0"),
        ("[study]\npruner = 'mediam'", r"\[study\] pruner = 'mediam': expected one of 'median', 'hyperband'"),
        ("[data]\nval_fraction = 0.7", r"\[data\] val_fraction must be between 0 and 0.5"),
        ("[search]\nlr_head = { low = 1e-3, high = 1e-4 }", r"\[search\] lr_head: low and high must be numbers with low < high"),
        ("[search]\nlr_head = { low = 0, high = 1e-4, log = true }", r"\[search\] lr_head: a log range needs low > 0"),
        ("[search]\nbackbone = []", r"\[search\] backbone: the list of choices is empty"),
        ("[search]\nunfreeze_blocks = [1, 'some']", r"\[search\] unfreeze_blocks: 'some' is not a block count"),
        ("[train]\nweights = 'imagenet21k'", r"\[train\] weights = 'imagenet21k': expected \"imagenet\", \"none\" or a weights file"),
        ("[train\nbatch_size = 1", r"s.toml: not valid TOML"),
        ("[study]\nstartup_trials = -1", r"\[study\] startup_trials must be >= 0, got -1"),
        ("[study]\nflag = true\n[train]\nfeature_cache = 'yes'", r"unknown field 'flag'"),
    ],
)
def test_bad_study_fields_are_named(text, message):
    with pytest.raises(BcautoError, match=message):
        parse_study(text, Path("s.toml"))


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # TPE's group=True
def test_startup_trials_is_how_many_trials_tpe_draws_at_random():
    import optuna

    from bcauto.study import make_sampler

    def draws(startup_trials: int) -> list[float]:
        cfg = parse_study(f"[study]\nstartup_trials = {startup_trials}", Path("s.toml"))
        study = optuna.create_study(direction="maximize", sampler=make_sampler(cfg, seed=3))
        study.optimize(lambda trial: -(trial.suggest_float("x", 0.0, 1.0) - 0.9) ** 2, n_trials=4)
        return [t.params["x"] for t in study.trials]

    modelled, random_only = draws(2), draws(10)
    assert modelled[:2] == random_only[:2]  # the same seeded random start-up
    assert modelled[2:] != random_only[2:]  # TPE takes over after two trials, not ten


@pytest.mark.parametrize("metric, expected", [
    ("val_macro_f1", 0.8), ("val_accuracy", 0.9), ("val_shift_macro_f1", 0.5), ("val_mean_macro_f1", 0.65), ("both", (0.8, 0.5)),
])
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_each_objective_mode_gives_optuna_its_value_directions_and_sampler(metric, expected):
    import optuna

    from bcauto.evaluation import Scores
    from bcauto.objective import objective_value
    from bcauto.study import make_sampler

    scores = Scores(accuracy=0.9, macro_precision=0.7, macro_recall=0.7, macro_f1=0.8, confusion=None, report={})
    assert objective_value(metric, scores, {"val_shift_macro_f1": 0.5}) == pytest.approx(expected)
    cfg = parse_study(f'[study]\nmetric = "{metric}"', Path("s.toml"))
    assert cfg.directions == ["maximize"] * (2 if metric == "both" else 1)
    sampler_type = optuna.samplers.NSGAIISampler if metric == "both" else optuna.samplers.TPESampler
    assert isinstance(make_sampler(cfg, seed=0), sampler_type)


def test_shifted_objectives_need_shift_validation():
    with pytest.raises(BcautoError, match=r"metric = 'both' needs \[study\] shift_validation = true"):
        parse_study('[study]\nmetric = "both"\nshift_validation = false', Path("s.toml"))


def test_unknown_component_lists_names_and_closest_before_any_trial():
    cfg = parse_study('[search]\nbackbone = ["resnet_50"]\naugmentation = ["none"]', Path("s.toml"))
    with pytest.raises(BcautoError) as err:
        check_components(cfg, components())
    assert "s.toml: [search] backbone: unknown backbone 'resnet_50' (did you mean 'resnet50'?)" in str(err.value)
    assert "; available: convnext_tiny," in str(err.value)


def test_backbone_larger_than_image_size_is_an_incompatible_combination():
    cfg = parse_study('[data]\nimage_size = 64\n[search]\nbackbone = ["xception"]\naugmentation = ["none"]', Path("s.toml"))
    with pytest.raises(BcautoError, match=r"'xception' needs images of at least 71 pixels, but \[data\] image_size = 64"):
        check_components(cfg, components())


def test_missing_study_file_is_a_clear_error(tmp_path):
    with pytest.raises(BcautoError, match=r"study file .*nope.toml does not exist"):
        load_study(tmp_path / "nope.toml")


def test_a_component_table_narrows_or_fixes_that_components_own_parameters():
    import optuna

    from bcauto.search_space import suggest_plan
    from bcauto.study import settings_from

    text = """
[train]
weights = "none"
[search]
backbone = ["mini_cnn", "resnet_cnn"]
[search.mini_cnn]
base_filters = 16
[search.resnet_cnn]
base_filters = [8, 16]
"""
    cfg = parse_study(text, Path("narrow.toml"))
    check_components(cfg, components())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: dict[str, set] = {"mini_cnn": set(), "resnet_cnn": set()}
    for _ in range(30):
        trial = study.ask()
        plan = suggest_plan(trial, cfg, components(), settings_from(cfg, 0, has_gpu=False))
        seen[plan.backbone.name].add(plan.backbone_params["base_filters"])
        study.tell(trial, 0.5)
    assert seen == {"mini_cnn": {16}, "resnet_cnn": {8, 16}}  # the plugins' own choices are 16 or 32


def test_a_component_table_must_name_a_registered_component():
    cfg = parse_study("[search.mini_cn]\nbase_filters = 16\n", Path("typo.toml"))
    with pytest.raises(BcautoError, match=r"typo.toml: \[search.mini_cn\]: no backbone.*called 'mini_cn' \(did you mean 'mini_cnn'\?\)"):
        check_components(cfg, components())
