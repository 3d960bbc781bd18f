"""Centring and mirror-averaging on LFW: build the shipped mean, measure every variant.

Step 1 embeds every LFW development image once (the engine's own detection and alignment,
the central face, raw FaceNet outputs of the crop and of its mirror image) into a cache, so
each variant below is numpy on the same numbers, not another pass over the models:

    .venv/bin/python -m benchmarks.centering embed --cache /tmp/lfw_raw.npz

Step 2 writes the mean of the DevTrain images' unit embeddings next to the models, records
it (file, sha256, how it was made) in the manifest's preprocessing.facenet_mean, and
re-derives the manifest's recognition block (threshold, aggregate, margin) on DevTrain with
the centred embeddings, as `edge-convert build` derives it for plain ones:

    .venv/bin/python -m benchmarks.centering mean --cache /tmp/lfw_raw.npz

Step 3 scores plain / mirror-averaged / centred / centred + mirror-averaged on DevTest
(threshold from DevTrain; and 10-fold cross-validation on DevTest) and re-derives the
open-set recognition threshold on DevTrain for the centred embeddings:

    .venv/bin/python -m benchmarks.centering report --cache /tmp/lfw_raw.npz

The mean always comes from DevTrain images only, so DevTest stays unseen.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from benchmarks import outputs
from edge_app.centering import MEAN_FILE, MEAN_KEY, centre, mean_of, unit
from edge_app.engine import Engine
from edge_app.images import read_image
from edge_app.lfw import development_scores, labelled_face, read_pairs
from edge_app.logs import setup_logging
from edge_app.manifest import MANIFEST_NAME, sha256_file
from edge_app.paths import REPO_ROOT, SHARED_DATA
from edge_app.reports import check_output, write_json, write_report

MODELS = REPO_ROOT / "models" / "tflite"


def embed(engine: Engine, images: Path, names: list[str]) -> dict[str, np.ndarray]:
    raw, mirror, no_face = [], [], 0
    start = time.perf_counter()
    for name in tqdm(names, desc="embedding LFW (and mirror)", unit="image", disable=None):
        frame = read_image(images / name)
        face, found = labelled_face(engine.detect(frame), frame.shape[1], frame.shape[0])
        no_face += not found
        raw.append(engine.embed_raw(frame, face)[0])
        mirror.append(engine.embed_raw(frame, face, mirror=True)[0])
    return {
        "names": np.array(names),
        "raw": np.stack(raw),
        "mirror": np.stack(mirror),
        "no_face": np.array(no_face),
        "seconds": np.array(time.perf_counter() - start),
    }


def all_dev_images(lfw: Path) -> list[str]:
    """Every image the LFW development lists name, sorted: the rows of a cache."""
    train, test = pair_names(lfw)
    return sorted(set(train) | set(test))


def pair_names(lfw: Path) -> tuple[list[str], list[str]]:
    train = read_pairs(lfw / "pairsDevTrain.txt").images
    test = read_pairs(lfw / "pairsDevTest.txt").images
    return train, test


def variants(cache: dict[str, np.ndarray], mean: np.ndarray) -> dict[str, np.ndarray]:
    """Unit embeddings per variant, rows in cache order."""
    raw, mirror = cache["raw"], cache["mirror"]
    both = unit(raw) + unit(mirror)
    return {
        "plain": centre(raw, None),
        "mirror-averaged": unit(both),
        "centred": centre(raw, mean),
        "centred + mirror-averaged": unit(unit(unit(raw) - mean) + unit(unit(mirror) - mean)),
    }


def score(embeddings: np.ndarray, index: dict[str, int], lfw: Path) -> dict[str, Any]:
    train, test = (read_pairs(lfw / name) for name in ("pairsDevTrain.txt", "pairsDevTest.txt"))
    return development_scores(embeddings, index, train, test)


def open_set_templates(
    probes: np.ndarray,
    templates: list[np.ndarray],
    names: list[str],
    seed: int = 0,
    threshold: float | None = None,
) -> dict[str, float]:
    """converter.recognition's DevTrain door simulation (aggregate `best`, margin 0) with
    every enrolled photo stored as one sample per array in `templates` (e.g. the photo and
    its mirror image), probes from `probes`: threshold at the stranger limit (or the given
    one, to check a DevTrain threshold on other people), identified."""
    from converter.recognition import GALLERY_SIZE, SAMPLES, TARGET_FAR, TRIALS
    from edge_app.gallery import GalleryMatrix
    from edge_app.matching import Matcher, MatchSettings, accepts, stranger_threshold, top_two

    person_of = np.array([n.split("/")[0] for n in names])
    by_person: dict[str, list[int]] = {}
    for index, person in enumerate(person_of):
        by_person.setdefault(person, []).append(index)
    enrollable = np.array(sorted(p for p, ix in by_person.items() if len(ix) > SAMPLES))
    rng = np.random.default_rng(seed)
    g_all, g2_all, ok_all, s_all, s2_all = [], [], [], [], []
    for _ in range(TRIALS):
        chosen = rng.choice(enrollable, size=min(GALLERY_SIZE, len(enrollable)), replace=False)
        rows, owner = [], []
        genuine: list[int] = []
        for slot, person in enumerate(chosen):
            images = rng.permutation(by_person[person])
            for template in templates:
                rows.extend(template[images[:SAMPLES]])
                owner.extend([slot] * SAMPLES)
            genuine.extend(images[SAMPLES:])
        order = np.argsort(owner, kind="stable")
        matrix = GalleryMatrix(
            np.stack(rows)[order], np.array(owner, np.int32)[order], tuple(map(str, chosen))
        )
        matcher = Matcher(matrix, MatchSettings(threshold=-1.0))
        enrolled = set(chosen.tolist())
        strangers = np.array([i for i in range(len(names)) if person_of[i] not in enrolled])
        g_index, g_best, g_second = top_two(matcher.person_scores(probes[np.array(genuine)]))
        g_all.append(g_best)
        g2_all.append(g_second)
        ok_all.append(chosen[g_index] == person_of[np.array(genuine)])
        _, s_best, s_second = top_two(matcher.person_scores(probes[strangers]))
        s_all.append(s_best)
        s2_all.append(s_second)
    g, g2, ok, s, s2 = (np.concatenate(parts) for parts in (g_all, g2_all, ok_all, s_all, s2_all))
    # The door's rule (edge_app.matching.accepts) with margin 0: a tie names nobody.
    if threshold is None:
        threshold = stranger_threshold(s, s2, 0.0, far=TARGET_FAR)
    return {
        "threshold": round(threshold, 4),
        "identified": round(float((accepts(g, g2, threshold, 0.0) & ok).mean()), 4),
        "stranger_accept": round(float(accepts(s, s2, threshold, 0.0).mean()), 5),
    }


def devtest_names(lfw: Path) -> list[str]:
    return pair_names(lfw)[1]


def people(names: list[str]) -> set[str]:
    return {name.split("/")[0] for name in names}


def load_cache(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def cmd_embed(args: argparse.Namespace) -> None:
    lfw = args.data / "lfw"
    names = all_dev_images(lfw)
    engine = Engine.open(backend="cpu", threads=args.threads)
    cache = embed(engine, lfw / "images", names)
    tmp = args.cache.with_suffix(".tmp.npz")
    try:
        np.savez(tmp, **cache)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
        tmp.replace(args.cache)
    finally:
        tmp.unlink(missing_ok=True)  # gone once renamed: only a failure leaves it
    print(f"wrote {args.cache}: {len(names)} images in {float(cache['seconds']):.0f} s")


def devtrain_mean(cache: dict[str, np.ndarray], lfw: Path) -> tuple[np.ndarray, int]:
    train, _ = pair_names(lfw)
    index = {str(n): i for i, n in enumerate(cache["names"])}
    rows = [index[n] for n in train]
    return mean_of(cache["raw"][rows]), len(rows)


def install_side_file(
    models: Path,
    name: str,
    save: Callable[[IO[bytes]], None],
    manifest_naming: Callable[[str, str], dict[str, Any]],
    previous: str | None = None,
) -> str:
    """Put a new data file beside the models (the centring mean, the cohort) as `name`, with
    the manifest that names it and its sha256, so that at every moment the manifest names
    files that are on disk and match it: an engine opened meanwhile, a failure or a Ctrl-C
    never meets a models folder that fails its sha256 check (writing the file, then the
    manifest, left one after a stop between the two).

    1. the new file is written under its content's name (NAME.<sha256[:12]>.npy) and as a
       temporary copy; nothing the manifest names is touched;
    2. the manifest, replaced atomically (as every write here), names the content's name;
    3. the copy replaces `name`, which the manifest no longer names;
    4. the manifest names `name` again, and the content's name is removed.

    save(handle) writes the file; manifest_naming(file, sha256) is the whole new manifest
    naming `file`. A failure or a stop removes the new files the manifest on disk does not
    name. previous: the file the old manifest named, removed when it is a content's name
    that an interrupted run left named. Returns the sha256.
    """
    target = models / name
    manifest_path = models / MANIFEST_NAME
    stem, suffix = os.path.splitext(name)
    made: list[Path] = []
    try:
        for _ in range(2):
            handle, temp = tempfile.mkstemp(prefix=f".{name}.", dir=models)
            made.append(Path(temp))
            with os.fdopen(handle, "wb") as out:
                save(out)
        digest = sha256_file(made[0])
        content = models / f"{stem}.{digest[:12]}{suffix}"
        made.append(content)
        os.replace(made[0], content)
        write_json(manifest_path, manifest_naming(content.name, digest))
        os.replace(made[1], target)  # the old file: no longer named
        write_json(manifest_path, manifest_naming(name, digest))
    except BaseException:
        try:
            named = manifest_path.read_text()
        except OSError:
            named = ""
        for path in made:
            if f'"{path.name}"' not in named:
                path.unlink(missing_ok=True)
        raise
    content.unlink(missing_ok=True)
    if previous and previous not in (name, content.name) and _is_content_name(previous, name):
        (models / previous).unlink(missing_ok=True)
    return digest


def _is_content_name(file: str, name: str) -> bool:
    """Whether `file` is a content's name install_side_file gives a new `name`."""
    stem, suffix = os.path.splitext(name)
    return re.fullmatch(re.escape(stem) + r"\.[0-9a-f]{12}" + re.escape(suffix), file) is not None


def cmd_mean(args: argparse.Namespace) -> None:
    lfw = args.data / "lfw"
    cache = load_cache(args.cache)
    mean, count = devtrain_mean(cache, lfw)
    manifest_path = args.models / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    previous = manifest["preprocessing"].get(MEAN_KEY, {}).get("file")
    # The threshold belongs to the exact embeddings: re-derived on DevTrain, centred.
    from converter.recognition import derive_from_embeddings

    train, _ = pair_names(lfw)
    index = {str(n): i for i, n in enumerate(cache["names"])}
    rows = [index[n] for n in train]
    centred, mirrored = centre(cache["raw"][rows], mean), centre(cache["mirror"][rows], mean)
    manifest["recognition"] = derive_from_embeddings(centred, train, mirrors=mirrored)

    def naming(file: str, sha256: str) -> dict[str, Any]:
        manifest["preprocessing"][MEAN_KEY] = {
            "file": file,
            "sha256": sha256,
            "images": count,
            "source": "LFW pairsDevTrain.txt images: mean of the int8 engine's unit embeddings "
            "(central face, margin as facenet_margin); built by `python -m benchmarks.centering "
            "mean`",
            "norm": round(float(np.linalg.norm(mean)), 4),
        }
        return manifest

    install_side_file(args.models, MEAN_FILE, lambda out: np.save(out, mean), naming, previous)
    print(
        f"wrote {args.models / MEAN_FILE} (|mean| = {np.linalg.norm(mean):.4f}, "
        f"{count} DevTrain images)"
    )


def cmd_report(args: argparse.Namespace) -> None:
    from converter.recognition import derive_from_embeddings

    check_output(args.out, "--out")  # before the minutes of work, not with a traceback after
    lfw = args.data / "lfw"
    cache = load_cache(args.cache)
    mean, _ = devtrain_mean(cache, lfw)
    index = {str(n): i for i, n in enumerate(cache["names"])}
    train, _ = pair_names(lfw)
    rows: dict[str, Any] = {}
    for label, embeddings in variants(cache, mean).items():
        rows[label] = score(embeddings, index, lfw)
        print(f"{label:28s} {rows[label]}", flush=True)
    picker: Callable[[np.ndarray], np.ndarray] = lambda e: e[[index[n] for n in train]]  # noqa: E731
    recognition = {}
    for label in ("plain", "centred"):
        embeddings = variants(cache, mean)[label]
        recognition[label] = derive_from_embeddings(picker(embeddings), train)
        best = recognition[label]
        print(
            f"open-set DevTrain {label}: threshold {best['threshold']} aggregate "
            f"{best['aggregate']} margin {best['margin']} identified "
            f"{max(c['identified'] for c in best['candidates']):.4f}",
            flush=True,
        )
    # Mirrored templates at enrolment: each enrolled photo stored twice (as is, mirrored);
    # probes as the door makes them (one pass, not mirrored).
    rows_train = [index[n] for n in train]
    templates: dict[str, Any] = {}
    for label, mean_used in (("plain", None), ("centred", mean)):
        probes = centre(cache["raw"][rows_train], mean_used)
        mirrored = centre(cache["mirror"][rows_train], mean_used)
        templates[label] = {
            "photo only": open_set_templates(probes, [probes], train),
            "photo + mirror": open_set_templates(probes, [probes, mirrored], train),
        }
        print(f"templates {label}: {templates[label]}", flush=True)
    # The check on people outside DevTrain: DevTest-only people, each variant at its own
    # DevTrain threshold (not re-derived here), three seeded sets of galleries.
    recognition_centred = recognition["centred"]["threshold"]
    mirrored_threshold = derive_from_embeddings(
        picker(centre(cache["raw"], mean)), train, mirrors=picker(centre(cache["mirror"], mean))
    )["threshold"]
    outside = sorted(n for n in set(devtest_names(lfw)) if n.split("/")[0] not in people(train))
    rows_out = [index[n] for n in outside]
    probes = centre(cache["raw"][rows_out], mean)
    mirrored = centre(cache["mirror"][rows_out], mean)
    templates_outside = {
        f"seed {seed}": {
            "photo only": open_set_templates(probes, [probes], outside, seed, recognition_centred),
            "photo + mirror": open_set_templates(
                probes, [probes, mirrored], outside, seed, mirrored_threshold
            ),
        }
        for seed in range(3)
    }
    print(f"templates outside DevTrain (centred): {templates_outside}", flush=True)
    report = {
        "mirrored_templates_devtrain": templates,
        "mirrored_templates_outside_devtrain": {
            "images": len(outside),
            "thresholds": {"photo only": recognition_centred, "photo + mirror": mirrored_threshold},
            "runs": templates_outside,
        },
        "images": len(index),
        "no_face": int(cache["no_face"]),
        "lfw": rows,
        "recognition": recognition,
    }
    write_report(args.out, report, "--out")
    print(f"wrote {args.out}")


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/edge-door-lfw-raw.npz"))
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "centering.json")
    parser.add_argument("step", choices=["embed", "mean", "report"])
    args = parser.parse_args(argv)
    setup_logging(-1)  # warnings and errors only; a stop or a refusal: outputs.command
    {"embed": cmd_embed, "mean": cmd_mean, "report": cmd_report}[args.step](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
