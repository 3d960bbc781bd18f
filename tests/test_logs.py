"""edge_app.logs.Throttle: a few lines per interval for a repeated event, the rest counted."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_app.logs import Throttle, setup_logging


def test_one_line_per_interval_then_the_count_of_those_held_back() -> None:
    throttle = Throttle(10.0)
    seen = [throttle.due(now) for now in (0.0, 1.0, 2.0, 9.9, 10.0, 10.5, 25.0)]
    assert seen == [0, None, None, None, 3, None, 1]


def test_a_burst_logs_that_many_lines_in_any_interval() -> None:
    """The first `burst` lines go out at once; then a line whenever the oldest of the last
    `burst` logged lines is `every` seconds old, with the count held back since."""
    throttle = Throttle(10.0, burst=3)
    seen = [throttle.due(now) for now in (0.0, 0.1, 0.2, 0.3, 5.0, 10.0, 10.05, 10.1, 10.2)]
    assert seen == [0, 0, 0, None, None, 2, None, 1, 0]


def test_counts_are_kept_exactly_when_threads_share_a_throttle() -> None:
    """The hub's MQTT refusals come from paho's thread and the unlock worker at once: every
    occurrence is either a line or counted in the next line, none lost or counted twice."""
    throttle = Throttle(1.0, clock=lambda: 0.0, burst=5)
    lines: list[int] = []
    lock = threading.Lock()

    def flood() -> None:
        for _ in range(2_000):
            held = throttle.due()
            if held is not None:
                with lock:
                    lines.append(held)

    workers = [threading.Thread(target=flood) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(lines) == 5
    assert throttle.due(1.0) == 16_000 - 5


def test_a_burst_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="burst must be at least 1"):
        Throttle(1.0, burst=0)


def journal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], emit: Callable[[], None]
) -> list[str]:
    """The lines `emit` logs, formatted as under systemd (JOURNAL_STREAM set)."""
    monkeypatch.setenv("JOURNAL_STREAM", "8:1")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging()
        emit()
    finally:
        root.handlers[:], root.level = handlers, level
    return capsys.readouterr().err.splitlines()


def test_under_journald_every_line_of_a_message_has_its_priority(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by an audit: a config error's problems, on lines of their own, were journal
    entries without a priority, so `journalctl -p err` showed the head line and no key."""
    log = logging.getLogger("edge_app")
    lines = journal(
        monkeypatch, capsys, lambda: log.error("door.toml: 2 problem(s):\n  - a: bad\n  - b: bad")
    )
    assert lines == [
        "<3>edge_app: door.toml: 2 problem(s):",
        "<3>edge_app:   - a: bad",
        "<3>edge_app:   - b: bad",
    ]


def test_a_throttle_says_what_it_held_back_once_a_line_is_allowed() -> None:
    """Throttle.held: the count a burst left, for a caller that says it when the burst has
    ended (the hub's heartbeat), not only with the next occurrence."""
    from edge_app.logs import Throttle

    clock = [0.0]
    throttle = Throttle(10.0, lambda: clock[0], burst=2)
    assert throttle.held() == 0  # nothing held back
    assert [throttle.due() for _ in range(5)] == [0, 0, None, None, None]
    assert throttle.held() == 0  # within the 10 s: kept
    clock[0] = 10.5
    assert throttle.held() == 3  # said now, and counted as a line
    assert throttle.held() == 0
    assert throttle.due() == 0  # the second line of this window
    assert throttle.due() is None


def test_a_name_with_a_line_break_cannot_forge_a_log_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by an audit: a photo named "a\\n...door unlocked" made a line (a journal
    entry) of its own. Texts and paths given as arguments have their line breaks escaped;
    the message's own line breaks, and an exception's, are kept."""
    log = logging.getLogger("edge_app")
    forged = "x.jpg\nedge_app.daemon: unlock name=Mallory"

    def emit() -> None:
        log.info("photo=%s accepted", forged)
        log.info("photo=%s accepted", Path(forged))
        log.error("%s", ValueError("2 problem(s):\n  - a: bad"))

    assert journal(monkeypatch, capsys, emit) == [
        "<6>edge_app: photo=x.jpg\\x0aedge_app.daemon: unlock name=Mallory accepted",
        "<6>edge_app: photo=x.jpg\\x0aedge_app.daemon: unlock name=Mallory accepted",
        "<3>edge_app: 2 problem(s):",
        "<3>edge_app:   - a: bad",
    ]
