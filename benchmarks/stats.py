"""Summaries of repeated timings: median with p10-p90 and IQR, never a mean alone.

Two cores are shared with other work here, so single runs are noisy and a mean is dragged by
the slowest outliers; the median with its spread is what a rerun reproduces.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def summary(values: Sequence[float]) -> dict[str, float]:
    """median, p10, p25, p75, p90 and the count, of seconds or of any other unit."""
    array = np.asarray(values, np.float64)
    if array.size == 0:
        return {"n": 0}
    p10, p25, p50, p75, p90 = np.percentile(array, [10, 25, 50, 75, 90])
    return {
        "n": int(array.size),
        "median": float(p50),
        "p10": float(p10),
        "p25": float(p25),
        "p75": float(p75),
        "p90": float(p90),
    }


def block_fps(frame_seconds: Sequence[float], block: int) -> list[float]:
    """Frames per second of each consecutive block of `block` frames (total time, not 1/median:
    with tracking the periodic re-embedding frames are part of the steady state)."""
    seconds = np.asarray(frame_seconds, np.float64)
    usable = len(seconds) - len(seconds) % block
    if usable == 0:
        return []
    totals = seconds[:usable].reshape(-1, block).sum(axis=1)
    return [float(block / t) for t in totals]
