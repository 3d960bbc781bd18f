"""What doctor (and identify) say about files from another edge-app version, and about an
invalid config: findings of an upgrade audit. Real files, real SQLite."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from people import mirrors_of
from test_cli_review import unit_rows
from test_cli_smoke import _env

from edge_app import events, gallery
from edge_app.commands.doctor import _events_checks, _gallery_checks, collect_checks
from edge_app.config import load_config
from edge_app.gallery import Gallery, NewSample
from edge_app.manifest import MANIFEST_NAME
from edge_app.paths import REPO_MODELS

LFW_SAMPLE = Path(__file__).resolve().parent / "data" / "lfw_sample"
JOE = sorted((LFW_SAMPLE / "Joe_Nichols").glob("*.jpg"))


def two_people(path: Path) -> Path:
    """Emma (2 photos) and Bob (1), each photo stored with its mirror: 3 samples, 6 templates."""
    rows = unit_rows(3, 11)
    mirrors = mirrors_of(rows, 12)
    with Gallery.open(path, create=True) as db:
        db.enroll(
            "Emma",
            [
                NewSample(rows[0], "a" * 64, mirror=mirrors[0]),
                NewSample(rows[1], "b" * 64, mirror=mirrors[1]),
            ],
        )
        db.enroll("Bob", [NewSample(rows[2], "c" * 64, mirror=mirrors[2])])
    return path


def config_file(tmp_path: Path, *, events_db: Path | None = None, extra: str = "") -> Path:
    path = tmp_path / "door.toml"
    events_db = events_db or tmp_path / "events.db"
    path.write_text(
        f'[gallery]\npath = "{tmp_path / "gallery.db"}"\n'
        f'[events]\ndb = "{events_db}"\nsnapshots = ""\n{extra}'
    )
    return path


def make_newer(path: Path, version: int) -> None:
    """What a later edge-app's migration would do: one more column, a higher user_version."""
    with closing(sqlite3.connect(path)) as db:
        table = db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('people', 'events')"
        ).fetchone()[0]
        db.execute(f"ALTER TABLE {table} ADD COLUMN badge TEXT")
        db.execute(f"PRAGMA user_version = {version}")
        db.commit()


def state(folder: Path) -> dict[str, str]:
    """Every file in the folder with its digest: what doctor must leave as it found it."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def user_version(path: Path) -> int:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


# 1. A gallery of a newer schema gets its own fix, not "check the file's owner and permissions".


def test_a_gallery_of_a_newer_schema_says_upgrade_or_export_and_import(tmp_path: Path) -> None:
    db = two_people(tmp_path / "gallery.db")
    make_newer(db, gallery.SCHEMA_VERSION + 1)
    config = load_config(config_file(tmp_path))

    (row,) = _gallery_checks(config)

    assert row.status == "fail"
    assert f"newer than this edge-app ({gallery.SCHEMA_VERSION})" in row.detail
    assert "owner and permissions" not in row.fix
    assert "upgrade edge-app to the version that wrote it" in row.fix
    assert "edge-app export" in row.fix and "edge-app import" in row.fix
    assert user_version(db) == gallery.SCHEMA_VERSION + 1


# 2. The events database's schema, read without writing, by events.py's own rules.


def current_events_db(path: Path) -> Path:
    events._open_db(path).close()  # what the door makes
    return path


def older_events_db(path: Path) -> Path:
    """An events.db as the version-1 schema left it (before the liveness columns)."""
    with closing(sqlite3.connect(path)) as db:
        for statement in events.SCHEMA_V1:
            db.execute(statement)
        db.execute("INSERT INTO events (time, type, name) VALUES (1.0, 'unlock', 'Emma')")
        db.execute("PRAGMA user_version = 1")
        db.commit()
    path.chmod(0o600)
    return path


def test_no_events_db_yet_is_ok_and_not_created(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    (row,) = _events_checks(load_config(config_file(tmp_path, events_db=db)))
    assert (row.area, row.status) == ("events", "ok") and "creates it" in row.detail
    assert list(tmp_path.iterdir()) == [tmp_path / "door.toml"]


def test_a_current_events_db_is_ok_and_left_as_it_is(tmp_path: Path) -> None:
    db = current_events_db(tmp_path / "events.db")
    config = load_config(config_file(tmp_path, events_db=db))
    before = state(tmp_path)

    (row,) = _events_checks(config)

    assert (row.area, row.status) == ("events", "ok")
    assert f"events schema version {events.SCHEMA_VERSION}" in row.detail
    assert state(tmp_path) == before  # no -wal, no -shm, the same bytes


def test_an_older_events_db_is_ok_the_door_migrates_it_and_doctor_does_not(
    tmp_path: Path,
) -> None:
    db = older_events_db(tmp_path / "events.db")
    config = load_config(config_file(tmp_path, events_db=db))
    before = state(tmp_path)

    (row,) = _events_checks(config)

    assert (row.area, row.status) == ("events", "ok")
    assert f"version 1: the door brings it to {events.SCHEMA_VERSION}" in row.detail
    assert state(tmp_path) == before and user_version(db) == 1


def test_an_events_db_of_a_newer_schema_fails_with_a_fix_and_stays_as_it_is(
    tmp_path: Path,
) -> None:
    db = current_events_db(tmp_path / "events.db")
    make_newer(db, events.SCHEMA_VERSION + 1)
    config = load_config(config_file(tmp_path, events_db=db))
    before = state(tmp_path)

    (row,) = _events_checks(config)

    assert (row.area, row.status) == ("events", "fail")
    assert f"newer than this edge-app ({events.SCHEMA_VERSION})" in row.detail
    assert "upgrade edge-app to the version that wrote it" in row.fix
    assert "records no event" in row.fix
    assert state(tmp_path) == before


@pytest.mark.parametrize("kind", ["gallery", "text"])
def test_a_file_that_is_not_an_events_db_fails_and_stays_as_it_is(
    tmp_path: Path, kind: str
) -> None:
    db = tmp_path / "events.db"
    if kind == "gallery":  # a mistyped path naming the gallery
        two_people(db)
    else:
        db.write_text("time,type\n1,unlock\n" * 100)
        db.chmod(0o600)
    config = load_config(config_file(tmp_path, events_db=db))
    before = state(tmp_path)

    (row,) = _events_checks(config)

    assert (row.area, row.status) == ("events", "fail")
    assert "not an edge-app events database" in row.detail
    assert "records no event" in row.fix
    assert state(tmp_path) == before


def test_doctor_shows_a_newer_events_db_and_exits_1(tmp_path: Path) -> None:
    two_people(tmp_path / "gallery.db")
    db = current_events_db(tmp_path / "events.db")
    make_newer(db, events.SCHEMA_VERSION + 1)
    config = config_file(tmp_path, events_db=db, extra='[gpio]\nfactory = "mock"\n')

    rows = {c.area: c for c in collect_checks(config, REPO_MODELS, tmp_path / "no.sock")}

    assert rows["events"].status == "fail" and "newer" in rows["events"].detail
    assert user_version(db) == events.SCHEMA_VERSION + 1


# 3. An invalid config: the gpio row is not checked, as the gallery's is not.


def test_an_invalid_config_leaves_the_gpio_unchecked_not_failed(tmp_path: Path) -> None:
    """gpio.pin = 3 and a wrong min_face with gpio.factory = "mock": doctor said the default
    'auto' factory needs lgpio, about a factory the config does not name."""
    config = tmp_path / "door.toml"
    config.write_text('[gpio]\npin = 3\nfactory = "mock"\n[detection]\nmin_face = 5\n')

    rows = [c for c in collect_checks(config, REPO_MODELS, tmp_path / "no.sock")]
    gpio = [c for c in rows if c.area == "gpio"]

    assert [c.status for c in rows if c.area == "config"] == ["fail"]
    assert [(c.status, c.detail) for c in gpio] == [
        ("warn", "not checked: its factory and pin come from the invalid config")
    ]
    assert not any("lgpio" in c.detail or "lgpio" in c.fix for c in gpio)


# 4. identify names its count as the door does: templates (a photo and its mirror).


@pytest.mark.skipif(
    not (REPO_MODELS / MANIFEST_NAME).is_file(),
    reason=f"no built models in {REPO_MODELS}: run `make models`",
)
def test_identify_logs_templates_as_the_door_does(tmp_path: Path) -> None:
    db = two_people(tmp_path / "gallery.db")
    with Gallery.open(db, read_only=True) as opened:
        assert sum(p.samples for p in opened.people()) == 3  # what `list` shows

    done = subprocess.run(
        [sys.executable, "-m", "edge_app.cli", "identify", "--db", str(db), "--backend", "cpu"]
        + [str(JOE[0])],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "people=2 templates=6 " in done.stderr, done.stderr
    assert "samples=" not in done.stderr
