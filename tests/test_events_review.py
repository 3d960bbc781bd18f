"""The event sinks under a demanding user and a hostile host: files deleted or swapped under a
running door, a foreign SQLite file, the clock stepping, a snapshot folder others can read,
standard output that fails. Real files, real SQLite, the real daemon where it matters."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import stat
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from test_daemon_fast import assert_fail_secure, states
from test_events import Ticks
from test_events_files import CROP, door_on_a_visit_of_ada

from edge_app.events import LOG_EVERY_SECONDS, RETRY_MAX_SECONDS, EventLog, read_events
from edge_app.gallery import Gallery, NewSample

DAY = 86400.0


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# --- a file deleted or moved away under the running door --------------------------------------


@pytest.mark.parametrize("how", ["deleted", "moved"])
def test_an_events_db_deleted_or_moved_away_while_open_is_made_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    ticks = Ticks()
    db = tmp_path / "events.db"
    log = EventLog(db, monotonic=ticks)
    log.record("unlock", name="Ada", track=1)
    if how == "deleted":
        db.unlink()  # -wal and -shm stay, as after `rm events.db`
    else:
        db.rename(tmp_path / "events.db.old")
    with caplog.at_level(logging.ERROR, logger="edge_app.events"):
        log.record("relock", name="Ada", reason="timeout")
    # Before: the write went on into the unlinked (or moved) file, no error, no new file.
    assert log.failing() == ["db"] and log.pending == 1
    assert any("sink=db" in m and "while open" in m for m in errors(caplog))
    ticks.now += RETRY_MAX_SECONDS
    log.maintain()
    assert log.failing() == [] and log.pending == 0
    log.record("unlock", name="Bob", track=2)
    log.close()
    assert [(e.type, e.name) for e in read_events(db)] == [("relock", "Ada"), ("unlock", "Bob")]
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    if how == "moved":  # the moved file keeps what it held, its WAL written into it
        assert [e.type for e in read_events(tmp_path / "events.db.old")] == ["unlock"]


def test_a_jsonl_file_deleted_while_open_is_made_again(tmp_path: Path) -> None:
    ticks = Ticks()
    path = tmp_path / "events.jsonl"
    log = EventLog(jsonl=path, monotonic=ticks)
    log.record("unlock", name="Ada", track=1)
    path.unlink()
    log.record("relock", name="Ada", reason="timeout")
    assert log.failing() == ["jsonl"] and log.pending == 1  # before: written into the void
    ticks.now += RETRY_MAX_SECONDS
    log.maintain()
    log.record("unlock", name="Bob", track=2)
    log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["type"], r["name"]) for r in lines] == [("relock", "Ada"), ("unlock", "Bob")]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- an SQLite file that is not ours ------------------------------------------------------------


def _old_gallery(path: Path) -> None:
    """A gallery from before galleries carried an application_id (schema version 1)."""
    from edge_app.gallery import SCHEMA_V1

    with closing(sqlite3.connect(path)) as db:
        for statement in SCHEMA_V1:
            db.execute(statement)
        db.execute("INSERT INTO people (name, created_utc) VALUES ('Ada', '2020-01-01T00:00:00Z')")
        db.execute("PRAGMA user_version = 1")
        db.commit()


def _another_app(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
        db.execute("INSERT INTO notes VALUES ('mine')")
        db.commit()


def _our_table_name_only(path: Path) -> None:
    """Found by an audit: an `events` table of another program's columns, version 1; doctor
    said the door would bring it to version 2, the door did, then every write failed."""
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, time REAL, type TEXT)")
        db.execute("INSERT INTO events VALUES (1, 0.0, 'theirs')")
        db.execute("PRAGMA user_version = 1")
        db.commit()


def _gallery(path: Path) -> None:
    vector = np.zeros(512, np.float32)
    vector[0] = 1.0
    with Gallery.open(path, create=True) as gallery:
        gallery.enroll("Ada", [NewSample(vector, hashlib.sha256(b"a").hexdigest())])


@pytest.mark.parametrize(
    "make", [_another_app, _old_gallery, _gallery, _our_table_name_only], ids=lambda f: f.__name__
)
def test_an_sqlite_file_that_is_not_an_events_db_is_refused_and_untouched(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, make
) -> None:
    db = tmp_path / "events.db"  # e.g. events.db set to the gallery's path by mistake
    make(db)
    before = db.read_bytes()
    with caplog.at_level(logging.ERROR, logger="edge_app.events"):
        log = EventLog(db, tmp_path / "events.jsonl")
        log.record("unlock", name="Ada", track=1)
    assert log.failing() == ["db"]
    log.close()
    # Before: the events table was added and user_version set to 2 (an old gallery then
    # skipped its own migrations); a current gallery was refused as "newer: upgrade edge-app".
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.db", "events.jsonl"]
    assert any("not an edge-app events database" in m for m in errors(caplog))


# --- snapshot_keep and a clock that steps -------------------------------------------------------


@pytest.mark.parametrize("step_days", [-2, 365], ids=["back", "forward_then_back"])
def test_snapshot_keep_keeps_the_newest_written_whatever_the_clock(
    tmp_path: Path, step_days: int
) -> None:
    folder = tmp_path / "snaps"
    now = [1_700_000_000.0]
    log = EventLog(snapshots=folder, snapshot_keep=3, clock=lambda: now[0])
    steps = [0.0, step_days * DAY] + ([-step_days * DAY] if step_days > 0 else [])
    written: list[str] = []
    for step in steps:  # three visits on each clock
        now[0] += step
        for _ in range(3):
            now[0] += 60
            event = log.record("unknown", track=len(written), crop=CROP)
            assert event.snapshot is not None and Path(event.snapshot).is_file(), event
            written.append(Path(event.snapshot).name)
    # Before: a snapshot named earlier than the kept ones was deleted as soon as it was
    # written, and its event pointed at a missing file.
    assert sorted(p.name for p in folder.iterdir()) == sorted(written[-3:])


# --- a snapshot folder others can read ----------------------------------------------------------


@pytest.fixture
def foreign_folder(tmp_path: Path) -> Path:
    """A folder owned by another user (nobody), mode 0755, that this process can write."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a folder another user owns")
    folder = tmp_path / "shared"
    folder.mkdir()
    os.chown(folder, 65534, 65534)
    folder.chmod(0o755)
    return folder


def test_no_snapshot_goes_into_someone_elses_folder_others_can_read(
    tmp_path: Path, foreign_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="edge_app.events"):
        log = EventLog(tmp_path / "events.db", snapshots=foreign_folder)
        event = log.record("recognized", name="Ada", track=1, crop=CROP)
    log.close()
    assert event.snapshot is None and list(foreign_folder.iterdir()) == []
    assert stat.S_IMODE(foreign_folder.stat().st_mode) == 0o755  # not ours: left as it is
    assert [e.name for e in read_events(tmp_path / "events.db")] == ["Ada"]
    assert any("belongs to another user (uid 65534)" in m for m in errors(caplog))


def test_a_snapshot_folder_opened_up_while_the_door_runs_gets_no_snapshot_until_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Checked before every snapshot, never chmod-ed back (whoever opened it up chose to):
    no snapshot goes into it while others may read it, and they resume once it is 0700."""
    folder = tmp_path / "snaps"
    log = EventLog(snapshots=folder)
    folder.chmod(0o755)  # someone's `chmod -R a+rX` while the door runs
    with caplog.at_level(logging.ERROR, logger="edge_app.events"):
        event = log.record("recognized", name="Ada", track=1, crop=CROP)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert event.snapshot is None and list(folder.iterdir()) == []
    assert any("others may read it (mode 755)" in m for m in errors(caplog))
    folder.chmod(0o700)
    again = log.record("recognized", name="Ada", track=2, crop=CROP)
    assert again.snapshot is not None and Path(again.snapshot).is_file()


def test_the_door_unlocks_on_time_and_writes_no_snapshot_into_a_folder_others_can_read(
    tmp_path: Path, foreign_folder: Path
) -> None:
    daemon, factory = door_on_a_visit_of_ada(tmp_path, foreign_folder)
    assert daemon.run() == 0
    assert states(factory) == [False, True, False]
    assert_fail_secure(factory)
    assert list(foreign_folder.iterdir()) == []
    stored = read_events(tmp_path / "events.db")
    assert [e.type for e in stored] == ["recognized", "unlock", "relock"]
    assert all(e.snapshot is None for e in stored)


def test_a_snapshot_folder_that_cannot_be_used_is_logged_once_not_per_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ticks = Ticks()
    blocker = tmp_path / "file"
    blocker.write_text("")
    with caplog.at_level(logging.ERROR, logger="edge_app.events"):
        log = EventLog(snapshots=blocker / "snaps", monotonic=ticks)
        for track in range(20):
            assert log.record("unknown", track=track, crop=CROP).snapshot is None
    assert log.snapshot_errors == 21  # counted every time (the folder at start, then each)
    assert len(errors(caplog)) == 1  # before: one error line per event
    caplog.clear()
    ticks.now += LOG_EVERY_SECONDS
    with caplog.at_level(logging.ERROR, logger="edge_app.events"):
        log.record("unknown", track=20, crop=CROP)
    assert len(errors(caplog)) == 1 and "suppressed=20" in errors(caplog)[0]


# --- standard output that fails -----------------------------------------------------------------


def test_events_on_standard_output_are_written_once_after_a_failed_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--events -` into a pipe that is full (a reader that stalls): the writes fail, then the
    reader drains it; every event must come out once, as whole lines."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    os.set_blocking(read_end, False)
    filler = 0
    try:
        while True:
            filler += os.write(write_end, b"x" * 4096)
    except BlockingIOError:
        pass
    stream = open(write_end, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    monkeypatch.setattr(sys, "stdout", stream)
    ticks = Ticks()
    log = EventLog(jsonl=Path("-"), monotonic=ticks)
    for track in range(3):
        log.record("unknown", track=track)
        ticks.now += RETRY_MAX_SECONDS
        log.maintain()
    assert log.failing() == ["jsonl"]
    received = b""

    def drain() -> None:
        nonlocal received
        try:
            while chunk := os.read(read_end, 65536):
                received += chunk
        except BlockingIOError:
            pass

    drain()
    ticks.now += RETRY_MAX_SECONDS
    log.maintain()
    log.close()
    assert log.failing() == []
    monkeypatch.undo()
    with contextlib.suppress(OSError):
        stream.close()
    drain()
    os.close(read_end)
    lines = received[filler:].decode().splitlines()
    # Before: [0, 0, 0, 1, 0, 1, 2, 0, 1, 2], every retry's copy left in Python's buffer.
    assert [json.loads(line)["track"] for line in lines] == [0, 1, 2]


def test_an_events_database_holding_a_trigger_is_refused_and_left_alone(tmp_path: Path) -> None:
    """An audit: a trigger stored in events.db silently deleted the unlock rows the door
    recorded (the audit log erased as it was written)."""
    from edge_app.events import EventLog

    db = tmp_path / "events.db"
    EventLog(db).close()
    with sqlite3.connect(db) as connection:
        connection.execute(
            "CREATE TRIGGER erase AFTER INSERT ON events WHEN NEW.type = 'unlock' "
            "BEGIN DELETE FROM events WHERE id = NEW.id; END"
        )
    connection.close()
    before = db.read_bytes()
    log = EventLog(db)
    log.record("unlock", name="Ada")
    assert log.failing() == ["db"]
    log.close()
    assert db.read_bytes() == before
