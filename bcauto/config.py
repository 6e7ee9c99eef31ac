"""Study files: TOML data (never code) validated by typed, frozen models; a mistake is one line naming the file,
the table, the field, the value and what was expected.

The validated :class:`StudyConfig` is also what workers receive (``model_dump_json``), so a study file edited
during a search does not change the space under the running study.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bcauto.errors import BcautoError
from bcauto.text import did_you_mean

METRICS = ("val_macro_f1", "val_accuracy", "val_shift_macro_f1", "val_mean_macro_f1", "val_domain_macro_f1", "both")
SHIFTED_METRICS = ("val_shift_macro_f1", "val_mean_macro_f1", "both")
SAMPLERS = ("tpe", "random", "nsga2")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
SWITCHES = ("auto", "on", "off")
LOSSES = ("crossentropy", "focal")
# "default": each backbone keeps the normalization it was written with
NORMALIZATIONS = ("default", "batch", "group", "layer", "none")
COMPONENT_FIELDS = {
    "backbone": "backbones",
    "augmentation": "augmentations",
    "imbalance": "imbalance",
    "canonicalization": "canonicalizers",
}

# error types whose message is complete after "FILE: " (the others are phrased from their location and input)
MESSAGE = "study_message"
PROBLEM = "study_problem"


def _message(text: str) -> PydanticCustomError:
    return PydanticCustomError(MESSAGE, "{message}", {"message": text})


def _problem(text: str) -> PydanticCustomError:
    return PydanticCustomError(PROBLEM, "{message}", {"message": text})


class _Model(BaseModel):
    # strict: TOML has typed values, so "32" is not a batch size and 1 is not true
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


N = TypeVar("N")


class Range(_Model, Generic[N]):
    """A numeric search range; integer when both ends are integers."""

    low: N
    high: N
    log: bool = False

    def __repr_name__(self) -> str:  # "Range", not the parametrized "Range[Annotated[float, ...]]"
        return "Range"

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, value: Any) -> Any:
        if isinstance(value, dict) and (set(value) - {"low", "high", "log"} or not {"low", "high"} <= set(value)):
            raise _problem("a range is { low = ..., high = ..., log = true|false }")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise _problem("a range needs low < high")
        if self.log and self.low <= 0:
            raise _problem("a log range needs low > 0")
        return self


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _problem("expected a number")
    return value


def _scalar(value: Any) -> Any:
    if not isinstance(value, (int, float, str, bool)):
        raise _problem("expected a number, a string, true or false")
    return value


def _block_count(value: Any) -> int | str:
    if value != "all" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise _problem('not a block count (0, 1, 2, ... or "all")')
    return value


def _space_kind(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "choices"
    return "range" if isinstance(value, (dict, Range)) else "fixed"


SPACE_TAGS = ("fixed", "choices", "range")


def space(item: Any, range_item: Any = None, ranges: bool = True) -> Any:
    """A search field over ``item`` values: a fixed value, a non-empty list of choices or a {low, high, log} range."""
    members = [Annotated[item, Tag("fixed")], Annotated[tuple[item, ...], Field(min_length=1, strict=False), Tag("choices")]]
    if ranges:
        members.append(Annotated[Range[range_item or item], Tag("range")])
    return Annotated[Union[tuple(members)], Discriminator(_space_kind)]  # noqa: UP007 (members chosen at run time)


NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
Number = Annotated[int | float, PlainValidator(_number)]
Scalar = Annotated[Any, PlainValidator(_scalar)]
BlockCount = Annotated[int | str, PlainValidator(_block_count), Field(description='0, 1, 2, ... or `"all"`')]

Names = space(str, ranges=False)
UnitsSpace = space(NonNegInt)
RateSpace = space(PosFloat)
FractionSpace = space(Fraction)
FactorSpace = space(NonNegFloat)
ComponentSpace = space(Scalar, range_item=Number)
NormalizationSpace = space(Literal[NORMALIZATIONS], ranges=False)
LossSpace = space(Literal[LOSSES], ranges=False)
BlocksSpace = space(BlockCount, ranges=False)


class StudyTable(_Model):
    description: str = ""
    metric: Literal[METRICS] = "val_macro_f1"
    trials: int = Field(20, gt=0)
    timeout: float = Field(0, ge=0)
    seed: int = Field(42, ge=0)
    sampler: Literal[SAMPLERS] = "tpe"
    startup_trials: int = Field(10, ge=0)
    pruner: Literal[PRUNERS] = "median"
    pruner_warmup_epochs: int = Field(2, ge=0)
    max_failures: int = Field(10, ge=0)
    shift_validation: bool = True

    @model_validator(mode="after")
    def _shifted_metric_needs_shift_validation(self) -> StudyTable:
        if self.metric in SHIFTED_METRICS and not self.shift_validation:
            raise _message(f"[study] metric = {self.metric!r}: needs [study] shift_validation = true")
        return self


class DataTable(_Model):
    source: str = "auto"
    image_size: int = Field(96, gt=0)
    val_fraction: float = Field(0.2, gt=0, lt=0.5)
    synthetic_size: int = Field(4000, gt=0)
    clean: bool = False
    validation_domain: str = ""


class TrainTable(_Model):
    weights: str = "imagenet"
    batch_size: int = Field(64, gt=0)
    head_epochs: int = Field(30, ge=1)
    finetune_epochs: int = Field(70, ge=0)
    patience: int = Field(15, ge=0)
    lr_patience: int = Field(5, ge=0)
    lr_factor: float = Field(0.5, gt=0, lt=1)
    mixed_precision: Literal[SWITCHES] = "auto"
    xla: Literal[SWITCHES] = "auto"
    feature_cache: bool = True
    augmented_views: int = Field(0, ge=0)
    activation_cache_gb: float = Field(4.0, ge=0)
    refit_epochs: int = Field(0, ge=0)
    refit_image_size: int = Field(0, ge=0)

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: str) -> str:
        if value not in ("imagenet", "none") and not value.endswith(".h5"):
            raise _problem('expected "imagenet", "none" or a weights file such as "weights/{backbone}.weights.h5"')
        return value


class SearchTable(_Model):
    """The search space; tables named after a component (``[search.mini_cnn]``) narrow or fix its own parameters."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, dict[str, ComponentSpace]] = Field(init=False)

    backbone: Names = ("resnet50",)
    augmentation: Names = ("flip_rotate_zoom",)
    canonicalization: Names = ("none",)
    normalization: NormalizationSpace = ("default",)
    imbalance: Names = ("class_weights", "downsample")
    unfreeze_blocks: BlocksSpace = (1,)
    lr_head: RateSpace = Range[PosFloat](low=3e-5, high=3e-4, log=True)
    lr_finetune: RateSpace = Range[PosFloat](low=3e-6, high=3e-5, log=True)
    head_units1: UnitsSpace = 512
    head_units2: UnitsSpace = 256
    head_dropout: FractionSpace = 0.5
    head_l2: FactorSpace = 1e-4
    loss: LossSpace = "crossentropy"
    label_smoothing: FractionSpace = 0.0

    @model_validator(mode="before")
    @classmethod
    def _only_component_tables_besides_fields(cls, values: Any) -> Any:
        for key, value in values.items() if isinstance(values, dict) else ():
            if key not in cls.model_fields and not (isinstance(value, dict) and not {"low", "high"} & set(value)):
                raise _message(_unknown("search", key))
        return values

    @property
    def component_params(self) -> dict[str, dict[str, Any]]:
        """The ``[search.COMPONENT]`` tables: component name -> parameter -> space."""
        return dict(self.model_extra or {})


TABLES: dict[str, type[_Model]] = {"study": StudyTable, "data": DataTable, "train": TrainTable, "search": SearchTable}
SEARCH_DEFAULTS: dict[str, Any] = {name: info.default for name, info in SearchTable.model_fields.items()}


class StudyConfig(_Model):
    """A validated study file. Frozen: a changed value is a new config (:meth:`with_option`)."""

    path: Path
    study: StudyTable = Field(default_factory=StudyTable)
    data: DataTable = Field(default_factory=DataTable)
    train: TrainTable = Field(default_factory=TrainTable)
    search: SearchTable = Field(default_factory=SearchTable)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def directions(self) -> list[str]:
        """Optuna directions: two objectives (clean and shifted macro-F1) for metric "both", else one."""
        return ["maximize", "maximize"] if self.study.metric == "both" else ["maximize"]

    def choices(self, field_name: str) -> list:
        """The candidate values of a search field, as a list (a fixed value is a list of one)."""
        value = getattr(self.search, field_name)
        return list(value) if isinstance(value, tuple) else [value]

    def with_option(self, option: str, table: str, **values: Any) -> StudyConfig:
        """A copy with ``values`` of ``table`` given by command-line ``option``, validated like the file's."""
        data = self.model_dump()
        data[table] = {**data[table], **values}
        try:
            return StudyConfig.model_validate(data)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            raise BcautoError(f"{option} {error['input']!r}: {_phrase(error)}") from None

    @model_validator(mode="after")
    def _components_are_registered(self, info: ValidationInfo) -> StudyConfig:
        components = (info.context or {}).get("components")
        if components is not None:
            _check_registry(self, components)
        return self


def _check_registry(cfg: StudyConfig, components) -> None:
    """Names of components and their ``[search.COMPONENT]`` tables against the plugins installed."""
    registries = components.by_kind()
    known = {name for kind in COMPONENT_FIELDS.values() for name in registries[kind].names()}
    for name in cfg.search.component_params:
        if name not in known:
            raise _message(
                f"[search.{name}]: no backbone, augmentation, imbalance strategy or canonicalizer is called "
                f"{name!r}{did_you_mean(name, sorted(known))}"
            )
    for key, kind in COMPONENT_FIELDS.items():
        registry = registries[kind]
        for name in cfg.choices(key):
            if name not in registry:
                raise _message(f"[search] {key}: {registry.unknown_message(name)}")
    for name in cfg.choices("backbone"):
        spec = registries["backbones"].get(name)
        weights_file = spec.resolve_weights(cfg.train.weights)
        if weights_file and weights_file.endswith(".h5") and not Path(weights_file).is_file():
            raise _message(f"[train] weights: weights file {weights_file} for {name!r} does not exist")
        if cfg.data.image_size < spec.min_input_size:
            raise _message(
                f"[search] backbone: {name!r} needs images of at least {spec.min_input_size} pixels, but [data] "
                f"image_size = {cfg.data.image_size}; raise image_size or drop {name!r}"
            )
        unsupported = [n for n in cfg.choices("normalization") if n != "default" and n not in spec.normalizations]
        if spec.normalizations and unsupported:
            raise _message(
                f"[search] normalization: {name!r} cannot use {', '.join(map(repr, unsupported))}; "
                f"it offers {', '.join(map(repr, spec.normalizations))}"
            )


def _unknown(table: str, key: str) -> str:
    top = table == "<top level>"
    known = list(TABLES) if top else list(TABLES[table].model_fields)
    # a field of another table is misplaced, not misspelt: a close name in this table would point the wrong way
    elsewhere = [name for name, model in TABLES.items() if name != table and key in model.model_fields]
    hint = f" (it belongs in [{elsewhere[0]}])" if elsewhere else did_you_mean(key, known)
    if top:
        return f"unknown table or top-level field {key!r}{hint}; the tables are {', '.join(f'[{name}]' for name in known)}"
    return f"[{table}]: unknown field {key!r}{hint}; known fields: {', '.join(known)}"


def _bound(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}
EXPECTED = {
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "finite_number": "expected a finite number",
    "too_short": "the list of choices is empty",
    "model_type": "must be a table",
    "dict_type": "must be a table",
    "union_tag_invalid": "expected a value or a list of choices, not a range",
}


def _phrase(error: dict) -> str:
    """What is wrong with the value, in a few words."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in (PROBLEM, MESSAGE):
        return ctx["message"]
    if kind in BOUNDS:
        key, sign = BOUNDS[kind]
        return f"must be {sign} {_bound(ctx[key])}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", ctx["expected"])
        return f"expected one of {ctx['expected']}{did_you_mean(error['input'], choices)}"
    return EXPECTED.get(kind, error["msg"])


def _where(loc: tuple) -> tuple[str, str]:
    """The table and the field (``lr_head.low``, ``unfreeze_blocks[1]``) of an error location."""
    parts = list(loc)
    table = str(parts.pop(0)) if parts else "<top level>"
    if not parts:
        return table, ""
    field = str(parts.pop(0))
    if table == "search" and field not in SearchTable.model_fields and parts:  # a [search.COMPONENT] table
        table, field = f"search.{field}", str(parts.pop(0))
    if parts and parts[0] in SPACE_TAGS:
        parts.pop(0)
    for part in parts:
        field += f"[{part}]" if isinstance(part, int) else f".{part}"
    return table, field


def _describe(error: dict, path: Path) -> str:
    if error["type"] == MESSAGE:
        return f"{path}: {error['ctx']['message']}"
    table, field = _where(error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{path}: {_unknown(table if field else '<top level>', field or table)}"
    if not field:
        return f"{path}: [{table}] {_phrase(error)}"
    return f"{path}: [{table}] {field} = {error['input']!r}: {_phrase(error)}"


def _validate(data: dict, path: Path, components=None) -> StudyConfig:
    try:
        return StudyConfig.model_validate(data, context={"components": components})
    except ValidationError as exc:
        raise BcautoError(_describe(exc.errors(include_url=False)[0], path)) from None


def parse_study(text: str, path: Path, components=None) -> StudyConfig:
    """Validate the TOML ``text`` of study file ``path``; with ``components``, also the names of plugins it uses."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BcautoError(f"{path}: not valid TOML: {exc}") from None
    if "path" in raw:
        raise BcautoError(f"{path}: {_unknown('<top level>', 'path')}")
    return _validate({**raw, "path": Path(path)}, Path(path), components)


def load_study(path: str | Path, components=None) -> StudyConfig:
    """Read and validate a study file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BcautoError(f"study file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BcautoError(f"study file {path} cannot be read: {exc}") from None
    return parse_study(text, path, components)


REFIT_TABLES = ("data", "train", "search")  # what a refit reads from the study file besides the trials' own plans
RANGE_KEYS = set(Range.model_fields)  # a range is one value to compare, not a table of fields


def recorded_config(cfg: StudyConfig) -> dict[str, Any]:
    """``cfg`` as JSON-ready data to keep with the study (every table; not its path)."""
    dumped = cfg.model_dump(mode="json")
    return {table: dumped[table] for table in ("study", *REFIT_TABLES)}


def config_from_record(recorded: dict[str, Any], path: str | Path) -> StudyConfig:
    """The :class:`StudyConfig` a :func:`recorded_config` was made from, as study file ``path``."""
    try:
        return StudyConfig.model_validate_json(json.dumps({**recorded, "path": str(path)}))
    except ValidationError as exc:
        problem = _describe(exc.errors(include_url=False)[0], Path(path))
        raise BcautoError(f"the copy of {path} recorded with the study is not valid: {problem}") from None


def config_changes(recorded: dict[str, Any], cfg: StudyConfig) -> list[str]:
    """How the data, train and search tables of ``cfg`` differ from a :func:`recorded_config`: one
    ``[table] field: before -> now`` per changed field (nested tables such as ``[search.mini_cnn]`` field by field),
    in the study file's order."""

    def flat(value: Any, prefix: str) -> dict[str, Any]:
        if isinstance(value, dict) and set(value) != RANGE_KEYS:
            return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}.{key}" if prefix else key).items()}
        return {prefix: value}

    def shown(value: Any) -> str:
        if isinstance(value, dict):  # a range
            return f"{value['low']}..{value['high']}" + (" (log)" if value.get("log") else "")
        return "(none)" if value is None else repr(value)

    now = recorded_config(cfg)
    changes = []
    for table in REFIT_TABLES:
        before, after = flat(recorded.get(table, {}), ""), flat(now[table], "")
        for key in [*after, *(k for k in before if k not in after)]:
            if before.get(key) != after.get(key):
                head, _, field = key.rpartition(".")
                where = f"[{table}.{head}]" if head else f"[{table}]"
                changes.append(f"{where} {field}: {shown(before.get(key))} -> {shown(after.get(key))}")
    return changes


def check_components(cfg: StudyConfig, components) -> None:
    """Fail before any trial when a study names a component no plugin registered, or one its images or weights
    do not suit."""
    _validate(cfg.model_dump(), cfg.path, components)
