"""Parallax across a track's frames: is the face a flat picture or a head with depth?

A photograph is flat, so its five landmarks in any two frames are related by one homography,
whatever the hand holding it does. A head is not: when it turns, the nose tip (which stands
several centimetres out of the plane of the eyes and mouth corners) moves against that plane.

For a pair of frames (a reference and a later one) of one track:

- the homography H is fitted exactly on the four *rim* points (two eyes, two mouth corners);
- the *residual* is the distance between H applied to the reference nose and the nose seen in
  the later frame, in eye distances: 0 for a flat picture, about 0.56·sin(turn) for a head;
- the *turn* is how far the rim itself moved away from a similarity (shift, rotation in the
  image plane, scale): the RMS distance of the four rim points from the best similarity fit, in
  eye distances. A picture and a head that turn out of the image plane both show it (the rim
  foreshortens); walking towards the camera, sliding or tilting the head in the image plane do
  not. It grows with the square of the angle (about 0.016 at 15°, 0.06 at 30° of yaw), so it
  certifies a turn only well above the landmark noise.

A pair says nothing about flatness until the rim has turned (`min_turn`): a still face, real or
printed, shows no parallax. So the reading *abstains* until enough turned pairs are seen, then
says `flat` when the nose stayed on the rim's homography (`flat_below`), `depth` when it left it
(`depth_above`), and keeps abstaining in between. docs/LIVENESS.md has the measurements these
defaults come from and how the door uses the reading.

Landmarks are MTCNN's order (see edge_app.faces.Faces): left eye, right eye, nose, left and
right mouth corner.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

RIM = (0, 1, 3, 4)
NOSE = 2

Verdict = Literal["abstain", "flat", "depth"]


def rim_homographies(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Homographies (N, 3, 3) mapping each src rim (N, 4, 2) exactly onto dst (N, 4, 2).

    The 4-point DLT with h33 = 1, solved as N 8x8 systems at once. A degenerate rim (three
    points on a line) gives NaN rather than an exception, so one bad frame cannot stop a track.
    """
    src = np.asarray(src, np.float64).reshape(-1, 4, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 4, 2)
    n = src.shape[0]
    # Conditioning: centre and scale each side, solve, then undo (Hartley normalisation).
    ts, tsrc = _normalise(src)
    td, tdst = _normalise(dst)
    x, y = tsrc[..., 0], tsrc[..., 1]
    u, v = tdst[..., 0], tdst[..., 1]
    a = np.zeros((n, 8, 8))
    a[:, 0::2, 0], a[:, 0::2, 1], a[:, 0::2, 2] = x, y, 1.0
    a[:, 0::2, 6], a[:, 0::2, 7] = -x * u, -y * u
    a[:, 1::2, 3], a[:, 1::2, 4], a[:, 1::2, 5] = x, y, 1.0
    a[:, 1::2, 6], a[:, 1::2, 7] = -x * v, -y * v
    b = np.empty((n, 8))
    b[:, 0::2], b[:, 1::2] = u, v
    h = np.full((n, 9), np.nan)
    solvable = np.abs(np.linalg.det(a)) > 1e-12
    if solvable.any():
        h[solvable, :8] = np.linalg.solve(a[solvable], b[solvable][..., None])[..., 0]
        h[solvable, 8] = 1.0
    normalised = h.reshape(n, 3, 3)
    return np.linalg.inv(td) @ normalised @ ts


def _normalise(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centre = points.mean(axis=1, keepdims=True)
    spread = np.sqrt(((points - centre) ** 2).sum(axis=2).mean(axis=1))
    scale = np.sqrt(2.0) / np.maximum(spread, 1e-9)
    t = np.zeros((points.shape[0], 3, 3))
    t[:, 0, 0] = t[:, 1, 1] = scale
    t[:, 0, 2] = -scale * centre[:, 0, 0]
    t[:, 1, 2] = -scale * centre[:, 0, 1]
    t[:, 2, 2] = 1.0
    return t, (points - centre) * scale[:, None, None]


def project(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply homographies (N, 3, 3) to one point each (N, 2)."""
    homogeneous = np.concatenate([points, np.ones((points.shape[0], 1))], axis=1)
    mapped = np.einsum("nij,nj->ni", h, homogeneous)
    return mapped[:, :2] / mapped[:, 2:3]


def eye_distance(landmarks: np.ndarray) -> np.ndarray:
    return np.linalg.norm(landmarks[:, 1] - landmarks[:, 0], axis=1)


def rim_turn(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Departure of the rim's motion from a similarity, in eye distances of `cur`: (N,).

    The similarity is the least-squares one (complex-number form: cur = a * ref + b).
    """
    s = ref[:, RIM] - ref[:, RIM].mean(axis=1, keepdims=True)
    d = cur[:, RIM] - cur[:, RIM].mean(axis=1, keepdims=True)
    sc = s[..., 0] + 1j * s[..., 1]
    dc = d[..., 0] + 1j * d[..., 1]
    a = (np.conj(sc) * dc).sum(axis=1) / np.maximum((np.abs(sc) ** 2).sum(axis=1), 1e-12)
    rms = np.sqrt((np.abs(dc - a[:, None] * sc) ** 2).mean(axis=1))
    return rms / np.maximum(eye_distance(cur), 1e-9)


def nose_residual(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """How far the nose left the rim's homography, in eye distances of `cur`: (N,)."""
    h = rim_homographies(ref[:, RIM], cur[:, RIM])
    predicted = project(h, ref[:, NOSE].astype(np.float64))
    return np.linalg.norm(predicted - cur[:, NOSE], axis=1) / np.maximum(eye_distance(cur), 1e-9)


def pair_measures(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(turn, residual) for each pair of landmark sets, ref and cur shaped (N, 5, 2)."""
    ref = np.asarray(ref, np.float64).reshape(-1, 5, 2)
    cur = np.asarray(cur, np.float64).reshape(-1, 5, 2)
    return rim_turn(ref, cur), nose_residual(ref, cur)


@dataclass(frozen=True)
class ParallaxSettings:
    """What counts as a turn and what a flat or deep face looks like; see docs/LIVENESS.md."""

    window: int = 10  # frames kept per track; each new frame is paired with all of them
    min_turn: float = 0.05  # rim turn (eye distances) a pair needs to count
    min_pairs: int = 3  # turned pairs needed before any verdict
    flat_below: float = 0.06  # median residual of turned pairs at or under this: flat
    depth_above: float = 0.12  # median residual of turned pairs at or over this: depth


@dataclass(frozen=True)
class ParallaxReading:
    verdict: Verdict
    turn: float  # largest rim turn seen on the track so far (eye distances)
    residual: float  # median nose residual over the turned pairs (NaN while none)
    pairs: int  # turned pairs so far


class Parallax:
    """The parallax reading of one track, updated with each frame's landmarks (5, 2).

    Memory is bounded: `window` landmark sets and the residuals of at most `4 * window` turned
    pairs (the most recent).
    """

    def __init__(self, settings: ParallaxSettings | None = None) -> None:
        self.settings = settings or ParallaxSettings()
        self._frames: deque[np.ndarray] = deque(maxlen=self.settings.window)
        self._residuals: deque[float] = deque(maxlen=4 * self.settings.window)
        self._max_turn = 0.0
        self.reading = ParallaxReading("abstain", 0.0, float("nan"), 0)

    def update(self, landmarks: np.ndarray) -> ParallaxReading:
        current = np.asarray(landmarks, np.float64).reshape(5, 2)
        if self._frames:
            refs = np.stack(self._frames)
            turn, residual = pair_measures(refs, np.broadcast_to(current, refs.shape))
            ok = np.isfinite(turn) & np.isfinite(residual)
            if ok.any():
                self._max_turn = max(self._max_turn, float(turn[ok].max()))
            self._residuals.extend(residual[ok & (turn >= self.settings.min_turn)].tolist())
        self._frames.append(current)
        self.reading = self._read()
        return self.reading

    def _read(self) -> ParallaxReading:
        s = self.settings
        pairs = len(self._residuals)
        if pairs < s.min_pairs:
            median = float(np.median(self._residuals)) if pairs else float("nan")
            return ParallaxReading("abstain", self._max_turn, median, pairs)
        median = float(np.median(self._residuals))
        verdict: Verdict = "abstain"
        if median <= s.flat_below:
            verdict = "flat"
        elif median >= s.depth_above:
            verdict = "depth"
        return ParallaxReading(verdict, self._max_turn, median, pairs)
