"""Per-person aggregation and the threshold/margin rules, on embeddings with known cosines."""

from __future__ import annotations

import re

import numpy as np
import pytest

import edge_app.gallery as gallery_module
from edge_app.config import AGGREGATES
from edge_app.errors import UserError
from edge_app.gallery import EMBEDDING_DIM, GalleryMatrix
from edge_app.matching import (
    NO_SCORE,
    THRESHOLD_STEP,
    TIE,
    Matcher,
    MatchSettings,
    accepts,
    stranger_threshold,
    top_two,
)

PROBE = np.eye(EMBEDDING_DIM, dtype=np.float32)[0]


def with_cosines(cosines: list[float], first_axis: int) -> np.ndarray:
    """Unit vectors whose cosine to PROBE is each given value (orthogonal parts differ)."""
    rows = np.zeros((len(cosines), EMBEDDING_DIM), np.float32)
    rows[:, 0] = cosines
    axes = np.arange(first_axis, first_axis + len(cosines))
    rows[np.arange(len(cosines)), axes] = np.sqrt(1 - np.square(cosines))
    return rows


def gallery_of(people: dict[str, list[float]]) -> GalleryMatrix:
    blocks, person, axis = [], [], 1
    for index, cosines in enumerate(people.values()):
        blocks.append(with_cosines(cosines, axis))
        person += [index] * len(cosines)
        axis += len(cosines)
    return GalleryMatrix(np.vstack(blocks), np.array(person, np.int32), tuple(people))


def settings(aggregate: str = "best", threshold: float = 0.5, margin: float = 0.0) -> MatchSettings:
    return MatchSettings(threshold=threshold, margin=margin, aggregate=aggregate)


def test_aggregates_per_person() -> None:
    matrix = gallery_of({"Ann": [0.9, 0.5, 0.4, 0.3, -0.2], "Ben": [0.6, 0.2]})
    scores = {a: Matcher(matrix, settings(a)).person_scores(PROBE)[0] for a in AGGREGATES}
    np.testing.assert_allclose(scores["best"], [0.9, 0.6], atol=1e-6)
    np.testing.assert_allclose(scores["mean"], [0.38, 0.4], atol=1e-6)
    # 5 samples, trim 0.2: the top (0.9) and bottom (-0.2) go; 2 samples: nothing trimmed.
    np.testing.assert_allclose(scores["trimmed_mean"], [0.4, 0.4], atol=1e-6)


@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_vectorised_scores_equal_a_per_person_loop(aggregate: str) -> None:
    rng = np.random.default_rng(3)
    counts = [1, 7, 2, 5, 3, 10, 4]
    embeddings = rng.normal(size=(sum(counts), EMBEDDING_DIM)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    probes = embeddings[[0, 4, 20]] + rng.normal(scale=0.05, size=(3, EMBEDDING_DIM))
    probes = (probes / np.linalg.norm(probes, axis=1, keepdims=True)).astype(np.float32)
    person = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
    matrix = GalleryMatrix(embeddings, person, tuple(f"p{i}" for i in range(len(counts))))
    got = Matcher(matrix, MatchSettings(0.5, aggregate=aggregate, trim=0.2)).person_scores(probes)

    expected = np.zeros((3, len(counts)))
    for p in range(len(counts)):
        sims = np.sort(probes @ embeddings[person == p].T, axis=1)
        cut = int(np.floor(0.2 * counts[p])) if aggregate == "trimmed_mean" else 0
        kept = sims[:, cut : counts[p] - cut]
        expected[:, p] = kept.max(axis=1) if aggregate == "best" else kept.mean(axis=1)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_threshold_margin_and_second_best() -> None:
    matrix = gallery_of({"Ann": [0.80, 0.1], "Ben": [0.75], "Cat": [0.2]})
    strict = Matcher(matrix, settings(margin=0.1)).identify(PROBE)
    assert strict.names == [None]  # Ann wins, but not by the margin
    assert strict.best == ["Ann"]
    np.testing.assert_allclose([strict.scores[0], strict.second[0]], [0.80, 0.75], atol=1e-6)
    assert Matcher(matrix, settings(margin=0.03)).identify(PROBE).names == ["Ann"]
    below = Matcher(matrix, settings(threshold=0.85)).identify(PROBE)
    assert below.names == [None] and below.best == ["Ann"]


def test_several_probes_in_one_call() -> None:
    matrix = gallery_of({"Ann": [0.9], "Ben": [0.1]})
    other = np.eye(EMBEDDING_DIM, dtype=np.float32)[1]  # Ann's sample's orthogonal part
    far = np.eye(EMBEDDING_DIM, dtype=np.float32)[100]
    result = Matcher(matrix, settings(threshold=0.3)).identify(np.stack([PROBE, other, far]))
    assert result.names == ["Ann", "Ann", None]
    assert result.scores.shape == result.second.shape == (3,)


def test_single_person_second_is_bottom_of_scale() -> None:
    result = Matcher(gallery_of({"Ann": [0.7]}), settings(margin=0.5)).identify(PROBE)
    assert result.names == ["Ann"]
    assert result.second[0] == NO_SCORE


def test_empty_gallery_knows_nobody() -> None:
    empty = GalleryMatrix(np.zeros((0, EMBEDDING_DIM), np.float32), np.zeros(0, np.int32), ())
    result = Matcher(empty, settings()).identify(np.stack([PROBE, PROBE]))
    assert result.names == [None, None]
    np.testing.assert_array_equal(result.scores, [NO_SCORE, NO_SCORE])


def test_settings_from_manifest_and_overrides() -> None:
    recognition = {"threshold": 0.42, "margin": 0.05, "aggregate": "trimmed_mean"}
    loaded = MatchSettings.from_recognition(recognition)
    assert (loaded.threshold, loaded.margin, loaded.aggregate) == (0.42, 0.05, "trimmed_mean")
    overridden = MatchSettings.from_recognition(recognition, threshold=0.6, aggregate="best")
    assert (overridden.threshold, overridden.margin, overridden.aggregate) == (0.6, 0.05, "best")
    with pytest.raises(UserError, match="no recognition.threshold"):
        MatchSettings.from_recognition({})
    with pytest.raises(UserError, match="aggregate must be one of"):
        MatchSettings(0.5, aggregate="median")
    # Margin and trim in the door's ranges (manifest.RECOGNITION_RANGES); any cosine is a
    # threshold (evaluations score with -1), the door's sources hold it above 0.
    for bad, refusal in (
        (dict(threshold=1.5), "threshold 1.5 is outside the cosine scale [-1, 1]"),
        (dict(threshold=0.5, margin=2.5), "margin 2.5 is out of range (at least 0 and at most 2)"),
        (dict(threshold=0.5, trim=0.5), "trim 0.5 is out of range (at least 0 and below 0.5)"),
    ):
        with pytest.raises(UserError, match=re.escape(refusal)):
            MatchSettings(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_scores_stay_on_the_cosine_scale_whatever_the_rows(aggregate: str) -> None:
    """A row that is not unit length (the gallery refuses and renormalises them; this is the
    last guard) cannot push a score past 1 or below -1."""
    matrix = gallery_of({"Mallory": [0.9], "Bob": [0.2, 0.1]})
    inflated = matrix.embeddings.copy()
    inflated[0] *= 1000
    inflated[1] *= -1000
    matcher = Matcher(GalleryMatrix(inflated, matrix.person, matrix.names), settings(aggregate))
    scores = matcher.person_scores(PROBE[None])
    assert scores.max() <= 1.0 and scores.min() >= -1.0
    np.testing.assert_allclose(scores[0, 0], 1.0)


def test_person_centroid_is_one_more_row_last_in_each_block() -> None:
    rng = np.random.default_rng(5)
    counts = [3, 1, 2]
    rows = rng.normal(size=(sum(counts), EMBEDDING_DIM)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    person = np.repeat(np.arange(3), counts).astype(np.int32)
    matrix = GalleryMatrix(rows, person, ("a", "b", "c"))
    grown = matrix.with_centroids()
    assert grown.names == matrix.names
    np.testing.assert_array_equal(grown.counts, np.array(counts) + 1)
    np.testing.assert_array_equal(grown.person, np.repeat(np.arange(3), np.array(counts) + 1))
    for p, start in enumerate(matrix.starts):
        own = rows[start : start + counts[p]]
        block = grown.embeddings[grown.person == p]
        np.testing.assert_array_equal(block[:-1], own)  # the samples, untouched and in order
        mean = own.mean(axis=0)
        np.testing.assert_allclose(block[-1], mean / np.linalg.norm(mean), atol=1e-6)
    empty = GalleryMatrix(np.zeros((0, EMBEDDING_DIM), np.float32), np.zeros(0, np.int32), ())
    assert len(empty.with_centroids()) == 0


@pytest.mark.parametrize("rows_at_once", [1, 5, 8192])
def test_person_sums_a_few_rows_at_a_time_are_the_whole_gallery_sums(
    monkeypatch: pytest.MonkeyPatch, rows_at_once: int
) -> None:
    """Summed in float64 a few thousand rows at a time (not a float64 copy of the whole
    gallery, 400 MB at 5,000 people x 10 rows): the same sums, bit for bit, and so the same
    centroids and site direction."""
    rng = np.random.default_rng(6)
    counts = [7, 1, 12, 3, 1, 9]
    rows = rng.normal(size=(sum(counts), EMBEDDING_DIM)).astype(np.float32)
    person = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
    matrix = GalleryMatrix(rows, person, tuple("abcdef"))
    whole = np.add.reduceat(rows.astype(np.float64), matrix.starts, axis=0)
    monkeypatch.setattr(gallery_module, "SUM_ROWS", rows_at_once)
    sums = matrix.person_sums()
    assert sums.dtype == np.float64
    np.testing.assert_array_equal(sums, whole)


def test_centroid_setting_matches_a_probe_between_two_photos() -> None:
    # Ann's two photos are 0.6 from the probe each, but their centroid is much closer.
    matrix = gallery_of({"Ann": [0.6, 0.6], "Ben": [0.5]})
    plain = Matcher(matrix, settings(threshold=0.7)).identify(PROBE)
    assert plain.names == [None]
    both = Matcher(matrix, MatchSettings(threshold=0.7, centroid=True)).identify(PROBE)
    assert both.names == ["Ann"]
    # two orthogonal remainders of 0.8 each average to length 0.8/sqrt(2)
    expected = 0.6 / np.sqrt(0.36 + 0.32)
    np.testing.assert_allclose(both.scores, [expected], atol=1e-6)


def test_centroid_comes_from_the_manifest_and_is_checked() -> None:
    assert MatchSettings.from_recognition({"threshold": 0.5}).centroid is False
    assert MatchSettings.from_recognition({"threshold": 0.5, "centroid": True}).centroid is True
    with pytest.raises(UserError, match="recognition.centroid must be true or false"):
        MatchSettings.from_recognition({"threshold": 0.5, "centroid": "yes"})


def test_derived_rule_records_the_centroid_and_the_door_follows_it() -> None:
    from converter.recognition import TARGET_FAR, derive_from_embeddings

    rng = np.random.default_rng(0)
    people, photos = 60, 4
    centres = rng.normal(size=(people, EMBEDDING_DIM))
    noisy = np.repeat(centres, photos, axis=0) + rng.normal(size=(people * photos, EMBEDDING_DIM))
    embeddings = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
    names = [f"p{p}/p{p}_{k + 1:04d}.jpg" for p in range(people) for k in range(photos)]
    for centroid in (True, False):
        derived = derive_from_embeddings(embeddings, names, mirrors=embeddings, centroid=centroid)
        assert derived["centroid"] is centroid
        assert ("centroid" in derived["templates"]) is centroid
        assert MatchSettings.from_recognition(derived).centroid is centroid
        chosen = [
            c
            for c in derived["candidates"]
            if (c["aggregate"], c["margin"], c["threshold"])
            == (derived["aggregate"], derived["margin"], derived["threshold"])
        ]
        assert chosen and chosen[0]["stranger_accept"] <= TARGET_FAR


def test_the_accept_rule_reaches_the_threshold_and_names_nobody_on_a_tie() -> None:
    best = np.array([0.6, 0.6, 0.6, 0.6, 0.6, 0.59, np.nan], np.float32)
    second = np.array([0.2, 0.6, 0.6 - TIE / 2, 0.6 - 2 * TIE, NO_SCORE, 0.2, 0.2], np.float32)
    # The threshold itself is reached (>=); a tie (within TIE) names nobody even with margin 0;
    # NaN is nobody.
    expected = [True, False, False, True, True, False, False]
    assert accepts(best, second, 0.6, 0.0).tolist() == expected
    # A margin is reached (>=) as the threshold is; above TIE it alone decides.
    assert accepts(
        np.array([0.75], np.float32), np.array([0.5], np.float32), 0.6, 0.25
    ).tolist() == [True]
    assert accepts(
        np.array([0.75], np.float32), np.array([0.5], np.float32), 0.6, 0.26
    ).tolist() == [False]
    # The door decides exactly so: one face enrolled under two names is nobody's.
    matrix = gallery_of({"Ann": [0.8], "Ben": [0.8], "Cat": [0.2]})
    matrix = GalleryMatrix(matrix.embeddings[[0, 0, 2]], matrix.person, matrix.names)
    found = Matcher(matrix, settings(threshold=0.5)).identify(PROBE)
    assert found.names == [None] and found.best == ["Ann"]
    assert found.scores[0] == found.second[0]
    assert not accepts(found.scores, found.second, 0.5, 0.0)[0]


def test_top_two_is_the_best_person_and_the_runner_up() -> None:
    scores = np.array([[0.1, 0.7, 0.3], [0.5, 0.5, 0.2]], np.float32)
    index, best, second = top_two(scores)
    assert index.tolist() == [1, 0]
    assert best.tolist() == pytest.approx([0.7, 0.5])
    assert second.tolist() == pytest.approx([0.3, 0.5])  # a tie: the same score twice
    _, _, alone = top_two(np.array([[0.4]], np.float32))
    assert alone.tolist() == [NO_SCORE]


def test_stranger_threshold_lets_in_at_most_that_many_and_skips_ties() -> None:
    # The first stranger ties two people (the door names nobody): they do not count against
    # the limit, so the threshold sits just above the second stranger the door must refuse.
    best = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    second = np.array([0.9, 0.1, 0.1, 0.1], np.float32)
    threshold = stranger_threshold(best, second, 0.0, most=1)
    assert threshold == pytest.approx(0.7 + THRESHOLD_STEP)
    assert accepts(best, second, threshold, 0.0).sum() == 1
    assert stranger_threshold(best, second, 0.0, far=0.25) == threshold  # floor(0.25 * 4) = 1
    # A margin keeping enough of them out leaves nothing to raise: the bottom of the scale.
    assert stranger_threshold(best, second, 0.75, most=1) == NO_SCORE
    with pytest.raises(ValueError, match="exactly one"):
        stranger_threshold(best, second, 0.0)


def test_stranger_threshold_is_the_derivations_rule_where_nothing_ties() -> None:
    rng = np.random.default_rng(4)
    best = rng.uniform(0.0, 0.9, 5000).astype(np.float32)
    second = (best - rng.uniform(0.001, 0.2, 5000)).astype(np.float32)
    for margin in (0.0, 0.03, 0.1):
        ranked = np.sort(best[(best - second) >= margin])[::-1]
        allowed = int(np.floor(1e-3 * len(best)))
        before = float(ranked[allowed] + 1e-4) if allowed < len(ranked) else -1.0
        assert stranger_threshold(best, second, margin, far=1e-3) == before


def test_the_derivation_counts_a_tie_as_the_door_does() -> None:
    """Two enrolled people with the same face: the door names neither, so the converter's
    derivation counts none of their probes identified (it once counted the first person's,
    whose argmax came first)."""
    from converter.recognition import derive_from_embeddings

    rng = np.random.default_rng(5)
    face = rng.normal(size=EMBEDDING_DIM)
    face /= np.linalg.norm(face)
    strangers = rng.normal(size=(40, EMBEDDING_DIM))
    strangers /= np.linalg.norm(strangers, axis=1, keepdims=True)
    embeddings = np.concatenate([np.tile(face, (8, 1)), strangers]).astype(np.float32)
    names = [f"{p}/{p}_{k + 1:04d}.jpg" for p in ("Ann", "Ben") for k in range(4)]
    names += [f"s{k}/s{k}_0001.jpg" for k in range(40)]
    derived = derive_from_embeddings(embeddings, names, centroid=False)
    assert [c["identified"] for c in derived["candidates"]] == [0.0] * len(derived["candidates"])
    # ... as the door does with the same gallery.
    gallery = GalleryMatrix(
        embeddings[[0, 1, 4, 5]], np.array([0, 0, 1, 1], np.int32), ("Ann", "Ben")
    )
    door = Matcher(gallery, settings(threshold=derived["threshold"]))
    assert door.identify(embeddings[[2, 3, 6, 7]]).names == [None] * 4


def test_lookalikes_names_enrolled_people_who_match_each_other() -> None:
    rng = np.random.default_rng(9)
    base = rng.normal(size=(4, EMBEDDING_DIM))
    # Cy's second photo is close to Ann's face (cosine about 0.8); Ben and Dee are apart.
    cy_like_ann = 0.8 * base[0] / np.linalg.norm(base[0]) + 0.6 * unit(rng, base[0])
    rows = np.stack([base[0], base[0] + 0.1 * rng.normal(size=EMBEDDING_DIM), base[1]])
    rows = np.concatenate([rows, [base[2], cy_like_ann, base[3]]])
    rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    person = np.array([0, 0, 1, 2, 2, 3], np.int32)
    matrix = GalleryMatrix(rows, person, ("Ann", "Ben", "Cy", "Dee"))
    found = Matcher(matrix, settings(threshold=0.7)).lookalikes()
    assert [(p.first, p.second) for p in found] == [("Ann", "Cy")]
    assert found[0].score == pytest.approx(float(max(rows[:2] @ rows[4])), abs=1e-4)
    assert Matcher(matrix, settings(threshold=0.9)).lookalikes() == []
    # With centroids the faces are still scored against the other people only.
    with_centroids = MatchSettings(threshold=0.7, centroid=True)
    assert [(p.first, p.second) for p in Matcher(matrix, with_centroids).lookalikes()] == [
        ("Ann", "Cy")
    ]
    one = GalleryMatrix(rows[:2], np.zeros(2, np.int32), ("Ann",))
    assert Matcher(one, settings(threshold=0.0)).lookalikes() == []


def unit(rng: np.random.Generator, away_from: np.ndarray) -> np.ndarray:
    """A random unit vector orthogonal to `away_from`."""
    v = rng.normal(size=away_from.shape)
    v -= (v @ away_from) / (away_from @ away_from) * away_from
    return v / np.linalg.norm(v)


def test_guard_raises_the_threshold_just_above_the_lookalikes_or_only_reports() -> None:
    from edge_app.matching import LOOKALIKE_STEP, guard_lookalikes

    close = gallery_of({"Ann": [0.9], "Ben": [0.85]})  # Ann and Ben: cosine about 0.77
    matcher = Matcher(close, settings(threshold=0.6))
    (pair,) = matcher.lookalikes()
    raised, found = guard_lookalikes(matcher, "raise")
    assert found == [pair]
    assert raised.settings.threshold == pytest.approx(pair.score + LOOKALIKE_STEP)
    assert raised.settings.threshold > matcher.settings.threshold  # only ever up
    warned, found = guard_lookalikes(matcher, "warn")
    assert warned is matcher and found == [pair]
    apart = Matcher(gallery_of({"Ann": [0.9], "Ben": [0.1]}), settings(threshold=0.6))
    assert guard_lookalikes(apart, "raise") == (apart, [])
    with pytest.raises(UserError, match="lookalikes must be one of raise, warn"):
        guard_lookalikes(matcher, "ignore")


def test_a_pair_scoring_as_one_face_is_reported_but_never_raises_the_threshold() -> None:
    from edge_app.matching import SAME_FACE, guard_lookalikes

    # Ann and Twin: the same face (cosine 0.998); Ann and Ben: alike (0.8).
    rng = np.random.default_rng(3)
    ann, noise, other = rng.normal(size=(3, EMBEDDING_DIM))
    ann /= np.linalg.norm(ann)
    twin = ann + 0.06 * noise / np.linalg.norm(noise)
    other -= (other @ ann) * ann
    ben = 0.8 * ann + 0.6 * other / np.linalg.norm(other)
    rows = np.stack([ann, twin / np.linalg.norm(twin), ben]).astype(np.float32)
    matrix = GalleryMatrix(rows, np.arange(3, dtype=np.int32), ("Ann", "Twin", "Ben"))
    matcher = Matcher(matrix, settings(threshold=0.6))
    found = matcher.lookalikes()
    same = [(p.first, p.second) for p in found if p.same_face]
    assert same == [("Ann", "Twin")]
    raised, reported = guard_lookalikes(matcher, "raise")
    assert reported == found
    alike = max(p.score for p in found if not p.same_face)
    assert raised.settings.threshold == pytest.approx(alike + 0.01)
    assert raised.settings.threshold < SAME_FACE
    only_twins = GalleryMatrix(rows[:2], np.arange(2, dtype=np.int32), ("Ann", "Twin"))
    plain = Matcher(only_twins, settings(threshold=0.6))
    assert guard_lookalikes(plain, "raise")[0] is plain  # nothing to raise for: unchanged


def household(rng: np.random.Generator, shared: float, people: int = 6) -> tuple:
    """Unit faces of `people` people, two each: `shared` of one common direction (a camera,
    a light) plus each person's own, orthogonal to it; and that direction."""
    common = rng.normal(size=EMBEDDING_DIM)
    common /= np.linalg.norm(common)
    own = np.stack([unit(rng, common) for _ in range(people)])
    faces = []
    for person in own:
        for _ in range(2):
            jitter = unit(rng, common)
            face = shared * common + np.sqrt(1 - shared**2) * (0.95 * person + 0.31 * jitter)
            faces.append(face / np.linalg.norm(face))
    matrix = GalleryMatrix(
        np.asarray(faces, np.float32),
        np.repeat(np.arange(people), 2).astype(np.int32),
        tuple(f"P{i}" for i in range(people)),
    )
    return matrix, common, own


def test_site_direction_is_what_people_share_and_nothing_for_one_or_unrelated_people() -> None:
    from edge_app.matching import site_direction

    rng = np.random.default_rng(5)
    matrix, common, _ = household(rng, shared=0.6)
    found = site_direction(matrix)
    assert found.shape == (EMBEDDING_DIM,) and found.dtype == np.float32
    # It points where they share (the people's own faces add about 1/sqrt(6) of noise) and
    # holds most of the shared 0.6.
    assert found @ common / np.linalg.norm(found) > 0.85
    assert 0.3 < found @ common < 0.6
    unrelated, _, _ = household(rng, shared=0.0)
    assert np.linalg.norm(site_direction(unrelated)) < 0.05
    one = GalleryMatrix(matrix.embeddings[:2], np.zeros(2, np.int32), ("P0",))
    assert not np.any(site_direction(one))  # one person: nobody to compare with
    empty = GalleryMatrix(np.zeros((0, EMBEDDING_DIM), np.float32), np.zeros(0, np.int32), ())
    assert not np.any(site_direction(empty))


def test_site_centring_keeps_a_stranger_of_the_same_camera_out_and_residents_in() -> None:
    from edge_app.matching import SITE_SHARE

    rng = np.random.default_rng(6)
    matrix, common, own = household(rng, shared=0.6)
    newcomer = unit(rng, common)
    newcomer -= own.T @ (own @ newcomer)  # nobody enrolled
    stranger = 0.6 * common + 0.8 * newcomer / np.linalg.norm(newcomer)
    resident = 0.6 * common + 0.8 * (0.8 * own[0] + 0.6 * unit(rng, common))
    probes = np.stack([stranger, resident / np.linalg.norm(resident)]).astype(np.float32)
    plain = Matcher(matrix, settings(threshold=0.35)).identify(probes)
    assert plain.names[0] is not None and plain.names[1] == "P0"  # the camera lets him in
    centred = Matcher(matrix, MatchSettings(threshold=0.35, site_share=SITE_SHARE))
    result = centred.identify(probes)
    assert result.names == [None, "P0"]
    assert result.scores[0] < plain.scores[0] - 0.2  # 0.37 -> 0.13; the resident 0.85 -> 0.78
    # The same faces are no longer lookalikes of one another at that threshold.
    assert Matcher(matrix, settings(threshold=0.35)).lookalikes()
    assert centred.lookalikes() == []
    with pytest.raises(UserError, match="site_share 1.5 must be between 0 and 1"):
        MatchSettings(threshold=0.4, site_share=1.5)


def test_site_centring_changes_nothing_with_one_person_enrolled() -> None:
    from edge_app.matching import SITE_SHARE

    matrix = gallery_of({"Ann": [0.9, 0.8]})
    plain = Matcher(matrix, settings()).person_scores(PROBE)
    centred = Matcher(matrix, MatchSettings(threshold=0.5, site_share=SITE_SHARE))
    np.testing.assert_array_equal(centred.person_scores(PROBE), plain)
