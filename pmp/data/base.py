"""The in-memory form every skeleton dataset is loaded into, whatever its file format.

Loaders (`sbu`, `fpha`, `generic`, `synthetic`) only parse and validate; everything downstream
(preprocessing, training, sweeps) sees a `SkeletonDataset` and a list of `Split`s. The strict text
table reader shared by the SBU and FPHA loaders lives here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np

LAYOUTS = ("hand", "two_person", "generic")


def persons_of(layout: str) -> int:
    """Bodies per frame: a "two_person" layout stacks two of V/2 joints, every other layout one."""
    return 2 if layout == "two_person" else 1


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
    `root_joint` is the joint, within each person, that centring uses (wrist for hands, torso for
    bodies). `flip_pairs` are the (left, right) joints of one person that a mirror image exchanges
    (the flip augmentation); [] declares that mirroring renames no joint (a mirrored right hand is a
    left hand with the same joints); None that the dataset does not say, which refuses the flip.
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
    root_joint: int = 0
    flip_pairs: list[tuple[int, int]] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.sequences) != len(self.labels):
            raise DataFormatError(
                f"{self.name}: {len(self.sequences)} sequences but {len(self.labels)} labels"
            )
        if not self.sources:
            self.sources = [f"{self.name}[{i}]" for i in range(len(self.sequences))]
        self._check()

    def _check(self) -> None:
        """Invariants every loader must meet; loaders report file-level errors before this runs."""
        if not self.sequences:
            raise DataFormatError(f"{self.name}: no sequences")
        if self.layout not in LAYOUTS:
            raise DataFormatError(f"{self.name}: layout {self.layout!r} is not one of {LAYOUTS}")
        shape = self.sequences[0].shape[1:]
        for i, seq in enumerate(self.sequences):
            if seq.ndim != 3 or seq.shape[0] < 1 or seq.shape[1:] != shape:
                raise DataFormatError(
                    f"{self.sources[i]}: sequence shape {seq.shape}, expected (T>=1, {shape[0]}, {shape[1]})"
                )
        v = shape[0]
        if self.layout == "two_person" and v % 2:
            raise DataFormatError(f"{self.name}: layout 'two_person' needs an even joint count, got {v}")
        joints = v // persons_of(self.layout)
        if not 0 <= self.root_joint < joints:
            raise DataFormatError(f"{self.name}: root_joint {self.root_joint} out of range for V={v}")
        if len(self.labels) and not (0 <= self.labels.min() and self.labels.max() < self.num_classes):
            raise DataFormatError(f"{self.name}: labels outside 0..{self.num_classes - 1}")
        for a, b in self.edges or []:
            if not (0 <= a < v and 0 <= b < v):
                raise DataFormatError(f"{self.name}: edge ({a}, {b}) outside 0..{v - 1}")
        problem = self.flip_pairs and flip_pairs_problem(self.flip_pairs, joints)
        if problem:
            raise DataFormatError(f"{self.name}: flip_pairs: {problem}")
        for s in self.splits:
            for part in (s.train, s.test):
                if len(part) == 0 or part.min() < 0 or part.max() >= len(self.sequences):
                    raise DataFormatError(f"{self.name}: split {s.name!r} has an empty or out-of-range part")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_nodes(self) -> int:
        return int(self.sequences[0].shape[1])

    @property
    def persons(self) -> int:
        return persons_of(self.layout)

    @property
    def num_channels(self) -> int:
        return int(self.sequences[0].shape[2])

    @property
    def lengths(self) -> np.ndarray:
        """Frames per sequence, (N,)."""
        return np.array([len(s) for s in self.sequences], dtype=np.int64)

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


def flip_pairs_problem(pairs: list[tuple[int, int]], joints: int) -> str | None:
    """What is wrong with mirror pairs, if anything: they must be two distinct joints of one person,
    each joint in one pair at most (the mirror is then a permutation that is its own inverse)."""
    seen: set[int] = set()
    for a, b in pairs:
        if not (0 <= a < joints and 0 <= b < joints) or a == b:
            return f"pair ({a}, {b}) is not two joints of one person (0..{joints - 1})"
        if a in seen or b in seen:
            return f"pair ({a}, {b}) repeats a joint of another pair"
        seen |= {a, b}
    return None


def mirror_permutation(pairs: list[tuple[int, int]], joints: int, persons: int) -> np.ndarray:
    """The joint order of the mirror image (V,): each pair exchanged within every person's block."""
    one = np.arange(joints)
    for a, b in pairs:
        one[a], one[b] = b, a
    return np.concatenate([one + p * joints for p in range(persons)])


def fold_splits(fold_of: np.ndarray) -> list[Split]:
    """Cross-validation by fold id: fold k tests on its own sequences and trains on all the others.

    `fold_of[i]` is the (integer) fold of sequence i; splits come in sorted order, named by fold id."""
    idx = np.arange(len(fold_of))
    return [Split(str(f), idx[fold_of != f], idx[fold_of == f]) for f in np.unique(fold_of)]


def read_table(path: Path, ncols: int, sep: str | None) -> np.ndarray:
    """A strict numeric text table, (rows, ncols) float64.

    `sep` is the column separator (None: runs of whitespace). Every line must hold exactly `ncols`
    finite numbers; blank lines inside the table are errors, trailing ones are not. numpy's C parser
    does the work (FPHA has 6.7M numbers); any doubt sends the file to a line-by-line check that
    names the first bad line.
    """
    try:
        with open(path, encoding="utf-8") as fh:  # universal newlines: SBU files end lines with \r\n
            text = fh.read().rstrip()
    except FileNotFoundError:
        raise DataFormatError(f"{path}: missing file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataFormatError(f"{path}: cannot read: {e}") from None
    if not text:
        raise DataFormatError(f"{path}:1: empty file (no frames)")
    lines = text.split("\n")
    try:
        table = np.loadtxt(lines, delimiter=sep, comments=None, ndmin=2, dtype=np.float64)
    except ValueError as e:
        _raise_first_bad_line(path, lines, ncols, sep, fallback=str(e))
    if table.shape != (len(lines), ncols) or not np.isfinite(table).all():  # numpy skips blank lines
        _raise_first_bad_line(path, lines, ncols, sep, fallback=f"table of shape {table.shape}")
    return table


def _raise_first_bad_line(path: Path, lines: list[str], ncols: int, sep: str | None, fallback: str) -> NoReturn:
    """Raise DataFormatError for the first line that is not `ncols` finite numbers (or with
    `fallback` where numpy refused what Python's float() accepts)."""
    for lineno, line in enumerate(lines, start=1):
        fields = line.split(sep)
        if not line.strip():
            raise DataFormatError(f"{path}:{lineno}: empty line")
        if len(fields) != ncols:
            raise DataFormatError(f"{path}:{lineno}: {len(fields)} columns, expected {ncols}")
        for col, tok in enumerate(fields, start=1):
            try:
                value = float(tok)
            except ValueError:
                raise DataFormatError(f"{path}:{lineno}: column {col}: {tok.strip()!r} is not a number") from None
            if not math.isfinite(value):
                raise DataFormatError(f"{path}:{lineno}: column {col}: non-finite value {tok.strip()!r}")
    raise DataFormatError(f"{path}: {fallback}")
