"""Topics and Home Assistant MQTT discovery payloads for one door (pure functions).

Entities, all on one device:
  binary_sensor strike      device_class lock: on = the relay holds the strike open
  event         event       event types recognized, unknown, unlock, denied, spoof
  sensor        last_person the last person seen (a name or "unknown"), with attributes
  binary_sensor door        device_class connectivity: the door process answers (diagnostic)
  binary_sensor camera      device_class problem: no fresh camera frames (diagnostic)

The first three share the availability topic, which is online only while the hub is
connected AND the door answers with fresh frames. The two diagnostic sensors carry no
availability (they must be able to say what is wrong) and expire instead, so a dead hub
leaves them unavailable rather than stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_app import __version__
from edge_app.config import MqttConfig

EVENT_TYPES = ("recognized", "unknown", "unlock", "denied", "spoof")
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


def entities(topics: Topics) -> dict[str, dict[str, Any]]:
    """Discovery config topic -> payload, for every entity of the door."""
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

    return {
        topics.config("binary_sensor", "strike"): {
            **common,
            **available,
            **uid("strike"),
            "name": "Strike",
            "device_class": "lock",
            "state_topic": topics.state,
            "value_template": "{{ 'ON' if value_json.strike == 'unlocked' else 'OFF' }}",
        },
        topics.config("event", "event"): {
            **common,
            **available,
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
            "value_template": "{{ 'ON' if value_json.camera != 'ok' else 'OFF' }}",
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
