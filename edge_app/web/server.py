"""Serving the web page from inside `edge-app hub`: uvicorn on a thread of the hub process.

The refusals a user can fix are raised before anything listens: a LAN address without an
admin password, half a TLS pair, unreadable certificate files, a certificate and a key that
do not go together.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import re
import socket
import ssl
import struct
import threading
import time
import weakref
from asyncio.sslproto import SSLProtocol
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import h11

from edge_app.config import Config, split_listen
from edge_app.errors import UserError
from edge_app.logs import Throttle
from edge_app.private_file import check_tls_file
from edge_app.web.auth import passwd_command, read_password_hash

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
# Open connections, TLS handshakes included: in all (uvicorn's limit_concurrency, at which
# every request is answered 503; one more connection gets 503 at once, or over TLS a close,
# so the page never holds more sockets than this), and from one client address. A connection
# over the caps is refused before anything is built for it (no TLS layer, no HTTP parser).
# A connection has HEAD_TIMEOUT_S to send each request's line and headers, at most
# MAX_HEAD_BYTES of them; then its body must keep arriving (BODY_IDLE_S) and be whole within
# FORM_TIMEOUT_S, or UPLOAD_TIMEOUT_S for a photo upload; uvicorn itself would wait for
# either forever. systemd/edge-app-hub.service's LimitNOFILE leaves room for MAX_CONNECTIONS
# and LISTEN_BACKLOG many times over.
MAX_CONNECTIONS = 64
PER_ADDRESS_CONNECTIONS = 16
# Connections the kernel queues until the page accepts them. asyncio accepts a whole queue at
# once, so this is also how many sockets a burst of connects opens before the caps above
# refuse them (uvicorn's default, 2048, would take as many descriptors in one go).
LISTEN_BACKLOG = 128
HEAD_TIMEOUT_S = 10.0
# A browser's request line and headers for this page are well under 2 KiB (one session
# cookie); 16 KiB leaves room for cookies of other sites on the same host name, and is
# Node.js's limit. More is answered 431 at once, however it arrives.
MAX_HEAD_BYTES = 16 * 1024
# A body in many tiny pieces (chunks of one byte) costs h11 and uvicorn Python work per
# piece, some 280 times a byte sent whole, and is read (or drained) for up to the form's
# deadline: one client held a core. After BODY_PIECES_FREE pieces, a body averaging under
# MIN_PIECE_BYTES a piece is refused (400, closed). Browsers send whole bodies; a slow
# link's reads are a TCP segment or more.
BODY_PIECES_FREE = 1024
MIN_PIECE_BYTES = 64
# A request's body must keep arriving: no byte of it for BODY_IDLE_S ends the connection,
# however long the body may take in all. A browser sends a body as fast as the link takes it;
# only a client that stopped (or a link that is down) sends nothing for this long. It is not
# counted while the page itself does not read (flow control: the app is behind).
BODY_IDLE_S = 15.0
# Every body but a photo upload is a form of at most 64 KiB (edge_app/web/forms.py
# URLENCODED_MAX_BYTES): half a second over a 1 Mbit/s uplink. It gets FORM_TIMEOUT_S in all.
FORM_TIMEOUT_S = 30.0
# A photo upload (the routes of edge_app.web.app's enrol_new and enrol_add) may be
# web.max_upload_mb, 40 MB by default (edge_app/web/forms.py refuses more). Over a slow home
# uplink of 1 Mbit/s (ADSL's upstream, a phone on a weak signal through an ssh tunnel) a MB
# takes 8 s, 40 MB 320 s. UPLOAD_S_PER_MB allows 10 s per MB, a quarter more: 400 s for the
# default, and proportionally more where web.max_upload_mb is raised (upload_timeout_for).
# What is left of a body once the page has answered (a refusal that did not read it) is
# drained for at most FORM_TIMEOUT_S more, whatever the route.
UPLOAD_TIMEOUT_S = 400.0
UPLOAD_S_PER_MB = 10.0
# A response whose bytes wait in the send buffers with none of them leaving for WRITE_STALL_S
# ends the connection with a TCP reset (its slot, and what the kernel held for it, are freed
# at once). Any progress restarts it, so a slow link is never cut; only a client that stopped
# reading is. A phone that loses its signal for a moment (a lift, a Wi-Fi handover) stalls
# for seconds while TCP retransmits; 30 s lets it come back. It also covers what is still
# leaving when a TLS connection closes (TLS_CLOSE_TIMEOUT_S).
# Progress is checked WRITE_CHECKS times per WRITE_STALL_S, so the cut comes 30 to 37.5 s
# after the last byte left.
WRITE_STALL_S = 30.0
WRITE_CHECKS = 4
# A TLS handshake is two round trips and one signature: well under a second on a LAN, a few
# on a poor mobile link. asyncio's default gives a client that never finishes one 60 s.
TLS_HANDSHAKE_TIMEOUT_S = 10.0
# A TLS connection the page closes (a deadline, a refusal, an idle keep-alive) waits this long
# for the client's close_notify once its last bytes have left; asyncio's default, 30 s, kept
# the slot of a client that never answers (one that went quiet) counted for that long after
# its cut. Bytes still leaving are not cut by it: the write check (WRITE_STALL_S) judges them.
TLS_CLOSE_TIMEOUT_S = 5.0
# What one read from a TLS connection's socket takes at most. A TLS record is at most 16 KiB
# (plus its header and tag), and asyncio reads again while more is waiting, so this costs no
# throughput; asyncio's own (256 KiB on Python 3.11) would be allocated for every connection.
TLS_READ_BYTES = 32 * 1024
# A refused connection is logged, then at most one line per client address per this long,
# with how many more were refused since (held_back=N), as edge_app/control.py does for its
# refusals: a flood of connects writes a line per address every 10 s, not one per connect.
# At most REFUSAL_LOG_ADDRESSES addresses are followed at a time (a device may have many IPv6
# addresses); past that, the refusals of the others share one line per 10 s. A request cut
# for its client's pace or size ("too slow", "head too large", "not read") is logged the same
# way, on a RefusalLog of its own.
REFUSAL_LOG_S = 10.0
REFUSAL_LOG_ADDRESSES = 1024
# The end of a request's head, as h11 finds it (h11/_receivebuffer.py).
_HEAD_END = re.compile(rb"\n\r?\n")


class WebError(UserError):
    """The web page cannot be served as configured; the message names the key and the fix."""


@dataclass(frozen=True)
class Limits:
    """What one client may hold, and for how long (the constants above, or a test's)."""

    max_connections: int
    per_address: int
    head_timeout_s: float
    max_head_bytes: int
    body_idle_s: float  # no byte of a body for this long ends it
    form_timeout_s: float  # the whole of any other body
    upload_timeout_s: float  # the whole of a body on an upload route
    upload_paths: frozenset[str]  # request paths (as the app's router sees them) of uploads
    write_stall_s: float
    tls_handshake_timeout_s: float
    tls_close_timeout_s: float


def is_loopback(host: str) -> bool:
    """Whether a listen host (as written in web.listen) is this machine only."""
    if host.lower().rstrip(".") == "localhost":  # names are case-insensitive
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


# Said at start when the page serves the LAN over plain HTTP (the /health row says it too).
PLAIN_LAN_WARNING = (
    "the web page serves {listen} over plain HTTP: the admin password, the session cookie, "
    "face snapshots, the live camera frame, uploaded photos and gallery exports cross the "
    "network in clear text; set web.tls_cert and web.tls_key, or keep web.listen on "
    "127.0.0.1 behind a TLS reverse proxy (docs/WEB.md)"
)


def check_settings(config: Config, config_path: Path | None = None) -> tuple[str, int, bool]:
    """(host, port, tls) to serve on, or WebError saying why not (config_path: the file
    `config` was read from, for the command the message names)."""
    web = config.web
    host, port = split_listen(web.listen)
    if not is_loopback(host) and read_password_hash(web.password_file) is None:
        raise WebError(
            f"web.listen = {web.listen!r} would serve the LAN, but no admin password is set: "
            f"run `{passwd_command(config_path)}` first (it writes {web.password_file}), or "
            'keep web.listen = "127.0.0.1:8080"'
        )
    tls = web.tls_cert is not None and web.tls_key is not None
    if tls:
        for key, path in (("web.tls_cert", web.tls_cert), ("web.tls_key", web.tls_key)):
            assert path is not None
            try:
                check_tls_file(path, key, WebError)
            except OSError as error:
                raise WebError(f"{key}: cannot read {path} ({error.strerror})") from None
    return host, port, tls


def tls_context(config: Config) -> ssl.SSLContext:
    """The server side of TLS for web.tls_cert and web.tls_key (Python's defaults: TLS 1.2 and
    up, no client certificate), or WebError when the pair cannot be used."""
    cert, key = config.web.tls_cert, config.web.tls_key
    assert cert is not None and key is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as error:
        raise WebError(
            f"web.tls_cert, web.tls_key: {cert} and {key} are not a PEM certificate and "
            f"its private key ({error.strerror or error})"
        ) from None
    return context


def _refuse(transport: asyncio.BaseTransport, status: int, reason: str, message: str) -> None:
    """A plain-text answer written outside any request's cycle, then the connection closes."""
    body = (message + "\n").encode()
    cast(asyncio.Transport, transport).write(
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        + body
    )
    transport.close()


def _reset(transport: asyncio.BaseTransport) -> None:
    """End the connection at once with a TCP reset: what the kernel still holds to send (up
    to megabytes for a client that stopped reading) is dropped with it, not kept for it."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # SO_LINGER on, 0 s: close() resets
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    cast(asyncio.Transport, transport).abort()


def listen_sockets(host: str, port: int) -> list[socket.socket]:
    """The page's listening sockets, bound here (as asyncio would bind them: every address
    `host` resolves to, SO_REUSEADDR, IPv6 sockets IPv6-only), so that a port in use or an
    address not on this machine is a WebError naming it, before any thread starts."""
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise WebError(f"web.listen: cannot resolve {host!r} ({error.strerror})") from None
    bound: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):  # each address once
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as error:
        for sock in bound:
            sock.close()
        if error.errno == errno.EADDRINUSE:
            raise WebError(
                f"web.listen: cannot listen on {where}: another program listens there "
                f"(`sudo ss -ltnp 'sport = :{port}'` names it); stop it, or set another "
                "port in web.listen"
            ) from None
        if error.errno == errno.EACCES:
            raise WebError(
                f"web.listen: cannot listen on {where}: ports below 1024 need privileges the "
                "hub does not have; use a port of 1024 or more (8080, 8443)"
            ) from None
        raise WebError(f"web.listen: cannot listen on {where}: {error.strerror}") from None
    return bound


def upload_timeout_for(max_upload_mb: int) -> float:
    """The body deadline that lets an upload of `max_upload_mb` through a slow home uplink."""
    return max(UPLOAD_TIMEOUT_S, max_upload_mb * UPLOAD_S_PER_MB)


def upload_paths(app: Any) -> frozenset[str]:
    """The paths of the page's photo uploads (edge_app.web.app's enrol_new and enrol_add),
    read from its routes: the bodies that get UPLOAD_TIMEOUT_S rather than FORM_TIMEOUT_S."""
    from starlette.routing import Route

    from edge_app.web.app import enrol_add, enrol_new

    uploads = (enrol_new, enrol_add)
    return frozenset(
        route.path
        for route in app.routes
        if isinstance(route, Route) and any(route.endpoint is upload for upload in uploads)
    )


class RefusalLog:
    """When a refused connection is logged: the first one from each client address, then at
    most one line per address per `every` seconds (an edge_app.logs.Throttle each), which
    says how many of its refusals were held back since its previous line.

    At most `addresses` addresses are followed at a time. One refused `every` seconds ago or
    more is forgotten when room is needed (its next refusal is logged either way); while all
    were refused more recently, any other address's refusals share one more Throttle, whose
    held_back counts them all: a device with many addresses cannot write a line for each.
    """

    def __init__(
        self, every: float, addresses: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every = every
        self.addresses = addresses
        self._clock = clock
        self._throttles: dict[str | None, Throttle] = {}
        self._refused_at: dict[str | None, float] = {}  # each followed address's latest
        self._others = Throttle(every, clock)

    def due(self, address: str | None) -> int | None:
        """None when this refusal is only to be counted; else log it now, with the number
        returned (how many were held back since that address's previous line)."""
        now = self._clock()
        throttle = self._throttles.get(address)
        if throttle is None:
            if len(self._throttles) >= self.addresses:
                self._forget(now)
            if len(self._throttles) >= self.addresses:
                return self._others.due(now)
            throttle = self._throttles[address] = Throttle(self.every, self._clock)
        self._refused_at[address] = now
        return throttle.due(now)

    def _forget(self, now: float) -> None:
        quiet = [key for key, at in self._refused_at.items() if now - at >= self.every]
        for key in quiet:
            del self._throttles[key], self._refused_at[key]


class UvicornLines(logging.Filter):
    """uvicorn's own warnings for requests it refuses, one per request, logged as the page's
    refusals are: the first of each kind, then at most one per `every` seconds, with how many
    were held back since. Anyone who can reach the page causes them without a login (a
    request with two Host headers, an Upgrade header, one more request than MAX_CONNECTIONS
    allows), and a line per request let one client write 200 a second to the journal.

    uvicorn follows "Unsupported upgrade request." with advice to install a WebSocket library
    (whatever `ws="none"` says): wrong for this page, which has no WebSocket; not logged.
    """

    LINES = {  # uvicorn's message: what is logged in its place
        "Exceeded concurrency limit.": "Exceeded concurrency limit.",
        "Invalid HTTP request received.": "Invalid HTTP request received.",
        "Unsupported upgrade request.": "Unsupported upgrade request (the page has no WebSocket).",
    }
    DROPPED = "No supported WebSocket library detected."  # the start of the advice

    def __init__(self, every: float) -> None:
        super().__init__()
        self.throttles = {message: Throttle(every) for message in self.LINES}

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str):
            return True
        if record.msg.startswith(self.DROPPED):
            return False
        throttle = self.throttles.get(record.msg)
        if throttle is None:
            return True
        held_back = throttle.due()
        if held_back is None:
            return False
        record.msg, record.args = f"{self.LINES[record.msg]} held_back=%d", (held_back,)
        return True

    @classmethod
    def install(cls, every: float) -> None:
        """On uvicorn's logger, in place of any earlier one (one per process)."""
        logger = logging.getLogger("uvicorn.error")
        for earlier in [f for f in logger.filters if isinstance(f, cls)]:
            logger.removeFilter(earlier)
        logger.addFilter(cls(every))


class _CountedConnection(h11.Connection):
    """uvicorn's h11 state machine, refusing a request head over `max_head` bytes and
    counting the bytes it gives the transport to send.

    h11's own limit (max_incomplete_event_size) only applies while a head is incomplete: one
    that arrives whole in one read (asyncio reads 256 KiB at a time) would pass at any size.
    Here every head is measured before h11 parses it, a pipelined one too. `too_large` is
    the protocol's method, held weakly: the protocol holds this state machine, and a cycle
    between them would keep both until the cyclic collector's next pass.
    """

    def __init__(
        self,
        max_head: int,
        too_large: Callable[[], None],
        too_fragmented: Callable[[], None],
    ) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head)
        self.max_head = max_head
        self.too_large = weakref.WeakMethod(too_large)
        self.too_fragmented = weakref.WeakMethod(too_fragmented)
        self.bytes_out = 0
        self.pieces = 0  # of the current request's body, and their bytes
        self.piece_bytes = 0

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        if self.their_state is h11.IDLE:  # a request's head is next
            data = self.trailing_data[0]
            if len(data) > self.max_head and not _HEAD_END.search(data, 0, self.max_head):
                too_large = self.too_large()
                if too_large is not None:
                    too_large()  # answers and closes: nothing more is read
                return h11.NEED_DATA
        event = super().next_event()
        if isinstance(event, h11.Request):
            self.pieces = self.piece_bytes = 0
        elif isinstance(event, h11.Data):
            self.pieces += 1
            self.piece_bytes += len(event.data)
            if self.pieces > BODY_PIECES_FREE and self.piece_bytes < MIN_PIECE_BYTES * self.pieces:
                too_fragmented = self.too_fragmented()
                if too_fragmented is not None:
                    too_fragmented()  # answers (or closes) and closes: nothing more is read
                return h11.NEED_DATA
        return event

    def send_with_data_passthrough(self, event: h11.Event) -> list[bytes] | None:
        data = super().send_with_data_passthrough(event)  # what send() returns, in pieces
        if data:  # uvicorn writes what send() returns at once (the write progress check)
            self.bytes_out += sum(map(len, data))
        return data


def guarded_protocol(limits: Limits, tls: ssl.SSLContext | None) -> Callable[..., Any]:
    """A factory of uvicorn's h11 protocol, guarded against clients that hold connections.

    A client address with `limits.per_address` connections open, or a page with
    `limits.max_connections`, gets 503 on the next one at once (over TLS, a close before the
    handshake), before anything is built for it: no TLS layer, no HTTP parser. A request's
    line and headers must arrive within `head_timeout_s` of the connection opening or of the
    previous response, at most `max_head_bytes` of them (else 431). Its body must then keep
    arriving, no `body_idle_s` without a byte (not counted while the page does not read), and
    be whole within `form_timeout_s` of its headers (`upload_timeout_s` on `upload_paths`);
    what is left of a body once its response is out has at most `form_timeout_s` more. A
    request that breaks one of these gets 408 (or, when nothing was sent or a response has
    begun, a close) and its connection ends. The body deadlines never cut a response: one the
    app is sending when they pass is finished first. A response none of whose bytes leave for
    `write_stall_s` ends the connection (a client that stopped reading). With `tls`, the TLS
    layer is added here rather than by asyncio's server: its handshake has
    `tls_handshake_timeout_s`, and counts as an open connection of its address from the moment
    TCP accepts it. Together they stop one address from holding all of `max_connections`
    (docs/WEB.md, "Connections"). Refusals are logged as RefusalLog allows.
    """
    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.utils import get_remote_addr

    class ReadingFlow(FlowControl):
        """uvicorn's flow control, which notes when the page took up reading a paused body
        again (`resumed_at`, the loop's clock): the client's idle time counts from then.
        Counted from its last byte, an idle check that ran just after the page resumed,
        before the next bytes were read, cut a client that never stopped sending (1 run in
        20 on Python 3.13 under load). A time, not a callback: a callback to the connection
        would make the two refer to each other, left for the cyclic collector."""

        def __init__(self, transport: asyncio.Transport, clock: Callable[[], float]) -> None:
            super().__init__(transport)
            self._clock = clock
            self.resumed_at = 0.0

        def resume_reading(self) -> None:
            if self.read_paused:
                self.resumed_at = self._clock()
            super().resume_reading()

    refusals = RefusalLog(REFUSAL_LOG_S, REFUSAL_LOG_ADDRESSES)
    cuts = RefusalLog(REFUSAL_LOG_S, REFUSAL_LOG_ADDRESSES)

    def log_cut(host: str | None, line: str, *args: object) -> None:
        """A request cut for its client's pace or size: logged as `cuts` allows, with how
        many cuts of that address were held back since its previous line."""
        held_back = cuts.due(host)
        if held_back is not None:
            log.warning(f"{line} held_back=%d", *args, held_back)

    def open_from(connections: set[Any], host: str | None) -> int:
        return sum(1 for other in connections if other.client and other.client[0] == host)

    def refusal(connections: set[Any], host: str | None) -> str | None:
        """Why one more connection from `host` is refused (with it not yet counted)."""
        total, same = len(connections), open_from(connections, host)
        if host is not None and same >= limits.per_address:
            reason = f"too many connections from {host} (at most {limits.per_address} at a time)"
        elif total >= limits.max_connections:
            reason = f"too many connections (at most {limits.max_connections} at a time)"
        else:
            return None
        held_back = refusals.due(host)
        if held_back is not None:
            log.warning(
                "web connection refused address=%s open=%d total=%d held_back=%d",
                host,
                same,
                total,
                held_back,
            )
        return reason

    class Gate(asyncio.Protocol):
        """What asyncio's server gives each connection it accepts: the caps are applied
        first, so a refused connection costs this object and its socket alone; an accepted
        one is handed to its HTTP protocol (under its TLS layer) at once."""

        def __init__(self, kwargs: dict[str, Any]) -> None:
            self.kwargs = kwargs

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            kwargs, self.kwargs = self.kwargs, {}
            client = get_remote_addr(cast(asyncio.Transport, transport))
            reason = refusal(kwargs["server_state"].connections, client[0] if client else None)
            if reason is not None:
                if tls is None:
                    _refuse(transport, 503, "Service Unavailable", reason)
                else:
                    transport.close()  # no answer can be read before a handshake
                return
            http = GuardedH11Protocol(**kwargs)
            protocol: asyncio.BaseProtocol = http if tls is None else TLSLayer(http.loop, http)
            transport.set_protocol(protocol)
            protocol.connection_made(transport)

        def data_received(self, data: bytes) -> None:
            """Bytes of a refused connection before it closes: not read."""

    class TLSLayer(SSLProtocol):
        """One connection's TLS: asyncio's own, started by the protocol factory.

        asyncio calls the application's connection_made only once the handshake is done, so
        until then this layer stands in uvicorn's set of open connections for it (and is
        shut down with them); the h11 protocol takes its place once the handshake is over.
        """

        max_size = TLS_READ_BYTES  # its read buffer (asyncio's would be 256 KiB)
        client: tuple[str, int] | None = None
        wire: asyncio.Transport | None = None  # the TCP connection under TLS
        http: GuardedH11Protocol | None  # the connection's HTTP, until it is lost

        def __init__(self, loop: asyncio.AbstractEventLoop, http: GuardedH11Protocol) -> None:
            assert tls is not None
            super().__init__(
                loop,
                http,
                tls,
                None,  # type: ignore[arg-type]  # nobody awaits the handshake
                server_side=True,
                ssl_handshake_timeout=limits.tls_handshake_timeout_s,  # type: ignore[arg-type]
                ssl_shutdown_timeout=limits.tls_close_timeout_s,
            )
            self.http = http
            http.tls_layer = self

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert self.http is not None
            self.wire = cast(asyncio.Transport, transport)
            self.client = get_remote_addr(self.wire)
            self.http.connections.add(self)  # type: ignore[arg-type]  # counted from the accept
            super().connection_made(transport)

        def connection_lost(self, exc: BaseException | None) -> None:
            http, self.http = self.http, None
            if http is not None:
                http.connections.discard(self)
            super().connection_lost(exc)  # passes the loss on to http, if it had begun
            # This layer and the h11 protocol referred to each other: freed now, by their
            # last reference going, not whenever the cyclic collector next looks (by then an
            # old generation's, after hundreds of connections).
            if http is not None and http.tls_layer is self:
                http.tls_layer = None
            self.wire = None
            self._ssl_buffer = bytearray()  # its read buffer
            self._ssl_buffer_view = memoryview(self._ssl_buffer)

        def shutdown(self) -> None:
            """uvicorn's server stopping: a handshake in progress ends now."""
            if self.wire is not None:
                self.wire.abort()

        def _check_shutdown_timeout(self) -> None:
            """asyncio's (Python 3.11 and later): the close waited tls_close_timeout_s for
            the client's close_notify. While bytes still wait to leave, it waits on (a slow
            link gets the end of its answer; the write check cuts a client that stopped
            reading)."""
            if self.wire is not None and self.wire.get_write_buffer_size():
                self._shutdown_timeout_handle = self._loop.call_later(
                    limits.tls_close_timeout_s, self._check_shutdown_timeout
                )
                return
            super()._check_shutdown_timeout()  # type: ignore[misc]

    class GuardedH11Protocol(H11Protocol):
        tls_layer: TLSLayer | None = None
        _head_deadline: asyncio.TimerHandle | None = None
        _body_deadline: asyncio.TimerHandle | None = None  # for the whole body
        _body_limit_s = 0.0  # the whole body's limit in force: a form's, or an upload's
        _body_idle: asyncio.TimerHandle | None = None  # checks that the body keeps coming
        _data_at = 0.0  # when bytes last arrived (the loop's clock)
        _body_cycle: object = None  # the request (uvicorn's cycle) the body deadlines are for
        # (limit_s, stalled) of a body deadline that passed while a response was being sent
        _body_overdue: tuple[float, bool] | None = None
        _write_check: asyncio.TimerHandle | None = None
        _sent = 0  # bytes that had left the send buffers at the last check
        _waiting = False  # some were waiting at the last check
        _stalled = 0  # checks in a row that found bytes waiting and none gone since

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.counted = _CountedConnection(
                limits.max_head_bytes, self._head_too_large, self._body_too_fragmented
            )
            self.conn = self.counted

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if self.tls_layer is not None:  # the handshake is over: this takes its place
                self.connections.discard(self.tls_layer)
            super().connection_made(transport)  # the caps were applied by the Gate
            self.flow = ReadingFlow(transport, self.loop.time)  # before any request uses it
            self._arm_write_check()
            self._arm_head_deadline()

        def data_received(self, data: bytes) -> None:
            self._data_at = self.loop.time()
            super().data_received(data)

        def handle_events(self) -> None:
            super().handle_events()
            state = self.conn.their_state
            if state is not h11.IDLE:  # the request's head has arrived
                self._disarm_head_deadline()
            if state is h11.SEND_BODY:  # its body has not all arrived yet
                if self._body_cycle is not self.cycle:  # a new request: its own deadlines
                    self._arm_body_deadline()
            else:
                self._disarm_body_deadline()

        def send_400_response(self, msg: str) -> None:
            """uvicorn's 400 for a request h11 cannot read (a chunk size that is not hex),
            then the request's cycle ended as a lost connection ends it: the page may already
            be running for a head that did parse, and its own response, sent into the closed
            state machine, was an h11 traceback in the log for every such request (uvicorn
            issue 2238)."""
            super().send_400_response(msg)
            if self.cycle is not None:
                if not self.cycle.response_complete:
                    self.cycle.disconnected = True
                self.cycle.message_event.set()

        def on_response_complete(self) -> None:
            if self.conn.their_state is h11.SEND_BODY:  # answered before its body was all in
                if self._body_overdue is not None:  # the response is out: now close
                    self._too_slow("body", *self._body_overdue)
                elif self._body_deadline is not None:  # the rest is drained, not for long
                    due = self.loop.time() + limits.form_timeout_s
                    if due < self._body_deadline.when():
                        self._body_deadline.cancel()
                        self._body_limit_s = limits.form_timeout_s
                        self._body_deadline = self.loop.call_at(due, self._body_too_slow)
            self._arm_head_deadline()  # for the next request on this connection
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_deadline()
            self._disarm_body_deadline()
            if self._write_check is not None:
                self._write_check.cancel()
                self._write_check = None
            super().connection_lost(exc)
            self.tls_layer = None

        def _arm_head_deadline(self) -> None:
            self._disarm_head_deadline()
            self._head_deadline = self.loop.call_later(limits.head_timeout_s, self._head_too_slow)

        def _disarm_head_deadline(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _arm_body_deadline(self) -> None:
            self._disarm_body_deadline()
            self._body_cycle = self.cycle
            upload = self.cycle.scope["path"] in limits.upload_paths
            self._body_limit_s = limits.upload_timeout_s if upload else limits.form_timeout_s
            self._body_deadline = self.loop.call_later(self._body_limit_s, self._body_too_slow)
            self._data_at = self.loop.time()  # its head's bytes (or the page's turn to read)
            self._body_idle = self.loop.call_later(limits.body_idle_s, self._check_body_idle)

        def _disarm_body_deadline(self) -> None:
            for handle in (self._body_deadline, self._body_idle):
                if handle is not None:
                    handle.cancel()
            self._body_deadline = self._body_idle = None
            self._body_cycle = None
            self._body_overdue = None

        def _head_too_slow(self) -> None:
            self._head_deadline = None
            self._too_slow("headers", limits.head_timeout_s)

        def _body_too_slow(self) -> None:
            self._body_deadline = None
            self._body_late(self._body_limit_s, stalled=False)

        def _check_body_idle(self) -> None:
            """Ends the body once no byte of it came for body_idle_s; else checks again when
            that would next be so."""
            self._body_idle = None
            now = self.loop.time()
            if self.flow.read_paused:  # the page is behind in reading it, not the client
                self._data_at = now
            elif isinstance(self.flow, ReadingFlow):  # the page's turn ended then
                self._data_at = max(self._data_at, self.flow.resumed_at)
            idle_until = self._data_at + limits.body_idle_s
            if idle_until - now > 0.001:
                self._body_idle = self.loop.call_at(idle_until, self._check_body_idle)
                return
            self._body_late(limits.body_idle_s, stalled=True)

        def _body_late(self, limit_s: float, stalled: bool) -> None:
            if self.conn.their_state is not h11.SEND_BODY:
                return
            if self.conn.our_state is h11.SEND_BODY:  # the app is sending its response
                if self._body_overdue is None:  # on_response_complete closes once it is out
                    self._body_overdue = (limit_s, stalled)
                return
            self._too_slow("body", limit_s, stalled)

        def _too_slow(self, part: str, limit_s: float, stalled: bool = False) -> None:
            """The request's `part` did not arrive within `limit_s` (or, `stalled`, none of it
            for `limit_s`): end the connection.

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
            if stalled:
                log_cut(
                    host, "web request too slow address=%s part=%s idle_s=%g", host, part, limit_s
                )
                message = f"no byte of the request's {part} arrived for {limit_s:g} s"
            else:
                log_cut(
                    host, "web request too slow address=%s part=%s limit_s=%g", host, part, limit_s
                )
                message = f"the request's {part} took longer than {limit_s:g} s"
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # no response has begun
                _refuse(self.transport, 408, "Request Timeout", message)
            else:
                self.transport.close()

        def _body_too_fragmented(self) -> None:
            """The request's body comes in pieces too small to be worth their cost
            (BODY_PIECES_FREE): 400 if no response has begun, else a close."""
            if self.transport.is_closing():
                return
            host = self.client[0] if self.client else None
            pieces = self.counted.pieces
            log_cut(host, "web request body in tiny pieces address=%s pieces=%d", host, pieces)
            if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # no response has begun
                message = "the request's body came in pieces too small to be read"
                _refuse(self.transport, 400, "Bad Request", message)
            else:
                self.transport.close()

        def _head_too_large(self) -> None:
            """The request's line and headers are over max_head_bytes: 431, and close."""
            if self.transport.is_closing():
                return
            host = self.client[0] if self.client else None
            limit = limits.max_head_bytes
            log_cut(host, "web request head too large address=%s limit_bytes=%d", host, limit)
            message = f"the request's line and headers are over {limit} bytes"
            _refuse(self.transport, 431, "Request Header Fields Too Large", message)

        def _arm_write_check(self) -> None:
            interval = limits.write_stall_s / WRITE_CHECKS
            self._write_check = self.loop.call_later(interval, self._check_writes)

        def _check_writes(self) -> None:
            """Ends the connection once its bytes have waited write_stall_s with none leaving.

            Whatever uvicorn writes goes through h11 (conn.bytes_out); what is still in the
            send buffers (the transport's, and under TLS the TCP connection's) has not left.
            Their difference grows exactly when bytes leave, whether uvicorn is paused
            writing (flow control, above 64 KiB) or not: a response below that, or the
            refusal before a close, can be stuck just the same.
            """
            self._write_check = None
            waiting = self.transport.get_write_buffer_size()
            wire = self.tls_layer.wire if self.tls_layer is not None else None
            if wire is not None:
                waiting += wire.get_write_buffer_size()
            sent = self.counted.bytes_out - waiting
            if waiting and self._waiting and sent <= self._sent:
                self._stalled += 1
            else:
                self._stalled = 0
            self._sent, self._waiting = sent, waiting > 0
            if self._stalled >= WRITE_CHECKS:
                host = self.client[0] if self.client else None
                log_cut(
                    host,
                    "web response not read address=%s waiting_bytes=%d limit_s=%g",
                    host,
                    waiting,
                    limits.write_stall_s,
                )
                _reset(self.transport)
                return
            self._arm_write_check()

    def factory(**kwargs: Any) -> asyncio.BaseProtocol:
        """What uvicorn calls for each connection it accepts."""
        return Gate(kwargs)

    return factory


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
        upload_timeout_s: float | None = None,
        form_timeout_s: float | None = None,
        body_idle_s: float | None = None,
    ) -> None:
        """The deadlines are the module's constants unless given (tests turn them down);
        an upload's is upload_timeout_for(web.max_upload_mb)."""
        import uvicorn

        from edge_app.web.app import create_app, wrap

        self.host, self.port, self.tls = check_settings(config, config_path)
        context = tls_context(config) if self.tls else None
        app = create_app(config, config_path=config_path, socket_path=socket_path, tls=self.tls)
        self.app = app
        web = config.web
        limits = Limits(
            max_connections=MAX_CONNECTIONS,
            per_address=PER_ADDRESS_CONNECTIONS,
            head_timeout_s=head_timeout_s,
            max_head_bytes=MAX_HEAD_BYTES,
            body_idle_s=BODY_IDLE_S if body_idle_s is None else body_idle_s,
            form_timeout_s=FORM_TIMEOUT_S if form_timeout_s is None else form_timeout_s,
            upload_timeout_s=(
                upload_timeout_for(web.max_upload_mb)
                if upload_timeout_s is None
                else upload_timeout_s
            ),
            upload_paths=upload_paths(app),
            write_stall_s=WRITE_STALL_S,
            tls_handshake_timeout_s=TLS_HANDSHAKE_TIMEOUT_S,
            tls_close_timeout_s=TLS_CLOSE_TIMEOUT_S,
        )
        UvicornLines.install(REFUSAL_LOG_S)
        self._uvicorn = uvicorn.Server(
            uvicorn.Config(
                wrap(app),
                host=self.host,
                port=self.port,
                # TLS is added by the protocol factory (guarded_protocol), which gives the
                # handshake its deadline and counts it; uvicorn itself serves plain h11.
                http=cast("type[asyncio.Protocol]", guarded_protocol(limits, context)),
                ws="none",  # the page has no WebSocket; an upgrade stays a plain request
                log_config=None,  # the hub's logging set-up stays in charge
                # uvicorn's start and stop lines would name http for the TLS page; the hub
                # logs its own ("web page serving url=..."). Its warnings still come through.
                log_level=logging.WARNING,
                access_log=False,
                proxy_headers=False,  # client addresses (rate limits, unlock origin) are real
                server_header=False,
                limit_concurrency=MAX_CONNECTIONS,
                backlog=LISTEN_BACKLOG,
                timeout_keep_alive=5,
            )
        )
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def _run(self, sockets: list[socket.socket]) -> None:
        try:
            asyncio.run(self._uvicorn.serve(sockets=sockets))
        except BaseException as error:  # reported by start(); the hub keeps running
            self._error = error
        finally:
            if not self._uvicorn.started:
                self._error = self._error or WebError(f"web.listen: cannot serve on {self.url}")

    def start(self) -> None:
        sockets = listen_sockets(self.host, self.port)
        self._thread = threading.Thread(target=self._run, args=(sockets,), name="web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                for sock in sockets:
                    sock.close()
                reason = self._error
                raise WebError(
                    f"web.listen: cannot serve on {self.url} ({reason or 'uvicorn did not start'})"
                )
            time.sleep(0.02)
        log.info("web page serving url=%s tls=%s", self.url, self.tls)
        if not self.tls and not is_loopback(self.host):
            log.warning("%s", PLAIN_LAN_WARNING.format(listen=f"{self.host}:{self.port}"))

    def on_event(self, event: dict[str, Any]) -> None:
        """Events are read from the events database, which keeps their history."""

    def on_health(self, health: object) -> None:
        """The dashboard asks the door's status itself (fresher than the hub's poll)."""

    def stop(self) -> None:
        self._uvicorn.should_exit = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._thread = None
