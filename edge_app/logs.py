"""Logging set-up that reads well both in a terminal and in journald."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

# journald maps "<N>" line prefixes to syslog priorities when stdout/stderr is its stream.
_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


# C0 and C1 control characters and DEL: in a file or person name they could move the
# cursor, clear the screen or forge a line of output.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape_controls(text: str, keep: str = "") -> str:
    """`text` with its control characters (but those in `keep`) written as \\xNN."""
    return _CONTROLS.sub(lambda m: m[0] if m[0] in keep else f"\\x{ord(m[0]):02x}", text)


class _SafeFormatter(logging.Formatter):
    """Messages carry names from outside (files, people): their control characters are
    escaped, a message's own line breaks kept (a config error lists its problems). A text or
    a path given as an argument (`photo=%s`) has its line breaks escaped too: a file named
    with a newline must not forge a line of the log, nor a journal entry."""

    def format(self, record: logging.LogRecord) -> str:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, str | os.PathLike) for a in args):
            record = copy.copy(record)
            record.args = tuple(
                escape_controls(str(a)) if isinstance(a, str | os.PathLike) else a for a in args
            )
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record), keep="\n")


class _JournalFormatter(_SafeFormatter):
    """journald stamps the time itself; a priority prefix lets `journalctl -p` filter. Each
    line of the message gets it: journald makes an entry of each line, and a config error's
    problems (or a traceback) on lines of their own were entries without a priority, left
    out by `journalctl -p err`."""

    def format(self, record: logging.LogRecord) -> str:
        head = f"<{_SYSLOG_PRIORITY.get(record.levelno, 6)}>{record.name}: "
        return "\n".join(head + line for line in super().format(record).split("\n"))


def setup_logging(verbosity: int = 0) -> None:
    """Configure the root logger once: -v for debug, -q (negative) for warnings only.

    Log lines carry their data as key=value pairs (see the callers), so that journald's
    MESSAGE field can be grepped and parsed without a JSON layer.
    """
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(
            _SafeFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # TensorFlow and absl are chatty at INFO; their warnings still come through.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for noisy in ("tensorflow", "absl", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class Throttle:
    """At most `burst` log lines per `every` seconds for one kind of repeated event.

    The first occurrences are logged; once `burst` lines were logged within `every` seconds,
    later ones are only counted until the oldest of those lines is `every` seconds old, and
    the next line that is logged says how many were held back. A failing disk, a client that
    keeps sending what is refused: each is a line (or a few), then a line now and then with a
    count, not a line per attempt that floods the journal. Safe to call from several threads.
    """

    def __init__(
        self, every: float, clock: Callable[[], float] = time.monotonic, *, burst: int = 1
    ) -> None:
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        self.every = every
        self._clock = clock
        self._logged: deque[float] = deque(maxlen=burst)  # when the last lines were logged
        self._held_back = 0
        self._lock = threading.Lock()

    def due(self, now: float | None = None) -> int | None:
        """None when this occurrence is only to be counted; else log it now, with the
        number returned: how many were held back since the last line. now: the caller's
        clock reading, when it has one (else the throttle's clock is read)."""
        with self._lock:
            now = self._clock() if now is None else now
            logged = self._logged
            if len(logged) == logged.maxlen and now - logged[0] < self.every:
                self._held_back += 1
                return None
            held_back, self._held_back = self._held_back, 0
            logged.append(now)
            return held_back

    def held(self, now: float | None = None) -> int:
        """How many were held back, when a line saying so may be logged now (as due() would
        allow one: the count is then reset and the line counts as logged); else 0, the count
        kept. For a caller that says a count once a burst has ended, with no occurrence
        after it to carry the count."""
        with self._lock:
            if not self._held_back:
                return 0
            now = self._clock() if now is None else now
            logged = self._logged
            if len(logged) == logged.maxlen and now - logged[0] < self.every:
                return 0
            held_back, self._held_back = self._held_back, 0
            logged.append(now)
            return held_back


@contextlib.contextmanager
def quieted(levels: dict[str, int]) -> Iterator[None]:
    """Raise each named logger to at least its level while the block runs (an evaluation
    whose door would log every decision), then put them back. Progress lines
    (edge_app.progress) keep the level they had: long work still says how far it is."""
    progress = logging.getLogger("edge_app.progress")
    before = {name: logging.getLogger(name).level for name in levels}
    kept = progress.level
    progress.setLevel(progress.getEffectiveLevel())
    for name, level in levels.items():
        logging.getLogger(name).setLevel(max(before[name], level))
    try:
        yield
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)
        progress.setLevel(kept)
