"""`edge-app run`: the door daemon (what the systemd unit starts)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

from edge_app import paths
from edge_app.commands import config_path
from edge_app.config import (
    GPIO_FACTORIES,
    GPIO_PIN_MAX,
    PULSE_SECONDS_MAX,
    PULSE_SECONDS_MIN,
    Config,
    ConfigError,
    GpioConfig,
)
from edge_app.errors import UserError
from edge_app.manifest import recognition_range
from edge_app.paths import DEFAULT_CONFIG
from edge_app.policy import DENIED_REASONS
from edge_app.runtime import BACKENDS, MAX_THREADS

log = logging.getLogger(__name__)

# A door started by systemd (NOTIFY_SOCKET) whose config is refused says so, then waits this
# long, or until the config file changes, before it exits for systemd to start it again: a
# config does not fix itself, and restarting every RestartSec (3 s) filled the journal with
# the same lines (systemd's RestartSteps=, which would space the restarts out, needs 254;
# Debian 12 has 252).
CONFIG_REFUSED_WAIT = 60.0
CONFIG_POLL = 1.0

EPILOG = f"""\
Watches the camera, recognises enrolled people and pulses the door relay. Settings come from
the config file ({DEFAULT_CONFIG} by default; a missing default file means the defaults);
each flag below overrides its config key. A video file or a folder of images as --source
ends the run at its end, which is how to try the door on a recording: as fast as the door
can process it, or with --realtime at its own frame rate, as a camera delivers frames (then
a relay pulse and the recording share one clock).

Started by systemd, a door whose config is refused logs why, shows it in `systemctl
status` and exits once the file changes (or after {CONFIG_REFUSED_WAIT:.0f} s), for systemd
to start it again.

signals: SIGTERM/SIGINT lock the relay at once and stop within a frame; SIGHUP reopens the
--events file (logrotate) and reloads the config and the gallery without closing the camera
(all of it or, if anything in it is invalid, none of it). The gallery is also reloaded by
itself when `edge-app enroll` or `edge-app remove` changes it. A failing events sink (full
disk, corrupt events.db) is logged and retried; the door keeps working.

examples:
  edge-app run                                   # as installed: /etc/edge-app/config.toml
  edge-app run --check-config                    # is that config valid? (after an edit)
  edge-app run --config ./door.toml --source 0   # first USB camera
  edge-app run --source clip.mp4 --gpio mock --db ./gallery.db --events - --events-db ''

events (--events FILE, "-" for standard output): one JSON object per line, e.g.
  {{"time": "2024-05-01T08:12:03.120+00:00", "type": "unlock", "name": "Alice",
   "score": 0.8123, "track": 4, "source_time": 12.3, "reason": null, "snapshot": null,
   "liveness": 0.91, "geometry": "depth"}}
types: recognized, unknown, unlock, denied (reason {", ".join(DENIED_REASONS)}), spoof (a
face judged not live), relock (reason timeout or close). See docs/DAEMON.md.
"""

# flag destination -> config key
OVERRIDES = {
    "source": "camera.source",
    "realtime": "camera.realtime",
    "models": "models.dir",
    "backend": "models.backend",
    "threads": "models.threads",
    "min_face": "detection.min_face",
    "threshold": "recognition.threshold",
    "margin": "recognition.margin",
    "db": "gallery.path",
    "gpio": "gpio.factory",
    "pin": "gpio.pin",
    "pulse": "gpio.pulse_seconds",
    "events": "events.jsonl",
    "events_db": "events.db",
    "snapshots": "events.snapshots",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the door: camera, recognition, relay (the systemd service)",
        description="Run the door daemon.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=config_path, metavar="PATH", help="TOML config file")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="check the config (with the flags below) and the models it names as the door's "
        "start would, say whether the door would start, and exit: 0 it would, 2 not; opens "
        "no camera, pin or gallery, and runs the models on the CPU",
    )
    parser.add_argument(
        "--installed-models",
        type=Path,
        metavar="DIR",
        help="with --check-config: check DIR in place of the installed models, for a config "
        "that sets no models.dir (the installer checks an upgrade's models before it puts "
        "them in place)",
    )
    parser.add_argument(
        "--source",
        metavar="SPEC",
        help='camera: "auto", "picamera2", a device index, /dev/videoN, a URL, a video file '
        "or a folder of images",
    )
    parser.add_argument(
        "--realtime",
        action="store_const",
        const=True,
        help="play a video file or folder --source at its own frame rate, not as fast as "
        "it can be read",
    )
    parser.add_argument("--db", metavar="PATH", help="gallery database")
    parser.add_argument(
        "--gpio", choices=GPIO_FACTORIES, help='pin factory; "mock" simulates the relay'
    )
    parser.add_argument(
        "--pin",
        type=int,
        metavar="N",
        help=f"BCM GPIO number of the relay, 0-{GPIO_PIN_MAX} (default: gpio.pin, "
        f"{GpioConfig().pin})",
    )
    parser.add_argument(
        "--pulse",
        type=float,
        metavar="SECONDS",
        help=f"unlock pulse length, {PULSE_SECONDS_MIN:g} to {PULSE_SECONDS_MAX:g} s (default: "
        f"gpio.pulse_seconds, {GpioConfig().pulse_seconds:g})",
    )
    parser.add_argument(
        "--events", metavar="FILE", help='also write events as JSON lines ("-" = stdout)'
    )
    parser.add_argument(
        "--events-db", metavar="PATH", help="SQLite events database ('' = log only)"
    )
    parser.add_argument("--snapshots", metavar="DIR", help="save face crops of decisions here")
    models = parser.add_argument_group("models")
    models.add_argument("--models", metavar="DIR", help="models folder")
    models.add_argument("--backend", choices=BACKENDS, help="where the models run")
    models.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help=f"CPU threads, 1-{MAX_THREADS} (default: models.threads, else all cores)",
    )
    models.add_argument(
        "--min-face",
        type=int,
        metavar="PX",
        help="smallest face to detect, in pixels (default: detection.min_face, else the models')",
    )
    models.add_argument(
        "--threshold",
        type=float,
        help=f"score to accept a match, {recognition_range('threshold')} (default: "
        "recognition.threshold, else the models' rule)",
    )
    models.add_argument(
        "--margin",
        type=float,
        help=f"required lead over the second best person, {recognition_range('margin')} "
        "(default: recognition.margin, else the models' rule)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edge_app.config import door_config
    from edge_app.daemon import Daemon

    overrides = {key: getattr(args, dest) for dest, key in OVERRIDES.items()}
    if args.installed_models is not None and not args.check_config:
        raise UserError("--installed-models is for --check-config: give both, or neither")
    try:
        config = door_config(args.config, overrides)
    except ConfigError as error:
        if args.check_config or not os.environ.get("NOTIFY_SOCKET"):
            raise
        log.error("%s", error)
        _wait_for_a_new_config(args.config or DEFAULT_CONFIG, str(error))
        return 2
    if args.check_config:
        from edge_app.camera import recording_problem
        from edge_app.daemon import check_models
        from edge_app.logs import quieted
        from edge_app.manifest import no_models_folder

        # A ConfigError above is the "not valid" answer: one line and exit 2, as at a start.
        problem = recording_problem(config.camera.source)
        if problem is not None:  # the start would refuse it, once the models are loaded
            named = "--source" if args.source is not None else "camera.source"
            raise UserError(f"{named}: {problem}")
        models = config.models.dir
        if models is not None and not models.is_dir():  # a typo: the start would refuse it
            named = "--models" if args.models is not None else "models.dir"
            raise UserError(f"{named}: {no_models_folder(models)}")
        installed = models is None or models.resolve() == paths.INSTALLED_MODELS.resolve()
        if installed and args.installed_models is not None:
            models = args.installed_models  # the upgrade's models, staged beside the installed
        elif models is None:
            models = paths.default_models_dir()
        _check_folders(config, args)
        with quieted({"edge_app": logging.WARNING}):  # the answer, and what is wrong
            check_models(config, models)
        return _say_valid(args.config)
    # A door started from the default file reads that file at each reload: one gone by then
    # is refused as a --config one is, rather than reloaded as the defaults (which dropped
    # the file's allowed hours and access rules without a word).
    config_path = args.config
    if config_path is None and paths.DEFAULT_CONFIG.exists():
        config_path = paths.DEFAULT_CONFIG
    daemon = Daemon(config, config_path=config_path, overrides=overrides)
    try:
        code = daemon.run()
    except UserError:  # a refusal, in its own words (the daemon words a gallery's for its config)
        raise
    except Exception:
        # systemd restarts the door (Restart=always); the traceback goes to the journal.
        log.exception("door stopped on an unexpected error; relay released")
        return 1
    # systemd's stop (SIGTERM) is a stop asked for: 0. Ctrl-C at a terminal exits 130, as a
    # shell reports it and as every other command does.
    if code == 0 and daemon.stopped_by == signal.SIGINT:
        return 128 + signal.SIGINT
    return code


def _check_folders(config: Config, args: argparse.Namespace) -> None:
    """The gallery and the events database as the door checks them when it opens them
    (their own refuse_untrusted, which open nothing): a file others may change or a folder
    any user (or another group) may write, the door refuses for the gallery (it does not
    start; nor on a gallery.path that is no SQLite file) and for the events (it records none
    in the database). A relative path is the door's working folder's, which is not known
    here. A refusal names the flag that gave the path, else the config's key, and advises
    changing that."""
    from edge_app import events, gallery
    from edge_app.advice import config_message

    places = [("db", config.gallery.path, gallery.refuse_untrusted)]
    if config.events.db is not None:
        places.append(("events_db", config.events.db, events.refuse_untrusted))
    for dest, path, check in places:
        if not Path(path).is_absolute():
            continue
        try:
            check(Path(path))
        except (ValueError, UserError, OSError) as error:
            if getattr(args, dest) is not None:
                raise UserError(f"--{dest.replace('_', '-')}: {error}") from None
            raise UserError(f"{OVERRIDES[dest]}: {config_message(error)}") from None


def _wait_for_a_new_config(path: Path, why: str) -> None:
    """A refused config under systemd: say it in `systemctl status`, then wait until the
    file changes (written, replaced, created or removed) or CONFIG_REFUSED_WAIT has passed.
    The pin is locked (ExecStartPre) and unclaimed; SIGTERM's default action ends the wait."""
    import sdnotify

    first = why.splitlines()[0] if why else "invalid"
    sdnotify.SystemdNotifier().notify(f"STATUS=config refused, waiting for it to change: {first}")
    seen = _file_state(path)
    deadline = time.monotonic() + CONFIG_REFUSED_WAIT
    while time.monotonic() < deadline:
        time.sleep(min(CONFIG_POLL, max(0.0, deadline - time.monotonic())))
        if _file_state(path) != seen:
            log.info("config changed: exiting for systemd to start the door with it")
            return


def _file_state(path: Path) -> tuple[int, int, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def _say_valid(path: Path | None) -> int:
    """`run --check-config`'s answer for a config the door would start with."""
    shown = path if path is not None else paths.DEFAULT_CONFIG
    if path is None and not shown.exists():
        sys.stdout.write(f"no config file at {shown}: the door would start with the defaults\n")
    else:
        sys.stdout.write(f"{shown}: valid; the door would start with it\n")
    return 0
