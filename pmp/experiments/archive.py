"""A sweep's finished runs in one committed file, so that its results outlive the checkout that ran them.

Run folders (weights, checkpoints) live in an ignored `work_dirs/`; a grid that spans sittings on
fresh checkouts would lose its earlier runs with them. The archive keeps what the reports read: each
finished run's sealed `metrics.json` and `run.json` and its `config.yaml`, one JSON line per run,
sorted by run id (a sitting's new runs are added lines in a diff). Restoring it writes those files
back into run folders, where the sweep counts them as finished (its fingerprint check still applies)
and the report reads them as if they had run here.

A line may instead hold only a run's results rows (`"rows"`, with `"source"` saying where it was read
from): the rows of runs whose folders were gone before the archive existed. The report includes them
(they carry no histograms or layer densities, so they are left out of those plots); the sweep does not
count them as finished, so running their cell again replaces the row with the run's full record.

Nothing is overwritten: a run folder that holds a finished run wins over its archived twin, and every
archived document is verified against its checksum before it is written or read.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pmp.training.checkpoint import SEAL_KEY, IntegrityError, atomic_write_json, atomic_write_text, parse_sealed_json

from .sweep import METRICS, RUN_INFO, read_metrics

FILES = {"metrics": METRICS, "run_info": RUN_INFO}  # entry key -> sealed file in the run folder
CONFIG = "config.yaml"  # archived as text: what the run was trained with (ablation tables read its options)


@dataclass
class Entry:
    """One archived run: its sealed documents, or (a legacy line) only its results row."""

    run: str
    docs: dict[str, dict[str, Any]]  # "metrics" / "run_info" -> the sealed document, checksum included
    config: str | None = None  # the run's config.yaml
    rows: list[dict[str, Any]] | None = None  # a multi-rate run has a row per rate it serves
    source: str = ""

    def body(self, key: str) -> dict[str, Any]:
        """An archived document without its checksum (verified when the archive was read)."""
        return {k: v for k, v in self.docs.get(key, {}).items() if k != SEAL_KEY}

    def line(self) -> str:
        body: dict[str, Any] = {"run": self.run, **self.docs}
        if self.config is not None:
            body["config"] = self.config
        if self.rows is not None:
            body.update(rows=self.rows, source=self.source)
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


def read(path: str | Path) -> dict[str, Entry]:
    """Every entry of the archive by run id (none if the file does not exist yet); a line that is not
    JSON, lacks its run id or fails a checksum raises IntegrityError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        return {}
    out: dict[str, Entry] = {}
    for n, text in enumerate(path.read_text().splitlines(), 1):
        if not text.strip():
            continue
        where = Path(f"{path}:{n}")
        try:
            body = json.loads(text)
        except json.JSONDecodeError as e:
            raise IntegrityError(f"{where}: not JSON ({e})") from e
        if not isinstance(body, dict) or not isinstance(body.get("run"), str):
            raise IntegrityError(f"{where}: not an archived run (no 'run' id)")
        docs = {k: body[k] for k in FILES if body.get(k) is not None}
        for key, doc in docs.items():
            if not isinstance(doc, dict) or SEAL_KEY not in doc:
                raise IntegrityError(f"{where}: '{key}' is not a sealed document")
            parse_sealed_json(Path(f"{where} ({key})"), json.dumps(doc))
        rows = body.get("rows")
        if "metrics" not in docs and not (isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows)):
            raise IntegrityError(f"{where}: run {body['run']} has neither 'metrics' nor 'rows'")
        if body["run"] in out:
            raise IntegrityError(f"{where}: run {body['run']} is archived twice")
        if not isinstance(body.get("config", ""), str):
            raise IntegrityError(f"{where}: 'config' is not text")
        out[body["run"]] = Entry(body["run"], docs, body.get("config"), rows, body.get("source", ""))
    return out


def write(path: str | Path, entries: dict[str, Entry]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(path), "".join(entries[k].line() + "\n" for k in sorted(entries)))


def _folder_entry(run_dir: Path, run: str) -> Entry | None:
    """A finished run folder's entry, each file read once and verified; None when the run is not
    finished or a file is corrupt (the report skips such a run too)."""
    docs = {}
    for key, name in FILES.items():
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            text = path.read_text()
            parse_sealed_json(path, text)
        except (IntegrityError, OSError, UnicodeDecodeError):
            return None
        doc = json.loads(text)
        if SEAL_KEY in doc:  # unsealed (pre-checksum) files are not archived: they could not be verified
            docs[key] = doc
    config = (run_dir / CONFIG).read_text() if (run_dir / CONFIG).is_file() else None
    return Entry(run, docs, config) if "metrics" in docs else None


def pack(runs_dir: str | Path, path: str | Path) -> int:
    """Add every finished run under `runs_dir` (one level: a sweep's folder) to the archive at `path`,
    replacing the archived copy of the same run and keeping the entries of runs not here. Returns how
    many runs were added or replaced."""
    runs_dir = Path(runs_dir)
    entries = read(path)
    n = 0
    for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []:
        entry = _folder_entry(run_dir, run_dir.name)
        if entry is not None and (run_dir.name not in entries or entries[run_dir.name].line() != entry.line()):
            entries[run_dir.name] = entry
            n += 1
    write(path, entries)
    return n


def restore(path: str | Path, runs_dir: str | Path) -> list[str]:
    """Write the archived runs that are not finished under `runs_dir` back into their folders (the
    sealed documents, byte-for-byte equal in content); row-only entries are not runs and stay in the
    archive. Returns the restored run ids."""
    runs_dir = Path(runs_dir)
    restored = []
    for run, entry in read(path).items():
        if "metrics" not in entry.docs or read_metrics(runs_dir / run) is not None:
            continue
        (runs_dir / run).mkdir(parents=True, exist_ok=True)
        if entry.config is not None:
            atomic_write_text(runs_dir / run / CONFIG, entry.config)
        for key in ("run_info", "metrics"):  # metrics last: it is what marks the run finished
            if key in entry.docs:
                atomic_write_json(runs_dir / run / FILES[key], entry.docs[key])
        restored.append(run)
    return restored


@contextmanager
def kept(path: str | Path, runs_dir: str | Path) -> Iterator[list[str]]:
    """`with kept(archive, sweep.out) as restored: run_sweep(...)`: the archived runs are restored into
    `runs_dir` first (their ids are yielded), and every finished run is packed back afterwards, also
    when the body is interrupted, so a sweep spans sittings and fresh checkouts."""
    path, runs_dir = Path(path), Path(runs_dir)
    restored = restore(path, runs_dir)
    try:
        yield restored
    finally:
        if runs_dir.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
            pack(runs_dir, path)


def import_rows(csv_path: str | Path, path: str | Path, source: str) -> int:
    """Archive the rows of a report's results.csv whose runs the archive does not hold yet, as row-only
    entries naming `source` (e.g. the commit the csv came from). Returns how many were added."""
    entries = read(path)
    new: dict[str, Entry] = {}
    with open(csv_path, newline="") as f:
        for line, row in enumerate(csv.DictReader(f), 2):
            run = row.get("run")
            if not run:
                raise IntegrityError(f"{csv_path}:{line}: no 'run' column value")
            if run not in entries:
                new.setdefault(run, Entry(run, {}, None, [], source)).rows.append(_typed(row))
    write(path, {**entries, **new})
    return len(new)


INTS, FLOATS = {"seed", "epochs"}, {"rate", "class_avg_acc", "overall_acc", "soft_class_avg_acc", "achieved_rate", "wall_s"}


def _typed(row: dict[str, str]) -> dict[str, Any]:
    """A results.csv row as the report holds it: numbers as numbers, an empty number as None, text
    (method, variant, fold, run) as text."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k in INTS | FLOATS:
            out[k] = None if v == "" else (int(v) if k in INTS else float(v))
        elif k == "seen":
            out[k] = {"True": True, "False": False}.get(v)
        else:
            out[k] = v
    return out
