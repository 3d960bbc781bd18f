"""The wall clock as the door trusts it (edge_app.wall_clock): what set the time, and the
local zone as the system has it now, re-read when it changes."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from edge_app import wall_clock
from edge_app.commands.doctor import clock_check
from edge_app.config import ClockConfig, Config, ConfigError, PolicyConfig, load_config
from edge_app.wall_clock import (
    ALWAYS,
    NTP,
    RTC,
    SYNCHRONISED,
    UNSET,
    ZONE_CHECK_SECONDS,
    LocalTime,
    WallClock,
    kernel_synchronised,
    set_by_rtc,
    time_source,
)
from edge_app.web.history import EventRow, _local_midnight

NOON_UTC = datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()


def zone_bytes(name: str) -> bytes:
    """A real TZif file: the system's zone database (Debian's tzdata)."""
    return (Path("/usr/share/zoneinfo") / name).read_bytes()


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def put_zone(path: Path, name: str) -> None:
    """Replace the zone file whole, as timedatectl does (a new link or file)."""
    temp = path.with_name(path.name + ".new")
    temp.write_bytes(zone_bytes(name))
    os.replace(temp, path)


def test_a_zone_changed_while_running_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect (an outside time audit): the C library reads the zone once per process, and
    nothing re-read it: after `timedatectl set-timezone America/Los_Angeles` a door judged
    an "08:00-17:00" person's hours in UTC, letting them in at 04:00 local, until a restart.
    The zone file is looked at every ZONE_CHECK_SECONDS and read again when it changed."""
    monkeypatch.delenv("TZ", raising=False)
    zone_file = tmp_path / "localtime"
    put_zone(zone_file, "Etc/UTC")
    ticks = Ticks()
    local = LocalTime(zone_file, ticks=ticks, now=lambda: NOON_UTC)
    assert local().hour == 12
    put_zone(zone_file, "America/Los_Angeles")
    ticks.now += ZONE_CHECK_SECONDS / 2
    assert local().hour == 12  # not looked at yet: a stat every ZONE_CHECK_SECONDS only
    ticks.now += ZONE_CHECK_SECONDS
    assert local().hour == 4  # PST, UTC-8
    assert local.at(NOON_UTC + 6 * 3600).strftime("%H:%M") == "10:00"


def test_tz_set_for_the_process_wins_over_the_zone_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zone_file = tmp_path / "localtime"
    put_zone(zone_file, "America/Los_Angeles")
    monkeypatch.setenv("TZ", "UTC")
    local = LocalTime(zone_file, now=lambda: NOON_UTC)
    assert local.zone() is None
    assert local().hour == 12


@pytest.mark.parametrize("content", [None, b"", b"not a zone file"])
def test_no_readable_zone_file_leaves_the_c_librarys_zone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes | None
) -> None:
    monkeypatch.delenv("TZ", raising=False)
    zone_file = tmp_path / "localtime"
    if content is not None:
        zone_file.write_bytes(content)
    local = LocalTime(zone_file, now=lambda: NOON_UTC)
    assert local.zone() is None
    assert local() == datetime.fromtimestamp(NOON_UTC)


def test_the_pages_show_times_and_read_dates_in_the_zone_as_it_is_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub's history showed event times, and read its date filter, in the zone the hub
    started with."""
    monkeypatch.delenv("TZ", raising=False)
    zone_file = tmp_path / "localtime"
    put_zone(zone_file, "Etc/UTC")
    ticks = Ticks()
    monkeypatch.setattr(wall_clock, "_LOCAL", LocalTime(zone_file, ticks=ticks))
    row = EventRow(1, NOON_UTC, "unlock", "Ada", 0.8, 1, None, None)
    assert row.local_time == "2026-11-30 12:00:00 UTC"
    midnight_utc = datetime(2026, 11, 30, tzinfo=UTC).timestamp()
    assert _local_midnight(date(2026, 11, 30)) == midnight_utc
    put_zone(zone_file, "America/Los_Angeles")
    ticks.now += ZONE_CHECK_SECONDS
    assert row.local_time == "2026-11-30 04:00:00 PST"
    assert _local_midnight(date(2026, 11, 30)) == midnight_utc + 8 * 3600


@pytest.mark.parametrize(
    ("clocks", "set_it"),
    [({}, False), ({"rtc0": "0\n"}, False), ({"rtc0": "0\n", "rtc1": "1\n"}, True)],
)
def test_a_real_time_clock_counts_when_it_set_the_time_at_boot(
    tmp_path: Path, clocks: dict[str, str], set_it: bool
) -> None:
    for name, hctosys in clocks.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "hctosys").write_text(hctosys)
    assert set_by_rtc(tmp_path) is set_it
    assert set_by_rtc(tmp_path / "missing") is False


@pytest.mark.parametrize(
    ("kernel", "flag", "rtc", "source"),
    [
        (True, False, False, NTP),
        (False, True, False, UNSET),  # the kernel's word wins over a stale flag file
        (False, False, True, RTC),
        (None, True, False, NTP),  # adjtimex refused (a system call filter): timesyncd's flag
        (None, False, False, UNSET),
        (None, False, True, RTC),
    ],
)
def test_what_set_the_clock(
    tmp_path: Path, kernel: bool | None, flag: bool, rtc: bool, source: str
) -> None:
    timesync = tmp_path / "synchronized"
    if flag:
        timesync.touch()
    clocks = tmp_path / "rtc"
    (clocks / "rtc0").mkdir(parents=True)
    (clocks / "rtc0" / "hctosys").write_text("1\n" if rtc else "0\n")
    assert time_source(lambda: kernel, timesync, clocks) == source


def test_the_kernel_answers_here() -> None:
    """adjtimex reads the clock's state without privilege (a system call filter aside)."""
    assert kernel_synchronised() in (True, False)


@pytest.mark.parametrize(
    ("source", "trust", "trusted"),
    [
        (NTP, SYNCHRONISED, True),
        (RTC, SYNCHRONISED, True),
        (UNSET, SYNCHRONISED, False),
        (UNSET, ALWAYS, True),
    ],
)
def test_what_the_door_trusts(source: str, trust: str, trusted: bool) -> None:
    clock = WallClock(ClockConfig(trust=trust), source=lambda: source)
    assert clock.trusted() is trusted


def test_the_default_trusts_only_a_clock_something_set() -> None:
    assert ClockConfig().trust == SYNCHRONISED
    assert WallClock(source=lambda: UNSET).trusted() is False


def test_clock_trust_is_one_of_its_words(tmp_path: Path) -> None:
    path = tmp_path / "door.toml"
    path.write_text('[clock]\ntrust = "sometimes"\n')
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=r"clock\.trust.*'synchronised', 'always'"):
        load_config(path)
    path.write_text('[clock]\ntrust = "always"\n')
    assert load_config(path).clock.trust == ALWAYS


@pytest.mark.parametrize(
    ("source", "trust", "hours", "status", "says"),
    [
        (NTP, SYNCHRONISED, ("07:00-22:00",), "ok", "kept by an NTP client"),
        (RTC, SYNCHRONISED, ("07:00-22:00",), "ok", "set at boot by a real-time clock"),
        (UNSET, ALWAYS, ("07:00-22:00",), "ok", 'trusted as [clock] trust = "always" says'),
        (UNSET, SYNCHRONISED, (), "warn", "old events and snapshots are kept past"),
        (UNSET, SYNCHRONISED, ("07:00-22:00",), "fail", "refuses every unlock as 'clock not set'"),
    ],
)
def test_doctor_says_what_set_the_clock_and_what_waits_for_it(
    tmp_path: Path, source: str, trust: str, hours: tuple[str, ...], status: str, says: str
) -> None:
    config = Config(policy=PolicyConfig(allowed_hours=hours), clock=ClockConfig(trust=trust))
    flag = tmp_path / "synchronized"
    flag.touch()  # systemd-timesyncd's
    check = clock_check(config, WallClock(config.clock, source=lambda: source), flag)
    assert (check.area, check.status) == ("clock", status)
    assert says in check.detail
    assert ("[clock] trust" in check.fix) is (status != "ok")


def test_doctor_warns_when_the_doors_unit_could_not_see_another_ntp_clients_work(
    tmp_path: Path,
) -> None:
    """The door's unit refuses adjtimex (ProtectClock=yes) and reads systemd-timesyncd's
    flag instead: chrony keeping the clock is NTP to doctor but not to the door."""
    config = Config()
    flag = tmp_path / "synchronized"  # not there: timesyncd did not set the clock
    check = clock_check(config, WallClock(source=lambda: NTP), flag)
    assert check.status == "warn" and "ProtectClock=yes" in check.detail
    assert '[clock] trust = "always"' in check.fix
    trusting = WallClock(ClockConfig(trust=ALWAYS), source=lambda: NTP)
    assert clock_check(config, trusting, flag).status == "ok"
