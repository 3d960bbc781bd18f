"""Findings of the Home Assistant / MQTT audit (a real Mosquitto and Home Assistant core),
each checked against its fix: a plain connection to the broker's TLS port says why it fails;
a clean hub stop leaves a retained state that says nothing is known of the door (not the
last live one, which Home Assistant shows again after its restart), and a connecting hub
sends its state before `online`; an empty message on a
command topic (clearing a retained one) is no refused command; another door publishing this
door's Home Assistant device is named; a TLS file error names only the keys that are set.
Real Mosquitto (tests/mqtt_support.py's broker, with its openssl-made test CA) where a broker
is needed."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jinja2
import pytest
from mqtt_support import USER, Broker, FedDoor, Observer
from test_mqtt import BASE, CODE, RunningHub, availability, hub_settings

from edge_app.config import parse_config
from edge_app.hub.code import write_code_file
from edge_app.hub.discovery import Topics, entities, retired
from edge_app.hub.door import DoorLink
from edge_app.hub.mqtt import REFUSALS_LOGGED, MqttBridge, MqttError, make_client

CLOSED_EARLY = "the connection ended before the broker answered"


def wait_for(check: Any, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or check}")
        time.sleep(0.05)


def test_a_plain_connection_to_the_tls_port_says_why_it_fails(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No tls_ca, and the broker's TLS port (the docs' 8883 with tls_ca forgotten): the TCP
    connection is made, Mosquitto fails the TLS handshake on the CONNECT ("wrong version
    number" in its log) and closes it. The hub used to log nothing at all after "mqtt
    connecting"; it must say what happened and what to check, once, not at every retry."""
    caplog.set_level(logging.INFO, logger="edge_app")
    config = hub_settings(broker, tmp_path, tls=False, port=broker.tls_port)
    bridge = MqttBridge(config.mqtt, DoorLink(tmp_path / "door.sock"))
    closed: list[float] = []
    on_disconnect = bridge._on_disconnect

    def counted(*args: Any) -> None:
        closed.append(time.monotonic())
        on_disconnect(*args)

    bridge.client.on_disconnect = counted
    bridge.start()
    try:
        wait_for(lambda: CLOSED_EARLY in caplog.text, what="the closed-early line")
        lines = [r.getMessage() for r in caplog.records if CLOSED_EARLY in r.getMessage()]
        assert re.fullmatch(
            rf"mqtt cannot connect host=127\.0\.0\.1 port={broker.tls_port}: {CLOSED_EARLY} "
            r"\(reason='[^']+'\): a TLS port without mqtt\.tls_ca, a broker that refuses this "
            r"client, or one that never answers; retrying with backoff held_back=0",
            lines[0],
        ), lines[0]
        # paho retries after 1 s and 2 s more: the broker closed each, the journal got one line.
        wait_for(lambda: len(closed) >= 3, timeout=10, what="two retries")
        assert len([r for r in caplog.records if CLOSED_EARLY in r.getMessage()]) == 1
        assert not bridge.connected.is_set()
    finally:
        bridge.stop()


def test_a_refused_login_is_not_reported_as_a_closed_connection(
    broker: Broker, door: FedDoor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker that answers (a CONNACK refusing the password) and then closes: its own line,
    which names the credentials, and not the closed-early one as well."""
    caplog.set_level(logging.INFO, logger="edge_app")
    hub = RunningHub(hub_settings(broker, tmp_path, door, password="wrong"))
    try:
        wait_for(lambda: "mqtt connection refused" in caplog.text, what="refused line")
        time.sleep(1.5)  # a retry
        assert CLOSED_EARLY not in caplog.text
    finally:
        hub.stop()


def render(template: str, payload: str) -> str:
    """A discovery value template rendered against a state payload (Home Assistant's MQTT
    templates are Jinja with `value_json`; tests/test_home_assistant.py uses its own)."""
    return jinja2.Environment().from_string(template).render(value_json=json.loads(payload))


def test_a_clean_stop_leaves_a_state_that_says_nothing_is_known(
    broker: Broker, observer: Observer, door: FedDoor, tmp_path: Path
) -> None:
    """Home Assistant re-reads retained messages after its restart and restarts the
    diagnostics' expire_after for them: a stopped hub's last live state (door online, camera
    OK, maybe the strike open) would show for 90 s while nothing reports the door. A clean
    stop replaces it with the door offline, its camera unknown and the strike locked, then
    says offline."""
    hub = code_hub(broker, tmp_path, door)
    try:
        observer.wait(lambda: availability(observer) == b"online", what="online")
        # Online once the door answers; its camera is "ok" once its first frames are in.
        live = observer.wait(
            lambda: (
                (s := json.loads(observer.last(f"{BASE}/state") or "{}")).get("camera") == "ok"
                and s
            ),
            what="camera ok",
        )
        assert live["door"] == "online"
        # A pulse in progress when the hub stops: the strike must not stay unlocked.
        door.log.record("unlock", name="Alice", score=0.8, track=1)
        observer.wait(
            lambda: json.loads(observer.last(f"{BASE}/state") or "{}").get("strike") == "unlocked",
            what="strike unlocked",
        )
    finally:
        hub.stop()

    late = Observer(broker)  # Home Assistant after a restart: the retained messages only
    try:
        late.wait(
            lambda: late.on(f"{BASE}/state") and late.on(f"{BASE}/availability"), what="retained"
        )
        time.sleep(0.3)
        assert [m.payload for m in late.on(f"{BASE}/availability")] == [b"offline"]
        [retained] = late.on(f"{BASE}/state")
        assert retained.retain
    finally:
        late.close()
    state = retained.json()
    assert state["door"] == "offline" and state["camera"] == "unknown"
    assert state["strike"] == "locked" and state["problem"] == (
        "edge-app hub stopped: nothing reports this door until it runs again"
    )
    assert [state[k] for k in ("source", "backend", "gallery_people", "liveness")] == [None] * 4
    # The same fields as a live state: the discovery templates read it as they read any.
    assert set(state) == set(live)
    # What the final state is was published before the availability said offline.
    order = [
        m.topic for m in observer.messages if m.topic in (f"{BASE}/state", f"{BASE}/availability")
    ]
    assert order[-2:] == [f"{BASE}/state", f"{BASE}/availability"], order[-4:]

    # Home Assistant's entities on that state: door process off (disconnected), camera
    # unknown ("None", Home Assistant's payload for it: nothing is known), the strike locked,
    # with the lock and the read-only sensor.
    topics = Topics.of(hub.bridge.settings)
    configs = {**entities(topics, lock=True), **entities(topics, lock=False)}
    shown = {
        topic.split("/")[1] + "/" + topic.split("/")[3]: render(
            c["value_template"], retained.payload.decode()
        )
        for topic, c in configs.items()
        if c.get("state_topic") == topics.state
    }
    assert shown == {
        "lock/strike": "LOCKED",
        "binary_sensor/strike": "OFF",
        "binary_sensor/door": "OFF",
        "binary_sensor/camera": "None",
    }


def test_the_state_comes_before_the_availability(
    broker: Broker, observer: Observer, door: FedDoor, tmp_path: Path
) -> None:
    """A hub killed mid-pulse leaves `"strike": "unlocked"` retained. When a hub connects
    (and when the door comes back), its fresh state is sent before `online`, so the strike
    becomes available with it, never with the stale one."""
    hub = RunningHub(hub_settings(broker, tmp_path, door))
    try:
        observer.wait(lambda: availability(observer) == b"online", what="online")
    finally:
        hub.stop()
    sent = [m for m in observer.messages if m.topic in (f"{BASE}/state", f"{BASE}/availability")]
    # Each availability after a state (the connect's, then the door's becoming healthy).
    for index, message in enumerate(sent):
        if message.topic == f"{BASE}/availability":
            assert index > 0 and sent[index - 1].topic == f"{BASE}/state", [
                (m.topic, m.payload[:40]) for m in sent
            ]


def code_hub(broker: Broker, tmp_path: Path, door: FedDoor) -> RunningHub:
    """A hub whose Home Assistant lock takes the code CODE."""
    code_file = tmp_path / "unlock.code"
    write_code_file(code_file, CODE)
    return RunningHub(hub_settings(broker, tmp_path, door, unlock_code_file=str(code_file)))


def test_an_empty_message_on_a_command_topic_is_ignored_quietly(
    broker: Broker,
    observer: Observer,
    door: FedDoor,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`mosquitto_pub -r -n -t <base>/unlock` deletes a retained message (what the hub's
    "retained command ignored" asks for): subscribers get it as an empty live message. It is
    no command, so no `denied` event (which fires the documented "remote unlock refused"
    notification): only a debug line."""
    caplog.set_level(logging.DEBUG, logger="edge_app")
    hub = code_hub(broker, tmp_path, door)
    try:
        observer.wait(lambda: availability(observer) == b"online", what="online")
        for topic in (f"{BASE}/unlock", f"{BASE}/lock/set"):
            observer.publish(topic, b"", retain=True)  # a retained message cleared
            observer.publish(topic, b"")
        # Then a real (bad) command on each: messages are handled in order, so once these are
        # refused, the empty ones before them were handled.
        observer.publish(f"{BASE}/unlock", b"not json")
        observer.publish(f"{BASE}/lock/set", b"not json")
        observer.wait(lambda: len(observer.on(f"{BASE}/event")) >= 2, what="two refusals")
        time.sleep(0.3)
        denied = observer.on(f"{BASE}/event")
        assert len(denied) == 2, [m.payload for m in denied]
        assert all(m.json()["type"] == "denied" for m in denied)
        for topic in (f"{BASE}/unlock", f"{BASE}/lock/set"):
            ignored = f"mqtt empty message ignored topic={topic} (a retained one cleared)"
            lines = [r for r in caplog.records if r.getMessage() == ignored]
            assert len(lines) == 2 and all(r.levelno == logging.DEBUG for r in lines)
        assert door.pin_states == [False]
    finally:
        hub.stop()


def test_a_flood_of_refused_commands_is_logged_a_few_lines_at_a_time_with_a_count(
    broker: Broker,
    observer: Observer,
    door: FedDoor,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by fuzzing: each refused command was a warning line (2,000 bad messages: 2,002
    lines in the journal). Found by an audit: each was also a `denied` event (and a lock
    card's a state too), and 3,000 a second filled the broker's queue: the door's own events
    were dropped, an unlock among them. Now the first REFUSALS_LOGGED within
    REFUSAL_LOG_SECONDS are logged and published, the rest counted into the next line and
    event (Home Assistant's "remote unlock refused" automation fires for each event)."""
    caplog.set_level(logging.WARNING, logger="edge_app")
    hub = code_hub(broker, tmp_path, door)
    try:
        observer.wait(lambda: availability(observer) == b"online", what="online")
        states = len(observer.on(f"{BASE}/state"))
        for _ in range(30):
            observer.publish(f"{BASE}/unlock", b"not json")
            observer.publish(f"{BASE}/lock/set", b"not json")
        observer.wait(lambda: len(observer.on(f"{BASE}/event")) >= REFUSALS_LOGGED, what="10")
        time.sleep(0.5)
        assert len(observer.on(f"{BASE}/event")) == REFUSALS_LOGGED
        # The lock card shows the real state again after each refusal published, no more.
        assert len(observer.on(f"{BASE}/state")) - states <= REFUSALS_LOGGED
        refused = [r.getMessage() for r in caplog.records if "unlock refused" in r.getMessage()]
        assert len(refused) == REFUSALS_LOGGED, refused
        hub.bridge._refusals.every = 0.0  # as if REFUSAL_LOG_SECONDS had passed
        observer.publish(f"{BASE}/unlock", b"not json")
        observer.wait(lambda: len(observer.on(f"{BASE}/event")) > REFUSALS_LOGGED, what="more")
        last = [r.getMessage() for r in caplog.records if "unlock refused" in r.getMessage()][-1]
        assert last.endswith(" held_back=50"), last
        said = observer.on(f"{BASE}/event")[-1].json()
        assert said["type"] == "denied"
        assert said["reason"].startswith("remote unlock refused: ")
        assert said["reason"].endswith(" (50 more refused before it, not published one by one)")
        assert door.pin_states == [False]
    finally:
        hub.stop()


def test_a_flood_of_lock_commands_is_answered_a_few_at_a_time(
    broker: Broker,
    observer: Observer,
    door: FedDoor,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by an audit: a LOCK from the lock card needs no code, and each was a log line and
    a retained state message, with no limit: anyone who may publish on the lock card's topic
    could fill the journal, and the broker's queue ahead of the door's own events. As many
    are answered as refusals are said; the rest are counted into the next line."""
    caplog.set_level(logging.INFO, logger="edge_app")
    hub = code_hub(broker, tmp_path, door)
    lock = json.dumps({"action": "LOCK", "code": None, "timestamp": 0})
    try:
        observer.wait(lambda: availability(observer) == b"online", what="online")
        observer.wait(lambda: observer.on(f"{BASE}/state"), what="the state at connect")
        states = len(observer.on(f"{BASE}/state"))
        for _ in range(60):
            observer.publish(f"{BASE}/lock/set", lock)

        def answered() -> list[str]:
            return [r.getMessage() for r in caplog.records if "lock command:" in r.getMessage()]

        wait_for(lambda: len(answered()) >= REFUSALS_LOGGED, what="10 answered")
        time.sleep(0.5)
        assert len(answered()) == REFUSALS_LOGGED
        # One state each answered, not 60; plus, on a loaded machine, one a status poll may
        # publish when the fed door's frames turn stale meanwhile (on_health).
        assert len(observer.on(f"{BASE}/state")) - states <= REFUSALS_LOGGED + 1
        hub.bridge._lock_commands.every = 0.0  # as if REFUSAL_LOG_SECONDS had passed
        observer.publish(f"{BASE}/lock/set", lock)
        wait_for(lambda: len(answered()) > REFUSALS_LOGGED, what="the count")
        assert answered()[-1].endswith(" held_back=50"), answered()[-1]
        assert door.pin_states == [False]
    finally:
        hub.stop()


def test_refusals_a_burst_left_unsaid_are_said_by_the_heartbeat(
    broker: Broker,
    observer: Observer,
    door: FedDoor,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a review: past the 10 refusals said in 10 s, the rest were said only with
    the next refusal; a burst nothing followed (10 junk commands, then someone's tries) was
    never published, and Home Assistant's automation never fired for the tries."""
    from edge_app.hub import mqtt as hub_mqtt

    monkeypatch.setattr(hub_mqtt, "STATE_EVERY", 0.3)
    caplog.set_level(logging.WARNING, logger="edge_app")
    hub = code_hub(broker, tmp_path, door)
    try:
        observer.wait(lambda: availability(observer) == b"online", what="online")
        for _ in range(REFUSALS_LOGGED):
            observer.publish(f"{BASE}/unlock", b"not json")
        for _ in range(5):
            observer.publish(f"{BASE}/unlock", json.dumps({"ts": 1, "nonce": "x" * 16}))
        observer.wait(lambda: len(observer.on(f"{BASE}/event")) >= REFUSALS_LOGGED, what="10")
        wait_for(lambda: "exactly" in hub.bridge._last_unsaid, what="the tries refused")
        time.sleep(1.0)  # heartbeats, within the 10 s: nothing more may be said yet
        assert len(observer.on(f"{BASE}/event")) == REFUSALS_LOGGED
        hub.bridge._refusals.every = 0.0  # as if REFUSAL_LOG_SECONDS had passed
        observer.wait(lambda: len(observer.on(f"{BASE}/event")) > REFUSALS_LOGGED, what="said")
        said = observer.on(f"{BASE}/event")[-1].json()
        assert said["type"] == "denied"
        assert said["reason"].startswith(
            "remote unlock refused 5 more time(s), not published one by one; the last: command "
            "must be an object with exactly"
        )
        assert (
            "remote unlock refused 5 more time(s), not logged one by one; the last: command "
            "must be an object with exactly"
        ) in caplog.text
        assert door.pin_states == [False]
    finally:
        hub.stop()


def test_another_door_on_this_doors_home_assistant_device_is_named(
    broker: Broker, observer: Observer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`front-door` and `front_door` are both edge_door_front_door in Home Assistant (a `-`
    becomes `_` there, so every existing install keeps its entities): the second hub's
    discovery overwrites the first's entities. The hub that sees the other's config says so.
    A door's own retained config from before its topic_prefix changed is no other door."""
    caplog.set_level(logging.INFO, logger="edge_app")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # One door, first under another topic_prefix: its retained config names another state
    # topic, and the restarted hub must not take it for another door.
    first = RunningHub(
        hub_settings(broker, tmp_path / "a", door_id="front-door", topic_prefix="old")
    )
    observer.wait(lambda: observer.on("old/front-door/availability"), what="old prefix")
    first.stop()
    front_dash = RunningHub(hub_settings(broker, tmp_path / "a", door_id="front-door"))
    try:
        observer.wait(lambda: observer.on("edge-door/front-door/availability"), what="dash")
        time.sleep(0.5)
        assert "another door publishes" not in caplog.text

        front_underscore = RunningHub(hub_settings(broker, tmp_path / "b", door_id="front_door"))
        try:
            observer.wait(lambda: observer.on("edge-door/front_door/availability"), what="_")
            wait_for(lambda: "another door publishes" in caplog.text, what="the collision")
        finally:
            front_underscore.stop()
    finally:
        front_dash.stop()
    [line] = [r for r in caplog.records if "another door publishes" in r.getMessage()]
    assert line.levelno == logging.ERROR
    assert line.getMessage() == (
        "mqtt another door publishes this door's Home Assistant device edge_door_front_door "
        "(its state topic 'edge-door/front_door/state', this door's "
        "'edge-door/front-door/state'): their entities overwrite each other; give each door "
        "a door_id that differs in more than - and _ (docs/HOME_ASSISTANT.md) held_back=0"
    )
    # The mapping itself is unchanged: existing installs keep their unique_ids.
    assert Topics.of(hub_settings(broker, tmp_path / "a", door_id="front-door").mqtt).node == (
        "edge_door_front_door"
    )


def test_a_huge_message_on_the_device_topic_is_not_parsed_whole(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by a review: another door's discovery config was parsed with no bound on its
    values; over MQTT 3.1.1 the broker may send megabytes, and a 1 MB payload of `[],` took
    25 MB on the hub. It is refused from its count of values
    (MAX_MESSAGE_VALUES, far above what a discovery config holds) before parsing, and a real
    config of another door is still read and named."""
    import paho.mqtt.client as mqtt
    from peaks import traced_peak

    from edge_app.hub.mqtt import MAX_MESSAGE_VALUES

    assert all(
        json.dumps(config).count(",") + json.dumps(config).count("{") < MAX_MESSAGE_VALUES / 10
        for config in entities(
            Topics("edge-door/front-door", "homeassistant", "front-door"), True
        ).values()
    )
    caplog.set_level(logging.INFO, logger="edge_app")
    hub = RunningHub(hub_settings(broker, tmp_path, door_id="front-door"))
    try:
        bridge = hub.bridge
        message = mqtt.MQTTMessage(topic=bridge._device_topic.encode())
        message.payload = b"[" + b"[]," * 333_333 + b"[]]"
        _, peak = traced_peak(lambda: bridge._check_device(message))
        assert peak < 3 * len(message.payload), f"{peak / 1e6:.1f} MB for a 1 MB message"
        message.payload = json.dumps({"state_topic": "edge-door/front_door/state"}).encode()
        bridge._check_device(message)
    finally:
        hub.stop()
    assert "another door publishes" in caplog.text
    assert "not handled" not in caplog.text


def tls_settings(tmp_path: Path, **files: Path) -> Any:
    return parse_config(
        {"mqtt": {"host": "127.0.0.1", "port": 8883, **{k: str(v) for k, v in files.items()}}}
    ).mqtt


def refusal(settings: Any) -> str:
    with pytest.raises(MqttError) as refused:
        make_client(settings, "test", Topics.of(settings))
    return str(refused.value)


def test_a_tls_file_error_names_only_the_keys_that_are_set(
    tmp_path: Path, test_ca: dict[str, Path]
) -> None:
    """It used to read `mqtt.tls_ca: cannot use /nonexistent/ca.pem / tls_cert / tls_key
    ([Errno 2] ...)` when neither tls_cert nor tls_key was set."""
    missing = tmp_path / "nonexistent" / "ca.pem"
    assert (
        refusal(tls_settings(tmp_path, tls_ca=missing)) == f"mqtt.tls_ca: {missing} does not exist"
    )

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    message = refusal(tls_settings(tmp_path, tls_ca=garbage))
    assert message.startswith(f"mqtt.tls_ca: cannot use {garbage} ("), message
    assert "tls_cert" not in message and "tls_key" not in message

    certs = test_ca
    # A client certificate set but missing: that key, not the CA.
    absent = tmp_path / "client.pem"
    message = refusal(
        tls_settings(tmp_path, tls_ca=certs["ca"], tls_cert=absent, tls_key=certs["server_key"])
    )
    assert message == f"mqtt.tls_cert: {absent} does not exist"
    # All three set, and ssl refuses the pair (a key that is not the certificate's): all named.
    message = refusal(
        tls_settings(
            tmp_path, tls_ca=certs["ca"], tls_cert=certs["server"], tls_key=certs["ca_key"]
        )
    )
    assert message.startswith(
        f"mqtt.tls_ca, mqtt.tls_cert, mqtt.tls_key: cannot use {certs['ca']}, "
        f"{certs['server']}, {certs['ca_key']} ("
    ), message


@pytest.mark.parametrize("key", ["tls_ca", "tls_cert", "tls_key"])
@pytest.mark.parametrize("kind", ["named pipe", "device"])
def test_a_tls_file_that_is_a_pipe_or_a_device_is_refused_at_once(
    tmp_path: Path, test_ca: dict[str, Path], key: str, kind: str
) -> None:
    """Found by an audit: ssl read a TLS file named in the config with no check, so a named
    pipe there hung the hub at its start, and /dev/zero grew it to gigabytes and a
    MemoryError traceback. Both are refused before ssl opens them, like the secret files."""
    files = {
        "tls_ca": test_ca["ca"],
        "tls_cert": test_ca["server"],
        "tls_key": test_ca["server_key"],
    }
    if kind == "named pipe":
        files[key] = tmp_path / "pipe"
        os.mkfifo(files[key])
    else:
        files[key] = Path("/dev/zero")
    worker = ThreadPoolExecutor(1)
    message = worker.submit(refusal, tls_settings(tmp_path, **files)).result(timeout=20)
    worker.shutdown()
    assert message == f"mqtt.{key}: {files[key]} is a {kind}, not a TLS file", message


def test_events_before_the_first_connection_are_published_once_it_is_made(
    broker: Broker, observer: Observer, tmp_path: Path
) -> None:
    """Found by an audit: the door hands its held events (those of a hub restart) over as
    soon as the hub subscribes, before the first connection to the broker is up whenever
    it takes a moment (a TLS handshake: 0 of 6 such events reached MQTT over TLS). They are
    kept until the first connect, as the door keeps them (at most HELD_EVENTS, HELD_SECONDS
    old), and published then, once; after it, as before, nothing is queued."""
    from edge_app.control import HELD_SECONDS

    config = hub_settings(broker, tmp_path)  # TLS, as docs/HOME_ASSISTANT.md sets it up
    bridge = MqttBridge(config.mqtt, DoorLink(tmp_path / "door.sock"))
    stale = {"type": "unknown", "name": None, "time": "2024-05-01T08:00:00+00:00"}
    held = {"type": "unlock", "name": "Ada", "time": "2024-05-01T08:00:40+00:00"}
    bridge.on_event(stale)
    bridge.on_event(held)
    assert bridge._early is not None
    at, event = bridge._early[0]
    bridge._early[0] = (at - HELD_SECONDS - 1, event)  # handed over, but too old by now
    bridge.start()
    try:
        assert bridge.connected.wait(10), "the hub did not connect"
        observer.wait(lambda: observer.on(f"{BASE}/event"), what="the held event")
        time.sleep(0.5)
        events = [m.json() for m in observer.on(f"{BASE}/event")]
        assert [(e["type"], e["name"]) for e in events] == [("unlock", "Ada")]
        assert bridge._early is None  # nothing is kept after the first connect
    finally:
        bridge.stop()


def test_a_publish_the_broker_refuses_is_named_once(
    tmp_path_factory: pytest.TempPathFactory,
    test_ca: dict[str, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by an audit: a broker ACL that lets the door's user write its own topics but
    not the discovery prefix: the hub said "mqtt connected" and Home Assistant never got a
    device, with no word anywhere. Mosquitto answers such an MQTT 5 publish with PUBACK
    135 (Not authorized): the hub logs each refused topic once per connection."""
    acl = (
        f"user {USER}\ntopic readwrite {BASE}/#\ntopic read homeassistant/status\n\n"
        "user ha\ntopic readwrite #\n"
    )
    refusing = Broker(tmp_path_factory.mktemp("acl-broker"), test_ca, acl=acl)
    refusing.start()
    caplog.set_level(logging.INFO, logger="edge_app")
    bridge = MqttBridge(hub_settings(refusing, tmp_path).mqtt, DoorLink(tmp_path / "door.sock"))
    bridge.start()
    try:
        assert bridge.connected.wait(10), "the hub did not connect"
        wait_for(lambda: caplog.text.count("mqtt publish refused") >= 5, what="the refusals")
        bridge._resend_for_home_assistant()  # discovery again, on the same connection
        time.sleep(1.0)
    finally:
        bridge.stop()
        refusing.stop()
    refused = [r.getMessage() for r in caplog.records if "publish refused" in r.getMessage()]
    topics = Topics.of(bridge.settings)
    # Every discovery config, and the clearing of the strike's other kind: once each.
    expected = {*entities(topics), *retired(topics, lock=False)}
    assert sorted(refused) == sorted(
        f"mqtt publish refused topic={topic} reason='Not authorized': let user {USER} write it "
        "in the broker's ACL (docs/HOME_ASSISTANT.md); until then Home Assistant does not get it"
        for topic in expected
    )


def test_tls_to_the_plain_port_names_the_port() -> None:
    """Found by an audit: TLS (mqtt.tls_ca set) aimed at the broker's plain port said only
    "Connection reset by peer (check mqtt.host and mqtt.port)"."""
    from edge_app.hub.mqtt import connect_failure

    reset = ConnectionResetError(104, "Connection reset by peer")
    assert connect_failure(reset, tls=True) == (
        "the connection was reset during the TLS handshake (Connection reset by peer): is "
        "mqtt.port the broker's TLS port (often 8883), not its plain one (1883)?"
    )
    assert connect_failure(reset) == "Connection reset by peer (check mqtt.host and mqtt.port)"


def test_an_event_that_comes_while_the_kept_ones_are_replayed_follows_them(
    broker: Broker, observer: Observer, tmp_path: Path
) -> None:
    """Found by a review of the events kept until the first connection: one that came while
    they were being published went out at once, before them (or, in another interleaving,
    twice). It is kept too, and published after them, once."""
    bridge = MqttBridge(hub_settings(broker, tmp_path).mqtt, DoorLink(tmp_path / "door.sock"))
    first = {"type": "recognized", "name": "Ada", "time": "2024-05-01T08:00:39+00:00"}
    second = {"type": "unlock", "name": "Ada", "time": "2024-05-01T08:00:40+00:00"}
    bridge.on_event(first)
    publish = bridge._publish
    arrived: list[threading.Thread] = []

    def door_event_meanwhile(topic: str, payload: Any, **kwargs: Any) -> Any:
        if topic == bridge.topics.event and not arrived:  # the replay's first publish
            thread = threading.Thread(target=bridge.on_event, args=(second,))
            arrived.append(thread)
            thread.start()
            thread.join(5)
        return publish(topic, payload, **kwargs)

    bridge._publish = door_event_meanwhile  # type: ignore[method-assign]
    bridge.start()
    try:
        assert bridge.connected.wait(10), "the hub did not connect"
        observer.wait(lambda: len(observer.on(f"{BASE}/event")) >= 2, what="both events")
        time.sleep(0.5)
        events = [m.json() for m in observer.on(f"{BASE}/event")]
    finally:
        bridge.stop()
    assert arrived, "no event came during the replay"
    assert [e["type"] for e in events] == ["recognized", "unlock"]


def test_a_refusal_acknowledged_before_its_publish_is_noted_still_names_the_topic(
    tmp_path_factory: pytest.TempPathFactory,
    test_ca: dict[str, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by a review: paho's network thread can read the broker's PUBACK before
    client.publish() has returned on the thread that published (a door event): the refusal
    was logged as "topic=?", and again for every event. It is named, once."""
    acl = (
        f"user {USER}\ntopic readwrite homeassistant/#\n"
        + "".join(f"topic readwrite {BASE}/{name}\n" for name in ("state", "availability"))
        + f"topic readwrite {BASE}/last_person\n\nuser ha\ntopic readwrite #\n"
    )
    refusing = Broker(tmp_path_factory.mktemp("acl-event"), test_ca, acl=acl)
    refusing.start()
    caplog.set_level(logging.INFO, logger="edge_app")
    bridge = MqttBridge(hub_settings(refusing, tmp_path).mqtt, DoorLink(tmp_path / "door.sock"))
    publish = bridge.client.publish

    def preempted(*args: Any, **kwargs: Any) -> Any:
        info = publish(*args, **kwargs)
        if threading.current_thread().name == "door-link":
            time.sleep(0.05)  # the PUBACK is read meanwhile
        return info

    bridge.client.publish = preempted  # type: ignore[method-assign]
    bridge.start()
    try:
        assert bridge.connected.wait(10), "the hub did not connect"

        def three_events() -> None:
            for i in range(3):
                bridge.on_event({"type": "unknown", "time": f"t{i}"})

        door = threading.Thread(target=three_events, name="door-link")
        door.start()
        door.join(10)
        wait_for(lambda: "publish refused" in caplog.text, what="the refusal")
        time.sleep(0.5)
    finally:
        bridge.stop()
        refusing.stop()
    refused = [r.getMessage() for r in caplog.records if "publish refused" in r.getMessage()]
    assert refused == [
        f"mqtt publish refused topic={BASE}/event reason='Not authorized': let user {USER} "
        "write it in the broker's ACL (docs/HOME_ASSISTANT.md); until then Home Assistant "
        "does not get it"
    ]
