"""Small inference helpers in the spirit of pycoral's adapters: pixels in, float arrays out.

The detection and embedding models take the same logical input, (pixel - 127.5) / 128, in
RGB. Int8 models are built so their uint8 input quantisation (scale 1/128, zero point 128) *is*
that standardisation: raw pixels go in untouched. Float models get the arithmetic here.
Liveness models (a `patch` in their manifest entry) take raw 0-255 pixels instead; their int8
input (scale 1, zero point 0) is the pixel itself.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edge_app.manifest import ModelSpec, TensorSpec

PIXEL_MEAN = 127.5
PIXEL_SCALE = 1.0 / 128.0


def _is_pixel_quantisation(dtype: Any, scale: float, zero_point: int, raw: bool = False) -> bool:
    if raw:
        return dtype == np.uint8 and abs(scale - 1.0) < 1e-6 and zero_point == 0
    return dtype == np.uint8 and abs(scale - PIXEL_SCALE) < 2e-4 and zero_point in (127, 128)


def _describe(dtype: str, shape: list[int], scale: float, zero_point: int) -> str:
    return f"{dtype} {shape} (scale {scale:.6g}, zero point {zero_point})"


def tensor_mismatch(interpreter: Any, spec: ModelSpec) -> str | None:
    """How the model in `interpreter` differs from its manifest entry, or None when every
    input and output has the name, shape, dtype and quantisation the manifest gives.

    The sha256 says the file is the one the manifest names; this says the manifest's own
    description of it holds, so a model of another network, level or calibration is refused
    before it runs rather than read with the wrong shapes or scales.
    """
    sides: tuple[tuple[str, list[TensorSpec], list[dict[str, Any]]], ...] = (
        ("input", spec.inputs, interpreter.get_input_details()),
        ("output", spec.outputs, interpreter.get_output_details()),
    )
    for side, described, details in sides:
        actual = {detail["name"]: detail for detail in details}
        names = sorted(tensor.name for tensor in described)
        if sorted(actual) != names:
            return f"its {side}s are {sorted(actual)}, the manifest lists {names}"
        for tensor in described:
            detail = actual[tensor.name]
            shape = [int(v) for v in detail["shape"]]
            dtype = np.dtype(detail["dtype"]).name
            scale, zero_point = (float(v) for v in detail["quantization"])
            if (
                shape != tensor.shape
                or dtype != tensor.dtype
                or not math.isclose(scale, tensor.scale, rel_tol=1e-6, abs_tol=1e-12)
                or zero_point != tensor.zero_point
            ):
                found = _describe(dtype, shape, scale, int(zero_point))
                listed = _describe(tensor.dtype, tensor.shape, tensor.scale, tensor.zero_point)
                return f"{side} {tensor.name!r} is {found}, the manifest says {listed}"
    return None


class ModelRunner:
    """One interpreter with its input conversion and per-role dequantised outputs."""

    def __init__(self, interpreter: Any, spec: ModelSpec) -> None:
        self.interpreter = interpreter
        self.spec = spec
        self._standardise = spec.patch is None or spec.patch.pixels == "standardised"
        self._bind()

    def _bind(self) -> None:
        detail = self.interpreter.get_input_details()[0]
        self._input_index = detail["index"]
        self.input_shape = tuple(int(v) for v in detail["shape"])
        self._input_dtype = detail["dtype"]
        scale, zero_point = detail["quantization"]
        self._input_quant = (float(scale), int(zero_point))
        self._raw_pixels = _is_pixel_quantisation(
            self._input_dtype, scale, zero_point, raw=not self._standardise
        )
        roles = {t.name: t.role for t in self.spec.outputs}
        self._outputs = []
        for out in self.interpreter.get_output_details():
            role = roles.get(out["name"])
            if role is None:
                raise ValueError(f"{self.spec.file}: output {out['name']!r} is not in the manifest")
            scale, zero_point = out["quantization"]
            self._outputs.append((role, out["index"], float(scale), int(zero_point)))

    def resize(self, shape: tuple[int, ...]) -> None:
        """Reshape the input (CPU only: P-Net on a pyramid the models were not built for)."""
        if tuple(shape) != self.input_shape:
            self.interpreter.resize_tensor_input(self._input_index, list(shape), strict=False)
            self.interpreter.allocate_tensors()
            self._bind()

    def _convert(self, pixels: np.ndarray) -> np.ndarray:
        if self._raw_pixels:
            return pixels
        logical = pixels.astype(np.float32)  # the value the float model was trained on
        if self._standardise:
            logical = (logical - PIXEL_MEAN) * PIXEL_SCALE
        if self._input_dtype == np.float32:
            return logical
        scale, zero_point = self._input_quant
        info = np.iinfo(self._input_dtype)
        quantised = np.round(logical / scale) + zero_point
        return np.clip(quantised, info.min, info.max).astype(self._input_dtype)

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """pixels: uint8 shaped like the input (batch dim included), RGB unless the spec's patch
        says otherwise; outputs by role."""
        self.interpreter.set_tensor(self._input_index, self._convert(pixels))
        self.interpreter.invoke()
        results = {}
        for role, index, scale, zero_point in self._outputs:
            raw = self.interpreter.get_tensor(index)
            if scale:
                results[role] = (raw.astype(np.float32) - zero_point) * scale
            else:
                results[role] = raw.astype(np.float32, copy=True)
        return results
