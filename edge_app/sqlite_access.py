"""Who may change an SQLite file the door trusts: the gallery (who gets in) and the events
database (who came in, and when). One set of rules, and one wording of each refusal, for
both.

Refused before SQLite reads the file:

- a file users other than its owner may write (its group counts as others);
- a file of another user (its owner may change it whatever its mode);
- a file in a folder any user may write, sticky or not (/tmp), or that a group other than
  root's or this user's may write: they could replace the file, or plant the -wal file
  beside it that SQLite replays into it on the next open;
- a -wal, -shm or -journal beside it that is not a regular file of its owner or of this user.

A file of this user's that others may read is no refusal: its opener narrows it, and its
side files, to 0600 once it proved its kind of database (narrow_to_private).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from edge_app.private_file import FILE_MODE
from edge_app.sqlite_files import SIDE_FILES


@dataclass(frozen=True)
class Kind:
    """What a database is, for the refusals' words and rules."""

    name: str  # "the gallery"
    harm: str  # what whoever may change it could do: "enrol anyone"
    elsewhere: str  # the fix that chooses another file: "use a gallery of this user's own"
    holds: str  # what whoever may read it learns: "who came in and when"
    error: type[Exception]  # what a refusal raises
    # Whether a file root owns may be used by another user: the gallery, which commands
    # that only read it open too. The events database is written by whoever opens it,
    # so only this user's is (root may use anyone's).
    root_may_own: bool = True

    @property
    def owner_s(self) -> str:
        return f"{self.name}'s"


def refuse_unsafe(path: Path | str, info: os.stat_result, kind: Kind) -> str:
    """Refuse (kind.error) the database at `path`, `info` its stat, when users other than
    its owner may change it, when it belongs to another user, when its folder is open to
    others (refuse_open_folder), or when a side file beside it is not its owner's; the
    database's real path otherwise (where SQLite keeps its side files)."""
    me = os.geteuid()
    mode = stat.S_IMODE(info.st_mode)
    owners = (0, me) if kind.root_may_own else (me,)
    if info.st_uid not in owners and me != 0:
        # Its owner may write it whatever its mode: a file planted by another user (in a
        # folder its group may write) would be used. Root may use anyone's, unless others
        # may write it (below). Said first: no mode makes another user's file usable.
        raise kind.error(
            f"{kind.name} {path} belongs to another user (uid {info.st_uid}), who may change "
            f"it and so {kind.harm}; {kind.elsewhere}, or make it this user's "
            f"(sudo chown {me}: {path})"
        )
    if info.st_uid != me and mode & 0o022:
        raise kind.error(
            f"{kind.name} {path} may be written by users other than its owner (mode {mode:o}, "
            f"owner uid {info.st_uid}): any of them could {kind.harm}; make it the door "
            f"user's with mode 600 (sudo chown edge-app: {path} && sudo chmod 600 {path})"
        )
    real = refuse_open_folder(path, kind)
    for suffix in SIDE_FILES:
        try:
            side = os.lstat(f"{real}{suffix}")
        except FileNotFoundError:
            continue
        except OSError as error:
            raise kind.error(
                f"cannot look at {kind.owner_s} {real}{suffix}: {error.strerror or error}"
            ) from None
        if not stat.S_ISREG(side.st_mode) or side.st_uid not in (info.st_uid, me):
            raise kind.error(
                f"{kind.owner_s} {real}{suffix} is not a file of {kind.owner_s} owner (owner "
                f"uid {side.st_uid}): SQLite would replay its changes into {kind.name}; "
                f"remove it if no door or edge-app command is running, then open {kind.name} "
                "again"
            )
    return real


def refuse_open_folder(path: Path | str, kind: Kind) -> str:
    """Refuse (kind.error) a database (there, or about to be created) in a folder any user
    may write, or a group other than root's or this user's; its real path otherwise."""
    real = os.path.realpath(path)
    folder = Path(real).parent
    try:
        folder_info = folder.stat()
    except OSError:
        return real  # the open that follows says why the folder cannot be used
    folder_mode = stat.S_IMODE(folder_info.st_mode)
    # The sticky bit (/tmp) stops others replacing the file, not creating the -wal file
    # beside it that SQLite replays into it on the next open: a database of their own.
    consequence = (
        f"any of them could replace {kind.name}, or plant the -wal file SQLite replays into "
        f"it, with one of their own, and so {kind.harm}; keep it in a folder of its own (the "
        "door's is /var/lib/edge-app, mode 700)"
    )
    if folder_mode & stat.S_IWOTH:
        raise kind.error(
            f"{kind.owner_s} folder {folder} may be written by any user (mode "
            f"{folder_mode:o}): {consequence}"
        )
    group = folder_info.st_gid
    if folder_mode & stat.S_IWGRP and group not in (0, os.getegid()):
        raise kind.error(
            f"{kind.owner_s} folder {folder} may be written by the users of group {group} "
            f"(mode {folder_mode:o}): {consequence}"
        )
    return real


def narrow_to_private(path: Path | str, kind: Kind, log: logging.Logger) -> None:
    """Make the database at `path` and each side file beside it that exists (-wal, -shm,
    -journal) mode 0600 when its group or others may use it, with a warning on `log`: they
    hold kind.holds. SQLite gives a new side file the database's mode, so a file copied
    under umask 022 (or made by an older edge-app) left every later one readable too.

    Called once the file proved a database of its kind, and after refuse_unsafe let it
    through: a file the rules refuse is never reached, so never changed. This user's files
    are narrowed, and as root anyone's (root may use them, and 0600 takes nothing from
    their owner); another user's file is left as it is.

    By path, never through a descriptor: SQLite has the files open by now, and closing any
    descriptor of a file drops every POSIX lock this process holds on it, SQLite's included
    (the next reader then takes itself for the only connection and removes the write-ahead
    log still written to). Never through a symbolic link: each name is looked at with lstat
    and only that regular file is narrowed (_chmod_unfollowed), even when whoever may rename
    in its folder (its owner, when root narrows another user's file) puts a link in its
    place meanwhile. A database reached through a link is narrowed where the link leads:
    SQLite keeps it and its side files there. Root leaves a file with other names (hard
    links) as it is, with a warning: it cannot know what the other names are.
    """
    me = os.geteuid()
    real = os.path.realpath(path)
    for candidate in (real, *(f"{real}{suffix}" for suffix in SIDE_FILES)):
        try:
            info = os.lstat(candidate)
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if not stat.S_ISREG(info.st_mode) or not mode & 0o077:
            continue
        if info.st_uid != me and me != 0:
            continue
        if me == 0 and info.st_nlink > 1:
            # Another name of the same file, anywhere on the file system: a hard link put in
            # place of a side file by whoever may write in the folder (where
            # fs.protected_hardlinks is off) to a file of root's, which 0600 would break.
            log.warning(
                "%s file %s is mode %o (others may read %s) and has %d names (hard links): "
                "left as it is, since 0600 would change the file under its other names too; "
                "replace it with a copy of its own (cp, then mv over it) to have it narrowed",
                kind.owner_s,
                candidate,
                mode,
                kind.holds,
                info.st_nlink,
            )
            continue
        try:
            _chmod_unfollowed(candidate, info)
        except OSError as error:
            log.warning(
                "%s file %s is mode %o (others may read %s) and cannot be made 600: %s",
                kind.owner_s,
                candidate,
                mode,
                kind.holds,
                error.strerror or error,
            )
        else:
            log.warning(
                "%s file %s was mode %o (others could read %s); set to 600",
                kind.owner_s,
                candidate,
                mode,
                kind.holds,
            )


def _chmod_unfollowed(name: str, looked_at: os.stat_result) -> None:
    """chmod 600 the file at `name` if it is still the regular file `looked_at` (OSError
    otherwise, or when it cannot be): os.chmod by path would follow a symbolic link put there
    since the lstat, and Linux has no lchmod. An O_PATH descriptor names the file without
    opening it, so closing it drops none of the POSIX locks SQLite holds on it (a
    descriptor opened for reading would); /proc/self/fd/N then reaches that very file."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != (
            looked_at.st_dev,
            looked_at.st_ino,
        ):
            raise OSError(errno.ESTALE, "replaced while it was looked at")
        os.chmod(f"/proc/self/fd/{fd}", FILE_MODE)
    finally:
        os.close(fd)
