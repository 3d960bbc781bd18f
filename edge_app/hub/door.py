"""The hub's link to the door: status polls and the event stream, reconnecting by themselves.

The hub may start before the door, outlive a door restart, or find the socket gone for a
while: each loop retries with a capped backoff and logs a state change once, not every try.
The door counts as healthy when its socket answers and its camera frames are fresh; a camera
picture that shows nothing (edge_app/picture.py) is reported as the door's problem.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_app.camera import Backoff
from edge_app.control import ControlClient, ControlError, frame_is_fresh, reported_picture
from edge_app.picture import ADVICE, EXPLAIN

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
REQUEST_TIMEOUT = 3.0


@dataclass(frozen=True)
class DoorHealth:
    """reachable: the socket answered the last status request. frames: its camera's latest
    frame is younger than stale_seconds. status: that answer (None when unreachable)."""

    reachable: bool
    frames: bool
    status: dict[str, Any] | None = None
    error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.reachable and self.frames

    @property
    def relay_active(self) -> bool:
        return bool(self.status and self.status.get("relay_active"))

    @property
    def picture(self) -> str | None:
        """What is wrong with the camera's picture, as the door judged it (edge_app/picture.py):
        "dark", "featureless", or None (a usable picture, or a door that does not say)."""
        return reported_picture(self.status or {})


def judge(status: dict[str, Any], stale_seconds: float | None = None) -> DoorHealth:
    """Healthy while the socket answers with fresh frames. A picture that shows nothing is
    named as the problem, but the door stays available: it is running, and a face that comes
    into the light is still recognised. stale_seconds: the hub's limit for a fresh frame;
    None, the door's own (control.frame_limit)."""
    fresh = frame_is_fresh(status, stale_seconds)
    health = DoorHealth(True, fresh, status, None if fresh else "no fresh camera frames")
    if fresh and health.picture is not None:
        return DoorHealth(True, True, status, EXPLAIN[health.picture])
    return health


EventListener = Callable[[dict[str, Any]], None]
HealthListener = Callable[[DoorHealth], None]


class DoorLink:
    def __init__(
        self,
        path: Path,
        stale_seconds: float | None = None,
        *,
        poll_seconds: float = POLL_SECONDS,
        backoff: Backoff | None = None,
    ) -> None:
        self.path = Path(path)
        self.stale_seconds = stale_seconds  # None: the door's own limit (judge)
        self.poll_seconds = poll_seconds
        self.backoff = backoff or Backoff(0.5, 10.0)
        self.health = DoorHealth(False, False, None, "not checked yet")
        self._event_listeners: list[EventListener] = []
        self._health_listeners: list[HealthListener] = []
        self._stop = threading.Event()
        self._retry = threading.Event()  # cuts the event stream's backoff short
        self._stream: ControlClient | None = None
        self._threads: list[threading.Thread] = []
        # The last unexpected failure logged with its traceback, per loop: a fault that
        # repeats every poll is logged once, not every 2 s.
        self._unexpected: dict[str, str | None] = {"status": None, "events": None}

    def add_listener(
        self, on_event: EventListener | None = None, on_health: HealthListener | None = None
    ) -> None:
        if on_event is not None:
            self._event_listeners.append(on_event)
        if on_health is not None:
            self._health_listeners.append(on_health)

    def start(self) -> None:
        for name, target in (("door-status", self._poll), ("door-events", self._listen)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._retry.set()
        stream = self._stream
        if stream is not None:
            stream.close()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT + 1)

    def client(self) -> ControlClient:
        """A client for one-off requests (status, frame, unlock)."""
        return ControlClient(self.path, timeout=REQUEST_TIMEOUT)

    def unlock(self, reason: str, origin: str) -> dict[str, Any]:
        return self.client().unlock(reason, origin)

    def status(self) -> dict[str, Any]:
        """The door's status object; ControlError when the reply holds none (another program
        on the socket, another protocol): that must not end the poll thread with a KeyError."""
        status = self.client().request("status").get("status")
        if not isinstance(status, dict):
            raise ControlError(f"{self.path}: the door's status reply holds no status object")
        return status

    def check(self) -> DoorHealth:
        """Ask the door now; updates `health` and tells the listeners."""
        try:
            health = judge(self.status(), self.stale_seconds)
        except ControlError as error:
            health = DoorHealth(False, False, None, str(error))
        except Exception as error:
            # Anything else (a bug, an exhausted process) must not end the poll thread: the
            # door counts as unreachable, so availability goes offline with the reason, and
            # the next poll tries again.
            reason = f"cannot ask the door: {type(error).__name__}: {error}"
            self._log_unexpected("status", reason)
            health = DoorHealth(False, False, None, reason)
        else:
            self._unexpected["status"] = None
        previous, self.health = self.health, health
        if health.reachable and not previous.reachable:
            self._retry.set()  # the door is back: subscribe now, not after the backoff
        if (previous.reachable, previous.frames) != (health.reachable, health.frames):
            if health.healthy:
                source = (health.status or {}).get("source")
                log.info("door healthy path=%s source=%s", self.path, source)
            else:
                log.warning("door unhealthy path=%s reason=%r", self.path, health.error)
        if health.frames and previous.picture != health.picture:
            if health.picture is None:
                log.info("door camera picture usable again path=%s", self.path)
            else:
                log.warning("door camera picture %s: %s", health.picture, ADVICE[health.picture])
        for listener in self._health_listeners:
            _call(listener, health)
        return health

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception as error:  # check() itself failing must not end the polls
                self._log_unexpected("status", f"{type(error).__name__}: {error}")
            self._stop.wait(self.poll_seconds)

    def _log_unexpected(self, loop: str, reason: str) -> None:
        """Log an unexpected failure with its traceback once, until a different one (or a
        success) comes; the same failure again is only a debug line."""
        if self._unexpected.get(loop) == reason:
            log.debug("door %s failed again path=%s reason=%s", loop, self.path, reason)
            return
        self._unexpected[loop] = reason
        log.exception("door %s failed unexpectedly path=%s reason=%s", loop, self.path, reason)

    def _listen(self) -> None:
        delay = self.backoff.initial
        reported = False

        def opened() -> None:  # said once the door accepted the subscription, events or not
            nonlocal delay, reported
            log.info("door event stream open path=%s", self.path)
            reported = True
            self._unexpected["events"] = None
            delay = self.backoff.initial

        while not self._stop.is_set():
            try:
                client = ControlClient(self.path, timeout=REQUEST_TIMEOUT)
                self._stream = client
                for event in client.events(opened):
                    for listener in self._event_listeners:
                        _call(listener, event)
            except ControlError as error:
                if reported or delay == self.backoff.initial:
                    log.warning("door event stream lost path=%s reason=%s", self.path, error)
                reported = False
            except Exception as error:
                # Not the door going away but a fault here (a bug, an exhausted process): the
                # stream counts as lost and is retried with the same backoff, never abandoned.
                self._log_unexpected("events", f"{type(error).__name__}: {error}")
                reported = False
            finally:
                self._stream = None
            self._retry.wait(delay)
            self._retry.clear()
            if self._stop.is_set():
                return
            delay = min(delay * 2, self.backoff.maximum)


def _call(listener: Callable[[Any], None], value: Any) -> None:
    """A failing listener (a bug in one component) must not stop the others or the link."""
    try:
        listener(value)
    except Exception:
        log.exception("hub listener failed listener=%r", listener)
