"""Private files: written atomically with mode 0600, refused when others may read them.

Secrets (the web password hash, the unlock code hash, MQTT and signing keys) and gallery
exports hold what must stay with the service user, so each is written under a private
temporary name beside its target and renamed into place when complete (a failure leaves the
old file, never half a new one; the file is synced before the rename and its folder after,
so a power cut soon after a reported success keeps the new one), and a secret file that its
group or others may read or write is refused until its owner runs `chmod 600`.

Only a regular file is ever replaced: a folder, device, named pipe, socket or symbolic link
at the target is refused and left as it is (NotRegularFileError), so a mistyped path cannot
swap a device node or a link for a secret. A hashed secret (write_secret_line) replaces only
a file that is recognisably one: empty, or one hash line of this user (refuse_foreign_secret),
so a mistyped path cannot swap someone's file (a database, a document) for a hash either.

A write killed between making its temporary file and renaming it (SIGKILL, the OOM killer, a
power cut) leaves that file behind, private but useless; the next write of the same target
removes such leftovers (sweep_leftovers), so they do not pile up over months of power cuts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import pwd
import re
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, AnyStr, TypeVar

from edge_app.bounded_read import (
    NotRegularFile,
    TooLarge,
    read_bounded,
    read_bounded_with_stat,
)
from edge_app.errors import UserError
from edge_app.secret_hash import is_hash_line

log = logging.getLogger(__name__)

FILE_MODE = 0o600
FOLDER_MODE = 0o700  # a folder made for private files: only its owner may list or enter it
# A secret file holds one line (a key from `openssl rand -hex 32` is 65 bytes, a password hash
# or a broker password less): 64 KiB is far more than any, and refuses a wrong file (a log,
# an image) before it is read into memory.
MAX_SECRET_BYTES = 64 * 1024
# A TLS file (web.tls_*, mqtt.tls_*): a certificate chain or key is a few kB; a CA bundle, such
# as Debian's ca-certificates.crt, a few hundred. More is not a TLS file.
TLS_FILE_MAX_BYTES = 4 * 1024 * 1024
# A temporary file beside its target is taken for a killed write's leftover only once it is
# this old (its last change, st_mtime) and no writer holds its lock (_write_private locks its
# temporary file until it is renamed into place, and a killed process's locks are gone). The
# lock alone tells a live writer's file; the age covers the instant between making the file
# and locking it, and file systems where locks do nothing. A live writer's file is seconds
# old (the largest, a site memory, is 415 kB), and a leftover kept ten minutes more costs
# only its bytes.
LEFTOVER_SECONDS = 600.0
# The name tempfile.mkstemp(prefix=f".{name}.") gives: 8 characters of its alphabet after
# the prefix (tests/test_leftovers.py checks that mkstemp still names files so).
_TEMP_TAIL = r"[a-z0-9_]{8}"
T = TypeVar("T")


class NotRegularFileError(UserError, OSError):
    """Something other than a regular file is where a private file was to be written.

    A UserError for the command line (one line, exit 2) and an OSError for the callers that
    report a failed write under their config key (strerror says what is there).
    """

    def __str__(self) -> str:
        return (
            f"{self.filename}: {self.strerror}; left untouched (remove it or choose another path)"
        )


def _kind(path: Path, mode: int) -> str | None:
    """What is at `path` (lstat mode), when it is not a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        try:
            return f"a symbolic link (to {os.readlink(path)})"
        except OSError:
            return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def refuse_non_regular(path: Path) -> None:
    """NotRegularFileError when something other than a regular file is at `path` (a symbolic
    link is not followed); nothing there, or a path that cannot be looked at, passes (the
    write then reports its own OSError)."""
    try:
        info = os.lstat(path)
    except OSError:
        return
    kind = _kind(path, info.st_mode)
    if kind is not None:
        raise NotRegularFileError(errno.EEXIST, f"it is {kind}, not a regular file", str(path))


def make_private_folder(folder: Path) -> None:
    """Make `folder` and every missing folder above it mode 0700 (mkdir's parents=True gives
    those above 0777 less the umask: under umask 000 anyone could rename them away and put a
    folder, and a gallery, of their own in their place). Folders already there are left."""
    missing: list[Path] = []
    here = Path(folder)
    while not here.exists() and here != here.parent:
        missing.append(here)
        here = here.parent
    for made in reversed(missing):
        # FileExistsError: made meanwhile by another process, theirs to keep.
        with contextlib.suppress(FileExistsError):
            made.mkdir(mode=FOLDER_MODE)


def write_private_text(
    path: Path,
    text_writer: Callable[[IO[str]], T],
    *,
    encoding: str = "utf-8",
    replaces: Callable[[Path], None] | None = None,
) -> T:
    """Write a file atomically with mode 0600; text_writer(handle)'s result is returned.

    The file appears under its name only when complete, so a failed write never leaves a half
    file that a later read would trust. OSError (e.g. no write permission in the folder, or
    NotRegularFileError) propagates for the caller to name the config key and the fix.
    replaces(path): raises when the file at `path` may not be replaced; called before the
    write and again just before the rename, so a file put there meanwhile is refused too.
    """
    return _write_private(
        path, lambda fd: os.fdopen(fd, "w", encoding=encoding), text_writer, replaces
    )


def write_secret_line(
    path: Path, line: str, key: str, *, error: type[UserError] = UserError
) -> None:
    """Store a one-line secret (a password or unlock code hash, ASCII) with write_private_text,
    refusals as `error`, one line naming the config `key`.

    One writer for every hashed secret, so that they agree on the folder and the messages: a
    missing folder is made as `mkdir -p -m 0700` would (the file's own folder 0700: others
    need not even list it), owned by whoever runs the command, which should be the service
    user; a path that cannot be written says to run as that user or to choose another path.
    A file already at `path` is replaced only when it is one of these secrets
    (refuse_foreign_secret, raised as `error`): a mistyped path leaves the file it names as
    it was.
    """
    path = Path(path)

    def replaces(target: Path) -> None:
        refuse_foreign_secret(target, key, error=error)

    try:
        make_private_folder(path.parent)
        write_private_text(
            path,
            lambda handle: handle.write(line + "\n"),
            encoding="ascii",
            replaces=replaces,
        )
    except NotRegularFileError as refused:
        raise error(f"{key}: {refused}") from None
    except OSError as failed:
        from edge_app.storage import storage_check

        found = storage_check(path.parent)  # a full or read-only disk: no user can write it
        advice = (
            f"{found[0]}; {found[1]}"
            if found is not None
            else f"run as the service user (sudo -u edge-app) or set {key} to a path it may write"
        )
        raise error(f"{key}: cannot write {path} ({failed.strerror or failed}); {advice}") from None


def refuse_foreign_secret(path: Path, key: str, *, error: type[UserError] = UserError) -> None:
    """Refuse, as `error` naming the config `key` and `path`, to replace a file at `path`
    that is not recognisably a hashed secret this user's edge-app wrote.

    Replaceable: nothing at `path`, or a regular file of this user that is empty (made with
    `touch` or `install -m 600 /dev/null`) or holds one scrypt hash line (secret_hash; one
    whose parameters a reader refuses too, as writing it anew is the fix for those). Anything
    else is someone's data that a mistyped path would destroy: a gallery, a document (it is
    larger than a secret, or holds something else), a file this user may not read, or one of
    another user (the new file would be this user's, which its owner's service may not be able
    to read), or a symbolic link, folder, device or named pipe. A path that cannot be looked
    at (a missing folder) passes: the write says why it fails.
    """
    path = Path(path)
    try:
        refuse_non_regular(path)
        os.lstat(path)
    except NotRegularFileError as refused:
        raise error(f"{key}: {refused}") from None
    except OSError:
        return
    keep = (
        f"it is left untouched; set {key} to a file of its own, or remove {path} first if "
        "it holds nothing to keep"
    )
    try:
        data, info = read_bounded_with_stat(path, MAX_SECRET_BYTES)
    except NotRegularFile as found:  # swapped in since the lstat
        raise error(f"{key}: {path} is a {found.kind}, not a secret file; {keep}") from None
    except TooLarge:
        raise error(
            f"{key}: {path} is more than the {MAX_SECRET_BYTES} bytes of a secret file, so it "
            f"is not one edge-app wrote; {keep}"
        ) from None
    except OSError as failed:
        raise error(
            f"{key}: {path} cannot be read ({failed.strerror or failed}) to check that it is "
            f"a secret file edge-app wrote; {keep}"
        ) from None
    if data.strip() and not is_hash_line(data.decode("ascii", errors="replace")):
        raise error(f"{key}: {path} does not hold a hash edge-app wrote; {keep}")
    if info.st_uid != os.geteuid():
        owner, me = _user_name(info.st_uid), _user_name(os.geteuid())
        raise error(
            f"{key}: {path} belongs to {owner}, not to this user ({me}): the new file would "
            f"be {me}'s, which {owner} may not be able to read; run the command as {owner} "
            f"(sudo -u {_sudo_user(info.st_uid)} ...); {path} is left untouched"
        )


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _sudo_user(uid: int) -> str:
    """How `sudo -u` names the user `uid`: its name, or '#uid' when it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"'#{uid}'"


def write_private_bytes(
    path: Path,
    writer: Callable[[IO[bytes]], T],
    *,
    replaces: Callable[[Path], None] | None = None,
) -> T:
    """write_private_text for a binary file (e.g. numpy's .npz), `replaces` as there."""
    return _write_private(path, lambda fd: os.fdopen(fd, "wb"), writer, replaces)


def _write_private(
    path: Path,
    opener: Callable[[int], IO[AnyStr]],
    writer: Callable[[IO[AnyStr]], T],
    replaces: Callable[[Path], None] | None = None,
) -> T:
    path = Path(path)
    refuse_non_regular(path)
    if replaces is not None:
        replaces(path)
    sweep_leftovers(path)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with opener(fd) as handle:
            # Held until the file is renamed into place: sweep_leftovers never takes a live
            # write's file for a leftover. A file system without locks: the age guards alone.
            with contextlib.suppress(OSError):
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.fchmod(handle.fileno(), FILE_MODE)  # mkstemp makes it 0600; say so anyway
            result = writer(handle)
            handle.flush()
            os.fsync(handle.fileno())
            refuse_non_regular(path)  # again: something may have appeared there meanwhile
            if replaces is not None:
                replaces(path)
            os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    sync_folder(path.parent)  # the rename itself, through a power cut
    return result


def sync_folder(folder: Path) -> None:
    """fsync `folder`, so that a rename into it just made survives a power cut (an fsync of
    the file keeps its bytes, not the name it has since been given: without this, a power cut
    seconds after a reported success may bring back the old file and the temporary name).

    Best effort, never raises: the new file is in place already, and some file systems refuse
    to fsync a folder (EINVAL) or to open one that may not be read; a failure is logged at
    debug level only."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        log.debug("folder %s not synced (%s)", folder, error.strerror or error)


def leftover_pattern(path: Path) -> re.Pattern[str]:
    """The names of the temporary files _write_private makes for `path` (and only for it)."""
    return temporary_pattern(re.escape(Path(path).name))


def temporary_pattern(names: str, suffix: str = "") -> re.Pattern[str]:
    """The names mkstemp(prefix=f".{name}.", suffix=suffix) gives, for every name the regular
    expression `names` (unanchored) matches: the temporary files of writes of those names.
    `suffix` is a regular expression too."""
    return re.compile(r"\." + f"(?:{names})" + r"\." + _TEMP_TAIL + suffix)


def link_new(temp: Path, path: Path) -> None:
    """Give the complete file `temp` the name `path` as well, never replacing a file already
    there (FileExistsError); the caller removes `temp` afterwards. On a file system without
    hard links (some FUSE and network mounts) it is renamed instead, after checking that the
    name is free: a rename cannot refuse to replace."""
    try:
        os.link(temp, path)
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "a file is already there", str(path)) from error
        os.rename(temp, path)


# os.link's errors on a file system that has no hard links.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


def sweep_leftovers(path: Path, *, now: float | None = None) -> int:
    """Remove the temporary files that writes of `path` killed before their rename left in
    its folder; how many were removed (logged at info when any). Never raises: a folder
    that cannot be listed leaves them for a later write. See sweep_temporaries."""
    path = Path(path)
    return sweep_temporaries(path.parent, leftover_pattern(path), str(path), now=now)


def sweep_temporaries(
    folder: Path, pattern: re.Pattern[str], what: str, *, now: float | None = None
) -> int:
    """Remove from `folder` the temporary files of killed writes whose names `pattern`
    matches whole (temporary_pattern); `what` names the writes in the log line.

    Removed is only what such a write leaves: a matching name, a regular file (lstat: a
    symbolic link is never followed, nor removed), of this user, mode 0600, with no other
    link, unchanged for LEFTOVER_SECONDS and locked by no one (a live write holds its lock
    until the rename). `now`: the time to judge the age by (tests; math.inf: any age)."""
    now = time.time() if now is None else now
    removed = 0
    try:
        names = [entry.name for entry in os.scandir(folder) if pattern.fullmatch(entry.name)]
    except OSError:
        return 0  # the write that follows reports why the folder cannot be used
    for name in names:
        with contextlib.suppress(OSError):
            removed += _remove_leftover(Path(folder) / name, now)
    if removed:
        log.info(
            "removed %d temporary file(s) that interrupted writes of %s left behind",
            removed,
            what,
        )
    return removed


def _remove_leftover(candidate: Path, now: float) -> int:
    """1 when `candidate` was a killed write's temporary file and is now removed, else 0."""
    info = os.lstat(candidate)
    if not _looks_left_over(info, now):
        return 0
    fd = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            return 0  # replaced since the lstat: judge it at the next write
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # a live write holds it
        # Its write may have renamed it into place just before we locked it: the name must
        # still be this file's.
        again = os.lstat(candidate)
        if (again.st_dev, again.st_ino) != (info.st_dev, info.st_ino):
            return 0
        os.unlink(candidate)
    finally:
        os.close(fd)
    return 1


def _looks_left_over(info: os.stat_result, now: float) -> bool:
    return (
        stat.S_ISREG(info.st_mode)
        and info.st_uid == os.geteuid()
        and stat.S_IMODE(info.st_mode) == FILE_MODE
        and info.st_nlink == 1
        and now - info.st_mtime >= LEFTOVER_SECONDS
        # Empty and recent: a live write between mkstemp and its lock (an erase sweeps at
        # any age, now=math.inf); empty, it holds nothing to erase anyway.
        and (info.st_size > 0 or time.time() - info.st_mtime >= LEFTOVER_SECONDS)
    )


def refuse_shared(
    path: Path, info: os.stat_result, key: str, *, error: type[UserError] = UserError, fix: str = ""
) -> None:
    """Refuse a secret file its group or others may read or write (mode & 0o077).

    key: the config key naming the file; fix: more advice after the chmod (", or ...").
    """
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise error(
            f"{key}: {path} is readable or writable by others (mode {mode:04o}); run "
            f"`chmod 600 {path}` as its owner (the service user){fix}"
        )


def read_private(
    path: Path,
    key: str,
    *,
    error: type[UserError] = UserError,
    fix: str = "",
    hint: str = "",
) -> bytes:
    """The bytes of a secret file, checked before they are read: a regular file (a named pipe
    would block the reader for ever, a device such as /dev/zero would fill its memory) of at
    most MAX_SECRET_BYTES, that its group and others may neither read nor write
    (refuse_shared, with `fix`).

    key: the config key naming the file, for the messages; hint: what to do, appended to the
    refusals of a file that is not regular or too large. FileNotFoundError and other
    OSErrors are the caller's to word.
    """
    try:
        info = os.stat(path)
        if stat.S_ISREG(info.st_mode):  # anything else: read_bounded refuses it unopened
            refuse_shared(path, info, key, error=error, fix=fix)
        return read_bounded(path, MAX_SECRET_BYTES)
    except NotRegularFile:  # a pipe swapped in after the stat too: fstat of what was opened
        raise error(f"{key}: {path} is not a regular file{hint}") from None
    except TooLarge:
        raise error(
            f"{key}: {path} is more than the {MAX_SECRET_BYTES} bytes a secret file may have"
            f"{hint or '; is this the right file?'}"
        ) from None


def check_tls_file(path: Path, key: str, error: type[UserError]) -> None:
    """Refuse, as `error`, a TLS file that is not a regular file of at most
    TLS_FILE_MAX_BYTES (ssl's own reader would wait on a named pipe for ever and read
    /dev/zero until the memory is gone), before ssl is given its path. OSError when it
    cannot be read (missing, permissions): the caller's to word."""
    try:
        read_bounded(path, TLS_FILE_MAX_BYTES)
    except NotRegularFile as refused:
        raise error(f"{key}: {path} is a {refused.kind}, not a TLS file") from None
    except TooLarge:
        raise error(
            f"{key}: {path} is more than the {TLS_FILE_MAX_BYTES} bytes a TLS file may have"
        ) from None
