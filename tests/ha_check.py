"""Run inside Home Assistant's own venv (.venv-ha, Python 3.13), by
tests/test_home_assistant.py. Reads a JSON request on stdin: the hub's discovery configs,
sample state payloads per topic, and lock commands to render. For each config it applies the
schema Home Assistant's MQTT integration validates discovered entities with, renders its
value template against each sample the way an MQTT entity does (MqttValueTemplate), and, for
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
            try:
                platform.DISCOVERY_SCHEMA({**config, "platform": "mqtt"})
            except Exception as error:  # voluptuous.Invalid and its kin: report, go on
                result["error"] = f"{type(error).__name__}: {error}"
            if "value_template" in config:
                value = MqttValueTemplate(template.Template(config["value_template"], hass))
                for payload in request["payloads"].get(topic, []):
                    rendered = value.async_render_with_possible_json_value(payload, "<invalid>")
                    result["rendered"].append(str(rendered))
            if "command_template" in config:
                command = MqttCommandTemplate(template.Template(config["command_template"], hass))
                for key, code in request["commands"]:
                    rendered = command.async_render(config[key], {"code": code})
                    result["commands"].append(str(rendered))
            results[topic] = result
        await hass.async_stop(force=True)
    return results


def main() -> int:
    request = json.load(sys.stdin)
    sys.stdout.write(json.dumps(asyncio.run(check(request))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
