"""`python -m edge_app.relay_off`: drive the door relay to locked and exit.

systemd runs it as ExecStartPre= (before the daemon, so the pin is low even before the models
load) and ExecStopPost= (after the daemon is gone, however it went: also after SIGKILL, when
the process could not release the pin itself). It reads the pin, its polarity and the pin
factory from the same config file as the daemon, so the two cannot disagree.

It reads only the `[gpio]` section, validated by the same checks as the daemon's (the UART pin
rule included): a mistake anywhere else in the file, which the daemon would refuse, must not
stop the pin from being driven low. A `[gpio]` section it cannot trust (an invalid or unknown
key, say a misspelt `active_high`, which could turn "locked" into "open") is refused with
exit code 2 and a one-line message, and the pin is left alone. `pulse_seconds` is not read.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

from edge_app.config import (
    GPIO_FACTORIES,
    ConfigError,
    GpioConfig,
    parse_config,
    read_config_file,
)
from edge_app.errors import UserError
from edge_app.paths import DEFAULT_CONFIG
from edge_app.relay import Relay

log = logging.getLogger("edge_app.relay_off")

# [gpio] keys this command does not use, so a mistake in them does not stop it.
UNUSED_GPIO_KEYS = ("pulse_seconds",)


def drive_locked(gpio: GpioConfig, pin_factory: object | None = None) -> None:
    """Claim the relay pin, drive it to "locked" (low for active_high, high otherwise), release.

    The Relay claims its pin with initial_value=False, which is the locked level; close()
    drives it there again before releasing it.
    """
    Relay.from_config(gpio, pin_factory=pin_factory).close()


def _one_line(error: ConfigError) -> str:
    """A ConfigError's header and its listed problems on one line."""
    head, *problems = str(error).splitlines()
    return " ".join([head, "; ".join(p.strip().removeprefix("- ") for p in problems)]).strip()


def read_gpio(path: Path | None, factory: str | None = None) -> GpioConfig:
    """The `[gpio]` section of the config at `path` (the default location when None).

    factory, when given, replaces gpio.factory (the --gpio flag). ConfigError, one line, when
    the file cannot be read or parsed or its [gpio] section is invalid.
    """
    path, data = read_config_file(path)
    section = data.get("gpio", {})
    if isinstance(section, Mapping):
        section = {k: v for k, v in section.items() if k not in UNUSED_GPIO_KEYS}
        if factory is not None:
            section["factory"] = factory
    try:
        gpio = parse_config({"gpio": section}, str(path)).gpio
    except ConfigError as error:
        raise ConfigError(_one_line(error)) from None
    if "pin" not in section:
        log.warning(
            "%s: no gpio.pin: driving the default GPIO%d, as the daemon does", path, gpio.pin
        )
    return gpio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge_app.relay_off",
        description="Drive the door relay to locked (for systemd ExecStartPre=/ExecStopPost=).",
        epilog=f"example:\n  python -m edge_app.relay_off --config {DEFAULT_CONFIG}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, metavar="PATH", help="TOML config file")
    parser.add_argument("--gpio", choices=GPIO_FACTORIES, help="pin factory override")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        gpio = read_gpio(args.config, args.gpio)
        drive_locked(gpio)
    except UserError as error:
        log.error("%s", error)
        return 2
    log.info("relay locked pin=GPIO%d active_high=%s", gpio.pin, gpio.active_high)
    return 0


if __name__ == "__main__":
    sys.exit(main())
