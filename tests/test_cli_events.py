"""`edge-app events`: the door's history on the command line, read only.

Events are written by the door's own EventLog into a real SQLite file; the command is run
as the console script runs it (cli.main), and once in its own process for --follow.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_cli_smoke import _env

from edge_app import cli
from edge_app.events import SCHEMA_VERSION, EventLog
from edge_app.gallery import Gallery

DAY = 86_400
START = datetime(2026, 3, 2, 12, 0).timestamp()  # noon local time: days filter predictably


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Six events, one a day from START: Ana Lima let in, a stranger, a known visitor."""
    path = tmp_path / "events.db"
    clock = itertools.count(START, DAY)
    events = EventLog(path, clock=lambda: float(next(clock)))
    events.record("recognized", name="Ana Lima", score=0.71, track=1)
    events.record("unlock", name="Ana Lima", score=0.71, track=1)
    events.record("relock", name="Ana Lima", reason="timeout")
    events.record("unknown", score=0.12, track=2)
    events.record("denied", name="Bo Chen", score=0.8, track=3, reason="no access")
    events.record("unlock", name="ana  LIMA", score=0.69, track=4, liveness=0.93)  # then renamed
    events.close()
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["events", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_last_events_are_listed_oldest_first_with_name_score_and_reason(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "--events-db", str(db))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert [line.split()[3] for line in lines] == [
        "recognized", "unlock", "relock", "unknown", "denied", "unlock",
    ]  # fmt: skip
    assert lines[0].split()[4:] == ["Ana", "Lima", "0.710"]
    assert lines[2].endswith("timeout") and lines[3].split()[4:] == ["-", "0.120"]
    assert lines[4].endswith("0.800  no access")
    code, out, _ = run(capsys, "--events-db", str(db), "-n", "2")
    assert [line.split()[3] for line in out.splitlines()] == ["denied", "unlock"]


def test_events_are_chosen_by_person_as_the_gallery_names_them_type_and_day(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--person follows the gallery's name rule (case and spacing do not matter); --from and
    --to are local days, both included."""
    code, out, _ = run(capsys, "--events-db", str(db), "--person", "ANA lima", "--type", "Unlock")
    assert code == 0 and [line.split()[3] for line in out.splitlines()] == ["unlock", "unlock"]
    code, out, _ = run(capsys, "--events-db", str(db), "--from", "2026-03-03", "--to", "2026-03-05")
    assert [line.split()[3] for line in out.splitlines()] == ["unlock", "relock", "unknown"]


def test_json_lines_and_a_csv_of_every_event_selected(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "--events-db", str(db), "--json", "-n", "1", "--type", "denied")
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert record["name"] == "Bo Chen" and record["reason"] == "no access"
    assert record["time"] == datetime.fromtimestamp(START + 4 * DAY, UTC).isoformat(
        timespec="milliseconds"
    )  # as the door's own JSON lines
    assert {"liveness", "geometry", "snapshot"} <= set(record)
    code, out, _ = run(capsys, "--events-db", str(db), "--json", "-n", "1")
    assert json.loads(out)["liveness"] == 0.93
    # --csv is every event selected, whatever -n says (its default is 20; here 1).
    code, out, _ = run(capsys, "--events-db", str(db), "--csv", "-n", "1", "--person", "ana lima")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0][:4] == ["id", "time_utc", "type", "name"]
    assert [row[2] for row in rows[1:]] == ["recognized", "unlock", "relock", "unlock"]


def test_no_event_of_a_mistyped_name_says_whom_the_events_name(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "--events-db", str(db), "--person", "Bo Chan")
    assert code == 0 and out == ""
    assert err == "no events of 'Bo Chan' (did you mean 'Bo Chen'?)\n"


def test_reading_creates_nothing_beside_the_database_and_changes_nothing(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run by root over the door's files, a -shm or -wal made here would be root's and lock
    the door out of its own history."""
    before = db.read_bytes()
    assert run(capsys, "--events-db", str(db), "--json")[0] == 0
    assert sorted(p.name for p in db.parent.iterdir()) == ["events.db"]
    assert db.read_bytes() == before


def test_events_written_while_the_door_holds_the_database_open_are_read(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    door = EventLog(db)
    try:
        door.record("spoof", name="Ana Lima", score=0.7, track=5, reason="not live")
        code, out, _ = run(capsys, "--events-db", str(db), "-n", "1")
    finally:
        door.close()
    assert code == 0 and out.split()[3:] == ["spoof", "Ana", "Lima", "0.700", "not", "live"]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("0", "-n/--lines: must be 1 to 100000, got 0 (--csv gives every event selected)"),
        ("100001", "-n/--lines: must be 1 to 100000, got 100001"),
        ("ten", "-n/--lines: expected a whole number, got 'ten'"),
    ],
)
def test_a_number_of_events_out_of_range_is_refused_while_parsing(
    db: Path, capsys: pytest.CaptureFixture[str], lines: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["events", "--events-db", str(db), "-n", lines])
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and out == ""
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--events-db", "{tmp}/none.db"], "no events database at {tmp}/none.db"),
        (["--events-db", "{tmp}"], "{tmp} is not an events database: it is a folder"),
        (["--events-db", "{tmp}/text.db"], "cannot read {tmp}/text.db (file is not a database)"),
        (["--events-db", "{tmp}/empty.db"], "it is not an events database (no events table)"),
        (["--events-db", "{tmp}/gallery.db"], "but not an edge-app events database"),
        (["--events-db", "{tmp}/newer.db"], "newer"),
        (["--config", "{tmp}/off.toml"], "the config records no history ([events] db is empty)"),
        (
            ["--config", "{tmp}/relative.toml"],
            "[events] db = 'events.db' in the config is relative",
        ),
        (["--events-db", "{db}", "--from", "2026-02-30"], "--from: '2026-02-30' is not a date"),
        (["--events-db", "{db}", "--from", "2026-03-09", "--to", "2026-03-01"], "is after --to"),
        (["--events-db", "{db}", "--person", " "], "--person is empty"),
        # A sweep: a name whose bytes are not UTF-8 (as a Latin-1 shell passes it) ended in a
        # UnicodeEncodeError traceback from SQLite, listing or --csv.
        (["--events-db", "{db}", "--person", "Ana\udce9"], "is not valid UTF-8 text"),
        (["--events-db", "{db}", "--csv", "--person", "\udcff"], "is not valid UTF-8 text"),
        (["--events-db", "{db}", "--csv", "--follow"], "--follow prints events as text or --json"),
    ],
)
def test_what_cannot_be_read_is_refused_in_one_line(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (tmp_path / "text.db").write_text("not a database\n")
    (tmp_path / "empty.db").write_bytes(b"")
    Gallery.open(tmp_path / "gallery.db", create=True).close()
    newer = EventLog(tmp_path / "newer.db")
    newer.close()
    with closing(sqlite3.connect(tmp_path / "newer.db")) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    (tmp_path / "off.toml").write_text('[events]\ndb = ""\n')
    (tmp_path / "relative.toml").write_text('[events]\ndb = "events.db"\n')
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    fill = {"tmp": str(tmp_path), "db": str(db)}
    code, out, err = run(capsys, *(part.format(**fill) for part in argv))
    assert code == 2 and out == ""
    assert message.format(**fill) in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_the_events_database_is_named_as_run_names_it(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--db` names the gallery in run, enroll, list and the other gallery commands, but
    named the events database here. The option is --events-db, as in run; --db still works
    for scripts and is no longer shown."""
    with pytest.raises(SystemExit):
        cli.main(["events", "--help"])
    shown = capsys.readouterr().out
    assert "--events-db PATH" in shown and "--db" not in shown.replace("--events-db", "")
    assert run(capsys, "--db", str(db), "-n", "1") == run(capsys, "--events-db", str(db), "-n", "1")


def test_an_events_database_the_door_may_not_trust_is_refused_with_its_own_fix(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a review: a refusal of the shared SQLite rules (a folder any user may write)
    had a second piece of advice glued after its own, naming a config key."""
    db.parent.chmod(0o777)
    try:
        code, out, err = run(capsys, "--events-db", str(db))
    finally:
        db.parent.chmod(0o700)
    assert code == 2 and out == ""
    assert "may be written by any user" in err and "keep it in a folder of its own" in err
    assert "give the door's events database" not in err


def test_follow_prints_each_new_event_as_the_door_records_it_until_ctrl_c(db: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_app.cli", "events", "--events-db", str(db), "-n", "1", "-f"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as a terminal delivers it: a test run started in the background (`cmd &`,
        # nohup) hands its children SIGINT ignored, which Python then leaves ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: queue.Queue[str] = queue.Queue()
    output, errors = process.stdout, process.stderr
    assert output is not None and errors is not None

    def read() -> None:
        for line in output:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        assert lines.get(timeout=60).split()[3] == "unlock"  # the last one, then the new ones
        door = EventLog(db)
        door.record("unknown", score=0.2, track=7)
        door.record("unlock", name="Bo Chen", score=0.75, track=8)
        door.close()
        assert lines.get(timeout=10).split()[3] == "unknown"
        assert lines.get(timeout=10).split()[3:6] == ["unlock", "Bo", "Chen"]
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 130
        assert "Traceback" not in errors.read()
    finally:
        process.kill()
        process.wait()


def test_an_events_database_made_before_liveness_was_recorded_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Schema 1 (no liveness or geometry columns), as a door that has not run since left it:
    read as it is, without them, and not changed."""
    from edge_app.events import SCHEMA_V1

    db = tmp_path / "events.db"
    with closing(sqlite3.connect(db)) as connection:
        for statement in SCHEMA_V1:
            connection.execute(statement)
        connection.execute("INSERT INTO events (time, type, name, score) VALUES (?, ?, ?, ?)",
                           (START, "unlock", "Ana Lima", 0.7))  # fmt: skip
        connection.execute("PRAGMA user_version = 1")
        connection.commit()
    before = db.read_bytes()
    code, out, _ = run(capsys, "--events-db", str(db), "--json")
    assert code == 0
    record = json.loads(out)
    assert (record["name"], record["liveness"], record["geometry"]) == ("Ana Lima", None, None)
    assert db.read_bytes() == before


def test_a_config_refused_for_another_section_still_names_its_history(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a walkthrough: a typo under [gpio] (which stops the door) also hid the
    history that would tell why. [events] alone is read, with the config's problem said;
    a problem in [events] itself still refuses."""
    config = tmp_path / "door.toml"
    config.write_text(f'[events]\ndb = "{db}"\n[gpio]\nactiv_high = true\n')
    code, out, err = run(capsys, "--config", str(config), "-n", "1")
    assert code == 0 and out.split()[3] == "unlock"
    assert "gpio.activ_high: unknown key" in err and "the history is read all the same" in err
    config.write_text("[events]\ndb = 5\n[gpio]\nactiv_high = true\n")
    code, out, err = run(capsys, "--config", str(config))
    assert code == 2 and out == "" and "events.db: expected a path string" in err
