"""MTCNN's three networks as static-shape Keras models, with the pretrained `mtcnn` weights.

The layer order follows the `mtcnn` package's own network definitions (mtcnn/network/*.py),
so its weight lists load unchanged. Two changes make the nets fit the Edge TPU and int8:
- each 2-way softmax head becomes one logit difference, l_face - l_background (a fold of
  the last layer's weights). sigmoid(d) equals the softmax's face probability, so thresholds
  keep their meaning, the TPU needs no 2-D softmax, and the int8 output spends all 256
  levels on the one number the threshold reads;
- inputs have batch 1 and fixed spatial size, as the TPU compiler requires.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np

# The input sizes the door's cascade crops to: one home, edge_app's.
from edge_app.detection.cascade import ONET_SIZE, RNET_SIZE

_CONV_BLOCKS = ["conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4", "prelu4"]


class SourceError(RuntimeError):
    """The pretrained weights cannot be found or read."""


def mtcnn_weights_dir() -> Path:
    try:
        import mtcnn  # optional converter dependency
    except ImportError:
        raise SourceError(
            "the `mtcnn` package is not installed: pip install 'edge-door[converter]'"
        ) from None
    return Path(mtcnn.__file__).parent / "assets" / "weights"


# The weight files of mtcnn 1.0.0 (pinned in pyproject.toml). joblib.load unpickles, which
# can run code, so only these exact files are ever loaded.
MTCNN_WEIGHTS_SHA256 = {
    "pnet": "ea6b0c3e685ebee3165326ad6484acc95f2ef78f1c94fbf40a55704fa989f7b5",
    "rnet": "cb00e6460f3c98b0bfafaba3c0a0ded4bdf6e62cee7174d969e8670d7e757fee",
    "onet": "94f6ea2f4cf985275ee958cdd762d17b6009348a4fb9d8c6be39ba73ffd22ca3",
}


def load_mtcnn_weights(name: str) -> list[np.ndarray]:
    """The weight list of `pnet`, `rnet` or `onet`, as the package stores it (joblib + lz4),
    read only when the file is the one mtcnn 1.0.0 ships (MTCNN_WEIGHTS_SHA256)."""
    import joblib

    from edge_app.manifest import sha256_file

    path = mtcnn_weights_dir() / f"{name}.lz4"
    if not path.is_file():
        raise SourceError(f"{path} is missing from the installed mtcnn package")
    if sha256_file(path) != MTCNN_WEIGHTS_SHA256[name]:
        raise SourceError(
            f"{path} is not the file mtcnn 1.0.0 ships (sha256 differs); it is a pickle, so it "
            "is not loaded: reinstall the package (pip install --force-reinstall mtcnn==1.0.0)"
        )
    return [np.asarray(w, np.float32) for w in joblib.load(path)]


def mtcnn_source_identity() -> dict[str, object]:
    from edge_app.manifest import sha256_file

    folder = mtcnn_weights_dir()
    return {
        "package": "mtcnn",
        "version": metadata.version("mtcnn"),
        "sha256": {n: sha256_file(folder / f"{n}.lz4") for n in ("pnet", "rnet", "onet")},
    }


def _logit_difference(kernel: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold a 2-way softmax layer into one output: face logit minus background logit."""
    return (
        (kernel[..., 1:2] - kernel[..., 0:1]).astype(np.float32),
        (bias[1:2] - bias[0:1]).astype(np.float32),
    )


def _assign(model, names: list[str], weights: list[np.ndarray]) -> None:
    """Load the package's flat weight list layer by layer, in its definition order."""
    cursor = 0
    for name in names:
        layer = model.get_layer(name)
        count = len(layer.get_weights())
        layer.set_weights(weights[cursor : cursor + count])
        cursor += count
    if cursor != len(weights):
        raise SourceError(f"{model.name}: {len(weights) - cursor} weights left over")


def build_pnet(height: int, width: int):
    """P-Net for one pyramid level: outputs score logit (1,h,w,1) and box offsets (1,h,w,4)."""
    import tensorflow as tf

    layers = tf.keras.layers
    w = load_mtcnn_weights("pnet")
    x_in = tf.keras.Input((height, width, 3), batch_size=1, name="image")
    x = layers.Conv2D(10, 3, name="conv1")(x_in)
    x = layers.PReLU(shared_axes=[1, 2], name="prelu1")(x)
    x = layers.MaxPooling2D(2, 2, padding="same", name="pool1")(x)
    x = layers.Conv2D(16, 3, name="conv2")(x)
    x = layers.PReLU(shared_axes=[1, 2], name="prelu2")(x)
    x = layers.Conv2D(32, 3, name="conv3")(x)
    x = layers.PReLU(shared_axes=[1, 2], name="prelu3")(x)
    box = layers.Conv2D(4, 1, name="box")(x)
    score = layers.Conv2D(1, 1, name="score")(x)
    model = tf.keras.Model(x_in, [score, box], name="pnet")
    w[11:13] = _logit_difference(w[11], w[12])
    _assign(model, [*_CONV_BLOCKS[:6], "box", "score"], w)
    return model


def build_rnet():
    """R-Net on one 24x24 crop: score logit (1,1), box offsets (1,4)."""
    import tensorflow as tf

    layers = tf.keras.layers
    w = load_mtcnn_weights("rnet")
    x_in = tf.keras.Input((RNET_SIZE, RNET_SIZE, 3), batch_size=1, name="image")
    x = layers.Conv2D(28, 3, name="conv1")(x_in)
    x = layers.PReLU(shared_axes=[1, 2], name="prelu1")(x)
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool1")(x)
    x = layers.Conv2D(48, 3, name="conv2")(x)
    x = layers.PReLU(shared_axes=[1, 2], name="prelu2")(x)
    x = layers.MaxPooling2D(3, 2, padding="valid", name="pool2")(x)
    x = layers.Conv2D(64, 2, name="conv3")(x)
    x = layers.PReLU(shared_axes=[1, 2], name="prelu3")(x)
    # Caffe flattened channel-major with x and y swapped; the weights expect that order.
    x = layers.Permute((2, 1, 3), name="permute")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, name="fc4")(x)
    x = layers.PReLU(name="prelu4")(x)
    box = layers.Dense(4, name="box")(x)
    score = layers.Dense(1, name="score")(x)
    model = tf.keras.Model(x_in, [score, box], name="rnet")
    w[14:16] = _logit_difference(w[14], w[15])
    _assign(model, [*_CONV_BLOCKS[:6], "fc4", "prelu4", "box", "score"], w)
    return model


def build_onet():
    """O-Net on one 48x48 crop: score logit (1,1), box offsets (1,4), landmarks (1,10)."""
    import tensorflow as tf

    layers = tf.keras.layers
    w = load_mtcnn_weights("onet")
    x_in = tf.keras.Input((ONET_SIZE, ONET_SIZE, 3), batch_size=1, name="image")
    x = layers.Conv2D(32, 3, name="conv1")(x_in)
    x = layers.PReLU(shared_axes=[1, 2], name="prelu1")(x)
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool1")(x)
    x = layers.Conv2D(64, 3, name="conv2")(x)
    x = layers.PReLU(shared_axes=[1, 2], name="prelu2")(x)
    x = layers.MaxPooling2D(3, 2, padding="valid", name="pool2")(x)
    x = layers.Conv2D(64, 3, name="conv3")(x)
    x = layers.PReLU(shared_axes=[1, 2], name="prelu3")(x)
    x = layers.MaxPooling2D(2, 2, padding="same", name="pool3")(x)
    x = layers.Conv2D(128, 2, name="conv4")(x)
    x = layers.PReLU(shared_axes=[1, 2], name="prelu4")(x)
    x = layers.Permute((2, 1, 3), name="permute")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(256, name="fc5")(x)
    x = layers.PReLU(name="prelu5")(x)
    box = layers.Dense(4, name="box")(x)
    landmarks = layers.Dense(10, name="landmarks")(x)
    score = layers.Dense(1, name="score")(x)
    model = tf.keras.Model(x_in, [score, box, landmarks], name="onet")
    w[19:21] = _logit_difference(w[19], w[20])
    _assign(model, [*_CONV_BLOCKS, "fc5", "prelu5", "box", "landmarks", "score"], w)
    return model
