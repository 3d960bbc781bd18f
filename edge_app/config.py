"""The door's TOML configuration: one validated, immutable object the daemon is built from.

Every key is checked at start-up and every problem is collected, so a user fixing a config
file sees all of its mistakes at once, each naming the key and the fix, rather than one
traceback per restart of the service.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import errno
import math
import os
import re
import stat
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_app import paths
from edge_app.bounded_read import NotRegularFile, TooLarge, kind_of, read_bounded_with_stat
from edge_app.cascade_choice import CASCADES
from edge_app.errors import UserError, cut, shown_value
from edge_app.hosts import (  # host_name_problem: mqtt.host's rule, read from here too
    host_name_problem,
    name_problem,
    normal_host,
    port_problem,
    read_authority,
)
from edge_app.image_limits import MAX_DECODED_PIXELS
from edge_app.manifest import recognition_problem
from edge_app.runtime import BACKENDS, MAX_THREADS
from edge_app.wall_clock import SYNCHRONISED, TRUST

AUTO = "auto"
GPIO_PIN_MAX = 27  # the Pi's header: GPIO0-27
UART_PINS = (14, 15)
GPIO_FACTORIES = ("auto", "lgpio", "rpigpio", "pigpio", "native", "mock")
LIVENESS_MODES = ("off", "log", "require")
# A track's liveness is judged over its last LIVE_WINDOW_FRAMES scored frames, about a second
# at the door (edge_app.liveness_rule); `[liveness] min_live_frames` counts within it.
LIVE_WINDOW_FRAMES = 10
# The values of settings whose code lives in numpy modules, defined here so that reading a
# config imports no numpy (relay_off, which locks the door after a crash, reads [gpio] only).
EVIDENCE = ("track", "frame")  # `[policy] evidence`: pool a track's frames, or vote per frame
AGGREGATES = ("best", "mean", "trimmed_mean")  # `[recognition] aggregate` (edge_app.matching)
# [recognition] lookalikes: what the door does when enrolled people match each other at or
# above the threshold (edge_app.matching.Matcher.lookalikes): "raise" its threshold to
# LOOKALIKE_STEP above the highest such score, or only "warn".
LOOKALIKE_MODES = ("raise", "warn")
# HH:MM-HH:MM on a 24 h clock; a span may end at 24:00 (midnight at its end).
_TIME = r"(?:[01]\d|2[0-3]):[0-5]\d"
_HOURS = re.compile(rf"^(?P<start>{_TIME})-(?P<end>{_TIME}|24:00)\Z")
# MQTT topic levels and ids we build topics from: no wildcards (+ #), no empty levels.
_TOPIC = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*\Z")
_IDENT = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
_HOST = re.compile(r"^[A-Za-z0-9.:_-]{1,253}\Z")
_PRINTABLE = re.compile(r"^[^\x00-\x1f\x7f]{1,128}\Z")
# The door's control socket (systemd's RuntimeDirectory=edge-app makes /run/edge-app).
DEFAULT_SOCKET = Path("/run/edge-app/door.sock")
DEFAULT_PORTS = {"http": 80, "https": 443}
_ORIGIN_EXAMPLE = 'e.g. "https://door.example" or "http://192.0.2.20:8080"'


def uart_pin_problem(pin: int, force_uart_pins: bool) -> str | None:
    """The one rule for GPIO14/15 (config validation and the relay both use it): None if fine.

    The UART pins are driven high by the firmware at boot, before any of our code runs, so a
    relay on them would open the door on every reboot.
    """
    if pin in UART_PINS and not force_uart_pins:
        return (
            f"gpio.pin: {pin} is a UART pin that goes high at boot; choose another "
            "(e.g. 17) or set gpio.force_uart_pins = true"
        )
    return None


# GPIO2 and GPIO3 (I2C) carry 1.8 kOhm pull-ups on the board itself, always.
FIXED_PULL_UP_PINS = (2, 3)


def fixed_pull_up_problem(pin: int, active_high: bool) -> str | None:
    """The one rule for GPIO2/3 (config validation and the relay both use it): None if fine.

    Their board pull-ups read as "on" to an active-high relay driver whenever the pin is not
    driven: after every stop of the door, not only while the Pi boots, and no pull-down that
    a driver input has beats 1.8 kOhm. An active-low module rests locked there.
    """
    if pin in FIXED_PULL_UP_PINS and active_high:
        return (
            f"gpio.pin: GPIO{pin} has a 1.8 kOhm pull-up on the board, so an active-high relay "
            "would open the door whenever the door is stopped; choose another pin (e.g. 17)"
        )
    return None


def votes_problem(policy: PolicyConfig) -> str | None:
    """Why `[policy]` hits and window cannot work together (the config and Policy.check
    refuse with this text); None when they can."""
    if policy.hits < 1:  # the key's range says so first; a PolicyConfig made in code too
        return f"policy.hits: {policy.hits} is less than 1: the door unlocks on votes, at least one"
    if policy.hits > policy.window:
        return (
            f"policy.hits: {policy.hits} is more than policy.window {policy.window}, so no one "
            "could ever be unlocked; make hits <= window"
        )
    return None


def relay_pin_problem(pin: int, force_uart_pins: bool, active_high: bool) -> str | None:
    """Why the relay may not use `pin` (the UART and the fixed pull-up rules), or None: what
    config validation and the relay both refuse."""
    return uart_pin_problem(pin, force_uart_pins) or fixed_pull_up_problem(pin, active_high)


# GPIO0-8 are pulled up at power-on, until our code drives the pin.
BOOT_PULL_UP_PINS = range(0, 9)
# GPIO0 and GPIO1 (ID_SD, ID_SC) are where the firmware looks for a HAT's ID EEPROM at boot.
HAT_ID_PINS = (0, 1)


def boot_pull_up_warning(pin: int, active_high: bool) -> str | None:
    """The one rule for GPIO0-8 (doctor and the relay both use it): None if fine.

    Their pull-up at power-on reads as "on" to an active-high relay driver, which would open
    the door while the Pi boots unless the driver's input has an external pull-down strong
    enough to win (docs/WIRING.md). An active-low module rests high there, except on GPIO0/1,
    which the firmware's look for a HAT's ID EEPROM drives as I2C lines. A warning, not a
    refusal: that wiring is valid where the strike stays shut through a reboot.
    """
    if pin in HAT_ID_PINS:
        return (
            f"gpio.pin: GPIO{pin} is an I2C line of a HAT's ID EEPROM, which the firmware "
            "reads at boot: its pulses reach a relay of either polarity; use GPIO9-27 "
            "(e.g. 17), or check that the strike stays shut during a reboot (docs/WIRING.md)"
        )
    if pin in BOOT_PULL_UP_PINS and active_high:
        return (
            f"gpio.pin: GPIO{pin} is pulled up while the Pi boots, which an active-high relay "
            "reads as open; use GPIO9-27 (e.g. 17), or check that the strike stays shut "
            "during a reboot (docs/WIRING.md)"
        )
    return None


# A config error names at most this many of its problems, then how many more: a file of
# thousands of bad keys (a wrong file given as the config) made a message of megabytes.
PROBLEMS_SHOWN = 20


class ConfigError(UserError):
    """One or more invalid config values; the message lists each with its key, and
    `problems` holds them (empty for an error about the file itself)."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems

    def one_line(self) -> str:
        """The message's first line, then its problems, on one line."""
        head = str(self).splitlines()[0] if str(self) else ""
        return " ".join([head, "; ".join(self.problems)]).strip()


class _Invalid(Exception):
    """A single value failed its check; the message is completed with the key's name."""


Check = Callable[[Any], Any]


def _integer(low: int, high: int | None = None) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"expected an integer, got {_show(value)}")
        if value < low or (high is not None and value > high):
            limit = f"at least {low}" if high is None else f"{low} to {high}"
            raise _Invalid(f"{shown_value(value)} is out of range ({limit})")
        return value

    return check


def _number(low: float, high: float, *, low_open: bool = False) -> Check:
    """low_open: `low` itself is excluded (a pulse or a frame rate of 0 means nothing)."""

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(f"expected a number, got {_show(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            # nan compares false with every bound, so it would slip through the range check.
            # (An int is compared exactly, however large: TOML integers have no bound here.)
            raise _Invalid(f"{value} is not a finite number")
        if (value <= low if low_open else value < low) or value > high:
            above = f"more than {low}" if low_open else f"at least {low}"
            raise _Invalid(f"{shown_value(value)} is out of range ({above} and at most {high})")
        return float(value)

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_show(value)}")
    return value


def _choice(*options: str) -> Check:
    def check(value: Any) -> str:
        if value not in options:
            raise _Invalid(f"{_show(value)} is not one of {', '.join(map(repr, options))}")
        return value

    return check


def _auto_or(inner: Check) -> Check:
    """`"auto"` defers the value to the models manifest or the runtime, stored as None."""

    def check(value: Any) -> Any:
        if value is None or value == AUTO:
            return None
        try:
            return inner(value)
        except _Invalid as error:
            raise _Invalid(f'{error} (or "auto" for the default)') from None

    return check


def _path(*, optional: bool) -> Check:
    def check(value: Any) -> Path | None:
        if value is None and optional:
            return None
        if isinstance(value, Path):
            _refuse_unusable_path(str(value))
            return value
        if not isinstance(value, str):
            raise _Invalid(f"expected a path string, got {_show(value)}")
        if not value:
            if optional:
                return None
            raise _Invalid("must not be empty")
        _refuse_unusable_path(value)
        return Path(value).expanduser()

    return check


# A Unix socket's path is at most 107 bytes (sun_path holds 108 with its NUL).
SOCKET_PATH_MAX_BYTES = 107


def _socket_path(value: Any) -> Path | None:
    path = _path(optional=True)(value)
    if path is not None and len(os.fsencode(path)) > SOCKET_PATH_MAX_BYTES:
        raise _Invalid(
            f"{str(path)[:40]}... is {len(os.fsencode(path))} bytes long; a Unix socket's path "
            f"is at most {SOCKET_PATH_MAX_BYTES}: choose a shorter one"
        )
    return path


def _refuse_unusable_path(path: str) -> None:
    """No file name holds a NUL character or bytes that are not UTF-8 (path_text_problem)."""
    problem = paths.path_text_problem(path)
    if problem is not None:
        raise _Invalid(problem)


# The largest /dev/videoN index taken (a larger one was retried every 10 s for ever).
MAX_DEVICE_INDEX = 1023


# camera.source values that name a camera rather than a file, a folder or a URL.
CAMERA_NAMES = (AUTO, "picamera2")


def _source(value: Any) -> int | str:
    """Camera spec: a device index stays an int so OpenCV opens it as a V4L2 device."""
    if isinstance(value, bool):
        raise _Invalid(f"expected a string or device index, got {_show(value)}")
    if isinstance(value, str) and value.isascii() and value.isdigit():  # not "²"
        if len(value) > len(str(MAX_DEVICE_INDEX)):  # (int() refuses over 4,300 digits)
            shown = value if len(value) <= 40 else f"of {len(value)} digits"
            raise _Invalid(f"device index {shown} is not from 0 to {MAX_DEVICE_INDEX}")
        value = int(value)
    if isinstance(value, int):
        if not 0 <= value <= MAX_DEVICE_INDEX:
            raise _Invalid(f"device index {shown_value(value)} is not from 0 to {MAX_DEVICE_INDEX}")
        return value
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(
            'expected "auto", "picamera2", a device index, a URL, a video file or a folder, '
            f"got {_show(value)}"
        )
    _refuse_unusable_path(value)
    return value


def _hours(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise _Invalid(f'expected a list like ["07:00-22:00"], got {_show(value)}')
    malformed: list[str] = []
    empty: list[str] = []
    for item in value:
        match = _HOURS.match(item) if isinstance(item, str) else None
        if match is None:
            malformed.append(_show(item))
        elif match["start"] == match["end"]:
            empty.append(repr(item))
    # Every bad span at once: one edit of the file fixes them all.
    problems: list[str] = []
    if malformed:
        verb = "is not a time span" if len(malformed) == 1 else "are not time spans"
        problems.append(
            f"{', '.join(malformed)} {verb} "
            'HH:MM-HH:MM (24 h clock, 00:00 to 24:00, e.g. "07:00-22:00"; a span may cross '
            'midnight: "22:00-06:00")'
        )
    if empty:
        verb = "is an empty span (it" if len(empty) == 1 else "are empty spans (each"
        problems.append(
            f"{', '.join(empty)} {verb} "
            'ends when it starts); for the whole day write "00:00-24:00", or leave '
            "allowed_hours out (or [])"
        )
    if problems:
        raise _Invalid("; ".join(problems))
    return tuple(value)


def _pattern(regex: re.Pattern[str], example: str, *, empty: bool = False) -> Check:
    """A string matching `regex` (e.g. an MQTT topic); `empty` allows "" (meaning off)."""

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise _Invalid(f"expected a string, got {_show(value)}")
        if (value == "" and empty) or regex.match(value):
            return value
        raise _Invalid(f"{shown_value(value)} is not valid (expected something like {example!r})")

    return check


def split_listen(value: str) -> tuple[str, int]:
    """("host", port) of a `host:port` or `[ipv6]:port` listen address; ValueError when not."""
    listen = read_authority(value, port_required=True)
    if listen is None or listen.port is None or port_problem(listen.port) is not None:
        raise ValueError(
            f"{shown_value(value)} is not host:port "
            '(e.g. "127.0.0.1:8080", "0.0.0.0:8080", "[::1]:8080")'
        )
    if listen.ipv6:
        try:
            normal_host(listen)  # refused here, not when the hub binds
        except ValueError as error:
            raise ValueError(f"{shown_value(value)}: {error}") from None
    return listen.host, listen.port


def split_origin(value: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of an origin `http(s)://host[:port]`, as a browser writes it in
    an Origin header: lower case, an IPv6 address compressed and without its brackets, and
    port None for the scheme's default. A trailing "/" is allowed; ValueError naming the
    problem otherwise (a path, query, fragment or user name; another scheme; a bad host)."""
    scheme, separator, rest = value.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in DEFAULT_PORTS:
        raise ValueError(
            f"{shown_value(value)} is not an http:// or https:// origin ({_ORIGIN_EXAMPLE})"
        )
    cut = min((rest.index(c) for c in "/?#" if c in rest), default=len(rest))
    authority, after = rest[:cut], rest[cut:]
    if after not in ("", "/"):
        raise ValueError(
            f"{shown_value(value)} has a path, query or fragment; give only scheme://host[:port] "
            f"(the page is served at the root; {_ORIGIN_EXAMPLE})"
        )
    if "@" in authority:
        raise ValueError(
            f"{shown_value(value)} holds a user name (user@); give only scheme://host[:port]"
        )
    parsed = read_authority(authority)
    if parsed is None:
        hint = None if authority.isascii() else _ascii_hint(scheme, authority)
        hint = hint or f"{authority!r} is not host[:port] ({_ORIGIN_EXAMPLE})"
        raise ValueError(f"{shown_value(value)}: {hint}")
    try:
        host = normal_host(parsed)
    except ValueError as error:
        raise ValueError(f"{shown_value(value)}: {error}") from None
    port = parsed.port
    problem = None if parsed.ipv6 else name_problem(host)
    if problem is None and port is not None:
        problem = port_problem(port)
    if problem is not None:
        raise ValueError(f"{shown_value(value)}: {problem}")
    return scheme, host, None if port == DEFAULT_PORTS[scheme] else port


def _ascii_hint(scheme: str, authority: str) -> str | None:
    """For a host name written in another script, the origin in the xn-- form a browser
    sends in its Origin header; None when the authority is not a name (and port) at all."""
    name, colon, port = authority.partition(":")
    if authority.startswith("[") or (colon and not (port.isascii() and port.isdigit())):
        return None
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return (
        f"{authority!r} is not ASCII: write the origin as a browser sends it, "
        f"{scheme}://{ascii_name}{colon}{port}"
    )


def join_origin(scheme: str, host: str, port: int | None) -> str:
    """The origin's text as a browser sends it: `scheme://host[:port]`, [brackets] for IPv6."""
    name = f"[{host}]" if ":" in host else host
    return f"{scheme}://{name}" + ("" if port is None else f":{port}")


def _public_origin(value: Any) -> str:
    """ "" (no proxy), or the origin normalised by split_origin."""
    if not isinstance(value, str):
        raise _Invalid(f'expected a string like "https://door.example", got {_show(value)}')
    if value == "":
        return ""
    try:
        return join_origin(*split_origin(value))
    except ValueError as error:
        raise _Invalid(str(error)) from None


def _mqtt_host(value: Any) -> str:
    host: str = _pattern(_HOST, "192.0.2.10", empty=True)(value)
    problem = host_name_problem(host) if host else None
    if problem is not None:
        raise _Invalid(problem)
    return host


def _listen(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f'expected a string like "127.0.0.1:8080", got {_show(value)}')
    try:
        split_listen(value)
    except ValueError as error:
        raise _Invalid(str(error)) from None
    return value


def _show(value: Any) -> str:
    return f"{type(value).__name__} {shown_value(value)}"


def _key(default: Any, check: Check) -> Any:
    return field(default=default, metadata={"check": check})


# At least a frame every 10 s, for camera.fps and for a clip's own rate: each frame's time
# is its index / fps, and a rate near 0 (1e-320) made every time infinite, so no cooldown or
# camera-drop deadline held.
MIN_FPS = 0.1


@dataclass(frozen=True)
class CameraConfig:
    source: int | str = _key(AUTO, _source)
    width: int = _key(1280, _integer(32, 8192))
    height: int = _key(960, _integer(32, 8192))
    fps: float = _key(10.0, _number(MIN_FPS, 120.0))
    lores_width: int = _key(640, _integer(32, 8192))
    lores_height: int = _key(480, _integer(32, 8192))
    # A video file or a folder of images plays at its own frame rate, as a camera delivers
    # frames (the demo); off, it plays as fast as the door processes it (evaluations).
    realtime: bool = _key(False, _boolean)


@dataclass(frozen=True)
class ModelsConfig:
    dir: Path | None = _key(None, _auto_or(_path(optional=True)))
    backend: str = _key(AUTO, _choice(*BACKENDS))
    threads: int | None = _key(None, _auto_or(_integer(1, MAX_THREADS)))
    # MTCNN cascade on the CPU: "auto" times int8 and float at start-up and keeps the faster
    # (edge_app/cascade_choice.py); the Edge TPU always runs int8.
    cascade: str = _key(AUTO, _choice(*CASCADES))


@dataclass(frozen=True)
class DetectionConfig:
    min_face: int | None = _key(None, _auto_or(_integer(12, 2000)))


def _recognition_number(key: str) -> Check:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(f"expected a number, got {_show(value)}")
        problem = recognition_problem(key, value)
        if problem is not None:
            raise _Invalid(problem)
        return float(value)

    return check


@dataclass(frozen=True)
class RecognitionConfig:
    # RECOGNITION_RANGES says why each is bounded as it is.
    threshold: float | None = _key(None, _auto_or(_recognition_number("threshold")))
    margin: float | None = _key(None, _auto_or(_recognition_number("margin")))
    aggregate: str = _key(AUTO, _choice(AUTO, *AGGREGATES))
    lookalikes: str = _key(LOOKALIKE_MODES[0], _choice(*LOOKALIKE_MODES))
    # Remove the direction the enrolled people share (one camera, one light) from every face
    # before matching (edge_app.matching.site_direction).
    site_centring: bool = _key(True, _boolean)
    # Count the visits the door judged strangers as more faces of the site (opt-in: keeps an
    # aggregate of passers-by's embeddings beside the gallery; edge_app.site_memory).
    learn_site: bool = _key(False, _boolean)


@dataclass(frozen=True)
class GalleryConfig:
    path: Path = _key(paths.DEFAULT_GALLERY, _path(optional=False))


# The longest pulse the strike may be given: gpio.pulse_seconds and every Relay.pulse().
PULSE_SECONDS_MAX = 60.0
# The longest `[policy] cooldown_seconds`: an unlock longer ago holds no one back, whatever a
# reload sets (edge_app.policy forgets it).
COOLDOWN_SECONDS_MAX = 86400.0
# The shortest gpio.pulse_seconds: a relay takes about 10 ms to switch and a strike longer to
# release, so a pulse of milliseconds was an unlock logged and no door opened.
PULSE_SECONDS_MIN = 0.1


@dataclass(frozen=True)
class GpioConfig:
    pin: int = _key(17, _integer(0, GPIO_PIN_MAX))
    active_high: bool = _key(True, _boolean)
    pulse_seconds: float = _key(3.0, _number(PULSE_SECONDS_MIN, PULSE_SECONDS_MAX))
    force_uart_pins: bool = _key(False, _boolean)
    factory: str = _key(AUTO, _choice(*GPIO_FACTORIES))


@dataclass(frozen=True)
class PolicyConfig:
    hits: int = _key(3, _integer(1, 100))
    window: int = _key(5, _integer(1, 100))
    cooldown_seconds: float = _key(30.0, _number(0.0, COOLDOWN_SECONDS_MAX))
    allowed_hours: tuple[str, ...] = _key((), _hours)
    # "track": each vote matches the quality-weighted mean of the track's embeddings so far
    # (edge_app/fusion.py); "frame": each vote matches that frame's embedding alone.
    evidence: str = _key("track", _choice(*EVIDENCE))


@dataclass(frozen=True)
class ClockConfig:
    # Whether `[policy] allowed_hours` and the events' retention act on a wall clock that
    # nothing has set (edge_app/wall_clock.py).
    trust: str = _key(SYNCHRONISED, _choice(*TRUST))


@dataclass(frozen=True)
class TrackingConfig:
    iou: float = _key(0.3, _number(0.0, 1.0, low_open=True))
    max_missed: int = _key(5, _integer(0, 1000))
    refresh_frames: int = _key(10, _integer(1, 10000))
    # At most this many faces are embedded per frame, the largest first (daemon.largest_first).
    faces_per_frame: int = _key(4, _integer(1, 64))


@dataclass(frozen=True)
class EventsConfig:
    db: Path | None = _key(paths.DEFAULT_STATE_DIR / "events.db", _path(optional=True))
    jsonl: Path | None = _key(None, _path(optional=True))
    snapshots: Path | None = _key(None, _path(optional=True))
    snapshot_keep: int = _key(200, _integer(1, 1_000_000))
    # Events and snapshots older than this are deleted at start and daily; 0 keeps them all.
    retention_days: int = _key(90, _integer(0, 36_500))


@dataclass(frozen=True)
class LivenessConfig:
    """Presentation-attack check (docs/LIVENESS.md).

    mode: "require" = a track unlocks only when judged live as well as recognised; "log" =
    scored and reported, never blocks; "off" = not run. "auto" (the default) is "require" when
    the models have a liveness model, else "off" with a warning.
    threshold: score at or above which a frame is live; "auto" = the manifest's. Above 0: at 0
    every face, a printed one too, would be live.
    min_live_frames: live frames needed among a track's last LIVE_WINDOW_FRAMES scored.
    """

    mode: str | None = _key(None, _auto_or(_choice(*LIVENESS_MODES)))
    threshold: float | None = _key(None, _auto_or(_number(0.0, 1.0, low_open=True)))
    min_live_frames: int = _key(4, _integer(1, LIVE_WINDOW_FRAMES))


@dataclass(frozen=True)
class HubConfig:
    """The door's control socket (read by `edge-app run`) and what `edge-app hub` expects of
    it. `socket = ""` turns the socket off; `allow_unlock` lets a client of the socket (the
    hub: MQTT, the web page) pulse the relay, and is off unless set here."""

    socket: Path | None = _key(DEFAULT_SOCKET, _socket_path)
    allow_unlock: bool = _key(False, _boolean)
    stale_seconds: float = _key(10.0, _number(1.0, 3600.0))


@dataclass(frozen=True)
class MqttConfig:
    """`edge-app hub`'s broker connection and Home Assistant discovery; host "" = no MQTT."""

    host: str = _key("", _mqtt_host)
    port: int = _key(1883, _integer(1, 65535))
    username: str = _key("", _pattern(_PRINTABLE, "edge-door", empty=True))
    password_file: Path | None = _key(None, _path(optional=True))
    tls_ca: Path | None = _key(None, _path(optional=True))
    tls_cert: Path | None = _key(None, _path(optional=True))
    tls_key: Path | None = _key(None, _path(optional=True))
    topic_prefix: str = _key("edge-door", _pattern(_TOPIC, "edge-door"))
    door_id: str = _key("door", _pattern(_IDENT, "front"))
    discovery_prefix: str = _key("homeassistant", _pattern(_TOPIC, "homeassistant"))
    discovery: bool = _key(True, _boolean)
    remote_unlock: bool = _key(False, _boolean)
    unlock_secret_file: Path | None = _key(None, _path(optional=True))
    unlock_window_seconds: float = _key(30.0, _number(1.0, 300.0))
    unlock_code_file: Path | None = _key(None, _path(optional=True))


@dataclass(frozen=True)
class WebConfig:
    """The web page served by `edge-app hub` (docs/WEB.md); off, and loopback-only, by default."""

    enabled: bool = _key(False, _boolean)
    listen: str = _key("127.0.0.1:8080", _listen)
    password_file: Path = _key(paths.DEFAULT_STATE_DIR / "web-password", _path(optional=False))
    tls_cert: Path | None = _key(None, _path(optional=True))
    tls_key: Path | None = _key(None, _path(optional=True))
    # The address the browser uses when a TLS reverse proxy serves the page (docs/WEB.md);
    # "" = none. Normalised by split_origin: "https://door.example".
    public_origin: str = _key("", _public_origin)
    remote_unlock: bool = _key(False, _boolean)
    live_view: bool = _key(True, _boolean)
    session_idle_minutes: int = _key(30, _integer(1, 24 * 60))
    session_max_hours: int = _key(12, _integer(1, 30 * 24))
    max_upload_files: int = _key(10, _integer(1, 100))
    max_upload_mb: int = _key(40, _integer(1, 500))


@dataclass(frozen=True)
class Config:
    camera: CameraConfig = field(default_factory=CameraConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    recognition: RecognitionConfig = field(default_factory=RecognitionConfig)
    gallery: GalleryConfig = field(default_factory=GalleryConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    web: WebConfig = field(default_factory=WebConfig)


SECTIONS: dict[str, type] = {
    "camera": CameraConfig,
    "models": ModelsConfig,
    "detection": DetectionConfig,
    "recognition": RecognitionConfig,
    "gallery": GalleryConfig,
    "gpio": GpioConfig,
    "policy": PolicyConfig,
    "clock": ClockConfig,
    "tracking": TrackingConfig,
    "events": EventsConfig,
    "liveness": LivenessConfig,
    "hub": HubConfig,
    "mqtt": MqttConfig,
    "web": WebConfig,
}


def _shown_name(name: str) -> str:
    """A key or section name from the file as a message shows it: cut (a key of 900 kB would
    make a line of 900 kB), and quoted unless plain letters, digits, "_" and "-" (TOML's
    quoted keys may hold a line break that would forge a line of the message, or a
    zero-width space that makes "pin\u200b" read as "pin")."""
    plain = name.replace("-", "_").isidentifier() and name.isascii()
    return cut(name) if plain else cut(repr(name))


def _unknown(kind: str, name: str, known: list[str], errors: list[str]) -> str:
    """The problem line for an unknown key or section. Past the PROBLEMS_SHOWN lines a
    ConfigError shows, the line is only counted: no close match is looked for (a reload
    reads the file on the door's frame loop, and a file of 100,000 unknown keys would spend
    3 s in difflib)."""
    if len(errors) >= PROBLEMS_SHOWN:
        return f"{_shown_name(name)}: unknown {kind}"
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
    return f"{_shown_name(name)}: unknown {kind} ({hint})"


def _build_section(name: str, cls: type, data: Any, errors: list[str]) -> Any:
    if not isinstance(data, Mapping):
        errors.append(f"{name}: expected a table [{name}], got {_show(data)}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key not in fields:
            owners = _SECTIONS_OF_KEY.get(key, [])
            if owners:  # a key of another section: say which
                errors.append(f"{name}.{key}: not a key of [{name}]; move it under [{owners[0]}]")
            else:
                errors.append(f"{name}." + _unknown("key", key, list(fields), errors))
            continue
        try:
            values[key] = fields[key].metadata["check"](raw)
        except _Invalid as error:
            errors.append(f"{name}.{key}: {error}")
    return cls(**values)


def _cross_checks(config: Config, errors: list[str]) -> None:
    """Rules between keys; each message names the key to change."""
    gpio, camera, policy = config.gpio, config.camera, config.policy
    pin = relay_pin_problem(gpio.pin, gpio.force_uart_pins, gpio.active_high)
    if pin is not None:
        errors.append(pin)
    if camera.width * camera.height > MAX_DECODED_PIXELS:
        errors.append(
            f"camera.width: {camera.width}x{camera.height} is more than the "
            f"{MAX_DECODED_PIXELS // 1_000_000} megapixels a frame may have (a Pi camera's "
            "largest is 12.3); make camera.width/height smaller"
        )
    if camera.lores_width > camera.width or camera.lores_height > camera.height:
        errors.append(
            f"camera.lores_width: the detection stream {camera.lores_width}x"
            f"{camera.lores_height} is larger than the capture size {camera.width}x"
            f"{camera.height}; make camera.lores_width/lores_height at most camera.width/height"
        )
    min_face = config.detection.min_face
    if min_face is not None and min_face > min(camera.lores_width, camera.lores_height):
        errors.append(
            f"detection.min_face: {min_face} pixels is more than the detection frame "
            f"{camera.lores_width}x{camera.lores_height} holds, so no face would ever be found; "
            'make it at most camera.lores_width and lores_height, or "auto"'
        )
    problem = votes_problem(policy)
    if problem is not None:
        errors.append(problem)
    recognition = config.recognition
    if recognition.learn_site and not recognition.site_centring:
        errors.append(
            "recognition.learn_site: what the door learns is used by site centring, which is "
            "off; set recognition.site_centring = true, or learn_site = false"
        )
    _distinct_files(config, errors)
    socket_path = config.hub.socket
    if socket_path is not None:
        kind = _wrong_kind(socket_path, "socket")
        if kind is not None:  # the door would run without its control socket (and the hub)
            errors.append(
                f"hub.socket: {socket_path} is a {kind}, not a socket; give a path of its own "
                'where the door makes its socket ("" turns it off)'
            )
    web = config.web
    if (web.tls_cert is None) != (web.tls_key is None):
        errors.append(
            "web.tls_cert: give both web.tls_cert and web.tls_key (a certificate and its "
            "private key), or neither for plain HTTP"
        )


def written_files(config: Config) -> dict[str, Path | None]:
    """The files edge-app writes, by their config key (None: that one is off): the door's
    gallery and event sinks, and the secrets `edge-app hub passwd` and `hub unlock-code`
    store."""
    events = config.events
    return {
        "gallery.path": config.gallery.path,
        "events.db": events.db,
        "events.jsonl": None if events.jsonl is None or str(events.jsonl) == "-" else events.jsonl,
        "events.snapshots": events.snapshots,
        "web.password_file": config.web.password_file,
        "mqtt.unlock_code_file": config.mqtt.unlock_code_file,
    }


def read_files(config: Config) -> dict[str, Path | None]:
    """The files the door and the hub read but never write, by their config key: TLS files
    and secrets made elsewhere. (They may be one file: a PEM can hold a certificate and
    its key.)"""
    web, mqtt = config.web, config.mqtt
    return {
        "web.tls_cert": web.tls_cert,
        "web.tls_key": web.tls_key,
        "mqtt.password_file": mqtt.password_file,
        "mqtt.tls_ca": mqtt.tls_ca,
        "mqtt.tls_cert": mqtt.tls_cert,
        "mqtt.tls_key": mqtt.tls_key,
        "mqtt.unlock_secret_file": mqtt.unlock_secret_file,
    }


# The SQLite databases among written_files(), whose side files SQLite writes beside them.
SQLITE_KEYS = ("gallery.path", "events.db")


def _followed(path: Path) -> Path:
    """`path` with its symbolic links followed; OSError when they cannot be (a loop, a folder
    that may not be read). Python 3.11's resolve() raises RuntimeError on a loop, 3.13's
    leaves the looping link in the path: either way, a loop is OSError here (ELOOP)."""
    try:
        where = path.expanduser().resolve()
    except RuntimeError as error:
        raise OSError(errno.ELOOP, str(error)) from None
    for part in (where, *where.parents):
        if part.is_symlink():  # resolve() stopped at it: following it fails
            os.stat(part)
    return where


# What a models folder holds (manifest.json, *.tflite, the mean and cohort .npy files).
MODEL_FILE_SUFFIXES = (".json", ".tflite", ".npy", ".npz")


def _distinct_files(config: Config, errors: list[str]) -> None:
    """The gallery, each event sink and each secret need a file of their own: events
    appended to the gallery, a password hash written over it, or two sinks in one file,
    would damage both; and none of them may be the camera's recorded source, which the door
    would then read while writing it."""
    # (not at import: relay_off reads this module)
    from edge_app.hub.code import lockout_path
    from edge_app.sqlite_files import SIDE_FILES

    files = written_files(config)
    seen: dict[Path, str] = {}
    # What else a written file must not be: the side files SQLite keeps beside each database
    # (events written into the gallery's -wal, say), the lock-out file the hub keeps beside
    # the unlock code's, and the files edge-app only reads (a password hash written over the
    # TLS key, say).
    others: dict[Path, str] = {}
    for key, path in read_files(config).items():
        with contextlib.suppress(OSError):  # unreadable: the hub says so when it reads it
            if path is not None:
                others.setdefault(_followed(path), f"{key}, which edge-app reads")
    for key in SQLITE_KEYS:
        path = files[key]
        with contextlib.suppress(OSError):  # said below, for the database itself
            if path is not None and (where := _followed(path)).name:  # ("/": no file at all)
                for suffix in SIDE_FILES:
                    side = where.with_name(where.name + suffix)
                    others[side] = f"the {suffix} file SQLite keeps beside {key}"
    code = files["mqtt.unlock_code_file"]
    with contextlib.suppress(OSError):  # said below, for the code file itself
        if code is not None and code.name:
            others[_followed(lockout_path(code))] = (
                "the lock-out file the hub keeps beside mqtt.unlock_code_file"
            )
    # The models folder's files: events appended to its manifest stopped every later start.
    models = config.models.dir if config.models.dir is not None else paths.default_models_dir()
    with contextlib.suppress(OSError):  # missing: the engine says so when it loads
        models = _followed(models)
    for key, path in files.items():
        if path is None:
            continue
        try:
            where = _followed(path)
        except PermissionError as error:
            # Not a mistake in the file: this user may not enter a folder on the way (a
            # state folder is 0700, the door's own). Python 3.11's is_symlink() raises then.
            errors.append(
                f"{key}: {path} cannot be reached by this user ({error}); run the command as "
                "the door's user (sudo -u edge-app edge-app ...)"
            )
            continue
        except OSError as error:
            errors.append(f"{key}: {path} cannot be followed ({error}); give a plain path")
            continue
        wanted = "folder" if key in FOLDER_KEYS else "file"
        kind = _wrong_kind(where, wanted)
        if kind is not None:
            off = ' ("" turns it off)' if key.startswith("events.") else ""
            errors.append(f"{key}: {path} is a {kind}, not a {wanted}; give a {wanted}{off}")
        elif where in seen:
            errors.append(
                f"{key}: {path} is also {seen[where]}; give each its own file (snapshots: a folder)"
            )
        elif where in others:
            errors.append(f"{key}: {path} is also {others[where]}; give it a file of its own")
        elif where.parent == models and where.suffix in MODEL_FILE_SUFFIXES and where.exists():
            errors.append(
                f"{key}: {path} is one of the models in {models}, which the door reads; give "
                "it a file of its own"
            )
        else:
            seen[where] = key
    source = config.camera.source
    if isinstance(source, str) and source not in CAMERA_NAMES and "://" not in source:
        try:
            where = _followed(Path(source))
        except OSError:
            return  # the camera refuses it when the door opens it
        if where in seen:
            errors.append(
                f"camera.source: {source} is also {seen[where]}, which the door writes; "
                "give the recording and the door's files places of their own"
            )


# Written keys that name a folder, not a file.
FOLDER_KEYS = ("events.snapshots",)


def _wrong_kind(path: Path, wanted: str) -> str | None:
    """What is at `path` when it is not the `wanted` "file" or "folder" ("folder", "file",
    "device", "named pipe", "socket"); None when it is, or when nothing is there yet. Events
    written to /dev/null or /dev/full, or into a folder, were lost for as long as the door
    ran, each with an error line; snapshots asked of a file were never written."""
    try:
        kind = kind_of(path.stat().st_mode) or "file"
    except OSError:
        return None
    return None if kind == wanted else kind


def _mqtt_checks(config: Config, errors: list[str]) -> None:
    """[mqtt] keys that only make sense together."""
    mqtt = config.mqtt
    if mqtt.password_file is not None and not mqtt.username:
        errors.append("mqtt.password_file: set mqtt.username too (the broker's user name)")
    if (mqtt.tls_cert is None) != (mqtt.tls_key is None):
        errors.append("mqtt.tls_cert: a client certificate needs both mqtt.tls_cert and tls_key")
    if mqtt.tls_cert is not None and mqtt.tls_ca is None:
        errors.append("mqtt.tls_cert: set mqtt.tls_ca too (TLS is on only when tls_ca is given)")
    if mqtt.remote_unlock and mqtt.unlock_secret_file is None and mqtt.unlock_code_file is None:
        errors.append(
            "mqtt.remote_unlock: needs mqtt.unlock_code_file (the code Home Assistant's lock card "
            "asks for; make it with `edge-app hub unlock-code`) or mqtt.unlock_secret_file (the "
            "HMAC key that signs unlock commands), or both (docs/HOME_ASSISTANT.md)"
        )


def _sections_of_keys() -> dict[str, list[str]]:
    owners: dict[str, list[str]] = {}
    for section, kind in SECTIONS.items():
        for key in dataclasses.fields(kind):
            owners.setdefault(key.name, []).append(section)
    return owners


# Which sections have a key of each name, looked up for every key written above every section
# header (a file may hold 100,000 of them).
_SECTIONS_OF_KEY = _sections_of_keys()


def _outside_sections(name: str) -> str:
    """A key written above every [section] header: which section's it may be."""
    owners = _SECTIONS_OF_KEY.get(name, [])
    if owners:
        hint = f"move it under [{owners[0]}]" + (
            "" if len(owners) == 1 else f" (or {', '.join(f'[{o}]' for o in owners[1:])})"
        )
    else:
        hint = "every key belongs under a [section] header, such as [gpio]"
    return f"{_shown_name(name)}: a key outside any section; {hint}"


def parse_config(data: Mapping[str, Any], origin: str = "config") -> Config:
    """Validate a parsed TOML document; raise one ConfigError listing every problem."""
    errors: list[str] = []
    sections: dict[str, Any] = {}
    for name, section in data.items():
        if name not in SECTIONS and not isinstance(section, Mapping):
            errors.append(_outside_sections(name))
            continue
        if name not in SECTIONS:
            errors.append(_unknown("section", name, list(SECTIONS), errors))
            continue
        sections[name] = _build_section(name, SECTIONS[name], section, errors)
    config = Config(**sections)
    _cross_checks(config, errors)
    _mqtt_checks(config, errors)
    if errors:
        shown = errors[:PROBLEMS_SHOWN]
        if len(errors) > PROBLEMS_SHOWN:
            shown.append(f"and {len(errors) - PROBLEMS_SHOWN} more (fix these first)")
        problems = "\n".join(f"  - {error}" for error in shown)
        raise ConfigError(f"{origin}: {len(errors)} problem(s):\n{problems}", tuple(shown))
    return config


def door_config(path: Path | None, overrides: Mapping[str, Any]) -> Config:
    """The door's config: the file at `path` (None: the default one) with the command line's
    overrides, none of the files edge-app writes (written_files) being that config file:
    events appended to it, or a secret written over it, would leave a door that cannot start
    again."""
    return read_door_config(path, overrides)[0]


def read_door_config(
    path: Path | None, overrides: Mapping[str, Any]
) -> tuple[Config, dict[str, Any]]:
    """door_config, and the file's tables as read: which keys the file itself sets (a
    reload names an override the file contradicts) from the same read."""
    where, data = read_config_file(path)
    config = apply_overrides(parse_config(data, str(where)), overrides)
    config_file = Path(path) if path is not None else paths.DEFAULT_CONFIG
    try:
        config_id = _file_id(os.stat(config_file))
    except OSError:
        return config, data  # no config file (the defaults): nothing to damage
    for key, written in written_files(config).items():
        try:
            same = written is not None and _file_id(os.stat(written.expanduser())) == config_id
        except OSError:  # not there yet, so not the config file
            continue
        if same:  # by name, symbolic or hard link
            raise ConfigError(f"{key}: {written} is the config file itself; give it its own file")
    return config, data


def _file_id(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def load_config(path: Path | None = None) -> Config:
    """The config at `path`, or at the default location when None (read_config_file)."""
    where, data = read_config_file(path)
    return parse_config(data, str(where))


# The example config is about 10 kB: a file a hundred times larger is not a config file.
CONFIG_MAX_BYTES = 1024 * 1024
# Names in one dotted key or table name (`[a.b]`, `a.b = 1`); the config's keys have two.
# tomllib's work and memory grow with the square of a key's length: one line of 40 kB,
# `a.a.a...= 1` (20,000 names), took 1.5 GB and 9 s, and one of a megabyte more memory than
# a Pi has, before anything else could refuse it.
MAX_KEY_PARTS = 16
# A run of more than MAX_KEY_PARTS names (bare or quoted) joined by dots, looked for before
# tomllib reads the text. Anywhere, inside strings and comments too: a key cannot span
# lines, and no config has such a run elsewhere. A match starts only where a name can (not
# after a letter of one, nor after a backslash) and takes each name without backtracking
# (possessive), so the search is linear in the text: 0.3 s at most for a megabyte.
_KEY_PART = r"""(?:[A-Za-z0-9_-]++|"(?:[^"\\\n]|\\.)*+"|'[^'\n]*+')"""
_LONG_KEY = re.compile(
    rf"(?<![A-Za-z0-9_\\-])(?:{_KEY_PART}[ \t]*+\.[ \t]*+){{{MAX_KEY_PARTS}}}{_KEY_PART}"
)


def read_config_file(path: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """The path read and its TOML tables, not yet validated; ConfigError if unreadable.

    A missing default file means the defaults (a fresh install works before any editing);
    a missing file the user named explicitly is an error, since that is surely a typo.
    A file users other than root and this one may change is refused (untrusted_problem): relay_off
    too, since a pin and level from such a file could drive the strike open; the pin the
    daemon claimed is locked from its record, and a pin no door has claimed since boot
    rests at its pull-down.
    """
    explicit = path is not None
    path = Path(path) if path is not None else paths.DEFAULT_CONFIG
    try:
        # Not read_text(): a named pipe would block every command for ever, and a device such
        # as /dev/zero would fill the memory (edge_app.bounded_read).
        data, info = read_bounded_with_stat(path, CONFIG_MAX_BYTES)
        # As TOML reads it: lines end with LF or CRLF; a lone CR is no line end (taken for
        # one, `threshold = 0.1\r# threshold = 0.6` would apply a line a TOML reader sees
        # as commented out)
        if data.startswith(b"SQLite format 3\0"):
            raise ConfigError(
                f"{path}: an SQLite database (a gallery or the events?), not the TOML config; "
                "give the config with --config (a gallery with --db, where the command takes it)"
            )
        # A byte-order mark, which Windows editors write, is not TOML's: read past it.
        text = data.decode("utf-8").removeprefix("\ufeff")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: config file not found") from None
        return path, {}
    except NotADirectoryError:  # a folder on its path is a file: nothing can be there
        raise ConfigError(
            f"{path}: config file not found (part of its path is a file, not a folder)"
        ) from None
    except NotRegularFile:
        raise ConfigError(f"{path}: not a regular file; give the config file (TOML)") from None
    except TooLarge as error:
        size = "" if error.size is None else f"{error.size} bytes, "
        raise ConfigError(
            f"{path}: {size}more than a config file has ({error.limit} at most); "
            "is this the config file?"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the config file ({error})") from None
    untrusted = untrusted_problem(path, info)
    if untrusted is not None:
        raise ConfigError(
            f"{path}: {untrusted}, and the config decides who opens the door; make it "
            f"root's (sudo chown root:edge-app {path} && sudo chmod 640 {path}) in a "
            "folder only root may change"
        )
    long_key = _LONG_KEY.search(text)
    if long_key is not None:
        line = text.count("\n", 0, long_key.start()) + 1
        raise ConfigError(
            f"{path}: line {line}: a key or table name of more than {MAX_KEY_PARTS} dotted "
            "parts (the config's are [section] and key); is this the config file?"
        )
    try:
        return path, tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        hint = (
            " (a lone carriage return: save it with LF line ends)"
            if re.search("\r(?!\n)", text)
            else ""
        )
        raise ConfigError(f"{path}: not valid TOML ({error}){hint}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML (arrays or tables nested too deeply)") from None
    except ValueError:  # int()'s digit limit, reached inside tomllib for an enormous integer
        raise ConfigError(
            f"{path}: not valid TOML (an integer of more than {sys.get_int_max_str_digits()} "
            "digits)"
        ) from None


def _who_may_change(info: os.stat_result, what: str) -> str | None:
    """Which users other than root and this one may change a file or folder, or None: its
    owner, others (write), or a group other than root's and this user's own (write)."""
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid not in (0, os.geteuid()):
        return f"{what} belongs to uid {info.st_uid}, who may change it"
    if mode & 0o002:
        return f"any user may write {what} (mode {mode:o})"
    if mode & 0o020 and info.st_gid not in (0, os.getegid()):
        return f"the users of group {info.st_gid} may write {what} (mode {mode:o})"
    return None


def untrusted_problem(path: Path, info: os.stat_result) -> str | None:
    """Why users other than root and this one could change the config at `path` (`info`:
    the fstat of the file read), or None. The config sets the threshold, the gallery and
    remote unlocks, so it is trusted as the gallery is: the file, the folder that holds it
    (who may write a folder may replace the file), and each symbolic link followed on the
    way and the folder that holds it (who may write there may point the link at another
    config, an old one with remote unlocks on), root's or this user's alone. A folder anyone
    may write with the sticky bit (/tmp) is fine: others cannot replace what is not theirs."""
    problem = _who_may_change(info, "the config")
    if problem is not None:
        return problem
    folder = Path(os.path.realpath(path)).parent
    try:
        folder_info = folder.stat()
    except OSError:
        return None  # read through it a moment ago; nothing to judge it by
    problem = _folder_problem(folder_info, f"its folder {folder}")
    if problem is not None:
        return problem
    try:
        links = _links_followed(Path(path))
    except OSError:  # changed since: the file read is what was judged
        links = []
    for link in links:
        with contextlib.suppress(OSError):  # gone since: the file read is what was judged
            owner = link.lstat().st_uid
            if owner not in (0, os.geteuid()):
                return f"the link {link} on the way to it belongs to uid {owner}, who may change it"
            problem = _folder_problem(
                link.parent.stat(), f"the folder {link.parent} of the link {link}"
            )
            if problem is not None:
                return problem
    return None


def _folder_problem(info: os.stat_result, what: str) -> str | None:
    """_who_may_change for a folder, where a sticky bit (and root or this user as its owner)
    keeps others from replacing what is not theirs."""
    if info.st_mode & stat.S_ISVTX and info.st_uid in (0, os.geteuid()):
        return None
    return _who_may_change(info, what)


def _links_followed(path: Path, most: int = 40) -> list[Path]:
    """The symbolic links the kernel follows to open `path` (the file's own, and the
    folders' on the way), in order, at most `most` (the kernel's own limit)."""
    links: list[Path] = []
    current = Path(path.anchor) if path.is_absolute() else Path.cwd()
    todo = list(path.parts[1:] if path.is_absolute() else path.parts)
    while todo and len(links) < most:
        name = todo.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            current = current.parent
            continue
        candidate = current / name
        if not candidate.is_symlink():
            current = candidate
            continue
        links.append(candidate)
        target = Path(os.readlink(candidate))
        if target.is_absolute():
            current = Path(target.anchor)
            todo = list(target.parts[1:]) + todo
        else:
            todo = list(target.parts) + todo
    return links


def to_dict(config: Config) -> dict[str, dict[str, Any]]:
    return {name: dataclasses.asdict(getattr(config, name)) for name in SECTIONS}


def apply_overrides(config: Config, overrides: Mapping[str, Any]) -> Config:
    """Config with "section.key" values replaced (command-line flags), validated like the file.

    None values are skipped, so argparse defaults of None mean "keep the config's value".
    """
    data = to_dict(config)
    unknown: list[str] = []
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if section not in data or key not in data[section]:
            unknown.append(dotted)
            continue
        data[section][key] = value
    if unknown:
        raise ValueError(f"unknown config keys in overrides: {', '.join(unknown)}")
    return parse_config(data, "command line")
