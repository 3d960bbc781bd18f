"""Every example in a `--help` is a command line the parser accepts: an example that fails
teaches the wrong thing (`edge-app hub --config door.toml -v` is refused: -v is an option of
edge-app itself, before the command). Parsed only, never run: the examples name the user's
files."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from collections.abc import Callable, Iterator

import pytest

from converter.cli import build_parser as convert_parser
from edge_app.cli import build_parser as app_parser

PROGRAMS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "edge-app": app_parser,
    "edge-convert": convert_parser,
}


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from parsers(child)


def example_lines(epilog: str | None) -> Iterator[str]:
    """The indented lines under an "examples" heading, continuation lines joined, comments
    dropped."""
    inside, pending = False, ""
    for line in (epilog or "").splitlines():
        if line.strip().startswith("examples"):
            inside = True
            continue
        if inside and line.strip() and not line.startswith(" "):
            inside = False
        if not inside or not line.strip():
            continue
        text = f"{pending} {line.strip()}" if pending else line.strip()
        if text.endswith("\\"):
            pending = text[:-1].strip()
            continue
        pending = ""
        yield text.split(" #")[0].strip()


def commands(line: str, program: str) -> Iterator[str]:
    """The calls of `program` in an example line: each side of a pipe, inside $( ), after
    `sudo -u USER`, without the shell's redirections (`< file`, `> file`)."""
    for part in re.split(r" \| ", line):
        inner = re.search(r"\$\((.*)\)", part)
        call = re.sub(r"^sudo -u \S+ ", "", (inner.group(1) if inner else part).strip())
        call = re.sub(r"\s+\d?[<>]\s*\S+", "", call)
        if call.startswith(f"{program} ") and " ... " not in f"{call} ":
            yield call


EXAMPLES = sorted(
    {
        (program, call)
        for program, build in PROGRAMS.items()
        for parser in parsers(build())
        for line in example_lines(parser.epilog)
        for call in commands(line, program)
    }
)


def test_the_help_texts_have_examples_to_check() -> None:
    assert len(EXAMPLES) >= 60
    assert ("edge-app", "edge-app -v hub --config ./door.toml") in EXAMPLES


@pytest.mark.parametrize(("program", "call"), EXAMPLES, ids=[call for _, call in EXAMPLES])
def test_every_help_example_parses(program: str, call: str) -> None:
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            PROGRAMS[program]().parse_args(shlex.split(call)[1:])
    except SystemExit:
        pytest.fail(f"{call!r} is refused: {errors.getvalue().strip()}")
