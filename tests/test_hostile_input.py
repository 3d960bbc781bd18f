"""Hostile and broken input to the gallery and the command line: files that are not ours,
crafted imports, look-alike names. Each is refused with a clear message (a UserError, exit
code 2, no traceback) and changes nothing: the files involved keep their bytes and mode."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from people import samples, unit_vectors
from test_images_crafted import hidden_frame

from edge_app import cli
from edge_app import gallery as gallery_module
from edge_app.gallery import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    Gallery,
    GalleryError,
    read_export,
)
from edge_app.matching import Matcher, MatchSettings

REPO = Path(__file__).resolve().parents[1]


def snapshot(path: Path) -> tuple[bytes, int]:
    """What must not change about a file we do not own: its bytes and its mode."""
    return path.read_bytes(), stat.S_IMODE(path.stat().st_mode)


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """The real command line in a child process, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "edge_app.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Exception ignored" not in result.stderr, result.stderr


# --- files that are not galleries ------------------------------------------------------------


def sqlite_file(path: Path, statements: list[str]) -> Path:
    connection = sqlite3.connect(path)
    for statement in statements:
        connection.execute(statement)
    connection.commit()
    connection.close()
    path.chmod(0o644)
    return path


def written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


NOT_GALLERIES: dict[str, Callable[[Path], Path]] = {
    "toml": lambda d: written(d / "config.toml", b'[gallery]\npath = "x"\n'),
    "empty": lambda d: written(d / "empty.db", b""),
    "jpeg": lambda d: written(d / "photo.jpg", b"\xff\xd8\xff\xe0" + bytes(500)),
    "other-sqlite": lambda d: sqlite_file(
        d / "other.db", ["CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)"]
    ),
    "empty-sqlite": lambda d: sqlite_file(d / "blank.db", ["PRAGMA user_version = 0"]),
    "versioned-without-our-tables": lambda d: sqlite_file(
        d / "app.db", ["CREATE TABLE things (x)", "PRAGMA user_version = 2"]
    ),
    # Found by an audit: tables named as ours, with columns of their own; it was migrated
    # (columns added, our application_id and WAL set), then failed on "no such column".
    "our-table-names-only": lambda d: sqlite_file(
        d / "lookalike.db",
        [
            "CREATE TABLE people (id INTEGER PRIMARY KEY, fullname TEXT)",
            "CREATE TABLE samples (id INTEGER PRIMARY KEY, value BLOB)",
            "PRAGMA user_version = 1",
        ],
    ),
    "other-application-id": lambda d: sqlite_file(
        d / "foreign.db",
        [
            "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, created_utc TEXT)",
            "CREATE TABLE samples (id INTEGER PRIMARY KEY)",
            "PRAGMA user_version = 2",
            "PRAGMA application_id = 1234",
        ],
    ),
}


@pytest.mark.parametrize("kind", sorted(NOT_GALLERIES))
@pytest.mark.parametrize("create", [False, True])
def test_a_file_that_is_not_a_gallery_is_refused_and_untouched(
    tmp_path: Path, kind: str, create: bool
) -> None:
    path = NOT_GALLERIES[kind](tmp_path)
    path.chmod(0o644)
    before = snapshot(path)
    with pytest.raises(GalleryError, match="not an edge-app gallery|is empty|not an SQLite"):
        Gallery.open(path, create=create)
    assert snapshot(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_fifo_as_the_gallery_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "gallery.db"
    os.mkfifo(fifo)
    for create in (False, True):
        with pytest.raises(GalleryError, match="not a regular file"):
            Gallery.open(fifo, create=create)


@pytest.mark.parametrize("command", ["list", "remove", "rename", "export", "import", "enroll"])
def test_the_cli_refuses_a_toml_file_as_gallery_and_leaves_it_alone(
    tmp_path: Path, command: str
) -> None:
    config = tmp_path / "some.toml"
    config.write_text('[gallery]\npath = "/var/lib/edge-app/gallery.db"\n')
    config.chmod(0o644)
    before = snapshot(config)
    export = tmp_path / "in.jsonl"
    export.write_text(json.dumps(header(0, 0)) + "\n")
    extra = {
        "list": [],
        "remove": ["Alice"],
        "rename": ["Alice", "Bob"],
        "export": [str(tmp_path / "out.jsonl")],
        "import": [str(export)],
        "enroll": ["Alice", str(REPO / "tests/data/lfw_sample/Rick_Perry/Rick_Perry_0001.jpg")],
    }[command]
    result = run_cli(command, "--db", str(config), *extra)
    no_traceback(result)
    assert result.returncode == 2
    assert "not an SQLite" in result.stderr and str(config) in result.stderr
    assert snapshot(config) == before
    assert not (tmp_path / "out.jsonl").exists()


def test_a_new_gallery_is_ours_and_private(tmp_path: Path) -> None:
    path = tmp_path / "gallery.db"
    with Gallery.open(path, create=True) as gallery:
        gallery.enroll("Alice", samples(1, 1))
    data = path.read_bytes()
    assert data[:16] == b"SQLite format 3\0"
    assert int.from_bytes(data[68:72], "big") == APPLICATION_ID
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Nothing else is left in the folder (the gallery is built aside and linked in).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery.db"]


def test_an_older_gallery_without_application_id_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    connection = sqlite3.connect(path)
    for statement in (s for version in gallery_module.MIGRATIONS[:2] for s in version):
        connection.execute(statement)
    connection.execute("PRAGMA user_version = 2")
    connection.commit()
    connection.close()
    with Gallery.open(path) as gallery:
        assert gallery.schema_version == SCHEMA_VERSION
    assert int.from_bytes(path.read_bytes()[68:72], "big") == APPLICATION_ID


# --- crafted imports -------------------------------------------------------------------------


def header(people: int, count: int, **changes: Any) -> dict[str, Any]:
    data = {
        "format": "edge-app-gallery",
        "version": 1,
        "exported_utc": "2025-01-31T12:00:00Z",
        "embedding_dim": 512,
        "embedding_dtype": "float32-le",
        "people": people,
        "samples": count,
    }
    data.update(changes)
    return data


def sample(vector: np.ndarray, digest: str = "a" * 64, **changes: Any) -> dict[str, Any]:
    data = {
        "embedding": base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode(),
        "image_sha256": digest,
        "created_utc": "2025-01-30T09:15:02Z",
        "model": "b" * 64,
    }
    data.update(changes)
    return data


def person(name: Any, *items: dict[str, Any], **changes: Any) -> dict[str, Any]:
    data = {"name": name, "created_utc": "2025-01-30T09:15:02Z", "samples": list(items)}
    data.update(changes)
    return data


def export_text(*people: dict[str, Any], head: dict[str, Any] | None = None) -> str:
    count = sum(len(p["samples"]) if isinstance(p.get("samples"), list) else 0 for p in people)
    first = head if head is not None else header(len(people), count)
    return "\n".join(json.dumps(line) for line in [first, *people]) + "\n"


def png_bytes() -> bytes:
    ok, data = cv2.imencode(".png", np.full((32, 32, 3), 90, np.uint8))
    assert ok
    return data.tobytes()


def jpeg_crop() -> str:
    pixels = np.random.default_rng(5).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    return base64.b64encode(cv2.imencode(".jpg", pixels)[1].tobytes()).decode()


V = unit_vectors(4, 99)
GOOD = person("Mallory", sample(V[0], "1" * 64))

BAD_IMPORTS: dict[str, tuple[str, str]] = {
    "norm-1000": (export_text(person("Mallory", sample(V[0] * 1000))), "not unit length"),
    "norm-0.5": (export_text(person("Mallory", sample(V[0] * 0.5))), "not unit length"),
    "nan": (
        export_text(person("Mallory", sample(np.full(512, np.nan, np.float32)))),
        "finite",
    ),
    "name-number": (export_text(person(12345, sample(V[0]))), "name must be a string"),
    "name-null": (export_text(person(None, sample(V[0]))), "name must be a string"),
    "name-control": (export_text(person("Eve\x1b[2J", sample(V[0]))), "control characters"),
    "model-object": (export_text(person("Mallory", sample(V[0], model={}))), "model"),
    "model-number": (export_text(person("Mallory", sample(V[0], model=7))), "model"),
    "sha-number": (export_text(person("Mallory", sample(V[0], digest=7))), "image_sha256"),  # type: ignore[arg-type]
    "sha-not-hex": (export_text(person("Mallory", sample(V[0], "zz"))), "image_sha256"),
    "created-list": (
        export_text(person("Mallory", sample(V[0], created_utc=[1]))),
        "created_utc",
    ),
    "created-not-a-time": (
        export_text(person("Mallory", sample(V[0], created_utc="yesterday"))),
        "created_utc",
    ),
    "person-created-number": (
        export_text(person("Mallory", sample(V[0]), created_utc=5)),
        "created_utc",
    ),
    "samples-not-list": (
        export_text(person("Mallory", samples="many")),
        "samples must be a list",
    ),
    "sample-not-object": (
        export_text(person("Mallory", "AAAA")),  # type: ignore[arg-type]
        "sample 1 must be an object",
    ),
    "embedding-number": (export_text(person("Mallory", sample(V[0], embedding=5))), "embedding"),
    "embedding-short": (
        export_text(person("Mallory", sample(V[0], embedding="AAAA"))),
        "embedding",
    ),
    "crop-number": (
        export_text(person("Mallory", sample(V[0], face_crop_jpeg=5))),
        "face_crop_jpeg",
    ),
    "crop-not-jpeg": (
        export_text(
            person("Mallory", sample(V[0], face_crop_jpeg=base64.b64encode(b"GIF89a").decode()))
        ),
        "face_crop_jpeg",
    ),
    "crop-crafted-header": (  # a decoy header with a 12000x12000 frame behind it
        export_text(
            person(
                "Mallory",
                sample(V[0], face_crop_jpeg=base64.b64encode(hidden_frame(12000, 12000)).decode()),
            )
        ),
        "face_crop_jpeg: damaged JPEG header",
    ),
    # Found by a fuzzing audit: text that is not ASCII raised ValueError, not binascii.Error,
    # and escaped as a traceback.
    "embedding-not-ascii": (
        export_text(person("Mallory", sample(V[0], embedding="é" + "A" * 2731))),
        "embedding is not base64",
    ),
    "crop-png": (
        export_text(
            person(
                "Mallory",
                sample(V[0], face_crop_jpeg=base64.b64encode(png_bytes()).decode()),
            )
        ),
        "face_crop_jpeg is a PNG image, not a JPEG",
    ),
    "record-not-object": (export_text(head=header(1, 0)) + "[1, 2]\n", "must be an object"),
    "duplicate-photo": (
        export_text(person("Mallory", sample(V[0], "1" * 64), sample(V[1], "1" * 64))),
        "same photo twice",
    ),
    "duplicate-embedding": (
        export_text(
            person("Mallory", sample(V[0], "1" * 64)), person("Trent", sample(V[0], "2" * 64))
        ),
        "same embedding",
    ),
    "case-twin-names": (
        export_text(
            person("Ricardo Lagos", sample(V[0], "1" * 64)),
            person("ricardo  LAGOS", sample(V[1], "2" * 64)),
        ),
        "appears twice",
    ),
    "same-name-twice": (
        export_text(
            person("Ricardo Lagos", sample(V[0], "1" * 64)),
            person("Ricardo Lagos", sample(V[1], "2" * 64)),
        ),
        "appears twice",
    ),
    "header-version-true": (
        export_text(GOOD, head=header(1, 1, version=True)),
        "version",
    ),
    "header-counts-strings": (
        export_text(GOOD, head=header("1", "1")),  # type: ignore[arg-type]
        "people",
    ),
}


@pytest.fixture
def door(tmp_path: Path) -> Path:
    path = tmp_path / "door.db"
    with Gallery.open(path, create=True) as gallery:
        gallery.enroll("Alice", samples(2, 1))
    return path


@pytest.mark.parametrize("kind", sorted(BAD_IMPORTS))
def test_a_crafted_import_is_refused_by_the_cli_and_changes_nothing(
    tmp_path: Path, door: Path, kind: str, capsys: pytest.CaptureFixture[str], restore_logging
) -> None:
    """In process (any exception but a UserError would escape main() and fail the test)."""
    text, message = BAD_IMPORTS[kind]
    source = tmp_path / "crafted.jsonl"
    source.write_text(text)
    before = snapshot(door)
    assert cli.main(["import", "--db", str(door), str(source)]) == 2
    stderr = capsys.readouterr().err
    assert message in stderr and "not a valid gallery export" in stderr, stderr
    assert snapshot(door) == before


def test_a_crafted_import_in_a_real_process_prints_no_traceback(tmp_path: Path, door: Path) -> None:
    source = tmp_path / "crafted.jsonl"
    source.write_text(BAD_IMPORTS["name-number"][0])
    result = run_cli("import", "--db", str(door), str(source))
    no_traceback(result)
    assert result.returncode == 2 and "name must be a string, not int" in result.stderr


def test_a_good_hand_made_import_goes_in(door: Path) -> None:
    text = export_text(
        person(" Mallory  Smith ", sample(V[0], "1" * 64, face_crop_jpeg=jpeg_crop())),
        person("Trent", sample(V[1], "2" * 64, model=None), sample(V[2], "3" * 64)),
    )
    with Gallery.open(door) as gallery:
        summary = gallery.import_(read_export(io.StringIO(text)))
        assert summary.added_people == ["Mallory Smith", "Trent"]
        assert summary.samples_added == 3


def test_the_norm_1000_attack_is_refused_and_old_rows_are_renormalised(
    tmp_path: Path, door: Path
) -> None:
    """The attack from the issue: one vector of norm 1000 would outscore everyone. Refused on
    import; a row that got in some other way (an older import, a hand-edited file) is brought
    back to unit length on load, and scores stay on the cosine scale."""
    with pytest.raises(GalleryError, match="not unit length"):
        read_export(io.StringIO(BAD_IMPORTS["norm-1000"][0]))
    with Gallery.open(door) as gallery:
        gallery.enroll("Mallory", samples(1, 7))
        gallery._db.execute(
            "UPDATE samples SET embedding = ? WHERE person_id = "
            "(SELECT id FROM people WHERE name = 'Mallory')",
            ((V[3] * 1000).astype("<f4").tobytes(),),
        )
        gallery._db.execute(
            "UPDATE samples SET embedding = ? WHERE id = 1",
            (np.full(512, np.nan, "<f4").tobytes(),),
        )
        matrix = gallery.load_matrix()
    norms = np.linalg.norm(matrix.embeddings, axis=1)
    np.testing.assert_allclose(norms[1:], 1.0, atol=1e-5)
    assert norms[0] == 0.0  # the NaN row matches nobody
    strangers = unit_vectors(50, 123)
    matcher = Matcher(matrix, MatchSettings(threshold=0.3))
    matches = matcher.identify(strangers)
    assert all(name is None for name in matches.names)
    assert np.all(np.abs(matches.scores) <= 1.0)


def test_an_import_that_fails_while_writing_changes_nothing(tmp_path: Path, door: Path) -> None:
    """All or nothing: the second person's insert fails inside SQLite (a trigger of this
    connection only, TEMP: a gallery storing one is refused) after the first went in; the
    transaction is rolled back and the error is a clear one."""
    text = export_text(
        person("Mallory", sample(V[0], "1" * 64)), person("Trent", sample(V[1], "2" * 64))
    )
    with Gallery.open(door) as gallery:
        gallery._db.execute(
            "CREATE TEMP TRIGGER refuse_trent BEFORE INSERT ON main.people "
            "WHEN NEW.name = 'Trent' BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
        before = gallery.people(), gallery._db.execute("SELECT count(*) FROM samples").fetchone()
        with pytest.raises(GalleryError, match="disk says no"):
            gallery.import_(read_export(io.StringIO(text)))
        after = gallery.people(), gallery._db.execute("SELECT count(*) FROM samples").fetchone()
    assert after == before


def test_an_import_file_over_the_size_cap_is_refused(
    tmp_path: Path, door: Path, monkeypatch: pytest.MonkeyPatch, capsys, restore_logging
) -> None:
    monkeypatch.setattr(gallery_module, "MAX_IMPORT_BYTES", 1000)
    source = tmp_path / "big.jsonl"
    source.write_text(export_text(GOOD) + " " * 2000)
    before = snapshot(door)
    assert cli.main(["import", "--db", str(door), str(source)]) == 2
    assert "more than the 1000 bytes" in capsys.readouterr().err
    assert snapshot(door) == before


def test_an_oversized_import_file_is_refused_before_it_is_read(
    tmp_path: Path, door: Path, monkeypatch: pytest.MonkeyPatch, capsys, restore_logging
) -> None:
    """A regular file over the cap is refused from its size, not after reading the cap."""
    monkeypatch.setattr(gallery_module, "MAX_IMPORT_BYTES", 1000)
    source = tmp_path / "big.jsonl"
    source.write_text(export_text(GOOD) + " " * 2000)
    opened: list[str] = []
    real_open = open

    def watching_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", watching_open)
    before = snapshot(door)
    assert cli.main(["import", "--db", str(door), str(source)]) == 2
    assert "more than the 1000 bytes" in capsys.readouterr().err
    assert str(source) not in opened
    assert snapshot(door) == before


# --- names -----------------------------------------------------------------------------------


def test_names_differing_in_case_space_or_unicode_form_are_one_person(tmp_path: Path) -> None:
    path = tmp_path / "gallery.db"
    with Gallery.open(path, create=True) as gallery:
        gallery.enroll("ricardo lagos", samples(1, 1))
        for twin in ("Ricardo Lagos", "  RICARDO   lagos ", "ricardo\tlagos"):
            with pytest.raises(GalleryError, match="already enrolled"):
                gallery.enroll(twin, samples(1, 2))
        gallery.enroll("José", samples(1, 3))  # composed é
        with pytest.raises(GalleryError, match="already enrolled"):
            gallery.enroll("Jose\u0301", samples(1, 4))  # e + combining acute
        # The name is kept as typed, found whatever the case.
        assert [p.name for p in gallery.people()] == ["José", "ricardo lagos"]
        assert gallery.has("RICARDO LAGOS")
        assert gallery.enroll("Ricardo Lagos", samples(1, 5), add=True) == 2
        assert len(gallery.embeddings("Ricardo  Lagos")) == 2


def test_rename_respects_the_name_rule(tmp_path: Path) -> None:
    path = tmp_path / "gallery.db"
    with Gallery.open(path, create=True) as gallery:
        gallery.enroll("ricardo lagos", samples(1, 1))
        gallery.enroll("Bob", samples(1, 2))
        with pytest.raises(GalleryError, match="already enrolled"):
            gallery.rename("Bob", "RICARDO LAGOS")
        gallery.rename("ricardo lagos", "Ricardo Lagos")  # fixing one's own capitals is fine
        assert [p.name for p in gallery.people()] == ["Bob", "Ricardo Lagos"]
        assert gallery.remove(["bob"]) == 1
        assert [p.name for p in gallery.people()] == ["Ricardo Lagos"]


def test_import_conflicts_are_found_whatever_the_case(door: Path) -> None:
    text = export_text(person("ALICE", sample(samples(3, 1)[2].embedding, "1" * 64)))
    with Gallery.open(door) as gallery:
        with pytest.raises(GalleryError, match="already enrolled here: 'ALICE'"):
            gallery.import_(read_export(io.StringIO(text)))
        summary = gallery.import_(read_export(io.StringIO(text)), on_conflict="merge")
        assert summary.merged_people == ["Alice"]
        assert [(p.name, p.samples) for p in gallery.people()] == [("Alice", 3)]


def test_a_dangling_symlink_as_a_new_gallery_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "gallery.db"
    link.symlink_to(tmp_path / "elsewhere" / "target.db")
    with pytest.raises(GalleryError, match="cannot create the gallery"):
        Gallery.open(link, create=True)
    assert link.is_symlink() and not (tmp_path / "elsewhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery.db"]


# --- careless input --------------------------------------------------------------------------


def test_an_export_starting_with_a_byte_order_mark_is_imported(
    tmp_path: Path, door: Path, capsys: pytest.CaptureFixture[str], restore_logging
) -> None:
    """Defect: an export saved by a Windows editor (UTF-8 with a byte order mark) was refused
    as "not JSON: Unexpected UTF-8 BOM (decode using utf-8-sig)", a hint for programmers.
    The mark is not part of the header: the file imports like the same file without it."""
    source = tmp_path / "from-windows.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + export_text(person("Trent", sample(V[1]))).encode())

    assert cli.main(["import", "--db", str(door), str(source)]) == 0, capsys.readouterr().err
    with Gallery.open(door) as gallery:
        assert [(p.name, p.samples) for p in gallery.people()] == [("Alice", 2), ("Trent", 1)]


def test_a_cut_png_is_named_as_cut_like_a_cut_jpeg(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Defect: a PNG cut short was "not a PNG image OpenCV can decode", after libpng's own
    "libpng error: PNG input buffer is incomplete" on stderr; a cut JPEG was "truncated JPEG".
    Both are named as cut now, with what to do, and libpng never sees the cut PNG."""
    from edge_app.images import ImageError, load_photo

    pixels = np.random.default_rng(5).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    cut = {}
    for suffix in (".png", ".jpg"):
        data = cv2.imencode(suffix, pixels)[1].tobytes()
        cut[suffix] = tmp_path / f"cut{suffix}"
        cut[suffix].write_bytes(data[: len(data) * 2 // 3])

    for suffix, kind in ((".png", "truncated PNG"), (".jpg", "truncated JPEG")):
        with pytest.raises(ImageError) as caught:
            load_photo(cut[suffix])
        message = str(caught.value)
        assert message.startswith(f"{cut[suffix]}: {kind} (")
        assert message.endswith(": the file was cut short; copy or save the photo again")
    assert "libpng" not in capfd.readouterr().err


def _can_mount_read_only() -> bool:
    """Whether this test may bind-mount a folder read-only in a private mount namespace
    (root with CAP_SYS_ADMIN and util-linux's unshare, as on the CI machine)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    with tempfile.TemporaryDirectory() as folder:
        probe = subprocess.run(
            ["unshare", "-m", "sh", "-c", f"mount --bind -o ro {folder} {folder}"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    return probe.returncode == 0


needs_read_only_mount = pytest.mark.skipif(
    not _can_mount_read_only(),
    reason="needs root to bind-mount a folder read-only (root ignores file modes, so a "
    "chmod 0555 folder is no read-only situation for it)",
)


def in_own_mounts(script: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`sh -c script sh argv...` in a mount namespace of its own (what it mounts is gone
    when it ends), with this checkout's edge_app importable."""
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=timeout,
        check=False,
    )


def run_cli_on_read_only(folder: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """The real command line with `folder` read-only (EROFS), as on a read-only filesystem,
    through a bind mount in a mount namespace of its own."""
    script = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    return in_own_mounts(script, str(folder), sys.executable, "-m", "edge_app.cli", *argv)


@needs_read_only_mount
def test_reading_commands_read_a_gallery_in_a_read_only_folder(tmp_path: Path) -> None:
    """Defect: `list` of a gallery in a folder that cannot be written failed with "is not a
    usable gallery: unable to open database file": SQLite could not make the -shm file of
    the WAL database, though listing only reads. Reading commands open it read-only there;
    one that writes says it must be run where the gallery can be written. (The folder's
    name has what a file: URI must escape.)"""
    folder = tmp_path / "state ?#%"
    folder.mkdir()
    db = folder / "gallery.db"
    with Gallery.open(db, create=True) as gallery:
        gallery.enroll("Alice", samples(2, 1))
    before = snapshot(db)

    listed = run_cli_on_read_only(folder, "list", "--json", "--db", str(db))
    no_traceback(listed)
    assert listed.returncode == 0, listed.stderr
    assert [p["name"] for p in json.loads(listed.stdout)] == ["Alice"]
    exported = run_cli_on_read_only(folder, "export", "--db", str(db), "-")
    assert exported.returncode == 0, exported.stderr
    assert [p.name for p in read_export(io.StringIO(exported.stdout))] == ["Alice"]

    changed = run_cli_on_read_only(folder, "access", "Alice", "no", "--db", str(db))
    no_traceback(changed)
    assert changed.returncode == 2
    assert f"cannot write the gallery {db} (" in changed.stderr
    # The filesystem is read-only: said so (a storage audit found "run it as the user that
    # owns the gallery", which sent root looking for a permissions problem).
    assert f"this command changes it: the filesystem holding {folder} is read-only" in (
        changed.stderr
    )
    assert snapshot(db) == before
    assert sorted(p.name for p in folder.iterdir()) == ["gallery.db"]


@needs_read_only_mount
def test_a_secret_or_site_forget_on_a_read_only_disk_says_so(tmp_path: Path) -> None:
    """Found by a durability audit: on a read-only filesystem `hub passwd` advised running
    as the service user (no user can write there), and `site forget` with no memory to
    delete failed, exit 2, "cannot delete ...site_memory.npz" (the kernel says EROFS before
    it says there is no such file)."""
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    gallery, password = folder / "gallery.db", folder / "web-password"
    config = tmp_path / "door.toml"
    lines = ["[gallery]", f'path = "{gallery}"', "[hub]", 'socket = ""', "[web]"]
    config.write_text("\n".join([*lines, f'password_file = "{password}"', ""]))

    def read_only(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        script = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
        done = subprocess.run(
            ["unshare", "-m", "sh", "-c", script, "sh", str(folder), sys.executable, "-m"]
            + ["edge_app.cli", *argv, "--config", str(config)],
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=60,
            check=False,
        )
        no_traceback(done)
        return done

    passwd = read_only("hub", "passwd", "--stdin", stdin="correct horse battery staple\n")
    assert passwd.returncode == 2, passwd.stderr
    assert f"the filesystem holding {folder} is read-only" in passwd.stderr
    assert "sudo -u edge-app" not in passwd.stderr
    forget = read_only("site", "forget")
    assert forget.returncode == 0, forget.stderr
    assert forget.stdout.startswith("no site memory at ")
    assert sorted(folder.iterdir()) == []


@needs_read_only_mount
def test_a_read_only_list_reads_what_a_live_door_has_written(tmp_path: Path) -> None:
    """WAL semantics hold: with a door's connection open (its -wal and -shm beside the
    gallery), a read-only `list` sees what it committed and has not checkpointed. A -wal
    left without its -shm cannot be read where nothing may be written: that is said."""
    folder = tmp_path / "state"
    folder.mkdir()
    db = folder / "gallery.db"
    with Gallery.open(db, create=True) as door:
        door.enroll("Alice", samples(2, 1))
        door.enroll("Bob", samples(1, 2))  # in the -wal only while the door has it open
        assert Path(f"{db}-wal").stat().st_size > 0
        listed = run_cli_on_read_only(folder, "list", "--json", "--db", str(db))
        no_traceback(listed)
        assert listed.returncode == 0, listed.stderr
        assert [p["name"] for p in json.loads(listed.stdout)] == ["Alice", "Bob"]

        copy = tmp_path / "copy"
        copy.mkdir()
        shutil.copy(db, copy / "gallery.db")
        shutil.copy(f"{db}-wal", copy / "gallery.db-wal")
    stranded = run_cli_on_read_only(copy, "list", "--db", str(copy / "gallery.db"))
    no_traceback(stranded)
    assert stranded.returncode == 2
    assert "its -wal file holds changes SQLite can only read with a -shm file" in stranded.stderr


def _real_sqlite_errors(tmp_path: Path) -> dict[str, sqlite3.DatabaseError]:
    """Errors SQLite itself raises: a write through a read-only connection, a file that
    cannot be opened, and a file that is not a database."""
    errors: dict[str, sqlite3.DatabaseError] = {}
    db = tmp_path / "ro.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.commit()
    read_only = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        read_only.execute("INSERT INTO t VALUES (1)")
    except sqlite3.DatabaseError as error:
        errors["read-only"] = error
    read_only.close()
    try:
        sqlite3.connect(tmp_path / "no such folder" / "x.db")
    except sqlite3.DatabaseError as error:
        errors["cannot open"] = error
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database, 100 bytes of it ".ljust(4096, b"!"))
    try:
        sqlite3.connect(junk).execute("SELECT * FROM sqlite_master").fetchall()
    except sqlite3.DatabaseError as error:
        errors["not a database"] = error
    return errors


def test_sqlite_errors_are_told_apart_without_their_code(tmp_path: Path) -> None:
    """Defect: for an error without `sqlite_errorcode` (Python 3.10 set none), a gallery in a
    folder that cannot be written (SQLITE_CANTOPEN, SQLITE_READONLY) was not recognised and
    reading commands failed with "is not a usable gallery". The errors are told apart by
    SQLite's own text when the code is missing, as the same errors stripped of it show."""
    from edge_app.errors import is_damage, sqlite_code

    errors = _real_sqlite_errors(tmp_path)
    assert sorted(errors) == ["cannot open", "not a database", "read-only"]
    for kind, error in errors.items():
        bare = type(error)(*error.args)  # the same error without its sqlite_errorcode
        assert getattr(bare, "sqlite_errorcode", None) is None
        assert sqlite_code(bare) == error.sqlite_errorcode & 0xFF, kind
        assert gallery_module._cannot_write(bare) == (kind != "not a database"), kind
        assert is_damage(bare) == (kind == "not a database"), kind
    locked = sqlite3.OperationalError("database is locked")  # another writer: not read-only
    assert sqlite_code(locked) == 5 and not gallery_module._cannot_write(locked)
    assert sqlite_code(sqlite3.OperationalError("no such table: people")) is None
