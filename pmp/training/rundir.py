"""Run folders: which config made their results, whether a request may use them, one writer at a time.

A run folder's results (checkpoint, final files, metrics.json) belong to one resolved config,
identified by its fingerprint: a hash of the config without the fields that cannot change the
trained model (where files live, threads, how often to log or checkpoint), with a generic `.npz`
dataset identified by its content. A request resumes or reuses a folder only when the
fingerprints match; anything else is an error that says how to start fresh. Nothing is removed
except by `discard` (`--fresh`), and then only the files a run writes.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import shutil
import socket
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from .checkpoint import IntegrityError, has_checkpoint, read_pointer, read_sealed_json
from .config import ConfigError, ExperimentConfig, load_config

#: Config fields that cannot change the trained model, so a run may resume with other values.
NON_SEMANTIC = ("work_dir", "data.root", "train.threads", "train.eval_every", "train.checkpoint_every",
                "train.tensorboard", "train.device")
#: Fields added after results were made, left out of the fingerprint at their default so that those
#: results keep their fingerprint (a sweep that spans versions does not retrain them).
ADDED_LATER = {"train.init": None, "train.drop_last": False, "train.bn_recalibrate": False, "train.ema": 0.0, "train.teacher": None, "augment.flip": 0.0, "augment.flip_axis": 0}
#: What a run writes into its folder (all that `discard` removes).
RUN_FILES = ("metrics.json", "model.json", "model.safetensors", "masks.safetensors", "log.csv", "config.yaml",
             "checkpoints", "tensorboard")
LOCK_FILE = ".lock"


class RunFolderError(ValueError):
    """The run folder holds results that the request must not reuse, or is in use."""


@lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_identity(name: str) -> str:
    """A dataset as the fingerprint sees it: built-in names as they are, a file by its content."""
    path = Path(name)
    if name in ("synthetic", "sbu", "fpha") or not path.is_file():
        return name
    st = path.stat()
    return "file-sha256:" + _file_sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)


def semantic_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as a dict without the NON_SEMANTIC fields, the dataset by `data_identity`."""
    d = copy.deepcopy(cfg.to_dict())
    # what the run's method gets, however the config spells it (options or method_options)
    d["pruning"]["options"] = cfg.pruning.run_options()
    del d["pruning"]["method_options"]
    dropped = [*NON_SEMANTIC, *(k for k, default in ADDED_LATER.items() if _get(d, k) == default)]
    for key in dropped:
        *parents, leaf = key.split(".")
        node = d
        for p in parents:
            node = node[p]
        node.pop(leaf, None)
    d["data"]["name"] = data_identity(cfg.data.name)
    if cfg.train.init:  # the starting weights by their content, like a generic dataset
        init = Path(cfg.train.init).expanduser()
        d["train"]["init"] = data_identity(str(init / "model.safetensors" if init.is_dir() else init))
    if cfg.train.teacher:  # the teacher by its weights' content
        from .distill import teacher_dir

        d["train"]["teacher"] = data_identity(str(teacher_dir(cfg) / "model.safetensors"))
        d["train"]["distill"], d["train"]["temperature"] = cfg.train.distill, cfg.train.temperature
    else:  # its options change nothing without it
        for key in ("distill", "temperature"):
            d["train"].pop(key, None)
    return d


def _get(d: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        d = d[part]
    return d


def fingerprint(cfg: ExperimentConfig) -> str:
    text = json.dumps(semantic_config(cfg), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict) or not d:
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def _differences(run_dir: Path, cfg: ExperimentConfig) -> str:
    """The semantic fields in which the folder's config.yaml differs from `cfg`, for the message."""
    try:
        old = _flat(semantic_config(load_config(run_dir / "config.yaml")))
    except (ConfigError, OSError):
        return ""
    new = _flat(semantic_config(cfg))
    diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return f" ({'; '.join(diff[:6])}{'; ...' if len(diff) > 6 else ''})" if diff else ""


def _legacy_fingerprint(run_dir: Path) -> str | None:
    """A folder written before fingerprints existed: its config.yaml's."""
    try:
        return fingerprint(load_config(run_dir / "config.yaml"))
    except (ConfigError, OSError):
        return None


def recorded_fingerprint(run_dir: Path, metrics: dict[str, Any] | None) -> str | None:
    """The fingerprint of a finished run's metrics (None: unknown, e.g. a foreign runner's)."""
    if metrics is None:
        return None
    return metrics.get("fingerprint") or _legacy_fingerprint(run_dir)


def finished_metrics(run_dir: Path) -> dict[str, Any] | None:
    """A finished run's metrics.json, verified; None if absent or unreadable (the run is redone)."""
    try:
        return read_sealed_json(run_dir / "metrics.json")
    except IntegrityError:
        return None


def check_folder(run_dir: Path, cfg: ExperimentConfig, fp: str) -> str:
    """What `run_dir` offers the request: "new", "finished" (same config) or "resume" (a checkpoint
    of the same config). Results of another config raise RunFolderError saying what to do."""
    advice = "rerun with --fresh to discard them, or choose another --run-dir"
    metrics = finished_metrics(run_dir)
    if metrics is not None:
        old = recorded_fingerprint(run_dir, metrics)
        if old is not None and old != fp:
            raise RunFolderError(f"{run_dir}: holds the finished results of a different config"
                                 f"{_differences(run_dir, cfg)}; {advice}")
        return "finished"
    ckpt = run_dir / "checkpoints"
    if not has_checkpoint(ckpt):
        return "new"
    try:
        old = read_pointer(ckpt)["info"].get("fingerprint") or _legacy_fingerprint(run_dir)
    except IntegrityError as e:
        raise RunFolderError(f"{e}; the folder's checkpoint cannot be resumed: {advice}") from e
    if old != fp:
        raise RunFolderError(f"{run_dir}: holds a checkpoint of a different config{_differences(run_dir, cfg)}; "
                             f"{advice}")
    return "resume"


def discard(run_dir: Path) -> None:
    """Remove a run's files from `run_dir` (nothing else in it), for an explicit fresh start."""
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    (run_dir / "error.txt").unlink(missing_ok=True)


@contextlib.contextmanager
def folder_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (created if needed) for the duration; a second holder
    fails at once with a message naming the first (pid, host, since). The kernel releases the lock
    when its holder dies, however it dies, so a crash never leaves a stale lock."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise RunFolderError(f"{folder}: in use by {holder}; wait for it to finish or use another folder") from None
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        os.pwrite(fd, f"{what} (pid {os.getpid()} on {socket.gethostname()}, since {stamp})".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
