"""Person centroids (edge_app.matching): measured on LFW against the templates alone.

Each enrolled person is matched by their stored templates (every photo and its mirror image)
and, with a centroid, also by the unit mean of those templates: one more gallery row per
person, nothing more per frame. For the record the table also has probe mirror-averaging
(each face embedded twice at the door, as itself and mirrored, and the two averaged), which
doubles the FaceNet work per face.

Works on the cache of raw FaceNet outputs of `python -m benchmarks.centering embed`,
centred with the shipped mean and normalised against the shipped cohort settings, with the
DevTrain split of benchmarks/cohort.py. Each variant's rule (threshold at <= 0.1% strangers,
aggregate, margin) is derived on the DevTrain simulation people by converter.recognition's
door simulation; it is then checked, fixed, on DevTest people (outside DevTrain) over SEEDS
seeds of 40 galleries, the same galleries for every variant:

    .venv/bin/python -m benchmarks.centroid --cache /tmp/edge-door-lfw-raw.npz

writes benchmarks/centroid.json. Which variant the door runs is converter.recognition's
CENTROID, recorded in the manifest by `python -m benchmarks.cohort ship`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import outputs
from benchmarks.cohort import (
    Data,
    check_parser,
    checked_args,
    derive_and_check,
    normaliser_of,
    shipped_choice,
)
from edge_app.centering import unit
from edge_app.cohort import NORMALISATION_KEY
from edge_app.manifest import MANIFEST_NAME
from edge_app.paths import REPO_ROOT
from edge_app.reports import check_output, write_report

# (label, match by person centroids, probes mirror-averaged)
VARIANTS = (
    ("templates", False, False),
    ("templates + person centroid", True, False),
    ("templates, probe mirror-averaged", False, True),
    ("templates + person centroid, probe mirror-averaged", True, True),
)


def shipped_cohort(models: Path) -> dict[str, Any]:
    """The normalisation the manifest names, as benchmarks/cohort.py chose it."""
    chosen = shipped_choice()
    manifest = json.loads((models / MANIFEST_NAME).read_text())["recognition"]
    if manifest.get(NORMALISATION_KEY) != chosen["mode"]:
        raise SystemExit(
            f"{models}: the manifest's normalisation is not benchmarks/cohort.json's choice; "
            "run `make cohort` first"
        )
    return chosen


def measure(data: Data, chosen: dict[str, Any], seeds: int) -> dict[str, Any]:
    normaliser = normaliser_of(data, chosen)
    averaged = unit(data.embeddings + data.mirrors)
    out: dict[str, Any] = {}
    base: list[float] | None = None
    for label, centroid, mirrored_probes in VARIANTS:
        start = time.perf_counter()
        probes = averaged if mirrored_probes else data.embeddings
        rule, summary = derive_and_check(data, normaliser, seeds, centroid, probes)
        identified = summary["devtest_identified_per_seed"]
        if base is None:
            base = identified
        gain = np.array(identified) - np.array(base)
        row = {
            "centroid": centroid,
            "probe_mirror_averaged": mirrored_probes,
            "facenet_runs_per_face": 2 if mirrored_probes else 1,
            "devtrain_rule": rule,
            **summary,
            "gain_vs_templates": round(float(gain.mean()), 5),
            "gain_vs_templates_min": round(float(gain.min()), 5),
            "gain_vs_templates_max": round(float(gain.max()), 5),
            "seconds": round(time.perf_counter() - start, 1),
        }
        out[label] = row
        print(f"{label}: {row}", flush=True)
    return out


@outputs.command
def main(argv: list[str] | None = None) -> int:
    args = checked_args(check_parser(__doc__, REPO_ROOT / "benchmarks" / "centroid.json"), argv)
    check_output(args.out, "--out")  # before the minutes of work, not with a traceback after
    data = Data(args.cache, args.data / "lfw", args.models)
    chosen = shipped_cohort(args.models)
    report = {
        "what": "person centroid templates and probe mirror-averaging, s-norm cohort as shipped",
        "cohort": chosen,
        "seeds": args.seeds,
        "variants": measure(data, chosen, args.seeds),
    }
    write_report(args.out, report, "--out")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
