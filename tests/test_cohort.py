"""Cohort score normalisation (edge_app/cohort.py): the math on hand-checkable vectors, the
Matcher using it without per-person Python work, and hostile or mismatched cohort files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from needs import missing_from_models

from edge_app.centering import load_mean, model_identity
from edge_app.cohort import (
    COHORT_FILE,
    COHORT_KEY,
    MIN_SPREAD,
    MODES,
    NORMALISATION_KEY,
    CohortNormaliser,
    load_cohort,
)
from edge_app.errors import UserError
from edge_app.gallery import EMBEDDING_DIM, GalleryMatrix
from edge_app.manifest import MANIFEST_NAME, ManifestError, sha256_file
from edge_app.matching import Matcher, MatchSettings

ROOT_HALF = float(np.sqrt(0.5))


def axis(*weights: tuple[int, float]) -> np.ndarray:
    """A 512-d vector with the given (axis, value) entries."""
    row = np.zeros(EMBEDDING_DIM, np.float32)
    for index, value in weights:
        row[index] = value
    return row


# c1 = e0, c2 = e1, c3 = (e0 + e1)/sqrt(2): c1.c2 = 0, c1.c3 = c2.c3 = sqrt(1/2).
HAND_COHORT = np.stack([axis((0, 1.0)), axis((1, 1.0)), axis((0, ROOT_HALF), (1, ROOT_HALF))])


def test_cohort_statistics_by_hand() -> None:
    normaliser = CohortNormaliser(HAND_COHORT, "s-norm", top_k=2)
    # Each member against the two others: c1 and c2 see [0, .7071] (mean .35355, std .35355),
    # c3 sees [.7071, .7071] (std 0, floored at MIN_SPREAD).
    half = ROOT_HALF / 2
    assert normaliser.centre == pytest.approx((2 * half + ROOT_HALF) / 3, abs=1e-5)
    assert normaliser.spread == pytest.approx((2 * half + MIN_SPREAD) / 3, abs=1e-5)
    # x = 0.6 e0 + 0.8 e2: cohort similarities [0.6, 0, 0.6 * .7071 = .42426]
    x = axis((0, 0.6), (2, 0.8))
    mean, std = CohortNormaliser(HAND_COHORT, "s-norm", top_k=2).stats(x)
    assert mean[0] == pytest.approx((0.6 + 0.42426) / 2, abs=1e-5)  # top 2 of 3
    assert std[0] == pytest.approx((0.6 - 0.42426) / 2, abs=1e-5)
    mean, std = CohortNormaliser(HAND_COHORT, "s-norm", top_k=3).stats(x)
    assert mean[0] == pytest.approx(1.02426 / 3, abs=1e-5)
    assert std[0] == pytest.approx(np.std([0.6, 0.0, 0.42426]), abs=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_normalised_score_formula(mode: str) -> None:
    normaliser = CohortNormaliser(HAND_COHORT, mode, top_k=3)
    sims = np.array([[0.7]], np.float32)
    probe = (np.array([[0.2]], np.float32), np.array([[0.1]], np.float32))
    template = (np.array([[0.3]], np.float32), np.array([[0.2]], np.float32))
    z, t = (0.7 - 0.3) / 0.2, (0.7 - 0.2) / 0.1  # 2 and 5
    expected = {"z-norm": z, "t-norm": t, "s-norm": (z + t) / 2}[mode]
    got = normaliser.scores(sims, probe, template)[0, 0]
    assert got == pytest.approx(normaliser.centre + normaliser.spread * expected, rel=1e-5)


def random_units(count: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, EMBEDDING_DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_z_norm_lowers_a_face_that_resembles_everybody() -> None:
    """The failure mode it is for: a 'hub' sample near many cohort faces scores strangers
    higher than an ordinary sample does; after z-norm the same raw similarity counts less."""
    cohort = random_units(60, 1)
    hub = cohort[:30].mean(axis=0)
    hub /= np.linalg.norm(hub)
    ordinary = random_units(1, 2)[0]
    normaliser = CohortNormaliser(cohort, "z-norm", top_k=10)
    mu, sd = normaliser.stats(np.stack([hub, ordinary]))
    assert mu[0] > mu[1]
    same_raw = np.array([[0.5, 0.5]], np.float32)
    probe = normaliser.probe_side(ordinary[None])
    scores = normaliser.scores(same_raw, probe, (mu[None, :], sd[None, :]))
    assert scores[0, 0] < scores[0, 1]


def gallery(counts: list[int], seed: int = 5) -> GalleryMatrix:
    person = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
    names = tuple(f"p{i}" for i in range(len(counts)))
    return GalleryMatrix(random_units(sum(counts), seed), person, names)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("aggregate", ["best", "mean", "trimmed_mean"])
def test_matcher_scores_equal_a_per_person_loop(mode: str, aggregate: str) -> None:
    matrix = gallery([1, 4, 2, 6, 3])
    normaliser = CohortNormaliser(random_units(40, 7), mode, top_k=10)
    probes = random_units(4, 9)
    got = Matcher(matrix, MatchSettings(0.5, aggregate=aggregate), normaliser).person_scores(probes)
    p_mu, p_sd = normaliser.stats(probes)
    expected = np.zeros_like(got)
    for p in range(len(matrix.names)):
        samples = matrix.embeddings[matrix.person == p]
        t_mu, t_sd = normaliser.stats(samples)
        for i, probe in enumerate(probes):
            probe_stats = (p_mu[i : i + 1], p_sd[i : i + 1])
            scores = [
                float(normaliser.scores(np.array([probe @ s]), probe_stats, (m[None], d[None]))[0])
                for s, m, d in zip(samples, t_mu, t_sd, strict=True)
            ]
            if aggregate == "best":
                expected[i, p] = max(scores)
            elif aggregate == "mean":
                expected[i, p] = np.mean(scores)
            else:
                cut = int(np.floor(len(scores) * 0.2))
                expected[i, p] = np.mean(sorted(scores)[cut : len(scores) - cut])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_normalised_matching_has_no_per_person_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Template statistics once per gallery load, probe statistics once per call, whatever
    the number of people: the cost per frame is products and reductions, not a loop."""
    calls: list[int] = []
    original = CohortNormaliser.stats

    def counting(self: CohortNormaliser, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(np.asarray(rows).reshape(-1, EMBEDDING_DIM)))
        return original(self, rows)

    monkeypatch.setattr(CohortNormaliser, "stats", counting)
    normaliser = CohortNormaliser(random_units(30, 3), "s-norm", top_k=8)
    for people in (2, 50):
        calls.clear()
        matrix = gallery([3] * people)
        matcher = Matcher(matrix, MatchSettings(0.5), normaliser)
        assert calls == [3 * people]  # every sample at once, at load
        matcher.identify(random_units(5, 4))
        assert calls == [3 * people, 5]  # every probe at once, per call


def test_a_threshold_derived_with_normalisation_needs_the_cohort() -> None:
    matrix = gallery([2, 2])
    recognition = {"threshold": 0.6, NORMALISATION_KEY: "s-norm"}
    settings = MatchSettings.from_recognition(recognition)
    assert settings.normalisation == "s-norm"
    with pytest.raises(UserError, match="derived with s-norm cohort normalisation"):
        Matcher(matrix, settings)
    with pytest.raises(UserError, match="but z-norm was loaded"):
        Matcher(matrix, settings, CohortNormaliser(random_units(10, 1), "z-norm"))
    Matcher(matrix, settings, CohortNormaliser(random_units(10, 1), "s-norm"))
    assert MatchSettings.from_recognition({"threshold": 0.6}).normalisation is None


def test_normalised_identify_accepts_and_rejects_on_the_threshold() -> None:
    matrix = gallery([2, 2, 2])
    normaliser = CohortNormaliser(random_units(50, 8), "s-norm", top_k=12)
    probe = matrix.embeddings[3] + 2.0 * random_units(1, 11)[0]  # cosine .44 to p1's sample
    probe /= np.linalg.norm(probe)
    scores = Matcher(matrix, MatchSettings(-1.0), normaliser).person_scores(probe)[0]
    assert int(np.argmax(scores)) == 1
    low = Matcher(matrix, MatchSettings(float(scores[1]) - 0.01), normaliser).identify(probe)
    high = Matcher(matrix, MatchSettings(float(scores[1]) + 0.01), normaliser)
    assert low.names == ["p1"]
    assert high.identify(probe).names == [None]


def write_cohort(folder: Path, cohort: np.ndarray, **extra: object) -> dict:
    np.save(folder / COHORT_FILE, cohort)
    entry = {"file": COHORT_FILE, "sha256": sha256_file(folder / COHORT_FILE), "top_k": 5}
    entry.update(extra)
    return {NORMALISATION_KEY: "s-norm", COHORT_KEY: entry}


def test_load_cohort_checks_the_file_against_the_manifest(tmp_path: Path) -> None:
    assert load_cohort(tmp_path, {"threshold": 0.6}) is None
    cohort = random_units(20, 2).astype(np.float16)
    recognition = write_cohort(tmp_path, cohort)
    loaded = load_cohort(tmp_path, recognition)
    assert loaded is not None and len(loaded) == 20 and loaded.top_k == 5
    np.save(tmp_path / COHORT_FILE, cohort[::-1])  # swapped after the manifest was written
    with pytest.raises(ManifestError, match="does not match its sha256"):
        load_cohort(tmp_path, recognition)
    (tmp_path / COHORT_FILE).unlink()
    with pytest.raises(ManifestError, match="is missing"):
        load_cohort(tmp_path, recognition)


@pytest.mark.parametrize(
    ("cohort", "message"),
    [
        (np.zeros((5, 511), np.float32), "not shape"),
        (np.full((5, EMBEDDING_DIM), np.nan, np.float32), "finite unit embeddings"),
        (np.zeros((5, EMBEDDING_DIM), np.float32), "finite unit embeddings"),
        (np.ones((5, EMBEDDING_DIM), np.int32), "floating-point"),
        (random_units(1, 0), "C >= 2"),
        (np.array([{"a": 1}], dtype=object), "cannot read"),
    ],
)
def test_load_cohort_refuses_a_hostile_file(
    tmp_path: Path, cohort: np.ndarray, message: str
) -> None:
    with pytest.raises(ManifestError, match=message):
        load_cohort(tmp_path, write_cohort(tmp_path, cohort, top_k=1))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({NORMALISATION_KEY: None}, "names a cohort without a normalisation"),
        ({COHORT_KEY: None}, "names a normalisation without a cohort"),
        ({NORMALISATION_KEY: "p-norm"}, "must be one of"),
        ({COHORT_KEY: "cohort.npy"}, "expected an object"),
        (
            {COHORT_KEY: {"file": "../cohort.npy", "sha256": "0"}},
            "must be a relative path inside the models folder",
        ),
        ({"top_k": 0}, "top_k 0 must be between 1"),
        ({"top_k": 21}, "top_k 21 must be between 1"),
        ({"top_k": True}, "whole number"),
        ({"top_k": "5"}, "whole number"),
    ],
)
def test_load_cohort_refuses_a_mismatched_manifest(
    tmp_path: Path, change: dict, message: str
) -> None:
    recognition = write_cohort(tmp_path, random_units(20, 2))
    for key, value in change.items():
        if key == "top_k":
            recognition[COHORT_KEY]["top_k"] = value
        elif value is None:
            recognition.pop(key)
        else:
            recognition[key] = value
    with pytest.raises(ManifestError, match=message):
        load_cohort(tmp_path, recognition)


def test_the_shipped_cohort_matches_the_manifest(models_dir: Path) -> None:
    manifest = json.loads((models_dir / MANIFEST_NAME).read_text())
    recognition = manifest["recognition"]
    if NORMALISATION_KEY not in recognition:
        missing_from_models(models_dir, "cohort normalisation in its manifest")
    normaliser = load_cohort(models_dir, recognition)
    assert normaliser is not None and normaliser.mode == recognition[NORMALISATION_KEY]
    assert len(normaliser) == recognition[COHORT_KEY]["people"]
    assert -1.0 <= recognition["threshold"] <= 1.0
    assert recognition[COHORT_KEY]["embedding_model"] == engine_identity(models_dir, manifest)


def engine_identity(models_dir: Path, manifest: dict) -> str:
    mean = load_mean(models_dir, manifest["preprocessing"])
    return model_identity(manifest["models"]["facenet"]["sha256"], mean)


def test_the_engine_refuses_a_tampered_cohort(tmp_path: Path, models_dir: Path) -> None:
    """A cohort file swapped after the manifest was written stops the engine from opening,
    with a message naming the file (not a traceback, not raw scores)."""
    from edge_app.engine import Engine

    for path in models_dir.iterdir():
        if path.name not in (MANIFEST_NAME, COHORT_FILE):
            (tmp_path / path.name).symlink_to(path)
    manifest = json.loads((models_dir / MANIFEST_NAME).read_text())
    identity = engine_identity(models_dir, manifest)
    manifest["recognition"].update(
        write_cohort(tmp_path, random_units(20, 2), embedding_model="another model")
    )
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="made with other embeddings than these models make"):
        Engine.open(tmp_path, backend="cpu")
    manifest["recognition"][COHORT_KEY]["embedding_model"] = identity
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert Engine.open(tmp_path, backend="cpu").cohort is not None
    np.save(tmp_path / COHORT_FILE, random_units(20, 3))
    with pytest.raises(UserError, match=f"{COHORT_FILE} does not match its sha256"):
        Engine.open(tmp_path, backend="cpu")
