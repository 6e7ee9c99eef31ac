"""The model directory a refit writes: the members as one classifier (their mean for an ensemble) and its
``bcauto-model.json`` describing what it expects, how it was trained and on which data."""

from __future__ import annotations

from typing import Any

import optuna

from bcauto.data import Dataset


def model_info(
    study: optuna.Study,
    study_file,
    cfg,
    data: Dataset,
    members: list[dict[str, Any]],
    chosen: list[optuna.trial.FrozenTrial],
    precision,
    components,
) -> dict[str, Any]:
    """The model directory's description: input, output, classes, the members and how each was trained, the data."""
    from bcauto import __version__
    from bcauto.study import environment_versions, plugin_versions

    info = {
        "class_names": list(data.class_names),
        "image_size": data.image_size,
        "input": "RGB images, pixel values 0-255 (uint8 or float), N x S x S x 3; the model scales them itself",
        "output": "class probabilities (softmax" + (", mean of the members'" if len(members) > 1 else "") + ")",
        "preprocessing": sorted({m["params"]["preprocessing"] for m in members}),
        "canonicalization": sorted({m["params"]["canonicalization"] for m in members}),
        "backbones": [m["params"]["backbone"] for m in members],
        "study": study.study_name,
        "study_file": str(study_file),
        "metric": cfg.study.metric,
        "trials": [m["trial"] for m in members],
        "ensemble": len(members) > 1,
        "members": members,
        "data": {
            "source": data.source,
            "fingerprint": data.fingerprint(),
            "images": len(data.labels),
            "class_counts": dict(zip(data.class_names, map(int, data.class_counts()))),
        },
        "precision": precision,
        "bcauto": __version__,
        "environment": environment_versions(),
        "plugins": plugin_versions(components),
    }
    # a member that learned nothing in the search is trained the same way here: say so in the model's info
    useless = [
        f"trial {t.number} of the search {t.user_attrs['prediction_problem']} This model is trained the same way."
        for t in chosen
        if t.user_attrs.get("prediction_problem")
    ]
    if useless:
        info["warnings"] = useless
    return info
