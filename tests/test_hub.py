"""The hub's parts that need no broker: signed commands, secret files, config, discovery,
and the door link reconnecting to a real control socket."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from test_control import Door, make_daemon

from edge_app.config import ConfigError, parse_config
from edge_app.errors import UserError
from edge_app.events import TYPES
from edge_app.hub import DoorHealth, DoorLink, Hub
from edge_app.hub.discovery import EVENT_TYPES, Topics, entities, event_message
from edge_app.hub.signing import (
    REPLAY_CACHE,
    UnlockRefused,
    UnlockVerifier,
    read_secret,
    sign_unlock,
)

KEY = "0123456789abcdef" * 4
NOW = 1_700_000_000.0


def verifier(**kwargs) -> UnlockVerifier:
    return UnlockVerifier(KEY, "front", 30.0, clock=lambda: NOW, **kwargs)


def command(**changes) -> bytes:
    return json.dumps({**sign_unlock(KEY, "front", "phone", now=NOW), **changes}).encode()


def test_a_fresh_signed_command_is_accepted_once() -> None:
    check = verifier()
    payload = command()
    assert check.verify(payload) == "phone"
    with pytest.raises(UnlockRefused, match="replayed command"):
        check.verify(payload)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (command(sig="f" * 64), "bad signature"),
        (command(origin="someone-else"), "bad signature"),  # signed text covers the origin
        (command(ts=int(NOW) + 1), "bad signature"),  # and the timestamp
        (json.dumps(sign_unlock(KEY, "back", "phone", now=NOW)).encode(), "bad signature"),
        (json.dumps(sign_unlock("x" * 64, "front", "p", now=NOW)).encode(), "bad signature"),
        (json.dumps(sign_unlock(KEY, "front", "p", now=NOW - 31)).encode(), "outside the 30 s"),
        (json.dumps(sign_unlock(KEY, "front", "p", now=NOW + 31)).encode(), "outside the 30 s"),
        (command(ts=True), "ts must be an integer"),
        (command(ts=float(NOW)), "ts must be an integer"),
        (command(nonce="short"), "nonce must be"),
        (  # a final newline: `$` matches before it, the rule says 16-64 of [A-Za-z0-9_-]
            json.dumps(sign_unlock(KEY, "front", "p", now=NOW, nonce="n" * 16 + "\n")).encode(),
            "nonce must be",
        ),
        (command(origin=""), "origin must be"),
        (command(origin="a\nb"), "origin must be"),
        (command(origin="phone; origin=web"), "origin may not contain 'origin='"),
        (command(origin="phone Uid=0"), "origin may not contain 'uid='"),
        (command(origin="back  door"), "hold two in a row"),
        (command(sig="F" * 64), "sig must be 64 lowercase hex"),
        (command(action="open"), "exactly"),
        (b"UNLOCK", "not JSON"),
        (b"[" * 1000, "nested too deeply"),
        (command(ts=int("9" * 400)), "an integer of 400 digits"),
        (command(ts=2**53 + 1), "out of range"),
        (b"[1]", "exactly"),
        (b"{" + b" " * 2000 + b"}", "longer than 1024 bytes"),
    ],
)
def test_refused_commands(payload: bytes, reason: str) -> None:
    with pytest.raises(UnlockRefused, match=reason):
        verifier().verify(payload)


def test_replay_cache_is_bounded_and_forgets_after_twice_the_window() -> None:
    now = [NOW]
    check = UnlockVerifier(KEY, "front", 30.0, clock=lambda: now[0])
    for number in range(REPLAY_CACHE):
        nonce = f"{number:032d}"
        payload = json.dumps(sign_unlock(KEY, "front", "p", now=now[0], nonce=nonce)).encode()
        check.verify(payload)
    with pytest.raises(UnlockRefused, match="too many unlock commands"):
        check.verify(command())
    now[0] += 61  # every cached nonce is now older than any command that could reuse it
    fresh = json.dumps(sign_unlock(KEY, "front", "p", now=now[0])).encode()
    assert check.verify(fresh) == "p"


def test_a_restarted_verifier_refuses_what_the_previous_one_accepted() -> None:
    """The nonce cache is in memory: a new verifier (a restarted hub) accepted again, inside
    the window, a command the previous one had accepted. Now every command signed before a
    verifier was made is refused; one of the very second it was made is accepted."""
    now = [NOW]
    earlier = UnlockVerifier(KEY, "front", 30.0, clock=lambda: now[0])
    accepted = json.dumps(sign_unlock(KEY, "front", "phone", now=now[0])).encode()
    assert earlier.verify(accepted) == "phone"
    now[0] += 5.4  # the hub restarts
    restarted = UnlockVerifier(KEY, "front", 30.0, clock=lambda: now[0])
    now[0] += 2
    with pytest.raises(UnlockRefused, match=rf"timestamp {int(NOW)} is before this hub started"):
        restarted.verify(accepted)
    second_before = sign_unlock(KEY, "front", "o", now=NOW + 4.9)  # stamped NOW + 4
    with pytest.raises(UnlockRefused, match="before this hub started"):
        restarted.verify(json.dumps(second_before).encode())
    same_second = sign_unlock(KEY, "front", "p", now=NOW + 5.0)  # signed 0.4 s before start
    assert restarted.verify(json.dumps(same_second).encode()) == "p"
    assert restarted.verify(json.dumps(sign_unlock(KEY, "front", "q", now=now[0])).encode())


@pytest.mark.parametrize("step", [3600.0, -3600.0])
def test_the_start_follows_a_wall_clock_step(step: float) -> None:
    """The start is an age on the monotonic clock: a clock set right after the hub started
    (NTP at boot on a Pi without a real-time clock, or a hand-set date) neither refuses
    every command until it passes a wrong start time nor lets older commands in."""
    wall, ticks = [NOW], [100.0]
    check = UnlockVerifier(KEY, "front", 30.0, clock=lambda: wall[0], ticks=lambda: ticks[0])
    wall[0] += step + 10  # the clock is set 10 s after the start
    ticks[0] += 10
    started = NOW + step  # the true start on the clock as it reads now
    for signed_at, accepted in ((started - 5, False), (started + 5, True)):
        payload = json.dumps(sign_unlock(KEY, "front", "p", now=signed_at)).encode()
        if accepted:
            assert check.verify(payload) == "p"
        else:
            with pytest.raises(UnlockRefused, match="before this hub started"):
                check.verify(payload)


def test_secret_files_must_be_private_and_long_enough(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(KEY + "\n")
    path.chmod(0o640)
    with pytest.raises(
        UserError, match=r"readable or writable by others \(mode 0640\); run `chmod 600"
    ):
        read_secret(path, "mqtt.unlock_secret_file", min_chars=32)
    path.chmod(0o600)
    assert read_secret(path, "mqtt.unlock_secret_file", min_chars=32) == KEY
    path.write_text("short\n")
    with pytest.raises(UserError, match="at least 32 characters.*openssl rand -hex 32"):
        read_secret(path, "mqtt.unlock_secret_file", min_chars=32)
    with pytest.raises(UserError, match="mqtt.password_file: .* does not exist"):
        read_secret(tmp_path / "absent", "mqtt.password_file")


@pytest.mark.parametrize(
    ("mqtt", "message"),
    [
        ({"remote_unlock": True}, "mqtt.remote_unlock: needs mqtt.unlock_code_file"),
        ({"password_file": "/p"}, "mqtt.password_file: set mqtt.username too"),
        ({"tls_cert": "/c"}, "mqtt.tls_cert: a client certificate needs both"),
        ({"tls_cert": "/c", "tls_key": "/k"}, "mqtt.tls_cert: set mqtt.tls_ca too"),
        ({"topic_prefix": "a/+/b"}, "mqtt.topic_prefix: 'a/+/b' is not valid"),
        ({"topic_prefix": "a//b"}, "mqtt.topic_prefix: 'a//b' is not valid"),
        ({"door_id": "front door"}, "mqtt.door_id: 'front door' is not valid"),
        ({"door_id": "front\n"}, "mqtt.door_id: 'front\\n' is not valid"),
        ({"topic_prefix": "edge-door\n"}, "mqtt.topic_prefix: 'edge-door\\n' is not valid"),
        ({"host": "broker\n"}, "mqtt.host: 'broker\\n' is not valid"),
        ({"discovery_prefix": "#"}, "mqtt.discovery_prefix: '#' is not valid"),
        ({"host": "mqtt://x"}, "mqtt.host: 'mqtt://x' is not valid"),
        ({"port": 0}, "mqtt.port: 0 is out of range (1 to 65535)"),
        ({"unlock_window_seconds": 0}, "mqtt.unlock_window_seconds: 0 is out of range"),
        ({"remote_unlok": True}, "mqtt.remote_unlok: unknown key (did you mean 'remote_unlock'?)"),
    ],
)
def test_mqtt_config_errors_name_their_key(mqtt: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"mqtt": mqtt})
    assert message in str(caught.value)


def test_hub_config_defaults_are_safe() -> None:
    config = parse_config({})
    assert config.hub.allow_unlock is False and config.mqtt.remote_unlock is False
    assert config.mqtt.host == ""  # no broker unless configured
    assert str(config.hub.socket) == "/run/edge-app/door.sock"
    with pytest.raises(ConfigError, match="hub.allow_unlock: expected true or false"):
        parse_config({"hub": {"allow_unlock": "yes"}})


def test_hub_needs_the_socket() -> None:
    with pytest.raises(UserError, match='hub.socket: "" turns the door'):
        Hub(parse_config({"hub": {"socket": ""}}))


def test_a_hub_with_nothing_turned_on_says_what_to_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The installer enables the hub's unit; with neither MQTT nor the web page configured
    it would otherwise run silently doing nothing."""
    config = parse_config({"hub": {"socket": str(tmp_path / "door.sock")}})

    with caplog.at_level(logging.INFO, logger="edge_app.hub.runner"):
        hub = Hub.from_config(config)

    assert hub.components == []
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("the hub has nothing to serve: set [mqtt] host or [web] enabled")


def test_discovery_payloads() -> None:
    topics = Topics.of(parse_config({"mqtt": {"door_id": "front-1"}}).mqtt)
    configs = entities(topics)
    assert topics.availability == "edge-door/front-1/availability"
    node = "edge_door_front_1"
    assert set(configs) == {
        f"homeassistant/{component}/{node}/{name}/config"
        for component, name in [
            ("binary_sensor", "strike"),
            ("event", "event"),
            ("sensor", "last_person"),
            ("binary_sensor", "door"),
            ("binary_sensor", "camera"),
        ]
    }
    for payload in configs.values():
        assert payload["device"]["identifiers"] == [node]
        assert payload["unique_id"].startswith(node)
        assert "command_topic" not in payload  # nothing Home Assistant sends opens the door
    event = configs[f"homeassistant/event/{node}/event/config"]
    assert event["event_types"] == list(EVENT_TYPES)
    # Home Assistant's event entity drops (and logs a warning for) a type it was not told of:
    # every event the door records, relock included, must be one of them.
    published = {event_message({"type": kind}, "front")["event_type"] for kind in TYPES}
    assert published == set(event["event_types"]) and "relock" in published
    # Found by an audit: with the door's availability, Home Assistant dropped every event
    # while the camera was down (wrong codes guessed then went unnoticed).
    assert "availability_topic" not in event
    assert configs[f"homeassistant/sensor/{node}/last_person/config"]["availability_topic"] == (
        topics.availability
    )
    health = configs[f"homeassistant/binary_sensor/{node}/camera/config"]
    assert "availability_topic" not in health and health["expire_after"] > 0


def test_event_messages_carry_frigate_like_fields_and_nothing_else() -> None:
    event = {
        "type": "recognized",
        "name": "Alice",
        "score": 0.81,
        "track": 3,
        "timestamp": NOW,
        "time": "2023-11-14T22:13:20.000+00:00",
        "snapshot": "/var/lib/edge-app/snapshots/x.jpg",
        "embedding": [0.1] * 512,
    }
    message = event_message(event, "front")
    assert message == {
        "event_type": "recognized",
        "type": "recognized",
        "name": "Alice",
        "score": 0.81,
        "liveness": None,
        "track": 3,
        "reason": None,
        "timestamp": NOW,
        "time": "2023-11-14T22:13:20.000+00:00",
        "door": "front",
    }


def test_door_link_waits_for_a_door_started_later_and_follows_it(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, allow_unlock=False, stale=1.0)
    assert daemon.config.hub.socket is not None
    link = DoorLink(daemon.config.hub.socket, 1.0, poll_seconds=0.1)
    seen: list[dict] = []
    health: list[DoorHealth] = []
    link.add_listener(seen.append, health.append)
    link.start()
    try:
        wait(lambda: health and not health[-1].reachable)
        error = health[-1].error
        assert error is not None and "no door socket" in error
        door = Door(daemon)  # the door comes up after the hub
        door.server.offer_frame(np.zeros((8, 8, 3), np.uint8), 1)
        wait(lambda: health[-1].healthy)
        wait(lambda: door.server.subscribers == 1, timeout=2)  # not after the backoff
        door.log.record("unknown", score=0.1, track=1)
        wait(lambda: [e["type"] for e in seen] == ["unknown"])
        wait(lambda: not health[-1].frames)  # no frame for more than 1 s
        assert health[-1].reachable and health[-1].error == "no fresh camera frames"
        door.close()  # the door stops: its socket goes
        wait(lambda: not health[-1].reachable)
    finally:
        link.stop()


def test_the_event_stream_is_said_open_when_the_door_accepts_it_events_or_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an audit: "door event stream open" came with the first event, so a quiet
    door's journal read as if the hub had no stream from it."""
    caplog.set_level(logging.INFO, logger="edge_app.hub")
    door = Door(make_daemon(tmp_path, allow_unlock=False, stale=1.0))
    assert door.daemon.config.hub.socket is not None
    link = DoorLink(door.daemon.config.hub.socket, 1.0, poll_seconds=0.1)
    link.start()
    try:
        wait(lambda: door.server.subscribers == 1)
        wait(lambda: "door event stream open" in caplog.text, timeout=2)
    finally:
        link.stop()
        door.close()


def wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    pytest.fail("condition not met in time")


@pytest.mark.parametrize(("stop", "code"), [("SIGTERM", 0), ("SIGINT", 130)])
def test_the_hub_exits_0_when_systemd_stops_it_and_130_on_ctrl_c(
    tmp_path: Path, stop: str, code: int
) -> None:
    """An audit: the hub stopped by Ctrl-C exited 0, where every other command exits 130 as
    a shell reports it. systemd's stop (SIGTERM) is a stop asked for: 0."""
    import os
    import signal
    import threading

    config = parse_config({"hub": {"socket": str(tmp_path / "absent.sock")}})
    link = DoorLink(tmp_path / "absent.sock", 1.0, poll_seconds=0.1)
    hub = Hub(config, door=link)
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    running = threading.Timer(0.5, os.kill, (os.getpid(), getattr(signal, stop)))
    running.start()
    try:
        assert hub.run() == code
    finally:
        running.cancel()
    assert {signum: signal.getsignal(signum) for signum in before} == before  # restored
