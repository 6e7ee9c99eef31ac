"""docs/study-files.md from bcauto.config: types, defaults, choices and bounds come from the study file's models
(TABLES), what a text field accepts from probing its validator; only the one-line meanings are written here, and a
field without one (or a meaning for a field that is gone) stops the generator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel

from bcauto.config import TABLES, Range, parse_study
from bcauto.errors import BcautoError

MEANINGS = {
    "study.description": "free text, shown in logs and on the MLflow parent run",
    "study.metric": "what Optuna maximises: `val_macro_f1` (macro F1 on the validation split, every class alike), "
    "`val_accuracy`, `val_shift_macro_f1` (macro F1 on a corrupted copy of the validation split), "
    "`val_mean_macro_f1` (the mean of the two F1s), `val_domain_macro_f1` (macro F1 on a lab the "
    "search never trains on: needs data from several sources, see `data.validation_domain`), or "
    "`both` (clean and shifted F1 as two objectives: NSGA-II, a Pareto front, no pruning)",
    "study.shift_validation": "also score each trial on a copy of the validation split with one registered shift "
    "(blur, stain, noise, ...) per image, logging per-shift macro F1; the shifted metrics "
    "need it",
    "study.trials": "finished (complete or pruned) trials the study should hold; `--trials` overrides it",
    "study.timeout": "seconds after which no new trial starts; 0 means no limit; `--timeout` overrides it",
    "study.seed": "seed of the split, the sampler and every trial (trial *n* uses seed + *n*); `--seed` overrides it",
    "study.sampler": "Optuna sampler: `tpe` (multivariate TPE), `random`, `nsga2`",
    "study.startup_trials": (
        "`tpe` only: trials drawn at random before TPE models the results; lower it for small "
        "budgets, where the metric would otherwise steer few trials or none"
    ),
    "study.pruner": "Optuna pruner that stops weak trials early from their per-epoch validation metric; `none` never prunes",
    "study.pruner_warmup_epochs": "epochs a trial always runs before the pruner may stop it",
    "study.max_failures": "the study stops after this many failed trials in a row, with their reasons; 0 never stops",
    "data.source": "the data when `--data` is not given: `auto`, `synthetic[:N]`, `bloodmnist[:SIZE]`, a `.npz` file "
    "or an image folder (see [Quickstart](quickstart.md#data))",
    "data.validation_domain": 'with data from several sources (`--data A --data B`, or `source = "A + B"`), the '
    "domain (source) held out of the search's training and scored as `val_domain_macro_f1`: "
    "its name (the file or folder name without suffix); empty: the last source. The "
    "validation split is drawn from the other domains; `bcauto refit` trains on all of them",
    "data.image_size": "side in pixels that every image is resized to; must reach each backbone's minimum input size",
    "data.val_fraction": "share of the images in the stratified validation split",
    "data.synthetic_size": "number of images the `synthetic` source generates",
    "data.clean": "remove what `bcauto audit` flags (duplicates, label conflicts, blank images, foreign backgrounds; "
    "the seed report's section 2.1) before the split; the removed images are listed in "
    "`cleaned_images.json` on the study's parent run",
    "train.weights": "pretrained weights for backbones that have them: `imagenet` (downloaded once), a local weights "
    "file per backbone for offline machines (`{backbone}` becomes the backbone's name), or `none` "
    "to train every backbone from scratch",
    "train.batch_size": "images per training batch",
    "train.head_epochs": "phase 1: epochs training the head on the frozen pretrained backbone (from-scratch backbones "
    "train head_epochs + finetune_epochs in one phase)",
    "train.finetune_epochs": "phase 2: epochs after unfreezing the last `unfreeze_blocks` blocks; 0 skips it",
    "train.patience": "early stopping: epochs without a lower validation loss before a phase stops (best weights restored)",
    "train.lr_patience": "ReduceLROnPlateau: epochs without a better validation accuracy before the learning rate drops",
    "train.lr_factor": "ReduceLROnPlateau: factor the learning rate is multiplied by",
    "train.mixed_precision": "mixed float16 compute; `auto` means on when a GPU is present",
    "train.xla": "XLA-compiled training steps; `auto` means on when a GPU is present",
    "train.feature_cache": "phase 1 trains the head on pooled backbone features computed once and shared between trials",
    "train.augmented_views": "with an augmentation policy, cache this many augmented views of the training set for "
    "phase 1 (0: run the augmentation online instead)",
    "train.activation_cache_gb": "memory budget for phase 2's cached activations at the first unfrozen block; larger "
    "sets fine-tune the whole model online",
    "train.refit_epochs": "epochs `bcauto refit` trains the best configuration for (shared between the phases as "
    "its trial kept them, the learning rate falling along a half cosine from the trial's); 0: the epochs the trial "
    "kept. For a search that trains each trial briefly to try many; `bcauto refit --epochs` overrides it",
    "train.refit_image_size": "side in pixels `bcauto refit` trains the best configuration at (the study's images "
    "read again at that size, after the fingerprint check at the searched size); 0: the size searched at. For a "
    "search run small to try many; `bcauto refit --image-size` overrides it",
    "search.backbone": "backbone names, as listed by `bcauto plugins`",
    "search.augmentation": "augmentation policy names, as listed by `bcauto plugins`",
    "search.canonicalization": "input canonicalizer names, as listed by `bcauto plugins`: `none`, `stain_norm` "
    "(every image to one reference stain style), `cell_crop` (centred on the white cell "
    "at a canonical scale), `cell_crop_stain_norm` (both); part of the saved model",
    "search.normalization": "normalization layers of backbones trained from scratch that offer a choice (`batch`, "
    "`group`, `layer`, `none`); `default` keeps each backbone's own",
    "search.imbalance": "class-imbalance strategy names, as listed by `bcauto plugins`",
    "search.unfreeze_blocks": 'blocks unfrozen for phase 2, counted from the end: 0, 1, 2, ... or `"all"`',
    "search.lr_head": "Lion learning rate of phase 1",
    "search.lr_finetune": "Lion learning rate of phase 2",
    "search.head_units1": "units of the head's first dense layer (0 drops the layer)",
    "search.head_units2": "units of the head's second dense layer (0 drops the layer)",
    "search.head_dropout": "dropout rate after each dense layer of the head",
    "search.head_l2": "L2 regularisation factor of the head's dense layers",
    "search.loss": "training loss: `crossentropy` (categorical cross-entropy) or `focal` (categorical focal "
    "cross-entropy, which weights hard examples up); a list searches both",
    "search.label_smoothing": "label smoothing of the loss, from 0 (none) up to but not including 1: the one-hot "
    "targets are mixed with a uniform distribution by this share",
}

TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean"}
BOUNDS = {
    annotated_types.Gt: ("gt", ">"),
    annotated_types.Ge: ("ge", ">="),
    annotated_types.Lt: ("lt", "<"),
    annotated_types.Le: ("le", "<="),
}
SCALAR_TABLES = [name for name in TABLES if name != "search"]


def toml_value(value) -> str:
    """``value`` written as in a TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def _rejection(section: str, key: str, value) -> str | None:
    """The validator's complaint about ``[section] key = value``, or None when it is accepted."""
    try:
        parse_study(f"[{section}]\n{key} = {toml_value(value)}\n", Path("study.toml"))
    except BcautoError as exc:
        return str(exc).split(": ", 2)[-1]
    return None


def _bounds(metadata) -> str:
    """``> 0 and < 0.5`` from a field's constraints."""
    phrases = []
    for constraint in metadata:
        for kind, (attr, sign) in BOUNDS.items():
            if isinstance(constraint, kind):
                value = getattr(constraint, attr)
                phrases.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    return " and ".join(phrases)


def _unpack(annotation) -> tuple[Any, list]:
    """The bare type and the constraints of an ``Annotated`` type."""
    metadata: list = []
    while get_args(annotation) and hasattr(annotation, "__metadata__"):
        annotation, *more = get_args(annotation)
        for item in more:
            metadata += getattr(item, "metadata", [item])
            if getattr(item, "description", None):
                metadata.append(item.description)
    return annotation, metadata


def _type_name(annotation) -> str:
    return "string" if get_origin(annotation) is Literal else TYPE_NAMES[annotation]


def _allowed(section: str, key: str, annotation, metadata) -> str:
    if get_origin(annotation) is Literal:
        return ", ".join(f"`{toml_value(v)}`" for v in get_args(annotation))
    if annotation is bool:
        return "true, false"
    if annotation in (int, float):
        return _bounds(metadata) or "any"
    problem = _rejection(section, key, "no such value")  # a text field the validator still restricts
    return problem.removeprefix("expected ") if problem else "any text"


def _meaning(key: str) -> str:
    try:
        return MEANINGS[key]
    except KeyError:
        raise ValueError(f"{key} has no meaning in {__file__}; add one") from None


def _table_rows(section: str) -> list[str]:
    rows = ["| field | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
    for key, info in TABLES[section].model_fields.items():
        annotation, metadata = info.annotation, list(info.metadata)
        rows.append(
            f"| `{key}` | {_type_name(annotation)} | `{toml_value(info.default)}` | "
            f"{_allowed(section, key, annotation, metadata)} | {_meaning(f'{section}.{key}')} |"
        )
    return rows


def _search_values(annotation) -> tuple[str, bool]:
    """What one value of a search field may be, and whether the field takes a range."""
    union, _ = _unpack(annotation)
    members = [_unpack(member)[0] for member in get_args(union)] if get_origin(union) is Union else [union]
    item, metadata = _unpack(get_args(union)[0])
    ranges = any(isinstance(member, type) and issubclass(member, Range) for member in members)
    if get_origin(item) is Literal:
        return ", ".join(f"`{toml_value(v)}`" for v in get_args(item)), ranges
    described = [m for m in metadata if isinstance(m, str)]
    if described:
        return described[0], ranges
    if item is str:
        return "a name", ranges
    return " ".join(filter(None, [TYPE_NAMES[item], _bounds(metadata)])), ranges


def _search_rows() -> list[str]:
    rows = ["| field | default | each value | range | meaning |", "| --- | --- | --- | --- | --- |"]
    for key, info in TABLES["search"].model_fields.items():
        values, ranges = _search_values(info.rebuild_annotation())
        rows.append(f"| `{key}` | `{toml_value(info.default)}` | {values} | {'yes' if ranges else 'no'} | {_meaning(f'search.{key}')} |")
    return rows


def _check_meanings() -> None:
    known = {f"{s}.{k}" for s, model in TABLES.items() for k in model.model_fields}
    gone = sorted(set(MEANINGS) - known)
    if gone:
        raise ValueError(f"{__file__} describes fields that no longer exist: {', '.join(gone)}")


def study_files_page() -> str:
    """The whole reference page."""
    _check_meanings()
    parts = [
        "# Study files",
        "",
        "<!-- generated by docs/gen_reference.py from bcauto/config.py (the models in TABLES); do not edit by hand -->",
        "",
        (
            "A study file is a TOML file (data, never code) with up to four tables: `[study]`, `[data]`, `[train]` and "
            "`[search]`. Every field is optional and takes the default below. An unknown table or field, a wrong type or "
            "a value out of range stops `bcauto search` before any trial, in one line with the file, the table, the field, "
            "the value and what was expected (and the closest known name for a typo), for example "
            "`studies/x.toml: [train] lr_factor = 7.0: must be < 1`. The study's name is the file name without `.toml`. "
            "The files shipped in `studies/` are `cpu.toml` (small, offline), `robust-cpu.toml` (small, offline, for models "
            "that keep working in other labs; see [Deploying in another lab](deploying-in-another-lab.md)), "
            "`default.toml` (GPU) and `report-reproduction.toml` (the seed report, see "
            "[Reproduce the seed report](reproduce-seed.md))."
        ),
        "",
        (
            "A running search keeps the study file as it was read at the start: its workers receive the validated "
            "values, not the file, so editing the file changes only the next search. The study also keeps a copy of "
            "the validated file with its trials. `bcauto refit` compares the file it reads with that copy and names "
            "each `[data]`, `[train]` and `[search]` field that changed since the search (for example "
            "`[train] refit_epochs: 15 -> 30`), on the console and in the model's `study_file_changes`; it refits "
            "with the file as it is now, and still refuses a trial whose plan the file no longer gives. When the "
            "file is gone (moved, or the refit runs from another folder) and `--study` names none, it refits with the "
            "copy. A search resumed under a changed file names the changes too."
        ),
        "",
    ]
    for section in SCALAR_TABLES:
        parts += [f"## `[{section}]`", "", *_table_rows(section), ""]
    parts += [
        "## `[search]`",
        "",
        (
            "Each field is one of: a fixed value (`lr_head = 1e-4`); a list of choices, searched as a categorical "
            'parameter (`backbone = ["resnet50", "xception"]`; a list of one is fixed); or, where the table below '
            "says so, a numeric range `{ low = ..., high = ..., log = true|false }`, searched as an integer for an "
            "integer field and as a float for a number field. A range needs `low < high` and a log range `low > 0`; "
            "every value of a list and both ends of a range must be allowed values of the field. Components also add "
            "their own parameters (for example `mini_cnn.base_filters`), searched in the ranges the plugin defines "
            "unless a table named after the component narrows or fixes them, in the same three forms (a range is "
            "searched as an integer when both ends are integers): `[search.mini_cnn]` with `base_filters = 16` "
            "(fixed) or `base_filters = [8, 16]` (choices). A study can so keep a component's cost within its budget."
        ),
        "",
        *_search_rows(),
        "",
        (
            "`unfreeze_blocks` and `lr_finetune` only apply to backbones loaded with pretrained weights: a backbone "
            "trained from scratch trains every layer from the first epoch."
        ),
        "",
    ]
    return "\n".join(parts)
