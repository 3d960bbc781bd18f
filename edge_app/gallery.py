"""The gallery: who may open the door, as FaceNet embeddings in one SQLite file.

SQLite because the daemon reads while `edge-app enroll` writes: WAL mode lets one writer and
any number of readers work at once, each reader on a consistent snapshot, and every change is
one transaction, so a reader never sees half an enrolment. The file holds biometric templates,
so it is created 0600 and its permissions are repaired when found wider.

Schema changes go through MIGRATIONS and `PRAGMA user_version`: entry i takes the file from
version i to i + 1, so any older gallery opens under the newest code. The daemon's events live
in a database of their own (edge_app.events), so the gallery stays templates only.

A path given as the gallery may name anything (`--db config.toml`), so an existing file is
only used once it proved to be a gallery: a regular file, not empty, starting with SQLite's
magic string, with our application_id (or none, from before it was set), a schema version and
our tables. Anything else is refused and left byte-for-byte and mode-for-mode as it was. A new
gallery is built in a private temporary file beside it and hard-linked into place, so the
name never shows a half-made gallery and an existing file is never replaced.

Names: a name is stored as typed, after Unicode NFC normalisation, trimming and collapsing
inner whitespace (name_display); two names are the same person when their case-folded forms
(name_key) are equal, so "ricardo lagos" and "Ricardo  Lagos" cannot both be enrolled, and
every command finds a person whatever the case it is typed in. A name holding invisible
characters (format characters such as a zero-width space or a right-to-left override, Hangul
fillers) is refused, and a new name (an enrolment, a rename, an import adding a person) is
refused when it reads like an enrolled person's, by the same skeleton (name_skeleton: NFKC,
Latin lookalikes of Cyrillic and Greek letters, case-folded): "Аnn" with a Cyrillic А or a
full-width "Ａｎｎ" is not enrolled beside "Ann". Names already stored are not compared so.

Embeddings are unit vectors. A stored or imported vector further than UNIT_NORM_TOLERANCE from
length 1 is refused, and rows are brought back to unit length when loaded anyway, so that no
sample can outscore the cosine scale (one vector of norm 1000 would match most strangers).
"""

from __future__ import annotations

import base64
import binascii
import difflib
import errno
import functools
import hashlib
import json
import logging
import os
import re
import sqlite3
import stat
import sys
import tempfile
import unicodedata
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast
from urllib.parse import quote

import numpy as np

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

from edge_app import untrusted_json
from edge_app.advice import Advice, Advised
from edge_app.bounded_read import NotRegularFile, TooLarge, read_bounded
from edge_app.centering import EMBEDDING_DIM
from edge_app.errors import (
    SQLITE_BUSY,
    SQLITE_CANTOPEN,
    SQLITE_DISK_CODES,
    SQLITE_READONLY,
    UserError,
    first_few,
    is_damage,
    not_utf8,
    sqlite_code,
)
from edge_app.private_file import (
    link_new,
    make_private_folder,
    sweep_temporaries,
    temporary_pattern,
)
from edge_app.quality import (
    MIRROR_SAME_FACE,
    NEAR_DUPLICATE_COSINE,
    mirrors_differ,
    other_people_among,
)
from edge_app.sqlite_access import Kind, narrow_to_private, refuse_open_folder, refuse_unsafe
from edge_app.sqlite_files import (
    SIDE_FILES,
    connect_read_only,
    empty_wal,
    missing_columns,
    read_only_uri,
    zero_deletions,
)
from edge_app.storage import storage_problem

log = logging.getLogger(__name__)

EMBEDDING_BYTES = EMBEDDING_DIM * 4  # little-endian float32
# Rows summed (GalleryMatrix.person_sums) or read (_blobs_to_matrix) at once, in float64: 32 MB.
SUM_ROWS = 8192
BUSY_TIMEOUT_MS = 5000
MAX_NAME_LENGTH = 100
# Typed input longer than this is no one's name, refused (check_name) or found to be nobody
# (lookups, did_you_mean) before any Unicode normalisation: normalising takes time growing
# with the square of a run of combining marks (seconds for a form's 16 kB of U+0F73, with
# the interpreter lock held), and no stored name is longer than MAX_NAME_LENGTH characters.
MAX_TYPED_NAME = 10 * MAX_NAME_LENGTH
SQLITE_MAGIC = b"SQLite format 3\x00"
# PRAGMA application_id of every gallery from schema v3 on: "EDGE" in ASCII.
APPLICATION_ID = 0x45444745
# |L2 norm - 1| allowed for an embedding written or imported (FaceNet's float32 output is
# within 1e-6), and the deviation above which a loaded row is renormalised.
UNIT_NORM_TOLERANCE = 1e-3
RENORMALISE_ABOVE = 1e-5
# An export is read whole before anything is written: 128 MiB holds about 23,400 samples
# with their mirror embeddings and without face crops (some 5,720 bytes each: 4,700 people
# at 5 photos; measured, 4,400 such people export to 126 MB), or roughly 7,000 with crops.
MAX_IMPORT_BYTES = 128 * 1024 * 1024
# Photos (samples) one person may have. Each one more is one more chance for a stranger's face
# to come near the person (docs/GALLERY.md, "How many photos per person": 5 photos let in 2.3
# times the strangers 2 do); 50 is ten camera enrolments, far past what identifies anyone.
MAX_SAMPLES_PER_PERSON = 50
MAX_CROP_BYTES = 1024 * 1024
# Values one person's line of an export may hold: a sample is an object of about 8 fields
# (the embeddings and the crop are base64 strings, one value each), so 64 a sample for the
# most samples a person may have, and the person's own fields and a name's commas, leave room.
# Parsed JSON takes many times its text's size (a list per `[],`), so a line is counted first.
MAX_RECORD_VALUES = 64 * MAX_SAMPLES_PER_PERSON + 256
# Values the header line may hold: seven fields (Gallery.export), counted the same way; room
# for a few more from a later version, none for a bulk of them.
MAX_HEADER_VALUES = 64
MAX_MODEL_ID_LENGTH = 128
# Imported rows compared with the others in tiles of this many new rows by this many rows
# of everyone: the scores (32 MB of float32) and their mask stay bounded.
IMPORT_CHECK_ROWS = 1024
IMPORT_CHECK_COLUMNS = 8192
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

EXPORT_FORMAT = "edge-app-gallery"
# Version 2 adds a person's "access" (false: a known visitor). An export holding a known
# visitor is written as version 2, so an edge-app that predates it, and would import that
# visitor as someone who may open the door, refuses the file; any other is written as 1.
EXPORT_VERSION = 2
EXPORT_VERSIONS = (1, 2)

# Version 1 is the first schema ever shipped; keep it verbatim so old files migrate the same way.
SCHEMA_V1 = (
    """CREATE TABLE people (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_utc TEXT NOT NULL
    )""",
    f"""CREATE TABLE samples (
        id INTEGER PRIMARY KEY,
        person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
        embedding BLOB NOT NULL CHECK (length(embedding) = {EMBEDDING_BYTES}),
        image_sha256 TEXT NOT NULL,
        created_utc TEXT NOT NULL
    )""",
    "CREATE INDEX samples_by_person ON samples(person_id)",
)
# Version 2: the opt-in face crop (JPEG, only with --keep-crops), and which embedding model made
# each sample, so that swapping FaceNet weights is noticed instead of silently matching garbage.
SCHEMA_V2 = (
    "ALTER TABLE samples ADD COLUMN face_crop BLOB",
    "ALTER TABLE samples ADD COLUMN model TEXT",
)
# Version 3: the application_id that tells a gallery from any other SQLite file.
SCHEMA_V3 = (f"PRAGMA application_id = {APPLICATION_ID}",)
# Version 4: each photo's mirror-image embedding beside its own (enrolment stores both; a
# visitor is then matched against either, docs/ACCURACY.md); NULL for samples from before.
SCHEMA_V4 = (
    f"""ALTER TABLE samples ADD COLUMN mirror_embedding BLOB
        CHECK (mirror_embedding IS NULL OR length(mirror_embedding) = {EMBEDDING_BYTES})""",
)
# Version 5: whether a person may open the door. 0 is a known visitor: recognised and
# reported by name, never let in; their faces still show the door's site to the matcher
# (docs/GALLERY.md, "Known visitors"). Everyone enrolled before it keeps access.
SCHEMA_V5 = (
    "ALTER TABLE people ADD COLUMN access INTEGER NOT NULL DEFAULT 1 CHECK (access IN (0, 1))",
)
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    SCHEMA_V1,
    SCHEMA_V2,
    SCHEMA_V3,
    SCHEMA_V4,
    SCHEMA_V5,
)
# The last schema version that had no application_id.
LAST_VERSION_WITHOUT_ID = 2
OUR_TABLES = {"people", "samples"}
SCHEMA_VERSION = len(MIGRATIONS)


class GalleryError(UserError):
    """The gallery file cannot be used as asked (missing, not a gallery, name conflicts...)."""


class NoGallery(GalleryError):
    """There is no gallery file yet: nobody was ever enrolled there (or the path is wrong)."""


class GalleryDiskError(GalleryError):
    """The disk under the gallery is full or failing; `cause`: SQLite's or the system's
    words for it."""

    def __init__(self, message: str, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


class GalleryDamaged(GalleryError):
    """SQLite found the gallery file corrupt (a damaged page, a torn write): only a restore
    fixes it, and nothing is written to it meanwhile."""


def damaged(path: Path | str, error: object) -> GalleryDamaged:
    """The one-line refusal for a damaged gallery file."""
    return GalleryDamaged(
        f"gallery {path} is damaged ({error}): restore it from an export (edge-app import) "
        "or a backup"
    )


def _check_types(path: Path, table: str, row: Sequence[object], types: Sequence[Any]) -> None:
    """GalleryDamaged unless each value of `row` is of its type (a type or a tuple of them):
    SQLite keeps whatever a hand edit or another program put in a column, and the gallery
    writes none of that (a name as bytes once ended `list` and `export` in a traceback)."""
    for value, kind in zip(row, types, strict=True):
        if not isinstance(value, kind):
            raise damaged(path, f"a row of {table} holds a {type(value).__name__} value")


def _sqlite_failure(path: Path, error: sqlite3.Error, doing: str) -> GalleryError:
    """An SQLite error met while `doing` ("read", "write", "open") the gallery, as a user
    error that says what to do: restore a damaged file, free space on a full disk, wait for
    the command that holds the write lock."""
    if is_damage(error):
        return damaged(path, error)
    code = sqlite_code(error)
    if code in SQLITE_DISK_CODES:
        return _disk_failure(
            path, f"{doing} the gallery {path}", str(error), "the gallery itself is unchanged"
        )
    if code == SQLITE_BUSY:
        return GalleryError(
            f"cannot {doing} the gallery {path}: another command is changing it (an enrolment, "
            "an import, or the tidying up after a removal); try again once it has finished"
        )
    return GalleryError(f"cannot {doing} the gallery {path}: {error}")


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _reads(
    method: Callable[Concatenate[Gallery, _P], _T],
) -> Callable[Concatenate[Gallery, _P], _T]:
    """A Gallery method whose SQLite errors (a damaged page, a disk error) become
    GalleryError naming the file, rather than a traceback."""

    @functools.wraps(method)
    def guarded(self: Gallery, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.ProgrammingError:
            raise  # our own misuse (a closed gallery): a bug, not the file's fault
        except sqlite3.DatabaseError as error:
            raise _sqlite_failure(self.path, error, "read") from None

    return guarded


def describe_access(allowed: bool) -> str:
    """How the commands and the web page say what a person's access is."""
    return "may open the door" if allowed else "is a known visitor: recognised, never let in"


def utc_now() -> str:
    return datetime.now(UTC).strftime(UTC_FORMAT)


def name_display(name: str) -> str:
    """The form a name is stored and shown in: NFC, trimmed, inner whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFC", name).split())


def name_key(name: str) -> str:
    """What makes two names the same person: the display form, case-folded (canonical
    caseless matching: NFD, casefold, NFC), so "José" matches "JOSE\u0301"."""
    folded = unicodedata.normalize("NFD", name_display(name)).casefold()
    return unicodedata.normalize("NFC", folded)


# Letters of other scripts that look like Latin ones, as their Latin letter: a subset of
# Unicode TR39's confusables.txt (https://www.unicode.org/Public/security/latest/
# confusables.txt), the Cyrillic and Greek letters that are drawn the same as a Latin letter
# in common fonts. Capitals map before case folding: lower-case Greek η, β, κ do not look
# like h, b, k, their capitals do. Kept short on purpose: a name mixing these with Latin
# letters is what lets someone pass as another person.
_LATIN_LOOKALIKES = str.maketrans(
    {
        # Cyrillic
        "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i",
        "ј": "j", "ѕ": "s", "ԁ": "d", "һ": "h", "ԛ": "q", "ԝ": "w",
        "А": "a", "В": "b", "Е": "e", "К": "k", "М": "m", "Н": "h", "О": "o", "Р": "p",
        "С": "c", "Т": "t", "Х": "x", "У": "y", "І": "i", "Ј": "j", "Ѕ": "s",
        # Greek
        "Α": "a", "Β": "b", "Ε": "e", "Ζ": "z", "Η": "h", "Ι": "i", "Κ": "k", "Μ": "m",
        "Ν": "n", "Ο": "o", "Ρ": "p", "Τ": "t", "Υ": "y", "Χ": "x",
        "α": "a", "ι": "i", "ο": "o", "ν": "v", "ρ": "p",
        # Latin letters drawn as others
        "ɡ": "g", "ı": "i",
    }
)  # fmt: skip

# Invisible characters that are not format characters (category Cf, refused as a class):
# the combining grapheme joiner and the Hangul fillers, which show as nothing.
_INVISIBLE = frozenset("\u034f\u115f\u1160\u3164\uffa0")


def name_skeleton(name: str) -> str:
    """How a name reads: two names with the same skeleton look alike on a screen (Unicode
    TR39's skeleton, with a short table). The display form in NFKC (full-width and other
    compatibility forms as their plain letters), decomposed, with the Cyrillic and Greek
    letters that look Latin as Latin ones (_LATIN_LOOKALIKES), case-folded."""
    compatible = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", name_display(name)))
    folded = compatible.translate(_LATIN_LOOKALIKES).casefold()
    return " ".join(unicodedata.normalize("NFKC", folded).split())


def reads_like(name: str, enrolled: Iterable[str]) -> str | None:
    """The first of `enrolled` that looks like `name` (the same skeleton) but is another
    person (another name_key), or None."""
    key, skeleton = name_key(name), name_skeleton(name)
    for other in enrolled:
        if name_key(other) != key and name_skeleton(other) == skeleton:
            return other
    return None


def looks_like_enrolled(name: str, other: str, advice: str | Advised) -> str | Advised:
    """The refusal of a new name that reads like an enrolled person's."""
    problem = (
        f"{name!r} looks like {other!r}, who is already enrolled: the names differ only in "
        "characters that look alike (letters of another alphabet, full-width or other "
        "compatibility forms); "
    )
    return problem + advice if isinstance(advice, str) else advice.after(problem)


def new_name_advice(twin: str) -> Advised:
    """What to do about a new person's name that looks like `twin`'s (looks_like_enrolled)."""
    return Advised(
        f"choose a name that reads differently, or if this is {twin!r}, ", Advice.ADD_PHOTOS
    )


def already_enrolled(name: str, stored: str | None = None) -> Advised:
    """Enrolling a name someone has (`stored`: their name as stored, when it differs)."""
    same = "" if stored is None or stored == name else f" (as {stored!r})"
    return Advised(f"{name!r} is already enrolled{same}; ", Advice.ADD_PHOTOS)


def did_you_mean(name: str, enrolled: Iterable[str]) -> str:
    """ " (did you mean 'X'?)" naming the enrolled name nearest to a typed one that is not
    enrolled, or "" when none is close (a typo, not another person). A name that looks like
    the typed one (name_skeleton) is nearest."""
    if len(name) > MAX_TYPED_NAME:
        return ""
    enrolled = list(enrolled)
    twin = reads_like(name, enrolled)
    if twin is not None:
        return f" (did you mean {twin!r}?)"
    by_key = {name_key(other): other for other in enrolled}
    close = difflib.get_close_matches(name_key(name), list(by_key), n=1, cutoff=0.75)
    return f" (did you mean {by_key[close[0]]!r}?)" if close else ""


def nobody_named(name: str, enrolled: Iterable[str] = ()) -> Advised:
    """Adding photos to a name nobody has: a typo must not enrol a new person."""
    return Advised(
        f"nobody named {name!r} is enrolled{did_you_mean(name, enrolled)}; ", Advice.ENROL_NEW
    )


def check_name(name: object) -> str:
    """A person's name as stored: normalised (name_display), printable, bounded (it ends up in
    logs and JSON)."""
    if not isinstance(name, str):
        raise GalleryError(f"the name must be a string, not {type(name).__name__}")
    if len(name) > MAX_TYPED_NAME:
        raise GalleryError(f"the name is longer than {MAX_NAME_LENGTH} characters")
    cleaned = name_display(name)
    if not cleaned:
        raise GalleryError("the name is empty")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise GalleryError(f"the name is longer than {MAX_NAME_LENGTH} characters")
    if not_utf8(cleaned):
        # A command line's bytes that are not UTF-8 reach Python as lone surrogates.
        raise GalleryError(f"the name {cleaned!r} is not valid UTF-8 text")
    invisible = [c for c in cleaned if unicodedata.category(c) == "Cf" or c in _INVISIBLE]
    if invisible:
        # Zero-width spaces and joiners, soft hyphens, bidi controls: two names that differ
        # only by them show the same, and a right-to-left override shows letters reordered.
        shown = ", ".join(f"U+{ord(c):04X}" for c in dict.fromkeys(invisible))
        raise GalleryError(
            f"the name {cleaned!r} contains invisible characters ({shown}); "
            "type it again without them"
        )
    if not cleaned.isprintable():
        raise GalleryError(f"the name {cleaned!r} contains control characters")
    if not any(unicodedata.category(c)[0] in "LN" for c in cleaned):
        raise GalleryError(
            f"the name {cleaned!r} has no letter or digit: it would show as blank or as symbols"
        )
    return cleaned


@dataclass(frozen=True)
class NewSample:
    """One embedding about to be stored, with where it came from.

    embedding: (512,) float32, L2-normalised. face_crop: JPEG bytes, only when the user opted in.
    model: the embedding model's identity (its file sha256 from the models manifest).
    mirror: the same face's embedding from the mirror image of the photo, or None. It is part
    of the same sample (one photo): matched against, never counted as another photo.
    """

    embedding: np.ndarray
    image_sha256: str
    face_crop: bytes | None = None
    model: str | None = None
    created_utc: str | None = None
    mirror: np.ndarray | None = None


def person_runs(counts: np.ndarray, size: int, width: int | None = None) -> list[tuple[int, int]]:
    """People (each with `counts` rows, or `width` each) split into runs [first, last) of
    about `size` rows: whole people, at least one person a run. How large galleries are
    worked through a bounded block at a time."""
    ends = np.cumsum(np.full(len(counts), width) if width is not None else counts)
    runs, first = [], 0
    while first < len(counts):
        done = int(ends[first - 1]) if first else 0
        last = max(first + 1, int(np.searchsorted(ends, done + size, "right")))
        runs.append((first, last))
        first = last
    return runs


@dataclass(frozen=True)
class PersonInfo:
    name: str
    samples: int
    crops: int
    created_utc: str
    last_sample_utc: str | None
    access: bool = True  # False: a known visitor, never let in


@dataclass(frozen=True)
class GalleryMatrix:
    """Every sample as one matrix, rows grouped by person, for matching in one product.

    embeddings: (M, 512) float32; person: (M,) int32 index into names, non-decreasing, so each
    person's rows are contiguous and start at `starts[p]`. Only people with samples appear.
    no_access: the names of known visitors, matched like everyone but never let in.
    """

    embeddings: np.ndarray
    person: np.ndarray
    names: tuple[str, ...]
    no_access: frozenset[str] = frozenset()

    @property
    def starts(self) -> np.ndarray:
        return np.searchsorted(self.person, np.arange(len(self.names))).astype(np.intp)

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.person, minlength=len(self.names))

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def person_sums(self) -> np.ndarray:
        """(P, 512) float64: the sum of each person's rows, SUM_ROWS rows at a time, so no
        float64 copy of the whole gallery is made (400 MB at 5,000 people x 10 rows)."""
        starts, counts = self.starts, self.counts
        sums = np.empty((len(starts), self.embeddings.shape[1]), np.float64)
        for first, last in person_runs(counts, SUM_ROWS):
            low, high = int(starts[first]), int(starts[last - 1] + counts[last - 1])
            rows = self.embeddings[low:high].astype(np.float64)
            sums[first:last] = np.add.reduceat(rows, starts[first:last] - low, axis=0)
        return sums

    def same_people_in(self, later: GalleryMatrix, *, whole: bool = False) -> dict[str, str]:
        """{name here: name in `later`} for each person of this matrix whom `later` still
        holds, under the name they have there (their own, or another after a rename).

        A person is told by their templates, never by their name: they are the one person of
        `later` with whom they share a template (the same embedding, byte for byte), when
        none of their templates is held by another person there and no other person here
        leads to the same one. A rename keeps every template and a photo added or removed
        keeps the others, so each is the same person; two names swapped, or a name given to
        someone else, are followed by the templates. A person removed, enrolled again from
        new photos, or not told apart from another (the same template twice, which only an
        import can make) is not held: the door judges what it saw of them afresh.

        whole: follow only people whose templates `later` holds every one of (photos added
        are fine, one removed is not): what a match made against this matrix may be taken
        for, since it may have been made through the template removed (a stranger's photo
        enrolled by mistake)."""
        if not self.names or not later.names:
            return {}
        owner = self._owners_in(later)
        # Each person here: the one person of `later` their templates lead to, else -1.
        people = len(self.names)
        doubt = owner == -2 if not whole else owner < 0
        shared = np.bincount(self.person[doubt], minlength=people) > 0
        held = owner >= 0
        first = np.full(people, len(later.names), np.int64)
        last = np.full(people, -1, np.int64)
        np.minimum.at(first, self.person[held], owner[held])
        np.maximum.at(last, self.person[held], owner[held])
        lead = np.where(~shared & (last >= 0) & (first == last), last, -1)
        led = np.bincount(lead[lead >= 0], minlength=len(later.names))
        return {
            self.names[person]: later.names[target]
            for person, target in enumerate(lead.tolist())
            if target >= 0 and led[target] == 1
        }

    def touched_in(self, later: GalleryMatrix) -> frozenset[str]:
        """The names here any of whose templates someone in `later` holds (themselves, or
        another person a photo went to): people a change touched but did not remove."""
        if not self.names or not later.names:
            return frozenset()
        kept = np.unique(self.person[self._owners_in(later) != -1])
        return frozenset(self.names[person] for person in kept.tolist())

    def _owners_in(self, later: GalleryMatrix) -> np.ndarray:
        """(M,) for each row here, the person of `later` that holds the same template: -1
        when none does, -2 when several do. Kept for the last `later` asked about (the
        door asks up to three questions of each pair of matrices); not a field."""
        cached = self.__dict__.get("_owners")
        if cached is not None and cached[0]() is later:
            return cast(np.ndarray, cached[1])
        keys = np.concatenate([self._row_keys, later._row_keys])
        template = np.unique(keys, return_inverse=True)[1].reshape(-1)
        here, there = template[: len(self)], template[len(self) :]
        low = np.full(int(template.max()) + 1, len(later.names), np.int64)
        high = np.full(low.shape, -1, np.int64)
        np.minimum.at(low, there, later.person)
        np.maximum.at(high, there, later.person)
        owner = np.where(high < 0, -1, np.where(low == high, low, -2))[here]
        self.__dict__["_owners"] = (weakref.ref(later), owner)  # frozen: around its fields
        return owner

    @functools.cached_property
    def _row_keys(self) -> np.ndarray:
        """(M,) each row's bytes as a 128-bit BLAKE2b digest, worked out once per matrix:
        what same_people_in sorts and compares (16 bytes a row, not the 2 KB rows: at 5,000
        people the rows of two matrices are 200 MB, copied twice by a sort of their own)."""
        rows = np.ascontiguousarray(self.embeddings)
        width = rows.itemsize * (rows.shape[1] if rows.ndim == 2 else 0)
        data = rows.data.cast("B")
        digests = b"".join(
            hashlib.blake2b(data[start : start + width], digest_size=16).digest()
            for start in range(0, len(rows) * width, width or 1)
        )
        return np.frombuffer(digests, dtype="V16")

    def only_renamed_in(self, later: GalleryMatrix) -> bool:
        """Whether `later` holds the same people, in the same order, with the same templates
        and access, and differs only in names (renames)."""
        if len(self.names) != len(later.names) or self.names == later.names:
            return False
        if not (
            np.array_equal(self.person, later.person)
            and np.array_equal(self.embeddings, later.embeddings)
        ):
            return False
        renamed = dict(zip(self.names, later.names, strict=True))
        return {renamed[name] for name in self.no_access} == set(later.no_access)

    def with_centroids(self) -> GalleryMatrix:
        """This matrix with one more row per person, last in their block: the unit mean of
        all their rows (photos and mirrors), a template closer to a new photo of them than
        the typical single photo is (docs/ACCURACY.md, "Person centroid")."""
        if not self.names:
            return self
        sums = self.person_sums()
        centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        # Written in place, one new matrix: every row moves down by the centroids of the
        # people before it, and each centroid follows its person's last row.
        people = np.arange(len(self.names))
        at = self.starts + self.counts + people  # where each centroid goes
        moved = np.arange(len(self)) + self.person  # where each row goes
        rows = np.empty((len(self) + len(people), self.embeddings.shape[1]), self.embeddings.dtype)
        rows[moved], rows[at] = self.embeddings, centroids
        person = np.empty(len(rows), self.person.dtype)
        person[moved], person[at] = self.person, people
        return GalleryMatrix(rows, person, self.names, self.no_access)


@dataclass(frozen=True)
class ExportedPerson:
    """One person read back from an export file (see read_export)."""

    name: str
    created_utc: str
    samples: list[NewSample]
    access: bool = True


@dataclass
class ImportSummary:
    added_people: list[str] = field(default_factory=list)
    replaced_people: list[str] = field(default_factory=list)
    merged_people: list[str] = field(default_factory=list)
    # Merged people whose access this import turned off: the file lists them without it.
    access_removed: list[str] = field(default_factory=list)
    samples_added: int = 0
    samples_skipped: int = 0


def _not_a_gallery(path: Path, why: str) -> GalleryError:
    return GalleryError(Advised(f"{path} {why}; ", Advice.NOT_A_GALLERY))


def _cannot_create(path: Path, why: str = "") -> GalleryError:
    """The gallery could not be made at `path` (`why`, when known)."""
    cause = f": {why}" if why else ""
    return GalleryError(
        Advised(f"cannot create the gallery {path}{cause}; ", Advice.CREATE_WHERE_WRITABLE)
    )


def _check_file(path: Path) -> bool:
    """False when nothing is at `path`; True when an SQLite file is; otherwise refuse.

    Reads at most the 100-byte header, through a non-blocking open of a file already known
    to be regular, so a FIFO or a device named as the gallery is neither waited on nor read.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return False
    except OSError as error:
        raise GalleryError(f"cannot open the gallery {path}: {error.strerror or error}") from None
    if not stat.S_ISREG(info.st_mode):
        raise _not_a_gallery(path, "is not a regular file (a folder, device, pipe or socket)")
    refuse_unsafe(path, info, GALLERY_FILE)
    if info.st_size == 0:
        raise _not_a_gallery(path, "is empty, not an edge-app gallery")
    if _open_here(info):
        # SQLite has it open in this process, so it was checked then; and closing a
        # descriptor of our own would drop every POSIX lock the process holds on the file,
        # SQLite's included: another process would then take itself for the only one and
        # remove the write-ahead log these connections still write to.
        return True
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            head = os.read(fd, 100)
        finally:
            os.close(fd)
    except OSError as error:
        raise GalleryError(f"cannot read the gallery {path}: {error.strerror or error}") from None
    if not head.startswith(SQLITE_MAGIC):
        raise _not_a_gallery(path, "is not an SQLite database, so not an edge-app gallery")
    return True


def refuse_untrusted(path: Path) -> None:
    """Refuse (GalleryError) what Gallery.open refuses before SQLite reads the gallery at
    `path` (_check_file) or, when nothing is there yet, before it creates one (a folder open
    to others, as _create_file): for `run --check-config`, which opens nothing."""
    if not _check_file(path):
        refuse_open_folder(path, GALLERY_FILE)


def _open_here(info: os.stat_result) -> bool:
    """Whether this process has the file `info` describes open (a descriptor in
    /proc/self/fd); False where that cannot be listed."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return False
    for name in names:
        try:
            held = os.stat(f"/proc/self/fd/{name}")
        except OSError:
            continue  # closed meanwhile, or the listing's own descriptor
        if (held.st_dev, held.st_ino) == (info.st_dev, info.st_ino):
            return True
    return False


@contextmanager
def removed_if_left_empty(path: Path | str) -> Iterator[None]:
    """Around a command that may create the gallery (the first enrolment, an import): when
    it fails, a gallery it created that still holds nobody is removed, with its -wal and
    -shm files, so a refused first enrolment or import leaves no file behind. A gallery
    that existed before, or that someone enrolled into meanwhile, is left as it is."""
    path = Path(path)
    existed = os.path.lexists(path)
    try:
        yield
    except BaseException:
        if not existed:
            _remove_if_empty(path)
        raise


def _remove_if_empty(path: Path) -> None:
    """Remove the gallery at `path` if it holds nobody and no other connection has it open.

    Counted and removed under an exclusive lock, which SQLite refuses at once (busy) while
    any other connection has read the gallery: another command that opened it meanwhile to
    enrol or import into it (and waits for the write lock this command held) keeps it, and
    its people are not committed into a file removed under it. Its write-ahead log is
    checkpointed and removed by SQLite itself (journal_mode=DELETE) before the file goes, so
    that nothing removes a -wal file by name that a gallery made there since may own."""
    try:
        if not _check_file(path) or _open_here(os.stat(path)):
            return  # open in this process too: a second descriptor's close drops its locks
        uri = f"file:{quote(os.fsencode(path))}?mode=rw"
        with closing(sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None)) as db:
            db.execute("PRAGMA locking_mode=EXCLUSIVE")  # held until closed
            db.execute("BEGIN EXCLUSIVE")
            if db.execute("SELECT count(*) FROM people").fetchone()[0]:
                return
            db.execute("COMMIT")
            db.execute("PRAGMA journal_mode=DELETE")
            for leftover in (path, *(Path(f"{path}{suffix}") for suffix in SIDE_FILES)):
                leftover.unlink(missing_ok=True)
    except (GalleryError, sqlite3.Error, OSError):
        return  # not ours to judge, or in use: leave it
    log.info("gallery=%s removed: created for a change that did not happen", path)


# The gallery for the rules every SQLite file the door trusts is held to (sqlite_access):
# whoever can write it, or replace it in its folder, can enrol themselves and be let in.
# The owner's own file is narrowed to 0600 when opened (narrow_to_private).
GALLERY_FILE = Kind(
    name="the gallery",
    harm="enrol anyone",
    elsewhere="use a gallery of this user's own",
    holds="who is enrolled, and their faces",
    error=GalleryError,
)


def _create_file(path: Path) -> None:
    """A new, empty, current gallery at `path`, mode 0600, appearing there complete.

    Built under a private temporary name in the same folder, then hard-linked to `path`:
    linking never replaces a file, so if another process created the gallery meanwhile,
    theirs stays and is opened instead.
    """
    try:
        make_private_folder(path.parent)
        # Before anything is made there: a refusal leaves nothing.
        refuse_open_folder(path, GALLERY_FILE)
        sweep_temporaries(path.parent, _creation_leftovers(path), f"the gallery {path}")
        fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)
        os.close(fd)
    except OSError as error:
        if _disk_full(error):
            raise _disk_full_at_creation(path, str(error.strerror or error)) from None
        raise _cannot_create(path, str(error.strerror or error)) from None
    temp = Path(temp_name)
    try:
        connection = sqlite3.connect(temp, isolation_level=None)
        try:
            gallery = Gallery(path, connection)
            gallery._configure()
            gallery._migrate()
            # Copy the WAL into the file now: close() does it too, but says nothing when it
            # fails (a disk that fills), and would leave the schema in a -wal file deleted
            # below, the file linked without it: a "damaged" gallery for good.
            busy = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        finally:
            connection.close()
        if busy or not _created_whole(temp):
            raise _disk_full_at_creation(path, "the new file could not be written whole")
        with suppress(FileExistsError):  # made meanwhile: theirs is opened
            link_new(temp, path)
    except GalleryDiskError as error:  # from the new file's schema, said as of a gallery
        raise _disk_full_at_creation(path, error.cause) from None
    except (OSError, sqlite3.Error) as error:
        message = error.strerror if isinstance(error, OSError) else error
        if _disk_full(error):
            raise _disk_full_at_creation(path, str(message or error)) from None
        raise _cannot_create(path, str(message or error)) from None
    finally:
        for leftover in (temp, *(Path(f"{temp}{suffix}") for suffix in SIDE_FILES)):
            leftover.unlink(missing_ok=True)


def _disk_failure(path: Path, doing: str, cause: str, outcome: str) -> GalleryDiskError:
    """The one way a gallery command says the disk under `path` is full or failing."""
    return GalleryDiskError(
        f"cannot {doing} ({cause}): the disk is full or failing; free space on it (df -h "
        f"{path.parent}) and try again: {outcome}",
        cause,
    )


def _disk_full_at_creation(path: Path, why: str) -> GalleryError:
    return _disk_failure(path, f"create the gallery {path}", why, "nothing was created")


def _disk_full(error: OSError | sqlite3.Error) -> bool:
    """Whether `error` says the disk is full or failing."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO)
    return sqlite_code(error) in SQLITE_DISK_CODES


def _created_whole(temp: Path) -> bool:
    """Whether the new gallery at `temp` holds, in its own file, the current schema: its
    -wal file is empty or gone, and read alone (immutable) it passes SQLite's check."""
    wal = Path(f"{temp}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        return False
    try:
        with closing(connect_read_only(temp)) as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            check = db.execute("PRAGMA quick_check(1)").fetchone()[0]
    except sqlite3.DatabaseError:
        return False
    return bool(version == SCHEMA_VERSION and check == "ok")


def _creation_leftovers(path: Path) -> re.Pattern[str]:
    """The files a creation of the gallery `path` killed before its link leaves: its
    temporary gallery and SQLite's files beside it."""
    sides = "|".join(re.escape(suffix) for suffix in SIDE_FILES)
    return temporary_pattern(re.escape(path.name), rf"\.new(?:{sides})?")


# SQLite's result codes for a file it may read but not write beside: SQLITE_CANTOPEN (no -shm
# file could be made) and SQLITE_READONLY.
READ_ONLY_CODES = frozenset({SQLITE_CANTOPEN, SQLITE_READONLY})


def _cannot_write(error: sqlite3.DatabaseError) -> bool:
    """Whether SQLite failed for want of write access beside the gallery, not for the file's
    content."""
    return sqlite_code(error) in READ_ONLY_CODES


def _encode(embedding: np.ndarray) -> bytes:
    """The stored form of an embedding, refusing anything but a 512-d unit vector."""
    vector = np.asarray(embedding, dtype="<f4").reshape(-1)
    if vector.shape[0] != EMBEDDING_DIM or not np.all(np.isfinite(vector)):
        raise GalleryError(f"an embedding must be {EMBEDDING_DIM} finite numbers")
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if abs(norm - 1.0) > UNIT_NORM_TOLERANCE:
        raise GalleryError(
            f"an embedding is not unit length (L2 norm {norm:.6g}; it must be within "
            f"{UNIT_NORM_TOLERANCE} of 1)"
        )
    return vector.tobytes()


class Gallery:
    """One open connection to a gallery file. Not shared between threads."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        # Opened immutable (_open_read_only, no -wal): SQLite then never looks for changes,
        # so data_version() watches the files instead (their stamp when opened) and opens
        # the gallery again when they change; _generation keeps its versions new.
        self._immutable_stamp: tuple[int, ...] | None = None
        self._generation = 0

    @classmethod
    def open(cls, path: Path | str, *, create: bool = False, read_only: bool = False) -> Gallery:
        """Open (and migrate) a gallery; with create=True a missing file becomes an empty one.

        read_only: the caller only reads (`list`, `export`, `identify`). A gallery SQLite
        cannot open for writing there (a read-only folder or filesystem, where it cannot make
        the -shm file a WAL database needs) is then opened read-only (_open_read_only).
        """
        path = Path(path)
        created = False
        if not _check_file(path):
            if not create:
                raise NoGallery(
                    f"no gallery at {path}: enrol someone first with `edge-app enroll`, "
                    "or give the gallery's path ([gallery] path in the config; --db PATH where the "
                    "command takes it)"
                )
            _create_file(path)
            created = True
            if not _check_file(path):  # e.g. `path` is a dangling symbolic link
                why = ""
                with suppress(OSError):  # not a link (EINVAL), or gone meanwhile
                    why = f"it is a symbolic link to {os.readlink(path)}, which does not exist"
                raise _cannot_create(path, why)
        if read_only and storage_problem(path.parent) is not None:
            # Opening for writing would make the -wal and -shm files on a disk that cannot
            # take them (or with the last free bytes): read without writing anything.
            return cls._open_read_only(path)
        try:
            connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as error:
            raise GalleryError(f"cannot open the gallery {path}: {error}") from None
        gallery = cls(path, connection)
        try:
            gallery._check_ours()
            narrow_to_private(path, GALLERY_FILE, log)
            gallery._refuse_newer(gallery.schema_version)  # before _configure writes to it
            gallery._configure()
            gallery._migrate()
        except sqlite3.DatabaseError as error:
            connection.close()
            if is_damage(error):
                raise damaged(path, error) from None
            if _cannot_write(error):
                if read_only:
                    return cls._open_read_only(path)
                problem = storage_problem(path.parent)
                if problem is not None:
                    raise GalleryError(
                        f"cannot write the gallery {path} ({error}), and this command changes "
                        f"it: {problem}; the gallery itself is unchanged"
                    ) from None
                raise GalleryError(
                    Advised(f"cannot write the gallery {path} ({error}), ", Advice.WRITE_AS_OWNER)
                ) from None
            code = sqlite_code(error)
            if code in SQLITE_DISK_CODES and read_only:
                # Opening writes the -shm and -wal files: on a full disk, `list` and
                # `export` (the way to a backup) still read the gallery read-only.
                return cls._open_read_only(path)
            if code in SQLITE_DISK_CODES and created:
                raise _disk_full_at_creation(path, str(error)) from None
            if code in SQLITE_DISK_CODES or code == SQLITE_BUSY:
                raise _sqlite_failure(path, error, "open") from None
            raise GalleryError(f"{path} is not a usable gallery: {error}") from None
        except GalleryDiskError as error:
            connection.close()
            if created:
                # Made whole a moment ago, then not opened: the caller removes it
                # (removed_if_left_empty), so "the gallery itself is unchanged" would mislead.
                raise _disk_full_at_creation(path, error.cause) from None
            raise
        except BaseException:
            connection.close()
            raise
        return gallery

    @classmethod
    def _open_read_only(cls, path: Path) -> Gallery:
        """A gallery where nothing may be written, opened read-only (SQLite's mode=ro).

        With changes in a -wal file beside it, a door (or a writer that stopped) has it open
        in WAL mode: it is read through the WAL as usual, which needs the -shm file to exist.
        With none, it is read as immutable: SQLite then needs no -shm file, which it could not
        create here.
        """
        # Stamped before it is looked at: a change committed while it opens (into the -wal
        # an immutable read does not see) then differs from the stamp and reopens it.
        stamp = _stamp(path)
        uri, wal = read_only_uri(path)
        try:
            connection = sqlite3.connect(uri, uri=True, isolation_level=None)
        except sqlite3.Error as error:
            raise GalleryError(f"cannot open the gallery {path}: {error}") from None
        gallery = cls(path, connection)
        try:
            gallery._check_ours()
            version = gallery.schema_version
            gallery._refuse_newer(version)
            if version != SCHEMA_VERSION:
                raise GalleryError(
                    f"{path} has schema version {version} and its folder cannot be written, so "
                    f"it cannot be brought to version {SCHEMA_VERSION}: open it once where it "
                    "can be written (as its owner, or where the door keeps it)"
                )
            connection.create_function("name_key", 1, name_key, deterministic=True)
        except sqlite3.DatabaseError as error:
            connection.close()
            if is_damage(error):
                raise damaged(path, error) from None
            if wal and _cannot_write(error):
                raise GalleryError(
                    Advised(
                        f"cannot read the gallery {path}: its folder cannot be written and its "
                        "-wal file holds changes SQLite can only read with a -shm file beside "
                        "it; ",
                        Advice.READ_AS_OWNER,
                    )
                ) from None
            raise GalleryError(f"{path} is not a usable gallery: {error}") from None
        except BaseException:
            connection.close()
            raise
        if not wal:
            gallery._immutable_stamp = stamp
        log.debug("gallery=%s opened read-only wal=%s", path, wal)
        return gallery

    def _check_ours(self) -> None:
        """Refuse an SQLite file that is not a gallery, before anything is written to it."""
        db = self._db
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        application_id = int(db.execute("PRAGMA application_id").fetchone()[0])
        version = self.schema_version
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if application_id not in (0, APPLICATION_ID):
            why = (
                f"is an SQLite database of another application (application_id "
                f"{application_id}), not an edge-app gallery"
            )
        elif version == 0:
            why = "is an SQLite database without a schema version: not an edge-app gallery"
        elif application_id == 0 and version > LAST_VERSION_WITHOUT_ID:
            why = f"is an SQLite database (schema version {version}) but not an edge-app gallery"
        elif not tables >= OUR_TABLES:
            why = "is an SQLite database without our tables: not an edge-app gallery"
        elif missing := missing_columns(db, MIGRATIONS, version):
            # Tables of ours by name only: migrated, another program's file was changed.
            why = (
                f"is an SQLite database whose tables lack {', '.join(missing[:5])}: not an "
                "edge-app gallery"
            )
        elif extras := db.execute(
            "SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'view')"
        ).fetchall():
            # edge-app makes neither: a trigger runs on every change (a removal that removes
            # nobody, an enrolment that adds someone else's face), a view reads as a table.
            listed = ", ".join(f"{kind} {name!r}" for kind, name in extras[:5])
            why = f"holds what edge-app never makes ({listed}): not a gallery to trust"
        else:
            return
        raise _not_a_gallery(self.path, why)

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise GalleryError(
                f"{self.path} has schema version {version}, newer than this edge-app "
                f"({SCHEMA_VERSION}): upgrade edge-app"
            )

    def _configure(self) -> None:
        self._db.create_function("name_key", 1, name_key, deterministic=True)
        self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise GalleryError(f"{self.path}: SQLite refused WAL mode (got {mode})")
        # Enrolments are rare and precious: FULL survives a power cut mid-commit.
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("PRAGMA foreign_keys = ON")
        zero_deletions(self._db)

    def _migrate(self) -> None:
        version = self.schema_version
        self._refuse_newer(version)
        if version == SCHEMA_VERSION:
            return
        with self.transaction():
            # Another process may have migrated between our read and the write lock.
            version = self.schema_version
            for target, statements in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {target}")
        if version:
            log.info("gallery=%s migrated schema=%d->%d", self.path, version, SCHEMA_VERSION)
        else:
            log.info("gallery=%s created schema=%d", self.path, SCHEMA_VERSION)

    @property
    @_reads
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def newer_schema(self) -> int | None:
        """The schema version of this gallery if a newer edge-app migrated it past this
        one's (what _refuse_newer refuses) since it was opened, else None. A running door
        reads the gallery again on every change (edge_app/daemon.py): rows of a schema it
        does not know may carry rules it would not apply (a new access rule), so it must
        not use them."""
        version = self.schema_version
        try:
            self._refuse_newer(version)
        except GalleryError:
            return version
        return None

    @_reads
    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap "reload the gallery?" check.

        A gallery opened immutable (a read-only or full filesystem when it was opened) is
        opened again once its files change (space freed and someone enrolled or removed):
        otherwise the door would keep the people it read at start, a removed one included.
        """
        if self._immutable_stamp is not None and _stamp(self.path) != self._immutable_stamp:
            fresh = Gallery.open(self.path, read_only=True)
            self._db.close()
            self._db, fresh._db = fresh._db, self._db
            self._immutable_stamp = fresh._immutable_stamp
            self._generation += 1
            log.info("gallery=%s changed on disk: opened again", self.path)
        version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
        return (self._generation << 40) + version

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: the write lock is taken up front, everything or nothing lands.

        SQLite's operational failures here (read-only file, disk full, the lock still held by
        another writer after the busy timeout) are the user's to fix, so they become
        GalleryError rather than a traceback.
        """
        try:
            self._db.execute("BEGIN IMMEDIATE")
            wal_before = self._wal_stamp()
            try:
                self._refuse_damage()
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                    # A large change (an import) spills its pages into the -wal file before
                    # it commits; rolled back, they stay there, readable, while the door
                    # keeps the gallery open: the faces of a refused or interrupted import.
                    # Written to at all, not only grown: a -wal that was checkpointed whole
                    # restarts from its start, so a change can overwrite it without growing it.
                    if self._wal_stamp() != wal_before:
                        self._erase_residue("a change was rolled back")
                raise
        except sqlite3.ProgrammingError:
            raise  # our own misuse (a closed gallery): a bug, not the file's fault
        except sqlite3.DatabaseError as error:
            raise _sqlite_failure(self.path, error, "write") from None

    def _wal_stamp(self) -> tuple[int, int, int] | None:
        """The gallery's -wal file's identity, size and last change (None when there is
        none): it differs once anything was written to it."""
        try:
            info = os.stat(f"{os.path.realpath(self.path)}-wal")
        except OSError:
            return None
        return info.st_ino, info.st_size, info.st_mtime_ns

    def _erase_residue(self, what: str) -> None:
        """After a change that deleted someone's data, leave no copy of it in the -wal file,
        which the door keeps open (edge_app.sqlite_files)."""
        reason = empty_wal(self._db)
        if reason is not None:
            log.warning(
                "gallery=%s %s, but the previous data may stay in %s-wal until the last "
                "program using the gallery closes it (%s)",
                self.path,
                what,
                self.path.name,
                reason,
            )

    def _refuse_damage(self) -> None:
        """Refuse to write to a damaged file (a change could land beside the damage and be
        reported done). SQLite's quick_check reads every page once: milliseconds for a
        gallery, paid only by changes, which are rare (no read, so not the door's frames)."""
        problem = str(self._db.execute("PRAGMA quick_check(1)").fetchone()[0])
        if problem != "ok":
            raise damaged(self.path, f"integrity check: {problem.splitlines()[-1]}")

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """Several reads seeing the same committed state, while a writer carries on in WAL."""
        self._db.execute("BEGIN")
        try:
            yield self._db
        except BaseException:
            # The read failed (a damaged page, say): end the transaction without letting a
            # second error from it hide the first.
            with suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- reading -------------------------------------------------------------------------

    @_reads
    def _find(self, name: str) -> tuple[int, str] | None:
        """(id, stored name) of the person `name` denotes (module docstring: names), if any.

        A gallery enrolled before the name rule may hold two names with the same key; the
        one typed exactly wins, else the first enrolled.
        """
        if not_utf8(name) or len(name) > MAX_TYPED_NAME:
            return None  # bytes that are not UTF-8 (a Latin-1 terminal), or far too long
        rows = self._db.execute(
            "SELECT id, name FROM people WHERE name_key(name) = ? ORDER BY id", (name_key(name),)
        ).fetchall()
        exact = [row for row in rows if row[1] == name]
        found = (exact or rows or [None])[0]
        return None if found is None else (int(found[0]), str(found[1]))

    @_reads
    def has(self, name: str) -> bool:
        return self._find(name) is not None

    @_reads
    def looks_like(self, name: str, but: int | None = None) -> str | None:
        """The enrolled person other than `name` whose name looks like it (reads_like), or
        None; `but`: the id of a person left out (the one a rename renames)."""
        rows = self._db.execute("SELECT id, name FROM people ORDER BY id").fetchall()
        return reads_like(name, (str(row[1]) for row in rows if row[0] != but))

    @_reads
    def _names(self) -> list[str]:
        return [str(row[0]) for row in self._db.execute("SELECT name FROM people ORDER BY id")]

    def _not_enrolled(self, names: Sequence[str]) -> GalleryError:
        """The refusal for names nobody has, each with the enrolled name it may be a typo of."""
        enrolled = self._names()
        shown_names = ", ".join(f"{name!r}{did_you_mean(name, enrolled)}" for name in names)
        return GalleryError(f"not enrolled: {shown_names}")

    @_reads
    def people(self) -> list[PersonInfo]:
        rows = self._db.execute(
            """SELECT p.name, count(s.id), count(s.face_crop), p.created_utc, max(s.created_utc),
                      p.access
               FROM people p LEFT JOIN samples s ON s.person_id = p.id
               GROUP BY p.id ORDER BY p.name"""
        ).fetchall()
        for row in rows:
            _check_types(self.path, "people", row, (str, int, int, str, (str, type(None)), int))
        return [
            PersonInfo(name, samples, crops, created, last, access=bool(access))
            for name, samples, crops, created, last, access in rows
        ]

    @_reads
    def embeddings(self, name: str, mirrors: bool = False) -> np.ndarray:
        """One person's samples, (K, 512); K = 0 for an unknown name. mirrors: their stored
        mirror-image embeddings too, after each photo's own."""
        with self._snapshot() as db:
            found = self._find(name)
            rows = db.execute(
                "SELECT embedding, mirror_embedding FROM samples WHERE person_id = ? ORDER BY id",
                (found[0] if found else -1,),
            ).fetchall()
        if not mirrors:
            return _blobs_to_matrix([row[0] for row in rows])
        return _blobs_to_matrix(_with_mirrors(_mirrors_of_their_photo(rows, 0, 1)[0]))

    @_reads
    def looking_like_several(self) -> list[tuple[str, int, int]]:
        """(name, photos, photos that look like another person) for each person whose samples
        enrolment's one-person gate (quality.other_people_among) would not take together:
        people enrolled from a mixed folder before the gate, or imported so."""
        with self._snapshot() as db:
            people = db.execute("SELECT id, name FROM people ORDER BY name").fetchall()
            rows = db.execute(
                "SELECT person_id, embedding, mirror_embedding FROM samples ORDER BY id"
            ).fetchall()
        rows = _mirrors_of_their_photo(rows)[0]
        photos: dict[int, list[tuple[bytes, bytes]]] = {}
        for person_id, embedding, mirror in rows:
            photos.setdefault(person_id, []).append((embedding, mirror or embedding))
        found = []
        for person_id, name in people:
            mine = photos.get(person_id, [])
            if len(mine) < 2:
                continue
            embeddings = _blobs_to_matrix([e for e, _ in mine])
            mirrors = _blobs_to_matrix([m for _, m in mine])
            empty = np.zeros((0, EMBEDDING_DIM), np.float32)
            odd = other_people_among(embeddings, mirrors, empty)
            if odd:
                found.append((name, len(mine), len(odd)))
        return found

    @_reads
    def without_mirrors(self) -> int:
        """Samples stored without their mirror-image embedding (enrolled before schema v4)."""
        return int(
            self._db.execute(
                "SELECT count(*) FROM samples WHERE mirror_embedding IS NULL"
            ).fetchone()[0]
        )

    @_reads
    def models(self) -> set[str | None]:
        """The embedding models the samples came from (None: enrolled before this was recorded)."""
        return {row[0] for row in self._db.execute("SELECT DISTINCT model FROM samples")}

    @_reads
    def people_by_model(self) -> dict[str | None, list[str]]:
        """The people with samples from each embedding model (None: not recorded), by name."""
        found: dict[str | None, list[str]] = {}
        for model, name in self._db.execute(
            """SELECT DISTINCT s.model, p.name FROM samples s JOIN people p ON p.id = s.person_id
               ORDER BY p.name"""
        ):
            found.setdefault(model, []).append(name)
        return found

    def other_models_warning(self, model: str | None) -> str | None:
        """other_models_warning() for this gallery."""
        return other_models_warning(self.people_by_model(), model)

    @_reads
    def load_matrix(self) -> GalleryMatrix:
        with self._snapshot() as db:
            names = db.execute(
                """SELECT p.name, p.access, p.id FROM people p
                   WHERE EXISTS (SELECT 1 FROM samples s WHERE s.person_id = p.id)
                   ORDER BY p.id"""
            ).fetchall()
            # Samples whose person is gone (deleted with foreign keys off, e.g. from the
            # sqlite3 shell) belong to nobody: left out, as their person is.
            rows = db.execute(
                """SELECT person_id, embedding, mirror_embedding FROM samples
                   WHERE person_id IN (SELECT id FROM people)
                   ORDER BY person_id, id"""
            ).fetchall()
        rows, dropped = _mirrors_of_their_photo(rows)
        if dropped:
            owners = [row[0] for row in dropped]
            whose = {row[2]: row[0] for row in names}
            log.warning(
                "gallery %s: %d mirror embedding(s) are another face than their photo's and "
                "are left out of matching (%s); remove and enrol again whoever they belong to",
                self.path,
                len(owners),
                first_few(sorted({whose.get(owner, "?") for owner in owners}), 5),
            )
        # A photo's mirror embedding is one more row of its person, right after its own.
        embeddings = _blobs_to_matrix(_with_mirrors([row[1:] for row in rows]))
        ids = np.fromiter(
            (row[0] for row in rows for _ in range(1 + (row[2] is not None))), np.int64
        )
        # Person ids are sorted, so the inverse of unique is already the grouped row index.
        _, person = np.unique(ids, return_inverse=True)
        return GalleryMatrix(
            embeddings,
            person.astype(np.int32),
            tuple(row[0] for row in names),
            # Access only for the stored 1: any other value (the text 'no', a 2) is none.
            frozenset(row[0] for row in names if row[1] != 1),
        )

    # --- writing -------------------------------------------------------------------------

    def enroll(
        self, name: str, samples: Sequence[NewSample], *, add: bool = False, access: bool = True
    ) -> int:
        """Store a person's new samples in one transaction; returns their sample count after.

        add=False enrols a new person and refuses an existing name; add=True extends an
        existing person and refuses an unknown one (a typo should not create a stranger).
        access=False enrols a known visitor (ignored with add=True: set_access changes it).
        """
        name = check_name(name)
        if not samples:
            raise GalleryError(f"no samples to enrol for {name!r}")
        with self.transaction():
            row = self._find(name)
            if row is None and add:
                raise GalleryError(nobody_named(name, self._names()))
            if row is not None and not add:
                raise GalleryError(already_enrolled(name, row[1]))
            twin = None if row is not None else self.looks_like(name)
            if twin is not None:
                raise GalleryError(looks_like_enrolled(name, twin, new_name_advice(twin)))
            # Checked again here, under the write lock: the enrolment judged its photos
            # against the people enrolled when it started, and another one may have
            # committed the same face under another name since.
            self._refuse_shared_faces(
                [(name, None if row is None else row[0], samples)], set(), "enrolled"
            )
            person_id = row[0] if row else self._insert_person(name, access=access)
            self._insert_samples(person_id, samples)
            return self._refuse_too_many_samples(person_id, name, "enrolled")

    def _refuse_too_many_samples(self, person_id: int, name: str, nothing: str) -> int:
        """The person's sample count; GalleryError past MAX_SAMPLES_PER_PERSON (the caller's
        transaction then rolls back: nothing was `nothing`, "enrolled" or "imported")."""
        count = int(
            self._db.execute(
                "SELECT count(*) FROM samples WHERE person_id = ?", (person_id,)
            ).fetchone()[0]
        )
        if count > MAX_SAMPLES_PER_PERSON:
            raise GalleryError(
                f"{name!r} would have {count} photos, more than the {MAX_SAMPLES_PER_PERSON} "
                "one person may have: each photo more lets strangers come nearer to them "
                f"(docs/GALLERY.md); keep a few clear, different ones (nothing was {nothing})"
            )
        return count

    def _insert_person(
        self, name: str, created_utc: str | None = None, *, access: bool = True
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO people (name, created_utc, access) VALUES (?, ?, ?)",
            (name, created_utc or utc_now(), int(access)),
        )
        if cursor.lastrowid is None:
            raise GalleryError(f"cannot write the gallery {self.path}: the insert was ignored")
        return cursor.lastrowid

    def _insert_samples(self, person_id: int, samples: Sequence[NewSample]) -> None:
        for index, sample in enumerate(samples, start=1):
            mirror = sample.mirror
            if mirror is not None and mirrors_differ(sample.embedding[None], mirror[None])[0]:
                cosine = float(np.dot(sample.embedding, mirror))
                raise GalleryError(_other_face(f"sample {index}", cosine))
        now = utc_now()
        self._db.executemany(
            """INSERT INTO samples
               (person_id, embedding, image_sha256, created_utc, face_crop, model,
                mirror_embedding)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            [
                (
                    person_id,
                    _encode(s.embedding),
                    s.image_sha256,
                    s.created_utc or now,
                    s.face_crop,
                    s.model,
                    None if s.mirror is None else _encode(s.mirror),
                )
                for s in samples
            ],
        )

    def remove(self, names: Sequence[str]) -> int:
        """Remove people and all their samples; all or none. Returns the samples removed."""
        with self.transaction() as db:
            found = {name: self._find(name) for name in names}
            missing = [name for name, row in found.items() if row is None]
            if missing:
                raise self._not_enrolled(missing)
            removed = 0
            for person_id in {row[0] for row in found.values() if row is not None}:
                removed += db.execute(
                    "DELETE FROM samples WHERE person_id = ?", (person_id,)
                ).rowcount
                db.execute("DELETE FROM people WHERE id = ?", (person_id,))
        self._erase_residue("removed " + ", ".join(map(repr, names)))
        return removed

    def set_access(self, name: str, access: bool) -> tuple[str, bool]:
        """Let a person open the door (True) or make them a known visitor (False); returns
        the name as stored (`name` may differ in case or spacing) and whether anything
        changed."""
        with self.transaction() as db:
            person = self._find(name)
            if person is None:
                raise self._not_enrolled([name])
            changed = db.execute(
                "UPDATE people SET access = ? WHERE id = ? AND access != ?",
                (int(access), person[0], int(access)),
            ).rowcount
            return person[1], changed > 0

    def rename(self, old: str, new: str) -> str:
        """Rename a person; returns the new name as stored (check_name's form)."""
        new = check_name(new)
        with self.transaction() as db:
            person = self._find(old)
            if person is None:
                raise self._not_enrolled([old])
            other = self._find(new)
            # The same person under another case or spacing is a correction, not a clash.
            if other is not None and other[0] != person[0]:
                raise GalleryError(f"{new!r} is already enrolled; remove or rename them first")
            # A name that reads as it did (a correction of case or of a lookalike letter)
            # makes no person harder to tell apart than they were.
            twin = None
            if name_skeleton(new) != name_skeleton(person[1]):
                twin = self.looks_like(new, but=person[0])
            if twin is not None:
                raise GalleryError(
                    looks_like_enrolled(new, twin, "choose a name that reads differently")
                )
            db.execute("UPDATE people SET name = ? WHERE id = ?", (new, person[0]))
        self._erase_residue(f"renamed {old!r}")
        return new

    # --- moving a gallery to another door (format: docs/GALLERY.md) ----------------------

    @_reads
    def export(self, out: SupportsWrite[str]) -> tuple[int, int]:
        """Write the whole gallery as JSON lines; returns (people, samples) written. A mirror
        embedding that is another face than its photo's is left out (an import refuses it)."""
        left_out = 0
        with self._snapshot() as db:
            people = db.execute(
                "SELECT id, name, created_utc, access FROM people ORDER BY name"
            ).fetchall()
            for row in people:
                _check_types(self.path, "people", row, (int, str, str, int))
            samples: dict[int, list[dict[str, Any]]] = {pid: [] for pid, *_ in people}
            optional_bytes, optional_text = (bytes, type(None)), (str, type(None))
            for row in db.execute(
                """SELECT person_id, embedding, image_sha256, created_utc, face_crop, model,
                          mirror_embedding
                   FROM samples WHERE person_id IN (SELECT id FROM people) ORDER BY id"""
            ):
                # (The embeddings: _blobs_to_matrix says what is wrong with them.)
                kinds = (int, object, str, str, optional_bytes, optional_text, object)
                _check_types(self.path, "samples", row, kinds)
                [row], other_face = _mirrors_of_their_photo([row], 1, 6)
                left_out += len(other_face)
                person_id, blob, digest, created, crop, model, mirror = row
                _blobs_to_matrix([blob] if mirror is None else [blob, mirror])  # damage?
                sample = {
                    "embedding": base64.b64encode(blob).decode("ascii"),
                    "image_sha256": digest,
                    "created_utc": created,
                    "model": model,
                }
                if crop is not None:
                    sample["face_crop_jpeg"] = base64.b64encode(crop).decode("ascii")
                if mirror is not None:
                    sample["mirror_embedding"] = base64.b64encode(mirror).decode("ascii")
                samples[person_id].append(sample)
        if left_out:
            log.warning(
                "gallery %s: %d mirror embedding(s) another face than their photo's left out "
                "of the export (the photos are in it)",
                self.path,
                left_out,
            )
        total = sum(len(v) for v in samples.values())
        visitors = any(not access for *_, access in people)
        header = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION if visitors else 1,
            "exported_utc": utc_now(),
            "embedding_dim": EMBEDDING_DIM,
            "embedding_dtype": "float32-le",
            "people": len(people),
            "samples": total,
        }
        out.write(json.dumps(header) + "\n")
        for person_id, name, created, access in people:
            record = {"name": name, "created_utc": created, "samples": samples[person_id]}
            if not access:
                record["access"] = False
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        return len(people), total

    def import_(
        self,
        people: Sequence[ExportedPerson],
        *,
        on_conflict: str = "refuse",
        progress: bool = False,
    ) -> ImportSummary:
        """Add people read by read_export(), in one transaction.

        on_conflict: "refuse" (default) fails when a name exists here too, naming them all;
        "replace" swaps such a person's samples for the imported ones; "merge" adds the
        imported samples whose photo (image_sha256) that person does not have yet and keeps
        the stricter access: a person the file lists without access loses theirs here (a
        door that took someone's access away passes that on), never the other way.
        progress: bars over the checks and the writing when standard error is a terminal.
        """
        if on_conflict not in ("refuse", "replace", "merge"):
            raise ValueError(f"on_conflict must be refuse, replace or merge, not {on_conflict!r}")
        summary = ImportSummary()
        for person in people:  # before any work that grows with a person's photos
            if len(person.samples) > MAX_SAMPLES_PER_PERSON:
                raise GalleryError(
                    f"{person.name!r} in the import has {len(person.samples)} photos, more "
                    f"than the {MAX_SAMPLES_PER_PERSON} one person may have (docs/GALLERY.md); "
                    "nothing was imported"
                )
        with self.transaction() as db:
            found = {person.name: self._find(person.name) for person in people}
            conflicts = sorted(name for name, row in found.items() if row is not None)
            if conflicts and on_conflict == "refuse":
                raise GalleryError(
                    "already enrolled here: "
                    + ", ".join(map(repr, conflicts))
                    + "; pass --replace to overwrite them or --merge to add their samples"
                )
            self._refuse_lookalikes([p.name for p in people if found[p.name] is None])
            replaced = {row[0] for row in found.values() if row is not None}
            ids = {name: None if row is None else row[0] for name, row in found.items()}
            entries = [(person.name, ids[person.name], person.samples) for person in people]
            self._refuse_shared_faces(
                entries,
                replaced if on_conflict == "replace" else set(),
                "imported",
                progress=progress,
            )
            self._refuse_several_people(people, found, merge=on_conflict == "merge")
            with _progress(len(people), "writing", "person", progress) as bar:
                for person in people:
                    bar.update()
                    name, new_samples = person.name, person.samples
                    kept = new_samples
                    row = found[name]
                    if row is None:
                        person_id = self._insert_person(
                            name, person.created_utc, access=person.access
                        )
                        summary.added_people.append(name)
                    elif on_conflict == "replace":
                        person_id = row[0]
                        db.execute("DELETE FROM samples WHERE person_id = ?", (person_id,))
                        db.execute(
                            "UPDATE people SET access = ? WHERE id = ?",
                            (int(person.access), person_id),
                        )
                        summary.replaced_people.append(row[1])
                    else:
                        person_id = row[0]
                        have = {
                            digest
                            for (digest,) in db.execute(
                                "SELECT image_sha256 FROM samples WHERE person_id = ?", (person_id,)
                            )
                        }
                        kept = [s for s in new_samples if s.image_sha256 not in have]
                        summary.merged_people.append(row[1])
                        if (
                            not person.access
                            and db.execute(
                                "UPDATE people SET access = 0 WHERE id = ? AND access = 1",
                                (person_id,),
                            ).rowcount
                        ):
                            summary.access_removed.append(row[1])
                    self._insert_samples(person_id, kept)
                    self._refuse_too_many_samples(person_id, name, "imported")
                    summary.samples_added += len(kept)
                    summary.samples_skipped += len(new_samples) - len(kept)
        if summary.replaced_people:
            self._erase_residue("replaced " + ", ".join(map(repr, summary.replaced_people)))
        return summary

    def _refuse_lookalikes(self, new: Sequence[str]) -> None:
        """GalleryError when one of the people an import adds (`new`, their names) looks like
        someone enrolled here or, in a gallery that holds anyone, another of them
        (reads_like). Into an empty gallery the file's people are not compared with each
        other: an export of a gallery that holds two such names restores as it was."""
        enrolled = self._names()
        for place, name in enumerate(new):
            twin = reads_like(name, enrolled)
            if twin is not None:
                advice = "rename one of them (here, or in the file) first; nothing was imported"
                raise GalleryError(looks_like_enrolled(name, twin, advice))
            twin = reads_like(name, new[:place]) if enrolled else None
            if twin is not None:
                raise GalleryError(
                    f"{name!r} and {twin!r} in the import look alike: the names differ only "
                    "in characters that look alike (letters of another alphabet, full-width "
                    "or other compatibility forms); rename one of them in the file first; "
                    "nothing was imported"
                )

    def _refuse_shared_faces(
        self,
        entries: Sequence[tuple[str, int | None, Sequence[NewSample]]],
        replaced: set[int],
        nothing: str,
        progress: bool = False,
    ) -> None:
        """GalleryError when a new sample nearly repeats (enrolment's near-duplicate cosine) a
        sample of another person, here or among the new ones: one face under two names is
        let in as either (edge_app.enroll.enrolled_as judges photos the same way).

        entries: (name, the id of the person they are added to or replace, or None for a new
        person, their new samples). Every row is owned by a person: the gallery's by their
        id, a new entry by the id it joins, or else by its place. The samples of the people
        `replaced` (their ids) are left out: the import deletes them, so a file that swaps
        back two faces enrolled under each other's names is taken. nothing: "imported" or
        "enrolled", for the message."""
        rows = self._db.execute(
            """SELECT s.person_id, p.name, s.embedding, s.mirror_embedding
               FROM samples s JOIN people p ON p.id = s.person_id"""
        ).fetchall()
        rows = _mirrors_of_their_photo(rows, 2, 3)[0]
        owners: list[int] = []
        names: list[str] = []
        blobs: list[bytes] = []
        for person_id, name, embedding, mirror in rows:
            if person_id in replaced:
                continue
            for blob in (embedding, mirror):
                if blob is not None:
                    owners.append(person_id)
                    names.append(name)
                    blobs.append(blob)
        del rows
        here = len(blobs)
        new_rows = [
            (person_id if person_id is not None else -1 - place, name, vector)
            for place, (name, person_id, samples) in enumerate(entries)
            for sample in samples
            for vector in (sample.embedding, sample.mirror)
            if vector is not None
        ]
        if not new_rows:
            return
        # One matrix, written in place: the gallery's rows, then the new ones as they would
        # be stored (_encode refuses what may not be: a wrong size, NaN).
        everyone = np.empty((here + len(new_rows), EMBEDDING_DIM), np.float32)
        if blobs:
            everyone[:here] = _blobs_to_matrix(blobs)
        del blobs
        for at, (owner_id, name, vector) in enumerate(new_rows, start=here):
            owners.append(owner_id)
            names.append(name)
            everyone[at] = np.frombuffer(_encode(vector), "<f4")
        owner = np.array(owners)
        # Tiles of IMPORT_CHECK_ROWS new rows by IMPORT_CHECK_COLUMNS rows of everyone: the
        # scores and their mask stay about 40 MB whatever the gallery and the file hold.
        with _progress(len(new_rows), "checking faces", "face", progress) as bar:
            for start in range(here, len(owners), IMPORT_CHECK_ROWS):
                stop = min(start + IMPORT_CHECK_ROWS, len(owners))
                # The best pair of these rows with anyone (of a pair found twice, either).
                best, row, col = -np.inf, 0, 0
                for first in range(0, len(owners), IMPORT_CHECK_COLUMNS):
                    last = min(first + IMPORT_CHECK_COLUMNS, len(owners))
                    scores = everyone[start:stop] @ everyone[first:last].T
                    scores[owner[start:stop, None] == owner[None, first:last]] = -1.0
                    top = np.unravel_index(int(np.argmax(scores)), scores.shape)
                    if float(scores[top]) > best:
                        best, row, col = float(scores[top]), int(top[0]), first + int(top[1])
                bar.update(stop - start)
                if best > NEAR_DUPLICATE_COSINE:
                    source = "in the import" if nothing == "imported" else "being enrolled"
                    where = "in this gallery" if col < here else f"{source} too"
                    raise GalleryError(
                        f"{names[start + row]!r} {source} has the same face as "
                        f"{names[col]!r} {where} (cosine {best:.3f} > "
                        f"{NEAR_DUPLICATE_COSINE:.2f}): one person under two names is let in "
                        f"as either; remove one of them first (nothing was {nothing})"
                    )

    def _refuse_several_people(
        self,
        people: Sequence[ExportedPerson],
        found: dict[str, tuple[int, str] | None],
        *,
        merge: bool,
    ) -> None:
        """GalleryError when an imported person's photos show more than one person, by
        enrolment's one-person rule (quality.other_people_among): several faces under one
        name each let in that name, which `enroll` refuses. Merged into a person here, the
        new photos are judged against theirs, as `enroll --add` judges photos."""
        empty = np.zeros((0, EMBEDDING_DIM), np.float32)
        for person in people:
            row = found[person.name]
            enrolled = empty
            if merge and row is not None:
                rows = self._db.execute(
                    "SELECT embedding, mirror_embedding FROM samples WHERE person_id = ?",
                    (row[0],),
                ).fetchall()
                rows = _mirrors_of_their_photo(rows, 0, 1)[0]
                enrolled = _blobs_to_matrix(_with_mirrors(rows)) if rows else empty
            vectors = np.stack([s.embedding for s in person.samples]).astype(np.float32)
            mirrors = np.stack(
                [s.embedding if s.mirror is None else s.mirror for s in person.samples]
            ).astype(np.float32)
            odd = other_people_among(vectors, mirrors, enrolled)
            if odd:
                raise GalleryError(
                    f"{person.name!r} in the import: {len(odd)} of {len(person.samples)} photos "
                    f"refused by the one-person rule, each face under one name lets that name "
                    f"in; the first: {odd[min(odd)].message} (nothing was imported)"
                )


def other_models_warning(by_model: dict[str | None, list[str]], model: str | None) -> str | None:
    """The one warning for samples from an embedding model other than `model` (the one the
    door runs; None when it is not known here: then any two recorded models differ), naming
    the people to re-enrol; None when there are none. by_model: Gallery.people_by_model().
    Their scores are not on the threshold's scale (e.g. enrolled before the models centred
    their embeddings)."""
    recorded = {m: names for m, names in by_model.items() if m is not None}
    if model is not None:
        foreign = {m: names for m, names in recorded.items() if m != model}
    else:
        foreign = recorded if len(recorded) > 1 else {}
    if not foreign:
        return None
    people = sorted({name for names in foreign.values() for name in names})
    than = "than the models here" if model is not None else "from each other"
    return (
        f"the gallery holds samples of {len(people)} people from embedding models other "
        f"{than} ({', '.join(sorted(m[:12] for m in foreign))}): their scores are not "
        f"comparable with the threshold; re-enrol {first_few(people, 5)}"
    )


def _other_face(what: str, cosine: float) -> str:
    return (
        f"{what} mirror_embedding is another face than its embedding (cosine {cosine:.2f}, "
        f"below {MIRROR_SAME_FACE}): a photo's mirror image shows the same face"
    )


Row = TypeVar("Row", bound=tuple[Any, ...])


def _mirrors_of_their_photo(
    rows: Sequence[Row], embedding_at: int = 1, mirror_at: int = 2
) -> tuple[list[Row], list[Row]]:
    """`rows` of the samples table with each mirror embedding (column mirror_at) that is
    another face than its photo's (column embedding_at; quality.mirrors_differ) made None,
    and the rows as they were read whose mirror was. No enrolment or import stores one; a
    gallery written by other means (an import before this check, the sqlite3 shell) may,
    and every reader of the mirrors goes through here: matching, the one-person rule,
    doctor, export. Rows whose embedding or mirror is damaged are left as they are
    (_blobs_to_matrix says what is wrong with them)."""
    paired = [
        i
        for i, row in enumerate(rows)
        if all(
            type(row[at]) is bytes and len(row[at]) == EMBEDDING_BYTES
            for at in (embedding_at, mirror_at)
        )
    ]
    if not paired:
        return list(rows), []
    differ = np.zeros(len(paired), bool)
    # SUM_ROWS pairs at a time, as _blobs_to_matrix reads them (a gallery load's memory is
    # bounded by a test).
    for start in range(0, len(paired), SUM_ROWS):
        part = paired[start : start + SUM_ROWS]
        own = np.frombuffer(b"".join(rows[i][embedding_at] for i in part), "<f4")
        mirror = np.frombuffer(b"".join(rows[i][mirror_at] for i in part), "<f4")
        differ[start : start + len(part)] = mirrors_differ(
            own.reshape(-1, EMBEDDING_DIM), mirror.reshape(-1, EMBEDDING_DIM)
        )
    if not differ.any():
        return list(rows), []
    checked = list(rows)
    dropped = []
    for i in np.flatnonzero(differ):
        row = rows[paired[i]]
        dropped.append(row)
        checked[paired[i]] = cast(Row, (*row[:mirror_at], None, *row[mirror_at + 1 :]))
    return checked, dropped


def _with_mirrors(rows: Sequence[Sequence[bytes | None]]) -> list[bytes | None]:
    """(embedding, mirror or None) rows -> every embedding, each photo's mirror after it. A
    NULL embedding is kept (as None): _blobs_to_matrix calls it damage, not a missing row."""
    blobs: list[bytes | None] = []
    for embedding, mirror in rows:
        blobs.append(embedding)
        if mirror is not None:
            blobs.append(mirror)
    return blobs


def _blobs_to_matrix(blobs: Sequence[bytes | None]) -> np.ndarray:
    """Stored embeddings as (K, 512) unit rows (module docstring: a row that is not unit
    length is renormalised, one that is not finite or is zero becomes zeros, matching nobody)."""
    # Each row on its own: rows of 2,044 and 2,052 bytes sum right and would shift every
    # vector after them; a TEXT or NULL one (written by hand) is no embedding either.
    if not all(type(blob) is bytes and len(blob) == EMBEDDING_BYTES for blob in blobs):
        raise GalleryError(
            "the gallery holds an embedding that is not 512 float32 values: it is damaged"
        )
    # SUM_ROWS rows at a time: the whole gallery joined into one bytes object, then a float32
    # copy and a float64 copy for the norms, took 7 times the matrix at once (723 MB for a
    # 103 MB gallery of 5,000 people), at every gallery change the door reads.
    matrix = np.empty((len(blobs), EMBEDDING_DIM), np.float32)
    norms = np.empty(len(blobs), np.float64)
    for start in range(0, len(blobs), SUM_ROWS):
        part = blobs[start : start + SUM_ROWS]
        data = b"".join(blob for blob in part if blob is not None)  # none is: checked above
        block = np.frombuffer(data, dtype="<f4").reshape(len(part), EMBEDDING_DIM)
        matrix[start : start + len(part)] = block
        with np.errstate(invalid="ignore", over="ignore"):
            norms[start : start + len(part)] = np.linalg.norm(block.astype(np.float64), axis=1)
    unusable = ~np.isfinite(norms) | (norms == 0)
    off = ~unusable & (np.abs(norms - 1.0) > RENORMALISE_ABOVE)
    if unusable.any() or off.any():
        log.warning(
            "gallery holds %d sample(s) not of unit length (renormalised) and %d unusable "
            "(ignored): re-enrol those people",
            int(off.sum()),
            int(unusable.sum()),
        )
        matrix[off] /= norms[off, None].astype(np.float32)
        matrix[unusable] = 0.0
    return matrix


def _export_error(line: int, what: str) -> GalleryError:
    return GalleryError(f"not a valid gallery export (line {line}): {what}")


class _Invalid(ValueError):
    """One field of an export record that is wrong; read_export adds the line number."""


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _string(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"{what} must be a string, not {_type_name(value)}")
    return value


def _stamp(path: Path) -> tuple[int, ...]:
    """What changes when a gallery's files are written: the file's and its -wal's identity,
    size and modification time (zeros for a file that is not there)."""
    real = os.path.realpath(path)
    stamp: list[int] = []
    for name in (real, f"{real}-wal"):
        try:
            info = os.stat(name)
        except OSError:
            stamp.extend((0, 0, 0, 0))
            continue
        stamp.extend((info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(stamp)


@contextmanager
def _progress(total: int, desc: str, unit: str, enabled: bool) -> Iterator[Any]:
    """Progress on standard error when `enabled` (edge_app.progress: a bar on a terminal,
    else a log line now and then), else nothing; closed on the way out, an error included.
    tqdm is imported only when enabled (the door reads galleries and shows no bars)."""
    if not enabled:
        yield _NoBar()
        return
    from edge_app.progress import Progress

    with Progress(total=total, desc=desc, unit=unit, disable=None) as bar:
        yield bar


class _NoBar:
    def update(self, n: int = 1) -> None:
        """Nothing to show."""


def _utc(value: object, what: str) -> str:
    text = _string(value, what)
    try:
        # Only the form the gallery writes: times are compared as text (the latest sample),
        # so 2025-9-1T0:0:0Z, which strptime reads, would sort after 2025-12-31.
        canonical = datetime.strptime(text, UTC_FORMAT).strftime(UTC_FORMAT) == text
    except ValueError:
        canonical = False
    if not canonical:
        raise _Invalid(f"{what} {text[:40]!r} is not a UTC time like 2025-01-31T12:00:00Z")
    return text


def _base64(value: object, what: str) -> bytes:
    try:
        return base64.b64decode(_string(value, what), validate=True)
    except (binascii.Error, ValueError) as error:  # ValueError: text that is not ASCII
        raise _Invalid(f"{what} is not base64 ({error})") from None


def _count(header: dict[str, Any], key: str) -> int:
    value = header.get(key)
    # bool is an int subclass: `true` must not pass for 1.
    if type(value) is not int or value < 0:
        raise _export_error(1, f"{key} must be a whole number, not {value!r}")
    return value


def export_header(first: str) -> dict[str, Any]:
    """The header an export's first line holds; GalleryError when the line is not one (not
    JSON, not an object, another format). Only the format is checked here (read_export
    checks the rest)."""
    try:
        # A UTF-8 byte order mark, as Windows editors save text, is not part of the header.
        header = untrusted_json.loads(first.removeprefix("\ufeff"), max_values=MAX_HEADER_VALUES)
    except untrusted_json.BadJSON as error:
        raise _export_error(1, str(error)) from None
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise _export_error(1, f"no {EXPORT_FORMAT!r} header")
    return header


def read_export(source: Iterable[str], progress: bool = False) -> list[ExportedPerson]:
    """Parse and check a whole export file, so that nothing is written from a bad one;
    `progress`: a bar over its people when standard error is a terminal.

    Every field is type-checked, every embedding must be a finite unit vector, face crops must
    be JPEGs that decode, and the same photo twice for a person, the same embedding twice in
    the file and the same name twice (by the name rule) are refused.
    """
    lines = iter(source)
    try:
        header = export_header(next(lines))
    except StopIteration:
        raise _export_error(1, "the file is empty") from None
    version = header.get("version")
    if type(version) is not int or version not in EXPORT_VERSIONS:
        raise _export_error(
            1, f"version {version!r}; this edge-app reads {' and '.join(map(str, EXPORT_VERSIONS))}"
        )
    dim = header.get("embedding_dim")
    if type(dim) is not int or dim != EMBEDDING_DIM:
        raise _export_error(1, f"embedding_dim {dim!r}, expected {EMBEDDING_DIM}")
    announced_people, announced_samples = _count(header, "people"), _count(header, "samples")
    people: dict[str, ExportedPerson] = {}
    by_key: dict[str, str] = {}  # name_key -> the name as the file spells it
    seen_embeddings: dict[bytes, str] = {}
    count = 0
    with _progress(announced_people, "reading", "person", progress) as bar:
        for number, text in enumerate(lines, start=2):
            if not text.strip():
                continue
            bar.update()
            try:
                record = untrusted_json.loads(text, max_values=MAX_RECORD_VALUES)
            except untrusted_json.BadJSON as error:
                raise _export_error(number, str(error)) from None
            try:
                person = _person_from_export(record)
            except (_Invalid, GalleryError) as error:
                raise _export_error(number, f"bad person record: {error}") from None
            name = person.name
            key = name_key(name)
            twin = by_key.setdefault(key, name)
            if twin != name or name in people:
                raise _export_error(number, f"{name!r} appears twice (also as {twin!r})")
            for index, new in enumerate(person.samples, start=1):
                # By a 128-bit digest: the 2 KB embeddings themselves as keys held another
                # copy of them all (46 MB for 4,500 people x 5 photos).
                blob = hashlib.blake2b(_encode(new.embedding), digest_size=16).digest()
                if blob in seen_embeddings:
                    raise _export_error(
                        number,
                        f"sample {index} of {name!r} has the same embedding as a sample of "
                        f"{seen_embeddings[blob]!r}",
                    )
                seen_embeddings[blob] = name
            people[name] = person
            count += len(person.samples)
    if len(people) != announced_people or count != announced_samples:
        raise _export_error(
            1,
            f"header announces {announced_people} people / {announced_samples} samples, "
            f"the file has {len(people)} / {count}: it is truncated or edited",
        )
    return list(people.values())


def _person_from_export(record: object) -> ExportedPerson:
    if not isinstance(record, dict):
        raise _Invalid(f"a person record must be an object, not {_type_name(record)}")
    if "name" not in record:
        raise _Invalid("no name")
    if not isinstance(record["name"], str):
        raise _Invalid(f"name must be a string, not {_type_name(record['name'])}")
    name = check_name(record["name"])
    created = record.get("created_utc")
    created = utc_now() if created is None else _utc(created, "created_utc")
    items = record.get("samples")
    if not isinstance(items, list):
        raise _Invalid(f"samples must be a list, not {_type_name(items)}")
    if not items:
        raise _Invalid(f"{name!r} has no samples")
    samples = []
    photos: set[str] = set()
    for index, item in enumerate(items, start=1):
        try:
            sample = _sample_from_export(item, index)
        except GalleryError as error:  # the embedding rule, from _encode
            raise _Invalid(f"sample {index}: {error}") from None
        if sample.image_sha256 in photos:
            raise _Invalid(f"sample {index} of {name!r} is the same photo twice (image_sha256)")
        photos.add(sample.image_sha256)
        samples.append(sample)
    access = record.get("access", True)
    if type(access) is not bool:
        raise _Invalid(f"access must be true or false, not {access!r}")
    return ExportedPerson(name, created, samples, access)


def _sample_from_export(data: object, index: int) -> NewSample:
    if not isinstance(data, dict):
        raise _Invalid(f"sample {index} must be an object, not {_type_name(data)}")
    what = f"sample {index}"
    embedding = _embedding_from_export(data.get("embedding"), f"{what} embedding")
    mirror = data.get("mirror_embedding")
    if mirror is not None:
        mirror = _embedding_from_export(mirror, f"{what} mirror_embedding")
        if mirrors_differ(embedding[None], mirror[None])[0]:
            raise _Invalid(_other_face(what, float(embedding @ mirror)))
    digest = _string(data.get("image_sha256"), f"{what} image_sha256")
    if not SHA256_HEX.fullmatch(digest):
        raise _Invalid(f"{what} image_sha256 must be 64 lowercase hex digits")
    model = data.get("model")
    if model is not None:
        model = _string(model, f"{what} model")
        if len(model) > MAX_MODEL_ID_LENGTH or not model.isprintable():
            raise _Invalid(f"{what} model must be a short printable identifier")
    crop = data.get("face_crop_jpeg")
    face_crop = None if crop is None else _checked_crop(_base64(crop, f"{what} face_crop_jpeg"))
    return NewSample(
        embedding=embedding,
        image_sha256=digest,
        face_crop=face_crop,
        model=model,
        created_utc=_utc(data.get("created_utc"), f"{what} created_utc"),
        mirror=mirror,
    )


def _embedding_from_export(value: object, what: str) -> np.ndarray:
    blob = _base64(value, what)
    if len(blob) != EMBEDDING_BYTES:
        raise _Invalid(f"{what} has {len(blob)} bytes, expected {EMBEDDING_BYTES}")
    embedding = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    try:
        _encode(embedding)  # finite, unit length
    except GalleryError as error:
        raise _Invalid(f"{what}: {error}") from None
    return embedding


def _checked_crop(data: bytes) -> bytes:
    """A face crop must be what enrol stores: a small JPEG that decodes completely."""
    from edge_app.images import ImageError, decode_image, read_header  # here: it loads cv2

    if len(data) > MAX_CROP_BYTES:
        raise _Invalid(f"face_crop_jpeg is {len(data)} bytes, more than {MAX_CROP_BYTES}")
    header = read_header(data)
    if header is not None and header.format != "JPEG":
        raise _Invalid(f"face_crop_jpeg is a {header.format} image, not a JPEG")
    try:
        decode_image(data, "face_crop_jpeg")  # a damaged or crafted header: refused, why
    except ImageError as error:
        raise _Invalid(str(error)) from None
    return data


class ExportTooLarge(GalleryError):
    """An export that grew past the limit CountedWriter was given (the message is
    unimportable's); the writing stopped there."""


class CountedWriter:
    """A text stream that counts the UTF-8 bytes written through it (an export's size, to
    check against MAX_IMPORT_BYTES: unimportable). With a `limit`, the write that takes the
    size past it raises ExportTooLarge instead of writing: an export no import would read is
    not written out in full (to the gallery's own disk, for the web page) before it is
    refused."""

    def __init__(self, stream: IO[str], limit: int | None = None) -> None:
        self.stream = stream
        self.size = 0
        self.limit = limit

    def write(self, text: str) -> int:
        self.size += len(text.encode("utf-8", "surrogateescape"))
        if self.limit is not None and self.size > self.limit:
            raise ExportTooLarge(unimportable(None))
        return self.stream.write(text)


def unimportable(size: int | None) -> str:
    """Why an export of `size` bytes (None: stopped once past it), more than
    MAX_IMPORT_BYTES, is refused by whoever writes it (`edge-app export`, the web page):
    `edge-app import` would not read it."""
    how_large = "" if size is None else f"{size} bytes, "
    return (
        f"the export is {how_large}more than the {MAX_IMPORT_BYTES} bytes `edge-app import` "
        "reads (docs/GALLERY.md): back up the gallery file itself instead (with the door "
        "stopped, or `sqlite3 gallery.db .backup copy.db`)"
    )


def _too_large(label: str) -> str:
    return f"cannot import {label}: more than the {MAX_IMPORT_BYTES} bytes an export may have"


# How much of an import file is decoded at once (_lines_of), in whole lines.
IMPORT_DECODE_BYTES = 1 << 20


def read_export_file(source: str, progress: bool = False) -> list[ExportedPerson]:
    """read_export() of a file name, or of standard input for "-", at most MAX_IMPORT_BYTES.

    A pipe is fine (`<(ssh door edge-app export -)`), and a named pipe nothing writes to
    reads as empty rather than waiting; a device or a folder is not read
    (edge_app.bounded_read).
    """
    label = "standard input" if source == "-" else source
    try:
        if source == "-":
            data = sys.stdin.buffer.read(MAX_IMPORT_BYTES + 1)
        else:
            # A file too large is refused unread.
            data = read_bounded(source, MAX_IMPORT_BYTES, pipes=True)
    except NotRegularFile as error:
        raise GalleryError(
            f"cannot import {label}: it is a {error.kind}, not a file or a pipe"
        ) from None
    except TooLarge:
        raise GalleryError(_too_large(label)) from None
    except OSError as error:
        raise GalleryError(f"cannot read {label}: {error.strerror or error}") from None
    if len(data) > MAX_IMPORT_BYTES:
        raise GalleryError(_too_large(label))
    return read_export(_lines_of(data, label), progress)


def _lines_of(data: bytes, label: str) -> Iterator[str]:
    """The lines of the file's bytes, decoded IMPORT_DECODE_BYTES (whole lines) at a time as
    they are read. Decoded whole, the file was a second copy of one to four bytes a
    character, four for all of it once a single character needs them (an emoji in a name:
    736 MB at the peak for a 127 MB file). A newline byte is never part of another UTF-8
    character, so the pieces decode as the whole would."""
    start = 0
    while start < len(data):
        stop = data.find(b"\n", min(start + IMPORT_DECODE_BYTES, len(data)) - 1)
        stop = len(data) if stop < 0 else stop + 1
        try:
            text = data[start:stop].decode("utf-8")
        except UnicodeDecodeError as error:
            raise GalleryError(f"cannot import {label}: not UTF-8 text ({error.reason})") from None
        at = 0
        while at < len(text):
            end = text.find("\n", at)
            end = len(text) if end < 0 else end + 1
            yield text[at:end]
            at = end
        start = stop
