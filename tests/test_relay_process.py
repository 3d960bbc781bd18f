"""The relay in its own process (edge_app/relay_process.py), on gpiozero's MockFactory.

The child process runs a real Relay on a real MockFactory; the assertions read that mock pin's
state history, which the child sends back (`history`) or writes to a file when it exits.

To stop every Python thread of this process the tests call libc's usleep through ctypes.PyDLL,
which keeps the interpreter lock for the whole call: what a native call that hangs in the
frame loop would do.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edge_app.config import GpioConfig
from edge_app.relay import Relay, RelayError
from edge_app.relay_process import RelayProcess

PIN = 17
MOCK = GpioConfig(pin=PIN, factory="mock")
REPO = Path(__file__).resolve().parents[1]


def hold_the_interpreter(seconds: float) -> None:
    """Block this process's Python threads: a native call that keeps the GIL."""
    ctypes.PyDLL(None).usleep(int(seconds * 1_000_000))


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone for our purpose (it exited; nobody reaped it yet).
    status = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[0]
    return status == "Z"


def test_a_pulse_ends_on_time_while_this_process_holds_the_interpreter() -> None:
    """The defect it closes: with the relay in the door process, a 0.3 s pulse stays open for
    as long as a native call keeps the interpreter lock (measured: 1.5 s for a 1.5 s call)."""
    released: list[str] = []
    with RelayProcess(MOCK, on_release=released.append) as relay:
        assert relay.pulse(0.3) is True
        hold_the_interpreter(1.5)
        history = relay.history()
        wait_for(lambda: released == ["timeout"])
        assert relay.is_active is False
    assert [state for _, state in history] == [False, True, False]
    assert 0.29 <= history[2][0] < 0.6  # ended by the child's timer, not after 1.5 s


def test_an_in_process_relay_is_held_open_by_the_same_call() -> None:
    """Why the daemon does not keep the relay in its own process (the comparison above)."""
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    with Relay(PIN, pin_factory=factory) as relay:
        relay.pulse(0.3)
        hold_the_interpreter(1.0)
        wait_for(lambda: not relay.is_active)
    held = factory.pin(PIN).states[2].timestamp
    assert held >= 0.95


def test_repeat_pulses_extend_and_never_stack_across_the_pipe() -> None:
    with RelayProcess(MOCK) as relay:
        assert relay.pulse(0.4) is True
        time.sleep(0.2)
        assert relay.pulse(0.4) is False  # open already: extended
        wait_for(lambda: not relay.is_active)
        history = relay.history()
    assert [state for _, state in history] == [False, True, False]
    assert 0.55 <= history[2][0] < 0.9  # 0.4 s after the second pulse, not 0.8 s in all


def test_close_during_a_pulse_locks_and_ends_the_child(tmp_path: Path) -> None:
    record = tmp_path / "history.json"
    released: list[str] = []
    relay = RelayProcess(MOCK, on_release=released.append, history=record)
    relay.pulse(30.0)
    start = time.monotonic()
    relay.close()
    assert time.monotonic() - start < 1.0
    assert [state for _, state in json.loads(record.read_text())] == [False, True, False]
    assert released == ["close"]
    assert relay._child.poll() == 0
    relay.close()  # idempotent
    relay.check()  # closed on purpose: nothing to report
    with pytest.raises(RuntimeError, match="closed"):
        relay.pulse(1.0)


def test_the_child_locks_the_door_when_the_door_process_dies(tmp_path: Path) -> None:
    """SIGKILL (or the OOM killer) ends the door process mid-pulse: the child sees its pipe
    close and drives the pin low at once, not when the 30 s pulse would have ended."""
    record = tmp_path / "history.json"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from edge_app.config import GpioConfig
        from edge_app.relay_process import RelayProcess
        relay = RelayProcess(GpioConfig(pin={PIN}, factory="mock"), history=sys.argv[1])
        relay.pulse(30.0)
        print(relay._child.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    door = subprocess.run(
        [sys.executable, "-c", script, str(record)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    killed = time.monotonic()
    assert door.returncode == -signal.SIGKILL, door.stderr
    child = int(door.stdout.split()[0])
    wait_for(record.exists)
    assert time.monotonic() - killed < 2.0
    assert [state for _, state in json.loads(record.read_text())] == [False, True, False]
    wait_for(lambda: gone(child))


def test_a_child_that_died_is_seen_and_no_pulse_goes_through() -> None:
    relay = RelayProcess(MOCK)
    relay.pulse(30.0)
    relay._child.kill()
    relay._child.wait(timeout=5)
    with pytest.raises(RelayError, match="process that drives GPIO17 has ended"):
        relay.check()
    with pytest.raises(RelayError, match="failed a pulse"):
        relay.pulse(1.0)
    relay.close()  # a mock pin has nothing to lock from here; a real one is claimed here


def test_the_child_ignores_sigterm_and_sigint_until_the_door_process_closes_it() -> None:
    """systemd's stop signals every process of the service: the child leaves the lock to the
    door process's close(), so the door process's stop path still reaches a live relay."""
    with RelayProcess(MOCK) as relay:
        relay._child.send_signal(signal.SIGTERM)
        relay._child.send_signal(signal.SIGINT)
        time.sleep(0.3)
        relay.check()
        assert relay.pulse(0.2) is True
        wait_for(lambda: not relay.is_active)
        assert [state for _, state in relay.history()] == [False, True, False]


@pytest.mark.parametrize(
    ("gpio", "message"),
    [
        (GpioConfig(pin=14, factory="mock"), "gpio.pin: 14 is a UART pin"),
        (GpioConfig(pin=PIN, factory="pigpio"), "cannot start the 'pigpio' pin factory"),
    ],
    ids=["uart_pin", "no_pin_driver"],
)
def test_a_relay_the_child_cannot_claim_is_one_error_line(gpio: GpioConfig, message: str) -> None:
    with pytest.raises(RelayError) as refused:
        RelayProcess(gpio)
    text = str(refused.value)
    assert message in text and "\n" not in text and "Traceback" not in text


def test_the_child_gets_none_of_systemd_s_notification_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the door process may send READY=1 and WATCHDOG=1 (NotifyAccess=main)."""
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/nothing-here.sock")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    with RelayProcess(MOCK) as relay:
        environ = Path(f"/proc/{relay._child.pid}/environ").read_bytes().split(b"\0")
    names = {entry.split(b"=", 1)[0] for entry in environ}
    assert b"NOTIFY_SOCKET" not in names and b"WATCHDOG_USEC" not in names


@pytest.mark.parametrize(("level", "shown"), [(logging.INFO, True), (logging.WARNING, False)])
def test_the_child_logs_at_the_door_process_s_level(
    level: int, shown: bool, capfd: pytest.CaptureFixture[str]
) -> None:
    """`edge-app run -q` keeps the child's INFO lines out too."""
    root = logging.getLogger()
    before = root.level
    root.setLevel(level)
    try:
        with RelayProcess(MOCK):
            pass
    finally:
        root.setLevel(before)
    assert ("relay ready pin=GPIO17" in capfd.readouterr().err) is shown
