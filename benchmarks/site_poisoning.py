"""One face learned over and over ([recognition] learn_site, edge_app/site_memory.py): what a
stranger who walks past a household of one again and again does to the door, on LFW faces
(people who share no camera, so site centring should find nothing to remove).

Each draw enrols one DevTest person (the resident, from ENROL photos and their mirror images,
as enrolment stores them) and picks another (the lingerer). The lingerer's photos, cycled,
are offered OFFERED times as visits the door judged a stranger's (once a minute, OFFERED
minutes at the door). Three memories:

  - none: learn_site off;
  - forced: every offered visit learned, as if the door had no doubt about repeats (what a
    memory that counts each visit as another person becomes);
  - guarded: the visits the door learns through edge_app.site_memory.doubt, which is the
    shipped rule (a visit within LEARN_DOUBT of the threshold for a resident, or for a visit
    learned before, is left out);
  - distinct: OFFERED photos of OFFERED different people, through the same doubt: the use the
    memory is for, which the doubt must not stop.

Counted for each: the single photos of every other DevTest person (half of them; the other
half give the distinct memory's visits) that the door's matcher lets in as the resident, the
resident's own remaining photos it recognises, and the lingerer's photos it lets in. The
matcher is the door's own (edge_app.daemon.door_matcher: the manifest's threshold, cohort,
centroids, lookalike guard and site centring with the memory).

Embeddings come from the one-person gate benchmark's cache (every DevTrain and DevTest image
that passes enrolment's gates, with its mirror image's embedding):

    .venv/bin/python -m benchmarks.same_person embed --cache /tmp/sp.npz   # about 3 minutes
    .venv/bin/python -m benchmarks.site_poisoning --cache /tmp/sp.npz

writes benchmarks/site_poisoning.json (about 20 seconds on 2 cores).
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks import outputs
from edge_app.config import RecognitionConfig
from edge_app.daemon import door_matcher
from edge_app.engine import Engine
from edge_app.gallery import Gallery, GalleryMatrix, NewSample
from edge_app.lfw import read_pairs
from edge_app.paths import REPO_ROOT, SHARED_DATA
from edge_app.reports import check_output, write_report
from edge_app.site_memory import SiteMemory, doubt

RESULT = REPO_ROOT / "benchmarks" / "site_poisoning.json"
ENROL = 2  # photos a resident is enrolled from (as `edge-app eval visits` enrols)
OFFERED = 30  # visits offered to the memory
DRAWS = 100  # (resident, lingerer) pairs
MEMORIES = ("none", "forced", "guarded", "distinct")


def by_person(cache: Any, images: list[str]) -> dict[str, list[int]]:
    """Each person's cache rows among `images` whose face passed enrolment's gates."""
    row = {str(name): i for i, name in enumerate(cache["names"])}
    usable = ~np.isnan(cache["embedding"][:, 0])
    people: dict[str, list[int]] = defaultdict(list)
    for image in images:
        index = row.get(image)
        if index is not None and usable[index]:
            people[image.split("/")[0]].append(index)
    return dict(people)


def enrolled(cache: Any, name: str, rows: list[int], folder: Path) -> GalleryMatrix:
    """A gallery of one, enrolled from `rows` (each with its mirror image), as it loads."""
    samples = [
        NewSample(
            cache["embedding"][i],
            hashlib.sha256(str(cache["names"][i]).encode()).hexdigest(),
            mirror=cache["mirror"][i],
        )
        for i in rows
    ]
    with Gallery.open(folder / "gallery.db", create=True) as gallery:
        gallery.enroll(name, samples)
        return gallery.load_matrix()


def offer(
    engine: Engine, settings: RecognitionConfig, matrix: GalleryMatrix, visits: np.ndarray
) -> tuple[SiteMemory, int]:
    """The memory after `visits` are offered in turn through the door's doubt, as
    Recognizer.learn offers them (the matcher rebuilt after each learned visit); and how many
    it left out."""
    memory = SiteMemory()
    matcher, _ = door_matcher(engine, settings, matrix, memory=memory, report=False)
    left_out = 0
    for visit in visits:
        if doubt(matcher, memory, visit) is not None:
            left_out += 1
            continue
        memory.add(visit)
        matcher, _ = door_matcher(engine, settings, matrix, memory=memory, report=False)
    return memory, left_out


def read_cache(
    parser: argparse.ArgumentParser, path: Path, data: Path
) -> tuple[dict[str, np.ndarray], dict[str, list[int]], list[str]]:
    """The `benchmarks.same_person embed` cache, its DevTest people's rows, and the people
    with photos enough to enrol and to visit with (a usage error when there is no cache)."""
    if not path.is_file():
        parser.error(f"{path} not found: make it with `python -m benchmarks.same_person embed`")
    cache = dict(np.load(path))
    people = by_person(cache, read_pairs(data / "lfw" / "pairsDevTest.txt").images)
    residents = sorted(p for p, rows in people.items() if len(rows) > ENROL)
    return cache, people, residents


@dataclass(frozen=True)
class Draw:
    """One draw: a resident and a lingerer among the DevTest people, the others split in two
    halves (`teach`: people whose visits the door may learn; the other half's single photos
    are the strangers)."""

    resident: str
    own: list[int]  # the resident's cache rows: the first ENROL enrolled, the rest `genuine`
    strangers: np.ndarray
    genuine: np.ndarray
    lingering: np.ndarray
    teach: list[str]


def draw(
    rng: np.random.Generator,
    cache: dict[str, np.ndarray],
    people: dict[str, list[int]],
    residents: list[str],
) -> Draw:
    """The next draw from `rng` (the same sequence of random numbers in every benchmark)."""
    resident, lingerer = rng.choice(residents, size=2, replace=False)
    others = [p for p in sorted(people) if p not in (resident, lingerer)]
    rng.shuffle(others)
    teach, probe = others[: len(others) // 2], others[len(others) // 2 :]
    own = people[resident]
    return Draw(
        resident=str(resident),
        own=own,
        strangers=cache["embedding"][[people[p][0] for p in probe]],
        genuine=cache["embedding"][own[ENROL:]],
        lingering=cache["embedding"][people[lingerer]],
        teach=teach,
    )


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="../shared/data")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/edge-door-same-person.npz"))
    parser.add_argument("--draws", type=int, default=DRAWS, help="(resident, lingerer) pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    check_output(args.out, "--out")  # before the minutes of work, not with a traceback after
    cache, people, residents = read_cache(parser, args.cache, args.data)
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    engine = Engine.open(backend="cpu")
    settings = RecognitionConfig(learn_site=True)
    keys = ("strangers", "let_in", "resident", "recognised", "lingerer", "lingerer_in")
    totals = {name: dict.fromkeys((*keys, "learned", "left_out"), 0) for name in MEMORIES}
    for _ in tqdm(range(args.draws), desc="draws", unit="draw", disable=None):
        this = draw(rng, cache, people, residents)
        strangers, genuine, lingering = this.strangers, this.genuine, this.lingering
        visits = np.resize(lingering, (OFFERED, lingering.shape[1]))
        distinct = cache["embedding"][[people[p][0] for p in this.teach[:OFFERED]]]
        with tempfile.TemporaryDirectory() as folder:
            matrix = enrolled(cache, this.resident, this.own[:ENROL], Path(folder))
        forced = SiteMemory()
        for visit in visits:
            forced.add(visit)
        guarded, guarded_out = offer(engine, settings, matrix, visits)
        learned_distinct, distinct_out = offer(engine, settings, matrix, distinct)
        memories = {
            "none": (None, 0),
            "forced": (forced, 0),
            "guarded": (guarded, guarded_out),
            "distinct": (learned_distinct, distinct_out),
        }
        for name, (memory, left_out) in memories.items():
            matcher, _ = door_matcher(engine, settings, matrix, memory=memory, report=False)
            row = totals[name]
            row["learned"] += 0 if memory is None else memory.learned
            row["left_out"] += left_out
            for total, hits, faces in (
                ("strangers", "let_in", strangers),
                ("resident", "recognised", genuine),
                ("lingerer", "lingerer_in", lingering),
            ):
                names = matcher.identify(faces).names
                row[total] += len(names)
                row[hits] += sum(n is not None for n in names)
    report = {
        "enrol": ENROL,
        "offered": OFFERED,
        "draws": args.draws,
        "seed": args.seed,
        "memories": totals,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_report(args.out, report, "--out")
    for name, row in totals.items():
        print(
            f"{name:8}: strangers let in {row['let_in']}/{row['strangers']}, resident's photos "
            f"recognised {row['recognised']}/{row['resident']}, lingerer let in "
            f"{row['lingerer_in']}/{row['lingerer']}, visits learned {row['learned']} "
            f"(left out {row['left_out']})"
        )
    print(f"{report['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
