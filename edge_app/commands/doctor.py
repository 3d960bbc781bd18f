"""`edge-app doctor`: is this machine ready to run the door, and if not, what to do."""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib
import json
import os
import platform
import re
import shlex
import sqlite3
import sys
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_app.arg_types import nonempty_path
from edge_app.commands import config_path, printable, shown
from edge_app.errors import is_damage
from edge_app.paths import DEFAULT_CONFIG, DEFAULT_STATE_DIR
from edge_app.policy import CLOCK_NOT_SET
from edge_app.sqlite_files import connect_read_only
from edge_app.wall_clock import (
    ALWAYS,
    NTP,
    RTC,
    SET_THE_CLOCK,
    TIMESYNC_FLAG,
    UNSET_CLOCK,
    WallClock,
)

if TYPE_CHECKING:
    from edge_app.config import Config
    from edge_app.site_memory import SiteMemory


# Where the kernel shows module parameters (/sys/module/NAME/parameters/...).
SYS_ROOT = Path("/sys")
# The board name the kernel reads from the device tree ("Raspberry Pi 5 Model B Rev 1.0").
# Read where /proc/device-tree points: the hub's unit mounts /proc with ProcSubset=pid,
# which hides that link, so its health page would not know it runs on a Pi.
DEVICE_MODEL = SYS_ROOT / "firmware/devicetree/base/model"
# The Raspberry Pi pinctrl drivers whose persist_gpio_outputs says what happens to an output
# a process releases (by exiting, however it died): Y keeps its level, N makes it an input.
# pinctrl_rp1 drives the 40-pin header of a Pi 5, pinctrl_bcm2835 that of the earlier boards.
PINCTRL_DRIVERS = ("pinctrl_rp1", "pinctrl_bcm2835")
STRICT_GPIOD_FIX = (
    "add dtparam=strict_gpiod to /boot/firmware/config.txt and reboot: a relay process "
    "killed mid-pulse then releases the relay pin to the pull-down at once, not only when "
    "ExecStopPost= runs relay_off (docs/WIRING.md)"
)


DOCTOR_EPILOG = """\
Each line is OK, WARN (the door runs, less well or less safely) or FAIL (it cannot run),
followed by "->" and the fix. It reads the config, the models, and the gallery, site memory
and events database the config names, and asks the running door (through its control
socket) whether it runs and its camera shows a usable picture. It changes nothing itself
(it only reads the events database); opening the gallery, as every command does, narrows
a gallery file others may read to mode 600 and brings an older gallery to the current
schema. Run it as the door's user to see what the service sees.

examples:
  sudo -u edge-app edge-app doctor
  edge-app doctor --config ./door.toml --json
"""


@dataclass(frozen=True)
class Check:
    area: str
    status: str  # "ok", "warn" or "fail"
    detail: str
    fix: str = ""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check runtime, accelerator, models, camera, GPIO, gallery, config and the "
        "running door",
        description="Report each part the door needs as ok, or what is missing and how to "
        "fix it. Exit code 1 when any part fails.",
        epilog=DOCTOR_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", type=config_path, metavar="PATH", help=f"TOML config (default {DEFAULT_CONFIG})"
    )
    parser.add_argument(
        "--models",
        type=nonempty_path,
        metavar="DIR",
        help="models folder (default: [models] dir in the config, else the installed models)",
    )
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    # The table says what the engine's start-up lines would (backend, cascade): those are
    # shown with -v only, warnings and errors always.
    parser.set_defaults(handler=_run, quiet_unless_verbose=True)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _runtime_checks() -> list[Check]:
    from edge_app.runtime import RuntimeUnavailable, select_backend

    try:
        backend = select_backend("auto")
    except RuntimeUnavailable as error:
        return [Check("runtime", "fail", str(error), "pip install ai-edge-litert")]
    runtime = backend.runtime
    checks = [Check("runtime", "ok", f"{runtime.module} {runtime.version}")]
    if backend.kind == "edgetpu":
        checks.append(Check("edge tpu", "ok", backend.reason))
    else:
        checks.append(
            Check(
                "edge tpu",
                "warn",
                f"running on the CPU ({backend.threads} threads): {backend.reason}",
                "plug in the Coral and install libedgetpu built for this runtime "
                "(feranick's libedgetpu 16.0TF2.x packages); see docs/INSTALL.md",
            )
        )
    return checks


def _model_checks(models: Path | None) -> list[Check]:
    from edge_app.manifest import (
        ManifestError,
        load_manifest,
        verify_files,
        verify_float_cascade,
    )
    from edge_app.paths import default_models_dir

    folder = models or default_models_dir()
    try:
        manifest = load_manifest(folder)
    except ManifestError as error:
        return [Check("models", "fail", str(error), "copy models/tflite or run edge-convert build")]
    problems = verify_files(manifest, folder, edgetpu=True)
    if problems:
        return [Check("models", "fail", "; ".join(problems), "rebuild or re-copy the models")]
    files = ", ".join(f"{s.file} {s.sha256[:12]}" for s in manifest.models.values())
    tpu = sum(1 for s in manifest.models.values() if s.edgetpu)
    floats = manifest.float_cascade
    float_problems = verify_float_cascade(manifest, folder)
    float_check = Check(
        "float cascade",
        "warn" if floats is None or float_problems else "ok",
        "; ".join(float_problems)
        if float_problems
        else "none in the manifest: the CPU runs the int8 P/R/O-Net"
        if floats is None
        else f"{len(floats.models)} float P/R/O-Net and the probe frame verified",
        "edge-convert float-cascade --models MODELS, or re-copy models/tflite"
        if floats is None or float_problems
        else "",
    )
    return [
        float_check,
        Check("models", "ok", f"{folder}: {len(manifest.models)} models verified ({files})"),
        Check(
            "edge tpu models",
            "ok" if tpu else "warn",
            f"{tpu} of {len(manifest.models)} models compiled for the Edge TPU",
            ""
            if tpu
            else "rebuild the models for the Edge TPU on an x86-64 Debian/Ubuntu desktop: "
            "docs/INSTALL.md, section 5",
        ),
        Check(
            "converter",
            "ok",
            f"TensorFlow {manifest.converter.get('tensorflow')}, camera "
            f"{manifest.camera[0]}x{manifest.camera[1]}, min face {manifest.min_face} px",
        ),
    ]


def _raspberry_pi() -> str | None:
    """The board's name when this is a Raspberry Pi (its device tree says so), else None."""
    try:
        model = DEVICE_MODEL.read_text(encoding="utf-8", errors="replace").strip("\x00\n ")
    except OSError:
        return None
    return model if model.startswith("Raspberry Pi") else None


def _cascade_checks(models: Path | None, config: Config) -> tuple[list[Check], Any]:
    """Which MTCNN cascade the engine runs with this config, and why: opens it as the daemon
    does (with cascade = "auto" that times both cascades, a fraction of a second). Also
    returns the engine (None when it does not open) for the lookalike check."""
    from edge_app.engine import Engine
    from edge_app.errors import UserError

    try:
        engine = Engine.from_config(replace(config.models, dir=models), config.detection)
    except UserError as error:
        return [Check("cascade", "fail", str(error), "fix the models or set models.cascade")], None
    choice = engine.cascade_choice
    if choice is None:
        return [], engine
    degraded = choice.requested != "int8" and choice.reason.startswith("no usable float")
    return [
        Check(
            "cascade",
            "warn" if degraded and choice.requested == "auto" else "ok",
            f"{choice.describe()}; the daemon measures again at each start",
            "edge-convert float-cascade --models MODELS, or re-copy models/tflite"
            if degraded
            else "",
        )
    ], engine


def _camera_import_check() -> Check | None:
    """None when picamera2 is not installed; else whether it imports. Its import runs native
    code from apt packages and can raise anything (apt's simplejpeg under numpy 2 raises
    ValueError), which the door cannot start with: a fail naming the cause and the fix."""
    from edge_app.camera import picamera2_available, picamera2_import_fix

    if not picamera2_available():
        return None
    try:
        importlib.import_module("picamera2")
    except Exception as error:
        return Check(
            "camera",
            "fail",
            f"picamera2 is installed but its import fails ({type(error).__name__}: {error})",
            picamera2_import_fix(error),
        )
    return Check("camera", "ok", "picamera2 importable")


def _first_frame_problem(path: Path) -> str | None:
    """Why a recorded file or folder gives the door no frame (as `run` reads it), or None."""
    from edge_app.camera import CameraError, FolderSource, FrameSource, OpenCVSource

    source: FrameSource | None = None
    try:
        source = FolderSource(path) if path.is_dir() else OpenCVSource(str(path))
        next(iter(source.frames()), None)
    except CameraError as error:
        return str(error).removeprefix("camera.source: ")
    except OSError as error:  # what the source's own checks did not word
        return f"cannot be read ({error.strerror or error})"
    finally:
        if source is not None:
            source.close()
    return None


def _sees_system_packages() -> bool:
    """Whether this Python imports apt's packages (python3-picamera2 lives there): a plain
    interpreter does, a venv only when made with --system-site-packages."""
    if sys.prefix == sys.base_prefix:
        return True
    try:
        lines = (Path(sys.prefix) / "pyvenv.cfg").read_text(errors="replace").splitlines()
    except OSError:
        return False
    settings = {key.strip(): value.strip() for key, _, value in (x.partition("=") for x in lines)}
    return settings.get("include-system-site-packages", "").lower() == "true"


def _picamera2_fix() -> str:
    if _sees_system_packages():
        return "sudo apt install python3-picamera2"
    return (
        "sudo apt install python3-picamera2 and create the venv with --system-site-packages "
        "(docs/INSTALL.md)"
    )


def _camera_check(source: int | str) -> Check:
    """The camera the door opens: `[camera] source` as edge_app.camera.open_source reads it."""
    from edge_app.camera import describe_source, is_live_source

    device = describe_source(source)  # /dev/videoN for an index; a stream without password
    named = f"camera.source {device!r}"
    if source == "picamera2":
        found = _camera_import_check()
        if found is not None:
            return found
        return Check(
            "camera",
            "fail",
            f"{named}: picamera2 is not installed, so the door cannot start",
            _picamera2_fix(),
        )
    if source != "auto" and is_live_source(source):
        if not device.startswith("/dev/"):
            return Check(
                "camera",
                "ok",
                f"{named}: a network stream (doctor does not open it; the shipped unit denies "
                "IP until it is allowed: docs/DAEMON.md, 'An RTSP camera needs IP')",
            )
        if Path(device).exists():
            return Check("camera", "ok", f"{named}: {device} is present")
        return Check(
            "camera",
            "warn",
            f"{named}: {device} does not exist; the door starts and waits for it",
            f"plug in the camera, or set [camera] source (V4L2 devices here: "
            f"{', '.join(sorted(glob.glob('/dev/video*'))) or 'none'})",
        )
    if source != "auto":
        path = Path(str(source)).expanduser()
        kind = "folder" if path.is_dir() else "file" if path.is_file() else None
        if kind is None:
            return Check(
                "camera",
                "fail",
                f"{named}: not a file, a folder, a device index, a /dev path or a URL, so the "
                "door cannot start",
                'set [camera] source = "auto" for the camera',
            )
        problem = _first_frame_problem(path)
        if problem is not None:  # the door would refuse it at start
            return Check(
                "camera",
                "fail",
                f"{named}: {problem}, so the door cannot start",
                "give a video file or a folder of photos the door can read",
            )
        return Check(
            "camera",
            "warn",
            f"{named}: a recorded {kind}, played instead of a camera",
            'for a door, set [camera] source = "auto" (or picamera2, a device, a stream URL)',
        )
    camera = _camera_import_check()
    if camera is not None:
        return camera
    videos = sorted(glob.glob("/dev/video*"))
    board = _raspberry_pi()
    # A Pi always has /dev/video* nodes (its ISP and codecs): they say nothing about a
    # camera, and its CSI camera needs picamera2.
    usable = bool(videos) and board is None
    return Check(
        "camera",
        "ok" if usable else "warn",
        f"picamera2 not importable{f' on a {board}' if board else ''}; "
        f"V4L2 devices: {', '.join(videos) or 'none'}",
        "" if usable else f"{_picamera2_fix()}, or use a USB camera (--source 0)",
    )


# The pin factories the shipped systemd/edge-app.service leaves no way to the pins, and why.
_NEEDS_GPIOMEM = "needs /dev/gpiomem, which the shipped edge-app.service's DeviceAllow= leaves out"
UNIT_BLOCKED_FACTORIES = {
    "rpigpio": _NEEDS_GPIOMEM,
    "native": _NEEDS_GPIOMEM,
    "pigpio": "talks to the pigpiod daemon over TCP, which the shipped edge-app.service forbids "
    "(RestrictAddressFamilies=, IPAddressDeny=)",
}


def _device_checks(
    source: int | str = "auto", factory: str = "auto", pin_warning: str | None = None
) -> list[Check]:
    """The camera and the relay's GPIO, as the door's config names them (pin_warning: what
    is wrong with the config's pin, from edge_app.config)."""
    checks = [_camera_check(source)]
    chips = sorted(glob.glob("/dev/gpiochip*"))
    if factory == "mock":
        checks.append(
            Check(
                "gpio",
                "warn",
                "gpio.factory 'mock': the relay is simulated, no door strike is driven",
                'for a door, set [gpio] factory = "auto"',
            )
        )
        return checks
    detail = f"GPIO chips: {', '.join(chips) or 'none'} (gpiozero {_version('gpiozero')})"
    from edge_app.relay import missing_factory_library

    library = missing_factory_library(factory)
    if library is not None:  # the door's start fails making the pin factory
        checks.append(
            Check(
                "gpio",
                "fail",
                f"{detail}; gpio.factory {factory!r} needs the {library} library, which is not "
                "installed, so the door cannot start",
                'on a Raspberry Pi install python3-lgpio and use factory = "auto" or "lgpio"; '
                'elsewhere factory = "mock"',
            )
        )
        return checks
    from edge_app.relay import factory_name

    if (
        chips
        and factory_name(factory) == "lgpio"
        and not any(os.access(chip, os.R_OK | os.W_OK) for chip in chips)
    ):  # the door's start fails claiming the pin (ExecStartPre= relay_off first)
        checks.append(
            Check(
                "gpio",
                "fail",
                f"{detail}; this user may open none of them, so a door running as it cannot "
                "drive the relay and does not start",
                "run doctor as the door's user (sudo -u edge-app edge-app doctor); if it says "
                'so too, give the gpio group the chips: docs/INSTALL.md, "GPIO access and '
                'the pin factory"',
            )
        )
        return checks
    # Each warning of the row, the pin's first: one must not hide the other (the factory's
    # is found only once the pin is fixed otherwise).
    problems: list[str] = []
    fixes: list[str] = []
    if pin_warning is not None:
        problem, _, fix = pin_warning.partition("; ")
        problems.append(problem)
        fixes.append(fix)
    blocked = UNIT_BLOCKED_FACTORIES.get(factory_name(factory))
    if blocked is not None:  # fine for a unit of one's own, not for the shipped one
        problems.append(
            f"gpio.factory {factory!r} {blocked}, so a door started by it cannot drive the relay"
        )
        fixes.append(
            'set [gpio] factory = "auto" (lgpio): docs/INSTALL.md, "GPIO access and the pin '
            'factory"'
        )
    if problems:
        checks.append(Check("gpio", "warn", "; ".join([detail, *problems]), "; ".join(fixes)))
        return checks
    checks.append(
        Check(
            "gpio",
            "ok" if chips else "warn",
            detail,
            ""
            if chips
            else 'not a Raspberry Pi: set [gpio] factory = "mock" to simulate the relay',
        )
    )
    return checks


def _released_outputs_check(sys_root: Path = SYS_ROOT) -> Check | None:
    """Whether the kernel keeps a released GPIO output at its level (Raspberry Pi OS does,
    unless config.txt has dtparam=strict_gpiod): then a door process killed mid-pulse leaves
    the strike energised until ExecStopPost= relocks it. None off a Raspberry Pi."""
    found: list[tuple[str, str]] = []
    for driver in PINCTRL_DRIVERS:
        parameter = sys_root / "module" / driver / "parameters" / "persist_gpio_outputs"
        try:
            found.append((driver, parameter.read_text(encoding="ascii", errors="replace")))
        except OSError:
            continue
    if not found:
        board = _raspberry_pi()
        if board is None:
            return None  # not a Pi: its GPIO driver is none of these
        return Check(
            "gpio release",
            "warn",
            f"{board}: this kernel shows no persist_gpio_outputs, so whether a released relay "
            "pin keeps its level is unknown",
            f"update Raspberry Pi OS (sudo apt full-upgrade), then {STRICT_GPIOD_FIX}",
        )
    values = ", ".join(f"{driver} persist_gpio_outputs={value.strip()}" for driver, value in found)
    if any(value.strip() in ("Y", "1") for _, value in found):
        return Check(
            "gpio release",
            "warn",
            f"{values}: a released GPIO output keeps its level, so if the relay process is "
            "killed mid-pulse (the whole service killed, or the OOM killer choosing it) the "
            "strike stays energised until ExecStopPost= runs relay_off",
            STRICT_GPIOD_FIX,
        )
    return Check(
        "gpio release",
        "ok",
        f"{values}: a released GPIO output becomes an input, so the pull-down locks the door "
        "as soon as the door process dies",
    )


def _liveness_check(config: Config, engine: Any) -> Check:
    """The liveness rule the door applies with these models and this config (LiveRule, as the
    door resolves it): fail when the door would refuse to start, warn when a printed photo
    of an enrolled person could open the door."""
    from edge_app.errors import UserError
    from edge_app.liveness_rule import LOG, OFF, LiveRule

    if config.liveness.mode is None and not engine.has_liveness:  # "auto", nothing to run
        return Check(
            "liveness",
            "warn",
            'mode "auto" and the models have no liveness model: the check is off, and a '
            "printed photo of an enrolled person can open the door",
            "build the models with --liveness (docs/LIVENESS.md), or set "
            '[liveness] mode = "off" to say it is meant',
        )
    try:
        rule = LiveRule.resolve(config.liveness, engine.manifest, engine.has_liveness)
    except UserError as error:
        return Check("liveness", "fail", f"the door refuses to start: {error}", "")
    if rule.mode == OFF:
        return Check(
            "liveness",
            "warn",
            'mode "off": a printed photo of an enrolled person can open the door',
            '[liveness] mode = "require" (docs/LIVENESS.md)' if engine.has_liveness else "",
        )
    if rule.mode == LOG:
        return Check(
            "liveness",
            "warn",
            f"{rule.describe()}: scored and reported, never blocks a printed photo",
            '[liveness] mode = "require" once the log shows live faces pass',
        )
    return Check("liveness", "ok", rule.describe())


def _config_checks(config_path: Path | None) -> tuple[list[Check], Config | None]:
    """The config's own check, and the config when it is usable (None when it is not)."""
    from edge_app import paths
    from edge_app.config import load_config
    from edge_app.errors import UserError

    try:
        config = load_config(config_path)
    except UserError as error:
        fix = "fix each problem listed, then rerun"
        if config_path is not None and not config_path.exists():
            fix = "give the config's path with --config, or install with sudo systemd/install.sh"
        return [Check("config", "fail", str(error), fix)], None
    if config_path is not None:
        detail = str(config_path)
    elif paths.DEFAULT_CONFIG.is_file():
        detail = str(paths.DEFAULT_CONFIG)
    else:
        detail = f"no {paths.DEFAULT_CONFIG}: the defaults apply"
    return [Check("config", "ok", detail)], config


def _lookalike_checks(config: Config, engine: Any, memory: SiteMemory | None) -> list[Check]:
    """Whether enrolled people match each other at the door's threshold, and what the door
    does about it ([recognition] lookalikes; docs/ACCURACY.md, "Same camera, similar faces").
    `memory`: the site memory the door would start with (None without learn_site)."""
    from edge_app.daemon import door_matcher
    from edge_app.errors import UserError
    from edge_app.gallery import Gallery

    try:
        with Gallery.open(config.gallery.path, read_only=True) as gallery:
            matrix = gallery.load_matrix()
        matcher, found = door_matcher(
            engine, config.recognition, matrix, memory=memory, report=False
        )
    except (UserError, OSError) as error:
        return [Check("lookalikes", "fail", str(error))]
    return [_site_check(config, matcher, len(matrix.names)), *_pairs(config, matcher, found)]


# The two ways to give site centring something to compare a household of one with.
KNOWN_VISITORS_FIX = (
    "enrol one to three people who visit, at this door's camera and without access "
    "(`edge-app enroll --no-access --camera NAME`): they show the door its camera and are "
    "never let in; docs/GALLERY.md, 'Known visitors'"
)
LEARN_SITE_FIX = (
    "set [recognition] learn_site = true: the door learns its camera from the strangers it "
    "sees (opt-in: it keeps an aggregate of their faces); docs/GALLERY.md, 'Site memory'"
)


def _site_check(config: Config, matcher: Any, people: int) -> Check:
    """What site centring removes on this gallery ([recognition] site_centring), with the
    strangers' visits the site memory learned ([recognition] learn_site)."""
    if not config.recognition.site_centring:
        return Check(
            "site centring",
            "warn",
            "off: faces from this camera are matched with what they share, which lifts "
            "strangers' scores at a door with one camera and one light",
            "set [recognition] site_centring = true; docs/ACCURACY.md, 'Site centring'",
        )
    memory = matcher.memory
    counted = memory is not None and memory.ready and people > 0
    visits = f" and {memory.learned} learned stranger visits" if counted else ""
    if people == 1 and memory is not None and not memory.ready:
        return Check(
            "site centring",
            "warn",
            "on, but one person enrolled and the site memory has learned no stranger's visit "
            "yet, so nothing is removed: strangers filmed by this camera score higher against "
            "them than elsewhere",
            "wait: it learns at most one stranger's visit a minute; or " + KNOWN_VISITORS_FIX,
        )
    if people == 1 and not counted:
        return Check(
            "site centring",
            "warn",
            "on, but one person enrolled gives it nobody to compare, so nothing is removed: "
            "strangers filmed by this camera score higher against them than elsewhere",
            KNOWN_VISITORS_FIX
            + ("" if config.recognition.learn_site else f". Or {LEARN_SITE_FIX}"),
        )
    who = "the one enrolled person" if people == 1 else f"the {people} enrolled people"
    if matcher.site_shared == 0.0:
        return Check(
            "site centring",
            "ok",
            f"on; {who}{visits} share nothing beyond their own faces"
            if people
            else "on; nobody enrolled",
        )
    return Check(
        "site centring",
        "ok",
        f"on; {who}{visits} share a direction of length {matcher.site_shared:.2f} beyond "
        "their own faces (one camera, one light): "
        f"{100 * matcher.settings.site_share:.0f}% of it is removed from every face",
    )


def _site_memory_checks(config: Config) -> tuple[list[Check], SiteMemory | None]:
    """The site memory's own checks ([recognition] learn_site; `edge-app site show`), and
    the memory the door would start with (None without learn_site, or when this process
    cannot read the file)."""
    from edge_app.commands.site import AS_DOOR, inspect_site
    from edge_app.site_memory import REFUSED_NAME, SiteMemory

    site = inspect_site(config)
    checks = []
    if not site.learn_site:
        if site.exists or site.set_aside is not None:
            left = site.path if site.exists else site.set_aside
            checks.append(
                Check(
                    "site memory",
                    "warn",
                    f"learn_site is off, but {left} remains: the door neither uses nor adds to it",
                    "edge-app site forget (deletes it)",
                )
            )
        return checks, None
    memory = site.memory
    if site.unreadable is not None:
        checks.append(
            Check(
                "site memory", "warn", site.unreadable, f"run as the door's user: {AS_DOOR} doctor"
            )
        )
    elif site.refusal is not None:
        memory = SiteMemory()  # what the door starts with once it has set the file aside
        checks.append(
            Check(
                "site memory",
                "warn",
                f"{site.refusal}: the door sets it aside as {REFUSED_NAME} and starts empty",
                "edge-app site forget (deletes it)",
            )
        )
    elif memory is None or not site.exists:
        checks.append(
            Check(
                "site memory",
                "ok",
                f"learn_site on; nothing learned yet ({site.path} does not exist): site "
                "centring counts it from the first stranger's visit it learns",
            )
        )
    else:
        counts = "site centring counts them" if memory.ready else "nothing to count yet"
        problem = site.mode_problem
        status = "ok" if problem is None else "warn"
        fix = "" if problem is None else f"chmod 600 {site.path} ({problem})"
        checks.append(
            Check(
                "site memory",
                status,
                f"{site.path}: {memory.learned} stranger visit(s) learned, {counts}; "
                f"mode {site.mode or 0:o}",
                fix,
            )
        )
    if site.set_aside is not None:
        checks.append(
            Check(
                "site memory",
                "warn",
                f"{site.set_aside}: a file the door could not use was set aside",
                "look at it if you wish; edge-app site forget deletes it",
            )
        )
    return checks, memory


def _pairs(config: Config, matcher: Any, found: list[Any]) -> list[Check]:
    from edge_app.matching import lookalike_notices

    matrix = matcher.faces
    threshold = matcher.settings.threshold
    if len(matrix.names) < 2:
        return [
            Check(
                "lookalikes",
                "ok",
                f"{len(matrix.names)} enrolled: nobody to compare, so the door keeps the "
                f"threshold {threshold:.3f}",
            )
        ]
    if not found:
        return [
            Check(
                "lookalikes",
                "ok",
                f"no two of the {len(matrix.names)} enrolled people match each other at the "
                f"threshold {threshold:.3f}",
            )
        ]
    notices = lookalike_notices(found, threshold, config.recognition.lookalikes)
    return [Check("lookalikes", "warn", notice.problem, notice.advice) for notice in notices]


def clock_check(
    config: Config, wall_clock: WallClock | None = None, timesync_flag: Path = TIMESYNC_FLAG
) -> Check:
    """Whether the wall clock was set, and what the door does until it is: allowed_hours
    refuses every unlock and the retention waits (edge_app/wall_clock.py)."""
    wall_clock = wall_clock if wall_clock is not None else WallClock(config.clock)
    source = wall_clock.source()
    if source == NTP and not timesync_flag.exists() and wall_clock.trust != ALWAYS:
        # The kernel answered here; under its unit (ProtectClock=yes refuses adjtimex) the
        # door reads systemd-timesyncd's flag instead, and would find none.
        return Check(
            "clock",
            "warn",
            "an NTP client other than systemd-timesyncd keeps the clock: the door's unit "
            "(ProtectClock=yes) cannot ask the kernel and will take it as not set",
            'set [clock] trust = "always", or use systemd-timesyncd',
        )
    if source == NTP:
        return Check("clock", "ok", "set and kept by an NTP client")
    if source == RTC:
        return Check("clock", "ok", "set at boot by a real-time clock (no NTP client keeps it)")
    if wall_clock.trust == ALWAYS:  # UNSET from here on: asking the kernel again adds nothing
        return Check("clock", "ok", 'nothing has set it; trusted as [clock] trust = "always" says')
    waiting = []
    if config.policy.allowed_hours:
        waiting.append(f"allowed_hours refuses every unlock as '{CLOCK_NOT_SET}'")
    if config.events.retention_days:
        waiting.append("old events and snapshots are kept past retention_days")
    effect = "; ".join(waiting) if waiting else "nothing the door does depends on it"
    return Check(
        "clock",
        "fail" if config.policy.allowed_hours else "warn",
        f"{UNSET_CLOCK}. Until something does, {effect}",
        SET_THE_CLOCK,
    )


LOW_SPACE_BYTES = 50 * 1024 * 1024  # warned of: a few days of events and snapshots on a busy door


def _storage_checks(config: Config) -> list[Check]:
    """One row per filesystem the door writes its state on (gallery, events, snapshots): a
    read-only, full or inode-less one stops enrolments and events, and doctor says so rather
    than what SQLite's errors suggest (permissions)."""
    from edge_app.storage import free_bytes, storage_check

    wanted = [config.gallery.path, config.events.db, config.events.jsonl]
    folders = [Path(p).parent for p in wanted if p is not None]
    if config.events.snapshots is not None:
        folders.append(Path(config.events.snapshots))
    seen: dict[int, list[Path]] = {}
    for folder in folders:
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent  # not made yet: the filesystem it will be made on
        with contextlib.suppress(OSError):
            shown = seen.setdefault(os.stat(folder).st_dev, [])
            if folder not in shown:
                shown.append(folder)
    checks = []
    for shown in seen.values():
        where = ", ".join(str(folder) for folder in shown)
        found = storage_check(shown[0])
        if found is not None:
            problem, fix = found
            checks.append(
                Check(
                    "storage",
                    "fail",
                    f"{where}: {problem}: the door records no event and no enrolment is "
                    "written until then",
                    fix,
                )
            )
            continue
        free = free_bytes(shown[0])
        status = "ok" if free >= LOW_SPACE_BYTES else "warn"
        fix = "" if status == "ok" else f"free space on it (df -h {shown[0]})"
        checks.append(Check("storage", status, f"{where}: {free / 1e6:,.0f} MB free", fix))
    return checks


def _events_checks(config: Config) -> list[Check]:
    """What the door will do with the event store and the snapshots folder the config names,
    by the rules the door itself applies when it opens them (edge_app/events.py)."""
    import stat

    from edge_app.events import refuse_untrusted, snapshots_folder_problem
    from edge_app.private_file import refuse_non_regular

    checks = []
    db = config.events.db
    if db is not None and not os.path.lexists(db):
        try:
            refuse_untrusted(Path(db))  # as the door does before creating it
        except ValueError as error:
            fix = "the door records no event there until this is fixed"
            checks.append(Check("events", "fail", str(error), fix))
        else:
            checks.append(Check("events", "ok", f"{db} does not exist yet: the door creates it"))
    elif db is not None:
        try:
            refuse_non_regular(Path(db))
            refuse_untrusted(Path(db))  # before SQLite reads it, as the door does
            mode = stat.S_IMODE(os.lstat(db).st_mode)
        except (ValueError, OSError) as error:
            checks.append(
                Check(
                    "events",
                    "fail",
                    str(error),
                    "the door records no event there until this is fixed",
                )
            )
        else:
            schema = _events_schema_check(Path(db))
            if schema.status == "ok" and mode & 0o077:
                schema = Check(
                    "events",
                    "warn",
                    f"{db} is mode {mode:o}: others may read who came in",
                    "the door sets it to 600 when it opens it; or run `chmod 600` on it",
                )
            checks.append(schema)
    folder = config.events.snapshots
    if folder is not None:
        try:
            problem = snapshots_folder_problem(Path(folder))
        except OSError as error:
            problem = f"it cannot be looked at ({error.strerror})"
        if problem is not None:
            checks.append(
                Check(
                    "snapshots",
                    "warn",
                    f"{folder}: {problem}",
                    "until then the door records events without snapshots",
                )
            )
    return checks


READ_TIMEOUT = 2.0  # seconds a read may wait for the door's write to end


def _read_only(path: Path) -> sqlite3.Connection:
    """An SQLite file opened for reading only: nothing is created, migrated or changed."""
    return connect_read_only(path, READ_TIMEOUT)


# A file of a newer schema than this edge-app reads: what the newer one wrote stays as it is.
NEWER_GALLERY_FIX = (
    "upgrade edge-app to the version that wrote it (or a later one); or export the gallery "
    "with that version (`edge-app export`), move the gallery aside and `edge-app import` the "
    "export with this one"
)
NOT_OURS_FIX = "the door records no event there until then"
NEWER_EVENTS_FIX = (
    "upgrade edge-app to the version that wrote it (or a later one), or set [events] db to "
    "a new path; until then the door records no event in it"
)


def _events_schema_check(db: Path) -> Check:
    """Whether the door can use the events database at `db` (a regular file of ours), by the
    rules it applies when it opens it (edge_app.events.usable_schema), read
    without writing: the door migrates an older schema itself, and refuses a newer one."""
    from edge_app.events import SCHEMA_VERSION, usable_schema

    try:
        with closing(_read_only(db)) as connection:
            try:
                version = usable_schema(connection, db)
            except ValueError as error:  # a newer schema, or another application's file
                found = int(connection.execute("PRAGMA user_version").fetchone()[0])
                fix = NEWER_EVENTS_FIX if found > SCHEMA_VERSION else NOT_OURS_FIX
                return Check("events", "fail", str(error), fix)
            # Its pages too, not only its header: a damaged page fails every event the door
            # writes ("database disk image is malformed"), as an audit found doctor said OK.
            problems = [row[0] for row in connection.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                return Check(
                    "events",
                    "fail",
                    f"{db} is damaged (SQLite: {'; '.join(map(str, problems))})",
                    "move the file away (the door starts a new one) or restore it from a "
                    "backup: the door records no event in it until then",
                )
    except sqlite3.DatabaseError as error:
        if is_damage(error):
            return Check(
                "events",
                "fail",
                f"{db} is not an edge-app events database (SQLite: {error})",
                "set [events] db to another path, or move the file away: the door records "
                "no event there until then",
            )
        return Check(
            "events", "warn", f"{db} could not be read: {error}", "rerun doctor in a moment"
        )
    except OSError as error:
        return Check("events", "warn", f"{db} could not be read: {error.strerror or error}")
    if not (os.access(db, os.W_OK) and os.access(db.parent, os.W_OK)):
        return Check(
            "events",
            "warn",
            f"{db}: this user may not write it or its folder (SQLite's -wal file): a door "
            "running as this user records no event there",
            "run doctor as the door's user (sudo -u edge-app edge-app doctor); if it says so "
            "too, give the file and its folder to that user",
        )
    if version == SCHEMA_VERSION:
        return Check("events", "ok", f"{db}: events schema version {version}")
    return Check(
        "events",
        "ok",
        f"{db}: events schema version {version}: the door brings it to {SCHEMA_VERSION} "
        "when it opens it",
    )


def _gallery_schema(path: Path) -> int | None:
    """The schema version a gallery file says it has, read without writing (None when
    SQLite cannot read it)."""
    try:
        with closing(_read_only(path)) as db:
            return int(db.execute("PRAGMA user_version").fetchone()[0])
    except (sqlite3.Error, OSError):
        return None


def _gallery_checks(config: Config | None) -> list[Check]:
    from edge_app.errors import UserError, first_few
    from edge_app.gallery import SCHEMA_VERSION as GALLERY_SCHEMA
    from edge_app.gallery import Gallery, GalleryDamaged

    if config is None:
        return [Check("gallery", "warn", "not checked: its path comes from the invalid config")]
    path = Path(config.gallery.path)
    if not path.is_absolute():  # the other commands refuse it for the same reason (db_path)
        return [
            Check(
                "gallery",
                "warn",
                f"not checked: gallery.path {path} is relative to the folder the door runs in "
                f"(the service's: {DEFAULT_STATE_DIR}), which doctor cannot know",
                "give the config an absolute gallery.path",
            )
        ]
    try:
        if not path.exists():
            return [  # the door refuses to start without one ("no gallery at ...")
                Check(
                    "gallery",
                    "fail",
                    f"{path} does not exist yet: the door does not start without a gallery",
                    "edge-app enroll NAME PHOTO...",
                )
            ]
        found = path.stat().st_mode & 0o777
        # Narrows a mode found wider than 600; read-only where nothing can be written, as the
        # door opens it there (the storage row says why).
        from edge_app.storage import storage_problem

        with Gallery.open(path, read_only=storage_problem(path.parent) is not None) as gallery:
            people = gallery.people()
            several = gallery.looking_like_several()
        mode = path.stat().st_mode & 0o777
    except GalleryDamaged as error:  # the message says what to do: restore it
        return [Check("gallery", "fail", str(error), "restore the gallery, as the line says")]
    except (UserError, OSError) as error:
        from edge_app.advice import Advice, advised, config_message

        # The path is the config's gallery.path: doctor has no --db to pass (config_message).
        detail = config_message(error)
        version = _gallery_schema(path) if isinstance(error, UserError) else None
        if version is not None and version > GALLERY_SCHEMA:  # gallery.py refused it as newer
            return [Check("gallery", "fail", detail, NEWER_GALLERY_FIX)]
        said = advised(error)
        if said is not None and said.advice is Advice.NOT_A_GALLERY:
            # Not a gallery at all (empty, another file, another database): no owner or
            # permission makes it one.
            fix = "set gallery.path to the door's gallery, or restore it from an export or a backup"
            return [Check("gallery", "fail", detail, fix)]
        return [Check("gallery", "fail", detail, "check the file's owner and permissions")]
    status = "ok" if people and mode == 0o600 else "warn"
    fix = "" if people else "edge-app enroll NAME PHOTO..."
    if mode != 0o600:
        fix = f"chmod 600 {path} (biometric templates)"
    narrowed = f" (was {found:o}: narrowed now)" if found != mode else ""
    checks = [
        Check("gallery", status, f"{path}: {len(people)} people, mode {mode:o}{narrowed}", fix)
    ]
    if several:
        # The first few, as the lookalikes row: a gallery imported from a mixed source can
        # hold thousands, and one line of each would bury every other row.
        names = first_few([f"{name!r}: {odd} of {photos}" for name, photos, odd in several], 10)
        count = "1 person" if len(several) == 1 else f"{len(several)} people"
        checks.append(
            Check(
                "one person each",
                "warn",
                f"photos that look like someone else under one name, for {count} ({names}): "
                "each face lets in the name it is under",
                "edge-app remove NAME, then enrol NAME again from photos of that person only",
            )
        )
    return checks


DOOR_TIMEOUT = 3.0  # seconds the running door may take to answer


def door_check(socket: Path | None) -> Check:
    """The running door, asked through its control socket (`[hub] socket`): whether it runs,
    whether its camera delivers, and whether its picture shows anything (edge_app/picture.py).
    The door answers whoever may open the socket: root, or the service user."""
    from edge_app.control import ControlClient, ControlError, frame_age, frame_limit
    from edge_app.hub.door import judge

    if socket is None:
        return Check(
            "door",
            "warn",
            'hub.socket = "": the running door cannot be asked',
            "set [hub] socket to see the running door here",
        )
    try:
        status = ControlClient(socket, timeout=DOOR_TIMEOUT).status()
    except (ControlError, OSError) as error:
        if "ermission denied" in str(error):
            fix = "ask as the service user: sudo -u edge-app edge-app doctor"
        else:
            fix = "start the door: sudo systemctl start edge-app"
        return Check("door", "warn", str(error), fix)
    # The door's own limit for fresh frames (hub.stale_seconds), judged as the hub judges it.
    health = judge(status, frame_limit(status))
    age = frame_age(status)
    running = f"running, source {status.get('source') or '-'}, " + (
        "no camera frame yet" if age is None else f"last frame {age:.1f} s ago"
    )
    if not health.frames:
        return Check("door", "warn", running, "check the camera: journalctl -u edge-app")
    if health.picture is not None:
        return Check(
            "door", "warn", f"{running}; camera picture {health.picture}", health.error or ""
        )
    return Check("door", "ok", f"{running}; liveness {status.get('liveness') or '-'}")


def _format(check: Check) -> str:
    """One check for a terminal: status, area and detail (its continuation lines, such as a
    config's list of problems, indented under it), then the fix."""
    # Details carry text from outside (config keys and paths, names): their control
    # characters are shown as \xNN, so none can clear the screen or forge a line.
    first, *rest = [shown(line) for line in check.detail.splitlines()] or [""]
    lines = [f"{check.status.upper():5} {check.area:16} {first}"]
    lines += [f"{'':22}{line.strip()}" for line in rest]
    if check.fix:
        lines.append(f"{'':22}-> {shown(check.fix)}")
    return "\n".join(lines)


def collect_checks(
    config_path: Path | None = None,
    models: Path | None = None,
    door_socket: Path | None = None,
) -> list[Check]:
    """Every check, as data: the CLI prints them, the web page's health view shows them.
    door_socket: where to ask the running door (default: the config's [hub] socket)."""
    versions = ", ".join(
        f"{p} {_version(p)}" for p in ("numpy", "opencv-python-headless", "gpiozero", "edge-door")
    )
    checks = [Check("python", "ok", f"{platform.python_version()} ({versions})")]
    checks += _runtime_checks()
    from edge_app.config import boot_pull_up_warning

    config_checks, config = _config_checks(config_path)
    models = models or (config.models.dir if config is not None else None)
    checks += _model_checks(models)
    if config is None:  # its camera source is not known either: the default one is looked at
        checks.append(_camera_check("auto"))
        checks.append(
            Check("gpio", "warn", "not checked: its factory and pin come from the invalid config")
        )
    else:
        checks += _device_checks(
            config.camera.source,
            config.gpio.factory,
            boot_pull_up_warning(config.gpio.pin, config.gpio.active_high),
        )
    released = _released_outputs_check(SYS_ROOT)
    if released is not None:
        checks.append(released)
    checks += config_checks
    engine = None
    if config is not None and not any(c.area == "models" and c.status == "fail" for c in checks):
        cascade, engine = _cascade_checks(models, config)
        checks += cascade
        if engine is not None:
            checks.append(_liveness_check(config, engine))
    gallery = _gallery_checks(config)
    checks += gallery
    memory = None
    if config is not None:
        site, memory = _site_memory_checks(config)
        checks += site
    gallery_path = Path(config.gallery.path) if config is not None else None
    readable = gallery_path is not None and gallery_path.is_absolute() and gallery_path.is_file()
    if engine is not None and config is not None and readable and gallery[0].status != "fail":
        checks += _lookalike_checks(config, engine, memory)
    if config is not None:
        checks.append(clock_check(config))
        checks += _storage_checks(config)
        checks += _events_checks(config)
        checks.append(door_check(door_socket or config.hub.socket))
    if config_path is not None and config_path != DEFAULT_CONFIG:
        checks = [replace(c, fix=for_config(c.fix, config_path)) for c in checks]
    return checks


# The commands a fix names that read the config: run as written they would act on the door
# of the default config, not the one these checks read (--config).
_CONFIG_COMMANDS = re.compile(
    r"\bedge-app (enroll|remove|export|import|doctor|site forget|site show)\b"
)


def for_config(fix: str, config_path: Path) -> str:
    """`fix` with --config PATH given to each edge-app command it names."""
    return _CONFIG_COMMANDS.sub(
        lambda found: f"{found.group(0)} --config {shlex.quote(str(config_path))}", fix
    )


def _run(args: argparse.Namespace) -> int:
    checks = collect_checks(args.config, args.models)
    if args.json:
        # printable: the bytes of a file name that are not UTF-8 as \xNN, not lone surrogates
        rows = [
            {key: printable(v) if isinstance(v, str) else v for key, v in asdict(c).items()}
            for c in checks
        ]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        sys.stdout.write("".join(_format(check) + "\n" for check in checks))
    return 1 if any(c.status == "fail" for c in checks) else 0
