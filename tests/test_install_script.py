"""systemd/install.sh under a fake root, with the system's tools stubbed: fast, every run.

Each test copies the installer into a small fake checkout with every absolute path it
writes (/etc, /opt, /var/lib, /usr/share, /usr/local, /run/systemd, /proc) moved under a
fake root, and puts stubs first on PATH for the commands that change the machine or ask it
about accounts: apt-get, groupadd, useradd, usermod, userdel, getent (answered from a fake
passwd and group), systemctl, udevadm and python3 (whose `-m venv` makes a venv whose pip
records what it was given; anything else is the real python3). A rewritten script that
still names a real system path is refused before it runs. The service user is the existing
system account `daemon`, so that the real install and chown can give files to it; the fake
passwd decides what the installer believes about that account.

Needs root (the installer refuses to run otherwise and chowns to the service user); skipped
with the reason elsewhere. EDGE_APP_INSTALL_SH runs these tests against another copy of
the script (e.g. `git show HEAD:systemd/install.sh` saved to a scratch file).
"""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from needs import unavailable

from edge_app.paths import REPO_ROOT

INSTALL = Path(os.environ.get("EDGE_APP_INSTALL_SH", REPO_ROOT / "systemd" / "install.sh"))
USER = "daemon"  # a real system account stands for edge-app
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
LOCK = "/run/edge-app-install.lock"  # the lock every run of the installer holds
# Absolute paths of the real machine that must not survive the rewriting (outside comments).
REAL_PATH = re.compile(r"(?<![\w./}$-])/(etc|opt|var|usr/share|usr/local|run|proc|home|root)\b")

STUBS = {
    "apt-get": 'echo "apt-get $*" >>"$STUBLOG"\n',
    "udevadm": 'echo "udevadm $*" >>"$STUBLOG"\n',
    "usermod": 'echo "usermod $*" >>"$STUBLOG"\n',
    # `runuser -u USER -- PYTHON -c "import ..."`: the installer's check that the service user
    # can run the venv (STUB_RUNUSER_FAIL: it cannot, as with a pyenv python3 in root's home).
    # `runuser -u USER -- EDGE-APP run --check-config ... --installed-models DIR`: its check
    # of a kept config with the staged models, whose facenet.tflite it logs
    # (STUB_CONFIG_INVALID: the new program refuses it, as `edge-app run --check-config` does).
    # STUB_IMPORT_FAIL=MODULE: the venv runs, but MODULE does not import, with Python's words.
    "runuser": (
        'echo "runuser $*" >>"$STUBLOG"\n'
        'if [ -n "${STUB_RUNUSER_FAIL:-}" ]; then echo "Permission denied" >&2; exit 126; fi\n'
        'if [ -n "${STUB_IMPORT_FAIL:-}" ]; then\n'
        'case "$*" in *" -c import "*"$STUB_IMPORT_FAIL"*)\n'
        '    printf "Traceback (most recent call last):\\n  File \\"<string>\\", line 1\\n" >&2\n'
        "    echo \"ModuleNotFoundError: No module named '$STUB_IMPORT_FAIL'\" >&2; exit 1 ;;\n"
        "esac; fi\n"
        "for last; do :; done\n"
        'case "$*" in *--installed-models*)\n'
        '    echo "checked models: $(cat "$last/facenet.tflite")" >>"$STUBLOG" ;; esac\n'
        'case "$*" in *--check-config*) if [ -n "${STUB_CONFIG_INVALID:-}" ]; then\n'
        '    echo "ERROR config.toml: 1 problem(s): gpio.pin: 99 is out of range" >&2; exit 2\n'
        "fi ;; esac\n"
    ),
    "systemctl": (
        'echo "systemctl $*" >>"$STUBLOG"\n'
        'if [ "$1" = is-enabled ]; then echo "${STUB_ENABLED:-disabled}"; fi\n'
        # STUB_RESTART_FAIL: the new release does not start (its unit fails at once).
        'if [ "$1" = try-restart ] && [ -n "${STUB_RESTART_FAIL:-}" ]; then exit 1; fi\n'
    ),
    "getent": (
        'line=$(grep "^$2:" "$FAKE_DB/$1" 2>/dev/null | head -n 1)\n'
        '[ -n "$line" ] || exit 2\n'
        'echo "$line"\n'
    ),
    "groupadd": 'echo "groupadd $*" >>"$STUBLOG"\nfor name; do :; done\n'
    'echo "$name:x:980:" >>"$FAKE_DB/group"\n',
    "useradd": (
        'echo "useradd $*" >>"$STUBLOG"\n'
        "home=/nonexistent shell=/bin/sh group=no\n"
        "while [ $# -gt 1 ]; do\n"
        "    case $1 in\n"
        "        --home-dir) home=$2; shift ;;\n"
        "        --shell) shell=$2; shift ;;\n"
        "        --comment | --gid | -g) shift ;;\n"
        "        --user-group | -U) group=yes ;;\n"
        "    esac\n"
        "    shift\n"
        "done\n"
        'echo "$1:x:990:990::$home:$shell" >>"$FAKE_DB/passwd"\n'
        'if [ $group = yes ]; then echo "$1:x:990:" >>"$FAKE_DB/group"; fi\n'
    ),
    "userdel": (
        'echo "userdel $*" >>"$STUBLOG"\n'
        'grep -v "^$1:" "$FAKE_DB/passwd" >"$FAKE_DB/passwd.new" || true\n'
        'mv "$FAKE_DB/passwd.new" "$FAKE_DB/passwd"\n'
    ),
    # `python3 -m venv [--system-site-packages] DIR`: a venv whose pip is the stub below.
    # Anything else runs the real python3 (the installer reads a venv's lgpio version with it).
    "python3": (
        'echo "python3 $*" >>"$STUBLOG"\n'
        f'if [ "$1" != -m ]; then PATH={SYSTEM_PATH} exec python3 "$@"; fi\n'
        "for dir; do :; done\n"
        'mkdir -p "$dir/bin"\n'
        'printf "#!/bin/sh\\nexit 0\\n" >"$dir/bin/python"\n'
        'cp "$(dirname "$0")/pip.venv" "$dir/bin/pip"\n'
        'chmod +x "$dir/bin/python" "$dir/bin/pip"\n'
    ),
    # A venv's pip: records the folder it installs from (and what is in it), then builds in
    # it as the real one does (build/, *.egg-info) and puts the program into the venv.
    # `lgpio` or `lgpio==VERSION`: a PyPI offering the versions in STUB_PYPI_LGPIO (the newest
    # last), installed as pip does (lib/python3.11/site-packages/lgpio-VERSION.dist-info);
    # STUB_SYSTEM_LGPIO=VERSION: apt's lgpio on the system path, which a venv made with
    # --system-site-packages sees, so pip counts it as installed unless told
    # --force-reinstall; STUB_PIP_NOTHING: pip ends without error and installs nothing.
    "pip.venv": (
        'echo "pip $*" >>"$STUBLOG"\n'
        'if [ -n "${STUB_PIP_FAIL:-}" ]; then echo "pip: simulated failure" >&2; exit 1; fi\n'
        "for src; do :; done\n"
        "case $src in lgpio | lgpio==*)\n"
        "    want=${src#lgpio}; want=${want#==}; pypi=${STUB_PYPI_LGPIO:-0.2.0.0 0.2.2.0}\n"
        '    if [ -n "${STUB_SYSTEM_LGPIO:-}" ]; then case "$*" in *--force-reinstall*) ;; *)\n'
        '        if [ -z "$want" ] || [ "$want" = "$STUB_SYSTEM_LGPIO" ]; then exit 0; fi ;;\n'
        "    esac; fi\n"
        '    if [ -z "$want" ]; then for want in $pypi; do :; done; fi\n'
        '    case " $pypi " in *" $want "*) ;; *)\n'
        '        echo "ERROR: No matching distribution found for $src" >&2; exit 1 ;; esac\n'
        '    if [ -n "${STUB_PIP_NOTHING:-}" ]; then exit 0; fi\n'
        '    info="$(dirname "$0")/../lib/python3.11/site-packages/lgpio-$want.dist-info"\n'
        '    mkdir -p "$info"\n'
        '    printf "Metadata-Version: 2.1\\nName: lgpio\\nVersion: %s\\n" "$want" \\\n'
        '        >"$info/METADATA"\n'
        "    exit 0 ;;\n"
        "esac\n"
        'if [ -d "$src" ]; then\n'
        '    echo "$src" >"$PIP_SEEN/src"\n'
        '    ls -A "$src" >"$PIP_SEEN/top"\n'
        '    ls -A "$src/edge_app" >"$PIP_SEEN/package"\n'
        '    mkdir -p "$src/build/lib" "$src/edge_door.egg-info"\n'
        '    touch "$src/build/lib/pip-was-here" "$src/edge_door.egg-info/pip-was-here"\n'
        '    printf "#!/bin/sh\\nexit 0\\n" >"$(dirname "$0")/edge-app"\n'
        '    chmod +x "$(dirname "$0")/edge-app"\n'
        "fi\n"
    ),
}


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "the installer runs as root only, and chowns files to a system account"
    if not INSTALL.is_file():
        return f"no installer at {INSTALL}"
    try:
        pwd.getpwnam(USER)
        grp.getgrnam(USER)
    except KeyError:
        return f"no '{USER}' account and group here to stand for the service user"
    for tool in ("sh", "stat", "mktemp", "install", "od", "python3"):
        if shutil.which(tool, path=SYSTEM_PATH) is None:
            return f"no {tool} on {SYSTEM_PATH}"
    return None


@dataclass
class Fake:
    """A fake root, a fake checkout holding the rewritten installer, and the stubs' state."""

    root: Path
    repo: Path
    stubs: Path
    state: Path

    def path(self, real: str) -> Path:
        return self.root / real.lstrip("/")

    @property
    def conf(self) -> Path:
        return self.path("/etc/edge-app")

    @property
    def state_dir(self) -> Path:
        return self.path("/var/lib/edge-app")

    @property
    def venv(self) -> Path:
        """The link to the venv in use."""
        return self.path("/opt/edge-app/venv")

    def venvs(self) -> list[Path]:
        """The venvs built by the installer, in use or not."""
        folder = self.path("/opt/edge-app/venvs")
        return sorted(folder.iterdir()) if folder.is_dir() else []

    @property
    def models(self) -> Path:
        return self.path("/usr/share/edge-app/models")

    @property
    def unit(self) -> Path:
        return self.path("/etc/systemd/system/edge-app.service")

    @property
    def hub_unit(self) -> Path:
        return self.path("/etc/systemd/system/edge-app-hub.service")

    @property
    def db(self) -> Path:
        return self.state / "db"

    def log(self) -> list[str]:
        log = self.state / "stub.log"
        return log.read_text().splitlines() if log.exists() else []

    def clear_log(self) -> None:
        (self.state / "stub.log").write_text("")

    def set_passwd(self, *lines: str) -> None:
        (self.db / "passwd").write_text("".join(line + "\n" for line in lines))

    def set_group(self, *lines: str) -> None:
        (self.db / "group").write_text("".join(line + "\n" for line in lines))

    def run(
        self,
        *options: str,
        extra_path: Path | None = None,
        env: dict[str, str] | None = None,
        umask: int | None = None,
        repo: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        path = f"{self.stubs}:{SYSTEM_PATH}"
        if extra_path is not None:
            path = f"{extra_path}:{path}"
        environment = {
            "PATH": path,
            "LANG": "C.UTF-8",
            "HOME": str(self.state),
            "STUBLOG": str(self.state / "stub.log"),
            "FAKE_DB": str(self.db),
            "PIP_SEEN": str(self.state / "pip"),
            **(env or {}),
        }
        return subprocess.run(
            ["sh", str((repo or self.repo) / "systemd" / "install.sh"), *options],
            capture_output=True,
            text=True,
            env=environment,
            cwd=self.state,
            timeout=60,
            preexec_fn=None if umask is None else (lambda: os.umask(umask)),
        )

    def install(
        self, *options: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = self.run(*options, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        return done


def rewrite(script: str, root: Path) -> str:
    """The installer with its system paths under root and the service user replaced."""
    lines = []
    for line in script.splitlines():
        line = re.sub(r"^SERVICE_USER=edge-app$", f"SERVICE_USER={USER}", line)
        line = re.sub(r"^([A-Z_]+)=/(etc|opt|var|usr|run)/", rf"\1={root}/\2/", line)
        line = line.replace("/run/systemd/system", f"{root}/run/systemd/system")
        line = line.replace("/proc/device-tree/model", f"{root}/proc/device-tree/model")
        lines.append(line)
    text = "\n".join(lines) + "\n"
    assert f"SERVICE_USER={USER}\n" in text
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0] if line.lstrip().startswith("#") else line
        assert not REAL_PATH.search(code), f"line {number} still names a real path: {line}"
    return text


def make_repo(repo: Path, installer: str) -> None:
    files = {
        "models/tflite/manifest.json": '{"models": 1}\n',
        "models/tflite/facenet.tflite": "model set 1\n",
        "config.example.toml": "[gpio]\npin = 17\n",
        "docs/DAEMON.md": "daemon\n",
        "docs/WIRING.md": "wiring\n",
        "docs/HOME_ASSISTANT.md": "home assistant\n",
        "docs/GALLERY.md": "gallery\n",  # a page the installed ones link to
        "systemd/99-coral-edgetpu.rules": "# rule\n",
        "systemd/edge-app.service": "[Unit]\nDescription=door\n",
        "systemd/edge-app-hub.service": "[Unit]\nDescription=hub\n",
        "pyproject.toml": "[project]\nname = 'edge-door'\n",
        "edge_app/__init__.py": "",
        "edge_app/local_change.py": "# not committed: must be installed too\n",
        # What a user's checkout carries besides the sources:
        ".git/HEAD": "ref: refs/heads/main\n",
        ".venv/pyvenv.cfg": "home = /usr/bin\n",
        "build/lib/edge_app/deleted_module.py": "# stale: deleted from the sources since\n",
        "edge_door.egg-info/PKG-INFO": "Name: edge-door\n",
    }
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    (repo / "systemd" / "install.sh").write_text(installer)


@pytest.fixture
def fake() -> Iterator[Fake]:
    reason = _why_not()
    if reason is not None:
        unavailable(reason)
    # Not under pytest's tmp_path: its parents are 0700, and the service user must reach
    # the fake state folder when a test runs the enrolment steps as that user.
    top = Path(tempfile.mkdtemp(prefix="edge-app-install-"))
    try:
        os.chmod(top, 0o755)
        fake = Fake(top / "root", top / "checkout", top / "stubs", top / "state")
        for folder in (fake.root, fake.repo, fake.stubs, fake.state, fake.state / "db"):
            folder.mkdir(mode=0o755)
        (fake.state / "pip").mkdir()
        for name, body in STUBS.items():
            (fake.stubs / name).write_text("#!/bin/sh\n" + body)
            (fake.stubs / name).chmod(0o755)
        for system in ("/usr/local/bin", "/run/systemd/system"):  # there on every system
            fake.path(system).mkdir(parents=True)
        fake.set_passwd()
        fake.set_group()
        make_repo(fake.repo, rewrite(INSTALL.read_text(), fake.root))
        yield fake
    finally:
        shutil.rmtree(top)


def mode_owner(path: Path) -> tuple[int, str, str]:
    info = path.stat()
    owner = pwd.getpwuid(info.st_uid).pw_name
    return stat.S_IMODE(info.st_mode), owner, grp.getgrgid(info.st_gid).gr_name


def failing_stub(fake: Fake, name: str, message: str, status: int) -> Path:
    folder = fake.state / f"failing-{name}"
    folder.mkdir()
    (folder / name).write_text(f'#!/bin/sh\necho "{message}" >&2\nexit {status}\n')
    (folder / name).chmod(0o755)
    return folder


def stray_files(fake: Fake) -> list[Path]:
    """Anything the installer made in the fake root (the folders the fake starts with aside)."""
    # The runs' lock, in /run (a tmpfs), is no change of the machine.
    lock = fake.path(LOCK)
    made = [p for p in fake.root.rglob("*") if not p.is_dir() and p != lock]
    made += [fake.conf, fake.state_dir, fake.path("/opt/edge-app")]
    return [p for p in made if p.exists() or p.is_symlink()]


# --- 1. the enrolment steps never have root write into the service user's folder ---------


def _enrolment_steps(stdout: str) -> list[str]:
    """The hint's commands that put the photos in place (not the enrol command itself)."""
    hint = stdout.split("2. enrol", 1)[1].split("(the gallery keeps", 1)[0]
    lines = [line.strip() for line in hint.splitlines()]
    return [line for line in lines if line.startswith(("sudo ", "for ")) and " enroll " not in line]


def test_enrolment_hint_copies_the_photos_as_the_service_user(fake: Fake) -> None:
    done = fake.install()
    steps = _enrolment_steps(done.stdout)
    assert steps, done.stdout
    state = str(fake.state_dir)
    assert f"sudo -u {USER} mkdir -p -m 0700 {state}/photos/alice" in steps
    for step in steps:
        # every command runs as the service user: root never writes into its folder
        assert step.count("sudo ") == step.count(f"sudo -u {USER} "), step
        assert "chown" not in step and "install " not in step, step


def _run_steps(fake: Fake, steps: list[str], photos: Path) -> subprocess.CompletedProcess[str]:
    """Runs the hint's steps in a private folder of root's, with `sudo -u USER` as runuser."""
    sudo = fake.state / "sudo-bin"
    sudo.mkdir(exist_ok=True)
    (sudo / "sudo").write_text(
        '#!/bin/sh\nif [ "$1" = -u ]; then user=$2; shift 2; exec runuser -u "$user" -- "$@"; fi\n'
        'exec "$@"\n'
    )
    (sudo / "sudo").chmod(0o755)
    return subprocess.run(
        ["sh", "-c", "\n".join(steps)],
        cwd=photos,
        env={"PATH": f"{sudo}:{SYSTEM_PATH}", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(shutil.which("runuser") is None, reason="no runuser (util-linux)")
def test_enrolment_steps_work_and_a_planted_link_gains_the_service_user_nothing(
    fake: Fake,
) -> None:
    done = fake.install()
    steps = _enrolment_steps(done.stdout)
    photos = fake.state / "home"  # like a login's home folder: private to its owner
    photos.mkdir(mode=0o700)
    (photos / "alice-1.jpg").write_bytes(b"\xff\xd8 a photo")
    (photos / "alice-1.jpg").chmod(0o600)

    # The service user (or whoever runs as it) owns the state folder and can plant a link
    # where the steps write. Followed by root, it would hand a root-owned folder over.
    alice = fake.state_dir / "photos" / "alice"
    victim = fake.state / "victim"
    victim.mkdir(mode=0o700)
    runuser = ["runuser", "-u", USER, "--"]
    subprocess.run([*runuser, "mkdir", str(fake.state_dir / "photos")], check=True)
    subprocess.run([*runuser, "ln", "-s", str(victim), str(alice)], check=True)
    _run_steps(fake, steps, photos)
    assert mode_owner(victim) == (0o700, "root", "root")
    assert list(victim.iterdir()) == []

    # Without the link, the steps put a private copy in place.
    subprocess.run([*runuser, "rm", "-r", str(fake.state_dir / "photos")], check=True)
    copied = _run_steps(fake, steps, photos)
    assert copied.returncode == 0, copied.stderr
    assert mode_owner(alice) == (0o700, USER, USER)
    assert (alice / "alice-1.jpg").read_bytes() == b"\xff\xd8 a photo"
    assert mode_owner(alice / "alice-1.jpg")[1] == USER


def test_docs_enrol_without_root_writing_into_the_state_folder() -> None:
    for name in ("README.md", "docs/INSTALL.md", "docs/DAEMON.md"):
        text = (REPO_ROOT / name).read_text()
        for unsafe in ("install -d -o edge-app", "install -o edge-app", "chown edge-app"):
            assert unsafe not in text, f"{name}: {unsafe}"
    assert (
        "sudo -u edge-app mkdir -p -m 0700 /var/lib/edge-app/photos/alice"
        in (REPO_ROOT / "docs/INSTALL.md").read_text()
    )


# --- 2. pip builds from a clean temporary copy, not in the user's checkout ---------------


def test_pip_installs_a_clean_copy_of_the_checkout_and_removes_it(fake: Fake) -> None:
    fake.install()
    seen = fake.state / "pip"
    src = Path((seen / "src").read_text().strip())
    assert src != fake.repo
    assert not src.exists(), "the temporary copy is removed afterwards"
    top = set((seen / "top").read_text().split())
    assert {"pyproject.toml", "edge_app", "models"} <= top
    assert not top & {".git", ".venv", "build", "edge_door.egg-info"}, top
    assert "local_change.py" in (seen / "package").read_text().split()  # as checked out
    # nothing written into the checkout: no root-owned build/ or egg-info left there
    assert not list(fake.repo.rglob("pip-was-here"))
    assert sorted(p.name for p in (fake.repo / "build" / "lib" / "edge_app").iterdir()) == [
        "deleted_module.py"
    ]


# --- 3. a failed upgrade at pip leaves the previous models with the previous program -----


def test_upgrade_that_fails_at_pip_keeps_the_old_models_and_says_so(fake: Fake) -> None:
    fake.install()
    (fake.repo / "models" / "tflite" / "facenet.tflite").write_text("model set 2\n")
    program = fake.venv.resolve()
    done = fake.run(env={"STUB_PIP_FAIL": "1"})
    assert done.returncode != 0
    assert (fake.models / "facenet.tflite").read_text() == "model set 1\n"
    assert "FAILED while installing edge-app into a new venv" in done.stderr
    assert "the installed program, config, units and models are as they were" in done.stderr
    assert fake.venv.resolve() == program and fake.venvs() == [program]  # the half venv: gone
    done = fake.install()
    assert (fake.models / "facenet.tflite").read_text() == "model set 2\n"
    assert not (fake.models.parent / "models.new").exists()
    assert not (fake.models.parent / "models.old").exists()


def test_models_a_cut_short_swap_left_as_models_old_are_put_back_not_removed(
    fake: Fake,
) -> None:
    """A review: a run cut short between the swap's two renames (models -> models.old, then
    models.new -> models) left the installed models only as models.old, and the next run
    removed them first thing; failing after that, it left the door with no models while
    saying they were as they were."""
    fake.install()
    fake.models.rename(f"{fake.models}.old")  # the first rename done, the second not
    (fake.repo / "models" / "tflite" / "facenet.tflite").write_text("model set 2\n")
    done = fake.run(env={"STUB_CONFIG_INVALID": "1"})
    assert done.returncode != 0 and "put back" in done.stdout, done.stdout + done.stderr
    assert (fake.models / "facenet.tflite").read_text() == "model set 1\n"
    assert not Path(f"{fake.models}.old").exists()
    fake.install()
    assert (fake.models / "facenet.tflite").read_text() == "model set 2\n"


def test_models_left_as_models_old_are_put_back_even_when_pip_then_fails(fake: Fake) -> None:
    """A review of the put-back above: it ran only after pip, so a run cut short mid-swap
    and then a run failing at pip (no network) still left the door with no models while
    saying "the installed program, config, units and models are as they were" (and
    INSTALL.md says the next run puts them back before anything else)."""
    fake.install()
    fake.models.rename(f"{fake.models}.old")  # the first rename done, the second not
    done = fake.run(env={"STUB_PIP_FAIL": "1"})
    assert done.returncode != 0
    assert "the installed program, config, units and models are as they were" in done.stderr
    assert (fake.models / "facenet.tflite").read_text() == "model set 1\n", done.stdout
    assert not Path(f"{fake.models}.old").exists()


def test_a_venv_the_service_user_cannot_run_stops_the_install_and_says_how(
    fake: Fake,
) -> None:
    """Found by an audit: run from a root shell whose python3 is pyenv's (in root's home,
    mode 700), the installer made the venv from it and said it succeeded; the units would
    have failed to start, for ever."""
    done = fake.run(env={"STUB_RUNUSER_FAIL": "1"})
    assert done.returncode != 0
    assert f"{USER} cannot import edge_app with" in done.stderr
    assert "sudo env PATH=/usr/sbin:/usr/bin:/sbin:/bin" in done.stderr
    assert "FAILED while checking that" in done.stderr
    done = fake.install()  # the check passes: the install completes
    assert any(line.startswith(f"runuser -u {USER} -- ") for line in fake.log())


def test_a_kept_config_the_new_program_refuses_stops_the_upgrade_before_any_restart(
    fake: Fake,
) -> None:
    """An upgrade whose kept config the new release refuses restarted the door into a loop of
    failed starts (every 3 s, locked). The new program checks the kept config with the new
    models, staged beside the installed ones, as the service user, before the units and
    models change or anything restarts."""
    done = fake.install()
    checks = [line for line in fake.log() if "--check-config" in line]
    assert checks == []  # a first install writes the config: nothing kept to check
    program = fake.venv.resolve()
    (fake.repo / "models" / "tflite" / "facenet.tflite").write_text("model set 2\n")
    (fake.repo / "systemd" / "edge-app.service").write_text("[Unit]\nDescription=door 2\n")
    fake.clear_log()
    done = fake.run(env={"STUB_CONFIG_INVALID": "1"})
    assert done.returncode != 0
    assert "gpio.pin: 99 is out of range" in done.stderr  # the program's own words
    assert "config.toml is not valid for this release" in done.stderr
    assert "FAILED while checking the kept" in done.stderr
    assert (fake.models / "facenet.tflite").read_text() == "model set 1\n"
    assert fake.unit.read_text() == "[Unit]\nDescription=door\n"
    assert _systemctl(fake) == []  # nothing reloaded or restarted
    # checked by the new program, which is then removed: the door keeps the one it runs
    checks = [line for line in fake.log() if "--check-config" in line]
    assert len(checks) == 1
    staged = f"{fake.models}.new"
    assert re.fullmatch(
        f"runuser -u {USER} -- {re.escape(str(fake.path('/opt/edge-app/venvs')))}/[^/ ]+"
        f"/bin/edge-app run --check-config --config {re.escape(str(fake.conf))}/config.toml"
        f" --installed-models {re.escape(staged)}",
        checks[0],
    ), checks[0]
    assert "checked models: model set 2" in fake.log()  # the new models, staged
    assert not Path(staged).exists()  # removed with the new program
    assert fake.venv.resolve() == program and fake.venvs() == [program]
    fake.install()  # the config fixed: the upgrade completes
    assert (fake.models / "facenet.tflite").read_text() == "model set 2\n"
    assert "systemctl try-restart edge-app.service edge-app-hub.service" in _systemctl(fake)


def test_an_upgrade_builds_the_new_program_beside_the_running_one_then_switches(
    fake: Fake,
) -> None:
    """pip upgraded the venv the door and hub were running from, for the minutes it takes on
    a Pi: a module they imported late could come from the other release, and a refused
    upgrade left the new program in place. Now the new venv is built and checked beside the
    running one, then a link is switched in one rename just before the restart."""
    fake.install()
    assert fake.venv.is_symlink()
    first = fake.venv.resolve()
    assert fake.venvs() == [first] and (first / "bin" / "edge-app").is_file()
    assert mode_owner(first)[0] == 0o755  # the service user runs it
    fake.clear_log()
    done = fake.install()
    second = fake.venv.resolve()
    assert second != first and fake.venvs() == [second]  # the previous one removed
    assert (fake.path("/usr/local/bin/edge-app")).resolve() == second / "bin" / "edge-app"
    assert f"python3 -m venv --system-site-packages {second}" in fake.log()
    assert f"{fake.venv} is now {second}" in done.stdout
    # the switch comes after the checks and before the restart
    out = done.stdout
    assert out.index("is now") < out.index("models in")
    assert "systemctl try-restart edge-app.service edge-app-hub.service" in _systemctl(fake)


def test_a_venv_folder_left_by_an_older_installer_is_replaced_by_the_link(fake: Fake) -> None:
    older = fake.venv
    (older / "bin").mkdir(parents=True)
    (older / "bin" / "edge-app").write_text("#!/bin/sh\nexit 0\n")
    (older / "bin" / "edge-app").chmod(0o755)
    fake.install()
    assert fake.venv.is_symlink() and fake.venvs() == [fake.venv.resolve()]
    assert not fake.path("/opt/edge-app/venv.old").exists()
    assert not fake.path("/opt/edge-app/venv.new").is_symlink()


def test_an_older_installers_venv_a_cut_short_run_left_as_venv_old_is_put_back(
    fake: Fake,
) -> None:
    """A review: a run cut short between the two renames that replace an older installer's
    venv folder by the link (venv -> venv.old, then the link -> venv) left no venv at all.
    The next run took the door for one without lgpio of its own (plain Debian: the new
    venv could not drive the relay, and the door did not start again) and never removed
    venv.old. It is put back first, and then replaced as on any upgrade."""
    older = fake.venv
    (older / "bin").mkdir(parents=True)
    (older / "bin" / "edge-app").write_text("#!/bin/sh\nexit 0\n")
    (older / "bin" / "edge-app").chmod(0o755)
    _pip_lgpio(older, "0.2.0.0")
    older.rename(fake.path("/opt/edge-app/venv.old"))  # the first rename done, not the second
    done = fake.install()
    assert "put back" in done.stdout
    assert fake.venv.is_symlink() and fake.venvs() == [fake.venv.resolve()]
    assert _own_lgpio(fake.venv) == ["0.2.0.0"]
    assert not fake.path("/opt/edge-app/venv.old").exists()


def test_venvs_of_an_interrupted_install_are_removed_and_a_hand_made_link_target_kept(
    fake: Fake,
) -> None:
    fake.install()
    venvs = fake.path("/opt/edge-app/venvs")
    (venvs / "20261201T000000Z.abcdef" / "bin").mkdir(parents=True)  # a power cut during pip
    fake.install()
    assert fake.venvs() == [fake.venv.resolve()]
    # A venv the operator made and linked by hand is theirs: used, never deleted.
    own = fake.state / "own-venv"
    (own / "bin").mkdir(parents=True)
    (own / "bin" / "edge-app").write_text("#!/bin/sh\nexit 0\n")
    fake.venv.unlink()
    fake.venv.symlink_to(own)
    fake.install()
    assert (own / "bin" / "edge-app").is_file()
    assert fake.venv.resolve().parent == venvs and fake.venvs() == [fake.venv.resolve()]


# --- 4. --purge alone ---------------------------------------------------------------------


def test_purge_without_uninstall_is_refused_and_changes_nothing(fake: Fake) -> None:
    done = fake.run("--purge")
    assert done.returncode == 2
    assert "--purge only goes with --uninstall" in done.stderr
    assert fake.log() == [] and stray_files(fake) == []


# --- 5 and 10. the installer enables nothing and leaves the admin's choice alone ---------


def _systemctl(fake: Fake) -> list[str]:
    return [line for line in fake.log() if line.startswith("systemctl ")]


def test_first_install_enables_and_starts_nothing_and_says_how(fake: Fake) -> None:
    done = fake.install()
    for line in _systemctl(fake):
        verb = line.split()[1]
        assert verb not in ("enable", "start", "restart", "reenable", "unmask", "preset"), line
    assert "sudo systemctl enable --now edge-app.service" in done.stdout
    assert "sudo systemctl enable --now edge-app-hub.service" in done.stdout
    assert fake.unit.is_file() and fake.hub_unit.is_file()


def test_upgrade_keeps_enablement_and_a_masked_unit(fake: Fake) -> None:
    fake.install()
    fake.hub_unit.unlink()
    fake.hub_unit.symlink_to("/dev/null")  # systemctl mask edge-app-hub
    fake.clear_log()
    done = fake.install()
    assert fake.hub_unit.is_symlink() and os.readlink(fake.hub_unit) == "/dev/null"
    assert "edge-app-hub.service is masked" in done.stdout
    calls = _systemctl(fake)
    assert not [line for line in calls if line.split()[1] in ("enable", "start", "restart")]
    assert "systemctl try-restart edge-app.service" in calls  # the running door, as before
    assert fake.unit.read_text() == "[Unit]\nDescription=door\n"


# --- 6. an existing account of that name ---------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        f"{USER}:x:1000:1000:Someone:/home/{USER}:/bin/bash",  # a person's login
        f"{USER}:x:1001:1001::/var/lib/edge-app:/usr/sbin/nologin",  # not a system uid
        f"{USER}:x:120:120::/var/lib/edge-app:/bin/bash",  # a system uid with a shell
        f"{USER}:x:0:0::/root:/usr/sbin/nologin",  # root itself
    ],
)
def test_refuses_an_existing_account_that_is_not_a_system_account(fake: Fake, entry: str) -> None:
    fake.set_passwd(entry)
    fake.set_group(f"{USER}:x:1000:")
    done = fake.run()
    assert done.returncode != 0
    assert "is not a system account without a login shell" in done.stderr
    assert "nothing changed" in done.stderr
    assert fake.log() == [] and stray_files(fake) == []


def test_adopts_an_existing_system_account(fake: Fake) -> None:
    fake.set_passwd(f"{USER}:x:120:120::/var/lib/edge-app:/usr/sbin/nologin")
    fake.set_group(f"{USER}:x:120:")
    fake.install()
    assert not [line for line in fake.log() if line.startswith("useradd")]
    assert f"usermod -a -G video,gpio,plugdev {USER}" in fake.log()


def test_an_existing_group_of_that_name_becomes_the_users_group(fake: Fake) -> None:
    fake.set_group(f"{USER}:x:120:")
    fake.install()
    (useradd,) = [line for line in fake.log() if line.startswith("useradd")]
    assert f"--gid {USER}" in useradd and "--user-group" not in useradd


def test_refuses_an_existing_group_with_other_members(fake: Fake) -> None:
    fake.set_group(f"{USER}:x:120:alice")
    done = fake.run()
    assert done.returncode != 0 and "nothing changed" in done.stderr
    assert fake.log() == [] and stray_files(fake) == []


def test_purge_deletes_only_the_account_the_installer_made(fake: Fake) -> None:
    fake.install()
    (useradd,) = [line for line in fake.log() if line.startswith("useradd")]
    state = fake.state_dir
    # Someone has since made the account a login: purge keeps it.
    fake.set_passwd(f"{USER}:x:990:990::{state}:/bin/bash")
    done = fake.install("--uninstall", "--purge")
    assert not [line for line in fake.log() if line.startswith("userdel")]
    assert f"kept the account {USER}" in done.stdout
    assert not fake.conf.exists() and not state.exists()
    # Untouched, it goes.
    fake.set_passwd(f"{USER}:x:990:990::{state}:/usr/sbin/nologin")
    fake.install()
    fake.install("--uninstall", "--purge")
    assert f"userdel {USER}" in fake.log()


# --- 7. the unlock key and the other secrets -----------------------------------------------


def _key_is_good(fake: Fake) -> bool:
    key = fake.conf / "unlock.key"
    return bool(re.fullmatch(r"[0-9a-f]{64}", key.read_text())) and mode_owner(key) == (
        0o600,
        USER,
        USER,
    )


def test_a_failing_od_leaves_no_empty_key(fake: Fake) -> None:
    od = failing_stub(fake, "od", "od: /dev/urandom: read error", 1)
    done = fake.run(extra_path=od)
    assert done.returncode != 0
    assert not (fake.conf / "unlock.key").exists()
    assert not list(fake.conf.glob(".unlock.key*"))
    fake.install()
    assert _key_is_good(fake)


def test_a_key_interrupted_before_its_chown_is_not_kept_root_owned(fake: Fake) -> None:
    chown = failing_stub(fake, "chown", "chown: interrupted", 130)
    done = fake.run(extra_path=chown)
    assert done.returncode != 0
    assert not (fake.conf / "unlock.key").exists()
    fake.install()
    assert _key_is_good(fake)


def test_an_empty_key_left_by_an_old_installer_is_replaced(fake: Fake) -> None:
    fake.install()
    key = fake.conf / "unlock.key"
    key.write_text("")
    done = fake.install()
    assert _key_is_good(fake)
    assert f"replaced the empty {key}" in done.stdout


def test_existing_secrets_get_their_owner_and_mode_back(fake: Fake) -> None:
    fake.install()
    key, config = fake.conf / "unlock.key", fake.conf / "config.toml"
    secret = key.read_text()
    os.chown(key, 0, 0)
    key.chmod(0o644)
    config.chmod(0o644)
    done = fake.install()
    assert key.read_text() == secret and _key_is_good(fake)
    assert mode_owner(config) == (0o640, "root", USER)
    assert f"fixed the owner and mode of {key}: was root:root 644" in done.stdout
    assert f"fixed the owner and mode of {config}: was root:{USER} 644" in done.stdout


# --- 8. --no-venv with no program ----------------------------------------------------------


def test_no_venv_on_a_fresh_machine_fails_and_changes_nothing(fake: Fake) -> None:
    done = fake.run("--no-venv")
    assert done.returncode != 0
    assert "--no-venv" in done.stderr and "no edge-app program" in done.stderr
    assert fake.log() == [] and stray_files(fake) == []
    fake.install()
    assert fake.install("--no-venv").returncode == 0


def test_no_venv_keeps_only_a_program_installed_from_these_files(fake: Fake) -> None:
    """Found by an audit: --no-venv installed the new units and models beside whatever
    program was there. A program older than the units' `relay_off --after-stop` exits 2 on
    that flag without driving any pin, so a kill mid-pulse left the strike open. Now the
    program is kept only when it was installed from this checkout's files."""
    fake.install()
    (fake.repo / "systemd" / "edge-app.service").write_text("[Unit]\nDescription=door 2\n")
    assert fake.install("--no-venv").returncode == 0  # units only: the program is these files
    (fake.repo / "edge_app" / "relay_off.py").write_text("# --after-stop\n")
    (fake.repo / "systemd" / "edge-app.service").write_text("[Unit]\nDescription=door 3\n")
    fake.clear_log()
    done = fake.run("--no-venv")
    assert done.returncode != 0
    assert "--no-venv keeps the installed program, but it was not installed from" in done.stderr
    assert "nothing changed" in done.stderr
    assert fake.log() == [] and fake.unit.read_text() == "[Unit]\nDescription=door 2\n"
    fake.install()  # without --no-venv: the new program, then --no-venv again is fine
    assert fake.install("--no-venv").returncode == 0
    (fake.venv / "edge-app-source.sha256").unlink()  # as an older installer left it
    assert "not installed from" in fake.run("--no-venv").stderr


def test_an_upgrade_whose_services_fail_to_restart_says_so_and_keeps_the_previous_program(
    fake: Fake,
) -> None:
    """Found by an audit: a release that did not start still ended "done: upgraded in place"
    with exit 0, and the previous program was deleted. Now the installer fails, names the
    journal, and keeps the previous program with the commands that go back to it."""
    fake.install()
    fake.state_dir.joinpath("gallery.db").write_text("")
    previous = fake.venv.resolve()
    (fake.repo / "models" / "tflite" / "facenet.tflite").write_text("model set 2\n")
    done = fake.run(env={"STUB_RESTART_FAIL": "1"})
    assert done.returncode != 0 and "upgraded in place" not in done.stdout
    assert "a service failed to restart on the new release: see journalctl" in done.stderr
    assert "FAILED while restarting the services on the new release" in done.stderr
    assert f"the previous program is kept in {previous}" in done.stderr
    assert _way_back(done)[:2] == [
        f"ln -sfn {previous} {fake.venv}.new",
        f"mv -T {fake.venv}.new {fake.venv}",
    ]
    assert previous.is_dir() and fake.venv.resolve() != previous
    assert len(fake.venvs()) == 2


def _way_back(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The commands a failed restart printed to go back, without `sudo` and the restart."""
    back = done.stderr.split("to go back to it,", 1)[1].split(" && sudo systemctl")[0]
    return [c.strip().removeprefix("sudo ") for c in back.replace("\n", " ").split("&&")]


def _program(fake: Fake) -> Path:
    """The program $VENV links to, a whole venv."""
    assert fake.venv.is_symlink() and (fake.venv / "bin" / "edge-app").is_file()
    return fake.venv.resolve()


def _whole_pair(fake: Fake) -> tuple[Path, str]:
    """The program $VENV links to and the models installed."""
    return _program(fake), (fake.models / "facenet.tflite").read_text()


def test_going_back_after_a_failed_restart_restores_the_previous_models_too(
    fake: Fake,
) -> None:
    """Found by a review: the previous models were deleted before the restart, so the way
    back the installer printed ran the previous program with the new release's models, the
    mix it otherwise never allows (a manifest or thresholds the older program reads
    otherwise, or refuses: the door stayed down). They are kept until the services run."""
    fake.install()
    fake.state_dir.joinpath("gallery.db").write_text("")
    previous = fake.venv.resolve()
    (fake.repo / "models" / "tflite" / "facenet.tflite").write_text("model set 2\n")
    done = fake.run(env={"STUB_RESTART_FAIL": "1"})
    assert done.returncode != 0
    commands = _way_back(done)
    assert len(commands) == 4, commands
    for command in commands:  # the way back, as printed
        subprocess.run(command, shell=True, check=True)
    assert _whole_pair(fake) == (previous, "model set 1\n")
    fake.install()  # run again once the cause is fixed: the new release, nothing left over
    assert (fake.models / "facenet.tflite").read_text() == "model set 2\n"
    assert sorted(p.name for p in fake.models.parent.iterdir()) == ["models"]
    assert fake.venvs() == [fake.venv.resolve()]
    assert sorted(p.name for p in fake.venv.parent.iterdir()) == ["venv", "venvs"]


def test_the_way_back_never_leaves_the_door_without_a_program(fake: Fake) -> None:
    """A review: the way back began with `ln -sfn PREVIOUS /opt/edge-app/venv`, which an ln
    that unlinks then links (busybox's, an older coreutils') carries out in two steps: a
    power cut between them left no /opt/edge-app/venv at all. It now links under another
    name and renames that over the link, as the installer's own switch does: cut short
    after any of its commands, the door has a whole program."""
    fake.install()
    previous = fake.venv.resolve()
    (fake.repo / "models" / "tflite" / "facenet.tflite").write_text("model set 2\n")
    done = fake.run(env={"STUB_RESTART_FAIL": "1"})
    assert done.returncode != 0
    commands = _way_back(done)
    for command in commands:
        assert not (command.startswith("ln ") and command.endswith(f" {fake.venv}")), command
        subprocess.run(command, shell=True, check=True)
        _program(fake)  # a power cut here: the door still has a program
    assert _whole_pair(fake) == (previous, "model set 1\n")


def test_a_rerun_that_fails_to_restart_again_keeps_the_first_way_back(fake: Fake) -> None:
    """A review: run again after a failed restart (the way back not taken), the installer
    removed the previous program and models it had just said were kept, as a venv "not in
    use"; that run failing to restart too, its way back named the release that had failed
    first, and nothing could go back to the one that ran. The way back is kept, by every
    run, until a run's restart succeeds."""
    fake.install()
    fake.state_dir.joinpath("gallery.db").write_text("")
    good = fake.venv.resolve()
    (fake.repo / "models" / "tflite" / "facenet.tflite").write_text("model set 2\n")
    assert fake.run(env={"STUB_RESTART_FAIL": "1"}).returncode != 0
    failed_first = fake.venv.resolve()
    (fake.repo / "models" / "tflite" / "facenet.tflite").write_text("model set 3\n")
    done = fake.run(env={"STUB_RESTART_FAIL": "1"})  # run again: it fails to restart again
    assert done.returncode != 0
    assert f"the previous program is kept in {good}" in done.stderr
    assert fake.venv.resolve() not in (good, failed_first)
    assert (fake.models / "facenet.tflite").read_text() == "model set 3\n"
    for command in _way_back(done):
        subprocess.run(command, shell=True, check=True)
    assert _whole_pair(fake) == (good, "model set 1\n")  # the door as it ran
    fake.install()  # the cause fixed: the new release, nothing left over
    assert (fake.models / "facenet.tflite").read_text() == "model set 3\n"
    assert sorted(p.name for p in fake.models.parent.iterdir()) == ["models"]
    assert fake.venvs() == [fake.venv.resolve()]
    assert sorted(p.name for p in fake.venv.parent.iterdir()) == ["venv", "venvs"]


def test_a_rerun_whose_restart_succeeds_drops_the_kept_way_back(fake: Fake) -> None:
    """The way back kept by a failed restart goes once a run's services start: the program
    and models it named, and the release that had failed, are removed."""
    fake.install()
    (fake.repo / "models" / "tflite" / "facenet.tflite").write_text("model set 2\n")
    assert fake.run(env={"STUB_RESTART_FAIL": "1"}).returncode != 0
    assert len(fake.venvs()) == 2
    fake.install()
    assert (fake.models / "facenet.tflite").read_text() == "model set 2\n"
    assert sorted(p.name for p in fake.models.parent.iterdir()) == ["models"]
    assert fake.venvs() == [fake.venv.resolve()]
    assert sorted(p.name for p in fake.venv.parent.iterdir()) == ["venv", "venvs"]


@pytest.mark.parametrize(
    ("signal", "rename"),
    [
        ("HUP", "models.old"),  # between the models' two renames: an ssh session dropped
        ("TERM", "venv.new"),  # at the program's switch
        ("INT", "models.new"),  # at the last rename: a Ctrl-C
    ],
)
def test_a_signal_during_the_switch_does_not_leave_a_program_without_its_models(
    fake: Fake, signal: str, rename: str
) -> None:
    """A review: a HUP (the ssh session dropped), INT or TERM during the switch ended the
    installer between its renames, and its exit removed the new models staged for the
    second: the door was left with the new program and the previous models, or no models
    at all. The switch's renames now all happen whatever arrives meanwhile."""
    fake.install()
    (fake.repo / "models" / "tflite" / "facenet.tflite").write_text("model set 2\n")
    previous = fake.venv.resolve()
    signals = fake.state / "signals"
    signals.mkdir()
    (signals / "mv").write_text(
        '#!/bin/sh\ncase "$*" in *"$AT"*) kill -s "$SIGNAL" "$PPID" ;; esac\n'
        f'PATH={SYSTEM_PATH} exec mv "$@"\n'
    )
    (signals / "mv").chmod(0o755)
    done = fake.run(extra_path=signals, env={"SIGNAL": signal, "AT": rename})
    assert done.returncode == 0, done.stdout + done.stderr
    program, models = _whole_pair(fake)
    assert program != previous and models == "model set 2\n"
    assert sorted(p.name for p in fake.models.parent.iterdir()) == ["models"]
    assert fake.venvs() == [program]


def test_an_lgpio_pip_installed_that_does_not_import_is_named_not_roots_python3(
    fake: Fake,
) -> None:
    """A review: when the new venv ran and imported edge_app but not the lgpio pip had put
    into it, the installer said "cannot import edge_app, lgpio" and blamed root's python3
    (pyenv, conda), which had made a venv that worked. It names the module, Python's
    words, and what to do about that lgpio."""
    fake.install()
    _pip_lgpio(fake.venv, "0.2.0.0")
    done = fake.run(env={"STUB_IMPORT_FAIL": "lgpio"})
    assert done.returncode != 0
    assert f"{USER} imports edge_app with" in done.stderr
    assert "but not lgpio 0.2.0.0, which pip installed into it" in done.stderr
    assert "ModuleNotFoundError: No module named 'lgpio'" in done.stderr
    assert "Traceback" not in done.stderr
    assert f"sudo {fake.venv}/bin/pip install lgpio==VERSION" in done.stderr
    assert "Debian's python3" not in done.stderr and "sudo env PATH" not in done.stderr
    assert "the installed program, config, units and models are as they were" in done.stderr
    assert _own_lgpio(fake.venv) == ["0.2.0.0"] and fake.venvs() == [fake.venv.resolve()]


def test_an_apt_module_the_venv_does_not_see_is_named_with_the_python3_that_made_it(
    fake: Fake,
) -> None:
    """On a Pi, lgpio and picamera2 come from apt, which a venv sees only when made from
    Debian's python3: the module that failed is named, with the python3 to use."""
    model = fake.path("/proc/device-tree/model")
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_text("Raspberry Pi 5 Model B Rev 1.0\x00")
    done = fake.run(env={"STUB_IMPORT_FAIL": "picamera2"})
    assert done.returncode != 0
    assert f"{USER} imports edge_app with" in done.stderr
    assert "but not picamera2 (ModuleNotFoundError: No module named 'picamera2')" in done.stderr
    assert "it comes from apt's python3-picamera2" in done.stderr
    assert f"made from {fake.stubs}/python3" in done.stderr
    assert "sudo env PATH=/usr/sbin:/usr/bin:/sbin:/bin" in done.stderr


def test_the_pi_packages_and_their_import_check_go_together(fake: Fake) -> None:
    """Found by an audit: apt's picamera2 and lgpio came with a Raspberry Pi's device tree,
    but their import was checked on any aarch64 machine: on an arm64 board of another make
    (no such apt packages) every install failed. Both now follow the board."""
    fake.install()
    assert not any("picamera2" in line for line in fake.log())  # not a Pi: neither
    model = fake.path("/proc/device-tree/model")
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_text("Raspberry Pi 5 Model B Rev 1.0\x00")
    fake.clear_log()
    fake.install()
    log = fake.log()
    assert any(line.startswith("apt-get install") and "python3-picamera2" in line for line in log)
    assert any("-I -c import edge_app, lgpio, picamera2" in line for line in log), log


def _pip_lgpio(venv: Path, version: str | None, python: str = "python3.11") -> Path:
    """lgpio as `pip install lgpio` leaves it in a venv (version None: no readable METADATA)."""
    info = venv.resolve() / "lib" / python / "site-packages" / f"lgpio-{version}.dist-info"
    info.mkdir(parents=True)
    if version is not None:
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: lgpio\nVersion: {version}\n")
    return info


def _own_lgpio(venv: Path) -> list[str]:
    """The lgpio versions pip put into the venv itself."""
    found = venv.resolve().glob("lib/python3*/site-packages/lgpio-*.dist-info")
    return sorted(path.name.removeprefix("lgpio-").removesuffix(".dist-info") for path in found)


def _upgrade_left_nothing_changed(fake: Fake, done: subprocess.CompletedProcess[str]) -> None:
    """A refused upgrade: the door keeps its program, models and running services."""
    assert done.returncode != 0, done.stdout + done.stderr
    assert "the installed program, config, units and models are as they were" in done.stderr
    assert "installed lgpio" not in done.stdout
    assert fake.venvs() == [fake.venv.resolve()]  # the new venv removed
    assert (fake.models / "facenet.tflite").read_text() == "model set 1\n"
    assert _systemctl(fake) == []  # nothing reloaded or restarted


def test_an_upgrade_keeps_lgpio_pip_installed_into_the_venv_in_use(fake: Fake) -> None:
    """Off Raspberry Pi OS, docs/INSTALL.md has lgpio pip-installed into the door's venv (plain
    Debian has no python3-lgpio). Every upgrade builds a new venv and switched the door to it
    without lgpio: its ExecStartPre= relay_off could not claim the pin, so the door did not
    start again (and the import check did not look for lgpio off a Pi). A review then found
    that the new venv got PyPI's newest lgpio, not the version the operator had installed:
    an upgrade of the door silently upgraded its pin library. It gets the same version."""
    fake.install()
    fake.clear_log()
    fake.install()  # no lgpio of its own in the venv: none added
    assert not any("lgpio" in line for line in fake.log()), fake.log()
    _pip_lgpio(fake.venv, "0.2.0.0")  # older than PyPI's newest, 0.2.2.0
    fake.clear_log()
    done = fake.install()
    assert _own_lgpio(fake.venv) == ["0.2.0.0"]
    assert "pip install --quiet --force-reinstall --no-deps lgpio==0.2.0.0" in fake.log()
    assert f"installed lgpio 0.2.0.0 from PyPI into {fake.venv.resolve()}" in done.stdout
    assert any(line.endswith("-I -c import edge_app, lgpio") for line in fake.log()), fake.log()
    fake.install()  # and on the next upgrade, from that venv
    assert _own_lgpio(fake.venv) == ["0.2.0.0"]


def test_an_lgpio_version_pypi_does_not_offer_stops_the_upgrade_and_says_what_to_do(
    fake: Fake,
) -> None:
    """A review: the version the operator chose is not replaced by another. When pip cannot
    install it (PyPI unreachable, or the version gone from it), the upgrade stops before the
    switch, says why and how to move to another version, and the door keeps running as it was."""
    fake.install()
    _pip_lgpio(fake.venv, "0.1.9.0")
    (fake.repo / "models" / "tflite" / "facenet.tflite").write_text("model set 2\n")
    fake.clear_log()
    done = fake.run()
    _upgrade_left_nothing_changed(fake, done)
    assert "No matching distribution found for lgpio==0.1.9.0" in done.stderr  # pip's words
    assert "pip could not install lgpio 0.1.9.0, the version in the venv in use" in done.stderr
    assert "does not take another version in its place" in done.stderr
    assert f"sudo {fake.venv}/bin/pip install lgpio==VERSION" in done.stderr
    assert "FAILED while installing lgpio 0.1.9.0 into" in done.stderr
    assert _own_lgpio(fake.venv) == ["0.1.9.0"]
    fake.install(env={"STUB_PYPI_LGPIO": "0.1.9.0 0.2.2.0"})  # offered again: it completes
    assert _own_lgpio(fake.venv) == ["0.1.9.0"]
    assert (fake.models / "facenet.tflite").read_text() == "model set 2\n"


def test_lgpio_on_the_system_path_does_not_leave_the_new_venv_without_its_own(
    fake: Fake,
) -> None:
    """A review: with an lgpio on the system path (apt's, which the venv sees through
    --system-site-packages), `pip install lgpio` found it "already satisfied" and put none
    into the new venv, and the installer said it had installed lgpio from PyPI."""
    fake.install()
    _pip_lgpio(fake.venv, "0.2.2.0")
    done = fake.install(env={"STUB_SYSTEM_LGPIO": "0.2.2.0"})
    assert _own_lgpio(fake.venv) == ["0.2.2.0"]
    assert f"installed lgpio 0.2.2.0 from PyPI into {fake.venv.resolve()}" in done.stdout


def test_a_pip_that_installs_no_lgpio_is_not_reported_as_installing_it(fake: Fake) -> None:
    """A review: the installer said "installed lgpio" whatever pip had done. A pip that ends
    without error but puts no lgpio into the new venv (a setting that sends it elsewhere)
    now stops the upgrade, with the door left as it was."""
    fake.install()
    _pip_lgpio(fake.venv, "0.2.2.0")
    (fake.repo / "models" / "tflite" / "facenet.tflite").write_text("model set 2\n")
    fake.clear_log()
    done = fake.run(env={"STUB_PIP_NOTHING": "1"})
    _upgrade_left_nothing_changed(fake, done)
    assert "pip ended without an error, but" in done.stderr
    assert "has no lgpio 0.2.2.0 of its own (it has: none)" in done.stderr


@pytest.mark.parametrize(
    ("versions", "message"),
    [
        ([None], "has an lgpio of its own whose version cannot be read"),
        (["0.2.0.0", "0.2.2.0"], "has lgpio of its own for more than one Python"),
    ],
)
def test_an_lgpio_version_that_cannot_be_told_stops_the_upgrade_and_says_what_to_do(
    fake: Fake, versions: list[str | None], message: str
) -> None:
    """A review: which lgpio the new venv is to get must be known, never guessed (PyPI's
    newest in its place would change the operator's pin library without a word)."""
    fake.install()
    # the second in the site-packages of another Python, as a release upgrade leaves them
    for version, python in zip(versions, ("python3.11", "python3.13"), strict=False):
        _pip_lgpio(fake.venv, version, python)
    fake.clear_log()
    done = fake.run()
    _upgrade_left_nothing_changed(fake, done)
    assert message in done.stderr
    assert "FAILED while reading the version of the lgpio pip installed into" in done.stderr
    assert not any(line.startswith(("pip ", "python3 -m venv")) for line in fake.log())


def test_a_second_run_while_one_is_under_way_is_refused_and_changes_nothing(fake: Fake) -> None:
    """Found by an audit: nothing stopped two runs at once, which build, switch and remove
    venvs under each other. The second is refused while the first holds the lock."""
    with open(fake.path(LOCK), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        done = fake.run()
    assert done.returncode != 0
    assert "is under way: wait for it to end; nothing changed" in done.stderr
    assert fake.log() == [] and stray_files(fake) == []
    fake.install()  # the lock released: it runs


def test_a_run_from_another_checkout_under_way_is_refused_too(fake: Fake) -> None:
    """Found by a review: the lock was on the script's own file, so a run from a second
    checkout (or of a script that `git pull` had replaced since) was not kept out: it
    removed the first run's new venv as one "left by an install cut short", mid-pip."""
    other = fake.repo.parent / "other-checkout"
    shutil.copytree(fake.repo, other)
    waiting = fake.state / "waiting"
    waiting.mkdir()
    (waiting / "apt-get").write_text(
        '#!/bin/sh\ntouch "$WAIT/started"\n'
        'i=0; while [ ! -e "$WAIT/go" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n'
    )
    (waiting / "apt-get").chmod(0o755)
    first: list[subprocess.CompletedProcess[str]] = []
    running = threading.Thread(
        target=lambda: first.append(
            fake.run(repo=other, extra_path=waiting, env={"WAIT": str(waiting)})
        )
    )
    running.start()
    try:
        for _ in range(300):
            if (waiting / "started").exists():
                break
            time.sleep(0.1)
        assert (waiting / "started").exists(), "the first run never reached apt-get"
        done = fake.run()
    finally:
        (waiting / "go").touch()
        running.join()
    assert done.returncode != 0, done.stdout + done.stderr
    assert "is under way: wait for it to end; nothing changed" in done.stderr
    assert first[0].returncode == 0, first[0].stdout + first[0].stderr
    assert fake.venvs() == [fake.venv.resolve()]


def test_a_failed_apt_step_says_nothing_of_the_door_changed(fake: Fake, tmp_path: Path) -> None:
    """Found by an audit: apt-get failing (no network) was reported as a system that "may be
    half-installed", though nothing of the door had changed yet."""
    failing = tmp_path / "failing"
    failing.mkdir()
    (failing / "apt-get").write_text('#!/bin/sh\necho "E: Unable to fetch" >&2\nexit 100\n')
    (failing / "apt-get").chmod(0o755)
    done = fake.run(extra_path=failing)
    assert done.returncode != 0
    assert "FAILED while installing Debian packages" in done.stderr
    assert "the installed program, config, units and models are as they were" in done.stderr
    assert "half-installed" not in done.stderr


# --- 9. umask ------------------------------------------------------------------------------


def test_a_restrictive_umask_does_not_leave_the_program_unreadable(fake: Fake) -> None:
    done = fake.run(umask=0o077)
    assert done.returncode == 0, done.stderr
    for folder in (fake.venv, fake.venv / "bin", fake.path("/etc/udev/rules.d"), fake.models):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
    for file in (
        fake.models / "manifest.json",
        fake.unit,
        fake.path("/usr/share/doc/edge-app/DAEMON.md"),
        fake.path("/usr/share/doc/edge-app/GALLERY.md"),
    ):
        assert stat.S_IMODE(file.stat().st_mode) == 0o644, file
    # the secrets keep their own modes
    assert mode_owner(fake.conf / "unlock.key")[0] == 0o600
    assert mode_owner(fake.conf / "config.toml")[0] == 0o640


# --- 11. the units' drop-ins ---------------------------------------------------------------


def test_uninstall_keeps_the_drop_ins_and_purge_removes_them(fake: Fake) -> None:
    fake.install()
    dropins = [Path(f"{fake.unit}.d"), Path(f"{fake.hub_unit}.d")]
    for folder in dropins:
        folder.mkdir()
        (folder / "override.conf").write_text("[Service]\nEnvironment=X=1\n")
    done = fake.install("--uninstall")
    assert all((folder / "override.conf").is_file() for folder in dropins)
    assert "kept the units' drop-ins" in done.stdout and str(dropins[0]) in done.stdout
    done = fake.install("--uninstall", "--purge")
    assert not any(folder.exists() for folder in dropins)
    assert "removed the units' drop-ins" in done.stdout


# --- the harness itself --------------------------------------------------------------------


def test_the_rewritten_installer_names_no_real_system_path(tmp_path: Path) -> None:
    script = rewrite(INSTALL.read_text(), tmp_path)
    assert str(tmp_path) in script
    with pytest.raises(AssertionError, match="still names a real path"):
        rewrite(INSTALL.read_text() + "rm -rf /var/lib/edge-app\n", tmp_path)
