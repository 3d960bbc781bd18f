"""The hub process: one DoorLink and the components that use it, until SIGTERM/SIGINT.

A component has start(), stop(), on_event(event) and on_health(health); the MQTT bridge is
one, and other network faces (the web page) register the same way with `Hub.add()`.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any, Protocol

from edge_app.config import Config
from edge_app.hub.door import DoorHealth, DoorLink

log = logging.getLogger(__name__)


class Component(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def on_event(self, event: dict[str, Any]) -> None: ...

    def on_health(self, health: DoorHealth) -> None: ...


class Hub:
    def __init__(self, config: Config, door: DoorLink | None = None) -> None:
        self.config = config
        if door is None:
            socket = config.hub.socket
            if socket is None:
                from edge_app.errors import UserError

                raise UserError(
                    'hub.socket: "" turns the door\'s control socket off, so the hub has '
                    "nothing to talk to; set it (default /run/edge-app/door.sock)"
                )
            door = DoorLink(socket, config.hub.stale_seconds)
        self.door = door
        self.components: list[Component] = []
        self._stop = threading.Event()
        self._signal: int | None = None  # the signal that stopped run()

    @classmethod
    def from_config(cls, config: Config, config_path: Path | None = None) -> Hub:
        """The hub with the components the config turns on."""
        hub = cls(config)
        if config.mqtt.host:
            from edge_app.hub.mqtt import MqttBridge

            # The gallery: a retained last person removed from it is replaced (MqttBridge).
            hub.add(MqttBridge(config.mqtt, hub.door, gallery=config.gallery.path))
        else:
            log.info('mqtt off (mqtt.host = ""): set [mqtt] host to publish to a broker')
        if config.web.enabled:
            # The web page (docs/WEB.md): its refusals (a LAN address without a password...)
            # come from its constructor, before anything listens.
            from edge_app.web.server import WebServer

            hub.add(WebServer(config, config_path=config_path, socket_path=config.hub.socket))
        else:
            log.info("web page off (web.enabled = false)")
        if not hub.components:
            log.warning(
                "the hub has nothing to serve: set [mqtt] host or [web] enabled = true in the "
                "config and restart it; until then it only watches the door"
            )
        return hub

    def add(self, component: Component) -> None:
        self.components.append(component)
        self.door.add_listener(component.on_event, component.on_health)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        previous = self._install_signals()
        started: list[Component] = []
        try:
            for component in self.components:
                component.start()
                started.append(component)
            self.door.start()
            log.info("hub running socket=%s components=%d", self.door.path, len(started))
            while not self._stop.wait(1.0):
                pass
            log.info("hub stopping")
            # systemd's stop (SIGTERM) is a stop asked for: 0; Ctrl-C exits 130, as a shell
            # reports it and every other command does.
            return 128 + signal.SIGINT if self._signal == signal.SIGINT else 0
        finally:
            self.door.stop()
            for component in reversed(started):
                try:
                    component.stop()
                except Exception:
                    log.exception("hub component failed to stop component=%r", component)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}

        def stop(signum: int, _frame: object) -> None:
            self._signal = signum
            self._stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, stop)
        return previous
