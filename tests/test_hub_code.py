"""Unlock by code (Home Assistant's lock card): the scrypt hash file, the command checks in
their order (shape, window, lock-out, replay, code), the discovery entity, and
`edge-app hub unlock-code`. Against a real broker: tests/test_mqtt.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge_app.config import MqttConfig, parse_config
from edge_app.hub.code import (
    CODE_FORMAT,
    FAILURE_WINDOW,
    LOCKOUT,
    LOCKOUT_MAX,
    MAX_WRONG,
    STREAK_FORGOTTEN,
    CodeFileError,
    CodeHash,
    CodeVerifier,
    read_code_file,
    write_code_file,
)
from edge_app.hub.discovery import LOCK_COMMAND_TEMPLATE, Topics, entities, retired
from edge_app.hub.signing import UnlockRefused
from edge_app.paths import REPO_ROOT
from edge_app.secret_hash import SCRYPT_DKLEN, CostRefused, ScryptHash

CODE = "482913"
NOW = 1_700_000_000.0


def cheap_hash(code: str = CODE, salt: bytes = b"s" * 16) -> CodeHash:
    """A real scrypt hash at the lowest cost the parser accepts, so the tests stay fast."""
    import hashlib

    digest = hashlib.scrypt(code.encode(), salt=salt, n=1024, r=8, p=1, dklen=SCRYPT_DKLEN)
    return CodeHash(1024, 8, 1, salt, digest)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def command(action: str = "UNLOCK", code: str = CODE, ts: float = NOW, **extra) -> bytes:
    return json.dumps({"action": action, "code": code, "timestamp": int(ts), **extra}).encode()


def test_hash_round_trip_and_constant_time_match(tmp_path: Path) -> None:
    stored = CodeHash.of(CODE)
    assert stored.n == 2**15 and len(stored.salt) == 16 and len(stored.digest) == 32
    assert stored.matches(CODE)
    assert not stored.matches("482914") and not stored.matches("") and not stored.matches("x")
    again = CodeHash.parse(stored.line())
    assert again == stored
    # Salted: the same code hashes differently each time.
    assert CodeHash.of(CODE).digest != stored.digest
    assert CODE not in stored.line()


def test_code_file_is_written_0600_atomically_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "unlock.code"
    write_code_file(path, CODE)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert read_code_file(path).matches(CODE)
    assert [p.name for p in tmp_path.iterdir()] == ["unlock.code"]  # no temp file left
    with pytest.raises(Exception, match="6 to 12 digits"):
        write_code_file(path, "12ab56")
    assert read_code_file(path).matches(CODE)  # a refused code changed nothing


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644])
def test_code_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "unlock.code"
    write_code_file(path, CODE)
    path.chmod(mode)
    with pytest.raises(CodeFileError, match=rf"mode {mode:04o}\); run `chmod 600"):
        read_code_file(path)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("482913", "does not hold an unlock code hash"),
        ("", "does not hold an unlock code hash"),
        ("bcrypt$1024$8$1$c3Nzc3Nzc3Nzc3Nzc3Nzcw$" + "A" * 43, "does not hold"),
        ("scrypt$1024$8$1$c3Nzc3Nzc3Nzc3Nzc3Nzcw$AAAA", "does not hold"),  # short digest
        ("scrypt$1000$8$1$c3Nzc3Nzc3Nzc3Nzc3Nzcw$" + "A" * 43, "parameters N=1000"),
        ("scrypt$1073741824$8$1$c3Nzc3Nzc3Nzc3Nzc3Nzcw$" + "A" * 43, "refused"),
        ("scrypt$1024$99$1$c3Nzc3Nzc3Nzc3Nzc3Nzcw$" + "A" * 43, "r=99"),
    ],
)
def test_code_file_that_is_not_our_hash_is_refused(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "unlock.code"
    path.write_text(text + "\n")
    path.chmod(0o600)
    with pytest.raises(CodeFileError, match=reason) as caught:
        read_code_file(path)
    assert "edge-app hub unlock-code" in str(caught.value)


def test_missing_code_file_names_key_and_fix(tmp_path: Path) -> None:
    with pytest.raises(CodeFileError, match=r"mqtt.unlock_code_file: .* does not exist; make it"):
        read_code_file(tmp_path / "absent")


def test_right_code_fresh_timestamp_is_accepted_once() -> None:
    clock = Clock()
    check = CodeVerifier(cheap_hash(), 30.0, clock=clock)
    assert check.verify(command()).action == "UNLOCK"
    with pytest.raises(UnlockRefused, match="replayed command"):
        check.verify(command())
    # The next second is a new command; OPEN unlocks the same way.
    assert check.verify(command("OPEN", ts=NOW + 1)).action == "OPEN"
    # The cache forgets after twice the window (a command that old fails the window anyway).
    clock.now += 61
    with pytest.raises(UnlockRefused, match="outside the 30 s window"):
        check.verify(command())
    assert check.verify(command(ts=clock.now)).action == "UNLOCK"


def test_a_restarted_hub_refuses_a_code_command_the_previous_one_accepted() -> None:
    """Defect: the replay cache is in memory, so within the window after a hub restart an
    exact copy of an accepted command opened the door again. Now a command stamped before
    the verifier was made is refused, as signed commands are; a fresh press is accepted."""
    clock = Clock()
    earlier = CodeVerifier(cheap_hash(), 30.0, clock=clock)
    assert earlier.verify(command()).action == "UNLOCK"
    clock.now += 5.4  # the hub restarts
    restarted = CodeVerifier(cheap_hash(), 30.0, clock=clock)
    clock.now += 2
    with pytest.raises(UnlockRefused, match=rf"timestamp {int(NOW)} is before this hub started"):
        restarted.verify(command())
    assert restarted.verify(command(ts=NOW + 5)).action == "UNLOCK"  # the second it started
    assert restarted.verify(command("OPEN", ts=clock.now)).action == "OPEN"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (command(ts=NOW - 31), "is 31 s behind this hub's clock, outside the 30 s window"),
        # The sign was the wrong way round: "-35 s from now" for a command 35 s ahead.
        (command(ts=NOW + 31), "is 31 s ahead of this hub's clock, outside the 30 s window"),
        (command(code="None"), "code must be 6 to 12 digits"),  # HA without a code
        (command(code="12345"), "code must be 6 to 12 digits"),
        (command(code="123456\n"), "code must be 6 to 12 digits"),  # $ would let it by
        (command(code="1234567890123"), "code must be 6 to 12 digits"),
        (command(code="٤٨٢٩١٣"), "code must be 6 to 12 digits"),  # non-ASCII digits
        (command(action="unlock"), "action must be one of UNLOCK, OPEN, LOCK"),
        (command(extra=1), "exactly"),
        (json.dumps({"action": "UNLOCK", "code": CODE}).encode(), "exactly"),
        (json.dumps({"action": "UNLOCK", "code": CODE, "timestamp": NOW}).encode(), "integer"),
        (json.dumps({"action": "UNLOCK", "code": CODE, "timestamp": True}).encode(), "integer"),
        (json.dumps({"action": "UNLOCK", "code": 482913, "timestamp": 1}).encode(), "digits"),
        (b"UNLOCK", "not JSON"),
        (b"\xff\xfe", "not UTF-8 text"),
        (b"[" * 1000, "nested too deeply"),
        (b'{"action": "UNLOCK", "code": "482913", "timestamp": ' + b"9" * 400 + b"}", "digits"),
        (b'{"action": "UNLOCK", "code": "482913", "timestamp": -Infinity}', "not a JSON number"),
        (b"[]", "exactly"),
        (b"{" + b" " * 2000 + b"}", "longer than 1024 bytes"),
    ],
)
def test_refused_commands_do_not_count_as_wrong_codes(payload: bytes, reason: str) -> None:
    check = CodeVerifier(cheap_hash(), 30.0, clock=Clock())
    for _ in range(MAX_WRONG + 1):
        with pytest.raises(UnlockRefused, match=reason):
            check.verify(payload)
    assert check.verify(command()).action == "UNLOCK"  # never locked out by these


def test_lock_needs_no_code_and_opens_nothing() -> None:
    check = CodeVerifier(cheap_hash(), 30.0, clock=Clock())
    assert check.verify(command("LOCK", code="None", ts=0)).action == "LOCK"


def test_wrong_codes_lock_remote_unlock_out(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    check = CodeVerifier(cheap_hash(), 30.0, clock=clock)
    for number in range(1, MAX_WRONG + 1):
        with pytest.raises(UnlockRefused, match=rf"wrong code \({number} of {MAX_WRONG}"):
            check.verify(command(code=f"00000{number}", ts=clock.now))
        clock.now += 1
    assert f"locked out for {LOCKOUT:.0f} s after {MAX_WRONG} wrong codes" in caplog.text
    # Now even the right code is refused, until the lock-out ends.
    with pytest.raises(UnlockRefused, match="locked out after 5 wrong codes"):
        check.verify(command(ts=clock.now))
    clock.now += LOCKOUT
    assert check.verify(command(ts=clock.now)).action == "UNLOCK"


def test_wrong_codes_anywhere_in_the_window_lock_out_for_the_whole_lock_out() -> None:
    """Guesses paced to spread over almost the whole window still lock out, and the lock-out
    lasts its full length: a guesser gets MAX_WRONG tries per FAILURE_WINDOW + LOCKOUT."""
    clock = Clock()
    check = CodeVerifier(cheap_hash(), 30.0, clock=clock)
    spacing = (FAILURE_WINDOW - 1) / (MAX_WRONG - 1)  # the first and the last 59 s apart
    for number in range(1, MAX_WRONG + 1):
        if number > 1:
            clock.now += spacing
        with pytest.raises(UnlockRefused, match=rf"wrong code \({number} of {MAX_WRONG}"):
            check.verify(command(code=f"00000{number}", ts=clock.now))
    locked_at = clock.now
    clock.now = locked_at + LOCKOUT - 1
    with pytest.raises(UnlockRefused, match="locked out after 5 wrong codes"):
        check.verify(command(ts=clock.now))
    clock.now = locked_at + LOCKOUT + 0.5
    assert check.verify(command(ts=clock.now)).action == "UNLOCK"
    clock.now += 1
    with pytest.raises(UnlockRefused, match=rf"wrong code \(1 of {MAX_WRONG}"):
        check.verify(command(code="000009", ts=clock.now))


def test_paced_wrong_codes_lock_out_longer_each_time_until_a_right_code() -> None:
    """Wrong codes spaced to stay under the window's rule (one every 15.5 s) were never
    locked out: some 5,500 guesses a day. Past MAX_WRONG wrong codes since the last right
    one, each further wrong code locks out for LOCKOUT, then twice as long as the last time,
    up to LOCKOUT_MAX; a right code ends the streak, and so does a day without a wrong one."""
    clock = Clock()
    check = CodeVerifier(cheap_hash(), 30.0, clock=clock)
    tries = iter(range(100_000, 999_999))

    def wrong() -> str:
        with pytest.raises(UnlockRefused, match=r"wrong code \(\d of 5 in 60 s") as refused:
            check.verify(command(code=str(next(tries)), ts=clock.now))
        return str(refused.value)

    pace = FAILURE_WINDOW / (MAX_WRONG - 1) + 0.5
    for _ in range(MAX_WRONG):
        assert "locked out" not in wrong()
        clock.now += pace
    lockouts = []
    for _ in range(9):
        lockouts.append(int(re.findall(r"locked out for (\d+) s\)$", wrong())[0]))
        # meanwhile every code is refused, the right one too
        with pytest.raises(UnlockRefused, match="since the last right one; refusing every"):
            check.verify(command(ts=clock.now))
        clock.now += lockouts[-1]
    assert lockouts == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
    assert LOCKOUT_MAX == 3600
    assert check.verify(command(ts=clock.now)).action == "UNLOCK"
    clock.now += 1
    for _ in range(MAX_WRONG):  # a right code ended the streak: a new one starts
        assert "locked out" not in wrong()
        clock.now += pace
    clock.now += STREAK_FORGOTTEN
    assert "locked out" not in wrong()  # and a day without a wrong code ends it too


def test_discovery_lock_entity_only_with_a_code() -> None:
    topics = Topics.of(parse_config({"mqtt": {"door_id": "front"}}).mqtt)
    node = "edge_door_front"
    without = entities(topics)
    assert f"homeassistant/binary_sensor/{node}/strike/config" in without
    assert not any("command_topic" in payload for payload in without.values())
    assert retired(topics, False) == [f"homeassistant/lock/{node}/strike/config"]

    with_lock = entities(topics, lock=True)
    assert f"homeassistant/binary_sensor/{node}/strike/config" not in with_lock
    assert retired(topics, True) == [f"homeassistant/binary_sensor/{node}/strike/config"]
    lock = with_lock[f"homeassistant/lock/{node}/strike/config"]
    assert lock["command_topic"] == "edge-door/front/lock/set"
    assert lock["command_template"] == LOCK_COMMAND_TEMPLATE
    assert lock["code_format"] == CODE_FORMAT == r"^\d{6,12}$"
    assert (lock["payload_lock"], lock["payload_unlock"], lock["payload_open"]) == (
        "LOCK",
        "UNLOCK",
        "OPEN",
    )
    assert lock["retain"] is False and lock["optimistic"] is False
    assert lock["state_topic"] == topics.state
    assert lock["availability_topic"] == topics.availability
    assert lock["unique_id"] == f"{node}_strike"
    # What Home Assistant renders from the template (value, code, now()) is a command the
    # hub's parser accepts: render it the way Jinja would, with those three variables.
    rendered = (
        LOCK_COMMAND_TEMPLATE.replace("{{ value }}", "UNLOCK")
        .replace("{{ code }}", CODE)
        .replace("{{ now().timestamp() | int }}", str(int(NOW)))
    )
    assert CodeVerifier(cheap_hash(), 30.0, clock=Clock()).verify(rendered.encode()).action == (
        "UNLOCK"
    )


def test_unlock_code_command_with_stdin(tmp_path: Path) -> None:
    code_file = tmp_path / "unlock.code"
    toml = tmp_path / "door.toml"
    toml.write_text(f'[mqtt]\nremote_unlock = true\nunlock_code_file = "{code_file}"\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}

    def run(*args: str, stdin: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "edge_app.cli", "hub", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    done = run("unlock-code", "--stdin", "--config", str(toml), stdin=CODE + "\n")
    assert done.returncode == 0, done.stderr
    assert f"unlock code set in {code_file}" in done.stdout
    assert (code_file.stat().st_mode & 0o777) == 0o600
    assert read_code_file(code_file).matches(CODE)
    before = code_file.read_text()
    refused = run("--config", str(toml), "unlock-code", "--stdin", stdin="12ab\n")
    assert refused.returncode == 2 and "6 to 12 digits" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert code_file.read_text() == before
    unset = tmp_path / "unset.toml"
    unset.write_text("[mqtt]\n")
    missing = run("unlock-code", "--stdin", "--config", str(unset), stdin=CODE + "\n")
    assert missing.returncode == 2 and "mqtt.unlock_code_file: not set" in missing.stderr


def test_remote_unlock_accepts_a_code_file_instead_of_a_key() -> None:
    config = parse_config({"mqtt": {"remote_unlock": True, "unlock_code_file": "/c"}})
    assert config.mqtt.unlock_secret_file is None
    assert str(config.mqtt.unlock_code_file) == "/c"


def bridge_config(tmp_path: Path, **mqtt) -> MqttConfig:
    return parse_config({"hub": {"socket": str(tmp_path / "door.sock")}, "mqtt": mqtt}).mqtt


def test_hub_refuses_to_start_with_a_code_file_others_can_read(tmp_path: Path) -> None:
    from edge_app.hub import DoorLink
    from edge_app.hub.mqtt import MqttBridge

    path = tmp_path / "unlock.code"
    write_code_file(path, CODE)
    path.chmod(0o644)
    settings = bridge_config(
        tmp_path, host="127.0.0.1", remote_unlock=True, unlock_code_file=str(path)
    )
    with pytest.raises(CodeFileError, match="mode 0644"):
        MqttBridge(settings, DoorLink(tmp_path / "door.sock"))


@pytest.mark.parametrize(
    ("remote_unlock", "with_code", "lock", "says"),
    [
        (True, True, True, "lock entity on: unlock by code on edge-door/door/lock/set"),
        (False, True, False, "remote_unlock is false (mqtt.unlock_code_file is ignored until"),
        (False, False, False, "read-only sensor: mqtt.remote_unlock is false"),
    ],
)
def test_the_log_says_whether_and_why_there_is_a_lock_entity(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    remote_unlock: bool,
    with_code: bool,
    lock: bool,
    says: str,
) -> None:
    from edge_app.hub import DoorLink
    from edge_app.hub.mqtt import MqttBridge

    caplog.set_level("INFO", logger="edge_app")
    path = tmp_path / "unlock.code"
    write_code_file(path, CODE)
    mqtt = {"host": "127.0.0.1", "remote_unlock": remote_unlock}
    if with_code:
        mqtt["unlock_code_file"] = str(path)
    else:
        mqtt["unlock_secret_file"] = str(path)  # not read: remote_unlock is off
    bridge = MqttBridge(bridge_config(tmp_path, **mqtt), DoorLink(tmp_path / "door.sock"))
    assert bridge.lock_entity is lock
    bridge._explain_strike()
    assert says in caplog.text
    if lock:  # no tls_ca here: the code would cross the network in clear text
        assert "the unlock code crosses the network in clear text" in caplog.text


@pytest.mark.parametrize(("n", "r", "accepted"), [(2**16, 8, True), (2**16, 16, False)])
def test_every_scrypt_cost_that_parses_can_be_computed(n: int, r: int, accepted: bool) -> None:
    """A hand-edited hash line at the cost bounds: refused as a format error, or computable
    (OpenSSL's memory limit must not turn a check into an exception)."""
    salt, digest = "A" * 22, "A" * 43
    line = f"scrypt${n}${r}$1${salt}${digest}"
    if not accepted:
        with pytest.raises(CostRefused):
            ScryptHash.parse(line)
        return
    assert ScryptHash.parse(line).matches("482913") is False


def test_a_code_file_path_that_is_not_a_file_is_refused_and_left(tmp_path: Path) -> None:
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "kept").write_text("x")
    with pytest.raises(CodeFileError, match=r"unlock_code_file: .*it is a folder.*left untouched"):
        write_code_file(folder, CODE)
    assert [p.name for p in folder.iterdir()] == ["kept"]


def test_a_wall_clock_step_neither_ends_nor_stretches_a_lock_out() -> None:
    """The lock-out runs on a monotonic clock; only the command's timestamp is wall time."""
    wall, ticks = Clock(), Clock()
    check = CodeVerifier(cheap_hash(), 30.0, clock=wall, ticks=ticks)
    for number in range(1, MAX_WRONG + 1):
        with pytest.raises(UnlockRefused, match="wrong code"):
            check.verify(command(code=f"00000{number}", ts=wall.now))
    wall.now += 3600  # the date is set forward an hour: the lock-out is not over
    with pytest.raises(UnlockRefused, match="locked out"):
        check.verify(command(ts=wall.now))
    wall.now -= 7200  # and back: it does not last an hour more either
    ticks.now += LOCKOUT
    assert check.verify(command(ts=wall.now)).action == "UNLOCK"
