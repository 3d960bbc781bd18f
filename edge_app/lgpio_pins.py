"""gpiozero's lgpio pins, claimed and released the way a door relay needs.

gpiozero's LGPIOPin (gpiozero/pins/lgpio.py, 2.0) does three things a relay must not:

- it claims every pin as an input with its bias disabled the moment the pin object is made,
  before the device says what the pin is for: a pin a dead door left driven "locked" floats;
- it claims an output at level 0 and only then writes the level asked for (it keeps the base
  Pin.output_with_state, whose docstring warns of exactly this "blip" in active-low wiring):
  with `gpio.active_high = false`, "locked" is high, so every claim (the daemon's relay
  process, `relay_off` before and after the daemon) drove the strike's input to "open" for a
  few microseconds, long enough for a solid-state relay or a MOSFET board;
- its close() claims the pin as an input again, bias disabled: after every `relay_off` and
  every clean stop the pin floated, whatever the docs and the kernel's
  `persist_gpio_outputs` promise.

RelayLGPIOPin claims its line once, as an output already at the level asked for (lgpio's
gpio_claim_output takes the level, and the kernel applies both in one request), and close()
frees the line as it is, still driven at its last level: "locked", since Relay drives it
there before closing. What the line does once freed is the kernel's: on Raspberry Pi OS
(`persist_gpio_outputs`) it stays driven locked; on a kernel that turns freed lines into
inputs the wiring's pull resistor locks the door (docs/WIRING.md).

lgpio's own exception (lgpio.error: "can not open gpiochip", "GPIO busy") is neither an
OSError nor a gpiozero error; it is raised here as OSError with lgpio's words, so the relay's
"cannot drive GPIOn ... gpio group" refusal reports it instead of a traceback.

This module imports lgpio (python3-lgpio on a Pi): edge_app.relay loads it only for the
`lgpio` and `auto` pin factories, and only where lgpio is installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lgpio
from gpiozero.pins.lgpio import LGPIOFactory, LGPIOPin
from gpiozero.pins.local import LocalPiPin


@contextmanager
def _as_oserror() -> Iterator[None]:
    try:
        yield
    except lgpio.error as error:
        raise OSError(f"lgpio: {error}") from None


class RelayLGPIOPin(LGPIOPin):
    """An lgpio pin that is never claimed as an input, claimed as an output at its first
    level, and freed still driven (see the module's docstring)."""

    def __init__(self, factory: Any, info: Any) -> None:
        # LGPIOPin.__init__ would claim the line as a floating input: skip to its base, and
        # set what LGPIOPin's own methods read.
        LocalPiPin.__init__(self, factory, info)
        self._pwm = None
        self._bounce = None
        self._callback = None
        self._edges = lgpio.BOTH_EDGES
        self._claimed = False

    def output_with_state(self, state: bool) -> None:
        handle, level = self.factory._handle, int(bool(state))
        with _as_oserror():
            # Claiming a line this handle already holds as an output keeps its level (lgpio's
            # xSetAsOutput does nothing then), so the level is written as well.
            lgpio.gpio_claim_output(handle, self._number, level)
            self._claimed = True
            lgpio.gpio_write(handle, self._number, level)

    def _set_function(self, value: str) -> None:
        with _as_oserror():
            super()._set_function(value)
        self._claimed = True

    def _set_state(self, value: float) -> None:
        with _as_oserror():
            super()._set_state(value)

    def _get_state(self) -> bool:
        with _as_oserror():
            return bool(super()._get_state())

    def close(self) -> None:
        """Free the line as it is (driven at its last level); again does nothing."""
        handle = self.factory._handle
        if handle is None or not self._claimed:
            return
        self._claimed = False
        with _as_oserror():
            lgpio.gpio_free(handle, self._number)


class RelayLGPIOFactory(LGPIOFactory):
    """gpiozero's LGPIOFactory (gpiochip4 on a Pi 5, else gpiochip0) with RelayLGPIOPin."""

    def __init__(self, chip: int | None = None) -> None:
        with _as_oserror():
            super().__init__(chip)
        self.pin_class = RelayLGPIOPin
        # LocalPiFactory shares one dict of pin objects among all its factories in a process,
        # each pin bound to the factory (and lgpio handle) that made it: a pin made by a
        # factory closed since would drive through a closed handle. Each keeps its own.
        self.pins: dict[Any, RelayLGPIOPin] = {}
