"""docs/study-files.md from bcauto.config: types, defaults and allowed values come from SCHEMA and
SEARCH_DEFAULTS, ranges from probing the validator itself; only the one-line meanings are written here, and a
field without one (or a meaning for a field that is gone) stops the generator.
"""

from __future__ import annotations

import re
from pathlib import Path

from bcauto.config import SCHEMA, SEARCH_DEFAULTS, parse_study
from bcauto.errors import BcautoError

MEANINGS = {
    "study.description": "free text, shown in logs and on the MLflow parent run",
    "study.metric": "what Optuna maximises: `val_macro_f1` (macro F1 on the validation split, every class alike), "
                    "`val_accuracy`, `val_shift_macro_f1` (macro F1 on a corrupted copy of the validation split), "
                    "`val_mean_macro_f1` (the mean of the two F1s), or `both` (clean and shifted F1 as two objectives: "
                    "NSGA-II, a Pareto front, no pruning)",
    "study.shift_validation": "also score each trial on a copy of the validation split with one registered shift "
                              "(blur, stain, noise, ...) per image, logging per-shift macro F1; the shifted metrics "
                              "need it",
    "study.trials": "finished (complete or pruned) trials the study should hold; `--trials` overrides it",
    "study.timeout": "seconds after which no new trial starts; 0 means no limit; `--timeout` overrides it",
    "study.seed": "seed of the split, the sampler and every trial (trial *n* uses seed + *n*); `--seed` overrides it",
    "study.sampler": "Optuna sampler: `tpe` (multivariate TPE), `random`, `nsga2`",
    "study.startup_trials": ("`tpe` only: trials drawn at random before TPE models the results; lower it for small "
                             "budgets, where the metric would otherwise steer few trials or none"),
    "study.pruner": "Optuna pruner that stops weak trials early from their per-epoch validation metric; `none` never prunes",
    "study.pruner_warmup_epochs": "epochs a trial always runs before the pruner may stop it",
    "study.max_failures": "the study stops after this many failed trials in a row, with their reasons; 0 never stops",
    "data.source": "the data when `--data` is not given: `auto`, `synthetic[:N]`, `bloodmnist[:SIZE]`, a `.npz` file "
                   "or an image folder (see [Quickstart](quickstart.md#data))",
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
    "search.backbone": "backbone names, as listed by `bcauto plugins`",
    "search.augmentation": "augmentation policy names, as listed by `bcauto plugins`",
    "search.canonicalization": "input canonicalizer names, as listed by `bcauto plugins`: `none`, `stain_norm` "
                               "(every image to one reference stain style), `cell_crop` (centred on the white cell "
                               "at a canonical scale), `cell_crop_stain_norm` (both); part of the saved model",
    "search.normalization": "normalization layers of backbones trained from scratch that offer a choice (`batch`, "
                            "`group`, `layer`, `none`); `default` keeps each backbone's own",
    "search.imbalance": "class-imbalance strategy names, as listed by `bcauto plugins`",
    "search.unfreeze_blocks": "blocks unfrozen for phase 2, counted from the end: 0, 1, 2, ... or `\"all\"`",
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

TYPE_NAMES = {str: "string", int: "integer", float: "float", bool: "boolean"}
INT_PROBES = (-1, 0, 1)
FLOAT_PROBES = (-1.0, 0.0, 0.25, 0.5, 1.0)


def toml_value(value) -> str:
    """``value`` written as in a TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def _rejection(section: str, key: str, value) -> str | None:
    """The validator's complaint about ``[section] key = value``, or None when it is accepted."""
    try:
        parse_study(f"[{section}]\n{key} = {toml_value(value)}\n", Path("study.toml"))
    except BcautoError as exc:
        found = re.search(rf"\[{section}\] {key} (?:= .+?: )?(?:must be )?(.*?)(?:, got .*)?$", str(exc))
        return found.group(1) if found else str(exc)
    return None


def numeric_range(section: str, key: str, types: tuple) -> str:
    """The range the validator enforces, found by trying values around the boundaries."""
    probes = FLOAT_PROBES if types == (float,) else INT_PROBES
    results = [(value, _rejection(section, key, value)) for value in probes]
    accepted = [i for i, (_, problem) in enumerate(results) if problem is None]
    if not accepted:
        raise ValueError(f"[{section}] {key}: no probe value is accepted; extend the probes in {__file__}")
    below = [results[accepted[0] - 1][1]] if accepted[0] > 0 else []  # the tightest lower bound
    above = [problem for _, problem in results[accepted[0]:] if problem]
    phrases = list(dict.fromkeys(below + above))
    return "; ".join(phrases) or "any"


def _allowed(section: str, key: str, types: tuple, allowed) -> str:
    if allowed:
        return ", ".join(f"`{toml_value(v)}`" for v in allowed)
    if set(types) <= {int, float}:
        return numeric_range(section, key, types)
    if bool in types:
        return "true, false"
    problem = _rejection(section, key, "no such value")  # a text field the validator still restricts
    return problem.removeprefix("expected ") if problem else "any text"


def _meaning(key: str) -> str:
    try:
        return MEANINGS[key]
    except KeyError:
        raise ValueError(f"{key} has no meaning in {__file__}; add one") from None


def _table_rows(section: str) -> list[str]:
    rows = ["| field | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
    for key, (expected, default, allowed) in SCHEMA[section].items():
        types = expected if isinstance(expected, tuple) else (expected,)
        type_name = " or ".join(TYPE_NAMES[t] for t in types)
        rows.append(f"| `{key}` | {type_name} | `{toml_value(default)}` | {_allowed(section, key, types, allowed)} "
                    f"| {_meaning(f'{section}.{key}')} |")
    return rows


def _search_rows() -> list[str]:
    rows = ["| field | default | meaning |", "| --- | --- | --- |"]
    for key, default in SEARCH_DEFAULTS.items():
        rows.append(f"| `{key}` | `{toml_value(default)}` | {_meaning(f'search.{key}')} |")
    return rows


def _check_meanings() -> None:
    known = {f"{s}.{k}" for s, fields in SCHEMA.items() for k in fields} | {f"search.{k}" for k in SEARCH_DEFAULTS}
    gone = sorted(set(MEANINGS) - known)
    if gone:
        raise ValueError(f"{__file__} describes fields that no longer exist: {', '.join(gone)}")


def study_files_page() -> str:
    """The whole reference page."""
    _check_meanings()
    parts = [
        "# Study files",
        "",
        "<!-- generated by docs/gen_reference.py from bcauto/config.py (SCHEMA, SEARCH_DEFAULTS); do not edit by hand -->",
        "",
        "A study file is a TOML file (data, never code) with up to four tables: `[study]`, `[data]`, `[train]` and "
        "`[search]`. Every field is optional and takes the default below. An unknown table or field, a wrong type or "
        "a value out of range stops `bcauto search` before any trial, with the file, the table, the field and what "
        "was expected (and the closest known name for a typo). The study's name is the file name without `.toml`. "
        "The files shipped in `studies/` are `cpu.toml` (small, offline), `default.toml` (GPU) and `seed.toml` "
        "(the seed report, see [Reproduce the seed report](reproduce-seed.md)).",
        "",
    ]
    for section in SCHEMA:
        parts += [f"## `[{section}]`", "", *_table_rows(section), ""]
    parts += [
        "## `[search]`",
        "",
        "Each field is one of: a fixed value (`lr_head = 1e-4`); a list of choices, searched as a categorical "
        "parameter (`backbone = [\"resnet50\", \"xception\"]`; a list of one is fixed); or a numeric range "
        "`{ low = ..., high = ..., log = true|false }`, searched as an integer when both ends are integers and as "
        "a float otherwise. A log range needs `low > 0`. Components also add their own parameters (for example "
        "`mini_cnn.base_filters`), searched in the ranges the plugin defines unless a table named after the "
        "component narrows or fixes them, in the same three forms: `[search.mini_cnn]` with `base_filters = 16` "
        "(fixed) or `base_filters = [8, 16]` (choices). A study can so keep a component's cost within its budget.",
        "",
        *_search_rows(),
        "",
        "`unfreeze_blocks` and `lr_finetune` only apply to backbones loaded with pretrained weights: a backbone "
        "trained from scratch trains every layer from the first epoch.",
        "",
    ]
    return "\n".join(parts)
