"""What the door learns of its own camera from the strangers it sees ([recognition] learn_site).

Site centring (edge_app.matching.site_direction) measures what the faces at one door share
beyond each person's own face (one camera, one light, one household) from the enrolled
people, and removes most of it before matching. A household of one gives it nobody to
compare with, and strangers at such a door were let in far more often (docs/ACCURACY.md, "A
door that learns its site"). With `learn_site = true` each visit the door judged a stranger
adds its pooled embedding to a running sum, and site centring counts those visits as more
faces of the site.

What site centring reads is an aggregate: the decayed sum of the visits' unit embeddings and
two weights, in one file beside the gallery (SITE_MEMORY_NAME, mode 0600). The same file also
keeps the repeat guard's faces (`recent`, below): the unit pooled embedding of each of the
last VISITS visits learned. No image, time or name is kept. The memory spans about the last
VISITS visits (each new one decays the rest), counts in site centring from the first visit
learned (one visit already keeps most look-alike strangers out, docs/ACCURACY.md), and learns
at most one visit per LEARN_INTERVAL seconds, so one person lingering at the door cannot
fill it.

Only a track the policy judged a stranger teaches it: a full vote window with nobody
recognised and, when the models have a liveness check, judged live (a printed photo teaches
nothing). Even then a visit is not learned when its pooled face scored within LEARN_DOUBT of
the threshold (doubt): for someone enrolled, it may have been a resident the door missed,
and learning a resident's own face would teach the door to miss them again; for a visit
learned before, it is the same stranger again. Site centring counts each learned visit as
another person, so one face learned over and over would become "what the site shares", and
removing it from every face lifts strangers' scores for the residents (docs/ACCURACY.md,
"One face learned over and over"). For that check the memory keeps the last VISITS learned
visits' unit pooled faces (`recent`), in its file too, so that a restart does not forget them
(a file written before they were kept loads with none), and compares a new visit with them
before site centring: once the memory is mostly one face, centring removes that face, and its
repeats would no longer look alike. `edge-app site` shows the memory and forgets it.

The file is trusted only as the door writes it: a regular file (not a symbolic link) of this
user or root that its group and others may not write, in a folder only they may change.
Anything else is refused (UserError), and the door sets a refused regular file aside
(set_aside) and starts empty: whoever could write the memory could plant their own face in
it, and site centring would then remove what they share with the residents. The door writes
it 0600; one of its own that others may read is used, and `edge-app site show` and `edge-app
doctor` warn about it (chmod 600).
"""

from __future__ import annotations

import errno
import fcntl
import io
import math
import os
import stat
import time
import zipfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from edge_app.config import untrusted_problem
from edge_app.errors import UserError
from edge_app.gallery import EMBEDDING_DIM
from edge_app.private_file import (
    _kind,
    leftover_pattern,
    sweep_leftovers,
    write_private_bytes,
)

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
# A real memory file is about 5 KB plus 2 KB per recent visit kept (at most VISITS: 415 KB);
# larger ones are refused.
MAX_FILE_BYTES = 512 * 1024
_COUNTS = ("version", "learned")  # whole numbers
_SUMS = ("weight", "weight_sq")  # sums of decayed weights
_KEYS = {"total", *_COUNTS, *_SUMS}
_RECENT = "recent"  # the repeat guard's faces; absent from files written before they were kept
_SLACK = 1e-6
_UNIT_SLACK = 1e-3  # how far a stored recent face's length may be from 1


class MemoryFileChanged(Exception):
    """The memory file is no longer the one the door read or last wrote (SiteMemory.file):
    `edge-app site forget` deleted it (or something replaced it). Nothing was written."""


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
        again = float(np.max(uncentred_scores(matcher, embedding, np.stack(memory.recent))))
        if not worth_learning(again, threshold):
            return (
                f"it scored {again:.3f} for a visit learned before, within {LEARN_DOUBT:.2f} "
                f"of the threshold {threshold:.3f} (the same stranger again)"
            )
    return None


def uncentred_scores(matcher: Matcher, probe: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """(K,) the score the unit `probe` gets against each of K unit faces, as `matcher` scores
    (cohort-normalised when it is) but without site centring: as Matcher.sample_scores at a
    door without site centring. The repeat guard compares so, because site centring removes
    what the learned visits share: once they are mostly one face, it removes that face, and
    its repeats would no longer look alike."""
    vector = np.asarray(probe, np.float32).reshape(1, EMBEDDING_DIM)
    norm = float(np.linalg.norm(vector))
    vector = vector / np.float32(norm if norm > 1e-6 else 1.0)
    return np.asarray(matcher.sample_scores(vector, samples, centred=False))


@dataclass
class SiteMemory:
    """The decayed sum of learned visits' unit embeddings (`total`), the sum of their weights
    (`weight`) and of their squared weights (`weight_sq`), and how many were ever learned."""

    total: np.ndarray = field(default_factory=lambda: np.zeros(EMBEDDING_DIM, np.float64))
    weight: float = 0.0
    weight_sq: float = 0.0
    learned: int = 0
    # The last VISITS learned visits' unit faces, for doubt(); saved with the rest.
    recent: deque[np.ndarray] = field(
        default_factory=lambda: deque(maxlen=VISITS), repr=False, compare=False
    )
    # (st_dev, st_ino) of the file this memory was read from or last saved to; None when
    # none (save(own=True) writes only over that file, or where there is none).
    file: tuple[int, int] | None = field(default=None, repr=False, compare=False)

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

    def on_disk(self, path: Path) -> bool:
        """Whether the file at `path` is still the one this memory was read from or last
        saved to. A memory that has none (an empty one; one whose saves failed) passes, as
        does a path that cannot be looked at (the save says why it fails)."""
        if self.file is None:
            return True
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return False
        except OSError:
            return True
        return (info.st_dev, info.st_ino) == self.file

    def save(self, path: Path, *, own: bool = False) -> None:
        """Write atomically with mode 0600: a crash leaves the old file or the new one (and,
        killed mid-save, a private temporary file beside it that a later save removes:
        private_file.sweep_leftovers).

        own (the door): replace only the file this memory was read from or last saved to
        (on_disk), checked before the write and again just before the rename, else raise
        MemoryFileChanged, writing nothing: a file `edge-app site forget` deleted is never
        written back with what it held (`forget` deletes again after a save under way)."""

        def replaces(target: Path) -> None:
            if own and not self.on_disk(target):
                raise MemoryFileChanged(f"{target}: not the file the door read or last wrote")

        def write(out: IO[bytes]) -> tuple[int, int]:
            np.savez(
                out,
                version=np.int64(FORMAT_VERSION),
                total=self.total.astype(np.float64),
                weight=np.float64(self.weight),
                weight_sq=np.float64(self.weight_sq),
                learned=np.int64(self.learned),
                recent=_recent_array(self.recent),
            )
            info = os.fstat(out.fileno())  # the inode renamed into place
            return info.st_dev, info.st_ino

        self.file = write_private_bytes(path, write, replaces=replaces)

    @classmethod
    def load(cls, path: Path) -> SiteMemory:
        """The memory in `path`; an empty one when there is no file. UserError, naming what
        is wrong, for anything else than a memory this door wrote (nothing is changed): not
        a regular file (a symbolic link is not followed), a file others may have written
        (another user's, one its group or others may write, one in a folder others may
        change), a file of the wrong size, a damaged archive, arrays of the wrong type or
        shape, numbers that cannot be. The checks are made on the file opened (fstat), which
        is then read whole; nothing in it is unpickled. A file without `recent` (written
        before the guard's faces were kept) loads with an empty guard."""
        path = Path(path)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return cls()
        except OSError as error:
            raise UserError(f"{path}: cannot read the site memory ({error})") from None
        kind = _kind(path, info.st_mode)
        if kind is not None:
            raise UserError(
                f"{path}: it is {kind}, not a regular file, so not a site memory; remove "
                "it (the door keeps its memory in a file of its own, written with mode 600)"
            )
        try:
            data = _read_trusted(path, info)
        except OSError as error:
            raise UserError(f"{path}: cannot read the site memory ({error})") from None
        try:
            memory = cls._checked(path, _read_arrays(path, data))
        except UserError:
            raise
        except Exception as error:  # zipfile, zlib and numpy raise many types on a bad file
            detail = str(error) or type(error).__name__
            raise UserError(f"{path}: not a readable site memory ({detail})") from None
        memory.file = (info.st_dev, info.st_ino)  # _read_trusted: the file opened is this one
        return memory

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
        recent = arrays.get(_RECENT)
        if recent is None:  # written before the guard's faces were kept: an empty guard
            recent = np.zeros((0, EMBEDDING_DIM), np.float32)
        if (
            recent.ndim != 2
            or recent.shape[1:] != (EMBEDDING_DIM,)
            or recent.dtype.kind != "f"
            or len(recent) > min(VISITS, learned)
        ):
            raise problem(
                f"recent must be at most {VISITS} (and at most `learned`) rows of "
                f"{EMBEDDING_DIM} numbers"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            recent = recent.astype(np.float32)
            lengths = np.linalg.norm(recent.astype(np.float64), axis=1)
        if not np.isfinite(recent).all() or np.any(np.abs(lengths - 1.0) > _UNIT_SLACK):
            raise problem("recent must hold unit faces")
        return cls(total, weight, weight_sq, learned, deque(recent, VISITS))


def _recent_array(recent: deque[np.ndarray]) -> np.ndarray:
    """The guard's faces as saved: (K, EMBEDDING_DIM) float32, K <= VISITS (0 rows too)."""
    if not recent:
        return np.zeros((0, EMBEDDING_DIM), np.float32)
    return np.stack(list(recent)[-VISITS:]).astype(np.float32)


def _read_trusted(path: Path, seen: os.stat_result) -> bytes:
    """The bytes of the memory file at `path` (`seen`: its lstat, a regular file), opened
    without following a symbolic link and checked on the descriptor opened (fstat): the same
    file, of at most MAX_FILE_BYTES, that only this user or root may change
    (_refuse_untrusted). UserError for a file refused; OSError when it cannot be read."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != (
            seen.st_dev,
            seen.st_ino,
        ):
            raise OSError(errno.ESTALE, "it changed while it was opened; try again")
        _refuse_untrusted(path, info)
        if info.st_size > MAX_FILE_BYTES:
            raise UserError(
                f"{path}: {info.st_size} bytes is not a site memory (at most {MAX_FILE_BYTES})"
            )
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise UserError(f"{path}: more than {MAX_FILE_BYTES} bytes is not a site memory")
    return data


def _refuse_untrusted(path: Path, info: os.stat_result) -> None:
    """UserError when users other than this one and root could have written the memory file
    (`info`: its fstat): another user's file, a file its group or others may write, or one
    in a folder others may change (config.untrusted_problem: the rule for the config, and the
    gallery's). A file of this user that others may only read is used: `edge-app site show`
    and `edge-app doctor` warn about it (chmod 600)."""
    fix = (
        "; the door writes its memory as its own user with mode 600: remove the file "
        "(edge-app site forget), or if it is the door's own, chown it to the door's user and "
        "chmod 600 it"
    )
    why = untrusted_problem(path, info)
    mode = stat.S_IMODE(info.st_mode)
    if why is None and mode & 0o022:
        why = f"its group or others may write it (mode {mode:o})"
    if why is not None:
        why = why.replace("the config", "the memory")
        raise UserError(
            f"{path}: not a site memory to trust: {why}, and whoever may change it could "
            f"plant a face in it{fix}"
        )


def _read_arrays(path: Path, data: bytes) -> dict[str, np.ndarray]:
    """The arrays of the .npz read from `path` (`data`), refusing an archive that unpacks to
    more than MAX_FILE_BYTES (checked before anything is unpacked) or that holds other names
    (`recent` may be missing: a file written before the guard's faces were kept)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        if sum(info.file_size for info in archive.infolist()) > MAX_FILE_BYTES:
            raise UserError(f"{path}: its contents are too large for a site memory")
    with np.load(io.BytesIO(data), allow_pickle=False) as stored:
        if set(stored.files) not in (_KEYS, _KEYS | {_RECENT}):
            raise UserError(f"{path}: not a site memory (holds {', '.join(sorted(stored.files))})")
        return {key: np.asarray(stored[key]) for key in stored.files}


def set_aside(path: Path) -> Path | None:
    """Move a memory file the door refused out of the way, to REFUSED_NAME beside it, for a
    look (`edge-app site show`); the path set aside to, or None when nothing was moved:
    only a regular file is moved (a folder, pipe or symbolic link is left as it is; the
    door's saves then fail and say so), and a file set aside earlier is kept, never
    replaced (the refused one then stays: the door's first save replaces it). OSError when
    the move fails."""
    path = Path(path)
    aside = path.with_name(REFUSED_NAME)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    try:
        os.link(path, aside, follow_symlinks=False)  # never replaces what is at `aside`
    except FileExistsError:
        return None
    except OSError as error:
        # No hard link (another user's file under fs.protected_hardlinks, a filesystem
        # without them): a rename, which the check guards.
        if error.errno not in (errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        if os.path.lexists(aside):
            return None
        os.rename(path, aside)
        return aside
    os.unlink(path)
    return aside


def forget(path: Path) -> bool:
    """Delete the memory file, and the temporary files saves of it killed before their
    rename left beside it, whatever their age: they are copies of it, faces included. A save
    under way (its temporary file locked) may rename its file into place after the delete:
    it is waited for (at most SAVE_WAIT_SECONDS) and what it put there deleted too. True if
    there was a memory file."""
    sweep_leftovers(path, now=math.inf)
    deleted = _unlink(path)
    for temp in _saves_under_way(path):
        _wait_for_save(temp)
    if _unlink(path):  # a save renamed into place meanwhile (the door's checks before that)
        deleted = True
    return deleted


SAVE_WAIT_SECONDS = 10.0  # how long `forget` waits for a save under way to end


def _unlink(path: Path) -> bool:
    try:
        Path(path).unlink()
    except FileNotFoundError:
        return False
    except OSError as error:
        # A read-only file system says so (EROFS) before it says there is no such file.
        if error.errno == errno.EROFS and not os.path.lexists(path):
            return False
        raise
    return True


def _saves_under_way(path: Path) -> list[Path]:
    """The temporary files of saves of `path` beside it (what sweep_leftovers left: live)."""
    pattern = leftover_pattern(path)
    try:
        return [Path(e.path) for e in os.scandir(Path(path).parent) if pattern.fullmatch(e.name)]
    except OSError:
        return []


def _wait_for_save(temp: Path) -> None:
    """Until the save writing `temp` ends (it holds the lock until its rename); OSError when
    it does not end within SAVE_WAIT_SECONDS."""
    try:
        fd = os.open(temp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # renamed or removed already
    try:
        deadline = time.monotonic() + SAVE_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OSError(
                        errno.EBUSY,
                        f"a save of it ({temp.name}) did not end within {SAVE_WAIT_SECONDS:.0f} s",
                    ) from None
                time.sleep(0.01)
    finally:
        os.close(fd)
