"""Whether the camera shows a picture the door can work with.

A camera can deliver fresh frames and still show nothing: a lens covered by tape, a cap or a
hand, or a door at night without light or infrared. The door then lets nobody in, and
without this check it would still report a healthy camera. Every CHECK_SECONDS the frame is
shrunk to SAMPLE_SIZE by area averaging (which also averages sensor noise away) and judged:

- **dark**: its mean grey level is under DARK_MEAN (of 255). Measured on NUAA webcam frames
  darkened with sensor noise added (`python -m benchmarks.picture`, docs/DAEMON.md): at a mean
  of 10 the detector found a face in 18 of 98 frames, at 15 in 63, at 26 in 96.
- **featureless**: the spread (standard deviation) of its grey levels is under FLAT_SPREAD: a
  covered lens, or a camera facing a blank surface. Every real photo measured spreads over 22.

A problem is reported only once it has lasted HOLD_SECONDS (a coat passing close to the
lens is not a covered camera), and cleared at the first good picture.
"""

from __future__ import annotations

import cv2
import numpy as np

SAMPLE_SIZE = (80, 60)  # width, height of the frame as judged
DARK_MEAN = 12.0
FLAT_SPREAD = 4.0
CHECK_SECONDS = 1.0
HOLD_SECONDS = 10.0
DARK, FEATURELESS = "dark", "featureless"
# What each problem means for the household, and what to do about it: ADVICE follows a log
# line that already names the problem, EXPLAIN stands alone (the hub, the web page, doctor).
ADVICE = {
    DARK: "faces cannot be found; light the door or use an infrared camera",
    FEATURELESS: "is the lens covered?",
}
EXPLAIN = {
    DARK: f"the camera picture is dark: {ADVICE[DARK]}",
    FEATURELESS: f"the camera picture shows nothing: {ADVICE[FEATURELESS]}",
}


def grey_levels(image: np.ndarray) -> tuple[float, float]:
    """(mean, spread) of an RGB (or grey) uint8 frame's grey levels at SAMPLE_SIZE."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, SAMPLE_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
    return float(small.mean()), float(small.std())


def picture_problem(image: np.ndarray) -> str | None:
    """DARK, FEATURELESS or None for an RGB (or grey) uint8 frame."""
    mean, spread = grey_levels(image)
    if mean < DARK_MEAN:
        return DARK
    if spread < FLAT_SPREAD:
        return FEATURELESS
    return None


class PictureWatch:
    """The door's running judgement of its picture, on the frames' own clock (clip time for
    a recording, so a clip gives the same result on any machine)."""

    def __init__(self, hold_seconds: float = HOLD_SECONDS) -> None:
        self.hold_seconds = hold_seconds
        self.reported: str | None = None  # the problem now reported, if any
        self._next_check = -np.inf
        self._seen: str | None = None  # the problem the last check saw
        self._since = 0.0  # when the last check's problem began

    def update(self, image: np.ndarray, now: float) -> bool:
        """Judge `image` if a check is due; True when `reported` changed."""
        if now < self._next_check:
            return False
        self._next_check = now + CHECK_SECONDS
        seen = picture_problem(image)
        if seen != self._seen:
            self._seen, self._since = seen, now
        # A problem too new to report keeps what is reported (nothing, or the last problem).
        held = seen is None or now - self._since >= self.hold_seconds
        reported = seen if held else self.reported
        if reported == self.reported:
            return False
        self.reported = reported
        return True
