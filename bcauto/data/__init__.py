"""Data: the in-memory dataset every source returns, its fingerprint, and the train/validation split; and what a
data source needs to bring images to the study's size as the built-in sources do."""

from bcauto.data.dataset import Dataset, validate_arrays
from bcauto.data.images import enlarged_note, resize_images

__all__ = ["Dataset", "enlarged_note", "resize_images", "validate_arrays"]
