"""The in-memory form every skeleton dataset is loaded into, whatever its file format.

Loaders (`sbu`, `fpha`, `generic`, `synthetic`) only parse and validate; everything downstream
(preprocessing, training, sweeps) sees a `SkeletonDataset` and a list of `Split`s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DataFormatError(ValueError):
    """A dataset file is missing or malformed. The message names the file (and line or field)."""


@dataclass(frozen=True)
class Split:
    """One evaluation protocol unit: a train/test partition (a fold of cross-validation or a 1:1 split)."""

    name: str
    train: np.ndarray  # indices into SkeletonDataset.sequences
    test: np.ndarray


@dataclass
class SkeletonDataset:
    """Variable-length skeleton sequences with labels.

    `sequences[i]` has shape (T_i, V, C) with V = persons x joints (joints of person 0 first) and
    C coordinates (usually 3). `layout` tells preprocessing how to centre the data:
    "hand" (joint 0 is the wrist), "two_person" (two bodies of V/2 joints), or "generic".
    """

    name: str
    sequences: list[np.ndarray]
    labels: np.ndarray
    class_names: list[str]
    splits: list[Split]
    layout: str = "generic"
    sources: list[str] = field(default_factory=list)
    edges: list[tuple[int, int]] | None = None
    excluded: list[str] = field(default_factory=list)  # files knowingly skipped (logged by the loader)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.sequences) != len(self.labels):
            raise DataFormatError(
                f"{self.name}: {len(self.sequences)} sequences but {len(self.labels)} labels"
            )
        if not self.sources:
            self.sources = [f"{self.name}[{i}]" for i in range(len(self.sequences))]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_nodes(self) -> int:
        return int(self.sequences[0].shape[1])

    @property
    def num_channels(self) -> int:
        return int(self.sequences[0].shape[2])

    def split(self, name: str | int | None = None) -> Split:
        """A split by name, by position, or the first one when `name` is None."""
        if name is None:
            return self.splits[0]
        if isinstance(name, int) or (isinstance(name, str) and name.isdigit()):
            idx = int(name)
            for s in self.splits:  # folds are often named "1".."5": prefer the name
                if s.name == str(name):
                    return s
            if 0 <= idx < len(self.splits):
                return self.splits[idx]
        for s in self.splits:
            if s.name == str(name):
                return s
        names = ", ".join(s.name for s in self.splits)
        raise KeyError(f"{self.name}: no split {name!r}; available: {names}")
