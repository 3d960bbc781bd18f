"""Cutting many boxes out of an image and resizing them, in one OpenCV call per batch.

cv2.remap samples every crop's grid at once; parts of a box outside the image read as
black, as the cascade's zero padding expects. To avoid aliasing when a large box shrinks
to 24 or 48 pixels, each box is sampled from the smallest pyramid level that still holds
at least the output resolution, so bilinear sampling never skips pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# cv2.remap's maps are limited to 32767 rows.
_MAX_ROWS = 32000


def _remap(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    step = (boxes[:, 2:] - boxes[:, :2]) / size  # (N, 2) source pixels per output pixel
    grid = np.arange(size, dtype=np.float32) + 0.5
    xs = boxes[:, None, 0] + grid[None, :] * step[:, 0:1] - 0.5  # (N, size)
    ys = boxes[:, None, 1] + grid[None, :] * step[:, 1:2] - 0.5
    n = len(boxes)
    map_x = np.broadcast_to(xs[:, None, :], (n, size, size)).reshape(n * size, size)
    map_y = np.broadcast_to(ys[:, :, None], (n, size, size)).reshape(n * size, size)
    out = cv2.remap(
        image,
        np.ascontiguousarray(map_x, np.float32),
        np.ascontiguousarray(map_y, np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return out.reshape(n, size, size, image.shape[2])


def crop_resize(
    levels: Sequence[tuple[float, np.ndarray]], boxes: np.ndarray, size: int
) -> np.ndarray:
    """Crops of `boxes` (frame coordinates) as (N, size, size, C) uint8.

    levels: (scale, image) pairs, the full-resolution frame included with scale 1.0.
    """
    channels = levels[0][1].shape[2]
    out = np.zeros((len(boxes), size, size, channels), np.uint8)
    if len(boxes) == 0:
        return out
    scales = np.array([scale for scale, _ in levels], np.float64)
    order = np.argsort(scales)
    sides = np.max(boxes[:, 2:] - boxes[:, :2], axis=1)
    wanted = size / np.maximum(sides, 1e-6)
    # smallest level whose scale still reaches the wanted one (else the largest level)
    pick = np.minimum(np.searchsorted(scales[order], wanted - 1e-9), len(order) - 1)
    level_of_box = order[pick]
    for level in np.unique(level_of_box):
        chosen = np.flatnonzero(level_of_box == level)
        scale, image = levels[level]
        chunk = max(1, _MAX_ROWS // size)
        for start in range(0, len(chosen), chunk):
            part = chosen[start : start + chunk]
            out[part] = _remap(image, boxes[part] * scale, size)
    return out
