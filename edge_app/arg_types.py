"""argparse types shared by `edge-app` and `edge-convert`: a bad value is refused while the
command line is parsed, in one line that says what was expected (never a traceback)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def count(low: int) -> Callable[[str], int]:
    """A whole number of at least `low`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def number(
    low: float, high: float | None = None, *, open_high: bool = False
) -> Callable[[str], float]:
    """A finite number >= low (and <= high, or < high when open_high)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        above = high is not None and (value >= high if open_high else value > high)
        if not math.isfinite(value) or value < low or above:
            limit = "" if high is None else f" and {'below' if open_high else 'at most'} {high}"
            raise argparse.ArgumentTypeError(f"must be a finite number >= {low}{limit}, got {text}")
        return value

    return parse
