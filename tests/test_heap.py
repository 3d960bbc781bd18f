"""edge_app.heap: the pages a freed engine held go back to the system."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edge_app import heap


def resident_mb() -> int:
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("VmRSS")).split()[1]) // 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_freed_memory_goes_back_to_the_system() -> None:
    """Freed blocks between live ones stay in the process (glibc keeps them for later) until
    give_back(): the hub's size after an engine it no longer uses (docs/WEB.md)."""
    if heap._malloc_trim() is None:
        pytest.skip("not glibc: give_back() has nothing to do")
    blocks = [np.ones(60_000 // 8) for _ in range(4000)]  # 60 kB each: malloc's own heap
    kept = blocks[::10]  # every tenth stays: the freed ones cannot shrink the heap's end
    del blocks
    before = resident_mb()
    heap.give_back()
    assert before - resident_mb() > 100, (before, resident_mb())
    assert len(kept) == 400
