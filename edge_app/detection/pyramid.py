"""The image pyramid P-Net scans: which scales, and the resized images."""

from __future__ import annotations

import cv2
import numpy as np

PNET_CELL = 12  # P-Net's window, in pixels of the scaled image
PNET_STRIDE = 2
DEFAULT_FACTOR = 0.709  # each level is half the area of the one before


def pyramid_scales(
    width: int, height: int, min_face: float, factor: float = DEFAULT_FACTOR
) -> list[float]:
    """Scales from "min_face maps to P-Net's 12-pixel cell" down to "image fits one cell"."""
    if min_face <= 0:
        raise ValueError("min_face must be positive")
    scale = PNET_CELL / float(min_face)
    scales = []
    while min(width, height) * scale >= PNET_CELL:
        scales.append(scale)
        scale *= factor
    return scales


def level_shape(width: int, height: int, scale: float) -> tuple[int, int]:
    """(height, width) of one pyramid level, rounded up as the models were built."""
    return int(np.ceil(height * scale)), int(np.ceil(width * scale))


def build_levels(frame: np.ndarray, scales: list[float]) -> list[tuple[float, np.ndarray]]:
    """Resized copies of the frame; INTER_AREA averages rather than skips pixels."""
    height, width = frame.shape[:2]
    levels = []
    for scale in scales:
        h, w = level_shape(width, height, scale)
        levels.append((scale, cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)))
    return levels
