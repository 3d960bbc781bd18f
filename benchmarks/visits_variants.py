"""The per-visit evaluation for several door settings on the same visits, sharing work.

`edge-app eval visits` runs the real engine. Comparing settings that differ only after the
FaceNet output (frame votes against pooled track evidence, `[policy] evidence`; centring
and the threshold that goes with it) would repeat the same detection and FaceNet runs on the
same frames. Here the real engine's detect() and raw FaceNet outputs are memoised per frame
(keyed by the frame's bytes and the face boxes), and each variant applies its own settings;
the daemon, tracker, policy, gallery and gates are the real ones in every variant. The
clips are seeded, so every variant sees byte-identical frames. Liveness is not run (the
evaluation runs it in log mode, which never changes a decision).

    .venv/bin/python -m benchmarks.visits_variants --population devtrain
    .venv/bin/python -m benchmarks.visits_variants --population outside-devtrain
    .venv/bin/python -m benchmarks.visits_variants --visitor photo,mirror-averaged

`--visitor mirror-averaged` embeds each visitor face twice at the door, as itself and
mirrored, and matches the unit mean of the two, with the threshold that `make cohort`
derived on DevTrain for exactly that (benchmarks/centroid.json). Enrolment is unchanged.

writes benchmarks/visits_<population>_<variant>.json per variant and prints the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from benchmarks import outputs
from edge_app.camera import Frame
from edge_app.centering import centre, model_identity, unit
from edge_app.config import EVIDENCE
from edge_app.daemon import Recognizer
from edge_app.engine import Engine
from edge_app.evaluate_visits import POPULATIONS, SEED, evaluate_visits, table
from edge_app.faces import Faces
from edge_app.paths import REPO_ROOT, SHARED_DATA
from edge_app.reports import check_output


class MemoEngine:
    """The real engine, memoised per frame; `use()` switches the post-processing variant."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.backend = engine.backend
        self._detections: dict[bytes, Faces] = {}
        self._raw: dict[bytes, np.ndarray] = {}
        self.hits = self.misses = 0
        self.cascade_choice = engine.cascade_choice
        self.has_liveness = False  # log mode never changes a decision: not run here
        [(_, spec)] = engine.manifest.by_role("facenet")
        self._facenet_sha = spec.sha256
        self.use(engine.mean, dict(engine.manifest.recognition))

    def use(self, mean: np.ndarray | None, recognition: dict[str, Any]) -> None:
        self.mean = mean
        preprocessing = {k: v for k, v in self.engine.manifest.preprocessing.items()}
        if mean is None:
            preprocessing.pop("facenet_mean", None)
        else:
            preprocessing["facenet_mean"] = {"file": "(in memory)"}
        self.manifest = dataclasses.replace(
            self.engine.manifest, recognition=recognition, preprocessing=preprocessing
        )
        self.embedding_model = model_identity(self._facenet_sha, mean)
        # The shipped cohort belongs to the shipped embeddings (the engine's own mean) only.
        self.cohort = self.engine.cohort if mean is self.engine.mean else None

    @staticmethod
    def _key(frame: np.ndarray, extra: bytes = b"") -> bytes:
        digest = hashlib.blake2b(np.ascontiguousarray(frame).data, digest_size=20)
        digest.update(repr(frame.shape).encode() + extra)
        return digest.digest()

    def detect(self, frame: np.ndarray) -> Faces:
        key = self._key(frame)
        found = self._detections.get(key)
        if found is None:
            self.misses += 1
            found = self._detections[key] = self.engine.detect(frame)
        else:
            self.hits += 1
        return found

    def embed(self, frame: np.ndarray, faces: Faces, mirror: bool = False) -> np.ndarray:
        boxes = np.ascontiguousarray(faces.boxes, np.float32).tobytes()
        key = self._key(frame, boxes + (b"mirror" if mirror else b""))
        raw = self._raw.get(key)
        if raw is None:
            raw = self._raw[key] = self.engine.embed_raw(frame, faces, mirror=mirror)
        return centre(raw, self.mean)


VISITORS = ("photo", "mirror-averaged")
# benchmarks/centroid.json's variant whose DevTrain rule goes with a mirror-averaged visitor.
MIRROR_RULE = "templates + person centroid, probe mirror-averaged"


def mirror_rule(recognition: dict[str, Any]) -> dict[str, Any]:
    """The manifest's recognition block with the threshold derived for mirror-averaged
    visitors (benchmarks/centroid.json, written by `make cohort` with the shipped cohort)."""
    path = REPO_ROOT / "benchmarks" / "centroid.json"
    rule = json.loads(path.read_text())["variants"][MIRROR_RULE]["devtrain_rule"]
    if not recognition.get("centroid") or rule["aggregate"] != recognition["aggregate"]:
        raise SystemExit(f"{path}: its mirror-averaged rule is not for the shipped templates")
    return {**recognition, "threshold": rule["threshold"], "margin": rule["margin"]}


class _MirrorSide:
    """What Recognizer.embed reads of itself (its engine), embedding the mirrored crops."""

    def __init__(self, engine: Any) -> None:
        self.engine = self
        self._engine = engine

    def embed(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        return self._engine.embed(image, faces, mirror=True)


@contextlib.contextmanager
def mirror_averaged_visitors() -> Iterator[None]:
    """The door embeds each visitor face as itself and mirrored and matches their unit mean;
    enrolment, which calls the engine directly, is untouched."""

    def embed(recognizer: Recognizer, frame: Frame, faces: Faces) -> np.ndarray:
        own = original(recognizer, frame, faces)
        mirrored = original(_MirrorSide(recognizer.engine), frame, faces)  # type: ignore[arg-type]
        return unit(own + mirrored).astype(np.float32)

    original = Recognizer.embed
    with mock.patch.object(Recognizer, "embed", embed):
        yield


def _votes(text: str) -> tuple[int, int]:
    """ "3/5" as (hits, window)."""
    try:
        hits, window = (int(part) for part in text.split("/"))
    except ValueError:
        raise SystemExit(f"--votes: {text!r} is not hits/window, such as 3/5") from None
    return hits, window


def label_of(
    population: str,
    evidence: str,
    refresh: int | None,
    vote: tuple[int, int] | None,
    visitor: str,
    seed: int,
) -> str:
    """A variant's name: its report is benchmarks/visits_<name>.json."""
    label = f"{population}_{evidence}"
    if refresh is not None:
        label += f"_refresh{refresh}"
    if vote is not None:
        label += f"_votes{vote[0]}of{vote[1]}"
    if visitor == "mirror-averaged":
        label += "_mirror-visitor"
    if seed != SEED:
        label += f"_seed{seed}"
    return label


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, default=SHARED_DATA / "lfw")
    parser.add_argument("--population", choices=POPULATIONS, default=POPULATIONS[0])
    parser.add_argument(
        "--evidence",
        default=",".join(EVIDENCE),
        help="comma-separated [policy] evidence variants (default %(default)s)",
    )
    parser.add_argument(
        "--refresh-frames",
        default="",
        help="comma-separated [tracking] refresh_frames variants, each played with every "
        "evidence variant (default: the config default only)",
    )
    parser.add_argument(
        "--votes",
        default="",
        help="comma-separated [policy] hits/window variants such as 3/5,2/5, each played with "
        "every other variant (default: the config default only)",
    )
    parser.add_argument(
        "--visitor",
        default=VISITORS[0],
        help=f"comma-separated ways to embed a visitor face: {', '.join(VISITORS)}, each "
        "played with every other variant (default %(default)s)",
    )
    parser.add_argument("--people", type=int, default=40)
    parser.add_argument("--strangers", type=int, default=300)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks")
    args = parser.parse_args(argv)
    visitors = args.visitor.split(",")
    if unknown := set(visitors) - set(VISITORS):
        parser.error(f"--visitor: {', '.join(sorted(unknown))} is not one of {VISITORS}")
    refreshes: list[int | None] = [int(r) for r in args.refresh_frames.split(",") if r]
    refreshes = refreshes or [None]
    votes: list[tuple[int, int] | None] = [_votes(v) for v in args.votes.split(",") if v]
    votes = votes or [None]
    variants = [
        (e, r, v, m)
        for e in args.evidence.split(",")
        for r in refreshes
        for v in votes
        for m in visitors
    ]
    paths = [
        args.out / f"visits_{label_of(args.population, *variant, args.seed)}.json"
        for variant in variants
    ]
    for path in paths:  # before the minutes of work, not with a traceback after
        check_output(path, "--out", parents=True)  # the folder is made if need be
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING)
    memo = MemoEngine(Engine.open(backend="cpu", cascade="auto"))
    shipped = dict(memo.engine.manifest.recognition)
    for (evidence, refresh, vote, visitor), path in zip(variants, paths, strict=True):
        mirrored = visitor == "mirror-averaged"
        memo.use(memo.engine.mean, mirror_rule(shipped) if mirrored else shipped)
        policy: dict[str, Any] = {"evidence": evidence}
        if vote is not None:
            policy.update(hits=vote[0], window=vote[1])
        start = time.perf_counter()
        with mirror_averaged_visitors() if mirrored else contextlib.nullcontext():
            report = evaluate_visits(
                memo,
                args.lfw,
                people=args.people,
                strangers=args.strangers,
                seed=args.seed,
                population=args.population,
                policy=policy,
                tracking={} if refresh is None else {"refresh_frames": refresh},
            )
        label = label_of(args.population, evidence, refresh, vote, visitor, args.seed)
        report["variant"] = {
            "name": label,
            "visitor": visitor,
            "threshold": memo.manifest.recognition["threshold"],
            "memo_hits": memo.hits,
            "memo_misses": memo.misses,
        }
        outputs.write_json(path, report, "--out")
        seconds = time.perf_counter() - start
        print(f"\n{label} ({seconds:.0f} s)\n{table(report)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
