"""Liveness score per face: is it a real person, or a printed photo held up to the camera?

The models are Silent-Face-Anti-Spoofing's MiniFASNets (converter/minifasnet_torch.py), and
the patches are cut exactly as its predictor cuts them (src/generate_patches.py):

1. the detector's box becomes upstream's (x, y, w, h) = (int(x1), int(y1), int(x2 - x1 + 1),
   int(y2 - y1 + 1));
2. it is enlarged `scale` times about its centre (2.7x and 4.0x for the two models), the scale
   lowered when the enlarged box would not fit the frame ((H - 1) / h and (W - 1) / w);
3. a box crossing the left or top edge is shifted right or down to start at 0, then one
   crossing the right or bottom edge is shifted left or up to end at W - 1 or H - 1;
4. its corners are truncated to integers, the inclusive pixel range is cut out and resized to
   80x80 with bilinear interpolation, in BGR channel order, pixel values 0-255 unscaled.

Each model gives the softmax probability of its real class; the score is their mean, as
upstream averages the two models' softmax outputs. 1 is surely live, 0 surely an attack.

    scorer = LivenessScorer(runners)       # one ModelRunner per liveness model, made once
    scores = scorer.score(frame_rgb, faces)  # (N,) float32 in [0, 1]
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from edge_app.adapters import ModelRunner
from edge_app.faces import Faces
from edge_app.manifest import PatchSpec

SPOOF_LOGITS = "spoof_logits"  # output role: each attack class's logit minus the real one's


def real_probability(spoof_logits: np.ndarray) -> np.ndarray:
    """The softmax's real-class probability from the spoof-minus-real logits (..., K).

    softmax_real = e^r / (e^r + sum_k e^(s_k)) = 1 / (1 + sum_k e^(s_k - r)).
    """
    differences = np.clip(np.asarray(spoof_logits, np.float64), -80.0, 80.0)
    return 1.0 / (1.0 + np.exp(differences).sum(axis=-1))


def patch_boxes(boxes: np.ndarray, width: int, height: int, scale: float) -> np.ndarray:
    """Upstream's patch rectangle for each (x1, y1, x2, y2) box in a width x height frame.

    Returns (N, 4) int64 left, top, right, bottom, all inclusive and inside the frame.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x = np.trunc(boxes[:, 0])
    y = np.trunc(boxes[:, 1])
    box_w = np.maximum(np.trunc(boxes[:, 2] - boxes[:, 0] + 1), 1.0)
    box_h = np.maximum(np.trunc(boxes[:, 3] - boxes[:, 1] + 1), 1.0)
    factor = np.minimum(np.minimum((height - 1) / box_h, (width - 1) / box_w), scale)
    new_w, new_h = box_w * factor, box_h * factor
    centre_x, centre_y = box_w / 2 + x, box_h / 2 + y
    left, right = centre_x - new_w / 2, centre_x + new_w / 2
    top, bottom = centre_y - new_h / 2, centre_y + new_h / 2
    # Past the left/top edge: shift right/down so it starts at 0.
    right = np.where(left < 0, right - left, right)
    left = np.maximum(left, 0.0)
    bottom = np.where(top < 0, bottom - top, bottom)
    top = np.maximum(top, 0.0)
    # Then past the right/bottom edge: shift left/up so it ends on the last pixel.
    over_x = np.maximum(right - (width - 1), 0.0)
    left, right = left - over_x, right - over_x
    over_y = np.maximum(bottom - (height - 1), 0.0)
    top, bottom = top - over_y, bottom - over_y
    corners = np.trunc(np.stack([left, top, right, bottom], axis=1)).astype(np.int64)
    # The scale cap keeps every patch inside the frame; clip only rounding noise near 0.
    return np.clip(corners, 0, [width - 1, height - 1, width - 1, height - 1])


def cut_patches(frame: np.ndarray, faces: Faces, patch: PatchSpec) -> np.ndarray:
    """(N, height, width, 3) uint8 patches of an RGB frame, in the channel order `patch` says."""
    rects = patch_boxes(faces.boxes, frame.shape[1], frame.shape[0], patch.scale)
    out = np.empty((len(rects), patch.height, patch.width, 3), np.uint8)
    for index, (left, top, right, bottom) in enumerate(rects):
        region = frame[top : bottom + 1, left : right + 1]
        out[index] = cv2.resize(region, (patch.width, patch.height), interpolation=cv2.INTER_LINEAR)
    return out[..., ::-1] if patch.color == "BGR" else out


class LivenessScorer:
    """The liveness models of one manifest, interpreters made once by the caller."""

    def __init__(self, runners: list[ModelRunner]) -> None:
        if not runners:
            raise ValueError("a liveness scorer needs at least one model")
        for runner in runners:
            if runner.spec.patch is None:
                raise ValueError(f"{runner.spec.file}: no patch geometry in the manifest")
            runner.spec.output(SPOOF_LOGITS)  # fails now, with the file's name, if absent
        self.runners = runners
        self.timings: dict[str, float] = {}

    def model_scores(self, frame: np.ndarray, faces: Faces) -> np.ndarray:
        """(N, models) real-class probability of each face under each model."""
        start = time.perf_counter()
        scores = np.zeros((len(faces), len(self.runners)), np.float64)
        for column, runner in enumerate(self.runners):
            assert runner.spec.patch is not None  # checked in __init__
            patches = np.ascontiguousarray(cut_patches(frame, faces, runner.spec.patch))
            for row in range(len(patches)):
                logits = runner.run(patches[row : row + 1])[SPOOF_LOGITS]
                scores[row, column] = real_probability(logits.reshape(-1))
        self.timings["liveness"] = time.perf_counter() - start
        return scores

    def score(self, frame: np.ndarray, faces: Faces) -> np.ndarray:
        """(N,) float32 liveness per face in [0, 1]: the models' mean real probability."""
        if len(faces) == 0:
            return np.zeros(0, np.float32)
        return self.model_scores(frame, faces).mean(axis=1).astype(np.float32)
