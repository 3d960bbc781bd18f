"""The page's connections against clients that hold them (edge_app/web/server.py): a body
must keep arriving, a form's whole body has a short deadline and only a photo upload the
long one; a refused connect costs no TLS layer and writes no line of its own; a closed
connection's TLS layer is freed at once.

The real page on a loopback port with its limits turned down (a body may be idle 0.5 s, a
form takes at most 1.5 s and an upload 4 s), raw sockets (and the ssl module) as clients.
Other loopback addresses (127.0.0.2, ...) stand for other devices. Memory itself is measured
by benchmarks/web_connections.py, not here.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import select
import socket
import ssl
import time
import weakref
from asyncio.sslproto import SSLProtocol
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from web_support import PASSWORD, big_answer, client_context, connect, csrf_of, pages

from edge_app.web import server as web_server
from edge_app.web.server import RefusalLog, WebServer

IDLE_S = 0.5  # no byte of a body for this long: 408
FORM_S = 1.5  # a form's whole body
UPLOAD_S = 4.0  # an upload's whole body
SLACK_S = 1.0  # what a busy test machine may add to a deadline
TRICKLE_S = 0.2  # a trickled body sends a byte this often: never idle
BODY_LIMITS = {
    "BODY_IDLE_S": IDLE_S,
    "FORM_TIMEOUT_S": FORM_S,
    "UPLOAD_TIMEOUT_S": UPLOAD_S,
    "UPLOAD_S_PER_MB": 0.0,  # the upload deadline is UPLOAD_S whatever max_upload_mb
}
SLOW_LOG = "web request too slow"
REFUSED_LOG = "web connection refused"


async def read_late(request: Request) -> Response:
    """Reads the body only after more than the idle deadline: the page is behind, not the
    client (uvicorn stops reading the socket once 64 KiB wait unread)."""
    await asyncio.sleep(2 * IDLE_S)  # within a form's deadline
    return Response(str(len(await request.body())), media_type="text/plain")


BIG = 4 * 1024 * 1024  # /test/big's answer: more than the kernel buffers on loopback


Serve = Callable[..., WebServer]


@pytest.fixture
def serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Serve]:
    """serve(tls=..., NAME=value...): the page with the body limits above, and with
    edge_app.web.server.NAME set to value."""
    with pages(
        tmp_path,
        monkeypatch,
        request,
        [
            Route("/test/read-late", read_late, methods=["POST"]),
            Route("/test/big", big_answer(BIG)),
        ],
        BODY_LIMITS,
    ) as start:
        yield start


def status_of(
    server: WebServer, source: str = "127.0.0.1", context: ssl.SSLContext | None = None
) -> int:
    """The status of GET /login on a new connection from `source` (0: closed unanswered)."""
    try:
        with connect(server, source, context) as sock:
            sock.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            line = sock.makefile("rb").readline()
    except (ssl.SSLError, ConnectionError):
        return 0
    return int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else 0


def answer(sock: socket.socket) -> tuple[int, bytes]:
    """The status and body of the next answer (every answer here has a Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"closed without an answer: {data!r}"
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    assert found, head
    while len(body) < int(found[1]):
        piece = sock.recv(65536)
        assert piece, f"closed inside the answer: {data!r}"
        body += piece
    return int(head.split()[1]), body


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the page ends the connection within `seconds`, sending nothing more."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except (ConnectionResetError, ssl.SSLError):
        return True


def trickle(sock: socket.socket, until: float) -> bool:
    """A body byte every TRICKLE_S until the page answers or closes (True), or `until`."""
    while time.monotonic() < until:
        try:
            sock.sendall(b"x")
        except (BrokenPipeError, ConnectionResetError):
            return True
        if select.select([sock], [], [], TRICKLE_S)[0]:
            return True
    return False


def login_form(server: WebServer, context: ssl.SSLContext | None = None) -> tuple[str, bytes]:
    """The Cookie header and body of a login POST with the login page's own token."""
    with httpx.Client(base_url=server.url, verify=context or False, timeout=10) as client:
        page = client.get("/login")
    name, value = next(
        (cookie.name, cookie.value) for cookie in client.cookies.jar if "login" in cookie.name
    )
    body = str(httpx.QueryParams({"csrf_token": csrf_of(page.text), "password": PASSWORD}))
    return f"{name}={value}", body.encode()


def upload_session(server: WebServer) -> tuple[str, str]:
    """The Cookie header and CSRF token of a logged-in session (plain HTTP)."""
    with httpx.Client(base_url=server.url, timeout=10, follow_redirects=True) as client:
        token = csrf_of(client.get("/login").text)
        client.post("/login", data={"password": PASSWORD, "csrf_token": token})
        token = csrf_of(client.get("/people").text)
        return f"edge_door_session={client.cookies['edge_door_session']}", token


def post_head(path: str, length: int | None, headers: dict[str, str]) -> bytes:
    """A POST's line and headers: `length` bytes of body, or chunked when None."""
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", framing]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def form_request(server: WebServer, kind: str) -> tuple[bytes, bytes]:
    """(head, body start) of a login form or a logged-in photo upload that will not end."""
    if kind == "login":
        cookie, body = login_form(server)
        headers = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
        return post_head("/login", len(body) + 1000, headers), body
    cookie, token = upload_session(server)
    headers = {
        "Cookie": cookie,
        "X-CSRF-Token": token,
        "Content-Type": "multipart/form-data; boundary=b",
    }
    start = b'--b\r\nContent-Disposition: form-data; name="photos"; filename="a.jpg"\r\n\r\n'
    return post_head("/people/enroll", 1_000_000, headers), start


def slow_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(SLOW_LOG)]


def refused_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(REFUSED_LOG)]


# A body that stops


@pytest.mark.parametrize("kind", ["login", "upload"])
def test_a_body_that_stops_arriving_gets_408_at_the_idle_deadline(
    serve: Serve, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """Defect (audit s40 finding 3): a half-sent body was held for the whole body deadline,
    400 s, whether or not any of it kept coming."""
    server = serve()
    head, start = form_request(server, kind)
    with caplog.at_level(logging.WARNING), connect(server) as sock:
        sock.sendall(head + start)
        last = time.monotonic()
        status, body = answer(sock)
        waited = time.monotonic() - last
        assert (status, body) == (408, b"no byte of the request's body arrived for 0.5 s\n")
        assert IDLE_S - 0.05 <= waited <= IDLE_S + SLACK_S, waited
        assert closed_within(sock, SLACK_S)
    assert slow_lines(caplog) == [f"{SLOW_LOG} address=127.0.0.1 part=body idle_s=0.5 held_back=0"]
    assert status_of(server) == 200


def test_a_body_with_pauses_shorter_than_the_idle_deadline_is_read(serve: Serve) -> None:
    server = serve()
    cookie, body = login_form(server)
    headers = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
    with connect(server) as sock:
        sock.sendall(post_head("/login", len(body), headers))
        started = time.monotonic()
        for piece in (body[:5], body[5:20], body[20:40], body[40:]):
            time.sleep(0.6 * IDLE_S)
            sock.sendall(piece)
        assert time.monotonic() - started > 2 * IDLE_S  # longer than the idle deadline in all
        assert answer(sock)[0] == 303  # logged in


def test_a_body_the_page_is_slow_to_read_is_not_cut(serve: Serve) -> None:
    """uvicorn stops reading once 64 KiB wait for the app: that is no client's stall."""
    server = serve()
    body = bytes(4 * 1024 * 1024)  # more than a read of the socket and its buffers
    with connect(server) as sock:
        sock.sendall(post_head("/test/read-late", len(body), {}) + body)
        assert answer(sock) == (200, str(len(body)).encode())


# A body that trickles


@pytest.mark.parametrize("kind", ["login", "upload"])
def test_a_trickled_form_is_cut_at_its_short_deadline_and_an_upload_at_the_long_one(
    serve: Serve, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """Defect (audit s40 finding 3): every body had the upload's deadline, the login form of
    a visitor with no password included."""
    server = serve()
    head, start = form_request(server, kind)
    limit_s = FORM_S if kind == "login" else UPLOAD_S
    with caplog.at_level(logging.WARNING), connect(server) as sock:
        sock.sendall(head + start)
        sent = time.monotonic()
        if kind == "upload":  # past a form's deadline, still read
            assert not trickle(sock, until=sent + FORM_S + SLACK_S), "an upload was cut early"
        assert trickle(sock, until=sent + limit_s + SLACK_S), "no answer while it trickled"
        status, body = answer(sock)
        waited = time.monotonic() - sent
        assert (status, body) == (
            408,
            f"the request's body took longer than {limit_s:g} s\n".encode(),
        )
        assert limit_s - 0.05 <= waited <= limit_s + SLACK_S, waited
        assert closed_within(sock, SLACK_S)
    assert slow_lines(caplog) == [
        f"{SLOW_LOG} address=127.0.0.1 part=body limit_s={limit_s:g} held_back=0"
    ]


def test_an_upload_body_left_after_a_refusal_is_drained_for_a_form_deadline_at_most(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """No session: 403 before the body is read. The rest, trickled, cannot hold the
    connection for an upload's deadline."""
    server = serve()
    head = post_head("/people/enroll", 40_000_000, {"Content-Type": "multipart/form-data"})
    with caplog.at_level(logging.WARNING), connect(server) as sock:
        sock.sendall(head + b"--b\r\n")
        status, body = answer(sock)
        answered = time.monotonic()
        assert status == 403 and b"no session" in body
        assert trickle(sock, until=answered + FORM_S + SLACK_S), "still open past a form's"
        assert closed_within(sock, SLACK_S)  # and no 408 after the 403
        assert time.monotonic() - answered >= FORM_S - 0.05
    assert slow_lines(caplog) == [f"{SLOW_LOG} address=127.0.0.1 part=body limit_s=1.5 held_back=0"]


@pytest.mark.parametrize("how", ["stops", "trickles"])
def test_a_chunk_of_2_to_the_80_bytes_is_cut_like_any_body(
    serve: Serve, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """A chunk size of 20 hex digits (h11's most) announces more than any limit; its bytes
    are judged as they come, like any other body's."""
    server = serve()
    cookie, _ = login_form(server)
    headers = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
    with caplog.at_level(logging.WARNING), connect(server) as sock:
        sock.sendall(post_head("/login", None, headers) + b"ffffffffffffffffffff\r\nabc")
        sent = time.monotonic()
        if how == "trickles":
            assert trickle(sock, until=sent + FORM_S + SLACK_S), "no answer while it trickled"
        status, body = answer(sock)
        waited = time.monotonic() - sent
        assert status == 408, body
        if how == "stops":
            assert body == b"no byte of the request's body arrived for 0.5 s\n"
            assert waited <= IDLE_S + SLACK_S, waited
        else:
            assert body == b"the request's body took longer than 1.5 s\n"
            assert FORM_S - 0.05 <= waited <= FORM_S + SLACK_S, waited
    assert len(slow_lines(caplog)) == 1


@pytest.mark.parametrize("size", [b"zz", b"f" * 21])
def test_a_chunk_size_h11_cannot_read_is_a_400_and_no_traceback(
    serve: Serve, caplog: pytest.LogCaptureFixture, size: bytes
) -> None:
    """Found by fuzzing: a login whose chunk size is not hex (or has more digits than h11
    reads) got uvicorn's 400, and then the page's own answer to the head, sent into the
    closed state machine, logged "Exception in ASGI application" with an h11 traceback: one
    per request, for anyone who can reach the page."""
    server = serve()
    # No login cookie: the page answers the head at once, without reading the body.
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    with caplog.at_level(logging.DEBUG), connect(server) as sock:
        sock.sendall(post_head("/login", None, headers) + size + b"\r\nab\r\n0\r\n\r\n")
        sock.settimeout(5)
        data = b""
        while piece := sock.recv(65536):  # uvicorn's 400 is chunked: read to the close
            data += piece
        assert data.startswith(b"HTTP/1.1 400 "), data
        time.sleep(0.3)  # the page's turn, which raised after the 400
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert status_of(server) == 200  # and the page goes on


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_half_sent_logins_hold_the_page_only_until_the_idle_deadline(
    serve: Serve, certificate: tuple[Path, Path], tls: bool
) -> None:
    """The audit's attack, scaled down: all but one of the connections the page takes are
    logins whose body stops after its first bytes, from 2 addresses, the sockets left open.
    The page answers 503 (over TLS: closes) while they are held, and again once they are
    cut, although the attacker never closes them (nor answers the TLS close)."""
    server = serve(
        tls=tls, MAX_CONNECTIONS=8, PER_ADDRESS_CONNECTIONS=4, TLS_CLOSE_TIMEOUT_S=IDLE_S
    )
    context = client_context(certificate) if tls else None
    cookie, _ = login_form(server, context)
    headers = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
    held: list[socket.socket] = []
    try:
        for source in ["127.0.0.2"] * 4 + ["127.0.0.3"] * 3:
            held.append(connect(server, source, context))
            held[-1].sendall(post_head("/login", 60_000, headers) + b"csrf_token=")
        sent = time.monotonic()
        time.sleep(0.2)
        assert status_of(server, context=context) in (0, 503)  # the 8th: uvicorn's 503
        while status_of(server, context=context) != 200:
            assert time.monotonic() < sent + 2 * IDLE_S + 2 * SLACK_S, "still held"
            time.sleep(0.05)
        for sock in held:  # each was cut with its 408, none closed by the attacker
            assert answer(sock)[0] == 408
    finally:
        for sock in held:
            sock.close()


def test_a_closed_tls_connection_still_delivers_the_end_of_its_answer_to_a_slow_reader(
    serve: Serve, certificate: tuple[Path, Path]
) -> None:
    """The TLS close waits a short while for the client's close_notify, but never cuts bytes
    still leaving: a slow reader of an answer that closes its connection gets all of it."""
    server = serve(tls=True, TLS_CLOSE_TIMEOUT_S=0.2)
    with connect(server, context=client_context(certificate), receive_buffer=4096) as sock:
        sock.sendall(b"GET /test/big HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        started = time.monotonic()
        data = bytearray()
        while piece := sock.recv(65536):  # a TLS record (16 KiB) every 5 ms
            data += piece
            time.sleep(0.005)
        assert time.monotonic() - started > 5 * 0.2  # many times the close wait
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert len(data.partition(b"\r\n\r\n")[2]) > BIG  # all of it (in chunked framing)
    assert data.endswith(b"\r\n0\r\n\r\n")


# Refused connections and the TLS layer


def tls_layers(server: WebServer) -> list[Any]:
    """The page's connections that are still in their TLS handshake."""
    connections = server._uvicorn.server_state.connections
    return [c for c in list(connections) if isinstance(c, SSLProtocol)]


def wait_for(condition: Callable[[], object], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_refused_connect_never_builds_a_tls_layer(
    serve: Serve, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect (audit s40 finding 4): each accepted connect built asyncio's TLS layer (a
    256 KiB buffer) before the caps refused it, so a flood of connects cost memory whether
    refused or not."""
    built: list[int] = []
    original = SSLProtocol.__init__

    def counted(self: SSLProtocol, *args: Any, **kwargs: Any) -> None:
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(SSLProtocol, "__init__", counted)
    server = serve(tls=True, PER_ADDRESS_CONNECTIONS=2)
    held = [connect(server, "127.0.0.2") for _ in range(2)]  # its cap: never a TLS byte
    try:
        wait_for(lambda: len(tls_layers(server)) == 2)
        assert len(built) == 2
        for _ in range(20):
            with connect(server, "127.0.0.2") as refused:
                assert closed_within(refused, 5.0)  # closed at once
        assert len(built) == 2
        assert status_of(server, "127.0.0.3", context=client_context(certificate)) == 200
        assert len(built) == 3
    finally:
        for sock in held:
            sock.close()


def test_the_tls_read_buffer_is_32_kib(serve: Serve) -> None:
    """asyncio's (Python 3.11) is 256 KiB, made for each connection; a TLS record is at most
    16 KiB."""
    server = serve(tls=True)
    with connect(server):
        wait_for(lambda: tls_layers(server))
        [layer] = tls_layers(server)
        assert layer.max_size == 32 * 1024
        assert len(layer._ssl_buffer) == 32 * 1024


@pytest.mark.parametrize("how", ["no handshake", "a request"])
def test_a_closed_tls_connection_is_freed_without_the_cyclic_collector(
    serve: Serve, certificate: tuple[Path, Path], how: str
) -> None:
    """Defect (audit s40 finding 4): the TLS layer and the h11 protocol referred to each
    other, so each closed connection (and its buffer) waited for the cyclic collector, by
    then in an old generation: hundreds of MB after a flood of connects."""
    server = serve(tls=True)
    gc.collect()
    gc.disable()  # from here on only reference counts free anything
    try:
        sock = connect(server)
        wait_for(lambda: tls_layers(server))
        layer = weakref.ref(tls_layers(server)[0])
        http = weakref.ref(layer().http)  # type: ignore[union-attr]
        if how == "a request":
            sock = client_context(certificate).wrap_socket(sock, server_hostname="127.0.0.1")
            sock.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert answer(sock)[0] == 200
            assert not tls_layers(server)  # the h11 protocol took its place
        sock.close()
        del sock
        wait_for(lambda: not server._uvicorn.server_state.connections)
        wait_for(lambda: layer() is None and http() is None, seconds=2.0)
    finally:
        gc.enable()


# Log lines of refused connections


def test_refused_connections_are_logged_once_per_address_then_with_a_count(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect (audit s40 finding 5): every refused connect was a WARNING line of its own,
    6 706 of them in 3 minutes of a flood."""
    server = serve(PER_ADDRESS_CONNECTIONS=2, REFUSAL_LOG_S=3.0)
    held = [connect(server, source) for source in ["127.0.0.2"] * 2 + ["127.0.0.3"] * 2]
    try:
        with caplog.at_level(logging.WARNING):
            time.sleep(0.2)
            started = time.monotonic()
            for _ in range(20):
                with connect(server, "127.0.0.2") as refused:
                    assert b"503 Service Unavailable" in refused.recv(200)
            with connect(server, "127.0.0.3") as refused:
                assert b"503 Service Unavailable" in refused.recv(200)
            assert time.monotonic() - started < 2.0  # all within one period (of 3 s)
            assert refused_lines(caplog) == [
                f"{REFUSED_LOG} address=127.0.0.2 open=2 total=4 held_back=0",
                f"{REFUSED_LOG} address=127.0.0.3 open=2 total=4 held_back=0",
            ]
            time.sleep(max(0.0, started + 3.3 - time.monotonic()))
            with connect(server, "127.0.0.2") as refused:
                assert b"503 Service Unavailable" in refused.recv(200)
        assert refused_lines(caplog)[2:] == [
            f"{REFUSED_LOG} address=127.0.0.2 open=2 total=4 held_back=19"
        ]
    finally:
        for sock in held:
            sock.close()


def test_requests_cut_for_their_pace_or_size_are_logged_once_per_address_then_with_a_count(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect (audit s40, left low): a client sending head after oversized head (or body
    after stalled body) wrote a WARNING line for each, unthrottled, while refused connects
    were already held to one line per address per period."""
    server = serve(REFUSAL_LOG_S=3.0)
    oversized = b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 20_000
    head_log = "web request head too large address={} limit_bytes=16384 held_back={}"

    def cut(source: str) -> None:
        with connect(server, source) as sock:
            sock.sendall(oversized + b"\r\n\r\n")
            assert answer(sock)[0] == 431

    def head_lines() -> list[str]:
        lines = [r.getMessage() for r in caplog.records]
        return [line for line in lines if line.startswith("web request head too large")]

    with caplog.at_level(logging.WARNING):
        started = time.monotonic()
        for _ in range(6):
            cut("127.0.0.2")
        cut("127.0.0.3")  # another address: a line of its own
        assert time.monotonic() - started < 2.0  # all within one period (of 3 s)
        assert head_lines() == [head_log.format("127.0.0.2", 0), head_log.format("127.0.0.3", 0)]
        time.sleep(max(0.0, started + 3.3 - time.monotonic()))
        cut("127.0.0.2")
    assert head_lines()[2:] == [head_log.format("127.0.0.2", 5)]
    assert status_of(server) == 200


def test_requests_answered_503_at_the_cap_are_logged_once_then_with_a_count(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """With the page's last connection taken, uvicorn answers every request 503 and logged a
    line for each: a device holding all but one could write one per request."""
    server = serve(MAX_CONNECTIONS=3, REFUSAL_LOG_S=3.0)
    held = [connect(server, "127.0.0.2") for _ in range(2)]
    try:
        with caplog.at_level(logging.WARNING):
            time.sleep(0.2)
            started = time.monotonic()
            for _ in range(10):
                assert status_of(server) == 503
            assert time.monotonic() - started < 2.0
            time.sleep(max(0.0, started + 3.3 - time.monotonic()))
            assert status_of(server) == 503
        lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.error"]
        assert lines == [
            "Exceeded concurrency limit. held_back=0",
            "Exceeded concurrency limit. held_back=9",
        ]
    finally:
        for sock in held:
            sock.close()


def test_malformed_and_upgrade_requests_are_logged_once_then_with_a_count(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an audit: without a login, a request with two Host headers or an Upgrade
    header made uvicorn log a line each (two for an upgrade, the second advising to install
    a WebSocket library the page does not use): 200 lines a second from one client."""
    server = serve(REFUSAL_LOG_S=3.0)
    malformed = b"GET /login HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
    upgrade = (
        b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )

    def send(request: bytes) -> int:
        with connect(server, "127.0.0.2") as sock:
            sock.sendall(request)
            return int(sock.makefile("rb").readline().split()[1])

    with caplog.at_level(logging.WARNING):
        started = time.monotonic()
        for _ in range(5):
            assert send(malformed) == 400
            assert send(upgrade) == 200  # served as a plain request: the login page
        assert time.monotonic() - started < 2.0
        time.sleep(max(0.0, started + 3.3 - time.monotonic()))
        send(malformed)
        send(upgrade)
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.error"]
    assert lines == [
        "Invalid HTTP request received. held_back=0",
        "Unsupported upgrade request (the page has no WebSocket). held_back=0",
        "Invalid HTTP request received. held_back=4",
        "Unsupported upgrade request (the page has no WebSocket). held_back=4",
    ]
    assert status_of(server) == 200


def test_the_refusal_log_follows_a_bounded_number_of_addresses() -> None:
    now = [0.0]
    refusals = RefusalLog(10.0, addresses=2, clock=lambda: now[0])
    assert refusals.due("a") == 0 and refusals.due("b") == 0  # each one's first
    assert refusals.due("a") is None  # then counted
    # Two addresses followed: the others share one line per 10 s, and one count.
    assert refusals.due("c") == 0
    assert refusals.due("d") is None and refusals.due("c") is None
    now[0] = 5.0
    assert refusals.due("a") is None
    now[0] = 12.0  # "b" is quiet for 10 s: forgotten, to make room for "e"
    assert refusals.due("e") == 0
    assert refusals.due("a") == 2  # its own count
    now[0] = 13.0  # "a" and "e" were refused within 10 s: "f" shares the others' line,
    assert refusals.due("f") == 2  # which says how many of theirs were held back ("c", "d")
    assert refusals.due("f") is None
    now[0] = 25.0
    assert refusals.due("g") == 0  # both quiet: room again
    assert refusals.due("b") == 0  # forgotten: a first line again


def test_the_upload_routes_are_read_from_the_app(serve: Serve) -> None:
    """Only these bodies get the upload's deadline (the paths of app.enrol_new and
    app.enrol_add)."""
    server = serve()
    assert web_server.upload_paths(server.app) == {"/people/enroll", "/people/add"}


@pytest.mark.parametrize("page", ["reads the form", "answered before the body"])
def test_a_body_in_one_byte_chunks_is_refused_once_its_free_pieces_are_used(
    serve: Serve, caplog: pytest.LogCaptureFixture, page: str
) -> None:
    """Found by an audit: a body of 1-byte chunks costs h11 and uvicorn Python work per
    chunk, some 280 times a byte sent whole, and a body the page had answered before reading
    was still drained for the form's deadline: one client without a login held 77% of a
    core and a GET took a second. After BODY_PIECES_FREE pieces averaging under
    MIN_PIECE_BYTES, the body is refused (400) or, once answered, the connection closed."""
    server = serve()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if page == "reads the form":
        headers["Cookie"] = login_form(server)[0]
    pieces = b"1\r\nx\r\n" * (2 * web_server.BODY_PIECES_FREE)
    with caplog.at_level(logging.WARNING), connect(server) as sock:
        if page == "reads the form":
            sock.sendall(post_head("/login", None, headers) + pieces)
            status, body = answer(sock)
            assert status == 400, body
            assert body == b"the request's body came in pieces too small to be read\n"
        else:
            sock.sendall(post_head("/login", None, headers))
            status, body = answer(sock)
            assert status == 403, body  # no login cookie: refused before the body is read
            sock.sendall(pieces)  # what is left of it would be drained
        sock.settimeout(5)
        while sock.recv(65536):  # closed, not drained for the form's deadline
            pass
    assert [r.getMessage() for r in caplog.records if "tiny pieces" in r.getMessage()]
    assert status_of(server) == 200


def test_a_cookie_with_a_backslash_is_not_read() -> None:
    """Found by an audit: Python's cookie unquoting, which Starlette's parser uses, is
    quadratic in a value of escaped quotes before 3.11.10 (CVE-2024-7592): a 16 kB Cookie
    header cost 167 ms of the page's one thread, on every request, with no login. The
    page's cookies never hold a backslash: such a header is dropped before any reads it."""
    from edge_app.web.app import SecurityHeaders

    seen: list[list[tuple[bytes, bytes]]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["headers"])

    hostile = b'a="' + b'\\"' * 8000 + b'"'
    for cookie in (hostile, b"edge_session=abc; other=1"):
        scope = {"type": "http", "path": "/", "headers": [(b"host", b"x"), (b"cookie", cookie)]}
        asyncio.run(SecurityHeaders(app)(scope, None, None))  # type: ignore[arg-type]
    assert seen[0] == [(b"host", b"x")]
    assert seen[1] == [(b"host", b"x"), (b"cookie", b"edge_session=abc; other=1")]
