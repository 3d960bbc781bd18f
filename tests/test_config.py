"""Every config mistake gets a message naming its key, and all of them are reported at once."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from needs import unavailable

from edge_app import config as config_module
from edge_app import paths
from edge_app.config import (
    MAX_KEY_PARTS,
    SECTIONS,
    Config,
    ConfigError,
    apply_overrides,
    load_config,
    parse_config,
    read_config_file,
)

EXAMPLE = paths.REPO_ROOT / "config.example.toml"


def errors_of(data: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return str(caught.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"camra": {}}, "camra: unknown section (did you mean 'camera'?)"),
        ({"camera": 5}, "camera: expected a table [camera], got int 5"),
        ({"camera": {"sorce": "auto"}}, "camera.sorce: unknown key (did you mean 'source'?)"),
        ({"camera": {"source": True}}, "camera.source: expected a string or device index"),
        ({"camera": {"source": ""}}, 'camera.source: expected "auto", "picamera2"'),
        ({"camera": {"width": "640"}}, "camera.width: expected an integer, got str '640'"),
        ({"camera": {"width": 16}}, "camera.width: 16 is out of range (32 to 8192)"),
        ({"camera": {"fps": 0}}, "camera.fps: 0 is out of range (at least 0.1"),
        ({"camera": {"fps": 1e-320}}, "camera.fps: 1e-320 is out of range (at least 0.1"),
        ({"camera": {"source": "  "}}, 'camera.source: expected "auto", "picamera2"'),
        (
            {"camera": {"width": 320, "height": 240}},
            "camera.lores_width: the detection stream 640x480 is larger than the capture size",
        ),
        (
            {"camera": {"width": 8192, "height": 8192}},
            "camera.width: 8192x8192 is more than the 16 megapixels a frame may have",
        ),
        ({"models": {"backend": "tpu"}}, "models.backend: str 'tpu' is not one of 'auto', 'cpu'"),
        ({"models": {"threads": 0}}, 'models.threads: 0 is out of range (1 to 64) (or "auto"'),
        ({"models": {"dir": 3}}, "models.dir: expected a path string, got int 3"),
        ({"detection": {"min_face": 5}}, "detection.min_face: 5 is out of range (12 to 2000)"),
        ({"recognition": {"threshold": 1.5}}, "recognition.threshold: 1.5 is out of range"),
        ({"recognition": {"threshold": 0}}, "recognition.threshold: 0 is out of range (more than"),
        (
            {"gpio": {"pin": 3}},
            "gpio.pin: GPIO3 has a 1.8 kOhm pull-up on the board, so an active-high relay",
        ),
        ({"gpio": {"pin": 2}}, "gpio.pin: GPIO2 has a 1.8 kOhm pull-up on the board"),
        ({"hub": {"socket": "/run/" + "s" * 120}}, "bytes long; a Unix socket's path is at most"),
        ({"camera": {"source": "99999999999999999999"}}, "device index 99999999999999999999 is"),
        ({"camera": {"source": "9" * 5000}}, "device index of 5000 digits is not from 0 to 1023"),
        ({"camera": {"source": -1}}, "camera.source: device index -1 is not from 0 to 1023"),
        # An audit: the value was not named, nor where a key above every section belongs.
        ({"camera": {"source": 1.5}}, "a video file or a folder, got float 1.5"),
        (
            {"events": {"db": "/dev/null"}},
            'events.db: /dev/null is a device, not a file; give a file ("" turns it off)',
        ),
        ({"events": {"jsonl": "/dev/full"}}, "events.jsonl: /dev/full is a device, not a file"),
        ({"pulse_seconds": 2}, "pulse_seconds: a key outside any section; move it under [gpio]"),
        ({"threshold": 0.6}, "threshold: a key outside any section; move it under [recognition]"),
        (
            {"detection": {"min_face": 600}},
            "detection.min_face: 600 pixels is more than the detection frame 640x480 holds",
        ),
        ({"recognition": {"threshold": -0.5}}, "recognition.threshold: -0.5 is out of range"),
        ({"recognition": {"threshold": "high"}}, "recognition.threshold: expected a number"),
        ({"recognition": {"margin": -0.1}}, "recognition.margin: -0.1 is out of range"),
        ({"recognition": {"aggregate": "max"}}, "recognition.aggregate: str 'max' is not one of"),
        ({"gallery": {"path": ""}}, "gallery.path: must not be empty"),
        ({"gallery": {"path": "g\0.db"}}, "gallery.path: 'g\\x00.db' holds a NUL character"),
        ({"camera": {"source": "clip\0.mp4"}}, "camera.source: 'clip\\x00.mp4' holds a NUL"),
        (
            {"camera": {"source": "caf\udce9.mp4"}},
            "camera.source: 'caf\\udce9.mp4' holds bytes that are not UTF-8 text: rename it",
        ),
        ({"gallery": {"path": "g\udce9.db"}}, "gallery.path: 'g\\udce9.db' holds bytes that"),
        ({"gpio": {"pin": 28}}, "gpio.pin: 28 is out of range (0 to 27)"),
        ({"gpio": {"pin": True}}, "gpio.pin: expected an integer, got bool True"),
        (
            {"gpio": {"pin": 14}},
            "gpio.pin: 14 is a UART pin that goes high at boot; choose another (e.g. 17) or set "
            "gpio.force_uart_pins = true",
        ),
        ({"gpio": {"pin": 15}}, "gpio.pin: 15 is a UART pin that goes high at boot"),
        ({"gpio": {"active_high": 1}}, "gpio.active_high: expected true or false, got int 1"),
        ({"gpio": {"pulse_seconds": 0}}, "gpio.pulse_seconds: 0 is out of range (at least 0.1"),
        # An audit: 1e-300 s was an unlock logged and a relock 4 ms later, no door opened.
        ({"gpio": {"pulse_seconds": 0.004}}, "gpio.pulse_seconds: 0.004 is out of range"),
        ({"gpio": {"pulse_seconds": 61}}, "gpio.pulse_seconds: 61 is out of range"),
        ({"gpio": {"force_uart_pins": "yes"}}, "gpio.force_uart_pins: expected true or false"),
        ({"gpio": {"factory": "gpio"}}, "gpio.factory: str 'gpio' is not one of 'auto', 'lgpio'"),
        ({"policy": {"hits": 0}}, "policy.hits: 0 is out of range (1 to 100)"),
        ({"policy": {"window": 0}}, "policy.window: 0 is out of range (1 to 100)"),
        (
            {"policy": {"hits": 6, "window": 5}},
            "policy.hits: 6 is more than policy.window 5, so no one could ever be unlocked",
        ),
        ({"policy": {"cooldown_seconds": -1}}, "policy.cooldown_seconds: -1 is out of range"),
        ({"policy": {"allowed_hours": "07:00-22:00"}}, "policy.allowed_hours: expected a list"),
        (
            {"policy": {"allowed_hours": ["7-22"]}},
            "policy.allowed_hours: str '7-22' is not a time span HH:MM-HH:MM",
        ),
        ({"policy": {"allowed_hours": ["07:00-25:00"]}}, "is not a time span HH:MM-HH:MM"),
        ({"policy": {"allowed_hours": ["08:00-24:59"]}}, "'08:00-24:59' is not a time span"),
        ({"policy": {"allowed_hours": ["24:00-06:00"]}}, "'24:00-06:00' is not a time span"),
        ({"policy": {"allowed_hours": ["08:00-24:01"]}}, "(24 h clock, 00:00 to 24:00"),
        ({"policy": {"allowed_hours": [8]}}, "policy.allowed_hours: int 8 is not a time span"),
        (
            {"policy": {"allowed_hours": ["07:00-19:00", "08:00-08:00"]}},
            "policy.allowed_hours: '08:00-08:00' is an empty span (it ends when it starts); for "
            'the whole day write "00:00-24:00", or leave allowed_hours out (or [])',
        ),
        ({"policy": {"allowed_hours": ["00:00-00:00"]}}, "'00:00-00:00' is an empty span"),
        ({"tracking": {"iou": 0}}, "tracking.iou: 0 is out of range (more than 0.0"),
        ({"tracking": {"max_missed": -1}}, "tracking.max_missed: -1 is out of range"),
        ({"tracking": {"refresh_frames": 0}}, "tracking.refresh_frames: 0 is out of range"),
        ({"events": {"jsonl": 1}}, "events.jsonl: expected a path string, got int 1"),
        ({"events": {"snapshot_keep": 0}}, "events.snapshot_keep: 0 is out of range"),
    ],
)
def test_each_error_names_its_key(data: dict, message: str) -> None:
    assert message in errors_of(data)


def test_every_bad_span_of_allowed_hours_is_named_at_once() -> None:
    """Defect: only the first bad span was named, so fixing a file took one run per span."""
    spans = ["7-22", "07:00-19:00", 8, "09:00-09:00", "x", "10:00-10:00"]

    text = errors_of({"policy": {"allowed_hours": spans}})

    assert "policy.allowed_hours: str '7-22', int 8, str 'x' are not time spans HH:MM-HH:MM" in text
    assert "; '09:00-09:00', '10:00-10:00' are empty spans (each ends when it starts)" in text
    assert "'07:00-19:00'" not in text
    assert "1 problem(s)" in text


def test_all_errors_are_collected_in_one() -> None:
    text = errors_of(
        {"gpio": {"pin": 14, "pulse_seconds": -2}, "camera": {"fps": "fast"}, "extra": {}}
    )
    assert "4 problem(s)" in text
    for key in ("gpio.pin", "gpio.pulse_seconds", "camera.fps", "extra: unknown section"):
        assert key in text


def test_an_active_low_relay_may_use_gpio2_and_gpio3() -> None:
    """Their board pull-ups hold an active-low module locked whenever the pin is released."""
    config = parse_config({"gpio": {"pin": 3, "active_high": False}})
    assert config.gpio.pin == 3


def test_the_relay_refuses_gpio2_and_gpio3_active_high_too() -> None:
    from gpiozero.pins.mock import MockFactory

    from edge_app.relay import Relay, RelayError

    with pytest.raises(RelayError, match="GPIO2 has a 1.8 kOhm pull-up"):
        Relay(2, pin_factory=MockFactory())


def test_a_path_that_loops_is_a_config_error(tmp_path: Path) -> None:
    """Resolving it raised RuntimeError: a traceback at start, and a reload that stopped the
    running door (an outside audit's finding)."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    text = errors_of({"events": {"db": str(loop / "events.db")}})
    assert f"events.db: {loop / 'events.db'} cannot be followed" in text


def test_a_state_folder_this_user_may_not_enter_says_whose_command_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a walkthrough: `edge-app list --config ...` run as a user who may not enter
    the door's state folder (0700) listed every path as "cannot be followed ... give a
    plain path" (Python 3.11's is_symlink() raises EACCES there): paths that were plain, and
    a fix that could not help. It says to run the command as the door's user. (Tests run as
    root in CI, whom no mode stops: the refusal is what the kernel answers a user.)"""
    state = tmp_path / "state"
    real = Path.is_symlink

    def refused(self: Path) -> bool:
        if self == state:
            raise PermissionError(13, "Permission denied", str(state / "gallery.db"))
        return real(self)

    monkeypatch.setattr(Path, "is_symlink", refused)
    text = errors_of({"gallery": {"path": str(state / "gallery.db")}})
    assert f"gallery.path: {state / 'gallery.db'} cannot be reached by this user" in text
    assert "run the command as the door's user (sudo -u edge-app edge-app ...)" in text
    assert "give a plain path" not in text


@pytest.mark.parametrize("key", ["gallery", "events"])
def test_a_database_path_of_the_root_folder_is_no_traceback(key: str) -> None:
    """Found by a review: looking for SQLite's side files beside a gallery or events
    database at "/" raised ValueError ("PosixPath('/') has an empty name"): a traceback
    from every command. It is a folder: refused as one, in a line."""
    data = {"gallery": {"path": "/"}} if key == "gallery" else {"events": {"db": "/"}}
    name = "gallery.path" if key == "gallery" else "events.db"
    assert f"{name}: / is a folder, not a file; give a file" in errors_of(data)


@pytest.mark.parametrize(
    ("section", "key", "at", "message"),
    [
        ("events", "db", "folder", "events.db: {} is a folder, not a file; give a file"),
        ("events", "jsonl", "folder", "events.jsonl: {} is a folder, not a file; give a file"),
        ("gallery", "path", "folder", "gallery.path: {} is a folder, not a file; give a file"),
        ("events", "snapshots", "file", "events.snapshots: {} is a file, not a folder; give"),
        ("events", "snapshots", "/dev/null", "events.snapshots: {} is a device, not a folder"),
        ("hub", "socket", "file", "hub.socket: {} is a file, not a socket; give a path"),
        ("hub", "socket", "/dev/null", "hub.socket: {} is a device, not a socket"),
    ],
)
def test_a_path_of_the_wrong_kind_is_refused_before_the_door_starts(
    tmp_path: Path, section: str, key: str, at: str, message: str
) -> None:
    """Found by an audit: `run --check-config` said valid, then the door lost every event
    (events.db or events.jsonl a folder), wrote no snapshot (a file as the folder), or ran
    without its control socket (hub.socket a regular file or /dev/null)."""
    if at == "folder":
        path = tmp_path / "here"
        path.mkdir()
    elif at == "file":
        path = tmp_path / "here"
        path.write_text("")
    else:
        path = Path(at)
    assert message.format(path) in errors_of({section: {key: str(path)}})


def test_an_unknown_key_of_any_length_is_named_in_a_short_line() -> None:
    """Found by an audit: a 900 kB key name made a 900 kB error line."""
    text = errors_of({"camera": {"k" * 900_000: 1}})
    assert "camera.kkk" in text and "...: unknown key" in text
    assert len(text) < 1000


def test_no_file_the_door_writes_may_be_in_its_models_folder(tmp_path: Path) -> None:
    """Found by an audit: events.jsonl naming the models' manifest was valid; the door
    appended its events to it, and every later start refused the manifest."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "manifest.json").write_text("{}")
    data = {"models": {"dir": str(models)}, "events": {"jsonl": str(models / "manifest.json")}}
    text = errors_of(data)
    assert f"events.jsonl: {models / 'manifest.json'} is one of the models in {models}" in text
    data["events"] = {"jsonl": str(models / "events.jsonl")}  # a file of its own there: fine
    assert parse_config(data).events.jsonl == models / "events.jsonl"


def test_a_key_of_another_section_says_where_it_belongs() -> None:
    """Found by an audit: `[camera] pulse_seconds = 2` was "unknown key (known: source, ...)"
    though the config knows it is [gpio]'s."""
    text = errors_of({"camera": {"pulse_seconds": 2}})
    assert "camera.pulse_seconds: not a key of [camera]; move it under [gpio]" in text


def test_key_names_that_are_not_plain_are_quoted_in_the_message() -> None:
    """Found by an audit: TOML's quoted keys were printed as written: a line break in one
    forged a line of the message, and "pin\u200b" (a zero-width space) read as "pin"."""
    text = errors_of({"gpio": {"pin\u200b": 1, "x\nfake line": 1}, "\x1b[31mred": {"a": 1}})
    assert "gpio.'pin\\u200b': unknown key (did you mean 'pin'?)" in text
    assert "gpio.'x\\nfake line': unknown key" in text
    assert "'\\x1b[31mred': unknown section" in text
    assert "\nfake line" not in text and "\x1b" not in text
    assert "gpio.colour: unknown key" in errors_of({"gpio": {"colour": 1}})  # plain: as is


def test_toml_nested_too_deeply_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path)


@pytest.mark.parametrize("form", ["{key} = 1", "[{key}]"])
@pytest.mark.parametrize("part", ["a", '"a.b"', "'a' "])
def test_a_key_of_countless_dotted_parts_is_refused_before_toml_reads_it(
    tmp_path: Path, form: str, part: str
) -> None:
    """tomllib's work and memory grow with the square of a key's parts: a 40 kB line
    `a.a.a...= 1` took 1.5 GB and 9 s, an 800 kB one more than 19 GB (every command and
    relay_off read the config). A key of MAX_KEY_PARTS parts is left to the config's rules."""
    path = tmp_path / "door.toml"
    path.write_text("# a door\n" + form.format(key=".".join([part] * 3000)) + "\n")
    with pytest.raises(
        ConfigError, match=f"line 2: a key or table name of more than {MAX_KEY_PARTS}"
    ):
        load_config(path)
    path.write_text(form.format(key=".".join([part] * MAX_KEY_PARTS)) + "\n")
    with pytest.raises(ConfigError, match="unknown section|outside any section"):
        load_config(path)


def test_a_lone_carriage_return_is_no_line_end(tmp_path: Path) -> None:
    """TOML ends lines with LF or CRLF. Read as a line end, a CR let the door apply a line
    that every TOML reader sees as part of a comment."""
    path = tmp_path / "door.toml"
    path.write_bytes(b"[recognition]\r\n# threshold = 0.1\rthreshold = 0.7\r\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    path.write_bytes(b"[recognition]\r\nthreshold = 0.7\r\n")
    assert load_config(path).recognition.threshold == 0.7


def test_a_config_others_may_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "door.toml"
    path.write_text("[recognition]\nthreshold = 0.7\n")
    path.chmod(0o666)
    with pytest.raises(ConfigError, match=r"any user may write the config \(mode 666\)") as e:
        load_config(path)
    assert f"sudo chmod 640 {path}" in str(e.value)
    path.chmod(0o664)  # this user's own group may write it: the owner's choice
    assert load_config(path).recognition.threshold == 0.7


def test_a_config_in_a_folder_others_may_write_is_refused(tmp_path: Path) -> None:
    """Who may write the folder may replace the file (an outside audit replaced a root-owned
    0640 config through its 0777 folder); /tmp's sticky bit stops that."""
    folder = tmp_path / "open"
    folder.mkdir()
    path = folder / "door.toml"
    path.write_text("[recognition]\nthreshold = 0.7\n")
    folder.chmod(0o777)
    with pytest.raises(ConfigError, match=r"any user may write its folder .*open \(mode 777\)"):
        load_config(path)
    folder.chmod(0o1777)
    assert load_config(path).recognition.threshold == 0.7


def test_a_config_reached_through_a_link_others_may_repoint_is_refused(tmp_path: Path) -> None:
    """Found by an audit: a link in a 0777 folder to a root-owned config was trusted, though
    anyone could point it at another config (an old one with remote unlocks on)."""
    safe = tmp_path / "safe"
    safe.mkdir(mode=0o755)
    real = safe / "door.toml"
    real.write_text("[recognition]\nthreshold = 0.7\n")
    real.chmod(0o600)
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    (open_folder / "door.toml").symlink_to(real)
    (open_folder / "folder").symlink_to(safe)  # a folder's link on the way, too
    open_folder.chmod(0o777)
    for path in (open_folder / "door.toml", open_folder / "folder" / "door.toml"):
        with pytest.raises(ConfigError, match=r"any user may write the folder .*open of the link"):
            load_config(path)
    open_folder.chmod(0o755)  # only its owner may repoint them
    for path in (open_folder / "door.toml", open_folder / "folder" / "door.toml"):
        assert load_config(path).recognition.threshold == 0.7
    chain = tmp_path / "chain"
    chain.mkdir(mode=0o777)
    (chain / "hop.toml").symlink_to(open_folder / "door.toml")  # link to a link
    chain.chmod(0o777)
    with pytest.raises(ConfigError, match=r"the folder .*chain of the link"):
        load_config(chain / "hop.toml")
    chain.chmod(0o1777)  # /tmp's sticky bit: others cannot replace a link that is not theirs
    assert load_config(chain / "hop.toml").recognition.threshold == 0.7


def test_a_config_another_user_owns_or_a_foreign_group_may_write_is_refused(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        unavailable("giving a file to another user needs root (CI runs as root)")
    path = tmp_path / "door.toml"
    path.write_text("[recognition]\nthreshold = 0.7\n")
    os.chown(path, 0, 65534)
    path.chmod(0o660)
    with pytest.raises(ConfigError, match="the users of group 65534 may write the config"):
        load_config(path)
    path.chmod(0o640)  # the installer's: root's, its group may read it
    assert load_config(path).recognition.threshold == 0.7
    os.chown(path, 65534, 65534)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="the config belongs to uid 65534, who may change it"):
        load_config(path)


def test_a_superscript_digit_is_no_device_index() -> None:
    """ "²".isdigit() is true, int("²") a ValueError: a traceback in run and doctor."""
    assert parse_config({"camera": {"source": "²"}}).camera.source == "²"


def test_uart_pin_allowed_when_forced() -> None:
    config = parse_config({"gpio": {"pin": 14, "force_uart_pins": True}})
    assert config.gpio.pin == 14


def test_auto_means_manifest_default_and_values_convert() -> None:
    config = parse_config(
        {
            "camera": {"source": "2"},
            "models": {"dir": "auto", "threads": "auto"},
            "recognition": {"threshold": 0.5, "margin": "auto"},
            "events": {"jsonl": "", "snapshots": "~/snaps"},
        }
    )
    assert config.camera.source == 2
    assert config.models.dir is None and config.models.threads is None
    assert config.recognition.threshold == 0.5 and config.recognition.margin is None
    assert config.events.jsonl is None
    assert config.events.snapshots == Path("~/snaps").expanduser()


def test_missing_default_file_means_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(paths, "DEFAULT_CONFIG", tmp_path / "absent.toml")
    assert load_config(None) == Config()


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="absent.toml: config file not found"):
        load_config(tmp_path / "absent.toml")


def test_a_config_path_through_a_file_is_not_found_not_an_errno(tmp_path: Path) -> None:
    """Defect (a new user's walkthrough): `--config door.toml/config.toml` said "cannot read
    the config file ([Errno 20] Not a directory: '...')"."""
    (tmp_path / "door.toml").write_text("[gpio]\npin = 17\n")
    path = tmp_path / "door.toml" / "config.toml"
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert str(refused.value) == (
        f"{path}: config file not found (part of its path is a file, not a folder)"
    )


def test_invalid_toml_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[gpio]\npin = = 3\n")
    with pytest.raises(ConfigError, match=r"bad.toml: not valid TOML \(.*line 2"):
        load_config(path)


def test_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "door.toml"
    path.write_text("[gpio]\npin = 15\n")
    with pytest.raises(
        ConfigError, match=r"door.toml: 1 problem\(s\):\n  - gpio.pin: 15 is a UART"
    ):
        load_config(path)


def test_example_config_is_valid_and_has_a_comment_on_every_key() -> None:
    config = load_config(EXAMPLE)
    assert config.gpio.pin == 17
    lines = EXAMPLE.read_text().splitlines()
    for number, line in enumerate(lines):
        stripped = line.strip()
        if "=" in stripped and not stripped.startswith("#"):
            previous = lines[number - 1].strip() if number else ""
            assert "#" in stripped or previous.startswith("#"), f"no comment for: {line}"


def test_example_config_lists_every_key() -> None:
    text = EXAMPLE.read_text()
    for section, values in parse_config({}).__dict__.items():
        assert f"[{section}]" in text
        for key in values.__dict__:
            assert f"\n{key} = " in text, f"{section}.{key} missing from the example"


def test_example_config_shows_the_defaults_the_door_uses() -> None:
    """The example's values are written by hand: each must be the default it shows, or a
    user copying a line changes what they meant to keep."""
    example, defaults = load_config(EXAMPLE), parse_config({})
    differ = [
        f"{section}.{key}: example {getattr(getattr(example, section), key)!r}, default {value!r}"
        for section, values in defaults.__dict__.items()
        for key, value in values.__dict__.items()
        if getattr(getattr(example, section), key) != value
    ]
    assert differ == []


def test_overrides_apply_and_validate() -> None:
    config = apply_overrides(
        Config(), {"camera.source": "clip.mp4", "gpio.factory": "mock", "gpio.pin": None}
    )
    assert config.camera.source == "clip.mp4"
    assert config.gpio.factory == "mock"
    assert config.gpio.pin == 17  # None keeps the config's value
    with pytest.raises(ConfigError, match="(?s)command line: 1 problem.*gpio.pin: 14 is a UART"):
        apply_overrides(config, {"gpio.pin": 14})


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ({"db": "{tmp}/gallery.db"}, "events.db: {tmp}/gallery.db is also gallery.path"),
        ({"jsonl": "{tmp}/gallery.db"}, "events.jsonl: {tmp}/gallery.db is also gallery.path"),
        ({"jsonl": "{tmp}/x/../events.db"}, "events.jsonl: {tmp}/x/../events.db is also events.db"),
        ({"snapshots": "{tmp}/events.db"}, "events.snapshots: {tmp}/events.db is also events.db"),
    ],
)
def test_the_gallery_and_each_event_sink_need_their_own_file(
    tmp_path: Path, events: dict, message: str
) -> None:
    """Events appended to the gallery, or two sinks in one file, would damage both; the run
    command's overrides are checked the same way."""
    data = {
        "gallery": {"path": f"{tmp_path}/gallery.db"},
        "events": {"db": f"{tmp_path}/events.db"},
    }
    data["events"].update({k: v.format(tmp=tmp_path) for k, v in events.items()})
    assert message.format(tmp=tmp_path) in errors_of(data)
    fine = parse_config({"gallery": data["gallery"], "events": {"db": f"{tmp_path}/events.db"}})
    override = {f"events.{k}": v.format(tmp=tmp_path) for k, v in events.items()}
    with pytest.raises(ConfigError, match="give each its own file"):
        apply_overrides(fine, override)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"mqtt": {"unlock_code_file": "{tmp}/gallery.db"}},
            "mqtt.unlock_code_file: {tmp}/gallery.db is also gallery.path",
        ),
        (
            {"web": {"password_file": "{tmp}/events.db"}},
            "web.password_file: {tmp}/events.db is also events.db",
        ),
        (
            {"web": {"password_file": "{tmp}/code"}, "mqtt": {"unlock_code_file": "{tmp}/code"}},
            "mqtt.unlock_code_file: {tmp}/code is also web.password_file",
        ),
        (
            {"camera": {"source": "{tmp}/events.db"}},
            "camera.source: {tmp}/events.db is also events.db, which the door writes",
        ),
        (
            {"camera": {"source": "{tmp}/snaps"}, "events": {"snapshots": "{tmp}/snaps"}},
            "camera.source: {tmp}/snaps is also events.snapshots, which the door writes",
        ),
        # Found by an audit: the door wrote the events into the gallery's write-ahead log
        # (then deleted it), and `hub passwd` wrote its hash over the web page's TLS key.
        (
            {"events": {"db": "{tmp}/gallery.db-wal"}},
            "events.db: {tmp}/gallery.db-wal is also the -wal file SQLite keeps beside "
            "gallery.path",
        ),
        (
            {"events": {"jsonl": "{tmp}/events.db-journal"}},
            "events.jsonl: {tmp}/events.db-journal is also the -journal file SQLite keeps "
            "beside events.db",
        ),
        (
            {
                "web": {
                    "password_file": "{tmp}/tls.key",
                    "tls_cert": "{tmp}/tls.pem",
                    "tls_key": "{tmp}/tls.key",
                }
            },
            "web.password_file: {tmp}/tls.key is also web.tls_key, which edge-app reads",
        ),
        (
            {"events": {"db": "{tmp}/code.lockout"}, "mqtt": {"unlock_code_file": "{tmp}/code"}},
            "events.db: {tmp}/code.lockout is also the lock-out file the hub keeps beside "
            "mqtt.unlock_code_file",
        ),
        (
            {"mqtt": {"unlock_code_file": "{tmp}/secret", "unlock_secret_file": "{tmp}/secret"}},
            "mqtt.unlock_code_file: {tmp}/secret is also mqtt.unlock_secret_file, which "
            "edge-app reads",
        ),
    ],
)
def test_secrets_and_the_recording_share_no_file_with_the_door(
    tmp_path: Path, data: dict, message: str
) -> None:
    """An audit: `hub unlock-code` wrote its hash over the gallery named as unlock_code_file
    (exit 0, the gallery gone); `run --events clip.mp4` appended events to the recording."""
    base: dict = {
        "gallery": {"path": f"{tmp_path}/gallery.db"},
        "events": {"db": f"{tmp_path}/events.db"},
    }
    for section, keys in data.items():
        base.setdefault(section, {}).update({k: v.format(tmp=tmp_path) for k, v in keys.items()})
    assert message.format(tmp=tmp_path) in errors_of(base)


def test_events_on_standard_output_share_no_file(tmp_path: Path) -> None:
    """`jsonl = "-"` is standard output: a file named "-" in the gallery's folder is not it."""
    config = parse_config(
        {"gallery": {"path": "-"}, "events": {"jsonl": "-", "db": f"{tmp_path}/events.db"}}
    )
    assert str(config.events.jsonl) == "-"


def float_keys() -> list[str]:
    import dataclasses

    from edge_app.config import SECTIONS

    return [
        f"{section}.{f.name}"
        for section, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
        if str(f.type).startswith("float")
    ]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
def test_non_finite_numbers_are_refused_for_every_float_key(value: str, tmp_path: Path) -> None:
    """TOML allows nan and inf: `pulse_seconds = nan` would mean a door that never opens and
    `cooldown_seconds = nan` no cooldown at all, since nan fails every comparison."""
    keys = float_keys()
    assert {"gpio.pulse_seconds", "policy.cooldown_seconds", "recognition.threshold"} <= set(keys)
    for dotted in keys:
        section, key = dotted.split(".")
        path = tmp_path / "door.toml"
        path.write_text(f"[{section}]\n{key} = {value}\n")
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert f"{dotted}: " in str(caught.value) and "is not a finite number" in str(caught.value)
        with pytest.raises(ConfigError, match=f"{dotted}: .* is not a finite number"):
            apply_overrides(Config(), {dotted: float(value)})


def test_an_enormous_integer_is_refused_by_its_size_for_every_number_key(
    tmp_path: Path,
) -> None:
    """TOML's integers have no bound in Python: 10**400 is too large for a float (math.isfinite
    raised OverflowError, a traceback), and a message quoting it in full is 400 digits long."""
    for dotted in float_keys():
        section, key = dotted.split(".")
        path = tmp_path / "door.toml"
        path.write_text(f"[{section}]\n{key} = -1{'0' * 400}\n")
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert f"{dotted}: -(a number of about 401 digits) is out of range" in str(caught.value)
    assert "max_missed: (a number of about 401 digits) is out of range" in errors_of(
        {"tracking": {"max_missed": 10**400}}
    )


def test_an_integer_past_pythons_digit_limit_is_invalid_toml(tmp_path: Path) -> None:
    """int() refuses more than 4,300 digits with a ValueError that is not a TOMLDecodeError
    (and advises sys.set_int_max_str_digits): it escaped as a traceback."""
    path = tmp_path / "door.toml"
    path.write_text(f"[tracking]\nmax_missed = 1{'0' * 5000}\n")
    with pytest.raises(ConfigError, match=r"not valid TOML \(an integer of more than 4300 digits"):
        load_config(path)


def test_a_refused_value_is_quoted_short(tmp_path: Path) -> None:
    """A megabyte string where a number belongs is named, not copied into the message."""
    text = errors_of({"camera": {"width": "9" * 100_000}, "web": {"listen": "x" * 100_000}})
    assert "camera.width: expected an integer, got str '99999" in text
    assert len(text) < 1000, text[:300]


def test_recognition_site_centring_is_on_by_default_and_a_boolean() -> None:
    assert parse_config({}).recognition.site_centring is True
    off = parse_config({"recognition": {"site_centring": False}})
    assert off.recognition.site_centring is False
    with pytest.raises(ConfigError, match="recognition.site_centring"):
        parse_config({"recognition": {"site_centring": "yes"}})


def test_recognition_lookalikes_defaults_to_raise_and_refuses_other_words() -> None:
    assert parse_config({}).recognition.lookalikes == "raise"
    assert parse_config({"recognition": {"lookalikes": "warn"}}).recognition.lookalikes == "warn"
    with pytest.raises(ConfigError, match="recognition.lookalikes"):
        parse_config({"recognition": {"lookalikes": "ignore"}})


def test_allowed_hours_take_spans_to_midnight_and_the_whole_day() -> None:
    hours = ["00:00-24:00", "22:00-24:00", "22:00-06:00", "23:59-00:00"]
    assert parse_config({"policy": {"allowed_hours": hours}}).policy.allowed_hours == tuple(hours)


def path_keys() -> list[str]:
    return [
        f"{section}.{f.name}"
        for section, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
        if "Path" in str(f.type)
    ]


def test_a_nul_character_is_refused_in_every_path_key(tmp_path: Path) -> None:
    """A NUL passed validation and failed on first use ("embedded null byte") in `run` while
    `doctor` said OK. TOML can spell it \\u0000."""
    keys = path_keys()
    assert {"gallery.path", "events.db", "models.dir", "web.password_file"} <= set(keys)
    for dotted in keys:
        section, key = dotted.split(".")
        path = tmp_path / "door.toml"
        path.write_text(f'[{section}]\n{key} = "{tmp_path}/a\\u0000b"\n')
        with pytest.raises(ConfigError, match=f"{dotted}: .* holds a NUL character"):
            load_config(path)
        with pytest.raises(ConfigError, match=f"{dotted}: .* holds a NUL character"):
            apply_overrides(Config(), {dotted: Path(f"{tmp_path}/a\0b")})


# --- web.public_origin -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (5, 'web.public_origin: expected a string like "https://door.example", got int 5'),
        ("door.example", "web.public_origin: 'door.example' is not an http:// or https:// origin"),
        ("ftp://door.example", "'ftp://door.example' is not an http:// or https:// origin"),
        ("wss://door.example", "'wss://door.example' is not an http:// or https:// origin"),
        ("https://door.example/door", "'https://door.example/door' has a path, query or fragment"),
        ("https://door.example//", "'https://door.example//' has a path, query or fragment"),
        ("https://door.example?x=1", "'https://door.example?x=1' has a path, query or fragment"),
        ("https://door.example#top", "'https://door.example#top' has a path, query or fragment"),
        ("https://admin@door.example", "'https://admin@door.example' holds a user name (user@)"),
        ("https://", "web.public_origin: 'https://': '' is not host[:port]"),
        ("https://door example", "'https://door example': 'door example' is not host[:port]"),
        ("https://door.example:", "'door.example:' is not host[:port]"),
        ("https://door.example:0", "'https://door.example:0': port 0 is out of range (1 to 65535)"),
        ("https://door.example:65536", "port 65536 is out of range (1 to 65535)"),
        (
            "https://door..example",
            "web.public_origin: 'https://door..example': 'door..example' is not a valid host "
            "name (an empty label)",
        ),
        (
            "https://" + "a" * 64 + ".example",
            "is not a valid host name (a label of more than 63 characters)",
        ),
        ("https://999.1.1.1", "'https://999.1.1.1': '999.1.1.1' is not an IPv4 address"),
        ("https://[1::2::3]", "'https://[1::2::3]': [1::2::3] is not an IPv6 address"),
    ],
)
def test_public_origin_errors_name_the_key_on_one_line(value: object, message: str) -> None:
    text = errors_of({"web": {"public_origin": value}})
    assert message in text
    assert "1 problem(s)" in text and len(text.splitlines()) == 2  # the file, then one line


@pytest.mark.parametrize(
    ("value", "normalised"),
    [
        ("", ""),
        ("https://door.example", "https://door.example"),
        ("HTTPS://Door.Example/", "https://door.example"),
        ("https://door.example:443", "https://door.example"),
        ("http://door.example:80/", "http://door.example"),
        ("https://door.example:8443", "https://door.example:8443"),
        ("http://192.0.2.20:8080", "http://192.0.2.20:8080"),
        ("http://[2001:DB8:0::1]:8080/", "http://[2001:db8::1]:8080"),
        ("https://door.example.", "https://door.example."),
    ],
)
def test_public_origin_is_normalised_as_a_browser_writes_an_origin(
    value: str, normalised: str
) -> None:
    config = parse_config({"web": {"public_origin": value}})
    assert config.web.public_origin == normalised
    # Normalising is idempotent: overrides re-validate the stored value.
    assert apply_overrides(config, {"web.enabled": True}).web.public_origin == normalised


def test_public_origin_is_off_by_default() -> None:
    assert parse_config({}).web.public_origin == ""


@pytest.mark.parametrize("host", ["door.0x1", "door.0X", "door.0xff.", "0x7f"])
def test_a_name_ending_in_a_hex_number_is_read_as_ipv4(host: str) -> None:
    """The URL standard reads a last label of 0x and hex digits as a number, as it does
    decimal digits, and the name as an IPv4 address: a browser refuses "https://door.0x1"
    and turns "https://0x7f" into "https://0.0.0.127", so neither can be the Origin the
    browser sends. Both used to be accepted as names."""
    text = errors_of({"web": {"public_origin": f"https://{host}"}})
    assert f"web.public_origin: 'https://{host}': {host.lower()!r} is not an IPv4 address" in text
    # A label that is not a number stays a name, as before.
    assert parse_config({"web": {"public_origin": "https://door.0xg"}}).web.public_origin == (
        "https://door.0xg"
    )


# --- mqtt.host ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("broker..lan", "an empty label"),
        ("a" * 64 + ".lan", "a label of more than 63 characters"),
        (".", "an empty label"),
        (".broker.lan", "an empty label"),
    ],
)
def test_a_host_name_the_resolver_refuses_is_a_config_error(host: str, reason: str) -> None:
    """Such a name passes the host pattern, but the resolver raises UnicodeError on it (paho's
    network thread died on it): refused when the config is read, naming mqtt.host. The
    reason is the program's own: the idna codec's words differ between Python 3.11 and 3.13."""
    text = errors_of({"mqtt": {"host": host}})
    assert f"mqtt.host: {host!r} is not a valid host name ({reason})" in text
    assert "1 problem(s)" in text and len(text.splitlines()) == 2


@pytest.mark.parametrize("host", ["broker.lan", "broker.lan.", "192.0.2.10", "::1", "a" * 63])
def test_host_names_the_resolver_takes_pass(host: str) -> None:
    assert parse_config({"mqtt": {"host": host}}).mqtt.host == host


def test_the_mqtt_client_applies_the_same_host_rule_to_an_unvalidated_config() -> None:
    """An MqttConfig built in code skips validation: make_client refuses the name with the
    message the config gives, from the one rule (config.host_name_problem)."""
    from edge_app.hub.discovery import Topics
    from edge_app.hub.mqtt import MqttError, make_client

    settings = dataclasses.replace(parse_config({}).mqtt, host="broker..lan")
    with pytest.raises(MqttError) as caught:
        make_client(settings, "test", Topics.of(settings))
    assert f"{caught.value}" in errors_of({"mqtt": {"host": "broker..lan"}})


def test_a_config_that_is_not_a_small_regular_file_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A named pipe would block the command for ever, /dev/zero would fill the memory."""
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        read_config_file(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        read_config_file(Path("/dev/zero"))
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * 2000 + "\n")
    monkeypatch.setattr(config_module, "CONFIG_MAX_BYTES", 1000)
    with pytest.raises(ConfigError, match="more than a config file has"):
        read_config_file(big)


@pytest.mark.parametrize("key", ["events.jsonl", "events.db", "gallery.path"])
def test_the_door_writes_nothing_into_its_own_config_file(tmp_path: Path, key: str) -> None:
    """`--events door.toml` appended events to the config: the next start failed on it."""
    from edge_app.config import door_config

    path = tmp_path / "door.toml"
    path.write_text("[policy]\ncooldown_seconds = 30\n")
    before = path.read_bytes()

    with pytest.raises(ConfigError, match=f"{key}: .*door.toml is the config file itself"):
        door_config(path, {key: str(tmp_path / "." / "door.toml")})
    (tmp_path / "linked.toml").hardlink_to(path)  # the same file under another name
    with pytest.raises(ConfigError, match=f"{key}: .*linked.toml is the config file itself"):
        door_config(path, {key: str(tmp_path / "linked.toml")})
    assert path.read_bytes() == before
    assert door_config(path, {key: str(tmp_path / "other")}).policy.cooldown_seconds == 30


def test_a_config_of_thousands_of_problems_names_a_few_and_counts_the_rest() -> None:
    """Found by an audit: a 529 kB file of bad keys made an error of 60,001 lines (9 MB)."""
    from edge_app.config import PROBLEMS_SHOWN

    data = {"gpio": {f"key{i}": i for i in range(5000)}}
    with pytest.raises(ConfigError) as raised:
        parse_config(data, "big.toml")
    lines = str(raised.value).splitlines()
    assert lines[0] == "big.toml: 5000 problem(s):"
    assert len(lines) == 1 + PROBLEMS_SHOWN + 1
    assert lines[-1] == f"  - and {5000 - PROBLEMS_SHOWN} more (fix these first)"
    assert len(raised.value.one_line()) < 4000


def test_problems_past_those_shown_are_counted_without_looking_for_a_close_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reload validates on the door's frame loop: 96,000 unknown keys spent 3 s in difflib
    finding "did you mean" hints that no message shows."""
    import difflib

    from edge_app.config import PROBLEMS_SHOWN

    looked_up: list[str] = []
    close_matches = difflib.get_close_matches

    def counted(word: str, possibilities: list[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
        looked_up.append(word)
        return close_matches(word, possibilities, n, cutoff)

    monkeypatch.setattr(difflib, "get_close_matches", counted)
    data: dict[str, object] = {"gpio": {f"pinn{i}": i for i in range(3000)}}
    data.update({f"sect{i}": {} for i in range(3000)})
    data.update({f"pin{i}": 1 for i in range(3000)})  # keys above every section header
    with pytest.raises(ConfigError) as raised:
        parse_config(data, "big.toml")
    assert len(looked_up) <= PROBLEMS_SHOWN
    lines = str(raised.value).splitlines()
    assert lines[0] == "big.toml: 9000 problem(s):"
    assert "did you mean 'pin'?" in lines[1]
    assert lines[-1] == f"  - and {9000 - PROBLEMS_SHOWN} more (fix these first)"
