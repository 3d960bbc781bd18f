"""One deadline per exchange on the control socket, however the other end trickles its bytes.

A timeout per `recv` let a peer that sends a byte now and then hold an exchange for as long as
it liked: on the door's side a client slot (and, with MAX_CLIENTS of them, the hub's requests),
on the hub's side its status poll, unlock or event-stream thread. Here the deadline is cut to
a fraction of a second (the constant is read when used), and real sockets carry the bytes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_control import raw, read_line, wait_for

from edge_app import control
from edge_app.control import ControlClient, ControlError, ControlServer
from edge_app.hub import door as hub_door
from edge_app.hub.door import DoorLink

DEADLINE = 0.5  # REQUEST_SECONDS in these tests
SLACK = 0.5  # scheduling on a loaded test machine
TRICKLE = 0.05  # seconds between bytes: each recv gets one well within any per-recv timeout
STATUS = b'{"v": 1, "op": "status"}\n'


class StubDoor:
    """The DoorPort the server asks; these tests are about the socket, not the daemon."""

    def status(self) -> dict[str, Any]:
        return {"source": "stub"}

    def reload(self) -> None:
        pass

    def reloads(self) -> bool:
        return True

    def unlock_allowed(self) -> bool:
        return False

    def unlock(self, reason: str, origin: str) -> float:
        raise AssertionError("never allowed")


@pytest.fixture
def short(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(control, "REQUEST_SECONDS", DEADLINE)
    return DEADLINE


@pytest.fixture
def server(tmp_path: Path, short: float) -> Iterator[ControlServer]:
    server = ControlServer(tmp_path / "run" / "door.sock", StubDoor())
    server.start()
    yield server
    server.close()


def read_to_end(sock: socket.socket) -> bytes:
    """Everything until the server closes (ConnectionResetError counts as closed)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(1 << 20):
            data += chunk
    return data


class Trickler:
    """Sends `data` one byte per TRICKLE seconds on its own thread until the peer closes."""

    def __init__(self, sock: socket.socket, data: bytes) -> None:
        self.sock = sock
        self.data = data
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with contextlib.suppress(OSError):
            for byte in self.data:
                if self.stop.wait(TRICKLE):
                    return
                self.sock.send(bytes([byte]))
                self.sent += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)


# --- the door's side --------------------------------------------------------------------------


def test_a_trickling_client_is_cut_off_at_the_deadline_and_others_are_served_meanwhile(
    server: ControlServer, caplog: pytest.LogCaptureFixture
) -> None:
    padded = b'{"v": 1, "op": "status", "pad": "' + b"x" * 100 + b'"}\n'  # 5 s at TRICKLE
    with caplog.at_level(logging.DEBUG, logger="edge_app.control"), raw(server.path) as slow:
        start = time.monotonic()
        trickler = Trickler(slow, padded)
        try:
            time.sleep(0.15)  # the slow request is under way
            asked = time.monotonic()
            assert ControlClient(server.path, timeout=2.0).status()["source"] == "stub"
            # Not queued behind the trickler, which would take it to the deadline (0.35 s on).
            assert time.monotonic() - asked < DEADLINE / 2
            reply = read_line(slow)
            cut = time.monotonic() - start
            assert reply == {
                "v": 1,
                "ok": False,
                "error": f"no complete request within {DEADLINE:g} s",
            }
            assert read_to_end(slow) == b""  # closed
        finally:
            trickler.close()
    assert DEADLINE - 0.05 <= cut <= DEADLINE + SLACK
    assert 0 < trickler.sent < len(padded)  # it was still sending when it was cut off
    assert ControlClient(server.path, timeout=2.0).status()["clients"] == 1  # only this one
    assert not [r for r in caplog.records if r.exc_info]  # refused, not crashed


def test_a_client_that_connects_and_says_nothing_is_closed_at_the_deadline(
    server: ControlServer,
) -> None:
    with raw(server.path) as silent:
        start = time.monotonic()
        reply = read_line(silent)
        waited = time.monotonic() - start
        assert reply["ok"] is False and reply["error"] == "no complete request within 0.5 s"
        assert read_to_end(silent) == b""
    assert DEADLINE - 0.05 <= waited <= DEADLINE + SLACK


def test_an_idle_connection_between_requests_keeps_the_idle_limit(
    server: ControlServer,
) -> None:
    """The deadline is per exchange: a client that asked, got its answer and waits is idle
    (IDLE_SECONDS), and its next request is served on the same connection."""
    with raw(server.path) as sock:
        sock.sendall(STATUS)
        assert read_line(sock)["ok"] is True
        time.sleep(DEADLINE + 0.3)
        sock.sendall(STATUS)
        assert read_line(sock)["ok"] is True


def test_tricklers_in_every_slot_hold_the_door_only_until_the_deadline(
    server: ControlServer,
) -> None:
    """With MAX_CLIENTS tricklers the hub is refused ("too many clients"); before the deadline
    they held every slot for ever. The frame loop's calls stay instant throughout."""
    start = time.monotonic()  # before the first connects: its deadline runs from there
    held = [raw(server.path) for _ in range(control.MAX_CLIENTS)]
    try:
        wait_for(lambda: len(server._clients) == control.MAX_CLIENTS)
        hub = ControlClient(server.path, timeout=2.0)
        with pytest.raises(ControlError, match="too many clients"):
            hub.status()
        frame = np.zeros((480, 640, 3), np.uint8)
        for index in range(4):  # trickle on every slot; the door's side never waits
            for sock in held:
                sock.send(b"{" if index == 0 else b" ")
            begun = time.monotonic()
            server.publish({"type": "unknown", "track": index})
            server.offer_frame(frame, index)
            # Never waits for a client: that would be a TRICKLE or more, up to the deadline.
            assert time.monotonic() - begun < TRICKLE
            time.sleep(TRICKLE)
        served: list[float] = []

        def ask() -> bool:
            with contextlib.suppress(ControlError):
                served.append(time.monotonic() - start)
                return hub.status()["running"] is True
            return False

        wait_for(ask, timeout=DEADLINE + SLACK + 1)
        assert DEADLINE - 0.05 <= served[-1] <= DEADLINE + SLACK
        for sock in held:
            reply = read_line(sock)
            assert reply["error"] == f"no complete request within {DEADLINE:g} s"
    finally:
        for sock in held:
            sock.close()


def test_a_client_that_does_not_read_its_reply_is_dropped_at_the_deadline(
    server: ControlServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Four frames (about 1.1 MB) do not fit in the socket's buffer; unread, they held a slot
    until IDLE_SECONDS (60 s)."""
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    server.offer_frame(noise, 1)
    with caplog.at_level(logging.INFO, logger="edge_app.control"), raw(server.path) as sock:
        start = time.monotonic()
        sock.sendall(b'{"v": 1, "op": "frame"}\n' * 4)
        wait_for(lambda: any(c.outbox for c in list(server._clients.values())), timeout=1)
        wait_for(lambda: not server._clients, timeout=DEADLINE + SLACK + 0.5)
        dropped = time.monotonic() - start
    assert DEADLINE - 0.05 <= dropped <= DEADLINE + SLACK
    assert f"reply not read within {DEADLINE:g} s" in caplog.text
    assert "too slow" not in caplog.text  # the deadline, not the output bound


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"\x81\xfe\xff\n", "not UTF-8 text"),
        (b"GET / HTTP/1.1\r\n", "not JSON"),
        (b"\x00" * 10 + b"\n", "not JSON"),  # NULs are UTF-8 (json.loads guessed UTF-32)
    ],
)
def test_bad_lines_are_refused_without_a_traceback(
    server: ControlServer, caplog: pytest.LogCaptureFixture, payload: bytes, error: str
) -> None:
    with caplog.at_level(logging.DEBUG, logger="edge_app.control"), raw(server.path) as sock:
        sock.sendall(payload)
        reply = read_line(sock)
        assert reply["ok"] is False and error in reply["error"]
        sock.sendall(STATUS)  # the connection is still usable
        assert read_line(sock)["ok"] is True
    assert not [r for r in caplog.records if r.exc_info]
    assert server._thread is not None and server._thread.is_alive()


def test_the_socket_is_unix_only_and_never_more_open_than_0660(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a umask of 0 and no chmod after bind, the socket file is still 0660: it is made
    with that mode, so no other user can connect in the moment before the chmod."""
    monkeypatch.setattr(control.os, "chmod", lambda *args, **kwargs: None)
    old = os.umask(0)
    try:
        server = ControlServer(tmp_path / "run" / "door.sock", StubDoor())
        server.start()
    finally:
        os.umask(old)
    try:
        info = os.stat(server.path)
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o660
        assert server._listener is not None and server._listener.family == socket.AF_UNIX
        assert {server._wake_r.family, server._wake_w.family} == {socket.AF_UNIX}
    finally:
        server.close()


def test_running_out_of_descriptors_does_not_end_the_server(
    server: ControlServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """accept() failing with EMFILE ended the server thread (a traceback, then a socket that
    accepts connections in its backlog and never answers): the hub saw a hung door."""
    real = socket.socket.accept
    failures = [errno.EMFILE] * 3

    def accept(self: socket.socket) -> tuple[socket.socket, Any]:
        if failures:
            raise OSError(failures.pop(), os.strerror(errno.EMFILE))
        return real(self)

    monkeypatch.setattr(socket.socket, "accept", accept)
    with caplog.at_level(logging.DEBUG, logger="edge_app.control"):
        status = ControlClient(server.path, timeout=2.0).status()
    assert status["running"] is True and not failures
    warnings = [r for r in caplog.records if "not accepted" in r.getMessage()]
    assert len(warnings) == 1  # three failures, one line: not a line per retry
    assert not [r for r in caplog.records if r.exc_info]
    assert server._thread is not None and server._thread.is_alive()


# --- the hub's side ---------------------------------------------------------------------------


class TricklingDoor:
    """A listener at the door's path that reads one request line, then sends `head` at once
    and `tail` a byte per TRICKLE seconds, then a newline: a complete line only after
    len(tail) * TRICKLE seconds (3 s here), long after the client's deadline."""

    def __init__(self, path: Path, head: bytes, tail: bytes = b"x" * 60) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.head, self.tail = head, tail
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.stop = threading.Event()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while not self.stop.is_set():
                conn, _ = self.listener.accept()
                self.conns.append(conn)
                threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            data = b""
            while not data.endswith(b"\n"):
                data += conn.recv(4096)
            conn.sendall(self.head)
            for byte in self.tail:
                if self.stop.wait(TRICKLE):
                    return
                conn.send(bytes([byte]))
            conn.sendall(b'"}}\n')

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for conn in self.conns:
            conn.close()
        self.thread.join(timeout=2)


def test_a_trickling_reply_makes_the_client_give_up_at_its_deadline(tmp_path: Path) -> None:
    path = tmp_path / "door.sock"
    fake = TricklingDoor(path, b'{"v": 1, "ok": true, "status": {"pad": "')
    try:
        start = time.monotonic()
        with pytest.raises(ControlError, match=r"did not answer in time \(no complete reply"):
            ControlClient(path, timeout=DEADLINE).status()
        assert DEADLINE - 0.05 <= time.monotonic() - start <= DEADLINE + SLACK
    finally:
        fake.close()


def test_a_trickling_event_stream_counts_as_silent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each line of the stream must be complete within 3 keepalive periods (0.3 s here), or
    the client's timeout if longer: trickled bytes do not keep it open."""
    monkeypatch.setattr(control, "KEEPALIVE_SECONDS", 0.1)
    path = tmp_path / "door.sock"
    head = (
        b'{"v": 1, "ok": true, "subscribed": true}\n{"v": 1, "ok": true, "type": "x", "p": {"q": "'
    )
    fake = TricklingDoor(path, head)
    client = ControlClient(path, timeout=DEADLINE)
    try:
        start = time.monotonic()
        with pytest.raises(ControlError, match="did not answer in time"):
            next(iter(client.events()))
        assert DEADLINE - 0.05 <= time.monotonic() - start <= DEADLINE + SLACK
    finally:
        client.close()
        fake.close()


def test_the_hubs_status_poll_is_not_held_by_a_trickling_door(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DoorLink.check (the hub's poll thread, and so MQTT availability) reports the door
    unhealthy at the request timeout instead of waiting out the trickle."""
    monkeypatch.setattr(hub_door, "REQUEST_TIMEOUT", DEADLINE)
    path = tmp_path / "door.sock"
    fake = TricklingDoor(path, b'{"v": 1, "ok": true, "status": {"pad": "')
    try:
        start = time.monotonic()
        health = DoorLink(path).check()
        assert DEADLINE - 0.05 <= time.monotonic() - start <= DEADLINE + SLACK
        assert not health.reachable and health.error is not None
        assert "did not answer in time" in health.error
    finally:
        fake.close()


def test_a_refusal_sent_before_the_request_was_read_is_what_the_client_reports(
    tmp_path: Path,
) -> None:
    """A door that refuses a connection answers and closes without reading the request; the
    client then meets a broken pipe, but the reason it reports is the door's."""
    path = tmp_path / "door.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def refuse() -> None:
        conn, _ = listener.accept()
        conn.sendall(b'{"v": 1, "ok": false, "error": "too many clients"}\n')
        conn.close()  # before reading anything

    thread = threading.Thread(target=refuse)
    thread.start()
    try:
        client = ControlClient(path, timeout=2.0)
        # A request larger than the socket buffers, so that the send meets the close.
        with pytest.raises(ControlError, match="door refused unlock: too many clients"):
            client.unlock("x" * 200, "o" * 200 + "?" * 4_000_000)
    finally:
        thread.join(timeout=5)
        listener.close()


class _SlowRelayDoor(StubDoor):
    """Unlocks allowed; the relay takes a second to answer; records what it did."""

    def __init__(self) -> None:
        self.unlocked: list[str] = []

    def unlock_allowed(self) -> bool:
        return True

    def unlock(self, reason: str, origin: str) -> float:
        time.sleep(1.0)
        self.unlocked.append(origin)
        return 1.0


def test_a_request_the_stopping_door_never_read_is_not_unanswered(tmp_path: Path) -> None:
    """Found by a review: the door stops while a slow unlock is carried out; close() waits for
    it with the listening socket still open and nobody accepting. A hub command sent then is
    taken into the backlog, and reset when the listener closes: the door never read it (it
    did not open), yet the client raised Unanswered, so the hub published no refusal and
    logged 'the door may have opened'."""
    import threading

    from edge_app.control import ControlClient, ControlError, Unanswered

    door = _SlowRelayDoor()
    server = ControlServer(tmp_path / "run" / "door.sock", door)
    server.start()
    first = threading.Thread(
        target=lambda: ControlClient(server.path, timeout=3).unlock("r", "first")
    )
    first.start()
    time.sleep(0.3)  # the first unlock is being carried out
    closing = threading.Thread(target=server.close)
    closing.start()
    time.sleep(0.2)  # the server thread has stopped; close() waits for the relay
    second: ControlError | None = None
    try:
        ControlClient(server.path, timeout=3).unlock("r", "second")
    except ControlError as error:
        second = error
    closing.join()
    first.join()
    assert [o.split()[0] for o in door.unlocked] == ["first"]  # the second: never carried out
    assert second is not None
    assert not isinstance(second, Unanswered), second
