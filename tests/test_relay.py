"""The relay on gpiozero's MockFactory: the assertions read the mock pin's real state history."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from edge_app import paths
from edge_app import relay as relay_module
from edge_app.relay import Relay, RelayError, make_pin_factory

PIN = 17


@pytest.fixture
def factory() -> MockFactory:
    return MockFactory()


def history(factory: MockFactory) -> list[tuple[float, bool]]:
    """(seconds since the previous change, state) for each change of the relay pin."""
    return [(state.timestamp, state.state) for state in factory.pin(PIN).states]


def assert_pulses(factory: MockFactory, seconds: list[float]) -> None:
    """The pin went high and low once per pulse, each high for its time: at least that, and
    not 0.25 s more. (assert_states_and_times would also hold each gap between a relock and
    the next pulse, which the test's own polling sets, to 0.05 s: too tight on a loaded
    machine.)"""
    states = history(factory)
    assert [state for _, state in states] == [False] + [True, False] * len(seconds)
    lasted = [elapsed for elapsed, state in states[2::2]]
    for expected, actual in zip(seconds, lasted, strict=True):
        assert expected - 0.01 <= actual < expected + 0.25, (seconds, lasted)


def wait_for(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_pin_starts_low_and_pulse_goes_high_then_low(factory: MockFactory) -> None:
    released: list[str] = []
    with Relay(PIN, pin_factory=factory, on_release=released.append) as relay:
        assert factory.pin(PIN).state is False
        assert relay.pulse(0.2) is True
        assert factory.pin(PIN).state is True
        wait_for(lambda: not relay.is_active)
    states = history(factory)
    assert [s for _, s in states] == [False, True, False]
    assert 0.19 <= states[2][0] < 0.5  # the pulse lasted its configured time
    assert released == ["timeout"]


def test_repeat_match_extends_the_pulse_but_never_stacks(factory: MockFactory) -> None:
    with Relay(PIN, pin_factory=factory) as relay:
        relay.pulse(0.4)
        time.sleep(0.2)
        assert relay.pulse(0.4) is False  # already open: extended, not re-opened
        time.sleep(0.1)
        assert relay.pulse(0.4) is False
        wait_for(lambda: not relay.is_active)
    states = history(factory)
    assert [s for _, s in states] == [False, True, False]  # one pulse, no flicker
    # Open until 0.4 s after the last match (0.3 + 0.4 = 0.7 s), not 3 x 0.4 = 1.2 s.
    assert 0.65 <= states[2][0] < 0.95


def test_shorter_repeat_does_not_cut_a_pulse_short(factory: MockFactory) -> None:
    with Relay(PIN, pin_factory=factory) as relay:
        relay.pulse(0.5)
        relay.pulse(0.1)
        wait_for(lambda: not relay.is_active)
    assert history(factory)[2][0] >= 0.49


def test_close_during_a_pulse_leaves_the_pin_low(factory: MockFactory) -> None:
    released: list[str] = []
    relay = Relay(PIN, pin_factory=factory, on_release=released.append)
    relay.pulse(30.0)
    assert factory.pin(PIN).state is True
    start = time.monotonic()
    relay.close()  # what SIGTERM's clean stop and every exception path do
    assert time.monotonic() - start < 0.5
    assert factory.pin(PIN).state is False
    assert [s for _, s in history(factory)] == [False, True, False]
    assert released == ["close"]
    relay.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        relay.pulse(1.0)


def test_exception_inside_the_context_releases(factory: MockFactory) -> None:
    with pytest.raises(ZeroDivisionError), Relay(PIN, pin_factory=factory) as relay:
        relay.pulse(30.0)
        1 / 0  # noqa: B018
    assert factory.pin(PIN).state is False


def test_active_low_rests_high_and_pulses_low(factory: MockFactory) -> None:
    with Relay(PIN, active_high=False, pin_factory=factory) as relay:
        assert factory.pin(PIN).state is True  # "off" on an active-low board
        relay.pulse(0.1)
        assert factory.pin(PIN).state is False
        wait_for(lambda: not relay.is_active)
        assert factory.pin(PIN).state is True


@pytest.mark.parametrize("pin", [14, 15])
def test_uart_pins_refused_unless_forced(factory: MockFactory, pin: int) -> None:
    with pytest.raises(RelayError, match=f"gpio.pin: {pin} is a UART pin"):
        Relay(pin, pin_factory=factory)
    assert pin not in factory.pins  # refused before the pin was touched
    with Relay(pin, pin_factory=factory, force_uart_pins=True) as relay:
        relay.pulse(0.05)
        assert factory.pin(pin).state is True


def test_pin_in_use_is_a_user_error(factory: MockFactory) -> None:
    with Relay(PIN, pin_factory=factory), pytest.raises(RelayError, match="cannot drive GPIO17"):
        Relay(PIN, pin_factory=factory)


def test_factory_names(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(make_pin_factory("mock"), MockFactory)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")  # "auto": gpiozero's choice then
    assert make_pin_factory("auto") is None
    with pytest.raises(RelayError, match="gpio.factory: 'gpio' is not one of"):
        make_pin_factory("gpio")


# What RPi.GPIO's import raises anywhere but on a Raspberry Pi (RPi.GPIO 0.7.1, pip-installed
# on x86: `import RPi.GPIO`).
OFF_A_PI = "This module can only be run on a Raspberry Pi!"


def rpi_gpio_off_a_pi(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RPi.GPIO as it imports off a Raspberry Pi, first on this process's path and on the
    PYTHONPATH of the processes it starts. The real library is not installed here, and where
    it is (any machine the tests run on) this is exactly what its import does."""
    package = folder / "RPi"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "GPIO.py").write_text(f"raise RuntimeError({OFF_A_PI!r})\n")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), str(paths.REPO_ROOT)]))
    for name in ("RPi", "RPi.GPIO", "gpiozero.pins.rpigpio"):
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_a_pin_library_that_refuses_as_it_loads_is_a_refusal_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect (review): RPi.GPIO raises RuntimeError from its import off a Pi, which
    make_pin_factory let through: `relay_off` (ExecStartPre=, ExecStopPost=) and the relay
    process ended on a traceback, and `edge-app run` said only that the relay process exited
    with status 1 (or, when it was not reaped yet, that it gave "no answer in 20 s")."""
    rpi_gpio_off_a_pi(tmp_path, monkeypatch)
    with pytest.raises(RelayError) as refused:
        make_pin_factory("rpigpio")
    assert f"cannot start the 'rpigpio' pin factory ({OFF_A_PI})" in str(refused.value)
    config = tmp_path / "door.toml"
    config.write_text("[gpio]\npin = 27\n")
    command = [sys.executable, "-m", "edge_app.relay_off", "--gpio", "rpigpio"]
    command += ["--config", str(config), "--record", str(tmp_path / "none.json")]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and OFF_A_PI in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize(("factory", "library"), [("pigpio", "pigpio"), ("rpigpio", "RPi")])
def test_a_factory_other_than_lgpio_that_cannot_start_is_told_to_use_auto(
    monkeypatch: pytest.MonkeyPatch, factory: str, library: str
) -> None:
    """Defect (review): the only advice was to install python3-lgpio, after which the door
    still refused to start: its gpio.factory names another library."""
    monkeypatch.setitem(sys.modules, library, None)  # not installed: its import fails
    monkeypatch.delitem(sys.modules, f"gpiozero.pins.{factory}", raising=False)
    with pytest.raises(RelayError, match=r'install python3-lgpio .*and set gpio.factory = "auto"'):
        make_pin_factory(factory)


def test_a_raising_release_callback_never_stops_the_relocking(factory: MockFactory) -> None:
    """The relock event's writer failing (disk full) must not kill the timer thread."""
    calls: list[str] = []

    def explode(reason: str) -> None:
        calls.append(reason)
        raise OSError(28, "No space left on device")

    with Relay(PIN, pin_factory=factory, on_release=explode) as relay:
        for _ in range(3):  # each pulse still ends on time after the previous callback raised
            relay.pulse(0.2)
            wait_for(lambda: not relay.is_active, timeout=1.0)
    assert_pulses(factory, [0.2, 0.2, 0.2])
    assert calls == ["timeout", "timeout", "timeout"]


@pytest.mark.parametrize(
    ("error", "logging_fails"),
    [(OSError(5, "Input/output error"), False), (MemoryError("the pin driver"), True)],
    ids=["driver error", "and its report fails"],
)
def test_the_timer_survives_a_failing_pin_driver_and_retries(
    factory: MockFactory, monkeypatch: pytest.MonkeyPatch, error: Exception, logging_fails: bool
) -> None:
    """The pin driver failing once: the timer logs it and drives the pin low 50 ms later.
    Defect (second case): the log call itself raising (a MemoryError formatting the
    traceback) escaped the handler and ended the thread; every later pulse stayed open."""
    if logging_fails:

        def log_fails(*args: object, **kwargs: object) -> None:
            raise MemoryError("cannot format traceback")

        monkeypatch.setattr(relay_module.log, "exception", log_fails)
    with Relay(PIN, pin_factory=factory) as relay:
        device = relay._device
        real_off = device.off
        failures: list[int] = []

        def off_failing_once() -> None:
            if not failures:
                failures.append(1)
                raise error
            real_off()

        device.off = off_failing_once
        relay.pulse(0.2)
        wait_for(lambda: not relay.is_active, timeout=1.0)
        device.off = real_off
        assert failures == [1]
        relay.check()  # the timer thread is still alive: the next pulse ends on time too
        relay.pulse(0.2)
        wait_for(lambda: not relay.is_active, timeout=1.0)
    states = factory.pin(PIN).states
    assert [s.state for s in states] == [False, True, False, True, False]
    # The first relock came one retry (50 ms) late; both well inside pulse + 0.5 s.
    assert 0.2 <= states[2].timestamp <= 0.7 and 0.2 <= states[4].timestamp <= 0.7


def test_with_its_timer_gone_the_relay_opens_nothing_and_says_so(factory: MockFactory) -> None:
    """Should the timer thread end all the same, a pulse nothing would end is refused and
    check() (which the door calls on every frame) raises, so the door locks and exits."""
    relay = Relay(PIN, pin_factory=factory)
    try:
        with relay._cond:  # what any error that killed the thread would leave behind
            relay._closed = True
            relay._cond.notify_all()
        relay._timer.join(timeout=1.0)
        relay._closed = False
        with pytest.raises(RelayError, match="thread that ends each pulse of GPIO17 has stopped"):
            relay.check()
        with pytest.raises(RelayError, match="refusing to open"):
            relay.pulse(0.2)
        assert [s.state for s in factory.pin(PIN).states] == [False]  # never opened
    finally:
        relay.close()
    relay.check()  # a closed relay has no timer to miss


def test_a_release_callback_that_blocks_never_delays_the_next_relock(
    factory: MockFactory,
) -> None:
    """Defect: the relock event was written on the timer thread; an event sink blocked on a
    full pipe (events.jsonl = "-" with a stalled journal) kept the timer from ending the next
    pulse until it returned. Callbacks run on their own thread now."""
    import threading

    unblock = threading.Event()
    calls: list[str] = []

    def blocked(reason: str) -> None:
        calls.append(reason)
        unblock.wait(10)

    relay = Relay(PIN, pin_factory=factory, on_release=blocked)
    try:
        relay.pulse(0.1)
        wait_for(lambda: calls == ["timeout"], timeout=1.0)  # the callback is now stuck
        relay.pulse(0.2)
        wait_for(lambda: not relay.is_active, timeout=1.0)
    finally:
        unblock.set()
        relay.close()
    assert_pulses(factory, [0.1, 0.2])
    assert calls == ["timeout", "timeout"]  # the second, once the first returned


def test_from_config_reads_the_gpio_section(factory: MockFactory) -> None:
    from edge_app.config import GpioConfig

    with Relay.from_config(GpioConfig(pin=22, active_high=False), pin_factory=factory) as relay:
        assert relay.pin == 22 and factory.pin(22).state is True  # active-low rests high
    with pytest.raises(RelayError, match="gpio.pin: 14 is a UART pin"):
        Relay.from_config(GpioConfig(pin=14), pin_factory=factory)


class FakeAtexit:
    """Stands in for the atexit module inside edge_app.relay: what is registered, and when."""

    def __init__(self) -> None:
        self.hooks: list = []

    def register(self, hook) -> None:
        self.hooks.append(hook)

    def unregister(self, hook) -> None:
        self.hooks = [h for h in self.hooks if h != hook]


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> FakeAtexit:
    fake = FakeAtexit()
    monkeypatch.setattr(relay_module, "atexit", fake)
    return fake


def failing_off(relay: Relay, failures: int | None) -> list[int]:
    """Make the relay's off() raise its first `failures` times (None: every time)."""
    device = relay._device
    real_off = device.off
    calls: list[int] = []

    def off() -> None:
        calls.append(1)
        if failures is None or len(calls) <= failures:
            raise OSError(5, "Input/output error")
        real_off()

    device.off = off
    return calls


def test_close_retries_an_off_that_fails_once(
    factory: MockFactory, hooks: FakeAtexit, caplog: pytest.LogCaptureFixture
) -> None:
    released: list[str] = []
    relay = Relay(PIN, pin_factory=factory, on_release=released.append)
    relay.pulse(30.0)
    calls = failing_off(relay, 1)
    relay.close()
    assert factory.pin(PIN).state is False and len(calls) == 2
    assert [s.state for s in factory.pin(PIN).states] == [False, True, False]
    assert hooks.hooks == []  # confirmed low and released: nothing left for atexit
    assert released == ["close"]
    assert not relay._timer.is_alive()
    failed = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(failed) == 1 and "attempt 1 of 3" in failed[0].getMessage()


def test_a_pin_that_cannot_be_freed_once_locked_is_logged_not_raised(
    factory: MockFactory, hooks: FakeAtexit, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an audit: an OSError from freeing the pin (lgpio's, once the pin was low)
    left close() as a traceback, which every caller took for an unknown failure. The pin is
    locked; that it could not be freed is one error line."""
    released: list[str] = []
    relay = Relay(PIN, pin_factory=factory, on_release=released.append)
    relay.pulse(30.0)
    device = relay._device
    real_close = device.close
    failures = [OSError("lgpio: GPIO not allocated")]  # once: gpiozero closes again on del

    def close() -> None:
        real_close()
        if failures:
            raise failures.pop()

    device.close = close
    relay.close()
    assert [s.state for s in factory.pin(PIN).states] == [False, True, False]
    assert hooks.hooks == [] and released == ["close"] and not relay._timer.is_alive()
    failed = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert failed == ["relay could not free pin=GPIO17 (it is locked): lgpio: GPIO not allocated"]


def test_a_close_that_cannot_relock_leaves_the_relay_to_the_next_close_and_atexit(
    factory: MockFactory, hooks: FakeAtexit
) -> None:
    """off() fails on every attempt of the first close(): it raises, and the relay is not
    given up: the timer thread relocks the open pulse at once, atexit still holds it."""
    released: list[str] = []
    relay = Relay(PIN, pin_factory=factory, on_release=released.append)
    relay.pulse(30.0)
    calls = failing_off(relay, relay_module.CLOSE_ATTEMPTS)
    with pytest.raises(RelayError, match="GPIO17 could not be driven to locked in 3 attempts"):
        relay.close()
    assert len(calls) == relay_module.CLOSE_ATTEMPTS
    assert hooks.hooks == [relay.close]
    with pytest.raises(RuntimeError, match="closed"):
        relay.pulse(1.0)  # closing: never opens again
    wait_for(lambda: factory.pin(PIN).state is False, timeout=1.0)  # the timer's retry
    assert released == ["close"]
    assert factory.pin(PIN).function == "output"  # not released yet
    for hook in list(hooks.hooks):  # what the interpreter does at exit
        hook()
    assert hooks.hooks == [] and factory.pin(PIN).function == "input"
    assert not relay._timer.is_alive()


def test_a_pin_that_never_goes_low_is_reported_and_kept_for_atexit(
    factory: MockFactory, hooks: FakeAtexit, caplog: pytest.LogCaptureFixture
) -> None:
    relay = Relay(PIN, pin_factory=factory)
    relay.pulse(30.0)
    real_off = relay._device.off
    failing_off(relay, None)
    with pytest.raises(RelayError, match="could not be driven to locked.*door may be unlocked"):
        relay.close()
    attempts = [r.getMessage() for r in caplog.records if "attempt" in r.getMessage()]
    assert [m.split("(")[1].split(")")[0] for m in attempts] == [
        "attempt 1 of 3",
        "attempt 2 of 3",
        "attempt 3 of 3",
    ]
    assert hooks.hooks == [relay.close]
    assert relay._timer.is_alive()  # still retrying the open pulse
    with pytest.raises(RelayError):
        relay.close()  # a second close tries again, and says so again
    assert factory.pin(PIN).state is True and hooks.hooks == [relay.close]
    relay._device.off = real_off  # the driver recovers: the atexit hook finishes the job
    hooks.hooks[0]()
    assert factory.pin(PIN).state is False and hooks.hooks == []


def test_an_off_that_leaves_the_pin_high_is_not_taken_for_locked(
    factory: MockFactory, hooks: FakeAtexit
) -> None:
    """A driver whose off() returns without changing the pin: the read-back catches it."""
    relay = Relay(PIN, pin_factory=factory)
    relay.pulse(30.0)
    real_off = relay._device.off
    relay._device.off = lambda: None
    with pytest.raises(RelayError, match="still reads active after off"):
        relay.close()
    assert hooks.hooks == [relay.close]
    relay._device.off = real_off
    relay.close()
    assert factory.pin(PIN).state is False and hooks.hooks == []


# --- python -m edge_app.relay_off: the systemd ExecStartPre=/ExecStopPost= safety net --------


@pytest.fixture
def left_high(factory: MockFactory, monkeypatch: pytest.MonkeyPatch) -> MockFactory:
    """GPIO17 high and unclaimed, as after a SIGKILL mid-pulse; relay_off's "mock" factory is
    this one, so the test reads what it did to the pin."""
    pin = factory.pin(PIN)
    pin.function = "output"
    pin.state = True
    monkeypatch.setattr(relay_module, "make_pin_factory", lambda name: factory)
    return factory


def run_relay_off(tmp_path, text: str, *args: str) -> int:
    from edge_app import relay_off

    path = tmp_path / "door.toml"
    path.write_text(text)
    return relay_off.main(["--config", str(path), *args])


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def test_relay_off_reads_only_the_gpio_section(
    left_high: MockFactory, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """A mistake elsewhere in the file (the daemon refuses it) must not keep the pin high."""
    text = (
        '[gpio]\npin = 17\nfactory = "mock"\npulse_seconds = -1\n\n'
        '[web]\nlisten = "localhost"\n\n[camera]\nwidht = 3\n\n[nonsense]\nx = 1\n'
    )
    assert run_relay_off(tmp_path, text) == 0
    assert left_high.pin(PIN).state is False and left_high.pin(PIN).function == "input"
    assert errors(caplog) == []


def test_relay_off_without_a_pin_says_it_drives_the_default(
    left_high: MockFactory, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    assert run_relay_off(tmp_path, '[web]\nlisten = "localhost"\n', "--gpio", "mock") == 0
    assert left_high.pin(PIN).state is False
    assert any("no gpio.pin: driving the default GPIO17" in m for m in caplog.messages)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[gpio]\npin = 14\n", "gpio.pin: 14 is a UART pin"),
        (
            '[gpio]\npin = "17"\nactve_high = false\n',
            "2 problem(s): gpio.pin: expected an integer, got str '17'; "
            "gpio.actve_high: unknown key (did you mean 'active_high'?)",
        ),
        ('[gpio]\nfactory = "gpio"\n', "gpio.factory: str 'gpio' is not one of"),
        ("gpio = 17\n", "gpio: expected a table [gpio], got int 17"),
        ("[gpio\npin = 17\n", "not valid TOML"),
    ],
)
def test_relay_off_refuses_a_gpio_section_it_cannot_trust_in_one_line(
    left_high: MockFactory, tmp_path, caplog: pytest.LogCaptureFixture, text: str, expected: str
) -> None:
    assert run_relay_off(tmp_path, text) == 2
    (message,) = errors(caplog)
    assert expected in message and "\n" not in message
    assert left_high.pin(PIN).state is True  # left alone: neither claimed nor driven


def test_relay_off_with_a_missing_config_file(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    from edge_app import relay_off

    assert relay_off.main(["--config", str(tmp_path / "nope.toml"), "--gpio", "mock"]) == 2
    assert errors(caplog) == [f"{tmp_path / 'nope.toml'}: config file not found"]


def test_relay_off_command_prints_one_line_for_a_broken_file(tmp_path) -> None:
    import os
    import subprocess
    import sys

    from edge_app import paths

    env = {**os.environ, "PYTHONPATH": str(paths.REPO_ROOT)}
    command = [sys.executable, "-m", "edge_app.relay_off", "--gpio", "mock", "--config"]
    for text, expected in [
        ('[gpio]\npin = 27\n[web]\nlisten = "localhost"\n', (0, "relay locked pin=GPIO27")),
        ("[gpio]\npin = 27\nactive_high = maybe\n", (2, "not valid TOML")),
    ]:
        path = tmp_path / "door.toml"
        path.write_text(text)
        done = subprocess.run([*command, str(path)], capture_output=True, text=True, env=env)
        assert done.returncode == expected[0], done.stderr
        assert expected[1] in done.stderr and "Traceback" not in done.stderr
        if expected[0] == 2:
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize(
    ("pin", "active_high", "warned"), [(4, True, True), (4, False, False), (17, True, False)]
)
def test_a_pin_pulled_up_at_boot_is_warned_of_for_an_active_high_relay(
    pin: int, active_high: bool, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """GPIO0-8 are pulled up while the Pi boots, before the door drives them: an active-high
    driver reads that as open. The door still starts (an external pull-down can win), but
    the journal says so; an active-low module rests high anyway."""
    messages = warnings_at_claim(pin, active_high, caplog)
    assert any(f"GPIO{pin} is pulled up while the Pi boots" in m for m in messages) is warned


@pytest.mark.parametrize("active_high", [True, False])
@pytest.mark.parametrize("pin", [0, 1])
def test_a_hat_id_pin_is_warned_of_for_either_polarity(
    pin: int, active_high: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an audit: GPIO0/1 with an active-low module passed without a word, though the
    firmware drives them at boot as the I2C lines of a HAT's ID EEPROM."""
    messages = warnings_at_claim(pin, active_high, caplog)
    assert any(f"GPIO{pin} is an I2C line of a HAT's ID EEPROM" in m for m in messages), messages


def warnings_at_claim(pin: int, active_high: bool, caplog: pytest.LogCaptureFixture) -> list[str]:
    """The relay's warnings when it claims `pin`, which it leaves locked."""
    factory = MockFactory()
    with (
        caplog.at_level("WARNING", logger="edge_app.relay"),
        Relay(pin, active_high=active_high, pin_factory=factory),
    ):
        assert factory.pin(pin).state is (not active_high)  # locked
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_relay_off_imports_no_numpy() -> None:
    """relay_off is what locks the door after the daemon is killed (ExecStopPost=), so the
    strike stays energised for as long as it takes to start. Reading a config imported numpy
    (through the settings' choices in edge_app.matching and edge_app.fusion): about half of
    its start. It imports only the config, the relay and gpiozero now."""
    import subprocess
    import sys

    code = "import sys, edge_app.relay_off; print(sorted(m for m in sys.modules if 'numpy' in m))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
