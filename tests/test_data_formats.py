"""SBU and FPHA text formats on small trees written by the tests: what loads, and every error named."""

from __future__ import annotations

import logging
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pmp.data import DataFormatError, load_dataset
from pmp.data.base import read_table
from pmp.data.fpha import POSE_DIR, SPLIT_FILE
from pmp.data.sbu import CLASS_NAMES, FOLDS, denormalize


def frame_line(t: int, values: np.ndarray, sep: str) -> str:
    return sep.join([str(t)] + [f"{v:.5f}" for v in values])


def write_table(path: Path, frames: int, ncols: int, sep: str, seed: int = 0) -> np.ndarray:
    """A valid file of `frames` rows; returns the coordinates (without the frame column)."""
    values = np.random.default_rng(seed).uniform(0, 1, (frames, ncols - 1)).round(5)
    path.parent.mkdir(parents=True, exist_ok=True)
    eol = "\r\n" if sep == "," else "\n"  # SBU's files use Windows line ends
    path.write_text("".join(frame_line(t, row, sep) + eol for t, row in enumerate(values)), newline="")
    return values


def replace_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text().split("\n")
    lines[lineno - 1] = text
    path.write_text("\n".join(lines))


# ------------------------------------------------------------------ the shared strict table reader


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("", r":1: empty file"),
        ("1,2,3\n4,5\n", r":2: 2 columns, expected 3"),
        ("1,2,3\n4,5,6,7\n", r":2: 4 columns, expected 3"),
        ("1,2,3\n4,x,6\n", r":2: column 2: 'x' is not a number"),
        ("1,2,3\n4,,6\n", r":2: column 2: '' is not a number"),
        ("1,2,3\n4,5,nan\n", r":2: column 3: non-finite value 'nan'"),
        ("1,2,inf\n4,5,6\n", r":1: column 3: non-finite value 'inf'"),
        ("1,2,3\n\n4,5,6\n", r":2: empty line"),
        ("1,2,3\n   \n4,5,6\n", r":2: empty line"),
    ],
)
def test_read_table_names_file_and_line(tmp_path: Path, content: str, pattern: str) -> None:
    path = tmp_path / "t.txt"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=re.escape(str(path)) + pattern):
        read_table(path, ncols=3, sep=",")


def test_read_table_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="missing file"):
        read_table(tmp_path / "nope.txt", ncols=3, sep=",")


def test_read_table_accepts_trailing_blank_lines_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("1,2,3\r\n4,5,6\r\n\r\n", newline="")
    np.testing.assert_array_equal(read_table(path, 3, ","), [[1, 2, 3], [4, 5, 6]])


def reference_table(text: str, ncols: int) -> np.ndarray | None:
    """The rule read_table implements, in plain Python: None where the text is not a valid table."""
    lines = text.rstrip().split("\n")
    rows = []
    for line in lines:
        fields = line.split()
        try:
            row = [float(f) for f in fields]
        except ValueError:
            return None
        if not line.strip() or len(row) != ncols or not all(math.isfinite(v) for v in row):
            return None
        rows.append(row)
    return np.array(rows) if text.strip() else None


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="0123456789.-e nainf\n\t", max_size=40))
def test_read_table_agrees_with_reference(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    """numpy's fast path accepts exactly what the plain rule accepts, with the same values."""
    path = tmp_path_factory.mktemp("t") / "t.txt"
    path.write_text(text)
    want = reference_table(text, ncols=2)
    if want is None:
        with pytest.raises(DataFormatError, match=re.escape(str(path))):
            read_table(path, ncols=2, sep=None)
    else:
        np.testing.assert_array_equal(read_table(path, ncols=2, sep=None), want)


# ------------------------------------------------------------------ SBU


def sbu_file(root: Path, set_name: str, cls: int, seq: int = 1) -> Path:
    return root / "SBU" / set_name / f"{cls:02d}" / f"{seq:03d}" / "skeleton_pos.txt"


@pytest.fixture
def sbu_root(tmp_path: Path) -> Path:
    """All 21 sets, one 3-frame sequence each, classes cycling through 01..08."""
    root = tmp_path / "sbu"
    for i, set_name in enumerate(s for sets in FOLDS.values() for s in sets):
        write_table(sbu_file(root, set_name, 1 + i % 8), frames=3 + i, ncols=91, sep=",", seed=i)
    return root


def test_sbu_small_tree_loads(sbu_root: Path) -> None:
    ds = load_dataset("sbu", sbu_root)
    assert (len(ds.sequences), ds.num_nodes, ds.num_channels, ds.layout) == (21, 30, 3, "two_person")
    assert ds.class_names == CLASS_NAMES and ds.root_joint == 2
    assert [s.name for s in ds.splits] == ["1", "2", "3", "4", "5"]
    assert [len(s.test) for s in ds.splits] == [len(v) for v in FOLDS.values()]
    for s in ds.splits:
        assert sorted(np.concatenate([s.train, s.test])) == list(range(21))
    raw = np.loadtxt(sbu_file(sbu_root, "s01s02", 1), delimiter=",")[:, 1:].reshape(-1, 30, 3)
    np.testing.assert_allclose(ds.sequences[0], denormalize(raw))
    assert ds.sources[0] == str(sbu_file(sbu_root, "s01s02", 1))


def test_sbu_denormalize_formula() -> None:
    xyz = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 7.8125], [0.5, 0.5, 3.90625]])
    np.testing.assert_allclose(denormalize(xyz), [[1280, 960, 0], [-1280, -960, 10000], [0, 0, 5000]])


def test_sbu_missing_set_folder(sbu_root: Path) -> None:
    for class_dir in (sbu_root / "SBU" / "s03s04").iterdir():
        shutil.rmtree(class_dir)
    with pytest.raises(DataFormatError, match=r"s03s04: no sequences"):
        load_dataset("sbu", sbu_root)
    shutil.rmtree(sbu_root / "SBU" / "s03s04")
    with pytest.raises(DataFormatError, match=r"s03s04: missing set folder"):
        load_dataset("sbu", sbu_root)


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("1,2,3", r":2: 3 columns, expected 91"),
        (",".join(["7"] * 90 + ["abc"]), r":2: column 91: 'abc' is not a number"),
        (",".join(["7"] * 90 + ["NaN"]), r":2: column 91: non-finite"),
    ],
)
def test_sbu_bad_line(sbu_root: Path, line: str, pattern: str) -> None:
    path = sbu_file(sbu_root, "s02s03", 1 + 4 % 8)
    replace_line(path, 2, line)
    with pytest.raises(DataFormatError, match=re.escape(str(path)) + pattern):
        load_dataset("sbu", sbu_root)


def test_sbu_empty_file(sbu_root: Path) -> None:
    path = sbu_file(sbu_root, "s07s03", 4, seq=2)
    path.parent.mkdir(parents=True)
    path.write_text("")
    with pytest.raises(DataFormatError, match=re.escape(str(path)) + ":1: empty file"):
        load_dataset("sbu", sbu_root)


def test_sbu_sequence_folder_without_file_and_bad_class(sbu_root: Path) -> None:
    (sbu_root / "SBU" / "s01s02" / "01" / "002").mkdir()
    with pytest.raises(DataFormatError, match=r"01/002/skeleton_pos.txt: missing file"):
        load_dataset("sbu", sbu_root)
    (sbu_root / "SBU" / "s01s02" / "01" / "002").rmdir()
    write_table(sbu_file(sbu_root, "s01s02", 9), frames=3, ncols=91, sep=",")
    with pytest.raises(DataFormatError, match=r"s01s02/09: not a class folder 01..08"):
        load_dataset("sbu", sbu_root)


# ------------------------------------------------------------------ FPHA

FPHA_ENTRIES = [  # (sequence folder, label, part)
    ("Subject_1/pour_milk/1", 0, "Training"),
    ("Subject_1/open_letter/1", 1, "Training"),
    ("Subject_2/pour_milk/2", 0, "Training"),
    ("Subject_2/pour_milk/1", 0, "Test"),
    ("Subject_2/open_letter/1", 1, "Test"),
]


def write_split(root: Path, entries: list[tuple[str, int, str]]) -> Path:
    lines = []
    for part in ("Training", "Test"):
        mine = [e for e in entries if e[2] == part]
        lines += [f"{part} {len(mine)}"] + [f"{rel} {label}" for rel, label, _ in mine]
    path = root / SPLIT_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def fpha_root(tmp_path: Path) -> Path:
    root = tmp_path / "fpha"
    for i, (rel, _, _) in enumerate(FPHA_ENTRIES):
        write_table(root / POSE_DIR / rel / "skeleton.txt", frames=2 + i, ncols=64, sep=" ", seed=i)
    write_split(root, FPHA_ENTRIES)
    return root


def test_fpha_small_tree_loads(fpha_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    empty = fpha_root / POSE_DIR / "Subject_2/open_letter/2/skeleton.txt"
    empty.parent.mkdir(parents=True)
    empty.write_text("")
    with caplog.at_level(logging.INFO, logger="pmp.data.fpha"):
        ds = load_dataset("fpha", fpha_root)
    assert (len(ds.sequences), ds.num_nodes, ds.num_channels, ds.layout) == (5, 21, 3, "hand")
    assert ds.class_names == ["pour_milk", "open_letter"]
    assert list(ds.labels) == [0, 1, 0, 0, 1]
    (split,) = ds.splits
    assert (split.name, list(split.train), list(split.test)) == ("1:1", [0, 1, 2], [3, 4])
    assert [len(s) for s in ds.sequences] == [2, 3, 4, 5, 6]
    assert ds.excluded == [str(empty)]
    assert str(empty) in caplog.text


def test_fpha_unlisted_nonempty_file_is_excluded_with_a_warning(
    fpha_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    extra = fpha_root / POSE_DIR / "Subject_3/pour_milk/1/skeleton.txt"
    write_table(extra, frames=2, ncols=64, sep=" ")
    with caplog.at_level(logging.WARNING, logger="pmp.data.fpha"):
        ds = load_dataset("fpha", fpha_root)
    assert ds.excluded == [str(extra)]
    assert any(r.levelno == logging.WARNING and str(extra) in r.getMessage() for r in caplog.records)


def test_fpha_split_entry_without_file(fpha_root: Path) -> None:
    split = write_split(fpha_root, FPHA_ENTRIES + [("Subject_9/pour_milk/1", 0, "Test")])
    with pytest.raises(DataFormatError, match=re.escape(f"{split}:8") + r": .*Subject_9/pour_milk/1.* has no file"):
        load_dataset("fpha", fpha_root)


def test_fpha_split_entry_with_empty_file(fpha_root: Path) -> None:
    path = fpha_root / POSE_DIR / "Subject_2/pour_milk/1/skeleton.txt"
    path.write_text("")
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:1: empty file") + r".*listed at .*:6"):
        load_dataset("fpha", fpha_root)


@pytest.mark.parametrize(
    ("lineno", "text", "pattern"),
    [
        (1, "Train 3", r":1: expected a header 'Training <count>'"),
        (1, "Training 4", r":5: expected '<Subject_X/action/idx> <label>'"),  # count too large
        (1, "Training 2", r":4: expected a header 'Test <count>'"),  # count too small
        (3, "Subject_1/open_letter/1 x", r":3: bad entry"),
        (3, "Subject_1/open_letter 1", r":3: bad entry"),
        (3, "Subject_1/pour_milk/1 0", r":3: 'Subject_1/pour_milk/1' already listed at .*:2"),
        (4, "Subject_2/pour_milk/2 1", r":4: label 1 is 'pour_milk' here but 'open_letter' at .*:3"),
        (7, "Subject_2/open_letter/1 2", r":7: 'open_letter' has label 2 here but 1 at .*:3"),
    ],
)
def test_fpha_bad_split_file(fpha_root: Path, lineno: int, text: str, pattern: str) -> None:
    split = fpha_root / SPLIT_FILE
    replace_line(split, lineno, text)
    with pytest.raises(DataFormatError, match=re.escape(str(split)) + pattern):
        load_dataset("fpha", fpha_root)


def test_fpha_labels_with_a_gap(fpha_root: Path) -> None:
    split = write_split(fpha_root, [(rel, 2 * label, part) for rel, label, part in FPHA_ENTRIES])
    with pytest.raises(DataFormatError, match=re.escape(str(split)) + r": labels \[1\] never used"):
        load_dataset("fpha", fpha_root)


def test_fpha_trailing_garbage_and_missing_split_file(fpha_root: Path) -> None:
    split = fpha_root / SPLIT_FILE
    split.write_text(split.read_text() + "Subject_3/x/1 0\n")
    with pytest.raises(DataFormatError, match=re.escape(str(split)) + r":8: unexpected line"):
        load_dataset("fpha", fpha_root)
    split.unlink()
    with pytest.raises(DataFormatError, match=r"neither it nor .* holds fpha's data_split_action_recognition.txt"):
        load_dataset("fpha", fpha_root)


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        (" ".join(["1"] * 63), r":2: 63 columns, expected 64"),
        (" ".join(["1"] * 63 + ["1.2.3"]), r":2: column 64: '1.2.3' is not a number"),
        (" ".join(["1"] * 63 + ["-inf"]), r":2: column 64: non-finite"),
    ],
)
def test_fpha_bad_skeleton_line(fpha_root: Path, line: str, pattern: str) -> None:
    path = fpha_root / POSE_DIR / "Subject_1/open_letter/1/skeleton.txt"
    replace_line(path, 2, line)
    with pytest.raises(DataFormatError, match=re.escape(str(path)) + pattern + r".*listed at .*:3"):
        load_dataset("fpha", fpha_root)
