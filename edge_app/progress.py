"""Progress of long work: a tqdm bar on a terminal, and where standard error is not one (a
log file, `make ... > build.log`, CI, cron, the journal) a log line every LINE_SECONDS
saying how much is done, how long it took and about how long is left, so hours of work are
never silent for minutes. A run that said a line says a last one when it ends.

`Progress` is tqdm with one change: `disable=None` (tqdm's "only on a terminal") gives those
lines instead of nothing. `disable=True` is still nothing; `disable=False` a bar anywhere.
The lines are logged at INFO (edge_app.progress): `-q` leaves them out, as every info line.
The environment variable SECONDS_VARIABLE sets another spacing (a cron job that wants a line
every 10 minutes: 600).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)

LINE_SECONDS = 30.0  # between two progress lines off a terminal, unless SECONDS_VARIABLE says
SECONDS_VARIABLE = "EDGE_APP_PROGRESS_SECONDS"


def _terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced, or closed
        return False


def line_seconds() -> float:
    """The seconds between two progress lines: SECONDS_VARIABLE when it is a positive number
    of seconds, else LINE_SECONDS (with a warning naming the value that is not)."""
    text = os.environ.get(SECONDS_VARIABLE, "").strip()
    if not text:
        return LINE_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        log.warning(
            "%s=%s is not a number of seconds above 0: a progress line every %g s",
            SECONDS_VARIABLE,
            text[:40],
            LINE_SECONDS,
        )
        return LINE_SECONDS
    return seconds


def _duration(seconds: float) -> str:
    """`1 h 05 min`, `4 min 10 s`, `12 s`."""
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


class Progress(tqdm):
    """tqdm, or (disable=None off a terminal) a progress line every line_seconds()."""

    # Set on the class too: a Ctrl-C inside tqdm's __new__ (its lock and monitor thread are
    # made on first use) leaves an instance __init__ never saw, which tqdm closes when it is
    # collected; close() must then do what tqdm's does, nothing, not raise AttributeError.
    _as_lines = False
    _said_n: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._as_lines = kwargs.get("disable", False) is None and not _terminal()
        self._said_at = time.monotonic()
        self._said_n: float | None = None  # the count the last line gave; None: no line yet
        if self._as_lines:  # tqdm's own writes (a bar, its clearing) go nowhere
            self._every = line_seconds()
            kwargs.update(disable=False, file=_Nowhere())
            kwargs["mininterval"] = kwargs["maxinterval"] = self._every
            kwargs.setdefault("miniters", 1)  # the clock read at every update: no long gaps
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool | None:
        if not self._as_lines:
            return super().display(msg, pos)
        now = time.monotonic()
        if msg == "" or self.n in (0, self._said_n) or now - self._said_at < self._every:
            return True  # the first refresh, a clear at close, nothing new, or too soon
        self._say(now)
        return True

    def close(self) -> None:
        # getattr: a Ctrl-C inside tqdm's __init__ (after ours set _as_lines) leaves no
        # `disable` yet, as tqdm's own close() allows for.
        disabled = getattr(self, "disable", True)
        if self._as_lines and not disabled and self._said_n not in (None, self.n):
            self._say(time.monotonic())  # where it ended, after lines that said how far
        super().close()

    def _say(self, now: float) -> None:
        self._said_at, self._said_n = now, self.n
        elapsed = float(self.format_dict.get("elapsed") or 0.0)
        unit = f"{self.unit} " if isinstance(self.unit, str) and self.unit != "it" else ""
        what = self.desc or "progress"
        if not self.total:
            log.info("%s: %s%d, %s elapsed", what, unit, self.n, _duration(elapsed))
            return
        if self.n >= self.total:
            log.info(
                "%s: %s%d of %d, done in %s", what, unit, self.n, self.total, _duration(elapsed)
            )
            return
        left = elapsed * (self.total - self.n) / self.n  # at the pace so far
        log.info(
            "%s: %s%d of %d (%d%%), %s elapsed, about %s left",
            what,
            unit,
            self.n,
            self.total,
            100 * self.n // self.total,
            _duration(elapsed),
            _duration(left),
        )


class _Nowhere:
    """A file that takes tqdm's writes and keeps nothing."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
