"""What the door learns of its own camera from the strangers it sees ([recognition] learn_site).

Site centring (edge_app.matching.site_direction) measures what the faces at one door share
beyond each person's own face (one camera, one light, one household) from the enrolled
people, and removes most of it before matching. A household of one gives it nobody to
compare with, and strangers at such a door were let in far more often (docs/ACCURACY.md, "A
door that learns its site"). With `learn_site = true` each visit the door judged a stranger
adds its pooled embedding to a running sum, and site centring counts those visits as more
faces of the site.

What is kept is an aggregate, never a face: the decayed sum of the visits' unit embeddings
and two weights, in one small file beside the gallery (SITE_MEMORY_NAME, mode 0600). No
image, time or name is kept, and no single visit can be read back once a few have been
added. The memory spans about the last VISITS visits (each new one decays the rest), counts
in site centring from the first visit learned (one visit already keeps most look-alike
strangers out, docs/ACCURACY.md), and learns at most one visit per LEARN_INTERVAL seconds,
so one person lingering at the door cannot fill it.

Only a track the policy judged a stranger teaches it: a full vote window with nobody
recognised and, when the models have a liveness check, judged live (a printed photo teaches
nothing). Even then a visit is not learned when its pooled face scored within LEARN_DOUBT of
the threshold (doubt): for someone enrolled, it may have been a resident the door missed,
and learning a resident's own face would teach the door to miss them again; for a visit
learned before, it is the same stranger again. Site centring counts each learned visit as
another person, so one face learned over and over would become "what the site shares", and
removing it from every face lifts strangers' scores for the residents (docs/ACCURACY.md,
"One face learned over and over"). For that check the memory keeps
the last VISITS learned visits' pooled faces in RAM (`recent`), never in its file: a restart
forgets them. `edge-app site` shows it and forgets it.
"""

from __future__ import annotations

import math
import stat
import zipfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge_app.errors import UserError
from edge_app.gallery import EMBEDDING_DIM
from edge_app.private_file import write_private_bytes

if TYPE_CHECKING:
    from edge_app.matching import Matcher

SITE_MEMORY_NAME = "site_memory.npz"  # beside the gallery file
REFUSED_NAME = "site_memory.refused.npz"  # where the door sets aside a file it cannot use
FORMAT_VERSION = 1
VISITS = 200  # the memory spans about this many of the latest stranger visits
DECAY = 1.0 - 1.0 / VISITS  # each new visit scales the ones before by this
LEARN_INTERVAL = 60.0  # seconds (the door's frame clock) between two learned visits
# A visit whose best score came this close to the threshold (on the matcher's scale) is not
# learned. On the NUAA replay the resident's visits that a memory of 3 visits pushed under
# the threshold stayed within 0.01 of it, while 99% of strangers' visits scored more than
# 0.089 under it; before anything is learned 29% of strangers come this close (the "guard"
# part of benchmarks/learned_site.py; docs/ACCURACY.md, "A door that learns its site").
LEARN_DOUBT = 0.1
MAX_FILE_BYTES = 64 * 1024  # a real memory file is about 5 KB; larger ones are refused
_COUNTS = ("version", "learned")  # whole numbers
_SUMS = ("weight", "weight_sq")  # sums of decayed weights
_KEYS = {"total", *_COUNTS, *_SUMS}
_SLACK = 1e-6


def site_memory_path(gallery_path: Path) -> Path:
    """Where the door keeps the memory of the gallery at `gallery_path`."""
    return Path(gallery_path).with_name(SITE_MEMORY_NAME)


def worth_learning(best_score: float, threshold: float) -> bool:
    """Whether a face that scored `best_score` at best is far enough from the threshold not to
    have been that face: at least LEARN_DOUBT under it."""
    return best_score < threshold - LEARN_DOUBT


def doubt(matcher: Matcher, memory: SiteMemory, embedding: np.ndarray) -> str | None:
    """Why the door must not learn a visit it judged a stranger's, or None when it may: the
    visit's pooled face scored within LEARN_DOUBT of the threshold for someone enrolled
    (perhaps them, missed), or for a visit the memory learned recently (the same stranger
    again), scored as `matcher` scores, on the door's site and cohort scale."""
    threshold = float(matcher.settings.threshold)
    match = matcher.identify(embedding)
    score = float(match.scores[0])
    if match.best[0] is not None and not worth_learning(score, threshold):
        return (
            f"it scored {score:.3f} for {match.best[0]}, within {LEARN_DOUBT:.2f} of the "
            f"threshold {threshold:.3f} (perhaps them, missed)"
        )
    if memory.recent:
        again = float(np.max(matcher.sample_scores(embedding, np.stack(memory.recent))))
        if not worth_learning(again, threshold):
            return (
                f"it scored {again:.3f} for a visit learned before, within {LEARN_DOUBT:.2f} "
                f"of the threshold {threshold:.3f} (the same stranger again)"
            )
    return None


@dataclass
class SiteMemory:
    """The decayed sum of learned visits' unit embeddings (`total`), the sum of their weights
    (`weight`) and of their squared weights (`weight_sq`), and how many were ever learned."""

    total: np.ndarray = field(default_factory=lambda: np.zeros(EMBEDDING_DIM, np.float64))
    weight: float = 0.0
    weight_sq: float = 0.0
    learned: int = 0
    # The last VISITS learned visits' unit faces, for doubt(); in RAM only, never saved.
    recent: deque[np.ndarray] = field(
        default_factory=lambda: deque(maxlen=VISITS), repr=False, compare=False
    )

    def copy(self) -> SiteMemory:
        """An independent copy (what-if studies learn on from one memory several ways)."""
        return SiteMemory(
            self.total.copy(), self.weight, self.weight_sq, self.learned, deque(self.recent, VISITS)
        )

    def same_as(self, other: SiteMemory | None) -> bool:
        """Whether `other` holds the same learned visits (what site centring reads)."""
        return (
            other is not None
            and (self.learned, self.weight, self.weight_sq)
            == (other.learned, other.weight, other.weight_sq)
            and np.array_equal(self.total, other.total)
        )

    @property
    def ready(self) -> bool:
        """A visit has been learned: site centring counts the memory."""
        return self.learned > 0

    def add(self, embedding: np.ndarray) -> None:
        """Learn one visit from its pooled embedding (any length; it is made a unit vector)."""
        vector = np.asarray(embedding, np.float64).reshape(-1)
        if vector.shape != (EMBEDDING_DIM,) or not np.all(np.isfinite(vector)):
            raise ValueError(f"a visit's embedding must be {EMBEDDING_DIM} finite numbers")
        norm = float(np.linalg.norm(vector))
        if norm < 1e-6:
            raise ValueError("a visit's embedding must not be all zeros")
        self.total = DECAY * self.total + vector / norm
        self.recent.append((vector / norm).astype(np.float32))
        self.weight = DECAY * self.weight + 1.0
        self.weight_sq = DECAY * DECAY * self.weight_sq + 1.0
        self.learned += 1

    def save(self, path: Path) -> None:
        """Write atomically with mode 0600: a crash leaves the old file or the new one."""
        write_private_bytes(
            path,
            lambda out: np.savez(
                out,
                version=np.int64(FORMAT_VERSION),
                total=self.total.astype(np.float64),
                weight=np.float64(self.weight),
                weight_sq=np.float64(self.weight_sq),
                learned=np.int64(self.learned),
            ),
        )

    @classmethod
    def load(cls, path: Path) -> SiteMemory:
        """The memory in `path`; an empty one when there is no file. UserError, naming what
        is wrong, for anything else than a memory this door wrote (nothing is changed): a
        file of the wrong size or kind, a damaged archive, arrays of the wrong type or shape,
        numbers that cannot be. Nothing in the file is unpickled."""
        path = Path(path)
        try:
            info = path.stat()
        except FileNotFoundError:
            return cls()
        except OSError as error:
            raise UserError(f"{path}: cannot read the site memory ({error})") from None
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{path}: not a regular file, so not a site memory")
        if info.st_size > MAX_FILE_BYTES:
            raise UserError(
                f"{path}: {info.st_size} bytes is not a site memory (at most {MAX_FILE_BYTES})"
            )
        try:
            return cls._checked(path, _read_arrays(path))
        except UserError:
            raise
        except Exception as error:  # zipfile, zlib and numpy raise many types on a bad file
            detail = str(error) or type(error).__name__
            raise UserError(f"{path}: not a readable site memory ({detail})") from None

    @classmethod
    def _checked(cls, path: Path, arrays: dict[str, np.ndarray]) -> SiteMemory:
        def problem(what: str) -> UserError:
            return UserError(f"{path}: not a valid site memory: {what}")

        for key in _COUNTS:
            if arrays[key].shape != () or arrays[key].dtype.kind not in "iu":
                raise problem(f"{key} must be one whole number")
        for key in _SUMS:
            if arrays[key].shape != () or arrays[key].dtype.kind not in "iuf":
                raise problem(f"{key} must be one number")
        version, learned = int(arrays["version"]), int(arrays["learned"])
        if version != FORMAT_VERSION:
            raise problem(f"format version {version} (this door reads {FORMAT_VERSION})")
        if learned < 0:
            raise problem("learned must be a count")
        total = arrays["total"]
        if total.shape != (EMBEDDING_DIM,) or total.dtype.kind != "f":
            raise problem(f"total must be {EMBEDDING_DIM} numbers")
        with np.errstate(over="ignore", invalid="ignore"):  # too large for float64: inf
            total = total.astype(np.float64)
            weight, weight_sq = (float(np.float64(arrays[key])) for key in _SUMS)
        if not (math.isfinite(weight) and math.isfinite(weight_sq) and np.isfinite(total).all()):
            raise problem("it holds a number that is not finite")
        if not 0.0 <= weight <= VISITS + _SLACK:
            raise problem(f"weight {weight} is outside [0, {VISITS}]")
        # Weights are powers of DECAY: their squares sum to at most `weight` and to at least
        # weight^2 / (2 VISITS - 1), the limit of an endless run of visits.
        if not 0.0 <= weight_sq <= weight + _SLACK or weight_sq * 2 * VISITS + _SLACK < weight**2:
            raise problem(f"weight_sq {weight_sq} does not fit weight {weight}")
        if float(np.linalg.norm(total)) > weight + _SLACK:
            raise problem("total is longer than its weight allows (a sum of unit vectors)")
        if (learned == 0) != (weight == 0.0):
            raise problem("learned and weight disagree")
        return cls(total, weight, weight_sq, learned)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of the .npz at `path`, refusing an archive that unpacks to more than
    MAX_FILE_BYTES (checked before anything is unpacked) or that holds other names."""
    with zipfile.ZipFile(path) as archive:
        if sum(info.file_size for info in archive.infolist()) > MAX_FILE_BYTES:
            raise UserError(f"{path}: its contents are too large for a site memory")
    with np.load(path, allow_pickle=False) as stored:
        if set(stored.files) != _KEYS:
            raise UserError(f"{path}: not a site memory (holds {', '.join(sorted(stored.files))})")
        return {key: np.asarray(stored[key]) for key in _KEYS}


def forget(path: Path) -> bool:
    """Delete the memory file; True if there was one."""
    try:
        Path(path).unlink()
    except FileNotFoundError:
        return False
    return True
