"""The hub's systemd unit, and what it changes (and must not change) in the door's unit."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from needs import need_command, unavailable
from unit_files import directives

from edge_app import paths
from edge_app.web import server as web_server

SYSTEMD = paths.REPO_ROOT / "systemd"
DOOR = SYSTEMD / "edge-app.service"
HUB = SYSTEMD / "edge-app-hub.service"
INSTALL = SYSTEMD / "install.sh"
# `systemd-analyze security --offline=yes` of the door unit before the hub existed.
DOOR_EXPOSURE = 1.5


def test_hub_runs_as_the_door_user_with_ip_and_without_devices() -> None:
    hub, door = directives(HUB, "Service"), directives(DOOR, "Service")
    assert hub["User"] == door["User"] and hub["Group"] == door["Group"]  # the 0660 socket
    for key, value in {
        "PrivateDevices": "yes",
        "DevicePolicy": "closed",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "Restart": "always",
        "CapabilityBoundingSet": "",
    }.items():
        assert hub.get(key) == [value], key
    assert "DeviceAllow" not in hub and "SupplementaryGroups" not in hub
    assert set(hub["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert "IPAddressDeny" not in hub
    # The runtime folder belongs to the door: a hub stop must not delete the door's socket.
    assert "RuntimeDirectory" not in hub
    # ProtectSystem=strict makes / read-only: the web page must still reach the gallery and
    # events databases (and their WAL files) in the door's state folder, with the same mode.
    assert hub["StateDirectory"] == door["StateDirectory"] == ["edge-app"]
    assert hub["StateDirectoryMode"] == door["StateDirectoryMode"] == ["0700"]
    assert "hub --config /etc/edge-app/config.toml" in hub["ExecStart"][0]
    unit = directives(HUB, "Unit")
    assert "edge-app.service" in unit["After"][0].split()
    assert "Requires" not in unit and "BindsTo" not in unit
    assert directives(HUB, "Install")["WantedBy"] == ["multi-user.target"]


def test_door_unit_keeps_no_ip_and_owns_the_socket_folder() -> None:
    door = directives(DOOR, "Service")
    assert door["RestrictAddressFamilies"] == ["AF_UNIX AF_NETLINK"]
    assert door["IPAddressDeny"] == ["any"]
    assert door["RuntimeDirectory"] == ["edge-app"]
    assert door["RuntimeDirectoryMode"] == ["0750"]
    assert door["RuntimeDirectoryPreserve"] == ["restart"]


def test_hub_may_open_many_times_the_files_its_web_page_can_hold() -> None:
    """The web page's sockets are capped (edge_app/web/server.py); the unit's file limit
    stays well above the cap, so a flood of connections cannot starve the databases."""
    [limit] = directives(HUB, "Service")["LimitNOFILE"]
    # Those held, and those of a flood being accepted and refused: a few backlogs at a time.
    web_sockets = web_server.MAX_CONNECTIONS + 4 * web_server.LISTEN_BACKLOG
    assert int(limit) >= 4 * web_sockets, (limit, web_sockets)


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """The hub unit (test_unit_file.py verifies the door's)."""
    need_command("systemd-analyze", "systemd")
    unit = HUB
    text = unit.read_text().replace(
        "ExecStart=/opt/edge-app/venv/bin/edge-app", f"ExecStart={shutil.which('true')}"
    )
    copy = tmp_path / unit.name
    copy.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert unit.name not in result.stderr, result.stderr


def exposure(unit: Path) -> float:
    """The unit's overall exposure by `systemd-analyze security --offline=yes` (systemd 252
    and later); an error in the unit fails the test, it is not taken for an old systemd."""
    need_command("systemd-analyze", "systemd")
    usage = subprocess.run(
        ["systemd-analyze", "security", "--help"], capture_output=True, text=True, timeout=60
    )
    if "--offline" not in usage.stdout:
        unavailable("needs systemd-analyze security --offline (systemd 252 or later)")
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert found is not None, result.stdout
    return float(found.group(1))


def test_exposure_of_the_door_does_not_rise_and_the_hub_is_as_tight() -> None:
    assert exposure(DOOR) <= DOOR_EXPOSURE
    assert exposure(HUB) <= DOOR_EXPOSURE


def test_install_script_installs_both_units_and_says_how_to_enable_them() -> None:
    text = INSTALL.read_text()
    assert "edge-app-hub.service" in text
    assert re.search(r"systemctl enable .*\$HUB_SERVICE", text)
    assert re.search(r"systemctl disable --now .*\$HUB_SERVICE", text)
