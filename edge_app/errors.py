"""Errors a user can cause and fix: the CLI prints them as one line, never as a traceback."""


class UserError(Exception):
    """Bad input or set-up the user can fix; the message says what and how. Exit code 2."""


def first_few(items: list[str], most: int) -> str:
    """Items for a one-line message: "a, b, c and 4 more" (the first `most`)."""
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")
