"""Keep freed memory in the process, so a training step does not page-fault its tensors back in.

glibc's malloc returns large freed blocks to the kernel (mmap'd blocks at once, the heap top above
a trim threshold), and the next step touches them again as fresh zero pages: on this project's
2-core machine about 2,000 page faults per dense step on the FPHA model (3.8 ms of system time) and
3,600 with PMP's extra temporaries (7.6 ms; benchmarks/pmp_parts.py). Raising the mmap and trim thresholds keeps the blocks for reuse
(the resident size stays at the step's peak, which it reaches anyway). The same fix as running
under jemalloc or tcmalloc, which PyTorch's CPU performance guide recommends, without a preload.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's maximum: blocks below it come from the reusable heap
_TRIM_THRESHOLD = 1 << 30
_TOP_PAD = 64 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Tune glibc's malloc for this process (once); False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    settings = ((_M_MMAP_THRESHOLD, _MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD), (_M_TOP_PAD, _TOP_PAD))
    return all(mallopt(param, value) == 1 for param, value in settings)
