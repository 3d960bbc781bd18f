"""Camera sources behind one interface: an iterator of timestamped RGB frames.

The daemon must keep running through what real cameras do: a USB cable pulled, an RTSP
stream restarting or stalling, a corrupt frame. A live source counts as dropped after
_LIVE_FAILURES failed reads in a row or after DROP_AFTER seconds without a good frame,
whichever comes first; it then reconnects with exponential backoff and logs each drop. Reads
are bounded too, since a blocked read is seen only once it returns: a network stream read
gives up after STREAM_TIMEOUT, the Pi camera waits for a request at most what is left of
DROP_AFTER, and a USB webcam read is bounded by OpenCV's own V4L2 timeout. File sources (a
video, a folder of images) end at their end, so a run on a clip is a finite, repeatable test
of the whole door. Unreadable frames are logged and skipped wherever they come from.

Detection runs on a small frame and recognition crops from the largest one available: the
Pi camera delivers both at once (lores + main streams of one request); other sources are
scaled down to the detection size when they are larger, keeping the original as `main`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import queue
import re
import stat
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_app import paths
from edge_app.bounded_read import missing_or_kind
from edge_app.config import MIN_FPS, CameraConfig
from edge_app.errors import UserError
from edge_app.image_limits import MAX_DECODED_PIXELS
from edge_app.images import IMAGE_SUFFIXES, ImageError, is_photo_name, read_image

log = logging.getLogger(__name__)

# A source opened without a size, detection size or frame rate: the [camera] defaults.
_CAMERA = CameraConfig()
DEFAULT_SIZE = (_CAMERA.width, _CAMERA.height)
DEFAULT_LORES = (_CAMERA.lores_width, _CAMERA.lores_height)
DEFAULT_FPS = _CAMERA.fps

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
# Consecutive failed reads before a live source counts as dropped (a single bad frame from a
# webcam is common; a run of them means the device is gone or stuck).
_LIVE_FAILURES = 10
# Seconds without a good frame (since the last one, or since connecting) before a live source
# counts as dropped, however few reads failed: a read that blocks counts only once it returns,
# so a stalled camera would otherwise take _LIVE_FAILURES blocked reads to drop. Well under the
# systemd watchdog (WatchdogSec=30, pinged only after a processed frame): a stall is dropped
# and reconnected inside the process, backoff and reopen included, before systemd restarts it.
DROP_AFTER = 5.0
# A live source whose frames come slower than this many per DROP_AFTER is given this many of
# its frame periods instead (camera.fps 0.2 and below): it is not dropped for being slow.
FRAMES_BEFORE_DROP = 3
# libcamera.controls.AfModeEnum.Continuous: the lens follows the scene.
AF_MODE_CONTINUOUS = 2
# Consecutive failed reads inside a video file before giving up on the rest of it.
_FILE_FAILURES = 25
# A clip's own frame rate is believed up to this (the config's camera.fps allows 120).
MAX_CLIP_FPS = 1000.0
# How long a network stream may take to open, or to deliver one frame, before the attempt
# fails. OpenCV's own default is 30 s for each: a stream server that accepts the connection
# and then stalls would hold the camera thread 30 s per read, 10 reads before a reconnect.
STREAM_TIMEOUT = 5.0


def frame_drop_after(drop_after: float | None, fps: float) -> float:
    """Seconds without a frame before a live source at `fps` counts as dropped: `drop_after`
    when given, else DROP_AFTER or FRAMES_BEFORE_DROP frame periods, whichever is longer."""
    if drop_after is not None:
        return drop_after
    return max(DROP_AFTER, FRAMES_BEFORE_DROP / fps)


class CameraError(UserError):
    """The camera source cannot be opened as specified."""


@dataclass(frozen=True)
class Frame:
    """image: the detection frame, RGB uint8 (H, W, 3). main: the same view at a higher
    resolution for face crops, or None when the detection frame is the best there is.
    timestamp: seconds on the source's clock (clip time for files, monotonic for live)."""

    image: np.ndarray
    timestamp: float
    index: int
    main: np.ndarray | None = None

    @property
    def crop_scale(self) -> tuple[float, float]:
        """Factors (x, y) from detection-frame pixels to `crop_image` pixels."""
        if self.main is None:
            return 1.0, 1.0
        return (
            self.main.shape[1] / self.image.shape[1],
            self.main.shape[0] / self.image.shape[0],
        )

    @property
    def crop_image(self) -> np.ndarray:
        return self.image if self.main is None else self.main


# What a source's _capture gives: (detection image, main image or None); else the reason the
# frame cannot be used, or None for a read that failed.
Captured = tuple[np.ndarray, np.ndarray | None] | str | None


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: initial, doubled after each failure, capped at maximum."""

    initial: float = 0.5
    maximum: float = 10.0


def fit_detection_frame(
    image: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """(detection image, main or None): scale down, keeping the aspect, to fit `size` (w, h)."""
    height, width = image.shape[:2]
    scale = min(size[0] / width, size[1] / height)
    if scale >= 1.0:
        return image, None
    # At least one pixel: a very wide or tall image would otherwise round to zero rows.
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, target, interpolation=cv2.INTER_AREA)
    return small, image


def reported(
    value: float, fallback: float, most: float = float(2**31), least: float = 0.0
) -> float:
    """A video property as OpenCV reports it (frame rate, frame count), or `fallback` when a
    damaged or hostile file makes it zero, negative, NaN, infinite, absurdly large, or less
    than `least`: clip time is index / fps, and a NaN there would make every cooldown pass."""
    value = float(value)
    return value if math.isfinite(value) and 0 < value <= most and value >= least else fallback


# Below this side no face can be found; above MAX_DECODED_PIXELS a frame is not a camera's
# (a video of a few MB can hold 12000x12000 frames: 432 MB each, four of them queued).
MIN_FRAME_SIDE = 16


def frame_problem(image: Any) -> str | None:
    """Why a captured image cannot be a frame (a skipped frame's logged reason), or None."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        what = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else "nothing"
        return f"not an 8-bit colour image ({what})"
    height, width, channels = image.shape
    if channels != 3:
        return f"{channels} channels, not 3"
    if min(height, width) < MIN_FRAME_SIDE:
        return f"frame {width}x{height} too small ({MIN_FRAME_SIDE}x{MIN_FRAME_SIDE} at least)"
    if height * width > MAX_DECODED_PIXELS:
        return f"frame {width}x{height} too large ({_megapixels()} at most)"
    return None


def _megapixels() -> str:
    return f"{MAX_DECODED_PIXELS // 1_000_000} megapixels"


def _valid_frame(image: Any) -> bool:
    return frame_problem(image) is None


class FrameSource(ABC):
    """Iterate frames(); close() from any thread ends the iteration (and any backoff wait)."""

    live: bool = False

    def __init__(self, name: str) -> None:
        self.name = name
        self._stop = threading.Event()
        self.skipped = 0
        self.reconnects = 0

    @abstractmethod
    def frames(self) -> Iterator[Frame]: ...

    def close(self) -> None:
        self._stop.set()

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def _skip(self, why: str, index: int) -> None:
        self.skipped += 1
        log.warning("frame skipped source=%s frame=%d reason=%s", self.name, index, why)


def paced(frames: Iterator[Frame], stop: threading.Event) -> Iterator[Frame]:
    """`frames` of a recorded source, each delivered when its source time comes, counted
    from the first, as a camera would deliver them; `stop` being set ends a wait at once."""
    start: float | None = None
    for frame in frames:
        if start is None:
            start = time.monotonic() - frame.timestamp
        wait = start + frame.timestamp - time.monotonic()
        if wait > 0 and stop.wait(wait):
            return
        yield frame


class LiveSource(FrameSource):
    """A camera that can drop and come back: open, read until it fails, back off, repeat.

    It counts as dropped after _LIVE_FAILURES failed reads in a row or `drop_after` seconds
    without a good frame, whichever comes first. The time a consumer holds a yielded frame
    is not counted against the camera.
    """

    live = True

    def __init__(self, name: str, backoff: Backoff, drop_after: float = DROP_AFTER) -> None:
        super().__init__(name)
        self.backoff = backoff
        self.drop_after = drop_after
        self._read_deadline = 0.0  # monotonic time the current read's budget runs out

    @abstractmethod
    def _connect(self) -> None:
        """Open the device or stream; raise when it is not there (retried with backoff)."""

    @abstractmethod
    def _capture(self) -> Captured:
        """One (detection image, main or None); else why not, or None for a failed read."""

    @abstractmethod
    def _disconnect(self) -> None: ...

    def _read_timeout(self) -> float:
        """Seconds the current read may block before the source counts as dropped (> 0)."""
        # Never 0: picamera2 takes wait=0 as "do not wait" and returns a job, not a request.
        return max(self._read_deadline - time.monotonic(), 0.001)

    def frames(self) -> Iterator[Frame]:
        delay = self.backoff.initial
        index = 0
        while not self.closed:
            try:
                self._connect()
            except Exception as error:  # camera stacks raise anything (IndexError: no camera)
                self.reconnects += 1
                log.warning(
                    "camera unavailable source=%s error=%r retry_in=%.1fs", self.name, error, delay
                )
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff.maximum)
                continue
            log.info("camera connected source=%s", self.name)
            failures = 0
            since = time.monotonic()  # connected, or the last good frame handed on
            reason = ""
            try:
                while not self.closed:
                    self._read_deadline = since + self.drop_after
                    try:
                        captured = self._capture()
                    except Exception as error:  # a vanished device: count it, reconnect
                        log.warning("camera read failed source=%s error=%r", self.name, error)
                        captured = None
                    if captured is None or isinstance(captured, str):
                        failures += 1
                        self._skip(captured or "read failed", index)
                        if failures >= _LIVE_FAILURES:
                            reason = "failed_reads"
                        elif time.monotonic() - since >= self.drop_after:
                            reason = "no_frame_for"
                        else:
                            continue
                        break
                    failures = 0
                    delay = self.backoff.initial
                    yield Frame(captured[0], time.monotonic(), index, captured[1])
                    index += 1
                    since = time.monotonic()
            finally:
                self._disconnect()
            if not self.closed:
                self.reconnects += 1
                log.warning(
                    "camera dropped source=%s reason=%s failed_reads=%d no_frame_for=%.1fs "
                    "retry_in=%.1fs",
                    self.name,
                    reason,
                    failures,
                    time.monotonic() - since,
                    delay,
                )
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff.maximum)


class _FramesTooLarge(OSError):
    """A video or stream whose frames are larger than a frame may be (frame_problem)."""


class OpenCVSource(LiveSource):
    """A V4L2/USB device, an RTSP/HTTP stream, or a video file, through cv2.VideoCapture.

    A file is not live: it is read once, frame by frame, and ends at its end; a corrupt frame
    inside it is skipped. Given live=True, a file is treated like a stream that restarts,
    which is how the reconnect logic is exercised without hardware.
    """

    def __init__(
        self,
        spec: int | str,
        *,
        size: tuple[int, int] = DEFAULT_SIZE,
        lores: tuple[int, int] = DEFAULT_LORES,
        fps: float = DEFAULT_FPS,
        live: bool | None = None,
        realtime: bool = False,
        backoff: Backoff = Backoff(),
        stream_timeout: float = STREAM_TIMEOUT,
        drop_after: float | None = None,
    ) -> None:
        super().__init__(describe_source(spec), backoff, frame_drop_after(drop_after, fps))
        self.spec = spec
        self.realtime = realtime
        self.stream_timeout = stream_timeout
        self.size = size
        self.lores = lores
        self.fps = fps
        self.live = is_live_source(spec) if live is None else live
        self._capture_device: cv2.VideoCapture | None = None
        problem = paths.path_text_problem(spec) if isinstance(spec, str) else None
        if problem is not None:  # refused before OpenCV sees it (a crash, not an error)
            raise CameraError(f"camera.source: {problem}")
        if not self.live:
            if not Path(str(spec)).is_file():
                raise CameraError(f"camera.source: {describe_source(spec)} is not a file")
            self._open_file()  # refused now, not once the door's loop has started
            self._disconnect()

    def _connect(self) -> None:
        if isinstance(self.spec, str) and _URL.match(self.spec):
            timeout = max(1, round(self.stream_timeout * 1000))
            device = cv2.VideoCapture(
                self.spec,
                cv2.CAP_ANY,
                [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout],
            )
        else:
            device = cv2.VideoCapture(self.spec)
        if not device.isOpened():
            device.release()
            raise OSError(f"cannot open {self.name}")
        if isinstance(self.spec, int) or str(self.spec).startswith("/dev/"):
            # Motion JPEG first, then the size: OpenCV's V4L2 backend tries YUYV before MJPG,
            # and 1280x960 YUYV at 10 fps (24.6 MB/s) is more than USB 2.0 carries, so a
            # webcam falls back to a lower rate or size. A camera without MJPG keeps YUYV.
            device.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*"MJPG"))
            device.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            device.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
            device.set(cv2.CAP_PROP_FPS, self.fps)
            # A stale frame opens a door late: keep the driver's queue short.
            device.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        width = int(reported(device.get(cv2.CAP_PROP_FRAME_WIDTH), 0.0))
        height = int(reported(device.get(cv2.CAP_PROP_FRAME_HEIGHT), 0.0))
        if width * height > MAX_DECODED_PIXELS:
            device.release()
            raise _FramesTooLarge(
                f"{self.name} gives {width}x{height} frames, more than the {_megapixels()} "
                "a frame may have; record or stream it at a lower resolution"
            )
        self._capture_device = device

    def _capture(self) -> Captured:
        assert self._capture_device is not None
        ok, bgr = self._capture_device.read()
        if not ok:
            return None
        problem = frame_problem(bgr)  # before a copy of a frame too large is made
        if problem is not None:
            return problem
        small, main = fit_detection_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self.lores)
        if not _valid_frame(small):  # a sliver that is one once scaled down
            return f"frame {bgr.shape[1]}x{bgr.shape[0]} too narrow to scale down for detection"
        return small, main

    def _disconnect(self) -> None:
        if self._capture_device is not None:
            self._capture_device.release()
            self._capture_device = None

    def frames(self) -> Iterator[Frame]:
        if self.live:
            yield from super().frames()
        elif self.realtime:
            yield from paced(self._file_frames(), self._stop)
        else:
            yield from self._file_frames()

    def _open_file(self) -> None:
        """_connect() for a video file: CameraError when OpenCV cannot read it."""
        try:
            self._connect()
        except _FramesTooLarge as error:
            raise CameraError(f"camera.source: {error}") from None
        except OSError:
            raise CameraError(
                f"camera.source: cannot open {self.name} as a video (empty, damaged, or a "
                "format OpenCV cannot read)"
            ) from None

    def _file_frames(self) -> Iterator[Frame]:
        self._open_file()
        device = self._capture_device
        assert device is not None
        declared = float(device.get(cv2.CAP_PROP_FPS))
        # A rate under camera.fps's own least (1e-6 in a damaged header) made frame 130 of a
        # clip 13,000,000 s in: no cooldown held, and played in real time it stalled.
        fps = reported(declared, self.fps, most=MAX_CLIP_FPS, least=MIN_FPS)
        if fps != declared and declared != 0:
            log.warning(
                "video declares %r frames per second source=%s: played at camera.fps=%g",
                declared,
                self.name,
                self.fps,
            )
        count = int(reported(device.get(cv2.CAP_PROP_FRAME_COUNT), 0.0))
        failures = 0
        index = 0  # read attempts so far: a failed read still consumes its frame
        delivered = 0
        try:
            while not self.closed:
                captured = self._capture()
                index += 1
                if isinstance(captured, tuple):
                    failures = 0
                    delivered += 1
                    yield Frame(captured[0], (index - 1) / fps, index - 1, captured[1])
                    continue
                if index > count:  # past the last frame: the end, not a corrupt frame
                    index -= 1
                    break
                failures += 1
                self._skip(captured or "corrupt video frame", index - 1)
                if failures >= _FILE_FAILURES:
                    # From the first of the failed run: `index` is past its last.
                    first = index - failures
                    log.error("video unreadable from frame=%d source=%s", first, self.name)
                    break
        finally:
            self._disconnect()
        log.info("video ended source=%s frames=%d skipped=%d", self.name, index, self.skipped)
        if not delivered and not self.closed:
            # A file that opened but gave no frame (damaged, or not a video): a failure, not
            # a door that ran to the end of its clip.
            raise CameraError(
                f"camera.source: no frame could be read from {self.name} (damaged, or not a "
                "video OpenCV can decode; the door logs each frame's reason)"
            )


class FolderSource(FrameSource):
    """The images of a folder in name order, as frames `1/fps` seconds apart (and delivered
    that far apart with realtime=True)."""

    def __init__(
        self,
        folder: Path,
        *,
        fps: float = DEFAULT_FPS,
        lores: tuple[int, int] = DEFAULT_LORES,
        realtime: bool = False,
    ) -> None:
        super().__init__(str(folder))
        try:
            self.files = sorted(p for p in Path(folder).iterdir() if is_photo_name(p))
        except OSError as error:
            raise CameraError(
                f"camera.source: cannot list the folder {folder} ({error.strerror or error})"
            ) from None
        if not self.files:
            raise CameraError(
                f"camera.source: {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        self.fps = fps
        self.lores = lores
        self.realtime = realtime

    def frames(self) -> Iterator[Frame]:
        return paced(self._images(), self._stop) if self.realtime else self._images()

    def _images(self) -> Iterator[Frame]:
        delivered = 0
        for index, path in enumerate(self.files):
            if self.closed:
                return
            try:
                image = read_image(path)
            except ImageError as error:
                self._skip(str(error)[:120], index)
                continue
            small, main = fit_detection_frame(image, self.lores)
            if not _valid_frame(small):  # a dot, or a sliver that is one once scaled down
                self._skip(f"image too small ({image.shape[1]}x{image.shape[0]})", index)
                continue
            delivered += 1
            yield Frame(small, index / self.fps, index, main)
        if not delivered and not self.closed:  # as a video that gives no frame
            raise CameraError(
                f"camera.source: none of the {len(self.files)} images in {self.name} could be "
                "used as a frame (the door logs each image's reason)"
            )


class Picamera2Source(LiveSource):
    """The Raspberry Pi camera: the main stream for crops and the lores stream for detection,
    both from one request so they show the same instant.

    Format names are libcamera's, which give the byte order of a little-endian word: "BGR888"
    is R, G, B in memory, so the main array is RGB as it comes. Lores is "YUV420" (the ISP
    cannot give RGB there on a Pi 4): libcamera's three planes Y, then U (Cb), then V (Cr),
    which OpenCV calls I420 (its "YUV420p" is YV12, V before U: colours wrong, and liveness
    scores of real faces far lower). The YUV is asked for in BT.601 limited range
    (libcamera's Smpte170m), the one OpenCV's conversion implements; picamera2 would choose
    Rec709 for a main stream of 1280x720 or more. On a camera with autofocus (Camera Module
    3) focus is continuous: libcamera starts it in manual mode at 1 m, and a face at a door
    is closer.
    """

    def __init__(
        self,
        *,
        size: tuple[int, int] = DEFAULT_SIZE,
        lores: tuple[int, int] = DEFAULT_LORES,
        fps: float = DEFAULT_FPS,
        backoff: Backoff = Backoff(),
        drop_after: float | None = None,
    ) -> None:
        super().__init__("picamera2", backoff, frame_drop_after(drop_after, fps))
        self.size = size
        self.lores = lores
        self.fps = fps
        self._camera: Any = None
        self._lores_width = lores[0]

    def _connect(self) -> None:
        camera = import_picamera2()()
        try:
            import libcamera  # with picamera2 (python3-libcamera), which imports it first

            controls: dict[str, Any] = {"FrameRate": self.fps}
            if "AfMode" in camera.camera_controls:
                controls["AfMode"] = AF_MODE_CONTINUOUS
            config = camera.create_video_configuration(
                main={"size": self.size, "format": "BGR888"},
                lores={"size": self.lores, "format": "YUV420"},
                controls=controls,
                colour_space=libcamera.ColorSpace.Smpte170m(),
                buffer_count=4,
            )
            camera.configure(config)
            # picamera2 and libcamera may adjust sizes (an odd width is made even): the
            # lores array is as wide as its stride, and only the configured width is image.
            lores = tuple(camera.camera_config["lores"]["size"])
            if lores != tuple(self.lores):
                log.info("camera lores adjusted requested=%s configured=%s", self.lores, lores)
            self._lores_width = int(lores[0])
            camera.start()
        except Exception:
            camera.close()
            raise
        self._camera = camera

    def _capture(self) -> Captured:
        # wait: seconds before picamera2 gives up on the request and raises TimeoutError
        # (concurrent.futures'), so a stalled libcamera costs a failed read, not the thread.
        with self._camera.captured_request(wait=self._read_timeout()) as request:
            main = request.make_array("main")  # a copy: valid after the request is released
            yuv = request.make_array("lores")
        lores = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)[:, : self._lores_width]
        problem = frame_problem(main) or frame_problem(lores)
        if problem is not None:
            return problem
        return np.ascontiguousarray(lores), main

    def close(self) -> None:
        super().close()
        camera = self._camera
        if camera is not None:
            # A read waiting for a request raises CancelledError now instead of at its timeout.
            with contextlib.suppress(Exception):
                camera.cancel_all_and_flush()

    def _disconnect(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        # A request that timed out stays queued in picamera2: cancel it first (picamera2's own
        # tidy-up after a timeout, before closing), or it would take a buffer once it recovers.
        for step in (camera.cancel_all_and_flush, camera.close):
            try:
                step()
            except Exception as error:  # a vanished camera may fail to close; move on
                log.warning(
                    "camera close failed source=picamera2 step=%s error=%r", step.__name__, error
                )


def picamera2_available() -> bool:
    return importlib.util.find_spec("picamera2") is not None


def picamera2_import_fix(error: BaseException) -> str:
    """What to do when picamera2 is installed but importing it raised `error`."""
    if "numpy" in str(error) or "binary incompatibility" in str(error):
        # Raspberry Pi OS's python3-simplejpeg, which picamera2 imports, is built for its
        # numpy 1.x; a venv with numpy 2 makes its import raise "numpy.dtype size changed".
        sudo = "" if os.access(sys.prefix, os.W_OK) else "sudo "
        return (
            "a module that picamera2 imports (usually apt's python3-simplejpeg) was built for "
            f"numpy 1.x and this Python has numpy {np.__version__}: install simplejpeg from PyPI "
            f"into this environment, `{sudo}{sys.executable} -m pip install --force-reinstall "
            "--no-deps simplejpeg` (systemd/install.sh does this on aarch64); see docs/INSTALL.md"
        )
    return (
        "reinstall it (`sudo apt install --reinstall python3-picamera2`), or set camera.source "
        "to a USB camera (0); see docs/INSTALL.md"
    )


def import_picamera2() -> Any:
    """picamera2's Picamera2 class. Its import runs native code from apt packages, which
    can fail with any exception (a numpy ABI mismatch raises ValueError): CameraError, one
    line naming the cause and the fix, instead of a traceback at every start."""
    try:
        from picamera2 import Picamera2
    except Exception as error:
        raise CameraError(
            f"camera.source: picamera2 is installed but its import fails "
            f"({type(error).__name__}: {error}): {picamera2_import_fix(error)}"
        ) from error
    return Picamera2


def pi_camera_attached() -> bool:
    """A CSI camera (not a USB webcam, which libcamera also lists) that picamera2 can open.

    Raspberry Pi OS ships picamera2 even without a camera module, so "importable" is not
    enough to choose it for camera.source = "auto". CameraError when picamera2 is installed
    but does not import: on a Pi that is a broken install, not "no camera".
    """
    if not picamera2_available():
        return False
    camera_class = import_picamera2()
    try:
        cameras = camera_class.global_camera_info()
    except Exception as error:  # libcamera not usable here: fall back to OpenCV
        log.warning("picamera2 cannot list cameras error=%r", error)
        return False
    return any("usb" not in str(camera.get("Id", "")).lower() for camera in cameras)


def is_live_source(spec: int | str) -> bool:
    """A device or a network stream (read as it comes), not a recording (read in order).

    A /dev path is a camera device when it is one, or not there yet (a camera unplugged:
    the door waits for it); a regular file there (/dev/shm/clip.mp4) is a recording, and
    anything else (a named pipe, on which OpenCV's open blocks without a word) no camera."""
    if isinstance(spec, int) or _URL.match(str(spec)):
        return True
    if not str(spec).startswith("/dev/"):
        return False
    try:
        return stat.S_ISCHR(os.stat(spec).st_mode)
    except OSError:
        return True


def describe_source(spec: int | str) -> str:
    """A camera.source as it may be shown anywhere (logs, the control socket's status, so the
    hub's MQTT state and web page, doctor): /dev/videoN for an index; for a URL, never a
    password. The one place a source is redacted; applying it twice changes nothing.

    A URL keeps its scheme, host, port and path. Its userinfo, everything up to the LAST '@'
    before the query (a password may hold an '@': rtsp://admin:p@ss@host/s), becomes "***";
    its query and fragment, where cameras take credentials (videostream.cgi?user=..&pwd=..),
    become "?***" (or "#***"); so does the path from the segment holding its first '=' or
    ';' (DVRs take rtsp://host/user=admin&password=..&channel=1, some cameras
    videostream.cgi;user=..;pwd=..): rtsp://host/***. When an '@' comes only after a '?' or
    '#' (a password holding one of them, or an address in the query), the host cannot be
    told apart from the password, so only the scheme is kept: "rtsp://***?***". Paths and
    device names are returned as they are."""
    if isinstance(spec, int):
        return f"/dev/video{spec}"
    text = str(spec)
    if not _URL.match(text):
        return text
    scheme, _, rest = text.partition("://")
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    head, tail = rest[:cut], rest[cut:]
    at = head.rfind("@")
    if at >= 0:
        head = "***@" + head[at + 1 :]
    elif "@" in tail:
        head = "***"
    parameter = re.search("[=;]|%3[bd]", head, re.IGNORECASE)  # also percent-encoded
    if parameter is not None:  # in the path (a host holds neither): from its segment on
        head = head[: head.rfind("/", 0, parameter.start()) + 1] + "***"
    return f"{scheme}://{head}" + (f"{tail[0]}***" if tail else "")


def open_source(
    spec: int | str,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    lores: tuple[int, int] = DEFAULT_LORES,
    fps: float = DEFAULT_FPS,
    backoff: Backoff = Backoff(),
    realtime: bool = False,
) -> FrameSource:
    """The source for a camera.source value (see config.example.toml for the forms).
    realtime: play a video file or a folder at its own frame rate, as a camera would deliver
    it, not as fast as it is read (cameras and streams are real time anyway)."""
    if spec == "auto":
        spec = "picamera2" if pi_camera_attached() else 0
        log.info("camera.source auto chose=%s", spec)
    if spec == "picamera2":
        if not picamera2_available():
            raise CameraError(
                "camera.source: picamera2 is not installed: `sudo apt install python3-picamera2` "
                "and create the virtualenv with --system-site-packages"
            )
        import_picamera2()  # a broken install fails here, once, not in the reconnect loop
        return Picamera2Source(size=size, lores=lores, fps=fps, backoff=backoff)
    if isinstance(spec, int) or is_live_source(spec):
        return OpenCVSource(spec, size=size, lores=lores, fps=fps, backoff=backoff)
    problem = paths.path_text_problem(spec)
    if problem is not None:
        raise CameraError(f"camera.source: {problem}")
    path = Path(spec).expanduser()
    if path.is_dir():
        return FolderSource(path, fps=fps, lores=lores, realtime=realtime)
    if path.is_file():
        return OpenCVSource(str(path), lores=lores, fps=fps, realtime=realtime)
    if path.exists():  # a named pipe, a socket, a block device
        raise CameraError(
            f"camera.source: {describe_source(spec)} {missing_or_kind(path, 'camera')} device, "
            "video file or folder of images"
        )
    raise CameraError(
        f"camera.source: {describe_source(spec)} is not a file, a folder, a device index, a "
        "/dev path or a URL"
    )


def recording_problem(spec: int | str) -> str | None:
    """Why camera.source cannot be opened, when that can be told without opening it: a
    recording (not a camera, a stream or "auto") that is not there. A camera device that is
    not there is no problem: the door waits for it to be plugged in."""
    if spec in ("auto", "picamera2") or is_live_source(spec):
        return None
    path = Path(str(spec)).expanduser()
    if path.is_dir() or path.is_file():
        return None
    return f"{describe_source(spec)} {missing_or_kind(path, 'video file or folder of images')}"


def open_camera(camera: CameraConfig) -> FrameSource:
    """The source a `[camera]` section describes, opened as the door opens it (the door and
    `enroll --camera` share it, so a person is enrolled from the door's own camera)."""
    return open_source(
        camera.source,
        size=(camera.width, camera.height),
        lores=(camera.lores_width, camera.lores_height),
        fps=camera.fps,
        realtime=camera.realtime,
    )


class FrameReader:
    """Reads a source on its own thread, so a stalled camera never blocks the frame loop.

    The loop then always wakes within its timeout to send watchdog pings (or not) and to
    see a stop request. For a live source only the newest frame is kept: a door should act
    on what is in front of it now, not on a backlog. For files every frame is delivered,
    in order, so a clip gives the same result on a fast and a slow machine.
    """

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self.dropped = 0
        self.error: BaseException | None = None
        self._queue: queue.Queue[Frame | None] = queue.Queue(maxsize=1 if source.live else 4)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)
        self._thread.start()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def ended(self) -> bool:
        """The source has finished and every frame it produced has been taken."""
        return self._done.is_set() and self._queue.empty()

    def get(self, timeout: float) -> Frame | None:
        """The next frame, or None after `timeout` seconds or at the end."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self, timeout: float = 1.0) -> None:
        self.source.close()
        # Unblock a producer waiting on a full queue.
        while not self._queue.empty():
            self._queue.get_nowait()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            for frame in self.source.frames():
                self._put(frame)
                if self.source.closed:
                    break
        except BaseException as error:  # handed to the frame loop, which decides
            self.error = error
            log.error("camera thread failed source=%s error=%r", self.source.name, error)
        finally:
            self._done.set()
            self._wake()

    def _put(self, frame: Frame) -> None:
        if self.source.live:
            try:
                self._queue.get_nowait()
                self.dropped += 1
            except queue.Empty:
                pass
            self._queue.put_nowait(frame)
            return
        while not self.source.closed:
            try:
                self._queue.put(frame, timeout=0.2)
                return
            except queue.Full:
                continue

    def _wake(self) -> None:
        """A None tells a waiting get() that the stream ended, without its full timeout."""
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
