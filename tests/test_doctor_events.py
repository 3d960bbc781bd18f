"""doctor says what the door will do with its event store and snapshots folder, by the door's
own rules (edge_app/events.py), and changes neither."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge_app.commands.doctor import _events_checks
from edge_app.config import load_config
from edge_app.events import snapshots_folder_problem

REPO = Path(__file__).resolve().parent.parent


def config_file(tmp_path: Path, db: Path, snapshots: Path) -> Path:
    path = tmp_path / "door.toml"
    path.write_text(
        f'[gallery]\npath = "{tmp_path / "gallery.db"}"\n'
        f'[events]\ndb = "{db}"\nsnapshots = "{snapshots}"\n'
    )
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_private_store_and_a_missing_snapshots_folder_need_no_warning(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    db.touch(mode=0o600)  # an empty file: the door makes it its events database
    config = load_config(config_file(tmp_path, db, tmp_path / "snapshots"))
    assert [(c.area, c.status) for c in _events_checks(config)] == [("events", "ok")]


def test_loose_modes_are_warned_in_the_doors_words_and_left_as_they_are(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    db.touch()
    db.chmod(0o644)
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    snapshots.chmod(0o755)
    config = load_config(config_file(tmp_path, db, snapshots))

    rows = {check.area: check for check in _events_checks(config)}

    assert rows["events"].status == "warn" and "mode 644" in rows["events"].detail
    assert "sets it to 600" in rows["events"].fix
    assert rows["snapshots"].status == "warn"
    assert rows["snapshots"].detail == f"{snapshots}: {snapshots_folder_problem(snapshots)}"
    assert f"chmod 700 {snapshots}" in rows["snapshots"].detail
    assert (mode(db), mode(snapshots)) == (0o644, 0o755)  # doctor only reads


def test_another_users_events_db_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "events.db"
    db.touch(mode=0o600)
    config = load_config(config_file(tmp_path, db, tmp_path / "snapshots"))
    # The door's user is someone else than the file's owner (the file and its mode are real).
    monkeypatch.setattr(os, "geteuid", lambda: os.lstat(db).st_uid + 4242)

    (row,) = _events_checks(config)

    assert row.area == "events" and row.status == "fail"
    assert "belongs to another user" in row.detail and "records no event" in row.fix


def test_an_events_db_to_be_made_in_a_folder_anyone_may_write_fails(tmp_path: Path) -> None:
    """The door refuses to create it there (as the gallery): "does not exist yet: the door
    creates it" would be wrong."""
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    config = load_config(config_file(tmp_path, folder / "events.db", tmp_path / "snapshots"))

    (row,) = _events_checks(config)

    assert row.area == "events" and row.status == "fail"
    assert "folder" in row.detail and "may be written by any user" in row.detail
    assert "records no event" in row.fix and list(folder.iterdir()) == []


def test_doctor_fails_on_an_events_db_that_is_a_link_and_warns_on_a_linked_folder(
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    db = tmp_path / "events.db"
    db.symlink_to(elsewhere / "events.db")
    snapshots = tmp_path / "snapshots"
    snapshots.symlink_to(elsewhere)
    config = config_file(tmp_path, db, snapshots)

    done = subprocess.run(
        [sys.executable, "-m", "edge_app.cli", "doctor", "--json", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )

    rows = {row["area"]: row for row in json.loads(done.stdout)}
    assert done.returncode == 1, done.stderr
    assert rows["events"]["status"] == "fail" and "symbolic link" in rows["events"]["detail"]
    assert rows["snapshots"]["status"] == "warn"
    assert "symbolic link" in rows["snapshots"]["detail"]
    assert db.is_symlink() and not (elsewhere / "events.db").exists()  # nothing made


def test_a_damaged_or_unwritable_events_db_is_not_ok(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an audit: with 300 bytes of a page overwritten, doctor said `OK events ...
    events schema version 2` while the door logged "database disk image is malformed" and
    lost every event; so too a file this user may not write. Its pages are checked
    (quick_check, read only) and whether this user may write it."""
    from edge_app.events import EventLog

    db = tmp_path / "events.db"
    log = EventLog(db, None)
    for number in range(300):
        log.record("unknown", track=number, reason="x" * 200)
    log.close()
    config = load_config(config_file(tmp_path, db, tmp_path / "snapshots"))
    (row,) = _events_checks(config)
    assert row.status == "ok", row

    real = os.access
    monkeypatch.setattr(os, "access", lambda path, how: Path(path) != db and real(path, how))
    (row,) = _events_checks(config)
    assert row.status == "warn" and "this user may not write it or its folder" in row.detail
    monkeypatch.undo()

    data = bytearray(db.read_bytes())
    page = 4096
    data[2 * page + 8 : 2 * page + 308] = b"\xa5" * 300  # inside the table's second page
    db.write_bytes(bytes(data))
    (row,) = _events_checks(config)
    assert row.status == "fail" and f"{db} is damaged (SQLite: " in row.detail, row
    assert "the door records no event in it until then" in row.fix
