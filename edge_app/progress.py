"""Progress of long work: a tqdm bar on a terminal, and where standard error is not one (a
log file, `make ... > build.log`, the journal) a log line every LINE_SECONDS, so hours of
work are never silent for minutes.

`Progress` is tqdm with one change: `disable=None` (tqdm's "only on a terminal") gives those
lines instead of nothing. `disable=True` is still nothing; `disable=False` a bar anywhere.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)

LINE_SECONDS = 30.0  # between two progress lines off a terminal


def _terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced, or closed
        return False


class Progress(tqdm):
    """tqdm, or (disable=None off a terminal) a progress line every LINE_SECONDS."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._as_lines = kwargs.get("disable", False) is None and not _terminal()
        self._said_at = time.monotonic()
        if self._as_lines:  # tqdm's own writes (a bar, its clearing) go nowhere
            kwargs.update(disable=False, file=_Nowhere())
            kwargs["mininterval"] = kwargs["maxinterval"] = LINE_SECONDS
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool | None:
        if not self._as_lines:
            return super().display(msg, pos)
        now = time.monotonic()
        if msg == "" or self.n == 0 or now - self._said_at < LINE_SECONDS:
            return True  # the first refresh, a clear at close, or too soon
        self._said_at = now
        total = f"/{self.total:g}" if self.total else ""
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        unit = self.unit if isinstance(self.unit, str) else "it"
        elapsed = float(self.format_dict.get("elapsed") or 0.0)
        log.info(
            "%s: %d%s %s%s, %.0f s", self.desc or "progress", self.n, total, unit, share, elapsed
        )
        return True


class _Nowhere:
    """A file that takes tqdm's writes and keeps nothing."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
