"""When a recognised face may open the door: pure logic, no I/O, with injectable clocks.

One good match is not enough: a single frame can match the wrong person (motion blur, a face
half turned), so the same enrolled person must win `hits` of the last `window` evaluated
frames of one track, each already above the threshold and the margin (the matcher's rule).
A visit is one track, so it opens the door at most once; the per-person cooldown also covers
a person who steps out of view and back. Unknown faces are reported, never acted on.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from statistics import fmean

from edge_app.config import PolicyConfig

RECOGNIZED = "recognized"
UNKNOWN = "unknown"
UNLOCK = "unlock"
DENIED = "denied"


@dataclass(frozen=True)
class Vote:
    """The matcher's answer for one face in one frame.

    name is None when the best person is below the threshold or too close to the second best.
    """

    name: str | None
    score: float
    second: float = float("nan")


@dataclass(frozen=True)
class Decision:
    kind: str
    name: str | None
    score: float
    track: int
    reason: str | None = None


def parse_hours(spans: Iterable[str]) -> list[tuple[int, int]]:
    """ "HH:MM-HH:MM" spans as (start, end) minutes of the day; end may be 24:00."""
    result = []
    for span in spans:
        start, end = span.split("-")
        minutes = [int(part[:2]) * 60 + int(part[3:5]) for part in (start, end)]
        result.append((minutes[0], minutes[1]))
    return result


def within_hours(spans: list[tuple[int, int]], moment: datetime) -> bool:
    """No spans means always. A span whose end is before its start crosses midnight."""
    if not spans:
        return True
    minute = moment.hour * 60 + moment.minute
    for start, end in spans:
        if start < end:
            if start <= minute < end:
                return True
        elif minute >= start or minute < end:
            return True
    return False


@dataclass
class _TrackState:
    votes: deque[Vote]
    identity: str | None = None
    unknown_reported: bool = False


class Policy:
    """The unlock rules of `[policy]`; clock (monotonic seconds) and local_time are injectable."""

    def __init__(
        self,
        config: PolicyConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        local_time: Callable[[], datetime] = datetime.now,
    ) -> None:
        self._clock = clock
        self._local_time = local_time
        self._tracks: dict[int, _TrackState] = {}
        self._last_unlock: dict[str, float] = {}
        self.configure(config or PolicyConfig())

    @staticmethod
    def check(config: PolicyConfig) -> None:
        """Raise ValueError if `config` could not be applied (configure() calls this first)."""
        if not 1 <= config.hits <= config.window:
            raise ValueError(
                f"need 1 <= hits <= window, got hits={config.hits} window={config.window}"
            )
        parse_hours(config.allowed_hours)

    def configure(self, config: PolicyConfig) -> None:
        """Change the rules in place (SIGHUP); cooldowns already running are kept."""
        self.check(config)
        self.config = config
        self.hits = config.hits
        self.window = config.window
        self.cooldown_seconds = config.cooldown_seconds
        self.hours = parse_hours(config.allowed_hours)
        for state in self._tracks.values():
            state.votes = deque(state.votes, maxlen=config.window)

    def vote(self, track: int, vote: Vote) -> list[Decision]:
        """Record one evaluated frame of a track; the decisions it triggers, in order."""
        state = self._tracks.get(track)
        if state is None:
            state = self._tracks[track] = _TrackState(deque(maxlen=self.window))
        state.votes.append(vote)
        winner = self._winner(state.votes)
        if winner is not None and winner != state.identity:
            state.identity = winner
            score = fmean(v.score for v in state.votes if v.name == winner)
            return [
                Decision(RECOGNIZED, winner, score, track),
                self._try_unlock(winner, score, track),
            ]
        if (
            winner is None
            and state.identity is None
            and not state.unknown_reported
            and len(state.votes) == self.window
        ):
            state.unknown_reported = True
            return [Decision(UNKNOWN, None, max(v.score for v in state.votes), track)]
        return []

    def settled(self, track: int) -> bool:
        """Decided, and the latest frame agrees: the tracker may then embed it only rarely.

        A disagreeing frame (an identity switch when two people cross, or a face turning)
        unsettles the track so it is evaluated on every frame again until the votes agree.
        """
        state = self._tracks.get(track)
        if state is None or not state.votes:
            return False
        latest = state.votes[-1].name
        if state.identity is not None:
            return latest == state.identity
        return state.unknown_reported and latest is None

    def forget(self, track: int) -> None:
        self._tracks.pop(track, None)

    def _winner(self, votes: deque[Vote]) -> str | None:
        counts = Counter(v.name for v in votes if v.name is not None)
        if not counts:
            return None
        best = max(counts.values())
        if best < self.hits:
            return None
        tied = [name for name, count in counts.items() if count == best]
        if len(tied) == 1:
            return tied[0]
        # Only possible when hits <= window / 2: prefer the better-matching person.
        return max(tied, key=lambda name: max(v.score for v in votes if v.name == name))

    def _try_unlock(self, name: str, score: float, track: int) -> Decision:
        now = self._clock()
        last = self._last_unlock.get(name)
        if last is not None and now - last < self.cooldown_seconds:
            return Decision(DENIED, name, score, track, reason="cooldown")
        if not within_hours(self.hours, self._local_time()):
            return Decision(DENIED, name, score, track, reason="hours")
        self._last_unlock[name] = now
        return Decision(UNLOCK, name, score, track)
