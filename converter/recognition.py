"""The default recognition threshold, derived on LFW DevTrain as an open-set door sees it.

A per-pair false-accept rate is the wrong yardstick for a door: a stranger is compared with
everybody enrolled, and accepted if the *best* person clears the threshold. So the
derivation simulates doors: galleries of GALLERY_SIZE DevTrain people with SAMPLES photos
each, probed by their other photos (genuine) and by every DevTrain person not enrolled
(strangers). For each aggregate and margin, the threshold is the lowest one letting at most
FAR of the strangers in; the combination identifying most genuine probes wins. DevTest
identities stay untouched for reporting.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.config import AGGREGATES
from edge_app.engine import Engine
from edge_app.errors import UserError
from edge_app.gallery import GalleryMatrix
from edge_app.images import read_image
from edge_app.lfw import TRAIN_PAIRS, labelled_face, read_pairs
from edge_app.matching import (
    CENTROID_KEY,
    Matcher,
    MatchSettings,
    accepts,
    stranger_threshold,
    top_two,
)
from edge_app.progress import Progress

log = logging.getLogger(__name__)

GALLERY_SIZE = 20  # the gallery size of the door's identification target (docs/ACCURACY.md)
SAMPLES = 2
TARGET_FAR = 1e-3
TRIALS = 40
MARGINS = (0.0, 0.03, 0.05, 0.1)
# Galleries also match each person by the mean of their samples (edge_app.matching): chosen
# on DevTrain and checked on DevTest people by benchmarks/centroid.py (docs/ACCURACY.md).
CENTROID = True
# Below this share of genuine probes identified, the FaceNet does not tell people apart (the
# shipped models identify about 95%): a wrong or broken network, not a threshold to ship.
MIN_IDENTIFIED = 0.5


def by_person(names: list[str]) -> dict[str, list[int]]:
    """Each person's rows among LFW image names ("Person/Person_0001.jpg"), in order."""
    rows: defaultdict[str, list[int]] = defaultdict(list)
    for index, name in enumerate(names):
        rows[name.split("/")[0]].append(index)
    return dict(rows)


def enrollable_people(photos: dict[str, list[int]]) -> list[str]:
    """The people a simulated door can enrol (SAMPLES photos) and still probe: more than
    SAMPLES photos, sorted."""
    return sorted(person for person, rows in photos.items() if len(rows) > SAMPLES)


def check_population(lfw: Path) -> None:
    """Refuse, before any work, an --lfw whose DevTrain list cannot simulate doors: a door
    enrols up to GALLERY_SIZE people with more than SAMPLES photos, and at least GALLERY_SIZE
    others must be left to come as strangers (LFW's own DevTrain has thousands)."""
    names = read_pairs(lfw / TRAIN_PAIRS).images
    missing = [name for name in names if not (lfw / "images" / name).is_file()]
    if missing:  # found at step 5 of a build, minutes in, where each image is read
        raise UserError(
            f"--lfw {lfw}: {len(missing)} of the {len(names)} images pairsDevTrain.txt names "
            f"are not in {lfw / 'images'} (the first: {missing[0]}); give the LFW folder "
            "that holds images/ beside the pair lists"
        )
    photos = by_person(names)
    enrollable = len(enrollable_people(photos))
    strangers = len(photos) - min(GALLERY_SIZE, enrollable)
    if enrollable < 2 or strangers < GALLERY_SIZE:
        raise UserError(
            f"--lfw {lfw}: pairsDevTrain.txt names {len(photos)} people, {enrollable} of them "
            f"with more than {SAMPLES} photos, so a simulated door enrols "
            f"{min(GALLERY_SIZE, enrollable)} and leaves {strangers} as strangers; the "
            f"threshold needs at least 2 to enrol and {GALLERY_SIZE} strangers: use LFW's "
            "own pairsDevTrain.txt"
        )


def check_recognition(recognition: dict[str, Any], facenet: Any) -> None:
    """Refuse a derived threshold that no door could use: outside the cosine scale (nobody
    would match, or everybody), or one identifying few people even so (`facenet` names the
    source in the message)."""
    threshold = recognition["threshold"]
    identified = max(row["identified"] for row in recognition["candidates"])  # the chosen one
    if not -1.0 < threshold < 1.0 or not identified >= MIN_IDENTIFIED:
        raise UserError(
            f"the FaceNet model ({facenet}) does not tell people apart: its threshold came "
            f"out at {threshold:.4f}, identifying {100 * identified:.1f}% of LFW DevTrain's "
            f"genuine probes (the shipped weights: about 95%); check --facenet"
        )


def embed_lfw(engine: Engine, root: Path, names: list[str], desc: str) -> np.ndarray:
    """One embedding per LFW image: the central face, else the median LFW face box."""
    rows = []
    for name in Progress(names, desc=desc, unit="image", leave=False, disable=None):
        frame = read_image(root / "images" / name)
        face, _ = labelled_face(engine.detect(frame), frame.shape[1], frame.shape[0])
        rows.append(engine.embed(frame, face)[0])
    return np.stack(rows)


@dataclass(frozen=True)
class Population:
    """The photos a door simulation draws from: unit embeddings (one row per image name),
    their mirror images' (stored beside each enrolled photo, as enrolment does; None: the
    photo alone), the rows probes are taken from (default the embeddings; e.g. mirror-averaged
    ones to try another way of embedding the visitor), and who is in each photo."""

    embeddings: np.ndarray
    mirrors: np.ndarray | None
    probes: np.ndarray
    person_of: np.ndarray
    by_person: dict[str, list[int]]
    enrollable: np.ndarray

    @classmethod
    def of(
        cls,
        embeddings: np.ndarray,
        names: list[str],
        mirrors: np.ndarray | None = None,
        probes: np.ndarray | None = None,
    ) -> Population:
        photos = by_person(names)
        return cls(
            embeddings,
            mirrors,
            embeddings if probes is None else probes,
            np.array([n.split("/")[0] for n in names]),
            photos,
            np.array(enrollable_people(photos)),
        )


def _trial_scores(
    population: Population,
    rng: np.random.Generator,
    aggregate: str,
    normaliser: Any = None,
    centroid: bool = False,
    site_share: float = 0.0,
) -> tuple[np.ndarray, ...]:
    """One simulated door: (genuine best, genuine second, genuine correct, stranger best,
    stranger second). normaliser: an edge_app.cohort.CohortNormaliser the scores go through
    (None: raw cosines); centroid: match by person centroids too, as the door does when the
    manifest says so; site_share: the site centring share (edge_app.matching; 0: none)."""
    enrollable, mirrors = population.enrollable, population.mirrors
    chosen = rng.choice(enrollable, size=min(GALLERY_SIZE, len(enrollable)), replace=False)
    rows: list[np.ndarray] = []
    owner: list[int] = []
    probes: list[int] = []
    for slot, person in enumerate(chosen):
        images = rng.permutation(population.by_person[person])
        for image in images[:SAMPLES]:
            rows.append(population.embeddings[image])
            if mirrors is not None:
                rows.append(mirrors[image])
        owner.extend([slot] * (SAMPLES * (1 if mirrors is None else 2)))
        probes.extend(images[SAMPLES:])
    matrix = GalleryMatrix(np.stack(rows), np.array(owner, np.int32), tuple(str(p) for p in chosen))
    settings = MatchSettings(
        threshold=-1.0, aggregate=aggregate, centroid=centroid, site_share=site_share
    )
    matcher = Matcher(matrix, settings, normaliser)
    person_of = population.person_of
    strangers = np.flatnonzero(~np.isin(person_of, chosen))

    def best_two(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return top_two(matcher.person_scores(population.probes[indices]))

    g_index, g_best, g_second = best_two(np.array(probes))
    correct = chosen[g_index] == person_of[np.array(probes)]
    _, s_best, s_second = best_two(strangers)
    return g_best, g_second, correct, s_best, s_second


def derive_threshold(engine: Engine, lfw: Path, seed: int = 0) -> dict:
    names = read_pairs(lfw / TRAIN_PAIRS).images
    embeddings = embed_lfw(engine, lfw, names, "recognition threshold (DevTrain)")
    return derive_from_embeddings(embeddings, names, seed)


def derive_from_embeddings(
    embeddings: np.ndarray,
    names: list[str],
    seed: int = 0,
    mirrors: np.ndarray | None = None,
    normaliser: Any = None,
    centroid: bool = CENTROID,
    probes: np.ndarray | None = None,
) -> dict:
    """derive_threshold on unit embeddings already made, one row per DevTrain image name
    (mirrors: each image's mirror-image embedding, stored beside it in the galleries;
    normaliser: an edge_app.cohort.CohortNormaliser the scores go through, None: raw;
    centroid: galleries match by person centroids too; probes: the rows probes are taken
    from when they are embedded otherwise than the gallery, default embeddings)."""
    population = Population.of(embeddings, names, mirrors, probes)
    best: dict[str, Any] | None = None
    table: list[dict[str, Any]] = []
    for aggregate in AGGREGATES:
        rng = np.random.default_rng(seed)
        trials = [
            _trial_scores(population, rng, aggregate, normaliser, centroid) for _ in range(TRIALS)
        ]
        g_best, g_second, correct, s_best, s_second = (
            np.concatenate(parts) for parts in zip(*trials, strict=True)
        )
        if len(s_best) == 0 or len(g_best) == 0:
            raise UserError(
                "the LFW DevTrain list gave no strangers or no genuine probes to derive the "
                "recognition threshold on: use LFW's own pairsDevTrain.txt"
            )
        for margin in MARGINS:
            # The door's own rule (edge_app.matching.accepts), ties included.
            threshold = stranger_threshold(s_best, s_second, margin, far=TARGET_FAR)
            identified = accepts(g_best, g_second, threshold, margin) & correct
            row: dict[str, Any] = {
                "aggregate": aggregate,
                "margin": margin,
                "threshold": round(threshold, 4),
                "identified": float(identified.mean()),
                "stranger_accept": float(np.mean(accepts(s_best, s_second, threshold, margin))),
            }
            table.append(row)
            if best is None or row["identified"] > best["identified"]:
                best = row
    assert best is not None, "AGGREGATES and MARGINS are not empty"
    log.info(
        "recognition threshold %.4f aggregate=%s margin=%.2f identifies %.1f%% of genuine probes "
        "at %.2f%% strangers accepted",
        best["threshold"],
        best["aggregate"],
        best["margin"],
        100 * best["identified"],
        100 * best["stranger_accept"],
    )
    stored = "" if mirrors is None else " (each stored with its mirror image, as enrolment does)"
    templates = "photo and mirror" if mirrors is not None else "photo"
    return {
        "threshold": best["threshold"],
        "aggregate": best["aggregate"],
        "margin": best["margin"],
        "scale": "cosine similarity of L2-normalised embeddings, -1..1",
        "derivation": (
            f"LFW DevTrain open-set simulation: {TRIALS} galleries of {GALLERY_SIZE} people "
            f"x {SAMPLES} photos{stored}, probed by their other photos and by every DevTrain "
            f"person not enrolled; lowest threshold with stranger acceptance <= {TARGET_FAR:g}; "
            "aggregate and margin chosen for the most genuine probes identified"
        ),
        "templates": f"{templates}, and each person's centroid" if centroid else templates,
        CENTROID_KEY: centroid,
        "candidates": table,
    }
