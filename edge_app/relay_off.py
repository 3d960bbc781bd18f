"""`python -m edge_app.relay_off`: drive the door relay to locked and exit.

systemd runs it as ExecStartPre= (before the daemon, so the pin is low even before the models
load) and ExecStopPost= (after the daemon is gone, however it went: also after SIGKILL, when
the process could not release the pin itself). It reads the pin, its polarity and the pin
factory from the same config file as the daemon, so the two cannot disagree.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from edge_app.config import GPIO_FACTORIES, GpioConfig, apply_overrides, load_config
from edge_app.errors import UserError
from edge_app.paths import DEFAULT_CONFIG
from edge_app.relay import Relay

log = logging.getLogger("edge_app.relay_off")


def drive_locked(gpio: GpioConfig, pin_factory: object | None = None) -> None:
    """Claim the relay pin, drive it to "locked" (low for active_high, high otherwise), release.

    The Relay claims its pin with initial_value=False, which is the locked level; close()
    drives it there again before releasing it.
    """
    Relay.from_config(gpio, pin_factory=pin_factory).close()


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
        config = apply_overrides(load_config(args.config), {"gpio.factory": args.gpio})
        drive_locked(config.gpio)
    except UserError as error:
        log.error("%s", error)
        return 2
    log.info("relay locked pin=GPIO%d active_high=%s", config.gpio.pin, config.gpio.active_high)
    return 0


if __name__ == "__main__":
    sys.exit(main())
