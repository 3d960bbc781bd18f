"""LFW verification end to end: own detection, alignment and embedding on every image.

Each image is scored two ways from one detection:
- as the door decides: one FaceNet embedding per face (the headline accuracy);
- with flipped images: the face's embedding averaged with its mirror image's, the extra
  with which the published accuracy of these FaceNet weights was measured. The door does
  not do this (it doubles FaceNet's work and gained nothing per visit, docs/ACCURACY.md);
  it is reported so that a figure can be compared with the published one on equal terms.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge_app.centering import unit
from edge_app.engine import Engine
from edge_app.errors import UserError, first_few
from edge_app.images import read_image
from edge_app.lfw import (
    PairList,
    accuracy_at,
    best_threshold,
    cross_validated_accuracy,
    labelled_face,
    read_pairs,
    validation_rate,
)
from edge_app.progress import Progress

log = logging.getLogger(__name__)


FLIPPED = "each face's embedding averaged with its mirror image's, as in the published protocol"


@dataclass(frozen=True)
class LfwScore:
    """One way of embedding the images, scored by the job's protocol."""

    accuracy: float
    accuracy_std: float
    threshold: float  # cosine similarity: a pair at or above it is called the same person
    val_at_far_1e_3: float


@dataclass(frozen=True)
class LfwResult:
    protocol: str
    pairs: int
    images: int
    accuracy: float
    accuracy_std: float
    threshold: float
    val_at_far_1e_3: float
    flipped: LfwScore
    no_face_images: int
    no_face_policy: str
    images_per_second: float
    backend: str
    models: str

    def to_json(self) -> dict:
        data = asdict(self)
        data["val_at_far_1e-3"] = data.pop("val_at_far_1e_3")
        data["flipped"]["val_at_far_1e-3"] = data["flipped"].pop("val_at_far_1e_3")
        data["flipped"]["what"] = FLIPPED
        return data


@dataclass(frozen=True)
class LfwJob:
    """An LFW evaluation checked before any work: its pair lists read and every image they
    name found under `images`."""

    test: PairList
    train: PairList | None
    images: Path
    protocol: str
    names: list[str]


def lfw_job(pairs_file: Path, images: Path, train_file: Path | None = None) -> LfwJob:
    """Read the pair lists and check their images, so bad input is refused before the
    engine opens (UserError, naming the first missing images)."""
    test = read_pairs(pairs_file)
    train = read_pairs(train_file) if train_file is not None else None
    names = sorted(set(test.images) | set(train.images if train else []))
    missing = [name for name in names if not (images / name).is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} of the {len(names)} images the pairs name are missing from "
            f"--images {images}: {first_few(missing, 3)}"
        )
    if train_file is not None:
        protocol = f"threshold from {Path(train_file).name}, accuracy on {Path(pairs_file).name}"
    else:
        folds = "its 10 folds" if test.folds == 10 else "10 interleaved folds"
        protocol = f"10-fold cross-validation on {folds} of {Path(pairs_file).name}"
    return LfwJob(test, train, images, protocol, names)


def embed_images(
    engine: Engine, root: Path, names: list[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int, float]:
    """Embeddings by image name as the door makes them, the same averaged with the mirror
    image's, the count of images with no face, and images per second as the door runs (JPEG
    decode included; the mirror image's embedding is not timed)."""
    embeddings, flipped, no_face = {}, {}, 0
    door_seconds = 0.0
    for name in Progress(names, desc="embedding LFW", unit="image", disable=None):
        start = time.perf_counter()
        frame = read_image(root / name)
        face, found = labelled_face(engine.detect(frame), frame.shape[1], frame.shape[0])
        embeddings[name] = engine.embed(frame, face)[0]
        door_seconds += time.perf_counter() - start
        if not found:
            no_face += 1
            log.debug("no face in %s: using the median LFW face box", name)
        mirror = engine.embed(frame, face, mirror=True)[0]
        flipped[name] = unit(embeddings[name] + mirror)
    return embeddings, flipped, no_face, len(names) / max(door_seconds, 1e-9)


def distances(embeddings: dict, pairs: PairList) -> np.ndarray:
    a = np.stack([embeddings[n] for n in pairs.first])
    b = np.stack([embeddings[n] for n in pairs.second])
    return 1.0 - np.sum(a * b, axis=1)


def score(embeddings: dict[str, np.ndarray], job: LfwJob) -> LfwScore:
    """Accuracy by the job's protocol: the threshold from its train list, else 10-fold."""
    test, train = job.test, job.train
    test_d = distances(embeddings, test)
    if train is not None:
        threshold = best_threshold(distances(embeddings, train), train.same)
        # ten chunks, fewer for a list of fewer than ten pairs (an empty chunk has no accuracy)
        chunks = np.array_split(
            np.random.default_rng(0).permutation(len(test_d)), min(10, len(test_d))
        )
        per_fold = [accuracy_at(test_d[chunk], test.same[chunk], threshold) for chunk in chunks]
        accuracy, std = accuracy_at(test_d, test.same, threshold), float(np.std(per_fold))
    else:
        accuracy, std, _ = cross_validated_accuracy(test_d, test.same, test.fold, 10)
        threshold = best_threshold(test_d, test.same)
    return LfwScore(accuracy, std, 1.0 - threshold, validation_rate(test_d, test.same, 1e-3))


def evaluate_lfw(engine: Engine, job: LfwJob) -> LfwResult:
    embeddings, flipped, no_face, rate = embed_images(engine, job.images, job.names)
    door = score(embeddings, job)
    return LfwResult(
        protocol=job.protocol,
        pairs=len(job.test.same),
        images=len(job.names),
        accuracy=door.accuracy,
        accuracy_std=door.accuracy_std,
        threshold=door.threshold,
        val_at_far_1e_3=door.val_at_far_1e_3,
        flipped=score(flipped, job),
        no_face_images=no_face,
        no_face_policy="embedded from the median LFW face box (no pair is dropped)",
        images_per_second=rate,
        backend=engine.backend.kind,
        models=str(engine.models_dir),
    )
