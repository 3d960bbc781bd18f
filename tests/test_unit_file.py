"""The systemd unit: `systemd-analyze verify` where the tool exists, and the hardening it needs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edge_app import paths

SYSTEMD = paths.REPO_ROOT / "systemd"
UNIT = SYSTEMD / "edge-app.service"


def directives(section: str) -> dict[str, list[str]]:
    """Each key's values in order (systemd allows repeated keys such as DeviceAllow)."""
    found: dict[str, list[str]] = {}
    current = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify also checks that ExecStart exists; the installed venv is not on a test machine,
    # so point it at a binary that is, leaving every other line as shipped.
    text = UNIT.read_text().replace(
        "ExecStart=/opt/edge-app/venv/bin/edge-app", f"ExecStart={shutil.which('true')}"
    )
    unit = tmp_path / "edge-app.service"
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "edge-app.service" not in result.stderr, result.stderr


def test_service_contract() -> None:
    service = directives("Service")
    expect = {
        "Type": "notify",
        "Restart": "on-failure",
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
    assert directives("Install")["WantedBy"] == ["multi-user.target"]


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


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_install_script_passes_shellcheck() -> None:
    result = subprocess.run(
        ["shellcheck", str(SYSTEMD / "install.sh")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout
