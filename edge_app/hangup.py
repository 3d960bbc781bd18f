"""SIGHUP held from the first moment of `edge-app run` until the door handles it itself.

SIGHUP's default action ends a process. The door installs its own handler (a reload) only in
Daemon.run(), after the command line, the config and the heavy imports: a `systemctl reload`
or logrotate's postrotate in that second or two ended the door with exit 129, which systemd's
Restart=on-failure takes for a clean stop and does not restart. The command line holds it
from its start (hold); once it knows the command is not the door, it puts the previous
handler back and delivers a SIGHUP that came meanwhile (release), so every other command
ends on one as before. The door takes a held one as a reload once it has started (take).
A SIGHUP that was ignored when the process began (`nohup`) stays ignored.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

_asked = threading.Event()
_previous: list[Any] = []  # the handler hold() replaced, while held


def hold() -> None:
    """From now on a SIGHUP is remembered, not acted on (only from the main thread)."""
    if _previous:
        return
    before = signal.getsignal(signal.SIGHUP)
    if before is signal.SIG_IGN:
        return
    _asked.clear()
    _previous.append(before)
    signal.signal(signal.SIGHUP, _held)


def release(*, deliver: bool) -> None:
    """Put back the handler hold() replaced; with `deliver`, a SIGHUP held and not taken is
    sent again, to that handler."""
    if not _previous:
        return
    signal.signal(signal.SIGHUP, _previous.pop())
    if deliver and take():
        signal.raise_signal(signal.SIGHUP)


def take() -> bool:
    """Whether a SIGHUP came while held since the last call."""
    asked = _asked.is_set()
    _asked.clear()
    return asked


def _held(_signum: int, _frame: FrameType | None) -> None:
    _asked.set()  # only a flag: a handler that logs could re-enter a lock the main thread holds
