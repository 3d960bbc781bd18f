"""Identification: which enrolled person, if anyone, each face embedding belongs to.

Scale: every score is a cosine similarity in [-1, 1] between L2-normalised FaceNet embeddings
(1 = identical, about 0 = unrelated, and the same person usually lands well above the
threshold). A person's score is the aggregate of the similarities to their samples:
  - "best": the best-matching sample (a person enrolled from varied photos is matched by the
    photo closest to today's pose and light);
  - "mean": the mean over all their samples;
  - "trimmed_mean": the mean after dropping floor(trim * K) of the K similarities at each end
    (the convention of scipy.stats.trim_mean), which damps one odd or mislabelled sample.

A probe is accepted as the best person only when that score reaches the threshold AND beats
the second-best person by at least the margin: a face halfway between two people is "unknown"
rather than a coin toss. Whatever the margin, two scores within TIE of each other are a tie
(one face enrolled under two names), which names nobody. With a single person enrolled the
second-best score is -1, the bottom of the scale, so the margin rule holds trivially. A probe
that is not finite (NaN or inf anywhere) matches nobody, not even as the closest person.

All probes are compared with all samples in one matrix product, then aggregated per person
with grouped numpy reductions: the cost per frame does not grow with Python-level work per
person. A large batch of probes (and the lookalike check, every stored face against every
person) is scored CHUNK similarities at a time, so memory stays bounded as the gallery grows.

With `centroid` (the manifest's recognition.centroid), each person is also matched by the
unit mean of all their samples, one more row per person added when the Matcher is built:
no cost per frame beyond that row.

With a cohort normaliser (edge_app/cohort.py, named by the manifest's recognition block) each
probe-sample similarity is normalised before the aggregation: the samples' cohort statistics
are computed once when the Matcher is built, the probes' with one more product per frame.

With a site_share (SITE_SHARE when `[recognition] site_centring` is on, the default) the
Matcher first removes that share of the site direction from every face, enrolled and visitor
alike: what the enrolled people share beyond what their own faces explain (site_direction),
the signature of one camera, one light and one household, which otherwise lifts every
stranger's score at that door (docs/ACCURACY.md, "Site centring"). A zero row (a sample the
gallery could not use, or an empty face) stays zero: it matches nobody. With a site memory
(`[recognition] learn_site`, edge_app/site_memory.py) the visits the door judged strangers
count as more people, so a household of one has something to compare with. It is computed
when the Matcher is built; per frame it costs one 512-float subtraction per face.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edge_app.cohort import CHUNK, NORMALISATION_KEY, CohortNormaliser
from edge_app.config import AGGREGATES, LOOKALIKE_MODES
from edge_app.errors import UserError, first_few
from edge_app.gallery import EMBEDDING_DIM, GalleryMatrix, person_runs
from edge_app.manifest import recognition_problem
from edge_app.site_memory import SiteMemory

DEFAULT_AGGREGATE = "best"
DEFAULT_MARGIN = 0.0
# Fraction trimmed at each end for "trimmed_mean": with 5 samples one is dropped at each end,
# with fewer than 5 none is and it is the plain mean.
DEFAULT_TRIM = 0.2
NO_SCORE = -1.0
# The manifest's recognition key saying the threshold was derived with person centroids.
CENTROID_KEY = "centroid"
# [recognition] lookalikes (edge_app.config.LOOKALIKE_MODES): "raise" moves the threshold
# this far above the highest score between two enrolled people.
LOOKALIKE_STEP = 0.01
# The top of the threshold's scale (normalised scores can go higher). A pair of enrolled
# people scoring within LOOKALIKE_STEP of it is the same face twice (one person enrolled under
# two names, or identical twins): no threshold keeps a stranger like them out and lets them
# in, so such a pair is reported but never raises the threshold.
SAME_FACE = 1.0
# Site centring: the share of the site direction (site_direction) removed from every face.
# Chosen on real one-camera video (NUAA households, split by person) as the share that keeps
# strangers out without costing residents their visits (docs/ACCURACY.md, "Site centring").
SITE_SHARE = 0.75
# Two people whose scores for a face are closer than this are tied: the same samples under two
# names score equal, or apart by float rounding in the matrix product (about 1e-7), and
# naming either would be a coin toss. Far below any real difference (the threshold has 4
# decimals).
TIE = 1e-5
# What stranger_threshold adds to the score it must keep out: the threshold is stored with 4
# decimals, and one rounded to 4 decimals from score + THRESHOLD_STEP is still above it.
THRESHOLD_STEP = 1e-4


# ---- the accept rule, in one place --------------------------------------------------------
# Every decision on identification scores goes through these: the door (Matcher.identify), the
# converter's threshold derivation (converter/recognition.py, converter/head.py) and the
# benchmarks that simulate doors, so a tie is treated the same wherever it is counted.


def top_two(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, P) person scores, P >= 1 -> each row's best person, their score and the
    second-best person's score (NO_SCORE with one person; a tie gives the same score twice).
    A row with a NaN gives NaN scores (argmax stops at it)."""
    scores = np.asarray(scores)
    rows = np.arange(scores.shape[0])
    index = np.argmax(scores, axis=1)
    best = scores[rows, index]
    others = scores.copy()
    others[rows, index] = -np.inf
    second = np.maximum(others.max(axis=1), NO_SCORE)
    return index, best, second


def clear_of_second(best: np.ndarray, second: np.ndarray, margin: float) -> np.ndarray:
    """Whether each best score leads the second-best person's by at least the margin, and by
    at least TIE whatever the margin: two people within TIE of each other are a tie, which
    names nobody (module docstring). NaN: False."""
    # float(): a NumPy float64 margin (or threshold) would compare float32 scores as float64.
    return np.asarray(best) - np.asarray(second) >= max(float(margin), TIE)


def accepts(best: np.ndarray, second: np.ndarray, threshold: float, margin: float) -> np.ndarray:
    """The accept rule (module docstring), per probe: the best person's score reaches the
    threshold and is clear of the second-best person's (clear_of_second). NaN: False."""
    return (np.asarray(best) >= float(threshold)) & clear_of_second(best, second, margin)


def stranger_threshold(
    best: np.ndarray,
    second: np.ndarray,
    margin: float,
    *,
    far: float | None = None,
    most: int | None = None,
    step: float = THRESHOLD_STEP,
) -> float:
    """The threshold at which `accepts` lets at most `most` of these strangers in (or the
    share `far` of them, rounded down): the score of the first stranger it must keep out
    (highest first, among those clear of their second-best person) plus `step`; NO_SCORE when
    the margin alone keeps enough of them out. Give exactly one of far and most."""
    if (far is None) == (most is None):
        raise ValueError("give exactly one of far and most")
    best = np.asarray(best)
    if most is None:
        assert far is not None  # for the type checker: checked above
        most = int(np.floor(far * len(best)))
    ranked = np.sort(best[clear_of_second(best, second, margin)])[::-1]
    return float(ranked[most] + step) if most < len(ranked) else NO_SCORE


def _centred(rows: np.ndarray, site: np.ndarray) -> np.ndarray:
    """rows with `site` removed, back to unit length; a zero row stays zero (unit(-site)
    would be a real template, the same for every unusable sample, that strangers match)."""
    moved = rows - site
    moved /= np.maximum(np.linalg.norm(moved, axis=-1, keepdims=True), 1e-12)  # in place
    moved[~np.any(rows, axis=-1)] = 0
    return moved


def site_direction(matrix: GalleryMatrix, memory: SiteMemory | None = None) -> np.ndarray:
    """(512,) what the faces at this door share beyond what each one's own face explains;
    zeros when nothing is shared (or there is nobody to compare with).

    m, the mean of the people's mean embeddings (people weighted equally), holds the shared
    part plus 1/n of each person's own face. Its squared length splits into each person with
    themselves (sum |mean_k|^2 / n^2, what n people alone would give) and each person with the
    others (the rest): only the second says the people resemble one another, so m is kept in
    the proportion the cross terms make of |m|^2. One person gives zeros (nobody to compare
    with); LFW-like people, who share nothing, give about zeros.

    A site memory that is ready (edge_app.site_memory, [recognition] learn_site) adds the
    strangers' visits it learned as more people, each weighted by its decay: they add their
    sum to m's and their squared weights to the own part.
    """
    names = len(matrix.names)
    counted = memory is not None and memory.ready and names > 0
    if names < (1 if counted else 2):
        return np.zeros(EMBEDDING_DIM, np.float32)
    means = matrix.person_sums() / matrix.counts[:, None]
    total, weight, own = means.sum(axis=0), float(names), float(np.sum(means * means))
    if counted:
        assert memory is not None  # for the type checker: counted says so
        total, weight, own = total + memory.total, weight + memory.weight, own + memory.weight_sq
    shared = total / weight
    length = float(shared @ shared)
    own /= weight**2
    if length <= 0.0:
        return np.zeros(EMBEDDING_DIM, np.float32)
    return (shared * max(0.0, 1.0 - own / length)).astype(np.float32)


@dataclass(frozen=True)
class MatchSettings:
    """threshold and margin on the cosine scale (module docstring); aggregate in AGGREGATES;
    normalisation: the cohort normalisation the threshold was derived with (None: raw);
    centroid: match each person by the mean of their samples too; site_share: the share of
    the enrolled people's site direction removed from every face, 0 for none (the door uses
    SITE_SHARE with [recognition] site_centring; module docstring)."""

    threshold: float
    margin: float = DEFAULT_MARGIN
    aggregate: str = DEFAULT_AGGREGATE
    trim: float = DEFAULT_TRIM
    normalisation: str | None = None
    centroid: bool = False
    site_share: float = 0.0

    def __post_init__(self) -> None:
        if self.aggregate not in AGGREGATES:
            raise UserError(
                f"aggregate must be one of {', '.join(AGGREGATES)}, not {self.aggregate!r}"
            )
        # Any cosine is a threshold here: evaluations score with -1 (every face gets its best
        # person). A door's threshold comes from its config or manifest, or identify's flag,
        # which hold it above 0 (manifest.RECOGNITION_RANGES).
        if not -1.0 <= self.threshold <= 1.0 or not math.isfinite(self.threshold):
            raise UserError(f"threshold {self.threshold} is outside the cosine scale [-1, 1]")
        for key in ("margin", "trim"):
            problem = recognition_problem(key, getattr(self, key))
            if problem is not None:
                raise UserError(f"{key} {problem}")
        if not 0.0 <= self.site_share <= 1.0:
            raise UserError(f"site_share {self.site_share} must be between 0 and 1")

    @classmethod
    def from_recognition(
        cls,
        recognition: Mapping[str, Any],
        threshold: float | None = None,
        margin: float | None = None,
        aggregate: str | None = None,
        site_centring: bool = False,
    ) -> MatchSettings:
        """Settings from the manifest's `recognition` block, each overridable (CLI, config),
        and the door's site centring ([recognition] site_centring).

        There is deliberately no built-in threshold: it belongs to the exact models in use
        and is derived on LFW DevTrain by the converter, so a missing one is an error.
        """
        if threshold is None:
            if "threshold" not in recognition:
                raise UserError(
                    "the models manifest has no recognition.threshold; pass --threshold "
                    "or rebuild the models with `edge-convert build`"
                )
            threshold = float(recognition["threshold"])
        return cls(
            threshold=threshold,
            margin=float(recognition.get("margin", DEFAULT_MARGIN)) if margin is None else margin,
            aggregate=str(recognition.get("aggregate", DEFAULT_AGGREGATE))
            if aggregate is None
            else aggregate,
            trim=float(recognition.get("trim", DEFAULT_TRIM)),
            normalisation=None
            if recognition.get(NORMALISATION_KEY) is None
            else str(recognition[NORMALISATION_KEY]),
            centroid=_flag(recognition, CENTROID_KEY),
            site_share=SITE_SHARE if site_centring else 0.0,
        )


def _flag(recognition: Mapping[str, Any], key: str) -> bool:
    value = recognition.get(key, False)
    if not isinstance(value, bool):
        raise UserError(
            f"the models manifest's recognition.{key} must be true or false, not {value!r}"
        )
    return value


@dataclass(frozen=True)
class Matches:
    """Per probe: the accepted name (None = unknown), the best person whether accepted or not,
    their score and the second-best person's score, all on the cosine scale."""

    names: list[str | None]
    best: list[str | None]
    scores: np.ndarray
    second: np.ndarray


@dataclass(frozen=True)
class Lookalike:
    """Two enrolled people the door cannot keep apart: a stored face of one matches the other
    at `score`, at or above the threshold."""

    first: str
    second: str
    score: float

    @property
    def same_face(self) -> bool:
        """Scored as one face: a person enrolled twice, or identical twins (SAME_FACE)."""
        return self.score + LOOKALIKE_STEP > SAME_FACE


class Matcher:
    """Built once per gallery load; identify() is then one product and a few reductions
    (and, with a cohort normaliser, one more product for the probes' cohort statistics)."""

    def __init__(
        self,
        matrix: GalleryMatrix,
        settings: MatchSettings,
        normaliser: CohortNormaliser | None = None,
        memory: SiteMemory | None = None,
    ) -> None:
        wanted = settings.normalisation
        if wanted is not None and (normaliser is None or normaliser.mode != wanted):
            # The threshold belongs to normalised scores: raw ones would let strangers in.
            raise UserError(
                f"the recognition threshold was derived with {wanted} cohort normalisation "
                f"but {'no cohort' if normaliser is None else normaliser.mode} was loaded: "
                "open the engine from the same models folder as the manifest"
            )
        self.faces = matrix  # the stored faces alone, without centroid rows
        self.memory = memory  # strangers' visits site centring counts too (learn_site)
        # The site direction (zeros when off or nothing is shared), its length for logs and
        # doctor, and what site centring removes from every face.
        direction = (
            site_direction(matrix, memory)
            if settings.site_share
            else np.zeros(EMBEDDING_DIM, np.float32)
        )
        self.site_shared = float(np.linalg.norm(direction))
        self.site = np.float32(settings.site_share) * direction
        self._centred = bool(np.any(self.site))
        if self._centred:
            matrix = replace(matrix, embeddings=_centred(matrix.embeddings, self.site))
        if settings.centroid:
            matrix = matrix.with_centroids()
        self.matrix = matrix
        self.settings = settings
        self.normaliser = normaliser
        # Template side of the normalisation: each sample's cohort statistics, once.
        self._template_stats = None if normaliser is None else normaliser.stats(matrix.embeddings)
        counts = matrix.counts
        self._starts = matrix.starts
        self._counts = counts.astype(np.float32)
        # trimmed_mean layout: each person's similarities scattered into a (P, Kmax) block,
        # padded with NaN (np.sort puts NaN last), and which sorted ranks survive the trim.
        k_max = int(counts.max()) if len(counts) else 0
        self._person = matrix.person.astype(np.intp)
        self._rank = np.arange(len(matrix)) - self._starts[matrix.person]
        self._k_max = k_max
        cut = np.floor(counts * settings.trim).astype(np.intp)
        ranks = np.arange(k_max)
        self._keep = (ranks >= cut[:, None]) & (ranks < (counts - cut)[:, None])
        self._kept = self._keep.sum(axis=1).astype(np.float32)
        # Probes per chunk of cohort.CHUNK similarities (each one's row of similarities, its
        # trimmed_mean block, its cohort similarities), so a large batch of probes stays
        # bounded whatever the gallery's size (the lookalike check has tiles of its own).
        # Within one chunk (every frame's few faces) the result is exactly as in one block;
        # across chunks the matrix product may round the last bit differently.
        widest = max(
            len(matrix),
            len(matrix.names) * k_max if settings.aggregate == "trimmed_mean" else 0,
            0 if normaliser is None else len(normaliser),
        )
        self._rows = max(1, CHUNK // max(widest, 1))
        # The last entry (None) is what a rejected probe indexes: names without a Python loop.
        self._labels = np.array([*matrix.names, None], dtype=object)

    def person_scores(self, probes: np.ndarray) -> np.ndarray:
        """(N, 512) probes -> (N, P) aggregated cosine similarity to each person (NaN for a
        probe that is not finite), scored at most self._rows probes at a time (CHUNK)."""
        probes = np.asarray(probes, dtype=np.float32).reshape(-1, EMBEDDING_DIM)
        if len(probes) <= self._rows:
            return self._person_scores(probes)
        step = self._rows
        return np.concatenate(
            [self._person_scores(probes[at : at + step]) for at in range(0, len(probes), step)]
        )

    def _person_scores(self, probes: np.ndarray) -> np.ndarray:
        probes = self._prepared(probes)
        return self._against(probes, self._probe_side(probes), 0, len(self.matrix.names))

    def _prepared(self, probes: np.ndarray) -> np.ndarray:
        """Probes as the templates are: centred on the site. A NaN or inf anywhere makes the
        whole probe NaN: the clip in _similarities would turn an inf product into a perfect 1."""
        probes = np.where(np.isfinite(probes).all(axis=1, keepdims=True), probes, np.nan)
        return _centred(probes, self.site) if self._centred else probes

    def _probe_side(self, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The prepared probes' cohort statistics (None without a normaliser, or z-norm)."""
        return None if self.normaliser is None else self.normaliser.probe_side(probes)

    def _against(
        self,
        probes: np.ndarray,
        probe_side: tuple[np.ndarray, np.ndarray] | None,
        first: int,
        last: int,
    ) -> np.ndarray:
        """(N, last - first) aggregated scores of prepared probes against the people `first`
        to `last - 1` alone."""
        if first >= last:
            return np.zeros((probes.shape[0], 0), np.float32)
        sims, low = self._scored(probes, probe_side, first, last)
        starts = self._starts[first:last] - low
        aggregate = self.settings.aggregate
        if aggregate == "best":
            return np.maximum.reduceat(sims, starts, axis=1)
        if aggregate == "mean":
            return np.add.reduceat(sims, starts, axis=1) / self._counts[first:last]
        high = low + sims.shape[1]
        block = np.full((probes.shape[0], last - first, self._k_max), np.nan, dtype=np.float32)
        block[:, self._person[low:high] - first, self._rank[low:high]] = sims
        block = np.sort(block, axis=2)
        keep = self._keep[first:last]
        return np.where(keep, block, np.float32(0)).sum(axis=2) / self._kept[first:last]

    def _scored(
        self,
        probes: np.ndarray,
        probe_side: tuple[np.ndarray, np.ndarray] | None,
        first: int,
        last: int,
    ) -> tuple[np.ndarray, int]:
        """The scores of prepared probes against each template of the people `first` to
        `last - 1` (a contiguous block of the matrix), and the block's first row."""
        starts = self._starts
        low = int(starts[first])
        high = int(starts[last]) if last < len(starts) else len(self.matrix)
        stats = self._template_stats
        sims = self._similarities(
            probes,
            self.matrix.embeddings[low:high],
            None if stats is None else (stats[0][low:high], stats[1][low:high]),
            probe_side,
        )
        return sims, low

    def _similarities(
        self,
        probes: np.ndarray,
        templates: np.ndarray,
        stats: tuple[np.ndarray, np.ndarray] | None,
        probe_side: tuple[np.ndarray, np.ndarray] | None,
    ) -> np.ndarray:
        """(N, T) scores of probes against templates (both already centred), normalised with
        the templates' cohort statistics `stats` and the probes' (`probe_side`, _probe_side)
        when the threshold was derived so."""
        # Clipped to the cosine scale: rows are unit vectors (the gallery refuses and
        # renormalises others), and this keeps a stray one from outscoring every threshold.
        sims = probes @ templates.T
        np.clip(sims, -1.0, 1.0, out=sims)
        if self.normaliser is not None and stats is not None:
            sims = self.normaliser.scores(sims, probe_side, (stats[0][None, :], stats[1][None, :]))
        return sims

    def sample_scores(
        self, probe: np.ndarray, samples: np.ndarray, *, centred: bool = True
    ) -> np.ndarray:
        """(K,) the score one probe gets against each of K unit faces (K, 512) as if each were
        a person enrolled with that one face: centred on the site and cohort-normalised as
        identify() scores, so one threshold applies. centred=False: without site centring
        (the site memory's repeat check: centring would hide the face it is made of)."""
        probe = np.asarray(probe, dtype=np.float32).reshape(1, EMBEDDING_DIM)
        samples = np.asarray(samples, dtype=np.float32).reshape(-1, EMBEDDING_DIM)
        if centred and self._centred:
            probe, samples = _centred(probe, self.site), _centred(samples, self.site)
        stats = None if self.normaliser is None else self.normaliser.stats(samples)
        return self._similarities(probe, samples, stats, self._probe_side(probe))[0]

    def identify(self, probes: np.ndarray) -> Matches:
        probes = np.asarray(probes, dtype=np.float32).reshape(-1, EMBEDDING_DIM)
        n = probes.shape[0]
        if not self.matrix.names:
            unknown: list[str | None] = [None] * n
            empty = np.full(n, NO_SCORE, dtype=np.float32)
            return Matches(unknown, list(unknown), empty, empty.copy())
        best_index, best, second = top_two(self.person_scores(probes))
        # argmax stops at a NaN: a probe (or sample) that is not finite. Nobody, as if no one
        # were enrolled, rather than person 0 with a NaN score.
        usable = np.isfinite(best)
        best_index = np.where(usable, best_index, -1)
        best = np.where(usable, best, NO_SCORE)
        second = np.where(usable, second, NO_SCORE)
        ok = usable & accepts(best, second, self.settings.threshold, self.settings.margin)
        return Matches(
            names=self._labels[np.where(ok, best_index, -1)].tolist(),
            best=self._labels[best_index].tolist(),
            scores=best.astype(np.float32),
            second=second.astype(np.float32),
        )

    def lookalikes(self) -> list[Lookalike]:
        """Pairs of enrolled people whose stored faces match each other at or above the
        threshold, each pair once with its highest score, highest first.

        The enrolled people are strangers to one another, photographed where the door's
        people are: when they match each other, strangers who look like them will match too.
        The threshold was set on LFW photos (docs/ACCURACY.md), and a camera, light or group
        of faces unlike LFW's can score strangers higher than it assumes.
        """
        faces = self.faces
        people = len(faces.names)
        if people < 2:
            return []
        threshold = self.settings.threshold
        # Tiles of whole people on both sides, about SIDE faces by SIDE templates (one person
        # if they have more): the (faces, people) block stays bounded, and each tile of
        # templates is read from memory once per SIDE faces, not once per face.
        side = max(1, math.isqrt(CHUNK))
        starts, counts = faces.starts, faces.counts
        probe_tiles = person_runs(counts, side)
        width = self._k_max if self.settings.aggregate == "trimmed_mean" else None
        template_tiles = person_runs(self.matrix.counts, side, width)
        # A pair is kept from each side that scores at or above the threshold, or NaN (which
        # the pair's maximum keeps, and drops below). With "best" a person's score is their
        # best template's: the pairs are read from the templates' scores at once, without
        # the two grouped maxima (a fifth of the check's time).
        best = self.settings.aggregate == "best"
        pairs, values = [], []
        for first, last in probe_tiles:
            rows = slice(int(starts[first]), int(starts[last - 1] + counts[last - 1]))
            probes = self._prepared(faces.embeddings[rows])
            probe_side = self._probe_side(probes)
            owner = faces.person[rows]
            groups = starts[first:last] - starts[first]
            for among in template_tiles:  # people [first, last) of the templates
                if best:
                    scores, row = self._scored(probes, probe_side, *among)  # (faces, templates)
                    hits = np.flatnonzero(~(scores < threshold))  # 15x np.nonzero's speed
                    if not len(hits):
                        continue
                    # Each (person, person) pair once per tile, with its best hit: what is kept
                    # grows with the pairs found, not with the faces x templates that match.
                    face, template = np.divmod(hits, scores.shape[1])
                    worst = np.full((last - first, among[1] - among[0]), -np.inf, np.float32)
                    owners = (owner[face] - first, self._person[row + template])
                    np.maximum.at(worst, (owners[0], owners[1] - among[0]), scores[face, template])
                else:
                    scores = self._against(probes, probe_side, *among)  # (faces, people)
                    worst = np.maximum.reduceat(scores, groups, axis=0)  # (people, people)
                a, b = np.nonzero(~(worst < threshold))
                value = worst[a, b]
                a, b = a + first, b + among[0]
                other = a != b  # a face against its own person's templates: not a pair
                pairs.append(np.stack([a[other], b[other]]))
                values.append(value[other])
        pair, value = np.concatenate(pairs, axis=1), np.concatenate(values)
        # Each pair once, lower index first, with the higher of its two sides' scores.
        key = pair.min(axis=0).astype(np.int64) * people + pair.max(axis=0)
        order = np.argsort(key, kind="stable")
        key, value = key[order], value[order]
        if not len(key):
            return []
        key, at = np.unique(key, return_index=True)
        worst_of_pair = np.maximum.reduceat(value, at)
        found = [
            Lookalike(faces.names[k // people], faces.names[k % people], round(float(score), 4))
            for k, score in zip(key.tolist(), worst_of_pair, strict=True)
            if score >= threshold
        ]
        return sorted(found, key=lambda pair: -pair.score)


def describe_lookalikes(found: list[Lookalike], most: int = 5) -> str:
    """The pairs for a log line: "Ann ~ Cy 0.672, ..." (the first `most`)."""
    return first_few([f"{p.first} ~ {p.second} {p.score:.3f}" for p in found], most)


@dataclass(frozen=True)
class LookalikeNotice:
    """What a group of lookalikes means for the door (`problem`) and what to do (`advice`):
    the door logs both, doctor shows them as a check."""

    problem: str
    advice: str


def lookalike_notices(found: list[Lookalike], threshold: float, mode: str) -> list[LookalikeNotice]:
    """The notices for the lookalikes `guard_lookalikes` found; `threshold` is the one the
    door decides with (raised with mode "raise" when enrolled people match each other)."""
    same = [pair for pair in found if pair.same_face]
    apart = [pair for pair in found if not pair.same_face]
    notices = []
    if same:
        notices.append(
            LookalikeNotice(
                f"enrolled people score as the same face ({describe_lookalikes(same)}): one "
                "person enrolled under two names, or identical twins; either can be let in as "
                "the other",
                "if it is one person, remove one name: edge-app remove NAME",
            )
        )
    if apart and mode == "raise":
        notices.append(
            LookalikeNotice(
                f"enrolled people match each other ({describe_lookalikes(apart)}): the door "
                f"raises its threshold to {threshold:.3f} so that strangers who look like them "
                "are not let in",
                "expect more retries for them; docs/ACCURACY.md, 'Same camera, similar faces'",
            )
        )
    elif apart:
        notices.append(
            LookalikeNotice(
                f"enrolled people match each other at the threshold {threshold:.3f} "
                f"({describe_lookalikes(apart)}): strangers who look like them can be let in",
                'set [recognition] lookalikes = "raise" or a threshold above these scores',
            )
        )
    return notices


def guard_lookalikes(matcher: Matcher, mode: str) -> tuple[Matcher, list[Lookalike]]:
    """The matcher the door should use, and the lookalikes found in its gallery.

    With mode "raise" and lookalikes found, a matcher over the same gallery whose threshold
    sits LOOKALIKE_STEP above the highest score between two enrolled people, so that no
    enrolled person's stored face would be taken for another's. The threshold only ever goes
    up, and never past SAME_FACE: pairs that score as the same face are returned for the
    caller to report, and do not raise it. With "warn" the matcher is returned unchanged.
    """
    if mode not in LOOKALIKE_MODES:
        raise UserError(f"lookalikes must be one of {', '.join(LOOKALIKE_MODES)}, not {mode!r}")
    found = matcher.lookalikes()
    apart = [pair for pair in found if not pair.same_face]
    if not apart or mode == "warn":
        return matcher, found
    raised = replace(matcher.settings, threshold=apart[0].score + LOOKALIKE_STEP)
    return Matcher(matcher.faces, raised, matcher.normaliser, matcher.memory), found
