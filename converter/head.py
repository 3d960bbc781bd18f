"""An adaptation head on FaceNet's 512-d output: trained, quantised, measured on unseen people.

The head is a residual linear map, applied to FaceNet's raw output before centring:

    y = x + B (A x)          A: rank x 512, B: 512 x rank, B starts at 0 (so y = x at first)

so an untrained head is the identity and training can only move away from FaceNet as far as
the data asks. With rank 512 it is a full 512 x 512 map. It has no bias, so it commutes with
scaling: unit(head(x)) = unit(head(unit(x))). As TFLite it is two FULLY_CONNECTED ops, a
RESHAPE the converter adds and one ADD, int8 in and out, all ops the Edge TPU maps.

Training (LFW DevTrain images only): FaceNet's triplet loss on unit embeddings with squared
Euclidean distances and margin ALPHA,

    loss = mean over triplets of max(|a - p|^2 - |a - n|^2 + ALPHA, 0),

with online semi-hard mining inside each batch: for every anchor-positive pair the negative
is the closest one that is still farther from the anchor than the positive but within the
margin (|a - p|^2 < |a - n|^2 < |a - p|^2 + ALPHA); pairs with no such negative are left
out, as the FaceNet paper does to avoid collapsing on the hardest negatives. Each image comes
in several views, one drawn at random per batch: the crop the engine makes, its mirror image
(both from the shared cache of raw FaceNet outputs, benchmarks/centering.py `embed`), and
JITTERS crops of a face box shifted and scaled at random (SHIFT, SCALE), every second one
mirrored, embedded with the real int8 FaceNet through edge_app.engine.Engine.

Measurement uses the engine's own post-processing: the mean embedding is recomputed on
DevTrain after the head, embeddings are centred on it (edge_app.centering), and scored on
LFW DevTest with the threshold from DevTrain and by 10-fold cross-validation, and in the
open-set door simulation of converter.recognition run on DevTest people with the threshold,
aggregate and margin derived on DevTrain. The same figures are computed without a head
(the shipped pipeline) so the two can be compared line by line.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.bounded_read import missing_or_kind, read_bounded, zip_unpacked_bytes
from edge_app.centering import EMBEDDING_DIM, centre, mean_of, unit
from edge_app.errors import UserError, os_reason
from edge_app.lfw import (
    TEST_PAIRS,
    TRAIN_PAIRS,
    development_scores,
    read_pairs,
    validation_rate,
)
from edge_app.manifest import sha256_file
from edge_app.private_file import write_private_bytes
from edge_app.progress import Progress
from edge_app.reports import check_distinct, check_output, write_report

log = logging.getLogger(__name__)

HEAD_ROLE = "head"
HEAD_FILE = "head.tflite"
HEAD_MEAN_FILE = "head_mean.npy"
ENTRY_FILE = "head.json"
INSTALLED = (HEAD_FILE, HEAD_MEAN_FILE, ENTRY_FILE)  # in this order: the entry file last
CACHE_KEYS = ("names", "raw", "mirror")
# The largest .npz read (--cache, --jitter-cache), as a file and as its arrays unpacked: raw
# and mirror outputs of all 13,233 LFW images in float64 are 108 MB.
MAX_NPZ_BYTES = 1024 * 1024 * 1024
# What reading a damaged or hostile .npz raises (_read_npz).
_NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)

# The largest seed: numpy's legacy seeding (np.random.seed, which Keras' set_random_seed
# calls) takes 0 to 2**32 - 1.
MAX_SEED = 2**32 - 1
ALPHA = 0.2  # FaceNet's triplet margin on squared distances between unit embeddings
JITTERS = 2  # jittered crops per DevTrain image (every second one mirrored)
SHIFT = 0.06  # largest shift of the face box, as a fraction of its width/height
SCALE = 0.08  # largest relative change of the face box size
# One standard error of an accuracy near 98.7% on LFW DevTest's 1,000 pairs, in points:
# sqrt(0.987 * 0.013 / 1000) = 0.36 pp. The head is worth adopting only above this.
NOISE_PP = 0.4


class HeadError(UserError):
    """Bad input to `edge-convert train-head`; the message names the file and the fix."""


@dataclass(frozen=True)
class TrainSettings:
    """Defaults chosen on held-out DevTrain people (`--holdout`, docs/ADAPTATION_HEAD.md):
    the settings tried tie there, so the smallest head is the default."""

    rank: int = 8
    steps: int = 400
    people: int = 48  # people with 2+ images per batch
    per_person: int = 4  # images per such person (fewer when they have fewer)
    negatives: int = 64  # further images of other people per batch
    learning_rate: float = 3e-4
    weight_decay: float = 1e-3  # on A and B: pulls the head towards the identity
    alpha: float = ALPHA
    seed: int = 0

    def check(self) -> None:
        if not 1 <= self.rank <= EMBEDDING_DIM:
            raise HeadError(f"--rank must be 1..{EMBEDDING_DIM}, got {self.rank}")
        if self.steps < 1:
            raise HeadError(f"--steps must be at least 1, got {self.steps}")
        if self.people < 2 or self.per_person < 2:
            raise HeadError("a batch needs at least 2 people with at least 2 images each")
        if not (self.learning_rate > 0 and self.weight_decay >= 0 and self.alpha > 0):
            raise HeadError("learning rate and margin must be positive, weight decay >= 0")
        if not 0 <= self.seed <= MAX_SEED:
            raise HeadError(f"--seed must be 0..{MAX_SEED}, got {self.seed}")


@dataclass(frozen=True)
class HeadOptions:
    cache: Path
    lfw: Path
    out: Path
    jitter_cache: Path | None = None
    jitters: int = JITTERS
    models: Path | None = None
    json: Path | None = None
    threads: int | None = None
    holdout: float = 0.0  # share of DevTrain people kept out of training, to choose settings
    settings: TrainSettings = TrainSettings()


# ---- triplets ------------------------------------------------------------------------------


def squared_distances(embeddings: np.ndarray) -> np.ndarray:
    """(N, N) squared Euclidean distances between rows (unit rows: 2 - 2 cos)."""
    gram = embeddings @ embeddings.T
    norms = np.diag(gram)
    return np.maximum(norms[:, None] + norms[None, :] - 2.0 * gram, 0.0)


def semi_hard_triplets(
    distances: np.ndarray, labels: np.ndarray, alpha: float = ALPHA
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FaceNet's online semi-hard mining on a batch's (N, N) squared distances.

    For every ordered anchor-positive pair (same label, different rows) the negative is the
    closest row of another label with d(a, p) < d(a, n) < d(a, p) + alpha; pairs without one
    are dropped. Returns index arrays (anchors, positives, negatives)."""
    labels = np.asarray(labels)
    same = labels[:, None] == labels[None, :]
    anchors, positives = np.nonzero(same & ~np.eye(len(labels), dtype=bool))
    d_ap = distances[anchors, positives][:, None]  # (T, 1)
    d_an = distances[anchors]  # (T, N)
    ok = ~same[anchors] & (d_an > d_ap) & (d_an < d_ap + alpha)
    candidate = np.where(ok, d_an, np.inf)
    negatives = np.argmin(candidate, axis=1)
    keep = np.isfinite(candidate[np.arange(len(anchors)), negatives])
    return anchors[keep], positives[keep], negatives[keep]


def triplet_loss(embeddings: np.ndarray, labels: np.ndarray, alpha: float = ALPHA) -> float:
    """Mean hinge over every valid (anchor, positive, negative) triplet of unit embeddings:
    the quantity training lowers, measured without mining."""
    distances = squared_distances(unit(embeddings))
    labels = np.asarray(labels)
    same = labels[:, None] == labels[None, :]
    anchors, positives = np.nonzero(same & ~np.eye(len(labels), dtype=bool))
    if len(anchors) == 0:
        raise HeadError("no two embeddings share a label: there are no triplets")
    hinge = distances[anchors, positives][:, None] - distances[anchors] + alpha
    valid = ~same[anchors]
    return float(np.maximum(hinge, 0.0)[valid].mean())


# ---- the head ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """The trained map y = x + (x A^T) B^T as two matrices: down (rank, 512), up (512, rank)."""

    down: np.ndarray
    up: np.ndarray

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def apply(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, np.float32)
        return (raw + (raw @ self.down.T) @ self.up.T).astype(np.float32)

    def keras(self) -> Any:
        """The head as a batch-1 Keras model: Dense(rank) -> Dense(512) -> Add with the input."""
        import tensorflow as tf

        inputs = tf.keras.Input(shape=(EMBEDDING_DIM,), batch_size=1, name="embedding_in")
        low = tf.keras.layers.Dense(self.rank, use_bias=False, name="head_down")(inputs)
        back = tf.keras.layers.Dense(EMBEDDING_DIM, use_bias=False, name="head_up")(low)
        outputs = tf.keras.layers.Add(name="head_out")([inputs, back])
        model = tf.keras.Model(inputs, outputs, name="adaptation_head")
        model.get_layer("head_down").set_weights([self.down.T])
        model.get_layer("head_up").set_weights([self.up.T])
        return model


def _seed_everything(seed: int) -> None:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


class _Batches:
    """Random P x K batches of views plus extra negatives, seeded."""

    def __init__(self, labels: np.ndarray, views: int, settings: TrainSettings) -> None:
        self.labels = labels
        self.views = views
        self.settings = settings
        by_label: defaultdict[int, list[int]] = defaultdict(list)
        for row, label in enumerate(labels):
            by_label[int(label)].append(row)
        self.groups = {k: np.array(v) for k, v in by_label.items()}
        self.multi = np.array(sorted(k for k, v in self.groups.items() if len(v) >= 2))
        if len(self.multi) < 2:
            raise HeadError("training needs at least 2 people with 2 or more images")
        self.rng = np.random.default_rng(settings.seed)

    def __call__(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, views, labels) of one batch."""
        s, rng = self.settings, self.rng
        people = rng.choice(self.multi, size=min(s.people, len(self.multi)), replace=False)
        rows = [
            rng.choice(self.groups[p], size=min(s.per_person, len(self.groups[p])), replace=False)
            for p in people
        ]
        chosen = np.concatenate(rows)
        others = np.flatnonzero(~np.isin(self.labels, people))
        if len(others) and s.negatives:
            extra = rng.choice(others, size=min(s.negatives, len(others)), replace=False)
            chosen = np.concatenate([chosen, extra])
        views = rng.integers(0, self.views, size=len(chosen))
        return chosen, views, self.labels[chosen]


def train_head(
    views: np.ndarray,
    labels: np.ndarray,
    settings: TrainSettings,
    progress: bool = True,
    on_step: Callable[[int, Head], None] | None = None,
) -> tuple[Head, list[float]]:
    """Train on (N, V, 512) raw embeddings (V views of each of N images) with labels (N,).

    Returns the head and the mean mined-triplet loss of each step. Deterministic for a seed."""
    import tensorflow as tf

    settings.check()
    if views.ndim != 3 or views.shape[2] != EMBEDDING_DIM or len(views) != len(labels):
        raise HeadError(f"expected (N, views, {EMBEDDING_DIM}) embeddings and N labels")
    _seed_everything(settings.seed)
    inputs = unit(views.reshape(-1, EMBEDDING_DIM)).reshape(views.shape)
    init = np.random.default_rng(settings.seed).normal(
        0.0, 1.0 / np.sqrt(EMBEDDING_DIM), size=(settings.rank, EMBEDDING_DIM)
    )
    down = tf.Variable(init.astype(np.float32), name="down")
    up = tf.Variable(np.zeros((EMBEDDING_DIM, settings.rank), np.float32), name="up")
    optimizer = tf.keras.optimizers.Adam(settings.learning_rate)
    batches = _Batches(np.asarray(labels), views.shape[1], settings)
    losses: list[float] = []
    steps = Progress(
        range(settings.steps), desc="training head", unit="step", disable=None if progress else True
    )
    for step in steps:
        rows, view, batch_labels = batches()
        x = tf.constant(inputs[rows, view])
        with tf.GradientTape() as tape:
            y = x + tf.matmul(tf.matmul(x, down, transpose_b=True), up, transpose_b=True)
            e = tf.math.l2_normalize(y, axis=1)
            gram = tf.matmul(e, e, transpose_b=True)
            dist = tf.maximum(2.0 - 2.0 * gram, 0.0)
            a, p, n = semi_hard_triplets(dist.numpy(), batch_labels, settings.alpha)
            if len(a):
                d_ap = tf.gather_nd(dist, np.stack([a, p], 1))
                d_an = tf.gather_nd(dist, np.stack([a, n], 1))
                loss = tf.reduce_mean(tf.maximum(d_ap - d_an + settings.alpha, 0.0))
            else:
                loss = tf.constant(0.0)
            decay = settings.weight_decay * (tf.reduce_sum(down**2) + tf.reduce_sum(up**2))
            total = loss + decay
        grads = tape.gradient(total, [down, up])
        optimizer.apply_gradients(zip(grads, [down, up], strict=True))
        losses.append(float(loss))
        if on_step is not None:
            on_step(step, Head(down.numpy(), up.numpy()))
    return Head(down.numpy().astype(np.float32), up.numpy().astype(np.float32)), losses


# ---- int8 TFLite ---------------------------------------------------------------------------


def quantise_head(head: Head, representative: np.ndarray) -> bytes:
    """Full-int8 TFLite (int8 input and output, int8 kernels only), calibrated on
    `representative` raw FaceNet outputs."""
    import tensorflow as tf

    rows = np.asarray(representative, np.float32)

    def samples() -> Iterator[list[np.ndarray]]:
        for row in rows:
            yield [row[None, :]]

    converter = tf.lite.TFLiteConverter.from_keras_model(head.keras())
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return bytes(converter.convert())


class Int8Head:
    """The int8 head in the TFLite interpreter: float raw embeddings in, float out."""

    def __init__(self, path: Path) -> None:
        from edge_app.runtime import find_runtime

        self.interpreter = find_runtime().interpreter_class(model_path=str(path))
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def apply(self, raw: np.ndarray) -> np.ndarray:
        in_scale, in_zero = self.input["quantization"]
        out_scale, out_zero = self.output["quantization"]
        q = np.clip(np.round(np.asarray(raw, np.float32) / in_scale) + in_zero, -128, 127)
        q = q.astype(np.int8)
        out = np.empty((len(q), EMBEDDING_DIM), np.float32)
        for row in range(len(q)):
            self.interpreter.set_tensor(self.input["index"], q[row : row + 1])
            self.interpreter.invoke()
            out[row] = self.interpreter.get_tensor(self.output["index"])[0]
        return ((out - out_zero) * out_scale).astype(np.float32)


# ---- data ----------------------------------------------------------------------------------


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz at `path`, read bounded: a regular file of at most
    MAX_NPZ_BYTES (edge_app.bounded_read) whose arrays unpack to at most as much (the sizes
    its zip directory declares, which zipfile holds every member to). No pickles. Raises one
    of _NPZ_ERRORS: a .npy or other non-zip file is zipfile.BadZipFile."""
    data = read_bounded(path, MAX_NPZ_BYTES)
    unpacked = zip_unpacked_bytes(data)
    if unpacked is None:
        raise zipfile.BadZipFile("File is not a zip file")
    if unpacked > MAX_NPZ_BYTES:
        raise ValueError(f"its arrays unpack to {unpacked} bytes, over {MAX_NPZ_BYTES}")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def load_cache(path: Path) -> dict[str, np.ndarray]:
    """The raw FaceNet outputs of every LFW development image (benchmarks/centering.py)."""
    fix = f"build it with `python -m benchmarks.centering embed --cache {path}`"
    if not path.is_file():
        if os.path.lexists(path):  # not to be written over either: say what it is
            raise HeadError(f"{path}: {missing_or_kind(path, 'file')}; give the embeddings cache")
        raise HeadError(f"{path}: no such embeddings cache; {fix}")
    try:
        cache = _read_npz(path)
    except _NPZ_ERRORS as error:
        raise HeadError(f"{path}: not a readable .npz embeddings cache ({error}); {fix}") from None
    missing = [key for key in CACHE_KEYS if key not in cache]
    if missing:
        raise HeadError(f"{path}: missing {', '.join(missing)}; {fix}")
    names = cache["names"]
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise HeadError(
            f"{path}: 'names' must be a list of image names (1-D text), not a {names.ndim}-D "
            f"{names.dtype} array; {fix}"
        )
    count = len(names)
    for key in ("raw", "mirror"):
        array = cache[key]
        if (
            array.shape != (count, EMBEDDING_DIM)
            or array.dtype.kind not in "fiu"
            or not np.all(np.isfinite(array))
        ):
            raise HeadError(
                f"{path}: {key!r} must hold {count} rows of {EMBEDDING_DIM} finite numbers; {fix}"
            )
    cache["names"] = cache["names"].astype(str)
    return cache


def pair_lists(lfw: Path) -> tuple[Any, Any]:
    for name in (TRAIN_PAIRS, TEST_PAIRS):
        if not (lfw / name).is_file():
            raise HeadError(f"{lfw}: no {name} there; --lfw must be the LFW folder with both lists")
    return read_pairs(lfw / TRAIN_PAIRS), read_pairs(lfw / TEST_PAIRS)


def rows_of(cache: dict[str, np.ndarray], names: list[str], where: Path) -> np.ndarray:
    index = {str(n): i for i, n in enumerate(cache["names"])}
    missing = [n for n in names if n not in index]
    if missing:
        raise HeadError(
            f"{where}: {len(missing)} images of the pair lists are not in the cache (first: "
            f"{missing[0]}); rebuild it with `python -m benchmarks.centering embed`"
        )
    return np.array([index[n] for n in names])


def jitter_faces(face: Any, count: int, rng: np.random.Generator) -> list[Any]:
    """`count` copies of one detected face with the box shifted and scaled at random."""
    from edge_app.faces import Faces

    box = face.boxes[0].astype(np.float64)
    size = box[2:] - box[:2]
    middle = (box[:2] + box[2:]) / 2
    jittered = []
    for _ in range(count):
        shift = rng.uniform(-SHIFT, SHIFT, size=2) * size
        scale = 1.0 + rng.uniform(-SCALE, SCALE)
        half = size * scale / 2
        centre_ = middle + shift
        new = np.concatenate([centre_ - half, centre_ + half]).astype(np.float32)[None]
        jittered.append(Faces(new, face.scores, face.landmarks))
    return jittered


def embed_jitters(
    lfw: Path, names: list[str], count: int, models: Path | None, threads: int | None, seed: int
) -> np.ndarray:
    """(N, count, 512) raw FaceNet outputs of jittered crops, every second one mirrored,
    detected and embedded exactly as benchmarks/centering.py embeds the cache."""
    from edge_app.engine import Engine
    from edge_app.images import read_image
    from edge_app.lfw import labelled_face

    engine = Engine.open(models, backend="cpu", threads=threads)
    rng = np.random.default_rng(seed)
    out = np.zeros((len(names), count, EMBEDDING_DIM), np.float32)
    for row, name in enumerate(Progress(names, desc="jittered crops", unit="image", disable=None)):
        frame = read_image(lfw / "images" / name)
        face, _ = labelled_face(engine.detect(frame), frame.shape[1], frame.shape[0])
        for k, jittered in enumerate(jitter_faces(face, count, rng)):
            out[row, k] = engine.embed_raw(frame, jittered, mirror=k % 2 == 1)[0]
    return out


def load_or_embed_jitters(options: HeadOptions, names: list[str]) -> np.ndarray:
    """The jittered views of the DevTrain images, from options.jitter_cache when it holds
    them (same names, same count), else embedded now and saved there."""
    count = options.jitters
    if count == 0:
        return np.zeros((len(names), 0, EMBEDDING_DIM), np.float32)
    recipe = {
        "seed": np.array(options.settings.seed),
        "shift": np.array(SHIFT),
        "scale": np.array(SCALE),
    }
    path = options.jitter_cache
    if path is not None and path.is_file():
        try:
            data = _read_npz(path)
            cached_names, views = data["names"], data["jitter"]
            data_recipe = {key: data[key] for key in recipe if key in data}
        except (*_NPZ_ERRORS, KeyError) as error:
            raise HeadError(f"{path}: not a jitter cache ({error}); delete it to rebuild") from None
        if (
            cached_names.ndim == 1
            and cached_names.dtype.kind in "US"
            and list(cached_names.astype(str)) == names
            and views.dtype.kind in "fiu"
            and views.shape == (len(names), count, EMBEDDING_DIM)
            and _jitter_recipe(data_recipe) == _jitter_recipe(recipe)
        ):
            return views.astype(np.float32)
        log.warning("jitter cache %s is for other images or jitters; embedding again", path)
    if not (options.lfw / "images").is_dir():
        raise HeadError(
            f"{options.lfw}: no images/ folder to embed jittered crops from; pass --jitters 0 "
            "to train on the cached crops and mirror images only"
        )
    start = time.perf_counter()
    views = embed_jitters(
        options.lfw, names, count, options.models, options.threads, options.settings.seed
    )
    log.info("jittered crops: %d images x %d in %.0f s", len(names), count,
             time.perf_counter() - start)  # fmt: skip
    if path is not None:
        _save_npz(path, names=np.array(names), jitter=views, **recipe)
    return views


def _jitter_recipe(arrays: dict[str, np.ndarray]) -> dict[str, float] | None:
    """The recipe's numbers; None when one is not a single number (a damaged cache)."""
    if any(value.shape != () or value.dtype.kind not in "fiu" for value in arrays.values()):
        return None
    return {key: float(value) for key, value in arrays.items()}


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Written under a temporary name beside `path` and renamed: never half a cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private_bytes(
        path,
        lambda handle: np.savez(handle, **arrays),  # type: ignore[arg-type]  # stub: **kwds bool
    )


# ---- measurement ---------------------------------------------------------------------------


def open_set(
    train_embeddings: np.ndarray,
    train_names: list[str],
    test_embeddings: np.ndarray,
    test_names: list[str],
) -> dict[str, Any]:
    """converter.recognition's door simulation: threshold, aggregate and margin derived on
    DevTrain, then the same simulation on DevTest people at those settings (and, for
    reference, at DevTest's own stranger limit)."""
    from converter.recognition import (
        TARGET_FAR,
        TRIALS,
        Population,
        _trial_scores,
        derive_from_embeddings,
    )
    from edge_app.matching import accepts, stranger_threshold

    # Photos alone, no centroid: the head is compared on the embeddings themselves.
    derived = derive_from_embeddings(train_embeddings, train_names, centroid=False)
    population = Population.of(test_embeddings, test_names)
    rng = np.random.default_rng(0)
    trials = [
        _trial_scores(population, rng, derived["aggregate"], None, False) for _ in range(TRIALS)
    ]
    g_best, g_second, correct, s_best, s_second = (
        np.concatenate(parts) for parts in zip(*trials, strict=True)
    )
    threshold, margin = derived["threshold"], derived["margin"]
    s_pass = accepts(s_best, s_second, threshold, margin)
    g_pass = accepts(g_best, g_second, threshold, margin) & correct
    own = stranger_threshold(s_best, s_second, margin, far=TARGET_FAR)
    own_pass = accepts(g_best, g_second, own, margin) & correct
    devtrain_identified = next(
        c["identified"]
        for c in derived["candidates"]
        if c["aggregate"] == derived["aggregate"] and c["margin"] == derived["margin"]
    )
    return {
        "threshold": derived["threshold"],
        "aggregate": derived["aggregate"],
        "margin": derived["margin"],
        "devtrain_identified": round(devtrain_identified, 4),
        "devtest_identified": round(float(g_pass.mean()), 4),
        "devtest_stranger_accept": round(float(s_pass.mean()), 5),
        "devtest_strangers": int(len(s_best)),
        "devtest_probes": int(len(g_best)),
        "devtest_own_limit_threshold": round(own, 4),
        "devtest_identified_at_own_limit": round(float(own_pass.mean()), 4),
    }


def held_out(outputs: np.ndarray, labels: np.ndarray, held: np.ndarray) -> dict[str, float]:
    """Verification among the images of held-out DevTrain people (every pair of them),
    centred on the mean of the other DevTrain images: VAL at FAR 1e-3, the best balanced
    accuracy, and the triplet loss. For choosing settings without touching DevTest."""
    embeddings = centre(outputs[held], mean_of(outputs[~held]))
    people = labels[held]
    upper = np.triu_indices(len(embeddings), 1)
    distances = (1.0 - embeddings @ embeddings.T)[upper]
    same = (people[:, None] == people[None, :])[upper]
    positive, negative = np.sort(distances[same]), np.sort(distances[~same])
    cuts = np.concatenate([positive, negative])
    balanced = (
        np.searchsorted(positive, cuts, side="right") / len(positive)
        + 1.0
        - np.searchsorted(negative, cuts, side="right") / len(negative)
    ) / 2
    return {
        "val_at_far_1e-3": round(validation_rate(distances, same, 1e-3), 4),
        "balanced_accuracy": round(float(balanced.max()), 4),
        "triplet_loss": round(triplet_loss(outputs[held], people), 6),
        "same_pairs": int(same.sum()),
        "different_pairs": int((~same).sum()),
    }


def measure(
    outputs: np.ndarray, cache: dict[str, np.ndarray], train: Any, test: Any
) -> dict[str, Any]:
    """The engine's post-processing on (N, 512) outputs (after a head, or raw FaceNet):
    DevTrain mean, centring, cosine; LFW pair scores and the open-set simulation."""
    rows = {str(n): i for i, n in enumerate(cache["names"])}
    train_rows = [rows[n] for n in train.images]
    test_rows = [rows[n] for n in test.images]
    mean = mean_of(outputs[train_rows])
    embeddings = centre(outputs, mean)
    result = development_scores(embeddings, rows, train, test)
    result["open_set"] = open_set(
        embeddings[train_rows], train.images, embeddings[test_rows], test.images
    )
    result["mean_norm"] = round(float(np.linalg.norm(mean)), 4)
    return result


# ---- the command ---------------------------------------------------------------------------


def _check_files(options: HeadOptions) -> None:
    """The files written after the training: refused now when they cannot be written, are
    not regular files (a device, a named pipe, a link), would overwrite an input (the
    embeddings cache is minutes of work to rebuild) or land in an input folder, or, for
    --json, in --out (where it could replace the head it reports on)."""
    check_output(options.jitter_cache, "--jitter-cache", parents=True)
    check_output(options.json, "--json")
    inputs: dict[str, Path | None] = {
        "--cache": options.cache,
        "--lfw": options.lfw,
        "--models": options.models,
    }
    check_distinct({"--jitter-cache": options.jitter_cache, "--json": options.json}, inputs)
    check_distinct({"--json": options.json}, {"--out": options.out})


def _check_out(out: Path) -> None:
    """Before any training: a folder, or a new one in a folder that exists, that this user
    may write, where each of the three files is a file if it is there (a minutes-long run
    must not end in a traceback, or with one new file beside two old ones)."""
    if out.exists() and not out.is_dir():
        raise HeadError(f"--out {out} is a file; give a folder")
    if not out.parent.is_dir():
        raise HeadError(f"--out {out}: its parent folder {out.parent} does not exist")
    folder = out if out.is_dir() else out.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise HeadError(f"--out {out}: cannot write in {folder}")
    for name in INSTALLED:
        target = out / name
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise HeadError(f"--out {out}: {target} is not a regular file; move it away")


def _entry(path: Path, head: Head, settings: TrainSettings) -> dict[str, Any]:
    from converter.quantize import describe_tensors

    inputs, outputs = describe_tensors(path)
    return {
        "role": HEAD_ROLE,
        "file": path.name,
        "sha256": sha256_file(path),
        "inputs": inputs,
        "outputs": outputs,
        "scale": None,
        "edgetpu": None,
        "patch": None,
        "rank": head.rank,
        "applies_to": "FaceNet's raw 512-d output, before normalisation and centring",
    }


def run(options: HeadOptions) -> dict[str, Any]:
    """Train, quantise, lint and measure; write OUT/head.tflite, OUT/head_mean.npy and
    OUT/head.json (the manifest entry, the mean, the recognition block and the figures)."""
    settings = options.settings
    settings.check()
    if options.jitters < 0:
        raise HeadError(f"--jitters must be 0 or more, got {options.jitters}")
    if not 0.0 <= options.holdout < 1.0:
        raise HeadError(f"--holdout must be in [0, 1), got {options.holdout}")
    _check_out(options.out)
    _check_files(options)
    train, test = pair_lists(options.lfw)
    cache = load_cache(options.cache)
    train_rows = rows_of(cache, train.images, options.cache)
    rows_of(cache, test.images, options.cache)
    jitter = load_or_embed_jitters(options, train.images)
    views = np.concatenate(
        [cache["raw"][train_rows, None], cache["mirror"][train_rows, None], jitter], axis=1
    )
    people = np.array([n.split("/")[0] for n in train.images])
    names, labels = np.unique(people, return_inverse=True)
    held = np.random.default_rng(settings.seed).random(len(names)) < options.holdout
    held = held[labels]
    if options.holdout and (held.all() or not held.any()):
        raise HeadError(f"--holdout {options.holdout} leaves no people on one side")
    start = time.perf_counter()
    head, losses = train_head(views[~held], labels[~held], settings)
    seconds = time.perf_counter() - start
    fitted = cache["raw"][train_rows][~held]
    loss_before = triplet_loss(fitted, labels[~held], settings.alpha)
    loss_after = triplet_loss(head.apply(fitted), labels[~held], settings.alpha)

    from converter.lint import format_report, lint_model

    made = not options.out.exists()
    try:
        # Staged inside --out: a rename from its parent fails when --out is a mount point.
        options.out.mkdir(exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".head-", dir=options.out))
    except OSError as error:
        raise HeadError(f"--out {options.out}: cannot write there ({os_reason(error)})") from None
    try:
        model_path = staging / HEAD_FILE
        model_path.write_bytes(quantise_head(head, cache["raw"][train_rows]))
        violations = lint_model(model_path, HEAD_FILE)
        if violations:
            raise HeadError("the int8 head fails the Edge TPU lint:\n" + format_report(violations))
        int8 = Int8Head(model_path)
        outputs = {
            "no head (shipped)": cache["raw"],
            "head float": head.apply(cache["raw"]),
            "head int8": int8.apply(cache["raw"]),
        }
        figures = {}
        for label, values in outputs.items():
            figures[label] = measure(values, cache, train, test)
            log.info("%s: %s", label, json.dumps({k: v for k, v in figures[label].items()}))
        agreement = _agreement(outputs["head float"], outputs["head int8"])
        mean = mean_of(outputs["head int8"][train_rows])
        np.save(staging / HEAD_MEAN_FILE, mean)
        gain = 100 * (
            figures["head int8"]["devtest_accuracy"]
            - figures["no head (shipped)"]["devtest_accuracy"]
        )
        report = {
            "models": {HEAD_ROLE: _entry(model_path, head, settings)},
            "preprocessing": {
                "facenet_mean": {
                    "file": HEAD_MEAN_FILE,
                    "sha256": sha256_file(staging / HEAD_MEAN_FILE),
                    "images": len(train_rows),
                    "source": "LFW pairsDevTrain.txt images: mean of the unit embeddings after "
                    "the int8 head; built by `edge-convert train-head`",
                    "norm": round(float(np.linalg.norm(mean)), 4),
                }
            },
            "recognition": figures["head int8"]["open_set"],
            "training": {
                **asdict(settings),
                "images": int((~held).sum()),
                "identities": int(len(np.unique(labels[~held]))),
                "views_per_image": int(views.shape[1]),
                "jitters": options.jitters,
                "jitter_shift": SHIFT,
                "jitter_scale": SCALE,
                "seconds": round(seconds, 1),
                "mined_loss_first_100": round(float(np.mean(losses[:100])), 4),
                "mined_loss_last_100": round(float(np.mean(losses[-100:])), 4),
                "devtrain_triplet_loss_before": round(loss_before, 5),
                "devtrain_triplet_loss_after": round(loss_after, 5),
            },
            "int8_vs_float": agreement,
            "holdout": None
            if not options.holdout
            else {
                "share_of_people": options.holdout,
                "images": int(held.sum()),
                "no head": held_out(cache["raw"][train_rows], labels, held),
                "head float": held_out(head.apply(cache["raw"][train_rows]), labels, held),
            },
            "figures": figures,
            "devtest_gain_pp": round(gain, 2),
            "noise_pp": NOISE_PP,
            "helps_beyond_noise": bool(gain > NOISE_PP),
        }
        (staging / ENTRY_FILE).write_text(json.dumps(report, indent=2) + "\n")
        _install(staging, options.out)
    except OSError as error:  # a full disk, a file system remounted read-only
        raise HeadError(
            f"--out {options.out}: cannot write the head ({os_reason(error)}); nothing was replaced"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if made:
            with contextlib.suppress(OSError):
                options.out.rmdir()  # only when empty: nothing was installed
    if options.json is not None:
        write_report(options.json, report, "--json")
    return report


def _agreement(reference: np.ndarray, int8: np.ndarray) -> dict[str, float]:
    cosine = np.sum(unit(reference) * unit(int8), axis=1)
    return {
        "cosine_min": round(float(cosine.min()), 5),
        "cosine_mean": round(float(cosine.mean()), 5),
    }


def _install(staging: Path, out: Path) -> None:
    """Move the finished files from `staging` (inside `out`) into `out`, the entry file
    last: all three, or, when a rename fails, the previous ones put back."""
    kept = staging / "previous"
    kept.mkdir()
    moved: list[str] = []
    try:
        for name in INSTALLED:
            if (out / name).exists():
                os.replace(out / name, kept / name)
        for name in INSTALLED:
            os.replace(staging / name, out / name)
            moved.append(name)
    except OSError:
        for name in INSTALLED:
            with contextlib.suppress(OSError):
                if (kept / name).exists():
                    os.replace(kept / name, out / name)
                elif name in moved:
                    (out / name).unlink()
        raise
