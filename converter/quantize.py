"""TFLite conversion: float reference models and full-integer models for the Edge TPU.

Full integer here means: uint8 input that *is* the pixel (scale 1/128, zero point 128 is
(x - 127.5) / 128), int8 everywhere inside, int8 outputs, and only builtin int8 kernels
(TFLITE_BUILTINS_INT8), so a float op fails the conversion instead of slipping through.
Liveness models take raw 0-255 pixels (standardise=False): their uint8 input quantisation
comes out as scale 1, zero point 0, the pixel itself, when calibration spans 0-255.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from edge_app.adapters import PIXEL_MEAN, PIXEL_SCALE
from edge_app.centering import EMBEDDING_DIM
from edge_app.errors import UserError

OUTPUT_ROLES = {
    1: "score",
    2: "spoof_logits",
    4: "box",
    10: "landmarks",
    EMBEDDING_DIM: "embedding",
}


class TensorRoleError(UserError):
    """A model the door cannot describe: the runtime cannot load it, or an output's width
    is none of OUTPUT_ROLES (a 128-d FaceNet, say). One line, never a traceback."""


def normalise(pixels: np.ndarray) -> np.ndarray:
    return ((pixels.astype(np.float32) - PIXEL_MEAN) * PIXEL_SCALE).astype(np.float32)


def _representative(samples: Callable[[], Iterable[np.ndarray]], standardise: bool = True):
    def generate():
        for pixels in samples():
            yield [normalise(pixels) if standardise else pixels.astype(np.float32)]

    return generate


def _finish(
    converter, samples: Callable[[], Iterable[np.ndarray]] | None, standardise: bool = True
) -> bytes:
    import tensorflow as tf

    if samples is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(samples, standardise)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.int8
    return converter.convert()


def convert_keras(
    model, samples: Callable[[], Iterable[np.ndarray]] | None = None, standardise: bool = True
) -> bytes:
    """Float TFLite when samples is None, else full int8 calibrated on `samples` (pixels,
    standardised first unless standardise=False)."""
    import tensorflow as tf

    return _finish(tf.lite.TFLiteConverter.from_keras_model(model), samples, standardise)


def convert_frozen_graph(
    graph: Path,
    input_name: str,
    output_name: str,
    shape: list[int],
    samples: Callable[[], Iterable[np.ndarray]] | None = None,
) -> bytes:
    import tensorflow as tf

    converter = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
        str(graph), [input_name], [output_name], input_shapes={input_name: shape}
    )
    return _finish(converter, samples)


def describe_tensors(path: Path) -> tuple[list[dict], list[dict]]:
    """Inputs and outputs as manifest entries, outputs tagged by role from their width;
    TensorRoleError for a model that does not load or has an output of no role."""
    from edge_app.runtime import find_runtime

    try:
        interpreter = find_runtime().interpreter_class(model_path=str(path))
    except (ValueError, RuntimeError) as error:
        raise TensorRoleError(f"{path}: the TFLite runtime cannot load it ({error})") from None

    def entry(detail: dict, role: str = "") -> dict:
        scale, zero_point = detail["quantization"]
        return {
            "name": detail["name"],
            "shape": [int(v) for v in detail["shape"]],
            "dtype": np.dtype(detail["dtype"]).name,
            "scale": float(scale),
            "zero_point": int(zero_point),
            "role": role,
        }

    inputs = [entry(d) for d in interpreter.get_input_details()]
    outputs = []
    for detail in interpreter.get_output_details():
        width = int(detail["shape"][-1]) if len(detail["shape"]) else 0  # 0-d: no role
        if width not in OUTPUT_ROLES:
            widths = ", ".join(f"{w} ({role})" for w, role in OUTPUT_ROLES.items())
            raise TensorRoleError(
                f"{path.name}: output {detail['name']} of width {width} has no role; the door "
                f"reads outputs of width {widths}, and its FaceNet is davidsandberg's "
                f"{EMBEDDING_DIM}-d Inception-ResNet-v1 (the 2018 models)"
            )
        outputs.append(entry(detail, OUTPUT_ROLES[width]))
    return inputs, outputs
