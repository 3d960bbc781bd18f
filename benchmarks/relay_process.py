"""What the relay process costs, and what it buys (docs/RELIABILITY.md, "The relay in a
process of its own").

Costs: how long the child takes to claim the pin, its memory, and a pulse request's round
trip. Buys: how long a 0.3 s pulse stays open while the door process is stuck in a native call
that keeps the interpreter lock for 1.5 s, with the relay in the door process and in the
child. All on gpiozero's MockFactory (its pin history gives the open time):

    .venv/bin/python -m benchmarks.relay_process [--json benchmarks/relay_process.json]
"""

from __future__ import annotations

import argparse
import ctypes
import platform
import statistics
import time
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from benchmarks import outputs
from edge_app.config import GpioConfig
from edge_app.relay import Relay
from edge_app.relay_process import RelayProcess
from edge_app.reports import check_output

PIN = 17
PULSE = 0.3
HOLD = 1.5
STARTS = 7
REQUESTS = 200


def _status(pid: int, field: str) -> int:
    """A /proc/PID/status field in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _hold_the_interpreter(seconds: float) -> None:
    ctypes.PyDLL(None).usleep(int(seconds * 1_000_000))


def _open_time_in_process() -> float:
    factory = MockFactory()
    with Relay(PIN, pin_factory=factory) as relay:
        relay.pulse(PULSE)
        _hold_the_interpreter(HOLD)
        while relay.is_active:
            time.sleep(0.01)
    return float(factory.pin(PIN).states[2].timestamp)


def _open_time_in_child() -> float:
    with RelayProcess(GpioConfig(pin=PIN, factory="mock")) as relay:
        relay.pulse(PULSE)
        _hold_the_interpreter(HOLD)
        while relay.is_active:
            time.sleep(0.01)
        return relay.history()[2][0]


def measure() -> dict:
    starts, rss, private, requests = [], [], [], []
    for _ in range(STARTS):
        began = time.monotonic()
        relay = RelayProcess(GpioConfig(pin=PIN, factory="mock"))
        starts.append(time.monotonic() - began)
        rss.append(_status(relay._child.pid, "VmRSS"))
        private.append(_status(relay._child.pid, "RssAnon"))
        for _ in range(REQUESTS // STARTS):
            began = time.monotonic()
            relay.pulse(5.0)
            requests.append(time.monotonic() - began)
        relay.close()
    return {
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "start_seconds_median": round(statistics.median(starts), 3),
        "rss_mb_median": round(statistics.median(rss) / 1024, 1),
        "private_mb_median": round(statistics.median(private) / 1024, 1),
        "pulse_request_ms_median": round(statistics.median(requests) * 1000, 3),
        "pulse_request_ms_max": round(max(requests) * 1000, 3),
        "pulse_seconds": PULSE,
        "interpreter_held_seconds": HOLD,
        "open_seconds_relay_in_door_process": round(_open_time_in_process(), 3),
        "open_seconds_relay_process": round(_open_time_in_child(), 3),
    }


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    check_output(args.json, "--json")  # before the work, not with a traceback after
    figures = measure()
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if args.json is not None:
        outputs.write_json(args.json, figures, "--json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
