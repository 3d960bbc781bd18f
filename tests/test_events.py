"""Events reach every sink: the log as key=value, SQLite, JSON lines, bounded snapshots."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from edge_app.errors import UserError
from edge_app.events import EventLog, read_events


def test_every_sink_gets_the_event(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db, jsonl = tmp_path / "events.db", tmp_path / "events.jsonl"
    log = EventLog(db, jsonl, clock=lambda: 1_700_000_000.5)
    with caplog.at_level(logging.INFO, logger="edge_app.events"):
        log.record("unlock", name="Ada Lovelace", score=0.81234, track=3, source_time=1.25)
        log.record("unknown", score=0.3, track=4)
        log.record("relock", name="Ada Lovelace", reason="timeout")
    log.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == (
        'event type=unlock name="Ada Lovelace" score=0.812 track=3 source_time=1.250'
    )
    assert lines[2] == 'event type=relock name="Ada Lovelace" reason=timeout'
    stored = read_events(db)
    assert [(e.type, e.name, e.track) for e in stored] == [
        ("unlock", "Ada Lovelace", 3),
        ("unknown", None, 4),
        ("relock", "Ada Lovelace", None),
    ]
    assert stored[0].score == pytest.approx(0.81234) and stored[0].time == 1_700_000_000.5
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert records[0] == {
        "time": "2023-11-14T22:13:20.500+00:00",
        "type": "unlock",
        "name": "Ada Lovelace",
        "score": 0.8123,
        "track": 3,
        "source_time": 1.25,
        "reason": None,
        "snapshot": None,
    }
    assert records[1]["name"] is None and records[1]["type"] == "unknown"
    assert oct(os.stat(db).st_mode & 0o777) == "0o600"
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unknown_type_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        EventLog().record("opened")


def test_snapshots_only_when_enabled_and_bounded(tmp_path: Path) -> None:
    crop = np.full((40, 30, 3), 128, np.uint8)
    EventLog().record("recognized", name="x", crop=crop)  # off: nothing written anywhere
    folder = tmp_path / "snaps"
    clock = iter(1_700_000_000.0 + i for i in range(10))
    log = EventLog(snapshots=folder, snapshot_keep=3, clock=lambda: next(clock))
    events = [log.record("recognized", name="Ada/../x", track=i, crop=crop) for i in range(5)]
    log.record("unlock", name="Ada")  # no crop, no snapshot
    kept = sorted(p.name for p in folder.iterdir())
    assert len(kept) == 3
    assert kept == sorted(Path(e.snapshot).name for e in events[2:])
    assert all("/" not in name[:-4].replace("_", "") for name in kept)
    assert oct(os.stat(folder / kept[0]).st_mode & 0o777) == "0o600"


def test_threads_can_record_at_once(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.db")
    threads = [
        threading.Thread(target=lambda: [log.record("unknown", score=0.1) for _ in range(20)])
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    assert len(read_events(tmp_path / "events.db")) == 80


def test_unwritable_paths_are_user_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="events.db: cannot use"):
        EventLog(blocker / "events.db")
    with pytest.raises(UserError, match="events.jsonl: cannot write"):
        EventLog(jsonl=blocker / "x.jsonl")
    with pytest.raises(UserError, match="events.snapshots: cannot create"):
        EventLog(snapshots=blocker / "snaps")
