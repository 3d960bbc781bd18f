"""Reading photos from disk into the engine's frame convention: RGB uint8, (H, W, 3)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from edge_app.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class ImageError(UserError):
    """A file that is not a readable, complete image."""


def _truncated_jpeg(data: bytes) -> bool:
    # libjpeg pads a cut-off file with grey and only warns; the end-of-image marker tells.
    return data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:].rstrip(b"\x00")


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    if not data:
        raise ImageError(f"{name}: empty file")
    if _truncated_jpeg(data):
        raise ImageError(f"{name}: truncated JPEG (no end-of-image marker)")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f"{name}: not an image OpenCV can decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_image(path: Path | str) -> np.ndarray:
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image") from None
    except OSError as error:
        raise ImageError(f"{path}: cannot read ({error.strerror or error})") from None
    return decode_image(data, str(path))


def expand_image_paths(paths: Iterable[Path | str]) -> Iterator[Path]:
    """Files as given, and the images inside folders (sorted, one level deep)."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path
