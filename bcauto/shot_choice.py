"""Which images of a new lab to label for ``bcauto adapt --choose-shots typical``: chosen from the images alone, by
the model's features, so a lab can label exactly those.

Typical clustering (TypiClust, Hacohen et al., ICML 2022), made for budgets as small as a few labels a class: the
images' features are split into as many k-means clusters as there are shots, and from each cluster the most typical
image is taken, the one whose nearest neighbours in the cluster lie closest. A random draw of a few dozen can
land on a class's odd members or miss one of its looks; one typical image per region of the feature space covers
the lab's cells as they usually look.
"""

from __future__ import annotations

import warnings

import numpy as np

from bcauto.errors import BcautoError

# --choose-shots of `bcauto adapt` (here, not in bcauto.adapt: the command line builds its help without Keras)
SHOT_CHOICES = {
    "random": "drawn at random with --seed, stratified by class (or --per-class)",
    "typical": "the most typical image of each of --shots k-means clusters of the model's features (TypiClust), "
    "after the label-free step; labels unread",
}
NEIGHBOURS = 20  # as TypiClust: typicality is the inverse mean distance to this many nearest neighbours


def typicality(features: np.ndarray, neighbours: int = NEIGHBOURS) -> np.ndarray:
    """One value per row of ``features``: the inverse of its mean distance to its ``neighbours`` nearest other rows
    (fewer when there are fewer); a lone row gets 0."""
    from sklearn.neighbors import NearestNeighbors  # slow to import

    n = len(features)
    k = min(neighbours, n - 1)
    if k < 1:
        return np.zeros(n)
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(features).kneighbors(features)
    return 1.0 / (distances[:, 1:].mean(axis=1) + 1e-12)  # column 0 is the row itself


def typical_shots(features: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Indices (sorted) of ``shots`` images: the most typical (:func:`typicality`) of each of ``shots`` k-means
    clusters of the L2-normalized ``features`` (k-means++ seeded by ``seed``). When the images hold fewer distinct
    points than ``shots`` (duplicates), the clusters left empty are made up by the most typical images not chosen."""
    from sklearn.cluster import KMeans  # slow to import
    from sklearn.exceptions import ConvergenceWarning

    n = len(features)
    if shots < 1:
        raise BcautoError(f"--shots must be 1 or more, got {shots}")
    if shots >= n:
        raise BcautoError(f"--shots {shots} --choose-shots typical leaves no image to score among {n}")
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    with warnings.catch_warnings():  # fewer distinct points than clusters: made up for below
        warnings.simplefilter("ignore", ConvergenceWarning)
        clusters = KMeans(n_clusters=shots, n_init=10, random_state=seed).fit_predict(unit)
    typical = np.zeros(n)
    chosen = []
    for c in np.unique(clusters):
        members = np.flatnonzero(clusters == c)
        typical[members] = typicality(unit[members])
        chosen.append(members[np.argmax(typical[members])])
    spare = np.setdiff1d(np.arange(n), chosen)
    chosen += spare[np.argsort(-typical[spare], kind="stable")[: shots - len(chosen)]].tolist()
    return np.sort(np.asarray(chosen, np.int64))


def feature_model(model):
    """A model from ``model``'s input to the pooled features its classifier head reads: the ``head_gap`` layer
    bcauto puts before every head. An ensemble (whose pooling layers sit inside its members) is refused."""
    import keras

    names = {layer.name for layer in model.layers}
    if "head_gap" not in names:
        raise BcautoError(
            "choosing typical images to label (bcauto suggest, bcauto adapt --choose-shots typical) reads the features "
            "before the classifier head of a single model; this model has none at its top level (an ensemble from "
            "`bcauto refit --top K`?): use one of its members, or draw the shots at random (bcauto adapt --shots N)"
        )
    return keras.Model(model.inputs, model.get_layer("head_gap").output)


def choose_typical(model, images: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Indices (sorted) of :func:`typical_shots` of ``images`` on ``model``'s features (:func:`feature_model`), the
    images taken in the order of their contents: k-means++ draws its first centres by position, and the same images,
    listed in any order, must choose the same."""
    from bcauto.data.images import content_order
    from bcauto.evaluate import predict_probs

    order = content_order(images)
    return np.sort(order[typical_shots(predict_probs(feature_model(model), images[order]), shots, seed)])
