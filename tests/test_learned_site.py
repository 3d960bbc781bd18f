"""The learned-site benchmark's pieces (benchmarks/learned_site.py) on synthetic embeddings:
the memories it builds, its draws, and that a memory too small to count changes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.learned_site import Study, draw, fill, learned, new_strangers, pooled_visit
from benchmarks.site_centring import Replay, households
from edge_app.evaluate_door import Clip, Plan
from edge_app.gallery import EMBEDDING_DIM
from edge_app.matching import SITE_SHARE
from edge_app.site_memory import DECAY, MIN_VISITS, SiteMemory

PEOPLE = ("ann", "bo", "cy", "di")
FRAMES = 8  # per clip: more than the policy's window of votes


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def one_camera(seed: int = 0) -> tuple[dict[str, np.ndarray], Plan]:
    """Four people at one door whose faces share a strong site direction: each is enrolled
    from 5 frames and has two more clips (a visit, and a second one) of FRAMES frames."""
    rng = np.random.default_rng(seed)
    site = unit(rng.standard_normal(EMBEDDING_DIM))
    paths, embeddings, weights = [], [], []
    enrolment: dict[str, list[Path]] = {}
    clips: list[Clip] = []

    def frames(person: str, face: np.ndarray, name: str, count: int) -> tuple[Path, ...]:
        made = []
        for index in range(count):
            noise = 0.1 * unit(rng.standard_normal(EMBEDDING_DIM))
            paths.append(f"/{person}/{name}/{index}.png")
            embeddings.append(unit(0.8 * site + 0.6 * face + noise))
            weights.append(1.0)
            made.append(Path(paths[-1]))
        return tuple(made)

    for person in PEOPLE:
        face = unit(rng.standard_normal(EMBEDDING_DIM))
        first = frames(person, face, "first", FRAMES)
        enrolment[person] = list(first[:5])
        second = frames(person, face, "second", FRAMES)
        clips += [Clip("visit", person, f"{person}/second", second)]
        clips += [
            Clip("stranger", person, f"{person}/{k}", f) for k, f in (("1", first), ("2", second))
        ]
    stored = np.asarray(embeddings, np.float32)
    frame_table = {
        "path": np.asarray(paths),
        "embedding": stored,
        "mirror": stored,
        "weight": np.asarray(weights, np.float32),
    }
    return frame_table, Plan(enrolment, clips)


def study(draws: int = 1, seed: int = 0) -> Study:
    frames, work = one_camera()
    replay = Replay(frames, {"threshold": 0.5}, None)
    return Study(replay, work, sorted(work.enrolment), seed, draws)


def test_learned_is_the_site_memory_after_adding_each_visit_in_turn() -> None:
    rng = np.random.default_rng(1)
    visits = [rng.standard_normal(EMBEDDING_DIM) * 3.0 for _ in range(4)]
    memory = learned(visits)
    expected = np.zeros(EMBEDDING_DIM)
    for visit in visits:
        expected = DECAY * expected + unit(visit)
    np.testing.assert_allclose(memory.total, expected, atol=1e-9)
    assert memory.learned == 4 and memory.ready
    assert memory.weight == DECAY**3 + DECAY**2 + DECAY + 1.0
    empty = learned([])
    assert empty.learned == 0 and not empty.ready and not np.any(empty.total)


def test_draw_takes_k_distinct_visits_or_all_and_repeats_with_the_seed() -> None:
    pool = list("abcdefg")
    picked = draw(np.random.default_rng(0), pool, 3)
    assert len(picked) == 3 and len(set(picked)) == 3 and set(picked) <= set(pool)
    assert picked == draw(np.random.default_rng(0), pool, 3)
    assert sorted(draw(np.random.default_rng(0), pool, None)) == pool
    assert sorted(draw(np.random.default_rng(0), pool, 20)) == pool
    assert draw(np.random.default_rng(0), pool, 0) == []


def test_each_case_draws_the_same_whatever_ran_before_and_the_seed_changes_it() -> None:
    built = study()
    pool = list(range(50))
    first = draw(built.rng("new", 1, "3"), pool, 10)
    draw(built.rng("new", 1, "5"), pool, 10)  # another case in between changes nothing
    assert draw(built.rng("new", 1, "3"), pool, 10) == first
    assert draw(built.rng("new", 2, "3"), pool, 10) != first
    assert draw(study(seed=1).rng("new", 1, "3"), pool, 10) != first


def test_fill_repeats_a_small_pool_evenly_and_gives_nothing_from_an_empty_one() -> None:
    filled = fill(np.random.default_rng(0), ["a", "b"], 5)
    assert len(filled) == 5
    assert sorted(filled.count(x) for x in "ab") == [2, 3]
    assert sorted(filled[:2]) == ["a", "b"]  # every one once before any twice
    assert fill(np.random.default_rng(0), ["a", "b", "c"], 2) == draw(
        np.random.default_rng(0), ["a", "b", "c"], 2
    )
    assert fill(np.random.default_rng(0), [], 5) == []


def test_pooled_visit_is_the_weighted_unit_mean_of_the_clip_frames_with_a_face() -> None:
    rows = np.random.default_rng(2).standard_normal((3, EMBEDDING_DIM)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    frames = {
        "path": np.asarray(["/a.png", "/b.png", "/c.png"]),
        "embedding": rows,
        "mirror": rows,
        "weight": np.asarray([1.0, 3.0, 0.0], np.float32),
    }
    replay = Replay(frames, {"threshold": 0.5}, None)
    # /none.png had no face (not in the cache): skipped, as the door never saw a face there.
    clip = (Path("/a.png"), Path("/none.png"), Path("/b.png"), Path("/c.png"))
    pooled = pooled_visit(replay, clip)
    assert pooled is not None
    np.testing.assert_allclose(pooled, unit(rows[0] + 3.0 * rows[1]), atol=1e-5)
    assert pooled_visit(replay, (Path("/none.png"),)) is None


def test_study_memory_is_built_from_the_clips_pooled_visits() -> None:
    built = study()
    clips = built.clips(["bo", "cy"])
    assert len(clips) == 4 and all(clip in built.pooled for clip in clips)
    memory = built.memory(clips)
    by_hand = SiteMemory()
    for clip in clips:
        by_hand.add(built.pooled[clip])
    np.testing.assert_allclose(memory.total, by_hand.total)
    assert memory.learned == by_hand.learned == 4


def test_a_memory_too_small_to_count_gives_the_counts_of_no_memory() -> None:
    built = study()
    for size in (1, 2):
        plain = households(built.replay, built.work, built.people, (size,), SITE_SHARE)
        for k in (0, MIN_VISITS - 1):
            row = new_strangers(built, size, k)
            assert {key: row[key] for key in plain} == plain
    # The synthetic site is strong: a resident alone lets the others in without a memory.
    alone = households(built.replay, built.work, built.people, (1,), SITE_SHARE)
    assert alone["let_in"] == alone["strangers"] > 0


def test_learning_strangers_keeps_them_out_of_a_household_of_one_and_lets_residents_in() -> None:
    built = study(draws=2)
    row = new_strangers(built, 1, None)
    assert row["strangers"] == 2 * 4 * 3 * 2  # draws x residents x strangers x their clips
    assert row["let_in"] == 0
    assert row["unlocked"] == row["visits"] == 2 * 4
    assert row["learned"] / row["memories"] >= MIN_VISITS
