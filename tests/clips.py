"""Door-camera clips built from real LFW photos, for the end-to-end tests and the demo.

A visit: the photo (the person's head, feathered into an oval) slides in from the left as
someone walking up to the door, stays a few seconds with a little sway and sensor noise,
then walks out to the right. The builder records, per visit, the clip time at which the
face is first entirely in view: the "first appears" of the unlock-latency target.

The background is drawn (a wall and a door frame) rather than photographed, so the committed
demo clip contains no image beyond the LFW photos themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# The hallway and the pasting are the product's own (edge_app.visit_clips: eval visits).
from edge_app.visit_clips import SIZE, background, paste

FPS = 10.0
HEAD_SCALE = 1.3  # a 250 px LFW photo becomes 325 px: a face about 130 px wide
WALK_SECONDS = 0.8
# The face occupies roughly the middle half of an LFW photo (a Viola-Jones crop).
FACE_REGION = (0.25, 0.75)


@dataclass(frozen=True)
class Visit:
    photo: Path
    start: float  # clip time the person starts walking in
    stay: float = 2.5  # seconds standing in front of the door


@dataclass(frozen=True)
class Clip:
    path: Path
    fps: float
    frames: int
    appear: list[float]  # per visit: first clip time the whole face is in the frame
    gone: list[float]  # per visit: first clip time after it left the frame entirely

    @property
    def duration(self) -> float:
        return self.frames / self.fps


def head(photo: Path, scale: float = HEAD_SCALE) -> tuple[np.ndarray, np.ndarray]:
    """(RGB head image, float alpha in [0, 1]) with a feathered oval around the face."""
    bgr = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(photo)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    size = round(rgb.shape[1] * scale)
    rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)
    alpha = np.zeros((size, size), np.float32)
    cv2.ellipse(
        alpha, (size // 2, size // 2), (int(size * 0.36), int(size * 0.46)), 0, 0, 360, 1.0, -1
    )
    alpha = cv2.GaussianBlur(alpha, (0, 0), size * 0.03)
    return rgb, alpha


def _position(visit: Visit, t: float, size: int, frame_width: int) -> float | None:
    """Left x of the head at clip time t, or None when the person is not in the frame."""
    centre = (frame_width - size) / 2
    outside_left, outside_right = -size, frame_width
    local = t - visit.start
    if local < 0:
        return None
    if local < WALK_SECONDS:
        return outside_left + (centre - outside_left) * local / WALK_SECONDS
    local -= WALK_SECONDS
    if local < visit.stay:
        return centre + 6 * np.sin(2 * np.pi * local / 1.7)  # a little sway
    local -= visit.stay
    if local < WALK_SECONDS:
        return centre + (outside_right - centre) * local / WALK_SECONDS
    return None


def build_clip(
    path: Path,
    visits: list[Visit],
    *,
    duration: float | None = None,
    fps: float = FPS,
    size: tuple[int, int] = SIZE,
    fourcc: str = "MJPG",
    seed: int = 0,
    head_scale: float = HEAD_SCALE,
) -> Clip:
    """Write the clip to `path` (MJPG .avi by default; "mp4v" for a small .mp4).

    head_scale: size of a 250 px LFW photo in the clip, relative to its own size.
    """
    end = max(v.start + v.stay + 2 * WALK_SECONDS for v in visits) + 0.5
    frames = round((duration or end) * fps)
    width, height = size
    heads = [head(v.photo, head_scale) for v in visits]
    wall = background(size, seed)
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {fourcc} to {path}")
    appear: list[float | None] = [None] * len(visits)
    gone: list[float | None] = [None] * len(visits)
    try:
        for index in range(frames):
            t = index / fps
            canvas = wall.copy()
            for number, (visit, (image, alpha)) in enumerate(zip(visits, heads, strict=True)):
                size_px = image.shape[1]
                x = _position(visit, t, size_px, width)
                if x is None:
                    if appear[number] is not None and gone[number] is None:
                        gone[number] = t
                    continue
                y = int(height * 0.42 - size_px / 2)
                paste(canvas, image, alpha, int(round(x)), y)
                face_left = x + FACE_REGION[0] * size_px
                face_right = x + FACE_REGION[1] * size_px
                if appear[number] is None and face_left >= 0 and face_right <= width:
                    appear[number] = t
            noise = rng.normal(0, 2.0, canvas.shape).astype(np.float32)
            canvas = np.clip(canvas.astype(np.float32) + noise, 0, 255).astype(np.uint8)
            writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    if any(a is None for a in appear):
        raise ValueError("a visit never fully enters the clip: lengthen it")
    return Clip(
        path,
        fps,
        frames,
        [float(a) for a in appear if a is not None],
        [float(g) if g is not None else frames / fps for g in gone],
    )
