"""Linear projections of the embedding learned on LFW DevTrain: measured, not adopted.

A classic step on top of a face embedding is a linear map learned from labelled faces, so
that the directions in which one person's photos vary (pose, light, age) count for less:

- **WCCN**, within-class covariance normalisation: x -> S^-1/2 x, with S the within-person
  covariance, shrunk towards the identity (S_shrunk = (1 - shrink) S + shrink tr(S)/d I,
  shrink 1 being no change);
- **nuisance removal**: the k directions in which one person's photos vary most relative to
  how all faces vary (the top generalised eigenvectors of S against the total covariance)
  are scaled down by `strength` (1 removes them).

Each variant is fitted on every DevTrain photo and its mirror image (3,443 photos of 2,132
people, 804 of them with 2 or more photos; a photo and its mirror count as two views of one
person), applied after the shipped centring, and then measured exactly as the door
decides: the cohort S-norm as shipped (cohort transformed too), person centroids, the rule
(threshold at <= 0.1% strangers) re-derived on the DevTrain simulation people by
converter.recognition's door simulation, and checked, fixed, on DevTest people over SEEDS
seeds of 40 galleries (the same galleries for every variant), with the DevTest pairs at
the DevTrain pairs threshold and by 10-fold:

    .venv/bin/python -m benchmarks.projection --cache /tmp/edge-door-lfw-raw.npz

writes benchmarks/projection.json (about 2 minutes; the cache comes from
`python -m benchmarks.centering embed`). Results and what they mean: docs/ACCURACY.md,
"Linear projections learned on DevTrain".
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from benchmarks import outputs
from benchmarks.centering import score
from benchmarks.cohort import (
    Data,
    check_parser,
    checked_args,
    derive_and_check,
    normaliser_of,
    shipped_choice,
)
from edge_app.centering import unit
from edge_app.gallery import EMBEDDING_DIM
from edge_app.paths import REPO_ROOT
from edge_app.reports import check_output, write_report

# (label, kind, parameter, strength): kind "none", "wccn" (parameter: shrink) or
# "nuisance" (parameter: directions removed, strength: how much of each).
VARIANTS: tuple[tuple[str, str, float, float], ...] = (
    ("none (shipped)", "none", 0.0, 0.0),
    ("WCCN, shrink 0.95", "wccn", 0.95, 1.0),
    ("WCCN, shrink 0.9", "wccn", 0.9, 1.0),
    ("WCCN, shrink 0.7", "wccn", 0.7, 1.0),
    ("WCCN, shrink 0.4", "wccn", 0.4, 1.0),
    ("nuisance 8 directions, halved", "nuisance", 8, 0.5),
    ("nuisance 8 directions, removed", "nuisance", 8, 1.0),
    ("nuisance 16 directions, halved", "nuisance", 16, 0.5),
    ("nuisance 16 directions, removed", "nuisance", 16, 1.0),
    ("nuisance 32 directions, removed", "nuisance", 32, 1.0),
)


def within_person(rows: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, int]:
    """Within-person covariance of `rows` (one per photo) and its degrees of freedom."""
    scatter = np.zeros((rows.shape[1], rows.shape[1]))
    dof = 0
    for person in np.unique(owner):
        own = rows[owner == person]
        if len(own) < 2:
            continue
        spread = own - own.mean(axis=0)
        scatter += spread.T @ spread
        dof += len(own) - 1
    return scatter / dof, dof


def wccn(within: np.ndarray, shrink: float) -> np.ndarray:
    """S_shrunk^-1/2, scaled so that an isotropic S gives the identity."""
    iso = float(np.trace(within)) / len(within)
    shrunk = (1.0 - shrink) * within + shrink * iso * np.eye(len(within))
    values, vectors = np.linalg.eigh(shrunk)
    return np.asarray((vectors / np.sqrt(values)) @ vectors.T * np.sqrt(iso))


def nuisance(within: np.ndarray, total: np.ndarray, k: int, strength: float) -> np.ndarray:
    """I - strength Q Q^T, Q an orthonormal basis of the k directions with the largest
    within-person to total variance ratio (generalised eigenvectors, via T^-1/2)."""
    t_values, t_vectors = np.linalg.eigh(total + 1e-3 * np.eye(len(total)))
    t_inv_sqrt = (t_vectors / np.sqrt(t_values)) @ t_vectors.T
    values, vectors = np.linalg.eigh(t_inv_sqrt @ within @ t_inv_sqrt)
    directions = t_inv_sqrt @ vectors[:, np.argsort(values)[::-1][:k]]
    basis, _ = np.linalg.qr(directions)
    return np.asarray(np.eye(len(within)) - strength * basis @ basis.T)


def measure(data: Data, seeds: int) -> dict[str, Any]:
    base_embeddings, base_mirrors = data.embeddings, data.mirrors
    train_rows = np.array([data.index[n] for n in data.train])
    both = np.concatenate([base_embeddings[train_rows], base_mirrors[train_rows]])
    owner = np.array([n.split("/")[0] for n in data.train] * 2)
    within, dof = within_person(both, owner)
    total = np.cov(both.T)
    chosen = shipped_choice()
    out: dict[str, Any] = {"within_person_dof": dof, "variants": {}}
    base: np.ndarray | None = None
    for label, kind, parameter, strength in VARIANTS:
        start = time.perf_counter()
        if kind == "wccn":
            matrix = wccn(within, parameter)
        elif kind == "nuisance":
            matrix = nuisance(within, total, int(parameter), strength)
        else:
            matrix = np.eye(EMBEDDING_DIM)
        data.embeddings = unit(base_embeddings @ matrix)
        data.mirrors = unit(base_mirrors @ matrix)
        pairs = score(data.embeddings, data.index, data.lfw)
        normaliser = normaliser_of(data, chosen)
        rule, summary = derive_and_check(data, normaliser, seeds, centroid=True)
        identified = np.array(summary["devtest_identified_per_seed"])
        if base is None:
            base = identified
        gain = identified - base
        row = {
            "devtrain_rule": rule,
            **summary,
            "gain_vs_none_min": round(float(gain.min()), 5),
            "gain_vs_none_max": round(float(gain.max()), 5),
            "pairs": {
                key: pairs[key] for key in ("devtest_accuracy", "devtest_10fold", "devtrain_10fold")
            },
            "seconds": round(time.perf_counter() - start, 1),
        }
        out["variants"][label] = row
        print(f"{label}: {row}", flush=True)
    data.embeddings, data.mirrors = base_embeddings, base_mirrors
    return out


@outputs.command
def main(argv: list[str] | None = None) -> int:
    args = checked_args(check_parser(__doc__, REPO_ROOT / "benchmarks" / "projection.json"), argv)
    check_output(args.out, "--out")  # before the minutes of work, not with a traceback after
    data = Data(args.cache, args.data / "lfw", args.models)
    report = {"seeds": args.seeds, **measure(data, args.seeds)}
    write_report(args.out, report, "--out")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
