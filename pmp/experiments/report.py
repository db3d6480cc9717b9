"""Aggregate finished runs into `results.csv`, paper-style Markdown tables and plots.

Reads every `metrics.json` under a folder (recursively, so one report can cover several sweeps),
which makes the report independent of how the runs were launched. Accuracies in the CSV files are
fractions as in metrics.json; the Markdown table shows percentages, mean ± sample standard deviation
(ddof=1) over seeds and folds, and n, the number of runs in the cell.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .grid import extra_axes
from .sweep import METRICS, RUN_INFO, read_metrics

COLUMNS = [
    "dataset", "variant", "method", "rate", "seed", "fold", "class_avg_acc", "overall_acc",
    "soft_class_avg_acc", "achieved_rate", "epochs", "wall_s", "seen", "run",
]  # fmt: skip
SUMMARY_COLUMNS = ["dataset", "variant", "method", "rate", "n", "mean_acc", "std_acc", "epochs"]
METHOD_ORDER = ["dense", "pmp", "mrmp", "mp", "gmp", "lth", "snip"]
DEFAULT_DENSITY_RATE = 0.98


@dataclass
class RunRecord:
    """One finished run: its results.csv row and the full metrics (histograms, layer densities)."""

    row: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def group(self) -> tuple[str, str]:
        return self.row["dataset"], self.row["variant"]


@dataclass
class Cell:
    """Class-averaged accuracy of one (dataset, variant, method, rate) over its seeds and folds, in %."""

    dataset: str
    variant: str
    method: str
    rate: float
    n: int
    mean: float
    std: float  # sample std (ddof=1); NaN for a single run
    epochs: list[int]

    def summary_row(self) -> dict[str, Any]:
        """The summary.csv row: accuracies as fractions, like results.csv."""
        std = "" if math.isnan(self.std) else self.std / 100
        return {**vars(self), "mean_acc": self.mean / 100, "std_acc": std, "epochs": "/".join(map(str, self.epochs))}

    def text(self) -> str:
        spread = "" if math.isnan(self.std) else f" ± {self.std:.2f}"
        return f"{self.mean:.2f}{spread} (n={self.n})"


@dataclass
class Report:
    records: list[RunRecord]
    cells: list[Cell]
    markdown: str
    files: list[Path] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)  # metrics.json files that did not parse


def _variant(run_dir: Path) -> str:
    """Extra grid axes of a sweep run (from run.json), e.g. "pruning.scope=global"; "" otherwise."""
    try:
        axes = json.loads((run_dir / RUN_INFO).read_text())["axes"]
    except (OSError, ValueError, KeyError):
        return ""
    return ",".join(f"{k}={v}" for k, v in sorted(extra_axes(axes).items()))


def _method_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def _record_key(r: RunRecord) -> tuple:
    return (*r.group, _method_key(r.row["method"]), r.row["rate"], r.row["seed"] or 0, r.row["fold"])


def collect(runs_dir: str | Path) -> tuple[list[RunRecord], list[Path]]:
    """Every finished run under `runs_dir`, and the metrics files that could not be read.

    `fold` is the split name where a dataset's runs span several splits (SBU's folds), else empty."""
    runs_dir = Path(runs_dir)
    records, unreadable = [], []
    for path in sorted(runs_dir.rglob(METRICS)):
        m = read_metrics(path.parent)
        if m is None:
            unreadable.append(path)
            continue
        row = {k: m.get(k) for k in COLUMNS}
        row.update(
            variant=_variant(path.parent),
            rate=0.0 if m.get("method") == "dense" else m.get("rate"),
            fold="" if m.get("split") is None else str(m["split"]),
            run=str(path.parent.relative_to(runs_dir)),
        )
        records += [RunRecord(r, m) for r in _served_rows(row, m)]
    splits: dict[str, set[str]] = defaultdict(set)
    for r in records:
        splits[r.row["dataset"]].add(r.row["fold"])
    for r in records:  # one split per dataset (FPHA's 1:1) is a protocol, not cross-validation folds
        if len(splits[r.row["dataset"]]) == 1:
            r.row["fold"] = ""
    records.sort(key=_record_key)
    return records, unreadable


def _served_rows(row: dict[str, Any], m: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per rate a multi-rate run (mrmp) serves, marked seen (trained) or not; else `row`."""
    if not m.get("rates"):
        return [row]
    return [{**row, "rate": v["rate"], "class_avg_acc": v["class_avg_acc"], "overall_acc": v["overall_acc"],
             "soft_class_avg_acc": None, "achieved_rate": v["pruned"] / m["prunable"], "seen": v["seen"]}
            for v in m["rates"].values()]


def summarize(records: list[RunRecord]) -> list[Cell]:
    """Mean and sample std of the class-averaged accuracy per (dataset, variant, method, rate)."""
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in records:
        groups[(*r.group, r.row["method"], float(r.row["rate"]))].append(r)
    cells = []
    for (dataset, variant, method, rate), rs in groups.items():
        accs = [100.0 * r.row["class_avg_acc"] for r in rs]
        std = statistics.stdev(accs) if len(accs) > 1 else math.nan
        epochs = sorted({int(r.row["epochs"]) for r in rs if r.row["epochs"] is not None})
        cells.append(Cell(dataset, variant, method, rate, len(accs), statistics.fmean(accs), std, epochs))
    return sorted(cells, key=lambda c: (c.dataset, c.variant, _method_key(c.method), c.rate))


def _by_group(cells: list[Cell]) -> dict[tuple[str, str], list[Cell]]:
    out: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    for c in cells:
        out[(c.dataset, c.variant)].append(c)
    return out


def _title(group: tuple[str, str]) -> str:
    dataset, variant = group
    return f"{dataset} ({variant})" if variant else dataset


def _slug(group: tuple[str, str]) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", "_".join(g for g in group if g)).strip("_")


def markdown_table(cells: list[Cell]) -> str:
    """Rows: pruning rates (0 % = dense reference); columns: methods; last row: epochs per method."""
    methods = sorted({c.method for c in cells}, key=_method_key)
    rates = sorted({c.rate for c in cells})
    at = {(c.method, c.rate): c for c in cells}
    lines = ["| Pruning rate | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for rate in rates:
        label = f"{100 * rate:g} %" + (" (dense)" if rate == 0 else "")
        texts = [at[(m, rate)].text() if (m, rate) in at else "" for m in methods]
        lines.append(f"| {label} | " + " | ".join(texts) + " |")
    epochs = {m: sorted({e for c in cells if c.method == m for e in c.epochs}) for m in methods}
    lines.append("| *epochs* | " + " | ".join("/".join(map(str, epochs[m])) for m in methods) + " |")
    return "\n".join(lines)


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _closest(rates: set[float], target: float) -> float:
    return min(rates, key=lambda r: (abs(r - target), -r))


def _group_plots(
    group: tuple[str, str], records: list[RunRecord], cells: list[Cell], plot_dir: Path, density_rate: float
) -> list[Path]:
    """Accuracy vs density; at the rate closest to `density_rate`: PMP latent histogram, per-layer density."""
    from . import plots  # matplotlib: imported here, not in every sweep worker that imports this package

    slug, title = _slug(group), _title(group)
    dense = next(((c.mean, c.std) for c in cells if c.method == "dense"), None)
    curves = {}
    for method in dict.fromkeys(c.method for c in cells if c.method != "dense"):
        cs = [c for c in cells if c.method == method]  # sorted by rate
        curves[method] = ([c.rate for c in cs], [c.mean for c in cs], [c.std for c in cs])
    unseen: dict[str, set[float]] = defaultdict(set)  # multi-rate runs' rates outside their training rates
    for r in records:
        if r.row.get("seen") is False:
            unseen[r.row["method"]].add(float(r.row["rate"]))
    files = [plots.accuracy_vs_density(curves, dense, plot_dir / f"accuracy_{slug}.png", title, unseen)]

    # per-layer densities are recorded at a run's headline rate only (a multi-rate run serves others)
    pruned = [r for r in records if r.row["method"] != "dense" and r.row["rate"] == r.metrics.get("rate")]
    if not pruned:
        return files
    rate = _closest({float(r.row["rate"]) for r in pruned}, density_rate)
    at_rate = [r for r in pruned if float(r.row["rate"]) == rate]
    hist_runs = [r for r in at_rate if r.row["method"] == "pmp" and r.metrics.get("latent_hist")]
    if hist_runs:
        run = hist_runs[0]  # records are sorted: lowest seed and fold first
        path = plot_dir / f"latent_hist_{slug}.png"
        files.append(plots.latent_histogram(run.metrics["latent_hist"], path, f"PMP {run.row['run']}"))
    densities: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in at_rate:
        for layer, d in (r.metrics.get("layer_density") or {}).items():
            densities[r.row["method"]][layer].append(d)
    if densities:
        means = {m: {k: statistics.fmean(v) for k, v in d.items()} for m, d in densities.items()}
        path = plot_dir / f"layer_density_{slug}_r{rate:g}.png"
        files.append(plots.layer_density(means, rate, path, f"{title}: per-layer density at rate {rate:g}"))
    return files


def report(
    runs_dir: str | Path, out_dir: str | Path | None = None, density_rate: float = DEFAULT_DENSITY_RATE
) -> Report:
    """Write results.csv, summary.csv, results.md and plots/ (into `runs_dir/report` by default) for
    every finished run under `runs_dir`.

    `density_rate`: the pruning rate of the per-layer density and latent-histogram plots (the closest
    rate present is used when it was not run).
    """
    runs_dir = Path(runs_dir)
    out = Path(out_dir) if out_dir is not None else runs_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    records, unreadable = collect(runs_dir)
    cells = summarize(records)
    files = [
        _write_csv(out / "results.csv", COLUMNS, [r.row for r in records]),
        _write_csv(out / "summary.csv", SUMMARY_COLUMNS, [c.summary_row() for c in cells]),
    ]

    sections = [
        "# Results",
        "",
        f"Class-averaged accuracy (%) of {len(records)} finished runs under `{runs_dir}`: mean ± sample "
        "standard deviation (ddof=1) over seeds and folds, n = runs per cell. The 0 % row is the dense "
        "reference; the last row gives the training epochs of each method.",
    ]
    for group, group_cells in _by_group(cells).items():
        group_records = [r for r in records if r.group == group]
        plot_files = _group_plots(group, group_records, group_cells, out / "plots", density_rate)
        files += plot_files
        sections += ["", f"## {_title(group)}", "", markdown_table(group_cells)]
        sections += [f"\n![{p.stem}](plots/{p.name})" for p in plot_files]
    if unreadable:
        sections += ["", "Unreadable metrics files (skipped): " + ", ".join(f"`{p}`" for p in unreadable)]
    markdown = "\n".join(sections) + "\n"
    (out / "results.md").write_text(markdown)
    files.append(out / "results.md")
    return Report(records, cells, markdown, files, unreadable)
