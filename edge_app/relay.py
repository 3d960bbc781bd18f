"""The door-strike relay: one GPIO output that is high only while the door may open.

Safety rests on three rules. The pin starts low (`initial_value=False`). A pulse has a deadline
that a new match moves forward but never adds to, so a face lingering at the door cannot hold
the strike open for longer than one pulse after it was last recognised. And every way out of
the process (close(), the context manager, atexit, the daemon's finally) drives the pin low
before releasing it; wiring must make the released (floating) pin mean "locked" as well
(docs/WIRING.md).

Driving the pin low counts only once the pin reads back inactive. close() tries CLOSE_ATTEMPTS
times, logging each failure; if the pin is still not low it raises RelayError and the relay
stays unreleased: the atexit hook stays registered, a later close() tries again, and the timer
thread keeps retrying to end an open pulse at once.

Nothing a release callback does can hold the strike open: the pin is driven low before the
callback runs, and callbacks run on a thread of their own (relay-events), so one that blocks
(an event sink on a stalled pipe) never keeps the timer from ending the next pulse. The timer
thread survives any error, its own error reporting's included (it keeps retrying to drive the
pin low); should it end all the same, pulse() refuses and check() raises, so the door process
locks and exits rather than open a door nothing would close.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import importlib.util
import logging
import math
import os
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self

from gpiozero import OutputDevice
from gpiozero.exc import GPIOZeroError

from edge_app.config import (
    GPIO_FACTORIES,
    PULSE_SECONDS_MAX,
    GpioConfig,
    boot_pull_up_warning,
    relay_pin_problem,
)
from edge_app.errors import UserError

log = logging.getLogger(__name__)

_FACTORY_CLASSES = {
    # gpiozero's LGPIOFactory with pins claimed at their level and freed still driven.
    "lgpio": ("edge_app.lgpio_pins", "RelayLGPIOFactory"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
    "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory"),
    "native": ("gpiozero.pins.native", "NativeFactory"),
    "mock": ("gpiozero.pins.mock", "MockFactory"),
}


# After an unexpected error in the timer thread (say the pin driver failing once), how soon it
# tries to drive the pin low again.
TIMER_RETRY_SECONDS = 0.05
# How many times close() tries to drive the pin low before it raises, and the pause between.
CLOSE_ATTEMPTS = 3
CLOSE_RETRY_SECONDS = 0.05
# How long close() waits for release callbacks still due (the relock event of the pulse it
# ended): the pin is already low, so a callback blocked longer only loses its own work.
EVENTS_JOIN_SECONDS = 1.0


class RelayError(UserError):
    """The relay pin cannot be used as configured."""


class PulseUnanswered(RelayError):
    """A pulse the relay may have carried out before it failed (a relay process that did not
    answer in time): the pin has been locked again from the door process. opened: whether
    the pin was locked when it was asked, so that this pulse may have opened the door; its
    relock is then reported like any other, with the reason "close"."""

    def __init__(self, message: str, *, opened: bool) -> None:
        super().__init__(message)
        self.opened = opened


def check_pulse_seconds(seconds: float) -> float:
    """The pulse length, or ValueError unless 0 < seconds <= PULSE_SECONDS_MAX (no nan, no
    inf: a pulse that never ends must not be asked for by any path)."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not math.isfinite(seconds)
        or not 0 < seconds <= PULSE_SECONDS_MAX
    ):
        raise ValueError(
            f"a pulse of {seconds!r} s is refused: it must be more than 0 and at most "
            f"{PULSE_SECONDS_MAX:g} s"
        )
    return float(seconds)


class DoorRelay(Protocol):
    """What the door daemon needs of a relay: Relay here, or edge_app.relay_process's
    RelayProcess, which runs a Relay in a child process."""

    pin: int
    # Why the door process had to lock the pin itself, its relay having failed (a relay
    # process that died or hung); None while it has not. The run then ends non-zero.
    locked_from_here: str | None

    @property
    def is_active(self) -> bool: ...

    def pulse(self, seconds: float) -> bool: ...

    def check(self) -> None: ...

    def close(self) -> None: ...


# The library each hardware pin factory drives the pins through ("native" needs none).
FACTORY_LIBRARIES = {"lgpio": "lgpio", "rpigpio": "RPi.GPIO", "pigpio": "pigpio"}


def factory_name(name: str) -> str:
    """What `name` means here: "auto" is lgpio, the pin library of Raspberry Pi OS and the
    only one the shipped unit lets reach the pins (docs/INSTALL.md), unless the environment
    names gpiozero's own choice (GPIOZERO_PIN_FACTORY, left to gpiozero: "auto" again)."""
    if name == "auto" and not os.environ.get("GPIOZERO_PIN_FACTORY"):
        return "lgpio"
    return name


def missing_factory_library(name: str) -> str | None:
    """The library the pin factory `name` needs when it is not installed, else None."""
    library = FACTORY_LIBRARIES.get(factory_name(name))
    if library is None:
        return None
    try:
        found = importlib.util.find_spec(library) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else library


def make_pin_factory(name: str) -> object | None:
    """A gpiozero pin factory by name; None leaves the choice to gpiozero (only for "auto"
    with GPIOZERO_PIN_FACTORY set). "auto" is otherwise "lgpio": gpiozero's lgpio factory
    with pins a relay can claim and release without a blip or a float
    (edge_app.lgpio_pins)."""
    chosen = factory_name(name)
    if chosen == "auto":
        return None
    if chosen not in _FACTORY_CLASSES:
        raise RelayError(f"gpio.factory: {name!r} is not one of {', '.join(GPIO_FACTORIES)}")
    module, cls = _FACTORY_CLASSES[chosen]
    try:
        return getattr(importlib.import_module(module), cls)()
    # RuntimeError: RPi.GPIO's import off a Raspberry Pi ("This module can only be run on a
    # Raspberry Pi!"), as the pin libraries refuse a pin (Relay)
    except (ImportError, OSError, RuntimeError, GPIOZeroError) as error:
        shown = repr(name) if chosen == name else f"{name!r} ({chosen})"
        # Installing lgpio does not start another library's factory: lgpio is "auto"'s.
        switch = "" if chosen == "lgpio" else ' and set gpio.factory = "auto"'
        raise RelayError(
            f"gpio.factory: cannot start the {shown} pin factory ({error}); on a Raspberry Pi "
            f"install python3-lgpio (or pip install lgpio){switch}; elsewhere use --gpio mock"
        ) from None


class ReleaseEvents:
    """Release callbacks, in order, on a thread of their own (relay-events): whatever a
    callback does (an event sink on a stalled pipe), nothing that relocks the door or answers
    for it waits on one. A relay calls put(reason) each time its pin went back low."""

    def __init__(self, on_release: Callable[[str], None] | None, pin: int) -> None:
        self.pin = pin
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if on_release is not None:
            self._thread = threading.Thread(
                target=self._run, args=(on_release,), name="relay-events", daemon=True
            )
            self._thread.start()

    def put(self, reason: str) -> None:
        if self._thread is not None:
            self._queue.put(reason)

    def close(self) -> None:
        """Wait up to EVENTS_JOIN_SECONDS for the callbacks still due; then the thread ends."""
        if self._thread is None:
            return
        self._queue.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=EVENTS_JOIN_SECONDS)

    def _run(self, on_release: Callable[[str], None]) -> None:
        while (reason := self._queue.get()) is not None:
            try:
                on_release(reason)
            except BaseException:  # the pin is already low; a callback only loses its own work
                _report("relay release callback failed pin=GPIO%d reason=%s", self.pin, reason)


class ClosedOnExit(ABC):
    """`with relay:` closes it (pin low) however the block ends."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class Relay(ClosedOnExit):
    """A pulsed output pin. Thread-safe: pulses come from the frame loop, release from a timer.

    on_release(reason) is called, on the relay-events thread, each time the pin goes back
    low: reason "timeout" when a pulse ends, "close" when the relay is closed during a pulse.
    close() waits up to EVENTS_JOIN_SECONDS for the callbacks still due.
    """

    def __init__(
        self,
        pin: int,
        *,
        active_high: bool = True,
        pin_factory: object | None = None,
        force_uart_pins: bool = False,
        on_release: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        problem = relay_pin_problem(pin, force_uart_pins, active_high)
        if problem is not None:
            raise RelayError(problem)
        try:
            self._device = OutputDevice(
                pin, active_high=active_high, initial_value=False, pin_factory=pin_factory
            )
        except (GPIOZeroError, OSError, RuntimeError) as error:
            raise RelayError(
                f"gpio.pin: cannot drive GPIO{pin} ({type(error).__name__}: {error}); check "
                "that no other program holds it and that this user is in the gpio group"
            ) from None
        self.pin = pin
        self._on_release = on_release
        self._clock = clock
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._closing = False  # close() was called: no more pulses
        self._closed = False  # the pin was driven low and released: nothing left to do
        self.locked_from_here: str | None = None  # (DoorRelay: in this process, never)
        self._events = ReleaseEvents(on_release, pin)
        self._timer = threading.Thread(target=self._run_timer, name="relay-timer", daemon=True)
        self._timer.start()
        atexit.register(self.close)
        log.info("relay ready pin=GPIO%d active_high=%s", pin, active_high)
        boot = boot_pull_up_warning(pin, active_high)
        if boot is not None:
            log.warning("%s", boot)

    @classmethod
    def from_config(
        cls,
        gpio: GpioConfig,
        *,
        pin_factory: object | None = None,
        on_release: Callable[[str], None] | None = None,
    ) -> Relay:
        """The relay as `[gpio]` describes it; pin_factory None means gpio.factory's."""
        if pin_factory is None:
            pin_factory = make_pin_factory(gpio.factory)
        return cls(
            gpio.pin,
            active_high=gpio.active_high,
            pin_factory=pin_factory,
            force_uart_pins=gpio.force_uart_pins,
            on_release=on_release,
        )

    @property
    def pin_factory(self) -> object:
        """The factory in use; with MockFactory its pins keep the state history tests read."""
        return self._device.pin_factory

    @property
    def is_active(self) -> bool:
        return bool(self._device.value)

    def pulse(self, seconds: float) -> bool:
        """Open for `seconds` from now; True if this opened it, False if it only extended it.

        The deadline becomes max(current deadline, now + seconds): a repeat match while open
        extends the pulse to a full `seconds` after the latest match and never stacks.
        ValueError unless 0 < seconds <= PULSE_SECONDS_MAX.
        """
        seconds = check_pulse_seconds(seconds)
        with self._cond:
            if self._closing:
                raise RuntimeError("relay is closed")
            if not self._timer.is_alive():  # nothing would end the pulse
                raise RelayError(self._timer_gone())
            deadline = self._clock() + seconds
            opened = self._deadline is None
            self._deadline = deadline if self._deadline is None else max(self._deadline, deadline)
            if opened:
                self._device.on()
            self._cond.notify_all()
        return opened

    def check(self) -> None:
        """RelayError when the timer thread, which ends every pulse, is no longer running (an
        error it could not survive). The door's relay guard calls it every
        RELAY_CHECK_EVERY (edge_app/daemon.py)."""
        if not self._closed and not self._timer.is_alive():
            raise RelayError(self._timer_gone())

    def _timer_gone(self) -> str:
        return (
            f"relay: the thread that ends each pulse of GPIO{self.pin} has stopped; refusing "
            "to open a door nothing would close (the process locks it and exits)"
        )

    def close(self) -> None:
        """Pin low, then free it. Idempotent, and safe from any thread or exit path.

        RelayError if the pin is still not low after CLOSE_ATTEMPTS tries: the relay then
        refuses pulses but is not released, so a later close() (or the atexit hook, which
        stays registered) tries again, and the timer thread keeps retrying an open pulse.
        """
        with self._cond:
            if self._closed:
                return
            self._closing = True
        error = self._lock_for_close()
        if error is not None:
            with self._cond:
                if self._deadline is not None:  # open: the timer thread retries from now on
                    self._deadline = min(self._deadline, self._clock())
                self._cond.notify_all()
            raise RelayError(
                f"relay: GPIO{self.pin} could not be driven to locked in {CLOSE_ATTEMPTS} "
                f"attempts ({type(error).__name__}: {error}); the door may be unlocked"
            ) from error
        with self._cond:
            if self._closed:
                return  # a concurrent close() released it
            self._closed = True
            self._cond.notify_all()
        try:
            self._device.close()
        except OSError as error:  # locked (read back above): only freeing the pin failed
            log.error("relay could not free pin=GPIO%d (it is locked): %s", self.pin, error)
        finally:
            atexit.unregister(self.close)
            if self._timer is not threading.current_thread():
                self._timer.join(timeout=1.0)
            self._events.close()  # the release callbacks still due, then that thread ends
            log.info("relay released pin=GPIO%d", self.pin)

    def _lock_for_close(self) -> Exception | None:
        """Drive the pin low, up to CLOSE_ATTEMPTS times: None once it is, else the last error."""
        error: Exception | None = None
        for attempt in range(1, CLOSE_ATTEMPTS + 1):
            try:
                self._off("close")
                return None
            except Exception as failure:  # whatever the driver raised: log it and try again
                error = failure
                log.error(
                    "relay cannot drive pin=GPIO%d low (attempt %d of %d): %s: %s",
                    self.pin,
                    attempt,
                    CLOSE_ATTEMPTS,
                    type(failure).__name__,
                    failure,
                )
                if attempt < CLOSE_ATTEMPTS:
                    time.sleep(CLOSE_RETRY_SECONDS)
        return error

    def _off(self, reason: str, *, expired_only: bool = False) -> None:
        with self._cond:
            if expired_only and (self._deadline is None or self._deadline > self._clock()):
                return  # extended (or released) since the timer looked
            was_open = self._deadline is not None
            # Drive low even if we think it is low already: nothing may leave the strike open.
            # The deadline is cleared only once the pin reads back low, so a failing off() is
            # retried.
            if not self._device.closed:
                self._device.off()
                if self._device.value:
                    raise RelayError(f"GPIO{self.pin} still reads active after off()")
            self._deadline = None
        if was_open:
            self._events.put(reason)  # for relay-events: nothing here waits on a callback

    def _run_timer(self) -> None:
        while True:
            try:
                with self._cond:
                    while not self._closed and self._deadline is None:
                        self._cond.wait()
                    if self._closed:
                        return
                    assert self._deadline is not None, "the wait above ends on a deadline or close"
                    remaining = self._deadline - self._clock()
                    if remaining > 0:
                        self._cond.wait(min(remaining, 1.0))  # a bounded wait, whatever the clock
                        continue
                self._off("close" if self._closing else "timeout", expired_only=True)
            except BaseException:  # this thread is what relocks the door: it must not end
                _report("relay timer error pin=GPIO%d; retrying", self.pin)
                time.sleep(TIMER_RETRY_SECONDS)


def _report(message: str, *args: object) -> None:
    """log.exception that cannot raise: the relay's threads call it from their last line of
    defence, where an error while logging (a MemoryError formatting the traceback, a closed
    stream) must not end the thread that relocks the door."""
    with contextlib.suppress(BaseException):  # nothing is left to report it with
        log.exception(message, *args)
