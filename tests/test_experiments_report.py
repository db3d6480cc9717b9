"""Report aggregation on fabricated metrics whose means and sample stds (ddof=1) are computed by hand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pmp.experiments.report import report

_H = {"layer": "l1.weight", "centers": [-0.75, -0.25, 0.25, 0.75], "prior_density": [0.1, 0.9, 0.9, 0.1]}
HIST = {"before": {**_H, "density": [0.2, 0.8, 0.8, 0.2]}, "after": {**_H, "density": [0.1, 0.9, 0.9, 0.1], "band_edge": 0.5}}


def _write(root: Path, name: str, axes: dict | None = None, **metrics) -> None:
    run = root / name
    run.mkdir(parents=True)
    base = {"dataset": "fpha", "seed": 0, "split": "1:1", "overall_acc": 0.0, "soft_class_avg_acc": None,
            "achieved_rate": metrics.get("rate"), "epochs": 100, "wall_s": 1.0, "layer_density": {}}  # fmt: skip
    (run / "metrics.json").write_text(json.dumps({**base, **metrics}))
    if axes is not None:
        (run / "run.json").write_text(json.dumps({"run_id": name, "axes": axes, "overrides": axes}))


@pytest.fixture(scope="module")
def rep(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    _write(runs, "dense_s0", method="dense", rate=0.0, seed=0, class_avg_acc=0.80)
    _write(runs, "dense_s1", method="dense", rate=0.0, seed=1, class_avg_acc=0.84)
    _write(runs, "pmp_r0.9_s0", method="pmp", rate=0.9, seed=0, class_avg_acc=0.5)
    _write(runs, "pmp_r0.9_s1", method="pmp", rate=0.9, seed=1, class_avg_acc=0.7)
    _write(runs, "mp_r0.9_s0", method="mp", rate=0.9, class_avg_acc=0.55, epochs=200)
    density = {"l1.weight": 0.03, "l2.weight": 0.01}
    _write(runs, "pmp_r0.98_s0", method="pmp", rate=0.98, class_avg_acc=0.4, latent_hist=HIST, layer_density=density)
    _write(runs, "mp_r0.98_s0", method="mp", rate=0.98, class_avg_acc=0.3, layer_density=density)
    _write(runs, "pmp_r0.98_s0_xabc", {"pruning.scope": "global"}, method="pmp", rate=0.98, class_avg_acc=0.2)
    for fold, acc in (("1", 0.90), ("2", 0.95), ("3", 1.0)):
        _write(runs / "sbu", f"pmp_r0.9_f{fold}", dataset="sbu", method="pmp", rate=0.9, split=fold, class_avg_acc=acc)
    (runs / "broken").mkdir()
    (runs / "broken" / "metrics.json").write_text("{not json")
    return report(runs, tmp_path_factory.mktemp("report"))


def test_results_csv_has_one_row_per_finished_run(rep):
    rows = list(csv.DictReader((rep.files[0]).open()))
    assert rep.files[0].name == "results.csv"
    assert len(rows) == 11
    assert {"dataset", "method", "rate", "seed", "fold", "class_avg_acc", "overall_acc", "soft_class_avg_acc",
            "achieved_rate", "epochs", "wall_s"} <= set(rows[0])  # fmt: skip
    assert {float(r["rate"]) for r in rows if r["method"] == "dense"} == {0.0}
    assert {r["fold"] for r in rows if r["dataset"] == "sbu"} == {"1", "2", "3"}
    assert {r["fold"] for r in rows if r["dataset"] == "fpha"} == {""}  # a single split: not cross-validation
    assert [p.name for p in rep.unreadable] == ["metrics.json"]


def test_cells_mean_and_sample_std(rep):
    cells = {(c.dataset, c.variant, c.method, c.rate): c for c in rep.cells}
    pmp = cells[("fpha", "", "pmp", 0.9)]  # 50 and 70 -> mean 60, sample std sqrt(200) = 14.142
    assert (pmp.n, pmp.mean, round(pmp.std, 3)) == (2, 60.0, 14.142)
    dense = cells[("fpha", "", "dense", 0.0)]  # 80 and 84 -> 82 ± 2.828
    assert (dense.n, dense.mean, round(dense.std, 3)) == (2, 82.0, 2.828)
    sbu = cells[("sbu", "", "pmp", 0.9)]  # folds 90, 95, 100 -> 95 ± 5
    assert (sbu.n, round(sbu.mean, 9), round(sbu.std, 9)) == (3, 95.0, 5.0)
    assert cells[("fpha", "pruning.scope=global", "pmp", 0.98)].n == 1  # a variant is its own table


def test_markdown_is_laid_out_like_the_paper(rep):
    md = rep.markdown
    assert (rep.files[0].parent / "results.md").read_text() == md
    assert "| Pruning rate | dense | pmp | mp |" in md
    assert "| 0 % (dense) | 82.00 ± 2.83 (n=2) |  |  |" in md
    assert "| 90 % |  | 60.00 ± 14.14 (n=2) | 55.00 (n=1) |" in md
    assert "| *epochs* | 100 | 100 | 100/200 |" in md
    assert "| 90 % | 95.00 ± 5.00 (n=3) |" in md
    assert "## fpha (pruning.scope=global)" in md and "## sbu" in md


def test_plots_are_written(rep):
    plots = {p.name: p for p in rep.files if p.suffix == ".png"}
    expected = {"accuracy_fpha.png", "latent_hist_fpha.png", "layer_density_fpha_r0.98.png", "accuracy_sbu.png"}
    assert expected <= set(plots)
    for p in plots.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000
        assert f"plots/{p.name}" in rep.markdown
