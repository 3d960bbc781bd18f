"""Calibration data: each network is calibrated on what it sees at run time.

P-Net gets the pyramid levels of door-like frames, R-Net and O-Net the crops the float
cascade passes on, FaceNet aligned face crops. Door-like frames are real photos: one fills
the 640x480 view as background and one or two others are pasted in at the face sizes a
door camera sees (about 40 to 180 px faces at the default settings).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from edge_app.align import face_crops
from edge_app.bounded_read import missing_or_kind
from edge_app.engine import Engine
from edge_app.images import IMAGE_SUFFIXES, ImageError, read_image
from edge_app.lfw import TRAIN_PAIRS, read_pairs
from edge_app.progress import Progress

log = logging.getLogger(__name__)


class CalibrationError(RuntimeError):
    """No usable calibration images."""


def calibration_paths(source: Path) -> list[Path]:
    """LFW's DevTrain images when `source` is an LFW folder (DevTest stays held out for
    validation), otherwise every image below `source`."""
    source = Path(source)
    for root in (source, source / "lfw"):
        if (root / TRAIN_PAIRS).is_file():
            pairs = read_pairs(root / TRAIN_PAIRS)
            return [root / "images" / name for name in pairs.images]
    if not source.is_dir():
        raise CalibrationError(f"calibration folder {source} {missing_or_kind(source, 'folder')}")
    paths = photos_below(source)
    if not paths:
        raise CalibrationError(f"no images below {source}")
    enough(paths, str(source))
    return paths


def photos_below(folder: Path) -> list[Path]:
    """Every file below `folder` whose name is a photo's, sorted, through linked folders too
    (a calibration set assembled from links to other trees), each folder once: a link back
    up the tree is not followed round."""
    seen: set[tuple[int, int]] = set()
    found: list[Path] = []
    for root, folders, files in os.walk(folder, followlinks=True):
        try:
            info = os.stat(root)
        except OSError:
            folders[:] = []
            continue
        if (info.st_dev, info.st_ino) in seen:
            folders[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        found += [Path(root, name) for name in files if Path(name).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found)


PHOTOS_PER_FRAME = 3  # a door frame: a background and up to two faces pasted on it
MIN_FACES = 20  # fewest faces a network is calibrated on (FaceNet, the liveness models)


def read_calibration_photo(path: Path, *, quiet: bool = False) -> np.ndarray | None:
    """A calibration photo as RGB uint8, or None when it cannot be read (not an image, cut
    short, empty, ...: read_image's rules), said in a warning unless `quiet`. What counts as a
    readable calibration photo, for the checks before the build and the calibration alike."""
    try:
        return read_image(path)
    except ImageError as error:
        if not quiet:
            log.warning("skipping calibration image: %s", error)
        return None


def require_readable(paths: list[Path], where: str, needed: int, found: int | None = None) -> None:
    """Refuse, before any model is built, calibration photos of which fewer than `needed`
    can be read. They are decoded in order until `needed` have been (a fraction of a second:
    the calibration reads far more); a refusal has tried them all, so its count is exact.
    `found`: the photos the folder holds, when `paths` is a sample of them."""
    readable = 0
    for path in paths:
        if readable >= needed:
            return
        readable += read_calibration_photo(path, quiet=True) is not None
    if readable >= needed:
        return
    files = len(paths) if found is None else found
    sampled = "" if found is None or found == len(paths) else f" (of the {len(paths)} it uses)"
    raise CalibrationError(
        f"{where}: {files} photo file(s) found, {readable}{sampled} can be read as images; "
        f"the calibration needs at least {needed}: give a folder of at least {needed} readable "
        "photos of faces (JPEG, PNG, BMP, WebP or TIFF), or remove the damaged ones"
    )


def enough(paths: list[Path], where: str) -> None:
    """Refuse fewer calibration photos than one door frame is made of."""
    if len(paths) < PHOTOS_PER_FRAME:
        raise CalibrationError(
            f"{where}: {len(paths)} calibration image(s); a door frame is made of "
            f"{PHOTOS_PER_FRAME} photos (a background and faces pasted on it): give at least "
            f"{PHOTOS_PER_FRAME}, ideally hundreds"
        )


def _cover(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize to cover width x height and centre-crop: a background for a door frame."""
    scale = max(width / image.shape[1], height / image.shape[0])
    resized = cv2.resize(
        image, (int(np.ceil(image.shape[1] * scale)), int(np.ceil(image.shape[0] * scale)))
    )
    top = (resized.shape[0] - height) // 2
    left = (resized.shape[1] - width) // 2
    return resized[top : top + height, left : left + width].copy()


def door_frames(
    paths: list[Path], camera: tuple[int, int], count: int, seed: int = 0
) -> list[np.ndarray]:
    width, height = camera
    enough(paths, "door frames")
    # A pasted face fits inside the frame's shorter side (a portrait camera too): 100 px or
    # more where the frame allows it, under 92% of that side.
    longest = max(2, int(min(width, height) * 0.92))
    rng = np.random.default_rng(seed)
    frames = []
    for _ in Progress(range(count), desc="door frames", unit="frame", leave=False, disable=None):
        picks = rng.choice(len(paths), size=PHOTOS_PER_FRAME, replace=False)
        background = read_calibration_photo(paths[picks[0]])
        if background is None:
            continue
        frame = _cover(background, width, height)
        for index in picks[1 : 1 + rng.integers(1, PHOTOS_PER_FRAME)]:
            face = read_calibration_photo(paths[index])
            if face is None:
                break
            side = int(rng.integers(min(100, longest // 2), longest))
            face = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
            x = int(rng.integers(0, width - side + 1))
            y = int(rng.integers(0, height - side + 1))
            frame[y : y + side, x : x + side] = face
        else:
            frames.append(frame)
    return frames


def cascade_inputs(
    engine: Engine, frames: list[np.ndarray], limit: int, seed: int = 0
) -> dict[str, list[np.ndarray]]:
    """What each cascade network is fed while the float engine detects on `frames`.

    Keys: "pnet@<scale>" (pyramid levels), "rnet" and "onet" (crops), each a list of
    batch-1 uint8 arrays, at most `limit` per key, sampled evenly.
    """
    seen: dict[str, list[np.ndarray]] = defaultdict(list)

    def record(stage: str, batch: np.ndarray) -> None:
        seen[stage].extend(batch[i : i + 1] for i in range(len(batch)))

    engine.cascade.record = record
    try:
        for frame in Progress(
            frames, desc="float cascade", unit="frame", leave=False, disable=None
        ):
            engine.detect(frame)
    finally:
        engine.cascade.record = None
    rng = np.random.default_rng(seed)
    sampled = {}
    for stage, items in seen.items():
        if len(items) > limit:
            items = [items[i] for i in sorted(rng.choice(len(items), limit, replace=False))]
        sampled[stage] = items
    return sampled


def aligned_faces(
    engine: Engine, paths: list[Path], count: int, progress: str = "aligned faces"
) -> list[np.ndarray]:
    """FaceNet inputs: the most confident face of each photo, cropped as at run time."""
    crops: list[np.ndarray] = []
    for path in Progress(paths, desc=progress, unit="image", leave=False, disable=None):
        if len(crops) >= count:
            break
        frame = read_calibration_photo(path)
        if frame is None:
            continue
        faces = engine.detect(frame)
        if len(faces):
            crops.append(face_crops(frame, faces[int(np.argmax(faces.scores))], engine.crop_margin))
    return crops
