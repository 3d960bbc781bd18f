"""When a recognised face may open the door: pure logic, no I/O, with injectable clocks.

One good match is not enough: a single frame can match the wrong person (motion blur, a face
half turned), so the same enrolled person must win `hits` of the last `window` evaluated
frames of one track, each already above the threshold and the margin (the matcher's rule).
A visit is one track, so it decides once for each person it is recognised as (two people
crossing in one track are two decisions; the person it comes back to is not decided again);
the per-person cooldown also covers a person who steps out of view and back, and a track
judged again because whom it was recognised as left the gallery (a person removed and
enrolled anew under another name while in view) keeps the cooldown of the door it opened.
Unknown faces are reported, never acted on. A frame the door cannot count (Vote.undecided:
the gallery changing under the person in view, or unreadable) decides nothing but what its
liveness score says; a track seen for a window of frames that ends with such frames and
nothing reported is reported `unknown` at its end (end(), reason UNDECIDED), as a
stranger's visit would have been. A track that reported its visit reports nothing more: a
stranger who steps into a recognised resident's track and whose frames are all undecided
is not reported (their frames never fill the window that "took the place" needs).

A track is recognised as a person, and the door opens, only on a frame whose own face
could be that person (Vote.alone), in every liveness mode: with `[policy] evidence =
"track"` the pooled evidence can still name a resident for a few frames after another face
took the track (a stranger stepping into the place a resident just left). Such a frame is
neither reported as the resident nor opens for them; the track stays unsettled, evaluated
every frame, until the person's own face is back. A recognised track whose full window
of `window` evaluated frames holds no frame of that person's own face is held by someone
else: it is reported `unknown` once, with reason "took the place of NAME" (a stranger
following a resident in while the door is open), and the person coming back to it is not
decided again. Not while another enrolled person's own face in that window can still make
them its winner (a known visitor behind the resident, recognised once their frames reach
`hits`), and then for at most `hits - 1` frames: a stranger whose face matches someone
enrolled now and then is still reported.

Liveness (docs/LIVENESS.md): each vote may carry the face's liveness score. With the rule in
"require" mode a recognised track unlocks only once `min_live_frames` of its last 10 scored
frames that matched that person are live, and while that person still wins the frame votes;
until then it waits the same way. Live frames of another face in the same track (a live
stranger who steps in where a photo of a resident was) never count for the resident. A
track whose 10-frame window fills without being live is a `spoof`: reported once, with the
name it matched, and it never unlocks (the person steps out of view and back to try again).
In "log" mode the same `spoof` is reported but the unlock is not held back for it, and a
track held for liveness is let go on a frame of its own once a reload stops requiring it.
A reload restarts every track's votes (restart_votes): each is earned again under the new
gallery and threshold.

Known visitors (people enrolled without access, docs/GALLERY.md) are recognised like anyone
enrolled and then `denied` with reason "no access", whatever the liveness check says.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from statistics import fmean

import numpy as np

from edge_app.config import (
    COOLDOWN_SECONDS_MAX,
    LIVE_WINDOW_FRAMES,
    PolicyConfig,
    votes_problem,
)
from edge_app.liveness_rule import (
    OFF,
    REQUIRE,
    LiveFrames,
    LiveRule,
    votes_are_live,
    window_is_live,
)
from edge_app.wall_clock import WallClock

RECOGNIZED = "recognized"
UNKNOWN = "unknown"
UNLOCK = "unlock"
DENIED = "denied"
SPOOF = "spoof"
NOT_LIVE = "not live"
NOT_LIVE_LOGGED = "not live (log mode: not enforced)"
# A recognised track that left while its unlock waited for liveness ("require"), its frames
# scored not live on the whole: its record says so, or the history would show only that
# the person was recognised (a printed photo shown for half a second).
LEFT_UNJUDGED = "left before it was judged live"
NO_ACCESS = "no access"
COOLDOWN = "cooldown"  # the same person was let in less than cooldown_seconds ago
OUT_OF_HOURS = "hours"  # outside allowed_hours
CLOCK_NOT_SET = "clock not set"  # allowed_hours, and nothing has set the wall clock
DENIED_REASONS = (NO_ACCESS, COOLDOWN, OUT_OF_HOURS, CLOCK_NOT_SET)
TOOK_PLACE = "took the place"  # an unknown face in a recognised person's track: "... of NAME"
# An unknown reported when a track ends whose frames were undecided (Vote.undecided): the
# gallery changed under the person in view, or could not be read, and the door could not
# tell who they were.
UNDECIDED = "undecided: the gallery was changing or could not be read while in view"
# How far under the recognition threshold a frame's own face may score and still count as
# the person the track's pooled evidence names (Vote.alone): for opening the door and for
# liveness. A face one frame at a time scores lower than the pool that recognised it; a
# stranger's face that took the track scores far lower (docs/LIVENESS.md has the measurement).
OWN_FACE_DOUBT = 0.05


@dataclass(frozen=True)
class Vote:
    """The matcher's answer for one face in one frame.

    name is None when the best person is below the threshold or too close to the second best.
    admitted is False when `name` is a known visitor, enrolled without access: recognised and
    reported, never let in. alone: whether this frame's face could be `name` by itself (its
    own best match, at most OWN_FACE_DOUBT under the threshold). With `[policy] evidence =
    "track"` the name comes from the track's pooled evidence, which can still name a
    resident for a few frames after another face took the track; a frame vote is always
    alone. The door opens, and liveness counts for a person, only on frames that could be
    them alone.
    """

    name: str | None
    score: float
    second: float = float("nan")
    liveness: float | None = None  # the face's liveness score; None when not scored
    admitted: bool = True
    alone: bool = True
    # While a new gallery's matcher builds, the person this face matched lost a template:
    # the match may have been made through it; or the gallery cannot be read. Neither them
    # nor nobody: the door does not count it (edge_app.daemon, Recognizer.match).
    undecided: bool = False
    # With `[policy] evidence = "track"`: the track's pool held another person's face (a
    # stranger, or another resident, who stood where they now stand) and did not name
    # `name`, while this face by itself is `name`; this vote is the face's own match, and
    # the pool starts again from it (edge_app.daemon, Recognizer.match).
    restart: bool = False


@dataclass(frozen=True)
class Decision:
    """score: the identity score; liveness: the mean liveness score of the track's window
    (None when liveness is off)."""

    kind: str
    name: str | None
    score: float
    track: int
    reason: str | None = None
    liveness: float | None = None


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
    live: LiveFrames  # every scored frame: strangers, spoofs and the reported mean
    # (name, liveness) of the last LIVE_WINDOW_FRAMES scored frames: whose face each score is of
    scored: deque[tuple[str | None, float]] = field(
        default_factory=lambda: deque(maxlen=LIVE_WINDOW_FRAMES)
    )
    identity: str | None = None
    identity_score: float = float("nan")  # the score the track was recognised with
    unknown_reported: bool = False
    # recognised, unlock held until that person is judged live (liveness "require"), or
    # until a frame of their own face once a reload relaxed that
    held: bool = False
    judged_live: bool = False  # the rule passed once on all frames: the track is live for good
    live_as: set[str] = field(default_factory=set)  # people whose own frames passed the rule
    spoofed: bool = False  # judged an attack: reported, and (require) never unlocks
    decided: set[str] = field(default_factory=set)  # people this track unlocked or denied
    taken_over: bool = False  # a recognised person's place in it was taken by another face
    # frames the "took the place" report waited for someone else coming (_someone_else_coming)
    report_waited: int = 0
    unlocked_at: float | None = None  # when it last opened the door (the policy clock)
    reported: bool = False  # it made a decision (an event), whatever it was
    frames: int = 0  # frames evaluated, undecided ones included
    undecided: int = 0  # frames not counted: Vote.undecided
    undecided_score: float = float("-inf")  # the best of their scores


class Policy:
    """The unlock rules of `[policy]`; clock (monotonic seconds) and wall_clock (the date and
    hour `allowed_hours` reads, and whether they may be trusted) are injectable."""

    def __init__(
        self,
        config: PolicyConfig | None = None,
        liveness: LiveRule | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: WallClock | None = None,
    ) -> None:
        self._clock = clock
        self.wall_clock = wall_clock if wall_clock is not None else WallClock()
        self._tracks: dict[int, _TrackState] = {}
        self._last_unlock: dict[str, float] = {}
        # Tracks judged again (forget(judged_again=True)): when each last opened the door,
        # and those that had reported something before.
        self._opened_before: dict[int, float] = {}
        self._reported_before: set[int] = set()
        self.liveness = LiveRule()  # off until configured
        self.configure(config or PolicyConfig(), liveness)

    @staticmethod
    def check(config: PolicyConfig) -> None:
        """Raise ValueError if `config` could not be applied (configure() calls this first)."""
        problem = votes_problem(config)
        if problem is not None:
            raise ValueError(problem)
        parse_hours(config.allowed_hours)

    def configure(self, config: PolicyConfig, liveness: LiveRule | None = None) -> None:
        """Change the rules in place (SIGHUP); cooldowns already running are kept.

        liveness None keeps the current liveness rule (off at first).
        """
        self.check(config)
        rule_changed = liveness is not None and liveness != self.liveness
        if liveness is not None:
            self.liveness = liveness
        self.config = config
        self.hits = config.hits
        self.window = config.window
        self.cooldown_seconds = config.cooldown_seconds
        self.hours = parse_hours(config.allowed_hours)
        for state in self._tracks.values():
            state.votes = deque(state.votes, maxlen=config.window)
            state.live = self._live_frames(state.live.scores)
            if rule_changed:
                # Judged live under the rule now in force, on the frames already scored: a
                # photo a lower threshold passed is not live under a raised one.
                state.live_as = {name for name in state.live_as if self._live_as(state, name)}
                state.judged_live = not state.spoofed and state.live.live

    def restart_votes(self) -> None:
        """Drop every track's frame votes: they were matched against a gallery or threshold
        that is no longer the door's (a reload, an enrolment or removal while running), and
        would otherwise count for up to `window` frames. What each track already decided,
        whom it was recognised as and its liveness frames are kept."""
        for state in self._tracks.values():
            state.votes.clear()

    def _live_frames(self, scores: Iterable[float] = ()) -> LiveFrames:
        rule = self.liveness
        live = LiveFrames(rule.threshold, rule.min_live_frames)
        for score in scores:
            live.add(score)
        return live

    def _state(self, track: int) -> _TrackState:
        state = self._tracks.get(track)
        if state is None:
            state = self._tracks[track] = _TrackState(
                deque(maxlen=self.window), self._live_frames()
            )
        return state

    def vote(self, track: int, vote: Vote) -> list[Decision]:
        """Record one evaluated frame of a track; the decisions it triggers, in order."""
        state = self._state(track)
        state.frames += 1
        decisions = self._vote(state, track, vote)
        state.reported = state.reported or bool(decisions)
        return decisions

    def undecided(self, track: int, vote: Vote) -> list[Decision]:
        """Record a frame of `track` that cannot be counted (Vote.undecided: the person it
        matched lost a template while the gallery's matcher builds, or the gallery cannot
        be read). It names nobody and never opens the door; a track that ends with such
        frames and nothing reported is reported by end(). Its liveness score counts as any
        frame's of nobody: a recognised track whose window is not live is a `spoof`, the
        one decision it may return."""
        state = self._state(track)
        state.frames += 1
        state.undecided += 1
        state.undecided_score = max(state.undecided_score, vote.score)
        self._note_liveness(state, replace(vote, name=None))
        decisions = self._check_spoof(state, track)
        state.reported = state.reported or bool(decisions)
        return decisions

    def end(self, track: int) -> list[Decision]:
        """The face of `track` left (or the source ended, or the door stopped): what its end
        reports, then it is forgotten. A track that reported nothing, seen for at least
        `window` frames of which some were undecided, is reported `unknown` with reason
        UNDECIDED: a visit the door could not judge while the gallery changed leaves a
        record (a stranger's shorter than the window leaves none, as it would have been
        judged on no fewer). A recognised track whose unlock still waited for liveness, and
        whose scored frames are not live on average, is a `spoof` with reason LEFT_UNJUDGED
        (a resident walking past, live but seen too briefly to judge, is not)."""
        state = self._tracks.get(track)
        decisions = []
        if (
            state is not None
            and state.held
            and state.identity is not None
            and not state.spoofed
            and (own := self._own_scores(state))
            and fmean(own) < self.liveness.threshold
            # judged live by the rule on their own recent frames: held by the live-votes
            # rule (_may_open), not a spoof
            and not self._live_as(state, state.identity)
        ):  # not a resident walking past, whose frames were live but too few to judge
            decisions.append(self._spoof(state, track, LEFT_UNJUDGED))
        if (
            state is not None
            and state.undecided
            and not state.reported
            and track not in self._reported_before
            and state.frames >= self.window
        ):
            scores = [state.undecided_score, *(v.score for v in state.votes)]
            decisions.append(Decision(UNKNOWN, None, max(scores), track, UNDECIDED))
        self.forget(track)
        return decisions

    @staticmethod
    def _own_scores(state: _TrackState) -> list[float]:
        """The liveness scores of the frames of the recognised person's own face (a live
        stranger's frames in the same track say nothing of a photo of them); all the
        track's scores when none was of their own face."""
        own = [score for who, score in state.scored if who == state.identity]
        return own or list(state.live.scores)

    def _vote(self, state: _TrackState, track: int, vote: Vote) -> list[Decision]:
        state.votes.append(vote)
        mode = self.liveness.mode
        self._note_liveness(state, vote)
        winner = self._winner(state.votes)
        # A track is recognised as a person only on a frame whose own face could be them:
        # pooled evidence may still name a resident after a stranger took their place.
        if state.identity is not None and self._own_face(vote, state.identity):
            state.report_waited = 0  # the person is back: a later wait starts again
        if winner is not None and winner != state.identity and self._own_face(vote, winner):
            state.identity = winner
            state.report_waited = 0
            state.identity_score = self._score(state)
            state.held = False
            if winner in state.decided:  # back to someone this visit already decided
                return self._check_spoof(state, track)
            decisions = [Decision(RECOGNIZED, winner, self._score(state), track)]
            if not self._admitted(state):
                decisions.append(self._unlock(state, track))  # denied: nothing to wait for
            elif mode == REQUIRE and state.spoofed:
                decisions.append(self._spoof(state, track, NOT_LIVE))
            elif self._may_open(state, vote):
                decisions.append(self._unlock(state, track))
            else:
                state.held = True  # until judged live
            return decisions + self._check_spoof(state, track)
        if (
            state.held
            and state.identity is not None
            and winner == state.identity  # still this person, by the frame votes
            and self._may_open(state, vote)  # a reload may have relaxed liveness
        ):
            state.held = False
            return [self._unlock(state, track)]
        spoof = self._check_spoof(state, track)
        if spoof:
            return spoof
        if winner is None and len(state.votes) == self.window:
            if state.identity is not None and not any(
                self._own_face(v, state.identity) for v in state.votes
            ):
                # A full window without one frame of the recognised person's own face: someone
                # else holds the track (a stranger stepping into a resident's place at the
                # door). Reported once; the person coming back is not decided again. Held
                # back for at most `hits - 1` frames while someone enrolled may be coming: a
                # stranger whose face matches someone now and then never holds it for ever.
                if state.report_waited < self.hits - 1 and self._someone_else_coming(state):
                    state.report_waited += 1
                    return []
                followed, state.identity, state.held = state.identity, None, False
                state.unknown_reported = state.taken_over = True
                return [self._unknown(state, track, f"{TOOK_PLACE} of {followed}")]
            if state.identity is None and not state.unknown_reported:
                state.unknown_reported = True
                return [self._unknown(state, track)]
        return []

    def _note_liveness(self, state: _TrackState, vote: Vote) -> None:
        """The frame's liveness score, when liveness is on and it was scored."""
        if self.liveness.mode == OFF or vote.liveness is None:
            return
        state.live.add(vote.liveness)
        state.judged_live = state.judged_live or (not state.spoofed and state.live.live)
        # Whose face this liveness score is of: only a face that matched by itself.
        state.scored.append((vote.name if vote.alone else None, vote.liveness))
        name = vote.name if vote.alone and not state.spoofed else None
        if name is not None and self._live_as(state, name):
            state.live_as.add(name)

    @staticmethod
    def _unknown(state: _TrackState, track: int, reason: str | None = None) -> Decision:
        return Decision(UNKNOWN, None, max(v.score for v in state.votes), track, reason)

    def identity(self, track: int) -> str | None:
        """Whom `track` is recognised as now (None: nobody, or not a track it knows); a track
        that comes back to someone it decided takes them again without a new decision."""
        state = self._tracks.get(track)
        return None if state is None else state.identity

    def settled(self, track: int) -> bool:
        """Decided, and the latest frame agrees (its own face, for a recognised track): the
        tracker may then embed it only rarely.

        A disagreeing frame (an identity switch when two people cross, or a face turning)
        unsettles the track so it is evaluated on every frame again until the votes agree.
        """
        state = self._tracks.get(track)
        if state is None or not state.votes:
            return False
        if state.held:
            return False  # an unlock held back: evaluated every frame until it is let go
        if (
            self.liveness.mode != OFF
            and state.identity is not None
            and not (state.identity in state.live_as or state.spoofed)
        ):
            return False  # recognised: scored every frame until the liveness rule decides
        latest = state.votes[-1]
        if state.identity is not None:
            # Named by pooled evidence alone is not the person's own face: a stranger who
            # took the place is evaluated on every frame until judged.
            return self._own_face(latest, state.identity)
        return state.unknown_reported and latest.name is None

    def stranger(self, track: int) -> bool:
        """Judged a stranger: a full window of votes with nobody recognised, and (liveness
        on) judged live, so a printed photo is never one. What the door may learn its site
        from ([recognition] learn_site, edge_app/site_memory.py)."""
        state = self._tracks.get(track)
        if state is None or state.identity is not None or not state.unknown_reported:
            return False
        if state.taken_over:
            return False  # its pool still holds the resident whose place was taken
        return self.liveness.mode == OFF or (state.judged_live and not state.spoofed)

    def forget(self, track: int, *, judged_again: bool = False) -> None:
        """Drop what `track` decided: it ended, or (judged_again) whom it was recognised as
        is no longer in the gallery as then and it is judged afresh, reported again as a new
        track would be. Judged again, the door stays in its cooldown for the track, whatever
        name the gallery now gives whoever stands in it: from the track's own unlock, or the
        last unlock of anyone it decided (a person let in on an earlier track who stepped
        back into view). So a person removed and enrolled anew while in view is not let in
        twice within the cooldown."""
        state = self._tracks.pop(track, None)
        before = self._opened_before.pop(track, None)  # judged again already
        reported = track in self._reported_before or (state is not None and state.reported)
        self._reported_before.discard(track)
        if not judged_again:
            return
        if reported:
            self._reported_before.add(track)
        opened = [] if before is None else [before]
        if state is not None:
            if state.unlocked_at is not None:
                opened.append(state.unlocked_at)
            opened += [self._last_unlock[n] for n in state.decided if n in self._last_unlock]
        if opened:
            self._opened_before[track] = max(opened)

    def rename(self, renamed: dict[str, str]) -> None:
        """People renamed in the gallery ({old: new}, all at once: two names may swap): what
        the tracks decided about them, whom they were recognised as, their frames and their
        cooldowns carry over to the new names, so a rename is not a new visit (a second
        unlock past the cooldown)."""

        def new(name: str | None) -> str | None:
            return renamed.get(name, name) if name is not None else None

        def new_names(names: set[str]) -> set[str]:
            return {renamed.get(name, name) for name in names}

        last: dict[str, float] = {}
        for name, when in self._last_unlock.items():
            now_named = renamed.get(name, name)
            last[now_named] = max(when, last.get(now_named, when))  # the later, if reused
        self._last_unlock = last
        for state in self._tracks.values():
            state.identity = new(state.identity)
            state.decided = new_names(state.decided)
            state.live_as = new_names(state.live_as)
            state.votes = deque(
                (replace(v, name=new(v.name)) for v in state.votes), maxlen=self.window
            )
            state.scored = deque(
                ((new(who), live) for who, live in state.scored), maxlen=LIVE_WINDOW_FRAMES
            )

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

    @staticmethod
    def _score(state: _TrackState) -> float:
        """The mean score of the window's frames of the track's person; with none left in
        it (a spoof judged once someone else's frames filled the window), the score they
        were recognised with."""
        scores = [v.score for v in state.votes if v.name == state.identity]
        return fmean(scores) if scores else state.identity_score

    def _live_score(self, state: _TrackState) -> float | None:
        return None if self.liveness.mode == OFF else state.live.mean

    def _unlock(self, state: _TrackState, track: int) -> Decision:
        assert state.identity is not None
        state.decided.add(state.identity)
        if self._admitted(state):
            decision = self._try_unlock(state.identity, self._score(state), track)
        else:
            decision = Decision(DENIED, state.identity, self._score(state), track, NO_ACCESS)
        return replace(decision, liveness=self._live_score(state))

    @staticmethod
    def _admitted(state: _TrackState) -> bool:
        """Whether the track's identity may open the door, as its latest vote for them says
        (the gallery may have changed since the earlier ones); no such vote: not admitted."""
        return next((v.admitted for v in reversed(state.votes) if v.name == state.identity), False)

    def _someone_else_coming(self, state: _TrackState) -> bool:
        """Another enrolled person's own face is in the window where their next frames can
        still make them its winner: someone known stepping into the track (a visitor behind a
        resident), recognised as themselves once their frames reach `hits`, not a stranger
        who took the resident's place. Only frames that stay in the window while the
        `hits - 1` next ones come count, so a rare stray match never holds the report back."""
        votes = list(state.votes)
        others = {v.name for v in votes if v.alone and v.name not in (None, state.identity)}
        for name in others:
            for coming in range(1, self.hits):
                kept = votes[coming:]  # the frames still in the window after `coming` more
                if sum(self._own_face(v, name) for v in kept) + coming >= self.hits:
                    return True
        return False

    @staticmethod
    def _own_face(vote: Vote, name: str | None) -> bool:
        """This frame's own face could be `name` by itself (Vote.alone)."""
        return vote.name == name and vote.alone

    def _may_open(self, state: _TrackState, vote: Vote) -> bool:
        """This frame's own face could be the track's person and, when liveness is required,
        that person was judged live on frames of their own."""
        name = state.identity
        if not self._own_face(vote, name):
            return False
        if self.liveness.mode != REQUIRE:
            return True
        # The votes that win must be live frames of the person's own face too: otherwise the
        # live verdict (live_as, kept for the whole track) and the winning votes can come
        # from different faces at different times, a live look-alike's stray matches and
        # then a printed photo of the resident, and the door opens on the photo's frames.
        own = (v.liveness if self._own_face(v, name) else None for v in state.votes)
        return name in state.live_as and votes_are_live(own, self.liveness.threshold, self.hits)

    def _live_as(self, state: _TrackState, name: str) -> bool:
        """The liveness rule on the track's recent frames that matched `name` only."""
        scores = [score for who, score in state.scored if who == name]
        rule = self.liveness
        return window_is_live(np.asarray(scores, float), rule.threshold, rule.min_live_frames)

    def _spoof(self, state: _TrackState, track: int, reason: str) -> Decision:
        return Decision(
            SPOOF, state.identity, self._score(state), track, reason, self._live_score(state)
        )

    def _check_spoof(self, state: _TrackState, track: int) -> list[Decision]:
        """A recognised track whose full liveness window is not live: one `spoof` decision."""
        mode = self.liveness.mode
        if mode == OFF or state.identity is None or state.spoofed:
            return []
        if state.identity in state.live_as:
            return []
        if not state.live.refused:
            return []
        state.spoofed = True
        state.held = state.held and mode != REQUIRE  # log mode: a spoof does not hold it
        return [self._spoof(state, track, NOT_LIVE if mode == REQUIRE else NOT_LIVE_LOGGED)]

    def _try_unlock(self, name: str, score: float, track: int) -> Decision:
        now = self._clock()
        self._opened_before = {
            other: when
            for other, when in self._opened_before.items()
            if now - when < self.cooldown_seconds
        }
        # An unlock longer ago than any cooldown a reload may set holds no one back: kept,
        # one entry per name ever let in would grow for as long as the door runs.
        self._last_unlock = {
            other: when
            for other, when in self._last_unlock.items()
            if now - when < COOLDOWN_SECONDS_MAX
        }
        last = self._last_unlock.get(name)
        if last is not None and now - last < self.cooldown_seconds:
            return Decision(DENIED, name, score, track, reason=COOLDOWN)
        if track in self._opened_before:  # judged again in the visit whose door it opened
            return Decision(DENIED, name, score, track, reason=COOLDOWN)
        if self.hours:
            # Hours read from a clock nothing has set (a Pi without network or a real-time
            # clock) would open a night-only window by day: refused, whoever it is.
            if not self.wall_clock.trusted():
                return Decision(DENIED, name, score, track, reason=CLOCK_NOT_SET)
            if not within_hours(self.hours, self.wall_clock.local_time()):
                return Decision(DENIED, name, score, track, reason=OUT_OF_HOURS)
        self._last_unlock[name] = now
        if (state := self._tracks.get(track)) is not None:
            state.unlocked_at = now
        return Decision(UNLOCK, name, score, track)
