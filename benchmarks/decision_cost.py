"""What per-visit decisions cost per face at the door: track pooling, mirrors, cohort scores,
person centroids, site centring.

    python -m benchmarks.decision_cost --data ../shared/data

Both changes sit after FaceNet, so they cannot change the detection or FaceNet time; what
they add is measured here against the frame they ride on:
  - before: the frame's embedding matched against a gallery of photos (`[policy] evidence =
    "frame"`, one row per photo, raw cosine scores);
  - now: the embedding added to its track's pool (edge_app.fusion.TrackPool) and the pool
    matched against a gallery that stores each photo with its mirror image (two rows per
    photo), plus each person's centroid (one more row per person) and scores normalised
    against the shipped cohort (edge_app/cohort.py), as the manifest says, after site
    centring (edge_app.matching.site_direction, on by default), together with the frame's
    own embedding, for whether its face could be the person alone (a track is recognised
    and opens only on such a frame, edge_app/policy.py).
Galleries of 20 and 100 people x 2 photos (unit vectors, those of `now` sharing one direction
as one camera's faces do, so that site centring has something to remove; the matching cost
depends only on the sizes), the shipped Matcher and settings. The frame is one real 640x480
frame with one face (an LFW photo on the visit clips' hallway), detection + FaceNet through
the shipped engine (cascade auto). Calls alternate between the variants, ROUNDS rounds;
medians reported. Writes benchmarks/decision_cost.json; `make bench` runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import outputs
from edge_app.config import RecognitionConfig
from edge_app.engine import Engine
from edge_app.fusion import TrackPool, face_weights
from edge_app.gallery import EMBEDDING_DIM, GalleryMatrix
from edge_app.images import read_image
from edge_app.matching import Matcher, MatchSettings
from edge_app.reports import check_output
from edge_app.visit_clips import background, head, paste

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "decision_cost.json"
PHOTOS = 2
CALLS = 2000  # decision calls per variant per round
FRAMES = 20  # engine frames per round
ROUNDS = 5
SHARED = 0.6  # of one common direction in the `now` galleries (NUAA's people share about 0.66)


def gallery(
    people: int, mirrors: bool, rng: np.random.Generator, shared: float = 0.0
) -> GalleryMatrix:
    """Random unit rows; `shared` of them one common direction, as one camera's faces have."""
    rows = people * PHOTOS * (2 if mirrors else 1)
    vectors = rng.standard_normal((rows, EMBEDDING_DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    if shared:
        common = rng.standard_normal(EMBEDDING_DIM).astype(np.float32)
        vectors = shared * common / np.linalg.norm(common) + np.sqrt(1 - shared**2) * vectors
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    person = np.repeat(np.arange(people, dtype=np.int32), rows // people)
    return GalleryMatrix(vectors, person, tuple(f"person {i}" for i in range(people)))


def time_calls(call: Any, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        call()
    return (time.perf_counter() - start) / count


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    check_output(args.out, "--out")  # before the work, not with a traceback after
    engine = Engine.open(backend="cpu", cascade="auto")
    door = RecognitionConfig()  # the door's defaults: site centring on
    settings = MatchSettings.from_recognition(
        engine.manifest.recognition, site_centring=door.site_centring
    )
    photo = args.data / "lfw" / "images" / "Emma_Watson" / "Emma_Watson_0003.jpg"
    frame = background()
    rgb, alpha = head(read_image(photo), 230)
    paste(frame, rgb, alpha, 200, 90)
    faces = engine.detect(frame)
    if len(faces) != 1:
        raise SystemExit(f"expected one face in the benchmark frame, found {len(faces)}")
    embedding = engine.embed(frame, faces)
    weights = face_weights(faces)
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {"rounds": ROUNDS, "calls": CALLS, "people": {}}
    frame_ms: list[float] = []
    for people in (20, 100):
        raw = dataclasses.replace(settings, normalisation=None, centroid=False, site_share=0.0)
        before = Matcher(gallery(people, False, rng), raw)
        after = Matcher(gallery(people, True, rng, SHARED), settings, engine.cohort)
        if not np.any(after.site):
            raise SystemExit("site centring found nothing to remove: the benchmark needs it on")
        pool = TrackPool()

        def shipped(matcher: Matcher = after, pool: TrackPool = pool) -> None:
            # The pool and the frame's own face (could it be them alone: Vote.alone), in one
            # product, as Recognizer.match does.
            matcher.identify(np.concatenate([pool.add([1], embedding, weights), embedding]))

        def previous(matcher: Matcher = before) -> None:
            matcher.identify(embedding)

        old, new = [], []
        for _ in range(ROUNDS):
            old.append(time_calls(previous, CALLS) * 1e6)
            new.append(time_calls(shipped, CALLS) * 1e6)
            if people == 20:
                for _ in range(FRAMES):
                    start = time.perf_counter()
                    engine.embed(frame, engine.detect(frame))
                    frame_ms.append((time.perf_counter() - start) * 1e3)
        results["people"][str(people)] = {
            "before_us": round(float(np.median(old)), 1),
            "now_us": round(float(np.median(new)), 1),
            "added_us": round(float(np.median(np.array(new) - np.array(old))), 1),
        }
    frame_median = float(np.median(frame_ms))
    results["frame_ms"] = round(frame_median, 2)
    for row in results["people"].values():
        row["added_share_of_frame"] = round(row["added_us"] / 1e3 / frame_median, 5)
    results.update(
        cascade=engine.cascade_choice.chosen if engine.cascade_choice else "int8",
        load_average=[round(x, 2) for x in os.getloadavg()],
        machine=platform.machine(),
        when=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    outputs.write_json(args.out, results, "--out")
    print(f"frame (detect + FaceNet, one face): median {frame_median:.1f} ms")
    print(
        "| gallery | before: match the frame, photos only | now: pool + match, mirrors, "
        "centroids, cohort, site centring | added per face | share of the frame |"
    )
    print("|---|---|---|---|---|")
    for people, row in results["people"].items():
        print(
            f"| {people} people x {PHOTOS} photos | {row['before_us']} us | {row['now_us']} us | "
            f"{row['added_us']} us | {100 * row['added_share_of_frame']:.2f}% |"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
