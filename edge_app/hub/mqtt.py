"""MQTT for the door: Home Assistant discovery, availability, events and remote unlock.

paho-mqtt 2.x with callback API version 2, its own network thread (loop_start) and its own
reconnect with backoff (reconnect_delay_set): the hub starts and keeps running whether the
broker is down, restarting or refusing our credentials, and logs why each time (paho's
reason codes). The hub speaks MQTT 5 so that its CONNECT can carry a Maximum Packet Size
(MAX_PACKET_BYTES): the broker must not send it anything larger, so an oversized message on
a topic the hub reads costs the hub nothing, whatever the broker's own limits. A broker that
only speaks MQTT 3.1.1 gets 3.1.1 and a warning (MqttBridge._on_connect says why), for that
connection only: each new connection asks for MQTT 5 again, so an upgraded broker gets MQTT 5
without a hub restart, and a downgrade (the broker's answer, or an injected one without TLS)
lasts one connection. Clean
start and a session that ends with the connection mean the broker keeps nothing for us while
we are away, so no command queued during an outage is delivered late; retained commands are
ignored. Two kinds of remote unlock, each only when configured: a signed command with a
fresh timestamp and an unused nonce on <base>/unlock (edge_app.hub.signing), and Home
Assistant's lock card sending a code with a fresh timestamp on <base>/lock/set
(edge_app.hub.code).

Messages are only published while connected: events that happen while the broker is away
are not queued and replayed later, and the retained state is re-sent on every connect. The
one exception is the hub's start: the door hands its held events over as soon as the hub
subscribes (a restarted hub's: control.HELD_EVENTS, at most HELD_SECONDS old), usually before
the first connection to the broker is up (a TLS handshake takes longer), so events that come
before the first connect are kept, as the door keeps them (for HELD_SECONDS after the hub got
them), and published in order, each once, when it is made (_replay_early).
A publish the broker refuses (its ACL: MQTT 5's PUBACK with a failure reason) is logged once
per topic and connection. What
was published but not acknowledged before a connection was lost is dropped at the next
connect (paho would re-send it after the fresh state, so a stale availability or state would
win), but for the door's events: a connection that died unnoticed (Wi-Fi gone, no RST) is
found dead only a keepalive or more later, and the events published into it (an unlock
among them) would be lost. Those at most IN_FLIGHT_SECONDS old are published again after the
fresh state, in order, before any newer event (at least once: one whose acknowledgement
alone was lost arrives twice; its time and track tell). At most MAX_QUEUED messages wait
for the broker's acknowledgement; more are dropped
(logged, then counted into a line every REFUSAL_LOG_SECONDS). Refused commands never take
the last REFUSAL_HEADROOM places, and the state and availability are re-sent every
STATE_EVERY, so a flood of junk commands cannot crowd out the door's events for good.

A clean stop leaves a retained state that says nothing is known of the door (MqttBridge.stop:
Home Assistant re-reads retained messages after its restarts), then availability offline.
An empty message on a command topic (what clears a retained one) is no command: ignored. A
broker that closes the connection before answering (a TLS port reached without TLS) is
logged, throttled, as is another door publishing this door's Home Assistant device.

The retained last person never keeps naming someone no longer enrolled: given the gallery
(Hub.from_config passes config.gallery.path), the hub reads its names on the heartbeat
thread, again whenever its data_version changes (every STATE_EVERY), and replaces a last
person who is not among them, whether it published them itself or the broker kept them from
before the hub started (it subscribes to <base>/last_person for that retained message),
with NOBODY, at once and at every re-send (edge_app.hub.enrolled).

Nothing on paho's network thread waits for the door: accepted unlock commands go to the door
on their own thread (a slow or hung door socket would otherwise stall keepalives, reconnects
and every other command).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import socket
import ssl
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_app import untrusted_json
from edge_app.config import MqttConfig, host_name_problem
from edge_app.control import (
    HELD_EVENTS,
    HELD_SECONDS,
    REFUSAL_LOG_SECONDS,
    ControlError,
    DoorRefused,
    Unanswered,
)
from edge_app.errors import UserError
from edge_app.gallery import MAX_NAME_LENGTH
from edge_app.hub.code import LOCK, CodeVerifier, WrongCode, lockout_path, read_code_file
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
from edge_app.hub.door import REQUEST_TIMEOUT, DoorHealth, DoorLink
from edge_app.hub.enrolled import EnrolledNames
from edge_app.hub.signing import (
    MAX_COMMAND_BYTES,
    MIN_KEY_CHARS,
    UnlockRefused,
    UnlockVerifier,
    read_secret,
)
from edge_app.logs import Throttle
from edge_app.private_file import check_tls_file

log = logging.getLogger(__name__)

KEEPALIVE = 30
RECONNECT_MIN, RECONNECT_MAX = 1, 60
REMOTE_REASON = "remote"
LOCK_ORIGIN = "mqtt:ha-lock"  # the origin of every command from Home Assistant's lock card
# Messages waiting for the broker's acknowledgement (paho's default is no limit: a broker that
# never acknowledges would grow the hub's memory without end); more are dropped, and logged.
MAX_QUEUED = 1000
# A door event the broker had not acknowledged when the connection was lost is published again
# at the next connect when at most this old: news for a Home Assistant automation for a few
# minutes; later it is in the door's history only (a dead connection is found after about one
# and a half KEEPALIVE, and the reconnect backs off up to RECONNECT_MAX).
IN_FLIGHT_SECONDS = 300.0
# How long the strike an unlock or relock event said outranks a status poll's: a poll the
# door answered just before the event (the hub reads them on two threads) is older.
EVENT_STRIKE_SECONDS = 1.0
# What to do about a broker's refusal of the connection, by its reason (MQTT 5's names; paho
# gives MQTT 3.1.1's return codes the same ones).
REFUSED_CONNECTION_ADVICE = {
    "Bad user name or password": "check mqtt.username and mqtt.password_file",
    "Not authorized": "check mqtt.username and mqtt.password_file, and the broker's ACL",
    "Retain not supported": (
        "the hub's availability and state are retained messages: let the broker keep them "
        "(Mosquitto's retain_available true)"
    ),
    "Client identifier not valid": "give the door a door_id the broker accepts",
}
OTHER_REFUSAL_ADVICE = "the broker's log says why"
# Values read from a message that is not a command (another door's discovery config, the
# retained last person): over MQTT 3.1.1 the broker may send megabytes, and three bytes of
# `[],` are a Python list of 56; ours hold a few dozen values.
MAX_MESSAGE_VALUES = 1000
# Home Assistant's `online` on its status topic re-sends discovery at most this often: anyone
# who may publish there could otherwise make the hub publish nine retained messages per message.
RESEND_SECONDS = 10.0
# Refused commands logged and published (a `denied` event) one by one within
# REFUSAL_LOG_SECONDS (the control socket's refusal interval); more are counted, and said
# with the next line and event, or by the heartbeat once that interval allows a line.
# Anyone who may publish on a command topic could otherwise fill the broker's queue with
# refusals (3,000 a second on a loopback) and crowd out the door's own events, an unlock
# among them.
REFUSALS_LOGGED = 10
# Free places in the queue (MAX_QUEUED) kept for the door's events and state: a refusal
# due to be published is only counted while fewer are free.
REFUSAL_HEADROOM = MAX_QUEUED // 5
# Accepted unlock commands waiting while the door answers an earlier one (its pulses never
# stack anyway); more are refused while the door is slow to answer.
UNLOCK_QUEUE = 1
# Why an accepted command was not carried out: the hub stopped before it asked the door.
STOPPING = "the hub stopped before it asked the door"
# The largest packet the broker may send the hub: MQTT 5's Maximum Packet Size, sent in the
# CONNECT; the broker must not send a larger one ([MQTT-3.1.2-24]; Mosquitto drops it for
# this client and still delivers it to others). Without it a broker forwards messages of up
# to 256 MB by default, and paho holds three to four times a message's size before the hub can
# refuse it. The largest message the hub acts on is a command of MAX_COMMAND_BYTES (longer
# ones are refused anyway) on a topic of at most MQTT's 65535-byte string limit; the rest is
# the packet's fixed header (5), topic length and packet id (4), and room for the properties
# a sender may attach (a content type, a few user properties). Anything larger could only
# be refused, so the broker need not send it.
MAX_TOPIC_BYTES = 65_535
PROPERTY_BYTES = 4096
MAX_PACKET_BYTES = 5 + 4 + MAX_TOPIC_BYTES + PROPERTY_BYTES + MAX_COMMAND_BYTES
# A QoS 1 PUBLISH the hub sends, beside its topic and payload: fixed header (at most 5), the
# topic's length (2), the packet id (2), empty properties (1).
PUBLISH_OVERHEAD = 5 + 2 + 2 + 1
# The broker's answer to an MQTT 5 CONNECT when it speaks only 3.1.1 (paho reads the 3.1.1
# `unacceptable protocol version`, 0x01, as this reason).
UNSUPPORTED_PROTOCOL = 0x84
# A broker that closes every connection before its CONNACK (a TLS port reached without TLS)
# is logged at most this often: paho's backoff retries after 1, 2, 4 ... 60 s.
CLOSED_EARLY_LOG_SECONDS = float(RECONNECT_MAX)
# A connection that ends sooner than this after the broker accepted it (a broker that drops
# a packet too large for it, another client with the hub's client id) makes the next
# reconnect wait longer each time, from RECONNECT_MIN to RECONNECT_MAX: paho starts its own
# backoff afresh at every accepted connection, so such a broker was reconnected to, and sent
# everything again, every second for ever.
SHORT_LIVED_SECONDS = 10.0
# The `problem` of the retained state a clean stop leaves: nothing reports the door until the
# hub runs again, and Home Assistant re-reads a retained state after each of its restarts.
STOPPED = "edge-app hub stopped: nothing reports this door until it runs again"
# The retained last person once the one it named is no longer enrolled (removed from the
# gallery, or renamed): Home Assistant's sensor renders `None` from it, its unknown state.
# tests/test_mqtt_last_person.py spells it out too.
NOBODY: dict[str, Any] = {"name": None, "score": None, "type": None, "time": None}
# What a last person is besides a name: `unknown` (an unknown face), or NOBODY's None.
NOT_A_PERSON = (None, "unknown")


class MqttError(UserError):
    """The [mqtt] settings cannot be used (a file, a certificate); the message names the key."""


def check_host(host: str) -> None:
    """MqttError for a host name the resolver refuses (an empty label as in `a..b`, or one of
    more than 63 characters): paho would raise it as UnicodeError, not OSError, on its network
    thread at every connect, ending that thread (no MQTT, no retries) with a traceback.

    The rule is config.host_name_problem, which already refused such a name when the config
    was read; this is for an MqttConfig built in code, which no validation has seen."""
    problem = host_name_problem(host)
    if problem is not None:
        raise MqttError(f"mqtt.host: {problem}")


def make_client(
    settings: MqttConfig,
    client_id: str,
    topics: Topics,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
) -> mqtt.Client:
    """A paho client with credentials, TLS and the last will set from the config.

    MQTT 5 unless told otherwise: connect it with connect_properties() and clean_start=True.
    """
    check_host(settings.host)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        # MQTT 5 has no clean session flag: clean_start and the session expiry replace it.
        clean_session=None if protocol == MQTTProtocolVersion.MQTTv5 else True,
        protocol=protocol,
    )
    if settings.username:
        password = None
        if settings.password_file is not None:
            password = read_secret(settings.password_file, "mqtt.password_file")
        client.username_pw_set(settings.username, password)
    if settings.tls_ca is not None:
        for key, path in (
            ("mqtt.tls_ca", settings.tls_ca),
            ("mqtt.tls_cert", settings.tls_cert),
            ("mqtt.tls_key", settings.tls_key),
        ):
            if path is not None:
                with contextlib.suppress(OSError):  # missing, unreadable: tls_set's to say
                    check_tls_file(path, key, MqttError)
        try:
            client.tls_set(
                ca_certs=str(settings.tls_ca),
                certfile=None if settings.tls_cert is None else str(settings.tls_cert),
                keyfile=None if settings.tls_key is None else str(settings.tls_key),
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (OSError, ssl.SSLError, ValueError) as error:
            raise MqttError(_tls_refused(settings, error)) from None
    client.will_set(topics.availability, OFFLINE, qos=1, retain=True)
    client.reconnect_delay_set(RECONNECT_MIN, RECONNECT_MAX)
    client.max_queued_messages_set(MAX_QUEUED)
    return client


def _tls_refused(settings: MqttConfig, error: BaseException) -> str:
    """Why ssl refused the TLS files, naming only the keys that are set (a client certificate
    and its key are optional): `mqtt.tls_ca: <file> does not exist` for a missing one, else
    `mqtt.tls_ca, mqtt.tls_cert, mqtt.tls_key: cannot use <files> (<ssl's reason>)`."""
    named = [
        (key, path)
        for key, path in (
            ("tls_ca", settings.tls_ca),
            ("tls_cert", settings.tls_cert),
            ("tls_key", settings.tls_key),
        )
        if path is not None
    ]
    for key, path in named:
        if not path.exists():
            return f"mqtt.{key}: {path} does not exist"
    keys = ", ".join(f"mqtt.{key}" for key, _ in named)
    files = ", ".join(str(path) for _, path in named)
    return f"{keys}: cannot use {files} ({error})"


def connect_properties() -> Properties:
    """The MQTT 5 CONNECT's properties: the broker sends nothing over MAX_PACKET_BYTES, and
    keeps no session once the connection ends (expiry 0, as with clean_start=True: nothing
    queued while the hub is away reaches it later)."""
    properties = Properties(PacketTypes.CONNECT)
    properties.MaximumPacketSize = MAX_PACKET_BYTES
    properties.SessionExpiryInterval = 0
    return properties


def _fall_back_to_mqtt311(client: mqtt.Client) -> None:
    """Make the client's next connect an MQTT 3.1.1 one with a clean session.

    paho fixes the protocol when a client is made and has no public way to change it; it
    changes the same attribute itself when it falls back from 3.1.1 to 3.1 (in
    _handle_connack), and reads _clean_session for a 3.1.1 connect (a client made for
    MQTT 5 has none). tests/test_mqtt_limits.py connects this way to a real broker, so a
    paho that renamed them fails there."""
    client._protocol = mqtt.MQTTv311
    client._clean_session = True


def _ask_for_mqtt5_again(client: mqtt.Client) -> None:
    """Make the client's next connect an MQTT 5 one again, after _fall_back_to_mqtt311: paho
    keeps clean_start and the connect properties of connect() for every reconnect."""
    client._protocol = mqtt.MQTTv5


def _camera_state(health: DoorHealth) -> str:
    """The state's `camera`: ok, dark or featureless (fresh frames that show nothing), stale
    (the door answers without fresh frames) or unknown (the door does not answer)."""
    if health.frames:
        return health.picture or "ok"
    return "stale" if health.reachable else "unknown"


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class _Unlock:
    """An accepted command on its way to the door.

    origin: the socket request's origin; name: the verified signer (a refusal event's name);
    via: where a lock-card command came from (appended to a refusal's reason)."""

    origin: str
    topic: str
    name: str | None = None
    via: str | None = None
    action: str | None = None


def connect_failure(error: BaseException | None, tls: bool = False) -> str:
    """Why a connection to the broker failed, in the words that tell what to fix: a refused
    broker certificate is not a broker that is down. tls: the hub speaks TLS (mqtt.tls_ca)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return (
            f"the broker's certificate was refused ({error.verify_message or error}): it must "
            "be for the name in mqtt.host and signed by the CA in mqtt.tls_ca"
        )
    if isinstance(error, ssl.SSLError):
        return (
            f"the TLS handshake failed ({error.reason or error}): check mqtt.tls_ca, "
            "mqtt.tls_cert and mqtt.tls_key, and that mqtt.port is the broker's TLS port"
        )
    if isinstance(error, ConnectionRefusedError):
        return "the broker refused the connection: is it running, and on mqtt.port?"
    if tls and isinstance(error, ConnectionResetError | BrokenPipeError):
        # What a plain listener does with a TLS ClientHello (Mosquitto's 1883, for one).
        return (
            f"the connection was reset during the TLS handshake ({error.strerror or error}): "
            "is mqtt.port the broker's TLS port (often 8883), not its plain one (1883)?"
        )
    if isinstance(error, socket.gaierror):
        return f"mqtt.host cannot be resolved ({error.strerror or error})"
    if isinstance(error, OSError):
        return f"{error.strerror or error} (check mqtt.host and mqtt.port)"
    return (
        "broker down or unreachable, or the TLS handshake failed "
        "(check mqtt.host, mqtt.port, mqtt.tls_ca)"
    )


class MqttBridge:
    """A Hub component: door events and health to MQTT, signed unlock commands to the door."""

    def __init__(self, settings: MqttConfig, door: DoorLink, gallery: Path | None = None) -> None:
        """gallery: the door's gallery (config.gallery.path): a retained last person who is no
        longer enrolled there is replaced by NOBODY (_forget_removed). Without it the hub
        cannot tell, and publishes the last person seen as it is."""
        self.settings = settings
        self.door = door
        self.enrolled = None if gallery is None else EnrolledNames(gallery)
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
                read_code_file(settings.unlock_code_file),
                settings.unlock_window_seconds,
                state_file=lockout_path(settings.unlock_code_file),
            )
        self.client = make_client(settings, f"edge-door-hub-{settings.door_id}", self.topics)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.connected = threading.Event()
        # Event messages that came before the first connection (the door's held ones, handed
        # over as the hub subscribes), those a lost connection had not delivered, and those
        # that come while they are published: published in order, each once, once it is made
        # (_replay_early); None after that.
        self._early: deque[tuple[float, dict[str, Any] | str]] | None = deque(maxlen=HELD_EVENTS)
        # Event messages published and not yet acknowledged: mid -> when (IN_FLIGHT_SECONDS).
        self._events_in_flight: dict[int, float] = {}
        # Publishes not yet acknowledged: mid -> topic, to name a topic the broker refuses;
        # acknowledgements that came before their publish was noted (paho's thread can read
        # the PUBACK before client.publish() has returned on another): mid -> reason code;
        # the topics refused on this connection, each logged once.
        self._unacknowledged: dict[int, str] = {}
        self._acknowledged_first: dict[int, Any] = {}
        self._refused_topics: set[str] = set()
        self._acks_lock = threading.Lock()
        # Refused commands (_refuse; from paho's thread and the unlock worker): anyone who may
        # publish on a command topic could flood the journal.
        self._refusals = Throttle(REFUSAL_LOG_SECONDS, burst=REFUSALS_LOGGED)
        # LOCK commands from the lock card, which need no code: as many are answered (a line
        # and the state re-sent) as refusals are said, so a flood of them neither fills the
        # journal nor takes the queue places the door's own events need.
        self._lock_commands = Throttle(REFUSAL_LOG_SECONDS, burst=REFUSALS_LOGGED)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._health: DoorHealth = door.health
        self._strike = "locked"
        # Monotonic time of the last unlock or relock event: the strike it says holds over a
        # status poll for EVENT_STRIKE_SECONDS (a poll answered just before it is older).
        self._strike_event_at = -math.inf
        self._last_person: dict[str, Any] | None = None
        # Monotonic time a door event set _last_person: the names read before it may not hold
        # someone enrolled since, so only the heartbeat's next read checks it.
        self._person_at = float("-inf")
        self._heartbeat: threading.Thread | None = None
        self._where = f"host={settings.host} port={settings.port}"
        self._unlocks: queue.Queue[_Unlock | None] = queue.Queue(maxsize=UNLOCK_QUEUE)
        # Queueing a command and the stop's emptying of the queue, one at a time (stop).
        self._unlock_gate = threading.Lock()
        self._unlocker: threading.Thread | None = None
        self._subscriptions: dict[int, list[str]] = {}  # subscribe mid -> its topics
        self._resent = -RESEND_SECONDS  # monotonic time of the last re-send for Home Assistant
        # A full queue: logged at once, then with a count of the messages dropped since.
        self._dropping = Throttle(REFUSAL_LOG_SECONDS)
        self._dropped = 0
        self._unpublished_refusals = 0  # refusals counted, not yet said in an event
        self._last_unsaid = ""  # the reason of the latest refusal not yet said in an event
        # Publishes come from the door's events and from the connect callback's thread: the
        # check-and-set of _dropped is one step.
        self._publish_lock = threading.Lock()
        self._fell_back = False  # this connection is MQTT 3.1.1: the broker refused MQTT 5
        # The broker answered this connection attempt (a CONNACK, accepting or refusing): a
        # connection closed before any answer is logged by _on_disconnect, throttled.
        self._answered = False
        self._closed_early = Throttle(CLOSED_EARLY_LOG_SECONDS)
        self._connected_at = float("-inf")  # monotonic time the broker last accepted us
        self._short_lived_wait = 0.0  # seconds the next reconnect waits, beside paho's
        # Another door's discovery on this door's Home Assistant device: logged, throttled.
        self._device_topic = self.topics.config("binary_sensor", "door")
        self._shared_device = Throttle(CLOSED_EARLY_LOG_SECONDS)
        self.client.on_subscribe = self._on_subscribe

    # --- Hub component ------------------------------------------------------------------------

    @property
    def _acl_user(self) -> str:
        """The user whose rights in the broker's ACL a refused publish or subscription asks for."""
        return self.settings.username or "(anonymous)"

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
        self._unlocker = threading.Thread(target=self._unlock_loop, name="mqtt-unlock", daemon=True)
        self._unlocker.start()
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=KEEPALIVE,
            clean_start=True,
            properties=connect_properties(),
        )
        self.client.loop_start()
        self._heartbeat = threading.Thread(target=self._beat, name="mqtt-state", daemon=True)
        self._heartbeat.start()

    def _explain_strike(self) -> None:
        self._warn_clear_text()
        settings = self.settings
        if self.lock_entity:
            log.info(
                "home assistant lock entity on: unlock by code on %s", self.topics.lock_command
            )
            return
        if not settings.remote_unlock:
            why = "mqtt.remote_unlock is false"
        else:
            why = "mqtt.unlock_code_file is not set (make one with `edge-app hub unlock-code`)"
        if settings.unlock_code_file is not None and not settings.remote_unlock:
            why += " (mqtt.unlock_code_file is ignored until remote_unlock = true)"
        log.info("home assistant lock entity off, the strike is a read-only sensor: %s", why)

    def _warn_clear_text(self) -> None:
        """A warning naming the secrets that cross the network unencrypted without TLS."""
        if self.settings.tls_ca is not None:
            return
        secrets = []
        if self.settings.username and self.settings.password_file is not None:
            secrets.append("the broker password (mqtt.password_file)")
        if self.lock_entity:
            secrets.append("the unlock code")
        if secrets:
            verb = "cross" if len(secrets) > 1 else "crosses"
            log.warning(
                "mqtt.tls_ca is not set: %s %s the network in clear text; use TLS to the "
                "broker (docs/HOME_ASSISTANT.md)",
                " and ".join(secrets),
                verb,
            )

    def stop(self) -> None:
        """Leave a retained state that says nothing is known of the door (door offline, camera
        unknown, strike locked, `problem` STOPPED), then availability offline.

        Home Assistant re-reads retained messages after each of its restarts and restarts the
        diagnostics' expire_after for them: the last live state would show the door connected
        and its camera OK for 90 s while no hub runs. A hub killed with SIGKILL cannot do
        this: the broker publishes its last will (offline) and keeps its last state."""
        with self._publish_lock:
            # Under the lock: a state computed before this is published before the final one,
            # and any computed after it is the stopped state (state(), _publish_availability).
            self._stop.set()
        # Accepted commands the door was not asked yet are refused, each as a `denied` event
        # before the stopped state: a stopping hub opens no door, and says so. Under the gate:
        # a command accepted meanwhile is either queued before this or refused by _open_door.
        with self._unlock_gate:
            waiting = []
            while True:
                try:
                    waiting.append(self._unlocks.get_nowait())
                except queue.Empty:
                    break
        for request in waiting:
            if request is not None:
                self._refused_unlock(request, STOPPING)
        with contextlib.suppress(queue.Full):
            self._unlocks.put_nowait(None)  # when full, the worker sees _stop after its request
        if self.connected.is_set():
            infos = [
                self._publish(self.topics.state, self.state, retain=True),
                self._publish(self.topics.availability, OFFLINE, retain=True),
            ]
            deadline = time.monotonic() + 2.0
            for info in infos:
                if info is not None:
                    with contextlib.suppress(RuntimeError, ValueError):
                        info.wait_for_publish(timeout=max(0.0, deadline - time.monotonic()))
        self.client.disconnect()
        self.client.loop_stop()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=2.0)
        if self._unlocker is not None:
            self._unlocker.join(timeout=REQUEST_TIMEOUT + 1)

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        with self._lock:
            kept = self._early is not None  # published by _replay_early, after those before it
            if self._early is not None:
                self._early.append((time.monotonic(), event_message(event, self.settings.door_id)))
            if kind == "unlock":
                self._strike = "unlocked"
            elif kind == "relock":
                self._strike = "locked"
            if kind in ("unlock", "relock"):
                self._strike_event_at = time.monotonic()
            if kind in ("recognized", "unknown", "unlock") and (
                kind != "unlock" or event.get("name")
            ):
                self._last_person = {
                    "name": event.get("name") or "unknown",
                    "score": event.get("score"),
                    "type": kind,
                    "time": event.get("time"),
                }
                self._person_at = time.monotonic()
        if not kept:
            self._publish(self.topics.event, event_message(event, self.settings.door_id))
        if kind in ("unlock", "relock"):
            self._publish_state()
        if kind in ("recognized", "unknown", "unlock"):
            self._publish_last_person()

    def on_health(self, health: DoorHealth) -> None:
        """A status poll's answer: the state is published when anything in it changed (the
        strike the relay reports, which no event may have said: an event stream that was
        reconnecting; the door's gallery, source, liveness; why it is down), the
        availability too when the door's health changed."""
        with self._lock:
            before, shown = self._health, self._state_fields()
            self._health = health
            recent_event = time.monotonic() - self._strike_event_at < EVENT_STRIKE_SECONDS
            if health.reachable and not recent_event:
                self._strike = "unlocked" if health.relay_active else "locked"
            changed = self._state_fields() != shown
        if (before.healthy, before.reachable, before.frames) != (
            health.healthy,
            health.reachable,
            health.frames,
        ):
            self._publish_state()  # before the availability, as in _publish_all
            self._publish_availability()
        elif changed:
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
        self._answered = True
        if reason_code == UNSUPPORTED_PROTOCOL and client.protocol == mqtt.MQTTv5:
            # Falling back, rather than refusing such a broker, keeps the door working in
            # Home Assistant on an old broker, where the hub is exactly as exposed as with
            # any MQTT 3.1.1 client: the warning says what the broker must limit instead. It
            # weakens nothing elsewhere: a broker that speaks MQTT 5 always gets MQTT 5, and
            # only the broker (or, without TLS, someone who could inject any packet at all)
            # can give this answer. paho reconnects with its backoff, now as 3.1.1.
            _fall_back_to_mqtt311(client)
            self._fell_back = True
            log.warning(
                "mqtt broker does not speak MQTT 5 %s: connecting with MQTT 3.1.1, which "
                "cannot ask the broker to limit what it sends the hub (%d bytes with MQTT 5); "
                "limit message sizes at the broker (Mosquitto's message_size_limit) and who "
                "may publish to the hub's topics (docs/HOME_ASSISTANT.md)",
                self._where,
                MAX_PACKET_BYTES,
            )
            return
        if reason_code.is_failure:
            log.error(
                "mqtt connection refused %s reason=%r: %s (retrying with backoff)",
                self._where,
                str(reason_code),
                REFUSED_CONNECTION_ADVICE.get(str(reason_code), OTHER_REFUSAL_ADVICE),
            )
            return
        # Clean start: what the last connection left unacknowledged (a stale availability or
        # state) is dropped, not re-sent after the fresh state published here; its recent
        # events are published again after it (module docstring).
        stale = client.drop_out_messages()
        again = self._undelivered_events(stale)
        log.info(
            "mqtt connected %s mqtt=%s max_packet=%s dropped_unacknowledged=%d "
            "events_sent_again=%d",
            self._where,
            "5" if client.protocol == mqtt.MQTTv5 else "3.1.1",
            MAX_PACKET_BYTES if client.protocol == mqtt.MQTTv5 else "none",
            len(stale) - len(again),
            len(again),
        )
        if again:
            with self._lock:  # before connected is set: newer events queue up behind them
                newer = list(self._early or ())
                self._early = deque(maxlen=HELD_EVENTS)
                now = time.monotonic()
                self._early.extend([(now, message) for message in again] + newer)
        self._closed_early = Throttle(CLOSED_EARLY_LOG_SECONDS)  # a new outage logs at once
        self._connected_at = time.monotonic()
        self._too_large_for(properties)
        with self._acks_lock:
            self._unacknowledged.clear()  # dropped above
            self._acknowledged_first.clear()
            self._refused_topics.clear()  # a refusal is said again on each connection
        self.connected.set()
        # (topic, whether its messages keep their retain flag as published)
        topics = [(self.topics.ha_status, False)]
        if self.settings.discovery:
            topics.append((self._device_topic, False))
        # Commands keep it (MQTT 5): a broker clears it on a message it delivers live, and a
        # retained command, refused when it comes, would otherwise open the door once and
        # stay on the broker. MQTT 3.1.1 cannot ask this (docs/HOME_ASSISTANT.md).
        if self.verifier is not None:
            topics.append((self.topics.unlock, True))
        if self.code_verifier is not None:
            topics.append((self.topics.lock_command, True))
        if self.enrolled is not None:
            # For the retained last person the broker kept (from before this hub ran, or
            # published by someone else): one naming a person no longer enrolled is replaced.
            topics.append((self.topics.last_person, False))
        if client.protocol == mqtt.MQTTv5:
            _, mid = client.subscribe(
                [(t, SubscribeOptions(qos=1, retainAsPublished=keep)) for t, keep in topics]
            )
        else:
            _, mid = client.subscribe([(topic, 1) for topic, _ in topics])
        if mid is not None:
            self._subscriptions = {mid: [topic for topic, _ in topics]}
        self._publish_all()
        self._replay_early()

    def _undelivered_events(self, stale: list[mqtt.MQTTMessage]) -> list[str]:
        """The event messages among those a lost connection left unacknowledged that are at
        most IN_FLIGHT_SECONDS old, in the order they were published (the last HELD_EVENTS)."""
        with self._acks_lock:
            sent, self._events_in_flight = self._events_in_flight, {}
        now = time.monotonic()
        again = [
            message.payload.decode("utf-8")
            for message in stale
            if message.topic == self.topics.event
            and now - sent.get(message.mid, -math.inf) <= IN_FLIGHT_SECONDS
        ]
        return again[-HELD_EVENTS:]

    def _replay_early(self) -> None:
        """Publish the events kept until the first connection, at most HELD_SECONDS after
        the hub got them, in order, each once: those that come meanwhile are kept too (under
        the same lock that on_event keeps them under) until none is left."""
        while True:
            with self._lock:
                if self._early is None:
                    return
                if not self._early:
                    self._early = None  # from now on on_event publishes itself
                    return
                batch = list(self._early)
                self._early.clear()
            now = time.monotonic()
            for at, message in batch:
                if now - at <= HELD_SECONDS:
                    self._publish(self.topics.event, message)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        """Log a publish the broker refused (MQTT 5 PUBACK 0x80 and above: its ACL), once per
        topic and connection: Home Assistant never gets it (no device without its discovery
        config), and nothing else would say so."""
        with self._acks_lock:
            topic = self._unacknowledged.pop(mid, None)
            self._events_in_flight.pop(mid, None)
            if topic is None:  # before _publish noted it: _publish settles it
                self._acknowledged_first[mid] = reason_code
                if len(self._acknowledged_first) > MAX_QUEUED:
                    del self._acknowledged_first[next(iter(self._acknowledged_first))]
                return
        self._acknowledged(topic, reason_code)

    def _acknowledged(self, topic: str, reason_code: Any) -> None:
        """Log a refused publish of `topic`, the first time on this connection."""
        if not getattr(reason_code, "is_failure", False):
            return
        with self._acks_lock:
            if topic in self._refused_topics:
                return
            self._refused_topics.add(topic)
        log.error(
            "mqtt publish refused topic=%s reason=%r: let user %s write it in the broker's ACL "
            "(docs/HOME_ASSISTANT.md); until then Home Assistant does not get it",
            topic,
            str(reason_code),
            self._acl_user,
        )

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any
    ) -> None:
        """Log each subscription the broker refused (its ACL): nothing would arrive on it."""
        for topic, code in zip(self._subscriptions.get(mid, []), reason_codes, strict=False):
            if code.is_failure and topic == self.topics.last_person:
                log.warning(
                    "mqtt subscription refused topic=%s reason=%r: the hub cannot check the "
                    "retained last person the broker kept from before it started, which may "
                    "name someone removed from the gallery (let user %s read it; "
                    "docs/HOME_ASSISTANT.md)",
                    topic,
                    str(code),
                    self._acl_user,
                )
            elif code.is_failure and topic == self._device_topic:
                log.info(
                    "mqtt subscription refused topic=%s reason=%r: the hub cannot notice "
                    "another door publishing this door's Home Assistant device (let user %s "
                    "read it to be warned; docs/HOME_ASSISTANT.md)",
                    topic,
                    str(code),
                    self._acl_user,
                )
            elif code.is_failure:
                log.error(
                    "mqtt subscription refused topic=%s reason=%r: let user %s read it in the "
                    "broker's ACL (docs/HOME_ASSISTANT.md); until then nothing sent there arrives",
                    topic,
                    str(code),
                    self._acl_user,
                )

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError` around the connection: the error
        # is the one being handled.
        log.warning(
            "mqtt cannot connect %s: %s; retrying with backoff",
            self._where,
            connect_failure(sys.exc_info()[1], tls=self.settings.tls_ca is not None),
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
        answered, self._answered = self._answered, False
        self.connected.clear()
        if was and self._fell_back:
            # The 3.1.1 connection this fell back to has ended: the next one asks for MQTT 5
            # again (a broker upgraded meanwhile gets it; a 3.1.1-only one says no again).
            _ask_for_mqtt5_again(client)
            self._fell_back = False
        if not self._stop.is_set() and was:
            lasted = time.monotonic() - self._connected_at
            if lasted < SHORT_LIVED_SECONDS:
                self._short_lived_wait = min(
                    max(2 * self._short_lived_wait, RECONNECT_MIN), RECONNECT_MAX
                )
            else:
                self._short_lived_wait = 0.0
            log.warning(
                "mqtt disconnected %s reason=%r after %.1f s (reconnecting with backoff%s)",
                self._where,
                str(reason_code),
                lasted,
                f", {self._short_lived_wait:.0f} s more: the broker keeps closing the "
                "connection soon after accepting it"
                if self._short_lived_wait
                else "",
            )
            # On paho's network thread, before it reconnects; a stop ends the wait at once.
            self._stop.wait(self._short_lived_wait)
        elif not self._stop.is_set() and not answered:
            # The TCP connection was made (else _on_connect_fail), the CONNECT sent, and the
            # broker closed it without a CONNACK: what Mosquitto's TLS listener does with a
            # plain connection ("wrong version number" in its log), nothing said on our side.
            held_back = self._closed_early.due()
            if held_back is not None:
                log.warning(
                    "mqtt cannot connect %s: the connection ended before the broker answered "
                    "(reason=%r): a TLS port without mqtt.tls_ca, a broker that refuses this "
                    "client, or one that never answers; retrying with backoff held_back=%d",
                    self._where,
                    str(reason_code),
                    held_back,
                )

    def _too_large_for(self, properties: Any) -> None:
        """Log when the broker's Maximum Packet Size (MQTT 5, in its CONNACK) is smaller than
        the hub's largest message: it closes the connection at that publish."""
        limit = getattr(properties, "MaximumPacketSize", None)
        if not isinstance(limit, int) or not self.settings.discovery:
            return  # (the state, the largest message without discovery, is some 400 bytes)
        largest, topic = max(
            (len(json.dumps(config)) + len(topic) + PUBLISH_OVERHEAD, topic)
            for topic, config in entities(self.topics, self.lock_entity).items()
        )
        if largest > limit:
            log.error(
                "mqtt broker %s takes packets of at most %d bytes, less than the hub's "
                "discovery config on %s (%d bytes): it closes the connection there; raise its "
                "max_packet_size",
                self._where,
                limit,
                topic,
                largest,
            )

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # Runs on paho's network thread: an exception escaping here would end that thread for
        # good (no reconnect, no last will, commands silently ignored), so none may.
        try:
            topic = message.topic
        except UnicodeDecodeError:
            # Only a broker breaking the protocol (or someone injecting into a plain TCP
            # connection) sends this; paho raises on every read of the topic.
            log.warning("mqtt message ignored: its topic is not UTF-8 text")
            return
        try:
            if topic == self.topics.ha_status:
                # A retained "online" is the broker's copy, sent as the hub subscribes, right
                # after it published everything: not Home Assistant starting now.
                if message.payload == b"online" and not message.retain:
                    self._resend_for_home_assistant()
            elif topic in (self.topics.unlock, self.topics.lock_command) and not message.payload:
                # What clears a retained message (`mosquitto_pub -r -n`, after the hub said
                # "retained command ignored"): no command, and no `denied` event to alarm on.
                log.debug("mqtt empty message ignored topic=%s (a retained one cleared)", topic)
            elif topic == self._device_topic:
                self._check_device(message)
            elif topic == self.topics.last_person:
                self._retained_person(message)
            elif topic == self.topics.unlock:
                self._command(message)
            elif topic == self.topics.lock_command:
                self._lock_command(message)
        except Exception as error:
            log.exception("mqtt message on %s not handled", topic)
            if topic in (self.topics.unlock, self.topics.lock_command):
                with contextlib.suppress(Exception):
                    self._refuse(f"internal error ({type(error).__name__})", topic=topic)

    def _check_device(self, message: mqtt.MQTTMessage) -> None:
        """Log another door whose discovery uses this door's Home Assistant device (door ids
        that differ only in `-` and `_`, as edge_door_front_door is both `front-door`'s and
        `front_door`'s, or the same door_id under another topic_prefix): the two overwrite
        each other's entities. Only live messages: a retained one may be this door's own
        from before its door_id or topic_prefix changed, which the hub's publish replaces."""
        if message.retain or not message.payload:
            return
        try:
            config = untrusted_json.loads(bytes(message.payload), MAX_MESSAGE_VALUES)
        except untrusted_json.BadJSON:
            return
        other = config.get("state_topic") if isinstance(config, dict) else None
        if not isinstance(other, str) or other == self.topics.state:
            return
        held_back = self._shared_device.due()
        if held_back is not None:
            log.error(
                "mqtt another door publishes this door's Home Assistant device %s (its state "
                "topic %r, this door's %r): their entities overwrite each other; give each "
                "door a door_id that differs in more than - and _ (docs/HOME_ASSISTANT.md) "
                "held_back=%d",
                self.topics.node,
                other[:200],
                self.topics.state,
                held_back,
            )

    def _retained_person(self, message: mqtt.MQTTMessage) -> None:
        """The retained last person the broker sent at subscribe: kept when the hub has seen
        nobody yet, so that it is checked against the gallery like one the hub published (and
        replaced by NOBODY when it names someone not enrolled). Live messages are the hub's
        own (MQTT 3.1.1 sends them back) or someone else's: not the broker's kept one."""
        if not message.retain or not message.payload or self.enrolled is None:
            return
        try:
            value = untrusted_json.loads(bytes(message.payload), MAX_MESSAGE_VALUES)
        except untrusted_json.BadJSON:
            value = None
        if not isinstance(value, dict):
            value = {"name": "?"}  # not ours: nothing to keep, but replaced with the rest
        person = {key: value.get(key) for key in NOBODY}
        name = person["name"]
        # Longer than any enrolled name (so not one the hub published): never compared, as
        # normalising it takes time quadratic in its combining marks (a planted 64 kB name
        # held paho's network thread a second, a megabyte over MQTT 3.1.1 minutes).
        if not isinstance(name, str | None) or (name and len(name) > MAX_NAME_LENGTH):
            person["name"] = "?"
        with self._lock:
            if self._last_person is not None:
                return  # the hub published a newer one on this connect
            self._last_person = person
            self._person_at = float("-inf")
        if self._forget_removed():
            self._publish_last_person()

    def _forget_removed(self) -> bool:
        """Replace a last person no longer enrolled by NOBODY; True when replaced. Uses the
        names the heartbeat last read (no gallery access here: this runs on paho's thread
        too); one that a door event set after that read waits for the next read."""
        if self.enrolled is None:
            return False
        checked = self.enrolled.checked
        with self._lock:
            person = self._last_person
            if person is None or person.get("name") in NOT_A_PERSON:
                return False
            if self._person_at > checked or self.enrolled.knows(person["name"]) is not False:
                return False
            self._last_person = dict(NOBODY)
        log.info(
            "mqtt last person is no longer enrolled in the gallery: replaced on %s",
            self.topics.last_person,
        )
        return True

    def _resend_for_home_assistant(self) -> None:
        now = time.monotonic()
        if now - self._resent < RESEND_SECONDS:
            log.debug("home assistant online again within %.0f s: not re-sent", RESEND_SECONDS)
            return
        self._resent = now
        log.info("home assistant online: re-sending discovery")
        self._publish_all()

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
        self._open_door(_Unlock(f"mqtt:{origin}", self.topics.unlock, name=origin))

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
            # A wrong code is said one by one, even past a flood of junk on any command topic:
            # else junk on <base>/unlock hid the guesses, and the lock-out, on this one.
            each = isinstance(error, WrongCode)
            if self._refuse(str(error), topic=topic, via=LOCK_ORIGIN, each=each):
                self._publish_state()  # the card shows the real state again
            return
        if command.action == LOCK:
            # The strike relocks by itself after its pulse: nothing to do but say so (the
            # heartbeat re-sends the state for those held back).
            held_back = self._lock_commands.due()
            if held_back is None:
                return
            log.info(
                "lock command: the strike relocks by itself; state re-sent topic=%s%s",
                topic,
                f" held_back={held_back}" if held_back else "",
            )
            with self._acks_lock:
                room = len(self._unacknowledged) <= MAX_QUEUED - REFUSAL_HEADROOM
            if room:
                self._publish_state()
            return
        self._open_door(_Unlock(LOCK_ORIGIN, topic, via=LOCK_ORIGIN, action=command.action))

    def _open_door(self, request: _Unlock) -> None:
        """Hand an accepted command to the unlock thread (never waits for the door here)."""
        with self._unlock_gate:
            stopping = self._stop.is_set()
            if not stopping:
                try:
                    self._unlocks.put_nowait(request)
                    return
                except queue.Full:
                    pass
        why = STOPPING if stopping else "the door has not answered the previous commands yet"
        self._refused_unlock(request, why)

    def _unlock_loop(self) -> None:
        while True:
            request = self._unlocks.get()
            if request is None:
                return
            if self._stop.is_set():
                self._refused_unlock(request, STOPPING)
                return
            try:
                self.door.unlock(REMOTE_REASON, request.origin)
            except DoorRefused as error:  # its reason once, not "door refused unlock: " again
                self._refused_unlock(request, f"the door refused: {error.reason}")
                continue
            except Unanswered as error:
                # Not a refusal: the door may have opened. Its own unlock event (through the
                # event stream) says whether it did; a denied event would say it did not.
                log.warning(
                    "remote unlock unanswered origin=%s topic=%s: %s; the door may have opened, "
                    "its unlock event says whether it did",
                    request.origin,
                    request.topic,
                    error,
                )
                if request.via is not None:
                    self._publish_state()  # the lock card shows the door's state again
                continue
            except ControlError as error:
                self._refused_unlock(request, f"the door refused: {error}")
                continue
            except Exception as error:  # a bug here must not end remote unlock for good
                log.exception("remote unlock failed origin=%s", request.origin)
                self._refused_unlock(request, f"internal error ({type(error).__name__})")
                continue
            action = f" action={request.action}" if request.action else ""
            log.info(
                "remote unlock accepted origin=%s%s topic=%s", request.origin, action, request.topic
            )

    def _refused_unlock(self, request: _Unlock, why: str) -> None:
        published = self._refuse(why, request.name, topic=request.topic, via=request.via)
        if published and request.via is not None:
            self._publish_state()  # the lock card shows the real state again

    def _refuse(
        self,
        why: str,
        origin: str | None = None,
        *,
        topic: str | None = None,
        via: str | None = None,
        each: bool = False,
    ) -> bool:
        """Log a refused command and publish it as a `denied` event (Home Assistant's "remote
        unlock refused" automation fires for each): each of the first REFUSALS_LOGGED within
        REFUSAL_LOG_SECONDS, then only counted until that many fit in that time again; the
        next line and event say how many were not, or the heartbeat does when none comes
        (_say_what_was_held_back). An event is also only counted while the queue has fewer
        than REFUSAL_HEADROOM free places, kept for the door's own. Whether the event was
        published.

        origin: who a verified signed command named (the event's name); via: where a command
        came from (appended to the reason as `origin=...`); each: logged and published
        whatever the count (a wrong code: the lock-outs bound them), the queue permitting."""
        topic = topic or self.topics.unlock
        reason = f"remote unlock refused: {why}" + (f"; origin={via}" if via else "")
        held_back = 0 if each else self._refusals.due()
        if held_back is None:
            with self._acks_lock:
                self._last_unsaid = reason
            return False
        log.warning(
            "remote unlock refused topic=%s origin=%s reason=%r%s",
            topic,
            via or origin or "-",
            why,
            f" held_back={held_back}" if held_back else "",
        )
        with self._acks_lock:
            self._unpublished_refusals += held_back
            if not self._room_for_refusals():
                self._unpublished_refusals += 1
                self._last_unsaid = reason
                return False
            unpublished, self._unpublished_refusals = self._unpublished_refusals, 0
        if unpublished:
            reason += f" ({unpublished} more refused before it, not published one by one)"
        self._publish_refusal(reason, origin)
        return True

    def _room_for_refusals(self) -> bool:
        """Whether a refusal may be published now (under self._acks_lock): connected (else
        _publish drops it, and the count with it), with REFUSAL_HEADROOM places free in the
        queue. Otherwise it is counted, and said by a heartbeat once there is room."""
        return (
            self.connected.is_set() and len(self._unacknowledged) <= MAX_QUEUED - REFUSAL_HEADROOM
        )

    def _publish_refusal(self, reason: str, origin: str | None) -> None:
        now = time.time()
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

    def _publish(
        self, topic: str, payload: Any, *, retain: bool = False
    ) -> mqtt.MQTTMessageInfo | None:
        """Publish with QoS 1 while connected (None when not). payload: a string, something
        for json.dumps, or a function that returns one, called under the publishing lock (so
        that states are sent in the order they were computed in)."""
        if not self.connected.is_set():
            return None  # never queued: retained state is re-sent on connect
        with self._publish_lock:
            value = payload() if callable(payload) else payload
            data = value if isinstance(value, str) else json.dumps(value)
            info = self.client.publish(topic, data, qos=1, retain=retain)
            dropped = 0
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                self._dropped += 1
                if self._dropping.due() is not None:
                    dropped, self._dropped = self._dropped, 0
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            with self._acks_lock:
                answer = self._acknowledged_first.pop(info.mid, None)
                if answer is None:
                    self._unacknowledged[info.mid] = topic
                    if len(self._unacknowledged) > MAX_QUEUED:  # lost with a connection
                        del self._unacknowledged[next(iter(self._unacknowledged))]
                    if topic == self.topics.event:
                        self._events_in_flight[info.mid] = time.monotonic()
                        if len(self._events_in_flight) > MAX_QUEUED:
                            del self._events_in_flight[next(iter(self._events_in_flight))]
            if answer is not None:
                self._acknowledged(topic, answer)
        if dropped:
            log.warning(
                "mqtt broker has not acknowledged %d messages: dropping new ones until it does "
                "topic=%s dropped=%d",
                MAX_QUEUED,
                topic,
                dropped,
            )
        return info

    def _publish_all(self) -> None:
        """Discovery, state, last person, then availability: all Home Assistant needs. The
        availability comes last, so that the door's entities become available with the fresh
        state, not with the one the broker kept from before (an `unlocked` strike left by a
        hub killed mid-pulse)."""
        self._publish_discovery()
        self._publish_state()
        self._forget_removed()
        self._publish_last_person()
        self._publish_availability()

    def _publish_discovery(self) -> None:
        if not self.settings.discovery:
            return
        for topic, config in entities(self.topics, self.lock_entity).items():
            self._publish(topic, config, retain=True)
        for topic in retired(self.topics, self.lock_entity):
            self._publish(topic, "", retain=True)

    def _publish_availability(self) -> None:
        self._publish(self.topics.availability, self._availability, retain=True)

    def _availability(self) -> str:
        """Online while the hub runs and the door process answers, whatever its camera: the
        strike can still be unlocked from the lock card when the camera has failed (the
        fallback a household needs then), and the Camera diagnostic says what is wrong."""
        with self._lock:
            return ONLINE if self._health.reachable and not self._stop.is_set() else OFFLINE

    def state(self) -> dict[str, Any]:
        """The retained state; once stop() has begun, what the stopped hub leaves (the door
        offline and its camera unknown, which Home Assistant's diagnostics show as
        disconnected and unknown, and the strike locked, as it is again after a pulse)."""
        if self._stop.is_set():
            return {
                "strike": "locked",
                "door": OFFLINE,
                "camera": "unknown",
                "problem": STOPPED,
                "source": None,
                "backend": None,
                "gallery_people": None,
                "liveness": None,
                "updated": _iso(time.time()),
            }
        with self._lock:
            return {**self._state_fields(), "updated": _iso(time.time())}

    def _state_fields(self) -> dict[str, Any]:
        """The state but its time, under self._lock."""
        health = self._health
        status = health.status or {}
        return {
            "strike": self._strike,
            "door": ONLINE if health.reachable else OFFLINE,
            "camera": _camera_state(health),
            "problem": health.error,
            "source": status.get("source"),
            "backend": status.get("backend"),
            "gallery_people": status.get("gallery_people"),
            "liveness": status.get("liveness"),
        }

    def _publish_state(self) -> None:
        self._publish(self.topics.state, self.state, retain=True)

    def _publish_last_person(self) -> None:
        """The last person as it is when published (read under the publishing lock, as the
        state is): read before, a thread that waited for that lock while a door event's
        thread published a newer person left the older one retained."""
        with self._lock:
            if self._last_person is None:  # once set, never None again
                return
        self._publish(self.topics.last_person, self._current_person, retain=True)

    def _current_person(self) -> dict[str, Any] | None:
        with self._lock:
            return self._last_person

    def _beat(self) -> None:
        """Every STATE_EVERY: the state and the availability (either may have been dropped
        with a full queue, and Home Assistant would go on showing a stopped door available),
        and the gallery's names read again if it changed
        (a last person removed from it is then replaced: _forget_removed). The names are
        first read at once, for the retained last person the broker sends at connect."""
        failed: str | None = None
        self._check_gallery()
        try:
            while not self._stop.wait(STATE_EVERY):
                try:
                    self._publish_state()
                    self._publish_availability()
                    self._say_what_was_held_back()
                except Exception as error:  # the state must keep being re-sent after a fault
                    if repr(error) != failed:
                        log.exception("mqtt state not published")
                    failed = repr(error)
                else:
                    failed = None
                self._check_gallery()
        finally:
            if self.enrolled is not None:
                self.enrolled.close()

    def _say_what_was_held_back(self) -> None:
        """On the heartbeat: the refusals counted since the last one said, in one line and
        one `denied` event (a burst of them that nothing followed would otherwise never be
        said: Home Assistant's automation would not fire for someone's tries after it), and
        the messages dropped with a full queue since the last line said how many."""
        held = self._refusals.held()  # refusals neither logged nor published
        with self._acks_lock:
            last = self._last_unsaid.removeprefix("remote unlock refused: ")
            unsaid = held + self._unpublished_refusals
            room = self._room_for_refusals()
            self._unpublished_refusals = 0 if room else unsaid
        if held:  # logged whatever the queue: the journal is not the broker's
            log.warning(
                "remote unlock refused %d more time(s), not logged one by one; the last: %s",
                held,
                last,
            )
        if unsaid and room:
            self._publish_refusal(
                f"remote unlock refused {unsaid} more time(s), not published one by one; the "
                f"last: {last}",
                None,
            )
        with self._publish_lock:
            dropped, self._dropped = self._dropped, 0
        if dropped:
            log.warning(
                "mqtt dropped %d more message(s) while the broker had %d unacknowledged",
                dropped,
                MAX_QUEUED,
            )

    def _check_gallery(self) -> None:
        if self.enrolled is None:
            return
        try:
            self.enrolled.refresh()
            if self._forget_removed():
                self._publish_last_person()
        except Exception:  # a bug here must not end the heartbeat
            log.exception("mqtt gallery check failed")


def clear_discovery(settings: MqttConfig, timeout: float = 10.0) -> list[str]:
    """Remove this door from Home Assistant: empty retained payloads on every discovery
    topic and on the retained state topics. Returns the topics cleared."""
    topics = Topics.of(settings)
    # MQTT 3.1.1, which every broker speaks: this client subscribes to nothing, so the broker
    # sends it only acknowledgements and there is no message size to limit.
    client = make_client(
        settings, f"edge-door-clear-{settings.door_id}", topics, MQTTProtocolVersion.MQTTv311
    )
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
        deadline = time.monotonic() + timeout
        try:
            for info in infos:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            unacknowledged = sum(not info.is_published() for info in infos)
        except (RuntimeError, ValueError) as error:  # the connection was lost meanwhile
            raise MqttError(f"mqtt: clearing failed ({error}); run it again") from None
        if unacknowledged:
            raise MqttError(
                f"mqtt: the broker did not acknowledge {unacknowledged} of {len(infos)} cleared "
                f"topics within {timeout:.0f} s; run it again"
            )
        return cleared
    finally:
        client.disconnect()
        client.loop_stop()
