"""SBU Kinect Interaction (clean v2.0): two persons x 15 joints, 8 interactions, 5 official folds.

Files: `SBU/<set>/<class>/<seq>/skeleton_pos.txt`, one row per frame, 91 comma-separated values
(frame index, then x, y, z of persons A's and B's 15 joints), x, y in [0, 1] and z in [0, 7.8125].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DataFormatError, SkeletonDataset, fold_splits, read_table

CLASS_NAMES = [
    "Approaching", "Departing", "Kicking", "Punching", "Pushing", "Hugging", "ShakingHands", "Exchanging",
]  # fmt: skip
FOLDS: dict[str, tuple[str, ...]] = {  # the official 5-fold protocol, by set (pair of participants)
    "1": ("s01s02", "s03s04", "s05s02", "s06s04"),
    "2": ("s02s03", "s02s07", "s03s05", "s05s03"),
    "3": ("s01s03", "s01s07", "s07s01", "s07s03"),
    "4": ("s02s01", "s02s06", "s03s02", "s03s06"),
    "5": ("s04s02", "s04s03", "s04s06", "s06s02", "s06s03"),
}
JOINTS = 15
TORSO = 2  # 0-based index of joint 3, TORSO
_BODY_EDGES = [  # HEAD-NECK-TORSO, arms from the neck, legs from the torso
    (0, 1), (1, 2), (1, 3), (3, 4), (4, 5), (1, 6), (6, 7), (7, 8),
    (2, 9), (9, 10), (10, 11), (2, 12), (12, 13), (13, 14),
]  # fmt: skip
FLIP_PAIRS = [(3, 6), (4, 7), (5, 8), (9, 12), (10, 13), (11, 14)]  # left/right shoulder, elbow, hand, hip, knee, foot
EDGES = _BODY_EDGES + [(a + JOINTS, b + JOINTS) for a, b in _BODY_EDGES]
FILE_NAME = "skeleton_pos.txt"


def denormalize(xyz: np.ndarray) -> np.ndarray:
    """The official de-normalisation (dataset README): x, y, z back to comparable (mm-like) units.

    Without it z would weigh ~3x more than x and y after scale normalisation."""
    out = np.empty_like(xyz)
    out[..., 0] = 1280.0 - xyz[..., 0] * 2560.0
    out[..., 1] = 960.0 - xyz[..., 1] * 1920.0
    out[..., 2] = xyz[..., 2] * 10000.0 / 7.8125
    return out


def load_sbu(root: Path, denormalized: bool = True) -> SkeletonDataset:
    """Load every sequence of the 21 sets under `root/SBU`; one split per official fold ("1".."5")."""
    base = Path(root) / "SBU"
    sequences, labels, folds, sources = [], [], [], []
    for fold, sets in FOLDS.items():
        for set_name in sets:
            set_dir = base / set_name
            if not set_dir.is_dir():
                raise DataFormatError(f"{set_dir}: missing set folder (SBU fold {fold})")
            for path in _sequence_files(set_dir):
                class_dir = path.parent.parent.name
                frames = read_table(path, ncols=1 + 2 * JOINTS * 3, sep=",")[:, 1:]
                xyz = frames.reshape(len(frames), 2 * JOINTS, 3)
                sequences.append(denormalize(xyz) if denormalized else xyz)
                labels.append(int(class_dir) - 1)
                folds.append(int(fold))
                sources.append(str(path))
    return SkeletonDataset(
        name="sbu",
        sequences=sequences,
        labels=np.array(labels),
        class_names=list(CLASS_NAMES),
        splits=fold_splits(np.array(folds)),
        layout="two_person",
        sources=sources,
        edges=list(EDGES),
        root_joint=TORSO,
        flip_pairs=list(FLIP_PAIRS),
    )


def _sequence_files(set_dir: Path) -> list[Path]:
    """The set's files, checking that every class folder is 01..08 and every sequence folder holds its
    file: nothing is skipped silently (hidden entries such as .DS_Store are ignored)."""
    files = []
    for class_dir in _visible(set_dir):
        name = class_dir.name
        if not (class_dir.is_dir() and len(name) == 2 and name.isdigit() and 1 <= int(name) <= len(CLASS_NAMES)):
            raise DataFormatError(f"{class_dir}: not a class folder 01..{len(CLASS_NAMES):02d}")
        for seq_dir in _visible(class_dir):
            files.append(seq_dir / FILE_NAME)
            if not files[-1].is_file():
                raise DataFormatError(f"{files[-1]}: missing file")
    if not files:
        raise DataFormatError(f"{set_dir}: no sequences")
    return files


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
