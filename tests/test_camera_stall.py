"""Live sources drop a stalled camera on time: reads that block count by the clock, not only
by their number, and the Pi camera's wait for a request is bounded (fakes, no hardware)."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from typing import Any

import cv2
import numpy as np
import pytest

from edge_app.camera import (
    _LIVE_FAILURES,
    Backoff,
    FrameReader,
    LiveSource,
    OpenCVSource,
    Picamera2Source,
)

QUICK = Backoff(initial=0.001, maximum=0.001)
GOOD = np.full((32, 32, 3), 128, np.uint8)

Captured = tuple[np.ndarray, np.ndarray | None] | None


class Scripted(LiveSource):
    """A live camera whose reads are a function of (connection, read within it), both from 1."""

    def __init__(self, read: Callable[[int, int], Captured], drop_after: float) -> None:
        super().__init__("scripted", QUICK, drop_after=drop_after)
        self.read = read
        self.reads: list[int] = []  # reads made on each connection
        self.disconnects = 0

    def _connect(self) -> None:
        self.reads.append(0)

    def _capture(self) -> Captured:
        self.reads[-1] += 1
        return self.read(len(self.reads), self.reads[-1])

    def _disconnect(self) -> None:
        self.disconnects += 1


def slow_failure(source: LiveSource, seconds: float) -> None:
    """A failed read that took `seconds` to return (a stream read waiting for data)."""
    source._stop.wait(seconds)


def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


def drops(caplog: pytest.LogCaptureFixture) -> list[dict[str, str]]:
    """The key=value fields of each "camera dropped" line."""
    return [
        dict(re.findall(r"(\w+)=(\S+)", r.getMessage()))
        for r in caplog.records
        if r.getMessage().startswith("camera dropped")
    ]


def test_reads_that_fail_slowly_are_dropped_by_the_clock_before_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def read(connection: int, number: int) -> Captured:
        slow_failure(source, 0.01)
        return None

    source = Scripted(read, drop_after=0.05)
    with caplog.at_level(logging.INFO, logger="edge_app.camera"):
        reader = FrameReader(source)
        wait_until(lambda: len(source.reads) >= 3)  # dropped twice, connected again each time
        reader.close(timeout=1.0)
    assert reader.error is None
    assert not reader._thread.is_alive()
    assert source.reconnects >= 2
    dropped = drops(caplog)
    assert len(dropped) == source.reconnects
    for fields, reads in zip(dropped, source.reads, strict=False):
        assert fields["reason"] == "no_frame_for"
        assert int(fields["failed_reads"]) == reads < _LIVE_FAILURES
    assert len(source.reads) >= 3  # reconnected after each drop
    assert source.disconnects == len(source.reads)


def test_a_stalled_opencv_stream_is_dropped_by_the_clock(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Each read blocks, then fails: a stream server that stopped sending mid-stream."""
    captures: list[FakeCapture] = []

    class FakeCapture:
        def __init__(self, spec: Any, *args: Any) -> None:
            self.reads = 0
            self.released = False
            captures.append(self)

        def isOpened(self) -> bool:
            return True

        def set(self, prop: int, value: float) -> bool:
            return True

        def read(self) -> tuple[bool, np.ndarray | None]:
            self.reads += 1
            slow_failure(source, 0.02)
            return False, None

        def release(self) -> None:
            self.released = True

    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    source = OpenCVSource(0, backoff=QUICK, drop_after=0.05)
    assert source.live
    with caplog.at_level(logging.WARNING, logger="edge_app.camera"):
        reader = FrameReader(source)
        wait_until(lambda: len(captures) >= 3)  # dropped twice, opened again each time
        reader.close(timeout=1.0)
    assert not reader._thread.is_alive()
    assert len(captures) >= 3
    assert len(captures) - 1 <= source.reconnects <= len(captures)
    assert all(c.released for c in captures)
    dropped = drops(caplog)
    assert [d["reason"] for d in dropped] == ["no_frame_for"] * len(dropped)
    assert all(c.reads < _LIVE_FAILURES for c in captures)


def test_a_camera_that_delivers_is_never_dropped_even_slowly_or_with_bad_frames(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Good frames (with a bad one between them) keep the source connected, however long it
    runs; the time the consumer holds a frame is not the camera's."""

    def read(connection: int, number: int) -> Captured:
        slow_failure(source, 0.005)
        return None if number % 3 == 0 else (GOOD, None)

    source = Scripted(read, drop_after=0.05)
    seen = 0
    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger="edge_app.camera"):
        for frame in source.frames():
            seen += 1
            assert frame.image is GOOD
            if seen in (2, 4):  # the read after each of these fails
                time.sleep(0.08)  # a slow consumer: longer than drop_after
            if seen == 40:
                break
    elapsed = time.monotonic() - start
    assert elapsed > 5 * source.drop_after  # ran well past the budget
    assert source.reconnects == 0
    (reads,) = source.reads  # one connection
    assert source.skipped == reads // 3 > 0  # every third read failed, and was skipped
    assert reads - source.skipped == seen
    assert drops(caplog) == []
    assert source.disconnects == 1  # the generator closed, the camera with it


def test_failed_reads_that_return_at_once_are_dropped_by_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def read(connection: int, number: int) -> Captured:
        if connection == 3:
            return (GOOD, None)
        return None

    source = Scripted(read, drop_after=60.0)
    with caplog.at_level(logging.INFO, logger="edge_app.camera"):
        frame = next(iter(source.frames()))
    assert frame.image is GOOD
    assert source.reconnects == 2
    assert source.reads[:2] == [_LIVE_FAILURES, _LIVE_FAILURES]
    dropped = drops(caplog)
    assert [d["reason"] for d in dropped] == ["failed_reads", "failed_reads"]
    assert [int(d["failed_reads"]) for d in dropped] == [_LIVE_FAILURES, _LIVE_FAILURES]


class FakePicamera2:
    """picamera2's Picamera2 as far as Picamera2Source uses it. captured_request waits for a
    request as picamera2 does (a Future per job, result(timeout=wait)): a stalled camera
    raises TimeoutError when `wait` runs out; cancel_all_and_flush() cancels pending jobs."""

    instances: list[FakePicamera2] = []
    stalls: set[int] = set()  # instances (by number, from 0) that stall after `good` frames
    good = 2

    def __init__(self) -> None:
        self.number = len(self.instances)
        self.instances.append(self)
        self.waits: list[float | None] = []
        self.delivered = 0
        self.jobs: list[Future[Any]] = []
        self.cancels = 0
        self.closed = False

    def create_video_configuration(self, **config: Any) -> dict[str, Any]:
        return config

    def configure(self, config: dict[str, Any]) -> None:
        self.config = config

    def start(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def cancel_all_and_flush(self) -> None:
        self.cancels += 1
        for job in self.jobs:
            if not job.done():
                job.set_exception(CancelledError())
        self.jobs = []

    @contextlib.contextmanager
    def captured_request(self, wait: float | None = None, flush: Any = None) -> Iterator[Any]:
        self.waits.append(wait)
        job: Future[Any] = Future()
        job.set_running_or_notify_cancel()
        self.jobs.append(job)
        if not (self.number in self.stalls and self.delivered >= self.good):
            self.delivered += 1
            job.set_result(FakeRequest(self.config))
        timeout = None if wait is True else wait
        yield job.result(timeout=timeout) if wait else job


class FakeRequest:
    def __init__(self, config: dict[str, Any]) -> None:
        self.main_size = config["main"]["size"]
        self.lores_size = config["lores"]["size"]

    def make_array(self, name: str) -> np.ndarray:
        if name == "main":
            width, height = self.main_size
            return np.full((height, width, 3), 100, np.uint8)
        width, height = self.lores_size
        return np.full((height * 3 // 2, width), 100, np.uint8)  # YUV420 planes


@pytest.fixture
def fake_picamera2(monkeypatch: pytest.MonkeyPatch) -> type[FakePicamera2]:
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    monkeypatch.setattr(FakePicamera2, "instances", [])
    monkeypatch.setattr(FakePicamera2, "stalls", set())
    monkeypatch.setattr(FakePicamera2, "good", FakePicamera2.good)
    return FakePicamera2


def test_a_stalled_pi_camera_times_out_and_reconnects(
    fake_picamera2: type[FakePicamera2], caplog: pytest.LogCaptureFixture
) -> None:
    fake_picamera2.stalls = {0}
    source = Picamera2Source(size=(320, 240), lores=(160, 120), backoff=QUICK, drop_after=0.1)
    got = []
    with caplog.at_level(logging.INFO, logger="edge_app.camera"):
        for frame in source.frames():
            got.append(frame)
            if len(got) == fake_picamera2.good + 3:
                break
    first, second = fake_picamera2.instances
    # Every wait for a request was bounded by the drop budget, none was unbounded or zero.
    waits = first.waits + second.waits
    assert all(isinstance(w, float) and 0 < w <= source.drop_after for w in waits)
    # The first camera gave its frames, then one request timed out: one failed read, dropped.
    assert first.delivered == fake_picamera2.good and len(first.waits) == first.delivered + 1
    assert first.cancels >= 1 and first.closed  # its timed-out job cancelled, then closed
    messages = [r.getMessage() for r in caplog.records]
    assert any("camera read failed" in m and "TimeoutError" in m for m in messages)
    dropped = drops(caplog)
    assert len(dropped) == 1
    assert dropped[0]["reason"] == "no_frame_for" and dropped[0]["failed_reads"] == "1"
    assert source.reconnects == 1
    # The second camera delivered the rest.
    assert second.delivered == len(got) - fake_picamera2.good
    assert [f.index for f in got] == list(range(len(got)))
    assert got[-1].image.shape == (120, 160, 3) and got[-1].main is not None
    assert second.closed  # the generator closed, the camera with it


def test_close_ends_a_pi_camera_read_at_once_without_waiting_for_its_timeout(
    fake_picamera2: type[FakePicamera2], caplog: pytest.LogCaptureFixture
) -> None:
    fake_picamera2.stalls = {0}
    fake_picamera2.good = 0
    source = Picamera2Source(size=(320, 240), lores=(160, 120), backoff=QUICK, drop_after=30.0)
    with caplog.at_level(logging.INFO, logger="edge_app.camera"):
        reader = FrameReader(source)
        wait_until(lambda: bool(fake_picamera2.instances and fake_picamera2.instances[0].jobs))
        start = time.monotonic()
        reader.close(timeout=2.0)
        elapsed = time.monotonic() - start
    assert not reader._thread.is_alive()
    assert elapsed < 1.0 < source.drop_after
    (camera,) = fake_picamera2.instances
    assert camera.closed
    assert camera.waits and 0 < (camera.waits[0] or 0) <= source.drop_after
    assert reader.error is None
    assert source.reconnects == 0 and drops(caplog) == []
