"""Temporary files that a killed write leaves beside its target (SIGKILL, the OOM killer, a
power cut between making the file and renaming it) are removed by the next write of that
target, and nothing else is: not a live write's file, not another target's, not a link."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import pytest

from edge_app import private_file
from edge_app.config import GpioConfig
from edge_app.gallery import EMBEDDING_DIM
from edge_app.private_file import (
    LEFTOVER_SECONDS,
    leftover_pattern,
    write_private_bytes,
    write_private_text,
    write_secret_line,
)
from edge_app.relay_record import SYSTEMD_UNIT_VARIABLE, write_record
from edge_app.site_memory import SiteMemory, site_memory_path

ROOT = Path(__file__).resolve().parents[1]
OLD = time.time() - LEFTOVER_SECONDS - 60  # older than a live write's file can look


def _write(text: str) -> Callable[[IO[str]], int]:
    return lambda handle: handle.write(text)


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def leftover(folder: Path, name: str, *, data: bytes = b"half", when: float = OLD) -> Path:
    """A file as a killed write leaves it: private (0600), last changed at `when`."""
    path = folder / name
    path.write_bytes(data)
    path.chmod(0o600)
    os.utime(path, (when, when))
    return path


def removed_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "edge_app.private_file" and "temporary file" in r.getMessage()
    ]


def kill_while_writing(script: str, path: Path) -> None:
    """Run `script` with `path` in a process of its own and SIGKILL it once it prints that
    it is writing (and then stalls)."""
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    try:
        # A child that dies before it writes ends the line (EOF), so this cannot hang.
        assert child.stdout.readline() == "writing\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()


KILLED_WRITE = """
import sys, time
from pathlib import Path
from edge_app.private_file import write_private_text

def writer(handle):
    handle.write("half of it")
    handle.flush()
    print("writing", flush=True)
    time.sleep(60)

write_private_text(Path(sys.argv[1]), writer)
"""


def test_a_write_killed_mid_way_leaves_a_file_the_next_write_removes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real SIGKILL between the temporary file and its rename: the file it leaves is named
    as the sweep expects (mkstemp's names), kept while young, removed once old."""
    target = tmp_path / "secret"
    target.write_text("old\n")
    target.chmod(0o600)
    kill_while_writing(KILLED_WRITE, target)
    left = [name for name in _names(tmp_path) if name != "secret"]
    assert len(left) == 1 and leftover_pattern(target).fullmatch(left[0]), left
    assert target.read_text() == "old\n"  # the old file, never half a new one

    write_private_text(target, _write("new\n"))  # young: perhaps a live write's, kept
    assert _names(tmp_path) == {"secret", left[0]}

    os.utime(tmp_path / left[0], (OLD, OLD))
    with caplog.at_level(logging.INFO, logger="edge_app.private_file"):
        write_private_text(target, _write("newer\n"))
    assert _names(tmp_path) == {"secret"}
    assert target.read_text() == "newer\n"
    lines = removed_lines(caplog)
    assert len(lines) == 1 and "removed 1 " in lines[0] and str(target) in lines[0]
    assert "\n" not in lines[0]


def test_only_old_private_leftovers_of_this_target_are_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    outside = tmp_path / "outside"
    outside.write_bytes(b"someone's file")
    outside.chmod(0o600)  # as private as a leftover: only the link itself tells them apart
    os.utime(outside, (OLD, OLD))
    gone = {leftover(folder, ".secret.ab_cd123").name, leftover(folder, ".secret.zz9zz9zz").name}
    kept = {
        leftover(folder, ".secret.young123", when=time.time()).name,  # a live write's, perhaps
        leftover(folder, ".secret.future12", when=time.time() + 86400).name,  # clock stepped
        leftover(folder, ".secret.abcd12345").name,  # 9 characters: not mkstemp's
        leftover(folder, ".secret.abcd1234.new").name,  # the gallery's own temporary name
        leftover(folder, ".secret.ABCD1234").name,  # not mkstemp's alphabet
        leftover(folder, "secret.abcd1234").name,  # not hidden
        leftover(folder, ".secrets.abcd1234").name,  # another target's
        leftover(folder, ".other.abcd1234").name,  # another target's
        leftover(folder, ".Secret.abcd1234").name,
        "photo.jpg",
        ".secret.shared12",  # others may read it: not what the writer leaves
        ".secret.linked12",  # a hard link: another name for someone's file
        ".secret.symlink1",  # a symbolic link: neither followed nor removed
        ".secret.folder12",  # a folder
    }
    leftover(folder, "photo.jpg")
    leftover(folder, ".secret.shared12").chmod(0o644)
    os.link(leftover(folder, "kept-elsewhere"), folder / ".secret.linked12")
    kept.add("kept-elsewhere")
    os.symlink(outside, folder / ".secret.symlink1")
    os.utime(folder / ".secret.symlink1", (OLD, OLD), follow_symlinks=False)
    (folder / ".secret.folder12").mkdir(mode=0o700)
    os.utime(folder / ".secret.folder12", (OLD, OLD))

    with caplog.at_level(logging.INFO, logger="edge_app.private_file"):
        write_private_text(folder / "secret", _write("new\n"))

    assert _names(folder) == kept | {"secret"}
    assert not gone & _names(folder)
    assert outside.read_bytes() == b"someone's file"
    assert (folder / "secret").read_text() == "new\n"
    lines = removed_lines(caplog)
    assert len(lines) == 1 and "removed 2 " in lines[0], lines


def test_nothing_to_sweep_says_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="edge_app.private_file"):
        write_private_text(tmp_path / "secret", _write("one\n"))
        write_private_text(tmp_path / "secret", _write("two\n"))
    assert removed_lines(caplog) == [] and _names(tmp_path) == {"secret"}


def test_a_live_writes_file_is_never_removed_even_when_it_looks_old(tmp_path: Path) -> None:
    """A write still under way holds its temporary file's lock: another write of the same
    target (or a clock stepped forward, making it look old) never removes it."""
    target = tmp_path / "secret"
    started, release = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def slow(handle: IO[str]) -> None:
        handle.write("first\n")
        handle.flush()
        started.set()
        assert release.wait(10)

    def first_write() -> None:
        try:
            write_private_text(target, slow)
        except BaseException as error:  # reported by the test below
            failures.append(error)

    thread = threading.Thread(target=first_write)
    thread.start()
    try:
        assert started.wait(10)
        (temp,) = [p for p in tmp_path.iterdir() if leftover_pattern(target).fullmatch(p.name)]
        os.utime(temp, (OLD, OLD))
        assert private_file.sweep_leftovers(target) == 0
        assert private_file.sweep_leftovers(target, now=time.time() + 86400 * 365) == 0
        write_private_text(target, _write("second\n"))  # sweeps before it writes
        assert temp.exists()
    finally:
        release.set()
        thread.join(10)
    assert failures == []
    assert target.read_text() == "first\n"  # the first write finished, renamed into place
    assert _names(tmp_path) == {"secret"}


@pytest.mark.parametrize("kind", ["site memory", "relay record", "secret line", "bytes"])
def test_every_private_writer_sweeps_its_own_leftovers(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One sweep, in the writer every private file goes through: the site memory (about
    415 kB a leftover when full), the relay record, the hashed secrets, binary files."""
    gallery = tmp_path / "gallery.db"
    gallery.write_bytes(b"not touched")
    targets = {
        "site memory": site_memory_path(gallery),
        "relay record": tmp_path / "relay.json",
        "secret line": tmp_path / "web-password",
        "bytes": tmp_path / "export.npz",
    }
    target = targets[kind]
    big = os.urandom(415 * 1024)
    stale = leftover(tmp_path, f".{target.name}.k1lled00", data=big)
    others = {
        leftover(tmp_path, f".{other.name}.k1lled00").name
        for other in targets.values()
        if other != target
    } | {leftover(tmp_path, ".gallery.db.k1lled00.new").name, "gallery.db"}
    with caplog.at_level(logging.INFO, logger="edge_app.private_file"):
        if kind == "site memory":
            memory = SiteMemory()
            memory.add(np.ones(EMBEDDING_DIM))
            memory.save(target)
            assert SiteMemory.load(target).learned == 1
        elif kind == "relay record":
            os.environ[SYSTEMD_UNIT_VARIABLE] = "test"  # written only by a door systemd runs
            try:
                assert write_record(GpioConfig(pin=17, factory="lgpio"), target)
            finally:
                del os.environ[SYSTEMD_UNIT_VARIABLE]
        elif kind == "secret line":
            write_secret_line(target, "hash", "web.password_file")
        else:
            write_private_bytes(target, lambda handle: handle.write(b"\x00" * 10))
    assert not stale.exists()
    assert _names(tmp_path) == others | {target.name}
    assert (tmp_path / "gallery.db").read_bytes() == b"not touched"
    assert len(removed_lines(caplog)) == 1


def test_site_forget_deletes_the_copies_killed_saves_left_whatever_their_age(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a durability audit: a save of the site memory killed before its rename left
    `.site_memory.npz.XXXXXXXX` (415 kB: the strangers' faces the door learned), and
    `site forget` said "deleted" while that copy stayed until a later save swept it, which
    never comes with learn_site turned off. forget() removes them too, however young."""
    from edge_app import cli

    gallery = tmp_path / "gallery.db"
    memory_path = site_memory_path(gallery)
    memory = SiteMemory()
    memory.add(np.ones(EMBEDDING_DIM))
    memory.save(memory_path)
    young = leftover(
        tmp_path, f".{memory_path.name}.k1lled00", data=memory_path.read_bytes(), when=time.time()
    )
    old = leftover(tmp_path, f".{memory_path.name}.k1lled01")
    config = tmp_path / "door.toml"
    config.write_text(f'[gallery]\npath = "{gallery}"\n[hub]\nsocket = ""\n')
    assert cli.main(["site", "forget", "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith(f"deleted {memory_path}\n")
    assert not memory_path.exists() and not young.exists() and not old.exists()
    assert _names(tmp_path) == {"door.toml"}


def test_the_pattern_is_mkstemps_naming_for_this_target_only(tmp_path: Path) -> None:
    """The sweep recognises exactly the names tempfile.mkstemp gives the writer (checked on
    real names, should a Python release change them)."""
    import tempfile

    target = tmp_path / "site_memory.npz"
    pattern = leftover_pattern(target)
    for _ in range(50):
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=tmp_path)
        os.close(fd)
        assert pattern.fullmatch(Path(name).name), name
    assert not pattern.fullmatch(".site_memory.npz.refused.npz")
    assert not pattern.fullmatch(".site_memoryXnpz.abcdefgh")  # the dot is literal


KILLED_SNAPSHOT = """
import os, sys, time
import numpy as np
from pathlib import Path
from edge_app.events import EventLog

opened = os.fdopen

class Stalls:
    # The snapshot's file: the first half of the JPEG reaches the disk, then the door stalls.
    def __init__(self, handle):
        self.handle = handle
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.handle.close()
    def fileno(self):
        return self.handle.fileno()
    def flush(self):
        self.handle.flush()
    def write(self, data):
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        print("writing", flush=True)
        time.sleep(60)

os.fdopen = lambda fd, *args, **kwargs: Stalls(opened(fd, *args, **kwargs))
crop = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
EventLog(snapshots=Path(sys.argv[1])).record("unknown", track=1, crop=crop)
"""


def test_a_snapshot_killed_mid_write_never_appears_under_its_name_and_is_swept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A door killed (SIGKILL, the OOM killer) while a snapshot is being written leaves no
    half JPEG under a snapshot's name, where the web page and the events would show it as
    the face of that event; the temporary file it leaves is removed at the door's next
    start once it is old, and a young one (perhaps a live write's) is kept."""
    from edge_app.events import SNAPSHOT_NAME, SNAPSHOT_TEMPORARY, EventLog

    folder = tmp_path / "snapshots"
    folder.mkdir(mode=0o700)
    kill_while_writing(KILLED_SNAPSHOT, folder)
    left = sorted(_names(folder))
    assert [name for name in left if SNAPSHOT_NAME.match(name)] == []  # no half snapshot
    assert len(left) == 1 and SNAPSHOT_TEMPORARY.fullmatch(left[0]), left

    crop = np.full((32, 32, 3), 100, np.uint8)
    young = EventLog(snapshots=folder)
    assert young.record("unknown", track=2, crop=crop).snapshot is not None
    assert left[0] in _names(folder)  # young: kept
    young.close()

    os.utime(folder / left[0], (OLD, OLD))
    restarted = EventLog(snapshots=folder)
    with caplog.at_level(logging.INFO, logger="edge_app.private_file"):
        event = restarted.record("unknown", track=3, crop=crop)
    restarted.close()
    names = _names(folder)
    assert left[0] not in names and len(names) == 2
    assert all(SNAPSHOT_NAME.match(name) for name in names)
    assert event.snapshot is not None and Path(event.snapshot).name in names
    lines = removed_lines(caplog)
    assert len(lines) == 1 and "removed 1 " in lines[0] and str(folder) in lines[0]


def test_the_daily_retention_sweeps_snapshot_leftovers_too(tmp_path: Path) -> None:
    from edge_app.events import EventLog

    folder = tmp_path / "snapshots"
    folder.mkdir(mode=0o700)
    now = [time.time()]
    log = EventLog(snapshots=folder, retention_days=30, clock=lambda: now[0])
    crop = np.full((32, 32, 3), 100, np.uint8)
    written = log.record("unknown", track=1, crop=crop).snapshot
    assert written is not None
    name = Path(written).name
    # Left by a door killed while it wrote: the folder was listed before it appeared.
    stale = leftover(folder, "." + name.replace("_t1.jpg", "_t9.jpg") + ".abcd1234")
    other = leftover(folder, ".holiday.jpg.abcd1234")  # not a snapshot's: never touched
    assert log.apply_retention() == (0, 0)
    assert _names(folder) == {name, other.name} and not stale.exists()
    log.close()


def test_a_snapshot_never_replaces_a_file_already_under_its_name(tmp_path: Path) -> None:
    from edge_app.events import EventLog

    folder = tmp_path / "snapshots"
    folder.mkdir(mode=0o700)
    when = 1_700_000_000.0
    log = EventLog(snapshots=folder, clock=lambda: when)
    crop = np.full((32, 32, 3), 100, np.uint8)
    first = log.record("unknown", track=1, crop=crop).snapshot
    assert first is not None
    Path(first).write_bytes(b"kept as it is")
    again = log.record("unknown", track=1, crop=crop)  # the same name: same time and track
    numbered = Path(first).name.replace("_t1.jpg", "_t1-2.jpg")  # the older file stays
    assert again.snapshot == str(folder / numbered) and log.snapshot_errors == 0
    assert Path(first).read_bytes() == b"kept as it is"
    assert _names(folder) == {Path(first).name, numbered}  # and no temporary file left
    log.close()


def test_a_file_system_without_hard_links_still_gets_whole_snapshots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some FUSE and network mounts refuse hard links (EPERM): the snapshot is renamed into
    place instead, still never over a file already there."""
    from edge_app.events import EventLog

    def no_links(*_: object, **__: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    folder = tmp_path / "snapshots"
    folder.mkdir(mode=0o700)
    log = EventLog(snapshots=folder, clock=lambda: 1_700_000_000.0)
    crop = np.full((32, 32, 3), 100, np.uint8)
    first = log.record("unknown", track=1, crop=crop).snapshot
    assert first is not None and Path(first).read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    assert os.stat(first).st_mode & 0o777 == 0o600
    Path(first).write_bytes(b"kept as it is")
    again = log.record("unknown", track=1, crop=crop).snapshot
    assert again is not None and again.endswith("_t1-2.jpg")
    assert Path(first).read_bytes() == b"kept as it is"
    assert Path(again).read_bytes()[:2] == b"\xff\xd8"
    assert _names(folder) == {Path(first).name, Path(again).name}
    log.close()


def test_a_gallery_creation_killed_before_its_link_is_swept_by_the_next_creation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A new gallery is built under `.gallery.db.XXXXXXXX.new` (SQLite beside it: -wal,
    -shm, and -journal while the schema is first written) and linked into place; a kill
    before the link leaves them, and no gallery, so the next enrolment creates it again and
    removes the old ones (the -journal was left for ever, found by a kill -9 audit)."""
    from edge_app.gallery import Gallery

    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    gone = {
        leftover(folder, ".gallery.db.ab_cd123.new").name,
        leftover(folder, ".gallery.db.ab_cd123.new-wal").name,
        leftover(folder, ".gallery.db.ab_cd123.new-shm").name,
        leftover(folder, ".gallery.db.ab_cd123.new-journal").name,
    }
    kept = {
        leftover(folder, ".gallery.db.young123.new", when=time.time()).name,
        leftover(folder, ".gallery.db.abcd1234").name,  # not a creation's (no .new)
        leftover(folder, ".gallery.db.abcd1234.new.bak").name,
        leftover(folder, ".other.db.abcd1234.new").name,
    }
    with (
        caplog.at_level(logging.INFO, logger="edge_app.private_file"),
        Gallery.open(folder / "gallery.db", create=True) as gallery,
    ):
        assert gallery.load_matrix().names == ()
    names = _names(folder)
    assert gone.isdisjoint(names) and kept <= names
    assert {n for n in names - kept if not n.startswith("gallery.db")} == set()
    lines = removed_lines(caplog)
    assert len(lines) == 1 and "removed 4 " in lines[0]


def test_a_gallery_is_created_on_a_file_system_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_app.gallery import Gallery

    def no_links(*_: object, **__: object) -> None:
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "gallery.db"
    with Gallery.open(path, create=True) as gallery:
        assert gallery.load_matrix().names == ()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert sorted(n for n in _names(tmp_path) if n.startswith(".")) == []  # no temporary left
