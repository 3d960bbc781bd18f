"""The relay pin the running door claimed, recorded for `python -m edge_app.relay_off`.

On Raspberry Pi OS kernels a GPIO output that a dead process released keeps its last level
(the pinctrl drivers' `persist_gpio_outputs`, on unless config.txt has `dtparam=strict_gpiod`),
so after a SIGKILL or an OOM kill mid-pulse the strike stays energised until systemd's
ExecStopPost= runs relay_off. relay_off must then drive the pin the dead daemon held, which is
not always the one config.toml names now: `gpio.pin` edited since the start (the daemon keeps
its pin until it restarts), a typo in `[gpio]`, the file gone. So the daemon writes down its
relay right after claiming the pin, and relay_off drives that pin first.

The record is the daemon's `[gpio]` section as JSON, without `pulse_seconds`:
`{"pin": 17, "active_high": true, "factory": "auto", "force_uart_pins": false}`, written
atomically with mode 0600 (edge_app.private_file) at paths.RELAY_RECORD, in the unit's
RuntimeDirectory= (kept across restarts, owned by the service user who also runs
ExecStopPost=). Only a door systemd runs writes it (INVOCATION_ID, which systemd sets for
every process of a unit): not tests, the demo or `edge-app run` by hand, even where a hand
run made the folder (its control socket's), nor a simulated relay (`factory = "mock"`). A
write that fails (a full disk, a read-only folder) removes the record an earlier run left
there, so that relay_off does not drive a pin this run may not have claimed; it then drives
the config's.

Reading trusts nothing: a record that is a symbolic link or not a regular file, that others
may write, larger than MAX_BYTES, not JSON, without exactly those keys, or whose values the
config's own `[gpio]` checks refuse (the UART pin rule included) is ignored with a warning,
never a traceback. A missing record is the normal case before a door has claimed its pin
(the folder is new at each `systemctl start`), so it is noted at debug level only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from pathlib import Path

from edge_app import paths
from edge_app.bounded_read import NotRegularFile, TooLarge, read_bounded
from edge_app.config import ConfigError, GpioConfig, parse_config
from edge_app.private_file import write_private_text
from edge_app.untrusted_json import BadJSON, loads

log = logging.getLogger(__name__)

# What a record holds: the [gpio] keys that say which pin is the relay and which level locks it.
RECORD_KEYS = ("pin", "active_high", "factory", "force_uart_pins")
# Set by systemd (232 and later) in the environment of every process a unit runs.
SYSTEMD_UNIT_VARIABLE = "INVOCATION_ID"
# A record is about 80 bytes; anything much larger is not one.
MAX_BYTES = 4096


class RecordError(Exception):
    """The record cannot be trusted; the message says why, in a few words."""


def write_record(gpio: GpioConfig, path: Path | None = None) -> bool:
    """Record the relay `gpio` describes at `path` (None: paths.RELAY_RECORD, read when called,
    so a test may point it elsewhere). True when written.

    Nothing is written by a door systemd does not run (no INVOCATION_ID), nor where the
    folder does not exist, nor for a simulated relay (gpio.factory "mock": it drives no
    strike, and a trial run by hand must not replace the record of the door that runs for
    real). A failed write (a full disk, a
    read-only folder) removes the record a previous run left there, which names a pin this
    run may not have claimed (another device's now, perhaps), and is logged as one warning;
    the door carries on, since relay_off then still drives the config's pin, as it did before
    there was a record. A record that cannot be removed either is named in the warning.
    """
    path = paths.RELAY_RECORD if path is None else Path(path)
    if gpio.factory == "mock":
        log.debug("relay record not written: the relay is simulated (gpio.factory mock)")
        return False
    if not os.environ.get(SYSTEMD_UNIT_VARIABLE):
        log.debug("relay record not written: not run by systemd (no %s)", SYSTEMD_UNIT_VARIABLE)
        return False
    record = {key: getattr(gpio, key) for key in RECORD_KEYS}
    try:
        if not os.path.isdir(path.parent):
            log.debug("relay record not written: no folder %s (not run by systemd)", path.parent)
            return False
        write_private_text(path, lambda handle: handle.write(json.dumps(record) + "\n"))
    except OSError as error:
        log.warning("relay record not written (%s)%s", error, _remove_stale(path, gpio))
        return False
    log.debug("relay record written path=%s pin=GPIO%d", path, gpio.pin)
    return True


def _remove_stale(path: Path, gpio: GpioConfig) -> str:
    """After a failed write, remove the regular file at `path`: a previous run's record,
    whose pin relay_off would otherwise drive first after a crash of this run. One that
    records this very relay (a restart onto the same pin) is kept: it is this run's record,
    and relay_off needs it if the config's pin is edited before a crash. Never raises; the
    end of write_record's warning, saying what relay_off will then drive."""
    config_only = ": after a crash, relay_off drives only the pin the config names then"
    with contextlib.suppress(RecordError, OSError):
        if all(getattr(_load(path), key) == getattr(gpio, key) for key in RECORD_KEYS):
            return "; the record there, of the same relay from a previous run, is kept"
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return config_only  # relay_off ignores anything but a regular file
        os.unlink(path)
    except FileNotFoundError:
        return config_only
    except OSError as error:
        return (
            f"; the previous run's record there could not be removed either "
            f"({error.strerror or error}): after a crash, relay_off drives the pin it names "
            f"first, which this run may not have claimed, then the config's; remove {path}"
        )
    return "; the previous run's record there was removed" + config_only


def read_record(path: Path) -> GpioConfig | None:
    """The relay recorded at `path`, validated as the config's `[gpio]` is; None (and a
    warning, or a debug line when there is no record) when there is none to trust."""
    try:
        return _load(Path(path))
    except FileNotFoundError:
        log.debug("no relay record at %s", path)
    except RecordError as error:
        log.warning("%s: relay record ignored: %s", path, error)
    return None


def _load(path: Path) -> GpioConfig:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise RecordError(f"cannot read it ({error.strerror or error})") from None
    if stat.S_ISLNK(info.st_mode):
        raise RecordError("it is a symbolic link; the door writes a regular file")
    if not stat.S_ISREG(info.st_mode):
        raise RecordError("it is not a regular file")
    if stat.S_IMODE(info.st_mode) & 0o022:
        mode = stat.S_IMODE(info.st_mode)
        raise RecordError(f"others may write it (mode {mode:04o}); the door writes it 0600")
    try:
        data = read_bounded(path, MAX_BYTES)
    except FileNotFoundError:
        raise
    except (NotRegularFile, TooLarge) as error:
        raise RecordError(error.strerror) from None
    except OSError as error:
        raise RecordError(f"cannot read it ({error.strerror or error})") from None
    try:
        record = loads(data)
    except BadJSON as error:
        raise RecordError(str(error)) from None
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    missing = [key for key in RECORD_KEYS if key not in record]
    unknown = [key for key in record if key not in RECORD_KEYS]
    if missing or unknown:
        # repr: a key from the file may hold anything, a line break included
        wrong = [f"no {key}" for key in missing] + [f"unknown key {k[:40]!r}" for k in unknown[:3]]
        raise RecordError(", ".join(wrong) + f"; a record has {', '.join(RECORD_KEYS)}")
    try:
        return parse_config({"gpio": record}, "record").gpio
    except ConfigError as error:  # its problems only: its header is about a config file
        raise RecordError("; ".join(error.problems)) from None
