"""Door-camera visits made from still photos: the clips `edge-app eval visits` plays to the door.

One visit is one short clip. The person walks in from the side while approaching the
camera (the face grows from FAR_SCALE to NEAR_SCALE of the photo's size), then stands at the
door swaying a little. When a visit has several photos of the person, the clip cuts from one
to the next at equal intervals, as a head turns and the light changes between frames. Light
sensor noise is added to every frame.

The background is drawn (a wall and a door frame), so a clip holds no image beyond the
photos themselves. Each clip records the clip time at which the whole face is first in the
frame: the moment "time to unlock" is measured from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_app.images import read_image

SIZE = (640, 480)  # width, height: the daemon's detection frame
FPS = 10.0
# Relative to a 250 px LFW photo: at 1.3 it holds a face about 130 px wide (about a metre
# from a door camera), at 0.8 about 80 px (two metres).
NEAR_SCALE = 1.3
FAR_SCALE = 0.8
WALK_SECONDS = 0.8  # from outside the frame to the centre line
APPROACH_SECONDS = 1.5  # from entering to standing at NEAR_SCALE
STAY_SECONDS = 1.7  # standing in front of the door after the approach
SWAY_PX = 8.0
SWAY_PERIOD_S = 1.7
NOISE_SIGMA = 2.0
# The face occupies roughly the middle half of an LFW photo (a Viola-Jones crop).
FACE_REGION = (0.25, 0.75)


@dataclass(frozen=True)
class VisitClip:
    path: Path
    fps: float
    frames: int
    appear: float  # first clip time at which the whole face is in the frame


def background(size: tuple[int, int] = SIZE, seed: int = 0) -> np.ndarray:
    """An RGB hallway: a shaded wall with plaster texture, a door and its frame."""
    width, height = size
    rng = np.random.default_rng(seed)
    shade = np.linspace(205, 160, height, dtype=np.float32)[:, None, None]
    wall = shade * np.array([1.0, 0.97, 0.9], np.float32)
    wall = wall + rng.normal(0, 4, (height, width, 1)).astype(np.float32)
    image = np.clip(np.broadcast_to(wall, (height, width, 3)), 0, 255).astype(np.uint8)
    image = np.ascontiguousarray(image)
    left, right = int(width * 0.3), int(width * 0.7)
    cv2.rectangle(image, (left - 14, int(height * 0.05)), (right + 14, height), (110, 80, 55), -1)
    cv2.rectangle(image, (left, int(height * 0.08)), (right, height), (150, 115, 80), -1)
    cv2.circle(image, (right - 30, int(height * 0.6)), 8, (200, 180, 90), -1)
    return image


def head(photo: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(RGB head image, float alpha in [0, 1]) at size x size px, a feathered oval around
    the face."""
    rgb = cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA)
    alpha = np.zeros((size, size), np.float32)
    cv2.ellipse(
        alpha, (size // 2, size // 2), (int(size * 0.36), int(size * 0.46)), 0, 0, 360, 1.0, -1
    )
    blurred = cv2.GaussianBlur(alpha, (0, 0), max(size * 0.03, 0.5))
    return rgb, np.asarray(blurred, np.float32)


def paste(canvas: np.ndarray, image: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend image onto canvas with its top-left at (x, y), clipped to the canvas."""
    height, width = canvas.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + image.shape[1], width), min(y + image.shape[0], height)
    if x0 >= x1 or y0 >= y1:
        return
    part = image[y0 - y : y1 - y, x0 - x : x1 - x].astype(np.float32)
    a = alpha[y0 - y : y1 - y, x0 - x : x1 - x, None]
    region = canvas[y0:y1, x0:x1].astype(np.float32)
    canvas[y0:y1, x0:x1] = (part * a + region * (1 - a)).astype(np.uint8)


def pose_at(t: float, photo_width: int, frame_width: int) -> tuple[float, float, float]:
    """(head size px, left x, vertical offset px) at clip time t."""
    grow = min(t / APPROACH_SECONDS, 1.0)
    scale = FAR_SCALE + (NEAR_SCALE - FAR_SCALE) * (1 - (1 - grow) ** 2)  # eases in
    size = photo_width * scale
    centre = (frame_width - size) / 2
    if t < WALK_SECONDS:
        x = -size + (centre + size) * t / WALK_SECONDS
    else:
        x = centre + SWAY_PX * np.sin(2 * np.pi * (t - WALK_SECONDS) / SWAY_PERIOD_S)
    bob = 3.0 * np.sin(2 * np.pi * t / 0.9)  # steps
    return size, x, bob


def build_visit(
    path: Path,
    photos: Sequence[Path],
    *,
    seed: int = 0,
    fps: float = FPS,
    size: tuple[int, int] = SIZE,
) -> VisitClip:
    """Write one visit (MJPG .avi) of the person in `photos`, cutting between them."""
    if not photos:
        raise ValueError("a visit needs at least one photo")
    stills = [read_image(p) for p in photos]
    frames = round((APPROACH_SECONDS + STAY_SECONDS) * fps)
    width, height = size
    wall = background(size, seed)
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MJPG to {path}")
    appear: float | None = None
    try:
        for index in range(frames):
            t = index / fps
            still = stills[min(index * len(stills) // frames, len(stills) - 1)]
            side, x, bob = pose_at(t, still.shape[1], width)
            px = max(int(round(side)), 8)
            image, alpha = head(still, px)
            y = int(height * 0.42 - px / 2 + bob)
            canvas = wall.copy()
            paste(canvas, image, alpha, int(round(x)), y)
            if appear is None and x + FACE_REGION[0] * px >= 0:
                appear = t
            noise = rng.normal(0, NOISE_SIGMA, canvas.shape).astype(np.float32)
            canvas = np.clip(canvas.astype(np.float32) + noise, 0, 255).astype(np.uint8)
            writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    if appear is None:
        raise ValueError("the face never fully enters the clip")
    return VisitClip(path, fps, frames, appear)
