"""P-Net layout: one model per pyramid level, or every level packed into one canvas?

Which one is decided by measurement. This script builds the packed-canvas alternative
(the jkjung-avt TensorRT MTCNN trick: all pyramid levels pasted into one fixed canvas with
gaps, one invocation) from the same weights and calibration kind as `edge-convert build`,
and compares it with the committed per-level int8 models on door-like frames:
invocations, CPU latency, canvas area (what a TPU would compute), and the share of the
per-level models' candidate windows the canvas keeps. Run: .venv/bin/python
benchmarks/pnet_layout.py (needs the converter extra and ../shared/data).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import outputs  # noqa: E402
from converter.calibration import calibration_paths, door_frames  # noqa: E402
from converter.mtcnn_models import build_pnet  # noqa: E402
from converter.quantize import convert_keras  # noqa: E402
from edge_app.adapters import ModelRunner  # noqa: E402
from edge_app.detection.pyramid import PNET_CELL, PNET_STRIDE, build_levels  # noqa: E402
from edge_app.manifest import ModelSpec, TensorSpec, load_manifest  # noqa: E402
from edge_app.paths import REPO_MODELS, SHARED_DATA  # noqa: E402
from edge_app.reports import check_output  # noqa: E402
from edge_app.runtime import make_interpreter, select_backend  # noqa: E402

GAP = PNET_CELL  # a window never straddles two levels' content
REPEATS = 50


def shelf_layout(shapes: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """Top-left corners for each (h, w) level, packed in shelves; canvas (h, w).

    The canvas is as wide as the two largest levels side by side; levels fill shelves left
    to right, largest first, each shelf as tall as its first level.
    """

    def even(v: int) -> int:  # P-Net's stride is 2: keep every level on the output grid
        return v + v % 2

    width = even(shapes[0][1] + GAP) + shapes[1][1]
    corners, x, y, shelf = [], 0, 0, 0
    for h, w in shapes:
        if x + w > width:
            x, y, shelf = 0, even(y + shelf + GAP), 0
        corners.append((y, x))
        x = even(x + w + GAP)
        shelf = max(shelf, h)
    return corners, (y + shelf, width)


def paste(levels, corners, canvas_shape) -> np.ndarray:
    canvas = np.zeros((*canvas_shape, 3), np.uint8)
    for (_, image), (y, x) in zip(levels, corners, strict=True):
        canvas[y : y + image.shape[0], x : x + image.shape[1]] = image
    return canvas


def cells_inside(score_map: np.ndarray, corner, level_map: np.ndarray) -> np.ndarray:
    """The canvas cells that correspond to one level's own score map."""
    y, x = corner[0] // PNET_STRIDE, corner[1] // PNET_STRIDE
    return score_map[y : y + level_map.shape[0], x : x + level_map.shape[1]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc.splitlines()[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "pnet_layout.json",
        help="the results as JSON (default: %(default)s)",
    )
    return parser.parse_args(argv)


@outputs.command
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)  # before any work: --help only helps
    check_output(args.out, "--out")  # before the work, not with a traceback after
    manifest = load_manifest(REPO_MODELS)
    backend = select_backend("cpu", threads=2)
    per_level = [
        ModelRunner(make_interpreter((REPO_MODELS / s.file).read_bytes(), backend), s)
        for _, s in manifest.by_role("pnet")
    ]
    scales = [float(v) for v in manifest.pyramid["scales"]]
    shapes = [tuple(s) for s in manifest.pyramid["shapes"]]
    corners, canvas_shape = shelf_layout(shapes)
    paths = calibration_paths(SHARED_DATA / "lfw")
    rng = np.random.default_rng(0)
    rng.shuffle(paths)
    camera = (manifest.camera[0], manifest.camera[1])
    calib = door_frames(paths[:400], camera, 120, seed=1)
    test = door_frames(paths[400:800], camera, 60, seed=2)

    canvases = [paste(build_levels(f, scales), corners, canvas_shape)[None] for f in calib]
    data = convert_keras(build_pnet(*canvas_shape), lambda: canvases)
    canvas_file = ROOT / "benchmarks" / ".pnet_canvas.tflite"
    canvas_file.write_bytes(data)
    from converter.quantize import describe_tensors

    inputs, tensors_out = describe_tensors(canvas_file)
    spec = ModelSpec(
        "pnet",
        canvas_file.name,
        "",
        [TensorSpec(**t) for t in inputs],
        [TensorSpec(**t) for t in tensors_out],
    )
    canvas_runner = ModelRunner(make_interpreter(canvas_file.read_bytes(), backend), spec)
    canvas_file.unlink()

    cut = np.log(manifest.thresholds["pnet"] / (1 - manifest.thresholds["pnet"]))
    kept = total = 0
    t_levels, t_canvas = [], []
    for frame in test:
        levels = build_levels(frame, scales)
        start = time.perf_counter()
        maps = [
            r.run(img[None])["score"][0, :, :, 0]
            for r, (_, img) in zip(per_level, levels, strict=True)
        ]
        t_levels.append(time.perf_counter() - start)
        canvas = paste(levels, corners, canvas_shape)[None]
        start = time.perf_counter()
        canvas_map = canvas_runner.run(canvas)["score"][0, :, :, 0]
        t_canvas.append(time.perf_counter() - start)
        for m, corner in zip(maps, corners, strict=True):
            inside = cells_inside(canvas_map, corner, m)
            positive = m > cut
            total += int(positive.sum())
            kept += int((inside[positive] > cut).sum())
    frame = test[0]
    levels = build_levels(frame, scales)
    canvas = paste(levels, corners, canvas_shape)[None]
    for _ in range(5):
        canvas_runner.run(canvas)
    reps_levels, reps_canvas = [], []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for r, (_, img) in zip(per_level, levels, strict=True):
            r.run(img[None])
        reps_levels.append(time.perf_counter() - start)
        start = time.perf_counter()
        canvas_runner.run(canvas)
        reps_canvas.append(time.perf_counter() - start)
    area_levels = sum(h * w for h, w in shapes)
    result = {
        "camera": manifest.camera,
        "min_face": manifest.min_face,
        "levels": len(shapes),
        "canvas": list(canvas_shape),
        "pixels_per_level_models": area_levels,
        "pixels_canvas": canvas_shape[0] * canvas_shape[1],
        "cpu_ms_per_level_models_median": 1000 * float(np.median(reps_levels)),
        "cpu_ms_canvas_median": 1000 * float(np.median(reps_canvas)),
        "invocations_per_level_models": len(shapes),
        "invocations_canvas": 1,
        "per_level_positives": total,
        "canvas_keeps_share": kept / total if total else 1.0,
        "threads": 2,
    }
    outputs.write_json(args.out, result, "--out")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
