"""Cohort score normalisation (edge_app/cohort.py) on LFW: measure every variant, ship one.

Works on the cache of raw FaceNet outputs made by `python -m benchmarks.centering embed`
(every LFW development image's central face), centred with the shipped mean, so each
variant is numpy on the same numbers.

DevTrain is split by person: the cohort part (COHORT_PEOPLE people drawn, seeded, from those
with at most SAMPLES photos, so every person who can be enrolled stays in the simulation;
one photo each) and the simulation part (everybody else). Each variant's threshold is
derived on the simulation part with converter.recognition's open-set door simulation (the
one `edge-convert build` uses: 40 galleries of 20 people x 2 photos, each stored with its
mirror image as enrolment stores it, lowest threshold with
<= 0.1% strangers accepted; aggregate and margin chosen there too), with the cohort part as
cohort. The check runs on DevTest people (outside DevTrain) with those thresholds fixed:
genuine probes identified and strangers accepted, over SEEDS seeds of 40 galleries each
(the same galleries for every variant), and the identification an oracle threshold at 0.1%
strangers on DevTest itself would give (separation, not calibration). The DevTest pairs
accuracy is reported too (threshold from DevTrain pairs without cohort people; and 10-fold).

    .venv/bin/python -m benchmarks.cohort report --cache /tmp/edge-door-lfw-raw.npz

`report` writes benchmarks/cohort.json, including the variant chosen on DevTrain alone (the
normalisation, cohort size and top_k identifying most DevTrain probes). `ship` then writes
that cohort (the first `size` cohort-part people, float16) next to the models, records it
(file, sha256, top_k, the embedding model it was made with, source) and the normalisation in
the manifest's recognition block, and re-derives that block's threshold on the simulation
part with it:

    .venv/bin/python -m benchmarks.cohort ship --cache /tmp/edge-door-lfw-raw.npz
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import outputs
from benchmarks.centering import install_side_file, load_cache, pair_names
from converter.recognition import (
    CENTROID,
    SAMPLES,
    TARGET_FAR,
    TRIALS,
    Population,
    _trial_scores,
    derive_from_embeddings,
)
from edge_app.centering import centre, load_mean, mean_of, model_identity
from edge_app.cohort import COHORT_FILE, COHORT_KEY, MODES, NORMALISATION_KEY, CohortNormaliser
from edge_app.lfw import accuracy_at, best_threshold, cross_validated_accuracy, read_pairs
from edge_app.logs import setup_logging
from edge_app.manifest import MANIFEST_NAME, ManifestError
from edge_app.matching import CENTROID_KEY, accepts, stranger_threshold
from edge_app.paths import REPO_ROOT, SHARED_DATA
from edge_app.reports import check_output, write_report

MODELS = REPO_ROOT / "models" / "tflite"
REPORT = REPO_ROOT / "benchmarks" / "cohort.json"
SPLIT_SEED = 1
COHORT_PEOPLE = 1200  # the largest cohort measured; smaller ones are its first C rows
SIZES = (400, 800, 1200)
TOP_K_SHARES = (0.25, 1.0)  # top_k as a share of the cohort size
SEEDS = 5


def people(names: list[str]) -> np.ndarray:
    return np.array([n.split("/")[0] for n in names])


def split_devtrain(train: list[str]) -> tuple[list[str], list[str]]:
    """(cohort photo names, one per cohort person; simulation photo names), seeded."""
    owner = people(train)
    counts: defaultdict[str, int] = defaultdict(int)
    for person in owner:
        counts[person] += 1
    few = sorted(p for p, c in counts.items() if c <= SAMPLES)
    chosen = np.random.default_rng(SPLIT_SEED).choice(few, COHORT_PEOPLE, replace=False)
    first: dict[str, str] = {}
    for name, person in zip(train, owner, strict=True):
        first.setdefault(str(person), name)
    cohort = [first[str(p)] for p in chosen]
    members = set(chosen.tolist())
    return cohort, [n for n, p in zip(train, owner, strict=True) if p not in members]


def normaliser_for(cohort: np.ndarray, mode: str, share: float) -> CohortNormaliser:
    """As shipped: the cohort stored as float16, top_k a share of its size."""
    stored = cohort.astype(np.float16).astype(np.float32)
    return CohortNormaliser(stored, mode, max(1, round(share * len(stored))))


def door_check(
    embeddings: np.ndarray,
    mirrors: np.ndarray,
    names: list[str],
    rule: dict[str, Any],
    normaliser: CohortNormaliser | None,
    seed: int,
    probes: np.ndarray | None = None,
) -> dict[str, float]:
    """converter.recognition's door simulation on other people with a fixed rule (threshold,
    margin, aggregate, centroid, site_share): identified and stranger acceptance, and the oracle
    identification at TARGET_FAR strangers on these people (probes: rows to probe with, when
    embedded otherwise than the gallery)."""
    population = Population.of(embeddings, names, mirrors, probes)
    rng = np.random.default_rng(seed)
    centroid = rule.get(CENTROID_KEY, False)
    site = float(rule.get("site_share", 0.0))
    trials = [
        _trial_scores(population, rng, rule["aggregate"], normaliser, centroid, site)
        for _ in range(TRIALS)
    ]
    g_best, g_second, correct, s_best, s_second = (
        np.concatenate(parts) for parts in zip(*trials, strict=True)
    )
    margin, threshold = rule["margin"], rule["threshold"]
    oracle = stranger_threshold(s_best, s_second, margin, far=TARGET_FAR, step=1e-6)
    return {
        "identified": float((accepts(g_best, g_second, threshold, margin) & correct).mean()),
        "stranger_accept": float(accepts(s_best, s_second, threshold, margin).mean()),
        "oracle_identified": float((accepts(g_best, g_second, oracle, margin) & correct).mean()),
        "genuine_probes": len(g_best),
        "stranger_probes": len(s_best),
    }


def pair_scores(
    embeddings: np.ndarray, index: dict[str, int], pairs: Any, normaliser: CohortNormaliser | None
) -> np.ndarray:
    """Score of each pair as a door would score it: first photo the probe, second the sample."""
    a = embeddings[[index[n] for n in pairs.first]]
    b = embeddings[[index[n] for n in pairs.second]]
    sims = np.sum(a * b, axis=1)
    if normaliser is None:
        return sims
    return normaliser.scores(sims, normaliser.stats(a), normaliser.stats(b))


def pairs_accuracy(
    embeddings: np.ndarray,
    index: dict[str, int],
    lfw: Path,
    train_normaliser: CohortNormaliser | None,
    test_normaliser: CohortNormaliser | None,
    excluded: set[str],
) -> dict[str, float]:
    train = read_pairs(lfw / "pairsDevTrain.txt")
    test = read_pairs(lfw / "pairsDevTest.txt")
    keep = np.array(
        [
            a.split("/")[0] not in excluded and b.split("/")[0] not in excluded
            for a, b in zip(train.first, train.second, strict=True)
        ]
    )
    d_train = 1.0 - pair_scores(embeddings, index, train, train_normaliser)
    d_test = 1.0 - pair_scores(embeddings, index, test, test_normaliser)
    threshold = best_threshold(d_train[keep], train.same[keep])
    cv, cv_std, _ = cross_validated_accuracy(d_test, test.same, test.fold, 10)
    return {
        "devtest_accuracy": round(accuracy_at(d_test, test.same, threshold), 4),
        "devtest_10fold": round(cv, 4),
        "devtest_10fold_std": round(cv_std, 4),
        "devtrain_pairs_used": int(keep.sum()),
    }


def probe_cost(normaliser: CohortNormaliser, repeats: int = 2000) -> float:
    """Median microseconds of the probe side for one face: the (1 x 512) @ (512 x C) product
    and the top_k statistics (the template side is computed once per gallery load)."""
    probe = normaliser.stats(np.ones((1, 512), np.float32) / np.sqrt(512))[0]
    del probe
    rng = np.random.default_rng(0)
    face = rng.normal(size=(1, 512)).astype(np.float32)
    face /= np.linalg.norm(face)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        normaliser.stats(face)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6)


class Data:
    """The cache's embeddings centred as the engine centres them: on the mean shipped with
    `models`; with models None, on the cache's own DevTrain mean (a crop other than the
    shipped one has its own mean, benchmarks/alignment.py)."""

    def __init__(self, cache_path: Path, lfw: Path, models: Path | None) -> None:
        cache = load_cache(cache_path)
        self.lfw = lfw
        self.index = {str(n): i for i, n in enumerate(cache["names"])}
        self.train, self.test = pair_names(lfw)
        self.embedding_model: str | None = None
        if models is None:
            mean = mean_of(cache["raw"][[self.index[n] for n in self.train]])
        else:
            manifest = json.loads((models / MANIFEST_NAME).read_text())
            shipped = load_mean(models, manifest["preprocessing"])
            if shipped is None:
                raise ManifestError(f"{models}: the manifest names no centring mean")
            mean = shipped
            self.embedding_model = model_identity(manifest["models"]["facenet"]["sha256"], mean)
        self.embeddings = centre(cache["raw"], mean)
        # Enrolment stores each photo's mirror image beside it: so do the simulated galleries.
        self.mirrors = centre(cache["mirror"], mean)
        self.cohort_names, self.sim_names = split_devtrain(self.train)
        first: dict[str, str] = {}
        for name in self.train:
            first.setdefault(name.split("/")[0], name)
        # For the check with every DevTrain person in the cohort (one photo each).
        self.all_devtrain = self.rows(list(first.values()))

    def rows(self, names: list[str], mirrored: bool = False) -> np.ndarray:
        source = self.mirrors if mirrored else self.embeddings
        return source[[self.index[n] for n in names]]


def rule_of(derived: dict[str, Any]) -> dict[str, Any]:
    best = max(derived["candidates"], key=lambda c: c["identified"])
    return {
        "threshold": derived["threshold"],
        "margin": derived["margin"],
        "aggregate": derived["aggregate"],
        CENTROID_KEY: derived[CENTROID_KEY],
        "identified": round(best["identified"], 4),
        "stranger_accept": round(best["stranger_accept"], 5),
    }


def devtrain_table(data: Data) -> list[dict[str, Any]]:
    sim = data.rows(data.sim_names)
    cohort = data.rows(data.cohort_names)
    rows = [{"mode": "none", "size": 0, "top_k": 0, **rule_of(derive(sim, data, None))}]
    print(f"devtrain {rows[-1]}", flush=True)
    for size in SIZES:
        for share in TOP_K_SHARES:
            for mode in MODES:
                normaliser = normaliser_for(cohort[:size], mode, share)
                row = {"mode": mode, "size": size, "top_k": normaliser.top_k, "share": share}
                rows.append({**row, **rule_of(derive(sim, data, normaliser))})
                print(f"devtrain {rows[-1]}", flush=True)
    return rows


def derive(
    sim: np.ndarray, data: Data, normaliser: CohortNormaliser | None, centroid: bool = False
) -> dict[str, Any]:
    """The rule for `normaliser` on the simulation part. The normalisations are compared on
    the stored templates (photo and mirror); the person centroid the door adds on top of the
    chosen one is measured by benchmarks/centroid.py, and `ship` derives with it."""
    mirrors = data.rows(data.sim_names, mirrored=True)
    return derive_from_embeddings(
        sim, data.sim_names, mirrors=mirrors, normaliser=normaliser, centroid=centroid
    )


def devtest_check(
    data: Data, variants: list[dict[str, Any]], seeds: int
) -> dict[str, dict[str, Any]]:
    """Each variant with its DevTrain rule fixed, on DevTest people, over `seeds` seeds."""
    test, mirrors = data.rows(data.test), data.rows(data.test, mirrored=True)
    out: dict[str, dict[str, Any]] = {}
    per_seed: dict[str, list[float]] = {}
    oracle_per_seed: dict[str, list[float]] = {}
    for variant in variants:
        label = variant["label"]
        runs = [
            door_check(test, mirrors, data.test, variant["rule"], variant["normaliser"], seed)
            for seed in range(seeds)
        ]
        per_seed[label] = [r["identified"] for r in runs]
        oracle_per_seed[label] = [r["oracle_identified"] for r in runs]
        summary: dict[str, Any] = {"rule": variant["rule"]}
        for key in ("identified", "stranger_accept", "oracle_identified"):
            values = np.array([r[key] for r in runs])
            summary[key] = round(float(values.mean()), 5)
            summary[f"{key}_std"] = round(float(values.std()), 5)
        summary["genuine_probes_per_seed"] = runs[0]["genuine_probes"]
        summary["stranger_probes_per_seed"] = runs[0]["stranger_probes"]
        out[label] = summary
        print(f"devtest {label}: {summary}", flush=True)
    # Same galleries per seed for every variant: paired differences against raw scores.
    for key, table in (("gain_vs_none", per_seed), ("oracle_gain_vs_none", oracle_per_seed)):
        base = np.array(table["none"])
        for label, seeds_values in table.items():
            gain = np.array(seeds_values) - base
            out[label][key] = round(float(gain.mean()), 5)
            out[label][f"{key}_std"] = round(float(gain.std()), 5)
            out[label][f"{key}_min"] = round(float(gain.min()), 5)
    return out


def shipped_choice(report: Path = REPORT) -> dict[str, Any]:
    """The variant `report` chose on DevTrain (and `ship` shipped): mode, size, share."""
    return dict(json.loads(report.read_text())["chosen"])


def chosen_variant(table: list[dict[str, Any]]) -> dict[str, Any]:
    """The normalised variant identifying most DevTrain probes (DevTest plays no part)."""
    best = max((row for row in table if row["mode"] != "none"), key=lambda r: r["identified"])
    return {"mode": best["mode"], "size": best["size"], "share": best["share"]}


def normaliser_of(
    data: Data, chosen: dict[str, Any], cohort: np.ndarray | None = None
) -> CohortNormaliser:
    rows = data.rows(data.cohort_names)[: chosen["size"]] if cohort is None else cohort
    return normaliser_for(rows, str(chosen["mode"]), float(chosen["share"]))


def cmd_report(args: argparse.Namespace) -> None:
    check_output(args.out, "--out")  # before the minutes of work, not with a traceback after
    data = Data(args.cache, args.data / "lfw", args.models)
    table = devtrain_table(data)
    chosen = chosen_variant(table)
    print(f"chosen on DevTrain: {chosen}", flush=True)
    sim = data.rows(data.sim_names)
    shipped = normaliser_of(data, chosen)
    everyone = normaliser_of(data, chosen, data.all_devtrain)
    variants: list[dict[str, Any]] = [
        {"label": "none", "normaliser": None, "rule": rule_of(derive(sim, data, None))},
        {
            # the raw rule as `edge-convert build` derives it, on every DevTrain person
            "label": "none, rule from all DevTrain",
            "normaliser": None,
            "rule": rule_of(
                derive_from_embeddings(
                    data.rows(data.train),
                    data.train,
                    mirrors=data.rows(data.train, mirrored=True),
                )
            ),
        },
    ]
    for mode in MODES:
        normaliser = normaliser_of(data, {**chosen, "mode": mode})
        rule = rule_of(derive(sim, data, normaliser))
        variants.append({"label": mode, "normaliser": normaliser, "rule": rule})
        if mode == chosen["mode"]:
            # the same rule with every DevTrain person as cohort (top_k the same share)
            variants.append(
                {"label": f"{mode}, cohort all DevTrain", "normaliser": everyone, "rule": rule}
            )
    check = devtest_check(data, variants, args.seeds)
    excluded = {n.split("/")[0] for n in data.cohort_names}
    pairs = {
        "none": pairs_accuracy(data.embeddings, data.index, data.lfw, None, None, set()),
        str(chosen["mode"]): pairs_accuracy(
            data.embeddings, data.index, data.lfw, shipped, shipped, excluded
        ),
    }
    print(f"pairs {pairs}", flush=True)
    cost = {
        f"C={len(n)} top_k={n.top_k}": round(probe_cost(n), 1)
        for n in (
            shipped,
            everyone,
            normaliser_for(data.rows(data.cohort_names)[:400], "s-norm", 0.25),
        )
    }
    print(f"probe cost (us) {cost}", flush=True)
    report = {
        "split": {
            "cohort_people": len(data.cohort_names),
            "simulation_images": len(data.sim_names),
            "simulation_people": len(set(people(data.sim_names))),
            "devtest_images": len(data.test),
            "seed": SPLIT_SEED,
        },
        "chosen": chosen,
        "devtrain": table,
        "devtest": check,
        "pairs": pairs,
        "probe_side_microseconds": cost,
    }
    write_report(args.out, report, "--out")
    print(f"wrote {args.out}")


def cmd_ship(args: argparse.Namespace) -> None:
    data = Data(args.cache, args.data / "lfw", args.models)
    chosen = shipped_choice(args.out)
    cohort = data.rows(data.cohort_names)[: chosen["size"]].astype(np.float16)
    normaliser = normaliser_of(data, chosen)
    recognition = derive(data.rows(data.sim_names), data, normaliser, centroid=CENTROID)
    manifest_path = args.models / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    previous = (manifest.get("recognition") or {}).get(COHORT_KEY, {}).get("file")
    recognition["scale"] = (
        f"{chosen['mode']} cohort-normalised cosine similarity (edge_app/cohort.py), put "
        "back on the cosine scale; strong matches can exceed 1"
    )
    recognition["derivation"] += (
        f"; scores {chosen['mode']}-normalised against the cohort, simulated on the DevTrain "
        "people outside it"
    )
    recognition[NORMALISATION_KEY] = chosen["mode"]

    def naming(file: str, sha256: str) -> dict[str, Any]:
        recognition[COHORT_KEY] = {
            "file": file,
            "sha256": sha256,
            "people": len(cohort),
            "top_k": normaliser.top_k,
            "embedding_model": data.embedding_model,
            "source": f"LFW pairsDevTrain.txt people with at most {SAMPLES} photos, "
            f"{len(cohort)} drawn with seed {SPLIT_SEED}, one centred unit embedding each "
            "(float16); the threshold is derived on the other DevTrain people; built by "
            "`python -m benchmarks.cohort ship`",
        }
        manifest["recognition"] = recognition
        return manifest

    # The file and the manifest naming it change together (benchmarks.centering).
    install_side_file(args.models, COHORT_FILE, lambda out: np.save(out, cohort), naming, previous)
    print(
        f"wrote {args.models / COHORT_FILE} ({len(cohort)} people, top_k {normaliser.top_k}); "
        f"recognition threshold {recognition['threshold']} aggregate "
        f"{recognition['aggregate']} margin {recognition['margin']}"
    )


def derive_and_check(
    data: Data,
    normaliser: CohortNormaliser,
    seeds: int,
    centroid: bool,
    probes: np.ndarray | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A variant's rule derived on the DevTrain simulation people, then checked, fixed, on
    DevTest people over `seeds` seeds (the same galleries for every variant): (rule, summary
    with identified per seed and on average, strangers accepted and the oracle at 0.1%).
    probes: rows (in cache order) to probe with, when embedded otherwise than the gallery."""
    sim_rows = [data.index[n] for n in data.sim_names]
    test_rows = [data.index[n] for n in data.test]
    probing = data.embeddings if probes is None else probes
    rule = rule_of(
        derive_from_embeddings(
            data.embeddings[sim_rows],
            data.sim_names,
            mirrors=data.mirrors[sim_rows],
            normaliser=normaliser,
            centroid=centroid,
            probes=probing[sim_rows],
        )
    )
    runs = [
        door_check(
            data.embeddings[test_rows],
            data.mirrors[test_rows],
            data.test,
            rule,
            normaliser,
            seed,
            probes=probing[test_rows],
        )
        for seed in range(seeds)
    ]
    identified = [round(r["identified"], 5) for r in runs]
    summary = {
        "devtest_identified": round(float(np.mean(identified)), 5),
        "devtest_identified_per_seed": identified,
        "devtest_stranger_accept": round(float(np.mean([r["stranger_accept"] for r in runs])), 6),
        "devtest_oracle_identified": round(
            float(np.mean([r["oracle_identified"] for r in runs])), 5
        ),
    }
    return rule, summary


def check_parser(doc: str, out: Path) -> argparse.ArgumentParser:
    """The command line every LFW-cache check shares (this one, benchmarks/centroid.py,
    benchmarks/projection.py): --data, --cache, --models, --seeds and --out, help from `doc`
    (the module docstring)."""
    parser = argparse.ArgumentParser(
        description=doc.splitlines()[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data", type=Path, default=SHARED_DATA, help="holds lfw/ (default: %(default)s)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("/tmp/edge-door-lfw-raw.npz"),
        help="raw FaceNet outputs of `python -m benchmarks.centering embed` (%(default)s)",
    )
    parser.add_argument("--models", type=Path, default=MODELS, help="default: %(default)s")
    parser.add_argument(
        "--seeds", type=int, default=SEEDS, help="DevTest seeds (default: %(default)s)"
    )
    parser.add_argument("--out", type=Path, default=out, help="default: %(default)s")
    return parser


def checked_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, refusing a missing cache or no seeds with a usage error (exit 2)."""
    args = parser.parse_args(argv)
    if not args.cache.is_file():
        parser.error(
            f"{args.cache} does not exist: make it with "
            f"`python -m benchmarks.centering embed --cache {args.cache}`"
        )
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    return args


def two_step_args(
    doc: str,
    helps: tuple[str, str],
    caches: tuple[tuple[str, str], ...],
    out: Path,
    argv: list[str] | None,
    models: bool = False,
) -> argparse.Namespace:
    """The command line of a check that embeds LFW with other crops (`embed --cache`), then
    scores caches against each other (`report`; benchmarks/alignment.py and
    benchmarks/enrol_crops.py): helps are the two steps' help, caches the report's cache
    options (name, help), models whether the report takes --models. A report cache that does
    not exist is a usage error (exit 2)."""
    parser = argparse.ArgumentParser(
        description=doc.splitlines()[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="holds lfw/ (%(default)s)")
    steps = parser.add_subparsers(dest="step", required=True)
    embed = steps.add_parser("embed", help=helps[0])
    embed.add_argument("--cache", type=Path, required=True, help="the .npz to write")
    embed.add_argument("--threads", type=int, default=2, help="CPU threads (%(default)s)")
    report = steps.add_parser("report", help=helps[1])
    for name, help_text in caches:
        report.add_argument(f"--{name}", type=Path, required=True, help=help_text)
    if models:
        report.add_argument("--models", type=Path, default=MODELS, help="%(default)s")
    report.add_argument("--seeds", type=int, default=SEEDS, help="DevTest seeds (%(default)s)")
    report.add_argument("--out", type=Path, default=out, help="%(default)s")
    args = parser.parse_args(argv)
    for name, _ in caches if args.step == "report" else ():
        if not getattr(args, name).is_file():
            parser.error(f"{getattr(args, name)} does not exist (see --help for how to make it)")
    return args


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = check_parser(__doc__, REPORT)
    parser.add_argument("step", choices=["report", "ship"])
    args = checked_args(parser, argv)
    setup_logging(-1)  # warnings and errors only; a stop or a refusal: outputs.command
    {"report": cmd_report, "ship": cmd_ship}[args.step](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
