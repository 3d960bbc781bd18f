"""One system in its own process, driven by run.py over JSON lines on stdin/stdout.

run.py keeps one worker per system alive and asks each in turn for a short block of frames
(round robin), so a change in the machine's background load during the run hits every system
alike and the ratios stay fair. The worker answers on a private copy of stdout; the real
stdout is pointed at stderr, because some peers print progress bars there.

Modes: `--serve` (the round-robin protocol) and `--rss` (a fresh process that loads the
system, runs a few frames and reports its load time and peak RSS, VmHWM from /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import frames as frame_sets
from benchmarks.systems import BenchSystem, Ours

START = time.perf_counter()

# name -> (fast-path variant, label, notes); the first is the pipeline as shipped.
OURS = {
    "ours-int8": ("int8", "ours, int8 TFLite (CPU)", ()),
    "ours-float": ("float", "ours, float TFLite (CPU)", ("float reference models",)),
    "ours-edgetpu": ("int8", "ours, Edge TPU", ()),
    "proto-octave": (
        "octave",
        "prototype: int8 + octave pyramid",
        ("pyramid levels resized from 2x reductions (benchmarks/fastpath.py)",),
    ),
    "proto-hybrid": (
        "hybrid",
        "prototype: float P/R/O-Net + int8 FaceNet + octave pyramid",
        ("benchmarks/fastpath.py",),
    ),
    "proto-minface80": (
        "minface80",
        "prototype: int8, min_face 80 px",
        ("door-suited minimum face size; other systems keep 40 px",),
    ),
}
PEERS = ("facenet-pytorch", "mtcnn", "dlib")


def set_threads(threads: int) -> None:
    """The one thread count for every library a system may use (also set in the env by run.py)."""
    import cv2

    cv2.setNumThreads(threads)


def make_system(name: str, args: argparse.Namespace) -> BenchSystem:
    if name in OURS:
        variant, label, notes = OURS[name]
        return Ours(
            name,
            variant,
            args.models,
            args.float_models,
            args.threads,
            label,
            backend="edgetpu" if name == "ours-edgetpu" else "cpu",
            notes=notes,
        )
    from benchmarks import peers

    classes: dict[str, Callable[[int, int], BenchSystem]] = {
        "facenet-pytorch": peers.FacenetPytorch,
        "mtcnn": peers.MtcnnPackage,
        "dlib": peers.FaceRecognitionDlib,
    }
    return classes[name](args.threads, args.min_face)


def vm_status() -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS of this process, in kB, from /proc/self/status."""
    values = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0])
    return values


class Server:
    """Answers run.py's requests for one loaded system."""

    def __init__(self, system: BenchSystem, frame_set: frame_sets.FrameSet) -> None:
        self.system = system
        self.frames = frame_set.frames
        self.next_index: dict[tuple[str, str], int] = {}

    def block(self, mode: str, condition: str, count: int) -> dict[str, Any]:
        """`count` consecutive frames of one condition, cycling through its sequence."""
        frames = self.frames[condition]
        key = (mode, condition)
        index = self.next_index.get(key, 0)
        seconds, cpu, faces, embedded = [], [], [], []
        stages: dict[str, list[float]] = {}
        for step in range(count):
            frame = frames[(index + step) % len(frames)]
            start, start_cpu = time.perf_counter(), time.process_time()
            if mode == "detect":
                found = self.system.detect(frame)
            elif mode == "e2e":
                found, timing = self.system.e2e(frame)
            else:
                found, embeddings = self.system.track(frame, condition, index + step)
                embedded.append(embeddings)
            seconds.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            faces.append(found)
            if mode == "e2e":
                for stage in set(stages) | set(timing):
                    # a stage that did not run on this frame (no face: no O-Net) costs 0
                    stages.setdefault(stage, [0.0] * step).append(timing.get(stage, 0.0))
        self.next_index[key] = index + count
        return {
            "seconds": seconds,
            "cpu_seconds": cpu,
            "faces": faces,
            "stages": stages,
            "embedded": embedded,
            "loadavg": os.getloadavg()[0],
        }

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request["cmd"]
        if command == "block":
            return self.block(request["mode"], request["condition"], int(request["count"]))
        if command == "matching":
            if not isinstance(self.system, Ours):
                raise ValueError(f"{self.system.name} has no gallery matching to time")
            return {
                "seconds": self.system.matching(
                    int(request["people"]), int(request["probes"]), int(request["repeats"])
                )
            }
        if command == "status":
            return {"vm": vm_status(), "info": self.system.info()}
        raise ValueError(f"unknown command {command!r}")


def load(system: BenchSystem, frame_set: frame_sets.FrameSet) -> dict[str, float]:
    """Import and load seconds; then enrolment and one warm-up frame per condition."""
    system.prepare()
    imported = time.perf_counter()
    system.load()
    loaded = time.perf_counter()
    if isinstance(system, Ours):
        system.enroll(frame_set.enroll, frame_set.enrolled_name)
    for condition in frame_set.frames:
        frame = frame_set.frames[condition][0]
        system.detect(frame)
        if "e2e" in system.modes:
            system.e2e(frame)
    return {"import_seconds": imported - START, "load_seconds": loaded - imported}


def serve(system: BenchSystem, frame_set: frame_sets.FrameSet) -> None:
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the protocol
    sys.stdout = sys.stderr
    try:
        hello: dict[str, Any] = {"ok": True, **load(system, frame_set), "info": system.info()}
    except Exception as error:  # reported to run.py, which skips the system with the reason
        hello = {"ok": False, "error": f"{type(error).__name__}: {error}"}
    channel.write(json.dumps(hello) + "\n")
    if not hello["ok"]:
        return
    server = Server(system, frame_set)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("cmd") == "quit":
            break
        channel.write(json.dumps(server.handle(request)) + "\n")


def rss(system: BenchSystem, frames_path: Path, count: int) -> None:
    """Fresh process: load, run `count` e2e frames of 1 and 3 faces, report VmHWM."""
    frame_set = frame_sets.load(frames_path, limit=count)
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    timing = load(system, frame_set)
    mode = "e2e" if "e2e" in system.modes else "detect"
    server = Server(system, frame_set)
    for condition in ("1", "3"):
        server.block(mode, condition, count)
    channel.write(json.dumps({**timing, "vm": vm_status(), "mode": mode}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=[*OURS, *PEERS])
    parser.add_argument("--frames", type=Path, required=True, help="frames .npz from run.py")
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--float-models", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-face", type=int, default=40)
    parser.add_argument("--rss", type=int, metavar="FRAMES", help="peak-RSS run of N frames")
    args = parser.parse_args()
    set_threads(args.threads)
    system = make_system(args.system, args)
    if args.rss:
        rss(system, args.frames, args.rss)
    else:
        serve(system, frame_sets.load(args.frames))


if __name__ == "__main__":
    main()
