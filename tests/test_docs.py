"""The docs describe the product as it is: every command they show parses with today's
command line, every `make` target they name exists, every `python -m` module they run is in
the repository, every link between them (file and section) leads somewhere, and every test
they cite is defined where they say.

Commands are read from fenced code blocks (every line that runs `edge-app` or
`edge-convert`) and from inline code that starts with one. Nothing is run: each command line
goes through the real argparse parser, which refuses an unknown subcommand, an unknown
option or a value of the wrong kind. A synopsis (`NAME yes|no`, `[--train F]`) and a
reference to a command without its arguments (`edge-app enroll`) are not commands and are
passed over.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from converter.cli import build_parser as convert_parser
from edge_app.cli import build_parser as app_parser
from edge_app.paths import REPO_ROOT

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
# A code block, one indented in a list item too (its backticks would otherwise pair with the
# prose's inline code).
FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
# `edge-app ...`, `sudo -u edge-app edge-app ...`, `/opt/edge-app/venv/bin/edge-app ...`
COMMAND = re.compile(
    r"^(?:\$ )?(?:sudo (?:-u edge-app )?)?(?:[\w./-]*/)?(edge-app|edge-convert)(?:\s+(.*))?$"
)
# Where a shell line stops being the command's own arguments.
SHELL_TAIL = re.compile(r"\s(?:#|\||&&|;|>|2>|<)")


class Refused(Exception):
    pass


def _refuse(message: str) -> None:
    raise Refused(message)


def _strict(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The parser and its subparsers raise Refused instead of printing and exiting."""
    parser.error = _refuse  # type: ignore[method-assign,assignment]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _strict(sub)
    return parser


def _commands(text: str) -> Iterator[tuple[str, list[str], bool]]:
    """(program, argv, whole) for each command shown: whole when it comes from a code block
    (a line to copy and run), not from inline code in a sentence."""
    blocks = [re.sub(r"\\\n\s*", " ", block) for block in FENCE.findall(text)]
    prose = FENCE.sub("", text)
    spans = [(line, True) for block in blocks for line in block.splitlines()]
    spans += [(span, False) for span in re.findall(r"`([^`\n]+)`", prose)]
    for span, whole in spans:
        found = COMMAND.match(span.strip())
        if found is None:
            continue
        rest = SHELL_TAIL.split(found.group(2) or "")[0]
        if re.search(r"[|\[\]]|\.\.\.|…", rest):
            continue  # a synopsis, not a command
        argv = shlex.split(rest)
        if argv and not {"-h", "--help", "--version"} & set(argv):
            yield found.group(1), argv, whole


def _shown_commands() -> list[tuple[str, str, list[str], bool]]:
    return [
        (doc.name, program, argv, whole)
        for doc in DOCS
        for program, argv, whole in _commands(doc.read_text(encoding="utf-8"))
    ]


SHOWN = _shown_commands()


def test_the_docs_show_commands() -> None:
    """The reader below finds what it should (it would pass vacuously otherwise)."""
    blocks = [argv for _, program, argv, whole in SHOWN if whole and program == "edge-app"]
    assert len(blocks) >= 20
    assert ["demo"] in [argv[:1] for argv in blocks]


@pytest.mark.parametrize(
    ("doc", "program", "argv", "whole"),
    SHOWN,
    ids=[f"{doc}: {program} {' '.join(argv)}"[:90] for doc, program, argv, _ in SHOWN],
)
def test_each_command_the_docs_show_parses(
    doc: str, program: str, argv: list[str], whole: bool
) -> None:
    parser = _strict(app_parser() if program == "edge-app" else convert_parser())
    try:
        parser.parse_args(argv)
    except Refused as error:
        message = str(error)
        # Inline code may name a command without its arguments ("run `edge-app enroll`").
        if whole or not message.startswith("the following arguments are required"):
            pytest.fail(f"{doc}: `{program} {' '.join(argv)}` is refused: {message}")
    except SystemExit:  # an action that prints and exits, such as --version: it parsed
        pass


def _make_targets() -> set[str]:
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-z][\w.-]*):", makefile, re.M))


def test_each_make_target_the_docs_name_exists() -> None:
    targets = _make_targets()
    named = {
        (doc.name, target)
        for doc in DOCS
        for span in re.findall(r"`([^`\n]+)`", doc.read_text(encoding="utf-8"))
        + FENCE.findall(doc.read_text(encoding="utf-8"))
        for target in re.findall(r"(?:^|\s|;|&&)make ([a-z][\w.-]*)", span, re.M)
    }
    assert {"demo", "test"} <= {target for _, target in named}
    assert [(doc, t) for doc, t in sorted(named) if t not in targets] == []


def test_each_module_the_docs_run_is_in_the_repository() -> None:
    named = {
        (doc.name, module)
        for doc in DOCS
        for module in re.findall(
            r"python3? -m ((?:benchmarks|edge_app|converter)(?:\.\w+)+)",
            doc.read_text(encoding="utf-8"),
        )
    }
    assert named
    missing = [
        (doc, module)
        for doc, module in sorted(named)
        if not (REPO_ROOT / (module.replace(".", "/") + ".py")).is_file()
    ]
    assert missing == []


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"`", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    anchors: set[str] = set()
    for heading in re.findall(r"^#+\s+(.*?)\s*$", text, re.M):
        slug = base = _slug(heading)
        number = 0
        while slug in anchors:  # a repeated heading gets -1, -2, ...
            number += 1
            slug = f"{base}-{number}"
        anchors.add(slug)
    return anchors


def test_each_link_between_the_docs_leads_to_a_file_and_section() -> None:
    broken = []
    checked = 0
    for doc in DOCS:
        text = FENCE.sub("", doc.read_text(encoding="utf-8"))
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:, file:
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            checked += 1
            if not dest.exists():
                broken.append(f"{doc.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{doc.name}: {target} (no such section)")
    assert checked > 50
    assert broken == []


# `tests/test_x.py::name`, `test_x.py` alone, or `::name` of the file named last before it
# in the same paragraph (an IPv6 `::1` is not a test).
TEST_REFERENCE = re.compile(
    r"(?<![\w/])(?:tests/)?(test_\w+\.py)(?:::(\w+))?|(?<![\w.:])::([A-Za-z_]\w*)"
)


def test_each_test_the_docs_cite_is_defined_in_the_file_they_name() -> None:
    """A reader runs `pytest tests/FILE.py::TEST` from the docs (RELIABILITY.md's recipe)."""
    defined: dict[str, set[str]] = {}
    missing = []
    cited = 0
    for doc in DOCS:
        file = None
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                file = None  # a new paragraph names its file again
            for match in TEST_REFERENCE.finditer(line):
                named, name, bare = match.groups()
                file = named or file
                name = name or bare
                where = REPO_ROOT / "tests" / str(file)
                if file is None or not where.is_file():
                    missing.append(f"{doc.name}:{number}: {file or '::' + str(bare)} (no file)")
                    continue
                if name is None:
                    continue
                if file not in defined:
                    source = where.read_text(encoding="utf-8")
                    defined[file] = set(re.findall(r"^(?:async )?def (\w+)", source, re.M))
                cited += 1
                if name not in defined[file]:
                    missing.append(f"{doc.name}:{number}: {file}::{name}")
    assert cited > 100
    assert missing == []


# A config error the docs quote (`mqtt.host: 'broker..lan' is not a valid host name (...)`):
# the key, the value as the message shows it, then the message's words.
CONFIG_MESSAGE = re.compile(r"^([a-z]+)\.([a-z_]+): ('(?:[^']*)'|\S+) (.+)$", re.S)


def _config_value(shown: str) -> object:
    if shown.startswith("'"):
        return shown[1:-1]
    for kind in (int, float):
        try:
            return kind(shown)
        except ValueError:
            pass
    return shown


def test_each_config_error_the_docs_quote_is_the_one_the_config_gives() -> None:
    """A quoted message is what a user searches the docs for: the config must say it so (an
    ellipsis stands for the rest). Messages of other checks than the config's (the hub's,
    at its start) are passed over: the config accepts their values."""
    from edge_app.config import SECTIONS, ConfigError, parse_config

    checked, wrong = 0, []
    for doc in DOCS:
        prose = FENCE.sub("", doc.read_text(encoding="utf-8"))
        for span in re.findall(r"`([^`]+)`", prose):
            quoted = " ".join(span.split())
            found = CONFIG_MESSAGE.match(quoted)
            if found is None or found.group(1) not in SECTIONS:
                continue
            section, key, shown, _ = found.groups()
            try:
                parse_config({section: {key: _config_value(shown)}})
            except ConfigError as error:
                checked += 1
                said = quoted.removesuffix("...").rstrip(" .;")
                if not any(problem.startswith(said) for problem in error.problems):
                    wrong.append(f"{doc.name}: `{quoted}`; the config says {error.problems}")
    assert checked >= 3
    assert wrong == []


def test_the_control_socket_section_states_the_per_read_limits() -> None:
    """A review: the protocol's own section (HOME_ASSISTANT.md, "The control socket") listed
    its limits but not the per-read ones a client of one's own meets first: past
    REQUESTS_PER_READ requests, or REFUSED_PER_READ refusals, in one read the connection is
    closed, and a second unlock in one read is refused; and remote unlocks are spaced
    (UNLOCK_SPACING_SECONDS) across connections."""
    from edge_app import control

    text = (REPO_ROOT / "docs" / "HOME_ASSISTANT.md").read_text(encoding="utf-8")
    section = " ".join(text.split("## The control socket", 1)[1].split("\n## ", 1)[0].split())
    assert f"more than {control.REQUESTS_PER_READ} requests in one read" in section
    assert f"{control.REFUSED_PER_READ} refused in one read" in section
    assert "one unlock at a time" in section
    spacing = control.UNLOCK_SPACING_SECONDS
    assert f"within {spacing:g} s of the last" in section
    assert f"`at most one every {spacing:g} s`" in section
    assert "`already unlocked`" in section
