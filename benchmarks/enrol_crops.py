"""Enrolment from several crops of each photo: measured against the one crop enrolment stores.

Enrolment stores each photo's embedding and its mirror image's: one FaceNet crop each (the
MTCNN box grown by the FaceNet crop margin, edge_app/align.py). This asks whether a template
averaged over a few crops of the same photo (other crop margins, the box shifted a little)
matches the person's later visits better. It would cost nothing at the door: the visitor is
still embedded from one crop, and the gallery keeps one template (and its mirror) per photo.

Step 1 embeds every LFW development image with each extra crop and its mirror image (the
engine's own detection and central face, detection run once per image), into one cache
(about 25 minutes on 2 cores):

    .venv/bin/python -m benchmarks.enrol_crops embed --cache /tmp/lfw_enrol_crops.npz

Step 2 scores each set of crops in the door simulation with the shipped cohort normalisation
and person centroids: the gallery templates are the unit mean of the chosen crops' centred
embeddings (the shipped crop always included), the probes and strangers the shipped crop
alone; each variant's rule is derived on the DevTrain simulation people and checked, fixed,
on DevTest people over SEEDS seeds (benchmarks/cohort.py's derive_and_check). Writes
benchmarks/enrol_crops.json:

    .venv/bin/python -m benchmarks.enrol_crops report --shipped /tmp/edge-door-lfw-raw.npz \\
        --crops /tmp/lfw_enrol_crops.npz
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks import outputs
from benchmarks.centering import all_dev_images, load_cache
from benchmarks.centroid import shipped_cohort
from benchmarks.cohort import Data, derive_and_check, normaliser_of, two_step_args
from edge_app.centering import centre, load_mean, unit
from edge_app.engine import Engine
from edge_app.images import read_image
from edge_app.lfw import labelled_face
from edge_app.manifest import MANIFEST_NAME
from edge_app.paths import REPO_ROOT
from edge_app.reports import check_output, write_report

MODELS = REPO_ROOT / "models" / "tflite"
# name: (crop margin as a share of the box width, shift right, shift down, as shares of it)
CROPS = {
    "margin 0.1": (0.1, 0.0, 0.0),
    "margin 0.3": (0.3, 0.0, 0.0),
    "shift right": (0.2, 0.05, 0.0),
    "shift down": (0.2, 0.0, 0.05),
}
# label: the extra crops averaged into each template (with the shipped one)
VARIANTS = {
    "one crop (shipped)": (),
    "+ margins 0.1 and 0.3": ("margin 0.1", "margin 0.3"),
    "+ margin 0.1": ("margin 0.1",),
    "+ margin 0.3": ("margin 0.3",),
    "+ shifts": ("shift right", "shift down"),
    "+ margins and shifts": tuple(CROPS),
}


def key(crop: str, mirrored: bool) -> str:
    return ("mirror " if mirrored else "raw ") + crop


def cmd_embed(args: argparse.Namespace) -> int:
    lfw = args.data / "lfw"
    names = all_dev_images(lfw)
    engine = Engine.open(backend="cpu", threads=args.threads)
    out: dict[str, list[np.ndarray]] = {key(c, m): [] for c in CROPS for m in (False, True)}
    start = time.perf_counter()
    for name in tqdm(names, desc="embedding LFW, extra crops", unit="image", disable=None):
        frame = read_image(lfw / "images" / name)
        face, _ = labelled_face(engine.detect(frame), frame.shape[1], frame.shape[0])
        width = face.boxes[:, 2] - face.boxes[:, 0]
        for crop, (margin, right, down) in CROPS.items():
            shift = np.stack([width * right, width * down] * 2, axis=1).astype(np.float32)
            shifted = replace(face, boxes=face.boxes + shift)
            engine.crop_margin = margin
            for mirrored in (False, True):
                out[key(crop, mirrored)].append(engine.embed_raw(frame, shifted, mirrored)[0])
    cache: dict[str, np.ndarray] = {k: np.stack(v).astype(np.float32) for k, v in out.items()}
    tmp = args.cache.with_suffix(".tmp.npz")
    cache["names"] = np.array(names)
    cache["seconds"] = np.array(time.perf_counter() - start)
    np.savez(tmp, **cache)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    tmp.replace(args.cache)
    print(f"wrote {args.cache}: {len(names)} images in {time.perf_counter() - start:.0f} s")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    check_output(args.out, "--out")  # before the minutes of work, not with a traceback after
    data = Data(args.shipped, args.data / "lfw", args.models)
    chosen = shipped_cohort(args.models)
    normaliser = normaliser_of(data, chosen)  # the shipped cohort: one crop, as shipped
    manifest = json.loads((args.models / MANIFEST_NAME).read_text())
    mean = load_mean(args.models, manifest["preprocessing"])
    crops = load_cache(args.crops)
    if [str(n) for n in crops["names"]] != list(data.index):
        print(f"error: {args.crops} holds other images than {args.shipped}", file=sys.stderr)
        return 2
    extra = {k: centre(v, mean) for k, v in crops.items() if k not in ("names", "seconds")}
    shipped, shipped_mirrors = data.embeddings.copy(), data.mirrors.copy()
    variants: dict[str, Any] = {}
    base: np.ndarray | None = None
    for label, chosen_crops in VARIANTS.items():
        data.embeddings = unit(shipped + sum((extra[key(c, False)] for c in chosen_crops), 0))
        data.mirrors = unit(shipped_mirrors + sum((extra[key(c, True)] for c in chosen_crops), 0))
        rule, summary = derive_and_check(data, normaliser, args.seeds, True, probes=shipped)
        per_seed = np.array(summary["devtest_identified_per_seed"])
        base = per_seed if base is None else base
        variants[label] = {
            "devtrain_rule": rule,
            **summary,
            "devtest_gain_vs_shipped_per_seed": [round(float(g), 5) for g in per_seed - base],
        }
        print(f"{label}: {variants[label]}", flush=True)
    write_report(args.out, {"cohort": chosen, "seeds": args.seeds, "variants": variants}, "--out")
    print(f"wrote {args.out}")
    return 0


@outputs.command
def main(argv: list[str] | None = None) -> int:
    args = two_step_args(
        __doc__,
        ("embed LFW with the extra crops into a cache", "score each set of enrolment crops"),
        (("shipped", "benchmarks.centering cache"), ("crops", "this script's embed cache")),
        REPO_ROOT / "benchmarks" / "enrol_crops.json",
        argv,
        models=True,
    )
    return cmd_embed(args) if args.step == "embed" else cmd_report(args)


if __name__ == "__main__":
    sys.exit(main())
