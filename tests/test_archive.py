"""The run archive (pmp.experiments.archive): a sweep's finished runs survive their folders, restore as
finished runs, are never overwritten, and corrupt lines are errors naming the file and line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pmp.cli import main
from pmp.experiments import archive
from pmp.experiments.report import report
from pmp.experiments.sweep import read_metrics
from pmp.training.checkpoint import IntegrityError, write_sealed_json


def _run(root: Path, name: str, method: str, seed: int, acc: float, rate: float = 0.9, **extra) -> Path:
    run = root / name
    run.mkdir(parents=True)
    write_sealed_json(run / "metrics.json", {
        "dataset": "fpha", "method": method, "rate": rate, "seed": seed, "split": "1:1", "class_avg_acc": acc,
        "overall_acc": acc, "soft_class_avg_acc": None, "achieved_rate": rate, "epochs": 10, "wall_s": 2.0,
        "layer_density": {"l.weight": 1 - rate}, **extra})  # fmt: skip
    write_sealed_json(run / "run.json", {"run_id": name, "axes": {"pruning.method": method, "train.seed": seed}})
    (run / "config.yaml").write_text(f"pruning:\n  method: {method}\n")
    (run / "model.safetensors").write_bytes(b"weights are not archived")
    return run


@pytest.fixture
def sweep(tmp_path):
    runs = tmp_path / "sweep"
    _run(runs, "pmp_r0.9_s0", "pmp", 0, 0.80)
    _run(runs, "mp_r0.9_s0", "mp", 0, 0.70)
    (runs / "mp_r0.9_s1").mkdir()  # unfinished: no metrics.json
    (runs / "mp_r0.9_s1" / "config.yaml").write_text("x: 1\n")
    return runs


def test_pack_then_restore_gives_back_finished_runs_with_the_same_documents(sweep, tmp_path):
    path = tmp_path / "runs.jsonl"
    assert archive.pack(sweep, path) == 2  # the unfinished run is not archived
    assert archive.pack(sweep, path) == 0  # nothing new: the file is the same
    lines = path.read_text().splitlines()
    assert [json.loads(x)["run"] for x in lines] == ["mp_r0.9_s0", "pmp_r0.9_s0"]
    fresh = tmp_path / "fresh"
    assert sorted(archive.restore(path, fresh)) == ["mp_r0.9_s0", "pmp_r0.9_s0"]
    for run in ("mp_r0.9_s0", "pmp_r0.9_s0"):
        assert read_metrics(fresh / run) == read_metrics(sweep / run)
        assert (fresh / run / "config.yaml").read_text() == (sweep / run / "config.yaml").read_text()
        assert json.loads((fresh / run / "run.json").read_text()) == json.loads((sweep / run / "run.json").read_text())
        assert not (fresh / run / "model.safetensors").exists()
    assert archive.restore(path, fresh) == []  # already finished there


def test_restore_never_overwrites_a_finished_run(sweep, tmp_path):
    path = tmp_path / "runs.jsonl"
    archive.pack(sweep, path)
    other = tmp_path / "other"
    _run(other, "pmp_r0.9_s0", "pmp", 0, 0.55)  # the same run id, other results
    assert archive.restore(path, other) == ["mp_r0.9_s0"]
    assert read_metrics(other / "pmp_r0.9_s0")["class_avg_acc"] == 0.55
    # packing the other folder replaces the archived twin (the folder is the newer result), keeps the rest
    assert archive.pack(other, path) == 1  # the restored run is the archived one: unchanged
    entries = archive.read(path)
    assert entries["pmp_r0.9_s0"].body("metrics")["class_avg_acc"] == 0.55
    assert entries["mp_r0.9_s0"].body("metrics")["class_avg_acc"] == 0.70


def test_a_tampered_or_broken_line_names_the_file_and_line(sweep, tmp_path):
    path = tmp_path / "runs.jsonl"
    archive.pack(sweep, path)
    first, second = path.read_text().splitlines()
    path.write_text(first + "\n" + second.replace('"class_avg_acc":0.8', '"class_avg_acc":0.9') + "\n")
    with pytest.raises(IntegrityError, match=r"runs.jsonl:2 \(metrics\).*checksum"):
        archive.read(path)
    for bad, why in (("{not json", "not JSON"), ('{"metrics": {}}', "no 'run' id"), ('{"run": "x"}', "neither"),
                     ('{"run": "x", "metrics": {"a": 1}}', "not a sealed document")):
        path.write_text(first + "\n" + bad + "\n")
        with pytest.raises(IntegrityError, match=f"runs.jsonl:2.*{why}"):
            archive.read(path)
    path.write_text(first + "\n" + first + "\n")
    with pytest.raises(IntegrityError, match="archived twice"):
        archive.read(path)


def _csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, ["dataset", "variant", "method", "rate", "seed", "fold", "class_avg_acc", "overall_acc",
                               "soft_class_avg_acc", "achieved_rate", "epochs", "wall_s", "seen", "run"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_imported_rows_are_reported_and_paired_with_live_runs_and_replaced_by_a_rerun(sweep, tmp_path):
    """Rows of runs whose folders are gone: reported beside the live runs, paired with them by seed, not
    counted as finished by restore, and replaced by the full record once the run is made again."""
    row = {"dataset": "fpha", "variant": "", "rate": 0.9, "fold": "", "overall_acc": 0.6, "soft_class_avg_acc": "",
           "achieved_rate": 0.9, "epochs": 10, "wall_s": 3.0, "seen": ""}
    rows = [{**row, "method": "pmp", "seed": 1, "class_avg_acc": 0.75, "run": "pmp_r0.9_s1"},
            {**row, "method": "mp", "seed": 1, "class_avg_acc": 0.60, "run": "mp_r0.9_s1"},
            {**row, "method": "mp", "seed": 0, "class_avg_acc": 0.10, "run": "mp_r0.9_s0"}]  # live twin wins
    path = tmp_path / "runs.jsonl"
    assert archive.import_rows(_csv(tmp_path / "old.csv", rows), path, source="old.csv at abc123") == 3
    assert archive.import_rows(tmp_path / "old.csv", path, source="again") == 0  # already archived
    assert archive.restore(path, tmp_path / "fresh") == []  # rows are not runs
    rep = report(sweep, tmp_path / "report", archives=[path])
    got = {(r.row["method"], r.row["seed"]): r.row["class_avg_acc"] for r in rep.records}
    assert got == {("pmp", 0): 0.80, ("mp", 0): 0.70, ("pmp", 1): 0.75, ("mp", 1): 0.60}
    (mp,) = [p for p in rep.paired if p.other == "mp"]
    assert (mp.stats.n, mp.stats.mean, mp.stats.wins) == (2, pytest.approx(12.5), 2)  # +10 and +15 points
    assert archive.pack(sweep, path) == 2  # live runs replace the row-only twin and add pmp s0
    entries = archive.read(path)
    assert "metrics" in entries["mp_r0.9_s0"].docs and entries["mp_r0.9_s1"].rows[0]["class_avg_acc"] == 0.60
    assert entries["mp_r0.9_s1"].source == "old.csv at abc123"


def test_imported_rows_keep_text_columns_as_text(tmp_path):
    rows = [{"dataset": "sbu", "variant": "equal", "method": "lth", "rate": "0.99", "seed": "2", "fold": "3",
             "class_avg_acc": "0.5", "overall_acc": "0.5", "soft_class_avg_acc": "", "achieved_rate": "0.99",
             "epochs": "80", "wall_s": "1.5", "seen": "False", "run": "lth-equal_r0.99_s2_f3"}]
    path = tmp_path / "runs.jsonl"
    archive.import_rows(_csv(tmp_path / "old.csv", rows), path, source="s")
    (got,) = archive.read(path)["lth-equal_r0.99_s2_f3"].rows
    assert got["fold"] == "3" and got["variant"] == "equal" and got["seed"] == 2 and got["rate"] == 0.99
    assert got["soft_class_avg_acc"] is None and got["seen"] is False
    rep = report(tmp_path / "nothing", tmp_path / "report", archives=[path])
    assert [(r.label, r.row["fold"]) for r in rep.records] == [("lth@equal", "")]  # one split: not a fold


def test_cli_packs_restores_and_reports_an_archive(sweep, tmp_path, capsys):
    path = tmp_path / "runs.jsonl"
    assert main(["archive", "pack", str(sweep), str(path)]) == 0
    assert main(["archive", "restore", str(path), str(tmp_path / "fresh")]) == 0
    assert "2 finished runs restored" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "rep"), "--archive", str(path)]) == 0
    assert "pmp_r0.9_s0" in (tmp_path / "rep" / "results.csv").read_text()
    path.write_text("{broken\n")
    assert main(["archive", "restore", str(path), str(tmp_path / "x")]) != 0
    assert "runs.jsonl:1" in capsys.readouterr().err


def sealing_runner(cfg, run_dir: Path) -> dict:
    """Stands in for training; writes sealed metrics.json with the config's fingerprint, as the real runner does."""
    from pmp.training.rundir import fingerprint

    with open(run_dir.parent / "calls.log", "a") as f:
        f.write(run_dir.name + "\n")
    metrics = {"dataset": cfg.data.name, "method": cfg.pruning.method, "rate": cfg.pruning.rate,
               "seed": cfg.train.seed, "split": cfg.data.split, "class_avg_acc": 0.5, "epochs": cfg.train.epochs,
               "fingerprint": fingerprint(cfg)}
    write_sealed_json(run_dir / "metrics.json", metrics)
    return metrics


def test_a_sweep_resumes_on_a_fresh_checkout_from_its_archive(tmp_path):
    """Runs made in one folder, archived, restored into another: the sweep there makes only the runs
    the archive does not hold."""
    from pmp.experiments import parse_sweep, run_sweep

    spec = parse_sweep({"name": "t", "grid": {"method": ["dense", "pmp"], "rate": [0.9], "seed": [0, 1]}})
    first = tmp_path / "checkout1"
    run_sweep(spec, first, workers=1, runner=sealing_runner, progress=False, only={"seed": [0]})
    path = tmp_path / "runs.jsonl"
    assert archive.pack(first, path) == 2
    second = tmp_path / "checkout2"
    assert len(archive.restore(path, second)) == 2
    result = run_sweep(spec, second, workers=1, runner=sealing_runner, progress=False)
    assert {r.run_id: r.status for r in result.runs} == {
        "dense_r0_s0": "skipped", "pmp_r0.9_s0": "skipped", "dense_r0_s1": "done", "pmp_r0.9_s1": "done"}
    assert sorted((second / "calls.log").read_text().split()) == ["dense_r0_s1", "pmp_r0.9_s1"]


def test_archived_rows_of_a_single_split_pair_with_live_runs_of_it(sweep, tmp_path):
    """FPHA's one split is blanked in a report's csv ("") and named in live metrics ("1:1"): both are
    the same protocol, so the folds stay blank and the runs pair by seed."""
    row = {"dataset": "fpha", "variant": "", "rate": 0.9, "fold": "", "overall_acc": 0.6, "soft_class_avg_acc": "",
           "achieved_rate": 0.9, "epochs": 10, "wall_s": 3.0, "seen": ""}
    path = tmp_path / "runs.jsonl"
    archive.import_rows(_csv(tmp_path / "old.csv", [{**row, "method": "mp", "seed": 5, "class_avg_acc": 0.5,
                                                     "run": "mp_r0.9_s5"}]), path, source="s")
    rep = report(sweep, tmp_path / "report", archives=[path])
    assert {r.row["fold"] for r in rep.records} == {""}
    (mp,) = [p for p in rep.paired if p.other == "mp"]
    assert (mp.stats.n, mp.unpaired_other) == (1, ["s5"])


def test_kept_restores_first_and_packs_even_when_the_body_fails(sweep, tmp_path):
    path = tmp_path / "a" / "runs.jsonl"
    archive.pack(sweep, path)
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError), archive.kept(path, fresh) as restored:
        assert sorted(restored) == ["mp_r0.9_s0", "pmp_r0.9_s0"]
        _run(fresh, "gmp_r0.9_s0", "gmp", 0, 0.75)  # finished inside, then the sweep is interrupted
        raise RuntimeError("interrupted")
    assert sorted(archive.read(path)) == ["gmp_r0.9_s0", "mp_r0.9_s0", "pmp_r0.9_s0"]
    with archive.kept(tmp_path / "b" / "none.jsonl", tmp_path / "absent") as restored:
        assert restored == []
    assert not (tmp_path / "b").exists()  # nothing ran: no empty archive written
