"""Storage under attack and under failure: planted links and pipes, odd event fields, a full
disk, a gallery behind a link or from a newer edge-app. Real files and real SQLite."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import signal
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_app.events import EVENT_TEXT_MAX, EventLog, read_events
from edge_app.gallery import EMBEDDING_DIM, Gallery, GalleryError, NewSample


def strict_json(line: str) -> object:
    """json.loads that refuses NaN and Infinity, as jq and most JSON parsers do."""

    def refuse(constant: str) -> object:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


def test_a_named_pipe_as_the_jsonl_file_never_blocks_the_door(tmp_path: Path) -> None:
    fifo = tmp_path / "events.jsonl"
    os.mkfifo(fifo)
    made: list[EventLog] = []
    opener = threading.Thread(
        target=lambda: made.append(EventLog(tmp_path / "events.db", fifo)), daemon=True
    )
    opener.start()
    opener.join(timeout=10.0)  # opening also makes the database (with fsync): not a hang
    blocked = opener.is_alive()
    if blocked:  # let the blocked open return, so the test ends either way
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        opener.join(timeout=2.0)
    assert not blocked, "opening the events sinks waited for a reader of the pipe"
    log = made[0]
    log.record("unlock", name="Ada")
    assert log.failing() == ["jsonl"]  # refused, retried later; the door goes on
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    log.close()
    assert [e.name for e in read_events(tmp_path / "events.db")] == ["Ada"]


def test_a_symlink_as_the_jsonl_file_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "authorized_keys"
    victim.write_text("ssh-ed25519 AAAA owner\n")
    link = tmp_path / "events.jsonl"
    link.symlink_to(victim)
    log = EventLog(tmp_path / "events.db", link)
    log.record("unlock", name="Ada")
    log.reopen()  # SIGHUP opens it again: still refused
    log.close()
    assert victim.read_text() == "ssh-ed25519 AAAA owner\n"
    assert log.failing() == ["jsonl"] and link.is_symlink()
    assert [e.name for e in read_events(tmp_path / "events.db")] == ["Ada"]


def test_a_symlink_as_the_events_db_is_not_followed(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        target = tmp_path / "elsewhere.db"
        link = tmp_path / "events.db"
        link.symlink_to(target)
        log = EventLog(link, tmp_path / "events.jsonl")
        log.record("unlock", name="Ada")
        log.close()
    finally:
        os.umask(old)
    # Followed, SQLite created the target with the umask's mode 0644: names readable by all.
    assert not target.exists()
    assert log.failing() == ["db"] and link.is_symlink()
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 1


def test_read_events_never_creates_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "events.db"
    with pytest.raises(sqlite3.Error):
        read_events(missing)
    assert not missing.exists()


def test_one_odd_event_never_jams_a_sink_nor_forges_a_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db, jsonl = tmp_path / "events.db", tmp_path / "events.jsonl"
    log = EventLog(db, jsonl)
    odd: list[dict[str, Any]] = [
        {"track": np.int64(3)},  # numpy ints are not JSON: TypeError out of record() before
        {"score": float("nan"), "liveness": float("inf")},  # NaN is not JSON
        {"name": "x" * 100_000},
        {"name": 'Eve\n{"type": "unlock", "name": "Mallory"}\x1b[2J'},
        {"reason": "lone \ud800 surrogate"},  # UTF-8 cannot hold it: the db sink failed forever
    ]
    with caplog.at_level(logging.INFO, logger="edge_app.events"):
        for fields in odd:
            log.record("unknown", **fields)
        log.record("unlock", name="Ada")
    assert log.failing() == [] and log.pending == 0 and log.errors == 0
    log.close()
    records = [strict_json(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert [r["type"] for r in records] == ["unknown"] * 5 + ["unlock"]  # type: ignore[index]
    stored = read_events(db)
    assert [e.track for e in stored][:1] == [3]
    assert stored[1].score is None and stored[1].liveness is None
    assert len(stored[2].name or "") == EVENT_TEXT_MAX
    forged = stored[3].name or ""
    assert "\n" not in forged and "\x1b" not in forged and "Mallory" in forged
    assert stored[4].reason == "lone \ufffd surrogate"
    assert stored[5].name == "Ada"
    for message in (r.getMessage() for r in caplog.records):
        assert message.isprintable() and len(message) < 2 * EVENT_TEXT_MAX


def test_a_snapshot_cut_short_by_a_full_disk_leaves_no_half_file(tmp_path: Path) -> None:
    folder = tmp_path / "snapshots"
    log = EventLog(snapshots=folder)
    crop = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    # A file-size limit makes the write fail part way, as a full disk does (EFBIG, ENOSPC).
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (300, old_limit[1]))
    try:
        event = log.record("unknown", track=1, crop=crop)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert event.snapshot is None and log.snapshot_errors == 1
    assert list(folder.iterdir()) == []  # before: a 300-byte JPEG that decodes to nothing
    assert log.record("unknown", track=2, crop=crop).snapshot is not None  # room again


def _unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=EMBEDDING_DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _gallery_with_one_person(path: Path) -> None:
    with Gallery.open(path, create=True) as gallery:
        gallery.enroll("Ada", [NewSample(_unit(1), hashlib.sha256(b"a").hexdigest())])


def test_a_gallery_behind_a_symlink_is_kept_private_where_it_lives(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    real = tmp_path / "data" / "gallery.db"
    _gallery_with_one_person(real)
    real.chmod(0o644)  # e.g. copied into place with cp under umask 022
    link = tmp_path / "gallery.db"
    link.symlink_to(real)
    with Gallery.open(link) as gallery:
        assert gallery.load_matrix().names == ("Ada",)
        sides = [Path(f"{real}-wal"), Path(f"{real}-shm")]
        assert all(side.exists() for side in sides)  # SQLite keeps them beside the target
        for path in (real, *sides):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_gallery_from_a_newer_edge_app_is_refused_byte_identical(tmp_path: Path) -> None:
    path = tmp_path / "gallery.db"
    _gallery_with_one_person(path)
    with sqlite3.connect(path) as db:  # a newer edge-app that left WAL mode, say
        db.execute("PRAGMA journal_mode = DELETE")
        db.execute("PRAGMA user_version = 99")
    db.close()
    before = path.read_bytes()
    with pytest.raises(GalleryError, match="newer than this edge-app"):
        Gallery.open(path)
    assert path.read_bytes() == before  # before: switched to WAL on the way to the refusal
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery.db"]
