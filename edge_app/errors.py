"""Errors a user can cause and fix: the CLI prints them as one line, never as a traceback."""

# SQLite's primary result codes for a file whose content is broken (SQLITE_CORRUPT,
# SQLITE_NOTADB): https://sqlite.org/rescode.html
SQLITE_DAMAGE_CODES = frozenset({11, 26})


class UserError(Exception):
    """Bad input or set-up the user can fix; the message says what and how. Exit code 2."""


def first_few(items: list[str], most: int) -> str:
    """Items for a one-line message: "a, b, c and 4 more" (the first `most`)."""
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def is_damage(error: BaseException) -> bool:
    """Whether `error` is SQLite saying a database file itself is damaged (a damaged page, a
    torn write): only a restore fixes that, unlike a locked, read-only or full one."""
    import sqlite3  # here: most commands never open a database

    if not isinstance(error, sqlite3.DatabaseError):
        return False
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in SQLITE_DAMAGE_CODES
    # Raised without a code (by hand, or by an older Python): SQLite's corruption errors are
    # the plain DatabaseError, never one of its subclasses (locked, read-only, full disk...).
    return type(error) is sqlite3.DatabaseError
