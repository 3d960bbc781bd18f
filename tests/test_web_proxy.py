"""The web page behind a TLS reverse proxy ([web] public_origin), and the Host it answers to.

The hub serves plain HTTP on loopback as the proxy (nginx, caddy) would reach it; each test
request carries the Host and Origin a browser sends through the proxy. The session cookie
is kept by hand: a Secure cookie is what is being tested, and httpx would not send one over
the test's plain HTTP.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from web_support import PASSWORD, csrf_of, free_port

from edge_app.config import Config, parse_config
from edge_app.gallery import EMBEDDING_DIM, Gallery, NewSample
from edge_app.web import auth
from edge_app.web.origins import Origins, split_host
from edge_app.web.server import WebServer

PUBLIC = "https://door.example"
COOKIE = "edge_door_session"
SECURE_COOKIE = "__Host-edge_door_session"


@dataclass
class Served:
    url: str
    port: int
    config: Config
    server: WebServer

    def browser(self, host: str, origin: str) -> Browser:
        self.server.app.state.web.limiter = auth.LoginLimiter()
        return Browser(self.url, host, origin)


@dataclass
class Browser:
    """What the hub receives from a browser: its Host and Origin, and its one cookie."""

    url: str
    host: str
    origin: str
    cookie: str = ""
    set_cookies: list[str] = field(default_factory=list)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Host": self.host, **kwargs.pop("headers", {})}
        if method == "POST":
            headers.setdefault("Origin", self.origin)
        if self.cookie:
            headers["Cookie"] = self.cookie
        reply = httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)
        for value in reply.headers.get_list("set-cookie"):
            self.set_cookies.append(value)
            self.cookie = value.split(";", 1)[0]
        return reply

    def log_in(self) -> httpx.Response:
        page = self.request("GET", "/login")
        assert page.status_code == 200, page.text
        token = csrf_of(page.text)
        return self.request("POST", "/login", data={"password": PASSWORD, "csrf_token": token})


def serve(folder: Path, **web: object) -> Served:
    port = free_port()
    config = parse_config(
        {
            "gallery": {"path": str(folder / "gallery.db")},
            "events": {"db": str(folder / "events.db")},
            "web": {
                "enabled": True,
                "listen": f"127.0.0.1:{port}",
                "password_file": str(folder / "web-password"),
                **web,
            },
        }
    )
    auth.write_password_file(config.web.password_file, PASSWORD)
    server = WebServer(config, socket_path=folder / "absent-door.sock")
    server.start()
    return Served(server.url, port, config, server)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = serve(tmp_path_factory.mktemp("proxied"), public_origin=PUBLIC + "/")
    try:
        yield served
    finally:
        served.server.stop()


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """No public_origin: the default loopback page."""
    served = serve(tmp_path_factory.mktemp("direct"))
    try:
        yield served
    finally:
        served.server.stop()


def add_person(db: Path, name: str) -> None:
    vectors = np.random.default_rng(7).normal(size=(2, EMBEDDING_DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with Gallery.open(db, create=True) as gallery:
        gallery.enroll(name, [NewSample(v, f"{name}-{i}") for i, v in enumerate(vectors)])


def names_in(db: Path) -> list[str]:
    with Gallery.open(db) as gallery:
        return [p.name for p in gallery.people()]


# --- through the proxy ------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["door.example", "door.example:443"])
def test_login_and_a_post_work_through_a_tls_proxy(proxied: Served, host: str) -> None:
    assert proxied.config.web.public_origin == PUBLIC  # the trailing "/" is normalised away
    browser = proxied.browser(host, PUBLIC)
    reply = browser.log_in()
    assert reply.status_code == 303 and reply.headers["location"] == "/", reply.text
    assert browser.request("GET", "/").status_code == 200

    db = Path(proxied.config.gallery.path)
    add_person(db, f"Proxy {host}")
    token = csrf_of(browser.request("GET", "/people").text)
    data = {"name": f"Proxy {host}", "new_name": f"Moved {host}", "csrf_token": token}
    assert browser.request("POST", "/people/rename", data=data).status_code == 200
    assert f"Moved {host}" in names_in(db)

    logout = browser.request("POST", "/logout", data={"csrf_token": token})
    assert logout.status_code == 303
    gone = logout.headers["set-cookie"]
    assert gone.startswith(f"{SECURE_COOKIE}=") and "Secure" in gone and "Max-Age=0" in gone
    assert browser.request("GET", "/").status_code == 303  # logged out


def test_the_session_cookie_through_an_https_proxy_is_secure_and_host_only(
    proxied: Served,
) -> None:
    """The browser talks https to the proxy though the hub serves plain HTTP: a Secure
    `__Host-` cookie, which the browser never sends over plain HTTP nor to another host."""
    browser = proxied.browser("door.example", PUBLIC)
    browser.log_in()
    assert len(browser.set_cookies) == 2  # the login page's session, then the fresh one
    for cookie in browser.set_cookies:
        name, _, attributes = cookie.partition(";")
        assert name.startswith(f"{SECURE_COOKIE}=")
        assert "Secure" in attributes and "HttpOnly" in attributes
        assert "SameSite=strict" in attributes and "Path=/" in attributes
        assert "domain" not in attributes.lower()  # __Host-: no Domain, or browsers drop it
    assert browser.set_cookies[0].split(";")[0] != browser.set_cookies[1].split(";")[0]
    # The plain name is not read on the proxied route: the session is only under __Host-.
    plain = Browser(proxied.url, "door.example", PUBLIC, f"{COOKIE}={browser.cookie.split('=')[1]}")
    assert plain.request("GET", "/").status_code == 303


@pytest.mark.parametrize("tunnel_port", [None, 9999])
def test_an_ssh_tunnel_still_reaches_a_proxied_hub(proxied: Served, tunnel_port: int) -> None:
    """ssh -L PORT:127.0.0.1:8080 to the Pi: the browser's origin is http://127.0.0.1:PORT
    (plain HTTP on this machine), so the cookie is the plain one, without Secure."""
    port = tunnel_port or proxied.port
    for name in ("127.0.0.1", "localhost", "[::1]"):
        browser = proxied.browser(f"{name}:{port}", f"http://{name}:{port}")
        reply = browser.log_in()
        assert reply.status_code == 303 and reply.headers["location"] == "/", reply.text
        assert all(c.startswith(f"{COOKIE}=") for c in browser.set_cookies)
        assert not any("Secure" in c for c in browser.set_cookies)
        assert browser.request("GET", "/people").status_code == 200


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:443", "door.example.evil.example", "192.0.2.66", "a b"],
)
def test_a_foreign_host_is_refused_with_public_origin(proxied: Served, host: str) -> None:
    """Nothing is served to a Host that is not the door's (DNS rebinding, a misdirected
    proxy): not the login page, not a static file, not a POST."""
    browser = proxied.browser(host, f"https://{host}")
    for method, path in (("GET", "/login"), ("GET", "/static/htmx.min.js"), ("POST", "/login")):
        reply = browser.request(method, path)
        assert reply.status_code == 421, (method, path, reply.text)
        assert "this door's page answers at https://door.example" in reply.text
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert "set-cookie" not in reply.headers


def test_a_request_without_a_host_is_refused_with_public_origin(proxied: Served) -> None:
    with socket.create_connection(("127.0.0.1", proxied.port), timeout=10) as sock:
        sock.sendall(b"GET /login HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 421 "), answer[:200]


def test_the_proxy_must_pass_the_host_header(proxied: Served) -> None:
    """nginx sends Host 127.0.0.1:PORT unless told `proxy_set_header Host $host;`: the page
    would then set the plain cookie for a browser on https. The login says what to fix."""
    browser = proxied.browser(f"127.0.0.1:{proxied.port}", PUBLIC)
    reply = browser.log_in()
    assert reply.status_code == 403
    assert "the proxy must pass the browser's Host header" in reply.text
    assert "proxy_set_header Host $host;" in reply.text
    assert browser.request("GET", "/").status_code == 303  # not logged in


def test_another_site_is_refused_through_the_proxy(proxied: Served) -> None:
    for origin in ("https://evil.example", "http://door.example", "null"):
        browser = proxied.browser("door.example", origin)
        reply = browser.log_in()
        assert reply.status_code == 403 and "cross-site request" in reply.text, origin


def test_a_plain_http_public_origin_keeps_the_plain_cookie(tmp_path: Path) -> None:
    served = serve(tmp_path, public_origin="HTTP://Door.LAN:8080")
    try:
        assert served.config.web.public_origin == "http://door.lan:8080"
        # nginx's $host drops the port; the browser's own Host keeps it.
        for host in ("door.lan", "door.lan:8080"):
            browser = served.browser(host, "http://door.lan:8080")
            assert browser.log_in().status_code == 303
            assert all(c.startswith(f"{COOKIE}=") for c in browser.set_cookies)
            assert not any("Secure" in c for c in browser.set_cookies)
    finally:
        served.server.stop()


# --- without public_origin --------------------------------------------------------------------


def test_without_public_origin_the_proxy_s_origin_is_refused(direct: Served) -> None:
    """The bug: behind a proxy every POST, the login included, was 403."""
    for host in ("door.example", f"127.0.0.1:{direct.port}"):
        browser = direct.browser(host, PUBLIC)
        reply = browser.log_in()
        assert reply.status_code == 403 and "cross-site request" in reply.text, host
        assert browser.request("GET", "/").status_code == 303


def test_a_rebound_name_cannot_post_to_a_loopback_hub(direct: Served) -> None:
    """DNS rebinding: a hostile site whose name now resolves to 127.0.0.1 (the Pi itself, or
    the admin's ssh tunnel) is its own origin, so Origin matched Host. It may load the login
    page (no session cookie of the door's is sent to it) but not log in, nor spend the login
    rate limit."""
    rebound = f"evil.example:{direct.port}"
    browser = direct.browser(rebound, f"http://{rebound}")
    assert browser.request("GET", "/login").status_code == 200
    for _ in range(auth.PER_ADDRESS_FAILURES + 1):
        reply = browser.log_in()
        assert reply.status_code == 403, reply.text
        assert "is not this door's address" in reply.text
    assert browser.request("GET", "/").status_code == 303
    # Nothing was counted against 127.0.0.1: the admin still logs in.
    admin = Browser(direct.url, f"127.0.0.1:{direct.port}", f"http://127.0.0.1:{direct.port}")
    assert admin.log_in().status_code == 303


def test_a_loopback_hub_keeps_answering_its_loopback_names(direct: Served) -> None:
    for name in ("127.0.0.1", "localhost", "[::1]"):
        browser = direct.browser(f"{name}:{direct.port}", f"http://{name}:{direct.port}")
        assert browser.log_in().status_code == 303, name
        assert all(c.startswith(f"{COOKIE}=") for c in browser.set_cookies)


# --- the rules, without a server ---------------------------------------------------------------


def origins(listen: str, public: str = "", tls: bool = False) -> Origins:
    return Origins(parse_config({"web": {"listen": listen, "public_origin": public}}), tls=tls)


def test_a_lan_listen_answers_any_name_of_the_pi_without_public_origin() -> None:
    """The hub cannot know every name the Pi has (door.local, door.lan, its addresses)."""
    lan = origins("0.0.0.0:8080")
    for host in ("door.local:8080", "192.168.1.20:8080", "door.lan:8080"):
        assert not lan.refuses(host)
        assert lan.own_origin(host) == f"http://{host}"
        assert lan.origin_problem(f"http://{host}", host) is None
    assert lan.origin_problem("http://evil.example", "door.local:8080") == "cross-site request"
    assert origins("0.0.0.0:8080", tls=True).own_origin("door.local:8080") == (
        "https://door.local:8080"
    )


def test_public_origin_makes_the_host_an_allow_list_for_any_listen() -> None:
    lan = origins("0.0.0.0:8080", PUBLIC)
    assert lan.refuses("192.168.1.20:8080") and lan.refuses("door.local:8080")
    assert lan.refuses("0.0.0.0:8080") and lan.refuses(None) and lan.refuses("")
    assert not lan.refuses("door.example") and not lan.refuses("127.0.0.1:8080")
    named = origins("192.168.1.20:8080", PUBLIC)
    assert not named.refuses("192.168.1.20:8080")  # the listen address itself
    assert named.own_origin("192.168.1.20:8080") == "http://192.168.1.20:8080"
    six = origins("[::1]:8080")
    assert six.own_origin("[::1]:8080") == "http://[::1]:8080"
    assert six.own_origin("[0:0::1]:8080") == "http://[0:0::1]:8080"


def test_only_the_public_host_gets_the_public_scheme() -> None:
    proxy = origins("127.0.0.1:8080", "https://door.example:8443")
    assert proxy.secure("door.example") and proxy.secure("door.example:8443")
    assert proxy.own_origin("door.example") == "https://door.example:8443"
    assert not proxy.secure("door.example:8080")  # straight to the hub, not the proxy
    assert not proxy.secure("127.0.0.1:8080") and not proxy.secure(None)
    assert origins("127.0.0.1:8080", tls=True).secure("127.0.0.1:8080")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("door.example", ("door.example", None)),
        ("Door.Example:443", ("door.example", 443)),
        ("[::1]:8080", ("::1", 8080)),
        ("[0:0::1]", ("::1", None)),
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::g]", None),
        ("a b", None),
        ("door.example:", None),
        ("", None),
        (None, None),
    ],
)
def test_host_headers_are_read_strictly(header: str | None, expected: object) -> None:
    assert split_host(header) == expected
