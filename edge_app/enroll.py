"""Enrolment: photos or camera frames -> quality-checked embeddings -> one gallery transaction.

All-or-nothing by design. Every photo is read, checked and embedded before the gallery is
opened for writing, and every problem is reported together; if any photo is bad, nothing is
written and the gallery file stays byte-for-byte as it was. A half-enrolled person (one good
photo of three, the others silently dropped) is worse than a clear "fix these and retry".
Near-duplicates are the exception: they are skipped, since they add nothing. A photo that
nearly repeats a sample of another enrolled person is refused instead: it is the same face
under a second name, which the door could then let in as either.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
from tqdm.contrib.logging import logging_redirect_tqdm

from edge_app.advice import Advice, Advised, Said
from edge_app.commands import shown
from edge_app.config import RecognitionConfig
from edge_app.errors import UserError
from edge_app.faces import Faces
from edge_app.gallery import (
    EMBEDDING_DIM,
    Gallery,
    NewSample,
    already_enrolled,
    check_name,
    looks_like_enrolled,
    name_key,
    new_name_advice,
    nobody_named,
    removed_if_left_empty,
)
from edge_app.images import ImageError, encode_jpeg, image_files, load_photo
from edge_app.liveness_rule import judged_scores
from edge_app.manifest import Manifest
from edge_app.picture import EXPLAIN, picture_problem
from edge_app.progress import Progress
from edge_app.quality import (
    DEFAULT_GATES,
    Gates,
    Reason,
    Rejection,
    duplicate_of,
    enrolment_face,
    mirrors_differ,
    other_people_among,
)

log = logging.getLogger(__name__)

CAMERA_SAMPLES = 5
CAMERA_TIMEOUT_S = 60.0
# Kept crops show the whole head: the box grown by this fraction of its width, as a person
# reviewing the gallery would want to see it. (Not the FaceNet crop margin, engine.CROP_MARGIN:
# these crops are for people, never embedded.)
KEPT_CROP_GROW = 0.4
CROP_JPEG_QUALITY = 90


class Embedder(Protocol):
    """What enrolment needs from edge_app.engine.Engine."""

    manifest: Manifest

    def detect(self, frame: np.ndarray) -> Faces: ...

    def embed(self, frame: np.ndarray, faces: Faces, mirror: bool = False) -> np.ndarray: ...

    def liveness(self, frame: np.ndarray, faces: Faces) -> np.ndarray: ...


@dataclass(frozen=True)
class EnrolledAs(Rejection):
    """A near-duplicate of another enrolled person's sample: refused, never skipped."""


@dataclass(frozen=True)
class OtherPeople:
    """The samples of everyone enrolled but the person being enrolled: (K, 512) rows,
    photos and their mirrors, and the stored name of each row's person."""

    embeddings: np.ndarray
    names: tuple[str, ...]


@dataclass(frozen=True)
class Problem:
    source: str
    reason: Reason
    said: Said  # as Rejection.said

    @property
    def message(self) -> str:
        """The sentence as the command line says it."""
        return str(self.said)


class NameRefused(UserError):
    """The name does not fit the mode: already enrolled or looking like an enrolled name
    (enrolling, gallery.reads_like), or not enrolled (adding photos)."""


class EnrollError(UserError):
    """Nothing was enrolled; `problems` lists every photo that stopped it."""

    def __init__(self, name: str, problems: Sequence[Problem], summary: str = "") -> None:
        self.problems = list(problems)
        # A file named with a newline or a terminal escape must not forge a line of output.
        lines = [f"  {shown(p.source)}: {p.message}" for p in self.problems]
        head = summary or f"nothing enrolled for {name!r}; fix or drop these photos and retry"
        super().__init__("\n".join([f"{head} (the gallery is unchanged)", *lines]))


@dataclass
class EnrollResult:
    name: str
    created: bool
    added: list[str] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    samples: int = 0
    # What the door's lookalike check will make of them, and whom they match
    # (lookalike_warning), when asked for.
    lookalike: str = ""
    lookalike_of: str = ""


def lookalike_warning(
    db: Path, engine: object, recognition: RecognitionConfig, name: str
) -> tuple[str, str]:
    """After an enrolment, what the door's lookalike check ([recognition] lookalikes,
    edge_app.matching.guard_lookalikes) will make of `name` when it pairs them with someone
    enrolled: most often the same person under a second name, whose other photos match like
    a lookalike's and raise the door's threshold for everyone. (what it means, whom they
    match), or ("", "") when it does not pair them."""
    from edge_app.daemon import door_matcher
    from edge_app.matching import LOOKALIKE_STEP

    with Gallery.open(db, read_only=True) as gallery:
        matrix = gallery.load_matrix()
    warn_only = dataclasses.replace(recognition, lookalikes="warn")  # the threshold before
    matcher, found = door_matcher(engine, warn_only, matrix, report=False)
    key = name_key(name)
    theirs = [pair for pair in found if key in (name_key(pair.first), name_key(pair.second))]
    if not theirs:
        return "", ""
    pair = theirs[0]
    other = pair.second if name_key(pair.first) == key else pair.first
    shared = f"{name!r} matches {other!r} at {pair.score:.3f}"
    if pair.same_face:
        return f"{shared}, as the same face: either can be let in as the other", other
    base = matcher.settings.threshold
    if recognition.lookalikes != "raise":
        return (
            f"{shared}, at or above the threshold {base:.3f}: strangers who look like them "
            "can be let in",
            other,
        )
    raised = max(p.score for p in found if not p.same_face) + LOOKALIKE_STEP
    return (
        f"{shared}, as one person under two names does: the door raises its threshold for "
        f"everyone from {base:.3f} to {raised:.3f}, and most visits will need retries",
        other,
    )


def model_id(engine: Embedder) -> str:
    """The embedding model's identity stored with each sample: the engine's
    `embedding_model` (FaceNet file hash, with the centring mean's when there is one,
    edge_app.centering.model_identity); the FaceNet file hash for an engine without it."""
    identity = getattr(engine, "embedding_model", None)
    if isinstance(identity, str):
        return identity
    [(_, spec)] = engine.manifest.by_role("facenet")
    return spec.sha256


def existing_samples(db: Path, name: str, add: bool) -> np.ndarray:
    """The person's current samples, after checking the name fits the mode (fail fast).

    Only reads: a missing gallery is not created here, so a failed enrolment leaves no file.
    """
    name = check_name(name)
    if not Path(db).exists():
        if add:
            raise NameRefused(f"nobody named {name!r} is enrolled (no gallery at {db} yet)")
        return np.zeros((0, EMBEDDING_DIM), np.float32)
    with Gallery.open(db) as gallery:
        enrolled = gallery.has(name)
        if enrolled and not add:
            raise NameRefused(already_enrolled(name))
        twin = None if enrolled or add else gallery.looks_like(name)
        if twin is not None:
            raise NameRefused(looks_like_enrolled(name, twin, new_name_advice(twin)))
        if add and not enrolled:
            raise NameRefused(nobody_named(name, (p.name for p in gallery.people())))
        return gallery.embeddings(name, mirrors=True)


def other_people(db: Path, name: str) -> OtherPeople:
    """Everyone else's samples (OtherPeople), read once before the photos are judged."""
    if not Path(db).exists():
        return OtherPeople(np.zeros((0, EMBEDDING_DIM), np.float32), ())
    with Gallery.open(db) as gallery:
        matrix = gallery.load_matrix()
    key = name_key(name)
    keep = np.array([name_key(who) != key for who in matrix.names], dtype=bool)
    rows = keep[matrix.person] if len(matrix) else np.zeros(0, dtype=bool)
    return OtherPeople(matrix.embeddings[rows], tuple(matrix.names[p] for p in matrix.person[rows]))


def enrolled_as(
    embedding: np.ndarray, others: OtherPeople, gates: Gates = DEFAULT_GATES
) -> EnrolledAs | None:
    """An EnrolledAs rejection when the embedding nearly repeats another person's sample
    (the near-duplicate gate's cosine): the same photo, or nearly, under a second name."""
    if not len(others.names):
        return None
    scores = others.embeddings @ np.asarray(embedding, dtype=np.float32)
    row = int(np.argmax(scores))
    if float(scores[row]) <= gates.near_duplicate:
        return None
    who = others.names[row]
    return EnrolledAs(
        Reason.NEAR_DUPLICATE,
        Advised(
            f"the same face as {who!r}, already enrolled (cosine {float(scores[row]):.3f} > "
            f"{gates.near_duplicate:.2f} to one of their samples): one person under two names "
            "is let in as either; drop this photo, or add it to them with ",
            Advice.ADD_PHOTO_TO,
            who,
        ),
    )


def face_crop_jpeg(frame: np.ndarray, box: np.ndarray) -> bytes:
    height, width = frame.shape[:2]
    grow = (box[2] - box[0]) * KEPT_CROP_GROW / 2
    x1, y1, x2, y2 = np.round(box + np.array([-grow, -grow, grow, grow])).astype(int)
    crop = frame[max(y1, 0) : min(y2, height), max(x1, 0) : min(x2, width)]
    data = encode_jpeg(crop, CROP_JPEG_QUALITY)
    if data is None:
        raise RuntimeError("OpenCV could not encode the face crop as JPEG")
    return data


class _Collector:
    """The same gates for photos and camera frames; accepted samples accumulate in memory."""

    def __init__(
        self,
        engine: Embedder,
        existing: np.ndarray,
        gates: Gates,
        keep_crops: bool,
        live_threshold: float | None = None,
        others: OtherPeople | None = None,
        each_frame: bool = False,
    ) -> None:
        """each_frame: judge each frame at once against the samples before it (a camera,
        whose first good frames are the person); photos are judged together (refused())."""
        self.engine = engine
        self.each_frame = each_frame
        self.existing = existing
        self.others = others
        self.live_threshold = live_threshold
        self.gates = gates
        self.keep_crops = keep_crops
        self.model = model_id(engine)
        self.known = existing
        self.samples: list[NewSample] = []
        self.sources: list[str] = []

    def consider(self, frame: np.ndarray, source: str, sha256: str) -> Rejection | None:
        """None when the frame became a sample; otherwise why not (near-duplicate included)."""
        face = enrolment_face(frame, self.engine.detect(frame), self.gates)
        if isinstance(face, Rejection):
            return face
        if self.live_threshold is not None:
            score = float(judged_scores(self.engine.liveness(frame, face))[0])
            if score < self.live_threshold:
                return Rejection(
                    Reason.NOT_LIVE,
                    f"not judged live (liveness {score:.2f} < {self.live_threshold:.2f}): "
                    "enrol the person themselves, not a photo or a screen",
                )
        embedding = self.engine.embed(frame, face)[0]
        rejection = duplicate_of(embedding, self.known, self.gates)
        if rejection is None and self.others is not None:
            rejection = enrolled_as(embedding, self.others, self.gates)
        if rejection is None and self.each_frame:
            rejection = other_people_among(
                embedding[None], embedding[None], self.known, self.gates
            ).get(0)
        if rejection is not None:
            return rejection
        crop = face_crop_jpeg(frame, face.boxes[0]) if self.keep_crops else None
        # The mirror image's embedding is stored with the photo: a visitor is then matched
        # against either, which identifies more people at no cost at the door (ACCURACY.md).
        mirror: np.ndarray | None = self.engine.embed(frame, face, mirror=True)[0]
        if mirror is not None and mirrors_differ(embedding[None], mirror[None])[0]:
            mirror = None  # not seen on LFW (quality.MIRROR_SAME_FACE): the photo alone
        self.samples.append(NewSample(embedding, sha256, crop, self.model, mirror=mirror))
        self.sources.append(source)
        rows = [embedding] if mirror is None else [embedding, mirror]
        self.known = np.vstack([self.known, *rows])
        return None

    def another_person(self) -> list[Problem]:
        """The accepted photos that look like another person than the rest of the person's
        photos, enrolled and new (quality.other_people_among)."""
        if not self.samples:
            return []
        refused = other_people_among(
            np.stack([s.embedding for s in self.samples]),
            np.stack([s.embedding if s.mirror is None else s.mirror for s in self.samples]),
            self.existing,
            self.gates,
        )
        problems = []
        for i, rejection in sorted(refused.items()):
            whose = self._whose(i)  # (other_people_among's own sentence has no Advised)
            said = rejection.said if whose is None else whose.after(rejection.message)
            problems.append(Problem(self.sources[i], rejection.reason, said))
        return problems

    def _whose(self, index: int) -> Advised | None:
        """For a photo refused as another person's: the enrolled person it links to by the
        same rule (cosine at least gates.same_person, itself or its mirror image to one of
        their samples), so that a photo of them in the wrong folder is named; else None."""
        if self.others is None or not len(self.others.names):
            return None
        sample = self.samples[index]
        faces = np.stack([sample.embedding, *([] if sample.mirror is None else [sample.mirror])])
        scores = (faces @ self.others.embeddings.T).max(axis=0)
        row = int(np.argmax(scores))
        if float(scores[row]) < self.gates.same_person:
            return None
        who = self.others.names[row]
        return Advised(
            f"; it looks like {who!r}, already enrolled (cosine {float(scores[row]):.3f}): "
            "if it is theirs, add it to them with ",
            Advice.ADD_PHOTO_TO,
            who,
        )


def _commit(
    db: Path,
    name: str,
    collector: _Collector,
    add: bool,
    skipped: list[Problem],
    access: bool = True,
    recognition: RecognitionConfig | None = None,
) -> EnrollResult:
    result = EnrollResult(name, created=not add, added=collector.sources, skipped=skipped)
    if not collector.samples:
        log.info("name=%r nothing new to enrol: every photo repeats a sample already there", name)
        with Gallery.open(db) as gallery:
            result.samples = len(gallery.embeddings(name))
        return result
    with removed_if_left_empty(db), Gallery.open(db, create=True) as gallery:
        warning = gallery.other_models_warning(collector.model)
        if warning is not None:
            log.warning("%s", warning)
        result.samples = gallery.enroll(name, collector.samples, add=add, access=access)
    log.info("name=%r enrolled samples=%d total=%d", name, len(collector.samples), result.samples)
    if recognition is not None:
        try:
            result.lookalike, result.lookalike_of = lookalike_warning(
                db, collector.engine, recognition, name
            )
        except (UserError, OSError) as error:  # enrolled all the same: said, not raised
            log.warning("the lookalike check could not run after the enrolment (%s)", error)
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM (edge_app.cli) after the commit: the person is enrolled, and
            # the command must say so, not "interrupted" (a retry would be refused as
            # already enrolled). On a large gallery the check takes a while.
            log.warning("interrupted: the lookalike check was cut short; %r is enrolled", name)
    return result


def enroll_photos(
    db: Path,
    engine: Embedder,
    name: str,
    images: Sequence[Path | str],
    *,
    add: bool = False,
    keep_crops: bool = False,
    gates: Gates = DEFAULT_GATES,
    access: bool = True,
    progress: bool = False,
    recognition: RecognitionConfig | None = None,
) -> EnrollResult:
    """Enrol `name` from photo files and folders, all photos or none (module docstring).
    access=False enrols a known visitor: recognised, never let in (docs/GALLERY.md).
    progress: show a progress bar over the photos when standard error is a terminal.
    recognition: the door's [recognition], to say what its lookalike check will make of the
    person (EnrollResult.lookalike)."""
    name = check_name(name)
    collector = _Collector(
        engine, existing_samples(db, name, add), gates, keep_crops, others=other_people(db, name)
    )
    paths = image_files(images)
    problems: list[Problem] = []
    skipped: list[Problem] = []
    with photo_progress(paths, f"checking {name}", enabled=progress) as photos:
        for path in photos:
            source = str(path)
            try:
                photo = load_photo(path)
            except ImageError as error:
                problems.append(
                    Problem(source, Reason.UNREADABLE, str(error).removeprefix(f"{source}: "))
                )
                continue
            rejection = collector.consider(photo.pixels, source, photo.sha256)
            if rejection is None:
                log.info("photo=%s accepted", source)
            elif rejection.reason is Reason.NEAR_DUPLICATE and not isinstance(
                rejection, EnrolledAs
            ):
                log.info("photo=%s skipped: %s", source, rejection.message)
                skipped.append(Problem(source, rejection.reason, rejection.said))
            else:
                log.info("photo=%s rejected reason=%s", source, rejection.reason.value)
                problems.append(Problem(source, rejection.reason, rejection.said))
    for problem in collector.another_person():
        log.info("photo=%s rejected reason=%s", problem.source, problem.reason.value)
        problems.append(problem)
    if problems:
        raise EnrollError(name, problems)
    return _commit(db, name, collector, add, skipped, access, recognition)


T = TypeVar("T")


@contextlib.contextmanager
def photo_progress(
    photos: Sequence[T], desc: str, *, enabled: bool = True
) -> Iterator[Iterable[T]]:
    """`photos` to iterate over, with a progress bar on standard error when it is a terminal
    (and `enabled`); log lines are then written above the bar instead of through it."""
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(
            Progress(photos, desc=desc, unit="photo", disable=None if enabled else True)
        )
        if not bar.disable:
            stack.enter_context(logging_redirect_tqdm())
        yield bar


@contextlib.contextmanager
def _call_after(seconds: float, action: Callable[[], object] | None) -> Iterator[None]:
    """Call `action` from a timer thread after `seconds`, unless the block has ended."""
    timer = threading.Timer(seconds, action) if action is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()


def enroll_camera(
    db: Path,
    engine: Embedder,
    name: str,
    frames: Iterable[np.ndarray],
    *,
    count: int = CAMERA_SAMPLES,
    timeout: float = CAMERA_TIMEOUT_S,
    add: bool = False,
    keep_crops: bool = False,
    gates: Gates = DEFAULT_GATES,
    progress: bool = True,
    live_threshold: float | None = None,
    stop: Callable[[], object] | None = None,
    access: bool = True,
    recognition: RecognitionConfig | None = None,
) -> EnrollResult:
    """Enrol `name` from the first `count` good, mutually distinct camera frames
    (recognition: as enroll_photos).

    Frames failing a gate are simply passed over (the person adjusts, guided by the reason
    shown next to the progress bar); near-duplicates are too, which makes the person move a
    little between samples, so the gallery gets some variety of pose. With `live_threshold`,
    frames whose face scores below it on the liveness check (a photo held up to the camera)
    are passed over as well. Nothing is written unless all `count` samples are collected
    within `timeout` seconds. `stop` is called at the deadline from a timer thread, to end
    `frames` while it waits for a frame that does not come (a camera that is not there).
    """
    name = check_name(name)
    collector = _Collector(
        engine,
        existing_samples(db, name, add),
        gates,
        keep_crops,
        live_threshold,
        others=other_people(db, name),
        each_frame=True,
    )
    deadline = time.monotonic() + timeout
    timed_out = False
    last: Rejection | None = None
    picture: str | None = None  # why the camera shows no face, when its picture says why
    with (
        Progress(
            total=count, desc=f"enrolling {name}", unit="sample", disable=None if progress else True
        ) as bar,
        _call_after(timeout, stop),  # started after the deadline is set: fires at or after it
    ):
        for index, frame in enumerate(frames):
            digest = hashlib.sha256(np.ascontiguousarray(frame).data).hexdigest()
            rejection = collector.consider(frame, f"camera frame {index}", digest)
            if rejection is None:
                bar.update(1)
                bar.set_postfix_str("")
            else:
                last = rejection
                hint = ""
                if isinstance(rejection, EnrolledAs):
                    hint = "already enrolled under another name"
                elif rejection.reason is Reason.ANOTHER_PERSON:
                    hint = "one person at a time"
                elif rejection.reason is Reason.NEAR_DUPLICATE:
                    hint = "move your head a little"
                elif rejection.reason is Reason.NO_FACE:
                    picture = picture_problem(frame)
                    hint = "" if picture is None else EXPLAIN[picture]
                bar.set_postfix_str(f"{rejection.reason.value} {hint}".strip())
            timed_out = time.monotonic() > deadline
            if len(collector.samples) >= count or timed_out:
                break
    if len(collector.samples) < count:
        timed_out = timed_out or time.monotonic() >= deadline
        when = f"within {timeout:.0f} s" if timed_out else "before the camera stopped"
        if last is None and not collector.samples:
            when += ": no frame came from the camera"
        elif last is not None and last.reason is Reason.NO_FACE and picture is not None:
            when += f": {EXPLAIN[picture]}"
        raise EnrollError(
            name,
            [Problem("last rejected frame", last.reason, last.said)] if last else [],
            f"only {len(collector.samples)} of {count} good frames for {name!r} {when}",
        )
    return _commit(db, name, collector, add, [], access, recognition)
