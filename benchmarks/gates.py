"""What each enrolment gate costs (photos refused) and buys (identification), on LFW.

Step 1 runs the int8 engine's detection once over every LFW development image (DevTrain and
DevTest pairs) and caches each image's gate measures: the number of faces, the two largest
face sizes, and for the face enrolment would take (the largest) its roll, yaw, pitch and
sharpness, plus its raw FaceNet output when it is not the image's central face (the one LFW
labels). It also records the product's own verdict (edge_app.quality.check_face) at the
gates of the day, so step 2 can check that its vectorised copy of the rule agrees:

    python -m benchmarks.gates measure --data ../shared/data --cache /work/cache/gates_measures.npz

Step 2 plays open-set doors on those numbers, with the raw FaceNet outputs of each image's
central face from `python -m benchmarks.centering embed` (centred on the shipped mean, as
the engine does). Per door: GALLERY_SIZE people with more than SAMPLES photos; each sets
aside one random photo as the visit (the probe, fixed before any gate runs, so the probes do
not depend on the gates) and enrols from the others in random order, skipping refused
photos and near-duplicates as a user would, until SAMPLES are in; a person who runs out is
not enrolled and their visit counts as not identified ("strict"). The same doors are also
played with refused photos taken last, when too few pass ("fill"): everyone is enrolled, so
that figure moves only with which photos the gate picks, i.e. what the gate buys. Strangers
are every photo of the people not in the gallery. Each gate is swept over a grid with the
other gates at their shipped limits; reported per limit: photos refused (of all photos of
the set), people who cannot be enrolled (of the gallery places), and visits identified at
the stranger limit (the threshold re-derived per row by the manifest's rule: the lowest
letting at most TARGET_FAR of the strangers in) and at the shipped threshold:

    python -m benchmarks.gates report --data ../shared/data \\
        --cache /work/cache/gates_measures.npz --raw /work/cache/lfw_raw.npz

Limits are chosen on DevTrain people only (choose(): the loosest real limit whose "fill"
identification is within NOISE_SE paired standard errors of the gate's best); DevTest people,
never used for any choice, check them. `python -m benchmarks.gates table` prints the tables
of docs/GALLERY.md from the JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks import outputs
from edge_app.centering import MEAN_FILE, centre
from edge_app.engine import Engine
from edge_app.images import load_photo
from edge_app.lfw import central_face, read_pairs
from edge_app.manifest import load_manifest
from edge_app.matching import NO_SCORE, accepts, stranger_threshold, top_two
from edge_app.paths import REPO_ROOT, SHARED_DATA
from edge_app.quality import DEFAULT_GATES, Gates, Reason, check_face, pose, sharpness
from edge_app.reports import check_output

MODELS = REPO_ROOT / "models" / "tflite"
RESULT = REPO_ROOT / "benchmarks" / "gates.json"
GALLERY_SIZE = 20  # as converter.recognition's door simulation
SAMPLES = 2
TARGET_FAR = 1e-3
MARGIN = 0.0  # the manifest's margin these doors play with (main refuses another)
TRIALS = 400
SEED = 11
NOISE_SE = 2.0  # a limit is "no better" than another within this many standard errors
BYSTANDER_MARGIN = 1.15
# What a limit buys: identification when refused photos are used only if nothing else is left
# (everyone enrolled), so the figure moves with the photos the gate picks, not with how many
# people run out of photos (that cost is reported beside it).
CHOICE = "fill_identified_far"
INF = float("inf")
# Per gate: the Gates field and the grid, loosest first ("off" is the loosest).
GRIDS: dict[str, tuple[str, list[Any]]] = {
    "several_faces": ("dominant_ratio", [1.0, 1.25, 1.5, 2.0, 3.0, INF]),
    "too_small": ("min_face", [0.0, 40.0, 48.0, 56.0, 64.0, 72.0, 80.0]),
    "roll": ("max_roll_deg", [INF, 30.0, 25.0, 20.0, 15.0, 10.0]),
    "yaw": ("max_yaw", [INF, 0.5, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15]),
    "pitch": (
        "pitch_range",
        [(-INF, INF), (0.15, 0.9), (0.2, 0.85), (0.25, 0.8), (0.3, 0.75), (0.35, 0.7)],
    ),
    "blurry": ("min_sharpness", [0.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0]),
    "near_duplicate": ("near_duplicate", [1.0, 0.99, 0.98, 0.95, 0.9]),
}
# The limits before this measurement, for comparison: one face only, the rest as now.
BEFORE = Gates(
    min_face=64.0,
    dominant_ratio=INF,
    max_roll_deg=20.0,
    max_yaw=0.25,
    pitch_range=(0.25, 0.8),
    min_sharpness=25.0,
    near_duplicate=0.98,
)
OFF = Gates(
    min_face=0.0,
    dominant_ratio=1.0,
    max_roll_deg=INF,
    max_yaw=INF,
    pitch_range=(-INF, INF),
    min_sharpness=0.0,
    near_duplicate=1.0,
)


def dev_names(lfw: Path) -> tuple[list[str], list[str]]:
    train = sorted(set(read_pairs(lfw / "pairsDevTrain.txt").images))
    test = sorted(set(read_pairs(lfw / "pairsDevTest.txt").images))
    return train, test


# --- step 1: measures -------------------------------------------------------------------


def cmd_measure(args: argparse.Namespace) -> None:
    lfw = args.data / "lfw"
    train, test = dev_names(lfw)
    names = sorted(set(train) | set(test))
    engine = Engine.open(backend="cpu", threads=args.threads)
    n = len(names)
    columns = {
        key: np.zeros(n, np.float32)
        for key in ("size1", "size2", "roll", "yaw", "pitch", "sharpness")
    }
    count = np.zeros(n, np.int32)
    central_is_largest = np.ones(n, bool)
    other_raw = np.full((n, 512), np.nan, np.float32)
    verdict = np.empty(n, dtype="<U16")
    start = time.perf_counter()
    for i, name in enumerate(tqdm(names, desc="gate measures", unit="image", disable=None)):
        frame = load_photo(lfw / "images" / name).pixels
        faces = engine.detect(frame)
        rejection = check_face(frame, faces, args.verdict_gates)
        verdict[i] = "" if rejection is None else rejection.reason.value
        count[i] = len(faces)
        if len(faces) == 0:
            continue
        sizes = faces.sizes
        order = np.argsort(-sizes, kind="stable")
        largest = int(order[0])
        columns["size1"][i] = sizes[largest]
        columns["size2"][i] = sizes[order[1]] if len(faces) > 1 else 0.0
        face = faces[largest]
        roll, yaw, pitch = (float(v[0]) for v in pose(face.landmarks))
        columns["roll"][i], columns["yaw"][i], columns["pitch"][i] = roll, yaw, pitch
        columns["sharpness"][i] = sharpness(frame, face.boxes[0])
        if central_face(faces, frame.shape[1], frame.shape[0]) != largest:
            central_is_largest[i] = False
            other_raw[i] = engine.embed_raw(frame, face)[0]
    cache = {
        "names": np.array(names),
        "count": count,
        "central_is_largest": central_is_largest,
        "largest_raw": other_raw,
        "verdict": verdict,
        "verdict_gates": np.array(json.dumps(asdict(args.verdict_gates))),
        "seconds": np.array(time.perf_counter() - start),
        **columns,
    }
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.cache.with_suffix(".tmp.npz")
    np.savez(tmp, **cache)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    tmp.replace(args.cache)
    print(f"wrote {args.cache}: {n} images in {float(cache['seconds']):.0f} s")


# --- step 2: door simulation ------------------------------------------------------------


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def refusals(m: dict[str, np.ndarray], gates: Gates) -> np.ndarray:
    """Per image, the reason code check_face would give ("" = accepted), vectorised; but
    for cut_by_edge, its last gate, which the cache cannot tell (it keeps no boxes) and which
    refuses none of the development photos the others pass (docs/GALLERY.md)."""
    reason = np.full(len(m["count"]), "", dtype="<U16")
    low, high = gates.pitch_range
    rules = [
        (m["count"] == 0, Reason.NO_FACE),
        (
            (m["count"] > 1) & (m["size1"] / np.maximum(m["size2"], 1e-9) < gates.dominant_ratio),
            Reason.SEVERAL_FACES,
        ),
        (m["size1"] < gates.min_face, Reason.TOO_SMALL),
        (
            (np.abs(m["roll"]) > gates.max_roll_deg)
            | (np.abs(m["yaw"]) > gates.max_yaw)
            | (m["pitch"] < low)
            | (m["pitch"] > high),
            Reason.NOT_FRONTAL,
        ),
        (m["sharpness"] < gates.min_sharpness, Reason.BLURRY),
    ]
    for mask, code in rules:
        reason[(reason == "") & mask] = code.value
    return reason


class DoorSet:
    """One set of people (DevTrain or DevTest): the embeddings a door would hold and see."""

    def __init__(
        self,
        names: list[str],
        m: dict[str, np.ndarray],
        raw: dict[str, np.ndarray],
        mean: np.ndarray,
    ) -> None:
        m_index = {str(n): i for i, n in enumerate(m["names"])}
        r_index = {str(n): i for i, n in enumerate(raw["names"])}
        rows = np.array([m_index[n] for n in names])
        self.measures = {k: v[rows] for k, v in m.items() if v.ndim and len(v) == len(m["names"])}
        central = raw["raw"][[r_index[n] for n in names]]
        largest = np.where(
            self.measures["central_is_largest"][:, None], central, self.measures["largest_raw"]
        )
        self.probe = centre(central, mean)  # the door: the face LFW labels
        self.templates = centre(largest, mean)  # enrolment: the face the gates chose
        self.similarity = self.probe @ self.templates.T  # probe x enrolment photo
        self.self_similarity = self.templates @ self.templates.T  # for the near-duplicate gate
        self.person = np.array([n.split("/")[0] for n in names])
        self.by_person: dict[str, np.ndarray] = {}
        for index, person in enumerate(self.person):
            self.by_person.setdefault(person, np.zeros(0, int))
            self.by_person[person] = np.append(self.by_person[person], index)
        self.enrollable = np.array(
            sorted(p for p, ix in self.by_person.items() if len(ix) > SAMPLES)
        )

    def enrol(self, order: np.ndarray, accepted: np.ndarray, gates: Gates, fill: bool) -> list[int]:
        """The photos a person enrols with, taking `order` as offered. Refused photos are
        skipped; with `fill`, they are taken after all (in order) when too few pass, which
        keeps everyone enrolled and isolates what the gate's choice of photos buys."""
        taken: list[int] = []
        for passes in (True, False) if fill else (True,):
            for candidate in order:
                if bool(accepted[candidate]) != passes or len(taken) == SAMPLES:
                    continue
                if taken and self.self_similarity[candidate, taken].max() > gates.near_duplicate:
                    continue
                taken.append(int(candidate))
        return taken

    def play(self, gates: Gates, threshold: float, trials: int = TRIALS) -> dict[str, Any]:
        """The doors at `gates`; identification at the FAR rule and at `threshold`."""
        reason = refusals(self.measures, gates)
        accepted = reason == ""
        rng = np.random.default_rng(SEED)
        # Per door: (best, second) scores; a genuine probe's best is -inf unless it is the
        # probe's own person.
        genuine: dict[bool, list[tuple[np.ndarray, np.ndarray]]] = {False: [], True: []}
        stranger: dict[bool, list[tuple[np.ndarray, np.ndarray]]] = {False: [], True: []}
        failed = 0
        for _ in range(trials):
            chosen = rng.choice(self.enrollable, size=GALLERY_SIZE, replace=False)
            orders = [rng.permutation(self.by_person[person]) for person in chosen]
            probes = np.array([order[0] for order in orders])
            strangers = np.flatnonzero(~np.isin(self.person, chosen))
            for fill in (False, True):
                columns, owner = [], []
                probe_slot = np.full(GALLERY_SIZE, -1)
                for slot, order in enumerate(orders):
                    taken = self.enrol(order[1:], accepted, gates, fill)
                    if len(taken) < SAMPLES:
                        failed += not fill
                        continue
                    columns.extend(taken)
                    owner.extend([slot] * SAMPLES)
                    probe_slot[slot] = slot
                owner_array = np.array(owner)
                if columns:
                    scores = self.person_scores(probes, np.array(columns), owner_array)
                    slots = np.unique(owner_array)
                    index, best, second = top_two(scores)
                    best = np.where(slots[index] == probe_slot, best, -np.inf)
                    s_scores = self.person_scores(strangers, np.array(columns), owner_array)
                    _, s_best, s_second = top_two(s_scores)
                else:
                    best, second = np.full(len(probes), -np.inf), np.full(len(probes), NO_SCORE)
                    s_best = s_second = np.full(len(strangers), NO_SCORE)
                genuine[fill].append((best, second))
                stranger[fill].append((s_best, s_second))
        row: dict[str, Any] = {
            "photos_refused": int((~accepted).sum()),
            "photos": len(reason),
            "refused_rate": round(float((~accepted).mean()), 4),
            "refused_by": {
                str(code): int(n)
                for code, n in zip(*np.unique(reason[~accepted], return_counts=True), strict=True)
            },
            # accepted photos whose enrolled face is not the one LFW labels (a bystander)
            "other_face_accepted": int((accepted & ~self.measures["central_is_largest"]).sum()),
            "not_enrolled_rate": round(failed / (trials * GALLERY_SIZE), 4),
        }
        # The door's rule (edge_app.matching.accepts) with the manifest's margin 0 (main
        # checks it): a tie between two people names nobody.
        for fill, label in ((False, "strict"), (True, "fill")):
            g, g2 = (np.concatenate(part) for part in zip(*genuine[fill], strict=True))
            s, s2 = (np.concatenate(part) for part in zip(*stranger[fill], strict=True))
            far_threshold = stranger_threshold(s, s2, MARGIN, far=TARGET_FAR)
            row[f"{label}_threshold_far"] = round(far_threshold, 4)
            row[f"{label}_identified_far"] = round(
                float(accepts(g, g2, far_threshold, MARGIN).mean()), 4
            )
            row[f"{label}_identified_shipped"] = round(
                float(accepts(g, g2, threshold, MARGIN).mean()), 4
            )
            row[f"{label}_strangers_in_shipped"] = round(
                float(accepts(s, s2, threshold, MARGIN).mean()), 5
            )
            if fill:  # per door, for the paired noise of a difference between two limits
                row["_per_trial"] = np.array(
                    [accepts(b, b2, far_threshold, MARGIN).mean() for b, b2 in genuine[fill]]
                )
        return row

    def person_scores(
        self, probes: np.ndarray, columns: np.ndarray, owner: np.ndarray
    ) -> np.ndarray:
        """(P, people) best similarity per enrolled person (the manifest's `best` aggregate)."""
        block = self.similarity[np.ix_(probes, columns)]
        slots = np.unique(owner)
        return np.stack([block[:, owner == s].max(axis=1) for s in slots], axis=1)


def brief(row: dict[str, Any]) -> str:
    return (
        f"refused {row['photos_refused']:4d} ({row['refused_rate']:.1%}) not enrolled "
        f"{row['not_enrolled_rate']:.1%} other-face {row['other_face_accepted']:3d} | "
        f"identified strict {row['strict_identified_far']:.2%} (shipped thr "
        f"{row['strict_identified_shipped']:.2%}) fill {row['fill_identified_far']:.2%} "
        f"(shipped thr {row['fill_identified_shipped']:.2%})"
    )


def sweep(door: DoorSet, base: Gates, threshold: float) -> dict[str, list[dict[str, Any]]]:
    table: dict[str, list[dict[str, Any]]] = {}
    for gate, (field, grid) in GRIDS.items():
        rows = []
        for limit in grid:
            row = door.play(replace(base, **{field: limit}), threshold)
            rows.append({"limit": limit, **row})
            print(f"  {gate:15s} {field}={limit!s:12s} {brief(row)}", flush=True)
        table[gate] = rows
    return table


def choose(table: dict[str, list[dict[str, Any]]], bystander_ratio: float) -> dict[str, Any]:
    """Per gate, among its real limits (not "off": a backstop for photos worse than any in
    LFW), the loosest whose identification (CHOICE) is not clearly below the best of them:
    less than NOISE_SE paired standard errors of the per-door difference (same doors, same
    probes). A dominance ratio must also exceed BYSTANDER_MARGIN x `bystander_ratio`, the
    largest ratio at which the largest face was not the labelled person: enrolling a
    bystander would let a stranger in, which the identification figure does not show."""
    chosen = {}
    for gate, rows in table.items():
        allowed = [
            row
            for row in rows[1:]  # rows[0] is "off"
            if gate != "several_faces" or row["limit"] > BYSTANDER_MARGIN * bystander_ratio
        ]
        best = max(allowed, key=lambda r: r[CHOICE])
        for row in allowed:
            diff = best["_per_trial"] - row["_per_trial"]
            se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
            row["below_best"] = round(best[CHOICE] - row[CHOICE], 4)
            row["below_best_se"] = round(se, 4)
            if gate not in chosen and best[CHOICE] - row[CHOICE] <= NOISE_SE * se:
                chosen[gate] = row["limit"]
    return chosen


def gates_from(values: dict[str, Any]) -> Gates:
    """Gates from their asdict() / JSON form."""
    low, high = values["pitch_range"]
    rest = {key: float(value) for key, value in values.items() if key != "pitch_range"}
    return replace(DEFAULT_GATES, pitch_range=(float(low), float(high)), **rest)


def plain(value: Any) -> Any:
    """JSON-ready: an infinite limit (the gate off) written as "off", tuples as lists."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items() if not key.startswith("_")}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, float) and np.isinf(value):
        return "off"
    return value


def cmd_report(args: argparse.Namespace) -> None:
    check_output(args.out, "--out")  # before the work, not with a traceback after
    lfw = args.data / "lfw"
    train, test = dev_names(lfw)
    m, raw = load(args.cache), load(args.raw)
    manifest = load_manifest(args.models)
    rec = manifest.recognition
    if rec.get("aggregate") != "best" or float(rec.get("margin", 0.0)) != 0.0:
        sys.exit("benchmarks.gates plays the `best` aggregate with margin 0, as the manifest did")
    threshold = float(rec["threshold"])
    mean = np.load(args.models / MEAN_FILE, allow_pickle=False).astype(np.float32)
    verdict_gates = gates_from(json.loads(str(m["verdict_gates"])))
    agree = refusals(m, verdict_gates) == m["verdict"]
    print(f"vectorised rule agrees with check_face on {agree.sum()} of {len(agree)} images")
    train_people = {n.split("/")[0] for n in train}
    test = [n for n in test if n.split("/")[0] not in train_people]
    report: dict[str, Any] = {
        "images": {"devtrain": len(train), "devtest": len(test)},
        "rule_agrees_with_check_face": f"{int(agree.sum())}/{len(agree)}",
        "threshold_shipped": threshold,
        "setup": {
            "gallery": GALLERY_SIZE,
            "samples": SAMPLES,
            "trials": TRIALS,
            "target_far": TARGET_FAR,
            "seed": SEED,
            "noise_se": NOISE_SE,
        },
    }
    shipped = DEFAULT_GATES
    report["shipped_gates"] = asdict(shipped)
    for label, names in (("devtrain", train), ("devtest", test)):
        door = DoorSet(names, m, raw, mean)
        print(
            f"{label}: {len(names)} images, {len(door.enrollable)} people with > {SAMPLES} photos",
            flush=True,
        )
        result: dict[str, Any] = {"people_enrollable": len(door.enrollable)}
        result["off"] = door.play(OFF, threshold)
        result["shipped_before"] = door.play(BEFORE, threshold)
        result["shipped"] = door.play(shipped, threshold)
        for key in ("off", "shipped_before", "shipped"):
            print(f"  {key:15s} {brief(result[key])}", flush=True)
        result["sweep"] = sweep(door, shipped, threshold)
        if label == "devtrain":
            other = ~door.measures["central_is_largest"]
            ratios = door.measures["size1"][other] / door.measures["size2"][other]
            bystander = round(float(ratios.max()), 3)
            result["bystander_ratio_max"] = bystander
            print(
                f"  largest face not the labelled one: {other.sum()} photos, ratio <= {bystander}",
                flush=True,
            )
            result["chosen"] = choose(result["sweep"], bystander)
            print(f"  chosen {result['chosen']}", flush=True)
            picked = replace(shipped, **{GRIDS[g][0]: v for g, v in result["chosen"].items()})
            report["chosen_gates"] = asdict(picked)
        result["chosen_play"] = door.play(
            gates_from(report["chosen_gates"]),
            threshold,
        )
        print(f"  chosen          {brief(result['chosen_play'])}", flush=True)
        report[label] = result
    outputs.write_json(args.out, plain(report), "--out", indent=1)
    print(f"wrote {args.out}")


def pct(value: float, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f}%"


def fmt(gate: str, limit: Any) -> str:
    if gate == "several_faces":
        if limit == "off":
            return "one face only"
        return "1 (always the largest)" if limit == 1.0 else f"{limit:g}"
    if isinstance(limit, list):
        return "off" if all(v == "off" for v in limit) else "-".join(f"{v:g}" for v in limit)
    return "off" if limit == "off" else f"{limit:g}"


def cmd_table(args: argparse.Namespace) -> None:
    """The docs/GALLERY.md tables from the last report's JSON."""
    report = json.loads(args.out.read_text())
    shipped = report.get("shipped_gates", plain(asdict(DEFAULT_GATES)))
    head = (
        "| gate | limit | photos refused | bystander photos accepted | people not enrolled | "
        "identified (gate strict) | identified (refused photos last) |\n"
        "|---|---|---|---|---|---|---|"
    )
    for label in ("devtrain", "devtest"):
        result = report[label]
        print(
            f"\n{label}: {report['images'][label]} photos, {result['people_enrollable']} people "
            f"with more than {SAMPLES}\n"
        )
        print(head)

        def line(gate: str, limit: str, row: dict[str, Any]) -> None:
            print(
                f"| {gate} | {limit} | {row['photos_refused']} ({pct(row['refused_rate'])}) | "
                f"{row['other_face_accepted']} | {pct(row['not_enrolled_rate'])} | "
                f"{pct(row['strict_identified_far'], 2)} | {pct(row['fill_identified_far'], 2)} |"
            )

        line("all gates", "off", result["off"])
        line(
            "all gates",
            "one face only, roll 20, yaw 0.25, pitch 0.25-0.8",
            result["shipped_before"],
        )
        line("all gates", "**shipped**", result["shipped"])
        line("all gates", "the DevTrain rule's picks", result["chosen_play"])
        for gate, rows in result["sweep"].items():
            for row in rows:
                limit = fmt(gate, row["limit"])
                bold = row["limit"] == shipped[GRIDS[gate][0]]
                line(gate, f"**{limit}**" if bold else limit, row)


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/edge-door-gates.npz"))
    parser.add_argument(
        "--raw",
        type=Path,
        default=Path("/tmp/edge-door-lfw-raw.npz"),
        help="the raw FaceNet cache of `python -m benchmarks.centering embed`",
    )
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("step", choices=["measure", "report", "table"])
    args = parser.parse_args(argv)
    args.verdict_gates = DEFAULT_GATES
    logging.basicConfig(level=logging.WARNING)
    {"measure": cmd_measure, "report": cmd_report, "table": cmd_table}[args.step](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
