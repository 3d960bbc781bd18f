"""Roll-corrected FaceNet crops on LFW: measured against the engine's upright box crops.

The engine crops the MTCNN box with a margin and no rotation, as the FaceNet 2018 weights
were trained and evaluated (edge_app/align.py). This asks whether levelling the eyes first
helps: the same box and margin, rotated about the box centre by the angle of the line
through the two eye landmarks, so a tilted head is seen upright.

Step 1 embeds every LFW development image once with the rotated crop (and its mirror
image), the engine's own detection and central face, into a cache in the format of
`python -m benchmarks.centering embed` (about 7 minutes on 2 idle cores):

    .venv/bin/python -m benchmarks.alignment embed --cache /tmp/lfw_roll.npz

Step 2 scores both caches the same way, each centred on its own DevTrain mean: the LFW
development pairs (DevTest at the DevTrain threshold, 10-fold on both) and the door
simulation with the shipped cohort normalisation and templates (rule derived on the DevTrain
simulation people, checked on DevTest people over 5 seeds); writes benchmarks/alignment.json:

    .venv/bin/python -m benchmarks.alignment report --upright /tmp/lfw_raw.npz \\
        --roll /tmp/lfw_roll.npz
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from benchmarks import outputs
from benchmarks.centering import all_dev_images
from benchmarks.cohort import (
    Data,
    door_check,
    normaliser_of,
    rule_of,
    shipped_choice,
    two_step_args,
)
from converter.recognition import derive_from_embeddings
from edge_app.align import FACENET_SIZE
from edge_app.engine import Engine
from edge_app.images import read_image
from edge_app.lfw import development_scores, labelled_face, read_pairs
from edge_app.paths import REPO_ROOT
from edge_app.reports import check_output


def roll_crop(frame: np.ndarray, box: np.ndarray, landmarks: np.ndarray, crop_margin: float):
    """The box grown by crop_margin x its width (as edge_app.align does), rotated
    about its centre so the eye landmarks are level, stretched to FACENET_SIZE square."""
    (left_x, left_y), (right_x, right_y) = landmarks[0], landmarks[1]
    degrees = float(np.degrees(np.arctan2(right_y - left_y, right_x - left_x)))
    x1, y1, x2, y2 = (float(v) for v in box)
    grow = (x2 - x1) * crop_margin
    width, height = (x2 - x1) + grow, (y2 - y1) + grow
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    rotate = np.vstack([cv2.getRotationMatrix2D((cx, cy), degrees, 1.0), [0.0, 0.0, 1.0]])
    sx, sy = FACENET_SIZE / width, FACENET_SIZE / height
    scale = np.array([[sx, 0, FACENET_SIZE / 2 - cx * sx], [0, sy, FACENET_SIZE / 2 - cy * sy]])
    return cv2.warpAffine(
        frame,
        scale @ rotate,
        (FACENET_SIZE, FACENET_SIZE),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def cmd_embed(args: argparse.Namespace) -> int:
    lfw = args.data / "lfw"
    names = all_dev_images(lfw)
    engine = Engine.open(backend="cpu", threads=args.threads)
    raw, mirror = [], []
    start = time.perf_counter()
    for name in tqdm(names, desc="embedding LFW, roll-corrected", unit="image", disable=None):
        frame = read_image(lfw / "images" / name)
        face, _ = labelled_face(engine.detect(frame), frame.shape[1], frame.shape[0])
        crop = roll_crop(frame, face.boxes[0], face.landmarks[0], engine.crop_margin)
        raw.append(engine.embed_crops(crop[None])[0])
        mirror.append(engine.embed_crops(np.ascontiguousarray(crop[None, :, ::-1]))[0])
    cache = {
        "names": np.array(names),
        "raw": np.stack(raw).astype(np.float32),
        "mirror": np.stack(mirror).astype(np.float32),
        "seconds": np.array(time.perf_counter() - start),
    }
    tmp = args.cache.with_suffix(".tmp.npz")
    np.savez(tmp, **cache)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    tmp.replace(args.cache)
    print(f"wrote {args.cache}: {len(names)} images in {float(cache['seconds']):.0f} s")
    return 0


def score(data: Data, chosen: dict[str, Any], seeds: int) -> dict[str, Any]:
    lfw_pairs = [read_pairs(data.lfw / n) for n in ("pairsDevTrain.txt", "pairsDevTest.txt")]
    normaliser = normaliser_of(data, chosen)
    rule = rule_of(
        derive_from_embeddings(
            data.rows(data.sim_names),
            data.sim_names,
            mirrors=data.rows(data.sim_names, mirrored=True),
            normaliser=normaliser,
        )
    )
    test, mirrors = data.rows(data.test), data.rows(data.test, mirrored=True)
    runs = [door_check(test, mirrors, data.test, rule, normaliser, s) for s in range(seeds)]
    return {
        "pairs": development_scores(data.embeddings, data.index, *lfw_pairs),
        "devtrain_rule": rule,
        "devtest_identified_per_seed": [round(r["identified"], 5) for r in runs],
        "devtest_identified": round(float(np.mean([r["identified"] for r in runs])), 5),
        "devtest_stranger_accept": round(float(np.mean([r["stranger_accept"] for r in runs])), 6),
        "devtest_oracle_identified": round(
            float(np.mean([r["oracle_identified"] for r in runs])), 5
        ),
    }


def cmd_report(args: argparse.Namespace) -> int:
    check_output(args.out, "--out")  # before the minutes of work, not with a traceback after
    chosen = shipped_choice()
    report: dict[str, Any] = {"cohort": chosen, "seeds": args.seeds}
    for label, path in (("upright (shipped)", args.upright), ("roll-corrected", args.roll)):
        # each crop centred on its own DevTrain mean (the shipped one is the upright crop's)
        report[label] = score(Data(path, args.data / "lfw", None), chosen, args.seeds)
        print(f"{label}: {report[label]}", flush=True)
    outputs.write_json(args.out, report, "--out")
    print(f"wrote {args.out}")
    return 0


@outputs.command
def main(argv: list[str] | None = None) -> int:
    args = two_step_args(
        __doc__,
        (
            "embed LFW with roll-corrected crops into a cache",
            "score the upright and roll-corrected caches",
        ),
        (("upright", "benchmarks.centering cache"), ("roll", "this script's embed cache")),
        REPO_ROOT / "benchmarks" / "alignment.json",
        argv,
    )
    return cmd_embed(args) if args.step == "embed" else cmd_report(args)


if __name__ == "__main__":
    sys.exit(main())
