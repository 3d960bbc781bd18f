"""Site centring (edge_app.matching.site_direction): how much of the site direction the door
removes, chosen on real one-camera video and checked on LFW (docs/ACCURACY.md, "Site
centring").

NUAA (one webcam, 8 people): every household of k = 2..7 of the 8 people, each enrolled from
the 5 frames `edge-app eval door` enrols them from (edge_app.evaluate_door.plan; each frame
with its mirror image, the quality gates not applied). Visits are their other live sequences,
as in eval door; strangers are every live sequence of the people not enrolled. Each clip is
replayed through the door's own track pooling (edge_app.fusion) and policy (edge_app.policy,
default [policy]) with the shipped rule, the cohort and the lookalike guard, once per share
in SHARES. Frames are embedded once by the shipped engine (cascade auto, as the door runs on
a CPU) into --nuaa-cache. The share is chosen by a person split: each half of the people
(two partitions) picks the largest share that keeps at least 99% of its households' visits,
and the other half checks it.

Known visitors: a household of one resident and g = 0..3 of the other people enrolled without
access (edge-app enroll --no-access), for every resident and choice of visitors: the
resident's visits, the visitors' own visits (any unlock as the resident counts against it)
and every other person's live sequences as strangers, at share 0 and the shipped share.

LFW: the shipped rule in converter.recognition's door simulation on DevTest people
(benchmarks.cohort.door_check, SEEDS x 40 galleries of 20 people), with and without site
centring, and how long a site direction LFW galleries produce.

    .venv/bin/python -m benchmarks.site_centring --cache /tmp/edge-door-lfw-raw.npz

writes benchmarks/site_centring.json (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks import outputs
from benchmarks.cohort import SEEDS, Data, door_check, shipped_choice
from edge_app.cohort import CohortNormaliser
from edge_app.engine import Engine
from edge_app.evaluate_door import ENROL_FRAMES, plan
from edge_app.evaluate_liveness import Sequence, presented_face, read_sequences
from edge_app.fusion import TrackPool, face_weights
from edge_app.gallery import GalleryMatrix
from edge_app.images import read_image
from edge_app.matching import (
    CENTROID_KEY,
    SITE_SHARE,
    Matcher,
    MatchSettings,
    guard_lookalikes,
    site_direction,
)
from edge_app.paths import REPO_MODELS, REPO_ROOT, SHARED_DATA
from edge_app.policy import Policy, Vote
from edge_app.reports import check_output, write_report
from edge_app.site_memory import SiteMemory

OUT = REPO_ROOT / "benchmarks" / "site_centring.json"
SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)
HOUSEHOLDS = range(2, 8)
GUESTS = (0, 1, 2, 3)
Clip = tuple[Path, ...]  # known visitors enrolled beside a household of one
KEEP_VISITS = 0.99  # the person split's rule: the largest share keeping this share of visits
LFW_GALLERIES = (2, 5, 20, 40)  # people per gallery for the site-direction lengths on LFW


def embed_nuaa(
    engine: Engine, data: Path, sequences: list[Sequence], cache: Path
) -> dict[str, np.ndarray]:
    """Every live frame's embedding, mirror embedding and pooling weight, keyed by path
    (`sequences`: read_sequences(data))."""
    live = [s for s in sequences if s.kind == "live"]
    if cache.exists():
        with np.load(cache) as stored:
            cached = {key: stored[key] for key in stored.files}
        known = set(cached["path"].tolist())
        if not any(str(path) in known for sequence in live for path in sequence.frames):
            raise SystemExit(
                f"{cache} holds no frame of {data}: it was made from other data or another "
                "path to it (delete it to embed the frames again, about a minute)"
            )
        return cached
    rows: dict[str, list[Any]] = defaultdict(list)
    for sequence in tqdm(live, desc="NUAA live sequences", unit="sequence", disable=None):
        for path in sequence.frames:
            image = read_image(path)
            faces = engine.detect(image)
            chosen = presented_face(faces)
            if chosen is None:
                continue
            face = faces[chosen : chosen + 1]
            rows["path"].append(str(path))
            rows["embedding"].append(engine.embed(image, face)[0])
            rows["mirror"].append(engine.embed(image, face, mirror=True)[0])
            rows["weight"].append(face_weights(face)[0])
    arrays = {key: np.asarray(value) for key, value in rows.items()}
    partial = cache.with_suffix(".partial.npz")
    np.savez(partial, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    partial.replace(cache)
    return arrays


class Replay:
    """NUAA clips through the door's pooling and policy, from the cached embeddings."""

    def __init__(self, frames: dict[str, np.ndarray], recognition: dict[str, Any], cohort: Any):
        self.row = {str(p): i for i, p in enumerate(frames["path"])}
        self.frames = frames
        self.settings = MatchSettings.from_recognition(recognition)
        self.cohort = cohort

    def matcher(
        self, enrolment: dict[str, list[Path]], share: float, memory: SiteMemory | None = None
    ) -> Matcher:
        """The door's matcher for `enrolment` at `share`, counting `memory` (learn_site)."""
        rows: list[np.ndarray] = []
        owner: list[int] = []
        for slot, name in enumerate(enrolment):
            # The frames eval door offers first; it enrols the first ENROL_FRAMES that pass.
            for path in enrolment[name][:ENROL_FRAMES]:
                index = self.row.get(str(path))
                if index is not None:
                    rows += [self.frames["embedding"][index], self.frames["mirror"][index]]
                    owner += [slot, slot]
        matrix = GalleryMatrix(
            np.asarray(rows, np.float32), np.asarray(owner, np.int32), tuple(enrolment)
        )
        settings = replace(self.settings, site_share=share)
        matcher, _ = guard_lookalikes(Matcher(matrix, settings, self.cohort, memory), "raise")
        return matcher

    def play(self, matcher: Matcher, clip: tuple[Path, ...]) -> str | None:
        """Who the door unlocks for on this clip (None: nobody)."""
        pool, policy = TrackPool(), Policy()
        for path in clip:
            index = self.row.get(str(path))
            if index is None:
                continue
            pooled = pool.add(
                [0], self.frames["embedding"][index][None], self.frames["weight"][index][None]
            )
            match = matcher.identify(pooled)
            vote = Vote(match.names[0], float(match.scores[0]), float(match.second[0]))
            for decision in policy.vote(0, vote):
                if decision.kind == "unlock":
                    return decision.name
        return None


def clips_by_subject(work: Any) -> tuple[dict[str, list[Clip]], dict[str, list[Clip]]]:
    """eval door's visit clips and stranger clips (frame paths), by whose they are."""
    visits: dict[str, list[Clip]] = defaultdict(list)
    strangers: dict[str, list[Clip]] = defaultdict(list)
    for clip in work.clips:
        if clip.kind in ("visit", "stranger"):
            (visits if clip.kind == "visit" else strangers)[clip.subject].append(clip.frames)
    return visits, strangers


def tally(
    out: dict[str, int],
    total: str,
    hits: str,
    replay: Replay,
    matcher: Matcher,
    clips: list[Clip],
    opens_for: str | None,
) -> None:
    """Play `clips`, counting them under `total` and under `hits` those the door unlocks for
    `opens_for` (None: for anyone)."""
    for frames in clips:
        who = replay.play(matcher, frames)
        out[total] += 1
        out[hits] += who is not None and opens_for in (None, who)


def households(
    replay: Replay, work: Any, people: list[str], sizes: range | tuple[int, ...], share: float
) -> dict[str, int]:
    """Every household of a size in `sizes` drawn from `people`: its people's visits, and every
    live sequence of the others in `people` as strangers."""
    visits, strangers = clips_by_subject(work)
    out = {"visits": 0, "unlocked": 0, "strangers": 0, "let_in": 0}
    for size in sizes:
        for household in itertools.combinations(people, size):
            matcher = replay.matcher({p: work.enrolment[p] for p in household}, share)
            for person in household:
                tally(out, "visits", "unlocked", replay, matcher, visits[person], person)
            for person in set(people) - set(household):
                tally(out, "strangers", "let_in", replay, matcher, strangers[person], None)
    return out


def known_visitors(
    replay: Replay, work: Any, people: list[str], guests: int, share: float
) -> dict[str, int]:
    """One resident with `guests` known visitors enrolled beside them (every resident, every
    choice of visitors): who the door unlocks for on the resident's visits, the visitors'
    visits and everyone else's (strangers). Only an unlock as the resident opens the door: a
    visitor recognised as themselves is denied (edge_app.policy, NO_ACCESS)."""
    visits, strangers = clips_by_subject(work)
    out = {"visits": 0, "unlocked": 0, "visitor_visits": 0, "visitors_let_in": 0}
    out |= {"strangers": 0, "let_in": 0}
    for resident in people:
        others = [p for p in people if p != resident]
        for chosen in itertools.combinations(others, guests):
            matcher = replay.matcher({p: work.enrolment[p] for p in (resident, *chosen)}, share)
            tally(out, "visits", "unlocked", replay, matcher, visits[resident], resident)
            for visitor in chosen:
                clips = visits[visitor]
                tally(out, "visitor_visits", "visitors_let_in", replay, matcher, clips, resident)
            for stranger in set(others) - set(chosen):
                tally(out, "strangers", "let_in", replay, matcher, strangers[stranger], resident)
    return out


def person_split(replay: Replay, work: Any, people: list[str]) -> list[dict[str, Any]]:
    """Choose the share on households of one half of the people, check it on the other."""
    halves = [(people[:4], people[4:]), (people[::2], people[1::2])]
    rows = []
    for first, second in halves:
        for choose, check in ((first, second), (second, first)):
            tried = {share: households(replay, work, choose, (2, 3), share) for share in SHARES}
            keeps = [s for s, r in tried.items() if r["unlocked"] >= KEEP_VISITS * r["visits"]]
            pick = max(keeps, default=0.0)
            rows.append(
                {
                    "choose_on": choose,
                    "tried": {str(s): r for s, r in tried.items()},
                    "share": pick,
                    "check_on": check,
                    "checked": households(replay, work, check, (2, 3), pick),
                    "checked_without": households(replay, work, check, (2, 3), 0.0),
                }
            )
    return rows


def lfw(cache: Path, data: Path, recognition: dict[str, Any], cohort: Any) -> dict[str, Any]:
    """The shipped rule on DevTest people with and without site centring, and the length of
    what site centring removes in LFW galleries."""
    embedded = Data(cache, data / "lfw", REPO_MODELS)
    test = embedded.test
    rows, mirrors = embedded.rows(test), embedded.rows(test, mirrored=True)
    rule = {
        "threshold": float(recognition["threshold"]),
        "aggregate": recognition.get("aggregate", "best"),
        "margin": float(recognition.get("margin", 0.0)),
        CENTROID_KEY: bool(recognition.get(CENTROID_KEY, False)),
    }
    checks = {}
    for share in (0.0, SITE_SHARE):
        runs = [
            door_check(rows, mirrors, test, {**rule, "site_share": share}, cohort, seed)
            for seed in range(SEEDS)
        ]
        checks[str(share)] = {
            key: round(float(np.mean([r[key] for r in runs])), 5)
            for key in ("identified", "stranger_accept", "oracle_identified")
        }
    who = np.array([name.split("/")[0] for name in test])
    people = [p for p in np.unique(who) if (who == p).sum() >= 2]
    rng = np.random.default_rng(0)
    lengths = {}
    for size in LFW_GALLERIES:
        found = []
        for _ in range(200):
            chosen = rng.choice(people, size, replace=False)
            picked = [np.flatnonzero(who == p)[:2] for p in chosen]
            index = np.concatenate(picked)
            gallery = np.stack([rows[index], mirrors[index]], axis=1).reshape(-1, rows.shape[1])
            owner = np.repeat(np.arange(size), 4).astype(np.int32)
            matrix = GalleryMatrix(gallery.astype(np.float32), owner, tuple(map(str, chosen)))
            found.append(SITE_SHARE * float(np.linalg.norm(site_direction(matrix))))
        lengths[str(size)] = [round(float(x), 3) for x in np.percentile(found, (50, 90, 100))]
    return {"door_check_devtest": checks, "removed_length_p50_p90_max": lengths}


def nuaa_parser(description: str, out: Path) -> argparse.ArgumentParser:
    """The options of the NUAA replays (this one and benchmarks.learned_site)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="../shared/data")
    parser.add_argument(
        "--nuaa-cache",
        type=Path,
        default=Path("/tmp/edge-door-nuaa-site.npz"),
        help="NUAA embeddings (made here when absent; about a minute)",
    )
    parser.add_argument("--out", type=Path, default=out)
    return parser


def open_replay(args: argparse.Namespace) -> tuple[Engine, Replay, Any]:
    """The shipped engine, the replay of its NUAA embeddings, and eval door's plan."""
    logging.basicConfig(level=logging.WARNING)
    shipped_choice()  # the manifest's cohort is benchmarks/cohort.json's choice
    engine = Engine.open(REPO_MODELS, backend="cpu", cascade="auto")
    cohort: CohortNormaliser | None = engine.cohort
    nuaa = args.data.resolve() / "liveness" / "nuaa"  # the cache holds absolute frame paths
    sequences = read_sequences(nuaa)
    frames = embed_nuaa(engine, nuaa, sequences, args.nuaa_cache)
    replay = Replay(frames, dict(engine.manifest.recognition), cohort)
    return engine, replay, plan(sequences)


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = nuaa_parser(__doc__.split("\n\n")[0], OUT)
    parser.add_argument("--cache", type=Path, required=True, help="benchmarks.centering cache")
    args = parser.parse_args(argv)
    check_output(args.out, "--out")  # before the minutes of work, not with a traceback after
    started = time.perf_counter()
    engine, replay, work = open_replay(args)
    recognition = dict(engine.manifest.recognition)
    cohort = engine.cohort
    people = sorted(work.enrolment)
    sizes = {}
    for share in tqdm(SHARES, desc="shares", unit="share", disable=None):
        sizes[str(share)] = {
            str(size): households(replay, work, people, (size,), share) for size in HOUSEHOLDS
        }
    split = person_split(replay, work, people)
    visitors = {
        str(share): {str(g): known_visitors(replay, work, people, g, share) for g in GUESTS}
        for share in (0.0, SITE_SHARE)
    }
    report = {
        "site_share_shipped": SITE_SHARE,
        "nuaa_households": sizes,
        "nuaa_known_visitors": visitors,
        "nuaa_person_split": split,
        "lfw": lfw(args.cache, args.data, recognition, cohort),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_report(args.out, report, "--out")
    print(json.dumps({k: v for k, v in report.items() if k != "nuaa_person_split"}, indent=1))
    for share, rows in visitors.items():
        for guests, row in rows.items():
            print(f"share {share} one resident + {guests} known visitors: {row}")
    for row in split:
        print(
            row["choose_on"],
            "->",
            row["share"],
            row["check_on"],
            row["checked"],
            "without",
            row["checked_without"],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
