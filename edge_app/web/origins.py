"""Which names the web page answers to, and the origin the browser is on for each request.

A browser names the site it wants in the Host header and, on every POST, the page that sent
it in the Origin header. Three cases (docs/WEB.md, "Behind a reverse proxy"):

  - `[web] public_origin` set (a TLS proxy, e.g. "https://door.example"): every request's
    Host must name the public host, a loopback address (an ssh tunnel: 127.0.0.1:PORT,
    localhost, [::1]) or the listen address; any other gets 421 before the app runs. That
    allow-list also stops DNS rebinding (a hostile site whose name resolves to the door).
    A request whose Host is the public host (any port, or the public port) came through the
    proxy: the browser's origin is the public origin, and its session cookie is `Secure` and
    `__Host-` when that is https, even though the hub itself serves plain HTTP on loopback.
  - no public_origin, a loopback listen: any Host is served (GET), but a POST that carries an
    Origin is accepted only when its Host names a loopback address or the listen address:
    a page reached through a rebound name gets no session cookie, so it sees only the login
    page and static files, and cannot log in, spend the login limit or change anything.
  - no public_origin, a LAN listen: the page is reached by the Pi's address or by any of its
    names (door.local, door.lan, ...), which the hub cannot know: any Host is served, and a
    POST's Origin must match it, as before.

Elsewhere the browser's origin is the hub's own: https when it serves TLS itself, else http,
with the Host as sent.
"""

from __future__ import annotations

import ipaddress
import logging

from edge_app.config import DEFAULT_PORTS, Config, split_listen, split_origin
from edge_app.hosts import address_text, normal_host, read_authority
from edge_app.web.server import is_loopback

log = logging.getLogger(__name__)

MAX_WARNED = 16  # distinct (Origin, Host) pairs whose public-origin refusal is logged


def split_host(header: str | None) -> tuple[str, int | None] | None:
    """(host, port) of a Host header, the host lower case and an IPv6 address compressed
    without brackets; None when there is no header or it is not host[:port].

    The grammar is edge_app.hosts', with a Host header's own leniencies: a name may hold "_",
    and the port is any 1 to 5 digits (it is only compared, never used)."""
    host = read_authority(header or "", underscore=True)
    if host is None:
        return None
    try:
        return normal_host(host), host.port
    except ValueError:  # the brackets hold no IPv6 address
        return None


def _same_host(name: str) -> str:
    """A listen host in the form split_host gives."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name.lower()
    return address_text(address)


class Origins:
    """The rules above for one served page: built once from the config and the hub's TLS."""

    def __init__(self, config: Config, *, tls: bool) -> None:
        web = config.web
        self.tls = tls
        listen, _ = split_listen(web.listen)
        self.listen_loopback = is_loopback(listen)
        unspecified = listen in ("0.0.0.0", "::")  # no client names a wildcard address
        self.listen_host = None if unspecified else _same_host(listen)
        self.public = web.public_origin or None
        self.public_scheme: str | None = None
        self.public_host: str | None = None
        self.public_port = 0
        if self.public is not None:
            scheme, host, port = split_origin(self.public)
            self.public_scheme, self.public_host = scheme, host
            self.public_port = port or DEFAULT_PORTS[scheme]
        self._warned: set[tuple[str, str | None]] = set()

    @property
    def strict(self) -> bool:
        """Every request's Host is checked (public_origin is set)."""
        return self.public is not None

    def allowed(self, host: tuple[str, int | None] | None) -> bool:
        """The Host names this page: the public host, a loopback address, the listen address."""
        if host is None:
            return False
        name = host[0]
        return is_loopback(name) or name in (self.listen_host, self.public_host)

    def refuses(self, header: str | None) -> bool:
        """A request the page does not answer at all (421): a foreign Host, when strict."""
        return self.strict and not self.allowed(split_host(header))

    def via_proxy(self, header: str | None) -> bool:
        """The request came through the public origin: its Host is the public host, without a
        port (nginx's $host) or with the public one (the browser's own Host)."""
        host = split_host(header)
        return (
            self.public is not None
            and host is not None
            and host[0] == self.public_host
            and host[1] in (None, self.public_port)
        )

    def scheme(self, header: str | None) -> str:
        """The scheme the browser uses for this request."""
        if self.via_proxy(header):
            assert self.public_scheme is not None
            return self.public_scheme
        return "https" if self.tls else "http"

    def secure(self, header: str | None) -> bool:
        """The session cookie is `Secure` (and named `__Host-...`): the browser uses https."""
        return self.scheme(header) == "https"

    def own_origin(self, header: str | None) -> str | None:
        """The origin of this page as the browser sees it, or None when the Host is not
        trusted to name it (a POST carrying any Origin is then refused)."""
        if self.via_proxy(header):
            return self.public
        host = split_host(header)
        if host is None or ((self.strict or self.listen_loopback) and not self.allowed(host)):
            return None
        return f"{self.scheme(header)}://{header.lower() if header else ''}"

    def origin_problem(self, origin: str | None, header: str | None) -> str | None:
        """Why a POST with this Origin (and Host) is refused; None when it is accepted.

        No Origin at all is not a browser (curl, a script on the Pi): its CSRF token decides.
        """
        if origin is None:
            return None
        own = self.own_origin(header)
        if own is not None and origin == own:
            return None
        if self.public is not None and origin == self.public:
            return (
                f"the request came from {self.public} (web.public_origin) with Host "
                f"{_shown(header)}: the proxy must pass the browser's Host header "
                "(nginx: proxy_set_header Host $host;)"
            )
        if own is None and self.listen_loopback and not self.strict:
            return (
                f"cross-site request (Host {_shown(header)} is not this door's address: open "
                "the page at 127.0.0.1 or localhost, or set web.public_origin)"
            )
        mismatch = self._public_mismatch(origin, header)
        if mismatch is not None:
            return mismatch
        return "cross-site request"

    def _public_mismatch(self, origin: str, header: str | None) -> str | None:
        """The browser is on this door's public host name, but not at web.public_origin
        exactly (another port or scheme: a proxy's address the setting does not name). A bare
        "cross-site request" left the owner unable to log in and nothing to change; say
        both origins and the setting, and log it (once per pair: every POST repeats it)."""
        if self.public is None:
            return None
        try:
            _, origin_host, _ = split_origin(origin)
        except ValueError:
            return None  # "null", a path...: not an address the owner could be on
        if origin_host != self.public_host:
            return None  # another site altogether: nothing to configure here
        pair = (origin[:100], header[:100] if header else None)
        if pair not in self._warned and len(self._warned) < MAX_WARNED:
            self._warned.add(pair)
            log.warning(
                "web request refused origin=%r host=%r public_origin=%s reason=origin-mismatch",
                *pair,
                self.public,
            )
        return (
            f"cross-site request: the browser is on {origin[:100]}, but web.public_origin is "
            f"{self.public}: set web.public_origin to the address in the browser's address "
            "bar (scheme, host and port)"
        )


def _shown(header: str | None) -> str:
    return "missing" if header is None else repr(header[:100])
