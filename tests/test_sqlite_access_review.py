"""Review of sqlite_access.narrow_to_private: the name it looked at is the file it narrows."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from edge_app import sqlite_access
from edge_app.gallery import GALLERY_FILE

log = logging.getLogger(__name__)


def _gallery_and_victim(tmp_path: Path, mode: int) -> tuple[Path, Path, Path]:
    """A gallery of `mode` in a private folder, and a file of root's elsewhere, mode 644:
    (the folder, the gallery, the file)."""
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    db = folder / "gallery.db"
    db.write_bytes(b"SQLite format 3\0")
    db.chmod(mode)
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0::/root:/bin/sh\n")
    victim.chmod(0o644)
    return folder, db, victim


def test_a_side_file_swapped_for_a_link_after_it_was_looked_at_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """narrow_to_private looks at each name with lstat and then chmods it by path, which
    follows a symbolic link: whoever may rename in the database's folder (its owner, when
    root narrows another user's gallery or events database) swaps the -wal they left 0644 for
    a link to /etc/passwd between the two, and root makes that file 0600. The file narrowed
    must be the regular file looked at, never where a link put in its place leads."""
    folder, db, victim = _gallery_and_victim(tmp_path, 0o600)
    wal = folder / "gallery.db-wal"
    wal.write_bytes(b"")
    wal.chmod(0o644)
    real_lstat = os.lstat

    def lstat_then_swap(name: str | os.PathLike[str]) -> os.stat_result:
        info = real_lstat(name)
        if os.fspath(name) == str(wal):  # the race, made certain
            os.rename(wal, folder / "moved-away")
            os.symlink(victim, wal)
        return info

    monkeypatch.setattr(sqlite_access.os, "lstat", lstat_then_swap)
    sqlite_access.narrow_to_private(db, GALLERY_FILE, log)
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644


def test_narrowing_keeps_the_posix_locks_this_process_holds(tmp_path: Path) -> None:
    """The file is narrowed through a descriptor now (O_PATH): closing one opened for reading
    would drop this process's POSIX locks on the file, SQLite's included."""
    import fcntl
    import subprocess
    import sys

    wal = tmp_path / "events.db-wal"
    wal.write_bytes(b"")
    wal.chmod(0o644)
    fd = os.open(wal, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        sqlite_access._chmod_unfollowed(str(wal), os.lstat(wal))
        probe = (
            "import fcntl, os, sys\n"
            f"fd = os.open({str(wal)!r}, os.O_RDWR)\n"
            "try:\n    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
            "except OSError:\n    sys.exit(0)\n"
            "sys.exit(1)\n"
        )
        assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0
    finally:
        os.close(fd)
    assert stat.S_IMODE(wal.stat().st_mode) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="root narrows others' files; a user only its own")
def test_root_leaves_a_side_file_with_other_names_as_it_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A known gap: where fs.protected_hardlinks is off, the owner of a database's folder
    could leave a hard link to a file of root's as its -wal; root, narrowing the database
    (`sudo edge-app list`), made that file 0600 under every name. A file with other names is
    now left as it is, with a warning; the database beside it is still narrowed."""
    folder, db, victim = _gallery_and_victim(tmp_path, 0o644)
    os.link(victim, folder / "gallery.db-wal")
    caplog.set_level(logging.WARNING, log.name)
    sqlite_access.narrow_to_private(db, GALLERY_FILE, log)
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "gallery.db-wal is mode 644" in said and "has 2 names (hard links)" in said
