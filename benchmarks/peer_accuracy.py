"""LFW DevTest accuracy of dlib's face_recognition, scored with our protocol, side by side.

The peer most Raspberry Pi door scripts use is face_recognition 1.3.0 on dlib: a HOG detector
(upsampled once, as benchmarks/peers.py runs it for speed) and dlib's ResNet encoder (128-d,
5-point alignment, the weights of the face_recognition_models package). It is scored exactly
as `edge-app eval lfw` scores ours (edge_app/evaluate.py), with the same functions:

- every image of pairsDevTrain.txt and pairsDevTest.txt (4,992) is read once; the face is
  the one edge_app.lfw.central_face picks among the detections (largest, nearest the
  centre); where the peer finds no face, the box edge_app.lfw.fallback_face gives (the
  median LFW face), so every pair gets a verdict and no pair is dropped;
- the distance of a pair is face_recognition's own, the Euclidean distance of encodings;
- the threshold is edge_app.lfw.best_threshold on DevTrain, the accuracy
  edge_app.lfw.accuracy_at on DevTest; plus 10-fold cross-validation on DevTest and
  VAL@FAR=1e-3 (edge_app.lfw.cross_validated_accuracy, validation_rate).

Ours, on the same pairs: from the raw FaceNet outputs `benchmarks.centering embed` caches
(int8 engine, central face) centred on the shipped mean (models/tflite/facenet_mean.npy), as
the engine does; cosine distance, threshold from DevTrain. Both systems' per-pair verdicts
give a paired comparison: exact McNemar test on the pairs where they disagree and a seeded
bootstrap over pairs of the accuracy difference.

The peer's per-image encodings are cached (--cache), so a re-run only re-scores. dlib and
face_recognition live in .venv-bench only (`make bench-accuracy`):

    .venv-bench/bin/python -m benchmarks.peer_accuracy --data ../shared/data \\
        --ours-cache /tmp/edge-door-lfw-raw.npz --out benchmarks/peer_accuracy.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks import outputs
from edge_app.errors import UserError
from edge_app.faces import Faces
from edge_app.lfw import (
    PairList,
    accuracy_at,
    best_threshold,
    central_face,
    cross_validated_accuracy,
    fallback_face,
    read_pairs,
    validation_rate,
)
from edge_app.paths import REPO_ROOT, SHARED_DATA
from edge_app.reports import check_output, write_report

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path("/tmp/edge-door-peer-dlib-lfw.npz")  # the Makefile's PEER_CACHE
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "peer_accuracy.json"
DEFAULT_OURS = Path("/tmp/edge-door-lfw-raw.npz")  # the Makefile's CENTRING_CACHE
MODELS = REPO_ROOT / "models" / "tflite"
SEED = 0
BOOTSTRAP_ROUNDS = 10_000
SAVE_EVERY = 250  # images between partial cache writes, so an interrupted run resumes

# How the peer runs; part of the cache key, so a changed setting re-encodes.
PEER_SETTINGS: dict[str, Any] = {
    "detector": "hog",
    "upsample": 1,  # dlib's HOG window is 80 px; once upsampled it finds 40 px faces
    "encoder_model": "small",  # 5-point landmarks, face_recognition's default
    "num_jitters": 1,  # face_recognition's default: the crop encoded once
    "distance": "euclidean",
}

Css = tuple[int, int, int, int]  # dlib/face_recognition order: top, right, bottom, left


# --- adapter between face_recognition's boxes and ours (pure, no dlib) ---------------------


def css_to_faces(locations: Sequence[Css]) -> Faces:
    """face_recognition's (top, right, bottom, left) boxes -> our Faces (x1, y1, x2, y2).

    dlib rectangles are inclusive pixel indices (width = right - left + 1); ours end one past
    the last pixel, so right and bottom gain 1. HOG gives no score or landmarks: scores are 1,
    landmarks zero (central_face reads only the boxes).
    """
    if len(locations) == 0:
        return Faces.empty()
    css = np.asarray(locations, np.float32).reshape(-1, 4)
    top, right, bottom, left = css.T
    boxes = np.stack([left, top, right + 1, bottom + 1], axis=1).astype(np.float32)
    count = len(boxes)
    return Faces(boxes, np.ones(count, np.float32), np.zeros((count, 5, 2), np.float32))


def box_to_css(box: np.ndarray, width: int, height: int) -> Css:
    """One of our boxes (x1, y1, x2, y2, end exclusive) -> face_recognition's inclusive
    (top, right, bottom, left), rounded to whole pixels and kept inside the image."""
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    left, top = min(max(x1, 0), width - 1), min(max(y1, 0), height - 1)
    right, bottom = min(max(x2 - 1, left), width - 1), min(max(y2 - 1, top), height - 1)
    return top, right, bottom, left


def pick_face(locations: Sequence[Css], width: int, height: int) -> tuple[Css, bool]:
    """The face our protocol scores in an LFW image, in face_recognition's order, and whether
    the peer found it (False: the median LFW face box, edge_app.lfw.fallback_face)."""
    index = central_face(css_to_faces(locations), width, height)
    if index is None:
        return box_to_css(fallback_face(width, height).boxes[0], width, height), False
    return tuple(int(v) for v in locations[index]), True  # type: ignore[return-value]


# --- scoring (pure) ------------------------------------------------------------------------


def euclidean(encodings: np.ndarray, index: dict[str, int], pairs: PairList) -> np.ndarray:
    """face_recognition.face_distance for every pair at once."""
    a = encodings[[index[name] for name in pairs.first]]
    b = encodings[[index[name] for name in pairs.second]]
    return np.linalg.norm(a - b, axis=1)


def cosine(embeddings: np.ndarray, index: dict[str, int], pairs: PairList) -> np.ndarray:
    """Our distance: 1 - cos of unit embeddings (edge_app.evaluate.distances)."""
    a = embeddings[[index[name] for name in pairs.first]]
    b = embeddings[[index[name] for name in pairs.second]]
    return 1.0 - np.sum(a * b, axis=1)


@dataclass(frozen=True)
class Scored:
    """One system on DevTest with the DevTrain threshold; correct: per DevTest pair."""

    summary: dict[str, Any]
    correct: np.ndarray


def score(d_train: np.ndarray, d_test: np.ndarray, train: PairList, test: PairList) -> Scored:
    threshold = best_threshold(d_train, train.same)
    cv, cv_std, _ = cross_validated_accuracy(d_test, test.same, test.fold, 10)
    correct = (d_test <= threshold) == test.same
    order = np.random.default_rng(SEED).permutation(len(d_test))
    chunks = [correct[chunk].mean() for chunk in np.array_split(order, 10)]
    return Scored(
        {
            "devtest_accuracy": accuracy_at(d_test, test.same, threshold),
            "devtest_errors": int((~correct).sum()),
            "devtest_standard_error": float(
                np.sqrt(correct.mean() * (1 - correct.mean()) / len(correct))
            ),
            "devtest_10fold": cv,
            "devtest_10fold_std": cv_std,
            # as `edge-app eval lfw --train` reports its spread (edge_app/evaluate.py): the
            # DevTrain threshold on 10 seeded random chunks of DevTest
            "devtest_chunk_std": float(np.std(chunks)),
            "threshold_from_devtrain": threshold,
            "devtrain_accuracy": accuracy_at(d_train, train.same, threshold),
            "val_at_far_1e-3": validation_rate(d_test, test.same, 1e-3),
            "pairs": len(d_test),
        },
        correct,
    )


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: under 'no difference' each discordant pair is a fair
    coin, so the smaller count is binomial(n, 1/2)."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return float(min(1.0, 2.0 * tail))


def paired_comparison(
    ours: np.ndarray, peer: np.ndarray, rounds: int = BOOTSTRAP_ROUNDS, seed: int = SEED
) -> dict[str, Any]:
    """Ours minus the peer on the same pairs (per-pair correctness, booleans)."""
    ours, peer = np.asarray(ours, bool), np.asarray(peer, bool)
    if ours.shape != peer.shape or ours.ndim != 1 or len(ours) == 0:
        raise ValueError("per-pair verdicts of both systems must cover the same pairs")
    ours_only, peer_only = int((ours & ~peer).sum()), int((peer & ~ours).sum())
    difference = ours.astype(np.float64) - peer.astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(difference), size=(rounds, len(difference)))
    means = difference[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "pairs": len(ours),
        "both_right": int((ours & peer).sum()),
        "both_wrong": int((~ours & ~peer).sum()),
        "only_ours_right": ours_only,
        "only_peer_right": peer_only,
        "difference_pp": 100.0 * float(difference.mean()),
        "paired_standard_error_pp": 100.0 * float(difference.std(ddof=1) / np.sqrt(len(ours))),
        "bootstrap_95ci_pp": [100.0 * float(low), 100.0 * float(high)],
        "bootstrap_rounds": rounds,
        "bootstrap_seed": seed,
        "mcnemar_exact_p": mcnemar_exact(ours_only, peer_only),
    }


# --- every pair of the same images: verification at a door's false-accept rates -------------

ALL_PAIRS_FARS = (1e-3, 1e-4)  # strangers accepted per comparison: the rates a door runs at


def person_of(image: str) -> str:
    """ "Name/Name_0001.jpg" -> "Name"."""
    return image.split("/", 1)[0]


def every_pair(
    vectors: np.ndarray, people: Sequence[str], metric: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distances of every pair i < j of `vectors` (metric "cosine": 1 - cos of unit vectors;
    "euclidean"), whether both images show the same person, and that person's index in
    sorted(set(people)) for same-person pairs (-1 otherwise)."""
    vectors = np.asarray(vectors, np.float64)
    if metric == "cosine":
        full = 1.0 - vectors @ vectors.T
    elif metric == "euclidean":
        squared = np.sum(vectors**2, axis=1)
        full = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * vectors @ vectors.T, 0))
    else:
        raise ValueError(f"metric {metric!r} is not cosine or euclidean")
    names = sorted(set(people))
    label = np.array([names.index(person) for person in people])
    first, second = np.triu_indices(len(vectors), k=1)
    same = label[first] == label[second]
    return full[first, second], same, np.where(same, label[first], -1)


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """The distance under which (strictly) at most `far` of these impostor pairs fall."""
    ordered = np.sort(np.asarray(impostor, np.float64))
    allowed = int(math.floor(far * len(ordered)))
    return float(ordered[min(allowed, len(ordered) - 1)])


def all_pairs_system(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], far: float
) -> tuple[dict[str, Any], np.ndarray]:
    """One system at one FAR: the threshold from DevTrain's impostor pairs, applied to DevTest;
    the DevTest genuine pairs accepted (per pair) for the paired comparison."""
    (d_train, same_train), (d_test, same_test) = train, test
    threshold = threshold_at_far(d_train[~same_train], far)
    accepted = d_test < threshold
    genuine = accepted[same_test]
    oracle = threshold_at_far(d_test[~same_test], far)
    return {
        "far_target": far,
        "threshold_from_devtrain": threshold,
        "devtest_tar": float(genuine.mean()),
        "devtest_far": float(accepted[~same_test].mean()),
        "devtest_impostors_accepted": int(accepted[~same_test].sum()),
        "devtest_tar_oracle": float((d_test[same_test] < oracle).mean()),
    }, genuine


def person_bootstrap(
    ours: np.ndarray, peer: np.ndarray, person: np.ndarray, rounds: int, seed: int
) -> list[float]:
    """95% interval of TAR(ours) - TAR(peer) over genuine pairs, resampling people (a
    person's pairs share images, so pairs are not independent draws; people are)."""
    people, inverse = np.unique(person, return_inverse=True)
    pairs = np.bincount(inverse, minlength=len(people)).astype(np.float64)
    gain = np.bincount(inverse, weights=ours.astype(np.float64) - peer, minlength=len(people))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(people), size=(rounds, len(people)))
    differences = gain[draws].sum(axis=1) / pairs[draws].sum(axis=1)
    low, high = np.percentile(differences, [2.5, 97.5])
    return [100.0 * float(low), 100.0 * float(high)]


def all_pairs_comparison(
    systems: dict[str, tuple[np.ndarray, dict[str, int], str]],
    train_images: Sequence[str],
    test_images: Sequence[str],
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = SEED,
) -> dict[str, Any]:
    """Every pair among the DevTrain images and among the DevTest images (LFW's two
    development sets share no person). Per system (vectors, index, metric) and per FAR: the
    threshold letting that share of DevTrain's impostor pairs in, and on DevTest the genuine
    pairs accepted (TAR) and the impostors accepted; then ours minus the peer's TAR on the
    same genuine pairs, with a 95% interval resampling people. systems: "ours" and "peer"."""
    train_people = [person_of(name) for name in train_images]
    test_people = [person_of(name) for name in test_images]
    if set(train_people) & set(test_people):
        raise ValueError("DevTrain and DevTest must not share people")
    scored: dict[str, dict[str, Any]] = {}
    genuine: dict[tuple[str, float], np.ndarray] = {}
    person = np.empty(0)
    counts: dict[str, int] = {}
    for label, (vectors, index, metric) in systems.items():
        train = every_pair(vectors[[index[n] for n in train_images]], train_people, metric)
        test = every_pair(vectors[[index[n] for n in test_images]], test_people, metric)
        person = test[2][test[1]]
        counts = {
            "devtrain_genuine_pairs": int(train[1].sum()),
            "devtrain_impostor_pairs": int((~train[1]).sum()),
            "devtest_genuine_pairs": int(test[1].sum()),
            "devtest_impostor_pairs": int((~test[1]).sum()),
            "devtest_people_with_pairs": len(np.unique(person)),
        }
        scored[label] = {"metric": metric, "at_far": []}
        for far in ALL_PAIRS_FARS:
            summary, accepted = all_pairs_system(train[:2], test[:2], far)
            scored[label]["at_far"].append(summary)
            genuine[(label, far)] = accepted
    paired = []
    for far in ALL_PAIRS_FARS:
        ours, peer = genuine[("ours", far)], genuine[("peer", far)]
        paired.append(
            {
                "far_target": far,
                "difference_pp": 100.0 * float(ours.mean() - peer.mean()),
                "only_ours_accepted": int((ours & ~peer).sum()),
                "only_peer_accepted": int((peer & ~ours).sum()),
                "person_bootstrap_95ci_pp": person_bootstrap(ours, peer, person, rounds, seed),
            }
        )
    return {
        "protocol": (
            "every pair of the pairsDevTrain.txt images and every pair of the pairsDevTest.txt "
            "images; per system the threshold letting far_target of DevTrain's different-person "
            "pairs in (strictly closer), applied to DevTest; TAR = DevTest same-person pairs "
            "accepted; oracle = TAR at a threshold set on DevTest's own impostors"
        ),
        **counts,
        **scored,
        "paired": paired,
        "bootstrap_rounds": rounds,
        "bootstrap_seed": seed,
    }


# --- the peer's encodings, cached -----------------------------------------------------------


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    for package in ("face_recognition", "face_recognition_models", "dlib-bin", "dlib", "numpy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def cache_key() -> str:
    peer = {k: v for k, v in versions().items() if k not in ("python", "numpy")}
    return json.dumps({"settings": PEER_SETTINGS, "versions": peer}, sort_keys=True)


def load_cache(path: Path, key: str) -> dict[str, Any]:
    """Encodings already made with the same settings and versions (empty when none)."""
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                log.warning("cache=%s made with other settings or versions: re-encoding", path)
                return {}
            return {
                str(name): (encoding, tuple(int(v) for v in css), bool(found), int(count))
                for name, encoding, css, found, count in zip(
                    data["names"],
                    data["encodings"],
                    data["css"],
                    data["found"],
                    data["faces"],
                    strict=True,
                )
            } | {"__seconds__": float(data["seconds"])}
    except (OSError, ValueError, KeyError) as error:
        log.warning("cache=%s unreadable (%s): re-encoding", path, error)
        return {}


def save_cache(path: Path, key: str, done: dict[str, Any], seconds: float) -> None:
    """Atomic: a temporary file renamed over the cache."""
    names = sorted(n for n in done if n != "__seconds__")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp,
        key=np.array(key),
        names=np.array(names),
        encodings=np.stack([done[n][0] for n in names]).astype(np.float64),
        css=np.array([done[n][1] for n in names], np.int64).reshape(-1, 4),
        found=np.array([done[n][2] for n in names], bool),
        faces=np.array([done[n][3] for n in names], np.int64),
        seconds=np.array(seconds),
    )
    tmp.replace(path)


def _face_recognition() -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # face_recognition_models imports pkg_resources
        import face_recognition
    return face_recognition


def encode_one(path: Path) -> tuple[np.ndarray, Css, bool, int]:
    """One LFW image through the peer: (encoding, chosen box, found by the peer, detections)."""
    face_recognition = _face_recognition()
    image = face_recognition.load_image_file(str(path))
    height, width = image.shape[:2]
    locations = face_recognition.face_locations(
        image, number_of_times_to_upsample=PEER_SETTINGS["upsample"], model="hog"
    )
    css, found = pick_face(locations, width, height)
    encoding = face_recognition.face_encodings(
        image,
        known_face_locations=[css],
        num_jitters=PEER_SETTINGS["num_jitters"],
        model=PEER_SETTINGS["encoder_model"],
    )[0]
    return np.asarray(encoding, np.float64), css, found, len(locations)


def encode_all(
    images: Path, names: list[str], cache: Path, workers: int = 1
) -> tuple[dict[str, Any], float]:
    """Per image: (encoding, chosen css box, found by the peer, detections). Resumes from the
    cache; returns the encodings and the wall seconds spent encoding (summed over runs).

    dlib's HOG detector is single-threaded: `workers` processes encode images side by side
    (each image's result does not depend on the others, so the numbers are the same)."""
    import multiprocessing

    _face_recognition()  # fail early, before any work, when the peer is not installed
    key = cache_key()
    done = load_cache(cache, key)
    seconds = float(done.pop("__seconds__", 0.0))
    todo = [name for name in names if name not in done]
    for name in todo:
        if not (images / name).is_file():
            raise UserError(f"{images / name}: listed in the pairs but missing from the images")
    if todo:
        log.info(
            "peer=dlib cached=%d to_encode=%d workers=%d cache=%s",
            len(names) - len(todo),
            len(todo),
            workers,
            cache,
        )
    start, since_save = time.perf_counter(), 0
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 and todo else None
    try:
        results = (
            pool.imap(encode_one, [images / n for n in todo], chunksize=4)
            if pool is not None
            else map(encode_one, [images / n for n in todo])
        )
        progress = tqdm(results, total=len(todo), desc="face_recognition on LFW", disable=None)
        for name, encoded in zip(todo, progress, strict=True):
            done[name] = encoded
            since_save += 1
            if since_save >= SAVE_EVERY:
                save_cache(cache, key, done, seconds + time.perf_counter() - start)
                since_save = 0
    finally:
        if pool is not None:
            pool.terminate()
    seconds += time.perf_counter() - start
    if todo:
        save_cache(cache, key, done, seconds)
    return {name: done[name] for name in names}, seconds


# --- ours, from the centring cache -----------------------------------------------------------


def ours_embeddings(raw_cache: Path, models: Path) -> tuple[np.ndarray, dict[str, int], str]:
    """Our unit embeddings as the shipped engine makes them, from cached raw FaceNet outputs."""
    from edge_app.centering import MEAN_FILE, centre

    with np.load(raw_cache, allow_pickle=False) as data:
        names, raw = [str(n) for n in data["names"]], data["raw"]
    mean_path = models / MEAN_FILE
    mean = np.load(mean_path, allow_pickle=False) if mean_path.is_file() else None
    how = "centred on " + str(mean_path) if mean is not None else "not centred (no mean shipped)"
    return centre(raw, mean), {name: i for i, name in enumerate(names)}, how


def run(args: argparse.Namespace) -> dict[str, Any]:
    lfw = args.data / "lfw"
    train, test = read_pairs(lfw / "pairsDevTrain.txt"), read_pairs(lfw / "pairsDevTest.txt")
    names = sorted(set(train.images) | set(test.images))
    loadavg_start = os.getloadavg()
    wall = time.perf_counter()
    encoded, seconds = encode_all(lfw / "images", names, args.cache, args.workers)
    index = {name: i for i, name in enumerate(names)}
    encodings = np.stack([encoded[name][0] for name in names])
    peer = score(euclidean(encodings, index, train), euclidean(encodings, index, test), train, test)
    test_names = set(test.images)
    no_face = [name for name in names if not encoded[name][2]]
    result: dict[str, Any] = {
        "protocol": (
            "per image the central face (edge_app.lfw.central_face; no face: fallback_face); "
            "threshold from pairsDevTrain.txt (best_threshold), accuracy on pairsDevTest.txt "
            "(accuracy_at); 10-fold cross-validation on pairsDevTest.txt; VAL@FAR=1e-3"
        ),
        "images": len(names),
        "peer": {
            "system": "face_recognition 1.3.0 / dlib (HOG upsample 1 + ResNet 128-d)",
            "settings": PEER_SETTINGS,
            **peer.summary,
            "no_face_images": len(no_face),
            "no_face_images_devtest": sum(name in test_names for name in no_face),
            "no_face_policy": "encoded from the median LFW face box (no pair is dropped)",
            "several_faces_images": sum(encoded[name][3] > 1 for name in names),
            "no_face_list": no_face,
            "encode_seconds": seconds,
            "images_per_second": len(names) / seconds if seconds > 0 else None,
            "workers": args.workers,
        },
    }
    if args.ours_cache is not None and args.ours_cache.is_file():
        embeddings, ours_index, how = ours_embeddings(args.ours_cache, args.models)
        missing = [name for name in names if name not in ours_index]
        if missing:
            raise UserError(
                f"--ours-cache {args.ours_cache}: {len(missing)} DevTrain/DevTest images are "
                f"not in it (first {missing[0]}); rebuild it with "
                "`python -m benchmarks.centering embed`"
            )
        ours = score(
            cosine(embeddings, ours_index, train), cosine(embeddings, ours_index, test), train, test
        )
        result["ours"] = {
            "system": f"edge-door int8 engine (MTCNN + FaceNet 512-d), {how}",
            "raw_cache": str(args.ours_cache),
            **ours.summary,
        }
        result["paired"] = paired_comparison(ours.correct, peer.correct)
        result["all_pairs"] = all_pairs_comparison(
            {
                "ours": (embeddings, ours_index, "cosine"),
                "peer": (encodings, index, "euclidean"),
            },
            sorted(set(train.images)),
            sorted(set(test.images)),
        )
    else:
        result["ours"] = None
        result["paired"] = None
        result["ours_note"] = (
            f"no per-image cache of ours at {args.ours_cache}: build it with `python -m "
            "benchmarks.centering embed --cache PATH` (or `make centring-mean`) for the paired "
            "comparison"
        )
    result["versions"] = versions()
    result["seed"] = SEED
    result["wall_seconds"] = time.perf_counter() - wall
    result["loadavg_start"] = list(loadavg_start)
    result["loadavg_end"] = list(os.getloadavg())
    result["cores"] = os.cpu_count()
    result["encodings_cache"] = str(args.cache)
    return result


def print_table(result: dict[str, Any]) -> None:
    rows = [("face_recognition / dlib", result["peer"])]
    if result["ours"]:
        rows.insert(0, ("edge-door (int8)", result["ours"]))
    print(f"{'system':26} {'DevTest':>8} {'10-fold':>15} {'VAL@1e-3':>9} {'no face':>8}")
    for label, row in rows:
        print(
            f"{label:26} {100 * row['devtest_accuracy']:7.2f}% "
            f"{100 * row['devtest_10fold']:7.2f} ± {100 * row['devtest_10fold_std']:4.2f} "
            f"{100 * row['val_at_far_1e-3']:8.1f}% {row.get('no_face_images', '-')!s:>8}"
        )
    paired = result["paired"]
    if paired:
        print(
            f"ours - peer: {paired['difference_pp']:+.2f} pp (95% bootstrap "
            f"{paired['bootstrap_95ci_pp'][0]:+.2f}..{paired['bootstrap_95ci_pp'][1]:+.2f}); "
            f"only ours right {paired['only_ours_right']}, only peer right "
            f"{paired['only_peer_right']}, McNemar p={paired['mcnemar_exact_p']:.3f}"
        )
    every = result.get("all_pairs")
    if every:
        print(
            f"every pair: DevTest {every['devtest_genuine_pairs']} same-person and "
            f"{every['devtest_impostor_pairs']} different-person pairs"
        )
        for i, row in enumerate(every["paired"]):
            ours, peer = every["ours"]["at_far"][i], every["peer"]["at_far"][i]
            low, high = row["person_bootstrap_95ci_pp"]
            print(
                f"  FAR {row['far_target']:g}: TAR ours {100 * ours['devtest_tar']:.2f}% "
                f"(FAR {ours['devtest_far']:.1e}), peer {100 * peer['devtest_tar']:.2f}% "
                f"(FAR {peer['devtest_far']:.1e}); ours - peer {row['difference_pp']:+.2f} pp "
                f"(95% by person {low:+.2f}..{high:+.2f})"
            )


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=(
            "example: .venv-bench/bin/python -m benchmarks.peer_accuracy --data ../shared/data "
            "--ours-cache /tmp/edge-door-lfw-raw.npz (first run ~15-20 min on 2 cores; the "
            "encodings are cached, a re-run takes seconds)"
        ),
    )
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="holds lfw/")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="peer encodings (npz)")
    parser.add_argument(
        "--ours-cache",
        type=Path,
        default=DEFAULT_OURS,
        help="raw FaceNet outputs from `benchmarks.centering embed` (for the paired comparison)",
    )
    parser.add_argument("--models", type=Path, default=MODELS, help="holds facenet_mean.npy")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--workers", type=int, default=2, help="encoding processes (dlib's HOG is single-threaded)"
    )
    args = parser.parse_args(argv)
    check_output(args.out, "--out")  # before the minutes of work, not with a traceback after
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not (args.data / "lfw" / "pairsDevTest.txt").is_file():
        print(f"error: {args.data}/lfw has no pairsDevTest.txt: give --data", file=sys.stderr)
        return 2
    try:
        result = run(args)  # a UserError: one line, exit 2 (outputs.command)
    except ImportError as error:
        print(
            f"error: {error.name or error}: face_recognition/dlib live in .venv-bench "
            "(`make .venv-bench/.ready`)",
            file=sys.stderr,
        )
        return 2
    write_report(args.out, result, "--out")
    print_table(result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
