"""Whether the filesystem a folder is on can take writes: read-only, out of inodes, or full.

A Raspberry Pi keeps its state on an SD card, which fills up or is remounted read-only by
the kernel after errors. SQLite then reports "unable to open database file" or "disk I/O
error", which reads like a permissions problem; these checks name the real one.
"""

from __future__ import annotations

import os
from pathlib import Path

# Below this a gallery change cannot be written: opening it in WAL mode makes a 32 KB -shm
# file, and a change appends its pages to the -wal file.
FULL_BYTES = 64 * 1024


def free_bytes(folder: Path | str) -> int:
    """Bytes this user may still write on `folder`'s filesystem (OSError if it cannot be
    looked at)."""
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def storage_problem(folder: Path | str) -> str | None:
    """Why nothing can be written in `folder` whatever its permissions, or None (also None
    when it cannot be looked at: the caller's own error then says more)."""
    found = storage_check(folder)
    return None if found is None else found[0]


def storage_check(folder: Path | str) -> tuple[str, str] | None:
    """(why nothing can be written in `folder`, what to do about it), or None."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    if stats.f_flag & os.ST_RDONLY:
        return (
            f"the filesystem holding {folder} is read-only (mounted so, or after disk errors)",
            "find why in the kernel log (journalctl -k): an SD card the kernel set read-only "
            "after errors needs checking (fsck) or replacing; then remount it read-write",
        )
    if stats.f_files and not stats.f_favail:
        return (
            f"the filesystem holding {folder} has no free inodes (df -i {folder})",
            f"delete files on it (df -i {folder}: many small files use them up)",
        )
    if stats.f_bavail * stats.f_frsize < FULL_BYTES:
        return (
            f"the disk holding {folder} is full (df -h {folder})",
            f"free space on it (df -h {folder})",
        )
    return None
