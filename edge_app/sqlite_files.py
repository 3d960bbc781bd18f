"""SQLite's files: deleted rows gone from them, not only from the tables; a database read
without writing anything beside it.

The gallery (embeddings, face crops, names) and the events database (names, times, snapshot
paths) delete personal data: a removal, an import's replace, the events' retention. SQLite
leaves what it deletes in two places unless told otherwise:

- free pages of the database file: `secure_delete` overwrites deleted content with zeros.
  Debian builds SQLite with it on by default; other builds (and some Pythons' own) do not.
- the -wal file: in WAL mode every change is appended there first and copied into the
  database later; the file is emptied only when the last connection closes. A door keeps
  its databases open for months, so pages written weeks ago (a person's enrolment, events
  past the retention) stay readable there until later writes happen to overwrite them. A
  TRUNCATE checkpoint copies every page into the database and cuts the file to 0 bytes.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

# SQLite's files beside a database: its write-ahead log, the log's index, a rollback journal.
SIDE_FILES = ("-wal", "-shm", "-journal")


def missing_columns(
    db: sqlite3.Connection, migrations: tuple[tuple[str, ...], ...], version: int
) -> list[str]:
    """The columns (`table.column`) that the schema `migrations` make up to `version` has and
    `db` lacks: a file of another program whose tables merely share our tables' names."""
    missing = []
    for table, ours in _schema_columns(migrations, min(version, len(migrations))):
        theirs = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        missing += [f"{table}.{column}" for column in sorted(ours - theirs)]
    return missing


@functools.cache
def _schema_columns(
    migrations: tuple[tuple[str, ...], ...], version: int
) -> tuple[tuple[str, frozenset[str]], ...]:
    """Each table's columns in the schema `migrations` make up to `version`: made in memory
    from the migrations themselves, so they stay the schema's one home."""
    expected = sqlite3.connect(":memory:")
    try:
        for step in migrations[:version]:
            for statement in step:
                expected.execute(statement)
        tables = expected.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return tuple(
            (name, frozenset(row[1] for row in expected.execute(f"PRAGMA table_info({name})")))
            for (name,) in tables.fetchall()
        )
    finally:
        expected.close()


def zero_deletions(db: sqlite3.Connection) -> None:
    """Make `db` overwrite what it deletes (for every connection that writes)."""
    db.execute("PRAGMA secure_delete = ON")


# A TRUNCATE checkpoint that waits for readers keeps every other writer out while it waits
# (SQLite's busy handler runs with the writer lock taken). So it waits in short tries with
# gaps between them, in which other commands and the door write: a reader holding an old
# state for long costs them at most one try, and the change's own command about a second.
CHECKPOINT_TRIES = 5
CHECKPOINT_TRY_MS = 100  # the longest a try keeps other writers out
CHECKPOINT_GAP_SECONDS = 0.1


def empty_wal(db: sqlite3.Connection, *, shared: bool = True) -> str | None:
    """After deleting personal data: copy the -wal file into the database and cut it to 0
    bytes, waiting at most about a second for readers on an older state (in short tries; the
    connection's busy timeout is restored after). Returns None when done, else why not (the
    data then stays in the -wal file until the last connection closes or later writes
    overwrite it).

    shared=False: the door's events, which only `edge-app remove --history` also writes
    (rarely, and briefly): one try, waiting the connection's own busy timeout, which bounds
    what it may stall the door's frame loop."""
    tries = CHECKPOINT_TRIES if shared else 1
    try:
        previous = int(db.execute("PRAGMA busy_timeout").fetchone()[0])
        if shared:
            db.execute(f"PRAGMA busy_timeout = {CHECKPOINT_TRY_MS}")
        try:
            for attempt in range(tries):
                if attempt:
                    time.sleep(CHECKPOINT_GAP_SECONDS)
                if not int(db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]):
                    return None
        finally:
            if shared:
                db.execute(f"PRAGMA busy_timeout = {previous}")
    except sqlite3.DatabaseError as error:
        return str(error)
    return "readers on an older state, or another writer, kept it busy"


def read_only_uri(path: Path | str) -> tuple[str, bool]:
    """A URI that reads the database at `path` and creates nothing beside it, and whether
    its -wal file holds changes.

    With changes in a -wal file, a writer has it open in WAL mode (or stopped without
    checkpointing): it is read through the WAL as usual, with the -shm file that writer
    made. With none it is read as immutable, so SQLite makes no -wal or -shm file: one made
    here by another user (a command run as root) would lock the database's owner out.
    An empty -wal holds no changes: what a writer that checkpointed leaves, and what a failed
    open on a full disk leaves (with a -shm cut short, which a WAL read needs).
    """
    real = os.path.realpath(path)  # SQLite keeps the -wal beside the file a link leads to
    wal = os.path.exists(f"{real}-wal") and os.path.getsize(f"{real}-wal") > 0
    return f"file:{quote(os.fsencode(real))}?mode=ro" + ("" if wal else "&immutable=1"), wal


def connect_read_only(path: Path | str, timeout: float = 5.0) -> sqlite3.Connection:
    """The database at `path` opened for reading only (`read_only_uri`): nothing is created
    beside it, migrated or changed. `timeout`: seconds a read waits for a writer's lock."""
    return sqlite3.connect(read_only_uri(path)[0], uri=True, timeout=timeout, isolation_level=None)
