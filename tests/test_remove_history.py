"""`edge-app remove --history`: a person's removal erases what the door recorded about them
(events that name them, their snapshots) when asked, and says what stays when not."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from people import samples

from edge_app import cli
from edge_app.events import EventLog, erase_history, read_events
from edge_app.gallery import Gallery

CROP = np.full((40, 30, 3), 90, np.uint8)


def door_config(tmp_path: Path) -> Path:
    """A door's config whose gallery, events database and snapshots are in `state/`."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    config = tmp_path / "door.toml"
    config.write_text(
        f'[gallery]\npath = "{state / "gallery.db"}"\n'
        f'[events]\ndb = "{state / "events.db"}"\nsnapshots = "{state / "snapshots"}"\n'
    )
    return config


@pytest.fixture
def door(tmp_path: Path) -> Path:
    """A door's config, gallery (Alice, Bob), events and snapshots: Alice recognised and let
    in, Bob too, a stranger who took Alice's place in her track, and the owner's own photo
    in the snapshots folder."""
    config = door_config(tmp_path)
    state = state_of(config)
    with Gallery.open(state / "gallery.db", create=True) as gallery:
        gallery.enroll("Alice Martin", samples(2, 1))
        gallery.enroll("Bob", samples(1, 2))
    clock = iter(1_800_000_000.0 + i for i in range(100))
    log = EventLog(state / "events.db", snapshots=state / "snapshots", clock=lambda: next(clock))
    log.record("recognized", name="Alice Martin", score=0.8, track=1, crop=CROP)
    log.record("unlock", name="Alice Martin", score=0.8, track=1, crop=CROP)
    log.record("unknown", score=0.3, track=1, reason="took the place of Alice Martin", crop=CROP)
    log.record("recognized", name="Bob", score=0.8, track=2, crop=CROP)
    log.record("relock", name="Alice Martin")
    log.close()
    (state / "snapshots" / "holiday.jpg").write_bytes(b"the owner's own photo")
    return config


def state_of(config: Path) -> Path:
    return config.parent / "state"


def digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_a_removal_says_what_history_stays_and_keeps_it(
    door: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events_before = read_events(state_of(door) / "events.db")

    assert cli.main(["remove", "--config", str(door), "alice martin"]) == 0

    out = capsys.readouterr().out
    assert out.splitlines() == [
        "removed 'Alice Martin' (2 samples)",
        "their history stays: 4 events and 2 snapshots name them (kept 90 days); "
        "`edge-app remove --history` with the same names erases it",
    ]
    assert read_events(state_of(door) / "events.db") == events_before


def test_remove_history_erases_their_events_and_snapshots_and_nothing_else(
    door: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a privacy audit: removing a person left the events naming them (and a face
    that "took the place of" them) and JPEGs of their face named after them, for 90 days,
    with no way to erase one person's history."""
    state = state_of(door)
    snapshots = sorted(p.name for p in (state / "snapshots").iterdir())
    kept = [name for name in snapshots if "_Bob_" in name or "_unknown_" in name]

    assert cli.main(["remove", "--config", str(door), "--history", "ALICE MARTIN"]) == 0

    assert capsys.readouterr().out.splitlines() == [
        "removed 'Alice Martin' (2 samples)",
        "erased their history: 3 events, 2 snapshots; 1 report of a stranger who took their "
        "place kept, without their name",
    ]
    left = read_events(state / "events.db")
    assert [(e.type, e.name, e.reason) for e in left] == [
        ("unknown", None, "took the place of a person whose history was erased"),
        ("recognized", "Bob", None),
    ]
    # The stranger's snapshot is evidence of them, not of her: it stays with its report.
    left_files = sorted(p.name for p in (state / "snapshots").iterdir())
    assert left_files == sorted([*kept, "holiday.jpg"])
    for file in state.glob("events.db*"):  # no copy in free pages or the -wal file
        assert b"Alice" not in file.read_bytes(), file.name
    with Gallery.open(state / "gallery.db", read_only=True) as gallery:
        assert [p.name for p in gallery.people()] == ["Bob"]


def test_the_history_of_someone_already_removed_is_erased_by_name(
    door: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The web page removes from the gallery only: the history is erased afterwards."""
    with Gallery.open(state_of(door) / "gallery.db") as gallery:
        gallery.remove(["Alice Martin"])

    assert cli.main(["remove", "--config", str(door), "--history", "Alice Martin"]) == 0

    assert capsys.readouterr().out.startswith("erased their history: 3 events, 2 snapshots;")
    assert [e.name for e in read_events(state_of(door) / "events.db")] == [None, "Bob"]


def test_an_erasure_cut_short_is_finished_by_running_it_again(
    door: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a kill -9 audit: the events were deleted and committed before the snapshots,
    so a `remove --history` killed in between left JPEGs of her face that no later run could
    find (only the deleted rows named them): "neither enrolled nor in the door's history".
    The files now go first, inside the transaction that deletes the rows: cut short
    (here by the second file's deletion failing, as a kill would), the rows still name
    what is left, and running it again erases it all."""
    state = state_of(door)
    theirs = sorted(p for p in (state / "snapshots").iterdir() if "_Alice_Martin_" in p.name)
    assert len(theirs) == 2
    unlink = Path.unlink
    calls: list[Path] = []

    def cut_short(self: Path, missing_ok: bool = False) -> None:
        calls.append(self)
        if len(calls) == 2:
            raise OSError(5, "Input/output error", str(self))
        unlink(self, missing_ok=missing_ok)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "unlink", cut_short)
        assert cli.main(["remove", "--config", str(door), "--history", "Alice Martin"]) != 0
    capsys.readouterr()
    assert [e.name for e in read_events(state / "events.db")].count("Alice Martin") == 3
    assert sum(path.exists() for path in theirs) == 1  # one gone, one left

    assert cli.main(["remove", "--config", str(door), "--history", "Alice Martin"]) == 0
    assert "erased their history: 3 events, 1 snapshot" in capsys.readouterr().out
    assert not any(path.exists() for path in theirs)
    assert "Alice Martin" not in [e.name for e in read_events(state / "events.db")]


@pytest.mark.parametrize("place", ["events.db", "snapshots"])
def test_history_this_user_may_not_erase_removes_nobody(
    door: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, place: str
) -> None:
    """Found by an audit: run as a user who may read but not write the events database
    (mode 0400, someone else's), `remove --history` removed her from the gallery, then
    failed to erase the history: 27 events still named her. It is refused first. (Tests run
    as root in CI, whom no mode stops: the refusal is what access(2) answers a user.)"""
    before = digests(state_of(door))
    refused = state_of(door) / place
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != refused and real(path, mode))

    assert cli.main(["remove", "--config", str(door), "--history", "Alice Martin"]) == 2

    err = capsys.readouterr().err
    assert f"the door's history cannot be erased: this user may not change {refused}" in err
    assert "nothing was removed" in err
    assert digests(state_of(door)) == before


def test_a_name_neither_enrolled_nor_in_the_history_changes_nothing(
    door: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = digests(state_of(door))

    assert cli.main(["remove", "--config", str(door), "--history", "Alice Martin", "Nobody"]) == 2

    err = capsys.readouterr().err
    assert "neither enrolled nor in the door's history: 'Nobody'; nothing was removed" in err
    assert digests(state_of(door)) == before


def test_history_is_the_configs_door_not_a_gallery_given_by_path(
    door: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gallery = state_of(door) / "gallery.db"
    before = digests(state_of(door))

    assert cli.main(["remove", "--db", str(gallery), "--history", "Bob"]) == 2

    assert "give --config, or nothing for the default config, not --db" in capsys.readouterr().err
    assert digests(state_of(door)) == before


def test_a_row_naming_a_file_outside_the_snapshots_folder_never_deletes_it(
    door: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A row is data: its snapshot path leads only to files of the snapshots folder named as
    the door names snapshots."""

    outside = tmp_path / "20270115T080000.000Z_unlock_Alice_Martin_t9.jpg"
    outside.write_bytes(b"not the door's")
    with closing(sqlite3.connect(state_of(door) / "events.db")) as db, db:
        db.execute(
            "INSERT INTO events (time, type, name, snapshot) VALUES (1, 'unlock', ?, ?)",
            ("Alice Martin", str(outside)),
        )

    assert cli.main(["remove", "--config", str(door), "--history", "Alice Martin"]) == 0

    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("erased their history: 4 events, 2 snapshots;")
    assert outside.read_bytes() == b"not the door's"


PEOPLE = ["王伟", "李娜", "Unknown", "Alice Martin", "Alice_Martin"]


def test_a_name_whose_snapshot_label_others_share_is_found_through_its_events_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Snapshot file names keep only ASCII letters, digits, dots and hyphens: "王伟" and
    "李娜" are both `_`, "Alice Martin" and "Alice_Martin" one label, and a person named
    "Unknown" is the label of every unknown face. Erasing one of them by the file name would
    delete the others' history (a review found the last two after the first was fixed):
    snapshots are found through their events only."""
    config = door_config(tmp_path)
    state = state_of(config)
    with Gallery.open(state / "gallery.db", create=True) as gallery:
        for seed, name in enumerate(PEOPLE):
            gallery.enroll(name, samples(1, 10 + seed))
    clock = iter(1_800_000_000.0 + i for i in range(100))
    log = EventLog(state / "events.db", snapshots=state / "snapshots", clock=lambda: next(clock))
    for track, name in enumerate(PEOPLE):
        log.record("recognized", name=name, score=0.8, track=track, crop=CROP)
    log.record("unknown", score=0.3, track=9, crop=CROP)
    log.close()
    files = sorted(p.name for p in (state / "snapshots").iterdir())

    argv = ["remove", "--config", str(config), "--history", "王伟", "Unknown", "Alice Martin"]

    assert cli.main(argv) == 0

    last = capsys.readouterr().out.splitlines()[-1]
    assert last == "erased their history: 3 events, 3 snapshots"
    assert [e.name for e in read_events(state / "events.db")] == ["李娜", "Alice_Martin", None]
    left = sorted(p.name for p in (state / "snapshots").iterdir())
    assert left == [files[1], files[4], files[5]]


def test_an_events_database_the_door_would_refuse_is_one_line_and_nothing_is_removed(
    door: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a review: an events database of a newer schema raised a traceback from
    erase_history after the gallery removal had committed (removed, history not erased)."""
    with closing(sqlite3.connect(state_of(door) / "events.db")) as db:
        db.execute("PRAGMA user_version = 99")
    before = digests(state_of(door))

    assert cli.main(["remove", "--config", str(door), "--history", "Alice Martin"]) == 2

    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "the door's history cannot be erased:" in err and "newer than this edge-app" in err
    assert digests(state_of(door)) == before


def test_a_relative_events_path_leaves_remove_as_it_was_and_refuses_history(
    door: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The door resolves a relative events.db in its own working folder, which a command
    cannot know: `remove` works as before (no word on the history), `--history` refuses."""
    config = door.read_text().replace(f'db = "{state_of(door) / "events.db"}"', 'db = "events.db"')
    door.write_text(config)
    before = digests(state_of(door))

    assert cli.main(["remove", "--config", str(door), "--history", "Bob"]) == 2
    assert "events.db events.db in the config is relative" in capsys.readouterr().err
    assert digests(state_of(door)) == before

    assert cli.main(["remove", "--config", str(door), "Bob"]) == 0
    assert capsys.readouterr().out == "removed 'Bob' (1 samples)\n"


def test_snapshots_no_event_names_are_counted_for_the_user_to_look_at(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by an audit: with `[events] db = ""` (the journal only) or an events database
    that could not be written, a snapshot of Alice had no row naming it: `remove --history`
    said "0 events, 0 snapshots" and left her face on disk without a word. They are not
    deleted by their file name (a label can be another person's: see above), but counted."""
    config = door_config(tmp_path)
    state = state_of(config)
    config.write_text(config.read_text().replace(f'db = "{state / "events.db"}"', 'db = ""'))
    with Gallery.open(state / "gallery.db", create=True) as gallery:
        gallery.enroll("Alice Martin", samples(1, 1))
    clock = iter(1_800_000_000.0 + i for i in range(100))
    log = EventLog(None, snapshots=state / "snapshots", clock=lambda: next(clock))
    log.record("recognized", name="Alice Martin", score=0.8, track=1, crop=CROP)
    log.record("recognized", name="Bob", score=0.8, track=2, crop=CROP)
    log.close()
    before = sorted(p.name for p in (state / "snapshots").iterdir())
    assert len(before) == 2

    assert cli.main(["remove", "--config", str(config), "--history", "Alice Martin"]) == 0

    assert capsys.readouterr().out.splitlines()[1:] == [
        "erased their history: 0 events, 0 snapshots",
        f"1 other snapshot(s) in {state / 'snapshots'} carry their name's label in the file "
        "name but no event names them (taken while events.db was off or could not be "
        "written): left, since that label can be another person's; look at them and delete "
        "theirs by hand",
    ]
    assert sorted(p.name for p in (state / "snapshots").iterdir()) == before
    # Once removed from the gallery, typed in another case (a review: neither was found).
    assert cli.main(["remove", "--config", str(config), "--history", "alice MARTIN"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "erased their history: 0 events, 0 snapshots"
    # A plain removal says so too.
    with Gallery.open(state / "gallery.db") as gallery:
        gallery.enroll("Alice Martin", samples(1, 1))
    assert cli.main(["remove", "--config", str(config), "Alice Martin"]) == 0
    assert (
        capsys.readouterr()
        .out.splitlines()[1]
        .startswith(f"1 other snapshot(s) in {state / 'snapshots'} carry their name's label")
    )


def test_a_rename_says_the_history_stays_under_the_old_name(
    door: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by an audit: after `rename`, `remove --history NEW` found nothing recorded
    under the old name, and nothing had said so. The rename says where it stays."""
    assert cli.main(["rename", "--config", str(door), "alice martin", "Alice Smith"]) == 0

    assert capsys.readouterr().out.splitlines() == [
        "renamed 'Alice Martin' to 'Alice Smith'",
        "their history stays: 4 events and 2 snapshots name them (kept 90 days); "
        "`edge-app remove --history` with the old name, 'Alice Martin', erases it",
    ]
    assert cli.main(["remove", "--config", str(door), "--history", "Alice Martin"]) == 0
    assert "erased their history: 3 events, 2 snapshots" in capsys.readouterr().out
    assert cli.main(["rename", "--config", str(door), "Bob", "Robert"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("their history stays: 1 events")


def test_a_typo_of_an_enrolled_name_is_named_as_remove_without_history_names_it(
    door: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/GALLERY.md, "Names": a name `remove` does not find is refused naming the enrolled
    person it is close to; --history refuses it too, and must name them alike."""
    before = digests(state_of(door))

    assert cli.main(["remove", "--config", str(door), "--history", "Alice Martn"]) == 2

    err = capsys.readouterr().err
    assert (
        "neither enrolled nor in the door's history: 'Alice Martn' (did you mean "
        "'Alice Martin'?); nothing was removed"
    ) in err
    assert digests(state_of(door)) == before


def test_an_events_database_sqlite_cannot_read_is_named(
    door: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Defect (a new user's walkthrough): [events] db naming a file that is not a database
    gave "the door's history cannot be erased: file is not a database", naming no file."""
    events = state_of(door) / "events.db"
    events.unlink()
    events.write_text("a note, not a database\n" * 10)
    events.chmod(0o600)
    before = digests(state_of(door))

    assert cli.main(["remove", "--config", str(door), "--history", "Bob"]) == 2

    err = capsys.readouterr().err
    assert f"the door's history cannot be erased: {events} (file is not a database)" in err
    assert digests(state_of(door)) == before


def test_erasing_a_history_removes_the_snapshot_copies_a_killed_write_left(
    tmp_path: Path,
) -> None:
    """A door killed while writing a snapshot (after the link to its name, or before it)
    leaves the whole JPEG of the face under a temporary name. erase_history deleted only the
    files events name, so the person's face stayed; the door removes such files only when it
    next lists the folder (its first snapshot after a start, or the daily retention, which
    never runs with retention_days = 0) and once they are 10 minutes old."""
    db, folder = tmp_path / "events.db", tmp_path / "snapshots"
    log = EventLog(db=db, snapshots=folder, retention_days=0, clock_trusted=lambda: True)
    crop = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    event = log.record("recognized", name="Alice", score=0.9, track=4, crop=crop)
    log.close()
    assert event.snapshot is not None
    final = Path(event.snapshot)
    linked = folder / f".{final.name}.abcd1234"  # killed after the link
    os.link(final, linked)
    unlinked = folder / f".{final.name[:-4]}-2.jpg.efgh5678"  # killed before its link
    unlinked.write_bytes(final.read_bytes())
    unlinked.chmod(0o600)
    erased = erase_history(db, folder, ["Alice"])
    assert (erased.events, erased.snapshots) == (1, 1)
    assert sorted(path.name for path in folder.iterdir()) == []


def test_a_killed_write_after_its_link_leaves_no_hidden_copy(tmp_path: Path) -> None:
    """Found by a review: a door killed between linking a snapshot to its name and removing
    its temporary name never wrote the event (EventLog.record writes the snapshot first), so
    no event names the file. erase_history leaves that file (reported as `unnamed`, to be
    deleted by hand) and the sweep skips the temporary name, whose link count is 2: once the
    user deletes the visible file, the face stays under the hidden name."""
    import sqlite3

    db, folder = tmp_path / "events.db", tmp_path / "snapshots"
    log = EventLog(db=db, snapshots=folder, retention_days=0, clock_trusted=lambda: True)
    crop = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    event = log.record("recognized", name="Alice", score=0.9, track=4, crop=crop)
    log.close()
    with sqlite3.connect(db) as connection:  # killed before the event was written
        connection.execute("DELETE FROM events")
    assert event.snapshot is not None
    final = Path(event.snapshot)
    hidden = folder / f".{final.name}.abcd1234"  # killed after the link
    os.link(final, hidden)
    erased = erase_history(db, folder, ["Alice"])
    assert erased.unnamed == 1
    final.unlink()  # what the user is told to do with the unnamed one
    assert sorted(path.name for path in folder.iterdir()) == []


def test_the_erase_sweep_leaves_a_live_doors_snapshot_write_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: the sweep of remove --history takes temporaries of any age, so only
    the write's lock protects it; _write_snapshot takes that lock after mkstemp. A sweep
    between the two removes the live write's file: the door's link then fails and the event
    is recorded without its snapshot."""
    import math
    import tempfile

    from edge_app import events as events_module
    from edge_app.events import sweep_snapshot_temporaries

    folder = tmp_path / "snapshots"
    log = EventLog(db=tmp_path / "events.db", snapshots=folder, retention_days=0,
                   clock_trusted=lambda: True)  # fmt: skip
    crop = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    log.record("recognized", name="Bob", score=0.9, track=1, crop=crop)  # folder listed

    class SweepRightAfterMkstemp:
        @staticmethod
        def mkstemp(*args, **kwargs):
            made = tempfile.mkstemp(*args, **kwargs)
            sweep_snapshot_temporaries(folder, now=math.inf)  # remove --history, meanwhile
            return made

    monkeypatch.setattr(events_module, "tempfile", SweepRightAfterMkstemp)
    event = log.record("recognized", name="Carol", score=0.9, track=2, crop=crop)
    log.close()
    assert event.snapshot is not None, "the live write's file was swept away"
