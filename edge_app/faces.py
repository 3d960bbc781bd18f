"""Detected faces as parallel numpy arrays, so every stage after detection stays vectorised."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Faces:
    """N faces in frame pixel coordinates.

    boxes: (N, 4) float32 x1, y1, x2, y2; scores: (N,) float32 face probability;
    landmarks: (N, 5, 2) float32 x, y of left eye, right eye, nose, left and right mouth corner
    (left/right as seen in the image).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    @classmethod
    def empty(cls) -> Faces:
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0, 5, 2), np.float32),
        )

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __getitem__(self, index: int | slice | np.ndarray) -> Faces:
        """Select faces by index, slice or mask; always returns Faces (a single index keeps N=1)."""
        rows: slice | list[int] | np.ndarray
        if isinstance(index, (int, np.integer)):
            rows = slice(int(index), int(index) + 1) if index >= 0 else [int(index)]
        else:
            rows = index
        return Faces(self.boxes[rows], self.scores[rows], self.landmarks[rows])

    @property
    def sizes(self) -> np.ndarray:
        """Shorter side of each box in pixels: what the minimum-face gates compare against."""
        return np.minimum(self.boxes[:, 2] - self.boxes[:, 0], self.boxes[:, 3] - self.boxes[:, 1])
