"""docs/BENCHMARKS.md and docs/benchmarks.png from benchmarks/results.json.

    .venv-bench/bin/python -m benchmarks.report      # rewrite the docs from the last results

Every number in the document comes from results.json (this run) or accuracy.json (the LFW
checks of the fast-path prototypes), except the Edge TPU and Raspberry Pi figures, which are
published ones and are labelled so. The prose that interprets them is written against the
numbers of the run it sits in: when a rerun changes which stage dominates, the text follows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks import outputs
from edge_app.reports import check_output

REPO = Path(__file__).resolve().parents[1]
STAGES = ("pyramid", "pnet", "nms", "rnet", "onet", "align", "facenet", "match")
STAGE_NAMES = {
    "pyramid": "pyramid (8 resizes)",
    "pnet": "P-Net (8 levels)",
    "nms": "NMS + box regression",
    "rnet": "R-Net (crops + invokes)",
    "onet": "O-Net (crops + invokes)",
    "align": "alignment (FaceNet crops)",
    "facenet": "FaceNet",
    "match": "matching (1 person)",
}
PROTOTYPES = ("proto-octave", "proto-minface80")
FPS_TARGETS = {"e2e": ("facenet-pytorch", 2.0), "detect": ("mtcnn", 4.0)}
WHOLE_TARGET = ("facenet-pytorch", 4.0)  # whole process, cold start + 100 frames, wall time
RSS_TARGET_MB = 300.0


def _processes(daemon: dict) -> str:
    """How the door's peak RSS splits between its two processes, where measured."""
    relay = daemon.get("relay_process_peak_rss_mb")
    if not relay:
        return ""
    return f"; door process {daemon['door_process_peak_rss_mb']:.0f} + relay process {relay:.0f}"


def shown(path: str) -> str:
    """A path inside the repository as the Makefile names it (relative), others as given."""
    prefix = str(REPO) + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


def fps(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    f = entry["fps"]
    return f"{f['median']:.1f} ({f['p10']:.1f}-{f['p90']:.1f})"


def ms(stat: dict[str, Any] | None) -> str:
    if not stat or not stat.get("n"):
        return "-"
    return f"{stat['median']:.2f} ({stat['p10']:.2f}-{stat['p90']:.2f})"


def ratio(stat: dict[str, Any] | None) -> str:
    if not stat or not stat.get("n"):
        return "-"
    return f"{stat['median']:.2f}x ({stat['p10']:.2f}-{stat['p90']:.2f})"


def faces(result: dict, name: str, mode: str) -> str:
    entries = result.get(name, {}).get(mode, {})
    parts = []
    for condition in ("0", "1", "3"):
        entry = entries.get(condition)
        if entry is None:
            parts.append("-")
            continue
        found = entry["faces"]
        low, high = found["min"], found["max"]
        parts.append(str(low) if low == high else f"{low}-{high}")
    return "/".join(parts)


def label(results: dict, name: str) -> str:
    return results["systems"].get(name, {}).get("label", name)


def baseline(results: dict) -> str:
    """The system every "ours / peer" ratio is taken against (older results: ours-int8)."""
    return results.get("baseline", "ours-int8")


def spread(stat: dict[str, Any] | None) -> str:
    if not stat or not stat.get("n"):
        return "-"
    return f"{stat['median']:.1f}x ({stat['p10']:.1f}-{stat['p90']:.1f})"


def target_rows(results: dict) -> list[tuple[str, str, bool | None, str]]:
    """(target, measured, met, same ratio for the all-int8 pipeline) for the issue's targets;
    met None = not measurable here."""
    rows: list[tuple[str, str, bool | None, str]] = []
    whole = results.get("whole_process", {}).get("systems", {})
    peer, wanted = WHOLE_TARGET
    stat = whole.get(peer, {}).get("ours_ratio")
    target = (
        f"whole process (start cold, import, load, {results['whole_process'].get('frames', '?')} "
        f"one-face frames end to end, exit): >= {wanted:g}x {peer}"
        if whole
        else f"whole process: >= {wanted:g}x {peer}"
    )
    if stat and stat.get("n"):
        int8 = whole.get("ours-int8", {}).get("wall_seconds")
        theirs = whole.get(peer, {}).get("wall_seconds")
        rows.append(
            (
                target,
                f"{stat['median']:.1f}x (p10-p90 over rounds {stat['p10']:.1f}-{stat['p90']:.1f})",
                stat["p10"] >= wanted,
                f"{theirs['median'] / int8['median']:.1f}x (ratio of medians)"
                if int8 and theirs
                else "-",
            )
        )
    else:
        rows.append((target, f"{peer} not measured", None, "-"))
    for mode, (peer, wanted) in FPS_TARGETS.items():
        stat = results["ratios"].get(peer, {}).get(mode, {}).get("1")
        int8 = results.get("ratios_int8", {}).get(peer, {}).get(mode, {}).get("1")
        what = (
            "end-to-end fps at 640x480, one face"
            if mode == "e2e"
            else "detection alone, 640x480, one face"
        )
        target = f"{what}: >= {wanted:g}x {peer}"
        if not stat:
            rows.append((target, f"{peer} not measured", None, "-"))
            continue
        rows.append(
            (
                target,
                f"{stat['median']:.1f}x (p10-p90 over rounds {stat['p10']:.1f}-{stat['p90']:.1f})",
                stat["p10"] >= wanted,
                f"{int8['median']:.1f}x ({int8['p10']:.1f}-{int8['p90']:.1f})" if int8 else "-",
            )
        )
    daemon = results.get("daemon", {})
    if daemon.get("peak_rss_mb"):
        rows.append(
            (
                f"daemon peak RSS <= {RSS_TARGET_MB:g} MB",
                f"{daemon['peak_rss_mb']:.0f} MB (edge-app run, 1280x960 capture, tracking on"
                f"{_processes(daemon)})",
                daemon["peak_rss_mb"] <= RSS_TARGET_MB and daemon.get("exit_code") == 0,
                "-",
            )
        )
    return rows


def load_accuracy(path: Path) -> dict[str, dict]:
    """Latest LFW result per variant from accuracy.json (JSON lines, appended per check)."""
    out: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                out[record["variant"]] = record
    return out


SHORT = {
    "ours-auto": "ours (cascade auto)",
    "ours-int8": "ours int8",
    "ours-float": "ours float",
    "ours-edgetpu": "ours Edge TPU",
    "proto-octave": "proto: octave pyramid",
    "proto-minface80": "proto: min_face 80",
    "facenet-pytorch": "facenet-pytorch",
    "mtcnn": "mtcnn (Keras)",
    "dlib": "face_recognition (dlib)",
}


def plot(results: dict, target: Path) -> None:
    """End-to-end and detection fps at one face (log scale: the range is 100x), and the
    per-stage milliseconds of ours (cascade auto) and of the all-int8 pipeline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    data = results["results"]
    fig = plt.figure(figsize=(14, 10))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.1, 1])
    panels = (
        (fig.add_subplot(grid[0, 0]), "e2e", "End to end (detect + embed + match), 1 face"),
        (fig.add_subplot(grid[0, 1]), "detect", "Detection only, 1 face"),
    )
    for axis, mode, title in panels:
        rows = []
        for name, modes in data.items():
            entry = modes.get(mode, {}).get("1")
            if entry:
                rows.append((SHORT.get(name, name), entry["fps"], name))
            if mode == "e2e" and modes.get("track", {}).get("1"):
                rows.append(
                    (SHORT.get(name, name) + " + tracking", modes["track"]["1"]["fps"], name)
                )
        rows.sort(key=lambda row: row[1]["median"])
        medians = [row[1]["median"] for row in rows]
        low = [row[1]["median"] - row[1].get("p10", row[1]["median"]) for row in rows]
        high = [row[1].get("p90", row[1]["median"]) - row[1]["median"] for row in rows]
        colours = [
            "tab:blue"
            if row[2].startswith("ours")
            else "tab:cyan"
            if row[2].startswith("proto")
            else "tab:grey"
            for row in rows
        ]
        axis.barh([row[0] for row in rows], medians, xerr=[low, high], color=colours, capsize=3)
        axis.set_xscale("log")
        ticks = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
        axis.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        axis.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xlabel("fps at 640x480 (median, bars p10-p90, log scale)")
        axis.set_title(title)
        for y, value in enumerate(medians):
            axis.text(value * 1.08, y + 0.25, f"{value:.1f}", fontsize=8)
    axis = fig.add_subplot(grid[1, :])
    labels, lefts = [], []
    series = [(name, c) for name in ("ours-auto", "ours-int8") for c in ("0", "1", "3")]
    for name, condition in series:
        if data.get(name, {}).get("e2e", {}).get(condition):
            labels.append(f"{SHORT[name]}, {condition} face{'s' if condition != '1' else ''}")
            lefts.append(0.0)
    colours = plt.get_cmap("tab10").colors
    for index, stage in enumerate(STAGES):
        widths = [
            data[name]["e2e"][condition]["stages_ms"].get(stage, {}).get("median", 0.0)
            for name, condition in series
            if data.get(name, {}).get("e2e", {}).get(condition)
        ]
        axis.barh(labels, widths, left=lefts, label=stage, color=colours[index])
        lefts = [a + b for a, b in zip(lefts, widths, strict=True)]
    axis.invert_yaxis()
    axis.set_xlabel("ms per frame (median of each stage)")
    axis.set_title("Where a frame's time goes (CPU)")
    axis.legend(ncol=4, fontsize=8, loc="upper right")
    threads = results["settings"]["threads"]
    fig.suptitle(
        f"{results['machine']['cpu']}, {threads} threads and 40 px minimum face for every "
        f"system, same frames, one interleaved run ({results['created']})",
        fontsize=10,
    )
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=100)
    plt.close(fig)


def stage_share(entry: dict) -> list[tuple[str, float]]:
    stages = entry.get("stages_ms", {})
    values = [(s, stages.get(s, {}).get("median", 0.0)) for s in STAGES]
    return sorted(values, key=lambda item: -item[1])


def markdown(results: dict, accuracy: dict[str, dict]) -> str:
    data = results["results"]
    settings = results["settings"]
    machine = results["machine"]
    ratios = results["ratios"]
    base = baseline(results)
    ours = data.get(base, {})
    lines: list[str] = []
    add = lines.append

    add("# Benchmarks")
    add("")
    add(
        "Our pipeline and its peers, measured side by side in one run on the same frames "
        "with the same thread count and minimum face size. Generated by `make bench` "
        "(`benchmarks/run.py`) from `benchmarks/results.json`; do not edit by hand."
    )
    add("")
    add("## How to run")
    add("")
    add("```")
    add(
        f"make bench              # full run: benchmarks.run took {results['wall_seconds']:.0f} s "
        "in the recorded run, after the cost benchmarks"
    )
    add("make bench QUICK=1      # smoke run, about 2 minutes")
    add("make bench-accuracy     # LFW check of ours, all-int8 and a prototype (accuracy.json)")
    add("```")
    add("")
    add(
        "`make bench` builds `.venv-bench` (the project's own requirements plus "
        "`benchmarks/requirements-peers.txt`: the CPU torch wheel, facenet-pytorch, "
        "face_recognition/dlib, matplotlib), so the project's `.venv` stays light. "
        "Each system runs in its own worker process; `run.py` asks each in turn for a block of "
        f"{settings['block']} frames per condition, for {settings['rounds']} rounds, in a "
        "rotating order, so a burst of other work on the machine slows every system alike. "
        "Ratios to ours are taken round by round and summarised by their median and p10-p90."
    )
    add("")
    add("## Setup of this run")
    add("")
    add(f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['platform']}.")
    block_loads = [
        load
        for modes in results["results"].values()
        for conditions in modes.values()
        for entry in conditions.values()
        for load in entry.get("loadavg", [])
    ]
    if block_loads:
        add(
            f"- 1-minute load average during the rounds: {min(block_loads):.1f} to "
            f"{max(block_loads):.1f} (median {sorted(block_loads)[len(block_loads) // 2]:.1f}) "
            "on 2 cores shared with other work: every figure is a median with its spread, and "
            "every ratio is taken within a round."
        )
    add(
        f"- Threads: **{settings['threads']} for every system** (TFLite `num_threads`, "
        "`torch.set_num_threads`, TensorFlow intra-op, OpenCV, OMP/MKL/OpenBLAS); inter-op 1. "
        "dlib's HOG detector is single-threaded by design. `OMP_WAIT_POLICY=PASSIVE` for "
        "every worker: with OpenMP's default spinning, PyTorch stalled for up to a second per "
        "frame whenever another process held a core (facenet-pytorch's detector: 32 ms "
        "median passive, spikes to 1,100 ms spinning), which would have flattered us."
    )
    add(
        f"- Minimum face size: **{settings['min_face']} px for every system** "
        "(facenet-pytorch and mtcnn `min_face_size`, dlib HOG upsampled once), except the "
        "`min_face 80` prototype, which is there to show what a door-suited value buys."
    )
    add(
        f"- Frames: {settings['frame_size'][0]}x{settings['frame_size'][1]} RGB, "
        f"{settings['frames_per_condition']} per condition, built by `benchmarks/frames.py` "
        "from real LFW photos (feathered heads) composited onto a real photo with no face "
        "(shared/data/detection/negatives/frame_000100.jpg, an indoor table scene), with a "
        "few pixels of sway and sensor noise per frame. 1 face: "
        f"{', '.join(settings['people']['1'])} (about 130 px wide); 3 faces: "
        f"{', '.join(settings['people']['3'])} (about 90 px). The middle person is enrolled "
        "from three other LFW photos of his."
    )
    hashes = ", ".join(f"{k} {v[:8]}" for k, v in settings.get("model_sha256", {}).items())
    uncommitted = settings.get("uncommitted") or []
    state = f" plus uncommitted changes to {', '.join(uncommitted)}" if uncommitted else " (clean)"
    add(
        f"- Our models: `{shown(settings['models'])}`; float references: "
        f"`{shown(settings['float_models'])}`; "
        f"code at commit {settings.get('git_commit')}{state}; model sha256 prefixes: {hashes}."
    )
    add(f"- Run: `{results['command']}`, {results['created']}, {results['wall_seconds']:.0f} s.")
    add("")

    add("## Targets")
    add("")
    add(
        f"| target | measured: {label(results, base)} / peer, same rounds | met | "
        'all-int8 pipeline (`cascade = "int8"`) / peer |'
    )
    add("|---|---|---|---|")
    for target, measured, met, int8 in target_rows(results):
        verdict = "not measured" if met is None else ("**yes**" if met else "**no**")
        add(f"| {target} | {measured} | {verdict} | {int8} |")
    add("")
    choice = results["systems"].get(base, {}).get("cascade_choice")
    add(
        "A ratio target counts as met only when the p10 of the per-round ratios clears it, not "
        "just the median. *Ours* is the pipeline a CPU runs by default: `[models] cascade = "
        '"auto"` times the int8 P/R/O-Net and their float twins on a probe frame at start-up '
        "and keeps the faster (`edge_app/cascade_choice.py`); FaceNet is int8 either way. "
        + (f"In this run's worker it chose {choice}. " if choice else "")
        + "The last column is the same ratio for the all-int8 pipeline, which is what the Edge "
        'TPU runs and what a CPU runs with `cascade = "int8"`.'
    )
    add("")
    add(reading(results))
    add("")
    add("![benchmarks](benchmarks.png)")
    add("")

    add("## End to end: detect, embed every face, match (frames per second)")
    add("")
    add(
        "Median fps (p10-p90 over frames). *ours / system* is the median (p10-p90) of the "
        f"per-round ratios of our pipeline's fps ({label(results, base)}) to that system's, at "
        "one face. *found* is the faces each system found per frame at 0/1/3 faces."
    )
    add("")
    add("| system | 0 faces | 1 face | 3 faces | ours / system (1 face) | found |")
    add("|---|---|---|---|---|---|")
    for name, modes in data.items():
        if "e2e" not in modes:
            continue
        row = modes["e2e"]
        rel = "1.00x" if name == base else ratio(ratios.get(name, {}).get("e2e", {}).get("1"))
        add(
            f"| {label(results, name)} | {fps(row.get('0'))} | {fps(row.get('1'))} | "
            f"{fps(row.get('3'))} | {rel} | {faces(data, name, 'e2e')} |"
        )
    for name, modes in data.items():
        if "track" in modes:
            row = modes["track"]
            embeds = "/".join(
                f"{row[c]['embeddings_per_frame']:.2f}" for c in ("0", "1", "3") if c in row
            )
            add(
                f"| {label(results, name)}, **tracking on** (daemon steady state; "
                f"embeddings per frame {embeds}) | {fps(row.get('0'))} | {fps(row.get('1'))} | "
                f"{fps(row.get('3'))} | | {faces(data, name, 'track')} |"
            )
    add("")
    add(
        "Tracking on is the daemon's own per-frame step (`Daemon._process`: detect every "
        "frame, IoU tracker, embed only the tracks the tracker asks for, policy) with its "
        "defaults (refresh every 10 frames once a track is settled), measured after a "
        "20-frame warm-up; its fps is frames over total time per block of 10 frames, so the "
        "periodic re-embedding frames are included."
    )
    add("")

    add("## Detection alone (frames per second)")
    add("")
    add("| system | 0 faces | 1 face | 3 faces | ours / system (1 face) | (3 faces) | found |")
    add("|---|---|---|---|---|---|---|")
    for name, modes in data.items():
        if "detect" not in modes:
            continue
        row = modes["detect"]
        by = ratios.get(name, {}).get("detect", {})
        one = "1.00x" if name == base else ratio(by.get("1"))
        three = "1.00x" if name == base else ratio(by.get("3"))
        add(
            f"| {label(results, name)} | {fps(row.get('0'))} | {fps(row.get('1'))} | "
            f"{fps(row.get('3'))} | {one} | {three} | {faces(data, name, 'detect')} |"
        )
    add("")

    add(f"## Our pipeline, per stage ({label(results, base)})")
    add("")
    add("Milliseconds per frame, median (p10-p90), from `engine.timings` in the end-to-end runs.")
    add("")
    float_e2e = data.get("ours-int8", {}).get("e2e", {})
    add("| stage | 0 faces | 1 face | 3 faces | all-int8, 1 face |")
    add("|---|---|---|---|---|")
    e2e = ours.get("e2e", {})
    for stage in STAGES:
        cells = [ms(e2e.get(c, {}).get("stages_ms", {}).get(stage)) for c in ("0", "1", "3")]
        reference = ms(float_e2e.get("1", {}).get("stages_ms", {}).get(stage))
        add(f"| {STAGE_NAMES[stage]} | {' | '.join(cells)} | {reference} |")
    cells = [ms(e2e.get(c, {}).get("latency_ms")) for c in ("0", "1", "3")]
    whole_float = ms(float_e2e.get("1", {}).get("latency_ms"))
    add(f"| **whole frame** | {' | '.join(cells)} | {whole_float} |")
    add("")
    matching = results.get("matching_ms", {})
    if matching:
        add(
            "Matching alone (`Matcher.identify`, 3 samples per person, aggregate `best`), "
            "ms per call, median (p10-p90):"
        )
        add("")
        add("| enrolled people | 1 face | 3 faces |")
        add("|---|---|---|")
        for people in (1, 100):
            add(
                f"| {people} | {ms(matching.get(f'{people}p_1f'))} | "
                f"{ms(matching.get(f'{people}p_3f'))} |"
            )
        add("")

    add("## Load time and memory")
    add("")
    add(
        "Each system in fresh processes (repeated; median): import of its libraries, model "
        "load, then 5 frames each of 1 and 3 faces end to end (detection for mtcnn); peak RSS "
        "is the process's VmHWM. The daemon row is the real `edge-app run` on a folder of "
        "1280x960 frames (the daemon's default capture: detection on the 640x480 view, "
        "embeddings from the full frame), tracking on, one person enrolled, mock GPIO; its "
        "peak RSS is that process's VmHWM, read as `edge-app run` returns."
    )
    add("")
    add("| system | import (s) | model load (s) | peak RSS (MB) |")
    add("|---|---|---|---|")
    for name, rss in results.get("rss", {}).items():
        if "error" in rss:
            add(f"| {label(results, name)} | - | - | failed: {rss['error']} |")
            continue
        add(
            f"| {label(results, name)} | {rss['import_seconds']['median']:.2f} | "
            f"{rss['load_seconds']['median']:.2f} | {rss['peak_rss_mb']['median']:.0f} |"
        )
    daemon = results.get("daemon", {})
    if daemon.get("peak_rss_mb"):
        metrics = daemon.get("metrics", {})
        add(
            f"| **daemon** (`edge-app run`, {daemon['frames']} frames, exit "
            f"{daemon['exit_code']}; embedded {metrics.get('embedded_frames', '?')} of "
            f"{metrics.get('face_frames', '?')} face frames) | | | "
            f"**{daemon['peak_rss_mb']:.0f}**{_processes(daemon)} |"
        )
    add("")

    add(whole_process(results))
    add("## Edge TPU")
    add("")
    skipped = results.get("skipped", {})
    if "ours-edgetpu" in data:
        add("Measured in this run: see the `ours, Edge TPU` rows above.")
    else:
        add(
            f"Not measured here: {skipped.get('ours-edgetpu', 'no Edge TPU')}. When "
            "`libedgetpu.so.1` loads and the manifest lists `_edgetpu` models, `make bench` "
            "measures them in the same rounds. Until then, the figures they will be checked "
            "against:"
        )
        add("")
        add("| what | figure | source |")
        add("|---|---|---|")
        add(
            "| FaceNet (Inception-ResNet-v1, 22.7 MB int8), one embedding, Coral Dev Board | "
            "42 ms | published, not measured here |"
        )
        add("| same, Raspberry Pi 5 over PCIe | about 56 ms | published, not measured here |")
        add(
            "| our FaceNet int8 is 24.5 MB: about 17 MB of weights stream per inference "
            "(8 MB on-chip SRAM) | - | model size less the SRAM Coral documents |"
        )
        add("| USB2 instead of USB3 | about 3x slower | published, not measured here |")
        add("| Coral SSD-MobileNet-v2-face, 320x320 | 5.2 ms | published, not measured here |")
        add("| ncnn MTCNN on a Pi 4 (CPU) | 22-25 ms | published, not measured here |")
        add(
            "| quantised SSD-MobileNet-v2 300x300, 4 threads | Pi 4 112 ms, Pi 5 23.5 ms | "
            "published, not measured here |"
        )
    add("")

    add("## Profile and fast path")
    add("")
    if e2e.get("1"):
        share = stage_share(e2e["1"])
        total = sum(v for _, v in share)
        detect_ms = sum(v for s, v in share if s in ("pyramid", "pnet", "nms", "rnet", "onet"))
        top = ", ".join(
            f"{STAGE_NAMES[s]} {v:.1f} ms ({100 * v / total:.0f}%)" for s, v in share[:4]
        )
        facenet_share = dict(share).get("facenet", 0.0) / total if total else 0.0
        add(
            f"**What dominates.** At one face our frame ({label(results, base)}) costs "
            f"{total:.1f} ms in its stages; detection is {detect_ms:.1f} ms of it "
            f"({100 * detect_ms / total:.0f}%). Largest stages: {top}. "
            + (
                "FaceNet, one 24 MB int8 model run on 2 threads, dominates in this run: its "
                "time per face rises most when other processes hold the cores (compare the "
                "machine's load average above). "
                if facenet_share > 0.5
                else "On this x86 CPU FaceNet is cheap in int8. "
            )
            + (
                "The int8 cascade is slower than its float twin here (below), which is why "
                '`cascade = "auto"` chose float.'
                if results["systems"].get(base, {}).get("cascade") == "float"
                else '`cascade = "auto"` kept the int8 cascade in this run.'
            )
        )
        add("")
    delegation = results.get("delegation", {})
    if delegation:
        add(
            "**Why the int8 cascade is slow on a CPU.** Each int8 P/R/O-Net is cut into one "
            "more XNNPACK partition than it has PRELU ops: XNNPACK (TFLite's CPU delegate) "
            "leaves every int8 PRELU to TFLite's built-in kernel, and the graph bounces between "
            "the two. The float models are one partition each, and FaceNet has no PRELU. One "
            "invocation on random pixels, ms, median (int8 / float > 1: int8 is slower):"
        )
        add("")
        add("| model | int8: XNNPACK partitions (PRELU ops) | int8 ms | float ms | int8 / float |")
        add("|---|---|---|---|---|")
        for key, kinds in delegation.items():
            int8, flt = kinds.get("int8"), kinds.get("float")
            if not int8:
                continue
            slower = f"{int8['ms']['median'] / flt['ms']['median']:.1f}x" if flt else "-"
            float_ms = f"{flt['ms']['median']:.3f}" if flt else "- (not measured)"
            add(
                f"| {key} | {int8['partitions']} ({int8['prelu_ops']}) | "
                f"{int8['ms']['median']:.3f} | {float_ms} | {slower} |"
            )
        add("")
    batching = results.get("batching_ms_per_crop", {})
    if batching:
        add(
            "**Batched R-Net/O-Net on the CPU** (a copy of each model whose flatten accepts any "
            "batch, `fastpath.batch_ready_copy`), ms per crop:"
        )
        add("")
        sizes = sorted({int(n) for per in batching.values() for n in per})
        add("| model | " + " | ".join(f"batch {n}" for n in sizes) + " |")
        add("|---|" + "---|" * len(sizes))
        for key, per in batching.items():
            add(f"| {key} | " + " | ".join(f"{per.get(str(n), 0):.3f}" for n in sizes) + " |")
        add("")
    add("**Prototypes, measured in the same rounds** (`benchmarks/fastpath.py`):")
    add("")
    add(
        "| variant | detect, 1 face | e2e 0 / 1 / 3 faces | e2e vs ours int8 (1 face) | "
        "found (e2e) | LFW DevTest accuracy |"
    )
    add("|---|---|---|---|---|---|")
    baseline_accuracy = accuracy.get("int8")
    variants = {"ours-auto": "auto", "ours-int8": "int8", "proto-octave": "octave"}
    variants["proto-minface80"] = "minface80"
    by_int8 = results.get("ratios_int8", {})
    for name in ("ours-int8", "ours-auto", *PROTOTYPES):
        modes = data.get(name)
        if not modes:
            continue
        e = modes.get("e2e", {})
        speed = f"{1 / by_int8[name]['e2e']['1']['median']:.2f}x" if name in by_int8 else "1.00x"
        record = accuracy.get(variants[name])
        if record:
            lfw = f"{100 * record['accuracy']:.2f}% (no face: {record['no_face_images']})"
        elif name == "proto-minface80":
            lfw = "not run: a deployment setting; LFW's faces (about 110 px) clear both limits"
        else:
            lfw = "not checked"
        add(
            f"| {label(results, name)} | {fps(modes.get('detect', {}).get('1'))} | "
            f"{' / '.join(fps(e.get(c)).split(' ')[0] for c in ('0', '1', '3'))} | {speed} | "
            f"{faces(data, name, 'e2e')} | {lfw} |"
        )
    add("")
    if baseline_accuracy:
        add(
            f"LFW: DevTest accuracy at the DevTrain threshold, {baseline_accuracy['images']} "
            "images, every image through the variant's own detection and embedding "
            "(`python -m benchmarks.fastpath --accuracy VARIANT`, `edge_app.evaluate`)."
        )
        add("")
    add(recommendations(results, accuracy))
    add("")

    from benchmarks.crowd import markdown_section as crowd_section
    from benchmarks.liveness_cost import markdown_section

    lines += markdown_section()  # benchmarks/liveness_cost.json, when it has been measured
    lines += crowd_section()  # benchmarks/crowd.json, likewise
    add("## What transfers to a Raspberry Pi, and what does not")
    add("")
    add(
        "Everything above ran on an x86 server CPU with AVX-512 (VNNI): int8 convolutions are "
        "fast there, and so are float ones. The ratios to peers hold for this machine; on a "
        "Pi's Cortex-A72/A76 all systems slow down, FaceNet becomes the most expensive stage "
        "(tens to hundreds of ms per face, not measured here), so tracking (embedding rarely) "
        "and the Edge TPU matter more there. Whether the float or the int8 cascade is faster "
        'there is measured by the engine itself at each start (`cascade = "auto"`, logged '
        "and shown by `edge-app doctor`); `make bench` runs unchanged on a Pi "
        "(aarch64 wheels exist for every package in the bench venv except, possibly, "
        "dlib-bin, which the harness skips with a note when it does not import)."
    )
    add("")
    add("## Peers: what was run, and how")
    add("")
    for name, info in results["systems"].items():
        notes = "; ".join(info.get("notes", [])) or "as shipped"
        add(f"- **{info.get('label', name)}**: {notes}.")
    for name, why in skipped.items():
        add(f"- **{name}**: skipped: {why}.")
    add(
        "- Peers use their own default thresholds; ours uses the manifest's (int8 stage "
        "thresholds calibrated to keep the float model's positives). Faces found per frame are "
        "listed in every table: every system finds the same faces on these frames unless a "
        "table says otherwise."
    )
    add(
        "- The peers' match step is one product against 3 random enrolled samples (their "
        "embeddings differ in size); ours is `Matcher.identify` against the enrolled person."
    )
    add("")
    add(decisions(REPO / "benchmarks"))
    return "\n".join(lines) + "\n"


def decisions(folder: Path) -> str:
    """The per-visit decisions section, from decision_cost.json and lookalike_cost.json
    (`make bench` writes both before run.py); empty when neither is there."""
    cost_file, guard_file = folder / "decision_cost.json", folder / "lookalike_cost.json"
    if not cost_file.is_file() and not guard_file.is_file():
        return ""
    lines = ["", "## Per-visit decisions", ""]
    if cost_file.is_file():
        cost = json.loads(cost_file.read_text(encoding="utf-8"))
        added = [row["added_us"] / 1e3 for row in cost["people"].values()]
        shares = [100 * row["added_share_of_frame"] for row in cost["people"].values()]
        lines.append(
            "What pooled track evidence, mirrored templates, person centroids, cohort scores "
            "and site centring add per evaluated face (`python -m benchmarks.decision_cost`, "
            f"run by `make bench`): {min(added):.2f}-{max(added):.2f} ms, "
            f"{min(shares):.1f}-{max(shares):.1f}% of a one-face frame on this machine "
            f"(galleries of {' and '.join(cost['people'])} people), almost all of it the "
            "cohort product. The table and how it is measured are in "
            "[ACCURACY.md](ACCURACY.md#what-it-costs-per-frame)."
        )
    if guard_file.is_file():
        guard = json.loads(guard_file.read_text(encoding="utf-8"))
        timed = ", ".join(
            f"{row['lookalike_ms']:g} ms at {people}" for people, row in guard["people"].items()
        )
        lines.append(
            "The lookalike guard costs nothing per frame; once per gallery load it takes "
            f"{timed} people (`python -m benchmarks.lookalike_cost`, same section)."
        )
    return "\n".join(lines) + "\n"


def reading(results: dict) -> str:
    """Where the measured lead over each peer comes from, in this run's numbers."""
    data, ratios = results["results"], results["ratios"]
    base = baseline(results)

    def r(name: str, mode: str, table: str = "ratios") -> float:
        stat = results.get(table, {}).get(name, {}).get(mode, {}).get("1")
        return stat["median"] if stat else float("nan")

    stages = data.get(base, {}).get("e2e", {}).get("1", {}).get("stages_ms", {})
    facenet = stages.get("facenet", {}).get("median", float("nan"))
    detect_ms = sum(
        stages.get(s, {}).get("median", 0.0) for s in ("pyramid", "pnet", "nms", "rnet", "onet")
    )
    auto_vs_int8 = ratios.get("ours-int8", {})
    return (
        "**Reading the targets.** At one face our detector runs "
        f"{r('facenet-pytorch', 'detect'):.2f}x facenet-pytorch's MTCNN, "
        f"{r('mtcnn', 'detect'):.2f}x the mtcnn package and {r('dlib', 'detect'):.2f}x dlib's "
        f"HOG ({detect_ms:.1f} ms per frame); the end-to-end lead "
        f"({r('facenet-pytorch', 'e2e'):.2f}x facenet-pytorch) adds FaceNet at {facenet:.1f} ms "
        "per face in int8. Against the all-int8 pipeline, ours runs "
        f"{spread(auto_vs_int8.get('detect', {}).get('1'))} at detection and "
        f"{spread(auto_vs_int8.get('e2e', {}).get('1'))} end to end: XNNPACK runs the int8 "
        "P/R/O-Net slower than their float twins on this CPU (PRELU; table in the profile "
        "section), and the all-int8 pipeline reaches only "
        f"{r('mtcnn', 'detect', 'ratios_int8'):.2f}x the mtcnn package."
    )


def whole_process(results: dict) -> str:
    """The whole-process section: cold start to exit, timed from outside, and its split."""
    whole = results.get("whole_process", {})
    systems = whole.get("systems", {})
    if not systems:
        return ""
    base = baseline(results)
    lines = [
        "## Whole process and start-up",
        "",
        f"Each system started cold in a fresh process, {whole['rounds']} rounds in a rotating "
        f"order: interpreter start, imports, model load, then {whole['frames']} one-face "
        "frames end to end (the 1-face frames above, cycled; no warm-up) and exit. *wall* is "
        "spawn to exit, timed by `run.py`; the other columns are the worker's own split. "
        "*load* of ours includes the cascade choice (both cascades opened and timed on the "
        "probe frame, then FaceNet's first invocation). Every system matches against one "
        "person of three random samples. *first frame* is the first frame after load. "
        "Ratio: their wall time / ours, per round.",
        "",
        "| system | wall (s) | import (s) | load (s) | first frame (ms) | "
        f"{whole['frames']} frames (s) | their wall / ours |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in systems.items():
        if "error" in entry:
            lines.append(f"| {label(results, name)} | failed: {entry['error']} | | | | | |")
            continue

        def med(key: str, scale: float = 1.0, digits: int = 2, entry: dict = entry) -> str:
            stat = entry.get(key, {})
            return f"{scale * stat['median']:.{digits}f}" if stat.get("n") else "-"

        wall = entry["wall_seconds"]
        lines.append(
            f"| {label(results, name)} | {wall['median']:.2f} ({wall['p10']:.2f}-"
            f"{wall['p90']:.2f}) | {med('import_seconds')} | {med('load_seconds')} | "
            f"{med('first_frame_seconds', 1000, 0)} | "
            f"{med('frames_seconds')} | "
            f"{'1.00x' if name == base else ratio(entry.get('ours_ratio'))} |"
        )
    lines.append("")
    ours = systems.get(base, {})
    if ours.get("cascade"):
        lines.append(f"Cascade chosen by ours in the first round's process: {ours['cascade']}.")
        lines.append("")
    return "\n".join(lines)


def recommendations(results: dict, accuracy: dict[str, dict]) -> str:
    """The fast-path advice, with this run's numbers in it."""
    data = results["results"]

    def stage(name: str, key: str, condition: str = "1") -> float:
        entry = data.get(name, {}).get("e2e", {}).get(condition, {})
        return entry.get("stages_ms", {}).get(key, {}).get("median", float("nan"))

    by_int8 = results.get("ratios_int8", {})
    base = baseline(results)

    def speedup(name: str, mode: str = "e2e", condition: str = "1") -> float:
        """name's fps over the all-int8 pipeline's, median of the per-round ratios."""
        stat = by_int8.get(name, {}).get(mode, {}).get(condition)
        return 1 / stat["median"] if stat else float("nan")

    def lfw(variant: str) -> str:
        record = accuracy.get(variant)
        return f"{100 * record['accuracy']:.2f}%" if record else "not yet checked"

    ours = data.get(base, {})
    track = ours.get("track", {}).get("1", {}).get("fps", {}).get("median")
    e2e = ours.get("e2e", {}).get("1", {}).get("fps", {}).get("median")
    track3 = ours.get("track", {}).get("3", {}).get("fps", {}).get("median")
    e2e3 = ours.get("e2e", {}).get("3", {}).get("fps", {}).get("median")
    pnet_threshold = results["settings"].get("thresholds", {}).get("pnet", "?")

    def rss_mb(name: str) -> str:
        stat = results.get("rss", {}).get(name, {}).get("peak_rss_mb")
        return f"{stat['median']:.0f}" if stat else "?"

    lines = ["### What these figures say about the pipeline", ""]
    lines.append(
        "1. **Pyramid from 2x reductions.** `edge_app/detection/pyramid.py` halves the frame "
        "with INTER_AREA (OpenCV's fast exact-2x path) and resizes each level from the "
        "smallest reduction still at least twice its size. The level sizes are those of "
        "resizing the frame directly, so the Edge TPU's per-scale models are the same either "
        "way; `proto-octave` runs this pyramid too, which is why its row matches `ours-int8`."
    )
    lines.append(
        "2. **Float P/R/O-Net with int8 FaceNet on a CPU without a TPU, chosen by "
        "measurement.** XNNPACK leaves int8 PRELU to TFLite's own kernel, and the int8 cascade "
        "runs several times slower than its float twin on this x86 CPU. The float twins ship "
        "in `models/tflite/float` (listed with their sha256 in the manifest's `float_cascade` "
        'section), and `[models] cascade = "auto"` (the default) times both cascades on a '
        "probe frame at start-up and keeps the faster, so a CPU whose int8 kernels win (an ARM "
        "core may) keeps int8; the Edge TPU always runs int8. Against the all-int8 pipeline: "
        f"end to end {speedup(base):.2f}x at one face, {speedup(base, 'e2e', '3'):.2f}x at "
        f"three, detection {speedup(base, 'detect'):.2f}x; LFW {lfw('auto')} (all-int8 "
        f"{lfw('int8')}); peak RSS {rss_mb(base)} vs {rss_mb('ours-int8')} MB. A PReLU-free "
        "int8 export (ReLU(x) + depthwise(-alpha) * ReLU(-x), all XNNPACK-native) was also "
        "measured on P-Net level 0: 3.34 ms against 3.16 ms with PRELU, so the partitioning "
        "is not the cost."
    )
    lines.append(
        "3. **Door-suited minimum face size**: 80 px instead of 40 px at 640x480 drops the "
        "largest pyramid levels (a 15 cm face is about 80 px at 1 m and 40 px at 2 m through a "
        "62-degree lens; someone asking a door to open stands within a metre of it): "
        f"detection {speedup('proto-minface80', 'detect'):.2f}x, end to end "
        f"{speedup('proto-minface80'):.2f}x at one face. It is the config key "
        "`detection.min_face` (default: the manifest's 40, for which the Edge TPU models are "
        "compiled and which LFW is measured with). It finds the faces of these frames (3-face "
        "frames hold 90 px faces), but nothing smaller than 80 px."
    )
    if track and e2e:
        lines.append(
            "4. **Skip embedding for tracked faces**, as the daemon does. Its steady "
            f"state runs {track:.1f} fps at one face against {e2e:.1f} fps embedding every "
            f"frame ({track / e2e:.2f}x), and {track3 or 0:.1f} vs {e2e3 or 0:.1f} fps at "
            f"three faces ({(track3 or 0) / (e2e3 or 1):.2f}x). The gain is FaceNet's share of "
            f"a frame ({stage(base, 'facenet'):.1f} ms per face in this run); it grows wherever "
            "FaceNet costs more (a Pi's CPU: not measured here). Keep `refresh_frames` at 10."
        )
    lines.append(
        "5. **Not worth doing on the CPU**: batching R-Net/O-Net (measured: ms per crop does "
        "not fall from batch 1 to 128, table above; the per-invoke overhead is small next to the "
        "compute). Not measured here, by reasoning only: the packed P-Net canvas (P-Net's CPU "
        "cost is its pixels, and a canvas adds gaps; it is for the Edge TPU's fixed shapes and "
        "per-invocation round trips, see `benchmarks/pnet_layout.py`) and zero-copy input "
        "(`set_tensor` copies at most 160x160x3 bytes per invoke). What moves R-Net's cost is "
        "the number of crops, not how they are invoked: the int8 P-Net threshold "
        f"({pnet_threshold}, set to keep the float model's positives) passes more windows than "
        "the float one, and each costs an R-Net invocation."
    )
    return "\n".join(lines)


def check_docs(docs: Path) -> None:
    """Refuse (UserError), before the work, a `--docs` folder that write() could not write:
    BENCHMARKS.md or benchmarks.png not a regular file, a folder that cannot be made."""
    for name in ("BENCHMARKS.md", "benchmarks.png"):
        check_output(docs / name, "--docs", parents=True)  # write() makes the folder


def write(results: dict, docs: Path, accuracy: Path | None = None) -> None:
    records = load_accuracy(accuracy) if accuracy else {}
    shipped = REPO / "docs" / "lfw_auto.json"  # `make eval`'s run of the CPU default
    if "auto" not in records and shipped.is_file():
        records["auto"] = json.loads(shipped.read_text(encoding="utf-8"))
    text = markdown(results, records)
    docs.mkdir(parents=True, exist_ok=True)
    plot(results, docs / "benchmarks.png")
    outputs.write(docs / "BENCHMARKS.md", text, "--docs")
    print(f"wrote {docs / 'BENCHMARKS.md'} and {docs / 'benchmarks.png'}")


@outputs.command
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results.json")
    parser.add_argument("--accuracy", type=Path, default=REPO / "benchmarks" / "accuracy.json")
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    args = parser.parse_args(argv)
    check_docs(args.docs)
    write(json.loads(args.results.read_text(encoding="utf-8")), args.docs, args.accuracy)


if __name__ == "__main__":
    raise SystemExit(main())
