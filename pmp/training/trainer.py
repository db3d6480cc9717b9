"""One run: data -> model -> pruning method -> training -> finalisation -> metrics, in a run folder.

Run folder (CTR-GCN/PYSKL style work dir):
  config.yaml        the resolved config
  log.csv            one row per epoch (loss, penalty, train/test accuracy, lr, time)
  checkpoints/       ckpt-<epoch>-<token>.safetensors + last.json, the pointer written last (checkpoint.py)
  model.json         how to rebuild the model and its input (name, kwargs, classes, data, preprocessing)
  model.safetensors  final weights, pruned entries exactly zero
  masks.safetensors  the final boolean masks by parameter name
  metrics.json       written last: its presence means the run finished

Each of them belongs to one config fingerprint (rundir.py): a request with another config is an
error, never a silent reuse, and nothing is touched before the whole request has been validated.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import io
import logging
import math
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pmp.data import DataFormatError, SkeletonDataset, Split, augment, load_dataset, preprocess
from pmp.data.preprocess import layout_of, mirror
from pmp.machine import check_allocation, machine_fingerprint
from pmp.models import create_model, model_dataset_fields
from pmp.models.ensemble import Ensemble
from pmp.pruning.base import Pruner, create_pruner
from pmp.pruning.mrmp import recalibrate_batchnorm
from pmp.pruning.report import sparsity_report

from .allocator import keep_freed_memory
from .checkpoint import IntegrityError, has_checkpoint, load_checkpoint, load_tensors, read_sealed_json, save_checkpoint, save_tensors
from .checkpoint import atomic_write_text, parse_tensors, write_sealed_json
from .config import ConfigError, ExperimentConfig, load_config, save_config
from .distill import distill_loss, teacher_targets
from .ema import WeightAverage
from .device import use_device
from .metrics import classification_metrics
from .tensorboard import TensorBoardLog
from .multirate import calibration_batches, model_at_rate, serve_rates
from .rundir import RunFolderError, check_folder, discard, fingerprint, folder_lock

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]
# Wraps the end of training: entered with the trained network still as trained (a soft PMP network
# still soft), exited once finalize() has made it the final one; for tools that compare the two
# (benchmarks/soft_hard_gap.py). Called with (model, pruner, x_test).
FinishProbe = Callable[[nn.Module, Pruner, torch.Tensor], AbstractContextManager[Any]]
LOG_FIELDS = ["epoch", "lr", "loss", "penalty", "train_acc", "test_class_avg_acc", "time_s"]


def make_optimizer(params: list[nn.Parameter], cfg: ExperimentConfig) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=True)
    raise ValueError(f"train.optimizer: unknown optimizer {t.optimizer!r} (adam, adamw, sgd)")


def lr_at(cfg: ExperimentConfig, phase_progress: float) -> float:
    """Learning rate within a training phase (LTH restarts the schedule at each rewind)."""
    if cfg.train.schedule == "constant":
        return cfg.train.lr
    if cfg.train.schedule == "cosine":
        return cfg.train.lr * 0.5 * (1.0 + math.cos(math.pi * min(phase_progress, 1.0)))
    raise ValueError(f"train.schedule: unknown schedule {cfg.train.schedule!r} (cosine, constant)")


def mixup_draw(n: int, alpha: float, generator: torch.Generator) -> tuple[float, torch.Tensor]:
    """Mixup's weight lam ~ Beta(alpha, alpha) and partner order for a batch of n, drawn from
    `generator` (so a resumed run draws the same)."""
    from scipy.stats import beta

    u = float(torch.rand(1, generator=generator))
    return float(beta.ppf(u, alpha, alpha)), torch.randperm(n, generator=generator)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device  # data stay on the CPU; batches go to the model's device
    out = torch.cat([model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int):
    pred = predict_logits(model, x).argmax(1)
    return classification_metrics(y.numpy(), pred.numpy(), num_classes)


@dataclass
class SplitData:
    """A config's split as training and evaluation see it: the preprocessed tensors of its train and
    test sequences (one code path, so a diagnostic or re-evaluation reads the data the run read)."""

    dataset: SkeletonDataset
    split: Split
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_train_mirrored: torch.Tensor | None = None  # the train sequences' mirror images (augment.flip)

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes


def split_data(cfg: ExperimentConfig, data_root: str | None = None) -> SplitData:
    """Load `cfg`'s dataset (from `data_root`, else cfg.data.root, else $PMP_DATA_ROOT), preprocess
    every sequence once and cut out the config's split."""
    ds = load_dataset(cfg.data.name, data_root or cfg.data.root, **cfg.data.options)
    split = ds.split(cfg.data.split)
    channels = layout_of(ds, cfg.preprocess).channels
    check_allocation(f"preprocessing {ds.name} ({len(ds.sequences)} sequences x {cfg.preprocess.frames} frames)",
                     3 * 8 * len(ds.sequences) * cfg.preprocess.frames * ds.num_nodes * channels)
    x, y = preprocess(ds, cfg.preprocess), torch.as_tensor(ds.labels)
    tr, te = torch.as_tensor(split.train), torch.as_tensor(split.test)
    mirrored = None
    if cfg.augment.flip:
        try:
            # the whole dataset, then its train rows: preprocessing works on segment sums over all
            # frames, so a subset would round differently (2e-7) from the originals beside it
            mirrored = preprocess(mirror(ds, cfg.augment.flip_axis), cfg.preprocess)[tr]
        except (DataFormatError, ValueError) as e:
            raise ConfigError(f"augment.flip: {e}") from None
    return SplitData(ds, split, x[tr], y[tr], x[te], y[te], mirrored)


def latent_histogram(pruner: Pruner, bins: int = 80) -> dict[str, Any]:
    """Histogram of the largest prunable tensor's latent weights (and the prior's density, if any)."""
    target = max(pruner.targets, key=lambda t: t.numel)
    w = pruner.latent(target.name).detach().flatten().float()
    edge = float(4 * w.std()) or 1.0
    hist = torch.histc(w, bins=bins, min=-edge, max=edge) / (w.numel() * (2 * edge / bins))
    centers = torch.linspace(-edge, edge, bins + 1)[:-1] + edge / bins
    out: dict[str, Any] = {"layer": target.name, "centers": centers.tolist(), "density": hist.tolist()}
    prior = getattr(pruner, "priors", {}).get(target.name) if hasattr(pruner, "priors") else None
    if prior is not None:
        out["prior_density"] = prior.pdf(centers).tolist()
        out["band_edge"] = float(prior.band_edge(pruner.rate))
    return out


def method_options(method: str) -> list[str]:
    """The keyword options a pruning method's constructor takes (beyond the PruningConfig fields)."""
    from pmp.pruning.base import METHODS

    skip = {"self", "model", "rate", "scope", "include", "exclude", "exclude_last"}
    names: set[str] = set()
    for cls in METHODS[method].__mro__:
        init = cls.__dict__.get("__init__")
        if init is not None:
            names |= {n for n, prm in inspect.signature(init).parameters.items()
                      if n not in skip and prm.kind in (prm.KEYWORD_ONLY, prm.POSITIONAL_OR_KEYWORD)}
    return sorted(names)


def _check_train_fields(cfg: ExperimentConfig) -> None:
    t = cfg.train
    for key, value, low in (("epochs", t.epochs, 1), ("batch_size", t.batch_size, 0), ("threads", t.threads, 0),
                            ("eval_every", t.eval_every, 0), ("checkpoint_every", t.checkpoint_every, 1)):
        if value < low:
            raise ConfigError(f"train.{key}: {value} is below {low}")


class _Run:
    """State of one training run; `run_experiment` is the public entry point."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path, progress: bool):
        """Builds everything the run needs, so that a bad request fails here, before the run
        folder is touched (`run_experiment`)."""
        self.cfg, self.run_dir, self.progress = cfg, run_dir, progress
        _check_train_fields(cfg)
        self.fingerprint = fingerprint(cfg)
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        self.device = use_device(cfg.train.device)
        keep_freed_memory()  # no page faults on each step's temporaries (allocator.py)
        torch.manual_seed(cfg.train.seed)
        np.random.seed(cfg.train.seed)

        data = split_data(cfg)
        ds = self.dataset = data.dataset
        self.split = data.split
        self.input_layout = layout_of(ds, cfg.preprocess)  # how augmentation treats each channel
        self.x_train, self.y_train, self.x_test, self.y_test = data.x_train, data.y_train, data.x_test, data.y_test
        self.x_train_mirrored = data.x_train_mirrored
        self.num_classes = ds.num_classes

        _, t, v, c = data.x_train.shape
        self.model_kwargs = dict(num_nodes=v, in_frames=t, in_channels=c, num_classes=ds.num_classes)
        for name in model_dataset_fields(cfg.model.name):  # e.g. the skeleton's edges for stgcn
            self.model_kwargs[name] = getattr(ds, name)
        self.model_kwargs.update(cfg.model.kwargs)
        with torch.device("meta"):  # sizes first: parameters, gradients and two optimizer moments
            numel = sum(q.numel() for q in create_model(cfg.model.name, **self.model_kwargs).parameters())
        check_allocation(f"model {cfg.model.name} ({numel} parameters)", 16 * numel)
        self.model = create_model(cfg.model.name, **self.model_kwargs)
        self.init_sha256 = load_init(self.model, cfg.train.init) if cfg.train.init else None
        self.teacher, self.teacher_sha256 = teacher_targets(cfg, data) if cfg.train.teacher else (None, None)
        self.model = self.model.to(self.device)
        # The optimizer's parameter order is fixed here, before any parametrization moves tensors.
        self.params = list(self.model.parameters())
        p = cfg.pruning
        try:
            self.pruner = create_pruner(
                p.method, self.model, p.rate, scope=p.scope, include=p.include, exclude=p.exclude,
                exclude_last=p.exclude_last, **p.run_options(),
            )
        except TypeError as e:  # an option the method does not take, or a value of the wrong type
            given = "pruning.options" + (f" + pruning.method_options.{p.method}" if p.method in p.method_options else "")
            raise ConfigError(f"{given} {p.run_options()}: {e} (options of {p.method!r}: "
                              f"{', '.join(method_options(p.method)) or 'none'})") from None
        self.total_epochs = cfg.train.epochs * self.pruner.epoch_multiplier
        bs = cfg.train.batch_size or len(self.x_train)
        if cfg.train.drop_last and bs > len(self.x_train):
            raise ConfigError(f"train.drop_last: batch_size {bs} is larger than the {len(self.x_train)} training "
                              "sequences, so every batch would be dropped")
        self.steps_per_epoch = len(self.x_train) // bs if cfg.train.drop_last else math.ceil(len(self.x_train) / bs)
        self.batch_size = bs
        self.total_steps = self.total_epochs * self.steps_per_epoch
        self.optimizer = make_optimizer(self.params, cfg)
        self.ema = WeightAverage(self.params, cfg.train.ema) if cfg.train.ema else None
        lr_at(cfg, 0.0)  # validates the schedule's name now rather than in the first step
        self.shuffle_gen = torch.Generator().manual_seed(cfg.train.seed)
        self.aug_gen = torch.Generator().manual_seed(cfg.train.seed + 1)
        # An ensemble trains each member on its own batches (pmp/models/ensemble.py): member 0 with the
        # run's generators, as the backbone alone; member i with (batch order, augmentation) of its own.
        self.nets: list[nn.Module] = list(self.model.members) if isinstance(self.model, Ensemble) else [self.model]
        self.view_gens = [(self.shuffle_gen, self.aug_gen)] + [
            tuple(torch.Generator().manual_seed(int(s)) for s in np.random.SeedSequence([cfg.train.seed, i]).generate_state(2))
            for i in range(1, len(self.nets))]
        self.step_count, self.phase_start, self.epoch = 0, 0, 0
        self.elapsed = 0.0
        self.log_rows: list[dict[str, Any]] = []
        self.hist_before: dict[str, Any] | None = None

    # --------------------------------------------------------------- checkpointing
    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "step": self.step_count, "phase_start": self.phase_start,
            "elapsed": self.elapsed, "log": self.log_rows, "hist_before": self.hist_before,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "pruner": self.pruner.state_dict(),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            "rng": {"torch": torch.get_rng_state(), "shuffle": self.shuffle_gen.get_state(),
                    "augment": self.aug_gen.get_state(),
                    "members": [[g.get_state() for g in gens] for gens in self.view_gens[1:]]},
        }

    def restore(self, s: dict[str, Any]) -> None:
        self.pruner.load_state_dict(s["pruner"])  # first: it re-creates parametrizations
        self.model.load_state_dict(s["model"])
        self.optimizer.load_state_dict(s["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(s["ema"])
        torch.set_rng_state(s["rng"]["torch"])
        self.shuffle_gen.set_state(s["rng"]["shuffle"])
        self.aug_gen.set_state(s["rng"]["augment"])
        for gens, states in zip(self.view_gens[1:], s["rng"].get("members", []), strict=True):
            for g, state in zip(gens, states, strict=True):
                g.set_state(state)
        self.epoch, self.step_count, self.phase_start = s["epoch"], s["step"], s["phase_start"]
        self.elapsed, self.log_rows, self.hist_before = s["elapsed"], s["log"], s["hist_before"]

    # --------------------------------------------------------------- training
    def batch_loss(self, idx: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The loss, logits and labels of the training sequences idx[i] for net i (one per ensemble
        member, else one), each augmented with its own generator; the loss is the nets' mean."""
        t = self.cfg.train
        losses, logits, labels = [], [], []
        for net, ix, (_, aug_gen) in zip(self.nets, idx, self.view_gens, strict=True):
            mirrored = None if self.x_train_mirrored is None else self.x_train_mirrored[ix]
            xb = augment(self.x_train[ix], self.cfg.augment, aug_gen, self.input_layout, mirrored)
            yb = self.y_train[ix]
            lam, perm = mixup_draw(len(xb), t.mixup, aug_gen) if t.mixup else (1.0, None)
            xd, yd = xb.to(self.device), yb.to(self.device)  # augmentation ran on the CPU, seeded as there
            z = net(xd if perm is None else lam * xd + (1 - lam) * xd[perm])
            loss = self.target_loss(z, yd, ix)
            if perm is not None:
                loss = lam * loss + (1 - lam) * self.target_loss(z, yd[perm], ix[perm])
            losses.append(loss)
            logits.append(z)
            labels.append(yb)
        return sum(losses) / len(losses), torch.cat(logits), torch.cat(labels)

    def target_loss(self, z: torch.Tensor, y: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
        """The loss of logits z against labels y of training sequences ix (and the teacher's outputs on them)."""
        t = self.cfg.train
        loss = nn.functional.cross_entropy(z, y, label_smoothing=t.label_smoothing)
        if self.teacher is None:
            return loss
        soft = distill_loss(z, self.teacher[ix].to(z.device), t.temperature)
        return (1 - t.distill) * loss + t.distill * soft

    def sample_loss(self) -> torch.Tensor:
        """A training batch's loss, for methods that score weights before training (SNIP)."""
        idx = [torch.randperm(len(self.x_train), generator=g)[: self.batch_size] for g, _ in self.view_gens]
        return self.batch_loss(idx)[0]

    def train_epoch(self) -> dict[str, float]:
        self.model.train()
        orders = [torch.randperm(len(self.x_train), generator=g) for g, _ in self.view_gens]
        if self.cfg.train.drop_last:
            orders = [o[: self.steps_per_epoch * self.batch_size] for o in orders]
        tot_loss = tot_pen = correct = 0.0
        phase_len = self.total_steps / self.pruner.phases
        for i in range(0, len(orders[0]), self.batch_size):
            idx = [o[i : i + self.batch_size] for o in orders]
            lr = lr_at(self.cfg, (self.step_count - self.phase_start) / phase_len)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            loss, logits, labels = self.pruner.task_loss(lambda: self.batch_loss(idx))
            penalty = self.pruner.penalty()
            self.optimizer.zero_grad(set_to_none=True)
            (loss + penalty).backward()
            self.optimizer.step()
            self.step_count += 1
            if self.ema is not None:
                self.ema.update(self.params)
            if self.pruner.step(self.step_count / self.total_steps):
                self.optimizer = make_optimizer(self.params, self.cfg)  # weights rewound
                self.phase_start = self.step_count
                if self.ema is not None:
                    self.ema.reset()
            n = len(idx[0])
            tot_loss += float(loss.detach()) * n
            tot_pen += float(penalty.detach()) * n
            correct += float((logits.argmax(1).cpu() == labels).sum()) / len(self.nets)
        n = len(orders[0])
        return {"lr": lr, "loss": tot_loss / n, "penalty": tot_pen / n, "train_acc": correct / n}

    def run(self, resume: bool, on_epoch_end: EpochCallback | None,
            around_finish: FinishProbe | None = None) -> dict[str, Any]:
        ckpt = self.run_dir / "checkpoints"
        if resume and has_checkpoint(ckpt):
            self.restore(load_checkpoint(ckpt))
            log.info("resumed %s at epoch %d", self.run_dir, self.epoch)
        else:
            self.pruner.on_train_start(self.sample_loss)
            self.hist_before = latent_histogram(self.pruner)
        cfg = self.cfg
        bar = tqdm(total=self.total_epochs, initial=self.epoch, disable=not self.progress,
                   desc=f"{cfg.pruning.method} r={cfg.pruning.rate:g}", unit="ep", leave=False)
        board = TensorBoardLog(self.run_dir) if cfg.train.tensorboard else None
        while self.epoch < self.total_epochs:
            t0 = time.perf_counter()
            row = self.train_epoch()
            self.epoch += 1
            every = cfg.train.eval_every
            if (every and self.epoch % every == 0) or self.epoch == self.total_epochs:
                row["test_class_avg_acc"] = evaluate(self.model, self.x_test, self.y_test, self.num_classes).class_avg_acc
            self.elapsed += time.perf_counter() - t0
            row.update(epoch=self.epoch, time_s=round(self.elapsed, 3))
            self.log_rows.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['train_acc']:.3f}")
            if self.epoch % max(cfg.train.checkpoint_every, 1) == 0 or self.epoch == self.total_epochs:
                save_checkpoint(self.state(), ckpt, {"fingerprint": self.fingerprint})
                self.write_log()
            if board is not None:
                board.log_epoch(self.epoch, row, self.pruner)
            if on_epoch_end is not None:
                on_epoch_end(self.epoch, row)
        bar.close()
        if board is not None:
            board.close()
        with around_finish(self.model, self.pruner, self.x_test) if around_finish else nullcontext():
            return self.finish()

    def write_log(self) -> None:
        text = io.StringIO(newline="")
        w = csv.DictWriter(text, fieldnames=LOG_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(self.log_rows)
        atomic_write_text(self.run_dir / "log.csv", text.getvalue())

    def finish(self) -> dict[str, Any]:
        cfg, pruner = self.cfg, self.pruner
        if self.ema is not None:  # the average is the network; statistics of the raw iterates do not fit it
            self.ema.copy_to(self.params)
            recalibrate_batchnorm(self.model, calibration_batches(self.model, self.x_train))
        soft = evaluate(self.model, self.x_test, self.y_test, self.num_classes)
        hist_after = latent_histogram(pruner)
        mismatch = pruner.prior_mismatch() if hasattr(pruner, "prior_mismatch") else None
        masks = pruner.finalize()
        # a multi-rate run: every rate it serves, and latent.safetensors to read any other later
        served = (serve_rates(pruner, self.model, self.x_train, self.x_test, self.y_test, self.num_classes,
                              self.run_dir) if getattr(pruner, "serves_rates", False) else None)
        recalibrated = served is not None and pruner.bn_recalibrate  # serve_rates left the final network so
        if cfg.train.bn_recalibrate and not recalibrated:  # the statistics of the network as finalized
            recalibrate_batchnorm(self.model, calibration_batches(self.model, self.x_train))
        hard = evaluate(self.model, self.x_test, self.y_test, self.num_classes)
        example = self.x_test[:1].to(self.device)
        report = sparsity_report(self.model, masks, example)
        pruned = sum(int((~m).sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        # the exact count of the method's scope: round(r * N) per tensor, or over all tensors
        expected = (round(pruner.rate * total) if pruner.scope == "global"
                    else sum(round(pruner.rate * m.numel()) for m in masks.values()))
        emptied = sorted(k for k, m in masks.items() if m.numel() and not m.any())
        if emptied:  # legal, but the layer's output no longer depends on its input
            log.warning("%s: the budget pruned every weight of %s", self.run_dir, ", ".join(emptied))

        save_tensors(self.model.state_dict(), self.run_dir / "model.safetensors")
        save_tensors({k: v.to(torch.uint8) for k, v in masks.items()}, self.run_dir / "masks.safetensors")
        write_sealed_json(self.run_dir / "model.json", {
            "model": cfg.model.name, "kwargs": self.model_kwargs, "class_names": self.dataset.class_names,
            "preprocess": asdict(cfg.preprocess), "dataset": cfg.data.name, "method": cfg.pruning.method,
            "rate": pruner.rate,
            "data": {"name": cfg.data.name, "options": cfg.data.options, "split": self.split.name},
        })
        metrics = {
            "dataset": self.dataset.name, "method": cfg.pruning.method, "rate": pruner.rate,
            "seed": cfg.train.seed, "split": self.split.name,
            "class_avg_acc": hard.class_avg_acc, "overall_acc": hard.overall_acc,
            "soft_class_avg_acc": soft.class_avg_acc, "soft_overall_acc": soft.overall_acc,
            "achieved_rate": pruned / total if total else 0.0, "pruned": pruned, "prunable": total,
            "params": sum(p.numel() for p in self.model.parameters()), "exact_count": pruned == expected,
            "epochs": self.total_epochs, "wall_s": round(self.elapsed, 2),
            "method_options": pruner.describe() if hasattr(pruner, "describe") else {},
            "prior_mismatch": mismatch,
            "per_class_acc": hard.per_class_acc, "confusion": hard.confusion, "class_names": self.dataset.class_names,
            "layer_density": {layer["name"]: layer["density"] for layer in report.to_dict()["layers"]},
            "flops": report.to_dict().get("flops"),
            "latent_hist": {"before": self.hist_before, "after": hist_after},
            **({"rates": served} if served is not None else {}),
            "emptied_tensors": emptied, "init_sha256": self.init_sha256, "teacher_sha256": self.teacher_sha256, "fingerprint": self.fingerprint, "machine": machine_fingerprint(),
        }
        write_sealed_json(self.run_dir / "metrics.json", metrics)
        return metrics


def run_experiment(
    cfg: ExperimentConfig,
    run_dir: Path | str,
    progress: bool = False,
    resume: bool = True,
    on_epoch_end: EpochCallback | None = None,
    fresh: bool = False,
    around_finish: FinishProbe | None = None,
) -> dict[str, Any]:
    """Train and evaluate one configuration in `run_dir`; resumes from its checkpoint if it has one
    of the same config (its fingerprint), and returns a finished run's metrics without retraining.

    The whole request is validated (data, split, model, method and options) before the folder is
    created or touched; results of another config raise RunFolderError unless `fresh` discards
    them. `resume=False` refuses to continue a checkpoint instead of silently overwriting it.
    `around_finish` wraps finalize() (FinishProbe); a finished run is not retrained, so it is not entered.
    Returns the metrics also written to `run_dir/metrics.json`."""
    run_dir = Path(run_dir)
    run = _Run(cfg, run_dir, progress)
    with folder_lock(run_dir, "pmp train"):
        if fresh:
            discard(run_dir)
        state = check_folder(run_dir, cfg, run.fingerprint)
        if state == "finished":
            log.warning("%s: already finished with this config; its results are reported (--fresh retrains)", run_dir)
            return load_run_metrics(run_dir)
        if state == "resume" and not resume:
            raise RunFolderError(f"{run_dir}: holds a checkpoint of this run; resume it, or pass --fresh to discard it")
        if state == "new":
            save_config(cfg, run_dir / "config.yaml")
        return run.run(resume, on_epoch_end, around_finish)


def load_init(model: nn.Module, init: str) -> str:
    """Load `train.init` (a finished run folder, or a model.safetensors file: tensors plus checksums,
    never a pickle) into a freshly built model, before any pruning parametrization; every tensor
    must fit (names and shapes, strict). Returns the file's sha256, which metrics.json records, so
    that a fine-tune says which weights it started from."""
    path = Path(init).expanduser()
    path = path / "model.safetensors" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"train.init: {path}: not found (a finished run folder or its model.safetensors)")
    raw = path.read_bytes()  # read once: the tensors loaded are the bytes hashed
    try:
        model.load_state_dict(parse_tensors(path, raw))
    except RuntimeError as e:  # names or shapes differ: another backbone, dataset or size
        raise ConfigError(f"train.init: {path} does not fit model {type(model).__name__} ({e})") from None
    return hashlib.sha256(raw).hexdigest()


def load_run_metrics(run_dir: Path | str) -> dict[str, Any]:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics (run not finished?)")
    return read_sealed_json(path)


def load_trained_model(run_dir: Path | str) -> tuple[nn.Module, dict[str, Any]]:
    """The final (pruned) model of a finished run, rebuilt from model.json + model.safetensors,
    both verified (checksums); any defect is an IntegrityError naming the file."""
    run_dir = Path(run_dir)
    spec_path, weights = run_dir / "model.json", run_dir / "model.safetensors"
    if not spec_path.is_file():
        raise FileNotFoundError(f"{spec_path}: missing (is {run_dir} a finished run folder?)")
    spec = read_sealed_json(spec_path)
    if not isinstance(spec.get("model"), str) or not isinstance(spec.get("kwargs"), dict):
        raise IntegrityError(f"{spec_path}: needs 'model' (a name) and 'kwargs' (a mapping)")
    try:
        model = create_model(spec["model"], **spec["kwargs"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise IntegrityError(f"{spec_path}: does not describe a model ({e})") from e
    try:
        model.load_state_dict(load_tensors(weights))
    except RuntimeError as e:  # names or shapes of the file differ from the model's
        raise IntegrityError(f"{weights}: does not fit {spec_path.name} ({e})") from e
    return model.eval(), spec


def evaluate_run(run_dir: Path | str, data_root: str | None = None, rate: float | None = None) -> dict[str, Any]:
    """Re-evaluate a finished run's final model on its test split (same data and preprocessing);
    `rate`: a multi-rate run's network at that rate instead (multirate.py)."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    recorded = load_run_metrics(run_dir).get("fingerprint") if (run_dir / "metrics.json").is_file() else None
    if recorded is not None and fingerprint(cfg) != recorded:
        raise IntegrityError(f"{run_dir / 'config.yaml'}: not the config of the run's results (modified or "
                             "corrupt; or the dataset file changed)")
    model = load_trained_model(run_dir)[0] if rate is None else model_at_rate(run_dir, rate, data_root)[0]
    data = split_data(cfg, data_root)
    m = evaluate(model.to(use_device("auto")), data.x_test, data.y_test, data.num_classes)  # not bound to the training machine's GPU
    return {"split": data.split.name, "class_names": data.dataset.class_names, **asdict(m)}
