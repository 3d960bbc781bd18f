"""Fast-path prototypes, measured here before anything changes in edge_app/.

Nothing in this module edits the project's files: each prototype patches a loaded engine (or
the cascade module's reference to the pyramid builder) inside one benchmark process, so the
harness can time it side by side with the unchanged pipeline on the same frames, and
`python -m benchmarks.fastpath --accuracy` can check the LFW figure does not drop.

Prototypes:
  - octave pyramid: every P-Net level was an INTER_AREA resize of the full 640x480 frame (OpenCV's
    generic area path, the frame read once per level). Halving first (OpenCV's fast exact 2x
    path) and resizing each level from a reduction at least twice its size gives
    near-identical pixels (mean absolute difference at most 1.6 grey levels) for about a
    quarter of the cost.
  - float cascade + int8 FaceNet: adopted (edge_app/cascade_choice.py, variant "auto");
    XNNPACK does not take int8 PRELU, so on an x86 CPU the int8 cascade is slower than the
    float one while FaceNet, which has no PRELU, is faster in int8.
  - a door-suited minimum face size: fewer, smaller pyramid levels.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import shutil
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks import outputs
from edge_app.detection.pyramid import level_shape
from edge_app.reports import check_output

log = logging.getLogger(__name__)


# Each level is resized from a 2x reduction at least HEADROOM times its own size, so every
# output pixel still averages several source pixels: pixel differences to build_levels stay
# at or below 1.6 grey levels on the smallest level (0 on the largest), where resizing from
# the nearest reduction (headroom 1) reached 4.9 and cost 0.3 points of LFW accuracy.
HEADROOM = 2.0


def octave_levels(
    frame: np.ndarray, scales: list[float], headroom: float = HEADROOM
) -> list[tuple[float, np.ndarray]]:
    """Pyramid levels resized from exact 2x reductions of the frame instead of the frame.

    Same contract as edge_app.detection.pyramid.build_levels (sizes by level_shape, INTER_AREA
    so no pixel is skipped); only the source image of each resize changes. OpenCV's INTER_AREA
    has a fast path for an exact 2x reduction; the generic path used for 0.3x of a 640x480
    frame reads the whole frame once per level. Halving stops at an odd side (15 -> 7 would
    stretch the image).
    """
    height, width = frame.shape[:2]
    octave_scale, octave = 1.0, frame
    levels = []
    for scale in sorted(scales, reverse=True):
        while (
            octave_scale / 2 >= scale * headroom
            and octave.shape[0] % 2 == 0
            and octave.shape[1] % 2 == 0
        ):
            octave = cv2.resize(
                octave,
                (octave.shape[1] // 2, octave.shape[0] // 2),
                interpolation=cv2.INTER_AREA,
            )
            octave_scale /= 2
        h, w = level_shape(width, height, scale)
        levels.append((scale, cv2.resize(octave, (w, h), interpolation=cv2.INTER_AREA)))
    order = {scale: i for i, scale in enumerate(scales)}
    return sorted(levels, key=lambda level: order[level[0]])


def use_octave_pyramid() -> None:
    """Make the cascade build its pyramid with octave_levels (this process only)."""
    from edge_app.detection import cascade

    cascade.build_levels = octave_levels


def open_variant(variant: str, int8_models: Path, float_models: Path, threads: int):
    """An Engine for one named variant: auto (as shipped on the CPU), int8, float-cascade,
    float (the full float reference, models/float), octave, minface60, minface80."""
    from edge_app.engine import Engine

    if variant in ("auto", "float-cascade"):
        cascade = "float" if variant == "float-cascade" else "auto"
        return Engine.open(int8_models, backend="cpu", threads=threads, cascade=cascade)
    if variant == "float":
        return Engine.open(float_models, backend="cpu", threads=threads)
    if variant == "octave":
        use_octave_pyramid()
        return Engine.open(int8_models, backend="cpu", threads=threads)
    if variant.startswith("minface"):
        return Engine.open(
            int8_models, backend="cpu", threads=threads, min_face=float(variant[len("minface") :])
        )
    if variant == "int8":
        return Engine.open(int8_models, backend="cpu", threads=threads, cascade="int8")
    raise ValueError(f"unknown variant {variant!r}")


def lfw_accuracy(variant: str, int8_models: Path, float_models: Path, data: Path) -> dict:
    """The engine issue's LFW figure for one variant: DevTest accuracy, DevTrain threshold."""
    from edge_app.evaluate import evaluate_lfw, lfw_job

    lfw = data / "lfw"
    job = lfw_job(lfw / "pairsDevTest.txt", lfw / "images", train_file=lfw / "pairsDevTrain.txt")
    engine = open_variant(variant, int8_models, float_models, threads=2)
    start = time.perf_counter()
    result = evaluate_lfw(engine, job)
    from benchmarks.run import provenance

    return {
        "variant": variant,
        "git_commit": provenance(int8_models)["git_commit"],
        "models": f"{int8_models}, {float_models}",
        "accuracy": result.accuracy,
        "accuracy_std": result.accuracy_std,
        "val_at_far_1e_3": result.val_at_far_1e_3,
        "no_face_images": result.no_face_images,
        "images": result.images,
        "seconds": time.perf_counter() - start,
    }


def batch_ready_copy(source: Path, target: Path) -> None:
    """A copy of an R-Net/O-Net .tflite whose flatten RESHAPE takes any batch (-1, not 1).

    The converter exports batch 1 (what the Edge TPU needs), and XNNPACK then refuses to
    resize the input to N crops. Patching the constant is enough to time batched invocations
    here; the real change belongs in the converter's CPU export.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(source))
    graph = model.subgraphs[0]
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) != 22:  # RESHAPE
            continue
        buffer = model.buffers[graph.tensors[op.inputs[1]].buffer]
        shape = np.frombuffer(bytes(buffer.data), np.int32).copy()
        shape[0] = -1
        buffer.data = np.frombuffer(shape.tobytes(), np.uint8)
        options = op.builtinOptions
        if options is not None and getattr(options, "newShape", None) is not None:
            options.newShape = np.array([-1, *list(options.newShape)[1:]])
    flatbuffer_utils.write_model(model, str(target))


def batching(int8_models: Path, float_models: Path, threads: int, repeats: int) -> dict:
    """ms per crop for R-Net and O-Net invoked one crop at a time vs N crops in one call."""
    import tempfile

    from ai_edge_litert.interpreter import Interpreter

    out: dict = {}
    folder = Path(tempfile.mkdtemp(prefix="edge-batch-"))
    atexit.register(shutil.rmtree, folder, True)
    shipped = int8_models / "float"  # the float twins the manifest's float_cascade lists
    for kind, models in (("int8", int8_models), ("float", shipped)):
        if not (models / "rnet.tflite").is_file():
            continue
        for name in ("rnet", "onet"):
            patched = folder / f"{kind}-{name}.tflite"
            batch_ready_copy(models / f"{name}.tflite", patched)
            for batch in (1, 8, 32, 128):
                interpreter = Interpreter(model_path=str(patched), num_threads=threads)
                detail = interpreter.get_input_details()[0]
                shape = [batch, *detail["shape"][1:]]
                interpreter.resize_tensor_input(detail["index"], shape, strict=False)
                interpreter.allocate_tensors()
                pixels = np.random.default_rng(0).integers(0, 256, shape).astype(detail["dtype"])
                times = []
                for step in range(repeats + 2):
                    start = time.perf_counter()
                    interpreter.set_tensor(detail["index"], pixels)
                    interpreter.invoke()
                    if step >= 2:
                        times.append((time.perf_counter() - start) / batch)
                key = f"{kind}_{name}"
                out.setdefault(key, {})[str(batch)] = 1000 * float(np.median(times))
    return out


@outputs.command
def main(argv: list[str] | None = None) -> None:
    """`--accuracy VARIANT`: one variant per process, since the pyramid patch is process-wide."""
    from benchmarks.run import default_paths

    paths = default_paths()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accuracy", help="LFW check of one variant: auto, int8, octave, ...")
    parser.add_argument("--batching", action="store_true", help="time batched R-Net/O-Net")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", type=Path, default=paths["models"])
    parser.add_argument("--float-models", type=Path, default=paths["float_models"])
    parser.add_argument("--data", type=Path, default=paths["data"])
    parser.add_argument("--out", type=Path, help="append the result as one JSON line here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cv2.setNumThreads(args.threads)
    if args.batching:
        print(json.dumps(batching(args.models, args.float_models, args.threads, 20)))
        return
    if not args.accuracy:
        parser.error("give --accuracy VARIANT or --batching")
    check_output(args.out, "--out")  # before the work, not with a traceback after
    result = lfw_accuracy(args.accuracy, args.models, args.float_models, args.data)
    line = json.dumps(result)
    print(line)
    if args.out:
        # appended, and the whole file written again: a stop leaves the lines it had
        before = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        outputs.write(args.out, before + line + "\n", "--out")


if __name__ == "__main__":
    raise SystemExit(main())
