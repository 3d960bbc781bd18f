"""The recognition engine: detection and embeddings behind three calls.

    engine = Engine.open()                 # models from the manifest, TPU or CPU chosen once
    faces = engine.detect(frame)           # RGB uint8 frame -> Faces
    embeddings = engine.embed(frame, faces)  # (N, 512) float32, L2-normalised
    faces, embeddings = engine.process(frame)
    scores = engine.liveness(frame, faces)  # (N,) in [0, 1], when engine.has_liveness

Interpreters are created here, once, and reused for every frame.
"""

from __future__ import annotations

import hashlib
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import cv2
import numpy as np

from edge_app.adapters import ModelRunner, tensor_mismatch
from edge_app.align import FACENET_SIZE, face_crops
from edge_app.bounded_read import read_bounded
from edge_app.cascade_choice import CascadeChoice, open_engine
from edge_app.centering import EMBEDDING_DIM, centre, load_mean, model_identity
from edge_app.cohort import load_cohort
from edge_app.detection.cascade import ONET_SIZE, RNET_SIZE, Cascade, Thresholds
from edge_app.detection.pyramid import DEFAULT_FACTOR, PNET_CELL, level_shape
from edge_app.errors import UserError
from edge_app.faces import Faces
from edge_app.liveness import SPOOF_LOGITS, LivenessScorer
from edge_app.manifest import (
    LIVENESS_ROLE,
    Manifest,
    ManifestError,
    ModelSpec,
    load_manifest,
    verify_files,
)
from edge_app.paths import default_models_dir
from edge_app.runtime import (
    MAX_THREADS,
    Backend,
    RuntimeUnavailable,
    make_interpreter,
    select_backend,
)

if TYPE_CHECKING:
    from edge_app.config import DetectionConfig, ModelsConfig

log = logging.getLogger(__name__)

# The crop margin: the total added around the MTCNN box before the FaceNet crop, as a fraction
# of the box width (not the score margin of matching.py). Chosen on LFW DevTrain (10-fold
# accuracy, int8 models): 0.05 98.45%, 0.1 98.64%, 0.15 99.05%, 0.2 98.95%,
# 0.25 98.95%, 0.3 98.45%, 0.47 98.55% (the published 44 px on the median 93 px LFW face),
# 0.65 97.41%. 0.2 sits in the middle of the plateau.
CROP_MARGIN = 0.2
# CPU only: P-Nets resized to pyramid levels of frame sizes other than the compiled camera
# size, least recently used dropped beyond this many. A photo up to the 2048 px that enroll
# and identify bring photos down to has at most 12 levels, so two photo sizes stay warm;
# unbounded, 40 frames of 40 sizes (400x300 to 1843x1197) held 306 interpreters and 1.1 GB
# RSS; with this bound 24 and 322 MB (docs/RELIABILITY.md has the command).
MAX_RESIZED_PNETS = 24
# The largest model file the engine reads (FaceNet, the largest, is about 25 MB).
MAX_MODEL_BYTES = 256 * 1024 * 1024
# What the engine feeds each kind of model, as (height, width) (P-Net: its pyramid level, at
# least one 12-pixel window; liveness: its manifest patch), and the last dimension of each
# output it reads (None: any). A model that differs cannot run here, whatever its manifest.
ROLE_INPUTS = {
    "rnet": (RNET_SIZE, RNET_SIZE),
    "onet": (ONET_SIZE, ONET_SIZE),
    "facenet": (FACENET_SIZE, FACENET_SIZE),
}
ROLE_OUTPUTS: dict[str, dict[str, int | None]] = {
    "pnet": {"score": 1, "box": 4},
    "rnet": {"score": 1, "box": 4},
    "onet": {"score": 1, "box": 4, "landmarks": 10},
    "facenet": {"embedding": EMBEDDING_DIM},
    LIVENESS_ROLE: {SPOOF_LOGITS: None},
}
INPUT_DTYPES = ("uint8", "int8", "float32")  # what edge_app.adapters converts pixels to
FIX_MODELS = (
    "restore the models folder shipped with edge-app or rebuild it with `edge-convert build`"
)

T = TypeVar("T")


def role_problem(spec: ModelSpec) -> str | None:
    """Why the engine cannot run the model `spec` describes in its role, or None: one RGB
    image in, of the size the engine cuts for that role, and the outputs it reads."""
    if len(spec.inputs) != 1:
        return f"it has {len(spec.inputs)} inputs, the engine feeds one image"
    [pixels] = spec.inputs
    if spec.role == "pnet":
        size = None
    elif spec.patch is not None:
        size = (spec.patch.height, spec.patch.width)
    else:
        size = ROLE_INPUTS[spec.role]
    shape = pixels.shape
    if (
        len(shape) != 4
        or (shape[0], shape[3]) != (1, 3)
        or (size is not None and (shape[1], shape[2]) != size)
        or (size is None and min(shape[1:3]) < PNET_CELL)
    ):
        height, width = size or ("H", "W")
        return f"its input is {shape}, the engine feeds [1, {height}, {width}, 3]"
    if pixels.dtype not in INPUT_DTYPES or (pixels.dtype != "float32" and not pixels.scale > 0):
        return (
            f"its input is {pixels.dtype} with scale {pixels.scale:g}, the engine feeds "
            f"float32 or quantised {', '.join(INPUT_DTYPES[:2])}"
        )
    for role, last in ROLE_OUTPUTS[spec.role].items():
        found = [tensor.shape for tensor in spec.outputs if tensor.role == role]
        if len(found) != 1:
            return f"it has {len(found)} outputs with role {role!r}, the engine reads one"
        [shape] = found
        expected = ["1", "H", "W", str(last)] if spec.role == "pnet" else ["1", str(last or "K")]
        if (
            len(shape) != len(expected)
            or shape[0] != 1
            or min(shape) < 1
            or (last is not None and shape[-1] != last)
        ):
            return f"its output {role!r} is {shape}, the engine reads [{', '.join(expected)}]"
    return None


def _check_frame(frame: np.ndarray) -> None:
    """detect, embed and liveness all refuse what is not an RGB uint8 frame: a uint16 or float
    frame would otherwise be cut into crops modulo 256, garbage scored as a face."""
    if not (
        isinstance(frame, np.ndarray)
        and frame.ndim == 3
        and frame.shape[2] == 3
        and frame.dtype == np.uint8
    ):
        raise ValueError("frames must be RGB uint8 arrays shaped (H, W, 3)")


def _with_area(boxes: np.ndarray) -> np.ndarray:
    """Mask of the (N, 4) boxes that are finite and have an area (x2 > x1, y2 > y1)."""
    x1, y1, x2, y2 = boxes.T
    return np.asarray(np.isfinite(boxes).all(axis=1) & (x2 > x1) & (y2 > y1))


def _check_faces(frame: np.ndarray, faces: Faces) -> None:
    """embed and liveness refuse faces no detection of this frame gives: arrays of different
    counts, and boxes that are not finite, are empty or inverted, or lie wholly outside the
    frame (a crop of nothing, black, would be embedded, and liveness would score a patch
    moved onto the frame)."""
    count = len(faces)
    shapes = (faces.boxes.shape, faces.scores.shape, faces.landmarks.shape)
    if shapes != ((count, 4), (count,), (count, 5, 2)):
        raise ValueError(
            f"faces must hold (N, 4) boxes, (N,) scores and (N, 5, 2) landmarks; got "
            f"{faces.boxes.shape}, {faces.scores.shape} and {faces.landmarks.shape}"
        )
    x1, y1, x2, y2 = np.asarray(faces.boxes, np.float64).T
    height, width = frame.shape[:2]
    usable = _with_area(faces.boxes) & (x1 < width) & (y1 < height) & (x2 > 0) & (y2 > 0)
    if not usable.all():
        bad = int(np.flatnonzero(~usable)[0])
        raise ValueError(
            f"face {bad}'s box {faces.boxes[bad].tolist()} is not a box in this "
            f"{width}x{height} frame (finite, x2 > x1, y2 > y1, overlapping it)"
        )


def not_compiled_for_tpu(models_dir: Path) -> str:
    """The refusal of `backend = "edgetpu"` for models with no Edge TPU build."""
    return (
        f"backend edgetpu: the models in {models_dir} are not compiled for the Edge TPU; "
        "build them with `edge-convert build --edgetpu`, or run them on the CPU (backend auto "
        "or cpu)"
    )


def tpu_models_problem(manifest: Manifest, models_dir: Path, backend: str) -> str | None:
    """What the door would refuse in the Edge TPU builds of the models when it runs on
    `backend` with an Edge TPU present, checked without opening one: none for "edgetpu", or
    a file that does not match its sha256; None when there is nothing to refuse."""
    if backend == "cpu":
        return None
    if not manifest.for_edgetpu:
        return not_compiled_for_tpu(models_dir) if backend == "edgetpu" else None
    return files_problem(manifest, models_dir, edgetpu=True, cpu=False)  # the CPU's: loaded


def files_problem(
    manifest: Manifest, models_dir: Path, edgetpu: bool, cpu: bool = True
) -> str | None:
    """The files of `models_dir` that are missing or do not match their sha256 in the
    manifest (with the Edge TPU builds when `edgetpu`; those only when not `cpu`), in one
    line; None when all match."""
    problems = verify_files(manifest, models_dir, edgetpu=edgetpu, cpu=cpu)
    if not problems:
        return None
    return (
        f"models do not match the manifest: {'; '.join(problems)}. Rebuild them with "
        "`edge-convert build`"
    )


def _shipped(what: str, fix: str, load: Callable[[], T]) -> T:
    """A file the manifest ships beside the models (centring mean, cohort), loaded; a damaged
    one is a one-line UserError naming it, whatever numpy raised on it."""
    try:
        return load()
    except ManifestError as error:
        raise UserError(str(error)) from None
    except (OSError, EOFError, ValueError, TypeError) as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        raise UserError(
            f"{what}: cannot be used ({reason}); restore the file shipped with the models "
            f"or rebuild it with `{fix}`"
        ) from None


def _levels_of(engine: Engine) -> Callable[[int, int], ModelRunner]:
    """engine._pnet_for for the engine's own cascade, through a weak reference: a bound
    method would make the engine and its cascade a cycle, which only the garbage collector
    frees, so an engine dropped (the hub's health check, an idle enrolment engine) kept its
    interpreters and their threads, about 100 MB, until a collection happened to run."""
    owner = weakref.ref(engine)

    def pnet_for(height: int, width: int) -> ModelRunner:
        live = owner()
        if live is None:
            raise RuntimeError("the engine this cascade belongs to was released")
        return live._pnet_for(height, width)

    return pnet_for


class Engine:
    def __init__(
        self,
        manifest: Manifest,
        models_dir: Path,
        backend: Backend,
        min_face: float | None = None,
        thresholds: dict[str, float] | None = None,
        facenet: ModelRunner | None = None,
    ) -> None:
        """facenet: an already open FaceNet runner to share (edge_app/cascade_choice.py)."""
        self.manifest = manifest
        self.models_dir = Path(models_dir)
        self.backend = backend
        self._tpu = backend.kind == "edgetpu"
        self.camera = (int(manifest.camera[0]), int(manifest.camera[1]))
        if self._tpu and min_face not in (None, manifest.min_face):
            log.warning(
                "min_face=%s ignored: the Edge TPU models are compiled for min_face=%d",
                min_face,
                manifest.min_face,
            )
            min_face = None
        values = {**manifest.thresholds, **(thresholds or {})}
        self._contents: dict[str, bytes] = {}  # model file -> its checked bytes (_model)
        self.crop_margin = float(manifest.preprocessing.get("facenet_margin", CROP_MARGIN))
        self._pnets = {}
        for _, spec in manifest.by_role("pnet"):
            runner = self._runner(spec)
            self._pnets[runner.input_shape[1:3]] = runner
        self._resized_pnets: OrderedDict[tuple[int, int], ModelRunner] = OrderedDict()
        [(_, rnet_spec)] = manifest.by_role("rnet")
        [(_, onet_spec)] = manifest.by_role("onet")
        [(_, facenet_spec)] = manifest.by_role("facenet")
        self.cascade = Cascade(
            _levels_of(self),
            self._runner(rnet_spec),
            self._runner(onet_spec),
            min_face=float(min_face or manifest.min_face),
            thresholds=Thresholds.from_mapping(values),
            factor=float(manifest.pyramid.get("factor", DEFAULT_FACTOR)),
            scales=[float(v) for v in manifest.pyramid["scales"]] if self._tpu else None,
        )
        self._facenet = facenet or self._runner(facenet_spec)
        # Which cascade runs and why; set by Engine.open (edge_app/cascade_choice.py).
        self.cascade_choice: CascadeChoice | None = None
        if self._tpu:
            self._check_tpu_levels()
        # The shipped mean embedding (edge_app.centering), None when the manifest has none.
        self.mean = _shipped(
            f"{self.models_dir}: manifest.preprocessing.facenet_mean",
            "make centring-mean",
            lambda: load_mean(self.models_dir, manifest.preprocessing),
        )
        self.embedding_model = model_identity(facenet_spec.sha256, self.mean)
        # The shipped cohort score normaliser (edge_app.cohort), None when the manifest has none.
        self.cohort = _shipped(
            f"{self.models_dir}: manifest.recognition.cohort",
            "make cohort",
            lambda: load_cohort(self.models_dir, manifest.recognition, self.embedding_model),
        )
        liveness_specs = manifest.by_role(LIVENESS_ROLE)
        self._liveness = (
            LivenessScorer([self._runner(spec) for _, spec in liveness_specs])
            if liveness_specs
            else None
        )
        self.timings: dict[str, float] = {}

    @classmethod
    def open(
        cls,
        models_dir: Path | None = None,
        backend: str = "auto",
        threads: int | None = None,
        min_face: float | None = None,
        thresholds: dict[str, float] | None = None,
        verify: bool = True,
        cascade: str = "int8",
    ) -> Engine:
        """Load the manifest, check the files against their hashes, pick the backend.

        cascade: "int8", "float" or "auto" (the faster on this CPU, measured at start-up);
        the Edge TPU runs int8 whatever is asked (edge_app/cascade_choice.py).
        """
        if threads is not None and not 1 <= threads <= MAX_THREADS:
            raise UserError(f"--threads {threads}: must be 1 to {MAX_THREADS}")
        models_dir = Path(models_dir) if models_dir else default_models_dir()
        try:
            manifest = load_manifest(models_dir)
        except ManifestError as error:
            raise UserError(str(error)) from None
        try:
            chosen = select_backend(backend, threads)
        except RuntimeUnavailable as error:
            raise UserError(str(error)) from None
        if verify:
            problem = files_problem(manifest, models_dir, edgetpu=chosen.kind == "edgetpu")
            if problem is not None:
                raise UserError(problem)
        if chosen.kind == "edgetpu" and not manifest.for_edgetpu:
            if backend == "edgetpu":
                raise UserError(not_compiled_for_tpu(models_dir))
            log.warning("manifest has no Edge TPU models; running the int8 CPU models instead")
            chosen = select_backend(
                "cpu", threads, why_cpu="the models are not compiled for the Edge TPU"
            )
        return open_engine(
            cls,
            manifest,
            models_dir,
            chosen,
            cascade,
            verify=verify,
            min_face=min_face,
            thresholds=thresholds,
        )

    @classmethod
    def from_config(cls, models: ModelsConfig, detection: DetectionConfig) -> Engine:
        """The engine a config's [models] and [detection] sections describe, as the door runs
        it (the daemon, doctor and web enrolment all open it this way)."""
        return cls.open(
            models_dir=models.dir,
            backend=models.backend,
            threads=models.threads,
            min_face=detection.min_face,
            cascade=models.cascade,
        )

    def _model(self, spec: ModelSpec) -> tuple[Path, bytes]:
        """The model file this backend runs, read once and checked against its sha256: every
        interpreter of it, the P-Nets resized later included, is made from these bytes, never
        from whatever the file holds by then (a models folder replaced under a running door)."""
        file, sha256 = (
            (spec.edgetpu.file, spec.edgetpu.sha256)
            if self._tpu and spec.edgetpu
            else (spec.file, spec.sha256)
        )
        path = self.models_dir / file
        content = self._contents.get(file)
        if content is None:
            try:
                content = read_bounded(path, MAX_MODEL_BYTES)
            except OSError as error:
                reason = error.strerror or type(error).__name__
                raise UserError(f"{path}: cannot be read ({reason}); {FIX_MODELS}") from None
            if hashlib.sha256(content).hexdigest() != sha256:
                raise UserError(f"{path}: does not match its sha256 in the manifest; {FIX_MODELS}")
            self._contents[file] = content
        return path, content

    def _runner(self, spec: ModelSpec) -> ModelRunner:
        """The model's interpreter, refused in one line when the runtime cannot load the file
        or the file is not the model its manifest entry describes (edge_app.adapters) or one
        the engine can run in that role (role_problem)."""
        path, content = self._model(spec)
        try:
            interpreter = make_interpreter(content, self.backend)
        except (ValueError, RuntimeError, OSError) as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise UserError(
                f"{path}: the TFLite runtime cannot load it on the {self.backend.kind} "
                f"({reason}); {FIX_MODELS}"
            ) from None
        problem = tensor_mismatch(interpreter, spec)
        if problem is not None:
            raise UserError(
                f"{path}: not the model its manifest entry describes: {problem}; {FIX_MODELS}"
            )
        problem = role_problem(spec)
        if problem is not None:
            raise UserError(f"{path}: not a {spec.role} model this engine can run: {problem}")
        return ModelRunner(interpreter, spec)

    def _check_tpu_levels(self) -> None:
        """The Edge TPU runs each pyramid level of the compiled camera frame on the P-Net
        compiled for it: every level must have one, or every frame would fail."""
        width, height = self.camera
        for scale in self.cascade.scales(width, height):
            shape = level_shape(width, height, scale)
            if shape not in self._pnets:
                raise UserError(
                    f"{self.models_dir}: no P-Net for the {shape[1]}x{shape[0]} level "
                    f"(scale {scale:g}) of the manifest's {width}x{height} camera frame; "
                    f"its camera, pyramid.scales and P-Net models disagree: {FIX_MODELS}"
                )

    def _pnet_for(self, height: int, width: int) -> ModelRunner:
        """The compiled model for this level, or (CPU only) a P-Net resized to it, kept in a
        small LRU cache (MAX_RESIZED_PNETS)."""
        runner = self._pnets.get((height, width))
        if runner is not None:
            return runner
        runner = self._resized_pnets.get((height, width))
        if runner is not None:
            self._resized_pnets.move_to_end((height, width))
            return runner
        if self._tpu:
            raise RuntimeError(f"no Edge TPU P-Net for a {width}x{height} level")
        template = next(iter(self._pnets.values()))
        runner = self._runner(template.spec)
        runner.resize((1, height, width, 3))
        self._resized_pnets[(height, width)] = runner
        while len(self._resized_pnets) > MAX_RESIZED_PNETS:
            self._resized_pnets.popitem(last=False)
        return runner

    def _fit_to_compiled(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """Letterbox a frame into the compiled camera size (Edge TPU shapes are fixed)."""
        width, height = self.camera
        scale = min(width / frame.shape[1], height / frame.shape[0])
        resized = cv2.resize(
            frame,
            # at least a pixel: a frame of 1x5000 would round to no width at all
            (
                max(1, min(width, round(frame.shape[1] * scale))),
                max(1, min(height, round(frame.shape[0] * scale))),
            ),
            interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
        )
        canvas = np.zeros((height, width, 3), np.uint8)
        canvas[: resized.shape[0], : resized.shape[1]] = resized
        return canvas, scale

    def detect(self, frame: np.ndarray) -> Faces:
        _check_frame(frame)
        if frame.size == 0:  # no pixels, no faces (and nothing to letterbox)
            self.timings = {}
            return Faces.empty()
        if self._tpu and (frame.shape[1], frame.shape[0]) != self.camera:
            canvas, scale = self._fit_to_compiled(frame)
            faces = self.cascade.detect(canvas)
            faces = Faces(faces.boxes / scale, faces.scores, faces.landmarks / scale)
        else:
            faces = self.cascade.detect(frame)
        self.timings = dict(self.cascade.timings)
        # A box of no area or not finite is no face, and embed would refuse it (_check_faces):
        # none is expected of the cascade, and none may stop the door.
        whole = _with_area(faces.boxes)
        return faces if whole.all() else faces[whole]

    def embed_raw(self, frame: np.ndarray, faces: Faces, mirror: bool = False) -> np.ndarray:
        """(N, 512) FaceNet outputs before normalisation (mirror: of the flipped crops)."""
        _check_frame(frame)
        _check_faces(frame, faces)
        start = time.perf_counter()
        crops = face_crops(frame, faces, self.crop_margin)
        if mirror:
            crops = np.ascontiguousarray(crops[:, :, ::-1])
        self.timings["align"] = time.perf_counter() - start
        return self.embed_crops(crops)

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """(N, 512) FaceNet outputs before normalisation of (N, 160, 160, 3) uint8 RGB crops
        (edge_app.align makes them from faces; benchmarks try other crops through here)."""
        start = time.perf_counter()
        if len(crops) == 0:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        raw = np.concatenate([self._facenet.run(crop[None])["embedding"] for crop in crops])
        self.timings["facenet"] = time.perf_counter() - start
        return raw.astype(np.float32)

    def embed(self, frame: np.ndarray, faces: Faces, mirror: bool = False) -> np.ndarray:
        """(N, 512) unit embeddings, centred on the shipped mean when there is one (mirror:
        of the flipped crops, as enrolment stores beside each photo's own)."""
        return centre(self.embed_raw(frame, faces, mirror), self.mean)

    @property
    def min_face(self) -> float:
        """The smallest face the detector looks for, in pixels of the detection frame
        (detection.min_face, or the models' own with "auto")."""
        return self.cascade.min_face

    @property
    def has_liveness(self) -> bool:
        """Whether the models folder has liveness models (a build with --liveness)."""
        return self._liveness is not None

    def liveness(self, frame: np.ndarray, faces: Faces) -> np.ndarray:
        """(N,) float32 liveness per face in [0, 1], higher = live (edge_app/liveness.py)."""
        if self._liveness is None:
            raise UserError(
                f"{self.models_dir} has no liveness models: rebuild them with "
                "`edge-convert build --only liveness --liveness DIR` (the MiniFASNet weights)"
            )
        _check_frame(frame)
        _check_faces(frame, faces)
        scores = self._liveness.score(frame, faces)
        self.timings.update(self._liveness.timings)
        return scores

    def process(self, frame: np.ndarray) -> tuple[Faces, np.ndarray]:
        faces = self.detect(frame)
        return faces, self.embed(frame, faces)
