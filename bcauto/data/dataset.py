"""The dataset every source returns, checked once, fingerprinted by content."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from bcauto.errors import BcautoError
from bcauto.text import plural


@dataclass(frozen=True)
class Dataset:
    """Images and labels ready for a study.

    Attributes:
        images: uint8 array N x S x S x 3 (S = the study's image size).
        labels: int64 array N, values in ``range(len(class_names))``.
        class_names: one name per class, in label order.
        source: where the data came from, for messages and logs (a path, ``synthetic``, ...).
        notes: notices produced while loading (conversions, skipped files), shown to the user and logged.
        item_names: one per image, where it is within ``source``: a path relative to a folder's root, an
            array and index of an .npz (``train_images[17]``); empty when the source has none (generated images).
        left_out: ``(name, why)`` for every file the source found but did not load (not an image, undecodable).
        domains: for data from several sources (labs, scanners), the index into ``domain_names`` of each image's
            source; None for data from one source.
        domain_names: one name per source, in ``--data`` order.
        class_names_given: False when the source had no class names and made them up (an .npz without a
            ``class_names`` array), so a model's classes cannot be matched to them by name.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str
    notes: tuple[str, ...] = field(default=())
    item_names: tuple[str, ...] = field(default=())
    left_out: tuple[tuple[str, str], ...] = field(default=())
    domains: np.ndarray | None = None
    domain_names: tuple[str, ...] = field(default=())
    class_names_given: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)

    def fingerprint(self) -> str:
        """A short hash of pixels, labels and class names: equal fingerprints mean equal data."""
        digest = hashlib.sha256()
        digest.update(repr((self.images.shape, self.class_names)).encode())
        digest.update(np.ascontiguousarray(self.images).data)
        digest.update(self.labels.astype(np.int64).tobytes())
        if self.domains is not None:  # the same images cut into other domains are other data for a domain split
            digest.update(repr(self.domain_names).encode() + self.domains.astype(np.int64).tobytes())
        return digest.hexdigest()[:16]

    def item_name(self, index: int) -> str | None:
        """Where image ``index`` is within the source (see ``item_names``), or None when the source has no names."""
        return self.item_names[index] if self.item_names else None

    def subset(self, indices: np.ndarray) -> Dataset:
        positions = np.arange(len(self.labels))[indices].tolist()  # integer indices or a boolean mask alike
        names = tuple(self.item_names[i] for i in positions) if self.item_names else ()
        domains = self.domains[indices] if self.domains is not None else None
        return Dataset(
            self.images[indices],
            self.labels[indices],
            self.class_names,
            self.source,
            self.notes,
            names,
            self.left_out,
            domains,
            self.domain_names,
            self.class_names_given,
        )


def validate_arrays(images, labels, where: str, class_names=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Check and normalise raw ``images`` and ``labels`` from ``where`` (a file name, for the messages).

    Returns uint8 RGB images (N x H x W x 3), int64 labels (N) and notices about conversions. Grayscale and
    RGBA are converted; float images in [0, 1] or [0, 255] are scaled; anything else is refused.
    """
    notes: list[str] = []
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype == object or labels.dtype == object:
        raise BcautoError(f"{where}: object arrays are not accepted (they could hold pickled code); save plain numeric arrays")
    if not (np.issubdtype(images.dtype, np.number) or images.dtype == bool):
        raise BcautoError(f"{where}: 'images' has non-numeric dtype {images.dtype}; expected uint8 pixels")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise BcautoError(f"{where}: 'images' has shape {images.shape}; expected N x H x W x 3 (rank 4), got rank {images.ndim}")
    channels = images.shape[-1]
    if channels not in (1, 3, 4):
        raise BcautoError(f"{where}: 'images' has {channels} channels (shape {images.shape}); expected 3 (RGB), 1 (grayscale) or 4 (RGBA)")
    if len(images) == 0:
        raise BcautoError(f"{where}: 'images' is empty")
    if images.dtype != np.uint8:
        dtype = images.dtype
        images, low, high = _to_uint8(images, where)
        notes.append(f"{where}: {dtype} pixels in [{low:g}, {high:g}] converted to uint8")
    if channels == 1:
        images = np.repeat(images, 3, axis=-1)
        notes.append(f"{where}: grayscale images converted to RGB")
    elif channels == 4:
        images = images[..., :3]
        notes.append(f"{where}: RGBA images converted to RGB (alpha dropped)")

    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise BcautoError(f"{where}: 'labels' has shape {labels.shape}; expected N or N x 1 integer class indices")
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.isfinite(labels).all() and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        else:
            raise BcautoError(f"{where}: 'labels' must be integer class indices, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if len(labels) != len(images):
        raise BcautoError(f"{where}: {plural(len(images), 'image')} but {plural(len(labels), 'label')}; they must match one to one")
    num_classes = len(class_names) if class_names is not None else int(labels.max()) + 1
    if labels.min() < 0 or labels.max() >= num_classes:
        raise BcautoError(f"{where}: labels must lie in 0..{num_classes - 1}, found values from {labels.min()} to {labels.max()}")
    return images, labels, notes


_CHUNK_VALUES = 1 << 22  # pixel values converted at a time: float temporaries of 16 MB, never full-size


def _to_uint8(images: np.ndarray, where: str) -> tuple[np.ndarray, float, float]:
    """Non-uint8 pixels checked (finite, within [0, 255]) and converted chunk by chunk; returns (uint8, low, high)."""
    step = max(1, _CHUNK_VALUES // images[0].size)
    bad, low, high = 0, np.inf, -np.inf
    for start in range(0, len(images), step):
        chunk = images[start : start + step].astype(np.float32, copy=False)
        finite = np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1)
        bad += int((~finite).sum())
        if finite.all():
            low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    if bad:
        raise BcautoError(f"{where}: 'images' contains NaN or infinite pixels in {bad} image(s)")
    if low < 0 or high > 255:
        raise BcautoError(f"{where}: pixel values span [{low:g}, {high:g}]; expected [0, 1] or [0, 255]")
    scale = 255.0 if high <= 1.0 and np.issubdtype(images.dtype, np.floating) else 1.0
    out = np.empty(images.shape, np.uint8)
    for start in range(0, len(images), step):
        chunk = images[start : start + step].astype(np.float32) * scale
        out[start : start + step] = np.clip(np.rint(chunk, out=chunk), 0, 255)
    return out, low, high
