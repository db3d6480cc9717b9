"""The trainer's allocator setting: glibc keeps freed blocks, so steps stop page-faulting."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import subprocess
import sys

import pytest

from pmp.training.allocator import keep_freed_memory

_SCRIPT = """
import resource, torch
from pmp.training.allocator import keep_freed_memory
if {keep}:
    assert keep_freed_memory()
x = torch.randn(1 << 20)
def step():  # like a training step: several 4 MB temporaries alive together, then all freed
    ys = [x * i for i in range(4)]
    return sum(float(y[-1]) for y in ys)
for _ in range(3):
    step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _faults(keep: bool) -> int:
    out = subprocess.run([sys.executable, "-c", _SCRIPT.format(keep=keep)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or "glibc" not in " ".join(platform.libc_ver()),
                    reason="mallopt is glibc's")
def test_kept_memory_stops_the_page_faults_of_repeated_large_temporaries() -> None:
    default, kept = _faults(False), _faults(True)
    assert default > 20 * 1000  # glibc gives the heap top back: 4 MB = 1,024 pages faulted in again
    assert kept < default / 20


def test_is_idempotent_and_reports_success() -> None:
    first = keep_freed_memory()
    assert keep_freed_memory() is first
    assert first == hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallopt")
