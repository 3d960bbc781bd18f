"""`edge-convert build`: float reference models, then full-int8 models, linted, in one go.

The output folder is assembled in a temporary sibling and renamed into place only when
everything succeeded, so a failure never leaves a half-written models folder behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from random import Random

import numpy as np

from converter import __version__
from converter.build_options import BuildOptions
from converter.calibration import (
    MIN_FACES,
    PHOTOS_PER_FRAME,
    aligned_faces,
    calibration_paths,
    cascade_inputs,
    door_frames,
    require_readable,
)
from converter.facenet_torch import build_facenet_from_state_dict
from converter.liveness import (
    LivenessSource,
    calibration_images,
    calibration_patches,
    calibration_record,
    calibration_sample,
    check_readable,
    check_threshold,
    convert_liveness,
    labelled_frames,
    liveness_source,
    manifest_section,
    model_name,
    patch_spec,
)
from converter.mtcnn_models import build_onet, build_pnet, build_rnet, mtcnn_source_identity
from converter.quantize import convert_frozen_graph, convert_keras, describe_tensors
from converter.recognition import check_population, check_recognition, derive_threshold
from converter.sources import (
    FACENET_INPUT,
    FACENET_PRENORM,
    PYTORCH,
    FacenetSource,
    facenet_source,
)
from edge_app import untrusted_json
from edge_app.adapters import PIXEL_SCALE
from edge_app.align import FACENET_SIZE
from edge_app.centering import MEAN_FILE
from edge_app.cohort import COHORT_FILE
from edge_app.detection.cascade import Thresholds
from edge_app.detection.pyramid import DEFAULT_FACTOR, level_shape, pyramid_scales
from edge_app.engine import CROP_MARGIN, Engine
from edge_app.errors import first_few, os_reason
from edge_app.images import read_image
from edge_app.manifest import (
    CASCADE_ROLES,
    FORMAT_VERSION,
    LIVENESS_ROLE,
    MANIFEST_NAME,
    EdgeTpuSpec,
    ManifestError,
    load_manifest,
    parse_manifest,
    sha256_file,
)
from edge_app.paths import REPO_ROOT
from edge_app.runtime import select_backend

log = logging.getLogger(__name__)


# Share of the float cascade's per-stage positives the int8 thresholds must keep.
KEEP_FLOAT_POSITIVES = 0.995


class BuildError(RuntimeError):
    """The build cannot go on; the message says why and what to do."""


# What a build writes into a models folder: an existing --out (or --float-out) holding
# anything else, or no manifest, is refused, since the whole folder is replaced (and the old
# one deleted). The float cascade's subfolder holds its models and the probe photo.
MODEL_FOLDER_SUFFIXES = (".tflite", ".json", ".npy", ".log")
FLOAT_CASCADE_SUFFIXES = (".tflite", ".jpg")


def _overlap(a: Path, b: Path) -> bool:
    """Whether one of the two paths is the other or inside it (symbolic links resolved)."""
    a, b = a.resolve(), b.resolve()
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def check_model_folder(
    final: Path, option: str, inputs: dict[str, Path | None], *, replaced: bool = True
) -> None:
    """Refuse an output folder that staged_folder would wrongly replace, before any work.

    The folder is swapped in whole and the old one deleted, so it must be apart from every
    input (`inputs`: option name to path) and, when its old content is not kept (replaced),
    be new, empty or a models folder."""
    for name, path in inputs.items():
        if path is not None and _overlap(final, Path(path)):
            raise BuildError(
                f"{option} {final} overlaps {name} {path}: the output folder is replaced as a "
                "whole, so it must be apart from every input; choose another folder"
            )
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise BuildError(f"{option} {final} is not a folder; give a folder for the models")
    above = final.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise BuildError(f"{option} {final}: {above} is a file, so no folder can be made there")
    if final.is_dir() and os.path.ismount(final):
        raise BuildError(
            f"{option} {final} is a mount point: the folder is replaced as a whole by "
            "renaming, which a mount point cannot be; give a folder inside it"
        )
    if replaced and final.is_dir() and any(final.iterdir()):
        _check_models_folder(final, option)


def _check_models_folder(final: Path, option: str) -> None:
    """Refuse a folder that is not one a build wrote: it needs a manifest, and nothing but
    the files a build writes (a folder of photos and notes must never be replaced)."""
    foreign = [
        path.name
        for path in sorted(final.iterdir())
        if not (path.is_file() and path.suffix.lower() in MODEL_FOLDER_SUFFIXES)
        and not (path.is_dir() and path.name == FLOAT_CASCADE_DIR)
    ]
    cascade = final / FLOAT_CASCADE_DIR
    if cascade.is_dir() and not cascade.is_symlink():
        foreign += [
            f"{FLOAT_CASCADE_DIR}/{path.name}"
            for path in sorted(cascade.iterdir())
            if not (path.is_file() and path.suffix.lower() in FLOAT_CASCADE_SUFFIXES)
        ]
    elif cascade.exists() or cascade.is_symlink():
        foreign.append(FLOAT_CASCADE_DIR)
    manifest = final / MANIFEST_NAME
    if not foreign:
        try:
            _read_manifest(manifest)
        except (OSError, ValueError) as error:
            reason = (
                "it has none"
                if not manifest.exists()
                else f"its {MANIFEST_NAME} is not usable: {error}"
            )
            raise BuildError(
                f"{option} {final} is not empty and not a models folder (a build writes a "
                f"{MANIFEST_NAME}, and {reason}); it would be replaced as a whole: give a new "
                "or empty folder, or a models folder"
            ) from None
        return
    raise BuildError(
        f"{option} {final} holds files a build does not write ({first_few(foreign, 3)}) "
        "and would be replaced as a whole; give a new or empty folder, or a models folder"
    )


def _previous(final: Path) -> Path:
    return final.with_name(f".{final.name}.previous")


@contextlib.contextmanager
def _build_lock(folder: Path, finals: list[Path]) -> Iterator[None]:
    """Hold `folder`, the parent of `finals`, for this build alone: an flock on the folder
    itself (no file left behind), released when the process ends, however it ends. Two
    builds into one folder each reported success while the later one silently replaced the
    earlier's models; the second is now refused. Held, it also makes staging folders left
    beside the finals those of a killed build: they are removed. The folders it made (`--out
    /new/a/b` makes /new, /new/a) are removed on the way out when they are empty: a build
    that failed or was interrupted leaves none of them behind."""
    made = _make_folder(folder)
    try:
        if not os.access(folder, os.W_OK):
            raise BuildError(f"cannot write to {folder}")
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BuildError(
                    f"another edge-convert build is writing into {folder} now: wait for it to "
                    "end (two builds into one folder would replace each other's models)"
                ) from None
            for final in finals:
                for left in folder.glob(f".{final.name}.*"):
                    if left.is_dir() and not left.is_symlink() and left != _previous(final):
                        shutil.rmtree(left, ignore_errors=True)
                        log.warning("removed %s, left there by a build that was killed", left)
            yield
        finally:
            os.close(fd)  # releases the lock
    finally:
        _remove_empty(made)


def _remove_empty(folders: list[Path]) -> None:
    """Remove `folders` (outermost first, as _make_folder lists them) from the deepest up,
    while they are empty: one that holds anything (the new models) stays, and its parents."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


def _make_folder(folder: Path) -> list[Path]:
    """Make `folder` and its missing parents, as mkdir -p: those it made, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    made = []
    try:
        for path in missing:
            try:
                path.mkdir()
            except FileExistsError:
                continue  # made by another process meanwhile: not ours to remove
            made.append(path)
        if not folder.is_dir():
            folder.mkdir()  # FileExistsError: a file there; NotADirectoryError: one above
    except OSError as error:
        _remove_empty(made)
        raise BuildError(f"cannot create the folder {folder} ({error.strerror or error})") from None
    return made


def _stage(final: Path) -> Path:
    """A new, empty temporary sibling of `final` (its folder made when missing, and held by
    _build_lock)."""
    previous = _previous(final)
    if not final.exists() and previous.is_dir():
        # An earlier build stopped between its two renames below: put its old folder back.
        previous.rename(final)
        log.warning("restored %s from %s (an earlier build was interrupted)", final, previous)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; models are read by the service user
    return staging


def _swap_in(pairs: list[tuple[Path, Path]]) -> None:
    """Put each staging folder in place of its final one, all of them or none: a rename that
    fails (a mount point, a full or read-only filesystem) puts back every folder already
    swapped, so an int8 folder and its float twin never come from two builds."""
    done: list[tuple[Path, bool]] = []  # (final, whether it had an old folder)
    try:
        for final, staging in pairs:
            previous = _previous(final)
            shutil.rmtree(previous, ignore_errors=True)
            had = final.exists()
            if had:
                final.rename(previous)
            try:
                staging.rename(final)
            except OSError:
                if had:
                    previous.rename(final)
                raise
            done.append((final, had))
    except OSError as error:
        for final, had in reversed(done):
            shutil.rmtree(final, ignore_errors=True)
            if had:
                _previous(final).rename(final)
        for _, staging in pairs:
            shutil.rmtree(staging, ignore_errors=True)
        raise BuildError(
            f"cannot put the new models in place ({os_reason(error)}); the old folders are "
            "as they were"
        ) from None
    for final, _ in done:
        shutil.rmtree(_previous(final), ignore_errors=True)


@contextlib.contextmanager
def staged_folders(*finals: Path, copy: bool = False) -> Iterator[list[Path]]:
    """A temporary sibling of each of `finals` (a copy of what it holds when `copy`: bytes and
    subfolders kept), swapped in together on success (_swap_in) and removed on any failure.
    A failure to write (a full disk) is a BuildError naming the file; nothing is replaced."""
    stagings: list[Path] = []
    locks = contextlib.ExitStack()
    try:
        parents = {
            final.parent: [f for f in finals if f.parent == final.parent] for final in finals
        }
        for folder, held in parents.items():
            locks.enter_context(_build_lock(folder, held))
        for final in finals:
            stagings.append(_stage(final))
            if copy and final.is_dir():
                shutil.copytree(final, stagings[-1], symlinks=True, dirs_exist_ok=True)
        yield stagings
    except BaseException as error:
        for staging in stagings:
            shutil.rmtree(staging, ignore_errors=True)
        locks.close()
        if isinstance(error, OSError) and not isinstance(error, PermissionError):
            names = ", ".join(str(final) for final in finals)
            raise BuildError(
                f"cannot write the models ({os_reason(error)}); nothing was replaced "
                f"({names} as they were)"
            ) from None
        raise
    with locks:
        _swap_in(list(zip(finals, stagings, strict=True)))


@contextlib.contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """staged_folders for one folder."""
    with staged_folders(final) as (staging,):
        yield staging


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """TensorFlow's converter prints banners from C++ and Python on stdout and stderr;
    keep them out of the progress display, but show them when a conversion fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as capture:
        os.dup2(capture.fileno(), 1)
        os.dup2(capture.fileno(), 2)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        except Exception as error:  # not an interrupt: Ctrl-C needs no converter output
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            if not isinstance(error, OSError):  # a full disk is no converter's doing
                capture.seek(0)
                log.error("converter output:\n%s", capture.read()[-4000:])
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _save(folder: Path, name: str, data: bytes, role: str, scale: float | None) -> dict:
    path = folder / f"{name}.tflite"
    try:
        path.write_bytes(data)
    except OSError as error:  # a write that fails (a full disk) names no file by itself
        error.filename = error.filename or str(path)
        raise
    inputs, outputs = describe_tensors(path)
    return {
        "role": role,
        "file": path.name,
        "sha256": sha256_file(path),
        "inputs": inputs,
        "outputs": outputs,
        "scale": scale,
        "edgetpu": None,
    }


def _manifest(options: BuildOptions, scales: list[float], models: dict, sources: dict) -> dict:
    import tensorflow as tf

    width, height = options.camera
    return {
        "format_version": FORMAT_VERSION,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "converter": {
            "version": __version__,
            "tensorflow": tf.__version__,
            "python": platform.python_version(),
        },
        "sources": sources,
        "camera": [width, height],
        "min_face": options.min_face,
        "pyramid": {
            "layout": "per-scale",
            "factor": DEFAULT_FACTOR,
            "scales": scales,
            "shapes": [list(level_shape(width, height, s)) for s in scales],
        },
        "preprocessing": {
            "color": "RGB",
            "standardisation": "(x - 127.5) / 128, folded into the uint8 input quantisation",
            "facenet_margin": CROP_MARGIN,
            "facenet_size": FACENET_SIZE,
            "crops": "bilinear, from the smallest pyramid level at or above the crop size",
        },
        "thresholds": {k: getattr(Thresholds(), k) for k in Thresholds.__dataclass_fields__},
        "models": models,
    }


def _liveness_models(
    options: BuildOptions,
    source: LivenessSource,
    engine: Engine,
    float_dir: Path,
    out_dir: Path,
) -> tuple[dict, dict, dict]:
    """Float and int8 liveness models and their calibration record (faces from `engine`)."""
    if options.liveness_calib is None:
        raise BuildError("--liveness needs --liveness-calib DIR: photos to calibrate on")
    paths = calibration_images(options.liveness_calib)
    sample = calibration_sample(paths, options.liveness_frames)
    specs = {model_name(f): patch_spec(f) for f in source.files}
    patches = calibration_patches(engine, sample, specs)
    faces = len(next(iter(patches.values())))
    log.info("liveness calibration images=%d sample=%d faces=%d", len(paths), len(sample), faces)
    with _quiet():
        float_models, models = convert_liveness(source, float_dir, out_dir, patches, _save)
    record = calibration_record(options.liveness_calib, len(paths), len(sample), faces)
    return float_models, models, record


def _liveness_check_frames(options: BuildOptions) -> dict[str, list[Path]]:
    """The live and print frames the built liveness models are checked on, found before any
    work (a calibration folder without them would only fail at the end), and enough of
    them, and of the calibration sample, readable (check_readable)."""
    if options.liveness_calib is None:
        raise BuildError("--liveness needs --liveness-calib DIR: photos to calibrate on")
    paths = calibration_images(options.liveness_calib)
    frames = labelled_frames(options.liveness_calib, paths)
    check_readable(options.liveness_calib, paths, frames, options.liveness_frames)
    return frames


def _check_liveness(manifest: dict, out_dir: Path, frames: dict[str, list[Path]]) -> None:
    """Refuse models whose manifest threshold would let printed photos in (check_threshold,
    on the int8 models as the door opens them); record what was measured."""
    engine = Engine(parse_manifest(manifest), out_dir, select_backend("cpu"))
    manifest["liveness"]["check"] = asdict(check_threshold(engine, frames))


def _add_liveness(manifest: dict, source: LivenessSource, models: dict, record: dict) -> None:
    """Put liveness models, source, calibration and score rule into a manifest dict."""
    manifest["models"] = {
        name: entry
        for name, entry in manifest["models"].items()
        if entry.get("role") != LIVENESS_ROLE
    } | models
    manifest.setdefault("sources", {})["liveness"] = source.identity
    manifest.setdefault("calibration", {})["liveness"] = record
    manifest["liveness"] = manifest_section(source, models)


def _read_manifest(path: Path) -> dict:
    """A manifest.json as a dict, read as untrusted input and checked as the device checks
    it; OSError or ValueError (BadJSON, ManifestError) when it is not usable."""
    data = untrusted_json.loads(path.read_bytes())
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    parse_manifest(data)
    return data


def _write_manifest(folder: Path, data: dict) -> None:
    manifest = parse_manifest(data)  # the same validation the device runs
    try:
        text = manifest.to_json()
    except ValueError as error:  # a number that is not finite: JSON cannot hold it
        raise BuildError(f"the models manifest would not be valid JSON ({error})") from None
    (folder / MANIFEST_NAME).write_text(text)


def _convert_facenet(
    facenet: FacenetSource, samples: Callable[[], Iterable[np.ndarray]] | None = None
) -> bytes:
    """FaceNet to TFLite from either kind of source: float without samples, int8 with them."""
    if facenet.kind == PYTORCH:
        return convert_keras(build_facenet_from_state_dict(facenet.path), samples)
    return convert_frozen_graph(
        facenet.path, FACENET_INPUT, FACENET_PRENORM, [1, FACENET_SIZE, FACENET_SIZE, 3], samples
    )


def _float_models(options: BuildOptions, folder: Path, scales, facenet) -> dict:
    width, height = options.camera
    models = {}
    with _quiet():
        for index, scale in enumerate(scales):
            model = build_pnet(*level_shape(width, height, scale))
            models[f"pnet_{index}"] = _save(
                folder, f"pnet_{index}", convert_keras(model), "pnet", scale
            )
        models["rnet"] = _save(folder, "rnet", convert_keras(build_rnet()), "rnet", None)
        models["onet"] = _save(folder, "onet", convert_keras(build_onet()), "onet", None)
        models["facenet"] = _save(folder, "facenet", _convert_facenet(facenet), "facenet", None)
    return models


def _check_input_quantisation(entry: dict) -> None:
    detail = entry["inputs"][0]
    if abs(detail["scale"] - PIXEL_SCALE) > 2e-4 or detail["zero_point"] not in (127, 128):
        log.warning(
            "%s: input scale %.6f zero point %d is not the pixel standardisation; the host "
            "will quantise its input (slower). Calibrate on photos with full 0-255 range.",
            entry["file"],
            detail["scale"],
            detail["zero_point"],
        )


def _require_tensorflow() -> None:
    """BuildError when TensorFlow is not installed. Found, not imported: its import takes
    seconds and prints start-up lines, which would come before the argument checks' refusals
    (the steps that need it import it)."""
    if importlib.util.find_spec("tensorflow") is None:
        raise BuildError(
            "TensorFlow is not installed: the converter needs pip install 'edge-door[converter]'"
        )


def build(options: BuildOptions) -> Path:
    started = time.monotonic()
    width, height = options.camera
    if options.faces < 20 or options.frames < 1:
        raise BuildError("--faces must be at least 20 and --frames at least 1")
    if options.min_face < 12:
        raise BuildError("--min-face must be at least 12 pixels (P-Net's window)")
    scales = pyramid_scales(width, height, options.min_face)
    if not scales:
        raise BuildError(f"--min-face {options.min_face} leaves no pyramid level")
    facenet = facenet_source(options.facenet)
    # The calibration folder first (a missing flag is a refusal whatever is installed), then
    # the weights, which need torch.
    check_frames = _liveness_check_frames(options) if options.liveness else {}
    liveness = liveness_source(options.liveness) if options.liveness else None
    if liveness is None:
        log.info("no --liveness: building without liveness models")
    if options.lfw is None or not (options.lfw / "pairsDevTrain.txt").is_file():
        raise BuildError(
            f"--lfw {options.lfw}: no pairsDevTrain.txt there; the recognition threshold is "
            "derived on LFW DevTrain (an LFW folder with images/ and pairsDevTrain.txt)"
        )
    if options.calib is None:
        raise BuildError("--calib: name a folder of calibration photos (an LFW folder or any)")
    _check_outputs(options)
    _check_what_is_dropped(options)
    check_population(options.lfw)
    _check_probe_photo(PROBE_PHOTO)
    paths = calibration_paths(options.calib)
    Random(options.seed).shuffle(paths)
    # Door frames need PHOTOS_PER_FRAME readable photos and FaceNet MIN_FACES faces.
    require_readable(paths, f"--calib {options.calib}", max(PHOTOS_PER_FRAME, MIN_FACES))
    log.info("calibration images=%d from=%s", len(paths), options.calib)
    _require_tensorflow()  # after the arguments' checks: they need none of it
    # The mtcnn package imports TensorFlow (seconds, and its start-up lines): after the checks.
    sources = {"mtcnn": mtcnn_source_identity(), "facenet": facenet.identity}

    with staged_folders(options.float_out, options.out) as (float_dir, out_dir):
        log.info("step 1/5: float reference models (%d pyramid levels)", len(scales))
        float_models = _float_models(options, float_dir, scales, facenet)
        float_manifest = _manifest(options, scales, float_models, sources)
        _write_manifest(float_dir, float_manifest)
        float_engine = Engine(parse_manifest(float_manifest), float_dir, select_backend("cpu"))

        log.info("step 2/5: calibration data from the float cascade")
        frames = door_frames(paths, options.camera, options.frames, options.seed)
        if not frames:
            raise BuildError(
                f"--calib {options.calib}: no door frame could be made from its {len(paths)} "
                f"images: each needs {PHOTOS_PER_FRAME} that can be read, and the warnings "
                "above name those that cannot; remove them or give a folder of photos"
            )
        inputs = cascade_inputs(float_engine, frames, options.crops, options.seed)
        faces = aligned_faces(float_engine, paths, options.faces)
        if len(faces) < MIN_FACES:
            raise BuildError(f"only {len(faces)} faces found for FaceNet calibration")
        log.info(
            "calibration rnet=%d onet=%d facenet=%d",
            len(inputs.get("rnet", [])),
            len(inputs.get("onet", [])),
            len(faces),
        )

        log.info("step 3/5: full-int8 models")
        models = {}
        with _quiet():
            for index, scale in enumerate(scales):
                levels = inputs[f"pnet@{scale:.6f}"]
                model = build_pnet(*level_shape(width, height, scale))
                data = convert_keras(model, partial(iter, levels))
                models[f"pnet_{index}"] = _save(out_dir, f"pnet_{index}", data, "pnet", scale)
            models["rnet"] = _save(
                out_dir, "rnet", convert_keras(build_rnet(), lambda: inputs["rnet"]), "rnet", None
            )
            models["onet"] = _save(
                out_dir, "onet", convert_keras(build_onet(), lambda: inputs["onet"]), "onet", None
            )
            models["facenet"] = _save(
                out_dir, "facenet", _convert_facenet(facenet, lambda: faces), "facenet", None
            )
        for entry in models.values():
            _check_input_quantisation(entry)
        if liveness is not None:
            log.info("step 3b/5: liveness models (%d)", len(liveness.files))
            float_live, live, record = _liveness_models(
                options, liveness, float_engine, float_dir, out_dir
            )
            models.update(live)
            _add_liveness(float_manifest, liveness, float_live, record)
            _write_manifest(float_dir, float_manifest)

        log.info("step 4/5: Edge TPU lint%s", " and compile" if options.edgetpu else "")
        _lint(out_dir, models)
        if options.edgetpu:
            _compile(out_dir, models)
        manifest = _manifest(options, scales, models, sources)
        manifest["float_cascade"] = ship_float_cascade(
            float_dir, float_models, out_dir / FLOAT_CASCADE_DIR, options.camera
        )
        int8_engine = Engine(parse_manifest(manifest), out_dir, select_backend("cpu"))
        manifest["thresholds"].update(stage_thresholds(float_engine, int8_engine, inputs))
        log.info("step 5/5: recognition threshold on LFW DevTrain")
        int8_engine = Engine(parse_manifest(manifest), out_dir, select_backend("cpu"))
        manifest["recognition"] = derive_threshold(int8_engine, options.lfw)
        check_recognition(manifest["recognition"], facenet)
        manifest["calibration"] = {
            "source": str(options.calib),
            "images": len(paths),
            "door_frames": len(frames),
            "rnet_crops": len(inputs.get("rnet", [])),
            "onet_crops": len(inputs.get("onet", [])),
            "facenet_faces": len(faces),
            "seed": options.seed,
        }
        if liveness is not None:
            _add_liveness(manifest, liveness, live, record)
            _check_liveness(manifest, out_dir, check_frames)
        _write_manifest(out_dir, manifest)
    log.info("built %s in %.0f s", options.out, time.monotonic() - started)
    return options.out


def _check_what_is_dropped(options: BuildOptions) -> None:
    """A full build replaces --out whole: refuse one that would drop an earlier build's
    liveness models unless asked (--no-liveness), and say which files added after a build
    (the centring mean, the cohort) it drops and how to add them back."""
    try:
        old = _read_manifest(options.out / MANIFEST_NAME)
    except (OSError, ValueError):
        return  # a new or empty folder (check_model_folder refused anything else)
    live = sorted(e["file"] for e in old["models"].values() if e.get("role") == LIVENESS_ROLE)
    if live and options.liveness is None and not options.drop_liveness:
        raise BuildError(
            f"--out {options.out} has liveness models ({', '.join(live)}) and this build, "
            "without --liveness, would drop them: the door would then let a printed photo in "
            "(or not start with liveness required). Pass --liveness DIR to build them again, "
            "or --no-liveness to drop them"
        )
    dropped = [name for name in (MEAN_FILE, COHORT_FILE) if (options.out / name).is_file()]
    if dropped:
        log.warning(
            "--out %s has %s, which a build does not make: they are dropped with the old "
            "folder; add them back with `make centring-mean cohort` (docs/ACCURACY.md)",
            options.out,
            " and ".join(dropped),
        )


def _check_outputs(options: BuildOptions, *, full: bool = True) -> None:
    """--out and --float-out: apart from each other and from every input (check_model_folder).

    full=False (--only liveness): the folders are copied, not replaced, so only the
    overlap with the inputs and with each other is checked."""
    inputs: dict[str, Path | None] = {
        "--calib": options.calib if full else None,
        "--lfw": options.lfw if full else None,
        "--facenet": options.facenet if full else None,
        "--liveness": options.liveness,
        "--liveness-calib": options.liveness_calib if options.liveness else None,
    }
    outputs: dict[str, Path | None] = {"--float-out": options.float_out}
    check_model_folder(options.out, "--out", inputs | outputs, replaced=full)
    check_model_folder(options.float_out, "--float-out", inputs, replaced=full)


def build_liveness_only(options: BuildOptions) -> Path:
    """Add or replace only the liveness models of an existing models folder.

    Every other file, and every other manifest entry, is kept as it is: the MTCNN and
    FaceNet models are not rebuilt. Faces for calibration come from the folder's own MTCNN.
    The float twins go to the float folder (its manifest is updated when it has one).
    """
    started = time.monotonic()
    _require_tensorflow()
    if options.liveness is None:
        raise BuildError("--only liveness needs --liveness DIR (the MiniFASNet .pth files)")
    manifest_path = options.out / MANIFEST_NAME
    try:
        manifest = _read_manifest(manifest_path)
    except (OSError, ValueError) as error:
        raise BuildError(
            f"--only liveness adds to a built models folder, and {manifest_path} is not "
            f"usable ({error}): run a full `edge-convert build` first"
        ) from None
    _check_outputs(options, full=False)
    check_frames = _liveness_check_frames(options)
    source = liveness_source(options.liveness)  # reads the weights: after the cheap checks
    engine = Engine.open(options.out, backend="cpu")
    old_files = {
        entry["file"] for entry in manifest["models"].values() if entry["role"] == LIVENESS_ROLE
    }
    with staged_folders(options.float_out, options.out, copy=True) as (float_dir, out_dir):
        for folder in (float_dir, out_dir):
            for file in old_files:
                (folder / file).unlink(missing_ok=True)
        float_live, live, record = _liveness_models(options, source, engine, float_dir, out_dir)
        log.info("Edge TPU lint%s", " and compile" if options.edgetpu else "")
        _lint(out_dir, live)
        if options.edgetpu:
            _compile(out_dir, live)
        _add_liveness(manifest, source, live, record)
        _check_liveness(manifest, out_dir, check_frames)
        _write_manifest(out_dir, manifest)
        float_manifest_path = float_dir / MANIFEST_NAME
        if float_manifest_path.is_file():
            try:
                float_manifest = _read_manifest(float_manifest_path)
            except (OSError, ValueError) as error:
                raise BuildError(f"{float_manifest_path} is not usable ({error})") from None
            _add_liveness(float_manifest, source, float_live, record)
            _write_manifest(float_dir, float_manifest)
    log.info("liveness models built into %s in %.0f s", options.out, time.monotonic() - started)
    return options.out


def stage_thresholds(
    float_engine: Engine, int8_engine: Engine, inputs: dict[str, list[np.ndarray]]
) -> dict[str, float]:
    """Per-stage int8 thresholds that keep what the float cascade keeps.

    Quantisation shifts scores near a threshold, and a candidate P-Net drops is lost for
    good. On the calibration inputs, each int8 threshold is lowered (never raised) until it
    keeps KEEP_FLOAT_POSITIVES of the candidates its float twin passes.
    """
    chosen = {}
    for stage in ("pnet", "rnet", "onet"):
        default = getattr(float_engine.cascade.thresholds, stage)
        probs_f, probs_q = [], []
        for key, batches in inputs.items():
            if key.split("@")[0] != stage:
                continue
            for batch in batches:
                if stage == "pnet":
                    h, w = batch.shape[1:3]
                    net_f, net_q = (
                        float_engine.cascade.pnet_for(h, w),
                        int8_engine.cascade.pnet_for(h, w),
                    )
                else:
                    net_f, net_q = (
                        getattr(float_engine.cascade, stage),
                        getattr(int8_engine.cascade, stage),
                    )
                probs_f.append(net_f.run(batch)["score"].ravel())
                probs_q.append(net_q.run(batch)["score"].ravel())
        logit_f, logit_q = np.concatenate(probs_f), np.concatenate(probs_q)
        positives = logit_q[logit_f > np.log(default / (1 - default))]
        if positives.size == 0:
            chosen[stage] = default
            continue
        cut = np.quantile(positives, 1 - KEEP_FLOAT_POSITIVES)
        chosen[stage] = round(float(min(default, 1 / (1 + np.exp(-cut)))), 3)
        log.info(
            "threshold %s: float %.2f -> int8 %.3f keeps %.1f%% of %d float positives",
            stage,
            default,
            chosen[stage],
            100 * np.mean(positives >= cut),
            positives.size,
        )
    return chosen


def _lint(folder: Path, models: dict) -> None:
    from converter.lint import format_report, lint_model

    # Named as in the manifest: `folder` is the build's staging folder, gone once it ends.
    violations = [
        v for entry in models.values() for v in lint_model(folder / entry["file"], entry["file"])
    ]
    if violations:
        raise BuildError("Edge TPU lint failed:\n" + format_report(violations))
    log.info("lint: %d models, 0 violations", len(models))


def _compile(folder: Path, models: dict) -> None:
    from converter.edgetpu import check_fully_mapped, compile_models, find_compiler

    if find_compiler() is None:
        log.warning(
            "edgetpu_compiler is not on PATH: Edge TPU models were not compiled (it runs on "
            "x86-64 Debian/Ubuntu from Coral's apt repository). The static lint passed."
        )
        return
    order = sorted(models, key=lambda n: (models[n]["role"] == "facenet", n))  # MTCNN first
    reports = compile_models([folder / models[n]["file"] for n in order], folder)
    for name, report in zip(order, reports, strict=True):
        check_fully_mapped(report)
        models[name]["edgetpu"] = EdgeTpuSpec(
            file=report.compiled.name,
            sha256=sha256_file(report.compiled),
            on_chip_mib=report.on_chip_mib,
            off_chip_mib=report.off_chip_mib,
        ).__dict__


def float_dir_for(out: Path) -> Path:
    return out.parent / "float"


# The float twins of the int8 P/R/O-Net, shipped inside the models folder for CPUs where
# float runs faster (edge_app/cascade_choice.py), and the probe frame both are timed on: one
# LFW face (already in tests/data) centred on a camera-sized shaded canvas.
FLOAT_CASCADE_DIR = "float"
PROBE_NAME = "probe.jpg"
PROBE_PHOTO = REPO_ROOT / "tests/data/lfw_sample/Donald_Pettit/Donald_Pettit_0001.jpg"


def probe_frame(photo: Path, camera: tuple[int, int]) -> np.ndarray:
    """One face on a camera-sized canvas: `photo` centred on a left-to-right grey ramp."""
    width, height = camera
    shade = np.linspace(60, 160, width, dtype=np.float32)[None, :, None]
    frame = np.broadcast_to(shade, (height, width, 3)).astype(np.uint8).copy()
    image = read_image(photo)
    fit = min(1.0, width / image.shape[1], height / image.shape[0])
    if fit < 1.0:
        import cv2

        size = (int(image.shape[1] * fit), int(image.shape[0] * fit))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    top, left = (height - image.shape[0]) // 2, (width - image.shape[1]) // 2
    frame[top : top + image.shape[0], left : left + image.shape[1]] = image
    return frame


def _check_probe_photo(photo: Path) -> None:
    """The float cascade's probe photo is read now, not after an hour of converting."""
    if photo.exists() and not photo.is_file():
        raise BuildError(f"the probe photo {photo} is not a regular file; give a photo of a face")
    if not photo.is_file() and photo != PROBE_PHOTO:  # one given with --probe-photo
        raise BuildError(f"the probe photo {photo} does not exist; give a photo of one face")
    if not photo.is_file():  # the default one, missing from an installed copy
        raise BuildError(
            f"the probe photo {photo} is missing: it is part of the source checkout "
            "(tests/data), so run edge-convert from a checkout of edge-app"
        )
    read_image(photo)


def _check_probe_face(models_dir: Path, photo: Path, camera: tuple[int, int]) -> None:
    """The probe frame must show one face, as a door frame does: `cascade = auto` times the
    int8 and float cascades on it, and on a frame without a face R-Net and O-Net never run,
    so the choice would be timed on the wrong work."""
    from edge_app.engine import Engine

    engine = Engine.open(models_dir, backend="cpu", cascade="int8")
    found = len(engine.detect(probe_frame(photo, camera)))
    if found != 1:
        raise BuildError(
            f"the probe photo {photo} shows {found} faces the int8 cascade finds: it must show "
            "one (the cascades are timed on it); give a photo of one face"
        )


def ship_float_cascade(
    float_dir: Path,
    float_models: dict,
    target: Path,
    camera: tuple[int, int],
    photo: Path = PROBE_PHOTO,
    prefix: str = FLOAT_CASCADE_DIR,
) -> dict:
    """Copy the float P/R/O-Net from `float_dir` into `target` (the folder that will be
    MODELS/`prefix`) with the probe frame; the manifest's `float_cascade` section for them."""
    import cv2

    target.mkdir(parents=True, exist_ok=True)
    models = {}
    for name, entry in float_models.items():
        if entry["role"] not in CASCADE_ROLES:
            continue
        shutil.copyfile(float_dir / entry["file"], target / entry["file"])
        models[name] = {**entry, "file": f"{prefix}/{entry['file']}"}
    probe = target / PROBE_NAME
    frame = probe_frame(photo, camera)
    if not cv2.imwrite(str(probe), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
        raise BuildError(f"cannot write {probe}")
    defaults = Thresholds()
    return {
        "thresholds": {role: getattr(defaults, role) for role in CASCADE_ROLES},
        "probe": f"{prefix}/{PROBE_NAME}",
        "probe_sha256": sha256_file(probe),
        "models": models,
    }


def _same_shapes(int8: dict, float_entry: dict, name: str) -> None:
    """The float twin must take the int8 model's input shape and give the same outputs."""
    shapes = [t["shape"] for t in int8["inputs"]], [t["shape"] for t in float_entry["inputs"]]
    roles = (
        sorted(t["role"] for t in int8["outputs"]),
        sorted(t["role"] for t in float_entry["outputs"]),
    )
    if shapes[0] != shapes[1] or roles[0] != roles[1] or int8["scale"] != float_entry["scale"]:
        raise BuildError(
            f"{name}: the float model (input {shapes[1]}, outputs {roles[1]}) is not the twin "
            f"of the int8 one (input {shapes[0]}, outputs {roles[0]})"
        )


def _bytes_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def add_float_cascade(models_dir: Path, photo: Path = PROBE_PHOTO) -> Path:
    """`edge-convert float-cascade`: add the float P/R/O-Net to an existing models folder.

    Builds the float twins of the manifest's P-Net levels, R-Net and O-Net from the same
    weights and recipe as `build`'s float step, into MODELS/float, and adds the
    `float_cascade` section to manifest.json. Every other file, int8 models included, is
    left byte for byte as it was. The float folder is staged and the manifest written to a
    temporary file and renamed, so a failure leaves the previous state.
    """
    _require_tensorflow()
    # The whole run holds the models folder as a build into it does: a build that swapped in
    # new models meanwhile had its manifest replaced by one made from the old (every model a
    # sha256 mismatch: the door refused to start), or this run's float folder dropped.
    with _build_lock(models_dir.parent, [models_dir]):
        return _add_float_cascade(models_dir, photo)


def _add_float_cascade(models_dir: Path, photo: Path) -> Path:
    manifest_path = models_dir / MANIFEST_NAME
    load_manifest(models_dir)  # a clear error when it is missing or malformed
    try:
        read = manifest_path.read_bytes()
        data = _read_manifest(manifest_path)
    except (OSError, ValueError) as error:  # changed since load_manifest read it
        raise BuildError(f"{manifest_path} is not usable ({error})") from None
    _check_probe_photo(photo)
    camera = (int(data["camera"][0]), int(data["camera"][1]))
    _check_probe_face(models_dir, photo, camera)
    source = mtcnn_source_identity()
    if data.get("sources", {}).get("mtcnn") != source:
        raise BuildError(
            f"the int8 models were built from MTCNN weights {data.get('sources', {}).get('mtcnn')}"
            f" but this converter has {source}: their float twins cannot be built here"
        )
    pnets = {n: float(s["scale"]) for n, s in data["models"].items() if s["role"] == "pnet"}
    with tempfile.TemporaryDirectory(prefix="edge-float-") as work:
        float_dir = Path(work)
        models = {}
        with _quiet():
            for name, scale in pnets.items():
                height, width = level_shape(*camera, scale)
                model = convert_keras(build_pnet(height, width))
                models[name] = _save(float_dir, name, model, "pnet", scale)
            models["rnet"] = _save(float_dir, "rnet", convert_keras(build_rnet()), "rnet", None)
            models["onet"] = _save(float_dir, "onet", convert_keras(build_onet()), "onet", None)
        for name, entry in models.items():
            _same_shapes(data["models"][name], entry, name)
        pending = manifest_path.with_name(f".{MANIFEST_NAME}.new")
        try:
            with staged_folder(models_dir / FLOAT_CASCADE_DIR) as staging:
                data["float_cascade"] = ship_float_cascade(
                    float_dir, models, staging, camera, photo
                )
                text = parse_manifest(data).to_json()  # the device's own validation
                pending.write_text(text, encoding="utf-8")  # a full disk: none of it stays
                if _bytes_or_none(manifest_path) != read:  # by a writer holding no lock
                    raise BuildError(
                        f"{manifest_path} changed while the float cascade was built; nothing "
                        "was replaced: run edge-convert float-cascade again"
                    )
            os.replace(pending, manifest_path)
        finally:
            pending.unlink(missing_ok=True)
    target = models_dir / FLOAT_CASCADE_DIR
    log.info("float cascade: %d models and the probe frame in %s", len(models), target)
    return target
