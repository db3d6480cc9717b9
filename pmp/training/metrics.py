"""Classification metrics; class-averaged accuracy is the paper's metric."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Metrics:
    class_avg_acc: float  # mean over classes of per-class recall (classes present in the test set)
    overall_acc: float
    per_class_acc: list[float | None]  # None for classes absent from the test set
    confusion: list[list[int]]  # rows: true class, columns: predicted class


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> Metrics:
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or y_true.size == 0:
        raise ValueError(f"need two equal-length non-empty label vectors, got {y_true.shape} and {y_pred.shape}")
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    support = confusion.sum(axis=1)
    per_class = [float(confusion[c, c] / support[c]) if support[c] else None for c in range(num_classes)]
    present = [a for a in per_class if a is not None]
    return Metrics(
        class_avg_acc=float(np.mean(present)),
        overall_acc=float((y_true == y_pred).mean()),
        per_class_acc=per_class,
        confusion=confusion.tolist(),
    )
