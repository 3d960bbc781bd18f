"""What a crowd in view costs the door per frame, with and without `[tracking] faces_per_frame`.

    python -m benchmarks.crowd --data ../shared/data

Each group photo of `detection/crowds/` is one camera frame as the daemon sees it: scaled
down to the 640x480 detection stream (camera.fit_detection_frame), the faces found there
(the shipped engine, cascade auto), the ones the daemon would judge (whole in the frame, not
outsized by a face in front: quality.whole_faces and presented_faces), and those embedded
from the full photo as the main stream. A frame where every face is new embeds all of them
("all"), or the `faces_per_frame` largest (daemon.largest_first, the default 4, "capped").
Median of ROUNDS timed runs per photo, after one untimed one. Writes benchmarks/crowd.json
and prints the table that docs/BENCHMARKS.md shows; `make bench` runs it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import outputs
from edge_app.camera import fit_detection_frame
from edge_app.config import TrackingConfig
from edge_app.daemon import largest_first
from edge_app.engine import Engine
from edge_app.faces import Faces
from edge_app.images import read_image
from edge_app.quality import presented_faces, whole_faces
from edge_app.reports import check_output

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "crowd.json"
DETECTION_SIZE = (640, 480)
ROUNDS = 3


def median_ms(call: Any, *args: Any) -> float:
    """Median ms of call(*args) over ROUNDS timed calls, after one untimed one."""
    call(*args)
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        call(*args)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def markdown_section(path: Path = RESULT) -> list[str]:
    """The BENCHMARKS.md section for the last crowd.json; empty when there is none."""
    if not path.is_file():
        return []
    r = json.loads(path.read_text(encoding="utf-8"))
    cap = r["faces_per_frame"]
    crowded = sorted(
        (row for row in r["photos"] if row["judged"] > cap), key=lambda row: -row["embed_all_ms"]
    )
    lines = [
        "## A crowd in view (`[tracking] faces_per_frame`)",
        "",
        "One frame in which every face is new, from each group photo of `detection/crowds/` "
        f"with more than {cap} faces the daemon judges: detection on the 640x480 stream, then "
        f"FaceNet on every judged face (all) or on the {cap} largest (capped, the default "
        f"`faces_per_frame = {cap}`). Cascade {r['cascade']}, median of {r['rounds']} runs, "
        f"1-minute load {min(r['load_average']):.1f}-{max(r['load_average']):.1f} on this "
        f"{r['machine']} machine, {r['when']}. Reproduce: `python -m benchmarks.crowd --data "
        "../shared/data` (part of `make bench`; raw numbers in `benchmarks/crowd.json`).",
        "",
        "| photo | faces found | judged | detect | embed all | "
        f"embed the {cap} largest | frame, all | frame, capped |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in crowded:
        detect = row["detect_ms"]
        lines.append(
            f"| {row['photo']} | {row['faces']} | {row['judged']} | {detect:.0f} ms "
            f"| {row['embed_all_ms']:.0f} ms | {row['embed_capped_ms']:.0f} ms "
            f"| {detect + row['embed_all_ms']:.0f} ms | {detect + row['embed_capped_ms']:.0f} ms |"
        )
    lines += [
        "",
        "Without the cap a frame's FaceNet time grows with every face in view, so a group "
        "in the hallway or a poster of faces held to the camera slows every frame in "
        "proportion, and more on a Pi's CPU, where FaceNet costs several times what it does "
        f"here. With it a frame embeds at most {cap} faces, the largest first, since the "
        "closest face is the one at the door; the rest wait for later frames (DAEMON.md).",
        "",
    ]
    return lines


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    check_output(args.out, "--out")  # before the work, not with a traceback after
    photos = sorted((args.data / "detection" / "crowds").glob("*.jpg"))
    if not photos:
        raise SystemExit(f"no group photos in {args.data / 'detection' / 'crowds'}")
    cap = TrackingConfig().faces_per_frame
    engine = Engine.open(backend="cpu", cascade="auto")
    rows = []
    for photo in photos:
        image = read_image(photo)
        small, main = fit_detection_frame(image, DETECTION_SIZE)
        crop_image = small if main is None else main
        faces = engine.detect(small)
        due = np.flatnonzero(whole_faces(faces, small.shape) & presented_faces(faces))
        scale = np.array(
            [crop_image.shape[1] / small.shape[1], crop_image.shape[0] / small.shape[0]],
            np.float32,
        )
        judged = Faces(
            faces.boxes[due] * np.tile(scale, 2), faces.scores[due], faces.landmarks[due] * scale
        )
        kept = judged[np.searchsorted(due, largest_first(due, faces.sizes, cap))]
        rows.append(
            {
                "photo": photo.name,
                "faces": len(faces),
                "judged": len(judged),
                "embedded_capped": len(kept),
                "detect_ms": round(median_ms(engine.detect, small), 1),
                "embed_all_ms": round(median_ms(engine.embed, crop_image, judged), 1),
                "embed_capped_ms": round(median_ms(engine.embed, crop_image, kept), 1),
            }
        )
        print(f"{photo.name}: {rows[-1]}", flush=True)
    results = {
        "faces_per_frame": cap,
        "rounds": ROUNDS,
        "cascade": engine.cascade_choice.chosen if engine.cascade_choice else "int8",
        "photos": rows,
        **outputs.conditions(),
    }
    outputs.write_json(args.out, results, "--out")
    print("\n".join(markdown_section(args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
