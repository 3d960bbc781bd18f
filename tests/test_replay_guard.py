"""The replay and clock guard both hub verifiers share (edge_app.hub.signing.ReplayGuard):
a replay cache aged on the monotonic clock, so a wall-clock step can neither let a used
command in again nor keep the cache full, for signed commands and lock-card codes alike."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from test_hub_code import cheap_hash
from test_hub_code import command as code_command

from edge_app.hub.code import CodeVerifier
from edge_app.hub.signing import (
    REPLAY_CACHE,
    ReplayGuard,
    UnlockRefused,
    UnlockVerifier,
    sign_unlock,
)

KEY = "0123456789abcdef" * 4
NOW = 1_700_000_000.0
WINDOW = 30.0
STEP = 3600.0  # far more than the window: NTP at boot on a Pi without a clock, a hand-set date


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def signed(at: float, nonce: str | None = None) -> bytes:
    return json.dumps(sign_unlock(KEY, "front", "phone", now=at, nonce=nonce)).encode()


def by_code(at: float) -> bytes:
    return code_command(ts=at)


def signed_verifier(wall: Clock, ticks: Clock) -> Callable[[bytes], object]:
    return UnlockVerifier(KEY, "front", WINDOW, clock=wall, ticks=ticks).verify


def code_verifier(wall: Clock, ticks: Clock) -> Callable[[bytes], object]:
    return CodeVerifier(cheap_hash(), WINDOW, clock=wall, ticks=ticks).verify


@pytest.mark.parametrize(
    ("make", "payload"),
    [(signed_verifier, signed), (code_verifier, by_code)],
    ids=["signed", "code"],
)
def test_a_wall_clock_step_there_and_back_does_not_let_a_used_command_in_again(
    make: Callable[[Clock, Clock], Callable[[bytes], object]],
    payload: Callable[[float], bytes],
) -> None:
    """Defect: UnlockVerifier aged its nonces on the wall clock. The date set an hour forward
    (any command accepted then purged every older nonce: "older than two windows") and back
    again (NTP correcting it) made a command accepted seconds earlier fresh again, and its
    nonce was gone: the captured command opened the door a second time. The cache now ages
    on the monotonic clock, as CodeVerifier's already did."""
    wall, ticks = Clock(NOW), Clock(100.0)
    verify = make(wall, ticks)
    used = payload(NOW)
    verify(used)
    wall.now += STEP  # the date jumps forward; a command made then is accepted (and purges)
    ticks.now += 1
    verify(payload(wall.now))
    wall.now -= STEP - 1  # and back: the used command is inside the window again
    ticks.now += 1
    with pytest.raises(UnlockRefused, match="replayed command"):
        verify(used)


def test_a_wall_clock_step_back_does_not_keep_the_replay_cache_full() -> None:
    """Aged on the wall clock, nonces remembered before the date was set an hour back stayed
    "fresh" for that hour: a full cache refused every command ("too many") until the clock
    caught up. On the monotonic clock they are forgotten two windows after their command;
    what stays is the latest timestamp forgotten, and a command is taken again as soon as the
    clock has passed it."""
    wall, ticks = Clock(NOW), Clock(100.0)
    check = UnlockVerifier(KEY, "front", WINDOW, clock=wall, ticks=ticks)
    for number in range(REPLAY_CACHE):
        check.verify(signed(NOW, nonce=f"{number:032d}"))
    with pytest.raises(UnlockRefused, match="too many unlock commands in the time window"):
        check.verify(signed(NOW))
    wall.now -= STEP
    ticks.now += 2 * WINDOW + 1
    with pytest.raises(UnlockRefused, match="the clock stepped back"):
        check.verify(signed(wall.now))
    wall.now = NOW + 1
    ticks.now += 1
    assert check.verify(signed(wall.now)) == "phone"


@pytest.mark.parametrize(
    ("make", "payload"),
    [(signed_verifier, signed), (code_verifier, by_code)],
    ids=["signed", "code"],
)
@pytest.mark.parametrize("ahead", [3 * WINDOW, STEP])
def test_a_command_forgotten_before_a_step_back_is_not_taken_again(
    make: Callable[[Clock, Clock], Callable[[bytes], object]],
    payload: Callable[[float], bytes],
    ahead: float,
) -> None:
    """Defect (an outside audit): commands accepted while the hub's clock was ahead (their
    sender shared the wrong time) were forgotten two windows later; NTP then set the clock
    back, their timestamps were inside the window again, and a captured one opened the door
    a second time. The latest timestamp forgotten is kept, and nothing signed at or before
    it is taken: a step of any size back cannot bring a forgotten command in."""
    wall, ticks = Clock(NOW), Clock(100.0)
    verify = make(wall, ticks)
    used = payload(NOW)
    verify(used)
    wall.now += 2 * WINDOW + 1  # forgotten, on both clocks
    ticks.now += 2 * WINDOW + 1
    verify(payload(wall.now))
    # The clock was `ahead` all along: NTP sets it back, and when the true time reaches
    # `used`'s timestamp it is inside the window again.
    wall.now = NOW + 1
    ticks.now = 100.0 + ahead
    with pytest.raises(UnlockRefused, match=r"is not after \d+, a command's that was accepted"):
        verify(used)


@pytest.mark.parametrize(
    ("make", "payload"),
    [(signed_verifier, signed), (code_verifier, by_code)],
    ids=["signed", "code"],
)
def test_forgetting_refuses_no_command_of_a_clock_that_did_not_step(
    make: Callable[[Clock, Clock], Callable[[bytes], object]],
    payload: Callable[[float], bytes],
) -> None:
    """What is forgotten was signed at most a window ahead of the clock when it was taken
    and is two windows old: every command inside the window now is newer. Senders a window
    behind and a window ahead, one command a second for ten windows: all taken."""
    wall, ticks = Clock(NOW), Clock(100.0)
    verify = make(wall, ticks)
    for second in range(int(WINDOW), int(11 * WINDOW)):  # a window after the hub's start
        wall.now, ticks.now = NOW + second, 100.0 + second
        skew = WINDOW if second % 2 else -WINDOW
        verify(payload(wall.now + skew))


def test_a_check_refused_while_admitting_leaves_the_command_unused() -> None:
    """CodeVerifier checks the code inside admitting(): a wrong code must not use up the
    timestamp, or a typo would make the right code with the same timestamp a "replay"."""
    ticks = Clock(100.0)
    guard = ReplayGuard(WINDOW, clock=Clock(NOW), ticks=ticks)
    with pytest.raises(UnlockRefused, match="wrong"), guard.admitting("key", int(NOW), "key"):
        raise UnlockRefused("wrong")
    guard.admit("key", int(NOW), "key")
    with pytest.raises(UnlockRefused, match=r"^replayed command \(key already used\)$"):
        guard.admit("key", int(NOW), "key")
    ticks.now += 2 * WINDOW + 1  # forgotten two windows later, on the monotonic clock
    guard.admit("key", int(NOW) + 1, "key")


@pytest.mark.parametrize(
    ("make", "payload", "says"),
    [
        (signed_verifier, signed, "nonce already used"),
        (code_verifier, by_code, "timestamp and code already used"),
    ],
    ids=["signed", "code"],
)
def test_both_verifiers_refuse_a_replay_in_the_same_words(
    make: Callable[[Clock, Clock], Callable[[bytes], object]],
    payload: Callable[[float], bytes],
    says: str,
) -> None:
    verify = make(Clock(NOW), Clock(100.0))
    used = payload(NOW)
    verify(used)
    with pytest.raises(UnlockRefused, match=rf"^replayed command \({says}\)$"):
        verify(used)


@pytest.mark.parametrize(
    ("make", "payload"),
    [(signed_verifier, signed), (code_verifier, by_code)],
    ids=["signed", "code"],
)
def test_a_used_command_is_remembered_while_its_timestamp_can_be_inside_the_window(
    make: Callable[[Clock, Clock], Callable[[bytes], object]],
    payload: Callable[[float], bytes],
) -> None:
    """A sender whose clock is ahead of the Pi's (up to the window) makes commands that
    stay inside the window for up to 2 windows: the cache must remember them that long, or
    a captured one opens the door again once it has been forgotten."""
    wall, ticks = Clock(NOW), Clock(100.0)
    verify = make(wall, ticks)
    ahead = payload(NOW + WINDOW - 1)  # the sender's clock 29 s ahead
    verify(ahead)
    wall.now += WINDOW + 5  # its timestamp is now 6 s in the past: inside the window
    ticks.now += WINDOW + 5
    verify(payload(wall.now))  # any command ages the cache
    with pytest.raises(UnlockRefused, match="replayed command"):
        verify(ahead)
