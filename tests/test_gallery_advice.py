"""The gallery file's refusals that end with advice (edge_app.advice): the command line's
words kept byte for byte, the People page's without a flag or a `sudo` it cannot act on.

Tests run as root (CI), whom no folder mode stops: where the refusal needs a folder that
cannot be written, SQLite's or the system's own error is raised where it would come.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from people import samples

import edge_app.gallery as gallery_module
from edge_app.advice import Advice, web_message
from edge_app.gallery import Gallery, GalleryError


def refusal(open_it: Callable[[], object]) -> GalleryError:
    with pytest.raises(GalleryError) as caught:
        open_it()
    return caught.value


def refused(path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> GalleryError:
    """The refusal of `kind` for a gallery at `path` (made first where the kind needs one)."""
    if kind in ("write", "read"):
        with Gallery.open(path, create=True) as gallery:
            gallery.enroll("Ada", samples(2, 1))
    if kind == "not a gallery":
        path.write_text("a note, not a gallery\n" * 10)
        return refusal(lambda: Gallery.open(path))
    if kind == "dangling link":
        path.symlink_to(path.parent / "gone" / "gallery.db")
        return refusal(lambda: Gallery.open(path, create=True))
    if kind in ("mkstemp", "link_new"):  # the folder cannot be written: before, then after
        target = gallery_module.tempfile if kind == "mkstemp" else gallery_module
        monkeypatch.setattr(target, kind, denied)
        return refusal(lambda: Gallery.open(path, create=True))
    if kind == "write":  # no -shm file can be made beside it: SQLite's own refusal
        monkeypatch.setattr(
            Gallery, "_configure", sqlite_says("attempt to write a readonly database")
        )
        return refusal(lambda: Gallery.open(path))
    # "read": changes in its -wal file, in a folder where no -shm can be made beside it
    monkeypatch.setattr(gallery_module, "storage_problem", lambda folder: "read-only")
    monkeypatch.setattr(gallery_module, "read_only_uri", lambda p: (f"file:{p}?mode=ro", True))
    monkeypatch.setattr(Gallery, "_check_ours", sqlite_says("unable to open database file"))
    return refusal(lambda: Gallery.open(path, read_only=True))


def denied(*args: object, **kwargs: object) -> None:
    raise PermissionError(errno.EACCES, "Permission denied")


def sqlite_says(message: str) -> Callable[[Gallery], None]:
    def fail(self: Gallery) -> None:
        raise sqlite3.OperationalError(message)

    return fail


KINDS = ("not a gallery", "dangling link", "mkstemp", "link_new", "write", "read")


@pytest.mark.parametrize("kind", KINDS)
def test_the_command_lines_words_are_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    path = tmp_path / "gallery.db"
    said = {
        "not a gallery": f"{path} is not an SQLite database, so not an edge-app gallery; pass "
        "--db with the path of an edge-app gallery (it is left untouched)",
        # Defect (a new user's walkthrough): said without why, at a path in a folder that
        # can be written, the refusal sent them looking for a permission problem.
        "dangling link": f"cannot create the gallery {path}: it is a symbolic link to "
        f"{path.parent / 'gone' / 'gallery.db'}, which does not exist; pass --db with a "
        "writable location",
        "mkstemp": f"cannot create the gallery {path}: Permission denied; pass --db with a "
        "writable location",
        "link_new": f"cannot create the gallery {path}: Permission denied; pass --db with a "
        "writable location",
        "write": f"cannot write the gallery {path} (attempt to write a readonly database), and "
        "this command changes it: run it as the user that owns the gallery (sudo -u edge-app), "
        "or give a --db in a folder you can write",
        "read": f"cannot read the gallery {path}: its folder cannot be written and its -wal "
        "file holds changes SQLite can only read with a -shm file beside it; read it as its "
        "owner (sudo -u edge-app), or once the door is running",
    }[kind]
    assert str(refused(path, monkeypatch, kind)) == said


def test_the_page_says_what_the_hubs_service_needs_and_no_flag_or_sudo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The People page showed the command line's advice ("pass --db with a writable
    location", "run it as the user that owns the gallery (sudo -u edge-app)"): a web user has
    neither a --db nor a shell. It says what the hub's service needs, and where the docs
    say how (docs/WEB.md)."""
    advised = set()
    for number, kind in enumerate(KINDS):
        folder = tmp_path / str(number)
        folder.mkdir(mode=0o700)
        with monkeypatch.context() as patched:
            error = refused(folder / "gallery.db", patched, kind)
        page = web_message(error)
        assert "--db" not in page and "sudo" not in page, (kind, page)
        assert "docs/WEB.md" in page or "[gallery] path" in page, (kind, page)
        assert page.startswith(error.args[0].text), (kind, page)  # the problem, as said
        advised.add(error.args[0].advice)
    assert advised == {
        Advice.NOT_A_GALLERY,
        Advice.CREATE_WHERE_WRITABLE,
        Advice.WRITE_AS_OWNER,
        Advice.READ_AS_OWNER,
    }
