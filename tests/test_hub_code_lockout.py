"""The lock-card code's lock-out across hub restarts: the streak and a running lock-out kept
in the 0600 lock-out file beside the code file (edge_app.hub.code.lockout_path), a file that
is not the hub's refused at start, a folder that cannot be written said once in the log."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_hostile_input import in_own_mounts, needs_read_only_mount
from test_hub_code import CODE, NOW, Clock, cheap_hash, command

from edge_app.hub import code as rules
from edge_app.hub.code import (
    CodeFileError,
    CodeVerifier,
    LockoutFileError,
    LockoutState,
    code_id,
    lockout_path,
    read_lockout_file,
    write_code_file,
)
from edge_app.hub.signing import UnlockRefused
from edge_app.paths import REPO_ROOT
from edge_app.private_file import MAX_SECRET_BYTES

# Wrong codes one every PACE seconds stay under the window's rule: only the streak locks out.
PACE = rules.FAILURE_WINDOW / (rules.MAX_WRONG - 1) + 0.5
REFUSE_EVERY = "refusing every code for"


class Hub:
    """One door's hub, restarted at will: the wall clock runs on across restarts, the
    monotonic ticks start again from an unrelated value at each (a new boot, say)."""

    def __init__(self, folder: Path) -> None:
        self.state = lockout_path(folder / "unlock.code")
        self.stored = cheap_hash()  # one code across restarts (a new one: new_code)
        self.wall = Clock()
        self.ticks = Clock()
        self.check = self.restart()
        self.tries = iter(range(100_000, 999_999))

    def restart(self, *, wall_step: float = 0.0) -> CodeVerifier:
        self.wall.now += 1 + wall_step  # a restart takes a moment (and the clock may step)
        self.ticks.now = 0.0  # a new boot: the monotonic clock starts again
        self.check = CodeVerifier(
            self.stored, 30.0, clock=self.wall, ticks=self.ticks, state_file=self.state
        )
        return self.check

    def new_code(self) -> CodeVerifier:
        """The code set again (`edge-app hub unlock-code` makes a new salt), then a restart."""
        self.stored = cheap_hash(salt=os.urandom(16))
        return self.restart()

    def wait(self, seconds: float) -> None:
        self.wall.now += seconds
        self.ticks.now += seconds

    def wrong(self) -> str:
        with pytest.raises(UnlockRefused) as refused:
            self.check.verify(command(code=str(next(self.tries)), ts=self.wall.now))
        return str(refused.value)

    def right(self) -> str:
        """ "UNLOCK" when the right code opens, else the refusal."""
        try:
            return self.check.verify(command(ts=self.wall.now)).action
        except UnlockRefused as refused:
            return str(refused)

    def paced_streak(self, count: int) -> list[str]:
        """`count` wrong codes paced under the window's rule, each lock-out waited out."""
        said = []
        for _ in range(count):
            said.append(self.wrong())
            found = re.search(r"locked out for (\d+) s\)$", said[-1])
            self.wait(float(found[1]) if found else PACE)
        return said


def lockout_of(message: str) -> int | None:
    found = re.search(r"locked out for (\d+) s\)$", message)
    return int(found[1]) if found else None


def test_a_lock_out_running_at_a_restart_still_refuses_the_right_code_until_it_ends(
    tmp_path: Path,
) -> None:
    """Defect: the counts were the hub's memory, so restarting the hub (systemd does it
    within seconds of a crash) ended a lock-out: a guesser got rules.MAX_WRONG more tries."""
    hub = Hub(tmp_path)
    said = [hub.wrong() for _ in range(rules.MAX_WRONG)]
    assert lockout_of(said[-1]) == rules.LOCKOUT
    hub.wait(19)
    hub.restart()  # 20 s into the lock-out, so 40 s are left
    refused = hub.right()
    assert f"after {rules.MAX_WRONG} wrong codes in 60 s; {REFUSE_EVERY} 40 s more" in refused
    hub.wait(39.5)
    assert "locked out" in hub.right()
    hub.wait(0.5)
    assert hub.right() == "UNLOCK"


def test_the_paced_streak_continues_across_a_restart(tmp_path: Path) -> None:
    """The next wrong code after a restart gets the next doubling, as without one."""
    hub = Hub(tmp_path)
    said = hub.paced_streak(rules.MAX_WRONG + 2)
    assert [lockout_of(s) for s in said] == [None] * rules.MAX_WRONG + [60, 120]
    hub.restart()
    assert lockout_of(hub.wrong()) == 240
    assert "since the last right one" in hub.right()  # and it runs
    hub.wait(240)
    hub.restart()
    assert lockout_of(hub.wrong()) == 480


def test_a_right_code_resets_the_file_and_a_right_code_alone_writes_nothing(
    tmp_path: Path,
) -> None:
    hub = Hub(tmp_path)
    assert hub.right() == "UNLOCK"
    assert not hub.state.exists()  # no streak to end: nothing written
    hub.wait(1)
    hub.paced_streak(rules.MAX_WRONG + 1)
    stored = read_lockout_file(hub.state)
    assert stored is not None and stored.streak == rules.MAX_WRONG + 1
    assert hub.right() == "UNLOCK"
    assert read_lockout_file(hub.state) == LockoutState(code=code_id(hub.stored))
    hub.restart()
    said = hub.paced_streak(rules.MAX_WRONG)
    assert [lockout_of(s) for s in said] == [None] * rules.MAX_WRONG  # a new streak from 0


@pytest.mark.parametrize(
    ("wall_step", "kept"),
    [
        (rules.STREAK_FORGOTTEN + 1, False),  # a day without a wrong code ends the streak
        (rules.STREAK_FORGOTTEN - 60, True),
        (-7 * 86400.0, True),  # the last wrong code is now in the future: the clock stepped
    ],
)
def test_a_restored_streak_is_forgotten_after_a_day_by_the_wall_clock(
    tmp_path: Path, wall_step: float, kept: bool
) -> None:
    hub = Hub(tmp_path)
    assert all(lockout_of(s) is None for s in hub.paced_streak(rules.MAX_WRONG))
    hub.restart(wall_step=wall_step)
    assert (lockout_of(hub.wrong()) == rules.LOCKOUT) is kept


def test_a_wall_clock_set_back_does_not_lengthen_a_lock_out_past_its_own_length(
    tmp_path: Path,
) -> None:
    """What is left of a lock-out is worked out on the wall clock, which may have stepped
    while the hub was down: a step back brings back at most the lock-out the stored streak
    gives, never the step. (Review: it brought back rules.LOCKOUT_MAX, an hour, for a
    60 s lock-out: a Pi without a real-time clock boots after a power cut at the time saved
    before it, so the owner's lock card was shut for an hour.)"""
    hub = Hub(tmp_path)
    for _ in range(rules.MAX_WRONG):
        hub.wrong()
    hub.restart(wall_step=-10 * 3600.0)  # the date set ten hours back
    assert f"{REFUSE_EVERY} {rules.LOCKOUT:.0f} s more" in hub.right()
    hub.wait(rules.LOCKOUT - 1)
    assert "locked out" in hub.right()
    hub.wait(1)
    assert hub.right() == "UNLOCK"


def test_a_lock_out_over_long_ago_comes_back_at_most_as_long_as_it_was(tmp_path: Path) -> None:
    """Review: the file keeps a lock-out's end until the next code is counted, so one over
    for days came back at a restart on a clock that starts in the past (1970, a Pi with no
    saved time), as a full hour. At most the lock-out it was comes back."""
    hub = Hub(tmp_path)
    for _ in range(rules.MAX_WRONG):
        hub.wrong()
    hub.wait(3 * 86400.0)
    hub.restart(wall_step=-hub.wall.now + 1.0)  # the clock back at the start of 1970
    refused = hub.right()
    assert "locked out" not in refused or f"{REFUSE_EVERY} {rules.LOCKOUT:.0f} s more" in refused
    hub.wait(rules.LOCKOUT)
    assert hub.right() == "UNLOCK"


def test_a_wall_clock_set_forward_ends_a_lock_out_at_a_restart(tmp_path: Path) -> None:
    hub = Hub(tmp_path)
    for _ in range(rules.MAX_WRONG):
        hub.wrong()
    hub.restart(wall_step=3600.0)
    assert hub.right() == "UNLOCK"


def test_the_lockout_file_is_private_beside_the_code_file_and_holds_no_code(
    tmp_path: Path,
) -> None:
    assert lockout_path(tmp_path / "unlock.code") == tmp_path / "unlock.code.lockout"
    hub = Hub(tmp_path)
    hub.paced_streak(rules.MAX_WRONG + 1)
    assert (hub.state.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["unlock.code.lockout"]  # no temp file
    text = hub.state.read_text()
    assert json.loads(text) == {
        "streak": rules.MAX_WRONG + 1,
        "last_wrong": hub.wall.now - rules.LOCKOUT,  # the last wrong code, then its lock-out
        "locked_until": hub.wall.now,
        "after": f"{rules.MAX_WRONG + 1} wrong codes since the last right one",
        "code": code_id(hub.stored),
    }
    stored = cheap_hash()
    for secret in (CODE, stored.line(), stored.line().split("$")[-1]):
        assert secret not in text


def hostile_files() -> list[tuple[str, object, str]]:
    """(name, what to put at the lock-out file's path, what the refusal says)."""
    good = LockoutState(6, NOW, NOW + 60, "6 wrong codes since the last right one")
    fields = json.loads(good.text())
    not_ours = "is not a lock-out file the hub wrote"
    return [
        ("symbolic link", "link", "it is a symbolic link (to "),
        ("group-readable", 0o640, "is readable or writable by others (mode 0640)"),
        ("others-writable", 0o602, "is readable or writable by others (mode 0602)"),
        ("folder", "folder", "it is a folder"),
        ("named pipe", "fifo", "it is a named pipe"),
        ("huge", b" " * (MAX_SECRET_BYTES + 1), f"more than the {MAX_SECRET_BYTES} bytes"),
        ("not JSON", b'{"streak": 6', not_ours),
        ("not UTF-8", b"\xff\xfe", not_ours),
        ("empty", b"", not_ours),
        ("a list", b"[]", not_ours),
        ("missing key", {k: v for k, v in fields.items() if k != "after"}, not_ours),
        ("extra key", {**fields, "pin": CODE}, not_ours),
        ("code as the code", {**fields, "code": CODE}, "code '482913' is not a code's id"),
        ("streak text", {**fields, "streak": "6"}, "streak '6' is not a count"),
        ("streak bool", {**fields, "streak": True}, "streak True is not a count"),
        ("streak float", {**fields, "streak": 6.0}, "streak 6.0 is not a count"),
        ("negative streak", {**fields, "streak": -1}, "streak -1 is not a count"),
        ("negative time", {**fields, "locked_until": -5}, "locked_until -5 is not Unix seconds"),
        ("time text", {**fields, "last_wrong": "now"}, "last_wrong 'now' is not Unix seconds"),
        ("time null", {**fields, "last_wrong": None}, "last_wrong None is not Unix seconds"),
        ("huge number", b'{"streak": 1e999}', not_ours),
        ("reason number", {**fields, "after": 5}, "after 5 is not a reason the hub gives"),
        ("reason newline", {**fields, "after": "x\nforged"}, "is not a reason the hub gives"),
        ("reason long", {**fields, "after": "x" * 201}, "is not a reason the hub gives"),
        ("reason alone", {**fields, "locked_until": 0}, "must be given together"),
    ]


@pytest.mark.parametrize(
    ("hostile", "says"), [pytest.param(h, says, id=name) for name, h, says in hostile_files()]
)
def test_a_lockout_file_that_is_not_the_hubs_is_refused_and_left_as_it_is(
    tmp_path: Path, hostile: object, says: str
) -> None:
    """Fail secure: a verifier that counted from 0 would give a guesser what a restart did,
    so the hub does not start; the message names the file and how to start the count over."""
    code_file = tmp_path / "unlock.code"
    write_code_file(code_file, CODE)
    state = lockout_path(code_file)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if hostile == "link":
        target = elsewhere / "state"
        target.write_text(LockoutState().text())
        target.chmod(0o600)
        state.symlink_to(target)
    elif hostile == "folder":
        state.mkdir()
    elif hostile == "fifo":
        os.mkfifo(state, 0o600)
    elif isinstance(hostile, int):
        state.write_text(LockoutState().text())
        state.chmod(hostile)
    else:
        state.write_bytes(hostile if isinstance(hostile, bytes) else json.dumps(hostile).encode())
        state.chmod(0o600)
    before = snapshot(tmp_path)
    with pytest.raises(CodeFileError) as refused:
        CodeVerifier(cheap_hash(), 30.0, clock=Clock(), state_file=state)
    message = str(refused.value)
    assert isinstance(refused.value, LockoutFileError)
    assert message.startswith(f"mqtt.unlock_code_file: {state}"), message
    assert says in message, message
    assert f"remove {state} (as the service user) to start the wrong-code count over" in message
    assert "\n" not in message
    assert snapshot(tmp_path) == before


def snapshot(folder: Path) -> dict[str, tuple[int, bytes | str | None]]:
    """Each entry under `folder`: its mode (lstat) and its bytes, a link's target."""
    found: dict[str, tuple[int, bytes | str | None]] = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            content: bytes | str | None = os.readlink(path)
        elif path.is_file() and not path.is_fifo():
            content = path.read_bytes()
        else:
            content = None
        found[str(path.relative_to(folder))] = (info.st_mode, content)
    return found


def hub_config(tmp_path: Path) -> Path:
    toml = tmp_path / "door.toml"
    toml.write_text(
        f'[hub]\nsocket = "{tmp_path / "door.sock"}"\n[web]\nenabled = false\n'
        f'[mqtt]\nhost = "127.0.0.1"\nremote_unlock = true\n'
        f'unlock_code_file = "{tmp_path / "unlock.code"}"\n'
    )
    return toml


def test_the_hub_refuses_to_start_with_a_lockout_file_not_its_own(tmp_path: Path) -> None:
    """As with a bad code file: one line and exit 2, never a traceback."""
    code_file = tmp_path / "unlock.code"
    write_code_file(code_file, CODE)
    state = lockout_path(code_file)
    state.write_text("{}")
    state.chmod(0o600)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-m", "edge_app.cli", "hub", "--config", str(hub_config(tmp_path))],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"mqtt.unlock_code_file: {state} is not a lock-out file the hub wrote" in done.stderr
    assert state.read_text() == "{}"


def test_an_unwritable_lockout_file_is_said_once_and_the_counts_stay_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The code file in a folder the hub may not write (/etc under ProtectSystem=strict): the
    hub still runs and counts as before, and says once where the code file should go."""
    import errno
    import tempfile

    def read_only(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    hub = Hub(tmp_path)
    said = hub.paced_streak(rules.MAX_WRONG + 2)
    assert [lockout_of(s) for s in said] == [None] * rules.MAX_WRONG + [60, 120]
    assert hub.right() == "UNLOCK"
    warnings = [r.getMessage() for r in caplog.records if "lock-out file" in r.getMessage()]
    assert warnings == [
        f"mqtt.unlock_code_file: cannot write the lock-out file {hub.state} (Read-only file "
        "system): wrong codes are counted in memory only, and a restart of the hub starts the "
        "count over; put unlock_code_file in /var/lib/edge-app, the hub's state folder, so "
        "the count survives restarts (said once)"
    ]
    assert not hub.state.exists()


# A verifier on the code file in the folder argv[1], mounted read-only: 5 wrong codes lock
# out, a 6th is refused as locked out; each refusal on a line of its own.
ON_A_READ_ONLY_FOLDER = """
import json, logging, sys, time
from pathlib import Path
from edge_app.hub.code import CodeVerifier, lockout_path, read_code_file
from edge_app.hub.signing import UnlockRefused
logging.basicConfig(level=logging.WARNING, format="log: %(message)s")
code = Path(sys.argv[1]) / "unlock.code"
check = CodeVerifier(read_code_file(code), 30.0, state_file=lockout_path(code))
for n in range(6):
    payload = {"action": "UNLOCK", "code": f"10000{n}", "timestamp": int(time.time())}
    try:
        check.verify(json.dumps(payload).encode())
    except UnlockRefused as refused:
        print(refused)
"""


@needs_read_only_mount
def test_a_code_file_on_a_read_only_mount_keeps_the_counts_in_memory(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    write_code_file(folder / "unlock.code", CODE)
    script = 'mount --bind -o ro "$1" "$1" && exec "$2" -c "$3" "$1"'
    done = in_own_mounts(script, str(folder), sys.executable, ON_A_READ_ONLY_FOLDER)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 6 and "locked out for 60 s" in lines[4], lines
    assert lines[5].startswith("locked out after 5 wrong codes"), lines
    assert done.stderr.count("cannot write the lock-out file") == 1, done.stderr
    assert "Read-only file system" in done.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["unlock.code"]


def test_a_new_code_clears_the_old_codes_lock_out(tmp_path: Path) -> None:
    """Wrong codes left a lock-out on file; the owner sets a new code with `edge-app hub
    unlock-code`. The guesses were at the old code: the lock-out file is removed and the
    command says so, so the restarted hub takes the new code at once. Without a lock-out
    file the command says nothing of one."""
    code_file = tmp_path / "unlock.code"
    toml = tmp_path / "door.toml"
    toml.write_text(f'[mqtt]\nremote_unlock = true\nunlock_code_file = "{code_file}"\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}

    def set_code(code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edge_app.cli", "hub", "unlock-code", "--stdin"]
            + ["--config", str(toml)],
            input=code + "\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    first = set_code(CODE)
    assert first.returncode == 0, first.stderr
    assert "cleared" not in first.stdout
    clock = Clock()
    check = CodeVerifier(cheap_hash(), 30.0, clock=clock, state_file=lockout_path(code_file))
    for _ in range(rules.MAX_WRONG):
        clock.now += 1
        with pytest.raises(UnlockRefused, match="wrong code"):
            check.verify(command("UNLOCK", "000000", clock.now))
    assert read_lockout_file(lockout_path(code_file)) is not None
    again = set_code("135792")
    assert again.returncode == 0, again.stderr
    assert "the old code's wrong-code count and lock-out are cleared" in again.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["door.toml", "unlock.code"]


def test_a_count_for_an_earlier_code_is_not_carried_over(tmp_path: Path) -> None:
    """Review: `edge-app hub unlock-code` removed the lock-out file, but the hub still
    running checked the old code and held the old streak: one wrong code before its restart
    wrote the streak back, and the restarted hub locked the new code out for 240 s. The file
    says which code it counted (a digest of the hash's random salt): a count for another
    code starts over, however it came to be on file."""
    hub = Hub(tmp_path)
    hub.paced_streak(rules.MAX_WRONG + 2)
    assert lockout_of(hub.wrong()) == 240  # a streak of 8: locked out for 240 s
    assert hub.right().startswith("locked out after 8 wrong codes")
    hub.new_code()
    assert hub.right() == "UNLOCK"
    hub.restart()
    said = hub.paced_streak(rules.MAX_WRONG)
    assert [lockout_of(s) for s in said] == [None] * rules.MAX_WRONG  # a new streak from 0
    stored = read_lockout_file(hub.state)
    assert stored is not None and stored.code == code_id(hub.stored)
