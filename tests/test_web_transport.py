"""The page's connections against hostile clients (edge_app/web/server.py): a client that
stops reading its responses, TLS handshakes that never finish, request heads too large.

The real page on a loopback port, with the server's limits turned down so that each test
takes a second or two; raw sockets (and the ssl module) are the clients. Other loopback
addresses (127.0.0.2, ...) stand for other devices.
"""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.routing import Route
from test_web import web_config
from web_support import PASSWORD, big_answer, client_context, connect, free_port, pages

from edge_app.web import auth
from edge_app.web import server as web_server
from edge_app.web.server import WebError, WebServer

SLACK_S = 1.5  # what a busy test machine may add to a deadline
HTMX = Path(web_server.__file__).parent / "static" / "htmx.min.js"
GET_HTMX = b"GET /static/htmx.min.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
NOT_READ_LOG = "web response not read"
BIG = 16 * 1024 * 1024  # the size of /test/big's answer: more than any socket buffers


Serve = Callable[..., WebServer]


@pytest.fixture
def serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Serve]:
    """serve(tls=..., NAME=value...): the page, with edge_app.web.server.NAME set to value."""
    with pages(tmp_path, monkeypatch, request, [Route("/test/big", big_answer(BIG))], {}) as start:
        yield start


def status_of(server: WebServer, source: str = "127.0.0.1", **tls: ssl.SSLContext) -> int:
    """The status of GET /login on a new connection from `source`."""
    with connect(server, source, tls.get("context")) as sock:
        sock.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        line = sock.makefile("rb").readline()
    assert line.startswith(b"HTTP/1.1 "), line
    return int(line.split()[1])


def refused_once_accepted(server: WebServer, source: str, context: ssl.SSLContext) -> None:
    """Ask from `source` until the server refuses: the connections opened just before are
    counted once its loop has accepted them, which a loaded machine may delay."""
    deadline = time.monotonic() + 10
    while True:
        try:
            status_of(server, source, context=context)
        except (ssl.SSLError, ConnectionError):
            return
        assert time.monotonic() < deadline, f"{source} still served: the cap did not apply"
        time.sleep(0.05)


def served_once_closed(server: WebServer, source: str, context: ssl.SSLContext) -> int:
    """The status from `source` once the server has seen connections closed just before."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return status_of(server, source, context=context)
        except (ssl.SSLError, ConnectionError):
            assert time.monotonic() < deadline, f"{source} still refused: closed ones counted"
            time.sleep(0.05)


def read_to_end(sock: socket.socket) -> bytes:
    """All the connection gives until it ends (a close or a reset)."""
    data = b""
    try:
        while piece := sock.recv(65536):
            data += piece
    except (ConnectionResetError, ssl.SSLError):
        pass
    return data


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the page ends the connection within `seconds`, sending nothing."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def not_read_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(NOT_READ_LOG)]


# A client that stops reading


def test_connections_that_stop_reading_are_cut_and_the_page_answers_again(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """Requests sent, answers never read: every slot is held, and every request answered 503,
    until the write deadline frees them."""
    stall_s = 1.0
    server = serve(WRITE_STALL_S=stall_s, MAX_CONNECTIONS=8, PER_ADDRESS_CONNECTIONS=4)
    held: list[socket.socket] = []
    try:
        with caplog.at_level(logging.WARNING):
            for source in ["127.0.0.2"] * 4 + ["127.0.0.3"] * 3:  # 7 of the 8
                held.append(connect(server, source, receive_buffer=4096))
                held[-1].sendall(b"GET /test/big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            sent = time.monotonic()
            time.sleep(0.3)  # the page writes until their buffers are full, then waits
            # Held: with the 8th (this request's) open, uvicorn answers 503.
            assert status_of(server) == 503
            while status_of(server) != 200:
                assert time.monotonic() < sent + 1.25 * stall_s + SLACK_S, "still held"
                time.sleep(0.05)
            assert time.monotonic() - sent >= stall_s - 0.05
            time.sleep(0.2)
        # 7 cut together: one line per address, the rest held back for its next line.
        lines = not_read_lines(caplog)
        assert sorted(line.split()[4] for line in lines) == [
            "address=127.0.0.2",
            "address=127.0.0.3",
        ], lines
        assert all(line.endswith(" limit_s=1 held_back=0") for line in lines), lines
        for sock in held:  # what each was sent before the cut, then the end
            assert len(read_to_end(sock)) < BIG / 2
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_response_not_read_is_cut_but_a_slow_reader_gets_it_all(
    serve: Serve, certificate: tuple[Path, Path], caplog: pytest.LogCaptureFixture, tls: bool
) -> None:
    stall_s = 0.5
    server = serve(tls=tls, WRITE_STALL_S=stall_s)
    context = client_context(certificate) if tls else None
    whole = HTMX.stat().st_size
    stalled = connect(server, "127.0.0.2", context, receive_buffer=4096)
    slow = connect(server, "127.0.0.3", context, receive_buffer=8192)
    try:
        with caplog.at_level(logging.WARNING):
            stalled.sendall(GET_HTMX * 100)
            slow.sendall(GET_HTMX * 5 + b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            started = time.monotonic()
            # 16 KiB every 0.1 s: slower than the page sends, never still for the deadline.
            answer = b""
            while answer.count(b"HTTP/1.1 200 OK") < 6:
                piece = slow.recv(16384)
                assert piece, f"the slow reader was cut after {len(answer)} bytes"
                answer += piece
                time.sleep(0.1)
            took = time.monotonic() - started
            assert took > 2 * stall_s, took  # it did outlast the deadline, several times over
            assert answer.count(HTMX.read_bytes()) == 5
            # The one that never read was cut, and freed.
            time.sleep(max(0.0, started + 1.25 * stall_s + SLACK_S - time.monotonic()))
            assert len(read_to_end(stalled)) < 100 * whole / 2
        [line] = not_read_lines(caplog)
        assert line.startswith(f"{NOT_READ_LOG} address=127.0.0.2 waiting_bytes="), line
        assert line.endswith(" limit_s=0.5 held_back=0"), line
    finally:
        stalled.close()
        slow.close()


# TLS handshakes


@pytest.mark.parametrize(
    "sends", [b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"], ids=["silent", "half a hello"]
)
def test_a_tls_handshake_that_never_ends_is_closed_at_its_deadline(
    serve: Serve, sends: bytes
) -> None:
    """Nothing at all, or the first bytes of a ClientHello and then nothing."""
    handshake_s = 0.5
    server = serve(tls=True, TLS_HANDSHAKE_TIMEOUT_S=handshake_s)
    with connect(server) as sock:
        opened = time.monotonic()
        sock.sendall(sends)
        assert closed_within(sock, handshake_s + SLACK_S), "still open past the deadline"
        assert time.monotonic() - opened >= handshake_s - 0.05


def test_tls_handshakes_in_progress_count_against_the_connection_caps(
    serve: Serve, certificate: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(tls=True, MAX_CONNECTIONS=6, PER_ADDRESS_CONNECTIONS=4)
    context = client_context(certificate)
    half_open: list[socket.socket] = []
    try:
        with caplog.at_level(logging.WARNING):
            # 4 connections from one address that never begin their handshake: its cap.
            half_open += [connect(server) for _ in range(4)]
            refused_once_accepted(server, "127.0.0.1", context)
            assert "web connection refused address=127.0.0.1 open=4 total=4" in caplog.text
            # Another device is served; then 2 more half-open ones fill the page's 6.
            assert status_of(server, "127.0.0.2", context=context) == 200
            half_open += [connect(server, "127.0.0.3") for _ in range(2)]
            refused_once_accepted(server, "127.0.0.4", context)
            assert "web connection refused address=127.0.0.4 open=0 total=6" in caplog.text
        # Once they go, both are served again (once the server has seen them go).
        for sock in half_open:
            sock.close()
        assert served_once_closed(server, "127.0.0.1", context) == 200
        assert status_of(server, "127.0.0.4", context=context) == 200
    finally:
        for sock in half_open:
            sock.close()


def test_a_certificate_with_another_key_is_refused_in_one_line(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    """TLS is set up before anything listens: a pair that does not match is a config error."""
    other = tmp_path / "other-key.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
        + ["-out", str(other)],
        check=True,
        capture_output=True,
    )
    config = web_config(tmp_path, free_port(), tls_cert=str(certificate[0]), tls_key=str(other))
    auth.write_password_file(config.web.password_file, PASSWORD)
    with pytest.raises(WebError) as refused:
        WebServer(config, socket_path=tmp_path / "absent-door.sock")
    message = str(refused.value)
    assert message.startswith(
        f"web.tls_cert, web.tls_key: {certificate[0]} and {other} are not a PEM certificate "
        "and its private key ("
    )
    assert "\n" not in message


# Request heads


def head_of(size: int) -> bytes:
    """A GET /login whose line and headers are `size` bytes in all."""
    start = b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: "
    end = b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


@pytest.mark.parametrize("how", ["one read", "in pieces", "pipelined"])
def test_a_request_head_over_16_kib_gets_431_and_the_connection_closes(
    serve: Serve, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    server = serve()
    limit = web_server.MAX_HEAD_BYTES
    assert limit == 16 * 1024
    with connect(server) as sock:  # a head of exactly the limit is served
        sock.sendall(head_of(limit))
        assert sock.makefile("rb").readline() == b"HTTP/1.1 200 OK\r\n"
    with caplog.at_level(logging.WARNING), connect(server) as sock:
        if how == "one read":
            sock.sendall(head_of(limit + 1))
        elif how == "in pieces":  # a header of 1 KiB at a time, and the head never ends
            sock.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            for _ in range(limit // 1024 + 1):
                sock.sendall(b"X-Pad: " + b"a" * 1015 + b"\r\n")
                time.sleep(0.01)
        else:  # a whole request and, right behind it, one with a head of 64 KiB
            sock.sendall(head_of(limit) + head_of(64 * 1024))
        answer = read_to_end(sock)
    if how == "pipelined":
        first, _, answer = answer.partition(b"HTTP/1.1 431")
        assert first.startswith(b"HTTP/1.1 200 OK\r\n") and answer, first[:200]
        answer = b"HTTP/1.1 431" + answer
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:200]
    assert answer.endswith(b"\r\n\r\nthe request's line and headers are over 16384 bytes\n")
    assert "web request head too large address=127.0.0.1 limit_bytes=16384" in caplog.text
    assert status_of(server) == 200


# --- binding -----------------------------------------------------------------------------


def test_a_port_in_use_is_refused_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect: a port in use gave "cannot serve on http://127.0.0.1:8080 (3); is the port in
    use?" after uvicorn's own ERROR line: a bare exit code, a guess, two messages. The page
    now binds its sockets itself, before any thread starts, and says what is wrong."""
    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    config = web_config(tmp_path, port)
    auth.write_password_file(config.web.password_file, PASSWORD)
    server = WebServer(config, socket_path=tmp_path / "absent-door.sock")
    with holder, caplog.at_level(logging.INFO), pytest.raises(WebError) as refused:
        server.start()
    assert str(refused.value) == (
        f"web.listen: cannot listen on 127.0.0.1:{port}: another program listens there "
        f"(`sudo ss -ltnp 'sport = :{port}'` names it); stop it, or set another port in "
        "web.listen"
    )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert server._thread is None  # nothing was started


def test_an_address_not_on_this_machine_is_refused(tmp_path: Path) -> None:
    """192.0.2.1 (TEST-NET-1) is on no interface here: the kernel's reason, named."""
    config = web_config(tmp_path, free_port(), listen=f"192.0.2.1:{free_port()}")
    auth.write_password_file(config.web.password_file, PASSWORD)
    server = WebServer(config, socket_path=tmp_path / "absent-door.sock")
    with pytest.raises(WebError, match=r"cannot listen on 192\.0\.2\.1:\d+: Cannot assign"):
        server.start()


def test_a_host_name_is_served_on_each_of_its_addresses(tmp_path: Path) -> None:
    """`localhost` is 127.0.0.1 and, where IPv6 is on, ::1: both answer, as with asyncio's
    own binding."""
    port = free_port()
    config = web_config(tmp_path, port, listen=f"localhost:{port}")
    auth.write_password_file(config.web.password_file, PASSWORD)
    server = WebServer(config, socket_path=tmp_path / "absent-door.sock")
    server.start()
    try:
        families = {
            info[0] for info in socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM)
        }
        for family in families:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(("::1" if family == socket.AF_INET6 else "127.0.0.1", port))
                sock.sendall(GET_HTMX.replace(b"127.0.0.1", b"localhost"))
                assert sock.recv(12) == b"HTTP/1.1 200", family
    finally:
        server.stop()
