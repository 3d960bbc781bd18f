"""benchmarks.peer_accuracy: the adapter between face_recognition's boxes and ours, the paired
comparison and the encodings cache run without dlib; the one test that runs the peer itself
skips where face_recognition is not installed (it lives in .venv-bench only, by design)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from benchmarks.peer_accuracy import (
    all_pairs_comparison,
    box_to_css,
    css_to_faces,
    encode_all,
    euclidean,
    every_pair,
    load_cache,
    mcnemar_exact,
    paired_comparison,
    pick_face,
    save_cache,
    score,
    threshold_at_far,
)
from edge_app.faces import Faces
from edge_app.lfw import central_face, fallback_face, read_pairs

LFW_SAMPLE = Path(__file__).resolve().parent / "data" / "lfw_sample"
PEER_MISSING = importlib.util.find_spec("face_recognition") is None
PEER_REASON = (
    "face_recognition/dlib are installed in .venv-bench only (`make .venv-bench/.ready`), "
    "not in the project's .venv"
)


def test_css_to_faces_turns_inclusive_top_right_bottom_left_into_x1_y1_x2_y2() -> None:
    faces = css_to_faces([(10, 89, 89, 10), (0, 50, 30, 20)])
    assert faces.boxes.tolist() == [[10, 10, 90, 90], [20, 0, 51, 31]]
    # an 80 px dlib window (right = left + 79) is 80 px wide in our convention
    assert faces.sizes.tolist() == [80, 31]
    assert len(faces) == 2 and faces.landmarks.shape == (2, 5, 2)


def test_css_to_faces_of_no_detection_is_empty() -> None:
    assert len(css_to_faces([])) == 0


def test_box_to_css_inverts_css_to_faces_and_stays_inside_the_image() -> None:
    css = (12, 140, 171, 61)
    assert box_to_css(css_to_faces([css]).boxes[0], 250, 250) == css
    # a box past the borders is clipped, as face_recognition trims its own boxes
    assert box_to_css(np.array([-5.0, -3.0, 400.0, 260.0]), 250, 250) == (0, 249, 249, 0)


def test_pick_face_takes_the_face_our_protocol_takes() -> None:
    """A large face in the corner against a smaller one at the centre: central_face's
    size-minus-offset rule picks the central one, for dlib's boxes as for ours."""
    corner, central = (0, 119, 119, 0), (95, 155, 155, 95)
    ours = Faces(
        np.array([[0, 0, 120, 120], [95, 95, 156, 156]], np.float32),
        np.ones(2, np.float32),
        np.zeros((2, 5, 2), np.float32),
    )
    assert central_face(ours, 250, 250) == 1
    assert pick_face([corner, central], 250, 250) == (central, True)
    assert pick_face([central, corner], 250, 250) == (central, True)
    # of two faces equally central, the larger one
    small, large = (100, 149, 149, 100), (80, 169, 169, 80)
    assert pick_face([small, large], 250, 250) == (large, True)


def test_pick_face_without_a_detection_uses_our_fallback_box() -> None:
    css, found = pick_face([], 250, 250)
    assert not found
    assert css == box_to_css(fallback_face(250, 250).boxes[0], 250, 250)
    top, right, bottom, left = css
    # the median LFW face: LFW_MEDIAN_BOX of a 250 px image
    assert (left, top, right + 1, bottom + 1) == (78, 65, 172, 188)


def test_mcnemar_exact_p_values() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 1024)
    assert mcnemar_exact(0, 10) == mcnemar_exact(10, 0)
    # 8 against 2: P(X <= 2) for binomial(10, 1/2) = 56/1024, two-sided
    assert mcnemar_exact(8, 2) == pytest.approx(2 * 56 / 1024)


def test_paired_comparison_counts_discordant_pairs_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    peer = rng.random(1000) < 0.98
    ours = peer.copy()
    ours[np.flatnonzero(~peer)[:10]] = True  # ours right on 10 pairs the peer gets wrong
    ours[np.flatnonzero(peer)[:4]] = False  # and wrong on 4 the peer gets right
    result = paired_comparison(ours, peer, rounds=2000)
    assert result["only_ours_right"] == 10 and result["only_peer_right"] == 4
    assert result["difference_pp"] == pytest.approx(0.6)
    low, high = result["bootstrap_95ci_pp"]
    assert low < 0.6 < high
    assert result["mcnemar_exact_p"] == pytest.approx(mcnemar_exact(10, 4))
    assert paired_comparison(ours, peer, rounds=2000) == result
    with pytest.raises(ValueError):
        paired_comparison(ours[:10], peer)


def test_score_uses_the_devtrain_threshold_on_devtest() -> None:
    pairs = read_pairs(LFW_SAMPLE / "pairs.txt")
    same = pairs.same
    # distances: same-person pairs near 0.4, different near 0.8; one DevTest pair crosses
    train_d = np.where(same, 0.4, 0.8)
    test_d = train_d.copy()
    test_d[0] = 0.9 if same[0] else 0.1
    scored = score(train_d, test_d, pairs, pairs)
    assert 0.4 < scored.summary["threshold_from_devtrain"] < 0.8
    assert scored.summary["devtest_errors"] == 1
    assert not scored.correct[0] and scored.correct[1:].all()


def test_euclidean_is_face_recognitions_distance() -> None:
    pairs = read_pairs(LFW_SAMPLE / "pairs.txt")
    names = pairs.images
    index = {name: i for i, name in enumerate(names)}
    encodings = np.random.default_rng(0).normal(size=(len(names), 128))
    d = euclidean(encodings, index, pairs)
    first = encodings[index[pairs.first[0]]] - encodings[index[pairs.second[0]]]
    assert d[0] == pytest.approx(np.sqrt(np.sum(first**2)))


def test_every_pair_lists_each_pair_once_with_its_distance_and_person() -> None:
    vectors = np.random.default_rng(2).normal(size=(5, 8))
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    people = ["b", "a", "b", "c", "a"]
    d, same, person = every_pair(units, people, "cosine")
    assert len(d) == 10  # 5 choose 2
    assert same.sum() == 2  # (0, 2) for b and (1, 4) for a
    assert sorted(person[same].tolist()) == [0, 1]  # a and b, indexed in sorted order
    assert (person[~same] == -1).all()
    assert d[0] == pytest.approx(1 - units[0] @ units[1])  # pairs in (0, 1), (0, 2)... order
    e, _, _ = every_pair(vectors, people, "euclidean")
    assert e[1] == pytest.approx(np.linalg.norm(vectors[0] - vectors[2]))
    with pytest.raises(ValueError, match="metric"):
        every_pair(vectors, people, "manhattan")


def test_threshold_at_far_lets_at_most_that_share_of_impostors_in() -> None:
    impostors = np.random.default_rng(3).permutation(np.arange(1, 10_001) / 10_000)
    threshold = threshold_at_far(impostors, 1e-3)
    assert (impostors < threshold).sum() == 10
    assert (impostors < threshold_at_far(impostors, 0.0)).sum() == 0
    assert (impostors < threshold_at_far(impostors, 1.0)).sum() == 9_999


def _people(prefix: str, count: int, photos: int) -> list[str]:
    return [f"{prefix}{i}/{prefix}{i}_{j:04d}.jpg" for i in range(count) for j in range(photos)]


def test_all_pairs_comparison_sets_each_threshold_on_devtrain_and_pairs_the_verdicts() -> None:
    rng = np.random.default_rng(4)
    train, test = _people("train", 60, 3), _people("test", 60, 3)
    names = train + test
    index = {name: i for i, name in enumerate(names)}
    # one direction per person, each photo near it: "ours" tight, "peer" loose
    centres = {name.split("/")[0]: rng.normal(size=64) for name in names}

    def photos(noise: float) -> np.ndarray:
        rows = np.stack([centres[n.split("/")[0]] + noise * rng.normal(size=64) for n in names])
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    ours, peer = photos(0.3), photos(1.2)
    result = all_pairs_comparison(
        {"ours": (ours, index, "cosine"), "peer": (peer, index, "euclidean")},
        train,
        test,
        rounds=500,
    )
    assert result["devtest_genuine_pairs"] == 60 * 3
    assert result["devtest_impostor_pairs"] == 180 * 179 // 2 - 180
    assert result["devtest_people_with_pairs"] == 60
    at_far = result["ours"]["at_far"][0]
    assert at_far["far_target"] == 1e-3 and at_far["devtest_tar"] == 1.0
    first = result["paired"][0]
    assert first["difference_pp"] > 0 and first["only_ours_accepted"] > 0
    low, high = first["person_bootstrap_95ci_pp"]
    assert 0 < low <= first["difference_pp"] <= high
    with pytest.raises(ValueError, match="share people"):
        all_pairs_comparison({"ours": (ours, index, "cosine")}, train, train[:3])


def test_cache_round_trip_and_refuses_other_settings(tmp_path: Path) -> None:
    path = tmp_path / "peer.npz"
    done = {"A/A_0001.jpg": (np.arange(128, dtype=np.float64), (1, 2, 3, 0), True, 2)}
    save_cache(path, "key-1", dict(done), 12.5)
    loaded = load_cache(path, "key-1")
    assert loaded.pop("__seconds__") == 12.5
    encoding, css, found, faces = loaded["A/A_0001.jpg"]
    assert np.array_equal(encoding, done["A/A_0001.jpg"][0])
    assert (css, found, faces) == ((1, 2, 3, 0), True, 2)
    assert load_cache(path, "key-2") == {}
    assert load_cache(tmp_path / "absent.npz", "key-1") == {}
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.skipif(PEER_MISSING, reason=PEER_REASON)
def test_face_recognition_encodes_lfw_photos_and_caches_them(tmp_path: Path) -> None:
    names = ["Donald_Pettit/Donald_Pettit_0001.jpg", "Donald_Pettit/Donald_Pettit_0002.jpg"]
    cache = tmp_path / "peer.npz"
    encoded, seconds = encode_all(LFW_SAMPLE, names, cache)
    assert seconds > 0
    for name in names:
        encoding, css, found, faces = encoded[name]
        assert encoding.shape == (128,) and found and faces >= 1
        top, right, bottom, left = css
        assert 0 <= left < right < 250 and 0 <= top < bottom < 250
    # the same person twice: within face_recognition's own 0.6 tolerance
    assert np.linalg.norm(encoded[names[0]][0] - encoded[names[1]][0]) < 0.6
    again, _ = encode_all(LFW_SAMPLE, names, cache)  # from the cache
    assert all(np.array_equal(again[n][0], encoded[n][0]) for n in names)
