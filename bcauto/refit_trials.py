"""What a refit trains: the trials it takes, each trial's plan rebuilt, and the epochs and learning rates of each
phase, all read from the Optuna study (the search records them there; MLflow may be off or lost).

The plan of each trial is rebuilt by the search's own code (:func:`suggest_plan` on an
``optuna.trial.FixedTrial`` of the trial's parameters) and checked against the parameters the trial logged. There
is no validation set left to stop on, so each phase trains for the epochs the trial settled on: by default the
epochs whose weights the trial kept (``kept_epochs``: early stopping restores the lowest validation loss; a
fine-tune that never beat the frozen model is dropped), each at the learning rate the trial trained it with
(``epoch_lr``). With ``epochs="trained"``, or for a trial that recorded neither, the phases run for every epoch the
trial trained (its ``phase_epochs``) at a constant learning rate. With a number of epochs, :func:`cosine_schedule`
stretches the kept epochs to that many: a search that trains each trial briefly, to try many, leaves the
refit short of what its configuration can learn, and the refit has no validation set to stop on, so the rate
falls along a half cosine to near zero, the usual fixed-length schedule, instead of waiting for a plateau.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field

import optuna

from bcauto.config import StudyConfig
from bcauto.errors import BcautoError
from bcauto.search_space import plan_params, suggest_plan
from bcauto.training import TrainSettings, TrialPlan

EPOCH_MODES = ("best", "trained")
_OUT_OF_RANGE = re.compile(r"The value (?P<value>.+) of the parameter '(?P<name>.+)' is out of the range")


def plan_from_trial(
    trial: optuna.trial.FrozenTrial,
    cfg: StudyConfig,
    components,
    settings: TrainSettings | None = None,
    outside: list[str] | None = None,
) -> TrialPlan:
    """The plan ``trial`` ran, rebuilt by :func:`suggest_plan` from the trial's parameters.

    Refused (BcautoError) when the study file no longer yields that plan: a parameter it does not ask for, one
    the trial does not have, or a logged parameter that now comes out different. A value outside a range or list
    the file has narrowed since still gives the trial's plan; each such ``name = value`` is appended to
    ``outside`` (Optuna's warning about it is not shown).
    """
    if settings is None:
        from bcauto.study import settings_from

        settings = settings_from(cfg, cfg.study.seed, has_gpu=False)
    fixed = optuna.trial.FixedTrial(dict(trial.params), number=trial.number)
    where = f"trial {trial.number}: {cfg.path}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            plan = suggest_plan(fixed, cfg, components, settings)
        except ValueError as exc:  # FixedTrial: a parameter the trial never had
            raise BcautoError(
                f"{where} asks for a parameter the trial does not have ({exc}); the study file changed since "
                "the search; pass the study file the search ran with (--study)"
            ) from None
    for warning in caught:
        found = _OUT_OF_RANGE.match(str(warning.message))
        if found is None:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        elif outside is not None:
            outside.append(f"{found['name']} = {found['value']}")
    unused = sorted(set(trial.params) - set(fixed.params))
    if unused:
        raise BcautoError(
            f"{where} no longer asks for the trial's parameter(s) {', '.join(unused)}; the study file changed "
            "since the search; pass the study file the search ran with (--study)"
        )
    logged = trial.user_attrs.get("params", {})
    differing = [
        f"{key}: logged {logged[key]!r}, now {value!r}"
        for key, value in plan_params(plan, settings).items()
        if key in logged and not _same(logged[key], value)
    ]
    if differing:
        raise BcautoError(
            f"{where} gives another plan than the trial ran ({'; '.join(differing)}); pass the study file the search ran with (--study)"
        )
    return plan


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return str(a) == str(b)


def select_trials(study: optuna.Study, top: int) -> list[optuna.trial.FrozenTrial]:
    """The ``top`` best completed trials: by the objective, or for two objectives (clean, shifted) the Pareto front
    first, by the shifted score, then the other trials by the shifted score."""
    if top < 1:
        raise BcautoError(f"--top must be 1 or more, got {top}")
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if t.values]
    if len(study.directions) > 1:
        front = {t.number for t in study.best_trials}
        ranked = sorted(complete, key=lambda t: (t.number in front, t.values[-1]), reverse=True)
    else:
        ranked = sorted(complete, key=lambda t: t.values[0], reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)
    if len(ranked) < top:
        raise BcautoError(f"study {study.study_name!r} has {len(ranked)} completed trial(s); --top {top} needs {top}")
    return ranked[:top]


@dataclass
class PhaseSchedule:
    """Epochs of each phase, and the learning rate of each of those epochs (None: the plan's, constant)."""

    epochs: dict[str, int]
    learning_rates: dict[str, list[float] | None] = field(default_factory=dict)
    source: str = "phase_epochs"


def phase_schedule(trial: optuna.trial.FrozenTrial, mode: str = "best") -> PhaseSchedule:
    """How long each phase of the refit trains, and at which learning rates, from the trial's user attributes
    ``phase_epochs``, ``kept_epochs`` and ``epoch_lr`` (one learning rate per epoch the trial trained)."""
    if mode not in EPOCH_MODES:
        raise BcautoError(f"--epochs must be one of {', '.join(EPOCH_MODES)}, got {mode!r}")
    attrs = trial.user_attrs
    trained = {k: int(v) for k, v in attrs.get("phase_epochs", {}).items()}
    if not trained.get("head"):
        raise BcautoError(f"trial {trial.number} has no phase_epochs; it was not run by this version of bcauto")
    head, finetune = trained["head"], trained.get("finetune", 0)
    constant = {"head": None, "finetune": None}
    if mode == "trained":
        return PhaseSchedule({"head": head, "finetune": finetune}, constant, "phase_epochs")
    kept, rates = attrs.get("kept_epochs"), attrs.get("epoch_lr")
    if not kept or not rates or len(rates) < head + finetune:
        return PhaseSchedule(
            {"head": head, "finetune": finetune},
            constant,
            "every epoch the trial trained at a constant learning rate: the trial recorded no kept epochs",
        )
    epochs = {"head": int(kept["head"]), "finetune": int(kept.get("finetune", 0))}
    learning_rates = {
        "head": [float(r) for r in rates[: epochs["head"]]],
        "finetune": [float(r) for r in rates[head : head + epochs["finetune"]]],
    }
    return PhaseSchedule(epochs, learning_rates, "the epochs the trial kept, at its learning rates")


def cosine_schedule(schedule: PhaseSchedule, total: int, start_rates: dict[str, float]) -> PhaseSchedule:
    """``schedule`` stretched to ``total`` epochs, shared between the phases in the proportions of its epochs; each
    phase's learning rate falls along a half cosine from its first rate (the trial's, else ``start_rates``, the
    plan's) towards zero: epoch ``e`` of ``n`` at ``rate * (1 + cos(pi * e / n)) / 2``."""
    if total < 1:
        raise BcautoError(f"a refit of a number of epochs needs 1 or more, got {total}")
    head, finetune = schedule.epochs.get("head", 0), schedule.epochs.get("finetune", 0)
    if finetune and total > 1:
        head_epochs = min(total - 1, max(1, round(total * head / (head + finetune))))
    else:
        head_epochs = total
    epochs = {"head": head_epochs, "finetune": total - head_epochs}
    learning_rates: dict[str, list[float] | None] = {}
    for phase, n in epochs.items():
        trial_rates = schedule.learning_rates.get(phase)
        start = trial_rates[0] if trial_rates else start_rates[phase]
        learning_rates[phase] = [start * (1 + math.cos(math.pi * e / n)) / 2 for e in range(n)]
    return PhaseSchedule(epochs, learning_rates, f"{total} epochs from the trial's, learning rate on a half cosine from the trial's first")


def describe_schedule(schedule: PhaseSchedule) -> str:
    """The epochs a member trains, in words: "epochs: head 12, fine-tuning 3 (the epochs the trial kept, ...)"."""
    source = "as the trial trained" if schedule.source == "phase_epochs" else schedule.source
    return f"epochs: head {schedule.epochs.get('head', 0)}, fine-tuning {schedule.epochs.get('finetune', 0)} ({source})"
