"""Review of the camera, tracker and pooling code: each test reproduces a defect found."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_app.camera import (
    Backoff,
    CameraError,
    FolderSource,
    FrameReader,
    OpenCVSource,
    describe_source,
    fit_detection_frame,
    frame_problem,
)
from edge_app.config import TrackingConfig
from edge_app.faces import Faces
from edge_app.fusion import TrackPool
from edge_app.quality import presented_faces
from edge_app.tracker import IoUTracker, greedy_assign


def test_a_very_wide_image_is_scaled_to_at_least_one_row() -> None:
    """30000x16 at a 640-wide detection size rounds to 0.34 rows: cv2.resize asserted."""
    image = np.zeros((16, 30000, 3), np.uint8)
    small, main = fit_detection_frame(image, (640, 480))
    assert small.shape == (1, 640, 3)
    assert main is image


def test_a_folder_skips_slivers_and_dots_and_keeps_going(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A sliver image crashed the camera thread (and so the door); a dot reached detection."""
    cv2.imwrite(str(tmp_path / "a_sliver.png"), np.zeros((16, 30000, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "b_line.png"), np.zeros((1, 2000, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "c_dot.png"), np.zeros((4, 4, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "d_photo.png"), np.full((120, 160, 3), 90, np.uint8))
    source = FolderSource(tmp_path)
    with caplog.at_level(logging.WARNING, logger="edge_app.camera"):
        frames = list(source.frames())
    assert [f.index for f in frames] == [3]
    assert frames[0].image.shape == (120, 160, 3)
    assert source.skipped == 3
    assert sum("image too small (" in r.getMessage() for r in caplog.records) == 3


@contextlib.contextmanager
def stream_server(
    serve: Callable[[socket.socket], None] | None = None,
) -> Iterator[str]:
    """An HTTP 'camera' on a loopback port: each connection is kept open and handed to
    `serve` on a thread of its own (None: never a byte is sent); its URL."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            held.append(connection)
            if serve is not None:
                threading.Thread(target=serve, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/stream.mjpg"
    finally:
        server.close()
        for connection in held:
            connection.close()


@pytest.fixture
def silent_stream_server() -> Iterator[str]:
    """A camera that accepts connections and then never sends a byte (a stalled stream
    server or a half-dead RTSP proxy)."""
    with stream_server() as url:
        yield url


@pytest.fixture
def stalling_mjpeg_server() -> Iterator[str]:
    """A real HTTP MJPEG camera that sends 5 frames, then nothing, the connection kept open
    (a network camera that hangs mid-stream)."""
    ok, encoded = cv2.imencode(".jpg", np.full((240, 320, 3), 120, np.uint8))
    assert ok
    jpeg = encoded.tobytes()
    part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)

    def serve(connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            connection.recv(4096)
            connection.sendall(
                b"HTTP/1.0 200 OK\r\n"
                b"Content-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n"
            )
            for _ in range(5):
                connection.sendall(part + jpeg + b"\r\n")
                time.sleep(0.05)

    with stream_server(serve) as url:
        yield url


def test_a_stalled_stream_fails_within_the_stream_timeout_and_is_retried(
    silent_stream_server: str,
) -> None:
    """OpenCV's FFmpeg default waits 30 s to open (and 30 s per read): the camera thread sat
    in one open for half a minute, never retrying; now each attempt gives up in time."""
    source = OpenCVSource(
        silent_stream_server, stream_timeout=0.5, backoff=Backoff(initial=0.05, maximum=0.05)
    )
    assert source.live
    reader = FrameReader(source)
    deadline = time.monotonic() + 15.0
    while source.reconnects < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    reader.close(timeout=2.0)
    assert source.reconnects >= 2  # two attempts timed out and were retried
    assert reader.error is None
    assert not reader._thread.is_alive()  # close() ended the camera thread


def test_greedy_assign_never_pairs_a_nan_score() -> None:
    """np.argmax picks NaN as the largest and `NaN < minimum` is False: a NaN IoU was paired
    first and took the row of the real match."""
    scores = np.array([[np.nan, 0.9], [0.8, 0.1]], np.float32)
    assert greedy_assign(scores, 0.3) == [(0, 1), (1, 0)]
    assert greedy_assign(np.full((3, 3), np.nan, np.float32), 0.3) == []


def test_greedy_assign_matches_the_argmax_greedy_on_finite_scores() -> None:
    """Same pairs, in the same order, as the reference (argmax, first pair on ties)."""

    def reference(scores: np.ndarray, minimum: float) -> list[tuple[int, int]]:
        scores = scores.copy()
        pairs = []
        for _ in range(min(scores.shape)):
            row, col = np.unravel_index(int(np.argmax(scores)), scores.shape)
            if scores[row, col] < minimum:
                break
            pairs.append((int(row), int(col)))
            scores[row, :] = -1.0
            scores[:, col] = -1.0
        return pairs

    rng = np.random.default_rng(7)
    for _ in range(300):
        shape = (int(rng.integers(0, 9)), int(rng.integers(0, 9)))
        scores = rng.choice([0.0, 0.2, 0.3, 0.5, 0.5, 0.9], size=shape).astype(np.float32)
        assert greedy_assign(scores, 0.3) == reference(scores, 0.3)


def test_a_frame_full_of_faces_keeps_every_track() -> None:
    """2000 faces against 2000 tracks, each moved a pixel: every track continues under its
    id. What it costs (the argmax greedy scanned the whole 4M matrix once per pair, about
    2.5 s a frame; sorting the overlapping pairs takes milliseconds) is measured by
    `python -m benchmarks.tracker_cost`, not here."""
    rows, cols = np.divmod(np.arange(2000), 50)
    boxes = np.stack([cols * 30, rows * 30, cols * 30 + 20, rows * 30 + 20], 1).astype(float)
    tracker = IoUTracker(TrackingConfig())
    first, _ = tracker.update(boxes)
    second, ended = tracker.update(boxes + 1.0)
    assert [t.track_id for t in second] == [t.track_id for t in first]
    assert ended == []


def test_nan_inf_and_zero_area_boxes_never_pile_up_as_tracks() -> None:
    """Degenerate boxes never match (IoU 0), so each starts a track that ends after
    max_missed frames: the track list stays bounded while a real face keeps its track."""
    tracker = IoUTracker(TrackingConfig(max_missed=2))
    face = np.array([100, 100, 180, 180], float)
    bad = [
        [np.nan, 0, 10, 10],
        [0, 0, np.inf, np.inf],
        [-np.inf, 0, 10, 10],
        [50, 50, 50, 50],
        [60, 60, 40, 40],
    ]
    ids = set()
    for step in range(20):
        tracks, _ = tracker.update(np.array([face + step, *bad], float))
        ids.add(tracks[0].track_id)
        assert len(tracker.tracks) <= 1 + len(bad) * (tracker.max_missed + 1)
    assert len(ids) == 1


def test_one_nan_frame_does_not_poison_a_track_pool() -> None:
    """A NaN weight (or embedding) stayed in the running sum: every later frame of the track
    fell back to its own embedding and pooled() returned NaN for the site memory to learn."""
    pool = TrackPool()
    good = np.array([[0.6, 0.8, 0.0]], np.float32)
    other = np.array([[0.0, 0.6, 0.8]], np.float32)
    pool.add([1], good, np.array([1.0]))
    pool.add([1], good, np.array([np.nan]))
    pool.add([1], np.full((1, 3), np.nan, np.float32), np.array([1.0]))
    pooled = pool.add([1], other, np.array([1.0]))
    expected = (good[0] + other[0]) / np.linalg.norm(good[0] + other[0])
    np.testing.assert_allclose(pooled[0], expected, rtol=1e-6)
    total = pool.pooled(1)
    assert total is not None
    np.testing.assert_allclose(total, expected, rtol=1e-6)
    pool.forget(1)
    assert len(pool) == 0 and pool.pooled(1) is None


def test_one_nan_box_does_not_hide_every_face_at_the_door() -> None:
    """sizes.max() was NaN, so `size * ratio > NaN` was False for every face: a single
    broken box made the door ignore the person standing in front of it."""
    boxes = np.array([[100, 100, 220, 220], [np.nan, 0, 10, 10], [300, 100, 400, 200]])
    faces = Faces(
        boxes.astype(np.float32), np.full(3, 0.99, np.float32), np.zeros((3, 5, 2), np.float32)
    )
    assert presented_faces(faces).tolist() == [True, False, True]
    assert presented_faces(faces[np.array([1])]).tolist() == [False]


def test_a_frame_reader_is_a_context_manager_that_ends_its_thread(tmp_path: Path) -> None:
    """An exception in the consuming code still stops the camera thread and releases the
    capture device (here a video that the producer is blocked on, its queue full)."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (64, 48))
    for index in range(30):
        writer.write(np.full((48, 64, 3), index, np.uint8))
    writer.release()
    source = OpenCVSource(str(path))
    with pytest.raises(RuntimeError), FrameReader(source) as reader:
        assert reader.get(timeout=2.0) is not None
        raise RuntimeError("the frame loop failed")
    assert source.closed
    assert not reader._thread.is_alive()
    assert source._capture_device is None


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        (
            "http://127.0.0.1:9/videostream.cgi?user=admin&pwd=hunter2",
            "http://127.0.0.1:9/videostream.cgi?***",
        ),
        ("rtsp://admin:p@ss@host/s", "rtsp://***@host/s"),  # the last '@' ends the userinfo
        ("rtsp://admin:pa/ss@host:554/s", "rtsp://***@host:554/s"),
        ("rtsp://admin:p?ss@host/s", "rtsp://***?***"),  # cannot tell host from password
        ("rtsp://cam/s#key=hunter2", "rtsp://cam/s#***"),
        ("rtsp://cam:554/stream1", "rtsp://cam:554/stream1"),
        # Found by an audit (published, retained, on the hub's state): DVRs' credentials in
        # the path, as parameters.
        (
            "rtsp://10.0.0.5:554/user=admin&password=S3cretPass&channel=1&stream=0.sdp",
            "rtsp://10.0.0.5:554/***",
        ),
        ("rtsp://cam/live/user=admin_password=hunter2_channel=1", "rtsp://cam/live/***"),
        ("http://cam/videostream.cgi;user=admin;pwd=hunter2", "http://cam/***"),
        ("rtsp://admin:hunter2@cam/a/b;pwd=x?q=1", "rtsp://***@cam/a/***?***"),
        ("rtsp://cam;user=admin;pwd=hunter2", "rtsp://***"),
        ("rtsp://cam/s/user%3Dadmin%26password%3Dhunter2", "rtsp://cam/s/***"),
        (0, "/dev/video0"),
        ("/dev/video2", "/dev/video2"),
        ("clips/door.mp4", "clips/door.mp4"),
    ],
)
def test_describe_source_never_shows_a_password(spec: int | str, shown: str) -> None:
    """It split the userinfo at the first '@' (rtsp://***@ss@host/s) and kept the query,
    where many cameras take user= and pwd=."""
    assert describe_source(spec) == shown
    assert describe_source(shown) == shown  # applying it twice (door, then hub) is harmless
    for secret in ("hunter2", "p@ss", "ss@", "admin"):
        assert secret not in describe_source(spec)


def test_a_folder_whose_images_give_no_frame_is_an_error_and_hidden_files_are_no_images(
    tmp_path: Path,
) -> None:
    """As a video with no frame: a folder where no image decodes ended like a finished
    recording (exit 0). macOS's "._" metadata files were read as frames (outside audit)."""
    (tmp_path / "a.jpg").write_text("not an image")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(CameraError, match=r"none of the 2 images in .* could be used"):
        list(FolderSource(tmp_path).frames())
    cv2.imwrite(str(tmp_path / "c.png"), np.full((48, 64, 3), 128, np.uint8))
    (tmp_path / "._c.png").write_bytes(b"\x00\x05\x16\x07 metadata")
    source = FolderSource(tmp_path)
    assert [p.name for p in source.files] == ["a.jpg", "b.png", "c.png"]
    assert len(list(source.frames())) == 1
    # a folder that cannot be listed: one line (doctor's check of it was a traceback)
    with pytest.raises(CameraError, match=r"cannot list the folder .*c.png \(Not a directory\)"):
        FolderSource(tmp_path / "c.png")


def test_a_file_that_gives_no_frame_is_an_error_not_the_end_of_a_clip(tmp_path: Path) -> None:
    """A file OpenCV opens but cannot decode a frame of used to end like a finished clip:
    `edge-app run` logged frames=0 and exited 0. It is now a CameraError naming the file; a
    clip that delivered its frames still just ends."""
    bad = tmp_path / "door.jpg"
    bad.write_text("not an image")
    with pytest.raises(CameraError, match=r"no frame could be read from .*door\.jpg"):
        list(OpenCVSource(str(bad)).frames())
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((48, 64, 3), 128, np.uint8))
    assert len(list(OpenCVSource(str(good)).frames())) == 1


def mjpeg_clip(path: Path, size: tuple[int, int], count: int = 2) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, size)
    assert writer.isOpened()
    for index in range(count):
        writer.write(np.full((size[1], size[0], 3), 40 * index, np.uint8))
    writer.release()
    return path


def test_a_video_of_frames_larger_than_a_frame_may_be_is_refused_at_once(
    tmp_path: Path,
) -> None:
    """Found by an audit: a 3.5 MB clip of 12000x12000 frames took the door to 2.5 GB (each
    frame kept whole, four queued); on a Pi, an out-of-memory kill and a restart loop."""
    big = mjpeg_clip(tmp_path / "big.avi", (4800, 3600))  # 17.3 megapixels
    with pytest.raises(CameraError, match=r"gives 4800x3600 frames, more than the 16 megapix"):
        OpenCVSource(str(big))
    # At the cap, frames come, the main image kept whole for the crops.
    frames = list(OpenCVSource(str(mjpeg_clip(tmp_path / "ok.avi", (4000, 4000)))).frames())
    assert [f.image.shape for f in frames] == [(480, 480, 3)] * 2
    assert frames[0].main is not None and frames[0].main.shape == (4000, 4000, 3)


def test_a_frame_that_cannot_be_used_is_logged_with_its_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Frames of 8x8 pixels were logged as "corrupt video frame", then the clip as damaged."""
    tiny = mjpeg_clip(tmp_path / "tiny.avi", (8, 8), count=3)
    with (
        caplog.at_level(logging.WARNING, "edge_app.camera"),
        pytest.raises(CameraError, match=r"no frame could be read .*each frame's reason"),
    ):
        list(OpenCVSource(str(tiny)).frames())
    assert caplog.text.count("reason=frame 8x8 too small (16x16 at least)") == 3
    assert "corrupt video frame" not in caplog.text
    assert frame_problem(np.zeros((4000, 4001, 3), np.uint8)) == (
        "frame 4001x4000 too large (16 megapixels at most)"
    )
    assert frame_problem(np.zeros((48, 64, 3), np.uint16)) == (
        "not an 8-bit colour image (uint16 (48, 64, 3))"
    )
    assert frame_problem(np.zeros((48, 64, 4), np.uint8)) == "4 channels, not 3"
    assert frame_problem(None) == "not an 8-bit colour image (nothing)"
    assert frame_problem(np.zeros((48, 64, 3), np.uint8)) is None


def test_a_real_stream_that_stalls_mid_way_is_dropped_and_reopened(
    stalling_mjpeg_server: str,
) -> None:
    """Real OpenCV (FFmpeg) on a stream that stops sending after some frames: without the
    read timeout FFmpeg's read() blocks about 30 s, the drop clock (checked between reads)
    never runs, and the door's loop sits on a dead camera."""
    source = OpenCVSource(
        stalling_mjpeg_server,
        stream_timeout=0.5,
        drop_after=1.0,
        backoff=Backoff(initial=0.05, maximum=0.05),
    )
    reader = FrameReader(source)
    try:
        assert reader.get(timeout=5.0) is not None  # frames arrived before the stall
        deadline = time.monotonic() + 8.0
        while source.reconnects < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        reader.close(timeout=2.0)
    assert source.reconnects >= 1, "a stream that stalled mid-way was never given up"


@pytest.mark.parametrize("live", [False, True])
def test_a_source_name_that_is_not_utf8_is_refused_before_opencv_sees_it(
    tmp_path: Path, live: bool
) -> None:
    """A clip copied from a Latin-1 system (caf\\xe9.mp4) reaches Python as a lone surrogate,
    and OpenCV's VideoCapture ended the whole process on it with SIGSEGV (the door after it had
    claimed the relay; `enroll --camera`; `demo --clip`). Run in a child process, so a crash
    is a failed test rather than the end of the run."""
    import subprocess
    import sys

    name = str(tmp_path / "caf\udce9.mp4")
    code = (
        "import sys\n"
        "from edge_app.camera import CameraError, OpenCVSource\n"
        "try:\n"
        f"    OpenCVSource(sys.argv[1], live={live})\n"
        "except CameraError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, name.encode("utf-8", "surrogateescape")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-500:])
    assert "holds bytes that are not UTF-8 text: rename it" in done.stdout
