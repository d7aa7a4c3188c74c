"""Keep freed memory in the process on glibc, so that PyTorch's large CPU tensors stop page-faulting.

glibc serves every allocation above its mmap threshold (32 MB at most) with a fresh mapping
that the kernel fills page by page and takes back on ``free``. A CPU training step allocates
and frees such activations many times over, and measured runs spent more time in page faults
than in arithmetic (``benchmarks/allocator.py``). Two ``mallopt`` settings keep those pages:
no mappings for large chunks (``M_MMAP_MAX = 0``: they come from the heap) and the heap's top is
handed back only once more than 1 GiB of it is free (``M_TRIM_THRESHOLD``). Freed chunks are
reused by later allocations of any size, so a process that trains many models keeps about its
peak, not the sum of its runs. Results do not change: the allocator decides where a tensor
lives, never what it holds.

``import lnlkit`` applies this once. Set ``LNLKIT_MALLOC=default`` to leave glibc as it is; on
other C libraries (macOS, musl) nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30
OPT_OUT = "LNLKIT_MALLOC"

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the two settings (once per process); True when glibc took them."""
    global _applied
    if _applied is None:
        _applied = False if os.environ.get(OPT_OUT) == "default" else _mallopt()
    return _applied


def _mallopt() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only: these settings mean something else, or nothing, elsewhere
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
