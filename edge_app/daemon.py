"""The door: camera -> detect -> track -> embed where needed -> match -> policy -> relay + events.

Lifecycle as systemd sees it (docs/DAEMON.md):
  - READY=1 only once the relay pin, the models, the gallery and the camera's first frame are
    all there, so `systemctl start` fails visibly instead of leaving a blind door "active";
  - WATCHDOG=1 only from the frame loop after a processed frame, so a stalled camera or a
    hung interpreter stops the pings and systemd restarts the service;
  - SIGHUP reloads the config and the gallery without closing the camera;
  - SIGTERM/SIGINT drive the relay low at once (a guard thread, not the frame loop, which may
    be busy in an interpreter: the signal reaches that thread through a wakeup socket, since
    Python runs handlers only on the main thread and only between bytecodes) and end the loop
    within a frame;
  - the relay pin is claimed and driven low before anything else that can fail is started,
    and it is driven low on every exit path; from then on the same guard thread checks every
    RELAY_CHECK_EVERY that something still ends its pulses (frames or none), and a relay
    that fails that is locked from here and ends run() with its error;
  - an exception from the engine or the camera ends run() (relay locked first) so the process
    exits non-zero and systemd restarts it from scratch (docs/RELIABILITY.md says why).

The frame loop runs on the main thread and the camera on its own (camera.FrameReader), so
the loop wakes at least every LOOP_TIMEOUT seconds whatever the camera does.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import signal
import socket
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import sdnotify

from edge_app import hangup
from edge_app import policy as rules
from edge_app.camera import Frame, FrameReader, open_camera
from edge_app.cascade_choice import FLOAT, INT8
from edge_app.centering import EMBEDDING_DIM
from edge_app.config import (
    CameraConfig,
    Config,
    ConfigError,
    RecognitionConfig,
    read_door_config,
)
from edge_app.control import ControlServer, attach
from edge_app.errors import UserError, cut
from edge_app.events import RELOCK, EventLog
from edge_app.faces import Faces
from edge_app.fusion import TrackPool, evidence_weights
from edge_app.liveness_rule import OFF, REQUIRE, LiveRule, judged_scores
from edge_app.parallax import Parallax
from edge_app.picture import ADVICE, PictureWatch
from edge_app.policy import OWN_FACE_DOUBT, Policy, Vote
from edge_app.quality import SAME_PERSON_COSINE, presented_faces, whole_faces
from edge_app.relay import DoorRelay, PulseUnanswered, Relay, RelayError
from edge_app.relay_record import RECORD_KEYS
from edge_app.site_memory import (
    LEARN_INTERVAL,
    REFUSED_NAME,
    MemoryFileChanged,
    SiteMemory,
    doubt,
    set_aside,
    site_memory_path,
)
from edge_app.tracker import IoUTracker, Track
from edge_app.wall_clock import SET_THE_CLOCK, UNSET_CLOCK, WallClock

log = logging.getLogger(__name__)

LOOP_TIMEOUT = 0.2
# How often the relay guard asks the relay whether anything still ends its pulses (check()):
# on a thread of its own, so a stalled camera, a start still opening it or a slow reload
# cannot hide a relay process that died or hung with the pin open.
RELAY_CHECK_EVERY = 0.2
# How long the stop waits for the guard to end: a check under way may wait for the relay
# process's answer (relay_process.REPLY_SECONDS), and what it finds decides the exit code.
GUARD_JOIN_SECONDS = 3.0
# How long the frame loop waits for a gallery picked up while running to be built before it
# goes on with the previous one (Recognizer.reload_if_changed): a household's builds take
# milliseconds and are in use from the next frame; a few thousand people take seconds.
BUILD_WAIT_SECONDS = 0.5
# How often, in seconds of the frame clock, the door looks whether its site memory file is
# still the one it read or last wrote (learn_site; Recognizer.reload_if_changed): one lstat.
# `edge-app site forget` deletes the file; the door forgets what it held within this long,
# whether or not the reload that command asks for comes.
MEMORY_CHECK_SECONDS = 1.0
# While the gallery loads or the retention runs at start, systemd is told this often that the
# start goes on, each time allowing this much longer (EXTEND_TIMEOUT_USEC; _start_goes_on).
START_EXTEND_EVERY = 10.0
START_EXTEND_SECONDS = 30.0
METRICS_EVERY = 60.0
# How long a relock's event waits for the unlock event of the opening it ends (open_door),
# and for that opening to be known: on the relay's event thread, so the relock itself never
# waits; a record stuck longer (a stalled events sink) lets the relock be recorded anyway.
RELOCK_EVENT_WAIT = 2.0
# Openings whose relock is still due (_Opening): one while the door is open, two while a
# relock and the pulse that reopens the door cross; more means relocks went missing.
OPENINGS_KEPT = 8
# Config sections the running daemon cannot change without reopening hardware, models or sinks.
RESTART_SECTIONS = ("camera", "models", "detection", "events")
# Keys of the other sections that the daemon opened at start: the relay pin, the control socket.
# Keys a reload cannot apply: the pin the daemon claimed (what its relay record names, so
# relay_off can lock it after a crash) and the control socket it bound.
RESTART_KEYS = {"gpio": RECORD_KEYS, "hub": ("socket",)}
# Sections only the hub (edge-app hub) reads, at its own start.
HUB_SECTIONS = ("mqtt", "web")
# The status while a reload's new gallery matcher is built beside the frame loop.
BUILDING = (
    "reload: building the new gallery's matcher; the running config applies until it is ready"
)


class ModelInfo(Protocol):
    """What the daemon reads from the models' manifest."""

    @property
    def recognition(self) -> Mapping[str, Any]:
        """The manifest's recognition block: threshold, margin, aggregate, trim."""
        ...

    @property
    def liveness(self) -> Mapping[str, Any]:
        """The manifest's liveness block: the threshold derived for its liveness models."""
        ...


class FaceEngine(Protocol):
    """The daemon/engine seam: edge_app.engine.Engine on the device, a scripted engine in
    tests (tests/test_daemon_fast.py drives the real Daemon through this)."""

    @property
    def manifest(self) -> ModelInfo: ...

    def detect(self, image: np.ndarray) -> Faces:
        """Faces in a frame (RGB uint8), boxes in that frame's pixels."""
        ...

    def embed(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        """(N, 512) unit embeddings of `faces`, cut from `image`."""
        ...

    @property
    def has_liveness(self) -> bool:
        """Whether the models include a liveness model."""
        ...

    def liveness(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        """(N,) liveness scores in [0, 1] of `faces` in `image`, higher = live."""
        ...


def largest_first(due: np.ndarray, sizes: np.ndarray, most: int) -> np.ndarray:
    """The `most` largest of the face indices `due` (ascending, as given), so one frame's work
    is bounded however many faces a crowd or a poster shows. The closest face is the one at
    the door; the others stay due and get their turn once the larger ones settle."""
    if len(due) <= most:
        return due
    order = np.argsort(-np.nan_to_num(sizes[due], nan=-np.inf), kind="stable")
    return np.sort(due[order[:most]])


@dataclass
class Metrics:
    """Counters for the log and the tests; `embedded_frames / face_frames` shows tracking."""

    frames: int = 0
    face_frames: int = 0
    embedded_frames: int = 0
    embeddings: int = 0
    unlocks: int = 0
    spoofs: int = 0
    detect_seconds: float = 0.0
    embed_seconds: float = 0.0
    live_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        per = max(self.frames, 1)
        return (
            f"frames={self.frames} face_frames={self.face_frames} "
            f"embedded_frames={self.embedded_frames} embeddings={self.embeddings} "
            f"unlocks={self.unlocks} spoofs={self.spoofs} fps={self.frames / elapsed:.1f} "
            f"detect_ms={1000 * self.detect_seconds / per:.1f} "
            f"embed_ms={1000 * self.embed_seconds / max(self.embedded_frames, 1):.1f} "
            f"liveness_ms={1000 * self.live_seconds / max(self.embedded_frames, 1):.1f}"
        )


class GalleryUpgraded(UserError):
    """A newer edge-app migrated the gallery to a schema this one does not know while the door
    ran (Recognizer._read). Its rows may mean what this code cannot apply (a new access rule),
    so the door lets nobody in until it is restarted with that edge-app."""

    def __init__(self, path: Path, schema: int) -> None:
        super().__init__(f"gallery {path} upgraded by a newer edge-app (schema {schema})")
        self.schema = schema


class StartStopped(Exception):
    """A stop asked for while the door was starting, found between (or during) the start's
    steps; says which step: run() ends at once, nothing opened (exit 0 unless the relay
    guard found the relay failed)."""


class Recognizer:
    """The daemon's only contact with the engine, the gallery and the matcher.

    Faces are found on the detection frame and embedded from the sharper main frame when
    there is one, with boxes and landmarks scaled across.
    """

    def __init__(
        self,
        engine: FaceEngine,
        gallery_path: Path,
        settings: RecognitionConfig,
        *,
        cancel: threading.Event | None = None,
    ) -> None:
        """cancel: set it (the door's stop) to give up the first load (StartStopped)."""
        from edge_app.gallery import Gallery

        self.engine = engine
        # Read only: the door never writes it, and so starts on a read-only or full filesystem.
        self.gallery = Gallery.open(gallery_path, read_only=True)
        self._settings = settings
        self._version = -1
        self._matrix: Any = None
        self.matcher: Any = None
        self.unreadable = False  # the gallery could not be read: nobody is let in until it can
        self._upgraded = False  # ... because a newer edge-app migrated it (GalleryUpgraded)
        self._learned_at = -math.inf  # frame clock of the last visit the site memory learned
        self._memory_checked = -math.inf  # frame clock of the last look at its file
        self._reread = False  # the pending learned build is for a memory file read again
        self.switch_changed = False  # whether the last configured() changed how faces match
        self.only_renamed = False  # whether the last gallery change put in use renamed only
        # A matcher still being built off the frame loop, for a gallery change picked up while
        # running (reload_if_changed) or a visit the site memory learned (learn): its version
        # and rows, the build, and whether it is for a learned visit.
        self._pending: tuple[int, Any, Future[Any], bool] | None = None
        # _same_meanwhile's: the matcher's faces and the rows it was worked out for, and it.
        self._same: tuple[Any, Any, tuple[dict[str, str], frozenset[str]]] | None = None
        # While a build runs: the newest version and rows read, which answer who is enrolled.
        self._newest = None
        # A reload's gallery and settings whose matcher is still being built (start_configure).
        self._switch: _Switch | None = None
        try:
            self.memory = open_site_memory(gallery_path, settings)
            self.reload(cancel)
        except BaseException:
            self.gallery.close()
            raise

    def start_configure(self, gallery_path: Path, settings: RecognitionConfig) -> None:
        """Begin switching to another gallery and settings (a SIGHUP reload): open and read
        them here, on the frame loop, and build their matcher on a thread of its own, as a
        gallery change is built. Raises, changing nothing, when they cannot be opened or read;
        configured() says when the switch is done. The site memory is read again (`edge-app
        site forget` then reload: the door forgets too). A switch already under way is
        dropped."""
        from edge_app.gallery import Gallery

        self._drop_switch()
        replacement = None
        if Path(gallery_path) != self.gallery.path:
            replacement = Gallery.open(gallery_path, read_only=True)
        try:
            memory = open_site_memory(gallery_path, settings)
            version, matrix = self._read(replacement or self.gallery)
        except BaseException:
            if replacement is not None:
                replacement.close()
            raise
        build = self._start_build(settings, matrix, memory, report=True)
        self._switch = _Switch(replacement, settings, memory, version, matrix, build)

    def configured(self, timeout: float | None) -> bool:
        """Finish the switch start_configure() began if its matcher is built within
        `timeout`: gallery, settings, site memory and matcher change all at once; True then.
        A build that failed is dropped and its error raised: nothing changed."""
        switch = self._switch
        assert switch is not None, "configured() without start_configure()"
        try:
            matcher, _ = switch.build.result(timeout=timeout)
        except FutureTimeout:
            return False
        except BaseException:
            self._drop_switch()
            raise
        self._switch = None
        # Whether the faces are matched differently now: only then are votes earned again.
        self.switch_changed = (
            switch.replacement is not None
            or switch.settings != self._settings
            or switch.version != self._version
            or (switch.memory is None) != (self.memory is None)
            or (switch.memory is not None and not switch.memory.same_as(self.memory))
        )
        if switch.memory is not None and self.memory is not None and switch.memory.learned:
            switch.memory.recent = self.memory.recent  # newer than the file if a save failed
        if switch.replacement is not None:
            self.gallery.close()
            self.gallery = switch.replacement
        self._settings, self.memory = switch.settings, switch.memory
        self._version, self._matrix, self.matcher = switch.version, switch.matrix, matcher
        self._pending = self._newest = None  # a build for the old settings: dropped
        self._loaded(self.gallery, switch.matrix, matcher)
        self._readable_again()
        return True

    def _drop_switch(self) -> None:
        switch, self._switch = self._switch, None
        if switch is not None and switch.replacement is not None:
            switch.replacement.close()

    def reload(self, cancel: threading.Event | None = None) -> None:
        """Read the gallery and build its matcher now. The build runs on a thread of its own
        (_start_build) so that `cancel` (the door's stop) ends the wait: a large gallery's
        lookalike check takes seconds to minutes, longer than systemd allows a stop
        (TimeoutStopSec=5); StartStopped is raised then, and the build left to end alone."""
        self._pending = self._newest = None
        version, matrix = self._read(self.gallery)
        # Reported here, once it is in use: an abandoned build says nothing after the stop.
        build = self._start_build(
            self._settings, matrix, self.memory, report=False, name="gallery-load"
        )
        while True:
            try:
                matcher, lookalikes = build.result(timeout=LOOP_TIMEOUT)
                break
            except FutureTimeout:
                if cancel is not None and cancel.is_set():
                    raise StartStopped("a stop came while loading the gallery") from None
        report_matcher(matcher, lookalikes, self._settings, self.memory)
        self._version, self._matrix, self.matcher = version, matrix, matcher
        self._loaded(self.gallery, matrix, matcher)

    def learn(self, embedding: np.ndarray, now: float) -> bool:
        """Count a visit judged a stranger in the site memory (learn_site), at most one per
        LEARN_INTERVAL of the frame clock and only when it scored well under the threshold
        for everyone enrolled and every visit learned recently (site_memory.doubt); True if
        it was learned. A memory that cannot be saved is still used until the door stops.
        The matcher that centres on it is built beside the frame loop, as a gallery change
        is (reload_if_changed)."""
        memory = self.memory
        if memory is None or self.unreadable or now - self._learned_at < LEARN_INTERVAL:
            return False  # (unreadable: everyone looks like a stranger, residents too)
        if self._pending is not None or self._switch is not None:
            return False  # a build reads the memory: a visit is learned after it
        path = site_memory_path(self.gallery.path)
        if not memory.on_disk(path):
            self._memory_file_changed(path)
            return False
        why = doubt(self.matcher, memory, embedding)
        if why is not None:
            log.info("site memory did not learn a stranger's visit: %s", why)
            return False
        memory.add(embedding)
        try:
            # Only over the file it read or last wrote: `edge-app site forget` may have
            # deleted it since, and this memory still holds what that file held.
            memory.save(path, own=True)
        except MemoryFileChanged:
            self._memory_file_changed(path)
            return False
        except OSError as error:
            log.error("site memory not saved to %s (%s): kept until the door stops", path, error)
        self._learned_at = now
        self._build(self._version, self._matrix, learned=True)
        self._swap_in(timeout=BUILD_WAIT_SECONDS)
        return True

    def _check_memory_file(self, now: float) -> None:
        """Look whether the site memory file is still the one the door read or last wrote
        (SiteMemory.on_disk: one lstat, never raising), at most once per MEMORY_CHECK_SECONDS
        of the frame clock `now`, and forget as learn() does when it is not. The door's own
        saves record the file they wrote, so they pass. Not while a build reads the memory
        (a gallery change, a learned visit, a reload): looked at once that is in use."""
        memory = self.memory
        if memory is None or self._pending is not None or self._switch is not None:
            return
        if self._memory_checked <= now < self._memory_checked + MEMORY_CHECK_SECONDS:
            return  # (a clock that went back, a new clip: looked at now)
        self._memory_checked = now
        path = site_memory_path(self.gallery.path)
        if not memory.on_disk(path):
            self._memory_file_changed(path)

    def _memory_file_changed(self, path: Path) -> None:
        """The site memory file is not the one the door read or last wrote: `edge-app site
        forget` deleted it (its reload may not have come yet, may have been refused, or the
        door has no control socket). Found by the periodic look (_check_memory_file) or by a
        visit about to be learned (learn, which then does not learn it). The door forgets
        too, reading the file again as a reload would (none: an empty memory), and centres
        on that from the next frames."""
        log.warning(
            "site memory %s was deleted or replaced since the door read it (edge-app site "
            "forget): the door forgets what it had learned and reads it again",
            path,
        )
        self.memory = open_site_memory(self.gallery.path, self._settings)
        if self.unreadable:
            # Nobody is let in (_shut_out): its empty matcher, on the memory read again; the
            # gallery's build once it reads again centres on that memory too.
            self._let_nobody_in()
            return
        self._reread = True
        self._build(self._version, self._matrix, learned=True)
        self._swap_in(timeout=BUILD_WAIT_SECONDS)

    @staticmethod
    def _read(gallery: Any) -> tuple[int, Any]:
        # The version is read BEFORE the rows: a change committed while they are being read
        # then shows up as a new version and is loaded on the next frame. Read after, it
        # would be taken as already loaded, and a removed person would keep access.
        version = gallery.data_version()
        # Opening the gallery refuses a newer schema; a newer edge-app may migrate it while
        # the door runs, and its rows still load here (new columns are not read), with what
        # they mean lost. Checked after the version, like the rows, so none is missed.
        schema = gallery.newer_schema()
        if schema is not None:
            raise GalleryUpgraded(gallery.path, schema)
        return version, gallery.load_matrix()

    def enrolled(self) -> Any:
        """The rows that say who is enrolled, as match() answers now: the newest read while
        their matcher is built, else the matcher's (none while the gallery cannot be read).
        The same object until they change, so the frame loop compares it cheaply."""
        return self._newest[1] if self._newest is not None else self.matcher.faces

    def _loaded(self, gallery: Any, matrix: Any, matcher: Any) -> None:
        """Log what was loaded, and what about it needs the user (from the frame loop: the
        checks read the gallery, whose connection belongs to that thread)."""
        settings = matcher.settings
        log.info(
            "gallery loaded path=%s people=%d known_visitors=%d templates=%d centroids=%s "
            "threshold=%.3f margin=%.3f aggregate=%s",
            gallery.path,
            len(matrix.names),
            len(matrix.no_access),
            len(matrix),
            "yes" if settings.centroid else "no",
            settings.threshold,
            settings.margin,
            settings.aggregate,
        )
        expected = getattr(self.engine, "embedding_model", None)
        warning = None if expected is None else gallery.other_models_warning(expected)
        if warning is not None:
            log.warning("%s", warning)
        unmirrored = gallery.without_mirrors()
        if unmirrored:
            # The threshold assumes each photo is stored with its mirror (docs/ACCURACY.md):
            # without it these people are matched on half their templates, so less often.
            log.warning(
                "gallery has %d sample(s) enrolled without their mirror image: enrol those "
                "people again (`edge-app remove NAME`, then `edge-app enroll NAME photos...`) "
                "to restore their identification rate",
                unmirrored,
            )
        if not matrix.names:
            log.warning("gallery is empty: nobody can be unlocked; enrol with `edge-app enroll`")
        elif set(matrix.names) <= matrix.no_access:
            log.warning(
                "everyone enrolled is a known visitor: nobody can be unlocked; give a "
                "resident access with `edge-app access NAME yes`"
            )

    def reload_if_changed(self, now: float | None = None) -> bool:
        """Pick up `edge-app enroll`/`remove` done while running (another connection's commit);
        True once the new gallery is in use. With `now` (the frame clock, as the frame loop
        gives it), also pick up `edge-app site forget` (learn_site): the site memory file is
        looked at once per MEMORY_CHECK_SECONDS, and a memory whose file was deleted or
        replaced is forgotten (_check_memory_file).

        The rows are read here, on the frame loop; the matcher is built on a worker thread
        (the lookalike check grows with the square of the gallery: seconds for thousands of
        people on a Pi, longer than the systemd watchdog allows a stalled loop). A build done
        within BUILD_WAIT_SECONDS is in use from the next frame; a longer one finishes while
        the door keeps running on the previous matcher, with the new rows' removals and
        access changes applied to its answers at once (match()).

        A gallery that cannot be read (a damaged page, a disk error) lets nobody in until it
        can, rather than keep the people it held (a removal may be what could not be read):
        the door keeps running and watching, says so once, and tries again on every frame.
        So does a gallery a newer edge-app migrated (GalleryUpgraded): what its rows mean may
        have changed in ways this code does not know.
        """
        changed = self._gallery_changed()
        if now is not None:
            self._check_memory_file(now)
        return changed

    def _gallery_changed(self) -> bool:
        """reload_if_changed's gallery part."""
        from edge_app.gallery import GalleryError

        try:
            version = self.gallery.data_version()
            newest = self._newest[0] if self._newest is not None else self._version
            if version != newest:
                rows = self._read(self.gallery)
        except (sqlite3.Error, GalleryError, GalleryUpgraded) as error:
            self._shut_out(error)
            return False
        if self._pending is not None:
            if version != newest:
                # Changed again during the build: the newest rows answer who is enrolled
                # (match()) and are built next; one build runs at a time.
                self._newest = rows
            return self._swap_in(timeout=0.0)
        if version == newest:
            return False
        self._build(*rows)
        return self._swap_in(timeout=BUILD_WAIT_SECONDS)

    def _build(self, version: int, matrix: Any, learned: bool = False) -> None:
        """Start building the matcher of `matrix` on a thread of its own (reload_if_changed;
        learned: for a visit the site memory learned, whose build says nothing of the
        gallery)."""
        build = self._start_build(self._settings, matrix, self.memory, report=not learned)
        self._pending = (version, matrix, build, learned)
        if not learned:  # a learned visit's rows are those in use: nothing to overlay
            self._newest = (version, matrix)

    def _start_build(
        self,
        settings: RecognitionConfig,
        matrix: Any,
        memory: SiteMemory | None,
        *,
        report: bool,
        name: str = "gallery-build",
    ) -> Future[Any]:
        """door_matcher(...) on a thread of its own (called `name`); its result or error, for
        the frame loop."""
        build: Future[Any] = Future()
        engine = self.engine

        def run() -> None:
            build.set_running_or_notify_cancel()
            try:
                build.set_result(
                    door_matcher(engine, settings, matrix, memory=memory, report=report)
                )
            except BaseException as error:  # raised on the frame loop (_swap_in, configured)
                build.set_exception(error)

        # A daemon thread: a build still running when the door stops must not hold its exit.
        threading.Thread(target=run, name=name, daemon=True).start()
        return build

    def _swap_in(self, timeout: float) -> bool:
        """Put the pending build in use if it finishes within `timeout`, and start the next
        one when the gallery changed again meanwhile; a build's errors are the frame loop's,
        as a build on the loop's own thread would raise them."""
        assert self._pending is not None
        version, matrix, build, learned = self._pending
        try:
            matcher, _ = build.result(timeout=timeout)
        except FutureTimeout:
            return False
        except BaseException:
            self._pending = self._newest = None
            raise
        self._pending = None
        # Names alone changed (renames): the votes matched under the old names still hold
        # (Policy.rename mapped them); restarting them would keep anyone from being let in
        # while names change again and again.
        self.only_renamed = (
            not learned
            and not self.unreadable
            and self._matrix is not None
            and self._matrix.only_renamed_in(matrix)
        )
        self._version, self._matrix, self.matcher = version, matrix, matcher
        if learned:
            assert self.memory is not None
            log.info(
                "site memory %s: %d learned; site centring removes a direction of length %.2f",
                "read again" if self._reread else "learned a stranger's visit",
                self.memory.learned,
                matcher.site_shared * matcher.settings.site_share,
            )
            self._reread = False
        else:
            self._loaded(self.gallery, matrix, matcher)
        self._readable_again()
        newest, self._newest = self._newest, None
        if newest is not None and newest[0] != version:
            self._build(*newest)  # its rows keep answering until it is in use
        return True

    def _readable_again(self) -> None:
        if self.unreadable:
            self.unreadable = self._upgraded = False
            log.warning("gallery %s can be read again: recognition resumes", self.gallery.path)

    def _shut_out(self, error: Exception) -> None:
        """Let nobody in: the gallery cannot be read, or a newer edge-app migrated it. Said
        once (again only if the reason changes); the next frame reads it again."""
        from edge_app.gallery import SCHEMA_VERSION, GalleryMatrix

        self._version = -1  # never a real data_version: the next frame tries again
        self._pending = self._newest = None
        upgraded = isinstance(error, GalleryUpgraded)
        if self.unreadable and upgraded == self._upgraded:
            return  # already shut out: said once, the empty matcher is in place
        self._upgraded = upgraded
        if isinstance(error, GalleryUpgraded):
            log.error(
                "gallery %s upgraded by a newer edge-app (schema %d; this one reads up to %d): "
                "nobody is let in until the door is restarted with it (install that edge-app "
                "here, then restart the door)",
                self.gallery.path,
                error.schema,
                SCHEMA_VERSION,
            )
        else:
            log.error(
                "gallery %s cannot be read (%s): nobody is let in until it can; trying again "
                "on every frame",
                self.gallery.path,
                error,
            )
        if self.unreadable:
            return  # the empty matcher is in place
        self.unreadable = True
        self._matrix = GalleryMatrix(
            np.zeros((0, EMBEDDING_DIM), np.float32), np.zeros(0, np.int32), ()
        )
        self._let_nobody_in()

    def _let_nobody_in(self) -> None:
        """The matcher of a gallery that cannot be read: no rows (_shut_out's), the current
        site memory."""
        self.matcher, _ = door_matcher(
            self.engine, self._settings, self._matrix, memory=self.memory, report=False
        )

    def detect(self, image: np.ndarray) -> Faces:
        return self.engine.detect(image)

    def embed(self, frame: Frame, faces: Faces) -> np.ndarray:
        """(N, 512) unit embeddings of `faces` (found on frame.image), cut from the crop image."""
        sx, sy = frame.crop_scale
        if (sx, sy) != (1.0, 1.0):
            scale = np.array([sx, sy], np.float32)
            faces = Faces(faces.boxes * np.tile(scale, 2), faces.scores, faces.landmarks * scale)
        return self.engine.embed(frame.crop_image, faces)

    def could_be(
        self, names: list[str | None], best: list[str | None], scores: np.ndarray
    ) -> list[bool]:
        """Per face, whether it could be `names` by itself, from its own embedding's match
        (`best` person and score): that person is its best match, at most OWN_FACE_DOUBT
        under the threshold."""
        floor = self.matcher.settings.threshold - OWN_FACE_DOUBT
        return [
            name is not None and mine == name and float(score) >= floor
            for name, mine, score in zip(names, best, scores, strict=True)
        ]

    def match(
        self,
        embeddings: np.ndarray,
        own: np.ndarray | None = None,
        apart: np.ndarray | None = None,
    ) -> list[Vote]:
        """The votes for `embeddings`. own: each face's own embedding when `embeddings` are
        its track's pooled ones; it is matched in the same product, and each vote then says
        whether the face could be that person by itself (Vote.alone, could_be). apart: per
        face, whether it looks like another person than its track's pool before it
        (Daemon._process): see Vote.restart."""
        count = len(embeddings)
        probes = embeddings if own is None else np.concatenate([embeddings, own])
        matches = self.matcher.identify(probes)
        scores, seconds = matches.scores[:count], matches.second[:count]
        names: list[str | None] = list(matches.names[:count])
        best: list[str | None] = list(matches.best[count:])
        restart = [False] * count
        if own is not None and apart is not None:
            # A pool of another person's face than this one, which by itself is someone the
            # pool does not name: a stranger, or another resident, stood where this person now
            # stands. The face's own match is the vote, and the track's pool starts again
            # from it (Vote.restart). Otherwise the person waited until their frames
            # outweighed the other's: 48 s after a stranger who stood there a minute; and a
            # resident following another in was reported a stranger who "took the place of"
            # her first. A pool of the same face that names nobody is evidence against one
            # frame that names someone: it stays.
            restart = [
                mine is not None and name != mine and bool(other)
                for name, mine, other in zip(names, matches.names[count:], apart, strict=True)
            ]
            if any(restart):
                chosen = np.asarray(restart)
                names = [
                    mine if again else name
                    for name, mine, again in zip(names, matches.names[count:], restart, strict=True)
                ]
                scores = np.where(chosen, matches.scores[count:], scores)
                seconds = np.where(chosen, matches.second[count:], seconds)
        faces = self.matcher.faces
        if self._newest is not None:
            # A new gallery is being built: until it is in use, the newest rows read say who
            # is still enrolled and who may open the door (a removal or a revoked access
            # must not wait for the build), and under which name (a rename: the same person;
            # a name now given to someone else: not them, whatever the matcher calls them).
            # Someone a change touched, whose templates are not all still theirs, is
            # undecided: the match may have been made through the one removed or given to
            # another person (a photo of someone else, enrolled by mistake), or not (their own
            # photo): neither them nor nobody until it is built. Someone removed is nobody.
            faces = self._newest[1]
            whole, touched = self._same_meanwhile()
            # (While the gallery cannot be read, or its first build after runs, everyone.)
            undecided = [
                self.unreadable or (name not in whole and name in touched) for name in names
            ]

            def now(name: str | None) -> str | None:
                return whole.get(name) if name is not None else None

            names, best = [now(name) for name in names], [now(name) for name in best]
        else:
            # A gallery that cannot be read names nobody (_shut_out) and decides nothing
            # either: counted as nobody, a resident still in view was reported a stranger
            # who "took the place of" her once a window of frames passed.
            undecided = [self.unreadable] * count
        own_scores = matches.scores[count:]
        alone = [True] * count if own is None else self.could_be(names, best, own_scores)
        visitors = faces.no_access  # known visitors: recognised, never let in
        return [
            Vote(
                name,
                float(score),
                float(second),
                admitted=name not in visitors,
                alone=ok,
                undecided=doubt,
                restart=again,
            )
            for name, score, second, ok, doubt, again in zip(
                names, scores, seconds, alone, undecided, restart, strict=True
            )
        ]

    @property
    def _newest(self) -> tuple[int, Any] | None:
        return self._newest_rows

    @_newest.setter
    def _newest(self, value: tuple[int, Any] | None) -> None:
        """Each change of the newest rows drops _same_meanwhile's answer: it holds the
        matcher's faces (a whole gallery's rows) that a finished build no longer uses."""
        self._newest_rows = value
        self._same = None

    def _same_meanwhile(self) -> tuple[dict[str, str], frozenset[str]]:
        """While the new matcher builds: {name in the matcher in use: their name in the
        newest rows} for the people the newest rows hold with every template the matcher
        has of them (GalleryMatrix.same_people_in, whole), and the names any of whose
        templates the newest rows hold (touched_in); worked out once per matcher and rows."""
        assert self._newest is not None
        faces, rows = self.matcher.faces, self._newest[1]
        if self._same is None or self._same[0] is not faces or self._same[1] is not rows:
            found = (faces.same_people_in(rows, whole=True), faces.touched_in(rows))
            self._same = (faces, rows, found)
        return self._same[2]

    def liveness(self, frame: Frame, faces: Faces) -> np.ndarray:
        """Liveness scores of `faces`, on the detection frame they were found in (the models
        cut their own enlarged patches; this is the frame size they are measured on). A score
        that is not a number counts as not live (judged_scores)."""
        return judged_scores(self.engine.liveness(frame.image, faces))

    def close(self) -> None:
        self._pending = self._newest = None
        self._drop_switch()
        self.gallery.close()


@dataclass(frozen=True)
class _Switch:
    """What a reload switches the Recognizer to once its matcher is built (start_configure):
    the gallery opened for it (None: the same file), the settings, the site memory, the rows
    read and their version, and the build."""

    replacement: Any
    settings: RecognitionConfig
    memory: SiteMemory | None
    version: int
    matrix: Any
    build: Future[Any]


def recorded_score(score: float | None) -> float | None:
    """A decision's score as an event records it: none when there was nobody to compare the
    face with (an empty gallery, one that cannot be read: the matcher's NO_SCORE), rather
    than a cosine of -1 it never had."""
    from edge_app.matching import NO_SCORE

    return None if score is None or score <= NO_SCORE else score


def face_crop(frame: Frame, box: np.ndarray, pad: float = 0.2) -> np.ndarray:
    """The face with some context, from the sharpest frame, for a snapshot."""
    sx, sy = frame.crop_scale
    image = frame.crop_image
    x1, y1, x2, y2 = box * np.array([sx, sy, sx, sy])
    grow_x, grow_y = (x2 - x1) * pad, (y2 - y1) * pad
    height, width = image.shape[:2]
    left, top = max(int(x1 - grow_x), 0), max(int(y1 - grow_y), 0)
    right, bottom = min(int(x2 + grow_x), width), min(int(y2 + grow_y), height)
    return image[top:bottom, left:right]


def detection_frame_problem(min_face: float, camera: CameraConfig) -> str | None:
    """Why no face could ever be found on the camera's detection frame by models whose
    smallest face is `min_face` pixels, or None. The config checks a min_face it sets; "auto"
    is the models' own, known once they are loaded."""
    if min_face <= min(camera.lores_width, camera.lores_height):
        return None
    return (
        f"camera.lores_width: the detection frame {camera.lores_width}x{camera.lores_height} "
        f"is smaller than the smallest face the detector looks for, {min_face:.0f} pixels "
        f"(detection.min_face), so no face would ever be found; make camera.lores_width and "
        f"lores_height at least {min_face:.0f}"
    )


def check_models(config: Config, models_dir: Path) -> None:
    """What the door's start checks of its models, with no pin, camera or gallery opened
    (`run --check-config`): the manifest, every file against its sha256, each model loaded
    by the TFLite runtime and matched to its manifest entry, the smallest face against the
    detection frame, and the liveness and recognition rules with the config's overrides.
    The models run on the CPU here: an Edge TPU is held by the door that runs, so the files
    compiled for it are checked by their sha256 when the config may run them. Raises the
    UserError the start would."""
    from edge_app.engine import Engine, tpu_models_problem
    from edge_app.manifest import ManifestError, load_manifest
    from edge_app.runtime import edgetpu_library_problem

    try:
        manifest = load_manifest(models_dir)
    except ManifestError as error:
        raise UserError(str(error)) from None
    # On an Edge TPU the door runs int8 whatever the cascade asks: the float cascade is
    # checked only where the door would run it, on the CPU. "auto" means the Edge TPU where
    # its library loads (a Coral unplugged is not seen here: the door then runs on the CPU).
    backend = config.models.backend
    on_tpu = (
        backend == "edgetpu" or (backend == "auto" and edgetpu_library_problem() is None)
    ) and manifest.for_edgetpu
    cascade = FLOAT if config.models.cascade == FLOAT and not on_tpu else INT8
    engine = Engine.open(
        models_dir=models_dir,
        backend="cpu",
        threads=1,
        min_face=config.detection.min_face,
        cascade=cascade,
    )
    problem = tpu_models_problem(engine.manifest, models_dir, config.models.backend)
    if problem is None:
        problem = detection_frame_problem(engine.min_face, config.camera)
    if problem is not None:
        raise UserError(problem)
    LiveRule.resolve(config.liveness, engine.manifest, engine.has_liveness)
    match_settings(engine.manifest, config.recognition)


def open_site_memory(gallery_path: Path, recognition: RecognitionConfig) -> SiteMemory | None:
    """The site memory beside the gallery when [recognition] learn_site is on, else None. A
    file this door cannot use is set aside (site_memory.refused.npz) and an empty memory
    started: the door keeps running, and keeps the file for a look."""
    if not recognition.learn_site:
        return None
    path = site_memory_path(gallery_path)
    try:
        memory = SiteMemory.load(path)
    except UserError as error:
        try:
            aside = set_aside(path)
        except OSError as move_error:
            log.error("%s; could not set it aside (%s)", error, move_error)
        else:
            if aside is None:  # not a regular file, or an earlier one set aside is kept
                log.error(
                    "%s; left in place (only a regular file is set aside, and an earlier %s "
                    "is never replaced), starting an empty site memory",
                    error,
                    REFUSED_NAME,
                )
            else:
                log.error("%s; set aside as %s, starting an empty site memory", error, aside.name)
        return SiteMemory()
    log.info("site memory %s: %d stranger visit(s) learned", path, memory.learned)
    return memory


def match_settings(manifest: Any, recognition: RecognitionConfig) -> Any:
    """The MatchSettings the door decides with: the manifest's recognition rule with the
    config's overrides (a UserError for an override out of the models' range)."""
    from edge_app.matching import MatchSettings

    return MatchSettings.from_recognition(
        manifest.recognition,
        threshold=recognition.threshold,
        margin=recognition.margin,
        aggregate=None if recognition.aggregate == "auto" else recognition.aggregate,
        site_centring=recognition.site_centring,
    )


def door_matcher(
    engine: Any,
    recognition: RecognitionConfig,
    matrix: Any,
    *,
    memory: SiteMemory | None = None,
    report: bool = True,
) -> tuple[Any, list[Any]]:
    """The Matcher the door decides with, and the lookalikes found in the gallery: the
    manifest's recognition rule with the config's overrides, over `matrix`, guarded against
    lookalikes (logged unless `report` is False; docs/ACCURACY.md, "Same camera, similar
    faces")."""
    from edge_app.matching import Matcher, guard_lookalikes

    settings = match_settings(engine.manifest, recognition)
    matcher, lookalikes = guard_lookalikes(
        Matcher(matrix, settings, getattr(engine, "cohort", None), memory), recognition.lookalikes
    )
    if report:
        report_matcher(matcher, lookalikes, recognition, memory)
    return matcher, lookalikes


def report_matcher(
    matcher: Any, lookalikes: list[Any], recognition: RecognitionConfig, memory: SiteMemory | None
) -> None:
    """Log what a new matcher means for the user: the site direction it removes, and the
    lookalikes found in the gallery (docs/ACCURACY.md)."""
    from edge_app.matching import lookalike_notices

    if round(matcher.site_shared, 2) > 0.0:  # said only when it reads as more than 0
        log.info(
            "site centring: the enrolled people%s share a direction of length %.2f beyond "
            "their own faces (one camera, one light); %.0f%% of it is removed from every face "
            "([recognition] site_centring)",
            "" if memory is None or not memory.ready else " and the strangers' visits learned",
            matcher.site_shared,
            100 * matcher.settings.site_share,
        )
    notices = lookalike_notices(lookalikes, matcher.settings.threshold, recognition.lookalikes)
    for notice in notices:
        log.warning("%s; %s", notice.problem, notice.advice)


@dataclass(eq=False)
class _Opening:
    """A pulse that opens the door (Daemon.open_door): whom for; recorded, set once its
    unlock's event is recorded (or will not be), which the relock that ends it waits for;
    relocked, set once that relock's event is; after, the opening before it whose relock was
    still due, which its unlock's event waits for; extended: the door was open and this pulse
    only kept it open longer, so it has no relock of its own and its unlock's event waits
    only for the unlock's event of the opening it extended (that one's relock comes only
    when the extended pulse ends)."""

    name: str | None
    recorded: threading.Event = field(default_factory=threading.Event)
    relocked: threading.Event = field(default_factory=threading.Event)
    after: _Opening | None = None
    extended: bool = False


class Daemon:
    """One door. `run()` blocks until stopped or a file source ends; returns an exit code.

    engine and pin_factory may be passed in (tests, the demo) to reuse a loaded engine or to
    read a MockFactory's pin history; otherwise the engine is made from the config and the
    relay runs in a process of its own (edge_app/relay_process.py) on gpio.factory's pins.
    """

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        engine: FaceEngine | None = None,
        pin_factory: object | None = None,
        reloads: bool = True,
    ) -> None:
        """reloads: SIGHUP reloads the config (the service, `edge-app run`); False for a
        door run inside another command (the demo, the evaluations), which SIGHUP stops as
        it stops any command: a reload there read the installed door's config file."""
        self.config = config
        self.config_path = config_path
        self.reloads = reloads
        self.overrides = dict(overrides or {})
        self.engine = engine
        self.pin_factory = pin_factory
        self.metrics = Metrics()
        self.relay: DoorRelay | None = None
        self.events: EventLog | None = None
        self.recognizer: Recognizer | None = None
        self.reader: FrameReader | None = None
        self._stop = threading.Event()
        self._signal: int | None = None  # the signal that stopped the door (stopped_by)
        self._reload = threading.Event()
        self._reload_refused: str | None = None  # why the last reload was, until one applies
        # A SIGHUP reload whose gallery matcher is still being built: its config and rule.
        self._reloading: tuple[Config, LiveRule] | None = None
        self._now = 0.0
        self._notifier: sdnotify.SystemdNotifier | None = None
        self._ready = False  # the start's READY=1 was sent: reloads are told to systemd after
        self._guard: threading.Thread | None = None
        # What the guard's check() raised (a relay that fails, or a bug in checking it): the
        # relay is locked and run() raises it, so the door exits non-zero and is restarted.
        self._relay_failure: Exception | None = None
        self._signals: _SignalWatch | None = None
        # The date and hour allowed_hours and the events' retention read ([clock]).
        self.wall_clock = WallClock(config.clock)
        self.policy = Policy(config.policy, clock=lambda: self._now, wall_clock=self.wall_clock)
        self.tracker = IoUTracker(config.tracking)
        self.live_rule = LiveRule()  # resolved against the models in _start
        self._parallax: dict[int, Parallax] = {}  # per live track, report only
        self.pool = TrackPool()  # per live track: its pooled embedding ([policy] evidence)
        # Per live track, the people it was recognised as; and the rows that said who was
        # enrolled when they were last looked at (_forget_removed).
        self._recognized: dict[int, set[str]] = {}
        self._enrolled: Any = None
        # Per live track with undecided frames: the latest one's face (when snapshots are on)
        # and source time, for the `unknown` its end may report (Policy.end).
        self._undecided_view: dict[int, tuple[np.ndarray | None, float]] = {}
        self.pulse_seconds = config.gpio.pulse_seconds
        # The control socket (edge_app.control): status, events, frames and remote unlock.
        self.control: ControlServer | None = None
        self.picture = PictureWatch()  # whether the camera shows anything (edge_app/picture.py)
        self._door_lock = threading.Lock()
        # The pulses that opened the door, oldest first: the relay relocks on its own, once
        # per opening and in the same order, and each relock (_on_relock) takes the oldest,
        # names its person and waits for its unlock's event, never another's.
        self._openings: deque[_Opening] = deque(maxlen=OPENINGS_KEPT)
        self._openings_changed = threading.Condition()

    # --- control from other threads and signal handlers ------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        if self.reloads:  # (a door inside another command has no config file of its own)
            self._reload.set()

    def open_door(self, name: str | None, record: Callable[[], object] | None = None) -> bool:
        """Pulse the strike: the one path for a recognition and a control-socket unlock.

        False, leaving the door locked, once a stop was asked for: the relay-guard thread
        closes the relay under the same lock, so no pulse slips in between. record, after a
        pulse: the unlock's event, which the relock that ends the pulse waits for (without
        holding the door lock, which a stop needs at once, or anything a pulse needs). A
        pulse the relay may have carried out before it failed (PulseUnanswered) is recorded
        too, before the error goes on.
        """
        opening = _Opening(name)
        try:
            try:
                if not self._pulse(opening):
                    return False
            except PulseUnanswered:
                self._record_unlock(opening, record)
                raise
            self._record_unlock(opening, record)
            return True
        finally:
            opening.recorded.set()

    @staticmethod
    def _record_unlock(opening: _Opening, record: Callable[[], object] | None) -> None:
        """An unlock's event, after the relock of the opening before it (its pulse ended just
        before this one opened the door), up to RELOCK_EVENT_WAIT: the events never say
        unlocked, then locked, while the door is open."""
        if record is None:
            return
        before = opening.after  # read once: _on_relock clears it once this one relocks
        if before is not None:
            (before.recorded if opening.extended else before.relocked).wait(RELOCK_EVENT_WAIT)
        record()

    def _pulse(self, opening: _Opening) -> bool:
        relay = self.relay
        name = opening.name
        # The control socket is attached, and frames processed, only once _start() made it.
        assert relay is not None, "open_door before the relay was claimed"
        if self._stop.is_set():  # before the door lock, which a stop holds while it locks
            log.info("not opened: stopping name=%s", name)
            return False
        with self._door_lock:
            if self._stop.is_set():
                log.info("not opened: stopping name=%s", name)
                return False
            # Known before the pulse, whose relock may come before pulse() returns; dropped
            # unless this pulse opened the door (one that extends it has no relock of its own).
            with self._openings_changed:
                opening.after = self._openings[-1] if self._openings else None
                self._openings.append(opening)
                self._openings_changed.notify_all()
            opened = False
            try:
                opened = relay.pulse(self.pulse_seconds)
            except PulseUnanswered as failure:
                opened = failure.opened  # its relock is reported: it keeps its opening
                raise
            except RuntimeError:
                if not self._stop.is_set():
                    raise
                log.info("not opened: stopping name=%s", name)
                return False
            finally:
                if not opened:
                    opening.extended = True
                    with self._openings_changed, suppress(ValueError):
                        self._openings.remove(opening)
            self.metrics.unlocks += 1
            return True

    # --- lifecycle ---------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        self._notifier = sdnotify.SystemdNotifier()
        ended = False  # without an exception: only then may the stop's relay error be raised
        try:
            try:
                self._start()
            except (RelayError, StartStopped) as error:
                if not self._stop.is_set():
                    raise
                # Stopped while starting (the relay process, the gallery, ...): nothing was
                # opened, and the stop did not wait for the start to end. A stop the relay
                # guard made, having found the relay failed, still ends the run non-zero
                # (below: _relay_failure).
                log.info("stopped before the door was ready (%s)", error)
            else:
                first = self._next_frame()
                if first is not None:
                    assert self.reader is not None and self.relay is not None, "_start() made them"
                    source = self.reader.source
                    self._notify("READY=1", self._status_line())
                    self._ready = True
                    log.info("door ready source=%s pin=GPIO%d", source.name, self.relay.pin)
                    self._loop(first)
                if self._signal is not None:
                    log.info("stopped by signal=%s", signal.Signals(self._signal).name)
            ended = True
        finally:
            try:
                self._shutdown(raise_relay_error=ended)
            finally:
                self._restore_signals()
        # Read once the guard has ended (_shutdown joins it): a failure it found while a stop
        # signal came still ends the run non-zero.
        if self._relay_failure is not None:
            raise self._relay_failure  # the relay was locked: exit non-zero, be restarted
        return 0

    def _start(self) -> None:
        config = self.config
        # The pin first: claimed and driven low (locked) before anything that can fail. By a
        # process of its own (edge_app/relay_process.py), so nothing this one does, a native
        # call holding the interpreter lock included, can keep a pulse from ending; a
        # pin_factory passed in (tests, the demo) is this process's, so the relay is too.
        if self.pin_factory is None:
            from edge_app.relay_process import RelayProcess

            self.relay = RelayProcess.from_config(
                config.gpio, on_release=self._on_relock, cancel=self._stop
            )
        else:
            self.relay = Relay.from_config(
                config.gpio, pin_factory=self.pin_factory, on_release=self._on_relock
            )
        # Which pin this daemon holds, for relay_off after a crash (edge_app/relay_record.py).
        from edge_app.relay_record import write_record

        write_record(config.gpio)
        self._guard = threading.Thread(target=self._relock_on_stop, name="relay-guard", daemon=True)
        self._guard.start()
        if self.engine is None:
            self._started("loading the models")
            from edge_app.engine import Engine

            engine = Engine.from_config(config.models, config.detection)
            self.engine = engine
            problem = detection_frame_problem(engine.min_face, config.camera)
            if problem is not None:
                raise UserError(problem)
        with self._start_goes_on("loading the gallery"):
            try:
                self.recognizer = Recognizer(
                    self.engine, config.gallery.path, config.recognition, cancel=self._stop
                )
            except UserError as error:
                message = self._gallery_words(error)
                if message != str(error):  # the config's gallery.path: advise changing it
                    raise UserError(message) from None
                raise
        self.live_rule = self._resolve_liveness(config)
        self.policy.configure(config.policy, self.live_rule)
        log.info("liveness %s", self.live_rule.describe())
        self._say_clock(config)
        # After the models and the gallery, so a start they refuse writes no event store.
        # Never raises for a sink it cannot use: the door runs, the failure is logged.
        self.events = EventLog.from_config(config.events, self.wall_clock)
        with self._start_goes_on("deleting events past the retention"):
            self.events.maintain()  # retention at start
        self._started("opening the camera")
        self.control = attach(self)
        self.reader = FrameReader(open_camera(config.camera))

    def _started(self, what: str) -> None:
        """Before each step of the start: a stop asked for meanwhile ends it here."""
        if self._stop.is_set():
            raise StartStopped(f"a stop came before {what}")

    def _next_frame(self) -> Frame | None:
        """The next frame; None when stopping or when the source has ended."""
        reader = self.reader
        assert reader is not None, "_start() opens the camera before the first frame"
        while not self._stop.is_set():
            if self._reload.is_set():
                self._reload.clear()
                self._apply_reload()
            elif self._reloading is not None:
                self._finish_reload(0.0)
            frame = reader.get(LOOP_TIMEOUT)
            if frame is not None:
                return frame
            if reader.error is not None:
                if isinstance(reader.error, UserError):
                    raise reader.error
                raise RuntimeError(f"camera failed: {reader.error!r}") from reader.error
            if reader.ended:
                log.info("source ended source=%s", reader.source.name)
                return None
        return None

    def _loop(self, frame: Frame | None) -> None:
        last_metrics = time.monotonic()
        last_ping = -math.inf  # the first processed frame pings at once
        ping_every = _watchdog_interval()
        # _start() made both; a reload reconfigures them in place, never replaces them.
        recognizer, events = self.recognizer, self.events
        assert recognizer is not None and events is not None, "_loop before _start()"
        relay = self.relay
        assert relay is not None, "_loop before _start()"
        while frame is not None:
            self._process(frame)
            if self.control is not None:
                self.control.offer_frame(frame.image, frame.index)
            if self.picture.update(frame.image, frame.timestamp):
                self._log_picture()
            now = time.monotonic()
            if now - last_ping >= ping_every:
                self._notify("WATCHDOG=1")
                last_ping = now
            # PRAGMA data_version costs microseconds: an enrolment counts from the next frame.
            # The site memory file's lstat, once per MEMORY_CHECK_SECONDS of the frame clock,
            # as little: a `site forget` counts within that.
            if recognizer.reload_if_changed(self._now) and not recognizer.only_renamed:
                self.policy.restart_votes()
            events.maintain()  # retry failing sinks when due; daily retention
            if now - last_metrics >= METRICS_EVERY:
                log.info("metrics %s", self.metrics_line())
                last_metrics = now
            frame = self._next_frame()
        # The visits still in view end with the source, or with the door stopping: one the
        # door could not judge while the gallery changed still leaves its record
        # (Policy.end). The relay is already locked by then when a signal stopped it.
        self._end_tracks(self.tracker.end_all())

    def _log_picture(self) -> None:
        """Say that the camera's picture changed, in the journal and in `systemctl status`."""
        problem = self.picture.reported
        if problem is None:
            log.info("camera picture usable again")
        else:
            log.warning(
                "camera picture %s for %.0f s: %s",
                problem,
                self.picture.hold_seconds,
                ADVICE[problem],
            )
        self._say_status()

    def _say_status(self) -> None:
        """`systemctl status`'s line: what the door watches, and what needs the user now: a
        camera picture that is not usable, the last reload refused (systemctl reload returns
        before the door has read the file)."""
        self._notify(self._status_line())

    def _status_line(self) -> str:
        source = self.reader.source.name if self.reader is not None else "-"
        parts = [f"watching {source}"]
        if self.picture.reported is not None:
            parts.append(f"camera picture {self.picture.reported}")
        if self._reload_refused is not None:
            parts.append(f"reload refused, running on the previous config: {self._reload_refused}")
        return "STATUS=" + "; ".join(parts)

    def _process(self, frame: Frame) -> None:
        recognizer = self.recognizer
        assert recognizer is not None, "_process before _start()"
        self._forget_removed(recognizer)
        self._now = frame.timestamp
        metrics = self.metrics
        metrics.frames += 1
        start = time.perf_counter()
        faces = recognizer.detect(frame.image)
        metrics.detect_seconds += time.perf_counter() - start
        height, width = frame.image.shape[:2]
        tracks, ended = self.tracker.update(faces.boxes, frame.timestamp, (width, height))
        self._end_tracks(ended)
        if not len(faces):
            return
        if self.live_rule.mode != OFF:
            # Report only, so bounded as the embedding is: the largest faces_per_frame faces
            # (a crowd or a poster of 50 faces cost 11 ms a frame on x86 when all were).
            watched = largest_first(
                np.arange(len(faces)), faces.sizes, self.config.tracking.faces_per_frame
            )
            for index in watched:
                track = tracks[index]
                self._parallax.setdefault(track.track_id, Parallax()).update(faces.landmarks[index])
        metrics.face_frames += 1
        # Only faces presented at the door are judged: not one cut by the frame's edge, nor
        # one far behind another (someone else in the room must not open it for them), also
        # on a frame that missed the face in front while its track is kept (in_front).
        due = np.flatnonzero(
            self.tracker.due(tracks)
            & whole_faces(faces, frame.image.shape)
            & self.tracker.in_front(tracks, presented_faces(faces))
        )
        if not len(due):
            return
        due = largest_first(due, faces.sizes, self.config.tracking.faces_per_frame)
        chosen = [tracks[i] for i in due]
        live: np.ndarray | None = None
        if self.live_rule.mode != OFF:
            start = time.perf_counter()
            live = recognizer.liveness(frame, faces[due])
            metrics.live_seconds += time.perf_counter() - start
        start = time.perf_counter()
        embeddings = recognizer.embed(frame, faces[due])
        own = embeddings
        if self.config.policy.evidence == "track" or recognizer.memory is not None:
            # Pooled for the vote ("track"), and for the site memory to learn a visit from.
            # When liveness is required, a face judged not live adds nothing to it.
            # Such a face's frame is voted on by itself: a printed photo held up where a live
            # face was is recognised and reported, and counts as live for nobody.
            left_out = (
                live < self.live_rule.threshold
                if live is not None and self.live_rule.mode == REQUIRE
                else np.zeros(len(due), bool)
            )
            weights = evidence_weights(faces[due], left_out)
            # Whether each face looks like another person than its track's pool so far, by
            # the enrolment's same-person rule (quality.SAME_PERSON_COSINE).
            before = [self.pool.pooled(t.track_id) for t in chosen]
            apart = np.array(
                [
                    pool is not None and float(pool @ face) < SAME_PERSON_COSINE
                    for pool, face in zip(before, embeddings, strict=True)
                ],
                dtype=bool,
            )
            pooled = self.pool.add([t.track_id for t in chosen], embeddings, weights)
            if self.config.policy.evidence == "track":
                embeddings = np.where(left_out[:, None], own, pooled)
        # A track is recognised, the door opens and liveness counts for a person only on a
        # face that could be them by itself: pooled evidence still names whoever held the
        # track before (a resident, or a printed photo of one) for a few frames after another
        # face took its place. Both are matched in one product.
        votes = (
            recognizer.match(embeddings)
            if embeddings is own
            else recognizer.match(embeddings, own, apart)
        )
        metrics.embed_seconds += time.perf_counter() - start
        if live is not None:
            votes = [
                replace(vote, liveness=float(score))
                for vote, score in zip(votes, live, strict=True)
            ]
        metrics.embedded_frames += 1
        metrics.embeddings += len(due)
        self.tracker.mark_embedded(chosen)
        for row, vote in enumerate(votes):
            if vote.restart:  # the pool held another face (Recognizer.match)
                self.pool.forget(chosen[row].track_id)
                self.pool.add([chosen[row].track_id], own[row : row + 1], weights[row : row + 1])
        for index, track, vote in zip(due, chosen, votes, strict=True):
            if vote.undecided:  # a template of whom it matched removed: after the build
                # Its liveness still counts: a printed photo held up meanwhile is reported.
                for decision in self.policy.undecided(track.track_id, vote):
                    self._act(decision, frame, faces.boxes[index], track)  # a spoof
                assert self.events is not None, "_process before _start()"
                crop = face_crop(frame, faces.boxes[index]) if self.events.snapshots else None
                view = None if crop is None else crop.copy()  # not the whole frame it is of
                self._undecided_view[track.track_id] = (view, frame.timestamp)
                track.settled = False  # evaluated again on the next frame
                continue
            log.debug(
                "vote track=%d name=%s score=%.3f second=%.3f liveness=%s t=%.2f",
                track.track_id,
                vote.name,
                vote.score,
                vote.second,
                "-" if vote.liveness is None else f"{vote.liveness:.3f}",
                frame.timestamp,
            )
            for decision in self.policy.vote(track.track_id, vote):
                self._act(decision, frame, faces.boxes[index], track)
            if (who := self.policy.identity(track.track_id)) is not None:
                # Also whom it came back to without a new decision (after a stranger took
                # the place): a later change to them judges this track again.
                self._recognized.setdefault(track.track_id, set()).add(who)
            track.settled = self.policy.settled(track.track_id)

    def _forget_removed(self, recognizer: Recognizer) -> None:
        """Tracks recognised as someone no longer enrolled (`edge-app remove` while they are
        in view, a reload to another gallery, a gallery the door cannot read any more) are
        undecided again: judged afresh, like a new track, against the gallery in use. A
        person renamed is not removed: their tracks and cooldown carry over (Policy.rename).

        Otherwise the frames that no longer name them fill the track's window and the policy
        reports a stranger who "took the place of" the person removed: a false tailgating
        alert, and a new record (with a snapshot) naming someone just removed. Checked on
        every frame, before its votes, as a removal answers from the next frame (match());
        the names are compared only when the rows changed.

        A gallery that cannot be read is not a removal: it lets nobody in until it can
        (Recognizer._shut_out), and the rows read next are compared with those read before
        it. Forgetting every track then would judge a resident still in view afresh, and
        open the door for them again once the cooldown has passed, because of a fault."""
        if recognizer.unreadable:
            return
        enrolled = recognizer.enrolled()
        if enrolled is self._enrolled:
            return
        before, self._enrolled = self._enrolled, enrolled
        if before is None:
            return
        # People are told by their templates, not their names (GalleryMatrix.same_people_in):
        # a rename is not a removal, but the same person, judged and timed as before (judged
        # afresh, the track they stand in would open again at once, past the cooldown); a
        # name given to someone else, or to new photos, is a removal of whom it named. A
        # person who lost a template is judged again too (what named them may have been it),
        # keeping the cooldown of the door their track opened.
        same = before.same_people_in(enrolled)
        removed = set(before.names) - before.same_people_in(enrolled, whole=True).keys()
        # Whom each track was recognised as, by the names before the change: a name now
        # given to someone else still names whom it named.
        gone = {track: names & removed for track, names in self._recognized.items()}
        renamed = {old: new for old, new in same.items() if old != new}
        if renamed:
            log.info(
                "renamed in the gallery: %s: their tracks and cooldown carry over",
                ", ".join(f"{old} -> {new}" for old, new in sorted(renamed.items())),
            )
            self.policy.rename(renamed)
            self._recognized = {
                track: {renamed.get(name, name) for name in names}
                for track, names in self._recognized.items()
            }
        if not removed:
            return
        for track in self.tracker.tracks:
            names = gone.get(track.track_id)
            if not names:
                continue
            log.info(
                "track=%d was recognised as %s, no longer in the gallery as then: judged again",
                track.track_id,
                ", ".join(sorted(names)),
            )
            del self._recognized[track.track_id]
            self.policy.forget(track.track_id, judged_again=True)
            self.pool.forget(track.track_id)  # its pool holds the frames matched before
            track.settled = False  # evaluated on every frame until judged again

    def _end_tracks(self, ended: list[Track]) -> None:
        """Tracks whose face has left (or the source ended, or the door stopped): a visit
        judged a stranger teaches the site memory ([recognition] learn_site), one the door
        could not judge while the gallery changed is reported (Policy.end), then the track
        is forgotten."""
        learner = self.recognizer
        if learner is not None and (learner.memory is None or self._stop.is_set()):
            learner = None  # learn_site off; or stopping: a visit cut short teaches nothing
        for track in ended:
            if learner is not None and self.policy.stranger(track.track_id):
                pooled = self.pool.pooled(track.track_id)
                if pooled is not None:
                    learner.learn(pooled, self._now)
            view = self._undecided_view.pop(track.track_id, None)
            for decision in self.policy.end(track.track_id):
                assert self.events is not None, "_end_tracks before _start()"
                crop, seen = view if view is not None else (None, self._now)
                if decision.kind == rules.SPOOF:
                    self.metrics.spoofs += 1
                self.events.record(
                    decision.kind,
                    name=decision.name,
                    score=recorded_score(decision.score),
                    track=track.track_id,
                    source_time=seen,
                    reason=decision.reason,
                    crop=crop,
                    liveness=decision.liveness,
                )
            self.pool.forget(track.track_id)
            self._parallax.pop(track.track_id, None)
            self._recognized.pop(track.track_id, None)

    def _act(self, decision: rules.Decision, frame: Frame, box: np.ndarray, track: Track) -> None:
        events = self.events
        assert events is not None, "_act before _start()"
        if decision.kind == rules.RECOGNIZED and decision.name is not None:
            self._recognized.setdefault(track.track_id, set()).add(decision.name)
        elif decision.kind == rules.UNKNOWN and str(decision.reason).startswith(rules.TOOK_PLACE):
            # Someone else holds the track now: a later change to whom it followed is not
            # theirs (judged again, the stranger would be reported twice).
            self._recognized.pop(track.track_id, None)
        crop = None
        if decision.kind in (rules.RECOGNIZED, rules.UNKNOWN, rules.SPOOF) and events.snapshots:
            crop = face_crop(frame, box)
        geometry = None
        if decision.kind in (rules.UNLOCK, rules.SPOOF) and track.track_id in self._parallax:
            geometry = self._parallax[track.track_id].reading.verdict
        if decision.kind == rules.SPOOF:
            self.metrics.spoofs += 1
        record = functools.partial(
            events.record,
            decision.kind,
            name=decision.name,
            score=recorded_score(decision.score),
            track=track.track_id,
            source_time=frame.timestamp,
            reason=decision.reason,
            crop=crop,
            liveness=decision.liveness,
            geometry=geometry,
        )
        if decision.kind != rules.UNLOCK:
            record()
        elif not self.open_door(decision.name, record):
            return  # the guard closed the relay for a stop signal: stay locked

    def _resolve_liveness(self, config: Config) -> LiveRule:
        """[liveness] against the loaded models; UserError when they cannot serve it."""
        engine = self.engine
        assert engine is not None
        return LiveRule.resolve(config.liveness, engine.manifest, engine.has_liveness)

    def _say_clock(self, config: Config) -> None:
        """Say at start and reload that allowed_hours refuses everyone it applies to while
        nothing has set the wall clock (edge_app/wall_clock.py)."""
        if config.policy.allowed_hours and not self.wall_clock.trusted():
            log.warning(
                "allowed_hours: every unlock is refused as '%s' until the clock is set: %s; %s",
                rules.CLOCK_NOT_SET,
                UNSET_CLOCK,
                SET_THE_CLOCK,
            )

    def _on_relock(self, reason: str) -> None:
        """The relay's pin went back low: the relock of the oldest opening, named for whom
        it opened (not who extended it since), recorded after that opening's unlock."""
        with self._openings_changed:
            self._openings_changed.wait_for(lambda: bool(self._openings), RELOCK_EVENT_WAIT)
            opening = self._openings.popleft() if self._openings else None
        if opening is not None:
            opening.recorded.wait(RELOCK_EVENT_WAIT)
        try:
            if self.events is not None:
                name = None if opening is None else opening.name
                self.events.record(RELOCK, name=name, reason=reason)
        finally:
            if opening is not None:
                opening.relocked.set()
                opening.after = None  # nothing left to wait for: no chain of old openings

    def _relock_on_stop(self) -> None:
        """The relay guard, a thread of its own from the moment the pin is claimed.

        Every RELAY_CHECK_EVERY it asks the relay whether anything still ends its pulses
        (check(): the relay process alive and answering, a pulse past its deadline locked
        again): one that fails is locked from this process and stops the door, which then
        exits non-zero (run() raises it) for systemd to restart. Whatever the frame loop is
        doing: a stalled camera or one still being opened delivers no frame to check on.

        SIGTERM/SIGINT lock the door at once, even while the frame loop is busy (a slow or
        hung interpreter): the signal watcher only sets _stop, this thread does the rest."""
        relay = self.relay
        assert relay is not None, "started once the relay exists"
        try:
            while not self._stop.wait(RELAY_CHECK_EVERY):
                relay.check()
        except BaseException as error:  # a failing relay; anything else must not end the
            # checks unseen either: the door would go on without them. (Not raised as it is
            # from run(): a SystemExit there would be a clean exit.)
            failure = error if isinstance(error, Exception) else RelayError(repr(error))
            self._relay_failure = failure
            self._stop.set()  # acted on first, logged after: a stalled journal must not wait it
            log.error("%s", failure)
        finally:
            try:
                with self._door_lock:  # an unlock under way finishes first, none starts after
                    relay.close()
            except RelayError as error:  # _shutdown() tries again, and raises it from run()
                log.error("%s", error)

    def metrics_line(self) -> str:
        line = self.metrics.line()
        return line if self.events is None else f"{line} {self.events.metrics_line()}"

    def _apply_reload(self) -> None:
        """SIGHUP: reopen the JSON-lines file (logrotate), then apply the new config whole,
        or nothing of it: everything that can fail is done before anything is replaced. The
        new gallery's matcher is built beside the frame loop (_finish_reload): until it is
        ready the door keeps deciding under the running config, all of it."""
        log.info("reloading config=%s", self.config_path or "defaults")
        # systemd shows the door as reloading until READY=1, which every end of a reload
        # sends (_reload_ended). A reload during the start (the first frame not read yet) is
        # not told: the start's own READY=1 comes after it.
        if self._ready:
            self._notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        if self.events is not None:
            self.events.reopen()
        try:
            new, written = read_door_config(self.config_path, self.overrides)
            Policy.check(new.policy)
            live_rule = self._resolve_liveness(new)
        except (ConfigError, ValueError, UserError) as error:
            self._refuse_reload(error.one_line() if isinstance(error, ConfigError) else str(error))
            return
        except Exception as error:  # whatever a new config trips on must not stop the door
            self._refuse_reload(f"{type(error).__name__}: {error}")
            return
        self._say_overridden(new, written)
        assert self.recognizer is not None, "reloads are applied by the frame loop, after _start()"
        self._reloading = None  # a reload still building: this one replaces it
        try:
            self.recognizer.start_configure(new.gallery.path, new.recognition)
        except Exception as error:  # a bad gallery path must not take the door down
            self._refuse_reload(f"gallery: {self._gallery_words(error)}")
            return
        self._reloading = (new, live_rule)
        if not self._finish_reload(BUILD_WAIT_SECONDS):
            log.info("%s", BUILDING)
            # The file is read and accepted: the reload's part that systemd waits for is
            # done (a large gallery's build outlasts its reload timeout, TimeoutStartSec=).
            self._reload_ended(BUILDING)

    def _finish_reload(self, timeout: float) -> bool:
        """Apply the pending reload once its matcher is built (within `timeout`); True when
        nothing is pending any more (applied, or refused for a build that failed)."""
        assert self._reloading is not None and self.recognizer is not None
        try:
            if not self.recognizer.configured(timeout):
                return False
        except Exception as error:
            self._reloading = None
            self._refuse_reload(f"gallery: {self._gallery_words(error)}")
            return True
        new, live_rule = self._reloading
        self._reloading = None
        old = self.config
        # Nothing below can fail (checked in _apply_reload): the new settings apply together.
        self.wall_clock.configure(new.clock)
        self.policy.configure(new.policy, live_rule)
        self._say_clock(new)
        if (
            self.recognizer.switch_changed
            or new.policy != old.policy
            or live_rule != self.live_rule
        ):
            self.policy.restart_votes()  # votes matched under the old gallery or rules
        if live_rule != self.live_rule:
            log.info("liveness %s", live_rule.describe())
        old_rule, self.live_rule = self.live_rule, live_rule
        self.tracker.configure(new.tracking)
        if new.policy.evidence != old.policy.evidence or live_rule != old_rule:
            # Pools restart from the next frame of each track: one pooled under another
            # liveness rule ("off", "log", a lower threshold) may hold a printed photo's
            # frames, which the rule now in force leaves out.
            self.pool.clear()
        self.pulse_seconds = new.gpio.pulse_seconds
        if self.control is not None:
            self.control.stale_seconds = new.hub.stale_seconds
        self.config = self._as_running(new)
        log.info("reload done")
        self._reload_refused = None
        self._reload_ended()
        return True

    def _gallery_words(self, error: BaseException) -> str:
        """A gallery refusal as this door says it: advice to change gallery.path in its
        config, unless --db gave the path (then the command line's words)."""
        from edge_app.advice import config_message

        if self.overrides.get("gallery.path") is not None:
            return str(error)
        return config_message(error)

    def _refuse_reload(self, why: str) -> None:
        """One line in the journal, and the same in `systemctl status` until a reload is
        applied or the door restarts."""
        log.error("reload refused, keeping the running config: %s", why)
        self._reload_refused = cut(why)
        self._reload_ended()

    def _reload_ended(self, doing: str | None = None) -> None:
        """Tell systemd the reload ended (READY=1, once the start's was sent), with the
        status line and, while its matcher builds, `doing`."""
        status = self._status_line() + ("" if doing is None else f"; {doing}")
        self._notify(*(("READY=1",) if self._ready else ()), status)

    def _as_running(self, new: Config) -> Config:
        """`new` as the door runs it once applied: what a reload cannot apply (RESTART_SECTIONS,
        RESTART_KEYS) stays as the door started, and each such change is said (a key with the
        value that runs). The next reload compares with what runs, so a change is said at
        each reload until a restart (it was said once, then never, and a change undone was
        said as a change). A change to the hub's sections, which the door does not use, is
        said once."""
        old = self.config
        kept: dict[str, Any] = {}
        for section in RESTART_SECTIONS:
            if getattr(new, section) != getattr(old, section):
                log.warning("config [%s] changed: takes effect after a restart", section)
                kept[section] = getattr(old, section)
        for section, keys in RESTART_KEYS.items():
            running = {key: getattr(getattr(old, section), key) for key in keys}
            for key, value in running.items():
                if getattr(getattr(new, section), key) != value:
                    log.warning(
                        "config %s.%s changed to %s: takes effect after a restart; the door "
                        "runs with %s",
                        section,
                        key,
                        getattr(getattr(new, section), key),
                        value,
                    )
            kept[section] = dataclasses.replace(getattr(new, section), **running)
        for section in HUB_SECTIONS:
            if getattr(new, section) != getattr(old, section):
                log.info(
                    "config [%s] changed: the hub reads it when it starts "
                    "(systemctl restart edge-app-hub); the door does not use it",
                    section,
                )
        return dataclasses.replace(new, **kept)

    def _say_overridden(self, new: Config, written: Mapping[str, Any]) -> None:
        """Name the keys the command line sets (`edge-app run --pulse 2`) that the file also
        sets (`written`: its tables as read), to another value: a reload reads the file, and
        the flag still wins."""
        for dotted, value in self.overrides.items():
            if value is None:
                continue
            section, _, key = dotted.partition(".")
            table = written.get(section)
            if not isinstance(table, dict) or key not in table:
                continue
            if not _same_value(table[key], getattr(getattr(new, section), key)):
                log.warning(
                    "config %s: the file says %s, the command line %s: the command line's "
                    "applies (restart without the flag to use the file's)",
                    dotted,
                    table[key],
                    value,
                )

    def _shutdown(self, *, raise_relay_error: bool = True) -> None:
        """Relay first: whatever else fails below, the door is already locked (telling
        systemd too waits for it: its socket may block). A relay that failed ends run()
        with its error, unless run() is already ending with another (raise_relay_error
        False: that one is kept; the relay's was logged)."""
        self._stop.set()  # ends the guard thread too
        relay_error: RelayError | None = None
        if self.relay is not None:
            try:
                self.relay.close()
            except RelayError as error:  # the rest still closes; the error ends run() after
                log.error("%s", error)
                relay_error = error
        if self._guard is not None:  # what it found decides the exit code, below and in run()
            self._guard.join(timeout=GUARD_JOIN_SECONDS)
        failed = None if self.relay is None else self.relay.locked_from_here
        if relay_error is None and self._relay_failure is None and failed is not None:
            # A relay process found failed only as it was closed: locked from here, and the
            # run ends non-zero as when the guard finds it.
            assert self.relay is not None
            relay_error = RelayError(f"{failed}; GPIO{self.relay.pin} locked from here")
        self._notify("STOPPING=1")
        try:
            self._close_the_rest()
        finally:
            if relay_error is not None and raise_relay_error:
                raise relay_error

    def _close_the_rest(self) -> None:
        if self.control is not None:
            self.control.close()
        if self.reader is not None:
            self.reader.close()
            source = self.reader.source
            log.info(
                "camera closed source=%s skipped=%d dropped=%d reconnects=%d",
                source.name,
                source.skipped,
                self.reader.dropped,
                source.reconnects,
            )
        if self.recognizer is not None:
            self.recognizer.close()
        if self.reader is not None:  # a start refused before the camera has no figures
            log.info("metrics %s", self.metrics_line())
        if self.events is not None:
            self.events.close()

    def _notify(self, *states: str) -> None:
        if self._notifier is not None:
            self._notifier.notify("\n".join(states))

    @contextmanager
    def _start_goes_on(self, what: str) -> Iterator[None]:
        """While a part of the start that grows with the data runs, tell systemd every
        START_EXTEND_EVERY seconds that the start goes on, so TimeoutStartSec= (120 s) does
        not end a start that is making progress: the gallery's matcher (its lookalike check
        grows with the square of the gallery: about 25 s on x86 at 5,000 people, minutes on
        a Pi) and the retention's first deletion of a long history. Only these parts: a start
        that hangs elsewhere (a camera, a USB accelerator) still times out. A stop asked for
        before the part begins ends the start here (_started)."""
        self._started(what)
        done = threading.Event()
        started = time.monotonic()

        def tell() -> None:
            # Not once a stop was asked for: systemd applies it to the stop's timeout too.
            while not done.wait(START_EXTEND_EVERY) and not self._stop.is_set():
                self._notify(
                    f"EXTEND_TIMEOUT_USEC={int(START_EXTEND_SECONDS * 1e6)}",
                    f"STATUS={what} ({time.monotonic() - started:.0f} s)",
                )

        thread = threading.Thread(target=tell, name="start-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _install_signals(self) -> None:
        """SIGTERM/SIGINT stop the door, SIGHUP reloads (stops it too, unless `reloads`); only
        from the main thread.

        Python runs a handler on the main thread between bytecodes, so while the frame loop is
        inside a long C call (an interpreter's invoke) the handlers wait. The C-level handler
        also writes the signal's number to a wakeup socket at once, from whatever thread the
        kernel picked: a watcher thread reads it and sets _stop, and the relay guard locks the
        door without waiting for the main thread.
        """
        if threading.current_thread() is not threading.main_thread():
            return

        # Handlers only set flags: logging or touching the relay here could re-enter a lock
        # the interrupted main thread holds.
        def stop(signum: int, _frame: object) -> None:
            self._on_stop_signal(signum)

        def reload(_signum: int, _frame: object) -> None:
            self._reload.set()

        stops: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)
        handlers: dict[int, Callable[[int, object], None]] = {
            signal.SIGTERM: stop,
            signal.SIGINT: stop,
            signal.SIGHUP: reload,
        }
        if not self.reloads:
            # Stopped as the command it runs in would be, unless SIGHUP is ignored (`nohup`).
            del handlers[signal.SIGHUP]
            if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
                stops, handlers[signal.SIGHUP] = (*stops, signal.SIGHUP), stop
        self._signals = _SignalWatch(handlers, on_signal=self._on_stop_signal, stop_signals=stops)
        if self.reloads and hangup.take():  # asked for before this handler: once started
            self._reload.set()

    @property
    def stopped_by(self) -> int | None:
        """The signal that stopped run(), or None (the source ended, or an error)."""
        return self._signal

    def _on_stop_signal(self, signum: int) -> None:
        self._signal = signum
        self._stop.set()

    def _restore_signals(self) -> None:
        if self._signals is not None:
            self._signals.close()
            self._signals = None


def _same_value(written: object, applied: object) -> bool:
    """Whether a value as TOML gives it is the value the config holds (3 is 3.0, "a.db" is
    Path("a.db"))."""
    if isinstance(written, bool) or isinstance(applied, bool):
        return written is applied
    if isinstance(written, (int, float)) and isinstance(applied, (int, float)):
        return float(written) == float(applied)
    return str(written) == str(applied)


class _SignalWatch:
    """Python signal handlers plus a wakeup socket read by a thread; close() undoes both.

    signal.set_wakeup_fd makes CPython's C-level handler write each signal's number to the
    socket the moment the signal arrives; the watcher thread calls on_signal(signum) for the
    stop_signals, while the Python handlers still run on the main thread when it gets to them.
    """

    def __init__(
        self,
        handlers: Mapping[int, Callable[[int, Any], None]],
        *,
        on_signal: Callable[[int], None],
        stop_signals: tuple[int, ...],
    ) -> None:
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)  # the C handler must never block (set_wakeup_fd insists)
        self._on_signal = on_signal
        self._stop_signals = stop_signals
        self._thread = threading.Thread(target=self._watch, name="signal-watch", daemon=True)
        self._thread.start()
        self._previous: dict[int, Any] = {}
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        try:
            for signum, handler in handlers.items():
                self._previous[signum] = signal.signal(signum, handler)
        except BaseException:
            self.close()
            raise

    def _watch(self) -> None:
        while True:
            try:
                data = self._reader.recv(64)
            except OSError:
                return
            if not data:
                return  # close(): the writer is gone
            for signum in data:
                if signum in self._stop_signals:
                    self._on_signal(signum)

    def close(self) -> None:
        """The previous handlers and wakeup fd back, the socket closed, the thread ended."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_fd)
        self._writer.close()  # the watcher reads end-of-file and returns
        self._thread.join(timeout=1.0)
        self._reader.close()


def _watchdog_interval() -> float:
    """Half the watchdog period systemd set (WATCHDOG_USEC), at most one second."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    return min(1.0, int(usec) / 2e6) if usec.isdigit() and int(usec) > 0 else 1.0
