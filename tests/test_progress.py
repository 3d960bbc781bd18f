"""edge_app.progress: long work says how far it is, on a terminal or not."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from people import samples

from edge_app import progress
from edge_app.gallery import Gallery
from edge_app.private_file import write_private_text
from edge_app.progress import Progress


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The monotonic clock Progress reads, moved by hand: clock[0] += seconds."""
    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(progress, "_terminal", lambda: False)
    return now


def test_off_a_terminal_progress_is_a_log_line_now_and_then(
    clock: list[float], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """A build piped to a file was silent for minutes: tqdm draws nothing off a terminal."""
    caplog.set_level(logging.INFO, logger="edge_app.progress")
    with Progress(total=10, desc="door frames", unit="frame", disable=None) as bar:
        for _ in range(10):
            clock[0] += progress.LINE_SECONDS / 4
            bar.update(1)
            bar.refresh()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("door frames: frame 4 of 10 (40%), ")
    assert [line.split(",")[0] for line in lines] == [
        "door frames: frame 4 of 10 (40%)",
        "door frames: frame 8 of 10 (80%)",
        "door frames: frame 10 of 10",  # where it ended, said when it ends
    ]
    assert lines[-1].endswith(", done in 0 s")  # (tqdm's own clock: this test took no time)
    assert capsys.readouterr().err == ""  # no bar, no carriage returns


def test_disabled_progress_says_nothing(
    clock: list[float], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger="edge_app.progress")
    for _ in Progress(range(5), desc="quiet", disable=True):
        clock[0] += progress.LINE_SECONDS
    assert caplog.records == [] and capsys.readouterr().err == ""


def test_an_evaluation_that_quiets_the_door_still_says_how_far_it_is(
    clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    """eval visits and eval door quiet edge_app to warnings (the door logs every decision);
    their progress lines stayed quiet with it, for a quarter of an hour."""
    from edge_app.logs import quieted

    caplog.set_level(logging.INFO)
    with quieted({"edge_app": logging.WARNING}):
        logging.getLogger("edge_app.daemon").info("a decision")
        with Progress(total=2, desc="visits", unit="visit", disable=None) as bar:
            clock[0] += progress.LINE_SECONDS
            bar.update(1)
            bar.refresh()
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["visits: visit 1 of 2 (50%)"]
    assert logging.getLogger("edge_app").level == logging.NOTSET  # put back


def test_the_line_says_what_is_left_at_the_pace_so_far(
    clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    """A run under cron or CI said how far it was, not how long it would still take."""
    caplog.set_level(logging.INFO, logger="edge_app.progress")
    with Progress(total=400, desc="embedding LFW", unit="image", disable=None) as bar:
        bar.start_t -= 90.0  # tqdm's own clock: 90 s since the start, for 100 of 400 images
        clock[0] += progress.LINE_SECONDS
        bar.update(100)
        bar.refresh()
        bar.start_t -= 2 * 3600.0  # then 2 h 01 min 30 s for the rest
        clock[0] += progress.LINE_SECONDS
        bar.update(300)
        bar.refresh()
    assert [r.getMessage() for r in caplog.records] == [
        "embedding LFW: image 100 of 400 (25%), 1 min 30 s elapsed, about 4 min 30 s left",
        "embedding LFW: image 400 of 400, done in 2 h 01 min",
    ]


def test_a_run_that_said_no_line_ends_without_one(
    clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    """Work shorter than a line's spacing stays silent: no line for a moment's work."""
    caplog.set_level(logging.INFO, logger="edge_app.progress")
    for _ in Progress(range(100), desc="quick", disable=None):
        clock[0] += 0.01
    assert caplog.records == []


def test_a_bar_interrupted_before_it_was_set_up_closes_quietly() -> None:
    """A Ctrl-C inside tqdm's __new__ (which makes its lock and monitor thread on first use)
    leaves an instance __init__ never saw; tqdm closes it when it is collected, and that
    close raised AttributeError, printed as a traceback under the one line a Ctrl-C gives
    (test_cli_review.py::test_ctrl_c_prints_one_line_exits_130_and_writes_no_half_output)."""
    half_made = Progress.__new__(Progress)
    try:
        half_made.close()  # what tqdm.__del__ calls
    finally:
        Progress._instances.discard(half_made)


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", "inf"])
def test_a_spacing_that_is_not_seconds_is_said_and_the_default_kept(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    monkeypatch.setenv(progress.SECONDS_VARIABLE, value)
    assert progress.line_seconds() == progress.LINE_SECONDS
    assert f"{progress.SECONDS_VARIABLE}={value} is not a number of seconds" in caplog.text


def _gallery_export(folder: Path, people: int) -> Path:
    """An export file of `people` people, two faces each, as `edge-app export` writes."""
    db = folder / "door.db"
    with Gallery.open(db, create=True) as gallery:
        for person in range(people):
            gallery.enroll(f"person {person}", samples(2, person))
    export = folder / "export.jsonl"
    with Gallery.open(db) as gallery:
        write_private_text(export, gallery.export)
    return export


@pytest.mark.parametrize("how", ["a file", "a pipe"])
def test_a_command_with_standard_error_off_a_terminal_says_how_far_it_is(
    tmp_path: Path, how: str
) -> None:
    """A command run under cron, CI or systemd-run, or with `2> log`, drew no bar and said
    nothing of its progress. Its lines come every SECONDS_VARIABLE seconds (here a
    microsecond: a line at every step), each with the count, the share and the time left."""
    export = _gallery_export(tmp_path, 4)
    env = {**os.environ, progress.SECONDS_VARIABLE: "0.000001"}
    env.pop("JOURNAL_STREAM", None)
    argv = [sys.executable, "-m", "edge_app.cli", "import", "--db", str(tmp_path / "new.db")]
    log_file = tmp_path / "import.log"
    with log_file.open("w") as stderr:
        done = subprocess.run(
            [*argv, str(export)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr if how == "a file" else subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    text = log_file.read_text() if how == "a file" else done.stderr
    lines = re.findall(r"edge_app\.progress: (.*)", text)
    steps = [line.split(",")[0] for line in lines]
    for phase in ("reading", "writing"):
        assert [s for s in steps if s.startswith(f"{phase}: ")] == [
            f"{phase}: person 1 of 4 (25%)",
            f"{phase}: person 2 of 4 (50%)",
            f"{phase}: person 3 of 4 (75%)",
            f"{phase}: person 4 of 4",
        ], text
    assert re.search(r"reading: person 1 of 4 \(25%\), \d+ s elapsed, about \d+ s left", text)
    assert re.search(r"writing: person 4 of 4, done in \d+ s", text)
    assert "\r" not in text and "|" not in text  # no bar drawn into the log


def test_a_command_off_a_terminal_says_nothing_more_within_the_default_spacing(
    tmp_path: Path,
) -> None:
    export = _gallery_export(tmp_path, 4)
    env = {k: v for k, v in os.environ.items() if k != progress.SECONDS_VARIABLE}
    done = subprocess.run(
        [sys.executable, "-m", "edge_app.cli", "import", "--db", str(tmp_path / "new.db")]
        + [str(export)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "edge_app.progress" not in done.stderr and "\r" not in done.stderr


def test_a_bar_interrupted_inside_tqdms_init_closes_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a review: off a terminal with disable=None, our __init__ sets _as_lines=True
    before tqdm's __init__ sets `disable`; a Ctrl-C in between left close() (tqdm.__del__)
    raising AttributeError on self.disable."""
    from tqdm import tqdm

    def interrupted(self: object, *args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("edge_app.progress._terminal", lambda: False)
    monkeypatch.setattr(tqdm, "__init__", interrupted)
    half_made = Progress.__new__(Progress)
    try:
        with pytest.raises(KeyboardInterrupt):
            Progress.__init__(half_made, total=3, disable=None)
        half_made.close()  # what tqdm.__del__ calls
    finally:
        Progress._instances.discard(half_made)
