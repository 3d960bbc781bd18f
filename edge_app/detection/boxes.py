"""Box arithmetic between the cascade's stages, vectorised over all boxes at once.

Boxes are float32 (N, 4) x1, y1, x2, y2 in continuous pixel coordinates (a 12-pixel
window at column c covers [c, c + 12)); offsets are fractions of the box's width and height.
"""

from __future__ import annotations

import cv2
import numpy as np


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, groups: np.ndarray | None = None):
    """Greedy non-maximum suppression; with `groups`, boxes only suppress their own group.

    OpenCV's C++ NMS does the greedy pass, so there is no Python loop over boxes here.
    Returns indices of kept boxes, highest score first.
    """
    if len(boxes) == 0:
        return np.zeros((0,), np.int64)
    xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]).astype(np.float64)
    # OpenCV keeps scores strictly above its threshold (0 here) and wants them non-negative;
    # only their order matters, and logits may be negative: shift them all to >= 1.
    scores = scores.astype(np.float64)
    ranks = scores - scores.min() + 1.0
    # The bindings' stubs want sequences: tolist() costs microseconds beside the NMS itself.
    if groups is None:
        kept = cv2.dnn.NMSBoxes(xywh.tolist(), ranks, 0.0, iou)
    else:
        classes = groups.astype(np.int32).tolist()
        kept = cv2.dnn.NMSBoxesBatched(xywh.tolist(), ranks, classes, 0.0, iou)
    keep = np.asarray(kept, np.int64).reshape(-1)
    return keep[np.argsort(-scores[keep], kind="stable")]


def nms_nested(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Final-stage suppression by intersection over the *smaller* box, as the original MTCNN
    does after O-Net: a box nested inside a better one is the same face, whatever its IoU.

    "Fast NMS": a box goes when any higher-scoring box overlaps it, suppressed or not. At
    O-Net's handful of boxes this equals the greedy pass in practice and needs no loop.
    """
    order = np.argsort(-scores, kind="stable")
    ordered = boxes[order]
    top_left = np.maximum(ordered[:, None, :2], ordered[None, :, :2])
    bottom_right = np.minimum(ordered[:, None, 2:], ordered[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area = np.prod(ordered[:, 2:] - ordered[:, :2], axis=1)
    overlap = inter / np.maximum(np.minimum(area[:, None], area[None, :]), 1e-9)
    suppressed = np.triu(overlap > threshold, k=1).any(axis=0)
    return order[~suppressed]


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply the networks' box regression: each edge moves by a fraction of the box size."""
    size = np.tile(boxes[:, 2:] - boxes[:, :2], 2)
    return (boxes + offsets * size).astype(np.float32)


def square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre: R-Net and O-Net see square crops."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = np.max(boxes[:, 2:] - boxes[:, :2], axis=1, keepdims=True) / 2
    return np.hstack([centre - half, centre + half]).astype(np.float32)


def clip(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N, 4) against every box in b (M, 4), x1 y1 x2 y2: (N, M)."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    # NaN or infinite boxes (a broken detector) give NaN here, which the where() turns to 0.
    with np.errstate(invalid="ignore", over="ignore"):
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
        area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        union = area_a[:, None] + area_b[None, :] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
    return np.nan_to_num(iou, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
