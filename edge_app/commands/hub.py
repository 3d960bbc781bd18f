"""`edge-app hub`: the door's network side (MQTT, Home Assistant), as its own service."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from edge_app.commands import config_path
from edge_app.paths import DEFAULT_CONFIG
from edge_app.unlock_text import ORIGIN_MAX

EPILOG = f"""\
Connects to the door's control socket ([hub] socket; the door may start before or after)
and to the MQTT broker in [mqtt], reconnecting to both by itself. Reads the same config file
as `edge-app run` ({DEFAULT_CONFIG} by default). The door process itself never opens a
network socket; this one does, in its own systemd unit (edge-app-hub.service).

Home Assistant finds the door through MQTT discovery: the strike (a lock that asks for a
code when remote_unlock is on and an unlock code is set, else a read-only sensor), an event
entity (recognized, unknown, unlock, denied, relock, spoof), the last person, and health sensors.
See docs/HOME_ASSISTANT.md for topics, payloads and the remote-unlock security model.

examples:
  edge-app hub                                  # as installed (systemctl start edge-app-hub)
  edge-app -v hub --config ./door.toml          # by hand, with debug logging
  edge-app hub --clear-discovery                # remove the door from Home Assistant
  sudo -u edge-app edge-app hub unlock-code     # the code Home Assistant's lock card sends
  sudo -u edge-app edge-app hub passwd          # the web page's admin password ([web])
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
    parser.add_argument("--config", type=config_path, metavar="PATH", help="TOML config file")
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--clear-discovery",
        action="store_true",
        help="publish empty retained discovery configs and door state, last person and "
        "availability (removes the door's entities from Home Assistant) and exit",
    )
    action.add_argument(
        "--sign-unlock",
        metavar="ORIGIN",
        help="print one signed remote-unlock command to publish on the door's unlock "
        f"topic, then exit. ORIGIN names who sends it (1-{ORIGIN_MAX} printable characters, "
        "e.g. phone), "
        'and the door logs the unlock as "mqtt:ORIGIN". Signed with the key in [mqtt] '
        "unlock_secret_file (read it as the service user); valid for [mqtt] "
        "unlock_window_seconds and only once (docs/HOME_ASSISTANT.md)",
    )
    parser.set_defaults(handler=run)
    _register_unlock_code(parser)
    _register_passwd(parser)


def run(args: argparse.Namespace) -> int:
    from edge_app.config import load_config
    from edge_app.errors import UserError

    config = load_config(args.config)
    if args.clear_discovery or args.sign_unlock is not None:
        if args.clear_discovery and not config.mqtt.host:
            raise UserError("mqtt.host: not set, so there is no broker to clear")
        if args.sign_unlock is not None:
            from edge_app.hub.signing import MIN_KEY_CHARS, origin_problem, read_secret, sign_unlock

            problem = origin_problem(args.sign_unlock)
            if problem is not None:
                raise UserError(f"--sign-unlock {args.sign_unlock!r}: {problem} (e.g. phone)")
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


def _alone(args: argparse.Namespace, command: str) -> None:
    """Refuse `hub --clear-discovery COMMAND` and `hub --sign-unlock X COMMAND`: the option
    was silently ignored while the command ran."""
    from edge_app.errors import UserError

    given = "--clear-discovery" if args.clear_discovery else None
    given = given or ("--sign-unlock" if args.sign_unlock is not None else None)
    if given is not None:
        raise UserError(
            f"{given} is a command of its own: run `edge-app hub {given} ...` and "
            f"`edge-app hub {command}` one after the other; nothing was changed"
        )


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    """The hub's subcommands (one argparse group shared by every `edge-app hub COMMAND`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    # [COMMAND]: plain `edge-app hub` runs the hub, so its usage line shows one as optional.
    return parser.add_subparsers(dest="hub_command", metavar="[COMMAND]", required=False)


UNLOCK_CODE_EPILOG = """\
The hub reads the file when it starts: restart it afterwards
(sudo systemctl restart edge-app-hub). Home Assistant's lock card then asks for this code;
the hub checks it against the hash, with a timestamp window, a replay check and a lock-out
after repeated wrong codes (docs/HOME_ASSISTANT.md). It needs [mqtt] remote_unlock = true
and unlock_code_file set, and the door's [hub] allow_unlock = true. A new code clears the
count of wrong codes, and any lock-out, that guesses at the old one left beside the file.

examples:
  sudo -u edge-app edge-app hub unlock-code
  printf '%s\\n' "$CODE" | edge-app hub unlock-code --stdin --config ./door.toml
"""


def _register_unlock_code(parser: argparse.ArgumentParser) -> None:
    from edge_app.hub.code import CODE_MAX, CODE_MIN

    _register_secret_setter(
        parser,
        "unlock-code",
        help="set the code Home Assistant's lock card sends to unlock the door",
        description=f"Set the remote unlock code, {CODE_MIN} to {CODE_MAX} digits (asked "
        "twice, not shown): its scrypt hash goes to [mqtt] unlock_code_file (mode 0600, "
        "replaced atomically, and only when it holds such a hash or is empty).",
        epilog=UNLOCK_CODE_EPILOG,
        what="code",
    ).set_defaults(handler=run_unlock_code, changes="the unlock code file")


def _register_secret_setter(
    parser: argparse.ArgumentParser,
    name: str,
    *,
    help: str,
    description: str,
    epilog: str,
    what: str,
) -> argparse.ArgumentParser:
    """A `hub` subcommand that sets a secret: --config, and --stdin to read it from a pipe."""
    command = _subcommands(parser).add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument(
        "--config",
        type=config_path,
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="TOML config file",
    )
    command.add_argument(
        "--stdin", action="store_true", help=f"read the {what} from the first line of stdin"
    )
    return command


def _read_new_secret(from_stdin: bool, prompt: str, what: str, check: Callable[[str], str]) -> str:
    """The new secret, checked: the first line of stdin, or typed twice at the terminal."""
    import getpass

    from edge_app.errors import UserError

    if from_stdin:
        from edge_app.private_file import MAX_SECRET_BYTES

        # Bounded: `< /dev/zero` (or any file without a line end) must not fill the memory.
        # Read as bytes and decoded here: stdin's own decoding raises UnicodeDecodeError in a
        # UTF-8 locale, or lets the bytes through as "control characters" in another.
        raw = sys.stdin.buffer.readline(MAX_SECRET_BYTES + 1)
        if len(raw) > MAX_SECRET_BYTES:
            raise UserError(
                f"the {what} on standard input is longer than {MAX_SECRET_BYTES} characters; "
                "nothing changed"
            )
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(
                f"the {what} on standard input is not UTF-8 text; nothing changed"
            ) from None
        return check(line.rstrip("\r\n"))
    try:  # getpass types at the terminal; without one it reads stdin and says it may echo
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        raise UserError(
            f"no terminal to type the {what} at; give it on the first line of standard "
            "input with --stdin; nothing changed"
        ) from None
    try:
        typed = getpass.getpass(prompt)
        secret = check(typed)
        again = getpass.getpass("Again: ")
    except EOFError:  # end of input (Ctrl-D at the prompt, or </dev/null)
        sys.stderr.write("\n")  # getpass leaves the prompt's line open
        raise UserError(f"no {what} entered; nothing changed") from None
    if again != typed:
        raise UserError(f"the two {what}s differ; nothing changed")
    return secret


def run_unlock_code(args: argparse.Namespace) -> int:
    from edge_app.config import door_config
    from edge_app.errors import UserError
    from edge_app.hub.code import CODE_KEY, check_new_code, forget_lockout, write_code_file

    _alone(args, "unlock-code")
    config = door_config(args.config, {})  # its secret file is not the config file itself
    path = config.mqtt.unlock_code_file
    if path is None:
        raise UserError(
            f'{CODE_KEY}: not set; add unlock_code_file = "/var/lib/edge-app/unlock.code" to '
            "[mqtt] in the config, then run this again"
        )
    _refuse_before_asking(path, CODE_KEY)
    code = _read_new_secret(
        args.stdin, "New unlock code (digits): ", "code", lambda text: check_new_code(text.strip())
    )
    write_code_file(path, code)
    sys.stdout.write(f"unlock code set in {path}; restart the hub to use it\n")
    try:
        if forget_lockout(path):
            sys.stdout.write("the old code's wrong-code count and lock-out are cleared\n")
    except OSError as error:  # the code is set; the count of guesses at the old one stays
        sys.stdout.write(
            f"note: the old code's wrong-code count stays ({error.strerror or error}); it "
            "ends a day after the last wrong code, or remove the lock-out file "
            "(docs/HOME_ASSISTANT.md)\n"
        )
    if not config.mqtt.remote_unlock:
        sys.stdout.write("note: [mqtt] remote_unlock is false, so the hub will not use it yet\n")
    return 0


def _register_passwd(parser: argparse.ArgumentParser) -> None:
    from edge_app.web.auth import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH

    _register_secret_setter(
        parser,
        "passwd",
        help="set the web page's admin password",
        description="Set the admin password of the web page ([web] in the config, "
        f"docs/WEB.md): {PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} printable characters, "
        "not only spaces (asked twice, not shown). Its scrypt hash goes to [web] password_file "
        "(mode 0600, replaced atomically, and only when it holds such a hash or is empty); "
        "logins use the new password at once. Until a password exists the page is served only "
        "on a loopback address.",
        epilog="examples:\n  sudo -u edge-app edge-app hub passwd\n"
        "  printf '%s\\n' \"$NEW_PASSWORD\" | edge-app hub passwd --stdin --config ./door.toml",
        what="password",
    ).set_defaults(handler=run_passwd, changes="the password file")


def run_passwd(args: argparse.Namespace) -> int:
    from edge_app.config import door_config
    from edge_app.web.auth import check_new_password, write_password_file

    _alone(args, "passwd")
    config = door_config(args.config, {})  # its password file is not the config file itself
    _refuse_before_asking(config.web.password_file, "web.password_file")
    password = _read_new_secret(
        args.stdin, "New web admin password: ", "password", check_new_password
    )
    write_password_file(config.web.password_file, password)
    sys.stdout.write(f"web admin password set in {config.web.password_file}\n")
    return 0


def _refuse_before_asking(path: Path, key: str) -> None:
    """Refuse, before asking for the secret, a file whose folder does not exist: creating it
    here would make it as whoever runs this (root under sudo, mode 0700), where the service
    user could not read it. The installer or systemd's StateDirectory makes the real one.
    And a file there that the secret may not replace (private_file.refuse_foreign_secret:
    the write checks it again)."""
    from edge_app.errors import UserError
    from edge_app.private_file import refuse_foreign_secret

    folder = Path(path).parent
    if not folder.is_dir():
        raise UserError(
            f"{key}: the folder {folder} does not exist; create it for the service user "
            f"(sudo install -d -m 0700 -o edge-app -g edge-app {folder}) or set {key} to a "
            "file in an existing folder; nothing changed"
        )
    refuse_foreign_secret(path, key)
