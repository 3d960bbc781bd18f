"""edge_app.private_file: private files appear complete, mode 0600, and replace only files."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from edge_app.errors import UserError
from edge_app.hub.code import CODE_KEY, CodeFileError, read_code_file, write_code_file
from edge_app.private_file import (
    NotRegularFileError,
    write_private_bytes,
    write_private_text,
    write_secret_line,
)
from edge_app.web.auth import PasswordError, read_password_hash, write_password_file


def _write(text: str) -> Callable[[IO[str]], int]:
    return lambda handle: handle.write(text)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_new_file_is_private_and_an_old_one_replaced(tmp_path: Path) -> None:
    target = tmp_path / "secret"

    assert write_private_text(target, _write("one\n")) == 4
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    target.chmod(0o644)
    write_private_bytes(target, lambda handle: handle.write(b"two\n"))

    assert target.read_text() == "two\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert _names(tmp_path) == ["secret"]  # no temporary left behind


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _folder(path: Path) -> None:
    path.mkdir()
    (path / "inside").write_text("kept\n")


def _link_to_a_file(path: Path) -> None:
    (path.parent / "elsewhere").write_text("kept\n")
    path.symlink_to(path.parent / "elsewhere")


def _dangling_link(path: Path) -> None:
    path.symlink_to(path.parent / "nothing-here")


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (_fifo, "it is a named pipe (FIFO), not a regular file"),
        (_folder, "it is a folder, not a regular file"),
        (_link_to_a_file, "it is a symbolic link (to "),
        (_dangling_link, "it is a symbolic link (to "),
    ],
    ids=["fifo", "folder", "link", "dangling-link"],
)
def test_anything_but_a_regular_file_is_refused_and_left_as_it_is(
    tmp_path: Path, make: Callable[[Path], None], says: str
) -> None:
    target = tmp_path / "target"
    make(target)
    before = os.lstat(target)
    names = _names(tmp_path)
    written: list[IO[str]] = []

    with pytest.raises(NotRegularFileError) as caught:
        write_private_text(target, written.append)

    error = caught.value
    assert isinstance(error, UserError) and isinstance(error, OSError)
    message = str(error)
    assert message.startswith(f"{target}: {says}") and "\n" not in message
    assert "remove it or choose another path" in message
    assert says in (error.strerror or "")  # what callers that report an OSError show
    assert written == []  # refused before anything was written
    after = os.lstat(target)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert _names(tmp_path) == names
    if make is _link_to_a_file:
        assert (tmp_path / "elsewhere").read_text() == "kept\n"


def test_a_fifo_that_appears_during_the_write_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "target"

    def racing(handle: IO[str]) -> None:
        handle.write("new\n")
        os.mkfifo(target)

    with pytest.raises(NotRegularFileError, match="named pipe"):
        write_private_text(target, racing)

    assert stat.S_ISFIFO(os.lstat(target).st_mode)
    assert _names(tmp_path) == ["target"]


# --- write_secret_line: the web password's and the unlock code's one writer -----------------

# (writer, a secret it accepts, the config key its messages name, its error, a reader)
SECRET_FILES = [
    (write_password_file, "a long enough password", "web.password_file", PasswordError),
    (write_code_file, "482913", CODE_KEY, CodeFileError),
]
IDS = ["web-password", "unlock-code"]


def test_a_secret_line_is_private_in_a_private_folder_made_for_it(tmp_path: Path) -> None:
    target = tmp_path / "state" / "edge-app" / "secret"

    write_secret_line(target, "scrypt$line", "some.key")

    assert target.read_text(encoding="ascii") == "scrypt$line\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    # Its own folder 0700; missing ones above it as `mkdir -p -m 0700` makes them.
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert _names(target.parent) == ["secret"]


@pytest.mark.parametrize(("write", "secret", "key", "error"), SECRET_FILES, ids=IDS)
def test_both_hashed_secrets_make_their_missing_folder_the_same_way(
    tmp_path: Path, write: Callable[[Path, str], None], secret: str, key: str, error: type
) -> None:
    """They diverged: the web password's writer made a missing folder (0700), the unlock
    code's refused and said to "create the folder". Both now make it, 0700."""
    target = tmp_path / "state" / "secret"

    write(target, secret)

    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    if write is write_code_file:
        assert read_code_file(target).matches(secret)
    else:
        assert (read_password_hash(target) or "").startswith("scrypt$")


@pytest.mark.parametrize(("write", "secret", "key", "error"), SECRET_FILES, ids=IDS)
def test_both_hashed_secrets_refuse_an_unwritable_path_in_the_same_words(
    tmp_path: Path, write: Callable[[Path, str], None], secret: str, key: str, error: type
) -> None:
    (tmp_path / "a-file").write_text("kept\n")
    target = tmp_path / "a-file" / "sub" / "secret"  # no folder can be made under a file

    with pytest.raises(error) as caught:
        write(target, secret)

    assert str(caught.value) == (
        f"{key}: cannot write {target} (Not a directory); run as the service user "
        f"(sudo -u edge-app) or set {key} to a path it may write"
    )
    assert _names(tmp_path) == ["a-file"]


@pytest.mark.parametrize(("write", "secret", "key", "error"), SECRET_FILES, ids=IDS)
def test_both_hashed_secrets_leave_a_folder_at_their_path_in_the_same_words(
    tmp_path: Path, write: Callable[[Path, str], None], secret: str, key: str, error: type
) -> None:
    target = tmp_path / "secret"
    target.mkdir()

    with pytest.raises(error) as caught:
        write(target, secret)

    message = str(caught.value)
    assert message.startswith(f"{key}: {target}: it is a folder, not a regular file")
    assert "left untouched" in message and "\n" not in message
    assert _names(target) == []


@pytest.mark.parametrize(("write", "secret", "key", "error"), SECRET_FILES, ids=IDS)
def test_a_file_put_at_a_secrets_path_during_its_write_is_not_replaced(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write: Callable[[Path, str], None],
    secret: str,
    key: str,
    error: type,
) -> None:
    """The check of what a hash would replace runs again just before the rename: a file
    someone's program puts at the path while the hash is computed and written is kept."""
    target = tmp_path / "secret"
    fsync = os.fsync

    def meanwhile(fd: int) -> None:  # the temporary file's sync, just before the rename
        fsync(fd)
        if not target.exists():
            target.write_text("a document saved meanwhile\n")

    monkeypatch.setattr(os, "fsync", meanwhile)
    with pytest.raises(error) as caught:
        write(target, secret)
    monkeypatch.undo()

    assert str(caught.value).startswith(f"{key}: {target} does not hold a hash edge-app wrote")
    assert target.read_text() == "a document saved meanwhile\n"
    assert _names(tmp_path) == ["secret"]  # no temporary file left


def test_every_folder_made_for_private_files_is_0700_whatever_the_umask(tmp_path: Path) -> None:
    """An audit: under umask 000, mkdir(parents=True, mode=0o700) made the folders above the
    last 0777: another user renamed one away and put a folder, and a gallery, of their own
    there. Every folder made, the gallery's, the events' and the secrets', is 0700."""
    from edge_app.events import EventLog
    from edge_app.gallery import Gallery

    old = os.umask(0)
    try:
        with Gallery.open(tmp_path / "g" / "a" / "gallery.db", create=True):
            pass
        EventLog(tmp_path / "e" / "b" / "events.db", tmp_path / "j" / "c" / "e.jsonl").close()
        write_secret_line(tmp_path / "s" / "d" / "secret", "x", "web.password_file")
    finally:
        os.umask(old)
    for top in ("g", "e", "j", "s"):
        for folder in (tmp_path / top, *(p for p in (tmp_path / top).iterdir() if p.is_dir())):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def _record_syncs(monkeypatch: pytest.MonkeyPatch, target: Path) -> list[tuple[str, str, str]]:
    """Every fsync and rename from now on, in order: ("fsync", the synced path, what `target`
    holds then) or ("replace", destination, what `target` holds then). A folder's fsync fails
    with EINVAL, as some file systems' do: the write must succeed all the same."""
    events: list[tuple[str, str, str]] = []
    fsync, replace = os.fsync, os.replace

    def now() -> str:
        return target.read_text() if target.exists() else "(none)"

    def recording_fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), now()))
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        fsync(fd)

    def recording_replace(source: str | Path, destination: str | Path) -> None:
        replace(source, destination)
        events.append(("replace", str(destination), now()))

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    return events


def test_the_file_is_synced_before_its_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An audit: a power cut seconds after a reported success (hub passwd, an export) brought
    the old file back and left the temporary one: the folder was never synced."""
    folder = tmp_path.resolve()
    target = folder / "secret"
    target.write_text("old\n")
    events = _record_syncs(monkeypatch, target)

    write_private_text(target, _write("new\n"))

    (file_sync, rename, folder_sync) = events
    assert file_sync[0] == "fsync" and file_sync[2] == "old\n"  # before the rename
    assert Path(file_sync[1]).parent == folder and file_sync[1].startswith(f"{folder}/.secret.")
    assert rename == ("replace", str(target), "new\n")
    assert folder_sync == ("fsync", str(folder), "new\n")  # its EINVAL did not fail the write
    assert target.read_text() == "new\n" and _names(folder) == ["secret"]
