"""From a study file's [search] table and the components' own spaces to one trial's plan."""

from __future__ import annotations

from typing import Any

import optuna

from bcauto.config import Range, StudyConfig
from bcauto.model import HeadParams
from bcauto.training import TrainSettings, TrialPlan


class PrefixedTrial:
    """A view of a trial that prefixes parameter names, so each component owns its own names.

    Two policies may both call their knob ``strength`` with different ranges; Optuna sees
    ``randaugment.strength`` and ``stain.strength`` and keeps their distributions apart.
    """

    def __init__(self, trial: optuna.Trial, prefix: str, overrides: dict[str, Any] | None = None):
        self._trial = trial
        self._prefix = prefix
        self._overrides = overrides or {}

    def __getattr__(self, attr):
        method = getattr(self._trial, attr)
        if not attr.startswith("suggest_"):
            return method

        def suggest_one(name, *args, **kwargs):
            # the study file's [search.COMPONENT] table narrows or fixes a component's own parameter
            if name in self._overrides:
                return suggest(self._trial, f"{self._prefix}{name}", self._overrides[name])
            return method(f"{self._prefix}{name}", *args, **kwargs)

        return suggest_one


def suggest(trial: optuna.Trial, name: str, space: Any) -> Any:
    """A value for one search field: fixed values stay fixed, lists are categorical, ranges numeric."""
    if isinstance(space, Range):
        if isinstance(space.low, int) and isinstance(space.high, int):
            return trial.suggest_int(name, space.low, space.high, log=space.log)
        return trial.suggest_float(name, float(space.low), float(space.high), log=space.log)
    if isinstance(space, (list, tuple)):
        return space[0] if len(space) == 1 else trial.suggest_categorical(name, space)
    return space


def suggest_plan(trial: optuna.Trial, cfg: StudyConfig, components, settings: TrainSettings) -> TrialPlan:
    """Every decision of one trial, each component suggesting its own hyperparameters."""
    s = cfg.search
    backbone = components.backbones.get(suggest(trial, "backbone", s.backbone))
    augmentation = components.augmentations.get(suggest(trial, "augmentation", s.augmentation))
    imbalance = components.imbalance.get(suggest(trial, "imbalance", s.imbalance))
    canonicalizer = components.canonicalizers.get(suggest(trial, "canonicalization", s.canonicalization))
    # record fixed choices too, so every trial's params name its components
    for field, spec in (
        ("backbone", backbone),
        ("augmentation", augmentation),
        ("imbalance", imbalance),
        ("canonicalization", canonicalizer),
    ):
        trial.set_user_attr(field, spec.name)
    own = s.component_params
    backbone_params = backbone.search_space(PrefixedTrial(trial, f"{backbone.name}.", own.get(backbone.name)))
    if backbone.normalizations:
        norm = suggest(trial, "normalization", s.normalization)
        if norm != "default":
            backbone_params = {**backbone_params, "norm": norm}
    augmentation_params = augmentation.search_space(PrefixedTrial(trial, f"{augmentation.name}.", own.get(augmentation.name)))
    canonicalizer_params = canonicalizer.search_space(PrefixedTrial(trial, f"{canonicalizer.name}.", own.get(canonicalizer.name)))
    head = HeadParams(
        units1=int(suggest(trial, "head_units1", s.head_units1)),
        units2=int(suggest(trial, "head_units2", s.head_units2)),
        dropout=float(suggest(trial, "head_dropout", s.head_dropout)),
        l2=float(suggest(trial, "head_l2", s.head_l2)),
    )
    lr_head = float(suggest(trial, "lr_head", s.lr_head))
    pretrained = backbone.resolve_weights(settings.weights) is not None
    # without pretrained weights the whole net trains from the start: no unfreeze depth, no second rate
    unfreeze = suggest(trial, "unfreeze_blocks", s.unfreeze_blocks) if pretrained and settings.finetune_epochs else "all"
    lr_finetune = float(suggest(trial, "lr_finetune", s.lr_finetune)) if pretrained and unfreeze != 0 else 0.0
    loss = suggest(trial, "loss", s.loss)
    label_smoothing = float(suggest(trial, "label_smoothing", s.label_smoothing))
    return TrialPlan(
        backbone=backbone,
        augmentation=augmentation,
        imbalance=imbalance,
        head=head,
        lr_head=lr_head,
        lr_finetune=lr_finetune,
        unfreeze_blocks=unfreeze,
        backbone_params=backbone_params,
        augmentation_params=augmentation_params,
        loss=loss,
        label_smoothing=label_smoothing,
        canonicalizer=canonicalizer,
        canonicalizer_params=canonicalizer_params,
    )


def plan_params(plan: TrialPlan, settings: TrainSettings) -> dict[str, Any]:
    """The plan under the stable MLflow parameter names."""
    params = {
        "backbone": plan.backbone.name,
        "weights": plan.weights_for(settings) or "none",
        "preprocessing": plan.backbone.preprocessing,
        "augmentation": plan.augmentation.name,
        "canonicalization": plan.canonicalizer_name,
        "imbalance": plan.imbalance.name,
        "unfreeze_blocks": plan.unfreeze_blocks,
        "lr_head": plan.lr_head,
        "lr_finetune": plan.lr_finetune,
        "head.units1": plan.head.units1,
        "head.units2": plan.head.units2,
        "head.dropout": plan.head.dropout,
        "head.l2": plan.head.l2,
        "loss": plan.loss,
        "label_smoothing": plan.label_smoothing,
    }
    params.update({f"backbone.{k}": v for k, v in plan.backbone_params.items()})
    params.update({f"augmentation.{k}": v for k, v in plan.augmentation_params.items()})
    params.update({f"canonicalization.{k}": v for k, v in plan.canonicalizer_params.items()})
    return params
