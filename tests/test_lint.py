"""The Edge TPU lint on tiny models built here with TensorFlow, one per violation kind.

Each bad model puts its offending op last, so the op's output is the model's output and the
test can name the tensor through an interpreter rather than through the lint's own reading.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pytest

from edge_app.errors import UserError

tf = pytest.importorskip("tensorflow")
Interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter
Tensor: TypeAlias = Any  # tf.Tensor: TensorFlow ships no type information

from converter.lint import (  # noqa: E402  (after the importorskip guards)
    KIND_BATCH,
    KIND_DTYPE,
    KIND_DYNAMIC_SHAPE,
    KIND_OP_LIMIT,
    KIND_OP_VERSION,
    KIND_QUANTISATION,
    KIND_UNSUPPORTED_OP,
    LintError,
    ModelFormatError,
    Violation,
    format_report,
    lint_model,
)

# TF's converter warns that int8 inputs have no stats; the representative data provides them.
pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")

RNG = np.random.default_rng(7)
IMAGE = [1, 8, 8, 3]


def _weights(*shape: int) -> Tensor:
    return tf.constant(RNG.normal(size=shape).astype(np.float32))


CONV = _weights(3, 3, 3, 4)
BIAS = _weights(4)
DENSE = _weights(36, 5)
TWO_WAY = _weights(3, 3, 3, 2)
GROUPED = _weights(3, 3, 2, 4)
POINTWISE = _weights(1, 1, 4, 4)
ALPHA_PER_CHANNEL = tf.constant(RNG.uniform(0.0, 0.3, (1, 1, 4)).astype(np.float32))
ALPHA_FULL_MAP = tf.constant(RNG.uniform(0.0, 0.3, (6, 6, 4)).astype(np.float32))


def _prelu(x: Tensor, alpha: Tensor) -> Tensor:
    """Keras' PReLU formula, which the TFLite converter fuses into one PRELU op."""
    return tf.nn.relu(x) + (-alpha) * tf.nn.relu(-x)


def classifier(x: Tensor) -> Tensor:
    """Conv (int32 bias), pool, reshape (int32 shape), dense, 1-D softmax: all TPU ops."""
    y = tf.nn.relu(tf.nn.conv2d(x, CONV, 1, "VALID") + BIAS)
    y = tf.nn.max_pool2d(y, 2, 2, "VALID")
    return tf.nn.softmax(tf.reshape(y, [1, 36]) @ DENSE)


def leaky(x: Tensor) -> Tensor:
    return tf.nn.leaky_relu(tf.nn.conv2d(x, CONV, 1, "VALID") + BIAS, alpha=0.1)


def softmax_map(x: Tensor) -> Tensor:
    """P-Net's face/background head: a 2-way softmax at every cell of the map."""
    return tf.nn.softmax(tf.nn.conv2d(x, TWO_WAY, 1, "VALID"), axis=-1)


def prelus(x: Tensor) -> Tensor:
    """A per-channel PReLU (fine), then one with an alpha for every pixel (not)."""
    y = _prelu(tf.nn.conv2d(x, CONV, 1, "VALID") + BIAS, ALPHA_PER_CHANNEL)
    return _prelu(tf.nn.conv2d(y, POINTWISE, 1, "VALID"), ALPHA_FULL_MAP)


def conv(x: Tensor) -> Tensor:
    return tf.nn.conv2d(x, CONV, 1, "VALID") + BIAS


def grouped(x: Tensor) -> Tensor:
    """A grouped convolution (2 groups): CONV_2D version 6, newer than compiler 16."""
    return tf.nn.conv2d(x, GROUPED, 1, "VALID")


def _convert(
    fn: Callable[[Tensor], Tensor], shape: Sequence[int | None], int8: bool = True
) -> bytes:
    concrete = tf.function(fn).get_concrete_function(tf.TensorSpec(shape, tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    if int8:
        sample = [1 if size is None else size for size in shape]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [RNG.uniform(-1.0, 1.0, sample).astype(np.float32)] for _ in range(8)
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


MODELS: dict[str, tuple[Callable[[Tensor], Tensor], Sequence[int | None], bool]] = {
    "clean": (classifier, IMAGE, True),
    "float": (classifier, IMAGE, False),
    "dynamic": (classifier, [None, 8, 8, 3], True),
    "leaky": (leaky, IMAGE, True),
    "softmax_map": (softmax_map, IMAGE, True),
    "prelu": (prelus, IMAGE, True),
    "grouped": (grouped, [1, 8, 8, 4], True),
    "batch2": (conv, [2, 8, 8, 3], True),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lint_models")
    paths = {}
    for name, (fn, shape, int8) in MODELS.items():
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(_convert(fn, shape, int8))
    return paths


def _io_name(path: Path, which: str) -> str:
    interpreter = Interpreter(model_path=str(path))
    details = (
        interpreter.get_input_details() if which == "input" else interpreter.get_output_details()
    )
    return details[0]["name"]


def test_clean_int8_model_has_no_violations(models: dict[str, Path]) -> None:
    assert lint_model(models["clean"]) == []


def test_float_model_flags_every_float_tensor(models: dict[str, Path]) -> None:
    violations = lint_model(models["float"])
    tensors = Interpreter(model_path=str(models["float"])).get_tensor_details()
    float_tensors = {t["name"] for t in tensors if t["dtype"] == np.float32}

    assert {v.kind for v in violations} == {KIND_DTYPE}
    assert len(violations) == len(float_tensors) > 0
    assert f"'{_io_name(models['float'], 'input')}'" in violations[0].subject
    assert all(v.message.startswith("float32 ") for v in violations)


def test_an_int8_tensor_without_a_scale_is_flagged_and_the_runtime_agrees(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """A converter audit: an int8 model whose input had lost its quantisation parameters
    passed the lint (dtype only), while the TFLite runtime refuses to prepare it."""
    import flatbuffers  # type: ignore[import-untyped]
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(models["clean"].read_bytes(), 0)
    graph = model.subgraphs[0]
    graph.tensors[graph.inputs[0]].quantization = None
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    stripped = tmp_path / "stripped.tflite"
    stripped.write_bytes(builder.Output())

    violations = lint_model(stripped)

    assert [v.kind for v in violations] == [KIND_QUANTISATION]
    assert f"'{_io_name(models['clean'], 'input')}'" in violations[0].subject
    assert violations[0].message.endswith("without a scale and zero point; not quantised")
    with pytest.raises(RuntimeError, match="kTfLiteAffineQuantization|failed to prepare"):
        Interpreter(model_path=str(stripped)).allocate_tensors()


def test_a_report_names_each_model_by_the_path_given(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """A converter audit: the lint named models by file name only, so float/pnet_0.tflite's
    violations read as the shipped int8 pnet_0.tflite's."""
    same_name = tmp_path / "float" / models["clean"].name
    same_name.parent.mkdir()
    same_name.write_bytes(models["float"].read_bytes())
    violations = lint_model(same_name)
    assert violations and all(str(v).startswith(f"{same_name}: ") for v in violations)
    assert lint_model(models["clean"]) == []


def test_dynamic_batch_is_flagged_on_the_input(models: dict[str, Path]) -> None:
    violations = lint_model(models["dynamic"])
    input_name = _io_name(models["dynamic"], "input")

    assert {v.kind for v in violations} == {KIND_DYNAMIC_SHAPE}
    flagged = [v for v in violations if v.subject.endswith(f"'{input_name}'")]
    assert len(flagged) == 1
    assert "[-1, 8, 8, 3]" in flagged[0].message


def test_leaky_relu_is_an_unsupported_op(models: dict[str, Path]) -> None:
    violations = lint_model(models["leaky"])
    output_name = _io_name(models["leaky"], "output")

    assert len(violations) == 1
    (violation,) = violations
    assert violation.kind == KIND_UNSUPPORTED_OP
    assert violation.subject.endswith(f"LEAKY_RELU (tensor '{output_name}')")
    assert "PReLU" in violation.message


def test_softmax_over_a_map_is_an_op_limit(models: dict[str, Path]) -> None:
    violations = lint_model(models["softmax_map"])
    output_name = _io_name(models["softmax_map"], "output")

    assert len(violations) == 1
    (violation,) = violations
    assert violation.kind == KIND_OP_LIMIT
    assert violation.subject.endswith(f"SOFTMAX (tensor '{output_name}')")
    assert "[1, 6, 6, 2]" in violation.message
    assert "1-D softmax" in violation.message


def test_only_the_full_map_prelu_is_flagged(models: dict[str, Path]) -> None:
    violations = lint_model(models["prelu"])
    output_name = _io_name(models["prelu"], "output")

    assert len(violations) == 1
    (violation,) = violations
    assert violation.kind == KIND_OP_LIMIT
    assert violation.subject.endswith(f"PRELU (tensor '{output_name}')")
    assert "one alpha per channel" in violation.message


def test_grouped_conv_is_newer_than_compiler_16(models: dict[str, Path]) -> None:
    violations = lint_model(models["grouped"])

    assert [(v.kind, v.message.split(";")[0]) for v in violations] == [
        (KIND_OP_VERSION, "version 6")
    ]
    assert "CONV_2D" in violations[0].subject
    assert "up to version 5" in violations[0].message


def test_batch_of_two_is_flagged_on_activations_only(models: dict[str, Path]) -> None:
    violations = lint_model(models["batch2"])
    names = {_io_name(models["batch2"], "input"), _io_name(models["batch2"], "output")}

    assert {v.kind for v in violations} == {KIND_BATCH}
    assert {v.subject.split("'")[1] for v in violations} == names
    assert all("only the 3 innermost dimensions" in v.message for v in violations)


@pytest.mark.parametrize("content", [b"", b"not a model at all", bytes(64)])
def test_non_tflite_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bogus.tflite"
    path.write_bytes(content)

    with pytest.raises(ModelFormatError, match="not a TFLite model") as caught:
        lint_model(path)
    assert isinstance(caught.value, ValueError)
    assert str(path) in str(caught.value)


def test_violation_reads_as_one_line() -> None:
    violation = Violation(
        "pnet.tflite",
        KIND_OP_LIMIT,
        "op #3 SOFTMAX (tensor 'Identity')",
        "softmax over a map of shape [1, 6, 6, 2]; the Edge TPU maps only 1-D softmax",
    )

    assert str(violation) == (
        "pnet.tflite: op #3 SOFTMAX (tensor 'Identity'): softmax over a map of shape "
        "[1, 6, 6, 2]; the Edge TPU maps only 1-D softmax"
    )


def test_report_lists_each_violation_and_counts_them(models: dict[str, Path]) -> None:
    violations = lint_model(models["leaky"]) + lint_model(models["softmax_map"])
    report = format_report(violations).splitlines()

    assert report[:2] == [str(v) for v in violations]
    assert report[-1] == "2 Edge TPU violations in 2 model(s)"
    assert format_report([]) == "no Edge TPU violations"


def test_unreadable_model_is_a_lint_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.tflite"

    with pytest.raises(LintError, match="cannot read a model file") as caught:
        lint_model(missing)
    assert isinstance(caught.value, UserError)
    assert str(missing) in str(caught.value)
