"""Near duplicates: copies that were re-encoded, brightened, shifted or cropped a little.

Two steps, neither quadratic in Python:

1. Candidates. Each image gets a perceptual-hash embedding: the low-frequency DCT coefficients of its
   32-pixel grey thumbnail (the numbers a pHash thresholds into bits) without the DC term, plus the
   magnitudes of its lowest Fourier frequencies (unchanged by a shift), each part scaled to unit length so
   that brightness and contrast drop out. Its nearest neighbours in that space (scikit-learn
   ``NearestNeighbors``, brute force in BLAS-sized blocks) are the candidates: a copy's source is among its
   first few neighbours even after a shift and a crop.
2. Verification. Blood-cell images all look alike at low frequencies, so hash distances alone confuse
   different cells. Each candidate pair is compared on band-passed thumbnails (fine structure: the red-cell
   layout, chromatin) by normalised cross-correlation, maximised over shifts of up to ``MAX_SHIFT`` pixels
   and a 5% zoom either way. A pair is a near duplicate when that correlation reaches the threshold, its
   colour layouts (4 x 4 chromaticity) agree and its centres (the cell itself, zoomed in, in finer detail)
   correlate as well.
   The correlations of all pairs come from FFTs in batches.

Groups are the connected components of the verified pairs (exact duplicates merged first), split by complete
linkage where a component is a chain of small steps rather than copies of one image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.fft import dctn, irfft2, rfft2
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.neighbors import NearestNeighbors

from bcauto.audit.features import LUMA, band_pass, resize_matrix
from bcauto.audit.hashing import exact_duplicate_groups

THUMB = 32  # thumbnail side (pixels)
HASH_SIZE = 8  # DCT coefficients per axis in the embedding (a 64-bit pHash uses the same block)
FOURIER = 6  # lowest Fourier frequencies per axis whose magnitudes join the embedding
MAX_SHIFT = 3  # pixels of the thumbnail (about 9% of the image side)
ZOOM = 1.05  # a crop of up to ~5% per side and resize back is matched by zooming the other image
CENTRE_ZOOM = 1.6  # the centre view (the cell): the middle 1 / CENTRE_ZOOM of the image
# the centre is compared in finer detail (chromatin, granules): at the whole view's scale two different round
# cells on a plain background correlate like copies
CENTRE_THUMB = 48
CENTRE_SHIFT = 5  # pixels of the centre thumbnail (the same share of the side as MAX_SHIFT)
CENTRE_BAND = (0.6, 3.5)  # Gaussian blurs (centre-thumbnail pixels), finer than BAND
BAND = (0.7, 4.0)  # band-pass: Gaussian blurs (thumbnail pixels) subtracted from each other
NEIGHBOURS = 5  # candidates per image
THRESHOLD = 0.88  # band-passed correlation at or above which two images are near duplicates
ZOOM_MARGIN = 0.15  # pairs this far below the threshold unzoomed get the zoomed comparisons too
COLOUR_TOLERANCE = 0.15  # largest chromaticity difference (any channel, any cell of a 4 x 4 layout) allowed
LINK_MARGIN = 0.1  # within a group every two members must reach threshold - LINK_MARGIN (complete linkage)
MAX_LINKED = 200  # groups larger than this are kept whole, not re-clustered
LAYOUT = 4
_PAIRS_PER_BATCH = 4096


def near_duplicate_groups(images: np.ndarray, threshold: float = THRESHOLD, neighbours: int = NEIGHBOURS) -> np.ndarray:
    """One group id per image (0, 1, ... in order of first appearance); exact and near duplicates share an id,
    every other image has its own. This is the grouping that keeps copies on one side of a train/validation split.
    """
    views = _views(images, np.arange(len(images)))
    exact = _exact_groups_via_thumbnails(images, views[0])
    return near_duplicate_pairs(images, threshold, neighbours, exact, views).groups(exact, threshold)


def _exact_groups_via_thumbnails(images: np.ndarray, thumbs: np.ndarray) -> np.ndarray:
    """Exact-duplicate groups (as :func:`exact_duplicate_groups`), hashing the small thumbnails instead of the
    pixels and confirming each match byte for byte."""
    groups = exact_duplicate_groups(thumbs)
    first = np.unique(groups, return_index=True)[1][groups]
    for i in np.flatnonzero(first != np.arange(len(images))):
        if not np.array_equal(images[i], images[first[i]]):
            first[i] = i  # same thumbnail, other pixels: not a copy
    return np.unique(first, return_inverse=True)[1].ravel().astype(np.int64)


@dataclass(frozen=True)
class NearPairs:
    """Compared pairs (K x 2 image indices, i < j), their band-passed correlation and colour-layout difference."""

    pairs: np.ndarray
    similarity: np.ndarray
    colour_difference: np.ndarray

    def matches(self, threshold: float = THRESHOLD, tolerance: float = COLOUR_TOLERANCE) -> np.ndarray:
        """Which pairs are near duplicates."""
        return (self.similarity >= threshold) & (self.colour_difference <= tolerance)

    def groups(self, exact_groups: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
        """Group id per image: connected components of the matching pairs (exact copies merged), each split by
        complete linkage so that every two members of a group are alike (``threshold - LINK_MARGIN``): a chain
        of small steps (A like B like C ...) does not make A and Z copies."""
        n = len(exact_groups)
        matched = self.matches(threshold)
        ids = groups_from_pairs(n, self.pairs[matched], exact_groups)
        first = np.unique(exact_groups, return_index=True)[1][exact_groups]  # each image's exact-copy representative
        sizes = np.bincount(ids)
        big = [g for g in np.flatnonzero(sizes > 2) if len(np.unique(first[ids == g])) > 2]
        if not big:
            return ids
        similar = dict(
            zip(map(tuple, self.pairs.tolist()), np.where(self.colour_difference <= COLOUR_TOLERANCE, self.similarity, 0.0).tolist())
        )
        next_id = ids.max() + 1
        for g in big:
            members = np.unique(first[ids == g])
            if len(members) > MAX_LINKED:
                continue  # a huge tangle: kept whole (a leak-free split matters more than fine groups)
            parts = _complete_linkage(members, similar, threshold - LINK_MARGIN)
            for part in np.unique(parts)[1:]:
                chosen = np.isin(first, members[parts == part])
                ids[chosen] = next_id
                next_id += 1
        _, first_member, inverse = np.unique(ids, return_index=True, return_inverse=True)
        return np.argsort(np.argsort(first_member))[inverse]


def _complete_linkage(members: np.ndarray, similar: dict, link: float) -> np.ndarray:
    """Cluster labels of ``members`` (sorted image indices): complete linkage, every pair in a cluster >= ``link``."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    k = len(members)
    distance = np.ones((k, k))
    np.fill_diagonal(distance, 0.0)
    for a in range(k):
        for b in range(a + 1, k):
            distance[a, b] = distance[b, a] = 1.0 - similar.get((int(members[a]), int(members[b])), 0.0)
    labels = fcluster(linkage(squareform(np.clip(distance, 0, None), checks=False), "complete"), 1.0 - link, criterion="distance")
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[inverse]  # the cluster of the first member is 0


def groups_from_pairs(n: int, pairs: np.ndarray, exact_groups: np.ndarray) -> np.ndarray:
    """Connected components of ``pairs`` (K x 2 indices) over ``n`` images, exact-duplicate groups merged;
    ids numbered in order of each group's first image."""
    first = np.unique(exact_groups, return_index=True)[1]  # each exact group's first image
    links = np.concatenate([pairs.reshape(-1, 2), np.stack([first[exact_groups], np.arange(n)], 1)])
    graph = coo_matrix((np.ones(len(links)), (links[:, 0], links[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, first_member, inverse = np.unique(labels, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first_member))[inverse]


def near_duplicate_pairs(
    images: np.ndarray, threshold: float = THRESHOLD, neighbours: int = NEIGHBOURS, exact_groups: np.ndarray | None = None, views=None
) -> NearPairs:
    """Compared pairs over distinct contents, with their similarities (before thresholding).

    Byte-identical copies are compared once, through their first occurrence. Candidates are each image's
    ``neighbours`` nearest in the hash embedding; where matching pairs connect more than two images, every
    pair among those is compared as well (for :meth:`NearPairs.groups`). ``threshold`` only decides which
    pairs get the extra comparisons (zoom, centre) that can matter for it. ``views``: the images' thumbnails
    and layouts when already computed (``_views`` of all images).
    """
    exact = exact_duplicate_groups(images) if exact_groups is None else exact_groups
    unique = np.unique(exact, return_index=True)[1]
    if len(unique) < 2:
        return NearPairs(np.zeros((0, 2), np.int64), np.zeros(0), np.zeros(0))
    views = _views(images, unique) if views is None else tuple(v[unique] for v in views)
    local = candidate_pairs(hash_embedding(views[0]), neighbours)
    similarity, difference = _compare(images, unique, views, local, threshold, threshold)
    extra = _pairs_within_components(len(unique), local, (similarity >= threshold) & (difference <= COLOUR_TOLERANCE))
    if len(extra):
        more_similarity, more_difference = _compare(images, unique, views, extra, threshold, threshold - LINK_MARGIN)
        local = np.concatenate([local, extra])
        similarity, difference = np.concatenate([similarity, more_similarity]), np.concatenate([difference, more_difference])
    return NearPairs(unique[local], similarity, difference)


def _compare(images, unique, views, pairs, threshold, floor) -> tuple[np.ndarray, np.ndarray]:
    """Similarity and colour difference of ``pairs`` (indices into ``unique``); the centre is compared for the
    pairs at or above ``floor`` (below it, a pair is no match anyway)."""
    plain_thumbs, zoomed_thumbs, layouts = views
    involved, inverse = np.unique(pairs, return_inverse=True)
    subset = inverse.reshape(-1, 2)  # the pairs, indexing ``involved``
    plain = _Prepared(plain_thumbs[involved])
    similarity = pair_similarity(plain, plain, subset)
    maybe = similarity >= threshold - ZOOM_MARGIN  # pairs that a zoom could lift over the threshold
    if maybe.any():
        few, few_pairs = np.unique(subset[maybe], return_inverse=True)
        few_pairs = few_pairs.reshape(-1, 2)
        plain_few, zoomed_few = _Prepared(plain_thumbs[involved[few]]), _Prepared(zoomed_thumbs[involved[few]])
        both = np.maximum(pair_similarity(zoomed_few, plain_few, few_pairs), pair_similarity(plain_few, zoomed_few, few_pairs))
        similarity[maybe] = np.maximum(similarity[maybe], both)
    difference = np.abs(layouts[pairs[:, 0]] - layouts[pairs[:, 1]]).max(axis=(1, 2, 3))
    passing = (similarity >= floor) & (difference <= COLOUR_TOLERANCE)
    if passing.any():  # the cell itself must match too, not only the background around it
        similarity[passing] = np.minimum(similarity[passing], _centre_similarity(images, unique, pairs[passing]))
    return similarity, difference


def _pairs_within_components(m: int, pairs: np.ndarray, matched: np.ndarray) -> np.ndarray:
    """Pairs (i < j) inside connected components of more than two of ``m`` items that ``pairs`` lacks."""
    graph = coo_matrix((np.ones(int(matched.sum())), (pairs[matched, 0], pairs[matched, 1])), shape=(m, m))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    known = set(map(tuple, pairs.tolist()))
    extra = []
    for label in np.flatnonzero((sizes > 2) & (sizes <= MAX_LINKED)):
        members = np.flatnonzero(labels == label)
        extra += [(a, b) for i, a in enumerate(members) for b in members[i + 1 :] if (a, b) not in known]
    return np.array(extra, np.int64).reshape(-1, 2)


def _centre_similarity(images: np.ndarray, unique: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """The pairs' similarity over the centre of the image (``CENTRE_ZOOM``), plain and zoomed either way."""
    involved, inverse = np.unique(pairs, return_inverse=True)
    subset = inverse.reshape(-1, 2)
    chosen = images[unique[involved]]
    plain = _Prepared(thumbnails(chosen, CENTRE_THUMB, CENTRE_ZOOM), CENTRE_SHIFT, CENTRE_BAND)
    zoomed = _Prepared(thumbnails(chosen, CENTRE_THUMB, CENTRE_ZOOM * ZOOM), CENTRE_SHIFT, CENTRE_BAND)
    views = ((plain, plain), (zoomed, plain), (plain, zoomed))
    return np.maximum.reduce([pair_similarity(a, b, subset, CENTRE_SHIFT) for a, b in views])


def _views(images: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grey thumbnails (plain and zoomed by ``ZOOM``) and 4 x 4 chromaticity layouts of ``images[indices]``."""
    size = images.shape[1]
    plain_r, zoom_r, layout_r = resize_matrix(size, THUMB), resize_matrix(size, THUMB, ZOOM), resize_matrix(size, LAYOUT)
    plain = np.empty((len(indices), THUMB, THUMB), np.float32)
    zoomed = np.empty_like(plain)
    layouts = np.empty((len(indices), LAYOUT, LAYOUT, 3), np.float32)
    everything = len(indices) == len(images) and bool((indices == np.arange(len(images))).all())
    for start in range(0, len(indices), 1024):
        part = slice(start, start + 1024)
        chunk = (images[part] if everything else images[indices[part]]).astype(np.float32)
        n = len(chunk)
        grey = chunk @ LUMA
        plain[part] = plain_r @ grey @ plain_r.T
        zoomed[part] = zoom_r @ grey @ zoom_r.T
        rows = (layout_r @ chunk.reshape(n, size, size * 3)).reshape(n, LAYOUT, size, 3)
        coarse = (rows.transpose(0, 1, 3, 2) @ layout_r.T).transpose(0, 1, 3, 2)  # n x 4 x 4 x 3
        layouts[part] = coarse / (coarse.sum(-1, keepdims=True) + 1.0)
    return plain, zoomed, layouts


def thumbnails(images: np.ndarray, size: int = THUMB, zoom: float = 1.0) -> np.ndarray:
    """Grey ``size``-pixel thumbnails (area averaging; ``zoom`` > 1 crops the centre first), float32 N x size x size."""
    r = resize_matrix(images.shape[1], size, zoom)
    out = np.empty((len(images), size, size), np.float32)
    for start in range(0, len(images), 1024):
        out[start : start + 1024] = r @ (images[start : start + 1024].astype(np.float32) @ LUMA) @ r.T
    return out


def hash_embedding(thumbs: np.ndarray) -> np.ndarray:
    """The candidates' embedding: pHash coefficients (the top-left ``HASH_SIZE`` x ``HASH_SIZE`` DCT block
    without DC) and the log magnitudes of the lowest Fourier frequencies (``FOURIER`` per axis and sign, which a
    shift leaves alone), each part of unit length."""
    n = len(thumbs)
    coefficients = dctn(thumbs, axes=(1, 2), norm="ortho")[:, :HASH_SIZE, :HASH_SIZE].reshape(n, -1)[:, 1:]
    spectrum = np.abs(rfft2(thumbs - thumbs.mean(axis=(1, 2), keepdims=True)))
    magnitudes = np.log1p(
        np.concatenate([spectrum[:, :FOURIER, :FOURIER].reshape(n, -1), spectrum[:, 1 - FOURIER :, 1:FOURIER].reshape(n, -1)], 1)
    )
    magnitudes -= magnitudes.mean(axis=1, keepdims=True)
    return np.concatenate([_unit(coefficients), _unit(magnitudes)], 1).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def candidate_pairs(embedding: np.ndarray, neighbours: int) -> np.ndarray:
    """Unique pairs (i < j) of each point with its ``neighbours`` nearest others."""
    k = min(neighbours + 1, len(embedding))
    _, index = NearestNeighbors(n_neighbors=k).fit(embedding).kneighbors(embedding)
    a = np.repeat(np.arange(len(embedding)), k - 1)
    b = index[:, 1:].ravel()
    pairs = np.stack([np.minimum(a, b), np.maximum(a, b)], 1)
    return np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0)


def band_passed(thumbs: np.ndarray, band_sigmas: tuple[float, float] = BAND) -> np.ndarray:
    """Fine structure only (difference of two blurs), zero mean, unit mean square per image."""
    band = band_pass(thumbs, *band_sigmas)
    band -= band.mean(axis=(1, 2), keepdims=True)
    band /= np.sqrt((band**2).mean(axis=(1, 2), keepdims=True)) + 1e-3
    return band


class _Prepared:
    """Band-passed thumbnails with what every pair comparison needs: their FFT and summed squares."""

    def __init__(self, thumbs: np.ndarray, max_shift: int = MAX_SHIFT, band_sigmas: tuple[float, float] = BAND):
        band = band_passed(thumbs, band_sigmas)
        self.size, self.pad = band.shape[1], band.shape[1] + max_shift
        self.spectrum = rfft2(band, s=(self.pad, self.pad))
        self.table = np.zeros((len(band), self.size + 1, self.size + 1), np.float32)
        self.table[:, 1:, 1:] = np.cumsum(np.cumsum(band * band, axis=1), axis=2)


def pair_similarity(a: _Prepared, b: _Prepared, pairs: np.ndarray, max_shift: int = MAX_SHIFT) -> np.ndarray:
    """Normalised cross-correlation of ``a``'s image i and ``b``'s image j for each pair (i, j), maximised over
    shifts of up to ``max_shift`` pixels: one inverse FFT per pair (zero padded: no wrap-around), each shift
    normalised by the energy of the two overlapping parts (summed-area tables)."""
    size, pad = a.size, a.pad
    shifts = np.arange(-max_shift, max_shift + 1)
    dy, dx = (s.ravel() for s in np.meshgrid(shifts, shifts, indexing="ij"))
    out = np.empty(len(pairs))
    for start in range(0, len(pairs), _PAIRS_PER_BATCH):
        i, j = pairs[start : start + _PAIRS_PER_BATCH, 0], pairs[start : start + _PAIRS_PER_BATCH, 1]
        corr = irfft2(a.spectrum[i] * np.conj(b.spectrum[j]), s=(pad, pad))[:, dy % pad, dx % pad]
        energy_a = _rect(a.table[i], _overlap(dy, size), _overlap(dx, size))
        energy_b = _rect(b.table[j], _overlap(-dy, size), _overlap(-dx, size))
        out[start : start + len(i)] = (corr / np.sqrt(np.maximum(energy_a * energy_b, 0) + 1e-6)).max(1)
    return out


def _overlap(shift: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) of the part of an axis that overlaps the other image after ``shift``."""
    return np.maximum(shift, 0), size + np.minimum(shift, 0)


def _rect(table: np.ndarray, rows, cols) -> np.ndarray:
    (y0, y1), (x0, x1) = rows, cols
    return table[:, y1, x1] - table[:, y0, x1] - table[:, y1, x0] + table[:, y0, x0]
