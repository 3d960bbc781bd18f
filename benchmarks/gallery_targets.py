"""The gallery's targets (identification, strangers accepted), measured on LFW identities
the threshold never saw.

The recognition threshold, aggregate and margin in models/tflite/manifest.json were chosen on
LFW DevTrain (converter/recognition.py). Judging them on DevTrain people again would grade
the exam with the answer key, so everything here comes from people outside pairsDevTrain.txt:
DevTest people for the enrolled 20 and for the strangers. The two lists share nobody, and the
image folder holds exactly their union (the report's "split" block checks both), so "not in
DevTrain" is the whole evaluation pool.

What runs is what a door runs: int8 models on the CPU, enrolment through
edge_app.enroll.enroll_photos into a real SQLite gallery with the quality gates on, matching
with MatchSettings.from_recognition(manifest.recognition) and the door's default site
centring on the gallery's load_matrix().
Probes are not gated (a door cannot ask a visitor for a better photo): each probe photo goes
through detect + embed, and the verdict is the one for the face LFW labels (the central one).

    .venv/bin/python benchmarks/gallery_targets.py   # writes benchmarks/gallery_targets.json

Selection is fixed by --seed; only the timings change between runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import outputs  # noqa: E402
from edge_app.config import RecognitionConfig  # noqa: E402
from edge_app.engine import Engine  # noqa: E402
from edge_app.enroll import model_id  # noqa: E402
from edge_app.evaluate_visits import enrol_replacing  # noqa: E402
from edge_app.gallery import Gallery, NewSample  # noqa: E402
from edge_app.images import read_image  # noqa: E402
from edge_app.lfw import (  # noqa: E402
    central_face,
    people_in_pairs,
    photos_by_person,
    rel,
    wilson,
)
from edge_app.matching import (  # noqa: E402
    Matcher,
    MatchSettings,
    accepts,
    stranger_threshold,
)
from edge_app.quality import check_face, pose, sharpness  # noqa: E402
from edge_app.reports import check_output  # noqa: E402

SEED = 4  # the draw docs/ACCURACY.md reports
GALLERY_PEOPLE = 20
ENROL_PHOTOS = 2
PROBE_PHOTOS = 2
MIN_PHOTOS = ENROL_PHOTOS + PROBE_PHOTOS
STRANGER_PHOTOS = 500
TIMING_PEOPLE = 100
TIMING_RUNS = 50
TIMING_WARMUP = 5
BOOTSTRAP = 2000
CLOSEST_STRANGERS = 5  # the strangers nearest to acceptance, listed in the report
# Matching alone takes microseconds: each timed sample is this many calls, divided back.
MATCH_CALLS = 200
TARGET_IDENTIFIED = 0.95
TARGET_STRANGERS = 1
# Offsets around the manifest threshold for the sensitivity table (evaluation set, not tuning).
SENSITIVITY_OFFSETS = (-0.08, -0.06, -0.04, -0.02, 0.0, 0.02, 0.04)
FRAME_SIZE = (640, 480)  # width, height: the daemon's detection frame
BACKGROUND = Path("detection/negatives/frame_000100.jpg")  # a real photo without a face
HEAD_SCALE = 1.3  # a 250 px LFW photo at 1.3 holds a ~130 px face: about a metre from the door


@dataclass
class Split:
    """Who may be used for what, and the numbers that show the split is clean."""

    devtrain_people: set[str]
    devtest_people: set[str]
    photos: dict[str, list[Path]]  # every person in the folder -> sorted photo paths

    @property
    def evaluation_people(self) -> list[str]:
        return sorted(p for p in self.photos if p not in self.devtrain_people)

    def summary(self) -> dict[str, int]:
        folder = set(self.photos)
        return {
            "folder_people": len(folder),
            "folder_images": sum(len(v) for v in self.photos.values()),
            "devtrain_people": len(self.devtrain_people),
            "devtest_people": len(self.devtest_people),
            "devtest_and_devtrain": len(self.devtest_people & self.devtrain_people),
            "in_neither_list": len(folder - self.devtrain_people - self.devtest_people),
            "evaluation_people": len(self.evaluation_people),
            "evaluation_images": sum(len(self.photos[p]) for p in self.evaluation_people),
            "evaluation_people_with_4_photos": sum(
                len(self.photos[p]) >= MIN_PHOTOS for p in self.evaluation_people
            ),
        }


@dataclass
class Enrolment:
    """One enrolled person: which photos went in, which the gates refused and why."""

    person: str
    enrolled: list[str]
    probes: list[str]
    rejected: list[dict[str, str]] = field(default_factory=list)
    near_duplicates: int = 0
    ok: bool = True  # False: too few photos left after the gates, so passed over


@dataclass
class Probe:
    """One probe photo's verdict for its central face, with what explains a failure."""

    image: str
    person: str | None  # None for a stranger
    faces: int
    accepted: str | None = None
    best: str | None = None
    score: float | None = None
    second: float | None = None
    any_face_accepted: list[str] = field(default_factory=list)
    face_px: float | None = None
    yaw: float | None = None
    roll: float | None = None
    pitch: float | None = None
    sharpness: float | None = None
    gate: str | None = None  # the enrolment gate this face would fail, if any


def load_split(lfw: Path) -> Split:
    return Split(
        people_in_pairs(lfw / "pairsDevTrain.txt"),
        people_in_pairs(lfw / "pairsDevTest.txt"),
        photos_by_person(lfw / "images"),
    )


def enrol_one(
    db: Path, engine: Engine, person: str, photos: Sequence[Path], rng: np.random.Generator
) -> Enrolment:
    """Enrol `person` from ENROL_PHOTOS photos through the real path, gates on.

    The probes are drawn first, at random, so which photos probe does not depend on which
    ones the gates like. The rest are tried in random order; a refused photo is replaced by
    the person's next one, as a user would bring another photo. ok=False when the person
    runs out of photos (the caller then takes the next person and records why).
    """
    order = [photos[i] for i in rng.permutation(len(photos))]
    attempt = enrol_replacing(db, engine, person, order[PROBE_PHOTOS:], ENROL_PHOTOS)
    return Enrolment(
        person,
        attempt.enrolled,
        [rel(p) for p in order[:PROBE_PHOTOS]],
        attempt.refused,
        attempt.near_duplicates,
        attempt.ok,
    )


@dataclass
class Probes:
    """Probe records with every face's embedding kept, so that the sensitivity table
    re-matches them under other settings without running the models again."""

    records: list[Probe] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    central: list[int | None] = field(default_factory=list)

    def add(self, engine: Engine, path: Path, person: str | None) -> None:
        """Detect and embed every face, as `edge-app identify` does."""
        frame = read_image(path)
        faces, embeddings = engine.process(frame)
        index = central_face(faces, frame.shape[1], frame.shape[0])
        record = Probe(rel(path), person, len(faces))
        if index is not None:
            face = faces[index]
            roll, yaw, pitch = (float(v[0]) for v in pose(face.landmarks))
            rejection = check_face(frame, face)
            record.face_px = round(float(face.sizes[0]), 1)
            record.roll, record.yaw, record.pitch = round(roll, 1), round(yaw, 3), round(pitch, 3)
            record.sharpness = round(sharpness(frame, face.boxes[0]), 1)
            record.gate = rejection.reason.value if rejection else None
        self.records.append(record)
        self.embeddings.append(embeddings)
        self.central.append(index)

    def apply(self, matcher: Matcher) -> None:
        """Each probe's verdict under `matcher`: for its central face, and for any face."""
        for record, rows, central in zip(self.records, self.embeddings, self.central, strict=True):
            record.accepted = record.best = record.score = record.second = None
            record.any_face_accepted = []
            if len(rows) == 0:
                continue
            matches = matcher.identify(rows)
            record.any_face_accepted = [n for n in matches.names if n is not None]
            if central is not None:
                record.accepted = matches.names[central]
                record.best = matches.best[central]
                record.score = round(float(matches.scores[central]), 4)
                record.second = round(float(matches.second[central]), 4)


def tally(genuine: list[Probe], strangers: list[Probe]) -> dict[str, Any]:
    correct = sum(p.accepted == p.person for p in genuine)
    return {
        "identified": correct,
        "genuine_probes": len(genuine),
        "identified_rate": correct / len(genuine),
        "wrong_person": sum(p.accepted not in (None, p.person) for p in genuine),
        "unknown": sum(p.accepted is None for p in genuine),
        "strangers_accepted": sum(p.accepted is not None for p in strangers),
        "stranger_photos_any_face_accepted": sum(bool(p.any_face_accepted) for p in strangers),
        "stranger_probes": len(strangers),
    }


def composite_frame(data: Path, photo: Path) -> np.ndarray:
    """A 640x480 RGB frame: a real faceless background with the LFW photo feathered in as a
    head, so detection costs what it costs on a door camera, not on a flat colour."""
    bgr = cv2.imread(str(data / BACKGROUND), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(data / BACKGROUND)
    canvas = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), FRAME_SIZE).astype(np.float32)
    face = read_image(photo)
    size = round(face.shape[1] * HEAD_SCALE)
    face = cv2.resize(face, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    alpha = np.zeros((size, size), np.float32)
    cv2.ellipse(
        alpha, (size // 2, size // 2), (int(size * 0.36), int(size * 0.46)), 0, 0, 360, 1, -1
    )
    alpha = cv2.GaussianBlur(alpha, (0, 0), size * 0.03)[..., None]
    x, y = (FRAME_SIZE[0] - size) // 2, (FRAME_SIZE[1] - size) // 2
    x1, y1 = max(x, 0), max(y, 0)
    x2, y2 = min(x + size, FRAME_SIZE[0]), min(y + size, FRAME_SIZE[1])
    region = canvas[y1:y2, x1:x2]
    a = alpha[y1 - y : y2 - y, x1 - x : x2 - x]
    canvas[y1:y2, x1:x2] = a * face[y1 - y : y2 - y, x1 - x : x2 - x] + (1 - a) * region
    return np.clip(canvas, 0, 255).astype(np.uint8)


def summary(seconds: Sequence[float]) -> dict[str, float]:
    """Median and quartiles in milliseconds: two shared cores make a mean meaningless."""
    p25, p50, p75 = np.percentile(np.asarray(seconds) * 1e3, [25, 50, 75])
    return {
        "n": len(seconds),
        "median_ms": round(float(p50), 4),
        "p25_ms": round(float(p25), 4),
        "p75_ms": round(float(p75), 4),
        "iqr_ms": round(float(p75 - p25), 4),
    }


def time_frames(
    engine: Engine,
    frame: np.ndarray,
    matchers: dict[str, Matcher],
    runs: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Whole-frame identification (detect + embed + match) per gallery, interleaved.

    The galleries alternate run by run, and which goes first alternates too, so a slow
    stretch on the shared cores lands on both equally instead of on whichever ran second.
    Matching alone is timed separately, since it is microseconds inside tens of milliseconds.
    """
    names = list(matchers)
    frame_s: dict[str, list[float]] = {n: [] for n in names}
    match_s: dict[str, list[float]] = {n: [] for n in names}
    verdicts: dict[str, list[str | None]] = {}
    _, embeddings = engine.process(frame)
    for run in range(-TIMING_WARMUP, runs):
        for name in names if run % 2 == 0 else names[::-1]:
            matcher = matchers[name]
            start = time.perf_counter()
            _, found = engine.process(frame)
            matches = matcher.identify(found)
            elapsed = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(MATCH_CALLS):
                matcher.identify(embeddings)
            per_call = (time.perf_counter() - start) / MATCH_CALLS
            if run >= 0:
                frame_s[name].append(elapsed)
                match_s[name].append(per_call)
                verdicts[name] = matches.names
    result: dict[str, Any] = {
        "paired_difference": paired_difference(frame_s[names[1]], frame_s[names[0]], rng)
    }
    for name in names:
        result[name] = {
            "people": len(matchers[name].matrix.names),
            "samples": len(matchers[name].matrix),
            "faces_in_frame": len(embeddings),
            "verdict": verdicts[name],
            "frame": summary(frame_s[name]),
            "matching_only": summary(match_s[name]),
        }
    return result


def paired_difference(
    later: Sequence[float], base: Sequence[float], rng: np.random.Generator
) -> dict[str, Any]:
    """Median of the per-run differences, with a 95% bootstrap interval, in milliseconds.

    Both galleries ran back to back in each run, so a differencing run by run cancels most
    of what the other work on the shared cores does to both; the IQRs alone cannot.
    """
    diff = (np.asarray(later) - np.asarray(base)) * 1e3
    resampled = np.median(rng.choice(diff, size=(BOOTSTRAP, len(diff)), replace=True), axis=1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {
        "median_difference_ms": round(float(np.median(diff)), 3),
        "ci95_ms": [round(float(low), 3), round(float(high), 3)],
        "relative_to_1_person_median": round(float(np.median(diff) / np.median(base) / 1e3), 4),
    }


def timing_gallery(
    db: Path, engine: Engine, people: Sequence[str], photos: dict[str, list[Path]]
) -> None:
    """A gallery through the Gallery API (fast: no gates, no per-photo transaction), from
    real embeddings of each person's first ENROL_PHOTOS photos."""
    model = model_id(engine)
    with Gallery.open(db, create=True) as gallery:
        for person in people:
            samples = []
            for path in photos[person][:ENROL_PHOTOS]:
                frame = read_image(path)
                faces = engine.detect(frame)
                index = central_face(faces, frame.shape[1], frame.shape[0])
                if index is None:
                    continue
                embedding = engine.embed(frame, faces[index])[0]
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                samples.append(NewSample(embedding, digest, model=model))
            gallery.enroll(person, samples)


def matcher_for(db: Path, settings: MatchSettings, normaliser: Any = None) -> Matcher:
    """As the daemon does on each gallery load: one snapshot, one Matcher (normaliser: the
    engine's cohort, edge_app.cohort)."""
    with Gallery.open(db) as gallery:
        return Matcher(gallery.load_matrix(), settings, normaliser)


def sensitivity(
    matrix_db: Path,
    base: MatchSettings,
    candidates: list[dict[str, Any]],
    genuine: Probes,
    strangers: Probes,
    normaliser: Any = None,
) -> dict[str, list[dict[str, Any]]]:
    """Re-match the stored embeddings under other settings. For reading only: these rows are
    computed on the evaluation set and were not used to choose anything."""
    rows: dict[str, list[dict[str, Any]]] = {"threshold": [], "devtrain_candidates": []}

    def row(settings: MatchSettings) -> dict[str, Any]:
        matcher = matcher_for(matrix_db, settings, normaliser)
        genuine.apply(matcher)
        strangers.apply(matcher)
        counts = tally(genuine.records, strangers.records)
        return {
            "threshold": round(settings.threshold, 4),
            "margin": settings.margin,
            "aggregate": settings.aggregate,
            "identified_rate": round(counts["identified_rate"], 4),
            "wrong_person": counts["wrong_person"],
            "strangers_accepted": counts["strangers_accepted"],
        }

    for offset in SENSITIVITY_OFFSETS:
        threshold = round(base.threshold + offset, 4)
        rows["threshold"].append(row(dataclasses.replace(base, threshold=threshold)))
    rows["oracle"] = [oracle(matcher_for(matrix_db, base, normaliser), genuine, strangers)]
    seen = set()
    for candidate in candidates:
        key = (candidate["aggregate"], candidate["margin"], candidate["threshold"])
        if key in seen:
            continue
        seen.add(key)
        # the base's normalisation and centroid setting go with every candidate
        settings = dataclasses.replace(
            base,
            threshold=candidate["threshold"],
            margin=candidate["margin"],
            aggregate=candidate["aggregate"],
        )
        rows["devtrain_candidates"].append(
            {**row(settings), "devtrain_identified_rate": round(candidate["identified"], 4)}
        )
    return rows


def oracle(matcher: Matcher, genuine: Probes, strangers: Probes) -> dict[str, Any]:
    """The ceiling: the lowest threshold that lets at most TARGET_STRANGERS of these very
    strangers in, chosen on the evaluation set itself. Not a valid setting (it peeks at the
    answers); it shows whether any threshold could meet both targets with these embeddings."""
    settings = matcher.settings

    def central(probes: Probes) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        best: list[float] = []
        second: list[float] = []
        names: list[str | None] = []
        for rows, index in zip(probes.embeddings, probes.central, strict=True):
            if index is None:
                best.append(-np.inf)
                second.append(0.0)
                names.append(None)
                continue
            scores = matcher.person_scores(rows[index : index + 1])[0]
            order = np.argsort(scores)[::-1]
            best.append(float(scores[order[0]]))
            second.append(float(scores[order[1]]) if len(scores) > 1 else -1.0)
            names.append(matcher.matrix.names[int(order[0])])
        return np.array(best), np.array(second), names

    s_best, s_second, _ = central(strangers)
    threshold = stranger_threshold(s_best, s_second, settings.margin, most=TARGET_STRANGERS)
    g_best, g_second, g_names = central(genuine)
    correct = np.array([n == p.person for n, p in zip(g_names, genuine.records, strict=True)])
    ok = accepts(g_best, g_second, threshold, settings.margin)
    return {
        "threshold": round(threshold, 4),
        "margin": settings.margin,
        "aggregate": settings.aggregate,
        "identified_rate": round(float((ok & correct).mean()), 4),
        "wrong_person": int((ok & ~correct).sum()),
        "strangers_accepted": int(accepts(s_best, s_second, threshold, settings.margin).sum()),
    }


def git_state() -> dict[str, Any]:
    """The commit measured, and any uncommitted change to the code or models under it: the
    numbers belong to exactly that state (a detector fix moves individual scores)."""

    def git(*command: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *command], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.rstrip()  # porcelain lines start with a meaningful space
        except (OSError, subprocess.CalledProcessError):
            return None

    changes = git("status", "--porcelain", "--", "edge_app", "converter", "models")
    return {
        "head": (git("rev-parse", "HEAD") or "").strip() or None,
        "uncommitted_code_changes": changes.splitlines() if changes else [],
    }


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    """The tables docs/ACCURACY.md quotes, straight from the report."""
    t = report["targets"]
    timing = report["timing"]
    one, hundred = timing["1_person"], timing["100_people"]
    ident, strangers, frames = t["identified"], t["strangers"], t["timing"]
    low, high = ident["wilson_95"]
    lines = [
        "| target | goal | measured | met |",
        "|---|---|---|---|",
        f"| {report['enrolment']['people_enrolled']} people x 2 photos enrolled, 2 other photos "
        f"each probed | >= 95% identified | {ident['value']}/{ident['of']} = "
        f"{100 * ident['rate']:.1f}% (95% CI {100 * low:.1f}-{100 * high:.1f}%), "
        f"{report['counts']['wrong_person']} wrong person | {'yes' if ident['met'] else 'NO'} |",
        f"| {strangers['of']} photos of {strangers['of']} people not enrolled | <= 1 accepted | "
        f"{strangers['value']} accepted (95% CI of the rate "
        f"{100 * strangers['rate_wilson_95'][0]:.2f}-{100 * strangers['rate_wilson_95'][1]:.2f}%)"
        f" | {'yes' if strangers['met'] else 'NO'} |",
        f"| one 640x480 frame, 1 vs 100 people ({hundred['samples']} samples) | no difference "
        f"within noise | median {one['frame']['median_ms']:.1f} ms (IQR "
        f"{one['frame']['iqr_ms']:.1f}) vs {hundred['frame']['median_ms']:.1f} ms (IQR "
        f"{hundred['frame']['iqr_ms']:.1f}); paired difference "
        f"{frames['median_difference_ms']:+.2f} ms (95% CI {frames['ci95_ms'][0]:+.2f} to "
        f"{frames['ci95_ms'][1]:+.2f}); matching alone "
        f"{1e3 * one['matching_only']['median_ms']:.0f} vs "
        f"{1e3 * hundred['matching_only']['median_ms']:.0f} us | "
        f"{'yes' if frames['met'] else 'NO'} |",
        "",
        "Genuine probes not identified:",
        "",
        "| probe | verdict | best person | score | second | face px | yaw | gate it would fail |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in report["genuine_failures"]:
        verdict = "no face" if p["faces"] == 0 else (p["accepted"] or "unknown")
        lines.append(
            f"| {p['image']} | {verdict} | {p['best'] or '-'} | {fmt(p['score'])} | "
            f"{fmt(p['second'])} | {fmt(p['face_px'], 0)} | {fmt(p['yaw'], 2)} | "
            f"{p['gate'] or '-'} |"
        )
    lines += ["", "Strangers closest to acceptance (accepted ones marked):", ""]
    lines += ["| probe | closest person | score | second | accepted |", "|---|---|---|---|---|"]
    for p in report["strangers_closest"]:
        lines.append(
            f"| {p['image']} | {p['best']} | {fmt(p['score'])} | {fmt(p['second'])} | "
            f"{'ACCEPTED' if p['accepted'] else 'no'} |"
        )
    lines += [
        "",
        "Sensitivity (evaluation set; for reading, not for choosing):",
        "",
        "| rows | threshold | margin | aggregate | identified | wrong person | strangers in |",
        "|---|---|---|---|---|---|---|",
    ]
    sens = report["sensitivity"]
    for label, group in (
        ("around the default", sens["threshold"]),
        ("DevTrain candidates", sens["devtrain_candidates"]),
        ("oracle (peeks)", sens["oracle"]),
    ):
        for r in group:
            lines.append(
                f"| {label} | {r['threshold']:.4f} | {r['margin']:.2f} | {r['aggregate']} | "
                f"{100 * r['identified_rate']:.1f}% | {r['wrong_person']} | "
                f"{r['strangers_accepted']} |"
            )
    return "\n".join(lines)


def enrol_gallery(
    db: Path, engine: Engine, split: Split, rng: np.random.Generator
) -> tuple[list[Enrolment], list[Enrolment]]:
    """The 20 enrolled: people outside DevTrain with enough photos, in seeded order, each
    through enrol_one; (enrolled, passed over)."""
    eligible = [p for p in split.evaluation_people if len(split.photos[p]) >= MIN_PHOTOS]
    enrolments: list[Enrolment] = []
    passed_over: list[Enrolment] = []
    for person in [eligible[i] for i in rng.permutation(len(eligible))]:
        if len(enrolments) == GALLERY_PEOPLE:
            break
        record = enrol_one(db, engine, person, split.photos[person], rng)
        if record.ok:
            enrolments.append(record)
            continue
        passed_over.append(record)
        with Gallery.open(db, create=True) as gallery:
            if gallery.has(person):  # a near-duplicate left them half enrolled
                gallery.remove([person])
    if len(enrolments) < GALLERY_PEOPLE:
        raise SystemExit(
            f"only {len(enrolments)} of {len(eligible)} people outside DevTrain with "
            f"{MIN_PHOTOS}+ photos could be enrolled; the target needs {GALLERY_PEOPLE}"
        )
    return enrolments, passed_over


def pick_strangers(split: Split, enrolled: set[str], rng: np.random.Generator) -> list[Path]:
    """One photo each of STRANGER_PHOTOS different people outside DevTrain and not enrolled:
    many identities make a harder test for a false accept than many photos of a few."""
    pool = [p for p in split.evaluation_people if p not in enrolled]
    chosen = sorted(pool[i] for i in rng.choice(len(pool), STRANGER_PHOTOS, replace=False))
    return [split.photos[p][int(rng.integers(len(split.photos[p])))] for p in chosen]


@outputs.command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "gallery_targets.json")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--runs", type=int, default=TIMING_RUNS)
    args = parser.parse_args(argv)
    check_output(args.out, "--out")  # before the minutes of work, not with a traceback after
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    # One stream per stage, so that a gate refusing one more photo does not reshuffle the
    # strangers or the timing gallery.
    streams = [np.random.default_rng([args.seed, stage]) for stage in range(4)]
    lfw = args.data / "lfw"
    split = load_split(lfw)
    engine = Engine.open(backend="cpu")
    settings = MatchSettings.from_recognition(
        engine.manifest.recognition, site_centring=RecognitionConfig().site_centring
    )

    with tempfile.TemporaryDirectory(prefix="gallery-targets-") as folder:
        db = Path(folder) / "gallery.db"
        enrolments, passed_over = enrol_gallery(db, engine, split, streams[0])
        print(f"enrolled {len(enrolments)} people ({len(passed_over)} passed over)", flush=True)
        genuine = Probes()
        for record in enrolments:
            for name in record.probes:
                genuine.add(engine, lfw / "images" / name, record.person)
        strangers = Probes()
        for path in pick_strangers(split, {r.person for r in enrolments}, streams[1]):
            strangers.add(engine, path, None)
        print(
            f"probed {len(genuine.records)} genuine, {len(strangers.records)} strangers", flush=True
        )

        defaults = matcher_for(db, settings, engine.cohort)
        genuine.apply(defaults)
        strangers.apply(defaults)
        counts = tally(genuine.records, strangers.records)
        failures = [asdict(p) for p in genuine.records if p.accepted != p.person]
        accepted = [asdict(p) for p in strangers.records if p.accepted is not None]
        any_face = [asdict(p) for p in strangers.records if p.any_face_accepted]
        closest = sorted(
            (p for p in strangers.records if p.score is not None),
            key=lambda p: p.score or 0.0,
            reverse=True,
        )[:CLOSEST_STRANGERS]
        closest_rows = [asdict(p) for p in closest]
        sens = sensitivity(
            db,
            settings,
            list(engine.manifest.recognition.get("candidates", [])),
            genuine,
            strangers,
            engine.cohort,
        )
        genuine.apply(defaults)  # the records in the report are the defaults' verdicts
        strangers.apply(defaults)

        # Timing: the frame shows the first enrolled person (a probe photo, not enrolled);
        # the 1-person gallery is them, the 100-person one them and 99 others outside DevTrain.
        target = enrolments[0].person
        frame_photo = lfw / "images" / enrolments[0].probes[0]
        others = [
            p
            for p in split.evaluation_people
            if p != target and len(split.photos[p]) >= ENROL_PHOTOS
        ]
        others = sorted(
            others[i] for i in streams[2].choice(len(others), TIMING_PEOPLE - 1, replace=False)
        )
        one_db, hundred_db = Path(folder) / "one.db", Path(folder) / "hundred.db"
        timing_gallery(one_db, engine, [target], split.photos)
        timing_gallery(hundred_db, engine, [target, *others], split.photos)
        frame = composite_frame(args.data, frame_photo)
        load_before = round(os.getloadavg()[0], 2)
        timing = time_frames(
            engine,
            frame,
            {
                "1_person": matcher_for(one_db, settings, engine.cohort),
                "100_people": matcher_for(hundred_db, settings, engine.cohort),
            },
            args.runs,
            streams[3],
        )
    paired = timing.pop("paired_difference")
    identified_ci = wilson(counts["identified"], counts["genuine_probes"])
    strangers_ci = wilson(counts["strangers_accepted"], counts["stranger_probes"])
    rejections: dict[str, int] = {}
    for record in enrolments + passed_over:
        for item in record.rejected:
            rejections[item["reason"]] = rejections.get(item["reason"], 0) + 1
    report: dict[str, Any] = {
        "what": "gallery targets on LFW people outside DevTrain",
        "seed": args.seed,
        "git": git_state(),
        "settings": asdict(settings),
        "backend": {"kind": engine.backend.kind, "threads": engine.backend.threads},
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "split": split.summary(),
        "counts": counts,
        "targets": {
            "identified": {
                "value": counts["identified"],
                "of": counts["genuine_probes"],
                "rate": round(counts["identified_rate"], 4),
                "wilson_95": identified_ci,
                "goal": f">= {TARGET_IDENTIFIED:.0%}",
                "met": counts["identified_rate"] >= TARGET_IDENTIFIED,
            },
            "strangers": {
                "value": counts["strangers_accepted"],
                "of": counts["stranger_probes"],
                "rate_wilson_95": strangers_ci,
                "goal": f"<= {TARGET_STRANGERS}",
                "met": counts["strangers_accepted"] <= TARGET_STRANGERS,
            },
            "timing": {
                **paired,
                "rule": (
                    "per-run paired difference (100 people minus 1 person, interleaved runs): "
                    "its median's 95% bootstrap interval contains 0"
                ),
                "met": paired["ci95_ms"][0] <= 0.0 <= paired["ci95_ms"][1],
            },
        },
        "enrolment": {
            "people_tried": len(enrolments) + len(passed_over),
            "people_enrolled": len(enrolments),
            "passed_over": [asdict(r) for r in passed_over],
            "photos_tried": sum(
                len(r.enrolled) + len(r.rejected) for r in enrolments + passed_over
            ),
            "photos_rejected": sum(len(r.rejected) for r in enrolments + passed_over),
            "photos_rejected_of_enrolled_people": sum(len(r.rejected) for r in enrolments),
            "rejections_by_reason": rejections,
            "near_duplicates_skipped": sum(r.near_duplicates for r in enrolments),
            "people": [asdict(r) for r in enrolments],
        },
        "genuine_failures": failures,
        "strangers_accepted": accepted,
        "stranger_photos_with_any_face_accepted": any_face,
        "strangers_closest": closest_rows,
        "genuine_probes": [asdict(p) for p in genuine.records],
        "stranger_no_face": sum(p.faces == 0 for p in strangers.records),
        "sensitivity": sens,
        "timing": {
            "frame_photo": rel(frame_photo),
            "runs": args.runs,
            "load_average_1min": {"before": load_before, "after": round(os.getloadavg()[0], 2)},
            **timing,
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    outputs.write_json(args.out, report, "--out")
    print(markdown(report))
    print(f"\nwrote {args.out} in {report['seconds']:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main())
