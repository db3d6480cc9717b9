"""Ablation of the default dense backbone: each input feature, augmentation and architecture choice
of configs/fpha.yaml and configs/sbu.yaml switched off (or changed) one at a time, on both datasets.

Writes benchmarks/results/backbone_ablation.json (per dataset and variant: the overrides, every
run, mean, std and 95% t-interval) and docs/results/backbone_ablation.md (the table docs/results.md
shows). Runs live in work_dirs/ablation/<dataset>/<variant>/ and are not retrained when finished,
so an interrupted ablation continues where it stopped.

    python benchmarks/backbone_ablation.py --data-root ../shared/data [--workers 2] [--only fpha]
    python benchmarks/backbone_ablation.py --only sbu --variant 'train.epochs=160'   # add one variant
    python benchmarks/backbone_ablation.py --only sbu --paired 'augment.flip=0.5' --seeds 0,1,2
    python benchmarks/backbone_ablation.py --only sbu --config configs/sbu_stgcn.yaml --paired '+ distance'

--paired runs a variant and the default side by side in one sitting (one machine), over --seeds
and every split, and reports the difference over the pairs that share seed and split (a t- and a
bootstrap interval, wins): the check that resolves a choice worth changing a default for, where
the one-at-a-time table (few seeds, unpaired, sittings on several machines) cannot. --config makes
another config of the dataset (another backbone's) the default of a paired check. Besides the
listed variants, --paired takes any KEY=VALUE override of the config, as `pmp train --set` does
(e.g. 'model.kwargs.filters=64', 'train.bn_recalibrate=true'), several separated by spaces
('augment.time_warp=0.2 train.epochs=160'; no spaces inside a value).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from paper_table import RESULTS, machine  # noqa: E402

from pmp.experiments import SweepSpec, run_sweep  # noqa: E402
from pmp.experiments.stats import mean_ci, paired_diff  # noqa: E402
from pmp.experiments.sweep import read_metrics  # noqa: E402
from pmp.machine import machine_fingerprint  # noqa: E402
from pmp.training.config import ConfigError, ExperimentConfig, apply_overrides, load_config, parse_set_options  # noqa: E402
from pmp.training.rundir import fingerprint  # noqa: E402

CONFIGS = {"fpha": ROOT / "configs/fpha.yaml", "sbu": ROOT / "configs/sbu.yaml"}
PROTOCOL = {"fpha": {"train.seed": [0, 1, 2], "data.split": ["1:1"]},
            "sbu": {"train.seed": [0], "data.split": ["1", "2", "3", "4", "5"]}}


def variants(name: str, config: Path | None = None) -> dict[str, dict]:
    """Variant -> overrides of the dataset's default config (or `config`). Features are removed one
    at a time from the default list; the other choices are switched to their alternative."""
    cfg = load_config(config or CONFIGS[name])
    feats = list(cfg.preprocess.features)
    out: dict[str, dict] = {"default": {}}
    for f in feats:
        if len(feats) > 1:
            out[f"- {f}"] = {"preprocess.features": [g for g in feats if g != f]}
    for f in ("motion", "bone", "angle", "distance"):
        if f not in feats:
            out[f"+ {f}"] = {"preprocess.features": feats + [f]}
    if "motion" not in feats:
        out["+ motion (steps 1, 4)"] = {"preprocess.features": feats + ["motion"], "preprocess.motion_steps": [1, 4]}
    if "distance" in feats and cfg.data.name == "sbu":  # the two-person subsets
        for sub in ("distance_within", "distance_cross"):
            out[f"distance -> {sub}"] = {"preprocess.features": [sub if g == "distance" else g for g in feats]}
    aug = cfg.augment
    for key, on in (("swap", 0.5), ("flip", 0.5), ("rotate", 15.0), ("scale", 0.1), ("time_warp", 0.2)):
        value = getattr(aug, key)
        if name == "fpha" and key == "swap":
            continue  # one person: nothing to swap
        out[f"augment.{key}={0 if value else on:g}"] = {f"augment.{key}": 0.0 if value else on}
    p = cfg.preprocess
    out["chunks=0 (all frames)" if p.chunks else "chunks=8"] = {"preprocess.chunks": 0 if p.chunks else 8}
    kw = cfg.model.kwargs
    if cfg.model.name == "agcn":  # its architecture's kwargs; another backbone's config gets none of these
        for key, alt in (("heads", kw.get("heads", 8) // 2), ("hidden", kw.get("hidden", 384) // 2),
                         ("dropout", 0.5 if kw.get("dropout", 0.3) != 0.5 else 0.3)):
            out[f"model.{key}={alt:g}"] = {f"model.kwargs.{key}": alt}
        if kw.get("blocks", 1) == 1:  # depth: the paper family stacks three attention + graph-convolution blocks
            for blocks in (2, 3):
                out[f"model.blocks={blocks}"] = {"model.kwargs.blocks": blocks}
    t = cfg.train  # the schedule: half and twice the epochs, half the batch (twice the steps), a third the lr
    for epochs in (t.epochs // 2, 2 * t.epochs):
        out[f"train.epochs={epochs}"] = {"train.epochs": epochs}
    out[f"train.batch_size={t.batch_size // 2}"] = {"train.batch_size": t.batch_size // 2}
    out[f"train.lr={t.lr / 3:g}"] = {"train.lr": t.lr / 3}
    out[f"train.label_smoothing={0 if t.label_smoothing else 0.1:g}"] = {"train.label_smoothing": 0.0 if t.label_smoothing else 0.1}
    # the incomplete last batch: 2-3 sequences give BatchNorm degenerate statistics on SBU's folds
    out[f"train.drop_last={str(not t.drop_last).lower()}"] = {"train.drop_last": not t.drop_last}
    out["train.mixup=0" if cfg.train.mixup else "train.mixup=0.2"] = {"train.mixup": 0.0 if cfg.train.mixup else 0.2}
    return out


def run_variant(name: str, variant: str, overrides: dict, args: argparse.Namespace,
                protocol: dict | None = None, folder: str = "", config: Path | None = None) -> dict:
    """Train the variant's runs of `protocol` (default: the dataset's) on `config` (default: the
    dataset's) under work_dirs/ablation/<name>/<folder>."""
    out = ROOT / "work_dirs/ablation" / name / folder / _slug(variant)
    spec = SweepSpec(name=f"ablation-{name}", base=config or CONFIGS[name], out=out,
                     grid={"pruning.method": ["dense"], **(protocol or PROTOCOL[name])}, overrides=overrides)
    result = run_sweep(spec, workers=args.workers, data_root=args.data_root, progress=False)
    runs = [m for m in (read_metrics(spec.out / o.run_id) for o in result.runs) if m is not None]
    ci = mean_ci([m["class_avg_acc"] for m in runs])
    return {"overrides": overrides, "class_avg_acc": ci.mean, "std": ci.std, "ci95": [ci.lo, ci.hi], "n_runs": ci.n,
            "wall_s_per_run": mean_ci([m["wall_s"] for m in runs]).mean, "params": runs[0]["params"],
            "runs": [{"seed": m["seed"], "fold": m["split"], "class_avg_acc": m["class_avg_acc"]} for m in runs],
            "failed": [o.run_id for o in result.failed]}


def config_fingerprint(cfg: ExperimentConfig) -> str:
    """The fingerprint of a config whatever its seed and split: which config a check's default arm ran."""
    cfg = copy.deepcopy(cfg)
    cfg.train.seed, cfg.data.split = 0, "*"
    return fingerprint(cfg)


def entry_config(name: str, label: str) -> Path:
    """The config a paired entry's default arm ran: its label's prefix ('configs/x.yaml: VARIANT') or the dataset's."""
    head, sep, _ = label.partition(": ")
    return ROOT / head if sep and head.endswith(".yaml") else CONFIGS[name]


def recover_config_fingerprints(paired: dict) -> None:
    """Entries written before paired checks recorded their config: take it from the default arm's run
    folders (any work_dirs/ablation/<dataset>/paired*/default* whose finished runs are the entry's,
    seed, fold and accuracy), when they are still on this machine; others stay unknown."""
    for name, entries in paired.items():
        for label, r in entries.items():
            if "config_fingerprint" in r:
                continue
            want = {(x["seed"], str(x["fold"]), x["class_avg_acc"]) for x in r["default"]["runs"]}
            for arm in sorted((ROOT / "work_dirs/ablation" / name).glob("paired*/default*")):
                runs = [d for d in arm.iterdir() if (d / "metrics.json").is_file()]
                got = {(m["seed"], str(m["split"]), m["class_avg_acc"]): d for d in runs if (m := read_metrics(d))}
                if want <= set(got):
                    r["config_fingerprint"] = config_fingerprint(load_config(got[next(iter(want))] / "config.yaml"))
                    r["config_fingerprint_from"] = str(arm.relative_to(ROOT))
                    break


def run_paired(name: str, variant: str, overrides: dict, seeds: list[int], args: argparse.Namespace,
               config: Path | None = None) -> dict:
    """The variant and the default (`config`, else the dataset's) over `seeds` x every split, in
    this sitting; their difference over the pairs of one seed and split."""
    protocol = {**PROTOCOL[name], "train.seed": seeds}
    folder = "paired" if config is None else f"paired-{config.stem}"
    arms = {v: run_variant(name, v, o, args, protocol, folder, config) for v, o in (("default", {}), (variant, overrides))}
    acc = {v: {(r["seed"], r["fold"]): r["class_avg_acc"] for r in arm["runs"]} for v, arm in arms.items()}
    pairs = sorted(set(acc["default"]) & set(acc[variant]))
    d = paired_diff([acc[variant][k] for k in pairs], [acc["default"][k] for k in pairs])
    return {"overrides": overrides, "seeds": seeds, "default": arms["default"], "variant": arms[variant],
            "n_pairs": d.n, "diff": d.mean, "ci95": [d.lo, d.hi], "bootstrap95": [d.boot_lo, d.boot_hi],
            "wins": d.wins, "ties": d.ties, "losses": d.losses,
            "config_fingerprint": config_fingerprint(load_config(config or CONFIGS[name])),
            "machine": machine(), "fingerprint": machine_fingerprint()}


def paired_table(paired: dict) -> str:
    """One row per check; *default config*: whether its default arm ran the config file as it is now."""
    lines = ["| dataset | variant | seeds x splits | default % | variant % | variant − default (points) | 95% t-interval | "
             "bootstrap | wins / ties / losses | resolved | default config | s/run (default, variant) | sitting |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    now: dict[Path, str] = {}
    for name, entries in paired.items():
        for variant, r in entries.items():
            path = entry_config(name, variant)
            now.setdefault(path, config_fingerprint(load_config(path)))
            recorded = r.get("config_fingerprint")
            config = ("not recorded" if recorded is None else "as now" if recorded == now[path]
                      else f"**older** ({recorded[:8]})")
            lo, hi = r["ci95"]
            verdict = "better" if lo > 0 else "worse" if hi < 0 else ""
            lines.append(f"| {name} | {variant} | {r['n_pairs']} | {100 * r['default']['class_avg_acc']:.2f} | "
                         f"{100 * r['variant']['class_avg_acc']:.2f} | {100 * r['diff']:+.2f} | "
                         f"[{100 * lo:+.2f}, {100 * hi:+.2f}] | [{100 * r['bootstrap95'][0]:+.2f}, {100 * r['bootstrap95'][1]:+.2f}] | "
                         f"{r['wins']} / {r['ties']} / {r['losses']} | {verdict} | {config} | "
                         f"{r['default']['wall_s_per_run']:.0f}, {r['variant']['wall_s_per_run']:.0f} | "
                         f"{r['fingerprint']['cpu_model']} (torch {r['fingerprint']['torch_cpu_capability']}), "
                         f"{r['sitting_wall_s'] / 60:.0f} min with {r.get('workers', 2)} workers |")
    return "\n".join(lines) + "\n"


def _slug(variant: str) -> str:
    return "".join(c if c.isalnum() or c in ".=-" else "_" for c in variant.replace("- ", "no_").replace("+ ", "add_"))


def table(results: dict) -> str:
    lines = ["| dataset | variant | class-avg acc % (mean +- std) | 95% CI | vs default | resolved | runs | s/run | weights |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, res in results.items():
        base = res["default"]
        for variant, r in res.items():
            lo, hi = r["ci95"]
            diff = "" if variant == "default" else f"{100 * (r['class_avg_acc'] - base['class_avg_acc']):+.2f}"
            # resolved: the two 95% intervals do not overlap (a conservative reading)
            apart = variant != "default" and (lo > base["ci95"][1] or hi < base["ci95"][0])
            lines.append(f"| {name} | {variant} | {100 * r['class_avg_acc']:.2f} +- {100 * r['std']:.2f} | "
                         f"{100 * lo:.1f}-{100 * hi:.1f} | {diff} | {'yes' if apart else ''} | {r['n_runs']} | "
                         f"{r['wall_s_per_run']:.0f} | {r['params']:,} |")
    return "\n".join(lines) + "\n"


START, END = "<!-- backbone:start -->", "<!-- backbone:end -->"


def backbone_section() -> str:
    """docs/results.md's dense-backbone section, from dense.json and this ablation's table."""
    dense = json.loads((RESULTS / "dense.json").read_text())
    f, s = dense["fpha"], dense["sbu"]
    pct = lambda a: f"{100 * a:.2f}"  # noqa: E731
    lines = [START, "## The dense backbone", "",
             f"`python benchmarks/dense.py` ({dense['meta']['machine']}; 2 workers of one torch thread each, "
             f"s per run = one run's training time, on a machine shared with other jobs); backbone `{dense['backbone']}`, "
             f"configs `{f['config']}` and `{s['config']}`. Class-averaged accuracy %, mean, sample std, 95% "
             "t-interval of the mean:", "",
             "| dataset | protocol | runs | mean | std | 95% CI | s per run | weights |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |",
             f"| FPHA | official 1:1 split, seeds 0-4 | {f['n_runs']} | {pct(f['class_avg_acc'])} | {pct(f['class_avg_acc_std'])} | "
             f"{pct(f['ci95'][0])}-{pct(f['ci95'][1])} | {f['wall_s_per_run']:.0f} | {f['params']:,} |",
             f"| SBU | official 5 folds x seeds 0-2 | {s['n_runs']} | {pct(s['class_avg_acc'])} | {pct(s['class_avg_acc_std'])} | "
             f"{pct(s['ci95'][0])}-{pct(s['ci95'][1])} | {s['wall_s_per_run']:.0f} | {s['params']:,} |",
             f"| SBU fold 5 alone (65 test sequences; the paper family's single split) | seeds 0-2 | 3 | "
             f"{pct(s['fold5_class_avg_acc'])} | | {pct(s['fold5_ci95'][0])}-{pct(s['fold5_ci95'][1])} | | |", "",
             "SBU per fold (mean over seeds): " + ", ".join(f"{i + 1}: {pct(a)}" for i, a in enumerate(s["folds"])) + ".", ""]
    agreement = {k: _grid_dense_agreement(k, dense[k]) for k in ("fpha", "sbu")}
    if any(same == 0 for same, _ in agreement.values()):
        lines += ["**The pruning tables further down are stale**: they were made on an earlier dense network (their "
                  "dense rows), not on this one; `python benchmarks/paper_table.py` regenerates them.", ""]
    else:
        lines += ["The pruning grid further down sits on this network: of its dense runs, " + "; ".join(
            f"{k.upper()} {same} of {n}" for k, (same, n) in agreement.items()) + " are these runs to the bit (same "
            "seed and fold); any other was made on another CPU model, which gives other numbers for the same config "
            "and seed ([guarantees.md](guarantees.md#what-deterministic-for-a-seed-covers)).", ""]
    md = ROOT / "docs/results/backbone_ablation.md"
    if md.is_file():
        lines += ["### Backbone ablation", "",
                  "`python benchmarks/backbone_ablation.py` (s/run: one run's training time, 2 workers on a shared "
                  "machine): each choice of the default configs "
                  "switched off or changed alone; FPHA seeds 0-2, SBU 5 folds x seed 0. *resolved*: the variant's 95% "
                  "interval and the default's do not overlap; with these few runs most differences of 1-2 points "
                  "(FPHA) or 2-5 points (SBU, one seed per fold) are not resolved.", "", md.read_text().strip(), ""]
    paired = ROOT / "docs/results/backbone_ablation_paired.md"
    if paired.is_file():
        lines += ["### Paired checks", "",
                  "`python benchmarks/backbone_ablation.py --only DATASET --paired VARIANT --seeds 0,1,2`: the variant "
                  "and the default rerun side by side in one sitting on one machine, over every seed and split; the "
                  "difference is taken over the pairs of one seed and split. *resolved*: the t-interval excludes zero. "
                  "*default config*: whether the default arm ran the config file as it is now (*older*: the file "
                  "changed since, e.g. a variant was adopted; the first hex digits of the fingerprint it ran; *not "
                  "recorded*: a check from before this column whose runs are not on this machine).",
                  "", paired.read_text().strip(), ""]
    return "\n".join(lines + [END])


def _grid_dense_agreement(name: str, entry: dict) -> tuple[int, int]:
    """(how many of the pruning grid's dense runs (RESULTS/<name>.csv) are dense.json's run of the
    same seed and fold to the bit, how many it has). None agreeing: the grid was made on another
    network; some: it sits on this one, its other seeds made on another CPU model."""
    path = RESULTS / f"{name}.csv"
    if not path.is_file():
        return 0, 0
    # a single-split dataset (FPHA) has no fold column in the grid's csv
    ours = {(str(r["seed"]), str(r["fold"]) if "folds" in entry else ""): r["class_avg_acc"] for r in entry["runs"]}
    with path.open() as f:
        grid = [r for r in csv.DictReader(f) if r["method"] == "dense"]
    return sum(abs(ours.get((r["seed"], r["fold"]), -1.0) - float(r["class_avg_acc"])) < 1e-9 for r in grid), len(grid)


def write_tables(results: dict) -> str:
    """docs/results/backbone_ablation.md (and _paired.md when there are paired checks); the first's text."""
    (ROOT / "docs/results").mkdir(parents=True, exist_ok=True)
    md = table({k: v for k, v in results.items() if k not in ("meta", "paired")})
    (ROOT / "docs/results/backbone_ablation.md").write_text(md)
    if results.get("paired"):
        (ROOT / "docs/results/backbone_ablation_paired.md").write_text(paired_table(results["paired"]))
    return md


def update_results_doc() -> None:
    """Replace (or insert, after the title) the backbone section of docs/results.md."""
    doc = ROOT / "docs/results.md"
    text = doc.read_text() if doc.is_file() else "# Results\n"
    if START in text:
        head, rest = text.split(START, 1)
        text = head + backbone_section() + rest.split(END, 1)[1]
    else:
        title, _, body = text.partition("\n")
        text = f"{title}\n\n{backbone_section()}\n{body}"
    doc.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", choices=sorted(CONFIGS))
    ap.add_argument("--report-only", action="store_true", help="re-render the tables from the results file, run nothing")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME",
                    help="run only this variant (repeatable); the file's other entries are kept as they are")
    ap.add_argument("--paired", action="append", default=[], metavar="NAME",
                    help="run this variant and the default side by side over --seeds (repeatable)")
    ap.add_argument("--seeds", default="0,1,2", help="with --paired: the seeds, e.g. 0,1,2 (default)")
    ap.add_argument("--config", type=Path, help="with --paired and --only: another config of the dataset as the default")
    args = ap.parse_args()
    path = RESULTS / "backbone_ablation.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if args.report_only:
        recover_config_fingerprints(results.get("paired", {}))
        path.write_text(json.dumps(results, indent=2))
        write_tables(results)
        update_results_doc()
        return
    names = [n for n in CONFIGS if not args.only or n == args.only]
    if args.config and not (args.paired and args.only):
        ap.error("--config goes with --paired and --only DATASET")
    config = args.config.resolve() if args.config else None
    shown = config and (config.relative_to(ROOT) if config.is_relative_to(ROOT) else config)
    if config and load_config(config).data.name != load_config(CONFIGS[args.only]).data.name:
        ap.error(f"--config {args.config}: not a config of {args.only} (data.name {load_config(config).data.name!r})")
    every = {n: variants(n, config) for n in names}
    for v in (v for v in args.paired if "=" in v and all(v not in every[n] for n in names)):
        try:  # any override of the config, as in `--set KEY=VALUE` (e.g. model.kwargs.filters=64)
            overrides = parse_set_options(v.split())  # several at once: 'KEY=VALUE KEY=VALUE'
            for n in names:
                apply_overrides(load_config(config or CONFIGS[n]), overrides)
        except ConfigError as e:
            ap.error(f"--paired {v!r}: {e}")
        for n in names:
            every[n][v] = overrides
    unknown = [v for v in args.variant + args.paired if all(v not in every[n] for n in names)]
    if unknown:
        ap.error(f"--variant/--paired {unknown[0]!r}: not a variant of {', '.join(names)}; they are: "
                 + ", ".join(sorted({v for n in names for v in every[n]}))
                 + (" (--paired also takes any KEY=VALUE override of the config)" if args.paired else ""))
    if args.paired:
        if args.variant:
            ap.error("--paired runs alone (without --variant)")
        seeds = [int(x) for x in args.seeds.split(",")]
        t0 = time.perf_counter()
        for name in names:
            for variant in (v for v in args.paired if v in every[name]):
                r = run_paired(name, variant, every[name][variant], seeds, args, config)
                r["sitting_wall_s"], r["workers"] = round(time.perf_counter() - t0, 1), args.workers
                on = f" --config {shown}" if config else ""
                r["command"] = f"python benchmarks/backbone_ablation.py --only {name}{on} --paired '{variant}' --seeds {args.seeds}"
                label = variant if config is None else f"{shown}: {variant}"
                # re-read: another paired check (another dataset) may have written since this one began
                results = json.loads(path.read_text()) if path.is_file() else {}
                entries = results.setdefault("paired", {}).setdefault(name, {})
                if label in entries and entries[label]["seeds"] != seeds:  # a check on other seeds (a
                    label += f" (seeds {args.seeds})"                        # confirmation) keeps the first
                entries[label] = r
                print(f"{name} {variant} - default: {100 * r['diff']:+.2f} [{100 * r['ci95'][0]:+.2f}, "
                      f"{100 * r['ci95'][1]:+.2f}] over {r['n_pairs']} pairs", flush=True)
                path.write_text(json.dumps(results, indent=2))
        write_tables(results)
        update_results_doc()
        return
    meta = results.pop("meta", {}) if args.variant else {}
    t0 = time.perf_counter()
    for name in names:
        chosen = {v: o for v, o in every[name].items() if not args.variant or v in args.variant}
        done = results.get(name, {}) if args.variant else {}
        for variant, overrides in chosen.items():
            done[variant] = r = run_variant(name, variant, overrides, args)
            print(f"{name} {variant}: {100 * r['class_avg_acc']:.2f} +- {100 * r['std']:.2f} ({r['n_runs']} runs)", flush=True)
        order = list(every[name])  # the table's order, whichever sitting ran a variant
        results[name] = dict(sorted(done.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    md = write_tables(results)
    sitting = {"machine": machine(), "fingerprint": machine_fingerprint(), "wall_s": round(time.perf_counter() - t0, 1),
               "protocol": PROTOCOL, "command": "python benchmarks/backbone_ablation.py"}
    if args.variant:  # a later sitting that added variants: the first sitting's record stays, this one is listed
        sitting["command"] += "".join(f" --variant '{v}'" for v in args.variant) + (f" --only {args.only}" if args.only else "")
        meta.setdefault("later_sittings", []).append(sitting)
        results["meta"] = meta
    else:
        results["meta"] = sitting
    path.write_text(json.dumps(results, indent=2))
    update_results_doc()
    print(md)


if __name__ == "__main__":
    main()
