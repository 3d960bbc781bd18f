"""Where enrolment's cut_by_edge gate sits: tight crops against faces cut by the photo's edge.

LFW photos that pass every other enrolment gate, cropped five ways: to the face box (margin
0, a tight profile picture) and to the box grown by 10% of its side, and with the left 15%,
25% or 33% of the face box cut off by the photo's edge. For each: how far the detected box
runs past the edge (as a share of its shorter side), the template's cosine to the uncut
photo's, and the share each candidate floor of edge_app.quality.CUT_SHARE_MAX refuses:

    .venv/bin/python -m benchmarks.edge_cut     # writes benchmarks/edge_cut.json, ~2 min
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks import outputs
from edge_app.engine import Engine
from edge_app.images import read_image
from edge_app.paths import REPO_ROOT, SHARED_DATA
from edge_app.quality import CUT_SHARE_MAX, Rejection, cut_share, enrolment_face
from edge_app.reports import check_output

RESULT = REPO_ROOT / "benchmarks" / "edge_cut.json"
FLOORS = (0.0, 0.03, 0.05, 0.08, 0.1)
MARGINS = {"tight, margin 0": 0.0, "tight, margin 10%": 0.1}
CUTS = {"cut 15%": 0.15, "cut 25%": 0.25, "cut 33%": 0.33}


def variants(image: np.ndarray, box: np.ndarray) -> dict[str, np.ndarray]:
    x1, y1, x2, y2 = box
    side = x2 - x1
    height, width = image.shape[:2]
    found = {}
    for name, margin in MARGINS.items():
        grow = side * margin
        top, left = max(0, int(y1 - grow)), max(0, int(x1 - grow))
        found[name] = image[top : min(height, int(y2 + grow)), left : min(width, int(x2 + grow))]
    for name, cut in CUTS.items():
        found[name] = image[:, int(x1 + side * cut) :]
    return {name: np.ascontiguousarray(v) for name, v in found.items()}


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--photos", type=int, default=120)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    check_output(args.out, "--out")  # before the work, not with a traceback after
    engine = Engine.open(backend="cpu")
    photos = sorted((args.data / "lfw" / "images").rglob("*.jpg"))
    random.Random(args.seed).shuffle(photos)
    start = time.perf_counter()
    measured: dict[str, list[tuple[float, float]]] = {n: [] for n in (*MARGINS, *CUTS)}
    for path in tqdm(photos[: args.photos], unit="photo", disable=None):
        image = read_image(path)
        face = enrolment_face(image, engine.detect(image))
        if isinstance(face, Rejection):
            continue
        whole = engine.embed(image, face)[0]
        for name, variant in variants(image, face.boxes[0]).items():
            faces = engine.detect(variant)
            if len(faces) == 0:
                continue
            found = faces[int(np.argmax(faces.sizes))]
            cosine = float(engine.embed(variant, found)[0] @ whole)
            measured[name].append((float(cut_share(found, variant.shape)[0]), cosine))
    result: dict[str, Any] = {"photos": args.photos, "seed": args.seed, "floor": CUT_SHARE_MAX}
    for name, pairs in measured.items():
        share, cosine = np.array(pairs).T
        result[name] = {
            "faces": len(pairs),
            "cosine_to_uncut_median": round(float(np.median(cosine)), 3),
            "cosine_to_uncut_p10": round(float(np.percentile(cosine, 10)), 3),
            "share_past_edge_median": round(float(np.median(share)), 3),
            "refused_at": {f"{f:g}": int(np.sum(share > f)) for f in FLOORS},
        }
    result["seconds"] = round(time.perf_counter() - start, 1)
    outputs.write_json(args.out, result)
    print("| crop | faces | cosine to uncut, median | refused at the floor |")
    print("|---|---|---|---|")
    for name in measured:
        row = result[name]
        refused = row["refused_at"][f"{CUT_SHARE_MAX:g}"]
        print(
            f"| {name} | {row['faces']} | {row['cosine_to_uncut_median']:.3f} | "
            f"{refused} ({100 * refused / max(row['faces'], 1):.0f}%) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
