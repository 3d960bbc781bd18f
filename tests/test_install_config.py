"""The config.toml a first install writes: config.example.toml with every setting commented.

`systemd/install.sh --print-config [FILE]` prints what the installer writes to
/etc/edge-app/config.toml (the same shell function), without root and without changing
anything, so these tests run the exact transform. The installed file must load to exactly
the program's defaults (nothing pinned, so a default re-tuned by a later release reaches an
upgraded door), and un-commenting one setting must pin that key and nothing else.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edge_app.config import Config, load_config, parse_config
from edge_app.paths import REPO_ROOT

INSTALL = REPO_ROOT / "systemd" / "install.sh"
EXAMPLE = REPO_ROOT / "config.example.toml"

pytestmark = pytest.mark.skipif(
    shutil.which("sh") is None or shutil.which("awk") is None, reason="needs sh and awk"
)


def _print_config(*example: Path) -> str:
    done = subprocess.run(
        ["sh", str(INSTALL), "--print-config", *map(str, example)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def _body(written: str, example: str) -> list[str]:
    """The written lines that correspond to the example's, one for one (the header aside)."""
    lines = written.splitlines()
    count = len(example.splitlines())
    assert len(lines) >= count
    return lines[len(lines) - count :]


def _uncommented(line: str) -> str:
    assert line.startswith("# "), line
    return line[2:]


def test_the_installed_config_loads_to_exactly_the_defaults(tmp_path: Path) -> None:
    written = _print_config()
    assert _print_config(EXAMPLE) == written  # the default FILE is this checkout's example
    data = tomllib.loads(written)
    example = tomllib.loads(EXAMPLE.read_text())
    # every section kept, as an empty table: no key is pinned
    assert data == {section: {} for section in example}
    assert parse_config(data) == Config()
    installed = tmp_path / "config.toml"
    installed.write_text(written)
    assert load_config(installed) == Config()
    # the reference the operator compares with is the example, whose values are the defaults
    assert load_config(EXAMPLE) == Config()


def test_only_settings_are_commented_and_each_line_is_the_examples() -> None:
    text = EXAMPLE.read_text()
    body = _body(_print_config(), text)
    settings = 0
    for mine, theirs in zip(body, text.splitlines(), strict=True):
        stripped = theirs.strip()
        if not stripped or stripped.startswith(("#", "[")):
            assert mine == theirs
        else:
            assert mine == "# " + theirs
            settings += 1
    assert settings == sum(len(table) for table in tomllib.loads(text).values())


def test_uncommenting_one_line_pins_that_key_and_nothing_else() -> None:
    text = EXAMPLE.read_text()
    written = _print_config()
    lines = written.splitlines()
    offset = len(lines) - len(text.splitlines())
    example: dict[str, dict[str, Any]] = tomllib.loads(text)
    pinned = set()
    for number, (mine, theirs) in enumerate(zip(lines[offset:], text.splitlines(), strict=True)):
        if mine == theirs:
            continue
        edited = list(lines)
        edited[offset + number] = _uncommented(mine)
        data = tomllib.loads("\n".join(edited) + "\n")
        keys = [(section, key) for section, table in data.items() for key in table]
        assert len(keys) == 1, (theirs, keys)
        section, key = keys[0]
        assert data[section][key] == example[section][key]
        assert parse_config(data) == Config()  # the example's value is the default
        pinned.add((section, key))
    assert pinned == {(section, key) for section, table in example.items() for key in table}


def test_an_uncommented_value_changes_that_key_only() -> None:
    lines = _print_config().splitlines()
    index = lines.index("# active_high = true")
    assert lines[:index][::-1].index("[gpio]") >= 0  # under its own section header
    lines[index] = "active_high = false"
    config = parse_config(tomllib.loads("\n".join(lines) + "\n"))
    assert config == replace(Config(), gpio=replace(Config().gpio, active_high=False))


# A value may span lines (arrays, multi-line strings), and a line inside one may look like a
# [section] header or hold quotes, brackets and # that are not what they seem.
TRICKY = '''# a comment [not.a.section]
title = "a # that is text, and a [ that is text"   # and a comment ]

[policy]
allowed_hours = [
  "07:00-19:00",  # morning [
  "20:00-21:00",
]
nested = [
  [1, 2],
  ['a]', "b]\\"]"],
[3]]

[mqtt]
host = """
[web]
a \\""" still inside
"""
topic_prefix = \'\'\'
[events]
\'\'\'
literal = 'C:\\path\\[x]'
  [ web ]
  indented = [ # an array
    1, # [
  ]
after = """x""""
[[people]]
name = "x"
'''


def test_multi_line_values_are_commented_whole(tmp_path: Path) -> None:
    original = tomllib.loads(TRICKY)  # a valid TOML document to begin with
    example = tmp_path / "example.toml"
    example.write_text(TRICKY)
    body = _body(_print_config(example), TRICKY)
    # the sections stay, with nothing set in them
    assert tomllib.loads("\n".join(body) + "\n") == {
        "policy": {},
        "mqtt": {},
        "web": {},
        "people": [{}],
    }
    # removing every "# " it added gives the example back, line for line
    restored = []
    for mine, theirs in zip(body, TRICKY.splitlines(), strict=True):
        restored.append(theirs if mine == theirs else _uncommented(mine))
        assert mine in (theirs, "# " + theirs)
    assert tomllib.loads("\n".join(restored) + "\n") == original
    # every line inside a multi-line value is commented, header-like ones included
    for inside in ("[web]", "[events]", "[3]]", "  [1, 2],", "    1, # ["):
        assert "# " + inside in body, inside


def test_a_missing_example_is_an_error_and_prints_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        ["sh", str(INSTALL), "--print-config", str(tmp_path / "missing.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stdout == ""
    assert "cannot read" in done.stderr
