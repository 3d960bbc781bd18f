"""The one-person gate of enrolment: where its floor sits, what it costs and what it catches.

Enrolment refuses a photo whose face looks like none of the person's other photos (cosine
below edge_app.quality.SAME_PERSON_COSINE to every one of them and their mirrors): photos of
two people offered under one name would otherwise let either in as that name.

Step 1 embeds every LFW development image that passes the enrolment gates (the engine's own
detection, the dominant face, its centred unit embedding and its mirror's, as enrolment
stores them) into a cache:

    .venv/bin/python -m benchmarks.same_person embed --cache /tmp/same_person.npz

Step 2 scores every DevTrain and DevTest pair whose two photos pass the gates as the gate
does (the best of each photo's cosine to the other and to the other's mirror) and reports,
per candidate floor, the genuine pairs it would refuse (the cost: a person's own two photos
judged to be two people) and the different-person pairs it catches (what it buys: two people
offered under one name, refused). The floor is chosen on DevTrain only, as the highest one
that refuses at most MAX_GENUINE_REFUSED of its genuine pairs; DevTest checks it. It also
reports each photo's cosine to its own mirror image (the same face: the gallery takes a
stored mirror below edge_app.quality.MIRROR_SAME_FACE for another face's):

    .venv/bin/python -m benchmarks.same_person report --cache /tmp/same_person.npz
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks import outputs
from edge_app.engine import Engine
from edge_app.images import load_photo
from edge_app.lfw import PairList, read_pairs
from edge_app.paths import REPO_ROOT, SHARED_DATA
from edge_app.quality import MIRROR_SAME_FACE, SAME_PERSON_COSINE, Rejection, enrolment_face
from edge_app.reports import check_output

RESULT = REPO_ROOT / "benchmarks" / "same_person.json"
# The share of a person's own photo pairs the gate may refuse: one in a hundred, the same
# order as the other gates' refusals of usable LFW photos (docs/GALLERY.md).
MAX_GENUINE_REFUSED = 0.01
FLOORS = np.round(np.arange(0.0, 0.41, 0.02), 2)


def cmd_embed(args: argparse.Namespace) -> None:
    lfw = args.data / "lfw"
    train = read_pairs(lfw / "pairsDevTrain.txt")
    test = read_pairs(lfw / "pairsDevTest.txt")
    names = sorted(set(train.images) | set(test.images))
    engine = Engine.open(backend="cpu", threads=args.threads)
    embedding = np.full((len(names), 512), np.nan, np.float32)
    mirror = np.full((len(names), 512), np.nan, np.float32)
    start = time.perf_counter()
    for i, name in enumerate(tqdm(names, desc="embedding", unit="image", disable=None)):
        frame = load_photo(lfw / "images" / name).pixels
        face = enrolment_face(frame, engine.detect(frame))
        if isinstance(face, Rejection):
            continue
        embedding[i] = engine.embed(frame, face)[0]
        mirror[i] = engine.embed(frame, face, mirror=True)[0]
    tmp = args.cache.with_suffix(".tmp.npz")
    np.savez(tmp, names=np.array(names), embedding=embedding, mirror=mirror)
    tmp.replace(args.cache)
    print(f"wrote {args.cache}: {len(names)} images in {time.perf_counter() - start:.0f} s")


def pair_scores(cache: Any, pairs: PairList) -> tuple[np.ndarray, np.ndarray]:
    """(score, same) of the pairs whose two photos passed the gates; the score as the gate
    computes it (edge_app.quality.photo_links): the best of each photo's cosine to the other
    and to the other's mirror image."""
    row = {str(n): i for i, n in enumerate(cache["names"])}
    a = np.array([row[n] for n in pairs.first])
    b = np.array([row[n] for n in pairs.second])
    emb, mir = cache["embedding"], cache["mirror"]
    usable = ~np.isnan(emb[a, 0]) & ~np.isnan(emb[b, 0])
    a, b = a[usable], b[usable]
    score = np.max(
        [
            np.sum(emb[a] * emb[b], axis=1),
            np.sum(emb[a] * mir[b], axis=1),
            np.sum(emb[b] * mir[a], axis=1),
        ],
        axis=0,
    )
    return score, pairs.same[usable]


def mirror_cosines(cache: Any) -> dict[str, Any]:
    """Each gated photo's own embedding against its mirror image's: the same face, so far
    above MIRROR_SAME_FACE, the floor below which the gallery takes a stored mirror for
    another face's."""
    usable = ~np.isnan(cache["embedding"][:, 0])
    cosine = np.sum(cache["embedding"][usable] * cache["mirror"][usable], axis=1)
    return {
        "photos": int(usable.sum()),
        "min": round(float(cosine.min()), 4),
        "p0.1": round(float(np.percentile(cosine, 0.1)), 4),
        "median": round(float(np.median(cosine)), 4),
        "floor": MIRROR_SAME_FACE,
        "below_floor": int(np.sum(cosine < MIRROR_SAME_FACE)),
    }


def sweep(score: np.ndarray, same: np.ndarray) -> list[dict[str, Any]]:
    genuine, different = score[same], score[~same]
    return [
        {
            "floor": float(floor),
            "genuine_refused": int(np.sum(genuine < floor)),
            "genuine": int(len(genuine)),
            "different_caught": int(np.sum(different < floor)),
            "different": int(len(different)),
        }
        for floor in FLOORS
    ]


def cmd_report(args: argparse.Namespace) -> None:
    check_output(args.out, "--out")  # before the work, not with a traceback after
    lfw = args.data / "lfw"
    cache = np.load(args.cache)
    sets = {
        "DevTrain": pair_scores(cache, read_pairs(lfw / "pairsDevTrain.txt")),
        "DevTest": pair_scores(cache, read_pairs(lfw / "pairsDevTest.txt")),
    }
    tables = {name: sweep(*scores) for name, scores in sets.items()}
    allowed = [
        row["floor"]
        for row in tables["DevTrain"]
        if row["genuine_refused"] <= MAX_GENUINE_REFUSED * row["genuine"]
    ]
    chosen = max(allowed)
    result = {
        "max_genuine_refused": MAX_GENUINE_REFUSED,
        "chosen_on_devtrain": chosen,
        "shipped": SAME_PERSON_COSINE,
        "images": int(len(cache["names"])),
        "images_refused_by_gates": int(np.isnan(cache["embedding"][:, 0]).sum()),
        "tables": tables,
        "mirror_cosine": mirror_cosines(cache),
    }
    outputs.write_json(args.out, result, "--out", indent=1)
    mirror = result["mirror_cosine"]
    print(
        f"own embedding vs mirror image's, {mirror['photos']} photos: min {mirror['min']:.3f}, "
        f"median {mirror['median']:.3f}; {mirror['below_floor']} below {MIRROR_SAME_FACE}"
    )
    print(f"floor chosen on DevTrain: {chosen:.2f} (shipped {SAME_PERSON_COSINE:.2f})")
    print("| floor | set | own pairs refused | different-person pairs caught |")
    print("|---|---|---|---|")
    for floor in sorted({chosen, SAME_PERSON_COSINE}):
        for name, table in tables.items():
            [row] = [r for r in table if abs(r["floor"] - floor) < 1e-9]
            print(
                f"| {floor:.2f} | {name} | {row['genuine_refused']}/{row['genuine']} "
                f"({100 * row['genuine_refused'] / row['genuine']:.1f}%) | "
                f"{row['different_caught']}/{row['different']} "
                f"({100 * row['different_caught'] / row['different']:.1f}%) |"
            )


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/edge-door-same-person.npz"))
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("step", choices=["embed", "report"])
    args = parser.parse_args(argv)
    {"embed": cmd_embed, "report": cmd_report}[args.step](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
