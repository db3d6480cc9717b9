"""Named method variants in sweeps (`lth@equal`, the ablation's `pmp@lam0`), the equal-budget LTH,
and the ablation sweeps' expansion: run ids, counts and the overrides each run gets."""

from __future__ import annotations

import csv
import importlib
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pmp.experiments import SweepSpecError, expand_grid, load_sweep, parse_sweep
from pmp.experiments.sweep import build_configs, estimated_cost
from pmp.experiments.grid import split_label
from pmp.training import run_experiment

from test_training import tiny_config  # noqa: E402  (tests/ is on sys.path under pytest)

ABLATION_RATES = [0.9, 0.98, 0.99]
#: one factor at a time around PMP's defaults (pmp/pruning/pmp.py, configs/fpha.yaml's scope)
ABLATED = {
    "pmp@lam0": {"pruning.options.lam": 0.0}, "pmp@lam0.1": {"pruning.options.lam": 0.1},
    "pmp@lam10": {"pruning.options.lam": 10.0}, "pmp@kl": {"pruning.options.alignment": "kl"},
    "pmp@laplace": {"pruning.options.prior": "laplace"}, "pmp@uniform": {"pruning.options.prior": "uniform"},
    "pmp@edge-prior": {"pruning.options.edge": "prior"}, "pmp@ramp0": {"pruning.options.ramp": 0.0},
    "pmp@global": {"pruning.scope": "global"}, "pmp@s_end1e3": {"pruning.options.s_end": 1000.0},
    "pmp@s_end1e5": {"pruning.options.s_end": 100000.0}, "pmp@s_start0.1": {"pruning.options.s_start": 0.1},
    "pmp@global-lam0": {"pruning.scope": "global", "pruning.options.lam": 0.0},  # the one declared pair
}  # fmt: skip


def _spec(**extra):
    grid = {"method": ["pmp", "lth", "lth@equal"], "rate": [0.9], "seed": [0, 1]}
    mo = {"lth": {"pruning.options.rounds": 2}, "lth@equal": {"pruning.options.split_epochs": True}}
    return parse_sweep({"name": "v", "grid": grid, "method_overrides": mo, **extra})


def test_a_named_variant_runs_its_method_with_both_overrides():
    runs = {r.run_id: r for r in expand_grid(_spec())}
    assert sorted(runs) == ["lth-equal_r0.9_s0", "lth-equal_r0.9_s1", "lth_r0.9_s0", "lth_r0.9_s1",
                            "pmp_r0.9_s0", "pmp_r0.9_s1"]  # fmt: skip
    eq = runs["lth-equal_r0.9_s1"]
    assert (eq.method, eq.label, eq.axes["pruning.method"]) == ("lth", "lth@equal", "lth@equal")
    assert eq.overrides["pruning.method"] == "lth"
    assert eq.overrides["pruning.options.rounds"] == 2  # the method's overrides, then the variant's
    assert eq.overrides["pruning.options.split_epochs"] is True
    assert "pruning.options.split_epochs" not in runs["lth_r0.9_s1"].overrides
    assert runs["pmp_r0.9_s0"].label == "pmp" and not eq.extra_axes  # a variant is not an extra axis


def test_equal_budget_lth_is_costed_and_configured_at_the_others_epochs():
    spec = _spec(overrides={"train.epochs": 30})
    runs = expand_grid(spec)
    cfgs = {r.run_id: c for r, c in zip(runs, build_configs(spec, runs))}
    assert estimated_cost(cfgs["lth_r0.9_s0"]) == 90  # 2 rounds + the ticket: 3 x 30
    assert estimated_cost(cfgs["lth-equal_r0.9_s0"]) == 30
    assert cfgs["lth-equal_r0.9_s0"].pruning.method == "lth"


@pytest.mark.parametrize(
    "grid, mo, message",
    [
        (["pmp", "pmp@x"], {}, "'pmp@x': a named variant needs its method_overrides.pmp@x"),
        (["pmp", "pmp@a b"], {"pmp@a b": {"train.lr": 1}}, "'pmp@a b': a variant is method@name"),
        (["pmp", "@x"], {"@x": {"train.lr": 1}}, "'@x': a variant is method@name"),
        (["pmp"], {"pmp@x": {"train.lr": 1}}, "'pmp@x' is not in grid"),
    ],
)
def test_bad_variants_name_the_value(grid, mo, message):
    with pytest.raises(SweepSpecError, match=message):
        parse_sweep({"grid": {"method": grid}, "method_overrides": mo})


def test_method_overrides_of_a_method_only_present_as_variants_apply_to_them():
    spec = parse_sweep({"grid": {"method": ["lth@equal"]}, "method_overrides": {
        "lth": {"pruning.options.rounds": 1}, "lth@equal": {"pruning.options.split_epochs": True}}})
    (run,) = expand_grid(spec)
    assert run.overrides["pruning.options.rounds"] == 1 and run.method == "lth"


def test_equal_budget_lth_trains_the_configured_epochs_in_rounds(tmp_path):
    cfg = tiny_config(**{"pruning.method": "lth", "pruning.rate": 0.9, "train.epochs": 3,
                         "pruning.options": {"rounds": 2, "split_epochs": True}})
    m = run_experiment(cfg, tmp_path / "eq")
    assert m["epochs"] == 3 and m["exact_count"]
    assert (m["method_options"]["phases"], m["method_options"]["epoch_multiplier"]) == (3, 1)
    # one phase per epoch, each with its own LR schedule: every epoch ends at the same LR
    lrs = [float(r["lr"]) for r in csv.DictReader((tmp_path / "eq" / "log.csv").open())]
    assert len(lrs) == 3 and lrs[0] == pytest.approx(lrs[1]) == pytest.approx(lrs[2])
    full = run_experiment(tiny_config(**{"pruning.method": "lth", "pruning.rate": 0.9, "train.epochs": 3,
                                         "pruning.options": {"rounds": 2}}), tmp_path / "x3")
    assert full["epochs"] == 9


def test_lth_split_epochs_must_be_a_bool():
    from pmp.pruning.base import create_pruner
    from torch import nn

    with pytest.raises(ValueError, match="split_epochs must be true or false"):
        create_pruner("lth", nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), 0.5, split_epochs="yes")


# --------------------------------------------------------------------------------- ablation sweeps
@pytest.mark.parametrize("path, seeds, splits", [
    ("configs/sweeps/ablation.yaml", [0, 1, 2, 3, 4], ["1:1"]),
    ("configs/sweeps/ablation_sbu.yaml", [0, 1, 2], ["1", "2", "3", "4", "5"]),
])  # fmt: skip
def test_ablation_sweep_is_one_factor_at_a_time_around_the_default(path, seeds, splits):
    spec = load_sweep(path)
    runs = expand_grid(spec)
    assert spec.name == path.split("/")[-1].removesuffix(".yaml")
    labels = ["pmp", *ABLATED]
    assert spec.grid["pruning.method"] == labels
    assert len(runs) == len(labels) * len(ABLATION_RATES) * len(seeds) * len(splits)
    assert Counter(r.label for r in runs) == {m: len(ABLATION_RATES) * len(seeds) * len(splits) for m in labels}
    assert len({r.run_id for r in runs}) == len(runs)
    shared = {"pruning.method", "pruning.rate", "train.seed", "data.split"}
    for r in runs:
        assert r.method == "pmp" and r.overrides["pruning.rate"] in ABLATION_RATES
        changed = {k: v for k, v in r.overrides.items() if k not in shared}
        assert changed == ABLATED.get(r.label, {}), r.run_id  # exactly the declared moves, none for the default
    split = splits[0].replace(":", "-")
    assert f"pmp-lam0.1_r0.98_s{seeds[-1]}_f{split}" in {r.run_id for r in runs}
    build_configs(spec, runs[:: len(runs) // 7])  # every kind of run builds into a valid config


@pytest.mark.parametrize("name, base, seeds, splits, drop_last", [
    ("hard_tail_sbu", "configs/sbu_stgcn.yaml", [0], ["1", "2", "3", "4", "5"], False),
    ("hard_tail_sbu_drop_last", "configs/sbu_stgcn.yaml", [0], ["1", "2", "3", "4", "5"], True),
    ("hard_tail_fpha", "configs/fpha_stgcn.yaml", [0, 1, 2], ["1:1"], False),
])  # fmt: skip
def test_hard_tail_sweeps_move_only_the_tail_on_the_stgcn_protocol(name, base, seeds, splits, drop_last):
    """PMP with and without its hard tail beside GMP, on the backbone grid's seeds and folds; the
    table goes to the backbone's page."""
    from test_paired import load_benchmark

    ab = load_benchmark("ablation")

    spec = load_sweep(f"configs/sweeps/{name}.yaml")
    runs = expand_grid(spec)
    assert spec.name == name and str(spec.base).endswith(base)
    assert Counter(r.label for r in runs) == {m: 3 * len(seeds) * len(splits) for m in ("pmp", "pmp@tail", "gmp")}
    # the SBU sweep was measured before its base config took drop_last, and pins it off for every run;
    # all were measured before the configs made the tail PMP's default, and pin that off
    assert spec.overrides == ({"train.drop_last": False} if name == "hard_tail_sbu" else {}) | {"pruning.method_options": {}}
    shared = {"pruning.method", "pruning.rate", "train.seed", "data.split", *spec.overrides}
    for r in runs:
        changed = {k: v for k, v in r.overrides.items() if k not in shared}
        assert changed == ({"pruning.options.hard_tail": 0.25} if r.label == "pmp@tail" else {}), r.run_id
    configs = build_configs(spec, [r for r in runs if r.label == "pmp@tail"][:1])
    assert configs[0].pruning.run_options() == {"hard_tail": 0.25} and configs[0].model.name == "stgcn"
    default = build_configs(spec, [r for r in runs if r.label == "pmp"][:1])[0]
    assert default.pruning.run_options() == {}  # `pmp` is PMP without the tail
    assert configs[0].train.drop_last == drop_last  # the SBU twins: before and after the config took it
    assert ab.TUNING_TITLES[name][1] == ab.STGCN_DOC


def test_ablation_sweeps_differ_only_in_dataset_and_seeds():
    a, b = (yaml.safe_load(open(f"configs/sweeps/{n}.yaml")) for n in ("ablation", "ablation_sbu"))
    assert a["method_overrides"] == b["method_overrides"] and a["grid"]["method"] == b["grid"]["method"]
    assert a["grid"]["rate"] == b["grid"]["rate"] == ABLATION_RATES


def test_ablation_csv_has_a_column_per_option_from_each_runs_config(tmp_path):
    from pmp.experiments import report
    from pmp.training.config import save_config
    from test_experiments_report import _write
    from test_paired import load_benchmark

    ab = load_benchmark("ablation")
    options = ab.option_columns([load_sweep(p) for p in ab.SWEEPS])
    assert {k: v for k, v in ab.method_defaults("pmp").items() if k in options} == {"lam": 1.0, "alignment": "wasserstein", "prior": "gaussian", "edge": "empirical",
                                 "ramp": 0.5, "scope": "layer", "s_start": 1.0, "s_end": 1e4}  # docs/method.md
    for label, overrides in (("pmp", {}), ("pmp@lam0", {"pruning.options": {"lam": 0.0}}),
                             ("pmp@global", {"pruning.scope": "global"})):
        run = f"{label.replace('@', '-')}_r0.9_s0"
        _write(tmp_path, run, {"pruning.method": label, "pruning.rate": 0.9, "train.seed": 0},
               method="pmp", rate=0.9, class_avg_acc=0.5)
        save_config(tiny_config(**{"pruning.method": "pmp", "pruning.rate": 0.9, **overrides}), tmp_path / run / "config.yaml")
    assert set(options) <= set(ab.method_defaults("pmp"))
    rows = {r["variant"]: r for r in ab.ablation_rows(report(tmp_path, tmp_path / "report"), tmp_path, options)}
    assert set(rows) == {"default", "lam0", "global"}
    assert (rows["lam0"]["lam"], rows["lam0"]["scope"], rows["default"]["lam"]) == (0.0, "layer", 1.0)
    assert (rows["global"]["scope"], rows["global"]["prior"], rows["global"]["rate"]) == ("global", "gaussian", 0.9)
    ab.write_csv(tmp_path / "ablation.csv", list(rows.values()), options)
    header = (tmp_path / "ablation.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["dataset", "method", "variant", "lam", "alignment"] and "class_avg_acc" in header


def test_tuning_sweep_gives_every_method_the_same_budget_of_its_own_options():
    """configs/sweeps/tuning.yaml: each method its default plus 4 alternatives, one of them a global
    budget, every alternative moving only options its method takes; the same rates and seeds for all."""
    import inspect

    from pmp.pruning import METHODS

    spec = load_sweep("configs/sweeps/tuning.yaml")
    runs = expand_grid(spec)
    per_method = Counter(r.method for r in runs)
    labels = Counter(split_label(m)[0] for m in spec.grid["pruning.method"])
    assert set(labels.values()) == {5} and set(labels) == {"pmp", "mp", "gmp", "lth", "snip"}
    assert set(per_method.values()) == {5 * 3 * 2}
    global_budget = {split_label(m)[0] for m, o in spec.method_overrides.items() if o.get("pruning.scope") == "global"}
    assert global_budget == set(labels)
    for label, overrides in spec.method_overrides.items():
        method = split_label(label)[0]
        takes = {k for k, p in inspect.signature(METHODS[method].__init__).parameters.items() if p.kind is p.KEYWORD_ONLY}
        for key in overrides:
            assert key == "pruning.scope" or key.removeprefix("pruning.options.") in takes, (label, key)
    build_configs(spec, runs[::7])


def test_ablation_section_gives_each_variant_its_paired_difference_from_the_default(tmp_path):
    """docs/method.md's generated block on fabricated runs: default minus lam0 is +10 and +20 points
    (mean +15, interval t(1) * 7.07 / sqrt 2 = +-63.5), 2 wins; a variant never run is left out."""
    from pmp.experiments import report
    from test_experiments_report import _write
    from test_paired import load_benchmark

    ab = load_benchmark("ablation")
    for label, accs in (("pmp", (0.8, 0.9)), ("pmp@lam0", (0.7, 0.7))):
        for seed, acc in enumerate(accs):
            _write(tmp_path, f"{label.replace('@', '-')}_r0.99_s{seed}",
                   {"pruning.method": label, "pruning.rate": 0.99, "train.seed": seed},
                   method="pmp", rate=0.99, seed=seed, class_avg_acc=acc)
    spec = load_sweep("configs/sweeps/ablation.yaml")
    section = ab.ablation_section({"ablation": report(tmp_path, tmp_path / "report")}, {"ablation": spec},
                                  {"ablation": {"sittings": [{"sweep_wall_s": 120.0}]}})
    lines = {line.split(" | ")[0].lstrip("| "): line for line in section.splitlines() if line.startswith("| ")}
    assert "85.00 (n=2)" in lines["default"]
    assert "70.00 (n=2); +15.00 [-48.53, +78.53], 2/0/0" in lines["lam0"] and "lam 0" in lines["lam0"]
    assert "laplace" not in lines and section.startswith(ab.START) and section.endswith(ab.END)


def test_latent_extent_reads_the_widest_bin_of_the_histogram_after_training():
    from test_paired import load_benchmark

    ab = load_benchmark("ablation")
    hist = {"latent_hist": {"before": {"layer": "fc.weight", "centers": [-9.0, 9.0]},
                            "after": {"layer": "fc.weight", "centers": [-0.2, 0.0, 0.1]}}}
    assert ab.latent_extent(hist) == ("fc.weight", 0.2)
    assert ab.latent_extent({}) == (None, None)  # an archived row, or a method without histograms


def test_tuning_section_pairs_each_variant_with_its_own_methods_default(tmp_path):
    """docs/method.md's tuning block on fabricated runs: mp@pa0.3 minus mp is +5, +5 at 0.9 and
    +4, +6 at 0.99; pooled mean +5, std 0.8165, t(3) = 3.182: [+3.70, +6.30], 4 wins, so `better`;
    a variant never run says so, and each method's best setting per rate is named."""
    from pmp.experiments import report
    from test_experiments_report import _write
    from test_paired import load_benchmark

    ab = load_benchmark("ablation")
    accs = {("mp", 0.9): (0.80, 0.90), ("mp@pa0.3", 0.9): (0.85, 0.95),
            ("mp", 0.99): (0.60, 0.70), ("mp@pa0.3", 0.99): (0.64, 0.76)}
    for (label, rate), values in accs.items():
        for seed, acc in enumerate(values):
            _write(tmp_path, f"{label.replace('@', '-')}_r{rate}_s{seed}",
                   {"pruning.method": label, "pruning.rate": rate, "train.seed": seed},
                   method="mp", rate=rate, seed=seed, class_avg_acc=acc)
    spec = load_sweep("configs/sweeps/tuning.yaml")
    section = ab.tuning_section(report(tmp_path, tmp_path / "report"), spec, {"sittings": [{"sweep_wall_s": 60.0}]})
    lines = {line.split(" | ")[0].lstrip("| "): line for line in section.splitlines() if line.startswith("| ")}
    assert "| 85.00 (n=2) | 65.00 (n=2) |" in lines["**mp**"]
    assert "90.00 (n=2); +5.00 | 70.00 (n=2); +5.00 | +5.00 [+3.70, +6.30], 4/0/0 (n=4) | better" in lines["mp@pa0.3"]
    assert "not run" in lines["mp@pa0.7"] and "prune_at 0.7" in lines["mp@pa0.7"]
    best = [line for line in section.splitlines() if line.startswith("| mp | ")]
    assert best == ["| mp | 90.00 (pa0.3) | 70.00 (pa0.3) |"]
    assert section.startswith(ab.TUNING_START) and section.endswith(ab.TUNING_END)
    held = ab.tuning_section(report(tmp_path, tmp_path / "report"), load_sweep("configs/sweeps/tuning_heldout.yaml"), {})
    assert held.startswith("<!-- tuning_heldout:start -->\n### Held-out check") and held.endswith("<!-- tuning_heldout:end -->")
    assert "--name tuning_heldout --sweeps configs/sweeps/tuning_heldout.yaml" in held
    assert "mp@pa0.7" not in held and "+5.00 [+3.70, +6.30], 4/0/0 (n=4) | better" in held


def test_grid_agreement_tells_machines_of_one_model_name_apart_by_torch_kernels():
    """One model name ("AMD EPYC") covers VMs with and without AVX-512, which give other numbers for
    the same run: the label carries torch's capability; an archived row records no machine."""
    from test_paired import load_benchmark

    ab = load_benchmark("ablation")
    assert ab._cpu({"machine": {"cpu_model": "AMD EPYC", "torch_cpu_capability": "AVX2"}}) == "AMD EPYC (torch AVX2)"
    assert ab._cpu({"machine": {"cpu_model": "AMD EPYC", "torch_cpu_capability": "AVX512"}}) == "AMD EPYC (torch AVX512)"
    assert ab._cpu({"machine": {"cpu_model": "Xeon"}}) == "Xeon" and ab._cpu({}) is None


def test_ablation_records_an_interrupted_sitting(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM) inside a sweep: NAME.json keeps the sitting, marked interrupted, with its
    wall time, next to what the file held; the interrupt still ends the script."""
    import json
    import sys
    from pathlib import Path

    from test_paired import load_benchmark

    ab = load_benchmark("ablation")
    meta = tmp_path / "tuning.json"
    meta.write_text(json.dumps({"rows": 7, "timing": {"tuning": {"sittings": [{"sweep_wall_s": 60.0}]}}}))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ab, "sweep_and_report", interrupted)
    monkeypatch.setattr(sys, "argv", ["ablation.py", "--name", "tuning", "--results", str(tmp_path),
                                      "--sweeps", str(Path(ab.ROOT) / "configs/sweeps/tuning.yaml"), "--select", "seed=0"])
    with pytest.raises(KeyboardInterrupt):
        ab.main()
    doc = json.loads(meta.read_text())
    first, new = doc["timing"]["tuning"]["sittings"]
    assert doc["rows"] == 7 and first == {"sweep_wall_s": 60.0}
    assert new["interrupted"] is True and new["select"] == ["seed=0"] and new["sweep_wall_s"] >= 0


def test_grid_agreement_compares_only_runs_of_one_config(monkeypatch):
    """A sweep's runs against the grid of its base config: runs recording the same config fingerprint
    are compared (identical or not), a variant too when the grid's config has adopted it; a default
    run whose grid cell ran another config (the sweep pins an override) is only counted; a variant of
    a config the grid never ran is not compared."""
    from test_paired import load_benchmark

    from pmp.experiments.report import RunRecord

    ab = load_benchmark("ablation")

    def run(method, seed, acc, fp, name=""):
        row = {"method": method, "dataset": "sbu", "rate": 0.9, "seed": seed, "fold": "1", "class_avg_acc": acc}
        return RunRecord(row, {"fingerprint": fp, "machine": {"cpu_model": "cpu", "torch_cpu_capability": "X"}}, name)

    grid = [run("pmp", 0, 0.90, "a"), run("pmp", 1, 0.80, "b"), run("pmp", 2, 0.70, "c"), run("gmp", 0, 0.5, "d"),
            run("pmp", 3, 0.60, "t")]  # seed 3: the grid's config has adopted the sweep's `tail` variant
    ours = [run("pmp", 0, 0.90, "a"), run("pmp", 1, 0.85, "b"), run("pmp", 2, 0.70, "other"),
            run("pmp", 0, 0.99, "e", name="tail"), run("gmp", 0, 0.5, "d"),
            run("pmp", 3, 0.60, "t", name="tail"), run("pmp", 3, 0.50, "u")]
    monkeypatch.setattr(ab, "reference_grid", lambda spec: grid)
    out = ab.grid_agreement({"s": SimpleNamespace(records=ours)}, {"s": None})["s"]
    assert out["grid run on cpu (torch X)"] == {"pairs": 2, "identical": 1, "max_abs_diff_points": 5.0,
                                                "mean_abs_diff_points": 2.5}
    assert out["gmp: grid run on cpu (torch X)"]["identical"] == 1
    assert out["pmp@tail: grid run on cpu (torch X)"]["identical"] == 1
    assert out["pairs of another config (not compared)"] == 2  # seed 2, and seed 3's default


def test_the_reference_grid_is_the_one_of_the_sweeps_base_config(monkeypatch, tmp_path):
    """The attention GCN's sweeps compare with the paper grid, a backbone's with backbones.py's grid
    of it; a base config of neither has no reference."""
    from test_paired import load_benchmark

    ab = load_benchmark("ablation")
    asked = []
    monkeypatch.setattr(importlib.import_module("pmp.experiments.report"), "collect",
                        lambda out, archives: asked.append((Path(out).name, archives[0].name)) or ([], []))
    for sweep in ("hard_tail_fpha", "hard_tail_sbu_drop_last", "tuning"):
        ab.reference_grid(load_sweep(f"configs/sweeps/{sweep}.yaml"))
    assert asked == [("stgcn_fpha", "stgcn_fpha.jsonl"), ("stgcn_sbu", "stgcn_sbu.jsonl"),
                     (Path(load_sweep("configs/sweeps/fpha.yaml").out).name, "fpha.jsonl")]
    mine = tmp_path / "mine.yaml"  # a user's own config: no grid of it
    mine.write_text(Path("configs/synthetic.yaml").read_text())
    assert ab.reference_grid(SimpleNamespace(base=str(mine))) == [] and len(asked) == 3
