"""Errors a user can cause and fix: the CLI prints them as one line, never as a traceback."""


class UserError(Exception):
    """Bad input or set-up the user can fix; the message says what and how. Exit code 2."""
