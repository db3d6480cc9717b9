"""Multi-rate PMP: nested masks, exact counts, serving rates after finalize, training, resume, CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from torch import nn

from pmp.cli import main
from pmp.export import load_sparse
from pmp.pruning import MRMP, recalibrate_batchnorm
from pmp.pruning.base import METHODS, create_pruner
from pmp.pruning.mrmp import log_density_grid, nested_masks
from pmp.training import apply_overrides, run_experiment
from pmp.training.config import ExperimentConfig
from pmp.training.multirate import LATENT, model_at_rate
from test_pmp import one_thread  # noqa: F401  (autouse: one intra-op thread for tiny ops)

RATES = [0.5, 0.9, 0.95]


def net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.BatchNorm1d(32), nn.Linear(32, 24), nn.ReLU(),
                         nn.Linear(24, 3))


def train(model: nn.Module, pruner: MRMP, steps: int = 12) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 6, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for i in range(steps):
        loss = pruner.task_loss(lambda: nn.functional.cross_entropy(model(x), y)) + pruner.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step((i + 1) / steps)


def test_registered_and_the_few_line_api() -> None:
    assert METHODS["mrmp"] is MRMP
    model = net()
    pruner = create_pruner("mrmp", model, 0.0, rates=[0.9, 0.5, 0.95], mode="all")
    assert pruner.rate == 0.95 and pruner.train_rates == RATES  # rate 0: the highest rate served
    train(model, pruner)
    zeros = {}
    for rate in (0.5, 0.7, 0.95):  # unseen 0.7 included; each read after the previous one
        pruner.finalize(rate=rate)
        zeros[rate] = [int((model.get_parameter(t.name) == 0).sum()) for t in pruner.targets]
    assert zeros == {r: [round(r * t.numel) for t in pruner.targets] for r in zeros}
    json.dumps(pruner.describe())


@settings(max_examples=60, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 8), st.integers(1, 8)), min_size=1, max_size=3),
    r1=st.floats(0.0, 0.999),
    r2=st.floats(0.0, 0.999),
    scope=st.sampled_from(["layer", "global"]),
    levels=st.integers(2, 1000),  # few levels: many tied magnitudes
    seed=st.integers(0, 2**16),
)
def test_masks_are_nested_and_exact_for_any_two_rates(shapes, r1, r2, scope, levels, seed) -> None:
    gen = torch.Generator().manual_seed(seed)
    latents = {f"w{i}": torch.randint(-levels, levels, s, generator=gen).float() for i, s in enumerate(shapes)}
    lo, hi = sorted((r1, r2))
    dense_side, sparse_side = nested_masks(latents, lo, scope), nested_masks(latents, hi, scope)
    for k in latents:
        assert not (sparse_side[k] & ~dense_side[k]).any()  # kept at the higher rate => kept at the lower
    for rate, masks in ((lo, dense_side), (hi, sparse_side)):
        pruned = [int((~m).sum()) for m in masks.values()]
        if scope == "layer":
            assert pruned == [round(rate * m.numel()) for m in masks.values()]
        else:
            assert sum(pruned) == round(rate * sum(m.numel() for m in masks.values()))


@settings(max_examples=25, deadline=None)
@given(lo=st.floats(0.0, 0.9), width=st.floats(0.01, 0.09), points=st.integers(1, 8))
def test_log_density_grid_spans_the_range(lo, width, points) -> None:
    grid = log_density_grid(lo, lo + width, points)
    assert len(grid) == points and grid[-1] == pytest.approx(lo + width)
    assert all(a < b for a, b in zip(grid, grid[1:]))
    if points > 1:
        assert grid[0] == pytest.approx(lo)


def test_finalize_at_one_rate_then_serve_another() -> None:
    model = net()
    pruner = MRMP(model, rates=RATES, mode="sample", samples=2)
    train(model, pruner)
    before = {r: pruner.masks_at(r) for r in (0.5, 0.8, 0.95)}
    latent = {k: v.clone() for k, v in pruner.latent_weights().items()}
    pruner.finalize(rate=0.95)
    x = torch.randn(16, 6)
    for rate in (0.5, 0.8, 0.95):
        masks = pruner.finalize(rate=rate)
        assert all(torch.equal(masks[k], before[rate][k]) for k in masks)
        reference = net()  # same architecture, weights set by hand to latent * mask
        reference.load_state_dict({k: v for k, v in model.state_dict().items()})
        with torch.no_grad():
            for k, w in latent.items():
                reference.get_parameter(k).copy_(w * masks[k])
        model.eval(), reference.eval()
        assert torch.equal(model(x), reference(x))
    state = pruner.state_dict()  # a finalized pruner's checkpoint keeps the latent weights too
    restored = MRMP(net(), rates=RATES, mode="sample", samples=2)
    restored.load_state_dict(state)
    assert all(torch.equal(restored.masks_at(0.8)[k], before[0.8][k]) for k in latent)


def test_task_loss_averages_every_rate_network() -> None:
    """mode="all": the gradient is the mean of each rate's network's gradient, computed apart."""
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    model = net()
    pruner = MRMP(model, rates=RATES, mode="all", s_start=5.0, s_end=5.0, ramp=0.0)
    loss = pruner.task_loss(lambda: nn.functional.cross_entropy(model(x), y))
    loss.backward()
    target = pruner.targets[0].name
    joint = pruner.latent(target).grad.clone()
    apart = torch.zeros_like(joint)
    for rate in RATES:
        single = net()
        one = MRMP(single, rates=[rate], s_start=5.0, s_end=5.0, ramp=0.0)
        nn.functional.cross_entropy(single(x), y).backward()
        apart += one.latent(target).grad / len(RATES)
    torch.testing.assert_close(joint, apart)


def test_sampled_rates_are_deterministic_and_in_range() -> None:
    a = MRMP(net(), rates=RATES, samples=2, seed=3)
    b = MRMP(net(), rates=RATES, samples=2, seed=3)
    draws = [a.step_rates() for _ in range(20)]
    assert draws == [b.step_rates() for _ in range(20)]
    assert all(len(d) == 2 and set(d) <= set(RATES) for d in draws)
    c = MRMP(net(), rate_range=[0.6, 0.99], samples=3)
    assert all(0.6 <= r <= 0.99 for _ in range(20) for r in c.step_rates())
    for d in (MRMP(net(), rates=RATES, samples=2, always_highest=True),
              MRMP(net(), rate_range=[0.6, 0.99], samples=2, always_highest=True)):
        draws = [d.step_rates() for _ in range(20)]
        assert all(len(x) == 2 and x[-1] == d.hi and x[0] < d.hi for x in draws)
    assert MRMP(net(), rate_range=[0.6, 0.99], mode="all", points=4).step_rates() == log_density_grid(0.6, 0.99, 4)


@pytest.mark.parametrize("kwargs, needle", [
    ({}, "exactly one of"),
    ({"rates": RATES, "rate_range": [0.5, 0.9]}, "exactly one of"),
    ({"rates": []}, "non-empty"),
    ({"rate_range": [0.9, 0.5]}, "lo < hi"),
    ({"rates": RATES, "mode": "some"}, "mode"),
    ({"rates": RATES, "samples": 4}, "samples"),
    ({"rates": RATES, "samples": 1, "always_highest": True}, "with always_highest"),
    ({"rates": [0.5, 1.0]}, "[0, 1)"),
    ({"rates": RATES, "rate": 0.99}, "outside the trained range"),
    ({"rates": RATES, "eval_rates": [0.3]}, "outside the trained range"),
    ({"rates": RATES, "hard_tail": 0.1}, "hard_tail"),
])
def test_invalid_options(kwargs, needle) -> None:
    rate = kwargs.pop("rate", 0.0)
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace(")", r"\)")):
        MRMP(net(), rate, **kwargs)


def test_masks_at_outside_the_range_is_an_error() -> None:
    pruner = MRMP(net(), rates=RATES)
    with pytest.raises(ValueError, match=r"outside the trained range \[0.5, 0.95\]"):
        pruner.masks_at(0.99)


def test_recalibrated_batchnorm_holds_the_inputs_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Dropout(0.5), nn.BatchNorm1d(4))
    x = torch.randn(96, 4) * 3 + 1
    model.train()
    assert recalibrate_batchnorm(model, [x[i : i + 32] for i in range(0, 96, 32)]) == 2
    assert model.training and model[0].momentum == 0.1
    torch.testing.assert_close(model[0].running_mean, x.mean(0))
    # the second BatchNorm saw the first one's output with dropout off (the network at inference)
    h = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)
    torch.testing.assert_close(model[2].running_mean, h.mean(0), atol=1e-5, rtol=0)


# ----------------------------------------------------------------- runs, resume, CLI

def tiny_mrmp(**overrides) -> ExperimentConfig:
    base = {
        "data.name": "synthetic", "data.options": {"seed": 0}, "preprocess.frames": 8,
        "model.kwargs": {"heads": 2, "attn_dim": 4, "gc_dim": 4, "hidden": 32, "dropout": 0.1},
        "train.epochs": 3, "train.batch_size": 64, "train.checkpoint_every": 1, "train.eval_every": 2,
        "train.threads": 1, "pruning.method": "mrmp",
        "pruning.options": {"rates": RATES, "eval_rates": [0.5, 0.8, 0.9, 0.95]},
    }
    base.update(overrides)
    return apply_overrides(ExperimentConfig(), base)


class _Kill(Exception):
    pass


def test_run_reports_every_rate_and_resume_after_kill_matches(tmp_path) -> None:
    cfg = tiny_mrmp()
    full = run_experiment(cfg, tmp_path / "full")
    assert full["rate"] == 0.95 and full["exact_count"]
    assert list(full["rates"]) == ["0.5", "0.8", "0.9", "0.95"]
    assert [v["seen"] for v in full["rates"].values()] == [True, False, True, True]
    assert all(v["exact_count"] for v in full["rates"].values())
    assert full["rates"]["0.95"]["class_avg_acc"] == full["class_avg_acc"]

    def kill_after_2(epoch, row):
        if epoch == 2:
            raise _Kill

    with pytest.raises(_Kill):
        run_experiment(cfg, tmp_path / "killed", on_epoch_end=kill_after_2)
    resumed = run_experiment(cfg, tmp_path / "killed")
    for name in ("model.safetensors", LATENT):
        a, b = load_file(str(tmp_path / "full" / name)), load_file(str(tmp_path / "killed" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert resumed["rates"] == full["rates"]


@pytest.fixture(scope="module")
def mrmp_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("mrmp") / "run"
    run_experiment(tiny_mrmp(), run)
    return run


@pytest.mark.parametrize("rate", [0.5, 0.8, 0.95])
def test_a_run_read_at_a_rate_is_the_masked_latent_network(mrmp_run, rate) -> None:
    model, masks, spec = model_at_rate(mrmp_run, rate)
    latent = load_file(str(mrmp_run / LATENT))
    metrics = json.loads((mrmp_run / "metrics.json").read_text())
    assert spec["rate"] == rate
    for name, m in masks.items():
        assert int((~m).sum()) == round(rate * m.numel())
        assert torch.equal(model.get_parameter(name), latent[name] * m)
    if f"{rate:g}" in metrics["rates"]:  # what the run reported at this rate
        from pmp.training import evaluate_run

        assert evaluate_run(mrmp_run, rate=rate)["class_avg_acc"] == metrics["rates"][f"{rate:g}"]["class_avg_acc"]


def test_cli_eval_export_predict_at_a_rate(mrmp_run, tmp_path, capsys) -> None:
    rate = 0.8  # not a training rate
    assert main(["eval", str(mrmp_run), "--rate", str(rate), "--json", str(tmp_path / "m.json")]) == 0
    evaluated = json.loads((tmp_path / "m.json").read_text())
    out = tmp_path / "r08.pmp"
    assert main(["export", str(mrmp_run), "--rate", str(rate), "-o", str(out)]) == 0
    assert main(["predict", str(out)]) == 0
    assert f"{100 * evaluated['class_avg_acc']:.2f}%" in capsys.readouterr().out

    model, _, spec = model_at_rate(mrmp_run, rate)
    sparse = load_sparse(out)
    assert sparse.spec["rate"] == rate
    k = spec["kwargs"]
    x = torch.randn(5, k["in_frames"], k["num_nodes"], k["in_channels"])
    with torch.no_grad():
        np.testing.assert_allclose(sparse(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-4)

    assert main(["eval", str(mrmp_run), "--rate", "0.99"]) == 2
    assert "outside the run's trained range [0.5, 0.95]" in capsys.readouterr().err


# ----------------------------------------------------------------- sweeps and reports

def test_a_sweep_trains_one_mrmp_run_for_every_rate() -> None:
    from pmp.experiments.grid import expand_grid, parse_sweep

    spec = parse_sweep({"grid": {"method": ["pmp", "mrmp"], "rate": [0.9, 0.98], "seed": [0, 1]},
                        "method_overrides": {"mrmp": {"pruning.options": {"rates": [0.9, 0.98]}}}})
    ids = [r.run_id for r in expand_grid(spec)]
    assert ids == ["pmp_r0.9_s0", "pmp_r0.9_s1", "pmp_r0.98_s0", "pmp_r0.98_s1", "mrmp_s0", "mrmp_s1"]


def test_report_gives_an_mrmp_run_a_cell_at_every_rate(tmp_path) -> None:
    from pmp.experiments.report import report

    common = {"dataset": "fpha", "split": "1:1", "overall_acc": 0.0, "soft_class_avg_acc": None, "epochs": 10,
              "wall_s": 1.0, "prunable": 1000, "layer_density": {"l1.weight": 0.1}}
    served = {f"{r:g}": {"rate": r, "seen": r != 0.8, "class_avg_acc": acc, "overall_acc": acc, "pruned": round(r * 1000)}
              for r, acc in ((0.5, 0.9), (0.8, 0.8), (0.95, 0.6))}
    for seed, shift in ((0, 0.0), (1, 0.02)):
        run = tmp_path / "runs" / f"mrmp_s{seed}"
        run.mkdir(parents=True)
        rates = {k: {**v, "class_avg_acc": v["class_avg_acc"] + shift} for k, v in served.items()}
        run.joinpath("metrics.json").write_text(json.dumps({**common, "method": "mrmp", "rate": 0.95, "seed": seed,
                                                            "class_avg_acc": rates["0.95"]["class_avg_acc"],
                                                            "achieved_rate": 0.95, "rates": rates}))
    pmp_run = tmp_path / "runs" / "pmp_r0.8_s0"
    pmp_run.mkdir()
    pmp_run.joinpath("metrics.json").write_text(json.dumps({**common, "method": "pmp", "rate": 0.8, "seed": 0,
                                                            "class_avg_acc": 0.7, "achieved_rate": 0.8}))
    rep = report(tmp_path / "runs", tmp_path / "report")
    cells = {(c.method, c.rate): c for c in rep.cells}
    assert sorted(cells) == [("mrmp", 0.5), ("mrmp", 0.8), ("mrmp", 0.95), ("pmp", 0.8)]
    assert cells[("mrmp", 0.8)].n == 2 and cells[("mrmp", 0.8)].mean == pytest.approx(81.0)
    rows = list(csv.DictReader((tmp_path / "report" / "results.csv").open()))
    assert {(r["method"], r["rate"], r["seen"]) for r in rows if r["seed"] == "0"} == {
        ("mrmp", "0.5", "True"), ("mrmp", "0.8", "False"), ("mrmp", "0.95", "True"), ("pmp", "0.8", "")}
    assert float(next(r for r in rows if r["rate"] == "0.5")["achieved_rate"]) == 0.5
    assert (tmp_path / "report" / "plots" / "accuracy_fpha.png").stat().st_size > 0


def test_multirate_block_pairs_mrmp_with_pmp_on_shared_units_only(tmp_path) -> None:
    """benchmarks/multirate.py's docs block on fabricated results: at 0.9 MRMP 80/90 and PMP 82/86
    on seeds 0-1 (PMP also 84 on seed 2, unpaired): differences -2 and +4, mean +1, interval
    +-t(1) * 3 = +-38.12 by hand; PMP's mean covers its 3 runs; an unseen rate is in italics."""
    from test_paired import load_benchmark

    mr = load_benchmark("multirate")
    mrmp = {"s0/1:1": 0.80, "s1/1:1": 0.90}
    pmp = {"s0/1:1": 0.82, "s1/1:1": 0.86, "s2/1:1": 0.84}
    d = mr._paired(mrmp, pmp)
    assert (d["pairs"], d["wins_ties_losses"]) == (2, [1, 0, 1]) and d["mean"] == pytest.approx(1.0)
    assert d["ci95"] == pytest.approx([1.0 - 38.118, 1.0 + 38.118], abs=1e-3)
    assert mr._paired(mrmp, {}) is None
    rates = {"0.9": {"mrmp": 0.85, "pmp": 0.84, "seen": True, "mrmp_minus_pmp": d,
                     "per_run": {"mrmp": mrmp, "pmp": pmp}},
             "0.93": {"mrmp": 0.70, "seen": False, "mrmp_minus_pmp": None, "per_run": {"mrmp": mrmp}}}
    meta = {"fingerprint": {"cpu_model": "CPU", "cores": 2}, "commit": "abc"}
    results = {"fpha": {"rates": rates, "meta": meta, "units": [0, 1, 2], "epochs": 4, "finetune_epochs": 1,
                        "runs": 7, "sweep_wall_s": 60.0, "cost_ratio": 1.9, "mrmp_wall_s": 19.0, "pmp_wall_s": 10.0}}
    doc = tmp_path / "method.md"
    doc.write_text(f"# doc\n{mr.START}\nold\n{mr.END}\ntail\n")
    mr.render(results, plot_dir=tmp_path / "plots", doc=doc)
    text = doc.read_text()
    assert "| 0.9 | 85.00 | 84.00 | +1.00 | [-37.12, +39.12] | 1 / 0 / 1 |" in text
    assert "| *0.93* | 70.00 |  |  |  |  |" in text and "**1.90x**" in text
    assert "old" not in text and text.endswith("tail\n") and (tmp_path / "plots" / "multirate_fpha.png").is_file()


def test_train_bn_recalibrate_on_a_multirate_run_recalibrates_the_final_network_once(tmp_path, monkeypatch) -> None:
    """serve_rates already leaves the network at the run's rate with recalibrated statistics: the
    trainer's own train.bn_recalibrate pass would repeat the same one (same batches, same result)."""
    from pmp.training import multirate, trainer

    calls = []

    def counting(model, inputs):
        calls.append(1)
        return recalibrate_batchnorm(model, inputs)

    monkeypatch.setattr(multirate, "recalibrate_batchnorm", counting)
    monkeypatch.setattr(trainer, "recalibrate_batchnorm", counting)
    cfg = tiny_mrmp(**{"train.epochs": 1})
    plain = run_experiment(cfg, tmp_path / "plain", progress=False)
    served = len(calls)
    assert served == len(plain["rates"]) + 1  # every served rate, then the run's own rate
    both = run_experiment(apply_overrides(cfg, {"train.bn_recalibrate": True}), tmp_path / "both", progress=False)
    assert len(calls) == 2 * served
    a, b = load_file(str(tmp_path / "plain/model.safetensors")), load_file(str(tmp_path / "both/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a) and both["class_avg_acc"] == plain["class_avg_acc"]
