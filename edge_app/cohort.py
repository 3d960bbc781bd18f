"""Cohort score normalisation: one threshold that holds across people.

A raw cosine score means different things for different people: some faces (often older
faces, glasses, a common pose) sit close to many strangers, so strangers land just over the
threshold for them, while other people's genuine probes land just under it. Normalising
each score against a cohort of faces known to be nobody enrolled (LFW DevTrain people,
shipped with the models as `cohort.npy`) measures it in "how unusual is this similarity for
these two faces" instead:

    sims of x to the cohort  ->  mu(x), sd(x): mean and std of its top_k cohort similarities
    z = (s - mu(template)) / sd(template)      template side, computed once at gallery load
    t = (s - mu(probe)) / sd(probe)            probe side, one (1 x 512) @ (512 x C) per face
    s-norm = (z + t) / 2

The normalised score is put back on the cosine scale with one fixed affine map,
`centre + spread * normalised`, where centre and spread are the mean mu and sd of the cohort
members against the rest of the cohort. The map is monotone, so it changes no decision; it
keeps the manifest threshold, the margin, config overrides and logged scores on the familiar
scale (a very strong match can score above 1).

The cohort file's sha256 and the embedding model it was made with (edge_app.centering's
model identity) are recorded in the manifest's `recognition.cohort` block and checked before
use; the threshold in the same block was derived with this normalisation
(`recognition.normalisation`), so a manifest naming one is refused without the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.centering import EMBEDDING_DIM, unit
from edge_app.manifest import ManifestError, side_file

COHORT_KEY = "cohort"
COHORT_FILE = "cohort.npy"
NORMALISATION_KEY = "normalisation"
MODES = ("z-norm", "t-norm", "s-norm")
# A cohort std below this is treated as this: a degenerate cohort (near-identical rows)
# must not turn a small similarity difference into a huge normalised score.
MIN_SPREAD = 1e-3
MIN_COHORT = 2
# Similarities computed at once, here (rows x cohort, stats()) and in edge_app.matching (probes
# x templates): larger batches go in chunks of about this many, so their arrays (8 MB of
# float32 each) stay bounded as the gallery grows.
CHUNK = 1 << 21


class CohortNormaliser:
    """Cohort statistics and the normalisation of a (probes x samples) similarity block."""

    def __init__(self, cohort: np.ndarray, mode: str = "s-norm", top_k: int | None = None):
        cohort = np.asarray(cohort)
        if cohort.ndim != 2 or cohort.shape[1] != EMBEDDING_DIM or len(cohort) < MIN_COHORT:
            raise ValueError(
                f"a cohort is (C, {EMBEDDING_DIM}) embeddings with C >= {MIN_COHORT}, "
                f"not shape {cohort.shape}"
            )
        if not np.all(np.isfinite(cohort)) or np.any(np.linalg.norm(cohort, axis=1) < 0.5):
            raise ValueError("a cohort holds finite unit embeddings (rows of length 1)")
        if mode not in MODES:
            raise ValueError(f"normalisation must be one of {', '.join(MODES)}, not {mode!r}")
        size = len(cohort)
        top_k = size if top_k is None else int(top_k)
        if not 1 <= top_k <= size:
            raise ValueError(f"top_k {top_k} must be between 1 and the cohort size {size}")
        if not np.issubdtype(cohort.dtype, np.floating):
            raise ValueError(f"a cohort holds floating-point embeddings, not {cohort.dtype}")
        self.mode = mode
        self.top_k = top_k
        # float16 on disk: renormalised so every similarity stays on the cosine scale
        self._cohort_t = np.ascontiguousarray(unit(cohort).T)
        # The cohort's own stats leave each member out (a member is not a stranger to itself).
        own = np.clip(self._cohort_t.T @ self._cohort_t, -1.0, 1.0)
        np.fill_diagonal(own, -np.inf)
        mu, sd = self._reduce(own, size - 1)
        if np.all(sd <= np.float32(MIN_SPREAD)):
            # Every std fell to the floor: scores would all land near `centre` (1 for identical
            # members), above any threshold, and the best person would be named for anyone.
            raise ValueError(
                "the cohort's members are all alike (or top_k is 1): their similarities to "
                "one another have no spread to normalise against"
            )
        self.centre = float(mu.mean())
        self.spread = float(sd.mean())

    def __len__(self) -> int:
        return self._cohort_t.shape[1]

    def _reduce(self, sims: np.ndarray, available: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(self.top_k, available)
        if k < sims.shape[1]:
            sims = np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:]
        mean = sims.mean(axis=1)
        spread = np.sqrt(np.maximum((sims * sims).mean(axis=1) - mean * mean, 0.0))
        return mean.astype(np.float32), np.maximum(spread, MIN_SPREAD).astype(np.float32)

    def stats(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 512) unit embeddings -> mean and std of each one's top_k cohort similarities,
        CHUNK similarities at a time."""
        rows = np.asarray(rows, dtype=np.float32).reshape(-1, EMBEDDING_DIM)
        step = max(1, CHUNK // len(self))
        if len(rows) <= step:
            return self._stats(rows)
        parts = [self._stats(rows[at : at + step]) for at in range(0, len(rows), step)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _stats(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims = np.clip(rows @ self._cohort_t, -1.0, 1.0)
        return self._reduce(sims, sims.shape[1])

    def probe_side(self, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The probes' (N, 1) mean and std for scores(), computed once for however many
        blocks of samples they are scored against; None for z-norm, which does not use them."""
        if self.mode == "z-norm":
            return None
        p_mu, p_sd = self.stats(probes)
        return p_mu[:, None], p_sd[:, None]

    def scores(
        self,
        sims: np.ndarray,
        probe: tuple[np.ndarray, np.ndarray] | None,
        template: tuple[np.ndarray, np.ndarray],
    ) -> np.ndarray:
        """The normalisation itself, elementwise: sims and both sides' (mean, std) broadcast
        together (probe may be None for z-norm, which does not use it)."""
        # In place on one or two arrays the size of `sims` (a block of several MB from the
        # lookalike check): each new one costs fresh pages, not only the arithmetic.
        if self.mode == "z-norm":
            score = sims - template[0]
            score /= template[1]
        else:
            assert probe is not None, "t-norm and s-norm use the probe's cohort statistics"
            score = sims - probe[0]
            score /= probe[1]
            if self.mode == "s-norm":
                template_score = sims - template[0]
                template_score /= template[1]
                score += template_score
                score *= 0.5
        score *= self.spread
        score += self.centre
        return score.astype(np.float32, copy=False)


def load_cohort(
    models_dir: Path, recognition: Mapping[str, Any], embedding_model: str | None = None
) -> CohortNormaliser | None:
    """The normaliser named by the manifest's recognition block, its file checked against the
    recorded sha256 and, when given, the embedding model it was made with (the engine's
    `embedding_model`: FaceNet and the centring mean); None when the manifest names none."""
    mode = recognition.get(NORMALISATION_KEY)
    entry = recognition.get(COHORT_KEY)
    if mode is None and entry is None:
        return None
    where = f"manifest.recognition.{COHORT_KEY}"
    if mode is None or entry is None:
        raise ManifestError(
            f"manifest.recognition names {'a cohort' if mode is None else 'a normalisation'} "
            f"without {'a normalisation' if mode is None else 'a cohort'}: its threshold "
            "cannot be used; rebuild the cohort with `make cohort`"
        )
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        raise ManifestError(f"{where}: expected an object with 'file', 'sha256' and 'top_k'")
    path = side_file(models_dir, entry["file"], entry.get("sha256"), where, "make cohort")
    made_with = entry.get("embedding_model")
    if embedding_model is not None and made_with != embedding_model:
        raise ManifestError(
            f"{where}: {path} was made with other embeddings than these models make "
            "(FaceNet or its centring mean changed): rebuild it with `make cohort`"
        )
    try:
        cohort = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ManifestError(f"{where}: cannot read {path}: {error}") from None
    top_k = entry.get("top_k")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool)):
        raise ManifestError(f"{where}.top_k must be a whole number or null, not {top_k!r}")
    try:
        return CohortNormaliser(cohort, mode=str(mode), top_k=top_k)
    except ValueError as error:
        raise ManifestError(f"{where}: {path}: {error}") from None
