"""Where a run computes: `train.device` / `--device` = auto (CUDA when present), cpu or cuda.

CPU is the default path (and what CI tests); on CUDA the data stay on the CPU, where augmentation
draws from its seeded generators exactly as on the CPU path, and each batch moves to the device.
Deterministic settings on CUDA (set by `use_device`): cuDNN deterministic, no autotuning,
`torch.use_deterministic_algorithms(True, warn_only=True)` and CUBLAS_WORKSPACE_CONFIG=:4096:8, so
one seed gives one result on one GPU and software stack; results differ from the CPU's in the last
bits (other kernels), and ops without a deterministic CUDA kernel only warn.
"""

from __future__ import annotations

import os

import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """The torch device `name` asks for; "cuda" without a usable GPU is an error, not a silent CPU run."""
    if name not in DEVICES:
        raise ValueError(f"train.device: {name!r} is not one of {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device: cuda asked for, but torch sees no CUDA device (torch "
                         f"{torch.__version__}; the pinned CPU build has no CUDA): use --device cpu or auto")
    return torch.device(name)


def use_device(name: str) -> torch.device:
    """`resolve_device`, plus the deterministic settings above when it is CUDA."""
    device = resolve_device(name)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    return device
