"""MQTT for the door: Home Assistant discovery, availability, events and remote unlock.

paho-mqtt 2.x with callback API version 2, its own network thread (loop_start) and its own
reconnect with backoff (reconnect_delay_set): the hub starts and keeps running whether the
broker is down, restarting or refusing our credentials, and logs why each time (paho's
reason codes). A clean session means the broker keeps nothing for us while we are away, so
no command queued during an outage is delivered late; retained commands are ignored. Two
kinds of remote unlock, each only when configured: a signed command with a fresh timestamp
and an unused nonce on <base>/unlock (edge_app.hub.signing), and Home Assistant's lock card
sending a code with a fresh timestamp on <base>/lock/set (edge_app.hub.code).

Messages are only published while connected: events that happen while the broker is away
are not queued and replayed later, and the retained state is re-sent on every connect.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import threading
import time
from datetime import datetime, timezone
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_app.config import MqttConfig
from edge_app.control import ControlError
from edge_app.errors import UserError
from edge_app.hub.code import LOCK, CodeVerifier, read_code_file
from edge_app.hub.discovery import (
    OFFLINE,
    ONLINE,
    STATE_EVERY,
    Topics,
    entities,
    event_message,
    retired,
    strike_entity,
)
from edge_app.hub.door import DoorHealth, DoorLink
from edge_app.hub.signing import MIN_KEY_CHARS, UnlockRefused, UnlockVerifier, read_secret

log = logging.getLogger(__name__)

KEEPALIVE = 30
RECONNECT_MIN, RECONNECT_MAX = 1, 60
REMOTE_REASON = "remote"
LOCK_ORIGIN = "mqtt:ha-lock"  # the origin of every command from Home Assistant's lock card


class MqttError(UserError):
    """The [mqtt] settings cannot be used (a file, a certificate); the message names the key."""


def make_client(settings: MqttConfig, client_id: str, topics: Topics) -> mqtt.Client:
    """A paho client with credentials, TLS and the last will set from the config."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=True,
        protocol=mqtt.MQTTv311,
    )
    if settings.username:
        password = None
        if settings.password_file is not None:
            password = read_secret(settings.password_file, "mqtt.password_file")
        client.username_pw_set(settings.username, password)
    if settings.tls_ca is not None:
        try:
            client.tls_set(
                ca_certs=str(settings.tls_ca),
                certfile=None if settings.tls_cert is None else str(settings.tls_cert),
                keyfile=None if settings.tls_key is None else str(settings.tls_key),
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (OSError, ssl.SSLError, ValueError) as error:
            raise MqttError(
                f"mqtt.tls_ca: cannot use {settings.tls_ca} / tls_cert / tls_key ({error})"
            ) from None
    client.will_set(topics.availability, OFFLINE, qos=1, retain=True)
    client.reconnect_delay_set(RECONNECT_MIN, RECONNECT_MAX)
    return client


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="seconds")


class MqttBridge:
    """A Hub component: door events and health to MQTT, signed unlock commands to the door."""

    def __init__(self, settings: MqttConfig, door: DoorLink) -> None:
        self.settings = settings
        self.door = door
        self.topics = Topics.of(settings)
        self.verifier: UnlockVerifier | None = None
        self.code_verifier: CodeVerifier | None = None
        if settings.remote_unlock and settings.unlock_secret_file is not None:
            key = read_secret(
                settings.unlock_secret_file, "mqtt.unlock_secret_file", min_chars=MIN_KEY_CHARS
            )
            self.verifier = UnlockVerifier(key, settings.door_id, settings.unlock_window_seconds)
        if settings.remote_unlock and settings.unlock_code_file is not None:
            self.code_verifier = CodeVerifier(
                read_code_file(settings.unlock_code_file), settings.unlock_window_seconds
            )
        self.client = make_client(settings, f"edge-door-hub-{settings.door_id}", self.topics)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._health: DoorHealth = door.health
        self._strike = "locked"
        self._last_person: dict[str, Any] | None = None
        self._heartbeat: threading.Thread | None = None
        self._where = f"host={settings.host} port={settings.port}"

    # --- Hub component ------------------------------------------------------------------------

    @property
    def lock_entity(self) -> bool:
        """The strike is published as a lock that sends a code (else a read-only sensor)."""
        return self.code_verifier is not None

    def start(self) -> None:
        tls = "on" if self.settings.tls_ca is not None else "off"
        log.info(
            "mqtt connecting %s tls=%s user=%s base=%s remote_unlock=%s signed=%s code=%s",
            self._where,
            tls,
            self.settings.username or "-",
            self.topics.base,
            self.settings.remote_unlock,
            self.verifier is not None,
            self.code_verifier is not None,
        )
        self._explain_strike()
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=KEEPALIVE)
        self.client.loop_start()
        self._heartbeat = threading.Thread(target=self._beat, name="mqtt-state", daemon=True)
        self._heartbeat.start()

    def _explain_strike(self) -> None:
        settings = self.settings
        if self.lock_entity:
            log.info(
                "home assistant lock entity on: unlock by code on %s", self.topics.lock_command
            )
            if settings.tls_ca is None:
                log.warning(
                    "mqtt.tls_ca is not set: the unlock code crosses the network in clear text; "
                    "use TLS to the broker (docs/HOME_ASSISTANT.md)"
                )
            return
        if not settings.remote_unlock:
            why = "mqtt.remote_unlock is false"
        else:
            why = "mqtt.unlock_code_file is not set (make one with `edge-app hub unlock-code`)"
        if settings.unlock_code_file is not None and not settings.remote_unlock:
            why += " (mqtt.unlock_code_file is ignored until remote_unlock = true)"
        log.info("home assistant lock entity off, the strike is a read-only sensor: %s", why)

    def stop(self) -> None:
        self._stop.set()
        if self.connected.is_set():
            info = self.client.publish(self.topics.availability, OFFLINE, qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2.0)
        self.client.disconnect()
        self.client.loop_stop()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=2.0)

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        with self._lock:
            if kind == "unlock":
                self._strike = "unlocked"
            elif kind == "relock":
                self._strike = "locked"
            if kind in ("recognized", "unknown", "unlock") and (
                kind != "unlock" or event.get("name")
            ):
                self._last_person = {
                    "name": event.get("name") or "unknown",
                    "score": event.get("score"),
                    "type": kind,
                    "time": event.get("time"),
                }
        self._publish(self.topics.event, event_message(event, self.settings.door_id))
        if kind in ("unlock", "relock"):
            self._publish_state()
        if kind in ("recognized", "unknown", "unlock"):
            self._publish_last_person()

    def on_health(self, health: DoorHealth) -> None:
        with self._lock:
            before = self._health
            self._health = health
            if health.reachable:
                self._strike = "unlocked" if health.relay_active else "locked"
        if (before.healthy, before.reachable, before.frames) != (
            health.healthy,
            health.reachable,
            health.frames,
        ):
            self._publish_availability()
            self._publish_state()

    # --- paho callbacks (its network thread) ---------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: Any,
        properties: Any,
    ) -> None:
        if reason_code.is_failure:
            log.error(
                "mqtt connection refused %s reason=%r: check mqtt.username and "
                "mqtt.password_file (retrying with backoff)",
                self._where,
                str(reason_code),
            )
            return
        log.info("mqtt connected %s", self._where)
        self.connected.set()
        topics = [(self.topics.ha_status, 1)]
        if self.verifier is not None:
            topics.append((self.topics.unlock, 1))
        if self.code_verifier is not None:
            topics.append((self.topics.lock_command, 1))
        client.subscribe(topics)
        self._publish_all()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        log.warning(
            "mqtt cannot connect %s: broker down or unreachable, or the TLS handshake failed "
            "(check mqtt.host, mqtt.port, mqtt.tls_ca); retrying with backoff",
            self._where,
        )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: Any,
        properties: Any,
    ) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if not self._stop.is_set() and was:
            log.warning(
                "mqtt disconnected %s reason=%r (reconnecting with backoff)",
                self._where,
                str(reason_code),
            )

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # Runs on paho's network thread: an exception escaping here would end that thread for
        # good (no reconnect, no last will, commands silently ignored), so none may.
        try:
            if message.topic == self.topics.ha_status:
                if message.payload == b"online":
                    log.info("home assistant online: re-sending discovery")
                    self._publish_all()
            elif message.topic == self.topics.unlock:
                self._command(message)
            elif message.topic == self.topics.lock_command:
                self._lock_command(message)
        except Exception as error:
            log.exception("mqtt message on %s not handled", message.topic)
            if message.topic in (self.topics.unlock, self.topics.lock_command):
                with contextlib.suppress(Exception):
                    self._refuse(f"internal error ({type(error).__name__})", topic=message.topic)

    # --- remote unlock -------------------------------------------------------------------------

    def _command(self, message: mqtt.MQTTMessage) -> None:
        if message.retain:
            # A retained command would open the door again at every reconnect.
            self._refuse("retained command ignored (publish unlock commands without retain)")
            return
        if self.verifier is None:
            return
        try:
            origin = self.verifier.verify(bytes(message.payload))
        except UnlockRefused as error:
            self._refuse(str(error))
            return
        try:
            self.door.unlock(REMOTE_REASON, f"mqtt:{origin}")
        except ControlError as error:
            self._refuse(f"the door refused: {error}", origin)
            return
        log.info("remote unlock accepted origin=mqtt:%s topic=%s", origin, message.topic)

    def _lock_command(self, message: mqtt.MQTTMessage) -> None:
        """A command from Home Assistant's lock card: {"action", "code", "timestamp"}."""
        topic = self.topics.lock_command
        if message.retain:
            self._refuse(
                "retained command ignored (publish lock commands without retain)",
                topic=topic,
                via=LOCK_ORIGIN,
            )
            return
        if self.code_verifier is None:
            return
        try:
            command = self.code_verifier.verify(bytes(message.payload))
        except UnlockRefused as error:
            self._refuse(str(error), topic=topic, via=LOCK_ORIGIN)
            self._publish_state()  # the card shows the real state again
            return
        if command.action == LOCK:
            # The strike relocks by itself after its pulse: nothing to do but say so.
            log.info("lock command: the strike relocks by itself; state re-sent topic=%s", topic)
            self._publish_state()
            return
        try:
            self.door.unlock(REMOTE_REASON, LOCK_ORIGIN)
        except ControlError as error:
            self._refuse(f"the door refused: {error}", topic=topic, via=LOCK_ORIGIN)
            self._publish_state()
            return
        log.info(
            "remote unlock accepted origin=%s action=%s topic=%s",
            LOCK_ORIGIN,
            command.action,
            topic,
        )

    def _refuse(
        self,
        why: str,
        origin: str | None = None,
        *,
        topic: str | None = None,
        via: str | None = None,
    ) -> None:
        """Log a refused command and publish it as a `denied` event.

        origin: who a verified signed command named (the event's name); via: where a command
        came from (appended to the reason as `origin=...`)."""
        topic = topic or self.topics.unlock
        log.warning(
            "remote unlock refused topic=%s origin=%s reason=%r", topic, via or origin or "-", why
        )
        now = time.time()
        reason = f"remote unlock refused: {why}" + (f"; origin={via}" if via else "")
        self._publish(
            self.topics.event,
            event_message(
                {
                    "type": "denied",
                    "reason": reason,
                    "timestamp": round(now, 3),
                    "time": _iso(now),
                    "name": origin,
                },
                self.settings.door_id,
            ),
        )

    # --- publishing ----------------------------------------------------------------------------

    def _publish(self, topic: str, payload: Any, *, retain: bool = False) -> None:
        if not self.connected.is_set():
            return  # never queued: retained state is re-sent on connect
        data = payload if isinstance(payload, str) else json.dumps(payload)
        self.client.publish(topic, data, qos=1, retain=retain)

    def _publish_all(self) -> None:
        """Discovery, then availability, state and last person: all Home Assistant needs."""
        self._publish_discovery()
        self._publish_availability()
        self._publish_state()
        self._publish_last_person()

    def _publish_discovery(self) -> None:
        if not self.settings.discovery:
            return
        for topic, config in entities(self.topics, self.lock_entity).items():
            self._publish(topic, config, retain=True)
        for topic in retired(self.topics, self.lock_entity):
            self._publish(topic, "", retain=True)

    def _publish_availability(self) -> None:
        with self._lock:
            value = ONLINE if self._health.healthy else OFFLINE
        self._publish(self.topics.availability, value, retain=True)

    def state(self) -> dict[str, Any]:
        with self._lock:
            health = self._health
            status = health.status or {}
            return {
                "strike": self._strike,
                "door": ONLINE if health.reachable else OFFLINE,
                "camera": "ok" if health.frames else ("stale" if health.reachable else "unknown"),
                "problem": health.error,
                "source": status.get("source"),
                "backend": status.get("backend"),
                "gallery_people": status.get("gallery_people"),
                "liveness": status.get("liveness"),
                "updated": _iso(time.time()),
            }

    def _publish_state(self) -> None:
        self._publish(self.topics.state, self.state(), retain=True)

    def _publish_last_person(self) -> None:
        with self._lock:
            person = self._last_person
        if person is not None:
            self._publish(self.topics.last_person, person, retain=True)

    def _beat(self) -> None:
        while not self._stop.wait(STATE_EVERY):
            self._publish_state()


def clear_discovery(settings: MqttConfig, timeout: float = 10.0) -> list[str]:
    """Remove this door from Home Assistant: empty retained payloads on every discovery
    topic and on the retained state topics. Returns the topics cleared."""
    topics = Topics.of(settings)
    client = make_client(settings, f"edge-door-clear-{settings.door_id}", topics)
    result: dict[str, Any] = {}
    done = threading.Event()

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, code: Any, props: Any) -> None:
        result["code"] = code
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(settings.host, settings.port, keepalive=KEEPALIVE)
    except OSError as error:
        raise MqttError(
            f"mqtt.host: cannot reach the broker at {settings.host}:{settings.port} ({error})"
        ) from None
    client.loop_start()
    try:
        if not done.wait(timeout):
            raise MqttError(f"mqtt.host: no answer from {settings.host}:{settings.port}")
        if result["code"].is_failure:
            raise MqttError(
                f"mqtt: the broker refused the connection ({result['code']}); check "
                "mqtt.username and mqtt.password_file"
            )
        cleared = [
            *entities(topics),
            topics.config(*strike_entity(True)),
            topics.state,
            topics.last_person,
            topics.availability,
        ]
        infos = [client.publish(topic, b"", qos=1, retain=True) for topic in cleared]
        for info in infos:
            info.wait_for_publish(timeout)
        return cleared
    finally:
        client.disconnect()
        client.loop_stop()
