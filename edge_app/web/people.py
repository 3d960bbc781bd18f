"""Enrolment from uploaded photos, through the very code the CLI uses (edge_app.enroll).

The uploads are in memory (edge_app.web.forms). edge_app.enroll reads photos from files, so
each upload is written to a private folder (0700, files 0600) created next to the gallery,
enrolled from there, and the folder is removed whatever happens: no photo lands anywhere
else, and the gates, the all-or-nothing rule and the messages are exactly the CLI's. A folder
left by a hub killed mid-enrolment (power cut, out of memory) is removed when the page starts.

The FaceNet and MTCNN interpreters are opened on the CPU at the first enrolment (on a Pi the
Edge TPU belongs to the door process) and released after ENGINE_IDLE_S without one, so the
hub stays small between enrolments.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_app.advice import web, web_message
from edge_app.config import DetectionConfig, ModelsConfig, RecognitionConfig
from edge_app.errors import UserError
from edge_app.images import IMAGE_SUFFIXES
from edge_app.private_file import make_private_folder
from edge_app.web.forms import Upload

if TYPE_CHECKING:
    import numpy as np

    from edge_app.web.door import WebDoor

log = logging.getLogger(__name__)

ENGINE_IDLE_S = 600.0
MAX_FILENAME = 120
UPLOAD_PREFIX = ".web-upload-"  # the private folders next to the gallery
# Enrolment from the door's camera: as many samples as the CLI takes, within a time an HTTP
# request can wait; the door's latest frame is asked for this often.
WEB_CAMERA_TIMEOUT_S = 30.0
CAMERA_POLL_S = 0.2
# How long the door may give no frame before a camera enrolment ends as "the camera stopped".
# Not less: a door on a busy CPU (a Pi without an Edge TPU, the hub embedding the enrolment's
# frames beside it) can leave its control socket unanswered for seconds while it still runs.
FRAME_GAP_S = 5.0


@dataclass(frozen=True)
class PhotoOutcome:
    filename: str
    accepted: bool
    message: str = ""


@dataclass
class EnrolmentReport:
    """What the page shows after an enrolment attempt."""

    name: str
    ok: bool
    summary: str
    photos: list[PhotoOutcome] = field(default_factory=list)
    add: bool = False
    # The form field a refusal is about, which the page marks invalid: "name" (the name
    # rules), "photos" (photos refused, or none sent), or None (not a field's fault).
    field: str | None = None


class EngineHolder:
    """One CPU engine, opened on demand and dropped when unused for `idle_s`: the door's
    models, cascade and detection settings (photos cut as the door cuts frames), on the CPU
    (the Edge TPU, if any, is the door's)."""

    def __init__(
        self,
        models: ModelsConfig,
        detection: DetectionConfig,
        idle_s: float = ENGINE_IDLE_S,
    ) -> None:
        self.models = models
        self.detection = detection
        self.idle_s = idle_s
        self._engine: Any = None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def use(self, work: Callable[[Any], Any]) -> Any:
        """Run work(engine) holding the engine (one user at a time)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            if self._engine is None:
                from edge_app.engine import Engine

                log.info("web enrolment: loading the models on the CPU")
                self._engine = Engine.from_config(
                    replace(self.models, backend="cpu"), self.detection
                )
            try:
                return work(self._engine)
            finally:
                self._timer = threading.Timer(self.idle_s, self.release)
                self._timer.daemon = True
                self._timer.start()

    def release(self) -> None:
        from edge_app import heap

        with self._lock:
            released = self._engine is not None
            if released:
                log.info("web enrolment: models released after %.0f s unused", self.idle_s)
            self._engine = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if released:
                heap.give_back()  # else the hub keeps its peak size (edge_app/heap.py)

    @property
    def loaded(self) -> bool:
        return self._engine is not None


def display_name(filename: str, index: int) -> str:
    """The upload's own name, for messages (never used as a path)."""
    name = Path(filename.replace("\\", "/")).name.strip()
    cleaned = "".join(c if c.isprintable() else "?" for c in name)[:MAX_FILENAME]
    return cleaned or f"photo {index + 1}"


def _suffix(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    return suffix if suffix in IMAGE_SUFFIXES else ".img"


def enroll_uploads(
    gallery: Path,
    holder: EngineHolder,
    name: str,
    uploads: Sequence[Upload],
    *,
    add: bool,
    access: bool = True,
    recognition: RecognitionConfig | None = None,
) -> EnrolmentReport:
    """Enrol (or add photos to) `name` from uploads; every outcome is in the report.
    access=False enrols a known visitor (docs/GALLERY.md). recognition: the door's, to say
    what its lookalike check will make of the person."""
    from edge_app import enroll

    if not uploads:
        return EnrolmentReport(name, False, "choose at least one photo", add=add, field="photos")
    shown = [display_name(upload.filename, i) for i, upload in enumerate(uploads)]
    # The name rules first (empty, too long, already enrolled...): no models needed.
    name_refusal = _name_refused(gallery, name, add)
    if name_refusal is not None:
        return name_refusal
    gallery = Path(gallery)
    try:
        make_private_folder(gallery.parent)
        folder = Path(tempfile.mkdtemp(prefix=UPLOAD_PREFIX, dir=gallery.parent))
    except OSError as error:
        return EnrolmentReport(name, False, _no_room(gallery, error), add=add)
    try:
        sources: dict[str, str] = {}
        paths: list[Path] = []
        for index, upload in enumerate(uploads):
            path = folder / f"{index:03d}{_suffix(upload.filename)}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(upload.data)
            except OSError as error:
                return EnrolmentReport(name, False, _no_room(gallery, error), add=add)
            sources[str(path)] = shown[index]
            paths.append(path)

        def run(engine: Any) -> Any:
            return enroll.enroll_photos(
                gallery, engine, name, paths, add=add, access=access, recognition=recognition
            )

        try:
            result = holder.use(run)
        except enroll.EnrollError as error:
            refused = {p.source: _unfold(web(p.said), sources) for p in error.problems}
            photos = [
                PhotoOutcome(
                    sources[str(path)],
                    str(path) not in refused,
                    refused.get(str(path), "good, but not enrolled: the others must pass too"),
                )
                for path in paths
            ]
            return EnrolmentReport(
                name,
                False,
                f"nothing enrolled for {name!r}: fix or leave out the refused photos and try "
                "again (the gallery is unchanged)",
                photos,
                add,
                field="photos",
            )
        except UserError as error:
            return EnrolmentReport(name, False, _unfold(web_message(error), sources), add=add)
        skipped = {p.source: _unfold(web(p.said), sources) for p in result.skipped}
        photos = [
            PhotoOutcome(
                sources[str(path)],
                True,
                f"skipped: {skipped[str(path)]}" if str(path) in skipped else "enrolled",
            )
            for path in paths
        ]
        summary = (
            f"{_enrolled(result.name, add, access)}{len(result.added)} new sample(s), "
            f"{result.samples} in total"
            if result.added
            else f"nothing new for {name!r}; {result.samples} sample(s) as before"
        )
        log.info("web enrolment name=%r added=%d add=%s", name, len(result.added), add)
        return EnrolmentReport(result.name, True, summary + _lookalike(result), photos, add)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_stale_uploads(gallery: Path) -> None:
    """Remove upload folders an interrupted hub left next to the gallery: their photos are
    biometric data that enroll_uploads would have removed. Run before any enrolment can."""
    try:
        leftovers = [
            folder
            for folder in Path(gallery).parent.glob(UPLOAD_PREFIX + "*")
            if folder.is_dir() and not folder.is_symlink()
        ]
    except OSError as error:  # the page still starts; enroll_uploads names the problem
        log.warning("web enrolment: cannot look for interrupted uploads: %s", error)
        return
    for folder in leftovers:
        shutil.rmtree(folder, ignore_errors=True)
        log.warning("web enrolment: removed the photos of an interrupted one in %s", folder)


def door_frames(door: WebDoor, deadline: float) -> Iterator[np.ndarray]:
    """The door's new frames (RGB) until the deadline; ends early once the door has had none
    for FRAME_GAP_S. One failed fetch (the door busy answering the live view, a client slot
    taken) ended the enrolment as "before the camera stopped", with frames still coming."""
    from edge_app.images import ImageError, decode_image

    last = ""
    missing_since: float | None = None
    while time.monotonic() < deadline:
        jpeg = door.frame()
        if jpeg is None:
            now = time.monotonic()
            missing_since = now if missing_since is None else missing_since
            if now - missing_since >= FRAME_GAP_S:
                return
            time.sleep(CAMERA_POLL_S)
            continue
        missing_since = None
        digest = hashlib.sha256(jpeg).hexdigest()
        if digest != last:
            last = digest
            try:
                yield decode_image(jpeg, "the door's frame")
            except ImageError as error:
                log.warning("web camera enrolment: bad frame from the door: %s", error)
        time.sleep(CAMERA_POLL_S)


def enroll_from_door(
    gallery: Path,
    holder: EngineHolder,
    name: str,
    door: WebDoor,
    *,
    add: bool,
    timeout: float = WEB_CAMERA_TIMEOUT_S,
    access: bool = True,
    recognition: RecognitionConfig | None = None,
) -> EnrolmentReport:
    """Enrol `name` from the door camera's frames, through edge_app.enroll.enroll_camera
    (recognition: as enroll_uploads)."""
    from edge_app import enroll

    name_refusal = _name_refused(gallery, name, add)
    if name_refusal is not None:
        return name_refusal
    if door.frame() is None:
        return EnrolmentReport(
            name,
            False,
            "the door has no fresh camera frame (is it running, with its camera working?)",
            add=add,
        )

    def run(engine: Any) -> Any:
        deadline = time.monotonic() + timeout
        return enroll.enroll_camera(
            gallery,
            engine,
            name,
            door_frames(door, deadline),
            count=enroll.CAMERA_SAMPLES,
            timeout=timeout,
            add=add,
            progress=False,
            access=access,
            recognition=recognition,
        )

    try:
        result = holder.use(run)
    except enroll.EnrollError as error:
        problems = [PhotoOutcome(p.source, False, web(p.said)) for p in error.problems]
        head = str(error).splitlines()[0]
        hint = "; stand in front of the door, facing it, and turn your head a little"
        return EnrolmentReport(name, False, head + hint, problems, add)
    except UserError as error:
        return EnrolmentReport(name, False, web_message(error), add=add)
    summary = (
        f"{_enrolled(result.name, add, access, ' from the door camera')}"
        f"{len(result.added)} new sample(s), {result.samples} in total"
    )
    log.info("web camera enrolment name=%r added=%d add=%s", name, len(result.added), add)
    return EnrolmentReport(result.name, True, summary + _lookalike(result), [], add)


def _lookalike(result: Any) -> str:
    """What the door's lookalike check will make of the person just enrolled, with the page's
    own remedy (EnrollResult.lookalike)."""
    if not result.lookalike:
        return ""
    return (
        f". Note: {result.lookalike}. If it is one person, remove this name and add the photos "
        f"to {result.lookalike_of!r}; if two (twins, siblings), nothing to do"
    )


def _name_refused(gallery: Path, name: str, add: bool) -> EnrolmentReport | None:
    """A report refusing `name` by the name rules (gallery.check_name; already enrolled, or
    looking like an enrolled name, when enrolling; not enrolled when adding), else None. A
    gallery that cannot be read refuses too, but not as the name's fault."""
    from edge_app import enroll
    from edge_app.gallery import check_name

    try:
        check_name(name)
    except UserError as error:
        return EnrolmentReport(name, False, str(error), add=add, field="name")
    try:
        enroll.existing_samples(gallery, name, add)
    except enroll.NameRefused as error:
        return EnrolmentReport(name, False, web_message(error), add=add, field="name")
    except UserError as error:
        return EnrolmentReport(name, False, web_message(error), add=add)
    return None


def _enrolled(name: str, add: bool, access: bool, how: str = "") -> str:
    """The start of a success line, up to the sample count. A new person's access is said:
    a "known visitor" tick lost on the way (a refused form once dropped it) must not pass
    unnoticed for a door key."""
    from edge_app.gallery import describe_access

    if add:
        return f"added to {name!r}{how}: "
    return f"enrolled {name!r}{how}, who {describe_access(access)}; "


def _no_room(gallery: Path, error: OSError) -> str:
    return (
        f"cannot write next to the gallery in {gallery.parent} ({error.strerror or error}): "
        "the hub needs write access there to enrol (docs/WEB.md)"
    )


def _unfold(message: str, sources: dict[str, str]) -> str:
    """Messages name the private temporary files: show the uploaded names instead."""
    for path, shown in sources.items():
        message = message.replace(path, shown)
    return message


def page_error(error: UserError) -> str:
    """A gallery command's refusal as the People page says it: its forms, not the CLI's."""
    from edge_app.gallery import NoGallery

    if isinstance(error, NoGallery):
        return "Nobody is enrolled yet: enrol someone with the form above."
    # The CLI's advice names its flags and commands; the page words it as its forms.
    return web_message(error)
