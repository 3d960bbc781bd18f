"""relay_off after the daemon died, when config.toml no longer names the pin the daemon held.

On Raspberry Pi OS kernels a released output keeps its last level (persist_gpio_outputs), so
after a SIGKILL mid-pulse only ExecStopPost's relay_off relocks the strike. It must lock the
pin the dead daemon recorded claiming (edge_app.relay_record), whatever the config says now.
One MockFactory is shared by the "dead daemon" (GPIO17 left high and unclaimed, as
tests/test_relay.py's left_high fixture models it) and relay_off, whose "mock" factory is it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gpiozero import OutputDevice
from gpiozero.pins.mock import MockFactory

from edge_app import paths, relay_off
from edge_app import relay as relay_module
from edge_app.config import GpioConfig
from edge_app.relay_record import SYSTEMD_UNIT_VARIABLE, write_record

PIN = 17  # what the daemon claimed and recorded
MOVED = 27  # what the config says since


@pytest.fixture(autouse=True)
def run_by_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    """As under the unit: only a door systemd runs writes the record (INVOCATION_ID)."""
    monkeypatch.setenv(SYSTEMD_UNIT_VARIABLE, "test")


@pytest.fixture
def factory(monkeypatch: pytest.MonkeyPatch) -> MockFactory:
    """GPIO17 high and unclaimed, as after a SIGKILL mid-pulse; relay_off's factory is this one."""
    factory = MockFactory()
    pin = factory.pin(PIN)
    pin.function = "output"
    pin.state = True
    monkeypatch.setattr(relay_module, "make_pin_factory", lambda name: factory)
    return factory


@pytest.fixture
def record(tmp_path: Path) -> Path:
    """The record the daemon wrote on claiming GPIO17 (in its own folder, as /run/edge-app)."""
    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / "relay.json"
    assert write_record(GpioConfig(pin=PIN), path)  # relay_off's factory is the mock here
    return path


@pytest.fixture(autouse=True)
def info(caplog: pytest.LogCaptureFixture) -> None:
    """relay_off's "relay locked" lines are at INFO."""
    caplog.set_level(logging.INFO, logger="edge_app.relay_off")


def relock(tmp_path: Path, record: Path, text: str | None, *flags: str) -> int:
    """relay_off with the config file as it is now (None: deleted)."""
    config = tmp_path / "config.toml"
    if text is not None:
        config.write_text(text)
    return relay_off.main([*flags, "--config", str(config), "--record", str(record)])


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def locked(factory: MockFactory, pin: int) -> bool:
    """Driven to locked (low, active-high) and released."""
    return factory.pin(pin).state is False and factory.pin(pin).function == "input"


def test_a_unchanged_config_locks_the_pin_once(
    factory: MockFactory, record: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert relock(tmp_path, record, f"[gpio]\npin = {PIN}\n") == 0
    assert locked(factory, PIN)
    assert [s.state for s in factory.pin(PIN).states] == [False, True, False]  # once, not twice
    (line,) = [m for m in caplog.messages if m.startswith("relay locked")]
    assert f"pin=GPIO{PIN}" in line and str(record) in line and "config" in line
    assert errors(caplog) == []


def test_b_a_moved_pin_locks_the_recorded_pin_and_the_new_one(
    factory: MockFactory, record: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """gpio.pin edited while the daemon ran (it keeps its pin until it restarts)."""
    assert relock(tmp_path, record, f"[gpio]\npin = {MOVED}\n") == 0
    assert locked(factory, PIN)  # the strike the dead daemon left energised
    assert locked(factory, MOVED)  # the pin the next daemon will claim
    lines = [m for m in caplog.messages if m.startswith("relay locked")]
    assert f"pin=GPIO{PIN}" in lines[0] and f"from the record {record}" in lines[0]
    assert f"pin=GPIO{MOVED}" in lines[1] and "from the config" in lines[1]
    assert errors(caplog) == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"[gpio]\npin = {PIN}\nactive_hihg = true\n", "active_hihg"),
        (None, "config file not found"),
        # tomllib took minutes and gigabytes over such a key (test_config.py)
        (f"[gpio]\npin = {PIN}\n{'a.' * 3000}a = 1\n", "line 3: a key or table name"),
    ],
    ids=["c-typo-in-gpio", "d-config-deleted", "a-key-of-3000-parts"],
)
def test_c_d_a_config_it_cannot_use_still_locks_the_recorded_pin_and_exits_2(
    factory: MockFactory,
    record: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    text: str | None,
    problem: str,
) -> None:
    assert relock(tmp_path, record, text) == 2
    assert locked(factory, PIN)
    (message,) = errors(caplog)
    assert f"relay locked pin=GPIO{PIN}" in message and f"from the record {record}" in message
    assert "the config's pin was not" in message and problem in message
    assert "\n" not in message
    lines = [m for m in caplog.messages if m.startswith("relay locked")]
    assert lines == [message]  # the one line says both


def test_a_recorded_pin_that_cannot_be_claimed_fails_but_the_config_pin_is_locked(
    factory: MockFactory, record: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Something still holds GPIO17 (say a daemon that is not dead after all): exit 2, and
    the config's pin is driven locked all the same."""
    holder = OutputDevice(PIN, initial_value=True, pin_factory=factory)
    try:
        assert relock(tmp_path, record, f"[gpio]\npin = {MOVED}\n") == 2
        assert locked(factory, MOVED)
        (message,) = errors(caplog)
        assert f"the recorded GPIO{PIN} was not locked" in message
    finally:
        holder.close()


def test_an_unchanged_recorded_pin_that_cannot_be_claimed_exits_2(
    factory: MockFactory, record: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The common case of the above: the config still names the recorded pin. Exit 0 would
    have systemd log a clean stop while the strike may be held open."""
    holder = OutputDevice(PIN, initial_value=True, pin_factory=factory)
    try:
        assert relock(tmp_path, record, f"[gpio]\npin = {PIN}\n") == 2
        assert any(f"the recorded GPIO{PIN} was not locked" in m for m in errors(caplog))
    finally:
        holder.close()


def test_a_record_and_config_that_disagree_on_polarity_end_at_the_configs_level(
    factory: MockFactory, record: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before a start (ExecStartPre=): the daemon about to start drives it so anyway. The
    record then says so: a review found that a start refused before the daemon claimed the
    pin (a typo elsewhere in the same edit) left the old record, and ExecStopPost= then
    drove the pin back to the old level, open for the board the config declares."""
    text = f"[gpio]\npin = {PIN}\nactive_high = false\n"
    assert relock(tmp_path, record, text) == 0
    assert factory.pin(PIN).state is True  # locked for an active-low board, last
    assert any("the record says active_high=True" in m for m in caplog.messages)
    assert json.loads(record.read_text())["active_high"] is False
    assert relock(tmp_path, record, text, "--after-stop") == 0  # the stop: no dispute left
    assert factory.pin(PIN).state is True


def test_after_a_stop_a_polarity_changed_in_the_config_leaves_the_records_level(
    factory: MockFactory, record: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an audit: `active_high` mistyped in the config while the door ran, then
    `systemctl stop`: ExecStopPost='s relay_off drove the record's locked level, then the
    config's, which is "open" for the relay the door had been driving, exit 0, and nothing
    drives the pin after a stop. After a stop the record's level stays, exit 2 (a failed
    unit) and one line says what to check."""
    text = f"[gpio]\npin = {PIN}\nactive_high = false\n"
    assert relock(tmp_path, record, text, "--after-stop") == 2
    assert locked(factory, PIN)  # low: locked for the active-high relay the record names
    (message,) = errors(caplog)
    assert f"GPIO{PIN}: the door that stopped locked it as active_high=True" in message
    assert "check the wiring" in message


def test_after_a_stop_a_disputed_pin_that_cannot_be_claimed_is_not_driven_open(
    factory: MockFactory, record: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by a review: the polarity check ran only once the record's level had been
    driven; when that failed (the pin busy a moment), the config's level, "open" for the
    relay the door was driving, was driven, last. Now nothing is driven to it."""
    holder = OutputDevice(PIN, initial_value=True, pin_factory=factory)  # the pin is busy
    try:
        text = f"[gpio]\npin = {PIN}\nactive_high = false\n"
        assert relock(tmp_path, record, text, "--after-stop") == 2
        assert factory.pin(PIN).state is True and holder.value == 1  # as it was: not claimed
    finally:
        holder.close()
    assert any("not driven to the config's level either" in m for m in errors(caplog))


def hostile(folder: Path, kind: str) -> Path:
    """A record at FOLDER/relay.json that relay_off must not trust; each names GPIO17 (or the
    UART pin), so a reader that trusted it would drive that pin."""
    path = folder / "relay.json"
    good = {"pin": PIN, "active_high": True, "factory": "auto", "force_uart_pins": False}
    if kind == "symlink":
        target = folder / "elsewhere.json"
        target.write_text(json.dumps(good))
        target.chmod(0o600)
        path.symlink_to(target)
        return path
    if kind == "fifo":
        os.mkfifo(path, 0o600)
        return path
    if kind == "folder":
        path.mkdir()
        return path
    texts = {
        "huge": json.dumps({**good, "padding": "x" * 100_000}),
        "bad-json": '{"pin": 17, "active_high": tru',
        "deep-json": "[" * 2000,
        "not-utf8": b'{"pin": \xff17}'.decode("latin-1"),
        "a-list": json.dumps([17, True, "auto", False]),
        "uart-pin": json.dumps({**good, "pin": 14}),
        "pin-as-text": json.dumps({**good, "pin": "17"}),
        "pin-out-of-range": json.dumps({**good, "pin": 99}),
        "polarity-as-text": json.dumps({**good, "active_high": "yes"}),
        "unknown-factory": json.dumps({**good, "factory": "gpio"}),
        "missing-key": json.dumps({"pin": PIN, "factory": "auto", "force_uart_pins": False}),
        "extra-key": json.dumps({**good, "pulse_seconds": 60}),
        "forged-log-line": json.dumps({**good, "x\nERROR relay locked pin=GPIO17": 1}),
        "value-with-a-line-break": json.dumps({**good, "factory": "auto\nERROR forged"}),
        "others-may-write": json.dumps(good),
        "empty": "",
    }
    path.write_text(texts[kind], encoding="latin-1")
    path.chmod(0o666 if kind == "others-may-write" else 0o600)
    return path


HOSTILE = [
    "symlink",
    "fifo",
    "folder",
    "huge",
    "bad-json",
    "deep-json",
    "not-utf8",
    "a-list",
    "uart-pin",
    "pin-as-text",
    "pin-out-of-range",
    "polarity-as-text",
    "unknown-factory",
    "missing-key",
    "extra-key",
    "forged-log-line",
    "value-with-a-line-break",
    "others-may-write",
    "empty",
]


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_record_it_cannot_trust_is_ignored_and_changes_nothing(
    factory: MockFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    path = hostile(folder, kind)
    before = sorted(p.name for p in folder.iterdir())
    assert relock(tmp_path, path, f"[gpio]\npin = {MOVED}\n") == 0
    assert locked(factory, MOVED)  # the config's pin, as before there was a record
    assert factory.pin(PIN).state is True and factory.pin(PIN).function == "output"  # untouched
    assert len(factory.pin(14).states) == 1  # the UART pin: never driven
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith(f"{path}: relay record ignored: ") and "\n" not in warning
    assert errors(caplog) == []
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written or removed


def test_no_record_is_the_old_behaviour_without_a_warning(
    factory: MockFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before any daemon claimed its pin (the folder is new at each `systemctl start`)."""
    missing = tmp_path / "run" / "relay.json"
    assert relock(tmp_path, missing, f"[gpio]\npin = {MOVED}\n") == 0
    assert locked(factory, MOVED)
    assert factory.pin(PIN).state is True
    assert [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")] == []


def _disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """The private write's fsync fails as on a full disk (ext4's delayed allocation)."""

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)


def relay_warning(caplog: pytest.LogCaptureFixture) -> str:
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "edge_app.relay_record"]
    assert "\n" not in warning
    return warning


def test_a_record_this_run_cannot_write_removes_the_previous_runs(
    factory: MockFactory,
    record: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An audit: with the disk full, the daemon that claimed GPIO27 kept the record of the run
    before it (GPIO17), and relay_off drove GPIO17, which another device may use now."""
    with monkeypatch.context() as full:
        _disk_full(full)
        assert not write_record(GpioConfig(pin=MOVED), record)
    assert list(record.parent.iterdir()) == []  # no stale record, no temporary file
    warning = relay_warning(caplog)
    assert warning.startswith("relay record not written (") and "No space left" in warning
    assert "the previous run's record there was removed" in warning
    assert "relay_off drives only the pin the config names" in warning

    assert relock(tmp_path, record, f"[gpio]\npin = {MOVED}\n") == 0
    assert locked(factory, MOVED)
    assert factory.pin(PIN).state is True and factory.pin(PIN).function == "output"  # untouched
    assert errors(caplog) == []


def test_a_record_of_the_same_relay_is_kept_when_it_cannot_be_written_again(
    factory: MockFactory,
    record: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by a review of the fix above: a restart onto the same pin (GPIO17) whose write
    failed removed the record, though it names the very pin this run claimed; with the
    config's pin then edited and the door killed mid-pulse, relay_off drove only the new pin
    and left GPIO17, the strike, energised."""
    before = record.read_bytes()
    with monkeypatch.context() as full:
        _disk_full(full)
        assert not write_record(GpioConfig(pin=PIN), record)
    assert record.read_bytes() == before
    assert "of the same relay from a previous run, is kept" in relay_warning(caplog)
    relock(tmp_path, record, f"[gpio]\npin = {MOVED}\n")  # pin edited, then a crash
    assert locked(factory, PIN) and locked(factory, MOVED)


def test_a_stale_record_that_cannot_be_removed_is_named_in_the_warning(
    record: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A read-only runtime folder: neither written nor removed; the warning says relay_off
    will drive the pin that record names, and how to remove it. Never raised."""
    before = record.read_bytes()
    unlink = os.unlink

    def read_only(path: str | Path, *args: object, **kwargs: object) -> None:
        if Path(path) == record:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        unlink(path, *args, **kwargs)  # type: ignore[arg-type]

    with monkeypatch.context() as faults:
        _disk_full(faults)
        faults.setattr(os, "unlink", read_only)
        assert not write_record(GpioConfig(pin=MOVED), record)
    assert record.read_bytes() == before and list(record.parent.iterdir()) == [record]
    warning = relay_warning(caplog)
    assert "could not be removed either (Read-only file system)" in warning
    assert "relay_off drives the pin it names first" in warning and f"remove {record}" in warning


def test_the_default_record_is_the_one_the_daemon_writes(
    factory: MockFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --record (the unit's command line): paths.RELAY_RECORD, where write_record() writes."""
    folder = tmp_path / "run"
    folder.mkdir()
    monkeypatch.setattr(paths, "RELAY_RECORD", folder / "relay.json")
    assert write_record(GpioConfig(pin=PIN))
    config = tmp_path / "config.toml"
    config.write_text(f"[gpio]\npin = {MOVED}\n")
    assert relay_off.main(["--config", str(config)]) == 0
    assert locked(factory, PIN) and locked(factory, MOVED)


def test_the_command_prints_one_line_when_only_the_recorded_pin_was_locked(
    tmp_path: Path, record: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(paths.REPO_ROOT)}
    config = tmp_path / "config.toml"
    config.write_text("[gpio]\npin = 17\nactive_high = maybe\n")
    command = [sys.executable, "-m", "edge_app.relay_off", "--gpio", "mock"]
    done = subprocess.run(
        [*command, "--record", str(record), "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert f"relay locked pin=GPIO{PIN}" in line and "not valid TOML" in line


def test_under_systemd_each_line_carries_its_priority(tmp_path: Path, record: Path) -> None:
    """Found by an audit: ExecStartPre/ExecStopPost's lines had no priority prefix, so
    `journalctl -p err` left out the line that says a pin could not be locked."""
    env = {**os.environ, "PYTHONPATH": str(paths.REPO_ROOT), "JOURNAL_STREAM": "8:1"}
    config = tmp_path / "config.toml"
    config.write_text("[gpio]\npin = 17\nactive_high = maybe\n")
    done = subprocess.run(
        [sys.executable, "-m", "edge_app.relay_off", "--gpio", "mock", "--record", str(record)]
        + ["--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert any(line.startswith("<3>edge_app.relay_off: ") for line in lines), lines
    assert all(line.startswith("<") for line in lines), lines
