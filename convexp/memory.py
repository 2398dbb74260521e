"""Keep freed CPU memory in the process instead of handing it back to the kernel.

PyTorch allocates CPU tensors with the C library's malloc. glibc serves large blocks (128 KiB
and up, by default) with fresh mmap calls and gives them back on free, so each training step
and each evaluation batch faults its activations' pages in again, and the kernel zeroes every
page first. On this project's 2-core VMs that cost up to a third of a step: `convexp bench`
measured about 2,800 page faults per batch-64 step of the native network, 15.8 ms a step with
them and 10.7 ms without, and evaluation of 8,000 digits at batch 1,000 took 0.65 s with them
and 0.28 s without.

keep_freed_memory() asks glibc to serve every block from its heap and never trim that heap, so
freed blocks are reused without faults. Nearly always: the heap can fragment and grow by a block
now and then (seen with some of oneDNN's CPU kernels: one 50 MB block after 40 passes of
batch-1000 evaluation, then none in 100 more). The price: the process keeps its peak memory
until it exits, as PyTorch's CUDA caching allocator does on the GPU.
CONVEXP_KEEP_FREED_MEMORY=0 skips it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

# mallopt parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

DISABLED = -1  # mallopt(3): M_TRIM_THRESHOLD -1 disables trimming completely


@functools.cache  # applied once per process; later calls report the first call's outcome
def keep_freed_memory() -> bool:
    """Make glibc malloc reuse freed memory; True when the settings took effect.

    False, doing nothing, off Linux, under another C library (musl has no mallopt), or when
    CONVEXP_KEEP_FREED_MEMORY=0.
    """
    if os.environ.get("CONVEXP_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # No block from mmap (so none is unmapped on free), and no trimming of the heap's top.
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, DISABLED) == 1
