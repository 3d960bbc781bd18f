"""The deadline for a request's body (edge_app/web/server.py): once its headers are in, the
whole body must arrive within the deadline, or the connection ends (408 when nothing was
answered yet), with one log line and no traceback. A prompt body, a keep-alive connection
and a response that takes longer than the deadline are untouched.

The real page on a loopback port with a 1 s body deadline, for a form and an upload alike
(their own deadlines, and the one for a body that stops, are in test_web_server_limits.py);
raw sockets are the clients, with h11 (uvicorn's own HTTP parser) writing the requests and
reading the answers.
"""

from __future__ import annotations

import asyncio
import html
import logging
import select
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import h11
import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from test_web import Site, _multipart, _read_all, add_person, web_config
from web_support import PASSWORD, csrf_of, free_port

from edge_app.web import auth
from edge_app.web import server as web_server
from edge_app.web.server import WebServer

BODY_S = 1.0  # the body deadline of the page served here
SLACK_S = 1.0  # what a busy test machine may add to it
TRICKLE_S = 0.25  # a trickled body sends a byte this often: never idle, never done in time
LINES = 8  # the slow test answers: a line every BODY_S / 4, twice the deadline in all
SLOW_LOG = "web request too slow"


async def _slow_lines() -> AsyncIterator[bytes]:
    for number in range(LINES):
        yield f"line {number}\n".encode()
        await asyncio.sleep(BODY_S / 4)


async def slow_answer(request: Request) -> Response:
    """Reads the whole body, then answers over twice the body deadline."""
    await request.body()
    return StreamingResponse(_slow_lines(), media_type="text/plain")


async def answer_first(request: Request) -> Response:
    """Answers over twice the body deadline without waiting for the body."""
    return StreamingResponse(_slow_lines(), media_type="text/plain")


SLOW_TEXT = b"".join(f"line {number}\n".encode() for number in range(LINES))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("web-body")
    config = web_config(folder, free_port())
    auth.write_password_file(config.web.password_file, PASSWORD)
    # Every cut logged (none held back as a repeat): each test reads its own cut's line.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(web_server, "REFUSAL_LOG_S", 0.0)
        server = WebServer(
            config,
            socket_path=folder / "absent-door.sock",
            upload_timeout_s=BODY_S,  # a form's and an upload's: the same here
            form_timeout_s=BODY_S,
        )
    # The page writes each of its answers at once; these two take their time.
    server.app.router.routes[:0] = [
        Route("/test/slow-answer", slow_answer, methods=["POST"]),
        Route("/test/answer-first", answer_first, methods=["POST"]),
    ]
    server.start()
    try:
        yield Site(server.url, config, server, folder)
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def fresh_limits(site: Site) -> None:
    site.reset_limits()


class Raw:
    """One connection to the page, driven a step at a time."""

    def __init__(self, site: Site) -> None:
        self.sock = socket.create_connection((site.server.host, site.server.port), timeout=10)
        self.http = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        self.sock.close()

    def head(self, path: str, length: int, headers: dict[str, str]) -> float:
        """A POST's line and headers; returns when they were sent."""
        fields = [("Host", "127.0.0.1"), ("Content-Length", str(length)), *headers.items()]
        self.sock.sendall(self.http.send(h11.Request(method="POST", target=path, headers=fields)))
        return time.monotonic()

    def body(self, data: bytes) -> None:
        self.sock.sendall(self.http.send(h11.Data(data=data)))

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """A whole request at once, and its answer."""
        if self.http.our_state is h11.DONE:
            self.http.start_next_cycle()
        self.head(path, len(body), headers)
        self.body(body)
        self.sock.sendall(self.http.send(h11.EndOfMessage()))
        return self.answer()

    def trickle(self, until: float) -> bool:
        """A body byte every TRICKLE_S until the page answers or closes (True), or `until`."""
        while time.monotonic() < until:
            self.body(b"x")
            if select.select([self.sock], [], [], TRICKLE_S)[0]:
                return True
        return False

    def answer(self) -> tuple[int, bytes]:
        """The status and body of the next answer."""
        status, body = 0, b""
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                self.http.receive_data(self.sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, body
            elif isinstance(event, h11.ConnectionClosed):
                raise AssertionError(f"closed before the answer ended (status {status})")

    def closed_within(self, seconds: float) -> bool:
        """Whether the page closes the connection within `seconds`, sending nothing more."""
        self.sock.settimeout(seconds)
        try:
            return _read_all(self.sock) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True


def login_session(site: Site) -> tuple[dict[str, str], bytes]:
    """The headers and body of a login POST with the login page's own token."""
    with site.client() as anonymous:
        token = csrf_of(anonymous.get("/login").text)
        cookie = anonymous.cookies["edge_door_login"]
    form = httpx.QueryParams({"csrf_token": token, "password": PASSWORD})
    headers = {
        "Cookie": f"edge_door_login={cookie}",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return headers, str(form).encode()


def upload_start(site: Site) -> tuple[dict[str, str], bytes]:
    """The headers of a logged-in photo upload, and the body up to the photo's bytes."""
    with site.client() as user:
        site.login(user)
        token = site.token(user)
        cookie = user.cookies["edge_door_session"]
    headers = {
        "Cookie": f"edge_door_session={cookie}",
        "X-CSRF-Token": token,
        "Content-Type": "multipart/form-data; boundary=b",
    }
    start = b'--b\r\nContent-Disposition: form-data; name="photos"; filename="a.jpg"\r\n\r\n'
    return headers, start


def slow_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(SLOW_LOG)]


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    messages = [(r.getMessage(), r.exc_info) for r in caplog.records]
    return [text for text, exc_info in messages if exc_info or "Exception in ASGI" in text]


@pytest.mark.parametrize("form", ["login", "upload"])
def test_a_trickled_body_gets_408_and_the_connection_closes(
    site: Site, caplog: pytest.LogCaptureFixture, form: str
) -> None:
    if form == "login":
        headers, start = login_session(site)
        path = "/login"
    else:
        headers, start = upload_start(site)
        path = "/people/enroll"
    raw = Raw(site)
    try:
        with caplog.at_level(logging.WARNING):
            sent = raw.head(path, len(start) + 1000, headers)
            raw.body(start)
            assert raw.trickle(until=sent + BODY_S + SLACK_S), "no answer while the body trickled"
            status, body = raw.answer()
            waited = time.monotonic() - sent
            assert status == 408, body
            assert body == f"the request's body took longer than {BODY_S:g} s\n".encode()
            assert BODY_S - 0.05 <= waited <= BODY_S + SLACK_S, waited
            assert raw.closed_within(SLACK_S)
            time.sleep(0.1)  # the page sees the client gone; it must not log a traceback
        [line] = slow_records(caplog)
        assert (
            line.getMessage()
            == "web request too slow address=127.0.0.1 part=body limit_s=1 held_back=0"
        )
        assert not tracebacks(caplog), tracebacks(caplog)
    finally:
        raw.close()
    with site.client() as client:  # the page answers as before
        assert client.get("/login").status_code == 200


def test_a_body_trickled_after_an_early_answer_is_cut_at_the_deadline(site: Site) -> None:
    raw = Raw(site)
    try:  # no session: 403 before the body is read
        sent = raw.head("/login", 1000, {"Content-Type": "application/x-www-form-urlencoded"})
        raw.body(b"password=")
        status, body = raw.answer()
        assert status == 403 and b"no session" in body
        # The rest of the body keeps coming, a byte at a time: it cannot hold the connection.
        assert raw.trickle(until=sent + BODY_S + SLACK_S), "still open past the body deadline"
        assert raw.closed_within(SLACK_S)  # closed, and no second answer (a 408) after the 403
        assert time.monotonic() - sent >= BODY_S - 0.05
    finally:
        raw.close()


def test_a_prompt_login_and_upload_are_processed(site: Site) -> None:
    headers, form = login_session(site)
    raw = Raw(site)
    try:  # a body in pieces, the last well inside the deadline
        raw.head("/login", len(form), headers)
        pieces = [form[:5], form[5:20], form[20:]]
        for piece in pieces:
            raw.body(piece)
            time.sleep(BODY_S / 5)
        raw.sock.sendall(raw.http.send(h11.EndOfMessage()))
        status, _ = raw.answer()
        assert status == 303  # logged in
    finally:
        raw.close()

    db = Path(site.config.gallery.path)
    if not db.exists():
        add_person(db, "Already Here")
    photo = b"\xff\xd8" + bytes(3_000_000)  # a 3 MB upload, read whole before the handler runs
    with site.client() as user:
        site.login(user)
        reply = user.post(
            "/people/enroll", **_multipart("Already Here", [("a.jpg", photo)], site.token(user))
        )
    assert reply.status_code == 422
    assert "'Already Here' is already enrolled" in html.unescape(reply.text)


def test_a_keep_alive_connection_times_each_body_from_its_own_headers(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    raw = Raw(site)
    try:
        first = time.monotonic()
        headers, form = login_session(site)
        assert raw.post("/login", form, headers)[0] == 303
        # The next request on the connection comes after the first one's deadline has passed.
        time.sleep(max(0.0, first + BODY_S + 0.2 - time.monotonic()))
        headers, form = login_session(site)
        assert raw.post("/login", form, headers)[0] == 303
        # A third one that trickles gets its own deadline, counted from its own headers.
        raw.http.start_next_cycle()
        headers, form = login_session(site)
        with caplog.at_level(logging.WARNING):
            sent = raw.head("/login", len(form) + 1000, headers)
            raw.body(form)
            assert raw.trickle(until=sent + BODY_S + SLACK_S), "no answer while the body trickled"
            status, body = raw.answer()
            assert status == 408 and b"body took longer than 1 s" in body
            assert BODY_S - 0.05 <= time.monotonic() - sent <= BODY_S + SLACK_S
            assert raw.closed_within(SLACK_S)
        assert len(slow_records(caplog)) == 1
    finally:
        raw.close()


def test_an_answer_longer_than_the_deadline_is_not_cut(site: Site) -> None:
    raw = Raw(site)
    try:
        started = time.monotonic()
        assert raw.post("/test/slow-answer", b"x" * 100, {}) == (200, SLOW_TEXT)
        assert time.monotonic() - started >= 1.5 * BODY_S  # it did outlast the deadline
        # The connection is still kept alive for the next request (no session: a quick 403).
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert raw.post("/login", b"password=x", form)[0] == 403
    finally:
        raw.close()


def test_an_answer_begun_before_the_body_ends_is_finished_then_the_connection_closes(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    raw = Raw(site)
    try:
        with caplog.at_level(logging.WARNING):
            raw.head("/test/answer-first", 1000, {})
            raw.body(b"only the beginning")  # and never the rest
            assert raw.answer() == (200, SLOW_TEXT)  # whole, past the deadline, no 408 in it
            assert raw.closed_within(SLACK_S), "the overdue body kept the connection open"
        [line] = slow_records(caplog)
        assert "part=body" in line.getMessage()
    finally:
        raw.close()
