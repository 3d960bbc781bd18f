"""`make bench`: our pipeline and its peers on the same frames, in one interleaved run.

    .venv-bench/bin/python -m benchmarks.run            # full run (~10 min on 2 cores)
    .venv-bench/bin/python -m benchmarks.run --quick    # smoke run (~2 min)

Writes benchmarks/results.json, docs/BENCHMARKS.md and docs/benchmarks.png.

Why it is built this way:
  - every system runs in its own worker process (benchmarks/worker.py), kept alive for the
    whole run and asked for one short block of frames at a time, round robin, in a rotating
    order: the machine is shared, and a burst of someone else's work then slows every system
    about equally instead of whichever one happened to be running;
  - ratios to ours are computed round by round (same minute, same load) and summarised by
    their median and p10-p90 over rounds;
  - load time and peak RSS come from separate fresh processes (--rss), and the daemon's peak
    RSS from the real `edge-app run` on a folder of frames (its own VmHWM);
  - the whole-process rounds start each system cold in a fresh process (interpreter start,
    imports, model load, 100 one-face frames end to end, exit), timed from outside, in a
    rotating order, the ratio taken round by round like the others.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import frames as frame_sets
from benchmarks import outputs
from benchmarks.report import check_docs
from benchmarks.stats import block_fps, summary
from edge_app.errors import UserError
from edge_app.reports import check_output

REPO = Path(__file__).resolve().parents[1]


def in_checkout(path: Path) -> str:
    """A path as results.json records it: relative to the checkout when inside it (the page
    then reads the same wherever the checkout is), else as given."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


CONDITIONS = frame_sets.CONDITIONS
# system -> modes; ours-auto and ours-int8 also run the daemon's tracking loop
PLAN: dict[str, tuple[str, ...]] = {
    "ours-auto": ("detect", "e2e", "track"),
    "ours-int8": ("detect", "e2e", "track"),
    "ours-edgetpu": ("detect", "e2e", "track"),
    "ours-float": ("detect", "e2e"),
    "proto-octave": ("detect", "e2e"),
    "proto-minface80": ("detect", "e2e"),
    "facenet-pytorch": ("detect", "e2e"),
    "mtcnn": ("detect",),
    "dlib": ("detect", "e2e"),
}
TRACK_WARMUP_FRAMES = 20  # two refresh periods: tracks are settled before timing starts
BASELINE = "ours-auto"  # what a CPU runs by default; every "ours / peer" ratio is against it
# Whole-process rounds: ours as shipped, ours all-int8, and the end-to-end peers.
WHOLE_SYSTEMS = ("ours-auto", "ours-int8", "facenet-pytorch", "dlib")


def default_paths() -> dict[str, Path]:
    """Models and data where a source checkout has them (the Makefile passes the same)."""
    from edge_app.paths import SHARED_DATA, default_models_dir

    models = default_models_dir()
    return {"models": models, "float_models": models.parent / "float", "data": SHARED_DATA}


def shown_path(path: Path) -> str:
    """A path inside the repository as the Makefile names it (relative), others as given."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def worker_env(threads: int) -> dict[str, str]:
    """One thread count for every library; OpenBLAS kernel overrides removed (they slow numpy
    and are a property of this workplace, not of any system under test)."""
    env = dict(os.environ)
    for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(key, None)
    for key in (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "TF_NUM_INTRAOP_THREADS",
    ):
        env[key] = str(threads)
    env["TF_NUM_INTEROP_THREADS"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    # Idle OpenMP threads sleep instead of spinning. With the default spin, a torch worker on a
    # shared 2-core machine stalled for up to a second per frame whenever another process held
    # a core (facenet-pytorch's detector: 32 ms median passive, spikes to 1,100 ms active).
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


class Worker:
    """A serving worker process and its JSON-lines channel."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log.open("w", encoding="utf-8")
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
            cwd=REPO,
        )
        assert self.process.stdin is not None and self.process.stdout is not None  # PIPEs
        self.requests, self.replies = self.process.stdin, self.process.stdout
        line = self.replies.readline()
        self.hello: dict[str, Any] = (
            json.loads(line) if line else {"ok": False, "error": f"worker died, see {log}"}
        )

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.write(json.dumps(request) + "\n")
        self.requests.flush()
        line = self.replies.readline()
        if not line:
            raise RuntimeError(f"{self.name} worker died; see {self.log.name}")
        return json.loads(line)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.requests.write('{"cmd": "quit"}\n')
                self.requests.flush()
                self.process.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.log.close()


def edgetpu_status(models: Path, env: dict[str, str]) -> str:
    """'available', or why the Edge TPU models cannot be measured on this machine."""
    probe = (
        "import json,sys\n"
        "from pathlib import Path\n"
        "from edge_app.manifest import load_manifest\n"
        "from edge_app.runtime import select_backend\n"
        f"m = load_manifest(Path({str(models)!r}))\n"
        "if any(s.edgetpu is None for s in m.models.values()):\n"
        "    print('the manifest has no Edge TPU models (edgetpu_compiler not run)'); sys.exit()\n"
        "try:\n"
        "    select_backend('edgetpu')\n"
        "except Exception as e:\n"
        "    print(str(e).split('. Install')[0]); sys.exit()\n"
        "print('available')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=REPO
    )
    lines = result.stdout.strip().splitlines()
    return lines[-1] if lines else f"probe failed: {result.stderr.strip()[-200:]}"


def model_options(args: argparse.Namespace) -> list[str]:
    """The int8 and float models folders and the threads, as a child benchmark takes them."""
    return [
        "--models",
        str(args.models),
        "--float-models",
        str(args.float_models),
        "--threads",
        str(args.threads),
    ]


def worker_command(system: str, args: argparse.Namespace, frames: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.worker",
        system,
        "--frames",
        str(frames),
        *model_options(args),
        "--min-face",
        str(args.min_face),
    ]


def rss_runs(
    system: str, args: argparse.Namespace, frames: Path, env: dict[str, str], logs: Path
) -> dict[str, Any]:
    """Fresh processes: import and load seconds, and peak RSS after a few frames."""
    runs = []
    for attempt in range(args.rss_repeats):
        log = logs / f"rss-{system}-{attempt}.log"
        with log.open("w", encoding="utf-8") as stderr:
            result = subprocess.run(
                [*worker_command(system, args, frames), "--rss", "5"],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
                cwd=REPO,
            )
        if result.returncode != 0 or not result.stdout.strip():
            return {"error": f"exit {result.returncode}, see {log}"}
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return {
        "runs": len(runs),
        "import_seconds": summary([r["import_seconds"] for r in runs]),
        "load_seconds": summary([r["load_seconds"] for r in runs]),
        "peak_rss_mb": summary([r["vm"]["VmHWM"] / 1024 for r in runs]),
        "mode": runs[0]["mode"],
    }


def daemon_rss(
    args: argparse.Namespace, frame_set: frame_sets.FrameSet, env: dict[str, str], work: Path
) -> dict[str, Any]:
    """The real `edge-app run` on a folder of 1280x960 frames (the daemon's default capture:
    detection on the 640x480 lores view, embedding from the full frame), tracking on, one
    person enrolled; peak RSS is the door process's own VmHWM plus its relay process's."""
    import cv2

    folder = work / "daemon-frames"
    folder.mkdir()
    index = 0
    for condition, repeat in (("0", 1), ("1", 2), ("3", 2)):
        for _ in range(repeat):
            for frame in frame_set.frames[condition][: args.daemon_frames]:
                big = cv2.resize(frame, (1280, 960), interpolation=cv2.INTER_LINEAR)
                cv2.imwrite(str(folder / f"{index:04d}.png"), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
                index += 1
    gallery = work / "daemon-gallery.db"
    enroll = (
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "from benchmarks.systems import Ours\n"
        f"s = Ours('ours-int8', 'int8', Path({str(args.models)!r}), Path('.'), "
        f"{args.threads}, '')\n"
        f"s._gallery_path = Path({str(gallery)!r})\n"
        "s.load()\n"
        f"s.enroll(np.load({str(work / 'frames' / 'enroll.npy')!r}), {frame_set.enrolled_name!r})\n"
        "print(s.threshold())\n"
    )
    made = subprocess.run(
        [sys.executable, "-c", enroll], capture_output=True, text=True, env=env, cwd=REPO
    )
    if made.returncode != 0:
        return {"error": f"enrolment failed: {made.stderr.strip()[-300:]}"}
    threshold = float(made.stdout.strip().splitlines()[-1])
    config = work / "daemon.toml"
    config.write_text(
        f'[camera]\nsource = "{folder}"\nwidth = 1280\nheight = 960\n'
        "lores_width = 640\nlores_height = 480\n"
        f'[models]\ndir = "{args.models}"\nbackend = "cpu"\nthreads = {args.threads}\n'
        f"[recognition]\nthreshold = {threshold}\n"
        f'[gallery]\npath = "{gallery}"\n'
        '[gpio]\nfactory = "mock"\n'
        '[events]\ndb = ""\n',
        encoding="utf-8",
    )
    log = work / "daemon.log"
    peak = work / "daemon-vmhwm.txt"
    # VmHWM is read by the daemon's own process as `edge-app run` returns: wait4's ru_maxrss
    # would also count the parent's pages at fork time (Linux carries the pre-exec high-water
    # mark into the child), which made a 185 MB daemon read as 317 MB here.
    # The door is two processes: the relay runs in a child (edge_app/relay_process.py), whose
    # VmHWM is read just before the door process closes it; the two add up (both stay
    # resident while the door runs).
    wrapper = (
        "import sys\n"
        "from edge_app.cli import main\n"
        "from edge_app.relay_process import RelayProcess\n"
        "def hwm(pid):\n"
        "    status = open(f'/proc/{pid}/status').read().splitlines()\n"
        "    return int([line.split()[1] for line in status if line.startswith('VmHWM')][0])\n"
        "relay = []\n"
        "close = RelayProcess.close\n"
        "def measured_close(self):\n"
        "    if self._child.poll() is None:\n"
        "        relay.append(hwm(self._child.pid))\n"
        "    close(self)\n"
        "RelayProcess.close = measured_close\n"
        "code = main(sys.argv[2:])\n"
        "open(sys.argv[1], 'w').write(f'{hwm(\"self\")} {max(relay, default=0)}')\n"
        "sys.exit(code)\n"
    )
    command = [sys.executable, "-c", wrapper, str(peak), "-v", "run", "--config", str(config)]
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as stderr:
        process = subprocess.run(command, stdout=stderr, stderr=stderr, env=env, cwd=REPO)
    elapsed = time.perf_counter() - start
    text = log.read_text(encoding="utf-8", errors="replace")
    peaks = [int(kb) for kb in peak.read_text().split()] if peak.is_file() else []
    metrics = re.findall(r"metrics (frames=.*)", text)
    fields = dict(re.findall(r"(\w+)=([\d.]+)", metrics[-1])) if metrics else {}
    return {
        "exit_code": process.returncode,
        "frames": index,
        "capture": [1280, 960],
        "detection": [640, 480],
        "peak_rss_mb": sum(peaks) / 1024 if peaks else None,
        "door_process_peak_rss_mb": peaks[0] / 1024 if peaks else None,
        "relay_process_peak_rss_mb": peaks[1] / 1024 if peaks else None,
        "wall_seconds": elapsed,
        "metrics": fields,
        "log": str(log) if process.returncode else None,
    }


def run_rounds(
    workers: dict[str, Worker], args: argparse.Namespace
) -> dict[str, dict[str, dict[str, list]]]:
    """Round-robin blocks; raw per-round data by system, mode and condition."""
    raw: dict[str, dict[str, dict[str, list]]] = {}
    for name, worker in workers.items():
        if "track" in PLAN[name]:
            for condition in CONDITIONS:
                worker.ask(
                    {
                        "cmd": "block",
                        "mode": "track",
                        "condition": condition,
                        "count": TRACK_WARMUP_FRAMES,
                    }
                )
    tasks = [(name, mode) for name in workers for mode in PLAN[name]]
    for round_index in range(args.rounds):
        shift = round_index % len(tasks)
        order = tasks[shift:] + tasks[:shift]
        started = time.perf_counter()
        for name, mode in order:
            for condition in CONDITIONS:
                count = args.track_block if mode == "track" else args.block
                reply = workers[name].ask(
                    {"cmd": "block", "mode": mode, "condition": condition, "count": count}
                )
                raw.setdefault(name, {}).setdefault(mode, {}).setdefault(condition, []).append(
                    reply
                )
        print(f"round {round_index + 1}/{args.rounds}: {time.perf_counter() - started:.0f} s")
    return raw


def round_fps(block: dict[str, Any], mode: str) -> float:
    """One round's frames per second: 1 / median frame time for detection and end to end (a
    burst of someone else's work on a shared machine moves the median little); the block's
    total for tracking, whose steady state is the cheap frames plus the periodic re-embedding."""
    seconds = block["seconds"]
    if mode == "track":
        return float(len(seconds) / sum(seconds))
    return float(1.0 / np.median(seconds))


def summarise(raw: dict[str, dict[str, dict[str, list]]], args: argparse.Namespace) -> dict:
    """Per system, mode and condition: latency, fps, CPU time, faces found, stages."""
    out: dict[str, Any] = {}
    for name, modes in raw.items():
        for mode, conditions in modes.items():
            for condition, blocks in conditions.items():
                seconds = [s for b in blocks for s in b["seconds"]]
                faces = [f for b in blocks for f in b["faces"]]
                latency = summary([1000 * s for s in seconds])
                if mode == "track":
                    fps = summary(block_fps(seconds, args.track_block))
                else:  # the fps of the median frame, spread from the p90/p10 frames
                    fps = {
                        "n": latency["n"],
                        "median": 1000 / latency["median"],
                        "p10": 1000 / latency["p90"],
                        "p90": 1000 / latency["p10"],
                    }
                entry: dict[str, Any] = {
                    "latency_ms": latency,
                    "cpu_ms": summary([1000 * c for b in blocks for c in b["cpu_seconds"]]),
                    "fps": fps,
                    "fps_per_round": [round_fps(b, mode) for b in blocks],
                    "loadavg": [b["loadavg"] for b in blocks],
                    "faces": {
                        "median": float(np.median(faces)),
                        "min": int(min(faces)),
                        "max": int(max(faces)),
                    },
                }
                if mode == "e2e":
                    stages: dict[str, list[float]] = {}
                    for b in blocks:
                        for stage, values in b["stages"].items():
                            stages.setdefault(stage, []).extend(values)
                    entry["stages_ms"] = {
                        stage: summary([1000 * v for v in values])
                        for stage, values in stages.items()
                    }
                if mode == "track":
                    embedded = [e for b in blocks for e in b["embedded"]]
                    entry["embeddings_per_frame"] = float(np.mean(embedded))
                out.setdefault(name, {}).setdefault(mode, {})[condition] = entry
    return out


def ratios(summaries: dict, baseline: str = BASELINE) -> dict[str, Any]:
    """fps(system) / fps(peer) per round, then median and p10-p90 over rounds."""
    result: dict[str, Any] = {}
    ours = summaries.get(baseline, {})
    for name, modes in summaries.items():
        if name == baseline:
            continue
        for mode, conditions in modes.items():
            for condition, entry in conditions.items():
                mine = ours.get(mode, {}).get(condition)
                if mine is None:
                    continue
                per_round = [
                    a / b
                    for a, b in zip(mine["fps_per_round"], entry["fps_per_round"], strict=False)
                ]
                result.setdefault(name, {}).setdefault(mode, {})[condition] = summary(per_round)
    return result


def whole_process(
    names: list[str], args: argparse.Namespace, frames: Path, env: dict[str, str], logs: Path
) -> dict[str, Any]:
    """Each system started cold in a fresh process per round, rotating order; wall seconds
    from spawn to exit, the worker's own split (import, load, first frame), and per round the
    ratio of each system's wall time to ours."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for round_index in range(args.whole_rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            log = logs / f"whole-{name}-{round_index}.log"
            start = time.perf_counter()
            with log.open("w", encoding="utf-8") as stderr:
                result = subprocess.run(
                    [*worker_command(name, args, frames), "--whole", str(args.whole_frames)],
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                    env=env,
                    cwd=REPO,
                )
            wall = time.perf_counter() - start
            if result.returncode != 0 or not result.stdout.strip():
                runs[name].append({"error": f"exit {result.returncode}, see {log}"})
                continue
            reply = json.loads(result.stdout.strip().splitlines()[-1])
            runs[name].append({"wall_seconds": wall, "loadavg": os.getloadavg()[0], **reply})
        print(f"whole-process round {round_index + 1}/{args.whole_rounds}")
    out: dict[str, Any] = {"frames": args.whole_frames, "rounds": args.whole_rounds, "systems": {}}
    ours = runs.get(BASELINE, [])
    for name, entries in runs.items():
        good = [e for e in entries if "error" not in e]
        if not good:
            out["systems"][name] = {"error": entries[0]["error"] if entries else "not run"}
            continue
        entry: dict[str, Any] = {
            key: summary([e[key] for e in good])
            for key in (
                "wall_seconds",
                "import_seconds",
                "load_seconds",
                "enroll_seconds",
                "first_frame_seconds",
                "frames_seconds",
            )
        }
        entry["wall_per_round"] = [e.get("wall_seconds") for e in entries]
        entry["loadavg"] = [e["loadavg"] for e in good]
        entry["faces"] = [e["faces"] for e in good]
        entry["mode"] = good[0]["mode"]
        entry["distinct_frames"] = good[0]["distinct_frames"]
        entry["cascade"] = good[0]["info"].get("cascade_choice")
        if name != BASELINE and ours:
            entry["ours_ratio"] = summary(
                [
                    theirs["wall_seconds"] / mine["wall_seconds"]
                    for mine, theirs in zip(ours, entries, strict=False)
                    if "error" not in mine and "error" not in theirs
                ]
            )
        out["systems"][name] = entry
    return out


def _cascade_files(models: Path, float_models: Path) -> list[tuple[str, Path, dict]]:
    """(kind, folder, model specs by name): the int8 models, the float twins shipped in the
    manifest's float_cascade section, and the float reference models when they are built."""
    sets = []
    manifest = models / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        sets.append(("int8", models, data["models"]))
        if data.get("float_cascade"):
            sets.append(("float", models, dict(data["float_cascade"]["models"])))
    reference = float_models / "manifest.json"
    if reference.is_file():
        specs = json.loads(reference.read_text(encoding="utf-8"))["models"]
        shipped = next((s for kind, _, s in sets if kind == "float"), None)
        if shipped is None:
            sets.append(("float", float_models, specs))
        elif "facenet" in specs:
            sets.append(("float", float_models, {"facenet": specs["facenet"]}))
    return sets


def delegation(models: Path, float_models: Path, threads: int, repeats: int) -> dict[str, Any]:
    """Per model: XNNPACK partitions and ms per invoke, int8 and float, on one input.

    Why int8 P/R/O-Net are slower than float on a CPU: XNNPACK leaves int8 PRELU to TFLite's
    built-in kernels, so each PRELU splits the graph into another delegate partition.
    """
    from ai_edge_litert.interpreter import Interpreter

    out: dict[str, Any] = {}
    for kind, folder, specs in _cascade_files(models, float_models):
        for key in ("pnet_0", "rnet", "onet", "facenet"):
            if key not in specs:
                continue
            interpreter = Interpreter(
                model_path=str(folder / specs[key]["file"]), num_threads=threads
            )
            interpreter.allocate_tensors()
            ops = [op["op_name"] for op in interpreter._get_ops_details()]
            detail = interpreter.get_input_details()[0]
            pixels = np.random.default_rng(0).integers(0, 256, detail["shape"])
            pixels = pixels.astype(detail["dtype"])
            times = []
            for step in range(repeats + 3):
                start = time.perf_counter()
                interpreter.set_tensor(detail["index"], pixels)
                interpreter.invoke()
                if step >= 3:
                    times.append(1000 * (time.perf_counter() - start))
            out.setdefault(key, {})[kind] = {
                "partitions": ops.count("DELEGATE"),
                "prelu_ops": ops.count("PRELU"),
                "ms": summary(times),
            }
    return out


def provenance(models: Path) -> dict[str, Any]:
    """Which code and which model files produced the numbers."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--", "edge_app", "models"],
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout.split("\n")
    manifest = json.loads((models / "manifest.json").read_text(encoding="utf-8"))
    return {
        "git_commit": commit or None,
        "uncommitted": [line[3:] for line in changed if line.strip()],
        "model_sha256": {name: spec["sha256"][:12] for name, spec in manifest["models"].items()},
        "float_cascade_sha256": {
            name: spec["sha256"][:12]
            for name, spec in (manifest.get("float_cascade") or {}).get("models", {}).items()
        },
        "thresholds": manifest.get("thresholds", {}),
    }


def machine(loadavg_start: tuple[float, float, float]) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "loadavg_start": list(loadavg_start),
    }


@outputs.command
def main(argv: list[str] | None = None) -> None:
    paths = default_paths()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, short blocks")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=10, help="frames per block")
    parser.add_argument("--track-block", type=int, default=10, help="= tracking.refresh_frames")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-face", type=int, default=40)
    parser.add_argument("--rss-repeats", type=int, default=2)
    parser.add_argument("--daemon-frames", type=int, default=20)
    parser.add_argument("--whole-rounds", type=int, default=5, help="whole-process rounds")
    parser.add_argument("--whole-frames", type=int, default=100, help="frames per process")
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=list(PLAN),
        default=list(PLAN),
        metavar="SYSTEM",
        help=f"subset to run, of: {', '.join(PLAN)}",
    )
    parser.add_argument("--models", type=Path, default=paths["models"])
    parser.add_argument("--float-models", type=Path, default=paths["float_models"])
    parser.add_argument("--data", type=Path, default=paths["data"])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results.json")
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    parser.add_argument("--no-docs", action="store_true", help="results.json only")
    parser.add_argument("--keep-work", action="store_true", help="keep frames and worker logs")
    parser.add_argument(
        "--models-note", help="how the docs name the models (default: the --models path)"
    )
    args = parser.parse_args(argv)
    check_output(args.out, "--out")  # before the minutes of work, not with a traceback after
    if not args.no_docs:
        check_docs(args.docs)
    if args.quick:
        args.rounds, args.block, args.rss_repeats, args.daemon_frames = 1, 5, 1, 5
        args.whole_rounds = 1
    for path, what in ((args.models, "int8 models"), (args.data / "lfw", "LFW images")):
        if not path.exists():
            sys.exit(f"{what} not found at {path}: pass --models/--data")

    loadavg_start = os.getloadavg()
    env = worker_env(args.threads)
    work = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    logs = work / "logs"
    logs.mkdir()
    print(f"work folder {work}")
    frame_set = frame_sets.build(args.data)
    frame_sets.save(frame_set, work / "frames")
    started = time.perf_counter()

    skipped: dict[str, str] = {}
    systems = [s for s in PLAN if s in args.systems]
    if "ours-edgetpu" in systems:
        status = edgetpu_status(args.models, env)
        if status != "available":
            systems.remove("ours-edgetpu")
            skipped["ours-edgetpu"] = status
    if "ours-float" in systems and not (args.float_models / "manifest.json").is_file():
        systems.remove("ours-float")
        skipped["ours-float"] = (
            f"no float reference models at {shown_path(args.float_models)} (`make models` "
            "builds them; the float P/R/O-Net that ours-auto can run ship in the manifest)"
        )

    workers: dict[str, Worker] = {}
    loads: dict[str, Any] = {}
    try:
        for name in systems:
            worker = Worker(name, worker_command(name, args, work / "frames"), env, logs / name)
            if worker.hello.get("ok"):
                workers[name] = worker
                loads[name] = worker.hello
                print(f"loaded {name}: {worker.hello['load_seconds']:.2f} s")
            else:
                skipped[name] = worker.hello.get("error", "failed to load")
                print(f"skipped {name}: {skipped[name]}")
                worker.close()
        if not workers:
            shutil.rmtree(work, ignore_errors=True)
            reasons = "; ".join(f"{name}: {why}" for name, why in skipped.items())
            raise UserError(f"no system to measure ({reasons or 'none given'})")
        raw = run_rounds(workers, args)
        matching = {}
        if BASELINE in workers:
            for people in (1, 100):
                for probes in (1, 3):
                    reply = workers[BASELINE].ask(
                        {"cmd": "matching", "people": people, "probes": probes, "repeats": 300}
                    )
                    matching[f"{people}p_{probes}f"] = summary([1000 * s for s in reply["seconds"]])
    finally:
        for worker in workers.values():
            worker.close()

    summaries = summarise(raw, args)
    delegate = delegation(args.models, args.float_models, args.threads, 20 if args.quick else 50)
    batched = subprocess.run(
        [sys.executable, "-m", "benchmarks.fastpath", "--batching", *model_options(args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    batching = (
        json.loads(batched.stdout.strip().splitlines()[-1]) if batched.returncode == 0 else {}
    )
    rss = {name: rss_runs(name, args, work / "frames", env, logs) for name in workers}
    whole_names = [name for name in WHOLE_SYSTEMS if name in workers]
    whole = whole_process(whole_names, args, work / "frames", env, logs) if whole_names else {}
    daemon = daemon_rss(args, frame_set, env, work) if BASELINE in workers else {}
    results = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join(["python -m benchmarks.run", *sys.argv[1:]]),
        "machine": {**machine(loadavg_start), "loadavg_end": list(os.getloadavg())},
        "settings": {
            "threads": args.threads,
            "min_face": args.min_face,
            "rounds": args.rounds,
            "block": args.block,
            "track_block": args.track_block,
            "frame_size": list(frame_sets.SIZE),
            "frames_per_condition": len(frame_set.frames["0"]),
            "people": frame_set.people,
            "models": args.models_note or in_checkout(args.models),
            "whole_rounds": args.whole_rounds,
            "whole_frames": args.whole_frames,
            "float_models": in_checkout(args.float_models),
            **provenance(args.models),
        },
        "systems": {name: loads[name]["info"] for name in workers},
        "skipped": skipped,
        "load": {
            name: {k: loads[name][k] for k in ("import_seconds", "load_seconds")}
            for name in workers
        },
        "results": summaries,
        "baseline": BASELINE,
        "ratios": ratios(summaries),
        "ratios_int8": ratios(summaries, baseline="ours-int8"),
        "whole_process": whole,
        "matching_ms": matching,
        "delegation": delegate,
        "batching_ms_per_crop": batching,
        "rss": rss,
        "daemon": daemon,
        "wall_seconds": time.perf_counter() - started,
    }
    outputs.write_json(args.out, results, "--out", indent=1)
    print(f"wrote {args.out} ({results['wall_seconds']:.0f} s)")
    failed = (
        set(skipped) & set(PLAN) - {"ours-edgetpu", "ours-float"}
        or daemon.get("exit_code")
        or any("error" in r for r in rss.values())
    )
    if args.keep_work or failed:
        print(f"kept {work} (frames, worker and daemon logs)")
    else:
        shutil.rmtree(work, ignore_errors=True)
    if not args.no_docs:
        from benchmarks import report

        report.write(results, args.docs, accuracy=REPO / "benchmarks" / "accuracy.json")


if __name__ == "__main__":
    raise SystemExit(main())
