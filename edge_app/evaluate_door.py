"""`edge-app eval door`: the whole door on real webcam sequences, with liveness required.

The LFW visit evaluation (edge_app.evaluate_visits) plays still photos, so it must run the
liveness check in log mode. This one plays real camera frames of real people (the NUAA
layout of edge_app.evaluate_liveness: live/<subject>/ and print/<subject>/, files
ID_GG_PP_SS_N.jpg) to the real daemon with `[liveness] mode = "require"`, so every part of
the door decides: detection, tracking, embedding, the gallery, liveness and the policy.

  - Enrolment: each subject's first live sequence (in key order) is their enrolment video.
    ENROL_FRAMES frames spread evenly over it are offered to edge_app.enroll.enroll_photos
    through the real quality gates; a refused frame is replaced by the next unused one.
    A subject with a single live sequence is enrolled from its first half.
  - Visits: every other live sequence of an enrolled subject (another session, glasses on or
    off, other lighting), or the second half of a single sequence (same session, reported
    apart). Each must unlock as that subject.
  - Attacks: every printed-photo sequence of every enrolled subject (held still, moved,
    bent). None may unlock: the face matches the subject, so only liveness stands between it
    and the door.
  - Strangers, leave one out: for each subject, a gallery of everyone else; every live
    sequence of the left-out subject is played to it, and none may unlock.

With `alone` (edge-app eval door --alone) each subject in turn is the household of one: a
gallery of just them, their visits, and every other subject's live sequences as strangers,
all in one seeded random order at that one door. The door's files carry over from clip to
clip, so with `[recognition] learn_site` its site memory learns as the door would over time.

A clip is the sequence's frames in time order, each shown once (NUAA keeps every third frame,
so frames are up to a second apart). Each clip is its own daemon run with gpiozero's
MockFactory relay, so one clip's cooldown cannot hide the next. The subjects here are the
ones the liveness threshold was chosen on, so this checks the door's wiring and the
recognition side on real video, not the liveness model on unseen people.
"""

from __future__ import annotations

import logging
import platform
import random
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_app.errors import UserError
from edge_app.evaluate_liveness import Sequence, read_sequences
from edge_app.evaluate_visits import door_rule, enrol_replacing, play, took_place
from edge_app.gallery import Gallery
from edge_app.lfw import wilson
from edge_app.logs import quieted
from edge_app.matching import Lookalike, describe_lookalikes
from edge_app.progress import Progress
from edge_app.visit_clips import VisitClip

ENROL_FRAMES = 5
FPS = 5.0  # playback rate of the kept frames; only timers in seconds depend on it
LIVENESS = "require"


@dataclass(frozen=True)
class Clip:
    """One sequence (or half of one) to play: whose it is and what it must do."""

    kind: str  # "visit", "attack" or "stranger"
    subject: str
    label: str  # kind/key, with " (second half)" for a split sequence
    frames: tuple[Path, ...]
    same_session: bool = False


@dataclass
class Played:
    """One clip's verdict, read from the events the door wrote."""

    kind: str
    subject: str
    label: str
    frames: int
    same_session: bool
    gallery: str  # "all", or "without <subject>" for a stranger clip
    unlocked: str | None = None
    unlock_after_frames: int | None = None  # frames shown up to and including the unlock
    recognized: list[str] = field(default_factory=list)
    spoofs: int = 0
    took_place: int = 0  # `unknown` reported as another face taking the subject's place
    face_frames: int = 0
    site_learned: int | None = None  # --alone: stranger visits the site memory held before

    @property
    def right(self) -> bool:
        return self.unlocked == self.subject


@dataclass
class Plan:
    """Who is enrolled from which frames, and every clip to play."""

    enrolment: dict[str, list[Path]]  # subject -> frames, in the order they are offered
    clips: list[Clip]


def spread(frames: tuple[Path, ...], count: int) -> list[Path]:
    """All frames, the `count` spread evenly over the sequence first (offered first)."""
    if not frames:
        return []
    step = max(len(frames) // count, 1)
    first = list(frames[::step][:count])
    return first + [f for f in frames if f not in first]


def plan(sequences: list[Sequence]) -> Plan:
    live: dict[str, list[Sequence]] = defaultdict(list)
    for sequence in sequences:
        if sequence.kind == "live":
            live[sequence.subject].append(sequence)
    enrolment: dict[str, list[Path]] = {}
    clips: list[Clip] = []
    for subject, own in sorted(live.items()):
        first, *others = sorted(own, key=lambda s: s.key)
        if others:
            enrolment[subject] = spread(first.frames, ENROL_FRAMES)
        else:
            half = len(first.frames) // 2
            enrolment[subject] = spread(first.frames[:half], ENROL_FRAMES)
            label = f"live/{first.key} (second half)"
            clips.append(Clip("visit", subject, label, first.frames[half:], same_session=True))
        clips += [Clip("visit", subject, f"live/{s.key}", s.frames) for s in others]
        clips += [Clip("stranger", subject, f"live/{s.key}", s.frames) for s in own]
    clips += [
        Clip("attack", s.subject, f"print/{s.key}", s.frames)
        for s in sequences
        if s.kind == "print" and s.subject in enrolment
    ]
    return Plan(enrolment, clips)


@contextmanager
def clip_folder(frames: tuple[Path, ...], folder: Path) -> Iterator[VisitClip]:
    """The frames as a camera folder source (symlinks named in time order); removed after."""
    folder.mkdir(parents=True)
    try:
        for index, frame in enumerate(frames):
            (folder / f"{index:05d}{frame.suffix.lower()}").symlink_to(frame.resolve())
        yield VisitClip(folder, FPS, len(frames), 0.0)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def judge(clip: Clip, gallery: str, events: list[dict[str, Any]], metrics: Any) -> Played:
    played = Played(
        clip.kind, clip.subject, clip.label, len(clip.frames), clip.same_session, gallery
    )
    unlocks = [e for e in events if e["type"] == "unlock"]
    if unlocks:
        played.unlocked = unlocks[0]["name"]
        played.unlock_after_frames = round(float(unlocks[0]["source_time"]) * FPS) + 1
    played.recognized = sorted({e["name"] for e in events if e["type"] == "recognized"})
    played.spoofs = sum(e["type"] == "spoof" for e in events)
    played.took_place = len(took_place(events))
    played.face_frames = metrics.face_frames
    return played


def evaluate_door(
    engine: Any,
    data: Path,
    subjects: set[str] | None = None,
    recognition: dict[str, Any] | None = None,
    *,
    alone: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """The whole evaluation (module docstring) as a JSON-ready report; `recognition`
    overrides keys of the door's [recognition] section (e.g. a site's own threshold);
    `alone` plays households of one in an order drawn with `seed`."""
    # The door logs every decision at INFO, and its lookalike warning once per clip: the
    # report gives each gallery's lookalikes and threshold once instead.
    with quieted({"edge_app": logging.WARNING, "edge_app.daemon": logging.ERROR}):
        return _evaluate(engine, data, subjects, recognition or {}, alone, seed)


def _evaluate(
    engine: Any,
    data: Path,
    subjects: set[str] | None,
    recognition: dict[str, Any],
    alone: bool,
    seed: int,
) -> dict[str, Any]:
    if not getattr(engine, "has_liveness", False):
        raise UserError(
            'eval door plays the door with [liveness] mode = "require", and these models '
            "have no liveness model: build them with `edge-convert build --liveness`"
        )
    started = time.perf_counter()
    work = plan(read_sequences(data, subjects))
    if not work.enrolment:
        raise UserError(f"--data {data}: no subject has live/ frames to enrol from")
    with tempfile.TemporaryDirectory(prefix="edge-door-eval-") as tmp:
        root = Path(tmp)
        if alone:
            alone_report = _alone(engine, work, root, recognition, seed)
            return _report(data, recognition, *alone_report, started, seed)
        galleries, enrolment = _enrol_all(engine, work.enrolment, root)
        rules = {name: door_rule(engine, path, recognition) for name, path in galleries.items()}
        played: list[Played] = []
        for index, clip in enumerate(Progress(work.clips, desc="clips", unit="clip", disable=None)):
            name = f"without {clip.subject}" if clip.kind == "stranger" else "all"
            name = name if name in galleries else "all"  # one the gates refused: not in "all"
            with clip_folder(clip.frames, root / f"clip{index}") as source:
                events, metrics = play(
                    engine, source, galleries[name], root, LIVENESS, recognition=recognition
                )
            played.append(judge(clip, name, events, metrics))
    return _report(data, recognition, enrolment, rules, played, started)


def _report(
    data: Path,
    recognition: dict[str, Any],
    enrolment: dict[str, Any],
    rules: dict[str, Any],
    played: list[Played],
    started: float,
    seed: int | None = None,
) -> dict[str, Any]:
    return {
        "data": str(data),
        "liveness": LIVENESS,
        "recognition": recognition,
        "households": "one resident each" if seed is not None else "everyone enrolled",
        "seed": seed,
        "enrol_frames": ENROL_FRAMES,
        "fps": FPS,
        "enrolment": enrolment,
        "galleries": rules,
        "summary": summarise(played),
        "clips": [asdict(p) for p in played],
        "machine": platform.machine(),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _alone(
    engine: Any, work: Plan, root: Path, recognition: dict[str, Any], seed: int
) -> tuple[dict[str, Any], dict[str, Any], list[Played]]:
    """(enrolment, galleries' rules, clips played) with each subject as a household of one
    (module docstring): one folder, gallery and site memory per door, its clips in a seeded
    random order."""
    from edge_app.site_memory import SiteMemory, site_memory_path

    rng = random.Random(seed)
    rules: dict[str, Any] = {}
    enrolment: dict[str, Any] = {}
    played: list[Played] = []
    doors = []
    for subject, frames in work.enrolment.items():
        folder = root / f"alone-{subject}"
        folder.mkdir()
        gallery = folder / "gallery.db"
        attempt = enrol_replacing(gallery, engine, subject, frames, ENROL_FRAMES)
        enrolment[subject] = {"enrolled": attempt.enrolled, "refused": attempt.refused}
        if not gallery.exists():
            continue  # the gates refused every frame: no door for this subject
        clips = [
            c
            for c in work.clips
            if (c.kind == "visit" and c.subject == subject)
            or (c.kind == "stranger" and c.subject != subject)
        ]
        rng.shuffle(clips)
        doors.append((subject, folder, gallery, clips))
    total = sum(len(clips) for *_, clips in doors)
    with Progress(total=total, desc="clips", unit="clip", disable=None) as progress:
        for subject, folder, gallery, clips in doors:
            name = f"{subject} alone"
            memory = site_memory_path(gallery)
            for index, clip in enumerate(clips):
                learned = SiteMemory.load(memory).learned
                with clip_folder(clip.frames, folder / f"clip{index}") as source:
                    events, metrics = play(
                        engine, source, gallery, folder, LIVENESS, recognition=recognition
                    )
                verdict = judge(clip, name, events, metrics)
                verdict.site_learned = learned
                played.append(verdict)
                progress.update()
            rules[name] = door_rule(engine, gallery, recognition)
            rules[name]["site_learned"] = SiteMemory.load(memory).learned
    return enrolment, rules, played


def _enrol_all(
    engine: Any, enrolment: dict[str, list[Path]], root: Path
) -> tuple[dict[str, Path], dict[str, Any]]:
    """One gallery with every subject, and one per subject without them (leave one out)."""
    everyone = root / "all.db"
    report: dict[str, Any] = {}
    for subject, frames in enrolment.items():
        attempt = enrol_replacing(everyone, engine, subject, frames, ENROL_FRAMES)
        report[subject] = {
            "enrolled": attempt.enrolled,
            "refused": attempt.refused,
            "near_duplicates": attempt.near_duplicates,
            "ok": attempt.ok,
        }
    if not everyone.exists():
        raise UserError("the enrolment gates refused every frame offered: nobody to let in")
    galleries = {"all": everyone}
    with Gallery.open(everyone) as db:
        enrolled = [p.name for p in db.people()]
    for subject in enrolled:
        without = root / f"without-{subject}.db"
        shutil.copyfile(everyone, without)
        without.chmod(0o600)
        with Gallery.open(without) as db:
            db.remove([subject])
        galleries[f"without {subject}"] = without
    return galleries, report


def summarise(played: list[Played]) -> dict[str, Any]:
    visits = [p for p in played if p.kind == "visit"]
    attacks = [p for p in played if p.kind == "attack"]
    strangers = [p for p in played if p.kind == "stranger"]

    def rate(hits: int, total: int) -> dict[str, Any]:
        return {"value": hits, "of": total, "wilson_95": wilson(hits, total)}

    other = [p for p in visits if not p.same_session]
    frames = sorted(
        p.unlock_after_frames for p in visits if p.right and p.unlock_after_frames is not None
    )
    # --alone with learn_site: the strangers who came once the site memory counted.
    counted = [p for p in strangers if p.site_learned]
    return {
        "visits_unlocked_right": rate(sum(p.right for p in visits), len(visits)),
        "visits_other_session": rate(sum(p.right for p in other), len(other)),
        "visits_refused_as_not_live": sum(p.spoofs > 0 and not p.right for p in visits),
        "wrong_person_unlocks": sum(p.unlocked not in (None, p.subject) for p in visits),
        # Nobody else steps into these clips: every such report is a false alarm.
        "visits_took_place_false_alarms": rate(sum(p.took_place > 0 for p in visits), len(visits)),
        "attacks_unlocked": rate(sum(p.unlocked is not None for p in attacks), len(attacks)),
        "attacks_recognized": rate(sum(p.subject in p.recognized for p in attacks), len(attacks)),
        "attacks_logged_spoof": rate(sum(p.spoofs > 0 for p in attacks), len(attacks)),
        "strangers_unlocked": rate(sum(p.unlocked is not None for p in strangers), len(strangers)),
        "strangers_unlocked_site_learned": rate(
            sum(p.unlocked is not None for p in counted), len(counted)
        ),
        "frames_to_unlock_median": frames[len(frames) // 2] if frames else None,
        "frames_to_unlock_max": frames[-1] if frames else None,
    }


def table(report: dict[str, Any]) -> str:
    s = report["summary"]

    def count(key: str) -> str:
        figure = s[key]
        low, high = (100 * x for x in figure["wilson_95"])
        return f"{figure['value']}/{figure['of']} (95% CI {low:.1f}-{high:.1f}%)"

    alone = report.get("seed") is not None
    who = "households of one" if alone else "leave one out"
    thresholds = sorted({g["threshold"] for g in report["galleries"].values()})
    removed = [g.get("site_removed", 0.0) for g in report["galleries"].values()]
    # Pairs of enrolled people the door could not keep apart ([recognition] lookalikes).
    pairs = {
        (p["first"], p["second"]): Lookalike(**p)
        for g in report["galleries"].values()
        for p in g.get("lookalikes", [])
    }
    lines = [
        f"door on real video: {report['data']} (liveness {report['liveness']})",
        f"[recognition] threshold                   {', '.join(map(str, thresholds))} "
        f"({len(report['galleries'])} galleries)",
        f"lookalikes among the enrolled             "
        f"{describe_lookalikes(list(pairs.values())) or 'none'}",
        f"site centring removes (length)            {min(removed):.3f}-{max(removed):.3f}",
        f"live visits unlocked as the right person  {count('visits_unlocked_right')}",
        f"  of them from another session            {count('visits_other_session')}",
        f"  live visits refused as not live         {s['visits_refused_as_not_live']}",
        f"wrong-person unlocks                      {s['wrong_person_unlocks']}",
        f"  reported as someone taking their place  {count('visits_took_place_false_alarms')}",
        f"printed-photo attacks unlocked            {count('attacks_unlocked')}",
        f"  recognised as the subject               {count('attacks_recognized')}",
        f"  logged as spoof                         {count('attacks_logged_spoof')}",
        f"strangers unlocked ({who})".ljust(42) + count("strangers_unlocked"),
        f"frames to unlock (median / max)           {s['frames_to_unlock_median']} / "
        f"{s['frames_to_unlock_max']}",
    ]
    learned = [g.get("site_learned", 0) for g in report["galleries"].values()]
    if alone and max(learned, default=0):
        lines.insert(
            -1,
            f"  once the site memory counted            {count('strangers_unlocked_site_learned')}"
            f" ({min(learned)}-{max(learned)} stranger visits learned per door)",
        )
    missed = [c for c in report["clips"] if c["kind"] == "visit" and c["unlocked"] != c["subject"]]
    wrong = [c for c in report["clips"] if c["kind"] != "visit" and c["unlocked"] is not None]
    lines += [f"  missed: {c['label']} (recognised {c['recognized']})" for c in missed]
    lines += [f"  let in: {c['label']} as {c['unlocked']}" for c in wrong]
    return "\n".join(lines)
