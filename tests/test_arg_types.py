"""The argparse types both command lines share: a bad value is one line, never a traceback."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from edge_app.arg_types import checked_number, count, number
from edge_app.manifest import recognition_problem


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


def test_number_refusals_say_the_range_and_echo_the_text_as_typed() -> None:
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        number(0.0, 1.0, open_high=True)("1e999")
    assert str(caught.value) == "must be a finite number >= 0.0 and below 1.0, got 1e999"


@pytest.mark.parametrize("text", ["nan", "-0.1", "1.5", "x"])
def test_a_recognition_flag_is_refused_with_the_doors_own_range(text: str) -> None:
    """identify's --threshold: the same rule and words as the config and the manifest."""
    parse = checked_number(lambda value: recognition_problem("threshold", value))
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        parse(text)
    expected = (
        "expected a number, got 'x'"
        if text == "x"
        else recognition_problem("threshold", float(text))
    )
    assert str(caught.value) == expected
    assert parse("0.6") == 0.6


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
