"""Aggregate finished runs into `results.csv`, paper-style Markdown tables and plots.

Reads every `metrics.json` under a folder (recursively, so one report can cover several sweeps),
which makes the report independent of how the runs were launched. Accuracies in the CSV files are
fractions as in metrics.json; the Markdown table shows percentages, mean ± sample standard deviation
(ddof=1) over seeds and folds, and n, the number of runs in the cell.

Runs of two methods that share a seed and fold (and the table's variant) are paired: `paired.csv`
and the paired tables give, per rate, PMP minus each other method over those pairs (docs/sweeps.md);
each named variant of PMP (`pmp@global-lam0`) gets its own table against the methods that are not PMP.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmp.training.checkpoint import IntegrityError, read_sealed_json

from .grid import VARIANT_SEP, extra_axes, split_label
from .stats import PairedDiff, paired_diff
from .sweep import METRICS, RUN_INFO, read_metrics

COLUMNS = [
    "dataset", "variant", "method", "rate", "seed", "fold", "class_avg_acc", "overall_acc",
    "soft_class_avg_acc", "achieved_rate", "epochs", "wall_s", "seen", "run",
]  # fmt: skip
SUMMARY_COLUMNS = ["dataset", "variant", "method", "rate", "n", "mean_acc", "std_acc", "epochs"]
PAIRED_COLUMNS = [
    "dataset", "variant", "rate", "reference", "other", "n", "mean_diff", "std_diff", "t_lo", "t_hi",
    "boot_lo", "boot_hi", "wins", "ties", "losses", "unpaired_reference", "unpaired_other", "duplicates",
]  # fmt: skip
METHOD_ORDER = ["dense", "pmp", "mrmp", "mp", "gmp", "lth", "snip"]
DEFAULT_DENSITY_RATE = 0.98
REFERENCE = "pmp"  # the method every other one is paired against


@dataclass
class RunRecord:
    """One finished run: its results.csv row and the full metrics (histograms, layer densities)."""

    row: dict[str, Any]
    metrics: dict[str, Any]
    name: str = ""  # the sweep's named variant of the method (`lth@equal` -> "equal")
    axes: str = ""  # extra grid axes, e.g. "pruning.scope=global": each set is its own table

    @property
    def group(self) -> tuple[str, str]:
        return self.row["dataset"], self.axes

    @property
    def label(self) -> str:
        """The method's column in tables: `lth`, or `lth@equal` for a named variant."""
        return f"{self.row['method']}{VARIANT_SEP}{self.name}" if self.name else self.row["method"]

    @property
    def pair_key(self) -> tuple[Any, str]:
        """Runs of different methods with the same key (and group, rate) are paired."""
        return self.row["seed"], self.row["fold"]


@dataclass
class Cell:
    """Class-averaged accuracy of one (dataset, variant, method, rate) over its seeds and folds, in %."""

    dataset: str
    variant: str  # the extra grid axes of the table
    method: str  # the record label: a named variant is a column of its own
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
class Paired:
    """`reference` minus `other` at one rate of one table, over the runs that share a seed and fold.

    Runs without a partner are listed by key, not dropped silently (a missing or failed run);
    a key held by two runs of one method (two sweeps in one report) is ambiguous and left out."""

    dataset: str
    variant: str
    rate: float
    other: str
    stats: PairedDiff | None  # None: no pair
    unpaired_reference: list[str]
    unpaired_other: list[str]
    duplicates: list[str]
    reference: str = REFERENCE

    def row(self) -> dict[str, Any]:
        """The paired.csv row: differences in accuracy points (%)."""
        s = self.stats.to_dict() if self.stats else {"n": 0}
        s = {k: v for k, v in s.items() if k != "level"}
        return {**vars(self), **s, "mean_diff": s.get("mean"), "std_diff": s.get("std"),
                "t_lo": s.get("lo"), "t_hi": s.get("hi"),
                **{k: " ".join(getattr(self, k)) for k in ("unpaired_reference", "unpaired_other", "duplicates")}}


@dataclass
class Report:
    records: list[RunRecord]
    cells: list[Cell]
    markdown: str
    files: list[Path] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)  # metrics.json/run.json files that failed to parse or verify
    paired: list[Paired] = field(default_factory=list)
    variant_paired: list[Paired] = field(default_factory=list)  # each named PMP variant minus the non-PMP methods


def _variant(run_info: dict[str, Any] | None) -> tuple[str, str]:
    """A sweep run's (named variant, extra grid axes) from its run.json, e.g. ("equal", "") or
    ("", "pruning.scope=global"); ("", "") for runs made outside a sweep."""
    axes = (run_info or {}).get("axes")
    if not isinstance(axes, dict):
        return "", ""
    name = split_label(axes.get("pruning.method", ""))[1]
    return name, ",".join(f"{k}={v}" for k, v in sorted(extra_axes(axes).items()))


def _row_variant(variant: str) -> tuple[str, str]:
    """(named variant, extra grid axes) back from a results.csv `variant` cell."""
    parts = [p for p in (variant or "").split(",") if p]
    return ",".join(p for p in parts if "=" not in p), ",".join(p for p in parts if "=" in p)


def _method_key(label: str) -> tuple[int, str]:
    method = split_label(label)[0]
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), label)


def _record_key(r: RunRecord) -> tuple:
    return (*r.group, _method_key(r.label), r.row["rate"], r.row["seed"] or 0, r.row["fold"])


def _records(m: dict[str, Any], run_info: dict[str, Any] | None, run: str) -> list[RunRecord]:
    name, axes = _variant(run_info)
    row = {k: m.get(k) for k in COLUMNS}
    row.update(
        variant=",".join(v for v in (name, axes) if v),
        rate=0.0 if m.get("method") == "dense" else m.get("rate"),
        fold="" if m.get("split") is None else str(m["split"]),
        run=run,
    )
    return [RunRecord(r, m, name, axes) for r in _served_rows(row, m)]


def collect(runs_dir: str | Path, archives: list[Path] | None = None) -> tuple[list[RunRecord], list[Path]]:
    """Every finished run under `runs_dir`, then every run of the `archives` (pmp.experiments.archive)
    that is not there, and the files that could not be read.

    `fold` is the split name where a dataset's runs span several splits (SBU's folds), else empty."""
    from . import archive

    runs_dir = Path(runs_dir)
    records, unreadable, seen = [], [], set()
    for path in sorted(runs_dir.rglob(METRICS)):
        m = read_metrics(path.parent)
        if m is None:
            unreadable.append(path)
            continue
        try:
            run_info = read_sealed_json(path.parent / RUN_INFO) if (path.parent / RUN_INFO).is_file() else None
        except IntegrityError:  # its run would be reported under another variant
            unreadable.append(path.parent / RUN_INFO)
            continue
        run = str(path.parent.relative_to(runs_dir))
        seen.add(run)
        records += _records(m, run_info, run)
    for path in archives or []:
        for run, entry in archive.read(path).items():
            if run in seen:
                continue
            seen.add(run)
            if "metrics" in entry.docs:
                records += _records(entry.body("metrics"), entry.body("run_info"), run)
            else:  # a row-only entry: the results row without the run's histograms and densities
                records += [RunRecord({k: r.get(k) for k in COLUMNS}, {}, *_row_variant(r.get("variant", "")))
                            for r in entry.rows]
    splits: dict[str, set[str]] = defaultdict(set)
    for r in records:  # an archived row's empty fold is a report's blanked single split
        if r.row["fold"]:
            splits[r.row["dataset"]].add(r.row["fold"])
    for r in records:  # one split per dataset (FPHA's 1:1) is a protocol, not cross-validation folds
        if len(splits[r.row["dataset"]]) <= 1:
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
        groups[(*r.group, r.label, float(r.row["rate"]))].append(r)
    cells = []
    for (dataset, variant, method, rate), rs in groups.items():
        accs = [100.0 * r.row["class_avg_acc"] for r in rs]
        std = statistics.stdev(accs) if len(accs) > 1 else math.nan
        epochs = sorted({int(r.row["epochs"]) for r in rs if r.row["epochs"] is not None})
        cells.append(Cell(dataset, variant, method, rate, len(accs), statistics.fmean(accs), std, epochs))
    return sorted(cells, key=lambda c: (c.dataset, c.variant, _method_key(c.method), c.rate))


def _key_text(key: tuple[Any, str]) -> str:
    seed, fold = key
    return " ".join(p for p in ("" if seed is None else f"s{seed}", f"f{fold}" if fold else "") if p) or "-"


def _key_order(key: tuple[Any, str]) -> tuple:
    """Seeds in numeric order (s2 before s10), then folds."""
    seed, fold = key
    return (seed is None, seed if isinstance(seed, (int, float)) else 0, str(seed), fold)


def pair(records: list[RunRecord], reference: str = REFERENCE) -> list[Paired]:
    """`reference` minus every other method (dense included) at each rate, per table.

    Dense has one run per seed and fold, at rate 0: it is paired with the reference at every rate.
    Every method of the table gets a row at every rate of the table, so a rate where it (or the
    reference) has no run shows up as unpaired rather than as a missing row."""
    runs: dict[tuple, dict[tuple, dict[tuple[Any, str], list[RunRecord]]]] = defaultdict(lambda: defaultdict(
        lambda: defaultdict(list)))
    for r in records:
        runs[r.group][(r.label, float(r.row["rate"]))][r.pair_key].append(r)
    out = []
    for group, by_cell in runs.items():
        if reference not in {lab for lab, _ in by_cell}:
            continue
        labels = sorted({lab for lab, _ in by_cell if lab != reference}, key=_method_key)
        rates = sorted({rate for lab, rate in by_cell if split_label(lab)[0] != "dense"})
        for rate in rates:
            ref = by_cell.get((reference, rate), {})
            for other in labels:
                oth = by_cell.get((other, 0.0 if split_label(other)[0] == "dense" else rate), {})
                out.append(_pair_cell(group, rate, reference, ref, other, oth))
    return out


def pair_variants(records: list[RunRecord]) -> list[Paired]:
    """Each named variant of the reference (`pmp@...`) minus every method that is not the reference
    or one of its variants: whether a variant leads the baselines is then read from pairs too."""
    labels = sorted({r.label for r in records if split_label(r.label)[0] == REFERENCE and r.label != REFERENCE})
    return [p for label in labels for p in pair(records, label) if split_label(p.other)[0] != REFERENCE]


def _pair_cell(group: tuple[str, str], rate: float, reference: str, ref: dict, other: str, oth: dict) -> Paired:
    dup = sorted({k for k in (*ref, *oth) if len(ref.get(k, ())) > 1 or len(oth.get(k, ())) > 1}, key=_key_order)
    both = sorted((set(ref) & set(oth)) - set(dup), key=_key_order)
    stats = None
    if both:  # accuracy points
        a = [100.0 * ref[k][0].row["class_avg_acc"] for k in both]
        b = [100.0 * oth[k][0].row["class_avg_acc"] for k in both]
        stats = paired_diff(a, b)

    def texts(keys: set) -> list[str]:
        return [_key_text(k) for k in sorted(keys, key=_key_order)]

    return Paired(*group, rate, other, stats, texts(set(ref) - set(oth) - set(dup)),
                  texts(set(oth) - set(ref) - set(dup)), texts(set(dup)), reference)


def _interval(lo: float, hi: float) -> str:
    return "" if math.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]"


def paired_table(paired: list[Paired]) -> str:
    """Per rate and method: the reference's mean paired lead in points, its intervals, wins/ties/losses."""
    ref = paired[0].reference
    lines = [f"| rate | {ref} − | pairs | mean (points) | 95% t-interval | 95% bootstrap | wins / ties / losses | "
             "unpaired |", "|---" * 8 + "|"]
    for p in paired:
        s = p.stats
        unpaired = "; ".join(f"{who}: {', '.join(keys)}" for who, keys in (
            (p.reference, p.unpaired_reference), (p.other, p.unpaired_other), ("duplicate", p.duplicates)) if keys)
        cells = (["0", "", "", "", ""] if s is None else
                 [str(s.n), f"{s.mean:+.2f}", _interval(s.lo, s.hi), _interval(s.boot_lo, s.boot_hi),
                  f"{s.wins} / {s.ties} / {s.losses}"])
        lines.append(f"| {100 * p.rate:g} % | {p.other} | " + " | ".join(cells) + f" | {unpaired} |")
    return "\n".join(lines)


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
    group: tuple[str, str], records: list[RunRecord], cells: list[Cell], paired: list[Paired], plot_dir: Path,
    density_rate: float,
) -> list[Path]:
    """Accuracy and paired differences vs density; at the rate closest to `density_rate`: PMP latent
    histogram, per-layer density."""
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
            unseen[r.label].add(float(r.row["rate"]))
    files = [plots.accuracy_vs_density(curves, dense, plot_dir / f"accuracy_{slug}.png", title, unseen)]
    diffs: dict[str, list[tuple[float, PairedDiff]]] = defaultdict(list)
    for p in paired:
        if p.stats is not None:
            diffs[p.other].append((p.rate, p.stats))
    if diffs:
        path = plot_dir / f"paired_{slug}.png"
        files.append(plots.paired_differences(dict(diffs), paired[0].reference, path, title))

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
            densities[r.label][layer].append(d)
    if densities:
        # legend counts: archived row-only runs recorded no densities, so a mean may cover fewer runs than its cell
        means = {f"{m} (n={max(map(len, d.values()))})": {k: statistics.fmean(v) for k, v in d.items()}
                 for m, d in densities.items()}
        path = plot_dir / f"layer_density_{slug}_r{rate:g}.png"
        files.append(plots.layer_density(means, rate, path, f"{title}: per-layer density at rate {rate:g}"))
    return files


def _shown(path: Path) -> str:
    """A path as the report prints it: relative to the working directory when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def report(
    runs_dir: str | Path,
    out_dir: str | Path | None = None,
    density_rate: float = DEFAULT_DENSITY_RATE,
    archives: list[str | Path] | None = None,
) -> Report:
    """Write results.csv, summary.csv, results.md and plots/ (into `runs_dir/report` by default) for
    every finished run under `runs_dir` and every archived run (`archives`) that is not there.

    `density_rate`: the pruning rate of the per-layer density and latent-histogram plots (the closest
    rate present is used when it was not run).
    """
    runs_dir = Path(runs_dir)
    out = Path(out_dir) if out_dir is not None else runs_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    archives = [Path(a) for a in archives or []]
    records, unreadable = collect(runs_dir, archives)
    cells = summarize(records)
    paired, variant_paired = pair(records), pair_variants(records)
    files = [
        _write_csv(out / "results.csv", COLUMNS, [r.row for r in records]),
        _write_csv(out / "summary.csv", SUMMARY_COLUMNS, [c.summary_row() for c in cells]),
        _write_csv(out / "paired.csv", PAIRED_COLUMNS, [p.row() for p in paired + variant_paired]),
    ]

    sections = [
        "# Results",
        "",
        f"Class-averaged accuracy (%) of {len(records)} finished runs under `{_shown(runs_dir)}`"
        + "".join(f" and in `{_shown(a)}`" for a in archives) + ": mean ± sample "
        "standard deviation (ddof=1) over seeds and folds, n = runs per cell. The 0 % row is the dense "
        "reference; the last row gives the training epochs of each method. Paired tables: runs that share "
        f"a seed and fold are paired, and each row gives {REFERENCE} minus that method over its pairs in "
        "accuracy points (> 0: PMP ahead), with 95% intervals of the mean difference (t over the pairs; "
        "percentile bootstrap, fixed seed; none for one pair); unpaired runs are listed by seed (s) and fold (f).",
    ]
    for group, group_cells in _by_group(cells).items():
        group_records = [r for r in records if r.group == group]
        group_paired = [p for p in paired if (p.dataset, p.variant) == group]
        plot_files = _group_plots(group, group_records, group_cells, group_paired, out / "plots", density_rate)
        files += plot_files
        sections += ["", f"## {_title(group)}", "", markdown_table(group_cells)]
        if group_paired:
            sections += ["", f"### Paired differences: {REFERENCE} minus each method", "", paired_table(group_paired)]
        for label in dict.fromkeys(p.reference for p in variant_paired if (p.dataset, p.variant) == group):
            rows = [p for p in variant_paired if (p.dataset, p.variant) == group and p.reference == label]
            sections += ["", f"### Paired differences: {label} minus each method that is not {REFERENCE}", "",
                         paired_table(rows)]
        sections += [f"\n![{p.stem}](plots/{p.name})" for p in plot_files]
    if unreadable:
        sections += ["", "Unreadable metrics files (skipped): " + ", ".join(f"`{p}`" for p in unreadable)]
    markdown = "\n".join(sections) + "\n"
    (out / "results.md").write_text(markdown)
    files.append(out / "results.md")
    return Report(records, cells, markdown, files, unreadable, paired, variant_paired)
