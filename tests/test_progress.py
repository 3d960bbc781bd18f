"""edge_app.progress: long work says how far it is, on a terminal or not."""

from __future__ import annotations

import logging

import pytest

from edge_app import progress
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
    assert lines[0].startswith("door frames: 4/10 frame (40%), ")
    assert [line.split(",")[0] for line in lines] == [
        "door frames: 4/10 frame (40%)",
        "door frames: 8/10 frame (80%)",
    ]
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
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["visits: 1/2 visit (50%)"]
    assert logging.getLogger("edge_app").level == logging.NOTSET  # put back
