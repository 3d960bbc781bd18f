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

import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge_app.errors import UserError
from edge_app.private_file import NotRegularFileError, read_private, write_private_text
from edge_app.secret_hash import HashFormatError, ScryptHash

log = logging.getLogger(__name__)

ADMIN = "admin"
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 1024

# Failed logins: per client address, and for the whole hub (a spread-out attack).
PER_ADDRESS_FAILURES = 5
GLOBAL_FAILURES = 30
FAILURE_WINDOW_S = 300.0
MAX_TRACKED_ADDRESSES = 10_000

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
    return password


def hash_password(password: str) -> str:
    """`scrypt$N$r$p$salt$hash` (edge_app.secret_hash)."""
    return ScryptHash.of(password).line()


def verify_password(password: str, stored: str) -> bool:
    """Constant-time comparison; False for a malformed stored hash (never an exception)."""
    try:
        return ScryptHash.parse(stored).matches(password[:PASSWORD_MAX_LENGTH])
    except ValueError:  # HashFormatError, or hashlib refusing the parameters
        return False


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
    except UnicodeDecodeError as error:
        raise PasswordError(f"web.password_file: cannot read {path} ({error})") from None
    try:
        ScryptHash.parse(text)
    except HashFormatError:
        raise PasswordError(
            f"web.password_file: {path} does not hold a password hash; "
            "set the password again with `edge-app hub passwd`"
        ) from None
    return text


def write_password_file(path: Path, password: str) -> None:
    """Hash and store the password: a 0600 file that appears complete or not at all."""
    path = Path(path)
    stored = hash_password(check_new_password(password))
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private_text(path, lambda handle: handle.write(stored + "\n"), encoding="ascii")
    except NotRegularFileError as error:
        raise PasswordError(f"web.password_file: {error}") from None
    except OSError as error:
        raise PasswordError(
            f"web.password_file: cannot write {path} ({error.strerror}); "
            "run as the hub's user (sudo -u edge-app) or set web.password_file"
        ) from None
    log.info("web password set file=%s", path)


class PasswordCheck:
    """Verifies passwords against the file, one scrypt at a time (bounded memory)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
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
        stored = read_password_hash(self.path)
        if stored is None:
            return False
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

    @property
    def logged_in(self) -> bool:
        return self.user is not None


class SessionStore:
    """Server-side sessions with idle and absolute expiry; bounded in number.

    When full, the least recently used anonymous session goes first, then the least recently
    used of all, so a flood of login-page visits cannot log the admin out.
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


@dataclass
class LoginLimiter:
    """Password attempts per client address and in total, in a sliding window.

    An attempt is counted when it starts, before the password is hashed (attempt()), so
    parallel requests cannot all pass the check while earlier hashes are still running: at
    most `per_address` checks per address and `overall` in total run per window, however
    many requests arrive at once. A right password gives its attempt back and forgets the
    address's failures (succeeded()); an attempt that never checked a password is given back
    alone (refund()).
    """

    per_address: int = PER_ADDRESS_FAILURES
    overall: int = GLOBAL_FAILURES
    window_s: float = FAILURE_WINDOW_S
    clock: Callable[[], float] = time.monotonic
    _by_address: dict[str, deque[float]] = field(default_factory=dict)
    _all: deque[tuple[float, str]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _prune(self, now: float) -> None:
        while self._all and now - self._all[0][0] > self.window_s:
            self._all.popleft()

    def attempt(self, address: str) -> str | None:
        """Count one password check for this address now, or say why not (and when to retry).

        None means the check may run: it already counts against both limits.
        """
        now = self.clock()
        with self._lock:
            self._prune(now)
            if len(self._all) >= self.overall:
                wait = self.window_s - (now - self._all[0][0])
                return f"too many failed logins on this door recently; try again in {wait:.0f} s"
            times = self._by_address.get(address)
            if times is not None:
                while times and now - times[0] > self.window_s:
                    times.popleft()
                if len(times) >= self.per_address:
                    wait = self.window_s - (now - times[0])
                    return f"too many failed logins from {address}; try again in {wait:.0f} s"
            self._track(address, now).append(now)
            self._all.append((now, address))
        return None

    def _track(self, address: str, now: float) -> deque[float]:
        """This address's attempts; the table of addresses stays bounded."""
        if address not in self._by_address and len(self._by_address) >= MAX_TRACKED_ADDRESSES:
            for key in [
                k for k, t in self._by_address.items() if not t or now - t[-1] > self.window_s
            ]:
                del self._by_address[key]
            if len(self._by_address) >= MAX_TRACKED_ADDRESSES:
                self._by_address.pop(next(iter(self._by_address)))
        return self._by_address.setdefault(address, deque())

    def refund(self, address: str) -> None:
        """This address's latest attempt checked no password: it no longer counts."""
        with self._lock:
            times = self._by_address.get(address)
            if times:
                times.pop()
            self._refund_overall(address)

    def succeeded(self, address: str) -> None:
        """The right password: its attempt and the address's failures no longer count."""
        with self._lock:
            self._by_address.pop(address, None)
            self._refund_overall(address)

    def _refund_overall(self, address: str) -> None:
        for index in range(len(self._all) - 1, -1, -1):
            if self._all[index][1] == address:
                del self._all[index]
                return


def same_token(expected: str, given: str | None) -> bool:
    """CSRF check: the session's token, compared in constant time."""
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())
