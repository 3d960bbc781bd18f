"""The liveness rule a track must pass, shared by the door and `edge-app eval liveness`.

One frame's liveness score (edge_app/liveness.py, in [0, 1]) is noisy: a live face turns
away, blurs or is lit from behind now and then. So a track is judged live when at least
`min_live_frames` of its last `LIVE_WINDOW_FRAMES` scored frames are at or above the threshold, and
judged an attack once that many frames were scored without reaching it. The threshold is
derived on NUAA and recorded in the models manifest (`liveness.threshold`); docs/LIVENESS.md
says how, and has the measured error rates for the defaults.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge_app.config import LIVE_WINDOW_FRAMES, LIVENESS_MODES, LivenessConfig
from edge_app.errors import UserError

log = logging.getLogger(__name__)

THRESHOLD_KEY = "threshold"
OFF, LOG, REQUIRE = LIVENESS_MODES


class LivenessInfo(Protocol):
    """What the rule reads from the models manifest: its `liveness` section."""

    @property
    def liveness(self) -> Mapping[str, Any]: ...


def manifest_threshold(manifest: LivenessInfo) -> float:
    """The liveness threshold recorded in the manifest, checked."""
    section = getattr(manifest, "liveness", None) or {}
    value = section.get(THRESHOLD_KEY)
    if value is None:
        raise UserError(
            "the models manifest has no liveness.threshold: set [liveness] threshold in the "
            "config (or --threshold), or rebuild the models with a release that records it"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        # 0 (as [liveness] threshold refuses it) would judge every face live, a printed one too.
        raise UserError(
            f"manifest liveness.threshold: {value!r} is not a number above 0 and at most 1 "
            "(at 0 every face, a printed one too, is live)"
        )
    return float(value)


@dataclass(frozen=True)
class LiveRule:
    """[liveness] with "auto" resolved against the models: what the door applies."""

    mode: str = OFF  # "off", "log" or "require"
    threshold: float = 0.5  # NaN when off: there is none
    min_live_frames: int = 1

    def __eq__(self, other: object) -> bool:
        """Field by field, with two NaN thresholds (two rules that are off) the same: a reload
        that changes nothing must not look like a new rule."""
        if not isinstance(other, LiveRule):
            return NotImplemented
        same = self.threshold == other.threshold or (
            math.isnan(self.threshold) and math.isnan(other.threshold)
        )
        return same and (self.mode, self.min_live_frames) == (other.mode, other.min_live_frames)

    def __hash__(self) -> int:
        threshold = None if math.isnan(self.threshold) else self.threshold
        return hash((self.mode, threshold, self.min_live_frames))

    @classmethod
    def resolve(cls, config: LivenessConfig, manifest: LivenessInfo, has_model: bool) -> LiveRule:
        """Raise UserError for a mode the models cannot serve (fail closed, never silently off).

        mode "auto" is "require" with a liveness model and "off" (with a warning) without.
        """
        mode = config.mode
        if mode is None:
            mode = REQUIRE if has_model else OFF
            if not has_model:
                log.warning(
                    "liveness check off: the models have no liveness model, so a printed photo "
                    "of an enrolled person can open the door; build them with --liveness "
                    '(docs/LIVENESS.md) or set [liveness] mode = "off" to silence this'
                )
        if mode == OFF:
            return cls(OFF, float("nan"), config.min_live_frames)
        if not has_model:
            raise UserError(
                f'liveness.mode = "{mode}" needs a liveness model and the models have none: '
                'build them with `edge-convert build --liveness DIR`, or set mode = "off"'
            )
        threshold = config.threshold
        if threshold is None:
            threshold = manifest_threshold(manifest)
        return cls(mode, float(threshold), config.min_live_frames)

    def describe(self) -> str:
        if self.mode == OFF:
            return "mode=off"
        return (
            f"mode={self.mode} threshold={self.threshold:.3f} "
            f"min_live_frames={self.min_live_frames}/{LIVE_WINDOW_FRAMES}"
        )


def judged_scores(scores: np.ndarray | Iterable[float]) -> np.ndarray:
    """Liveness scores as every rule reads them, float64: a score that is not a finite number
    (a fault in a liveness model or its runtime) counts as 0, not live. NaN compares false
    with everything, so unchecked it would be neither live nor refused: pooled for a track,
    let through enrolment's check, written to JSON as the invalid token NaN."""
    values = np.asarray(scores, np.float64)
    return np.where(np.isfinite(values), values, 0.0)


def window_is_live(scores: np.ndarray, threshold: float, min_live_frames: int) -> bool:
    """At least `min_live_frames` of these scores are live."""
    return int(np.count_nonzero(np.asarray(scores) >= threshold)) >= min_live_frames


class LiveFrames:
    """One track's recent liveness scores and the verdict of the rule on them."""

    def __init__(
        self, threshold: float, min_live_frames: int, window: int = LIVE_WINDOW_FRAMES
    ) -> None:
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


def votes_are_live(scores: Iterable[float | None], threshold: float, hits: int) -> bool:
    """The second condition "require" puts on an unlock: at least `hits` of the liveness
    scores of the votes in the policy's window are live (None: a vote that is not the
    person's own face, or was not scored). The track's verdict (LiveFrames) is kept for the
    whole track; this keeps the votes that open the door live too, so a printed photo's
    frames never win them on the verdict a live look-alike's frames earned."""
    return sum(score is not None and score >= threshold for score in scores) >= hits


def track_verdict(
    scores: Iterable[float], threshold: float, min_live_frames: int, *, hits: int, window: int
) -> bool | None:
    """The door's verdict on a recognised track whose frames score `scores`, in order, every
    frame a vote of the person's own face (policy `hits` of `window`): True at the first
    frame it unlocks (the rule passed, now or before, and votes_are_live on the last `window`
    frames), False at the first full window that does not pass before the rule ever did (an
    attack for good, even if later frames would pass), None while neither (too few frames,
    or judged live but held by votes_are_live)."""
    frames = LiveFrames(threshold, min_live_frames)
    votes: deque[float] = deque(maxlen=window)
    judged_live = False
    for score in scores:
        frames.add(score)
        votes.append(float(score))
        judged_live = judged_live or frames.live
        if judged_live and votes_are_live(votes, threshold, hits):
            return True
        if not judged_live and frames.refused:
            return False
    return None
