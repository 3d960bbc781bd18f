"""The page's only way to the door: the door's control socket (edge_app.control).

Each call opens its own short connection with a timeout, so a stopped or hung door makes the
page say so instead of hanging; the relay is reachable only through the socket's `unlock`.
Requests for the status or the frame that arrive together (several tabs, each polling) share
one answer, fetched once and kept SHARE_SECONDS: the page asks the door for at most one of
each at a time, whatever its 40 threads do (the door keeps few slots for its own user,
edge_app.control.OWN_USER_SLOTS).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TIMEOUT_S = 2.0
SHARE_SECONDS = 0.5  # a status or frame fetched this recently answers the next request too


@dataclass(frozen=True)
class DoorStatus:
    reachable: bool
    data: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


class WebDoor:
    def __init__(
        self,
        socket_path: Path | None,
        timeout: float = TIMEOUT_S,
        *,
        ticks: Callable[[], float] = time.monotonic,
    ) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._ticks = ticks
        self._fetching = {op: threading.Lock() for op in ("status", "frame")}
        self._answers: dict[str, tuple[float, Any]] = {}

    def _shared(self, op: str, fetch: Callable[[], Any]) -> Any:
        """fetch()'s answer, or one another request fetched less than SHARE_SECONDS ago;
        one fetch of `op` at a time, the others waiting for its answer."""
        with self._fetching[op]:
            answer = self._answers.get(op)
            if answer is not None and self._ticks() - answer[0] < SHARE_SECONDS:
                return answer[1]
            value = fetch()
            self._answers[op] = (self._ticks(), value)
            return value

    def _client(self) -> Any:
        from edge_app.control import ControlClient

        if self.socket_path is None:
            raise RuntimeError("no control socket configured")
        return ControlClient(self.socket_path, timeout=self.timeout)

    def status(self) -> DoorStatus:
        result: DoorStatus = self._shared("status", self._fetch_status)
        return result

    def _fetch_status(self) -> DoorStatus:
        from edge_app.control import ControlError

        try:
            return DoorStatus(True, dict(self._client().status()))
        except (ControlError, OSError, RuntimeError) as error:
            return DoorStatus(False, error=str(error) or type(error).__name__)

    def frame(self) -> bytes | None:
        """The door's latest frame as JPEG, or None when it has none (idle or unreachable)."""
        result: bytes | None = self._shared("frame", self._fetch_frame)
        return result

    def _fetch_frame(self) -> bytes | None:
        from edge_app.control import ControlError

        try:
            return self._client().frame()
        except (ControlError, OSError, RuntimeError) as error:
            log.debug("live frame unavailable error=%r", error)
            return None

    def unlock(self, reason: str, origin: str) -> dict[str, Any]:
        """Raises edge_app.control.ControlError when the door refuses or is unreachable.
        Never shared: each is its own request; the status fetched next shows it."""
        try:
            return dict(self._client().unlock(reason, origin))
        finally:
            self._answers.pop("status", None)


def picture_explained(status: DoorStatus) -> str | None:
    """What the door says is wrong with its camera's picture, in words (edge_app/picture.py),
    or None."""
    from edge_app.control import reported_picture
    from edge_app.picture import EXPLAIN

    picture = reported_picture(status)
    return None if picture is None else EXPLAIN[picture]


def is_live(status: DoorStatus) -> bool:
    """The door runs and its camera delivers: frames younger than its own staleness limit
    (hub.stale_seconds), so the socket's `frame` request has something to show."""
    from edge_app.control import frame_is_fresh

    return status.reachable and bool(status.get("running")) and frame_is_fresh(status)
