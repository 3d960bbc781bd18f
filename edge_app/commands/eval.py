"""`edge-app eval lfw | visits | liveness | door`: accuracy measured end to end."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edge_app.arg_types import checkout_default, count, nonempty_path
from edge_app.cascade_choice import CASCADES
from edge_app.config import LOOKALIKE_MODES
from edge_app.paths import IN_CHECKOUT, REPO_ROOT, SHARED_DATA, default_models_dir
from edge_app.reports import check_distinct, check_output, write_report
from edge_app.runtime import BACKENDS

EVAL_EPILOG = """\
examples (each benchmark's --help has more):
  edge-app eval lfw --pairs ../shared/data/lfw/pairsDevTest.txt \\
      --train ../shared/data/lfw/pairsDevTrain.txt --images ../shared/data/lfw/images
  edge-app eval visits --lfw ../shared/data/lfw --json visits.json   # or: make eval-visits
  edge-app eval liveness --data ../shared/data/liveness/nuaa
  edge-app eval door                     # liveness required, on the NUAA clips
"""

EPILOG = """\
pair files: the fold form (first line "10<TAB>300", e.g. LFW's pairs.txt) is scored by 10-fold
cross-validation, the threshold chosen on 9 folds and applied to the 10th. The development
form (pairsDevTrain.txt / pairsDevTest.txt) is scored with --train: threshold from the train
list, accuracy on --pairs. Images where no face is found are embedded from the median LFW face
box, so no pair is dropped; their number is reported.

Two accuracies are reported from one run: as the door embeds a face (once; the headline), and
"with flipped", each embedding averaged with its mirror image's, the extra the published
accuracy of these FaceNet weights (99.05% on pairs.txt) was measured with.

examples:
  edge-app eval lfw --pairs ../shared/data/lfw/pairsDevTest.txt \\
      --train ../shared/data/lfw/pairsDevTrain.txt --images ../shared/data/lfw/images
  edge-app eval lfw --pairs pairs.txt --images lfw/ --json lfw.json
  edge-app eval lfw ... --reference float      # the float models, for comparison
  edge-app eval lfw ... --cascade int8         # the int8 P/R/O-Net even where float is faster
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="measure accuracy: LFW verification, per-visit decisions, liveness, the door",
        description="Measure accuracy end to end, with the door's own code (docs/ACCURACY.md).",
        epilog=EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    lfw = sub.add_parser(
        "lfw",
        help="LFW pair verification, own detection + alignment + embedding",
        description="Run the LFW verification protocol end to end.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lfw.add_argument(
        "--pairs",
        type=nonempty_path,
        **checkout_default(
            SHARED_DATA / "lfw" / "pairsDevTest.txt",
            "pair list to score",
        ),
    )
    lfw.add_argument(
        "--images",
        type=nonempty_path,
        **checkout_default(
            SHARED_DATA / "lfw" / "images",
            "LFW image root: <Name>/<Name>_NNNN.jpg",
        ),
    )
    lfw.add_argument(
        "--train", type=nonempty_path, help="development-form list to choose the threshold on"
    )
    lfw.add_argument("--json", type=nonempty_path, help="also write the results as JSON here")
    lfw.add_argument(
        "--reference",
        choices=["float"],
        help="run the float reference models (built by edge-convert build)",
    )
    _engine_options(lfw)
    lfw.set_defaults(handler=_run)
    _register_visits(sub)
    _register_liveness(sub)
    _register_door(sub)


def _engine_options(parser: argparse.ArgumentParser, cascade: str = "auto") -> None:
    """--models, --backend, --cascade and --threads, as every evaluation opens the engine."""
    parser.add_argument(
        "--models", type=nonempty_path, help="models folder (default: the int8 models)"
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="where the models run: auto (the Edge TPU when one answers, else the CPU), cpu "
        "or edgetpu (default auto)",
    )
    parser.add_argument(
        "--cascade",
        choices=CASCADES,
        default=cascade,
        help="MTCNN cascade on the CPU, as [models] cascade: auto (the faster of int8 and "
        "float, measured at start-up), int8 or float (default %(default)s). The Edge TPU "
        "runs int8",
    )
    parser.add_argument("--threads", type=int, help="CPU threads (default: all cores)")


def _check_json(
    json_path: Path | None, inputs: dict[str, Path | None], models: Path | None
) -> None:
    """Refuse, before any work, a --json that cannot be written, that is not a regular file
    (a device, a named pipe, a link), or that is one of the inputs or lies in an input folder
    or the models folder (`models`; None: the default one), where it would replace a pair
    list, a photo or the manifest."""
    check_output(json_path)
    check_distinct({"--json": json_path}, {**inputs, "--models": models or default_models_dir()})


def _open_engine(args: argparse.Namespace) -> Any:
    from edge_app.engine import Engine

    return Engine.open(
        args.models, backend=args.backend, threads=args.threads, cascade=args.cascade
    )


LIVENESS_EPILOG = """\
layout: DIR/live/<subject>/ID_GG_PP_SS_N.jpg and DIR/print/<subject>/ID_GG_PP_SS_N.jpg (NUAA):
frames sharing ID_GG_PP_SS are one sequence, in the order of N; for print/ frames PP is the
attack type. Every frame runs through the door's detector and the largest face is the
presented one. Reported per frame, per sequence (windows of up to 10 frames, live when at
least --min-live-frames of them are) and per whole sequence: APCER per attack type, BPCER,
ACER; the geometry (parallax) reading per window; the threshold these frames would give
(the middle of those meeting per-frame APCER <= 1% and BPCER <= 5%) and a leave-one-subject-
out check of it; and the liveness cost per face. docs/LIVENESS.md explains each figure.

examples:
  edge-app eval liveness --data ../shared/data/liveness/nuaa
  edge-app eval liveness --data nuaa/ --subjects 0001,0002 --json liveness.json
  edge-app eval liveness --data nuaa/ --threshold 0.5 --min-live-frames 6
"""


def _register_liveness(sub: argparse._SubParsersAction) -> None:
    from edge_app.config import LIVE_WINDOW_FRAMES, LivenessConfig

    live = sub.add_parser(
        "liveness",
        help="presentation-attack detection on NUAA-layout frames (APCER, BPCER, ACER)",
        description="Measure the liveness check on real and printed-photo sequences.",
        epilog=LIVENESS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _nuaa_options(live)
    live.add_argument(
        "--threshold",
        type=float,
        help="liveness score at or above which a frame is live (default: the manifest's)",
    )
    live.add_argument(
        "--min-live-frames",
        type=int,
        default=LivenessConfig.min_live_frames,
        help=f"live frames a window of up to {LIVE_WINDOW_FRAMES} needs (default %(default)s, "
        "as the door)",
    )
    live.add_argument("--json", type=nonempty_path, help="also write the results as JSON here")
    _engine_options(live, cascade="int8")  # docs/LIVENESS.md's figures
    live.set_defaults(handler=_run_liveness)


LIVENESS_FLAGS = {"threshold": "--threshold", "min_live_frames": "--min-live-frames"}
RECOGNITION_FLAGS = {
    "threshold": "--recognition-threshold",
    "lookalikes": "--lookalikes",
    "site_centring": "--site-centring",
    "learn_site": "--learn-site",
}


def _check_as_the_door(section: str, values: dict[str, Any], flags: dict[str, str]) -> None:
    """Refuse, before any work, flag values the door's config would refuse in `section`,
    naming the flag: the ranges have one home, edge_app.config."""
    from edge_app.config import ConfigError, parse_config
    from edge_app.errors import UserError

    try:
        parse_config({section: values})
    except ConfigError as error:
        problems = list(error.problems) or [str(error)]
        for key, flag in flags.items():
            problems = [p.replace(f"{section}.{key}:", f"{flag}", 1) for p in problems]
        # A flag takes no "auto": leaving it out is the default.
        text = "; ".join(problems).replace(' (or "auto" for the default)', "")
        raise UserError(text) from None


def _run_liveness(args: argparse.Namespace) -> int:
    from edge_app.evaluate_liveness import evaluate_liveness, format_report
    from edge_app.liveness_rule import manifest_threshold

    _check_data(args)
    liveness: dict[str, Any] = {"min_live_frames": args.min_live_frames}
    if args.threshold is not None:
        liveness["threshold"] = args.threshold
    _check_as_the_door("liveness", liveness, LIVENESS_FLAGS)
    subjects = _subjects(args.subjects)
    _check_json(args.json, {"--data": args.data}, args.models)
    engine = _open_engine(args)
    threshold = args.threshold
    if threshold is None:
        threshold = manifest_threshold(engine.manifest)
    result = evaluate_liveness(engine, args.data, threshold, args.min_live_frames, subjects)
    sys.stdout.write(format_report(result))
    if args.json:  # not _show: its JSON (a second leave-one-out pass) only when asked for
        write_report(args.json, result.to_json())
    return 0


def _nuaa_options(parser: argparse.ArgumentParser) -> None:
    """--data and --subjects, as both NUAA evaluations take them."""
    parser.add_argument(
        "--data",
        type=nonempty_path,
        **checkout_default(
            SHARED_DATA / "liveness" / "nuaa",
            "folder with live/ and print/",
        ),
    )
    parser.add_argument(
        "--subjects", help="comma-separated subject ids to use (default: all), e.g. 0001,0002"
    )


def _check_data(args: argparse.Namespace) -> None:
    """Refuse a --data that is not a folder, before any work."""
    from edge_app.errors import UserError

    if not args.data.is_dir():
        raise UserError(f"--data {args.data}: not a folder")


def _subjects(text: str | None) -> set[str] | None:
    """--subjects 0001,0002 as a set; None (all) when not given. Given but with no id in it
    ("" or ", ,", as an unset shell variable gives) is refused, not read as all subjects."""
    from edge_app.errors import UserError

    if text is None:
        return None
    subjects = {s.strip() for s in text.split(",") if s.strip()}
    if not subjects:
        raise UserError(
            f"--subjects {text!r}: expected comma-separated subject ids, e.g. 0001,0002 "
            "(leave the option out for all subjects)"
        )
    return subjects


DOOR_EPILOG = """\
The whole door on real camera frames, with [liveness] mode = "require". Each subject is
enrolled from 5 frames of their first live sequence (through the real quality gates; the
first half of it when they have only one). Then the real daemon, with a mock relay, plays:
their other live sequences (each must unlock as them), every printed-photo sequence of them
(none may unlock), and, leaving each subject out of the gallery in turn, every live sequence
of that subject (none may unlock). Same NUAA layout as `edge-app eval liveness`. About 1.5
to 3.5 minutes for the 8 subjects in ../shared on 2 CPU cores ("seconds" in the JSON).
docs/ACCURACY.md ("Same camera, similar faces") has the figures.

examples:
  edge-app eval door
  edge-app eval door --data nuaa/ --subjects 0004,0006,0007 --json door.json
  edge-app eval door --lookalikes warn                    # without the lookalike guard
  edge-app eval door --site-centring off                  # without site centring
  edge-app eval door --recognition-threshold 0.7          # a stricter site threshold
  edge-app eval door --alone                              # households of one
  edge-app eval door --alone --learn-site on              # ... whose door learns its site
"""


def _register_door(sub: argparse._SubParsersAction) -> None:
    door = sub.add_parser(
        "door",
        help="the whole door on real video, liveness required: visits, photos, strangers",
        description="Play real webcam sequences (NUAA layout) to the real door daemon.",
        epilog=DOOR_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _nuaa_options(door)
    door.add_argument(
        "--recognition-threshold",
        type=float,
        metavar="T",
        help="the door's [recognition] threshold (default: the manifest's), to try a stricter "
        "one for a site",
    )
    door.add_argument(
        "--lookalikes",
        choices=LOOKALIKE_MODES,
        help="override [recognition] lookalikes (default: the config default, raise), e.g. "
        "warn to see the door without the guard",
    )
    door.add_argument(
        "--site-centring",
        choices=("on", "off"),
        help="override [recognition] site_centring (default: the config default, on), e.g. "
        "off to see the door without it",
    )
    door.add_argument(
        "--learn-site",
        choices=("on", "off"),
        help="override [recognition] learn_site (default: the config default, off): the door "
        "learns its site from the strangers it sees (best with --alone)",
    )
    door.add_argument(
        "--alone",
        action="store_true",
        help="each subject in turn lives alone: a gallery of one, their visits and everyone "
        "else as strangers, in one seeded random order at that door",
    )
    door.add_argument("--seed", type=count(0), help="--alone: the order of the clips (default 0)")
    door.add_argument("--json", type=nonempty_path, help="also write the full report as JSON here")
    _engine_options(door)  # as the door runs: cascade auto
    door.set_defaults(handler=_run_door)


def _run_door(args: argparse.Namespace) -> int:
    from edge_app.errors import UserError
    from edge_app.evaluate_door import evaluate_door, table

    if args.seed is not None and not args.alone:
        raise UserError("--seed orders the clips of --alone: give --alone too, or leave it out")
    _check_data(args)
    recognition: dict[str, Any] = {}
    if args.recognition_threshold is not None:
        recognition["threshold"] = args.recognition_threshold
    if args.lookalikes is not None:
        recognition["lookalikes"] = args.lookalikes
    if args.site_centring is not None:
        recognition["site_centring"] = args.site_centring == "on"
    if args.learn_site is not None:
        recognition["learn_site"] = args.learn_site == "on"
    _check_as_the_door("recognition", recognition, RECOGNITION_FLAGS)
    subjects = _subjects(args.subjects)
    _check_json(args.json, {"--data": args.data}, args.models)
    engine = _open_engine(args)
    report = evaluate_door(
        engine,
        args.data,
        subjects,
        recognition,
        alone=args.alone,
        seed=args.seed or 0,
    )
    return _show_timed(table(report), args.json, report)


def _run(args: argparse.Namespace) -> int:
    from edge_app.bounded_read import missing_or_kind
    from edge_app.engine import Engine
    from edge_app.errors import UserError
    from edge_app.evaluate import FLIPPED, evaluate_lfw, lfw_job

    if args.reference == "float" and args.backend == "edgetpu":  # before any file is looked at
        raise UserError(
            "--reference float runs on the CPU: float models cannot run on the Edge TPU; "
            "leave out --backend edgetpu"
        )
    for path, flag in ((args.pairs, "--pairs"), (args.images, "--images")):
        if not path.exists():
            raise UserError(f"{flag} {path}: not found")
    if not args.images.is_dir():  # else each of its images was said to be missing from it
        raise UserError(
            f"--images {args.images}: {missing_or_kind(args.images, 'folder')}; give the LFW "
            "image root, the folder with <Name>/<Name>_NNNN.jpg"
        )
    models = args.models
    if args.reference == "float":
        if models is None and not IN_CHECKOUT:
            raise UserError(
                "--reference float needs --models DIR, the float reference models "
                "(`edge-convert build` writes them beside the int8 models)"
            )
        models = models or REPO_ROOT / "models" / "float"
        if not (models / "manifest.json").is_file():
            raise UserError(
                f"no float reference models in {models}: run `edge-convert build` (converter "
                "extra) which writes them beside the int8 models"
            )
    _check_json(
        args.json, {"--pairs": args.pairs, "--train": args.train, "--images": args.images}, models
    )
    job = lfw_job(args.pairs, args.images, args.train)
    engine = Engine.open(
        models,
        backend="cpu" if args.reference else args.backend,
        threads=args.threads,
        # the reference folder's own models are the float ones: no cascade to choose there
        cascade="int8" if args.reference else args.cascade,
    )
    result = evaluate_lfw(engine, job)
    flipped = result.flipped
    lines = [
        f"protocol        {result.protocol}",
        f"pairs / images  {result.pairs} / {result.images}",
        f"accuracy        {100 * result.accuracy:.2f}% ± {100 * result.accuracy_std:.2f}%"
        "   (as the door embeds a face: once)",
        f"threshold       cosine {result.threshold:.4f}",
        f"VAL @ FAR=1e-3  {100 * result.val_at_far_1e_3:.2f}%",
        f"with flipped    {100 * flipped.accuracy:.2f}% ± {100 * flipped.accuracy_std:.2f}%,"
        f" VAL @ FAR=1e-3 {100 * flipped.val_at_far_1e_3:.2f}%   ({FLIPPED})",
        f"no face found   {result.no_face_images} images ({result.no_face_policy})",
        f"speed           {result.images_per_second:.1f} images/s ({result.backend})",
    ]
    data = result.to_json()
    if engine.cascade_choice is not None and not args.reference:
        lines.append(f"cascade         {engine.cascade_choice.describe()}")
        data["cascade"] = engine.cascade_choice.chosen
        data["cascade_choice"] = engine.cascade_choice.describe()
    return _show("\n".join(lines) + "\n", args.json, data)


def _show(text: str, json_path: Path | None, data: Any) -> int:
    """Print an evaluation's report and, with --json, write `data` there; exit code 0."""
    sys.stdout.write(text)
    if json_path:
        write_report(json_path, data)
    return 0


def _show_timed(table: str, json_path: Path | None, report: dict[str, Any]) -> int:
    """_show for the door and visits evaluations: their table and the seconds they took."""
    return _show(table + f"\n\n{report['seconds']:.0f} s\n", json_path, report)


VISITS_EPILOG = """\
Each enrolled person (LFW people outside pairsDevTrain.txt, or inside it with --population
devtrain; enrolled from 2 photos through the real quality gates) visits twice; each
stranger (one photo of a person not enrolled, from the same population) once. A visit is
a short clip (walking in, approaching, swaying; cutting between photos when there are
several) played to the real door daemon with a mock relay. Seeded: the same
--seed gives the same people, photos and clips. About 1.5 s per visit on 2 CPU cores.

examples:
  edge-app eval visits                                  # 40 people x 2 visits, 300 strangers
  edge-app eval visits --strangers 400 --json visits.json
  edge-app eval visits --people 10 --strangers 20       # a quick look
  edge-app eval visits --population devtrain --evidence frame   # tune on DevTrain people
  edge-app eval visits --strangers-drawn closest --strangers 100  # the hardest strangers
"""


def _register_visits(sub: argparse._SubParsersAction) -> None:
    from edge_app.config import EVIDENCE
    from edge_app.evaluate_visits import PEOPLE, POPULATIONS, SEED, STRANGER_DRAWS, STRANGERS

    visits = sub.add_parser(
        "visits",
        help="per-visit door evaluation: unlocks, wrong people, strangers, time to unlock",
        description="Play LFW people's visits to the real door daemon and score each visit.",
        epilog=VISITS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    visits.add_argument(
        "--lfw",
        type=nonempty_path,
        **checkout_default(
            SHARED_DATA / "lfw",
            "LFW folder with images/ and pairsDevTrain.txt",
        ),
    )
    visits.add_argument(
        "--people", type=count(1), default=PEOPLE, help=f"enrolled people (default {PEOPLE})"
    )
    visits.add_argument(
        "--strangers",
        type=count(1),
        default=STRANGERS,
        help=f"stranger visits, one each (default {STRANGERS})",
    )
    visits.add_argument(
        "--strangers-drawn",
        choices=STRANGER_DRAWS,
        default=STRANGER_DRAWS[0],
        help="which people are strangers: drawn at random (the default), or the closest to "
        "someone enrolled, each by their closest photo as the door scores it (look-alikes; "
        "every candidate photo is scored first, a few minutes)",
    )
    visits.add_argument(
        "--seed",
        type=count(0),
        default=SEED,
        help=f"draws the people, their photos, the strangers and the clips (default {SEED})",
    )
    visits.add_argument(
        "--population",
        choices=POPULATIONS,
        default=POPULATIONS[0],
        help="whose visits: people outside LFW DevTrain (the default: nothing was tuned on "
        "them) or DevTrain people (to tune a setting before checking it outside)",
    )
    visits.add_argument(
        "--evidence",
        choices=EVIDENCE,
        help="override [policy] evidence for the door (default: the config default)",
    )
    visits.add_argument(
        "--json", type=nonempty_path, help="also write the full report as JSON here"
    )
    _engine_options(visits)
    visits.set_defaults(handler=_run_visits)


def _run_visits(args: argparse.Namespace) -> int:
    from edge_app.errors import UserError
    from edge_app.evaluate_visits import evaluate_visits, table

    if not (args.lfw / "images").is_dir():
        raise UserError(f"--lfw {args.lfw}: no images/ folder there")
    _check_json(args.json, {"--lfw": args.lfw}, args.models)
    engine = _open_engine(args)
    report = evaluate_visits(
        engine,
        args.lfw,
        people=args.people,
        strangers=args.strangers,
        seed=args.seed,
        population=args.population,
        strangers_drawn=args.strangers_drawn,
        policy={"evidence": args.evidence} if args.evidence else None,
    )
    return _show_timed(table(report), args.json, report)
