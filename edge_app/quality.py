"""Enrolment quality gates: only clear, frontal faces of one dominant person become samples.

A bad sample is worse than none: it lowers that person's scores and raises everyone else's
false matches. Every rejection carries a reason code (stable, for --json) and a sentence that
says what to do about it.

A photo may show other faces (a crowd behind a speaker, a poster on the wall) as long as one
face clearly dominates: the largest face is enrolled when it is at least DOMINANT_RATIO times
the size of the next one; two faces of similar size are refused, since enrolment cannot tell
which of them is the person.

The pose measures come from the five MTCNN landmarks, in the frame rotated so the eye line is
horizontal:
  - roll: the eye line's angle to the horizontal, in degrees;
  - yaw: the nose's sideways offset from the eyes' midpoint, as a fraction of the eye distance
    (about 0 frontal, about 0.2 at 30 degrees of head turn, past 0.4 in profile);
  - pitch: how far down the nose sits between the eyes' and the mouth's midpoints (about 0.5
    frontal, lower when the head tilts back, higher when it tilts down).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np

from edge_app.advice import Said
from edge_app.faces import Faces

# Limits measured on LFW DevTrain people with the int8 engine (benchmarks/gates.py: doors of
# 20 people enrolled from 2 photos each, refused photos skipped as a user would) and checked
# on DevTest people; docs/GALLERY.md "Enrolment gates" has the tables. On LFW's press photos
# a stricter limit refuses more photos and leaves more people with too few to enrol, while
# the better photos it picks buy no identification that holds on DevTest, so each limit
# sits where it stops buying identification:
#   - DOMINANT_RATIO: where the largest face was not the labelled person it was at most
#     1.24x the next face on DevTrain; 1.5 keeps a margin (no such photo accepted on DevTrain
#     or DevTest). All gates together then refuse 9% of DevTrain photos, against 16% when
#     any second face was refused;
#   - roll 30 degrees, yaw 0.5, pitch 0.15-0.9: only clearly turned, tilted or profile heads
#     (0.5% of DevTrain); tightening yaw to 0.25 alone refuses 7% more;
#   - MIN_FACE_PX and MIN_SHARPNESS: LFW holds almost no photo near them, so they stay just
#     below its 1st percentile (face 77 px, sharpness 29; a Gaussian blur of sigma 2 px brings
#     the median photo to 14); stricter sharpness limits did not hold on DevTest;
#   - NEAR_DUPLICATE_COSINE: no effect on LFW between 0.95 and 0.99.
MIN_FACE_PX = 64
DOMINANT_RATIO = 1.5
MIN_SHARPNESS = 25.0
SHARPNESS_SIZE = 112
MAX_ROLL_DEG = 30.0
MAX_YAW = 0.5
PITCH_RANGE = (0.15, 0.9)
NEAR_DUPLICATE_COSINE = 0.98
# A photo whose face is below this cosine to every other photo of the person is taken for
# another person's (benchmarks/same_person.py measures it on DevTrain and DevTest pairs;
# docs/GALLERY.md, "One person per enrolment", says why 0.36).
SAME_PERSON_COSINE = 0.36
# A photo's mirror image shows the same face: its embedding's cosine to the photo's own is
# above 0.92 for every LFW photo that passes the gates (benchmarks/same_person.py; docs/
# GALLERY.md, "Export format"). A stored mirror embedding below this is another face's: an
# import refuses it, and matching leaves it out (it would let that face in under the name).
MIRROR_SAME_FACE = 0.85
# Enrolment refuses a face more than this share of whose box, across or down, lies outside
# the photo (cut_share): part of the face is missing, and its template is of part of one. A
# photo cropped to the face box (a profile picture) has about 2% outside, 9% of them more
# than 5%: benchmarks/edge_cut.py, docs/GALLERY.md.
CUT_SHARE_MAX = 0.05


class Reason(str, Enum):  # noqa: UP042 (StrEnum would change what str() and f-strings give)
    UNREADABLE = "unreadable"
    NO_FACE = "no_face"
    SEVERAL_FACES = "several_faces"
    CUT_BY_EDGE = "cut_by_edge"
    TOO_SMALL = "too_small"
    BLURRY = "blurry"
    NOT_FRONTAL = "not_frontal"
    NEAR_DUPLICATE = "near_duplicate"
    NOT_LIVE = "not_live"
    ANOTHER_PERSON = "another_person"


@dataclass(frozen=True)
class Rejection:
    reason: Reason
    # Its sentence: an Advised when it ends with advice the command line and the web page
    # word differently (edge_app.advice).
    said: Said

    @property
    def message(self) -> str:
        """The sentence as the command line says it."""
        return str(self.said)


@dataclass(frozen=True)
class Gates:
    """The thresholds in one object, so the CLI, the camera loop and tests share them."""

    min_face: float = MIN_FACE_PX
    dominant_ratio: float = DOMINANT_RATIO
    min_sharpness: float = MIN_SHARPNESS
    max_roll_deg: float = MAX_ROLL_DEG
    max_yaw: float = MAX_YAW
    pitch_range: tuple[float, float] = PITCH_RANGE
    near_duplicate: float = NEAR_DUPLICATE_COSINE
    same_person: float = SAME_PERSON_COSINE
    max_cut_share: float = CUT_SHARE_MAX


DEFAULT_GATES = Gates()


def sharpness(frame: np.ndarray, box: np.ndarray) -> float:
    """Variance of the Laplacian over the face box, resampled to a fixed size.

    The fixed size makes the number comparable between a 90 px and a 400 px face: it measures
    detail at roughly the scale the embedder sees, not the camera's resolution.
    """
    height, width = frame.shape[:2]
    x1, y1, x2, y2 = np.round(box).astype(int)
    x1, y1 = max(x1, 0), max(y1, 0)
    x2, y2 = min(x2, width), min(y2, height)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return 0.0
    gray = cv2.cvtColor(np.ascontiguousarray(frame[y1:y2, x1:x2]), cv2.COLOR_RGB2GRAY)
    gray = cv2.resize(gray, (SHARPNESS_SIZE, SHARPNESS_SIZE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def pose(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 5, 2) landmarks -> roll (degrees), yaw and pitch ratios, each (N,)."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
    left_eye, right_eye, nose = points[:, 0], points[:, 1], points[:, 2]
    eye_mid = (left_eye + right_eye) / 2
    mouth_mid = (points[:, 3] + points[:, 4]) / 2
    eye_line = right_eye - left_eye
    eye_distance = np.maximum(np.linalg.norm(eye_line, axis=1), 1e-6)
    across = eye_line / eye_distance[:, None]
    down = np.stack([-across[:, 1], across[:, 0]], axis=1)  # image y grows downwards
    roll = np.degrees(np.arctan2(eye_line[:, 1], eye_line[:, 0]))
    nose_offset = nose - eye_mid
    yaw = np.einsum("ij,ij->i", nose_offset, across) / eye_distance
    face_height = np.maximum(np.einsum("ij,ij->i", mouth_mid - eye_mid, down), 1e-6)
    pitch = np.einsum("ij,ij->i", nose_offset, down) / face_height
    return roll, yaw, pitch


def dominant_face(faces: Faces, gates: Gates = DEFAULT_GATES) -> int | Rejection:
    """The index of the face to enrol (the largest, when it clearly dominates), else why not."""
    if len(faces) == 0:
        return Rejection(Reason.NO_FACE, "no face found")
    sizes = faces.sizes
    order = np.argsort(-sizes, kind="stable")
    largest = int(order[0])
    if len(faces) > 1:
        first, second = float(sizes[largest]), float(sizes[order[1]])
        if first < gates.dominant_ratio * second:
            similar = " of similar size" if len(faces) == 2 else ", the two largest of similar size"
            return Rejection(
                Reason.SEVERAL_FACES,
                f"{len(faces)} faces{similar} ({first:.0f} and {second:.0f} px); the "
                f"person to enrol must be at least {gates.dominant_ratio:g}x the size of any "
                "other face: crop the photo to the person, or take one with only them in view",
            )
    return largest


# Faces this close to the frame edge are cut off: their embeddings are poor, so the door
# neither lets them vote nor counts them as unknown until the person is fully in view.
EDGE_PIXELS = 2.0


def whole_faces(faces: Faces, shape: tuple[int, ...]) -> np.ndarray:
    """Mask of faces entirely inside the frame (not cut by its edge)."""
    height, width = shape[:2]
    boxes = faces.boxes
    return np.asarray(
        (boxes[:, 0] >= EDGE_PIXELS)
        & (boxes[:, 1] >= EDGE_PIXELS)
        & (boxes[:, 2] <= width - EDGE_PIXELS)
        & (boxes[:, 3] <= height - EDGE_PIXELS)
    )


def cut_share(faces: Faces, shape: tuple[int, ...]) -> np.ndarray:
    """(N,) the share of each box outside the frame along the axis that loses most: what
    runs past the left and right edges over the box's width, past the top and bottom over
    its height (0: wholly inside)."""
    height, width = shape[:2]
    x1, y1, x2, y2 = np.asarray(faces.boxes, np.float64).T
    across = (np.maximum(-x1, 0) + np.maximum(x2 - width, 0)) / np.maximum(x2 - x1, 1e-6)
    down = (np.maximum(-y1, 0) + np.maximum(y2 - height, 0)) / np.maximum(y2 - y1, 1e-6)
    return np.asarray(np.maximum(across, down))


def presented_faces(faces: Faces, ratio: float = DOMINANT_RATIO) -> np.ndarray:
    """Mask of the faces presented to the camera: every face the largest does not dominate
    by `ratio` (the enrolment rule above). A face that much smaller than one in front is
    someone further back in the room, not who is at the door; two people side by side at
    the door are both presented."""
    sizes = faces.sizes
    finite = np.isfinite(sizes)
    if not finite.any():
        return np.zeros(len(sizes), bool)
    # A NaN size (a broken box) is never presented, and must not hide every other face
    # (sizes.max() would be NaN, and every comparison with it False).
    return finite & (sizes * ratio > sizes[finite].max())


def enrolment_face(
    frame: np.ndarray, faces: Faces, gates: Gates = DEFAULT_GATES
) -> Faces | Rejection:
    """The one face of the frame to enrol (Faces of length 1) when it passes every gate;
    else the first gate it fails, in the order: no face, several faces, too small, not
    frontal, blurry, cut by the edge (CUT_SHARE_MAX; last, so that benchmarks/gates.py's
    counts of the others stand: it refuses none of the LFW development photos they pass)."""
    chosen = dominant_face(faces, gates)
    if isinstance(chosen, Rejection):
        return chosen
    face = faces[chosen]
    size = float(face.sizes[0])
    if size < gates.min_face:
        return Rejection(
            Reason.TOO_SMALL,
            f"face is {size:.0f} px, at least {gates.min_face:.0f} px needed: "
            "use a larger photo or come closer",
        )
    roll, yaw, pitch = (float(v[0]) for v in pose(face.landmarks))
    low, high = gates.pitch_range
    if abs(roll) > gates.max_roll_deg or abs(yaw) > gates.max_yaw or not low <= pitch <= high:
        return Rejection(
            Reason.NOT_FRONTAL,
            f"face not frontal enough (roll {roll:+.0f} deg, limit {gates.max_roll_deg:.0f}; "
            f"yaw {yaw:+.2f}, limit {gates.max_yaw:.2f}; pitch {pitch:.2f}, range "
            f"{low:.2f}-{high:.2f}): look straight at the camera, head level",
        )
    sharp = sharpness(frame, face.boxes[0])
    if sharp < gates.min_sharpness:
        return Rejection(
            Reason.BLURRY,
            f"face too blurry (sharpness {sharp:.1f}, at least {gates.min_sharpness:.0f} "
            "needed): hold still, focus, more light",
        )
    share = float(cut_share(face, frame.shape)[0])
    if share > gates.max_cut_share:
        return Rejection(
            Reason.CUT_BY_EDGE,
            f"the face is cut by the edge of the photo ({100 * share:.0f}% of its box is "
            f"outside it, {100 * gates.max_cut_share:.0f}% at most): use one with the whole "
            "head in it, or step back into the camera's view",
        )
    return face


def check_face(frame: np.ndarray, faces: Faces, gates: Gates = DEFAULT_GATES) -> Rejection | None:
    """None when the frame holds a face good enough to enrol (enrolment_face), else why not."""
    chosen = enrolment_face(frame, faces, gates)
    return chosen if isinstance(chosen, Rejection) else None


def duplicate_of(
    embedding: np.ndarray, existing: np.ndarray, gates: Gates = DEFAULT_GATES
) -> Rejection | None:
    """A Rejection when the embedding nearly repeats one of `existing` (K, 512); else None.

    Near-duplicates add storage and weight to one pose without adding information, so they
    are skipped, not treated as errors.
    """
    if existing.shape[0] == 0:
        return None
    similarity = float(np.max(existing @ np.asarray(embedding, dtype=np.float32)))
    if similarity <= gates.near_duplicate:
        return None
    return Rejection(
        Reason.NEAR_DUPLICATE,
        f"near-duplicate of a sample already there (cosine {similarity:.3f} > "
        f"{gates.near_duplicate:.2f}); skipped",
    )


def mirrors_differ(embeddings: np.ndarray, mirrors: np.ndarray) -> np.ndarray:
    """(N,) True where a photo's mirror embedding is not its own face's: the rows' cosine is
    below MIRROR_SAME_FACE. Rows are taken as the matcher takes stored ones: of any length
    (renormalised); one that is zero or not finite matches nobody and differs from nothing."""
    own, mirror = np.asarray(embeddings), np.asarray(mirrors)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        lengths = np.sqrt(
            np.einsum("ij,ij->i", own, own, dtype=np.float64)
            * np.einsum("ij,ij->i", mirror, mirror, dtype=np.float64)
        )
        cosines = np.einsum("ij,ij->i", own, mirror, dtype=np.float64) / lengths
    return np.asarray(np.isfinite(cosines) & (lengths > 0) & (cosines < MIRROR_SAME_FACE))


def photo_links(embeddings: np.ndarray, mirrors: np.ndarray) -> np.ndarray:
    """(N, N) cosine of each photo to each other photo, the better of its own embedding and
    its mirror's, made symmetric; the diagonal is -1 (a photo is no witness for itself)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    scores = np.maximum(embeddings @ embeddings.T, embeddings @ np.asarray(mirrors, np.float32).T)
    scores = np.maximum(scores, scores.T)
    np.fill_diagonal(scores, -1.0)
    return scores


def other_people_among(
    embeddings: np.ndarray,
    mirrors: np.ndarray,
    enrolled: np.ndarray,
    gates: Gates = DEFAULT_GATES,
) -> dict[int, Rejection]:
    """The photos of one enrolment that look like another person, each with its Rejection.

    embeddings, mirrors: (N, 512) of the photos offered, in order; enrolled: (K, 512) the
    person's samples already in the gallery (with their mirrors), K = 0 for a new person.
    Two photos belong together when their cosine is at least gates.same_person, and groups
    join through any member (a person's photos at 20 and at 50 link through the ones
    between). With samples enrolled, the photos in a group that links to none of them are
    refused. For a new person, the largest group is the person and the others are refused;
    when no group is the largest, every photo is, since nothing says who the person is.
    """
    count = len(embeddings)
    if count == 0 or (count == 1 and len(enrolled) == 0):
        return {}
    floor = gates.same_person
    scores = photo_links(embeddings, mirrors)
    links = scores >= floor
    group = np.arange(count)
    for i, j in zip(*np.nonzero(np.triu(links)), strict=True):  # union of linked photos
        old, new = group[j], group[i]
        group[group == old] = new
    to_enrolled = (
        np.max(np.asarray(embeddings, np.float32) @ np.asarray(enrolled, np.float32).T, axis=1)
        if len(enrolled)
        else np.full(count, -1.0, np.float32)
    )
    ids, sizes = np.unique(group, return_counts=True)
    if len(enrolled):
        keep = set(np.unique(group[to_enrolled >= floor]).tolist())
        why = "looks like none of the person's enrolled photos"
    elif len(ids) == 1:
        return {}
    else:
        largest = ids[sizes == sizes.max()]
        keep = set(largest.tolist()) if len(largest) == 1 else set()
        why = (
            "looks like another person than most of the photos"
            if keep
            else f"the {count} photos show {len(ids)} people or more, none on most of them"
        )
    # Its best cosine to a photo outside its own group, or to an enrolled sample: every one
    # is below the floor, or the groups would have joined.
    scores[group[:, None] == group[None, :]] = -1.0
    best = np.maximum(scores.max(axis=1), to_enrolled)
    return {
        int(i): Rejection(
            Reason.ANOTHER_PERSON,
            # (Cut, not rounded: 0.3596 rounded read "0.36 ... below 0.36".)
            f"{why} (best cosine {math.floor(float(best[i]) * 1000) / 1000:.3f} to them, "
            f"below {floor:.3f}): enrol "
            "each person under their own name, from photos of them alone",
        )
        for i in range(count)
        if int(group[i]) not in keep
    }
