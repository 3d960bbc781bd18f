"""Reading a small regular file whole: the one way the app reads a file a user names.

A photo, the config and the models manifest are read from paths a user types or a folder
someone copied, so the path may not hold what it should, and a plain `read_text()` trusts it:

- a named pipe (FIFO) blocks the reader until something writes to it, that is for ever;
- a device such as /dev/zero never ends, and reading it whole would fill the memory;
- a check by name (`stat`) followed by a read by name looks the path up twice: a file
  swapped in between (a pipe for a photo, say) is read without having been checked.

So read_bounded() refuses what `stat` says is not a regular file or is larger than the limit
without opening it (opening some devices, a serial port or a tape, does something), then opens
with O_NONBLOCK (opening a pipe then returns at once instead of waiting for a writer) and
checks the descriptor it opened (`fstat`): that is the file read, whatever the name now
points to. The read stops at limit + 1 bytes, so a file that grew after the check is refused
instead of being read to its end.

A caller that reads a stream (`edge-app import <(ssh door edge-app export -)`, where the
shell hands over a pipe) may allow pipes: a pipe is then read to its end, at most limit + 1
bytes, and a named pipe that nothing writes to reads as empty at once (O_NONBLOCK open, then
a read with no writer is the end of the file), so it still cannot hang the reader.

Refusals are OSError subclasses, NotRegularFile and TooLarge, each saying what it found;
other errors (FileNotFoundError, PermissionError, ...) come from the system unchanged.
Callers word them for their own users.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

# What is at a path when it is not a regular file; a block device is a device too.
_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISDIR, "folder"),
    (stat.S_ISFIFO, "named pipe"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "device"),
    (stat.S_ISBLK, "device"),
)


def kind_of(mode: int) -> str | None:
    """What a stat's st_mode says is there when it is not a regular file ("folder",
    "device", "named pipe", "socket"), or None."""
    return next((name for test, name in _KINDS if test(mode)), None)


def missing_or_kind(path: Path | str, wanted: str) -> str:
    """Why `path` is not the `wanted` ("file", "folder") it was to be, for a message: "does
    not exist", or what is there instead ("is a device, not a file"): a FIFO or /dev/zero
    given as a folder was said not to exist."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "does not exist"
    kind = kind_of(mode) or "file"
    return f"is a {kind}, not a {wanted}"


# What a read asks for after the first (which asks for the size fstat gave, and one more).
_CHUNK = 1 << 20


class NotRegularFile(OSError):
    """A folder, device, named pipe or socket where a file was to be read.

    kind: "folder", "device", "named pipe", "socket" or "special file".
    """

    def __init__(self, path: Path | str, kind: str) -> None:
        code = errno.EISDIR if kind == "folder" else errno.EINVAL
        super().__init__(code, f"is a {kind}, not a regular file", str(path))
        self.kind = kind

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


class TooLarge(OSError):
    """A file of more than `limit` bytes. size: its size in bytes, or None when it grew past
    the limit while it was read (then it is known only to be larger)."""

    def __init__(self, path: Path | str, size: int | None, limit: int) -> None:
        found = "" if size is None else f"{size} bytes, "
        super().__init__(errno.EFBIG, f"{found}more than the {limit} bytes allowed", str(path))
        self.size = size
        self.limit = limit

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def _check(path: Path | str, info: os.stat_result, limit: int, pipes: bool) -> None:
    if pipes and stat.S_ISFIFO(info.st_mode):
        return  # a stream: its size is known only once read
    if not stat.S_ISREG(info.st_mode):
        raise NotRegularFile(path, kind_of(info.st_mode) or "special file")
    if info.st_size > limit:
        raise TooLarge(path, info.st_size, limit)


def read_bounded(path: Path | str, limit: int, *, pipes: bool = False) -> bytes:
    """The bytes of the regular file at `path`, of at most `limit` bytes (module docstring);
    with `pipes`, of a pipe too.

    NotRegularFile, TooLarge, or the OSError of the stat, open or read that failed.
    """
    return read_bounded_with_stat(path, limit, pipes=pipes)[0]


def read_bounded_with_stat(
    path: Path | str, limit: int, *, pipes: bool = False
) -> tuple[bytes, os.stat_result]:
    """read_bounded, with the `fstat` of the file it read: its owner and mode are those of
    the bytes returned, whatever the path names by the time the caller looks."""
    _check(path, os.stat(path), limit, pipes)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        _check(path, info, limit, pipes)
        if stat.S_ISFIFO(info.st_mode):
            # Wait for data a writer has yet to send; with no writer a read is the end.
            os.set_blocking(fd, True)
        chunks: list[bytes] = []
        size = 0
        want = info.st_size + 1  # as a rule, the whole file in one read, then its end
        while size <= limit:
            chunk = os.read(fd, min(want, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            want = _CHUNK
    finally:
        os.close(fd)
    if size > limit:
        raise TooLarge(path, None, limit)
    return b"".join(chunks), info


def read_or_refuse(
    path: Path | str,
    limit: int,
    refuse: Callable[[str], Exception],
    *,
    what: str,
    label: str | None = None,
) -> bytes:
    """read_bounded, with each refusal raised as `refuse(message)`, one line that starts with
    `label` (default: the path) and names `what` the file should be ("a model file")."""
    shown = str(path) if label is None else label
    try:
        return read_bounded(path, limit)
    except NotRegularFile as error:
        raise refuse(f"{shown}: is a {error.kind}, not {what}") from None
    except TooLarge as error:
        size = "" if error.size is None else f"{error.size} bytes, "
        raise refuse(f"{shown}: {size}more than the {limit} bytes {what} may have") from None
    except OSError as error:
        raise refuse(f"{shown}: cannot read {what} ({error.strerror or error})") from None


def zip_unpacked_bytes(data: bytes) -> int | None:
    """What the zip archive `data` says its members unpack to (its central directory), or None
    for data that is not a zip, or one too damaged to list (its reader then refuses it). A
    small file may declare gigabytes: a reader that trusts it (numpy's .npz, torch's
    checkpoints) allocates what is declared before it finds out."""
    import io
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, NotImplementedError, ValueError, OSError, EOFError):
        return None  # BadZipFile, or a damaged directory ("zip file version 13.2", ...)
