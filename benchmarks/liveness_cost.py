"""What the liveness check costs per face: int8 MiniFASNets on the CPU, as the door runs them.

    python -m benchmarks.liveness_cost --data ../shared/data            # table + JSON
    python -m benchmarks.liveness_cost --data ../shared/data --docs docs  # and BENCHMARKS.md

Faces are the largest face the shipped MTCNN finds in NUAA frames (live and print, spread
over the subjects); detection is not timed. Each timed call is `Engine.liveness` on a real
frame: both patches cut and resized, both models invoked, scores combined. Calls alternate
between one face and three faces per frame (the face and two shifted copies), so the cost
per face is also measured where faces share a call. Writes benchmarks/liveness_cost.json;
`make bench` runs it before the main harness, whose report (benchmarks/report.py) includes
the table. `--docs` re-renders docs/BENCHMARKS.md from the last results.json as well.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from benchmarks import outputs
from edge_app.engine import Engine
from edge_app.faces import Faces
from edge_app.images import read_image
from edge_app.manifest import LIVENESS_ROLE
from edge_app.paths import REPO_MODELS
from edge_app.reports import check_output

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "liveness_cost.json"
TARGET_MS = 5.0  # issue: extra cost per face on this CPU, int8, 2 threads
FRAMES = 40  # per label
ROUNDS = 5


def _frames(data: Path, count: int) -> list[Path]:
    paths = []
    for label in ("live", "print"):
        found = sorted((data / "liveness" / "nuaa" / label).glob("*/*.jpg"))
        if not found:
            raise SystemExit(f"no NUAA {label} frames under {data / 'liveness' / 'nuaa'}")
        paths += [found[i] for i in np.linspace(0, len(found) - 1, count).round().astype(int)]
    return paths


def _three(face: Faces, width: int, height: int) -> Faces:
    """The face and two copies shifted sideways (inside the frame): three faces in one call."""
    box = face.boxes[0]
    side = float(box[2] - box[0])
    shifts = [0.0, -0.5 * side, 0.5 * side]
    boxes = np.stack([box + np.array([s, 0, s, 0], np.float32) for s in shifts])
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width - 1)
    return Faces(boxes, np.repeat(face.scores, 3), np.repeat(face.landmarks, 3, axis=0))


def _stats(values: list[float]) -> dict[str, float]:
    array = np.array(values) * 1000
    return {
        "min": float(array.min()),
        "median": float(np.median(array)),
        "p10": float(np.percentile(array, 10)),
        "p90": float(np.percentile(array, 90)),
        "calls": len(values),
    }


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def measure(models: Path, data: Path, threads: int, frames: int, rounds: int) -> dict:
    from converter.liveness import largest_face

    engine = Engine.open(models, backend="cpu", threads=threads)
    if not engine.has_liveness:
        raise SystemExit(f"{models} has no liveness models: edge-convert build --only liveness")
    samples = []
    for path in _frames(data, frames):
        frame = read_image(path)
        face = largest_face(engine.detect(frame))
        if face is not None:
            samples.append((frame, face, _three(face, frame.shape[1], frame.shape[0])))
    for frame, face, _ in samples[:5]:  # warm-up: first invokes allocate
        engine.liveness(frame, face)
    one, three = [], []
    loads = []
    for _ in range(rounds):
        loads.append(os.getloadavg()[0])
        for frame, face, faces3 in samples:
            start = time.perf_counter()
            engine.liveness(frame, face)
            one.append(time.perf_counter() - start)
            start = time.perf_counter()
            engine.liveness(frame, faces3)
            three.append((time.perf_counter() - start) / 3)
    specs = engine.manifest.by_role(LIVENESS_ROLE)
    return {
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.liveness_cost --data ../shared/data",
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_1min": {"min": min(loads), "max": max(loads)},
        },
        "runtime": f"{engine.backend.runtime.module} {engine.backend.runtime.version}",
        "threads": threads,
        "commit": _commit(),
        "models": {name: spec.sha256[:8] for name, spec in specs},
        "faces": len(samples),
        "rounds": rounds,
        "ms_per_face_one_face": _stats(one),
        "ms_per_face_three_faces": _stats(three),
        "target_ms": TARGET_MS,
        "met": float(np.median(np.array(one) * 1000)) <= TARGET_MS,
    }


def markdown_section(path: Path = RESULT) -> list[str]:
    """The BENCHMARKS.md section for the last liveness_cost.json; empty when there is none."""
    if not path.is_file():
        return []
    r = json.loads(path.read_text(encoding="utf-8"))
    one, three = r["ms_per_face_one_face"], r["ms_per_face_three_faces"]

    def cell(s: dict) -> str:
        return f"{s['median']:.2f} ({s['p10']:.2f}-{s['p90']:.2f})"

    load = r["machine"]["load_average_1min"]
    return [
        "## Liveness check, per face (int8, CPU)",
        "",
        "`Engine.liveness` on real NUAA frames (the largest face the shipped MTCNN finds; "
        "detection not timed): both 80x80 patches cut and resized, both MiniFASNets invoked, "
        f"scores averaged. {r['faces']} faces x {r['rounds']} rounds, {r['threads']} threads, "
        f"{r['runtime']}, 1-minute load {load['min']:.1f}-{load['max']:.1f} on "
        f"{r['machine']['cpus']} cores, commit {r['commit']}, {r['created_utc']}. Reproduce: "
        "`python -m benchmarks.liveness_cost --data ../shared/data` (part of `make bench`; "
        "raw numbers in `benchmarks/liveness_cost.json`).",
        "",
        "| faces per call | ms per face, median (p10-p90) | best | target (median) | met |",
        "|---|---|---|---|---|",
        f"| 1 | {cell(one)} | {one['min']:.2f} | <= {r['target_ms']:g} ms | "
        f"{'yes' if r['met'] else '**no**'} |",
        f"| 3 | {cell(three)} | {three['min']:.2f} | - | - |",
        "",
        "The best call is the cost when nothing else competes for the cores; the median and "
        "p90 include whatever else the machine was running (load above).",
        "",
    ]


def _render_docs(docs: Path) -> None:
    from benchmarks import report

    results = json.loads((REPO / "benchmarks" / "results.json").read_text(encoding="utf-8"))
    accuracy = report.load_accuracy(REPO / "benchmarks" / "accuracy.json")
    outputs.write(docs / "BENCHMARKS.md", report.markdown(results, accuracy), "--docs")
    print(f"wrote {docs / 'BENCHMARKS.md'}")


@outputs.command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--models", type=Path, default=REPO_MODELS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=FRAMES, help="NUAA frames per label")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--docs", type=Path, help="also re-render DOCS/BENCHMARKS.md")
    args = parser.parse_args(argv)
    check_output(args.out, "--out")  # before the work, not with a traceback after
    if args.docs:
        check_output(args.docs / "BENCHMARKS.md", "--docs")
    result = measure(args.models, args.data, args.threads, args.frames, args.rounds)
    outputs.write_json(args.out, result, "--out")
    print("\n".join(markdown_section(args.out)))
    if args.docs:
        _render_docs(args.docs)


if __name__ == "__main__":
    raise SystemExit(main())
