"""Resident memory of `edge-app hub` with the web page off, idle, in use, and after an enrolment.

    python -m benchmarks.web_rss            # prints the table of docs/WEB.md

Each case starts a fresh `edge-app hub` (no door, no MQTT) from a temporary config, waits for
it to settle, drives the page over HTTP like a browser would (log in, the pages, the health
report, one enrolment from two LFW photos), and reads VmRSS and VmHWM (peak) from /proc.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.loopback import free_port
from edge_app.paths import REPO_ROOT, SHARED_DATA

PASSWORD = "benchmark-password"
SETTLE_S = 8.0
HEALTH_AGAIN = 10
PHOTOS = SHARED_DATA / "lfw" / "images" / "Ricardo_Lagos"


def memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    text = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1))  # type: ignore[union-attr]
    peak = int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1))  # type: ignore[union-attr]
    return rss / 1024, peak / 1024


def token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token"
    return match.group(1)


def measure(web: bool, folder: Path) -> list[tuple[str, float, float]]:
    folder.mkdir(parents=True)
    port = free_port()
    config = folder / "door.toml"
    config.write_text(
        f'[gallery]\npath = "{folder}/gallery.db"\n[events]\ndb = "{folder}/events.db"\n'
        f'[hub]\nsocket = "{folder}/door.sock"\n'
        f'[web]\nenabled = {"true" if web else "false"}\nlisten = "127.0.0.1:{port}"\n'
        f'password_file = "{folder}/web-password"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "edge_app.cli", "hub", "--config", str(config)]
    subprocess.run(
        [*command[:4], "passwd", "--stdin", "--config", str(config)],
        input=PASSWORD + "\n",
        text=True,
        env=env,
        check=True,
        capture_output=True,
    )
    hub = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows: list[tuple[str, float, float]] = []
    try:
        time.sleep(SETTLE_S)
        rows.append(("started", *memory(hub.pid)))
        if not web:
            return rows
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=True) as client:
            login = token(client.get("/login").text)
            client.post("/login", data={"password": PASSWORD, "csrf_token": login})
            for path in ("/", "/people", "/events", "/fragments/status", "/fragments/live"):
                client.get(path)
            time.sleep(1)
            rows.append(("logged in, pages visited", *memory(hub.pid)))
            client.get("/health", timeout=60)
            time.sleep(1)
            rows.append(("after the health page", *memory(hub.pid)))
            for _ in range(HEALTH_AGAIN):  # each opens the models: they must not pile up
                client.get("/health", timeout=60)
            time.sleep(1)
            rows.append((f"after it {HEALTH_AGAIN} times more", *memory(hub.pid)))
            photos = sorted(PHOTOS.glob("*.jpg"))[:2]
            files = [("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
            reply = client.post(
                "/people/enroll",
                data={"name": "Benchmark", "csrf_token": token(client.get("/people").text)},
                files=files,
                timeout=120,
            )
            assert "enrolled" in reply.text, reply.text[-2000:]
            time.sleep(1)
            rows.append(("after an enrolment", *memory(hub.pid)))
        return rows
    finally:
        hub.terminate()
        hub.wait()


def parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="python -m benchmarks.web_rss",
        description=(
            "Resident memory (VmRSS, and VmHWM as the peak) of `edge-app hub` with the web "
            "page off and on: started and idle, logged in with the pages visited, after the "
            f"health page and after {HEALTH_AGAIN} more, and after one enrolment from two LFW "
            "photos "
            f"({PHOTOS}). Each case starts its own hub (no door, no MQTT) from a temporary "
            "config listening on 127.0.0.1, and stops it at the end. Prints the table of "
            "docs/WEB.md. It takes at least about 20 s, its fixed waits (each hub settles "
            f"for {SETTLE_S:.0f} s, then 1 s after each step), plus the health page and the "
            "enrolment, which run the models and may take up to their 60 s and 120 s "
            "timeouts."
        ),
    )


def main(argv: list[str] | None = None) -> int:
    parser().parse_args(argv)
    if not PHOTOS.is_dir():
        sys.stderr.write(f"needs LFW photos at {PHOTOS}\n")
        return 1
    with tempfile.TemporaryDirectory() as temp:
        print("| hub | state | RSS MB | peak MB |")
        print("|---|---|---:|---:|")
        for web in (False, True):
            for state, rss, peak in measure(web, Path(temp) / str(web)):
                label = "web on" if web else "web off"
                print(f"| {label} | {state} | {rss:.1f} | {peak:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
