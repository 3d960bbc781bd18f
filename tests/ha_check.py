"""Run inside Home Assistant's own venv (.venv-ha, Python 3.13), by
tests/test_home_assistant.py. Reads a JSON request on stdin: the hub's discovery configs,
sample state payloads per topic, and lock commands to render. For each config it applies the
schema Home Assistant's MQTT integration validates discovered entities with, renders its
value template against each sample the way an MQTT entity does (MqttValueTemplate; for a
binary sensor, the state that rendering gives: on, off or unknown), and, for
a lock, renders its command template the way the lock card's unlock, open and lock buttons do
(MqttCommandTemplate, with the code typed). Prints one JSON object. It imports no edge_app:
that venv does not have it."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import tempfile
from typing import Any


async def check(request: dict[str, Any]) -> dict[str, Any]:
    from homeassistant.components.mqtt.models import MqttCommandTemplate, MqttValueTemplate
    from homeassistant.core import HomeAssistant
    from homeassistant.helpers import frame, template

    with tempfile.TemporaryDirectory() as config_dir:
        hass = HomeAssistant(config_dir)
        frame.async_setup(hass)  # template and schema helpers report through it
        results: dict[str, Any] = {}
        for topic, config in request["configs"].items():
            component = topic.split("/")[1]
            platform = importlib.import_module(f"homeassistant.components.mqtt.{component}")
            result: dict[str, Any] = {"error": None, "rendered": [], "commands": []}
            validated = dict(config)
            try:
                validated = platform.DISCOVERY_SCHEMA({**config, "platform": "mqtt"})
            except Exception as error:  # voluptuous.Invalid and its kin: report, go on
                result["error"] = f"{type(error).__name__}: {error}"
            if "value_template" in config:
                value = MqttValueTemplate(template.Template(config["value_template"], hass))
                for payload in request["payloads"].get(topic, []):
                    rendered = str(value.async_render_with_possible_json_value(payload, "?"))
                    if component == "binary_sensor":
                        rendered = binary_state(validated, rendered)
                    elif component == "sensor":
                        rendered = sensor_state(rendered)
                    result["rendered"].append(rendered)
            if "command_template" in config:
                command = MqttCommandTemplate(template.Template(config["command_template"], hass))
                for key, code in request["commands"]:
                    rendered = command.async_render(config[key], {"code": code})
                    result["commands"].append(str(rendered))
            results[topic] = result
        results["automations"] = await automations(hass, request)
        await hass.async_stop(force=True)
    return results


def binary_state(config: dict[str, Any], rendered: str) -> str:
    """What a binary sensor shows for a rendered template, as its message handler decides
    (homeassistant.components.mqtt.binary_sensor): on, off, unknown, or the message ignored."""
    from homeassistant.components.mqtt.const import PAYLOAD_NONE

    if rendered == config.get("payload_on", "ON"):
        return "on"
    if rendered == config.get("payload_off", "OFF"):
        return "off"
    return "unknown" if rendered == PAYLOAD_NONE else f"ignored ({rendered})"


def sensor_state(rendered: str) -> str:
    """What a sensor shows for a rendered template, as its message handler decides
    (homeassistant.components.mqtt.sensor): HA's "None" payload is its unknown state."""
    from homeassistant.components.mqtt.const import PAYLOAD_NONE

    return "unknown" if rendered == PAYLOAD_NONE else rendered


async def automations(hass: Any, request: dict[str, Any]) -> list[dict[str, Any]]:
    """Validate each documented automation as Home Assistant loads one, then evaluate its
    template conditions for each published event, as the event entity would hold it."""
    import yaml  # type: ignore[import-untyped]  # Home Assistant's venv has it, with no stubs
    from homeassistant import loader
    from homeassistant.components.automation.config import async_validate_config_item
    from homeassistant.core import State
    from homeassistant.helpers import template

    loader.async_setup(hass)
    found = []
    for number, config in enumerate(yaml.safe_load(request["automations"])["automation"]):
        try:
            checked = await async_validate_config_item(hass, f"doc{number}", config)
        except Exception as error:  # voluptuous.Invalid for a trigger it does not know
            found.append({"alias": config.get("alias"), "status": "invalid", "error": str(error)})
            continue
        fires = []
        for message in request["events"]:
            attributes = {k: v for k, v in message.items() if k != "event_type"}
            state = State(
                request["event_entity"],
                "2026-01-01T00:00:00.000+00:00",
                {"event_type": message["event_type"], **attributes},
            )
            fires.append(
                all(
                    template.Template(condition["value_template"], hass).async_render(
                        {"trigger": {"to_state": state}}
                    )
                    is True
                    for condition in config.get("conditions", [])
                )
            )
        found.append(
            {
                "alias": config.get("alias"),
                "status": str(getattr(checked, "validation_status", "")),
                "error": getattr(checked, "validation_error", None),
                "fires": fires,
            }
        )
    return found


def main() -> int:
    request = json.load(sys.stdin)
    sys.stdout.write(json.dumps(asyncio.run(check(request))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
