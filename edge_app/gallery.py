"""The gallery: who may open the door, as FaceNet embeddings in one SQLite file.

SQLite because the daemon reads while `edge-app enroll` writes: WAL mode lets one writer and
any number of readers work at once, each reader on a consistent snapshot, and every change is
one transaction, so a reader never sees half an enrolment. The file holds biometric templates,
so it is created 0600 and its permissions are repaired when found wider.

Schema changes go through MIGRATIONS and `PRAGMA user_version`: entry i takes the file from
version i to i + 1, so any older gallery opens under the newest code. The daemon's events live
in a database of their own (edge_app.events), so the gallery stays templates only.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import sqlite3
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np

from edge_app.errors import UserError

log = logging.getLogger(__name__)

T = TypeVar("T")

EMBEDDING_DIM = 512
EMBEDDING_BYTES = EMBEDDING_DIM * 4  # little-endian float32
FILE_MODE = 0o600
BUSY_TIMEOUT_MS = 5000
MAX_NAME_LENGTH = 100

EXPORT_FORMAT = "edge-app-gallery"
EXPORT_VERSION = 1

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
MIGRATIONS: tuple[tuple[str, ...], ...] = (SCHEMA_V1, SCHEMA_V2)
SCHEMA_VERSION = len(MIGRATIONS)


class GalleryError(UserError):
    """The gallery file cannot be used as asked (missing, not a gallery, name conflicts...)."""


def default_path() -> Path:
    """Where `--db` points when not given: the config file's gallery.path, so `enroll` and
    the daemon agree without repeating the path (DEFAULT_GALLERY when there is no config)."""
    from edge_app.config import load_config  # noqa: PLC0415  (config imports this module's peers)

    return Path(load_config(None).gallery.path)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_name(name: str) -> str:
    """A person's name as stored: trimmed, printable, bounded (it ends up in logs and JSON)."""
    cleaned = name.strip()
    if not cleaned:
        raise GalleryError("the name is empty")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise GalleryError(f"the name is longer than {MAX_NAME_LENGTH} characters")
    if not cleaned.isprintable():
        raise GalleryError(f"the name {cleaned!r} contains control characters")
    return cleaned


@dataclass(frozen=True)
class NewSample:
    """One embedding about to be stored, with where it came from.

    embedding: (512,) float32, L2-normalised. face_crop: JPEG bytes, only when the user opted in.
    model: the embedding model's identity (its file sha256 from the models manifest).
    """

    embedding: np.ndarray
    image_sha256: str
    face_crop: bytes | None = None
    model: str | None = None
    created_utc: str | None = None


@dataclass(frozen=True)
class PersonInfo:
    name: str
    samples: int
    crops: int
    created_utc: str
    last_sample_utc: str | None


@dataclass(frozen=True)
class GalleryMatrix:
    """Every sample as one matrix, rows grouped by person, for matching in one product.

    embeddings: (M, 512) float32; person: (M,) int32 index into names, non-decreasing, so each
    person's rows are contiguous and start at `starts[p]`. Only people with samples appear.
    """

    embeddings: np.ndarray
    person: np.ndarray
    names: tuple[str, ...]

    @property
    def starts(self) -> np.ndarray:
        return np.searchsorted(self.person, np.arange(len(self.names))).astype(np.intp)

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.person, minlength=len(self.names))

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])


@dataclass(frozen=True)
class ExportedPerson:
    """One person read back from an export file (see read_export)."""

    name: str
    created_utc: str
    samples: list[NewSample]


@dataclass
class ImportSummary:
    added_people: list[str] = field(default_factory=list)
    replaced_people: list[str] = field(default_factory=list)
    merged_people: list[str] = field(default_factory=list)
    samples_added: int = 0
    samples_skipped: int = 0


def _ensure_private_file(path: Path, create: bool) -> None:
    """Create the file 0600 before SQLite sees it, and narrow the mode of an existing one.

    SQLite gives its -wal and -shm files the main file's mode, so fixing this one covers them;
    leftovers from an older, wider file are narrowed too.
    """
    if create:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE))
        except OSError as error:
            raise GalleryError(
                f"cannot create the gallery {path}: {error.strerror or error}; "
                "pass --db with a writable location"
            ) from None
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            mode = stat.S_IMODE(candidate.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            try:
                os.chmod(candidate, FILE_MODE)
            except OSError as error:
                log.warning(
                    "gallery file %s is mode %o and cannot be narrowed: %s", candidate, mode, error
                )
            else:
                log.warning("gallery file %s was mode %o; set to 600", candidate, mode)


def _encode(embedding: np.ndarray) -> bytes:
    vector = np.asarray(embedding, dtype="<f4").reshape(-1)
    if vector.shape[0] != EMBEDDING_DIM or not np.all(np.isfinite(vector)):
        raise GalleryError(f"an embedding must be {EMBEDDING_DIM} finite numbers")
    return vector.tobytes()


class Gallery:
    """One open connection to a gallery file. Not shared between threads."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection

    @classmethod
    def open(cls, path: Path | str, *, create: bool = False) -> Gallery:
        """Open (and migrate) a gallery; with create=True a missing file becomes an empty one."""
        path = Path(path)
        if not create and not path.is_file():
            raise GalleryError(
                f"no gallery at {path}: enrol someone first with `edge-app enroll`, "
                "or pass --db PATH"
            )
        _ensure_private_file(path, create)
        try:
            connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as error:
            raise GalleryError(f"cannot open the gallery {path}: {error}") from None
        gallery = cls(path, connection)
        try:
            gallery._configure()
            gallery._migrate()
        except sqlite3.DatabaseError as error:
            connection.close()
            raise GalleryError(f"{path} is not a usable gallery: {error}") from None
        except BaseException:
            connection.close()
            raise
        return gallery

    def _configure(self) -> None:
        self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise GalleryError(f"{self.path}: SQLite refused WAL mode (got {mode})")
        # Enrolments are rare and precious: FULL survives a power cut mid-commit.
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("PRAGMA foreign_keys = ON")

    def _migrate(self) -> None:
        version = self.schema_version
        if version > SCHEMA_VERSION:
            raise GalleryError(
                f"{self.path} has schema version {version}, newer than this edge-app "
                f"({SCHEMA_VERSION}): upgrade edge-app"
            )
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
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap "reload the gallery?" check."""
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

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
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as error:
            raise GalleryError(f"cannot write the gallery {self.path}: {error}") from None

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """Several reads seeing the same committed state, while a writer carries on in WAL."""
        self._db.execute("BEGIN")
        try:
            yield self._db
        finally:
            self._db.execute("COMMIT")

    # --- reading -------------------------------------------------------------------------

    def has(self, name: str) -> bool:
        row = self._db.execute("SELECT 1 FROM people WHERE name = ?", (name,)).fetchone()
        return row is not None

    def people(self) -> list[PersonInfo]:
        rows = self._db.execute(
            """SELECT p.name, count(s.id), count(s.face_crop), p.created_utc, max(s.created_utc)
               FROM people p LEFT JOIN samples s ON s.person_id = p.id
               GROUP BY p.id ORDER BY p.name"""
        ).fetchall()
        return [PersonInfo(*row) for row in rows]

    def embeddings(self, name: str) -> np.ndarray:
        """One person's samples, (K, 512); K = 0 for an unknown name."""
        rows = self._db.execute(
            """SELECT s.embedding FROM samples s JOIN people p ON p.id = s.person_id
               WHERE p.name = ? ORDER BY s.id""",
            (name,),
        ).fetchall()
        return _blobs_to_matrix([row[0] for row in rows])

    def models(self) -> set[str | None]:
        """The embedding models the samples came from (None: enrolled before this was recorded)."""
        return {row[0] for row in self._db.execute("SELECT DISTINCT model FROM samples")}

    def load_matrix(self) -> GalleryMatrix:
        with self._snapshot() as db:
            names = db.execute(
                """SELECT p.name FROM people p
                   WHERE EXISTS (SELECT 1 FROM samples s WHERE s.person_id = p.id)
                   ORDER BY p.id"""
            ).fetchall()
            rows = db.execute(
                "SELECT person_id, embedding FROM samples ORDER BY person_id, id"
            ).fetchall()
        embeddings = _blobs_to_matrix([row[1] for row in rows])
        ids = np.fromiter((row[0] for row in rows), np.int64, count=len(rows))
        # Person ids are sorted, so the inverse of unique is already the grouped row index.
        _, person = np.unique(ids, return_inverse=True)
        return GalleryMatrix(embeddings, person.astype(np.int32), tuple(row[0] for row in names))

    # --- writing -------------------------------------------------------------------------

    def enroll(self, name: str, samples: Sequence[NewSample], *, add: bool = False) -> int:
        """Store a person's new samples in one transaction; returns their sample count after.

        add=False enrols a new person and refuses an existing name; add=True extends an
        existing person and refuses an unknown one (a typo should not create a stranger).
        """
        name = check_name(name)
        if not samples:
            raise GalleryError(f"no samples to enrol for {name!r}")
        with self.transaction() as db:
            row = db.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
            if row is None and add:
                raise GalleryError(f"nobody named {name!r} is enrolled; drop --add to enrol them")
            if row is not None and not add:
                raise GalleryError(f"{name!r} is already enrolled; use --add to add photos to them")
            person_id = row[0] if row else self._insert_person(name)
            self._insert_samples(person_id, samples)
            return int(
                db.execute(
                    "SELECT count(*) FROM samples WHERE person_id = ?", (person_id,)
                ).fetchone()[0]
            )

    def _insert_person(self, name: str, created_utc: str | None = None) -> int:
        cursor = self._db.execute(
            "INSERT INTO people (name, created_utc) VALUES (?, ?)", (name, created_utc or utc_now())
        )
        return int(cursor.lastrowid)

    def _insert_samples(self, person_id: int, samples: Sequence[NewSample]) -> None:
        now = utc_now()
        self._db.executemany(
            """INSERT INTO samples
               (person_id, embedding, image_sha256, created_utc, face_crop, model)
               VALUES (?, ?, ?, ?, ?, ?)""",
            [
                (
                    person_id,
                    _encode(s.embedding),
                    s.image_sha256,
                    s.created_utc or now,
                    s.face_crop,
                    s.model,
                )
                for s in samples
            ],
        )

    def remove(self, names: Sequence[str]) -> int:
        """Remove people and all their samples; all or none. Returns the samples removed."""
        with self.transaction() as db:
            missing = [name for name in names if not self.has(name)]
            if missing:
                raise GalleryError(f"not enrolled: {', '.join(map(repr, missing))}")
            removed = 0
            for name in names:
                removed += db.execute(
                    "DELETE FROM samples WHERE person_id = (SELECT id FROM people WHERE name = ?)",
                    (name,),
                ).rowcount
                db.execute("DELETE FROM people WHERE name = ?", (name,))
        return removed

    def rename(self, old: str, new: str) -> None:
        new = check_name(new)
        with self.transaction() as db:
            if not self.has(old):
                raise GalleryError(f"not enrolled: {old!r}")
            if self.has(new):
                raise GalleryError(f"{new!r} is already enrolled; remove or rename them first")
            db.execute("UPDATE people SET name = ? WHERE name = ?", (new, old))

    # --- moving a gallery to another door (format: docs/GALLERY.md) ----------------------

    def export(self, out: IO[str]) -> tuple[int, int]:
        """Write the whole gallery as JSON lines; returns (people, samples) written."""
        with self._snapshot() as db:
            people = db.execute("SELECT id, name, created_utc FROM people ORDER BY name").fetchall()
            samples: dict[int, list[dict[str, Any]]] = {pid: [] for pid, _, _ in people}
            for person_id, blob, digest, created, crop, model in db.execute(
                """SELECT person_id, embedding, image_sha256, created_utc, face_crop, model
                   FROM samples ORDER BY id"""
            ):
                sample = {
                    "embedding": base64.b64encode(blob).decode("ascii"),
                    "image_sha256": digest,
                    "created_utc": created,
                    "model": model,
                }
                if crop is not None:
                    sample["face_crop_jpeg"] = base64.b64encode(crop).decode("ascii")
                samples[person_id].append(sample)
        total = sum(len(v) for v in samples.values())
        header = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "exported_utc": utc_now(),
            "embedding_dim": EMBEDDING_DIM,
            "embedding_dtype": "float32-le",
            "people": len(people),
            "samples": total,
        }
        out.write(json.dumps(header) + "\n")
        for person_id, name, created in people:
            record = {"name": name, "created_utc": created, "samples": samples[person_id]}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        return len(people), total

    def import_(
        self, people: Sequence[ExportedPerson], *, on_conflict: str = "refuse"
    ) -> ImportSummary:
        """Add people read by read_export(), in one transaction.

        on_conflict: "refuse" (default) fails when a name exists here too, naming them all;
        "replace" swaps such a person's samples for the imported ones; "merge" adds the
        imported samples whose photo (image_sha256) that person does not have yet.
        """
        if on_conflict not in ("refuse", "replace", "merge"):
            raise ValueError(f"on_conflict must be refuse, replace or merge, not {on_conflict!r}")
        summary = ImportSummary()
        with self.transaction() as db:
            existing = dict(db.execute("SELECT name, id FROM people").fetchall())
            conflicts = sorted(existing.keys() & {person.name for person in people})
            if conflicts and on_conflict == "refuse":
                raise GalleryError(
                    "already enrolled here: "
                    + ", ".join(map(repr, conflicts))
                    + "; pass --replace to overwrite them or --merge to add their samples"
                )
            for person in people:
                name, new_samples = person.name, person.samples
                kept = new_samples
                if name not in existing:
                    person_id = self._insert_person(name, person.created_utc)
                    summary.added_people.append(name)
                elif on_conflict == "replace":
                    person_id = existing[name]
                    db.execute("DELETE FROM samples WHERE person_id = ?", (person_id,))
                    summary.replaced_people.append(name)
                else:
                    person_id = existing[name]
                    have = {
                        digest
                        for (digest,) in db.execute(
                            "SELECT image_sha256 FROM samples WHERE person_id = ?", (person_id,)
                        )
                    }
                    kept = [s for s in new_samples if s.image_sha256 not in have]
                    summary.merged_people.append(name)
                self._insert_samples(person_id, kept)
                summary.samples_added += len(kept)
                summary.samples_skipped += len(new_samples) - len(kept)
        return summary


def _blobs_to_matrix(blobs: Sequence[bytes]) -> np.ndarray:
    data = b"".join(blobs)
    if len(data) != len(blobs) * EMBEDDING_BYTES:
        raise GalleryError("the gallery holds embeddings of the wrong size: it is damaged")
    return np.frombuffer(data, dtype="<f4").astype(np.float32).reshape(len(blobs), EMBEDDING_DIM)


def _export_error(line: int, what: str) -> GalleryError:
    return GalleryError(f"not a valid gallery export (line {line}): {what}")


def read_export(source: IO[str]) -> list[ExportedPerson]:
    """Parse and check a whole export file, so that nothing is written from a bad one."""
    lines = iter(source)
    try:
        header = json.loads(next(lines))
    except StopIteration:
        raise _export_error(1, "the file is empty") from None
    except json.JSONDecodeError as error:
        raise _export_error(1, f"not JSON ({error.msg})") from None
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise _export_error(1, f"no {EXPORT_FORMAT!r} header")
    if header.get("version") != EXPORT_VERSION:
        raise _export_error(
            1, f"version {header.get('version')!r}; this edge-app reads {EXPORT_VERSION}"
        )
    if header.get("embedding_dim") != EMBEDDING_DIM:
        raise _export_error(
            1, f"embedding_dim {header.get('embedding_dim')!r}, expected {EMBEDDING_DIM}"
        )
    people: dict[str, ExportedPerson] = {}
    count = 0
    for number, text in enumerate(lines, start=2):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
            name = check_name(record["name"])
            created = str(record.get("created_utc") or utc_now())
            samples = [_sample_from_export(s) for s in record["samples"]]
        except json.JSONDecodeError as error:
            raise _export_error(number, f"not JSON ({error.msg})") from None
        except (KeyError, TypeError, ValueError, binascii.Error, GalleryError) as error:
            raise _export_error(number, f"bad person record ({error})") from None
        if not samples:
            raise _export_error(number, f"{name!r} has no samples")
        if name in people:
            raise _export_error(number, f"{name!r} appears twice")
        people[name] = ExportedPerson(name, created, samples)
        count += len(samples)
    if len(people) != header.get("people") or count != header.get("samples"):
        raise _export_error(
            1,
            f"header announces {header.get('people')} people / {header.get('samples')} samples, "
            f"the file has {len(people)} / {count}: it is truncated or edited",
        )
    return list(people.values())


def _sample_from_export(data: dict[str, Any]) -> NewSample:
    blob = base64.b64decode(data["embedding"], validate=True)
    if len(blob) != EMBEDDING_BYTES:
        raise ValueError(f"an embedding of {len(blob)} bytes, expected {EMBEDDING_BYTES}")
    crop = data.get("face_crop_jpeg")
    return NewSample(
        embedding=np.frombuffer(blob, dtype="<f4").astype(np.float32),
        image_sha256=str(data["image_sha256"]),
        face_crop=None if crop is None else base64.b64decode(crop, validate=True),
        model=data.get("model"),
        created_utc=str(data["created_utc"]),
    )


def write_private_text(path: Path, text_writer: Callable[[IO[str]], T]) -> T:
    """Write a file atomically with mode 0600 (an export holds biometric templates).

    text_writer(handle) writes the content; the file appears under its name only when complete,
    so a failed export never leaves a half file that a later import would trust.
    """
    path = Path(path)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            result = text_writer(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return result
