"""The models manifest: round trip, clear errors for bad ones, and the committed models.

The committed-model tests read models/tflite (tests/conftest.py `models_dir`); they check the
files against the manifest with hashes computed here, and the manifest's tensor descriptions
against what an interpreter reports for each file.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_app.adapters import PIXEL_SCALE
from edge_app.config import AGGREGATES
from edge_app.detection.cascade import Thresholds
from edge_app.detection.pyramid import PNET_CELL
from edge_app.manifest import (
    FORMAT_VERSION,
    LIVENESS_ROLE,
    MANIFEST_NAME,
    OPTIONAL_ROLES,
    ROLES,
    EdgeTpuSpec,
    Manifest,
    ManifestError,
    ModelSpec,
    TensorSpec,
    load_manifest,
    parse_manifest,
    verify_files,
)
from edge_app.runtime import find_runtime


def _tensor(name: str, shape: list[int], dtype: str = "int8", role: str = "") -> TensorSpec:
    return TensorSpec(name, shape, dtype, scale=0.05, zero_point=-3, role=role)


def _model(role: str, file: str, scale: float | None = None, tpu: bool = False) -> ModelSpec:
    pixels = TensorSpec("image", [1, 24, 24, 3], "uint8", PIXEL_SCALE, 128)
    outputs = {
        "pnet": ["box", "score"],
        "rnet": ["box", "score"],
        "onet": ["box", "score", "landmarks"],
        "facenet": ["embedding"],
    }[role]
    return ModelSpec(
        role=role,
        file=file,
        sha256=hashlib.sha256(file.encode()).hexdigest(),
        inputs=[pixels],
        outputs=[_tensor(f"out:{i}", [1, 4], role=r) for i, r in enumerate(outputs)],
        scale=scale,
        edgetpu=EdgeTpuSpec(file.replace(".tflite", "_edgetpu.tflite"), "ab" * 32, 1.5, None)
        if tpu
        else None,
    )


SYNTHETIC = Manifest(
    camera=[320, 240],
    min_face=30,
    pyramid={"layout": "per-scale", "factor": 0.709, "scales": [0.4, 0.2836]},
    preprocessing={"color": "RGB", "facenet_margin": 0.47},
    thresholds={"pnet": 0.5, "rnet": 0.65, "onet": 0.7, "nms_pnet": 0.7},
    models={
        "pnet_0": _model("pnet", "pnet_0.tflite", 0.4, tpu=True),
        "pnet_1": _model("pnet", "pnet_1.tflite", 0.2836, tpu=True),
        "rnet": _model("rnet", "rnet.tflite"),
        "onet": _model("onet", "onet.tflite"),
        "facenet": _model("facenet", "facenet.tflite", tpu=True),
    },
    sources={"mtcnn": {"version": "1.0.0"}},
    converter={"tensorflow": "2.21.0"},
    recognition={"threshold": 0.5, "aggregate": "best", "margin": 0.0},
    calibration={},
    created_utc="2025-01-01T00:00:00+00:00",
)


def synthetic_data() -> dict[str, Any]:
    return json.loads(SYNTHETIC.to_json())


# ---------------------------------------------------------------------------- round trip


def test_synthetic_manifest_round_trips() -> None:
    data = synthetic_data()
    assert parse_manifest(data) == SYNTHETIC
    # nested specs come back as their dataclasses, not as dicts
    again = parse_manifest(data)
    assert isinstance(again.models["pnet_0"].edgetpu, EdgeTpuSpec)
    assert again.models["rnet"].edgetpu is None
    assert again.models["rnet"].scale is None
    assert [name for name, _ in again.by_role("pnet")] == ["pnet_0", "pnet_1"]
    assert again.models["onet"].output("landmarks").name == "out:2"


def test_by_role_orders_pnets_largest_scale_first_whatever_the_file_order() -> None:
    data = synthetic_data()
    data["models"] = dict(reversed(list(data["models"].items())))
    assert [spec.scale for _, spec in parse_manifest(data).by_role("pnet")] == [0.4, 0.2836]


def test_committed_manifest_round_trips(models_dir: Path) -> None:
    manifest = load_manifest(models_dir)
    assert parse_manifest(json.loads(manifest.to_json())) == manifest
    # the converter writes the canonical form, so nothing in the file is lost on loading
    assert (models_dir / MANIFEST_NAME).read_text() == manifest.to_json()


# ---------------------------------------------------------------------------- bad manifests


def _drop(*keys: str | int) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        target = data
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return change


def _put(value: Any, *keys: str | int) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


BAD = {
    "missing camera": (_drop("camera"), ["'camera'"]),
    "missing thresholds": (_drop("thresholds"), ["'thresholds'"]),
    "missing model file": (_drop("models", "rnet", "file"), ["models.rnet", "'file'"]),
    "missing sha256": (_drop("models", "facenet", "sha256"), ["models.facenet", "'sha256'"]),
    "missing tensor name": (
        _drop("models", "onet", "outputs", 0, "name"),
        ["models.onet.outputs", "'name'"],
    ),
    "camera not a list": (_put("640x480", "camera"), ["camera", "str"]),
    "min_face a string": (_put("40", "min_face"), ["min_face", "str"]),
    "models a list": (_put([], "models"), ["models", "list"]),
    "pyramid a list": (_put([0.3], "pyramid"), ["pyramid", "list"]),
    "shape not a list": (_put(24, "models", "rnet", "inputs", 0, "shape"), ["shape", "int"]),
    "unknown role": (_put("lnet", "models", "onet", "role"), ["models.onet.role", "'lnet'"]),
    "no facenet": (_drop("models", "facenet"), ["'facenet'"]),
    "newer format": (_put(FORMAT_VERSION + 1, "format_version"), ["format_version"]),
    "format as text": (_put("1", "format_version"), ["format_version", "str"]),
    "no format": (_drop("format_version"), ["'format_version'"]),
    # Values that parsed and then changed what the door does (an outside audit's findings)
    "a threshold that lets anyone in": (
        _put(-1, "recognition", "threshold"),
        ["recognition.threshold", "-1", "more than 0"],
    ),
    # a trimmed mean that drops half from each end keeps nothing: the door refused it later
    "a trim of a half": (_put(0.5, "recognition", "trim"), ["recognition.trim", "below 0.5"]),
    "a threshold of 0": (_put(0.0, "recognition", "threshold"), ["recognition.threshold"]),
    "a threshold above 1": (_put(1.5, "recognition", "threshold"), ["recognition.threshold"]),
    "a missing stage threshold": (_drop("thresholds", "rnet"), ["thresholds", "no rnet"]),
    "a misspelt threshold": (_put(0.7, "thresholds", "nms_rent"), ["'nms_rent'"]),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_manifest_names_the_key(case: str) -> None:
    change, expected = BAD[case]
    data = synthetic_data()
    change(data)
    with pytest.raises(ManifestError) as raised:
        parse_manifest(data)
    for fragment in expected:
        assert fragment in str(raised.value)


# Malformed values must be ManifestErrors too: Engine.open turns only those into a one-line
# UserError, anything else would reach the user as a traceback.
UNCAUGHT = {
    "edgetpu block without sha256": (
        _put({"file": "rnet_edgetpu.tflite"}, "models", "rnet", "edgetpu"),
        "models.rnet.edgetpu",
    ),
    "camera values not numbers": (_put(["640", "wide"], "camera"), "camera"),
    "threshold not a number": (_put("high", "thresholds", "pnet"), "thresholds"),
    # found by an outside audit: each was a TypeError, AttributeError or ValueError traceback
    "a tensor that is not an object": (_put([5], "models", "rnet", "inputs"), "rnet.inputs"),
    "a model that is not an object": (_put(7, "models", "rnet"), "models.rnet"),
    "recognition a list": (_put([1, 2], "recognition"), "manifest.recognition"),
    "recognition threshold a word": (_put("abc", "recognition", "threshold"), "threshold"),
    "recognition margin a word": (_put("x", "recognition", "margin"), "recognition"),
    "recognition trim a list": (_put([0.1], "recognition", "trim"), "recognition"),
    "a huge zero point": (_put(1e300, "models", "rnet", "inputs", 0, "zero_point"), "zero_point"),
    "a huge shape": (_put([1, 1e300, 24, 3], "models", "rnet", "inputs", 0, "shape"), "shape"),
    "a fractional shape": (_put([1, 2.5, 24, 3], "models", "rnet", "inputs", 0, "shape"), "shape"),
}


@pytest.mark.parametrize("case", UNCAUGHT, ids=list(UNCAUGHT))
def test_malformed_values_are_manifest_errors_too(case: str) -> None:
    change, key = UNCAUGHT[case]
    data = synthetic_data()
    change(data)
    with pytest.raises(ManifestError, match=key):
        parse_manifest(data)


def _liveness_model(name: str) -> dict[str, Any]:
    spec = asdict(_model("facenet", f"{name}.tflite"))
    return {
        **spec,
        "role": LIVENESS_ROLE,
        "patch": {"scale": 2.7, "width": 80, "height": 80, "color": "BGR", "pixels": "raw"},
    }


def test_a_manifest_lists_at_most_two_liveness_models_and_says_which_it_averages() -> None:
    data = synthetic_data()
    names = [f"live_{i}" for i in range(3)]
    data["models"].update({name: _liveness_model(name) for name in names})
    data["liveness"] = {"models": names, "threshold": 0.5}
    with pytest.raises(ManifestError, match="3 liveness models; the engine averages at most 2"):
        parse_manifest(data)

    del data["models"]["live_2"]
    data["liveness"] = {"threshold": 0.5}  # which models its threshold is for: unsaid
    with pytest.raises(ManifestError, match="manifest.liveness.models: missing"):
        parse_manifest(data)

    data["liveness"]["models"] = names[:2]
    assert len(parse_manifest(data).by_role(LIVENESS_ROLE)) == 2

    # Models built with liveness whose entries were lost: "auto" would have turned the check
    # off with a warning (an audit); the manifest is refused, as when one of two is lost.
    for name in names[:2]:
        del data["models"][name]
    with pytest.raises(ManifestError, match="but the models hold no liveness model"):
        parse_manifest(data)
    data["liveness"] = {"models": []}  # built without liveness: nothing to mis-apply
    assert parse_manifest(data).by_role(LIVENESS_ROLE) == []


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"scale": 1e-9}, "is not a face box enlarged 1 to 8 times"),
        ({"scale": 0}, "is not a face box enlarged"),
        ({"width": 100000}, "patch.width: 100000 is not a whole number from 1 to 1024"),
        ({"height": 0}, "patch.height"),
    ],
)
def test_a_liveness_patch_must_be_a_face_box_enlarged_and_a_model_sized_image(
    patch: dict[str, Any], message: str
) -> None:
    data = synthetic_data()
    model = _liveness_model("live_0")
    model["patch"].update(patch)
    data["models"]["live_0"] = model
    data["liveness"] = {"models": ["live_0"]}

    with pytest.raises(ManifestError, match=message):
        parse_manifest(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"camera": [1e999, 480]}', "number 1e999 is out of range"),
        ('{"camera": [640, 480], "camera": [64, 48]}', "the key 'camera' appears twice"),
    ],
)
def test_numbers_beyond_a_float_and_keys_named_twice_are_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / MANIFEST_NAME).write_text(text)

    with pytest.raises(ManifestError, match=message):
        load_manifest(tmp_path)


def test_a_file_given_as_the_models_folder_is_named_as_such(tmp_path: Path) -> None:
    """Defect (a new user's walkthrough): `identify --models models/tflite/rnet.tflite` (a
    file for the folder) said "cannot read .../rnet.tflite/manifest.json: [Errno 20] Not a
    directory: ...", where a missing folder is said plainly and `run --models` said it."""
    model = tmp_path / "rnet.tflite"
    model.write_bytes(b"a model, not a folder")

    with pytest.raises(ManifestError) as refused:
        load_manifest(model)

    assert str(refused.value) == (
        f"no models folder {model} (is a file, not a folder): check the path"
    )


def test_unreadable_manifests(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="edge-convert build"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("[1, 2]")
    with pytest.raises(ManifestError, match="JSON object"):
        load_manifest(tmp_path)


# ---------------------------------------------------------------------------- committed models


def test_committed_files_match_their_hashes(models_dir: Path) -> None:
    manifest = load_manifest(models_dir)
    assert verify_files(manifest, models_dir) == []
    for spec in manifest.models.values():
        digest = hashlib.sha256((models_dir / spec.file).read_bytes()).hexdigest()
        assert digest == spec.sha256, spec.file


def test_verify_files_names_a_changed_and_a_missing_file(models_dir: Path, tmp_path: Path) -> None:
    manifest = load_manifest(models_dir)
    copy_dir = tmp_path / "models"
    shutil.copytree(models_dir, copy_dir)
    (copy_dir / manifest.models["rnet"].file).unlink()
    onet = copy_dir / manifest.models["onet"].file
    data = bytearray(onet.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onet.write_bytes(bytes(data))
    problems = verify_files(manifest, copy_dir)
    assert len(problems) == 2
    assert any(manifest.models["rnet"].file in p and "missing" in p for p in problems)
    assert any(manifest.models["onet"].file in p and "sha256" in p for p in problems)


def test_committed_models_pass_the_edge_tpu_lint(models_dir: Path) -> None:
    pytest.importorskip("tensorflow", reason="the lint reads models through TensorFlow's schema")
    from converter.lint import format_report, lint_model

    manifest = load_manifest(models_dir)
    violations = [
        v for spec in manifest.models.values() for v in lint_model(models_dir / spec.file)
    ]
    assert violations == [], format_report(violations)


def test_manifest_describes_the_files_as_an_interpreter_sees_them(models_dir: Path) -> None:
    manifest = load_manifest(models_dir)
    runtime = find_runtime()
    for spec in manifest.models.values():
        interpreter = runtime.interpreter_class(model_path=str(models_dir / spec.file))
        for described, details in (
            (spec.inputs, interpreter.get_input_details()),
            (spec.outputs, interpreter.get_output_details()),
        ):
            actual = {d["name"]: d for d in details}
            assert sorted(actual) == sorted(t.name for t in described), spec.file
            for tensor in described:
                detail = actual[tensor.name]
                assert list(detail["shape"]) == tensor.shape, (spec.file, tensor.name)
                assert np.dtype(detail["dtype"]).name == tensor.dtype, (spec.file, tensor.name)
                scale, zero_point = detail["quantization"]
                assert math.isclose(scale, tensor.scale, rel_tol=1e-6), (spec.file, tensor.name)
                assert zero_point == tensor.zero_point, (spec.file, tensor.name)
        # full integer: raw pixels in (the standardisation is the input quantisation; the
        # liveness models take unscaled 0-255 pixels, so theirs is scale 1, zero point 0)
        [pixels] = spec.inputs
        assert pixels.dtype == "uint8", spec.file
        if spec.patch is not None and spec.patch.pixels == "raw":
            assert (pixels.scale, pixels.zero_point) == (1.0, 0), spec.file
        else:
            assert abs(pixels.scale - 1 / 128) < 2e-4, spec.file
            assert pixels.zero_point in (127, 128), spec.file
        assert all(t.dtype == "int8" for t in spec.outputs), spec.file


def test_committed_manifest_is_complete_and_sane(models_dir: Path) -> None:
    manifest = load_manifest(models_dir)
    assert manifest.camera == [640, 480]  # the default camera (issue: committed models)
    assert 20 <= manifest.min_face <= 80  # a face 0.5-2 m from a door camera
    assert set(ROLES) <= {spec.role for spec in manifest.models.values()}
    assert {spec.role for spec in manifest.models.values()} <= set(ROLES + OPTIONAL_ROLES)

    # the pyramid: from "min_face is one 12-px cell" down to "the frame fits one cell"
    factor = manifest.pyramid["factor"]
    scales = manifest.pyramid["scales"]
    assert 0.5 < factor < 1
    assert scales[0] == pytest.approx(PNET_CELL / manifest.min_face)
    assert np.allclose(np.diff(np.log(scales)), math.log(factor))
    shorter = min(manifest.camera)
    assert shorter * scales[-1] >= PNET_CELL > shorter * scales[-1] * factor
    pnets = manifest.by_role("pnet")
    assert [spec.scale for _, spec in pnets] == pytest.approx(scales)
    width, height = manifest.camera
    for (_, spec), scale in zip(pnets, scales, strict=True):
        expected = [1, math.ceil(height * scale), math.ceil(width * scale), 3]
        assert spec.inputs[0].shape == expected, spec.file

    # stage thresholds: probabilities, never above the float defaults (the build only lowers)
    defaults = Thresholds()
    for stage in ("pnet", "rnet", "onet"):
        value = manifest.thresholds[stage]
        assert 0.05 < value <= getattr(defaults, stage), stage
    for key in ("nms_scale", "nms_pnet", "nms_rnet", "nms_onet"):
        assert 0 < manifest.thresholds[key] <= 1, key

    # the open-set recognition threshold derived on LFW DevTrain
    recognition = manifest.recognition
    assert recognition, "manifest has no recognition block: rebuild with `edge-convert build`"
    assert 0.0 < recognition["threshold"] < 1.0
    assert recognition["aggregate"] in AGGREGATES
    assert 0.0 <= recognition["margin"] < 0.5
    assert "DevTrain" in recognition["derivation"]

    assert manifest.preprocessing["color"] == "RGB"
    assert 0 < manifest.preprocessing["facenet_margin"] < 1
    assert manifest.sources["mtcnn"] and manifest.sources["facenet"]
    assert manifest.converter["tensorflow"]
