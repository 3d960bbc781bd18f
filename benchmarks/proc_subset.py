"""FaceNet's time per face with /proc whole and with /proc as systemd's ProcSubset=pid mounts it
(docs/DAEMON.md, Hardening): without /proc/cpuinfo TFLite's XNNPACK backend
does not start, which is why no unit of ours sets ProcSubset=pid.

Needs root (a private mount and PID namespace, `unshare -mpf`, where /proc is mounted with
`subset=pid`, as the unit option does):

    sudo .venv/bin/python -m benchmarks.proc_subset [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from edge_app.paths import REPO_MODELS

MODEL = REPO_MODELS / "facenet.tflite"


def time_facenet(runs: int) -> float:
    """Milliseconds per FaceNet run, 2 threads, after one warm-up run."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(MODEL), num_threads=2)
    interpreter.allocate_tensors()
    tensor = interpreter.get_input_details()[0]
    interpreter.set_tensor(tensor["index"], np.zeros(tensor["shape"], tensor["dtype"]))
    interpreter.invoke()
    start = time.perf_counter()
    for _ in range(runs):
        interpreter.invoke()
    return (time.perf_counter() - start) / runs * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per setting (5)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:  # inside the namespace: /proc is mounted subset=pid by the outer shell
        print(
            json.dumps({"cpuinfo": os.path.exists("/proc/cpuinfo"), "ms": time_facenet(args.runs)})
        )
        return 0
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        sys.stderr.write("needs root and unshare(1): a private mount and PID namespace\n")
        return 2
    whole = time_facenet(args.runs)
    inner = f"{sys.executable} -m benchmarks.proc_subset --inner --runs {args.runs}"
    done = subprocess.run(
        ["unshare", "-mpf", "sh", "-c", f"mount -t proc -o subset=pid proc /proc && {inner}"],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    subset = json.loads(done.stdout.strip().splitlines()[-1])
    print("| /proc | /proc/cpuinfo | FaceNet int8, ms per face (2 threads) |")
    print("|---|---|---|")
    print(f"| whole | there | {whole:.1f} |")
    print(f"| subset=pid (ProcSubset=pid) | {'there' if subset['cpuinfo'] else 'hidden'} | "
          f"{subset['ms']:.1f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
