"""A benchmark's output files: checked before its work, written whole after it.

A benchmark runs for minutes. An output path that could not be written (no such folder, a
folder, a symbolic link, a device, a named pipe) is refused before the work starts, with one
line and exit code 2, not with a traceback after the work ends; and a result is written
under a temporary name beside its target and renamed into place (edge_app.reports), so a
stop or a full disk leaves the last good file as it was, never half a JSON in its place.
Every benchmark that writes a file has the same few lines:

    @outputs.command
    def main(argv: list[str] | None = None) -> int:
        args = parser.parse_args(argv)
        check_output(args.out, "--out")  # edge_app.reports: before the work
        ...  # the work
        outputs.write_json(args.out, result, "--out")
        return 0
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec

from edge_app.cli import EXIT_INTERRUPTED, stops_interrupt
from edge_app.errors import UserError
from edge_app.reports import write_reports

P = ParamSpec("P")


def command(main: Callable[P, int | None]) -> Callable[P, int]:
    """`main` run as edge-app runs its commands (edge_app.cli.dispatch), returning its exit
    code: a refusal (UserError: an output that cannot be written, checked before the work or
    failing at the end) is one line `error: ...` on stderr and exit code 2, and a stop
    (Ctrl-C; SIGTERM and SIGHUP as well, so that a temporary file is removed) one
    "interrupted" line and exit code 130; neither with a traceback. argparse's own exits
    (--help, a usage error) are left as they are."""

    @functools.wraps(main)
    def run(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            with stops_interrupt():
                return int(main(*args, **kwargs) or 0)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED

    return run


def write(path: Path, text: str, option: str = "--out") -> None:
    """`text` as the whole of the file at `path`, atomically (edge_app.reports); a failure
    (a full disk, the folder gone, something other than a regular file put there meanwhile)
    is a one-line UserError naming `option`."""
    write_reports({option: (Path(path), text)})


def write_json(path: Path, data: Any, option: str = "--out", indent: int = 2) -> None:
    """`data` as the JSON the benchmarks write (json.dumps with `indent`, a
    final newline), through write()."""
    write(path, json.dumps(data, indent=indent) + "\n", option)


def conditions() -> dict[str, Any]:
    """What a timing ran under, for its JSON: the load average (other jobs on the cores),
    the machine and when."""
    return {
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "machine": platform.machine(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }
