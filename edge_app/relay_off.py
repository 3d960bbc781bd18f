"""`python -m edge_app.relay_off`: drive the door relay to locked and exit.

systemd runs it as ExecStartPre= (before the daemon, so the pin is low even before the models
load) and ExecStopPost= (after the daemon is gone, however it went: also after SIGKILL, an
OOM kill or a watchdog kill, when the process could not release the pin itself). On Raspberry
Pi OS kernels a released output keeps its last level (`persist_gpio_outputs`, unless
config.txt has `dtparam=strict_gpiod`), so after such a death this command is what locks the
door; the wiring's pull-down does so only once the pin is an input again.

It drives two pins, when it can tell them:

- the pin the daemon claimed, from the record the daemon wrote right after claiming it
  (edge_app.relay_record; `--record`, default /run/edge-app/relay.json). That is the pin a
  dead daemon may have left energised, even when config.toml has changed since it started
  (`gpio.pin` edited, a typo in `[gpio]`, the file gone). A record it cannot trust (a link,
  too large, not JSON, wrong keys or values, a pin the config's checks refuse) is ignored
  with a warning;
- then the pin config.toml names, when it differs: the one the next daemon will claim.

The same pin with another polarity in the config than in the record (`gpio.active_high`
edited while the door ran) is driven to the config's locked level last before a start (the
daemon about to start drives it so), but after a stop (`--after-stop`, ExecStopPost=) it is
left at the record's, the level the door that just stopped locked it at, with exit code 2:
nothing drives the pin after a stop, and a mistyped polarity must not leave it energised.

From the config it reads only the `[gpio]` section, validated by the same checks as the
daemon's (the UART pin rule included): a mistake anywhere else in the file, which the daemon
would refuse, must not stop the pin from being driven low. A `[gpio]` section it cannot trust
(an invalid or unknown key, say a misspelt `active_high`, which could turn "locked" into
"open") is refused: its pin is left alone. `pulse_seconds` is not read.

Exit code 0 only when every pin it could identify was driven locked and the config's `[gpio]`
was valid; otherwise 2, with a one-line message (which, when the config is refused but the
recorded pin was locked, says both).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

from edge_app import paths
from edge_app.config import (
    GPIO_FACTORIES,
    ConfigError,
    GpioConfig,
    parse_config,
    read_config_file,
)
from edge_app.errors import UserError
from edge_app.logs import setup_logging
from edge_app.paths import DEFAULT_CONFIG
from edge_app.relay import Relay
from edge_app.relay_record import read_record, write_record

log = logging.getLogger("edge_app.relay_off")

# [gpio] keys this command does not use, so a mistake in them does not stop it.
UNUSED_GPIO_KEYS = ("pulse_seconds",)


def drive_locked(gpio: GpioConfig, pin_factory: object | None = None) -> None:
    """Claim the relay pin, drive it to "locked" (low for active_high, high otherwise), release.

    The Relay claims its pin with initial_value=False, which is the locked level; close()
    drives it there again before releasing it.
    """
    Relay.from_config(gpio, pin_factory=pin_factory).close()


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
        raise ConfigError(error.one_line()) from None
    if "pin" not in section:
        log.warning(
            "%s: no gpio.pin: driving the default GPIO%d, as the daemon does", path, gpio.pin
        )
    return gpio


def _same_relay(a: GpioConfig, b: GpioConfig) -> bool:
    return (a.pin, a.active_high, a.factory) == (b.pin, b.active_high, b.factory)


def relock(
    record_path: Path,
    config_path: Path | None,
    factory: str | None = None,
    *,
    after_stop: bool = False,
) -> int:
    """Drive the recorded pin, then the config's when it differs, to locked; the exit code.
    after_stop: the record's polarity wins over the config's for its pin (module docstring)."""
    config_name = config_path if config_path is not None else DEFAULT_CONFIG
    failed = False
    record = read_record(record_path)
    recorded = f"the pin the daemon claimed, from the record {record_path}"
    record_locked = False
    if record is not None:
        if factory is not None:
            record = dataclasses.replace(record, factory=factory)
        try:
            drive_locked(record)
            record_locked = True
        except UserError as error:
            log.error("%s: the recorded GPIO%d was not locked: %s", record_path, record.pin, error)
            failed = True
    try:
        gpio = read_gpio(config_path, factory)
    except UserError as error:
        if record_locked:
            assert record is not None
            log.error(
                "relay locked pin=GPIO%d active_high=%s (%s), but the config's pin was not: %s",
                record.pin,
                record.active_high,
                recorded,
                error,
            )
        else:
            log.error("%s", error)
        return 2
    if record is not None and _same_relay(record, gpio):
        if record_locked:
            log.info(
                "relay locked pin=GPIO%d active_high=%s (%s, as in the config %s)",
                gpio.pin,
                gpio.active_high,
                recorded,
                config_name,
            )
        return 2 if failed else 0
    disputed = (
        record is not None and record.pin == gpio.pin and record.active_high != gpio.active_high
    )
    if disputed and after_stop:
        # Whether or not the record's level could be driven just now: the config's is "open"
        # for the relay the stopped door was driving, and nothing drives the pin after a stop.
        assert record is not None
        log.error(
            "GPIO%d: the door that stopped locked it as active_high=%s (the record), the "
            "config %s says active_high=%s: %s; the config's applies when the door starts "
            "again (if the config is right, that door's 'locked' was open: check the wiring, "
            "docs/WIRING.md)",
            gpio.pin,
            record.active_high,
            config_name,
            gpio.active_high,
            "left at the record's locked level"
            if record_locked
            else "not driven to the config's level either",
        )
        return 2
    if record_locked:
        assert record is not None
        log.info(
            "relay locked pin=GPIO%d active_high=%s (%s)", record.pin, record.active_high, recorded
        )
        if disputed:
            log.warning(
                "GPIO%d: the record says active_high=%s, the config %s active_high=%s; driving "
                "it to the config's locked level last",
                gpio.pin,
                record.active_high,
                config_name,
                gpio.active_high,
            )
    try:
        drive_locked(gpio)
    except UserError as error:
        log.error("%s", error)
        return 2
    if disputed:
        # The pin is at the config's locked level now: the record says so, so that a stop
        # before the daemon claims it (a config it then refuses) leaves it there, not at the
        # level of a door that no longer runs (--after-stop keeps the record's).
        write_record(gpio, record_path)
    source = f"from the config {config_name}"
    if record is not None and record.pin != gpio.pin:
        source += f"; the daemon had claimed GPIO{record.pin}"
    log.info("relay locked pin=GPIO%d active_high=%s (%s)", gpio.pin, gpio.active_high, source)
    return 2 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge_app.relay_off",
        description="Drive the door relay to locked (for systemd ExecStartPre=/ExecStopPost=): "
        "the pin the daemon recorded claiming, then the config's pin when it differs.",
        epilog=f"example:\n  python -m edge_app.relay_off --config {DEFAULT_CONFIG}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, metavar="PATH", help="TOML config file")
    parser.add_argument(
        "--record",
        type=Path,
        metavar="PATH",
        help=f"the relay the daemon claimed (default {paths.RELAY_RECORD}; ignored when absent)",
    )
    parser.add_argument(
        "--gpio", choices=GPIO_FACTORIES, help="pin factory override (for both pins)"
    )
    parser.add_argument(
        "--after-stop",
        action="store_true",
        help="the door has just stopped (ExecStopPost=): when the config gives the recorded "
        "pin another polarity, leave it at the record's locked level and exit 2",
    )
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:  # (as basicConfig: unless its caller set them up)
        setup_logging()  # under systemd, each line with its priority (journalctl -p err)
    record = args.record if args.record is not None else paths.RELAY_RECORD
    return relock(record, args.config, args.gpio, after_stop=args.after_stop)


if __name__ == "__main__":
    sys.exit(main())
