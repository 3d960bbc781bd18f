"""doctor's gpio row and the GPIO chips this user may open.

The door drives its relay through lgpio on /dev/gpiochip*. Where the chips are root's alone
(plain Debian without the udev rule of docs/INSTALL.md, or a service user not in the gpio
group), the door's start fails at ExecStartPre= (relay_off cannot claim the pin), yet doctor,
run as that user as the docs say, reported `OK gpio GPIO chips: ...` from the chips merely
existing.
"""

from __future__ import annotations

import os

import pytest

from edge_app import relay
from edge_app.commands import doctor

CHIPS = ["/dev/gpiochip0", "/dev/gpiochip4"]


def _gpio(monkeypatch: pytest.MonkeyPatch, factory: str, may_open: set[str]) -> doctor.Check:
    monkeypatch.setitem(relay.FACTORY_LIBRARIES, "lgpio", "json")  # one that is installed
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    real_glob, real_access = doctor.glob.glob, os.access

    def fake_glob(pattern: str) -> list[str]:
        return list(CHIPS) if pattern == "/dev/gpiochip*" else real_glob(pattern)

    def fake_access(path: object, mode: int) -> bool:
        if str(path) in CHIPS:
            return str(path) in may_open
        return real_access(path, mode)  # type: ignore[arg-type]

    monkeypatch.setattr(doctor.glob, "glob", fake_glob)
    monkeypatch.setattr(doctor.os, "access", fake_access)
    return next(c for c in doctor._device_checks(factory=factory) if c.area == "gpio")


@pytest.mark.parametrize("factory", ["auto", "lgpio"])
def test_chips_this_user_may_not_open_fail_the_gpio_row(
    monkeypatch: pytest.MonkeyPatch, factory: str
) -> None:
    gpio = _gpio(monkeypatch, factory, may_open=set())
    assert gpio.status == "fail", gpio
    assert "may open none of them" in gpio.detail
    assert "sudo -u edge-app edge-app doctor" in gpio.fix
    assert "GPIO access and the pin factory" in gpio.fix


def test_one_chip_this_user_may_open_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    gpio = _gpio(monkeypatch, "auto", may_open={"/dev/gpiochip4"})
    assert gpio.status == "ok", gpio


@pytest.mark.parametrize("factory", ["rpigpio", "native", "pigpio"])
def test_a_factory_the_shipped_unit_keeps_from_the_pins_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, factory: str
) -> None:
    """A review: doctor passed "rpigpio", "native" and "pigpio", which docs/INSTALL.md says the
    shipped edge-app.service keeps from the pins (no /dev/gpiomem; no TCP to pigpiod)."""
    monkeypatch.setitem(relay.FACTORY_LIBRARIES, factory, "json")  # installed, as on a Pi
    gpio = _gpio(monkeypatch, factory, may_open=set(CHIPS))
    assert gpio.status == "warn", gpio
    assert f"gpio.factory {factory!r}" in gpio.detail and "edge-app.service" in gpio.detail
    assert 'factory = "auto"' in gpio.fix


def test_a_pin_warning_does_not_hide_the_factory_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: the row said only the first of its warnings; put the pin's first, the
    factory the shipped unit keeps from the pins was then said by no row at all while the
    pin was pulled up at boot (the door could not drive its relay, and doctor did not say)."""
    monkeypatch.setitem(relay.FACTORY_LIBRARIES, "native", "json")
    monkeypatch.setattr(doctor, "_camera_check", lambda source: doctor.Check("camera", "ok", ""))
    monkeypatch.setattr(doctor.glob, "glob", lambda pattern: list(CHIPS))
    from edge_app.config import boot_pull_up_warning

    pin_warning = boot_pull_up_warning(4, True)
    assert pin_warning is not None
    (gpio,) = [
        c
        for c in doctor._device_checks(factory="native", pin_warning=pin_warning)
        if c.area == "gpio"
    ]
    assert gpio.status == "warn", gpio
    assert "GPIO4 is pulled up while the Pi boots" in gpio.detail
    assert "gpio.factory 'native' needs /dev/gpiomem" in gpio.detail
    assert gpio.fix.startswith("use GPIO9-27 (e.g. 17)") and 'factory = "auto"' in gpio.fix
