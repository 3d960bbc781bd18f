"""`edge-app eval liveness`: presentation-attack detection measured on NUAA-layout frames.

Layout: DIR/live/<subject>/ and DIR/print/<subject>/ with files ID_GG_PP_SS_N.jpg (subject,
glasses, PP = attack motion for print/ or setting for live/, session, frame number). Frames
sharing ID_GG_PP_SS are one sequence, in the order of N.

Every frame is detected and its presented face, the largest, gets a liveness score; frames
with no face are counted apart. (Consecutive NUAA frames are up to a second apart and a hand-
held photo moves far in that time, so the door's box-overlap tracker would split its tracks.)

Metrics (ISO/IEC 30107-3): APCER per attack type = attack frames judged live / attack frames;
BPCER = live frames judged not live / live frames; ACER = (worst APCER + BPCER) / 2.
Per sequence, each track is cut into consecutive windows of up to `LIVE_WINDOW_FRAMES` frames (the
about one second a door decides in) and a window is judged live when at least
`min_live_frames` of its frames are (edge_app/liveness_rule.py, the door's rule). Per track,
as the door judges a recognised track: accepted when the rule passes on its last frames (at
most `LIVE_WINDOW_FRAMES`) before a full window fails it; refused for good at the first full
window that fails first. The parallax reading (edge_app/parallax.py) of each window is reported
beside it, for the geometry table in docs/LIVENESS.md.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.config import LIVE_WINDOW_FRAMES, PolicyConfig
from edge_app.engine import Engine
from edge_app.errors import UserError
from edge_app.faces import Faces
from edge_app.images import read_image
from edge_app.liveness_rule import judged_scores, track_verdict, window_is_live
from edge_app.parallax import Parallax, pair_measures
from edge_app.progress import Progress
from edge_app.reports import json_safe

log = logging.getLogger(__name__)

KINDS = ("live", "print")
FILE_NAME = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)_(\d+)\.(?:jpe?g|png)$", re.IGNORECASE)
ATTACK_TYPES = {
    "00": "print, motion unspecified",
    "01": "print, rotated up-down",
    "02": "print, bent up-down",
    "03": "print, rotated left-right",
    "04": "print, bent left-right",
    "08": "print, held still",
}


@dataclass(frozen=True)
class Sequence:
    kind: str  # "live" or "print"
    key: str  # ID_GG_PP_SS
    frames: tuple[Path, ...]  # in time order

    @property
    def subject(self) -> str:
        return self.key.split("_")[0]

    @property
    def code(self) -> str:
        return self.key.split("_")[2]

    @property
    def group(self) -> str:
        """ "live", or "print-PP" for the attack type."""
        return "live" if self.kind == "live" else f"print-{self.code}"


def read_sequences(root: Path, subjects: set[str] | None = None) -> list[Sequence]:
    """The sequences under root/live and root/print; other file names are skipped (logged)."""
    root = Path(root)
    missing = [kind for kind in KINDS if not (root / kind).is_dir()]
    if missing:
        raise UserError(
            f"--data {root}: no {' or '.join(f'{m}/' for m in missing)} folder; expected the "
            "NUAA layout live/<subject>/ID_GG_PP_SS_N.jpg and print/<subject>/..."
        )
    grouped: dict[tuple[str, str], list[tuple[int, Path]]] = defaultdict(list)
    seen: set[str] = set()
    skipped = 0
    for kind in KINDS:
        for path in sorted((root / kind).rglob("*")):
            if not path.is_file():
                continue
            match = FILE_NAME.match(path.name)
            if match is None:
                skipped += 1
                continue
            subject, glasses, code, session, number = match.groups()[:5]
            seen.add(subject)
            if subjects is not None and subject not in subjects:
                continue
            grouped[(kind, f"{subject}_{glasses}_{code}_{session}")].append((int(number), path))
    if skipped:
        log.warning("skipped=%d files under %s not named ID_GG_PP_SS_N.jpg", skipped, root)
    unknown = sorted((subjects or set()) - seen)
    if unknown and seen:
        raise UserError(
            f"--subjects: no frames of {', '.join(unknown)} under {root}; its subjects are "
            f"{', '.join(sorted(seen))}"
        )
    sequences = [
        Sequence(kind, key, tuple(path for _, path in sorted(frames)))
        for (kind, key), frames in sorted(grouped.items())
    ]
    for kind in KINDS:
        if not any(s.kind == kind for s in sequences):
            raise UserError(f"--data {root}: no {kind}/ frames named ID_GG_PP_SS_N.jpg found")
    return sequences


@dataclass
class TrackScores:
    """The presented face of one sequence: per frame its score (NaN: no face) and landmarks."""

    sequence: Sequence
    scores: np.ndarray  # (frames,) float, NaN where the track has no face
    landmarks: np.ndarray  # (frames, 5, 2), NaN where the track has no face


def presented_face(faces: Faces) -> int | None:
    """Index of the largest face: the one held up to (or standing at) the camera.

    NUAA frames sometimes also show people in the background, and now and then the person
    holding the photo; they are further from the camera than the presented face.
    """
    if len(faces) == 0:
        return None
    sides = faces.boxes[:, 2:] - faces.boxes[:, :2]
    return int(np.argmax(sides[:, 0] * sides[:, 1]))


def score_sequence(engine: Engine, sequence: Sequence, timing: list[float]) -> TrackScores:
    """Detect every frame and score its presented face.

    `timing` collects the seconds of each liveness call (one face), for the cost figure.
    """
    count = len(sequence.frames)
    result = TrackScores(sequence, np.full(count, np.nan), np.full((count, 5, 2), np.nan))
    for index, path in enumerate(sequence.frames):
        frame = read_image(path)
        faces = engine.detect(frame)
        chosen = presented_face(faces)
        if chosen is None:
            continue
        start = time.perf_counter()
        score = judged_scores(engine.liveness(frame, faces[chosen]))
        timing.append(time.perf_counter() - start)
        result.scores[index] = float(score[0])
        result.landmarks[index] = faces.landmarks[chosen]
    return result


def windows(count: int, size: int = LIVE_WINDOW_FRAMES) -> list[np.ndarray]:
    """Consecutive index windows of at most `size` covering 0..count-1, as even as possible."""
    if count == 0:
        return []
    return list(np.array_split(np.arange(count), math.ceil(count / size)))


@dataclass
class GroupFigures:
    frames: int = 0
    judged_live: int = 0
    no_face: int = 0
    windows: int = 0
    windows_live: int = 0
    tracks: int = 0
    tracks_live: int = 0
    geometry: dict[str, int] = field(default_factory=lambda: dict(abstain=0, flat=0, depth=0))
    residuals: list[float] = field(default_factory=list)  # per window with turned pairs
    turns: list[float] = field(default_factory=list)  # largest rim turn per window
    pair_residuals: list[float] = field(default_factory=list)  # all turned pairs

    @property
    def live_rate(self) -> float:
        return self.judged_live / self.frames if self.frames else float("nan")

    @property
    def window_live_rate(self) -> float:
        return self.windows_live / self.windows if self.windows else float("nan")


def track_is_live(scores: np.ndarray, threshold: float, min_live_frames: int) -> bool:
    """The door's view of a longer track (liveness_rule.track_verdict, with the default
    policy's votes): let in when the rule passes before a full window fails it and the
    votes that win are live; a track too short for either, or held, is not let in."""
    votes = PolicyConfig()
    verdict = track_verdict(
        scores.tolist(), threshold, min_live_frames, hits=votes.hits, window=votes.window
    )
    return verdict is True


def summarise(
    tracks: list[TrackScores], threshold: float, min_live_frames: int, geometry: bool = True
) -> dict[str, GroupFigures]:
    groups: dict[str, GroupFigures] = defaultdict(GroupFigures)
    for track in tracks:
        figures = groups[track.sequence.group]
        seen = np.flatnonzero(np.isfinite(track.scores))
        figures.no_face += len(track.scores) - len(seen)
        figures.frames += len(seen)
        figures.judged_live += int(np.sum(track.scores[seen] >= threshold))
        if len(seen):
            figures.tracks += 1
            figures.tracks_live += track_is_live(track.scores[seen], threshold, min_live_frames)
        for window in windows(len(seen)):
            frames = seen[window]
            figures.windows += 1
            figures.windows_live += window_is_live(track.scores[frames], threshold, min_live_frames)
            if not geometry:
                continue
            parallax = Parallax()
            for landmarks in track.landmarks[frames]:
                reading = parallax.update(landmarks)
            figures.geometry[reading.verdict] += 1
            figures.turns.append(reading.turn)
            if reading.pairs:
                figures.residuals.append(reading.residual)
            ref, cur = np.triu_indices(len(frames), 1)
            turn, residual = pair_measures(
                track.landmarks[frames][ref], track.landmarks[frames][cur]
            )
            turned = np.isfinite(residual) & (turn >= parallax.settings.min_turn)
            figures.pair_residuals.extend(residual[turned].tolist())
    return dict(groups)


@dataclass(frozen=True)
class LivenessResult:
    threshold: float
    min_live_frames: int
    groups: dict[str, GroupFigures]
    tracks: list[TrackScores]
    ms_per_face: float
    backend: str
    models: str

    def attack_groups(self) -> list[str]:
        return sorted(g for g in self.groups if g != "live")

    def frame_rates(self) -> dict[str, float]:
        """APCER per attack type, APCER over all attacks, BPCER and ACER, per frame."""
        return self._rates(lambda g: (g.judged_live, g.frames))

    def window_rates(self) -> dict[str, float]:
        return self._rates(lambda g: (g.windows_live, g.windows))

    def track_rates(self) -> dict[str, float]:
        return self._rates(lambda g: (g.tracks_live, g.tracks))

    def sweep(self) -> list[dict[str, float]]:
        """Per-frame worst APCER and BPCER over THRESHOLD_GRID: the derivation table."""
        return sweep(self.tracks)

    def held_out(self) -> dict[str, Any]:
        return leave_one_subject_out(self.tracks, self.min_live_frames)

    def _rates(self, counts: Any) -> dict[str, float]:
        rates: dict[str, float] = {}
        accepted = total = 0
        for name in self.attack_groups():
            live, count = counts(self.groups[name])
            rates[f"apcer {name}"] = live / count if count else float("nan")
            accepted, total = accepted + live, total + count
        rates["apcer all"] = accepted / total if total else float("nan")
        live_group = self.groups.get("live")
        if live_group is not None:
            live, count = counts(live_group)
            rates["bpcer"] = 1.0 - live / count if count else float("nan")
        worst = max((rates[f"apcer {n}"] for n in self.attack_groups()), default=float("nan"))
        rates["acer"] = (worst + rates.get("bpcer", float("nan"))) / 2
        return rates

    def to_json(self) -> dict[str, Any]:
        def stats(values: list[float]) -> dict[str, float | int]:
            if not values:
                return {"n": 0}
            p10, p50, p90 = np.percentile(values, [10, 50, 90])
            return {"n": len(values), "p10": p10, "p50": p50, "p90": p90}

        rows = self.sweep()
        data = {
            "threshold": self.threshold,
            "min_live_frames": self.min_live_frames,
            "window_frames": LIVE_WINDOW_FRAMES,
            "per_frame": self.frame_rates(),
            "per_sequence": self.window_rates(),
            "per_track": self.track_rates(),
            "threshold_sweep": rows,
            # null (not NaN) where no threshold meets both per-frame targets
            "threshold_derived": dict(
                zip(("threshold", "low", "high"), derive_threshold(self.tracks), strict=True),
                lowest_acer=lowest_acer(rows),
            ),
            "leave_one_subject_out": self.held_out(),
            "groups": {
                name: {
                    "description": ATTACK_TYPES.get(name[6:], "print")
                    if name != "live"
                    else "live",
                    "frames": g.frames,
                    "judged_live": g.judged_live,
                    "no_face": g.no_face,
                    "windows": g.windows,
                    "windows_live": g.windows_live,
                    "tracks": g.tracks,
                    "tracks_live": g.tracks_live,
                    "geometry": g.geometry,
                    "geometry_turn": stats(g.turns),
                    "geometry_residual_windows": stats(g.residuals),
                    "geometry_residual_pairs": stats(g.pair_residuals),
                }
                for name, g in sorted(self.groups.items())
            },
            "ms_per_face": self.ms_per_face,
            "backend": self.backend,
            "models": self.models,
            "sequences": [
                {
                    "kind": t.sequence.kind,
                    "key": t.sequence.key,
                    "scores": [None if np.isnan(v) else round(float(v), 5) for v in t.scores],
                }
                for t in self.tracks
            ],
        }
        return json_safe(data)  # strict JSON: no NaN


def score_all(engine: Engine, sequences: list[Sequence]) -> tuple[list[TrackScores], float]:
    """Every sequence's presented-face scores, and the liveness cost in ms per face."""
    if not engine.has_liveness:
        raise UserError(
            f"{engine.models_dir} has no liveness models: build them with "
            "`edge-convert build --only liveness --liveness DIR`"
        )
    timing: list[float] = []
    tracks = []
    frames = sum(len(s.frames) for s in sequences)
    with Progress(total=frames, desc="liveness", unit="frame", disable=None) as bar:
        for sequence in sequences:
            tracks.append(score_sequence(engine, sequence, timing))
            bar.update(len(sequence.frames))
    return tracks, 1000.0 * float(np.median(timing)) if timing else float("nan")


def evaluate_liveness(
    engine: Engine,
    data: Path,
    threshold: float,
    min_live_frames: int,
    subjects: set[str] | None = None,
) -> LivenessResult:
    tracks, ms_per_face = score_all(engine, read_sequences(data, subjects))
    return LivenessResult(
        threshold=threshold,
        min_live_frames=min_live_frames,
        groups=summarise(tracks, threshold, min_live_frames),
        tracks=tracks,
        ms_per_face=ms_per_face,
        backend=engine.backend.kind,
        models=str(engine.models_dir),
    )


THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)
FRAME_APCER_TARGET, FRAME_BPCER_TARGET = 0.01, 0.05


def _frame_errors(tracks: list[TrackScores], threshold: float) -> tuple[float, float]:
    """(worst per-attack-type APCER, BPCER) per frame at `threshold`."""
    accepted: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for track in tracks:
        scores = track.scores[np.isfinite(track.scores)]
        counts = accepted[track.sequence.group]
        counts[0] += int(np.sum(scores >= threshold))
        counts[1] += len(scores)
    live = accepted.get("live", [0, 0])
    worst = max(
        (a / n for g, (a, n) in accepted.items() if g != "live" and n), default=float("nan")
    )
    return worst, (1.0 - live[0] / live[1]) if live[1] else float("nan")


def sweep(tracks: list[TrackScores]) -> list[dict[str, float]]:
    rows = []
    for threshold in THRESHOLD_GRID:
        worst, bpcer = _frame_errors(tracks, float(threshold))
        rows.append({"threshold": float(threshold), "apcer_worst": worst, "bpcer": bpcer})
    return rows


def lowest_acer(rows: list[dict[str, float]]) -> dict[str, float] | None:
    """The sweep row with the lowest per-frame ACER, (worst APCER + BPCER) / 2, and that
    ACER: the best trade-off on the grid, reported when no threshold meets both targets.
    None when no row has both rates."""
    scored = [
        {**row, "acer": (row["apcer_worst"] + row["bpcer"]) / 2}
        for row in rows
        if math.isfinite(row["apcer_worst"]) and math.isfinite(row["bpcer"])
    ]
    return min(scored, key=lambda row: row["acer"], default=None)


def derive_threshold(tracks: list[TrackScores]) -> tuple[float, float, float]:
    """(threshold, low, high): the middle, on the grid, of the thresholds meeting both
    per-frame targets; NaN when none does. How the manifest's threshold was derived."""
    feasible = [
        row["threshold"]
        for row in sweep(tracks)
        if row["apcer_worst"] <= FRAME_APCER_TARGET and row["bpcer"] <= FRAME_BPCER_TARGET
    ]
    if not feasible:
        return float("nan"), float("nan"), float("nan")
    low, high = min(feasible), max(feasible)
    step = float(THRESHOLD_GRID[1] - THRESHOLD_GRID[0])
    return round(round((low + high) / 2 / step) * step, 2), low, high


HELD_OUT_COUNTS = (
    "attack_frames",
    "attack_frames_live",
    "live_frames",
    "live_frames_refused",
    "attack_windows",
    "attack_windows_live",
    "live_windows",
    "live_windows_refused",
)


def leave_one_subject_out(tracks: list[TrackScores], min_live_frames: int) -> dict[str, Any]:
    """Each subject scored with the threshold derived on the others: the spread of the
    derivation, and pooled held-out error counts per frame and per window. A subject whose
    others give no threshold meeting both targets (threshold NaN) is left out of the pooled
    counts: there is no threshold to score it with."""
    subjects = sorted({t.sequence.subject for t in tracks})
    folds = []
    pooled = dict.fromkeys(HELD_OUT_COUNTS, 0)
    for subject in subjects:
        train = [t for t in tracks if t.sequence.subject != subject]
        test = [t for t in tracks if t.sequence.subject == subject]
        threshold, low, high = derive_threshold(train)
        fold = {"subject": subject, "threshold": threshold, "feasible": [low, high]}
        folds.append(fold)
        if math.isnan(threshold):
            continue
        for track in test:
            scores = track.scores[np.isfinite(track.scores)]
            live = scores >= threshold
            verdicts = [
                window_is_live(scores[w], threshold, min_live_frames) for w in windows(len(scores))
            ]
            if track.sequence.kind == "live":
                pooled["live_frames"] += len(scores)
                pooled["live_frames_refused"] += int(np.sum(~live))
                pooled["live_windows"] += len(verdicts)
                pooled["live_windows_refused"] += verdicts.count(False)
            else:
                pooled["attack_frames"] += len(scores)
                pooled["attack_frames_live"] += int(np.sum(live))
                pooled["attack_windows"] += len(verdicts)
                pooled["attack_windows_live"] += verdicts.count(True)
    return {"folds": folds, "pooled": pooled}


TARGETS = {  # the project's targets on the shared NUAA subjects
    "per frame APCER (worst attack type) <= 1%": ("per_frame", "apcer_worst", 0.01),
    "per frame BPCER <= 5%": ("per_frame", "bpcer", 0.05),
    "per sequence APCER (every attack type) = 0": ("per_sequence", "apcer_worst", 0.0),
    "per sequence BPCER <= 2%": ("per_sequence", "bpcer", 0.02),
}


def _percent(value: float) -> str:
    return "   n/a" if math.isnan(value) else f"{100 * value:5.1f}%"


def _derivation(result: LivenessResult) -> str:
    """The derived-threshold line; when no threshold meets both per-frame targets, that,
    and the lowest per-frame ACER on the grid."""
    derived, low, high = derive_threshold(result.tracks)
    if not math.isnan(derived):
        return (
            f"threshold derived on this data: {derived:.2f} (the middle of {low:.2f}-{high:.2f}, "
            "the thresholds meeting both per-frame targets)"
        )
    text = (
        f"threshold derived on this data: none (no threshold from {THRESHOLD_GRID[0]:.2f} to "
        f"{THRESHOLD_GRID[-1]:.2f} meets both per-frame targets, APCER <= "
        f"{100 * FRAME_APCER_TARGET:.0f}% and BPCER <= {100 * FRAME_BPCER_TARGET:.0f}%)"
    )
    best = lowest_acer(result.sweep())
    if best is not None:
        text += (
            f"; best trade-off {best['threshold']:.2f}, the lowest per-frame ACER "
            f"({_percent(best['acer']).strip()}): worst APCER "
            f"{_percent(best['apcer_worst']).strip()}, BPCER {_percent(best['bpcer']).strip()}"
        )
    return text


def _held_out_line(held: dict[str, Any]) -> str:
    p = held["pooled"]
    spread = [f["threshold"] for f in held["folds"] if not math.isnan(f["threshold"])]
    none = [f["subject"] for f in held["folds"] if math.isnan(f["threshold"])]
    if not spread:
        return (
            "leave one subject out: for no subject do the others give a threshold meeting "
            "both per-frame targets"
        )
    left_out = (
        f"; left out: {', '.join(none)} (the others give no threshold meeting both targets)"
        if none
        else ""
    )
    return (
        f"leave one subject out (threshold derived on the others, "
        f"{min(spread):.2f}-{max(spread):.2f}): per frame APCER "
        f"{p['attack_frames_live']}/{p['attack_frames']}, BPCER "
        f"{p['live_frames_refused']}/{p['live_frames']}; per window "
        f"{p['attack_windows_live']}/{p['attack_windows']} attacks accepted, "
        f"{p['live_windows_refused']}/{p['live_windows']} live refused{left_out}"
    )


def format_report(result: LivenessResult) -> str:
    frame, window, track = result.frame_rates(), result.window_rates(), result.track_rates()
    lines = [
        f"threshold {result.threshold:.3f}; a window of up to {LIVE_WINDOW_FRAMES} frames is live "
        f"with >= {result.min_live_frames} live frames",
        "",
        f"{'':34s} {'frames':>7s} {'no face':>7s} {'per frame':>9s} {'windows':>7s} "
        f"{'per window':>10s} {'tracks':>6s} {'per track':>9s}",
    ]
    for name in [*result.attack_groups(), "live"]:
        g = result.groups.get(name)
        if g is None:
            continue
        label = "live (BPCER)" if name == "live" else f"{name} {ATTACK_TYPES.get(name[6:], '')}"
        key = "bpcer" if name == "live" else f"apcer {name}"
        lines.append(
            f"{label + (' (APCER)' if name != 'live' else ''):34s} {g.frames:7d} {g.no_face:7d} "
            f"{_percent(frame[key]):>9s} {g.windows:7d} {_percent(window[key]):>10s} "
            f"{g.tracks:6d} {_percent(track[key]):>9s}"
        )
    lines += [
        f"{'all attacks (APCER)':34s} {'':7s} {'':7s} {_percent(frame['apcer all']):>9s} "
        f"{'':7s} {_percent(window['apcer all']):>10s} {'':6s} {_percent(track['apcer all']):>9s}",
        f"{'ACER':34s} {'':7s} {'':7s} {_percent(frame['acer']):>9s} {'':7s} "
        f"{_percent(window['acer']):>10s} {'':6s} {_percent(track['acer']):>9s}",
        "",
        "geometry (parallax) per window: abstain / flat / depth; median nose residual of",
        "the turned pairs (eye distances)",
    ]
    for name in [*result.attack_groups(), "live"]:
        g = result.groups.get(name)
        if g is None:
            continue
        res = f"{np.median(g.residuals):.3f}" if g.residuals else "  n/a"
        lines.append(
            f"  {name:10s} {g.geometry['abstain']:4d} / {g.geometry['flat']:3d} / "
            f"{g.geometry['depth']:3d}   residual {res}   turned pairs {len(g.pair_residuals)}"
        )
    lines += ["", "targets:"]
    figures = {"per_frame": frame, "per_sequence": window}
    for text, (scope, key, limit) in TARGETS.items():
        rates = figures[scope]
        if key == "apcer_worst":
            value = max(rates[f"apcer {n}"] for n in result.attack_groups())
        else:
            value = rates[key]
        met = "met" if value <= limit else "NOT met"
        lines.append(f"  {text:44s} {_percent(value)}  {met}")
    lines += ["", _derivation(result)]
    held = result.held_out()
    if len(held["folds"]) > 1:
        lines.append(_held_out_line(held))
    lines.append(
        f"\nliveness cost {result.ms_per_face:.2f} ms per face (median; {result.backend})\n"
    )
    return "\n".join(lines)
