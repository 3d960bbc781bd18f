"""edge_app.bounded_read and its callers: a regular file of bounded size is read, anything else
(a folder, a device, a named pipe, a socket, a file that is too large or grows) is refused at
once, without hanging and without reading it to its end."""

from __future__ import annotations

import io
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_app import config as config_module
from edge_app import gallery, images, manifest, paths
from edge_app.bounded_read import NotRegularFile, TooLarge, read_bounded
from edge_app.config import ConfigError, load_config, read_config_file
from edge_app.errors import UserError
from edge_app.gallery import EMBEDDING_DIM, Gallery, GalleryError, NewSample, read_export_file
from edge_app.hub.code import CodeFileError, read_code_file
from edge_app.hub.signing import read_secret
from edge_app.images import ImageError, read_image
from edge_app.manifest import MANIFEST_NAME, ManifestError, load_manifest
from edge_app.private_file import MAX_SECRET_BYTES

HANG_SECONDS = 5


def outcome_within_seconds(fifo: Path, attempt: Callable[[], object]) -> BaseException | None:
    """What attempt() raised (None if it returned), failing the test if it hangs on `fifo`."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            attempt()
        except BaseException as error:  # handed to the test's thread
            outcome.append(error)
        else:
            outcome.append(None)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(HANG_SECONDS)
    if worker.is_alive():
        # A writer that comes and goes gives the blocked reader its end, so the run goes on.
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"reading the named pipe {fifo} hung")
    return outcome[0]


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


@pytest.fixture
def understated_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """stat and fstat report every regular file as empty: as if it grew after the checks."""
    real_stat, real_fstat = os.stat, os.fstat

    def empty(info: os.stat_result) -> os.stat_result:
        if not stat.S_ISREG(info.st_mode):
            return info
        fields = list(info[:10])
        fields[6] = 0  # st_size
        return os.stat_result(fields)

    monkeypatch.setattr(os, "stat", lambda path, *a, **k: empty(real_stat(path, *a, **k)))
    monkeypatch.setattr(os, "fstat", lambda fd: empty(real_fstat(fd)))


def test_a_regular_file_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "file"
    data = os.urandom(3 * (1 << 20) + 17)  # more than one read's worth after the first
    path.write_bytes(data)
    assert read_bounded(path, len(data) + 1000) == data
    assert read_bounded(str(path), len(data)) == data
    (tmp_path / "empty").write_bytes(b"")
    assert read_bounded(tmp_path / "empty", 0) == b""


@pytest.mark.parametrize(
    ("grew", "size", "words"),
    [(False, 100, "100 bytes, more"), (True, None, "more")],
    ids=["too-large", "grew-after-the-checks"],
)
def test_a_file_of_exactly_the_limit_is_read_and_one_byte_more_is_refused(
    tmp_path: Path, request: pytest.FixtureRequest, grew: bool, size: int | None, words: str
) -> None:
    """Grown: stat and fstat said it fitted, so only the read of limit + 1 bytes tells."""
    if grew:
        request.getfixturevalue("understated_sizes")
    path = tmp_path / "file"
    path.write_bytes(b"x" * 100)
    assert read_bounded(path, 100) == b"x" * 100
    with pytest.raises(TooLarge) as caught:
        read_bounded(path, 99)
    assert (caught.value.size, caught.value.limit) == (size, 99)
    assert str(caught.value) == f"{path}: {words} than the 99 bytes allowed"


def test_a_named_pipe_is_refused_without_hanging(fifo: Path) -> None:
    error = outcome_within_seconds(fifo, lambda: read_bounded(fifo, 1000))
    assert isinstance(error, NotRegularFile) and error.kind == "named pipe"
    assert str(error) == f"{fifo}: is a named pipe, not a regular file"


def test_a_named_pipe_swapped_in_after_the_stat_is_refused_without_hanging(
    fifo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stat says regular file (what was there when it looked), the open finds the pipe: the
    non-blocking open returns and fstat of the descriptor refuses it."""
    regular = tmp_path / "regular"
    regular.write_bytes(b"x")
    real_stat = os.stat
    monkeypatch.setattr(
        os, "stat", lambda path, *a, **k: real_stat(regular if path == fifo else path, *a, **k)
    )
    error = outcome_within_seconds(fifo, lambda: read_bounded(fifo, 1000))
    assert isinstance(error, NotRegularFile) and error.kind == "named pipe"


def test_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotRegularFile) as caught:
        read_bounded(tmp_path, 1000)
    assert caught.value.kind == "folder"
    assert isinstance(caught.value, OSError)


def test_dev_zero_is_refused_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A character device: refused from its type, not a byte of it read (reading it would
    never end before the limit's worth)."""
    reads: list[int] = []
    real_read = os.read

    def counted(fd: int, size: int) -> bytes:
        reads.append(size)
        return real_read(fd, size)

    monkeypatch.setattr(os, "read", counted)
    with pytest.raises(NotRegularFile) as caught:
        read_bounded(Path("/dev/zero"), 1 << 30)
    assert caught.value.kind == "device"
    assert reads == []


def test_a_link_to_dev_zero_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to("/dev/zero")
    with pytest.raises(NotRegularFile, match="is a device, not a regular file"):
        read_bounded(link, 1 << 30)


def test_a_socket_is_refused() -> None:
    # A short folder of its own: a socket's path must fit in 108 bytes, which pytest's
    # tmp_path does not promise.
    folder = Path(tempfile.mkdtemp(prefix="sock-", dir="/tmp"))
    path = folder / "s"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(str(path))
            with pytest.raises(NotRegularFile) as caught:
                read_bounded(path, 1000)
    finally:
        shutil.rmtree(folder)
    assert caught.value.kind == "socket"


def test_a_missing_file_is_the_systems_own_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError) as caught:
        read_bounded(missing, 1000)
    assert caught.value.filename == str(missing)
    assert not isinstance(caught.value, (NotRegularFile, TooLarge))


# The callers: each words the refusals for its own users, and none hangs on a named pipe.


def test_a_config_that_is_a_named_pipe_is_refused_without_hanging(fifo: Path) -> None:
    error = outcome_within_seconds(fifo, lambda: load_config(fifo))
    assert isinstance(error, ConfigError)
    assert str(error) == f"{fifo}: not a regular file; give the config file (TOML)"


def test_a_manifest_that_is_a_named_pipe_is_refused_without_hanging(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    os.mkfifo(models / MANIFEST_NAME)
    error = outcome_within_seconds(models / MANIFEST_NAME, lambda: load_manifest(models))
    assert isinstance(error, ManifestError)
    assert str(error).startswith(f"{models / MANIFEST_NAME}: not a regular file")


def test_a_photo_that_is_a_named_pipe_is_refused_without_hanging(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    os.mkfifo(photo)
    error = outcome_within_seconds(photo, lambda: read_image(photo))
    assert isinstance(error, ImageError)
    assert str(error) == (
        f"{photo}: not a regular file (a device, pipe or socket); give a photo file"
    )


def test_the_callers_keep_their_own_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImageError, match="is a folder, not an image"):
        read_image(tmp_path)
    with pytest.raises(ImageError, match="photo.jpg: no such file"):
        read_image(tmp_path / "photo.jpg")
    with pytest.raises(ConfigError, match="absent.toml: config file not found"):
        read_config_file(tmp_path / "absent.toml")
    with pytest.raises(ManifestError, match=f"no {MANIFEST_NAME} in"):
        load_manifest(tmp_path)
    monkeypatch.setattr(paths, "DEFAULT_CONFIG", tmp_path / "absent.toml")
    assert read_config_file(None) == (tmp_path / "absent.toml", {})


def test_a_config_with_windows_line_ends_reads_and_old_mac_ones_say_how_to_fix_them(
    tmp_path: Path,
) -> None:
    """CRLF is a TOML line end; a lone CR is not (read as one, a line that TOML readers see
    as part of a comment was applied), and the refusal says what to do."""
    path = tmp_path / "door.toml"
    path.write_bytes(b'[door]\r\nname = "front"\r\n[camera]\nfps = 10\r\n')
    assert read_config_file(path)[1] == {"door": {"name": "front"}, "camera": {"fps": 10}}
    path.write_bytes(b'[door]\r\nname = "front"\r[camera]\nfps = 10\r\n')
    with pytest.raises(ConfigError, match="a lone carriage return: save it with LF line ends"):
        read_config_file(path)
    path.write_bytes(b"[door]\nname = \xff\n")
    with pytest.raises(ConfigError, match="cannot read the config file .*utf-8"):
        read_config_file(path)


def test_a_config_saved_with_a_byte_order_mark_reads_and_a_gallery_given_as_it_says_so(
    tmp_path: Path,
) -> None:
    """Found by a walkthrough: a config saved by a Windows editor (UTF-8 with a byte-order
    mark) was "not valid TOML (Invalid statement (at line 1, column 1))", and `--config
    gallery.db` a UTF-8 decoding error. The mark is read past; an SQLite file is named."""
    path = tmp_path / "door.toml"
    path.write_bytes(b'\xef\xbb\xbf[door]\r\nname = "front"\r\n')
    assert read_config_file(path)[1] == {"door": {"name": "front"}}
    path.write_bytes(b"SQLite format 3\x00" + bytes(84) + b"\xfa\xfb")
    with pytest.raises(ConfigError, match="an SQLite database .*, not the TOML config; give"):
        read_config_file(path)


def test_files_that_grew_past_each_callers_limit_are_refused_in_its_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, understated_sizes: None
) -> None:
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 10)
    monkeypatch.setattr(config_module, "CONFIG_MAX_BYTES", 10)
    monkeypatch.setattr(manifest, "MANIFEST_MAX_BYTES", 10)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff" + bytes(100))
    with pytest.raises(ImageError) as image_error:
        read_image(photo)
    assert str(image_error.value) == f"{photo}: more than the 10 bytes allowed"
    toml = tmp_path / "door.toml"
    toml.write_text("# " + "x" * 100 + "\n")
    with pytest.raises(ConfigError) as config_error:
        read_config_file(toml)
    assert str(config_error.value) == (
        f"{toml}: more than a config file has (10 at most); is this the config file?"
    )
    models = tmp_path / "models"
    models.mkdir()
    (models / MANIFEST_NAME).write_text("{" + " " * 100 + "}")
    with pytest.raises(ManifestError, match="more than the 10 bytes a manifest has"):
        load_manifest(models)


# The gallery import and the hub's secret files: the same refusals, in their own words.


def test_an_import_file_that_is_a_named_pipe_nothing_writes_to_ends_at_once(
    fifo: Path, tmp_path: Path
) -> None:
    """A named pipe with nothing writing to it hung the import. It now reads as empty at
    once (refused as an empty export); a folder is refused for what it is."""
    error = outcome_within_seconds(fifo, lambda: read_export_file(str(fifo)))
    assert isinstance(error, GalleryError)
    assert "the file is empty" in str(error)
    with pytest.raises(GalleryError) as caught:
        read_export_file(str(tmp_path))
    assert str(caught.value) == f"cannot import {tmp_path}: it is a folder, not a file or a pipe"


def test_an_import_from_a_pipe_with_a_writer_reads_the_whole_export(tmp_path: Path) -> None:
    """`edge-app import <(ssh door edge-app export -)`: the shell hands over a pipe whose
    writer sends the export in pieces, slower than the reader; all of it is read."""
    people = tmp_path / "people.db"
    with Gallery.open(people, create=True) as db:
        db.enroll("Ada", [NewSample(np.eye(1, EMBEDDING_DIM, 0, np.float32)[0], "0" * 64)])
        db.enroll("Bob", [NewSample(np.eye(1, EMBEDDING_DIM, 1, np.float32)[0], "1" * 64)])
        text = io.StringIO()
        db.export(text)
    data = text.getvalue().encode()
    read_end, write_end = os.pipe()

    def write_slowly() -> None:
        with os.fdopen(write_end, "wb") as out:
            for start in range(0, len(data), 4096):
                out.write(data[start : start + 4096])
                out.flush()
                time.sleep(0.01)

    writer = threading.Thread(target=write_slowly, daemon=True)
    writer.start()
    try:
        exported = read_export_file(f"/proc/self/fd/{read_end}")
    finally:
        writer.join(HANG_SECONDS)
        os.close(read_end)
    assert [person.name for person in exported] == ["Ada", "Bob"]


@pytest.mark.parametrize("grew", [False, True], ids=["too-large", "grew-after-the-checks"])
def test_an_import_file_over_the_limit_is_refused_in_the_imports_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, grew: bool
) -> None:
    if grew:
        request.getfixturevalue("understated_sizes")
    monkeypatch.setattr(gallery, "MAX_IMPORT_BYTES", 10)
    source = tmp_path / "big.jsonl"
    source.write_text("x" * 11)
    with pytest.raises(GalleryError) as caught:
        read_export_file(str(source))
    assert str(caught.value) == (
        f"cannot import {source}: more than the 10 bytes an export may have"
    )


def test_a_secret_file_that_is_a_named_pipe_or_a_folder_is_refused_without_hanging(
    fifo: Path, tmp_path: Path
) -> None:
    """Refused for what it is, whatever its mode (no chmod advice for a pipe)."""
    error = outcome_within_seconds(fifo, lambda: read_secret(fifo, "mqtt.password_file"))
    assert isinstance(error, UserError)
    assert str(error) == f"mqtt.password_file: {fifo} is not a regular file"
    with pytest.raises(UserError) as caught:
        read_secret(tmp_path, "mqtt.unlock_secret_file")
    assert str(caught.value) == f"mqtt.unlock_secret_file: {tmp_path} is not a regular file"


@pytest.mark.parametrize("grew", [False, True], ids=["too-large", "grew-after-the-checks"])
def test_a_secret_file_over_the_limit_is_refused_unread(
    tmp_path: Path, request: pytest.FixtureRequest, grew: bool
) -> None:
    """A secret is one line: a file of more than MAX_SECRET_BYTES is the wrong file."""
    if grew:
        request.getfixturevalue("understated_sizes")
    path = tmp_path / "key"
    path.write_bytes(b"k" * 40 + b"\n" + b"x" * MAX_SECRET_BYTES)
    path.chmod(0o600)
    with pytest.raises(UserError) as caught:
        read_secret(path, "mqtt.unlock_secret_file", min_chars=32)
    assert str(caught.value) == (
        f"mqtt.unlock_secret_file: {path} is more than the {MAX_SECRET_BYTES} bytes a secret "
        "file may have; is this the right file?"
    )
    path.write_bytes(b"k" * 40 + b"\n" + b"x" * (MAX_SECRET_BYTES - 41))  # exactly the limit
    assert read_secret(path, "mqtt.unlock_secret_file", min_chars=32) == "k" * 40


def test_an_unlock_code_file_that_is_a_pipe_or_too_large_is_refused_without_hanging(
    fifo: Path, tmp_path: Path
) -> None:
    """The hub's unlock-code hash file: the same refusals as the secret files."""
    error = outcome_within_seconds(fifo, lambda: read_code_file(fifo))
    assert isinstance(error, CodeFileError)
    assert f"{fifo} is not a regular file" in str(error)
    path = tmp_path / "unlock-code"
    path.write_bytes(b"x" * (MAX_SECRET_BYTES + 1))
    path.chmod(0o600)
    with pytest.raises(CodeFileError, match=f"more than the {MAX_SECRET_BYTES} bytes"):
        read_code_file(path)
