"""Who may use the web page: the admin password, server-side sessions, login rate limits.

The password is stored as an scrypt hash (Python's hashlib, no extra dependency) in a 0600
file written atomically. scrypt is memory-hard: each guess costs 32 MiB and tens of
milliseconds, and at most one hash is computed at a time, so a flood of logins can neither
exhaust the Pi's memory nor try passwords quickly; the rate limiter stops it long before.

Sessions are random ids (secrets.token_urlsafe, 256 bits) kept in the hub's memory: nothing
in the cookie can be forged or replayed after logout, and a hub restart logs everyone out.
Each session carries its own CSRF token. Sessions exist before login too (the login form
needs a CSRF token); logging in replaces the session id, so an id planted before login is
worthless after it. A logged-in session remembers the password hash it logged in against:
setting a new password (or removing it) ends every session at once (edge_app.web.app).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge_app.errors import UserError
from edge_app.private_file import read_private, write_secret_line
from edge_app.secret_hash import HashFormatError, ScryptHash

log = logging.getLogger(__name__)

ADMIN = "admin"
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 1024

# Password checks (LoginLimiter). Two counters see each check: its client address's and the
# door's (all addresses together: a spread-out attack). A counter allows its first checks at
# once (PER_ADDRESS_FAILURES, GLOBAL_FAILURES), then one at a time, each a backoff after the
# one before: 2, 4, 8, 16, 32 s, then every 60 s (BACKOFF_MAX_S). It starts over after
# QUIET_S without a check and, an address's (or device's), at the right password. So:
#   - failures, anyone's, never keep the owner from a check for more than 60 s: each counter
#     always has one coming. An attacker who shares the owner's address (the same proxy or
#     NAT) and keeps asking takes most of those checks, but not the owner's own ones below;
#   - an attacker gets at most 5 + 4 + 59 = 68 checks in any hour from one address (5 at once,
#     then at +2, +6, +14, +30 s, then every 60 s from +62 s to +3542 s) and 60 an hour kept
#     up; from addresses that never logged in, however many, at most 30 + 4 + 59 = 93 in any
#     hour together, 60 an hour kept up. Pausing gains nothing: starting over needs an hour
#     without a check, which costs the 59 checks that hour would have had.
# The owner's own checks: an address the right password came from (in the last
# TRUSTED_ADDRESS_S; the latest MAX_TRUSTED_ADDRESSES) is counted on its own only, so a
# flood from other addresses cannot spend the door's checks for it; the unlock form's check,
# from a logged-in session, is counted for that session only. A browser the right password
# came from gets a device cookie (trust_device(): a random id and its HMAC under a key that
# only this process knows; remembered for TRUSTED_ADDRESS_S, the MAX_TRUSTED_DEVICES used
# last, and forgotten when the hub restarts); a login check that presents it is counted for
# that device only, not for its address nor the door, so an attacker behind the owner's
# proxy or NAT cannot take the owner's checks: the owner's login runs at once. A forged,
# changed or forgotten cookie counts as none. Each own counter backs off as an address's
# does, so each gets at most 68 an hour (a stolen device cookie gives no more than an
# address).
PER_ADDRESS_FAILURES = 5
GLOBAL_FAILURES = 30
BACKOFF_FIRST_S = 2.0
BACKOFF_MAX_S = 60.0
QUIET_S = 3600.0
MAX_TRACKED_ADDRESSES = 10_000
MAX_TRUSTED_ADDRESSES = 32
MAX_TRUSTED_DEVICES = MAX_TRUSTED_ADDRESSES
TRUSTED_ADDRESS_S = 30 * 86400.0  # also a device's, and its cookie's Max-Age
DEVICE_COOKIE_MAX_CHARS = 200  # a longer cookie is not one of ours: refused before any HMAC

MAX_SESSIONS = 500
ANONYMOUS_IDLE_S = 15 * 60.0


class PasswordError(UserError):
    """The password file is missing, unreadable or not ours, or a new password is too weak."""


def check_new_password(password: str) -> str:
    if len(password) < PASSWORD_MIN_LENGTH:
        raise PasswordError(f"the password must have at least {PASSWORD_MIN_LENGTH} characters")
    if len(password) > PASSWORD_MAX_LENGTH:
        raise PasswordError(f"the password must have at most {PASSWORD_MAX_LENGTH} characters")
    if not password.isprintable():
        raise PasswordError("the password contains control characters")
    if not password.strip():
        raise PasswordError("the password is only spaces")
    return password


def hash_password(password: str) -> str:
    """`scrypt$N$r$p$salt$hash` (edge_app.secret_hash)."""
    return ScryptHash.of(password).line()


def verify_password(password: str, stored: str) -> bool:
    """Constant-time comparison; False for a malformed stored hash (never an exception), and
    for a password longer than any that can be set, unhashed: cut to that length, a
    password of exactly PASSWORD_MAX_LENGTH characters let in anything that began with it."""
    if len(password) > PASSWORD_MAX_LENGTH:
        return False
    try:
        return ScryptHash.parse(stored).matches(password)
    except ValueError:  # HashFormatError, or hashlib refusing the parameters
        return False


def passwd_command(config_path: Path | None) -> str:
    """The command that sets the web page's password of the config at `config_path` (None:
    the default one), as the door's user, who owns the file it writes."""
    from edge_app.commands import as_door

    return as_door("hub passwd", config_path)


def read_password_hash(path: Path) -> str | None:
    """The stored hash, or None when no password was set yet.

    A file readable by others is refused rather than used: a leaked hash can be attacked
    offline, so the fix (chmod 600) must happen before the page is served.
    """
    path = Path(path)
    try:
        data = read_private(
            path,
            "web.password_file",
            error=PasswordError,
            fix=", or set the password again with `edge-app hub passwd`",
        )
        text = data.decode("ascii").strip()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise PasswordError(f"web.password_file: cannot read {path} ({error.strerror})") from None
    except UnicodeDecodeError:  # not the codec's words: they quote a byte of the file
        raise PasswordError(
            f"web.password_file: {path} is not ASCII text, so it holds no password hash; "
            "set the password again with `edge-app hub passwd`"
        ) from None
    try:
        ScryptHash.parse(text)
    except HashFormatError:
        raise PasswordError(
            f"web.password_file: {path} does not hold a password hash; "
            "set the password again with `edge-app hub passwd`"
        ) from None
    return text


def write_password_file(path: Path, password: str) -> None:
    """Hash and store the password: a 0600 file that appears complete or not at all (its
    folder made 0700 when missing, as the unlock code's: private_file.write_secret_line)."""
    stored = hash_password(check_new_password(password))
    write_secret_line(path, stored, "web.password_file", error=PasswordError)
    log.info("web password set file=%s", path)


class PasswordCheck:
    """Verifies passwords against the file, one scrypt at a time (bounded memory).
    config_path: the hub's config, named in the command that sets a password (None: the
    default one)."""

    def __init__(self, path: Path, config_path: Path | None = None) -> None:
        self.path = Path(path)
        self.config_path = config_path
        self._lock = threading.Lock()

    def is_set(self) -> bool:
        return read_password_hash(self.path) is not None

    def current_hash(self) -> str | None:
        """The stored hash now; None when no password is set or the file cannot be used."""
        try:
            return read_password_hash(self.path)
        except PasswordError:
            return None

    def verify(self, password: str) -> bool:
        """Whether `password` is the admin password; PasswordError, before any hash, when
        none is set or the file cannot be used: no password was checked, so no attempt
        should count against the rate limit."""
        stored = read_password_hash(self.path)
        if stored is None:
            raise PasswordError(
                f"No admin password is set yet: run `{passwd_command(self.config_path)}` on "
                "the door."
            )
        with self._lock:
            return verify_password(password, stored)


@dataclass
class Session:
    id: str
    csrf: str
    address: str
    created: float
    seen: float
    user: str | None = None
    password_hash: str | None = None  # the admin password's hash when this session logged in
    # The unlock page's single-use form token (edge_app.web.app), and the door's answer to
    # the last unlock, shown once by the page the unlock redirects to.
    unlock_form: str | None = None
    unlock_done: dict[str, object] | None = None

    @property
    def logged_in(self) -> bool:
        return self.user is not None


class SessionStore:
    """Server-side sessions with idle and absolute expiry; bounded in number.

    The web page makes one only at a login (the login form's token lives in the browser,
    edge_app.web.app.LOGIN_COOKIE), so visitors who never log in cannot fill it. A session
    without a user is still possible here; when full, the least recently used of those goes
    first, then the least recently used of all.
    """

    def __init__(
        self,
        idle_s: float,
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
        limit: int = MAX_SESSIONS,
    ) -> None:
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self.clock = clock
        self.limit = limit
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def _expired(self, session: Session, now: float) -> bool:
        idle = self.idle_s if session.logged_in else min(self.idle_s, ANONYMOUS_IDLE_S)
        return now - session.seen > idle or now - session.created > self.max_age_s

    def get(self, session_id: str | None, *, touch: bool = True) -> Session | None:
        """The live session with this id. touch=False (a request the open page makes by
        itself) leaves its idle time running."""
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            now = self.clock()
            if self._expired(session, now):
                del self._sessions[session_id]
                return None
            if touch:
                session.seen = now
                self._sessions.move_to_end(session_id)
            return session

    def create(
        self, address: str, user: str | None = None, password_hash: str | None = None
    ) -> Session:
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), address, now, now)
        session.user = user
        session.password_hash = password_hash
        with self._lock:
            self._evict(now)
            self._sessions[session.id] = session
        return session

    def login(
        self, previous: Session | None, user: str, address: str, password_hash: str | None = None
    ) -> Session:
        """A fresh id (and CSRF token) for the logged-in user; the previous id stops working."""
        if previous is not None:
            self.drop(previous.id)
        return self.create(address, user, password_hash)

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _evict(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[key]
        while len(self._sessions) >= self.limit:
            anonymous = next((k for k, s in self._sessions.items() if not s.logged_in), None)
            self._sessions.pop(anonymous or next(iter(self._sessions)))


def backoff_s(over: int) -> float:
    """The wait before a counter's next check when `over` checks were made past its free ones:
    2, 4, 8, 16, 32, then 60 s."""
    return min(BACKOFF_FIRST_S * 2.0 ** min(over, 32), BACKOFF_MAX_S)


def _seconds(wait: float) -> int:
    """A wait as the page says it: whole seconds, never "0 s"."""
    return max(1, math.ceil(wait))


@dataclass
class _Run:
    """One counter: the checks since it last started over, and when the latest one started."""

    checks: int = 0
    last: float = -math.inf


@dataclass
class LoginLimiter:
    """Admin password checks, counted per client address and for the whole door.

    A check is counted when it starts, before the password is hashed (attempt()), so parallel
    requests cannot all pass while earlier hashes still run: a counter past its free checks
    lets one through, and the next only a backoff later, however many arrive at once. Once
    past them a counter still allows a check every backoff_s() (at most BACKOFF_MAX_S), so
    failures, the owner's or an attacker's, never leave a counter without a check coming
    within that; the figures per hour are above PER_ADDRESS_FAILURES. A right password gives
    its check back, clears its own counter and trusts the address (succeeded()); a check
    that never verified a password is given back alone (refund()). A check with `session`
    (the unlock form, from a logged-in session) is counted for that session only, one with
    `device` (a login from a browser that presented a valid device cookie: device()) for
    that device only.
    """

    per_address: int = PER_ADDRESS_FAILURES
    overall: int = GLOBAL_FAILURES
    quiet_s: float = QUIET_S
    clock: Callable[[], float] = time.monotonic
    _runs: OrderedDict[str, _Run] = field(default_factory=OrderedDict)
    _door: _Run = field(default_factory=_Run)
    _trusted: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _devices: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _device_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    # The admin password's hash the trusted addresses and devices proved (password_is()).
    _password: str | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def password_is(self, password_hash: str | None) -> None:
        """The admin password's hash now (None: unknown, nothing changes). A new password
        forgets every address and device trusted with the one before: they proved a
        password that may have leaked (why it was changed), and kept counters of their own,
        outside the door's, for TRUSTED_ADDRESS_S after it was replaced."""
        if password_hash is None:
            return
        with self._lock:
            if password_hash == self._password:
                return
            if self._password is not None:
                self._trusted.clear()
                for device in list(self._devices):
                    self._forget(device)
            self._password = password_hash

    def attempt(
        self, address: str, session: str | None = None, *, device: str | None = None
    ) -> str | None:
        """Count one password check now, or say why not and how long to wait (one line).

        None means the check may run: it already counts.
        """
        now = self.clock()
        with self._lock:
            key, whom, door = self._counters(address, session, device, now)
            run = self._runs.get(key) or _Run()
            wait = self._wait(run, self.per_address, now)
            door_wait = self._wait(self._door, self.overall, now) if door else 0.0
            if door_wait > 0 and door_wait >= wait:
                return (
                    "too many failed logins on this door recently; "
                    f"try again in {_seconds(door_wait)} s"
                )
            if wait > 0:
                return f"too many {whom}; try again in {_seconds(wait)} s"
            self._count(run, now)
            self._keep(key, run)
            if door:
                self._count(self._door, now)
        return None

    def refund(
        self, address: str, session: str | None = None, *, device: str | None = None
    ) -> None:
        """The latest check of this address (or session, or device) verified no password: it
        no longer counts (its start still spaces the next one)."""
        with self._lock:
            key, _, door = self._counters(address, session, device, self.clock())
            run = self._runs.get(key)
            if run is not None and run.checks:
                run.checks -= 1
            if door and self._door.checks:
                self._door.checks -= 1

    def succeeded(
        self, address: str, session: str | None = None, *, device: str | None = None
    ) -> None:
        """The right password: its check and its own counter's failures (the address's, the
        session's or the device's) no longer count, and the address is trusted (its checks no
        longer count for the door). A device's login leaves the address's counter alone: it
        was not spent, and others behind that address get no checks back."""
        now = self.clock()
        with self._lock:
            key, _, door = self._counters(address, session, device, now)
            self._runs.pop(key, None)
            if door and self._door.checks:
                self._door.checks -= 1
            if session is None:
                self._trusted.pop(address, None)
                self._trusted[address] = now
                while len(self._trusted) > MAX_TRUSTED_ADDRESSES:
                    self._trusted.popitem(last=False)

    def device(self, cookie: str | None) -> str | None:
        """The device a device cookie names, or None for a cookie that is absent, not made by
        this process (forged, changed, from before a restart) or of a device forgotten since
        (after TRUSTED_ADDRESS_S, or pushed out by MAX_TRUSTED_DEVICES used more recently)."""
        if not cookie or len(cookie) > DEVICE_COOKIE_MAX_CHARS:
            return None
        device, _, tag = cookie.partition(".")
        if not device or not hmac.compare_digest(self._tag(device), tag.encode()):
            return None
        with self._lock:
            trusted = self._devices.get(device)
            if trusted is None:
                return None
            if self.clock() - trusted > TRUSTED_ADDRESS_S:
                self._forget(device)
                return None
            self._devices.move_to_end(device)
        return device

    def trust_device(self, previous: str | None = None) -> str:
        """A new device after a right password: the value of its cookie. The browser's
        `previous` device, if any, is forgotten (a copy of its old cookie stops counting)."""
        device = secrets.token_urlsafe(32)
        with self._lock:
            if previous is not None:
                self._forget(previous)
            self._devices[device] = self.clock()
            while len(self._devices) > MAX_TRUSTED_DEVICES:
                self._forget(next(iter(self._devices)))
        return f"{device}.{self._tag(device).decode()}"

    def _tag(self, device: str) -> bytes:
        digest = hmac.new(self._device_key, device.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=")

    def _forget(self, device: str) -> None:
        self._devices.pop(device, None)
        self._runs.pop(_device_counter(device), None)

    def _counters(
        self, address: str, session: str | None, device: str | None, now: float
    ) -> tuple[str, str, bool]:
        """(this check's own counter, who it is in a refusal, whether the door counts it)."""
        if session is not None:
            return "session " + session, "wrong passwords in this session", False
        if device is not None:
            return _device_counter(device), "wrong passwords from this browser", False
        trusted = self._trusted.get(address)
        door = trusted is None or now - trusted > TRUSTED_ADDRESS_S
        return address, f"failed logins from {address}", door

    def _wait(self, run: _Run, free: int, now: float) -> float:
        if now - run.last > self.quiet_s or run.checks < free:
            return 0.0
        return run.last + backoff_s(run.checks - free) - now

    def _count(self, run: _Run, now: float) -> None:
        if now - run.last > self.quiet_s:
            run.checks = 0  # quiet long enough: the counter starts over
        run.checks += 1
        run.last = now

    def _keep(self, key: str, run: _Run) -> None:
        """Store the counter as the most recently used; the table stays bounded (the least
        recently used goes first; the door's counter still bounds what that gives back)."""
        if key in self._runs:
            self._runs.move_to_end(key)
            return
        while len(self._runs) >= MAX_TRACKED_ADDRESSES:
            self._runs.popitem(last=False)
        self._runs[key] = run


def _device_counter(device: str) -> str:
    return "device " + device


def same_token(expected: str, given: str | None) -> bool:
    """CSRF check: the session's token, compared in constant time."""
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())
