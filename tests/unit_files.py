"""Reading systemd unit files in tests: each key's values in one section."""

from __future__ import annotations

from pathlib import Path


def directives(unit: Path, section: str) -> dict[str, list[str]]:
    """Each key's values in order (systemd allows repeated keys such as DeviceAllow)."""
    found: dict[str, list[str]] = {}
    current = None
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found
