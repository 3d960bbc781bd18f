"""A door that learns its site ([recognition] learn_site, edge_app/site_memory.py): how many
strangers get in, and how many residents' visits still open the door, when site centring also
counts the visits the door judged strangers (docs/ACCURACY.md, "A door that learns its site").

NUAA (one webcam, 8 people), replayed as benchmarks.site_centring replays it (the door's track
pooling, policy, cohort, lookalike guard and the shipped SITE_SHARE; no liveness, no tracker),
for every household of 1, 2 and 3 of the 8 people. A memory is a real SiteMemory fed, visit
by visit, the pooled embedding the door learns from a track (edge_app.fusion.TrackPool over
the clip's frames). The visits it learns are other people's live sequences, drawn at random
(seeded; --draws draws per case, one by default, counts summed over them). As at the door,
a visit is learned only when the household's matcher, counting what was learned so far,
scores it at least LEARN_DOUBT under the threshold (edge_app.site_memory.worth_learning);
visits are offered in random order until K are learned, and the others are counted as
doubted:

  1. new stranger: K visits (KS; None is every one there is) of people neither enrolled nor
     the stranger being tested. The residents' visits are played with K visits of anyone not
     enrolled. K = 0 is an empty memory: the door without learn_site, which the "none" rows
     (site_centring.households, no memory) confirm.
  2. repeat stranger: K (in REPEAT_KS) visits as in 1, then the tested stranger's own other
     live sequences offered too (someone who came before), for the strangers who have any,
     against the same K visits alone.
  3. contaminated: a household of one whose memory holds K = CONTAMINATED_K strangers' visits
     plus 1 and 3 of the resident's own other live sequences (a missed visit learned; the
     sequences are repeated when the resident has fewer), against none of them. The
     resident's visits are forced in past the guard, which would refuse them here: this is a
     resident missed by far.
  4. poisoning: a household of one whose memory holds only POISON_ADDS visits of one
     stranger (their other live sequences, repeated: someone lingering to shape what the door
     learns), forced in past the guard, then that stranger's visits, and the resident's,
     against no memory.
  5. the guard: at each household of one, with K (in GUARD_KS) strangers' visits learned,
     how far under the threshold each pooled visit scores: the resident's own (every live
     sequence and visit of theirs: the door could only learn those it misses) and every
     other person's. LEARN_DOUBT was chosen from these.

    .venv/bin/python -m benchmarks.learned_site --nuaa-cache /tmp/edge-door-nuaa-site.npz

writes benchmarks/learned_site.json (about 7 minutes on 2 cores; the NUAA frames are embedded
into --nuaa-cache first when it is absent, about a minute). Its matrix products are small:
OPENBLAS_NUM_THREADS=1 (as `make learned-site` sets) keeps a busy machine from slowing it
many times over.
"""

from __future__ import annotations

import itertools
import math
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from benchmarks import outputs
from benchmarks.site_centring import (
    Clip,
    Replay,
    clips_by_subject,
    households,
    nuaa_parser,
    open_replay,
    tally,
)
from edge_app.fusion import TrackPool
from edge_app.matching import SITE_SHARE, Matcher
from edge_app.paths import REPO_ROOT
from edge_app.reports import check_output, write_report
from edge_app.site_memory import LEARN_DOUBT, SiteMemory, doubt

OUT = REPO_ROOT / "benchmarks" / "learned_site.json"
KS: tuple[int | None, ...] = (0, 1, 2, 3, 5, 10, None)  # visits learned; None: all there are
SIZES = (1, 2, 3)  # people per household
REPEAT_KS: tuple[int | None, ...] = (0, 1, 3, None)
DRAWS = 1  # random draws of the learned visits per case (--draws)
CONTAMINATED_K = 20
CONTAMINATION = (0, 1, 3)  # the resident's own visits learned beside CONTAMINATED_K strangers'
POISON_ADDS = 20
GUARD_KS = (0, 3)  # strangers' visits learned when the guard's scores are read
T = TypeVar("T")


def k_label(k: int | None) -> str:
    return "all" if k is None else str(k)


def draw(rng: np.random.Generator, pool: Sequence[T], k: int | None) -> list[T]:
    """`k` of `pool` at random, none twice, in random order (all of them when k is None or
    more than there are)."""
    n = len(pool) if k is None else min(k, len(pool))
    return [pool[i] for i in rng.permutation(len(pool))[:n]]


def fill(rng: np.random.Generator, pool: Sequence[T], n: int) -> list[T]:
    """`n` of `pool`: each once per round (rounds in random order) until there are n; none
    from an empty pool."""
    out: list[T] = []
    while pool and len(out) < n:
        out += draw(rng, pool, n - len(out))
    return out


def learned(visits: Iterable[np.ndarray]) -> SiteMemory:
    """The site memory after learning `visits` (pooled embeddings) in this order."""
    memory = SiteMemory()
    for embedding in visits:
        memory.add(embedding)
    return memory


def pooled_visit(replay: Replay, clip: Clip) -> np.ndarray | None:
    """What the door learns from a visit: its track's pooled embedding over the clip's frames
    (as the daemon passes it to the site memory); None when no frame has a face."""
    pool = TrackPool()
    for path in clip:
        index = replay.row.get(str(path))
        if index is not None:
            embedding = replay.frames["embedding"][index][None]
            pool.add([0], embedding, replay.frames["weight"][index][None])
    return pool.pooled(0)


def counts(*keys: str) -> dict[str, int]:
    return dict.fromkeys(keys, 0)


@dataclass
class Study:
    """The replay, eval door's clips, and the visits a memory can learn."""

    replay: Replay
    work: Any
    people: list[str]
    seed: int
    draws: int

    def __post_init__(self) -> None:
        self.visits, self.strangers = clips_by_subject(self.work)
        every = [c for clips in (*self.strangers.values(), *self.visits.values()) for c in clips]
        found = {clip: pooled_visit(self.replay, clip) for clip in every}
        # Each clip's pooled face, those with one: what the door learns, and what it scores.
        self.pooled = {clip: vector for clip, vector in found.items() if vector is not None}

    def rng(self, *case: object) -> np.random.Generator:
        """The draws of one case (part, household size, K): the same whichever others run."""
        label = "/".join(map(str, case)).encode()
        return np.random.default_rng([self.seed, zlib.crc32(label)])

    def clips(self, people: Iterable[str]) -> list[Clip]:
        """Every live sequence of `people` with a face: the visits a memory may learn."""
        return [clip for p in people for clip in self.strangers[p] if clip in self.pooled]

    def memory(self, clips: Iterable[Clip]) -> SiteMemory:
        """A memory fed `clips` past the door's guard (the what-if cases)."""
        return learned(self.pooled[clip] for clip in clips)

    def learn(
        self,
        household: Sequence[str],
        offered: Iterable[Clip],
        k: int | None,
        memory: SiteMemory | None = None,
    ) -> tuple[SiteMemory, int]:
        """`memory` (copied; empty when None) after the door is offered `offered` in order
        until it has learned `k` more (None: all it will take), each through its guard with
        the matcher of `household` counting what it learned so far; and how many it doubted."""
        memory = SiteMemory() if memory is None else memory.copy()
        target = math.inf if k is None else memory.learned + k
        doubted = 0
        for clip in offered:
            if memory.learned >= target:
                break
            vector = self.pooled[clip]
            if doubt(self.matcher(household, memory), memory, vector) is None:
                memory.add(vector)
            else:
                doubted += 1
        return memory, doubted

    def under_threshold(self, matcher: Matcher, clips: Iterable[Clip]) -> list[float]:
        """Each clip's pooled face's best score minus the threshold (clips with no face
        skipped)."""
        out = []
        for clip in clips:
            vector = self.pooled.get(clip)
            if vector is not None:
                score = float(matcher.identify(vector[None]).scores[0])
                out.append(score - matcher.settings.threshold)
        return out

    def matcher(self, household: Sequence[str], memory: SiteMemory | None) -> Matcher:
        enrolment = {p: self.work.enrolment[p] for p in household}
        return self.replay.matcher(enrolment, SITE_SHARE, memory)


def new_strangers(study: Study, size: int, k: int | None) -> dict[str, int]:
    """Every household of `size`: its residents' visits with K visits of anyone not enrolled
    learned, and each stranger's visits with K visits of the others learned."""
    replay, rng = study.replay, study.rng("new", size, k_label(k))
    out = counts("visits", "unlocked", "strangers", "let_in", "memories", "learned", "doubted")

    def memory_of(pool: list[Clip]) -> Matcher:
        memory, doubted = study.learn(household, draw(rng, pool, None), k)
        out["memories"] += 1
        out["learned"] += memory.learned
        out["doubted"] += doubted
        return study.matcher(household, memory)

    for household in itertools.combinations(study.people, size):
        others = [p for p in study.people if p not in household]
        for _ in range(study.draws):
            matcher = memory_of(study.clips(others))
            for person in household:
                tally(out, "visits", "unlocked", replay, matcher, study.visits[person], person)
            for stranger in others:
                matcher = memory_of(study.clips(p for p in others if p != stranger))
                tally(out, "strangers", "let_in", replay, matcher, study.strangers[stranger], None)
    return out


def repeat_strangers(study: Study, size: int, k: int | None) -> dict[str, int]:
    """Every household of `size`, each visit of a stranger who has other live sequences: with
    K visits of the other strangers learned, and with those plus the stranger's own others."""
    replay, rng = study.replay, study.rng("repeat", size, k_label(k))
    with_own, without = counts("strangers", "let_in"), counts("strangers", "let_in")
    own_offered = own_learned = 0
    for household in itertools.combinations(study.people, size):
        others = [p for p in study.people if p not in household]
        for stranger in others:
            pool = study.clips(p for p in others if p != stranger)
            own = study.clips([stranger])
            if len(own) < 2:
                continue
            for _ in range(study.draws):
                base, _ = study.learn(household, draw(rng, pool, None), k)
                plain = study.matcher(household, base)
                for clip in own:
                    before = [c for c in own if c != clip]
                    memory, _ = study.learn(household, before, None, base)
                    came = study.matcher(household, memory)
                    tally(with_own, "strangers", "let_in", replay, came, [clip], None)
                    tally(without, "strangers", "let_in", replay, plain, [clip], None)
                    own_offered += len(before)
                    own_learned += memory.learned - base.learned
    return with_own | {
        "let_in_without": without["let_in"],
        "own_offered": own_offered,
        "own_learned": own_learned,
    }


def contaminated(study: Study) -> dict[str, dict[str, int]]:
    """Households of one whose memory holds CONTAMINATED_K strangers' visits and n of the
    resident's own other live sequences: the resident's visits (those with another sequence
    of theirs to learn) and every other person's visits as strangers."""
    replay, rng = study.replay, study.rng("contaminated", CONTAMINATED_K)
    out = {str(n): counts("visits", "unlocked", "strangers", "let_in") for n in CONTAMINATION}
    for resident in study.people:
        others = [p for p in study.people if p != resident]
        for _ in range(study.draws):
            for clip in study.visits[resident]:
                own = [c for c in study.clips([resident]) if not set(c) & set(clip)]
                if not own:
                    continue
                base = draw(rng, study.clips(others), CONTAMINATED_K)
                for n in CONTAMINATION:
                    memory = study.memory([*base, *fill(rng, own, n)])
                    matcher = study.matcher([resident], memory)
                    row = out[str(n)]
                    tally(row, "visits", "unlocked", replay, matcher, [clip], resident)
            for stranger in others:
                pool = study.clips(p for p in others if p != stranger)
                base = draw(rng, pool, CONTAMINATED_K)
                own = study.clips([resident])
                for n in CONTAMINATION:
                    matcher = study.matcher([resident], study.memory([*base, *fill(rng, own, n)]))
                    clips = study.strangers[stranger]
                    tally(out[str(n)], "strangers", "let_in", replay, matcher, clips, resident)
    return out


def poisoning(study: Study) -> dict[str, dict[str, int]]:
    """Households of one, each stranger who has other live sequences, offered POISON_ADDS
    times (someone lingering to shape what the door learns): the memory holds them all
    ("poisoned": forced in past the door's doubt), only those the door learns through it
    ("guarded": the same face again is doubted), or nothing ("no_memory"). Counted: that
    stranger's visits, everyone else's ("others": strangers who share nothing with the
    poisoner), and the resident's."""
    replay, rng = study.replay, study.rng("poisoning", POISON_ADDS)
    keys = ("visits", "unlocked", "strangers", "let_in", "others", "others_let_in", "learned")
    out = {name: counts(*keys) for name in ("no_memory", "poisoned", "guarded")}
    for resident in study.people:
        plain = study.matcher([resident], None)
        for stranger in (p for p in study.people if p != resident):
            own = study.clips([stranger])
            if len(own) < 2:
                continue
            others = [
                c for p in study.people if p not in (resident, stranger) for c in study.strangers[p]
            ]
            for _ in range(study.draws):
                for clip in own:
                    offered = fill(rng, [c for c in own if c != clip], POISON_ADDS)
                    guarded, _ = study.learn([resident], offered, None)
                    for name, memory in (("poisoned", study.memory(offered)), ("guarded", guarded)):
                        matcher = study.matcher([resident], memory)
                        tally(out[name], "strangers", "let_in", replay, matcher, [clip], resident)
                    tally(out["no_memory"], "strangers", "let_in", replay, plain, [clip], resident)
                offered = fill(rng, own, POISON_ADDS)
                guarded, _ = study.learn([resident], offered, None)
                memories: dict[str, SiteMemory | None] = {
                    "no_memory": None,
                    "poisoned": study.memory(offered),
                    "guarded": guarded,
                }
                for name, kept in memories.items():
                    matcher = plain if kept is None else study.matcher([resident], kept)
                    row = out[name]
                    row["learned"] += 0 if kept is None else kept.learned
                    tally(
                        row, "visits", "unlocked", replay, matcher, study.visits[resident], resident
                    )
                    tally(row, "others", "others_let_in", replay, matcher, others, resident)
    return out


def guard_scores(study: Study) -> dict[str, dict[str, Any]]:
    """Households of one, with K (GUARD_KS) strangers' visits learned through the guard: each
    pooled visit's best score minus the threshold, the resident's own live sequences and
    visits, and every other person's live sequences; and what LEARN_DOUBT does with them."""
    out: dict[str, dict[str, Any]] = {}
    for k in GUARD_KS:
        rng = study.rng("guard", k)
        own: list[float] = []
        theirs: list[float] = []
        for resident in study.people:
            others = [p for p in study.people if p != resident]
            for _ in range(study.draws):
                memory, _ = study.learn([resident], draw(rng, study.clips(others), None), k)
                matcher = study.matcher([resident], memory)
                mine = [*study.strangers[resident], *study.visits[resident]]
                own += study.under_threshold(matcher, mine)
                theirs += study.under_threshold(matcher, study.clips(others))
        residents, stranger = np.asarray(own), np.asarray(theirs)
        missed = residents[residents < 0]
        out[str(k)] = {
            "resident_visits": len(residents),
            "resident_missed": len(missed),
            "resident_missed_lowest": round(float(missed.min()), 4) if len(missed) else None,
            "resident_missed_learned": int(np.sum(missed < -LEARN_DOUBT)),
            "resident_lowest": round(float(residents.min()), 4),
            "stranger_visits": len(stranger),
            "stranger_over_threshold": int(np.sum(stranger >= 0)),
            "stranger_doubted": int(np.sum((stranger < 0) & (stranger >= -LEARN_DOUBT))),
            "stranger_p99": round(float(np.percentile(stranger, 99)), 4),
            "stranger_highest": round(float(stranger.max()), 4),
        }
    return out


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = nuaa_parser(__doc__.split("\n\n")[0], OUT)
    parser.add_argument("--seed", type=int, default=0, help="of the learned visits' draws")
    parser.add_argument("--draws", type=int, default=DRAWS, help="draws of the learned visits")
    args = parser.parse_args(argv)
    check_output(args.out, "--out")  # before the minutes of work, not with a traceback after
    started = time.perf_counter()
    _, replay, work = open_replay(args)
    people = sorted(work.enrolment)
    study = Study(replay, work, people, args.seed, args.draws)
    new: dict[str, dict[str, dict[str, int]]] = {}
    repeat: dict[str, dict[str, dict[str, int]]] = {}
    cases = list(itertools.product(SIZES, KS))
    for size, k in tqdm(cases, desc="households x K", unit="case", disable=None):
        if str(size) not in new:  # the door without a memory, as site_centring replays it
            new[str(size)] = {"none": households(replay, work, people, (size,), SITE_SHARE)}
        new[str(size)][k_label(k)] = new_strangers(study, size, k)
        if k in REPEAT_KS:
            repeat.setdefault(str(size), {})[k_label(k)] = repeat_strangers(study, size, k)
    report = {
        "site_share": SITE_SHARE,
        "seed": args.seed,
        "draws": args.draws,
        "new_stranger": new,
        "repeat_stranger": repeat,
        "contaminated": {"k": CONTAMINATED_K, "own_visits": contaminated(study)},
        "poisoning": {"adds": POISON_ADDS, **poisoning(study)},
        "guard": {"learn_doubt": LEARN_DOUBT, "learned": guard_scores(study)},
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_report(args.out, report, "--out")
    summarise(report)
    return 0


def summarise(report: dict[str, Any]) -> None:
    """The report's figures, one line each."""
    print(f"site share {report['site_share']}, {report['draws']} draws, seed {report['seed']}")
    for size, rows in report["new_stranger"].items():
        for k, row in rows.items():
            learned_mean = row["learned"] / row["memories"] if row.get("memories") else 0.0
            print(
                f"new stranger  household {size} K={k:>4}: visits {row['unlocked']}/"
                f"{row['visits']}, strangers let in {row['let_in']}/{row['strangers']}"
                f" (learned {learned_mean:.1f} on average, doubted {row.get('doubted', 0)})"
            )
    for size, rows in report["repeat_stranger"].items():
        for k, row in rows.items():
            print(
                f"repeat stranger household {size} K={k:>4}: let in {row['let_in']}/"
                f"{row['strangers']} (without their own visits {row['let_in_without']}; "
                f"{row['own_learned']} of their {row['own_offered']} offered learned)"
            )
    for n, row in report["contaminated"]["own_visits"].items():
        print(
            f"contaminated K={report['contaminated']['k']} + {n} own: visits {row['unlocked']}/"
            f"{row['visits']}, strangers let in {row['let_in']}/{row['strangers']}"
        )
    for name in ("no_memory", "poisoned", "guarded"):
        row = report["poisoning"][name]
        print(
            f"poisoning {name}: the stranger let in {row['let_in']}/{row['strangers']}, "
            f"other strangers {row['others_let_in']}/{row['others']}, "
            f"resident's visits {row['unlocked']}/{row['visits']} (learned {row['learned']})"
        )
    for k, row in report["guard"]["learned"].items():
        print(
            f"guard K={k}: resident's visits under the threshold {row['resident_missed']}/"
            f"{row['resident_visits']} (lowest {row['resident_missed_lowest']}, "
            f"{row['resident_missed_learned']} far enough under to be learned); strangers "
            f"over it {row['stranger_over_threshold']}, doubted {row['stranger_doubted']}, of "
            f"{row['stranger_visits']} (99th percentile {row['stranger_p99']})"
        )
    print(f"{report['seconds']} s")


if __name__ == "__main__":
    raise SystemExit(main())
