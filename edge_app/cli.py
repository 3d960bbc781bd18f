"""`edge-app`: the door's command line. Each subcommand lives in edge_app/commands/<name>.py."""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import IO, Any, TextIO, cast

from edge_app import __version__, hangup
from edge_app.commands import printable
from edge_app.errors import UserError, is_damage, shown_value
from edge_app.logs import setup_logging

# Modules under edge_app.commands; each exposes register(subparsers) and sets a `handler`
# default that takes the parsed namespace and returns an exit code. Heavy imports stay inside
# the handlers so `edge-app --help` is instant.
COMMAND_MODULES = (
    "run", "hub", "demo", "enroll", "gallery", "events", "site", "identify", "eval", "doctor",
)  # fmt: skip

log = logging.getLogger("edge_app")
# The exit status of a command whose output's reader went away, as a shell reports one that
# SIGPIPE ended (Python ignores the signal and gets BrokenPipeError instead).
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
# The exit status of a command stopped by Ctrl-C, as a shell reports one that SIGINT ended.
EXIT_INTERRUPTED = 128 + signal.SIGINT
# What else stops a command as Ctrl-C does: systemd, `timeout` and `kill` send SIGTERM, a
# closed terminal or ssh session SIGHUP.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class _Parser(argparse.ArgumentParser):
    """An argument a (sub)command does not know is refused by that command's own parser,
    with its usage line (`edge-app list --dbb x` showed edge-app's, which names no option
    of list's). Subparsers are made of the parent's class, so every level is one."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    Ctrl-C one "interrupted" line and exit 130; anything else is a bug and keeps its
    traceback."""
    try:
        return int(args.handler(args) or 0)
    except errors as error:
        log.error("%s", error)
        return 2
    except KeyboardInterrupt:
        # One line under the ^C, none of the traceback; what the command writes is written
        # whole or not at all (edge_app.private_file, SQLite transactions).
        log.warning("interrupted")
        return EXIT_INTERRUPTED
    except OSError as error:
        # A path given on the command line that the system refuses by its length alone, met
        # wherever it is first looked at (Path.exists() raises it, rather than saying False).
        if error.errno != errno.ENAMETOOLONG:
            raise
        name = shown_value(error.filename) if error.filename is not None else "a path"
        log.error("%s: a file name longer than the system allows", name)
        return 2
    except Exception as error:
        # The gallery names itself when damaged (edge_app.gallery); this catches a damaged
        # database met anywhere else, which a restore fixes, not a code change.
        if not is_damage(error):
            raise
        log.debug("damaged database", exc_info=True)
        log.error(
            "a database file is damaged (%s): restore it from an export (edge-app import) or "
            "a backup; run with -v to see where",
            error,
        )
        return 2


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def stops_interrupt() -> Iterator[None]:
    """While the block runs, STOP_SIGNALS raise KeyboardInterrupt as Ctrl-C does, so that the
    same clean-up runs (a private file's temporary copy removed, a transaction rolled back)
    where the default action would end the process on the spot; the previous handlers are
    back after. A signal that was ignored (`nohup` ignores SIGHUP) stays ignored. Only from
    the main thread, as every signal handler."""
    before = {
        stop: signal.signal(stop, _interrupt)
        for stop in STOP_SIGNALS
        if signal.getsignal(stop) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for stop, handler in before.items():
            signal.signal(stop, handler)


@contextmanager
def standard_streams() -> Iterator[None]:
    """Standard input, output and error that were closed when the command started (`>&-`, a
    service or cron job without them; Python then sets sys.stdout and the others to None)
    are /dev/null while it runs: what it writes goes nowhere and what it reads is empty, as
    for a command started with them pointing there."""
    opened: list[tuple[str, IO[str]]] = []
    for name, mode in (("stdin", "r"), ("stdout", "w"), ("stderr", "w")):
        if getattr(sys, name) is None:
            stream: IO[str] = open(os.devnull, mode, encoding="utf-8")  # noqa: SIM115 (closed below)
            opened.append((name, stream))
            setattr(sys, name, stream)
    try:
        yield
    finally:
        for name, stream in opened:
            setattr(sys, name, None)
            stream.close()


def _is_the_door(args: argparse.Namespace) -> bool:
    from edge_app.commands import run

    return bool(getattr(args, "handler", None) is run.run)


def _own_signals(args: argparse.Namespace) -> bool:
    """Whether the command handles SIGTERM and SIGHUP itself: the door (`run`: SIGTERM locks
    the relay, SIGHUP reloads) and the hub (SIGTERM stops it in order)."""
    from edge_app.commands import hub, run

    return args.handler in (run.run, hub.run)


class _Output:
    """sys.stdout while a command runs. It remembers the error a write or flush of the output
    raised, so that main() can tell a failed output (a reader that went away, a full disk)
    from any other OSError, which stays a bug with its traceback."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.failure: OSError | None = None

    def write(self, text: str) -> int:
        try:
            try:
                return self.stream.write(text)
            except UnicodeEncodeError:  # a file name that is not UTF-8, or a narrow locale
                encoding = self.stream.encoding or "utf-8"
                shown = printable(text).encode(encoding, "backslashreplace").decode(encoding)
                return self.stream.write(shown)
        except OSError as error:
            self.failure = error
            raise

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as error:
            self.failure = error
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _discard_output(stream: TextIO) -> None:
    """Point the output's descriptor at /dev/null, so that what is still buffered does not
    fail again (and print a second error) when the interpreter flushes it at exit."""
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file: nothing is flushed later
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, descriptor)
    finally:
        os.close(null)


def main(argv: list[str] | None = None) -> int:
    """The console script. Standard streams closed at the start read and write /dev/null
    (standard_streams); SIGTERM and SIGHUP stop a command as Ctrl-C does (stops_interrupt),
    except the door and the hub, which handle them themselves. Output that cannot be written
    ends the command: quietly with EXIT_BROKEN_PIPE when its reader went away
    (`edge-app list | head -1`), else (a full disk) with one error line and exit 2."""
    with standard_streams():
        hangup.hold()  # until the door's own handler: see edge_app.hangup
        door = False  # a SIGHUP held for any other command (--help included) is delivered
        try:
            try:  # building the parser imports the commands' modules: numpy among them
                args = build_parser().parse_args(argv)
            except KeyboardInterrupt:  # Ctrl-C before any command ran: nothing done
                sys.stderr.write("interrupted\n")
                return EXIT_INTERRUPTED
            door = _is_the_door(args)
            if not door:
                hangup.release(deliver=True)
            quiet = args.quiet or (
                getattr(args, "quiet_unless_verbose", False) and not args.verbose
            )
            setup_logging(-1 if quiet else args.verbose)
            return run_guarded(args, own_signals=_own_signals(args))
        finally:
            hangup.release(deliver=not door)  # (the door has ended: nothing left to reload)


def run_guarded(
    args: argparse.Namespace,
    errors: tuple[type[BaseException], ...] = (UserError,),
    *,
    own_signals: bool = False,
) -> int:
    """dispatch() with its output watched: output that cannot be written ends the command
    (main()'s docstring) instead of a traceback; and, unless the command handles them itself
    (own_signals), SIGTERM and SIGHUP stop it as Ctrl-C does. edge-convert runs its commands
    through it too."""
    stdout = sys.stdout
    output = _Output(stdout)
    sys.stdout = cast(TextIO, output)
    try:
        if own_signals:
            code = dispatch(args, errors)
        else:
            with stops_interrupt():
                code = dispatch(args, errors)
        output.flush()
        return code
    except OSError as error:
        if error is not output.failure:
            raise
        _discard_output(stdout)
        if isinstance(error, BrokenPipeError):
            return EXIT_BROKEN_PIPE
        changes = getattr(args, "changes", None)
        # Output is written once the work is done: a command that changes something has
        # most likely changed it; retrying blindly (an import) would then be refused.
        done = f"; {changes} may have been changed all the same: check it" if changes else ""
        log.error("cannot write the output: %s%s", error.strerror or error, done)
        return 2
    finally:
        sys.stdout = stdout


if __name__ == "__main__":
    sys.exit(main())
