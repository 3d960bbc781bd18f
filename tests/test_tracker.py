"""IoU tracking: identities persist across frames and settled faces are embedded rarely."""

from __future__ import annotations

import numpy as np

from edge_app.config import TrackingConfig
from edge_app.detection.boxes import iou_matrix
from edge_app.tracker import TRACK_GAP_SECONDS, IoUTracker, greedy_assign


def box(x: float, y: float, size: float = 100) -> list[float]:
    return [x, y, x + size, y + size]


def test_iou_matrix_values() -> None:
    a = np.array([box(0, 0), box(200, 200)])
    b = np.array([box(0, 0), box(50, 0), box(500, 500)])
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 3)
    assert iou[0, 0] == 1.0
    assert np.isclose(iou[0, 1], 5000 / 15000)
    assert iou[0, 2] == 0.0 and iou[1].max() == 0.0
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_greedy_assign_prefers_best_overlap() -> None:
    scores = np.array([[0.9, 0.8], [0.85, 0.1]])
    assert sorted(greedy_assign(scores, 0.3)) == [(0, 0)]  # row 1 only overlaps a taken column
    assert greedy_assign(np.array([[0.2]]), 0.3) == []


def test_a_moving_face_keeps_its_track() -> None:
    tracker = IoUTracker(TrackingConfig(iou=0.3))
    ids = []
    for step in range(10):
        tracks, ended = tracker.update(np.array([box(100 + 8 * step, 100)]))
        ids.append(tracks[0].track_id)
        assert ended == []
    assert len(set(ids)) == 1


def test_two_faces_keep_their_own_tracks_in_any_order() -> None:
    tracker = IoUTracker()
    first, _ = tracker.update(np.array([box(0, 0), box(300, 0)]))
    second, _ = tracker.update(np.array([box(305, 2), box(4, 1)]))
    assert second[0] is first[1] and second[1] is first[0]


def test_missed_frames_do_not_split_a_visit_then_the_track_ends() -> None:
    tracker = IoUTracker(TrackingConfig(max_missed=2))
    (track,), _ = tracker.update(np.array([box(0, 0)]))
    for _ in range(2):
        assert tracker.update(np.zeros((0, 4))) == ([], [])
    (again,), _ = tracker.update(np.array([box(3, 0)]))
    assert again is track
    ended = []
    for _ in range(3):
        ended += tracker.update(np.zeros((0, 4)))[1]
    assert ended == [track]
    (new,), _ = tracker.update(np.array([box(0, 0)]))
    assert new.track_id != track.track_id


def test_a_face_seen_behind_another_stays_behind_while_that_ones_track_is_kept() -> None:
    """in_front: a face not presented (behind a larger one) is not judged until the one in
    front has been gone for longer than its track is kept (max_missed frames)."""
    tracker = IoUTracker(TrackingConfig(max_missed=2))
    front, behind = tracker.update(np.array([box(0, 0), box(300, 0, 30)]))[0]
    assert tracker.in_front([front, behind], np.array([True, False])).tolist() == [True, False]
    for _ in range(2):  # the face in front missed by the detector: its track is kept
        (still,), _ = tracker.update(np.array([box(300, 0, 30)]))
        assert still is behind
        assert tracker.in_front([behind], np.array([True])).tolist() == [False]
    (still,), ended = tracker.update(np.array([box(300, 0, 30)]))
    assert ended == [front]
    assert tracker.in_front([behind], np.array([True])).tolist() == [True]
    # With no frames kept, only the frame's own faces stand in front.
    tracker = IoUTracker(TrackingConfig(max_missed=0))
    front, behind = tracker.update(np.array([box(0, 0), box(300, 0, 30)]))[0]
    tracker.in_front([front, behind], np.array([True, False]))
    (still,), _ = tracker.update(np.array([box(300, 0, 30)]))
    assert tracker.in_front([still], np.array([True])).tolist() == [True]


def test_embedding_schedule_with_one_steady_face() -> None:
    """Undecided: every frame; settled: every refresh_frames frames."""
    tracker = IoUTracker(TrackingConfig(refresh_frames=10))
    embedded = []
    for frame in range(50):
        tracks, _ = tracker.update(np.array([box(100, 100)]))
        due = tracker.due(tracks)
        if due[0]:
            embedded.append(frame)
            tracker.mark_embedded(tracks)
        tracks[0].settled = frame >= 2  # the policy decides after three votes
    assert embedded == [0, 1, 2, 12, 22, 32, 42]
    assert len(embedded) <= 50 / 5


def test_configure_changes_the_rules_and_keeps_the_tracks() -> None:
    tracker = IoUTracker()
    (track,), _ = tracker.update(np.array([box(0, 0)]))
    tracker.configure(TrackingConfig(max_missed=0, refresh_frames=3))
    assert tracker.tracks == [track] and tracker.refresh_frames == 3
    _, ended = tracker.update(np.zeros((0, 4)))
    assert ended == [track]  # max_missed=0 applied from the next frame


def test_a_gap_in_the_frames_ends_every_track() -> None:
    tracker = IoUTracker(TrackingConfig())
    for n in range(5):
        [first], _ = tracker.update(np.array([box(100, 100)]), at=n * 0.1)
    [same], ended = tracker.update(np.array([box(100, 100)]), at=0.4 + TRACK_GAP_SECONDS - 0.05)
    assert same is first and ended == []
    [new], ended = tracker.update(np.array([box(100, 100)]), at=8.0)  # a camera outage
    assert ended == [first] and new.track_id != first.track_id
    [kept], _ = tracker.update(np.array([box(100, 100)]))  # no time given: no gap rule
    assert kept is new


def test_the_gap_that_ends_tracks_grows_with_the_time_between_frames() -> None:
    """A slow CPU that judges a frame every 0.5 s is not taken for an outage at each frame;
    a gap longer than max_missed + 1 of its frames still is."""
    tracker = IoUTracker(TrackingConfig(max_missed=5))
    for n in range(30):
        [first], ended = tracker.update(np.array([box(100, 100)]), at=n * 0.5)
        assert ended == [] and first.track_id == 1
    assert 2.9 < tracker.gap_seconds() < 3.1
    _, ended = tracker.update(np.array([box(100, 100)]), at=14.5 + 3.5)
    assert [track.track_id for track in ended] == [1]


def test_frames_slower_than_one_a_second_keep_their_tracks() -> None:
    """Frames that always come more than TRACK_GAP_SECONDS apart (camera.fps = 0.5, or a
    Pi's CPU taking 1.2 s a frame) are the rate the tracker learns, every interval counted,
    so they keep their tracks after the first; one outage does not teach it (a second one
    right after is still an outage)."""
    for interval in (2.0, 1.2):
        tracker = IoUTracker(TrackingConfig(max_missed=5))
        ids = set()
        for n in range(10):
            [track], _ = tracker.update(np.array([box(100, 100)]), at=n * interval)
            ids.add(track.track_id)
        assert len(ids) <= 2, f"a frame every {interval} s: {len(ids)} tracks for one face"
        assert tracker.gap_seconds() > 6 * interval - 0.1
    tracker = IoUTracker(TrackingConfig(max_missed=5))
    at = 0.0
    for _ in range(30):
        at += 0.1
        [first], ended = tracker.update(np.array([box(100, 100)]), at=at)
    at += 8.0  # an outage
    [second], ended = tracker.update(np.array([box(100, 100)]), at=at)
    assert ended == [first]
    for _ in range(5):
        at += 0.1
        tracker.update(np.array([box(100, 100)]), at=at)
    at += 1.5  # another, soon after: still one
    _, ended = tracker.update(np.array([box(100, 100)]), at=at)
    assert ended == [second]


def test_a_frame_of_another_size_keeps_the_tracks_scaled_to_it() -> None:
    """A camera back at another resolution shows the same view: one visit, not two."""
    tracker = IoUTracker(TrackingConfig())
    [first], _ = tracker.update(np.array([box(200, 100)]), at=0.0, size=(640, 480))
    [same], ended = tracker.update(np.array([box(100, 50, 50)]), at=0.1, size=(320, 240))
    assert same is first and ended == []
    np.testing.assert_allclose(same.box, box(100, 50, 50))
    [again], _ = tracker.update(np.array([box(200, 100)]), at=0.2, size=(640, 480))
    assert again is first
