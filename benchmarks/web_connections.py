"""What a flood of TCP connects costs the web page: resident memory, TLS layers left for the
cyclic garbage collector, and log lines; and how long half-sent logins keep the page from
answering once their sender goes quiet (docs/WEB.md, "Connections").

    .venv/bin/python -m benchmarks.web_connections [--plain] [--json PATH]

The product's WebServer (edge_app.web.server) serves a temporary config on a loopback port
in this process, over TLS (a self-signed certificate made with the openssl CLI) unless
--plain. Other loopback addresses (127.0.0.2 to 127.0.0.21) stand for the devices of a LAN.
Three floods, one after the other, each followed by a pause for the page to see them gone:

- connect-close: TCP connects closed at once, never a TLS byte (most are refused by the
  per-address and total caps, since asyncio accepts a queue of them at a time);
- held: connects kept open past the TLS handshake deadline (10 s), then closed;
- handshakes: full TLS handshakes (over plain HTTP, a GET /login), then closed.

After each: VmRSS of this process (the page's connections; the clients' sockets are a few
kB), the SSLProtocol objects still in memory (asyncio's TLS layer; on Python 3.11 each held
a 256 KiB read buffer before the fix), and the lines logged for refused connections ("web
connection refused") and for requests uvicorn answered 503 ("Exceeded concurrency limit.").
Then gc.collect() shows what only the cyclic collector would have freed.

Last, the audit's lock-out (s40 finding 3): 64 logins from 4 addresses whose body stops after
its first bytes, their sockets left open (a device that dropped off the network, or went
quiet on purpose), and another device asking for /login every 0.5 s: the seconds from the
last attacking byte until it is answered 200 (at most LOCKOUT_CAP_S are waited).
"""

from __future__ import annotations

import argparse
import gc
import logging
import re
import socket
import ssl
import sys
import tempfile
import time
from asyncio.sslproto import SSLProtocol
from pathlib import Path
from typing import Any

from benchmarks import outputs
from benchmarks.loopback import free_port, self_signed
from edge_app.config import parse_config
from edge_app.reports import check_output
from edge_app.web import auth
from edge_app.web.server import TLS_HANDSHAKE_TIMEOUT_S, WebServer

CONNECTS = 2000
HELD = 400
HANDSHAKES = 200
ADDRESSES = [f"127.0.0.{n}" for n in range(2, 22)]
SETTLE_S = 2.0
REFUSED_LOGS = ("web connection refused", "Exceeded concurrency limit.")
HALF_SENT = 64
ATTACKERS = ADDRESSES[:4]
LOCKOUT_CAP_S = 120.0


def rss_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024  # type: ignore[union-attr]


def tls_layers() -> int:
    """SSLProtocol objects in memory, unreachable ones waiting for the collector included."""
    return sum(1 for item in gc.get_objects() if isinstance(item, SSLProtocol))


class Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.refused = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(REFUSED_LOGS):
            self.refused += 1


def connect(port: int, number: int, source: str | None = None) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(10)
    sock.bind((source or ADDRESSES[number % len(ADDRESSES)], 0))
    sock.connect(("127.0.0.1", port))
    return sock


def opened(port: int, source: str, client: ssl.SSLContext | None) -> socket.socket:
    sock = connect(port, 0, source)
    return sock if client is None else client.wrap_socket(sock, server_hostname="127.0.0.1")


def login_page(port: int, source: str, client: ssl.SSLContext | None) -> tuple[int, bytes]:
    """GET /login from `source`: its status (0: refused or closed) and its head."""
    try:
        with opened(port, source, client) as sock:
            sock.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer and (piece := sock.recv(65536)):
                answer += piece
    except (OSError, ssl.SSLError):
        return 0, b""
    return (int(answer.split()[1]) if answer.startswith(b"HTTP/1.1 ") else 0), answer


def half_sent_logins(port: int, client: ssl.SSLContext | None) -> dict[str, Any]:
    """The lock-out: HALF_SENT logins that never end from ATTACKERS, then another device."""
    cookies = {}  # each attacker's login-form cookie, as a browser would have it
    for source in ATTACKERS:
        _, head = login_page(port, source, client)
        found = re.search(rb"(?i)set-cookie: ([^=;]*edge_door_login=[^;]*)", head)
        assert found, head
        cookies[source] = found[1]
    held: list[socket.socket] = []
    try:
        for number in range(HALF_SENT):
            source = ATTACKERS[number % len(ATTACKERS)]
            sock = opened(port, source, client)
            sock.sendall(
                b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: " + cookies[source] + b"\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 60000"
                b"\r\n\r\ncsrf_token="
            )
            held.append(sock)
            time.sleep(0.02)  # its request read before the next connects, as over TLS
        quiet = time.monotonic()
        during = login_page(port, "127.0.0.1", client)[0]
        answered_s = None
        while time.monotonic() - quiet < LOCKOUT_CAP_S:
            if login_page(port, "127.0.0.1", client)[0] == 200:
                answered_s = round(time.monotonic() - quiet, 1)
                break
            time.sleep(0.5)
        return {
            "half_sent_logins": HALF_SENT,
            "from_addresses": len(ATTACKERS),
            "status_just_after": during,
            "answered_200_after_s": answered_s,  # None: not within LOCKOUT_CAP_S
            "waited_at_most_s": LOCKOUT_CAP_S,
        }
    finally:
        for sock in held:
            sock.close()


def measure(
    plain: bool, connects: int, held: int, handshakes: int, lockout_too: bool
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        web: dict[str, Any] = {
            "enabled": True,
            "listen": f"127.0.0.1:{free_port()}",
            "password_file": str(folder / "web-password"),
        }
        if not plain:
            cert, key = self_signed(folder)
            web |= {"tls_cert": str(cert), "tls_key": str(key)}
        config = parse_config(
            {
                "gallery": {"path": str(folder / "gallery.db")},
                "events": {"db": str(folder / "events.db")},
                "web": web,
            }
        )
        auth.write_password_file(config.web.password_file, "benchmark-password")
        counter = Counter()
        loggers = [logging.getLogger(name) for name in ("edge_app.web.server", "uvicorn.error")]
        for logger in loggers:
            logger.addHandler(counter)
            logger.propagate = False  # counted, not printed
        server = WebServer(config, socket_path=folder / "absent-door.sock")
        server.start()
        port = server.port
        client = ssl.create_default_context(cafile=web["tls_cert"]) if not plain else None
        steps: list[dict[str, Any]] = []

        def step(name: str, started: float) -> None:
            time.sleep(SETTLE_S)
            steps.append(
                {
                    "step": name,
                    "seconds": round(time.monotonic() - started, 1),
                    "rss_mb": round(rss_mb(), 1),
                    "tls_layers_in_memory": tls_layers(),
                    "refusal_log_lines": counter.refused,
                }
            )

        try:
            step("started", time.monotonic())
            started = time.monotonic()
            for number in range(connects):
                connect(port, number).close()
            step(f"{connects} connects closed at once", started)
            started = time.monotonic()
            socks = [connect(port, number) for number in range(held)]
            time.sleep(TLS_HANDSHAKE_TIMEOUT_S + 1)
            for sock in socks:
                sock.close()
            step(f"{held} connects held {TLS_HANDSHAKE_TIMEOUT_S + 1:g} s", started)
            started = time.monotonic()
            for number in range(handshakes):
                sock = connect(port, number)
                if client is not None:
                    sock = client.wrap_socket(sock, server_hostname="127.0.0.1")
                else:
                    sock.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    sock.recv(100)
                sock.close()
            step(f"{handshakes} {'GETs' if plain else 'handshakes'}", started)
            freed = gc.collect()
            time.sleep(SETTLE_S)
            after_gc = {"objects_freed": freed, "rss_mb": round(rss_mb(), 1)}
            lockout = half_sent_logins(port, client) if lockout_too else None
        finally:
            server.stop()
            for logger in loggers:
                logger.removeHandler(counter)
                logger.propagate = True
    return {
        "machine": f"{outputs.conditions()['machine']}, Python {sys.version.split()[0]}",
        "tls": not plain,
        "steps": steps,
        "rss_growth_mb": round(steps[-1]["rss_mb"] - steps[0]["rss_mb"], 1),
        "after_gc_collect": after_gc,
        "lockout": lockout,
        "conditions": outputs.conditions(),
    }


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.web_connections", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--plain", action="store_true", help="serve plain HTTP, not TLS")
    parser.add_argument("--connects", type=int, default=CONNECTS, help="connect-close flood")
    parser.add_argument("--held", type=int, default=HELD, help="connects held past 10 s")
    parser.add_argument("--handshakes", type=int, default=HANDSHAKES, help="full handshakes")
    parser.add_argument(
        "--no-lockout", action="store_true", help="leave out the half-sent logins (up to 120 s)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    check_output(args.json, "--json")  # before the work, not with a traceback after
    figures = measure(
        args.plain, args.connects, args.held, args.handshakes, lockout_too=not args.no_lockout
    )
    print(f"{'step':<36} {'s':>6} {'RSS MB':>8} {'TLS layers':>11} {'refusal lines':>14}")
    for row in figures["steps"]:
        print(
            f"{row['step']:<36} {row['seconds']:>6} {row['rss_mb']:>8} "
            f"{row['tls_layers_in_memory']:>11} {row['refusal_log_lines']:>14}"
        )
    after = figures["after_gc_collect"]
    print(f"RSS growth: {figures['rss_growth_mb']} MB; then gc.collect(): {after}")
    if figures["lockout"] is not None:
        print(f"half-sent logins: {figures['lockout']}")
    if args.json is not None:
        outputs.write_json(args.json, figures, "--json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
