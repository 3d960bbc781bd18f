"""`edge-app identify`: who is in these photos, according to the gallery.

Also home of the engine and match options that `enroll` shares.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from functools import partial
from pathlib import Path
from typing import Any

from edge_app import paths
from edge_app.arg_types import checked_number, nonempty_path
from edge_app.cascade_choice import CASCADES
from edge_app.commands import config_path, file_path, printable, shown
from edge_app.config import AGGREGATES, LOOKALIKE_MODES
from edge_app.errors import UserError
from edge_app.manifest import recognition_problem, recognition_range
from edge_app.runtime import BACKENDS

log = logging.getLogger(__name__)

EPILOG = """\
Scores are cosine similarities between the face and the best-matching enrolled person
(aggregated over their samples); with the models' cohort normalisation (docs/COHORT.md) they
stay on the cosine scale, and a very strong match can score above 1. A face is named when
its score reaches the threshold and beats the second-best person by the margin; otherwise it
is "unknown" (null in JSON), still with the closest person's score. Threshold, margin and
aggregation default to the values derived for the models (the manifest's "recognition" block).

examples:
  edge-app identify visitor.jpg
  edge-app identify --db ./gallery.db --json photos/ > who.json
  edge-app identify --threshold 0.6 --margin 0.05 door-snapshot.png

JSON (--json): one entry per image, in order:
  [{"image": "visitor.jpg",
    "faces": [{"name": "Alice", "access": true, "score": 0.8123, "box": [x1, y1, x2, y2],
               "liveness": {"score": 0.9731, "live": true}}]}]
"box" is in the photo's pixels; for a face cut by the photo's edge it reaches past the edge
(the whole face, as the detector estimates it).
"access" is whether the person may open the door (`edge-app access`): false for a known
visitor, whom the door names and never lets in; null for an unknown face.
An image that cannot be read gets "faces": [] and an "error"; the exit code is then 2.
A file name that is not UTF-8 shows its other bytes as \\xNN (caf\\xe9.jpg).
"liveness" is the presentation-attack check (docs/LIVENESS.md): its score in [0, 1] and
whether it reaches the threshold in the models manifest; null when the models have no
liveness model. A photo of a photo is, rightly, often judged not live.
"""


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    # The default is resolved after parsing (db_path): building the parser reads no config.
    from edge_app.paths import DEFAULT_CONFIG, DEFAULT_GALLERY

    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--db",
        type=file_path("./gallery.db", "the configured gallery"),
        default=None,
        metavar="PATH",
        help=f"gallery database (default: gallery.path in {DEFAULT_CONFIG}, else "
        f"{DEFAULT_GALLERY})",
    )
    where.add_argument(
        "--config",
        type=config_path,
        metavar="PATH",
        help="the gallery of a door run with this config: its gallery.path",
    )


def db_path(args: argparse.Namespace, *, create: bool = False) -> Path:
    """The gallery --db names, else the one the config names (gallery.path: --config, else
    the default config file).

    create: the command makes the gallery when it is missing. A --db PATH must then be in a
    folder that exists, so a mistyped path is refused rather than made into a folder tree;
    a configured gallery's folder is made when missing, except the door's state folder,
    which the installer makes for the service user: made here, by whoever ran the command
    (root, on a desktop), it would hold a gallery the door cannot read.
    """
    if args.db is None:
        from edge_app.config import load_config  # imported here: it reads the config file

        configured = Path(load_config(args.config).gallery.path)
        if not configured.is_absolute():  # the door resolves it in its own working folder
            raise UserError(
                f"gallery.path {configured} in the config is relative to the folder the door "
                "runs in, which this command cannot know: give the config an absolute path, "
                "or the gallery with --db"
            )
        if (
            create
            and configured.parent == paths.DEFAULT_STATE_DIR
            and not configured.parent.is_dir()
        ):
            raise UserError(
                f"no gallery at {configured}, and no {configured.parent}: the installer "
                "makes that folder for the door's user (systemd/install.sh); without an "
                "installed door, give the gallery with --db, e.g. --db ./gallery.db"
            )
        return configured
    folder = args.db.parent
    if create and not folder.is_dir():
        raise UserError(
            f"--db {args.db}: there is no folder {folder}; create it first, or give a path "
            "in a folder that exists"
        )
    return args.db


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models")
    group.add_argument(
        "--models",
        type=nonempty_path,
        metavar="DIR",
        help="models folder (default: the installed models)",
    )
    group.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="where the models run (default: auto, the Edge TPU when present)",
    )
    group.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: all)")
    group.add_argument(
        "--cascade",
        choices=CASCADES,
        default="auto",
        help="MTCNN cascade on the CPU, as the door's [models] cascade (default: auto, the "
        "faster of int8 and float here, so photos are cut as the door cuts camera frames)",
    )


def open_engine(args: argparse.Namespace) -> Any:
    from edge_app.engine import Engine

    return Engine.open(
        models_dir=args.models, backend=args.backend, threads=args.threads, cascade=args.cascade
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "identify",
        help="name the faces in photos using the gallery",
        description="Detect every face in each photo and match it against the gallery.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="photo files or folders")
    add_db_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON (see below)")
    match = parser.add_argument_group(
        "matching (defaults: the [recognition] section of --config when given, else the "
        "door's defaults, with the models manifest's threshold)"
    )
    match.add_argument(
        "--threshold",
        type=checked_number(partial(recognition_problem, "threshold")),
        metavar="T",
        help=f"minimum score, {recognition_range('threshold')} (default: the models')",
    )
    match.add_argument(
        "--margin",
        type=checked_number(partial(recognition_problem, "margin")),
        metavar="M",
        help=f"minimum lead over the second person, {recognition_range('margin')} "
        "(default: the models')",
    )
    match.add_argument("--aggregate", choices=AGGREGATES, help="per-person score")
    match.add_argument(
        "--lookalikes",
        choices=LOOKALIKE_MODES,
        help="when enrolled people match each other at or above the threshold: raise it just "
        "above their highest score, as the door does by default, or only warn",
    )
    match.add_argument(
        "--site-centring",
        choices=("on", "off"),
        help="remove what the enrolled people share beyond their own faces (one camera, one "
        "light) before matching, as the door does by default ([recognition] site_centring)",
    )
    add_engine_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edge_app.config import RecognitionConfig, load_config
    from edge_app.daemon import door_matcher
    from edge_app.enroll import model_id, photo_progress
    from edge_app.gallery import Gallery, other_models_warning
    from edge_app.images import image_files

    db = db_path(args)
    with Gallery.open(db, read_only=True) as gallery:
        matrix = gallery.load_matrix()
        by_model = gallery.people_by_model()
    if not matrix.names:
        raise UserError(f"the gallery {db} is empty: enrol someone first")
    paths = image_files(args.images)
    engine = open_engine(args)
    warning = other_models_warning(by_model, model_id(engine))
    if warning is not None:
        log.warning("%s", warning)
    # The door's own rule: its config's [recognition] (with --config), the manifest's where
    # that says auto, these flags over both, and its lookalike guard (logged).
    base = load_config(args.config).recognition if args.config else RecognitionConfig()
    recognition = dataclasses.replace(
        base,
        threshold=base.threshold if args.threshold is None else args.threshold,
        margin=base.margin if args.margin is None else args.margin,
        aggregate=args.aggregate or base.aggregate,
        lookalikes=args.lookalikes or base.lookalikes,
        site_centring=base.site_centring
        if args.site_centring is None
        else args.site_centring == "on",
    )
    matcher, _ = door_matcher(engine, recognition, matrix)
    settings = matcher.settings
    live_threshold = _live_threshold(engine)
    # templates: each stored sample and its mirror image, as the door counts them (`list`
    # shows the samples).
    log.info(
        "people=%d templates=%d threshold=%.3f margin=%.3f aggregate=%s",
        len(matrix.names),
        len(matrix),
        settings.threshold,
        settings.margin,
        settings.aggregate,
    )
    from edge_app.progress import Progress

    entries: list[dict[str, Any]] = []
    with photo_progress(paths, "identifying") as photos:
        for path in photos:
            entry, text = _identify_one(path, engine, matcher, matrix, live_threshold)
            entries.append(entry)
            if not args.json:  # each photo's lines as it is done, above the progress bar
                Progress.write("\n".join(text), file=sys.stdout)
                sys.stdout.flush()
    if args.json:  # one document, once every photo is done
        sys.stdout.write(json.dumps(entries, indent=2, ensure_ascii=False) + "\n")
    return 2 if any("error" in entry for entry in entries) else 0


def _identify_one(
    path: Path,
    engine: Any,
    matcher: Any,
    matrix: Any,
    live_threshold: float | None,
) -> tuple[dict[str, Any], list[str]]:
    """One photo's JSON entry and its lines of text."""
    from edge_app.images import ImageError, load_photo
    from edge_app.liveness_rule import judged_scores

    entry: dict[str, Any] = {"image": printable(str(path)), "faces": []}
    lines: list[str] = []
    try:
        photo = load_photo(path)
    except ImageError as error:
        log.error("%s", error)
        entry["error"] = printable(str(error))
        lines.append(f"{shown(str(path))}: unreadable")
        return entry, lines
    faces, embeddings = engine.process(photo.pixels)
    matches = matcher.identify(embeddings)
    live = None
    if live_threshold is not None:
        live = judged_scores(engine.liveness(photo.pixels, faces)).tolist()
    lines.append(f"{shown(str(path))}: {len(faces)} face(s)")
    # Boxes in the photo's own pixels, whatever it was brought down to for detection.
    boxes = (faces.boxes / photo.scale).tolist()
    for index, (name, closest, score, box) in enumerate(
        zip(matches.names, matches.best, matches.scores.tolist(), boxes, strict=True)
    ):
        liveness = None
        if live is not None and live_threshold is not None:
            liveness = {"score": round(live[index], 4), "live": live[index] >= live_threshold}
        entry["faces"].append(
            {
                "name": name,
                # False: a known visitor, whom the door names and never lets in.
                "access": None if name is None else name not in matrix.no_access,
                "score": round(score, 4),
                "box": [round(v, 1) for v in box],
                "liveness": liveness,
            }
        )
        who = shown(name) if name else f"unknown (closest: {shown(str(closest))})"
        if name in matrix.no_access:
            who += " (known visitor: never let in)"
        corners = ", ".join(f"{v:.0f}" for v in box)
        verdict = ""
        if liveness is not None:
            verdict = f"  liveness {liveness['score']:.2f} "
            verdict += "live" if liveness["live"] else "NOT live"
        lines.append(f"  {who}  score {score:.3f}  box [{corners}]{verdict}")
    return entry, lines


def _live_threshold(engine: Any) -> float | None:
    """The manifest's liveness threshold, or None (with a warning) without a liveness model."""
    from edge_app.liveness_rule import manifest_threshold

    if not engine.has_liveness:
        log.warning('no liveness model in the models: faces get "liveness": null')
        return None
    return manifest_threshold(engine.manifest)
