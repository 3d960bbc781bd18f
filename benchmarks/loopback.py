"""What the benchmarks that run the door's services on this machine share with the web tests
(tests/web_support.py): a free loopback port, a throw-away TLS certificate, and stopping a
process they started."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from edge_app.errors import UserError

# The kernel's range for outgoing connections' own ports (and for a bind to port 0).
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 20000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, picked below the kernel's
    ephemeral range: one from that range (a bind to port 0) can be given to any client's
    connection between the pick and the server's bind, which then fails ("Address already
    in use"); below it, only another server could take it."""
    try:
        first_ephemeral = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 32768  # Linux's default
    for _ in range(200):
        port = random.randrange(LOWEST_PORT, max(LOWEST_PORT + 1, first_ephemeral))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A one-day self-signed certificate for 127.0.0.1 and its key, in `folder`, made with
    the openssl command (UserError where it is missing)."""
    if shutil.which("openssl") is None:
        raise UserError("needs the openssl command to make a test certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def stop(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 15 s; reaped either way."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
