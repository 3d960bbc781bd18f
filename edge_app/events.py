"""What the door saw and did: one record per decision, written to every sink at once.

Sinks: a key=value log line (journald keeps it with the service's other logs), a row in an
SQLite events table (queryable history: "who came in last Tuesday"), optionally a JSON line
per event (`--events FILE`, "-" for standard output, which is what the demo prints), and
optionally a JPEG crop of the face, kept to a bounded number of files.

The events live in their own SQLite file rather than in the gallery: the gallery holds
biometric templates that are exported and moved between doors, while the event history is a
local audit log with its own retention, and a write-heavy log should not share a file (and a
WAL) with the templates the daemon must always be able to read.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from edge_app.errors import UserError
from edge_app.policy import DENIED, RECOGNIZED, UNKNOWN, UNLOCK

log = logging.getLogger(__name__)

RELOCK = "relock"
TYPES = (RECOGNIZED, UNKNOWN, UNLOCK, DENIED, RELOCK)

SCHEMA = (
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
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Event:
    """time: Unix seconds. score: cosine similarity of the face to `name` (recognized,
    unlock, denied) or to the closest person (unknown). source_time: seconds on the camera
    source's clock (clip time for a video file). reason: why a denied or relock happened."""

    time: float
    type: str
    name: str | None = None
    score: float | None = None
    track: int | None = None
    source_time: float | None = None
    reason: str | None = None
    snapshot: str | None = None

    def to_json(self) -> str:
        data = asdict(self)
        data["time"] = datetime.fromtimestamp(self.time, timezone.utc).isoformat(
            timespec="milliseconds"
        )
        if self.score is not None:
            data["score"] = round(self.score, 4)
        if self.source_time is not None:
            data["source_time"] = round(self.source_time, 3)
        return json.dumps(data, ensure_ascii=False)


def _field(value: object) -> str:
    """key=value friendly: quote strings with spaces or quotes, fixed precision for floats."""
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if re.search(r'[\s"=]', text) else text


class EventLog:
    """Thread-safe: the frame loop and the relay's timer thread (relock) both record."""

    def __init__(
        self,
        db: Path | None = None,
        jsonl: Path | None = None,
        snapshots: Path | None = None,
        snapshot_keep: int = 200,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.db_path = db
        self._db = _open_db(db) if db is not None else None
        self._jsonl: IO[str] | None = None
        self._owns_jsonl = False
        if jsonl is not None:
            if str(jsonl) == "-":
                self._jsonl = sys.stdout
            else:
                try:
                    self._jsonl = open(jsonl, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
                except OSError as error:
                    raise UserError(f"events.jsonl: cannot write {jsonl} ({error})") from None
                self._owns_jsonl = True
        self.snapshots = snapshots
        self.snapshot_keep = snapshot_keep
        if snapshots is not None:
            try:
                Path(snapshots).mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as error:
                raise UserError(f"events.snapshots: cannot create {snapshots} ({error})") from None

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
    ) -> Event:
        """Write one event everywhere; `crop` (RGB) becomes a snapshot when those are on."""
        if kind not in TYPES:
            raise ValueError(f"unknown event type {kind!r}")
        with self._lock:
            now = self._clock()
            snapshot = None
            if crop is not None and self.snapshots is not None and crop.size:
                snapshot = self._snapshot(now, kind, name, track, crop)
            event = Event(
                now,
                kind,
                name,
                None if score is None else float(score),
                track,
                source_time,
                reason,
                snapshot,
            )
            fields = {
                k: v
                for k, v in asdict(event).items()
                if v is not None and k not in ("time", "type")
            }
            log.info(
                "event type=%s %s", kind, " ".join(f"{k}={_field(v)}" for k, v in fields.items())
            )
            if self._db is not None:
                try:
                    self._db.execute(
                        "INSERT INTO events (time, type, name, score, track, reason, snapshot) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (now, kind, name, event.score, track, reason, snapshot),
                    )
                except sqlite3.Error as error:  # a full disk must not stop the door
                    log.error("events db write failed path=%s error=%r", self.db_path, error)
            if self._jsonl is not None:
                self._jsonl.write(event.to_json() + "\n")
                self._jsonl.flush()
        return event

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._jsonl is not None and self._owns_jsonl:
                self._jsonl.close()
            self._jsonl = None

    def _snapshot(
        self, now: float, kind: str, name: str | None, track: int | None, crop: np.ndarray
    ) -> str | None:
        stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%dT%H%M%S.%f")[:-3]
        label = _SAFE.sub("_", name or "unknown")[:60]
        path = Path(self.snapshots) / f"{stamp}Z_{kind}_{label}_t{track or 0}.jpg"
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        if not ok:
            return None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data.tobytes())
            # Names start with the UTC time, so name order is age order.
            old = sorted(Path(self.snapshots).glob("*.jpg"))[: -self.snapshot_keep]
            for stale in old:
                stale.unlink(missing_ok=True)
        except OSError as error:
            log.error("snapshot write failed path=%s error=%r", path, error)
            return None
        return str(path)


def _open_db(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode = WAL")
        # One event per visit: NORMAL loses at most the last ones on a power cut, never the file.
        db.execute("PRAGMA synchronous = NORMAL")
        for statement in SCHEMA:
            db.execute(statement)
    except (OSError, sqlite3.Error) as error:
        raise UserError(
            f"events.db: cannot use {path} ({error}); choose a writable path with --events-db "
            'or set events.db = "" to keep events in the log only'
        ) from None
    return db


def read_events(path: Path, since: float = 0.0) -> list[Event]:
    """Events stored in an events database, oldest first (for tools, tests and the docs)."""
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute(
            "SELECT time, type, name, score, track, reason, snapshot FROM events "
            "WHERE time >= ? ORDER BY id",
            (since,),
        ).fetchall()
    return [Event(t, k, n, s, tr, None, r, sn) for t, k, n, s, tr, r, sn in rows]
