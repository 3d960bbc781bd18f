"""The relay's pin through gpiozero's real lgpio pin code (edge_app/lgpio_pins.py).

There is no /dev/gpiochip here and python3-lgpio is not installed, so the C library is the
one part stood in for: `Chip` below is lgpio's Python API (lgpio 0.2.2.0's names, arguments
and constants) over a model of one gpiochip line as lgpio and the kernel keep it. Everything
above it is the real code: gpiozero's LGPIOFactory and LGPIOPin, RelayLGPIOPin, Relay,
relay_off. The model keeps what a line does: claimed as an input it floats (bias disabled);
lgpio's claim of a line the handle already holds as an output changes nothing (lgGpio.c
xSetAsOutput); a claim as the other direction frees it first; a freed output keeps its level
with Raspberry Pi OS's `persist_gpio_outputs` and becomes a floating input without it.

Each level the line takes is recorded (None: floating), so a test can say what the strike's
input saw from the first claim to the process's exit.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
import types
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import gpiozero.pins.local
import pytest

from edge_app import relay as relay_module
from edge_app.config import GpioConfig
from edge_app.relay import Relay, RelayError, make_pin_factory

PI5_REVISION = 0xD04170  # a Raspberry Pi 5 Model B: LGPIOFactory opens gpiochip4
PIN = 17
# Imported over the stand-in, and forgotten after each test.
LGPIO_MODULES = ("gpiozero.pins.lgpio", "edge_app.lgpio_pins")


class LgpioError(Exception):
    """lgpio.error: lgpio's own exception, an Exception and nothing more."""


@dataclass
class Line:
    mode: str = "free"  # "free", "input" or "output" (as this process holds it)
    level: int | None = None  # what the pin is driven to; None: floating
    seen: list[int | None] = field(default_factory=list)  # every level it took, in order

    def drive(self, level: int | None) -> None:
        self.level = level
        self.seen.append(level)


class Chip:
    """lgpio's module API over one chip of lines (see the module's docstring)."""

    SET_ACTIVE_LOW, SET_OPEN_DRAIN, SET_OPEN_SOURCE = 4, 8, 16
    SET_PULL_UP, SET_PULL_DOWN, SET_PULL_NONE = 32, 64, 128
    RISING_EDGE, FALLING_EDGE, BOTH_EDGES = 1, 2, 3
    error = LgpioError

    def __init__(self, persist_outputs: bool = True) -> None:
        self.persist_outputs = persist_outputs
        self.lines: dict[int, Line] = {}
        self.open_handles: set[int] = set()
        self.refuse: dict[str, str] = {}  # call name -> lgpio's message, to fail it
        self.chips_opened: list[int] = []

    def line(self, gpio: int) -> Line:
        return self.lines.setdefault(gpio, Line())

    def _call(self, name: str) -> None:
        if name in self.refuse:
            raise LgpioError(self.refuse[name])

    def gpiochip_open(self, chip: int) -> int:
        self._call("gpiochip_open")
        self.chips_opened.append(chip)
        self.open_handles.add(7)
        return 7

    def gpiochip_close(self, handle: int) -> None:
        self.open_handles.discard(handle)
        for gpio, line in self.lines.items():
            if line.mode != "free":
                self.gpio_free(handle, gpio)

    def gpio_claim_input(self, handle: int, gpio: int, lFlags: int = 0) -> None:
        self._call("gpio_claim_input")
        line = self.line(gpio)
        if line.mode != "input":
            line.mode = "input"
            line.drive(None)  # bias disabled: nothing holds it

    def gpio_claim_output(self, handle: int, gpio: int, level: int = 0, lFlags: int = 0) -> None:
        self._call("gpio_claim_output")
        line = self.line(gpio)
        if line.mode != "output":  # an output already held keeps its level
            line.mode = "output"
            line.drive(1 if level else 0)

    def gpio_write(self, handle: int, gpio: int, level: int) -> None:
        self._call("gpio_write")
        line = self.line(gpio)
        if line.mode != "output":
            raise LgpioError("GPIO not set as an output")
        line.drive(1 if level else 0)

    def gpio_read(self, handle: int, gpio: int) -> int:
        return self.line(gpio).level or 0

    def gpio_get_mode(self, handle: int, gpio: int) -> int:
        return 2 if self.line(gpio).mode == "output" else 0  # LGPIOPin.GPIO_IS_OUT

    def gpio_free(self, handle: int, gpio: int) -> None:
        line = self.line(gpio)
        if line.mode == "free":
            raise LgpioError("GPIO not allocated")
        was_output, line.mode = line.mode == "output", "free"
        if not (was_output and self.persist_outputs):
            line.drive(None)

    def module(self) -> types.ModuleType:
        module = types.ModuleType("lgpio")
        module.__spec__ = importlib.machinery.ModuleSpec("lgpio", None)  # found, as installed
        for name in dir(self):
            if not name.startswith("_") and name not in ("module", "line", "lines"):
                setattr(module, name, getattr(self, name))
        return module


@pytest.fixture
def chip(monkeypatch: pytest.MonkeyPatch) -> Iterator[Chip]:
    """A Pi 5's gpiochip behind lgpio's API, with gpiozero's lgpio pins and the relay's
    imported over it (and forgotten afterwards)."""
    chip = Chip()
    monkeypatch.setitem(sys.modules, "lgpio", chip.module())
    monkeypatch.setattr(gpiozero.pins.local, "get_pi_revision", lambda: PI5_REVISION)
    # gpiozero's local factories share their pins and reservations process-wide: each test
    # starts with none (a pin object made over an earlier test's chip would drive that one).
    monkeypatch.setattr(gpiozero.pins.local.LocalPiFactory, "pins", {})
    monkeypatch.setattr(gpiozero.pins.local.LocalPiFactory, "_reservations", defaultdict(list))
    real_exists = os.path.exists
    monkeypatch.setattr(
        os.path, "exists", lambda path: path == "/dev/gpiochip4" or real_exists(path)
    )
    for name in LGPIO_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
        importlib.import_module(name)
    yield chip
    for name in LGPIO_MODULES:
        sys.modules.pop(name, None)


def upstream_factory() -> object:
    return importlib.import_module("gpiozero.pins.lgpio").LGPIOFactory()


@pytest.mark.parametrize("active_high", [True, False])
def test_the_relay_claims_its_pin_locked_and_frees_it_still_locked(
    chip: Chip, active_high: bool
) -> None:
    locked, opened = (0, 1) if active_high else (1, 0)
    factory = make_pin_factory("lgpio")
    relay = Relay(PIN, active_high=active_high, pin_factory=factory)
    assert chip.chips_opened == [4]  # a Pi 5's header is gpiochip4
    assert chip.line(PIN).seen[0] == locked  # never a float, never "open" first
    assert relay.pulse(0.05)
    relay.close()
    factory.close()  # type: ignore[attr-defined]  # what gpiozero does at exit
    line = chip.line(PIN)
    # Claimed locked, written locked, opened, relocked, and freed as it was: still locked.
    assert set(line.seen) == {locked, opened}
    assert opened in line.seen and line.seen[-1] == locked
    assert line.seen[: line.seen.index(opened)] == [locked] * line.seen.index(opened)
    assert (line.mode, line.level) == ("free", locked)
    assert chip.open_handles == set()


@pytest.mark.parametrize("active_high", [True, False])
def test_gpiozeros_own_lgpio_pin_floats_and_blips_where_the_relays_does_not(
    chip: Chip, active_high: bool
) -> None:
    """Defect (audit s41, findings 3 and 4): through gpiozero's LGPIOPin, a claim floated the
    line, then drove it low (the "open" level of an active-low module) before writing the
    level asked for, and every close left it floating. The same sequences as above."""
    locked = 0 if active_high else 1
    relay = Relay(PIN, active_high=active_high, pin_factory=upstream_factory())
    relay.close()
    seen = chip.line(PIN).seen
    assert seen[:3] == [None, 0, locked]  # float, 0, then the level asked for
    assert seen[-1] is None  # closed: an input, bias disabled


def test_relay_off_leaves_the_pin_driven_locked_for_the_next_claim(chip: Chip) -> None:
    """relay_off (ExecStartPre, ExecStopPost) and then the daemon's relay: across processes
    the line goes from driven locked to driven locked, with no float in between."""
    gpio = GpioConfig(pin=PIN, active_high=False, factory="lgpio")
    from edge_app import relay_off

    relay_off.drive_locked(gpio)
    chip.gpiochip_close(7)  # relay_off's process exits
    relay = Relay.from_config(gpio)
    relay.close()
    assert chip.line(PIN).seen == [1] * len(chip.line(PIN).seen)


def test_without_persisting_outputs_a_freed_pin_is_left_to_the_pull_resistor(chip: Chip) -> None:
    """On a kernel that turns freed lines into inputs (upstream Linux, or `strict_gpiod`),
    the line floats once the relay is closed: the wiring's resistor holds it (WIRING.md)."""
    chip.persist_outputs = False
    relay = Relay(PIN, active_high=True, pin_factory=make_pin_factory("lgpio"))
    relay.close()
    seen = chip.line(PIN).seen
    assert seen[-1] is None and set(seen[:-1]) == {0}  # locked until freed, then the resistor's


def test_closing_twice_and_the_factory_after_the_pin_frees_the_line_once(chip: Chip) -> None:
    factory = make_pin_factory("lgpio")
    relay = Relay(PIN, active_high=True, pin_factory=factory)
    relay.close()
    relay.close()
    factory.close()  # type: ignore[attr-defined]  # closes its pins again: nothing to free
    assert chip.line(PIN).mode == "free"


@pytest.mark.parametrize(
    ("call", "message"),
    [("gpiochip_open", "can not open gpiochip"), ("gpio_claim_output", "GPIO busy")],
)
def test_lgpios_own_errors_are_refusals_with_the_remedy_not_tracebacks(
    chip: Chip, call: str, message: str
) -> None:
    """Defect (audit s41, finding 7): lgpio.error is neither an OSError nor a gpiozero
    error, so it escaped the relay's refusals as a traceback."""
    chip.refuse[call] = message
    gpio = GpioConfig(pin=PIN, active_high=True, factory="lgpio")
    with pytest.raises(RelayError, match=message) as refused:
        Relay.from_config(gpio)
    assert "python3-lgpio" in str(refused.value) or "gpio group" in str(refused.value)


def test_auto_is_the_relays_lgpio_factory_unless_the_environment_names_another(
    chip: Chip, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the shipped unit only lgpio reaches the pins (docs/INSTALL.md): "auto" is lgpio,
    and a chip it cannot open is the door's refusal, naming the cause, not gpiozero trying
    pin libraries the unit forbids and failing with "Unable to load any default pin
    factory" (audit s41, operator finding M2)."""
    from edge_app.lgpio_pins import RelayLGPIOFactory

    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    assert isinstance(relay_module.make_pin_factory("auto"), RelayLGPIOFactory)
    assert relay_module.missing_factory_library("auto") is None  # lgpio is importable here
    chip.refuse["gpiochip_open"] = "can not open gpiochip"
    with pytest.raises(RelayError, match=r"the 'auto' \(lgpio\) pin factory .*can not open"):
        relay_module.make_pin_factory("auto")
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "rpigpio")  # the owner's choice stands
    assert relay_module.make_pin_factory("auto") is None


def test_auto_without_lgpio_is_a_missing_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setitem(sys.modules, "lgpio", None)  # not installed: its import fails
    monkeypatch.delitem(sys.modules, "edge_app.lgpio_pins", raising=False)
    monkeypatch.delitem(sys.modules, "gpiozero.pins.lgpio", raising=False)
    with pytest.raises(RelayError, match=r"'auto' \(lgpio\) .*install python3-lgpio"):
        relay_module.make_pin_factory("auto")
