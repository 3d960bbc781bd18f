"""Face crops exactly as the FaceNet 2018 weights were evaluated (docs/ACCURACY.md).

The published pipeline takes the MTCNN box, adds a crop margin, clips it to the image, and
stretches that rectangle to 160x160, with no rotation. The margin was 44 px on LFW-sized
faces; here it is a fraction of the box width so a door camera's smaller and larger faces
get the same framing. No pixel arithmetic: the int8 model's input quantisation is the
fixed standardisation (x - 127.5) / 128.
"""

from __future__ import annotations

import numpy as np

from edge_app.detection.boxes import clip
from edge_app.detection.crops import crop_resize
from edge_app.faces import Faces

FACENET_SIZE = 160


def grown_boxes(boxes: np.ndarray, crop_margin: float, width: int, height: int) -> np.ndarray:
    """Boxes grown by crop_margin x box width in total (half each side), clipped to the image."""
    grow = (boxes[:, 2:3] - boxes[:, 0:1]) * crop_margin / 2
    return clip(boxes + np.hstack([-grow, -grow, grow, grow]), width, height)


def face_crops(frame: np.ndarray, faces: Faces, crop_margin: float, size: int = FACENET_SIZE):
    """(N, size, size, 3) uint8 RGB crops ready for the FaceNet model."""
    height, width = frame.shape[:2]
    return crop_resize([(1.0, frame)], grown_boxes(faces.boxes, crop_margin, width, height), size)
