"""The hub's MQTT discovery read by Home Assistant itself, not by a description of it.

Home Assistant (tests/requirements-ha.txt, pinned) runs in its own venv, `.venv-ha`, since it
needs Python 3.13; `make ha-check` builds it and runs this file. tests/ha_check.py runs there:
every discovery config the hub publishes must pass the schema Home Assistant validates
discovered MQTT entities with; every value template, rendered by Home Assistant's MQTT
template classes against the state the hub really publishes (its own `state()` for a door
that is fine, open, dark or gone), must give the entity the state it should show; and the
lock card's command template, rendered as the card's buttons render it with the code typed,
must be a command the hub's own verifier accepts with that code. The automations in
docs/HOME_ASSISTANT.md must load as Home Assistant loads one and fire for exactly the events
they are written for. Skipped, with the reason, where `.venv-ha` has not been built.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from test_hub_review import plain_settings

from edge_app.hub import DoorHealth, DoorLink
from edge_app.hub.code import LOCK, OPEN, UNLOCK, CodeHash, CodeVerifier
from edge_app.hub.discovery import Topics, entities, event_message
from edge_app.hub.door import judge
from edge_app.hub.mqtt import NOBODY, MqttBridge
from edge_app.paths import REPO_ROOT
from edge_app.picture import DARK

HA_PYTHON = REPO_ROOT / ".venv-ha" / "bin" / "python"
CHECK = Path(__file__).resolve().parent / "ha_check.py"
CODE = "482915"
# A door that is fine, one holding the strike open, one whose camera shows nothing, one gone;
# then the state a hub leaves when it stops cleanly.
DOORS = {
    "fine": judge({"last_frame_age": 0.1, "relay_active": False}, stale_seconds=10),
    "open": judge({"last_frame_age": 0.1, "relay_active": True}, stale_seconds=10),
    "dark": judge({"last_frame_age": 0.1, "picture": DARK}, stale_seconds=10),
    "gone": DoorHealth(False, False, None, "door.sock: no door socket"),
}
NOW = time.time()
# Events as the door and the hub publish them on <base>/event (before event_message).
EVENTS: dict[str, dict[str, Any]] = {
    "face unlock": {"type": "unlock", "name": "Alice", "score": 0.81, "track": 4},
    "remote unlock": {"type": "unlock", "name": None, "reason": "remote; origin=mqtt:ha-lock"},
    "unknown face": {"type": "unknown", "name": None, "score": 0.12, "track": 5},
    "cooldown": {"type": "denied", "name": "Alice", "score": 0.8, "reason": "cooldown"},
    "wrong code": {
        "type": "denied",
        "name": None,
        "reason": "remote unlock refused: wrong code (1 of 5 in 60 s); origin=mqtt:ha-lock",
    },
    "relock": {"type": "relock", "name": "Alice", "reason": "timeout"},
}
for _event in EVENTS.values():
    _event.update(timestamp=round(NOW, 3), time="2026-01-01T00:00:00.000+00:00")
# What each entity must show for each door, in DOORS' order, then for the stopped hub's state.
EXPECTED = {
    "binary_sensor/edge_door_front/strike": ["off", "on", "off", "off", "off"],
    "lock/edge_door_front/strike": ["LOCKED", "UNLOCKED", "LOCKED", "LOCKED", "LOCKED"],
    "binary_sensor/edge_door_front/door": ["on", "on", "on", "off", "off"],
    "binary_sensor/edge_door_front/camera": ["off", "off", "on", "unknown", "unknown"],
    # Alice, then the value that replaces her once she is no longer enrolled (NOBODY).
    "sensor/edge_door_front/last_person": ["Alice", "unknown"],
}


def published_states(tmp_path: Path) -> list[str]:
    """The state payload the hub publishes for each door in DOORS, then the one it leaves
    retained when it stops (stop() on a bridge that never connected publishes nothing)."""
    bridge = MqttBridge(plain_settings(tmp_path, 1883), DoorLink(tmp_path / "door.sock"))
    states = []
    for health in DOORS.values():
        bridge.on_health(health)  # not connected: nothing is sent, the state is kept
        states.append(json.dumps(bridge.state()))
    bridge.stop()
    states.append(json.dumps(bridge.state()))
    return states


def last_person(tmp_path: Path) -> str:
    bridge = MqttBridge(plain_settings(tmp_path, 1883), DoorLink(tmp_path / "door.sock"))
    bridge.on_event({"type": "unlock", "name": "Alice", "score": 0.81, "timestamp": time.time()})
    return json.dumps(bridge._last_person)


@pytest.fixture(scope="module")
def home_assistant() -> Path:
    if not HA_PYTHON.is_file():
        pytest.skip(
            "Home Assistant is not installed: `make ha-check` builds .venv-ha (it needs "
            "Python 3.13) and runs this file"
        )
    return HA_PYTHON


def test_home_assistant_takes_every_entity_and_shows_the_right_state(
    home_assistant: Path, tmp_path: Path
) -> None:
    topics = Topics("edge-door/front", "homeassistant", "front")
    configs = {**entities(topics, lock=False), **entities(topics, lock=True)}
    states, person = published_states(tmp_path), last_person(tmp_path)
    payloads = {
        topic: [person, json.dumps(NOBODY)] if "last_person" in topic else states
        for topic, config in configs.items()
        if config.get("state_topic") == topics.state or "last_person" in topic
    }
    commands = [("payload_unlock", CODE), ("payload_open", CODE), ("payload_lock", None)]
    request = {
        "configs": configs,
        "payloads": payloads,
        "commands": commands,
        "automations": documented_automations(),
        "events": [event_message(event, "front") for event in EVENTS.values()],
        "event_entity": "event.edge_door_front_door_event",
    }
    # The hub runs before anyone presses the card: a verifier refuses commands stamped before
    # it was made (edge_app.hub.signing.HubStart). A fresh one per button: they are rendered
    # within one second, and a second command with the same timestamp and code is refused as
    # a replay, whatever its action.
    stored = CodeHash.of(CODE)
    verifiers = [CodeVerifier(stored) for _ in commands]
    done = subprocess.run(
        [str(home_assistant), str(CHECK)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    automations = results.pop("automations")

    assert {topic: r["error"] for topic, r in results.items()} == dict.fromkeys(configs)
    shown = {
        topic.removeprefix("homeassistant/").removesuffix("/config"): result["rendered"]
        for topic, result in results.items()
        if result["rendered"]
    }
    assert shown == EXPECTED

    # The lock card's buttons: what Home Assistant sends is what the hub's verifier takes.
    (lock,) = [r for topic, r in results.items() if topic.startswith("homeassistant/lock/")]
    actions = [
        verifier.verify(c.encode()).action
        for verifier, c in zip(verifiers, lock["commands"], strict=True)
    ]
    assert actions == [UNLOCK, OPEN, LOCK]

    # docs/HOME_ASSISTANT.md's automations load as Home Assistant loads one, and each fires
    # for exactly the events it is written for, as the event entity holds the hub's messages.
    assert [(a["status"], a["error"]) for a in automations] == [("ok", None)] * 3
    fired = {
        a["alias"]: [kind for kind, fires in zip(EVENTS, a["fires"], strict=True) if fires]
        for a in automations
    }
    assert fired == {
        "Front door: who came in": ["face unlock", "remote unlock"],
        "Front door: unknown face": ["unknown face"],
        "Front door: remote unlock refused": ["wrong code"],
    }


def documented_automations() -> str:
    text = (REPO_ROOT / "docs" / "HOME_ASSISTANT.md").read_text(encoding="utf-8")
    found = re.search(r"```yaml\n(automation:.*?)```", text, re.S)
    assert found is not None, "docs/HOME_ASSISTANT.md has no automation example"
    return found.group(1)
