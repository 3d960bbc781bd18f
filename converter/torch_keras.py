"""The base of the Keras rebuilds of PyTorch networks (facenet_torch, minifasnet_torch)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from converter.torch_weights import bn_fold


class KerasFromState:
    """Builds Keras layers from a PyTorch state dict; a subclass sets its BatchNorm epsilon."""

    bn_eps: float

    def __init__(self, state: Mapping[str, np.ndarray]) -> None:
        import tensorflow as tf

        self.layers = tf.keras.layers
        self.state = state

    def _bn_fold(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (multiplier, bias) of an eval-mode BatchNorm: y = x * m + b."""
        return bn_fold(self.state, name, self.bn_eps)
