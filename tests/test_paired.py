"""Paired statistics (PMP minus each method over runs sharing a seed and fold) on fabricated runs
whose differences, intervals and unpaired runs are worked out by hand."""

from __future__ import annotations

import csv
import json
import math
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pmp.experiments.report import report
from pmp.experiments.stats import paired_diff

from test_experiments_report import _write  # noqa: E402  (tests/ is on sys.path under pytest)

T975_2, T975_1 = 4.302653, 12.706205  # t quantiles, 2 and 1 degrees of freedom


def test_paired_diff_by_hand():
    # differences -10, -9, -10: mean -29/3, sample std sqrt(1/3), half-width t(2) * std / sqrt(3) = t(2) / 3
    d = paired_diff([70.0, 75.0, 80.0], [80.0, 84.0, 90.0])
    assert (d.n, d.wins, d.ties, d.losses) == (3, 0, 0, 3)
    assert d.mean == pytest.approx(-29 / 3) and d.std == pytest.approx(math.sqrt(1 / 3))
    assert d.hi - d.mean == pytest.approx(T975_2 / 3, rel=1e-6) and d.mean - d.lo == pytest.approx(T975_2 / 3)
    # two pairs, +10 and 0: bootstrap means are 10, 5 or 0 with chances 1/4, 1/2, 1/4 -> [0, 10]
    two = paired_diff([70.0, 75.0], [60.0, 75.0])
    assert (two.wins, two.ties, two.losses, two.mean) == (1, 1, 0, 5.0)
    assert (two.boot_lo, two.boot_hi) == (0.0, 10.0)
    assert two.hi - 5.0 == pytest.approx(T975_1 * math.sqrt(50) / math.sqrt(2), rel=1e-6)


def test_one_pair_has_no_interval_and_bad_input_is_an_error():
    one = paired_diff([0.5], [0.25])
    assert (one.n, one.mean, one.wins) == (1, 0.25, 1)
    assert all(math.isnan(v) for v in (one.lo, one.hi, one.boot_lo, one.boot_hi))
    for a, b in (([], []), ([1.0], [1.0, 2.0]), ([[1.0]], [[1.0]])):
        with pytest.raises(ValueError, match="paired_diff"):
            paired_diff(a, b)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100)), min_size=2, max_size=12))
def test_paired_diff_is_antisymmetric_and_its_intervals_hold_the_mean(pairs):
    a, b = (np.array(v, dtype=float) for v in zip(*pairs))
    ab, ba = paired_diff(a, b), paired_diff(b, a)
    assert ab.wins + ab.ties + ab.losses == ab.n == len(pairs)
    assert (ab.wins, ab.ties, ab.losses) == (ba.losses, ba.ties, ba.wins)
    assert ab.mean == pytest.approx(-ba.mean) and ab.lo == pytest.approx(-ba.hi)
    assert ab.lo <= ab.mean + 1e-9 and ab.mean - 1e-9 <= ab.hi
    d = a - b
    assert d.min() - 1e-9 <= ab.boot_lo <= ab.boot_hi <= d.max() + 1e-9
    assert paired_diff(a, b) == ab  # the bootstrap is seeded: the same report every time


@pytest.fixture(scope="module")
def rep(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    for seed, acc in ((0, 0.80), (1, 0.84), (2, 0.90)):
        _write(runs, f"dense_s{seed}", method="dense", rate=0.0, seed=seed, class_avg_acc=acc)
    for method, accs in (("pmp", (0.70, 0.75, 0.80)), ("gmp", (0.72, 0.70, 0.70))):
        for seed, acc in enumerate(accs):
            _write(runs, f"{method}_r0.9_s{seed}", method=method, rate=0.9, seed=seed, class_avg_acc=acc)
    for seed, acc in ((0, 0.60), (1, 0.75), (3, 0.50)):  # seed 2 missing, seed 3 has no PMP partner
        _write(runs, f"mp_r0.9_s{seed}", method="mp", rate=0.9, seed=seed, class_avg_acc=acc)
    _write(runs, "lth-equal_r0.9_s0", {"pruning.method": "lth@equal", "pruning.rate": 0.9, "train.seed": 0},
           method="lth", rate=0.9, seed=0, class_avg_acc=0.65)
    _write(runs, "lth_r0.9_s0", {"pruning.method": "lth", "pruning.rate": 0.9, "train.seed": 0},
           method="lth", rate=0.9, seed=0, class_avg_acc=0.60, epochs=300)
    _write(runs, "mp_r0.99_s0", method="mp", rate=0.99, seed=0, class_avg_acc=0.1)  # PMP never ran at 0.99
    for name, method, fold, acc in (("pmp_f1", "pmp", "1", 0.9), ("pmp_f2", "pmp", "2", 0.8),
                                    ("mp_f1", "mp", "1", 0.85), ("mp_f2", "mp", "2", 0.8)):
        _write(runs / "sbu", name, dataset="sbu", method=method, rate=0.9, split=fold, class_avg_acc=acc)
    _write(runs / "again", "mp_f2", dataset="sbu", method="mp", rate=0.9, split="2", class_avg_acc=0.7)
    return report(runs, tmp_path_factory.mktemp("report"))


def _at(rep, dataset, rate, other):
    (p,) = [p for p in rep.paired if (p.dataset, p.rate, p.other) == (dataset, rate, other)]
    return p


def test_pairs_share_seed_and_fold_and_unpaired_runs_are_listed(rep):
    dense = _at(rep, "fpha", 0.9, "dense")  # dense (rate 0) pairs with PMP at every rate
    assert (dense.stats.n, dense.stats.mean, dense.stats.losses) == (3, pytest.approx(-29 / 3), 3)
    mp = _at(rep, "fpha", 0.9, "mp")
    assert (mp.stats.n, mp.stats.mean, mp.stats.wins, mp.stats.ties) == (2, 5.0, 1, 1)
    assert (mp.unpaired_reference, mp.unpaired_other) == (["s2"], ["s3"])
    gmp = _at(rep, "fpha", 0.9, "gmp")  # -2, +5, +10
    assert (gmp.stats.mean, gmp.stats.wins, gmp.stats.losses) == (pytest.approx(13 / 3), 2, 1)
    eq = _at(rep, "fpha", 0.9, "lth@equal")  # a named variant is paired on its own, not with lth
    assert (eq.stats.n, eq.stats.mean, eq.unpaired_reference) == (1, pytest.approx(5.0), ["s1", "s2"])
    assert _at(rep, "fpha", 0.9, "lth").stats.mean == pytest.approx(10.0)
    missing = _at(rep, "fpha", 0.99, "mp")  # a rate the reference lacks is a row, not a silent gap
    assert (missing.stats, missing.unpaired_reference, missing.unpaired_other) == (None, [], ["s0"])
    sbu = _at(rep, "sbu", 0.9, "mp")  # fold 2 of mp is in two sweeps: ambiguous, left out and said so
    assert (sbu.stats.n, sbu.stats.mean, sbu.duplicates) == (1, pytest.approx(5.0), ["s0 f2"])


def test_paired_csv_markdown_and_plot(rep):
    rows = list(csv.DictReader((rep.files[0].parent / "paired.csv").open()))
    mp = next(r for r in rows if (r["dataset"], r["rate"], r["other"]) == ("fpha", "0.9", "mp"))
    assert (mp["reference"], mp["n"], float(mp["mean_diff"]), mp["wins"], mp["ties"], mp["losses"]) == (
        "pmp", "2", 5.0, "1", "1", "0")
    assert (mp["unpaired_reference"], mp["unpaired_other"], float(mp["boot_lo"]), float(mp["boot_hi"])) == (
        "s2", "s3", 0.0, 10.0)
    assert float(mp["t_hi"]) - 5.0 == pytest.approx(T975_1 * 5.0, rel=1e-6)  # std sqrt(50) / sqrt(2) = 5
    assert "### Paired differences: pmp minus each method" in rep.markdown
    assert "| 90 % | mp | 2 | +5.00 | [-58.53, +68.53] | [+0.00, +10.00] | 1 / 1 / 0 | pmp: s2; mp: s3 |" in rep.markdown
    assert "| 99 % | mp | 0 |  |  |  |  | mp: s0 |" in rep.markdown
    assert "| 90 % | lth@equal | 1 | +5.00 |  |  | 1 / 0 / 0 | pmp: s1, s2 |" in rep.markdown
    assert "| Pruning rate | dense | pmp | mp | gmp | lth | lth@equal |" in rep.markdown
    png = rep.files[0].parent / "plots" / "paired_fpha.png"
    assert png in rep.files and png.read_bytes()[:4] == b"\x89PNG" and "plots/paired_fpha.png" in rep.markdown


def test_results_rows_keep_the_method_and_name_the_variant(rep):
    rows = list(csv.DictReader((rep.files[0].parent / "results.csv").open()))
    lth = {r["variant"]: r for r in rows if r["method"] == "lth"}
    assert set(lth) == {"", "equal"} and lth[""]["epochs"] == "300"


def load_benchmark(name: str):
    """A script of benchmarks/ as a module (they are not a package; they put benchmarks/ on sys.path)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_claim_check_reads_the_paired_intervals(rep, tmp_path):
    pt = load_benchmark("paper_table")
    # at 0.9 PMP leads gmp least (-2, +5, +10: mean 13/3, t-interval about ±15): the best baseline
    (line,) = [x for x in pt.claim_check("fpha", rep.paired) if x.startswith("| 0.9 |")]
    assert line.startswith("| 0.9 | PMP >= best baseline | gmp | 3 | +4.33 [-10.64, +19.31] | 2 / 0 / 1 |")
    assert line.endswith("| yes on the mean; the interval includes zero |")
    runs = tmp_path / "runs"
    for seed, (dense, pmp, mp) in enumerate(((0.90, 0.88, 0.70), (0.92, 0.90, 0.85))):
        _write(runs, f"dense_s{seed}", method="dense", rate=0.0, seed=seed, class_avg_acc=dense)
        _write(runs, f"pmp_s{seed}", method="pmp", rate=0.99, seed=seed, class_avg_acc=pmp)
        _write(runs, f"mp_s{seed}", method="mp", rate=0.99, seed=seed, class_avg_acc=mp)
    _write(runs, "gmp_s0", method="gmp", rate=0.99, seed=0, class_avg_acc=0.87)
    lines = [x for x in pt.claim_check("fpha", report(runs, tmp_path / "out").paired) if x.startswith("| 0.99 |")]
    assert [x.split(" | ")[1:4] for x in lines] == [
        ["PMP >= best baseline", "gmp", "1"], ["PMP - MP >= +10", "mp", "2"], ["within 3 points of dense", "dense", "2"]]
    assert lines[0].endswith("| +1.00 no interval (one pair) | 1 / 0 / 0 | yes on one pair |")
    assert lines[1].endswith("| yes on the mean; the interval includes +10 |")  # +18 and +5: mean 11.5
    assert lines[2].endswith("| -2.00 [-2.00, -2.00] | 0 / 0 / 2 | yes; the interval excludes -3 |")


def test_unpaired_keys_are_listed_in_seed_order():
    from pmp.experiments.report import RunRecord, pair

    def rec(method, seed):
        return RunRecord({"dataset": "d", "method": method, "rate": 0.9, "seed": seed, "fold": "",
                          "class_avg_acc": 0.5}, {})

    (p,) = pair([rec("pmp", 0), rec("mp", 0), *(rec("pmp", s) for s in (10, 2, 1))])
    assert (p.stats.n, p.unpaired_reference, p.unpaired_other) == (1, ["s1", "s2", "s10"], [])


def test_readme_table_reads_the_report_cells(rep):
    """README's generated pruning table: means of the report's cells, dense on every rate's row, a
    method without runs left blank, the run count against the grid's."""
    pt = load_benchmark("paper_table")
    lines = pt.readme_table({"fpha": rep}, {"fpha": {"grid_runs": 99}}).splitlines()
    assert lines[0] == pt.README_START and lines[-1] == pt.README_END
    (row,) = [x for x in lines if "| 0.9 |" in x]
    cells = [c.strip() for c in row.strip("|").split("|")]
    n = sum(1 for r in rep.records if r.row["dataset"] == "fpha")
    assert cells[:3] == ["FPHA", f"{n} of 99: seeds 0,1,2,3", "0.9"]
    assert cells[3:] == ["75.00", "61.67", "70.67", "60.00", "65.00", "", "84.67"]  # PMP, MP, GMP, LTH, LTH equal, SNIP, dense


def _paper_table_in(tmp_path, monkeypatch):
    """benchmarks/paper_table.py with its result folder under tmp_path."""
    pt = load_benchmark("paper_table")
    results = tmp_path / "benchmarks" / "results"
    (results / "archive").mkdir(parents=True)
    monkeypatch.setattr(pt, "ROOT", tmp_path)
    monkeypatch.setattr(pt, "RESULTS", results)
    monkeypatch.setattr(pt, "ARCHIVES", results / "archive")
    return pt, results


def test_supersede_sets_a_grids_archive_and_sittings_aside(tmp_path, monkeypatch):
    """--supersede: the dataset's archive moves (not copied, not deleted) and its sittings leave
    meta.timing, so a new grid's wall time counts its own sittings; the other dataset is untouched;
    the same label twice, or nothing to set aside, is refused."""
    pt, results = _paper_table_in(tmp_path, monkeypatch)
    (results / "archive" / "fpha.jsonl").write_text('{"run": 1}\n')
    timing = {"fpha": {"sittings": [{"sweep_wall_s": 30.0}], "runs": 1}, "sbu": {"sittings": [{"sweep_wall_s": 9.0}]}}
    (results / "pmp.json").write_text(json.dumps({"fpha": {"0.9": {}}, "meta": {"timing": timing, "command": "c"}}))
    pt.supersede("fpha", "old")
    assert not (results / "archive" / "fpha.jsonl").exists()
    assert (results / "archive" / "superseded" / "fpha_old.jsonl").read_text() == '{"run": 1}\n'
    doc = json.loads((results / "pmp.json").read_text())
    assert doc["meta"]["timing"] == {"sbu": {"sittings": [{"sweep_wall_s": 9.0}]}} and doc["meta"]["command"] == "c"
    assert doc["meta"]["superseded"]["fpha_old"] == {
        "sittings": [{"sweep_wall_s": 30.0}], "runs": 1, "archive": "benchmarks/results/archive/superseded/fpha_old.jsonl"}
    assert doc["fpha"] == {"0.9": {}}  # the cells stay until the new grid's report replaces them
    with pytest.raises(SystemExit, match="nothing to set aside"):
        pt.supersede("fpha", "again")
    (results / "archive" / "fpha.jsonl").write_text("{}\n")
    with pytest.raises(SystemExit, match="exists already"):
        pt.supersede("fpha", "old")
    assert (results / "archive" / "fpha.jsonl").is_file()


def test_an_interrupted_sitting_is_recorded(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM, which sweeps turn into it) inside the sweep: the sitting is recorded as
    interrupted with its wall time, earlier sittings and legacy keys folded in once, then it re-raises."""
    pt, results = _paper_table_in(tmp_path, monkeypatch)
    legacy = {"sweep_wall_s": 50.0, "failed": [], "runs": 3}  # a record from before sittings were kept
    (results / "pmp.json").write_text(json.dumps({"meta": {"timing": {"fpha": legacy}}}))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pt, "sweep_and_report", interrupted)
    monkeypatch.setattr(pt, "DATASETS", {"fpha": pt.DATASETS["fpha"]})
    monkeypatch.setattr(sys, "argv", ["paper_table.py", "--only", "fpha", "--seeds", "3"])
    with pytest.raises(KeyboardInterrupt):
        pt.main()
    entry = json.loads((results / "pmp.json").read_text())["meta"]["timing"]["fpha"]
    (old, new) = entry["sittings"]
    assert old == {"sweep_wall_s": 50.0, "failed": []} and "sweep_wall_s" not in entry and entry["runs"] == 3
    assert new["seeds"] == [3] and new["interrupted"] is True and new["sweep_wall_s"] >= 0
    assert pt.sittings(entry) == entry["sittings"]  # read back: not counted twice


def test_a_named_pmp_variant_is_paired_with_the_methods_that_are_not_pmp(tmp_path):
    """pmp@v gets its own paired table: pmp@v minus gmp and dense by hand; never minus pmp (that pair is
    in PMP's own table, with the sign flipped)."""
    runs = tmp_path / "runs"
    for seed, (dense, pmp, var, gmp) in enumerate(((0.90, 0.80, 0.85, 0.82), (0.92, 0.81, 0.88, 0.84))):
        _write(runs, f"dense_s{seed}", method="dense", rate=0.0, seed=seed, class_avg_acc=dense)
        _write(runs, f"pmp_s{seed}", method="pmp", rate=0.99, seed=seed, class_avg_acc=pmp)
        _write(runs, f"gmp_s{seed}", method="gmp", rate=0.99, seed=seed, class_avg_acc=gmp)
        _write(runs, f"pmp-v_s{seed}", {"pruning.method": "pmp@v", "pruning.rate": 0.99, "train.seed": seed},
               method="pmp", rate=0.99, seed=seed, class_avg_acc=var)
    rep = report(runs, tmp_path / "out")
    got = {(p.reference, p.other): p.stats for p in rep.variant_paired}
    assert set(got) == {("pmp@v", "dense"), ("pmp@v", "gmp")}
    assert (got["pmp@v", "gmp"].mean, got["pmp@v", "gmp"].wins) == (pytest.approx(3.5), 2)  # +3, +4 points
    assert got["pmp@v", "dense"].mean == pytest.approx(-4.5)  # -5, -4 points
    assert {(p.reference, p.other) for p in rep.paired} == {("pmp", "dense"), ("pmp", "pmp@v"), ("pmp", "gmp")}
    assert "### Paired differences: pmp@v minus each method that is not pmp" in rep.markdown
    with open(tmp_path / "out" / "paired.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["reference"], r["other"]) for r in rows) == [
        ("pmp", "dense"), ("pmp", "gmp"), ("pmp", "pmp@v"), ("pmp@v", "dense"), ("pmp@v", "gmp")]


def test_confusion_sums_finished_runs_and_lists_where_each_class_goes(tmp_path):
    from pmp.training.checkpoint import write_sealed_json

    confusion = load_benchmark("confusion")
    names = ["a", "b", "c"]
    for run, m in (("r1", [[3, 1, 0], [0, 2, 0], [0, 0, 1]]), ("r2", [[2, 0, 0], [1, 1, 1], [0, 0, 4]])):
        (tmp_path / run).mkdir()
        write_sealed_json(tmp_path / run / "metrics.json", {"class_names": names, "confusion": m})
    (tmp_path / "unfinished").mkdir()  # no metrics: skipped, not counted
    out = confusion.summed_confusion([tmp_path])
    assert out["confusion"] == [[5, 1, 0], [1, 3, 1], [0, 0, 5]] and len(out["runs"]) == 2
    assert out["classes"]["b"] == {"sequences": 5, "errors": 2, "to": {"a": 1, "c": 1}}
    assert out["classes"]["c"] == {"sequences": 5, "errors": 0, "to": {}}
    (tmp_path / "r3").mkdir()
    write_sealed_json(tmp_path / "r3" / "metrics.json", {"class_names": ["x", "y", "z"], "confusion": m})
    with pytest.raises(SystemExit, match="r3: other classes"):
        confusion.summed_confusion([tmp_path])


def test_paired_checks_say_whether_their_default_arm_ran_todays_config(tmp_path, monkeypatch):
    """The config's fingerprint ignores seed and split but not a setting; a paired row whose config
    file changed since it ran says so, one from before the field existed says it is not recorded."""
    import shutil

    from pmp.training.config import load_config

    ab = load_benchmark("backbone_ablation")
    cfg = tmp_path / "c.yaml"
    shutil.copy(ab.ROOT / "configs/synthetic.yaml", cfg)
    base = load_config(cfg)
    other = load_config(cfg)
    other.train.seed, other.data.split = 7, "elsewhere"
    assert ab.config_fingerprint(base) == ab.config_fingerprint(other)
    other.train.epochs += 1
    assert ab.config_fingerprint(base) != ab.config_fingerprint(other)
    monkeypatch.setattr(ab, "CONFIGS", {"syn": cfg})
    arm = {"class_avg_acc": 0.9, "wall_s_per_run": 1.0}
    row = {"n_pairs": 3, "default": arm, "variant": arm, "diff": 0.0, "ci95": [-0.1, 0.1], "bootstrap95": [-0.1, 0.1],
           "wins": 1, "ties": 1, "losses": 1, "fingerprint": {"cpu_model": "cpu", "torch_cpu_capability": "x"},
           "sitting_wall_s": 60.0}
    table = ab.paired_table({"syn": {"now": {**row, "config_fingerprint": ab.config_fingerprint(base)},
                                     "then": {**row, "config_fingerprint": ab.config_fingerprint(other)},
                                     "unknown": row}})
    marks = {line.split(" | ")[1]: line.split(" | ")[10] for line in table.splitlines()[2:]}
    assert marks == {"now": "as now", "then": f"**older** ({ab.config_fingerprint(other)[:8]})",
                     "unknown": "not recorded"}


def test_speed_sittings_keep_the_median_ratio_and_every_sitting(monkeypatch):
    """backbones.py --sittings: the reported speedups are the medians of the sittings' ratios, each
    sitting is listed, and the parity error is the worst sitting's."""
    bb = load_benchmark("backbones")
    ratios = iter([(2.0, 3.0), (2.6, 2.1), (2.2, 2.5)])

    def fake(backbone, repeats, block, overrides=None):
        b1, b64 = next(ratios)
        return {"batch1": b1, "batch64": b64, "batch1_us": {"dense": 2 * b1, "sparse": 2.0},
                "batch64_us": {"dense": 3 * b64, "sparse": 3.0}, "batch1_max_abs_diff": b1 / 1e6,
                "batch64_max_abs_diff": 0.0, "runtime": "SparseGeneric"}

    monkeypatch.setattr(bb, "speedup", fake)
    out = bb.speedup_sittings("ddnet", 10, 5, 3)
    assert (out["batch1"], out["batch64"]) == (2.2, 2.5)
    assert out["sittings"] == [{"batch1": 2.0, "batch64": 3.0}, {"batch1": 2.6, "batch64": 2.1},
                               {"batch1": 2.2, "batch64": 2.5}]
    assert out["batch1_us"] == {"dense": 4.4, "sparse": 2.0} and out["batch1_max_abs_diff"] == 2.6e-6
    ratios = iter([(1.5, 1.7)])
    assert "sittings" not in bb.speedup_sittings("ddnet", 10, 5, 1)


def test_backbones_set_times_a_variant_without_touching_the_entries(tmp_path, monkeypatch):
    """backbones.py --set: the variant's keys reach the deployment model; it must be written to
    another file than backbones.json, and agcn's accuracies (the default's paper grid) are refused."""
    bb = load_benchmark("backbones")
    variant = bb.deploy_kwargs("agcn", {"model.kwargs.temporal": 3, "preprocess.chunks": 12})
    assert (variant["temporal"], variant["in_frames"]) == (3, 12)
    assert "temporal" not in bb.deploy_kwargs("agcn") and bb.deploy_kwargs("agcn")["in_frames"] == 8
    for argv, match in ([["--speed-only"], "elsewhere"],
                        [["--backbones", "agcn", "--no-speed", "--out", str(tmp_path / "v.json")], "paper grid"]):
        monkeypatch.setattr(sys, "argv", ["backbones.py", "--set", "model.kwargs.temporal=3", *argv])
        with pytest.raises(SystemExit, match=match):
            bb.main()
    assert not (tmp_path / "v.json").exists()
