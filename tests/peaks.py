"""The memory a call takes at its peak, for the tests that bound it (tracemalloc traces
Python's and numpy's allocations; the C libraries' own, such as SQLite's page cache, are
not counted)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def traced_peak(call: Callable[[], T]) -> tuple[T, int]:
    """call()'s result, and the most bytes it held at once while it ran."""
    tracemalloc.start()
    try:
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak
