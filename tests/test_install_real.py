"""systemd/install.sh run for real, then the README's steps as the service user.

CI runs as root on Debian 12, the base of Raspberry Pi OS Bookworm: the installer creates
the user, the folders and the venv there as on a Pi, with /usr/bin/python3 (a Pi has no
other). systemd is not running in CI, so the units are installed but not started; the door
is started by hand as the service user instead, on the demo clip with the mock relay, as
`systemctl start` would run it. The test then upgrades in place, uninstalls (keeping the
data) and purges. tests/test_install_script.py checks the rest of what the installer
decides (accounts it refuses, units it leaves alone, failures) under a fake root.

It changes the machine (a system user, /etc/edge-app, /opt/edge-app, /var/lib/edge-app), so
it runs only under CI (`CI=1`, set by .ci/run), as root, and never where an install exists.
Elsewhere it skips and says why. tests/test_install_config.py checks the config it writes
(`install.sh --print-config`) on every run.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_app.paths import REPO_ROOT

INSTALL = REPO_ROOT / "systemd" / "install.sh"
DEMO = REPO_ROOT / "demo"
USER = "edge-app"
CONF, STATE, PREFIX, LINK = (
    Path("/etc/edge-app"),
    Path("/var/lib/edge-app"),
    Path("/opt/edge-app"),
    Path("/usr/local/bin/edge-app"),
)
# A Pi's PATH: python3 is Debian's, not a developer's pyenv or conda one (which the service
# user could not run from root's home). pip's own settings and any proxy pass through, as
# they would for `sudo systemd/install.sh` (pip reads root's pip.conf through HOME).
SYSTEM_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    **{
        key: value
        for key, value in os.environ.items()
        if key.startswith("PIP_") or key.lower() in ("http_proxy", "https_proxy", "no_proxy")
    },
}


def _why_not() -> str | None:
    if not os.environ.get("CI"):
        return "installs system-wide (a user, /etc, /opt, /var/lib): runs under CI only"
    if os.geteuid() != 0:
        return "CI runs as root; the installer needs root"
    present = [str(p) for p in (CONF, STATE, PREFIX, LINK) if p.exists() or p.is_symlink()]
    if present:
        return f"an edge-app install is already here ({', '.join(present)}): not touched"
    for tool in ("runuser", "python3"):
        if shutil.which(tool, path=SYSTEM_ENV["PATH"]) is None:
            return f"no {tool} on {SYSTEM_ENV['PATH']}"
    venv = subprocess.run(
        ["/usr/bin/python3", "-c", "import ensurepip, venv"], capture_output=True, env=SYSTEM_ENV
    )
    if venv.returncode != 0:
        return "Debian's python3 has no venv (apt install python3-venv)"
    return None


@pytest.fixture
def installer() -> Iterator[None]:
    reason = _why_not()
    if reason is not None:
        if os.environ.get("CI") and os.geteuid() == 0:
            pytest.fail(f"CI: {reason}")
        pytest.skip(reason)
    try:
        yield
    finally:  # whatever failed, leave the machine as it was
        _install("--uninstall", "--purge", check=False)


def _install(*options: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["sh", str(INSTALL), "--no-apt", *options],
        capture_output=True,
        text=True,
        env=SYSTEM_ENV,
        timeout=900,
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def _as_service(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", USER, "--", str(LINK), *argv],
        capture_output=True,
        text=True,
        env=SYSTEM_ENV,
        cwd="/",
        timeout=timeout,
    )


def _mode_and_owner(path: Path) -> tuple[int, str, str]:
    info = path.stat()
    return (
        stat.S_IMODE(info.st_mode),
        pwd.getpwuid(info.st_uid).pw_name,
        grp.getgrgid(info.st_gid).gr_name,
    )


def _build_leftovers() -> dict[str, int]:
    """What pip leaves where it builds (build/, *.egg-info) in the checkout, with mtimes."""
    found = [REPO_ROOT / "build", *REPO_ROOT.glob("*.egg-info")]
    return {
        str(path): path.stat().st_mtime_ns
        for top in found
        for path in [top, *top.rglob("*")]
        if path.exists()
    }


def _copy_as_service(photo: Path, folder: Path) -> None:
    """The hint's `sudo -u edge-app tee DEST < SRC`: root reads, the service user writes."""
    with photo.open("rb") as source:
        subprocess.run(
            ["runuser", "-u", USER, "--", "tee", str(folder / photo.name)],
            stdin=source,
            stdout=subprocess.DEVNULL,
            env=SYSTEM_ENV,
            cwd="/",
            check=True,
            timeout=60,
        )


@pytest.mark.slow
@pytest.mark.usefixtures("installer")
def test_install_enrol_run_upgrade_and_remove_as_on_a_pi() -> None:
    leftovers = _build_leftovers()
    first = _install()
    assert "edge-app install: done. Next:" in first.stdout
    # pip built from a temporary copy: nothing new or rewritten in the checkout
    assert _build_leftovers() == leftovers
    # nothing enabled: the hint says how, for after wiring and enrolment
    assert "sudo systemctl enable --now edge-app.service" in first.stdout
    assert f"sudo -u {USER} mkdir -p -m 0700 {STATE}/photos/alice" in first.stdout
    assert f"sudo -u {USER} rm -r {STATE}/photos/alice" in first.stdout
    # the relay's polarity is named before the door is started (an active-low board)
    assert "active_high" in first.stdout.split("enable --now", 1)[0]
    assert _mode_and_owner(CONF) == (0o750, "root", USER)
    assert _mode_and_owner(CONF / "config.toml") == (0o640, "root", USER)
    assert _mode_and_owner(CONF / "unlock.key") == (0o600, USER, USER)
    assert _mode_and_owner(STATE) == (0o700, USER, USER)
    # The config is the example with every setting commented out: nothing pinned, the
    # defaults apply, and a default re-tuned by a later release reaches this door.
    written = (CONF / "config.toml").read_text()
    printed = subprocess.run(
        ["sh", str(INSTALL), "--print-config"], capture_output=True, text=True, check=True
    )
    assert written == printed.stdout
    example = tomllib.loads((REPO_ROOT / "config.example.toml").read_text())
    assert tomllib.loads(written) == {section: {} for section in example}
    assert (Path("/usr/share/edge-app/models") / "manifest.json").is_file()
    assert LINK.resolve() == (PREFIX / "venv" / "bin" / "edge-app").resolve()

    # The hint's enrolment: photos private to the service user, in its own folder, copied
    # by that user (root never writes into the folder the service user owns).
    photos = STATE / "photos" / "ricardo"
    for private in (photos.parent, photos):
        made = subprocess.run(
            ["runuser", "-u", USER, "--", "mkdir", "-p", "-m", "0700", str(private)],
            capture_output=True,
            text=True,
            env=SYSTEM_ENV,
            cwd="/",
        )
        assert made.returncode == 0, made.stderr
    for photo in sorted((DEMO / "enroll" / "Ricardo_Lagos").iterdir()):
        _copy_as_service(photo, photos)
    assert _mode_and_owner(photos.parent) == (0o700, USER, USER)
    assert _mode_and_owner(photos) == (0o700, USER, USER)
    enrolled = _as_service("enroll", "Ricardo", str(photos))
    assert enrolled.returncode == 0, enrolled.stderr
    assert "enrolled 'Ricardo': 3 new sample(s), 3 in total" in enrolled.stdout
    # the hint's last step: the photos go, the gallery keeps the embeddings
    removed = subprocess.run(
        ["runuser", "-u", USER, "--", "rm", "-r", str(photos)],
        capture_output=True,
        text=True,
        env=SYSTEM_ENV,
        cwd="/",
    )
    assert removed.returncode == 0, removed.stderr
    assert not photos.exists()
    assert _mode_and_owner(STATE / "gallery.db") == (0o600, USER, USER)

    doctor = _as_service("doctor", "--json")
    checks = {check["area"]: check for check in json.loads(doctor.stdout)}
    assert checks["config"]["status"] == "ok", checks["config"]
    assert checks["models"]["status"] == "ok", checks["models"]
    assert checks["gallery"]["status"] == "ok" and "mode 600" in checks["gallery"]["detail"]

    # The service's command line, by hand (no systemd here), on the demo clip with the mock
    # relay. /run/edge-app is systemd's to make, so the door runs without its socket.
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        clip = Path(folder) / "door.mp4"
        shutil.copy(DEMO / "door.mp4", clip)
        os.chmod(clip, 0o644)
        door = _as_service("run", "--source", str(clip), "--gpio", "mock", "--events", "-")
    assert door.returncode == 0, door.stderr
    assert "Traceback" not in door.stderr
    assert '"type": "recognized", "name": "Ricardo"' in door.stdout
    assert "relay released" in door.stderr

    # An upgrade in place keeps the config, the key and the gallery, gives a secret its
    # owner and mode back, says how to compare the config with the new example, and does
    # not print the first install's steps again.
    key = (CONF / "unlock.key").read_bytes()
    # A kept config the new program refuses stops the upgrade before anything restarts.
    program = (PREFIX / "venv").resolve()
    assert list((PREFIX / "venvs").iterdir()) == [program]
    (CONF / "config.toml").write_text(written.replace("# pin = 17", "pin = 99"))
    refused = _install(check=False)
    assert refused.returncode != 0
    assert "gpio.pin: 99 is out of range" in refused.stderr
    assert "config.toml is not valid for this release" in refused.stderr
    # the program checked the config from its own venv, removed with it: the door keeps its
    assert (PREFIX / "venv").resolve() == program
    assert list((PREFIX / "venvs").iterdir()) == [program]
    (CONF / "config.toml").write_text(written.replace("# pin = 17", "pin = 27"))
    os.chmod(CONF / "config.toml", 0o644)
    again = _install()
    assert f"{CONF / 'config.toml'}: valid; the door would start with it" in again.stdout
    upgraded = (PREFIX / "venv").resolve()
    assert upgraded != program and list((PREFIX / "venvs").iterdir()) == [upgraded]
    assert f"kept existing {CONF / 'config.toml'}" in again.stdout
    assert f"diff {CONF / 'config.toml'} {REPO_ROOT}/config.example.toml" in again.stdout
    assert "pin = 27" in (CONF / "config.toml").read_text().splitlines()
    assert "upgraded in place" in again.stdout and "Next:" not in again.stdout
    assert f"fixed the owner and mode of {CONF / 'config.toml'}" in again.stdout
    assert _mode_and_owner(CONF / "config.toml") == (0o640, "root", USER)
    assert (CONF / "unlock.key").read_bytes() == key
    assert _build_leftovers() == leftovers
    listed = _as_service("list")
    assert listed.returncode == 0 and "Ricardo" in listed.stdout

    # Uninstall keeps the biometric data; --purge deletes it and the user.
    _install("--uninstall")
    assert not PREFIX.exists() and not LINK.is_symlink()
    assert (STATE / "gallery.db").is_file() and (CONF / "config.toml").is_file()
    _install("--uninstall", "--purge")
    assert not STATE.exists() and not CONF.exists()
    assert subprocess.run(["id", USER], capture_output=True).returncode != 0
