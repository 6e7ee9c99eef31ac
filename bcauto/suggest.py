"""``bcauto suggest``: which of a new lab's unlabelled images to label before ``bcauto adapt``, chosen from the images
alone by the model (the most typical image of each of ``--shots`` clusters of its features, after the label-free
step when asked: :func:`bcauto.shot_choice.typical_shots`), copied into a new folder for the lab to sort into one
subfolder per class. ``bcauto adapt MODEL --data THAT_FOLDER --pool THE_IMAGES`` then fine-tunes on them and reads the
other images unlabelled.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bcauto.bundle import load_bundle
from bcauto.data.inputs import Source, read_inputs
from bcauto.errors import BcautoError
from bcauto.evaluate import class_subset
from bcauto.shot_choice import choose_typical
from bcauto.test_time import label_free_step
from bcauto.text import plural

SUGGESTED_FILE = "suggested.csv"  # in the folder written: each copy and the image it was copied from


@dataclass
class SuggestRequest:
    """A resolved ``bcauto suggest`` invocation (the label-free options as ``bcauto adapt`` names them)."""

    model: str
    inputs: list[str]
    shots: int
    out: str
    seed: int = 0
    adapt_bn: bool = False
    adapt_im: bool = False
    classes: str | None = None


def suggest(request: SuggestRequest, console) -> list[Path]:
    """Choose ``request.shots`` images of ``request.inputs`` to label and copy them into the new folder
    ``request.out`` with :data:`SUGGESTED_FILE`; returns the copies. The model is adapted in memory only (among
    ``--classes``, then ``--adapt-im``/``--adapt-bn`` on all the images), as ``bcauto adapt --choose-shots typical``
    adapts it before choosing."""
    import keras

    from bcauto.model import restrict_classes

    out = Path(request.out).expanduser()
    if out.exists():
        raise BcautoError(f"--out {out} already exists; name a new folder for the images to label")
    keras.utils.set_random_seed(request.seed)  # before loading, as bcauto adapt does
    bundle = load_bundle(request.model)
    kept = class_subset(request.classes, bundle.class_names)
    model = bundle.model if kept is None else restrict_classes(bundle.model, kept)
    sources, images = read_inputs(request.inputs, bundle.image_size)
    if request.shots >= len(images):
        held = plural(len(images), "image")
        raise BcautoError(f"--shots {request.shots}: the inputs hold {held}; suggest fewer than that, or label them all")
    label_free_step(request, model, images, ", ".join(request.inputs), console)
    with console.status(f"choosing {plural(request.shots, 'typical image')} among {len(images)}"):
        chosen = choose_typical(model, images, request.shots, request.seed)
    return write_suggestions(out, [sources[i] for i in chosen], images[chosen])


def copy_name(rank: int, source: Source) -> str:
    """A name unique within the folder, that still says where the image came from."""
    if source.index is None:
        return f"{rank:03d}-{source.path.name}"
    return f"{rank:03d}-{source.path.stem}-{source.index}.png"


def write_suggestions(out: Path, sources: list[Source], images: np.ndarray) -> list[Path]:
    """Each image file copied as it is (an .npz row written as a PNG of the image at the model's size), and the list,
    into a folder made beside ``out`` and renamed to it once complete: a stopped run leaves no half-filled folder."""
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        names = []
        for rank, (source, image) in enumerate(zip(sources, images)):
            names.append(copy_name(rank, source))
            if source.index is None:
                shutil.copyfile(source.path, partial / names[-1])
            else:
                Image.fromarray(image).save(partial / names[-1])
        with (partial / SUGGESTED_FILE).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "source", "index"])
            for name, source in zip(names, sources):
                writer.writerow([name, str(source.path), "" if source.index is None else source.index])
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return [out / name for name in names]
