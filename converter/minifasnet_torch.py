"""Silent-Face-Anti-Spoofing's MiniFASNets as static-shape Keras models, from their state dicts.

Minivision's Silent-Face-Anti-Spoofing (Apache-2.0) publishes two small liveness classifiers as
PyTorch state dicts: MiniFASNetV2 on an 80x80 patch cut around the face box enlarged 2.7x,
and MiniFASNetV1SE on one enlarged 4.0x. Each takes BGR pixels as raw 0-255 floats and scores
three classes, class 1 being a real face. This module rebuilds the network (upstream
src/model_lib/MiniFASNet.py) layer for layer, with three changes for int8 and the Edge TPU:

- every BatchNorm is folded into the convolution before it; the head after the last
  depthwise convolution (linear 512->128, BatchNorm1d, dropout, linear 128->3) has no
  non-linearity, so it folds into one fully connected layer;
- the 3-way softmax is not in the graph (the Edge TPU maps only 1-D softmax): the output is
  the two spoof classes' logits *minus the real class's*, a fold of the last layer's weights.
  The host's real probability is exactly the softmax's: 1 / (1 + exp(d0) + exp(d2)). The
  common offset of the three logits, which int8 would spend levels on, is gone;
- PyTorch pads a stride-2 3x3 convolution by one pixel on every side; Keras's "same" would pad
  only after, so those layers get an explicit one-pixel zero padding (a PAD op);
- each PReLU becomes alpha * y + relu((1 - alpha) * y) (exact for slopes <= 1, which all 66
  layers of both models have): the CPU runtime's int8 PRELU is a slow reference kernel that
  made the int8 models 3-4x slower than the float ones; this form stays fast in int8.

Channel widths are read from the state dict (the two variants prune differently) and checked
for consistency; the block structure is fixed: conv1, conv2_dw, conv_23, conv_3 (4 residual
blocks), conv_34, conv_4 (6), conv_45, conv_5 (2), conv_6_sep, conv_6_dw, linear, bn, prob.
In the SE variant the last block of conv_3, conv_4 and conv_5 carries a squeeze-excitation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
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
    names,
    shape_problems,
)

if TYPE_CHECKING:
    import keras

PATCH_SIZE = 80  # both published models: 80x80 patches
REAL_CLASS = 1  # upstream's label for a real face; 0 and 2 are the two attack classes
CLASSES = 3
BN_EPS = 1e-5  # PyTorch's BatchNorm default, which upstream keeps
SPOOF_LOGITS = 2  # output width: logit(class 0) - logit(real), logit(class 2) - logit(real)
# Upstream's naming rule for its weight files: "<scale>_<H>x<W>_<type>.pth", where the scale's
# first underscore-separated field is the number ("4_0_0_80x80_MiniFASNetV1SE.pth" is 4.0).
_FILE_NAME = re.compile(r"^(?P<scale>\d+(?:\.\d+)?)(?:_\d+)*_(?P<h>\d+)x(?P<w>\d+)_(?P<type>\w+)$")
# The types this port rebuilds, and whether their residual stages end in squeeze-excitation.
# (Upstream's MiniFASNetV2SE has four classes and no published weights: not supported.)
VARIANTS = {"MiniFASNetV1": False, "MiniFASNetV2": False, "MiniFASNetV1SE": True}
_STAGES = (("conv_3", 4), ("conv_4", 6), ("conv_5", 2))  # residual stages and their blocks
_SE_REDUCTION = 4
_PREFIX = "module."  # upstream trained under DataParallel, which prefixes every key
_names = names  # a few of a list of state-dict keys, for refusals


@dataclass(frozen=True)
class MiniFasNetFile:
    """One upstream weight file and what its name says: crop scale, patch size, type."""

    path: Path
    variant: str
    crop_scale: float
    size: tuple[int, int]  # height, width

    @property
    def se(self) -> bool:
        return VARIANTS[self.variant]


def parse_file_name(path: Path) -> MiniFasNetFile:
    """Upstream's file naming: '2.7_80x80_MiniFASNetV2.pth' is a 2.7x crop at 80x80."""
    match = _FILE_NAME.match(path.stem) if path.suffix == ".pth" else None
    if match is None:
        raise SourceError(
            f"{path.name}: not named like Silent-Face's weights (<scale>_<H>x<W>_<type>.pth, "
            "e.g. 2.7_80x80_MiniFASNetV2.pth)"
        )
    variant = match["type"]
    if variant not in VARIANTS:
        raise SourceError(f"{path.name}: {variant} is not one of {', '.join(VARIANTS)}")
    size = (int(match["h"]), int(match["w"]))
    if size != (PATCH_SIZE, PATCH_SIZE):
        raise SourceError(f"{path.name}: only {PATCH_SIZE}x{PATCH_SIZE} models are supported")
    return MiniFasNetFile(path, variant, float(match["scale"]), size)


def _bn_shapes(name: str, width: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.{p}": (width,) for p in BN_PARAMS}


class _Shapes:
    """The architecture walked on channel counts, which come from the state dict itself.

    Each layer's width is its weight's first dimension; every other shape (BatchNorm, PReLU,
    the next layer's input) must then agree, so a wrong or truncated file is named here.
    """

    def __init__(self, state: Mapping[str, np.ndarray]) -> None:
        self.state = state
        self.shapes: dict[str, tuple[int, ...]] = {}

    def _width(self, key: str) -> int:
        value = self.state.get(key)
        if value is None or getattr(value, "ndim", 0) < 1:
            raise SourceError(f"missing {key}")
        return int(value.shape[0])

    def conv(self, x: int, name: str, kernel: int, stride: int, depthwise: bool, act: bool) -> int:
        width = x if depthwise else self._width(f"{name}.conv.weight")
        self.shapes[f"{name}.conv.weight"] = (width, 1 if depthwise else x, kernel, kernel)
        self.shapes.update(_bn_shapes(f"{name}.bn", width))
        if act:
            self.shapes[f"{name}.prelu.weight"] = (width,)
        return width

    def squeeze_excite(self, x: int, name: str) -> int:
        hidden = x // _SE_REDUCTION
        self.shapes[f"{name}.fc1.weight"] = (hidden, x, 1, 1)
        self.shapes.update(_bn_shapes(f"{name}.bn1", hidden))
        self.shapes[f"{name}.fc2.weight"] = (x, hidden, 1, 1)
        self.shapes.update(_bn_shapes(f"{name}.bn2", x))
        return x

    def add(self, x: int, shortcut: int, name: str) -> int:
        if x != shortcut:
            raise SourceError(f"{name}: residual widths differ ({shortcut} and {x})")
        return x

    def head(self, x: int) -> int:
        embedding = self._width("linear.weight")
        self.shapes["linear.weight"] = (embedding, x)
        self.shapes.update(_bn_shapes("bn", embedding))
        self.shapes["prob.weight"] = (CLASSES, embedding)
        return SPOOF_LOGITS


class _Keras(KerasFromState):
    """The architecture as Keras layers, with every BatchNorm and the linear head folded."""

    bn_eps = BN_EPS

    def _folded(self, name: str, bn: str) -> tuple[np.ndarray, np.ndarray]:
        """Conv weight (out, in, kh, kw) with the BatchNorm after it folded in, and its bias."""
        multiplier, bias = self._bn_fold(bn)
        weight = self.state[name].astype(np.float64) * multiplier[:, None, None, None]
        return weight, bias

    def conv(self, x: Any, name: str, kernel: int, stride: int, depthwise: bool, act: bool) -> Any:
        weight, bias = self._folded(f"{name}.conv.weight", f"{name}.bn")
        if kernel > 1 and stride == 2:
            x = self.layers.ZeroPadding2D(kernel // 2, name=f"{name}.pad")(x)
            padding = "valid"
        else:  # stride 1: PyTorch's (k-1)/2 on each side is exactly "same"; 5x5 head: "valid"
            padding = "same" if kernel == 3 else "valid"
        if depthwise:  # PyTorch (C, 1, kh, kw) -> Keras (kh, kw, C, 1)
            layer = self.layers.DepthwiseConv2D(kernel, stride, padding, name=f"{name}.conv")
            kernel_array = weight.transpose(2, 3, 0, 1)
        else:  # PyTorch (out, in, kh, kw) -> Keras (kh, kw, in, out)
            layer = self.layers.Conv2D(weight.shape[0], kernel, stride, padding, name=name)
            kernel_array = weight.transpose(2, 3, 1, 0)
        y = layer(x)
        layer.set_weights([kernel_array.astype(np.float32), bias.astype(np.float32)])
        if not act:
            return y
        return self._prelu(y, self.state[f"{name}.prelu.weight"], f"{name}.prelu")

    def _prelu(self, y: Any, alpha: np.ndarray, name: str) -> Any:
        """PReLU as alpha * y + relu((1 - alpha) * y): two 1x1 depthwise scalings and an add.

        Exact for alpha <= 1 (checked when the weights load). The TFLite CPU runtime has no
        fast int8 PRELU (XNNPACK leaves it to a slow reference kernel, a third of the ops
        here), while depthwise convolution, fused ReLU and add stay in one XNNPACK graph and
        on the Edge TPU's op list. Each branch gets its own int8 scale, so the small negative
        slopes keep their precision (a MAXIMUM(y, alpha * y) form shares one scale and loses it).
        """
        slope = self.layers.DepthwiseConv2D(1, use_bias=False, name=f"{name}.slope")
        negative = slope(y)
        slope.set_weights([alpha.reshape(1, 1, -1, 1).astype(np.float32)])
        rest = self.layers.DepthwiseConv2D(
            1, use_bias=False, activation="relu", name=f"{name}.rest"
        )
        positive = rest(y)
        rest.set_weights([(1 - alpha).reshape(1, 1, -1, 1).astype(np.float32)])
        return self.layers.Add(name=f"{name}.sum")([negative, positive])

    def _pointwise(self, x: Any, name: str, bn: str, activation: str) -> Any:
        weight, bias = self._folded(f"{name}.weight", bn)
        layer = self.layers.Conv2D(weight.shape[0], 1, activation=activation, name=name)
        y = layer(x)
        layer.set_weights(
            [weight.transpose(2, 3, 1, 0).astype(np.float32), bias.astype(np.float32)]
        )
        return y

    def squeeze_excite(self, x: Any, name: str) -> Any:
        # AdaptiveAvgPool2d(1) over the whole map, fc1+bn1, ReLU, fc2+bn2, sigmoid, x * gate.
        pooled = self.layers.AveragePooling2D(tuple(x.shape[1:3]), name=f"{name}.avg_pool")(x)
        hidden = self._pointwise(pooled, f"{name}.fc1", f"{name}.bn1", "relu")
        gate = self._pointwise(hidden, f"{name}.fc2", f"{name}.bn2", "sigmoid")
        return self.layers.Multiply(name=f"{name}.scale")([x, gate])

    def add(self, x: Any, shortcut: Any, name: str) -> Any:
        return self.layers.Add(name=f"{name}.add")([shortcut, x])

    def head(self, x: Any) -> Any:
        # flatten (1x1 map), linear (no bias), BatchNorm1d, dropout (identity in eval), prob (no
        # bias): logits = P (m * (L v) + b). Then each spoof logit minus the real one.
        x = self.layers.Flatten(name="flatten")(x)
        multiplier, bias = self._bn_fold("bn")
        linear = self.state["linear.weight"].astype(np.float64)
        prob = self.state["prob.weight"].astype(np.float64)
        spoof = [c for c in range(CLASSES) if c != REAL_CLASS]
        difference = prob[spoof] - prob[REAL_CLASS]  # (2, embedding)
        kernel = (difference * multiplier) @ linear  # (2, 512)
        layer = self.layers.Dense(SPOOF_LOGITS, name="spoof_logits")
        y = layer(x)
        layer.set_weights([kernel.T.astype(np.float32), (difference @ bias).astype(np.float32)])
        return y


_Net = _Shapes | _Keras


def _depth_wise(net: _Net, x: Any, name: str, stride: int, residual: bool, se: bool) -> Any:
    """Upstream's Depth_Wise(_SE) block: 1x1 expand, 3x3 depthwise, 1x1 project (linear)."""
    y = net.conv(x, f"{name}.conv", 1, 1, depthwise=False, act=True)
    y = net.conv(y, f"{name}.conv_dw", 3, stride, depthwise=True, act=True)
    y = net.conv(y, f"{name}.project", 1, 1, depthwise=False, act=False)
    if se:
        y = net.squeeze_excite(y, f"{name}.se_module")
    return net.add(y, x, name) if residual else y


def _minifasnet(net: _Net, x: Any, se: bool) -> Any:
    """MiniFASNet.forward, in upstream's order and names (without the 'module.' prefix)."""
    x = net.conv(x, "conv1", 3, 2, depthwise=False, act=True)
    x = net.conv(x, "conv2_dw", 3, 1, depthwise=True, act=True)
    x = _depth_wise(net, x, "conv_23", 2, residual=False, se=False)
    for stage, (name, blocks) in enumerate(_STAGES):
        if stage:  # conv_34 and conv_45: the stride-2 transitions between stages
            x = _depth_wise(net, x, f"conv_{stage + 2}{stage + 3}", 2, residual=False, se=False)
        for index in range(blocks):
            last = index == blocks - 1
            x = _depth_wise(net, x, f"{name}.model.{index}", 1, residual=True, se=se and last)
    x = net.conv(x, "conv_6_sep", 1, 1, depthwise=False, act=True)
    x = net.conv(x, "conv_6_dw", PATCH_SIZE // 16, 1, depthwise=True, act=False)
    return net.head(x)


def expected_shapes(state: Mapping[str, np.ndarray], se: bool) -> dict[str, tuple[int, ...]]:
    """Every state-dict entry the network needs, with its PyTorch shape."""
    shapes = _Shapes(state)
    _minifasnet(shapes, 3, se)
    return shapes.shapes


def check_state_dict(state: Mapping[str, np.ndarray], variant: str) -> None:
    """Refuse a state dict that is not this MiniFASNet variant, naming why."""
    try:
        expected = expected_shapes(state, VARIANTS[variant])
    except SourceError as error:
        raise SourceError(f"not a {variant} state dict: {error}") from None
    problems = shape_problems(state, expected)
    if problems:
        raise SourceError(f"not a {variant} state dict; " + "; ".join(problems))
    unusable = [k for k in expected if not np.all(np.isfinite(state[k]))]
    if unusable:  # NaN passes every comparison below and ends up in the int8 model
        raise SourceError(
            f"weights that are not finite numbers (NaN, infinity): {_names(unusable)}"
        )
    negative = [k for k in expected if k.endswith(".running_var") and np.min(state[k]) < 0]
    if negative:
        raise SourceError(f"BatchNorm variances below 0: {_names(negative)}")
    steep = [k for k in expected if k.endswith(".prelu.weight") and np.max(state[k]) > 1]
    if steep:  # _Keras._prelu's form alpha*y + relu((1-alpha)*y) needs alpha <= 1
        raise SourceError(f"PReLU slopes above 1 are not supported: {_names(steep)}")


def load_state_dict(source: MiniFasNetFile) -> dict[str, np.ndarray]:
    """The weights of one upstream file as float32 arrays, 'module.' prefix removed, checked.

    weights_only=True: a checkpoint is a pickle, and only this mode refuses pickled code.
    """
    torch = import_torch("the MiniFASNet weights")
    path = source.path
    loaded = load_checkpoint(torch, path)
    if not isinstance(loaded, Mapping):
        raise SourceError(f"{path}: expected a state dict, got {type(loaded).__name__}")
    try:
        state = float32_arrays(torch, loaded, prefix=_PREFIX)
        check_state_dict(state, source.variant)
    except SourceError as error:
        raise SourceError(f"{path}: {error}") from None
    return state


def build_minifasnet(state: Mapping[str, np.ndarray], variant: str) -> keras.Model:
    """Keras model: BGR 0-255 (1,80,80,3) -> spoof logits minus the real logit (1,2)."""
    import tensorflow as tf

    check_state_dict(state, variant)
    x_in = tf.keras.Input((PATCH_SIZE, PATCH_SIZE, 3), batch_size=1, name="patch")
    logits = _minifasnet(_Keras(state), x_in, VARIANTS[variant])
    return tf.keras.Model(x_in, logits, name=variant.lower())
