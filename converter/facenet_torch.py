"""facenet-pytorch's Inception-ResNet-v1 as a static-shape Keras model, from its state dict.

facenet-pytorch ships davidsandberg's VGGFace2 weights (20180402-114759), the stronger of the
two public FaceNets, only as a PyTorch checkpoint. This module rebuilds its InceptionResnetV1
(facenet_pytorch/models/inception_resnet_v1.py, 2.6.0) layer for layer so that checkpoint
converts like the frozen graph does, with the same output: the 512-d embedding *before* L2
normalisation (the host normalises; in int8 a normalised vector keeps ~1/128 resolution).

Every BatchNorm is folded into the conv or dense layer before it, and each block's residual
scale into its 1x1 up-projection, so the graph holds only CONV_2D, ADD (ReLU fused),
CONCATENATION, MAX_POOL_2D, AVERAGE_POOL_2D and FULLY_CONNECTED: the frozen graph's ops (less
its one RESHAPE), all of which the Edge TPU maps. The architecture is written once, against a
small interface with two implementations: one lists the state-dict names and shapes it needs
(checked without TensorFlow, right after loading), the other builds the Keras layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from converter.mtcnn_models import SourceError
from converter.torch_keras import KerasFromState
from converter.torch_weights import (
    BN_PARAMS,
    float32_arrays,
    import_torch,
    load_checkpoint,
    shape_problems,
)
from edge_app.align import FACENET_SIZE
from edge_app.centering import EMBEDDING_DIM

if TYPE_CHECKING:
    import keras

BN_EPS = 1e-3  # facenet-pytorch's BasicConv2d and last_bn: eps=0.001, the TensorFlow value
# Present in facenet-pytorch checkpoints but not used for embeddings (besides BatchNorm's update
# counter): the training-identity classifier that the released VGGFace2 and CASIA checkpoints
# (e.g. 20180402-114759-vggface2.pt) carry.
_UNUSED_KEYS = ("logits.weight", "logits.bias")
# Checkpoints saved by training scripts often nest the state dict under one of these keys.
_WRAPPERS = ("state_dict", "model_state_dict", "model")


def _pair(kernel: int | tuple[int, int]) -> tuple[int, int]:
    return (kernel, kernel) if isinstance(kernel, int) else kernel


class _Shapes:
    """The architecture walked on channel counts: every state-dict name and its shape."""

    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}

    def basic(
        self,
        x: int,
        name: str,
        filters: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        padding: str = "valid",
    ) -> int:
        self.shapes[f"{name}.conv.weight"] = (filters, x, *_pair(kernel))
        self.shapes.update({f"{name}.bn.{p}": (filters,) for p in BN_PARAMS})
        return filters

    def max_pool(self, x: int, name: str) -> int:
        return x

    def concat(self, xs: list[int], name: str) -> int:
        return sum(xs)

    def residual(self, x: int, mixed: int, name: str, scale: float, relu: bool) -> int:
        self.shapes[f"{name}.conv2d.weight"] = (x, mixed, 1, 1)
        self.shapes[f"{name}.conv2d.bias"] = (x,)
        return x

    def embedding(self, x: int) -> int:
        self.shapes["last_linear.weight"] = (EMBEDDING_DIM, x)
        self.shapes.update({f"last_bn.{p}": (EMBEDDING_DIM,) for p in BN_PARAMS})
        return EMBEDDING_DIM


class _Keras(KerasFromState):
    """The architecture as Keras layers, with BatchNorm and residual scales folded in."""

    bn_eps = BN_EPS

    def _conv(self, x: Any, name: str, kernel: np.ndarray, bias: np.ndarray, **options: Any) -> Any:
        """Conv2D with the given weights; PyTorch's (out, in, kh, kw) becomes (kh, kw, in, out)."""
        kernel = kernel.transpose(2, 3, 1, 0)
        layer = self.layers.Conv2D(kernel.shape[-1], kernel.shape[:2], name=name, **options)
        y = layer(x)
        layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
        return y

    def basic(
        self,
        x: Any,
        name: str,
        filters: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        padding: str = "valid",
    ) -> Any:
        # PyTorch's symmetric padding of (k-1)/2 at stride 1 is exactly Keras's "same".
        multiplier, bias = self._bn_fold(f"{name}.bn")
        weight = self.state[f"{name}.conv.weight"].astype(np.float64)
        return self._conv(
            x,
            name,
            weight * multiplier[:, None, None, None],
            bias,
            strides=stride,
            padding=padding,
            activation="relu",
        )

    def max_pool(self, x: Any, name: str) -> Any:
        return self.layers.MaxPooling2D(3, 2, padding="valid", name=name)(x)

    def concat(self, xs: list[Any], name: str) -> Any:
        return self.layers.Concatenate(axis=-1, name=name)(xs)

    def residual(self, x: Any, mixed: Any, name: str, scale: float, relu: bool) -> Any:
        # out = conv2d(mixed) * scale + x: the scale is linear, so it goes into the weights.
        weight = self.state[f"{name}.conv2d.weight"].astype(np.float64) * scale
        bias = self.state[f"{name}.conv2d.bias"].astype(np.float64) * scale
        up = self._conv(mixed, f"{name}.conv2d", weight, bias)
        out = self.layers.Add(name=f"{name}.add")([up, x])
        return self.layers.ReLU(name=f"{name}.relu")(out) if relu else out

    def embedding(self, x: Any) -> Any:
        # AdaptiveAvgPool2d(1) on the 3x3 map, dropout (identity in eval), last_linear, last_bn.
        x = self.layers.AveragePooling2D(x.shape[1:3], name="avgpool_1a")(x)
        x = self.layers.Flatten(name="flatten")(x)
        multiplier, bias = self._bn_fold("last_bn")
        kernel = self.state["last_linear.weight"].astype(np.float64).T * multiplier
        layer = self.layers.Dense(EMBEDDING_DIM, name="last_linear")
        y = layer(x)
        layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
        return y


_Net = _Shapes | _Keras


def _block35(net: _Net, x: Any, name: str, scale: float) -> Any:
    b0 = net.basic(x, f"{name}.branch0", 32, 1)
    b1 = net.basic(x, f"{name}.branch1.0", 32, 1)
    b1 = net.basic(b1, f"{name}.branch1.1", 32, 3, padding="same")
    b2 = net.basic(x, f"{name}.branch2.0", 32, 1)
    b2 = net.basic(b2, f"{name}.branch2.1", 32, 3, padding="same")
    b2 = net.basic(b2, f"{name}.branch2.2", 32, 3, padding="same")
    mixed = net.concat([b0, b1, b2], f"{name}.cat")
    return net.residual(x, mixed, name, scale, relu=True)


def _block17(net: _Net, x: Any, name: str, scale: float) -> Any:
    b0 = net.basic(x, f"{name}.branch0", 128, 1)
    b1 = net.basic(x, f"{name}.branch1.0", 128, 1)
    b1 = net.basic(b1, f"{name}.branch1.1", 128, (1, 7), padding="same")
    b1 = net.basic(b1, f"{name}.branch1.2", 128, (7, 1), padding="same")
    mixed = net.concat([b0, b1], f"{name}.cat")
    return net.residual(x, mixed, name, scale, relu=True)


def _block8(net: _Net, x: Any, name: str, scale: float, relu: bool) -> Any:
    b0 = net.basic(x, f"{name}.branch0", 192, 1)
    b1 = net.basic(x, f"{name}.branch1.0", 192, 1)
    b1 = net.basic(b1, f"{name}.branch1.1", 192, (1, 3), padding="same")
    b1 = net.basic(b1, f"{name}.branch1.2", 192, (3, 1), padding="same")
    mixed = net.concat([b0, b1], f"{name}.cat")
    return net.residual(x, mixed, name, scale, relu=relu)


def _mixed_6a(net: _Net, x: Any) -> Any:
    b0 = net.basic(x, "mixed_6a.branch0", 384, 3, 2)
    b1 = net.basic(x, "mixed_6a.branch1.0", 192, 1)
    b1 = net.basic(b1, "mixed_6a.branch1.1", 192, 3, padding="same")
    b1 = net.basic(b1, "mixed_6a.branch1.2", 256, 3, 2)
    b2 = net.max_pool(x, "mixed_6a.branch2")
    return net.concat([b0, b1, b2], "mixed_6a.cat")


def _mixed_7a(net: _Net, x: Any) -> Any:
    b0 = net.basic(x, "mixed_7a.branch0.0", 256, 1)
    b0 = net.basic(b0, "mixed_7a.branch0.1", 384, 3, 2)
    b1 = net.basic(x, "mixed_7a.branch1.0", 256, 1)
    b1 = net.basic(b1, "mixed_7a.branch1.1", 256, 3, 2)
    b2 = net.basic(x, "mixed_7a.branch2.0", 256, 1)
    b2 = net.basic(b2, "mixed_7a.branch2.1", 256, 3, padding="same")
    b2 = net.basic(b2, "mixed_7a.branch2.2", 256, 3, 2)
    b3 = net.max_pool(x, "mixed_7a.branch3")
    return net.concat([b0, b1, b2, b3], "mixed_7a.cat")


def _inception_resnet_v1(net: _Net, x: Any) -> Any:
    """InceptionResnetV1.forward up to last_bn, in facenet-pytorch's order and names."""
    x = net.basic(x, "conv2d_1a", 32, 3, 2)
    x = net.basic(x, "conv2d_2a", 32, 3)
    x = net.basic(x, "conv2d_2b", 64, 3, padding="same")
    x = net.max_pool(x, "maxpool_3a")
    x = net.basic(x, "conv2d_3b", 80, 1)
    x = net.basic(x, "conv2d_4a", 192, 3)
    x = net.basic(x, "conv2d_4b", 256, 3, 2)
    for index in range(5):
        x = _block35(net, x, f"repeat_1.{index}", 0.17)
    x = _mixed_6a(net, x)
    for index in range(10):
        x = _block17(net, x, f"repeat_2.{index}", 0.10)
    x = _mixed_7a(net, x)
    for index in range(5):
        x = _block8(net, x, f"repeat_3.{index}", 0.20, relu=True)
    x = _block8(net, x, "block8", 1.0, relu=False)
    return net.embedding(x)


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every state-dict entry the embedding needs, with its PyTorch shape."""
    shapes = _Shapes()
    _inception_resnet_v1(shapes, 3)
    return shapes.shapes


def check_state_dict(state: Mapping[str, np.ndarray]) -> None:
    """Refuse a state dict that is not facenet-pytorch's InceptionResnetV1, naming why."""
    problems = shape_problems(state, expected_shapes())
    if problems:
        raise SourceError(
            "not a facenet-pytorch InceptionResnetV1 state dict; " + "; ".join(problems)
        )


def _unwrap(loaded: object) -> Mapping[str, Any]:
    """The state dict itself, also when a training checkpoint nests it one level down."""
    if not isinstance(loaded, Mapping):
        raise SourceError(f"expected a state dict (a mapping of tensors), got {type(loaded)}")
    for key in _WRAPPERS:
        if isinstance(loaded.get(key), Mapping):
            return loaded[key]
    return loaded


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """facenet-pytorch InceptionResnetV1 weights from a .pt/.pth file, as float32 arrays.

    weights_only=True: a checkpoint is a pickle, and only this mode refuses pickled code.
    """
    torch = import_torch("PyTorch checkpoints")
    loaded = load_checkpoint(torch, path)
    try:
        state = float32_arrays(torch, _unwrap(loaded), skip=_UNUSED_KEYS)
        check_state_dict(state)
    except SourceError as error:
        raise SourceError(f"{path}: {error}") from None
    return state


def build_facenet(state: Mapping[str, np.ndarray]) -> keras.Model:
    """Keras model: standardised RGB (1,160,160,3) -> pre-normalisation embedding (1,512)."""
    import tensorflow as tf

    check_state_dict(state)
    x_in = tf.keras.Input((FACENET_SIZE, FACENET_SIZE, 3), batch_size=1, name="image")
    embedding = _inception_resnet_v1(_Keras(state), x_in)
    return tf.keras.Model(x_in, embedding, name="inception_resnet_v1")


def build_facenet_from_state_dict(path: Path) -> keras.Model:
    """build_facenet on the weights of a facenet-pytorch checkpoint file."""
    return build_facenet(load_state_dict(path))
