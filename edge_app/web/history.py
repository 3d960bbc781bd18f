"""The event history as the web page shows it: filtered, paginated, CSV, snapshots.

Read straight from the door's events database (edge_app.events writes it); this module only
reads (`PRAGMA query_only`), so a bug here cannot alter the audit log.
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
import stat
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from edge_app.commands import AS_DOOR
from edge_app.errors import (
    SQLITE_BUSY,
    SQLITE_DISK_CODES,
    SQLITE_NOTADB,
    UserError,
    is_damage,
    sqlite_code,
)
from edge_app.events import SNAPSHOT_NAME, TYPES
from edge_app.gallery import name_key
from edge_app.sqlite_files import connect_read_only
from edge_app.wall_clock import local_at, local_zone

PAGE_SIZE = 50
# The CSV export is every event the filters select, streamed this many rows at a time: never
# held whole (a busy door records a million events a year), never cut to a number of rows.
CSV_PIECE_ROWS = 2_000
CSV_HEADER = ("id", "time_utc", "type", "name", "score", "track", "reason")
SNAPSHOT_MAX_BYTES = 5 * 1024 * 1024
# The person filter's value for the events that name nobody. It has no letter or digit, so
# no one can be enrolled under it (gallery.check_name): a person named "(unknown)" was mixed
# up with it. The menu shows it as UNKNOWN_LABEL.
UNKNOWN_PERSON = "-"
UNKNOWN_LABEL = "(unknown)"
# Event times are Unix times; a date filter outside these days is refused with a message
# (the calendar's far ends do not convert to a local midnight).
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(2999, 12, 31)
# Event ids are SQLite integers: at most 2**63 - 1, so at most 19 ASCII digits.
SQLITE_MAX_INTEGER = 2**63 - 1
_EVENT_ID = re.compile(r"[0-9]{1,19}")
# A spreadsheet runs a cell starting with these as a formula (CSV injection): a visitor's
# name is typed by whoever enrols them, so text cells get a leading apostrophe.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def shown_time(seconds: float) -> str:
    """A time as the page shows it: the hub's local time, with its zone's abbreviation
    ("2026-12-04 15:34:22 CET"). The browser may be in another zone than the hub, and the
    CSV export is in UTC: a time without its zone was read an hour off."""
    stamp = local_at(seconds)
    if stamp.tzinfo is None:  # the C library's zone (TZ set): it names it too
        stamp = stamp.astimezone()
    return f"{stamp:%Y-%m-%d %H:%M:%S} {stamp.tzname() or ''}".rstrip()


def utc_iso(seconds: float) -> str:
    """A time in UTC, ISO 8601 (the CSV's, and <time datetime> on the page)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class EventRow:
    id: int
    time: float
    type: str
    name: str | None
    score: float | None
    track: int | None
    reason: str | None
    snapshot: str | None
    # Of an events database of schema 2 and later (edge_app.events): None before.
    liveness: float | None = None
    geometry: str | None = None

    @property
    def local_time(self) -> str:
        return shown_time(self.time)

    @property
    def utc_time(self) -> str:
        return utc_iso(self.time)

    @property
    def description(self) -> str:
        """What the event was, for whom, when: a snapshot's alt text and its page's title."""
        who = f", {self.name}" if self.name else (" person" if self.type == "unknown" else "")
        return f"{self.type}{who}, {self.local_time}"


@dataclass(frozen=True)
class Filters:
    person: str = ""  # a name exactly as recorded (the page's menu), or UNKNOWN_PERSON
    type: str = ""
    start: date | None = None
    end: date | None = None  # inclusive
    # A name as typed (`edge-app events --person`): the gallery's name rule, so case and
    # spacing do not matter. A scan of every event's name: the page's menu uses `person`.
    person_typed: str = ""

    @classmethod
    def parse(cls, query: dict[str, str]) -> tuple[Filters, list[tuple[str, str]]]:
        """Filters from query parameters, and what was refused, as (parameter, message): a
        date that cannot be read, or one outside FIRST_DAY..LAST_DAY, is left out with a
        message, which the page ties to that parameter's field."""
        problems: list[tuple[str, str]] = []

        def day(key: str) -> date | None:
            text = query.get(key, "").strip()
            if not text:
                return None
            try:
                value = date.fromisoformat(text)
            except ValueError:
                problems.append((key, f"{key}: {text[:40]!r} is not a date (YYYY-MM-DD)"))
                return None
            if not FIRST_DAY <= value <= LAST_DAY:
                problems.append(
                    (
                        key,
                        f"{key}: {text!r} is not between {FIRST_DAY.isoformat()} and "
                        f"{LAST_DAY.isoformat()}",
                    )
                )
                return None
            return value

        return (
            cls(
                person=query.get("person", "").strip()[:200],
                type=query.get("type", "").strip()[:40],
                start=day("from"),
                end=day("to"),
            ),
            problems,
        )

    def where(self) -> tuple[str, list[object]]:
        clauses: list[str] = []
        values: list[object] = []
        if self.person == UNKNOWN_PERSON:
            clauses.append("name IS NULL")
        elif self.person:
            clauses.append("name = ?")
            values.append(self.person)
        if self.person_typed:
            clauses.append("name_key(name) = ?")
            values.append(name_key(self.person_typed))
        if self.type:
            clauses.append("type = ?")
            values.append(self.type)
        if self.start is not None:
            clauses.append("time >= ?")
            values.append(_local_midnight(self.start))
        if self.end is not None:
            clauses.append("time < ?")
            values.append(_local_midnight(self.end + timedelta(days=1)))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", values

    def query(self) -> dict[str, str]:
        """The filters as query parameters (for pagination links and the CSV link)."""
        items = {
            "person": self.person,
            "type": self.type,
            "from": self.start.isoformat() if self.start else "",
            "to": self.end.isoformat() if self.end else "",
        }
        return {k: v for k, v in items.items() if v}


def _local_midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=local_zone()).timestamp()


@dataclass(frozen=True)
class _NamesMenu:
    """The names in an events database (None: an event without one), and what they were read
    from: the file, its newest event and its number of events.

    Reading the names is a full scan (events.db has no index on name: 0.2 s of CPU with a
    million events on x86), so it is done once; after that only the events written since are read
    (by id, the primary key), when the rest of the table is provably the one read before: the
    newest event then is still there unchanged (SQLite reuses an id only once the newest event
    is deleted), and the events counted now are those counted then plus those written since.
    A deletion (the daily retention; `edge-app remove --history`, whose erased names must
    leave the menu) or another file reads the names afresh."""

    file: tuple[int, int]  # st_dev, st_ino
    newest: tuple[object, ...] | None  # (id, time, name) of the newest event
    count: int
    names: frozenset[object]

    @classmethod
    def of(
        cls, db: sqlite3.Connection, file: tuple[int, int], known: _NamesMenu | None
    ) -> _NamesMenu:
        """The names in `db` (the events database that is `file`), from `known` when it
        still holds. One read transaction: every count and name is of the same moment."""
        db.execute("BEGIN")
        count = int(db.execute("SELECT count(*) FROM events").fetchone()[0])
        newest = _event_key(db, "ORDER BY id DESC LIMIT 1")
        if known is not None and known.newest is not None and known.file == file:
            since = known.newest[0]
            if _event_key(db, "WHERE id = ?", since) == known.newest:
                added = dict(
                    db.execute(
                        "SELECT name, count(*) FROM events WHERE id > ? GROUP BY name", (since,)
                    ).fetchall()
                )
                if count == known.count + sum(added.values()):
                    return cls(file, newest, count, known.names | set(added))
        names = frozenset(r[0] for r in db.execute("SELECT DISTINCT name FROM events"))
        return cls(file, newest, count, names)


def _event_key(db: sqlite3.Connection, clause: str, *values: object) -> tuple[object, ...] | None:
    """(id, time, name) of the event `clause` selects, or None."""
    row = db.execute(f"SELECT id, time, name FROM events {clause}", values).fetchone()
    return None if row is None else tuple(row)


@dataclass(frozen=True)
class Page:
    rows: list[EventRow]
    total: int
    number: int
    pages: int


class HistoryError(UserError):
    """The events database cannot be read; the message names it and the likely fix."""


class History:
    """Read-only view of one events database (which may not exist yet).

    command_line: read by a command that another user may run (root, over the door's own
    files): opened so that nothing is created beside the database (connect_read_only),
    and a refusal says to run the command as the door's user."""

    def __init__(self, path: Path | None, *, command_line: bool = False) -> None:
        self.path = None if path is None else Path(path)
        self._command_line = command_line
        self._menu: _NamesMenu | None = None
        self._menu_lock = threading.Lock()  # one reader updates it; the others then reuse it

    @property
    def available(self) -> bool:
        return self.path is not None and self.path.is_file()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        assert self.path is not None
        try:
            if self._command_line:
                connection = connect_read_only(self.path)
            else:
                connection = sqlite3.connect(self.path, timeout=5.0)
            with closing(connection) as db:
                db.execute("PRAGMA query_only = ON")
                db.create_function("name_key", 1, _name_key_or_none, deterministic=True)
                yield db
        except (sqlite3.Error, OSError) as error:
            raise HistoryError(
                f"events.db: cannot read {self.path} ({error}); {self._fix(error)}"
            ) from None

    def _fix(self, error: BaseException) -> str:
        """What to do about an events database that cannot be read, from SQLite's code."""
        code = sqlite_code(error)
        if "no such table" in str(error):  # an empty file, or another application's
            return "it is not an events database (no events table): check the path"
        if code == SQLITE_BUSY:
            return "the door or a command is changing it; try again in a moment"
        if code == SQLITE_NOTADB or is_damage(error):
            return "it is not an events database, or it is damaged: check [events] db"
        if code in SQLITE_DISK_CODES:
            return "the disk failed a read, or is full"
        if self._command_line:
            return f"run the command as the door's user ({AS_DOOR} events)"
        return (
            "the hub needs read and write access to its folder (SQLite's WAL index lives next "
            "to it)"
        )

    def page(self, filters: Filters, number: int = 1, size: int = PAGE_SIZE) -> Page:
        if not self.available:
            return Page([], 0, 1, 1)
        where, values = filters.where()
        with self._connect() as db:
            total = int(db.execute(f"SELECT count(*) FROM events{where}", values).fetchone()[0])
            pages = max(1, -(-total // size))
            number = min(max(1, number), pages)
            rows = db.execute(
                f"SELECT {_columns(db)} FROM events{where} ORDER BY id DESC LIMIT ? OFFSET ?",
                [*values, size, (number - 1) * size],
            ).fetchall()
        return Page([EventRow(*row) for row in rows], total, number, pages)

    def latest(self, count: int) -> list[EventRow]:
        return self.page(Filters(), 1, count).rows

    def after(self, filters: Filters, event_id: int, count: int) -> list[EventRow]:
        """At most `count` events that `filters` select recorded after the event `event_id`
        (ids only grow), oldest first: what a reader that has shown up to `event_id` has not
        seen."""
        if not self.available:
            return []
        where, values = filters.where()
        window = f"{where} AND" if where else " WHERE"
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {_columns(db)} FROM events{window} id > ? ORDER BY id LIMIT ?",
                [*values, event_id, count],
            ).fetchall()
        return [EventRow(*row) for row in rows]

    def names(self) -> list[str]:
        """The names the events hold (the person menu's, without UNKNOWN_PERSON)."""
        return [value for value, _ in self.choices()[0] if value != UNKNOWN_PERSON]

    def choices(self) -> tuple[list[tuple[str, str]], list[str]]:
        """(the person menu: (value, label) for each name in the events, then UNKNOWN_PERSON
        if any event has none; the event types) for the filter menus. The types are
        edge_app.events.TYPES: EventLog.record writes no other. The names are _NamesMenu's:
        exact, without reading the whole history each time."""
        try:
            info = self.path.stat() if self.path is not None and self.available else None
        except OSError:  # gone since
            info = None
        if info is None:
            return [], sorted(TYPES)
        with self._menu_lock, self._connect() as db:
            names = self._menu = _NamesMenu.of(db, (info.st_dev, info.st_ino), self._menu)
        people = [(name, name) for name in sorted(str(n) for n in names.names if n is not None)]
        if None in names.names:
            people.append((UNKNOWN_PERSON, UNKNOWN_LABEL))
        return people, sorted(TYPES)

    def snapshot_of(self, event_id: int) -> str | None:
        event = self.event(event_id)
        return None if event is None else event.snapshot

    def event(self, event_id: int) -> EventRow | None:
        """One event by its id, or None when there is no such event."""
        if not self.available or not 0 <= event_id <= SQLITE_MAX_INTEGER:
            return None
        with self._connect() as db:
            row = db.execute(
                f"SELECT {_columns(db)} FROM events WHERE id = ?",
                (event_id,),
            ).fetchone()
        return EventRow(*row) if row else None

    def csv(self, filters: Filters, rows: int = CSV_PIECE_ROWS) -> Iterator[str]:
        """Every event `filters` select, oldest first, as CSV text in pieces of at most `rows`
        events: the header and the first piece are read here, so a database that cannot be
        read is refused (HistoryError) before anything is sent; the rest as the iterator is
        read, each piece with a connection of its own (a web server may read it on another
        thread each time). The events are those up to the newest when it began: a door that
        keeps recording does not keep the export going. A piece that cannot be read raises
        HistoryError part way."""
        header = _csv_text([CSV_HEADER])
        if not self.available:
            return iter([header])
        where, values = filters.where()
        with self._connect() as db:
            newest = db.execute("SELECT max(id) FROM events").fetchone()[0]
            if newest is None:
                return iter([header])
            first, after = _csv_piece(db, where, values, -1, int(newest), rows)
        return self._csv_rest(header + first, after, where, values, int(newest), rows)

    def _csv_rest(
        self,
        first: str,
        after: int | None,
        where: str,
        values: list[object],
        newest: int,
        rows: int,
    ) -> Iterator[str]:
        yield first
        while after is not None:
            with self._connect() as db:
                piece, after = _csv_piece(db, where, values, after, newest, rows)
            yield piece


def _columns(db: sqlite3.Connection) -> str:
    """The EventRow columns to select: the liveness and geometry of schema 2 are NULL in an
    events database made before them (one a door has not opened since)."""
    have = {str(row[1]) for row in db.execute("PRAGMA table_info(events)")}
    extra = [name if name in have else "NULL" for name in ("liveness", "geometry")]
    return ", ".join(["id, time, type, name, score, track, reason, snapshot", *extra])


def _name_key_or_none(name: object) -> str | None:
    """name_key as an SQL function: an event without a name (NULL) matches no name."""
    return name_key(name) if isinstance(name, str) else None


def _csv_piece(
    db: sqlite3.Connection, where: str, values: list[object], after: int, newest: int, rows: int
) -> tuple[str, int | None]:
    """The CSV lines of at most `rows` events with after < id <= newest that `where` selects,
    and the last id read (None when there are no more)."""
    window = f"{where} AND" if where else " WHERE"
    events = [
        EventRow(*row)
        for row in db.execute(
            f"SELECT {_columns(db)} FROM events{window} id > ? AND id <= ? ORDER BY id LIMIT ?",
            [*values, after, newest, rows],
        )
    ]
    text = _csv_text(
        [
            event.id,
            event.utc_time,
            safe_cell(event.type),
            safe_cell(event.name or ""),
            "" if event.score is None else f"{event.score:.4f}",
            "" if event.track is None else event.track,
            safe_cell(event.reason or ""),
        ]
        for event in events
    )
    return text, (events[-1].id if len(events) == rows else None)


def _csv_text(lines: Iterable[Sequence[object]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(lines)
    return out.getvalue()


def parse_event_id(text: str) -> int | None:
    """An event id from a URL (ASCII digits), else None; History.event bounds it."""
    return int(text) if _EVENT_ID.fullmatch(text) else None


def safe_cell(text: str) -> str:
    """Text a spreadsheet shows as text, never evaluates (see _FORMULA_STARTS)."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def read_snapshot(folder: Path | None, stored: str | None) -> bytes | None:
    """The JPEG at `stored` only if it is a regular file directly inside `folder` whose name
    is one the door gives its snapshots (events.SNAPSHOT_NAME).

    The path comes from the events database; checking it keeps a tampered or stale row from
    turning the page into a file reader (no symlinks, no `..`, no other folder, none of the
    owner's own photos kept in the folder).
    """
    if folder is None or not stored:
        return None
    base = Path(folder).resolve()
    candidate = Path(stored)
    if not candidate.is_absolute():
        candidate = base / candidate
    if not SNAPSHOT_NAME.match(candidate.name) or candidate.parent.resolve() != base:
        return None
    path = base / candidate.name
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > SNAPSHOT_MAX_BYTES:
            return None
        return path.read_bytes()
    except OSError:
        return None
