"""Reading PyTorch state dicts for the Keras rebuilds (facenet_torch, minifasnet_torch).

Shared by both ports: the checkpoint load (weights_only=True: a checkpoint is a pickle, and
only this mode refuses pickled code), the tensors as float32 arrays, the comparison with the
names and shapes a network needs, and BatchNorm folding.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from converter.mtcnn_models import SourceError
from edge_app.bounded_read import read_or_refuse, zip_unpacked_bytes
from edge_app.errors import first_few

BN_PARAMS = ("weight", "bias", "running_mean", "running_var")
# BatchNorm's update counter: in every checkpoint, used by no forward pass.
BN_COUNTER = "num_batches_tracked"
TORCH_CPU = "pip install torch (the CPU build: --index-url https://download.pytorch.org/whl/cpu)"
# The largest checkpoint read: FaceNet's Inception-ResNet-v1 is about 110 MB, a MiniFASNet
# about 2 MB.
MAX_CHECKPOINT_BYTES = 1024 * 1024 * 1024


def bn_fold(
    state: Mapping[str, np.ndarray], name: str, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (multiplier, bias) of an eval-mode BatchNorm: y = x * m + b."""
    gamma, beta, mean, var = (state[f"{name}.{p}"].astype(np.float64) for p in BN_PARAMS)
    multiplier = gamma / np.sqrt(var + eps)
    return multiplier, beta - mean * multiplier


def import_torch(reading: str) -> ModuleType:
    """The torch module; SourceError saying how to install it (CPU) when it is absent.

    reading: what torch is needed for, for the message ("PyTorch checkpoints").
    """
    try:
        import torch  # optional: only these sources need it
    except ImportError:
        raise SourceError(f"install torch (CPU) to read {reading}: {TORCH_CPU}") from None
    return torch


def load_checkpoint(torch: ModuleType, path: Path) -> Any:
    """torch.load(path, weights_only=True); SourceError naming the file when it is refused.

    The file is read first, bounded (edge_app.bounded_read): a FIFO named like a weight file
    would hang torch.load, and a device (a link to /dev/zero) would read without end."""
    data = read_or_refuse(path, MAX_CHECKPOINT_BYTES, SourceError, what="a PyTorch checkpoint")
    unpacked = zip_unpacked_bytes(data)  # torch.save writes a zip; older files are one pickle
    if unpacked is not None and unpacked > MAX_CHECKPOINT_BYTES:
        raise SourceError(
            f"{path}: its archive unpacks to {unpacked} bytes, more than a checkpoint has "
            f"({MAX_CHECKPOINT_BYTES} at most)"
        )
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own text advises weights_only=False: not here
        raise SourceError(
            f"{path}: weights-only loading refuses it (a pickled model, other objects, or not a "
            "PyTorch file); save the model's state_dict() instead"
        ) from None
    except Exception as error:  # torch raises many kinds for a bad file; all mean "unreadable"
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SourceError(f"{path}: cannot read it as a PyTorch checkpoint: {first_line}") from None


def float32_arrays(
    torch: ModuleType, loaded: Mapping[str, Any], *, skip: Iterable[str] = (), prefix: str = ""
) -> dict[str, np.ndarray]:
    """Each tensor as a float32 array, keyed without `prefix`; BatchNorm counters and the
    keys in `skip` left out. A value that is not a tensor becomes an object array, which
    shape_problems reports by its shape."""
    skipped = set(skip)
    return {
        key.removeprefix(prefix): value.detach().to(torch.float32).numpy()
        if isinstance(value, torch.Tensor)
        else np.asarray(value, dtype=object)
        for key, value in loaded.items()
        if key not in skipped and key.rsplit(".", 1)[-1] != BN_COUNTER
    }


def names(keys: list[str]) -> str:
    return first_few(keys, 5)


def shape_problems(
    state: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]]
) -> list[str]:
    """What keeps `state` from being the network `expected` describes: missing, unknown and
    wrongly shaped entries, a few named each; empty when it fits."""
    missing = [k for k in expected if k not in state]
    unknown = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {expected[k]})"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    return [
        f"{label}: {names(keys)}"
        for label, keys in (("missing", missing), ("unknown", unknown), ("wrong shape", wrong))
        if keys
    ]
