"""Does the door stay the same size over a long run? (docs/RELIABILITY.md, "A long run")

A door runs for months. Every cache and queue in it is bounded by design; this measures it
from the outside. The real `edge-app run` (its relay process, events database, JSON-lines
file, snapshots with pruning, liveness in log mode, one person enrolled with `edge-app
enroll`) plays the demo clip (demo/door.mp4: an enrolled person, a stranger, the enrolled
person again) looped --loops times, as fast as it can. At each of the door's own `metrics`
log lines (every 60 s) the door process and its relay process are read from /proc: resident
memory, threads, open files. A straight line fitted to the door's resident memory against the
frames processed, after a warm-up (the first --warmup of the samples), gives the growth per
100,000 frames; the events database grows with the events by design (retention deletes
them after `retention_days`), so it is reported per event.

With --reload-every SECONDS, the door's gallery and config change under it as they do at a
door that runs for months: every SECONDS the enrolled person is renamed with `edge-app rename`
(back and forth: a gallery change the door picks up while running, which builds a new matcher)
and the door is sent SIGHUP (`systemctl reload`: the config, the gallery and the site memory
read again, the JSON-lines file reopened). The door's "gallery loaded" and "reload done" lines
are counted, so a reload that did not happen shows.

With --hub, `edge-app hub` runs beside it as installed (edge-app-hub.service): connected to
the door's control socket and to a mosquitto broker started here on a loopback port, with a
subscriber counting the event messages it publishes; the hub process is read the same way.

    .venv/bin/python -m benchmarks.soak [--loops 1000] [--hub] [--reload-every SECONDS]
        [--out benchmarks/soak.json]

1,000 loops are 132,000 frames of 640x480 (about half an hour on 2 x86 cores); a door at 10
frames a second sees as many in 3.7 hours, and the same people come and go 1,000 times.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks import outputs
from benchmarks.loopback import free_port, stop
from edge_app.events import SNAPSHOT_NAME, read_events
from edge_app.reports import check_output

REPO = Path(__file__).resolve().parent.parent
CLIP = REPO / "demo" / "door.mp4"
ENROL = REPO / "demo" / "enroll" / "Ricardo_Lagos"
METRICS = re.compile(r"metrics (frames=.*)")
FIELD = re.compile(r"(\w+)=([\d.]+)")
NAMES = ("Ricardo_Lagos", "Ricardo Lagos Escobar")  # renamed back and forth by --reload-every


def long_clip(path: Path, loops: int) -> int:
    """The demo clip written `loops` times over into one video file; its frame count."""
    import cv2

    capture = cv2.VideoCapture(str(CLIP))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    if not frames:
        raise SystemExit(f"error: cannot read {CLIP}")
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (width, height))
    try:
        for _ in range(loops):
            for frame in frames:
                writer.write(frame)
    finally:
        writer.release()
    return loops * len(frames)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (kB) and Threads of a live process, and its open file descriptors."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            fields[key] = int(value.split()[0])
    fields["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return fields


def children(pid: int) -> list[int]:
    """The direct children of `pid` (the relay process)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return found


def database_bytes(work: Path) -> int:
    """The events database's size with its -wal and -shm."""
    return sum(p.stat().st_size for p in work.glob("events.db*") if p.is_file())


def slope_per_100k(frames: list[float], values: list[float]) -> float | None:
    """Least-squares slope of `values` against `frames`, per 100,000 frames."""
    if len(frames) < 2 or max(frames) == min(frames):
        return None
    return float(np.polyfit(np.asarray(frames), np.asarray(values), 1)[0] * 100_000)


def sample(
    pid: int, fields: dict[str, str], started: float, work: Path, hub: int | None
) -> dict[str, Any]:
    door = proc_status(pid)
    hub_status = proc_status(hub) if hub is not None else None
    relay = [proc_status(child) for child in children(pid)]
    snapshots = [p for p in (work / "snapshots").iterdir() if SNAPSHOT_NAME.match(p.name)]
    return {
        "seconds": round(time.monotonic() - started, 1),
        "frames": int(fields["frames"]),
        "door_rss_mb": door["VmRSS"] / 1024,
        "door_threads": door["Threads"],
        "door_fds": door["fds"],
        "relay_rss_mb": sum(r["VmRSS"] for r in relay) / 1024,
        "relay_processes": len(relay),
        "snapshots": len(snapshots),
        "events_db_bytes": database_bytes(work),
        "fps": float(fields.get("fps", "nan")),
        "unlocks": int(fields.get("unlocks", 0)),
        **(
            {
                "hub_rss_mb": hub_status["VmRSS"] / 1024,
                "hub_threads": hub_status["Threads"],
                "hub_fds": hub_status["fds"],
            }
            if hub_status is not None
            else {}
        ),
    }


class Changes:
    """--reload-every: the gallery changed and the door sent SIGHUP every `every` seconds."""

    def __init__(self, every: float, config: Path) -> None:
        self.every = every
        self.config = config
        self.renames = self.sighups = 0
        self.ready = False  # the door has loaded its gallery: its signal handlers are in place
        self._due = time.monotonic() + every

    def maybe(self, door: subprocess.Popen[bytes]) -> None:
        if self.every <= 0 or time.monotonic() < self._due:
            return
        self._due = time.monotonic() + self.every
        old, new = NAMES[self.renames % 2], NAMES[(self.renames + 1) % 2]
        command = ["rename", "--config", str(self.config), old, new]
        renamed = subprocess.run(
            [sys.executable, "-m", "edge_app.cli", *command],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        if renamed.returncode != 0:
            raise SystemExit(f"error: rename {old!r} failed: {renamed.stderr.strip()}")
        self.renames += 1
        door.send_signal(signal.SIGHUP)
        self.sighups += 1


def run_door(
    config: Path, log: Path, work: Path, frames: int, hub: int | None, changes: Changes
) -> tuple[int, list[dict[str, Any]], float]:
    """The door on the long clip; its exit code, the samples and the wall time."""
    command = [sys.executable, "-m", "edge_app.cli", "-v", "run", "--config", str(config)]
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    with log.open("w", encoding="utf-8") as out:
        door = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    bar = tqdm(total=frames, desc="the door on the looped clip", unit="frame", disable=None)
    try:
        with log.open(encoding="utf-8", errors="replace") as reader:
            while True:
                finished = door.poll() is not None
                for line in reader.readlines():
                    changes.ready = changes.ready or "gallery loaded path=" in line
                    match = METRICS.search(line)
                    if match is None or finished:  # the last line is read after the exit
                        continue
                    fields = dict(FIELD.findall(match.group(1)))
                    # FileNotFoundError: the door ended between the line and the read.
                    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                        samples.append(sample(door.pid, fields, started, work, hub))
                        bar.update(samples[-1]["frames"] - bar.n)
                        bar.set_postfix(rss_mb=f"{samples[-1]['door_rss_mb']:.1f}")
                if finished:
                    break
                if changes.ready:
                    changes.maybe(door)
                time.sleep(0.5)
    except BaseException:
        door.terminate()
        door.wait(timeout=30)
        raise
    finally:
        bar.close()
    return int(door.returncode), samples, time.monotonic() - started


def summarise(samples: list[dict[str, Any]], warmup: float) -> dict[str, Any]:
    skip = int(len(samples) * warmup)
    kept = samples[skip:]
    frames = [s["frames"] for s in kept]

    def series(key: str) -> dict[str, Any]:
        values = [s[key] for s in kept]
        everything = [s[key] for s in samples]
        return {
            "first_kept": values[0] if values else None,
            "last": values[-1] if values else None,
            "min": min(everything, default=None),
            "max": max(everything, default=None),
            "slope_per_100k_frames": slope_per_100k(frames, values),
        }

    return {
        "samples": len(samples),
        "warmup_samples_left_out": skip,
        "frames_fitted": [frames[0], frames[-1]] if frames else None,
        "door_rss_mb": series("door_rss_mb"),
        "relay_rss_mb": series("relay_rss_mb"),
        "door_threads": series("door_threads"),
        "door_fds": series("door_fds"),
        "snapshots": series("snapshots"),
        **(
            {key: series(key) for key in ("hub_rss_mb", "hub_threads", "hub_fds")}
            if kept and "hub_rss_mb" in kept[0]
            else {}
        ),
    }


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  python -m benchmarks.soak --loops 20 --out /tmp/soak.json",
    )
    parser.add_argument("--loops", type=int, default=1000, help="times the clip plays (1000)")
    parser.add_argument(
        "--warmup", type=float, default=0.2, help="share of the samples left out of the fit (0.2)"
    )
    parser.add_argument(
        "--snapshot-keep", type=int, default=50, help="[events] snapshot_keep for the run (50)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "soak.json")
    parser.add_argument(
        "--hub",
        action="store_true",
        help="run edge-app hub beside the door, publishing to a local mosquitto",
    )
    parser.add_argument(
        "--reload-every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="rename the enrolled person and send the door SIGHUP this often (0: never)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    if args.loops < 1 or not 0 <= args.warmup < 1 or args.snapshot_keep < 1:
        parser.error("--loops and --snapshot-keep must be at least 1, --warmup in [0, 1)")
    if not 0 <= args.reload_every < math.inf:
        parser.error("--reload-every must be a number of seconds, 0 or more")
    check_output(args.out, "--out")
    work = Path(tempfile.mkdtemp(prefix="edge-app-soak."))
    try:
        return _soak(args, work)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def broker(work: Path) -> Iterator[int]:
    """Debian's mosquitto on a free loopback port, anonymous, for this run only."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"user {pwd.getpwuid(os.getuid()).pw_name}\nlog_dest stderr\nlog_type error\n",
        encoding="utf-8",
    )
    with (work / "mosquitto.log").open("wb") as log:
        process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("error: mosquitto did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


class EventCounter:
    """Plays Home Assistant: counts the event messages the hub publishes."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.count = 0
        self.kinds: Counter[str] = Counter()
        self.topic = topic
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-observer")
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise SystemExit("error: could not subscribe to the broker")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            kind = str(json.loads(message.payload)["type"])
        except (ValueError, KeyError, TypeError):
            kind = "not an event message"
        with self._lock:
            self.count += 1
            self.kinds[kind] += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _soak(args: argparse.Namespace, work: Path) -> int:
    if args.hub and not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        print("error: --hub needs mosquitto (apt install mosquitto)", file=sys.stderr)
        return 2
    print(f"writing {args.loops} loops of {CLIP.name} into one video", file=sys.stderr)
    frames = long_clip(work / "clip.mp4", args.loops)
    gallery = work / "gallery.db"
    enrol = ["enroll", "--db", str(gallery), "Ricardo_Lagos", str(ENROL)]
    enrolled = subprocess.run(
        [sys.executable, "-m", "edge_app.cli", *enrol], capture_output=True, text=True, cwd=REPO
    )
    if enrolled.returncode != 0:
        print(f"error: enrolment failed: {enrolled.stderr.strip()}", file=sys.stderr)
        return 1
    (work / "snapshots").mkdir(mode=0o700)
    with contextlib.ExitStack() as stack:
        mqtt = ""
        hub: subprocess.Popen[bytes] | None = None
        counter: EventCounter | None = None
        if args.hub:
            port = stack.enter_context(broker(work))
            mqtt = f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
        config = work / "door.toml"
        config.write_text(
            f'[camera]\nsource = "{work / "clip.mp4"}"\n'
            f'[gallery]\npath = "{gallery}"\n'
            '[gpio]\nfactory = "mock"\n'
            f'[events]\ndb = "{work / "events.db"}"\njsonl = "{work / "events.jsonl"}"\n'
            f'snapshots = "{work / "snapshots"}"\nsnapshot_keep = {args.snapshot_keep}\n'
            '[liveness]\nmode = "log"\n'
            f'[hub]\nsocket = "{work / "door.sock"}"\n' + mqtt,
            encoding="utf-8",
        )
        if args.hub:
            counter = EventCounter(port, "edge-door/door/event")
            stack.callback(counter.close)
            hub_log = stack.enter_context((work / "hub.log").open("w", encoding="utf-8"))
            command = [sys.executable, "-m", "edge_app.cli", "-v", "hub", "--config", str(config)]
            hub = subprocess.Popen(command, stdout=hub_log, stderr=subprocess.STDOUT, cwd=REPO)
            stack.callback(stop, hub)
        changes = Changes(args.reload_every, config)
        code, samples, wall = run_door(
            config, work / "door.log", work, frames, hub.pid if hub else None, changes
        )
        events = read_events(work / "events.db") if (work / "events.db").is_file() else []
        published = _settle(counter, len(events)) if counter is not None else None
        hub_alive = hub is not None and hub.poll() is None
    log_text = (work / "door.log").read_text(encoding="utf-8", errors="replace")
    last = METRICS.findall(log_text)
    final = dict(FIELD.findall(last[-1])) if last else {}
    database = database_bytes(work)
    result = {
        "what": "the real edge-app run on the demo clip looped: memory, threads, open files",
        "command": f"python -m benchmarks.soak --loops {args.loops}"
        + (" --hub" if args.hub else "")
        + (f" --reload-every {args.reload_every:g}" if args.reload_every else ""),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "exit_code": code,
        "loops": args.loops,
        "snapshot_keep": args.snapshot_keep,
        "frames_in_clip": frames,
        "frames_processed": int(final["frames"]) if "frames" in final else None,
        "wall_seconds": round(wall, 1),
        "events": dict(Counter(event.type for event in events)),
        "events_db_bytes": database,
        "events_db_bytes_per_event": round(database / len(events), 1) if events else None,
        "errors_logged": _errors(log_text),
        "changes": {
            "renames": changes.renames,
            "sighups": changes.sighups,
            "gallery_loaded_lines": log_text.count("gallery loaded path="),
            "reload_done_lines": log_text.count("reload done"),
        },
        "summary": summarise(samples, args.warmup),
        "series": samples,
    }
    if args.hub:
        hub_text = (work / "hub.log").read_text(encoding="utf-8", errors="replace")
        result["hub"] = {
            "event_messages_published": published,
            "events_recorded": len(events),
            "published_by_type": dict(counter.kinds) if counter is not None else None,
            "running_at_the_end": hub_alive,
            "errors_logged": _errors(hub_text),
        }
    outputs.write_json(args.out, result, "--out")
    rss = result["summary"]["door_rss_mb"]
    slope = rss["slope_per_100k_frames"]
    print(
        f"wrote {args.out}: exit {code}, {result['frames_processed']} frames; door RSS "
        f"{rss['min']:.1f}-{rss['max']:.1f} MB"
        + (f", {slope:+.2f} MB per 100,000 frames after the warm-up" if slope is not None else "")
        if samples
        else f"wrote {args.out}: exit {code}, no sample (a run shorter than a minute)",
        file=sys.stderr,
    )
    return 0 if code == 0 else 1


def _errors(log_text: str) -> int:
    return sum(1 for line in log_text.splitlines() if " ERROR " in line or "Traceback" in line)


def _settle(counter: EventCounter, recorded: int, seconds: float = 10.0) -> int:
    """The event messages published, once they stop arriving (or all have arrived)."""
    deadline = time.monotonic() + seconds
    seen = -1
    while time.monotonic() < deadline and counter.count < recorded:
        if counter.count == seen:
            break
        seen = counter.count
        time.sleep(1.0)
    return counter.count


if __name__ == "__main__":
    raise SystemExit(main())
