"""What each part of PMP contributes (issue 12): configs/sweeps/ablation.yaml (FPHA, 5 seeds) and
configs/sweeps/ablation_sbu.yaml (SBU, 5 folds x 3 seeds), each PMP option moved one at a time
around the default (`pmp@name` variants), at rates 0.9, 0.98 and 0.99. The same script tables the
equal tuning budget of every method (`--name tuning --sweeps configs/sweeps/tuning.yaml`:
tuning.csv/.json): any sweep of `method@variant`s, a column per option its variants move.

Runs (or resumes) the sweeps, then writes
  benchmarks/results/ablation.csv    one row per finished run, with a column per ablated option
                                     holding the value that run used (the default where not moved)
  benchmarks/results/ablation.json   machine, command, sweep wall times, runs, failures
  docs/results/<sweep name>/         `pmp report`: tables and the paired differences of the default
                                     PMP minus every variant (paired.csv) over shared seeds and folds

    python benchmarks/ablation.py --data-root ../shared/data [--workers 2] [--only ablation]
        [--select method=pmp,pmp@lam0 --select seed=0,1,2]
    python benchmarks/ablation.py --name tuning --sweeps configs/sweeps/tuning.yaml --data-root ../shared/data
    python benchmarks/ablation.py --name tuning_heldout --sweeps configs/sweeps/tuning_heldout.yaml  # seeds 2-4

`--sweeps` and `--results` run other sweep files into other folders (a smoke run with tiny settings).
Finished runs are skipped, so an interrupted invocation continues where it stopped; every finished run
is archived in benchmarks/results/archive/<sweep name>.jsonl and restored from it on a fresh checkout.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from backbones import sweep_spec as backbone_grid  # noqa: E402
from paper_table import ARCHIVES, DATASETS, RESULTS, machine, sweep_and_report  # noqa: E402

from pmp.experiments import load_sweep  # noqa: E402
from pmp.experiments.grid import parse_only  # noqa: E402
from pmp.experiments.stats import paired_diff  # noqa: E402
from pmp.pruning.base import METHODS  # noqa: E402
from pmp.training.config import load_config  # noqa: E402

SWEEPS = [ROOT / "configs/sweeps/ablation.yaml", ROOT / "configs/sweeps/ablation_sbu.yaml"]
RUN_COLUMNS = ["dataset", "method", "variant", "rate", "seed", "fold", "class_avg_acc", "overall_acc",
               "achieved_rate", "epochs", "wall_s", "latent_layer", "latent_max_abs", "run"]


def latent_extent(metrics: dict) -> tuple[str | None, float | None]:
    """(layer, largest |latent weight| bin centre) of the run's latent histogram after training:
    how far the prior alignment lets the weights that survive grow."""
    after = (metrics.get("latent_hist") or {}).get("after") or {}
    centers = after.get("centers") or []
    return after.get("layer"), (round(max(abs(centers[0]), abs(centers[-1])), 4) if centers else None)


def option_columns(specs) -> list[str]:
    """The options the sweeps' variants move, in file order: `scope` for pruning.scope, the name
    of each pruning.options.* key."""
    out: list[str] = []
    for spec in specs:
        for overrides in spec.method_overrides.values():
            for key in overrides:
                name = "scope" if key == "pruning.scope" else key.removeprefix("pruning.options.")
                if key.startswith(("pruning.options.", "pruning.scope")) and name not in out:
                    out.append(name)
    return out


def method_defaults(method: str) -> dict:
    """A method's keyword defaults, read from its signature so that the table cannot drift from the code."""
    params = inspect.signature(METHODS[method].__init__).parameters.items()
    return {"scope": "layer", **{k: p.default for k, p in params if p.kind is p.KEYWORD_ONLY}}


def ablation_rows(rep, runs_dir: Path, options: list[str]) -> list[dict]:
    """One row per run of a report over `runs_dir`: the option values come from the run's own
    config.yaml (what it was trained with), not from the sweep file; blank where the run's method
    has no such option."""
    rows = []
    for r in rep.records:
        cfg = load_config(runs_dir / r.row["run"] / "config.yaml")
        defaults = method_defaults(cfg.pruning.method)
        used = {**defaults, **cfg.pruning.run_options(), "scope": cfg.pruning.scope}
        layer, extent = latent_extent(r.metrics)
        rows.append({**{c: r.row.get(c) for c in RUN_COLUMNS}, "latent_layer": layer, "latent_max_abs": extent,
                     "method": cfg.pruning.method,
                     "variant": r.name or "default", **{k: used.get(k) if k in defaults else None for k in options}})
    return rows


def write_csv(path: Path, rows: list[dict], options: list[str]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, RUN_COLUMNS[:3] + options + RUN_COLUMNS[3:])
        writer.writeheader()
        writer.writerows(rows)


def _cpu(metrics: dict) -> str | None:
    """The CPU model and the kernels torch chose on it: one model name ("AMD EPYC") covers machines
    with and without AVX-512, which give other numbers for the same run (docs/guarantees.md)."""
    m = metrics.get("machine", {})
    isa = m.get("torch_cpu_capability")
    return f"{m['cpu_model']} (torch {isa})" if m.get("cpu_model") and isa else m.get("cpu_model")


def reference_grid(spec) -> list:
    """The finished runs of the grid made on the sweep's base config: the paper grid (the attention
    GCN's configs) or benchmarks/backbones.py's grid of that backbone and dataset; none if neither."""
    from pmp.experiments.report import collect

    base = Path(spec.base).resolve()
    grids = [load_sweep(path) for path in DATASETS.values()]
    cfg = load_config(base)
    try:
        grids.append(backbone_grid(cfg.model.name, cfg.data.name, ROOT / "work_dirs" / "backbones", [0], ["1"], None))
    except SystemExit:  # no backbones.py config of this backbone and dataset
        pass
    for g in grids:
        if Path(g.base).resolve() == base:
            return collect(g.out, [ARCHIVES / f"{g.name}.jsonl"])[0]
    return []


def grid_agreement(reports: dict, specs: dict) -> dict:
    """A sweep's runs that are runs of the grid of its base config (reference_grid; other folders):
    the same config fingerprint, seed, fold and rate, whatever their labels (a variant the config has
    since adopted is the grid's run); runs without a fingerprint (archived rows) are matched by method,
    seed, fold and rate. A check of determinism across sittings. A default run whose grid cell ran
    another config (the sweep pins an override the grid lacks) is only counted. Per sweep, per label
    and per CPU the grid's run was made on (an archived row records none): pairs, how many identical
    to the bit, the largest and the mean absolute difference in points. The PMP default's groups keep
    their names of before (`grid run on <cpu>`)."""

    def key(r) -> tuple:
        return r.label, r.row["dataset"], r.row["rate"], r.row["seed"], r.row["fold"]

    out: dict = {}
    for name, rep in reports.items():
        grid_runs = reference_grid(specs[name])
        by_fingerprint = {r.metrics["fingerprint"]: r for r in grid_runs if r.metrics.get("fingerprint")}
        by_key = {key(r): r for r in grid_runs}
        groups: dict[str, list[float]] = {}
        other_config = 0
        for r in sorted(rep.records, key=lambda r: str(key(r))):
            mine = r.metrics.get("fingerprint")
            g = by_fingerprint.get(mine) if mine else None
            if g is None:
                g = by_key.get(key(r)) if "@" not in r.label else None
                if g is None:
                    continue
                if mine and g.metrics.get("fingerprint"):  # the grid's cell ran another config
                    other_config += 1
                    continue
            cpu = _cpu(g.metrics) or "not recorded (archived row)"
            label = f"grid run on {cpu}" if r.label == "pmp" else f"{r.label}: grid run on {cpu}"
            groups.setdefault(label, []).append(abs(r.row["class_avg_acc"] - g.row["class_avg_acc"]))
        cpus = {_cpu(r.metrics) for r in rep.records}
        out[name] = {"ablation runs on": sorted(c for c in cpus if c), **{
            g: {"pairs": len(d), "identical": sum(x == 0 for x in d), "max_abs_diff_points": round(100 * max(d), 3),
                "mean_abs_diff_points": round(100 * sum(d) / len(d), 3)} for g, d in sorted(groups.items())},
            **({"pairs of another config (not compared)": other_config} if other_config else {})}
    return out


START, END = "<!-- ablation:start -->", "<!-- ablation:end -->"
METHOD_DOC = ROOT / "docs" / "method.md"


def _moved(overrides: dict) -> str:
    """`{"pruning.scope": "global", "pruning.options.lam": 0.0}` as "scope global, lam 0"."""
    return ", ".join(f"{k.removeprefix('pruning.options.').removeprefix('pruning.')} "
                     f"{format(v, 'g') if isinstance(v, float) else v}" for k, v in overrides.items())


def ablation_section(reports: dict, specs: dict, timing: dict) -> str:
    """docs/method.md's ablation block: per sweep, each variant's accuracy and the paired difference
    default minus variant (95% t-interval over shared seeds and folds, wins/ties/losses) per rate."""
    lines = [START, "### Measured: PMP with one part moved at a time", "",
             "Generated by `python benchmarks/ablation.py` from the runs finished so far (`benchmarks/results/"
             "ablation.csv`, one row per run; reports in `docs/results/ablation*/`). Each cell: the variant's "
             "class-averaged accuracy (%, mean over n runs), then **default minus variant** in points over the "
             "runs that share seed and fold, with its 95% t-interval and the default's wins / ties / losses. "
             "Above zero with an interval that excludes it: the default's setting of that part beats the variant's. "
             "Last column: the largest |latent weight| after training (histogram bin centre, mean over the runs at "
             "the highest rate) of the layer `metrics.json` histograms: how far the surviving weights grew.", ""]
    for name, rep in reports.items():
        spec = specs[name]
        t = timing.get(name, {})
        cells = {(c.method, c.rate): c for c in rep.cells}
        rates = sorted({c.rate for c in rep.cells})
        walls = [x["sweep_wall_s"] for x in t.get("sittings", [])]
        lines += [f"**{name}** ({spec.base.name if spec.base else ''}; {len(rep.records)} runs; "
                  f"sweep wall time {sum(walls) / 60:.0f} min over {len(walls)} sitting(s) on {machine()}, 2 workers)", "",
                  "| variant | moved | " + " | ".join(f"r = {r:g}" for r in rates) + f" | max abs latent at {rates[-1]:g} |",
                  "| --- | --- | " + " | ".join("---" for _ in rates) + " | --- |"]
        def extent(label: str) -> str:
            found = [latent_extent(r.metrics) for r in rep.records if r.label == label and r.row["rate"] == rates[-1]]
            values = [v for _, v in found if v is not None]
            return f"{sum(values) / len(values):.3f} ({found[0][0]})" if values else ""

        default = ["default", "(configs and PMP's defaults)"] + [
            f"{cells[('pmp', r)].mean:.2f} (n={cells[('pmp', r)].n})" if ("pmp", r) in cells else "" for r in rates]
        default.append(extent("pmp"))
        lines.append("| " + " | ".join(default) + " |")
        paired = {(p.other, p.rate): p for p in rep.paired if not p.variant}
        for label in spec.grid["pruning.method"]:
            if label == "pmp" or not any((label, r) in cells for r in rates):
                continue
            row = [label.split("@", 1)[1], _moved(spec.method_overrides.get(label, {}))]
            for r in rates:
                c, p = cells.get((label, r)), paired.get((label, r))
                if c is None:
                    row.append("not run")
                    continue
                text = f"{c.mean:.2f} (n={c.n})"
                if p is not None and p.stats is not None:
                    st = p.stats
                    ci = f" [{st.lo:+.2f}, {st.hi:+.2f}]" if st.n > 1 else ""
                    text += f"; {st.mean:+.2f}{ci}, {st.wins}/{st.ties}/{st.losses}"
                row.append(text)
            lines.append("| " + " | ".join(row + [extent(label)]) + " |")
        lines.append("")
    return "\n".join(lines + [END])


STGCN_DOC = ROOT / "docs" / "backbones" / "stgcn.md"
#: Sweeps tabled as "each variant minus its method's default", by name: (title, the page whose
#: block the table replaces). The tuning budget (seeds 0-1) and its held-out check (seeds 2-4); PMP's
#: hard tail on the ST-GCN-family backbone.
TUNING_TITLES = {"tuning": ("Measured: the same tuning budget for every method", METHOD_DOC),
                 "tuning_heldout": ("Held-out check of the tuning: the paper grid's seeds 2-4", METHOD_DOC),
                 "hard_tail_sbu": ("Measured: PMP's hard tail on stgcn, SBU", STGCN_DOC),
                 "hard_tail_fpha": ("Measured: PMP's hard tail on stgcn, FPHA", STGCN_DOC),
                 "hard_tail_sbu_drop_last": ("Measured: PMP's hard tail on stgcn, SBU, with drop_last", STGCN_DOC)}


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


TUNING_START, TUNING_END = markers("tuning")


def _pct(x: float) -> str:
    return "" if math.isnan(x) else f"{x:+.2f}"


def tuning_section(rep, spec, timing: dict) -> str:
    """docs/method.md's tuning block: per method, each of its variants minus its own default, in points,
    paired over the runs that share rate, seed and fold, per rate and pooled over the rates (the
    decision is about a setting, not about one rate); then each method's best setting per rate."""
    acc: dict[str, dict[tuple, float]] = {}
    for r in rep.records:
        acc.setdefault(r.label, {})[(float(r.row["rate"]), *r.pair_key)] = 100.0 * r.row["class_avg_acc"]
    rates = sorted({k[0] for runs in acc.values() for k in runs})
    walls = [x["sweep_wall_s"] for x in timing.get("sittings", [])]
    seeds = sorted({k[1] for runs in acc.values() for k in runs})
    splits = sorted({str(k[2]) for runs in acc.values() for k in runs})
    folds = f" x folds {', '.join(splits)}" if len(splits) > 1 else ""
    start, end = markers(spec.name)
    lines = [start, f"### {TUNING_TITLES.get(spec.name, (spec.name,))[0]}", "",
             f"Generated by `python benchmarks/ablation.py --name {spec.name} --sweeps configs/sweeps/{spec.name}.yaml` "
             f"({spec.base.name if spec.base else ''}, seeds {', '.join(map(str, seeds))}{folds}; {len(rep.records)} runs; "
             f"sweep wall time {sum(walls) / 60:.0f} min over {len(walls)} sitting(s) on {machine()}, 2 workers; "
             f"`benchmarks/results/{spec.name}.csv`). Each variant: its class-averaged accuracy (%) per rate, then "
             "**variant minus its method's default** in points, per rate (mean over the seeds) and pooled over "
             "every rate and seed with its 95% t-interval and the variant's wins / ties / losses. "
             "**better**: the pooled interval lies above zero.", "",
             "| variant | moved | " + " | ".join(f"r = {r:g}" for r in rates) + " | pooled: variant − default | |",
             "| --- | --- | " + " | ".join("---" for _ in rates) + " | --- | --- |"]
    methods = [m for m in spec.grid["pruning.method"] if "@" not in m]
    for m in methods:
        base = acc.get(m, {})
        lines.append(f"| **{m}** | (default) | " + " | ".join(
            _cell_mean([v for k, v in base.items() if k[0] == r]) for r in rates) + " | | |")
        for label in (x for x in spec.grid["pruning.method"] if x.startswith(m + "@")):
            runs = acc.get(label, {})
            if not runs:
                lines.append(f"| {label} | {_moved(spec.method_overrides.get(label, {}))} | " +
                             " | ".join("not run" for _ in rates) + " | | |")
                continue
            row = [label, _moved(spec.method_overrides.get(label, {}))]
            for r in rates:
                keys = [k for k in runs if k[0] == r and k in base]
                diff = sum(runs[k] - base[k] for k in keys) / len(keys) if keys else math.nan
                here = [v for k, v in runs.items() if k[0] == r]
                row.append(f"{_cell_mean(here)}; {_pct(diff)}" if here else "not run")
            keys = sorted(set(runs) & set(base), key=str)
            if keys:
                st = paired_diff([runs[k] for k in keys], [base[k] for k in keys])
                row += [f"{st.mean:+.2f} [{_pct(st.lo)}, {_pct(st.hi)}], {st.wins}/{st.ties}/{st.losses} (n={st.n})",
                        "better" if st.n > 1 and st.lo > 0 else ""]
            else:
                row += ["no pairs", ""]
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Each method's best setting per rate (the highest mean of its settings at that rate; "
              "chosen on the same seeds it is shown on, so optimistic alike for every method):", "",
              "| method | " + " | ".join(f"r = {r:g}" for r in rates) + " |", "| --- | " + " | ".join("---" for _ in rates) + " |"]
    for m in methods:
        labels = [x for x in spec.grid["pruning.method"] if x == m or x.startswith(m + "@")]
        cells = []
        for r in rates:
            means = {x: sum(v) / len(v) for x in labels if (v := [a for k, a in acc.get(x, {}).items() if k[0] == r])}
            best = max(means, key=means.get) if means else None
            cells.append(f"{means[best]:.2f} ({best.partition('@')[2] or 'default'})" if best else "")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines + [end])


def _cell_mean(values: list[float]) -> str:
    return f"{sum(values) / len(values):.2f} (n={len(values)})" if values else "not run"


def update_method_doc(section: str, start: str = START, end: str = END, doc: Path = METHOD_DOC) -> None:
    """Replace the block between `start` and `end` of `doc` (or add it at the end)."""
    text = doc.read_text()
    if start in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", help="run only the sweep of this name (ablation, ablation_sbu)")
    ap.add_argument("--report-only", action="store_true", help="train nothing: tables from the runs finished so far")
    ap.add_argument("--select", action="append", metavar="AXIS=V1,V2",
                    help="run only these values of the grid now, as `pmp sweep --only` (repeatable; e.g. "
                         "method=pmp,pmp@lam0 seed=0,1,2): the parts that matter most first, the rest later")
    ap.add_argument("--sweeps", nargs="+", type=Path, default=SWEEPS, help="sweep files (default: both ablations)")
    ap.add_argument("--name", default="ablation", help="result files NAME.csv and NAME.json (default: ablation)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the result files")
    ap.add_argument("--reports", type=Path, default=ROOT / "docs" / "results", help="folder of the reports")
    args = ap.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)

    meta_path = args.results / f"{args.name}.json"
    specs = [load_sweep(path) for path in args.sweeps]
    options = option_columns(specs)
    timing = json.loads(meta_path.read_text())["timing"] if meta_path.is_file() else {}
    rows, reports = [], {}
    for spec in specs:  # every sweep's finished runs are tabled; only the selected ones run
        t0 = time.perf_counter()
        try:
            rep, result = sweep_and_report(spec, args.reports / spec.name,
                                           not args.report_only and (not args.only or spec.name == args.only),
                                           archive_dir=args.results / "archive",
                                           workers=args.workers, data_root=args.data_root, only=parse_only(args.select))
        except KeyboardInterrupt:  # its finished runs are archived; keep its wall time too, then stop
            timing.setdefault(spec.name, {}).setdefault("sittings", []).append(
                {"select": args.select or [], "sweep_wall_s": round(time.perf_counter() - t0, 1), "interrupted": True})
            old = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
            meta_path.write_text(json.dumps({**old, "timing": timing}, indent=2) + "\n")
            raise
        if result is not None:  # one entry per sitting: a sweep spans several
            sittings = timing.setdefault(spec.name, {}).setdefault("sittings", [])
            sittings.append({"select": args.select or [], "sweep_wall_s": round(time.perf_counter() - t0, 1),
                             "runs": len(result.runs), "done": result.count("done"),
                             "failed": [o.run_id for o in result.failed]})
        if rep is None:
            continue
        reports[spec.name] = rep
        rows += ablation_rows(rep, spec.out, options)
        if spec.name in timing:
            timing[spec.name]["total_run_wall_s"] = round(sum(r.row["wall_s"] for r in rep.records), 1)
    write_csv(args.results / f"{args.name}.csv", rows, options)
    meta = {"machine": machine(), "command": "python benchmarks/ablation.py " + " ".join(sys.argv[1:]),
            "timing": timing, "rows": len(rows), "grid_agreement": grid_agreement(reports, {s.name: s for s in specs})}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    if args.results == RESULTS and reports:  # not a smoke run
        if args.name == "ablation":
            update_method_doc(ablation_section(reports, {s.name: s for s in specs}, timing))
        elif args.name in TUNING_TITLES:
            spec = specs[0]
            update_method_doc(tuning_section(reports[spec.name], spec, timing.get(spec.name, {})),
                              *markers(spec.name), doc=TUNING_TITLES[args.name][1])
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
