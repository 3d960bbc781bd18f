"""Signed remote-unlock commands: HMAC-SHA256 over the door, a timestamp, a nonce and an origin.

A command is the JSON object {"ts": <Unix seconds, integer>, "nonce": "<16-64 of
[A-Za-z0-9_-]>", "origin": "<who: unlock_text.origin_problem>", "sig": "<hex>"} where
sig = HMAC-SHA256(key, "edge-door-unlock:v1\\n<door_id>\\n<ts>\\n<nonce>\\n<origin>"). The
door id in the signed text stops a command for one door from opening another that shares
the key; the timestamp window bounds how long a captured command stays usable, the nonce
cache refuses a second use inside that window, and a command signed before the verifier was
made (before the hub started) is refused, so a restart does not open the window again.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

from edge_app import untrusted_json
from edge_app.errors import UserError
from edge_app.private_file import read_private
from edge_app.unlock_text import origin_problem

SCHEME = "edge-door-unlock:v1"
MAX_COMMAND_BYTES = 1024
MIN_KEY_CHARS = 32
REPLAY_CACHE = 1024  # commands remembered at most (ReplayGuard); more fresh ones are refused
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}\Z")
_SIG = re.compile(r"^[0-9a-f]{64}\Z")
_FIELDS = {"ts", "nonce", "origin", "sig"}


class UnlockRefused(Exception):
    """A command that must not open the door; the message says why (for the log)."""


def read_secret(path: Path, key: str, *, min_chars: int = 1) -> str:
    """The first line of a private file; refused when others can read it or it is short.

    Checked before it is read (edge_app.private_file.read_private): a regular file of at most
    MAX_SECRET_BYTES that others cannot read.
    key: the config key naming the file, for the message.
    """
    try:
        text = read_private(path, key).decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{key}: {path} does not exist") from None
    except UnicodeDecodeError:
        # Not the codec's words: they quote a byte of the secret and where it is.
        raise UserError(
            f"{key}: {path} is not UTF-8 text; write the secret again in UTF-8"
        ) from None
    except OSError as error:
        raise UserError(f"{key}: cannot read {path} ({error})") from None
    secret = text.strip().splitlines()[0].strip() if text.strip() else ""
    if len(secret) < min_chars:
        raise UserError(
            f"{key}: {path} must hold at least {min_chars} characters; make one with "
            f"`openssl rand -hex 32 > {path}`"
        )
    return secret


def command_object(payload: bytes, fields: set[str]) -> dict[str, Any]:
    """A command's JSON object with exactly `fields`; UnlockRefused for anything else."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise UnlockRefused(f"command longer than {MAX_COMMAND_BYTES} bytes")
    try:
        command = untrusted_json.loads(payload)
    except untrusted_json.BadJSON as error:
        raise UnlockRefused(f"bad command: {error}") from None
    if not isinstance(command, dict) or set(command) != fields:
        raise UnlockRefused(f"command must be an object with exactly {sorted(fields)}")
    return command


def check_window(timestamp: int, now: float, window: float) -> None:
    """UnlockRefused when the command's timestamp is more than `window` seconds from now."""
    if abs(now - timestamp) > window:
        side = "behind" if timestamp < now else "ahead of"
        raise UnlockRefused(
            f"timestamp {timestamp} is {abs(now - timestamp):.0f} s {side} this hub's clock, "
            f"outside the {window:.0f} s window (check both clocks)"
        )


def unlock_message(door_id: str, ts: int, nonce: str, origin: str) -> bytes:
    return f"{SCHEME}\n{door_id}\n{ts}\n{nonce}\n{origin}".encode()


def sign_unlock(
    key: str, door_id: str, origin: str, *, now: float | None = None, nonce: str | None = None
) -> dict[str, Any]:
    """A signed unlock command (what a sender publishes, as JSON)."""
    ts = int(time.time() if now is None else now)
    nonce = nonce or secrets.token_hex(16)
    digest = hmac.new(key.encode(), unlock_message(door_id, ts, nonce, origin), hashlib.sha256)
    return {"ts": ts, "nonce": nonce, "origin": origin, "sig": digest.hexdigest()}


class HubStart:
    """Refuses commands made before this hub run started, so that a replay cache kept in
    memory only is enough (ReplayGuard's: UnlockVerifier's nonces, CodeVerifier's timestamp
    and code).

    Such a cache dies with the hub, so a restarted hub would accept again, within the window,
    a command that the previous run accepted and that someone captured. Rather than write the
    used commands to a file at every unlock (a disk write for each command, a file to keep
    private and whole, and a folder the hub must be able to write), every command stamped
    before the start is refused: each command can then be accepted by one hub run only, and
    needs nothing kept across runs. The cost: a command made before a restart and sent after
    it is refused (make a new one). Timestamps are whole seconds (senders round down), so
    "before" is judged in whole seconds: a command from the very second the hub started is
    accepted, and a replay would need the previous hub to accept it, stop and the new one
    start within that one second. This assumes the sender's clock is not ahead of the Pi's
    (the window already needs both on NTP): a sender d seconds ahead leaves its commands d
    seconds in which to be replayed after a restart.

    The start is kept as a monotonic age, not a wall-clock time: a clock stepped after the
    start (NTP at boot, a hand-set date) moves it along with every timestamp, so it neither
    refuses every command until the clock passes a wrong start time nor lets older ones in.
    """

    def __init__(self, ticks: Callable[[], float]) -> None:
        self._ticks = ticks
        self._started = ticks()

    def check(self, timestamp: int, now: float) -> None:
        """UnlockRefused when `timestamp` (Unix seconds) is before the start; `now` is the
        wall clock as it reads now."""
        started = now - (self._ticks() - self._started)
        if timestamp < math.floor(started):
            raise UnlockRefused(
                f"timestamp {timestamp} is before this hub started: a command made before a "
                "hub restart is never accepted after it (send a new one)"
            )


class ReplayGuard:
    """The time and replay checks of both verifiers (UnlockVerifier's signed commands,
    edge_app.hub.code.CodeVerifier's lock-card codes), in one place so that they cannot drift
    apart: the window around the wall clock, the hub's start (HubStart), and a bounded cache
    of the commands accepted, which refuses a second use and, full, every fresh command.

    Two clocks. A command's timestamp is wall time, checked against `clock`. Every duration
    runs on the monotonic `ticks`: the start's age and each cached command's age, so a
    wall-clock step (NTP at boot on a Pi without a real-time clock, a hand-set date) cannot
    shorten a command's life in the cache. Aged on the wall clock (UnlockVerifier's was), a
    step forward then back forgot a command accepted seconds before, its timestamp inside
    the window again: a replay opened the door; and a step back kept a full cache "fresh",
    refusing every command, for the length of the step. A command is forgotten 2 windows
    after it was accepted: its timestamp was at most a window from the clock then, so, the
    clock not stepped, it is outside the window by the time it is forgotten. A step back of
    more than that would bring a forgotten command's timestamp inside the window again, so
    the latest timestamp forgotten is kept: a command signed at or before it is refused (a
    replay, or signed on a clock that was ahead), until the clock passes it. A test clock
    given alone drives both.
    """

    def __init__(
        self,
        window: float,
        *,
        clock: Callable[[], float] = time.time,
        ticks: Callable[[], float] | None = None,
    ) -> None:
        self.window = window
        self.clock = clock
        self.ticks = (
            ticks if ticks is not None else (time.monotonic if clock is time.time else clock)
        )
        self._start = HubStart(self.ticks)
        self._seen: dict[Hashable, tuple[float, int]] = {}  # key: (accepted at, timestamp)
        self._forgotten = -1  # the latest timestamp of a command forgotten, -1: none yet
        self._lock = threading.Lock()

    def check_time(self, timestamp: int) -> None:
        """UnlockRefused when `timestamp` is outside the window or before the hub started."""
        wall = self.clock()
        check_window(timestamp, wall, self.window)
        self._start.check(timestamp, wall)

    def admit(self, key: Hashable, timestamp: int, what: str) -> None:
        """Remember the command `key`, signed at `timestamp`; UnlockRefused when it was
        accepted already (`what` names the key in the message), when it is not newer than a
        command already forgotten, or when the cache is full."""
        with self.admitting(key, timestamp, what):
            pass

    @contextlib.contextmanager
    def admitting(self, key: Hashable, timestamp: int, what: str) -> Iterator[None]:
        """admit(), with the body between the replay checks and remembering the key, under
        the guard's lock: a check that refuses there (a wrong code) leaves the key unused,
        and two copies of one command cannot both get past it."""
        with self._lock:
            now = self.ticks()
            for old in [k for k, (seen, _) in self._seen.items() if now - seen > 2 * self.window]:
                self._forgotten = max(self._forgotten, self._seen.pop(old)[1])
            if key in self._seen:
                raise UnlockRefused(f"replayed command ({what} already used)")
            if timestamp <= self._forgotten:
                raise UnlockRefused(
                    f"timestamp {timestamp} is not after {self._forgotten}, a command's "
                    "that was accepted and has been forgotten since: a replay, or the clock "
                    "stepped back (check both clocks)"
                )
            if len(self._seen) >= REPLAY_CACHE:
                raise UnlockRefused("too many unlock commands in the time window")
            yield
            self._seen[key] = (now, timestamp)


class UnlockVerifier:
    """Checks commands in a fixed order: shape, signature, then time window, then whether it
    was signed before this verifier was made (HubStart), then replay."""

    def __init__(
        self,
        key: str,
        door_id: str,
        window: float,
        *,
        clock: Callable[[], float] = time.time,
        ticks: Callable[[], float] | None = None,
    ) -> None:
        """window: [mqtt] unlock_window_seconds; clock, ticks: as ReplayGuard's."""
        self._key = key.encode()
        self.door_id = door_id
        self._guard = ReplayGuard(window, clock=clock, ticks=ticks)

    def verify(self, payload: bytes) -> str:
        """The command's origin when it may open the door; else UnlockRefused."""
        command = command_object(payload, _FIELDS)
        ts, nonce, origin, sig = (command[k] for k in ("ts", "nonce", "origin", "sig"))
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise UnlockRefused("ts must be an integer (Unix seconds)")
        if not isinstance(nonce, str) or not _NONCE.match(nonce):
            raise UnlockRefused("nonce must be 16-64 characters of A-Z a-z 0-9 _ -")
        problem = origin_problem(origin)
        if problem is not None:
            raise UnlockRefused(problem)
        if not isinstance(sig, str) or not _SIG.match(sig):
            raise UnlockRefused("sig must be 64 lowercase hex digits")
        expected = hmac.new(
            self._key, unlock_message(self.door_id, ts, nonce, origin), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, sig):
            raise UnlockRefused("bad signature")
        self._guard.check_time(ts)
        self._guard.admit(nonce, ts, "nonce")
        return origin
