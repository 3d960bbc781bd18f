"""argparse types shared by `edge-app` and `edge-convert`: a bad value is refused while the
command line is parsed, in one line that says what was expected (never a traceback)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_app.paths import IN_CHECKOUT


def count(low: int, high: int | None = None, *, beyond: str = "") -> Callable[[str], int]:
    """A whole number of at least `low` and, given `high`, at most `high`; `beyond` ends the
    refusal of a number out of range (what to do instead)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f"at least {low}" if high is None else f"{low} to {high}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {value}{beyond}")
        return value

    return parse


def checked_number(
    problem: Callable[[float], str | None], *, echo: bool = False
) -> Callable[[str], float]:
    """A number that `problem` finds nothing wrong with (it returns the refusal or None);
    echo: the refusal ends with the text as typed ("..., got 1e999")."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        refusal = problem(value)
        if refusal is not None:
            raise argparse.ArgumentTypeError(f"{refusal}, got {text}" if echo else refusal)
        return value

    return parse


def number(
    low: float, high: float | None = None, *, open_low: bool = False, open_high: bool = False
) -> Callable[[str], float]:
    """A finite number >= low, or > low when open_low (and <= high, or < high when
    open_high)."""

    def problem(value: float) -> str | None:
        above = high is not None and (value >= high if open_high else value > high)
        below = value <= low if open_low else value < low
        if math.isfinite(value) and not below and not above:
            return None
        limit = "" if high is None else f" and {'below' if open_high else 'at most'} {high}"
        return f"must be a finite number {'>' if open_low else '>='} {low}{limit}"

    return checked_number(problem, echo=True)


def checkout_default(path: Path, help: str, *, required: bool = True) -> dict[str, Any]:
    """add_argument keywords for an option whose default lies in the source checkout (its
    models, demo clip, docs or the shared data beside it): that default in a checkout. Where
    the command runs from an installed package, there is no such folder to default to: the
    option is required, or (`required=False`, for an option only some runs use) None, which
    the command refuses when that run needs it."""
    if IN_CHECKOUT:
        return {"default": str(path), "help": f"{help} (default %(default)s)"}
    if required:
        return {"required": True, "help": f"{help} (required: installed, not run from a checkout)"}
    return {"default": None, "help": f"{help} (no default: installed, not run from a checkout)"}


def empty_path_problem(value: object) -> str | None:
    """Why an empty path option is refused: Path("") is ".", the current folder, so an unset
    shell variable (`--out "$OUT"`) would read or write there. None for any other value."""
    if isinstance(value, str) and not value.strip():
        return "is empty; give a path (an unset shell variable?), or leave the option out"
    return None


def nonempty_path(text: str) -> Path:
    """The argparse type of a path option: a path, never an empty one (empty_path_problem)."""
    problem = empty_path_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return Path(text)


def refuse_empty_paths(
    parser: argparse.ArgumentParser, args: argparse.Namespace, options: dict[str, str]
) -> None:
    """parser.error() for any of `options` (dest -> flag) given as an empty string."""
    for dest, flag in options.items():
        problem = empty_path_problem(getattr(args, dest, None))
        if problem is not None:
            parser.error(f"argument {flag}: {problem}")
