"""Sweep files and their expansion into runs: pure data, no training, no files written.

Keeping expansion pure lets the sweep runner, the CLI (`pmp sweep --list`) and the tests agree on
exactly which runs a sweep file means and what each run's folder is called.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: Grid shorthands for the axes every sweep has; any other key is a dotted config path.
SHORTHANDS = {"method": "pruning.method", "rate": "pruning.rate", "seed": "train.seed", "split": "data.split"}
#: Run-id prefixes of the shorthand axes, in id order.
ID_PREFIXES = {"pruning.method": "", "pruning.rate": "r", "train.seed": "s", "data.split": "f"}
DENSE = "dense"
#: Methods whose one training serves every rate of a range (pmp.pruning.mrmp): no run per rate.
MULTI_RATE = {"mrmp"}
#: `method@name` in grid.method: a named variant of a method, its own column in reports (e.g. lth@equal).
VARIANT_SEP = "@"
_VARIANT_NAME = re.compile(r"[A-Za-z0-9._+-]+")
_KEYS = {"name", "base", "out", "grid", "overrides", "method_overrides"}


class SweepSpecError(ValueError):
    """A sweep file is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file. Keys of `grid`, `overrides` and `method_overrides` are full dotted paths."""

    name: str
    base: Path | None  # single-run config; None = the config defaults
    out: Path
    grid: dict[str, list[Any]] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its folder name and the dotted overrides that turn the base config into it."""

    run_id: str
    overrides: dict[str, Any]  # everything applied to the base config, in order
    axes: dict[str, Any]  # this run's grid values (full dotted keys)

    @property
    def method(self) -> str | None:
        return self.overrides.get("pruning.method")

    @property
    def label(self) -> str | None:
        """The grid's method value: the method, or `method@name` for a named variant."""
        return self.axes.get("pruning.method")

    @property
    def extra_axes(self) -> dict[str, Any]:
        return extra_axes(self.axes)


def extra_axes(axes: dict[str, Any]) -> dict[str, Any]:
    """Grid values beyond method/rate/seed/split: they tell variants of the same method apart."""
    return {k: v for k, v in axes.items() if k not in ID_PREFIXES}


def split_label(label: str) -> tuple[str, str]:
    """`lth@equal` -> ("lth", "equal"); a plain method -> (method, "")."""
    method, _, name = str(label).partition(VARIANT_SEP)
    return method, name


def _full_key(key: str) -> str:
    return SHORTHANDS.get(key, key)


def _mapping(value: Any, where: str) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SweepSpecError(f"{where}: expected a mapping, got {value!r}")
    return value


def _dotted(value: Any, where: str) -> dict[str, Any]:
    """A mapping of config keys, shorthands expanded."""
    return {_full_key(str(k)): v for k, v in _mapping(value, where).items()}


def _resolve(path: str | Path, sweep_file: Path | None) -> Path:
    """Paths in a sweep file are relative to the cwd (the repo root) or else to the sweep file."""
    path = Path(path)
    if path.is_absolute() or path.exists() or sweep_file is None:
        return path
    beside = sweep_file.parent / path
    return beside if beside.exists() else path


def parse_sweep(data: dict[str, Any], source: Path | None = None) -> SweepSpec:
    """Validate a sweep mapping (the content of a sweep YAML file)."""
    where = str(source or "sweep")
    if not isinstance(data, dict):
        raise SweepSpecError(f"{where}: top level must be a mapping")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise SweepSpecError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(_KEYS))}")
    name = str(data.get("name") or (source.stem if source else "sweep"))
    grid = {k: v if isinstance(v, list) else [v] for k, v in _dotted(data.get("grid"), f"{where}: grid").items()}
    for key, values in grid.items():
        if not values:
            raise SweepSpecError(f"{where}: grid.{key} is empty")
    overrides = _dotted(data.get("overrides"), f"{where}: overrides")
    method_overrides = {
        str(m): _dotted(o, f"{where}: method_overrides.{m}")
        for m, o in _mapping(data.get("method_overrides"), f"{where}: method_overrides").items()
    }
    methods = grid.get("pruning.method", [])
    bases = {split_label(m)[0] for m in methods}
    for m in method_overrides:
        if m not in methods and m not in bases:
            raise SweepSpecError(f"{where}: method_overrides.{m}: {m!r} is not in grid.method {methods}")
    for m in methods:
        method, variant = split_label(m)
        if VARIANT_SEP not in str(m):
            continue
        if not method or not _VARIANT_NAME.fullmatch(variant):
            raise SweepSpecError(f"{where}: grid.method {m!r}: a variant is method@name, name of letters, "
                                 "digits and . _ + -")
        if not method_overrides.get(m):
            raise SweepSpecError(f"{where}: grid.method {m!r}: a named variant needs its method_overrides.{m}")
    clash = sorted(set(grid) & set(overrides).union(*method_overrides.values()))
    if clash:
        raise SweepSpecError(f"{where}: {', '.join(clash)}: both a grid axis and an override")
    base = data.get("base")
    return SweepSpec(
        name=name,
        base=_resolve(base, source) if base else None,
        out=Path(data.get("out") or f"work_dirs/sweeps/{name}"),
        grid=grid,
        overrides=overrides,
        method_overrides=method_overrides,
    )


def load_sweep(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise SweepSpecError(f"sweep file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise SweepSpecError(f"{path}: invalid YAML: {e}") from e
    return parse_sweep(data, path)


def id_part(value: Any) -> str:
    """A value as part of a folder name: one path component, no separators."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-")


def run_id(axes: dict[str, Any]) -> str:
    """Readable, stable folder name: `pmp_r0.98_s0_f3`, plus a short hash of any other axes."""
    parts = [ID_PREFIXES[k] + id_part(axes[k]) for k in ID_PREFIXES if k in axes]
    extra = extra_axes(axes)
    if extra:
        digest = hashlib.sha1(json.dumps(extra, sort_keys=True, default=str).encode()).hexdigest()[:6]
        parts.append(f"x{digest}")
    return "_".join(parts) or "run"


def expand_grid(spec: SweepSpec) -> list[RunSpec]:
    """The cartesian product of the grid, in file order, without duplicates.

    Dense runs ignore every `pruning.*` axis (rate included): they are run once per remaining
    combination, at rate 0, instead of once per rate. Multi-rate runs (mrmp) ignore the rate axis:
    one run per remaining combination reports every rate it serves (its options say which).
    A named variant `m@name` runs method m with method_overrides of m, then of `m@name`.
    """
    keys = list(spec.grid)
    runs: dict[str, RunSpec] = {}
    for values in itertools.product(*(spec.grid[k] for k in keys)):
        axes = dict(zip(keys, values))
        label = axes.get("pruning.method")
        method = None if label is None else split_label(label)[0]
        if method == DENSE:
            axes = {k: v for k, v in axes.items() if not k.startswith("pruning.")}
            axes = {"pruning.method": label, "pruning.rate": 0.0, **axes}
        elif method in MULTI_RATE:
            axes = {k: v for k, v in axes.items() if k != "pruning.rate"}
        rid = run_id(axes)
        if rid in runs:
            if runs[rid].axes != axes:  # distinct values that print alike, e.g. 0.98 and "0.98"
                raise SweepSpecError(f"{spec.name}: grid values {runs[rid].axes} and {axes} share run id {rid}")
            continue
        overrides = {**spec.overrides, **axes, **spec.method_overrides.get(method, {})}
        if label is not None and label != method:
            overrides.update({"pruning.method": method, **spec.method_overrides[label]})
        runs[rid] = RunSpec(run_id=rid, overrides=overrides, axes=axes)
    return list(runs.values())


def parse_only(items: list[str] | None) -> dict[str, list[Any]]:
    """`["seed=0,1,2", "method=pmp,mp"]` (the command line's repeated `--only`) as {axis: values}."""
    from pmp.training.config import parse_scalar

    out: dict[str, list[Any]] = {}
    for item in items or []:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise SweepSpecError(f"--only {item!r}: expected AXIS=V1,V2 (e.g. seed=0,1,2)")
        out.setdefault(key.strip(), []).extend(parse_scalar(v.strip()) for v in values.split(","))
    return out


def select_runs(runs: list[RunSpec], only: dict[str, list[Any]]) -> list[RunSpec]:
    """The runs whose grid values are among `only`'s (keys: shorthands or dotted paths, values
    compared as printed in run ids, so `0.98` and `"0.98"` agree); a key no run has as an axis, or a
    value no run has, is an error, so that a typo cannot silently select nothing.

    A run without the axis (mrmp has no rate) or that ignores it (dense: every pruning axis but the
    method; it is every rate's reference) is kept. For a sweep that spans sittings: `seed=[0, 1, 2]` first gives whole cells at 3 seeds, and the
    remaining seeds later land in the same run folders.
    """
    selected = runs
    for key, values in only.items():
        full = _full_key(key)
        present = {id_part(r.axes[full]) for r in runs if full in r.axes}
        if not present:
            axes = sorted({k for r in runs for k in r.axes})
            raise SweepSpecError(f"--only {key}: not an axis of this grid (axes: {', '.join(axes)})")
        wanted = {id_part(v) for v in values}
        missing = sorted(wanted - present)
        if missing:
            raise SweepSpecError(f"--only {key}: no run has {', '.join(missing)} (the grid has {', '.join(sorted(present))})")
        selected = [r for r in selected if _ignores(r, full) or id_part(r.axes[full]) in wanted]
    return selected


def _ignores(run: RunSpec, key: str) -> bool:
    if key not in run.axes:
        return True
    label = run.axes.get("pruning.method")
    dense = label is not None and split_label(label)[0] == DENSE
    return dense and key.startswith("pruning.") and key != "pruning.method"
