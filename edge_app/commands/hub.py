"""`edge-app hub`: the door's network side (MQTT, Home Assistant), as its own service."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_app.paths import DEFAULT_CONFIG

EPILOG = f"""\
Connects to the door's control socket ([hub] socket; the door may start before or after)
and to the MQTT broker in [mqtt], reconnecting to both by itself. Reads the same config file
as `edge-app run` ({DEFAULT_CONFIG} by default). The door process itself never opens a
network socket; this one does, in its own systemd unit (edge-app-hub.service).

Home Assistant finds the door through MQTT discovery: a strike (lock) sensor, an event
entity (recognized, unknown, unlock, denied, spoof), the last person, and health sensors.
See docs/HOME_ASSISTANT.md for topics, payloads and the remote-unlock security model.

examples:
  edge-app hub                                  # as installed (systemctl start edge-app-hub)
  edge-app hub --config ./door.toml -v          # by hand, with debug logging
  edge-app hub --clear-discovery                # remove the door from Home Assistant
  edge-app hub passwd                           # the web page's admin password ([web])
  mosquitto_pub -h broker -u user -P pass -t edge-door/door/unlock \\
      -m "$(edge-app hub --sign-unlock phone)"   # a signed remote unlock (if enabled)
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "hub",
        help="the door's network side: MQTT, Home Assistant, the web page (a separate service)",
        description="Bridge the door's control socket to MQTT and Home Assistant.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, metavar="PATH", help="TOML config file")
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--clear-discovery",
        action="store_true",
        help="publish empty retained discovery configs (removes the door's entities from "
        "Home Assistant) and exit",
    )
    action.add_argument(
        "--sign-unlock",
        metavar="ORIGIN",
        help="print a signed unlock command for [mqtt] unlock_secret_file (valid for "
        "unlock_window_seconds) and exit",
    )
    parser.set_defaults(handler=run)
    commands = parser.add_subparsers(dest="hub_command", metavar="COMMAND", required=False)
    passwd = commands.add_parser(
        "passwd",
        help="set the web page's admin password",
        description="Set the admin password of the web page ([web] in the config, "
        "docs/WEB.md). Its scrypt hash goes to [web] password_file (mode 0600, replaced "
        "atomically); logins use the new password at once. Until a password exists the page "
        "is served only on a loopback address.",
        epilog="examples:\n  sudo -u edge-app edge-app hub passwd\n"
        "  printf '%s\\n' \"$NEW_PASSWORD\" | edge-app hub passwd --stdin --config ./door.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    passwd.add_argument(
        "--config", type=Path, metavar="PATH", default=argparse.SUPPRESS, help="TOML config file"
    )
    passwd.add_argument(
        "--stdin", action="store_true", help="read the password from the first line of stdin"
    )
    passwd.set_defaults(handler=run_passwd)


def run_passwd(args: argparse.Namespace) -> int:
    import getpass

    from edge_app.config import load_config
    from edge_app.errors import UserError
    from edge_app.web.auth import check_new_password, write_password_file

    config = load_config(args.config)
    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = check_new_password(getpass.getpass("New web admin password: "))
        if getpass.getpass("Again: ") != password:
            raise UserError("the two passwords differ; nothing changed")
    write_password_file(config.web.password_file, password)
    sys.stdout.write(f"web admin password set in {config.web.password_file}\n")
    return 0


def run(args: argparse.Namespace) -> int:
    from edge_app.config import load_config
    from edge_app.errors import UserError

    config = load_config(args.config)
    if args.clear_discovery or args.sign_unlock:
        if args.clear_discovery and not config.mqtt.host:
            raise UserError("mqtt.host: not set, so there is no broker to clear")
        if args.sign_unlock:
            from edge_app.hub.signing import MIN_KEY_CHARS, read_secret, sign_unlock

            if config.mqtt.unlock_secret_file is None:
                raise UserError("mqtt.unlock_secret_file: not set (see docs/HOME_ASSISTANT.md)")
            key = read_secret(
                config.mqtt.unlock_secret_file, "mqtt.unlock_secret_file", min_chars=MIN_KEY_CHARS
            )
            sys.stdout.write(json.dumps(sign_unlock(key, config.mqtt.door_id, args.sign_unlock)))
            sys.stdout.write("\n")
            return 0
        from edge_app.hub.mqtt import clear_discovery

        for topic in clear_discovery(config.mqtt):
            sys.stdout.write(f"cleared {topic}\n")
        return 0
    from edge_app.hub import Hub

    return Hub.from_config(config, args.config).run()
