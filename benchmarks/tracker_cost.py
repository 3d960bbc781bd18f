"""What the IoU tracker costs per frame, from one face to a frame full of them.

    python -m benchmarks.tracker_cost

edge_app.tracker.IoUTracker.update with N boxes on a grid against the N tracks of the frame
before (each box moved by a pixel, so every track continues): the IoU matrix and the greedy
assignment (edge_app.tracker.greedy_assign, which sorts only the overlapping pairs instead of
scanning the whole N x N matrix once per pair). Medians of ROUNDS updates after one untimed
one. A door sees a few faces; 2,000 is a stress case that a quadratic assignment would take
seconds over. Writes benchmarks/tracker_cost.json; `make bench` runs it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks import outputs
from edge_app.config import TrackingConfig
from edge_app.paths import REPO_ROOT
from edge_app.reports import check_output
from edge_app.tracker import IoUTracker

RESULT = REPO_ROOT / "benchmarks" / "tracker_cost.json"
ROUNDS = 7
SIZES = (1, 10, 100, 500, 2000)
BUDGET_MS = 100.0  # for 2,000 faces: a tenth of a second, against seconds for a quadratic one


def grid(faces: int) -> np.ndarray:
    """`faces` 20 px boxes on a grid, 30 px apart (none overlaps another)."""
    rows, cols = np.divmod(np.arange(faces), 50)
    return np.stack([cols * 30, rows * 30, cols * 30 + 20, rows * 30 + 20], 1).astype(float)


def update_ms(faces: int) -> float:
    """Median milliseconds of one update with `faces` boxes continuing `faces` tracks."""
    boxes = grid(faces)
    times = []
    for round_ in range(ROUNDS + 1):
        tracker = IoUTracker(TrackingConfig())
        tracker.update(boxes)
        start = time.perf_counter()
        tracked, ended = tracker.update(boxes + 1.0)
        elapsed = time.perf_counter() - start
        assert len(tracked) == faces and ended == []  # every track continued
        if round_:
            times.append(elapsed * 1e3)
    return float(np.median(times))


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    check_output(args.out, "--out")  # before the work, not with a traceback after
    rows = {}
    print("| faces in the frame | tracker update, ms |")
    print("|---|---|")
    for faces in SIZES:
        rows[str(faces)] = round(update_ms(faces), 3)
        print(f"| {faces} | {rows[str(faces)]} |")
    most = rows[str(SIZES[-1])]
    print(f"{SIZES[-1]} faces: {most} ms against the {BUDGET_MS:g} ms budget", flush=True)
    result = {
        "rounds": ROUNDS,
        "update_ms": rows,
        "budget_ms_at_2000": BUDGET_MS,
        "met": most <= BUDGET_MS,
        **outputs.conditions(),
    }
    outputs.write_json(args.out, result, "--out")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
