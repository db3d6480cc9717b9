"""The paper-style comparison: every method at every rate on FPHA (3 seeds) and SBU (5 folds).

Runs (or resumes) the sweeps `configs/sweeps/fpha.yaml` and `configs/sweeps/sbu.yaml`, then writes
  benchmarks/results/fpha.csv, sbu.csv   one row per finished run
  benchmarks/results/pmp.json            PMP per rate: hard/soft accuracy, achieved rate, prior
                                         mismatch, wall time; PMP/dense step-time and memory ratios
  benchmarks/results/baselines.json      every baseline per rate: accuracy, achieved rate, epochs
  docs/results/<dataset>/                results.md table and plots (from `pmp report`)
  benchmarks/results/archive/<dataset>.jsonl
                                         every finished run of the sweep (pmp.experiments.archive):
                                         restored into the sweep's folder before it runs, so a grid
                                         that spans sittings on fresh checkouts keeps its earlier runs

    python benchmarks/paper_table.py --data-root ../shared/data [--workers 2] [--only fpha] [--seeds 0,1,2]

Finished runs are skipped, so an interrupted invocation continues where it stopped (its sitting is
recorded as interrupted, with its wall time). `--seeds` runs those seeds of the grid now (whole
cells first when the grid spans sittings); the tables always report every finished run, and say how
many runs each cell holds.

    python benchmarks/paper_table.py --only fpha --supersede LABEL

starts a dataset's grid afresh (after a change that makes its old runs incomparable, e.g. other
machines or settings): its archive moves to archive/superseded/<dataset>_LABEL.jsonl and its recorded
sittings to `meta.superseded` of pmp.json, so that the new grid's wall time counts its own sittings
only. Nothing is deleted; the run folders in work_dirs are left alone (move them away first).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from pmp.experiments import archive, expand_grid, load_sweep, report, run_sweep  # noqa: E402
from pmp.experiments.grid import split_label  # noqa: E402
from pmp.machine import machine_fingerprint  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
ARCHIVES = RESULTS / "archive"  # one archive per sweep, <sweep name>.jsonl
DATASETS = {"fpha": ROOT / "configs/sweeps/fpha.yaml", "sbu": ROOT / "configs/sweeps/sbu.yaml"}
CSV_COLUMNS = ["method", "variant", "rate", "seed", "fold", "class_avg_acc", "soft_class_avg_acc", "achieved_rate",
               "epochs", "wall_s", "overall_acc"]  # variant: e.g. "equal" for the equal-budget LTH (lth@equal)
NOT_BASELINES = {"dense", "pmp", "mrmp"}  # methods (and their named variants) the claim does not compare to


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}"


def mean(values: list[float]) -> float:
    return float(np.mean(values))


def per_method_rate(records: list) -> dict[str, dict[str, list[dict]]]:
    """Metrics (over the results row: an archived row-only run has no more) by report label (a named
    variant such as lth@equal is its own entry) and rate."""
    out: dict[str, dict[str, list[dict]]] = {}
    for r in records:
        out.setdefault(r.label, {}).setdefault(f"{r.row['rate']:g}", []).append({**r.row, **r.metrics})
    return out


def sweep_and_report(spec, report_dir: Path, run: bool, archive_dir: Path = ARCHIVES, **sweep_kwargs):
    """Restore the sweep's archived runs, run (or resume) it, archive its finished runs, and report
    them: (report, sweep result or None); (None, None) for a sweep not run now that has no runs.
    The archive is written even when the sweep is interrupted."""
    path = archive_dir / f"{spec.name}.jsonl"
    if not run and not spec.out.is_dir() and not path.is_file():
        return None, None
    with archive.kept(path, spec.out) as restored:
        if restored:
            print(f"{spec.name}: {len(restored)} finished runs restored from {path}")
        result = run_sweep(spec, **sweep_kwargs) if run else None
    return report(spec.out, out_dir=report_dir, archives=[path]), result


def sittings(previous: dict) -> list[dict]:
    """The sweep's sittings recorded so far (pmp.json meta), one entry per invocation that ran runs;
    a file written before sittings were kept holds only its last sitting, at the top level."""
    out = list(previous.get("sittings", []))
    if "sweep_wall_s" in previous:
        out.append({k: previous[k] for k in ("sweep_wall_s", "failed") if k in previous})
    return out


def summarize_cell(runs: list[dict], pmp: bool) -> dict:
    cell = {
        "class_avg_acc": mean([r["class_avg_acc"] for r in runs]),
        "class_avg_acc_std": float(np.std([r["class_avg_acc"] for r in runs], ddof=1)) if len(runs) > 1 else 0.0,
        "achieved_rate": mean([r["achieved_rate"] for r in runs]),
        "exact_count": all(known) if (known := [r["exact_count"] for r in runs if "exact_count" in r]) else None,
        "epochs": runs[0]["epochs"],
        "wall_s": mean([r["wall_s"] for r in runs]),
        "n_runs": len(runs),
        "per_run": [r["class_avg_acc"] for r in runs],
    }
    if pmp:
        cell["soft_class_avg_acc"] = mean([r["soft_class_avg_acc"] for r in runs])
        mism = [r["prior_mismatch"] for r in runs if r.get("prior_mismatch")]
        if mism:
            cell["prior_mismatch"] = mism[0] if len(mism) == 1 else mism
    return cell


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", choices=sorted(DATASETS))
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: tables, plots and result files from the runs finished so far")
    ap.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")],
                    help="run only these seeds of the grids now, e.g. 0,1,2 (default: all)")
    ap.add_argument("--supersede", metavar="LABEL",
                    help="with --only: set the dataset's archive and sittings aside as LABEL, train nothing")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.supersede:
        if not args.only:
            ap.error("--supersede needs --only DATASET")
        supersede(args.only, args.supersede)
        return

    pmp_json: dict = {}
    baselines_json: dict = {}
    timing: dict = {}
    old_meta = json.loads((RESULTS / "pmp.json").read_text()).get("meta", {}) if (RESULTS / "pmp.json").is_file() else {}
    old_timing = old_meta.get("timing", {})
    reports: dict = {}
    for name, spec_path in DATASETS.items():
        if args.only and name != args.only:
            continue
        spec = load_sweep(spec_path)
        t0 = time.perf_counter()
        timing[name] = {"sittings": sittings(old_timing.get(name, {}))}
        try:
            rep, result = sweep_and_report(spec, ROOT / "docs" / "results" / name, not args.report_only,
                                           workers=args.workers, data_root=args.data_root,
                                           only={"seed": args.seeds} if args.seeds else None)
        except KeyboardInterrupt:  # the runs it finished are archived; its wall time is kept too
            timing[name]["sittings"].append({"seeds": args.seeds, "sweep_wall_s": round(time.perf_counter() - t0, 1),
                                             "interrupted": True})
            kept = {k: v for k, v in old_timing.get(name, {}).items() if k not in ("sweep_wall_s", "failed")}  # legacy keys: in sittings now
            write_timing({**old_timing, name: {**kept, **timing[name]}})
            raise
        if rep is None:
            del timing[name]
            continue
        reports[name] = rep
        if result is not None:
            timing[name]["sittings"].append({"seeds": args.seeds, "sweep_wall_s": round(time.perf_counter() - t0, 1),
                                             "done": result.count("done"), "failed": [o.run_id for o in result.failed]})
        timing[name]["runs"] = len(rep.records)
        timing[name]["grid_runs"] = len(expand_grid(spec))
        rows = [r.row for r in rep.records]
        with open(RESULTS / f"{name}.csv", "w") as f:
            f.write(",".join(CSV_COLUMNS) + "\n")
            for r in rows:
                f.write(",".join("" if r.get(c) is None else str(r.get(c)) for c in CSV_COLUMNS) + "\n")
        grouped = per_method_rate(rep.records)
        timing[name]["dense_class_avg_acc"] = mean([m["class_avg_acc"] for m in grouped.get("dense", {}).get("0", [])] or [float("nan")])
        for method, by_rate in grouped.items():
            cells = {rate: summarize_cell(runs, method == "pmp") for rate, runs in by_rate.items()}
            if method == "pmp":
                pmp_json[name] = cells
            else:
                baselines_json.setdefault(name, {})[method] = cells
        timing[name]["total_run_wall_s"] = round(sum(r.row["wall_s"] for r in rep.records), 1)

    from pmp_cost import measure_step_cost

    cost = {} if args.report_only else measure_step_cost()  # report only: the stored ratios stay
    if not args.only:
        write_results_doc(timing, reports, meta_machine=machine())
        update_readme(reports, timing)
    # a report-only call ran nothing: the machine that made the runs stays on record
    made_on = ({k: old_meta[k] for k in ("machine", "fingerprint") if k in old_meta} if args.report_only else {})
    meta = {"machine": machine(), "fingerprint": machine_fingerprint(), **made_on, "timing": {**old_timing, **timing},
            "command": "python benchmarks/paper_table.py"}
    _merge_write(RESULTS / "pmp.json", {**pmp_json, **cost, "meta": meta})
    _merge_write(RESULTS / "baselines.json", {**baselines_json, "meta": meta})
    print(json.dumps(timing, indent=2))
    if cost:
        print(f"step_time_ratio {cost['step_time_ratio']:.2f}, peak_memory_ratio {cost['peak_memory_ratio']:.2f}")


def claim_check(name: str, paired: list) -> list[str]:
    """The paper's claim, checked on the report's paired differences (PMP minus a method over the runs
    that share seed and fold, 95% t-interval): at every rate >= 0.9 PMP >= the best baseline (the one
    PMP leads least), PMP - MP >= 10 points at 0.99, and PMP - dense >= -3 points at 0.99."""
    rows = {(p.rate, p.other): p for p in paired if p.dataset == name and not p.variant and p.stats}
    lines = ["Read from the paired differences (docs/sweeps.md, Paired statistics): PMP minus the method over "
             "the runs that share seed and fold, in accuracy points, with the 95% t-interval of the mean; "
             "'holds?' says whether the mean clears the claim's threshold and whether the interval includes it.", "",
             "| rate | claim | method | pairs | PMP minus method: mean [95% t-interval] | wins / ties / losses | holds? |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for rate in sorted({r for r, _ in rows if r >= 0.9}):
        base = {m: p for (r, m), p in rows.items() if r == rate and split_label(m)[0] not in NOT_BASELINES}
        claims = [("PMP >= best baseline", min(base, key=lambda m: base[m].stats.mean) if base else None, 0.0)]
        if rate == 0.99:
            claims += [("PMP - MP >= +10", "mp", 10.0), ("within 3 points of dense", "dense", -3.0)]
        for claim, method, threshold in claims:
            p = rows.get((rate, method))
            if p is None:
                lines.append(f"| {rate:g} | {claim} | {method or ''} | 0 | not measured | | |")
                continue
            s = p.stats
            interval = "no interval (one pair)" if s.n < 2 else f"[{s.lo:+.2f}, {s.hi:+.2f}]"
            lines.append(f"| {rate:g} | {claim} | {method} | {s.n} | {s.mean:+.2f} {interval} | "
                         f"{s.wins} / {s.ties} / {s.losses} | {verdict(s, threshold)} |")
    return lines


def verdict(s, threshold: float) -> str:
    """Whether the mean difference clears `threshold`, and whether its interval does too."""
    at = "zero" if threshold == 0 else f"{threshold:+g}"
    holds = "yes" if s.mean >= threshold else "no"
    if s.n < 2:
        return f"{holds} on one pair"
    if s.lo > threshold or s.hi < threshold:
        return f"{holds}; the interval excludes {at}"
    return f"{holds} on the mean; the interval includes {at}"


def write_results_doc(timing: dict, reports: dict, meta_machine: str) -> None:
    """docs/results.md: both datasets' tables and plots, the claim check, commands, machine, times."""
    parts = [
        "# Results: PMP against the baselines on FPHA and SBU",
        "",
        "Generated by `python benchmarks/paper_table.py --data-root ../shared/data` (which runs, or resumes,",
        "`pmp sweep configs/sweeps/fpha.yaml` and `pmp sweep configs/sweeps/sbu.yaml`, then `pmp report`).",
        "Nothing here is edited by hand; rerun the command to regenerate it.",
        "",
        f"Machine: {meta_machine}, CPU only, 2 local worker processes with one torch thread each.",
        "",
        "| dataset | protocol | runs | sweep wall time | sum of run times |",
        "| --- | --- | --- | --- | --- |",
    ]
    seeds = {name: ", ".join(str(s) for s in sorted({r.row["seed"] for r in rep.records})) for name, rep in reports.items()}
    proto = {"fpha": f"official 1:1 split (600/575), seeds {seeds.get('fpha')}",
             "sbu": f"official 5 folds, seeds {seeds.get('sbu')} per fold"}
    for name, t in timing.items():
        walls = [x["sweep_wall_s"] for x in t["sittings"]]
        wall = f"{sum(walls) / 60:.1f} min over {len(walls)} sitting(s)" if walls else "(none recorded)"
        parts.append(f"| {name} | {proto.get(name, '')} | {t['runs']} of {t['grid_runs']} | {wall} | "
                     f"{t['total_run_wall_s'] / 60:.1f} min |")
    parts += ["", "Runs: finished runs of the sweep's grid (a grid spans sittings: cells then hold fewer seeds, "
              "and each table says how many runs each cell holds). Sweep wall time: the sum over the "
              "sittings recorded in benchmarks/results/pmp.json (each counts only the runs it made; sittings "
              "before the record was kept are in that file's git history); sum of run times: every run's own "
              "training time, whichever sitting made it.", ""]
    for name, rep in reports.items():
        body = rep.markdown.split("\n", 1)[1].replace("](plots/", f"](results/{name}/plots/")
        parts += [f"# {name.upper()}", body, "### The paper's claim, checked", ""]
        parts += claim_check(rep.records[0].row["dataset"], rep.paired) + [""]
    (ROOT / "docs" / "results.md").write_text("\n".join(parts) + "\n")
    from backbone_ablation import update_results_doc

    update_results_doc()  # the dense backbone's section (dense.json, the ablation) goes back in


README_START, README_END = "<!-- pruning-table:start -->", "<!-- pruning-table:end -->"
README_COLUMNS = [("pmp", "PMP"), ("mp", "MP"), ("gmp", "GMP"), ("lth", "LTH (3x epochs)"), ("lth@equal", "LTH (equal)"),
                  ("snip", "SNIP"), ("dense", "dense")]
README_RATES = (0.9, 0.98, 0.99)


def readme_table(reports: dict, timing: dict) -> str:
    """The README's pruning table: class-averaged % (mean over the runs) of every method at the high
    rates, per dataset, from the same reports as docs/results.md (never copied by hand)."""
    lines = [README_START, "| | runs | rate | " + " | ".join(t for _, t in README_COLUMNS) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in README_COLUMNS) + " |"]
    for name, rep in reports.items():
        cells = {(c.method, c.rate): c for c in rep.cells if not c.variant and c.dataset == name}
        records = [r for r in rep.records if r.row["dataset"] == name]
        seeds = sorted({r.row["seed"] for r in records})
        folds = sorted({r.row["fold"] for r in records if r.row["fold"]})
        which = f"seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}"
        runs = f"{len(records)} of {timing[name]['grid_runs']}: " + (f"{len(folds)} folds x {which}" if folds else which)
        for rate in README_RATES:
            row = [f"{cells[(m, 0.0 if m == 'dense' else rate)].mean:.2f}" if (m, 0.0 if m == "dense" else rate) in cells
                   else "" for m, _ in README_COLUMNS]
            lines.append(f"| {name.upper()} | {runs} | {rate:g} | " + " | ".join(row) + " |")
    return "\n".join(lines + [README_END])


def update_readme(reports: dict, timing: dict) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if README_START in text:
        head, rest = text.split(README_START, 1)
        readme.write_text(head + readme_table(reports, timing) + rest.split(README_END, 1)[1])


def write_timing(timing: dict) -> None:
    """Only the sittings record of pmp.json's meta (an interrupted invocation writes nothing else)."""
    path = RESULTS / "pmp.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    _merge_write(path, {"meta": {**old.get("meta", {}), "timing": timing}})


def supersede(name: str, label: str) -> None:
    """Set dataset `name`'s archive and recorded sittings aside as `label` (module docstring)."""
    src, dst = ARCHIVES / f"{name}.jsonl", ARCHIVES / "superseded" / f"{name}_{label}.jsonl"
    if dst.exists():
        raise SystemExit(f"{dst}: exists already (choose another label)")
    path = RESULTS / "pmp.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    meta = doc.get("meta", {})
    if name not in meta.get("timing", {}) and not src.is_file():
        raise SystemExit(f"{name}: no archive ({src}) and no recorded sittings: nothing to set aside")
    if src.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        src.rename(dst)
        print(f"{src} -> {dst}")
    if name in meta.get("timing", {}):
        meta.setdefault("superseded", {})[f"{name}_{label}"] = {**meta["timing"].pop(name), "archive": str(dst.relative_to(ROOT))}
        _merge_write(path, {"meta": meta})
        print(f"{path}: the sittings of {name} moved to meta.superseded.{name}_{label}")


def _merge_write(path: Path, new: dict) -> None:
    """Keep the other dataset's entries when only one dataset was (re)run."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    old.update(new)
    path.write_text(json.dumps(old, indent=2))


if __name__ == "__main__":
    main()
