"""The camera-picture check (edge_app/picture.py): real scenes pass, a dark or covered camera
is named, only once it lasts, and the door, its control socket, the hub's MQTT state, the
web page and `enroll --camera` all say so.

Real frames: the demo clip (always here) and, when ../shared/data is present, every NUAA
webcam frame and detection photo. A covered or dark camera is made the way a sensor makes
it: a flat or nearly black picture with Gaussian sensor noise, or a real frame darkened.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory
from test_control import Door, make_daemon
from test_daemon_fast import ScriptedEngine, door, gallery_of_ada
from test_web import serve

from edge_app.control import DaemonPort
from edge_app.daemon import Daemon
from edge_app.engine import Engine
from edge_app.enroll import EnrollError, enroll_camera
from edge_app.hub.door import DoorHealth, judge
from edge_app.hub.mqtt import _camera_state
from edge_app.paths import REPO_ROOT
from edge_app.picture import (
    ADVICE,
    CHECK_SECONDS,
    DARK,
    EXPLAIN,
    FEATURELESS,
    HOLD_SECONDS,
    PictureWatch,
    picture_problem,
)
from edge_app.quality import Reason

RNG = np.random.default_rng(7)


def sensor(level: float, noise: float, shape: tuple[int, int] = (480, 640)) -> np.ndarray:
    """An RGB frame of one grey level with Gaussian sensor noise."""
    grey = np.clip(RNG.normal(level, noise, shape), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def demo_frames() -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(REPO_ROOT / "demo" / "door.mp4"))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def test_every_frame_of_the_demo_clip_is_a_usable_picture() -> None:
    frames = demo_frames()
    assert len(frames) > 100
    assert [picture_problem(frame) for frame in frames] == [None] * len(frames)


def test_real_photos_are_usable_pictures(shared_data: Path) -> None:
    paths = [
        *sorted((shared_data / "liveness" / "nuaa").glob("*/*/*.jpg")),
        *sorted((shared_data / "detection").glob("*/*.jpg")),
    ]
    assert len(paths) > 2500
    flagged = []
    for path in paths:
        image = cv2.imread(str(path))
        assert image is not None, path
        if picture_problem(image) is not None:
            flagged.append(path.name)
    assert flagged == []


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (sensor(4, 2), DARK),  # a lens cap: black with noise
        (sensor(9, 3), DARK),
        (sensor(120, 3), FEATURELESS),  # tape over the lens in daylight
        (sensor(200, 6), FEATURELESS),
        (sensor(120, 60), None),  # noise that strong is structure, not a flat picture
    ],
    ids=["cap", "night", "tape", "bright tape", "busy"],
)
def test_a_dark_or_covered_camera_is_named(frame: np.ndarray, problem: str | None) -> None:
    assert picture_problem(frame) == problem


def test_a_real_frame_darkened_below_what_the_detector_can_use_is_dark() -> None:
    frame = demo_frames()[50]
    assert picture_problem(frame) is None
    assert picture_problem((frame * 0.05).astype(np.uint8)) == DARK
    assert picture_problem((frame * 0.3).astype(np.uint8)) is None


def test_a_problem_is_reported_once_it_lasts_and_cleared_at_the_first_good_picture() -> None:
    watch = PictureWatch()
    good, black, flat = sensor(120, 60), sensor(4, 2), sensor(120, 3)
    assert watch.update(good, 0.0) is False and watch.reported is None
    changes = [watch.update(black, t / 10) for t in range(10, 10 + 10 * int(HOLD_SECONDS))]
    assert watch.reported is None and not any(changes)  # 9.9 s of black: not yet
    assert watch.update(black, 1.0 + HOLD_SECONDS) is True and watch.reported == DARK
    # Covered while dark: it stays reported as a problem, then is named anew once held.
    start = 2.0 + HOLD_SECONDS
    assert watch.update(flat, start) is False and watch.reported == DARK
    assert watch.update(flat, start + HOLD_SECONDS) is True and watch.reported == FEATURELESS
    assert watch.update(good, start + HOLD_SECONDS + 1) is True and watch.reported is None


def test_the_picture_is_judged_once_a_second_not_every_frame() -> None:
    watch = PictureWatch(hold_seconds=0.0)
    assert watch.update(sensor(4, 2), 0.0) is True and watch.reported == DARK
    assert watch.update(sensor(120, 60), CHECK_SECONDS / 2) is False  # not due: not judged
    assert watch.reported == DARK
    assert watch.update(sensor(120, 60), CHECK_SECONDS) is True and watch.reported is None


def test_the_door_on_a_covered_camera_says_so_and_when_it_sees_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The real daemon (scripted engine, mock relay) on a recording: 12 s of a black, noisy
    picture, then 2 s of a real one, at 10 fps on the clip's own clock."""
    frames = tmp_path / "frames"
    frames.mkdir()
    real = cv2.cvtColor(demo_frames()[0], cv2.COLOR_RGB2BGR)
    for index in range(140):
        image = real if index >= 120 else cv2.cvtColor(sensor(4, 2), cv2.COLOR_RGB2BGR)
        image[0, 0] = 0  # the scripted engine's code for "no face here"
        assert cv2.imwrite(str(frames / f"{index:04d}.png"), image)
    caplog.set_level(logging.INFO, logger="edge_app")
    daemon = Daemon(
        door(tmp_path, gallery_of_ada(tmp_path), frames),
        engine=ScriptedEngine(delay=0.0),
        pin_factory=MockFactory(),
    )
    reported: list[str | None] = []
    real_log = daemon._log_picture

    def spy() -> None:
        reported.append(DaemonPort(daemon).status()["picture"])  # what the socket would say
        real_log()

    daemon._log_picture = spy  # type: ignore[method-assign]
    notified: list[str] = []
    daemon._notify = lambda *states: notified.extend(states)  # type: ignore[method-assign]
    assert daemon.run() == 0
    assert reported == [DARK, None]
    statuses = [state for state in notified if state.startswith("STATUS=")]
    assert statuses == [  # what `systemctl status edge-app` shows
        f"STATUS=watching {frames}",
        f"STATUS=watching {frames}; camera picture dark",
        f"STATUS=watching {frames}",
    ]
    assert f"camera picture dark for 10 s: {ADVICE[DARK]}" in caplog.text
    assert "camera picture usable again" in caplog.text


def test_the_hub_names_the_problem_and_keeps_the_door_available() -> None:
    status = {"last_frame_age": 0.1, "picture": DARK}
    health = judge(status, stale_seconds=10)
    assert health.healthy and health.picture == DARK and health.error == EXPLAIN[DARK]
    assert _camera_state(health) == DARK  # Home Assistant's camera problem sensor turns on
    stale = judge({"last_frame_age": 60, "picture": DARK}, stale_seconds=10)
    assert _camera_state(stale) == "stale" and stale.error == "no fresh camera frames"
    assert _camera_state(judge({"last_frame_age": 0.1}, stale_seconds=10)) == "ok"
    assert _camera_state(DoorHealth(False, False, None, "no door socket")) == "unknown"


@pytest.mark.parametrize("value", ["<script>", 7, ["dark"], "DARK"])
def test_a_picture_value_the_door_never_sends_is_ignored(value: object) -> None:
    health = judge({"last_frame_age": 0.1, "picture": value}, stale_seconds=10)
    assert health.picture is None and health.error is None and _camera_state(health) == "ok"


def test_the_web_page_shows_the_problem_beside_the_camera(tmp_path: Path) -> None:
    """A door (its real control socket, relay and events) whose picture has been dark, and
    the web page served over real HTTP: the status and the health page both say so."""
    daemon = make_daemon(tmp_path, allow_unlock=False)
    daemon.picture.reported = DARK
    door_side = Door(daemon)
    door_side.server.offer_frame(sensor(4, 2), 1)
    site = serve(tmp_path / "web", door_socket=door_side.path)
    try:
        with site.client() as client:
            site.login(client)
            status = client.get("/fragments/status").text
            health = client.get("/health").text
    finally:
        site.server.stop()
        door_side.close()
    assert 'id="camera-picture">dark</span>' in status
    assert html.escape(EXPLAIN[DARK]) in status
    assert "camera picture dark" in health and html.escape(EXPLAIN[DARK]) in health


def test_camera_enrolment_in_the_dark_says_why_no_face_was_found(
    tmp_path: Path, engine: Engine
) -> None:
    """A covered or unlit camera gives frames with no face: the refusal says what the picture
    shows and what to do, not only that faces were missing."""
    black = sensor(4, 2)
    db = tmp_path / "camera.db"
    with pytest.raises(EnrollError) as caught:
        enroll_camera(db, engine, "Frank Solich", iter([black] * 3), count=3, progress=False)
    assert caught.value.problems[0].reason is Reason.NO_FACE
    assert (
        f"only 0 of 3 good frames for 'Frank Solich' before the camera stopped: {EXPLAIN[DARK]}"
        in str(caught.value)
    )
    assert not db.exists()
