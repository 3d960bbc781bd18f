"""The liveness rule a track must pass, shared by the door and `edge-app eval liveness`.

One frame's liveness score (edge_app/liveness.py, in [0, 1]) is noisy: a live face turns
away, blurs or is lit from behind now and then. So a track is judged live when at least
`min_live_frames` of its last `WINDOW_FRAMES` scored frames are at or above the threshold, and
judged an attack once that many frames were scored without reaching it. The threshold is
derived on NUAA and recorded in the models manifest (`liveness.threshold`); docs/LIVENESS.md
says how, and has the measured error rates for the defaults.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from edge_app.errors import UserError
from edge_app.manifest import Manifest

WINDOW_FRAMES = 10  # about a second at the door: the frames decided together
THRESHOLD_KEY = "threshold"


def manifest_threshold(manifest: Manifest) -> float:
    """The liveness threshold recorded in the manifest, checked."""
    value = manifest.liveness.get(THRESHOLD_KEY) if manifest.liveness else None
    if value is None:
        raise UserError(
            "the models manifest has no liveness.threshold: set [liveness] threshold in the "
            "config (or --threshold), or rebuild the models with a release that records it"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise UserError(f"manifest liveness.threshold: {value!r} is not a number in [0, 1]")
    return float(value)


def window_is_live(scores: np.ndarray, threshold: float, min_live_frames: int) -> bool:
    """At least `min_live_frames` of these scores are live."""
    return int(np.count_nonzero(np.asarray(scores) >= threshold)) >= min_live_frames


class LiveFrames:
    """One track's recent liveness scores and the verdict of the rule on them."""

    def __init__(self, threshold: float, min_live_frames: int, window: int = WINDOW_FRAMES) -> None:
        if not 1 <= min_live_frames <= window:
            raise ValueError(f"need 1 <= min_live_frames <= {window}, got {min_live_frames}")
        self.threshold = threshold
        self.min_live_frames = min_live_frames
        self.scores: deque[float] = deque(maxlen=window)

    def add(self, score: float) -> None:
        self.scores.append(float(score))

    @property
    def live(self) -> bool:
        return window_is_live(np.fromiter(self.scores, float), self.threshold, self.min_live_frames)

    @property
    def refused(self) -> bool:
        """A full window that is not live: the presentation is judged an attack."""
        return len(self.scores) == self.scores.maxlen and not self.live

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores)) if self.scores else float("nan")
