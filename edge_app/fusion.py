"""A face track's evidence pooled into one embedding, so a visit is judged on all its frames.

One frame of a visit can be a poor view (motion blur, a half-turned head, hard light), and a
frame vote judges each view alone. With `[policy] evidence = "track"` each evaluated frame
instead adds its unit embedding to the track's running quality-weighted sum, and the vote is
the match of that sum's direction: per-frame noise averages out, and a visit that shows the
face from several angles is matched on all of them together. The policy's hits-of-window rule
then counts these pooled votes, so a decision still needs several agreeing frames.

The weight of a frame is the face's detection probability times how much detail the face
carries: its size against the FaceNet input (FACENET_SIZE px), capped at 1, so a small,
far-away face adds less than a close one. The cost is one 512-float addition per face; memory
is one 512-float row per live track, dropped when the track ends.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_app.align import FACENET_SIZE
from edge_app.faces import Faces

# A face smaller than this fraction of the FaceNet input still counts, at this weight.
MIN_DETAIL = 0.25


def face_weights(faces: Faces) -> np.ndarray:
    """(N,) weight of each face's embedding in its track's pool (module docstring)."""
    detail = np.clip(faces.sizes / FACENET_SIZE, MIN_DETAIL, 1.0)
    return (np.clip(faces.scores, 0.0, 1.0) * detail).astype(np.float32)


def evidence_weights(faces: Faces, left_out: np.ndarray | None = None) -> np.ndarray:
    """face_weights, and 0 for each face `left_out` (judged not live, when the door requires
    liveness): such a face adds nothing to its track's evidence. Otherwise a printed photo
    of the only resident, then a live stranger who looks a little like them in its place,
    was that resident by the photo's pooled frames and live by the stranger's, and opened
    the door. The daemon votes such a frame on its own embedding, so the photo is still
    recognised and reported."""
    weights = face_weights(faces)
    if left_out is None:
        return weights
    return np.where(left_out, np.float32(0.0), weights).astype(np.float32)


class TrackPool:
    """The running weighted sum of each live track's unit embeddings."""

    def __init__(self) -> None:
        self._sums: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._sums)

    def add(self, tracks: Sequence[int], embeddings: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Add one embedding per track; (N, 512) unit vectors of each track's pool so far."""
        embeddings = np.asarray(embeddings, np.float32)
        pooled = np.empty_like(embeddings)
        for row, (track, embedding, weight) in enumerate(
            zip(tracks, embeddings, weights, strict=True)
        ):
            total = self._sums.get(track)
            added = embedding * weight
            if not np.all(np.isfinite(added)):
                # A NaN or inf (a degenerate crop's embedding, a NaN box's weight) would stay
                # in the sum for the rest of the track: this frame adds nothing instead.
                added = np.zeros_like(embedding)
            total = added if total is None else total + added
            self._sums[track] = total
            pooled[row] = total
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        # A zero sum (weights all 0) falls back to the frame's own embedding.
        return np.where(norms > 1e-6, pooled / np.maximum(norms, 1e-12), embeddings)

    def pooled(self, track: int) -> np.ndarray | None:
        """The track's pooled unit embedding so far; None when it has none (or a zero sum)."""
        total = self._sums.get(track)
        if total is None:
            return None
        norm = float(np.linalg.norm(total))
        return None if norm <= 1e-6 else total / norm

    def forget(self, track: int) -> None:
        self._sums.pop(track, None)

    def clear(self) -> None:
        self._sums.clear()
