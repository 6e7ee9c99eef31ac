"""Data: the in-memory dataset every source returns, its fingerprint, and the train/validation split."""

from bcauto.data.dataset import Dataset, validate_arrays

__all__ = ["Dataset", "validate_arrays"]
