"""Camera sources on real files written by OpenCV: folders, videos, corrupt frames, drops."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_app.camera import (
    MAX_CLIP_FPS,
    Backoff,
    CameraError,
    FolderSource,
    FrameReader,
    OpenCVSource,
    Picamera2Source,
    is_live_source,
    open_source,
    pi_camera_attached,
    picamera2_available,
    reported,
)

# What `from picamera2 import Picamera2` raises on Raspberry Pi OS Bookworm when the venv has
# numpy 2: apt's python3-simplejpeg (which picamera2 imports) is built for numpy 1.x.
NUMPY_ABI = (
    "numpy.dtype size changed, may indicate binary incompatibility. "
    "Expected 96 from C header, got 88 from PyObject"
)


def broken_picamera2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raises: str = f"ValueError({NUMPY_ABI!r})"
) -> None:
    """Make picamera2 installed (importlib finds it) but raise `raises` when imported."""
    package = tmp_path / "site" / "picamera2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"raise {raises}\n")
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))


def numbered(index: int, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """A BGR frame whose mean brightness encodes its index (robust to JPEG loss)."""
    return np.full((size[1], size[0], 3), 10 + 10 * index, np.uint8)


def index_of(rgb: np.ndarray) -> int:
    return round((float(rgb.mean()) - 10) / 10)


def write_video(path: Path, count: int, size: tuple[int, int] = (320, 240)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, size)
    assert writer.isOpened()
    for index in range(count):
        writer.write(numbered(index, size))
    writer.release()
    return path


def corrupt_frame(path: Path, which: int) -> None:
    """Wipe the start of one MJPG frame's JPEG data (its SOI marker and headers)."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i : i + 3] == b"\xff\xd8\xff"]
    data[starts[which] : starts[which] + 400] = bytes(400)
    path.write_bytes(bytes(data))


def test_folder_source_in_name_order_with_clip_timestamps(tmp_path: Path) -> None:
    for index in range(4):
        cv2.imwrite(str(tmp_path / f"frame_{index:03d}.png"), numbered(index))
    source = open_source(str(tmp_path), fps=5.0)
    assert isinstance(source, FolderSource) and not source.live
    frames = list(source.frames())
    assert [index_of(f.image) for f in frames] == [0, 1, 2, 3]
    assert [f.timestamp for f in frames] == [0.0, 0.2, 0.4, 0.6]
    assert all(f.image.dtype == np.uint8 and f.image.shape == (240, 320, 3) for f in frames)


@pytest.mark.parametrize("kind", ["folder", "video"])
def test_a_realtime_recording_delivers_each_frame_at_its_own_time(
    tmp_path: Path, kind: str
) -> None:
    """camera.realtime: a recording plays like a camera, frame k no sooner than k / fps after
    the first; without it, as fast as it is read (the evaluations)."""
    if kind == "folder":
        for index in range(4):
            cv2.imwrite(str(tmp_path / f"frame_{index:03d}.png"), numbered(index))
        spec = str(tmp_path)
    else:
        spec = str(write_video(tmp_path / "clip.avi", 4))  # written at 10 fps
    source = open_source(spec, fps=10.0, realtime=True)
    start = time.monotonic()
    arrived = [(frame.timestamp, time.monotonic() - start) for frame in source.frames()]

    assert [round(timestamp, 6) for timestamp, _ in arrived] == [0.0, 0.1, 0.2, 0.3]
    for timestamp, elapsed in arrived:
        assert elapsed >= timestamp - 0.005  # never early (a little slack for the clock)


def test_closing_a_realtime_recording_ends_its_wait_at_once(tmp_path: Path) -> None:
    for index in range(3):
        cv2.imwrite(str(tmp_path / f"frame_{index:03d}.png"), numbered(index))
    source = open_source(str(tmp_path), fps=0.05, realtime=True)  # 20 s between frames
    frames = source.frames()
    assert index_of(next(frames).image) == 0
    threading.Timer(0.2, source.close).start()
    start = time.monotonic()

    assert list(frames) == []
    assert time.monotonic() - start < 5.0  # not the 20 s the next frame was due in


def test_folder_source_skips_and_logs_unreadable_images(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cv2.imwrite(str(tmp_path / "a.jpg"), numbered(0))
    good = cv2.imencode(".jpg", numbered(1))[1].tobytes()
    (tmp_path / "b.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (tmp_path / "c.png").write_bytes(b"not an image at all")
    cv2.imwrite(str(tmp_path / "d.jpg"), numbered(3))
    with caplog.at_level(logging.WARNING, logger="edge_app.camera"):
        source = FolderSource(tmp_path)
        frames = list(source.frames())
    assert [index_of(f.image) for f in frames] == [0, 3]
    assert [f.index for f in frames] == [0, 3]
    assert source.skipped == 2
    skipped = [r.getMessage() for r in caplog.records if "frame skipped" in r.getMessage()]
    assert len(skipped) == 2
    assert "frame=1" in skipped[0] and "truncated" in skipped[0]
    assert "frame=2" in skipped[1] and "decode" in skipped[1]


def test_color_order_is_rgb(tmp_path: Path) -> None:
    bgr = np.zeros((64, 64, 3), np.uint8)
    bgr[..., 2] = 200  # red in OpenCV's BGR
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    (frame,) = FolderSource(tmp_path).frames()
    assert frame.image[0, 0].tolist() == [200, 0, 0]


def test_video_file_reads_every_frame_then_ends(tmp_path: Path) -> None:
    source = open_source(str(write_video(tmp_path / "clip.avi", 12)))
    assert isinstance(source, OpenCVSource) and not source.live
    frames = list(source.frames())
    assert [index_of(f.image) for f in frames] == list(range(12))
    assert frames[5].timestamp == pytest.approx(0.5)


def test_corrupt_video_frame_is_skipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_video(tmp_path / "clip.avi", 12)
    corrupt_frame(path, 5)
    with caplog.at_level(logging.WARNING, logger="edge_app.camera"):
        source = OpenCVSource(str(path))
        frames = list(source.frames())
    indices = [f.index for f in frames]
    assert indices == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert [index_of(f.image) for f in frames] == indices  # timestamps stay aligned after it
    assert frames[5].timestamp == pytest.approx(0.6)
    assert source.skipped == 1
    assert any(
        "frame skipped" in r.getMessage() and "frame=5" in r.getMessage() for r in caplog.records
    )


def test_a_video_unreadable_from_some_frame_on_names_that_frame(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A daemon audit: a clip unreadable from frame 66 on was logged "unreadable from
    frame=91", the read attempt at which the door gave up."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (320, 240))
    for index in range(40):
        writer.write(numbered(index % 20))
    writer.release()
    for which in reversed(range(8, 40)):  # from the end: each wipe leaves the next one found
        corrupt_frame(path, which)
    with caplog.at_level(logging.ERROR, logger="edge_app.camera"):
        frames = list(OpenCVSource(str(path)).frames())
    assert [f.index for f in frames] == list(range(8))
    assert "video unreadable from frame=8 " in caplog.text, caplog.text


def test_large_frames_are_scaled_for_detection_and_kept_for_crops(tmp_path: Path) -> None:
    path = write_video(tmp_path / "big.avi", 2, size=(1280, 960))
    frame = next(iter(OpenCVSource(str(path), lores=(640, 480)).frames()))
    assert frame.image.shape == (480, 640, 3)
    assert frame.main is not None and frame.main.shape == (960, 1280, 3)
    assert frame.crop_scale == (2.0, 2.0)
    assert frame.crop_image is frame.main


def test_live_source_recovers_after_disconnect(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream that ends and whose device is gone for a while: backoff, then frames again."""
    path = write_video(tmp_path / "stream.avi", 10)
    away = tmp_path / "unplugged.avi"
    source = OpenCVSource(str(path), live=True, backoff=Backoff(initial=0.05, maximum=0.2))
    assert source.live
    seen = []
    with caplog.at_level(logging.INFO, logger="edge_app.camera"):
        for frame in source.frames():
            seen.append(frame)
            if len(seen) == 3:
                path.rename(away)  # the device disappears mid-stream
                threading.Timer(0.6, away.rename, args=(path,)).start()
            if len(seen) == 15:
                source.close()
    messages = [r.getMessage() for r in caplog.records]
    assert [index_of(f.image) for f in seen[:10]] == list(range(10))
    assert [index_of(f.image) for f in seen[10:]] == list(range(5))  # reconnected, from the top
    assert sum("camera dropped" in m for m in messages) == 1
    unavailable = [m for m in messages if "camera unavailable" in m]
    assert len(unavailable) >= 2  # kept retrying while unplugged
    assert "retry_in=0.1s" in unavailable[0] and "retry_in=0.2s" in unavailable[1]  # backing off
    assert sum("camera connected" in m for m in messages) == 2
    assert source.reconnects >= 3


def test_frame_reader_delivers_a_file_in_order_and_ends(tmp_path: Path) -> None:
    reader = FrameReader(OpenCVSource(str(write_video(tmp_path / "clip.avi", 8))))
    got = []
    while not reader.ended:
        frame = reader.get(timeout=2.0)
        if frame is not None:
            got.append(index_of(frame.image))
    reader.close()
    assert got == list(range(8))
    assert reader.error is None


def test_frame_reader_keeps_only_the_newest_live_frame(tmp_path: Path) -> None:
    source = OpenCVSource(str(write_video(tmp_path / "clip.avi", 20)), live=True)
    reader = FrameReader(source)
    threading.Event().wait(0.5)  # the consumer is slow: frames pile up and are dropped
    frame = reader.get(timeout=2.0)
    reader.close()
    assert frame is not None
    assert reader.dropped > 0


def test_open_source_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="camera.source: .*missing.mp4 is not a file, a folder"):
        open_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(CameraError, match="holds no images"):
        open_source(str(tmp_path))
    if not picamera2_available():
        with pytest.raises(CameraError, match="apt install python3-picamera2"):
            open_source("picamera2")


@pytest.mark.parametrize(
    ("name", "content"),
    [("empty.jpg", b""), ("noise.mp4", bytes(range(256)) * 40)],
    ids=["empty", "not-a-video"],
)
def test_a_file_that_cannot_be_opened_is_refused_when_the_source_is_opened(
    tmp_path: Path, name: str, content: bytes
) -> None:
    """Refused by open_source, before any frame loop runs (the door then exits with one
    line, not a RuntimeError from its camera thread)."""
    path = tmp_path / name
    path.write_bytes(content)
    says = f"camera.source: cannot open .*{name} as a video"
    with pytest.raises(CameraError, match=says):
        open_source(str(path))
    with pytest.raises(CameraError, match=says):
        OpenCVSource(str(path))


def test_a_dev_path_is_a_camera_only_when_it_is_a_camera_device(tmp_path: Path) -> None:
    """A daemon audit: every /dev path was taken for a live camera. A named pipe there
    (/dev/fd/N) blocked OpenCV's open with no line logged; a recording there
    (/dev/shm/clip.mp4) was read as a camera, reconnected at its end, forever."""
    read, write = os.pipe()
    try:
        pipe = f"/dev/fd/{read}"
        assert not is_live_source(pipe)
        with pytest.raises(CameraError, match=f"{pipe} is a named pipe, not a camera device"):
            open_source(pipe)
    finally:
        os.close(read)
        os.close(write)
    assert is_live_source("/dev/null")  # a character device (a V4L2 camera is one)
    assert is_live_source("/dev/edge-app-test-unplugged")  # not there yet: waited for
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        clip = shm / f"edge-app-test-{os.getpid()}.avi"
        try:
            write_video(clip, 3)
            assert not is_live_source(str(clip))
            assert [f.index for f in open_source(str(clip)).frames()] == [0, 1, 2]
        finally:
            clip.unlink(missing_ok=True)


def test_a_video_removed_after_opening_ends_in_a_camera_error(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi", 3)
    source = OpenCVSource(str(path))
    path.unlink()
    with pytest.raises(CameraError, match="cannot open"):
        next(iter(source.frames()))


def test_device_specs_are_live() -> None:
    assert OpenCVSource(3).live and OpenCVSource(3).name == "/dev/video3"
    stream = OpenCVSource("rtsp://admin:secret@192.0.2.1/stream")
    assert stream.live and "secret" not in stream.name


def test_a_picamera2_whose_import_fails_is_one_camera_error_naming_cause_and_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a ValueError traceback from the door at every start: the numpy ABI mismatch of
    apt's simplejpeg is named, with the pip command that fixes it."""
    broken_picamera2(tmp_path, monkeypatch)
    assert picamera2_available()

    for spec in ("picamera2", "auto"):
        with pytest.raises(CameraError) as caught:
            open_source(spec)
        message = str(caught.value)
        assert "\n" not in message
        assert "picamera2 is installed but its import fails (ValueError: numpy.dtype size" in (
            message
        )
        assert f"numpy {np.__version__}" in message
        assert "-m pip install --force-reinstall --no-deps simplejpeg" in message
        assert "docs/INSTALL.md" in message
    with pytest.raises(CameraError, match="simplejpeg"):
        pi_camera_attached()


def test_a_picamera2_that_fails_to_import_for_another_reason_says_to_reinstall_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken_picamera2(tmp_path, monkeypatch, raises="RuntimeError('libcamera: no such symbol')")

    with pytest.raises(CameraError) as caught:
        open_source("picamera2")

    message = str(caught.value)
    assert "(RuntimeError: libcamera: no such symbol)" in message
    assert "apt install --reinstall python3-picamera2" in message
    assert "simplejpeg" not in message


def test_the_picamera2_source_keeps_retrying_a_failing_import_without_crashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Should the import fail only after open_source (a package replaced meanwhile), the
    reconnect loop logs the one-line reason and retries; close() ends it."""
    broken_picamera2(tmp_path, monkeypatch)
    source = Picamera2Source(backoff=Backoff(initial=0.01, maximum=0.01))
    frames = source.frames()
    timer = threading.Timer(0.2, source.close)
    timer.start()
    with caplog.at_level(logging.WARNING, logger="edge_app.camera"):
        assert list(frames) == []
    timer.join()
    assert source.reconnects >= 1
    assert "simplejpeg" in caplog.text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (25.0, 25.0),
        (0.0, 10.0),
        (-5.0, 10.0),
        (float("nan"), 10.0),
        (float("inf"), 10.0),
        (5000.0, 10.0),
    ],
)
def test_a_clips_frame_rate_is_believed_only_when_it_makes_sense(
    value: float, expected: float
) -> None:
    """Clip time is index / fps: a NaN or zero rate from a damaged file would give NaN or
    infinite timestamps, and with them a cooldown that never holds."""
    assert reported(value, 10.0, most=MAX_CLIP_FPS) == expected
    assert reported(value, 0.0) in (value, 0.0)  # a frame count: the same rule, 0 = unknown


def test_a_clip_declaring_a_rate_under_a_frame_every_10_s_plays_at_camera_fps(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A daemon audit: an AVI whose header says 1e-6 frames per second timed its frame 130
    at 13,000,000 s: the cooldown never held (a second unlock of the same person), and
    played in real time it stalled. A rate under camera.fps's own least is not believed."""
    import struct

    clip = write_video(tmp_path / "slow.avi", 4)
    data = bytearray(clip.read_bytes())
    header = data.index(b"strh") + 8  # AVISTREAMHEADER: ... dwScale, dwRate at +20
    struct.pack_into("<II", data, header + 20, 1_000_000, 1)
    clip.write_bytes(bytes(data))
    assert cv2.VideoCapture(str(clip)).get(cv2.CAP_PROP_FPS) == pytest.approx(1e-6)

    with caplog.at_level(logging.WARNING, logger="edge_app.camera"):
        times = [frame.timestamp for frame in open_source(str(clip), fps=5.0).frames()]

    assert times == pytest.approx([0.0, 0.2, 0.4, 0.6])
    assert "video declares 1e-06 frames per second" in caplog.text
    assert reported(0.1, 10.0, least=0.1) == 0.1 and reported(0.09, 10.0, least=0.1) == 10.0
