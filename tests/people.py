"""Embeddings that stand in for FaceNet's in gallery tests: photos of one person resemble
each other, photos of different people do not."""

from __future__ import annotations

import hashlib

import numpy as np

from edge_app.centering import EMBEDDING_DIM
from edge_app.gallery import NewSample


def unit_vectors(count: int, seed: int) -> np.ndarray:
    """`count` photos of one person (seed) as a FaceNet would see them: unit vectors around
    a direction of the person's own, cosine about 0.6 to each other (enrolment's one-person
    rule takes them together, its near-duplicate rule does not) and about 0 to another
    seed's. The first rows of a larger count are the rows of a smaller one."""
    rng = np.random.default_rng(seed)
    person = rng.normal(size=EMBEDDING_DIM)
    noise = rng.normal(size=(count, EMBEDDING_DIM))
    vectors = person / np.linalg.norm(person) + 0.8 * noise / np.linalg.norm(
        noise, axis=1, keepdims=True
    )
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def mirrors_of(vectors: np.ndarray, seed: int) -> np.ndarray:
    """Each row's (or the vector's) mirror-image embedding as FaceNet gives it: the same
    face, cosine about 0.97 to its row (a real photo's is 0.92 or more:
    edge_app.quality.MIRROR_SAME_FACE)."""
    rows = np.atleast_2d(vectors)
    noise = np.random.default_rng(seed).normal(size=rows.shape)
    moved = rows + 0.25 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    mirrors = (moved / np.linalg.norm(moved, axis=1, keepdims=True)).astype(np.float32)
    return mirrors.reshape(np.shape(vectors))


def several_people(count: int, seed: int) -> np.ndarray:
    """One photo each of `count` different people: cosine about 0 to each other."""
    return np.vstack([unit_vectors(1, seed * 1000 + i) for i in range(count)])


def samples(count: int, seed: int, crop: bytes | None = None) -> list[NewSample]:
    """`count` photos of the person `seed`, as enrolment stores them (model "model-a")."""
    return [
        NewSample(vector, hashlib.sha256(f"{seed}-{i}".encode()).hexdigest(), crop, "model-a")
        for i, vector in enumerate(unit_vectors(count, seed))
    ]
