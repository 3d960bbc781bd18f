"""`edge-convert build`'s options and their defaults, in one place: BuildOptions is what the
build runs with, and the command line's defaults and their help text are read from it
(converter.cli), so the two cannot disagree. Kept apart from converter.build so that
`edge-convert --help` does not import the converter."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BuildOptions:
    out: Path
    float_out: Path
    camera: tuple[int, int] = (640, 480)
    min_face: int = 40
    calib: Path | None = None
    lfw: Path | None = None
    facenet: Path | None = None
    edgetpu: bool = False
    frames: int = 200
    crops: int = 3000
    faces: int = 300
    seed: int = 0
    liveness: Path | None = None  # folder of MiniFASNet .pth files; None: no liveness models
    liveness_calib: Path | None = None  # photos for liveness calibration (NUAA frames)
    liveness_frames: int = 240  # photos sampled from liveness_calib for calibration
    drop_liveness: bool = False  # --no-liveness: an earlier build's liveness models may go


def default(name: str) -> Any:
    """BuildOptions' default for the field `name` (KeyError for a field without one)."""
    for field in fields(BuildOptions):
        if field.name == name and field.default is not MISSING:
            return field.default
    raise KeyError(name)
