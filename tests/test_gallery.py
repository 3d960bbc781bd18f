"""The SQLite gallery on real files: permissions, WAL, migration, concurrency, export/import."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

import cv2
import numpy as np
import pytest
from needs import unavailable
from peaks import traced_peak
from people import mirrors_of, samples, several_people, unit_vectors

import edge_app.gallery as gallery_module
from edge_app.gallery import (
    EMBEDDING_DIM,
    SCHEMA_V1,
    SCHEMA_VERSION,
    ExportedPerson,
    Gallery,
    GalleryError,
    GalleryMatrix,
    NewSample,
    read_export,
)
from edge_app.private_file import write_private_text

# A real JPEG, as `--keep-crops` stores: imports check that crops decode.
CROP = cv2.imencode(".jpg", np.full((48, 40, 3), (30, 90, 200), np.uint8))[1].tobytes()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "gallery.db"
    with Gallery.open(path, create=True) as gallery:
        gallery.enroll("Alice", samples(3, 1))
        gallery.enroll("Bob", samples(2, 2))
    return path


def test_new_gallery_is_private_wal_and_current(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "gallery.db"
    with Gallery.open(path, create=True) as gallery:
        gallery.enroll("Alice", samples(1, 1))
        assert mode_of(path) == 0o600
        # SQLite gives the WAL side files the main file's mode.
        assert mode_of(Path(f"{path}-wal")) == 0o600
        assert mode_of(Path(f"{path}-shm")) == 0o600
        assert gallery.schema_version == SCHEMA_VERSION
    assert mode_of(path.parent) == 0o700
    other = sqlite3.connect(path)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert other.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    other.close()


def test_wide_permissions_are_narrowed(db: Path) -> None:
    db.chmod(0o644)
    Gallery.open(db).close()
    assert mode_of(db) == 0o600


def test_a_wide_gallery_and_every_side_file_beside_it_are_narrowed(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The gallery narrowed its -wal and -shm, not a -journal beside it (a rollback journal an
    older copy or the sqlite3 shell left): it kept the faces readable to anyone. The gallery
    and the events database now narrow alike (sqlite_access.narrow_to_private)."""
    with closing(sqlite3.connect(db)) as holder:  # a reader keeps the -wal and -shm there
        holder.execute("SELECT count(*) FROM people").fetchone()
        journal = Path(f"{db}-journal")
        journal.touch()  # empty: SQLite replays nothing from it
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), journal]
        for path in files:
            path.chmod(0o644)
        with caplog.at_level(logging.WARNING, logger="edge_app.gallery"):
            Gallery.open(db).close()
        assert {path.name: mode_of(path) for path in files} == {path.name: 0o600 for path in files}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4 and all("was mode 644" in w for w in warnings), warnings


def test_root_narrows_the_door_users_wide_gallery_as_the_events_database(db: Path) -> None:
    """Root may use the door user's gallery (read-only to others); its events database root
    narrowed, the gallery it left readable to anyone. Its owner keeps it."""
    if os.geteuid() != 0:  # CI runs as root: there a missing precondition fails
        unavailable("giving the gallery to another user needs root")
    os.chown(db, 65534, 65534)
    db.chmod(0o644)
    with Gallery.open(db) as gallery:
        assert gallery.has("Alice")
    assert mode_of(db) == 0o600 and db.stat().st_uid == 65534


def test_missing_gallery_is_not_created_without_create(tmp_path: Path) -> None:
    path = tmp_path / "gallery.db"
    with pytest.raises(GalleryError, match="no gallery at"):
        Gallery.open(path)
    assert not path.exists()


def test_a_non_gallery_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not a database at all" * 100)
    path.chmod(0o644)
    before = file_digest(path)
    with pytest.raises(GalleryError, match="not an SQLite database, so not an edge-app gallery"):
        Gallery.open(path)
    assert file_digest(path) == before
    assert mode_of(path) == 0o644  # not ours: not even its mode changes


def test_newer_schema_is_refused(db: Path) -> None:
    connection = sqlite3.connect(db)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(GalleryError, match="newer than this edge-app"):
        Gallery.open(db)


def test_migration_from_the_first_schema(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    connection = sqlite3.connect(path)
    for statement in SCHEMA_V1:
        connection.execute(statement)
    vectors = unit_vectors(3, 7)
    connection.execute("INSERT INTO people VALUES (1, 'Carol', '2024-01-02T03:04:05Z')")
    connection.executemany(
        "INSERT INTO samples (person_id, embedding, image_sha256, created_utc) VALUES (1, ?, ?, ?)",
        [
            (v.astype("<f4").tobytes(), f"sha{i}", "2024-01-02T03:04:05Z")
            for i, v in enumerate(vectors)
        ],
    )
    connection.execute("PRAGMA user_version = 1")
    connection.commit()
    connection.close()

    with Gallery.open(path) as gallery:
        assert gallery.schema_version == SCHEMA_VERSION
        matrix = gallery.load_matrix()
        np.testing.assert_array_equal(matrix.embeddings, vectors)
        assert matrix.names == ("Carol",)
        assert gallery.models() == {None}
        [carol] = gallery.people()
        assert (carol.samples, carol.crops, carol.created_utc) == (3, 0, "2024-01-02T03:04:05Z")
        # The v2 columns work on the migrated file.
        gallery.enroll("Carol", samples(1, 8, crop=b"jpeg"), add=True)
        assert gallery.models() == {None, "model-a"}
        assert gallery.people()[0].crops == 1
    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(samples)")}
    assert {"face_crop", "model"} <= columns


def test_a_name_not_enrolled_is_refused_with_the_enrolled_name_it_may_be_a_typo_of(
    db: Path,
) -> None:
    """A typo of an enrolled name says whom it may have meant; another name suggests nobody.
    Nothing changes either way."""
    before = file_digest(db)
    with Gallery.open(db) as gallery:
        gallery.rename("Alice", "Alice Martin")
        after_rename = file_digest(db)
        refusals = {
            "remove": lambda: gallery.remove(["Zed", "alice martn"]),
            "access": lambda: gallery.set_access("Alice Martim", False),
            "rename": lambda: gallery.rename("Alce Martin", "Carol"),
            "add": lambda: gallery.enroll("Alice Marti", samples(1, 3), add=True),
        }
        messages = {}
        for what, refused in refusals.items():
            with pytest.raises(GalleryError) as error:
                refused()
            messages[what] = str(error.value)
        assert (
            messages["remove"]
            == "not enrolled: 'Zed', 'alice martn' (did you mean 'Alice Martin'?)"
        )
        assert messages["access"] == "not enrolled: 'Alice Martim' (did you mean 'Alice Martin'?)"
        assert messages["rename"] == "not enrolled: 'Alce Martin' (did you mean 'Alice Martin'?)"
        assert messages["add"] == (
            "nobody named 'Alice Marti' is enrolled (did you mean 'Alice Martin'?); "
            "drop --add to enrol them"
        )
        assert [p.name for p in gallery.people()] == ["Alice Martin", "Bob"]
    assert file_digest(db) == after_rename != before


def test_enrol_add_and_refusals(db: Path) -> None:
    before = file_digest(db)
    with Gallery.open(db) as gallery:
        with pytest.raises(GalleryError, match="already enrolled; use --add"):
            gallery.enroll("Alice", samples(1, 3))
        with pytest.raises(GalleryError, match="nobody named 'Carol'"):
            gallery.enroll("Carol", samples(1, 3), add=True)
        with pytest.raises(GalleryError, match="empty"):
            gallery.enroll("  ", samples(1, 3))
        with pytest.raises(GalleryError, match="embedding must be 512"):
            gallery.enroll("Dan", [NewSample(np.zeros(128, np.float32), "x")])
    assert file_digest(db) == before
    with Gallery.open(db) as gallery:
        assert not gallery.has("Dan")
        assert gallery.enroll("Alice", samples(2, 4), add=True) == 5
        assert [(p.name, p.samples) for p in gallery.people()] == [("Alice", 5), ("Bob", 2)]


def test_load_matrix_groups_rows_by_person(db: Path) -> None:
    with Gallery.open(db) as gallery:
        gallery.enroll("Alice", samples(1, 5), add=True)  # Alice's rows are not contiguous by id
        matrix = gallery.load_matrix()
    assert matrix.names == ("Alice", "Bob")
    assert matrix.embeddings.shape == (6, EMBEDDING_DIM) and matrix.embeddings.dtype == np.float32
    np.testing.assert_array_equal(matrix.person, [0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(matrix.starts, [0, 4])
    np.testing.assert_array_equal(matrix.counts, [4, 2])
    expected = np.vstack([unit_vectors(3, 1), unit_vectors(1, 5), unit_vectors(2, 2)])
    np.testing.assert_array_equal(matrix.embeddings, expected)


def test_people_are_followed_by_their_templates_not_their_names(db: Path) -> None:
    """GalleryMatrix.same_people_in: the door carries a renamed person's visit over (policy)
    and never takes whoever now has a name for whom it named."""
    with Gallery.open(db) as gallery:
        gallery.enroll("Carol", samples(2, 7))
        before = gallery.load_matrix()
        gallery.rename("Alice", "Alicia")
        gallery.remove(["Carol"])
        gallery.enroll("Dan", samples(2, 8))  # new, with other templates: not Carol renamed
        assert before.same_people_in(gallery.load_matrix()) == {"Alice": "Alicia", "Bob": "Bob"}
        swapped = gallery.load_matrix()
        gallery.rename("Alicia", "tmp")
        gallery.rename("Bob", "Alicia")
        gallery.rename("tmp", "Bob")
        after = gallery.load_matrix()
        assert swapped.same_people_in(after) == {"Alicia": "Bob", "Bob": "Alicia", "Dan": "Dan"}
        gallery.rename("Bob", "Bobby")
        gallery.enroll("Bobby", samples(1, 9), add=True)  # a photo added: still the same
        gallery.remove(["Dan"])
        gallery.enroll("Dan", samples(2, 10))  # the name given to new photos: not Dan
        assert after.same_people_in(gallery.load_matrix()) == {"Bob": "Bobby", "Alicia": "Alicia"}
    # Two people with the same templates (an import can make them): neither is followed.
    twins = GalleryMatrix(
        np.vstack([unit_vectors(1, 5), unit_vectors(1, 5)]), np.array([0, 1], np.int32), ("A", "B")
    )
    later = GalleryMatrix(unit_vectors(1, 5), np.array([0], np.int32), ("C",))
    assert twins.same_people_in(later) == {}
    assert later.same_people_in(twins) == {}
    empty = GalleryMatrix(np.zeros((0, EMBEDDING_DIM), np.float32), np.zeros(0, np.int32), ())
    assert empty.same_people_in(later) == {} and later.same_people_in(empty) == {}
    # whole: only people who keep every template (a photo added is fine, one removed is not).
    two = GalleryMatrix(unit_vectors(3, 20), np.array([0, 0, 1], np.int32), ("Ann", "Bea"))
    fewer = GalleryMatrix(unit_vectors(3, 20)[1:], np.array([0, 1], np.int32), ("Ann", "Bea"))
    more = GalleryMatrix(unit_vectors(4, 20), np.array([0, 0, 1, 1], np.int32), ("Ann", "Bea"))
    assert two.same_people_in(fewer) == {"Ann": "Ann", "Bea": "Bea"}
    assert two.same_people_in(fewer, whole=True) == {"Bea": "Bea"}
    assert two.same_people_in(more, whole=True) == {"Ann": "Ann", "Bea": "Bea"}
    # touched_in: anyone with a template still held by someone, whoever it went to.
    moved = GalleryMatrix(unit_vectors(3, 20), np.array([0, 1, 2], np.int32), ("Ann", "Bea", "Cy"))
    assert two.same_people_in(moved) == {"Bea": "Cy"}  # Ann's two photos went two ways
    assert two.touched_in(moved) == {"Ann", "Bea"}
    other = GalleryMatrix(unit_vectors(1, 21), np.array([0], np.int32), ("D",))
    assert two.touched_in(other) == set()


def test_a_change_of_names_alone_is_told_apart(db: Path) -> None:
    """GalleryMatrix.only_renamed_in: the door keeps the votes through such a change."""
    with Gallery.open(db) as gallery:
        before = gallery.load_matrix()
        assert not before.only_renamed_in(gallery.load_matrix())  # no change at all
        gallery.rename("Alice", "Alicia")
        renamed = gallery.load_matrix()
        assert before.only_renamed_in(renamed)
        gallery.set_access("Alicia", False)
        assert not renamed.only_renamed_in(gallery.load_matrix())  # access too
        gallery.set_access("Alicia", True)
        gallery.enroll("Bob", samples(1, 8), add=True)
        assert not renamed.only_renamed_in(gallery.load_matrix())  # templates too


def test_remove_and_rename(db: Path) -> None:
    with Gallery.open(db) as gallery:
        with pytest.raises(GalleryError, match="not enrolled: 'Zed'"):
            gallery.remove(["Alice", "Zed"])
        assert gallery.has("Alice")  # all or nothing
        with pytest.raises(GalleryError, match="'Bob' is already enrolled"):
            gallery.rename("Alice", "Bob")
        gallery.rename("Alice", "Alicia")
        assert gallery.remove(["Bob"]) == 2
        assert [p.name for p in gallery.people()] == ["Alicia"]
        count = gallery._db.execute("SELECT count(*) FROM samples").fetchone()[0]
        assert count == 3  # Bob's samples went with him


def test_data_version_tells_a_reader_to_reload(db: Path) -> None:
    with Gallery.open(db) as reader:
        first = reader.data_version()
        assert reader.data_version() == first
        with Gallery.open(db) as writer:
            writer.enroll("Carol", samples(1, 9))
        assert reader.data_version() != first
        assert "Carol" in reader.load_matrix().names


READER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import numpy as np
    from edge_app.gallery import Gallery
    path, ready, stop = map(Path, sys.argv[1:4])
    reads, sizes, partial = 0, set(), []
    with Gallery.open(path) as gallery:
        deadline = time.monotonic() + 30
        while not stop.exists() and time.monotonic() < deadline:
            matrix = gallery.load_matrix()
            counts = matrix.counts
            if np.any(counts != 3):
                partial.append(counts.tolist())
            sizes.add(len(matrix.names))
            reads += 1
            ready.touch()
    print(json.dumps({"reads": reads, "sizes": sorted(sizes), "partial": partial}))
    """
)


def test_concurrent_reader_never_sees_half_an_enrolment(tmp_path: Path) -> None:
    path = tmp_path / "gallery.db"
    with Gallery.open(path, create=True) as gallery:
        gallery.enroll("person-0", samples(3, 0))
    ready, stop = tmp_path / "ready", tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(path), str(ready), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert reader.poll() is None, "the reader process died"
            assert time.monotonic() < deadline, "the reader never started"
            time.sleep(0.01)
        with Gallery.open(path) as gallery:
            for person in range(1, 41):
                gallery.enroll(f"person-{person}", samples(3, person))
                time.sleep(0.005)
    finally:
        stop.touch()
        output, _ = reader.communicate(timeout=30)
    assert reader.returncode == 0
    result = json.loads(output)
    assert result["partial"] == []
    assert result["reads"] > 10
    # The reader saw the gallery grow while it read, not only before and after.
    assert len(result["sizes"]) > 2
    assert max(result["sizes"]) <= 41


def test_export_import_round_trip(db: Path, tmp_path: Path) -> None:
    with Gallery.open(db) as gallery:
        gallery.enroll("Carol", samples(2, 3, crop=CROP))
        original = gallery.load_matrix()
        people = gallery.people()
    export = tmp_path / "export.jsonl"
    with Gallery.open(db) as gallery:
        assert write_private_text(export, gallery.export) == (3, 7)
    assert mode_of(export) == 0o600
    header = json.loads(export.read_text().splitlines()[0])
    assert header["format"] == "edge-app-gallery" and header["samples"] == 7

    second = tmp_path / "door2.db"
    with Gallery.open(second, create=True) as gallery, export.open() as source:
        summary = gallery.import_(read_export(source))
        assert summary.added_people == ["Alice", "Bob", "Carol"]
        assert summary.samples_added == 7
        copied = gallery.load_matrix()
        assert gallery.people() == people
        crops = gallery._db.execute("SELECT face_crop FROM samples WHERE face_crop IS NOT NULL")
        assert [row[0] for row in crops] == [CROP] * 2
    order = np.argsort(original.names)
    assert copied.names == tuple(np.array(original.names)[order])
    for name in original.names:
        mine = original.embeddings[original.person == original.names.index(name)]
        theirs = copied.embeddings[copied.person == copied.names.index(name)]
        np.testing.assert_array_equal(mine, theirs)


class Terminal(io.StringIO):
    """Standard error as a terminal 100 columns wide, which tqdm draws its bars on."""

    def isatty(self) -> bool:
        return True


def test_an_import_shows_its_progress_on_a_terminal_and_nothing_elsewhere(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Gallery.open(db) as gallery:
        text = io.StringIO()
        gallery.export(text)
    monkeypatch.setenv("COLUMNS", "100")
    for terminal, progress in ((True, True), (False, True), (True, False)):
        screen = Terminal() if terminal else io.StringIO()
        monkeypatch.setattr(sys, "stderr", screen)
        people = read_export(io.StringIO(text.getvalue()), progress=progress)
        target = tmp_path / f"{terminal}-{progress}.db"
        with Gallery.open(target, create=True) as gallery:
            assert gallery.import_(people, progress=progress).samples_added == 5
        shown = screen.getvalue()
        if terminal and progress:
            for phase, total in (("reading", 2), ("checking faces", 5), ("writing", 2)):
                assert re.search(rf"{phase}: 100%.* {total}/{total} \[", shown), (phase, shown)
        else:
            assert shown == ""


def test_an_import_file_is_never_decoded_whole(tmp_path: Path) -> None:
    """Found by an audit: the whole file was decoded before its first line was read, and one
    character of four UTF-8 bytes (an emoji in a name) made Python hold all of it at four
    bytes a character: a 127 MB file refused at its last line peaked at 736 MB. Each line is
    decoded as it is read."""
    from edge_app.gallery import read_export_file

    big = tmp_path / "big.jsonl"
    size = 32 * 2**20
    line = b'{"name": "\xf0\x9f\x98\x80 not an export"}\n'  # an emoji, 4 bytes
    big.write_bytes(line * (size // len(line)))
    refusals: list[str] = []

    def refused() -> None:
        try:
            read_export_file(str(big))
        except GalleryError as error:
            refusals.append(str(error))

    _, peak = traced_peak(refused)
    assert len(refusals) == 1  # not an export, from its first line
    assert peak < 1.5 * size  # the file's bytes, and a line at a time: not 4 bytes a character


def test_import_conflicts_refuse_replace_merge(db: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with Gallery.open(other, create=True) as gallery:
        # One photo in common with this gallery's Alice (samples(3, 1)), and a new one of her.
        gallery.enroll("Alice", samples(3, 1)[:1] + samples(4, 1)[3:])
        gallery.enroll("Eve", samples(1, 12))
    export = tmp_path / "other.jsonl"
    with Gallery.open(other) as gallery:
        write_private_text(export, gallery.export)

    before = file_digest(db)
    with Gallery.open(db) as gallery, export.open() as source:
        with pytest.raises(GalleryError, match="already enrolled here: 'Alice'.*--replace"):
            gallery.import_(read_export(source))
        assert not gallery.has("Eve")
    assert file_digest(db) == before

    with Gallery.open(db) as gallery, export.open() as source:
        summary = gallery.import_(read_export(source), on_conflict="merge")
        assert (summary.merged_people, summary.added_people) == (["Alice"], ["Eve"])
        assert (summary.samples_added, summary.samples_skipped) == (2, 1)
        assert {p.name: p.samples for p in gallery.people()} == {"Alice": 4, "Bob": 2, "Eve": 1}
    with Gallery.open(db) as gallery, export.open() as source:
        summary = gallery.import_(read_export(source), on_conflict="replace")
        assert summary.replaced_people == ["Alice", "Eve"]
        assert {p.name: p.samples for p in gallery.people()} == {"Alice": 2, "Bob": 2, "Eve": 1}


def test_people_whose_samples_look_like_several_people_are_found(db: Path) -> None:
    """Mixed's samples are three people's (cosine about 0), each its own person; Alice's
    and Bob's are one person's each."""
    with Gallery.open(db) as gallery:
        assert gallery.looking_like_several() == []
        mixed = several_people(3, 53)
        photos = [NewSample(v, f"m{i}" * 32, None, "m") for i, v in enumerate(mixed)]
        gallery.enroll("Mixed", photos)
        assert gallery.looking_like_several() == [("Mixed", 3, 3)]
        one = unit_vectors(1, 50)[0]
        close = [one + 0.5 * v for v in unit_vectors(3, 51)]
        gallery.enroll(
            "Carol",
            [NewSample(v / np.linalg.norm(v), f"{i}" * 64, None, "m") for i, v in enumerate(close)],
        )
        gallery.enroll("Dan", samples(1, 52))  # one photo: nothing to compare
        assert [name for name, *_ in gallery.looking_like_several()] == ["Mixed"]


def test_import_replace_takes_a_file_that_swaps_two_faces_back(db: Path, tmp_path: Path) -> None:
    """Defect: the one-face-per-name check compared the import with the samples of the very
    people --replace deletes, so a file that puts two faces enrolled under each other's names
    back in their place was refused. With --merge the old samples stay, so it still is."""
    face_a, face_b = (s.embedding for s in samples(2, 60))
    with Gallery.open(db) as gallery:
        gallery.enroll("Ann", [NewSample(face_b, "1" * 64, None, "m")])
        gallery.enroll("Ben", [NewSample(face_a, "2" * 64, None, "m")])
    fixed = [
        ExportedPerson("Ann", "2024-01-01T00:00:00Z", [NewSample(face_a, "3" * 64, None, "m")]),
        ExportedPerson("Ben", "2024-01-01T00:00:00Z", [NewSample(face_b, "4" * 64, None, "m")]),
    ]
    with Gallery.open(db) as gallery:
        with pytest.raises(GalleryError, match="in the import has the same face as"):
            gallery.import_(fixed, on_conflict="merge")
        summary = gallery.import_(fixed, on_conflict="replace")
        assert summary.replaced_people == ["Ann", "Ben"]
        matrix = gallery.load_matrix()
    for name, face in (("Ann", face_a), ("Ben", face_b)):
        rows = matrix.embeddings[matrix.person == matrix.names.index(name)]
        assert len(rows) == 1 and float(rows[0] @ face) > 0.99, name


def test_reading_the_gallery_takes_little_more_than_the_matrix_it_makes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found measuring a 5,000-person gallery (103 MB of embeddings): reading it peaked at
    723 MB, the rows joined into one bytes object, then a float32 and a float64 copy for
    their norms, at every change the door reads. It is read a few thousand rows at a time:
    the rows SQLite hands over and the matrix, 295 MB there."""
    db = tmp_path / "big.db"
    rng = np.random.default_rng(4)

    def mirrored(face: np.ndarray) -> np.ndarray:
        """The mirror image's embedding: near the photo's own."""
        near = face + 0.2 * rng.normal(size=EMBEDDING_DIM) / np.sqrt(EMBEDDING_DIM)
        return near / np.linalg.norm(near)

    people = [
        ExportedPerson(
            f"Person {n:03}",
            "2024-01-01T00:00:00Z",
            [
                NewSample(face, f"{n:032x}{k:032x}", mirror=mirrored(face))
                for k, face in enumerate(unit_vectors(5, n))
            ],
        )
        for n in range(300)
    ]
    with Gallery.open(db, create=True) as gallery:
        gallery.import_(people)
    # Read 500 rows at a time here, as 50,000 rows (5,000 people) are SUM_ROWS at a time.
    monkeypatch.setattr(gallery_module, "SUM_ROWS", 500)
    with Gallery.open(db) as gallery:
        matrix, peak = traced_peak(gallery.load_matrix)
    assert len(matrix) == 3000
    assert peak < 3.5 * matrix.embeddings.nbytes  # 7 times before; about 2.6 now


@pytest.mark.parametrize("tile", [None, (1, 1), (2, 3)], ids=["one tile", "1x1", "2x3"])
def test_import_refuses_one_face_under_two_names(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tile: tuple[int, int] | None
) -> None:
    """`enroll` refuses a face that nearly repeats another person's sample; so does import,
    against this gallery's people and the import's own, and names the same two people
    whatever tiles of new rows by every row the check goes through (bounded in memory)."""
    if tile is not None:
        monkeypatch.setattr(gallery_module, "IMPORT_CHECK_ROWS", tile[0])
        monkeypatch.setattr(gallery_module, "IMPORT_CHECK_COLUMNS", tile[1])

    def near(vector: np.ndarray, seed: int) -> np.ndarray:
        """The same face saved again: cosine about 0.995 to `vector`."""
        moved = vector + 0.1 * unit_vectors(1, seed)[0]
        return moved / np.linalg.norm(moved)

    bob = samples(2, 2)[1].embedding
    bob_again = NewSample(near(bob, 40), "e" * 64, None, "model-a")
    mirror_of_bob = NewSample(
        unit_vectors(1, 20)[0], "f" * 64, None, "model-a", mirror=near(bob, 41)
    )
    carol = samples(1, 30)
    caroline = [NewSample(near(carol[0].embedding, 42), "d" * 64, None, "model-a")]
    cases = {
        "Robert": (
            [("Robert", [bob_again])],
            "'Robert' in the import has the same face as 'Bob' in this gallery",
        ),
        "mirror": (
            [("Robert", [mirror_of_bob])],
            "'Robert' in the import has the same face as 'Bob'",
        ),
        "in the import": (
            [("Carol", carol), ("Caroline", caroline)],
            # Either way round: split in tiles, the two products may round apart.
            "'(Carol|Caroline)' in the import has the same face as '(Caroline|Carol)' in "
            "the import too",
        ),
    }
    for people, message in cases.values():
        # As read_export() hands them over: no gallery could hold Carol and Caroline.
        imported = [ExportedPerson(name, "2024-01-01T00:00:00Z", new) for name, new in people]
        before = file_digest(db)
        with Gallery.open(db) as gallery:
            pattern = message if "(" in message else re.escape(message)
            with pytest.raises(GalleryError, match=pattern):
                gallery.import_(imported)
            assert gallery.has("Alice") and not gallery.has(people[0][0])
        assert file_digest(db) == before
    # Replacing or merging a person with their own samples is no clash.
    text = io.StringIO()
    with Gallery.open(db) as gallery:
        gallery.export(text)
        summary = gallery.import_(read_export(io.StringIO(text.getvalue())), on_conflict="replace")
    assert summary.replaced_people == ["Alice", "Bob"]


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda lines: lines[:-1], "truncated or edited"),
        (lambda lines: ["{}"] + lines[1:], "header"),
        (lambda lines: lines[:1] + ["{not json"] + lines[2:], r"line 2\): not JSON"),
        (lambda lines: lines[:1] + ["[" * 1000] + lines[2:], r"line 2\): JSON nested too deeply"),
        (lambda lines: ['{"format": ' + "9" * 5000 + "}"] + lines[1:], r"line 1\): an integer"),
        (lambda lines: [lines[0].replace('"version": 1', '"version": 9')] + lines[1:], "version 9"),
        (
            lambda lines: (
                lines[:1] + [lines[1].replace('"embedding": "', '"embedding": "AAAA')] + lines[2:]
            ),
            "bad person record",
        ),
        (lambda lines: [], "empty"),
    ],
)
def test_a_damaged_export_is_refused_before_writing(db, tmp_path, mangle, message) -> None:
    with Gallery.open(db) as gallery:
        text = io.StringIO()
        gallery.export(text)
    damaged = "\n".join(mangle(text.getvalue().splitlines()))
    target = tmp_path / "target.db"
    with Gallery.open(target, create=True) as gallery:
        gallery.enroll("Zoe", samples(1, 20))
    before = file_digest(target)
    with pytest.raises(GalleryError, match=message):
        read_export(io.StringIO(damaged))
    assert file_digest(target) == before


def test_a_failed_export_leaves_no_file(db: Path, tmp_path: Path) -> None:
    target = tmp_path / "export.jsonl"

    def failing(handle) -> None:
        handle.write("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_private_text(target, failing)
    assert list(tmp_path.iterdir()) == [db.parent]


def test_a_held_write_lock_is_a_clear_error_and_changes_nothing(db: Path) -> None:
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another enrolment in progress
    try:
        with Gallery.open(db) as gallery:
            gallery._db.execute("PRAGMA busy_timeout = 100")  # the default waits 5 s
            with pytest.raises(GalleryError, match="cannot write the gallery .*another command"):
                gallery.enroll("Carol", samples(1, 30))
            assert not gallery._db.in_transaction
    finally:
        other.execute("ROLLBACK")
        other.close()
    with Gallery.open(db) as gallery:
        assert not gallery.has("Carol")


def test_mirror_embeddings_are_matched_beside_their_photo_but_counted_once(
    tmp_path: Path,
) -> None:
    """Schema v4: a photo's mirror embedding is a row of its person right after the photo's
    own in the matching matrix, survives export/import, and is not another sample."""
    path = tmp_path / "gallery.db"
    own = unit_vectors(2, 40)
    flipped = mirrors_of(own, 41)
    with Gallery.open(path, create=True) as gallery:
        gallery.enroll("Bob", samples(1, 5))  # before mirrors: no mirror stored
        gallery.enroll(
            "Alice",
            [
                NewSample(own[i], hashlib.sha256(b"a%d" % i).hexdigest(), mirror=flipped[i])
                for i in range(2)
            ],
        )
        matrix = gallery.load_matrix()
        assert matrix.names == ("Bob", "Alice")
        assert matrix.person.tolist() == [0, 1, 1, 1, 1]
        np.testing.assert_array_equal(
            matrix.embeddings[1:], np.stack([own[0], flipped[0], own[1], flipped[1]])
        )
        assert {p.name: p.samples for p in gallery.people()} == {"Alice": 2, "Bob": 1}
        assert len(gallery.embeddings("Alice")) == 2
        assert len(gallery.embeddings("Alice", mirrors=True)) == 4
        out = io.StringIO()
        assert gallery.export(out) == (2, 3)
    exported = out.getvalue()
    other = tmp_path / "other.db"
    with Gallery.open(other, create=True) as gallery:
        gallery.import_(read_export(io.StringIO(exported)))
        np.testing.assert_array_equal(
            gallery.embeddings("Alice", mirrors=True), matrix.embeddings[1:]
        )
        assert len(gallery.load_matrix()) == 5
    # A mirror embedding that is not of unit length is refused like an embedding.
    header, bob, alice = exported.splitlines()
    record = json.loads(alice)
    bad = (own[0] * 2).astype("<f4").tobytes()
    record["samples"][0]["mirror_embedding"] = base64.b64encode(bad).decode()
    with pytest.raises(GalleryError, match="mirror_embedding"):
        read_export(io.StringIO("\n".join([header, bob, json.dumps(record)]) + "\n"))


def test_a_mirror_embedding_of_another_face_is_refused_and_never_matched(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an audit: an export whose sample carried another person's embedding as its
    mirror was imported (the one-person rule links photos by the better of the two), and
    the door then opened for that other person under the enrolled name."""
    own = unit_vectors(2, 40)
    mallory = unit_vectors(1, 99)[0]
    honest = [
        NewSample(own[i], hashlib.sha256(b"a%d" % i).hexdigest(), mirror=mirrors_of(own[i], i))
        for i in range(2)
    ]
    source = tmp_path / "source.db"
    with Gallery.open(source, create=True) as gallery:
        gallery.enroll("Alice", honest)
        out = io.StringIO()
        gallery.export(out)
    header, alice = out.getvalue().splitlines()
    record = json.loads(alice)
    record["samples"][1]["mirror_embedding"] = base64.b64encode(
        mallory.astype("<f4").tobytes()
    ).decode()
    hostile = "\n".join([header, json.dumps(record)]) + "\n"
    with pytest.raises(GalleryError, match=r"sample 2 mirror_embedding is another face .*0\.85"):
        read_export(io.StringIO(hostile))
    # Nor can any other writer store one (an enrolment's own are the same face).
    target = tmp_path / "target.db"
    with Gallery.open(target, create=True) as gallery:
        smuggled = dataclasses.replace(honest[1], mirror=mallory)
        with pytest.raises(GalleryError, match="sample 2 mirror_embedding is another face"):
            gallery.enroll("Alice", [honest[0], smuggled])
        assert gallery.people() == []
        gallery.enroll("Alice", honest)
    # One written past the gallery (the sqlite3 shell, an older import) is left out of
    # matching, with a warning naming whose it is; the photo's own embedding stays.
    connection = sqlite3.connect(target)
    connection.execute(
        "UPDATE samples SET mirror_embedding = ? WHERE id = 2", (mallory.astype("<f4").tobytes(),)
    )
    connection.commit()
    connection.close()
    with Gallery.open(target) as gallery, caplog.at_level(logging.WARNING, "edge_app.gallery"):
        matrix = gallery.load_matrix()
    np.testing.assert_array_equal(
        matrix.embeddings, np.stack([own[0], mirrors_of(own[0], 0), own[1]])
    )
    assert float(np.max(matrix.embeddings @ mallory)) < 0.3
    assert "1 mirror embedding(s) are another face than their photo's" in caplog.text
    assert "(Alice)" in caplog.text
    # Nor does any other reader of the mirrors see it (the review of the fix above): the
    # one-person rule of an --add or a merge, doctor's check, an export.
    with Gallery.open(target) as gallery:
        assert float(np.max(gallery.embeddings("Alice", mirrors=True) @ mallory)) < 0.3
        assert gallery.looking_like_several() == []
        mallory_again = NewSample(mirrors_of(mallory, 5), "d" * 64, mirror=mirrors_of(mallory, 6))
        merged = [ExportedPerson("Alice", "2024-01-01T00:00:00Z", [mallory_again])]
        with pytest.raises(GalleryError, match="refused by the one-person rule"):
            gallery.import_(merged, on_conflict="merge")
        out = io.StringIO()
        gallery.export(out)
    assert "another face than their photo's left out of the export" in caplog.text
    with Gallery.open(tmp_path / "restored.db", create=True) as gallery:
        gallery.import_(read_export(io.StringIO(out.getvalue())))  # the backup restores
        assert gallery.without_mirrors() == 1


def alice_with_mirrors(path: Path) -> np.ndarray:
    """A gallery of Alice, 2 photos with their mirrors; her photos' embeddings."""
    own = unit_vectors(2, 40)
    with Gallery.open(path, create=True) as gallery:
        gallery.enroll(
            "Alice",
            [NewSample(own[i], f"{i}" * 64, mirror=mirrors_of(own[i], i)) for i in range(2)],
        )
    return own


@pytest.mark.parametrize("length", [1.02, 2.0])
def test_a_mirror_of_another_face_not_of_unit_length_is_left_out_too(
    tmp_path: Path, length: float
) -> None:
    """Found by a review: the check compared only rows of unit length, while the matcher
    renormalises any finite, non-zero row: Mallory's vector stored at length 1.02 was
    matched as Alice."""
    mallory = unit_vectors(1, 99)[0]
    path = tmp_path / "g.db"
    alice_with_mirrors(path)
    connection = sqlite3.connect(path)
    scaled = (mallory * length).astype("<f4").tobytes()
    connection.execute("UPDATE samples SET mirror_embedding = ? WHERE id = 2", (scaled,))
    connection.commit()
    connection.close()
    with Gallery.open(path) as gallery:
        assert float(np.max(gallery.load_matrix().embeddings @ mallory)) < 0.3
        assert float(np.max(gallery.embeddings("Alice", mirrors=True) @ mallory)) < 0.3


def test_a_damaged_embedding_is_not_taken_for_a_mirror_of_another_face(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A NaN mirror, or a zeroed photo beside a healthy mirror, is damage (the unusable-row
    warning says so, and the healthy row still matches), not another face."""
    path = tmp_path / "g.db"
    own = alice_with_mirrors(path)
    connection = sqlite3.connect(path)
    nan = np.full(EMBEDDING_DIM, np.nan, "<f4").tobytes()
    connection.execute("UPDATE samples SET mirror_embedding = ? WHERE id = 1", (nan,))
    zero = np.zeros(EMBEDDING_DIM, "<f4").tobytes()
    connection.execute("UPDATE samples SET embedding = ? WHERE id = 2", (zero,))
    connection.commit()
    connection.close()
    with Gallery.open(path) as gallery, caplog.at_level(logging.WARNING, "edge_app.gallery"):
        matrix = gallery.load_matrix()
    assert "another face" not in caplog.text
    assert "unusable" in caplog.text
    np.testing.assert_allclose(matrix.embeddings[3], mirrors_of(own[1], 1), atol=1e-6)


def test_migration_to_v4_keeps_samples_without_mirrors(db: Path) -> None:
    connection = sqlite3.connect(db)
    connection.execute("ALTER TABLE samples DROP COLUMN mirror_embedding")
    connection.execute("ALTER TABLE people DROP COLUMN access")
    connection.execute("PRAGMA user_version = 3")
    connection.commit()
    connection.close()
    with Gallery.open(db) as gallery:
        assert gallery.schema_version == SCHEMA_VERSION == 5
        assert len(gallery.load_matrix()) == 5  # 3 + 2 photos, no mirrors
        gallery.enroll("Carol", [NewSample(unit_vectors(1, 9)[0], "c" * 64, mirror=None)])
        assert len(gallery.load_matrix()) == 6


def test_migration_to_v5_keeps_everyone_able_to_open_the_door(db: Path) -> None:
    connection = sqlite3.connect(db)
    connection.execute("ALTER TABLE people DROP COLUMN access")
    connection.execute("PRAGMA user_version = 4")
    connection.commit()
    connection.close()
    with Gallery.open(db) as gallery:
        assert gallery.schema_version == SCHEMA_VERSION
        assert all(p.access for p in gallery.people())
        assert gallery.load_matrix().no_access == frozenset()


def test_a_known_visitor_is_matched_but_marked_without_access(db: Path) -> None:
    with Gallery.open(db) as gallery:
        gallery.enroll("Dan", samples(2, 30), access=False)
        matrix = gallery.load_matrix()
        assert "Dan" in matrix.names  # matched like anyone, so named in events
        assert matrix.no_access == frozenset({"Dan"})
        assert matrix.with_centroids().no_access == frozenset({"Dan"})
        assert {p.name: p.access for p in gallery.people()} == {
            "Alice": True,
            "Bob": True,
            "Dan": False,
        }
        # --add keeps what the person is; set_access changes it, and says when it did.
        gallery.enroll("dan", samples(1, 31), add=True)
        assert gallery.load_matrix().no_access == frozenset({"Dan"})
        assert gallery.set_access("DAN", True) == ("Dan", True)  # the name as stored
        assert gallery.set_access("Dan", True) == ("Dan", False)
        assert gallery.load_matrix().no_access == frozenset()
        with pytest.raises(GalleryError, match="not enrolled: 'Eve'"):
            gallery.set_access("Eve", False)
    with sqlite3.connect(db) as connection, pytest.raises(sqlite3.IntegrityError):
        connection.execute("UPDATE people SET access = 2")


def test_an_export_with_a_known_visitor_is_version_2_and_keeps_them_out(
    db: Path, tmp_path: Path
) -> None:
    with Gallery.open(db) as gallery:
        plain = io.StringIO()
        gallery.export(plain)
        gallery.enroll("Dan", samples(2, 30), access=False)
        text = io.StringIO()
        gallery.export(text)
    # Without a visitor the file is what an older edge-app reads (version 1)...
    assert json.loads(plain.getvalue().splitlines()[0])["version"] == 1
    # ...with one it is version 2, which an older edge-app refuses rather than let Dan in.
    lines = text.getvalue().splitlines()
    assert json.loads(lines[0])["version"] == 2
    assert [json.loads(line).get("access", True) for line in lines[1:]] == [True, True, False]
    target = tmp_path / "target.db"
    with Gallery.open(target, create=True) as gallery:
        gallery.import_(read_export(io.StringIO(text.getvalue())))
        assert gallery.load_matrix().no_access == frozenset({"Dan"})
        # --replace takes the imported access too.
        gallery.set_access("Dan", True)
        gallery.import_(read_export(io.StringIO(text.getvalue())), on_conflict="replace")
        assert gallery.load_matrix().no_access == frozenset({"Dan"})
        # --merge keeps the stricter access (an audit: it kept Dan's here, letting in someone
        # the other door had taken access from), and never grants it.
        gallery.set_access("Dan", True)
        gallery.set_access("Alice", False)
        merged = gallery.import_(read_export(io.StringIO(text.getvalue())), on_conflict="merge")
        assert merged.access_removed == ["Dan"]
        assert gallery.load_matrix().no_access == frozenset({"Dan", "Alice"})
        again = gallery.import_(read_export(io.StringIO(text.getvalue())), on_conflict="merge")
        assert again.access_removed == []
    bad = [lines[0], lines[1], lines[2], lines[3].replace('"access": false', '"access": "no"')]
    with pytest.raises(GalleryError, match="access must be true or false"):
        read_export(io.StringIO("\n".join(bad)))


def damage_a_page(path: Path) -> None:
    """Overwrite the gallery's fourth page with garbage, as a torn write or a failing card
    does (the page holds samples in these small galleries); SQLite must see it."""
    with path.open("r+b") as handle:
        handle.seek(3 * 4096)
        handle.write(b"\x0d\xff\xff\xff" * 64)
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA quick_check(1)").fetchone()[0] != "ok"
    check.close()


@pytest.mark.parametrize(
    "use",
    [
        pytest.param(lambda g: g.people(), id="people"),
        pytest.param(lambda g: g.load_matrix(), id="load_matrix"),
        pytest.param(lambda g: g.export(io.StringIO()), id="export"),
        pytest.param(lambda g: g.remove(["Alice"]), id="remove"),
        pytest.param(lambda g: g.rename("Bob", "Robert"), id="rename"),
        pytest.param(lambda g: g.set_access("Bob", False), id="set_access"),
        pytest.param(lambda g: g.enroll("Carol", samples(1, 30)), id="enroll"),
    ],
)
def test_a_damaged_gallery_is_refused_by_name_and_left_as_it_was(db: Path, use) -> None:
    """Defect: a damaged page gave `sqlite3.DatabaseError: database disk image is malformed`
    (a traceback in every command), and rename / set_access, whose rows were on a sound
    page, wrote into the damaged file and reported success."""
    damage_a_page(db)
    before = file_digest(db)
    with Gallery.open(db) as gallery:
        with pytest.raises(GalleryError, match=f"gallery {db} is damaged .*restore it from"):
            use(gallery)
        assert not gallery._db.in_transaction
    assert file_digest(db) == before


def test_an_export_past_the_limit_stops_where_it_passes_it() -> None:
    """CountedWriter with a limit: an export no import would read is not written out in full
    (to the gallery's own disk, for the web page) before it is refused."""
    import io

    from edge_app.gallery import CountedWriter, ExportTooLarge

    stream = io.StringIO()
    writer = CountedWriter(stream, limit=10)
    writer.write("12345")
    writer.write("é" * 2)  # 4 bytes in UTF-8: 9 in all
    with pytest.raises(ExportTooLarge, match="more than the .* bytes `edge-app import` reads"):
        writer.write("ab")
    assert stream.getvalue() == "12345éé"  # the write that passed the limit wrote nothing
    unlimited = CountedWriter(io.StringIO())
    unlimited.write("x" * 100)
    assert unlimited.size == 100
