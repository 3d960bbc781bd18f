"""The models manifest: every number the runtime needs, written by the converter.

The converter and the device share this one definition, so a field cannot be written under
one name and read under another. Loading validates structure and names the bad key.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from edge_app import untrusted_json
from edge_app.bounded_read import NotRegularFile, TooLarge, missing_or_kind, read_bounded
from edge_app.errors import UserError, shown_value

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
ROLES = ("pnet", "rnet", "onet", "facenet")
# Roles a models folder may lack: the engine runs without them (and says so).
LIVENESS_ROLE = "liveness"
OPTIONAL_ROLES = (LIVENESS_ROLE,)
# How a patch model's input pixels are encoded: "raw" is 0-255 as is (the uint8 input with
# scale 1, zero point 0), "standardised" is (x - 127.5) / 128 like the MTCNN and FaceNet inputs.
PIXEL_ENCODINGS = ("raw", "standardised")
COLOR_ORDERS = ("RGB", "BGR")
# The committed manifest is about 34 kB: a file a hundred times larger is not a manifest.
MANIFEST_MAX_BYTES = 4 * 1024 * 1024
# Roles the engine runs exactly one model of (P-Net has one per pyramid level).
SINGLE_ROLES = ("rnet", "onet", "facenet")
# Stage thresholds are face probabilities, strictly between 0 and 1 (0 passes everything, 1
# nothing); the NMS limits are overlaps, above 0 and at most 1.
STAGE_THRESHOLDS = ("pnet", "rnet", "onet")
NMS_THRESHOLDS = ("nms_scale", "nms_pnet", "nms_rnet", "nms_onet")
# The pyramid factor: MTCNN's 0.709 halves each level's area. Below 0.5 a face size falls
# between levels; above 0.75 a frame of the largest size the config allows (8192 px) and
# the smallest face (12 px) has more levels than the engine keeps P-Nets for (24).
PYRAMID_FACTORS = (0.5, 0.75)
MAX_CAMERA_SIDE = 16384
# A tensor's dimension (the largest a model here has is a camera-sized P-Net input) and its
# zero point (int8 and uint8 tensors: -128..255; int32 biases: 0).
MAX_DIMENSION = MAX_CAMERA_SIDE
ZERO_POINTS = (-128, 255)
# The liveness models the engine averages: the build makes two (MiniFASNetV2 and V1SE);
# each one is an interpreter and a patch per face, so a manifest cannot list thousands.
MAX_LIVENESS_MODELS = 2
# A liveness patch is the face box enlarged `scale` times (the built models: 2.7 and 4), at
# most PATCH_MAX_PIXELS a side (they take 80x80).
PATCH_SCALES = (1.0, 8.0)
PATCH_MAX_PIXELS = 1024

# The recognition numbers, wherever they are set (the door's config, a models manifest's
# recognition block, edge_app.matching.MatchSettings, identify's flags): (low, high, low
# excluded, high excluded). The threshold a score must reach is above 0 (at 0 a face unlike
# every enrolled one, cosine 0, would be let in); the margin is the lead over the
# second-best person, on the cosine scale; trim is the share of a person's sample scores a
# trimmed mean drops from each end, below a half (at a half nothing is left).
RECOGNITION_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "threshold": (0.0, 1.0, True, False),
    "margin": (0.0, 2.0, False, False),
    "trim": (0.0, 0.5, False, True),
}


def recognition_range(key: str) -> str:
    """The range of the recognition number `key` in words: "more than 0 and at most 1"."""
    low, high, low_open, high_open = RECOGNITION_RANGES[key]
    return (
        f"{'more than' if low_open else 'at least'} {low:g} and "
        f"{'below' if high_open else 'at most'} {high:g}"
    )


def recognition_problem(key: str, value: float) -> str | None:
    """What is wrong with `value` for the recognition number `key`, or None."""
    low, high, low_open, high_open = RECOGNITION_RANGES[key]
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number"
    below = value <= low if low_open else value < low
    if below or (value >= high if high_open else value > high):
        shown = f"{value:g}" if isinstance(value, float) else shown_value(value)
        return f"{shown} is out of range ({recognition_range(key)})"
    return None


class ManifestError(UserError, ValueError):
    """The manifest is missing, unreadable, or does not describe usable models.

    A UserError (the message says how to fix it, so every CLI prints it as one line) and a
    ValueError (what callers that validate data catch)."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor; `role` says what an output holds (score, box, ...)."""

    name: str
    shape: list[int]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0
    role: str = ""


@dataclass(frozen=True)
class EdgeTpuSpec:
    """The compiled twin of a CPU model, with the compiler's own SRAM accounting."""

    file: str
    sha256: str
    on_chip_mib: float | None = None
    off_chip_mib: float | None = None


@dataclass(frozen=True)
class PatchSpec:
    """How a liveness model's input patch is cut from the frame.

    The face box is enlarged `scale` times about its centre, shifted inside the frame, and
    resized to width x height; `color` is the channel order and `pixels` the encoding the
    model expects.
    """

    scale: float
    width: int
    height: int
    color: str = "BGR"
    pixels: str = "raw"


@dataclass(frozen=True)
class ModelSpec:
    role: str
    file: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    scale: float | None = None
    edgetpu: EdgeTpuSpec | None = None
    patch: PatchSpec | None = None

    def output(self, role: str) -> TensorSpec:
        for tensor in self.outputs:
            if tensor.role == role:
                return tensor
        raise ManifestError(f"model {self.file} has no output with role {role!r}")


CASCADE_ROLES = ("pnet", "rnet", "onet")


@dataclass(frozen=True)
class FloatCascade:
    """The float twins of the int8 P/R/O-Net, shipped beside them for CPUs where float runs
    faster (edge_app/cascade_choice.py), with their own stage thresholds and the frame the
    engine times both cascades on. Files are relative to the models folder."""

    models: dict[str, ModelSpec]
    thresholds: dict[str, float]
    probe: str
    probe_sha256: str


@dataclass(frozen=True)
class Manifest:
    camera: list[int]
    min_face: int
    pyramid: dict[str, Any]
    preprocessing: dict[str, Any]
    thresholds: dict[str, float]
    models: dict[str, ModelSpec]
    sources: dict[str, Any] = field(default_factory=dict)
    converter: dict[str, Any] = field(default_factory=dict)
    recognition: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    liveness: dict[str, Any] = field(default_factory=dict)
    created_utc: str = ""
    format_version: int = FORMAT_VERSION
    float_cascade: FloatCascade | None = None

    @property
    def for_edgetpu(self) -> bool:
        """Whether every model has an Edge TPU build (the door runs them there only then)."""
        return all(spec.edgetpu is not None for spec in self.models.values())

    def by_role(self, role: str) -> list[tuple[str, ModelSpec]]:
        """Models of one role; P-Net models come in pyramid order, largest scale first."""
        found = [(name, spec) for name, spec in self.models.items() if spec.role == role]
        return sorted(found, key=lambda item: -(item[1].scale or 0.0))

    def to_json(self) -> str:
        data = asdict(self)
        if data["float_cascade"] is None:  # manifests without the section stay byte-identical
            del data["float_cascade"]
        # A NaN or infinity is not JSON: the device's reader refuses it, so it is never written.
        return json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"

    def with_float_cascade(self) -> Manifest:
        """This manifest with the float P/R/O-Net and their thresholds in place of the int8
        ones; FaceNet, pyramid and preprocessing unchanged. For the CPU only."""
        if self.float_cascade is None:
            raise ManifestError("the manifest has no float_cascade section")
        models = {n: s for n, s in self.models.items() if s.role not in CASCADE_ROLES}
        models.update(self.float_cascade.models)
        return replace(
            self,
            models=models,
            thresholds={**self.thresholds, **self.float_cascade.thresholds},
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise ManifestError(f"{where}: missing key {key!r}")
    value = data[key]
    if not isinstance(value, kind):
        raise ManifestError(f"{where}.{key}: expected {kind}, got {type(value).__name__}")
    return value


def _numbers(values: list[Any], kind: type, where: str, length: int | None = None) -> list:
    if length is not None and len(values) != length:
        raise ManifestError(f"{where}: expected {length} values, got {len(values)}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ManifestError(f"{where}: expected numbers, got {values!r}")
    return [kind(v) for v in values]


def _number(data: dict[str, Any], key: str, default: float, where: str) -> float:
    value = data.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ManifestError(
            f"{where}.{key}: expected a number, got {type(value).__name__} {value!r}"
        )
    return value


def _whole(value: float, low: int, high: int, where: str) -> int:
    """A whole number in [low, high] (JSON may write 3 as 3.0)."""
    if not (low <= value <= high and float(value).is_integer()):
        raise ManifestError(f"{where}: {value!r} is not a whole number from {low} to {high}")
    return int(value)


def _tensor(data: Any, where: str) -> TensorSpec:
    data = _object(data, where)
    shape = _numbers(_require(data, "shape", list, where), float, f"{where}.shape")
    return TensorSpec(
        name=_require(data, "name", str, where),
        shape=[_whole(side, 1, MAX_DIMENSION, f"{where}.shape") for side in shape],
        dtype=_require(data, "dtype", str, where),
        scale=float(_number(data, "scale", 0.0, where)),
        zero_point=_whole(
            _number(data, "zero_point", 0, where), *ZERO_POINTS, f"{where}.zero_point"
        ),
        role=str(data.get("role", "")),
    )


def _edgetpu(data: Any, where: str) -> EdgeTpuSpec | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected an object or null")
    on_chip, off_chip = data.get("on_chip_mib"), data.get("off_chip_mib")
    return EdgeTpuSpec(
        file=relative_file(_require(data, "file", str, where), f"{where}.file"),
        sha256=_require(data, "sha256", str, where),
        on_chip_mib=None if on_chip is None else float(_number(data, "on_chip_mib", 0, where)),
        off_chip_mib=None if off_chip is None else float(_number(data, "off_chip_mib", 0, where)),
    )


def _patch(data: Any, where: str) -> PatchSpec | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected an object or null")
    scale = float(_number(data, "scale", 0, where))
    low, high = PATCH_SCALES
    if not low <= scale <= high:
        raise ManifestError(
            f"{where}.scale: {scale!r} is not a face box enlarged {low:g} to {high:g} times "
            "(the built models: 2.7 and 4)"
        )
    width, height = (
        _whole(_number(data, key, 0, where), 1, PATCH_MAX_PIXELS, f"{where}.{key}")
        for key in ("width", "height")
    )
    color, pixels = data.get("color", "BGR"), data.get("pixels", "raw")
    if color not in COLOR_ORDERS:
        raise ManifestError(f"{where}.color: {color!r} is not one of {', '.join(COLOR_ORDERS)}")
    if pixels not in PIXEL_ENCODINGS:
        raise ManifestError(
            f"{where}.pixels: {pixels!r} is not one of {', '.join(PIXEL_ENCODINGS)}"
        )
    return PatchSpec(scale=scale, width=width, height=height, color=color, pixels=pixels)


def _model(name: str, data: Any) -> ModelSpec:
    where = f"models.{name}"
    data = _object(data, where)
    role = _require(data, "role", str, where)
    if role not in ROLES + OPTIONAL_ROLES:
        raise ManifestError(
            f"{where}.role: {role!r} is not one of {', '.join(ROLES + OPTIONAL_ROLES)}"
        )
    patch = _patch(data.get("patch"), f"{where}.patch")
    if role == LIVENESS_ROLE and patch is None:
        raise ManifestError(f"{where}.patch: a liveness model needs its patch geometry")
    return ModelSpec(
        role=role,
        file=relative_file(_require(data, "file", str, where), f"{where}.file"),
        sha256=_require(data, "sha256", str, where),
        inputs=[_tensor(t, f"{where}.inputs") for t in _require(data, "inputs", list, where)],
        outputs=[_tensor(t, f"{where}.outputs") for t in _require(data, "outputs", list, where)],
        scale=None if data.get("scale") is None else float(_number(data, "scale", 0, where)),
        edgetpu=_edgetpu(data.get("edgetpu"), f"{where}.edgetpu"),
        patch=patch,
    )


def relative_file(value: str, where: str) -> str:
    """A file inside the models folder: relative, no `..`; a manifest cannot point elsewhere."""
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value:
        raise ManifestError(f"{where}: {value!r} must be a relative path inside the models folder")
    return value


def _float_cascade(data: Any, pyramid_scales: list[float]) -> FloatCascade | None:
    where = "manifest.float_cascade"
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected an object")
    models = {
        name: _model(f"float_cascade.{name}", spec)
        for name, spec in _require(data, "models", dict, where).items()
    }
    for name, spec in models.items():
        if spec.role not in CASCADE_ROLES:
            raise ManifestError(f"{where}.models.{name}.role: only {', '.join(CASCADE_ROLES)}")
        if spec.edgetpu is not None:
            raise ManifestError(f"{where}.models.{name}.edgetpu: float models never run there")
    _check_roles(models, CASCADE_ROLES, f"{where}.models")
    _check_pnet_scales(models, pyramid_scales, f"{where}.models")
    return FloatCascade(
        models=models,
        thresholds=_thresholds(_require(data, "thresholds", dict, where), f"{where}.thresholds"),
        probe=relative_file(_require(data, "probe", str, where), f"{where}.probe"),
        probe_sha256=_require(data, "probe_sha256", str, where),
    )


def _check_roles(models: dict[str, ModelSpec], roles: tuple[str, ...], where: str) -> None:
    """Every role present; one model each of R-Net, O-Net and FaceNet (the engine runs one);
    at most MAX_LIVENESS_MODELS liveness models."""
    for role in roles:
        count = sum(spec.role == role for spec in models.values())
        if count == 0:
            raise ManifestError(f"{where}: no model with role {role!r}")
        if count > 1 and role in SINGLE_ROLES:
            raise ManifestError(f"{where}: {count} models with role {role!r}, the engine runs one")
    liveness = sum(spec.role == LIVENESS_ROLE for spec in models.values())
    if liveness > MAX_LIVENESS_MODELS:
        raise ManifestError(
            f"{where}: {liveness} liveness models; the engine averages at most "
            f"{MAX_LIVENESS_MODELS}: rebuild them with `edge-convert build --only liveness`"
        )


def _check_pnet_scales(models: dict[str, ModelSpec], scales: list[float], where: str) -> None:
    """One P-Net per pyramid level: the Edge TPU runs each level on the P-Net of its scale."""
    found = sorted(spec.scale or 0.0 for spec in models.values() if spec.role == "pnet")
    expected = sorted(scales)
    if len(found) != len(expected) or any(
        abs(a - b) > 1e-9 for a, b in zip(found, expected, strict=False)
    ):
        raise ManifestError(f"{where}: P-Net scales differ from manifest.pyramid.scales")


def _thresholds(values: dict[str, Any], where: str) -> dict[str, float]:
    """Numbers; the stage thresholds face probabilities in (0, 1), every stage's present (a
    missing one would fall back to a threshold the models were not built with), the NMS
    limits in (0, 1]; no other key (a misspelt one would be ignored)."""
    unknown = sorted(set(values) - set(STAGE_THRESHOLDS) - set(NMS_THRESHOLDS))
    if unknown:
        raise ManifestError(
            f"{where}: unknown {', '.join(map(repr, unknown))}; the keys are "
            f"{', '.join(STAGE_THRESHOLDS + NMS_THRESHOLDS)}"
        )
    missing = [key for key in STAGE_THRESHOLDS if key not in values]
    if missing:
        raise ManifestError(
            f"{where}: no {', '.join(missing)} threshold; rebuild the models with "
            "`edge-convert build`"
        )
    thresholds = {key: float(_number(values, key, 0, where)) for key in values}
    for key, value in thresholds.items():
        if key in STAGE_THRESHOLDS and not 0.0 < value < 1.0:
            raise ManifestError(
                f"{where}.{key}: {value!r} is not a face probability between 0 and 1"
            )
        if key in NMS_THRESHOLDS and not 0.0 < value <= 1.0:
            raise ManifestError(f"{where}.{key}: {value!r} is not an overlap above 0, at most 1")
    return thresholds


def _camera_and_min_face(data: dict[str, Any]) -> tuple[list[int], int]:
    """The compiled frame size and the smallest face: at least P-Net's 12-pixel window, and
    a face no larger than the frame (else the pyramid has no level)."""
    from edge_app.detection.pyramid import PNET_CELL

    camera = _numbers(_require(data, "camera", list, "manifest"), int, "manifest.camera", 2)
    if not all(PNET_CELL <= side <= MAX_CAMERA_SIDE for side in camera):
        raise ManifestError(
            f"manifest.camera: {camera} is not a frame size of {PNET_CELL} to "
            f"{MAX_CAMERA_SIDE} pixels a side"
        )
    min_face = _number(data, "min_face", 0, "manifest")
    if not PNET_CELL <= min_face <= min(camera):
        raise ManifestError(
            f"manifest.min_face: {min_face!r} is not a face size from {PNET_CELL} (P-Net's "
            f"window) to {min(camera)} (the frame) pixels"
        )
    return camera, int(min_face)


def _pyramid_scales(pyramid: dict[str, Any]) -> list[float]:
    """The pyramid's scales (each in (0, 1]: a level is never larger than the frame), its
    factor checked when given (PYRAMID_FACTORS)."""
    where = "manifest.pyramid"
    scales = _numbers(_require(pyramid, "scales", list, where), float, f"{where}.scales")
    if not scales or not all(0.0 < scale <= 1.0 for scale in scales):
        raise ManifestError(f"{where}.scales: {scales} are not scales above 0, at most 1")
    if "factor" in pyramid:
        factor = _number(pyramid, "factor", 0, where)
        low, high = PYRAMID_FACTORS
        if not low <= factor <= high:
            raise ManifestError(
                f"{where}.factor: {factor!r} is not from {low} to {high} (MTCNN's is 0.709)"
            )
    return scales


def parse_manifest(data: dict[str, Any]) -> Manifest:
    where = "manifest"
    version = _require(data, "format_version", int, where)
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise ManifestError(
            f"manifest.format_version is {version}, this build reads {FORMAT_VERSION}: "
            "rebuild the models with the matching `edge-convert build`"
        )
    models = {
        name: _model(name, spec) for name, spec in _require(data, "models", dict, where).items()
    }
    _check_roles(models, ROLES, "manifest.models")
    camera, min_face = _camera_and_min_face(data)
    pyramid = _require(data, "pyramid", dict, where)
    scales = _pyramid_scales(pyramid)
    _check_pnet_scales(models, scales, "manifest.models")
    preprocessing = _require(data, "preprocessing", dict, where)
    if "facenet_margin" in preprocessing:
        margin = _number(preprocessing, "facenet_margin", 0, "manifest.preprocessing")
        if not 0.0 <= margin <= 1.0:
            raise ManifestError(
                f"manifest.preprocessing.facenet_margin: {margin!r} is not a fraction of the "
                "face box from 0 to 1 (the built models use 0.2)"
            )
    return Manifest(
        camera=camera,
        min_face=min_face,
        pyramid=pyramid,
        preprocessing=preprocessing,
        thresholds=_thresholds(_require(data, "thresholds", dict, where), "manifest.thresholds"),
        models=models,
        sources=data.get("sources", {}),
        converter=data.get("converter", {}),
        recognition=_recognition(data.get("recognition", {})),
        calibration=data.get("calibration", {}),
        liveness=_liveness(data.get("liveness", {}), models),
        created_utc=str(data.get("created_utc", "")),
        format_version=version,
        float_cascade=_float_cascade(data.get("float_cascade"), scales),
    )


def _recognition(section: Any) -> dict[str, Any]:
    """The `recognition` section, its numbers in RECOGNITION_RANGES and its aggregate a word
    (edge_app.matching checks which); the rest describes how they were derived."""
    where = "manifest.recognition"
    section = _object(section, where)
    for key in RECOGNITION_RANGES:
        if key not in section:
            continue
        problem = recognition_problem(key, _number(section, key, 0, where))
        if problem is not None:
            raise ManifestError(
                f"{where}.{key}: {problem}; rebuild the models with `edge-convert build`"
            )
    if "aggregate" in section and not isinstance(section["aggregate"], str):
        raise ManifestError(f"{where}.aggregate: expected a word, got {section['aggregate']!r}")
    return section


def _liveness(section: Any, models: dict[str, ModelSpec]) -> dict[str, Any]:
    """The `liveness` section, whose `models` (the models the score averages, and its
    threshold was derived for) must be exactly the liveness models present, if any: a door
    scoring with one of two would apply a threshold made for their mean."""
    if not isinstance(section, dict):
        raise ManifestError("manifest.liveness: expected an object")
    listed = section.get("models")
    present = sorted(name for name, spec in models.items() if spec.role == LIVENESS_ROLE)
    if listed is None:
        if present:
            raise ManifestError(
                f"manifest.liveness.models: missing, so nothing says which of "
                f"{', '.join(present)} its threshold was derived for; rebuild them with "
                "`edge-convert build --only liveness`"
            )
        return section
    if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
        raise ManifestError("manifest.liveness.models: expected a list of model names")
    # Listed and none there is refused too: liveness "auto" would turn the check off, with a
    # warning only, on models built with it whose entries were lost (fail closed).
    if (present or listed) and sorted(listed) != present:
        raise ManifestError(
            f"manifest.liveness.models averages {', '.join(sorted(listed)) or 'nothing'} but the "
            f"models hold {', '.join(present) or 'no liveness model'}: its threshold was derived "
            "for that average; rebuild them with `edge-convert build --only liveness`"
        )
    return section


def side_file(models_dir: Path, file: str, sha256: Any, where: str, rebuild: str) -> Path:
    """A data file the manifest names beside the models (the centring mean, the cohort),
    once it is a regular file inside the models folder that matches its `sha256`; `rebuild`
    is the command that makes it again."""
    path = Path(models_dir) / relative_file(file, f"{where}.file")
    if not path.is_file():
        kind = "is not a regular file" if path.exists() else "is missing"
        raise ManifestError(f"{where}: {path} {kind}: rebuild it with `{rebuild}`")
    try:
        digest = sha256_file(path)
    except OSError as error:
        raise ManifestError(f"{where}: cannot read {path}: {error.strerror or error}") from None
    if digest != sha256:
        raise ManifestError(
            f"{where}: {path} does not match its sha256 in the manifest: restore the file "
            f"shipped with these models or rebuild it with `{rebuild}`"
        )
    return path


def _read_manifest(path: Path) -> bytes:
    """The bytes of a regular file of at most MANIFEST_MAX_BYTES (edge_app.bounded_read: a
    named pipe would hang the door's start for ever, a device such as /dev/zero would fill
    the memory). Other OSErrors, FileNotFoundError first, are load_manifest's to word."""
    try:
        return read_bounded(path, MANIFEST_MAX_BYTES)
    except NotRegularFile:
        raise ManifestError(
            f"{path}: not a regular file (a folder, device or pipe); copy the models "
            "folder again or rebuild it with `edge-convert build`"
        ) from None
    except TooLarge:
        raise ManifestError(
            f"{path}: more than the {MANIFEST_MAX_BYTES} bytes a manifest has; copy the "
            "models folder again or rebuild it with `edge-convert build`"
        ) from None


def no_models_folder(models_dir: Path | str) -> str:
    """Why `models_dir`, which is not a folder, cannot be the models folder (a typo)."""
    return (
        f"no models folder {models_dir} ({missing_or_kind(models_dir, 'folder')}): check the path"
    )


def load_manifest(models_dir: Path) -> Manifest:
    path = Path(models_dir) / MANIFEST_NAME
    try:
        data = untrusted_json.loads(_read_manifest(path))
    except (FileNotFoundError, NotADirectoryError):
        # NotADirectoryError: `models_dir` is a file (a model or a photo given as --models).
        if not Path(models_dir).is_dir():  # a mistyped --models or models.dir
            raise ManifestError(no_models_folder(models_dir)) from None
        raise ManifestError(
            f"no {MANIFEST_NAME} in {models_dir}: build models with `edge-convert build`"
        ) from None
    except (OSError, untrusted_json.BadJSON) as error:
        raise ManifestError(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    return parse_manifest(data)


def verify_files(
    manifest: Manifest, models_dir: Path, edgetpu: bool = False, cpu: bool = True
) -> list[str]:
    """Problems with the model files on disk (missing or hash mismatch); empty when all good.
    edgetpu: the Edge TPU builds too; cpu=False: those only."""
    entries: list[tuple[str, str, str]] = []
    for name, spec in manifest.models.items():
        if cpu:
            entries.append((name, spec.file, spec.sha256))
        if edgetpu and spec.edgetpu is not None:
            entries.append((name, spec.edgetpu.file, spec.edgetpu.sha256))
    return _file_problems(models_dir, entries)


def verify_float_cascade(manifest: Manifest, models_dir: Path) -> list[str]:
    """Problems with the float cascade's files (missing or hash mismatch); empty when all good
    or when the manifest ships no float cascade."""
    section = manifest.float_cascade
    if section is None:
        return []
    entries = [(f"float {name}", s.file, s.sha256) for name, s in section.models.items()]
    entries.append(("float probe", section.probe, section.probe_sha256))
    return _file_problems(models_dir, entries)


def _file_problems(models_dir: Path, entries: list[tuple[str, str, str]]) -> list[str]:
    """The problems of `entries`, each (label, file, sha256): a file missing from
    `models_dir`, one that is not a regular file or cannot be read, or one that does not
    match its sha256."""
    problems = []
    for name, file, expected in entries:
        path = Path(models_dir) / file
        if not path.is_file():
            kind = "is not a regular file" if path.exists() else "is missing"
            problems.append(f"{name}: {file} {kind}")
            continue
        try:
            digest = sha256_file(path)
        except OSError as error:
            problems.append(f"{name}: {file} cannot be read ({error.strerror or error})")
            continue
        if digest != expected:
            problems.append(f"{name}: {file} does not match its sha256 in the manifest")
    return problems
