"""MTCNN: P-Net proposes windows over the pyramid, R-Net prunes, O-Net finalises.

One cascade serves every model set the manifest can describe (int8 CPU, Edge TPU, float
reference): the stages only see ModelRunners that take pixels and give float outputs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_app.adapters import ModelRunner
from edge_app.detection.boxes import nms, nms_nested, regress, square
from edge_app.detection.crops import crop_resize
from edge_app.detection.pyramid import (
    DEFAULT_FACTOR,
    PNET_CELL,
    PNET_STRIDE,
    build_levels,
    level_shape,
    pyramid_scales,
)
from edge_app.faces import Faces

RNET_SIZE = 24
ONET_SIZE = 48


@dataclass(frozen=True)
class Thresholds:
    """Face-probability thresholds per stage and the NMS IoU limits between stages.

    The defaults are those of the `mtcnn` package whose weights these are (0.6, 0.7, 0.8);
    the converter lowers the int8 ones just enough to keep what the float stages keep.
    """

    pnet: float = 0.6
    rnet: float = 0.7
    onet: float = 0.8
    nms_scale: float = 0.5
    nms_pnet: float = 0.7
    nms_rnet: float = 0.7
    nms_onet: float = 0.7

    @classmethod
    def from_mapping(cls, values: dict[str, float]) -> Thresholds:
        known = {k: float(v) for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _logit(probability: float) -> float:
    """The models output log-odds; comparing there spares a sigmoid over every map cell."""
    p = min(max(probability, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


class Cascade:
    """Detects faces in RGB uint8 frames.

    pnet_for(height, width) returns the runner for one pyramid level's shape; the engine
    decides whether that is a fixed per-scale model (Edge TPU) or a resized one (CPU).
    """

    def __init__(
        self,
        pnet_for: Callable[[int, int], ModelRunner],
        rnet: ModelRunner,
        onet: ModelRunner,
        min_face: float,
        thresholds: Thresholds | None = None,
        factor: float = DEFAULT_FACTOR,
        scales: list[float] | None = None,
    ) -> None:
        self.pnet_for = pnet_for
        self.rnet = rnet
        self.onet = onet
        self.min_face = float(min_face)
        self.thresholds = thresholds or Thresholds()
        self.factor = factor
        self._fixed_scales = scales
        self.timings: dict[str, float] = {}
        # Called with (stage, model input batch): how the converter gathers calibration data
        # from exactly what each network sees at run time.
        self.record: Callable[[str, np.ndarray], None] | None = None

    def scales(self, width: int, height: int) -> list[float]:
        if self._fixed_scales is not None:
            return self._fixed_scales
        return pyramid_scales(width, height, self.min_face, self.factor)

    def detect(self, frame: np.ndarray) -> Faces:
        timings = self.timings
        timings.clear()
        height, width = frame.shape[:2]
        start = time.perf_counter()
        levels = build_levels(frame, self.scales(width, height))
        timings["pyramid"] = time.perf_counter() - start
        boxes, scores = self._propose(levels, width, height)
        all_levels = [(1.0, frame), *levels]
        if len(boxes):
            boxes, scores = self._refine(all_levels, boxes)
        if len(boxes) == 0:
            return Faces.empty()
        return self._finalise(all_levels, boxes)

    def _propose(self, levels, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """P-Net over every level; boxes that survive per-level and cross-level NMS."""
        t = self.thresholds
        cut = _logit(t.pnet)
        found_boxes, found_scores, found_offsets, found_level = [], [], [], []
        start = time.perf_counter()
        for index, (scale, image) in enumerate(levels):
            h, w = level_shape(width, height, scale)
            if self.record:
                self.record(f"pnet@{scale:.6f}", image[None])
            out = self.pnet_for(h, w).run(image[None])
            logits = out["score"][0, :, :, 0]
            ys, xs = np.nonzero(logits > cut)
            if len(ys) == 0:
                continue
            corners = np.column_stack([xs, ys]).astype(np.float32) * PNET_STRIDE
            found_boxes.append(np.hstack([corners, corners + PNET_CELL]) / scale)
            found_scores.append(logits[ys, xs])
            found_offsets.append(out["box"][0, ys, xs])
            found_level.append(np.full(len(ys), index))
        timings = self.timings
        timings["pnet"] = time.perf_counter() - start
        start = time.perf_counter()
        if not found_boxes:
            timings["nms"] = time.perf_counter() - start
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        boxes = np.concatenate(found_boxes).astype(np.float32)
        scores = np.concatenate(found_scores)
        offsets = np.concatenate(found_offsets)
        keep = nms(boxes, scores, t.nms_scale, groups=np.concatenate(found_level))
        boxes, scores, offsets = boxes[keep], scores[keep], offsets[keep]
        keep = nms(boxes, scores, t.nms_pnet)
        boxes = square(regress(boxes[keep], offsets[keep]))
        timings["nms"] = time.perf_counter() - start
        return boxes, _sigmoid(scores[keep])

    def _crops(self, stage: str, levels, boxes: np.ndarray, size: int) -> np.ndarray:
        crops = crop_resize(levels, boxes, size)
        if self.record:
            self.record(stage, crops)
        return crops

    def _run_crops(self, runner: ModelRunner, crops: np.ndarray) -> dict[str, np.ndarray]:
        """Batch-1 models (as the Edge TPU needs) invoked crop by crop; outputs stacked."""
        results = [runner.run(crop[None]) for crop in crops]
        return {role: np.concatenate([r[role] for r in results]) for role in results[0]}

    def _refine(self, levels, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = self.thresholds
        start = time.perf_counter()
        out = self._run_crops(self.rnet, self._crops("rnet", levels, boxes, RNET_SIZE))
        logits = out["score"][:, 0]
        passed = logits > _logit(t.rnet)
        boxes, logits, offsets = boxes[passed], logits[passed], out["box"][passed]
        keep = nms(boxes, logits, t.nms_rnet)
        boxes = square(regress(boxes[keep], offsets[keep]))
        self.timings["rnet"] = time.perf_counter() - start
        return boxes, _sigmoid(logits[keep])

    def _finalise(self, levels, boxes: np.ndarray) -> Faces:
        t = self.thresholds
        start = time.perf_counter()
        out = self._run_crops(self.onet, self._crops("onet", levels, boxes, ONET_SIZE))
        logits = out["score"][:, 0]
        passed = logits > _logit(t.onet)
        boxes, logits = boxes[passed], logits[passed]
        offsets, points = out["box"][passed], out["landmarks"][passed]
        size = boxes[:, 2:] - boxes[:, :2]
        # O-Net gives x1..x5 then y1..y5 as fractions of the box it was shown
        landmarks = np.stack(
            [
                boxes[:, None, 0] + points[:, :5] * size[:, None, 0],
                boxes[:, None, 1] + points[:, 5:] * size[:, None, 1],
            ],
            axis=2,
        ).astype(np.float32)
        boxes = regress(boxes, offsets)
        keep = nms_nested(boxes, logits, t.nms_onet)
        self.timings["onet"] = time.perf_counter() - start
        return Faces(boxes[keep], _sigmoid(logits[keep]), landmarks[keep])
