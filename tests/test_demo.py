"""`edge-app demo`'s relay summary, from the states gpiozero's MockPin really records."""

from __future__ import annotations

import ast
import time

from gpiozero import DigitalOutputDevice
from gpiozero.pins.mock import MockFactory

from edge_app.commands.demo import relay_history


def test_the_history_gives_times_from_start_and_each_opening() -> None:
    factory = MockFactory()
    with DigitalOutputDevice(17, pin_factory=factory) as strike:
        time.sleep(0.05)
        strike.on()
        time.sleep(0.1)
        strike.off()
        time.sleep(0.05)
        strike.on()
        time.sleep(0.1)
        strike.off()
    states = factory.pin(17).states
    # gpiozero keeps seconds since the previous change; the summary adds them up
    text = relay_history(states, 17)
    first, second = text.splitlines()
    changes = ast.literal_eval(first.split(": ", 1)[1])
    levels = [level for _, level in changes]
    times = [at for at, _ in changes]
    assert levels == ["low", "high", "low", "high", "low"]
    assert times == sorted(times) and times[-1] >= 0.3
    assert second.startswith("strike held open 2 time(s): ")
    spans = [float(s.split()[0]) for s in second.split(": ")[1].split(", ")]
    assert all(0.09 <= span < 1.0 for span in spans)


def test_an_active_low_strike_is_open_while_low_and_a_last_opening_is_reported() -> None:
    states = [(0.0, True), (1.0, False), (3.0, True), (2.0, False)]

    text = relay_history(states, 27, active_high=False)

    assert "[(0.0, 'high'), (1.0, 'low'), (4.0, 'high'), (6.0, 'low')]" in text
    assert text.endswith("strike held open 2 time(s): 3.00 s, still open\n")
