"""Unlock by code: what Home Assistant's MQTT lock card sends, checked against a stored hash.

Home Assistant's templates cannot compute an HMAC, but its MQTT lock can ask the user for a
code and render it, with the action and a timestamp, into the command (see
docs/HOME_ASSISTANT.md). A command is the JSON object

    {"action": "UNLOCK" | "OPEN" | "LOCK", "code": "<digits>", "timestamp": <Unix seconds>}

and opens the door only when, in this order: it is well formed; its timestamp is inside the
window (the same `unlock_window_seconds` as signed commands); it was not made before this
hub started (signing.HubStart: the replay cache is kept in memory only); remote unlock is not
locked out after repeated wrong codes; the same timestamp and code were not already accepted
(an exact replay); and the code matches the scrypt hash in `[mqtt] unlock_code_file`, compared in
constant time. Shape, window, lock-out and replay are checked before the hash is computed,
so a flood of commands costs a JSON parse each, not an scrypt each.

The hash file holds one line, `scrypt$N$r$p$<salt>$<hash>` (unpadded base64), mode 0600,
written atomically by `edge-app hub unlock-code`.

The lock-out outlives the hub: a restart (a crash, or one an attacker provokes: systemd
restarts the hub within seconds) must not give a guesser a clean slate. So the streak of
wrong codes since the last right one, the wall-clock time of the last, and the wall-clock
end of a running lock-out and its reason are kept in a JSON file beside the code file
(lockout_path: the code file's name + `.lockout`), mode 0600, written atomically at each
wrong code and at the right code that ends a streak; never the code, nor anything computed
from it; with which code it counted (code_id), so a count for an earlier code starts over.
The hub reads it when it starts, and refuses to start when the file is not one it wrote
(LockoutFileError): removing the file starts the count over. A folder the hub may not
write (the code file under /etc with ProtectSystem=strict) leaves the counts in memory only,
said once in the log. The wrong codes inside the last FAILURE_WINDOW are counted in memory
only: the streak, which is kept, locks out each wrong code past MAX_WRONG whatever their
pace, so a restart spares a guesser at most one LOCKOUT.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_app import untrusted_json
from edge_app.errors import UserError, shown_value
from edge_app.hub.signing import ReplayGuard, UnlockRefused, command_object
from edge_app.paths import DEFAULT_STATE_DIR
from edge_app.private_file import (
    NotRegularFileError,
    read_private,
    refuse_non_regular,
    write_private_text,
    write_secret_line,
)
from edge_app.secret_hash import CostRefused, HashFormatError, ScryptHash

log = logging.getLogger(__name__)

CODE_KEY = "mqtt.unlock_code_file"
CODE_MIN, CODE_MAX = 6, 12
# Home Assistant checks the code against this before sending; the hub checks it again.
CODE_FORMAT = rf"^\d{{{CODE_MIN},{CODE_MAX}}}$"
_CODE = re.compile(CODE_FORMAT, re.ASCII)

UNLOCK, OPEN, LOCK = "UNLOCK", "OPEN", "LOCK"
ACTIONS = (UNLOCK, OPEN, LOCK)
_FIELDS = {"action", "code", "timestamp"}

# Wrong codes: this many inside FAILURE_WINDOW seconds lock remote unlock out for LOCKOUT.
MAX_WRONG = 5
FAILURE_WINDOW = 60.0
LOCKOUT = 60.0
# Past MAX_WRONG wrong codes since the last right one, however paced, each further wrong
# code locks out for LOCKOUT, then twice as long as the last time, up to LOCKOUT_MAX: a
# guesser who spaces tries to stay under the window's rule is left one try an hour. The
# streak ends at a right code, or once STREAK_FORGOTTEN passes without a wrong one.
LOCKOUT_MAX = 3600.0
STREAK_FORGOTTEN = 86400.0
# The lock-out file: beside the code file, named after it (lockout_path).
LOCKOUT_SUFFIX = ".lockout"
# Its reason words ("8 wrong codes since the last right one"): longer is not a file we wrote.
REASON_MAX_CHARS = 200
CODE_ID_CHARS = 16  # hex digits of code_id
_CODE_ID = re.compile(rf"(?:[0-9a-f]{{{CODE_ID_CHARS}}})?", re.ASCII)


class CodeFileError(UserError):
    """The unlock code file is missing, readable by others, or not a hash we wrote."""


class LockoutFileError(CodeFileError):
    """The lock-out file beside the code file is not one the hub wrote, or cannot be read."""


class WrongCode(UnlockRefused):
    """A well-formed, fresh command whose code is wrong: a guess. The lock-outs keep these few
    (MAX_WRONG, then one per lock-out), so each is said, whatever else is refused meanwhile."""


def check_new_code(code: str) -> str:
    if not _CODE.fullmatch(code):
        raise UserError(
            f"the unlock code must be {CODE_MIN} to {CODE_MAX} digits (Home Assistant's lock "
            "card asks for it on a keypad); nothing changed"
        )
    return code


class CodeHash(ScryptHash):
    """The unlock code's scrypt hash (edge_app.secret_hash), refusals naming the code file."""

    @classmethod
    def of(cls, code: str) -> CodeHash:
        stored = ScryptHash.of(check_new_code(code))
        return cls(stored.n, stored.r, stored.p, stored.salt, stored.digest)

    @classmethod
    def parse(cls, text: str, where: str = CODE_KEY) -> CodeHash:
        """The hash in a file's line; CodeFileError naming `where` when it is not one."""
        redo = f"set the code again with `edge-app hub unlock-code` ({where})"
        try:
            stored = ScryptHash.parse(text)
        except CostRefused as error:
            raise CodeFileError(f"{where}: {error}; {redo}") from None
        except HashFormatError:
            raise CodeFileError(f"{where}: does not hold an unlock code hash; {redo}") from None
        return cls(stored.n, stored.r, stored.p, stored.salt, stored.digest)

    def matches(self, code: str) -> bool:
        """Constant-time comparison of the code's scrypt hash with the stored one."""
        return bool(_CODE.fullmatch(code)) and super().matches(code)


def read_code_file(path: Path) -> CodeHash:
    """The stored hash; refused when the file is missing, not regular, or others can read it."""
    path = Path(path)
    make = f"make it with `edge-app hub unlock-code` (writes {path}, mode 0600)"
    try:
        text = read_private(
            path, CODE_KEY, error=CodeFileError, fix=", or set the code again", hint=f"; {make}"
        ).decode("ascii")
    except FileNotFoundError:
        raise CodeFileError(f"{CODE_KEY}: {path} does not exist; {make}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CodeFileError(f"{CODE_KEY}: cannot read {path} ({error})") from None
    return CodeHash.parse(text, f"{CODE_KEY}: {path}")


def write_code_file(path: Path, code: str) -> None:
    """Hash the code and store it: a 0600 file that appears complete or not at all (its
    folder made 0700 when missing, as the web password's: private_file.write_secret_line)."""
    write_secret_line(path, CodeHash.of(code).line(), CODE_KEY, error=CodeFileError)


def lockout_path(code_file: Path) -> Path:
    """The lock-out file of the code in `code_file`: beside it, so it lives wherever the code
    does (in the hub's state folder, as the docs say to put the code file)."""
    code_file = Path(code_file)
    return code_file.with_name(code_file.name + LOCKOUT_SUFFIX)


@dataclasses.dataclass(frozen=True)
class LockoutState:
    """What the lock-out file holds, times in wall-clock Unix seconds (0: none): the wrong
    codes since the last right one, when the last came, when the running lock-out ends and
    what started it (given exactly when a lock-out runs), and which code they were guesses
    at (code_id: a new code starts the count over, whichever hub wrote the file last)."""

    streak: int = 0
    last_wrong: float = 0.0
    locked_until: float = 0.0
    after: str = ""
    code: str = ""  # code_id of the code the count is for; "" for none

    def text(self) -> str:
        return json.dumps(dataclasses.asdict(self)) + "\n"  # ASCII: json escapes the rest

    @classmethod
    def of(cls, data: Any) -> LockoutState:
        """The state in a parsed file; ValueError saying what is wrong with it."""
        fields = {field.name for field in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) != fields:
            raise ValueError(f"not a JSON object with exactly {sorted(fields)}")
        streak, after = data["streak"], data["after"]
        if not _whole(streak) or streak < 0:
            raise ValueError(f"streak {shown_value(streak)} is not a count")
        for name in ("last_wrong", "locked_until"):
            if not _number(data[name]) or data[name] < 0:
                raise ValueError(f"{name} {shown_value(data[name])} is not Unix seconds")
        if not isinstance(after, str) or len(after) > REASON_MAX_CHARS or not after.isprintable():
            raise ValueError(f"after {shown_value(after)} is not a reason the hub gives")
        if bool(after) != bool(data["locked_until"]):
            raise ValueError("after and locked_until must be given together")
        code = data["code"]
        if not isinstance(code, str) or not _CODE_ID.fullmatch(code):
            raise ValueError(f"code {shown_value(code)} is not a code's id")
        return cls(streak, float(data["last_wrong"]), float(data["locked_until"]), after, code)


def code_id(stored: CodeHash) -> str:
    """Which code a count of wrong codes is for: a digest of its hash's random salt, new at
    each `edge-app hub unlock-code`; nothing computed from the code itself."""
    return hashlib.sha256(stored.salt).hexdigest()[:CODE_ID_CHARS]


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return _whole(value) or isinstance(value, float)


def read_lockout_file(path: Path) -> LockoutState | None:
    """The state stored at `path`, None when there is no file. LockoutFileError when what is
    there is not a private regular file (a symbolic link is not followed) of valid state, or
    cannot be read: the hub then fails secure, refusing to start, rather than count from 0."""
    path = Path(path)
    remove = f"remove {path} (as the service user) to start the wrong-code count over"
    try:
        refuse_non_regular(path)
        data = read_private(
            path, CODE_KEY, error=LockoutFileError, fix=f", or {remove}", hint=f"; {remove}"
        )
    except FileNotFoundError:
        return None
    except NotRegularFileError as refused:
        raise LockoutFileError(f"{CODE_KEY}: {path}: {refused.strerror}; {remove}") from None
    except OSError as error:
        raise LockoutFileError(
            f"{CODE_KEY}: cannot read {path} ({error.strerror or error}); {remove}"
        ) from None
    try:
        return LockoutState.of(untrusted_json.loads(data))
    except ValueError as error:  # BadJSON is one
        raise LockoutFileError(
            f"{CODE_KEY}: {path} is not a lock-out file the hub wrote ({error}); {remove}"
        ) from None


def forget_lockout(code_file: Path) -> bool:
    """Remove the lock-out file of the code in `code_file` (a new code was just set: the
    wrong codes counted were guesses at the old one); whether there was one. Only the
    service user, who may remove the file anyway, sets a code, so this hands a guesser
    nothing."""
    try:
        lockout_path(code_file).unlink()  # a symbolic link itself, never what it names
    except FileNotFoundError:
        return False
    return True


def write_lockout_file(path: Path, state: LockoutState) -> None:
    """Store `state` atomically with mode 0600; OSError when it cannot be."""
    write_private_text(path, lambda handle: handle.write(state.text()), encoding="ascii")


def _streak_forgotten(age: float) -> bool:
    """Whether a streak whose last wrong code is `age` seconds old is over."""
    return age > STREAK_FORGOTTEN


def _streak_lockout(streak: int) -> float:
    """The lock-out the `streak`-th wrong code since the last right one starts by the streak
    alone (0 up to MAX_WRONG): LOCKOUT doubled at each one past MAX_WRONG, up to LOCKOUT_MAX."""
    beyond = streak - MAX_WRONG
    return min(LOCKOUT * 2.0 ** min(beyond - 1, 16), LOCKOUT_MAX) if beyond > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class LockCommand:
    action: str  # UNLOCK, OPEN or LOCK
    timestamp: int


class CodeVerifier:
    """Checks lock-card commands: shape, window, lock-out, replay, then the code (scrypt).

    Only UNLOCK and OPEN are checked beyond their shape: LOCK moves nothing (the strike
    relocks by itself after its pulse), so it needs no code and counts nothing.
    """

    def __init__(
        self,
        stored: CodeHash,
        # Callers pass [mqtt] unlock_window_seconds; None: the config's default.
        window: float | None = None,
        *,
        clock: Callable[[], float] = time.time,
        ticks: Callable[[], float] | None = None,
        state_file: Path | None = None,
    ) -> None:
        """clock, ticks: as ReplayGuard's. The lock-out and the wrong-code window run on
        the guard's monotonic ticks too: a wall-clock step (NTP at boot, a hand-set date)
        must neither end a lock-out early nor stretch it by the size of the step.

        state_file: the lock-out file (lockout_path), read here (LockoutFileError when it is
        not ours) and written as codes are counted; None keeps the counts in memory only."""
        if window is None:
            from edge_app.config import MqttConfig  # here: `edge-app --help` reads this module

            window = MqttConfig.unlock_window_seconds
        self.stored = stored
        self._guard = ReplayGuard(window, clock=clock, ticks=ticks)
        self._wrong: deque[float] = deque()
        self._locked_until = 0.0
        self._locked_after = ""  # what started the lock-out, for its refusals
        self._streak = 0  # wrong codes since the last right one (STREAK_FORGOTTEN)
        self._last_wrong = float("-inf")
        # Replay cache keys: (timestamp, HMAC of the code under a key that lives only in this
        # process), so the cache never holds a code, nor a hash that could be attacked offline.
        self._replay_key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._state_file = state_file
        self._unsaved_said = False  # the warning that the file cannot be written: said once
        if state_file is not None:
            stored_state = read_lockout_file(state_file)
            if stored_state is not None:
                self._restore(stored_state)

    def _restore(self, state: LockoutState) -> None:
        """Carry a previous hub's streak and running lock-out over onto this one's ticks.
        The file holds wall-clock times (ticks start again at each boot), so a clock stepped
        since may shift them: a last wrong code in the future counts as just now, keeping
        the streak, and what is left of a lock-out is cut to the longest the stored streak
        gives (LOCKOUT, or more past MAX_WRONG), so a clock set back (a Pi without a real-time
        clock boots at a time saved before) cannot lengthen it past the lock-out it was."""
        if state.code != code_id(self.stored):
            if state.streak:
                log.info(
                    "%s: the lock-out file counted wrong codes for an earlier code; the count "
                    "starts over for this one",
                    CODE_KEY,
                )
            return
        wall, now = self._guard.clock(), self._guard.ticks()
        age = max(wall - state.last_wrong, 0.0)
        if state.streak and not _streak_forgotten(age):
            self._streak = state.streak
            self._last_wrong = now - age
        longest = max(LOCKOUT, _streak_lockout(state.streak))
        remaining = min(max(state.locked_until - wall, 0.0), longest)
        if remaining:
            self._locked_until = now + remaining
            self._locked_after = state.after
            log.warning(
                "remote unlock still locked out for %.0f s after %s (before the hub restarted)",
                remaining,
                state.after,
            )

    def _save(self, now: float) -> None:
        """Store the streak and any running lock-out (called under self._lock, `now` on the
        ticks). A file that cannot be written leaves the counts in memory, said once."""
        if self._state_file is None:
            return
        wall = self._guard.clock()
        left = self._locked_until - now
        state = LockoutState(
            streak=self._streak,
            last_wrong=wall - (now - self._last_wrong) if self._streak else 0.0,
            locked_until=wall + left if left > 0 else 0.0,
            after=self._locked_after if left > 0 else "",
            code=code_id(self.stored),
        )
        try:
            write_lockout_file(self._state_file, state)
        except OSError as error:
            if not self._unsaved_said:
                self._unsaved_said = True
                log.warning(
                    "%s: cannot write the lock-out file %s (%s): wrong codes are counted in "
                    "memory only, and a restart of the hub starts the count over; put "
                    "unlock_code_file in %s, the hub's state folder, so the count survives "
                    "restarts (said once)",
                    CODE_KEY,
                    self._state_file,
                    error.strerror or error,
                    DEFAULT_STATE_DIR,
                )

    def verify(self, payload: bytes) -> LockCommand:
        """The command when it may be carried out; else UnlockRefused saying why."""
        command, code = self._parse(payload)
        if command.action == LOCK:
            return command
        self._guard.check_time(command.timestamp)
        key = (command.timestamp, hmac.digest(self._replay_key, code.encode(), "sha256"))
        with self._lock:
            now = self._guard.ticks()
            if now < self._locked_until:
                raise UnlockRefused(
                    f"locked out after {self._locked_after}; refusing every code for "
                    f"{self._locked_until - now:.0f} s more"
                )
            # The code is checked inside: a wrong one leaves the timestamp and code unused.
            with self._guard.admitting(key, command.timestamp, "timestamp and code"):
                if not self.stored.matches(code):
                    count, lockout = self._count_wrong(now)
                    self._save(now)
                    extra = f"; locked out for {lockout:.0f} s" if lockout else ""
                    raise WrongCode(
                        f"wrong code ({count} of {MAX_WRONG} in {FAILURE_WINDOW:.0f} s{extra})"
                    )
            if self._streak:  # a right code ends the streak, on file too
                self._streak = 0
                self._save(now)
        return command

    def _count_wrong(self, now: float) -> tuple[int, float]:
        """Counts a wrong code: the number inside the window, and the lock-out it starts (0
        for none): LOCKOUT at MAX_WRONG in the window; past MAX_WRONG since the last right
        code, LOCKOUT doubled at each further one, up to LOCKOUT_MAX."""
        while self._wrong and now - self._wrong[0] > FAILURE_WINDOW:
            self._wrong.popleft()
        self._wrong.append(now)
        count = len(self._wrong)
        if _streak_forgotten(now - self._last_wrong):
            self._streak = 0
        self._streak += 1
        self._last_wrong = now
        lockout, after = 0.0, ""
        if count >= MAX_WRONG:
            self._wrong.clear()
            lockout, after = LOCKOUT, f"{MAX_WRONG} wrong codes in {FAILURE_WINDOW:.0f} s"
        growing = _streak_lockout(self._streak)
        if growing and growing >= lockout:
            lockout = growing
            after = f"{self._streak} wrong codes since the last right one"
        if lockout:
            self._locked_until = now + lockout
            self._locked_after = after
            log.warning("remote unlock locked out for %.0f s after %s", lockout, after)
        return count, lockout

    @staticmethod
    def _parse(payload: bytes) -> tuple[LockCommand, str]:
        data = command_object(payload, _FIELDS)
        action, code, timestamp = data["action"], data["code"], data["timestamp"]
        if action not in ACTIONS:
            raise UnlockRefused(f"action must be one of {', '.join(ACTIONS)}")
        if isinstance(timestamp, bool) or not isinstance(timestamp, int):
            raise UnlockRefused("timestamp must be an integer (Unix seconds)")
        if action != LOCK and (not isinstance(code, str) or not _CODE.fullmatch(code)):
            raise UnlockRefused(f"code must be {CODE_MIN} to {CODE_MAX} digits")
        return LockCommand(action, timestamp), code if isinstance(code, str) else ""
