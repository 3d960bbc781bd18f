"""Enrolment quality gates on synthetic faces whose size, pose and blur are known, and the
dominant-face rule on real detections of LFW faces pasted into a hallway."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from lfw_photos import LFW, lfw

from edge_app.faces import Faces
from edge_app.images import read_image
from edge_app.quality import (
    CUT_SHARE_MAX,
    DEFAULT_GATES,
    DOMINANT_RATIO,
    MIN_SHARPNESS,
    Gates,
    Reason,
    Rejection,
    check_face,
    cut_share,
    dominant_face,
    duplicate_of,
    enrolment_face,
    other_people_among,
    pose,
    sharpness,
)
from edge_app.visit_clips import background, head, paste

# Frontal landmarks as fractions of the box: eyes, nose halfway down, mouth corners.
FRONTAL = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]])


def synthetic_face(size: int = 160, blur: float = 0.0, frame: int = 400) -> np.ndarray:
    """A textured square on grey: detail a Laplacian sees, with a known amount of blur."""
    image = np.full((frame, frame, 3), 128, np.uint8)
    cells = np.random.default_rng(0).integers(
        40, 215, size=(size // 4, size // 4, 3), dtype=np.uint8
    )
    texture = cv2.resize(cells, (size, size), interpolation=cv2.INTER_NEAREST)
    start = (frame - size) // 2
    image[start : start + size, start : start + size] = texture
    return cv2.GaussianBlur(image, (0, 0), blur) if blur else image


def faces_at(boxes: list[list[float]], landmarks: np.ndarray | None = None) -> Faces:
    boxes_array = np.array(boxes, np.float32).reshape(-1, 4)
    if landmarks is None:
        origin, extent = (
            boxes_array[:, None, :2],
            boxes_array[:, None, 2:] - boxes_array[:, None, :2],
        )
        landmarks = origin + FRONTAL[None] * extent
    return Faces(boxes_array, np.ones(len(boxes_array), np.float32), landmarks.astype(np.float32))


def centred_box(size: int = 160, frame: int = 400) -> list[float]:
    start = (frame - size) // 2
    return [start, start, start + size, start + size]


def rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    angle = np.radians(degrees)
    matrix = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return points @ matrix.T


def test_pose_of_a_frontal_face_and_its_rotation() -> None:
    roll, yaw, pitch = pose(FRONTAL[None] * 100)
    np.testing.assert_allclose([roll[0], yaw[0], pitch[0]], [0.0, 0.0, 0.5], atol=1e-9)
    # An in-plane rotation changes the roll only: yaw and pitch are measured along the eyes.
    roll, yaw, pitch = pose(rotate(FRONTAL * 100, 30)[None])
    np.testing.assert_allclose([roll[0], yaw[0], pitch[0]], [30.0, 0.0, 0.5], atol=1e-9)


def test_pose_is_vectorised_and_sees_a_turned_head() -> None:
    turned = FRONTAL.copy()
    turned[2, 0] += 0.2  # nose half the eye distance to the side
    looking_down = FRONTAL.copy()
    looking_down[2, 1] = 0.7
    roll, yaw, pitch = pose(np.stack([FRONTAL, turned, looking_down]) * 100)
    np.testing.assert_allclose(yaw, [0.0, 0.5, 0.0], atol=1e-9)
    np.testing.assert_allclose(pitch, [0.5, 0.5, 0.875], atol=1e-9)


def rejected(rejection: Rejection | None) -> Rejection:
    assert rejection is not None, "expected a rejection"
    return rejection


def test_cut_share_is_the_share_of_the_box_outside_the_frame_along_the_worse_axis() -> None:
    """A box past two opposite edges loses both (a review found the worst single edge used:
    a face overflowing a close-up frame on every side was let through)."""
    shares = cut_share(
        faces_at(
            [
                [10, 10, 90, 90],  # inside
                [-1, -1, 101, 101],  # a crop to the face box: its box 1 px past each edge
                [-5, -5, 105, 105],  # past all four
                [-4, 10, 50, 60],  # past the left one only
                [20, 50, 80, 130],  # past the bottom: 30 of 80 rows
            ]
        ),
        (100, 100, 3),
    )
    np.testing.assert_allclose(shares, [0, 2 / 102, 10 / 110, 4 / 54, 30 / 80], rtol=1e-6)
    assert (shares > CUT_SHARE_MAX).tolist() == [False, False, True, True, True]


def test_a_face_cut_by_the_edge_is_refused_a_tight_crop_is_not() -> None:
    frame = synthetic_face()
    tight = faces_at([[-1, -1, 401, 401]])  # the crop is the face box
    assert enrolment_face(frame, tight) is not None
    assert not isinstance(enrolment_face(frame, tight), Rejection)
    cut = faces_at([[-60, 120, 140, 320]])
    rejection = enrolment_face(frame, cut)
    assert isinstance(rejection, Rejection) and rejection.reason is Reason.CUT_BY_EDGE
    assert "30% of its box is outside it, 5% at most" in rejection.message


def test_a_good_face_passes() -> None:
    assert check_face(synthetic_face(), faces_at([centred_box()])) is None


def test_no_face_and_two_faces_of_similar_size() -> None:
    frame = synthetic_face()
    assert rejected(check_face(frame, Faces.empty())).reason is Reason.NO_FACE
    two = rejected(check_face(frame, faces_at([centred_box(), [0, 0, 120, 120]])))
    assert two.reason is Reason.SEVERAL_FACES
    assert "2 faces of similar size (160 and 120 px)" in two.message
    assert f"{DOMINANT_RATIO:g}x" in two.message and "crop the photo to the person" in two.message
    # Three (a walkthrough: "3 faces of similar size (93 and 77 px)" gave two sizes for three).
    three = rejected(
        check_face(frame, faces_at([centred_box(), [0, 0, 120, 120], [200, 0, 240, 40]]))
    )
    assert "3 faces, the two largest of similar size (160 and 120 px)" in three.message


def test_the_dominant_face_is_chosen_wherever_it_is_listed() -> None:
    frame = synthetic_face()
    small = 160 / DOMINANT_RATIO  # just dominated: the rule is "at least ratio times"
    boxes: list[list[float]] = [
        [0, 0, small, small],
        centred_box(),
        [300, 300, 300 + small - 1, 300 + small - 1],
    ]
    assert dominant_face(faces_at(boxes)) == 1
    chosen = enrolment_face(frame, faces_at(boxes))
    assert isinstance(chosen, Faces) and len(chosen) == 1
    np.testing.assert_array_equal(chosen.boxes[0], np.array(centred_box(), np.float32))
    assert check_face(frame, faces_at(boxes)) is None
    # Just under the ratio the two are too alike to pick one.
    close: list[list[float]] = [[0, 0, small + 1, small + 1], centred_box()]
    assert rejected(check_face(frame, faces_at(close))).reason is Reason.SEVERAL_FACES
    # An infinite ratio refuses any second face, however small.
    one_only = Gates(dominant_ratio=float("inf"))
    tiny: list[list[float]] = [centred_box(), [0, 0, 20, 20]]
    assert rejected(check_face(frame, faces_at(tiny), one_only)).reason is Reason.SEVERAL_FACES


def test_the_other_gates_judge_the_chosen_face() -> None:
    frame = synthetic_face(blur=6.0)
    frame[:60, :60] = synthetic_face(60)[170:230, 170:230]  # a sharp small face in a corner
    boxes: list[list[float]] = [[0, 0, 60, 60], centred_box()]
    assert rejected(check_face(frame, faces_at(boxes))).reason is Reason.BLURRY


def test_too_small() -> None:
    rejection = rejected(check_face(synthetic_face(60), faces_at([centred_box(60)])))
    assert rejection.reason is Reason.TOO_SMALL
    assert "60 px" in rejection.message
    assert check_face(synthetic_face(60), faces_at([centred_box(60)]), Gates(min_face=50)) is None


@pytest.mark.parametrize("change", ["roll", "yaw", "pitch"])
def test_not_frontal(change: str) -> None:
    box = np.array(centred_box(), np.float64)
    points = box[:2] + FRONTAL * 160
    if change == "roll":
        centre = points.mean(axis=0)
        points = centre + rotate(points - centre, 35)
    elif change == "yaw":
        points[2, 0] += 0.6 * 64  # eye distance is 64 px: past a profile
    else:
        points[2, 1] = box[1] + 0.37 * 160  # nose almost level with the eyes: head tilted back
    rejection = rejected(check_face(synthetic_face(), faces_at([box.tolist()], points[None])))
    assert rejection.reason is Reason.NOT_FRONTAL
    assert change in rejection.message


def test_blurry() -> None:
    sharp = sharpness(synthetic_face(), np.array(centred_box()))
    blurred = sharpness(synthetic_face(blur=6.0), np.array(centred_box()))
    assert sharp > MIN_SHARPNESS > blurred
    rejection = rejected(check_face(synthetic_face(blur=6.0), faces_at([centred_box()])))
    assert rejection.reason is Reason.BLURRY


def test_sharpness_does_not_depend_on_the_face_resolution() -> None:
    small = sharpness(synthetic_face(160), np.array(centred_box(160)))
    big_frame = cv2.resize(synthetic_face(160), (800, 800), interpolation=cv2.INTER_NEAREST)
    big = sharpness(big_frame, np.array(centred_box(160)) * 2)
    assert big == pytest.approx(small, rel=0.15)


def test_near_duplicates() -> None:
    rng = np.random.default_rng(1)
    existing = rng.normal(size=(3, 512)).astype(np.float32)
    existing /= np.linalg.norm(existing, axis=1, keepdims=True)
    close = existing[1] + 0.005 * rng.normal(size=512).astype(np.float32)
    close /= np.linalg.norm(close)
    rejection = rejected(duplicate_of(close, existing))
    assert rejection.reason is Reason.NEAR_DUPLICATE
    fresh = rng.normal(size=512).astype(np.float32)
    assert duplicate_of(fresh / np.linalg.norm(fresh), existing) is None
    assert duplicate_of(close, np.zeros((0, 512), np.float32)) is None


def person_photos(rng: np.random.Generator, centre: np.ndarray, count: int) -> np.ndarray:
    """`count` unit vectors about 0.5 cosine to `centre` (photos of one person)."""
    noise = rng.normal(size=(count, 512)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    photos = centre[None] + noise
    return photos / np.linalg.norm(photos, axis=1, keepdims=True)


def test_photos_of_another_person_in_one_enrolment() -> None:
    rng = np.random.default_rng(2)
    alice, bob = person_photos(rng, np.eye(512, dtype=np.float32)[0], 1)[0], np.eye(512)[1]
    a = person_photos(rng, alice, 3)
    b = person_photos(rng, bob.astype(np.float32), 2)
    none = np.zeros((0, 512), np.float32)

    # A new person: the largest group is the person, the rest is refused.
    refused = other_people_among(np.vstack([a, b]), np.vstack([a, b]), none)
    assert sorted(refused) == [3, 4]
    assert {r.reason for r in refused.values()} == {Reason.ANOTHER_PERSON}
    assert "another person than most of the photos" in refused[3].message
    # Two photos of two people: nothing says which one is the person.
    refused = other_people_among(np.vstack([a[:1], b[:1]]), np.vstack([a[:1], b[:1]]), none)
    assert sorted(refused) == [0, 1] and "2 photos show 2 people" in refused[0].message
    # One person's photos only, or a single photo: nothing to refuse.
    assert other_people_among(a, a, none) == {}
    assert other_people_among(b[:1], b[:1], none) == {}
    # Adding photos: those like none of the enrolled samples are refused, even when they are
    # most of the new ones.
    refused = other_people_among(np.vstack([a[:1], b]), np.vstack([a[:1], b]), a[1:])
    assert sorted(refused) == [1, 2]
    assert "none of the person's enrolled photos" in refused[1].message


def test_one_person_s_photos_link_through_the_ones_between() -> None:
    """Photos at 20 and at 50 years old may look unlike each other, and still link through
    a photo at 35 that looks like both."""
    young, old = np.eye(512, dtype=np.float32)[:2]
    between = (young + old) / np.linalg.norm(young + old)  # 0.71 to each, the two 0.0
    photos = np.vstack([young, old, between])
    assert other_people_among(photos, photos, np.zeros((0, 512), np.float32)) == {}
    assert sorted(other_people_among(photos[:2], photos[:2], np.zeros((0, 512)))) == [0, 1]
    # A mirror that looks like the other photo links it too.
    assert other_people_among(photos[:2], photos[[1, 0]], np.zeros((0, 512))) == {}


# --- the dominant-face rule on real detections ------------------------------------------


# The engine fixture skips without the models.
NEEDS_LFW = pytest.mark.skipif(not LFW.is_dir(), reason=f"LFW photos not found at {LFW}")


def hallway(*people: tuple[str, int, int, int, int]) -> np.ndarray:
    """A 640x480 hallway with LFW heads (name, photo number, head size px, left x, top y)."""
    frame = background()
    for name, number, size, x, y in people:
        rgb, alpha = head(read_image(lfw(name, number)), size)
        paste(frame, rgb, alpha, x, y)
    return frame


@pytest.mark.parametrize("near_left", [True, False])
@NEEDS_LFW
def test_real_detections_one_big_face_and_a_small_one_behind(engine, near_left: bool) -> None:
    big_x, small_x = (40, 470) if near_left else (300, 40)
    frame = hallway(("Emma_Watson", 1, 360, big_x, 60), ("Frank_Solich", 1, 120, small_x, 40))
    faces = engine.detect(frame)
    assert len(faces) == 2, "both heads must be detected for this test to mean anything"
    sizes = np.sort(faces.sizes)[::-1]
    assert sizes[0] >= DOMINANT_RATIO * sizes[1]
    chosen = enrolment_face(frame, faces)
    assert isinstance(chosen, Faces), chosen
    centre_x = (chosen.boxes[0, 0] + chosen.boxes[0, 2]) / 2
    assert big_x < centre_x < big_x + 360  # the big head's face, not the small one's
    assert check_face(frame, faces) is None


@NEEDS_LFW
def test_real_detections_two_similar_faces_are_refused(engine) -> None:
    frame = hallway(("Emma_Watson", 1, 260, 40, 100), ("Frank_Solich", 1, 240, 340, 110))
    faces = engine.detect(frame)
    assert len(faces) == 2
    rejection = rejected(check_face(frame, faces))
    assert rejection.reason is Reason.SEVERAL_FACES
    assert "crop the photo to the person" in rejection.message


def test_presented_faces_leave_out_faces_far_behind() -> None:
    """The door judges the faces at the door: not one DOMINANT_RATIO smaller than another."""
    from edge_app.quality import DOMINANT_RATIO, presented_faces

    def faces(*widths: float) -> Faces:
        boxes = np.array([[0, 0, w, w] for w in widths], np.float32).reshape(-1, 4)
        n = len(widths)
        return Faces(boxes, np.ones(n, np.float32), np.zeros((n, 5, 2), np.float32))

    assert presented_faces(faces()).tolist() == []
    assert presented_faces(faces(50)).tolist() == [True]
    assert presented_faces(faces(180, 58)).tolist() == [True, False]  # someone further back
    assert presented_faces(faces(60, 180, 150)).tolist() == [False, True, True]  # side by side
    edge = 100 / DOMINANT_RATIO
    assert presented_faces(faces(100, edge)).tolist() == [True, False]  # as enrolment decides
    assert presented_faces(faces(100, edge + 1)).tolist() == [True, True]


def test_a_refused_photos_cosine_is_never_shown_at_the_floor_it_is_below() -> None:
    """Found by a walkthrough: "best cosine 0.36 to them, below 0.36": 0.3596 rounded up to
    the floor it was refused for being under. It is cut, not rounded."""
    floor = DEFAULT_GATES.same_person
    cosine = floor - 0.0004  # rounds to the floor, at 2 or 3 decimals
    a = np.eye(512, dtype=np.float32)[0]
    b = (cosine * a + np.sqrt(1 - cosine**2) * np.eye(512, dtype=np.float32)[1]).astype(np.float32)
    pair = np.vstack([a, b])
    refused = other_people_among(pair, pair, np.zeros((0, 512), np.float32))
    message = refused[0].message
    assert f"best cosine {math.floor(float(a @ b) * 1000) / 1000:.3f} to them" in message
    assert f"below {floor:.3f}" in message and f"best cosine {floor:.3f}" not in message
