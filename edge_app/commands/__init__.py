"""One module per `edge-app` subcommand (see edge_app.cli.COMMAND_MODULES)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def file_path(example: str, default: str) -> Callable[[str], Path]:
    """The argparse type of a file option (--db, --config): a path, never an empty one, which
    Path("") would make ".", the current folder (`--db "$UNSET"`). `example` shows a path,
    `default` what leaving the option out means."""

    def parse(text: str) -> Path:
        if not text.strip():
            raise argparse.ArgumentTypeError(
                f"is empty; give a file's path (e.g. {example}), or leave the option out for "
                f"{default}"
            )
        return Path(text)

    return parse


def shown(text: str) -> str:
    """A name for a line of text output: printable(), its control characters as \\xNN
    (a file named with a newline or a terminal escape cannot forge lines or drive the
    terminal)."""
    from edge_app.logs import escape_controls

    return escape_controls(printable(text))


def printable(text: str) -> str:
    """Text that can be written as UTF-8: the bytes of a file name that are not UTF-8 (which
    Python holds as lone surrogates) become \\xNN. JSON output passes file names through it
    before encoding (the CLI's stdout does so for text as a last resort: edge_app.cli)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# --config of every command that reads the door's config file.
config_path = file_path("./door.toml", "the default config file")
