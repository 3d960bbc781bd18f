"""What the lookalike guard costs: once per gallery load, never per frame.

    python -m benchmarks.lookalike_cost

When the gallery loads (at start, and whenever it changes) the door builds its Matcher and
then scores every enrolled face against every other person (edge_app.matching
.guard_lookalikes) through the shipped cohort normalisation. Galleries of 20, 100 and 500
people x 2 photos, each stored with its mirror (unit vectors: the cost depends only on the
sizes); medians of ROUNDS builds. Writes benchmarks/lookalike_cost.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks import outputs
from benchmarks.decision_cost import gallery
from edge_app.config import RecognitionConfig
from edge_app.engine import Engine
from edge_app.matching import Matcher, MatchSettings, guard_lookalikes
from edge_app.paths import REPO_ROOT
from edge_app.reports import check_output

RESULT = REPO_ROOT / "benchmarks" / "lookalike_cost.json"
ROUNDS = 7
SIZES = (20, 100, 500)


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    check_output(args.out, "--out")  # before the work, not with a traceback after
    engine = Engine.open(backend="cpu")
    settings = MatchSettings.from_recognition(  # as the door: site centring by default
        engine.manifest.recognition, site_centring=RecognitionConfig().site_centring
    )
    rng = np.random.default_rng(0)
    rows = {}
    print("| people | Matcher build, ms | lookalike check, ms |")
    print("|---|---|---|")
    for people in SIZES:
        matrix = gallery(people, True, rng)
        build, check = [], []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            matcher = Matcher(matrix, settings, engine.cohort)
            middle = time.perf_counter()
            guard_lookalikes(matcher, "raise")
            build.append((middle - start) * 1e3)
            check.append((time.perf_counter() - middle) * 1e3)
        row = {
            "templates": len(matrix),
            "build_ms": round(float(np.median(build)), 1),
            "lookalike_ms": round(float(np.median(check)), 1),
        }
        rows[str(people)] = row
        print(f"| {people} | {row['build_ms']} | {row['lookalike_ms']} |")
    result = {
        "rounds": ROUNDS,
        "people": rows,
        **outputs.conditions(),
    }
    outputs.write_json(args.out, result, "--out")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
