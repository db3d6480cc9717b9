"""Config parsing, checkpoints, metrics and the training loop on the built-in synthetic data."""

from __future__ import annotations

import contextlib
from pathlib import Path
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
from safetensors.torch import load_file

from pmp.training import apply_overrides, load_config, run_experiment
from pmp.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pmp.training.config import ConfigError, ExperimentConfig, parse_scalar
from pmp.training.metrics import classification_metrics


def tiny_config(**overrides) -> ExperimentConfig:
    base = {
        "data.name": "synthetic", "data.options": {"seed": 0}, "preprocess.frames": 8,
        "model.kwargs": {"heads": 2, "attn_dim": 4, "gc_dim": 4, "hidden": 32, "dropout": 0.1},
        "train.epochs": 4, "train.batch_size": 64, "train.checkpoint_every": 1, "train.eval_every": 2,
        "train.threads": 1,
    }
    base.update(overrides)
    return apply_overrides(ExperimentConfig(), base)


def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 7, lr: 1}\npruning: {method: pmp, rate: 0.9, options: {prior: laplace}}\n")
    cfg = load_config(path)
    assert cfg.train.epochs == 7 and cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    cfg2 = apply_overrides(cfg, {"pruning.rate": 0.98, "pruning.options.lam": 10, "data.split": "3"})
    assert cfg2.pruning.rate == 0.98 and cfg2.pruning.options == {"prior": "laplace", "lam": 10}
    assert cfg2.data.split == "3" and cfg.pruning.rate == 0.9  # the original is untouched


@pytest.mark.parametrize(
    "text, needle",
    [("train: {epochz: 3}\n", "epochz"), ("train: {epochs: many}\n", "train.epochs"), ("- a\n", "mapping"),
     ("train: [1\n", "invalid YAML")],
)
def test_config_errors_name_the_key(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle) as e:
        load_config(path)
    assert "bad.yaml" in str(e.value)


@pytest.mark.parametrize("text, value", [("1:1", "1:1"), ("0.98", 0.98), ("50", 50), ("true", True), ("null", None), ("none", "none"),
                                         ("[a, b]", ["a", "b"]), ("laplace", "laplace")])
def test_cli_scalars(text, value):
    assert parse_scalar(text) == value and type(parse_scalar(text)) is type(value)


def test_override_unknown_section():
    with pytest.raises(ConfigError, match="nosuch"):
        apply_overrides(ExperimentConfig(), {"nosuch.x": 1})


def test_metrics_by_hand():
    m = classification_metrics(np.array([0, 0, 0, 1, 2, 2]), np.array([0, 0, 1, 1, 2, 0]), 4)
    assert m.overall_acc == pytest.approx(4 / 6)
    assert m.per_class_acc[:3] == pytest.approx([2 / 3, 1.0, 0.5]) and m.per_class_acc[3] is None
    assert m.class_avg_acc == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    assert m.confusion[0] == [2, 1, 0, 0] and m.confusion[2] == [1, 0, 1, 0]


def test_checkpoint_roundtrip_and_truncation(tmp_path):
    state = {"a": torch.arange(5.0), "nested": {3: {"t": torch.ones(2, 2)}, "s": "x"}, "l": [1, torch.zeros(1)]}
    save_checkpoint(state, tmp_path / "ck")
    back = load_checkpoint(tmp_path / "ck")
    assert torch.equal(back["a"], state["a"]) and torch.equal(back["nested"][3]["t"], torch.ones(2, 2))
    assert back["nested"]["s"] == "x" and back["l"][0] == 1
    (tensor_file,) = (tmp_path / "ck").glob("ckpt-*.safetensors")
    data = tensor_file.read_bytes()
    tensor_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=tensor_file.name):
        load_checkpoint(tmp_path / "ck")


def test_run_folder_contents_and_determinism(tmp_path):
    cfg = tiny_config(**{"pruning.method": "mp", "pruning.rate": 0.9})
    m1 = run_experiment(cfg, tmp_path / "a")
    m2 = run_experiment(cfg, tmp_path / "b")
    for f in ["config.yaml", "log.csv", "model.json", "model.safetensors", "masks.safetensors", "metrics.json"]:
        assert (tmp_path / "a" / f).is_file(), f
    assert m1["class_avg_acc"] == m2["class_avg_acc"]
    w1, w2 = load_file(str(tmp_path / "a/model.safetensors")), load_file(str(tmp_path / "b/model.safetensors"))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert m1["pruned"] == sum(round(0.9 * n) for n in _target_sizes(tmp_path / "a"))
    assert json.loads((tmp_path / "a/metrics.json").read_text())["epochs"] == 4


def _target_sizes(run_dir):
    masks = load_file(str(run_dir / "masks.safetensors"))
    return [m.numel() for m in masks.values()]


class _Kill(Exception):
    pass


@pytest.mark.parametrize("method", ["dense", "pmp", "lth"])
def test_resume_after_kill_matches_uninterrupted(tmp_path, method):
    cfg = tiny_config(**{"pruning.method": method, "pruning.rate": 0.9, "train.epochs": 3})
    full = run_experiment(cfg, tmp_path / "full")

    def kill_after_2(epoch, row):
        if epoch == 2:
            raise _Kill

    with pytest.raises(_Kill):
        run_experiment(cfg, tmp_path / "killed", on_epoch_end=kill_after_2)
    assert not (tmp_path / "killed/metrics.json").exists()
    resumed = run_experiment(cfg, tmp_path / "killed")
    w1 = load_file(str(tmp_path / "full/model.safetensors"))
    w2 = load_file(str(tmp_path / "killed/model.safetensors"))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert resumed["class_avg_acc"] == full["class_avg_acc"]


def test_mixup_draw_is_deterministic_and_a_mixing_weight() -> None:
    from pmp.training.trainer import mixup_draw

    a = mixup_draw(10, 0.2, torch.Generator().manual_seed(5))
    b = mixup_draw(10, 0.2, torch.Generator().manual_seed(5))
    assert a[0] == b[0] and torch.equal(a[1], b[1]) and 0.0 <= a[0] <= 1.0
    assert sorted(a[1].tolist()) == list(range(10))


def test_mixup_trains_changes_the_run_and_resumes_identically(tmp_path) -> None:
    """Mixup draws from the run's augmentation generator: a killed run resumes to the same model."""
    cfg = tiny_config(**{"train.mixup": 0.4, "train.epochs": 3})
    run_experiment(cfg, tmp_path / "full")
    run_experiment(tiny_config(**{"train.epochs": 3}), tmp_path / "plain")
    w1, w0 = load_file(str(tmp_path / "full/model.safetensors")), load_file(str(tmp_path / "plain/model.safetensors"))
    assert not torch.equal(w1["fc.weight"], w0["fc.weight"])

    _assert_resumes_to(cfg, tmp_path / "killed", w1)


def _assert_resumes_to(cfg, run_dir, weights) -> None:
    """A run of `cfg` killed after epoch 2 and resumed ends with exactly `weights`."""
    def kill_after_2(epoch, row):
        if epoch == 2:
            raise _Kill

    with pytest.raises(_Kill):
        run_experiment(cfg, run_dir, on_epoch_end=kill_after_2, progress=False)
    run_experiment(cfg, run_dir, progress=False)
    resumed = load_file(str(run_dir / "model.safetensors"))
    assert all(torch.equal(weights[k], resumed[k]) for k in weights)


def test_train_init_starts_from_a_finished_runs_weights(tmp_path) -> None:
    """A fine-tune: lr 0 keeps the loaded weights exactly; the fingerprint follows the file's content;
    a file that does not fit the model is an error naming it."""
    from pmp.training.rundir import fingerprint

    first = tmp_path / "dense"
    run_experiment(tiny_config(**{"train.epochs": 2}), first, progress=False)
    start = load_file(first / "model.safetensors")
    cfg = tiny_config(**{"train.epochs": 1, "train.lr": 0.0, "train.init": str(first)})
    metrics = run_experiment(cfg, tmp_path / "tuned", progress=False)
    tuned = load_file(tmp_path / "tuned" / "model.safetensors")
    weights = [k for k in start if k.endswith("weight")]
    assert weights and all(torch.equal(start[k], tuned[k]) for k in weights)
    assert metrics["init_sha256"] == __import__("hashlib").sha256((first / "model.safetensors").read_bytes()).hexdigest()
    # pruned from the loaded weights (mp, prune_at 0): the largest of the dense run's weights survive
    mp = tiny_config(**{"train.epochs": 1, "train.lr": 0.0, "train.init": str(first / "model.safetensors"),
                        "pruning.method": "mp", "pruning.rate": 0.9, "pruning.options": {"prune_at": 0.0}})
    run_experiment(mp, tmp_path / "mp", progress=False)
    masks = load_file(tmp_path / "mp" / "masks.safetensors")
    name = next(k for k in masks if masks[k].numel() > 50)
    kept = masks[name].bool()
    assert start[name][kept].abs().min() >= start[name][~kept].abs().max()

    before = fingerprint(cfg)
    run_experiment(tiny_config(**{"train.epochs": 3}), first, progress=False, fresh=True)  # other weights, same path
    assert fingerprint(cfg) != before
    assert fingerprint(tiny_config()) == fingerprint(tiny_config(**{"train.init": None}))

    other = tiny_config(**{"train.init": str(first), "model.kwargs": {"heads": 2, "attn_dim": 4, "gc_dim": 8}})
    with pytest.raises(ConfigError, match=r"train.init: .*model.safetensors does not fit"):
        run_experiment(other, tmp_path / "bad", progress=False)
    with pytest.raises(ConfigError, match="train.init: .*nowhere.*not found"):
        run_experiment(tiny_config(**{"train.init": str(tmp_path / "nowhere")}), tmp_path / "bad2", progress=False)


def test_split_data_is_the_preprocessed_split_the_run_reads(tmp_path) -> None:
    """split_data (the trainer's and every re-evaluation's data path): the train/test rows of the
    preprocessed dataset at the split's indices, labels alike; an explicit data root wins."""
    from pmp.data import DataFormatError, load_dataset, preprocess
    from pmp.training.trainer import split_data

    cfg = tiny_config()
    ds = load_dataset(cfg.data.name, **cfg.data.options)
    split, x = ds.split(cfg.data.split), preprocess(ds, cfg.preprocess)
    d = split_data(cfg)
    assert d.split.name == split.name and d.num_classes == ds.num_classes
    assert torch.equal(d.x_train, x[torch.as_tensor(split.train)]) and torch.equal(d.x_test, x[torch.as_tensor(split.test)])
    assert d.y_test.tolist() == [int(ds.labels[i]) for i in split.test]
    assert len(d.x_train) == len(split.train) > 0 and len(d.x_test) == len(split.test) > 0
    sbu = apply_overrides(cfg, {"data.name": "sbu", "data.root": str(tmp_path / "missing")})
    with pytest.raises(DataFormatError, match="nowhere: data root folder not found"):
        split_data(sbu, data_root=str(tmp_path / "nowhere"))


def test_flip_trains_on_mirror_images_and_resumes_identically(tmp_path) -> None:
    """augment.flip reads the mirrored train split (split_data) and draws from the run's augmentation
    generator: it changes the run, a killed run resumes to the same model, and a dataset that does
    not declare its left/right joints is refused by name."""
    from pmp.data import load_dataset, preprocess
    from pmp.data.preprocess import mirror
    from pmp.training.trainer import split_data

    cfg = tiny_config(**{"augment.flip": 0.5, "train.epochs": 3})
    d = split_data(cfg)
    ds = load_dataset(cfg.data.name, **cfg.data.options)
    expected = preprocess(mirror(ds), cfg.preprocess)[torch.as_tensor(ds.split(cfg.data.split).train)]
    assert torch.equal(d.x_train_mirrored, expected) and split_data(tiny_config()).x_train_mirrored is None
    run_experiment(cfg, tmp_path / "full", progress=False)
    run_experiment(tiny_config(**{"train.epochs": 3}), tmp_path / "plain", progress=False)
    w1, w0 = load_file(str(tmp_path / "full/model.safetensors")), load_file(str(tmp_path / "plain/model.safetensors"))
    assert not torch.equal(w1["fc.weight"], w0["fc.weight"])

    _assert_resumes_to(cfg, tmp_path / "killed", w1)

    path = tmp_path / "noflip.npz"  # a generic file without flip_pairs
    np.savez(path, x=ds.sequences[0][None].repeat(4, 0), y=np.array([0, 1, 0, 1]), split=np.array(["train", "test"] * 2))
    with pytest.raises(ConfigError, match=r"augment.flip: noflip: the flip augmentation needs the dataset's flip_pairs"):
        run_experiment(tiny_config(**{"data.name": str(path), "data.options": {}, "augment.flip": 0.5}), tmp_path / "bad",
                       progress=False)
    assert not (tmp_path / "bad").exists()


def test_drop_last_trains_on_full_batches_only_and_keeps_old_fingerprints(tmp_path, monkeypatch) -> None:
    """drop_last skips each epoch's incomplete last batch (BatchNorm on 2-3 sequences derails small
    splits); off, the last batch is the remainder; the field's default leaves every earlier run's
    fingerprint as it was; a batch larger than the training set is an error naming the field."""
    from pmp.training import trainer
    from pmp.training.rundir import fingerprint, semantic_config

    n = len(trainer.split_data(tiny_config()).x_train)
    bs = next(b for b in range(5, n) if n % b >= 2)  # a remainder BatchNorm can train on
    sizes: list[int] = []
    original = trainer._Run.batch_loss
    monkeypatch.setattr(trainer._Run, "batch_loss", lambda self, idx: (sizes.append(len(idx[0])), original(self, idx))[1])
    cfg = tiny_config(**{"train.batch_size": bs, "train.epochs": 2})
    run_experiment(cfg, tmp_path / "keep", progress=False)
    assert sizes == 2 * ([bs] * (n // bs) + [n % bs])
    sizes.clear()
    run_experiment(apply_overrides(cfg, {"train.drop_last": True}), tmp_path / "drop", progress=False)
    assert sizes == [bs] * (2 * (n // bs))
    assert "drop_last" not in semantic_config(cfg)["train"]
    assert fingerprint(cfg) != fingerprint(apply_overrides(cfg, {"train.drop_last": True}))
    with pytest.raises(ConfigError, match="train.drop_last"):
        run_experiment(apply_overrides(cfg, {"train.drop_last": True, "train.batch_size": n + 1}), tmp_path / "big")


def test_bn_recalibrate_leaves_the_statistics_of_the_final_network_on_its_training_split(tmp_path) -> None:
    """With train.bn_recalibrate the saved BatchNorm statistics are those of the finalized network on
    the unaugmented training split (recalibrating again changes nothing), the weights are the same
    as without it, and the reported accuracy is that of the recalibrated network."""
    from pmp.pruning import recalibrate_batchnorm
    from pmp.training.multirate import CALIBRATION_BATCH
    from pmp.training.trainer import evaluate, load_trained_model, split_data

    base = tiny_config(**{"train.epochs": 2, "pruning.method": "mp", "pruning.rate": 0.9,
                          "augment.noise": 0.05})
    cfg = apply_overrides(base, {"train.bn_recalibrate": True})
    plain, recal = run_experiment(base, tmp_path / "plain"), run_experiment(cfg, tmp_path / "recal")
    w0, w1 = load_file(str(tmp_path / "plain/model.safetensors")), load_file(str(tmp_path / "recal/model.safetensors"))
    stats = [k for k in w0 if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(w0[k], w1[k]) for k in w0 if k not in stats and "num_batches" not in k)
    assert not all(torch.allclose(w0[k], w1[k]) for k in stats)
    data = split_data(cfg)
    model = load_trained_model(tmp_path / "recal")[0]
    recalibrate_batchnorm(model, data.x_train.split(CALIBRATION_BATCH))
    again = model.state_dict()
    assert all(torch.allclose(again[k], w1[k], atol=1e-6) for k in stats)
    assert recal["class_avg_acc"] == evaluate(model, data.x_test, data.y_test, data.num_classes).class_avg_acc
    assert plain["fingerprint"] != recal["fingerprint"]


def test_around_finish_sees_the_soft_network_before_finalize_and_the_pruned_one_after(tmp_path) -> None:
    cfg = tiny_config(**{"pruning.method": "pmp", "pruning.rate": 0.9, "train.epochs": 2})
    seen: dict = {}

    @contextlib.contextmanager
    def probe(model, pruner, x):
        seen["soft_masks"] = pruner.masks
        seen["soft_out"] = _eval_logits(model, x)
        yield
        seen["masks"] = pruner.masks
        seen["hard_out"] = _eval_logits(model, x)

    metrics = run_experiment(cfg, tmp_path / "run", around_finish=probe)
    assert seen["soft_masks"] is None and seen["masks"] is not None  # entered before finalize, left after
    kept = sum(int(m.sum()) for m in seen["masks"].values())
    assert metrics["pruned"] == sum(m.numel() for m in seen["masks"].values()) - kept
    assert not torch.equal(seen["soft_out"], seen["hard_out"])
    seen.clear()
    run_experiment(cfg, tmp_path / "run", around_finish=probe)  # finished: not retrained, not entered
    assert seen == {}


def _eval_logits(model, x):
    model.eval()
    with torch.no_grad():
        return model(x).clone()


@settings(max_examples=30, deadline=None)
@given(decay=st.floats(0.5, 0.999), steps=st.integers(1, 60))
def test_weight_average_weighs_iterate_k_by_decay_to_the_n_minus_k(decay, steps) -> None:
    """The served average is sum_k d^(n-k) p_k / sum_k d^(n-k) over the n updates (bias-corrected,
    no warm-up); reset forgets them; before any update copy_to leaves the parameters alone."""
    from pmp.training.ema import WeightAverage

    gen = torch.Generator().manual_seed(steps)
    iterates = [[torch.randn(3, generator=gen), torch.randn(2, generator=gen)] for _ in range(steps)]
    avg = WeightAverage(iterates[0], decay)
    untouched = [torch.ones(3), torch.ones(2)]
    avg.copy_to(untouched)
    assert all(torch.equal(u, torch.ones_like(u)) for u in untouched)
    for p in iterates:
        avg.update(p)
    w = torch.tensor([decay ** (steps - 1 - k) for k in range(steps)], dtype=torch.float64)
    expect = [sum(wk * p[i].double() for wk, p in zip(w, iterates)) / w.sum() for i in range(2)]
    served = [torch.empty(3), torch.empty(2)]
    avg.copy_to(served)
    assert all(torch.allclose(s.double(), e, atol=1e-5) for s, e in zip(served, expect))
    avg.reset()
    avg.update(iterates[-1])
    avg.copy_to(served)
    assert all(torch.allclose(s, p, atol=1e-6) for s, p in zip(served, iterates[-1]))


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_ema_outside_its_range_is_an_error_naming_the_field(decay) -> None:
    with pytest.raises(ConfigError, match="ema"):
        tiny_config(**{"train.ema": decay})


def test_ema_serves_the_average_recalibrated_and_resumes_identically(tmp_path) -> None:
    """With train.ema the saved weights are the average of the iterates (not the last iterate), its
    BatchNorm statistics those of the average on the training split, the reported accuracy that
    network's; a killed run resumes to the same weights (the average is in the checkpoint); the
    field's default leaves earlier runs' fingerprints as they were."""
    from pmp.pruning import recalibrate_batchnorm
    from pmp.training.multirate import CALIBRATION_BATCH
    from pmp.training.rundir import fingerprint, semantic_config
    from pmp.training.trainer import evaluate, load_trained_model, split_data

    base = tiny_config(**{"train.epochs": 3})
    cfg = apply_overrides(base, {"train.ema": 0.9})
    run_experiment(base, tmp_path / "plain")
    metrics = run_experiment(cfg, tmp_path / "ema")
    w0, w1 = load_file(str(tmp_path / "plain/model.safetensors")), load_file(str(tmp_path / "ema/model.safetensors"))
    assert not torch.allclose(w0["fc.weight"], w1["fc.weight"])
    data = split_data(cfg)
    model = load_trained_model(tmp_path / "ema")[0]
    recalibrate_batchnorm(model, data.x_train.split(CALIBRATION_BATCH))
    again = model.state_dict()
    assert all(torch.allclose(again[k], w1[k], atol=1e-6) for k in w1 if k.endswith(("running_mean", "running_var")))
    assert metrics["class_avg_acc"] == evaluate(model, data.x_test, data.y_test, data.num_classes).class_avg_acc
    assert "ema" not in semantic_config(base)["train"] and fingerprint(base) != fingerprint(cfg)
    _assert_resumes_to(cfg, tmp_path / "killed", w1)


def test_ema_weights_are_the_average_of_the_iterates(tmp_path, monkeypatch) -> None:
    """The served network is the bias-corrected average of what the optimizer produced, step by step."""
    from pmp.training import trainer
    from pmp.training.ema import WeightAverage

    seen: list[list[torch.Tensor]] = []
    original = WeightAverage.update
    monkeypatch.setattr(WeightAverage, "update", lambda self, params: (seen.append([p.detach().clone() for p in params]),
                                                                       original(self, params))[1])
    cfg = tiny_config(**{"train.epochs": 2, "train.ema": 0.8})
    run = trainer._Run(cfg, tmp_path / "r", progress=False)
    names = [n for n, _ in run.model.named_parameters()]
    run_experiment(cfg, tmp_path / "r")
    n = len(seen)
    w = [0.8 ** (n - 1 - k) for k in range(n)]
    avg = [sum(wk * p[i] for wk, p in zip(w, seen)) / sum(w) for i in range(len(names))]
    saved = load_file(str(tmp_path / "r/model.safetensors"))
    assert n == run.total_steps
    assert all(torch.allclose(saved[k], a, atol=1e-5) for k, a in zip(names, avg))


def test_distill_loss_is_the_softened_kl_by_hand() -> None:
    from pmp.training.distill import distill_loss

    z, t = torch.randn(5, 4), torch.randn(5, 4)
    p, q = torch.softmax(t / 3, 1), torch.softmax(z / 3, 1)
    by_hand = (p * (p.log() - q.log())).sum(1).mean() * 9
    assert torch.allclose(distill_loss(z, t, 3.0), by_hand, atol=1e-6)
    assert float(distill_loss(t, t, 3.0)) == pytest.approx(0.0, abs=1e-6)


def test_teacher_targets_the_student_and_is_fingerprinted_by_its_weights(tmp_path) -> None:
    """A run with train.teacher learns toward the teacher's outputs (other weights than without),
    records the teacher's sha256, resumes identically; {split}/{seed} pick the fold's teacher; the
    fingerprint follows the teacher's weights, so retraining the teacher retrains the student."""
    from pmp.training.rundir import fingerprint

    teacher = tiny_config(**{"train.epochs": 2, "model.kwargs": {"heads": 2, "attn_dim": 4, "gc_dim": 4, "hidden": 16}})
    run_experiment(teacher, tmp_path / "teacher_s0")
    base = tiny_config(**{"train.epochs": 3})
    cfg = apply_overrides(base, {"train.teacher": str(tmp_path / "teacher_s{seed}"), "train.distill": 0.7})
    run_experiment(base, tmp_path / "plain")
    metrics = run_experiment(cfg, tmp_path / "student")
    w0, w1 = load_file(str(tmp_path / "plain/model.safetensors")), load_file(str(tmp_path / "student/model.safetensors"))
    assert not torch.allclose(w0["fc.weight"], w1["fc.weight"])
    raw = (tmp_path / "teacher_s0/model.safetensors").read_bytes()
    import hashlib

    assert metrics["teacher_sha256"] == hashlib.sha256(raw).hexdigest()
    assert fingerprint(cfg) != fingerprint(apply_overrides(cfg, {"train.distill": 0.5}))
    before = fingerprint(cfg)
    run_experiment(apply_overrides(teacher, {"train.seed": 1}), tmp_path / "other")
    (tmp_path / "teacher_s0/model.safetensors").write_bytes((tmp_path / "other/model.safetensors").read_bytes())
    assert fingerprint(cfg) != before
    (tmp_path / "teacher_s0/model.safetensors").write_bytes(raw)
    _assert_resumes_to(cfg, tmp_path / "killed", w1)


def test_a_teacher_of_another_split_or_an_unfinished_one_is_refused(tmp_path) -> None:
    """The teacher must have been trained on the student's training split (else the student's test
    sequences could reach it through the teacher); a missing teacher is an error naming the field."""
    teacher = tiny_config(**{"train.epochs": 1})
    run_experiment(teacher, tmp_path / "teacher")
    other = tiny_config(**{"train.epochs": 1, "train.teacher": str(tmp_path / "teacher"), "data.options": {"seed": 1}})
    with pytest.raises(ConfigError, match="train.teacher: .*was trained on 'synthetic' split 'train/test' .*seed.*: 0"):
        run_experiment(other, tmp_path / "s")
    assert not (tmp_path / "s").exists()
    with pytest.raises(ConfigError, match="train.teacher: .*not a finished run"):
        run_experiment(tiny_config(**{"train.teacher": str(tmp_path / "nowhere")}), tmp_path / "t")
    with pytest.raises(ConfigError, match="train.teacher"):
        run_experiment(tiny_config(**{"train.teacher": str(tmp_path / "t{fold}")}), tmp_path / "u")


@pytest.mark.parametrize("field,value", [("distill", 1.5), ("distill", -0.1), ("temperature", 0.0)])
def test_distillation_options_outside_their_range_are_errors_naming_them(field, value) -> None:
    with pytest.raises(ConfigError, match=field):
        tiny_config(**{f"train.{field}": value})


def test_distillation_options_without_a_teacher_leave_the_fingerprint_alone() -> None:
    from pmp.training.rundir import fingerprint

    base = tiny_config()
    assert fingerprint(base) == fingerprint(apply_overrides(base, {"train.distill": 0.9, "train.temperature": 2.0}))


def test_teacher_path_spells_the_split_as_run_folders_do() -> None:
    """`{split}` is filled in as `pmp train` and sweeps name run folders: FPHA's 1:1 as 1-1."""
    from pmp.training.distill import teacher_dir

    cfg = tiny_config(**{"data.split": "1:1", "train.seed": 3, "train.teacher": "w/fpha/dense_s{seed}_f{split}"})
    assert teacher_dir(cfg) == Path("w/fpha/dense_s3_f1-1")
