"""Serving the web page from inside `edge-app hub`: uvicorn on a thread of the hub process.

The refusals a user can fix are raised before anything listens: a LAN address without an
admin password, half a TLS pair, unreadable certificate files.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
from pathlib import Path
from typing import Any

from edge_app.config import Config, split_listen
from edge_app.errors import UserError
from edge_app.web.auth import read_password_hash

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
# Open connections: in all (uvicorn's limit_concurrency, beyond which every request is
# answered 503), and from one client address. A connection has HEAD_TIMEOUT_S to send each
# request's line and headers, and then BODY_TIMEOUT_S (more when web.max_upload_mb is raised)
# for the whole of its body; uvicorn itself would wait for either forever.
MAX_CONNECTIONS = 64
PER_ADDRESS_CONNECTIONS = 16
HEAD_TIMEOUT_S = 10.0
# The body deadline is sized for the largest body the page takes: a photo upload of
# web.max_upload_mb, 40 MB by default (edge_app/web/forms.py refuses more). Over a slow home
# uplink of 1 Mbit/s (ADSL's upstream, a phone on a weak signal through an ssh tunnel) a MB
# takes 8 s, 40 MB 320 s. UPLOAD_S_PER_MB allows 10 s per MB, a quarter more: 400 s for the
# default, and proportionally more where web.max_upload_mb is raised (body_timeout_for).
BODY_TIMEOUT_S = 400.0
UPLOAD_S_PER_MB = 10.0


class WebError(UserError):
    """The web page cannot be served as configured; the message names the key and the fix."""


def is_loopback(host: str) -> bool:
    """Whether a listen host (as written in web.listen) is this machine only."""
    if host.lower().rstrip(".") == "localhost":  # names are case-insensitive
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_settings(config: Config) -> tuple[str, int, bool]:
    """(host, port, tls) to serve on, or WebError saying why not."""
    web = config.web
    host, port = split_listen(web.listen)
    if not is_loopback(host) and read_password_hash(web.password_file) is None:
        raise WebError(
            f"web.listen = {web.listen!r} would serve the LAN, but no admin password is set: "
            f"run `edge-app hub passwd` first (it writes {web.password_file}), or keep "
            'web.listen = "127.0.0.1:8080"'
        )
    tls = web.tls_cert is not None and web.tls_key is not None
    if tls:
        for key, path in (("web.tls_cert", web.tls_cert), ("web.tls_key", web.tls_key)):
            assert path is not None
            try:
                Path(path).read_bytes()
            except OSError as error:
                raise WebError(f"{key}: cannot read {path} ({error.strerror})") from None
    return host, port, tls


def _refuse(transport: asyncio.Transport, status: int, reason: str, message: str) -> None:
    """A plain-text answer written outside any request's cycle, then the connection closes."""
    body = (message + "\n").encode()
    transport.write(
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        + body
    )
    transport.close()


def body_timeout_for(max_upload_mb: int) -> float:
    """The body deadline that lets an upload of `max_upload_mb` through a slow home uplink."""
    return max(BODY_TIMEOUT_S, max_upload_mb * UPLOAD_S_PER_MB)


def guarded_protocol(
    per_address: int, head_timeout_s: float, body_timeout_s: float
) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, guarded against clients that hold connections open.

    A client address with `per_address` connections open gets 503 on the next one, at once.
    A request's line and headers must arrive within `head_timeout_s` of the connection
    opening or of the previous response, and its whole body within `body_timeout_s` of its
    headers; otherwise 408 (or, when nothing was sent or a response has begun, a close) ends
    the connection. The body deadline never cuts a response: one the app is sending when it
    passes is finished first. Together they stop one address from holding all
    MAX_CONNECTIONS with half-sent requests (docs/WEB.md, "Connections").
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _head_deadline: asyncio.TimerHandle | None = None
        _body_deadline: asyncio.TimerHandle | None = None
        _body_cycle: object = None  # the request (uvicorn's cycle) the body deadline is for
        _body_overdue = False  # it passed while a response was being sent

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            host = self.client[0] if self.client else None
            same = sum(
                1
                for other in self.connections
                if isinstance(other, H11Protocol) and other.client and other.client[0] == host
            )
            if host is not None and same > per_address:
                log.warning("web connection refused address=%s open=%d", host, same - 1)
                _refuse(
                    transport,
                    503,
                    "Service Unavailable",
                    f"too many connections from {host} (at most {per_address} at a time)",
                )
                return
            self._arm_head_deadline()

        def handle_events(self) -> None:
            super().handle_events()
            state = self.conn.their_state
            if state is not h11.IDLE:  # the request's head has arrived
                self._disarm_head_deadline()
            if state is h11.SEND_BODY:  # its body has not all arrived yet
                if self._body_cycle is not self.cycle:  # a new request: its own deadline
                    self._arm_body_deadline()
            else:
                self._disarm_body_deadline()

        def on_response_complete(self) -> None:
            if self._body_overdue and self.conn.their_state is h11.SEND_BODY:
                self._too_slow("body", body_timeout_s)  # the response is out: now close
            self._arm_head_deadline()  # for the next request on this connection
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_deadline()
            self._disarm_body_deadline()
            super().connection_lost(exc)

        def _arm_head_deadline(self) -> None:
            self._disarm_head_deadline()
            self._head_deadline = self.loop.call_later(head_timeout_s, self._head_too_slow)

        def _disarm_head_deadline(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _arm_body_deadline(self) -> None:
            self._disarm_body_deadline()
            self._body_cycle = self.cycle
            self._body_deadline = self.loop.call_later(body_timeout_s, self._body_too_slow)

        def _disarm_body_deadline(self) -> None:
            if self._body_deadline is not None:
                self._body_deadline.cancel()
                self._body_deadline = None
            self._body_cycle = None
            self._body_overdue = False

        def _head_too_slow(self) -> None:
            self._head_deadline = None
            self._too_slow("headers", head_timeout_s)

        def _body_too_slow(self) -> None:
            self._body_deadline = None
            if self.conn.their_state is not h11.SEND_BODY:
                return
            if self.conn.our_state is h11.SEND_BODY:  # the app is sending its response
                self._body_overdue = True  # on_response_complete closes once it is out
                return
            self._too_slow("body", body_timeout_s)

        def _too_slow(self, part: str, limit_s: float) -> None:
            """The request's `part` did not arrive within `limit_s`: end the connection.

            408 when the client began a request and no response to it has begun; a close
            alone when it never began one (an idle connection), or after a response.
            """
            if self.transport.is_closing():
                return
            conn = self.conn
            if conn.their_state is h11.IDLE and not conn.trailing_data[0]:
                self.transport.close()  # nothing was asked: nothing to answer or to log
                return
            host = self.client[0] if self.client else None
            log.warning("web request too slow address=%s part=%s limit_s=%g", host, part, limit_s)
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # no response has begun
                message = f"the request's {part} took longer than {limit_s:g} s"
                _refuse(self.transport, 408, "Request Timeout", message)
            else:
                self.transport.close()

    return GuardedH11Protocol


class WebServer:
    """The page on its own thread; start() returns once it listens, stop() ends it.

    A component of edge_app.hub.Hub: the page asks the door itself (edge_app.web.door) at each
    request, so the hub's event and health callbacks need nothing from it.
    """

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        socket_path: Path | None = None,
        head_timeout_s: float = HEAD_TIMEOUT_S,
        body_timeout_s: float | None = None,
    ) -> None:
        import uvicorn

        from edge_app.web.app import create_app, wrap

        self.host, self.port, self.tls = check_settings(config)
        app = create_app(config, config_path=config_path, socket_path=socket_path, tls=self.tls)
        self.app = app
        web = config.web
        if body_timeout_s is None:
            body_timeout_s = body_timeout_for(web.max_upload_mb)
        self._uvicorn = uvicorn.Server(
            uvicorn.Config(
                wrap(app),
                host=self.host,
                port=self.port,
                ssl_certfile=str(web.tls_cert) if self.tls else None,
                ssl_keyfile=str(web.tls_key) if self.tls else None,
                log_config=None,  # the hub's logging set-up stays in charge
                access_log=False,
                proxy_headers=False,  # client addresses (rate limits, unlock origin) are real
                server_header=False,
                http=guarded_protocol(PER_ADDRESS_CONNECTIONS, head_timeout_s, body_timeout_s),
                limit_concurrency=MAX_CONNECTIONS,
                timeout_keep_alive=5,
                h11_max_incomplete_event_size=64 * 1024,
            )
        )
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def _run(self) -> None:
        try:
            asyncio.run(self._uvicorn.serve())
        except BaseException as error:  # reported by start(); the hub keeps running
            self._error = error
        finally:
            if not self._uvicorn.started:
                self._error = self._error or WebError(f"web.listen: cannot serve on {self.url}")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                reason = self._error
                raise WebError(
                    f"web.listen: cannot serve on {self.url} "
                    f"({reason or 'uvicorn did not start'}); is the port in use?"
                )
            time.sleep(0.02)
        log.info("web page serving url=%s tls=%s", self.url, self.tls)

    def on_event(self, event: dict[str, Any]) -> None:
        """Events are read from the events database, which keeps their history."""

    def on_health(self, health: object) -> None:
        """The dashboard asks the door's status itself (fresher than the hub's poll)."""

    def stop(self) -> None:
        self._uvicorn.should_exit = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._thread = None
