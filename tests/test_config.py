"""Study files: shipped studies are valid; every mistake names the file, the field and the expectation."""

from pathlib import Path

import pytest

from bcauto.config import Range, StudyConfig, check_components, load_study, parse_study
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
    assert cfg.train.batch_size == 64 and cfg.train.head_epochs == 30 and cfg.train.finetune_epochs == 70
    assert cfg.train.patience == 15 and cfg.data.val_fraction == 0.2
    assert cfg.search.head_units1 == 512 and cfg.search.head_dropout == 0.5
    assert cfg.search.lr_head == Range(low=3e-5, high=3e-4, log=True)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[train]\nbatch_sise = 32", r"s.toml: \[train\]: unknown field 'batch_sise' \(did you mean 'batch_size'\?\)"),
        ("[trian]\nx = 1", r"s.toml: unknown table or top-level field 'trian' \(did you mean 'train'\?\)"),
        ("[train]\nbatch_size = 'big'", r"s.toml: \[train\] batch_size = 'big': expected an integer$"),
        ("[train]\nbatch_size = 0", r"\[train\] batch_size = 0: must be > 0$"),
        ("[study]\npruner = 'mediam'", r"\[study\] pruner = 'mediam': expected one of 'median', 'hyperband'"),
        ("[data]\nval_fraction = 0.7", r"\[data\] val_fraction = 0.7: must be < 0.5$"),
        (
            "[search]\nlr_head = { low = 1e-3, high = 1e-4 }",
            r"\[search\] lr_head = \{'low': 0.001, 'high': 0.0001\}: a range needs low < high$",
        ),
        ("[search]\nlr_head = { low = 0, high = 1e-4, log = true }", r"\[search\] lr_head.low = 0: must be > 0$"),
        ("[search]\nhead_l2 = { low = 0.0, high = 1e-4, log = true }", r"\[search\] head_l2 = .*: a log range needs low > 0$"),
        ("[search]\nbackbone = []", r"\[search\] backbone = \[\]: the list of choices is empty$"),
        ("[search]\nunfreeze_blocks = [1, 'some']", r"\[search\] unfreeze_blocks\[1\] = 'some': not a block count"),
        ("[train]\nweights = 'imagenet21k'", r"\[train\] weights = 'imagenet21k': expected \"imagenet\", \"none\" or a weights file"),
        ("[train\nbatch_size = 1", r"s.toml: not valid TOML"),
        ("[study]\nstartup_trials = -1", r"\[study\] startup_trials = -1: must be >= 0$"),
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
        study.optimize(lambda trial: -((trial.suggest_float("x", 0.0, 1.0) - 0.9) ** 2), n_trials=4)
        return [t.params["x"] for t in study.trials]

    modelled, random_only = draws(2), draws(10)
    assert modelled[:2] == random_only[:2]  # the same seeded random start-up
    assert modelled[2:] != random_only[2:]  # TPE takes over after two trials, not ten


@pytest.mark.parametrize(
    "metric, expected",
    [
        ("val_macro_f1", 0.8),
        ("val_accuracy", 0.9),
        ("val_shift_macro_f1", 0.5),
        ("val_mean_macro_f1", 0.65),
        ("both", (0.8, 0.5)),
    ],
)
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_each_objective_mode_gives_optuna_its_value_directions_and_sampler(metric, expected):
    import optuna

    from bcauto.objective import objective_value
    from bcauto.scoring import Scores
    from bcauto.study import make_sampler

    scores = Scores(accuracy=0.9, macro_precision=0.7, macro_recall=0.7, macro_f1=0.8, confusion=None, report={})
    assert objective_value(metric, scores, {"val_shift_macro_f1": 0.5}) == pytest.approx(expected)
    cfg = parse_study(f'[study]\nmetric = "{metric}"', Path("s.toml"))
    assert cfg.directions == ["maximize"] * (2 if metric == "both" else 1)
    sampler_type = optuna.samplers.NSGAIISampler if metric == "both" else optuna.samplers.TPESampler
    assert isinstance(make_sampler(cfg, seed=0), sampler_type)


def test_shifted_objectives_need_shift_validation():
    with pytest.raises(BcautoError, match=r"s.toml: \[study\] metric = 'both': needs \[study\] shift_validation = true$"):
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


@pytest.mark.parametrize(
    "text, message",
    [  # each of these used to parse and then fail every trial
        ('[search]\nhead_units1 = "big"', "s.toml: [search] head_units1 = 'big': expected an integer"),
        ('[search]\nlr_head = "fast"', "s.toml: [search] lr_head = 'fast': expected a number"),
        ("[train]\nlr_factor = 7.0", "s.toml: [train] lr_factor = 7.0: must be < 1"),
        ("[train]\nlr_patience = -3", "s.toml: [train] lr_patience = -3: must be >= 0"),
        ("[study]\nmax_failures = -1", "s.toml: [study] max_failures = -1: must be >= 0"),
        ('[train]\nbatch_size = "32"', "s.toml: [train] batch_size = '32': expected an integer"),
        ('[train]\nfeature_cache = "yes"', "s.toml: [train] feature_cache = 'yes': expected true or false"),
        ("[train]\nlr_factor = nan", "s.toml: [train] lr_factor = nan: expected a finite number"),
        ("[search]\nhead_dropout = [0.2, 1.5]", "s.toml: [search] head_dropout[1] = 1.5: must be < 1"),
        (
            '[search]\nnormalization = ["grup"]',
            (
                "s.toml: [search] normalization[0] = 'grup': expected one of 'default', "
                "'batch', 'group', 'layer' or 'none' (did you mean 'group'?)"
            ),
        ),
        (
            "[search]\nbackbone = { low = 1, high = 2 }",
            ("s.toml: [search] backbone = {'low': 1, 'high': 2}: expected a value or a list of choices, not a range"),
        ),
        (
            "[search.mini_cnn]\nbase_filters = { low = 8, hihg = 32 }",
            "s.toml: [search.mini_cnn] base_filters = {'low': 8, 'hihg': 32}: a range is { low = ..., high = ..., log = true|false }",
        ),
    ],
)
def test_bad_values_are_refused_in_one_line_naming_file_table_field_and_value(text, message):
    with pytest.raises(BcautoError) as err:
        parse_study(text, Path("s.toml"))
    assert str(err.value) == message


@pytest.mark.parametrize(
    "text, message",
    [
        ("[search]\nlr_haed = 1e-4", "s.toml: [search]: unknown field 'lr_haed' (did you mean 'lr_head'?); known fields: "),
        (
            "trials = 5",
            "s.toml: unknown table or top-level field 'trials' (it belongs in [study]); the tables are [study], [data], [train], [search]",
        ),
        ("[train]\nmax_failures = 3", "s.toml: [train]: unknown field 'max_failures' (it belongs in [study]); known fields: "),
        ("[search]\nhead_epochs = 2", "s.toml: [search]: unknown field 'head_epochs' (it belongs in [train]); known fields: "),
        ('path = "elsewhere.toml"', "s.toml: unknown table or top-level field 'path'; the tables are [study], [data], [train], [search]"),
    ],
)
def test_a_misspelt_or_misplaced_field_says_where_it_belongs(text, message):
    with pytest.raises(BcautoError) as err:
        parse_study(text, Path("s.toml"))
    assert str(err.value).startswith(message)


def test_the_config_is_frozen_and_a_command_line_value_makes_a_validated_copy():
    import pydantic

    cfg = parse_study("[study]\nmax_failures = 3\n[search]\nbackbone = ['mini_cnn']", Path("s.toml"))
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.study.max_failures = 5
    assert isinstance(cfg.search.backbone, tuple)  # no list to append to either
    changed = cfg.with_option("--max-failures", "study", max_failures=0)
    assert changed.study.max_failures == 0 and cfg.study.max_failures == 3 and changed.search == cfg.search
    with pytest.raises(BcautoError) as err:
        cfg.with_option("--max-failures", "study", max_failures=-1)
    assert str(err.value) == "--max-failures -1: must be >= 0"


def test_registry_checks_run_when_the_file_is_read_with_the_components():
    with pytest.raises(BcautoError, match=r"s.toml: \[search\] backbone: unknown backbone 'resnet_50' \(did you mean 'resnet50'\?\)"):
        parse_study('[search]\nbackbone = ["resnet_50"]', Path("s.toml"), components())


NARROWED = """
[train]
weights = "none"
[search]
backbone = ["mini_cnn", "resnet_cnn"]
head_units1 = [16, 32]
lr_head = { low = 1e-4, high = 1e-2, log = true }
[search.mini_cnn]
base_filters = 16
"""


@pytest.mark.parametrize(
    "text", [path.read_text() for path in STUDIES] + [NARROWED], ids=[path.name for path in STUDIES] + ["component-table"]
)
def test_the_json_workers_receive_gives_back_the_same_config(text):
    cfg = parse_study(text, Path("studies/s.toml"))
    again = StudyConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg and again.name == "s"
    assert again.search.component_params == cfg.search.component_params
    for field in ("lr_head", "head_units1", "head_dropout"):
        assert type(getattr(again.search, field)) is type(getattr(cfg.search, field))


def test_workers_search_the_space_the_search_started_with_when_the_file_is_edited(tmp_path, monkeypatch):
    """The search hands its validated config to the workers; editing the study file after the start changes
    nothing for them (they used to read the file again)."""
    import optuna
    from helpers import blob_data

    from bcauto import objective, tracking, worker
    from bcauto import study as study_module
    from bcauto.search_space import suggest_plan
    from bcauto.study import (
        PreparedData,
        SearchRequest,
        optimize_in_workers,
        settings_from,
    )

    study_file = tmp_path / "edited.toml"
    study_file.write_text(NARROWED)
    cfg = load_study(study_file, components())
    jobs = []
    monkeypatch.setattr(
        study_module, "Supervisor", lambda job, *args, **kwargs: jobs.append(job) or type("S", (), {"run": lambda *a: None})()
    )
    data = blob_data(40, 16)
    request = SearchRequest(
        cfg=cfg,
        data=data,
        study_name="edited",
        trials=4,
        storage=f"sqlite:///{tmp_path}/optuna.db",
        tracking_uri="",
        seed=0,
        timeout=None,
        work_dir=str(tmp_path / "work"),
    )
    settings = settings_from(cfg, 0, has_gpu=False)
    context = objective.SearchContext(
        cfg=cfg,
        components=components(),
        train_data=data.subset(range(30)),
        val_data=data.subset(range(30, 40)),
        settings=settings,
        tracker=None,
        parent_run_id=None,
        run_tags={},
        run_params={},
    )
    prepared = PreparedData(context.train_data, context.val_data, "split", "data")
    optimize_in_workers(None, context, request, prepared, "float32", None)
    job_file = jobs[0].write(tmp_path / "worker-0.json")

    study_file.write_text(
        NARROWED.replace("head_units1 = [16, 32]", "head_units1 = [64, 128]").replace(
            'backbone = ["mini_cnn", "resnet_cnn"]', 'backbone = ["inception_cnn"]'
        )
    )

    class DrawOnly:  # the worker's objective, minus the training: the plan it would train
        def __init__(self, context):
            self.ctx = context

        def __call__(self, trial):
            plan = suggest_plan(trial, self.ctx.cfg, self.ctx.components, self.ctx.settings)
            trial.set_user_attr("drawn", [plan.backbone.name, plan.head.units1])
            return 0.5

    monkeypatch.setattr(objective, "Objective", DrawOnly)
    monkeypatch.setattr(tracking, "Tracker", lambda *args, **kwargs: None)
    optuna.create_study(study_name="edited", storage=request.storage, direction="maximize")
    assert worker.run(worker.WorkerJob.read(job_file)) == 0
    drawn = [t.user_attrs["drawn"] for t in optuna.load_study(study_name="edited", storage=request.storage).trials]
    assert len(drawn) == 4
    assert all(backbone in ("mini_cnn", "resnet_cnn") and units in (16, 32) for backbone, units in drawn), drawn


def test_a_recorded_config_rebuilds_the_same_config_and_names_each_field_changed_since():
    from bcauto.config import config_changes, config_from_record, recorded_config

    text = """
[study]
trials = 4
[train]
refit_epochs = 15
[search]
backbone = ["mini_cnn"]
augmentation = ["robust"]
lr_head = { low = 1e-4, high = 1e-3, log = true }
[search.robust]
strength = { low = 0.3, high = 1.0 }
"""
    before = parse_study(text, Path("s.toml"), components())
    recorded = recorded_config(before)
    assert config_from_record(recorded, "s.toml") == before
    assert config_changes(recorded, before) == []
    edited = (
        text.replace("refit_epochs = 15", "refit_epochs = 30")
        .replace("high = 1.0", "high = 0.6")
        .replace('augmentation = ["robust"]', 'augmentation = ["robust", "stain"]')
        .replace("trials = 4", "trials = 8")  # [study] is not read by refit
        + "[search.mini_cnn]\nbase_filters = 16\n"
    )
    assert config_changes(recorded, parse_study(edited, Path("s.toml"), components())) == [
        "[train] refit_epochs: 15 -> 30",
        "[search] augmentation: ['robust'] -> ['robust', 'stain']",
        "[search.robust] strength: 0.3..1.0 -> 0.3..0.6",
        "[search.mini_cnn] base_filters: (none) -> 16",
    ]
    broken = {**recorded, "train": {**recorded["train"], "batch_size": "big"}}
    with pytest.raises(BcautoError, match=r"recorded with the study is not valid: s\.toml: \[train\] batch_size"):
        config_from_record(broken, "s.toml")


def test_a_study_resumed_under_a_changed_file_says_what_changed_and_records_the_new_file():
    import io

    import optuna
    from rich.console import Console

    from bcauto.config import recorded_config
    from bcauto.study import record_config

    first = parse_study("[train]\nrefit_epochs = 15\n", Path("s.toml"))
    study = optuna.create_study()
    out = io.StringIO()
    record_config(study, first, Console(file=out, width=300))
    assert study.user_attrs["study_config"] == recorded_config(first) and out.getvalue() == ""
    edited = parse_study("[train]\nrefit_epochs = 30\n", Path("s.toml"))
    record_config(study, edited, Console(file=out, width=300))
    assert "s.toml changed since this study last searched: [train] refit_epochs: 15 -> 30." in out.getvalue()
    assert study.user_attrs["study_config"] == recorded_config(edited)
