"""The relay guard: the thread that checks, frames or none, that something still ends the
relay's pulses, and locks the door when nothing does (edge_app/daemon.py, _relock_on_stop).

Found by an audit: the check ran once per processed frame, so while the camera delivered
none (stalled, reconnecting, not yet opened) a relay process that died or hung mid-pulse was
not noticed. On a kernel that keeps a released pin's level the strike stayed energised until
frames came back or systemd's watchdog (30 s; 120 s before READY) stopped the door.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from test_daemon_fast import (
    ADA,
    NAME,
    NOBODY,
    ScriptedEngine,
    assert_fail_secure,
    door,
    gallery_of_ada,
    states,
    write_frames,
)

from edge_app import daemon as daemon_module
from edge_app.camera import FolderSource, Frame
from edge_app.daemon import RELAY_CHECK_EVERY, Daemon
from edge_app.relay import Relay, RelayError
from edge_app.relay_process import RELEASE_GRACE_SECONDS, REPLY_SECONDS, RelayProcess


class StallingFolder(FolderSource):
    """A folder played in real time, then no frame at all (a camera that stalls without
    failing) until the door closes it; with `silent`, not even the folder's."""

    stalled = threading.Event()
    silent = False

    def frames(self) -> Iterator[Frame]:
        if not self.silent:
            yield from super().frames()
        type(self).stalled.set()
        while not self.closed:
            time.sleep(0.02)


@pytest.fixture
def stalling(monkeypatch: pytest.MonkeyPatch) -> type[StallingFolder]:
    class Source(StallingFolder):
        stalled = threading.Event()

    monkeypatch.setattr(
        daemon_module,
        "open_camera",
        lambda camera: Source(Path(camera.source), fps=10, realtime=True),
    )
    return Source


@pytest.fixture
def gallery(tmp_path: Path) -> Path:
    return gallery_of_ada(tmp_path)


def run_on_a_thread(daemon: Daemon) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["rc"] = daemon.run()
        except BaseException as error:  # what run() raised, for the test's thread
            outcome["error"] = error

    runner = threading.Thread(target=run)
    runner.start()
    return runner, outcome


def wait_for(what: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, "waited in vain"
        time.sleep(0.01)


def the_relay_process(daemon: Daemon) -> RelayProcess:
    wait_for(lambda: daemon.relay is not None)
    relay = daemon.relay
    assert isinstance(relay, RelayProcess)  # no pin_factory passed in: the door's own
    return relay


def fault_with_no_frames(
    tmp_path: Path,
    gallery: Path,
    stalling: type[StallingFolder],
    fault: Callable[[RelayProcess], None],
    pulse: float,
) -> tuple[BaseException | None, float, RelayProcess]:
    """The door's own relay process open for `pulse` s while no frame comes (after Ada was
    let in; with stalling.silent, a remote unlock before the camera's first frame), then
    `fault` done to it: what run() raised, the seconds it took to end after the fault, and
    the relay process."""
    frames = write_frames(tmp_path / "frames", [NOBODY] * 3 + [ADA] * 8)
    config = door(
        tmp_path, gallery, frames, gpio={"pulse_seconds": pulse}, camera={"realtime": True}
    )
    daemon = Daemon(config, engine=ScriptedEngine())
    runner, outcome = run_on_a_thread(daemon)
    try:
        relay = the_relay_process(daemon)
        if stalling.silent:
            wait_for(stalling.stalled.is_set)  # the camera is open: no frame yet
            assert daemon.open_door(None) is True  # as the control socket's unlock does
        else:
            wait_for(lambda: daemon.metrics.unlocks == 1 and stalling.stalled.is_set())
        assert relay.is_active
        fault(relay)
        done = time.monotonic()
        runner.join(timeout=15)
        assert not runner.is_alive(), "the door ran on with nothing to end its pulse"
    finally:
        daemon.stop()
        runner.join(timeout=10)
    return outcome.get("error"), time.monotonic() - done, relay


@pytest.mark.parametrize("when", ["camera stalled after a visit", "before the first frame"])
def test_a_relay_process_killed_mid_pulse_is_found_without_frames(
    tmp_path: Path, gallery: Path, stalling: type[StallingFolder], when: str
) -> None:
    """The relay process killed while a 30 s pulse holds the strike open and no frame
    comes: the guard finds it gone, the door process locks the pin itself and run() raises,
    at once."""
    stalling.silent = when == "before the first frame"
    error, seconds, relay = fault_with_no_frames(
        tmp_path, gallery, stalling, lambda relay: relay._child.kill(), pulse=30
    )
    assert seconds < 5  # the guard checks every 0.2 s, not on a frame
    assert isinstance(error, RelayError), error
    assert "process that drives GPIO17 has ended" in str(error)
    assert relay._closed  # locked from the door process (RelayProcess._lock_from_here)


def test_a_relay_process_stopped_mid_pulse_is_found_while_the_camera_is_stalled(
    tmp_path: Path, gallery: Path, stalling: type[StallingFolder]
) -> None:
    """SIGSTOP (or a hang): the child's own timer cannot end the pulse. Once the pulse is
    overdue the guard asks it, gets no answer, kills it and locks the pin from here."""
    error, seconds, relay = fault_with_no_frames(
        tmp_path, gallery, stalling, lambda relay: relay._child.send_signal(signal.SIGSTOP), 2
    )
    assert seconds <= 2 + RELEASE_GRACE_SECONDS + 2 * REPLY_SECONDS + 1
    assert isinstance(error, RelayError), error
    assert "the relay process does not answer" in str(error)
    assert relay._child.returncode == -signal.SIGKILL


def test_systemd_hears_of_the_stop_only_once_the_door_is_locked(
    tmp_path: Path, gallery: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an audit: STOPPING=1 was sent before the relay was closed, over a blocking
    socket; a busy systemd held the relock back for as long as the send took."""
    told: list[tuple[str, bool]] = []
    factory = MockFactory()

    class Notifier:
        def notify(self, state: str) -> None:
            told.append((state, factory.pin(17).state))

    monkeypatch.setattr(daemon_module.sdnotify, "SystemdNotifier", Notifier)
    frames = write_frames(tmp_path / "frames", [NOBODY] * 3 + [ADA] * 8)  # ends mid-pulse
    config = door(tmp_path, gallery, frames, gpio={"pulse_seconds": 30})
    daemon = Daemon(config, engine=ScriptedEngine(), pin_factory=factory)
    assert daemon.run() == 0
    assert daemon.metrics.unlocks == 1
    assert ("STOPPING=1", False) in told, told  # the pin low (locked) when it was said
    assert states(factory) == [False, True, False]
    assert_fail_secure(factory, pulse=0.0)


def a_door_without_visitors(tmp_path: Path, gallery: Path, factory: MockFactory) -> Daemon:
    """The door on 30 s of an empty doorway in real time, its relay on `factory`."""
    frames = write_frames(tmp_path / "frames", [NOBODY] * 300)
    config = door(tmp_path, gallery, frames, camera={"realtime": True})
    return Daemon(config, engine=ScriptedEngine(), pin_factory=factory)


def test_anything_the_guards_check_raises_locks_the_door_and_ends_the_run(
    tmp_path: Path, gallery: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: the guard caught RelayError only; anything else from check() ended
    its thread unseen, and the door ran on without its relay checks or its relock on SIGTERM
    while the loop is busy, to exit 0. Whatever check() raises locks the door and is raised
    by run()."""
    factory = MockFactory()

    def broken(self: Relay) -> None:
        raise MemoryError("while checking the relay")

    monkeypatch.setattr(Relay, "check", broken)
    frames = write_frames(tmp_path / "frames", [NOBODY] * 3 + [ADA] * 8 + [NOBODY] * 300)
    config = door(tmp_path, gallery, frames, gpio={"pulse_seconds": 30}, camera={"realtime": True})
    daemon = Daemon(config, engine=ScriptedEngine(), pin_factory=factory)
    with pytest.raises(MemoryError, match="while checking the relay"):
        daemon.run()
    assert daemon.metrics.frames < 300  # it stopped at once, not at the end of the clip
    assert states(factory)[-1] is False


def test_a_relay_failure_found_while_a_stop_comes_still_ends_the_run_non_zero(
    tmp_path: Path, gallery: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: a check that waited for the relay process's answer when SIGTERM
    came found it had failed only after run() had read that nothing had: exit 0. run()
    reads it once the guard has ended."""
    factory = MockFactory()
    daemon: Daemon

    def slow_then_failed(self: Relay) -> None:
        daemon.stop()  # SIGTERM arrives while the answer is awaited
        time.sleep(1.0)
        raise RelayError("relay: the relay process does not answer")

    monkeypatch.setattr(Relay, "check", slow_then_failed)
    daemon = a_door_without_visitors(tmp_path, gallery, factory)
    with pytest.raises(RelayError, match="does not answer"):
        daemon.run()
    assert states(factory) == [False]


def test_a_relay_process_that_hangs_while_an_unlock_waits_for_it_is_locked_on_time(
    tmp_path: Path, gallery: Path
) -> None:
    """Found by a review: with the relay process hung, the guard's check marked it silent
    but left the locking to close(), which waits for the door's lock; an unlock under way
    held that lock while asking the silent child twice (1 s each): the pin was locked 4.7 s
    after a 1 s pulse opened, not within pulse + grace + one answer's wait. check() locks it
    from the door process itself, and a silent child is not asked again."""
    frames = write_frames(tmp_path / "frames", [NOBODY] * 400)
    config = door(tmp_path, gallery, frames, gpio={"pulse_seconds": 1}, camera={"realtime": True})
    daemon = Daemon(config, engine=ScriptedEngine())
    runner, outcome = run_on_a_thread(daemon)
    unlocking = threading.Event()

    def keep_unlocking() -> None:  # remote unlocks, one after another, as the socket would
        while not unlocking.is_set():
            with contextlib.suppress(RelayError, RuntimeError):
                daemon.open_door(None)

    try:
        relay = the_relay_process(daemon)
        wait_for(lambda: daemon.metrics.frames >= 2)
        assert daemon.open_door(NAME) is True
        opened = time.monotonic()
        relay._child.send_signal(signal.SIGSTOP)
        time.sleep(1.0)  # the pulse's end: the unlocks now ask a child that cannot answer
        hammer = threading.Thread(target=keep_unlocking)
        hammer.start()
        wait_for(lambda: relay.locked_from_here is not None, 15)
        locked = time.monotonic()
        unlocking.set()
        hammer.join(timeout=10)
        runner.join(timeout=15)
    finally:
        unlocking.set()
        daemon.stop()
        runner.join(timeout=10)
    bound = 1 + RELEASE_GRACE_SECONDS + REPLY_SECONDS + 2 * RELAY_CHECK_EVERY
    assert locked - opened <= bound + 0.5, locked - opened
    assert isinstance(outcome.get("error"), RelayError), outcome


def test_a_relay_process_found_hung_only_as_the_door_stops_ends_the_run_non_zero(
    tmp_path: Path, gallery: Path
) -> None:
    """Found by a review: a relay process that hung while the door was locked, found only
    when the stop's close got no answer, was locked from the door process, and the run
    exited 0; found by the guard it exits non-zero. Both do now."""
    frames = write_frames(tmp_path / "frames", [NOBODY] * 400)
    config = door(tmp_path, gallery, frames, camera={"realtime": True})
    daemon = Daemon(config, engine=ScriptedEngine())
    runner, outcome = run_on_a_thread(daemon)
    try:
        relay = the_relay_process(daemon)
        wait_for(lambda: daemon.metrics.frames >= 2)
        relay._child.send_signal(signal.SIGSTOP)  # before its heartbeat is due (5 s)
        daemon.stop()
        runner.join(timeout=15)
    finally:
        daemon.stop()
        runner.join(timeout=10)
    error = outcome.get("error")
    assert isinstance(error, RelayError) and "failed a close (no answer)" in str(error), outcome


def test_a_base_exception_from_the_guards_check_ends_the_run_as_a_relay_failure(
    tmp_path: Path, gallery: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: SystemExit from check() (a library's) ended the guard without a
    word: the door ran on unable to open, to exit 0 at its stop. It is the run's failure,
    raised as a RelayError (raised as it is, it would be a clean exit)."""
    factory = MockFactory()

    def exits(self: Relay) -> None:
        raise SystemExit(0)

    monkeypatch.setattr(Relay, "check", exits)
    daemon = a_door_without_visitors(tmp_path, gallery, factory)
    with pytest.raises(RelayError, match="SystemExit"):
        daemon.run()
    assert daemon.metrics.frames < 300
    assert states(factory) == [False]
