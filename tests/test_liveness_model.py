"""The liveness models: the port against upstream, the committed int8 models, the scorer.

- Patch geometry (fast, pure numpy): upstream's rule worked by hand on boxes in the middle,
  at each edge, and too large to fit, plus invariants on random boxes.
- The committed models (fast): listed in the manifest with their patch, raw-pixel int8 input,
  lint clean, scored by the engine.
- The port (slow, needs ../shared/data and torch): converter.minifasnet_torch against
  upstream's own network definition, loaded from the shared reference folder at test time,
  on real NUAA patches.
- The scorer on real NUAA frames (slow, needs ../shared/data): live above print.
- `edge-convert build --only liveness` (slow): the other models stay byte for byte.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from needs import missing_from_models

from converter.mtcnn_models import SourceError
from edge_app.engine import Engine
from edge_app.errors import UserError
from edge_app.faces import Faces
from edge_app.images import read_image
from edge_app.liveness import (
    SPOOF_LOGITS,
    cut_patches,
    patch_boxes,
    real_probability,
)
from edge_app.manifest import (
    LIVENESS_ROLE,
    MANIFEST_NAME,
    ManifestError,
    PatchSpec,
    load_manifest,
    parse_manifest,
    sha256_file,
)

HAVE_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="reading the .pth weights needs torch")
# Each upstream file, the crop scale its name carries, and the name the build gives it.
UPSTREAM = {
    "2.7_80x80_MiniFASNetV2.pth": (2.7, "minifasnet_v2"),
    "4_0_0_80x80_MiniFASNetV1SE.pth": (4.0, "minifasnet_v1se"),
}
# NUAA frames the slow tests use: a spread over the eight subjects, live and print.
FRAMES_PER_LABEL = 48


def _faces(*boxes: tuple[float, float, float, float]) -> Faces:
    n = len(boxes)
    return Faces(
        np.array(boxes, np.float32).reshape(n, 4),
        np.ones(n, np.float32),
        np.zeros((n, 5, 2), np.float32),
    )


# ---------------------------------------------------------------- patch geometry (fast)


def test_patch_in_the_middle_is_the_box_enlarged_about_its_centre() -> None:
    # upstream box (x, y, w, h) = (270, 190, 100, 100): centre (320, 240), 2.7x = 270 px
    rect = patch_boxes(np.array([[270, 190, 369, 289]]), 640, 480, 2.7)
    assert rect.tolist() == [[185, 105, 455, 375]]


def test_patch_past_the_left_edge_is_shifted_right() -> None:
    # centre (60, 240): left would be -75, so the patch moves right by 75 and keeps its size
    rect = patch_boxes(np.array([[10, 190, 109, 289]]), 640, 480, 2.7)
    assert rect.tolist() == [[0, 105, 270, 375]]


def test_patch_past_the_top_edge_is_shifted_down() -> None:
    rect = patch_boxes(np.array([[270, 0, 369, 99]]), 640, 480, 2.7)
    # centre y 50: top -85 -> 0, bottom 185 + 85 = 270
    assert rect.tolist() == [[185, 0, 455, 270]]


def test_patch_past_the_bottom_right_corner_ends_on_the_last_pixel() -> None:
    # a 40x40 box in the corner, 4.0x = 160 px, centre (620, 460): shifted left and up by 61
    rect = patch_boxes(np.array([[600, 440, 639, 479]]), 640, 480, 4.0)
    assert rect.tolist() == [[479, 319, 639, 479]]


def test_patch_too_large_for_the_frame_is_scaled_down_to_fit() -> None:
    # 300x300 at 4.0x would be 1200 px; the scale drops to 479/300, the frame's height
    rect = patch_boxes(np.array([[170, 90, 469, 389]]), 640, 480, 4.0)
    left, top, right, bottom = rect[0]
    assert (top, bottom) == (0, 479)
    assert right - left == pytest.approx(479, abs=1)  # square, like the box


def test_upstream_box_uses_truncated_corner_and_inclusive_size() -> None:
    # (x1, y1) = (270.9, 190.9) -> x, y = 270, 190; w = int(369.2 - 270.9 + 1) = 99
    rect = patch_boxes(np.array([[270.9, 190.9, 369.2, 289.2]]), 640, 480, 1.0)
    assert rect.tolist() == [[270, 190, 369, 289]]


def test_patches_of_random_boxes_stay_inside_the_frame() -> None:
    rng = np.random.default_rng(0)
    width, height = 640, 480
    x1 = rng.uniform(-100, width, 500)
    y1 = rng.uniform(-100, height, 500)
    side = rng.uniform(12, 400, 500)
    boxes = np.stack([x1, y1, x1 + side, y1 + side], axis=1)
    for scale in (2.7, 4.0):
        rect = patch_boxes(boxes, width, height, scale)
        assert (rect[:, :2] >= 0).all()
        assert (rect[:, 2] <= width - 1).all() and (rect[:, 3] <= height - 1).all()
        assert (rect[:, 2] > rect[:, 0]).all() and (rect[:, 3] > rect[:, 1]).all()
        # the enlarged size is kept (to within truncation) whenever it fits the frame
        size = np.trunc(side + 1)
        fits = size * scale <= height - 1
        assert np.allclose(rect[fits, 2] - rect[fits, 0], size[fits] * scale, atol=1.01)


def test_cut_patches_are_resized_and_in_bgr_order() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[..., 0] = 200  # red in RGB
    frame[..., 2] = 10
    patch = PatchSpec(scale=2.7, width=80, height=80, color="BGR", pixels="raw")
    patches = cut_patches(frame, _faces((270, 190, 369, 289), (0, 0, 50, 50)), patch)
    assert patches.shape == (2, 80, 80, 3) and patches.dtype == np.uint8
    assert (patches[..., 2] == 200).all() and (patches[..., 0] == 10).all()
    rgb = cut_patches(frame, _faces((270, 190, 369, 289)), PatchSpec(2.7, 80, 80, "RGB"))
    assert (rgb[..., 0] == 200).all()


def test_cut_patch_is_upstreams_inclusive_crop_resized_bilinear() -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    patch = PatchSpec(scale=2.7, width=80, height=80)
    [bgr] = cut_patches(frame, _faces((270, 190, 369, 289)), patch)
    expected = cv2.resize(frame[105:376, 185:456], (80, 80), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(bgr, expected[..., ::-1])


def test_real_probability_is_the_softmax_of_the_three_logits() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 6, (200, 3))
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    folded = logits[:, [0, 2]] - logits[:, [1]]
    assert np.allclose(real_probability(folded), softmax[:, 1], atol=1e-12)
    assert real_probability(np.array([1e6, 1e6])) == pytest.approx(0.0)  # no overflow


# ---------------------------------------------------------------- manifest (fast)


def _liveness_entry(patch: object) -> dict:
    return {
        "role": LIVENESS_ROLE,
        "file": "x.tflite",
        "sha256": "0" * 64,
        "inputs": [{"name": "patch", "shape": [1, 80, 80, 3], "dtype": "uint8", "scale": 1.0}],
        "outputs": [{"name": "o", "shape": [1, 2], "dtype": "int8", "role": SPOOF_LOGITS}],
        "patch": patch,
    }


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (None, "needs its patch geometry"),
        ({"scale": 2.7, "width": 80, "height": 80, "color": "YUV"}, "models.live.patch.color"),
        ({"scale": 2.7, "width": 80, "height": 80, "pixels": "0-1"}, "models.live.patch.pixels"),
        ({"scale": 0, "width": 80, "height": 80}, "is not a face box enlarged 1 to 8 times"),
        ("2.7", "models.live.patch: expected an object"),
    ],
)
def test_liveness_entry_without_a_sane_patch_is_refused(
    models_dir: Path, patch: object, message: str
) -> None:
    data = json.loads((models_dir / MANIFEST_NAME).read_text())
    data["models"]["live"] = _liveness_entry(patch)
    with pytest.raises(ManifestError, match=message):
        parse_manifest(data)


def test_liveness_is_an_optional_role(models_dir: Path) -> None:
    data = json.loads((models_dir / MANIFEST_NAME).read_text())
    data["models"] = {k: v for k, v in data["models"].items() if v["role"] != LIVENESS_ROLE}
    del data["liveness"]  # as a build without --liveness writes it
    assert parse_manifest(data).by_role(LIVENESS_ROLE) == []


@pytest.fixture(scope="module")
def liveness_manifest(models_dir: Path):
    manifest = load_manifest(models_dir)
    if not manifest.by_role(LIVENESS_ROLE):
        missing_from_models(models_dir, "liveness models (built without --liveness)")
    return manifest


def test_manifest_lists_both_minifasnets_with_their_patches(
    liveness_manifest, models_dir: Path
) -> None:
    models = dict(liveness_manifest.by_role(LIVENESS_ROLE))
    assert sorted(models) == sorted(name for _, name in UPSTREAM.values())
    for scale, name in UPSTREAM.values():
        spec = models[name]
        assert spec.patch == PatchSpec(scale=scale, width=80, height=80, color="BGR", pixels="raw")
        assert spec.sha256 == sha256_file(models_dir / spec.file)
        [pixels] = spec.inputs
        assert (pixels.shape, pixels.dtype) == ([1, 80, 80, 3], "uint8")
        assert (pixels.scale, pixels.zero_point) == (1.0, 0)  # the raw pixel, exactly
        [logits] = spec.outputs
        assert (logits.shape, logits.dtype, logits.role) == ([1, 2], "int8", SPOOF_LOGITS)
    assert set(liveness_manifest.sources["liveness"]["files"]) == set(UPSTREAM)
    assert liveness_manifest.liveness["models"] == sorted(models)


def test_committed_liveness_models_pass_the_edge_tpu_lint(
    liveness_manifest, models_dir: Path
) -> None:
    pytest.importorskip("tensorflow", reason="the lint reads models through TensorFlow's schema")
    from converter.lint import format_report, lint_model

    for _, spec in liveness_manifest.by_role(LIVENESS_ROLE):
        violations = lint_model(models_dir / spec.file)
        assert violations == [], format_report(violations)


# ---------------------------------------------------------------- engine (fast)


def test_engine_scores_faces_in_unit_range(engine: Engine, liveness_manifest) -> None:
    assert engine.has_liveness
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    scores = engine.liveness(frame, _faces((270, 190, 369, 289), (600, 440, 639, 479)))
    assert scores.shape == (2,) and scores.dtype == np.float32
    assert ((scores >= 0) & (scores <= 1)).all()
    assert engine.liveness(frame, Faces.empty()).shape == (0,)
    assert engine.timings["liveness"] > 0


def test_engine_without_liveness_models_says_how_to_add_them(
    models_dir: Path, tmp_path: Path
) -> None:
    data = json.loads((models_dir / MANIFEST_NAME).read_text())
    data["models"] = {k: v for k, v in data["models"].items() if v["role"] != LIVENESS_ROLE}
    del data["liveness"]  # as a build without --liveness writes it
    for entry in data["models"].values():
        (tmp_path / entry["file"]).symlink_to(models_dir / entry["file"])
    mean = data["preprocessing"]["facenet_mean"]["file"]  # the centring mean goes with FaceNet
    (tmp_path / mean).symlink_to(models_dir / mean)
    if "cohort" in data["recognition"]:  # and the score normalisation cohort
        cohort = data["recognition"]["cohort"]["file"]
        (tmp_path / cohort).symlink_to(models_dir / cohort)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    engine = Engine.open(tmp_path, backend="cpu")
    assert not engine.has_liveness
    with pytest.raises(UserError, match="--only liveness --liveness"):
        engine.liveness(np.zeros((480, 640, 3), np.uint8), _faces((10, 10, 60, 60)))


# ---------------------------------------------------------------- on shared data (slow)


@pytest.fixture(scope="module")
def minifasnet_dir(shared_data: Path) -> Path:
    folder = shared_data / "liveness" / "minifasnet"
    if not (folder / "reference" / "MiniFASNet.py").is_file():
        pytest.skip(f"no MiniFASNet weights and reference in {folder}")
    return folder


@pytest.fixture(scope="module")
def nuaa_frames(shared_data: Path) -> dict[str, list[Path]]:
    """FRAMES_PER_LABEL live and print frames, spread evenly over subjects and sequences."""
    frames = {}
    for label in ("live", "print"):
        paths = sorted((shared_data / "liveness" / "nuaa" / label).glob("*/*.jpg"))
        if not paths:
            pytest.skip(f"no NUAA {label} frames in {shared_data / 'liveness' / 'nuaa'}")
        index = np.linspace(0, len(paths) - 1, FRAMES_PER_LABEL).round().astype(int)
        frames[label] = [paths[i] for i in index]
    return frames


@pytest.fixture(scope="module")
def nuaa_faces(engine: Engine, nuaa_frames) -> dict[str, list[tuple[np.ndarray, Faces]]]:
    """Each frame with the largest face the shipped MTCNN finds in it."""
    from converter.liveness import largest_face

    found: dict[str, list[tuple[np.ndarray, Faces]]] = {}
    for label, paths in nuaa_frames.items():
        found[label] = []
        for path in paths:
            frame = read_image(path)
            face = largest_face(engine.detect(frame))
            if face is not None:
                found[label].append((frame, face))
        assert len(found[label]) >= 0.9 * len(paths), label
    return found


def _upstream_module(minifasnet_dir: Path):
    """Upstream's MiniFASNet.py, imported from the shared reference folder (not vendored)."""
    spec = importlib.util.spec_from_file_location(
        "upstream_minifasnet", minifasnet_dir / "reference" / "MiniFASNet.py"
    )
    assert spec is not None and spec.loader is not None, minifasnet_dir
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@needs_torch
@pytest.mark.parametrize("file", sorted(UPSTREAM))
def test_port_matches_upstream_pytorch_on_nuaa_patches(
    minifasnet_dir: Path, nuaa_faces, file: str
) -> None:
    import torch

    from converter.minifasnet_torch import (
        build_minifasnet,
        load_state_dict,
        parse_file_name,
    )

    source = parse_file_name(minifasnet_dir / file)
    assert source.crop_scale == UPSTREAM[file][0]
    state = load_state_dict(source)
    reference = getattr(_upstream_module(minifasnet_dir), source.variant)(conv6_kernel=(5, 5))
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    reference.eval()
    patch = PatchSpec(source.crop_scale, 80, 80)
    patches = np.concatenate(
        [
            cut_patches(frame, face, patch)
            for label in nuaa_faces
            for frame, face in nuaa_faces[label]
        ]
    )
    with torch.no_grad():
        logits = reference(torch.from_numpy(patches.astype(np.float32)).permute(0, 3, 1, 2))
        expected = torch.softmax(logits, dim=1)[:, 1].numpy()
    model = build_minifasnet(state, source.variant)
    ours = np.concatenate(
        [model(patches[i : i + 1].astype(np.float32)).numpy() for i in range(len(patches))]
    )
    assert np.abs(real_probability(ours) - expected).max() < 1e-4
    folded = (logits[:, [0, 2]] - logits[:, [1]]).numpy()
    assert np.abs(ours - folded).max() < 1e-3
    assert expected.min() < 0.1 and expected.max() > 0.9  # real patches, both verdicts seen


@pytest.mark.slow
@needs_torch
def test_a_checkpoint_of_the_wrong_variant_is_refused(minifasnet_dir: Path, tmp_path: Path) -> None:
    from converter.minifasnet_torch import load_state_dict, parse_file_name

    wrong = tmp_path / "2.7_80x80_MiniFASNetV1SE.pth"  # V2 weights under the SE variant's name
    shutil.copy(minifasnet_dir / "2.7_80x80_MiniFASNetV2.pth", wrong)
    with pytest.raises(SourceError, match="not a MiniFASNetV1SE state dict"):
        load_state_dict(parse_file_name(wrong))
    with pytest.raises(SourceError, match="not named like"):
        parse_file_name(tmp_path / "weights.pth")


@pytest.mark.slow
def test_scorer_separates_live_faces_from_printed_photos(
    engine: Engine, liveness_manifest, nuaa_faces
) -> None:
    scores = {
        label: np.array([engine.liveness(frame, face)[0] for frame, face in pairs])
        for label, pairs in nuaa_faces.items()
    }
    live, printed = scores["live"], scores["print"]
    # ranking: a live frame outscores a print frame in nearly every pairing (AUC)
    auc = (live[:, None] > printed[None, :]).mean()
    assert auc > 0.98, auc
    assert np.mean(printed > 0.5) <= 0.03  # printed photos judged live at 0.5
    assert np.mean(live > 0.5) >= 0.85  # live faces judged live at 0.5


@pytest.mark.slow
@needs_torch
def test_build_only_liveness_keeps_every_other_model_file(
    models_dir: Path, minifasnet_dir: Path, shared_data: Path, tmp_path: Path, restore_logging
) -> None:
    pytest.importorskip("tensorflow", reason="edge-convert needs the converter extra")
    from converter.cli import main

    out = tmp_path / "models" / "tflite"
    out.mkdir(parents=True)
    before = load_manifest(models_dir)
    others = [s for s in before.models.values() if s.role != LIVENESS_ROLE]
    for spec in others:
        shutil.copy(models_dir / spec.file, out / spec.file)
    data = json.loads((models_dir / MANIFEST_NAME).read_text())
    data["models"] = {k: v for k, v in data["models"].items() if v["role"] != LIVENESS_ROLE}
    del data["liveness"]  # as a build without --liveness writes it
    mean = data["preprocessing"]["facenet_mean"]["file"]  # the centring mean goes with FaceNet
    shutil.copy(models_dir / mean, out / mean)
    if "cohort" in data["recognition"]:  # and the score normalisation cohort
        cohort = data["recognition"]["cohort"]["file"]
        shutil.copy(models_dir / cohort, out / cohort)
    shutil.copytree(models_dir / "float", out / "float")  # the float cascade twins
    (out / MANIFEST_NAME).write_text(json.dumps(data))
    argv = ["build", "--only", "liveness", "--liveness", str(minifasnet_dir), "--out", str(out)]
    argv += ["--liveness-calib", str(shared_data / "liveness" / "nuaa"), "--liveness-frames", "30"]
    assert main(argv) == 0
    after = load_manifest(out)
    assert sorted(n for n, _ in after.by_role(LIVENESS_ROLE)) == [
        "minifasnet_v1se",
        "minifasnet_v2",
    ]
    for spec in others:
        assert (
            sha256_file(out / spec.file)
            == spec.sha256
            == after.models[next(n for n, s in before.models.items() if s.file == spec.file)].sha256
        )
    assert after.calibration["liveness"]["sample"] == 30
    float_dir = out.parent / "float"
    assert sorted(p.name for p in float_dir.iterdir()) == [
        "minifasnet_v1se.tflite",
        "minifasnet_v2.tflite",
    ]
    engine = Engine.open(out, backend="cpu")
    assert engine.has_liveness


# ------------------------------------------------- what the build refuses (an outside audit)


def _models_with(models_dir: Path, folder: Path, change) -> Engine:
    """The committed models, copied, with `change(manifest dict)` applied."""
    shutil.copytree(models_dir, folder, ignore=shutil.ignore_patterns("float"))
    data = json.loads((folder / MANIFEST_NAME).read_text())
    change(data)
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    return Engine.open(folder, backend="cpu")


def _swap_crop_scales(data: dict) -> None:
    """Two files named with each other's crop scale: what their names say is all the build
    knows of it."""
    v2, v1se = data["models"]["minifasnet_v2"], data["models"]["minifasnet_v1se"]
    v2["patch"]["scale"], v1se["patch"]["scale"] = v1se["patch"]["scale"], v2["patch"]["scale"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "refused"),
    [
        (lambda data: None, None),
        (_swap_crop_scales, "printed photos judged live"),
        (lambda data: data["liveness"].update(threshold=0.0001), "printed photos judged live"),
        (lambda data: data["liveness"].update(threshold=0.99), "live faces refused"),
    ],
    ids=["as shipped", "crop scales swapped", "threshold near 0", "threshold near 1"],
)
def test_the_build_checks_its_liveness_threshold_on_live_and_printed_frames(
    models_dir: Path, shared_data: Path, tmp_path: Path, change, refused: str | None
) -> None:
    """Zeroed weights built with rc 0 and the threshold stamped on them, 0.333 for every
    face: every print was live at the door. Two files with each other's crop scale in their
    names built too (3 of 149 prints live). The build now scores its int8 models on NUAA's
    live and print frames, as the door does, against the threshold's targets."""
    from converter.liveness import (
        calibration_images,
        check_threshold,
        labelled_frames,
    )

    nuaa = shared_data / "liveness" / "nuaa"
    frames = labelled_frames(nuaa, calibration_images(nuaa))
    engine = _models_with(models_dir, tmp_path / "models", change)
    if refused is None:
        measured = check_threshold(engine, frames)
        assert measured.prints_judged_live == 0 and measured.print_frames >= 100
        assert measured.live_refused <= 0.05 * measured.live_frames
    else:
        with pytest.raises(UserError, match=refused):
            check_threshold(engine, frames)


def test_calibration_photos_without_live_and_print_frames_are_refused_up_front(
    tmp_path: Path,
) -> None:
    from converter.calibration import CalibrationError
    from converter.liveness import labelled_frames

    folder = tmp_path / "calib"
    (folder / "live").mkdir(parents=True)
    paths = [folder / "live" / f"{i}.jpg" for i in range(30)]
    with pytest.raises(CalibrationError, match=r"fewer than 20 photos in print/"):
        labelled_frames(folder, paths)


def test_one_liveness_model_of_two_is_refused_by_the_build_and_the_door(
    minifasnet_dir: Path, models_dir: Path, tmp_path: Path
) -> None:
    """With one of the two files the build went through, and the door scored with one model
    against the threshold derived for the mean of both."""
    from converter.liveness import liveness_source

    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(minifasnet_dir / "2.7_80x80_MiniFASNetV2.pth", folder)
    with pytest.raises(SourceError, match="give both files"):
        liveness_source(folder)

    def drop_v1se(data: dict) -> None:
        del data["models"]["minifasnet_v1se"]

    with pytest.raises(UserError, match="averages minifasnet_v1se, minifasnet_v2 but"):
        _models_with(models_dir, tmp_path / "models", drop_v1se)


@needs_torch
def test_weights_that_are_not_finite_are_refused_when_read(
    minifasnet_dir: Path, tmp_path: Path
) -> None:
    """NaN weights were refused only by the Edge TPU lint, a minute later, with 257
    violations that did not say NaN."""
    import torch

    from converter.minifasnet_torch import load_state_dict, parse_file_name

    name = "2.7_80x80_MiniFASNetV2.pth"
    state = torch.load(minifasnet_dir / name, map_location="cpu", weights_only=True)
    for key, value, message in (
        ("conv1.conv.weight", float("nan"), "not finite"),
        ("conv1.bn.running_var", -1.0, "variances below 0"),
    ):
        changed = dict(state)
        target = next(k for k in changed if k.endswith(key))
        changed[target] = changed[target].clone().fill_(value)
        path = tmp_path / name
        torch.save(changed, path)
        with pytest.raises(SourceError, match=message):
            load_state_dict(parse_file_name(path))


@needs_torch
def test_a_named_pipe_or_a_device_as_a_weight_file_is_refused_at_once(tmp_path: Path) -> None:
    """A FIFO named like a weight file hung the build (killed after 120 s)."""
    import os

    from converter.minifasnet_torch import load_state_dict, parse_file_name

    fifo = tmp_path / "2.7_80x80_MiniFASNetV2.pth"
    os.mkfifo(fifo)
    with pytest.raises(SourceError, match="is a named pipe, not a PyTorch checkpoint"):
        load_state_dict(parse_file_name(fifo))
    device = tmp_path / "4_0_0_80x80_MiniFASNetV1SE.pth"
    device.symlink_to("/dev/zero")
    with pytest.raises(SourceError, match="not a PyTorch checkpoint"):
        load_state_dict(parse_file_name(device))
