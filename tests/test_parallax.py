"""Parallax geometry on synthetic faces: 3D points projected through a pinhole camera.

A head model (nose 2.4 cm in front of the eye plane) against the same five points flattened
onto a plane (a printed photo), turned, tilted, moved and held still.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_app.parallax import (
    Parallax,
    ParallaxSettings,
    nose_residual,
    pair_measures,
    project,
    rim_homographies,
    rim_turn,
)

# x right, y down, z towards the camera, cm; eyes, nose, mouth corners (MTCNN order).
HEAD = np.array(
    [[-3.2, 0.0, 0.0], [3.2, 0.0, 0.0], [0.0, 3.6, 2.4], [-2.6, 7.0, -0.6], [2.6, 7.0, -0.6]]
)
PHOTO = HEAD * np.array([1.0, 1.0, 0.0])  # the same face printed flat


def rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    a, b, c = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ rx @ ry


def view(
    points: np.ndarray,
    yaw: float = 0.0,
    pitch: float = 0.0,
    roll: float = 0.0,
    shift: tuple[float, float, float] = (0.0, 0.0, 0.0),
    distance: float = 50.0,
    focal: float = 550.0,
) -> np.ndarray:
    """Landmarks (5, 2) in a 640x480 image of the points turned about the face centre."""
    centre = np.array([0.0, 3.5, 0.0])
    moved = (points - centre) @ rotation(yaw, pitch, roll).T + np.array(shift)
    depth = distance - moved[:, 2]
    return np.stack([focal * moved[:, 0] / depth + 320, focal * moved[:, 1] / depth + 240], 1)


def measures(points: np.ndarray, **turned: Any) -> tuple[float, float]:
    turn, residual = pair_measures(view(points)[None], view(points, **turned)[None])
    return float(turn[0]), float(residual[0])


def test_homography_is_exact_on_the_rim() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(100, 300, (20, 4, 2))
    dst = src + rng.normal(0, 15, src.shape)
    h = rim_homographies(src, dst)
    for corner in range(4):
        np.testing.assert_allclose(project(h, src[:, corner]), dst[:, corner], atol=1e-6)


def test_degenerate_rim_gives_nan_not_an_exception() -> None:
    line = np.array([[[0, 0], [1, 1], [2, 2], [3, 3]]], np.float64)
    assert np.isnan(rim_homographies(line, line + 1)).all()
    landmarks = np.zeros((1, 5, 2))
    turn, residual = pair_measures(landmarks, landmarks)
    assert not np.isfinite(residual).any()


@pytest.mark.parametrize(
    "turned",
    [
        {"yaw": 15.0},
        {"yaw": -30.0},
        {"pitch": 20.0},
        {"yaw": 20.0, "pitch": -10.0, "roll": 25.0},
        {"yaw": 25.0, "shift": (8.0, -3.0, -15.0)},
    ],
)
def test_a_flat_photo_has_no_nose_residual_whatever_the_motion(turned: dict) -> None:
    _, residual = measures(PHOTO, **turned)
    assert residual < 1e-6


@pytest.mark.parametrize("yaw", [10.0, 15.0, 20.0, 30.0])
def test_a_turning_head_shows_parallax_about_half_the_sine_of_the_turn(yaw: float) -> None:
    _, residual = measures(HEAD, yaw=yaw)
    # The model's nose depth (2.4 cm over a 6.4 cm eye distance) predicts ~0.4-0.6 sin(turn).
    assert 0.35 * np.sin(np.radians(yaw)) < residual < 0.65 * np.sin(np.radians(yaw))
    _, up_down = measures(HEAD, pitch=yaw)
    assert up_down > 0.35 * np.sin(np.radians(yaw))


def test_in_plane_motion_is_not_a_turn() -> None:
    """Rolling and stepping closer keep the rim a similarity: no turn and no parallax."""
    for points in (HEAD, PHOTO):
        turn, residual = measures(points, roll=20.0, shift=(0.0, 0.0, -15.0))
        assert turn < 0.01
        assert residual < 0.01


def test_a_head_passing_off_axis_shows_parallax_without_turning() -> None:
    """Moving 10 cm sideways at 50 cm changes the viewing angle by ~11 degrees: a head shows
    parallax for it, the photo does not, and the rim barely registers a turn."""
    head_turn, head_residual = measures(HEAD, shift=(10.0, 0.0, 0.0))
    photo_turn, photo_residual = measures(PHOTO, shift=(10.0, 0.0, 0.0))
    assert head_residual > 0.06
    assert photo_residual < 1e-6
    assert max(head_turn, photo_turn) < 0.02


def test_the_turn_grows_with_the_angle_for_photo_and_head_alike() -> None:
    turns = [measures(PHOTO, yaw=a)[0] for a in (10.0, 20.0, 30.0, 40.0)]
    assert turns == sorted(turns)
    for angle in (20.0, 30.0):
        photo, head = measures(PHOTO, yaw=angle)[0], measures(HEAD, yaw=angle)[0]
        assert abs(photo - head) < 0.3 * head  # the rim does not tell a photo from a head


def test_residual_and_turn_are_in_eye_distances() -> None:
    near = pair_measures(view(HEAD)[None], view(HEAD, yaw=20)[None])
    far = pair_measures(view(HEAD, distance=120)[None], view(HEAD, yaw=20, distance=120)[None])
    np.testing.assert_allclose(near[1], far[1], rtol=0.1)
    np.testing.assert_allclose(rim_turn(view(HEAD)[None], view(HEAD, yaw=20)[None]), near[0])
    np.testing.assert_allclose(nose_residual(view(HEAD)[None], view(HEAD, yaw=20)[None]), near[1])


def sweep(points: np.ndarray, angles: np.ndarray, jitter: float = 0.0, seed: int = 0) -> Parallax:
    rng = np.random.default_rng(seed)
    track = Parallax()
    for angle in angles:
        track.update(view(points, yaw=float(angle)) + rng.normal(0, jitter, (5, 2)))
    return track


def test_a_still_face_abstains_photo_or_head() -> None:
    still = np.zeros(30)
    for points in (HEAD, PHOTO):
        reading = sweep(points, still, jitter=1.0).reading
        assert reading.verdict == "abstain"
        assert reading.pairs == 0


def test_a_small_turn_abstains() -> None:
    assert sweep(PHOTO, np.linspace(0, 10, 10), jitter=0.5).reading.verdict == "abstain"


def test_a_photo_turned_far_enough_reads_flat() -> None:
    reading = sweep(PHOTO, np.linspace(0, 40, 10), jitter=0.5).reading
    assert reading.verdict == "flat"
    assert reading.pairs >= ParallaxSettings().min_pairs
    assert reading.residual < ParallaxSettings().flat_below


def test_a_head_turned_as_far_reads_depth() -> None:
    reading = sweep(HEAD, np.linspace(0, 40, 10), jitter=0.5).reading
    assert reading.verdict == "depth"
    assert reading.residual > ParallaxSettings().depth_above


def test_memory_is_bounded() -> None:
    track = sweep(PHOTO, np.tile(np.linspace(-40, 40, 20), 20))
    assert len(track._frames) == track.settings.window
    assert len(track._residuals) <= 4 * track.settings.window
