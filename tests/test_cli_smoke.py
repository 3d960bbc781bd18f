"""Every subcommand of `edge-app` and `edge-convert`, run as a user runs it: a new process.

Each gets `--help` and one real call (a real run on temporary files where that is quick, a
bad input that must be refused cleanly where a real run needs ../shared data or minutes).
Every call is checked for its exit code and for a clean stderr: no traceback, and no
"Exception ignored" from a destructor. Needs only the repository (models/tflite and
tests/data), not ../shared.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import re
import resource
import shlex
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from converter.cli import build_parser as convert_parser
from edge_app.cli import build_parser as app_parser
from edge_app.paths import REPO_ROOT

LFW_SAMPLE = Path(__file__).resolve().parent / "data" / "lfw_sample"
JOE = sorted((LFW_SAMPLE / "Joe_Nichols").glob("*.jpg"))
EDGE_APP = "edge_app.cli"
EDGE_CONVERT = "converter.cli"
TIMEOUT = 180

# `python -c` stand-in for `edge-app` whose default config file is argv[1], to try a broken
# /etc/edge-app/config.toml without touching /etc (paths.DEFAULT_CONFIG is read at call time).
WITH_DEFAULT_CONFIG = (
    "import sys; from pathlib import Path; import edge_app.paths as paths; "
    "paths.DEFAULT_CONFIG = Path(sys.argv.pop(1)); "
    "from edge_app.cli import main; sys.exit(main(sys.argv[1:]))"
)
BAD_CONFIG = """\
[gpio]
pulse_seconds = "three"
colour = "red"
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _python(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`python ARGV...` in cwd; the result, once its stderr is known to be clean."""
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr
    return done


def run(cwd: Path, *argv: str, module: str = EDGE_APP) -> subprocess.CompletedProcess[str]:
    """`python -m MODULE ARGV...`: `edge-app` (or, with module=EDGE_CONVERT, `edge-convert`)."""
    return _python(cwd, "-m", module, *argv)


def run_with_default_config(
    cwd: Path, config: Path, *argv: str
) -> subprocess.CompletedProcess[str]:
    """`edge-app ARGV...` on a machine whose default config file is `config`."""
    return _python(cwd, "-c", WITH_DEFAULT_CONFIG, str(config), *argv)


def _subcommands(parser: object) -> list[list[str]]:
    """Every leaf command of a parser as the words that name it, e.g. ["eval", "lfw"]."""
    import argparse

    found: list[list[str]] = []

    def walk(node: argparse.ArgumentParser, words: list[str]) -> None:
        subs = [a for a in node._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            found.append(words)
            return
        for name, child in subs[0].choices.items():
            walk(child, [*words, name])

    assert isinstance(parser, argparse.ArgumentParser)
    walk(parser, [])
    return found


# `hub` is both a command (the hub process) and the parent of `hub passwd` / `unlock-code`.
APP_COMMANDS = [["hub"], *_subcommands(app_parser())]
CONVERT_COMMANDS = _subcommands(convert_parser())
# The real-call tests below, by command; a new subcommand without one fails the next test.
APP_TESTED = {
    "run", "demo", "enroll", "list", "access", "remove", "rename", "export", "import", "identify",
    "eval lfw", "eval liveness", "eval visits", "eval door", "doctor", "hub", "hub passwd",
    "hub unlock-code", "site show", "site forget", "events",
}  # fmt: skip
CONVERT_TESTED = {"build", "lint", "validate", "float-cascade", "train-head"}


def test_every_subcommand_has_a_real_call_here() -> None:
    assert {" ".join(words) for words in APP_COMMANDS} == APP_TESTED
    assert {" ".join(words) for words in CONVERT_COMMANDS} == CONVERT_TESTED


@pytest.mark.parametrize(
    ("module", "words"),
    [(EDGE_APP, w) for w in [[], *APP_COMMANDS]]
    + [(EDGE_CONVERT, w) for w in [[], *CONVERT_COMMANDS]],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v.split(".")[0],
)
def test_help(tmp_path: Path, module: str, words: list[str]) -> None:
    done = run(tmp_path, *words, "--help", module=module)

    assert done.returncode == 0, done.stderr
    prog = "edge-app" if module == EDGE_APP else "edge-convert"
    assert done.stdout.startswith(f"usage: {' '.join([prog, *words])} ")
    assert done.stderr == ""


@pytest.mark.parametrize(
    ("words", "rule"),
    [
        (["hub", "passwd"], "8 to 1024 printable characters, not only spaces"),
        (["hub", "unlock-code"], "6 to 12 digits"),
    ],
)
def test_the_secret_setters_help_states_the_rule_they_check(
    tmp_path: Path, words: list[str], rule: str
) -> None:
    """Found by an audit: their --help did not say what a password or code must be; a user
    learnt it from a refusal after typing it twice."""
    done = run(tmp_path, *words, "--help")
    assert done.returncode == 0, done.stderr
    assert rule in " ".join(done.stdout.split())


@pytest.mark.parametrize(
    ("module", "prog"), [(EDGE_APP, "edge-app"), (EDGE_CONVERT, "edge-convert")]
)
def test_version_through_python_m(tmp_path: Path, module: str, prog: str) -> None:
    done = run(tmp_path, "--version", module=module)

    assert done.returncode == 0
    assert done.stdout.startswith(f"{prog} ")


def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    done = run(tmp_path)

    assert done.returncode == 2
    assert "the following arguments are required: COMMAND" in done.stderr


# ---- edge-app: the gallery commands on a real gallery ---------------------------------------


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A gallery with Joe enrolled from one photo by `edge-app enroll`, and that call."""
    folder = tmp_path_factory.mktemp("gallery")
    db = folder / "gallery.db"
    done = run(folder, "enroll", "Joe", str(JOE[0]), "--db", str(db), "--backend", "cpu")
    return db, done


def _copy(db: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "gallery.db"
    shutil.copyfile(db, copy)
    copy.chmod(0o600)
    return copy


def test_enroll(enrolled: tuple[Path, subprocess.CompletedProcess]) -> None:
    db, done = enrolled

    assert done.returncode == 0, done.stderr
    assert "enrolled 'Joe': 1 new sample(s)" in done.stdout
    assert db.stat().st_mode & 0o777 == 0o600


def test_list(enrolled: tuple[Path, subprocess.CompletedProcess], tmp_path: Path) -> None:
    done = run(tmp_path, "list", "--json", "--db", str(enrolled[0]))

    assert done.returncode == 0, done.stderr
    people = json.loads(done.stdout)
    assert [(p["name"], p["samples"]) for p in people] == [("Joe", 1)]


def test_gallery_commands_take_the_gallery_of_a_door_config(
    enrolled: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    db = _copy(enrolled[0], tmp_path)
    config = tmp_path / "door.toml"
    config.write_text(f'[gallery]\npath = "{db}"\n')

    renamed = run(tmp_path, "rename", "Joe", "Joseph", "--config", str(config))
    listed = run(tmp_path, "list", "--json", "--config", str(config))
    both = run(tmp_path, "list", "--config", str(config), "--db", str(db))
    missing = run(tmp_path, "list", "--config", str(tmp_path / "nope.toml"))

    assert renamed.returncode == 0, renamed.stderr
    assert [p["name"] for p in json.loads(listed.stdout)] == ["Joseph"]
    assert both.returncode == 2
    assert "argument --db: not allowed with argument --config" in both.stderr
    assert missing.returncode == 2
    assert _one_error_line(missing).endswith("nope.toml: config file not found")
    config.write_text('[gallery]\npath = "gallery.db"\n')  # relative to the door's folder
    relative = run(tmp_path, "list", "--config", str(config))
    assert "gallery.path gallery.db in the config is relative" in _one_error_line(relative)


def test_rename(enrolled: tuple[Path, subprocess.CompletedProcess], tmp_path: Path) -> None:
    db = _copy(enrolled[0], tmp_path)

    done = run(tmp_path, "rename", "Joe", "Joseph", "--db", str(db))

    assert done.returncode == 0, done.stderr
    listed = json.loads(run(tmp_path, "list", "--json", "--db", str(db)).stdout)
    assert [p["name"] for p in listed] == ["Joseph"]


def test_rename_says_the_name_as_stored(
    enrolled: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    """Spaces, tabs and newlines in a typed name are folded; the confirmation shows the result."""
    db = _copy(enrolled[0], tmp_path)

    done = run(tmp_path, "rename", "Joe", "  Joseph \n\t Nichols ", "--db", str(db))

    assert done.returncode == 0, done.stderr
    assert done.stdout == "renamed 'Joe' to 'Joseph Nichols'\n"
    listed = json.loads(run(tmp_path, "list", "--json", "--db", str(db)).stdout)
    assert [p["name"] for p in listed] == ["Joseph Nichols"]


def test_remove(enrolled: tuple[Path, subprocess.CompletedProcess], tmp_path: Path) -> None:
    db = _copy(enrolled[0], tmp_path)

    done = run(tmp_path, "remove", "Joe", "--db", str(db))

    assert done.returncode == 0, done.stderr
    assert json.loads(run(tmp_path, "list", "--json", "--db", str(db)).stdout) == []


def test_export_then_import(
    enrolled: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    exported = tmp_path / "joe.jsonl"
    other = tmp_path / "other.db"

    done = run(tmp_path, "export", str(exported), "--db", str(enrolled[0]))
    assert done.returncode == 0, done.stderr
    done = run(tmp_path, "import", str(exported), "--db", str(other))
    assert done.returncode == 0, done.stderr

    assert exported.stat().st_mode & 0o777 == 0o600
    listed = json.loads(run(tmp_path, "list", "--json", "--db", str(other)).stdout)
    assert [(p["name"], p["samples"]) for p in listed] == [("Joe", 1)]


def test_import_merge_names_whom_it_took_access_from(
    enrolled: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    """A door that took Joe's access away passes that on to a gallery merging its export."""
    source, other = _copy(enrolled[0], tmp_path), tmp_path / "other.db"
    exported = tmp_path / "joe.jsonl"
    assert run(tmp_path, "export", str(exported), "--db", str(source)).returncode == 0
    assert run(tmp_path, "import", str(exported), "--db", str(other)).returncode == 0
    assert run(tmp_path, "access", "Joe", "no", "--db", str(source)).returncode == 0
    assert run(tmp_path, "export", str(exported), "--db", str(source)).returncode == 0

    done = run(tmp_path, "import", "--merge", str(exported), "--db", str(other))

    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        "access turned off for 'Joe': the file lists them without access; "
        "`edge-app access NAME yes` gives it back\n"
    )
    listed = json.loads(run(tmp_path, "list", "--json", "--db", str(other)).stdout)
    assert [(p["name"], p["access"]) for p in listed] == [("Joe", False)]


def _gallery(folder: Path, people: int = 5) -> Path:
    """A gallery of `people` random faces in `folder`, made through the Gallery API."""
    from edge_app.gallery import Gallery, NewSample

    rng = np.random.default_rng(people)
    db = folder / "gallery.db"
    with Gallery.open(db, create=True) as gallery:
        for number in range(people):
            gallery.enroll(f"P{number}", [NewSample(_unit(rng.normal(size=512)), "0" * 64)])
    return db


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    return line


@pytest.mark.parametrize("target", ["itself", "wal", "hard-link", "symbolic-link"])
def test_export_refuses_the_gallery_itself(tmp_path: Path, target: str) -> None:
    db = _gallery(tmp_path)
    out = {
        "itself": db,
        "wal": Path(f"{db}-wal"),  # there while the gallery is open
        "hard-link": tmp_path / "hard.jsonl",
        "symbolic-link": tmp_path / "soft.jsonl",
    }[target]
    if target == "hard-link":
        os.link(db, out)
    if target == "symbolic-link":
        out.symlink_to(db)
    before = db.read_bytes()

    line = _one_error_line(run(tmp_path, "export", "--db", str(db), str(out)))

    assert f"{out} is the gallery's own file {db}" in line
    assert db.read_bytes() == before
    listed = json.loads(run(tmp_path, "list", "--json", "--db", str(db)).stdout)
    assert len(listed) == 5


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
def test_export_refuses_the_side_files_of_a_gallery_named_through_a_link(
    tmp_path: Path, suffix: str
) -> None:
    """Found by an audit: with the gallery named by a symbolic link, SQLite keeps its -wal
    beside the link's target, which the check did not look at: exported over the live -wal
    of a door holding the gallery open, a removal of access made just before came back
    when the door restarted. Refused, whether the file is there now or not."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").mkdir()
    real = _gallery(tmp_path / "real")
    named = tmp_path / "link" / "gallery.db"
    named.symlink_to(Path("..") / "real" / "gallery.db")
    out = Path(f"{real}{suffix}")
    holder = sqlite3.connect(real)  # the door, reading it in WAL mode: its -wal and -shm exist
    try:
        holder.execute("SELECT count(*) FROM people").fetchone()
        line = _one_error_line(run(tmp_path, "export", "--db", str(named), str(out)))
        assert f"{out} is the gallery's own file {real}{suffix}" in line
    finally:
        holder.close()
    assert suffix != "-journal" or not out.exists()  # nothing written where none was
    listed = json.loads(run(tmp_path, "list", "--json", "--db", str(named)).stdout)
    assert len(listed) == 5


def test_a_hint_naming_a_person_whose_name_begins_with_a_dash_works_when_pasted(
    tmp_path: Path,
) -> None:
    """Found by an audit: `edge-app access -Ann no` was refused by argparse (-Ann taken for
    an option); the hints put `--` before such a name, as the web page does."""
    db = _gallery(tmp_path)
    done = run(tmp_path, "enroll", "--db", str(db), "--add", "--no-access", "--", "-Ann", "a.jpg")
    assert done.returncode == 2
    hint = re.search(r"`edge-app (access [^`]*)`", done.stderr)
    assert hint is not None and hint[1] == "access -- -Ann no"
    pasted = run(tmp_path, "access", "--db", str(db), *shlex.split(hint[1])[1:])
    assert pasted.returncode == 2 and "usage:" not in pasted.stderr
    assert "-Ann" in pasted.stderr and "not enrolled" in pasted.stderr


def test_export_replaces_an_earlier_export_and_nothing_else(tmp_path: Path) -> None:
    """Found by an audit: `export --db G FILE` silently replaced another gallery, an events
    database or a config at FILE. An earlier export, or an empty file, is replaced."""
    db = _gallery(tmp_path)
    other = _gallery(tmp_path / "other")
    config = tmp_path / "door.toml"
    config.write_text("[gpio]\npin = 17\n")
    for kept in (other, config):
        before = kept.read_bytes()
        line = _one_error_line(run(tmp_path, "export", "--db", str(db), str(kept)))
        assert line.endswith(
            f"{kept} already holds a file that is not an edge-app export: export to another "
            "file, or remove that one first; it is unchanged"
        )
        assert kept.read_bytes() == before
    out = tmp_path / "nightly.jsonl"
    out.write_bytes(b"")
    for _ in range(2):  # an empty file, then the export of the night before
        done = run(tmp_path, "export", "--db", str(db), str(out))
        assert done.returncode == 0, done.stderr
        assert json.loads(out.read_text().splitlines()[0])["people"] == 5


def test_export_refuses_a_fifo_and_leaves_it(tmp_path: Path) -> None:
    db = _gallery(tmp_path)
    out = tmp_path / "out.jsonl"
    os.mkfifo(out)

    line = _one_error_line(run(tmp_path, "export", "--db", str(db), str(out)))

    assert f"{out}: it is a named pipe (FIFO), not a regular file" in line
    assert stat.S_ISFIFO(os.lstat(out).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery.db", "out.jsonl"]


@pytest.mark.parametrize("words", [["list", "--json"], ["export", "-"]], ids=["list", "export"])
def test_output_whose_reader_went_away_ends_quietly(tmp_path: Path, words: list[str]) -> None:
    """`edge-app export - | head -c10`: exit 141 as a shell reports SIGPIPE, and no traceback
    or "Exception ignored" when the interpreter flushes at exit."""
    db = _gallery(tmp_path)
    child = subprocess.Popen(
        [sys.executable, "-m", EDGE_APP, *words, "--db", str(db)],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # the reader is gone before the first write
    stderr = child.stderr.read()
    child.stderr.close()

    assert child.wait(TIMEOUT) == 141, stderr
    assert stderr == ""


def _file_size_limit(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def test_output_to_a_full_disk_is_one_error_line(tmp_path: Path) -> None:
    """A file size limit stands in for a full disk: the write fails (EFBIG) part way."""
    db = _gallery(tmp_path, people=30)
    out = tmp_path / "out.jsonl"
    with out.open("w") as stdout:
        done = subprocess.run(
            [sys.executable, "-m", EDGE_APP, "export", "-", "--db", str(db)],
            cwd=tmp_path,
            env=_env(),
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=TIMEOUT,
            preexec_fn=lambda: _file_size_limit(50_000),
            check=False,
        )

    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.endswith("cannot write the output: File too large")
    assert out.stat().st_size == 50_000


@pytest.mark.parametrize("output", ["full", "gone", "closed"])
def test_edge_convert_output_that_cannot_be_written_is_no_traceback(
    tmp_path: Path, output: str
) -> None:
    """Found by an audit: `edge-convert lint ... > /dev/full` was an OSError traceback, `|
    head -0` a BrokenPipeError one, and `>&-` an AttributeError one: edge-convert lacked
    edge-app's handling of its output. It has it now: one line and exit 2, quietly 141, 0."""
    model = str(REPO_ROOT / "models" / "tflite" / "facenet.tflite")
    argv = [sys.executable, "-m", EDGE_CONVERT, "lint", model]
    if output == "gone":
        child = subprocess.Popen(
            argv, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert child.stdout is not None and child.stderr is not None
        child.stdout.close()  # the reader is gone before the first write
        errors = child.stderr.read().decode()
        child.stderr.close()
        assert child.wait(TIMEOUT) == 141 and errors == "", errors
        return
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            argv,
            cwd=tmp_path,
            env=_env(),
            stdout=full if output == "full" else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=TIMEOUT,
            check=False,
            pass_fds=(),
            preexec_fn=(lambda: os.close(1)) if output == "closed" else None,
        )
    assert "Traceback" not in done.stderr, done.stderr
    if output == "full":
        assert done.returncode == 2
        (line,) = done.stderr.splitlines()
        assert line.endswith("cannot write the output: No space left on device")
    else:
        assert done.returncode == 0, done.stderr


def test_a_change_whose_summary_cannot_be_written_says_it_may_be_made(tmp_path: Path) -> None:
    """An audit: `rename A B > /dev/full` exited 2 with "cannot write the output" and the
    rename made; a script retrying an import that way is then told the people are there."""
    from edge_app.gallery import Gallery

    db = _gallery(tmp_path, people=2)
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", EDGE_APP, "rename", "P0", "Renamed", "--db", str(db)],
            cwd=tmp_path,
            env=_env(),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.endswith(
        "cannot write the output: No space left on device; the gallery may have been changed "
        "all the same: check it"
    )
    with Gallery.open(db) as gallery:
        assert "Renamed" in [p.name for p in gallery.people()]


def test_enroll_and_import_refuse_a_db_in_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    exported = tmp_path / "people.jsonl"
    run(tmp_path, "export", "--db", str(_gallery(tmp_path)), str(exported))
    db = tmp_path / "missing" / "dir" / "g.db"

    enrolled = run(tmp_path, "enroll", "Joe", str(JOE[0]), "--db", str(db))
    imported = run(tmp_path, "import", str(exported), "--db", str(db))

    for done in (enrolled, imported):
        line = _one_error_line(done)
        assert f"--db {db}: there is no folder {db.parent}; create it first" in line
    assert not (tmp_path / "missing").exists()


def test_the_configured_gallery_folder_is_made_when_missing(tmp_path: Path) -> None:
    """gallery.path (by default under the state directory) is where the door looks: its
    folder is made, 0700, by the first command that creates the gallery."""
    exported = tmp_path / "people.jsonl"
    run(tmp_path, "export", "--db", str(_gallery(tmp_path)), str(exported))
    state = tmp_path / "state"
    config = tmp_path / "config.toml"
    config.write_text(f'[gallery]\npath = "{state / "gallery.db"}"\n')

    done = run_with_default_config(tmp_path, config, "import", str(exported))

    assert done.returncode == 0, done.stderr
    assert (state / "gallery.db").is_file()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def _run_door(
    tmp_path: Path,
    source: str,
    *flags: str,
    db: Path | None = None,
    events_db: str = "",
    config_text: str = "",
) -> subprocess.CompletedProcess[str]:
    """`edge-app run` on `source` with a mock relay and no control socket."""
    config = tmp_path / "door.toml"
    config.write_text('[hub]\nsocket = ""\n' + config_text)
    return run(
        tmp_path,
        "run",
        "--config", str(config),
        "--source", source,
        "--db", str(db or _gallery(tmp_path)),
        "--gpio", "mock",
        "--events-db", events_db,
        "--backend", "cpu",
        *flags,
    )  # fmt: skip


def _run_door_that_cannot_start(tmp_path: Path, source: str) -> list[str]:
    """`edge-app run` on `source` with a mock relay: it must exit 2 with one ERROR line."""
    done = _run_door(tmp_path, source)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, done.stderr
    return errors


def test_a_run_refused_for_its_gallery_writes_no_event_store(tmp_path: Path) -> None:
    events = tmp_path / "state" / "events.db"

    done = _run_door(tmp_path, str(LFW_SAMPLE), db=tmp_path / "absent.db", events_db=str(events))

    assert done.returncode == 2, done.stderr
    assert f"no gallery at {tmp_path / 'absent.db'}" in done.stderr
    assert not events.parent.exists()  # nothing half-made by a start that was refused


def test_run_refuses_a_source_it_cannot_open_in_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.touch()
    errors = _run_door_that_cannot_start(tmp_path, str(empty))
    assert "camera.source: cannot open" in errors[0]
    assert f"{empty} as a video" in errors[0]


def test_a_detection_frame_smaller_than_the_models_smallest_face_is_refused_at_start(
    tmp_path: Path,
) -> None:
    """Found by an audit: camera.lores 32x32 with detection.min_face = "auto" (the models'
    40 pixels) ran a door that could never find a face, without a word. The config checks a
    min_face it sets; the models' own is checked once they are loaded."""
    config = "[camera]\nwidth = 640\nheight = 480\nlores_width = 32\nlores_height = 32\n"
    done = _run_door(tmp_path, str(LFW_SAMPLE), config_text=config)
    assert done.returncode == 2, done.stderr
    assert "camera.lores_width: the detection frame 32x32 is smaller than the smallest face" in (
        done.stderr
    )
    assert "at least 40" in done.stderr


def test_run_check_config_says_whether_the_door_would_start_and_opens_nothing(
    tmp_path: Path,
) -> None:
    """`edge-app run --check-config`, which the installer runs on a kept config before an
    upgrade restarts the door: the door's own checks, and nothing opened."""
    good = tmp_path / "door.toml"
    good.write_text("[gpio]\npin = 27\n")
    absent_camera = "/dev/edge-app-test-unplugged"  # the door waits for it to be plugged in
    done = run(tmp_path, "run", "--check-config", "--config", str(good), "--source", absent_camera)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{good}: valid; the door would start with it\n"
    # A walkthrough: a mistyped recording was "valid", and the start then refused it.
    typo = str(tmp_path / "clp.mp4")
    done = run(tmp_path, "run", "--check-config", "--config", str(good), "--source", typo)
    assert done.returncode == 2 and done.stdout == ""
    assert f"--source: {typo} does not exist" in done.stderr
    # And a mistyped models folder (a walkthrough): the start would refuse it too.
    misplaced = tmp_path / "modles"
    done = run(tmp_path, "run", "--check-config", "--config", str(good), "--models", str(misplaced))
    assert done.returncode == 2 and done.stdout == ""
    assert f"--models: no models folder {misplaced} (does not exist): check the path" in done.stderr
    (tmp_path / "models.toml").write_text(f'[models]\ndir = "{misplaced}"\n')
    done = run(tmp_path, "run", "--check-config", "--config", str(tmp_path / "models.toml"))
    assert done.returncode == 2 and "models.dir: no models folder" in done.stderr

    bad = tmp_path / "bad.toml"
    bad.write_text(BAD_CONFIG)
    done = run(tmp_path, "run", "--check-config", "--config", str(bad))
    assert done.returncode == 2 and done.stdout == ""
    assert "gpio.pulse_seconds" in done.stderr and "gpio.colour: unknown key" in done.stderr

    done = run(tmp_path, "run", "--check-config", "--config", str(good), "--pin", "99")
    assert done.returncode == 2 and done.stdout == ""
    assert "command line: 1 problem(s)" in done.stderr and "gpio.pin: 99" in done.stderr

    absent = tmp_path / "absent.toml"
    done = run_with_default_config(tmp_path, absent, "run", "--check-config")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"no config file at {absent}: the door would start with the defaults\n"
    done = run_with_default_config(tmp_path, bad, "run", "--check-config")
    assert done.returncode == 2 and "gpio.colour: unknown key" in done.stderr


def _models_copy(tmp_path: Path, name: str) -> Path:
    """A copy of the shipped models, to tamper with."""
    folder = tmp_path / name
    shutil.copytree(REPO_ROOT / "models" / "tflite", folder)
    return folder


def _set_manifest(folder: Path, change: Any) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_run_check_config_refuses_models_the_door_would_refuse(tmp_path: Path) -> None:
    """Found by an audit: `run --check-config` said "valid" for model folders that `run`
    refused at its start (a file altered, another model under a model's name with its
    sha256 updated, a liveness mode the models cannot serve), so an upgrade the installer
    had checked restarted the door into a loop of refused starts, locked. The check now
    loads the models as the start does, on the CPU."""
    good = tmp_path / "door.toml"
    good.write_text("[gpio]\npin = 27\n")
    shipped = _models_copy(tmp_path, "shipped")
    done = run(tmp_path, "run", "--check-config", "--config", str(good), "--models", str(shipped))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{good}: valid; the door would start with it\n"

    altered = _models_copy(tmp_path, "altered")
    with (altered / "rnet.tflite").open("ab") as model:
        model.write(b"\0")
    done = run(tmp_path, "run", "--check-config", "--config", str(good), "--models", str(altered))
    assert done.returncode == 2 and done.stdout == ""
    assert "models do not match the manifest" in done.stderr and "rnet.tflite" in done.stderr

    # R-Net's file in O-Net's place, its sha256 updated: only loading it tells
    swapped = _models_copy(tmp_path, "swapped")
    shutil.copyfile(swapped / "rnet.tflite", swapped / "onet.tflite")
    digest = json.loads((swapped / "manifest.json").read_text())["models"]["rnet"]["sha256"]
    _set_manifest(swapped, lambda m: m["models"]["onet"].update(sha256=digest))
    done = run(tmp_path, "run", "--check-config", "--config", str(good), "--models", str(swapped))
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert "onet.tflite: not the model its manifest entry describes" in done.stderr

    # a config asking for liveness of models that have none
    no_liveness = _models_copy(tmp_path, "no_liveness")

    def drop_liveness(manifest: dict[str, Any]) -> None:
        for name in ("minifasnet_v2", "minifasnet_v1se"):
            del manifest["models"][name]
        manifest.pop("liveness", None)

    _set_manifest(no_liveness, drop_liveness)
    required = tmp_path / "required.toml"
    required.write_text('[liveness]\nmode = "require"\n')
    done = run(
        tmp_path, "run", "--check-config", "--config", str(required), "--models", str(no_liveness)
    )
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert 'liveness.mode = "require" needs a liveness model' in done.stderr

    # Edge TPU builds are checked by their sha256 where the config may run them
    tpu = _models_copy(tmp_path, "tpu")
    (tpu / "onet_edgetpu.tflite").write_bytes(b"not the compiled model")
    _set_manifest(
        tpu,
        lambda m: [
            spec.update(edgetpu={"file": "onet_edgetpu.tflite", "sha256": "0" * 64})
            for spec in m["models"].values()
        ],
    )
    done = run(tmp_path, "run", "--check-config", "--config", str(good), "--models", str(tpu))
    assert done.returncode == 2 and "onet_edgetpu.tflite" in done.stderr, done.stderr
    done = run(
        tmp_path, "run", "--check-config", "--config", str(good), "--models", str(tpu),
        "--backend", "cpu",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = run(
        tmp_path, "run", "--check-config", "--config", str(good), "--models", str(shipped),
        "--backend", "edgetpu",
    )  # fmt: skip
    assert done.returncode == 2 and "not compiled for the Edge TPU" in done.stderr, done.stderr


def test_run_check_config_judges_the_cascade_and_folders_as_the_door_would(
    tmp_path: Path,
) -> None:
    """Found by a review: with models compiled for the Edge TPU and no float cascade,
    `cascade = "float"` was refused although the door on the Edge TPU runs int8 whatever
    the cascade asks, so the installer would have stopped an upgrade of a working door. And a
    gallery or events database in a folder any user may write was "valid", while the door
    refuses the gallery (no start) and records no event in such a database."""
    tpu = _models_copy(tmp_path, "tpu")

    def compiled_without_float(manifest: dict[str, Any]) -> None:
        manifest.pop("float_cascade")
        for spec in manifest["models"].values():  # the CPU files stand in for compiled ones
            spec["edgetpu"] = {"file": spec["file"], "sha256": spec["sha256"]}

    _set_manifest(tpu, compiled_without_float)
    config = tmp_path / "float.toml"
    from edge_app.runtime import edgetpu_library_problem

    # "auto" runs on the Edge TPU where its library loads (not on this machine, most likely)
    auto = 0 if edgetpu_library_problem() is None else 2
    for backend, code in (("edgetpu", 0), ("auto", auto), ("cpu", 2)):
        config.write_text(f'[models]\ndir = "{tpu}"\ncascade = "float"\nbackend = "{backend}"\n')
        done = run(tmp_path, "run", "--check-config", "--config", str(config))
        assert done.returncode == code, (backend, done.stderr)
    assert 'models.cascade = "float" but' in done.stderr

    open_folder = tmp_path / "open"
    open_folder.mkdir()
    open_folder.chmod(0o1777)
    for key, text in (
        ("events.db", f'[events]\ndb = "{open_folder}/events.db"\n'),
        ("gallery.path", f'[gallery]\npath = "{open_folder}/gallery.db"\n'),
    ):
        config.write_text(text)
        done = run(tmp_path, "run", "--check-config", "--config", str(config))
        assert done.returncode == 2 and done.stdout == "", done.stderr
        assert f"{key}: " in done.stderr and "may be written by any user" in done.stderr
    # A relative path is the folder the door runs in, not this one's: not judged here.
    config.write_text('[gallery]\npath = "gallery.db"\n[events]\ndb = "events.db"\n')
    done = run(open_folder, "run", "--check-config", "--config", str(config))
    assert done.returncode == 0, done.stderr
    if os.geteuid() == 0:  # a file of another user, which others may write: refused
        private = tmp_path / "private"
        private.mkdir(mode=0o700)
        config.write_text(
            f'[gallery]\npath = "{private}/gallery.db"\n[events]\ndb = "{private}/events.db"\n'
        )
        for key, name in (("gallery.path", "gallery.db"), ("events.db", "events.db")):
            planted = private / name
            planted.write_bytes(b"")
            os.chown(planted, 1234, 1234)
            planted.chmod(0o666)
            done = run(tmp_path, "run", "--check-config", "--config", str(config))
            assert done.returncode == 2 and f"{key}: " in done.stderr, done.stderr
            assert "may be written by users other than its owner" in done.stderr
            planted.unlink()


def test_run_check_config_refuses_a_gallery_path_the_gallery_would_refuse(tmp_path: Path) -> None:
    """check-config judged gallery.path with rules of its own, part of what the gallery checks
    when it opens the file: a path naming a text file or an empty file was "valid", and the
    door then refused to start. It now asks the gallery's own check (refuse_untrusted),
    which opens nothing: the file is left as it was."""
    config = tmp_path / "door.toml"
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    empty = folder / "empty.db"
    empty.write_bytes(b"")
    empty.chmod(0o600)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a gallery\n" * 20)
    for target, words in (
        (notes, "is not an SQLite database, so not an edge-app gallery"),
        (empty, "is empty, not an edge-app gallery"),
    ):
        config.write_text(f'[gallery]\npath = "{target}"\n[events]\ndb = "{folder}/events.db"\n')
        done = run(tmp_path, "run", "--check-config", "--config", str(config))
        assert done.returncode == 2 and done.stdout == "", done.stderr
        assert f"gallery.path: {target} {words}" in done.stderr
    assert notes.read_text() == "not a gallery\n" * 20 and empty.read_bytes() == b""
    assert sorted(p.name for p in folder.iterdir()) == ["empty.db"]  # nothing made


def test_run_check_config_advises_changing_what_named_the_gallery(tmp_path: Path) -> None:
    """A review: a config's gallery.path naming no gallery was refused with the advice to
    "pass --db", and a --db naming none was refused as "gallery.path". The refusal names
    the flag or the key that gave the path, and advises changing that one."""
    config = tmp_path / "door.toml"
    notes = tmp_path / "notes.txt"
    notes.write_text("not a gallery\n" * 20)
    config.write_text(f'[gallery]\npath = "{notes}"\n[events]\ndb = ""\n')
    by_key = run(tmp_path, "run", "--check-config", "--config", str(config))
    assert by_key.returncode == 2, by_key.stderr
    assert f"gallery.path: {notes} is not an SQLite database" in by_key.stderr
    assert "set gallery.path to the path of an edge-app gallery" in by_key.stderr
    assert "--db" not in by_key.stderr
    config.write_text('[events]\ndb = ""\n')
    by_flag = run(tmp_path, "run", "--check-config", "--config", str(config), "--db", str(notes))
    assert by_flag.returncode == 2, by_flag.stderr
    assert f"--db: {notes} is not an SQLite database" in by_flag.stderr
    assert "pass --db with the path of an edge-app gallery" in by_flag.stderr
    assert "gallery.path" not in by_flag.stderr
    open_folder = tmp_path / "shared"
    open_folder.mkdir()
    open_folder.chmod(0o777)
    events = run(
        tmp_path,
        "run",
        "--check-config",
        "--config",
        str(config),
        "--events-db",
        str(open_folder / "events.db"),
    )
    assert events.returncode == 2 and "--events-db: the events database's folder" in events.stderr
    assert list(open_folder.iterdir()) == []
    assert notes.read_text() == "not a gallery\n" * 20


def test_an_installed_models_dir_written_out_is_checked_with_the_staged_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a review: a kept config that names the installed models folder itself
    (`[models] dir = "/usr/share/edge-app/models"`) was checked with the old models, not the
    upgrade's staged ones."""
    from edge_app import cli, paths

    installed = _models_copy(tmp_path, "installed")
    staged = _models_copy(tmp_path, "models.new")
    (staged / "facenet.tflite").write_bytes(b"cut short")
    monkeypatch.setattr(paths, "INSTALLED_MODELS", installed)
    config = tmp_path / "door.toml"
    config.write_text(f'[models]\ndir = "{installed}"\n')
    argv = ["run", "--check-config", "--config", str(config)]
    assert cli.main([*argv]) == 0
    assert cli.main([*argv, "--installed-models", str(staged)]) == 2
    assert "facenet.tflite" in capsys.readouterr().err


def test_run_check_config_checks_an_upgrades_models_where_the_installer_stages_them(
    tmp_path: Path,
) -> None:
    """The installer checks a kept config with the new program and the new models before
    it puts them in place: --installed-models stands for the installed folder, for a config
    that names no models.dir; one that names its own is checked with its own."""
    good = tmp_path / "door.toml"
    good.write_text("[gpio]\npin = 27\n")
    staged = _models_copy(tmp_path, "models.new")
    (staged / "facenet.tflite").write_bytes(b"cut short")
    done = run_with_default_config(
        tmp_path, good, "run", "--check-config", "--installed-models", str(staged)
    )
    assert done.returncode == 2 and "facenet.tflite" in done.stderr, done.stderr
    own = tmp_path / "own.toml"
    own.write_text(f'[models]\ndir = "{REPO_ROOT / "models" / "tflite"}"\n')
    done = run_with_default_config(
        tmp_path, own, "run", "--check-config", "--installed-models", str(staged)
    )
    assert done.returncode == 0, done.stderr
    done = run(tmp_path, "run", "--installed-models", str(staged), "--config", str(good))
    assert done.returncode == 2
    assert "--installed-models is for --check-config" in done.stderr


def test_enrol_from_the_camera_refuses_an_empty_source(tmp_path: Path) -> None:
    """Found by an audit: `--source ""` (an unset shell variable) read the current folder as
    a folder of images and enrolled from whatever photos were in it."""
    cv2.imwrite(str(tmp_path / "someone.png"), np.full((120, 160, 3), 90, np.uint8))
    for empty in ("", "  "):
        done = run(tmp_path, "enroll", "--db", "g.db", "--camera", "--source", empty, "Zed")
        assert done.returncode == 2 and "argument --source: is empty" in done.stderr
    assert not (tmp_path / "g.db").exists()


def test_a_door_started_by_systemd_on_a_refused_config_waits_for_it_to_change(
    tmp_path: Path,
) -> None:
    """A refused config restarted the door every 3 s (RestartSec), each start logging the
    same problems: 28,800 times a day, until someone fixed the file. Under systemd the door
    says why at once, in the log and in `systemctl status`, then exits when the file changes
    (or after CONFIG_REFUSED_WAIT); a stop (SIGTERM) ends the wait at once."""
    import signal
    import socket

    config = tmp_path / "door.toml"
    config.write_text("[gpio]\npin = 99\n")
    notify = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify))
        listener.settimeout(15)
        for stop in ("change", "sigterm"):
            door = subprocess.Popen(
                [sys.executable, "-m", EDGE_APP, "run", "--config", str(config), "--gpio", "mock"],
                cwd=tmp_path,
                env={**_env(), "NOTIFY_SOCKET": str(notify)},
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                status = listener.recv(4096).decode()
                assert status == (
                    f"STATUS=config refused, waiting for it to change: {config}: 1 problem(s):"
                )
                time.sleep(0.5)
                assert door.poll() is None  # waiting, not restarting
                start = time.monotonic()
                if stop == "change":
                    config.write_text("[gpio]\npin = 98\n")
                else:
                    door.send_signal(signal.SIGTERM)
                _, errors = door.communicate(timeout=10)
            finally:
                door.kill()
            assert time.monotonic() - start < 5
            assert door.returncode == (2 if stop == "change" else -signal.SIGTERM)
            assert "gpio.pin: 99 is out of range" in errors and "Traceback" not in errors
            config.write_text("[gpio]\npin = 99\n")
    # Not under systemd: the one line and exit 2 at once, as before.
    done = run(tmp_path, "run", "--config", str(config), "--gpio", "mock")
    assert done.returncode == 2 and "gpio.pin: 99 is out of range" in done.stderr


def test_run_realtime_plays_a_recording_at_its_own_frame_rate(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(3):
        cv2.imwrite(str(frames / f"{index}.png"), np.full((120, 160, 3), 40 * index, np.uint8))
    start = time.monotonic()

    # frames 2 s apart
    done = _run_door(tmp_path, str(frames), "--realtime", config_text="[camera]\nfps = 0.5\n")

    assert done.returncode == 0, done.stderr
    assert "frames=3" in done.stderr
    assert time.monotonic() - start >= 4.0  # the third frame is due 4 s after the first


# What `from picamera2 import Picamera2` raises on Raspberry Pi OS Bookworm when the venv has
# numpy 2: apt's python3-simplejpeg (which picamera2 imports) is built for numpy 1.x.
NUMPY_ABI = (
    "numpy.dtype size changed, may indicate binary incompatibility. "
    "Expected 96 from C header, got 88 from PyObject"
)


def _broken_picamera2(folder: Path) -> Path:
    """A site folder whose picamera2 package raises the numpy ABI ValueError on import."""
    package = folder / "site" / "picamera2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"raise ValueError({NUMPY_ABI!r})\n")
    return folder / "site"


def test_run_with_a_picamera2_that_fails_to_import_exits_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ValueError must not end the door with a traceback at every start (systemd would
    restart it forever): one error line with the cause and the fix."""
    monkeypatch.setenv("PYTHONPATH", str(_broken_picamera2(tmp_path)))
    errors = _run_door_that_cannot_start(tmp_path, "picamera2")
    assert "picamera2 is installed but its import fails (ValueError: numpy.dtype" in errors[0]
    assert "pip install --force-reinstall --no-deps simplejpeg" in errors[0]


def test_doctor_fails_a_pin_factory_whose_library_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`factory = "lgpio"` without lgpio: doctor said WARN, the door's start failed making
    the pin factory (an outside audit's finding)."""
    from edge_app import relay
    from edge_app.commands import doctor

    monkeypatch.setitem(relay.FACTORY_LIBRARIES, "lgpio", "edge_app_no_such_gpio_library")
    monkeypatch.setitem(relay.FACTORY_LIBRARIES, "pigpio", "json")  # one that is installed

    gpio = next(c for c in doctor._device_checks(factory="lgpio") if c.area == "gpio")
    assert gpio.status == "fail"
    assert "needs the edge_app_no_such_gpio_library library, which is not installed" in (
        gpio.detail
    )
    gpio = next(c for c in doctor._device_checks(factory="pigpio") if c.area == "gpio")
    assert gpio.status != "fail"


def test_doctor_fails_the_camera_when_picamera2_is_installed_but_does_not_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_app.commands import doctor

    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    monkeypatch.syspath_prepend(str(_broken_picamera2(tmp_path)))

    camera = next(c for c in doctor._device_checks() if c.area == "camera")

    assert camera.status == "fail"
    assert camera.detail.startswith("picamera2 is installed but its import fails (ValueError: ")
    assert "numpy 1.x" in camera.fix and "simplejpeg" in camera.fix
    assert "docs/INSTALL.md" in camera.fix


def test_a_nul_in_a_config_path_is_refused_by_run_and_doctor(tmp_path: Path) -> None:
    config = tmp_path / "door.toml"
    config.write_text('[gallery]\npath = "g\\u0000.db"\n')

    ran = run(tmp_path, "run", "--config", str(config))
    doctor = run(tmp_path, "doctor", "--json", "--config", str(config))

    assert ran.returncode == 2 and "gallery.path: 'g\\x00.db' holds a NUL" in ran.stderr
    assert doctor.returncode == 1
    checks = {check["area"]: check for check in json.loads(doctor.stdout)}
    assert checks["config"]["status"] == "fail"
    assert "holds a NUL character" in checks["config"]["detail"]


@pytest.mark.parametrize("site", ["on", "off"])
def test_identify(
    enrolled: tuple[Path, subprocess.CompletedProcess], tmp_path: Path, site: str
) -> None:
    db = str(enrolled[0])
    done = run(
        tmp_path, "identify", str(JOE[1]), "--json", "--db", db, "--backend", "cpu",
        "--site-centring", site,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    [entry] = json.loads(done.stdout)
    assert [face["name"] for face in entry["faces"]] == ["Joe"]


def test_identify_with_a_door_config_decides_as_that_door(
    enrolled: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    """--config gave only the gallery: a door whose config asks for 0.99 would not name Joe,
    yet identify did, with "access": true (an outside audit's finding)."""
    config = tmp_path / "door.toml"
    config.write_text(f'[gallery]\npath = "{enrolled[0]}"\n[recognition]\nthreshold = 0.99\n')

    strict = run(tmp_path, "identify", str(JOE[1]), "--json", "--config", str(config))
    flag = run(
        tmp_path, "identify", str(JOE[1]), "--json", "--config", str(config),
        "--threshold", "0.3",
    )  # fmt: skip
    zero = run(tmp_path, "identify", str(JOE[1]), "--threshold", "0", "--config", str(config))

    assert strict.returncode == 0, strict.stderr
    [entry] = json.loads(strict.stdout)
    assert [(f["name"], f["access"]) for f in entry["faces"]] == [(None, None)]
    [entry] = json.loads(flag.stdout)
    assert [f["name"] for f in entry["faces"]] == ["Joe"]  # a flag still wins over the config
    assert zero.returncode == 2
    assert "argument --threshold: 0 is out of range (more than 0 and at most 1)" in zero.stderr


def test_run_on_a_folder_of_frames_unlocks_for_the_enrolled_person(
    enrolled: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for photo in JOE:
        shutil.copy(photo, frames)
    config = tmp_path / "door.toml"
    # LFW stills are photos, not a live person: liveness reports but does not block here.
    # No control socket: a test must not make the real /run/edge-app.
    config.write_text('[liveness]\nmode = "log"\n[hub]\nsocket = ""\n')

    done = run(
        tmp_path,
        "run",
        "--config", str(config),
        "--source", str(frames),
        "--db", str(enrolled[0]),
        "--gpio", "mock",
        "--events", "-",
        "--events-db", "",
        "--backend", "cpu",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(e["type"], e["name"]) for e in events if e["type"] == "unlock"] == [("unlock", "Joe")]
    assert events[-1]["type"] == "relock"


def test_run_with_a_missing_config_file_is_refused(tmp_path: Path) -> None:
    done = run(tmp_path, "run", "--config", str(tmp_path / "door.toml"))

    assert done.returncode == 2
    assert f"{tmp_path / 'door.toml'}: config file not found" in done.stderr


def test_demo_without_its_clip_is_refused(tmp_path: Path) -> None:
    done = run(tmp_path, "demo", "--clip", str(tmp_path / "door.mp4"))

    assert done.returncode == 2
    assert "door.mp4: no such file or folder; give a video file" in done.stderr


@pytest.mark.slow
def test_demo(tmp_path: Path) -> None:
    done = run(tmp_path, "demo")

    assert done.returncode == 0, done.stderr
    assert "relay pin GPIO17 history (seconds from start, level)" in done.stdout
    assert '"type": "unlock"' in done.stdout
    # The clip plays at its own 10 fps, so the 3 s pulse ends on its own while it plays
    # (with --fast the clip ends first and stopping relocks with reason "close").
    relocks = [json.loads(line) for line in done.stdout.splitlines() if '"relock"' in line]
    assert [event["reason"] for event in relocks] == ["timeout"]
    assert "strike held open 1 time(s): 3.0" in done.stdout
    # Each event once: its JSON line, not also the event log's INFO line.
    assert "event type=" not in done.stderr


def test_eval_lfw_on_the_sample(tmp_path: Path) -> None:
    out = tmp_path / "lfw.json"

    done = run(
        tmp_path,
        "eval", "lfw",
        "--pairs", str(LFW_SAMPLE / "pairs.txt"),
        "--images", str(LFW_SAMPLE),
        "--backend", "cpu",
        "--json", str(out),
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "accuracy" in done.stdout
    assert out.is_file()


def test_eval_liveness_without_its_data_is_refused(tmp_path: Path) -> None:
    done = run(tmp_path, "eval", "liveness", "--data", str(tmp_path / "nuaa"))

    assert done.returncode == 2
    assert "not a folder" in done.stderr


def test_eval_door_refuses_a_missing_folder_and_a_bad_threshold(tmp_path: Path) -> None:
    done = run(tmp_path, "eval", "door", "--data", str(tmp_path / "nuaa"))
    assert done.returncode == 2
    assert "not a folder" in done.stderr
    (tmp_path / "nuaa" / "live").mkdir(parents=True)
    done = run(
        tmp_path, "eval", "door", "--data", str(tmp_path / "nuaa"), "--recognition-threshold", "3"
    )
    assert done.returncode == 2
    assert "--recognition-threshold 3 is out of range (more than 0 and at most 1)\n" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("flags", "refusal"),
    [
        (["--min-live-frames", "11"], "--min-live-frames 11 is out of range (1 to 10)\n"),
        (["--threshold", "0"], "--threshold 0.0 is out of range (more than 0.0 and at most 1.0)\n"),
    ],
)
def test_eval_liveness_refuses_what_the_door_refuses_naming_the_flag(
    tmp_path: Path, flags: list[str], refusal: str
) -> None:
    (tmp_path / "nuaa" / "live").mkdir(parents=True)
    done = run(tmp_path, "eval", "liveness", "--data", str(tmp_path / "nuaa"), *flags)
    assert done.returncode == 2
    assert refusal in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "words", [["visits", "--lfw", "{tmp}"], ["door", "--data", "{tmp}", "--alone"]]
)
def test_eval_refuses_a_negative_seed_before_any_work(tmp_path: Path, words: list[str]) -> None:
    done = run(tmp_path, "eval", *(w.format(tmp=tmp_path) for w in words), "--seed", "-1")

    assert done.returncode == 2
    assert "--seed: must be at least 0, got -1" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_eval_lfw_refuses_a_pair_list_without_pairs(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("0 0\n")

    done = run(tmp_path, "eval", "lfw", "--pairs", str(pairs), "--images", str(LFW_SAMPLE))

    assert done.returncode == 2
    assert f"{pairs}: 0 same-person and 0 different-person pairs" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("pin", "active_high", "status"), [(4, "true", "warn"), (4, "false", "")])
def test_doctor_warns_of_a_relay_pin_pulled_up_at_boot(
    tmp_path: Path, pin: int, active_high: str, status: str
) -> None:
    config = tmp_path / "config.toml"
    # "native": a factory needing no library, so the row gets past "lgpio is not installed"
    # on a machine without it ("auto" is lgpio) to the pin's own check.
    config.write_text(f'[gpio]\npin = {pin}\nactive_high = {active_high}\nfactory = "native"\n')

    done = run(tmp_path, "doctor", "--json", "--config", str(config))

    (gpio,) = [c for c in json.loads(done.stdout) if c["area"] == "gpio"]
    if status == "warn":
        assert gpio["status"] == "warn"
        assert f"GPIO{pin} is pulled up while the Pi boots" in gpio["detail"]
        assert gpio["fix"].startswith("use GPIO9-27 (e.g. 17)")
    else:
        assert "pulled up" not in gpio["detail"] + gpio["fix"]


def test_doctor_fails_a_missing_gallery_and_writes_json_for_any_file_name(tmp_path: Path) -> None:
    """The door does not start without its gallery: doctor said WARN and exited 0. A config
    whose name is not UTF-8 came out as a lone surrogate in the JSON (outside audit)."""
    config = tmp_path / os.fsdecode(b"door-\xff.toml")
    config.write_text(f'[gallery]\npath = "{tmp_path / "absent.db"}"\n')

    done = run(tmp_path, "doctor", "--json", "--config", str(config))

    assert done.returncode == 1
    json.loads(done.stdout.encode("utf-8"))  # encodable: no lone surrogate
    checks = {c["area"]: c for c in json.loads(done.stdout)}
    assert checks["gallery"]["status"] == "fail"
    assert "the door does not start without a gallery" in checks["gallery"]["detail"]
    assert "door-\\xff.toml" in checks["config"]["detail"]


def test_doctor_prints_its_table_without_the_engines_start_up_lines(tmp_path: Path) -> None:
    """Operator audit s41 (L5): the engine's INFO lines (the backend twice, the cascade
    choice) came above doctor's table, which says the same in its rows. Shown with -v."""
    config = tmp_path / "config.toml"
    config.write_text('[gpio]\nfactory = "mock"\n')

    plain = run(tmp_path, "doctor", "--config", str(config))
    verbose = run(tmp_path, "-v", "doctor", "--config", str(config))

    assert "runtime " in plain.stdout and "models " in plain.stdout  # the table's rows
    assert " INFO " not in plain.stderr, plain.stderr
    assert "INFO    edge_app.runtime: backend=" in verbose.stderr


def test_enroll_json_says_why_nothing_was_enrolled(tmp_path: Path) -> None:
    """A script asking for --json got nothing on stdout when enrolment was refused."""
    text = tmp_path / "photo.jpg"
    text.write_text("not an image")
    db = tmp_path / "gallery.db"

    done = run(
        tmp_path, "enroll", "Yan", str(text), str(JOE[0]), "--json", "--db", str(db),
        "--backend", "cpu",
    )  # fmt: skip

    assert done.returncode == 2
    refusal = json.loads(done.stdout)
    assert refusal["name"] == "Yan" and refusal["enrolled"] is False
    assert refusal["error"].startswith("nothing enrolled for 'Yan'")
    assert [(r["source"], r["reason"]) for r in refusal["refused"]] == [(str(text), "unreadable")]
    assert "nothing enrolled for 'Yan'" in done.stderr  # and still said on stderr
    assert not db.exists()


def test_eval_visits_without_lfw_is_refused(tmp_path: Path) -> None:
    done = run(tmp_path, "eval", "visits", "--lfw", str(tmp_path / "lfw"))

    assert done.returncode == 2
    assert "no images/ folder there" in done.stderr


# ---- hostile and mistaken arguments: one line, exit 2, nothing changed ----------------------


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under folder with its bytes: what a refused call must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("words", "threads"),
    [
        (["identify", str(JOE[1]), "--db", "{tmp}/gallery.db"], "-3"),
        (["enroll", "Ann", str(JOE[1]), "--db", "{tmp}/gallery.db"], "0"),
        (["eval", "lfw", "--pairs", str(LFW_SAMPLE / "pairs.txt"), "--images", str(LFW_SAMPLE)],
         "65"),
    ],
    ids=["identify", "enroll", "eval lfw"],
)  # fmt: skip
def test_threads_out_of_range_are_refused(
    enrolled: tuple[Path, subprocess.CompletedProcess],
    tmp_path: Path,
    words: list[str],
    threads: str,
) -> None:
    _copy(enrolled[0], tmp_path)
    before = _files(tmp_path)
    words = [w.format(tmp=tmp_path) for w in words]

    done = run(tmp_path, *words, "--backend", "cpu", "--threads", threads)

    assert done.returncode == 2
    assert f"--threads {threads}: must be 1 to 64" in done.stderr
    assert _files(tmp_path) == before


def test_identify_refuses_a_folder_without_images(
    enrolled: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "notes.txt").write_text("no photos here")

    done = run(tmp_path, "identify", str(tmp_path / "photos"), "--db", str(enrolled[0]))

    assert done.returncode == 2
    assert f"no images found in {tmp_path / 'photos'}: give photo files" in done.stderr
    assert done.stdout == ""
    # An audit: beside a photo that exists, the empty folder was skipped without a word.
    photo = next((Path(__file__).parent / "data" / "lfw_sample" / "Rick_Perry").glob("*.jpg"))
    args = ("identify", str(photo), str(tmp_path / "photos"), "--db", str(enrolled[0]))
    done = run(tmp_path, *args)
    assert done.returncode == 2
    assert f"no images found in {tmp_path / 'photos'}: give photo files" in done.stderr


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf", "3601", "1e10"])
def test_enroll_refuses_a_timeout_that_is_not_a_positive_number(
    tmp_path: Path, timeout: str
) -> None:
    db = tmp_path / "gallery.db"

    done = run(tmp_path, "enroll", "Ann", "--camera", "--timeout", timeout, "--db", str(db))

    assert done.returncode == 2
    assert f"--timeout {float(timeout)}: must be a number of seconds above 0, at most 3600" in (
        done.stderr
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("samples", ["0", "51", "99999999999"])
def test_enroll_refuses_more_samples_than_a_person_may_have(tmp_path: Path, samples: str) -> None:
    db = tmp_path / "gallery.db"

    done = run(tmp_path, "enroll", "Ann", "--camera", "--samples", samples, "--db", str(db))

    assert done.returncode == 2
    assert f"--samples {samples}: must be 1 to 50, the most one person may have" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_refused_photo_s_name_cannot_forge_a_line(tmp_path: Path) -> None:
    """Found by an audit: enrol's list of refused photos printed file names raw, so a file
    named with a newline wrote a line of its choosing ("ERROR ...")."""
    photo = tmp_path / "a\nERROR fake line.jpg"
    photo.write_bytes(b"not a photo")

    done = run(tmp_path, "enroll", "Zed", str(photo), "--db", str(tmp_path / "g.db"))

    assert done.returncode == 2
    assert "a\\x0aERROR fake line.jpg: cannot decode" in done.stderr, done.stderr
    assert not any(line.startswith("ERROR fake") for line in done.stderr.splitlines())


def test_a_camera_enrolment_draws_no_progress_bar_into_a_file(tmp_path: Path) -> None:
    """Found by an audit: `enroll --camera 2> file` (or under systemd) wrote the progress
    bar's carriage-return frames into the file, as `eval visits` did; a bar is drawn on a
    terminal only, as every other command's."""
    db = tmp_path / "gallery.db"
    clip = Path(__file__).resolve().parent.parent / "demo" / "door.mp4"

    done = run(
        tmp_path, "enroll", "Ricardo Lagos", "--camera", "--source", str(clip),
        "--samples", "2", "--timeout", "60", "--db", str(db), "--backend", "cpu",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "sample/s" not in done.stderr, done.stderr


def test_a_camera_enrolment_uses_the_doors_camera(tmp_path: Path) -> None:
    """An audit: `enroll --camera --config door.toml` opened "auto" (the Pi camera, else
    /dev/video0), not the door's `camera.source`, while the docs and doctor's hint said it
    enrols from the door's own camera. Without --source it now opens the config's camera;
    --source still wins."""
    clip = Path(__file__).resolve().parent.parent / "demo" / "door.mp4"
    config = tmp_path / "door.toml"
    db = tmp_path / "gallery.db"
    config.write_text(f'[camera]\nsource = "{clip}"\n[gallery]\npath = "{db}"\n')
    config.chmod(0o600)
    common = ("--samples", "2", "--timeout", "60", "--config", str(config), "--backend", "cpu")

    done = run(tmp_path, "enroll", "Ricardo Lagos", "--camera", *common)

    assert done.returncode == 0, done.stderr
    listed = json.loads(run(tmp_path, "list", "--json", "--db", str(db)).stdout)
    assert [(p["name"], p["samples"]) for p in listed] == [("Ricardo Lagos", 2)]
    missing = str(tmp_path / "no-camera")
    done = run(tmp_path, "enroll", "Ann", "--camera", "--source", missing, *common)
    assert done.returncode == 2 and f"camera.source: {missing}" in done.stderr, done.stderr
    # --source without --config reads no config: one the user may not read (or a broken
    # one, here) is not in the way of a camera of their own.
    broken = tmp_path / "broken.toml"
    broken.write_text(BAD_CONFIG)
    other = tmp_path / "other.db"
    done = run_with_default_config(
        tmp_path, broken, "enroll", "Ricardo Lagos", "--camera", "--source", str(clip),
        "--samples", "2", "--timeout", "60", "--db", str(other), "--backend", "cpu",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_enroll_from_a_camera_that_is_not_there_gives_up_at_its_timeout(tmp_path: Path) -> None:
    """The camera is retried, not given up on; --timeout still ends the enrolment."""
    db = tmp_path / "gallery.db"

    done = run(
        tmp_path, "enroll", "Ann", "--camera", "--source", "/dev/edge-app-test-no-camera",
        "--timeout", "1", "--samples", "1", "--db", str(db), "--backend", "cpu",
    )  # fmt: skip

    assert done.returncode == 2
    assert "only 0 of 1 good frames for 'Ann' within 1 s: no frame came from the camera" in (
        done.stderr
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "words",
    [
        ["lfw", "--pairs", str(LFW_SAMPLE / "pairs.txt"), "--images", str(LFW_SAMPLE)],
        ["liveness", "--data", "{tmp}"],
        ["door", "--data", "{tmp}"],
        ["visits", "--lfw", "{tmp}"],
    ],
    ids=["lfw", "liveness", "door", "visits"],
)
@pytest.mark.parametrize("where", ["no-such-folder/out.json", "folder", "-"])
def test_eval_refuses_a_json_path_it_cannot_write_before_running(
    tmp_path: Path, words: list[str], where: str
) -> None:
    (tmp_path / "images").mkdir()  # what `eval visits --lfw` looks for
    (tmp_path / "folder").mkdir()
    out = Path("-") if where == "-" else tmp_path / where

    done = run(tmp_path, "eval", *(w.format(tmp=tmp_path) for w in words), "--json", str(out))

    assert done.returncode == 2
    if where == "-":  # not a file named "-" in the working folder
        assert "--json -: give a file name (the report is printed as well)" in done.stderr
    elif where == "folder":
        assert f"--json {out} is a folder; give a file name" in done.stderr
    else:
        assert f"--json {out}: cannot write in {out.parent} (No such file" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "images"]
    assert list((tmp_path / "folder").iterdir()) == []


def test_eval_lfw_refuses_a_pair_list_that_is_not_text(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.txt"
    pairs.write_bytes(b"\xe1\x00\xff binary")

    done = run(
        tmp_path, "eval", "lfw", "--pairs", str(pairs), "--images", str(LFW_SAMPLE),
        "--backend", "cpu",
    )  # fmt: skip

    assert done.returncode == 2
    assert f"cannot read pair list {pairs}: not UTF-8 text" in done.stderr


# ---- the hub and its secrets -------------------------------------------------------------------

HUB_CONFIG = """\
[hub]
socket = "{dir}/door.sock"
[web]
enabled = true
listen = "0.0.0.0:8080"
password_file = "{dir}/web-password"
[mqtt]
unlock_code_file = "{dir}/unlock-code"
"""


def _hub_config(tmp_path: Path) -> Path:
    config = tmp_path / "door.toml"
    config.write_text(HUB_CONFIG.format(dir=tmp_path))
    return config


def test_hub_refuses_to_serve_the_lan_before_a_password_exists(tmp_path: Path) -> None:
    done = run(tmp_path, "hub", "--config", str(_hub_config(tmp_path)))

    assert done.returncode == 2
    assert "no admin password is set" in done.stderr
    assert not (tmp_path / "web-password").exists()


def _with_stdin(tmp_path: Path, text: str, *argv: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", EDGE_APP, *argv],
        cwd=tmp_path,
        env=_env(),
        input=text,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.mark.parametrize(
    ("words", "secret", "file"),
    [
        (["hub", "passwd"], "correct horse battery staple\n", "web-password"),
        (["hub", "unlock-code"], "482913\n", "unlock-code"),
    ],
)
def test_hub_secrets_are_stored_hashed_and_private(
    tmp_path: Path, words: list[str], secret: str, file: str
) -> None:
    config = _hub_config(tmp_path)

    done = _with_stdin(tmp_path, secret, *words, "--stdin", "--config", str(config))

    assert done.returncode == 0, done.stderr
    stored = tmp_path / file
    assert stored.stat().st_mode & 0o777 == 0o600
    assert secret.strip() not in stored.read_text()
    assert stored.read_text().startswith("scrypt$")


def test_unlock_code_without_a_code_file_suggests_one_the_service_user_can_write(
    tmp_path: Path,
) -> None:
    """/etc/edge-app is root:edge-app 0750 (the installer), so `sudo -u edge-app edge-app hub
    unlock-code` can only create the file in the state folder."""
    from edge_app.paths import DEFAULT_STATE_DIR

    config = tmp_path / "door.toml"
    config.write_text("[mqtt]\n")

    done = _with_stdin(
        tmp_path, "482913\n", "hub", "unlock-code", "--stdin", "--config", str(config)
    )

    assert done.returncode == 2
    assert f'unlock_code_file = "{DEFAULT_STATE_DIR}/unlock.code"' in done.stderr
    assert "/etc/edge-app" not in done.stderr


# (the command's words, a secret it accepts, its file in HUB_CONFIG, the config key naming it)
SECRET_COMMANDS = [
    (["hub", "passwd"], "correct horse battery staple", "web-password", "web.password_file"),
    (["hub", "unlock-code"], "482913", "unlock-code", "mqtt.unlock_code_file"),
]
SECRET_IDS = ["passwd", "unlock-code"]


def _a_gallery(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO people (name) VALUES ('Ada')")
    db.close()


def _a_note(path: Path) -> None:
    path.write_text("door codes for the shed: 1234\n")


def _a_large_log(path: Path) -> None:
    path.write_text("scrypt$" + "x" * 70_000 + "\n")  # starts like a hash; far too large


def _a_photo(path: Path) -> None:
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))


def _two_hash_lines(path: Path) -> None:
    from edge_app.secret_hash import ScryptHash

    line = ScryptHash.of("something").line()
    path.write_text(f"{line}\n{line}\n")


@pytest.mark.parametrize("plant", [_a_gallery, _a_note, _a_large_log, _a_photo, _two_hash_lines])
@pytest.mark.parametrize(("words", "secret", "file", "key"), SECRET_COMMANDS, ids=SECRET_IDS)
def test_a_secret_never_replaces_a_file_it_did_not_write(
    tmp_path: Path, words: list[str], secret: str, file: str, key: str, plant: Any
) -> None:
    """Found by an audit: `hub passwd` and `hub unlock-code` replaced whatever regular file
    their configured path named (a gallery, a user's file) with a hash line, exit 0: a
    mistyped path destroyed the file. Only a file they wrote (or an empty one) is replaced."""
    config = _hub_config(tmp_path)
    target = tmp_path / file
    plant(target)
    before = target.read_bytes()

    done = _with_stdin(tmp_path, secret + "\n", *words, "--stdin", "--config", str(config))

    assert done.returncode == 2, done.stderr
    said = done.stderr.strip()
    assert f"ERROR   edge_app: {key}: {target} " in said and "\n" not in said
    assert "is left untouched" in said and f"set {key} to a file of its own" in said
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["door.toml", file]
    assert done.stdout == ""


def _empty(path: Path) -> None:
    path.touch()


def _set_before(path: Path) -> None:
    from edge_app.secret_hash import ScryptHash

    path.write_text(ScryptHash.of("the secret before").line() + "\n")
    path.chmod(0o644)  # readers refuse it ("or set the password again"): setting it must work


def _refused_cost(path: Path) -> None:
    # A hash line whose parameters readers refuse, "set the code again": setting it must work.
    path.write_text("scrypt$1048576$8$1$" + "A" * 22 + "$" + "A" * 43 + "\n")


@pytest.mark.parametrize("plant", [_empty, _set_before, _refused_cost])
@pytest.mark.parametrize(("words", "secret", "file", "key"), SECRET_COMMANDS, ids=SECRET_IDS)
def test_a_secret_replaces_an_empty_file_or_one_it_wrote(
    tmp_path: Path, words: list[str], secret: str, file: str, key: str, plant: Any
) -> None:
    from edge_app.hub.code import read_code_file
    from edge_app.secret_hash import ScryptHash, is_hash_line

    config = _hub_config(tmp_path)
    target = tmp_path / file
    plant(target)
    assert not target.read_text().strip() or is_hash_line(target.read_text())

    done = _with_stdin(tmp_path, secret + "\n", *words, "--stdin", "--config", str(config))

    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert ScryptHash.parse(target.read_text()).matches(secret)
    if key == "mqtt.unlock_code_file":
        assert read_code_file(target).matches(secret)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["door.toml", file]


@pytest.mark.parametrize(("words", "secret", "file", "key"), SECRET_COMMANDS, ids=SECRET_IDS)
def test_a_secret_file_of_another_user_is_left_for_its_owner_to_set(
    tmp_path: Path, words: list[str], secret: str, file: str, key: str
) -> None:
    """`sudo edge-app hub passwd` (without -u edge-app) replaced the service user's hash with
    one of root's, mode 0600, which the service could then not read: refused, the file kept."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file to another user")
    config = _hub_config(tmp_path)
    target = tmp_path / file
    assert (
        _with_stdin(
            tmp_path,
            "the first one 123\n" if "passwd" in words else "111111\n",
            *words,
            "--stdin",
            "--config",
            str(config),
        ).returncode
        == 0
    )
    os.chown(target, 65534, 65534)
    before = target.read_bytes()

    done = _with_stdin(tmp_path, secret + "\n", *words, "--stdin", "--config", str(config))

    assert done.returncode == 2, done.stderr
    owner = pwd.getpwuid(65534).pw_name
    assert f"{key}: {target} belongs to {owner}, not to this user (root)" in done.stderr
    assert f"run the command as {owner} (sudo -u {owner} ...)" in done.stderr
    assert target.read_bytes() == before and target.stat().st_uid == 65534


@pytest.mark.parametrize(
    ("origin", "problem"),
    [
        ("", "origin must be 1-64 printable characters"),
        ("ph\x1bone", "origin must be 1-64 printable characters"),
        ("x" * 65, "origin must be 1-64 printable characters"),
        ("phone uid=0", "origin may not contain 'uid=': the door records who asked itself"),
        # The door records "a b": the signed origin must be what it records.
        ("a  b", "origin may not begin or end with a space or hold two in a row"),
        (" phone", "origin may not begin or end with a space"),
    ],
)
def test_hub_sign_unlock_refuses_an_origin_the_door_would_refuse(
    tmp_path: Path, origin: str, problem: str
) -> None:
    """An empty origin once started the hub itself instead of signing anything."""
    config = _hub_config(tmp_path)

    done = run(tmp_path, "hub", "--sign-unlock", origin, "--config", str(config))

    assert done.returncode == 2
    assert f"--sign-unlock {origin!r}: {problem}" in done.stderr
    assert done.stdout == ""
    assert [p.name for p in tmp_path.iterdir()] == ["door.toml"]


# ---- doctor and a broken config -------------------------------------------------------------


def test_doctor(tmp_path: Path) -> None:
    done = run(tmp_path, "doctor", "--json")

    assert done.returncode in (0, 1), done.stderr
    areas = [check["area"] for check in json.loads(done.stdout)]
    assert {"python", "runtime", "models", "config", "gallery"} <= set(areas)


def test_doctor_reports_every_problem_of_a_bad_config_and_carries_on(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(BAD_CONFIG)

    done = run(tmp_path, "doctor", "--config", str(config))

    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert any(line.startswith("FAIL  config") and "2 problem(s)" in line for line in lines)
    assert "gpio.pulse_seconds: expected a number" in done.stdout
    assert "gpio.colour: unknown key" in done.stdout
    for area in ("runtime", "models", "camera", "gpio", "gallery"):
        assert any(line[6:].startswith(area) for line in lines), area


def test_doctor_reports_a_gallery_that_is_not_one(tmp_path: Path) -> None:
    junk = tmp_path / "gallery.db"
    junk.write_text("not a database")
    config = tmp_path / "config.toml"
    config.write_text(f'[gallery]\npath = "{junk}"\n')

    done = run(tmp_path, "doctor", "--json", "--config", str(config))

    assert done.returncode == 1
    checks = {check["area"]: check for check in json.loads(done.stdout)}
    assert checks["config"]["status"] == "ok"
    assert checks["gallery"]["status"] == "fail"
    assert f"{junk} is not an SQLite database" in checks["gallery"]["detail"]
    assert junk.read_text() == "not a database"


def _door_score(engine: Any, gallery_row: np.ndarray, probe: np.ndarray) -> float:
    """The door's score of `probe` against one enrolled row (shipped cohort normalisation)."""
    from edge_app.gallery import GalleryMatrix
    from edge_app.matching import Matcher, MatchSettings

    matrix = GalleryMatrix(gallery_row[None], np.zeros(1, np.int32), ("x",))
    settings = MatchSettings.from_recognition(engine.manifest.recognition)
    return float(Matcher(matrix, settings, engine.cohort).person_scores(probe[None])[0, 0])


def _unit(row: np.ndarray) -> np.ndarray:
    return (row / np.linalg.norm(row)).astype(np.float32)


@pytest.mark.parametrize("mode", ["raise", "warn"])
def test_doctor_names_enrolled_people_who_match_each_other(
    tmp_path: Path, engine: Any, mode: str
) -> None:
    from edge_app.gallery import Gallery, NewSample

    rng = np.random.default_rng(4)
    ann, away, cy = (_unit(row) for row in rng.normal(size=(3, 512)))
    # Ben's face is a mix of Ann's and another, weighted so that the door scores it 0.8
    # against Ann's: over the threshold, under the same-face level. Dee's is Ann's again.
    low, high = 0.0, 1.0
    for _ in range(40):
        weight = (low + high) / 2
        ben = _unit(weight * ann + (1 - weight) * away)
        low, high = (weight, high) if _door_score(engine, ann, ben) < 0.8 else (low, weight)
    dee = _unit(ann + 0.05 * rng.normal(size=512))
    db = tmp_path / "gallery.db"
    with Gallery.open(db, create=True) as gallery:
        for number, (name, row) in enumerate([("Ann", ann), ("Ben", ben), ("Cy", cy)]):
            gallery.enroll(name, [NewSample(row, f"{number}" * 64)])
        gallery.enroll("Dee", [NewSample(dee, "3" * 64)])
    config = tmp_path / "config.toml"
    # Site centring off: the scores above are the guard's alone (the next test has it on).
    config.write_text(
        f'[gallery]\npath = "{db}"\n[recognition]\nlookalikes = "{mode}"\nsite_centring = false\n'
    )

    done = run(tmp_path, "doctor", "--json", "--config", str(config))

    (site,) = [c for c in json.loads(done.stdout) if c["area"] == "site centring"]
    assert site["status"] == "warn" and site["detail"].startswith("off")
    assert "site_centring = true" in site["fix"]
    found = [c for c in json.loads(done.stdout) if c["area"] == "lookalikes"]
    assert all(c["status"] == "warn" for c in found) and len(found) == 2, found
    same, apart = found
    assert "Ann ~ Dee" in same["detail"] and "the same face" in same["detail"]
    assert f"edge-app remove --config {config} NAME" in same["fix"]  # this door's
    assert "Ann ~ Ben 0.800" in apart["detail"] and "Cy" not in apart["detail"]
    if mode == "raise":
        # Raised just above Ann ~ Ben, not above Ann ~ Dee (which would lock everyone out).
        assert "the door raises its threshold to 0.810" in apart["detail"]
    else:
        assert "strangers who look like them can be let in" in apart["detail"]
        assert 'lookalikes = "raise"' in apart["fix"]


def test_doctor_says_what_site_centring_removes(tmp_path: Path) -> None:
    from edge_app.gallery import Gallery, NewSample

    rng = np.random.default_rng(8)
    camera, *own = (_unit(row) for row in rng.normal(size=(5, 512)))
    db = tmp_path / "gallery.db"
    with Gallery.open(db, create=True) as gallery:
        for number, face in enumerate(own):
            sample = NewSample(_unit(0.6 * camera + 0.8 * face), f"{number}" * 64)
            gallery.enroll(f"P{number}", [sample])
    config = tmp_path / "config.toml"
    config.write_text(f'[gallery]\npath = "{db}"\n')

    done = run(tmp_path, "doctor", "--json", "--config", str(config))

    (site,) = [c for c in json.loads(done.stdout) if c["area"] == "site centring"]
    assert site["status"] == "ok", site
    assert "the 4 enrolled people share a direction of length" in site["detail"]
    assert "75% of it is removed from every face" in site["detail"]


def test_a_bad_default_config_leaves_help_and_doctor_working(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(BAD_CONFIG)

    helped = run_with_default_config(tmp_path, config, "--help")
    enroll_help = run_with_default_config(tmp_path, config, "enroll", "--help")
    doctor = run_with_default_config(tmp_path, config, "doctor", "--json")

    assert helped.returncode == 0
    assert enroll_help.returncode == 0
    # argparse wraps help lines at hyphens too: compare without any whitespace
    assert f"gallery.pathin{config}" in "".join(enroll_help.stdout.split())
    assert doctor.returncode == 1
    checks = {check["area"]: check for check in json.loads(doctor.stdout)}
    assert checks["config"]["status"] == "fail"
    assert str(config) in checks["config"]["detail"]
    assert "gpio.colour" in checks["config"]["detail"]
    assert checks["gallery"]["status"] == "warn"


def test_a_bad_default_config_is_one_error_line_for_a_gallery_command(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("this is not = = toml\n")

    done = run_with_default_config(tmp_path, config, "list")

    assert done.returncode == 2
    assert f"{config}: not valid TOML" in done.stderr


# ---- edge-convert ---------------------------------------------------------------------------


def test_lint(tmp_path: Path) -> None:
    """A committed model passes; a file that is not a model and a missing one are named."""
    pytest.importorskip("tensorflow")
    model = REPO_ROOT / "models" / "tflite" / "pnet_0.tflite"
    if not model.is_file():
        pytest.skip(f"{model} is not built")
    bogus = tmp_path / "bogus.tflite"
    bogus.write_text("not a model")
    missing = tmp_path / "missing.tflite"

    done = run(tmp_path, "lint", str(model), str(bogus), str(missing), module=EDGE_CONVERT)

    assert done.returncode == 2
    assert done.stdout == "1 model(s): no Edge TPU violations\n"
    assert f"{bogus}: not a TFLite model" in done.stderr
    assert f"{missing}: cannot read a model file" in done.stderr


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (
            ["build", "--calib", "{tmp}", "--lfw", "{tmp}", "--out", "{tmp}/models"],
            "no pairsDevTrain.txt there",
        ),
        (
            ["validate", "--models", "{tmp}/none", "--data", "{tmp}", "--json", "{tmp}/q.json",
             "--report", "{tmp}/q.md"],
            "no models folder {tmp}/none (does not exist): check the path",
        ),
        (["float-cascade", "--models", "{tmp}/none"], "no models folder {tmp}/none"),
        (["float-cascade", "--models", "{tmp}"], "no manifest.json in {tmp}: build models"),
        (
            ["validate", "--limit", "0", "--json", "{tmp}/q.json", "--report", "{tmp}/q.md"],
            "--limit 0: must be at least 1",
        ),
        (
            ["train-head", "--cache", "{tmp}/none.npz", "--lfw", "{tmp}", "--out", "{tmp}/head"],
            "no pairsDevTrain.txt there",
        ),
        (
            ["validate", "--json", "{tmp}/q.json", "--report", "{tmp}"],
            "--report {tmp} is a folder; give a file name",
        ),
        (
            ["train-head", "--cache", "{tmp}/none.npz", "--lfw", "{tmp}", "--out", "{tmp}/head",
             "--json", "{tmp}/gone/head.json"],
            "--json {tmp}/gone/head.json: cannot write in {tmp}/gone",
        ),
    ],
    ids=["build", "validate", "float-cascade", "float-cascade-empty", "validate-limit",
         "train-head", "validate-report-folder", "train-head-json-folder-missing"],
)  # fmt: skip
def test_missing_inputs_are_refused_and_nothing_is_written(
    tmp_path: Path, words: list[str], message: str
) -> None:
    pytest.importorskip("tensorflow")

    done = run(tmp_path, *(w.format(tmp=tmp_path) for w in words), module=EDGE_CONVERT)

    assert done.returncode == 2
    assert message.format(tmp=tmp_path) in done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_doctor_on_a_pi_without_picamera2_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Pi always has /dev/video* (its ISP), so those nodes must not pass for a camera."""
    from edge_app.commands import doctor

    if importlib.util.find_spec("picamera2") is not None:
        pytest.skip("picamera2 is importable here")
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    monkeypatch.setattr(doctor, "DEVICE_MODEL", model)
    monkeypatch.setattr(doctor.glob, "glob", lambda pattern: [pattern.replace("*", "19")])

    camera = next(c for c in doctor._device_checks() if c.area == "camera")

    assert camera.status == "warn"
    assert "on a Raspberry Pi 5 Model B Rev 1.0" in camera.detail
    assert "--system-site-packages" in camera.fix


def test_access(enrolled: tuple[Path, subprocess.CompletedProcess], tmp_path: Path) -> None:
    db = _copy(enrolled[0], tmp_path)

    done = run(tmp_path, "access", "joe", "no", "--db", str(db))

    assert done.returncode == 0, done.stderr
    assert done.stdout == "'Joe' is a known visitor: recognised, never let in\n"  # as stored
    listing = run(tmp_path, "list", "--db", str(db)).stdout.splitlines()
    assert listing[0].split()[:3] == ["NAME", "ACCESS", "SAMPLES"]
    assert listing[1].split()[:3] == ["Joe", "no", "1"]
    again = run(tmp_path, "access", "Joe", "no", "--db", str(db))
    assert again.stdout.endswith("(as before)\n")
    assert run(tmp_path, "access", "Joe", "yes", "--db", str(db)).stdout == (
        "'Joe' may open the door\n"
    )
    before = db.read_bytes()
    missing = run(tmp_path, "access", "Nobody", "no", "--db", str(db))
    assert missing.returncode == 2
    assert "not enrolled: 'Nobody'" in missing.stderr and "Traceback" not in missing.stderr
    assert db.read_bytes() == before


def test_enroll_a_known_visitor(
    enrolled: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    db = _copy(enrolled[0], tmp_path)
    refused = run(tmp_path, "enroll", "--add", "--no-access", "Joe", str(JOE[1]), "--db", str(db))
    assert refused.returncode == 2
    assert "`edge-app access Joe no`" in refused.stderr

    done = run(
        tmp_path, "enroll", "--no-access", "Guest", str(JOE[1]), "--db", str(db), "--backend", "cpu"
    )

    assert done.returncode == 0, done.stderr
    listed = json.loads(run(tmp_path, "list", "--json", "--db", str(db)).stdout)
    assert [(p["name"], p["access"]) for p in listed] == [("Guest", False), ("Joe", True)]
    named = run(tmp_path, "identify", str(JOE[1]), "--db", str(db), "--backend", "cpu")
    assert "Guest (known visitor: never let in)" in named.stdout, named.stdout


def test_doctor_asks_a_household_of_one_for_known_visitors(
    enrolled: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[gallery]\npath = "{_copy(enrolled[0], tmp_path)}"\n')

    done = run(tmp_path, "doctor", "--json", "--config", str(config))

    (site,) = [c for c in json.loads(done.stdout) if c["area"] == "site centring"]
    assert site["status"] == "warn" and "one person enrolled" in site["detail"]
    assert f"edge-app enroll --config {config} --no-access" in site["fix"]


# ---- edge-app site: the site memory ([recognition] learn_site) -----------------------------


def _site_config(tmp_path: Path, db: Path, learn_site: bool = True) -> Path:
    """A config for `db` with learn_site, whose control socket is in tmp_path (no door)."""
    config = tmp_path / "config.toml"
    config.write_text(
        f'[gallery]\npath = "{db}"\n[recognition]\nlearn_site = {str(learn_site).lower()}\n'
        f'[hub]\nsocket = "{tmp_path / "door.sock"}"\n'
    )
    return config


def _learned(visits: int, like: Path | None = None) -> Any:
    """A SiteMemory that learned `visits` random stranger visits; with `like`, a gallery,
    each also shares a direction with its first face (as faces filmed by one camera do)."""
    from edge_app.gallery import Gallery
    from edge_app.site_memory import SiteMemory

    shared = np.zeros(512)
    if like is not None:
        with Gallery.open(like) as gallery:
            shared = 0.6 * gallery.load_matrix().embeddings[0]
    memory = SiteMemory()
    for row in np.random.default_rng(3).normal(size=(visits, 512)):
        memory.add(shared + 0.8 * _unit(row))
    return memory


def test_site_show_without_a_memory(tmp_path: Path) -> None:
    config = _site_config(tmp_path, tmp_path / "gallery.db")

    done = run(tmp_path, "site", "show", "--config", str(config))

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"site memory    {tmp_path / 'site_memory.npz'}"
    assert lines[1].startswith("learn_site     on: ")
    assert "learned        nothing: there is no file yet" in lines
    assert "set aside      none" in lines
    assert "no gallery at" in done.stdout  # site centring not measured, said in one line
    assert not (tmp_path / "site_memory.npz").exists()


def test_site_show_with_a_memory(
    enrolled: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    db = _copy(enrolled[0], tmp_path)
    config = _site_config(tmp_path, db)
    _learned(4, like=db).save(tmp_path / "site_memory.npz")

    done = run(tmp_path, "site", "show", "--config", str(config))
    as_json = run(tmp_path, "site", "show", "--json", "--config", str(config))

    assert done.returncode == 0, done.stderr
    assert "learned        4 stranger visit(s), counted in site centring" in done.stdout
    assert "mode           600\n" in done.stdout
    assert "from every face with the memory, 0.00 without it (1 person enrolled)" in done.stdout
    shown = json.loads(as_json.stdout)
    assert shown["path"] == str(tmp_path / "site_memory.npz")
    assert (shown["learn_site"], shown["learned"], shown["ready"]) == (True, 4, True)
    assert (shown["mode"], shown["private"], shown["error"]) == ("600", True, None)
    assert 3.9 < shown["weight"] < 4.0  # four visits, the older ones decayed
    centring = shown["site_centring"]
    assert centring["people"] == 1 and centring["removed_without_memory"] == 0.0
    assert centring["removed_with_memory"] > 0.0


def test_site_show_says_a_memory_others_can_read_and_one_that_is_off(
    tmp_path: Path,
) -> None:
    config = _site_config(tmp_path, tmp_path / "gallery.db", learn_site=False)
    memory = tmp_path / "site_memory.npz"
    _learned(2).save(memory)
    memory.chmod(0o644)

    done = run(tmp_path, "site", "show", "--config", str(config))

    assert done.returncode == 0, done.stderr
    assert "2 stranger visit(s), counted in site centring" in done.stdout
    assert f"644  WARNING: its group or others may read it; chmod 600 {memory}" in done.stdout
    assert "learn_site     off: the door neither learns nor uses it" in done.stdout


def _npz(path: Path, **arrays: Any) -> None:
    with path.open("wb") as out:
        np.savez(out, **arrays)


def _fields(**changes: Any) -> dict[str, Any]:
    """A real memory's arrays, with `changes`."""
    memory = _learned(4)
    fields = {
        "version": np.int64(1),
        "total": memory.total,
        "weight": np.float64(memory.weight),
        "weight_sq": np.float64(memory.weight_sq),
        "learned": np.int64(memory.learned),
    }
    return {**fields, **changes}


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: p.write_bytes(b"\x00garbage" * 50), "not a readable site memory"),
        (lambda p: _npz(p, **_fields(face=np.zeros(512))), "not a site memory (holds face, "),
        (lambda p: _npz(p, **_fields(total=np.zeros(10))), "total must be 512 numbers"),
        (lambda p: _npz(p, **_fields(weight=np.float64(1e9))), "weight 1000000000.0 is outside"),
    ],
    ids=["garbage", "extra-key", "wrong-shape", "weight"],
)
def test_site_show_refuses_a_file_that_is_not_a_memory(
    tmp_path: Path, write: Any, message: str
) -> None:
    config = _site_config(tmp_path, tmp_path / "gallery.db")
    memory = tmp_path / "site_memory.npz"
    write(memory)
    before = memory.read_bytes()

    done = run(tmp_path, "site", "show", "--config", str(config))
    as_json = run(tmp_path, "site", "show", "--json", "--config", str(config))

    assert done.returncode == 2 and as_json.returncode == 2
    (error,) = done.stderr.splitlines()
    assert f"{memory}: " in error and message in error, error
    assert "sets it aside as site_memory.refused.npz" in error
    assert "learned        unknown: the file cannot be used" in done.stdout
    assert message in json.loads(as_json.stdout)["error"]
    assert memory.read_bytes() == before  # shown, never moved or changed


def test_site_forget_deletes_the_memory_and_the_file_set_aside(tmp_path: Path) -> None:
    config = _site_config(tmp_path, tmp_path / "gallery.db")
    memory, aside = tmp_path / "site_memory.npz", tmp_path / "site_memory.refused.npz"
    _learned(4).save(memory)
    aside.write_bytes(b"junk")

    done = run(tmp_path, "site", "forget", "--config", str(config))
    again = run(tmp_path, "site", "forget", "--config", str(config))

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"deleted {memory}",
        f"deleted {aside}",
        f"no door is running (no socket at {tmp_path / 'door.sock'}): it starts with an empty "
        "site memory next time",
    ]
    assert not memory.exists() and not aside.exists()
    assert again.returncode == 0
    assert again.stdout.startswith(f"no site memory at {memory}: nothing to delete\n")
    shown = json.loads(run(tmp_path, "site", "show", "--json", "--config", str(config)).stdout)
    assert (shown["exists"], shown["learned"], shown["set_aside"]) == (False, 0, None)


def test_a_folder_named_as_the_site_memory_is_left_to_the_user_without_wrong_advice(
    tmp_path: Path,
) -> None:
    """Defect (a new user's walkthrough): `site show` said "`edge-app site forget` deletes it"
    of a folder named site_memory.npz, and `site forget` then failed "cannot delete ... (Is a
    directory); run as the door's user", advice no user can follow."""
    config = _site_config(tmp_path, tmp_path / "gallery.db", learn_site=False)
    folder = tmp_path / "site_memory.npz"
    folder.mkdir()
    (folder / "mine.txt").write_text("someone's own file")

    shown = run(tmp_path, "site", "show", "--config", str(config))
    forget = run(tmp_path, "site", "forget", "--config", str(config))

    assert shown.returncode == 2 and "it is a folder" in shown.stderr
    assert "site forget" not in shown.stderr
    assert forget.returncode == 2
    (error,) = forget.stderr.splitlines()
    assert error.endswith(
        f"cannot delete {folder}: it is a folder, not a site memory (the door keeps its memory "
        "in a file of its own); look at what it holds and remove it yourself"
    )
    assert (folder / "mine.txt").read_text() == "someone's own file"


class _Door:
    """What a control socket server needs of a door; counts the reloads asked for."""

    def __init__(self) -> None:
        self.reloaded = 0

    def status(self) -> dict[str, Any]:
        return {}

    def reload(self) -> None:
        self.reloaded += 1

    def reloads(self) -> bool:
        return True

    def unlock_allowed(self) -> bool:
        return False

    def unlock(self, reason: str, origin: str) -> float:
        raise AssertionError("no unlock here")


def test_site_forget_asks_a_running_door_to_reload(tmp_path: Path) -> None:
    from edge_app.control import ControlServer

    config = _site_config(tmp_path, tmp_path / "gallery.db")
    _learned(4).save(tmp_path / "site_memory.npz")
    door = _Door()
    server = ControlServer(tmp_path / "door.sock", door)
    server.start()
    try:
        done = run(tmp_path, "site", "forget", "--config", str(config))
    finally:
        server.close()

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("asked the running door to reload")
    assert door.reloaded == 1


def test_site_forget_reaches_a_door_another_client_keeps_asking_to_reload(
    tmp_path: Path,
) -> None:
    """Found by a concurrency audit: the socket refused a reload asked for within 1 s of the
    last, so `site forget` run while anyone else had just reloaded the door deleted the file
    but failed to reach the door, which kept the memory and saved it again. Reloads asked for
    sooner are now held and started together once the second has passed."""
    from edge_app.control import RELOAD_SECONDS, ControlClient, ControlError, ControlServer

    config = _site_config(tmp_path, tmp_path / "gallery.db")
    memory = tmp_path / "site_memory.npz"
    _learned(4).save(memory)
    seen: list[bool] = []  # at each reload the door starts: was the memory still there?

    class Door(_Door):
        def reload(self) -> None:
            seen.append(memory.exists())

    server = ControlServer(tmp_path / "door.sock", Door())
    server.start()
    stop = threading.Event()

    refused: list[str] = []

    def another_client() -> None:  # asks for a reload every 0.2 s, refused or not
        client = ControlClient(tmp_path / "door.sock")
        while not stop.is_set():
            try:
                client.reload()
            except ControlError as error:
                refused.append(str(error))
            stop.wait(0.2)

    asking = threading.Thread(target=another_client)
    asking.start()
    try:
        time.sleep(0.5)
        done = run(tmp_path, "site", "forget", "--config", str(config))
        stop.set()
        asking.join()
        time.sleep(RELOAD_SECONDS + 0.5)
    finally:
        stop.set()
        server.close()

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("asked the running door to reload")
    assert not memory.exists()
    assert seen[0] and not seen[-1]  # the last reload read the folder after the forget
    assert refused == []  # nobody's reload is refused, the other client's neither


def test_site_forget_says_when_the_door_cannot_be_asked(tmp_path: Path) -> None:
    import socket

    config = _site_config(tmp_path, tmp_path / "gallery.db")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "door.sock"))  # a socket file nobody listens on
    stale.close()

    done = run(tmp_path, "site", "forget", "--config", str(config))

    assert done.returncode == 2
    assert "could not ask the door to reload" in done.stderr
    assert "sudo systemctl reload edge-app" in done.stderr


# ---- doctor on the site memory ----------------------------------------------------------------


def _doctor_site_checks(tmp_path: Path, config: Path) -> list[dict]:
    """doctor's "site memory" and "site centring" checks (no "site centring" without a gallery)."""
    checks = json.loads(run(tmp_path, "doctor", "--json", "--config", str(config)).stdout)
    return [c for c in checks if c["area"] in ("site memory", "site centring")]


def _doctor_site(tmp_path: Path, config: Path) -> tuple[list[dict], dict]:
    """doctor's "site memory" checks and its "site centring" check, on a real gallery."""
    checks = _doctor_site_checks(tmp_path, config)
    (centring,) = [c for c in checks if c["area"] == "site centring"]
    return [c for c in checks if c["area"] == "site memory"], centring


def test_doctor_names_both_fixes_for_a_household_of_one(
    enrolled: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    config = _site_config(tmp_path, _copy(enrolled[0], tmp_path), learn_site=False)

    memory, centring = _doctor_site(tmp_path, config)

    assert memory == []  # learn_site off and no file: nothing to say
    assert centring["status"] == "warn" and "one person enrolled" in centring["detail"]
    assert f"edge-app enroll --config {config} --no-access" in centring["fix"]
    assert "[recognition] learn_site = true" in centring["fix"]


def test_doctor_on_a_site_memory_that_is_learning(
    enrolled: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    db = _copy(enrolled[0], tmp_path)
    config = _site_config(tmp_path, db)

    empty, waiting = _doctor_site(tmp_path, config)
    _learned(1, like=db).save(tmp_path / "site_memory.npz")
    (one,), counted = _doctor_site(tmp_path, config)

    (nothing,) = empty
    assert nothing["status"] == "ok" and "nothing learned yet" in nothing["detail"]
    assert "counts it from the first stranger's visit it learns" in nothing["detail"]
    assert waiting["status"] == "warn"
    assert "has learned no stranger's visit yet, so nothing is removed" in waiting["detail"]
    assert "learn_site = true" not in waiting["fix"]  # it is on
    assert one["status"] == "ok", one
    assert "1 stranger visit(s) learned, site centring counts them" in one["detail"]
    assert counted["status"] == "ok", counted
    assert "the one enrolled person and 1 learned stranger visits share" in counted["detail"]


def test_doctor_counts_a_ready_site_memory_for_a_household_of_one(
    enrolled: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    db = _copy(enrolled[0], tmp_path)
    config = _site_config(tmp_path, db)
    _learned(5, like=db).save(tmp_path / "site_memory.npz")

    (memory,), centring = _doctor_site(tmp_path, config)

    assert memory["status"] == "ok", memory
    assert "5 stranger visit(s) learned, site centring counts them; mode 600" in memory["detail"]
    assert centring["status"] == "ok", centring
    assert (
        "the one enrolled person and 5 learned stranger visits share a direction"
        in (centring["detail"])
    )


def test_doctor_warns_about_a_site_memory_others_can_read_or_the_door_set_aside(
    tmp_path: Path,
) -> None:
    config = _site_config(tmp_path, tmp_path / "gallery.db")
    memory, aside = tmp_path / "site_memory.npz", tmp_path / "site_memory.refused.npz"
    _learned(5).save(memory)
    memory.chmod(0o640)
    aside.write_bytes(b"junk")

    readable, set_aside = _doctor_site_checks(tmp_path, config)
    memory.write_bytes(b"junk")
    (refused, _) = _doctor_site_checks(tmp_path, config)

    assert readable["status"] == "warn" and "mode 640" in readable["detail"]
    assert readable["fix"].startswith(f"chmod 600 {memory}")
    assert set_aside["status"] == "warn"
    assert f"{aside}: a file the door could not use was set aside" in set_aside["detail"]
    assert "edge-app site forget" in set_aside["fix"]
    assert refused["status"] == "warn" and "not a readable site memory" in refused["detail"]
    assert "the door sets it aside as site_memory.refused.npz" in refused["detail"]
    assert memory.read_bytes() == b"junk"  # doctor changes nothing


def test_doctor_says_a_memory_left_when_learn_site_is_off(tmp_path: Path) -> None:
    config = _site_config(tmp_path, tmp_path / "gallery.db", learn_site=False)
    _learned(5).save(tmp_path / "site_memory.npz")

    (left,) = _doctor_site_checks(tmp_path, config)

    assert left["status"] == "warn" and "learn_site is off, but" in left["detail"]
    assert "edge-app site forget" in left["fix"]


@pytest.mark.parametrize(
    ("argv", "refusal"),
    [
        (["eval", "door", "--seed", "3"], "--seed orders the clips of --alone: give --alone too"),
        (
            ["eval", "lfw", "--reference", "float", "--backend", "edgetpu"],
            "--reference float runs on the CPU: float models cannot run on the Edge TPU",
        ),
    ],
)
def test_flags_that_contradict_each_other_are_refused(
    tmp_path: Path, argv: list[str], refusal: str
) -> None:
    """An audit: these ran, silently ignoring one of the two flags."""
    done = run(tmp_path, *argv)
    assert done.returncode == 2
    assert refusal in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option", [["--clear-discovery"], ["--sign-unlock", "phone"]])
@pytest.mark.parametrize("command", ["passwd", "unlock-code"])
def test_a_hub_option_given_with_a_hub_command_is_refused(
    tmp_path: Path, option: list[str], command: str
) -> None:
    """Found by an audit: `hub --clear-discovery passwd --stdin` set the password, exit 0,
    and cleared nothing, without a word."""
    config = tmp_path / "door.toml"
    secret = tmp_path / "secret"
    config.write_text(f'[web]\npassword_file = "{secret}"\n[mqtt]\nunlock_code_file = "{secret}"\n')
    config.chmod(0o600)

    done = run(tmp_path, "hub", *option, command, "--stdin", "--config", str(config))

    assert done.returncode == 2
    assert f"{option[0]} is a command of its own" in done.stderr
    assert not secret.exists()


def test_export_to_an_empty_file_name_says_it_is_empty(tmp_path: Path) -> None:
    """Found by an audit: `export ''` (an unset shell variable) said ".: it is a folder"."""
    done = run(tmp_path, "export", "", "--db", str(tmp_path / "gallery.db"))

    assert done.returncode == 2
    assert "FILE is empty: give a file name (an unset shell variable?), or -" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_json_output_says_why_whatever_stopped_the_command(tmp_path: Path) -> None:
    """Found by an audit: enroll --json printed a JSON refusal for refused photos but nothing
    for an empty or taken name, and import --json nothing on any failure: a script reading
    stdout got JSON for some failures and empty output for others."""
    (tmp_path / "photos").mkdir()
    db = str(tmp_path / "gallery.db")
    done = run(tmp_path, "enroll", " ", str(tmp_path / "photos"), "--json", "--db", db)
    assert done.returncode == 2
    assert json.loads(done.stdout) == {
        "name": " ",
        "enrolled": False,
        "error": "the name is empty",
        "refused": [],
    }
    export = tmp_path / "junk.jsonl"
    export.write_text("junk\n")
    done = run(tmp_path, "import", str(export), "--json", "--db", db)
    assert done.returncode == 2
    refusal = json.loads(done.stdout)
    assert refusal["imported"] is False
    assert refusal["error"].startswith("not a valid gallery export (line 1)")
    assert not Path(db).exists()
