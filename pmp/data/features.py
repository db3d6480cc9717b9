"""Input features: what each joint's signal holds, computed once per dataset from the preprocessed
positions (N, T, V, C), never per training step.

Why: a node's raw trajectory carries no geometry between joints, and that is where skeleton
models lose most accuracy (docs/data.md, "Input features"). Each feature appends channels to every
joint; its `ChannelGroup` records how the channels transform, so that augmentation applied after
the features (rotation, scaling, person swap) stays consistent with them:
'vector' groups (x, y, z) rotate and scale, 'length' groups scale, 'scalar' groups do neither.

For two persons, the per-joint distance channels are ordered *own person's joints, then the other
person's*: exchanging the persons is then a permutation of the joints alone, so the person-order
swap augmentation needs no channel bookkeeping.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

FEATURES = ("position", "distance", "distance_within", "distance_cross", "bone", "angle", "motion")
_TINY = 1e-8


@dataclass(frozen=True)
class ChannelGroup:
    """Channels [start, start + size) of the model input, of one feature and one kind."""

    name: str
    start: int
    size: int
    kind: str  # vector | length | scalar


@dataclass(frozen=True)
class InputLayout:
    """What augmentation needs to know about the model input's last two axes."""

    groups: tuple[ChannelGroup, ...]
    persons: int = 1  # joints are `persons` consecutive blocks of V / persons

    @property
    def channels(self) -> int:
        return sum(g.size for g in self.groups)

    def indices(self, *kinds: str) -> list[int]:
        return [c for g in self.groups if g.kind in kinds for c in range(g.start, g.start + g.size)]

    def vector_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.kind == "vector"]


def check_features(names: list[str], motion_steps: list[int]) -> None:
    """Reject unknown, repeated or empty feature lists by name (PreprocessConfig calls this)."""
    if not names:
        raise ValueError("PreprocessConfig.features must name at least one feature")
    for n in names:
        if n not in FEATURES:
            raise ValueError(f"PreprocessConfig.features: unknown feature {n!r}; known: {', '.join(FEATURES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"PreprocessConfig.features: repeated entries in {names}")
    if not motion_steps or any(int(k) != k or k < 1 for k in motion_steps):
        raise ValueError(f"PreprocessConfig.motion_steps must be integers >= 1, got {motion_steps!r}")


def input_layout(names: list[str], num_nodes: int, coords: int, persons: int, motion_steps: list[int]) -> InputLayout:
    """The channel groups `compute_features` produces, without computing anything."""
    joints = num_nodes // persons
    sizes = {
        "position": (coords, "vector"), "distance": (num_nodes, "length"), "distance_within": (joints, "length"),
        "distance_cross": (joints, "length"), "bone": (coords, "vector"), "angle": (1, "scalar"),
    }  # fmt: skip
    groups, start = [], 0
    for name in names:
        parts = ([(f"motion{k}", coords, "vector") for k in motion_steps] if name == "motion"
                 else [(name, *sizes[name])])
        for label, size, kind in parts:
            groups.append(ChannelGroup(label, start, size, kind))
            start += size
    return InputLayout(tuple(groups), persons)


def compute_features(
    x: torch.Tensor, names: list[str], persons: int, edges: list[tuple[int, int]] | None,
    roots: list[int], motion_steps: list[int],
) -> torch.Tensor:
    """Positions x (N, T, V, C) -> (N, T, V, C') with the channels of `input_layout` in order.

    `roots` are the joints (one per person) the skeleton trees of `bone`/`angle` hang from."""
    n, t, v, c = x.shape
    if "distance_cross" in names and persons < 2:
        raise ValueError("feature 'distance_cross' needs a multi-person layout (two_person)")
    if ("bone" in names or "angle" in names) and not edges:
        raise ValueError("features 'bone' and 'angle' need the dataset's edges (this dataset has none)")
    out = []
    for name in names:
        if name == "position":
            out.append(x)
        elif name.startswith("distance"):
            out.append(_distances(x, persons, name))
        elif name == "bone":
            out.append(_bones(x, _parents(v, edges or [], roots)))
        elif name == "angle":
            parent = _parents(v, edges or [], roots)
            bone = _bones(x, parent)
            out.append(_cosine(bone, bone[:, :, parent])[..., None])
        else:  # motion
            out.extend(motion(x, k) for k in motion_steps)
    return torch.cat(out, dim=-1)


def _distances(x: torch.Tensor, persons: int, which: str) -> torch.Tensor:
    """Euclidean distances from each joint to the joints `which` selects, own person's first."""
    n, t, v, c = x.shape
    d = torch.cdist(x.reshape(n * t, v, c), x.reshape(n * t, v, c), compute_mode="donot_use_mm_for_euclid_dist")
    j = v // persons
    person = torch.arange(v) // j
    own = torch.stack([torch.arange(j) + p * j for p in person.tolist()])  # (V, J): own person's joints
    others = torch.stack([torch.cat([torch.arange(j) + q * j for q in range(persons) if q != p])
                          for p in person.tolist()]) if persons > 1 else own[:, :0]  # fmt: skip
    cols = {"distance": torch.cat([own, others], 1), "distance_within": own, "distance_cross": others}[which]
    return d.gather(-1, cols.expand(n * t, v, cols.shape[1])).reshape(n, t, v, cols.shape[1])


def _parents(v: int, edges: list[tuple[int, int]], roots: list[int]) -> torch.Tensor:
    """Each joint's parent in the skeleton trees grown from `roots` over the (undirected) edges;
    roots and joints no edge reaches are their own parents (zero bone)."""
    nbrs: list[list[int]] = [[] for _ in range(v)]
    for a, b in edges:
        nbrs[a].append(b)
        nbrs[b].append(a)
    parent = list(range(v))
    seen = set(roots)
    queue = deque(roots)
    while queue:
        a = queue.popleft()
        for b in nbrs[a]:
            if b not in seen:
                seen.add(b)
                parent[b] = a
                queue.append(b)
    return torch.tensor(parent)


def _bones(x: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    return x - x[:, :, parent]


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of the angle between vectors (0 where either has no length)."""
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    ok = (na > _TINY) & (nb > _TINY)
    return torch.where(ok, (a * b).sum(-1) / torch.where(ok, na * nb, 1.0), 0.0)


def motion(x: torch.Tensor, step: int = 1) -> torch.Tensor:
    """Displacement over `step` frames along time (dim 1), zero for the first `step` frames."""
    m = torch.zeros_like(x)
    m[:, step:] = x[:, step:] - x[:, :-step]
    return m


def chunk_means(x: torch.Tensor, chunks: int) -> torch.Tensor:
    """(N, T, V, C) -> (N, chunks, V, C): the means of `chunks` consecutive, near-equal time spans
    (the seed paper family's node signal: a trajectory summarised by its temporal chunks)."""
    if chunks > x.shape[1]:
        raise ValueError(f"PreprocessConfig.chunks={chunks} exceeds frames={x.shape[1]}")
    return torch.stack([part.mean(dim=1) for part in torch.tensor_split(x, chunks, dim=1)], dim=1)
