"""Events reach every sink: the log as key=value, SQLite, JSON lines, bounded snapshots."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from test_hostile_input import in_own_mounts, needs_read_only_mount

from edge_app.config import ClockConfig
from edge_app.events import (
    DB_BUSY_SECONDS,
    MAX_CUT_LINE,
    RETENTION_CLOCK_RETRY_SECONDS,
    RETRY_MAX_SECONDS,
    Event,
    EventLog,
    read_events,
)
from edge_app.wall_clock import ALWAYS, UNSET, WallClock


def snapshot_name(event: Event) -> str:
    assert event.snapshot is not None, event
    return Path(event.snapshot).name


def test_every_sink_gets_the_event(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db, jsonl = tmp_path / "events.db", tmp_path / "events.jsonl"
    log = EventLog(db, jsonl, clock=lambda: 1_700_000_000.5)
    with caplog.at_level(logging.INFO, logger="edge_app.events"):
        log.record("unlock", name="Ada Lovelace", score=0.81234, track=3, source_time=1.25)
        log.record("unknown", score=0.3, track=4)
        log.record("relock", name="Ada Lovelace", reason="timeout")
    log.close()
    # The event lines (opening the database may log its creation before them, when another
    # test left the root logger at INFO).
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("event ")]
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
        "liveness": None,
        "geometry": None,
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
    assert kept == sorted(snapshot_name(e) for e in events[2:])
    assert all("/" not in name[:-4].replace("_", "") for name in kept)
    assert oct(os.stat(folder / kept[0]).st_mode & 0o777) == "0o600"


def test_empty_snapshots_a_power_cut_left_are_removed_when_the_door_starts(
    tmp_path: Path,
) -> None:
    """Found by a storage audit: a power cut a few seconds after a snapshot left it 0 bytes
    under its name (ext4 committed the link before the picture's data). The next start
    removes such files (there is no picture in them), and keeps every other file."""
    folder = tmp_path / "snaps"
    folder.mkdir(mode=0o700)
    empty = "20260101T000000.000Z_recognized_Ada_t1.jpg"
    whole = "20260101T000001.000Z_unlock_Ada_t1.jpg"
    mine = "holiday.jpg"  # not named as a snapshot: never the door's to delete
    (folder / empty).write_bytes(b"")
    (folder / whole).write_bytes(b"a picture")
    (folder / mine).write_bytes(b"")
    log = EventLog(snapshots=folder, snapshot_keep=10, clock=lambda: 1_800_000_000.0)
    event = log.record("recognized", name="Ada", track=2, crop=np.full((20, 20, 3), 90, np.uint8))
    assert sorted(p.name for p in folder.iterdir()) == sorted([whole, mine, snapshot_name(event)])


def test_the_snapshots_folder_is_listed_once_not_at_every_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listing and sorting the folder at every snapshot cost 74 ms per event at 5,000 kept
    files, on the frame loop; the log lists it once and then keeps the names itself, the
    daily retention included."""
    folder = tmp_path / "snaps"
    folder.mkdir(mode=0o700)
    old = "20200101T000000.000Z_unknown_x_t1.jpg"  # there before: the oldest, pruned first
    (folder / old).write_bytes(b"an old snapshot")
    listings = []
    listed = EventLog._own_snapshots

    def counted(log: EventLog) -> list[Path]:
        listings.append(1)
        return listed(log)

    monkeypatch.setattr(EventLog, "_own_snapshots", counted)
    crop = np.full((20, 20, 3), 90, np.uint8)
    now = [1_800_000_000.0]
    log = EventLog(snapshots=folder, snapshot_keep=3, retention_days=30, clock=lambda: now[0])
    for track in range(6):
        now[0] += 1.0
        log.record("unknown", track=track, crop=crop)
    assert len(listings) == 1
    names = sorted(p.name for p in folder.iterdir())
    assert old not in names and [n.split("_t")[-1] for n in names] == ["3.jpg", "4.jpg", "5.jpg"]
    now[0] += 31 * 86400.0  # all three older than the retention: deleted, and forgotten
    assert log.apply_retention() == (0, 3) and len(listings) == 2
    for track in range(6, 10):
        log.record("unknown", track=track, crop=crop)
    log.close()
    names = sorted(p.name for p in folder.iterdir())
    assert [n.split("_t")[-1] for n in names] == ["7.jpg", "8.jpg", "9.jpg"]
    assert len(listings) == 2


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


def test_unusable_paths_are_logged_and_counted_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with caplog.at_level(logging.ERROR, logger="edge_app.events"):
        log = EventLog(blocker / "events.db", blocker / "x.jsonl", snapshots=blocker / "snaps")
        log.record("recognized", name="x", crop=np.full((8, 8, 3), 9, np.uint8))
        log.record("unlock", name="x")
    assert sorted(log.failing()) == ["db", "jsonl"]
    assert log.errors >= 3 and log.pending == 4  # two events waiting in each sink
    assert "event_errors=" in log.metrics_line() and "events_pending=4" in log.metrics_line()
    messages = [r.getMessage() for r in caplog.records]
    assert any("sink=db" in m and "the door keeps working" in m for m in messages)
    assert any("snapshots folder unusable" in m for m in messages)
    log.close()
    assert blocker.read_text() == ""


class Ticks:
    """A monotonic clock the test moves, to reach retry and retention times without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_dev_full_jsonl_keeps_the_other_sinks_and_retries(tmp_path: Path) -> None:
    ticks = Ticks()
    log = EventLog(tmp_path / "events.db", Path("/dev/full"), monotonic=ticks)
    for i in range(3):
        log.record("unknown", score=0.1, track=i)
    assert log.failing() == ["jsonl"] and log.pending == 3
    assert len(read_events(tmp_path / "events.db")) == 3  # the database still got every event
    errors = log.errors
    log.maintain()  # not due yet: no new attempt
    assert log.errors == errors
    ticks.now += RETRY_MAX_SECONDS
    log.maintain()
    assert log.errors == errors + 1 and log.pending == 3  # retried, still full
    log.close()


def test_bounded_buffer_drops_the_oldest(tmp_path: Path, monkeypatch) -> None:
    from edge_app import events as module

    monkeypatch.setattr(module, "PENDING_MAX", 5)
    log = EventLog(jsonl=Path("/dev/full"))
    for i in range(12):
        log.record("unknown", track=i)
    assert log.pending == 5 and log.dropped == 7
    log.close()


@pytest.fixture
def read_only_file(tmp_path: Path):
    """A file this process cannot write: mode 0444, or, as root (which ignores modes), a
    read-only bind mount of its folder."""
    folder = tmp_path / "ro"
    folder.mkdir()
    target = folder / "events.jsonl"
    target.write_text('{"kept": true}\n')
    if os.geteuid() != 0:
        target.chmod(0o444)
        yield target
        return
    mounted = tmp_path / "ro-mount"
    mounted.mkdir()
    done = subprocess.run(["mount", "-o", "bind,ro", str(folder), str(mounted)], check=False)
    if done.returncode != 0:
        pytest.skip("running as root without permission to make a read-only bind mount")
    try:
        yield mounted / "events.jsonl"
    finally:
        subprocess.run(["umount", str(mounted)], check=False)


def test_a_line_cut_short_by_an_earlier_run_is_removed_not_glued_to_the_next_event(
    tmp_path: Path,
) -> None:
    """An audit: a full disk cut a line after `{"ti`, the door stopped, and the next run
    wrote its first event onto that piece: `{"ti{"time": ...`, a line no reader parses."""
    jsonl = tmp_path / "missing" / "folder" / "events.jsonl"  # its folder is made
    first = EventLog(jsonl=jsonl)
    first.record("unlock", name="Ada")
    first.close()
    complete = jsonl.read_bytes()
    with jsonl.open("ab") as handle:
        handle.write(b'{"ti')
    second = EventLog(jsonl=jsonl)
    second.record("relock", reason="close")
    second.close()
    lines = jsonl.read_bytes().splitlines()
    assert jsonl.read_bytes().startswith(complete)
    assert [json.loads(line)["type"] for line in lines] == ["unlock", "relock"]
    # A piece longer than any event line is ended, not cut: whatever it is stays.
    blob = b"x" * (MAX_CUT_LINE + 10)
    jsonl.write_bytes(blob)
    third = EventLog(jsonl=jsonl)
    third.record("unlock", name="Ada")
    third.close()
    head, line = jsonl.read_bytes().splitlines()
    assert head == blob and json.loads(line)["name"] == "Ada"


@needs_read_only_mount  # root and a private mount namespace: a tmpfs that fills
def test_an_event_cut_by_a_full_disk_is_written_whole_once_there_is_room(
    tmp_path: Path,
) -> None:
    """Found by a durability audit: a full disk cut an event's line; the retry reopened the
    file, which removed the piece, then wrote the rest of the line kept for it: a line
    `metry": null}` no reader parses, and the event lost. The whole line is written again."""
    script = r"""
import os, sys, time
from edge_app.events import EventLog
folder = sys.argv[1]
path = os.path.join(folder, "events.jsonl")
ticks = [0.0]
log = EventLog(jsonl=path, monotonic=lambda: ticks[0])
fill = os.path.join(folder, "fill")
out = os.open(fill, os.O_WRONLY | os.O_CREAT, 0o600)
try:
    while True:
        os.write(out, bytes(4096))
except OSError:
    pass
os.close(out)
os.truncate(fill, os.path.getsize(fill) - 4096)  # a page: some lines, the last one cut
written = 0
while not log.failing():
    log.record("recognized", name=f"Person {written:05d}", score=0.5, track=written)
    written += 1
os.unlink(fill)  # the space is back
ticks[0] += 3600.0  # the retry is due
log.record("unknown", track=99999)
log.maintain()
log.close()
print(written + 1)
sys.stdout.flush()
os.write(1, open(path, "rb").read())
"""
    folder = tmp_path / "disk"
    folder.mkdir()
    mount = 'mount -t tmpfs -o size=64k,mode=0700 tmpfs "$1" && exec "$2" -c "$3" "$1"'
    done = in_own_mounts(mount, str(folder), sys.executable, script, timeout=120)
    assert done.returncode == 0, done.stderr
    count, *lines = done.stdout.splitlines()
    events = [json.loads(line) for line in lines]  # every line whole
    assert len(events) == int(count) > 2
    assert [e.get("name") for e in events[:-1]] == [
        f"Person {i:05d}" for i in range(len(events) - 1)
    ]
    assert events[-1]["type"] == "unknown"


def test_read_only_jsonl_is_counted_and_left_untouched(tmp_path: Path, read_only_file) -> None:
    before = read_only_file.read_bytes()
    log = EventLog(tmp_path / "events.db", read_only_file)
    log.record("unlock", name="Ada", track=1)
    assert log.failing() == ["jsonl"] and log.errors == 1
    assert [e.type for e in read_events(tmp_path / "events.db")] == ["unlock"]
    log.close()
    assert read_only_file.read_bytes() == before


def test_corrupt_db_is_left_byte_identical_and_retried(tmp_path: Path) -> None:
    ticks = Ticks()
    db = tmp_path / "events.db"
    garbage = b"this is not an SQLite file\n" * 100
    db.write_bytes(garbage)
    log = EventLog(db, tmp_path / "events.jsonl", monotonic=ticks)
    log.record("unlock", name="Ada", track=1)
    assert log.failing() == ["db"]
    assert db.read_bytes() == garbage and sorted(p.name for p in tmp_path.iterdir()) == [
        "events.db",
        "events.jsonl",
    ]
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 1
    db.unlink()  # the administrator moves the broken file away
    log.record("relock", name="Ada", reason="timeout")
    assert log.failing() == ["db"]  # not retried before its backoff
    ticks.now += RETRY_MAX_SECONDS
    log.maintain()
    assert log.failing() == [] and log.pending == 0
    assert [e.type for e in read_events(db)] == ["unlock", "relock"]  # nothing lost, in order
    log.close()


def test_locked_db_costs_at_most_the_busy_timeout_then_catches_up(tmp_path: Path) -> None:
    ticks = Ticks()
    db = tmp_path / "events.db"
    EventLog(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    log = EventLog(db, monotonic=ticks)
    start = time.monotonic()
    log.record("unlock", name="Ada", track=1)
    log.record("relock", name="Ada", reason="timeout")  # buffered: no second wait
    assert time.monotonic() - start < DB_BUSY_SECONDS + 1.0
    assert log.failing() == ["db"] and log.pending == 2
    holder.execute("COMMIT")
    holder.close()
    ticks.now += RETRY_MAX_SECONDS
    log.maintain()
    assert log.failing() == []
    assert [e.type for e in read_events(db)] == ["unlock", "relock"]
    log.close()


def test_jsonl_is_created_0600_under_any_umask_and_reopened_after_rotation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.jsonl"
    old = os.umask(0o022)
    try:
        log = EventLog(jsonl=path)
    finally:
        os.umask(old)
    log.record("unlock", name="Ada", track=1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.rename(tmp_path / "events.jsonl.1")  # logrotate
    log.record("relock", name="Ada", reason="timeout")  # still the old (renamed) file
    log.reopen()  # SIGHUP
    log.record("unlock", name="Bob", track=2)
    log.close()
    assert len((tmp_path / "events.jsonl.1").read_text().splitlines()) == 2
    assert json.loads(path.read_text())["name"] == "Bob"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    mine = tmp_path / "mine.jsonl"
    mine.write_text("")
    mine.chmod(0o640)  # an existing file is not ours to chmod
    with caplog.at_level(logging.WARNING, logger="edge_app.events"):
        EventLog(jsonl=mine).close()
    assert stat.S_IMODE(mine.stat().st_mode) == 0o640
    said = [
        r.getMessage()
        for r in caplog.records
        if r.name == "edge_app.events" and r.levelno >= logging.WARNING
    ]
    assert said == [
        f"events file {mine} is mode 640: others on this machine may read who came in and "
        f"when; `chmod 600 {mine}` unless a log reader needs it"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge_app.events"):
        EventLog(jsonl=path).close()  # 0600: nothing to say
    assert not [
        r for r in caplog.records if r.name == "edge_app.events" and r.levelno >= logging.WARNING
    ]


def test_user_photos_in_the_snapshot_folder_are_never_pruned(tmp_path: Path) -> None:
    folder = tmp_path / "snaps"
    folder.mkdir(mode=0o700)
    theirs = {
        "holiday.jpg": b"\xff\xd8 a user's photo",
        "20200101T000000.000Z_unknown_x_t1.jpg.bak": b"not ours either",
        "20200101T000000.000Z_opened_x_t1.jpg": b"unknown type: not ours",
    }
    for name, data in theirs.items():
        (folder / name).write_bytes(data)
    crop = np.full((40, 30, 3), 128, np.uint8)
    clock = iter(1_700_000_000.0 + i for i in range(20))
    log = EventLog(snapshots=folder, snapshot_keep=2, clock=lambda: next(clock))
    events = [log.record("unknown", track=i, crop=crop) for i in range(5)]
    log.close()
    ours = sorted(p.name for p in folder.iterdir() if p.name not in theirs)
    assert ours == [snapshot_name(e) for e in events[3:]]
    for name, data in theirs.items():
        assert (folder / name).read_bytes() == data


def test_retention_deletes_old_rows_and_own_snapshots_only(tmp_path: Path) -> None:
    ticks = Ticks()
    day = 86400.0
    now = [1_800_000_000.0 - 100 * day]
    db, folder = tmp_path / "events.db", tmp_path / "snaps"
    crop = np.full((20, 20, 3), 50, np.uint8)
    log = EventLog(
        db,
        snapshots=folder,
        retention_days=90,
        clock=lambda: now[0],
        monotonic=ticks,
        clock_trusted=lambda: True,
    )
    log.record("unknown", track=1, crop=crop)  # 100 days old by the time retention runs
    (folder / "holiday.jpg").write_bytes(b"keep me")
    os.utime(folder / "holiday.jpg", (0, 0))  # ancient, but not ours
    now[0] += 95 * day
    log.record("unknown", track=2, crop=crop)  # 5 days old
    now[0] += 5 * day
    log.maintain()  # the first call applies the retention at once
    assert [e.track for e in read_events(db)] == [2]
    assert sorted(p.name for p in folder.iterdir())[-1] == "holiday.jpg"
    assert len(list(folder.iterdir())) == 2
    now[0] += 86 * day
    log.maintain()  # not a day later on the monotonic clock: not run again
    assert [e.track for e in read_events(db)] == [2]
    ticks.now += day
    log.maintain()
    assert read_events(db) == [] and [p.name for p in folder.iterdir()] == ["holiday.jpg"]
    log.close()


def past_the_retention(db: Path, departed: int) -> EventLog:
    """A door's log whose first `departed` events are 99 days old, past a 90-day retention
    not yet applied, and one event of today."""
    day = 86400.0
    now = [1_800_000_000.0 - 100 * day]
    log = EventLog(db, retention_days=90, clock=lambda: now[0], clock_trusted=lambda: True)
    for track in range(departed):
        log.record("recognized", name="Departed Person", score=0.8, track=track)
    now[0] += 99 * day
    log.record("recognized", name="Resident", score=0.8, track=500)
    return log


def test_events_past_the_retention_leave_no_copy_in_the_files_of_a_running_door(
    tmp_path: Path,
) -> None:
    """Found by a privacy audit: events the retention deleted stayed readable in
    events.db-wal (1,365 copies of a name right after it ran) while the door kept the
    database open, until about 500 later events overwrote them: weeks beyond
    retention_days on a household door. The retention now empties the -wal file, and the
    database overwrites what it deletes whatever SQLite was built with."""
    db = tmp_path / "events.db"
    log = past_the_retention(db, 200)
    log.maintain()
    assert [e.name for e in read_events(db)] == ["Resident"]
    files = sorted(tmp_path.glob("events.db*"))
    assert {f.name for f in files} >= {"events.db", "events.db-wal"}
    assert {f.name: f.read_bytes().count(b"Departed Person") for f in files} == {
        f.name: 0 for f in files
    }
    assert log._db_sink is not None and log._db_sink.db is not None
    assert log._db_sink.db.execute("PRAGMA secure_delete").fetchone() == (1,)
    log.close()


def test_the_retention_on_the_frame_loop_waits_for_a_reader_once_not_in_tries(
    tmp_path: Path,
) -> None:
    """Found by a review: the -wal emptying that lets other writers in between short tries
    (the gallery's, edge_app/sqlite_files.py) made the door's daily retention, on the frame
    loop, wait 0.9 s for a reader holding an older state, past DB_BUSY_SECONDS (0.5 s, what
    a locked events.db may stall the loop). Nobody else writes the door's events: one try,
    waiting the connection's own busy timeout."""
    db = tmp_path / "events.db"
    log = past_the_retention(db, 20)
    assert log._db_sink is not None and log._db_sink.db is not None
    statements: list[str] = []
    log._db_sink.db.set_trace_callback(statements.append)
    reader = sqlite3.connect(db)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()  # an older state, held
        log.maintain()
    finally:
        reader.close()
    checkpoints = [s for s in statements if "wal_checkpoint" in s]
    assert checkpoints == ["PRAGMA wal_checkpoint(TRUNCATE)"]
    assert not [s for s in statements if s.startswith("PRAGMA busy_timeout =")]  # its own
    assert [e.name for e in read_events(db)] == ["Resident"]  # deleted all the same
    log.close()


def test_retention_zero_keeps_everything(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.db", clock=lambda: 0.0)
    log.record("unknown", track=1)
    log.maintain()
    assert log.apply_retention() == (0, 0)
    log.close()
    assert len(read_events(tmp_path / "events.db")) == 1


def test_schema_is_versioned_and_a_legacy_file_is_adopted(tmp_path: Path) -> None:
    from edge_app.events import SCHEMA_V1, SCHEMA_VERSION

    legacy = tmp_path / "legacy.db"
    with closing(sqlite3.connect(legacy)) as connection:
        for statement in SCHEMA_V1:
            connection.execute(statement)
        connection.execute("INSERT INTO events (time, type) VALUES (1.0, 'unlock')")
        connection.commit()
    log = EventLog(legacy)
    log.record("relock", reason="close")
    log.close()
    assert [e.type for e in read_events(legacy)] == ["unlock", "relock"]
    with closing(sqlite3.connect(legacy)) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        columns = [row[1] for row in connection.execute("PRAGMA table_info(events)")]
    assert columns[-2:] == ["liveness", "geometry"]  # version 2 added them to the old rows
    assert read_events(legacy)[0].liveness is None


def test_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    with closing(sqlite3.connect(db)) as connection:
        connection.execute("PRAGMA user_version = 99")
    before = db.read_bytes()
    log = EventLog(db)
    log.record("unlock", name="Ada")
    assert log.failing() == ["db"]
    log.close()
    assert db.read_bytes() == before


def test_from_config(tmp_path: Path) -> None:
    from edge_app.config import EventsConfig

    config = EventsConfig(db=tmp_path / "e.db", jsonl=None, retention_days=7, snapshot_keep=3)
    wall = WallClock(source=lambda: UNSET)
    log = EventLog.from_config(config, wall)
    assert (log.db_path, log.retention_days, log.snapshot_keep) == (tmp_path / "e.db", 7, 3)
    assert log._clock_trusted() is False  # the door's wall clock, and its [clock] trust
    wall.configure(ClockConfig(trust=ALWAYS))
    assert log._clock_trusted() is True
    log.close()


class Wall:
    """A wall clock in seconds that tests set, and whether it counts as set."""

    def __init__(self, now: float, trusted: bool = True) -> None:
        self.now, self.trusted = now, trusted

    def __call__(self) -> float:
        return self.now


def test_retention_waits_while_nothing_has_set_the_clock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect (an outside time audit): a door whose clock read a year ahead at boot (an RTC
    set wrong, a hand-set date) deleted its whole history and every snapshot at the first
    frame, before NTP could correct it. Retention now acts only on a clock something set,
    and looks again every RETENTION_CLOCK_RETRY_SECONDS."""
    day = 86400.0
    ticks = Ticks()
    wall = Wall(1_800_000_000.0)
    db = tmp_path / "events.db"
    log = EventLog(db, retention_days=90, clock=wall, monotonic=ticks)
    for track in range(3):
        log.record("unknown", track=track)
        wall.now += day
    log.close()
    wall.now += 365 * day  # the next boot: a year ahead, and not synchronised
    wall.trusted = False
    log = EventLog(
        db, retention_days=90, clock=wall, monotonic=ticks, clock_trusted=lambda: wall.trusted
    )
    with caplog.at_level(logging.WARNING, logger="edge_app.events"):
        log.maintain()
    assert [e.track for e in read_events(db)] == [0, 1, 2]
    assert "retention waits" in caplog.text and "[clock] trust" in caplog.text
    wall.now -= 365 * day  # NTP sets it right
    wall.trusted = True
    ticks.now += RETENTION_CLOCK_RETRY_SECONDS - 1
    log.maintain()  # not looked at again yet
    ticks.now += 1
    with caplog.at_level(logging.INFO, logger="edge_app.events"):
        log.maintain()
    assert "retention applied days=90 events_deleted=0" in caplog.text
    assert [e.track for e in read_events(db)] == [0, 1, 2]
    log.close()


def test_a_log_with_nothing_retention_reaches_never_says_retention_waits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect (a new user's walkthrough): `run --events - --events-db ''` (run --help's own
    example) warned "retention waits" on an unset clock, though without events.db and
    snapshots the retention has nothing to delete (it never reaches the JSON-lines file)."""
    log = EventLog(
        jsonl=tmp_path / "events.jsonl",
        retention_days=90,
        monotonic=Ticks(),
        clock_trusted=lambda: False,
    )
    with caplog.at_level(logging.INFO, logger="edge_app.events"):
        log.maintain()
    log.close()
    assert "retention" not in caplog.text


def test_events_stamped_by_a_wrong_clock_go_with_their_neighbours(tmp_path: Path) -> None:
    """Defect (an outside time audit): events written at a boot before NTP set the clock
    (stamped 1970) were deleted by the first retention after it was set, hours after they
    happened; events stamped while the clock was ahead were kept for years. Retention
    deletes in the order events were written, up to the last one older than the
    retention, so each wrong stamp goes when its neighbours in the table do."""
    day = 86400.0
    start = 1_800_000_000.0
    wall = Wall(start)
    db = tmp_path / "events.db"
    log = EventLog(db, retention_days=90, clock=wall, clock_trusted=lambda: True)
    log.record("unlock", name="before")  # at start
    wall.now = 60.0  # a boot before NTP: 1970
    log.record("unlock", name="at-boot")
    wall.now = start + 5 * 365 * day  # then a clock five years ahead
    log.record("unlock", name="ahead")
    wall.now = start + 10 * day  # set right
    log.record("unlock", name="after")
    assert log.apply_retention() == (0, 0)  # the 1970 event is not "56 years old"
    assert [e.name for e in read_events(db)] == ["before", "at-boot", "ahead", "after"]
    wall.now = start + 95 * day  # "before" is older than 90 days; "after" is not
    assert log.apply_retention() == (1, 0)
    assert [e.name for e in read_events(db)] == ["at-boot", "ahead", "after"]
    wall.now = start + 101 * day  # "after" is: the wrong stamps before it go with it
    assert log.apply_retention() == (3, 0)
    assert read_events(db) == []
    log.close()


def test_snapshots_named_before_the_clock_was_set_are_left_to_the_count_limit(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "snaps"
    crop = np.full((20, 20, 3), 50, np.uint8)
    wall = Wall(60.0)  # 1970: a boot before NTP
    log = EventLog(snapshots=folder, retention_days=90, clock=wall, clock_trusted=lambda: True)
    log.record("unknown", track=1, crop=crop)
    wall.now = 1_800_000_000.0
    log.record("unknown", track=2, crop=crop)
    wall.now += 91 * 86400.0
    assert log.apply_retention() == (0, 1)
    assert [p.name[:8] for p in folder.iterdir()] == ["19700101"]
    log.close()


def test_a_snapshot_whose_name_is_taken_after_a_step_back_is_numbered(tmp_path: Path) -> None:
    """Defect (an outside time audit): after the clock stepped back, a snapshot could get
    the name of an older one (same millisecond, kind, person and track); the older file was
    kept, rightly, and the new event was recorded without its snapshot. It is numbered."""
    folder = tmp_path / "snaps"
    crop = np.full((20, 20, 3), 50, np.uint8)
    log = EventLog(snapshots=folder, snapshot_keep=3, clock=lambda: 1_800_000_000.0)
    first = log.record("unknown", track=1, crop=crop).snapshot
    second = log.record("unknown", track=1, crop=crop).snapshot
    assert first is not None and second is not None
    assert Path(second).name == Path(first).name.replace("_t1.jpg", "_t1-2.jpg")
    assert log.snapshot_errors == 0
    for _ in range(2):  # both are the door's own: counted and pruned as snapshots
        log.record("unknown", track=1, crop=crop)
    log.close()
    assert sorted(p.name[-9:] for p in folder.iterdir()) == ["_t1-2.jpg", "_t1-3.jpg", "_t1-4.jpg"]
