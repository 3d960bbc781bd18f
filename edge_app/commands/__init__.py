"""One module per `edge-app` subcommand (see edge_app.cli.COMMAND_MODULES)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_app.config import Config


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


def name_words(name: str) -> str:
    """A person's name as a command line shows it before the command's other positional
    arguments: quoted for a shell, and after `--` when it begins with a dash, which argparse
    would take for an option (`edge-app access -- -Ann no`)."""
    import shlex

    quoted = shlex.quote(name)
    return f"-- {quoted}" if name.startswith("-") else quoted


# A command run as the door's service user, who owns its files (systemd/install.sh).
AS_DOOR = "sudo -u edge-app edge-app"


def as_door(command: str, config_path: Path | None, *rest: str) -> str:
    """The command line of `edge-app COMMAND` run as the door's user for the door of the
    config at `config_path` (None or the default config: no --config), then `rest`, each
    quoted as a shell reads it whatever it holds (a person's name)."""
    import shlex

    from edge_app.paths import DEFAULT_CONFIG

    line = f"{AS_DOOR} {command}"
    if config_path is not None and Path(config_path) != DEFAULT_CONFIG:
        line += f" --config {shlex.quote(str(config_path))}"
    return " ".join([line, *map(shlex.quote, rest)])


# --config of every command that reads the door's config file.
config_path = file_path("./door.toml", "the default config file")


def door_config(args: argparse.Namespace) -> Config | None:
    """The config of the door whose gallery a command works on: --config's, else the default
    config file's. None for a gallery --db names without --config: no config is read for it
    (the gallery is one of its own, and its user may not be able to read the door's config)."""
    if args.db is not None and args.config is None:
        return None
    from edge_app.config import load_config

    return load_config(args.config)
