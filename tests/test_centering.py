"""Centring on a shipped mean embedding (edge_app.centering) and its use by the engine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_app.centering import (
    MEAN_FILE,
    MEAN_KEY,
    centre,
    load_mean,
    mean_of,
    model_identity,
    unit,
)
from edge_app.manifest import MANIFEST_NAME, ManifestError, sha256_file


def rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # A common component (what every face shares) plus a per-row part, as FaceNet outputs.
    return (3.0 * np.ones(512) + rng.normal(0, 1, (n, 512))).astype(np.float32) * 7.0


def test_without_a_mean_centre_is_plain_normalisation() -> None:
    raw = rows(4)
    out = centre(raw, None)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert np.allclose(out, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)


def test_centring_removes_the_shared_component() -> None:
    raw = rows(200)
    mean = mean_of(raw)
    plain, centred = centre(raw, None), centre(raw, mean)
    assert np.allclose(np.linalg.norm(centred, axis=1), 1.0, atol=1e-5)
    # Unrelated rows look alike before (the shared part), about orthogonal after.
    off = ~np.eye(200, dtype=bool)
    assert (plain @ plain.T)[off].mean() > 0.8
    assert abs((centred @ centred.T)[off].mean()) < 0.05
    assert np.allclose(centred, unit(unit(raw) - mean), atol=1e-6)


def write_mean(folder: Path, mean: np.ndarray) -> dict:
    np.save(folder / MEAN_FILE, mean)
    return {MEAN_KEY: {"file": MEAN_FILE, "sha256": sha256_file(folder / MEAN_FILE)}}


def test_load_mean_checks_the_file_against_the_manifest(tmp_path: Path) -> None:
    assert load_mean(tmp_path, {}) is None
    mean = mean_of(rows(10))
    preprocessing = write_mean(tmp_path, mean)
    loaded = load_mean(tmp_path, preprocessing)
    assert loaded is not None and np.array_equal(loaded, mean)
    np.save(tmp_path / MEAN_FILE, mean * 2)  # changed after the manifest was written
    with pytest.raises(ManifestError, match="does not match its sha256"):
        load_mean(tmp_path, preprocessing)
    (tmp_path / MEAN_FILE).unlink()
    with pytest.raises(ManifestError, match="is missing"):
        load_mean(tmp_path, preprocessing)
    with pytest.raises(ManifestError, match="expected an object"):
        load_mean(tmp_path, {MEAN_KEY: "facenet_mean.npy"})


@pytest.mark.parametrize("bad", [np.zeros(511, np.float32), np.full(512, np.nan, np.float32)])
def test_load_mean_refuses_a_wrong_shape_or_non_finite_values(
    tmp_path: Path, bad: np.ndarray
) -> None:
    with pytest.raises(ManifestError, match="512 finite numbers"):
        load_mean(tmp_path, write_mean(tmp_path, bad))


def test_model_identity_changes_with_the_mean() -> None:
    sha = "ab" * 32
    assert model_identity(sha, None) == sha  # galleries enrolled before centring still match
    one, two = mean_of(rows(5, 1)), mean_of(rows(5, 2))
    assert model_identity(sha, one) == model_identity(sha, one.copy())
    assert len({sha, model_identity(sha, one), model_identity(sha, two)}) == 3


@pytest.fixture(scope="module")
def centred_models(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Path:
    """The committed models plus a mean in the manifest (here one made from noise)."""
    folder = tmp_path_factory.mktemp("models")
    for path in models_dir.glob("*.tflite"):
        (folder / path.name).symlink_to(path)
    manifest = json.loads((models_dir / MANIFEST_NAME).read_text())
    manifest["preprocessing"].pop(MEAN_KEY, None)
    manifest["preprocessing"].update(write_mean(folder, mean_of(rows(50, 3))))
    # A cohort (edge_app/cohort.py) belongs to the shipped mean's embeddings, not this one.
    manifest["recognition"].pop("normalisation", None)
    manifest["recognition"].pop("cohort", None)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return folder


def test_the_engine_centres_when_the_manifest_names_a_mean(
    centred_models: Path, shared_data: Path
) -> None:
    from edge_app.engine import Engine
    from edge_app.images import read_image

    engine = Engine.open(centred_models, backend="cpu")
    assert engine.mean is not None
    frame = read_image(shared_data / "lfw" / "images" / "Ricardo_Lagos" / "Ricardo_Lagos_0001.jpg")
    faces = engine.detect(frame)
    embedded = engine.embed(frame, faces)
    assert np.allclose(embedded, centre(engine.embed_raw(frame, faces), engine.mean), atol=1e-6)
    assert np.allclose(np.linalg.norm(embedded, axis=1), 1.0, atol=1e-5)
    [(_, spec)] = engine.manifest.by_role("facenet")
    assert engine.embedding_model == model_identity(spec.sha256, engine.mean) != spec.sha256


def test_a_tampered_mean_stops_the_engine(centred_models: Path, tmp_path: Path) -> None:
    from edge_app.engine import Engine
    from edge_app.errors import UserError

    folder = tmp_path / "models"
    shutil.copytree(centred_models, folder, symlinks=True)
    np.save(folder / MEAN_FILE, np.zeros(512, np.float32))
    with pytest.raises(UserError, match="does not match its sha256"):
        Engine.open(folder, backend="cpu")
