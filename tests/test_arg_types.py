"""The argparse types both command lines share: a bad value is one line, never a traceback."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from edge_app.arg_types import count, number


@pytest.mark.parametrize(
    ("text", "message"),
    [("abc", "expected a whole number, got 'abc'"), ("1.5", "whole number"), ("0", "at least 1")],
)
def test_count_refuses_what_is_not_a_whole_number_in_range(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        count(1)(text)
    assert count(1)("7") == 7


@pytest.mark.parametrize("text", ["nan", "inf", "-0.1", "1", "x"])
def test_number_refuses_what_is_not_finite_and_in_range(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        number(0.0, 1.0, open_high=True)(text)
    assert number(0.0, 1.0, open_high=True)("0.5") == 0.5


def test_eval_visits_refuses_a_bad_count_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge_app.cli", "eval", "visits", "--people", "abc"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "argument --people: expected a whole number, got 'abc'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["edge_app.cli", "demo", "--clip", ""],
        ["edge_app.cli", "eval", "visits", "--lfw", ""],
        ["edge_app.cli", "identify", "--models", " ", "x.jpg"],
        ["converter.cli", "train-head", "--cache", "x.npz", "--out", ""],
    ],
)
def test_an_empty_path_is_refused_not_read_as_the_current_folder(
    argv: list[str], tmp_path: Path
) -> None:
    """An audit: `train-head --out ''` wrote its three files into the current folder, and
    `demo --clip ''`, `eval --lfw ''` read it: Path("") is "."."""
    done = subprocess.run(
        [sys.executable, "-m", *argv], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "is empty; give a path (an unset shell variable?)" in done.stderr
    assert list(tmp_path.iterdir()) == []
