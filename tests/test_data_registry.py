"""load_dataset's names and how the data root is found: argument > PMP_DATA_ROOT > an error naming both."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pmp.data import DataFormatError, load_dataset, resolve_data_root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A data root that holds sbu/ and fpha/ (just their marker entries)."""
    (tmp_path / "sbu" / "SBU").mkdir(parents=True)
    (tmp_path / "fpha").mkdir()
    (tmp_path / "fpha" / "data_split_action_recognition.txt").write_text("")
    return tmp_path


def test_explicit_root_beats_the_environment(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMP_DATA_ROOT", "/nonexistent")
    assert resolve_data_root(tree, "sbu") == tree / "sbu"
    assert resolve_data_root(str(tree), "fpha") == tree / "fpha"


def test_environment_is_used_without_an_argument(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMP_DATA_ROOT", str(tree))
    assert resolve_data_root(None, "sbu") == tree / "sbu"
    assert resolve_data_root() == tree


def test_dataset_folder_itself_is_accepted(tree: Path) -> None:
    assert resolve_data_root(tree / "sbu", "sbu") == tree / "sbu"
    assert resolve_data_root(tree / "fpha", "fpha") == tree / "fpha"


def test_no_root_names_the_option_and_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PMP_DATA_ROOT", raising=False)
    with pytest.raises(DataFormatError, match="--data-root.*PMP_DATA_ROOT"):
        load_dataset("sbu")


def test_missing_folders_are_named(tmp_path: Path, tree: Path) -> None:
    with pytest.raises(DataFormatError, match=f"{tmp_path / 'nope'}: data root folder not found.*PMP_DATA_ROOT"):
        load_dataset("fpha", tmp_path / "nope")
    (tree / "sbu" / "SBU").rmdir()
    with pytest.raises(DataFormatError, match=f"neither it nor {tree / 'sbu'} holds sbu's SBU"):
        load_dataset("sbu", tree)


def test_names_and_options(tmp_path: Path) -> None:
    assert load_dataset("synthetic", seed=1, num_sequences=30).name == "synthetic"
    path = tmp_path / "mine.npz"
    np.savez(path, x=np.zeros((2, 3, 4, 3)), y=np.array([0, 1]), split=np.array(["train", "test"]))
    assert load_dataset(str(path)).name == "mine"
    with pytest.raises(TypeError, match="no options"):
        load_dataset(str(path), seed=1)
    with pytest.raises(ValueError, match="unknown dataset 'ntu'"):
        load_dataset("ntu")
    with pytest.raises(DataFormatError, match="missing file"):
        load_dataset(str(tmp_path / "other.npz"))


@pytest.mark.parametrize(("ci", "outcome"), [("true", "1 error"), ("", "1 skipped")])
def test_real_data_missing_fails_under_ci_else_skips(tmp_path: Path, ci: str, outcome: str) -> None:
    """The conftest's data_root fixture: a missing data folder must not pass silently in CI."""
    env = {**os.environ, "PMP_DATA_ROOT": str(tmp_path / "absent"), "CI": ci}
    test = f"{Path(__file__).with_name('test_data_real.py')}::test_sbu_counts"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert outcome in run.stdout, run.stdout
    assert "real data not found" in run.stdout or ci == ""
