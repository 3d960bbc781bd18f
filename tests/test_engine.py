"""The engine and runtime selection, for real: this machine has no libedgetpu, so the CPU path
is chosen and the log says why; interpreters are the real TFLite ones (counted, not mocked).

Frames are LFW photos from tests/data/lfw_sample pasted on a plain background, so these tests
need the built models but not ../shared.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

import edge_app.engine as engine_module
from edge_app.detection.pyramid import level_shape, pyramid_scales
from edge_app.engine import Engine
from edge_app.errors import UserError
from edge_app.faces import Faces
from edge_app.images import read_image
from edge_app.manifest import load_manifest
from edge_app.runtime import EDGETPU_LIBRARY, RuntimeUnavailable, find_runtime, select_backend

SAMPLE = Path(__file__).resolve().parent / "data" / "lfw_sample"
MARTHA = SAMPLE / "Martha_Stewart" / "Martha_Stewart_0001.jpg"
JOE = SAMPLE / "Joe_Nichols" / "Joe_Nichols_0001.jpg"

# ai-edge-litert's Delegate.__del__ trips over its own failed __init__ when the library is
# absent ("'Delegate' object has no attribute '_library'"); harmless, and not ours. The tests
# that load the delegate collect it themselves, so that the warning is raised (and ignored) there.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def libedgetpu_loads() -> bool:
    try:
        ctypes.CDLL(EDGETPU_LIBRARY)
    except OSError:
        return False
    return True


needs_no_edgetpu = pytest.mark.skipif(
    libedgetpu_loads(), reason=f"{EDGETPU_LIBRARY} is installed here: the CPU fallback is not seen"
)


def door_frame(
    width: int, height: int, photos: list[tuple[Path, int, int, int]]
) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """A plain, shaded background with LFW photos pasted at (x, y) resized to side px."""
    shade = np.linspace(60, 160, width, dtype=np.float32)[None, :, None]
    frame = np.broadcast_to(shade, (height, width, 3)).astype(np.uint8).copy()
    placed = []
    for path, x, y, side in photos:
        frame[y : y + side, x : x + side] = cv2.resize(read_image(path), (side, side))
        placed.append((x, y, side))
    return frame, placed


def centred_on(box: np.ndarray, x: int, y: int, side: int) -> bool:
    """The face box lies inside the pasted photo and covers its centre."""
    cx, cy = x + side / 2, y + side / 2
    inside = x <= box[0] and y <= box[1] and box[2] <= x + side and box[3] <= y + side
    return inside and box[0] < cx < box[2] and box[1] < cy < box[3]


# ---------------------------------------------------------------------------- runtime


@needs_no_edgetpu
def test_auto_falls_back_to_the_cpu_and_logs_why(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_app.runtime")
    backend = select_backend("auto")
    assert backend.kind == "cpu" and backend.delegate is None
    assert EDGETPU_LIBRARY in backend.reason and "did not load" in backend.reason
    assert backend.threads == (os.cpu_count() or 1)
    [record] = [r for r in caplog.records if r.name == "edge_app.runtime"]
    assert record.levelno == logging.INFO
    assert "backend=cpu" in record.getMessage() and EDGETPU_LIBRARY in record.getMessage()
    gc.collect()


@needs_no_edgetpu
def test_forcing_the_edge_tpu_without_it_is_a_clear_error(models_dir: Path) -> None:
    with pytest.raises(RuntimeUnavailable) as raised:
        select_backend("edgetpu")
    message = str(raised.value)
    assert EDGETPU_LIBRARY in message and "Install libedgetpu" in message
    with pytest.raises(UserError, match="Install libedgetpu"):
        Engine.open(models_dir, backend="edgetpu")
    del raised
    gc.collect()


def test_cpu_on_request_with_the_threads_asked_for(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_app.runtime")
    backend = select_backend("cpu", threads=1)
    assert (backend.kind, backend.threads, backend.reason) == ("cpu", 1, "the CPU was requested")
    assert "threads=1" in caplog.text
    with pytest.raises(ValueError, match="backend must be one of"):
        select_backend("gpu")


def test_an_engine_from_config_sections_runs_every_setting_they_hold(models_dir: Path) -> None:
    """The daemon, doctor and web enrolment open the engine from [models] and [detection]."""
    from edge_app.config import DetectionConfig, ModelsConfig

    engine = Engine.from_config(
        ModelsConfig(dir=models_dir, backend="cpu", threads=1, cascade="int8"),
        DetectionConfig(min_face=64),
    )
    assert engine.models_dir == models_dir
    assert (engine.backend.kind, engine.backend.threads) == ("cpu", 1)
    assert engine.cascade.min_face == 64.0
    assert engine.cascade_choice is None or engine.cascade_choice.requested == "int8"


def test_the_preferred_runtime_is_the_one_in_use() -> None:
    pytest.importorskip("ai_edge_litert.interpreter")
    runtime = find_runtime()
    assert runtime.module == "ai_edge_litert.interpreter" and runtime.version != "unknown"


def test_open_refuses_models_that_do_not_match_their_hashes(
    models_dir: Path, tmp_path: Path
) -> None:
    manifest = load_manifest(models_dir)
    for spec in manifest.models.values():
        (tmp_path / spec.file).symlink_to((models_dir / spec.file).resolve())
    (tmp_path / "manifest.json").write_text(manifest.to_json())
    (tmp_path / manifest.models["rnet"].file).unlink()
    (tmp_path / manifest.models["rnet"].file).write_bytes(b"not a model")
    with pytest.raises(UserError, match="rnet.*sha256.*edge-convert build"):
        Engine.open(tmp_path, backend="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no manifest.json in .*: build models with `edge-convert"):
        Engine.open((tmp_path / "empty").resolve(), backend="cpu")  # a folder, no manifest
    with pytest.raises(UserError, match="no models folder .*nowhere \\(does not exist\\)"):
        Engine.open(tmp_path / "nowhere", backend="cpu")  # a typo: no folder at all


# ---------------------------------------------------------------------------- interpreters


def counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[Any]:
    """Wrap engine_module.<name> (the real one) and record each call's first argument."""
    real: Callable[..., Any] = getattr(engine_module, name)
    calls: list[Any] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0] if args else None)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_module, name, wrapper)
    return calls


def test_interpreters_are_created_once_and_reused(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = counting(monkeypatch, "make_interpreter")
    runners = counting(monkeypatch, "ModelRunner")
    reads = counting(monkeypatch, "read_bounded")
    engine = Engine.open(models_dir, backend="cpu")
    manifest = engine.manifest
    assert len(created) == len(runners) == len(manifest.models)
    assert sorted(p.name for p in reads) == sorted(s.file for s in manifest.models.values())

    frame, _ = door_frame(*engine.camera, [(MARTHA, 200, 100, 220)])
    first = engine.detect(frame)
    for _ in range(3):
        again = engine.detect(frame)
        assert np.array_equal(again.boxes, first.boxes)
        engine.embed(frame, again)
    assert len(created) == len(runners) == len(manifest.models)

    # another frame size on the CPU: P-Net is resized once per new level shape, then kept
    small, _ = door_frame(320, 240, [(MARTHA, 100, 40, 150)])
    compiled = {tuple(spec.inputs[0].shape[1:3]) for _, spec in manifest.by_role("pnet")}
    new_shapes = {
        level_shape(320, 240, s) for s in pyramid_scales(320, 240, engine.cascade.min_face)
    } - compiled
    assert new_shapes
    engine.detect(small)
    assert len(created) == len(manifest.models) + len(new_shapes)
    assert len(reads) == len(manifest.models)  # made from the bytes read and checked at open
    engine.detect(small)
    engine.detect(frame)
    assert len(created) == len(runners) == len(manifest.models) + len(new_shapes)


# ---------------------------------------------------------------------------- detect / embed


@pytest.fixture(scope="module")
def two_people() -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    return door_frame(640, 480, [(MARTHA, 40, 120, 220), (JOE, 360, 100, 240)])


def test_embeddings_are_unit_vectors_one_per_face(
    engine: Engine, two_people: tuple[np.ndarray, list[tuple[int, int, int]]]
) -> None:
    frame, placed = two_people
    faces = engine.detect(frame)
    assert len(faces) == 2
    order = np.argsort(faces.boxes[:, 0])  # Martha on the left, Joe on the right
    for index, where in zip(order, placed, strict=True):
        assert centred_on(faces.boxes[index], *where)
    embeddings = engine.embed(frame, faces)
    assert embeddings.shape == (2, 512) and embeddings.dtype == np.float32
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert float(embeddings[0] @ embeddings[1]) < 0.5  # two different people


def test_embed_of_no_faces_is_an_empty_matrix(engine: Engine) -> None:
    frame, _ = door_frame(640, 480, [])
    assert len(engine.detect(frame)) == 0
    empty = engine.embed(frame, Faces.empty())
    assert empty.shape == (0, 512) and empty.dtype == np.float32


def test_process_is_detect_then_embed(
    engine: Engine, two_people: tuple[np.ndarray, list[tuple[int, int, int]]]
) -> None:
    frame, _ = two_people
    faces, embeddings = engine.process(frame)
    detected = engine.detect(frame)
    for a, b in (
        (faces.boxes, detected.boxes),
        (faces.scores, detected.scores),
        (faces.landmarks, detected.landmarks),
        (embeddings, engine.embed(frame, detected)),
    ):
        assert np.array_equal(a, b)
    assert set(engine.timings) >= {"pyramid", "pnet", "rnet", "onet", "align", "facenet"}


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((480, 640, 3), np.float32),
        np.zeros((480, 640, 3), np.uint16),
        np.zeros((480, 640), np.uint8),
        np.zeros((480, 640, 4), np.uint8),
        np.zeros((480, 640, 1), np.uint8),
    ],
    ids=["float32", "uint16", "grey 2-D", "RGBA", "one channel"],
)
def test_frames_must_be_rgb_uint8(engine: Engine, frame: np.ndarray) -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        engine.detect(frame)
    with pytest.raises(ValueError, match="RGB uint8"):
        engine.process(frame)


@pytest.mark.parametrize("size", [(320, 240), (1280, 720), (480, 640)], ids=str)
def test_any_frame_size_works_on_the_cpu(engine: Engine, size: tuple[int, int]) -> None:
    """Faces are found where they are, and embed as they do in a camera-sized frame."""
    assert tuple(engine.camera) != size
    width, height = size
    side = int(min(width, height) * 0.55)
    x, y = (width - side) // 3, (height - side) // 2
    frame, _ = door_frame(width, height, [(MARTHA, x, y, side)])
    faces, embeddings = engine.process(frame)
    assert len(faces) == 1 and centred_on(faces.boxes[0], x, y, side)
    reference_frame, _ = door_frame(640, 480, [(MARTHA, 200, 100, 260)])
    _, reference = engine.process(reference_frame)
    assert float(embeddings[0] @ reference[0]) > 0.85


def test_the_resized_p_net_cache_stays_bounded(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Photos of many sizes (each size needs P-Nets of its own level shapes on the CPU) keep at
    most MAX_RESIZED_PNETS of them, most recently used first; an evicted shape comes back."""
    created = counting(monkeypatch, "make_interpreter")
    engine = Engine.open(models_dir, backend="cpu", threads=1)
    base = len(created)
    rng = np.random.default_rng(0)
    sizes = [(240 + 13 * i, 200 + 11 * i) for i in range(10)]
    shapes = set()
    for width, height in sizes:
        engine.detect(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        shapes |= {level_shape(width, height, s) for s in engine.cascade.scales(width, height)}
        assert len(engine._resized_pnets) <= engine_module.MAX_RESIZED_PNETS
    assert len(shapes) > 2 * engine_module.MAX_RESIZED_PNETS  # the cache had to evict
    assert len(engine._resized_pnets) == engine_module.MAX_RESIZED_PNETS
    # The last frame's levels are all kept: detecting it again creates nothing.
    made = len(created)
    width, height = sizes[-1]
    engine.detect(door_frame(width, height, [(MARTHA, 40, 30, 150)])[0])
    assert len(created) == made
    # The first size was evicted; it is rebuilt on demand and detection still works.
    width, height = sizes[0]
    frame, placed = door_frame(width, height, [(MARTHA, 30, 20, 150)])
    faces = engine.detect(frame)
    assert len(created) > made
    assert len(faces) == 1 and centred_on(faces.boxes[0], *placed[0])
    assert len(engine._resized_pnets) == engine_module.MAX_RESIZED_PNETS
    assert made - base >= len(shapes) - len(engine._pnets)  # each new shape built once
