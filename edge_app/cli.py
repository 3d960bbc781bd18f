"""`edge-app`: the door's command line. Each subcommand lives in edge_app/commands/<name>.py."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from edge_app import __version__
from edge_app.errors import UserError
from edge_app.logs import setup_logging

# Modules under edge_app.commands; each exposes register(subparsers) and sets a `handler`
# default that takes the parsed namespace and returns an exit code. Heavy imports stay inside
# the handlers so `edge-app --help` is instant.
COMMAND_MODULES = (
    "run", "hub", "demo", "enroll", "gallery", "site", "identify", "eval", "doctor",
)  # fmt: skip

log = logging.getLogger("edge_app")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-app",
        description=(
            "Face-recognition door access on a Raspberry Pi with an optional Coral Edge TPU. "
            "Enrol people from photos or the camera, then `edge-app run` watches the camera and "
            "pulses the door-strike relay when an enrolled person is recognised."
        ),
        epilog="Run `edge-app COMMAND --help` for each command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"edge-app {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"edge_app.commands.{name}").register(subparsers)
    return parser


def dispatch(
    args: argparse.Namespace, errors: tuple[type[BaseException], ...] = (UserError,)
) -> int:
    """Run the chosen subcommand. Errors the user can fix become one log line and exit 2,
    Ctrl-C exits 130; anything else is a bug and keeps its traceback."""
    try:
        return int(args.handler(args) or 0)
    except errors as error:
        log.error("%s", error)
        return 2
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(-1 if args.quiet else args.verbose)
    return dispatch(args)


if __name__ == "__main__":
    sys.exit(main())
