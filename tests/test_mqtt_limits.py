"""What a broker may send the hub: nothing over MAX_PACKET_BYTES, whatever the broker allows.

The hub connects with MQTT 5 and a Maximum Packet Size; the real Mosquitto of
tests/mqtt_support.py (which forwards messages of up to 256 MB by default) must then drop a
larger message for the hub. The hub runs as its own process (`edge-app hub`), so its peak
memory is its own. A broker that only speaks MQTT 3.1.1 is the same Mosquitto behind a
loopback proxy that answers an MQTT 5 CONNECT as such a broker does (CONNACK 0x01,
unacceptable protocol version, then close; MQTT 3.1.1 section 3.1.2.2) and passes every other
connection through unchanged: no MQTT-3.1.1-only broker is installed here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.publish as publish
import pytest
from mqtt_support import Broker, FedDoor, Observer
from test_mqtt import (
    BASE,
    KEY,
    RunningHub,
    availability,
    hub_settings,
    hub_toml,
    read_packet,
    signed,
)

from edge_app.hub.mqtt import MAX_PACKET_BYTES
from edge_app.hub.signing import MAX_COMMAND_BYTES, sign_unlock
from edge_app.paths import REPO_ROOT

UNLOCK = f"{BASE}/unlock"
HUGE = 32 * 1024 * 1024  # far over the limit, far under Mosquitto's default of 256 MB
TOO_LONG = "command longer than"


def refusals(observer: Observer, part: str) -> list[str]:
    """The reasons of the hub's `denied` events that contain `part`."""
    found = []
    for message in observer.on(f"{BASE}/event"):
        event = message.json()
        if event["type"] == "denied" and part in (event.get("reason") or ""):
            found.append(event["reason"])
    return found


def send(broker: Broker, topic: str, payload: bytes | str) -> None:
    """Publish once, QoS 1, from a client of its own (not the observer, which reads `#`)."""
    publish.single(
        topic,
        payload,
        qos=1,
        hostname="127.0.0.1",
        port=broker.port,
        auth={"username": "ha", "password": "ha-pass"},
    )


def peak_memory(pid: int) -> int:
    """A process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


@contextlib.contextmanager
def hub_process(broker: Broker, door: FedDoor, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """`edge-app hub` on the broker's TLS port with signed remote unlock; its pid and log."""
    config = hub_settings(broker, tmp_path, door).mqtt
    toml = hub_toml(
        broker,
        door,
        tmp_path,
        "remote_unlock = true",
        f'unlock_secret_file = "{config.unlock_secret_file}"',
    )
    log = tmp_path / "hub.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "edge_app.cli", "hub", "--config", str(toml)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        yield process.pid, log
        assert process.poll() is None, log.read_text()  # still running after all this
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_a_message_over_the_packet_limit_never_reaches_the_hub(
    broker: Broker, observer: Observer, door: FedDoor, tmp_path: Path
) -> None:
    """A 32 MiB publish on the hub's command topic: Mosquitto forwards it to anyone who
    subscribed without a limit, and the hub (MQTT 3.1.1) read it whole, its peak memory
    growing by 126 MB, only to refuse it as longer than 1024 bytes. Now the broker drops it
    for the hub: no refusal, no memory, and the hub goes on opening the door for good
    commands."""
    with hub_process(broker, door, tmp_path) as (pid, log):
        observer.wait(lambda: availability(observer) == b"online", timeout=30, what="online")
        # A message over MAX_COMMAND_BYTES but under the packet limit still arrives, and is
        # refused by the hub itself: the path a larger one would take is live.
        send(broker, UNLOCK, b"x" * (2 * MAX_COMMAND_BYTES))
        observer.wait(lambda: refusals(observer, TOO_LONG), what="2 KiB command refused")
        before = peak_memory(pid)

        send(broker, UNLOCK, b"x" * HUGE)
        # Messages on one topic reach the hub in order: once this one opened the door, the
        # huge one before it was either handled or never sent.
        send(broker, UNLOCK, json.dumps(sign_unlock(KEY, "front", "after-huge")))
        observer.wait(lambda: door.pin_states[:2] == [False, True], what="pulse", timeout=30)
        # The broker did forward it, to a subscriber that set no limit (the observer).
        observer.wait(lambda: any(len(m.payload) == HUGE for m in observer.on(UNLOCK)))

        grown = peak_memory(pid) - before
        assert grown < HUGE // 8, f"the hub's peak memory grew by {grown} bytes"
        # Logged by the hub once the door has answered, after the pin moved: waited for.
        accepted = "remote unlock accepted origin=mqtt:after-huge"
        observer.wait(lambda: accepted in log.read_text(), what="accepted line", timeout=30)
        time.sleep(0.3)  # for anything else the huge message could have caused
        assert len(refusals(observer, TOO_LONG)) == 1, refusals(observer, TOO_LONG)
        assert availability(observer) == b"online"
        text = log.read_text()
        assert text.count(TOO_LONG) == 1, text
        assert f"mqtt=5 max_packet={MAX_PACKET_BYTES}" in text
        assert "mqtt disconnected" not in text


class Mqtt311Only:
    """A loopback proxy to the broker's plain port that refuses MQTT 5 as a 3.1.1-only broker
    does and passes every other connection through, byte for byte, both ways."""

    def __init__(self, broker: Broker) -> None:
        self.upstream = broker.port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.refused = 0  # MQTT 5 CONNECTs answered with 0x01
        self.passed = 0  # connections passed through
        self.speaks_5 = False  # True: an upgraded broker, MQTT 5 passes through too
        self.levels: list[int] = []  # the protocol level of each CONNECT, in order
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.server.accept()
                self._sockets.append(client)
                threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            header, body = read_packet(client)
            self.levels.append(body[6])  # CONNECT's body: "\x00\x04MQTT", then the level
            if body[6] == 5 and not self.speaks_5:
                self.refused += 1
                client.sendall(b"\x20\x02\x00\x01")
                client.close()
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            self._sockets.append(upstream)
            self.passed += 1
            upstream.sendall(header + body)
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
            self._pump(client, upstream)

    def cut(self) -> None:
        """End every connection passed through (a broker restarting), keep listening."""
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def test_a_broker_that_speaks_only_mqtt311_gets_it_with_a_warning(
    broker: Broker,
    observer: Observer,
    door: FedDoor,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The hub falls back to MQTT 3.1.1 (its door stays usable from Home Assistant) and says
    once that the broker must limit message sizes: without MQTT 5 a message over the limit
    does reach the hub, which can only refuse it after reading it."""
    caplog.set_level(logging.INFO, logger="edge_app")
    proxy = Mqtt311Only(broker)
    hub = RunningHub(hub_settings(broker, tmp_path, door, tls=False, port=proxy.port))
    try:
        observer.wait(lambda: availability(observer) == b"online", what="online")
        assert proxy.refused == 1 and proxy.passed == 1
        warnings = [r.getMessage() for r in caplog.records if "does not speak MQTT 5" in r.msg]
        assert warnings == [
            f"mqtt broker does not speak MQTT 5 host=127.0.0.1 port={proxy.port}: connecting "
            "with MQTT 3.1.1, which cannot ask the broker to limit what it sends the hub "
            f"({MAX_PACKET_BYTES} bytes with MQTT 5); limit message sizes at the broker "
            "(Mosquitto's message_size_limit) and who may publish to the hub's topics "
            "(docs/HOME_ASSISTANT.md)"
        ]
        assert "mqtt=3.1.1" in caplog.text
        assert "mqtt connection refused" not in caplog.text

        send(broker, UNLOCK, json.dumps(signed("old-broker")))
        observer.wait(lambda: door.pin_states[:2] == [False, True], what="pulse", timeout=10)
        send(broker, UNLOCK, b"x" * (2 * MAX_PACKET_BYTES))
        observer.wait(lambda: refusals(observer, TOO_LONG), what="over the limit, refused")
        assert hub.bridge.connected.is_set()
    finally:
        hub.stop()
        proxy.close()


def test_after_a_fall_back_each_new_connection_asks_for_mqtt5_again(
    broker: Broker,
    observer: Observer,
    door: FedDoor,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The fall-back to MQTT 3.1.1 held until the hub restarted: a broker upgraded to MQTT 5
    (or a downgrade injected once on a plain connection) left the hub without the broker's
    packet-size limit for good. Each new connection now asks for MQTT 5 first."""
    caplog.set_level(logging.INFO, logger="edge_app")
    proxy = Mqtt311Only(broker)
    hub = RunningHub(hub_settings(broker, tmp_path, door, tls=False, port=proxy.port))
    try:
        observer.wait(lambda: availability(observer) == b"online", what="online")
        assert proxy.levels == [5, 4]  # asked for 5, refused, then 3.1.1
        assert "mqtt=3.1.1" in caplog.text
        # The broker, still 3.1.1 only, restarts: the hub asks for 5 first again, falls back.
        proxy.cut()
        observer.wait(
            lambda: proxy.levels[2:] == [5, 4] and hub.bridge.connected.is_set(),
            timeout=30,
            what=f"5 then 3.1.1 again (levels {proxy.levels})",
        )
        # Upgraded to MQTT 5 and restarted: the next connection is MQTT 5 with its limit.
        caplog.clear()
        proxy.speaks_5 = True
        proxy.cut()
        observer.wait(
            lambda: proxy.levels[4:] == [5] and hub.bridge.connected.is_set(),
            timeout=30,
            what=f"MQTT 5 after the upgrade (levels {proxy.levels})",
        )
        assert f"mqtt=5 max_packet={MAX_PACKET_BYTES}" in caplog.text
        # The limit holds again: the broker keeps the oversized message from the hub (under
        # 3.1.1 the hub read it and refused it), and the command after it still unlocks.
        send(broker, UNLOCK, b"x" * (2 * MAX_PACKET_BYTES))
        send(broker, UNLOCK, json.dumps(signed("after-upgrade")))
        observer.wait(lambda: door.pin_states[:2] == [False, True], what="pulse", timeout=10)
        assert not refusals(observer, TOO_LONG)
        assert hub.bridge.connected.is_set()
    finally:
        hub.stop()
        proxy.close()


class DeadLink:
    """A loopback proxy to the broker's plain port whose link to the hub can die unnoticed:
    while `swallow` is set, what the hub sends is read and dropped, as on a network that went
    away without a reset; `cut()` then ends every connection (the hub finds the link dead)."""

    def __init__(self, broker: Broker) -> None:
        self.upstream = broker.port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.swallow = threading.Event()
        self.swallowed = 0  # bytes from the hub dropped
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                hub, _ = self.server.accept()
                upstream = socket.create_connection(("127.0.0.1", self.upstream))
                self._sockets += [hub, upstream]
                threading.Thread(target=self._pump, args=(upstream, hub), daemon=True).start()
                threading.Thread(target=self._pump, args=(hub, upstream, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, from_hub: bool = False) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if from_hub and self.swallow.is_set():
                    self.swallowed += len(data)
                    continue
                target.sendall(data)
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.swallow.clear()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.cut()
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()


def test_events_published_into_a_connection_that_died_unnoticed_are_sent_again(
    broker: Broker,
    observer: Observer,
    door: FedDoor,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by an audit: the network between hub and broker went away without a reset; the
    door's unlock was published into the dead connection, and dropped with everything else
    unacknowledged when the hub reconnected. Home Assistant never heard of it. Now the
    events that were not acknowledged are published again after the fresh state, in order,
    before the events that came since, and the stale state and availability are not."""
    caplog.set_level(logging.INFO, logger="edge_app")
    link = DeadLink(broker)
    hub = RunningHub(hub_settings(broker, tmp_path, door, tls=False, port=link.port))
    event_topic = f"{BASE}/event"
    try:
        observer.wait(lambda: availability(observer) == b"online", what="online")
        link.swallow.set()
        door.log.record("recognized", name="Bob", score=0.81, track=7)
        door.log.record("unlock", name="Bob", score=0.81, track=7)
        observer.wait(
            lambda: link.swallowed and len(hub.bridge._events_in_flight) == 2,
            what="both events published into the dead link",
        )
        assert observer.on(event_topic) == []
        connects = caplog.text.count("mqtt connected")
        link.cut()
        observer.wait(lambda: caplog.text.count("mqtt connected") > connects, what="reconnect")
        door.log.record("relock", name="Bob", reason="timeout")
        events = observer.wait(
            lambda: len(observer.on(event_topic)) >= 3 and observer.on(event_topic),
            what="the events",
        )
        time.sleep(1.0)  # nothing more comes: each was sent once
        assert [(m.json()["type"], m.json()["name"]) for m in observer.on(event_topic)] == [
            ("recognized", "Bob"),
            ("unlock", "Bob"),
            ("relock", "Bob"),
        ]
        assert not any(m.retain for m in events)
        assert "events_sent_again=2" in caplog.text
    finally:
        hub.stop()
        link.close()
