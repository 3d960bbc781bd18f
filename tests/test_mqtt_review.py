"""Findings of a review of the hub's MQTT side, each checked against its fix: a broker
password file that is not UTF-8 is refused without quoting a byte of the password; a
retained last person planted with a huge name is replaced without being normalised on paho's
network thread; refusals a burst left unsaid when the broker went away are said once the hub
is back, not dropped. Real Mosquitto (tests/mqtt_support.py's broker) where a broker is needed."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from mqtt_support import Broker, FedDoor, Observer
from test_mqtt import BASE, RunningHub, availability, hub_settings, lock_command
from test_mqtt_audit import code_hub, wait_for
from test_mqtt_last_person import (
    NOBODY,
    TOPIC,
    ServiceHub,
    config_with,
    make_gallery,
    retained,
    wait_for_name,
)

from edge_app.config import parse_config
from edge_app.errors import UserError
from edge_app.gallery import MAX_NAME_LENGTH
from edge_app.hub import enrolled
from edge_app.hub import mqtt as hub_mqtt
from edge_app.hub.code import MAX_WRONG
from edge_app.hub.door import DoorLink
from edge_app.hub.mqtt import REFUSALS_LOGGED
from edge_app.hub.signing import read_secret


def test_a_secret_file_that_is_not_utf8_is_refused_without_quoting_the_secret(
    tmp_path: Path,
) -> None:
    """A broker password saved in Latin-1 ("pässwörd"): the refusal quoted the codec's
    words, "can't decode byte 0xe4 in position 1", a byte of the password and where it is,
    into the journal."""
    path = tmp_path / "mqtt.pass"
    path.write_bytes("pässwörd\n".encode("latin-1"))
    path.chmod(0o600)
    with pytest.raises(UserError) as caught:
        read_secret(path, "mqtt.password_file")
    message = str(caught.value)
    assert (
        message == f"mqtt.password_file: {path} is not UTF-8 text; write the secret again in UTF-8"
    )
    assert "0xe4" not in message and "position" not in message


def test_a_planted_last_person_with_a_huge_name_is_replaced_without_comparing_it(
    broker: Broker,
    observer: Observer,
    door: FedDoor,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A retained last person planted with a name of 30,000 combining marks (60 kB, under
    the hub's MQTT 5 packet limit): comparing it with the gallery's names normalised it, in
    time quadratic in its marks, on paho's network thread (a second here, more on a Pi; over
    MQTT 3.1.1 a megabyte held that thread for minutes, past the keepalive). No enrolled
    name is that long, so the hub never published it: it is replaced, never normalised."""
    seen: list[int] = []
    name_key = enrolled.name_key

    def measured(name: str) -> str:
        seen.append(len(name))
        return name_key(name)

    monkeypatch.setattr(enrolled, "name_key", measured)
    gallery = make_gallery(tmp_path / "gallery.db", "Alice")
    huge = "A" + "\u0301\u0316" * 15_000
    planted = {"name": huge, "score": 0.9, "type": "unlock", "time": "2025-01-01T08:00:00+00:00"}
    payload = json.dumps(planted, ensure_ascii=False).encode()
    assert len(payload) < hub_mqtt.MAX_PACKET_BYTES - 1000  # it reaches the hub over MQTT 5
    observer.publish(TOPIC, payload, retain=True)
    hub = ServiceHub(config_with(broker, tmp_path, door, gallery))
    try:
        wait_for_name(observer, None, "the planted last person replaced")
        assert retained(broker) == NOBODY
    finally:
        hub.stop()
    assert seen, "the gallery's names were never compared"
    assert max(seen) <= MAX_NAME_LENGTH


def test_refusals_left_unsaid_when_the_broker_went_away_are_said_when_it_is_back(
    broker: Broker,
    observer: Observer,
    door: FedDoor,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """10 junk commands, then 5 more refusals only counted (past 10 in 10 s); the broker
    goes away before the heartbeat may say them. The heartbeat logged them and published
    their `denied` event into no connection (_publish drops it), its count reset: Home
    Assistant's "remote unlock refused" automation never heard of the 5. They are kept, as
    with a full queue, and said once the hub is connected again."""
    monkeypatch.setattr(hub_mqtt, "STATE_EVERY", 0.3)
    caplog.set_level(logging.WARNING, logger="edge_app")
    hub = RunningHub(hub_settings(broker, tmp_path, door))
    try:
        observer.wait(lambda: availability(observer) == b"online", what="online")
        for _ in range(REFUSALS_LOGGED):
            observer.publish(f"{BASE}/unlock", b"not json")
        for _ in range(5):
            observer.publish(f"{BASE}/unlock", json.dumps({"ts": 1, "nonce": "x" * 16}))
        observer.wait(lambda: len(observer.on(f"{BASE}/event")) >= REFUSALS_LOGGED, what="10")
        wait_for(lambda: "exactly" in hub.bridge._last_unsaid, what="the 5 refused")

        broker.stop()
        wait_for(lambda: not hub.bridge.connected.is_set(), what="the hub disconnected")
        hub.bridge._refusals.every = 0.0  # as if REFUSAL_LOG_SECONDS had passed
        wait_for(
            lambda: "remote unlock refused 5 more time(s), not logged one by one" in caplog.text,
            what="the heartbeat's line while the broker is away",
        )
        observer.messages.clear()
        broker.start()
        observer.wait(lambda: availability(observer) == b"online", timeout=30, what="back")

        def said() -> bool:
            return any(
                (m.json().get("reason") or "").startswith(
                    "remote unlock refused 5 more time(s), not published one by one; the "
                    "last: command must be an object with exactly"
                )
                for m in observer.on(f"{BASE}/event")
            )

        observer.wait(said, what="the 5 refusals said after the reconnect")
        assert door.pin_states == [False]
    finally:
        hub.stop()


def test_the_last_person_published_is_the_one_at_publish_time(tmp_path: Path) -> None:
    """The last person was read before the publishing lock was taken (the state is read
    under it): Home Assistant's `online` (paho's thread) read Alice and waited for the lock
    while a door event's thread set Bob and published him; Alice was then published after
    Bob, and stayed retained, Home Assistant showing her, until the next person came."""
    import threading

    import paho.mqtt.client as paho

    config = parse_config({"mqtt": {"host": "127.0.0.1", "door_id": "front"}})
    bridge = hub_mqtt.MqttBridge(config.mqtt, DoorLink(tmp_path / "door.sock"))
    published: list[tuple[str, str]] = []

    def publish(topic: str, payload: str, qos: int = 0, retain: bool = False) -> Any:
        published.append((topic, payload))
        info = paho.MQTTMessageInfo(len(published))
        info.rc = paho.MQTT_ERR_SUCCESS
        return info

    bridge.client.publish = publish  # type: ignore[method-assign, assignment]
    bridge.connected.set()
    alice = {"name": "Alice", "score": 0.8, "type": "recognized", "time": "t1"}
    bob = {"name": "Bob", "score": 0.9, "type": "unlock", "time": "t2"}
    bridge._last_person = alice
    lock = bridge._publish_lock
    waiting = threading.Event()

    class Announced:
        """The publishing lock, saying when a thread is about to wait for it."""

        def __enter__(self) -> None:
            waiting.set()
            lock.acquire()

        def __exit__(self, *exc: object) -> None:
            lock.release()

    with lock:  # a door event's thread, publishing
        bridge._publish_lock = Announced()  # type: ignore[assignment]
        resend = threading.Thread(target=bridge._publish_last_person)  # Home Assistant online
        resend.start()
        assert waiting.wait(10)
        bridge._last_person = bob  # what that door event's thread set and published
        published.append((TOPIC, json.dumps(bob)))
    resend.join(10)
    assert not resend.is_alive()
    people = [json.loads(payload) for topic, payload in published if topic == TOPIC]
    assert people[-1] == bob, people


def test_wrong_codes_are_said_one_by_one_after_a_flood_on_the_other_command_topic(
    broker: Broker,
    observer: Observer,
    door: FedDoor,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Refusals from both command topics shared one budget of 10 published in 10 s: 10 junk
    messages on <base>/unlock, then guesses at the code on <base>/lock/set, and the guesses
    and the lock-out they started were only counted, said at best as "N more refused" with
    the last reason (junk again if the flood ended with junk), never as wrong codes: Home
    Assistant's automation never said someone was guessing (the docs promise each try as a
    `denied` event). Wrong codes are few (the lock-outs bound them): each is said."""
    caplog.set_level(logging.WARNING, logger="edge_app")
    hub = code_hub(broker, tmp_path, door)
    try:
        observer.wait(lambda: availability(observer) == b"online", what="online")
        for _ in range(REFUSALS_LOGGED):
            observer.publish(f"{BASE}/unlock", b"not json")
        observer.wait(lambda: len(observer.on(f"{BASE}/event")) >= REFUSALS_LOGGED, what="10")
        for number in range(1, MAX_WRONG + 1):
            observer.publish(f"{BASE}/lock/set", lock_command(code=f"00000{number}"))
        observer.publish(f"{BASE}/unlock", b"not json")  # the flood ends with junk

        def reasons() -> list[str]:
            return [m.json().get("reason") or "" for m in observer.on(f"{BASE}/event")]

        observer.wait(
            lambda: sum("wrong code (" in r for r in reasons()) == MAX_WRONG,
            what="each wrong code said",
        )
        assert any(
            f"wrong code ({MAX_WRONG} of {MAX_WRONG} in 60 s; locked out" in r for r in reasons()
        )
        assert door.pin_states == [False]
    finally:
        hub.stop()
