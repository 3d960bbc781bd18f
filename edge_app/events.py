"""What the door saw and did: one record per decision, written to every sink at once.

Sinks: a key=value log line (journald keeps it with the service's other logs), a row in an
SQLite events table (queryable history: "who came in last Tuesday"), optionally a JSON line
per event (`--events FILE`, "-" for standard output, which is what the demo prints), and
optionally a JPEG crop of the face, kept to a bounded number of files.

The events live in their own SQLite file rather than in the gallery: the gallery holds
biometric templates that are exported and moved between doors, while the event history is a
local audit log with its own retention, and a write-heavy log should not share a file (and a
WAL) with the templates the daemon must always be able to read.

An audit sink that fails (disk full, read-only file, corrupt or locked database) never stops
the door: record() does not raise for I/O. The failure is logged (rate-limited), counted
(metrics_line), the unwritten events wait in a bounded buffer per sink, and the sink is
reopened and retried with a backoff; the buffer drops its oldest events when full.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import math
import operator
import os
import re
import sqlite3
import stat
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from edge_app.config import EventsConfig
from edge_app.gallery import name_key
from edge_app.logs import Throttle
from edge_app.policy import DENIED, RECOGNIZED, SPOOF, TOOK_PLACE, UNKNOWN, UNLOCK
from edge_app.private_file import (
    FILE_MODE,
    NotRegularFileError,
    link_new,
    make_private_folder,
    refuse_non_regular,
    sweep_temporaries,
    temporary_pattern,
)
from edge_app.sqlite_access import Kind, narrow_to_private, refuse_open_folder, refuse_unsafe
from edge_app.sqlite_files import (
    connect_read_only,
    empty_wal,
    missing_columns,
    zero_deletions,
)
from edge_app.wall_clock import EARLIEST_TIME, SET_THE_CLOCK, UNSET_CLOCK, WallClock

log = logging.getLogger(__name__)

RELOCK = "relock"
TYPES = (RECOGNIZED, UNKNOWN, UNLOCK, DENIED, RELOCK, SPOOF)

# Schema changes go through MIGRATIONS and `PRAGMA user_version`, as in the gallery: entry i
# takes the file from version i to i + 1. Version 1 says IF NOT EXISTS so an events.db made
# before it was versioned (the same table, user_version 0) is adopted as it is.
SCHEMA_V1 = (
    """CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        type TEXT NOT NULL,
        name TEXT,
        score REAL,
        track INTEGER,
        reason TEXT,
        snapshot TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS events_by_time ON events(time)",
)
# Version 2: the liveness score and the geometry (parallax) reading of unlock/spoof events.
SCHEMA_V2 = (
    "ALTER TABLE events ADD COLUMN liveness REAL",
    "ALTER TABLE events ADD COLUMN geometry TEXT",
)
MIGRATIONS: tuple[tuple[str, ...], ...] = (SCHEMA_V1, SCHEMA_V2)
SCHEMA_VERSION = len(MIGRATIONS)

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# The only files snapshot pruning and retention may delete: names this module writes
# (UTC time, event type, sanitised name, track). A user's own photos in the folder stay.
# ..._t<track>.jpg, or _t<track>-<n>.jpg when that name was taken (a clock stepped back).
_SNAPSHOT = (
    r"(\d{8}T\d{6}\.\d{3})Z_(?:"
    + "|".join(TYPES)
    + r")_(?P<label>[A-Za-z0-9_.-]{0,60})_t\d+(?:-\d)?\.jpg"
)
SNAPSHOT_NAME = re.compile("^" + _SNAPSHOT + r"\Z")
# A snapshot being written: its temporary name (_write_snapshot). One a killed door left
# behind is removed when the folder is next listed (at start and by the daily retention).
SNAPSHOT_TEMPORARY = temporary_pattern(_SNAPSHOT)
_STAMP = "%Y%m%dT%H%M%S.%f"
DB_BUSY_SECONDS = 0.5  # a locked events.db may stall the frame loop this long, not more
PENDING_MAX = 1000  # unwritten events kept per failing sink; the oldest go first
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0
LOG_EVERY_SECONDS = 300.0  # a failing sink is logged once, then at most this often
RETENTION_EVERY_SECONDS = 86400.0
# A retention that waited for the wall clock to be set looks again this much later.
RETENTION_CLOCK_RETRY_SECONDS = 3600.0
# Characters kept of an event's text field (name, reason, geometry). Real ones are far
# shorter (a name is at most 100, a remote unlock's reason and origin 200 each); the cap keeps
# one odd value from being written, buffered and logged megabytes at a time.
EVENT_TEXT_MAX = 1000


@dataclass(frozen=True)
class Event:
    """time: Unix seconds. score: the match score of the face to `name` (recognized,
    unlock, denied, spoof) or to the closest person (unknown), on the cosine scale
    (cohort-normalised when the models ship a cohort: then above 1 for very strong matches;
    docs/COHORT.md). source_time: seconds on the
    camera source's clock (clip time for a video file). reason: why a denied, spoof or relock
    happened. liveness: mean liveness score of the track's last frames (unlock, spoof; None
    when the check is off). geometry: the track's parallax reading, "abstain", "flat" or
    "depth" (report only; docs/LIVENESS.md)."""

    time: float
    type: str
    name: str | None = None
    score: float | None = None
    track: int | None = None
    source_time: float | None = None
    reason: str | None = None
    snapshot: str | None = None
    liveness: float | None = None
    geometry: str | None = None

    def to_json(self) -> str:
        data = asdict(self)
        data["time"] = datetime.fromtimestamp(self.time, UTC).isoformat(timespec="milliseconds")
        if self.score is not None:
            data["score"] = round(self.score, 4)
        if self.source_time is not None:
            data["source_time"] = round(self.source_time, 3)
        if self.liveness is not None:
            data["liveness"] = round(self.liveness, 4)
        return json.dumps(data, ensure_ascii=False)


def _field(value: object) -> str:
    """key=value friendly: quote strings with spaces or quotes, fixed precision for floats."""
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if re.search(r'[\s"=]', text) else text


def _text(value: object) -> str | None:
    """An event's text as every sink can hold it: printable (a control character, line
    break or lone surrogate becomes U+FFFD, so no log or JSON line can be forged or broken)
    and at most EVENT_TEXT_MAX characters (longer: cut, ending in an ellipsis)."""
    if value is None:
        return None
    text = str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else "\ufffd" for c in text)
    return text if len(text) <= EVENT_TEXT_MAX else text[: EVENT_TEXT_MAX - 1] + "\u2026"


def _number(value: float | None) -> float | None:
    """A float, or None for none or for one that is not finite (JSON has no NaN)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class _Sink:
    """One audit destination that may fail: its buffer of unwritten events and its retry state."""

    def __init__(self, name: str, target: str) -> None:
        self.name = name
        self.target = target
        self.pending: deque[Event] = deque(maxlen=PENDING_MAX)
        self.failing = False
        self.errors = 0
        self.dropped = 0
        self.retry_at = 0.0
        self._backoff = RETRY_FIRST_SECONDS
        self._throttle = Throttle(LOG_EVERY_SECONDS)

    def open(self) -> None:
        """(Re)open the destination; raise OSError or sqlite3.Error when it cannot be used."""

    def write(self, events: list[Event]) -> None:
        """Write the events, all or (for a stream) as many as fit; raise on failure."""

    def close(self) -> None:
        """Release the destination; never raises."""

    def deliver(self, event: Event, now: float) -> None:
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1
        self.pending.append(event)
        self.flush(now)

    def flush(self, now: float, *, force: bool = False) -> None:
        """Write what is pending, unless the sink is failing and not yet due for a retry."""
        if not self.pending or (self.failing and now < self.retry_at and not force):
            return
        try:
            if self.failing:
                self.close()
                self.open()
            self.write(list(self.pending))
        except (OSError, sqlite3.Error, ValueError) as error:
            self.errors += 1
            self.retry_at = now + self._backoff
            self._backoff = min(self._backoff * 2, RETRY_MAX_SECONDS)
            self.failing = True
            self._report(now, error)
            return
        self.pending.clear()
        if self.failing:
            log.warning(
                "events sink recovered sink=%s target=%s errors=%d dropped=%d",
                self.name,
                self.target,
                self.errors,
                self.dropped,
            )
        self.failing = False
        self._backoff = RETRY_FIRST_SECONDS

    def fail(self, now: float, error: BaseException) -> None:
        """The sink could not even be opened: fail now, retry later."""
        self.errors += 1
        self.failing = True
        self.retry_at = now + self._backoff
        self._report(now, error)

    def _report(self, now: float, error: BaseException) -> None:
        suppressed = self._throttle.due(now)
        if suppressed is None:
            return
        log.error(
            "events sink failed sink=%s target=%s error=%r pending=%d dropped=%d "
            "retry_in=%.0fs suppressed=%d; the door keeps working",
            self.name,
            self.target,
            error,
            len(self.pending),
            self.dropped,
            max(self.retry_at - now, 0.0),
            suppressed,
        )


class _DbSink(_Sink):
    def __init__(self, path: Path) -> None:
        super().__init__("db", str(path))
        self.path = Path(path)
        self.db: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None

    def open(self) -> None:
        self.db = _open_db(self.path)
        self._file = _identity(self.path)

    def write(self, events: list[Event]) -> None:
        if self.db is None:
            raise sqlite3.OperationalError("not open")
        # A file deleted or moved away while open would take every later event with it,
        # unseen by anyone: fail instead, and the retry opens (or makes) the file at the path.
        if _identity(self.path) != self._file:
            raise FileNotFoundError(errno.ENOENT, "deleted or moved away while open", self.target)
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO events (time, type, name, score, track, reason, snapshot, "
                "liveness, geometry) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        e.time,
                        e.type,
                        e.name,
                        e.score,
                        e.track,
                        e.reason,
                        e.snapshot,
                        e.liveness,
                        e.geometry,
                    )
                    for e in events
                ],
            )
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                # Into the file we opened, wherever it is now: a file moved away while open
                # keeps its events, which SQLite's own checkpoint at close would skip.
                self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
            self.db = None


# More than any event line (a few hundred bytes): the tail read to find a cut-short line.
MAX_CUT_LINE = 64 * 1024


class _JsonlSink(_Sink):
    """Appends with os.write on a raw descriptor: nothing hides in a userspace buffer. A
    line cut short by a full disk is written again whole once the file is reopened (the retry
    does: the piece is removed first, _end_the_last_line); a stream, never reopened, gets the
    rest of the line first on its next write."""

    def __init__(self, path: Path) -> None:
        super().__init__("jsonl", str(path))
        self.path = Path(path)
        self.fd: int | None = None
        self._carry = b""  # the rest of a line a failed write had started
        self._cut = b""  # that whole line (its event is no longer pending)

    def open(self) -> None:
        # Its folder made as the database's is: a missing one lost every event.
        make_private_folder(self.path.parent)
        self.fd = open_private_append(self.path)
        try:
            self._say_who_may_read(self.fd)
            self._end_the_last_line(self.fd)
        except OSError:
            self.close()
            raise
        if self._carry:  # its piece was just removed: the whole line goes again
            self._carry = self._cut

    def _say_who_may_read(self, fd: int) -> None:
        """An existing file keeps its mode (a log reader may have been given it on purpose),
        but one its group or others may read is said at every open: it holds who came in."""
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:
            log.warning(
                "events file %s is mode %o: others on this machine may read who came in and "
                "when; `chmod 600 %s` unless a log reader needs it",
                self.path,
                mode,
                self.path,
            )

    def _end_the_last_line(self, fd: int) -> None:
        """A file whose last line is cut short (a full disk, then the process ended with the
        rest of the line still to write) would have the next event glued to it: the piece is
        removed, or, longer than any event line, ended with a newline, and logged."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        tail = os.pread(fd, min(size, MAX_CUT_LINE), size - min(size, MAX_CUT_LINE))
        end = tail.rfind(b"\n")
        if end >= 0 or size <= MAX_CUT_LINE:
            keep = size - len(tail) + end + 1
            os.ftruncate(fd, keep)
            log.warning(
                "events file ended in a line cut short, removed path=%s bytes=%d",
                self.path,
                size - keep,
            )
        else:
            os.write(fd, b"\n")
            log.warning("events file ended in a line cut short, ended path=%s", self.path)

    def write(self, events: list[Event]) -> None:
        if self.fd is None:
            raise OSError(9, "not open")
        self._check_linked(self.fd)
        data = self._carry + "".join(e.to_json() + "\n" for e in events).encode("utf-8")
        written = 0
        try:
            while written < len(data):
                written += os.write(self.fd, data[written:])
        except OSError:
            # Whatever reached the file stays: the events whose lines are complete are done,
            # and a line cut short is finished (not repeated) by the next write.
            head = len(self._carry)
            if written < head:
                self._carry = self._carry[written:]
                raise
            done = data[head:written].count(b"\n")
            if written > head and data[written - 1 : written] != b"\n":
                end = data.index(b"\n", written) + 1
                self._carry = data[written:end]
                self._cut = data[data.rfind(b"\n", 0, written) + 1 : end]
                done += 1
            else:
                self._carry = self._cut = b""
            for _ in range(done):
                self.pending.popleft()
            raise
        self._carry = self._cut = b""

    def _check_linked(self, fd: int) -> None:
        """A file deleted while open (`rm events.jsonl`) would swallow every later line: fail,
        and the retry makes the file again."""
        if os.fstat(fd).st_nlink == 0:
            raise FileNotFoundError(errno.ENOENT, "deleted while open", self.target)

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


class _StdoutSink(_JsonlSink):
    """Standard output ("-"), written as the file is, on a copy of its descriptor: a write that
    fails leaves nothing behind in Python's buffer for the retry to print a second time."""

    def __init__(self) -> None:
        super().__init__(Path("-"))

    def open(self) -> None:
        try:
            fd = sys.stdout.fileno()
        except (AttributeError, ValueError) as error:  # None, or a stream without a descriptor
            raise OSError(
                errno.EBADF, f"standard output has no file descriptor: {error!r}"
            ) from None
        self.fd = os.dup(fd)

    def write(self, events: list[Event]) -> None:
        if sys.stdout is not None:  # what was printed before goes out first
            with contextlib.suppress(OSError, ValueError):
                sys.stdout.flush()
        super().write(events)

    def _check_linked(self, fd: int) -> None:
        pass  # a stream: whatever the shell redirected it to is the caller's choice


def open_private_append(path: Path) -> int:
    """An append descriptor; a file this creates is 0600 whatever the umask. An existing file
    keeps its owner's mode: we do not chmod files we did not create.

    Only a regular file is appended to: a symbolic link (followed, it would append to any
    file the service user may write), a named pipe (opening it would block the door until
    someone reads it) or a folder is refused with NotRegularFileError, an OSError.
    """
    # Read and write: the sink reads back the end of the file (_end_the_last_line).
    flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    refuse_non_regular(path)
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
        created = True
    except FileExistsError:
        fd = os.open(path, flags)
        created = False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # replaced since refuse_non_regular looked
            raise NotRegularFileError(errno.EEXIST, "it is not a regular file", str(path))
        me = os.geteuid()
        if not created and info.st_uid != me and me != 0:  # its owner reads every event
            raise PermissionError(
                errno.EPERM,
                f"it belongs to another user (uid {info.st_uid}), who could read or change the "
                f"events; set events.jsonl to a path of the door's user (uid {me})",
                str(path),
            )
        os.set_blocking(fd, True)
        if created:
            os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


class EventLog:
    """Thread-safe: the frame loop and the relay's timer thread (relock) both record.

    record() never raises for a failing sink (module docstring); call maintain() now and then
    (the daemon does, every frame) to retry failing sinks and apply the retention daily.
    """

    def __init__(
        self,
        db: Path | None = None,
        jsonl: Path | None = None,
        snapshots: Path | None = None,
        snapshot_keep: int = 200,
        retention_days: int = 0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        clock_trusted: Callable[[], bool] | None = None,
    ) -> None:
        """clock_trusted: whether the retention may judge age by `clock` now (the daemon
        passes its WallClock's; edge_app/wall_clock.py); by default, whether something set
        the system clock."""
        self._lock = threading.Lock()
        self._clock = clock
        self._monotonic = monotonic
        self._clock_trusted = clock_trusted if clock_trusted is not None else WallClock().trusted
        self.db_path = db
        self.snapshots = snapshots
        self.snapshot_keep = snapshot_keep
        self.retention_days = retention_days
        self.snapshot_errors = 0
        self._snapshot_throttle = Throttle(LOG_EVERY_SECONDS, monotonic)
        # The folder's snapshot names, oldest first: read from the folder once, then kept
        # in memory as this log writes and prunes (see _prune_snapshots); None: not read yet.
        self._kept: deque[str] | None = None
        self._next_retention = monotonic()
        self._sinks: list[_Sink] = []
        self._listeners: list[Callable[[Event], None]] = []
        if db is not None:
            self._db_sink: _DbSink | None = _DbSink(db)
            self._sinks.append(self._db_sink)
        else:
            self._db_sink = None
        if jsonl is not None:
            self._sinks.append(_StdoutSink() if str(jsonl) == "-" else _JsonlSink(jsonl))
        now = monotonic()
        for sink in self._sinks:
            try:
                sink.open()
            except (OSError, sqlite3.Error, ValueError) as error:
                sink.close()
                sink.fail(now, error)
        if snapshots is not None:
            self._prepare_snapshots()

    @classmethod
    def from_config(cls, events: EventsConfig, wall_clock: WallClock) -> EventLog:
        return cls(
            events.db,
            events.jsonl,
            events.snapshots,
            events.snapshot_keep,
            events.retention_days,
            clock_trusted=wall_clock.trusted,
        )

    # --- writing -------------------------------------------------------------------------

    def record(
        self,
        kind: str,
        *,
        name: str | None = None,
        score: float | None = None,
        track: int | None = None,
        source_time: float | None = None,
        reason: str | None = None,
        crop: np.ndarray | None = None,
        liveness: float | None = None,
        geometry: str | None = None,
    ) -> Event:
        """Write one event everywhere; `crop` (RGB) becomes a snapshot when those are on."""
        if kind not in TYPES:
            raise ValueError(f"unknown event type {kind!r}")
        # Every field is made one every sink can store (_text, _number) before any sink sees
        # the event: one a sink could never write would stay first in its buffer for good.
        name, reason, geometry = _text(name), _text(reason), _text(geometry)
        track = None if track is None else operator.index(track)
        with self._lock:
            now = self._clock()
            snapshot = None
            if crop is not None and self.snapshots is not None and crop.size:
                snapshot = self._snapshot(now, kind, name, track, crop)
            event = Event(
                now,
                kind,
                name,
                _number(score),
                track,
                _number(source_time),
                reason,
                snapshot,
                _number(liveness),
                geometry,
            )
            fields = {
                k: v
                for k, v in asdict(event).items()
                if v is not None and k not in ("time", "type")
            }
            log.info(
                "event type=%s %s", kind, " ".join(f"{k}={_field(v)}" for k, v in fields.items())
            )
            tick = self._monotonic()
            for sink in self._sinks:
                sink.deliver(event, tick)
            listeners = list(self._listeners)
        for listener in listeners:  # outside the lock: a listener may take its own locks
            try:
                listener(event)
            except Exception:  # a listener (the control socket) must never stop the door
                log.exception("event listener failed listener=%r", listener)
        return event

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Call `listener(event)` after every recorded event (the control socket uses it).

        Called on the recording thread, after the sinks; whatever it raises is logged and
        swallowed, so it must be quick and must not block.
        """
        with self._lock:
            self._listeners.append(listener)

    def maintain(self) -> None:
        """Retry failing sinks that are due, and apply the retention once a day."""
        with self._lock:
            tick = self._monotonic()
            for sink in self._sinks:
                sink.flush(tick)
            # Retention reaches events.db and the snapshots, never the JSON-lines file: a log
            # without either has nothing to wait for a set clock for.
            keeps = self._db_sink is not None or self.snapshots is not None
            if self.retention_days and keeps and tick >= self._next_retention:
                if self._clock_trusted():
                    self._next_retention = tick + RETENTION_EVERY_SECONDS
                    self._apply_retention()
                else:
                    self._next_retention = tick + RETENTION_CLOCK_RETRY_SECONDS
                    log.warning(
                        "retention waits: it cannot tell a day-old event from a year-old one "
                        "by a wall clock nothing has set (%s; %s)",
                        UNSET_CLOCK,
                        SET_THE_CLOCK,
                    )

    def reopen(self) -> None:
        """Close and reopen the JSON-lines file (SIGHUP after logrotate moved it away)."""
        with self._lock:
            tick = self._monotonic()
            for sink in self._sinks:
                if isinstance(sink, _JsonlSink):
                    sink.close()
                    try:
                        sink.open()
                    except OSError as error:
                        sink.fail(tick, error)
                    else:
                        sink.flush(tick, force=True)

    def apply_retention(self) -> tuple[int, int]:
        """Delete events and snapshots older than retention_days now: (rows, files) deleted."""
        with self._lock:
            return self._apply_retention()

    def close(self) -> None:
        with self._lock:
            tick = self._monotonic()
            for sink in self._sinks:
                sink.flush(tick, force=True)
                if sink.pending:
                    log.error(
                        "events lost at exit sink=%s target=%s count=%d",
                        sink.name,
                        sink.target,
                        len(sink.pending),
                    )
                sink.close()

    # --- health --------------------------------------------------------------------------

    @property
    def errors(self) -> int:
        return sum(sink.errors for sink in self._sinks) + self.snapshot_errors

    @property
    def pending(self) -> int:
        return sum(len(sink.pending) for sink in self._sinks)

    @property
    def dropped(self) -> int:
        return sum(sink.dropped for sink in self._sinks)

    def failing(self) -> list[str]:
        """Names of the sinks currently failing ("db", "jsonl")."""
        return [sink.name for sink in self._sinks if sink.failing]

    def metrics_line(self) -> str:
        return (
            f"event_errors={self.errors} events_pending={self.pending} "
            f"events_dropped={self.dropped}"
        )

    # --- snapshots and retention ------------------------------------------------------

    def _prepare_snapshots(self) -> bool:
        """Whether snapshots may be written to the folder now (checked before each one).

        A missing folder is made 0700 (make_private_folder); one that is there is used only
        when snapshots_folder_problem finds nothing wrong with it, and is never chmod-ed: it
        may be the user's home or current folder (`run --snapshots .`). Refused, no
        snapshot is written (the events go on without one) and the reason is logged."""
        folder = Path(self.snapshots)  # type: ignore[arg-type]
        try:
            if not os.path.lexists(folder):
                make_private_folder(folder)
            problem = snapshots_folder_problem(folder)
        except OSError as error:
            self._snapshot_failed("snapshots folder unusable path=%s error=%r", folder, error)
            return False
        if problem is not None:
            self._snapshot_failed(
                "snapshots folder refused, no snapshot is written path=%s (%s)", folder, problem
            )
            return False
        return True

    def _snapshot_failed(self, message: str, *args: object) -> None:
        """Count a snapshot failure; log it the first time, then at most every
        LOG_EVERY_SECONDS (with how many were not logged), as a failing sink is."""
        self.snapshot_errors += 1
        suppressed = self._snapshot_throttle.due()
        if suppressed is None:
            return
        log.error(message + " suppressed=%d; the door keeps working", *args, suppressed)

    def _snapshot(
        self, now: float, kind: str, name: str | None, track: int | None, crop: np.ndarray
    ) -> str | None:
        folder = Path(self.snapshots)  # type: ignore[arg-type]
        stamp = datetime.fromtimestamp(now, UTC).strftime(_STAMP)[:-3]
        label = snapshot_label(name or "unknown")
        base = f"{stamp}Z_{kind}_{label}_t{track or 0}"
        path = folder / f"{base}.jpg"
        if not self._prepare_snapshots():
            return None
        if self._kept is None:
            self._sweep_snapshot_temporaries()
            try:
                self._kept = deque(entry.name for entry in _without_empty(self._own_snapshots()))
            except OSError as error:
                self._snapshot_failed("snapshots folder unreadable path=%s error=%r", folder, error)
                return None
        try:
            ok, data = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            problem: object = data
        except cv2.error as error:
            ok, problem = False, error
        if not ok:
            self._snapshot_failed("snapshot encode failed path=%s error=%r", path, problem)
            return None
        # After the clock stepped back the name can be taken (the same millisecond, kind,
        # person and track): the older file is evidence and stays, this one is numbered.
        names = [f"{base}.jpg", *(f"{base}-{number}.jpg" for number in range(2, 10))]
        for path in (folder / name for name in names):
            try:
                _write_snapshot(path, data.tobytes())
                break
            except FileExistsError as error:
                if path.name == names[-1]:
                    self._snapshot_failed("snapshot write failed path=%s error=%r", path, error)
                    return None
            except OSError as error:
                self._snapshot_failed("snapshot write failed path=%s error=%r", path, error)
                return None
        self._kept.append(path.name)
        try:
            self._prune_snapshots(folder, self._kept)
        except OSError as error:  # the snapshot itself is complete: its event keeps it
            self._snapshot_failed("snapshot pruning failed path=%s error=%r", folder, error)
        return str(path)

    def _prune_snapshots(self, folder: Path, kept: deque[str]) -> None:
        """Keep the newest snapshot_keep. Oldest first are the files that were already there,
        by the UTC time in their names, then those this log wrote, in the order it wrote
        them: a clock stepped back (a Pi without a real-time clock, before NTP) or forward
        never makes a snapshot just written look old and be deleted at once. The folder is
        listed once, not at every snapshot (listing and sorting 5,000 files took 74 ms on
        the frame loop); the daily retention lists it again."""
        while len(kept) > self.snapshot_keep:
            (folder / kept[0]).unlink(missing_ok=True)
            kept.popleft()

    def _sweep_snapshot_temporaries(self) -> None:
        sweep_snapshot_temporaries(Path(self.snapshots))  # type: ignore[arg-type]

    def _own_snapshots(self) -> list[Path]:
        return own_snapshots(Path(self.snapshots))  # type: ignore[arg-type]

    def _apply_retention(self) -> tuple[int, int]:
        """Delete the events, and the snapshots, older than `retention_days`, on a clock
        that was set (maintain() waits for one).

        Events go in the order they were written: the ones before the last event whose
        time is older than the retention. Events stamped while the clock was wrong (1970
        before NTP set it, or ahead) go with their neighbours in the table, neither at once
        nor never. A snapshot goes by the time in its name; one named before EARLIEST_TIME
        (its clock was not set) is left to `snapshot_keep`."""
        if not self.retention_days:
            return 0, 0
        cutoff = self._clock() - self.retention_days * 86400.0
        rows = files = 0
        sink = self._db_sink
        if sink is not None and sink.db is not None and not sink.failing:
            try:
                rows = sink.db.execute(
                    "DELETE FROM events WHERE id <= "
                    "(SELECT max(id) FROM events WHERE time < ? AND time >= ?)",
                    (cutoff, EARLIEST_TIME),
                ).rowcount
            except sqlite3.Error as error:
                sink.fail(self._monotonic(), error)
            else:
                # The deleted events also stay in the -wal file, which the door keeps open,
                # until later events overwrite them (weeks on a quiet door).
                if rows and (why := empty_wal(sink.db, shared=False)) is not None:
                    log.info("retention: deleted events may stay in the -wal file (%s)", why)
        if self.snapshots is not None:
            self._sweep_snapshot_temporaries()
            oldest = datetime.fromtimestamp(cutoff, UTC).strftime(_STAMP)[:-3]
            earliest = datetime.fromtimestamp(EARLIEST_TIME, UTC).strftime(_STAMP)
            deleted: set[str] = set()
            try:
                for path in self._own_snapshots():
                    match = SNAPSHOT_NAME.match(path.name)
                    if match is not None and earliest[:-3] <= match.group(1) < oldest:
                        path.unlink(missing_ok=True)
                        deleted.add(path.name)
                        files += 1
            except OSError as error:
                self._snapshot_failed(
                    "snapshot retention failed path=%s error=%r", self.snapshots, error
                )
            if self._kept is not None and deleted:
                self._kept = deque(name for name in self._kept if name not in deleted)
        log.info(
            "retention applied days=%d events_deleted=%d snapshots_deleted=%d",
            self.retention_days,
            rows,
            files,
        )
        return rows, files


def own_snapshots(folder: Path) -> list[Path]:
    """The folder's files named as this module names snapshots, oldest first. A folder that
    is a symbolic link is not followed (OSError): pruning, retention and erasure delete only
    in the folder snapshots are written to."""
    if stat.S_ISLNK(os.lstat(folder).st_mode):
        raise OSError(errno.ELOOP, "it is a symbolic link, not followed", str(folder))
    # scandir's entries know their type from the listing itself (no stat per file): this
    # runs on the frame loop, over as many files as snapshot_keep allows.
    with os.scandir(folder) as entries:
        names = sorted(
            entry.name
            for entry in entries
            if SNAPSHOT_NAME.match(entry.name) and entry.is_file(follow_symlinks=False)
        )
    return [folder / name for name in names]


@dataclass(frozen=True)
class History:
    """What the door recorded about some people: events that name them, the snapshots of
    those events, and reports of a face that took their place in their track."""

    events: int
    snapshots: int
    took_place: int = 0
    # Snapshots left that carry one of their names' labels and that no event names: taken
    # while events.db was off or failing. Not deleted: a label can be another person's.
    unnamed: int = 0


NO_HISTORY = History(0, 0)
# The reason a "took the place of NAME" report keeps once NAME's history is erased: the
# report is about the stranger (its snapshot shows them), evidence kept without the name.
ERASED_REASON = f"{TOOK_PLACE} of a person whose history was erased"


def _named_rows(
    db: sqlite3.Connection, names: Sequence[str]
) -> tuple[list[tuple[int, str | None]], list[int]]:
    """(id, snapshot) of the events that name one of `names` (the gallery's name rule: case
    and spacing do not matter), and the ids of the reports of a face that took the place of
    one of them in their track."""
    keys = {name_key(name) for name in names}
    took = {f"{TOOK_PLACE} of {key}" for key in keys}
    named: list[tuple[int, str | None]] = []
    took_place: list[int] = []
    for row_id, name, reason, snapshot in db.execute(
        "SELECT id, name, reason, snapshot FROM events"
    ):
        if isinstance(name, str) and name_key(name) in keys:
            named.append((int(row_id), snapshot))
        elif isinstance(reason, str) and name_key(reason) in took:
            took_place.append(int(row_id))
    return named, took_place


def _their_snapshots(folder: Path | None, rows: Sequence[str | None]) -> list[Path]:
    """The snapshot files those events name: only files of the snapshots folder named as this
    module names snapshots, whatever a row says (a row is data). Never found by the name in
    a file's name: it keeps only ASCII letters, digits, dots and hyphens, so different people
    share it ("王伟" and "李娜" are both `_`, "Alice Martin" and "Alice_Martin" one label)."""
    wanted = {Path(snapshot).name for snapshot in rows if snapshot}
    if folder is None or not wanted or not folder.exists():
        return []
    return [path for path in own_snapshots(folder) if path.name in wanted]


def check_store(path: Path) -> None:
    """Refuse, as the door would when it opens it, an events database at `path` that is not a
    regular file of ours, not ours, or of a newer schema (ValueError, OSError, sqlite3.Error);
    read only, nothing created. A missing file passes: there is no history in it."""
    if not os.path.lexists(path):
        return
    refuse_non_regular(path)
    check_events_owner(path)
    with closing(connect_read_only(path)) as connection:
        usable_schema(connection, path)


def history_of(db: Path | None, snapshots: Path | None, names: Sequence[str]) -> History:
    """How much the door recorded about these people (read-only; nothing is created)."""
    named: list[tuple[int, str | None]] = []
    took_place: list[int] = []
    named_files: set[str] = set()
    if db is not None and db.exists():
        with closing(connect_read_only(db)) as connection:
            named, took_place = _named_rows(connection, names)
            named_files = _named_snapshots(connection)
    files = _their_snapshots(snapshots, [snapshot for _, snapshot in named])
    unnamed = _labelled_snapshots(snapshots, names, named_files)
    return History(len(named), len(files), len(took_place), len(unnamed))


def erase_history(db: Path | None, snapshots: Path | None, names: Sequence[str]) -> History:
    """Erase what the door recorded about these people: the snapshots of the events that
    name them, then those events, and a report of a face that took their place keeps the
    stranger but not their name (ERASED_REASON), all in one transaction, with nothing left
    in the database's free pages or -wal file (edge_app.sqlite_files). The files go first
    and the rows name them until the commit: a run cut short (killed, a file it may not
    delete) leaves rows that still find what is left, so running it again finishes the job.
    They are deleted before the transaction too, so that it holds the database's write
    lock (which the door waits at most DB_BUSY_SECONDS for) only for the few a door wrote
    meanwhile, not while thousands of files go.
    A snapshot of them judged unknown carries no name and is not found. The JSON-lines file
    (events.jsonl) is a log the door only appends to: it is not rewritten. Raises ValueError,
    OSError or sqlite3.Error."""
    named: list[tuple[int, str | None]] = []
    took_place: list[int] = []
    gone = 0
    if db is not None and db.exists():
        connection = _open_db(db)
        try:
            connection.execute("PRAGMA busy_timeout = 5000")  # the door writes at most 0.5 s
            gone = _delete_snapshots(snapshots, _named_rows(connection, names)[0])
            connection.execute("BEGIN IMMEDIATE")
            try:
                named, took_place = _named_rows(connection, names)
                gone += _delete_snapshots(snapshots, named)
                connection.executemany("DELETE FROM events WHERE id = ?", [(i,) for i, _ in named])
                connection.executemany(
                    "UPDATE events SET reason = ? WHERE id = ?",
                    [(ERASED_REASON, i) for i in took_place],
                )
                connection.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
                raise
            if (named or took_place) and (why := empty_wal(connection)) is not None:
                log.warning("erased events may stay in %s-wal for now (%s)", db.name, why)
            named_files = _named_snapshots(connection)
        finally:
            connection.close()
    else:
        named_files = set()
    if snapshots is not None:
        # A killed door's snapshot write leaves the whole JPEG under a temporary name (a
        # second name of a snapshot just erased, or one never linked to its name): no event
        # names it, and the door removes it only once it is 10 minutes old, when it next
        # lists the folder. Any age here; a live write's file is locked and left.
        sweep_snapshot_temporaries(snapshots, now=math.inf)
    unnamed = _labelled_snapshots(snapshots, names, named_files)
    return History(len(named), gone, len(took_place), len(unnamed))


def sweep_snapshot_temporaries(folder: Path, *, now: float | None = None) -> None:
    """Remove the temporary files of snapshots whose writes a killed door left behind
    (private_file.sweep_temporaries: private, unlocked, and old unless `now` is math.inf).
    Only in a real folder, never through a symbolic link; never raises."""
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(os.lstat(folder).st_mode):
            sweep_temporaries(folder, SNAPSHOT_TEMPORARY, f"snapshots in {folder}", now=now)
            if now == math.inf:
                _unlink_second_names(folder)


def _unlink_second_names(folder: Path) -> None:
    """Remove the temporary names that are only a second name of a snapshot beside them (a
    door killed between the link and removing the temporary name, before it wrote the
    event): removing one loses no file, and a visible one is all the user is told of."""
    for entry in os.scandir(folder):
        if not SNAPSHOT_TEMPORARY.fullmatch(entry.name):
            continue
        with contextlib.suppress(OSError):
            info = entry.stat(follow_symlinks=False)
            final = folder / entry.name[1:].rsplit(".", 1)[0]
            other = os.lstat(final)
            if (
                stat.S_ISREG(info.st_mode)
                and info.st_nlink > 1
                and (other.st_dev, other.st_ino) == (info.st_dev, info.st_ino)
            ):
                os.unlink(folder / entry.name)


def _named_snapshots(connection: sqlite3.Connection) -> set[str]:
    """The file names of the snapshots events name."""
    rows = connection.execute("SELECT snapshot FROM events WHERE snapshot IS NOT NULL")
    return {Path(snapshot).name for (snapshot,) in rows}


def _labelled_snapshots(folder: Path | None, names: Sequence[str], named: set[str]) -> list[Path]:
    """The snapshots of `folder` whose file name carries one of these names' labels (as
    _snapshot writes it) and that no event names (`named`)."""
    if folder is None or not folder.is_dir():
        return []
    labels = {snapshot_label(name).casefold() for name in names}
    return [
        path
        for path in own_snapshots(folder)
        if path.name not in named
        and (found := SNAPSHOT_NAME.match(path.name)) is not None
        and found["label"].casefold() in labels
    ]


def snapshot_label(name: str) -> str:
    """A name as a snapshot's file name holds it: ASCII letters, digits, dots and hyphens,
    the rest as `_`, at most 60 characters (so several people may share one label)."""
    return _SAFE.sub("_", name)[:60]


def _delete_snapshots(folder: Path | None, named: list[tuple[int, str | None]]) -> int:
    """Delete the snapshots of these (id, snapshot) rows; how many there were."""
    files = _their_snapshots(folder, [snapshot for _, snapshot in named])
    for path in files:
        path.unlink(missing_ok=True)
    return len(files)


def _write_snapshot(path: Path, data: bytes) -> None:
    """`data` as a new file at `path`, mode 0600, that appears under its name only once it is
    whole: written under a temporary name beside it (locked while written, as
    private_file's writes are) and then linked to its name, which never replaces a file
    already there (FileExistsError). A failure leaves neither file; a door killed mid-write
    leaves only the temporary one, which the next listing of the folder removes.

    Not synced: a snapshot is a picture for a person to look at, not state the door reads
    back, and an fsync per event on an SD card would cost the frame loop tens of
    milliseconds. A power cut may lose the last seconds' snapshots: ext4 may commit the
    link before the picture's data, leaving an empty file under the name, which the door
    removes when it first lists the folder after a start, at its first snapshot
    (_without_empty)."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            with contextlib.suppress(OSError):
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            handle.write(data)
            handle.flush()
            link_new(Path(temp), path)
    finally:
        Path(temp).unlink(missing_ok=True)


def _without_empty(snapshots: list[Path]) -> list[Path]:
    """`snapshots` less the empty ones, which are deleted: what a power cut leaves of the
    last snapshots before it (_write_snapshot). An empty file is no picture: nothing is
    lost. One that cannot be deleted is kept in the list (pruned in turn)."""
    kept, emptied = [], 0
    for path in snapshots:
        try:
            if path.lstat().st_size == 0:
                path.unlink()
                emptied += 1
                continue
        except OSError:
            pass
        kept.append(path)
    if emptied:
        log.info("snapshots: removed %d empty files a power cut left", emptied)
    return kept


def snapshots_folder_problem(folder: Path) -> str | None:
    """Why snapshots must not be written into `folder` as it is now, or None when they may
    (also None when there is no folder yet: the door makes it 0700). Snapshots are biometric
    data with names in their file names, so the folder must be a real folder (a symbolic link
    is not followed: it could lead anywhere), this user's, that its group and others may
    neither read nor enter (no bit of 077). A folder that is there is never chmod-ed: the
    reason says what to run, or to choose a new folder. OSError when it cannot be looked at."""
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        try:
            target = f" (to {os.readlink(folder)})"
        except OSError:
            target = ""
        return (
            f"it is a symbolic link{target}, which is not followed; set events.snapshots to "
            "the folder itself"
        )
    if not stat.S_ISDIR(info.st_mode):
        return "it is not a folder; set events.snapshots to a folder"
    if info.st_uid != os.geteuid():
        return (
            f"it belongs to another user (uid {info.st_uid}); set events.snapshots to a folder "
            "of the door's user (a new one is made 0700)"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        return (
            f"others may read it (mode {mode:o}) and snapshots are biometric data; run "
            f"`chmod 700 {folder}`, or set events.snapshots to a new folder (made 0700)"
        )
    return None


def _open_db(path: Path) -> sqlite3.Connection:
    """Open (creating 0600) and migrate an events database; raises OSError / sqlite3.Error /
    ValueError.

    A symbolic link, named pipe or folder at `path` is refused (NotRegularFileError): SQLite
    would follow a link, and create the file it points to with the umask's mode. So is a file
    others may change, in a folder open to others, or with SQLite's side files of another
    user (check_events_owner). A file of ours that others may read is made 0600 once it
    proved an events database (narrow_to_private).
    """
    make_private_folder(path.parent)
    refuse_open_folder(path, EVENTS_FILE)  # before anything is made there
    refuse_non_regular(path)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    check_events_owner(path)  # before SQLite reads it, or replays a -wal beside it
    db = sqlite3.connect(
        path, timeout=DB_BUSY_SECONDS, isolation_level=None, check_same_thread=False
    )
    try:
        _check_ours(db, path)  # before anything writes: a file we cannot use stays as it is
        narrow_to_private(path, EVENTS_FILE, log)
        _check_version(db, path)
        db.execute("PRAGMA journal_mode = WAL")
        # One event per visit: NORMAL loses at most the last ones on a power cut, never the file.
        db.execute("PRAGMA synchronous = NORMAL")
        zero_deletions(db)  # retention and erasures leave no names in free pages
        _migrate(db, path)
    except BaseException:
        db.close()
        raise
    return db


# The events database for the rules every SQLite file the door trusts is held to
# (sqlite_access): the events say who came in and when, so whoever may change the file, or
# replace it (or plant a -wal SQLite replays into it) in its folder, could rewrite them. Its
# owner could also read them whatever its mode, and the door writes it: only this user's file
# is used (root may use the door user's).
EVENTS_FILE = Kind(
    name="the events database",
    harm="rewrite who came in",
    elsewhere="set events.db to a path of the door's user",
    holds="who came in and when",
    error=ValueError,
    root_may_own=False,
)


def check_events_owner(path: Path) -> None:
    """Refuse (ValueError, nothing changed) an events.db that users other than this one may
    change: another user's (unless this is root), one others may write, one in a folder
    open to others, or one with a -wal, -shm or -journal beside it that is not its owner's
    regular file (sqlite_access.refuse_unsafe, the gallery's rules)."""
    refuse_unsafe(path, os.lstat(path), EVENTS_FILE)


def refuse_untrusted(path: Path) -> None:
    """Refuse (ValueError) what the door refuses before it opens the events database at
    `path` (check_events_owner) or, when nothing is there yet, before it creates one (a
    folder open to others): for doctor and `run --check-config`, which open nothing."""
    if os.path.lexists(path):
        check_events_owner(path)
    else:
        refuse_open_folder(path, EVENTS_FILE)


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`, None when there is none."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def _check_ours(db: sqlite3.Connection, path: Path) -> None:
    """Refuse an SQLite file of another application (the gallery, say, by a mistyped path)
    before anything is written to it: ours has no application_id and no table but `events`
    (none at all when new), and one with a schema version has that table. A file of a newer
    schema is left to _check_version, which refuses it as newer."""
    application_id = int(db.execute("PRAGMA application_id").fetchone()[0])
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    tables = {
        name
        for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    if application_id or (
        version <= SCHEMA_VERSION
        and (tables - {"events"} or (version > 0 and "events" not in tables))
    ):
        raise ValueError(
            f"{path} is an SQLite database but not an edge-app events database "
            f"({len(tables)} tables, application_id {application_id}); left untouched: set "
            f"events.db to another path"
        )
    # (Version 0 with an events table: one made before versions, adopted as version 1's.)
    schema = max(version, 1) if "events" in tables else version
    missing = missing_columns(db, MIGRATIONS, schema) if version <= SCHEMA_VERSION else []
    if missing:  # an `events` table of ours by name only: migrated, the file was changed
        raise ValueError(
            f"{path} is an SQLite database but not an edge-app events database (its events "
            f"table lacks {', '.join(missing[:5])}); left untouched: set events.db to another "
            "path"
        )
    extras = db.execute(
        "SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'view')"
    ).fetchall()
    if extras:  # edge-app makes neither: a trigger could erase the unlocks it records
        listed = ", ".join(f"{kind} {name!r}" for kind, name in extras[:5])
        raise ValueError(
            f"{path} holds what edge-app never makes ({listed}); left untouched: remove "
            "them (sqlite3 shell) or set events.db to another path"
        )


def usable_schema(db: sqlite3.Connection, path: Path) -> int:
    """The schema version of the events database `db` (at `path`) if the door can use it (it
    migrates an older one), read without writing; ValueError, as when the door opens it, for
    another application's file or a newer schema (`doctor` says which before the door runs)."""
    _check_ours(db, path)
    return _check_version(db, path)


def _check_version(db: sqlite3.Connection, path: Path) -> int:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"{path} has events schema version {version}, newer than this edge-app "
            f"({SCHEMA_VERSION}): upgrade edge-app"
        )
    return version


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    if _check_version(db, path) == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        for target, statements in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in statements:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {target}")
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    log.info("events db=%s schema=%d->%d", path, version, SCHEMA_VERSION)


def read_events(path: Path, since: float = 0.0) -> list[Event]:
    """Events stored in an events database, oldest first (for tools, tests and the docs).

    Read-only: a missing file is an error, never created (with the umask's mode) as empty.
    """
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as db:
        rows = db.execute(
            "SELECT time, type, name, score, track, reason, snapshot, liveness, geometry "
            "FROM events WHERE time >= ? ORDER BY id",
            (since,),
        ).fetchall()
    return [Event(t, k, n, s, tr, None, r, sn, lv, g) for t, k, n, s, tr, r, sn, lv, g in rows]
