"""The LFW verification protocol: pair lists, best thresholds, cross-validated accuracy.

Pair files come in two forms. The fold form starts with "10<TAB>300" (pairs.txt, View 2):
ten folds of 300 same-person then 300 different-person pairs. The development form
(pairsDevTrain.txt, pairsDevTest.txt) starts with a single count. Distances here are
cosine distances between L2-normalised embeddings, 1 - cos.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.bounded_read import read_or_refuse
from edge_app.errors import UserError
from edge_app.faces import Faces

# The largest pair list read. LFW's own are far smaller (pairs.txt, 6,000 pairs, is about
# 100 KB); the cap only keeps a wrong file (a video, /dev/zero) from filling the memory.
MAX_PAIR_LIST_BYTES = 16 * 1024 * 1024
# LFW View 1: every threshold and setting is derived on DevTrain and measured on DevTest,
# which is held out; every module names the two lists through these.
TRAIN_PAIRS = "pairsDevTrain.txt"
TEST_PAIRS = "pairsDevTest.txt"
# x1, y1, x2, y2 as fractions of the image: see fallback_face
LFW_MEDIAN_BOX = (0.31, 0.26, 0.69, 0.75)


@dataclass(frozen=True)
class PairList:
    """first/second: image paths relative to the image root; same: bool; fold: int per pair."""

    first: list[str]
    second: list[str]
    same: np.ndarray
    fold: np.ndarray
    folds: int

    @property
    def images(self) -> list[str]:
        return sorted(set(self.first) | set(self.second))


def image_name(person: str, number: str) -> str:
    return f"{person}/{person}_{int(number):04d}.jpg"


def read_pairs(path: Path) -> PairList:
    """A pair list file (module docstring). It is read whole through edge_app.bounded_read:
    a named pipe, a device, a folder or a file over MAX_PAIR_LIST_BYTES is a UserError."""
    data = read_or_refuse(path, MAX_PAIR_LIST_BYTES, UserError, what="a pair list")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"cannot read pair list {path}: not UTF-8 text ({error.reason})") from None
    numbered = [
        (number, line.split())
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
    if not numbered:
        raise UserError(f"{path}: empty pair list")
    header, rows = numbered[0][1], numbered[1:]
    try:
        if len(header) not in (1, 2):
            raise ValueError
        counts = [int(field) for field in header]
        if any(count < 0 for count in counts):  # "-1 -1" promised "(2 lines)"
            raise ValueError
    except ValueError:
        raise UserError(
            f"{path}: the first line must be a count or '<folds> <pairs>' (LFW's own pair "
            f"lists start so), not {' '.join(header)[:40]!r}"
        ) from None
    folds, per_fold = (counts[0], counts[1]) if len(counts) == 2 else (1, None)
    first, second, same, fold = [], [], [], []
    for index, (number, row) in enumerate(rows):
        if len(row) not in (3, 4):
            raise UserError(f"{path}:{number}: expected 3 or 4 fields, got {len(row)}")
        try:
            if len(row) == 3:
                pair = image_name(row[0], row[1]), image_name(row[0], row[2]), True
            else:
                pair = image_name(row[0], row[1]), image_name(row[2], row[3]), False
        except ValueError:
            raise UserError(f"{path}:{number}: photo numbers must be integers") from None
        first.append(pair[0])
        second.append(pair[1])
        same.append(pair[2])
        # No fold at all for a header of 0 pairs per fold: the count check below refuses it.
        fold.append(index // (2 * per_fold) if per_fold else 0)
    if len(counts) == 1 and (len(first) != 2 * counts[0] or sum(same) != counts[0]):
        # A truncated pairsDevTest.txt was scored as if whole, to a figure that meant little.
        raise UserError(
            f"{path}: the header promises {counts[0]} same-person and {counts[0]} "
            f"different-person pairs ({2 * counts[0]} lines), but the file has "
            f"{sum(same)} and {len(first) - sum(same)}"
        )
    if per_fold is not None and len(first) != 2 * folds * per_fold:
        raise UserError(
            f"{path}: the header promises {folds} folds of {per_fold} same-person and "
            f"{per_fold} different-person pairs ({2 * folds * per_fold} lines), but the file "
            f"has {len(first)}"
        )
    genuine = sum(same)
    if genuine == 0 or genuine == len(same):
        raise UserError(
            f"{path}: {genuine} same-person and {len(same) - genuine} different-person pairs; "
            "a threshold needs at least one of each"
        )
    return PairList(first, second, np.array(same), np.array(fold), folds)


def people_in_pairs(path: Path) -> set[str]:
    """Every person a pair list names, in same- and different-person rows."""
    pairs = read_pairs(path)
    return {name.split("/")[0] for name in pairs.first + pairs.second}


def best_threshold(distances: np.ndarray, same: np.ndarray) -> float:
    """The distance cut that maximises accuracy, from all midpoints at once."""
    order = np.sort(np.unique(distances))
    candidates = np.concatenate(
        [[order[0] - 1e-6], (order[:-1] + order[1:]) / 2, [order[-1] + 1e-6]]
    )
    predicted = distances[None, :] <= candidates[:, None]  # (T, P)
    accuracy = (predicted == same[None, :]).mean(axis=1)
    return float(candidates[int(np.argmax(accuracy))])


def accuracy_at(distances: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(((distances <= threshold) == same).mean())


def cross_validated_accuracy(
    distances: np.ndarray, same: np.ndarray, fold: np.ndarray, folds: int = 10
) -> tuple[float, float, list[float]]:
    """Threshold chosen on the other folds, applied to each held-out fold: mean, std, per fold."""
    if len(np.unique(fold)) < 2:
        fold = np.arange(len(distances)) % folds
    scores = []
    for k in np.unique(fold):
        test = fold == k
        threshold = best_threshold(distances[~test], same[~test])
        scores.append(accuracy_at(distances[test], same[test], threshold))
    return float(np.mean(scores)), float(np.std(scores)), scores


def validation_rate(distances: np.ndarray, same: np.ndarray, far: float = 1e-3) -> float:
    """Share of same-person pairs accepted at the largest threshold keeping FAR <= far."""
    different = np.sort(distances[~same])
    allowed = int(np.floor(far * len(different)))
    # accept distances strictly below the (allowed+1)-th smallest impostor distance
    threshold = different[allowed] if allowed < len(different) else np.inf
    return float((distances[same] < threshold).mean())


def central_face(faces: Faces, width: int, height: int) -> int | None:
    """The face LFW labels: LFW images are centred on their subject, so among several
    detections take the largest one near the centre (area minus squared offset, as
    davidsandberg's align_dataset_mtcnn does)."""
    if len(faces) == 0:
        return None
    size = (faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])
    centre = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2 - np.array([width, height]) / 2
    return int(np.argmax(size - 2.0 * np.sum(centre**2, axis=1)))


def fallback_face(width: int, height: int) -> Faces:
    """Where no face is found, the box the median LFW face occupies (measured on DevTrain
    with the float cascade), so that every pair still gets a verdict."""
    box = np.array([[*LFW_MEDIAN_BOX]], np.float32) * np.array([width, height, width, height])
    landmarks = np.zeros((1, 5, 2), np.float32)
    return Faces(box.astype(np.float32), np.zeros((1,), np.float32), landmarks)


def labelled_face(faces: Faces, width: int, height: int) -> tuple[Faces, bool]:
    """The one face an LFW image is labelled with, and whether it was detected: the central
    detection (central_face), else the median LFW face box (fallback_face), so every image
    still gets an embedding."""
    index = central_face(faces, width, height)
    if index is None:
        return fallback_face(width, height), False
    return faces[index], True


def rel(path: Path) -> str:
    """An image path as LFW names it (Person/Person_0001.jpg), so reports are machine-free."""
    return f"{path.parent.name}/{path.name}"


def photos_by_person(images: Path) -> dict[str, list[Path]]:
    """Every person in an LFW images folder -> their photos, sorted."""
    if not images.is_dir():
        raise UserError(f"--images {images}: not a folder of LFW <Name>/<Name>_NNNN.jpg")
    return {
        folder.name: sorted(folder.glob("*.jpg"))
        for folder in sorted(images.iterdir())
        if folder.is_dir()
    }


def wilson(successes: int, total: int, z: float = 1.96) -> list[float]:
    """95% Wilson interval of a proportion: with 40 probes one probe is 2.5 points, so a rate
    alone overstates what was measured."""
    if total == 0:
        return [0.0, 1.0]
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [round(float(max(centre - half, 0.0)), 4), round(float(min(centre + half, 1.0)), 4)]


def development_scores(
    embeddings: np.ndarray, rows: dict[str, int], train: PairList, test: PairList
) -> dict[str, Any]:
    """LFW development figures of unit embeddings (one row per image name in `rows`):
    DevTest and DevTrain at the threshold chosen on DevTrain, 10-fold on both, VAL@FAR."""

    def distances(pairs: PairList) -> np.ndarray:
        a = embeddings[[rows[n] for n in pairs.first]]
        b = embeddings[[rows[n] for n in pairs.second]]
        return 1.0 - np.sum(a * b, axis=1)

    d_train, d_test = distances(train), distances(test)
    threshold = best_threshold(d_train, train.same)
    cv, cv_std, _ = cross_validated_accuracy(d_test, test.same, test.fold, 10)
    train_cv, _, _ = cross_validated_accuracy(d_train, train.same, train.fold, 10)
    return {
        "devtest_accuracy": round(accuracy_at(d_test, test.same, threshold), 4),
        "devtest_10fold": round(cv, 4),
        "devtest_10fold_std": round(cv_std, 4),
        "devtrain_accuracy": round(accuracy_at(d_train, train.same, threshold), 4),
        "devtrain_10fold": round(train_cv, 4),
        "threshold_cosine": round(1.0 - threshold, 4),
        "val_at_far_1e-3": round(validation_rate(d_test, test.same, 1e-3), 4),
    }
