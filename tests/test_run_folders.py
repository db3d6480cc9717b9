"""Run folders that survive mistakes: nothing touched before validation, no silent reuse of another
config's results, atomic checkpoints, verified files, generic dataset paths (issue 14)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pmp.cli import main
from pmp.training import apply_overrides, run_experiment
from pmp.training import checkpoint as ck
from pmp.training.checkpoint import CheckpointError, IntegrityError, load_checkpoint, save_checkpoint
from pmp.training.config import ConfigError
from pmp.training.rundir import LOCK_FILE, RunFolderError, fingerprint, folder_lock
from pmp.training.trainer import load_trained_model

from test_cli import TINY  # noqa: E402  (tests/ is on sys.path under pytest)
from test_training import tiny_config  # noqa: E402

SMALL = {"train.epochs": 2, "data.options": {"seed": 0, "num_sequences": 60}}


def _train(run_dir: Path, **overrides) -> dict:
    return run_experiment(tiny_config(**{**SMALL, **overrides}), run_dir)


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file's bytes, except the lock's (who held it last)."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


# ------------------------------------------------------------------ 1: validate before touching
def test_a_failing_rerun_leaves_the_finished_run_untouched(tmp_path):
    run = tmp_path / "run"
    _train(run)
    before = _snapshot(run)
    with pytest.raises(ValueError, match="synthetc"):
        _train(run, **{"data.name": "synthetc"})
    with pytest.raises(ValueError):
        _train(run, **{"pruning.method": "mp", "pruning.rate": 1.0})
    assert _snapshot(run) == before


@pytest.mark.parametrize("flags, needle", [
    (["--method", "mp", "--rate", "1.0"], "rate"),
    (["--method", "foo"], "unknown pruning method"),
    (["--dataset", "synthetc"], "synthetc"),
    (["--method", "pmp", "--rate", "0.9", "--set", "pruning.options.bogus=1"], "bogus"),
    (["--split", "9:9"], "9:9"),
    (["--train.schedule", "linear"], "schedule"),
    (["--epochs", "0"], "train.epochs"),
    (["--set", "data.options={seed: 0, num_sequences: 100000000000}"], "GiB"),
])
def test_a_rejected_request_leaves_no_run_folder(tmp_path, capsys, flags, needle):
    work = tmp_path / "w"
    assert main(["train", *TINY, *flags, "--work-dir", str(work)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not work.exists()


# ------------------------------------------------------------------ 2: no silent reuse
def test_a_changed_config_is_refused_and_fresh_retrains(tmp_path):
    run = tmp_path / "run"
    first = _train(run, **{"pruning.method": "pmp", "pruning.rate": 0.9})
    before = _snapshot(run)
    for changed in ({"train.lr": 0.1}, {"pruning.options": {"lam": 50}}, {"train.epochs": 3}):
        with pytest.raises(RunFolderError, match="--fresh") as e:
            _train(run, **{"pruning.method": "pmp", "pruning.rate": 0.9, **changed})
        assert next(iter(changed)) in str(e.value)  # the message says what differs
    assert _snapshot(run) == before
    cfg = tiny_config(**{**SMALL, "pruning.method": "pmp", "pruning.rate": 0.9, "train.lr": 0.1})
    again = run_experiment(cfg, run, fresh=True)
    assert again["fingerprint"] == fingerprint(cfg) != first["fingerprint"]
    assert "lr: 0.1" in (run / "config.yaml").read_text()


def test_a_finished_run_is_reported_not_retrained(tmp_path, caplog):
    run = tmp_path / "run"
    first = _train(run)
    before = _snapshot(run)
    # fields that cannot change the model (threads, logging, checkpoint period, data root) may differ
    again = _train(run, **{"train.threads": 2, "train.eval_every": 1, "train.checkpoint_every": 2})
    assert again == first and _snapshot(run) == before
    assert "already finished" in caplog.text


class _Kill(Exception):
    pass


def _kill_at(epoch_to_die: int):
    def hook(epoch, row):
        if epoch == epoch_to_die:
            raise _Kill

    return hook


def test_a_checkpoint_of_another_config_is_not_resumed(tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(**{**SMALL, "train.epochs": 3, "pruning.method": "pmp", "pruning.rate": 0.9})
    with pytest.raises(_Kill):
        run_experiment(cfg, run, on_epoch_end=_kill_at(2))
    with pytest.raises(RunFolderError, match="checkpoint of a different config.*lam"):
        run_experiment(apply_overrides(cfg, {"pruning.options.lam": 50}), run)
    with pytest.raises(RunFolderError, match="--fresh"):
        run_experiment(cfg, run, resume=False)
    assert run_experiment(cfg, run)["epochs"] == 3  # the same config resumes


def test_legacy_checkpoint_pair_resumes_when_config_yaml_matches(tmp_path):
    """Folders written before fingerprints (format-1 pair last.safetensors + last.json) still resume."""
    run = tmp_path / "run"
    cfg = tiny_config(**{**SMALL, "train.epochs": 3})
    full = run_experiment(cfg, tmp_path / "full")
    with pytest.raises(_Kill):
        run_experiment(cfg, run, on_epoch_end=_kill_at(2))
    folder = run / "checkpoints"
    state = load_checkpoint(folder)
    tensors, skeleton = ck.flatten(state, "s")
    for old in folder.iterdir():
        old.unlink()
    ck.save_tensors(tensors, folder / "last.safetensors")
    ck.atomic_write_json(folder / "last.json", {"state": skeleton,
                                                "tensor_bytes": (folder / "last.safetensors").stat().st_size})
    assert run_experiment(cfg, run)["class_avg_acc"] == full["class_avg_acc"]


# ------------------------------------------------------------------ 3: one commit point per checkpoint
def _state(v: float) -> dict:
    return {"epoch": int(v), "w": torch.full((3,), v), "opt": {"m": torch.full((2,), -v)}, "log": [v]}


@given(fail_at=st.integers(0, 6))
@settings(max_examples=7, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_checkpoint_write_cut_anywhere_leaves_the_old_or_the_new_state_whole(tmp_path, fail_at):
    folder = tmp_path / f"ck{fail_at}"
    save_checkpoint(_state(1.0), folder)
    calls = {"n": 0}
    real_replace = os.replace

    def dying_replace(src, dst):  # the process dies at the fail_at-th rename (or never)
        if calls["n"] == fail_at:
            raise _Kill
        calls["n"] += 1
        real_replace(src, dst)

    os.replace = dying_replace
    try:
        save_checkpoint(_state(2.0), folder)
    except _Kill:
        pass
    finally:
        os.replace = real_replace
    back = load_checkpoint(folder)
    v = float(back["w"][0])
    assert v in (1.0, 2.0) and torch.equal(back["w"], _state(v)["w"])
    assert torch.equal(back["opt"]["m"], torch.full((2,), -v)) and back["log"] == [v] and back["epoch"] == int(v)


# ------------------------------------------------------------------ 4: checksums
@given(data=st.data())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_byte_flip_in_a_checkpoint_is_detected(tmp_path, data):
    folder = tmp_path / "ck"
    save_checkpoint(_state(3.0), folder)
    target = data.draw(st.sampled_from(sorted(p.name for p in folder.iterdir())))
    raw = bytearray((folder / target).read_bytes())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    (folder / target).write_bytes(bytes(raw))
    try:
        back = load_checkpoint(folder)
    except CheckpointError as e:
        assert str(folder) in str(e)
    else:  # a flip that leaves the content equal (e.g. JSON whitespace) is harmless
        assert torch.equal(back["w"], _state(3.0)["w"]) and back["epoch"] == 3 and back["log"] == [3.0]


def test_raw_tensor_flips_and_truncation_name_the_file_and_tensor(tmp_path):
    run = tmp_path / "run"
    _train(run, **{"pruning.method": "mp", "pruning.rate": 0.9})
    weights = run / "model.safetensors"
    good = weights.read_bytes()
    raw = bytearray(good)
    raw[-1] ^= 0x10  # the last tensor's last byte
    weights.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match=r"model\.safetensors.*tensor '.*'.*checksum"):
        load_trained_model(run)
    weights.write_bytes(good[: len(good) // 2])
    for argv in (["eval", str(run)], ["export", str(run), "-o", str(tmp_path / "m.pmp")]):
        assert main(argv) == 2
    weights.write_bytes(good)
    metrics = run / "metrics.json"
    text = metrics.read_text()
    metrics.write_text(text.replace('"epochs": 2', '"epochs": 3'))
    assert main(["eval", str(run)]) == 2


def test_truncated_model_file_is_a_one_line_error_naming_it(tmp_path, capsys):
    run = tmp_path / "run"
    _train(run)
    data = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(data[: len(data) - 100])
    for argv in (["eval", str(run)], ["export", str(run), "-o", str(tmp_path / "m.pmp")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "model.safetensors" in err and "Traceback" not in err


# ------------------------------------------------------------------ 5: one writer per folder
def test_a_locked_run_folder_names_its_holder(tmp_path):
    run = tmp_path / "run"
    with folder_lock(run, "pmp train"):
        with pytest.raises(RunFolderError, match=f"pid {os.getpid()}"):
            _train(run)
    _train(run)  # released


# ------------------------------------------------------------------ 7: generic dataset paths
def _generic_file(path: Path) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(40) % 4
    x = rng.normal(size=(40, 10, 5, 3)) + y[:, None, None, None]
    np.savez(path, x=x, y=y, split=np.array(["train", "test", "train", "train"] * 10))
    return path


def test_generic_dataset_by_absolute_and_relative_path(tmp_path, monkeypatch):
    data = _generic_file(tmp_path / "x.npz")
    work = tmp_path / "w"
    assert main(["train", *TINY, "--dataset", str(data), "--work-dir", str(work)]) == 0
    assert (work / "x" / "dense_s0" / "metrics.json").is_file()
    monkeypatch.chdir(tmp_path)  # a relative path, with a config whose data.options are synthetic's
    assert main(["train", str(Path(__file__).parents[1] / "configs/synthetic.yaml"), *TINY, "--dataset", "x.npz",
                 "--split", "train/test", "--work-dir", str(work)]) == 0
    assert (work / "synthetic" / "dense_s0_ftrain-test" / "metrics.json").is_file()


def test_a_changed_generic_file_is_not_reused(tmp_path):
    data = _generic_file(tmp_path / "x.npz")
    cfg = tiny_config(**{"data.name": str(data), "data.options": {}, "train.epochs": 1})
    run_experiment(cfg, tmp_path / "run")
    np.savez(data, **{**dict(np.load(data)), "y": (np.arange(40) + 1) % 4})
    with pytest.raises(RunFolderError, match="different config"):
        run_experiment(cfg, tmp_path / "run")


def test_unknown_method_option_is_a_config_error_listing_the_valid_ones():
    with pytest.raises(ConfigError, match=r"bogus.*options of 'pmp': .*lam"):
        run_experiment(tiny_config(**{"pruning.method": "pmp", "pruning.rate": 0.9,
                                      "pruning.options": {"bogus": 1}}), "/nonexistent/never-created")


def test_metrics_record_fingerprints(tmp_path):
    m = _train(tmp_path / "run")
    stored = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert stored["checksum"].startswith("sha256:") and m["fingerprint"] == stored["fingerprint"]
    machine = m["machine"]
    assert machine["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert {"cpu_model", "cpu_isa", "versions", "torch_threads", "env"} <= set(machine)
    assert machine["versions"]["torch"].startswith("2.")


@pytest.mark.parametrize("text", [b"augment: {time_warp: 4.0}\n", b"train: {epochs: \xa0}\n"])
def test_a_corrupt_config_yaml_is_a_config_error_naming_it(tmp_path, text):
    from pmp.training import load_config

    path = tmp_path / "config.yaml"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match="config.yaml"):
        load_config(path)


def test_method_options_reach_their_method_only_and_the_fingerprint_is_what_the_run_gets(tmp_path):
    """`pruning.method_options` hands PMP its hard tail without giving it to GMP (which would reject
    it); `options` win over them; a run fingerprints as the options its method got, however spelt;
    an unknown method is a config error naming the field."""
    from pmp.training.rundir import fingerprint

    per_method = {"pruning.method_options": {"pmp": {"hard_tail": 0.25, "lam": 2.0}}}
    pmp_cfg = tiny_config(**per_method, **{"pruning.method": "pmp", "pruning.rate": 0.9, "pruning.options": {"lam": 3.0}})
    assert pmp_cfg.pruning.run_options() == {"hard_tail": 0.25, "lam": 3.0}
    spelt = tiny_config(**{"pruning.method": "pmp", "pruning.rate": 0.9, "pruning.options": {"hard_tail": 0.25, "lam": 3.0}})
    assert fingerprint(pmp_cfg) == fingerprint(spelt)
    gmp_cfg = apply_overrides(pmp_cfg, {"pruning.method": "gmp", "pruning.options": {}})
    assert gmp_cfg.pruning.run_options() == {}
    assert fingerprint(gmp_cfg) == fingerprint(tiny_config(**{"pruning.method": "gmp", "pruning.rate": 0.9}))
    m = run_experiment(apply_overrides(gmp_cfg, {"train.epochs": 1}), tmp_path / "gmp")  # GMP trains: no hard_tail
    assert m["method_options"].get("hard_tail") is None
    typo = tiny_config(**{"pruning.method": "pmp", "pruning.rate": 0.9, "pruning.method_options": {"pmp": {"hard_tial": 1}}})
    with pytest.raises(ConfigError, match=r"pruning.options \+ pruning.method_options.pmp .*hard_tial"):
        run_experiment(typo, tmp_path / "typo")
    with pytest.raises(ConfigError, match=r"method_options: unknown method 'pnp'"):
        tiny_config(**{"pruning.method_options": {"pnp": {"lam": 1.0}}})
    with pytest.raises(ConfigError, match=r"method_options.pmp: expected a mapping"):
        tiny_config(**{"pruning.method_options": {"pmp": 0.25}})
