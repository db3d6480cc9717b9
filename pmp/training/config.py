"""Experiment descriptions: one dataclass tree, loaded from YAML, overridable by dotted keys.

Every option has a default here, every YAML key maps to a field (unknown keys are errors that
name the key), and every field can be overridden from the CLI as `--set train.epochs=50`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pmp.data import AugmentConfig, PreprocessConfig


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and the key."""


@dataclass
class DataConfig:
    name: str = "synthetic"  # "sbu" | "fpha" | "synthetic" | path to a generic .npz file
    root: str | None = None  # folder holding the dataset (else $PMP_DATA_ROOT)
    split: str | None = None  # split/fold name ("1:1", "1".."5"); None = the first one
    options: dict[str, Any] = field(default_factory=dict)  # loader options (synthetic: seed, sizes)


@dataclass
class ModelConfig:
    name: str = "agcn"
    kwargs: dict[str, Any] = field(default_factory=dict)  # sizes; data-dependent ones are filled in


@dataclass
class TrainConfig:
    epochs: int = 60
    batch_size: int = 64  # 0 = full batch
    # skip each epoch's incomplete last batch (its sequences differ every epoch): a batch of 2-3 gives
    # BatchNorm degenerate statistics, which derails training on small splits (docs/backbones/ddnet.md)
    drop_last: bool = False
    # after training, re-estimate every BatchNorm's statistics on the training split (no augmentation)
    # for the final network: stale running statistics can sink a finished run (docs/backbones/ddnet.md)
    bn_recalibrate: bool = False
    # decay per step of an exponential moving average of the weights (bias-corrected), which becomes
    # the finished network (BatchNorm re-estimated on the training split); 0 = off (ema.py)
    ema: float = 0.0
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    schedule: str = "cosine"  # cosine | constant
    label_smoothing: float = 0.0
    mixup: float = 0.0  # Beta(mixup, mixup) weight of mixing each batch with a shuffled copy; 0 = off
    seed: int = 0
    threads: int = 0  # torch threads; 0 = leave torch's default
    eval_every: int = 10  # epochs between test evaluations in the log (0 = only at the end)
    checkpoint_every: int = 5  # epochs between checkpoints (resume granularity)
    tensorboard: bool = False  # also write TensorBoard event files to <run>/tensorboard/ (needs pmp[tensorboard])
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda
    init: str | None = None  # a finished run folder (or its model.safetensors): start from its weights (fine-tune)
    # knowledge distillation (distill.py): a finished run of the same dataset and split ({split}, as
    # run folder names spell it, and {seed} are filled in) whose outputs softened by `temperature`
    # are a second target, of weight `distill` (the labels' weight is 1 - distill)
    teacher: str | None = None
    distill: float = 0.5
    temperature: float = 4.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema: the decay must be in [0, 1) (0 = off), got {self.ema!r}")
        if not 0.0 <= self.distill <= 1.0:
            raise ValueError(f"distill: the teacher's weight must be in [0, 1], got {self.distill!r}")
        if not self.temperature > 0.0:
            raise ValueError(f"temperature: must be > 0, got {self.temperature!r}")


@dataclass
class PruningConfig:
    method: str = "dense"  # dense | pmp | mp | gmp | lth | snip
    rate: float = 0.0
    scope: str = "layer"  # layer: one budget per tensor; global: one budget over all
    include: list[str] | None = None  # fnmatch patterns of prunable parameters (default rule if None)
    exclude: list[str] = field(default_factory=list)
    exclude_last: bool = True  # keep the classifier dense
    options: dict[str, Any] = field(default_factory=dict)  # method-specific (e.g. prior, lam)
    # per-method defaults, e.g. {pmp: {hard_tail: 0.25}}: one config (and one sweep over methods)
    # gives a method its options without handing them to the others; `options` win over them
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from pmp.pruning.base import METHODS

        for method, opts in self.method_options.items():
            if method not in METHODS:
                raise ValueError(f"method_options: unknown method {method!r}; methods: {', '.join(sorted(METHODS))}")
            if not isinstance(opts, dict):
                raise ValueError(f"method_options.{method}: expected a mapping of options, got {opts!r}")

    def run_options(self) -> dict[str, Any]:
        """The options this run's method gets: its `method_options` entry under `options`."""
        return {**self.method_options.get(self.method, {}), **self.options}


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    work_dir: str = "work_dirs"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _dataclass_type(tp: Any) -> type | None:
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML value against a field's annotation (ints accepted for floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dc := _dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(dc, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return list(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # split names like 1 or 1:1 written unquoted
    if isinstance(tp, type) and not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys by name."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # a dataclass's own checks (__post_init__)
        raise ConfigError(f"{where}: {e}") from None


def load_config(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return from_dict(ExperimentConfig, data, where=str(path))


def apply_overrides(cfg: ExperimentConfig, overrides: dict[str, Any]) -> ExperimentConfig:
    """A new config with dotted keys set, e.g. {"pruning.rate": 0.9, "pruning.options.prior": "laplace"}.

    Values are taken as given; CLI strings go through `parse_scalar` first."""
    data = cfg.to_dict()
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node, dict) or p not in node:
                raise ConfigError(f"override {key!r}: no section {p!r}")
            if node[p] is None:
                node[p] = {}
            node = node[p]
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {'.'.join(parts[:-1])} is not a section")
        node[parts[-1]] = value
    return from_dict(ExperimentConfig, data, where="overrides")


def parse_scalar(text: str) -> Any:
    """A CLI string as a value: bool, null, int, float, a YAML list/mapping, else the string itself.

    Not plain YAML: YAML 1.1 reads the split name "1:1" as the base-60 number 61."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "~"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if text.strip()[:1] in ("[", "{"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse {text!r}: {e}") from e
    return text


def parse_set_options(items: list[str]) -> dict[str, Any]:
    """`["train.epochs=50", ...]` from repeated --set flags into a dict; names the bad item."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. train.epochs=50)")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_scalar(v)
    return out


def save_config(cfg: ExperimentConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
