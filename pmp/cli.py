"""`pmp` command line: a thin layer over pmp.training, pmp.experiments and pmp.export."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import typing
from pathlib import Path
from typing import Any

import numpy as np

from pmp.training.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    load_config,
    parse_scalar,
    parse_set_options,
)

# Short flags for the options people change most; every config field also has a --section.field flag.
ALIASES = {
    "dataset": "data.name", "data_root": "data.root", "split": "data.split", "method": "pruning.method",
    "rate": "pruning.rate", "scope": "pruning.scope", "epochs": "train.epochs", "seed": "train.seed",
    "model": "model.name", "work_dir": "work_dir", "device": "train.device",
}


def _leaf_fields(cls: type, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out += _leaf_fields(tp, f"{prefix}{f.name}.")
        elif typing.get_origin(tp) is not dict:
            out.append((f"{prefix}{f.name}", tp))
    return out


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("config fields (override the YAML; values parsed as YAML scalars)")
    for key, tp in _leaf_fields(ExperimentConfig):
        g.add_argument(f"--{key}", dest=f"cfg:{key}", metavar=getattr(tp, "__name__", "VALUE").upper())
    for short, key in ALIASES.items():
        p.add_argument(f"--{short.replace('_', '-')}", dest=f"cfg:{key}", help=f"= --{key}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any dotted key, including dict entries: --set pruning.options.prior=laplace")


def _config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    cfg = load_config(args.config) if args.config else ExperimentConfig()
    overrides = {k[4:]: parse_scalar(v) for k, v in vars(args).items() if k.startswith("cfg:") and v is not None}
    overrides.update(parse_set_options(args.set))
    if overrides.get("data.name", cfg.data.name) != cfg.data.name:  # the file's loader options are not the new one's
        cfg = apply_overrides(cfg, {"data.options": {}})
    return apply_overrides(cfg, overrides) if overrides else cfg


def _dataset_label(name: str) -> str:
    """A dataset as a folder name: a generic file by its stem (not its path)."""
    return Path(name).stem if name.endswith(".npz") or Path(name).is_file() else name


def _run_name(cfg: ExperimentConfig) -> str:
    from pmp.experiments.grid import id_part

    p = cfg.pruning
    name = "dense" if p.method == "dense" else f"{p.method}_r{p.rate:g}"
    return f"{name}_s{cfg.train.seed}" + (f"_f{id_part(cfg.data.split)}" if cfg.data.split else "")


def cmd_train(args: argparse.Namespace) -> int:
    from pmp.data import load_dataset
    from pmp.training import run_experiment

    cfg = _config_from_args(args)
    label = Path(args.config).stem if args.config else _dataset_label(cfg.data.name)
    base = Path(args.run_dir) if args.run_dir else Path(cfg.work_dir) / label
    if cfg.data.split != "all":
        run_dir = base if args.run_dir else base / _run_name(cfg)
        m = run_experiment(cfg, run_dir, progress=not args.quiet, resume=args.resume, fresh=args.fresh)
        _print_metrics(m, run_dir)
        return 0
    # every split of the protocol (SBU: the 5 folds), then mean +- std
    splits = [s.name for s in load_dataset(cfg.data.name, cfg.data.root, **cfg.data.options).splits]
    results = []
    for s in splits:
        c = apply_overrides(cfg, {"data.split": s})
        run_dir = base / _run_name(c)
        results.append(run_experiment(c, run_dir, progress=not args.quiet, resume=args.resume, fresh=args.fresh))
        _print_metrics(results[-1], run_dir)
    accs = np.array([r["class_avg_acc"] for r in results])
    summary = {"splits": splits, "class_avg_acc": [float(a) for a in accs],
               "mean": float(accs.mean()), "std": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0}
    (base / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"class-averaged accuracy over {len(splits)} splits: {100 * summary['mean']:.2f} +- {100 * summary['std']:.2f}%"
          f"  (per split: {', '.join(f'{100 * a:.1f}' for a in accs)})  -> {base / 'summary.json'}")
    return 0


def _print_metrics(m: dict[str, Any], run_dir: Path) -> None:
    soft = m.get("soft_class_avg_acc")
    print(f"[{m['dataset']} {m['split']}] {m['method']} rate={m['rate']:g}: class-avg acc {100 * m['class_avg_acc']:.2f}% "
          f"(overall {100 * m['overall_acc']:.2f}%, before finalisation {100 * soft:.2f}%), achieved rate "
          f"{m['achieved_rate']:.4f}, {m['epochs']} epochs, {m['wall_s']:.1f}s -> {run_dir}")


def cmd_eval(args: argparse.Namespace) -> int:
    from pmp.training import evaluate_run

    m = evaluate_run(args.run_dir, args.data_root, rate=args.rate)
    names = m["class_names"]
    print(f"split {m['split']}: class-averaged accuracy {100 * m['class_avg_acc']:.2f}%, overall {100 * m['overall_acc']:.2f}%")
    print("per-class accuracy:")
    for n, a in zip(names, m["per_class_acc"]):
        print(f"  {n:32s} {'-' if a is None else f'{100 * a:6.2f}%'}")
    if args.json:
        Path(args.json).write_text(json.dumps(m, indent=2))
        print(f"metrics and confusion matrix -> {args.json}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from pmp.experiments import SweepSpecError, run_sweep
    from pmp.experiments.grid import parse_only

    try:
        only = parse_only(args.only)
    except SweepSpecError as e:
        raise SystemExit(f"pmp sweep: error: {e}") from None
    try:
        result = run_sweep(args.spec, out_dir=args.out, workers=args.workers, backend="ray" if args.ray else "local",
                           ray_address=args.ray, data_root=args.data_root, fresh=args.fresh, only=only)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM (pmp.experiments.sweep.terminate_as_interrupt)
        print(f"pmp sweep: {e or 'interrupted'}; finished runs are kept, the same command resumes", file=sys.stderr)
        return 130
    print(result.summary() if hasattr(result, "summary") else result)
    return 0 if not getattr(result, "failed", None) else 1


def cmd_report(args: argparse.Namespace) -> int:
    from pmp.experiments import report

    rep = report(args.runs_dir, out_dir=args.out, archives=args.archive)
    print(rep.markdown if hasattr(rep, "markdown") else rep)
    return 0


def cmd_archive(args: argparse.Namespace) -> int:
    from pmp.experiments import archive

    if args.action == "pack":
        n = archive.pack(args.runs_dir, args.archive)
        print(f"{args.archive}: {n} runs of {args.runs_dir} added or updated")
    elif args.action == "restore":
        runs = archive.restore(args.archive, args.runs_dir)
        print(f"{args.runs_dir}: {len(runs)} finished runs restored from {args.archive}")
    else:
        n = archive.import_rows(args.csv, args.archive, args.source)
        print(f"{args.archive}: rows of {n} runs imported from {args.csv}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.rate is not None:
        return _export_at_rate(args)
    fmt = args.format or ("onnx" if args.output.lower().endswith(".onnx") else "pmp")
    if fmt == "onnx":
        from pmp.export.onnx import export_onnx

        if args.fp16 or args.no_compress:
            raise ValueError("--fp16 and --no-compress apply to .pmp files only")

        out = export_onnx(args.run_dir, args.output, sparse=args.onnx_sparse)
    else:
        from pmp.export import export_run

        out = export_run(args.run_dir, args.output, fp16=args.fp16, compress=not args.no_compress)
    print(f"exported {args.run_dir} -> {out} ({Path(out).stat().st_size / 1024:.1f} KiB)")
    return 0


def _export_at_rate(args: argparse.Namespace) -> int:
    """A multi-rate (mrmp) run read at one rate, exported as a .pmp file."""
    from pmp.export.format import save_compact
    from pmp.training.multirate import model_at_rate

    if getattr(args, "format", None) == "onnx" or args.output.lower().endswith(".onnx"):
        raise ValueError("--rate applies to .pmp exports only")
    model, masks, spec = model_at_rate(args.run_dir, args.rate, args.data_root)
    out = save_compact(model, spec, masks, args.output, fp16=args.fp16, compress=not args.no_compress)
    print(f"exported {args.run_dir} at rate {args.rate:g} -> {out} ({Path(out).stat().st_size / 1024:.1f} KiB)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from pmp.export import load_sparse
    from pmp.export.inputs import evaluation_inputs
    from pmp.training.metrics import classification_metrics

    module = load_sparse(args.model)
    data = evaluation_inputs(args.model, module.spec, args.dataset, args.data_root, args.split)
    ds, x, y = data.dataset, data.x, data.y
    with torch.no_grad():
        pred = torch.cat([module(x[i : i + 256]) for i in range(0, len(x), 256)]).argmax(1).numpy()
    m = classification_metrics(y, pred, ds.num_classes)
    print(f"{args.model} on {ds.name} split {data.split_name} ({len(y)} sequences): class-averaged accuracy "
          f"{100 * m.class_avg_acc:.2f}%, overall {100 * m.overall_acc:.2f}%")
    if args.output:
        np.savetxt(args.output, pred, fmt="%d")
        print(f"predictions -> {args.output}")
    return 0


def cmd_bench_inference(args: argparse.Namespace) -> int:
    from pmp.export.bench import run_benchmark, summary

    result = run_benchmark([float(r) for r in args.rates.split(",")], args.out, repeats=args.repeats,
                           threads=args.threads, block=args.block)
    print(summary(result, args.out))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from pmp.models import list_models
    from pmp.pruning import METHODS

    print("models: " + ", ".join(list_models()))
    print("methods: " + ", ".join(sorted(METHODS)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pmp", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--reproducible", action="store_true",
                   help="pin torch's CPU kernels to AVX2 (ATEN_CPU_CAPABILITY), so that every x86-64 machine gives "
                        "the same numbers for a seed; same as the env variable PMP_REPRODUCIBLE=1 (docs/guarantees.md)")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (and prune) one run; --split all runs every fold")
    t.add_argument("config", nargs="?", help="YAML config (configs/*.yaml); defaults = built-in synthetic data")
    t.add_argument("--run-dir", help="run folder (default: WORK_DIR/<config>/<method>_r<rate>_s<seed>[_f<split>])")
    t.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from the run folder's checkpoint of the same config (default: on; "
                        "--no-resume: refuse to, instead of continuing)")
    t.add_argument("--fresh", action="store_true",
                   help="discard the run folder's earlier results and checkpoint (another config's, too) and "
                        "start over; without it a folder holding another config's results is an error")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.add_argument("--tensorboard", dest="cfg:train.tensorboard", action="store_const", const="true",
                   help="= --train.tensorboard true: TensorBoard event files in RUN/tensorboard/ (needs pmp[tensorboard])")
    _add_config_flags(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="re-evaluate a finished run: per-class accuracy, confusion matrix")
    e.add_argument("run_dir")
    e.add_argument("--data-root")
    e.add_argument("--json", help="write metrics and the confusion matrix to this JSON file")
    e.add_argument("--rate", type=float, help="a multi-rate (mrmp) run: evaluate its network at this rate")
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("sweep", help="run a grid of runs (methods x rates x seeds x splits)")
    s.add_argument("spec", help="sweep YAML (configs/sweeps/*.yaml)")
    s.add_argument("--out", help="sweep folder (default: the spec's `out`)")
    s.add_argument("--workers", type=int, help="runs in flight (default: 2 local workers; with Ray, every CPU of the cluster)")
    s.add_argument("--ray", metavar="ADDRESS",
                   help="run on Ray (needs pmp[ray]): 'local' (a private instance on 127.0.0.1), 'auto' (the "
                        "cluster running on this machine) or a cluster address")
    s.add_argument("--fresh", action="store_true",
                   help="retrain finished runs that were made with another config (default: refuse to start)")
    s.add_argument("--data-root")
    s.add_argument("--only", action="append", metavar="AXIS=V1,V2",
                   help="run only the grid's runs with these values (repeatable; e.g. seed=0,1,2): a sweep "
                        "that spans sittings finishes whole cells first; the rest land in the same folders later")
    s.set_defaults(func=cmd_sweep)

    r = sub.add_parser("report", help="aggregate a sweep folder: results.csv, results.md, plots")
    r.add_argument("runs_dir")
    r.add_argument("--out", help="output folder (default: RUNS_DIR/report)")
    r.add_argument("--archive", action="append", metavar="FILE",
                   help="also report the runs of this archive (pmp archive) not under RUNS_DIR; repeatable")
    r.set_defaults(func=cmd_report)

    a = sub.add_parser("archive", help="keep a sweep's finished runs in one committable file, and restore them")
    asub = a.add_subparsers(dest="action", required=True)
    ap = asub.add_parser("pack", help="add RUNS_DIR's finished runs (metrics.json, run.json) to ARCHIVE")
    ap.add_argument("runs_dir")
    ap.add_argument("archive")
    ar = asub.add_parser("restore", help="write ARCHIVE's runs missing from RUNS_DIR back, as finished runs")
    ar.add_argument("archive")
    ar.add_argument("runs_dir")
    ai = asub.add_parser("import-rows", help="archive a report's results.csv rows of runs whose folders are gone")
    ai.add_argument("csv")
    ai.add_argument("archive")
    ai.add_argument("--source", required=True, help="where the rows came from, e.g. the commit of the csv")
    for q in (ap, ar, ai):
        q.set_defaults(func=cmd_archive)

    x = sub.add_parser("export", help="export a finished run: compact sparse .pmp file, or ONNX")
    x.add_argument("run_dir")
    x.add_argument("--rate", type=float, help="a multi-rate (mrmp) run: export its network at this rate")
    x.add_argument("--data-root", help="with --rate: the training data, to recalibrate BatchNorm at that rate")
    x.add_argument("-o", "--output", required=True, help="output file (*.pmp or *.onnx)")
    x.add_argument("--format", choices=("pmp", "onnx"),
                   help="pmp: compact sparse file for pmp's runtime; onnx: the masked dense graph for ONNX Runtime "
                        "and other ONNX consumers (needs pmp[onnx]); default: by the output's suffix")
    x.add_argument("--onnx-sparse", action="store_true",
                   help="onnx: store pruned weights as ONNX sparse tensors (smaller file, same graph)")
    x.add_argument("--no-compress", action="store_true",
                   help="store tensors raw (default: lossless byte-plane DEFLATE where smaller)")
    x.add_argument("--fp16", action="store_true",
                   help="half-precision values (lossy: logits move by ~1e-3 of their largest magnitude)")
    x.set_defaults(func=cmd_export)

    pr = sub.add_parser("predict", help="run an exported model with sparse kernels on a dataset's test split")
    pr.add_argument("model", help="exported *.pmp file")
    pr.add_argument("--dataset", help="dataset name or .npz path (default: the one it was trained on)")
    pr.add_argument("--data-root")
    pr.add_argument("--split", help="split/fold name (default: the one it was trained on, else the first)")
    pr.add_argument("-o", "--output", help="write predicted class ids here, one per line")
    pr.set_defaults(func=cmd_predict)

    b = sub.add_parser("bench-inference", help="dense vs sparse CPU latency and file sizes")
    b.add_argument("--rates", default="0.9,0.95,0.98,0.99")
    b.add_argument("--repeats", type=int, default=200, help="timed calls per configuration (medians)")
    b.add_argument("--threads", type=int, help="torch and numba threads (default: the machine's default)")
    b.add_argument("--block", type=int, default=10,
                   help="calls in a row per implementation in the steady-state timing (1: call by call)")
    b.add_argument("--out", default="benchmarks/results/inference.json")
    b.set_defaults(func=cmd_bench_inference)

    ls = sub.add_parser("list", help="registered models and pruning methods")
    ls.set_defaults(func=cmd_list)
    return p


def _rerun_reproducible(argv: list[str]) -> int:
    """The command again in a fresh interpreter with PMP_REPRODUCIBLE=1: torch reads its CPU
    capability once, when imported, which has happened in this one."""
    import os
    import subprocess

    from pmp.machine import REPRODUCIBLE_ENV

    env = {**os.environ, REPRODUCIBLE_ENV: "1"}
    return subprocess.run([sys.executable, "-m", "pmp.cli", *argv], env=env).returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.reproducible:
        from pmp.machine import reproducible_active

        if not reproducible_active():
            return _rerun_reproducible(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ImportError, KeyError, ValueError) as e:
        print(f"pmp {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
