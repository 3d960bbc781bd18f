"""The retained last person never keeps naming someone removed from the gallery.

A real Mosquitto (tests/conftest.py's fixtures) and the hub as `edge-app hub` builds it
(Hub.from_config, which hands the bridge the gallery's path). The retained
`<base>/last_person` survives a broker restart (persistence) and a hub restart, and a running
hub re-sends it from memory; once the person it names is no longer enrolled it must become
the neutral NOBODY, whether they were removed while the hub ran or while it was down.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mqtt_support import Broker, FedDoor, Observer
from people import samples
from test_mqtt import BASE, hub_settings

from edge_app.config import Config, GalleryConfig
from edge_app.gallery import Gallery
from edge_app.hub import Hub, mqtt
from edge_app.hub.mqtt import MqttBridge

TOPIC = f"{BASE}/last_person"
BEAT = 0.3  # the heartbeat (STATE_EVERY, 30 s in service) in these tests
# What replaces a last person no longer enrolled (edge_app.hub.mqtt.NOBODY; spelled out, so
# that this file runs, and fails, against a hub without it): Home Assistant's sensor shows
# its unknown state for it.
NOBODY = {"name": None, "score": None, "type": None, "time": None}


@pytest.fixture(autouse=True)
def fast_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mqtt, "STATE_EVERY", BEAT)


def make_gallery(path: Path, *names: str) -> Path:
    with Gallery.open(path, create=True) as gallery:
        for seed, name in enumerate(names):
            gallery.enroll(name, samples(2, seed + 1))
    return path


def remove(path: Path, name: str) -> None:
    with Gallery.open(path) as gallery:
        assert gallery.remove([name]) > 0  # the samples removed


class ServiceHub:
    """`edge-app hub` with the MQTT bridge only, built as the command builds it."""

    def __init__(self, config: Config) -> None:
        self.hub = Hub.from_config(config)
        (bridge,) = self.hub.components
        assert isinstance(bridge, MqttBridge)
        self.bridge = bridge
        self.thread = threading.Thread(target=self.hub.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.hub.stop()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def config_with(broker: Broker, folder: Path, door: FedDoor, gallery: Path) -> Config:
    config = hub_settings(broker, folder, door)
    return dataclasses.replace(config, gallery=GalleryConfig(path=gallery))


def person(payload: bytes | None) -> Any:
    return None if not payload else json.loads(payload)


def retained(broker: Broker) -> Any:
    """The last person the broker keeps, as a client that connects now (Home Assistant
    after its restart) gets it; None when it keeps none."""
    late = Observer(broker)
    try:
        # The retained message comes before anything live; wait for the hub's state (retained
        # too, and always there while a hub ran) to know the broker has sent what it keeps.
        late.wait(lambda: late.on(f"{BASE}/state"), what="retained state")
        found = [m for m in late.on(TOPIC) if m.retain]
        return person(found[0].payload) if found else None
    finally:
        late.close()


def wait_for_name(observer: Observer, name: str | None, what: str) -> None:
    observer.wait(
        lambda: (p := person(observer.last(TOPIC))) is not None and p["name"] == name, what=what
    )


def beats(count: int = 3) -> None:
    """Let the heartbeat, which reads the gallery, run `count` times."""
    time.sleep(count * BEAT + 0.2)


def test_a_person_removed_while_the_hub_runs_is_no_longer_the_last_person(
    broker: Broker, observer: Observer, door: FedDoor, tmp_path: Path
) -> None:
    gallery = make_gallery(tmp_path / "gallery.db", "Alice", "Bob")
    hub = ServiceHub(config_with(broker, tmp_path, door, gallery))
    try:
        observer.wait(lambda: observer.last(f"{BASE}/availability") == b"online", what="online")
        door.log.record("recognized", name="Alice", score=0.81, track=3)
        wait_for_name(observer, "Alice", "Alice as the last person")
        beats()
        assert person(observer.last(TOPIC))["name"] == "Alice"  # enrolled: kept

        remove(gallery, "Alice")
        wait_for_name(observer, None, "the last person replaced once Alice is removed")
        assert person(observer.last(TOPIC)) == NOBODY
        assert retained(broker) == NOBODY

        # Cleared by hand, then Home Assistant comes online: what the hub re-sends from
        # memory names nobody either.
        count = len(observer.on(TOPIC))
        observer.publish(TOPIC, b"", retain=True)
        observer.publish("homeassistant/status", "online")
        observer.wait(
            lambda: any(m.payload for m in observer.on(TOPIC)[count:]), what="last person re-sent"
        )
        assert all(person(m.payload) in (None, NOBODY) for m in observer.on(TOPIC)[count:])
        assert retained(broker) == NOBODY

        # Someone still enrolled is the last person again as usual.
        door.log.record("unlock", name="Bob", score=0.9, track=4)
        wait_for_name(observer, "Bob", "Bob as the last person")
        beats()
        assert retained(broker)["name"] == "Bob"
    finally:
        hub.stop()


def test_a_retained_last_person_removed_while_the_hub_was_down_is_replaced_at_start(
    broker: Broker, observer: Observer, door: FedDoor, tmp_path: Path
) -> None:
    gallery = make_gallery(tmp_path / "gallery.db", "Alice", "Bob")
    config = config_with(broker, tmp_path, door, gallery)
    # What a hub left before it stopped (and a persistent broker keeps through restarts).
    bob = {"name": "Bob", "score": 0.9, "type": "unlock", "time": "2025-01-01T08:00:00+00:00"}
    observer.publish(TOPIC, bob, retain=True)
    hub = ServiceHub(config)
    try:
        observer.wait(lambda: observer.last(f"{BASE}/availability") == b"online", what="online")
        beats()
        assert retained(broker) == bob  # still enrolled: kept through the hub's restart
    finally:
        hub.stop()

    alice = {**bob, "name": "Alice"}
    observer.publish(TOPIC, alice, retain=True)
    remove(gallery, "Alice")  # while no hub runs
    hub = ServiceHub(config)
    try:
        wait_for_name(observer, None, "the retained Alice replaced at the hub's start")
        assert retained(broker) == NOBODY
    finally:
        hub.stop()
    assert retained(broker) == NOBODY


def test_enrolled_names_follow_the_gallery(tmp_path: Path) -> None:
    from edge_app.hub.enrolled import EnrolledNames

    path = tmp_path / "gallery.db"
    names = EnrolledNames(path)
    assert names.knows("Alice") is None  # never read: nothing is known
    names.refresh()
    assert names.knows("Alice") is False  # no gallery: nobody is enrolled
    make_gallery(path, "Alice", "Bob")
    assert names.refresh() is True
    assert names.knows("Alice") and names.knows("ALICE ") and names.knows("Bob")
    assert names.refresh() is False  # unchanged: not read again
    remove(path, "Alice")
    assert names.refresh() is True
    assert names.knows("Alice") is False and names.knows("Bob")
    checked = names.checked
    path.unlink()
    path.write_bytes(b"not a gallery" * 100)
    assert names.refresh() is False  # unreadable: the names last read are kept
    assert names.checked == checked and names.knows("Bob")
    names.close()


def test_a_gallery_the_hub_cannot_read_is_logged_in_the_hubs_words(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A review: the hub logged the command line's advice for a gallery.path naming no
    gallery ("pass --db ..."), a flag the hub does not take; it names the config's key."""
    from edge_app.hub.enrolled import EnrolledNames

    path = tmp_path / "gallery.db"
    path.write_text("a note, not a gallery\n" * 10)
    names = EnrolledNames(path)
    caplog.set_level(logging.WARNING, "edge_app.hub.enrolled")
    assert names.refresh() is False and names.knows("Alice") is None
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert f"{path} is not an SQLite database" in logged
    assert "set [gallery] path in the hub's config" in logged and "--db" not in logged
    names.close()


def test_the_heartbeat_re_sends_the_availability_with_the_state(
    broker: Broker, observer: Observer, door: FedDoor, tmp_path: Path
) -> None:
    """Found by an audit: an `offline` dropped with a full queue (a flood of commands) was
    never sent again, and Home Assistant showed a stopped door available; only the state was
    re-sent each STATE_EVERY."""
    gallery = make_gallery(tmp_path / "gallery.db", "Alice")
    hub = ServiceHub(config_with(broker, tmp_path, door, gallery))
    try:
        observer.wait(lambda: observer.last(f"{BASE}/availability") == b"online", what="online")
        before = len(observer.on(f"{BASE}/availability"))
        beats(3)
        sent = observer.on(f"{BASE}/availability")
        assert len(sent) >= before + 2
        assert all(m.payload == b"online" for m in sent[before:])
    finally:
        hub.stop()
