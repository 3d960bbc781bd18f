"""`edge-app enroll`: add a person to the gallery from photos or from the camera."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from edge_app.arg_types import empty_path_problem
from edge_app.commands import door_config, name_words, printable, shown
from edge_app.commands.identify import add_db_argument, add_engine_arguments, db_path, open_engine
from edge_app.enroll import CAMERA_SAMPLES, CAMERA_TIMEOUT_S
from edge_app.errors import UserError
from edge_app.gallery import MAX_SAMPLES_PER_PERSON

if TYPE_CHECKING:
    from pathlib import Path

    from edge_app.config import CameraConfig, RecognitionConfig
    from edge_app.enroll import EnrollResult

log = logging.getLogger(__name__)

EPILOG = """\
Every photo must show one face clearly larger than any other (that face is enrolled), large
enough, sharp and roughly frontal. If any photo fails, nothing is enrolled, the gallery is
left exactly as it was, and every failing photo is listed with its reason. Photos that nearly
repeat a sample already there are skipped.
Only the embeddings, the photos' SHA-256 and the time are stored; face crops only with
--keep-crops. With --camera, frames not judged live by the liveness check (a printed photo or
a screen held up to the camera) are passed over, when the models include it.

examples:
  edge-app enroll "Alice Martin" alice1.jpg alice2.jpg alice3.jpg
  edge-app enroll --db ./gallery.db Bob photos/bob/          # every image in the folder
  edge-app enroll --add Bob bob-new-glasses.jpg              # more photos of someone enrolled
  edge-app enroll --camera --samples 5 Carol                 # stand in front of the camera
  edge-app enroll --no-access --camera Dan                   # a known visitor: never let in
"""


# The longest --timeout: an enrolment at the camera takes seconds; more than an hour is a
# typo (and beyond threading's TIMEOUT_MAX, about 9.2e9 s, the timer thread failed).
MAX_CAMERA_TIMEOUT_S = 3600.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "enroll",
        help="enrol a person from photos or the camera",
        description="Enrol a person: quality-check their photos and store their embeddings.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help="the person's name (unique in the gallery)")
    parser.add_argument(
        "images", nargs="*", metavar="IMAGE", help="photo files or folders (not with --camera)"
    )
    add_db_argument(parser)
    parser.add_argument(
        "--add", action="store_true", help="add samples to a person already enrolled"
    )
    parser.add_argument(
        "--no-access",
        action="store_true",
        help="enrol a known visitor: recognised and reported by name, never let in (and "
        "what the door learns of its camera from their face protects a household of one; "
        "docs/GALLERY.md)",
    )
    parser.add_argument(
        "--keep-crops",
        action="store_true",
        help="also store a JPEG of each face (off by default: biometric data stays minimal)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print the result as JSON; when nothing is enrolled, {"enrolled": false, "error": '
        '..., "refused": [each photo refused]} (exit code 2)',
    )
    camera = parser.add_argument_group("camera")
    camera.add_argument("--camera", action="store_true", help="collect good frames from the camera")
    camera.add_argument(
        "--source",
        type=_source,
        metavar="SPEC",
        help="camera: auto, picamera2, a device index or path, or a stream URL (default: the "
        "door's own [camera], from --config or the default config; auto without one)",
    )
    camera.add_argument(
        "--samples",
        type=int,
        metavar="N",
        help=f"frames to collect, 1 to {MAX_SAMPLES_PER_PERSON} (default: {CAMERA_SAMPLES})",
    )
    camera.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help=f"give up after S seconds, writing nothing; at most {MAX_CAMERA_TIMEOUT_S:.0f} "
        f"(default: {CAMERA_TIMEOUT_S:.0f})",
    )
    add_engine_arguments(parser)
    parser.set_defaults(handler=run, changes="the gallery")


def _source(text: str) -> int | str:
    # Empty, it would be the current folder as a folder of images (an unset shell variable).
    problem = empty_path_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return int(text) if text.isascii() and text.isdigit() else text


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UserError as error:
        if args.json:  # a script reads why on stdout too, whatever stopped it; exit code 2
            sys.stdout.write(_json_refusal(args.name, error))
        raise


def _run(args: argparse.Namespace) -> int:
    from edge_app import enroll
    from edge_app.images import image_files

    if not args.camera:
        _name_not_a_path(args.name, args.images)
    db = db_path(args, create=not args.add)
    if args.camera and args.images:
        raise UserError("give photos or --camera, not both")
    if not args.camera and not args.images:
        raise UserError("no photos given: pass IMAGE files or folders, or --camera")
    if args.add and args.no_access:
        raise UserError(
            "--no-access applies to a new person; to change someone enrolled, run "
            f"`edge-app access {name_words(args.name)} no`"
        )
    camera_only = [
        option
        for option, value in (
            ("--source", args.source),
            ("--samples", args.samples),
            ("--timeout", args.timeout),
        )
        if value is not None
    ]
    if camera_only and not args.camera:
        raise UserError(f"{', '.join(camera_only)}: for --camera only; photos are used as given")
    if args.samples is not None and not 1 <= args.samples <= MAX_SAMPLES_PER_PERSON:
        raise UserError(
            f"--samples {args.samples}: must be 1 to {MAX_SAMPLES_PER_PERSON}, the most one "
            "person may have"
        )
    if args.timeout is not None and not 0 < args.timeout <= MAX_CAMERA_TIMEOUT_S:
        raise UserError(
            f"--timeout {args.timeout}: must be a number of seconds above 0, at most "
            f"{MAX_CAMERA_TIMEOUT_S:.0f} (an hour)"
        )
    # Name and folder checks first: loading the models takes seconds, a typo should not.
    enroll.existing_samples(db, args.name, args.add)
    camera = _door_camera(args) if args.camera else None
    if camera is not None:
        _a_camera_is_there(camera.source)
    images = [] if args.camera else image_files(args.images)
    engine = open_engine(args)
    options = {
        "add": args.add,
        "keep_crops": args.keep_crops,
        "access": not args.no_access,
        "recognition": _door_recognition(args),
    }
    result = _enroll(args, db, engine, camera, images, options)
    if result.lookalike:
        log.warning(
            "%s; if it is one person, remove this name (edge-app remove %s) and add the photos "
            "to the other (edge-app enroll --add %s PHOTO...); if two (twins, siblings), "
            "nothing to do",
            result.lookalike,
            name_words(result.name),
            name_words(result.lookalike_of),
        )
    sys.stdout.write(_json(result) if args.json else _text(result))
    return 0


def _door_recognition(args: argparse.Namespace) -> RecognitionConfig:
    """The [recognition] of the door whose gallery this is (commands.door_config); the
    defaults for a gallery named by --db alone."""
    from edge_app.config import RecognitionConfig

    config = door_config(args)
    return RecognitionConfig() if config is None else config.recognition


def _door_camera(args: argparse.Namespace) -> CameraConfig:
    """The door's `[camera]` (--config, else the default config file; the defaults without
    one), its source replaced by --source when given: a person is enrolled from the camera
    the door will see them with, at its size and rate. With --source and no --config the
    default config is not read (a user who may not read the door's config names a camera
    of their own)."""
    from dataclasses import replace

    from edge_app.config import CameraConfig, load_config

    if args.source is not None and args.config is None:
        return CameraConfig(source=args.source)
    camera = load_config(args.config).camera
    return camera if args.source is None else replace(camera, source=args.source)


def _a_camera_is_there(source: int | str) -> None:
    """UserError when `source` names a camera that is not there at all: no Pi camera and no
    /dev/videoN for "auto", no /dev/videoN for an index. The door waits for a camera to
    come back; someone standing in front of it to enrol should hear at once, not after the
    timeout of warnings a camera that never opens gives."""
    from pathlib import Path

    from edge_app.camera import pi_camera_attached

    index = 0 if source == "auto" else source
    if not isinstance(index, int) or Path(f"/dev/video{index}").exists():
        return
    if source == "auto" and pi_camera_attached():
        return
    what = "no Pi camera is attached and " if source == "auto" else ""
    raise UserError(
        f"no camera: {what}/dev/video{index} does not exist; connect one, or give --source "
        "(another device index, a /dev path, a stream URL, or a video file or folder)"
    )


def _name_not_a_path(name: str, images: list[str]) -> None:
    """UserError for a NAME left out (the first photo taken for it: its photos would be
    enrolled, with access, under a file's path) or a name of several words not quoted (its
    last words taken for photos that do not exist)."""
    from pathlib import Path

    from edge_app.images import IMAGE_SUFFIXES

    looks_like_a_path = "/" in name or Path(name).suffix.lower() in IMAGE_SUFFIXES
    if looks_like_a_path and Path(name).exists():
        kind = "folder" if Path(name).is_dir() else "file"
        raise UserError(
            f"{shown(name)} is a {kind}, given where the person's NAME goes: "
            f'`edge-app enroll NAME PHOTO...`, e.g. `edge-app enroll "Alice Martin" '
            f"{shlex.quote(name)}`"
        )
    words = []
    for image in images:
        if "/" in image or Path(image).suffix or Path(image).exists():
            break
        words.append(image)  # no path, no suffix, nothing there: a word of the name?
    if words:
        whole = " ".join([name, *words])
        raise UserError(
            f"{shown(words[0])}: no such file or folder; a name of several words is quoted: "
            f"`edge-app enroll {name_words(whole)} PHOTO...`"
        )


def _enroll(
    args: argparse.Namespace,
    db: Path,
    engine: Any,
    camera: CameraConfig | None,
    images: list[Path],
    options: dict[str, Any],
) -> EnrollResult:
    from edge_app import enroll

    if camera is not None:
        from edge_app.camera import open_camera

        live_threshold = _live_threshold(engine)
        source = open_camera(camera)
        # The camera's own defaults (edge_app.enroll) for what the command line leaves out.
        limits = {"count": args.samples, "timeout": args.timeout}
        try:
            result = enroll.enroll_camera(
                db,
                engine,
                args.name,
                (frame.image for frame in source.frames()),
                **{key: value for key, value in limits.items() if value is not None},
                progress=not args.json,
                live_threshold=live_threshold,
                stop=source.close,
                **options,
            )
        finally:
            source.close()
    else:
        result = enroll.enroll_photos(db, engine, args.name, images, progress=True, **options)
    return result


def _live_threshold(engine: Any) -> float | None:
    """Camera frames must be judged live (the manifest's threshold) when the models can tell."""
    from edge_app.liveness_rule import manifest_threshold

    if not engine.has_liveness:
        log.warning(
            "camera frames are not checked for liveness: the models have no liveness model "
            "(docs/LIVENESS.md says how to build them)"
        )
        return None
    return manifest_threshold(engine.manifest)


def _json(result: EnrollResult) -> str:
    data = asdict(result)
    data["added"] = [printable(source) for source in result.added]
    data["skipped"] = [
        {"source": printable(p.source), "reason": p.reason.value, "message": printable(p.message)}
        for p in result.skipped
    ]
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _json_refusal(name: str, error: UserError) -> str:
    """--json when nothing was enrolled: what stopped it (a name taken, a folder without
    photos...), and each photo refused with its reason."""
    from edge_app.enroll import EnrollError

    problems = error.problems if isinstance(error, EnrollError) else []
    data = {
        "name": printable(name),
        "enrolled": False,
        "error": printable(str(error).splitlines()[0] if str(error) else ""),
        "refused": [
            {
                "source": printable(p.source),
                "reason": p.reason.value,
                "message": printable(p.message),
            }
            for p in problems
        ],
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _text(result: EnrollResult) -> str:
    lines = [f"skipped {shown(p.source)}: {shown(p.message)}" for p in result.skipped]
    if result.added:
        verb = "added to" if not result.created else "enrolled"
        lines.append(
            f"{verb} {result.name!r}: {len(result.added)} new sample(s), {result.samples} in total"
        )
    else:
        lines.append(f"nothing new for {result.name!r}; {result.samples} sample(s) as before")
    return "\n".join(lines) + "\n"
