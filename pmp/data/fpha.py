"""FPHA (First-Person Hand Action benchmark), hand-pose part: 21 hand joints, 45 actions, official 1:1 split.

Files: `Hand_pose_annotation_v1/Subject_X/<action>/<idx>/skeleton.txt` (a line per frame: frame index
then x, y, z of 21 joints in mm, whitespace-separated) and `data_split_action_recognition.txt`
("Training N", N lines `Subject_X/<action>/<idx> <label>`, "Test M", M such lines).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .base import DataFormatError, SkeletonDataset, Split, read_table

log = logging.getLogger(__name__)

SPLIT_FILE = "data_split_action_recognition.txt"
POSE_DIR = "Hand_pose_annotation_v1"
FILE_NAME = "skeleton.txt"
JOINTS = 21
# Wrist, then the five MCPs, then PIP, DIP, TIP of thumb, index, middle, ring, pinky.
EDGES = [(0, m) for m in range(1, 6)] + [
    (a, b) for f in range(5) for a, b in ((1 + f, 6 + 3 * f), (6 + 3 * f, 7 + 3 * f), (7 + 3 * f, 8 + 3 * f))
]


class _Entry(NamedTuple):
    """One line of the split file."""

    rel: str  # "Subject_X/<action>/<idx>", the sequence folder under Hand_pose_annotation_v1
    label: int
    part: str  # "Training" or "Test"
    where: str  # "file:line", for error messages


def load_fpha(root: Path) -> SkeletonDataset:
    """Load the sequences the split file lists, in its order (training part first).

    Files the split file leaves out are recorded in `excluded` and logged (the 3 empty files of the
    release are expected; a non-empty one is warned about)."""
    root = Path(root)
    entries = _read_split_file(root / SPLIT_FILE)
    class_names = _class_names(root / SPLIT_FILE, entries)
    sequences, sources = [], []
    for e in entries:
        path = root / POSE_DIR / e.rel / FILE_NAME
        if not path.is_file():
            raise DataFormatError(f"{e.where}: split entry {e.rel!r} has no file {path}")
        try:
            frames = read_table(path, ncols=1 + JOINTS * 3, sep=None)[:, 1:]
        except DataFormatError as err:
            raise DataFormatError(f"{err} (listed at {e.where})") from None
        sequences.append(frames.reshape(len(frames), JOINTS, 3))
        sources.append(str(path))
    is_test = np.array([e.part == "Test" for e in entries])
    idx = np.arange(len(entries))
    return SkeletonDataset(
        name="fpha",
        sequences=sequences,
        labels=np.array([e.label for e in entries]),
        class_names=class_names,
        splits=[Split("1:1", idx[~is_test], idx[is_test])],
        layout="hand",
        sources=sources,
        edges=list(EDGES),
        excluded=_unlisted_files(root / POSE_DIR, {e.rel for e in entries}),
        root_joint=0,
        flip_pairs=[],  # one hand: its mirror image is a left hand, every joint keeps its name
    )


def _read_split_file(path: Path) -> list[_Entry]:
    """The entries, in file order, checking the headers' counts, the entry syntax and duplicates."""
    try:
        lines = path.read_text(encoding="utf-8").rstrip().split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise DataFormatError(f"{path}: cannot read the split file: {e}") from None
    entries: list[_Entry] = []
    seen: dict[str, str] = {}
    i = 0
    for part in ("Training", "Test"):
        where = f"{path}:{i + 1}"
        head = lines[i].split() if i < len(lines) else []
        if len(head) != 2 or head[0] != part or not head[1].isdigit():
            raise DataFormatError(f"{where}: expected a header '{part} <count>', got {' '.join(head)!r}")
        for i in range(i + 1, i + 1 + int(head[1])):
            where = f"{path}:{i + 1}"
            fields = lines[i].split() if i < len(lines) else []
            if len(fields) != 2 or fields[0] in ("Training", "Test"):
                raise DataFormatError(f"{where}: expected '<Subject_X/action/idx> <label>' ({part} {head[1]})")
            rel, label = fields
            if len(rel.split("/")) != 3 or not label.isdigit():
                raise DataFormatError(f"{where}: bad entry {lines[i]!r}")
            if rel in seen:
                raise DataFormatError(f"{where}: {rel!r} already listed at {seen[rel]}")
            seen[rel] = where
            entries.append(_Entry(rel, int(label), part, where))
        i += 1
    if i < len(lines):
        raise DataFormatError(f"{path}:{i + 1}: unexpected line after the Test entries")
    return entries


def _class_names(path: Path, entries: list[_Entry]) -> list[str]:
    """Class names = action folder names ordered by label id; each label must name one action only."""
    if not entries:
        raise DataFormatError(f"{path}: no entries")
    names: dict[int, tuple[str, str]] = {}
    labels: dict[str, tuple[int, str]] = {}
    for rel, label, _, where in entries:
        action = rel.split("/")[1]
        name, name_at = names.setdefault(label, (action, where))
        known, known_at = labels.setdefault(action, (label, where))
        if name != action:
            raise DataFormatError(f"{where}: label {label} is {action!r} here but {name!r} at {name_at}")
        if known != label:
            raise DataFormatError(f"{where}: {action!r} has label {label} here but {known} at {known_at}")
    missing = sorted(set(range(max(names) + 1)) - set(names))
    if missing:
        raise DataFormatError(f"{path}: labels {missing} never used: class ids must be 0..{max(names)}")
    return [names[k][0] for k in range(len(names))]


def _unlisted_files(pose_dir: Path, listed: set[str]) -> list[str]:
    """Skeleton files the split file does not list, logged: nothing is dropped silently."""
    excluded = []
    for path in sorted(pose_dir.glob(f"*/*/*/{FILE_NAME}")):
        if path.parent.relative_to(pose_dir).as_posix() in listed:
            continue
        excluded.append(str(path))
        if path.stat().st_size == 0:
            log.info("fpha: skipping %s: empty and not in the split file", path)
        else:
            log.warning("fpha: skipping %s: not in the split file", path)
    return excluded
