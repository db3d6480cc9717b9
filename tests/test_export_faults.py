"""Exports that are hard to misuse (issue 14): predict evaluates on the run's own data and refuses
data the model does not fit; corrupt, truncated, hostile or incomplete `.pmp` files are one-line
errors naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pmp.cli import main
from pmp.export import ExportFormatError, read_compact
from pmp.export.format import VERSION

from test_cli import TINY  # noqa: E402  (tests/ is on sys.path under pytest)
from test_export import _rewrite  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny run on synthetic data of seed 3 (not the default 0), exported raw and compressed."""
    d = tmp_path_factory.mktemp("exp")
    run = d / "run"
    assert main(["train", *TINY, "--method", "mp", "--rate", "0.9", "--run-dir", str(run),
                 "--set", "data.options={seed: 3, num_sequences: 90}"]) == 0
    assert main(["export", str(run), "-o", str(d / "m.pmp")]) == 0
    assert main(["export", str(run), "-o", str(d / "raw.pmp"), "--no-compress"]) == 0
    return run, d / "m.pmp", d / "raw.pmp"


def test_predict_evaluates_on_the_runs_own_data(exported, capsys):
    run, model, _ = exported
    capsys.readouterr()
    assert main(["predict", str(model)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    out = capsys.readouterr().out
    assert f"({sum(map(sum, metrics['confusion']))} sequences)" in out  # seed 3's 90 sequences, not seed 0's 600
    assert f"{100 * metrics['class_avg_acc']:.2f}%" in out


def test_predict_refuses_data_the_model_does_not_fit(exported, tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.arange(60) % 20  # 20 classes; the model has 10
    path = tmp_path / "twenty.npz"
    np.savez(path, x=rng.normal(size=(60, 12, 21, 3)), y=y, split=np.array(["train", "test"] * 30))
    assert main(["predict", str(exported[1]), "--dataset", str(path)]) == 2
    err = capsys.readouterr().err
    assert "classes: model 10, data 20" in err and "Traceback" not in err


@pytest.mark.parametrize("section", ["preprocess", "kwargs"])
def test_a_pmp_without_a_section_is_a_clear_error(exported, tmp_path, capsys, section):
    spec = read_compact(exported[2]).spec
    bad = _rewrite(exported[2], tmp_path / "bad.pmp", meta={"config": {k: v for k, v in spec.items() if k != section}})
    assert main(["predict", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and f"'{section}'" in err and "Traceback" not in err


@pytest.mark.parametrize("size, needle", [(-4, "do not build"), (10**9, "GiB")])
def test_negative_or_hostile_sizes_fail_before_allocating(exported, tmp_path, size, needle):
    spec = read_compact(exported[2]).spec
    bad = _rewrite(exported[2], tmp_path / "bad.pmp", meta={"config": {**spec, "kwargs": {**spec["kwargs"], "hidden": size}}})
    with pytest.raises(ExportFormatError, match=needle) as e:
        read_compact(bad)
    assert str(bad) in str(e.value)


@pytest.mark.parametrize("which", [1, 2])
def test_a_flipped_byte_anywhere_in_a_pmp_is_an_error_or_harmless(exported, tmp_path, which):
    """Every byte position of the file, flipped one at a time (a stride through the file for time)."""
    src = exported[which]
    good = src.read_bytes()
    reference = read_compact(src)
    harmless = errors = 0
    for i in range(0, len(good), max(1, len(good) // 300)):
        raw = bytearray(good)
        raw[i] ^= 0x04
        bad = tmp_path / "flip.pmp"
        bad.write_bytes(bytes(raw))
        try:
            got = read_compact(bad)
        except ExportFormatError as e:
            assert str(bad) in str(e)
            errors += 1
            continue
        assert got.spec == reference.spec  # the flip hit bytes without meaning (JSON whitespace)
        assert all(np.array_equal(got.dense[k], reference.dense[k]) for k in reference.dense)
        assert all(np.array_equal(got.sparse[k].values, reference.sparse[k].values) for k in reference.sparse)
        harmless += 1
    assert errors > 0.9 * (errors + harmless)


def test_older_versions_without_checksums_are_still_read(exported, tmp_path):
    assert read_compact(exported[2]).spec and VERSION == 3
    v2 = _rewrite(exported[2], tmp_path / "v2.pmp", meta={"version": 2, "checksums": None})
    assert read_compact(v2).sparse.keys() == read_compact(exported[2]).sparse.keys()


def test_truncated_pmp_names_the_file(exported, tmp_path, capsys):
    data = exported[1].read_bytes()
    for cut in (3, len(data) // 2, len(data) - 1):
        bad = tmp_path / "cut.pmp"
        bad.write_bytes(data[:cut])
        assert main(["predict", str(bad)]) == 2
        err = capsys.readouterr().err
        assert str(bad) in err and "Traceback" not in err
