"""Skeleton datasets (SBU, FPHA, generic .npz, synthetic), preprocessing and augmentation."""

from .base import DataFormatError, SkeletonDataset, Split
from .generic import load_generic
from .preprocess import AugmentConfig, PreprocessConfig, augment, preprocess
from .registry import load_dataset, resolve_data_root
from .synthetic import make_synthetic

__all__ = [
    "AugmentConfig",
    "DataFormatError",
    "PreprocessConfig",
    "SkeletonDataset",
    "Split",
    "augment",
    "load_dataset",
    "load_generic",
    "make_synthetic",
    "preprocess",
    "resolve_data_root",
]
