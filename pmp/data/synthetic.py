"""A synthetic hand-gesture dataset: learnable, not trivial, identical for a given seed, made in milliseconds.

Each sequence is a 21-joint hand (FPHA joint order and edges) whose fingers curl over time. The
10 classes differ by which fingers curl, how many cycles, in which order (waves), or by a wrist
swipe or twist; every sequence also gets nuisances: random length (20-60 frames), speed, start phase,
amplitude, hand size, orientation, idle finger motion, wrist drift and joint noise. Some classes are
confusable on purpose (a wave's direction, slow vs fast pinch, one vs two tapping fingers).
"""

from __future__ import annotations

import numpy as np

from pmp.machine import check_allocation

from .base import SkeletonDataset, Split
from .fpha import EDGES

# Per class: curling fingers (thumb, index, middle, ring, pinky), cycles, phase lag between
# consecutive fingers (a wave), wrist twist amplitude (rad), wrist swipe amplitude (hand lengths).
CLASSES: list[tuple[str, tuple[int, ...], float, float, float, float]] = [
    ("index_tap",      (0, 1, 0, 0, 0), 2.0,  0.0, 0.0, 0.0),
    ("two_finger_tap", (0, 1, 1, 0, 0), 2.0,  0.0, 0.0, 0.0),
    ("grasp",          (1, 1, 1, 1, 1), 1.0,  0.0, 0.0, 0.0),
    ("wave_in",        (1, 1, 1, 1, 1), 1.5,  0.7, 0.0, 0.0),
    ("wave_out",       (1, 1, 1, 1, 1), 1.5, -0.7, 0.0, 0.0),
    ("pinch_slow",     (1, 1, 0, 0, 0), 1.0,  0.0, 0.0, 0.0),
    ("pinch_fast",     (1, 1, 0, 0, 0), 2.0,  0.0, 0.0, 0.0),
    ("swipe",          (0, 0, 0, 0, 0), 1.0,  0.0, 0.0, 0.6),
    ("twist",          (0, 0, 0, 0, 0), 1.0,  0.0, 0.8, 0.0),
    ("ring_pinky_tap", (0, 0, 0, 1, 1), 2.0,  0.0, 0.0, 0.0),
]  # fmt: skip

# Hand-local rest pose (fingers along +y, palm facing -z), in hand lengths.
_MCP = np.array([[-0.35, 0.30, 0.0], [-0.20, 0.90, 0.0], [0.0, 0.95, 0.0], [0.20, 0.90, 0.0], [0.38, 0.80, 0.0]])
_DIR = np.array([[-0.7, 0.7, 0.0], [-0.1, 1.0, 0.0], [0.0, 1.0, 0.0], [0.1, 1.0, 0.0], [0.2, 1.0, 0.0]])
_DIR /= np.linalg.norm(_DIR, axis=1, keepdims=True)
_CURL = np.array([[0.7, 0.2, -0.7], [0, 0, -1.0], [0, 0, -1.0], [0, 0, -1.0], [0, 0, -1.0]])  # thumb crosses the palm
_CURL /= np.linalg.norm(_CURL, axis=1, keepdims=True)
_BONES = np.array([[0.35, 0.30, 0.25], [0.45, 0.25, 0.20], [0.50, 0.30, 0.20], [0.45, 0.28, 0.20], [0.35, 0.20, 0.18]])
MAX_CURL = 0.6  # rad per finger joint at full flexion


def make_synthetic(
    seed: int = 0,
    num_sequences: int = 600,
    min_frames: int = 20,
    max_frames: int = 60,
    noise: float = 0.04,
) -> SkeletonDataset:
    """`num_sequences` balanced over the 10 classes; split "train/test" 2:1 within each class.
    `noise`: std of the per-joint gaussian noise, in hand lengths."""
    if num_sequences < 3 * len(CLASSES) or not 2 <= min_frames <= max_frames:
        raise ValueError(
            f"synthetic: need num_sequences >= {3 * len(CLASSES)} and 2 <= min_frames <= max_frames"
        )
    check_allocation(f"synthetic: {num_sequences} sequences of up to {max_frames} frames",
                     4 * 8 * num_sequences * max_frames * (len(EDGES) + 1) * 3)  # a tree: joints = edges + 1
    rng = np.random.default_rng(seed)
    n, k, tmax = num_sequences, len(CLASSES), max_frames
    labels = rng.permutation(np.arange(n) % k)
    fingers = np.array([c[1] for c in CLASSES], dtype=float)[labels]  # (N, 5)
    cycles, lag, twist, swipe = (np.array([c[i] for c in CLASSES])[labels] for i in range(2, 6))

    lengths = rng.integers(min_frames, max_frames + 1, n)
    t = np.arange(tmax)[None, :] / (lengths[:, None] - 1)  # (N, T) in [0, 1] over the real frames
    speed = rng.uniform(0.7, 1.4, n)
    phase = 2 * np.pi * (cycles * speed)[:, None] * t + rng.uniform(0, 0.5 * np.pi, n)[:, None]  # (N, T)

    # Finger curl (N, T, 5): the class's curling fingers plus idle motion of every finger.
    finger_phase = phase[:, :, None] - lag[:, None, None] * np.arange(5)
    curl = fingers[:, None, :] * (0.5 - 0.5 * np.cos(finger_phase)) * rng.uniform(0.5, 1.0, (n, 1, 1))
    idle_freq, idle_phase = rng.uniform(0.3, 2.0, (n, 1, 5)), rng.uniform(0, 2 * np.pi, (n, 1, 5))
    curl += 0.25 * (0.5 - 0.5 * np.cos(2 * np.pi * idle_freq * t[:, :, None] + idle_phase))
    hand = _pose(MAX_CURL * curl)  # (N, T, 21, 3)

    # Wrist: twist about the forearm (y), swipe along x, slow random drift.
    drift = rng.normal(0, 0.15, (n, 1, 3)) * t[:, :, None]
    psi = twist[:, None] * np.sin(phase) + rng.normal(0, 0.1, (n, 1)) * t
    hand = _rotate(hand, psi[:, :, None], axis=1)
    hand[..., 0] += (swipe[:, None] * np.sin(phase))[:, :, None]
    hand += drift[:, :, None, :]

    # Global nuisances: orientation (tilt up to 0.5 rad, yaw up to 60 degrees), joint noise,
    # size (in mm, like FPHA) and position.
    hand = _rotate(hand, rng.uniform(-0.5, 0.5, (n, 1, 1)), axis=0)
    hand = _rotate(hand, rng.uniform(-np.pi / 3, np.pi / 3, (n, 1, 1)), axis=1)
    size, position = rng.uniform(70, 100, (n, 1, 1, 1)), rng.normal(0, 100, (n, 1, 1, 3))
    hand = (hand + rng.normal(0, noise, hand.shape)) * size + position

    is_test = np.zeros(n, dtype=bool)
    for c in range(k):
        is_test[np.flatnonzero(labels == c)[2::3]] = True
    idx = np.arange(n)
    return SkeletonDataset(
        name="synthetic",
        sequences=[hand[i, : lengths[i]] for i in range(n)],
        labels=labels,
        class_names=[c[0] for c in CLASSES],
        splits=[Split("train/test", idx[~is_test], idx[is_test])],
        layout="hand",
        edges=list(EDGES),
        root_joint=0,
        flip_pairs=[],  # a hand: its mirror image curls the same fingers
    )


def _pose(curl: np.ndarray) -> np.ndarray:
    """Joint positions (..., 21, 3) from per-finger curl angles (..., 5); each finger joint bends by
    the same angle, so segment s points `s * curl` away from the rest direction."""
    angles = curl[..., None] * np.arange(1, 4)  # (..., 5, 3 segments)
    dirs = np.cos(angles)[..., None] * _DIR[:, None] + np.sin(angles)[..., None] * _CURL[:, None]
    chain = _MCP[:, None] + np.cumsum(_BONES[..., None] * dirs, axis=-2)  # (..., 5, 3, 3): PIP, DIP, TIP
    out = np.zeros(curl.shape[:-1] + (21, 3))
    out[..., 1:6, :] = _MCP
    out[..., 6:, :] = chain.reshape(curl.shape[:-1] + (15, 3))
    return out


def _rotate(x: np.ndarray, angle: np.ndarray, axis: int) -> np.ndarray:
    """Rotate points x (..., V, 3) about a coordinate axis by `angle` (broadcast over ..., V)."""
    i, j = (axis + 1) % 3, (axis + 2) % 3
    c, s = np.cos(angle), np.sin(angle)
    out = x.copy()
    out[..., i] = c * x[..., i] - s * x[..., j]
    out[..., j] = s * x[..., i] + c * x[..., j]
    return out
