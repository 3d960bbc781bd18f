"""Pooling a track's embeddings (edge_app.fusion): the arithmetic and the weights."""

from __future__ import annotations

import numpy as np
import pytest

from edge_app.align import FACENET_SIZE
from edge_app.faces import Faces
from edge_app.fusion import MIN_DETAIL, TrackPool, face_weights


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector, axis=-1, keepdims=True)).astype(np.float32)


def faces(sizes: list[float], scores: list[float]) -> Faces:
    boxes = np.array([[0, 0, s, s] for s in sizes], np.float32)
    return Faces(boxes, np.array(scores, np.float32), np.zeros((len(sizes), 5, 2), np.float32))


def test_weights_grow_with_detail_up_to_the_facenet_input_and_with_confidence() -> None:
    weights = face_weights(faces([10, FACENET_SIZE / 2, FACENET_SIZE, 400], [1, 1, 1, 0.5]))
    assert weights.tolist() == pytest.approx([MIN_DETAIL, 0.5, 1.0, 0.5])


def test_the_pool_is_the_weighted_mean_direction_per_track() -> None:
    rng = np.random.default_rng(0)
    a1, a2, b1 = unit(rng.standard_normal((3, 512)))
    pool = TrackPool()
    first = pool.add([7, 9], np.stack([a1, b1]), np.array([1.0, 0.3]))
    assert np.allclose(first, np.stack([a1, b1]), atol=1e-6)  # one frame: itself
    [second] = pool.add([7], a2[None], np.array([3.0]))
    assert np.allclose(second, unit(a1 + 3 * a2), atol=1e-6)
    assert np.linalg.norm(second) == pytest.approx(1.0, abs=1e-6)
    pool.forget(7)
    [again] = pool.add([7], a2[None], np.array([1.0]))
    assert np.allclose(again, a2, atol=1e-6)  # a forgotten track starts over
    assert len(pool) == 2
    pool.clear()
    assert len(pool) == 0


def test_zero_weights_fall_back_to_the_frame_itself() -> None:
    vector = unit(np.arange(1, 513, dtype=np.float32))
    [out] = TrackPool().add([1], vector[None], np.array([0.0]))
    assert np.allclose(out, vector)
