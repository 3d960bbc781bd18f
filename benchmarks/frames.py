"""Deterministic 640x480 benchmark frames: real LFW faces composited onto a real photo.

Every system in a run sees exactly these pixels, so a difference in speed is a difference in
the system and not in the input. The background is a real photograph with no face in it
(shared/data/detection/negatives/frame_000100.jpg, an indoor table scene), so the 0-face frames
measure what a detector costs on an empty doorway rather than on a flat colour that P-Net
rejects for free. Faces are whole LFW photos feathered into an oval (a head, not a pasted
rectangle with hard edges a detector could key on), with a little per-frame sway and sensor
noise so consecutive frames differ as a live camera's do while a tracker can still follow them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SIZE = (640, 480)  # (width, height): the detection frame the daemon uses
BACKGROUND = Path("detection/negatives/frame_000100.jpg")
# One enrolled person (in the 1-face frames and in the middle of the 3-face frames) and two
# strangers; each has at least 5 LFW photos, so enrolment never uses the photo in the frames.
ENROLLED = "Paul_Wolfowitz"
STRANGERS = ("Jennifer_Lopez", "Hans_Blix")
FRAME_PHOTO = 0  # the person's first photo (in name order) goes into the frames
ENROLL_PHOTOS = (1, 2, 3)  # the next three are the enrolment samples
# Head placements as (centre x, centre y, photo scale). A 250 px LFW photo at scale 1.3 holds a
# face about 130 px wide: someone a metre from a door camera. Three people stand further back.
ONE_FACE = ((320, 230, 1.3),)
THREE_FACES = ((118, 240, 0.92), (320, 230, 0.92), (522, 240, 0.92))
SWAY_PIXELS = 3.0
NOISE_SIGMA = 2.0
CONDITIONS = ("0", "1", "3")  # faces per frame
PEOPLE = {"0": [], "1": [ENROLLED], "3": [STRANGERS[0], ENROLLED, STRANGERS[1]]}


@dataclass(frozen=True)
class FrameSet:
    """frames[condition] is (N, 480, 640, 3) uint8 RGB; enroll holds (K, H, W, 3) RGB photos."""

    frames: dict[str, np.ndarray]
    enroll: np.ndarray
    enrolled_name: str
    people: dict[str, list[str]]


def lfw_photo(lfw_images: Path, name: str, number: int) -> np.ndarray:
    """The person's `number`-th photo in name order (this LFW subset skips numbers)."""
    path = sorted((lfw_images / name).glob("*.jpg"))[number]
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(path)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def background(data: Path, size: tuple[int, int] = SIZE) -> np.ndarray:
    bgr = cv2.imread(str(data / BACKGROUND), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(data / BACKGROUND)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)


def head(photo: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(RGB head, float alpha): the photo scaled, inside a feathered oval around its face."""
    size = round(photo.shape[1] * scale)
    rgb = cv2.resize(photo, (size, size), interpolation=cv2.INTER_LINEAR)
    alpha = np.zeros((size, size), np.float32)
    axes = (int(size * 0.36), int(size * 0.46))
    cv2.ellipse(alpha, (size // 2, size // 2), axes, 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), size * 0.03)
    return rgb, alpha


def paste(canvas: np.ndarray, image: np.ndarray, alpha: np.ndarray, cx: float, cy: float) -> None:
    """Alpha-blend image centred at (cx, cy), clipped to the canvas, in place."""
    h, w = alpha.shape
    x, y = round(cx - w / 2), round(cy - h / 2)
    x1, y1 = max(x, 0), max(y, 0)
    x2, y2 = min(x + w, canvas.shape[1]), min(y + h, canvas.shape[0])
    if x2 <= x1 or y2 <= y1:
        return
    a = alpha[y1 - y : y2 - y, x1 - x : x2 - x, None]
    src = image[y1 - y : y2 - y, x1 - x : x2 - x].astype(np.float32)
    dst = canvas[y1:y2, x1:x2].astype(np.float32)
    canvas[y1:y2, x1:x2] = np.clip(a * src + (1 - a) * dst, 0, 255).astype(np.uint8)


def compose(
    base: np.ndarray,
    heads: list[tuple[np.ndarray, np.ndarray]],
    places: tuple[tuple[int, int, float], ...],
    index: int,
    seed: int,
) -> np.ndarray:
    """Frame `index` of a sequence: each head swaying on its own slow sine, plus noise."""
    rng = np.random.default_rng(seed * 1000 + index)
    canvas = base.copy()
    for number, ((rgb, alpha), (cx, cy, _)) in enumerate(zip(heads, places, strict=True)):
        phase = index * 0.7 + number * 2.1
        paste(
            canvas,
            rgb,
            alpha,
            cx + SWAY_PIXELS * np.sin(phase),
            cy + SWAY_PIXELS * np.cos(phase * 0.8),
        )
    noisy = canvas.astype(np.float32) + rng.normal(0, NOISE_SIGMA, canvas.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def build(data: Path, count: int = 20) -> FrameSet:
    """`count` frames per condition (0, 1 and 3 faces), and the enrolment photos."""
    lfw = data / "lfw" / "images"
    base = background(data)
    people = PEOPLE
    places = {"0": (), "1": ONE_FACE, "3": THREE_FACES}
    frames: dict[str, np.ndarray] = {}
    for seed, condition in enumerate(CONDITIONS):
        heads = [
            head(lfw_photo(lfw, name, FRAME_PHOTO), scale)
            for name, (_, _, scale) in zip(people[condition], places[condition], strict=True)
        ]
        frames[condition] = np.stack(
            [compose(base, heads, places[condition], i, seed) for i in range(count)]
        )
    enroll = np.stack([lfw_photo(lfw, ENROLLED, n) for n in ENROLL_PHOTOS])
    return FrameSet(frames, enroll, ENROLLED, people)


def save(frame_set: FrameSet, folder: Path) -> None:
    """One .npy per condition, so every worker sees byte-identical frames and a peak-RSS run can
    memory-map just the few frames it uses."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "enroll.npy", frame_set.enroll)
    for condition, frames in frame_set.frames.items():
        np.save(folder / f"frames_{condition}.npy", frames)


def load(folder: Path, limit: int | None = None) -> FrameSet:
    """The saved frames, all of them or the first `limit` of each condition."""
    frames = {}
    for condition in CONDITIONS:
        mapped = np.load(folder / f"frames_{condition}.npy", mmap_mode="r")
        frames[condition] = np.array(mapped[:limit])
    enroll = np.load(folder / "enroll.npy")
    return FrameSet(frames, enroll, ENROLLED, PEOPLE)
