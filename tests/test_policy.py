"""The unlock policy as pure logic: votes, hits-of-window, cooldown, hours, unknown faces."""

from __future__ import annotations

from datetime import datetime

import pytest

from edge_app.config import COOLDOWN_SECONDS_MAX, ClockConfig, PolicyConfig
from edge_app.liveness_rule import LiveRule
from edge_app.policy import (
    CLOCK_NOT_SET,
    DENIED,
    NO_ACCESS,
    RECOGNIZED,
    SPOOF,
    UNDECIDED,
    UNKNOWN,
    UNLOCK,
    Policy,
    Vote,
    parse_hours,
    within_hours,
)
from edge_app.wall_clock import NTP, RTC, SYNCHRONISED, TRUST, UNSET, WallClock


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def set_clock(moment: datetime, source: str = NTP) -> WallClock:
    """A wall clock that reads `moment`, set by `source` (an NTP client, by default)."""
    return WallClock(source=lambda: source, local_time=lambda: moment)


def make(clock: Clock, **kwargs) -> Policy:
    config = PolicyConfig(**{"hits": 3, "window": 5, "cooldown_seconds": 30.0, **kwargs})
    return Policy(config, clock=clock, wall_clock=set_clock(datetime(2024, 5, 1, 12, 0)))


def kinds(decisions) -> list[str]:
    return [d.kind for d in decisions]


def alice(score: float = 0.8) -> Vote:
    return Vote("alice", score, 0.1)


def test_unlock_needs_hits_of_window(clock: Clock) -> None:
    policy = make(clock)
    assert policy.vote(1, alice(0.7)) == []
    assert policy.vote(1, Vote(None, 0.3)) == []
    assert policy.vote(1, alice(0.8)) == []
    decisions = policy.vote(1, alice(0.9))
    assert kinds(decisions) == [RECOGNIZED, UNLOCK]
    assert decisions[1].name == "alice" and decisions[1].track == 1
    assert decisions[1].score == pytest.approx(0.8)  # mean of the winning votes
    # Further agreeing votes on the same track do not unlock again.
    assert policy.vote(1, alice()) == []
    assert policy.settled(1)


def test_votes_older_than_the_window_do_not_count(clock: Clock) -> None:
    policy = make(clock)
    for vote in (alice(), alice(), Vote(None, 0.2), Vote(None, 0.2), Vote(None, 0.2)):
        assert kinds(policy.vote(1, vote)) in ([], [UNKNOWN])
    # The first hit has left the 5-frame window: two hits in the last five are not enough.
    assert kinds(policy.vote(1, alice())) == []


def test_votes_are_per_track(clock: Clock) -> None:
    policy = make(clock)
    for track in (1, 2, 1, 2):
        assert policy.vote(track, alice()) == []
    assert kinds(policy.vote(2, alice())) == [RECOGNIZED, UNLOCK]


def test_unknown_face_reports_once_and_never_unlocks(clock: Clock) -> None:
    policy = make(clock)
    decisions = [d for _ in range(20) for d in policy.vote(7, Vote(None, 0.35))]
    assert kinds(decisions) == [UNKNOWN]
    assert decisions[0].name is None and decisions[0].score == pytest.approx(0.35)
    assert policy.settled(7)


def test_split_votes_between_people_is_unknown(clock: Clock) -> None:
    policy = make(clock)
    votes = [alice(), Vote("bob", 0.7), alice(), Vote("bob", 0.7), Vote(None, 0.3)]
    decisions = [d for vote in votes for d in policy.vote(1, vote)]
    assert kinds(decisions) == [UNKNOWN]


def test_cooldown_is_per_person(clock: Clock) -> None:
    policy = make(clock)
    for _ in range(3):
        first = policy.vote(1, alice())
    assert kinds(first) == [RECOGNIZED, UNLOCK]
    clock.now += 10  # second visit inside the cooldown: a new track
    for _ in range(3):
        second = policy.vote(2, alice())
    assert kinds(second) == [RECOGNIZED, DENIED] and second[1].reason == "cooldown"
    for _ in range(3):  # another person is not held back by alice's cooldown
        bob = policy.vote(3, Vote("bob", 0.8))
    assert kinds(bob) == [RECOGNIZED, UNLOCK]
    clock.now += 25  # 35 s after alice's unlock (the denied visit does not restart it)
    for _ in range(3):
        third = policy.vote(4, alice())
    assert kinds(third) == [RECOGNIZED, UNLOCK]


def test_a_rename_carries_the_decision_and_the_cooldown_over(clock: Clock) -> None:
    """Renamed in the gallery while at the door (or just after): the same person. The track
    that unlocked for "alice" does not decide again as "Alice B.", and a new visit within
    the cooldown is held back under the new name; two names may swap at once."""
    policy = make(clock)
    for _ in range(3):
        first = policy.vote(1, alice())
    assert kinds(first) == [RECOGNIZED, UNLOCK]
    policy.rename({"alice": "Alice B."})
    for _ in range(5):
        assert policy.vote(1, Vote("Alice B.", 0.8, 0.1)) == []  # the same visit
    clock.now += 10
    for _ in range(3):
        second = policy.vote(2, Vote("Alice B.", 0.8, 0.1))
    assert kinds(second) == [RECOGNIZED, DENIED] and second[1].reason == "cooldown"
    for _ in range(3):
        bob = policy.vote(3, Vote("bob", 0.8))
    assert kinds(bob) == [RECOGNIZED, UNLOCK]
    policy.rename({"Alice B.": "bob", "bob": "Alice B."})  # swapped
    clock.now += 25  # 35 s after alice's unlock, 10 s after bob's
    for _ in range(3):
        alice_again = policy.vote(4, Vote("bob", 0.8))
    for _ in range(3):
        bob_again = policy.vote(5, Vote("Alice B.", 0.8))
    assert kinds(alice_again) == [RECOGNIZED, UNLOCK]
    assert kinds(bob_again) == [RECOGNIZED, DENIED] and bob_again[1].reason == "cooldown"


def test_a_track_judged_again_keeps_the_cooldown_of_the_door_it_opened(clock: Clock) -> None:
    """A review: a person removed and enrolled anew under another name while in view was
    judged afresh (forget) and, their cooldown filed under the old name, let in again in the
    same visit. A track judged again keeps its own unlock's cooldown; one that ended does
    not pass it on, and the cooldown ends as a person's does."""
    policy = make(clock)
    for _ in range(3):
        first = policy.vote(1, alice())
    assert kinds(first) == [RECOGNIZED, UNLOCK]
    policy.forget(1, judged_again=True)
    for _ in range(3):  # reported again, as a new track would be, and not let in again
        same = policy.vote(1, alice())
    assert kinds(same) == [RECOGNIZED, DENIED] and same[1].reason == "cooldown"
    policy.forget(1, judged_again=True)
    for _ in range(3):
        again = policy.vote(1, Vote("Alice King", 0.8, 0.1))
    assert kinds(again) == [RECOGNIZED, DENIED] and again[1].reason == "cooldown"
    for _ in range(3):
        other = policy.vote(2, Vote("bob", 0.8, 0.1))  # another track: its own visit
    assert kinds(other) == [RECOGNIZED, UNLOCK]
    policy.forget(2, judged_again=True)
    policy.forget(2)  # then ended: what it carried goes with it
    for _ in range(3):
        fresh = policy.vote(2, Vote("Carol", 0.8, 0.1))
    assert kinds(fresh) == [RECOGNIZED, UNLOCK]
    policy.forget(1, judged_again=True)  # again: the cooldown still holds for it
    for _ in range(3):
        twice = policy.vote(1, Vote("Alice Q.", 0.8, 0.1))
    assert kinds(twice) == [RECOGNIZED, DENIED] and twice[1].reason == "cooldown"
    clock.now += 31  # past the 30 s cooldown of its unlock
    for _ in range(3):
        later = policy.vote(1, Vote("Alice King", 0.8, 0.1))
    assert kinds(later) == [RECOGNIZED, UNLOCK]


def undecided(score: float = 0.7) -> Vote:
    """A frame matched to someone whose templates are changing (the daemon's Recognizer)."""
    return Vote(None, score, 0.1, undecided=True)


def test_a_track_the_door_could_not_judge_is_reported_when_it_ends(clock: Clock) -> None:
    """A review: a visit whose frames were all undecided (the gallery changing under it)
    left no event. Seen for a window's worth of frames it is reported `unknown` at its end,
    with the best score of its frames; a shorter one is not, as a stranger's is not."""
    policy = make(clock)
    for _ in range(4):
        policy.undecided(1, undecided(0.7))
    policy.undecided(1, undecided(0.9))
    (ended,) = policy.end(1)
    assert (ended.kind, ended.name, ended.reason, ended.score) == (UNKNOWN, None, UNDECIDED, 0.9)
    assert policy.end(1) == []  # forgotten with its end
    for _ in range(4):
        policy.undecided(2, undecided())
    assert policy.end(2) == []  # shorter than the window
    for _ in range(3):  # undecided frames and counted ones of nobody: nothing decided
        policy.undecided(3, undecided())
        assert policy.vote(3, Vote(None, 0.3, 0.1)) == []
    assert kinds(policy.end(3)) == [UNKNOWN]
    assert policy.stranger(3) is False  # never a stranger the site memory learns from
    assert policy.end(4) == []  # a track it never saw


def test_a_track_that_reported_its_visit_reports_nothing_more_at_its_end(clock: Clock) -> None:
    policy = make(clock)
    for _ in range(3):
        decisions = policy.vote(1, alice())
    assert kinds(decisions) == [RECOGNIZED, UNLOCK]
    for _ in range(5):
        policy.undecided(1, undecided())
    assert policy.end(1) == []
    # Judged again after a report (whom it was recognised as changed): the visit was told.
    for _ in range(3):
        policy.vote(2, Vote("bob", 0.8, 0.1))
    policy.forget(2, judged_again=True)
    for _ in range(6):
        policy.undecided(2, undecided())
    assert policy.end(2) == []
    for _ in range(5):  # a stranger reported, then undecided frames
        policy.vote(3, Vote(None, 0.3, 0.1))
    policy.undecided(3, undecided())
    assert policy.end(3) == []
    # The track number comes back for a new face after its end: that visit is its own.
    for _ in range(5):
        policy.undecided(2, undecided())
    assert kinds(policy.end(2)) == [UNKNOWN]


def test_allowed_hours(clock: Clock) -> None:
    moment = datetime(2024, 5, 1, 23, 30)
    policy = Policy(
        PolicyConfig(3, 5, 0, ("07:00-22:00",)), clock=clock, wall_clock=set_clock(moment)
    )
    for _ in range(3):
        decisions = policy.vote(1, alice())
    assert kinds(decisions) == [RECOGNIZED, DENIED] and decisions[1].reason == "hours"


@pytest.mark.parametrize("source", [UNSET, NTP, RTC])
@pytest.mark.parametrize("trust", TRUST)
def test_allowed_hours_act_only_on_a_clock_that_something_set(
    clock: Clock, source: str, trust: str
) -> None:
    """Defect (an outside time audit): a Pi without network or a real-time clock boots at
    its last shutdown's time, or 1970, and keeps it: "22:00-06:00" opened by day and a
    day-time resident was refused. With hours to judge and a clock nothing set, everyone
    with hours is refused as "clock not set", unless [clock] trust = "always"."""
    night_only = PolicyConfig(3, 5, 0, ("22:00-06:00",))
    wall = set_clock(datetime(2024, 5, 1, 23, 30), source)
    wall.configure(ClockConfig(trust=trust))
    policy = Policy(night_only, clock=clock, wall_clock=wall)
    for _ in range(3):
        decisions = policy.vote(1, alice())
    if source == UNSET and trust == SYNCHRONISED:
        assert kinds(decisions) == [RECOGNIZED, DENIED]
        assert decisions[1].reason == CLOCK_NOT_SET == "clock not set"
    else:
        assert kinds(decisions) == [RECOGNIZED, UNLOCK]


def test_a_clock_nothing_set_changes_nothing_for_people_without_hours(clock: Clock) -> None:
    policy = Policy(
        PolicyConfig(3, 5, 0), clock=clock, wall_clock=set_clock(datetime(1970, 1, 1), UNSET)
    )
    for _ in range(3):
        decisions = policy.vote(1, alice())
    assert kinds(decisions) == [RECOGNIZED, UNLOCK]


@pytest.mark.parametrize(
    ("spans", "hour", "minute", "allowed"),
    [
        ([], 3, 0, True),
        (["07:00-22:00"], 7, 0, True),
        (["07:00-22:00"], 21, 59, True),
        (["07:00-22:00"], 22, 0, False),
        (["07:00-22:00"], 6, 59, False),
        (["22:00-06:00"], 23, 0, True),
        (["22:00-06:00"], 5, 30, True),
        (["22:00-06:00"], 22, 0, True),  # a span across midnight, at both of its ends
        (["22:00-06:00"], 21, 59, False),
        (["22:00-06:00"], 5, 59, True),
        (["22:00-06:00"], 6, 0, False),
        (["22:00-06:00"], 12, 0, False),
        (["06:00-12:00", "13:00-24:00"], 12, 30, False),
        (["06:00-12:00", "13:00-24:00"], 23, 59, True),
    ],
)
def test_within_hours(spans: list[str], hour: int, minute: int, allowed: bool) -> None:
    assert within_hours(parse_hours(spans), datetime(2024, 1, 1, hour, minute)) is allowed


def test_identity_switch_on_one_track_is_a_new_decision(clock: Clock) -> None:
    policy = make(clock, cooldown_seconds=0)
    for _ in range(3):
        policy.vote(1, alice())
    assert policy.vote(1, Vote("bob", 0.8)) == []
    assert not policy.settled(1)  # a disagreeing frame: evaluate every frame again
    assert policy.vote(1, Vote("bob", 0.8)) == []
    decisions = policy.vote(1, Vote("bob", 0.8))
    assert kinds(decisions) == [RECOGNIZED, UNLOCK] and decisions[0].name == "bob"


def test_settled_and_forget(clock: Clock) -> None:
    policy = make(clock)
    assert not policy.settled(1)
    policy.vote(1, alice())
    assert not policy.settled(1)
    policy.forget(1)
    assert not policy.settled(1)


def test_reconfigure_keeps_cooldowns(clock: Clock) -> None:
    policy = make(clock)
    for _ in range(3):
        policy.vote(1, alice())
    policy.configure(PolicyConfig(hits=2, window=3, cooldown_seconds=60))
    clock.now += 40
    policy.vote(2, alice())
    assert kinds(policy.vote(2, alice())) == [RECOGNIZED, DENIED]
    with pytest.raises(ValueError, match="hits <= window"):
        policy.configure(PolicyConfig(hits=4, window=3, cooldown_seconds=0))


def test_the_cooldowns_kept_do_not_grow_with_everyone_ever_let_in(clock: Clock) -> None:
    """The time of each person's last unlock is kept only while a cooldown could still
    hold them back, not one entry per name ever let in (guests enrolled for a stay and
    removed, renames) for as long as the door runs: those older than the longest cooldown a
    config may set go, and one within it still holds after a reload raises the cooldown."""
    policy = make(clock)
    for person in range(200):
        for _ in range(3):
            decisions = policy.vote(person, Vote(f"guest {person}", 0.8, 0.1))
        assert kinds(decisions) == [RECOGNIZED, UNLOCK]
        policy.end(person)
        clock.now += COOLDOWN_SECONDS_MAX / 4
    assert len(policy._last_unlock) <= 5
    policy.configure(PolicyConfig(hits=3, window=5, cooldown_seconds=COOLDOWN_SECONDS_MAX))
    for _ in range(3):
        again = policy.vote(1000, Vote("guest 199", 0.8, 0.1))
    assert kinds(again) == [RECOGNIZED, DENIED] and again[1].reason == "cooldown"


def dan(admitted: bool = False, liveness: float | None = None) -> Vote:
    return Vote("dan", 0.8, 0.1, liveness=liveness, admitted=admitted)


def test_a_known_visitor_is_recognised_and_denied_without_a_cooldown(clock: Clock) -> None:
    policy = make(clock)
    for _ in range(2):
        assert policy.vote(1, dan()) == []
    decisions = policy.vote(1, dan())
    assert kinds(decisions) == [RECOGNIZED, DENIED]
    assert decisions[1].name == "dan" and decisions[1].reason == NO_ACCESS
    assert policy.vote(1, dan()) == []  # once per visit, like an unlock
    # Given access (the gallery changed), the next visit opens at once: no cooldown was
    # started by the denial.
    for _ in range(2):
        policy.vote(2, dan(admitted=True))
    assert kinds(policy.vote(2, dan(admitted=True))) == [RECOGNIZED, UNLOCK]


def test_access_taken_away_mid_visit_is_what_counts(clock: Clock) -> None:
    """The latest vote for the person decides: a track recognised while they had access but
    still waiting for its liveness verdict is denied once the gallery says otherwise."""
    policy = make(clock)
    policy.configure(policy.config, LiveRule("require", 0.5, 3))
    for _ in range(3):
        decisions = policy.vote(1, dan(admitted=True, liveness=0.1))
    assert kinds(decisions) == [RECOGNIZED]  # waiting to be judged live
    policy.vote(1, dan(admitted=False, liveness=0.9))
    policy.vote(1, dan(admitted=False, liveness=0.9))
    decisions = policy.vote(1, dan(admitted=False, liveness=0.9))
    assert kinds(decisions) == [DENIED] and decisions[0].reason == NO_ACCESS


def test_a_known_visitor_is_denied_without_waiting_for_liveness(clock: Clock) -> None:
    policy = make(clock)
    policy.configure(policy.config, LiveRule("require", 0.5, 3))
    for _ in range(2):
        policy.vote(1, dan(liveness=0.1))
    decisions = policy.vote(1, dan(liveness=0.1))
    assert kinds(decisions) == [RECOGNIZED, DENIED]
    assert decisions[1].reason == NO_ACCESS


def nobody(score: float = 0.3, liveness: float | None = None) -> Vote:
    return Vote(None, score, -1.0, liveness=liveness)


def test_a_stranger_is_a_full_window_with_nobody_recognised(clock: Clock) -> None:
    """What the site memory may learn from (edge_app/site_memory.py)."""
    policy = make(clock)
    for _ in range(4):
        policy.vote(1, nobody())
    assert not policy.stranger(1)  # the window is not full yet
    assert kinds(policy.vote(1, nobody())) == [UNKNOWN]
    assert policy.stranger(1)
    for _ in range(3):
        policy.vote(1, alice())
    assert not policy.stranger(1)  # recognised in the end: never a stranger
    for _ in range(3):
        policy.vote(2, alice())
    assert not policy.stranger(2) and not policy.stranger(99)


def test_a_stranger_must_be_judged_live_when_liveness_is_on(clock: Clock) -> None:
    """A printed photo of a stranger teaches the site memory nothing."""
    policy = make(clock)
    policy.configure(policy.config, LiveRule("require", 0.5, 3))
    for _ in range(5):
        policy.vote(1, nobody(liveness=0.1))
        policy.vote(2, nobody(liveness=0.9))
    assert not policy.stranger(1)
    assert policy.stranger(2)
    policy.forget(2)
    assert not policy.stranger(2)


def alice_seen(liveness: float) -> Vote:
    return Vote("alice", 0.8, 0.1, liveness=liveness)


def test_a_live_stranger_taking_over_a_photos_track_does_not_unlock_it(clock: Clock) -> None:
    """A printed photo of Alice is recognised, then a live face that is not hers takes over
    the same track: its live frames never count for Alice, and Alice no longer wins the
    votes. Bringing the photo back still finds no live frame of Alice: it is a spoof."""
    policy = make(clock)
    policy.configure(policy.config, LiveRule("require", 0.5, 4))
    decisions = [d for _ in range(3) for d in policy.vote(1, alice_seen(0.1))]
    assert kinds(decisions) == [RECOGNIZED]  # waiting to be judged live
    for _ in range(4):  # the live stranger: enough live frames for the track as a whole
        decisions += policy.vote(1, nobody(liveness=0.95))
    assert UNLOCK not in kinds(decisions)
    for _ in range(3):  # the photo again: Alice wins the votes, still not live as Alice
        decisions += policy.vote(1, alice_seen(0.1))
    assert UNLOCK not in kinds(decisions)
    assert not policy.settled(1)  # scored every frame while it waits
    for _ in range(4):  # once the stranger's live frames leave the 10-frame window
        decisions += policy.vote(1, alice_seen(0.1))
    assert kinds(decisions)[-1] == SPOOF and UNLOCK not in kinds(decisions)


def test_a_live_person_who_stops_winning_the_votes_waits(clock: Clock) -> None:
    """Judged live as Alice, but by the time the rule passes the track's votes are no longer
    hers (the gallery changed, or another face took the track): no unlock until they are."""
    policy = make(clock)
    policy.configure(policy.config, LiveRule("require", 0.5, 4))
    for _ in range(3):
        policy.vote(1, alice_seen(0.9))
    decisions = [d for _ in range(3) for d in policy.vote(1, nobody(liveness=0.9))]
    decisions += policy.vote(1, alice_seen(0.9))  # her 4th live frame; 2 of the last 5 votes
    decisions += policy.vote(1, alice_seen(0.9))  # still 2 of the last 5
    assert UNLOCK not in kinds(decisions)
    decisions = policy.vote(1, alice_seen(0.9))  # 3 of the last 5 again
    assert kinds(decisions) == [UNLOCK] and decisions[0].name == "alice"


def test_a_live_resident_unlocks_once_her_own_frames_are_live(clock: Clock) -> None:
    policy = make(clock)
    policy.configure(policy.config, LiveRule("require", 0.5, 4))
    decisions = [d for _ in range(3) for d in policy.vote(1, alice_seen(0.9))]
    assert kinds(decisions) == [RECOGNIZED]
    assert kinds(policy.vote(1, alice_seen(0.9))) == [UNLOCK]


def test_a_resident_removed_while_waiting_for_liveness_is_not_let_in(clock: Clock) -> None:
    """Alice is recognised and waits for her 4th live frame; she is then removed from the
    gallery, so her next frames match nobody. Live as they are, they never count for her,
    and the votes from before the removal cannot let her in."""
    policy = make(clock)
    policy.configure(policy.config, LiveRule("require", 0.5, 4))
    decisions = [d for _ in range(3) for d in policy.vote(1, alice_seen(0.9))]
    assert kinds(decisions) == [RECOGNIZED]
    decisions = [d for _ in range(10) for d in policy.vote(1, nobody(liveness=0.9))]
    assert UNLOCK not in kinds(decisions)


@pytest.mark.parametrize(("alice_score", "bob_score"), [(0.7, 0.9), (0.9, 0.7)])
def test_a_tie_in_a_tracks_votes_goes_to_the_better_matching_person(
    alice_score: float, bob_score: float
) -> None:
    """With hits <= window / 2 two people can reach the hits at once: the one whose best
    vote matched better wins the tie."""
    policy = Policy(
        PolicyConfig(hits=2, window=4, cooldown_seconds=30.0),
        clock=Clock(),
        wall_clock=set_clock(datetime(2024, 5, 1, 12, 0)),
    )
    votes = [Vote("alice", alice_score, 0.1), Vote("bob", bob_score, 0.1)] * 2
    named = [[(d.kind, d.name) for d in policy.vote(1, vote)] for vote in votes]
    assert named[2] == [(RECOGNIZED, "alice"), (UNLOCK, "alice")]  # 2 of 4: alice alone
    tie = named[3]  # alice 2, bob 2
    if bob_score > alice_score:
        assert tie == [(RECOGNIZED, "bob"), (UNLOCK, "bob")]
    else:
        assert tie == []  # alice keeps the track
