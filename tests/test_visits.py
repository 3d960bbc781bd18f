"""The per-visit evaluation (edge_app.evaluate_visits) and its clips (edge_app.visit_clips)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from lfw_photos import NEEDS_LFW_AND_MODELS, lfw

from edge_app.errors import UserError
from edge_app.evaluate_visits import (
    Person,
    closest_strangers,
    evaluate_visits,
    judge,
    summarise,
)
from edge_app.lfw import people_in_pairs
from edge_app.paths import SHARED_DATA
from edge_app.visit_clips import FACE_REGION, FPS, SIZE, VisitClip, build_visit, pose_at


def test_people_in_pairs(tmp_path: Path) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text("1\nAnn\t1\t2\nBo\t1\tCy\t3\n")
    assert people_in_pairs(path) == {"Ann", "Bo", "Cy"}


def test_the_face_grows_and_enters_from_the_left() -> None:
    sizes = [pose_at(t, 250, SIZE[0])[0] for t in (0.0, 0.5, 1.0, 1.5, 3.0)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    size, x, _ = pose_at(0.0, 250, SIZE[0])
    assert x + size <= 0  # outside the frame at the start
    size, x, _ = pose_at(3.0, 250, SIZE[0])
    assert x > 0 and x + size < SIZE[0]  # standing in front of the door


@pytest.mark.skipif(not (SHARED_DATA / "lfw").is_dir(), reason="needs ../shared/data/lfw")
def test_a_visit_clip_cuts_between_its_photos(tmp_path: Path) -> None:
    photos = [lfw("Ricardo_Lagos", 9), lfw("Ricardo_Lagos", 17)]
    clip = build_visit(tmp_path / "visit.avi", photos, seed=3)
    video = cv2.VideoCapture(str(clip.path))
    frames = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == clip.frames and clip.fps == FPS
    assert frames[0].shape == (SIZE[1], SIZE[0], 3)
    # The whole face region is in the frame from `appear` on, and not one frame earlier.
    index = round(clip.appear * FPS)
    size, x, _ = pose_at(clip.appear, 250, SIZE[0])
    assert x + FACE_REGION[0] * size >= 0
    size, x, _ = pose_at((index - 1) / FPS, 250, SIZE[0])
    assert x + FACE_REGION[0] * size < 0
    # Same seed, same bytes: the evaluation is repeatable.
    again = build_visit(tmp_path / "again.avi", photos, seed=3)
    assert clip.path.read_bytes() == again.path.read_bytes()
    # The two halves show different photos (the cut), the middle of each half steady.
    first, second = frames[clip.frames // 4], frames[3 * clip.frames // 4]
    assert np.abs(first.astype(int) - second.astype(int)).mean() > 5


def event(kind: str, name: str | None, t: float, score: float = 0.7) -> dict:
    return {"type": kind, "name": name, "source_time": t, "score": score}


def metrics() -> SimpleNamespace:
    return SimpleNamespace(face_frames=20, embedded_frames=8)


def test_judge_and_summarise_count_what_the_door_did() -> None:
    clip = VisitClip(Path("v.avi"), FPS, 32, appear=0.3)
    visits = [
        judge(
            "Ann",
            ["a"],
            clip,
            [
                event("recognized", "Ann", 0.8),
                event("unlock", "Ann", 0.8),
                {**event("unknown", None, 2.1, 0.3), "reason": "took the place of Ann"},
            ],
            metrics(),
        ),
        judge("Ann", ["b"], clip, [event("unknown", None, 0.9, 0.5)], metrics()),
        judge("Bo", ["c"], clip, [event("unlock", "Ann", 1.5)], metrics()),
        judge(None, ["d"], clip, [event("unlock", "Bo", 0.7)], metrics()),
        judge(None, ["e"], clip, [], metrics()),
    ]
    assert visits[0].latency == pytest.approx(0.5) and visits[0].unlocked == "Ann"
    assert visits[1].unlocked is None and visits[1].unknown_score == 0.5
    people = [
        Person("Ann", [["a"], ["b"]], enrolled=["x", "y"], refused=[{"reason": "blurry"}]),
        Person("Bo", [["c"]], enrolled=["z", "w"]),
    ]
    passed = [Person("Cy", [], refused=[{"reason": "not_frontal"}] * 3, ok=False)]
    report = summarise(people, passed, visits)
    assert report["right_person"]["value"] == 1 and report["right_person"]["of"] == 3
    assert report["wrong_person_unlocks"]["value"] == 1
    assert report["strangers_unlocked"]["value"] == 1 and report["strangers_unlocked"]["of"] == 2
    assert report["time_to_unlock"]["median_s"] == pytest.approx(0.5)
    assert visits[0].took_place == ["took the place of Ann"] and not visits[1].took_place
    assert report["took_place_false_alarms"]["value"] == 1
    assert report["took_place_false_alarms"]["of"] == 3
    enrolment = report["enrolment"]
    assert enrolment["refused_by_gate"] == {"blurry": 1, "not_frontal": 3}
    assert enrolment["photos_tried"] == 4 + 4 and enrolment["passed_over"] == ["Cy"]


@pytest.mark.slow
@pytest.mark.parametrize("_", [pytest.param(0, marks=NEEDS_LFW_AND_MODELS, id="small run")])
def test_a_small_run_of_the_real_door(
    _: int, engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lfw_root = SHARED_DATA / "lfw"
    report = evaluate_visits(engine, lfw_root, people=2, strangers=2, progress=False)
    # Each clip's own events store keeps no retention: a walkthrough saw "retention waits"
    # (an unsynced clock) once per clip, hundreds of times over a run's progress bar.
    assert not [r for r in caplog.records if "retention waits" in r.getMessage()]
    devtrain = people_in_pairs(lfw_root / "pairsDevTrain.txt")
    enrolled = {p["name"] for p in report["people"]}
    assert len(enrolled) == 2 and not enrolled & devtrain
    visits = report["visits"]
    assert [v["person"] for v in visits].count(None) == 2 and len(visits) == 2 * 2 + 2
    for person in report["people"]:
        used = [photo for visit in person["visits"] for photo in visit]
        assert not set(used) & set(person["enrolled"])  # never a photo it was enrolled from
        assert all(photo.startswith(person["name"] + "/") for photo in used)
    for visit in visits:
        assert visit["face_frames"] > 0  # the door saw every visitor
        if visit["person"] is None:
            assert visit["photos"][0].split("/")[0] not in enrolled | devtrain
    totals = report["targets"]
    assert totals["right_person"]["of"] == 4 and totals["strangers_unlocked"]["of"] == 2


def test_more_people_than_lfw_holds_with_enough_photos_are_refused_before_any_work(
    tmp_path: Path,
) -> None:
    """An LFW of two people in DevTrain and two outside it, one of those with the 4 photos a
    visit takes: --people 2 is refused before an engine is asked anything (this one has
    nothing to answer with)."""
    lfw = tmp_path / "lfw"
    for name, count in (("In_Train", 4), ("Also_In", 4), ("Four_Photos", 4), ("Three", 3)):
        (lfw / "images" / name).mkdir(parents=True)
        for number in range(1, count + 1):
            (lfw / "images" / name / f"{name}_{number:04d}.jpg").touch()
    (lfw / "pairsDevTrain.txt").write_text("1\nIn_Train\t1\t2\nIn_Train\t1\tAlso_In\t1\n")
    with pytest.raises(UserError, match=r"--people 2: only 1 people \(outside-devtrain\) have"):
        evaluate_visits(SimpleNamespace(), lfw, people=2, progress=False)


def test_an_unknown_way_of_drawing_strangers_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="strangers drawn 'hardest': not one of random, closest"):
        evaluate_visits(SimpleNamespace(), tmp_path, strangers_drawn="hardest", progress=False)


@pytest.mark.parametrize("_", [pytest.param(0, marks=NEEDS_LFW_AND_MODELS, id="lfw")])
def test_the_closest_strangers_are_those_the_door_scores_closest_to_someone_enrolled(
    _: int, engine, tmp_path: Path
) -> None:
    """Each candidate counts once, by their photo the door's matcher scores highest; the
    candidates come in descending order of that score. Here one "stranger" is Frank Solich
    himself, on photos he was not enrolled from: he comes first, named as himself, by his
    closer photo."""
    from edge_app.enroll import enroll_photos

    db = tmp_path / "gallery.db"
    enroll_photos(db, engine, "Frank Solich", [lfw("Frank_Solich", 1), lfw("Frank_Solich", 2)])
    enroll_photos(db, engine, "Emma Watson", [lfw("Emma_Watson", 1), lfw("Emma_Watson", 2)])
    frank = [lfw("Frank_Solich", 3), lfw("Frank_Solich", 4)]
    others = {"AJ_Cook": [lfw("AJ_Cook", 1)], "Aaron_Guiel": [lfw("Aaron_Guiel", 1)]}
    found = closest_strangers(engine, db, {"Frank_Solich": frank, **others}, progress=False)
    assert sorted(path.parent.name for path, _, _ in found) == sorted(["Frank_Solich", *others])
    (first, who, score), *rest = found
    assert first.parent.name == "Frank_Solich" and who == "Frank Solich"
    alone = [closest_strangers(engine, db, {"F": [photo]}, progress=False)[0] for photo in frank]
    assert (first, score) == max(((p, s) for p, _, s in alone), key=lambda found: found[1])
    assert score > 0.6 > max(s for _, _, s in rest)  # him, and people the door does not know
    assert [s for _, _, s in found] == sorted((s for _, _, s in found), reverse=True)
