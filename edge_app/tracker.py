"""Frame-to-frame face tracks by box overlap, so an identified face is not re-embedded each frame.

The embedding is the expensive step (about 40-60 ms per face on an Edge TPU, more on a Pi's
CPU) while detection runs every frame anyway; IoU between consecutive detections is enough to
follow a person walking up to a door at 10 fps. A track is embedded on every frame until the
policy has settled it (recognised or unknown), then only every `refresh_frames` frames, which
still catches an identity switch (two people crossing) within a second.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from dataclasses import dataclass
from statistics import median

import numpy as np

from edge_app.config import TrackingConfig
from edge_app.detection.boxes import iou_matrix

log = logging.getLogger(__name__)

# A gap between frames longer than this (or than max_missed + 1 frames at the rate frames
# have been arriving, if longer) ends every track: the camera stalled or reconnected, and
# whoever stands at the door afterwards is a new visit, not the face of before.
TRACK_GAP_SECONDS = 1.0
# The rate frames arrive at is the median of this many of the latest intervals between them,
# every interval counted, those that ended the tracks too: frames that always come more than
# TRACK_GAP_SECONDS apart (camera.fps under 1, a slow CPU) are the rate after a few of them,
# not an outage at every frame, while one outage is not taken for the rate.
RATE_INTERVALS = 9


def greedy_assign(scores: np.ndarray, minimum: float) -> list[tuple[int, int]]:
    """(row, col) pairs, best score first, each row and column used once, all >= minimum.

    Greedy on IoU gives the same answer as an optimal assignment whenever faces do not
    overlap each other, which is the case at a door; it needs no scipy on the device. Only
    the pairs at or above `minimum` are sorted (few: boxes that overlap), so a frame full of
    detections costs a sort, not a scan of the whole matrix per pair; ties go to the first
    pair in row-major order. A NaN score is never >= minimum, so it never pairs.
    """
    scores = np.asarray(scores, np.float32)
    rows, cols = np.nonzero(scores >= minimum)
    order = np.argsort(-scores[rows, cols], kind="stable")
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for row, col in zip(rows[order].tolist(), cols[order].tolist(), strict=True):
        if row in used_rows or col in used_cols:
            continue
        pairs.append((row, col))
        used_rows.add(row)
        used_cols.add(col)
    return pairs


@dataclass(eq=False)
class Track:
    """One face followed across frames. Frame numbers count the tracker's update() calls."""

    track_id: int
    box: np.ndarray
    first_frame: int
    last_frame: int
    missed: int = 0
    embedded_frame: int | None = None
    settled: bool = False
    behind_frame: int | None = None  # the last frame it was seen behind another face

    def needs_embedding(self, frame: int, refresh_frames: int) -> bool:
        if self.embedded_frame is None or not self.settled:
            return True
        return frame - self.embedded_frame >= refresh_frames


class IoUTracker:
    """Tracks as `[tracking]` describes them; configure() changes the rules in place."""

    def __init__(self, config: TrackingConfig | None = None) -> None:
        self.frame = -1
        self.tracks: list[Track] = []
        self._ids = itertools.count(1)
        self._at: float | None = None  # the last frame's time
        # the latest times between frames (RATE_INTERVALS of them)
        self._intervals: deque[float] = deque(maxlen=RATE_INTERVALS)
        self._size: tuple[int, int] | None = None  # the last frame's (width, height)
        self.configure(config or TrackingConfig())

    def configure(self, config: TrackingConfig) -> None:
        """New rules from the next frame (SIGHUP); the current tracks are kept."""
        self.config = config
        self.iou = config.iou
        self.max_missed = config.max_missed
        self.refresh_frames = config.refresh_frames

    def update(
        self,
        boxes: np.ndarray,
        at: float | None = None,
        size: tuple[int, int] | None = None,
    ) -> tuple[list[Track], list[Track]]:
        """Advance one frame with its detections.

        Returns the track of each box (same order) and the tracks that ended this frame:
        those unseen for more than `max_missed` frames, so a detector that misses a face for
        a frame or two does not split a visit into two tracks (and two unlock decisions).

        at: the frame's time in seconds; after a gap (gap_seconds) every track ends first.
        size: the frame's (width, height); a frame of another size than the last (a camera
        that came back at another resolution) shows the same view, so the tracks' boxes
        are scaled to it rather than ended and started again as new visits.
        """
        self.frame += 1
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        gap = self._after_gap(at)
        self._scale_to(size)
        previous = np.array([t.box for t in self.tracks], np.float32).reshape(-1, 4)
        pairs = greedy_assign(iou_matrix(previous, boxes), self.iou)
        matched: list[Track | None] = [None] * len(boxes)
        for row, col in pairs:
            track = self.tracks[row]
            track.box, track.last_frame, track.missed = boxes[col], self.frame, 0
            matched[col] = track
        seen = {id(track) for track in matched if track is not None}
        ended: list[Track] = []
        alive: list[Track] = []
        for track in self.tracks:
            if id(track) not in seen:
                track.missed += 1
                if track.missed > self.max_missed:
                    ended.append(track)
                    continue
            alive.append(track)
        result: list[Track] = []
        for col, found in enumerate(matched):
            if found is None:
                found = Track(next(self._ids), boxes[col], self.frame, self.frame)
                alive.append(found)
                log.debug("track started track=%d", found.track_id)
            result.append(found)
        self.tracks = alive
        return result, gap + ended

    def gap_seconds(self) -> float:
        """The longest time between two frames that keeps the tracks: TRACK_GAP_SECONDS, or
        more than max_missed frames at the rate they have been arriving (a slow CPU)."""
        rate = median(self._intervals) if self._intervals else 0.0
        return max(TRACK_GAP_SECONDS, (self.max_missed + 1) * rate)

    def _after_gap(self, at: float | None) -> list[Track]:
        """The tracks a gap before the frame at `at` ends (all of them, or none)."""
        if at is None or not np.isfinite(at):
            return []
        last, self._at = self._at, at
        if last is None:
            return []
        interval = at - last
        gap = interval > self.gap_seconds()  # judged on the rate before this interval
        if interval >= 0:
            self._intervals.append(interval)
        if gap:
            log.info("no frame for %.1f s: the %d track(s) in view end", interval, len(self.tracks))
            return self.end_all()
        return []

    def _scale_to(self, size: tuple[int, int] | None) -> None:
        """The tracks' boxes in the pixels of a frame of `size` (width, height), when the
        last frame had another size (update)."""
        if size is None:
            return
        last, self._size = self._size, size
        if last is None or last == size or not self.tracks:
            return
        scale = np.array([size[0] / last[0], size[1] / last[1]] * 2, np.float32)
        for track in self.tracks:
            track.box = track.box * scale
        log.debug("frame size %dx%d -> %dx%d: tracks kept", *last, *size)

    def end_all(self) -> list[Track]:
        """End every track (the source has ended): the tracks that were alive."""
        ended, self.tracks = self.tracks, []
        return ended

    def in_front(self, tracks: list[Track], presented: np.ndarray) -> np.ndarray:
        """Mask over `tracks` (this frame's) of those presented at the door on this frame
        (`presented`, quality.presented_faces) and not seen behind another face on any of
        the last max_missed frames either. The face in front of one may be missed by the
        detector for as many frames as its track is kept (a stranger at the door turning
        their head, a hand over their face): it still stands there, and the face behind it,
        seen alone on such a frame, is not judged on it. Its votes would add up across those
        frames and open the door for whoever stands at it."""
        shown = np.asarray(presented, bool)
        for track, front in zip(tracks, shown, strict=True):
            if not front:
                track.behind_frame = self.frame
        return np.array(
            [
                front and (t.behind_frame is None or self.frame - t.behind_frame > self.max_missed)
                for t, front in zip(tracks, shown, strict=True)
            ],
            dtype=bool,
        )

    def due(self, tracks: list[Track]) -> np.ndarray:
        """Mask over `tracks` (this frame's) of those whose face must be embedded now."""
        return np.array(
            [t.needs_embedding(self.frame, self.refresh_frames) for t in tracks], dtype=bool
        )

    def mark_embedded(self, tracks: list[Track]) -> None:
        for track in tracks:
            track.embedded_frame = self.frame
