"""The learned-site benchmark's pieces (benchmarks/learned_site.py) on synthetic embeddings:
the memories it builds, its draws, that an empty memory changes nothing, and that it learns
only what the door's guard lets it learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.learned_site import (
    Study,
    draw,
    fill,
    guard_scores,
    learned,
    new_strangers,
    pooled_visit,
)
from benchmarks.site_centring import Replay, households
from edge_app.evaluate_door import Clip, Plan
from edge_app.gallery import EMBEDDING_DIM
from edge_app.matching import SITE_SHARE
from edge_app.site_memory import DECAY, LEARN_DOUBT, SiteMemory

PEOPLE = ("ann", "bo", "cy", "di", "ed", "flo")  # the first len(loadings) of them
FRAMES = 8  # per clip: more than the policy's window of votes


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


# How much of each person's face is the site's: ann and bo share much of it (each lets the
# other in at a door of one), cy and di little (the strangers a door of one learns from).
LOADINGS = (0.8, 0.8, 0.3, 0.3)


def one_camera(
    seed: int = 0, loadings: tuple[float, ...] = LOADINGS
) -> tuple[dict[str, np.ndarray], Plan]:
    """Four people at one door whose faces share a site direction, each by their loading:
    each is enrolled from 5 frames and has two more clips (a visit, and a second one) of
    FRAMES frames."""
    rng = np.random.default_rng(seed)
    site = unit(rng.standard_normal(EMBEDDING_DIM))
    paths, embeddings, weights = [], [], []
    enrolment: dict[str, list[Path]] = {}
    clips: list[Clip] = []

    def frames(
        person: str, face: np.ndarray, name: str, count: int, loading: float
    ) -> tuple[Path, ...]:
        made = []
        for index in range(count):
            noise = 0.1 * unit(rng.standard_normal(EMBEDDING_DIM))
            paths.append(f"/{person}/{name}/{index}.png")
            embeddings.append(unit(loading * site + 0.6 * face + noise))
            weights.append(1.0)
            made.append(Path(paths[-1]))
        return tuple(made)

    for person, loading in zip(PEOPLE[: len(loadings)], loadings, strict=True):
        face = unit(rng.standard_normal(EMBEDDING_DIM))
        first = frames(person, face, "first", FRAMES, loading)
        enrolment[person] = list(first[:5])
        second = frames(person, face, "second", FRAMES, loading)
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


def study(draws: int = 1, seed: int = 0, loadings: tuple[float, ...] = LOADINGS) -> Study:
    frames, work = one_camera(seed=0, loadings=loadings)
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


def test_an_empty_memory_gives_the_counts_of_no_memory() -> None:
    built = study()
    for size in (1, 2):
        plain = households(built.replay, built.work, built.people, (size,), SITE_SHARE)
        row = new_strangers(built, size, 0)
        assert {key: row[key] for key in plain} == plain
        assert row["learned"] == 0
    # ann and bo let each other in at a door of one without a memory.
    alone = households(built.replay, built.work, built.people, (1,), SITE_SHARE)
    assert alone["let_in"] == 2 * 2 > 0  # each one's two clips at the other's door


def test_learning_strangers_keeps_them_out_of_a_household_of_one_and_lets_residents_in() -> None:
    """Four people who carry little of the site teach a door of one what it is: ann and bo,
    who let each other in without it, are kept out of each other's door."""
    loadings = (0.8, 0.8, 0.3, 0.3, 0.3, 0.3)
    built = study(draws=2, loadings=loadings)
    plain = households(built.replay, built.work, built.people, (1,), SITE_SHARE)
    assert plain["let_in"] == 2 * 2
    row = new_strangers(built, 1, None)
    assert row["strangers"] == 2 * 6 * 5 * 2  # draws x residents x strangers x their clips
    assert row["let_in"] == 0
    assert row["unlocked"] == row["visits"] == 2 * 6
    assert row["learned"] > 0


def test_each_stranger_teaches_a_memory_once() -> None:
    """Two live clips of one stranger are one person: the second is doubted (the same face
    again), so a door of one cannot be taught that the site is one passer-by's face. With
    only two such people to learn from, ann and bo still let each other in."""
    built = study(draws=2)
    row = new_strangers(built, 1, None)
    # A memory learns cy and di once each at most, never their second clips (4 before).
    assert 0 < row["learned"] <= 2 * row["memories"]
    household = ["ann"]
    memory, doubted = built.learn(household, built.clips(["cy", "di"]), None)
    assert (memory.learned, doubted) == (2, 2)


def test_the_door_learns_only_visits_well_under_the_threshold() -> None:
    built = study()
    household = ["ann"]
    bo, cy = built.clips(["bo"]), built.clips(["cy"])
    # bo scores over the threshold at ann's door (it lets them in): never learned.
    memory, doubted = built.learn(household, bo, None)
    assert (memory.learned, doubted) == (0, len(bo))
    # cy scores well under it: learned, up to k, on top of a memory passed in (not changed);
    # cy's other clip is then the same face again, and di is learned.
    first, doubted = built.learn(household, cy[:1], None)
    assert (first.learned, doubted) == (1, 0)
    di = built.clips(["di"])
    both, doubted = built.learn(household, [*cy[1:], *di], 1, first)
    assert (both.learned, doubted) == (2, len(cy) - 1) and first.learned == 1
    expected = SiteMemory()
    for clip in (cy[0], di[0]):
        expected.add(built.pooled[clip])
    np.testing.assert_allclose(both.total, expected.total)


def test_a_site_where_every_stranger_scores_near_the_threshold_learns_nothing() -> None:
    """Every face loaded on the site alike: each stranger is let in or comes within
    LEARN_DOUBT of the threshold, so the door learns nothing and stays as it was."""
    built = study(loadings=(0.8, 0.8, 0.8, 0.8))
    plain = households(built.replay, built.work, built.people, (1,), SITE_SHARE)
    row = new_strangers(built, 1, None)
    assert row["learned"] == 0 and row["doubted"] > 0
    assert row["let_in"] == plain["let_in"] == plain["strangers"]


def test_guard_scores_say_how_far_under_the_threshold_each_visit_scored() -> None:
    report = guard_scores(study(loadings=(0.8, 0.8, 0.3, 0.3, 0.3, 0.3)))
    plain, learned3 = report["0"], report["3"]
    for row in (plain, learned3):
        assert row["resident_visits"] == 6 * 3  # each resident's 2 live sequences and visit
        assert row["stranger_visits"] == 6 * 5 * 2  # the 5 others' 2 sequences, per door
        assert row["resident_missed"] == row["resident_missed_learned"] == 0
        assert row["resident_missed_lowest"] is None and row["resident_lowest"] > 0
    # Without a memory ann and bo score over the threshold at each other's door (2 clips
    # each); with 3 learned from cy, di, ed and flo they fall under it, within LEARN_DOUBT.
    assert plain["stranger_over_threshold"] == 4 and plain["stranger_highest"] > 0
    assert learned3["stranger_over_threshold"] == 0
    assert learned3["stranger_doubted"] == 4
    assert -LEARN_DOUBT <= learned3["stranger_highest"] < 0
