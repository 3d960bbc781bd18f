"""The files and folders the events keep, and who may read them: an events.db others may read
is made 0600, another user's is refused; a snapshots folder is never followed through a
symbolic link nor chmod-ed when it was there already (`run --snapshots .`). Whatever is
refused, the door runs, and says why in one line."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import stat
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory
from needs import unavailable
from test_daemon_fast import (
    ScriptedEngine,
    assert_fail_secure,
    door,
    gallery_of_ada,
    states,
    visit,
    write_frames,
)

from edge_app.daemon import Daemon
from edge_app.events import EventLog, read_events, snapshots_folder_problem
from edge_app.gallery import Gallery, GalleryError

CROP = np.full((40, 30, 3), 128, np.uint8)
OWN_OLD_SNAPSHOT = "20200101T000000.000Z_unknown_x_t1.jpg"


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == level and r.name == "edge_app.events"
    ]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def an_events_db(path: Path) -> None:
    """An events database with one event, closed."""
    log = EventLog(path, clock=lambda: 1_700_000_000.0)
    log.record("unlock", name="Ada")
    log.close()


def one_event(db: Path, caplog: pytest.LogCaptureFixture, **kind: str) -> EventLog:
    """An EventLog on `db` that recorded one event (`kind`: its type and name) and closed,
    its log lines at WARNING and above captured."""
    with caplog.at_level(logging.WARNING, logger="edge_app.events"):
        log = EventLog(db)
        log.record(kind.get("type", "unlock"), name=kind.get("name", "Eve"))
        log.close()
    return log


def needs_root() -> None:
    if os.geteuid() != 0:
        unavailable("needs root to make a file another user owns")


# --- events.db: mode and owner ------------------------------------------------------------------


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o666])
def test_an_events_db_others_may_read_is_made_0600_with_a_warning(
    tmp_path: Path, loose: int, caplog: pytest.LogCaptureFixture
) -> None:
    """An events.db copied under umask 022 (or made by an older edge-app) told anyone on the
    Pi who came in and when, and its -wal and -shm (SQLite copies the file's mode) too."""
    db = tmp_path / "events.db"
    an_events_db(db)
    db.chmod(loose)
    with closing(sqlite3.connect(db)) as holder:  # a reader keeps the -wal and -shm there
        holder.execute("SELECT count(*) FROM events").fetchone()
        for side in ("events.db-wal", "events.db-shm"):
            (tmp_path / side).chmod(loose)
        with caplog.at_level(logging.WARNING, logger="edge_app.events"):
            log = EventLog(db, clock=lambda: 1_700_000_001.0)
            log.record("relock", name="Ada")
            log.close()
        for name in ("events.db", "events.db-wal", "events.db-shm"):
            assert mode(tmp_path / name) == 0o600, name
    warnings = lines(caplog, logging.WARNING)
    assert len(warnings) == 3, warnings
    assert all(f"was mode {loose:o}" in w and "set to 600" in w for w in warnings)
    assert [e.type for e in read_events(db)] == ["unlock", "relock"]  # and used


def test_a_wide_events_db_and_every_side_file_beside_it_are_narrowed(tmp_path: Path) -> None:
    """The -journal as well as the -wal and -shm: the events database narrows as the gallery
    does (sqlite_access.narrow_to_private)."""
    db = tmp_path / "events.db"
    an_events_db(db)
    with closing(sqlite3.connect(db)) as holder:  # a reader keeps the -wal and -shm there
        holder.execute("SELECT count(*) FROM events").fetchone()
        (tmp_path / "events.db-journal").touch()  # empty: SQLite replays nothing from it
        names = ("events.db", "events.db-wal", "events.db-shm", "events.db-journal")
        for name in names:
            (tmp_path / name).chmod(0o644)
        EventLog(db).close()
        assert {name: mode(tmp_path / name) for name in names} == dict.fromkeys(names, 0o600)


def test_a_private_events_db_is_opened_without_a_word(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "events.db"
    an_events_db(db)
    with caplog.at_level(logging.WARNING, logger="edge_app.events"):
        EventLog(db).close()
    assert lines(caplog, logging.WARNING) == [] and mode(db) == 0o600


def test_a_file_that_is_not_an_events_db_keeps_its_mode(tmp_path: Path) -> None:
    """Narrowed only once it proved an events database: a mistyped path to another file is
    refused and changes in nothing, its mode included."""
    other = tmp_path / "notes.db"
    with closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    other.chmod(0o644)
    before = digest(other)
    log = EventLog(other)
    log.record("unlock", name="Ada")
    log.close()
    assert mode(other) == 0o644 and digest(other) == before
    assert log.failing() == ["db"]


def test_another_users_events_db_is_refused_and_left_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The file's owner could read and change the history whatever its mode: the sink is
    refused with one line, the file unchanged, and the door's other sinks go on. (This
    process is made to count as uid 4242, which owns nothing here.)"""
    db, jsonl = tmp_path / "events.db", tmp_path / "events.jsonl"
    an_events_db(db)
    db.chmod(0o666)  # anyone could write it: old code simply used it
    before = digest(db)
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    with caplog.at_level(logging.ERROR, logger="edge_app.events"):
        log = EventLog(db, jsonl)
        event = log.record("unlock", name="Bob")
        log.close()
    monkeypatch.undo()
    assert digest(db) == before and mode(db) == 0o666
    assert not (tmp_path / "events.db-wal").exists()
    assert [e.name for e in read_events(db)] == ["Ada"]
    assert '"name": "Bob"' in jsonl.read_text() and event.name == "Bob"
    errors = lines(caplog, logging.ERROR)
    refusals = [e for e in errors if "belongs to another user" in e]
    assert refusals and "\n" not in refusals[0] and "the door keeps working" in refusals[0]
    assert "set events.db to a path of the door's user" in refusals[0]


def test_another_users_events_jsonl_is_refused_and_left_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an audit: events.db of another user was refused, but events.jsonl was
    appended to with a warning only; its owner, who may read it whatever its mode, read
    every name that came in. (This process is made to count as uid 4242.)"""
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text("")
    jsonl.chmod(0o600)
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    with caplog.at_level(logging.ERROR, logger="edge_app.events"):
        log = EventLog(None, jsonl)
        log.record("unlock", name="Bob")
        log.close()
    monkeypatch.undo()
    assert jsonl.read_text() == ""
    refusals = [e for e in lines(caplog, logging.ERROR) if "belongs to another user" in e]
    assert refusals and "set events.jsonl to a path of the door's user" in refusals[0]


def test_root_uses_the_door_users_events_db_and_makes_it_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    needs_root()
    db = tmp_path / "events.db"
    an_events_db(db)
    os.chown(db, 65534, 65534)
    db.chmod(0o644)
    log = one_event(db, caplog, type="relock", name="Ada")
    assert log.failing() == [] and mode(db) == 0o600 and os.stat(db).st_uid == 65534
    assert [e.type for e in read_events(db)] == ["unlock", "relock"]
    assert any("set to 600" in w for w in lines(caplog, logging.WARNING))


def test_a_wal_of_another_user_beside_the_events_db_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite replays a -wal into the database it opens: one planted by another user could
    rewrite who came in. Refused, both files unchanged, as beside a gallery."""
    needs_root()
    db = tmp_path / "events.db"
    an_events_db(db)
    planted = tmp_path / "events.db-wal"
    planted.write_bytes(b"\x37\x7f\x06\x82" + bytes(60))  # a WAL header's magic, then junk
    os.chown(planted, 65534, 65534)
    before = (digest(db), digest(planted))
    with caplog.at_level(logging.ERROR, logger="edge_app.events"):
        log = EventLog(db)
        log.record("unlock", name="Eve")
        log.close()
    assert (digest(db), digest(planted)) == before
    assert log.failing() == ["db"]
    assert any(
        "events.db-wal is not a file of the events database's owner" in e
        for e in lines(caplog, logging.ERROR)
    )


@pytest.mark.parametrize("folder_mode", [0o777, 0o1777])
def test_an_events_db_in_a_folder_anyone_may_write_is_refused_as_a_gallery_is(
    tmp_path: Path, folder_mode: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by a review: the gallery refused a folder any user may write (sticky or not:
    anyone may plant the -wal file SQLite replays into the database), the events database
    was opened there, and created there. Both follow one rule now: refused with the
    gallery's words, the file byte-identical, nothing made beside it; the door runs."""
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o700)
    db = folder / "events.db"
    an_events_db(db)
    before = digest(db)
    folder.chmod(folder_mode)
    try:
        log = one_event(db, caplog)
        fresh = one_event(folder / "new-events.db", caplog)
        with pytest.raises(GalleryError, match="folder .* may be written by any user"):
            Gallery.open(folder / "gallery.db", create=True)
    finally:
        folder.chmod(0o700)
    assert digest(db) == before and sorted(p.name for p in folder.iterdir()) == ["events.db"]
    assert log.failing() == ["db"] and fresh.failing() == ["db"]
    refusals = [e for e in lines(caplog, logging.ERROR) if "may be written by any user" in e]
    assert len(refusals) >= 2 and all(
        f"the events database's folder {folder}" in e for e in refusals
    )
    assert "plant the -wal file SQLite replays" in refusals[0]
    assert [e.name for e in read_events(db)] == ["Ada"]


def test_an_events_db_in_a_folder_another_group_may_write_or_others_may_write_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The gallery's other rules, the events database's too: a folder a group other than
    root's or this user's may write (a member could replace the file), and another user's
    file anyone may write, which root used (and made 0600) after whoever had rewritten it."""
    needs_root()
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o700)
    db = folder / "events.db"
    an_events_db(db)
    os.chown(folder, 0, 65534)
    folder.chmod(0o770)
    try:
        log = one_event(db, caplog)
    finally:
        folder.chmod(0o700)
        os.chown(folder, 0, 0)
    assert log.failing() == ["db"]
    assert any(
        "the events database's folder" in e and "may be written by the users of group 65534" in e
        for e in lines(caplog, logging.ERROR)
    )
    caplog.clear()
    os.chown(db, 65534, 65534)
    db.chmod(0o666)
    log = one_event(db, caplog)
    assert log.failing() == ["db"] and mode(db) == 0o666
    assert any(
        "may be written by users other than its owner (mode 666, owner uid 65534)" in e
        for e in lines(caplog, logging.ERROR)
    )
    assert [e.name for e in read_events(db)] == ["Ada"]


# --- the snapshots folder -----------------------------------------------------------------------


def test_a_snapshots_folder_that_is_a_symbolic_link_is_not_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "snaps"
    link.symlink_to(real)
    with caplog.at_level(logging.ERROR, logger="edge_app.events"):
        log = EventLog(tmp_path / "events.db", snapshots=link)
        event = log.record("recognized", name="Ada", track=1, crop=CROP)
        log.close()
    assert event.snapshot is None and list(real.iterdir()) == []
    assert link.is_symlink() and mode(real) == 0o700
    assert [e.name for e in read_events(tmp_path / "events.db")] == ["Ada"]  # the door ran
    errors = lines(caplog, logging.ERROR)
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert f"symbolic link (to {real})" in errors[0] and "not followed" in errors[0]


def test_retention_never_deletes_through_a_symbolic_link(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (real / OWN_OLD_SNAPSHOT).write_bytes(b"someone else's folder")
    link = tmp_path / "snaps"
    link.symlink_to(real)
    log = EventLog(snapshots=link, retention_days=1)
    assert log.apply_retention() == (0, 0)
    log.close()
    assert (real / OWN_OLD_SNAPSHOT).read_bytes() == b"someone else's folder"


@pytest.mark.parametrize("loose", [0o755, 0o750, 0o711, 0o701])
def test_an_existing_folder_is_never_chmod_ed_and_not_used_until_it_is_private(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    loose: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`run --snapshots .` in the user's own folder: it was set to 0700 behind their back.
    Now it keeps its mode, no snapshot goes there, one line says to chmod 700 it or choose a
    new folder, and once they do, snapshots are written."""
    here = tmp_path / "home"
    here.mkdir()
    here.chmod(loose)
    (here / "notes.txt").write_text("mine")
    monkeypatch.chdir(here)
    with caplog.at_level(logging.ERROR, logger="edge_app.events"):
        log = EventLog(tmp_path / "events.db", snapshots=Path("."))
        event = log.record("unknown", track=1, crop=CROP)
    assert mode(here) == loose and event.snapshot is None
    assert sorted(p.name for p in here.iterdir()) == ["notes.txt"]
    errors = lines(caplog, logging.ERROR)
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert f"mode {loose:o}" in errors[0] and "run `chmod 700 .`" in errors[0]
    assert "a new folder" in errors[0] and "the door keeps working" in errors[0]
    here.chmod(0o700)  # the user's choice
    again = log.record("unknown", track=2, crop=CROP)
    log.close()
    assert again.snapshot is not None and Path(again.snapshot).is_file()
    assert [e.snapshot is None for e in read_events(tmp_path / "events.db")] == [True, False]


def test_a_file_where_the_snapshots_folder_should_be_is_refused_unchanged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "snaps"
    path.write_bytes(b"a file")
    path.chmod(0o644)
    with caplog.at_level(logging.ERROR, logger="edge_app.events"):
        log = EventLog(snapshots=path)
        assert log.record("unknown", track=1, crop=CROP).snapshot is None
    assert mode(path) == 0o644 and path.read_bytes() == b"a file"
    assert any("it is not a folder" in e for e in lines(caplog, logging.ERROR))


def test_a_folder_the_door_makes_is_0700_and_used(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "snaps"
    log = EventLog(snapshots=folder)
    event = log.record("unknown", track=1, crop=CROP)
    log.close()
    assert mode(folder) == 0o700 and mode(folder.parent) == 0o700
    assert event.snapshot is not None and mode(Path(event.snapshot)) == 0o600


def test_the_folder_rule_in_words(tmp_path: Path) -> None:
    """snapshots_folder_problem: what the door (and a health check) says of a folder."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    assert snapshots_folder_problem(private) is None
    assert snapshots_folder_problem(tmp_path / "missing") is None  # made 0700 when needed
    link = tmp_path / "link"
    link.symlink_to(private)
    assert "symbolic link" in (snapshots_folder_problem(link) or "")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    assert "symbolic link" in (snapshots_folder_problem(dangling) or "")
    private.chmod(0o755)
    assert "chmod 700" in (snapshots_folder_problem(private) or "")


def test_another_users_private_folder_is_refused(tmp_path: Path) -> None:
    needs_root()
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, 65534)
    log = EventLog(snapshots=folder)
    assert log.record("unknown", track=1, crop=CROP).snapshot is None
    log.close()
    assert list(folder.iterdir()) == [] and mode(folder) == 0o700
    assert "another user (uid 65534)" in (snapshots_folder_problem(folder) or "")


def door_on_a_visit_of_ada(tmp_path: Path, snapshots: Path) -> tuple[Daemon, MockFactory]:
    """The door (a ScriptedEngine, mock pins) about to run one visit of Ada, enrolled, its
    snapshots going to `snapshots`; and its pin factory."""
    gallery = gallery_of_ada(tmp_path)
    frames = write_frames(tmp_path / "frames", visit(after=40))
    factory = MockFactory()
    config = door(tmp_path, gallery, frames, events={"snapshots": str(snapshots)})
    return Daemon(config, engine=ScriptedEngine(), pin_factory=factory), factory


@pytest.mark.parametrize("how", ["symbolic link", "existing 0755 folder"])
def test_the_door_unlocks_on_time_with_a_snapshots_folder_it_refuses(
    tmp_path: Path, how: str
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    real.chmod(0o700 if how == "symbolic link" else 0o755)
    snapshots = real
    if how == "symbolic link":
        snapshots = tmp_path / "snaps"
        snapshots.symlink_to(real)
    daemon, factory = door_on_a_visit_of_ada(tmp_path, snapshots)
    assert daemon.run() == 0
    assert states(factory) == [False, True, False]
    assert_fail_secure(factory)
    assert list(real.iterdir()) == [] and mode(real) == (0o700 if how == "symbolic link" else 0o755)
    stored = read_events(tmp_path / "events.db")
    assert [e.type for e in stored] == ["recognized", "unlock", "relock"]
    assert all(e.snapshot is None for e in stored)


def rows_seen_by_another_process(db: Path, table: str = "events") -> int:
    """The rows of `table` another process sees (as the hub's history does): a connection of
    its own, opened, read and closed, which is when SQLite may remove a write-ahead log."""
    import subprocess
    import sys

    reader = (
        "import sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1])\n"
        "print(db.execute(f'SELECT count(*) FROM {sys.argv[2]}').fetchone()[0])\n"
        "db.close()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", reader, str(db), table], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


@pytest.mark.parametrize("loose", [False, True])
def test_a_restarted_door_keeps_its_write_ahead_log_while_the_hub_reads(
    tmp_path: Path, loose: bool
) -> None:
    """Defect (an outside audit of the web page): after any door restart the hub's pages
    showed no new event. Opening the events database checked the modes of events.db and its
    -wal and -shm through descriptors of their own, and closed them: closing any descriptor
    of a file drops every POSIX lock the process holds on it, SQLite's included. The hub's
    next read, alone on the file as far as the locks said, removed the write-ahead log the
    door still wrote to: its events reached neither the page nor, on a crash, the file."""
    db = tmp_path / "events.db"
    first = EventLog(db)
    first.record("unlock", name="Ada", track=1)
    first.close()
    with closing(sqlite3.connect(db)) as keeper:  # -wal and -shm stay, as a crash leaves them
        keeper.execute("PRAGMA journal_mode = WAL")
        door = EventLog(db)  # the restart
        if loose:
            for name in ("events.db", "events.db-wal", "events.db-shm"):
                (tmp_path / name).chmod(0o644)
            door.close()
            door = EventLog(db)  # narrows them, by path
            assert stat.S_IMODE((tmp_path / "events.db-shm").stat().st_mode) == 0o600
        keeper.close()
        for count in (2, 3):
            door.record("unlock", name="Ada", track=count)
            assert rows_seen_by_another_process(db) == count
        assert (tmp_path / "events.db-wal").exists()
        door.close()
    assert [e.track for e in read_events(db)] == [1, 2, 3]
