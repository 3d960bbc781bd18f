"""How matching scales with the gallery: per face, and once per gallery load.

    python -m benchmarks.gallery_scale

With the shipped rule (MatchSettings.from_recognition of models/tflite/manifest.json, its
cohort normalisation, the config's defaults: site centring on, lookalikes "raise") and random
unit embeddings (the cost depends only on the sizes), galleries of 10, 100, 1,000 and 5,000
people x 5 photos, each stored with its mirror image's embedding as enrolment stores it:

- identify: one Matcher.identify() of one face, what the door does per evaluated face;
- load: edge_app.daemon.door_matcher, what the door does once per gallery load (at start, on
  every change, and with learn_site on every visit learned): the Matcher (site centring,
  centroids, the templates' cohort statistics), the lookalike check over every stored face
  against every person, and a second Matcher when the check raises the threshold;
- build and lookalikes: those two parts of the load timed on their own;
- peak MB: the most memory numpy held during one load (tracemalloc, a run of its own).

Medians of repeated runs. Writes benchmarks/gallery_scale.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from benchmarks import outputs
from edge_app.cohort import load_cohort
from edge_app.config import RecognitionConfig
from edge_app.daemon import door_matcher
from edge_app.gallery import EMBEDDING_DIM, GalleryMatrix
from edge_app.manifest import MANIFEST_NAME
from edge_app.matching import Matcher, MatchSettings
from edge_app.paths import REPO_MODELS, REPO_ROOT
from edge_app.reports import check_output

RESULT = REPO_ROOT / "benchmarks" / "gallery_scale.json"
SIZES = (10, 100, 1000, 5000)
SAMPLES = 5
IDENTIFY_CALLS = 200  # identify() calls timed per gallery (each one face)
LOAD_ROUNDS = 5  # door_matcher runs per gallery (3 from 5,000 people up)


def random_gallery(people: int, rng: np.random.Generator) -> GalleryMatrix:
    """`people` x SAMPLES photos as enrolment stores them: each photo's embedding followed by
    its mirror image's (Gallery.load_matrix gives both), so 2 rows per photo."""
    rows = rng.standard_normal((people * SAMPLES * 2, EMBEDDING_DIM)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    person = np.repeat(np.arange(people, dtype=np.int32), SAMPLES * 2)
    return GalleryMatrix(rows, person, tuple(f"person {i}" for i in range(people)))


def shipped_engine(models: Path) -> Any:
    """What door_matcher reads of the engine: the manifest's recognition block and the cohort
    (loaded and checked as the engine loads it)."""
    recognition = json.loads((models / MANIFEST_NAME).read_text())["recognition"]
    cohort = load_cohort(models, recognition)
    return SimpleNamespace(manifest=SimpleNamespace(recognition=recognition), cohort=cohort)


def median_ms(times: list[float]) -> float:
    return round(float(np.median(times)) * 1e3, 3)


def measure(people: int, engine: Any, config: RecognitionConfig, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    matrix = random_gallery(people, rng)
    probes = rng.standard_normal((IDENTIFY_CALLS, EMBEDDING_DIM)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    rounds = LOAD_ROUNDS if people < 5000 else 3
    settings = MatchSettings.from_recognition(
        engine.manifest.recognition, site_centring=config.site_centring
    )
    load, build, check = [], [], []
    found: list[Any] = []
    matcher = None
    for _ in range(rounds):
        start = time.perf_counter()
        matcher, found = door_matcher(engine, config, matrix, report=False)
        load.append(time.perf_counter() - start)
        start = time.perf_counter()
        plain = Matcher(matrix, settings, engine.cohort)
        middle = time.perf_counter()
        plain.lookalikes()
        build.append(middle - start)
        check.append(time.perf_counter() - middle)
    assert matcher is not None
    identify = []
    for probe in probes:
        start = time.perf_counter()
        matcher.identify(probe)
        identify.append(time.perf_counter() - start)
    tracemalloc.start()
    try:
        door_matcher(engine, config, matrix, report=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {
        "people": people,
        "rows": len(matrix),  # photos and their mirrors
        "templates": len(matcher.matrix),
        "identify_ms": median_ms(identify),
        "load_ms": median_ms(load),
        "build_ms": median_ms(build),
        "lookalikes_ms": median_ms(check),
        "load_peak_mb": round(peak / 1e6, 1),
        "lookalike_pairs": len(found),
        "threshold": round(matcher.settings.threshold, 4),
        "load_rounds": rounds,
        "identify_calls": len(identify),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| people x 5 photos | templates (photos, mirrors, centroids) | identify, ms per face "
        "| load (door_matcher), ms "
        "| Matcher build alone, ms | lookalike check alone, ms | load peak memory, MB |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['people']:,} | {r['templates']:,} | {r['identify_ms']:.2f} | {r['load_ms']:,.0f} "
        f"| {r['build_ms']:,.0f} | {r['lookalikes_ms']:,.0f} | {r['load_peak_mb']:,.0f} |"
        for r in rows
    ]
    return "\n".join(lines)


def _shown(path: Path) -> str:
    """A path as the JSON records it: relative to the repository when inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(path)


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--models", type=Path, default=REPO_MODELS)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    args = parser.parse_args(argv)
    check_output(args.out, "--out")  # before the work, not with a traceback after
    engine = shipped_engine(args.models)
    config = RecognitionConfig()  # the door's defaults: site centring, lookalikes "raise"
    rows = []
    for index, people in enumerate(args.sizes):
        rows.append(measure(people, engine, config, seed=index))
        print(f"{people} people done", flush=True)
    print(table(rows))
    result = {
        "command": "python -m benchmarks.gallery_scale",
        "settings": {
            "manifest": _shown(args.models / MANIFEST_NAME),
            "site_centring": config.site_centring,
            "lookalikes": config.lookalikes,
            "embeddings": "random unit vectors (the cost depends only on the sizes)",
        },
        "people": {str(row["people"]): row for row in rows},
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        **outputs.conditions(),
    }
    outputs.write_json(args.out, result, "--out")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
