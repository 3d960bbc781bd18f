"""The wall clock as far as the door may trust it: whether anything has set the time, and the
local time zone as the system has it now.

Everything that times the door itself (the strike's pulse, cooldowns, the watchdog, the
hub's lock-outs) runs on the monotonic clock and needs neither. Two rules read the wall
clock as a date and hour, and act on it: `[policy] allowed_hours` and the events'
retention (edge_app.events). A Raspberry Pi has no battery-backed clock (a Pi 5 has one
only with a battery fitted): it boots at the time fake-hwclock or systemd-timesyncd saved
at its last shutdown, or at 1970, and keeps that time, running on from there, until an
NTP client sets it, which a door without network never does. Those rules therefore act
only on a clock that something has set (`time_source`): an NTP client the kernel says is
keeping it, or a real-time clock that set it at boot. `[clock] trust = "always"` accepts
any clock, for a door whose time is kept some other way.

The zone: Python's datetime.now() converts with the C library, which reads /etc/localtime
once per process (TZ unset, as under systemd). `timedatectl set-timezone` while the door
runs would leave it judging hours in the old zone until a restart; `LocalTime` reads the
zone file itself, again whenever it has changed.
"""

from __future__ import annotations

import ctypes
import math
import os
import time
from collections.abc import Callable
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from edge_app.config import ClockConfig

# `[clock] trust`: the time counts once an NTP client or a real-time clock set it, or always.
SYNCHRONISED, ALWAYS = "synchronised", "always"
TRUST = (SYNCHRONISED, ALWAYS)

# What set the wall clock (time_source).
NTP, RTC, UNSET = "ntp", "rtc", "unset"

# adjtimex(2) returns the clock's state; TIME_ERROR is "not synchronised" (STA_UNSYNC, which an
# NTP client such as systemd-timesyncd or chrony clears once it keeps the clock).
TIME_ERROR = 5
# struct timex is 208 bytes on 64-bit Linux (fewer on 32-bit); all zero (`modes` 0) only
# reads the state, which needs no privilege.
TIMEX_BYTES = 512

# Why a clock is not trusted, and what to do (log lines, doctor).
UNSET_CLOCK = (
    "nothing has set the system clock: no NTP client keeps it (the kernel says it is not "
    "synchronised) and no real-time clock set it at boot"
)
SET_THE_CLOCK = (
    "give the Pi network and NTP (systemd-timesyncd), fit a real-time clock, or set "
    '[clock] trust = "always" if its time is kept another way'
)
# 2024-01-01 UTC, before this program existed: a wall time earlier than this was read from a
# clock nothing had set (a Pi without a real-time clock starts at 1970).
EARLIEST_TIME = 1_704_067_200.0

RTC_FOLDER = Path("/sys/class/rtc")
# Made by systemd-timesyncd once it has synchronised the clock.
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
ZONE_FILE = Path("/etc/localtime")
ZONE_CHECK_SECONDS = 10.0  # how often LocalTime looks at ZONE_FILE: a stat, no more


def kernel_synchronised() -> bool | None:
    """Whether the kernel says an NTP client keeps its clock; None when it cannot be asked
    (not Linux, or a system call filter refuses adjtimex)."""
    try:
        adjtimex = ctypes.CDLL(None, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None
    state = adjtimex(ctypes.create_string_buffer(TIMEX_BYTES))
    return None if state == -1 else state != TIME_ERROR


def set_by_rtc(folder: Path = RTC_FOLDER) -> bool:
    """Whether a real-time clock set the system clock at boot (its `hctosys` is 1: the kernel
    read a valid time from it; one without a battery that lost its time is not used)."""
    try:
        clocks = sorted(folder.iterdir())
    except OSError:
        return False
    for rtc in clocks:
        try:
            if (rtc / "hctosys").read_text().strip() == "1":
                return True
        except OSError:
            continue
    return False


def time_source(
    synchronised: Callable[[], bool | None] = kernel_synchronised,
    timesync_flag: Path = TIMESYNC_FLAG,
    rtc_folder: Path = RTC_FOLDER,
) -> str:
    """NTP, RTC or UNSET: what has set the wall clock. A kernel that cannot be asked falls
    back on systemd-timesyncd's flag file: the door's systemd unit has ProtectClock=yes,
    whose system call filter refuses even adjtimex's read-only query."""
    state = synchronised()
    if state is None:
        state = timesync_flag.exists()
    if state:
        return NTP
    return RTC if set_by_rtc(rtc_folder) else UNSET


def _zone_key(path: Path) -> tuple[str, int, int, int] | None:
    """What changes when the zone file is replaced or re-linked; None when it is not there."""
    try:
        info = os.stat(path)
        return os.path.realpath(path), info.st_ino, info.st_mtime_ns, info.st_size
    except OSError:
        return None


def _read_zone(path: Path) -> tzinfo | None:
    """The zone in a TZif file; None when there is none to read (the C library's zone, UTC
    without the file, is used then)."""
    try:
        with open(path, "rb") as handle:
            return ZoneInfo.from_file(handle, key=str(path))
    except (OSError, ValueError):
        return None


class LocalTime:
    """The local date and time, in the zone the system has now.

    With TZ set (it does not change under a running process) that is the C library's local
    time. Without it the zone is /etc/localtime, read here with zoneinfo: the file is looked
    at every ZONE_CHECK_SECONDS (monotonic; a stat) and read again when it changed, so
    `timedatectl set-timezone` takes effect without a restart. `now` (wall seconds) and
    `ticks` are injectable."""

    def __init__(
        self,
        zone_file: Path = ZONE_FILE,
        *,
        ticks: Callable[[], float] = time.monotonic,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.zone_file = zone_file
        self._ticks = ticks
        self._now = now
        self._key: tuple[str, int, int, int] | None = None
        self._zone: tzinfo | None = None
        self._next = -math.inf

    def zone(self) -> tzinfo | None:
        """The zone file's zone; None for the C library's (TZ set, or no readable file)."""
        if os.environ.get("TZ"):
            return None
        tick = self._ticks()
        if tick >= self._next:
            self._next = tick + ZONE_CHECK_SECONDS
            key = _zone_key(self.zone_file)
            if key != self._key:  # the zone first: another thread may read both meanwhile
                self._zone = None if key is None else _read_zone(self.zone_file)
                self._key = key
        return self._zone

    def at(self, seconds: float) -> datetime:
        """Unix time `seconds` as local date and time."""
        return datetime.fromtimestamp(seconds, self.zone())

    def __call__(self) -> datetime:
        return self.at(self._now())


_LOCAL = LocalTime()


def local_at(seconds: float) -> datetime:
    """Unix time `seconds` in the system's zone as it is now (the hub's pages)."""
    return _LOCAL.at(seconds)


def local_zone() -> tzinfo | None:
    """The system's zone as it is now; None for the C library's (LocalTime.zone)."""
    return _LOCAL.zone()


class WallClock:
    """The wall clock the door's hours and retention read, and whether they may act on it."""

    def __init__(
        self,
        config: ClockConfig | None = None,
        *,
        source: Callable[[], str] = time_source,
        local_time: Callable[[], datetime] | None = None,
    ) -> None:
        self._source = source
        self.local_time = local_time if local_time is not None else LocalTime()
        self.trust = SYNCHRONISED
        if config is not None:
            self.configure(config)

    def configure(self, config: ClockConfig) -> None:
        self.trust = config.trust

    def source(self) -> str:
        return self._source()

    def trusted(self) -> bool:
        """Whether the wall clock's date and hour may be acted on."""
        return self.trust == ALWAYS or self._source() != UNSET
