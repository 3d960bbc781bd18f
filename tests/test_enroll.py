"""Enrolment and identification end to end: real LFW photos, the int8 engine, real SQLite.

Every way an enrolment can be refused is tried against an existing gallery, and the gallery
file must come out byte-for-byte identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from lfw_photos import NEEDS_LFW_AND_MODELS, lfw

from edge_app.commands import enroll as enroll_command
from edge_app.commands import gallery as gallery_command
from edge_app.commands import identify as identify_command
from edge_app.config import RecognitionConfig
from edge_app.enroll import (
    CAMERA_SAMPLES,
    CAMERA_TIMEOUT_S,
    EnrollError,
    enroll_camera,
    enroll_photos,
    model_id,
)
from edge_app.errors import UserError
from edge_app.gallery import Gallery
from edge_app.images import read_image
from edge_app.matching import Matcher, MatchSettings
from edge_app.paths import SHARED_DATA
from edge_app.quality import DOMINANT_RATIO, Gates, Reason
from edge_app.visit_clips import background, head, paste

NEGATIVES = SHARED_DATA / "detection" / "negatives"

pytestmark = [*NEEDS_LFW_AND_MODELS]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_image(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def engine():
    from edge_app.engine import Engine

    return Engine.open(backend="cpu", threads=1)


@pytest.fixture
def gallery_db(tmp_path: Path, engine) -> Path:
    """A gallery with Emma Watson enrolled from two photos; fully checkpointed (no -wal)."""
    db = tmp_path / "gallery.db"
    enroll_photos(db, engine, "Emma Watson", [lfw("Emma_Watson", 1), lfw("Emma_Watson", 2)])
    assert not Path(f"{db}-wal").exists()
    return db


def bad_photo(kind: str, tmp_path: Path) -> tuple[Path, Reason]:
    """A photo that must stop an enrolment, and the reason it must be reported with."""
    good = lfw("Frank_Solich", 1)
    if kind == "truncated":
        path = tmp_path / "truncated.jpg"
        path.write_bytes(good.read_bytes()[:4000])
        return path, Reason.UNREADABLE
    if kind == "cut_with_end_marker":  # the cut hidden: libjpeg fills the rest with grey
        path = tmp_path / "cut-marked.jpg"
        data = good.read_bytes()
        path.write_bytes(data[: len(data) * 6 // 10] + b"\xff\xd9")
        return path, Reason.UNREADABLE
    if kind == "forged_png_header":  # 30000x30000 declared in a few kilobytes
        png = bytearray(cv2.imencode(".png", read_image(good))[1].tobytes())
        ihdr = struct.pack(">II", 30000, 30000) + bytes(png[24:29])
        png[16:29] = ihdr
        png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
        path = tmp_path / "huge.png"
        path.write_bytes(bytes(png))
        return path, Reason.UNREADABLE
    if kind == "fifo":
        path = tmp_path / "pipe.jpg"
        os.mkfifo(path)
        return path, Reason.UNREADABLE
    if kind == "dev_zero":
        return Path("/dev/zero"), Reason.UNREADABLE
    if kind == "toml":
        path = tmp_path / "config.toml"
        path.write_text('[gallery]\npath = "/var/lib/edge-app/gallery.db"\n')
        return path, Reason.UNREADABLE
    if kind == "not_an_image":
        path = tmp_path / "notes.jpg"
        path.write_text("these are not pixels\n")
        return path, Reason.UNREADABLE
    if kind == "empty":
        path = tmp_path / "empty.png"
        path.write_bytes(b"")
        return path, Reason.UNREADABLE
    if kind == "missing":
        return tmp_path / "missing.jpg", Reason.UNREADABLE
    if kind == "face_covered":
        covered = read_image(lfw("Emma_Watson", 1))
        covered[40:210, 60:190] = 128  # the only face in this photo, painted over
        return write_image(tmp_path / "covered.png", covered), Reason.NO_FACE
    if kind == "no_face_dog":
        return NEGATIVES / "dog.jpg", Reason.NO_FACE
    if kind == "face_hidden_by_transparency":  # found by an audit: a blank PNG enrolled a face
        face = cv2.cvtColor(read_image(good), cv2.COLOR_RGB2BGR)
        clear = np.dstack([face, np.zeros(face.shape[:2], np.uint8)])  # alpha 0 everywhere
        path = tmp_path / "clear.png"
        path.write_bytes(cv2.imencode(".png", clear)[1].tobytes())
        return path, Reason.NO_FACE
    if kind == "two_faces":
        return lfw("Alvaro_Uribe", 7), Reason.SEVERAL_FACES
    if kind == "two_faces_side_by_side":
        pair = np.hstack([read_image(good), read_image(lfw("Emma_Watson", 3))])
        return write_image(tmp_path / "pair.png", pair), Reason.SEVERAL_FACES
    if kind == "too_small":
        small = cv2.resize(read_image(good), None, fx=0.55, fy=0.55, interpolation=cv2.INTER_AREA)
        return write_image(tmp_path / "small.png", small), Reason.TOO_SMALL
    if kind == "blurry":
        return lfw("Charles_Moose", 11), Reason.BLURRY
    if kind == "blurred":
        blurred = cv2.GaussianBlur(read_image(good), (0, 0), 3)
        return write_image(tmp_path / "blurred.png", blurred), Reason.BLURRY
    if kind == "turned":
        return lfw("Hugh_Grant", 7), Reason.NOT_FRONTAL  # yaw -0.68: turned past the limit
    if kind == "tilted":
        rotation = cv2.getRotationMatrix2D((125, 125), 35, 1.0)
        tilted = cv2.warpAffine(read_image(good), rotation, (250, 250))
        return write_image(tmp_path / "tilted.png", tilted), Reason.NOT_FRONTAL
    if kind == "cut_by_edge":  # found by an audit: enrolled, a template of part of a face
        cut = np.ascontiguousarray(read_image(good)[:, 110:])  # 14% of the face box past the edge
        return write_image(tmp_path / "cut.png", cut), Reason.CUT_BY_EDGE
    raise AssertionError(kind)


BAD_KINDS = [
    "truncated",
    "cut_with_end_marker",
    "forged_png_header",
    "fifo",
    "dev_zero",
    "toml",
    "not_an_image",
    "empty",
    "missing",
    "face_covered",
    "no_face_dog",
    "face_hidden_by_transparency",
    "two_faces",
    "two_faces_side_by_side",
    "too_small",
    "blurry",
    "blurred",
    "turned",
    "tilted",
    "cut_by_edge",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_a_bad_photo_stops_the_enrolment_and_leaves_the_gallery_as_it_was(
    kind: str, tmp_path: Path, gallery_db: Path, engine
) -> None:
    photo, reason = bad_photo(kind, tmp_path)
    before = digest(gallery_db)
    good = [lfw("Frank_Solich", 2), lfw("Frank_Solich", 3)]
    with pytest.raises(EnrollError) as caught:
        enroll_photos(gallery_db, engine, "Frank Solich", [good[0], photo, good[1]])
    [problem] = caught.value.problems
    assert (problem.source, problem.reason) == (str(photo), reason)
    assert str(photo) in str(caught.value) and "gallery is unchanged" in str(caught.value)
    assert digest(gallery_db) == before
    assert not Path(f"{gallery_db}-wal").exists()
    with Gallery.open(gallery_db) as gallery:
        assert not gallery.has("Frank Solich")


def test_every_bad_photo_is_reported_at_once(tmp_path: Path, engine) -> None:
    photos, reasons = zip(*(bad_photo(kind, tmp_path) for kind in BAD_KINDS), strict=True)
    db = tmp_path / "new.db"
    with pytest.raises(EnrollError) as caught:
        enroll_photos(db, engine, "Frank Solich", [lfw("Frank_Solich", 2), *photos])
    assert [p.reason for p in caught.value.problems] == list(reasons)
    # A first enrolment that fails does not even create the gallery.
    assert not db.exists()


def test_the_dominant_face_is_the_one_enrolled(tmp_path: Path, engine) -> None:
    """A photo with a small face in the background enrols the big one, and only that."""
    frame = background()
    for name, size, x, y in (("Frank_Solich", 360, 40, 60), ("Emma_Watson", 120, 480, 40)):
        rgb, alpha = head(read_image(lfw(name, 1)), size)
        paste(frame, rgb, alpha, x, y)
    faces = engine.detect(frame)
    assert len(faces) == 2
    big, small = np.argsort(-faces.sizes)
    assert faces.sizes[big] >= DOMINANT_RATIO * faces.sizes[small]
    db = tmp_path / "gallery.db"
    photo = write_image(tmp_path / "with_bystander.png", frame)
    result = enroll_photos(db, engine, "Frank Solich", [photo, lfw("Frank_Solich", 2)])
    assert result.added == [str(photo), str(lfw("Frank_Solich", 2))]
    with Gallery.open(db) as gallery:
        stored = gallery.embeddings("Frank Solich")[0]
    np.testing.assert_allclose(stored, engine.embed(frame, faces[int(big)])[0], atol=1e-5)
    bystander = engine.embed(frame, faces[int(small)])[0]
    assert float(stored @ bystander) < 0.5  # not Emma Watson's face


def test_name_conflicts_leave_the_gallery_as_it_was(gallery_db: Path, engine) -> None:
    before = digest(gallery_db)
    with pytest.raises(UserError, match="already enrolled; use --add"):
        enroll_photos(gallery_db, engine, "Emma Watson", [lfw("Emma_Watson", 3)])
    with pytest.raises(UserError, match="nobody named 'Frank Solich'"):
        enroll_photos(gallery_db, engine, "Frank Solich", [lfw("Frank_Solich", 1)], add=True)
    # A typo says whom it may mean.
    with pytest.raises(
        UserError, match=r"'Ema Watson' is enrolled \(did you mean 'Emma Watson'\?\)"
    ):
        enroll_photos(gallery_db, engine, "Ema Watson", [lfw("Emma_Watson", 3)], add=True)
    # The same name in other capitals and spacing is the same person.
    with pytest.raises(UserError, match="already enrolled; use --add"):
        enroll_photos(gallery_db, engine, "  emma   WATSON", [lfw("Emma_Watson", 3)])
    assert digest(gallery_db) == before


def test_one_person_enrolled_under_a_second_name_is_said_to_make_the_door_stricter(
    gallery_db: Path, engine
) -> None:
    """Found by an audit: Emma Watson enrolled again as "Emma" from two other photos was
    enrolled without a word, and the door's lookalike check then raised its threshold for
    everyone (the photos match as a lookalike's would, not as the same face). The result now
    says so, and whom they match; another person enrolled next to her gets no such word."""
    door = RecognitionConfig()
    again = enroll_photos(
        gallery_db, engine, "Emma", [lfw("Emma_Watson", 3), lfw("Emma_Watson", 4)],
        recognition=door,
    )  # fmt: skip
    assert again.lookalike_of == "Emma Watson"
    assert again.lookalike.startswith("'Emma' matches 'Emma Watson' at 0.")
    assert "the door raises its threshold for everyone from 0.584 to 0." in again.lookalike
    other = enroll_photos(
        gallery_db, engine, "Frank Solich", [lfw("Frank_Solich", 1), lfw("Frank_Solich", 2)],
        recognition=door,
    )  # fmt: skip
    assert (other.lookalike, other.lookalike_of) == ("", "")
    warned = enroll_photos(  # with lookalikes = "warn" the door keeps its threshold: said so
        gallery_db, engine, "Emma W", [lfw("Emma_Watson", 5)],
        recognition=RecognitionConfig(lookalikes="warn"),
    )  # fmt: skip
    assert "strangers who look like them can be let in" in warned.lookalike
    with Gallery.open(gallery_db) as gallery:  # enrolled all the same: the user decides
        assert {"Emma", "Emma W", "Frank Solich"} <= {p.name for p in gallery.people()}


def test_enrol_add_and_identify(gallery_db: Path, engine) -> None:
    result = enroll_photos(
        gallery_db, engine, "Frank Solich", [lfw("Frank_Solich", 1), lfw("Frank_Solich", 2)]
    )
    assert (result.created, len(result.added), result.samples) == (True, 2, 2)
    result = enroll_photos(gallery_db, engine, "Emma Watson", [lfw("Emma_Watson", 3)], add=True)
    assert (result.created, result.samples) == (False, 3)
    with Gallery.open(gallery_db) as gallery:
        matrix = gallery.load_matrix()
        assert gallery.models() == {model_id(engine)}
        frank = gallery.embeddings("Frank Solich", mirrors=True)
    assert gallery_db.stat().st_mode & 0o777 == 0o600
    # Each photo is stored with its mirror image's embedding, matched as one more row.
    assert len(matrix) == 2 * 5 and matrix.names == ("Emma Watson", "Frank Solich")
    photo = read_image(lfw("Frank_Solich", 1))
    faces = engine.detect(photo)
    np.testing.assert_allclose(frank[0], engine.embed(photo, faces)[0], atol=1e-6)
    np.testing.assert_allclose(frank[1], engine.embed(photo, faces, mirror=True)[0], atol=1e-6)
    assert 0.5 < float(frank[0] @ frank[1]) < 0.999  # the same face, not the same vector

    probes = [lfw("Emma_Watson", 4), lfw("Frank_Solich", 3), lfw("George_HW_Bush", 1)]
    embeddings = np.vstack([engine.process(read_image(p))[1] for p in probes])
    matches = Matcher(matrix, MatchSettings(threshold=0.0)).identify(embeddings)
    assert matches.best[:2] == ["Emma Watson", "Frank Solich"]
    # The stranger resembles nobody as much as the enrolled people resemble themselves.
    assert matches.scores[2] < min(matches.scores[:2])


def test_a_photo_whose_mirror_image_is_another_face_is_stored_alone(
    gallery_db: Path, engine
) -> None:
    """The gallery refuses a mirror embedding of another face (it would be matched as this
    person); enrolment, which never saw one on LFW, keeps the photo and drops the mirror."""

    class OtherFaceInTheMirror:
        def __getattr__(self, name: str) -> Any:
            return getattr(engine, name)

        def embed(self, frame: np.ndarray, faces, mirror: bool = False) -> np.ndarray:
            found = engine.embed(frame, faces)
            return np.ascontiguousarray(found[:, ::-1]) if mirror else found  # cosine ~0

    photos = [lfw("Frank_Solich", 1), lfw("Frank_Solich", 2)]
    result = enroll_photos(gallery_db, OtherFaceInTheMirror(), "Frank Solich", photos)
    assert (result.created, result.samples) == (True, 2)
    with Gallery.open(gallery_db) as gallery:
        assert gallery.without_mirrors() == 2
        stored = gallery.embeddings("Frank Solich", mirrors=True)
    expected = [engine.embed(read_image(p), engine.detect(read_image(p)))[0] for p in photos]
    np.testing.assert_allclose(stored, np.stack(expected), atol=1e-6)


def test_near_duplicates_are_skipped_not_errors(tmp_path: Path, gallery_db: Path, engine) -> None:
    copy = tmp_path / "copy.jpg"
    shutil.copy(lfw("Frank_Solich", 1), copy)
    result = enroll_photos(gallery_db, engine, "Frank Solich", [lfw("Frank_Solich", 1), copy])
    assert result.added == [str(lfw("Frank_Solich", 1))]
    assert [(p.source, p.reason) for p in result.skipped] == [(str(copy), Reason.NEAR_DUPLICATE)]
    assert result.samples == 1

    before = digest(gallery_db)
    again = enroll_photos(gallery_db, engine, "Frank Solich", [copy], add=True)
    assert (again.added, again.samples) == ([], 1)
    assert digest(gallery_db) == before


def test_photos_of_two_people_under_one_name_are_refused(
    tmp_path: Path, gallery_db: Path, engine
) -> None:
    """A folder that mixes people would let each of them in under the one name."""
    frank = [lfw("Frank_Solich", n) for n in (1, 2)]
    emma = lfw("Emma_Watson", 3)
    db = tmp_path / "new.db"
    with pytest.raises(EnrollError, match="nothing enrolled for 'Frank Solich'") as caught:
        enroll_photos(db, engine, "Frank Solich", [*frank, emma])
    assert [(p.source, p.reason) for p in caught.value.problems] == [
        (str(emma), Reason.ANOTHER_PERSON)
    ]
    assert "another person than most of the photos" in str(caught.value)
    with pytest.raises(EnrollError) as caught:
        enroll_photos(db, engine, "Frank Solich", [frank[0], emma])
    assert {p.reason for p in caught.value.problems} == {Reason.ANOTHER_PERSON}
    assert len(caught.value.problems) == 2
    assert not db.exists()

    before = digest(gallery_db)  # Emma Watson enrolled; Frank's photo added to her
    with pytest.raises(EnrollError, match="none of the person's enrolled photos"):
        enroll_photos(gallery_db, engine, "Emma Watson", [frank[0]], add=True)
    assert digest(gallery_db) == before
    # Her own third photo is welcome.
    assert enroll_photos(gallery_db, engine, "Emma Watson", [emma], add=True).samples == 3


def test_a_photo_of_someone_enrolled_added_to_another_person_names_them(
    gallery_db: Path, engine
) -> None:
    """--add with a photo from the wrong folder: the refusal says whose face it is."""
    frank = [lfw("Frank_Solich", n) for n in (1, 2)]
    enroll_photos(gallery_db, engine, "Frank Solich", frank)
    before = digest(gallery_db)
    with pytest.raises(EnrollError) as caught:
        enroll_photos(gallery_db, engine, "Frank Solich", [lfw("Emma_Watson", 3)], add=True)
    [problem] = caught.value.problems
    assert problem.reason is Reason.ANOTHER_PERSON
    assert "; it looks like 'Emma Watson', already enrolled (cosine 0." in problem.message
    assert problem.message.endswith(
        "add it to them with `edge-app enroll --add 'Emma Watson' PHOTO`"
    )
    assert digest(gallery_db) == before
    # A stranger's photo is refused without a name.
    with pytest.raises(EnrollError) as caught:
        enroll_photos(gallery_db, engine, "Frank Solich", [lfw("Colin_Powell", 38)], add=True)
    assert "looks like" in str(caught.value) and "already enrolled" not in str(caught.value)


def test_camera_enrolment_passes_over_another_person_s_face(tmp_path: Path, engine) -> None:
    frank = [read_image(lfw("Frank_Solich", n)) for n in (1, 2, 3)]
    frames = [frank[0], read_image(lfw("Emma_Watson", 1)), frank[1], frank[2]]
    db = tmp_path / "camera.db"
    result = enroll_camera(db, engine, "Frank Solich", iter(frames), count=3, progress=False)
    assert result.added == ["camera frame 0", "camera frame 2", "camera frame 3"]
    # The caller's gates count here as for photos: with no floor, Emma's frame is taken.
    anyone = Gates(same_person=-1.0)
    lenient = enroll_camera(
        tmp_path / "lenient.db",
        engine,
        "Frank",
        iter(frames),
        count=3,
        gates=anyone,
        progress=False,
    )
    assert lenient.added == ["camera frame 0", "camera frame 1", "camera frame 2"]


def test_face_crops_only_when_asked(gallery_db: Path, engine) -> None:
    enroll_photos(gallery_db, engine, "Frank Solich", [lfw("Frank_Solich", 1)], keep_crops=True)
    with Gallery.open(gallery_db) as gallery:
        crops = {p.name: p.crops for p in gallery.people()}
        [blob] = gallery._db.execute(
            "SELECT face_crop FROM samples WHERE face_crop IS NOT NULL"
        ).fetchone()
    assert crops == {"Emma Watson": 0, "Frank Solich": 1}
    crop = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
    assert crop is not None
    assert 80 <= crop.shape[0] <= 250 and 80 <= crop.shape[1] <= 250


class _LivenessThatFails:
    """An engine whose liveness model gives NaN (a broken model file or runtime)."""

    def __init__(self, engine) -> None:
        self._engine = engine

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def liveness(self, frame: np.ndarray, faces) -> np.ndarray:
        return np.full(len(faces), np.nan, np.float32)


def test_camera_enrolment_takes_no_frame_a_liveness_model_scores_as_not_a_number(
    tmp_path: Path, engine
) -> None:
    """NaN is below no threshold: such a score let any frame through the liveness check, a
    photo held up to the camera too. It counts as not live."""
    frames = [read_image(lfw("Frank_Solich", n)) for n in (1, 2, 3)]
    db = tmp_path / "camera.db"
    with pytest.raises(EnrollError, match="only 0 of 3") as caught:
        enroll_camera(
            db,
            _LivenessThatFails(engine),
            "Frank Solich",
            iter(frames),
            count=3,
            progress=False,
            live_threshold=0.5,
        )
    assert {problem.reason for problem in caught.value.problems} == {Reason.NOT_LIVE}
    assert "liveness 0.00 < 0.50" in str(caught.value)
    assert not db.exists()


def test_identify_reports_a_liveness_score_that_is_not_a_number_as_0_and_not_live(
    tmp_path: Path, engine, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Unchecked, NaN was printed into `identify --json` as the token NaN, which JSON has not,
    and called live by nothing and not live by nothing either."""
    from edge_app.engine import Engine

    assert engine.has_liveness  # the bundled models include it
    common = ("--db", str(tmp_path / "g.db"), "--backend", "cpu")
    assert edge_app("enroll", *common, "Frank Solich", str(lfw("Frank_Solich", 1)))[0] == 0
    capsys.readouterr()
    monkeypatch.setattr(Engine, "liveness", _LivenessThatFails.liveness)
    assert edge_app("identify", *common, "--json", str(lfw("Frank_Solich", 2))) == (0, "")
    strict = json.JSONDecoder(parse_constant=lambda token: pytest.fail(f"{token} in the JSON"))
    (photo,) = strict.decode(capsys.readouterr().out)
    (face,) = photo["faces"]
    assert face["name"] == "Frank Solich"
    assert face["liveness"] == {"score": 0.0, "live": False}


def test_camera_enrolment_passes_over_bad_frames(tmp_path: Path, engine) -> None:
    frank = [read_image(lfw("Frank_Solich", n)) for n in (1, 2, 3)]
    frames = [
        read_image(NEGATIVES / "dog.jpg"),
        frank[0],
        frank[0].copy(),  # the person did not move: a near-duplicate
        cv2.GaussianBlur(frank[1], (0, 0), 3),
        frank[1],
        frank[2],
        frank[2],  # never reached: three samples are enough
    ]
    db = tmp_path / "camera.db"
    result = enroll_camera(db, engine, "Frank Solich", iter(frames), count=3, progress=False)
    assert result.added == ["camera frame 1", "camera frame 4", "camera frame 5"]
    assert result.samples == 3


def test_camera_enrolment_that_runs_out_writes_nothing(tmp_path: Path, engine) -> None:
    frames = [read_image(lfw("Frank_Solich", 1)), read_image(NEGATIVES / "dog.jpg")]
    db = tmp_path / "camera.db"
    with pytest.raises(EnrollError, match="only 1 of 3 good frames") as caught:
        enroll_camera(db, engine, "Frank Solich", iter(frames), count=3, progress=False)
    assert caught.value.problems[0].reason is Reason.NO_FACE
    assert not db.exists()


def edge_app(*argv: str) -> tuple[int, str]:
    """Run one of these commands as edge_app.cli.main would: (exit code, error message)."""
    parser = argparse.ArgumentParser(prog="edge-app")
    subparsers = parser.add_subparsers(required=True)
    for module in (enroll_command, gallery_command, identify_command):
        module.register(subparsers)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args)), ""
    except UserError as error:
        return 2, str(error)


def test_command_line_round_trip(tmp_path: Path, capsys) -> None:
    db, other = str(tmp_path / "door1.db"), str(tmp_path / "door2.db")
    common = ("--db", db, "--backend", "cpu", "--threads", "1")
    folder = tmp_path / "frank"
    folder.mkdir()
    for n in (1, 2):
        shutil.copy(lfw("Frank_Solich", n), folder)
    assert edge_app("enroll", *common, "--json", "Frank Solich", str(folder)) == (0, "")
    enrolled = json.loads(capsys.readouterr().out)
    assert (enrolled["name"], len(enrolled["added"]), enrolled["samples"]) == ("Frank Solich", 2, 2)
    assert edge_app("enroll", *common, "Emma", str(lfw("Emma_Watson", 1)))[0] == 0

    code, message = edge_app("enroll", *common, "Emma", str(lfw("Emma_Watson", 2)))
    assert code == 2 and "--add" in message
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(lfw("Emma_Watson", 2).read_bytes()[:3000])
    code, message = edge_app("enroll", *common, "--add", "Emma", str(truncated))
    assert code == 2 and "truncated JPEG" in message
    capsys.readouterr()

    assert edge_app("list", "--db", db, "--json") == (0, "")
    listed = json.loads(capsys.readouterr().out)
    assert [(p["name"], p["samples"]) for p in listed] == [("Emma", 1), ("Frank Solich", 2)]

    images = [str(lfw("Frank_Solich", 3)), str(lfw("Alvaro_Uribe", 7))]
    assert edge_app("identify", *common, "--threshold", "0.45", "--json", *images) == (0, "")
    identified = json.loads(capsys.readouterr().out)
    assert [entry["image"] for entry in identified] == images
    assert [face["name"] for face in identified[0]["faces"]] == ["Frank Solich"]
    assert [face["name"] for face in identified[1]["faces"]] == [None, None]
    for face in identified[0]["faces"] + identified[1]["faces"]:
        assert set(face) == {"name", "access", "score", "box", "liveness"}
        assert face["access"] is (None if face["name"] is None else True)
        assert -1.0 <= face["score"] <= 1.0 and len(face["box"]) == 4
        live = face["liveness"]  # null only for models without a liveness model
        assert live is None or (0.0 <= live["score"] <= 1.0 and isinstance(live["live"], bool))

    export = tmp_path / "door1.jsonl"
    assert edge_app("export", "--db", db, str(export)) == (0, "")
    assert edge_app("import", "--db", other, str(export)) == (0, "")
    code, message = edge_app("import", "--db", other, str(export))
    assert code == 2 and "--replace" in message
    assert edge_app("rename", "--db", other, "Emma", "Emma Watson") == (0, "")
    assert edge_app("remove", "--db", other, "Frank Solich") == (0, "")
    capsys.readouterr()
    assert edge_app("list", "--db", other, "--json") == (0, "")
    assert [p["name"] for p in json.loads(capsys.readouterr().out)] == ["Emma Watson"]


def test_camera_options_are_refused_with_photos(tmp_path: Path, capsys) -> None:
    """`--samples 3` with photos was silently ignored: the user thought 3 were needed."""
    db = tmp_path / "door.db"
    photo = str(lfw("Frank_Solich", 1))
    for option in (["--samples", "3"], ["--timeout", "5"], ["--source", "0"]):
        code, message = edge_app("enroll", "--db", str(db), *option, "Frank", photo)
        assert code == 2 and message.startswith(f"{option[0]}: for --camera only")
    assert not db.exists()
    # The help states the camera's own defaults.
    parser = argparse.ArgumentParser()
    enroll_command.register(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["enroll", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"frames to collect, 1 to 50 (default: {CAMERA_SAMPLES})" in text
    assert f"writing nothing; at most 3600 (default: {CAMERA_TIMEOUT_S:g})" in text


@pytest.mark.slow
def test_identify_reports_boxes_in_the_photo_s_own_pixels(
    tmp_path: Path, gallery_db: Path, capsys
) -> None:
    """A photo larger than MAX_SIDE is brought down for detection; boxes come back scaled up."""
    small = lfw("Emma_Watson", 3)
    big = tmp_path / "big.jpg"
    write_image(big, cv2.resize(read_image(small), (3000, 3000), interpolation=cv2.INTER_CUBIC))
    # One fixed cascade: this checks the box mapping, not how two cascades' boxes differ.
    common = ("--db", str(gallery_db), "--backend", "cpu", "--threads", "1", "--cascade", "int8")
    assert edge_app("identify", *common, "--json", str(small), str(big)) == (0, "")
    [(small_face,), (big_face,)] = [e["faces"] for e in json.loads(capsys.readouterr().out)]
    assert small_face["name"] == big_face["name"] == "Emma Watson"
    np.testing.assert_allclose(np.array(big_face["box"]) / 12, small_face["box"], atol=4)


def test_an_interrupt_after_the_enrolment_is_written_still_reports_it(
    gallery_db: Path, engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an audit: Ctrl-C during the lookalike check, which runs after the commit,
    said "interrupted" and exit 130 (with --json, nothing) for a person who was enrolled."""
    import edge_app.enroll as enroll_module

    def interrupted(*args: object, **kwargs: object) -> tuple[str, str]:
        raise KeyboardInterrupt

    monkeypatch.setattr(enroll_module, "lookalike_warning", interrupted)
    photos = [lfw("Frank_Solich", 1), lfw("Frank_Solich", 2)]
    result = enroll_photos(
        gallery_db, engine, "Frank Solich", photos, recognition=RecognitionConfig()
    )
    assert (result.created, result.samples, result.lookalike) == (True, 2, "")
    assert "the lookalike check was cut short; 'Frank Solich' is enrolled" in caplog.text
    with Gallery.open(gallery_db) as gallery:
        assert gallery.has("Frank Solich")
