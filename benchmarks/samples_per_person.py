"""How the number of photos enrolled per person moves identification and stranger acceptance.

The threshold in models/tflite/manifest.json was derived on galleries of 2 photos per person
(each stored with its mirror image). With the `best` aggregate a person's score is their best
template, so every photo more is one more chance for a stranger's face to come near one of
them, and one more view for the person's own face to find. This measures both, on the door's
own matcher (cohort S-norm, person centroid, site centring, the manifest's threshold):

- gallery: the LFW people with at least PHOTOS_NEEDED photos, each enrolled from their first
  n photos (n = 1 .. MAX_ENROLLED, sorted by file name), each photo with its mirror image;
- genuine probes: each person's photos after the first MAX_ENROLLED, the same for every n;
- strangers: every photo of the LFW people with fewer photos (none of them is enrolled).

Embeddings come from the cache `python -m benchmarks.centering embed` writes (the shipped
int8 engine's FaceNet on each image's central face, raw and mirrored), centred on the
shipped mean as the engine does. These people and strangers mix DevTrain and DevTest: the
figures show a trend with n, not the door's calibrated rates.

    python -m benchmarks.samples_per_person --raw /work/cache/lfw_raw.npz

Writes benchmarks/samples_per_person.json.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import outputs
from edge_app.centering import centre, load_mean
from edge_app.cohort import load_cohort
from edge_app.gallery import GalleryMatrix
from edge_app.lfw import wilson
from edge_app.manifest import load_manifest
from edge_app.matching import Matcher, MatchSettings
from edge_app.reports import check_output

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "samples_per_person.json"
MAX_ENROLLED = 5
PHOTOS_NEEDED = MAX_ENROLLED + 1


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", type=Path, required=True, help="benchmarks.centering cache")
    parser.add_argument("--models", type=Path, default=REPO / "models" / "tflite")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    check_output(args.out, "--out")  # before the work, not with a traceback after
    try:
        cache = np.load(args.raw, allow_pickle=False)
        names, raw, mirror = cache["names"], cache["raw"], cache["mirror"]
    except (OSError, KeyError, ValueError) as error:
        sys.exit(f"{args.raw}: not a benchmarks.centering cache ({error})")
    manifest = load_manifest(args.models)
    mean = load_mean(args.models, manifest.preprocessing)
    cohort = load_cohort(args.models, manifest.recognition)
    settings = MatchSettings.from_recognition(manifest.recognition)
    faces, mirrors = centre(raw, mean), centre(mirror, mean)

    photos: dict[str, list[int]] = defaultdict(list)
    for index in np.argsort(names):
        photos[str(names[index]).split("/")[0]].append(int(index))
    people = sorted(p for p, rows in photos.items() if len(rows) >= PHOTOS_NEEDED)
    strangers = np.array(
        [i for p, rows in photos.items() if len(rows) < PHOTOS_NEEDED for i in rows], np.intp
    )
    genuine = [(k, i) for k, p in enumerate(people) for i in photos[p][MAX_ENROLLED:]]
    probe_rows = np.array([i for _, i in genuine], np.intp)
    probe_truth = [people[k] for k, _ in genuine]
    print(
        f"{len(people)} people with >= {PHOTOS_NEEDED} photos, {len(genuine)} genuine probes, "
        f"{len(strangers)} stranger photos; threshold {settings.threshold}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    for n in range(1, MAX_ENROLLED + 1):
        embeddings, owner = [], []
        for k, person in enumerate(people):
            for i in photos[person][:n]:
                embeddings += [faces[i], mirrors[i]]
                owner += [k, k]
        matrix = GalleryMatrix(
            np.stack(embeddings).astype(np.float32), np.array(owner, np.int32), tuple(people)
        )
        matcher = Matcher(matrix, settings, cohort)
        found = matcher.identify(faces[probe_rows]).names
        identified = sum(name == truth for name, truth in zip(found, probe_truth, strict=True))
        wrong = sum(
            name not in (None, truth) for name, truth in zip(found, probe_truth, strict=True)
        )
        let_in = matcher.identify(faces[strangers]).names
        accepted = sum(name is not None for name in let_in)
        low, high = wilson(accepted, len(strangers))
        row = {
            "photos_per_person": n,
            "templates_per_person": 2 * n + (1 if settings.centroid else 0),
            "identified": identified,
            "genuine": len(genuine),
            "identified_rate": round(identified / len(genuine), 4),
            "wrong_person": wrong,
            "strangers_accepted": accepted,
            "strangers": len(strangers),
            "stranger_rate": round(accepted / len(strangers), 5),
            "stranger_rate_ci95": [low, high],
        }
        rows.append(row)
        print(
            f"n={n}: identified {identified}/{len(genuine)} "
            f"({100 * identified / len(genuine):.1f}%), "
            f"wrong {wrong}, strangers {accepted}/{len(strangers)} "
            f"({100 * accepted / len(strangers):.2f}%, CI {100 * low:.2f}-{100 * high:.2f}%)",
            flush=True,
        )
    report = {
        "command": "python -m benchmarks.samples_per_person --raw <benchmarks.centering cache>",
        "people": len(people),
        "gallery": f"{len(people)} LFW people with >= {PHOTOS_NEEDED} photos",
        "threshold": settings.threshold,
        "aggregate": settings.aggregate,
        "centroid": settings.centroid,
        "rows": rows,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    outputs.write_json(args.out, report, "--out", indent=1)
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
