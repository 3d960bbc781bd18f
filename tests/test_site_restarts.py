"""benchmarks/site_restarts.py's door across restarts, on made-up faces (no LFW, no models):
each restart reads the site memory back from its 0600 file as the daemon does
(edge_app.daemon.open_site_memory), so a lingerer's face is learned once with the repeat
guard saved, and again after each restart with the guard forgotten."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from benchmarks.site_restarts import RESTARTS, Door, run_door
from edge_app.config import RecognitionConfig
from edge_app.gallery import EMBEDDING_DIM, GalleryMatrix
from edge_app.matching import SITE_SHARE, Matcher, MatchSettings
from edge_app.site_memory import SiteMemory

SETTINGS = RecognitionConfig(learn_site=True)
MATCH = MatchSettings(threshold=0.6, site_share=SITE_SHARE)


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


RESIDENT, LINGERER, *OTHERS = np.linalg.qr(
    np.random.default_rng(0).standard_normal((EMBEDDING_DIM, 8))
)[0].T
MATRIX = GalleryMatrix(unit(RESIDENT)[None], np.zeros(1, np.int32), ("resident",))


def build(memory: SiteMemory) -> Matcher:
    return Matcher(MATRIX, MATCH, memory=memory)


def lingering(count: int, seed: int = 1) -> np.ndarray:
    """`count` photos of the lingerer: his face, each a little different."""
    rng = np.random.default_rng(seed)
    return np.stack(
        [unit(LINGERER + 0.3 * unit(rng.standard_normal(EMBEDDING_DIM))) for _ in range(count)]
    )


def test_the_saved_guard_learns_a_lingerer_once_across_restarts(tmp_path: Path) -> None:
    door = Door(tmp_path / "gallery.db", SETTINGS, build, "saved")
    learned = []
    for face in lingering(6):  # one visit per door lifetime, a restart after each
        learned.append(door.offer(face))
        door.restart()
        assert len(door.memory.recent) == 1  # the guard's face, read back from the file
    assert learned == [True] + [False] * 5
    assert door.memory.learned == 1
    assert stat.S_IMODE(door.path.stat().st_mode) == 0o600
    assert SiteMemory.load(door.path).learned == 1


def test_the_forgotten_guard_learns_a_lingerer_again_after_each_restart(
    tmp_path: Path,
) -> None:
    door = Door(tmp_path / "gallery.db", SETTINGS, build, "forgotten")
    faces = lingering(6)
    for face in faces:
        assert door.offer(face)  # the guard is empty again: learned each lifetime
        assert not door.offer(face)  # within a lifetime it is still a repeat
        door.restart()
        assert not door.memory.recent
    assert door.memory.learned == len(faces)
    assert SiteMemory.load(door.path).learned == len(faces)  # saved each time


@pytest.mark.parametrize("guard", ["saved", "forgotten"])
def test_run_door_counts_what_each_guard_learns_by_restarts(tmp_path: Path, guard: str) -> None:
    """The benchmark's loop: 3 visits per lifetime, 200 lifetimes; with the saved guard the
    lingerer is learned in the first lifetime only, with the forgotten one once in each."""
    door = Door(tmp_path / "gallery.db", SETTINGS, build, guard)
    honest = np.stack([unit(face) for face in OTHERS])
    tested: list[Matcher] = []

    def measured(matcher: Matcher) -> dict[str, int]:
        tested.append(matcher)
        names = matcher.identify(unit(RESIDENT)[None]).names
        return {"recognised": sum(n is not None for n in names)}

    rows = run_door(door, lingering(5), honest, 0, 3, np.random.default_rng(0), measured)
    assert sorted(rows) == list(RESTARTS) and len(tested) == len(RESTARTS)
    for restarts, row in rows.items():
        assert row["offered_lingerer"] == 3 * restarts
        assert row["offered_honest"] == row["learned_honest"] == 0
        assert row["recognised"] == 1  # the resident is still let in
        expected = min(restarts, 1) if guard == "saved" else restarts
        assert row["learned_lingerer"] == row["learned"] == expected


def test_a_memory_file_the_door_refuses_is_an_error_not_an_empty_door(tmp_path: Path) -> None:
    """The daemon sets a refused file aside and starts empty; the benchmark must not then
    measure an empty door as if it had restarted with its memory."""
    door = Door(tmp_path / "gallery.db", SETTINGS, build, "saved")
    assert door.offer(lingering(1)[0])
    door.path.chmod(0o666)  # others may write it: the door refuses it
    with pytest.raises(RuntimeError, match="refused"):
        door.restart()
