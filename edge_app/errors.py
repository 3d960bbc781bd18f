"""Errors a user can cause and fix: the CLI prints them as one line, never as a traceback."""

import math

# SQLite's primary result codes (https://sqlite.org/rescode.html), by number: the sqlite3
# module names them only from Python 3.11.
SQLITE_BUSY = 5  # another connection holds the write lock past the busy timeout
SQLITE_READONLY = 8  # a write where the file or its folder may only be read
SQLITE_IOERR = 10  # the operating system failed a read or write (often: the disk is full)
SQLITE_CORRUPT = 11  # a damaged page, a torn write
SQLITE_FULL = 13  # the disk is full
SQLITE_CANTOPEN = 14  # a file (or the -shm beside it) that cannot be opened or made
SQLITE_NOTADB = 26  # not a database at all

# The file's content is broken: only a restore fixes that.
SQLITE_DAMAGE_CODES = frozenset({SQLITE_CORRUPT, SQLITE_NOTADB})
# The disk, not the file: free space (or mend the disk) and the same command works.
SQLITE_DISK_CODES = frozenset({SQLITE_IOERR, SQLITE_FULL})
# Python's own error for a text column whose bytes are not UTF-8: a damaged page read as text
# (it carries no SQLite code).
NOT_UTF8_TEXT = "Could not decode to UTF-8"

# SQLite's fixed English text for these codes (sqlite3ErrStr), for an error that carries no
# code (one raised by hand; Python 3.10, no longer supported, set none).
SQLITE_MESSAGES = {
    "database is locked": SQLITE_BUSY,
    "attempt to write a readonly database": SQLITE_READONLY,
    "disk i/o error": SQLITE_IOERR,
    "database or disk is full": SQLITE_FULL,
    "database disk image is malformed": SQLITE_CORRUPT,
    "unable to open database file": SQLITE_CANTOPEN,
    "file is not a database": SQLITE_NOTADB,
}


class UserError(Exception):
    """Bad input or set-up the user can fix; the message says what and how. Exit code 2."""


def not_utf8(text: str) -> bool:
    """Whether `text` came from bytes that are not UTF-8 (a command line or a file name from a
    Latin-1 system): Python holds those as lone surrogates, which SQLite, OpenCV and every
    UTF-8 encoder refuse (OpenCV by crashing)."""
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


SHOWN_CHARACTERS = 300  # of a refused value quoted in a message (a host name: 253 at most)


def shown_value(value: object) -> str:
    """A refused value as a message quotes it: an integer of many digits by its size (TOML's
    and JSON's integers have no bound in Python, and a float cannot hold them), anything else
    by its repr, cut to SHOWN_CHARACTERS."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**24:
        digits = int(abs(value).bit_length() * math.log10(2)) + 1
        return f"{'-' if value < 0 else ''}(a number of about {digits} digits)"
    return cut(repr(value))


def cut(text: str) -> str:
    """`text` cut to SHOWN_CHARACTERS for a message, "..." marking the cut."""
    return text if len(text) <= SHOWN_CHARACTERS else text[: SHOWN_CHARACTERS - 3] + "..."


def first_few(items: list[str], most: int) -> str:
    """Items for a one-line message: "a, b, c and 4 more" (the first `most`)."""
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def sqlite_code(error: BaseException) -> int | None:
    """SQLite's primary result code for a sqlite3 error: the one Python reports, else
    the one SQLite's own message names, else None (an error raised by hand, another text)."""
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF
    return SQLITE_MESSAGES.get(str(error).strip().lower())


def is_damage(error: BaseException) -> bool:
    """Whether `error` is SQLite saying a database file itself is damaged (a damaged page, a
    torn write): only a restore fixes that, unlike a locked, read-only or full one."""
    import sqlite3  # here: most commands never open a database

    if not isinstance(error, sqlite3.DatabaseError):
        return False
    if str(error).startswith(NOT_UTF8_TEXT):
        return True
    code = sqlite_code(error)
    if code is not None:
        return code in SQLITE_DAMAGE_CODES
    # Raised without a code or a known text: SQLite's corruption errors are the plain
    # DatabaseError, never one of its subclasses (locked, read-only, full disk...).
    return type(error) is sqlite3.DatabaseError


def os_reason(error: OSError) -> str:
    """An OSError in a few words: the file and the system's reason. The file is the one being
    written when the error names two (filename2: a copy's or a rename's destination; the
    source of a copy is a temporary file the user never sees)."""
    reason = error.strerror or str(error)
    filename = error.filename2 if error.filename2 is not None else error.filename
    return f"{filename}: {reason}" if filename else reason
