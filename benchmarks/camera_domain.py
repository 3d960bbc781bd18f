"""How far real webcam faces sit from LFW's in FaceNet's space (docs/ACCURACY.md, "Same
camera, similar faces").

The recognition threshold is set on LFW photos. This measures, with the shipped engine (its
detection, crop and centring; the int8 cascade, as in the LFW cache), the cosine between
different people and between sessions of the same person on NUAA live frames (one webcam,
one room, eight people), beside the same figures on LFW, and how strongly each set's faces
share one direction: the length of the mean of its people's mean embeddings (people weighted
equally). On LFW that length is compared with random groups of as many LFW people, since a
mean over few people is longer by chance.

    python -m benchmarks.camera_domain --cache /tmp/edge-door-lfw-raw.npz

The LFW side reads the cache of raw FaceNet outputs that `python -m benchmarks.centering
embed` writes (`make cohort` makes it); the NUAA side runs the engine on every second live
frame (about a minute).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from benchmarks import outputs
from benchmarks.cohort import Data
from edge_app.engine import Engine
from edge_app.evaluate_liveness import presented_face, read_sequences
from edge_app.images import read_image
from edge_app.paths import REPO_MODELS, REPO_ROOT, SHARED_DATA
from edge_app.reports import check_output

OUT = REPO_ROOT / "benchmarks" / "camera_domain.json"
PAIRS = 200_000  # random LFW pairs for the stranger distribution
GROUPS = 200  # random LFW groups for the shared-direction length
PERCENTILES = (50, 99, 99.9)


def shared_direction(rows: np.ndarray, people: np.ndarray) -> float:
    """Length of the mean of the people's mean unit embeddings."""
    means = [rows[people == p].mean(axis=0) for p in np.unique(people)]
    return float(np.linalg.norm(np.mean(means, axis=0)))


def cosines(rows: np.ndarray, people: np.ndarray, sessions: np.ndarray) -> dict[str, list]:
    """Different-person and same-person-other-session cosines, as percentiles."""
    sims = rows @ rows.T
    same = people[:, None] == people[None, :]
    other_session = sessions[:, None] != sessions[None, :]
    upper = np.triu(np.ones_like(same), k=1)
    strangers = sims[~same & upper]
    genuine = sims[same & other_session & upper]
    return {
        "strangers": [round(float(x), 3) for x in np.percentile(strangers, PERCENTILES)],
        "same_person_other_session": [
            round(float(x), 3) for x in np.percentile(genuine, (1, 5, 50))
        ],
    }


def nuaa(engine: Engine, data: Path) -> dict:
    rows, people, sessions = [], [], []
    for sequence in read_sequences(data):
        if sequence.kind != "live":
            continue
        for path in sequence.frames[::2]:
            image = read_image(path)
            faces = engine.detect(image)
            chosen = presented_face(faces)
            if chosen is None:
                continue
            rows.append(engine.embed(image, faces[chosen : chosen + 1])[0])
            people.append(sequence.subject)
            sessions.append(sequence.key)
    matrix = np.asarray(rows, np.float64)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    who = np.array(people)
    return {
        "frames": len(rows),
        "people": len(set(people)),
        **cosines(matrix, who, np.array(sessions)),
        "shared_direction": round(shared_direction(matrix, who), 3),
    }


def lfw(cache: Path, data: Path, group: int, rng: np.random.Generator) -> dict:
    embedded = Data(cache, data / "lfw", REPO_MODELS)
    names = list(embedded.index)
    rows = embedded.embeddings[[embedded.index[n] for n in names]].astype(np.float64)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    who = np.array([n.split("/")[0] for n in names])
    first, second = rng.integers(0, len(rows), (2, PAIRS))
    keep = who[first] != who[second]
    strangers = np.einsum("ij,ij->i", rows[first[keep]], rows[second[keep]])
    everyone = np.unique(who)
    lengths = []
    for _ in range(GROUPS):
        picked = np.isin(who, rng.choice(everyone, group, replace=False))
        lengths.append(shared_direction(rows[picked], who[picked]))
    return {
        "images": len(rows),
        "strangers": [round(float(x), 3) for x in np.percentile(strangers, PERCENTILES)],
        "shared_direction_all_people": round(shared_direction(rows, who), 3),
        f"shared_direction_{group}_people": [
            round(float(x), 3) for x in np.percentile(lengths, (50, 95))
        ],
    }


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="../shared/data")
    parser.add_argument("--cache", type=Path, required=True, help="benchmarks.centering cache")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    check_output(args.out, "--out")  # before the work, not with a traceback after
    logging.basicConfig(level=logging.WARNING)
    engine = Engine.open(REPO_MODELS, backend="cpu")
    camera = nuaa(engine, args.data / "liveness" / "nuaa")
    report = {
        "percentiles": {"strangers": PERCENTILES, "same_person_other_session": (1, 5, 50)},
        "nuaa": camera,
        "lfw": lfw(args.cache, args.data, camera["people"], np.random.default_rng(0)),
    }
    outputs.write_json(args.out, report, "--out")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
