"""Figures of a sweep report, drawn on the Agg canvas directly (no pyplot state, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def accuracy_vs_density(
    curves: dict[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    dense: tuple[float, float] | None,
    path: Path,
    title: str,
    unseen: dict[str, set[float]] | None = None,
) -> Path:
    """One line per method over density = 1 - rate on a log axis; dense as a band.

    `curves`: method -> (rates, mean accuracies %, stds %); `dense`: (mean %, std %). A NaN std (one run)
    draws no error bar. Density decreases to the right, so the heavier the pruning, the further right.
    `unseen`: method -> rates a multi-rate method served without training at them (hollow markers).
    """
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    if dense is not None:
        mean, std = dense
        ax.axhline(mean, color="black", linestyle="--", label="dense")
        if not math.isnan(std):
            ax.axhspan(mean - std, mean + std, color="black", alpha=0.1)
    densities = []
    for method, (rates, means, stds) in curves.items():
        density = 1.0 - np.asarray(rates, dtype=float)
        err = np.nan_to_num(np.asarray(stds, dtype=float))
        hollow = [i for i, r in enumerate(rates) if r in (unseen or {}).get(method, ())]
        filled = [i for i in range(len(rates)) if i not in hollow]
        line = ax.errorbar(density, means, yerr=err, marker="o", markevery=filled, capsize=3, label=method)
        densities.extend(density)
        if hollow:
            ax.plot(density[hollow], np.asarray(means, dtype=float)[hollow], "o", markerfacecolor="white",
                    color=line[0].get_color(), label=f"{method}: rates not trained at")
    _density_axis(ax, densities)
    ax.set_ylabel("class-averaged accuracy (%)")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def _density_axis(ax: Any, densities: Sequence[float]) -> None:
    """Density = 1 - rate on a reversed log axis, ticks at the densities that were run."""
    if densities:
        ax.set_xlim(max(densities) * 1.5, min(densities) / 1.5)  # reversed; also valid for a single rate
        ax.set_xscale("log")
        ticks = sorted(set(densities))
        ax.set_xticks(ticks, [f"{d:g}" for d in ticks])  # written plainly
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("density = 1 - pruning rate (log scale)")
    ax.grid(True, which="both", alpha=0.3)


def paired_differences(diffs: dict[str, list[tuple[float, Any]]], reference: str, path: Path, title: str) -> Path:
    """One line per other method: the reference's mean paired lead (points) against density, with its
    95% t-interval as an error bar (none for a single pair), and the zero line that a claim must clear.

    `diffs`: method -> [(rate, PairedDiff)], rates ascending."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    ax.axhline(0.0, color="black", linewidth=1)
    densities = []
    for i, (other, points) in enumerate(diffs.items()):
        density = 1.0 - np.asarray([r for r, _ in points], dtype=float)
        density *= 1.0 + 0.02 * (i - (len(diffs) - 1) / 2)  # a small offset so the bars do not overlap
        means = np.asarray([d.mean for _, d in points], dtype=float)
        lo = np.nan_to_num(means - np.asarray([d.lo for _, d in points], dtype=float))
        hi = np.nan_to_num(np.asarray([d.hi for _, d in points], dtype=float) - means)
        ax.errorbar(density, means, yerr=[lo, hi], marker="o", capsize=3, label=f"{reference} - {other}")
        densities.extend(1.0 - r for r, _ in points)
    _density_axis(ax, densities)
    ax.set_ylabel(f"paired difference, {reference} minus method (points)")
    ax.set_title(f"{title}: paired differences, 95% t-intervals")
    ax.legend(fontsize="small")
    return _save(fig, path)


def latent_histogram(hist: dict, path: Path, title: str) -> Path:
    """Latent-weight density of one layer before and after training, against the prior's density.

    `hist`: {"before": h, "after": h}, each h = {"layer", "centers", "density"} plus, for methods with a
    prior, "prior_density" and "band_edge" (the magnitude threshold a(r), drawn at ±a).
    """
    fig = Figure(figsize=(10, 3.8))
    for i, key in enumerate(("before", "after")):
        h = hist[key]
        ax = fig.add_subplot(1, 2, i + 1)
        centers = np.asarray(h["centers"], dtype=float)
        width = float(centers[1] - centers[0]) if len(centers) > 1 else 1.0
        ax.bar(centers, h["density"], width=width, alpha=0.6, label="latent weights")
        if h.get("prior_density") is not None:
            ax.plot(centers, h["prior_density"], color="red", label="prior density")
        if h.get("band_edge") is not None:
            for x in (-h["band_edge"], h["band_edge"]):
                ax.axvline(x, color="black", linestyle=":", label="band edge ±a(r)" if x < 0 else None)
        ax.set_title(f"{title}: {h.get('layer', '')} {key} training")
        ax.set_xlabel("latent weight")
        ax.set_ylabel("density")
        ax.legend(fontsize="small")
    return _save(fig, path)


def layer_density(densities: dict[str, dict[str, float]], rate: float, path: Path, title: str) -> Path:
    """Grouped bars: kept fraction of each layer per method, with the target density 1 - rate."""
    layers = sorted({layer for d in densities.values() for layer in d})
    width = 0.8 / max(1, len(densities))
    fig = Figure(figsize=(max(6.4, 0.35 * len(layers) * max(1, len(densities)) + 2), 4.8))
    ax = fig.add_subplot()
    x = np.arange(len(layers))
    for i, (method, d) in enumerate(densities.items()):
        ax.bar(x + i * width, [d.get(layer, np.nan) for layer in layers], width, label=method)
    ax.axhline(1.0 - rate, color="black", linestyle="--", label=f"target {1 - rate:g}")
    ax.set_xticks(x + width * (len(densities) - 1) / 2, layers, rotation=90, fontsize="x-small")
    ax.set_ylabel("density (kept fraction)")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return _save(fig, path)
