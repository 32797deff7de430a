"""Handing freed memory back to the operating system between the phases of a run.

On Linux, PyTorch's CPU tensors live in glibc's ``malloc`` heap. A phase that makes thousands of activation-sized
tensors (0.1-4 MB: a PPO epoch's forward/backward, a sampling batch) leaves the heap fragmented when it ends: the
memory is free for the process but still resident, and the next phase (rollout, evaluation, a reward-model round)
starts from that high-water mark instead of from what is live. ``malloc_trim(0)`` returns every free page of the
heap to the kernel (glibc >= 2.8 also releases free pages in the middle of the heap, not only at its top).

Measured on the offline default's PPO phase (SmolLM2-135M, LoRA, 2 cores): resident memory after an update
2.19-2.64 GiB without, 1.83-2.08 GiB with a trim after each update; the trim itself takes milliseconds. A fixed
``mmap`` threshold (every tensor above 1-4 MB mapped and unmapped on its own) kept the peaks ~0.4 GB lower but made
each PPO update 15-25 % slower (page faults), so it is not used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys

__all__ = ["release_free_memory"]


def _libc_malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim  # glibc; absent in musl
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _libc_malloc_trim()


def release_free_memory() -> bool:
    """Collect Python garbage (reference cycles that hold tensors, e.g. a finished trainer's) and return the heap's
    free pages to the OS (glibc's ``malloc_trim(0)``). Returns whether any memory was released by the trim (False
    also where there is no glibc). Cheap: call it between phases, not inside a forward pass."""
    gc.collect()
    if _MALLOC_TRIM is None:
        return False
    return bool(_MALLOC_TRIM(0))
