"""`edge-convert train-head`: semi-hard mining, training, the int8 head, refusals.

Everything here runs on small synthetic embeddings; the measurement on LFW (which needs the
shared data and a cache of FaceNet outputs) is docs/ADAPTATION_HEAD.md's command.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import replace as replace_settings
from pathlib import Path

import numpy as np
import pytest

from converter.head import (
    ENTRY_FILE,
    HEAD_FILE,
    HEAD_MEAN_FILE,
    SCALE,
    SHIFT,
    Head,
    HeadError,
    HeadOptions,
    Int8Head,
    TrainSettings,
    embed_jitters,
    jitter_faces,
    load_cache,
    load_or_embed_jitters,
    quantise_head,
    run,
    semi_hard_triplets,
    squared_distances,
    train_head,
    triplet_loss,
)
from edge_app.centering import EMBEDDING_DIM, unit
from edge_app.faces import Faces
from edge_app.manifest import sha256_file

LFW_SAMPLE = Path(__file__).resolve().parent / "data" / "lfw_sample"
# Smallest cosine between the int8 head's output and the float head's on the same inputs.
INT8_COSINE = 0.99


def test_semi_hard_mining_picks_the_closest_negative_inside_the_margin() -> None:
    """Hand-checked with alpha 0.2: a negative must lie in (d_ap, d_ap + 0.2)."""
    labels = np.array([0, 0, 1, 1, 2])
    pairs = {
        (0, 1): 0.5, (0, 2): 0.4, (0, 3): 0.6, (0, 4): 0.65,
        (1, 2): 0.9, (1, 3): 0.8, (1, 4): 0.55,
        (2, 3): 0.3, (2, 4): 0.45,
        (3, 4): 0.2,
    }  # fmt: skip
    distances = np.zeros((5, 5))
    for (i, j), d in pairs.items():
        distances[i, j] = distances[j, i] = d

    anchors, positives, negatives = semi_hard_triplets(distances, labels, alpha=0.2)

    # 0-1 (0.5): 2 is closer than the positive (hard, skipped); 3 (0.6) and 4 (0.65) are
    # semi-hard: the closer, 3. 1-0 (0.5): 2 and 3 lie beyond 0.7; 4 (0.55). 2-3 (0.3):
    # 0 (0.4) and 4 (0.45): 0. 3-2 (0.3): 4 is hard (0.2), 0 and 1 beyond 0.5: dropped.
    assert sorted(zip(anchors, positives, negatives, strict=True)) == [
        (0, 1, 3),
        (1, 0, 4),
        (2, 3, 0),
    ]


def test_squared_distances_of_unit_rows_are_two_minus_two_cosine() -> None:
    rows = unit(np.random.default_rng(0).normal(size=(6, EMBEDDING_DIM)))

    distances = squared_distances(rows)

    np.testing.assert_allclose(distances, 2.0 - 2.0 * rows @ rows.T, atol=1e-5)


def _synthetic(people: int, per_person: int, views: int, seed: int = 0):
    """Raw embeddings whose identity is blurred by a strong shared nuisance in 8 directions
    (what a head can learn to project out), (N, views, 512), labels (N,)."""
    rng = np.random.default_rng(seed)
    identity = rng.normal(size=(people, EMBEDDING_DIM))
    nuisance = np.linalg.qr(rng.normal(size=(EMBEDDING_DIM, 8)))[0].T  # (8, 512)
    labels = np.repeat(np.arange(people), per_person)
    base = identity[labels][:, None, :] + 0.3 * rng.normal(size=(len(labels), views, EMBEDDING_DIM))
    shift = rng.normal(scale=12.0, size=(len(labels), views, 8)) @ nuisance
    return (base + shift).astype(np.float32), labels


@pytest.fixture(scope="module")
def trained() -> tuple[Head, np.ndarray, np.ndarray, list[float]]:
    pytest.importorskip("tensorflow")
    views, labels = _synthetic(people=24, per_person=4, views=2)
    settings = TrainSettings(
        rank=16, steps=120, people=12, per_person=4, negatives=16, learning_rate=1e-2, seed=3
    )
    head, losses = train_head(views, labels, settings, progress=False)
    return head, views, labels, losses


@pytest.mark.slow
def test_training_lowers_the_triplet_loss(trained) -> None:
    head, views, labels, losses = trained
    raw = views[:, 0]

    before = triplet_loss(raw, labels)
    after = triplet_loss(head.apply(raw), labels)

    assert before > 0.05  # the nuisance really hurts before training
    assert after < 0.5 * before
    assert np.mean(losses[-20:]) < np.mean(losses[:20])


@pytest.mark.slow
def test_training_is_deterministic_for_a_seed(trained) -> None:
    head, views, labels, _ = trained
    settings = TrainSettings(
        rank=16, steps=120, people=12, per_person=4, negatives=16, learning_rate=1e-2, seed=3
    )

    again, _ = train_head(views, labels, settings, progress=False)

    np.testing.assert_array_equal(again.down, head.down)
    np.testing.assert_array_equal(again.up, head.up)


def test_an_untrained_head_is_the_identity() -> None:
    raw = np.random.default_rng(1).normal(size=(3, EMBEDDING_DIM)).astype(np.float32)
    head = Head(np.ones((4, EMBEDDING_DIM), np.float32), np.zeros((EMBEDDING_DIM, 4), np.float32))

    np.testing.assert_array_equal(head.apply(raw), raw)


@pytest.mark.slow
def test_int8_head_runs_in_tflite_agrees_with_float_and_passes_the_lint(
    trained, tmp_path: Path
) -> None:
    from converter.lint import lint_model

    head, views, _, _ = trained
    raw = views[:, 0]
    path = tmp_path / HEAD_FILE
    path.write_bytes(quantise_head(head, raw))

    int8 = Int8Head(path).apply(views[:, 1])  # other views than the calibration ones
    cosine = np.sum(unit(int8) * unit(head.apply(views[:, 1])), axis=1)

    assert Int8Head(path).input["dtype"] == np.int8
    assert Int8Head(path).output["dtype"] == np.int8
    assert cosine.min() > INT8_COSINE
    assert lint_model(path) == []


# ---- jittered crops ------------------------------------------------------------------------


def test_jittered_boxes_stay_within_the_shift_and_scale_limits() -> None:
    face = Faces(
        np.array([[100, 50, 200, 170]], np.float32),
        np.array([0.99], np.float32),
        np.zeros((1, 5, 2), np.float32),
    )

    boxes = np.concatenate(
        [f.boxes for f in jitter_faces(face, 200, np.random.default_rng(0))]
    ).astype(np.float64)

    size = np.array([100.0, 120.0])
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2 - np.array([150.0, 110.0])
    scales = (boxes[:, 2:] - boxes[:, :2]) / size
    assert np.all(np.abs(centres) <= SHIFT * size + 1e-3)
    assert np.all(np.abs(scales - 1.0) <= SCALE + 1e-5)
    np.testing.assert_allclose(scales[:, 0], scales[:, 1], rtol=1e-5)  # aspect kept
    assert np.ptp(centres[:, 0]) > SHIFT * size[0]  # really spread, not one box


@pytest.mark.slow
def test_jittered_crops_are_embedded_by_the_real_facenet(models_dir: Path, tmp_path: Path) -> None:
    """Two photos of the repository's LFW sample through the real int8 engine: each jittered
    crop stays close to the same person's crop; a second call reads the cache."""
    names = ["Joe_Nichols/Joe_Nichols_0001.jpg", "Rick_Perry/Rick_Perry_0001.jpg"]
    lfw = tmp_path / "lfw"
    (lfw / "images").mkdir(parents=True)
    for name in names:
        (lfw / "images" / name).parent.mkdir()
        (lfw / "images" / name).write_bytes((LFW_SAMPLE / name).read_bytes())

    views = embed_jitters(lfw, names, 2, models_dir, None, seed=0)

    assert views.shape == (2, 2, EMBEDDING_DIM)
    same = np.sum(unit(views[:, 0]) * unit(views[:, 1]), axis=1)
    other = np.sum(unit(views[0]) * unit(views[1]), axis=1)
    assert np.all(same > 0.8)  # a shifted, mirrored crop is still the same face
    assert np.all(other < same.min())  # and far from the other person
    cache = tmp_path / "jitter.npz"
    options = HeadOptions(cache=cache, lfw=lfw, out=tmp_path, jitter_cache=cache, models=models_dir)
    first = load_or_embed_jitters(options, names)
    (lfw / "images" / names[0]).unlink()  # the cached run must not need the photos
    np.testing.assert_array_equal(load_or_embed_jitters(options, names), first)
    np.testing.assert_array_equal(first, views)


# ---- the command on a small synthetic LFW ---------------------------------------------------


def _lfw(root: Path, people: int, per_person: int, prefix: str, start: int) -> list[str]:
    """A dev-form pair list over synthetic people: every image in one pair at least."""
    names = [f"{prefix}{p:03d}" for p in range(start, start + people)]
    same = [f"{n}\t1\t2" for n in names] + [f"{n}\t3\t4" for n in names]
    different = [
        f"{a}\t{1 + i % per_person}\t{b}\t{1 + (i + 1) % per_person}"
        for i, (a, b) in enumerate(zip(names, names[1:] + names[:1], strict=True))
    ]
    different += different[: len(same) - len(different)]
    return [str(len(same)), *same, *different]  # (the header: the same-person pairs)


def _write_dataset(root: Path) -> tuple[Path, Path]:
    lfw = root / "lfw"
    lfw.mkdir()
    train = _lfw(lfw, 30, 4, "Train_", 0)
    test = _lfw(lfw, 24, 4, "Test_", 0)
    (lfw / "pairsDevTrain.txt").write_text("\n".join(train) + "\n")
    (lfw / "pairsDevTest.txt").write_text("\n".join(test) + "\n")
    people = [f"Train_{p:03d}" for p in range(30)] + [f"Test_{p:03d}" for p in range(24)]
    names = [f"{p}/{p}_{k:04d}.jpg" for p in people for k in range(1, 5)]
    views, _ = _synthetic(people=len(people), per_person=4, views=2, seed=5)
    cache = root / "cache.npz"
    np.savez(cache, names=np.array(names), raw=views[:, 0], mirror=views[:, 1])
    return lfw, cache


@pytest.mark.slow
def test_the_command_writes_a_linted_head_its_mean_and_a_manifest_entry(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    lfw, cache = _write_dataset(tmp_path)
    out = tmp_path / "head"
    options = HeadOptions(
        cache=cache,
        lfw=lfw,
        out=out,
        jitters=0,
        json=tmp_path / "report.json",
        settings=TrainSettings(rank=8, steps=60, people=10, learning_rate=1e-2),
    )

    report = run(options)

    entry = json.loads((out / ENTRY_FILE).read_text())
    assert entry == json.loads((tmp_path / "report.json").read_text()) == report
    model = entry["models"]["head"]
    assert model["sha256"] == sha256_file(out / HEAD_FILE)
    assert [t["dtype"] for t in model["inputs"] + model["outputs"]] == ["int8", "int8"]
    mean = entry["preprocessing"]["facenet_mean"]
    assert mean["sha256"] == sha256_file(out / HEAD_MEAN_FILE)
    assert np.load(out / HEAD_MEAN_FILE).shape == (EMBEDDING_DIM,)
    assert set(entry["figures"]) == {"no head (shipped)", "head float", "head int8"}
    for row in entry["figures"].values():
        assert 0.5 <= row["devtest_accuracy"] <= 1.0
        assert 0.0 <= row["open_set"]["devtest_identified"] <= 1.0
    assert entry["int8_vs_float"]["cosine_min"] > INT8_COSINE
    assert sorted(p.name for p in out.iterdir()) == sorted([ENTRY_FILE, HEAD_FILE, HEAD_MEAN_FILE])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.npz", "head", "lfw", "report.json"]


@pytest.mark.slow
def test_a_head_that_cannot_be_installed_whole_leaves_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A converter audit: a rename that failed half way (a full disk, head.json replaced by a
    folder after the checks) left a new head.tflite beside the old head.json, and an
    OSError after minutes of training was a traceback. The three files are installed
    together or the previous ones put back, and the error is one line."""
    pytest.importorskip("tensorflow")
    import converter.head

    lfw, cache = _write_dataset(tmp_path)
    out = tmp_path / "head"
    settings = TrainSettings(rank=8, steps=20, people=10, learning_rate=1e-2)
    run(HeadOptions(cache=cache, lfw=lfw, out=out, jitters=0, settings=settings))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    replace = os.replace

    def full_disk(source: str | Path, target: str | Path) -> None:
        if Path(target) == out / ENTRY_FILE and Path(source).parent.name != "previous":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        replace(source, target)

    monkeypatch.setattr(converter.head.os, "replace", full_disk)
    again = replace_settings(settings, seed=settings.seed + 1)  # another head
    with pytest.raises(HeadError, match="cannot write the head .*No space left on device"):
        run(HeadOptions(cache=cache, lfw=lfw, out=out, jitters=0, settings=again))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("kind", ["folder", "link"])
def test_an_out_folder_whose_files_are_not_files_is_refused_before_training(
    tmp_path: Path, kind: str
) -> None:
    lfw, cache = _write_dataset(tmp_path)
    out = tmp_path / "head"
    out.mkdir()
    if kind == "folder":
        (out / ENTRY_FILE).mkdir()
    else:
        (out / ENTRY_FILE).symlink_to(tmp_path / "elsewhere.json")

    with pytest.raises(HeadError, match="head.json is not a regular file; move it away"):
        run(HeadOptions(cache=cache, lfw=lfw, out=out, jitters=0))
    assert [p.name for p in out.iterdir()] == [ENTRY_FILE]


# ---- refusals -------------------------------------------------------------------------------


def test_a_missing_cache_is_refused_with_the_command_that_builds_it(tmp_path: Path) -> None:
    lfw, _ = _write_dataset(tmp_path)

    with pytest.raises(HeadError, match="no such embeddings cache.*benchmarks.centering embed"):
        run(HeadOptions(cache=tmp_path / "none.npz", lfw=lfw, out=tmp_path / "head", jitters=0))
    assert not (tmp_path / "head").exists()


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"names": np.array(["a"]), "raw": np.zeros((1, 512))}, "missing mirror"),
        (
            {"names": np.array(["a"]), "raw": np.zeros((1, 3)), "mirror": np.zeros((1, 512))},
            "'raw' must hold 1 rows of 512 finite numbers",
        ),
        (
            {
                "names": np.array(["a"]),
                "raw": np.full((1, 512), np.nan),
                "mirror": np.zeros((1, 512)),
            },
            "'raw' must hold 1 rows of 512 finite numbers",
        ),
    ],
    ids=["no-mirror", "wrong-width", "nan"],
)
def test_a_malformed_cache_is_refused(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)

    with pytest.raises(HeadError, match=message):
        load_cache(path)


@pytest.mark.parametrize("content", [b"not numpy", b"PK\x03\x04 truncated zip"])
def test_a_file_that_is_not_npz_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(content)

    with pytest.raises(HeadError, match="not a readable .npz embeddings cache"):
        load_cache(path)


def test_a_cache_without_the_pair_images_is_refused(tmp_path: Path) -> None:
    lfw, _ = _write_dataset(tmp_path)
    cache = tmp_path / "other.npz"
    np.savez(
        cache, names=np.array(["x/x_0001.jpg"]), raw=np.ones((1, 512)), mirror=np.ones((1, 512))
    )

    with pytest.raises(HeadError, match="images of the pair lists are not in the cache"):
        run(HeadOptions(cache=cache, lfw=lfw, out=tmp_path / "head", jitters=0))
    assert not (tmp_path / "head").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"settings": TrainSettings(rank=0)}, "--rank must be 1..512"),
        ({"settings": TrainSettings(steps=0)}, "--steps must be at least 1"),
        ({"jitters": -1}, "--jitters must be 0 or more"),
        ({"holdout": 1.0}, r"--holdout must be in \[0, 1\)"),
    ],
    ids=["rank", "steps", "jitters", "holdout"],
)
def test_bad_settings_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    lfw, cache = _write_dataset(tmp_path)
    options = HeadOptions(cache=cache, lfw=lfw, out=tmp_path / "head", **change)

    with pytest.raises(HeadError, match=message):
        run(options)


def test_an_lfw_folder_without_pair_lists_is_refused(tmp_path: Path) -> None:
    _, cache = _write_dataset(tmp_path)

    with pytest.raises(HeadError, match="no pairsDevTrain.txt there"):
        run(HeadOptions(cache=cache, lfw=tmp_path, out=tmp_path / "head", jitters=0))
