"""Static Edge TPU check of a .tflite file: what edgetpu_compiler 16 would not map.

The compiler runs only on x86-64 Debian/Ubuntu (Coral's apt repository), so most machines,
CI included, cannot ask it. The first op it cannot map sends that op and everything after it
to the CPU, so one float tensor or one unsupported op near the input costs the whole
accelerator. This
lint reads the flatbuffer through the generated TFLite schema and names every tensor and op
that would do that, so the converter can be fixed before a model is committed.

The check is static: it takes the schema from ai-edge-litert (a dependency of the door
itself, and a plain Python module) rather than from TensorFlow, whose import costs seconds
and prints its C++ start-up banner; TensorFlow's copy of the same schema is the fallback.
The file is read bounded (edge_app.bounded_read: a regular file of at most MAX_MODEL_BYTES),
and a damaged flatbuffer, whatever error its garbage offsets raise, is a ModelFormatError.

Rules: "Model requirements" and "Supported operations" in
https://coral.ai/docs/edgetpu/models-intro/ (compiler 16); docs/CONVERTER.md lists them.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_app import engine
from edge_app.bounded_read import read_or_refuse
from edge_app.errors import UserError

try:
    from ai_edge_litert import schema_py_generated as schema
except ImportError:  # a converter machine with TensorFlow but not ai-edge-litert
    from tensorflow.lite.python import schema_py_generated as schema

log = logging.getLogger(__name__)

KIND_DTYPE = "dtype"
KIND_QUANTISATION = "quantisation"
KIND_DYNAMIC_SHAPE = "dynamic-shape"
KIND_BATCH = "batch"
KIND_PARAMETER = "non-constant-parameter"
KIND_UNSUPPORTED_OP = "unsupported-op"
KIND_OP_VERSION = "op-version"
KIND_OP_LIMIT = "op-limit"

# Which TensorFlow edgetpu_compiler 16 parses models with. The compiler is closed source, but
# it shipped with libedgetpu 16.0, whose source pins its TensorFlow:
#   google-coral/libedgetpu, commit 3164995622300286ef2bb14d7fdc2792dae045b7 (tag
#   release-grouper; debian/changelog "libedgetpu (16.0)", 2021-07-09), workspace.bzl:
#   "TF release 2.5.0", TENSORFLOW_COMMIT = a4dfb8d1a71385bd6d122e4f27f86dcebb96712d (v2.5.0).
COMPILER_TF_RELEASE = "2.5.0"

# Highest version of each supported op that TF 2.5.0 knows: for every op in Coral's
# supported-operations table, the highest version whose minimum runtime is <= 2.5.0 in
#   tensorflow/tensorflow, tensorflow/lite/tools/versioning/runtime_version.cc (tag v2.5.0;
#   FindMinimumRuntimeVersionForOp: {{op, version}, "minimum TF release"}).
# It agrees with the op versions compiler 16 is known to reject: CONV_2D v6 needs 2.9.0,
# QUANTIZE v3 2.7.0, and TRANSPOSE_CONV v4 and EXP v2 are newer still.
EDGETPU_MAX_OP_VERSION: dict[str, int] = {
    "ADD": 3,
    "AVERAGE_POOL_2D": 3,
    "CONCATENATION": 3,
    "CONV_2D": 5,
    "DEPTHWISE_CONV_2D": 6,
    "EXPAND_DIMS": 1,
    "FULLY_CONNECTED": 9,
    "L2_NORMALIZATION": 2,
    "LOGISTIC": 3,
    "MAXIMUM": 4,
    "MAX_POOL_2D": 3,
    "MEAN": 3,
    "MINIMUM": 4,
    "MUL": 4,
    "PACK": 3,
    "PAD": 3,
    "PRELU": 1,
    "QUANTIZE": 2,
    "REDUCE_MAX": 3,
    "REDUCE_MIN": 3,
    "RELU": 3,
    "RELU6": 3,
    "RELU_N1_TO_1": 1,
    "RESHAPE": 1,
    "RESIZE_BILINEAR": 4,
    "RESIZE_NEAREST_NEIGHBOR": 4,
    "RSQRT": 2,
    "SLICE": 5,
    "SOFTMAX": 3,
    "SPACE_TO_DEPTH": 2,
    "SPLIT": 4,
    "SQUARED_DIFFERENCE": 2,
    "SQUEEZE": 2,
    "STRIDED_SLICE": 5,
    "SUB": 5,
    "SUM": 2,
    "TANH": 3,
    "TRANSPOSE": 5,
    "TRANSPOSE_CONV": 3,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": 3,
}

# What to do instead, for unsupported ops a converter is likely to emit.
UNSUPPORTED_OP_HINTS: dict[str, str] = {
    "LEAKY_RELU": "use PReLU with one alpha per channel (Keras shared_axes=[1, 2])",
    "HARD_SWISH": "use ReLU6 or another supported activation",
    "DEQUANTIZE": "keep the model integer end to end (int8/uint8 inputs and outputs)",
}

# Operands that are parameters rather than activations: the compiler needs them constant.
PARAMETER_OPERANDS: dict[str, tuple[int, ...]] = {
    "CONV_2D": (1, 2),
    "DEPTHWISE_CONV_2D": (1, 2),
    "FULLY_CONNECTED": (1, 2),
    "TRANSPOSE_CONV": (0, 1, 3),
    "PRELU": (1,),
    "RESHAPE": (1,),
    "PAD": (1,),
    "RESIZE_BILINEAR": (1,),
    "RESIZE_NEAREST_NEIGHBOR": (1,),
    "STRIDED_SLICE": (1, 2, 3),
    "SLICE": (1, 2),
    "MEAN": (1,),
    "SUM": (1,),
    "REDUCE_MAX": (1,),
    "REDUCE_MIN": (1,),
    "SPLIT": (0,),
    "EXPAND_DIMS": (1,),
    "TRANSPOSE": (1,),
}

# Weights stay 8-bit like activations; every other parameter may be int32: biases (the TPU
# accumulates in 32 bits) and shape-like operands (shapes, paddings, sizes, bounds, axes).
WEIGHT_OPERANDS: dict[str, int] = {
    "CONV_2D": 1,
    "DEPTHWISE_CONV_2D": 1,
    "FULLY_CONNECTED": 1,
    "TRANSPOSE_CONV": 1,
    "PRELU": 1,
}
INT32_OPERANDS: dict[str, tuple[int, ...]] = {
    op: tuple(slot for slot in slots if slot != WEIGHT_OPERANDS.get(op))
    for op, slots in PARAMETER_OPERANDS.items()
}

# Ops that may not touch the batch dimension: op -> (data operand, axis operand).
BATCH_AXIS_OPERANDS: dict[str, tuple[int, int]] = {
    "MEAN": (0, 1),
    "SUM": (0, 1),
    "REDUCE_MAX": (0, 1),
    "REDUCE_MIN": (0, 1),
    "SPLIT": (1, 0),
}

SOFTMAX_MAX_ELEMENTS = 16_000
# The largest model the lint reads is the largest the door reads (edge_app.engine): a larger
# file would pass here and be refused at the door, and reading a device such as /dev/zero
# whole would fill the memory.
MAX_MODEL_BYTES = engine.MAX_MODEL_BYTES
# What garbage offsets in a damaged flatbuffer raise when read through the generated schema:
# an offset past the end (IndexError, struct.error, numpy's "buffer is smaller than requested
# size" ValueError) or a number out of its type's range (flatbuffers' "bad number" TypeError).
_CORRUPT = (IndexError, struct.error, ValueError, TypeError)
EIGHT_BIT = (schema.TensorType.INT8, schema.TensorType.UINT8)
COMPILED_CUSTOM_OP = "edgetpu-custom-op"

_OP_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items() if name.isupper()}
_TYPE_NAMES = {
    code: name.lower() for name, code in vars(schema.TensorType).items() if name.isupper()
}
_ACTIVATION_NAMES = {
    code: name for name, code in vars(schema.ActivationFunctionType).items() if name.isupper()
}
_NUMPY_TYPES = {
    schema.TensorType.INT8: np.int8,
    schema.TensorType.UINT8: np.uint8,
    schema.TensorType.INT32: np.int32,
    schema.TensorType.INT64: np.int64,
}


class LintError(UserError):
    """A model cannot be linted at all (unreadable, or not a TFLite model)."""


class ModelFormatError(LintError, ValueError):
    """The file is not a TFLite flatbuffer, so there is nothing to lint."""


@dataclass(frozen=True)
class Violation:
    """One thing that keeps a model, or the rest of it, off the Edge TPU."""

    model: str
    kind: str
    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.model}: {self.subject}: {self.message}"


@dataclass(frozen=True)
class _Graph:
    """One subgraph of a parsed model, with the lookups every check needs."""

    name: str
    buf: bytes
    model: schema.Model
    subgraph: schema.SubGraph
    prefix: str

    def tensor(self, index: int) -> schema.Tensor:
        return self.subgraph.Tensors(index)

    def shape(self, index: int) -> list[int]:
        tensor = self.tensor(index)
        return [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []

    def signature(self, index: int) -> list[int]:
        """The shape with -1 where a size is only known at run time; empty when all fixed."""
        tensor = self.tensor(index)
        return (
            [int(d) for d in tensor.ShapeSignatureAsNumpy()]
            if tensor.ShapeSignatureLength()
            else []
        )

    def is_constant(self, index: int) -> bool:
        buffer = self.model.Buffers(self.tensor(index).Buffer())
        return buffer is not None and (buffer.DataLength() > 0 or buffer.Offset() > 1)

    def constant(self, index: int) -> np.ndarray | None:
        """A constant's values in its own type, or None for activations and odd types."""
        tensor = self.tensor(index)
        dtype = _NUMPY_TYPES.get(tensor.Type())
        if dtype is None or not self.is_constant(index):
            return None
        buffer = self.model.Buffers(tensor.Buffer())
        if buffer.DataLength() > 0:
            raw = buffer.DataAsNumpy().tobytes()
        else:  # models over 2 GB keep buffers after the flatbuffer, addressed by offset
            raw = self.buf[buffer.Offset() : buffer.Offset() + buffer.Size()]
        return np.frombuffer(raw, dtype=dtype)

    def op_name(self, op: schema.Operator) -> str:
        code = self.model.OperatorCodes(op.OpcodeIndex())
        # Codes past 127 live in BuiltinCode, older models keep them in DeprecatedBuiltinCode
        # (TensorFlow's schema_util.get_builtin_code_from_operator_code).
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            return f"CUSTOM({(code.CustomCode() or b'').decode()})"
        return _OP_NAMES.get(builtin, f"BUILTIN_{builtin}")

    def op_version(self, op: schema.Operator) -> int:
        return self.model.OperatorCodes(op.OpcodeIndex()).Version()

    def inputs(self, op: schema.Operator) -> list[int]:
        return [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []

    def tensor_label(self, index: int) -> str:
        return f"{self.prefix}tensor #{index} '{_tensor_name(self.tensor(index))}'"

    def op_label(self, position: int, op: schema.Operator) -> str:
        label = f"{self.prefix}op #{position} {self.op_name(op)}"
        if op.OutputsLength():
            label += f" (tensor '{_tensor_name(self.tensor(op.Outputs(0)))}')"
        return label


def _tensor_name(tensor: schema.Tensor) -> str:
    return (tensor.Name() or b"").decode(errors="replace")


def _operand(graph: _Graph, op: schema.Operator, position: int) -> int | None:
    """Tensor index of an op input; None when the op has fewer inputs or it is optional."""
    inputs = graph.inputs(op)
    if position >= len(inputs) or inputs[position] < 0:
        return None
    return inputs[position]


def _options(op: schema.Operator, options_class: type) -> Any:
    """The op's options table read as `options_class`, or None when it has none."""
    table = op.BuiltinOptions()
    if table is None:
        return None
    options = options_class()
    options.Init(table.Bytes, table.Pos)
    return options


# ---- tensor checks -------------------------------------------------------------------------


def _int32_allowed(graph: _Graph) -> set[int]:
    """Constant tensors used only as biases or shape-like operands."""
    allowed: set[int] = set()
    elsewhere: set[int] = set()
    for position in range(graph.subgraph.OperatorsLength()):
        op = graph.subgraph.Operators(position)
        int32_positions = INT32_OPERANDS.get(graph.op_name(op), ())
        for slot, index in enumerate(graph.inputs(op)):
            if index >= 0:
                (allowed if slot in int32_positions else elsewhere).add(index)
    return {index for index in allowed - elsewhere if graph.is_constant(index)}


def _dtype_problem(graph: _Graph, index: int, int32_ok: set[int]) -> str | None:
    dtype = graph.tensor(index).Type()
    if dtype in EIGHT_BIT or (dtype == schema.TensorType.INT32 and index in int32_ok):
        return None
    return (
        f"{_TYPE_NAMES.get(dtype, str(dtype))} {graph.shape(index)}; the Edge TPU takes only "
        "int8/uint8 tensors (int32 only for biases and shape operands)"
    )


def _quantisation_problem(graph: _Graph, index: int) -> str | None:
    """An 8-bit tensor needs its scale and zero point: without them the TFLite runtime
    refuses the model when it prepares it (quantize.cc: "kTfLiteAffineQuantization"), and
    the compiler has nothing to map."""
    tensor = graph.tensor(index)
    if tensor.Type() not in EIGHT_BIT:
        return None
    quantisation = tensor.Quantization()
    if (
        quantisation is not None
        and quantisation.ScaleLength() > 0
        and quantisation.ZeroPointLength() > 0
    ):
        return None
    name = _TYPE_NAMES.get(tensor.Type(), str(tensor.Type()))
    return f"{name} {graph.shape(index)} without a scale and zero point; not quantised"


def _dynamic_shape_problem(graph: _Graph, index: int) -> str | None:
    signature = graph.signature(index)
    if -1 not in signature:
        return None
    return f"dynamic shape {signature}; the Edge TPU needs every size fixed at conversion"


def _batch_problem(graph: _Graph, index: int) -> str | None:
    """Activations only: weights such as a conv filter [out, h, w, in] are 4-D by nature."""
    shape = graph.shape(index)
    if len(shape) <= 3 or all(d <= 1 for d in shape[:-3]) or graph.is_constant(index):
        return None
    return f"shape {shape}; only the 3 innermost dimensions may exceed 1 (batch 1)"


def _lint_tensors(graph: _Graph) -> Iterator[Violation]:
    int32_ok = _int32_allowed(graph)
    for index in range(graph.subgraph.TensorsLength()):
        problems = (
            (KIND_DTYPE, _dtype_problem(graph, index, int32_ok)),
            (KIND_QUANTISATION, _quantisation_problem(graph, index)),
            (KIND_DYNAMIC_SHAPE, _dynamic_shape_problem(graph, index)),
            (KIND_BATCH, _batch_problem(graph, index)),
        )
        for kind, message in problems:
            if message:
                yield Violation(graph.name, kind, graph.tensor_label(index), message)


# ---- per-op limits (Coral's "Known limitations" column) -------------------------------------


def _softmax_limits(graph: _Graph, op: schema.Operator) -> Iterator[str]:
    shape = graph.shape(graph.inputs(op)[0])
    if sum(d > 1 for d in shape) > 1:
        yield f"softmax over a map of shape {shape}; the Edge TPU maps only 1-D softmax"
    elif int(np.prod(shape)) > SOFTMAX_MAX_ELEMENTS:
        yield f"softmax over {int(np.prod(shape))} values; the Edge TPU maps at most 16,000"


def _prelu_limits(graph: _Graph, op: schema.Operator) -> Iterator[str]:
    """Alpha must vary at most along the innermost (channel) axis; a single alpha is fine."""
    alpha = _operand(graph, op, 1)
    if alpha is None:
        return
    alpha_shape = graph.shape(alpha)
    channels = graph.shape(graph.inputs(op)[0])[-1:]
    if any(d > 1 for d in alpha_shape[:-1]):
        yield (
            f"alpha of shape {alpha_shape} varies over more than the channels; the Edge TPU "
            "needs one alpha per channel (Keras PReLU shared_axes=[1, 2])"
        )
    elif alpha_shape and alpha_shape[-1] not in (1, *channels):
        yield f"alpha of shape {alpha_shape} does not match the {channels} input channels"


def _fused_activation(op: schema.Operator, options_class: type) -> Iterator[str]:
    options = _options(op, options_class)
    activation = options.FusedActivationFunction() if options is not None else 0
    if activation != schema.ActivationFunctionType.NONE:
        name = _ACTIVATION_NAMES.get(activation, str(activation))
        yield f"fused {name} activation; the Edge TPU maps this op only without one"


def _pool_limits(graph: _Graph, op: schema.Operator) -> Iterator[str]:
    yield from _fused_activation(op, schema.Pool2DOptions)


def _concatenation_limits(graph: _Graph, op: schema.Operator) -> Iterator[str]:
    """A constant input is allowed only as zero padding: two inputs, the constant all zeros."""
    yield from _fused_activation(op, schema.ConcatenationOptions)
    inputs = graph.inputs(op)
    for index in (i for i in inputs if graph.is_constant(i)):
        if len(inputs) != 2 or not _all_zero(graph, index):
            yield (
                f"constant input {graph.tensor_label(index)}; the Edge TPU concatenates a "
                "constant only as all-zero padding to exactly one other input"
            )


def _all_zero(graph: _Graph, index: int) -> bool:
    values = graph.constant(index)
    quantization = graph.tensor(index).Quantization()
    zero_point = 0
    if quantization is not None and quantization.ZeroPointLength() > 0:
        zero_point = int(quantization.ZeroPoint(0))
    return values is not None and bool(np.all(values == zero_point))


def _fully_connected_limits(graph: _Graph, op: schema.Operator) -> Iterator[str]:
    shape = graph.shape(op.Outputs(0))
    if sum(d > 1 for d in shape) > 1:
        yield f"output of shape {shape}; the Edge TPU maps only a 1-D fully-connected output"
    options = _options(op, schema.FullyConnectedOptions)
    if options is not None and options.WeightsFormat() != (
        schema.FullyConnectedOptionsWeightsFormat.DEFAULT
    ):
        yield "shuffled weights format; the Edge TPU takes only the default format"


def _convolution_limits(graph: _Graph, op: schema.Operator) -> Iterator[str]:
    options_class = (
        schema.Conv2DOptions if graph.op_name(op) == "CONV_2D" else schema.DepthwiseConv2DOptions
    )
    options = _options(op, options_class)
    if options is not None and options.DilationHFactor() != options.DilationWFactor():
        yield (
            f"dilation {options.DilationHFactor()}x{options.DilationWFactor()}; the Edge TPU "
            "needs the same dilation in x and y"
        )


def _strided_slice_limits(graph: _Graph, op: schema.Operator) -> Iterator[str]:
    strides = _operand(graph, op, 3)
    values = graph.constant(strides) if strides is not None else None
    if values is None or np.any(values != 1):
        shown = "not constant" if values is None else values.tolist()
        yield f"strides {shown}; the Edge TPU maps only strides of 1"
    options = _options(op, schema.StridedSliceOptions)
    if options is not None and (options.EllipsisMask() or options.NewAxisMask()):
        yield "ellipsis or new-axis mask; the Edge TPU maps neither"


def _batch_axis_limits(graph: _Graph, op: schema.Operator) -> Iterator[str]:
    data, axis = BATCH_AXIS_OPERANDS[graph.op_name(op)]
    data_index, axis_index = _operand(graph, op, data), _operand(graph, op, axis)
    rank = len(graph.shape(data_index)) if data_index is not None else 0
    axes = graph.constant(axis_index) if axis_index is not None else None
    if rank == 4 and axes is not None and 0 in {int(a) % rank for a in axes}:
        yield "works along the batch dimension; the Edge TPU does not"


def _pad_limits(graph: _Graph, op: schema.Operator) -> Iterator[str]:
    paddings_index = _operand(graph, op, 1)
    paddings = graph.constant(paddings_index) if paddings_index is not None else None
    if paddings is not None and paddings.size == 8 and np.any(paddings[:2] != 0):
        yield "pads the batch dimension; the Edge TPU does not"


OP_LIMITS: dict[str, Callable[[_Graph, schema.Operator], Iterator[str]]] = {
    "SOFTMAX": _softmax_limits,
    "PRELU": _prelu_limits,
    "CONCATENATION": _concatenation_limits,
    "MAX_POOL_2D": _pool_limits,
    "AVERAGE_POOL_2D": _pool_limits,
    "FULLY_CONNECTED": _fully_connected_limits,
    "CONV_2D": _convolution_limits,
    "DEPTHWISE_CONV_2D": _convolution_limits,
    "STRIDED_SLICE": _strided_slice_limits,
    "PAD": _pad_limits,
    **{op: _batch_axis_limits for op in BATCH_AXIS_OPERANDS},
}


# ---- op checks -----------------------------------------------------------------------------


def _unsupported_message(name: str) -> str:
    if name == f"CUSTOM({COMPILED_CUSTOM_OP})":
        return "already compiled for the Edge TPU; lint the CPU model instead"
    message = "not an Edge TPU op (it and every op after it would run on the CPU)"
    hint = UNSUPPORTED_OP_HINTS.get(name)
    return f"{message}; {hint}" if hint else message


def _lint_op(graph: _Graph, position: int, op: schema.Operator) -> Iterator[Violation]:
    name = graph.op_name(op)
    label = graph.op_label(position, op)
    if name not in EDGETPU_MAX_OP_VERSION:
        yield Violation(graph.name, KIND_UNSUPPORTED_OP, label, _unsupported_message(name))
        return
    version, newest = graph.op_version(op), EDGETPU_MAX_OP_VERSION[name]
    if version > newest:
        yield Violation(
            graph.name,
            KIND_OP_VERSION,
            label,
            f"version {version}; edgetpu_compiler 16 (TF {COMPILER_TF_RELEASE}) reads "
            f"{name} up to version {newest}",
        )
    yield from _parameter_violations(graph, name, label, op)
    limits = OP_LIMITS.get(name)
    for message in limits(graph, op) if limits else ():
        yield Violation(graph.name, KIND_OP_LIMIT, label, message)


def _parameter_violations(
    graph: _Graph, name: str, label: str, op: schema.Operator
) -> Iterator[Violation]:
    for slot in PARAMETER_OPERANDS.get(name, ()):
        index = _operand(graph, op, slot)
        if index is not None and not graph.is_constant(index):
            yield Violation(
                graph.name,
                KIND_PARAMETER,
                label,
                f"input {slot} {graph.tensor_label(index)} is computed at run time; "
                "the Edge TPU needs parameters as constants",
            )


def _lint_graph(graph: _Graph) -> Iterator[Violation]:
    yield from _lint_tensors(graph)
    for position in range(graph.subgraph.OperatorsLength()):
        yield from _lint_op(graph, position, graph.subgraph.Operators(position))


# ---- entry points --------------------------------------------------------------------------


def _read(path: Path) -> bytes:
    """The model's bytes: a regular file of at most MAX_MODEL_BYTES (edge_app.bounded_read;
    a named pipe would block the lint for ever, /dev/zero would fill the memory)."""
    return read_or_refuse(path, MAX_MODEL_BYTES, LintError, what="a model file")


def _load(path: Path) -> tuple[bytes, schema.Model]:
    buf = _read(path)
    if len(buf) < 8 or not schema.Model.ModelBufferHasIdentifier(buf, 0):
        raise ModelFormatError(
            f"{path}: not a TFLite model (no 'TFL3' flatbuffer identifier at byte 4)"
        )
    return buf, schema.Model.GetRootAs(buf, 0)


def lint_model(path: Path, label: str | None = None) -> list[Violation]:
    """Every Edge TPU violation in one model, tensors first, then ops in execution order.
    label: how the violations name the model (default: the path as given)."""
    path = Path(path)
    buf, model = _load(path)
    violations: list[Violation] = []
    try:
        for number in range(model.SubgraphsLength()):
            prefix = f"subgraph {number} " if number else ""
            # The path as given: a float and an int8 model share a name (float/pnet_0.tflite).
            graph = _Graph(label or str(path), buf, model, model.Subgraphs(number), prefix)
            violations.extend(_lint_graph(graph))
    except _CORRUPT as error:
        raise ModelFormatError(f"{path}: corrupt TFLite flatbuffer ({error})") from None
    log.debug("linted %s: %d Edge TPU violations", path, len(violations))
    return violations


def format_report(violations: list[Violation]) -> str:
    """One line per violation and a count, as `edge-convert lint` prints it."""
    if not violations:
        return "no Edge TPU violations"
    models = len({violation.model for violation in violations})
    lines = [str(violation) for violation in violations]
    noun = "violation" if len(violations) == 1 else "violations"
    lines.append(f"{len(violations)} Edge TPU {noun} in {models} model(s)")
    return "\n".join(lines)
