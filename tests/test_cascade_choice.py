"""The CPU cascade chosen by measurement (edge_app/cascade_choice.py).

The timing and choice rules run on a virtual clock (a slow runner loses, the budget holds); the
real engines run on the committed models, int8 and their float twins; the Edge TPU, absent
here, is a recorded stand-in: on it the float cascade must never even be opened.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edge_app.cascade_choice import (
    BUDGET_SECONDS,
    CASCADES,
    RUNS,
    measure,
    open_engine,
    pick,
    probe_frame,
)
from edge_app.config import ConfigError, load_config
from edge_app.detection.boxes import iou_matrix
from edge_app.engine import Engine
from edge_app.errors import UserError
from edge_app.manifest import (
    CASCADE_ROLES,
    ManifestError,
    load_manifest,
    parse_manifest,
    sha256_file,
    verify_float_cascade,
)
from edge_app.runtime import Backend, select_backend


class VirtualClock:
    """perf_counter stand-in: time moves only when a fake runner says it spent some."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def runner(self, seconds: float, calls: list[str], name: str):
        def run() -> None:
            calls.append(name)
            self.now += seconds

        return run


# ---------------------------------------------------------------------------- timing rules


@pytest.mark.parametrize(
    ("int8", "flt", "winner"), [(0.050, 0.010, "float"), (0.010, 0.050, "int8")]
)
def test_the_slow_runner_loses(int8: float, flt: float, winner: str) -> None:
    clock, calls = VirtualClock(), list[str]()
    times, seconds = measure(
        {"int8": clock.runner(int8, calls, "int8"), "float": clock.runner(flt, calls, "float")},
        clock=clock,
    )
    chosen, reason = pick(times)
    assert chosen == winner
    assert f"{max(int8, flt) / min(int8, flt):.1f}x faster" in reason
    # one warm-up each, then alternating timed calls: a burst of load hits both alike
    assert calls[:2] == ["int8", "float"] and calls[2:6] == ["int8", "float", "int8", "float"]
    assert all(len(t) == RUNS for t in times.values())
    assert seconds == pytest.approx((RUNS + 1) * (int8 + flt))


def test_a_tie_keeps_int8() -> None:
    assert pick({"int8": [0.0100], "float": [0.0098]})[0] == "int8"  # 2%: under the margin
    assert pick({"int8": [0.0100], "float": [0.0090]})[0] == "float"  # 10%: float kept


def test_the_budget_bounds_a_slow_machine() -> None:
    clock, calls = VirtualClock(), list[str]()
    times, seconds = measure(
        {"int8": clock.runner(0.4, calls, "int8"), "float": clock.runner(0.3, calls, "float")},
        clock=clock,
    )
    # the warm-ups alone spend the budget: exactly one timed call each, then stop
    assert [len(t) for t in times.values()] == [1, 1]
    assert seconds == pytest.approx(1.4) and seconds > BUDGET_SECONDS
    assert pick(times)[0] == "float"


# ---------------------------------------------------------------------------- manifest


def test_the_float_twins_are_listed_with_their_hashes(models_dir: Path) -> None:
    manifest = load_manifest(models_dir)
    section = manifest.float_cascade
    assert section is not None, "models/tflite ships no float cascade"
    assert verify_float_cascade(manifest, models_dir) == []
    for name, spec in section.models.items():
        assert spec.file.startswith("float/")
        assert sha256_file(models_dir / spec.file) == spec.sha256
        twin = manifest.models[name]
        # same architecture at the same pyramid scale: same input shape, same output roles
        assert spec.role == twin.role and spec.scale == twin.scale
        assert spec.inputs[0].shape == twin.inputs[0].shape and spec.inputs[0].dtype == "float32"
        assert sorted(t.role for t in spec.outputs) == sorted(t.role for t in twin.outputs)
    assert sorted(section.models) == sorted(
        n for n, s in manifest.models.items() if s.role in CASCADE_ROLES
    )
    assert section.thresholds == {"pnet": 0.6, "rnet": 0.7, "onet": 0.8}
    assert sha256_file(models_dir / section.probe) == section.probe_sha256


def test_with_float_cascade_keeps_the_int8_facenet(models_dir: Path) -> None:
    manifest = load_manifest(models_dir)
    hybrid = manifest.with_float_cascade()
    assert hybrid.models["facenet"] == manifest.models["facenet"]
    assert all(
        s.file.startswith("float/") for s in hybrid.models.values() if s.role in CASCADE_ROLES
    )
    assert hybrid.thresholds["pnet"] == 0.6 and manifest.thresholds["pnet"] < 0.6
    assert hybrid.thresholds["nms_pnet"] == manifest.thresholds["nms_pnet"]


@pytest.mark.parametrize("bad", ["../pnet_0.tflite", "/etc/passwd", "float/../../x.tflite"])
def test_a_float_file_outside_the_models_folder_is_refused(models_dir: Path, bad: str) -> None:
    data = json.loads((models_dir / "manifest.json").read_text())
    data["float_cascade"]["models"]["rnet"]["file"] = bad
    with pytest.raises(ManifestError, match="relative path inside the models folder"):
        parse_manifest(data)


def test_a_manifest_without_the_section_still_loads(models_dir: Path) -> None:
    data = json.loads((models_dir / "manifest.json").read_text())
    del data["float_cascade"]
    manifest = parse_manifest(data)
    assert manifest.float_cascade is None and "float_cascade" not in manifest.to_json()
    with pytest.raises(ManifestError, match="no float_cascade"):
        manifest.with_float_cascade()


# ---------------------------------------------------------------------------- config


def test_config_cascade_defaults_to_auto_and_is_validated(tmp_path: Path) -> None:
    assert CASCADES == ("auto", "int8", "float")
    path = tmp_path / "c.toml"
    path.write_text("")
    assert load_config(path).models.cascade == "auto"
    for value in ("int8", "float"):
        path.write_text(f'[models]\ncascade = "{value}"\n')
        assert load_config(path).models.cascade == value
    path.write_text('[models]\ncascade = "fp16"\n')
    with pytest.raises(ConfigError, match="models.cascade: str 'fp16' is not one of 'auto'"):
        load_config(path)
    example = load_config(Path(__file__).parents[1] / "config.example.toml")
    assert example.models.cascade == "auto"


# ---------------------------------------------------------------------------- the engine


def test_auto_on_the_cpu_times_both_and_logs_the_choice(
    models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_app.cascade_choice")
    engine = Engine.open(models_dir, backend="cpu", threads=2, cascade="auto")
    choice = engine.cascade_choice
    assert choice is not None and choice.requested == "auto"
    assert choice.chosen in ("int8", "float") and set(choice.ms) == {"int8", "float"}
    assert all(ms > 0 for ms in choice.ms.values()) and min(choice.runs.values()) >= 1
    faster = min(choice.ms, key=choice.ms.__getitem__)
    assert choice.chosen == faster or choice.ms["float"] >= 0.95 * choice.ms["int8"]
    cascade_files = {s.file for s in engine.manifest.models.values() if s.role in CASCADE_ROLES}
    assert all(f.startswith("float/") == (choice.chosen == "float") for f in cascade_files)
    assert engine.manifest.models["facenet"].file == "facenet.tflite"  # int8 either way
    choice_line, ready = [
        r.getMessage() for r in caplog.records if r.name == "edge_app.cascade_choice"
    ]
    assert f"cascade={choice.chosen} requested=auto" in choice_line
    assert "int8_ms=" in choice_line and "float_ms=" in choice_line
    # one "engine ready" line, for the engine kept (two were built to be timed)
    assert ready.startswith(f"engine ready backend=cpu cascade={choice.chosen} ")
    frame = probe_frame(engine.manifest, models_dir)
    faces, embeddings = engine.process(frame)
    assert len(faces) == 1 and embeddings.shape == (1, 512)


class SlowFloat(Engine):
    """The real engine, its float cascade made 8x slower (each detection run 8 times): about
    3x slower than int8 on this machine however loaded it is, since load slows both alike."""

    def detect(self, frame: np.ndarray):
        if self.manifest.models["rnet"].file.startswith("float/"):
            for _ in range(7):
                super().detect(frame)
        return super().detect(frame)


def test_a_slowed_float_cascade_loses_to_int8(models_dir: Path) -> None:
    manifest = load_manifest(models_dir)
    engine = open_engine(SlowFloat, manifest, models_dir, select_backend("cpu", 2), "auto")
    assert engine.cascade_choice is not None
    assert engine.cascade_choice.chosen == "int8", engine.cascade_choice.describe()
    assert not engine.manifest.models["rnet"].file.startswith("float/")


def test_float_on_request_runs_the_twins_with_the_int8_facenet(models_dir: Path) -> None:
    int8 = Engine.open(models_dir, backend="cpu", threads=2, cascade="int8")
    flt = Engine.open(models_dir, backend="cpu", threads=2, cascade="float")
    assert flt.cascade_choice is not None and flt.cascade_choice.chosen == "float"
    assert flt.cascade.thresholds.pnet == 0.6 and int8.cascade.thresholds.pnet < 0.6
    frame = probe_frame(flt.manifest, models_dir)
    faces_f, emb_f = flt.process(frame)
    faces_q, emb_q = int8.process(frame)
    assert len(faces_f) == len(faces_q) == 1
    assert iou_matrix(faces_f.boxes, faces_q.boxes)[0, 0] >= 0.7
    assert float(emb_f[0] @ emb_q[0]) > 0.95  # same FaceNet, nearly the same crop


class RecordingEngine:
    """Stands in for Engine on an Edge TPU (absent here): records what it was built from."""

    built: list[Any] = []

    def __init__(self, manifest, models_dir, backend, **options) -> None:
        RecordingEngine.built.append(manifest)
        self.manifest = manifest
        self.cascade_choice = None
        self.camera = (640, 480)  # what open_engine's "engine ready" line reads
        self.cascade = SimpleNamespace(min_face=40.0)

    def detect(self, frame):  # pragma: no cover - reaching it is the failure
        raise AssertionError("the Edge TPU path must not time anything")


@pytest.mark.parametrize("requested", ["auto", "float", "int8"])
def test_the_edge_tpu_never_selects_float(
    models_dir: Path, requested: str, caplog: pytest.LogCaptureFixture
) -> None:
    manifest = load_manifest(models_dir)
    tpu = Backend("edgetpu", select_backend("cpu").runtime, object(), 1, "stand-in")
    RecordingEngine.built.clear()
    engine = open_engine(RecordingEngine, manifest, models_dir, tpu, requested)  # type: ignore[arg-type]
    assert RecordingEngine.built == [manifest]  # one engine, the int8 models, nothing timed
    choice = engine.cascade_choice
    assert choice is not None
    assert choice.chosen == "int8"
    assert "Edge TPU" in choice.reason
    if requested == "float":
        assert "cascade=float ignored" in caplog.text


def _copy_models(models_dir: Path, target: Path) -> Path:
    """A models folder of symlinks to the committed one, with the float folder copied."""
    for item in models_dir.iterdir():
        if item.is_file():
            (target / item.name).symlink_to(item.resolve())
    shutil.copytree(models_dir / "float", target / "float")
    return target


def _changed(folder: Path) -> None:
    (folder / "float" / "rnet.tflite").write_bytes(b"not a model")


def _swapped(folder: Path) -> None:
    """The float R-Net and O-Net swapped, the manifest's hashes made to match: each file is
    then not the model its entry describes. Under "auto" that stopped the door from starting
    (an outside audit's finding)."""
    data = json.loads((folder / "manifest.json").resolve().read_text())
    (folder / "manifest.json").unlink()
    rnet, onet = folder / "float" / "rnet.tflite", folder / "float" / "onet.tflite"
    swapped = onet.read_bytes(), rnet.read_bytes()
    rnet.write_bytes(swapped[0])
    onet.write_bytes(swapped[1])
    for entry in data["float_cascade"]["models"].values():
        if entry["file"] in ("float/rnet.tflite", "float/onet.tflite"):
            entry["sha256"] = hashlib.sha256((folder / entry["file"]).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("tamper", "reason", "refusal"),
    [
        (
            _changed,
            "rnet.tflite does not match its sha256",
            'cascade = "float" but float rnet.*"int8"',
        ),
        (_swapped, "not the model its manifest entry describes", "not the model its manifest"),
    ],
    ids=["changed", "swapped"],
)
def test_a_tampered_float_model_falls_back_to_int8_or_is_refused(
    models_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    tamper: Callable[[Path], None],
    reason: str,
    refusal: str,
) -> None:
    folder = _copy_models(models_dir, tmp_path)
    tamper(folder)
    engine = Engine.open(folder, backend="cpu", threads=1, cascade="auto")
    assert engine.cascade_choice is not None and engine.cascade_choice.chosen == "int8"
    assert reason in engine.cascade_choice.reason
    assert "float cascade unusable" in caplog.text
    with pytest.raises(UserError, match=refusal):
        Engine.open(folder, backend="cpu", threads=1, cascade="float")
    with pytest.raises(UserError, match="models.cascade: 'fp16' is not one of"):
        Engine.open(folder, backend="cpu", threads=1, cascade="fp16")


def test_models_without_a_float_cascade_run_int8_quietly(models_dir: Path, tmp_path: Path) -> None:
    data = json.loads((models_dir / "manifest.json").read_text())
    del data["float_cascade"]
    for item in models_dir.iterdir():
        if item.suffix in (".tflite", ".npy"):  # the models and the centring mean
            (tmp_path / item.name).symlink_to(item.resolve())
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    engine = Engine.open(tmp_path, backend="cpu", threads=1, cascade="auto")
    assert engine.cascade_choice is not None and engine.cascade_choice.chosen == "int8"
    assert "edge-convert float-cascade" in engine.cascade_choice.reason


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("cascade", ["float", "int8"])
def test_eval_lfw_runs_the_cascade_asked_for(
    models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], cascade: str
) -> None:
    from edge_app.cli import main

    sample = Path(__file__).parent / "data" / "lfw_sample"
    out = tmp_path / "lfw.json"
    code = main(
        [
            *("eval", "lfw", "--pairs", str(sample / "pairs.txt"), "--images", str(sample)),
            *("--models", str(models_dir), "--backend", "cpu", "--cascade", cascade),
            *("--json", str(out)),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["cascade"] == cascade and result["no_face_images"] == 0
    assert f"cascade         {cascade} (cascade = '{cascade}')" in capsys.readouterr().out


# ---------------------------------------------------------------------------- detections


@pytest.mark.slow
def test_float_twins_reproduce_the_int8_detections(models_dir: Path, shared_data: Path) -> None:
    """The existing reproduction metric (converter/validate.py: a float face is reproduced by
    an int8 one at IoU >= 0.7) with its 99% target, on the faces the door is configured for
    (at least min_face), and its landmark target, on the detection photos and the first 300
    LFW DevTest images: the shipped float cascade against the int8 one. Counting the faces
    below min_face too, the photos reproduce 98.32% (docs/QUANTIZATION.md): that target is
    not met by the int8 cascade either way."""
    from converter.validate import (
        TARGETS,
        _detection_images,
        compare_cascades,
        stage_comparisons,
    )
    from edge_app.lfw import read_pairs

    int8 = Engine.open(models_dir, backend="cpu", cascade="int8")
    flt = Engine.open(models_dir, backend="cpu", cascade="float")
    stages = stage_comparisons(flt, int8)
    pairs = read_pairs(shared_data / "lfw" / "pairsDevTest.txt")
    lfw = [shared_data / "lfw" / "images" / n for n in pairs.images[:300]]
    for paths in (_detection_images(shared_data), lfw):
        result = compare_cascades(flt, int8, paths, stages)
        assert result["float_faces_at_min_face"] > 100, result
        assert result["reproduced_at_min_face"] >= TARGETS["detections_reproduced"], result
        assert result["landmark_error_of_box_mean"] <= TARGETS["landmark_error"], result
