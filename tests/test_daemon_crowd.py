"""A crowd at the door: the real Daemon embeds at most `[tracking] faces_per_frame` faces a frame.

The engine is scripted at the daemon/engine seam, like tests/test_daemon_fast.py: each frame
says how many faces it shows (all of one size class, so every one is presented) and whether
the largest is Ada, the enrolled person. The gallery, policy, tracker and the MockFactory
relay are the production ones.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory
from test_daemon_fast import (
    ADA,
    EMBEDDINGS,
    PIN,
    ScriptedEngine,
    assert_fail_secure,
    door,
    gallery_of_ada,
    jsonl,
    unit,
)

from edge_app.config import ConfigError, parse_config
from edge_app.daemon import Daemon, largest_first
from edge_app.faces import Faces

HEIGHT, WIDTH = 480, 640


def crowd_boxes(count: int) -> np.ndarray:
    """`count` faces on a grid, the first the largest (70 px), the rest 60-69 px: none is
    outsized 1.5 times, so all are presented at the door."""
    boxes = []
    for index in range(count):
        row, col = divmod(index, 6)
        side = 70 if index == 0 else 60 + index % 10
        x, y = 20 + col * 100, 20 + row * 100
        boxes.append([x, y, x + side, y + side])
    return np.array(boxes, np.float32)


class CrowdEngine(ScriptedEngine):
    """Frames carry the face count (red) and whether the largest face is Ada (green)."""

    def __init__(self) -> None:
        super().__init__(delay=0.0)
        self.batches: list[list[int]] = []  # per embed call, the grid index of each face

    def detect(self, image: np.ndarray) -> Faces:
        count = int(image[0, 0, 0])
        boxes = crowd_boxes(count)
        return Faces(boxes, np.full(count, 0.99, np.float32), np.zeros((count, 5, 2), np.float32))

    def embed(self, image: np.ndarray, faces: Faces, mirror: bool = False) -> np.ndarray:
        everyone = crowd_boxes(int(image[0, 0, 0]))
        index = [int(np.flatnonzero((everyone == box).all(axis=1))[0]) for box in faces.boxes]
        self.batches.append(index)
        ada = int(image[0, 0, 1]) == 1
        return np.stack([EMBEDDINGS[ADA] if ada and i == 0 else unit(100 + i) for i in index])


def crowd_frames(folder: Path, frames: list[tuple[int, bool]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for number, (count, ada) in enumerate(frames):
        image = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
        image[..., 2] = count  # BGR on disk: channel 2 is red
        image[..., 1] = int(ada)
        assert cv2.imwrite(str(folder / f"{number:04d}.png"), image)
    return folder


def run_door(tmp_path: Path, frames: list[tuple[int, bool]], **tracking: int):
    engine = CrowdEngine()
    factory = MockFactory()
    config = door(
        tmp_path,
        gallery_of_ada(tmp_path),
        crowd_frames(tmp_path / "frames", frames),
        tracking=dict(tracking),
    )
    daemon = Daemon(config, engine=engine, pin_factory=factory)
    assert daemon.run() == 0
    return engine, factory, daemon


def test_a_crowd_is_embedded_a_few_faces_a_frame_and_every_face_gets_its_turn(
    tmp_path: Path,
) -> None:
    engine, factory, daemon = run_door(tmp_path, [(0, False), *[(12, False)] * 40, (0, False)])

    assert engine.batches, "the crowd was never embedded"
    assert max(len(batch) for batch in engine.batches) == 4  # the default faces_per_frame
    assert engine.batches[0] == [0, 7, 8, 9]  # 70, 67, 68 and 69 px: the four largest
    seen = {index for batch in engine.batches for index in batch}
    assert seen == set(range(12)), f"faces never embedded: {set(range(12)) - seen}"
    assert daemon.metrics.embeddings == sum(len(batch) for batch in engine.batches)
    assert [state.state for state in factory.pin(PIN).states] == [False]
    assert all(event["type"] == "unknown" for event in jsonl(tmp_path))


def test_the_largest_face_is_first_so_a_resident_in_a_crowd_gets_in_as_fast_as_alone(
    tmp_path: Path,
) -> None:
    alone = tmp_path / "alone"
    _, _, _ = run_door(alone, [(0, False), *[(1, True)] * 8, *[(0, False)] * 20])
    crowd = tmp_path / "crowd"
    engine, factory, _ = run_door(crowd, [(0, False), *[(12, True)] * 8, *[(0, False)] * 20])

    unlock_alone = [e for e in jsonl(alone) if e["type"] == "unlock"]
    unlock_crowd = [e for e in jsonl(crowd) if e["type"] == "unlock"]
    assert len(unlock_alone) == len(unlock_crowd) == 1
    assert unlock_crowd[0]["name"] == unlock_alone[0]["name"]
    assert unlock_crowd[0]["source_time"] == unlock_alone[0]["source_time"] is not None
    assert all(0 in batch for batch in engine.batches[:3])  # Ada in every early batch
    assert_fail_secure(factory)


def test_faces_per_frame_is_configurable(tmp_path: Path) -> None:
    engine, _, _ = run_door(tmp_path, [*[(12, False)] * 6, (0, False)], faces_per_frame=1)
    assert {len(batch) for batch in engine.batches} == {1}


@pytest.mark.parametrize("value", [0, -1, 65, 2.5, "4", True])
def test_faces_per_frame_out_of_range_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match="tracking.faces_per_frame"):
        parse_config({"tracking": {"faces_per_frame": value}})


def test_largest_first_keeps_order_and_ranks_broken_sizes_last() -> None:
    due = np.array([0, 2, 3, 5])
    sizes = np.array([10.0, 99.0, 50.0, np.nan, 1.0, 70.0])
    assert largest_first(due, sizes, 2).tolist() == [2, 5]
    assert largest_first(due, sizes, 3).tolist() == [0, 2, 5]
    assert largest_first(due, sizes, 9).tolist() == [0, 2, 3, 5]
    assert largest_first(np.array([3, 4]), sizes, 1).tolist() == [4]


class LiveCrowdEngine(CrowdEngine):
    """The crowd with a liveness model: every face scored live."""

    manifest = SimpleNamespace(
        recognition={"threshold": 0.6, "margin": 0.05}, liveness={"threshold": 0.5}
    )
    has_liveness = True

    def liveness(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        return np.full(len(faces), 0.9, np.float32)


def test_the_report_only_parallax_follows_no_more_faces_than_are_embedded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review: the parallax reading (report only) was updated for every face detected,
    before faces_per_frame capped the work: 11 ms a frame for 50 faces on x86."""
    from edge_app import daemon as daemon_module

    followed: list[int] = []
    update = daemon_module.Parallax.update

    def counted(self: object, landmarks: np.ndarray) -> None:
        followed.append(id(self))
        update(self, landmarks)  # type: ignore[arg-type]

    monkeypatch.setattr(daemon_module.Parallax, "update", counted)
    config = door(
        tmp_path,
        gallery_of_ada(tmp_path),
        crowd_frames(tmp_path / "frames", [(0, False), *[(30, False)] * 5, (0, False)]),
        liveness={"mode": "log"},
    )
    daemon = Daemon(config, engine=LiveCrowdEngine(), pin_factory=MockFactory())
    assert daemon.run() == 0
    assert len(followed) == 5 * 4  # 4 faces (faces_per_frame) in each of the 5 crowd frames
