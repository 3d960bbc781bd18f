"""`edge-app hub` against a real broker: Debian's mosquitto, started here on free loopback ports.

The broker has a password file, `allow_anonymous false`, a plain listener and a TLS listener
signed by a test CA made with the openssl CLI. The hub speaks TLS; the observer (playing Home
Assistant) uses the plain port. The door is a real Daemon's control socket, relay (gpiozero
MockFactory) and event log; the last test runs the whole door on an LFW clip. The broker, the
observer and the fed door are tests/mqtt_support.py's, made by tests/conftest.py's fixtures.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from clips import Visit, build_clip
from lfw_photos import NEEDS_LFW_AND_MODELS, lfw
from mqtt_support import PASSWORD, USER, Broker, FedDoor, Frames, Observer, make_ca
from test_control import PIN, Door, make_daemon

from benchmarks.loopback import free_port
from edge_app.camera import Frame
from edge_app.config import Config, parse_config
from edge_app.control import UNLOCK_SPACING_SECONDS
from edge_app.hub import DoorLink, Hub
from edge_app.hub.code import LOCKOUT, MAX_WRONG, write_code_file
from edge_app.hub.discovery import EVENT_TYPES
from edge_app.hub.mqtt import LOCK_ORIGIN, MqttBridge, clear_discovery
from edge_app.hub.signing import sign_unlock
from edge_app.paths import REPO_ROOT

KEY = "k" * 16 + "e" * 16 + "y" * 16
CODE = "739104"
BASE = "edge-door/front"


def hub_settings(broker: Broker, folder: Path, door: Door | None = None, **mqtt: Any) -> Config:
    password = folder / "mqtt.pass"
    password.write_text(mqtt.pop("password", PASSWORD) + "\n")
    password.chmod(0o600)
    secret = folder / "unlock.key"
    secret.write_text(KEY + "\n")
    secret.chmod(0o600)
    tls = mqtt.pop("tls", True)
    data: dict[str, Any] = {
        "hub": {
            "socket": str(door.path if door else folder / "run" / "door.sock"),
            "stale_seconds": 1.0,
        },
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker.tls_port if tls else broker.port,
            "username": USER,
            "password_file": str(password),
            "topic_prefix": "edge-door",
            "door_id": "front",
            "remote_unlock": True,
            "unlock_secret_file": str(secret),
            **({"tls_ca": str(broker.certs["ca"])} if tls else {}),
            **mqtt,
        },
    }
    return parse_config(data)


class RunningHub:
    def __init__(self, config: Config) -> None:
        assert config.hub.socket is not None
        door = DoorLink(config.hub.socket, config.hub.stale_seconds, poll_seconds=0.2)
        self.hub = Hub(config, door=door)
        self.bridge = MqttBridge(config.mqtt, door)
        self.hub.add(self.bridge)
        self.thread = threading.Thread(target=self.hub.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.hub.stop()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def availability(observer: Observer) -> bytes | None:
    return observer.last(f"{BASE}/availability")


def test_discovery_availability_and_events(
    broker: Broker, observer: Observer, door: FedDoor, tmp_path: Path
) -> None:
    hub = RunningHub(hub_settings(broker, tmp_path, door))
    try:
        observer.wait(lambda: availability(observer) == b"online", what="online")
        configs = {
            m.topic: m.json()
            for m in observer.messages
            if m.topic.startswith("homeassistant/") and m.payload
        }
        node = "edge_door_front"
        assert set(configs) == {
            f"homeassistant/binary_sensor/{node}/strike/config",
            f"homeassistant/event/{node}/event/config",
            f"homeassistant/sensor/{node}/last_person/config",
            f"homeassistant/binary_sensor/{node}/door/config",
            f"homeassistant/binary_sensor/{node}/camera/config",
        }
        event_config = configs[f"homeassistant/event/{node}/event/config"]
        assert event_config["event_types"] == list(EVENT_TYPES)
        assert event_config["state_topic"] == f"{BASE}/event"
        # No availability: Home Assistant would drop events while the door is unwell.
        assert "availability_topic" not in event_config
        assert {c["device"]["identifiers"][0] for c in configs.values()} == {node}
        assert len({c["unique_id"] for c in configs.values()}) == 5
        assert configs[f"homeassistant/binary_sensor/{node}/strike/config"]["device_class"] == (
            "lock"
        )
        # Retained on the broker: a client that connects now (HA after a restart) gets them.
        late = Observer(broker)
        try:
            late.wait(lambda: len([m for m in late.messages if m.retain]) >= 7, what="retained")
            retained = {m.topic for m in late.messages if m.retain}
            assert set(configs) | {f"{BASE}/availability", f"{BASE}/state"} <= retained
        finally:
            late.close()
        # HA restarting publishes "online" on its status topic: discovery is sent again.
        before = len(observer.on(f"homeassistant/event/{node}/event/config"))
        observer.publish("homeassistant/status", "online")
        observer.wait(
            lambda: len(observer.on(f"homeassistant/event/{node}/event/config")) > before,
            what="discovery re-sent",
        )

        # Door events become MQTT events, in order, with Frigate-like fields.
        door.log.record("recognized", name="Alice", score=0.81, track=3)
        door.log.record("unknown", score=0.2, track=4)
        door.log.record("denied", name="Alice", score=0.8, track=3, reason="cooldown")
        events = observer.wait(
            lambda: len(observer.on(f"{BASE}/event")) >= 3 and observer.on(f"{BASE}/event"),
            what="events",
        )
        payloads = [m.json() for m in events]
        assert [p["type"] for p in payloads] == ["recognized", "unknown", "denied"]
        assert [p["event_type"] for p in payloads] == ["recognized", "unknown", "denied"]
        assert payloads[0]["name"] == "Alice" and payloads[0]["score"] == 0.81
        assert payloads[0]["track"] == 3 and isinstance(payloads[0]["timestamp"], float)
        assert {"type", "name", "score", "liveness", "track", "timestamp"} <= set(payloads[0])
        assert not any(m.retain for m in events)
        assert all("embedding" not in m.payload.decode() for m in events)
        person = observer.wait(lambda: observer.last(f"{BASE}/last_person"), what="last person")
        assert json.loads(person)["name"] in ("Alice", "unknown")

        # Frames stop (a stuck camera): the diagnostics say so, and the door stays available:
        # its strike can still be unlocked from the lock card, the fallback then (an audit
        # found the lock card unavailable exactly when the camera had failed).
        door.frames.running.clear()

        def state() -> dict | None:
            last = observer.last(f"{BASE}/state")
            return None if last is None else json.loads(last)

        stale = observer.wait(
            lambda: (s := state()) is not None and s["camera"] == "stale" and s,
            what="state says the camera is stale",
        )
        assert stale["door"] == "online"
        assert availability(observer) == b"online"
        assert b"offline" not in [m.payload for m in observer.on(f"{BASE}/availability")]
        door.frames.running.set()
        observer.wait(lambda: (s := state()) is not None and s["camera"] == "ok", what="ok")
    finally:
        hub.stop()
    # A clean stop says offline too (the observer's copy comes through the broker: read at
    # once, a loaded machine still saw "online").
    observer.wait(lambda: availability(observer) == b"offline", what="offline")


def signed(origin: str = "test", **changes: Any) -> dict[str, Any]:
    return {**sign_unlock(KEY, "front", origin), **changes}


def test_a_command_published_retained_while_the_hub_listens_opens_nothing(
    broker: Broker, observer: Observer, door: Door, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an audit: the broker clears the retain flag of a message it delivers live, so
    a fresh signed command published retained while the hub was connected opened the door
    (and stayed on the broker, refused at every reconnect). The hub now asks MQTT 5's
    retain-as-published for its command topics."""
    caplog.set_level(logging.INFO, logger="edge_app")
    topic = f"{BASE}/unlock"
    hub = RunningHub(hub_settings(broker, tmp_path, door))
    try:
        observer.wait(lambda: availability(observer) == b"online", what="online")
        observer.publish(topic, signed("retained-live"), retain=True)
        observer.wait(lambda: "retained command ignored" in caplog.text, what="refused")
        observer.publish(topic, b"", retain=True)  # clear it
        observer.publish(topic, signed("live"))  # the same hub, a command sent rightly
        observer.wait(lambda: door.pin_states[:2] == [False, True], what="pulse", timeout=5)
        # The pin goes high before the door writes its unlock event: wait for the event too.
        observer.wait(
            lambda: any(e["type"] == "unlock" for e in door.events()), what="unlock event"
        )
        unlocks = [e for e in door.events() if e["type"] == "unlock"]
        assert [e["reason"].split("origin=")[1].split()[0] for e in unlocks] == ["mqtt:live"]
    finally:
        hub.stop()


def test_a_second_command_while_the_first_one_s_pulse_is_open_is_denied_as_already_unlocked(
    broker: Broker, observer: Observer, door: Door, tmp_path: Path
) -> None:
    """Two fresh signed commands in a row (a double tap in Home Assistant): the door opens
    once, and the second is published as a `denied` event saying the door is already
    unlocked (edge_app.control.UNLOCK_SPACING_SECONDS), not lost or taken for a failure."""
    topic = f"{BASE}/unlock"
    hub = RunningHub(hub_settings(broker, tmp_path, door))
    try:
        observer.wait(lambda: availability(observer) == b"online", what="online")
        observer.publish(topic, signed("first"))
        observer.publish(topic, signed("second"))

        def denied() -> list[dict]:
            events = (m.json() for m in observer.on(f"{BASE}/event"))
            return [e for e in events if e["type"] == "denied"]

        observer.wait(lambda: denied(), what="the second command denied")
        (refusal,) = denied()
        assert refusal["reason"].startswith(
            tuple(
                f"remote unlock refused: the door refused: {words}"
                for words in ("already unlocked: ", "a remote unlock was carried out")
            )
        ), refusal["reason"]
        assert refusal["name"] == "second"  # who the verified command named
        observer.wait(lambda: door.pin_states == [False, True, False], what="one pulse")
        unlocks = [e["reason"] for e in door.events() if e["type"] == "unlock"]
        assert len(unlocks) == 1 and unlocks[0].startswith("remote; origin=mqtt:first ")
    finally:
        hub.stop()


def test_remote_unlock_needs_a_fresh_signed_unique_command(
    broker: Broker, observer: Observer, door: Door, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_app")
    topic = f"{BASE}/unlock"
    # A valid, fresh command left retained before the hub connects: delivered to the hub
    # with the retain flag when it subscribes, and ignored.
    observer.publish(topic, signed("left-retained"), retain=True)
    hub = RunningHub(hub_settings(broker, tmp_path, door))
    try:
        observer.wait(lambda: availability(observer) == b"online", what="online")
        observer.wait(lambda: "retained command ignored" in caplog.text, what="retained refusal")
        observer.publish(topic, b"", retain=True)  # clear it
        refusals = {
            "bad signature": signed(sig="0" * 64),
            "outside the 30 s window": sign_unlock(KEY, "front", "old", now=time.time() - 120),
            "must be an object with exactly": {**signed(), "extra": 1},
            "bad command: not JSON": b"UNLOCK",
            # Hostile input must not stop paho's network thread: refused, and the good
            # command below still opens the door.
            "JSON nested too deeply": b"[" * 1000,
            "an integer of 400 digits": signed(ts=int("9" * 400)),
        }
        other_door = sign_unlock(KEY, "back", "t")  # signed for another door id
        for payload in [*refusals.values(), other_door]:
            observer.publish(topic, payload)
        observer.wait(
            lambda: len(observer.on(f"{BASE}/event")) >= len(refusals) + 1, what="refusals"
        )
        # Each refusal is logged on the hub's thread, not in step with the events counted
        # above (the retained command's refusal is one of them): wait for every line.
        observer.wait(
            lambda: all(message in caplog.text for message in refusals), what="refusal lines"
        )
        time.sleep(0.3)
        assert door.pin_states == [False]  # nothing above opened the door

        good = signed("phone")
        observer.publish(topic, good)
        observer.wait(lambda: door.pin_states[:2] == [False, True], what="pulse", timeout=5)
        observer.publish(topic, good)  # the same command again: a replay
        observer.wait(lambda: "replayed command" in caplog.text, what="replay refused")
        observer.wait(lambda: door.pin_states == [False, True, False], what="relock")
        unlocks = [e for e in door.events() if e["type"] == "unlock"]
        assert len(unlocks) == 1
        assert unlocks[0]["reason"].startswith(f"remote; origin=mqtt:phone uid={os.getuid()}")

        # The hub publishes the door's unlock, and the replay's refusal, after the pin moved
        # and the refusal was logged: wait for both on the broker.
        def published(kind: str) -> list[dict]:
            return [
                e for e in (m.json() for m in observer.on(f"{BASE}/event")) if e["type"] == kind
            ]

        observer.wait(lambda: published("unlock"), what="unlock on MQTT")
        assert published("unlock")[0]["reason"].startswith("remote; origin=mqtt:phone")
        observer.wait(lambda: len(published("denied")) >= len(refusals) + 2, what="replay denied")
    finally:
        hub.stop()


def test_a_signed_command_accepted_before_a_restart_is_refused_after_it(
    broker: Broker, observer: Observer, door: Door, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The used nonces live in the hub's memory: a restarted hub accepted again, inside the
    30 s window, a command the previous run had accepted (captured on the way, replayed).
    Now a hub refuses any command signed before it started, and says so. Nothing published
    while no hub is connected reaches the next one either (clean start, and a session that
    ends with the connection)."""
    caplog.set_level(logging.INFO, logger="edge_app")
    topic = f"{BASE}/unlock"
    first = RunningHub(hub_settings(broker, tmp_path, door))
    try:
        observer.wait(lambda: availability(observer) == b"online", what="online")
        good = signed("phone")
        observer.publish(topic, good)
        observer.wait(lambda: door.pin_states == [False, True, False], what="pulse", timeout=5)
    finally:
        first.stop()
    observer.publish(topic, signed("while-away"))  # no hub subscribed: nobody gets it
    # Timestamps are whole seconds: the next hub must start in a later second than the
    # command's (a command of the second a hub starts in is accepted).
    while int(time.time()) <= good["ts"]:
        time.sleep(0.05)
    caplog.clear()
    second = RunningHub(hub_settings(broker, tmp_path, door))
    try:
        observer.wait(lambda: availability(observer) == b"online", what="online again")
        assert time.time() - good["ts"] < 30  # the replay below is inside the window
        observer.publish(topic, good)
        observer.wait(lambda: "before this hub started" in caplog.text, what="replay refused")
        time.sleep(0.3)
        assert door.pin_states == [False, True, False]
        lines = [record.getMessage() for record in caplog.records]
        refused = [line for line in lines if "before this hub started" in line]
        assert refused == [
            f"remote unlock refused topic={topic} origin=- reason='timestamp {good['ts']} is "
            "before this hub started: a command made before a hub restart is never accepted "
            "after it (send a new one)'"
        ]  # one: the command sent while no hub was connected never arrived
        assert [e for e in door.events() if e["type"] == "unlock"][-1]["reason"].startswith(
            "remote; origin=mqtt:phone"
        )

        def denied() -> list[str]:
            return [
                m.json()["reason"] for m in observer.on(f"{BASE}/event") if b"denied" in m.payload
            ]

        # Published after the refusal was logged (the line waited for above).
        observer.wait(
            lambda: any("before this hub started" in reason for reason in denied()),
            what="denied on MQTT",
        )

        time.sleep(UNLOCK_SPACING_SECONDS)  # the door spaces remote unlocks
        observer.publish(topic, signed("fresh"))  # signed now: opens the door
        observer.wait(lambda: door.pin_states[:4] == [False, True, False, True], what="pulse")
    finally:
        second.stop()


def test_remote_unlock_refused_by_a_door_that_does_not_allow_it(
    broker: Broker, observer: Observer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    closed = Door(make_daemon(tmp_path, allow_unlock=False, stale=1.0))
    frames = Frames(closed)
    hub = RunningHub(hub_settings(broker, tmp_path, closed))
    try:
        observer.wait(lambda: availability(observer) == b"online", what="online")
        observer.publish(f"{BASE}/unlock", signed())
        observer.wait(lambda: "remote unlock is disabled on this door" in caplog.text)
        assert closed.pin_states == [False]
    finally:
        hub.stop()
        frames.stop()
        closed.close()


def test_hub_before_the_door_and_through_a_broker_restart(
    broker: Broker, observer: Observer, tmp_path: Path
) -> None:
    config = hub_settings(broker, tmp_path)  # the door's socket does not exist yet
    hub = RunningHub(config)
    late_door = None
    frames = None
    try:
        observer.wait(lambda: availability(observer) == b"offline", what="offline, no door")
        state = observer.wait(lambda: observer.last(f"{BASE}/state"), what="state")
        assert json.loads(state)["door"] == "offline"
        daemon = make_daemon(tmp_path, allow_unlock=False, stale=1.0)
        assert daemon.config.hub.socket == config.hub.socket
        late_door = Door(daemon)
        frames = Frames(late_door)
        observer.wait(lambda: availability(observer) == b"online", what="online, door up")

        broker.stop()
        observer.messages.clear()
        broker.start()  # no persistence: the broker forgot every retained message
        observer.wait(lambda: availability(observer) == b"online", timeout=30, what="again")
        assert observer.on("homeassistant/event/edge_door_front/event/config")
        late_door.log.record("recognized", name="Bob", score=0.9, track=1)
        observer.wait(lambda: observer.on(f"{BASE}/event"), what="event after restart")
    finally:
        hub.stop()
        if frames is not None:
            frames.stop()
        if late_door is not None:
            late_door.close()


def test_broker_down_at_start_then_up(broker: Broker, door: Door, tmp_path: Path) -> None:
    broker.stop()
    hub = RunningHub(hub_settings(broker, tmp_path, door))
    try:
        time.sleep(1.5)
        assert hub.thread.is_alive() and not hub.bridge.connected.is_set()
        broker.start()
        assert hub.bridge.connected.wait(30), "hub did not connect once the broker came up"
    finally:
        hub.stop()


def test_wrong_password_is_reported_and_the_hub_keeps_trying(
    broker: Broker, door: Door, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_app")
    hub = RunningHub(hub_settings(broker, tmp_path, door, password="wrong"))
    try:
        wait_until(lambda: "mqtt connection refused" in caplog.text)
        assert "mqtt connection refused" in caplog.text, caplog.text
        assert "Not authorized" in caplog.text or "Bad user name or password" in caplog.text
        assert "check mqtt.username and mqtt.password_file" in caplog.text
        assert hub.thread.is_alive() and not hub.bridge.connected.is_set()
        assert door.client.status()["running"]  # the door is unaffected
    finally:
        hub.stop()


def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)


@contextlib.contextmanager
def broker_with(
    factory: pytest.TempPathFactory, certs: dict[str, Path], *settings: str
) -> Iterator[Broker]:
    """A broker of its own, with these lines added to its mosquitto.conf."""
    started = Broker(factory.mktemp("broker"), certs, settings=settings)
    started.start()
    try:
        yield started
    finally:
        started.stop()


def test_a_broker_that_keeps_closing_the_connection_is_reconnected_to_ever_more_slowly(
    tmp_path_factory: pytest.TempPathFactory,
    test_ca: dict[str, Path],
    door: Door,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by an audit: a broker whose max_packet_size is below the hub's discovery config
    accepts the hub, then closes the connection at that publish; paho starts its backoff
    afresh at each accepted connection, so the hub reconnected (and published everything
    again) every second, for ever, and nothing said why."""
    caplog.set_level(logging.INFO, logger="edge_app")

    def closed() -> list[str]:
        return [r.getMessage() for r in caplog.records if "mqtt disconnected" in r.getMessage()]

    with broker_with(tmp_path_factory, test_ca, "max_packet_size 800") as small:
        hub = RunningHub(lock_settings(small, tmp_path, door))  # the lock config: 900 bytes
        try:
            wait_until(lambda: len(closed()) >= 3, timeout=20)
        finally:
            hub.stop()
    waits = [re.search(r"backoff, (\d+) s more", line) for line in closed()[:3]]
    assert [int(w.group(1)) for w in waits if w] == [1, 2, 4], closed()
    assert re.search(
        r"mqtt broker .* takes packets of at most 800 bytes, less than the hub's discovery "
        r"config on homeassistant/\S+ \(\d+ bytes\): it closes the connection there; "
        r"raise its max_packet_size",
        caplog.text,
    )


def test_a_refusal_for_another_reason_than_the_login_is_not_blamed_on_it(
    tmp_path_factory: pytest.TempPathFactory,
    test_ca: dict[str, Path],
    door: Door,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by an audit: a broker that keeps no retained messages refuses the hub (its will
    is retained), and the hub said to check mqtt.username and mqtt.password_file."""
    with broker_with(tmp_path_factory, test_ca, "retain_available false") as strict:
        hub = RunningHub(hub_settings(strict, tmp_path, door))
        try:
            wait_until(lambda: "mqtt connection refused" in caplog.text)
        finally:
            hub.stop()
    assert (
        "reason='Retain not supported': the hub's availability and state are retained "
        "messages: let the broker keep them (Mosquitto's retain_available true)"
    ) in caplog.text
    assert "mqtt.password_file" not in caplog.text


def connect_failure_logged(config: Config, caplog: pytest.LogCaptureFixture) -> str:
    """The hub's log once it has failed to connect with `config` (it keeps retrying)."""
    caplog.set_level(logging.INFO, logger="edge_app")
    hub = RunningHub(config)
    try:
        deadline = time.monotonic() + 10
        while "mqtt cannot connect" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "mqtt cannot connect" in caplog.text
        assert not hub.bridge.connected.is_set()
        return caplog.text
    finally:
        hub.stop()


def test_wrong_ca_fails_the_tls_handshake(
    broker: Broker, door: Door, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "other").mkdir()
    other = make_ca(tmp_path / "other")  # a CA that did not sign the broker's certificate
    logged = connect_failure_logged(
        hub_settings(broker, tmp_path, door, tls_ca=str(other["ca"])), caplog
    )
    # The reason, not "down or unreachable": an admin can tell a wrong CA from a broker that
    # is off.
    assert (
        "the broker's certificate was refused (self-signed certificate in certificate chain): "
        "it must be for the name in mqtt.host and signed by the CA in mqtt.tls_ca"
    ) in logged, logged


def test_a_broker_that_is_not_there_is_named_as_such(
    broker: Broker, door: Door, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    closed = hub_settings(broker, tmp_path, door, tls=False, port=free_port())
    logged = connect_failure_logged(closed, caplog)
    assert "the broker refused the connection: is it running, and on mqtt.port?" in logged


def read_packet(sock: socket.socket) -> tuple[bytes, bytes]:
    """One whole MQTT packet from `sock`: its fixed header (type byte and remaining-length
    bytes) and its body. OSError when the peer closes first."""

    def exact(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise OSError("closed")
            data += chunk
        return data

    header = exact(1)
    length, shift = 0, 0
    while True:
        byte = exact(1)
        header += byte
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            return header, exact(length)


def hub_toml(broker: Broker, door: Door, tmp_path: Path, *mqtt_lines: str) -> Path:
    """A config file for an `edge-app hub` process on the broker's TLS port (hub_settings'
    credentials), with `mqtt_lines` added to its [mqtt] section."""
    config = hub_settings(broker, tmp_path, door).mqtt
    toml = tmp_path / "hub.toml"
    lines = [
        "[hub]",
        f'socket = "{door.path}"',
        "stale_seconds = 1.0",
        "[mqtt]",
        'host = "127.0.0.1"',
        f"port = {broker.tls_port}",
        f'username = "{USER}"',
        f'password_file = "{config.password_file}"',
        f'tls_ca = "{broker.certs["ca"]}"',
        'door_id = "front"',
        *mqtt_lines,
        "",
    ]
    toml.write_text("\n".join(lines))
    return toml


def test_last_will_when_the_hub_is_killed(
    broker: Broker, observer: Observer, door: Door, tmp_path: Path
) -> None:
    toml = hub_toml(broker, door, tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_app.cli", "hub", "--config", str(toml)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        observer.wait(lambda: availability(observer) == b"online", timeout=30, what="online")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        observer.wait(lambda: availability(observer) == b"offline", timeout=10, what="will")
        final = observer.on(f"{BASE}/availability")[-1]
        assert final.payload == b"offline"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_clear_discovery_removes_the_entities(
    broker: Broker, observer: Observer, door: Door, tmp_path: Path
) -> None:
    config = hub_settings(broker, tmp_path, door)
    hub = RunningHub(config)
    observer.wait(lambda: availability(observer) == b"online", what="online")
    hub.stop()
    cleared = clear_discovery(config.mqtt)
    # The five entities, and the strike as a lock (a configuration with an unlock code).
    assert len([t for t in cleared if t.startswith("homeassistant/")]) == 6
    assert "homeassistant/lock/edge_door_front/strike/config" in cleared
    late = Observer(broker)
    try:
        time.sleep(0.5)
        retained = [m for m in late.messages if m.retain]
        assert retained == [], [m.topic for m in retained]
    finally:
        late.close()


def lock_settings(broker: Broker, folder: Path, door: Door, **mqtt: Any) -> Config:
    """remote_unlock with an unlock code (and no HMAC key): the strike becomes a lock."""
    code_file = folder / "unlock.code"
    write_code_file(code_file, CODE)
    return hub_settings(
        broker, folder, door, unlock_secret_file="", unlock_code_file=str(code_file), **mqtt
    )


def lock_command(action: str = "UNLOCK", code: str = CODE, ts: float | None = None) -> str:
    """What Home Assistant's lock card publishes with the discovery's command_template."""
    stamp = int(time.time() if ts is None else ts)
    return json.dumps({"action": action, "code": code, "timestamp": stamp})


def strike_state(observer: Observer) -> str | None:
    last = observer.last(f"{BASE}/state")
    return None if last is None else json.loads(last)["strike"]


def strike_states(observer: Observer) -> list[str]:
    """Every strike state published so far: a 0.3 s pulse may be over before a poll sees it."""
    return [json.loads(m.payload)["strike"] for m in observer.on(f"{BASE}/state")]


def test_lock_entity_only_with_an_unlock_code(
    broker: Broker, observer: Observer, door: Door, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_app")
    node = "edge_door_front"
    lock_topic = f"homeassistant/lock/{node}/strike/config"
    sensor_topic = f"homeassistant/binary_sensor/{node}/strike/config"

    def retained_configs() -> dict[str, Any]:
        late = Observer(broker)
        try:
            late.wait(lambda: late.on(f"{BASE}/availability"), what="retained availability")
            time.sleep(0.3)
            return {m.topic: m.json() for m in late.messages if m.retain and "/config" in m.topic}
        finally:
            late.close()

    # Signed commands only (no code file): a read-only sensor, and the log says why.
    hub = RunningHub(hub_settings(broker, tmp_path, door))
    try:
        observer.wait(lambda: availability(observer) == b"online", what="online")
        configs = retained_configs()
        assert sensor_topic in configs and lock_topic not in configs
        assert (
            "lock entity off, the strike is a read-only sensor: mqtt.unlock_code_file is not set"
            in caplog.text
        )
    finally:
        hub.stop()

    # With a code: the lock replaces the sensor (whose retained config is cleared).
    hub = RunningHub(lock_settings(broker, tmp_path, door))
    try:
        observer.wait(lambda: any(m.payload for m in observer.on(lock_topic)), what="lock")
        observer.wait(lambda: availability(observer) == b"online", what="online again")
        configs = retained_configs()
        assert lock_topic in configs and sensor_topic not in configs
        lock = configs[lock_topic]
        assert lock["command_topic"] == f"{BASE}/lock/set"
        assert lock["code_format"] == r"^\d{6,12}$"
        assert "{{ code }}" in lock["command_template"]
        assert "now().timestamp()" in lock["command_template"]
        assert lock["state_topic"] == f"{BASE}/state" and lock["retain"] is False
        assert "lock entity on: unlock by code" in caplog.text
    finally:
        hub.stop()


def test_lock_card_unlock_by_code(
    broker: Broker, observer: Observer, door: Door, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The right code with a fresh timestamp pulses the relay once; a retained command, a
    stale timestamp, an exact replay and wrong codes do not, and wrong codes lock out."""
    caplog.set_level(logging.INFO, logger="edge_app")
    topic = f"{BASE}/lock/set"
    # A valid command left retained before the hub subscribes: delivered with the retain
    # flag, and ignored.
    observer.publish(topic, lock_command(), retain=True)
    hub = RunningHub(lock_settings(broker, tmp_path, door))
    # Eleven refusals within seconds: each published, as if they came 10 s apart (past 10 in
    # 10 s they are counted into the next one: test_mqtt_audit.py's flood test).
    hub.bridge._refusals.every = 0.0

    def refused(why: str) -> bool:
        """Whether a `denied` event says `why` (each refusal is one here)."""
        return any(why in (m.json().get("reason") or "") for m in observer.on(f"{BASE}/event"))

    try:
        observer.wait(lambda: availability(observer) == b"online", what="online")
        observer.wait(lambda: "retained command ignored" in caplog.text, what="retained refusal")
        observer.publish(topic, b"", retain=True)  # clear it
        assert strike_state(observer) == "locked"

        observer.publish(topic, lock_command(ts=time.time() - 120))
        observer.wait(lambda: refused("outside the 30 s window"), what="stale refused")
        # A timestamp too large for a float and deep nesting: refused before any code check,
        # and the hub keeps listening (the good command below still opens the door).
        observer.publish(topic, lock_command(ts=int("9" * 400)))
        observer.wait(lambda: refused("an integer of 400 digits"), what="huge ts refused")
        observer.publish(topic, b"[" * 1000)
        observer.wait(lambda: refused("JSON nested too deeply"), what="nesting refused")
        observer.publish(topic, lock_command("LOCK"))
        observer.wait(lambda: "the strike relocks by itself" in caplog.text, what="lock no-op")
        time.sleep(0.3)
        assert door.pin_states == [False]  # nothing above opened the door

        good = lock_command()
        observer.publish(topic, good)
        observer.wait(lambda: door.pin_states[:2] == [False, True], what="pulse", timeout=5)
        observer.wait(lambda: "unlocked" in strike_states(observer), what="lock card unlocked")
        observer.publish(topic, good)  # the same command again: an exact replay
        observer.wait(lambda: refused("replayed command"), what="replay refused")
        observer.wait(lambda: door.pin_states == [False, True, False], what="relock")
        observer.wait(lambda: strike_state(observer) == "locked", what="lock card locked")
        unlocks = [e for e in door.events() if e["type"] == "unlock"]
        assert len(unlocks) == 1
        assert unlocks[0]["reason"].startswith(f"remote; origin={LOCK_ORIGIN} uid={os.getuid()}")

        # Wrong codes: each refused and counted; the fifth in a minute locks remote unlock
        # out, and then even the right code (a new timestamp, not a replay) is refused.
        for number in range(1, MAX_WRONG + 1):
            observer.publish(topic, lock_command(code=f"00000{number}"))

            def counted(n: int = number) -> bool:
                return refused(f"wrong code ({n} of {MAX_WRONG}")

            observer.wait(counted, what=f"wrong code {number}")
        assert f"remote unlock locked out for {LOCKOUT:.0f} s" in caplog.text
        time.sleep(1.1)  # a timestamp the accepted command did not use
        observer.publish(topic, lock_command())
        observer.wait(lambda: refused("locked out after 5 wrong codes"), what="lockout")
        time.sleep(0.3)
        assert door.pin_states == [False, True, False]
        assert len([e for e in door.events() if e["type"] == "unlock"]) == 1

        # Every refusal is a denied event on MQTT naming the lock card as its origin.
        denied = [m.json() for m in observer.on(f"{BASE}/event") if m.json()["type"] == "denied"]
        reasons = [d["reason"] for d in denied]
        assert all(r.endswith(f"; origin={LOCK_ORIGIN}") for r in reasons), reasons
        for part in ("retained", "outside the", "replayed", "wrong code", "locked out"):
            assert any(part in r for r in reasons), (part, reasons)
        assert all(CODE not in m.payload.decode() for m in observer.on(f"{BASE}/event"))
    finally:
        hub.stop()


@pytest.mark.slow
@NEEDS_LFW_AND_MODELS[0]
@NEEDS_LFW_AND_MODELS[1]
def test_whole_door_on_a_clip_reaches_mqtt_in_order(
    broker: Broker, observer: Observer, tmp_path: Path
) -> None:
    """The real daemon on an LFW clip (two visits of an enrolled person, 5.5 s apart): every
    event it records reaches MQTT, in the same order, and its availability follows it."""
    from gpiozero.pins.mock import MockFactory

    from edge_app.daemon import Daemon
    from edge_app.engine import Engine
    from edge_app.enroll import enroll_photos

    engine = Engine.open(backend="cpu")
    gallery = tmp_path / "gallery.db"
    enroll_photos(gallery, engine, "Ricardo Lagos", [lfw("Ricardo_Lagos", n) for n in (1, 2, 3)])
    clip = build_clip(
        tmp_path / "visits.avi",
        [
            Visit(lfw("Ricardo_Lagos", 9), start=0.5, stay=2.5),
            Visit(lfw("Ricardo_Lagos", 17), start=6.0, stay=2.5),
        ],
    )
    socket_path = tmp_path / "run" / "door.sock"
    config = parse_config(
        {
            "camera": {"source": str(clip.path)},
            "gallery": {"path": str(gallery)},
            "gpio": {"pin": PIN, "pulse_seconds": 0.5, "factory": "mock"},
            "events": {"db": "", "jsonl": str(tmp_path / "events.jsonl")},
            "hub": {"socket": str(socket_path), "stale_seconds": 2.0},
        }
    )
    hub_config = hub_settings(broker, tmp_path)
    assert hub_config.hub.socket == socket_path

    class WaitForHub(Daemon):
        """Holds the first frame until the hub's event stream is attached: a clip plays as
        fast as it is processed, and the visit must not be over before anyone listens."""

        def _next_frame(self) -> Frame | None:
            deadline = time.monotonic() + 30
            while self.control is not None and not self.control.subscribers:
                assert time.monotonic() < deadline, "the hub never subscribed"
                time.sleep(0.02)
            return super()._next_frame()

    hub = RunningHub(hub_config)
    try:
        daemon = WaitForHub(config, engine=engine, pin_factory=MockFactory())
        assert daemon.run() == 0
        recorded = [
            json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()
        ]
        kinds = [e["type"] for e in recorded]
        assert kinds.count("unlock") == 1 and "recognized" in kinds and "denied" in kinds
        published = observer.wait(
            lambda: (
                len(observer.on(f"{BASE}/event")) >= len(recorded) and observer.on(f"{BASE}/event")
            ),
            what="every event",
        )
        assert [(m.json()["type"], m.json()["name"], m.json()["track"]) for m in published] == [
            (e["type"], e["name"], e["track"]) for e in recorded
        ]
        assert b"online" in [m.payload for m in observer.on(f"{BASE}/availability")]
        # The clip ended and the door stopped: its socket is gone, so it is unavailable.
        observer.wait(lambda: availability(observer) == b"offline", what="offline after")
        assert not socket_path.exists()
    finally:
        hub.stop()
