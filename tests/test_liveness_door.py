"""The liveness gate at the door: [liveness] off / log / require.

Fast: the policy as pure logic (held unlock, one spoof per track, log mode, off), the rule's
resolution against the models, and the real Daemon with a scripted engine (frames carry a
code: 1 = the enrolled person live, 3 = a printed photo of them, 0 = nobody).
Slow (needs ../shared/data and the liveness models): the real door on NUAA clips. The
subject is enrolled from live frames of one session; a clip of them live from another
session unlocks, and clips of their printed photo never unlock and log `spoof`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory
from test_daemon_fast import (
    ADA,
    ADA_FAIR,
    EMBEDDINGS,
    NAME,
    NOBODY,
    PIN,
    STRANGER,
    ScriptedEngine,
    _door_toml,
    assert_fail_secure,
    door,
    face,
    gallery_of_ada,
    jsonl,
    states,
    unit,
    write_frames,
)
from test_daemon_reload_review import a_disk_that_fails, at_frame
from test_policy import set_clock

from edge_app.config import LivenessConfig, PolicyConfig, parse_config
from edge_app.daemon import Daemon, FaceEngine
from edge_app.engine import Engine
from edge_app.errors import UserError
from edge_app.events import read_events
from edge_app.faces import Faces
from edge_app.liveness_rule import LiveRule
from edge_app.policy import (
    LEFT_UNJUDGED,
    NOT_LIVE,
    NOT_LIVE_LOGGED,
    OWN_FACE_DOUBT,
    RECOGNIZED,
    SPOOF,
    UNKNOWN,
    UNLOCK,
    Policy,
    Vote,
)

PHOTO = 3  # a printed photo of Ada: her embedding, a low liveness score
STRANGER_PHOTO = 8  # a printed photo of the stranger: her embedding, a low liveness score
LIVE_SCORE, PHOTO_SCORE, THRESHOLD = 0.93, 0.04, 0.5


def rule(mode: str = "require", min_live_frames: int = 4) -> LiveRule:
    return LiveRule(mode, THRESHOLD, min_live_frames)


def policy(mode: str = "require", min_live_frames: int = 4) -> Policy:
    return Policy(
        PolicyConfig(hits=3, window=5, cooldown_seconds=30.0),
        rule(mode, min_live_frames),
        clock=lambda: 1000.0,
        wall_clock=set_clock(datetime(2024, 5, 1, 12, 0)),
    )


def ada(liveness: float | None) -> Vote:
    return Vote("ada", 0.8, 0.1, liveness)


def feed(rules: Policy, scores: Sequence[float | None], track: int = 1) -> list[tuple[int, str]]:
    """(frame index, decision kind) for a track whose every frame matches Ada."""
    return [
        (index, decision.kind)
        for index, score in enumerate(scores)
        for decision in rules.vote(track, ada(score))
    ]


# ------------------------------------------------------------------ policy (fast, pure)


def test_require_holds_the_unlock_until_enough_live_frames() -> None:
    rules = policy(min_live_frames=4)
    decisions = feed(rules, [LIVE_SCORE] * 6)
    # Recognised on the 3rd frame (3 hits), unlocked on the 4th (4 live frames).
    assert decisions == [(2, RECOGNIZED), (3, UNLOCK)]


def test_require_track_is_unsettled_while_it_waits_for_liveness() -> None:
    rules = policy(min_live_frames=4)
    feed(rules, [LIVE_SCORE, PHOTO_SCORE, LIVE_SCORE])
    assert not rules.settled(1)  # recognised, waiting: scored every frame
    feed(rules, [LIVE_SCORE, LIVE_SCORE])
    assert rules.settled(1)


def test_require_a_photo_is_a_spoof_once_and_never_unlocks() -> None:
    rules = policy()
    decisions = feed(rules, [PHOTO_SCORE] * 40)
    assert decisions == [(2, RECOGNIZED), (9, SPOOF)]  # the 10-frame window is full at 9
    # Later live-looking frames on the same track do not open the door either.
    assert feed(rules, [LIVE_SCORE] * 10) == []


def test_a_live_resident_gone_before_judged_live_is_no_spoof() -> None:
    """An audit of the spoof above: a resident walking past, recognised on 3 live frames
    and gone before the 4 the rule needs, was recorded as an attack."""
    rules = policy()
    assert feed(rules, [LIVE_SCORE] * 3) == [(2, RECOGNIZED)]
    assert rules.end(1) == []


@pytest.mark.parametrize("mode", ["require", "log"])
def test_a_recognised_photo_gone_before_it_was_judged_is_a_spoof_when_it_ends(mode: str) -> None:
    """A daemon audit: a printed photo shown for under a second was recognised, then its
    track ended while the unlock waited for liveness: the history said only that the
    resident was at the door. Its end is a `spoof`, "left before it was judged live", once;
    in log mode nothing waits, and one judged an attack already says nothing more."""
    rules = policy(mode)
    assert feed(rules, [PHOTO_SCORE] * 4) == [(2, RECOGNIZED)] + (
        [(2, UNLOCK)] if mode == "log" else []
    )
    ended = rules.end(1)
    if mode == "require":
        (spoof,) = ended
        assert (spoof.kind, spoof.name, spoof.reason) == (SPOOF, "ada", LEFT_UNJUDGED)
        assert spoof.liveness == pytest.approx(PHOTO_SCORE)
    else:
        assert ended == []
    feed(rules, [PHOTO_SCORE] * 12, track=2)  # judged an attack: its spoof is said
    assert rules.end(2) == []


def test_spoof_decision_names_the_candidate_with_both_scores() -> None:
    rules = policy()
    spoof = [d for s in [PHOTO_SCORE] * 10 for d in rules.vote(7, ada(s)) if d.kind == SPOOF]
    assert len(spoof) == 1
    (decision,) = spoof
    assert (decision.name, decision.track, decision.reason) == ("ada", 7, NOT_LIVE)
    assert decision.score == pytest.approx(0.8)
    assert decision.liveness == pytest.approx(PHOTO_SCORE)


def test_a_spoof_judged_after_someone_else_filled_the_window_keeps_the_recognised_score() -> None:
    """Found by a review: Ada's printed photo recognised, then another printed face in her
    track. The 10-frame liveness window refused on the frame the 5-frame vote window held
    no vote of hers any more: the spoof's score was the mean of none of her frames, a
    StatisticsError that ended the door's process (anyone holding up two photos could stop
    the door). The spoof carries the score she was recognised with."""
    rules = policy()
    decisions = feed(rules, [PHOTO_SCORE] * 5)
    assert [kind for _, kind in decisions] == [RECOGNIZED]
    other = [d for _ in range(6) for d in rules.vote(1, Vote(None, 0.2, 0.1, PHOTO_SCORE))]
    assert [d.kind for d in other] == [SPOOF, UNKNOWN]
    assert (other[0].name, other[0].reason) == ("ada", NOT_LIVE)
    assert other[0].score == pytest.approx(0.8)  # her frames' score, none left in the window


def test_a_few_dead_frames_do_not_refuse_a_live_person() -> None:
    rules = policy(min_live_frames=4)
    scores = [PHOTO_SCORE, LIVE_SCORE, PHOTO_SCORE, PHOTO_SCORE, LIVE_SCORE, LIVE_SCORE]
    scores += [PHOTO_SCORE, LIVE_SCORE]
    assert feed(rules, scores) == [(2, RECOGNIZED), (7, UNLOCK)]


def test_a_track_judged_live_stays_live() -> None:
    """Turning away after the unlock (dead frames) is not a spoof, and nothing reopens."""
    rules = policy()
    assert feed(rules, [LIVE_SCORE] * 5) == [(2, RECOGNIZED), (3, UNLOCK)]
    assert feed(rules, [PHOTO_SCORE] * 15) == []
    assert rules.settled(1)


def test_unscored_votes_never_count_as_live() -> None:
    rules = policy()
    assert feed(rules, [None] * 20) == [(2, RECOGNIZED)]
    assert not rules.settled(1)


def test_log_mode_unlocks_at_once_and_logs_the_spoof() -> None:
    rules = policy("log")
    assert feed(rules, [PHOTO_SCORE] * 12) == [(2, RECOGNIZED), (2, UNLOCK), (9, SPOOF)]
    rules = policy("log")
    spoofs = [d for s in [PHOTO_SCORE] * 10 for d in rules.vote(1, ada(s)) if d.kind == SPOOF]
    assert spoofs[0].reason == NOT_LIVE_LOGGED


def test_off_mode_ignores_liveness() -> None:
    rules = Policy(PolicyConfig(hits=3, window=5), clock=lambda: 0.0)
    assert feed(rules, [PHOTO_SCORE] * 12) == [(2, RECOGNIZED), (2, UNLOCK)]
    rules = policy("off")
    assert feed(rules, [PHOTO_SCORE] * 12) == [(2, RECOGNIZED), (2, UNLOCK)]


def test_unknown_faces_never_become_spoofs() -> None:
    rules = policy()
    decisions = [d.kind for _ in range(12) for d in rules.vote(1, Vote(None, 0.2, 0.1, 0.01))]
    assert decisions == ["unknown"]


def test_reconfigure_keeps_the_scores_already_seen() -> None:
    rules = policy(min_live_frames=6)
    assert feed(rules, [LIVE_SCORE] * 5) == [(2, RECOGNIZED)]
    rules.configure(rules.config, rule(min_live_frames=3))
    assert feed(rules, [LIVE_SCORE]) == [(0, UNLOCK)]


# ------------------------------------------------------------- rule resolution (fast)

WITH_THRESHOLD = SimpleNamespace(liveness={"threshold": 0.3})


def test_auto_is_require_with_the_manifest_threshold_when_the_model_is_there() -> None:
    resolved = LiveRule.resolve(LivenessConfig(), WITH_THRESHOLD, has_model=True)
    assert resolved == LiveRule("require", 0.3, LivenessConfig().min_live_frames)
    own = LivenessConfig(mode="log", threshold=0.7, min_live_frames=6)
    assert LiveRule.resolve(own, WITH_THRESHOLD, True) == LiveRule("log", 0.7, 6)


def test_auto_without_a_model_is_off_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        resolved = LiveRule.resolve(LivenessConfig(), SimpleNamespace(liveness={}), False)
    assert resolved.mode == "off"
    assert "printed photo" in caplog.text


@pytest.mark.parametrize("mode", ["require", "log"])
def test_asking_for_liveness_without_a_model_is_refused(mode: str) -> None:
    with pytest.raises(UserError, match='mode = "off"'):
        LiveRule.resolve(LivenessConfig(mode=mode), WITH_THRESHOLD, has_model=False)


def test_a_manifest_without_a_threshold_needs_one_in_the_config() -> None:
    bare = SimpleNamespace(liveness={})
    with pytest.raises(UserError, match="liveness.threshold"):
        LiveRule.resolve(LivenessConfig(), bare, has_model=True)
    assert LiveRule.resolve(LivenessConfig(threshold=0.4), bare, True).threshold == 0.4


def test_a_threshold_of_zero_which_judges_every_print_live_is_refused() -> None:
    """At threshold 0 a printed photo (score 0.001) was live and `require` let it in, from
    the manifest and from the config alike; doctor said nothing."""
    with pytest.raises(UserError, match="liveness.threshold: 0 .*a printed one too"):
        LiveRule.resolve(LivenessConfig(), SimpleNamespace(liveness={"threshold": 0}), True)
    with pytest.raises(UserError, match=r"liveness.threshold: 0.0 is out of range \(more than"):
        parse_config({"liveness": {"mode": "require", "threshold": 0.0}})
    assert parse_config({"liveness": {"threshold": 0.05}}).liveness.threshold == 0.05


def test_config_checks_the_liveness_section() -> None:
    config = parse_config({"liveness": {"mode": "require", "threshold": "auto"}})
    assert config.liveness == LivenessConfig(mode="require", threshold=None)
    with pytest.raises(UserError) as caught:
        parse_config({"liveness": {"mode": "on", "threshold": 2, "min_live_frames": 11}})
    message = str(caught.value)
    for key in ("liveness.mode", "liveness.threshold", "liveness.min_live_frames"):
        assert key in message


# ------------------------------------------------- the real daemon, scripted engine (fast)


class LiveScriptedEngine(ScriptedEngine):
    """ScriptedEngine with a liveness model: codes 3 and 8 are printed photos of Ada and of
    the stranger."""

    manifest = SimpleNamespace(
        recognition={"threshold": 0.6, "margin": 0.05}, liveness={"threshold": THRESHOLD}
    )
    has_liveness = True

    def embed(self, image: np.ndarray, faces: Faces, mirror: bool = False) -> np.ndarray:
        code = int(image[0, 0, 0])
        printed = {PHOTO: ADA, STRANGER_PHOTO: STRANGER}
        return (
            np.stack([EMBEDDINGS[printed[code]]])
            if code in printed
            else super().embed(image, faces)
        )

    def liveness(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        code = int(image[0, 0, 0])
        printed = code in (PHOTO, STRANGER_PHOTO)
        return np.full(len(faces), PHOTO_SCORE if printed else LIVE_SCORE, np.float32)


def _typed(engine: LiveScriptedEngine) -> FaceEngine:
    return engine  # mypy checks that it fits the daemon's seam


@pytest.fixture
def gallery(tmp_path: Path) -> Path:
    return gallery_of_ada(tmp_path)


def run(tmp_path: Path, gallery: Path, codes: list[int], **sections: dict) -> MockFactory:
    frames = write_frames(tmp_path / "frames", codes)
    factory = MockFactory()
    config = door(tmp_path, gallery, frames, **sections)
    assert Daemon(config, engine=LiveScriptedEngine(), pin_factory=factory).run() == 0
    return factory


@pytest.mark.parametrize("mode", ["require", "log"])
def test_two_printed_photos_in_one_track_never_stop_the_door(
    tmp_path: Path, gallery: Path, mode: str
) -> None:
    """Found by a review: Ada's printed photo, then the stranger's in the same track, ended
    the door's process (a StatisticsError judging the spoof). It reports both and goes on."""
    codes = [NOBODY] * 2 + [PHOTO] * 5 + [STRANGER_PHOTO] * 10 + [NOBODY] * 5
    factory = run(tmp_path, gallery, codes, policy={"evidence": "frame"}, liveness={"mode": mode})
    kinds = [e["type"] for e in jsonl(tmp_path) if e["type"] != "relock"]
    opened = ["unlock"] if mode == "log" else []  # log mode does not hold the unlock back
    assert kinds == ["recognized", *opened, "spoof", "unknown"], kinds
    assert states(factory) == ([False, True, False] if opened else [False])
    assert_fail_secure(factory)


def test_a_photo_held_up_while_the_gallery_cannot_be_read_is_still_a_spoof(
    tmp_path: Path, gallery: Path
) -> None:
    """A review: with faces undecided while the gallery cannot be read, their liveness
    scores were dropped too, so Ada's printed photo, recognised just before a disk error
    and taken away during it, left no `spoof` event. They count as any frame's of nobody."""
    codes = [NOBODY] * 2 + [PHOTO] * 25 + [NOBODY] * 10
    frames = write_frames(tmp_path / "frames", codes)
    engine = LiveScriptedEngine()
    factory = MockFactory()
    config = door(tmp_path, gallery, frames, policy={"evidence": "frame"})
    daemon = Daemon(config, engine=engine, pin_factory=factory)
    break_the_disk, mend_the_disk = a_disk_that_fails(daemon)
    at_frame(engine, 8, break_the_disk)
    at_frame(engine, 35, mend_the_disk)  # the photo left during the fault
    assert daemon.run() == 0
    events = [(e["type"], e.get("name"), e.get("reason")) for e in jsonl(tmp_path)]
    assert events == [("recognized", NAME, None), ("spoof", NAME, NOT_LIVE)], events
    assert daemon.metrics.spoofs == 1
    assert states(factory) == [False]  # never opened
    assert_fail_secure(factory)


def test_door_refuses_a_photo_and_logs_a_spoof_with_snapshot(tmp_path: Path, gallery: Path) -> None:
    snapshots = tmp_path / "snapshots"
    codes = [NOBODY] * 2 + [PHOTO] * 15 + [NOBODY] * 10
    factory = run(tmp_path, gallery, codes, events={"snapshots": str(snapshots)})
    assert states(factory) == [False]  # never driven high
    events = jsonl(tmp_path)
    assert [e["type"] for e in events] == ["recognized", "spoof"]
    spoof = events[1]
    assert spoof["name"] == NAME and spoof["reason"] == NOT_LIVE
    assert spoof["score"] > 0.9 and spoof["liveness"] == pytest.approx(PHOTO_SCORE)
    assert spoof["geometry"] == "abstain"  # a still scripted face never turns
    assert Path(spoof["snapshot"]).parent == snapshots and "_spoof_" in spoof["snapshot"]
    assert oct(os.stat(spoof["snapshot"]).st_mode & 0o777) == "0o600"
    stored = read_events(tmp_path / "events.db")
    assert stored[1].type == SPOOF and stored[1].liveness == pytest.approx(PHOTO_SCORE)


def test_a_photo_shown_for_a_moment_leaves_a_spoof_record_naming_whom_it_showed(
    tmp_path: Path, gallery: Path
) -> None:
    codes = [NOBODY] * 2 + [PHOTO] * 4 + [NOBODY] * 20  # recognised, gone in 0.4 s
    factory = run(tmp_path, gallery, codes)
    assert states(factory) == [False]
    events = [(e["type"], e["name"], e["reason"]) for e in jsonl(tmp_path)]
    assert events == [("recognized", NAME, None), ("spoof", NAME, LEFT_UNJUDGED)]


def test_door_opens_for_the_live_person(tmp_path: Path, gallery: Path) -> None:
    factory = run(tmp_path, gallery, [NOBODY] * 2 + [ADA] * 10 + [NOBODY] * 20)
    assert states(factory) == [False, True, False]
    unlock = [e for e in jsonl(tmp_path) if e["type"] == "unlock"]
    assert len(unlock) == 1 and unlock[0]["liveness"] == pytest.approx(LIVE_SCORE)


@pytest.mark.parametrize("evidence", ["track", "frame"])
def test_a_live_stranger_who_takes_a_photos_place_does_not_get_in(
    tmp_path: Path, gallery: Path, evidence: str
) -> None:
    """A printed photo of Ada is recognised (and waits for liveness); the attacker lowers it
    and shows their own live face in the same place, so the same track goes on. The pooled
    evidence still names Ada for about six of the stranger's frames, all live: they are not
    Ada's face, so they never count as Ada being live."""
    codes = [NOBODY] * 2 + [PHOTO] * 5 + [STRANGER] * 12 + [NOBODY] * 20
    factory = run(tmp_path, gallery, codes, policy={"evidence": evidence})
    assert states(factory) == [False]  # never driven high
    kinds = [e["type"] for e in jsonl(tmp_path)]
    assert "recognized" in kinds and "unlock" not in kinds


class FaultyLivenessEngine(LiveScriptedEngine):
    """A liveness model that gives NaN for the printed photo (a broken model or runtime)."""

    def liveness(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        scores = super().liveness(image, faces)
        return np.where(scores == PHOTO_SCORE, np.float32("nan"), scores)


@pytest.mark.parametrize("evidence", ["track", "frame"])
def test_a_liveness_score_that_is_not_a_number_counts_as_not_live(
    tmp_path: Path, gallery: Path, evidence: str
) -> None:
    """NaN compares false with every threshold: unchecked, such a frame was neither left out
    of the track's pooled evidence nor counted live, and the spoof record gave no liveness
    score at all. Such a score counts as 0: the photo is refused like any other, and its
    record says 0."""
    codes = [NOBODY] * 2 + [PHOTO] * 15 + [NOBODY] * 10
    frames = write_frames(tmp_path / "frames", codes)
    factory = MockFactory()
    config = door(tmp_path, gallery, frames, policy={"evidence": evidence})
    assert Daemon(config, engine=FaultyLivenessEngine(), pin_factory=factory).run() == 0
    assert states(factory) == [False]  # never driven high
    strict = json.JSONDecoder(parse_constant=lambda token: pytest.fail(f"{token} in history"))
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    events = [strict.decode(line) for line in lines]
    assert [(e["type"], e["reason"]) for e in events] == [("recognized", None), ("spoof", NOT_LIVE)]
    assert events[1]["liveness"] == 0.0
    assert read_events(tmp_path / "events.db")[1].liveness == 0.0
    assert_fail_secure(factory)


# A live look-alike of Ada: on some frames her own face is Ada's best match over the
# threshold (ADA_FAIR, cosine 0.65 to Ada's sample), on the others nobody's (STRANGER). By
# themselves they are never 3 of 5: the door never recognises her. Once she is reported
# unknown the track is settled and scored every refresh_frames (10) frames (F: a frame it does
# not score), and unsettled again by a frame that names Ada: the scored frames run
# A N N A N | N | A N | N | A, 4 of 10 Ada's and live, at most 2 of any 5.
_A, _N, _F = ADA_FAIR, STRANGER, STRANGER
LOOKALIKE = (
    [_A, _N, _N, _A, _N] + [_F] * 9 + [_N] + [_F] * 9 + [_A, _N] + [_F] * 9 + [_N] + [_F] * 9 + [_A]
)


@pytest.mark.parametrize("evidence", ["frame", "track"])
def test_a_live_lookalike_then_a_photo_of_the_resident_do_not_open_together(
    tmp_path: Path, gallery: Path, evidence: str
) -> None:
    """Found by a review: neither a live look-alike of Ada nor a printed photo of her opens
    the door alone, but in one track, the look-alike first, then the photo, they did (with
    evidence "frame"): her live frames that matched Ada put Ada among those judged live for
    the whole track, and the photo's frames then won the votes. The votes that win must now
    be live frames of Ada's own face too."""
    alone = run(tmp_path / "alone", gallery, [NOBODY] * 2 + LOOKALIKE + [NOBODY] * 8,
                policy={"evidence": evidence})  # fmt: skip
    assert states(alone) == [False]
    assert "unlock" not in [e["type"] for e in jsonl(tmp_path / "alone")]
    codes = [NOBODY] * 2 + LOOKALIKE + [PHOTO] * 4 + [NOBODY] * 8
    factory = run(tmp_path, gallery, codes, policy={"evidence": evidence})
    assert states(factory) == [False]  # never driven high
    assert "unlock" not in [e["type"] for e in jsonl(tmp_path)]
    assert_fail_secure(factory)


def test_a_photo_a_live_stranger_raises_for_a_moment_leaves_a_spoof_record(
    tmp_path: Path, gallery: Path
) -> None:
    """Found by a review: a live stranger at the door raises a printed photo of Ada for about
    a second and lowers it. The end of the track judged the mean liveness of every face in it,
    the stranger's live ones too, so the history said only that Ada was recognised. It judges
    the frames of Ada's own face."""
    codes = [NOBODY] * 2 + [STRANGER] * 6 + [PHOTO] * 12 + [STRANGER] * 2 + [NOBODY] * 8
    factory = run(tmp_path, gallery, codes)  # the default evidence: "track"
    assert states(factory) == [False]
    events = [(e["type"], e.get("name")) for e in jsonl(tmp_path) if e["type"] != "unknown"]
    assert events == [("recognized", NAME), ("spoof", NAME)], events


def toward_ada(code: int, cosine: float) -> int:
    """A face scoring `cosine` against Ada's enrolled one (the scripted door's raw scores),
    under a frame code no other face has: EMBEDDINGS is test_daemon_fast's, shared by every
    module that imports it, and `face` refuses a code already taken."""
    aside = unit(40 + code) - (unit(40 + code) @ EMBEDDINGS[ADA]) * EMBEDDINGS[ADA]
    aside /= np.linalg.norm(aside)
    return face(code, cosine * EMBEDDINGS[ADA] + np.sqrt(1 - cosine**2) * aside)


THRESHOLD_ADA = 0.6  # the scripted manifest's recognition threshold
COULD_BE_ADA = toward_ada(40, THRESHOLD_ADA - OWN_FACE_DOUBT / 2)
NOT_ADA = toward_ada(41, THRESHOLD_ADA - 2 * OWN_FACE_DOUBT)


@pytest.mark.parametrize(
    ("first", "face", "opens"),
    [
        (ADA, COULD_BE_ADA, True),
        (ADA, NOT_ADA, False),
        (PHOTO, COULD_BE_ADA, False),
        (PHOTO, NOT_ADA, False),
    ],
    ids=[
        "ada-then-a-poorer-view",
        "ada-then-another",
        "photo-then-a-lookalike",
        "photo-then-another",
    ],
)
def test_a_live_face_counts_for_the_pooled_name_only_if_it_could_be_them_alone(
    tmp_path: Path, gallery: Path, first: int, face: int, opens: bool
) -> None:
    """After two live frames of Ada, the pooled evidence names Ada on the later frames of
    either face. A live face within OWN_FACE_DOUBT under the threshold could be Ada (a poorer
    view of her): it counts and opens. One 2 x OWN_FACE_DOUBT under cannot: it never does.

    An audit: after a printed photo of Ada (the only resident), a live stranger within
    OWN_FACE_DOUBT of her (a lookalike) opened the door: the photo's frames named Ada in the
    pooled evidence, the stranger's made it live. A face judged not live adds nothing to the
    pool, so the lookalike is judged on their own face, under the threshold."""
    codes = [NOBODY] * 2 + [first] * (2 if first == ADA else 5) + [face] * 12 + [NOBODY] * 20
    factory = run(tmp_path, gallery, codes)
    assert states(factory) == ([False, True, False] if opens else [False])
    kinds = [e["type"] for e in jsonl(tmp_path)]
    assert ("recognized" in kinds) == (first == PHOTO or opens), kinds  # the photo is


def test_a_photo_held_up_where_a_live_stranger_was_is_recognised_and_reported(
    tmp_path: Path, gallery: Path
) -> None:
    """An audit: once a face judged not live added nothing to the pool, a printed photo of
    Ada held up where a live stranger had stood was voted on by the stranger's pool: never
    recognised, never reported. Its frames are voted on by themselves."""
    codes = [NOBODY] * 2 + [STRANGER] * 8 + [PHOTO] * 14 + [NOBODY] * 20
    factory = run(tmp_path, gallery, codes)
    assert states(factory) == [False]
    events = [(e["type"], e["name"]) for e in jsonl(tmp_path) if e["type"] != "unknown"]
    assert events == [("recognized", NAME), ("spoof", NAME)]


@pytest.mark.parametrize("before", ["off", "log"])
def test_a_reload_to_require_drops_what_was_pooled_under_another_rule(
    tmp_path: Path, gallery: Path, before: str
) -> None:
    """An audit: two frames of Ada's photo pooled with liveness off (or only logged), then a
    reload to "require", then a live lookalike in the same place: the photo's frames stayed
    in the pool, named Ada on the lookalike's live frames, and the door opened."""
    from edge_app.config import load_config

    codes = [NOBODY] * 2 + [PHOTO] * 2 + [COULD_BE_ADA] * 14 + [NOBODY] * 20
    frames = write_frames(tmp_path / "frames", codes)
    path = tmp_path / "door.toml"

    def write(mode: str) -> None:
        _door_toml(path, tmp_path, frames, gallery, f'[liveness]\nmode = "{mode}"\n')

    write(before)
    factory = MockFactory()
    engine = LiveScriptedEngine()
    daemon = Daemon(load_config(path), config_path=path, engine=engine, pin_factory=factory)
    detect = engine.detect

    def reload_after_the_photo(image: np.ndarray) -> Faces:
        if engine.calls["detect"] == 3:  # the photo's second frame: pooled, no decision yet
            write("require")
            daemon.request_reload()
        return detect(image)

    engine.detect = reload_after_the_photo  # type: ignore[method-assign]
    assert daemon.run() == 0
    assert daemon.live_rule.mode == "require"
    assert states(factory) == [False]
    assert "unlock" not in [e["type"] for e in jsonl(tmp_path)]


def test_log_mode_opens_for_the_photo_and_says_so(tmp_path: Path, gallery: Path) -> None:
    codes = [NOBODY] * 2 + [PHOTO] * 15 + [NOBODY] * 20
    factory = run(tmp_path, gallery, codes, liveness={"mode": "log"})
    assert states(factory) == [False, True, False]
    kinds = [(e["type"], e["reason"]) for e in jsonl(tmp_path)]
    assert ("spoof", NOT_LIVE_LOGGED) in kinds and ("unlock", None) in kinds


def test_off_mode_never_calls_the_liveness_model(tmp_path: Path, gallery: Path) -> None:
    frames = write_frames(tmp_path / "frames", [NOBODY] * 2 + [PHOTO] * 10 + [NOBODY] * 20)
    engine = LiveScriptedEngine()

    def refuse(image: np.ndarray, faces: Faces) -> np.ndarray:
        raise AssertionError("liveness is off")

    engine.liveness = refuse  # type: ignore[method-assign]
    factory = MockFactory()
    config = door(tmp_path, gallery, frames, liveness={"mode": "off"})
    assert Daemon(config, engine=engine, pin_factory=factory).run() == 0
    assert states(factory) == [False, True, False]
    assert all(e["liveness"] is None for e in jsonl(tmp_path))


def test_require_without_a_liveness_model_refuses_to_start_and_stays_locked(
    tmp_path: Path, gallery: Path
) -> None:
    frames = write_frames(tmp_path / "frames", [ADA] * 10)
    factory = MockFactory()
    config = door(tmp_path, gallery, frames, liveness={"mode": "require"})
    with pytest.raises(UserError, match="needs a liveness model"):
        Daemon(config, engine=ScriptedEngine(), pin_factory=factory).run()
    assert states(factory) == [False]


# ---------------------------------------------------------- real NUAA clips (slow)

# Subject 0005: its session-2 live frames show one face each (enrolment needs exactly one);
# the other frames have people in the background, as a door camera would.
SUBJECT = "0005"
ENROL = ("live", "0005_00_00_02")  # session 2: enrolment
LIVE_CLIP = ("live", "0005_00_00_01")  # session 1: the person at the door
PRINT_CLIPS = [("print", "0005_00_08_03"), ("print", "0005_00_00_01")]  # held still / moved


def nuaa_frames(shared: Path, kind: str, key: str) -> list[Path]:
    folder = shared / "liveness" / "nuaa" / kind / key[:4]
    frames = sorted(folder.glob(f"{key}_*.jpg"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    if not frames:
        pytest.skip(f"NUAA sequence {kind}/{key} not in {folder}")
    return frames


def clip_folder(frames: list[Path], folder: Path, hold: int = 2) -> Path:
    """A camera clip: each NUAA frame (about a second apart) held for `hold` frames, named
    in time order for the folder source."""
    folder.mkdir(parents=True)
    index = 0
    for frame in frames:
        for _ in range(hold):
            (folder / f"{index:05d}.jpg").symlink_to(frame)
            index += 1
    return folder


@pytest.fixture(scope="module")
def nuaa_gallery(
    shared_data: Path, liveness_engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    from edge_app.enroll import enroll_photos

    frames = nuaa_frames(shared_data, *ENROL)
    db = tmp_path_factory.mktemp("nuaa-gallery") / "gallery.db"
    enroll_photos(db, liveness_engine, SUBJECT, frames[::8][:5])
    return db


def nuaa_door(clip: Path, gallery: Path, workdir: Path) -> SimpleNamespace:
    config = parse_config(
        {
            "camera": {"source": str(clip), "fps": 10},
            "gallery": {"path": str(gallery)},
            "gpio": {"pin": PIN, "pulse_seconds": 0.3, "factory": "mock"},
            "events": {"db": "", "jsonl": str(workdir / "events.jsonl")},
            "hub": {"socket": ""},  # tests must not make /run/edge-app
            # [liveness] left at its defaults: "auto" is "require" with these models.
        }
    )
    factory = MockFactory()
    engine = Engine.open(config.models.dir or None, backend="cpu")
    daemon = Daemon(config, engine=engine, pin_factory=factory)
    assert daemon.run() == 0
    events = [json.loads(line) for line in (workdir / "events.jsonl").read_text().splitlines()]
    return SimpleNamespace(daemon=daemon, states=states(factory), events=events)


@pytest.mark.slow
def test_nuaa_live_person_opens_the_door(
    shared_data: Path, nuaa_gallery: Path, liveness_engine: Engine, tmp_path: Path
) -> None:
    clip = clip_folder(nuaa_frames(shared_data, *LIVE_CLIP), tmp_path / "clip")
    run = nuaa_door(clip, nuaa_gallery, tmp_path)
    assert run.daemon.live_rule.mode == "require"
    assert run.states == [False, True, False]
    (unlock,) = [e for e in run.events if e["type"] == "unlock"]
    assert unlock["name"] == SUBJECT and unlock["liveness"] >= run.daemon.live_rule.threshold
    assert not [e for e in run.events if e["type"] == "spoof"]


@pytest.mark.slow
@pytest.mark.parametrize("sequence", PRINT_CLIPS, ids=[key for _, key in PRINT_CLIPS])
def test_nuaa_printed_photo_never_opens_and_logs_spoof(
    sequence: tuple[str, str],
    shared_data: Path,
    nuaa_gallery: Path,
    liveness_engine: Engine,
    tmp_path: Path,
) -> None:
    clip = clip_folder(nuaa_frames(shared_data, *sequence), tmp_path / "clip")
    run = nuaa_door(clip, nuaa_gallery, tmp_path)
    assert run.states == [False]  # the pin was never driven high
    assert not [e for e in run.events if e["type"] == "unlock"]
    spoofs = [e for e in run.events if e["type"] == "spoof"]
    assert spoofs, [e["type"] for e in run.events]
    # The photo is recognised as the subject (that is the attack) and refused as not live.
    # (or left before it was judged: a track that ends while its unlock waits)
    assert all(e["name"] == SUBJECT and e["reason"] in (NOT_LIVE, LEFT_UNJUDGED) for e in spoofs)
    assert all(e["liveness"] < run.daemon.live_rule.threshold for e in spoofs)


# The photo-then-face swap on real video: 3 frames of the printed photo of the subject (whole
# faces, so they are judged), then a live stranger (subject 0003) where the photo was; their
# boxes overlap (IoU 0.62), so the tracker keeps one track across the cut.
SWAP_PRINT = ("print", "0005_00_00_01")
SWAP_STRANGER = ("live", "0003_01_00_01")


@pytest.mark.slow
@pytest.mark.parametrize(
    "disabled", [(), ("attribution",), ("pool",), ("attribution", "pool")], ids="+".join
)
def test_nuaa_a_live_stranger_who_takes_a_photos_place_does_not_get_in(
    disabled: tuple[str, ...],
    shared_data: Path,
    nuaa_gallery: Path,
    liveness_engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The photo is recognised and waits for liveness. Two things keep the stranger who then
    shows their live face in its place from getting in as the subject, each enough here:
    the photo's frames, judged not live, add nothing to the track's pooled evidence
    (fusion.evidence_weights), so the stranger's frames are matched on the stranger; and a
    live frame counts for a person only when its own face could be them (Recognizer.could_be).
    With both disabled (every face pooled, every frame counted for the pooled name) the same
    clip opens the door, which shows the clip is the attack: the pooled evidence then names
    the subject on the stranger's live frames."""
    from edge_app import daemon as daemon_module
    from edge_app.daemon import Recognizer
    from edge_app.fusion import face_weights

    frames = nuaa_frames(shared_data, *SWAP_PRINT)[:3] + nuaa_frames(shared_data, *SWAP_STRANGER)
    clip = clip_folder(frames[:15], tmp_path / "clip")
    if "attribution" in disabled:
        monkeypatch.setattr(Recognizer, "could_be", lambda self, names, *own: [True] * len(names))
    if "pool" in disabled:
        monkeypatch.setattr(
            daemon_module, "evidence_weights", lambda faces, *_: face_weights(faces)
        )
    with caplog.at_level(logging.DEBUG, logger="edge_app.daemon"):
        run = nuaa_door(clip, nuaa_gallery, tmp_path)
    votes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("vote ")]
    assert votes and all(v.startswith("vote track=1 ") for v in votes), votes  # one track
    threshold = run.daemon.live_rule.threshold
    live_named = [
        v
        for v in votes
        if f" name={SUBJECT} " in v and float(v.split("liveness=")[1].split()[0]) >= threshold
    ]
    # The photo is recognised as the subject either way (that is the attack).
    assert [e["name"] for e in run.events if e["type"] == "recognized"][:1] == [SUBJECT]
    unlocks = [e for e in run.events if e["type"] == "unlock"]
    if "pool" in disabled:
        assert len(live_named) >= 3, votes  # the photo's evidence names the stranger's frames
    else:
        assert not live_named, votes  # the stranger's frames are matched on the stranger
    if len(disabled) < 2:
        assert run.states == [False], votes  # the pin was never driven high
        assert not unlocks
    else:
        assert run.states == [False, True, False]
        assert [e["name"] for e in unlocks] == [SUBJECT]


# The same attack with a stranger who looks a little like the only resident (an audit): the
# stranger's own face is that resident's best match on every frame, within OWN_FACE_DOUBT of
# the threshold on most, and reaches it on one; alone, the stranger stays `unknown`. Before a
# face judged not live was left out of the pool, the photo's frames named the resident and the
# stranger's live frames made the track live: the door opened.
LOOKALIKE_RESIDENT = ("0006", ("live", "0006_00_00_02"), ("print", "0006_00_00_01"))
LOOKALIKE_STRANGER = ("live", "0007_00_00_01")


@pytest.mark.slow
@pytest.mark.parametrize("photo_first", [True, False], ids=["photo-then-stranger", "stranger"])
def test_nuaa_a_lookalike_stranger_after_the_only_residents_photo_does_not_get_in(
    photo_first: bool, shared_data: Path, liveness_engine: Engine, tmp_path: Path
) -> None:
    from edge_app.enroll import enroll_photos

    resident, enrol, printed = LOOKALIKE_RESIDENT
    gallery = tmp_path / "gallery.db"
    enroll_photos(gallery, liveness_engine, resident, nuaa_frames(shared_data, *enrol)[::8][:5])
    photo = nuaa_frames(shared_data, *printed)[:3] if photo_first else []
    clip = clip_folder(photo + nuaa_frames(shared_data, *LOOKALIKE_STRANGER)[:12], tmp_path / "c")
    run = nuaa_door(clip, gallery, tmp_path)
    assert run.states == [False]  # the pin was never driven high
    assert not [e for e in run.events if e["type"] == "unlock"]
    assert [e["type"] for e in run.events if e["name"] is None][-1:] == ["unknown"]


# ------------------------------------------------ enrolment from the camera (needs shared)


def test_camera_enrolment_passes_over_a_printed_photo(
    shared_data: Path, liveness_engine: Engine, tmp_path: Path
) -> None:
    from edge_app.enroll import EnrollError, enroll_camera
    from edge_app.images import read_image
    from edge_app.liveness_rule import manifest_threshold
    from edge_app.quality import Reason

    threshold = manifest_threshold(liveness_engine.manifest)
    prints = nuaa_frames(shared_data, "print", "0005_00_01_02")[:3]  # one whole face each (held
    # close, 0005_00_08_03 runs past the frame: cut_by_edge refuses it before liveness is asked)
    live = nuaa_frames(shared_data, *ENROL)[::4][:9]  # a live person, moving a little
    frames = [read_image(p) for p in prints + live]
    db = tmp_path / "gallery.db"
    result = enroll_camera(
        db,
        liveness_engine,
        SUBJECT,
        iter(frames),
        count=3,
        progress=False,
        live_threshold=threshold,
    )
    # The photo's frames were all passed over; live frames became the three samples (a live
    # frame may be passed over too: the rule wants several live frames, not every one).
    taken = [int(source.rsplit(" ", 1)[1]) for source in result.added]
    assert len(taken) == 3 and min(taken) >= len(prints)
    with pytest.raises(EnrollError, match="only 0 of 2") as caught:
        enroll_camera(
            tmp_path / "other.db",
            liveness_engine,
            SUBJECT,
            iter(frames[:3]),
            count=2,
            progress=False,
            live_threshold=threshold,
        )
    assert caught.value.problems[0].reason is Reason.NOT_LIVE
    assert "not judged live" in str(caught.value)
    assert not (tmp_path / "other.db").exists()


def test_enroll_camera_command_refuses_a_photo_held_up(
    shared_data: Path,
    liveness_engine: Engine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    restore_logging: None,
) -> None:
    from edge_app import cli

    clip = clip_folder(nuaa_frames(shared_data, "print", "0005_00_01_02")[:6], tmp_path / "cam")
    db = tmp_path / "gallery.db"
    code = cli.main(
        [
            "enroll",
            "--camera",
            "--source",
            str(clip),
            "--samples",
            "2",
            "--db",
            str(db),
            "--models",
            str(liveness_engine.models_dir),
            "--backend",
            "cpu",
            "Mallory",
        ]
    )
    assert code == 2
    assert "not judged live" in capsys.readouterr().err
    assert not db.exists()


# ------------------------------------------------- doctor says what the door will do


def models_without_liveness(folder: Path) -> Path:
    """A copy of the shipped models whose manifest lists no liveness model."""
    import shutil

    from edge_app.manifest import LIVENESS_ROLE
    from edge_app.paths import REPO_MODELS

    shutil.copytree(REPO_MODELS, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    for name, entry in list(manifest["models"].items()):
        if entry["role"] == LIVENESS_ROLE:
            del manifest["models"][name]
            (folder / entry["file"]).unlink()
    del manifest["liveness"]  # as a build without --liveness writes it
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize(
    ("config", "has_models", "status", "detail"),
    [
        ("", True, "ok", "mode=require threshold=0.200"),
        ('mode = "log"', True, "warn", "never blocks a printed photo"),
        ('mode = "off"', True, "warn", 'mode "off": a printed photo'),
        ("", False, "warn", 'mode "auto" and the models have no liveness model'),
        ('mode = "require"', False, "fail", "the door refuses to start: liveness.mode"),
    ],
)
def test_doctor_says_which_liveness_rule_the_door_applies(
    tmp_path: Path, config: str, has_models: bool, status: str, detail: str
) -> None:
    """doctor said OK to models and a config the door refuses to start with ("require"
    without a liveness model), and said nothing when the check was off."""
    from edge_app.commands.doctor import collect_checks
    from edge_app.paths import REPO_MODELS

    path = tmp_path / "door.toml"
    path.write_text(f'[gallery]\npath = "{tmp_path / "g.db"}"\n[liveness]\n{config}\n')
    models = REPO_MODELS if has_models else models_without_liveness(tmp_path / "models")
    (check,) = [c for c in collect_checks(path, models) if c.area == "liveness"]
    assert (check.status, detail in check.detail) == (status, True), check
