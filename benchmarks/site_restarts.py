"""A lingerer across door restarts ([recognition] learn_site, edge_app/site_memory.py): what a
stranger who walks past a household of one a few times between each restart of the door
gets learned, and what that does to the door, on LFW faces.

The door keeps its site memory and the repeat guard's faces (the last VISITS visits learned)
in one file beside the gallery, saved after each visit it learns and read back when it
starts (edge_app.daemon: Recognizer.learn saves, open_site_memory loads). This benchmark
restarts through exactly that path: each draw's door has a real gallery and its memory file
(mode 0600) in a temporary folder; every learned visit is saved to that file, and each
restart is open_site_memory on it and a new matcher (edge_app.daemon.door_matcher) over the
memory read back.

Each draw, as in benchmarks/site_poisoning.py: one DevTest person is the resident (enrolled
from ENROL photos and their mirror images), another the lingerer. The door starts empty and
runs 200 lifetimes, restarted after each. In each lifetime the lingerer comes `--per-life`
times (his photos cycled), and, in the busy runs, `--traffic` honest strangers too (one photo
each of half the other DevTest people, cycled), offered in a seeded random order; each visit
goes through the door's doubt (edge_app.site_memory.doubt) and is learned unless doubted, at
least LEARN_INTERVAL apart as the door learns them. After R restarts (RESTARTS) the door as
it starts is tested on a single photo of each of the other half of the DevTest people (the
strangers), on the resident's remaining photos and on the lingerer's.

Each draw is run four ways, the same people and the same order of visits in each:

  - guard saved: the door as shipped;
  - guard forgotten: the memory read back but its repeat guard emptied at each restart,
    what a guard kept only in memory would give: the counterfactual that shows what saving
    the guard is for;

each with no other visitors (traffic 0) and with `--traffic` honest strangers per lifetime.
All four are written to one JSON (runs -> guard -> traffic -> restarts -> counts).

Embeddings come from the one-person gate benchmark's cache (as for site_poisoning):

    .venv/bin/python -m benchmarks.same_person embed --cache /tmp/sp.npz   # about 3 minutes
    nice .venv/bin/python -m benchmarks.site_restarts --cache /tmp/sp.npz

writes benchmarks/site_restarts.json (20 draws, all four runs: about 4 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import cast

import numpy as np
from tqdm import tqdm

from benchmarks import outputs
from benchmarks.site_poisoning import ENROL, draw, enrolled, read_cache
from edge_app.arg_types import count
from edge_app.config import RecognitionConfig
from edge_app.daemon import door_matcher, open_site_memory
from edge_app.engine import Engine
from edge_app.gallery import GalleryMatrix
from edge_app.matching import Matcher
from edge_app.paths import REPO_ROOT, SHARED_DATA
from edge_app.reports import check_output
from edge_app.site_memory import SiteMemory, doubt, site_memory_path

RESULT = REPO_ROOT / "benchmarks" / "site_restarts.json"
RESTARTS = (0, 1, 2, 3, 5, 10, 20, 30, 50, 100, 200)  # the door is tested after these
DRAWS = 20  # (resident, lingerer) pairs
PER_LIFE = 3  # the lingerer's visits per door lifetime
TRAFFIC = 5  # honest strangers per door lifetime in the busy runs
GUARDS = ("saved", "forgotten")
COUNTS = (
    "strangers",
    "let_in",
    "resident",
    "recognised",
    "lingerer",
    "lingerer_in",
    "offered_lingerer",
    "learned_lingerer",
    "offered_honest",
    "learned_honest",
    "learned",
)


class Door:
    """One door's site memory and matcher, across restarts.

    `gallery_path` names the gallery; the memory's file is the door's own beside it
    (site_memory_path). `build` makes the door's matcher over a memory (the benchmark:
    door_matcher; a test: a Matcher of its own). `guard` is "saved" (the door as shipped) or
    "forgotten" (the repeat guard emptied at each restart, as if it lived in memory only)."""

    def __init__(
        self,
        gallery_path: Path,
        settings: RecognitionConfig,
        build: Callable[[SiteMemory], Matcher],
        guard: str = "saved",
    ) -> None:
        if guard not in GUARDS:
            raise ValueError(f"guard must be one of {', '.join(GUARDS)}, not {guard!r}")
        self.gallery_path = Path(gallery_path)
        self.path = site_memory_path(self.gallery_path)
        self.settings = settings
        self.build = build
        self.guard = guard
        self.saved = 0  # visits learned in the file as last saved
        self.memory: SiteMemory
        self.matcher: Matcher
        self.restart()  # the first start: no file yet, an empty memory

    def restart(self) -> None:
        """Start the door again as the daemon starts: the memory read from its file
        (edge_app.daemon.open_site_memory) and a matcher built over it. A file the door
        refused (it would start empty, and say so only in its log) is an error here."""
        memory = open_site_memory(self.gallery_path, self.settings)
        if memory is None:
            raise RuntimeError("learn_site is off: the door keeps no site memory")
        if memory.learned != self.saved:
            raise RuntimeError(
                f"{self.path}: read back {memory.learned} visit(s) learned, not the "
                f"{self.saved} saved (the door refused its own file?)"
            )
        if self.guard == "forgotten":
            memory.recent.clear()
        self.memory = memory
        self.matcher = self.build(memory)

    def offer(self, face: np.ndarray) -> bool:
        """A visit the door judged a stranger's, as Recognizer.learn takes it: learned unless
        doubted (edge_app.site_memory.doubt), then saved to the file and the matcher built
        again over the memory; True if it was learned."""
        if doubt(self.matcher, self.memory, face) is not None:
            return False
        self.memory.add(face)
        self.memory.save(self.path)
        self.saved = self.memory.learned
        self.matcher = self.build(self.memory)
        return True


def run_door(
    door: Door,
    lingering: np.ndarray,
    honest: np.ndarray,
    traffic: int,
    per_life: int,
    rng: np.random.Generator,
    tested: Callable[[Matcher], dict[str, int]],
) -> dict[int, dict[str, int]]:
    """The door run for max(RESTARTS) lifetimes, restarted after each: per lifetime,
    `per_life` of the lingerer's photos (cycled) and `traffic` of the honest strangers'
    (cycled), offered in an order drawn from `rng`. For each R in RESTARTS, the counts of
    visits offered and learned so far and `tested(matcher)` of the door as it starts after
    R restarts."""
    rows: dict[int, dict[str, int]] = {}
    learned = {"L": 0, "H": 0}
    offered = {"L": 0, "H": 0}
    for life in range(max(RESTARTS) + 1):
        if life in RESTARTS:
            rows[life] = {
                **tested(door.matcher),
                "offered_lingerer": offered["L"],
                "learned_lingerer": learned["L"],
                "offered_honest": offered["H"],
                "learned_honest": learned["H"],
                "learned": door.memory.learned,
            }
        if life == max(RESTARTS):
            break
        visits = [("L", lingering[(offered["L"] + k) % len(lingering)]) for k in range(per_life)]
        visits += [("H", honest[(offered["H"] + k) % len(honest)]) for k in range(traffic)]
        offered["L"] += per_life
        offered["H"] += traffic
        for i in rng.permutation(len(visits)):
            who, face = visits[i]
            learned[who] += door.offer(face)
        door.restart()
    return rows


def counted(matcher: Matcher, faces: dict[str, np.ndarray]) -> dict[str, int]:
    """How many of the strangers' photos `matcher` lets in (as anyone), of the resident's it
    recognises and of the lingerer's it lets in, and of how many."""
    counts = {}
    for total, hits in (
        ("strangers", "let_in"),
        ("resident", "recognised"),
        ("lingerer", "lingerer_in"),
    ):
        names = matcher.identify(faces[total]).names
        counts[total] = len(names)
        counts[hits] = sum(n is not None for n in names)
    return counts


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="../shared/data")
    parser.add_argument(
        "--cache",
        type=Path,
        required=True,
        help="embeddings from `python -m benchmarks.same_person embed --cache FILE`",
    )
    parser.add_argument("--draws", type=count(1), default=DRAWS, help="(resident, lingerer) pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--per-life",
        type=count(1),
        default=PER_LIFE,
        help="the lingerer's visits per door lifetime",
    )
    parser.add_argument(
        "--traffic",
        type=count(1),
        default=TRAFFIC,
        help="honest strangers per door lifetime in the busy runs (the quiet runs have none)",
    )
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    check_output(args.out, "--out")  # before the minutes of work, not with a traceback after
    cache, people, residents = read_cache(parser, args.cache, args.data)
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    engine = Engine.open(backend="cpu")
    settings = RecognitionConfig(learn_site=True)

    def built(matrix: GalleryMatrix, memory: SiteMemory) -> Matcher:
        matcher, _ = door_matcher(engine, settings, matrix, memory=memory, report=False)
        return cast(Matcher, matcher)

    traffics = (0, args.traffic)
    totals = {
        guard: {t: {r: dict.fromkeys(COUNTS, 0) for r in RESTARTS} for t in traffics}
        for guard in GUARDS
    }
    for number in tqdm(range(args.draws), desc="draws", unit="draw", disable=None):
        this = draw(rng, cache, people, residents)
        lingering = this.lingering
        honest = cache["embedding"][[people[p][0] for p in this.teach]]

        faces = {"strangers": this.strangers, "resident": this.genuine, "lingerer": lingering}
        with tempfile.TemporaryDirectory() as folder:
            for traffic in traffics:
                for guard in GUARDS:
                    # a door of its own: its gallery and its memory file in a folder of its own
                    home = Path(folder) / f"{guard}-{traffic}"
                    home.mkdir(mode=0o700)
                    matrix = enrolled(cache, this.resident, this.own[:ENROL], home)
                    door = Door(home / "gallery.db", settings, partial(built, matrix), guard)
                    order = np.random.default_rng([args.seed, number, traffic])  # same per guard
                    rows = run_door(
                        door,
                        lingering,
                        honest,
                        traffic,
                        args.per_life,
                        order,
                        partial(counted, faces=faces),
                    )
                    for restarts, counts in rows.items():
                        for key, value in counts.items():
                            totals[guard][traffic][restarts][key] += value
    report = {
        "enrol": ENROL,
        "draws": args.draws,
        "seed": args.seed,
        "per_life": args.per_life,
        "traffic": list(traffics),
        "restarts": list(RESTARTS),
        "runs": {
            guard: {
                str(t): {str(r): row for r, row in by_restarts.items()}
                for t, by_restarts in by_traffic.items()
            }
            for guard, by_traffic in totals.items()
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    outputs.write_json(args.out, report, "--out")
    for guard, by_traffic in totals.items():
        for traffic, by_restarts in by_traffic.items():
            print(f"guard {guard}, traffic {traffic}:")
            for restarts, row in by_restarts.items():
                print(
                    f"  restarts {restarts:3}: lingerer learned "
                    f"{row['learned_lingerer'] / args.draws:6.1f}, honest learned "
                    f"{row['learned_honest'] / args.draws:6.1f}, strangers let in "
                    f"{row['let_in']}/{row['strangers']}, resident recognised "
                    f"{row['recognised']}/{row['resident']}, lingerer let in "
                    f"{row['lingerer_in']}/{row['lingerer']}"
                )
    print(f"{report['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
