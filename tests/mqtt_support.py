"""The world the hub's tests run it in: a real Mosquitto broker (Debian's, started on free
loopback ports, with a password file and a TLS listener signed by a test CA the openssl CLI
makes), the observer that plays Home Assistant on its plain port, and a door fed frames as its
frame loop would. tests/conftest.py's fixtures `test_ca`, `broker`, `observer` and `door` make
them for tests/test_mqtt.py, tests/test_mqtt_*.py and tests/test_hub_review.py."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from needs import unavailable
from paho.mqtt.enums import CallbackAPIVersion
from test_control import Door

from benchmarks.loopback import free_port

USER, PASSWORD = "door", "correct horse battery"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def need_mosquitto() -> None:
    missing = [tool for tool in (MOSQUITTO, MOSQUITTO_PASSWD, "openssl") if not shutil.which(tool)]
    if missing:
        unavailable(f"needs {', '.join(missing)} (apt install mosquitto openssl)")


def make_ca(folder: Path) -> dict[str, Path]:
    """A test CA and a server certificate for 127.0.0.1/localhost, with the openssl CLI."""
    files = {name: folder / f"{name}.pem" for name in ("ca", "ca_key", "server", "server_key")}
    csr, ext = folder / "server.csr", folder / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands = [
        ["req", "-x509", *ec, "-days", "2", "-subj", "/CN=edge-door test CA"]
        + ["-keyout", files["ca_key"], "-out", files["ca"]],
        ["req", *ec, "-subj", "/CN=localhost", "-keyout", files["server_key"], "-out", csr],
        ["x509", "-req", "-in", csr, "-CA", files["ca"], "-CAkey", files["ca_key"]]
        + ["-CAcreateserial", "-days", "2", "-extfile", ext, "-out", files["server"]],
    ]
    for command in commands:
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True, timeout=60)
    return files


class Broker:
    def __init__(
        self,
        folder: Path,
        certs: dict[str, Path],
        acl: str | None = None,
        settings: tuple[str, ...] = (),
    ) -> None:
        """acl: the text of a Mosquitto acl_file for it (none: every user may do anything);
        settings: more lines of mosquitto.conf."""
        self.folder = folder
        self.port = free_port()
        self.tls_port = free_port()
        self.certs = certs
        passwords = folder / "passwd"
        subprocess.run(
            [MOSQUITTO_PASSWD, "-c", "-b", str(passwords), USER, PASSWORD],
            check=True,
            capture_output=True,
            timeout=30,
        )
        subprocess.run(
            [MOSQUITTO_PASSWD, "-b", str(passwords), "ha", "ha-pass"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        import pwd

        acl_lines = []
        if acl is not None:
            (folder / "acl").write_text(acl)
            acl_lines = [f"acl_file {folder / 'acl'}"]
        self.config = folder / "mosquitto.conf"
        self._settings = [
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {passwords}",
            *acl_lines,
            "persistence false",
            *settings,
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        self._write_config()
        self.process: subprocess.Popen | None = None
        self._started = False

    def _write_config(self) -> None:
        self.config.write_text(
            "\n".join(
                [
                    *self._settings,
                    f"listener {self.port} 127.0.0.1",
                    f"listener {self.tls_port} 127.0.0.1",
                    f"cafile {self.certs['ca']}",
                    f"certfile {self.certs['server']}",
                    f"keyfile {self.certs['server_key']}",
                    "",
                ]
            )
        )

    def start(self) -> None:
        """Start mosquitto. A port free when it was picked may be taken by another process
        before mosquitto binds it: a first start then picks other ports (a restart keeps its
        own, which the hub under test was given)."""
        log = self.folder / "mosquitto.log"
        for _ in range(5):
            before = log.stat().st_size if log.exists() else 0
            if self._started_on_its_ports():
                self._started = True
                return
            text = log.read_bytes()[before:].decode(errors="replace")  # this start's lines
            assert not self._started and "Address already in use" in text, text
            self.port, self.tls_port = free_port(), free_port()
            self._write_config()
        raise RuntimeError("mosquitto found its ports taken five times")

    def _started_on_its_ports(self) -> bool:
        """Whether mosquitto opened its ports; False if it exited first."""
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "mosquitto.log", "ab"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                for port in (self.port, self.tls_port):
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not open its ports")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Observer:
    """Plays Home Assistant: a separate client on the plain port that records everything."""

    def __init__(self, broker: Broker, user: str = "ha", password: str = "ha-pass") -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ha-{uuid.uuid4()}")
        self.client.username_pw_set(user, password)
        self.connected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        # paho annotates int; it only adds and compares the delays, so a float works.
        self.client.reconnect_delay_set(0.2, 1)  # type: ignore[arg-type]
        self.client.connect_async("127.0.0.1", broker.port)
        self.client.loop_start()
        assert self.connected.wait(10), "observer could not connect"

    def _on_connect(self, client, userdata, flags, code, props) -> None:
        if not code.is_failure:
            client.subscribe([("#", 1)])

    def _on_subscribe(self, client, userdata, mid, codes, props) -> None:
        # Connected for the tests once the broker has confirmed the subscription (SUBACK):
        # a message published after this reaches the observer.
        if codes and not codes[0].is_failure:
            self.connected.set()

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append(Message(message.topic, message.payload, bool(message.retain)))

    def on(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def wait(self, check: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.05)
        pytest.fail(f"timed out waiting for {what or check}; saw {self.summary()}")

    def last(self, topic: str) -> bytes | None:
        found = self.on(topic)
        return found[-1].payload if found else None

    def summary(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return [(m.topic, m.payload[:80]) for m in self.messages[-30:]]

    def publish(self, topic: str, payload: Any, *, retain: bool = False) -> None:
        data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        self.client.publish(topic, data, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Frames:
    """Feeds the door's socket a frame every 0.1 s, as the frame loop does."""

    def __init__(self, door: Door) -> None:
        self.door = door
        self.running = threading.Event()
        self.running.set()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        image = np.full((48, 64, 3), 90, np.uint8)
        index = 0
        while not self._stop.wait(0.1):
            if self.running.is_set():
                index += 1
                self.door.server.offer_frame(image, index)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()


class FedDoor(Door):
    """A door with its Frames feed, which a test can pause."""

    frames: Frames
