"""What a config reload does in the cases a config and reload audit found wrong.

The door started from the default file, a SIGHUP before the door's own handler, and a key
the command line sets: each run in this process with the scripted engine and the mock
relay (gpiozero's MockFactory), as tests/test_daemon_fast.py runs the door.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from test_daemon_fast import NOBODY, PIN, ScriptedEngine, gallery_of_ada, write_frames

from edge_app import cli, hangup, paths
from edge_app.commands import run as run_command
from edge_app.config import ConfigError, door_config, load_config, read_door_config
from edge_app.daemon import Daemon


@pytest.fixture
def held_hangup() -> Iterator[None]:
    """SIGHUP's default handler for the test (a runner started under nohup has it ignored,
    which hangup.hold leaves so), and the runner's put back after it."""
    before = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    hangup.take()
    try:
        yield
    finally:
        hangup.release(deliver=False)
        signal.signal(signal.SIGHUP, before)
        hangup.take()


def doors_started(monkeypatch: pytest.MonkeyPatch) -> list[Daemon]:
    """The doors `edge-app run` makes from now on; each returns 0 at once, never running."""
    started: list[Daemon] = []

    def run(self: Daemon) -> int:
        started.append(self)
        return 0

    monkeypatch.setattr(Daemon, "run", run)
    return started


def run_with_a_sighup(
    daemon: Daemon,
    engine: ScriptedEngine,
    caplog: pytest.LogCaptureFixture,
    before: Callable[[], None],
) -> list[str]:
    """Run `daemon` to its end with SIGHUP sent once it has looked at 3 frames (`before`
    first); what it logged (INFO and up)."""

    def hang_up() -> None:
        while engine.calls["detect"] < 3:
            time.sleep(0.005)
        before()
        os.kill(os.getpid(), signal.SIGHUP)

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    with caplog.at_level("INFO", logger="edge_app.daemon"):
        assert daemon.run() == 0
    thread.join()
    return [r.getMessage() for r in caplog.records]


def write_config(path: Path, frames: Path, gallery: Path, **gpio: Any) -> None:
    extra = "".join(f"{key} = {value}\n" for key, value in gpio.items())
    path.write_text(
        f'[camera]\nsource = "{frames}"\n[gallery]\npath = "{gallery}"\n'
        f'[gpio]\npin = {PIN}\nfactory = "mock"\n{extra}'
        f'[hub]\nsocket = ""\n[events]\ndb = ""\njsonl = ""\n'
    )
    path.chmod(0o600)


@pytest.mark.usefixtures("held_hangup")
def test_a_door_started_from_the_default_file_reads_that_file_at_each_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an audit: a door run without --config whose default file was moved away
    reloaded onto the defaults at the next SIGHUP, without a word: the file's allowed hours
    and access rules were gone. It is now refused as for a --config file."""
    default = tmp_path / "config.toml"
    default.write_text("[policy]\ncooldown_seconds = 7\n")
    default.chmod(0o600)
    monkeypatch.setattr(paths, "DEFAULT_CONFIG", default)
    started = doors_started(monkeypatch)
    assert cli.main(["run"]) == 0
    (daemon,) = started
    assert daemon.config_path == default
    assert daemon.config.policy.cooldown_seconds == 7
    default.unlink()
    with pytest.raises(ConfigError, match="config file not found"):
        door_config(daemon.config_path, daemon.overrides)


@pytest.mark.usefixtures("held_hangup")
def test_without_a_default_file_the_door_runs_on_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paths, "DEFAULT_CONFIG", tmp_path / "absent.toml")
    started = doors_started(monkeypatch)
    assert cli.main(["run"]) == 0
    assert started[0].config_path is None  # a file made later is read at the next reload


@pytest.mark.usefixtures("held_hangup")
def test_the_command_line_holds_sighup_for_the_door_from_its_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an audit: a SIGHUP in the door's first second or two (before its own handler)
    ended it with exit 129, which systemd's Restart=on-failure takes for a clean stop. Held
    from the command line's start, it is the door's to take; the handler is put back after."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    seen: list[bool] = []

    def door(args: object) -> int:
        os.kill(os.getpid(), signal.SIGHUP)  # the default action would end this process
        seen.append(hangup.take())
        return 0

    monkeypatch.setattr(run_command, "run", door)
    assert cli.main(["run", "--config", str(tmp_path / "absent.toml")]) == 0
    assert seen == [True]
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL


@pytest.mark.usefixtures("held_hangup")
def test_a_sighup_held_for_another_command_is_delivered_to_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every other command ends on a SIGHUP as before: one that came while the command line
    was read is delivered once it is known not to be the door's."""
    got: list[int] = []
    signal.signal(signal.SIGHUP, lambda signum, _frame: got.append(signum))
    hangup.hold()
    os.kill(os.getpid(), signal.SIGHUP)
    assert got == []
    hangup.release(deliver=True)
    assert got == [signal.SIGHUP]
    # Through the command line, --help too (a review: it exited 0 and the SIGHUP was lost).
    parse = argparse.ArgumentParser.parse_args

    def hung_up_while_parsing(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGHUP)
        return parse(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", hung_up_while_parsing)
    with pytest.raises(SystemExit):
        cli.main(["list", "--help"])
    assert got == [signal.SIGHUP, signal.SIGHUP]


@pytest.mark.usefixtures("held_hangup")
def test_a_sighup_held_before_the_door_started_is_a_reload_once_it_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frames = write_frames(tmp_path / "frames", [NOBODY] * 20)
    path = tmp_path / "door.toml"
    write_config(path, frames, gallery_of_ada(tmp_path))
    hangup.hold()
    os.kill(os.getpid(), signal.SIGHUP)
    daemon = Daemon(
        load_config(path), config_path=path, engine=ScriptedEngine(), pin_factory=MockFactory()
    )
    with caplog.at_level("INFO", logger="edge_app.daemon"):
        assert daemon.run() == 0
    messages = [r.getMessage() for r in caplog.records]
    assert f"reloading config={path}" in messages and "reload done" in messages


def test_a_key_the_command_line_sets_is_named_when_the_file_says_otherwise(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an audit: with `--pulse 2`, a reload of a file saying 8 said "reload done"
    and kept 2 without a word."""
    frames = write_frames(tmp_path / "frames", [NOBODY] * 120)
    path = tmp_path / "door.toml"
    gallery = gallery_of_ada(tmp_path)
    write_config(path, frames, gallery, pulse_seconds=3.0)
    overrides = {"gpio.pulse_seconds": 2.0, "policy.cooldown_seconds": None}
    engine = ScriptedEngine(delay=0.02)
    daemon = Daemon(
        door_config(path, overrides),
        config_path=path,
        overrides=overrides,
        engine=engine,
        pin_factory=MockFactory(),
    )

    messages = run_with_a_sighup(
        daemon, engine, caplog, lambda: write_config(path, frames, gallery, pulse_seconds=8.0)
    )
    assert "reload done" in messages
    assert (
        "config gpio.pulse_seconds: the file says 8.0, the command line 2.0: the command "
        "line's applies (restart without the flag to use the file's)"
    ) in messages
    assert daemon.pulse_seconds == 2.0


def test_systemctl_status_says_whether_the_last_reload_was_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an audit: `systemctl reload` returns before the door reads the file, and a
    refused reload was only in the journal. The door's status line (STATUS=) says it too."""
    sockets = Path(tempfile.mkdtemp(prefix="notify-", dir="/tmp"))  # AF_UNIX paths are short
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sockets / "notify"))
    listener.settimeout(0.05)
    monkeypatch.setenv("NOTIFY_SOCKET", str(sockets / "notify"))
    frames = write_frames(tmp_path / "frames", [NOBODY] * 120)
    path = tmp_path / "door.toml"
    gallery = gallery_of_ada(tmp_path)
    write_config(path, frames, gallery)
    engine = ScriptedEngine(delay=0.02)
    daemon = Daemon(load_config(path), config_path=path, engine=engine, pin_factory=MockFactory())
    # The grey frames would be said "no picture" (a STATUS= of its own) after 10 s of clip:
    # on a slow machine that could come before the second reload applies.
    daemon.picture.hold_seconds = math.inf
    said: list[str] = []

    def hear(until: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                said.extend(listener.recv(4096).decode().splitlines())
            except TimeoutError:
                if until():
                    return

    def drive() -> None:
        hear(lambda: engine.calls["detect"] >= 3)
        write_config(path, frames, gallery, pulse_seconds=-1)
        os.kill(os.getpid(), signal.SIGHUP)
        hear(lambda: any("reload refused" in line for line in said))
        write_config(path, frames, gallery, pulse_seconds=2)
        os.kill(os.getpid(), signal.SIGHUP)
        hear(lambda: said[-1].startswith("STATUS=") and "reload refused" not in said[-1])

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    try:
        assert daemon.run() == 0
        thread.join()
    finally:
        listener.close()
        shutil.rmtree(sockets)
    statuses = [line for line in said if line.startswith("STATUS=")]
    (refused,) = [line for line in statuses if "reload refused" in line]
    assert refused.startswith(f"STATUS=watching {frames}"), statuses
    assert (
        "reload refused, running on the previous config: "
        f"{path}: 1 problem(s): gpio.pulse_seconds: -1 is out of range"
    ) in refused
    after = statuses[statuses.index(refused) + 1 :]
    assert after and "reload refused" not in after[0], statuses  # the next reload applied


@pytest.mark.usefixtures("held_hangup")
@pytest.mark.parametrize("reloads", [True, False])
def test_a_door_inside_another_command_is_stopped_by_sighup_not_reloaded(
    reloads: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an audit: SIGHUP to `edge-app demo` reloaded its door from the installed
    door's config file (/etc/edge-app/config.toml), its gallery included. A door run inside
    a command (the demo, the evaluations: reloads=False) stops as the command does."""
    frames = write_frames(tmp_path / "frames", [NOBODY] * 200)
    path = tmp_path / "door.toml"
    write_config(path, frames, gallery_of_ada(tmp_path))
    engine = ScriptedEngine(delay=0.02)
    daemon = Daemon(
        load_config(path),
        config_path=path,
        engine=engine,
        pin_factory=MockFactory(),
        reloads=reloads,
    )

    messages = run_with_a_sighup(daemon, engine, caplog, lambda: None)
    if reloads:
        assert "reload done" in messages and daemon.stopped_by is None
        assert daemon.metrics.frames == 200
    else:
        assert not any("reload" in m for m in messages)
        assert daemon.stopped_by == signal.SIGHUP
        assert daemon.metrics.frames < 200


def test_a_flag_is_named_only_against_a_value_the_file_sets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A review: a file that never sets pulse_seconds was said to say 3.0 (the default), and
    3 in the file was taken for another value than the flag's 3.0."""
    frames = write_frames(tmp_path / "frames", [NOBODY] * 5)
    path = tmp_path / "door.toml"
    gallery = gallery_of_ada(tmp_path)
    write_config(path, frames, gallery)  # no pulse_seconds
    overrides = {"gpio.pulse_seconds": 3.0, "gpio.pin": None}
    daemon = Daemon(door_config(path, overrides), config_path=path, overrides=overrides)
    with caplog.at_level("WARNING", logger="edge_app.daemon"):
        daemon._say_overridden(*read_door_config(path, overrides))
        write_config(path, frames, gallery, pulse_seconds=3)
        daemon._say_overridden(*read_door_config(path, overrides))
    assert not caplog.records


def test_under_nohup_a_door_inside_another_command_ignores_sighup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A review: `nohup edge-app eval visits &` then an ssh logout stopped the evaluation; an
    ignored SIGHUP stays ignored, as for every command."""
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        frames = write_frames(tmp_path / "frames", [NOBODY] * 60)
        path = tmp_path / "door.toml"
        write_config(path, frames, gallery_of_ada(tmp_path))
        engine = ScriptedEngine(delay=0.01)
        daemon = Daemon(load_config(path), engine=engine, pin_factory=MockFactory(), reloads=False)
        messages = run_with_a_sighup(daemon, engine, caplog, lambda: None)
    finally:
        signal.signal(signal.SIGHUP, before)
    assert daemon.stopped_by is None and daemon.metrics.frames == 60
    assert not any("reload" in m for m in messages)
