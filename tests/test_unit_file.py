"""The systemd unit: `systemd-analyze verify` where the tool exists, and the hardening it needs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from needs import need_command
from unit_files import directives

from edge_app import paths

SYSTEMD = paths.REPO_ROOT / "systemd"
UNIT = SYSTEMD / "edge-app.service"


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    need_command("systemd-analyze", "systemd")
    # verify also checks that ExecStart exists; the installed venv is not on a test machine,
    # so point it at a binary that is, leaving every other line as shipped.
    text = (
        UNIT.read_text()
        .replace("ExecStart=/opt/edge-app/venv/bin/edge-app", f"ExecStart={shutil.which('true')}")
        .replace("=/opt/edge-app/venv/bin/python", f"={sys.executable}")
    )
    unit = tmp_path / "edge-app.service"
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "edge-app.service" not in result.stderr, result.stderr


def test_service_contract() -> None:
    service = directives(UNIT, "Service")
    expect = {
        "Type": "notify",
        "Restart": "always",  # it exits 0 on SIGTERM: a stray one must not leave it down
        "TimeoutAbortSec": "5",  # after a watchdog timeout, not the manager's 90 s
        "User": "edge-app",
        "SupplementaryGroups": "video gpio plugdev",
        "StateDirectory": "edge-app",
        "ConfigurationDirectory": "edge-app",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "DevicePolicy": "closed",
    }
    for key, value in expect.items():
        assert service.get(key) == [value], key
    assert int(service["WatchdogSec"][0]) > 0
    assert service["WatchdogSignal"] == ["SIGTERM"]  # the clean stop path releases the relay
    assert "PrivateDevices" not in service  # it would hide the camera, GPIO chip and TPU
    assert "AF_UNIX" in service["RestrictAddressFamilies"][0].split()  # sd_notify needs it
    allowed = {value.split()[0] for value in service["DeviceAllow"]}
    assert {
        "char-video4linux",
        "char-media",
        "char-dma_heap",
        "char-gpiochip",
        "char-apex",
        "char-usb_device",
    } <= allowed
    assert "--config /etc/edge-app/config.toml" in service["ExecStart"][0]
    assert service["WorkingDirectory"] == [str(paths.DEFAULT_STATE_DIR)]
    assert directives(UNIT, "Install")["WantedBy"] == ["multi-user.target"]


def test_udev_rule_covers_both_coral_usb_identities() -> None:
    rules = (SYSTEMD / "99-coral-edgetpu.rules").read_text()
    assert 'ATTRS{idVendor}=="1a6e", ATTRS{idProduct}=="089a"' in rules
    assert 'ATTRS{idVendor}=="18d1", ATTRS{idProduct}=="9302"' in rules
    assert 'GROUP="plugdev"' in rules


def test_install_script_paths_match_the_code() -> None:
    script = (SYSTEMD / "install.sh").read_text()
    assert f"CONF_DIR={paths.DEFAULT_CONFIG.parent}" in script
    assert f"STATE_DIR={paths.DEFAULT_STATE_DIR}" in script
    assert f"MODELS_DIR=$SHARE_DIR/{paths.INSTALLED_MODELS.name}" in script
    assert f"SHARE_DIR={paths.INSTALLED_MODELS.parent}" in script
    assert "--uninstall" in script


def test_install_script_passes_shellcheck() -> None:
    need_command("shellcheck", "shellcheck")
    result = subprocess.run(
        ["shellcheck", str(SYSTEMD / "install.sh")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout


def test_relay_is_driven_locked_before_start_and_after_stop() -> None:
    """ExecStartPre=/ExecStopPost= run the relay-off module with the daemon's own config; no
    "-" prefix, so a pin that cannot be driven low fails the start (and shows after a stop)."""
    service = directives(UNIT, "Service")
    config = service["ExecStart"][0].split("--config", 1)[1].strip()
    # After a stop, a polarity the config changed since the door started is not trusted.
    for key, flags in (("ExecStartPre", ""), ("ExecStopPost", "--after-stop ")):
        (command,) = service[key]
        assert not command.startswith(("-", "+", "!", "@", ":")), command
        assert command == (
            f"/opt/edge-app/venv/bin/python -m edge_app.relay_off {flags}--config {config}"
        )
    assert service["ExecStart"][0].startswith("/opt/edge-app/venv/bin/")


def test_the_relay_record_is_in_the_runtime_directory_execstoppost_reads() -> None:
    """The daemon records the pin it claimed at paths.RELAY_RECORD; ExecStopPost='s relay_off
    reads it there (its default --record), as the same user. The folder must be the unit's
    RuntimeDirectory=, kept across restarts (Restart= after a crash runs ExecStopPost= and
    ExecStartPre= with the record still there); systemd removes it only once the unit is
    inactive, after ExecStopPost=."""
    service = directives(UNIT, "Service")
    assert paths.RELAY_RECORD.parent == Path("/run") / service["RuntimeDirectory"][0]
    assert service["RuntimeDirectoryPreserve"] == ["restart"]
    (stop,) = service["ExecStopPost"]
    assert "--record" not in stop and stop.startswith("/opt/edge-app/venv/bin/python -m ")


def test_relay_off_drives_a_pin_left_high_to_locked() -> None:
    """As after a SIGKILL mid-pulse: the pin is high and nobody holds it."""
    from gpiozero.pins.mock import MockFactory

    from edge_app.config import GpioConfig
    from edge_app.relay_off import drive_locked

    factory = MockFactory()
    left = factory.pin(17)
    left.function = "output"
    left.state = True
    drive_locked(GpioConfig(pin=17), factory)
    assert left.state is False and left.function == "input"  # low, then released
    assert [s.state for s in left.states] == [False, True, False]
    active_low = factory.pin(22)
    active_low.function = "output"
    active_low.state = False  # "open" on an active-low board
    drive_locked(GpioConfig(pin=22, active_high=False), factory)
    assert active_low.state is True


def test_relay_off_command(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(paths.REPO_ROOT)}
    good = tmp_path / "door.toml"
    good.write_text("[gpio]\npin = 27\n")
    command = [sys.executable, "-m", "edge_app.relay_off", "--gpio", "mock", "--config"]
    done = subprocess.run([*command, str(good)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "relay locked pin=GPIO27" in done.stderr and "Traceback" not in done.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[gpio]\npin = 14\n")
    done = subprocess.run([*command, str(bad)], capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert "gpio.pin: 14 is a UART pin" in done.stderr and "Traceback" not in done.stderr


INSTALL = SYSTEMD / "install.sh"


def test_install_help_prints_the_whole_header() -> None:
    """--help prints the header comment (sed's line range must follow its length); the
    option parsing comes before the root check, so this runs as any user."""
    lines = INSTALL.read_text().splitlines()
    end = lines.index("set -eu")
    header = [line.removeprefix("#").removeprefix(" ") for line in lines[1:end]]
    done = subprocess.run(
        ["sh", str(INSTALL), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == header
    assert "Raspberry Pi OS" in header[0] and "Debian-like" not in done.stdout


def test_install_puts_pypi_simplejpeg_into_the_venv_on_aarch64() -> None:
    """apt's python3-simplejpeg (imported by picamera2) is built for numpy 1.x; the venv has
    numpy 2. PyPI's build must shadow it on a Pi (where apt's picamera2 is installed) on
    aarch64, installed even though pip sees apt's copy."""
    script = INSTALL.read_text()
    command = (
        'if [ "$pi_board" = yes ] && [ "$(uname -m)" = aarch64 ]; then\n'
        '            "$new_venv/bin/pip" install --quiet --force-reinstall --no-deps simplejpeg\n'
    )
    assert command in script
    # after edge-app, whose dependencies bring the numpy it needs (--no-deps)
    assert script.index('"$new_venv/bin/pip" install --quiet "$REPO"') < script.index(command)


def test_install_restarts_running_services_after_replacing_their_files() -> None:
    """An upgrade try-restarts the units it kept (running ones run the new program); the
    installer never enables, starts or restarts a unit itself: a first install must not
    start the door before it is wired, and an upgrade keeps what the admin enabled."""
    script = INSTALL.read_text()
    restart = "systemctl try-restart $kept_units"
    assert restart in script
    assert script.rindex("systemctl daemon-reload") < script.index(restart)
    code = [
        line
        for line in script.split("cat <<EOF")[0].splitlines()
        if not line.lstrip().startswith("#")
    ]
    assert not [line for line in code if re.match(r"\s*systemctl (enable|start|restart)\b", line)]


def test_install_hint_enrols_from_an_absolute_path_the_service_user_can_read() -> None:
    hint = INSTALL.read_text().split("cat <<EOF", 1)[1].split("\nEOF", 1)[0]
    enroll = next(line for line in hint.splitlines() if " enroll " in line)
    assert enroll.rstrip().endswith('"Alice" $STATE_DIR/photos/alice/')
    # The photos are copied in by the service user itself: root never writes into the state
    # folder, where that user could have planted a link (tests/test_install_script.py).
    assert "sudo -u $SERVICE_USER mkdir -p -m 0700 $STATE_DIR/photos/alice" in hint
    assert "install -o $SERVICE_USER" not in hint


def test_files_the_service_user_writes_are_documented_under_the_state_folder() -> None:
    """The installer makes the config folder root:edge-app 0750, so `sudo -u edge-app edge-app
    hub unlock-code` (or `passwd`) cannot create a file there."""
    script = INSTALL.read_text()
    assert 'install -d -m 0750 -o root -g "$SERVICE_USER" "$CONF_DIR"' in script
    state = paths.DEFAULT_STATE_DIR
    texts = {
        name: (paths.REPO_ROOT / name).read_text()
        for name in ("docs/HOME_ASSISTANT.md", "config.example.toml", "edge_app/commands/hub.py")
    }
    for name, text in texts.items():
        assert f"{paths.DEFAULT_CONFIG.parent}/unlock.code" not in text, name
    assert f'unlock_code_file = "{state}/unlock.code"' in texts["docs/HOME_ASSISTANT.md"]
    assert f'password_file = "{state}/web-password"' in texts["config.example.toml"]


def test_the_board_is_read_where_the_units_let_it_be_read() -> None:
    """doctor (run by the hub for its health page, and by hand) knows a Raspberry Pi from
    its device tree, read under /sys, where /proc/device-tree points: a unit that hides
    /proc's other files (ProcSubset=pid) or /sys would hide the Pi's rows (the GPIO release
    warning among them)."""
    from edge_app.commands import doctor

    for unit in SYSTEMD.glob("*.service"):
        service = directives(unit, "Service")
        assert "/sys" not in " ".join(service.get("InaccessiblePaths", [])), unit.name
    assert Path("/sys/firmware/devicetree/base/model") == doctor.DEVICE_MODEL


def test_no_unit_hides_proc_cpuinfo_from_the_runtime() -> None:
    """Found by an audit: the hub's unit had ProcSubset=pid, which hides /proc/cpuinfo;
    TFLite's XNNPACK backend then fails to start ("Error in cpuinfo: failed to parse
    processor information") and FaceNet ran 3,724 ms a face instead of 5.5 ms here, so the
    web page's enrolment crawled (docs/DAEMON.md, Hardening)."""
    for unit in SYSTEMD.glob("*.service"):
        service = directives(unit, "Service")
        assert service.get("ProcSubset", ["all"]) == ["all"], unit.name
        assert "/proc" not in " ".join(service.get("InaccessiblePaths", [])), unit.name
