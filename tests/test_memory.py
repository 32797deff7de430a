"""release_free_memory: freed heap pages go back to the OS (glibc), so the next phase starts from what is live."""

import sys

import pytest
import torch

from hf_prefs.memory import _MALLOC_TRIM, release_free_memory


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux") or _MALLOC_TRIM is None, reason="glibc's malloc_trim")
@pytest.mark.parametrize("collect_garbage", [True, False])
def test_release_returns_fragmented_heap_pages(collect_garbage):
    # 3,000 tensors of 64 KiB (below glibc's mmap threshold: on the heap); every 16th stays alive, so the freed
    # ones sit between live ones and the heap cannot shrink from its top: freed but resident
    tensors = [torch.ones(16 * 1024) for _ in range(3000)]
    keep = tensors[::16]
    del tensors
    before = _rss_mb()
    assert release_free_memory(collect_garbage=collect_garbage)
    after = _rss_mb()
    assert before - after > 100, (before, after)  # ~176 MB freed of 188 MB; the kept 12 MB stay
    assert all(float(t[0]) == 1.0 for t in keep)
