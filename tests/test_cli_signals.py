"""SIGTERM and SIGHUP end an `edge-app` command as Ctrl-C does (edge_app.cli.stops_interrupt),
so that what it was writing is removed on the way out; the door (`run`) and the hub keep
their own handling of both.

Each stop is sent by the command to itself at a chosen moment (a file written whole, about to
be renamed into place; a gallery about to be written), so the test does not race the command.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_review import JOE, needs_models, small_gallery
from test_cli_smoke import _env

from edge_app import cli, hangup
from edge_app.commands import hub, run
from edge_app.gallery import Gallery

TIMEOUT = 60

# Runs edge-app, sending itself STOP (argv[1]) at the first call of HOOK (argv[2]: "fsync",
# the export's temporary file complete; "enroll", the gallery about to be written). The
# handlers are set first as in a process started by systemd or from a terminal: the default
# action for SIGTERM and SIGHUP, Python's KeyboardInterrupt for SIGINT (Ctrl-C).
STOPPED_AT = """\
import os, signal, sys
from edge_app import cli, gallery
stop, hook = signal.Signals[sys.argv[1]], sys.argv[2]
for number in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(number, signal.SIG_DFL)
signal.signal(signal.SIGINT, signal.default_int_handler)
def stopped(real):
    def call(*args, **kwargs):
        os.kill(os.getpid(), stop)
        return real(*args, **kwargs)
    return call
if hook == "fsync":
    os.fsync = stopped(os.fsync)
else:
    gallery.Gallery.enroll = stopped(gallery.Gallery.enroll)
sys.exit(cli.main(sys.argv[3:]))
"""


def stopped_at(cwd: Path, stop: str, hook: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", STOPPED_AT, stop, hook, *argv],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def assert_interrupted(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == cli.EXIT_INTERRUPTED, done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith("WARNING edge_app: interrupted")


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGHUP"])
def test_a_stopped_export_leaves_no_temporary_file(tmp_path: Path, stop: str) -> None:
    """Defect: SIGTERM during `export FILE` left its hidden temporary copy (`.FILE.XXXX`,
    every embedding) beside the target, one more per stop. It is removed, as after Ctrl-C."""
    small_gallery(tmp_path / "gallery.db")

    done = stopped_at(tmp_path, stop, "fsync", "export", "--db", "gallery.db", "out.jsonl")

    assert_interrupted(done)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["gallery.db"]


@needs_models
def test_a_stopped_enrolment_into_a_new_gallery_leaves_what_ctrl_c_leaves(tmp_path: Path) -> None:
    """Defect: SIGTERM during an enrolment into a new gallery could leave the gallery with
    its -wal and -shm files (SQLite's, removed when it is closed). It is stopped as by
    Ctrl-C: the gallery is closed, the enrolment not written."""
    left: dict[str, list[str]] = {}
    for stop in ("SIGINT", "SIGTERM"):
        folder = tmp_path / stop
        folder.mkdir()
        done = stopped_at(
            folder, stop, "enroll",
            "enroll", "--db", "gallery.db", "--backend", "cpu", "Joe", *map(str, JOE[:2]),
        )  # fmt: skip
        assert_interrupted(done)
        left[stop] = sorted(path.name for path in folder.iterdir())
        if left[stop]:
            with Gallery.open(folder / "gallery.db", read_only=True) as gallery:
                assert gallery.people() == []

    assert left["SIGTERM"] == left["SIGINT"]
    assert not any(name.endswith(("-wal", "-shm")) for name in left["SIGTERM"])


@pytest.fixture
def handlers_kept() -> Iterator[None]:
    """The test's own signal handlers back after it, whatever it changed."""
    before = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


@pytest.mark.usefixtures("handlers_kept", "restore_logging")
def test_the_door_and_the_hub_keep_their_own_signal_handling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`run` and `hub` install their own handlers (SIGTERM locks the relay or stops the hub in
    order, SIGHUP reloads): they start with the process's handlers, not the Ctrl-C one,
    while every other command starts with it, and each finds them restored after."""
    seen: dict[str, object] = {}

    def record(name: str) -> object:
        def handler(args: argparse.Namespace) -> int:
            seen[name] = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
            return 0

        return handler

    monkeypatch.setattr(run, "run", record("run"))
    monkeypatch.setattr(hub, "run", record("hub"))
    monkeypatch.setattr(hub, "run_unlock_code", record("hub unlock-code"))
    # As a process started by systemd or a terminal has them (under `nohup`, as a CI runner
    # may start the suite, SIGHUP is ignored, and stays so: test_an_ignored_sighup_...).
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)
    mine = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)

    assert cli.main(["run"]) == 0
    assert cli.main(["hub"]) == 0
    assert cli.main(["hub", "unlock-code"]) == 0

    stop = getattr(cli, "_interrupt", None)
    # The door's SIGHUP is held from the start until its own handler (edge_app.hangup).
    held = (mine[0], hangup._held)
    assert seen == {"run": held, "hub": mine, "hub unlock-code": (stop, stop)}
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)) == mine


@pytest.mark.usefixtures("handlers_kept", "restore_logging")
def test_an_ignored_sighup_stays_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """`nohup edge-app export ...` ignores SIGHUP so that the command outlives its terminal:
    the command keeps it ignored, and runs to its end when the terminal closes."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def hung_up(args: argparse.Namespace) -> int:
        signal.raise_signal(signal.SIGHUP)
        return 0

    monkeypatch.setattr(hub, "run_unlock_code", hung_up)

    assert cli.main(["hub", "unlock-code"]) == 0
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN


def test_ctrl_c_while_the_commands_load_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """Found by an audit: building the parser imports every command's modules (numpy among
    them), outside the handler that turns Ctrl-C into one line: a Ctrl-C in the first half
    second of `edge-app list` printed a traceback through numpy's imports."""
    import time

    for delay in (0.1, 0.2, 0.3, 0.45):
        started = subprocess.Popen(
            [sys.executable, "-m", "edge_app.cli", "list", "--db", "gallery.db"],
            cwd=tmp_path,
            env=_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay)
        started.send_signal(signal.SIGINT)
        _, errors = started.communicate(timeout=60)
        assert "Traceback" not in errors, (delay, errors)
        # interrupted (130), or done first (2: no gallery there), or stopped before Python's
        # own handler was in place (killed by the signal, which prints nothing)
        assert started.returncode in (cli.EXIT_INTERRUPTED, 2, -signal.SIGINT), errors
