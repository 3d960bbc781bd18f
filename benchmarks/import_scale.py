"""What `edge-app import` costs for the largest file it reads: time and peak memory.

    python -m benchmarks.import_scale

Writes an export file of `--people` people x 5 photos, each stored with its mirror image's
embedding as enrolment stores them (random unit embeddings near one another per person, so
the one-face-per-name check passes; the cost depends only on the sizes), 4,500 people by
default: about 127 MB, just under the 128 MiB an import reads. Then runs the real
`edge-app import` into an empty gallery in a process of its own, `--rounds` times, and
records its wall time and its peak resident memory (the child's ru_maxrss). Writes
benchmarks/import_scale.json.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

import numpy as np

from benchmarks import outputs
from edge_app.gallery import EMBEDDING_DIM, EXPORT_FORMAT, MAX_IMPORT_BYTES
from edge_app.paths import REPO_ROOT
from edge_app.reports import check_output

RESULT = REPO_ROOT / "benchmarks" / "import_scale.json"
PHOTOS = 5
CREATED = "2026-01-01T00:00:00Z"


def units(rng: np.random.Generator, rows: int) -> np.ndarray:
    vectors = rng.standard_normal((rows, EMBEDDING_DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def encoded(vector: np.ndarray) -> str:
    return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")


def write_export(out: TextIO, people: int, seed: int = 0) -> None:
    """An export file as `edge-app export` writes one (docs/GALLERY.md, the format)."""
    rng = np.random.default_rng(seed)
    header = {
        "format": EXPORT_FORMAT,
        "version": 1,
        "exported_utc": CREATED,
        "embedding_dim": EMBEDDING_DIM,
        "embedding_dtype": "float32-le",
        "people": people,
        "samples": people * PHOTOS,
    }
    out.write(json.dumps(header) + "\n")
    for person in range(people):
        photos = units(rng, 1) + 0.65 * units(rng, PHOTOS)  # one face, five photos
        photos /= np.linalg.norm(photos, axis=1, keepdims=True)
        mirrors = photos + 0.3 * units(rng, PHOTOS)
        mirrors /= np.linalg.norm(mirrors, axis=1, keepdims=True)
        samples = [
            {
                "embedding": encoded(photo),
                "mirror_embedding": encoded(mirror),
                "image_sha256": hashlib.sha256(f"{person}-{n}".encode()).hexdigest(),
                "created_utc": CREATED,
                "model": None,
            }
            for n, (photo, mirror) in enumerate(zip(photos, mirrors, strict=True))
        ]
        record = {"name": f"Person {person:05}", "created_utc": CREATED, "samples": samples}
        out.write(json.dumps(record) + "\n")


def import_once(export: Path, work: Path) -> tuple[float, float]:
    """(seconds, peak MB) of one `edge-app import` into a new gallery, in its own process."""
    gallery = work / "gallery.db"
    for path in work.glob("gallery.db*"):
        path.unlink()
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "edge_app.cli", "-q", "import", "--db", str(gallery), str(export)],
        check=True,
        stdout=subprocess.DEVNULL,  # its summary line
    )
    seconds = time.perf_counter() - start
    # ru_maxrss of the children waited for: the largest, in KB on Linux. Each round is a new
    # child no larger than the first, so the maximum is every round's peak.
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, peak_kb / 1024


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--people", type=int, default=4500, help="people in the file (4500)")
    parser.add_argument("--rounds", type=int, default=3, help="imports timed (3)")
    args = parser.parse_args(argv)
    if args.people < 1 or args.rounds < 1:
        parser.error("--people and --rounds are at least 1")
    check_output(args.out, "--out")
    with tempfile.TemporaryDirectory(prefix="import-scale-") as folder:
        work = Path(folder)
        export = work / "export.jsonl"
        with export.open("w", encoding="utf-8") as out:
            write_export(out, args.people)
        size = export.stat().st_size
        if size > MAX_IMPORT_BYTES:
            parser.error(f"{args.people} people make {size:,} bytes, past the import's limit")
        rounds = [import_once(export, work) for _ in range(args.rounds)]
    seconds = [s for s, _ in rounds]
    result = {
        "command": "python -m benchmarks.import_scale",
        "people": args.people,
        "photos_per_person": PHOTOS,
        "file_bytes": size,
        "limit_bytes": MAX_IMPORT_BYTES,
        "import_s_median": round(statistics.median(seconds), 2),
        "import_s": [round(s, 2) for s in seconds],
        "peak_rss_mb": round(max(mb for _, mb in rounds), 1),
        **outputs.conditions(),
    }
    print(
        f"{args.people} people, {size / 1e6:.0f} MB: import {result['import_s_median']} s "
        f"(median of {args.rounds}), peak {result['peak_rss_mb']} MB"
    )
    outputs.write_json(args.out, result, "--out")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
