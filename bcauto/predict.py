"""``bcauto predict``: class probabilities of a saved model for unlabelled images, written as CSV.

Inputs are image files, folders (searched recursively) and .npz files (an ``images`` array, or the only array), read
by :mod:`bcauto.data.inputs`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from bcauto.data.inputs import Source, chunks, collect_inputs, count_inputs
from bcauto.errors import BcautoError
from bcauto.files import written_whole


def predict_to_csv(
    bundle,
    inputs: list[str],
    out: str | Path,
    tta: bool = False,
    console=None,
    prepare: Callable[[np.ndarray], None] | None = None,
    skipped: list[str] | None = None,
    allowed: np.ndarray | None = None,
) -> int:
    """Write ``path, index, predicted, prob_<class>...`` rows for every input image; returns the number of rows.

    ``skipped``: None stops at the first undecodable image file with an error naming it; a list leaves such files
    out and describes each there.

    ``prepare``, when given, is called once with every input image (decoded first, all held in memory) before any is
    predicted: ``--adapt-bn`` recomputes the model's BatchNorm statistics on them.

    ``allowed`` (model class indices) restricts the predictions to those classes (``--classes``): the others'
    probabilities are written as 0 and the rest renormalised.
    """
    from bcauto.evaluate import predict_probs, restrict
    from bcauto.progress import transient_progress

    images, archives = collect_inputs(inputs)
    total = count_inputs(images, archives)
    if total == 0:
        raise BcautoError("no images to predict")
    classes = bundle.class_names
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    parts: Iterable[tuple[list[Source], np.ndarray]] = chunks(images, archives, bundle.image_size, skipped)
    if prepare is not None:
        parts = list(parts)
        prepare(np.concatenate([batch for _, batch in parts]))
    rows = 0
    progress = transient_progress(console)
    # written whole: a run stopped by a bad image leaves no CSV that looks like all the predictions, and an earlier
    # complete one in its place
    with written_whole(out) as partial, partial.open("w", newline="", encoding="utf-8") as handle, progress:
        writer = csv.writer(handle)
        writer.writerow(["path", "index", "predicted", *(f"prob_{name}" for name in classes)])
        task = progress.add_task("predicting", total=total)
        for sources, batch in parts:
            probs = restrict(predict_probs(bundle.model, batch, tta), allowed)
            for source, p in zip(sources, probs):
                writer.writerow(
                    [str(source.path), "" if source.index is None else source.index, classes[int(p.argmax())], *(f"{v:.6f}" for v in p)]
                )
            rows += len(sources)
            progress.update(task, advance=len(sources))
    return rows
