"""A full, inode-less or read-only filesystem is named as such (edge_app/storage.py): by
the gallery's writing commands and by doctor, which opens the gallery read-only there as the
door does. Found by a storage audit: SQLite's "unable to open database file" led to "run it
as the user that owns the gallery" (as root), doctor failed a gallery the door would read
and gave the owner-and-permissions fix, and reading commands on a nearly full disk made the
-wal and -shm files and took the last free bytes.

Each case runs in a mount namespace of its own (root), on a small tmpfs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_daemon_fast import ADA, EMBEDDINGS, NAME, ScriptedEngine, gallery_of_ada
from test_doctor_upgrade import two_people
from test_hostile_input import in_own_mounts, needs_read_only_mount

import edge_app.gallery as gallery_module
from edge_app.config import RecognitionConfig
from edge_app.daemon import Recognizer
from edge_app.gallery import Gallery
from edge_app.storage import storage_problem

# Runs in the namespace: $1 the mount point, then how to spoil it, then Python's argv.
MOUNT = """
set -e
mount -t tmpfs -o size=2m,nr_inodes=64,mode=0700 tmpfs "$1"
cp "$2" "$1/gallery.db"
case "$3" in
  full) dd if=/dev/zero of="$1/fill" bs=4k 2>/dev/null || true ;;
  inodes) i=0; while touch "$1/f$i" 2>/dev/null; do i=$((i+1)); done ;;
  read-only) mount -o remount,ro "$1" ;;
esac
shift 3
exec "$@"
"""

# What the commands and doctor say there, as JSON on stdout.
PROBE = """
import json, subprocess, sys
from pathlib import Path
from edge_app.commands.doctor import _gallery_checks, _storage_checks
from edge_app.config import load_config
from edge_app.storage import storage_problem
folder = Path(sys.argv[1])
db = folder / "gallery.db"
config = Path(sys.argv[2])
config.write_text(f'[gallery]\\npath = "{db}"\\n[events]\\ndb = "{folder / "events.db"}"\\n')
loaded = load_config(config)
before = sorted(p.name for p in folder.iterdir() if not p.name.startswith("f"))
listed = subprocess.run([sys.executable, "-m", "edge_app.cli", "list", "--json", "--db", str(db)],
                        capture_output=True, text=True)
after = sorted(p.name for p in folder.iterdir() if not p.name.startswith("f"))
renamed = subprocess.run([sys.executable, "-m", "edge_app.cli", "rename", "Bob", "Rob", "--db",
                          str(db)], capture_output=True, text=True)
print(json.dumps({
    "problem": storage_problem(folder),
    "storage": [(c.status, c.detail, c.fix) for c in _storage_checks(loaded)],
    "gallery": [(c.status, c.detail, c.fix) for c in _gallery_checks(loaded)],
    "listed": (
        [p["name"] for p in json.loads(listed.stdout)] if listed.returncode == 0 else listed.stderr
    ),
    "files_before": before, "files_after": after,
    "renamed": (renamed.returncode, renamed.stderr),
}))
"""


def spoiled(tmp_path: Path, how: str) -> dict:
    folder = tmp_path / "state"
    folder.mkdir()
    gallery = two_people(tmp_path / "gallery.db")
    done = in_own_mounts(
        MOUNT,
        str(folder),
        str(gallery),
        how,
        sys.executable,
        "-c",
        PROBE,
        str(folder),
        str(tmp_path / "door.toml"),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_folder_that_can_be_written_has_no_storage_problem(tmp_path: Path) -> None:
    assert storage_problem(tmp_path) is None
    assert storage_problem(tmp_path / "not there") is None  # the caller's error says more


@needs_read_only_mount
def test_a_read_only_filesystem_is_named_and_the_gallery_still_read(tmp_path: Path) -> None:
    seen = spoiled(tmp_path, "read-only")
    assert "is read-only" in seen["problem"]
    ((status, detail, fix),) = seen["storage"]
    assert status == "fail" and "is read-only" in detail and "remount" in fix
    status, detail, fix = seen["gallery"][0]
    assert status != "fail" and "2 people" in detail, (detail, fix)
    assert seen["listed"] == ["Bob", "Emma"]
    code, said = seen["renamed"]
    assert code == 2 and "is read-only" in said and "owns the gallery" not in said


@needs_read_only_mount
def test_a_full_disk_is_named_and_reading_the_gallery_takes_no_space(tmp_path: Path) -> None:
    seen = spoiled(tmp_path, "full")
    assert "is full" in seen["problem"]
    ((status, detail, _),) = seen["storage"]
    assert status == "fail" and "is full" in detail
    assert seen["gallery"][0][0] != "fail"
    assert seen["listed"] == ["Bob", "Emma"]
    assert seen["files_after"] == seen["files_before"] == ["gallery.db"]  # no -wal, no -shm
    code, said = seen["renamed"]
    assert code == 2 and "the disk is full" in said


@needs_read_only_mount
def test_a_filesystem_without_free_inodes_is_named(tmp_path: Path) -> None:
    seen = spoiled(tmp_path, "inodes")
    assert "no free inodes" in seen["problem"]
    assert seen["storage"][0][0] == "fail"
    assert seen["listed"] == ["Bob", "Emma"]
    code, said = seen["renamed"]
    assert code == 2 and "no free inodes" in said and "owns the gallery" not in said


def test_access_revoked_while_the_door_opens_on_a_nearly_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: on a disk storage_problem calls full the door opens the gallery
    read-only (immutable) at once; a change committed between the look at the -wal and the
    stamp taken at the end of the open was never seen (the immutable read sees the main file
    only, the stamp already the new -wal): access revoked, the door still admitted Ada. The
    stamp is now taken first."""
    gallery = gallery_of_ada(tmp_path)
    # another program has the gallery open meanwhile (the web page, an `edge-app` command
    # still running): the -wal is then not copied into the file when the writer closes
    web = Gallery.open(gallery)
    web.people()
    monkeypatch.setattr(gallery_module, "storage_problem", lambda folder: "the disk is full")
    real = gallery_module.read_only_uri
    fired: list[int] = []

    def uri_then_a_commit(path):
        answer = real(path)
        if not fired:
            fired.append(1)
            # `edge-app access "Ada Lovelace" no` from another process, a few ms later
            with Gallery.open(gallery) as other:
                other.set_access(NAME, False)
        return answer

    monkeypatch.setattr(gallery_module, "read_only_uri", uri_then_a_commit)
    recognizer = Recognizer(ScriptedEngine(), gallery, RecognitionConfig())
    try:
        for _ in range(20):  # 20 frames later
            recognizer.reload_if_changed()
        with Gallery.open(gallery, read_only=True) as check:
            assert {p.name: p.access for p in check.people()} == {NAME: False}
        vote = recognizer.match(EMBEDDINGS[ADA][None])[0]
        assert vote.name == NAME
        assert not vote.admitted, "access revoked 20 frames ago, the door still admits Ada"
    finally:
        recognizer.close()
        web.close()
