"""How the door loads and runs its models, tried with damaged and hostile models folders.

Every test copies the committed models (tests/conftest.py `models_dir`) to tmp_path and damages
the copy; the interpreters are the real TFLite ones. The rule: a models folder the engine
cannot run is refused when the engine opens, in one line (a UserError naming the file and the
fix), never by a traceback and never later, mid-frame, on a visitor; and nothing is run on a
model that is not the one the manifest describes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_app.engine as engine_module
from edge_app.engine import Engine
from edge_app.errors import UserError
from edge_app.faces import Faces
from edge_app.images import read_image
from edge_app.manifest import MANIFEST_NAME, ManifestError, load_manifest
from edge_app.runtime import Backend, make_interpreter, select_backend

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "tests" / "data" / "lfw_sample" / "Martha_Stewart" / "Martha_Stewart_0001.jpg"

# ai-edge-litert's Delegate.__del__ warning when libedgetpu is absent (see test_engine.py).
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


# ---------------------------------------------------------------------------- helpers


def copy_models(models_dir: Path, target: Path) -> Path:
    """A private copy of the models folder, to damage."""
    shutil.copytree(models_dir, target, symlinks=False)
    return target


def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST_NAME).read_text())


def write_manifest(folder: Path, data: dict[str, Any]) -> None:
    (folder / MANIFEST_NAME).write_text(json.dumps(data, indent=2))


def rehash(folder: Path, file: str) -> None:
    """Record the file's current sha256 in the manifest, as someone swapping it in would."""
    data = read_manifest(folder)
    digest = hashlib.sha256((folder / file).read_bytes()).hexdigest()
    for section in (data["models"], data.get("float_cascade", {}).get("models", {})):
        for spec in section.values():
            if spec["file"] == file:
                spec["sha256"] = digest
    write_manifest(folder, data)


def open_cpu(folder: Path, cascade: str = "int8") -> Engine:
    return Engine.open(folder, backend="cpu", threads=1, cascade=cascade)


def refused(folder: Path, *fragments: str, cascade: str = "int8") -> str:
    """Engine.open refuses the folder with a one-line UserError holding every fragment."""
    with pytest.raises(UserError) as raised:
        open_cpu(folder, cascade)
    message = str(raised.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """An RGB frame with one face: an LFW photo on a 640x480 grey frame."""
    frame = np.full((480, 640, 3), 110, np.uint8)
    face = read_image(PHOTO)
    frame[100 : 100 + face.shape[0], 200 : 200 + face.shape[1]] = face
    return frame


# ---------------------------------------------------------------------------- model files


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:5000])


def emptied(path: Path) -> None:
    path.write_bytes(b"")


def text_file(path: Path) -> None:
    path.write_text("[models]\nbackend = 'cpu'\n")


@pytest.mark.parametrize(
    ("file", "damage"),
    [
        ("rnet.tflite", truncated),
        ("facenet.tflite", truncated),
        ("onet.tflite", emptied),
        ("pnet_0.tflite", text_file),
        ("minifasnet_v2.tflite", emptied),
    ],
    ids=["rnet cut short", "facenet cut short", "onet zero bytes", "pnet not a model", "liveness"],
)
def test_a_model_file_the_runtime_cannot_load_is_refused_in_one_line(
    models_dir: Path, tmp_path: Path, file: str, damage: Callable[[Path], None]
) -> None:
    """The manifest's sha256 updated to the damaged file: the hash check passes, and the
    runtime's own ValueError used to reach the user as a traceback."""
    folder = copy_models(models_dir, tmp_path / "models")
    damage(folder / file)
    rehash(folder, file)
    refused(folder, str(folder / file), "cannot load it", "edge-convert build")


def test_a_damaged_model_is_one_error_line_from_the_command_line(
    models_dir: Path, tmp_path: Path
) -> None:
    folder = copy_models(models_dir, tmp_path / "models")
    truncated(folder / "rnet.tflite")
    rehash(folder, "rnet.tflite")
    done = subprocess.run(
        [sys.executable, "-m", "edge_app.cli", "enroll", "--db", str(tmp_path / "g.db")]
        + ["--models", str(folder), "--backend", "cpu", "--cascade", "int8", "Martha", str(PHOTO)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "rnet.tflite: the TFLite runtime cannot load it" in done.stderr


@pytest.mark.parametrize("kind", ["folder", "dev_zero", "fifo"])
def test_a_model_path_that_is_not_a_regular_file_is_named_as_such(
    models_dir: Path, tmp_path: Path, kind: str
) -> None:
    folder = copy_models(models_dir, tmp_path / "models")
    target = folder / "onet.tflite"
    target.unlink()
    if kind == "folder":
        target.mkdir()
    elif kind == "dev_zero":
        target.symlink_to("/dev/zero")
    else:
        os.mkfifo(target)
    refused(folder, "onet.tflite is not a regular file")


def test_a_model_file_that_cannot_be_read_is_refused_in_one_line(
    models_dir: Path, tmp_path: Path
) -> None:
    """A regular file whose read fails (here /proc/self/mem, EIO; on a Pi, a file the service
    user may not read, EACCES): the sha256 check used to raise the OSError itself."""
    folder = copy_models(models_dir, tmp_path / "models")
    (folder / "rnet.tflite").unlink()
    (folder / "rnet.tflite").symlink_to("/proc/self/mem")
    refused(folder, "rnet.tflite cannot be read")


# ---------------------------------------------------------------------------- another network


def swap(folder: Path, source: str, target: str) -> None:
    shutil.copyfile(folder / source, folder / target)
    rehash(folder, target)


@pytest.mark.parametrize(
    ("source", "target", "says"),
    [
        ("pnet_3.tflite", "pnet_0.tflite", "[1, 52, 69, 3]"),
        ("onet.tflite", "rnet.tflite", "[1, 48, 48, 3]"),
        ("float/onet.tflite", "onet.tflite", "float32 [1, 48, 48, 3]"),
        ("minifasnet_v1se.tflite", "minifasnet_v2.tflite", "scale 0.171576"),
        ("minifasnet_v2.tflite", "facenet.tflite", "serving_default_patch:0"),
    ],
    ids=[
        "another pnet level",
        "onet as rnet",
        "float onet as int8",
        "liveness v1se as v2",
        "liveness as facenet",
    ],
)
def test_a_valid_model_of_another_network_is_refused_when_the_engine_opens(
    models_dir: Path, tmp_path: Path, source: str, target: str, says: str
) -> None:
    """A real model swapped in with its sha256 updated. It used to run silently when its
    output names matched (another P-Net level; MiniFASNetV1SE fed V2's 2.7x patch) or to
    raise a ValueError traceback when they did not."""
    folder = copy_models(models_dir, tmp_path / "models")
    swap(folder, source, target)
    refused(folder, str(folder / target), "not the model its manifest entry describes", says)


def as_facenet_describing(folder: Path, source: str) -> None:
    """facenet.tflite replaced by `source`, the manifest made to describe it exactly (its
    first output as the embedding), and the centring mean and cohort, made for the real
    FaceNet, left out: a consistent folder whose FaceNet is not one."""
    data = read_manifest(folder)
    donor = data["models"][source.removesuffix(".tflite")]
    shutil.copyfile(folder / source, folder / "facenet.tflite")
    facenet = data["models"]["facenet"]
    facenet["inputs"] = donor["inputs"]
    facenet["outputs"] = [dict(donor["outputs"][0], role="embedding")]
    facenet["outputs"] += [dict(t, role="other") for t in donor["outputs"][1:]]
    del data["preprocessing"]["facenet_mean"]
    for key in ("cohort", "normalisation"):
        data["recognition"].pop(key, None)
    write_manifest(folder, data)
    rehash(folder, "facenet.tflite")


def test_a_manifest_describing_a_model_the_engine_cannot_run_is_refused(
    models_dir: Path, tmp_path: Path, photo: np.ndarray
) -> None:
    """Manifest and file agree, but the model is R-Net: a 24x24 input and a 1-value
    'embedding'. It used to open, then fail on the first face (or give 1-d embeddings)."""
    folder = copy_models(models_dir, tmp_path / "models")
    as_facenet_describing(folder, "rnet.tflite")
    refused(
        folder,
        "facenet.tflite: not a facenet model this engine can run",
        "its input is [1, 24, 24, 3], the engine feeds [1, 160, 160, 3]",
    )


def test_a_liveness_patch_other_than_the_model_input_is_refused(
    models_dir: Path, tmp_path: Path
) -> None:
    """A patch of 96x96 for an 80x80 MiniFASNet used to fail on the first face scored."""
    folder = copy_models(models_dir, tmp_path / "models")
    data = read_manifest(folder)
    data["models"]["minifasnet_v2"]["patch"]["width"] = 96
    write_manifest(folder, data)
    refused(folder, "minifasnet_v2.tflite: not a liveness model", "[1, 80, 96, 3]")


def test_the_committed_models_satisfy_every_check(models_dir: Path, photo: np.ndarray) -> None:
    """The checks refuse nothing that is shipped: int8, float and liveness models all open."""
    for cascade in ("int8", "float"):
        engine = open_cpu(models_dir, cascade)
        faces, embeddings = engine.process(photo)
        assert len(faces) == 1 and embeddings.shape == (1, 512)
        if engine.has_liveness:
            assert engine.liveness(photo, faces).shape == (1,)


# ---------------------------------------------------------------------------- the manifest


def edit(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = read_manifest(folder)
    change(data)
    write_manifest(folder, data)


def put(value: Any, *keys: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        for key in keys[:-1]:
            data = data[key]
        data[keys[-1]] = value

    return change


def without_float(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    """`change` in a manifest without a float cascade (whose own checks would see it first)."""

    def changed(data: dict[str, Any]) -> None:
        del data["float_cascade"]
        change(data)

    return changed


def second(role: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["models"][f"{role}_b"] = data["models"][role]

    return change


BAD_VALUES = {
    # used to open; R-Net then passed nothing: a door that never sees anyone
    "rnet threshold 2": (put(2, "thresholds", "rnet"), "manifest.thresholds.rnet"),
    # used to open; O-Net then passed every window
    "onet threshold 0": (put(0, "thresholds", "onet"), "manifest.thresholds.onet"),
    "float pnet threshold 5": (
        put(5, "float_cascade", "thresholds", "pnet"),
        "manifest.float_cascade.thresholds.pnet",
    ),
    # used to fail in OpenCV's NMS on the first frame
    "nms -1": (put(-1, "thresholds", "nms_pnet"), "manifest.thresholds.nms_pnet"),
    # used to fail in the pyramid on the first frame
    "min_face 0": (put(0, "min_face"), "manifest.min_face"),
    "min_face -40": (put(-40, "min_face"), "manifest.min_face"),
    # used to run: a 12x upscaled pyramid, 5 s a frame
    "min_face 1": (put(1, "min_face"), "manifest.min_face"),
    # used to hang in the pyramid on the first frame
    "factor 1": (put(1, "pyramid", "factor"), "manifest.pyramid.factor"),
    # used to be a ValueError traceback
    "factor a string": (put("0.7", "pyramid", "factor"), "manifest.pyramid.factor"),
    # used to open on the CPU (which builds its own pyramid); an Edge TPU would resize the
    # frame 40 times for a level of P-Net
    "scales above 1": (without_float(put([40.0], "pyramid", "scales")), "manifest.pyramid.scales"),
    # used to open; an Edge TPU would have no P-Net for the extra level
    "a level without its P-Net": (
        without_float(lambda data: data["pyramid"]["scales"].append(0.02)),
        "manifest.models: P-Net scales differ from manifest.pyramid.scales",
    ),
    # used to open and embed garbage crops (cosine to the true embedding about 0)
    "margin -2": (put(-2, "preprocessing", "facenet_margin"), "facenet_margin"),
    "margin 50": (put(50, "preprocessing", "facenet_margin"), "facenet_margin"),
    # used to be a TypeError traceback
    "margin null": (put(None, "preprocessing", "facenet_margin"), "facenet_margin"),
    "camera 0x0": (put([0, 0], "camera"), "manifest.camera"),
    # used to be "too many values to unpack" (ValueError traceback)
    "two rnets": (second("rnet"), "2 models with role 'rnet'"),
    "two facenets": (second("facenet"), "2 models with role 'facenet'"),
    "model outside the folder": (
        put("/etc/hostname", "models", "rnet", "file"),
        "must be a relative path inside the models folder",
    ),
}


@pytest.mark.parametrize("case", BAD_VALUES, ids=list(BAD_VALUES))
def test_manifest_values_out_of_range_are_refused_naming_the_key(
    models_dir: Path, tmp_path: Path, case: str
) -> None:
    change, key = BAD_VALUES[case]
    folder = copy_models(models_dir, tmp_path / "models")
    edit(folder, change)
    refused(folder, key)


def test_an_infinite_threshold_written_as_1e999_is_refused(
    models_dir: Path, tmp_path: Path
) -> None:
    """JSON has no Infinity, but 1e999 parses to it: refused when the manifest is read."""
    folder = copy_models(models_dir, tmp_path / "models")
    text = (folder / MANIFEST_NAME).read_text()
    text = text.replace('"nms_onet": 0.7', '"nms_onet": 1e999', 1)
    assert "1e999" in text
    (folder / MANIFEST_NAME).write_text(text)
    refused(folder, "number 1e999 is out of range")


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "folder", "oversized"])
def test_a_manifest_that_is_not_a_small_regular_file_is_refused_before_it_is_read(
    models_dir: Path, tmp_path: Path, kind: str
) -> None:
    """A FIFO used to hang the door's start for ever, /dev/zero to fill the memory."""
    folder = copy_models(models_dir, tmp_path / "models")
    manifest = folder / MANIFEST_NAME
    manifest.unlink()
    if kind == "fifo":
        os.mkfifo(manifest)
    elif kind == "dev_zero":
        manifest.symlink_to("/dev/zero")
    elif kind == "folder":
        manifest.mkdir()
    else:
        manifest.write_bytes(b" " * (8 * 1024 * 1024))
    with pytest.raises(ManifestError, match="not a regular file|more than the"):
        load_manifest(folder)
    refused(folder, str(manifest))


def numpy_file(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("file", "content"),
    [
        ("facenet_mean.npy", b""),
        ("facenet_mean.npy", numpy_file(np.array(["x"] * 512))),
        ("cohort.npy", b""),
        ("cohort.npy", numpy_file(np.array([["x"] * 512] * 4))),
    ],
    ids=["mean empty", "mean of strings", "cohort empty", "cohort of strings"],
)
def test_a_damaged_mean_or_cohort_is_refused_in_one_line(
    models_dir: Path, tmp_path: Path, file: str, content: bytes
) -> None:
    """With its sha256 updated: numpy's EOFError or TypeError used to be a traceback."""
    folder = copy_models(models_dir, tmp_path / "models")
    (folder / file).write_bytes(content)
    data = read_manifest(folder)
    entry = (
        data["preprocessing"]["facenet_mean"]
        if file == "facenet_mean.npy"
        else data["recognition"]["cohort"]
    )
    entry["sha256"] = hashlib.sha256(content).hexdigest()
    write_manifest(folder, data)
    refused(folder, "cannot be used", "make centring-mean" if "mean" in file else "make cohort")


# ---------------------------------------------------------------------------- frames


@pytest.fixture(scope="module")
def cpu_engine(models_dir: Path) -> Engine:
    return Engine.open(models_dir, backend="cpu", threads=2, cascade="int8")


@pytest.mark.parametrize(
    "convert",
    [
        lambda f: f.astype(np.uint16) * 257,
        lambda f: f.astype(np.float32) / 255,
        lambda f: f[..., 0],
        lambda f: np.dstack([f, f[..., :1]]),
    ],
    ids=["uint16", "float 0-1", "grey", "RGBA"],
)
def test_embed_and_liveness_refuse_what_detect_refuses(
    cpu_engine: Engine, photo: np.ndarray, convert: Callable[[np.ndarray], np.ndarray]
) -> None:
    """A uint16 or float frame used to be cut into crops modulo 256 and embedded (cosine to
    the true embedding 0.03) and scored live (0.36, above the shipped 0.2 threshold)."""
    faces = cpu_engine.detect(photo)
    assert len(faces) == 1
    frame = convert(photo)
    for call in (cpu_engine.detect, cpu_engine.process):
        with pytest.raises(ValueError, match="RGB uint8"):
            call(frame)
    with pytest.raises(ValueError, match="RGB uint8"):
        cpu_engine.embed(frame, faces)
    if cpu_engine.has_liveness:
        with pytest.raises(ValueError, match="RGB uint8"):
            cpu_engine.liveness(frame, faces)


@pytest.mark.parametrize(
    "box",
    [
        [np.nan, 10, 80, 90],
        [10, 10, np.inf, 90],
        [80, 10, 10, 90],  # inverted
        [10, 10, 10, 90],  # no width
        [-300, -300, -200, -200],  # wholly outside
        [5000, 10, 5100, 90],
    ],
    ids=["nan", "inf", "inverted", "empty", "above_left", "right"],
)
def test_embed_and_liveness_refuse_a_box_that_is_no_face_of_the_frame(
    cpu_engine: Engine, photo: np.ndarray, box: list[float]
) -> None:
    """Found by an audit: such boxes were embedded as black crops into a unit embedding,
    and liveness scored a box wholly outside the frame 0.9996 live (its patch moved onto
    the frame); a NaN box raised numpy's cast warnings. No detection gives one."""
    faces = cpu_engine.detect(photo)
    bad = Faces(np.array([box], np.float32), faces.scores[:1], faces.landmarks[:1])
    with pytest.raises(ValueError, match="is not a box in this"):
        cpu_engine.embed(photo, bad)
    if cpu_engine.has_liveness:
        with pytest.raises(ValueError, match="is not a box in this"):
            cpu_engine.liveness(photo, bad)
    uneven = Faces(faces.boxes[:1], faces.scores[:0], faces.landmarks[:1])
    with pytest.raises(ValueError, match=r"faces must hold \(N, 4\) boxes"):
        cpu_engine.embed(photo, uneven)
    partly_outside = faces.boxes[:1] - np.array([40, 40, 0, 0], np.float32)  # overlaps: fine
    cpu_engine.embed(photo, Faces(partly_outside, faces.scores[:1], faces.landmarks[:1]))


# ---------------------------------------------------------------------------- Edge TPU


def tpu_stand_in(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """An Edge TPU backend (absent here) whose interpreters are the real CPU ones: the
    engine's fixed-pyramid path, with the int8 models the TPU would run."""
    cpu = select_backend("cpu", 1)
    monkeypatch.setattr(
        engine_module, "make_interpreter", lambda model, _: make_interpreter(model, cpu)
    )
    return Backend("edgetpu", cpu.runtime, object(), 1, "stand-in")


def test_on_the_edge_tpu_a_camera_the_p_nets_were_not_built_for_is_refused_at_open(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, photo: np.ndarray
) -> None:
    """manifest.camera edited to 1280x720 (the P-Nets are compiled for 640x480 levels): every
    frame used to raise "no Edge TPU P-Net for a 384x216 level" mid-run."""
    backend = tpu_stand_in(models_dir, monkeypatch)
    engine = Engine(load_manifest(models_dir), models_dir, backend)  # the shipped folder runs
    assert len(engine.detect(photo)) == 1
    folder = copy_models(models_dir, tmp_path / "models")
    edit(folder, put([1280, 720], "camera"))
    with pytest.raises(UserError, match="no P-Net for the 384x216 level") as raised:
        Engine(load_manifest(folder), folder, backend)
    assert "\n" not in str(raised.value)


def test_on_the_edge_tpu_a_frame_one_pixel_thin_has_no_faces(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Letterboxed into 640x480, a 1x5000 frame rounded to no width: a cv2.error traceback
    in `identify` and `enroll` (an outside audit's finding)."""
    engine = Engine(load_manifest(models_dir), models_dir, tpu_stand_in(models_dir, monkeypatch))
    for shape in ((5000, 1, 3), (1, 5000, 3), (1, 1, 3)):
        faces = engine.detect(np.full(shape, 128, np.uint8))
        assert isinstance(faces, Faces) and len(faces) == 0


def test_models_replaced_under_a_running_engine_are_never_read(
    models_dir: Path, tmp_path: Path, photo: np.ndarray
) -> None:
    """P-Nets resized for a new frame size are made from the bytes read and checked at open:
    a P-Net file overwritten since (its tensors reordered, or garbage) is not what runs. It
    used to be read again by name: no face found, or a refusal in the middle of a run."""
    folder = copy_models(models_dir, tmp_path / "models")
    engine = open_cpu(folder)
    expected = engine.detect(photo)
    assert len(expected) == 1
    for _, spec in engine.manifest.by_role("pnet"):
        (folder / spec.file).write_bytes(b"not a model" * 100)
    (folder / MANIFEST_NAME).write_text("{}")

    larger = np.full((600, 800, 3), 110, np.uint8)  # new pyramid levels: resized P-Nets
    larger[:480, :640] = photo
    found = engine.detect(larger)

    assert len(engine._resized_pnets) > 0
    assert len(found) == 1
    assert np.allclose(found.boxes, expected.boxes, atol=5.0)  # other pyramid levels


def test_on_the_edge_tpu_a_frame_without_pixels_has_no_faces(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It used to be a ZeroDivisionError while letterboxing it into the camera frame."""
    engine = Engine(load_manifest(models_dir), models_dir, tpu_stand_in(models_dir, monkeypatch))
    for shape in ((0, 640, 3), (480, 0, 3), (0, 0, 3)):
        faces = engine.detect(np.zeros(shape, np.uint8))
        assert isinstance(faces, Faces) and len(faces) == 0


def test_an_engine_let_go_is_freed_at_once_with_its_interpreters(models_dir: Path) -> None:
    """Found by a soak run: the hub's Health page opened an engine per request (doctor's
    checks) and each one stayed, with its interpreters and their threads (25 threads and
    about 100 MB each: 20 reloads of the page took the hub to 1.27 GB), until Python's
    garbage collector happened to run: the engine's cascade held a bound method of the
    engine. An engine nobody holds any more is freed when the last reference goes."""
    import gc
    import weakref

    collecting = gc.isenabled()
    gc.collect()
    gc.disable()  # what frees it must be the references alone
    try:
        engine = Engine.open(models_dir, backend="cpu")
        engine.detect(np.zeros((120, 160, 3), np.uint8))  # a P-Net level resized, cached
        let_go = weakref.ref(engine)
        del engine
        assert let_go() is None
    finally:
        if collecting:
            gc.enable()
