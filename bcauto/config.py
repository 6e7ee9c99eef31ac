"""Study files: TOML data (never code), validated field by field with errors that name file and field."""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bcauto.errors import BcautoError

METRICS = ("val_macro_f1", "val_accuracy", "val_shift_macro_f1", "val_mean_macro_f1", "both")
SAMPLERS = ("tpe", "random", "nsga2")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
SWITCHES = ("auto", "on", "off")

# section -> field -> (expected type(s), default, allowed values or None)
SCHEMA: dict[str, dict[str, tuple]] = {
    "study": {
        "description": (str, "", None),
        "metric": (str, "val_macro_f1", METRICS),
        "trials": (int, 20, None),
        "timeout": ((int, float), 0, None),
        "seed": (int, 42, None),
        "sampler": (str, "tpe", SAMPLERS),
        "startup_trials": (int, 10, None),
        "pruner": (str, "median", PRUNERS),
        "pruner_warmup_epochs": (int, 2, None),
        "max_failures": (int, 10, None),
        "shift_validation": (bool, True, None),
    },
    "data": {
        "source": (str, "auto", None),
        "image_size": (int, 96, None),
        "val_fraction": (float, 0.2, None),
        "synthetic_size": (int, 4000, None),
        "clean": (bool, False, None),
    },
    "train": {
        "weights": (str, "imagenet", None),
        "batch_size": (int, 64, None),
        "head_epochs": (int, 30, None),
        "finetune_epochs": (int, 70, None),
        "patience": (int, 15, None),
        "lr_patience": (int, 5, None),
        "lr_factor": (float, 0.5, None),
        "mixed_precision": (str, "auto", SWITCHES),
        "xla": (str, "auto", SWITCHES),
        "feature_cache": (bool, True, None),
        "augmented_views": (int, 0, None),
        "activation_cache_gb": ((int, float), 4.0, None),
    },
}

# search-space fields: name -> default (a fixed value, a list of choices, or a {low, high, log} range)
SEARCH_DEFAULTS: dict[str, Any] = {
    "backbone": ["resnet50"],
    "augmentation": ["seed"],
    "canonicalization": ["none"],
    "normalization": ["default"],
    "imbalance": ["class_weights", "downsample"],
    "unfreeze_blocks": [1],
    "lr_head": {"low": 3e-5, "high": 3e-4, "log": True},
    "lr_finetune": {"low": 3e-6, "high": 3e-5, "log": True},
    "head_units1": 512,
    "head_units2": 256,
    "head_dropout": 0.5,
    "head_l2": 1e-4,
    "loss": "crossentropy",
    "label_smoothing": 0.0,
}
LOSSES = ("crossentropy", "focal")
COMPONENT_FIELDS = {"backbone": "backbones", "augmentation": "augmentations", "imbalance": "imbalance",
                    "canonicalization": "canonicalizers"}
# "default": each backbone keeps the normalization it was written with
NORMALIZATIONS = ("default", "batch", "group", "layer", "none")


@dataclass(frozen=True)
class Range:
    """A numeric search range; integer when both ends are integers."""

    low: float
    high: float
    log: bool = False


@dataclass
class StudyConfig:
    """A validated study file."""

    path: Path
    study: dict[str, Any]
    data: dict[str, Any]
    train: dict[str, Any]
    search: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def directions(self) -> list[str]:
        """Optuna directions: two objectives (clean and shifted macro-F1) for metric "both", else one."""
        return ["maximize", "maximize"] if self.study["metric"] == "both" else ["maximize"]

    def choices(self, field_name: str) -> list:
        """The candidate values of a search field, as a list (a fixed value is a list of one)."""
        value = self.search[field_name]
        return list(value) if isinstance(value, list) else [value]


def _where(path: Path, section: str, key: str | None = None) -> str:
    return f"{path}: [{section}]" + (f" {key}" if key else "")


def _unknown(path: Path, section: str, key: str, known) -> BcautoError:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return BcautoError(f"{_where(path, section)}: unknown field {key!r}{hint}; known fields: {', '.join(known)}")


def _check_scalar(path, section, key, value, expected, allowed):
    types = expected if isinstance(expected, tuple) else (expected,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if bool not in types and isinstance(value, bool) or not isinstance(value, types):
        names = " or ".join(t.__name__ for t in types)
        raise BcautoError(f"{_where(path, section, key)} = {value!r}: expected {names}")
    if allowed and value not in allowed:
        raise BcautoError(f"{_where(path, section, key)} = {value!r}: expected one of {', '.join(map(repr, allowed))}")
    return value


def _check_search_value(path, key, value):
    where = _where(path, "search", key)
    if isinstance(value, dict):
        extra = set(value) - {"low", "high", "log"}
        if extra or not {"low", "high"} <= set(value):
            raise BcautoError(f"{where}: a range is {{low = ..., high = ..., log = true|false}}, got {value!r}")
        low, high = value["low"], value["high"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low >= high:
            raise BcautoError(f"{where}: low and high must be numbers with low < high, got {low!r}, {high!r}")
        if value.get("log") and low <= 0:
            raise BcautoError(f"{where}: a log range needs low > 0, got {low!r}")
        return Range(low, high, bool(value.get("log", False)))
    if isinstance(value, list):
        if not value:
            raise BcautoError(f"{where}: the list of choices is empty")
        return value
    return value


def _check_ranges(path: Path, cfg: StudyConfig) -> None:
    positive = [("study", "trials"), ("data", "image_size"), ("train", "batch_size"), ("data", "synthetic_size")]
    for section, key in positive:
        if getattr(cfg, section)[key] <= 0:
            raise BcautoError(f"{_where(path, section, key)} must be > 0, got {getattr(cfg, section)[key]!r}")
    for section, key in [("train", "head_epochs"), ("train", "finetune_epochs"), ("train", "patience"), ("study", "timeout"),
                         ("train", "augmented_views"), ("train", "activation_cache_gb"),
                         ("study", "startup_trials")]:
        if getattr(cfg, section)[key] < 0:
            raise BcautoError(f"{_where(path, section, key)} must be >= 0, got {getattr(cfg, section)[key]!r}")
    if not 0.0 < cfg.data["val_fraction"] < 0.5:
        raise BcautoError(f"{_where(path, 'data', 'val_fraction')} must be between 0 and 0.5, got {cfg.data['val_fraction']!r}")
    if cfg.study["metric"] in ("val_shift_macro_f1", "val_mean_macro_f1", "both") and not cfg.study["shift_validation"]:
        raise BcautoError(f"{_where(path, 'study', 'metric')} = {cfg.study['metric']!r} needs [study] shift_validation = true")
    if cfg.train["head_epochs"] == 0:
        raise BcautoError(f"{_where(path, 'train', 'head_epochs')} must be at least 1")
    weights = cfg.train["weights"]
    if weights not in ("imagenet", "none") and not weights.endswith(".h5"):
        raise BcautoError(f"{_where(path, 'train', 'weights')} = {weights!r}: expected \"imagenet\", \"none\" or a weights file "
                          "such as \"weights/{backbone}.weights.h5\"")
    for value in cfg.choices("unfreeze_blocks"):
        if value != "all" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise BcautoError(f"{_where(path, 'search', 'unfreeze_blocks')}: {value!r} is not a block count (0, 1, 2, ... or \"all\")")
    for value in cfg.choices("normalization"):
        if value not in NORMALIZATIONS:
            raise BcautoError(f"{_where(path, 'search', 'normalization')}: {value!r} is not a normalization; "
                              f"expected one of {', '.join(map(repr, NORMALIZATIONS))}")
    for value in cfg.choices("loss"):
        if value not in LOSSES:
            raise BcautoError(f"{_where(path, 'search', 'loss')}: {value!r} is not a loss; expected {' or '.join(map(repr, LOSSES))}")
    for value in cfg.choices("label_smoothing"):
        ends = (value.low, value.high) if isinstance(value, Range) else (value,)
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1 for v in ends):
            raise BcautoError(f"{_where(path, 'search', 'label_smoothing')}: {value!r} must be a number from 0 up to (not including) 1")


def parse_study(text: str, path: Path) -> StudyConfig:
    """Validate the TOML ``text`` of study file ``path``."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BcautoError(f"{path}: not valid TOML: {exc}") from None
    for section in raw:
        if section not in SCHEMA and section != "search":
            raise _unknown(path, "<top level>", section, [*SCHEMA, "search"])
    values: dict[str, dict[str, Any]] = {}
    for section, fields in SCHEMA.items():
        given = raw.get(section, {})
        if not isinstance(given, dict):
            raise BcautoError(f"{path}: [{section}] must be a table")
        for key in given:
            if key not in fields:
                raise _unknown(path, section, key, fields)
        values[section] = {
            key: _check_scalar(path, section, key, given[key], expected, allowed) if key in given else default
            for key, (expected, default, allowed) in fields.items()
        }
    search_given = raw.get("search", {})
    component_params: dict[str, dict[str, Any]] = {}
    for key, value in search_given.items():
        if key in SEARCH_DEFAULTS:
            continue
        if isinstance(value, dict) and not {"low", "high"} & set(value):  # [search.COMPONENT]: its own parameters
            component_params[key] = {name: _check_search_value(path, f"{key}.{name}", space) for name, space in value.items()}
            continue
        raise _unknown(path, "search", key, SEARCH_DEFAULTS)
    search = {key: _check_search_value(path, key, search_given.get(key, default)) for key, default in SEARCH_DEFAULTS.items()}
    search["component_params"] = component_params
    for key in COMPONENT_FIELDS:
        if any(not isinstance(v, str) for v in (search[key] if isinstance(search[key], list) else [search[key]])):
            raise BcautoError(f"{_where(path, 'search', key)}: expected a name or a list of names, got {search[key]!r}")
    cfg = StudyConfig(path=path, study=values["study"], data=values["data"], train=values["train"], search=search)
    _check_ranges(path, cfg)
    return cfg


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BcautoError(f"study file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BcautoError(f"study file {path} cannot be read: {exc}") from None
    return parse_study(text, path)


def check_components(cfg: StudyConfig, components) -> None:
    """Fail before any trial when a study names a component no plugin registered."""
    registries = components.by_kind()
    known = {name for kind in COMPONENT_FIELDS.values() for name in registries[kind].names()}
    for name in cfg.search.get("component_params", {}):
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise BcautoError(f"{_where(cfg.path, f'search.{name}')}: no backbone, augmentation, imbalance strategy or "
                              f"canonicalizer is called {name!r}{hint}")
    for key, kind in COMPONENT_FIELDS.items():
        registry = registries[kind]
        for name in cfg.choices(key):
            if name not in registry:
                raise BcautoError(f"{_where(cfg.path, 'search', key)}: {registry.unknown_message(name)}")
    image_size = cfg.data["image_size"]
    for name in cfg.choices("backbone"):
        spec = registries["backbones"].get(name)
        weights_file = spec.resolve_weights(cfg.train["weights"])
        if weights_file and weights_file.endswith(".h5") and not Path(weights_file).is_file():
            raise BcautoError(f"{_where(cfg.path, 'train', 'weights')}: weights file {weights_file} for {name!r} does not exist")
        if image_size < spec.min_input_size:
            raise BcautoError(
                f"{_where(cfg.path, 'search', 'backbone')}: {name!r} needs images of at least {spec.min_input_size} pixels, "
                f"but [data] image_size = {image_size}; raise image_size or drop {name!r}"
            )
        unsupported = [n for n in cfg.choices("normalization") if n != "default" and n not in spec.normalizations]
        if spec.normalizations and unsupported:
            raise BcautoError(
                f"{_where(cfg.path, 'search', 'normalization')}: {name!r} cannot use {', '.join(map(repr, unsupported))}; "
                f"it offers {', '.join(map(repr, spec.normalizations))}"
            )
