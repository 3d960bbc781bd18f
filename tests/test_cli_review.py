"""The `edge-app` command line reviewed as a demanding user and with hostile files.

Each test pins one defect found in that review: a face enrolled under a second name, folders
checked only after the models loaded, no progress over a folder of photos, doctor advising a
chmod already done, `site show` advising a chmod through a link to a device, `import -`
waiting on a terminal, names echoed as typed, messages without their fix, help without
examples, tracebacks for photos out of reach and for closed standard streams, `eval lfw`
reading /dev/zero or a FIFO. Photos come from tests/data/lfw_sample and the models from
models/tflite.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import json
import os
import pty
import resource
import select
import shutil
import signal
import sqlite3
import stat
import struct
import subprocess
import sys
import termios
from pathlib import Path

import cv2
import numpy as np
import pytest
from needs import unavailable
from people import samples
from test_cli_smoke import _env, _with_stdin

from edge_app import cli, lfw
from edge_app.camera import picamera2_available
from edge_app.gallery import EMBEDDING_DIM, Gallery, NewSample
from edge_app.manifest import MANIFEST_NAME
from edge_app.paths import REPO_MODELS, REPO_ROOT

LFW_SAMPLE = Path(__file__).resolve().parent / "data" / "lfw_sample"
JOE = sorted((LFW_SAMPLE / "Joe_Nichols").glob("*.jpg"))
MARTHA = sorted((LFW_SAMPLE / "Martha_Stewart").glob("*.jpg"))
TIMEOUT = 180

needs_models = pytest.mark.skipif(
    not (REPO_MODELS / MANIFEST_NAME).is_file(),
    reason=f"no built models in {REPO_MODELS}: run `make models`",
)


def edge_app(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`edge-app ARGV...` in a new process, its output piped and nothing on its standard
    input; its stderr must be clean."""
    return _with_stdin(cwd, "", *argv)


def edge_app_on_a_terminal(cwd: Path, *argv: str) -> tuple[int, str, str]:
    """`edge-app ARGV...` with its standard error on a terminal 120 columns wide (a
    pseudo-terminal), as a user at a shell sees it: (exit code, stdout, stderr)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    child = subprocess.Popen(
        [sys.executable, "-m", "edge_app.cli", *argv],
        cwd=cwd,
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], TIMEOUT)
            if not ready:
                child.kill()
                raise AssertionError(f"no output for {TIMEOUT} s: {seen!r}")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        assert child.stdout is not None
        out = child.stdout.read().decode()
        code = child.wait(timeout=TIMEOUT)
    finally:
        os.close(master)
    return code, out, seen.decode(errors="replace")


def one_error_line(stderr: str) -> str:
    """The command's one error line (libraries' own notices on stderr are left aside)."""
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, stderr
    return errors[0]


def unit_rows(count: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, EMBEDDING_DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def small_gallery(path: Path) -> Path:
    """Emma (2 samples) and Bob (1), from random unit vectors: no models needed."""
    rows = unit_rows(3, 7)
    with Gallery.open(path, create=True) as gallery:
        gallery.enroll("Emma", [NewSample(rows[0], "a" * 64), NewSample(rows[1], "b" * 64)])
        gallery.enroll("Bob", [NewSample(rows[2], "c" * 64)])
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- enroll ----------------------------------------------------------------------------------


@needs_models
def test_enroll_refuses_the_face_of_someone_enrolled_under_another_name(tmp_path: Path) -> None:
    """Defect: a photo of someone enrolled, given under a new name, was enrolled again: one
    face under two names, let in as either (`doctor` only reported it later). It is refused
    now, re-encoded or not, and the gallery keeps its bytes."""
    db = tmp_path / "gallery.db"
    first = edge_app(tmp_path, "enroll", "--db", str(db), "--backend", "cpu", "Joe", str(JOE[0]))
    assert first.returncode == 0, first.stderr
    before = digest(db)
    # The same photo saved again (JPEG quality 95): other bytes, the same face.
    copy = tmp_path / "someone.jpg"
    pixels = cv2.imread(str(JOE[0]))
    assert pixels is not None
    copy.write_bytes(cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())

    for photos in ([str(JOE[0])], [str(copy), str(MARTHA[0])]):
        done = edge_app(tmp_path, "enroll", "--db", str(db), "--backend", "cpu", "Jo", *photos)

        assert done.returncode == 2, done.stderr
        assert "nothing enrolled for 'Jo'" in done.stderr
        assert "the same face as 'Joe', already enrolled" in done.stderr
        assert "edge-app enroll --add Joe PHOTO" in done.stderr
        assert digest(db) == before
    listed = json.loads(edge_app(tmp_path, "list", "--json", "--db", str(db)).stdout)
    assert [(p["name"], p["samples"]) for p in listed] == [("Joe", 1)]


@needs_models
def test_enroll_checks_its_photo_folders_before_loading_the_models(tmp_path: Path) -> None:
    """Defect: a folder without photos was found out only after the models had loaded
    (seconds on a Pi). With models that cannot load, the folder's error must come first."""
    empty = tmp_path / "photos"
    empty.mkdir()
    (empty / "notes.txt").write_text("no photos here")
    db = tmp_path / "gallery.db"

    done = edge_app(tmp_path, "enroll", "--db", str(db), "--models", str(tmp_path), "Bob", "photos")

    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "no images found in photos: give photo files or folders" in line
    assert MANIFEST_NAME not in done.stderr
    assert not db.exists()


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["photos/Hans/", "photos/Paul/"], "photos/Hans/ is a folder, given where the"),
        (["photos/Hans/a.jpg", "photos/Hans/b.jpg"], "photos/Hans/a.jpg is a file, given"),
        (["Alice", "Martin", "photos/Hans/"], "a name of several words is quoted: "),
    ],
    ids=["a folder for the name", "a photo for the name", "a name not quoted"],
)
def test_enroll_refuses_a_photo_for_a_name_and_an_unquoted_name(
    tmp_path: Path, argv: list[str], said: str
) -> None:
    """Found by a walkthrough: `edge-app enroll photos/Hans/ photos/Paul/` (NAME left out)
    enrolled Paul's face, with access, under the name "photos/Hans/"; `enroll Alice Martin
    photos/` said only "Martin: no such file". Both are refused before anything is read,
    saying how the command is written."""
    for person in ("Hans", "Paul"):
        folder = tmp_path / "photos" / person
        folder.mkdir(parents=True)
        for name in ("a.jpg", "b.jpg"):
            (folder / name).write_bytes(b"not read")
    db = tmp_path / "gallery.db"

    done = edge_app(tmp_path, "enroll", "--db", str(db), "--models", str(tmp_path), *argv)

    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert said in line, line
    if argv[0] == "Alice":
        assert "`edge-app enroll 'Alice Martin' PHOTO...`" in line, line
    else:
        assert "`edge-app enroll NAME PHOTO...`" in line, line
    assert not db.exists()


@pytest.mark.parametrize("words", [["list"], ["hub", "passwd"], ["eval", "visits"]], ids=" ".join)
def test_an_unknown_option_is_refused_with_its_commands_own_usage(
    tmp_path: Path, words: list[str]
) -> None:
    """Found by a walkthrough: `edge-app list --dbb x` printed edge-app's usage line, which
    names none of list's options; the command's own parser refuses it now."""
    done = edge_app(tmp_path, *words, "--dbb", "x")
    assert done.returncode == 2
    command = " ".join(["edge-app", *words])
    assert done.stderr.startswith(f"usage: {command} [-h]"), done.stderr
    assert f"{command}: error: unrecognized arguments: --dbb x" in done.stderr


def test_the_hubs_usage_shows_its_subcommand_as_optional(tmp_path: Path) -> None:
    """Plain `edge-app hub` runs the hub; its usage line said `COMMAND ...` as if one were
    needed (a walkthrough's finding)."""
    done = edge_app(tmp_path, "hub", "--help")
    assert done.returncode == 0 and "[COMMAND] ..." in done.stdout, done.stdout


def test_enroll_at_a_camera_that_is_not_there_says_so_at_once(tmp_path: Path) -> None:
    """Found by a walkthrough: `enroll --camera` on a machine without a camera printed
    OpenCV's warnings and "camera unavailable" for the whole 60 s timeout. A device that
    does not exist is refused before the models load."""
    db = tmp_path / "gallery.db"
    argv = ("enroll", "--camera", "--source", "57", "--db", str(db), "--models", str(tmp_path))
    done = edge_app(tmp_path, *argv, "Carol")
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "no camera: /dev/video57 does not exist; connect one, or give --source" in line
    assert MANIFEST_NAME not in done.stderr and "WARN" not in done.stderr
    assert not db.exists()


@needs_models
def test_enroll_and_identify_show_progress_over_photos_on_a_terminal(tmp_path: Path) -> None:
    """Defect: enrolling from or identifying a folder of photos printed nothing until the
    end (300 LFW photos: 30 s of silence). A bar now counts the photos on a terminal, and
    stays off when standard error is not one (a log file, a pipe)."""
    photos = tmp_path / "martha"
    photos.mkdir()
    for photo in MARTHA:
        (photos / photo.name).write_bytes(photo.read_bytes())
    db = tmp_path / "gallery.db"
    cpu = ("--db", str(db), "--backend", "cpu")

    code, out, err = edge_app_on_a_terminal(tmp_path, "enroll", *cpu, "Martha", "martha")
    assert code == 0, err
    assert "enrolled 'Martha'" in out
    assert "checking Martha: 100%" in err and f"{len(MARTHA)}/{len(MARTHA)}" in err

    code, out, err = edge_app_on_a_terminal(tmp_path, "identify", *cpu, "martha")
    assert code == 0, err
    assert out.count("  Martha  score") == len(MARTHA), out
    assert "identifying: 100%" in err and f"{len(MARTHA)}/{len(MARTHA)}" in err

    piped = edge_app(tmp_path, "identify", *cpu, "martha")
    assert piped.returncode == 0 and "identifying" not in piped.stderr
    assert "%|" not in piped.stderr


@needs_models
def test_identify_prints_each_photo_as_it_is_done_and_keeps_them_when_stopped(
    tmp_path: Path,
) -> None:
    """Found by a walkthrough: `identify` on a folder printed nothing until every photo was
    done (stdout empty after 10 s of 1,200 photos), and Ctrl-C then lost every result. Each
    photo's lines are written as it is done; stopped, what was done stays printed."""
    db = tmp_path / "gallery.db"
    cpu = ("--db", str(db), "--backend", "cpu")
    assert edge_app(tmp_path, "enroll", *cpu, "Martha", *map(str, MARTHA)).returncode == 0
    photos = tmp_path / "many"
    photos.mkdir()
    for copy in range(60):
        for photo in MARTHA:
            (photos / f"{copy:02d}_{photo.name}").write_bytes(photo.read_bytes())
    child = subprocess.Popen(
        [sys.executable, "-m", "edge_app.cli", "identify", *cpu, str(photos)],
        cwd=tmp_path,
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    try:
        first = child.stdout.readline()  # before the other photos are done
        child.send_signal(signal.SIGTERM)  # (SIGINT: ignored where CI starts in the background)
        rest = child.stdout.read()  # (not communicate(): it would skip what readline buffered)
        err = child.stderr.read()
        child.wait(timeout=TIMEOUT)
    finally:
        child.kill()
    assert first.startswith(str(photos / "00_")), first
    assert child.returncode == 130, err
    done = (first + rest).count("  Martha  score")
    assert 1 <= done < 60 * len(MARTHA), done


# --- doctor and site -------------------------------------------------------------------------


@needs_models
def test_doctor_reports_the_gallery_mode_as_it_leaves_it(tmp_path: Path) -> None:
    """Defect: doctor read the gallery's mode, then opened it (which narrows a wide mode to
    600), and still said "mode 644 -> chmod 600": advice for a file already fixed."""
    db = small_gallery(tmp_path / "gallery.db")
    db.chmod(0o644)
    config = tmp_path / "config.toml"
    config.write_text(f'[gallery]\npath = "{db}"\n')

    done = edge_app(tmp_path, "doctor", "--json", "--config", str(config))

    (check,) = [c for c in json.loads(done.stdout) if c["area"] == "gallery"]
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert check["status"] == "ok", check
    assert check["detail"] == f"{db}: 2 people, mode 600 (was 644: narrowed now)"
    assert "chmod" not in check["fix"]


def test_doctor_warns_of_photos_of_several_people_under_one_name(tmp_path: Path) -> None:
    """Defect: a gallery enrolled from a mixed folder before the one-person gate (or imported
    so) let each face in under one name, and doctor said nothing. Emma's two samples are
    random unit vectors (cosine about 0: two people); Bob has one photo, nothing to compare."""
    from edge_app.commands.doctor import _gallery_checks
    from edge_app.config import parse_config

    db = small_gallery(tmp_path / "gallery.db")
    config = parse_config({"gallery": {"path": str(db)}})

    gallery, several = _gallery_checks(config)

    assert gallery.status == "ok"
    assert several.area == "one person each" and several.status == "warn"
    assert "for 1 person ('Emma': 2 of 2)" in several.detail and "Bob" not in several.detail
    assert several.fix.startswith("edge-app remove NAME")
    with Gallery.open(db) as fixed:
        fixed.remove(["Emma"])
    assert [check.area for check in _gallery_checks(config)] == ["gallery"]


def test_doctor_names_the_first_few_of_many_people_with_mixed_photos(tmp_path: Path) -> None:
    """Found on a 5,000-person gallery of random embeddings: the row named every one of
    them, a single line of about 100 KB that buried the rows after it. It names the first
    ten and counts the rest, as the lookalikes row does."""
    from edge_app.commands.doctor import _gallery_checks
    from edge_app.config import parse_config

    db = tmp_path / "gallery.db"
    rng = np.random.default_rng(3)
    with Gallery.open(db, create=True) as gallery:
        for i in range(25):
            rows = rng.standard_normal((2, EMBEDDING_DIM)).astype(np.float32)
            rows /= np.linalg.norm(rows, axis=1, keepdims=True)
            gallery.enroll(f"Person {i:02}", [NewSample(r, f"{i}-{j}") for j, r in enumerate(rows)])

    _, several = _gallery_checks(parse_config({"gallery": {"path": str(db)}}))

    assert "for 25 people ('Person 00': 2 of 2, 'Person 01'" in several.detail
    assert "'Person 09': 2 of 2 and 15 more)" in several.detail
    assert "Person 10" not in several.detail
    assert len(several.detail) < 400


def test_doctor_checks_the_camera_and_relay_the_config_names(tmp_path: Path) -> None:
    """Defect: doctor looked for picamera2 and /dev/video* whatever `[camera] source` said,
    and advised `--gpio mock` to a config that already simulated the relay: a door set to
    play a recording (the demo, a test) was reported as missing a camera, and a door whose
    source could not open passed. It now checks the source and pin factory the door uses."""
    clip = tmp_path / "door.mp4"
    shutil.copyfile(REPO_ROOT / "demo" / "door.mp4", clip)
    config = tmp_path / "config.toml"

    def rows(camera: str, gpio: str = "auto") -> tuple[dict, dict]:
        config.write_text(f'[camera]\nsource = {camera}\n[gpio]\nfactory = "{gpio}"\n')
        done = edge_app(tmp_path, "doctor", "--json", "--config", str(config))
        checks = {c["area"]: c for c in json.loads(done.stdout)}
        return checks["camera"], checks["gpio"]

    camera, gpio = rows(f'"{clip}"', "mock")
    assert camera["status"] == "warn"
    assert (
        camera["detail"]
        == f"camera.source {str(clip)!r}: a recorded file, played instead of a camera"
    )
    assert gpio["status"] == "warn" and "the relay is simulated" in gpio["detail"]
    assert 'factory = "auto"' in gpio["fix"]

    camera, _ = rows(f'"{tmp_path / "absent.mp4"}"')
    assert camera["status"] == "fail" and "the door cannot start" in camera["detail"]

    # What `run` refuses to start with, doctor fails too: it said WARN (outside audit)
    text = tmp_path / "text.mp4"
    text.write_text("not a video")
    (tmp_path / "empty").mkdir()
    for source, problem in ((text, "cannot open"), (tmp_path / "empty", "holds no images")):
        camera, _ = rows(f'"{source}"')
        assert camera["status"] == "fail", camera
        assert problem in camera["detail"] and "the door cannot start" in camera["detail"]

    camera, _ = rows('"rtsp://door:secret@192.0.2.7/stream"')
    assert camera["status"] == "ok" and "secret" not in camera["detail"]
    assert "rtsp://***@192.0.2.7/stream" in camera["detail"]

    camera, _ = rows("97")  # a device index nobody has
    assert camera["status"] == "warn"
    assert "/dev/video97 does not exist; the door starts and waits for it" in camera["detail"]

    camera, _ = rows('"picamera2"')
    if not picamera2_available():  # as here; on a Pi it is the import check
        assert camera["status"] == "fail"
        assert "picamera2 is not installed, so the door cannot start" in camera["detail"]


def test_doctor_asks_the_running_door_whether_it_sees(tmp_path: Path) -> None:
    """Defect: doctor never asked the running door anything: a door that had stopped, or
    whose camera delivered nothing or only darkness, passed. Its row is now the door's own
    answer through the control socket (a real one here, in front of a real Daemon's relay)."""
    from test_control import Door, make_daemon

    from edge_app.commands.doctor import door_check
    from edge_app.picture import DARK, EXPLAIN

    absent = door_check(tmp_path / "absent.sock")
    assert absent.status == "warn" and "sudo systemctl start edge-app" in absent.fix
    off = door_check(None)
    assert off.status == "warn" and 'hub.socket = ""' in off.detail

    door = Door(make_daemon(tmp_path, allow_unlock=False))
    try:
        waiting = door_check(door.path)
        assert waiting.status == "warn" and "no camera frame yet" in waiting.detail
        door.server.offer_frame(np.zeros((48, 64, 3), np.uint8), 1)
        seeing = door_check(door.path)
        assert seeing.status == "ok", seeing
        assert seeing.detail.startswith("running, source -, last frame 0.")
        door.daemon.picture.reported = DARK
        dark = door_check(door.path)
        assert dark.status == "warn" and dark.detail.endswith("; camera picture dark")
        assert dark.fix == EXPLAIN[DARK]
    finally:
        door.close()


def test_doctors_fixes_follow_what_went_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Operator audit s41 (L4): a missing config file was told to "fix each problem listed";
    the picamera2 advice said to remake the venv with --system-site-packages in a venv (the
    installer's) that already had them."""
    from edge_app.commands import doctor

    [missing], config = doctor._config_checks(tmp_path / "absent.toml")
    assert config is None and missing.status == "fail"
    assert missing.fix.startswith("give the config's path with --config")
    bad = tmp_path / "bad.toml"
    bad.write_text("[camera]\nfps = -1\n")
    [refused], _ = doctor._config_checks(bad)
    assert refused.fix == "fix each problem listed, then rerun"

    venv = tmp_path / "venv"
    venv.mkdir()
    monkeypatch.setattr(doctor.sys, "prefix", str(venv))
    monkeypatch.setattr(doctor.sys, "base_prefix", "/usr")
    for setting, sees in (("true", True), ("false", False)):
        (venv / "pyvenv.cfg").write_text(
            f"home = /usr/bin\ninclude-system-site-packages = {setting}\n"
        )
        assert doctor._sees_system_packages() is sees
        assert ("--system-site-packages" in doctor._picamera2_fix()) is not sees
    monkeypatch.setattr(doctor.sys, "base_prefix", str(venv))  # not a venv at all
    assert doctor._sees_system_packages()


def test_doctors_fixes_name_the_config_it_was_given(tmp_path: Path) -> None:
    """Found by a walkthrough: `doctor --config door.toml` said `-> edge-app enroll NAME
    PHOTO...` and `-> edge-app site forget`: run as written, they act on the default
    config's door. Each edge-app command a fix names now carries --config."""
    from edge_app.commands import doctor

    config = tmp_path / "my door.toml"
    config.write_text(f'[gallery]\npath = "{tmp_path / "gallery.db"}"\n')
    checks = doctor.collect_checks(config, models=tmp_path / "no models")
    (gallery,) = [c for c in checks if c.area == "gallery"]
    assert gallery.fix == f"edge-app enroll --config '{config}' NAME PHOTO...", gallery
    assert doctor.for_config(
        "run as the door's user: sudo -u edge-app edge-app doctor", config
    ) == (f"run as the door's user: sudo -u edge-app edge-app doctor --config '{config}'")
    assert doctor.for_config("edge-app site forget (deletes it)", config) == (
        f"edge-app site forget --config '{config}' (deletes it)"
    )
    default = doctor.collect_checks(None, models=tmp_path / "no models")
    assert not any("--config" in c.fix for c in default if c.area == "gallery")


def test_list_and_doctor_never_write_a_control_character_to_the_terminal(tmp_path: Path) -> None:
    """Found by an audit: `doctor` printed a config key holding ESC [2J raw (it cleared the
    screen: a config can make what doctor said vanish), and `list` a name put in the
    gallery by hand with ESC in it. Both show control characters as \\xNN."""
    db = small_gallery(tmp_path / "gallery.db")
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA ignore_check_constraints = ON")
        connection.execute("UPDATE people SET name = 'Eve' || char(27) || '[2J' WHERE id = 1")
    connection.close()
    listed = edge_app(tmp_path, "list", "--db", str(db))
    assert listed.returncode == 0, listed.stderr
    assert "\x1b" not in listed.stdout and "Eve\\x1b[2J" in listed.stdout, listed.stdout

    config = tmp_path / "door.toml"
    config.write_text(f'[gallery]\npath = "{db}"\n[camera]\n"\\u001b[2Jevil" = 1\n')
    checked = edge_app(tmp_path, "doctor", "--config", str(config), "--models", str(tmp_path))
    assert "\x1b" not in checked.stdout, checked.stdout
    assert "camera.'\\x1b[2Jevil': unknown key" in checked.stdout, checked.stdout


def test_doctor_does_not_pass_a_relative_gallery_path_the_other_commands_refuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a walkthrough: with `path = "gallery.db"` doctor said OK (it read the file
    beside it), while `list --config` refused the same config: the door resolves the path
    in its own working folder, which no other command can know."""
    from edge_app.commands import doctor

    small_gallery(tmp_path / "gallery.db")
    config = tmp_path / "door.toml"
    config.write_text('[gallery]\npath = "gallery.db"\n')
    monkeypatch.chdir(tmp_path)
    checks = doctor.collect_checks(config, models=tmp_path / "no models")
    (gallery,) = [c for c in checks if c.area == "gallery"]
    assert gallery.status == "warn" and "gallery.path gallery.db is relative" in gallery.detail
    assert gallery.fix == "give the config an absolute gallery.path"


def test_site_show_gives_no_chmod_advice_for_a_memory_linked_to_a_device(
    tmp_path: Path,
) -> None:
    """Defect: a site memory that is a link to /dev/null (a common way to "switch a file
    off") was shown as "mode 666 WARNING ...; chmod 600 site_memory.npz": run as root, that
    chmod follows the link and takes /dev/null away from every other user."""
    db = small_gallery(tmp_path / "gallery.db")
    (tmp_path / "site_memory.npz").symlink_to(os.devnull)
    config = tmp_path / "config.toml"
    config.write_text(f'[gallery]\npath = "{db}"\n')
    device_mode = stat.S_IMODE(os.stat(os.devnull).st_mode)

    done = edge_app(tmp_path, "site", "show", "--config", str(config))
    as_json = edge_app(tmp_path, "site", "show", "--json", "--config", str(config))

    assert done.returncode == 2
    assert "not a regular file, so not a site memory" in one_error_line(done.stderr)
    assert "chmod 600" not in done.stdout and "WARNING" not in done.stdout
    assert json.loads(as_json.stdout)["mode"] is None
    assert stat.S_IMODE(os.stat(os.devnull).st_mode) == device_mode


# --- gallery commands ------------------------------------------------------------------------


class _Terminal(io.TextIOWrapper):
    """Standard input that is a terminal with nothing typed (isatty, then end of input)."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(b""), encoding="utf-8")

    def isatty(self) -> bool:
        return True


def test_import_from_a_terminal_is_refused_instead_of_waiting(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    """Defect: `edge-app import -` typed without a pipe sat waiting for an export to be
    typed in. Standard input that is a terminal is refused at once; nothing is created."""
    db = tmp_path / "gallery.db"
    monkeypatch.setattr(sys, "stdin", _Terminal())

    assert cli.main(["import", "--db", str(db), "-"]) == 2

    line = one_error_line(capsys.readouterr().err)
    assert "standard input is this terminal, not an export; pipe one in" in line
    assert not db.exists()


def test_remove_names_each_person_once_as_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """Defect: `remove emma EMMA bob` said "removed 'emma', 'EMMA', 'bob'": one person named
    twice, and nobody as enrolled (rename already says the stored name)."""
    db = small_gallery(tmp_path / "gallery.db")

    assert cli.main(["remove", "--db", str(db), "emma", "EMMA", "bob"]) == 0

    assert capsys.readouterr().out == "removed 'Emma', 'Bob' (3 samples)\n"
    with Gallery.open(db) as gallery:
        assert gallery.people() == []


def test_remove_of_someone_not_enrolled_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    db = small_gallery(tmp_path / "gallery.db")
    before = digest(db)

    assert cli.main(["remove", "--db", str(db), "Emma", "Nobody"]) == 2

    assert "not enrolled: 'Nobody'" in one_error_line(capsys.readouterr().err)
    assert digest(db) == before


def test_export_into_a_missing_folder_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """Defect: "cannot write x/people.jsonl: No such file or directory" named the problem
    but not the fix."""
    db = small_gallery(tmp_path / "gallery.db")
    out = tmp_path / "missing" / "people.jsonl"

    assert cli.main(["export", "--db", str(db), str(out)]) == 2

    line = one_error_line(capsys.readouterr().err)
    assert f"cannot write {out}: No such file or directory; give a FILE in a folder" in line
    assert not out.parent.exists()


def test_export_is_private_and_replaces_a_wider_file_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """Checked fine: an export replaces an older, world-readable export with a 0600 one,
    and leaves no temporary file beside it."""
    db = small_gallery(tmp_path / "gallery.db")
    out = tmp_path / "people.jsonl"
    assert cli.main(["export", "--db", str(db), str(out)]) == 0  # last night's
    out.chmod(0o644)

    assert cli.main(["export", "--db", str(db), str(out)]) == 0

    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert json.loads(out.read_text().splitlines()[0])["people"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".people.jsonl")]


# --- help ------------------------------------------------------------------------------------

# The commands this review covers, by the words that name them.
REVIEWED = [
    ["enroll"],
    ["list"],
    ["access"],
    ["remove"],
    ["rename"],
    ["export"],
    ["import"],
    ["identify"],
    ["site", "show"],
    ["site", "forget"],
    ["doctor"],
]


def _subparser(words: list[str]) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    for word in words:
        (choices,) = [
            a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)
        ]
        parser = choices[word]
    return parser


@pytest.mark.parametrize("words", REVIEWED, ids=" ".join)
def test_each_reviewed_command_help_teaches(words: list[str]) -> None:
    """Defect: `doctor --help` had no example and no word on what it reads or changes; the
    NAME, OLD and NEW of access, remove and rename had no help at all. Every argument now
    says what it is, and every command shows examples."""
    parser = _subparser(words)
    text = parser.format_help()

    assert "\nexamples:\n" in text, text
    assert f"edge-app {' '.join(words)}" in text.split("\nexamples:\n")[1]
    for action in parser._actions:
        assert action.help and action.help != argparse.SUPPRESS, action.dest


def _every_command(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()):
    """(words, parser) of each command under `parser` that takes no further command."""
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not found:
        yield words, parser
        return
    for word, child in found[0].choices.items():
        yield from _every_command(child, (*words, word))


def test_every_command_of_both_programs_shows_examples() -> None:
    """Defect: README promises "--help with examples" for every command; `demo`,
    `edge-convert lint` and `edge-convert validate` had none."""
    from converter import cli as converter_cli

    missing = [
        f"{program} {' '.join(words)}"
        for program, build in (
            ("edge-app", cli.build_parser),
            ("edge-convert", converter_cli.build_parser),
        )
        for words, parser in _every_command(build())
        if f"{program} {words[0]}" not in parser.format_help().partition("examples:")[2]
    ]
    assert missing == []


def test_enroll_help_gives_the_camera_defaults() -> None:
    text = " ".join(_subparser(["enroll"]).format_help().split())

    assert "frames to collect, 1 to 50 (default: 5)" in text
    assert "at most 3600 (default: 60)" in text


# --- a damaged gallery -----------------------------------------------------------------------


def damaged_gallery(path: Path) -> Path:
    """small_gallery() with its fourth page (Emma's samples) overwritten with garbage, as a
    torn write or a failing SD card leaves it."""
    small_gallery(path)
    with path.open("r+b") as handle:
        handle.seek(3 * 4096)
        handle.write(b"\x0d\xff\xff\xff" * 64)
    return path


DAMAGED = "is damaged (database disk image is malformed): restore it from an export"


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["list", "--json"],
        ["export", "-"],
        ["export", "people.jsonl"],
        ["remove", "Bob"],
        ["rename", "Bob", "Robert"],
        ["access", "Bob", "no"],
    ],
    ids=" ".join,
)
def test_a_damaged_gallery_is_one_line_and_exit_2_in_every_command(
    tmp_path: Path,
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defect: a damaged page gave `sqlite3.DatabaseError: database disk image is malformed`
    with a traceback and exit 1, and `rename` / `access` (whose row was on a sound page)
    changed the damaged file and said so."""
    db = damaged_gallery(tmp_path / "gallery.db")
    before = digest(db)
    monkeypatch.chdir(tmp_path)

    assert cli.main([*argv, "--db", str(db)]) == 2

    out, err = capsys.readouterr()
    assert f"gallery {db} is damaged (" in one_error_line(err)
    assert "restore it from an export (edge-app import) or a backup" in err
    assert out == ""
    assert digest(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery.db"]


@pytest.mark.parametrize("content", [b"", b"not a database", None], ids=["empty", "text", "events"])
def test_doctor_words_a_file_that_is_not_a_gallery_for_its_config(
    tmp_path: Path, content: bytes | None
) -> None:
    """A sweep: doctor's gallery row for a gallery.path that is no gallery (empty, another
    file, another SQLite database) advised "pass --db", an option doctor does not have, and
    fixed it by "check the file's owner and permissions", which no chmod does. It now names
    gallery.path, as `run --check-config` does, and the file is left as it was."""
    from edge_app.commands.doctor import _gallery_checks
    from edge_app.config import parse_config
    from edge_app.events import EventLog

    db = tmp_path / "gallery.db"
    if content is None:
        EventLog(db).close()
    else:
        db.write_bytes(content)
    before = db.read_bytes()

    (check,) = _gallery_checks(parse_config({"gallery": {"path": str(db)}}))

    assert check.status == "fail", check
    assert "--db" not in check.detail, check.detail
    assert "set gallery.path to the path of an edge-app gallery" in check.detail
    assert "owner" not in check.fix and "permissions" not in check.fix, check.fix
    assert "gallery.path" in check.fix
    assert db.read_bytes() == before


def test_doctor_fails_the_gallery_row_of_a_damaged_gallery(tmp_path: Path) -> None:
    """Defect: `doctor` itself crashed with a traceback on a damaged gallery."""
    db = damaged_gallery(tmp_path / "gallery.db")
    config = tmp_path / "config.toml"
    config.write_text(f'[gallery]\npath = "{db}"\n[hub]\nsocket = ""\n')

    done = edge_app(tmp_path, "doctor", "--json", "--config", str(config))

    (check,) = [c for c in json.loads(done.stdout) if c["area"] == "gallery"]
    assert check["status"] == "fail", check
    assert f"gallery {db} {DAMAGED}" in check["detail"]
    assert check["fix"] == "restore the gallery, as the line says"  # not its permissions


@needs_models
def test_enroll_identify_and_run_on_a_damaged_gallery_end_with_one_line(tmp_path: Path) -> None:
    """Defect: enroll and identify ended in a traceback; the door (`run`) logged "stopped on
    an unexpected error" with one and exited 1, a crash for systemd to restart into again."""
    db = damaged_gallery(tmp_path / "gallery.db")
    before = digest(db)
    config = tmp_path / "door.toml"
    config.write_text('[hub]\nsocket = ""\n')
    commands = [
        ["enroll", "--db", str(db), "Joe", *map(str, JOE)],
        ["identify", "--db", str(db), str(JOE[0])],
        ["run", "--config", str(config), "--db", str(db), "--source", str(JOE[0].parent),
         "--gpio", "mock", "--events-db", "", "--backend", "cpu"],
    ]  # fmt: skip
    for argv in commands:
        done = edge_app(tmp_path, *argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert f"gallery {db} {DAMAGED}" in one_error_line(done.stderr), argv
        assert digest(db) == before, argv


# --- hub passwd, hub unlock-code ---------------------------------------------------------------


def hub_without_a_terminal(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`edge-app hub ARGV...` with standard input at its end and no controlling terminal (its
    own session), so getpass reads standard input as under a service or a script."""
    done = subprocess.run(
        [sys.executable, "-m", "edge_app.cli", "hub", *argv],
        cwd=cwd,
        env=_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        start_new_session=True,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.mark.parametrize(("command", "what"), [("passwd", "password"), ("unlock-code", "code")])
def test_hub_secrets_at_the_end_of_input_change_nothing(
    tmp_path: Path, command: str, what: str
) -> None:
    """Defect: `hub passwd` / `hub unlock-code` with </dev/null (or Ctrl-D at the prompt)
    ended in an EOFError traceback. Without a terminal (a script, a service) they now say
    to use --stdin, and Python's "GetPassWarning: Can not control echo" is not shown (a
    walkthrough's finding)."""
    config = tmp_path / "door.toml"
    config.write_text(
        f'[web]\npassword_file = "{tmp_path / "web-password"}"\n'
        f'[mqtt]\nunlock_code_file = "{tmp_path / "unlock.code"}"\n'
    )

    done = hub_without_a_terminal(tmp_path, command, "--config", str(config))

    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert f"no terminal to type the {what} at; give it on the first line of standard " in line
    assert "with --stdin; nothing changed" in line
    assert "GetPassWarning" not in done.stderr and "echo" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["door.toml"]


@pytest.mark.parametrize(("command", "what"), [("passwd", "password"), ("unlock-code", "code")])
def test_hub_secrets_on_stdin_without_a_line_end_are_bounded(
    tmp_path: Path, command: str, what: str
) -> None:
    """Found by an audit: `hub passwd --stdin < /dev/zero` read one line without a bound:
    1.5 GB, then a MemoryError traceback. A line longer than a secret file may be is
    refused and nothing is written."""
    config = tmp_path / "door.toml"
    config.write_text(
        f'[web]\npassword_file = "{tmp_path / "web-password"}"\n'
        f'[mqtt]\nunlock_code_file = "{tmp_path / "unlock.code"}"\n'
    )
    # 4 MB of NUL without a line end: what `< /dev/zero` gives, but an end to the test's
    # own writing should the bound be gone.
    done = _with_stdin(
        tmp_path, "\0" * 4_000_000, "hub", command, "--stdin", "--config", str(config)
    )
    assert done.returncode == 2, done.stderr
    assert f"the {what} on standard input is longer than 65536 characters" in one_error_line(
        done.stderr
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["door.toml"]


@pytest.mark.parametrize("encoding", [None, "utf-8"], ids=["locale", "strict utf-8"])
@pytest.mark.parametrize(("command", "what"), [("passwd", "password"), ("unlock-code", "code")])
def test_hub_secrets_on_stdin_that_are_not_utf8_are_refused(
    tmp_path: Path, command: str, what: str, encoding: str | None
) -> None:
    """A sweep: bytes that are not UTF-8 on `hub passwd --stdin` / `hub unlock-code --stdin`
    ended in a UnicodeDecodeError traceback where stdin decodes strictly (a UTF-8 locale such
    as en_GB.UTF-8, or PYTHONIOENCODING), and were refused as "control characters"
    elsewhere. Both say the input is not UTF-8, and nothing is written."""
    config = tmp_path / "door.toml"
    config.write_text(
        f'[web]\npassword_file = "{tmp_path / "web-password"}"\n'
        f'[mqtt]\nunlock_code_file = "{tmp_path / "unlock.code"}"\n'
    )
    env = _env()
    if encoding is not None:
        env["PYTHONIOENCODING"] = encoding
    done = subprocess.run(
        [sys.executable, "-m", "edge_app.cli", "hub", command, "--stdin", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        input=b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\n",
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    stderr = done.stderr.decode(errors="replace")
    assert "Traceback" not in stderr, stderr
    assert done.returncode == 2, stderr
    line = one_error_line(stderr)
    assert f"the {what} on standard input is not UTF-8 text; nothing changed" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["door.toml"]


@pytest.mark.parametrize(
    ("command", "section", "key", "secret"),
    [
        ("passwd", "web", "password_file", "a long enough password 1"),
        ("unlock-code", "mqtt", "unlock_code_file", "73195286"),
    ],
)
def test_hub_secrets_refuse_a_missing_folder_instead_of_making_it(
    tmp_path: Path, command: str, section: str, key: str, secret: str
) -> None:
    """Defect: `hub passwd` made the password file's missing folders (as root under sudo, mode
    0700: /var/lib/edge-app then unusable by the service user); both secrets refuse."""
    folder = tmp_path / "state" / "edge-app"
    config = tmp_path / "door.toml"
    config.write_text(f'[{section}]\n{key} = "{folder / "secret"}"\n')

    done = subprocess.run(
        [sys.executable, "-m", "edge_app.cli", "hub", command, "--stdin", "--config", str(config)],
        cwd=tmp_path,
        env=_env(),
        input=secret + "\n",
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )

    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert f"{section}.{key}: the folder {folder} does not exist; create it" in line
    assert f"install -d -m 0700 -o edge-app -g edge-app {folder}" in line
    assert not (tmp_path / "state").exists()


def test_a_secret_or_an_export_never_replaces_the_config_or_the_door_files(
    tmp_path: Path,
) -> None:
    """An audit: `hub unlock-code` with unlock_code_file naming the config file replaced the
    config by the code's hash (exit 0); `export --config door.toml door.toml` replaced the
    config by the export, and `export --config door.toml <events db>` the event log."""
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "door.toml"
    config.write_text(
        f'[gallery]\npath = "{state / "gallery.db"}"\n[events]\ndb = "{state / "events.db"}"\n'
        f'[mqtt]\nunlock_code_file = "{config}"\n'
    )
    (state / "events.db").write_bytes(b"the door's audit log")
    before = {p: p.read_bytes() for p in (config, state / "events.db")}

    def cli(*argv: str, secret: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edge_app.cli", *argv],
            cwd=tmp_path,
            env=_env(),
            input=secret,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    code = cli("hub", "unlock-code", "--stdin", "--config", str(config), secret="73195286\n")
    assert code.returncode == 2, code.stderr
    assert "mqtt.unlock_code_file: " in one_error_line(code.stderr)
    assert "is the config file itself" in one_error_line(code.stderr)

    config.write_text(before[config].decode().replace(f'unlock_code_file = "{config}"', ""))
    before[config] = config.read_bytes()
    with Gallery.open(state / "gallery.db", create=True) as gallery:
        gallery.enroll("Ada", samples(2, 1))
    for target, named in ((config, "the config file"), (state / "events.db", "events.db")):
        done = cli("export", "--config", str(config), str(target))
        assert done.returncode == 2, done.stderr
        assert f"{target} is {named}" in one_error_line(done.stderr)
    assert {p: p.read_bytes() for p in before} == before


@needs_models
def test_names_with_control_characters_cannot_drive_the_terminal(tmp_path: Path) -> None:
    """An audit: `identify` printed a file named `esc<ESC>[31mred.jpg` raw (the terminal
    turned red) and one with a newline over two lines; `enroll` logged `<ESC>[2J` (clear
    screen). Names are shown with their control characters escaped."""
    db = tmp_path / "gallery.db"
    with Gallery.open(db, create=True) as gallery:
        gallery.enroll("Ada", samples(2, 1))
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(JOE[0], photos / "esc\x1b[31mred.jpg")
    shutil.copy(JOE[0], photos / "new\nline.jpg")
    (photos / "bad\x1b[2J.jpg").write_bytes(b"not an image")

    done = _with_stdin(tmp_path, "", "identify", "--db", str(db), str(photos))

    assert done.returncode == 2  # the photo that is not one
    output = done.stdout + done.stderr
    assert "\x1b" not in output
    assert f"{photos}/esc\\x1b[31mred.jpg: 1 face(s)" in done.stdout
    assert f"{photos}/new\\x0aline.jpg: 1 face(s)" in done.stdout
    assert f"{photos}/bad\\x1b[2J.jpg: cannot decode" in done.stderr


# --- careless input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "flag", "example"),
    [
        (["list", "--db", ""], "--db", "./gallery.db"),
        (["import", "--db", " ", "export.jsonl"], "--db", "./gallery.db"),
        (["hub", "--config", "", "--sign-unlock", "phone"], "--config", "./door.toml"),
        (["site", "show", "--config", ""], "--config", "./door.toml"),
    ],
    ids=["list", "import", "hub", "site"],
)
def test_an_empty_path_is_refused_by_its_option_name(
    tmp_path: Path, argv: list[str], flag: str, example: str
) -> None:
    """Defect: `--db ''` (an unset shell variable) became Path(""), the current folder, and
    the error was ". is not a regular file". The option is refused while parsing now."""
    done = edge_app(tmp_path, *argv)

    assert done.returncode == 2
    assert f"error: argument {flag}: is empty; give a file's path (e.g. {example})" in done.stderr
    assert "regular file" not in done.stderr
    assert list(tmp_path.iterdir()) == []


@needs_models
def test_demo_plays_a_folder_of_photos_and_names_a_clip_it_cannot_play(tmp_path: Path) -> None:
    """Defect: `demo --clip FOLDER` said "no such video", though the door's camera plays a
    folder of photos. A folder of photos plays now; an empty folder, a missing path and a
    device are each named, with the fix, before the models load."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for photo in sorted((REPO_MODELS.parents[1] / "demo" / "enroll").glob("*/*.jpg")):
        (frames / photo.name).write_bytes(photo.read_bytes())
    empty = tmp_path / "empty"
    empty.mkdir()

    played = edge_app(tmp_path, "demo", "--fast", "--clip", "frames")
    assert played.returncode == 0, played.stderr
    assert "playing frames as the camera" in played.stdout
    assert '"type": "unlock"' in played.stdout

    fix = "give a video file (such as "
    for clip, problem in [
        ("empty", "--clip empty: a folder with no photos (.bmp, .jpeg, .jpg"),
        ("missing.mp4", "--clip missing.mp4: no such file or folder; "),
        ("/dev/null", "--clip /dev/null: not a regular file (a device, pipe or socket); "),
    ]:
        done = edge_app(tmp_path, "demo", "--models", str(tmp_path), "--clip", clip)
        assert done.returncode == 2
        line = one_error_line(done.stderr)
        assert problem in line and fix in line and "or a folder of photos" in line, line


def test_convert_validate_writes_its_default_results_into_the_repository_docs() -> None:
    """Defect: `edge-convert validate`'s --json, --report and --liveness-frames defaulted to
    paths relative to the current folder ("docs/QUANTIZATION.md"), while --models was the
    repository's: run elsewhere, it failed with "cannot write in docs" (or wrote a stray
    docs/). The defaults are the repository's docs now, shown in full in --help."""
    from converter.cli import build_parser as convert_parser
    from edge_app.paths import REPO_ROOT

    args = convert_parser().parse_args(["validate"])
    docs = REPO_ROOT / "docs"

    assert Path(args.json) == docs / "quantization.json"
    assert Path(args.report) == docs / "QUANTIZATION.md"
    assert Path(args.liveness_frames) == docs / "liveness_frames.json"
    assert all(Path(p).is_file() for p in (args.json, args.report, args.liveness_frames))
    helped = " ".join(_convert_help(["validate"]).split())
    assert f"(default {docs / 'QUANTIZATION.md'})" in helped
    assert f"{REPO_MODELS.parent / 'float'} for the default --models" in helped


def _convert_help(words: list[str]) -> str:
    from converter.cli import build_parser as convert_parser

    parser = convert_parser()
    for word in words:
        (choices,) = [
            a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)
        ]
        parser = choices[word]
    return parser.format_help()


@needs_models
def test_identify_json_stays_utf8_with_file_names_that_are_not(tmp_path: Path) -> None:
    """Defect: a photo named with a byte that is not UTF-8 (a Latin-1 "café.jpg" from an old
    camera card) was written into the JSON as that raw byte: the output was not UTF-8, and
    json.load() failed on it. Such bytes are written as \\xNN now, in "image" and "error"."""
    db = small_gallery(tmp_path / "gallery.db")
    photos = tmp_path / "card"
    photos.mkdir()
    (photos / "caf\udce9.jpg").write_bytes(JOE[0].read_bytes())  # the byte 0xE9
    missing = os.fsencode(tmp_path / "gon\udce9.jpg")
    done = subprocess.run(
        [sys.executable, "-m", "edge_app.cli", "-q", "identify", "--json", "--db", str(db)]
        + ["--backend", "cpu", os.fsencode(photos), missing],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )

    assert done.returncode == 2  # the missing photo
    assert b"Traceback" not in done.stderr
    entries = json.loads(done.stdout.decode("utf-8"))  # strict: raises on a stray byte
    assert [e["image"] for e in entries] == [f"{photos}/caf\\xe9.jpg", f"{tmp_path}/gon\\xe9.jpg"]
    assert entries[1]["error"] == f"{tmp_path}/gon\\xe9.jpg: no such file"
    assert len(entries[0]["faces"]) == 1


@needs_models
def test_file_names_that_are_not_utf8_never_crash_text_or_json(tmp_path: Path) -> None:
    """Defect: that fix covered identify --json only. Under a UTF-8 locale whose stdout is
    strict (PYTHONIOENCODING=utf-8; a Pi's en_GB.UTF-8 terminal), identify's text lines and
    enroll's text and JSON raised UnicodeEncodeError (a traceback, exit 1), and enroll --json
    wrote the raw byte under C.UTF-8. Every name is written as \\xNN now."""
    photos = tmp_path / "card"
    photos.mkdir()
    (photos / "caf\udce9.jpg").write_bytes(JOE[0].read_bytes())
    (photos / "bad\udce9.jpg").write_bytes(b"not a photo")
    db = tmp_path / "gallery.db"

    def run(*argv: str | bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "edge_app.cli", "-q", *argv],
            cwd=tmp_path,
            env={**_env(), "PYTHONIOENCODING": "utf-8"},
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )

    cpu = ("--backend", "cpu", "--db", str(db))
    refused = run("enroll", "--json", *cpu, "Joe", os.fsencode(photos))
    assert refused.returncode == 2 and b"Traceback" not in refused.stderr, refused.stderr
    sources = [p["source"] for p in json.loads(refused.stdout.decode("utf-8"))["refused"]]
    assert sources == [f"{photos}/bad\\xe9.jpg"]
    (photos / "bad\udce9.jpg").unlink()
    assert run("enroll", *cpu, "Joe", os.fsencode(photos)).returncode == 0
    (photos / "copy\udce9.jpg").write_bytes(JOE[0].read_bytes())  # a near-duplicate: skipped
    added = run("enroll", "--add", *cpu, "Joe", os.fsencode(photos / "copy\udce9.jpg"))
    assert b"Traceback" not in added.stderr, added.stderr
    assert f"skipped {photos}/copy\\xe9.jpg: near-duplicate".encode() in added.stdout
    named = run("identify", *cpu, os.fsencode(photos / "caf\udce9.jpg"))
    assert named.returncode == 0 and b"Traceback" not in named.stderr, named.stderr
    assert named.stdout.decode("utf-8").startswith(f"{photos}/caf\\xe9.jpg: 1 face(s)")


@needs_models
def test_enroll_json_names_the_photos_it_added_in_utf8(tmp_path: Path) -> None:
    """Defect: enroll --json's "added" list wrote a photo's name that is not UTF-8 as its raw
    byte where stdout passes such bytes on (C.UTF-8, the C locale: a service or ssh without
    a locale): the JSON was not UTF-8 and json.load() failed on it, while "skipped" and
    "refused" showed the byte as \\xNN."""
    photos = tmp_path / "card"
    photos.mkdir()
    (photos / "caf\udce9.jpg").write_bytes(JOE[0].read_bytes())  # the byte 0xE9
    env = {key: value for key, value in _env().items() if key != "PYTHONIOENCODING"}
    done = subprocess.run(
        [sys.executable, "-m", "edge_app.cli", "-q", "enroll", "--json", "--backend", "cpu"]
        + ["--db", str(tmp_path / "gallery.db"), "Joe", os.fsencode(photos)],
        cwd=tmp_path,
        env={**env, "LC_ALL": "C.UTF-8"},
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.decode("utf-8"))  # strict: raises on a stray byte
    assert result["added"] == [f"{photos}/caf\\xe9.jpg"]


@needs_models
def test_identify_help_shows_every_field_of_its_json(tmp_path: Path) -> None:
    """Defect: the JSON example in `identify --help` lacked the "access" field the output
    has (false for a known visitor)."""
    db = small_gallery(tmp_path / "gallery.db")
    done = edge_app(tmp_path, "-q", "identify", "--json", "--db", str(db), str(JOE[0]), "x.jpg")
    entries = json.loads(done.stdout)
    helped = _subparser(["identify"]).format_help()

    (face,) = entries[0]["faces"]
    for key in [*entries[0], *face, *entries[1]]:
        assert f'"{key}"' in helped, key
    assert '"access": true' in helped
    assert '"access" is whether the person may open the door' in helped


def test_list_columns_line_up_with_wide_and_short_names(tmp_path: Path) -> None:
    """Defect: `list` padded names by their number of characters, so a name in CJK script
    (two columns a character) pushed its row out of line; and names shorter than "NAME"
    were padded short of the header."""
    rows = unit_rows(2, 11)
    db = tmp_path / "gallery.db"
    with Gallery.open(db, create=True) as gallery:
        gallery.enroll("山田 太郎", [NewSample(rows[0], "a" * 64)])
        gallery.enroll("Bo", [NewSample(rows[1], "b" * 64)])
    short = small_gallery(tmp_path / "short.db")
    with Gallery.open(short) as gallery:
        gallery.remove(["Emma"])

    lines = edge_app(tmp_path, "list", "--db", str(db)).stdout.splitlines()
    assert lines[0].startswith("NAME       ACCESS  SAMPLES")
    assert sorted(lines[1:])[0].startswith("Bo         yes           1")
    assert sorted(lines[1:])[1].startswith("山田 太郎  yes           1")

    lines = edge_app(tmp_path, "list", "--db", str(short)).stdout.splitlines()
    assert lines[0].startswith("NAME  ACCESS")
    assert lines[1].startswith("Bob   yes           1")


@needs_models
def test_quiet_silences_the_runtime_s_own_info_line_but_not_errors(tmp_path: Path) -> None:
    """Defect: `-q` left "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on stderr:
    the runtime's C++ logger prints it to the descriptor, beyond Python's logging and
    TF_CPP_MIN_LOG_LEVEL. -q drops it at the descriptor; errors still come through."""
    db = small_gallery(tmp_path / "gallery.db")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(JOE[0].read_bytes()[:3000])

    loud = edge_app(tmp_path, "identify", "--db", str(db), "--backend", "cpu", str(JOE[0]))
    assert "Created TensorFlow Lite XNNPACK delegate for CPU" in loud.stderr

    quiet = edge_app(
        tmp_path, "-q", "identify", "--db", str(db), "--backend", "cpu", str(JOE[0]), str(cut)
    )
    assert quiet.returncode == 2
    assert "XNNPACK" not in quiet.stderr and "INFO" not in quiet.stderr, quiet.stderr
    assert "cut.jpg: truncated JPEG" in one_error_line(quiet.stderr)
    assert "1 face(s)" in quiet.stdout


def test_quiet_passes_on_every_other_line_written_to_the_descriptor(tmp_path: Path) -> None:
    """What the runtime writes to descriptor 2 while -q holds it back: its INFO lines are
    dropped, its warnings and errors (and anything else) reach stderr, in order."""
    script = (
        "import os, sys\n"
        "from edge_app.logs import setup_logging\n"
        "from edge_app import runtime\n"
        "setup_logging(int(sys.argv[1]))\n"
        "with runtime._native_info_dropped():\n"
        "    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')\n"
        "    os.write(2, b'ERROR: a native error\\n')\n"
        "    sys.stderr.write('python says\\n')\n"
        "os.write(2, b'after\\n')\n"
    )
    quiet = subprocess.run(
        [sys.executable, "-c", script, "-1"], env=_env(), capture_output=True, text=True
    )
    assert quiet.stderr == "ERROR: a native error\npython says\nafter\n"
    loud = subprocess.run(
        [sys.executable, "-c", script, "0"], env=_env(), capture_output=True, text=True
    )
    assert loud.stderr.startswith("INFO: Created TensorFlow Lite XNNPACK")


@needs_models
def test_ctrl_c_prints_one_line_exits_130_and_writes_no_half_output(tmp_path: Path) -> None:
    """Defect: Ctrl-C ended a long command without a word (exit 130, nothing said). It says
    "interrupted" in one line now; `identify --json` has written nothing of its JSON."""
    db = small_gallery(tmp_path / "gallery.db")
    photos = tmp_path / "photos"
    photos.mkdir()
    # Enough photos to take many seconds: the Ctrl-C must land while they are identified, even
    # on a machine loaded enough to delay this test's own process (a CI run beside others):
    # 120 photos take about 1.5 s on an idle x86 machine, less than a loaded parent may take to
    # read the log line. The interrupted run is no slower for more: it stops at the Ctrl-C.
    for copy in range(500):
        for photo in [*JOE, *MARTHA]:
            (photos / f"{copy}-{photo.name}").write_bytes(photo.read_bytes())
    # As from a terminal, Ctrl-C raises KeyboardInterrupt in the command even when this test
    # runs with SIGINT ignored (a job started in the background inherits that, and so would
    # the command).
    as_from_a_terminal = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'edge-app'; runpy.run_module('edge_app.cli', run_name='__main__')"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", as_from_a_terminal, "identify", "--json", "--db", str(db)]
        + ["--backend", "cpu", str(photos)],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stderr is not None and child.stdout is not None
    seen = ""
    while " people=" not in seen:  # the photos are being identified
        line = child.stderr.readline()
        assert line, seen
        seen += line
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=TIMEOUT)

    assert child.returncode == 130
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines and lines[-1].endswith("WARNING edge_app: interrupted"), err


def test_sign_unlock_help_says_what_origin_is() -> None:
    """Defect: --sign-unlock ORIGIN never said what ORIGIN is."""
    helped = " ".join(_subparser(["hub"]).format_help().split())

    assert "ORIGIN names who sends it (1-64 printable characters, e.g. phone)" in helped
    assert 'the door logs the unlock as "mqtt:ORIGIN"' in helped
    assert "valid for [mqtt] unlock_window_seconds and only once" in helped


# --- unreachable photos, closed standard streams, hostile pair lists --------------------------


def as_an_ordinary_user() -> list[str]:
    """The prefix that runs a command without root's override of file permissions (the suite
    runs as root in CI): same user, but a mode of 000 then means what it says."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        unavailable("no setpriv (util-linux): as root, every file can be read without it")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]


def enroll_beside_a_locked_folder(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`edge-app enroll --db gallery.db ARGV...` as an ordinary user, in a folder holding
    `locked/a.jpg` where `locked` has mode 000."""
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.jpg").write_bytes(JOE[0].read_bytes())
    locked.chmod(0)
    try:
        done = subprocess.run(
            [*as_an_ordinary_user(), sys.executable, "-m", "edge_app.cli"]
            + ["enroll", "--db", "gallery.db", *argv],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    finally:
        locked.chmod(0o700)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_a_folder_that_cannot_be_listed_is_one_line(tmp_path: Path) -> None:
    """Defect: a photo folder the user may not list was a PermissionError traceback (exit 1);
    it is one line naming the folder, and exit 2, before the models load."""
    done = enroll_beside_a_locked_folder(tmp_path, "Joe", "locked")

    assert done.returncode == 2
    assert one_error_line(done.stderr).endswith(
        "ERROR   edge_app: locked: cannot read the folder (Permission denied)"
    )
    assert not (tmp_path / "gallery.db").exists()


@needs_models
def test_photos_out_of_reach_are_refused_like_unreadable_photos(tmp_path: Path) -> None:
    """Defect: a photo in a folder the user may not enter, and a path longer than the system
    allows, were tracebacks (PermissionError, OSError errno 36). Each is now that photo's
    refusal, listed with the others, as for any photo that cannot be read."""
    too_long = "/".join(["a" * 250] * 17) + ".jpg"

    done = enroll_beside_a_locked_folder(
        tmp_path, "--backend", "cpu", "Joe", "locked/a.jpg", too_long, str(JOE[1])
    )

    assert done.returncode == 2
    assert "  locked/a.jpg: cannot read (Permission denied)\n" in done.stderr
    assert f"  {too_long}: cannot read (File name too long)\n" in done.stderr
    assert "(the gallery is unchanged)" in one_error_line(done.stderr)


def closed(tmp_path: Path, redirect: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """`edge-app ARGV... REDIRECT` from a shell: `>&-` starts it with standard output closed,
    `<&-` with standard input closed (cron, a service without them)."""
    return subprocess.run(
        ["sh", "-c", f'exec "$@" {redirect}', "sh", sys.executable, "-m", "edge_app.cli", *argv],
        cwd=tmp_path,
        env=_env(),
        stderr=subprocess.PIPE,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.mark.parametrize(
    "argv",
    [["list"], ["list", "--json"], ["export", "-"], ["access", "Emma", "no"], ["remove", "Bob"]],
    ids=" ".join,
)
def test_commands_with_their_output_closed_run_to_the_end(tmp_path: Path, argv: list[str]) -> None:
    """Defect: a command started with standard output closed (`>&-`) did its work, then
    ended in an AttributeError traceback and exit 1. What it writes goes nowhere now."""
    db = small_gallery(tmp_path / "gallery.db")

    done = closed(tmp_path, ">&-", argv[0], "--db", str(db), *argv[1:])

    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0
    with Gallery.open(db, read_only=True) as gallery:
        people = {person.name: person.access for person in gallery.people()}
    expected = {"Emma": argv != ["access", "Emma", "no"]} | (
        {} if "remove" in argv else {"Bob": True}
    )
    assert people == expected


def test_import_with_its_input_closed_refuses_an_empty_input(tmp_path: Path) -> None:
    """Defect: `import -` with standard input closed (`<&-`) was an AttributeError traceback;
    it reads nothing, and says so in one line."""
    db = small_gallery(tmp_path / "gallery.db")
    before = digest(db)

    done = closed(tmp_path, "<&-", "import", "--db", str(db), "-")

    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2
    assert one_error_line(done.stderr).endswith("the file is empty")
    assert digest(db) == before


@pytest.mark.parametrize(
    ("option", "path", "refusal"),
    [
        ("--pairs", "/dev/zero", "/dev/zero: is a device, not a pair list"),
        ("--pairs", "pairs.fifo", "pairs.fifo: is a named pipe, not a pair list"),
        ("--train", "pairs.fifo", "pairs.fifo: is a named pipe, not a pair list"),
        ("--pairs", "folder", "folder: is a folder, not a pair list"),
        ("--pairs", "huge.txt", "huge.txt: {size} bytes, more than the {cap} bytes a pair list"),
    ],
    ids=["device", "fifo", "train fifo", "folder", "too large"],
)
def test_eval_lfw_refuses_pair_lists_that_are_not_files_in_one_line(
    tmp_path: Path, option: str, path: str, refusal: str
) -> None:
    """Defect: `eval lfw --pairs /dev/zero` read without end (24 GB, then the OOM killer),
    and --pairs or --train naming a FIFO hung. A device, a named pipe, a folder or a file
    over the cap is one line and exit 2, before the models load."""
    os.mkfifo(tmp_path / "pairs.fifo")
    (tmp_path / "folder").mkdir()
    if path == "huge.txt":
        cap = lfw.MAX_PAIR_LIST_BYTES
        with open(tmp_path / path, "wb") as huge:  # sparse: nothing written to the disk
            huge.truncate(cap + 1)
        refusal = refusal.format(size=cap + 1, cap=cap)
    pairs = [] if option == "--pairs" else ["--pairs", str(LFW_SAMPLE / "pairs.txt")]
    four_gib = 4 << 30
    done = subprocess.run(
        [sys.executable, "-m", "edge_app.cli", "eval", "lfw", *pairs, option, path]
        + ["--images", str(LFW_SAMPLE)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=20,
        # Should /dev/zero be read after all, a MemoryError ends it, not the machine.
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (four_gib, four_gib)),
    )

    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2
    assert f"ERROR   edge_app: {refusal}" in one_error_line(done.stderr)


@pytest.mark.parametrize(
    "argv",
    [
        ["access", "--db", "{db}", "Jos\udce9", "no"],
        ["remove", "--db", "{db}", "Jos\udce9"],
        ["rename", "--db", "{db}", "Jos\udce9", "Zed"],
    ],
)
def test_a_name_typed_in_another_encoding_is_not_enrolled_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None, argv: list[str]
) -> None:
    """Found by fuzzing: a Latin-1 terminal's é reaches Python as a lone surrogate, and the
    name lookup's UTF-8 encoding raised UnicodeEncodeError (enroll already refused it)."""
    db = small_gallery(tmp_path / "gallery.db")
    before = digest(db)

    assert cli.main([part.format(db=db) for part in argv]) == 2

    assert "not enrolled: 'Jos\\udce9'" in one_error_line(capsys.readouterr().err)
    assert digest(db) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["doctor", "--config", "{long}"],
        ["enroll", "--db", "{long}", "Joe", "photo.jpg"],
        ["eval", "lfw", "--pairs", "{long}"],
    ],
)
def test_a_path_longer_than_the_system_allows_is_one_line(
    capsys: pytest.CaptureFixture[str], restore_logging: None, argv: list[str]
) -> None:
    """Found by fuzzing: Path.exists() raises ENAMETOOLONG instead of answering False (Python
    3.11 and 3.12), wherever a command first looked at the path: a traceback, exit 1."""
    long = "a" * 300
    assert cli.main([part.format(long=long) for part in argv]) == 2
    assert "a file name longer than the system allows" in one_error_line(capsys.readouterr().err)


def test_a_path_starting_with_the_home_of_no_user_is_refused_as_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """Found by fuzzing: ~nosuchuser/... made Path.expanduser raise RuntimeError ("Could not
    determine home directory"): a traceback from every command, the door's start included."""
    config = tmp_path / "door.toml"
    config.write_text('[gallery]\npath = "~nosuchuser-edge/gallery.db"\n')
    config.chmod(0o600)
    assert cli.main(["list", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert (
        "gallery.path: '~nosuchuser-edge/gallery.db' starts with ~nosuchuser-edge, but there "
        in error
    )
    assert "Traceback" not in error


def test_a_gallery_command_does_not_make_the_doors_state_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A walkthrough: `edge-app enroll NAME photos/` as root on a desktop, with no config and
    no --db, made /var/lib/edge-app (root's, 0700) and a gallery in it that an installed
    door could not read, and said nothing of where it wrote. The state folder is the
    installer's to make: without it the command says to give --events-db."""
    from edge_app import paths
    from edge_app.commands.identify import db_path

    state = tmp_path / "state"
    monkeypatch.setattr(paths, "DEFAULT_STATE_DIR", state)
    config = tmp_path / "door.toml"
    config.write_text(f'[gallery]\npath = "{state / "gallery.db"}"\n')
    config.chmod(0o600)
    args = argparse.Namespace(db=None, config=config)
    with pytest.raises(cli.UserError, match=r"no .*state: the installer makes that folder"):
        db_path(args, create=True)
    assert db_path(args) == state / "gallery.db"  # reading names it; nothing is made
    assert not state.exists()
    photo = REPO_ROOT / "demo" / "enroll" / "Ricardo_Lagos"
    code = cli.main(["enroll", "--config", str(config), "Ricardo Lagos", str(photo)])
    assert code == 2 and "give the gallery with --db" in capsys.readouterr().err
    assert not state.exists()
    state.mkdir(mode=0o700)  # installed: the folder is there, the gallery is made in it
    assert db_path(args, create=True) == state / "gallery.db"
