"""Topics and Home Assistant MQTT discovery payloads for one door (pure functions).

Entities, all on one device:
  lock          strike      with remote unlock by code: Home Assistant's lock card asks for
                            the code and sends it, the action and a timestamp (LOCKED or
                            UNLOCKED from the relay state); replaces the binary sensor
  binary_sensor strike      otherwise, read-only, device_class lock: on = the relay holds the
                            strike open
  event         event       event types recognized, unknown, unlock, denied, relock, spoof
  sensor        last_person the last person seen (a name or "unknown"), with attributes
  binary_sensor door        device_class connectivity: the door process answers (diagnostic)
  binary_sensor camera      device_class problem: no fresh camera frames, or a picture that
                            shows nothing, dark or covered (diagnostic); unknown while the
                            door does not answer

The strike and the last person share the availability topic, which is online while the hub
is connected and the door process answers (a stalled camera is the Camera diagnostic's to
show: the lock card stays usable). The door event has none: Home Assistant drops what an
unavailable entity receives. The two diagnostic sensors carry no availability (they must be
able to say what is wrong) and expire instead, so a dead hub leaves them unavailable rather
than stale. The state is retained and Home Assistant restarts expire_after for a retained
message, so a clean stop leaves a state that says nothing is known of the door
(edge_app.hub.mqtt.MqttBridge.stop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_app import __version__
from edge_app.config import MqttConfig
from edge_app.events import TYPES
from edge_app.hub.code import CODE_FORMAT, LOCK, OPEN, UNLOCK

# Every event the door records: Home Assistant's event entity rejects (and logs) a type it
# was not told of, as it did for every relock.
EVENT_TYPES = TYPES
ONLINE, OFFLINE = "online", "offline"
STATE_EVERY = 30.0  # seconds between state republishes (the diagnostics' heartbeat)
EXPIRE_AFTER = 3 * int(STATE_EVERY)


@dataclass(frozen=True)
class Topics:
    base: str  # <topic_prefix>/<door_id>
    discovery_prefix: str
    door_id: str

    @classmethod
    def of(cls, settings: MqttConfig) -> Topics:
        return cls(
            f"{settings.topic_prefix}/{settings.door_id}",
            settings.discovery_prefix,
            settings.door_id,
        )

    @property
    def node(self) -> str:
        """The Home Assistant device and unique_id prefix. Not injective (`front-door` and
        `front_door` are both edge_door_front_door), and kept so: changing it would orphan
        every existing install's entities. The hub names another door it sees on its device
        (MqttBridge._check_device)."""
        return f"edge_door_{self.door_id}".replace("-", "_")

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def event(self) -> str:
        return f"{self.base}/event"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def last_person(self) -> str:
        return f"{self.base}/last_person"

    @property
    def unlock(self) -> str:
        return f"{self.base}/unlock"

    @property
    def lock_command(self) -> str:
        return f"{self.base}/lock/set"

    @property
    def ha_status(self) -> str:
        return f"{self.discovery_prefix}/status"

    def config(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node}/{object_id}/config"


def device(topics: Topics) -> dict[str, Any]:
    return {
        "identifiers": [topics.node],
        "name": f"Edge door {topics.door_id}",
        "manufacturer": "edge-door",
        "model": "Face-recognition door (edge-app)",
        "sw_version": __version__,
    }


# What Home Assistant's MQTT lock publishes on command_topic: `value` is payload_lock,
# payload_unlock or payload_open, `code` what the user typed (checked against code_format),
# `now()` Home Assistant's clock. The code is digits only, so it cannot break the JSON.
LOCK_COMMAND_TEMPLATE = (
    '{"action": "{{ value }}", "code": "{{ code }}", "timestamp": {{ now().timestamp() | int }}}'
)


def strike_entity(lock: bool) -> tuple[str, str]:
    """(component, object id) of the strike: a lock with remote unlock by code, else a
    read-only binary sensor. The other one's config topic is cleared on connect."""
    return ("lock", "strike") if lock else ("binary_sensor", "strike")


def retired(topics: Topics, lock: bool) -> list[str]:
    """Config topics of entities this configuration does not publish (a strike of the other
    kind, left by an earlier configuration): cleared with empty retained payloads."""
    return [topics.config(*strike_entity(not lock))]


def entities(topics: Topics, lock: bool = False) -> dict[str, dict[str, Any]]:
    """Discovery config topic -> payload, for every entity of the door.

    lock: publish the strike as an MQTT lock that sends the code (remote_unlock with an
    unlock_code_file); otherwise as a read-only binary sensor.
    """
    common = {
        "device": device(topics),
        "origin": {"name": "edge-door", "sw_version": __version__},
    }
    available = {
        "availability_topic": topics.availability,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
    }

    def uid(object_id: str) -> dict[str, str]:
        return {"unique_id": f"{topics.node}_{object_id}"}

    strike: dict[str, Any] = {**common, **available, **uid("strike"), "name": "Strike"}
    if lock:
        strike.update(
            {
                "command_topic": topics.lock_command,
                "command_template": LOCK_COMMAND_TEMPLATE,
                "code_format": CODE_FORMAT,
                "payload_lock": LOCK,
                "payload_unlock": UNLOCK,
                "payload_open": OPEN,
                "state_topic": topics.state,
                "value_template": (
                    "{{ 'UNLOCKED' if value_json.strike == 'unlocked' else 'LOCKED' }}"
                ),
                "state_locked": "LOCKED",
                "state_unlocked": "UNLOCKED",
                "optimistic": False,
                "retain": False,
                "qos": 1,
            }
        )
    else:
        strike.update(
            {
                "device_class": "lock",
                "state_topic": topics.state,
                "value_template": "{{ 'ON' if value_json.strike == 'unlocked' else 'OFF' }}",
            }
        )
    return {
        topics.config(*strike_entity(lock)): strike,
        # No availability: Home Assistant drops what an unavailable entity receives, and a door
        # event (a wrong code guessed while the camera is down, a remote unlock) is news most
        # of all while the door is unwell. It has no state to go stale: when the hub is gone,
        # no event comes.
        topics.config("event", "event"): {
            **common,
            **uid("event"),
            "name": "Door event",
            "state_topic": topics.event,
            "event_types": list(EVENT_TYPES),
        },
        topics.config("sensor", "last_person"): {
            **common,
            **available,
            **uid("last_person"),
            "name": "Last person",
            "icon": "mdi:account",
            "state_topic": topics.last_person,
            "value_template": "{{ value_json.name }}",
            "json_attributes_topic": topics.last_person,
        },
        topics.config("binary_sensor", "door"): {
            **common,
            **uid("door"),
            "name": "Door process",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "state_topic": topics.state,
            "value_template": "{{ 'ON' if value_json.door == 'online' else 'OFF' }}",
            "expire_after": EXPIRE_AFTER,
        },
        topics.config("binary_sensor", "camera"): {
            **common,
            **uid("camera"),
            "name": "Camera",
            "device_class": "problem",
            "entity_category": "diagnostic",
            "state_topic": topics.state,
            # "None" is Home Assistant's payload for an unknown state: a door that does not
            # answer, or a stopped hub, says nothing of its camera.
            "value_template": (
                "{{ 'None' if value_json.camera == 'unknown' "
                "else 'ON' if value_json.camera != 'ok' else 'OFF' }}"
            ),
            "expire_after": EXPIRE_AFTER,
        },
    }


def event_message(event: dict[str, Any], door_id: str) -> dict[str, Any]:
    """A door event as published on <base>/event: Frigate-like fields, never embeddings.

    `event_type` is what Home Assistant's event entity reads; the rest become attributes.
    """
    kind = str(event.get("type"))
    return {
        "event_type": kind,
        "type": kind,
        "name": event.get("name"),
        "score": event.get("score"),
        "liveness": event.get("liveness"),
        "track": event.get("track"),
        "reason": event.get("reason"),
        "timestamp": event.get("timestamp"),
        "time": event.get("time"),
        "door": door_id,
    }
