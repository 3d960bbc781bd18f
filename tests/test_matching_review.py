"""Adversarial review of recognition matching (edge_app/matching.py, edge_app/cohort.py).

Odd input must name nobody: a sample the gallery could not use, a probe that is not finite,
two people the door cannot tell apart, a cohort with nothing to normalise against. And the
checks run when the gallery loads must stay bounded in memory as the gallery grows (an office
door may hold a few thousand people), without changing what they find.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from peaks import traced_peak

import edge_app.cohort as cohort_module
import edge_app.matching as matching
from edge_app.cohort import CohortNormaliser, load_cohort
from edge_app.gallery import EMBEDDING_DIM, GalleryMatrix
from edge_app.manifest import MANIFEST_NAME
from edge_app.matching import (
    NO_SCORE,
    SITE_SHARE,
    Lookalike,
    Matcher,
    MatchSettings,
    guard_lookalikes,
)
from edge_app.paths import REPO_MODELS

needs_models = pytest.mark.skipif(
    not (REPO_MODELS / MANIFEST_NAME).is_file(),
    reason=f"no built models in {REPO_MODELS}: run `make models`",
)


def units(rows: Any) -> np.ndarray:
    rows = np.asarray(rows, np.float64)
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def axis(index: int) -> np.ndarray:
    return np.eye(EMBEDDING_DIM, dtype=np.float32)[index]


def grouped(blocks: list[np.ndarray], names: list[str]) -> GalleryMatrix:
    person = np.repeat(np.arange(len(blocks)), [len(b) for b in blocks]).astype(np.int32)
    return GalleryMatrix(np.vstack(blocks).astype(np.float32), person, tuple(names))


def random_gallery(
    rng: np.random.Generator, counts: list[int], shared: float = 0.0
) -> GalleryMatrix:
    rows = rng.standard_normal((sum(counts), EMBEDDING_DIM))
    if shared:  # one camera's look in every face, so that site centring has work to do
        rows = rows / np.linalg.norm(rows, axis=1, keepdims=True) + shared * axis(0)
    person = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
    return GalleryMatrix(units(rows), person, tuple(f"p{i}" for i in range(len(counts))))


def shipped(site_centring: bool = True) -> tuple[MatchSettings, CohortNormaliser, np.ndarray]:
    """The shipped rule (manifest, cohort) as the door uses it, and the cohort's faces (LFW
    people, none enrolled anywhere: strangers filmed elsewhere)."""
    manifest = json.loads((REPO_MODELS / MANIFEST_NAME).read_text())
    recognition = manifest["recognition"]
    normaliser = load_cohort(REPO_MODELS, recognition)
    assert normaliser is not None
    settings = MatchSettings.from_recognition(recognition, site_centring=site_centring)
    faces = np.load(REPO_MODELS / recognition["cohort"]["file"]).astype(np.float32)
    return settings, normaliser, units(faces)


# --- a sample the gallery could not use -------------------------------------------------------


def test_unusable_samples_match_nobody_with_site_centring() -> None:
    """The gallery turns a stored sample that is not finite or is zero into a zero row, "matching
    nobody". Site centring used to move it to unit(-site): a real template, the same for
    every such row, that strangers who lack the door camera's look (and an empty face) match."""
    residents = [units([0.9 * axis(0) + 0.436 * axis(k)]) for k in range(1, 11)]
    unusable = np.zeros((2, EMBEDDING_DIM), np.float32)
    matrix = grouped([*residents, unusable], [f"r{k}" for k in range(10)] + ["Zed"])
    matcher = Matcher(matrix, MatchSettings(0.5, site_share=SITE_SHARE))
    assert matcher.site_shared > 0.7  # the residents share one strong direction
    elsewhere = axis(500)  # a face that shares nothing with this camera's faces
    result = matcher.identify(np.stack([elsewhere, np.zeros(EMBEDDING_DIM, np.float32)]))
    assert result.names == [None, None]
    np.testing.assert_array_equal(matcher.person_scores(elsewhere)[0, -1], 0.0)
    # a person with a usable sample beside an unusable one is still recognised by it
    mixed = grouped([*residents[:9], np.vstack([residents[9], unusable])], list("abcdefghij"))
    partly = Matcher(mixed, MatchSettings(0.5, site_share=SITE_SHARE))
    assert partly.identify(residents[9]).names == ["j"]


@needs_models
def test_unusable_samples_match_no_stranger_at_the_shipped_door() -> None:
    """The same with the shipped rule: residents filmed by one camera (LFW faces plus one
    direction, removing about 0.3 as at the NUAA doors), one person whose samples the gallery
    could not use, and LFW faces as strangers filmed elsewhere."""
    settings, normaliser, faces = shipped()
    site = units(np.random.default_rng(1).standard_normal(EMBEDDING_DIM))
    residents = [units(faces[i : i + 1] + 1.6 * site) for i in range(3)]
    unusable = np.zeros((4, EMBEDDING_DIM), np.float32)
    matrix = grouped([*residents, unusable], ["A", "B", "C", "Zed"])
    matcher = Matcher(matrix, settings, normaliser)
    assert 0.25 < matcher.site_shared * settings.site_share < 0.4
    strangers = faces[100:]
    assert "Zed" not in matcher.identify(strangers).names
    assert float(matcher.person_scores(strangers)[:, -1].max()) < settings.threshold - 0.3


# --- a probe that is not finite ---------------------------------------------------------------


@pytest.mark.parametrize("centred", [False, True])
def test_a_probe_that_is_not_finite_names_nobody_not_even_as_closest(centred: bool) -> None:
    """A NaN anywhere in a face's embedding made every score NaN and argmax then picked
    person 0 as its closest match, with a NaN score (logged, and written as NaN, which is not
    JSON, by `identify --json`). It is now scored like a face with nobody enrolled."""
    rng = np.random.default_rng(2)
    matrix = random_gallery(rng, [2, 3, 2], shared=0.5)
    matcher = Matcher(matrix, MatchSettings(0.3, site_share=SITE_SHARE if centred else 0.0))
    good = matrix.embeddings[3]
    spiked = good.copy()
    spiked[7] = np.inf
    with np.errstate(invalid="ignore"):
        result = matcher.identify(np.stack([np.full(EMBEDDING_DIM, np.nan), spiked, good]))
    assert result.names == [None, None, "p1"]
    assert result.best == [None, None, "p1"]
    np.testing.assert_array_equal(result.scores[:2], [NO_SCORE, NO_SCORE])
    np.testing.assert_array_equal(result.second[:2], [NO_SCORE, NO_SCORE])
    assert np.all(np.isfinite(result.scores)) and np.all(np.isfinite(result.second))


@needs_models
def test_a_probe_that_is_not_finite_names_nobody_at_the_shipped_door() -> None:
    settings, normaliser, faces = shipped()
    matcher = Matcher(grouped([faces[:2], faces[2:4]], ["A", "B"]), settings, normaliser)
    with np.errstate(invalid="ignore"):
        result = matcher.identify(np.full((1, EMBEDDING_DIM), np.nan, np.float32))
    assert result.names == [None] and result.best == [None]
    assert result.scores[0] == NO_SCORE


# --- ties ------------------------------------------------------------------------------------


def test_an_exact_tie_between_two_people_names_nobody() -> None:
    """Two people with the same score (the same photo under two names): the first enrolled
    used to be named, since best - second = 0 passes a margin of 0."""
    sample = units([axis(0) + axis(1)])
    matrix = grouped([sample, sample.copy(), units([axis(5)])], ["Ann", "Bob", "Cy"])
    result = Matcher(matrix, MatchSettings(0.5)).identify(sample)
    assert result.names == [None]
    assert result.best[0] in ("Ann", "Bob") and result.scores[0] == result.second[0]


def test_a_real_difference_still_decides_with_no_margin() -> None:
    ann, bob = units([0.8 * axis(0) + 0.6 * axis(1)]), units([0.7999 * axis(0) + 0.6 * axis(2)])
    result = Matcher(grouped([ann, bob], ["Ann", "Bob"]), MatchSettings(0.5)).identify(axis(0))
    assert result.names == ["Ann"]


@needs_models
def test_one_face_under_two_names_is_never_named_at_the_shipped_door() -> None:
    """With the shipped rule (cohort, centroids, site centring), the same samples under two
    names scored equal, or apart by float rounding (1e-7) in the matrix product, and either
    was named, often the first. A known visitor enrolled again with access, or the reverse,
    was let in or not by rounding. Now neither is named (the lookalike guard says why)."""
    settings, normaliser, faces = shipped()
    same = faces[:4]
    matrix = grouped([same, same.copy(), faces[4:8]], ["Ann", "Ann again", "Cy"])
    matcher = Matcher(matrix, settings, normaliser)
    result = matcher.identify(same)
    assert result.names == [None] * 4
    assert matcher.identify(faces[4:8]).names == ["Cy"] * 4
    guarded, found = guard_lookalikes(matcher, "raise")
    assert [(p.first, p.second, p.same_face) for p in found] == [("Ann", "Ann again", True)]
    assert guarded.settings.threshold == settings.threshold


# --- a cohort with nothing to normalise against -----------------------------------------------


def test_a_cohort_whose_members_are_all_alike_is_refused() -> None:
    """Identical members have no spread: every standard deviation fell to MIN_SPREAD and the
    map back to the cosine scale centred on their similarity to one another (1.0), so every
    stranger scored about 1, over any threshold, and the best person was named."""
    member = units(np.random.default_rng(4).standard_normal(EMBEDDING_DIM))
    with pytest.raises(ValueError, match="alike"):
        CohortNormaliser(np.tile(member, (20, 1)), "s-norm")
    with pytest.raises(ValueError, match="alike"):
        CohortNormaliser(units(np.random.default_rng(5).standard_normal((20, 512))), top_k=1)
    # members that differ, however few, are fine
    CohortNormaliser(units(np.random.default_rng(6).standard_normal((3, 512))), top_k=2)


# --- scale: the same results, in bounded memory -----------------------------------------------


def reference_lookalikes(matcher: Matcher) -> list[Lookalike]:
    """Matcher.lookalikes as it was: every face against every person in one block."""
    faces = matcher.faces
    if len(faces.names) < 2:
        return []
    scores = matcher.person_scores(faces.embeddings)
    scores[np.arange(len(faces)), faces.person] = -np.inf
    worst = np.maximum.reduceat(scores, faces.starts, axis=0)
    worst = np.maximum(worst, worst.T)
    first, second = np.nonzero(np.triu(worst >= matcher.settings.threshold, k=1))
    found = [
        Lookalike(faces.names[a], faces.names[b], round(float(worst[a, b]), 4))
        for a, b in zip(first, second, strict=True)
    ]
    return sorted(found, key=lambda pair: -pair.score)


GALLERIES = [  # (samples per person, aggregate, cohort, centroid, site share)
    ([3, 1, 4, 2, 5] * 8, "best", True, True, SITE_SHARE),
    ([1] * 30 + [12], "trimmed_mean", True, False, SITE_SHARE),
    ([2, 5] * 15, "mean", False, True, 0.0),
    ([40, 1, 1, 2, 3, 1, 2], "best", True, True, 0.0),
]


@pytest.mark.parametrize(("counts", "aggregate", "with_cohort", "centroid", "share"), GALLERIES)
def test_lookalikes_in_chunks_find_what_one_block_found(
    monkeypatch: pytest.MonkeyPatch,
    counts: list[int],
    aggregate: str,
    with_cohort: bool,
    centroid: bool,
    share: float,
) -> None:
    rng = np.random.default_rng(len(counts))
    matrix = random_gallery(rng, counts, shared=0.4)
    normaliser = None
    if with_cohort:
        normaliser = CohortNormaliser(units(rng.standard_normal((60, EMBEDDING_DIM))), top_k=20)
    mode = None if normaliser is None else normaliser.mode
    # a low threshold, so that many pairs are found and their order matters
    settings = MatchSettings(
        0.12, aggregate=aggregate, normalisation=mode, centroid=centroid, site_share=share
    )
    matcher = Matcher(matrix, settings, normaliser)
    expected = reference_lookalikes(matcher)
    assert len(expected) > 5
    assert matcher.lookalikes() == expected
    monkeypatch.setattr(matching, "CHUNK", 700)  # a few people's faces at a time
    monkeypatch.setattr(cohort_module, "CHUNK", 900)
    chunked = Matcher(matrix, matcher.settings, normaliser)
    found = chunked.lookalikes()
    assert [(p.first, p.second) for p in found] == [(p.first, p.second) for p in expected]
    # Float rounding in the matrix product may differ with the chunk's size (last bit only).
    np.testing.assert_allclose([p.score for p in found], [p.score for p in expected], atol=2e-4)


def test_person_scores_of_a_large_batch_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(8)
    matrix = random_gallery(rng, [1, 4, 2, 7, 3] * 6, shared=0.3)
    normaliser = CohortNormaliser(units(rng.standard_normal((50, EMBEDDING_DIM))), top_k=10)
    settings = MatchSettings(
        0.2, aggregate="trimmed_mean", normalisation="s-norm", centroid=True, site_share=0.75
    )
    probes = units(rng.standard_normal((333, EMBEDDING_DIM)))
    whole = Matcher(matrix, settings, normaliser)
    expected = whole.identify(probes)
    monkeypatch.setattr(matching, "CHUNK", 1000)
    monkeypatch.setattr(cohort_module, "CHUNK", 1000)
    chunked = Matcher(matrix, settings, normaliser)
    np.testing.assert_allclose(
        chunked.person_scores(probes), whole.person_scores(probes), rtol=0, atol=1e-5
    )
    result = chunked.identify(probes)
    assert result.names == expected.names and result.best == expected.best
    one_by_one = [chunked.identify(p).names[0] for p in probes[:20]]
    assert one_by_one == expected.names[:20]


@pytest.mark.parametrize("threshold", [0.9, -1.0], ids=["few match", "everyone matches"])
def test_the_lookalike_check_is_bounded_in_memory(threshold: float) -> None:
    """It scored every stored face against every template in one block, a few arrays of
    faces x templates float32: 0.6 GB at 1,000 people x 5 samples and about 15 GB at 5,000,
    more than a Raspberry Pi has, at every gallery load. And a review: the tiles of "best"
    kept every face x template above the threshold, 1.6 GB here when everyone matches (a
    threshold set too low, a camera that makes every face alike); they keep each pair once."""
    rng = np.random.default_rng(10)
    people = 800
    matrix = random_gallery(rng, [5] * people)
    normaliser = CohortNormaliser(units(rng.standard_normal((300, EMBEDDING_DIM))), top_k=300)
    settings = MatchSettings(
        threshold, normalisation="s-norm", centroid=True, site_share=SITE_SHARE
    )
    matcher = Matcher(matrix, settings, normaliser)
    found, peak = traced_peak(matcher.lookalikes)
    one_block = len(matrix) * len(matcher.matrix) * 4  # one faces x templates float32 array
    assert one_block > 70e6
    assert len(found) == (people * (people - 1) // 2 if threshold < 0 else 0)
    # About 45 MB when few match, 130 MB when all 319,600 pairs do (their Lookalike list
    # included), whatever the number of faces each has.
    assert peak < (100e6 if threshold > 0 else 200e6)


def test_cohort_statistics_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(11)
    normaliser = CohortNormaliser(units(rng.standard_normal((40, EMBEDDING_DIM))), top_k=7)
    rows = units(rng.standard_normal((101, EMBEDDING_DIM)))
    mean, spread = normaliser.stats(rows)
    monkeypatch.setattr(cohort_module, "CHUNK", 40 * 9)
    chunked_mean, chunked_spread = normaliser.stats(rows)
    np.testing.assert_allclose(chunked_mean, mean, atol=1e-6)
    np.testing.assert_allclose(chunked_spread, spread, atol=1e-6)
    assert chunked_mean.shape == chunked_spread.shape == (101,)


# --- checked and fine (kept as regressions) ---------------------------------------------------


def test_float64_gallery_and_probes_decide_as_float32() -> None:
    rng = np.random.default_rng(12)
    matrix = random_gallery(rng, [2, 3, 1, 4], shared=0.3)
    wide = GalleryMatrix(matrix.embeddings.astype(np.float64), matrix.person, matrix.names)
    settings = MatchSettings(0.3, aggregate="trimmed_mean", centroid=True, site_share=0.75)
    probes = matrix.embeddings + 0.05 * rng.standard_normal(matrix.embeddings.shape)
    narrow = Matcher(matrix, settings).identify(probes.astype(np.float32))
    widened = Matcher(wide, settings).identify(probes)
    assert widened.names == narrow.names
    np.testing.assert_allclose(widened.scores, narrow.scores, atol=1e-5)
    assert widened.scores.dtype == np.float32


@needs_models
def test_odd_galleries_at_the_shipped_door() -> None:
    """Empty, one person, no probes: nobody named, nothing raised."""
    settings, normaliser, faces = shipped()
    empty = GalleryMatrix(np.zeros((0, EMBEDDING_DIM), np.float32), np.zeros(0, np.int32), ())
    matcher = Matcher(empty, settings, normaliser)
    assert matcher.identify(faces[:3]).names == [None] * 3
    assert matcher.lookalikes() == []
    one = Matcher(grouped([faces[:2]], ["Ann"]), settings, normaliser)
    result = one.identify(np.stack([faces[0], faces[500]]))
    assert result.names == ["Ann", None] and list(result.second) == [NO_SCORE, NO_SCORE]
    assert one.identify(np.zeros((0, EMBEDDING_DIM), np.float32)).names == []
