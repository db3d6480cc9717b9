"""The baselines MP, GMP, LTH and SNIP: exact budgets, masks that hold through training,
the GMP schedule, LTH rewinding, SNIP scores by hand, and checkpoint round trips."""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pmp.pruning.base import METHODS, Pruner, create_pruner
from pmp.pruning.magnitude import gmp_sparsity

STEPS = 24
RATES = [0.5, 0.9, 0.98, 0.99]
#: small but non-trivial options: every phase (dense, pruning, fine-tuning, rounds) fits in STEPS
OPTIONS: dict[str, dict[str, Any]] = {
    "mp": {"prune_at": 0.5},
    "gmp": {"begin": 0.1, "end": 0.6, "update_every": 2},
    "lth": {"rounds": 2, "rewind_at": 0.2},
    "snip": {"batches": 2},
}
OPTIMIZERS: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=True),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-2),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=1e-1),
}
_gen = torch.Generator().manual_seed(0)
BATCHES = [(torch.randn(16, 6, generator=_gen), torch.randn(16, 3, generator=_gen)) for _ in range(8)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: extra threads only contend on the shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mlp(seed: int = 0, hidden: tuple[int, int] = (24, 20)) -> nn.Module:
    """Two prunable layers and a batch norm (buffers LTH must rewind); the classifier is excluded."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(6, hidden[0]), nn.BatchNorm1d(hidden[0]), nn.ReLU(),
        nn.Linear(hidden[0], hidden[1]), nn.ReLU(), nn.Linear(hidden[1], 3),
    )


def loss_on(model: nn.Module, i: int) -> torch.Tensor:
    x, y = BATCHES[i % len(BATCHES)]
    return F.mse_loss(model(x), y)


def batch_stream(model: nn.Module) -> Callable[[], torch.Tensor]:
    """loss_fn for on_train_start: a different batch at each call."""
    calls = iter(range(10**6))
    return lambda: loss_on(model, next(calls))


class Run:
    """A model, its pruner and optimizer, driven as pmp.training.trainer drives them."""

    def __init__(self, method: str, rate: float, scope: str = "layer", opt: str = "sgd", seed: int = 0,
                 hidden: tuple[int, int] = (24, 20), steps: int = STEPS, **options: Any):
        self.model = mlp(seed, hidden)
        self.params = list(self.model.parameters())  # fixed before parametrizations, as the trainer does
        self.pruner: Pruner = METHODS[method](self.model, rate, scope=scope, **{**OPTIONS[method], **options})
        self.make_opt = lambda: OPTIMIZERS[opt](self.params)
        self.opt = self.make_opt()
        self.steps, self.done = steps, 0

    def start(self) -> None:
        self.pruner.on_train_start(batch_stream(self.model))

    def train(self, until: int | None = None, between: Callable[[], None] | None = None,
              after: Callable[[int, bool], None] | None = None) -> None:
        """Steps up to `until`; `between` runs after opt.step, `after(step, rewound)` after pruner.step."""
        while self.done < (self.steps if until is None else until):
            loss = loss_on(self.model, self.done) + self.pruner.penalty()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            if between:
                between()
            self.done += 1
            rewound = self.pruner.step(self.done / self.steps)
            if rewound:
                self.opt = self.make_opt()
            if after:
                after(self.done, rewound)

    def full(self) -> Run:
        self.start()
        self.train()
        return self

    def checkpoint(self) -> dict[str, Any]:
        return copy.deepcopy({"model": self.model.state_dict(), "pruner": self.pruner.state_dict(),
                              "opt": self.opt.state_dict(), "done": self.done})

    def restore(self, ck: dict[str, Any]) -> None:
        self.pruner.load_state_dict(ck["pruner"])  # first: it re-creates parametrizations
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["opt"])
        self.done = ck["done"]


def pruned_counts(pruner: Pruner, tensors: dict[str, torch.Tensor]) -> list[int]:
    """Zeros per scope unit: one count per target ("layer") or one in all ("global")."""
    counts = [int((tensors[t.name] == 0).sum()) for t in pruner.targets]
    return counts if pruner.scope == "layer" else [sum(counts)]


def expected_counts(pruner: Pruner, rate: float) -> list[int]:
    sizes = [t.numel for t in pruner.targets]
    return [round(rate * n) for n in sizes] if pruner.scope == "layer" else [round(rate * sum(sizes))]


def mask_zeros(pruner: Pruner) -> list[int]:
    assert pruner.masks is not None
    return pruned_counts(pruner, {k: m.float() for k, m in pruner.masks.items()})


def assert_exact_final(run: Run, rate: float) -> None:
    """The trained masked network already has exactly the budget; finalize changes no weight."""
    p = run.pruner
    before = {t.name: p.effective(t.name).detach().clone() for t in p.targets}
    masks = p.finalize()
    after = {t.name: p.latent(t.name).detach() for t in p.targets}
    assert pruned_counts(p, {k: m.float() for k, m in masks.items()}) == expected_counts(p, rate)
    assert pruned_counts(p, after) == expected_counts(p, rate)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(hasattr(m, "parametrizations") for m in run.model.modules())


# ------------------------------------------------------------------------------------- budgets
def test_registered_under_cli_names():
    for name in ["mp", "gmp", "lth", "snip"]:
        assert type(create_pruner(name, mlp(), 0.5)) is METHODS[name]


def test_the_registry_is_complete_once_the_package_is_imported():
    """In a fresh interpreter, before any create_pruner call: a user listing METHODS sees every method."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "from pmp.pruning import METHODS; print(' '.join(sorted(METHODS)))"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["dense", "gmp", "lth", "mp", "mrmp", "pmp", "snip"]


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("method", ["mp", "gmp", "lth", "snip"])
def test_exact_count_after_training(method, rate, scope):
    assert_exact_final(Run(method, rate, scope).full(), rate)


@settings(max_examples=25, deadline=None)
@given(
    method=st.sampled_from(["mp", "gmp", "lth", "snip"]),
    rate=st.floats(0.0, 0.999),
    scope=st.sampled_from(["layer", "global"]),
    hidden=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    steps=st.integers(6, 14),
)
def test_exact_count_any_shape_and_rate(method, rate, scope, hidden, steps):
    assert_exact_final(Run(method, rate, scope, hidden=hidden, steps=steps).full(), rate)


def test_describe_records_resolved_options():
    d = {m: Run(m, 0.9).pruner.describe() for m in OPTIONS}
    assert all(d[m]["method"] == m and d[m]["rate"] == 0.9 and d[m]["scope"] == "layer" for m in d)
    assert d["mp"]["dense_epochs_fraction"] + d["mp"]["finetune_epochs_fraction"] == 1.0
    assert d["gmp"]["update_every"] == 2 and d["snip"]["batches"] == 2
    assert d["lth"]["epoch_multiplier"] == 3 and d["lth"]["per_round_rate"] == pytest.approx(1 - 0.1**0.5)
    assert all(d[m]["epoch_multiplier"] == 1 for m in ["mp", "gmp", "snip"])


@pytest.mark.parametrize(
    "method, options",
    [("mp", {"prune_at": 1.5}), ("gmp", {"begin": 0.6, "end": 0.6}), ("gmp", {"initial_sparsity": 0.95}),
     ("gmp", {"update_every": 0}), ("lth", {"rounds": 0}), ("lth", {"rewind_at": 1.0}), ("snip", {"batches": 0})],
)
def test_bad_options_rejected(method, options):
    with pytest.raises(ValueError, match=method):
        Run(method, 0.9, **options)


# ------------------------------------------------------------------------------------- masks hold
@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("method", ["mp", "gmp", "lth", "snip"])
def test_masks_hold_through_training(method, opt):
    """Momentum, Adam moments and weight decay push pruned latents off zero after opt.step; the
    effective weight stays exactly zero, and pruner.step zeroes the stored latent too."""
    run = Run(method, 0.9, opt=opt)
    p = run.pruner
    regrew: list[bool] = []
    at_prune: dict[str, torch.Tensor] = {}

    def between() -> None:
        if p.masks is not None:
            for k, m in p.masks.items():
                assert not p.effective(k)[~m].any()
                regrew.append(bool(p.latent(k)[~m].any()))

    def after(step: int, rewound: bool) -> None:
        if p.masks is not None:
            if not at_prune:
                at_prune.update({k: p.latent(k).detach().clone() for k in p.masks})
            assert all(not p.latent(k)[~m].any() for k, m in p.masks.items())

    run.start()
    run.train(between=between, after=after)
    assert p.masks is not None and mask_zeros(p) == expected_counts(p, 0.9)
    # survivors kept training through the parametrization
    assert any(not torch.equal(at_prune[k], p.latent(k)) for k in p.masks)
    if method in ("mp", "gmp"):  # pruned mid-training: the optimizer's state really pushes back
        assert any(regrew)


# ------------------------------------------------------------------------------------- GMP
def test_gmp_schedule_by_hand():
    s = lambda t, initial=0.0: gmp_sparsity(t, final=0.9, begin=0.2, end=0.6, initial=initial)  # noqa: E731
    assert s(0.0) == s(0.2) == 0.0
    assert s(0.3) == pytest.approx(0.9 - 0.9 * 0.75**3)
    assert s(0.4) == pytest.approx(0.7875)
    assert s(0.4, initial=0.3) == pytest.approx(0.9 - 0.6 * 0.125)
    assert s(0.6) == s(0.8) == s(1.0) == 0.9


@given(
    a=st.floats(0, 1), b=st.floats(0, 1), final=st.floats(0, 0.999), initial_frac=st.floats(0, 1),
    window=st.tuples(st.floats(0, 0.99), st.floats(0.01, 1)).filter(lambda w: w[0] < w[1]),
)
def test_gmp_schedule_monotone_and_bounded(a, b, final, initial_frac, window):
    begin, end = window
    initial = final * initial_frac
    lo, hi = sorted([a, b])
    s_lo, s_hi = (gmp_sparsity(t, final, begin, end, initial) for t in (lo, hi))
    assert initial - 1e-12 <= s_lo <= s_hi <= final + 1e-12
    assert gmp_sparsity(end, final, begin, end, initial) == final


def test_pruned_weight_never_regrows_even_against_a_surviving_zero():
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 0.1, 0.3, 0.4]]))
    pruner = METHODS["gmp"](layer, 0.5)
    pruner.prune_to(0.25)  # prunes index 0
    with torch.no_grad():  # training drives a survivor to exactly 0
        pruner.latent("weight")[0, 1] = 0.0
    pruner.prune_to(0.25)  # a plain |W| top-k would give the tie to index 0 (lower index): regrowth
    assert pruner.masks is not None
    assert pruner.masks["weight"].tolist() == [[False, True, True, True]]


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_gmp_updates_follow_schedule_with_exact_monotone_masks(scope):
    run = Run("gmp", 0.95, scope, steps=40, begin=0.2, end=0.7, update_every=3)
    p = run.pruner
    updates: list[int] = []
    prev: dict[str, torch.Tensor] = {}

    def after(step: int, rewound: bool) -> None:
        assert not rewound
        if p.masks is None:
            assert step / run.steps < 0.2
            return
        if p.last_update == step:
            updates.append(step)
            assert p.sparsity == p.schedule(step / run.steps)
            assert mask_zeros(p) == expected_counts(p, p.sparsity)
        assert all(not (m & ~prev[k]).any() for k, m in p.masks.items() if k in prev)  # no regrowth
        prev.update({k: m.clone() for k, m in p.masks.items()})

    run.train(after=after)
    # first update at progress 0.2 (step 8), every 3 steps, then the step reaching `end` (28)
    assert updates[0] == 8 and updates[-1] == 28 and p.sparsity == 0.95
    assert all(b - a == 3 for a, b in zip(updates, updates[1:-1]))


# ------------------------------------------------------------------------------------- LTH
@pytest.mark.parametrize("rewind_at", [0.0, 0.3])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_lth_rounds_rewind_to_saved_weights(rewind_at, scope):
    rate, rounds = 0.98, 3
    run = Run("lth", rate, scope, steps=40, rounds=rounds, rewind_at=rewind_at)  # 4 runs of 10 steps
    p = run.pruner
    assert p.epoch_multiplier == 4
    saved: dict[str, dict[str, torch.Tensor]] = {}
    # independent of the pruner: the first step at or past rewind_at of the first run (0 = init)
    save_step = next(s for s in range(41) if s / 40 >= rewind_at / 4)
    boundaries: list[int] = []
    if save_step == 0:
        saved["w"] = copy.deepcopy(run.model.state_dict())

    def after(step: int, rewound: bool) -> None:
        if step == save_step:
            saved["w"] = copy.deepcopy(run.model.state_dict())
        if not rewound:
            return
        boundaries.append(step)
        k = len(boundaries)
        s_k = rate if k == rounds else 1 - (1 - rate) ** (k / rounds)
        assert mask_zeros(p) == expected_counts(p, s_k)
        assert p.masks is not None
        for name, value in saved["w"].items():
            live = p.latent(name) if name in p.masks else run.model.state_dict()[name]
            want = value * p.masks[name] if name in p.masks else value
            assert torch.equal(live, want), name  # survivors (and BN stats, biases) rewound exactly

    run.start()
    run.train(after=after)
    assert boundaries == [10, 20, 30] and save_step == (0 if rewind_at == 0 else 3)
    assert_exact_final(run, rate)


# ------------------------------------------------------------------------------------- SNIP
def _two_by_two(batches: int) -> tuple[Pruner, Callable[[], torch.Tensor]]:
    layer = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
    data = iter([(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0])), (torch.tensor([0.0, 1.0]), torch.zeros(2))])

    def loss_fn() -> torch.Tensor:
        x, y = next(data)
        return ((layer(x) - y) ** 2).sum()

    return METHODS["snip"](layer, 0.5, batches=batches), loss_fn


def test_snip_scores_by_hand():
    # L = |Wx - y|^2, dL/dW = 2 (Wx - y) x^T. Batch 1: Wx = (-3, 4), r = (-3, 3), g = [[-6, -12], [6, 12]]
    pruner, loss_fn = _two_by_two(batches=1)
    assert torch.equal(pruner.sensitivity(loss_fn)["weight"], torch.tensor([[6.0, 24.0], [18.0, 6.0]]))
    # two batches average g. Batch 2: Wx = (-2, 0.5) = r, g = [[0, -4], [0, 1]]; mean [[-3, -8], [3, 6.5]]
    pruner, loss_fn = _two_by_two(batches=2)
    assert torch.equal(pruner.sensitivity(loss_fn)["weight"], torch.tensor([[3.0, 16.0], [9.0, 3.25]]))


def test_snip_masks_from_scores_and_fixed():
    pruner, loss_fn = _two_by_two(batches=1)
    pruner.on_train_start(loss_fn)
    assert pruner.masks is not None
    assert torch.equal(pruner.masks["weight"], torch.tensor([[False, True], [True, False]]))
    assert pruner.latent("weight").grad is None  # scoring leaves no gradient behind
    pruner.on_train_start(lambda: pytest.fail("a pruned SNIP must not rescore"))


def test_snip_requires_on_train_start():
    with pytest.raises(RuntimeError, match="on_train_start"):
        Run("snip", 0.5).train()


# ------------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("cut", [1, 9, 13, 20])
@pytest.mark.parametrize("method", ["mp", "gmp", "lth", "snip"])
def test_checkpoint_resume_is_identical(method, cut):
    """Kill at `cut`, restore into a differently initialised model: same weights and masks as
    the uninterrupted run (cuts fall before/after MP's prune, inside GMP's window, in LTH runs)."""
    full = Run(method, 0.9, "global", opt="adam").full()
    first = Run(method, 0.9, "global", opt="adam")
    first.start()
    first.train(until=cut)
    resumed = Run(method, 0.9, "global", opt="adam", seed=1)
    resumed.restore(first.checkpoint())
    resumed.train()
    assert resumed.pruner.masks is not None and full.pruner.masks is not None
    assert all(torch.equal(full.pruner.masks[k], m) for k, m in resumed.pruner.masks.items())
    full_sd, res_sd = full.model.state_dict(), resumed.model.state_dict()
    assert full_sd.keys() == res_sd.keys() and all(torch.equal(full_sd[k], res_sd[k]) for k in full_sd)
    assert full.pruner.extra_state().keys() == resumed.pruner.extra_state().keys()
