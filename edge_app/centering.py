"""Embedding centring: subtract the mean face embedding before the cosine.

FaceNet embeddings of all faces share a common component: the mean of many unit embeddings
is far from zero. Cosine similarity then partly measures "both are faces" rather than "both
are this person". Subtracting that mean and re-normalising removes it; the published LFW
figure for the 2018 weights was measured this way (facenet's `subtract_mean`).

The mean is computed once, on LFW DevTrain images (never on DevTest or on people outside
DevTrain), from unit embeddings made exactly as the engine makes them, and shipped with the
models as `facenet_mean.npy`; the manifest's `preprocessing.facenet_mean` records its file
and sha256, and the engine refuses a file that does not match. The cost at the door is one
512-float subtraction and one normalisation per face.

    unit     = raw / |raw|
    centred  = (unit - mean) / |unit - mean|

Galleries store what the engine outputs, so samples enrolled with and without centring
are not comparable: the gallery's per-sample model identity (`embedding_model_id`) includes
the mean's hash, and enrolment and the daemon warn about samples from another identity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.manifest import ManifestError, side_file

MEAN_KEY = "facenet_mean"
MEAN_FILE = "facenet_mean.npy"
# FaceNet's embedding size: the one home of this number (gallery, cohort and engine use it).
EMBEDDING_DIM = 512


def unit(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero)."""
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return (rows / np.maximum(norms, 1e-12)).astype(np.float32)


def centre(raw: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """Raw FaceNet outputs (N, 512) -> unit embeddings, centred on `mean` when given."""
    normalised = unit(raw)
    if mean is None:
        return normalised
    return unit(normalised - mean[None, :])


def mean_of(raw: np.ndarray) -> np.ndarray:
    """The mean of the unit embeddings of `raw` (N, 512): the vector to ship."""
    return unit(raw).mean(axis=0).astype(np.float32)


def load_mean(models_dir: Path, preprocessing: Mapping[str, Any]) -> np.ndarray | None:
    """The mean named by the manifest, checked against its sha256; None when not configured."""
    entry = preprocessing.get(MEAN_KEY)
    if entry is None:
        return None
    where = f"manifest.preprocessing.{MEAN_KEY}"
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        raise ManifestError(f"{where}: expected an object with 'file' and 'sha256'")
    path = side_file(models_dir, entry["file"], entry.get("sha256"), where, "make centring-mean")
    try:
        mean = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ManifestError(f"{where}: cannot read {path}: {error}") from None
    if mean.shape != (EMBEDDING_DIM,) or not np.all(np.isfinite(mean)):
        raise ManifestError(f"{where}: {path} must hold {EMBEDDING_DIM} finite numbers")
    return mean.astype(np.float32)


def model_identity(facenet_sha256: str, mean: np.ndarray | None) -> str:
    """What a gallery sample records as its embedding model: the FaceNet file hash alone
    without centring (as before centring existed), else a hash of both."""
    if mean is None:
        return facenet_sha256
    digest = hashlib.sha256(facenet_sha256.encode())
    digest.update(np.ascontiguousarray(mean, dtype=np.float32).tobytes())
    return digest.hexdigest()
