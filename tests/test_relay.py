"""The relay on gpiozero's MockFactory: the assertions read the mock pin's real state history."""

from __future__ import annotations

import time

import pytest
from gpiozero.pins.mock import MockFactory

from edge_app.relay import Relay, RelayError, make_pin_factory

PIN = 17


@pytest.fixture
def factory() -> MockFactory:
    return MockFactory()


def history(factory: MockFactory) -> list[tuple[float, bool]]:
    """(seconds since the previous change, state) for each change of the relay pin."""
    return [(state.timestamp, state.state) for state in factory.pin(PIN).states]


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


def test_factory_names() -> None:
    assert isinstance(make_pin_factory("mock"), MockFactory)
    assert make_pin_factory("auto") is None
    with pytest.raises(RelayError, match="gpio.factory: 'gpio' is not one of"):
        make_pin_factory("gpio")


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
    assert len(factory.pin(PIN).states) == 7  # assert_states_and_times zips: check length
    factory.pin(PIN).assert_states_and_times(
        [
            (0.0, False),
            (0.0, True),
            (0.2, False),
            (0.0, True),
            (0.2, False),
            (0.0, True),
            (0.2, False),
        ]
    )
    assert calls == ["timeout", "timeout", "timeout"]


def test_the_timer_survives_a_failing_pin_driver_and_retries(factory: MockFactory) -> None:
    with Relay(PIN, pin_factory=factory) as relay:
        device = relay._device
        real_off = device.off
        failures: list[int] = []

        def off_failing_once() -> None:
            if not failures:
                failures.append(1)
                raise OSError(5, "Input/output error")
            real_off()

        device.off = off_failing_once
        relay.pulse(0.2)
        wait_for(lambda: not relay.is_active, timeout=1.0)
        device.off = real_off
        assert failures == [1]
        relay.pulse(0.2)  # the timer thread is still alive: this pulse ends on time too
        wait_for(lambda: not relay.is_active, timeout=1.0)
    states = factory.pin(PIN).states
    assert [s.state for s in states] == [False, True, False, True, False]
    # The first relock came one retry (50 ms) late; both well inside pulse + 0.5 s.
    assert 0.2 <= states[2].timestamp <= 0.7 and 0.2 <= states[4].timestamp <= 0.7


def test_from_config_reads_the_gpio_section(factory: MockFactory) -> None:
    from edge_app.config import GpioConfig

    with Relay.from_config(GpioConfig(pin=22, active_high=False), pin_factory=factory) as relay:
        assert relay.pin == 22 and factory.pin(22).state is True  # active-low rests high
    with pytest.raises(RelayError, match="gpio.pin: 14 is a UART pin"):
        Relay.from_config(GpioConfig(pin=14), pin_factory=factory)
