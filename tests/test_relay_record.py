"""The relay record (edge_app.relay_record): written by the real daemon right after it claims
the pin, read back by relay_off; and doctor's row on whether released GPIO outputs persist."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory
from test_daemon_fast import PIN, ScriptedEngine, door, states, visit, write_frames

from edge_app import paths, relay_record
from edge_app.commands import doctor
from edge_app.config import GpioConfig
from edge_app.daemon import Daemon
from edge_app.relay_record import SYSTEMD_UNIT_VARIABLE, read_record, write_record


@pytest.fixture(autouse=True)
def run_by_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    """As under the unit: only a door systemd runs writes the record (INVOCATION_ID)."""
    monkeypatch.setenv(SYSTEMD_UNIT_VARIABLE, "test")


@pytest.fixture
def gallery(tmp_path: Path) -> Path:
    from test_daemon_fast import gallery_of_ada

    return gallery_of_ada(tmp_path)


def test_a_record_reads_back_as_it_was_written(tmp_path: Path) -> None:
    gpio = GpioConfig(pin=14, active_high=False, factory="lgpio", force_uart_pins=True)
    path = tmp_path / "relay.json"
    assert write_record(gpio, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {
        "pin": 14,
        "active_high": False,
        "factory": "lgpio",
        "force_uart_pins": True,
    }
    assert read_record(path) == GpioConfig(
        pin=14, active_high=False, factory="lgpio", force_uart_pins=True
    )
    assert [p.name for p in tmp_path.iterdir()] == ["relay.json"]  # no temporary file left


def run_door(
    tmp_path: Path, gallery: Path, factory: str = "auto", pins: MockFactory | None = None
) -> None:
    """The real daemon on a short visit; gpio.factory "auto" as on a Pi, while the daemon
    drives the MockFactory `pins`."""
    pins = pins or MockFactory()
    frames = write_frames(tmp_path / "frames", visit(after=30))
    config = door(tmp_path, gallery, frames, gpio={"factory": factory})
    assert Daemon(config, engine=ScriptedEngine(), pin_factory=pins).run() == 0
    assert states(pins) == [False, True, False]  # the door works as before


def test_the_daemon_records_its_pin_right_after_claiming_it(
    tmp_path: Path, gallery: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"  # the unit's RuntimeDirectory=
    run.mkdir()
    monkeypatch.setattr(paths, "RELAY_RECORD", run / "relay.json")
    pins = MockFactory()
    seen: list[tuple[str, bool]] = []
    real = relay_record.write_record

    def spy(gpio: GpioConfig, path: Path | None = None) -> bool:
        seen.append((pins.pin(PIN).function, pins.pin(PIN).state))
        return real(gpio, path)

    monkeypatch.setattr(relay_record, "write_record", spy)
    run_door(tmp_path, gallery, pins=pins)
    assert seen == [("output", False)]  # the pin already claimed, and locked
    assert read_record(run / "relay.json") == GpioConfig(pin=PIN)
    assert stat.S_IMODE((run / "relay.json").stat().st_mode) == 0o600
    assert [p.name for p in run.iterdir()] == ["relay.json"]


def test_the_daemon_writes_nothing_where_the_folder_is_absent(
    tmp_path: Path, gallery: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Tests, the demo, `edge-app run` by hand: no /run/edge-app, no record, no warning."""
    record = tmp_path / "run" / "relay.json"
    monkeypatch.setattr(paths, "RELAY_RECORD", record)
    caplog.set_level(logging.DEBUG, logger="edge_app.relay_record")
    run_door(tmp_path, gallery)
    assert not record.parent.exists()
    messages = [r for r in caplog.records if r.name == "edge_app.relay_record"]
    assert [r.levelname for r in messages] == ["DEBUG"]
    assert "relay record not written: no folder" in messages[0].getMessage()


def test_a_door_systemd_does_not_run_writes_no_record_where_the_folder_is(
    tmp_path: Path, gallery: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an audit: `edge-app run` by hand makes its control socket's folder, which is
    /run/edge-app by default; the next hand run took that for the unit's and recorded its
    pin, which relay_off then drove first at the service's next stop."""
    monkeypatch.delenv(SYSTEMD_UNIT_VARIABLE)
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setattr(paths, "RELAY_RECORD", run / "relay.json")
    caplog.set_level(logging.DEBUG, logger="edge_app.relay_record")
    run_door(tmp_path, gallery)
    assert list(run.iterdir()) == []
    assert "relay record not written: not run by systemd (no INVOCATION_ID)" in caplog.text


def test_a_simulated_relay_is_not_recorded(
    tmp_path: Path, gallery: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """gpio.factory "mock" drives no strike: a trial run by hand, as the service user, must
    not replace the record of the door that runs for real."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "relay.json").write_text("the real door's record")
    monkeypatch.setattr(paths, "RELAY_RECORD", run / "relay.json")
    caplog.set_level(logging.DEBUG, logger="edge_app.relay_record")
    run_door(tmp_path, gallery, factory="mock")
    assert (run / "relay.json").read_text() == "the real door's record"
    assert [p.name for p in run.iterdir()] == ["relay.json"]
    assert "relay record not written: the relay is simulated" in caplog.text


def test_a_record_that_cannot_be_written_never_stops_the_door(
    tmp_path: Path, gallery: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A folder where the record goes: left alone, one warning, and the door runs."""
    run = tmp_path / "run"
    (run / "relay.json").mkdir(parents=True)
    monkeypatch.setattr(paths, "RELAY_RECORD", run / "relay.json")
    run_door(tmp_path, gallery)
    assert (run / "relay.json").is_dir() and list(run.iterdir()) == [run / "relay.json"]
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "edge_app.relay_record"]
    assert "relay record not written" in warning and "a folder" in warning


# --- doctor: do released GPIO outputs keep their level? ---------------------------------------


def sysfs(root: Path, driver: str, value: str) -> Path:
    parameter = root / "module" / driver / "parameters" / "persist_gpio_outputs"
    parameter.parent.mkdir(parents=True)
    parameter.write_text(value + "\n")
    return root


@pytest.mark.parametrize("driver", ["pinctrl_rp1", "pinctrl_bcm2835"])
def test_doctor_warns_when_released_outputs_persist(tmp_path: Path, driver: str) -> None:
    check = doctor._released_outputs_check(sysfs(tmp_path, driver, "Y"))
    assert check is not None and check.status == "warn"
    assert f"{driver} persist_gpio_outputs=Y" in check.detail
    assert "dtparam=strict_gpiod" in check.fix and "/boot/firmware/config.txt" in check.fix
    assert "reboot" in check.fix and "pull-down at once" in check.fix


@pytest.mark.parametrize("driver", ["pinctrl_rp1", "pinctrl_bcm2835"])
def test_doctor_is_content_when_released_outputs_become_inputs(tmp_path: Path, driver: str) -> None:
    check = doctor._released_outputs_check(sysfs(tmp_path, driver, "N"))
    assert check is not None and check.status == "ok"
    assert f"{driver} persist_gpio_outputs=N" in check.detail and check.fix == ""


def test_doctor_has_no_such_row_off_a_raspberry_pi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(doctor, "DEVICE_MODEL", tmp_path / "no-model")
    assert doctor._released_outputs_check(tmp_path) is None


def test_doctor_on_a_pi_whose_kernel_does_not_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    monkeypatch.setattr(doctor, "DEVICE_MODEL", model)
    check = doctor._released_outputs_check(tmp_path / "sys")
    assert check is not None and check.status == "warn"
    assert check.detail.startswith("Raspberry Pi 4 Model B Rev 1.4: ")
    assert "dtparam=strict_gpiod" in check.fix


def test_doctor_lists_the_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "SYS_ROOT", sysfs(tmp_path / "sys", "pinctrl_rp1", "Y"))
    config = tmp_path / "door.toml"
    config.write_text(
        f'[gallery]\npath = "{tmp_path / "gallery.db"}"\n[hub]\nsocket = ""\n'
        f'[events]\ndb = "{tmp_path / "events.db"}"\n'
    )
    checks = {check.area: check for check in doctor.collect_checks(config, tmp_path / "models")}
    assert checks["gpio release"].status == "warn"
