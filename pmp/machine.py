"""What decides the numbers besides the code and the seed: the machine fingerprint, the
reproducible mode, and the memory a request may ask for.

Same commit, same seed, same machine fingerprint: the same bytes. Across CPUs, torch picks its
vectorised kernels by the instruction set (`torch.backends.cpu.get_cpu_capability()`), and the
AVX-512 kernels sum in another order than the AVX2 ones, which moves trained accuracies by points.
The reproducible mode pins that choice (`ATEN_CPU_CAPABILITY`) to AVX2, which every x86-64 CPU
of the last decade has; torch reads the variable once, when it is imported, so the mode must be
set before that: `PMP_REPRODUCIBLE=1` in the environment (read by `import pmp`, before torch), or
`pmp ... --reproducible`, which restarts the command with it set.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

REPRODUCIBLE_ENV = "PMP_REPRODUCIBLE"
PINNED = {"ATEN_CPU_CAPABILITY": "avx2"}  # what the reproducible mode sets, before torch is imported
#: Environment variables that change which kernels run or how many threads they use.
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA",
              "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", REPRODUCIBLE_ENV)
_ISA_PREFIXES = ("sse4", "avx", "fma", "amx", "f16c", "bmi")
_LIBRARIES = ("torch", "numpy", "numba", "safetensors", "scipy", "pmp")


class AllocationError(ValueError):
    """A request whose sizes would need more memory than the machine has."""


def apply_reproducible_env(environ: dict[str, str] | os._Environ = os.environ) -> None:
    """Pin the kernel choice if PMP_REPRODUCIBLE is set (to anything but 0/empty); call before torch."""
    if environ.get(REPRODUCIBLE_ENV, "") not in ("", "0"):
        for key, value in PINNED.items():
            environ[key] = value


def reproducible_active() -> bool:
    import torch

    return os.environ.get(REPRODUCIBLE_ENV, "") not in ("", "0") and \
        torch.backends.cpu.get_cpu_capability().lower() == PINNED["ATEN_CPU_CAPABILITY"]


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = sorted(f for f in value.split() if f.startswith(_ISA_PREFIXES))
    except OSError:
        pass
    return model, flags


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_fingerprint() -> dict[str, Any]:
    """CPU model and ISA flags, torch's chosen CPU capability, library versions, threads and the
    environment variables that steer kernels: what a run's numbers depend on besides code and seed."""
    import torch

    model, flags = _cpuinfo()
    out: dict[str, Any] = {
        "cpu_model": model, "cpu_isa": flags, "cores": os.cpu_count(), "arch": platform.machine(),
        "os": f"{platform.system()} {platform.release()}", "libc": " ".join(platform.libc_ver()).strip(),
        "python": platform.python_version(), "versions": {n: _version(n) for n in _LIBRARIES},
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(), "mkl": torch.backends.mkl.is_available(),
        "env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ},
    }
    out["reproducible_mode"] = reproducible_active()
    return out


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (a zombie has); Linux's /proc for the latter."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def check_allocation(what: str, nbytes: float) -> None:
    """Refuse, before allocating, a request that needs more bytes than the machine's memory."""
    limit = physical_memory()
    if nbytes > limit:
        raise AllocationError(f"{what} would need {nbytes / 2**30:.1f} GiB, more than this machine's "
                              f"{limit / 2**30:.1f} GiB of memory: check the sizes")
