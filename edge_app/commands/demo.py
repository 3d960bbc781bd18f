"""`edge-app demo`: the whole door on the bundled clip, with a simulated relay.

It enrols the person in demo/enroll into a throw-away gallery, runs the real daemon on
demo/door.mp4 with gpiozero's MockFactory as the relay, prints every event as a JSON line,
and ends with the relay pin's actual state history. Nothing outside a temporary folder is
touched, and no camera, GPIO or ../shared data is needed.

The clip plays at its own frame rate, as a camera would deliver it (about 13 s), so the
relay pulse and the clip keep one clock: the strike opens, stays open for gpio.pulse_seconds
and relocks while the clip goes on. --fast plays it as fast as the door can process it; on a
fast machine the clip then ends before the pulse does, and stopping the door relocks the
strike (reason "close").

The clip is made of still photos pasted into frames. The liveness models are trained and
measured on printed photos held up to a camera (docs/LIVENESS.md); a digitally composited
clip is not that attack, and how the check scores one is not measured (in "require" mode
this clip unlocks too). So the demo runs the check in "log" mode: its scores are reported in
the events, and no decision depends on them (at a real door the default is "require"). With
models built without a liveness model (--models) it runs in "off" mode, and says so.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from edge_app.arg_types import checkout_default, nonempty_path
from edge_app.paths import REPO_ROOT

DEMO_DIR = REPO_ROOT / "demo"
EXAMPLES = """examples:
  edge-app demo                          # the bundled clip, at its own frame rate
  edge-app demo --fast                   # as fast as the door can process it
  edge-app demo --clip ./my-door.mp4 --enroll ./people   # your clip, your people
  edge-app demo --clip ./frames/         # a folder of photos as the camera
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the door end to end on the bundled clip with a simulated relay",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--clip",
        type=nonempty_path,
        **checkout_default(
            DEMO_DIR / "door.mp4",
            "video file, or folder of photos (played in name order), to use as the camera",
        ),
    )
    parser.add_argument(
        "--enroll",
        type=nonempty_path,
        **checkout_default(
            DEMO_DIR / "enroll",
            "folder with one sub-folder of photos per person to enrol",
        ),
    )
    parser.add_argument(
        "--models", type=nonempty_path, help="models folder (default: the int8 models)"
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="play the clip as fast as the door can process it, not at its own frame rate",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from gpiozero.pins.mock import MockFactory

    from edge_app.config import Config, apply_overrides
    from edge_app.daemon import Daemon
    from edge_app.engine import Engine
    from edge_app.enroll import enroll_photos

    _check_clip(args.clip)
    people = _people(args.enroll)
    engine = Engine.open(args.models, backend="auto", cascade="auto")
    # A composited clip is not the printed-photo attack the check is measured on: show its
    # scores without depending on them (module docstring); without a liveness model "log" is
    # refused, so the check is off.
    liveness = "log" if engine.has_liveness else "off"
    out = sys.stdout
    with tempfile.TemporaryDirectory(prefix="edge-app-demo.") as scratch:
        gallery = Path(scratch) / "gallery.db"
        for person in people:
            result = enroll_photos(gallery, engine, person.name, [person])
            out.write(f"enrolled {person.name}: {len(result.added)} photos\n")
        overrides = {
            "camera.source": str(args.clip),
            "camera.realtime": not args.fast,
            "gallery.path": str(gallery),
            "gpio.factory": "mock",
            "events.jsonl": "-",
            "events.db": str(Path(scratch) / "events.db"),
            "events.retention_days": 0,  # a database that lives for one run: nothing to age
            "liveness.mode": liveness,
            # The demo's own control socket, private to this run (not /run/edge-app).
            "hub.socket": str(Path(scratch) / "door.sock"),
        }
        if args.models:
            overrides["models.dir"] = str(args.models)
        config = apply_overrides(Config(), overrides)
        factory = MockFactory()
        pace = "as fast as the door can" if args.fast else "at its own frame rate"
        out.write(
            f"playing {args.clip.name} as the camera, {pace}; relay on mock GPIO{config.gpio.pin}\n"
        )
        if liveness == "log":
            out.write(
                'liveness mode "log": the check is measured on printed photos held to a camera, '
                "not on photos pasted into a clip like this one, so its scores are shown, not "
                "relied on (a real door requires it: docs/LIVENESS.md)\n"
            )
        else:
            out.write(
                f'liveness mode "off": the models in {engine.models_dir} have no liveness model, '
                "so liveness is not checked (a real door needs one: docs/LIVENESS.md)\n"
            )
        out.flush()
        # Each event is printed once, as its JSON line: not also as the event log's INFO line.
        logging.getLogger("edge_app.events").setLevel(logging.WARNING)
        door = Daemon(config, engine=engine, pin_factory=factory, reloads=False)
        code = door.run()
        states = factory.pin(config.gpio.pin).states
        out.write(relay_history(states, config.gpio.pin, config.gpio.active_high))
    if code == 0 and door.stopped_by is not None:
        return (
            128 + door.stopped_by
        )  # stopped before the clip ended: 130 for Ctrl-C, as a shell says
    return code


def _people(enroll: Path) -> list[Path]:
    """--enroll's sub-folders, one per person; UserError when there are none or the folder
    cannot be read."""
    from edge_app.errors import UserError

    try:
        people = sorted(p for p in enroll.iterdir() if p.is_dir()) if enroll.is_dir() else []
    except OSError as error:
        raise UserError(f"--enroll {enroll}: cannot read it ({error.strerror or error})") from None
    if not people:
        raise UserError(f"--enroll {enroll}: expected one folder of photos per person")
    return people


def _check_clip(clip: Path) -> None:
    """Refuse, before the models load, a --clip the camera could not play: what the door's
    camera.source takes from a file, a video or a folder of photos."""
    from edge_app.errors import UserError

    try:
        _check_clip_kind(clip)
    except OSError as error:  # out of reach: no permission, a name too long, ...
        raise UserError(f"--clip {clip}: cannot read it ({error.strerror or error})") from None


def _check_clip_kind(clip: Path) -> None:
    from edge_app.errors import UserError
    from edge_app.images import IMAGE_SUFFIXES, expand_image_paths

    fix = f"give a video file (such as {DEMO_DIR / 'door.mp4'}) or a folder of photos"
    if clip.is_dir():
        if next(expand_image_paths([clip]), None) is None:
            raise UserError(
                f"--clip {clip}: a folder with no photos ({', '.join(sorted(IMAGE_SUFFIXES))} "
                f"files) in it; {fix}"
            )
    elif not clip.exists():
        raise UserError(f"--clip {clip}: no such file or folder; {fix}")
    elif not clip.is_file():
        raise UserError(f"--clip {clip}: not a regular file (a device, pipe or socket); {fix}")


def relay_history(states: list[Any], pin: int, active_high: bool = True) -> str:
    """gpiozero MockPin.states as two lines: each change with its time in seconds from the
    relay's set-up (gpiozero records seconds since the previous change), then how long the
    strike was held open each time (high, or low for an active-low relay)."""
    at = 0.0
    opened: float | None = None
    changes: list[tuple[float, str]] = []
    spans: list[str] = []
    for since_previous, level in states:
        at += since_previous
        changes.append((round(at, 2), "high" if level else "low"))
        if bool(level) == active_high and opened is None:
            opened = at
        elif bool(level) != active_high and opened is not None:
            spans.append(f"{at - opened:.2f} s")
            opened = None
    if opened is not None:
        spans.append("still open")
    line = f"relay pin GPIO{pin} history (seconds from start, level): {changes}\n"
    return line + f"strike held open {len(spans)} time(s): {', '.join(spans) or '-'}\n"
