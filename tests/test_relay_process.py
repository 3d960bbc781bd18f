"""The relay in its own process (edge_app/relay_process.py), on gpiozero's MockFactory.

The child process runs a real Relay on a real MockFactory; the assertions read that mock pin's
state history, which the child sends back (`history`) or writes to a file when it exits.

To stop every Python thread of this process the tests call libc's usleep through ctypes.PyDLL,
which keeps the interpreter lock for the whole call: what a native call that hangs in the
frame loop would do.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from test_relay import OFF_A_PI, rpi_gpio_off_a_pi, wait_for

from edge_app import relay_process
from edge_app.config import GpioConfig
from edge_app.relay import PulseUnanswered, Relay, RelayError
from edge_app.relay_process import (
    _BOOT,
    _PACKAGE_ROOT,
    RELEASE_GRACE_SECONDS,
    REPLY_SECONDS,
    RelayProcess,
)

PIN = 17
MOCK = GpioConfig(pin=PIN, factory="mock")
REPO = Path(__file__).resolve().parents[1]


def hold_the_interpreter(seconds: float) -> None:
    """Block this process's Python threads: a native call that keeps the GIL."""
    ctypes.PyDLL(None).usleep(int(seconds * 1_000_000))


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


def relocked(relay: RelayProcess) -> None:
    """Wait until the pulse is over (is_active, by its deadline) and the child has relocked
    the pin, within its timer's latency."""
    wait_for(lambda: not relay.is_active)
    wait_for(lambda: relay.history()[-1][1] is False, RELEASE_GRACE_SECONDS)


def test_repeat_pulses_extend_and_never_stack_across_the_pipe() -> None:
    with RelayProcess(MOCK) as relay:
        assert relay.pulse(1.0) is True
        asked = time.monotonic()
        time.sleep(0.3)
        assert relay.pulse(1.0) is False  # open already: extended
        second = time.monotonic() - asked  # 0.3 s, or more on a loaded machine
        relocked(relay)
        history = relay.history()
    assert [state for _, state in history] == [False, True, False]
    # 1 s after the second pulse (with the child's timer latency), not 2 s in all
    assert second + 0.95 <= history[2][0] < second + 1.3


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
    assert relay.locked_from_here is not None  # at once, by check(): not left to close()
    # Refused at once, the child not asked again (a silent one took 1 s an ask).
    with pytest.raises(RelayError, match=r"failed a check \(it has ended\); GPIO17 locked"):
        relay.pulse(1.0)
    assert relay.is_active is False
    relay.close()  # a mock pin has nothing to lock from here; a real one is claimed here


SIGNALS_A_TERMINAL_OR_SYSTEMCTL_KILL_SENDS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,  # the door's reload (`systemctl kill -s HUP` signals every process)
    signal.SIGQUIT,
    signal.SIGTSTP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


def test_the_child_ignores_every_signal_but_sigkill_until_the_door_process_closes_it() -> None:
    """systemd's stop signals every process of the service: the child leaves the lock to the
    door process's close(), so the door process's stop path still reaches a live relay.
    Defect (audit): a SIGHUP (the door's reload, an ssh hangup) killed the child mid-pulse."""
    with RelayProcess(MOCK) as relay:
        for sent in SIGNALS_A_TERMINAL_OR_SYSTEMCTL_KILL_SENDS:
            relay._child.send_signal(sent)
        time.sleep(0.3)
        relay.check()
        assert relay.pulse(0.2) is True
        relocked(relay)
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


def test_a_pin_library_that_refuses_as_it_loads_is_the_childs_one_line_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Defect (review): RPi.GPIO's RuntimeError off a Pi ended the child on a traceback, and
    `edge-app run` said only "it exited with status 1 before it was ready"."""
    rpi_gpio_off_a_pi(tmp_path, monkeypatch)
    with pytest.raises(RelayError) as refused:
        RelayProcess(GpioConfig(pin=PIN, factory="rpigpio"))
    text = str(refused.value)
    assert f"cannot start the 'rpigpio' pin factory ({OFF_A_PI})" in text and "\n" not in text
    assert "Traceback" not in capfd.readouterr().err  # the child's stderr: the journal


def test_a_child_that_exits_before_it_is_ready_is_said_to_have_exited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect (review): a child that ended before it was ready (a crash as its pin library
    loaded) closes its end of the pipe a moment before it can be reaped; read in between, its
    status was not there yet and the start was refused as "no answer in 20 s", at once (one
    run in three of `edge-app run --gpio rpigpio` off a Pi, before the fix above). Here the
    pin library closes the pipe, then ends the process 0.5 s later: that moment, drawn out."""
    package = tmp_path / "RPi"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "GPIO.py").write_text("import os, time\nos.close(1)\ntime.sleep(0.5)\nos._exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(RelayError, match=r"did not start \(it exited with status 3 before it"):
        RelayProcess(GpioConfig(pin=PIN, factory="rpigpio"))
    assert time.monotonic() - start < 10.0  # not the start's 20 s


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


def test_a_stopped_child_is_caught_once_its_pulse_is_overdue() -> None:
    """Defect (audit): a child stopped mid-pulse (SIGSTOP, or hung) was never noticed: check()
    passed and the strike stayed open. Now check() asks the child once the pulse is overdue;
    no answer raises, and close() kills the child and locks the pin from this process."""
    relay = RelayProcess(MOCK)
    try:
        relay.pulse(0.3)
        opened = time.monotonic()
        relay._child.send_signal(signal.SIGSTOP)
        with pytest.raises(RelayError, match="the relay process does not answer"):
            while True:
                relay.check()
                assert time.monotonic() - opened < 5, "check() never noticed"
                time.sleep(0.02)
        caught = time.monotonic() - opened
        assert caught <= 0.3 + RELEASE_GRACE_SECONDS + REPLY_SECONDS + 0.5
        relay.close()  # no second wait for a child known not to answer: killed at once
        assert time.monotonic() - opened < caught + 1.0
        assert relay._child.returncode == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            relay._child.kill()


def test_a_child_whose_timer_is_gone_is_caught_once_its_pulse_is_overdue() -> None:
    """The pin still high after the deadline: check() raises, whatever the cause."""
    with RelayProcess(MOCK) as relay:
        relay.pulse(0.2)
        # Make the child's pulse run long: an extension the door process did not ask for,
        # as a timer that died would leave it.
        assert relay._ask("pulse 30.0") == "opened 0"
        time.sleep(0.2 + RELEASE_GRACE_SECONDS + 0.1)
        with pytest.raises(RelayError, match="was due to lock .* and is still open"):
            relay.check()


def test_a_late_answer_is_never_taken_for_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect (audit): after a timed-out request, each answer was paired with the request after
    its own; close() then got the wrong answer and killed a healthy child."""
    monkeypatch.setattr(relay_process, "HEARTBEAT_SECONDS", 0.0)
    record = tmp_path / "history.json"
    with RelayProcess(MOCK, history=record) as relay:
        relay.pulse(0.2)
        relocked(relay)
        relay.check()  # low again: no pulse under way
        relay._child.send_signal(signal.SIGSTOP)
        relay.check()  # a heartbeat left unanswered: one is forgiven (HEARTBEATS_MISSED)
        assert relay.locked_from_here is None
        relay._child.send_signal(signal.SIGCONT)  # its late "state" answer comes now
        assert relay._ask("state") == "state 0"  # each answer goes to its own request
        history = relay.history()
        assert [state for _, state in history] == [False, True, False]
    assert relay._child.returncode == 0  # closed when asked, not killed
    assert json.loads(record.read_text()) == [list(change) for change in history]


def test_a_pulse_the_child_answers_too_late_is_locked_from_here_at_once() -> None:
    """Defect (audit): a child slower than REPLY_SECONDS carried out the pulse it answered too
    late: the door opened 0.5 s after the unlock was reported refused, for the whole pulse.
    Now the door process kills the child and locks the pin the moment the answer is late."""
    relay = RelayProcess(MOCK)
    try:
        relay._child.send_signal(signal.SIGSTOP)
        start = time.monotonic()
        with pytest.raises(RelayError, match="failed a pulse .no answer.*locked from the door"):
            relay.pulse(2.0)
        assert time.monotonic() - start < REPLY_SECONDS + 2.5
        assert relay._child.returncode == -signal.SIGKILL  # it can carry out nothing now
        with pytest.raises(RelayError, match="failed a pulse .no answer.*locked from the door"):
            relay.check()  # the run ends, with the reason found first
        relay.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            relay._child.kill()


@pytest.mark.parametrize("failure", ["killed", "stopped"])
def test_a_relock_is_recorded_when_the_door_process_locks_the_pin_itself(failure: str) -> None:
    """Defect (audit): when the door process had to lock the pin itself, the unlock had no
    relock event. The relock of a pulse the child opened and never reported ended is
    recorded once (reason "close")."""
    released: list[str] = []
    relay = RelayProcess(MOCK, on_release=released.append)
    try:
        relay.pulse(0.1)
        wait_for(lambda: released == ["timeout"])  # reported by the child: not recorded again
        relay.pulse(30.0)
        if failure == "killed":
            relay._child.kill()
        else:
            relay._child.send_signal(signal.SIGSTOP)
        relay.close()
        wait_for(lambda: len(released) == 2)
        time.sleep(0.1)
        assert released == ["timeout", "close"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            relay._child.kill()


def test_a_pulse_the_child_may_have_carried_out_counts_as_an_opening_only_from_locked() -> None:
    """Found by an audit: a pulse the child carried out but answered too late had no relock
    recorded, as nobody counted it opened. From locked it may have opened the door: its
    relock is reported ("close"). While a pulse is under way it could only extend it: the
    relock of that pulse is reported once."""
    released: list[str] = []
    relay = RelayProcess(MOCK, on_release=released.append)
    try:
        relay._child.send_signal(signal.SIGSTOP)
        with pytest.raises(PulseUnanswered, match="failed a pulse .no answer") as failure:
            relay.pulse(2.0)
        assert failure.value.opened is True
        wait_for(lambda: released == ["close"])
    finally:
        with contextlib.suppress(ProcessLookupError):
            relay._child.kill()
    released.clear()
    relay = RelayProcess(MOCK, on_release=released.append)
    try:
        assert relay.pulse(30.0) is True
        relay._child.send_signal(signal.SIGSTOP)
        with pytest.raises(PulseUnanswered) as failure:
            relay.pulse(30.0)
        assert failure.value.opened is False
        wait_for(lambda: released == ["close"])
        time.sleep(0.1)
        assert released == ["close"]  # one opening, one relock
    finally:
        with contextlib.suppress(ProcessLookupError):
            relay._child.kill()


def test_a_pin_driver_error_in_the_child_is_its_answer_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Found by an audit: an OSError from the pin driver (lgpio raises them) ended the child
    with a traceback, and the door only said the child "has ended". The child now answers
    with the driver's error, which the door reports."""
    (tmp_path / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            from gpiozero.pins.mock import MockPin

            def _set_state(self, value, real=MockPin._set_state):
                if value:
                    raise OSError("lgpio: GPIO not allocated")
                return real(self, value)

            MockPin._set_state = _set_state
            """
        )
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    relay = RelayProcess(MOCK)
    try:
        with pytest.raises(RelayError, match=r"failed a pulse \(OSError: lgpio: GPIO not alloc"):
            relay.pulse(1.0)
        relay.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            relay._child.kill()
    assert "Traceback" not in capfd.readouterr().err


def test_a_start_given_up_for_a_stop_says_so() -> None:
    """Defect (audit): SIGTERM while the relay process started was held off up to 20 s (past
    systemd's TimeoutStopSec=5), and the wait was reported as the child's own exit."""
    stop = threading.Event()
    stop.set()
    start = time.monotonic()
    with pytest.raises(RelayError, match="did not start .a stop was asked for first."):
        RelayProcess(MOCK, cancel=stop)
    assert time.monotonic() - start < 3.0


def test_a_release_callback_that_blocks_never_delays_an_answer() -> None:
    """Defect (audit): the relock callback ran on the thread that reads the answers, so a
    callback that took 3 s made the next pulse fail though the strike opened."""
    released: list[str] = []

    def slow(reason: str) -> None:
        time.sleep(3.0)
        released.append(reason)

    with RelayProcess(MOCK, on_release=slow) as relay:
        relay.pulse(0.1)
        relocked(relay)
        time.sleep(0.1)  # the callback is now under way
        start = time.monotonic()
        # Long enough to be under way when the block ends: its release is the close's.
        assert relay.pulse(30.0) is True
        assert time.monotonic() - start < 0.5
    wait_for(lambda: len(released) == 2, timeout=10)  # each callback ran, in order
    assert released == ["timeout", "close"]


@pytest.mark.parametrize("seconds", [math.nan, math.inf, -1.0, 0.0, 61.0, 1e400])
def test_a_pulse_that_is_not_a_sane_length_is_refused_on_every_path(seconds: float) -> None:
    """Defect (audit): pulse(inf) kept the pin high for good (and the timer logged an
    OverflowError every 50 ms); nan, 0 and negative lengths clicked the strike."""
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    with Relay(PIN, pin_factory=factory) as relay, pytest.raises(ValueError, match="refused"):
        relay.pulse(seconds)
    assert [state.state for state in factory.pin(PIN).states] == [False]
    with RelayProcess(MOCK) as child:
        with pytest.raises(ValueError, match="refused"):
            child.pulse(seconds)
        # Straight down the pipe, past the door process's own check: the child refuses too.
        assert str(child._ask(f"pulse {seconds!r}")).startswith("error a pulse of")
        assert [state for _, state in child.history()] == [False]


def test_the_child_imports_the_door_process_s_package_not_the_working_directory_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect (audit): `-m` put the working directory first on the child's import path, so an
    edge_app folder there ran instead of the real one."""
    fake = tmp_path / "edge_app"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    marker = tmp_path / "imported"
    (fake / "relay_process.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef main():\n    return 0\n"
    )
    monkeypatch.chdir(tmp_path)
    with RelayProcess(MOCK) as relay:
        assert relay.pulse(0.1) is True
    assert not marker.exists()


def test_a_request_cut_short_by_the_end_of_the_pipe_is_not_carried_out(tmp_path: Path) -> None:
    """Defect (audit): a last request without its newline was still carried out."""
    record = tmp_path / "history.json"
    settings = {"gpio": dataclasses.asdict(MOCK), "log_level": 30, "history": str(record)}
    child = subprocess.run(
        [sys.executable, "-c", _BOOT, _PACKAGE_ROOT, json.dumps(settings)],
        input="1 pulse 30",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines() == ["0 ready", "0 closed"]
    assert json.loads(record.read_text()) == [[0.0, False]]  # never opened


def test_is_active_follows_the_pulse_and_the_child_relocks_when_it_ends() -> None:
    """Defect (audit): is_active was a copy two threads wrote without order; it read True with
    the pin low (or False with it high) in a few of 100 short pulses. It answers from the
    pulse's deadline the door process knows, which is no earlier than the child's: True
    for as long as the pulse may last, and once False the child has relocked, or does so
    within its timer's latency (the guard checks it RELEASE_GRACE_SECONDS after)."""
    with RelayProcess(MOCK) as relay:
        for _ in range(20):
            relay.pulse(0.02)
            if not relay.is_active:  # the pulse may be over already: the child relocks
                ended = time.monotonic()
                wait_for(lambda: relay.history()[-1][1] is False, RELEASE_GRACE_SECONDS)
                assert time.monotonic() - ended <= RELEASE_GRACE_SECONDS
            relocked(relay)


def test_a_child_that_stops_answering_while_the_door_is_locked_is_found_by_the_heartbeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a pulse nothing was asked of the child, so one that hung while the door was
    locked was found only at the next unlock, which then failed. check() asks it after
    HEARTBEAT_SECONDS without a word (shortened here); HEARTBEATS_MISSED in a row, not one
    late answer (a review: a loaded Pi, or a native call holding the interpreter lock while
    the answer waited in the pipe, restarted a healthy door)."""
    monkeypatch.setattr(relay_process, "HEARTBEAT_SECONDS", 0.2)
    relay = RelayProcess(MOCK)
    try:
        relay.check()  # it answered at start: nothing to ask yet
        time.sleep(0.3)
        relay.check()  # asked, and it answered
        relay._child.send_signal(signal.SIGSTOP)
        time.sleep(0.3)
        relay.check()  # one unanswered: asked again on the next check
        assert relay.locked_from_here is None
        with pytest.raises(RelayError, match="the relay process does not answer"):
            relay.check()
        relay.close()
        assert relay._child.returncode == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            relay._child.kill()


def test_a_pin_open_with_no_pulse_under_way_ends_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_process, "HEARTBEAT_SECONDS", 0.0)
    with RelayProcess(MOCK) as relay:
        relay.check()  # low: fine
        relay.pulse(0.2)
        relay.check()  # open during a pulse asked for: fine
        wait_for(lambda: not relay.is_active)
        time.sleep(RELEASE_GRACE_SECONDS + 0.05)
        relay.check()  # low again after it
        assert relay._ask("pulse 30.0") == "opened 1"  # opened behind the door process's back
        with pytest.raises(RelayError, match="says GPIO17 is open with no pulse under way"):
            relay.check()


def test_a_status_or_an_unlock_never_waits_on_the_child_nor_takes_it_for_failed() -> None:
    """Found by reviews: is_active asked the child, so a silent one cost every unlock and
    hub status poll 1 s (a stop's close waited behind them: 2.9 s); made to lock on no
    answer, one late answer to a poll restarted a healthy door. It answers from the
    pulse's deadline the door process knows; check() alone asks the child."""
    relay = RelayProcess(MOCK)
    try:
        relay.pulse(30.0)
        relay._child.send_signal(signal.SIGSTOP)
        start = time.monotonic()
        assert relay.is_active is True  # the pulse's deadline is 30 s away
        assert time.monotonic() - start < 0.5  # not asked of the stopped child
        assert relay.locked_from_here is None and relay._child.poll() is None
        relay._child.send_signal(signal.SIGCONT)
    finally:
        relay.close()


def test_the_pin_is_locked_from_here_before_the_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by a review: the line saying the child failed was logged before the pin was
    driven locked: a journal that stalls held a strike open (3 s behind a blocked handler)."""
    locked_when_logged: list[bool] = []
    relay = RelayProcess(MOCK)

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "from this process" in record.getMessage():
                locked_when_logged.append(relay._pin_locked_here)

    spy = Spy()
    logging.getLogger("edge_app.relay_process").addHandler(spy)
    try:
        relay.pulse(30.0)
        relay._child.kill()
        relay._child.wait(timeout=5)
        with pytest.raises(RelayError, match="has ended"):
            relay.check()
        relay.close()
    finally:
        logging.getLogger("edge_app.relay_process").removeHandler(spy)
    assert locked_when_logged == [True]  # once: close() did not lock (or log) it again


def test_the_answer_grace_outlasts_a_late_answer_of_an_earlier_question() -> None:
    """Found by a review: the 50 ms past a deadline was one read, which the late answer of
    the question before (released with it when the interpreter lock came back) used up:
    the healthy child's own answer, right behind it, was missed."""
    with RelayProcess(MOCK) as relay:
        number = next(relay._ids)

        def both_late() -> None:
            time.sleep(0.22)  # past the 0.2 s deadline
            relay._replies.put(f"{number - 1} state 0")
            relay._replies.put(f"{number} state 0")

        late = threading.Thread(target=both_late)
        late.start()
        assert relay._answer(number, 0.2) == "state 0"
        late.join()


def test_a_stop_right_after_a_forgiven_heartbeat_does_not_ask_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a review: a stop right after one heartbeat was forgiven asked the silent
    child to close, one second more: the pin is locked from here at once instead."""
    monkeypatch.setattr(relay_process, "HEARTBEAT_SECONDS", 0.0)
    relay = RelayProcess(MOCK)
    try:
        relay._child.send_signal(signal.SIGSTOP)
        relay.check()  # unanswered: forgiven once
        start = time.monotonic()
        relay.close()
        assert time.monotonic() - start < REPLY_SECONDS
        assert str(relay.locked_from_here).endswith("failed a close (no answer)")
    finally:
        with contextlib.suppress(ProcessLookupError):
            relay._child.kill()
