"""The web page over real HTTP: uvicorn serving the app on a loopback port, httpx as client.

Security first: no page without a session, no POST without the CSRF token, login rate
limits, bounded uploads, a hostile PNG refused cleanly, snapshots served only from their
folder, CSV that a spreadsheet cannot execute. The browser tests (test_web_browser.py) show
the same pages in Chromium.
"""

from __future__ import annotations

import asyncio
import csv
import html
import http
import io
import json
import logging
import os
import re
import socket
import sqlite3
import ssl
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from web_support import PASSWORD, csrf_of, forged_png, free_port, self_signed, unlock_fields

from edge_app import advice, enroll
from edge_app.advice import Advised
from edge_app.config import Config, ConfigError, parse_config
from edge_app.errors import UserError
from edge_app.events import EventLog
from edge_app.gallery import EMBEDDING_DIM, Gallery, NewSample
from edge_app.web import auth
from edge_app.web.history import (
    CSV_HEADER,
    UNKNOWN_LABEL,
    UNKNOWN_PERSON,
    Filters,
    History,
    HistoryError,
    safe_cell,
)
from edge_app.web.people import page_error
from edge_app.web.server import (
    HEAD_TIMEOUT_S,
    PER_ADDRESS_CONNECTIONS,
    WebError,
    WebServer,
    check_settings,
)

PAGES = ["/", "/people", "/events", "/events.csv", "/health", "/unlock", "/people/remove?name=x"]
FRAGMENTS = ["/fragments/status", "/fragments/recent", "/fragments/live", "/live.jpg"]
POSTS = ["/logout", "/people/enroll", "/people/add", "/people/rename", "/people/remove"]
POSTS += ["/people/export", "/people/enroll-camera", "/people/access", "/unlock"]


@dataclass
class Site:
    url: str
    config: Config
    server: WebServer
    folder: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, follow_redirects=True)

    def login(self, client: httpx.Client | None = None) -> httpx.Client:
        client = client or self.client()
        token = csrf_of(client.get("/login").text)
        reply = client.post("/login", data={"password": PASSWORD, "csrf_token": token})
        assert reply.status_code == 200 and reply.url.path == "/", reply.text
        return client

    def token(self, client: httpx.Client) -> str:
        return csrf_of(client.get("/people").text)

    def reset_limits(self) -> None:
        self.server.app.state.web.limiter = auth.LoginLimiter()


def web_config(folder: Path, port: int, **web: object) -> Config:
    return parse_config(
        {
            "gallery": {"path": str(folder / "state" / "gallery.db")},
            "events": {
                "db": str(folder / "state" / "events.db"),
                "snapshots": str(folder / "state" / "snapshots"),
            },
            "web": {
                "enabled": True,
                "listen": f"127.0.0.1:{port}",
                "password_file": str(folder / "state" / "web-password"),
                "remote_unlock": True,
                **web,
            },
        }
    )


def serve(
    folder: Path,
    head_timeout_s: float = HEAD_TIMEOUT_S,
    door_socket: Path | None = None,
    config_path: Path | None = None,
    **web: object,
) -> Site:
    """The page on a free port; its door is `door_socket` (default: none there);
    `config_path` the config file the hub says it was started with (default: the default)."""
    config = web_config(folder, free_port(), **web)
    auth.write_password_file(config.web.password_file, PASSWORD)
    server = WebServer(
        config,
        config_path=config_path,
        socket_path=door_socket or folder / "absent-door.sock",
        head_timeout_s=head_timeout_s,
    )
    server.start()
    return Site(server.url, config, server, folder)


@contextmanager
def running(folder: Path) -> Iterator[Site]:
    """serve(folder), stopped afterwards: a test module's own page."""
    served = serve(folder)
    try:
        yield served
    finally:
        served.server.stop()


@contextmanager
def logged_in(site: Site) -> Iterator[httpx.Client]:
    """A client logged in to `site`, its login limits reset first."""
    site.reset_limits()
    with site.client() as client:
        site.login(client)
        yield client


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running(tmp_path_factory.mktemp("web")) as served:
        yield served


@pytest.fixture
def user(site: Site) -> Iterator[httpx.Client]:
    with logged_in(site) as client:
        yield client


def add_person(db: Path, name: str, samples: int = 2) -> None:
    rng = np.random.default_rng(len(name))
    vectors = rng.normal(size=(samples, EMBEDDING_DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with Gallery.open(db, create=True) as gallery:
        gallery.enroll(name, [NewSample(v, f"{name}-{i}") for i, v in enumerate(vectors)])


def with_people(db: Path, *names: str) -> None:
    """Enrol each of `names` the site's gallery does not hold yet (add_person)."""
    for name in names:
        if name not in names_in(db):
            add_person(db, name)


def names_in(db: Path) -> list[str]:
    if not db.exists():
        return []
    with Gallery.open(db) as gallery:
        return [p.name for p in gallery.people()]


# --- sessions and login ---------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_every_page_redirects_to_login_without_a_session(site: Site, path: str) -> None:
    with site.client() as client:
        reply = client.get(path, follow_redirects=False)
    assert reply.status_code == 303
    assert reply.headers["location"].startswith("/login?next=")
    assert "Log in" in httpx.get(site.url + reply.headers["location"]).text


@pytest.mark.parametrize("path", FRAGMENTS)
def test_fragments_send_htmx_to_the_login_page(site: Site, path: str) -> None:
    reply = httpx.get(site.url + path, headers={"HX-Request": "true"})
    assert reply.status_code == 401
    assert reply.headers["hx-redirect"].startswith("/login?next=")
    plain = httpx.get(site.url + path, follow_redirects=False)
    assert plain.status_code == 303 and "/login" in plain.headers["location"]


def test_login_sets_a_fresh_strict_httponly_session(site: Site) -> None:
    site.reset_limits()
    with site.client() as client:
        page = client.get("/login")
        assert "edge_door_session" not in client.cookies  # no session before the login
        form_token = page.headers["set-cookie"]  # the login form's token, for it alone
        assert form_token.startswith(f"edge_door_login={csrf_of(page.text)};")
        assert "HttpOnly" in form_token and "SameSite=strict" in form_token
        assert "Path=/login" in form_token and "Max-Age" not in form_token
        reply = client.post(
            "/login",
            data={"password": PASSWORD, "csrf_token": csrf_of(page.text), "next": "/events"},
            follow_redirects=False,
        )
        assert reply.status_code == 303 and reply.headers["location"] == "/events"
        # The session's, then the trusted device's (tests/test_login_limiter.py).
        cookie, device = reply.headers.get_list("set-cookie")
        assert cookie.startswith("edge_door_session=")
        assert device.startswith("edge_door_device=") and "Path=/login" in device
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/;" in cookie
        assert "Secure" not in cookie  # plain HTTP; see the TLS test
        assert client.get("/events").status_code == 200
    with site.client() as other:  # the login form's token is no session
        other.cookies.set("edge_door_session", csrf_of(page.text))
        assert other.get("/", follow_redirects=False).status_code == 303


def test_a_flood_of_login_page_visits_cannot_spoil_the_owners_login(site: Site) -> None:
    """The login page keeps no state for a visitor: its form's token is the browser's
    cookie. When each visit made a session in a store of 500, 520 visits from anyone who
    could reach the page pushed out the session of the owner's open login form: the
    owner's right password was refused ("no session") for as long as the flood went on."""
    site.reset_limits()
    with site.client() as owner:
        token = csrf_of(owner.get("/login").text)
        with httpx.Client(base_url=site.url) as flood:
            for _ in range(auth.MAX_SESSIONS + 20):
                flood.cookies.clear()
                assert flood.get("/login").status_code == 200
        reply = owner.post(
            "/login", data={"password": PASSWORD, "csrf_token": token}, follow_redirects=False
        )
        assert reply.status_code == 303, reply.text
        assert owner.get("/events").status_code == 200


def test_a_login_needs_the_forms_own_token(site: Site) -> None:
    site.reset_limits()
    with site.client() as client:
        token = csrf_of(client.get("/login").text)
        for cookie, field, says in (
            (token, "", "missing or wrong CSRF token"),
            (token, "x" * 43, "missing or wrong CSRF token"),
            (None, token, "no session"),  # the token without its cookie
            ("not-a-token", "not-a-token", "no session"),  # a cookie this page did not make
        ):
            client.cookies.clear()
            if cookie is not None:
                client.cookies.set("edge_door_login", cookie)
            reply = client.post(
                "/login", data={"password": PASSWORD, "csrf_token": field}, follow_redirects=False
            )
            assert reply.status_code == 403 and says in reply.text, (cookie, field, reply.text)


def test_login_next_only_goes_to_this_site(site: Site) -> None:
    site.reset_limits()
    with site.client() as client:
        token = csrf_of(client.get("/login").text)
        reply = client.post(
            "/login",
            data={"password": PASSWORD, "csrf_token": token, "next": "//evil.example/x"},
            follow_redirects=False,
        )
    assert reply.headers["location"] == "/"


def test_wrong_password_is_refused(site: Site) -> None:
    site.reset_limits()
    with site.client() as client:
        token = csrf_of(client.get("/login").text)
        reply = client.post("/login", data={"password": "not it", "csrf_token": token})
        assert reply.status_code == 401 and "Wrong password." in reply.text
        assert client.get("/", follow_redirects=False).status_code == 303


def test_logins_are_rate_limited_per_address(site: Site) -> None:
    now = [1000.0]
    site.server.app.state.web.limiter = auth.LoginLimiter(clock=lambda: now[0])
    with site.client() as client:
        token = csrf_of(client.get("/login").text)
        for _ in range(auth.PER_ADDRESS_FAILURES):
            wrong = client.post("/login", data={"password": "guess", "csrf_token": token})
            assert wrong.status_code == 401
        # The next check comes only after the backoff: even the right password waits for it.
        blocked = client.post("/login", data={"password": PASSWORD, "csrf_token": token})
        assert blocked.status_code == 429
        assert "too many failed logins from 127.0.0.1; try again in 2 s" in blocked.text
        assert client.get("/", follow_redirects=False).status_code == 303
    site.reset_limits()


def test_rate_limited_logins_are_logged_a_few_lines_then_with_a_count(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an audit: each refused login was a warning line, 995 lines for 1,000 tries
    in 1.5 s, which made journald drop the hub's other lines too ("web unlock"...). A few
    lines per REFUSAL_LOG_SECONDS, then one that says how many were held back."""
    from edge_app.control import REFUSAL_LOG_SECONDS
    from edge_app.logs import Throttle
    from edge_app.web.app import REFUSAL_LINES

    now, logged_at = [1000.0], [0.0]
    state = site.server.app.state.web
    state.limiter = auth.LoginLimiter(clock=lambda: now[0])
    state.rate_limited_lines = Throttle(
        REFUSAL_LOG_SECONDS, lambda: logged_at[0], burst=REFUSAL_LINES
    )
    try:
        with caplog.at_level(logging.WARNING), site.client() as client:
            token = csrf_of(client.get("/login").text)
            for _ in range(auth.PER_ADDRESS_FAILURES + 3 * REFUSAL_LINES):
                client.post("/login", data={"password": "guess", "csrf_token": token})
            logged_at[0] += REFUSAL_LOG_SECONDS  # (the limiter's clock stands still)
            client.post("/login", data={"password": "guess", "csrf_token": token})
    finally:
        site.reset_limits()
    lines = [r.getMessage() for r in caplog.records if "reason=rate-limit" in r.getMessage()]
    assert len(lines) == REFUSAL_LINES + 1, lines
    assert lines[-1].endswith(f"held_back={2 * REFUSAL_LINES}"), lines[-1]


def test_the_limiter_counts_per_address_and_overall() -> None:
    now = [1000.0]
    limiter = auth.LoginLimiter(per_address=3, overall=5, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.attempt("10.0.0.1") is None
    assert "from 10.0.0.1" in (limiter.attempt("10.0.0.1") or "")
    assert limiter.attempt("10.0.0.2") is None
    assert limiter.attempt("10.0.0.3") is None
    assert "on this door" in (limiter.attempt("10.0.0.9") or "")  # 5 in total: everyone waits
    limiter.refund("10.0.0.3")  # that attempt checked no password
    assert limiter.attempt("10.0.0.9") is None
    now[0] += auth.QUIET_S + 1  # an hour without a check: both counters start over
    assert limiter.attempt("10.0.0.1") is None and limiter.attempt("10.0.0.8") is None


def test_a_right_password_gives_back_its_attempt_and_the_address_failures() -> None:
    limiter = auth.LoginLimiter(per_address=3, overall=5, clock=lambda: 1000.0)
    assert limiter.attempt("10.0.0.5") is None  # a failure elsewhere still counts overall
    for _ in range(3):
        assert limiter.attempt("10.0.0.1") is None
    limiter.succeeded("10.0.0.1")  # the third attempt was the right password
    for _ in range(3):  # its address starts over, and no longer counts for the door
        assert limiter.attempt("10.0.0.1") is None
    assert "from 10.0.0.1" in (limiter.attempt("10.0.0.1") or "")
    for _ in range(2):  # 1 + 2 failed before the right password: 3 of the door's 5
        assert limiter.attempt("10.0.0.6") is None
    assert "on this door" in (limiter.attempt("10.0.0.7") or "")


def test_the_limiter_holds_under_parallel_attempts() -> None:
    limiter = auth.LoginLimiter(per_address=5, overall=30, clock=lambda: 1000.0)
    start = threading.Barrier(16)

    def burst(number: int) -> list[str | None]:
        start.wait()
        return [limiter.attempt(f"10.0.{number}.1") for _ in range(10)]

    with ThreadPoolExecutor(16) as pool:
        answers = [a for batch in pool.map(burst, range(16)) for a in batch]
    assert answers.count(None) == 30
    assert all("too many failed logins" in (a or "") for a in answers if a is not None)


@pytest.mark.parametrize("path", ["/login", "/unlock"])
def test_parallel_wrong_passwords_cannot_outrun_the_limit(
    site: Site, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = site.server.app.state.web
    site.reset_limits()
    with site.client() as first:
        if path == "/unlock":
            site.login(first)
            fields = unlock_fields(first)
        else:
            fields = {"csrf_token": csrf_of(first.get("/login").text)}
        cookies = dict(first.cookies)
    # A stopped clock: however slowly the requests arrive, none is a backoff later.
    state.limiter = auth.LoginLimiter(clock=lambda: 1000.0)
    checked: list[str] = []
    verify = state.password.verify

    def counted(password: str) -> bool:
        checked.append(password)
        return verify(password)

    monkeypatch.setattr(state.password, "verify", counted)
    tries = 12  # all at once from one address, more than the limit of 5
    start = threading.Barrier(tries)

    def guess(number: int) -> httpx.Response:
        with httpx.Client(base_url=site.url, timeout=60.0, cookies=cookies) as client:
            start.wait()
            return client.post(path, data={"password": f"guess {number}", **fields})

    try:
        with ThreadPoolExecutor(tries) as pool:
            replies = list(pool.map(guess, range(tries)))
    finally:
        site.reset_limits()
    statuses = sorted(reply.status_code for reply in replies)
    if path == "/unlock":  # an unlock form is good for one POST: one check, the rest refused
        assert len(checked) == 1 and statuses == [401] + [409] * (tries - 1)
        return
    assert len(checked) == auth.PER_ADDRESS_FAILURES
    assert statuses == [401] * auth.PER_ADDRESS_FAILURES + [429] * (
        tries - auth.PER_ADDRESS_FAILURES
    )
    refused = [reply.text for reply in replies if reply.status_code == 429]
    assert all("too many failed logins from 127.0.0.1; try again in 2 s" in t for t in refused)


def test_sessions_expire_when_idle_and_at_their_maximum_age() -> None:
    now = [0.0]
    store = auth.SessionStore(idle_s=60, max_age_s=300, clock=lambda: now[0])
    session = store.create("10.0.0.1", auth.ADMIN)
    now[0] = 59
    assert store.get(session.id) is session
    now[0] = 59 + 61
    assert store.get(session.id) is None  # idle
    session = store.create("10.0.0.1", auth.ADMIN)
    for minute in range(1, 6):
        now[0] = 120 + minute * 55
        assert store.get(session.id) is session
    now[0] = 120 + 301
    assert store.get(session.id) is None  # absolute limit, however active


def test_session_store_is_bounded_and_keeps_the_logged_in() -> None:
    store = auth.SessionStore(idle_s=600, max_age_s=3600, limit=10)
    admin = store.create("10.0.0.1", auth.ADMIN)
    for number in range(50):
        store.create(f"10.0.1.{number}")
    assert len(store) <= 10
    assert store.get(admin.id) is admin


def test_logout_ends_the_session(site: Site) -> None:
    site.reset_limits()
    with site.client() as client:
        site.login(client)
        token = site.token(client)
        reply = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
        assert reply.status_code == 303 and reply.headers["location"] == "/login"
        assert client.get("/", follow_redirects=False).status_code == 303


def test_security_headers_on_every_response(site: Site, user: httpx.Client) -> None:
    for path in ("/", "/people", "/login", "/static/htmx.min.js", "/nope"):
        reply = user.get(path)
        policy = reply.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy
        assert reply.headers["x-frame-options"] == "DENY"
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["referrer-policy"] == "same-origin"
        assert "server" not in reply.headers
    assert user.get("/people").headers["cache-control"] == "no-store"


def test_pages_have_no_inline_script(site: Site, user: httpx.Client) -> None:
    for path in ("/", "/people", "/events", "/health", "/unlock"):
        html = user.get(path).text
        assert "<script>" not in html and " on" + "click=" not in html
        for tag in html.split("<script")[1:]:
            assert tag.lstrip().startswith('src="/static/'), tag[:80]


# --- CSRF -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", POSTS)
def test_post_without_the_csrf_token_is_refused(site: Site, user: httpx.Client, path: str) -> None:
    db = Path(site.config.gallery.path)
    if "Csrf Target" not in names_in(db):
        add_person(db, "Csrf Target")
    before = names_in(db)
    reply = user.post(path, data={"name": "Csrf Target", "new_name": "Renamed", "confirm": "yes"})
    assert reply.status_code == 403 and "CSRF" in reply.text
    assert names_in(db) == before
    assert user.get("/", follow_redirects=False).status_code == 200  # still logged in


def test_post_with_a_wrong_token_or_from_another_site_is_refused(
    site: Site, user: httpx.Client
) -> None:
    db = Path(site.config.gallery.path)
    if "Origin Target" not in names_in(db):
        add_person(db, "Origin Target")
    data = {"name": "Origin Target", "new_name": "Moved"}
    wrong = user.post("/people/rename", data={**data, "csrf_token": "x" * 43})
    assert wrong.status_code == 403
    header = user.post("/people/rename", data=data, headers={"X-CSRF-Token": "nope"})
    assert header.status_code == 403
    token = site.token(user)
    cross = user.post(
        "/people/rename",
        data={**data, "csrf_token": token},
        headers={"Origin": "http://evil.example"},
    )
    assert cross.status_code == 403 and "cross-site" in cross.text
    assert "Origin Target" in names_in(db)


def test_a_post_without_a_session_is_refused(site: Site) -> None:
    reply = httpx.post(site.url + "/people/remove", data={"name": "x", "confirm": "yes"})
    assert reply.status_code == 403


# --- people -----------------------------------------------------------------------------------


def test_make_someone_a_known_visitor_and_back(site: Site, user: httpx.Client) -> None:
    db = Path(site.config.gallery.path)
    add_person(db, "Dan Smith")
    token = site.token(user)
    assert "known visitor</span>" not in user.get("/people").text

    made = user.post(
        "/people/access", data={"name": "Dan Smith", "allowed": "no", "csrf_token": token}
    )

    assert made.status_code == 200
    assert "'Dan Smith' is a known visitor" in html.unescape(made.text)
    assert "known visitor</span>" in made.text and 'name="allowed" value="yes"' in made.text
    with Gallery.open(db) as gallery:
        assert gallery.load_matrix().no_access == frozenset({"Dan Smith"})
    bad = user.post(
        "/people/access", data={"name": "Dan Smith", "allowed": "maybe", "csrf_token": token}
    )
    assert bad.status_code == 422
    nobody = user.post(
        "/people/access", data={"name": "Nobody", "allowed": "yes", "csrf_token": token}
    )
    assert nobody.status_code == 422 and "not enrolled" in html.unescape(nobody.text)
    back = user.post(
        "/people/access", data={"name": "dan  smith", "allowed": "yes", "csrf_token": token}
    )
    assert back.status_code == 200
    assert "'Dan Smith' may open the door" in html.unescape(back.text)  # the name as stored
    with Gallery.open(db) as gallery:
        assert gallery.load_matrix().no_access == frozenset()
    renamed = user.post(
        "/people/rename",
        data={"name": "Dan Smith", "new_name": " Dan  Smyth ", "csrf_token": token},
    )
    assert "renamed 'Dan Smith' to 'Dan Smyth'" in html.unescape(renamed.text)


def test_rename_remove_and_export(site: Site, user: httpx.Client) -> None:
    db = Path(site.config.gallery.path)
    add_person(db, "Ada Lovelace")
    token = site.token(user)
    page = user.get("/people").text
    assert 'data-person="Ada Lovelace"' in page
    renamed = user.post(
        "/people/rename",
        data={"name": "Ada Lovelace", "new_name": "Ada King", "csrf_token": token},
    )
    assert renamed.status_code == 200 and "renamed 'Ada Lovelace' to 'Ada King'" in html.unescape(
        renamed.text
    )
    assert "Ada King" in names_in(db) and "Ada Lovelace" not in names_in(db)
    clash = user.post(
        "/people/rename", data={"name": "Ada King", "new_name": "", "csrf_token": token}
    )
    assert clash.status_code == 422 and "the name is empty" in clash.text

    confirm = user.get("/people/remove", params={"name": "Ada King"})
    assert "Remove Ada King?" in confirm.text and 'name="confirm" value="yes"' in confirm.text
    # The history stays, and the page gives the command that erases it, quoted for a shell.
    assert "sudo -u edge-app edge-app remove --history -- 'Ada King'" in html.unescape(confirm.text)
    unconfirmed = user.post("/people/remove", data={"name": "Ada King", "csrf_token": token})
    assert unconfirmed.status_code == 422 and "Ada King" in names_in(db)

    exported = user.post("/people/export", data={"csrf_token": token})
    assert exported.status_code == 200
    assert "attachment" in exported.headers["content-disposition"]
    lines = exported.text.splitlines()
    assert '"format": "edge-app-gallery"' in lines[0]
    assert any('"name": "Ada King"' in line for line in lines[1:])

    removed = user.post(
        "/people/remove", data={"name": "Ada King", "confirm": "yes", "csrf_token": token}
    )
    assert removed.status_code == 200 and "removed 'Ada King' (2 samples)" in html.unescape(
        removed.text
    )
    assert "Ada King" not in names_in(db)
    assert 'data-person="Ada King"' not in removed.text


def test_a_gallery_the_hub_cannot_write_is_explained_in_the_pages_words(
    site: Site, user: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change the hub could not write into the gallery ended with the command line's
    advice: "run it as the user that owns the gallery (sudo -u edge-app), or give a --db in
    a folder you can write". A web user has neither a shell nor a --db: the page says what
    the hub's service needs, and where the docs say how. (Tests run as root, whom no folder
    mode stops: SQLite's refusal for a gallery whose folder cannot be written, no -shm file
    made beside it, is raised where it comes.)"""
    db = Path(site.config.gallery.path)
    with_people(db, "Grace Brewster Murray Hopper")
    token = site.token(user)

    def read_only_folder(self: Gallery) -> None:
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(Gallery, "_configure", read_only_folder)
    for action, form in (
        ("rename", {"name": "Grace Brewster Murray Hopper", "new_name": "Grace"}),
        ("access", {"name": "Grace Brewster Murray Hopper", "allowed": "no"}),
        ("remove", {"name": "Grace Brewster Murray Hopper", "confirm": "yes"}),
    ):
        reply = user.post(f"/people/{action}", data={**form, "csrf_token": token})
        page = html.unescape(reply.text)
        assert reply.status_code == 422 and f"cannot write the gallery {db}" in page, action
        assert "(edge-app-hub) must run as the user that owns the gallery" in page
        assert "docs/WEB.md" in page and "--db" not in page and "sudo" not in page
        assert (
            'data-person="Grace Brewster Murray Hopper"' in page
        )  # still listed, read without writing
    monkeypatch.undo()
    assert "Grace Brewster Murray Hopper" in names_in(db)


def test_a_gallery_path_that_is_no_gallery_is_explained_in_the_pages_words(
    tmp_path: Path,
) -> None:
    """The People page listed nobody and said the command line's "pass --db with the path of
    an edge-app gallery": the page names the config's key instead."""
    with running(tmp_path) as own:
        db = Path(own.config.gallery.path)
        db.write_text("a note, not a gallery\n" * 10)
        with logged_in(own) as client:
            page = html.unescape(client.get("/people").text)
    assert f"{db} is not an SQLite database" in page and "--db" not in page
    assert "set [gallery] path in the hub's config to the door's gallery" in page


def test_an_export_import_would_refuse_is_refused_as_the_command_line_refuses_it(
    site: Site,
    user: httpx.Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An audit: with 4,999 people the page sent a 143 MB export that `edge-app import`
    refuses (more than MAX_IMPORT_BYTES), while `edge-app export FILE` refuses to write it."""
    from edge_app import cli, gallery

    db = Path(site.config.gallery.path)
    # add_person's vectors follow the name's length: not 12 letters, as "Already Here" has
    add_person(db, "Grace Brewster Hopper", samples=3)
    token = site.token(user)
    by_cli = tmp_path / "export.jsonl"
    assert cli.main(["export", "--db", str(db), str(by_cli)]) == 0
    expected = by_cli.read_bytes()

    # Under the limit: the command line's export, byte for byte but for the time it was made.
    exported = user.post("/people/export", data={"csrf_token": token})
    assert exported.status_code == 200
    assert "attachment" in exported.headers["content-disposition"]
    (header, rest), (want_header, want_rest) = (
        data.split(b"\n", 1) for data in (exported.content, expected)
    )
    assert rest == want_rest
    assert {**json.loads(header), "exported_utc": ""} == {
        **json.loads(want_header),
        "exported_utc": "",
    }

    monkeypatch.setattr(gallery, "MAX_IMPORT_BYTES", len(expected) - 1)
    assert cli.main(["export", "--db", str(db), str(by_cli)]) == 2
    cli_said = capsys.readouterr().err
    reason = cli_said[cli_said.index("the export is") : cli_said.index(f"; {by_cli} is unchanged")]
    assert "back up the gallery file itself instead" in reason
    refused = user.post("/people/export", data={"csrf_token": token})
    assert refused.status_code == 422
    assert "content-disposition" not in refused.headers  # nothing to save
    assert refused.headers["content-type"].startswith("text/html")
    assert f"{reason}; nothing was downloaded" in html.unescape(refused.text)


def test_health_pages_asked_at_once_share_one_check(
    site: Site, user: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review: each Health check opens the models (about 100 MB), and requests waiting
    for one check at a time each held a worker thread every page shares (60 reloads of the
    page made the door's status take 5 s). Requests that come while a check runs share it."""
    from edge_app.web import app as web_app

    real = web_app._health_checks
    started = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def slow(state: object) -> list[dict[str, str]]:
        calls.append(1)
        started.set()
        assert release.wait(30)
        return real(state)  # type: ignore[arg-type]

    monkeypatch.setattr(web_app, "_health_checks", slow)
    # Requests that reached the check (awaiting it), counted on the server's side.
    waiting: list[int] = []

    def counted_shield(future: Any) -> Any:
        waiting.append(1)
        return asyncio.shield(future)

    asyncio_seen = SimpleNamespace(**{**vars(asyncio), "shield": counted_shield})
    monkeypatch.setattr(web_app, "asyncio", asyncio_seen)
    cookies = dict(user.cookies)
    with ThreadPoolExecutor(max_workers=6) as pool:
        first = pool.submit(user.get, "/health", timeout=60)
        assert started.wait(30)
        others = [
            pool.submit(httpx.get, site.url + "/health", cookies=cookies, timeout=60)
            for _ in range(5)
        ]
        deadline = time.monotonic() + 30
        while len(waiting) < 6:  # they arrive while the check runs
            assert time.monotonic() < deadline, f"{len(waiting)} of 6 requests reached the check"
            time.sleep(0.02)
        release.set()
        replies = [first.result(), *(future.result() for future in others)]
    assert [reply.status_code for reply in replies] == [200] * 6
    assert all("Health" in reply.text for reply in replies)
    assert len(calls) == 1  # one check for all six
    assert user.get("/health").status_code == 200 and len(calls) == 2  # the next: its own


class _FillingDisk(io.RawIOBase):
    """A file on a disk that fills after `room` bytes, as the operating system sees it:
    TemporaryFile's buffered file over it keeps what found no room in its buffer."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self.data = io.BytesIO()

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self.data.readinto(buffer)

    def write(self, data) -> int:
        if self.data.tell() + len(data) > self.room:
            raise OSError(28, "No space left on device")
        return self.data.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.data.seek(offset, whence)

    def tell(self) -> int:
        return self.data.tell()

    def truncate(self, size: int | None = None) -> int:
        return self.data.truncate(size)


@pytest.mark.parametrize("room", [None, 0, 3000], ids=["no file", "full", "fills"])
def test_an_export_on_a_full_disk_is_built_in_memory(
    site: Site,
    user: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    room: int | None,
) -> None:
    """A review: the export built in a temporary file beside the gallery failed on a full
    disk, when a backup matters most; where that file cannot be made or filled, the export
    is built in memory, the same bytes as `edge-app export FILE`."""
    import tempfile

    db = Path(site.config.gallery.path)
    if "Full Disk Person" not in names_in(db):  # the module's site: once for the three
        add_person(db, "Full Disk Person", samples=3)
    expected = io.StringIO()
    with Gallery.open(db, read_only=True) as gallery:  # what `edge-app export FILE` writes
        gallery.export(expected)

    def no_room(*args: object, **kwargs: object) -> io.BufferedRandom:
        if room is None:
            raise OSError(28, "No space left on device")
        return io.BufferedRandom(_FillingDisk(room))

    monkeypatch.setattr(tempfile, "TemporaryFile", no_room)
    with caplog.at_level(logging.WARNING, logger="edge_app.web.app"):
        exported = user.post("/people/export", data={"csrf_token": site.token(user)})
    assert exported.status_code == 200
    assert exported.content.split(b"\n", 1)[1] == expected.getvalue().encode().split(b"\n", 1)[1]
    assert int(exported.headers["content-length"]) == len(exported.content)
    assert "web export built in memory" in caplog.text and "No space left" in caplog.text


def _multipart(name: str, files: list[tuple[str, bytes]], token: str) -> dict:
    return {
        "data": {"name": name, "csrf_token": token},
        "files": [("photos", (filename, data, "image/png")) for filename, data in files],
    }


def test_too_many_photos_are_refused_before_enrolment(site: Site, user: httpx.Client) -> None:
    db = Path(site.config.gallery.path)
    before = names_in(db)
    files = [(f"p{i}.png", b"x") for i in range(site.config.web.max_upload_files + 1)]
    reply = user.post("/people/enroll", **_multipart("Too Many", files, site.token(user)))
    assert reply.status_code == 413
    assert f"at most {site.config.web.max_upload_files} photos per upload" in reply.text
    assert names_in(db) == before


def test_an_oversized_upload_is_refused_from_its_declared_length(
    site: Site, user: httpx.Client
) -> None:
    limit = site.config.web.max_upload_mb * 1_000_000
    token = site.token(user)
    cookie = f"edge_door_session={user.cookies['edge_door_session']}"
    host, port = site.server.host, site.server.port
    head = (
        f"POST /people/enroll HTTP/1.1\r\nHost: {host}:{port}\r\nCookie: {cookie}\r\n"
        f"X-CSRF-Token: {token}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {limit + 1}\r\nConnection: close\r\n\r\n"
    )
    # Only the headers are sent: the declared length alone is enough to refuse.
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head.encode() + b"--b\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0]
    # The phrase is Python's (http.HTTPStatus): "Content Too Large" from 3.13 on (RFC 9110).
    phrase = http.HTTPStatus(413).phrase.encode()
    assert status_line == b"HTTP/1.1 413 " + phrase, status_line
    assert b"larger than the limit of 40 MB" in answer


def test_a_streamed_upload_is_cut_at_the_limit(tmp_path: Path) -> None:
    small = serve(tmp_path, max_upload_mb=1)
    try:
        with small.client() as client:
            small.login(client)
            token = small.token(client)

            def chunks() -> Iterator[bytes]:
                yield b"--b\r\nContent-Disposition: form-data; "
                yield b'name="photos"; filename="a.png"\r\n\r\n'
                for _ in range(40):  # 2.6 MB, with no Content-Length
                    yield b"x" * 65536
                yield b"\r\n--b--\r\n"

            reply = client.post(
                "/people/enroll",
                content=chunks(),
                headers={"content-type": "multipart/form-data; boundary=b", "x-csrf-token": token},
            )
        assert reply.status_code == 413 and "larger than the limit of 1 MB" in reply.text
        assert not Path(small.config.gallery.path).exists()
    finally:
        small.server.stop()


@pytest.mark.usefixtures("models_dir")
def test_a_forged_30000x30000_png_is_refused_cleanly(site: Site, user: httpx.Client) -> None:
    db = Path(site.config.gallery.path)
    before = names_in(db)
    bomb = forged_png(30000, 30000)
    assert len(bomb) < 200
    reply = user.post(
        "/people/enroll",
        **_multipart("Bomb Person", [("bomb.png", bomb)], site.token(user)),
    )
    assert reply.status_code == 422
    assert 'data-photo="bomb.png"' in reply.text
    reason = reply.text.split('data-photo="bomb.png"')[1].split("</li>")[0]
    assert "PNG header declares 30000x30000 pixels" in reason, reason
    assert "nothing enrolled for 'Bomb Person'" in html.unescape(reply.text)
    assert "Traceback" not in reply.text
    assert names_in(db) == before
    # The private upload folder next to the gallery is gone.
    assert not list(db.parent.glob(".web-upload-*"))


@pytest.mark.usefixtures("models_dir")
def test_enrol_a_known_visitor_from_photos(site: Site, user: httpx.Client) -> None:
    db = Path(site.config.gallery.path)
    photo = sorted((Path(__file__).parent / "data" / "lfw_sample" / "Joe_Nichols").glob("*.jpg"))[0]
    page = user.get("/people").text
    assert page.count('name="visitor" value="yes"') == 2  # photos and camera forms
    form = _multipart("Visiting Joe", [(photo.name, photo.read_bytes())], site.token(user))
    form["data"]["visitor"] = "yes"

    reply = user.post("/people/enroll", **form)

    assert reply.status_code == 200, reply.text
    assert "known visitor</span>" in reply.text
    with Gallery.open(db) as gallery:
        assert "Visiting Joe" in gallery.load_matrix().no_access


@pytest.mark.usefixtures("models_dir")
def test_a_photo_of_someone_enrolled_says_how_to_add_it_on_the_page(
    site: Site, user: httpx.Client
) -> None:
    """Found by an audit: the near-duplicate refusal told the page's user to run
    `edge-app enroll --add 'Name' PHOTO`; the page's way is that person's own panel."""
    # (a person the site's other tests do not enrol: it is shared by the module's tests)
    photo = sorted((Path(__file__).parent / "data" / "lfw_sample" / "Rick_Perry").glob("*.jpg"))[0]
    first = user.post(
        "/people/enroll",
        **_multipart("Rick Once", [(photo.name, photo.read_bytes())], site.token(user)),
    )
    assert first.status_code == 200, first.text
    again = user.post(
        "/people/enroll",
        **_multipart("Rick Twice", [(photo.name, photo.read_bytes())], site.token(user)),
    )
    assert again.status_code == 422
    reason = html.unescape(again.text.split(f'data-photo="{photo.name}"')[1].split("</li>")[0])
    assert "the same face as 'Rick Once', already enrolled" in reason, reason
    assert "or add it to them with Add photos in their panel below" in reason, reason
    assert "edge-app" not in reason


@pytest.mark.usefixtures("models_dir")
def test_one_person_enrolled_under_a_second_name_is_told_on_the_page(
    site: Site, user: httpx.Client
) -> None:
    """Found by an audit: the same person enrolled again from other photos under another name
    raised the door's threshold for everyone, without a word. The page says so, and its way
    out, with the page's words."""
    photos = sorted((Path(__file__).parent / "data" / "lfw_sample" / "Martha_Stewart").glob("*"))
    first = user.post(
        "/people/enroll",
        **_multipart(
            "Martha Once", [(p.name, p.read_bytes()) for p in photos[:2]], site.token(user)
        ),
    )
    assert first.status_code == 200, first.text
    assert "Note:" not in first.text
    again = user.post(
        "/people/enroll",
        **_multipart(
            "Martha Two", [(p.name, p.read_bytes()) for p in photos[2:]], site.token(user)
        ),
    )
    assert again.status_code == 200, again.text
    text = html.unescape(again.text)
    assert "Note: 'Martha Two' matches 'Martha Once' at 0." in text
    assert "the door raises its threshold for everyone" in text
    assert "If it is one person, remove this name and add the photos to 'Martha Once'" in text
    assert "edge-app" not in text.split("Note:")[1].split("</")[0]


@pytest.mark.parametrize(
    ("name", "refusal"),
    [
        ("Already Here", "'Already Here' is already enrolled; add photos to them below"),
        # A Cyrillic А: a second person the page, its log and the access rules showed as
        # 'Already Here'.
        (
            "\u0410lready Here",
            "'\u0410lready Here' looks like 'Already Here', who is already enrolled: the names "
            "differ only in characters that look alike (letters of another alphabet, "
            "full-width or other compatibility forms); choose a name that reads differently, "
            "or if this is 'Already Here', add photos to them below",
        ),
    ],
)
def test_an_existing_name_is_refused_before_the_models_load(
    site: Site, user: httpx.Client, name: str, refusal: str
) -> None:
    db = Path(site.config.gallery.path)
    if "Already Here" not in names_in(db):
        add_person(db, "Already Here")
    site.server.app.state.web.engine.release()
    reply = user.post(
        "/people/enroll",
        **_multipart(name, [("a.png", forged_png(10, 10))], site.token(user)),
    )
    assert reply.status_code == 422
    assert refusal in html.unescape(reply.text)
    assert not site.server.app.state.web.engine.loaded


def _refusal(refuse: Callable[[], object]) -> UserError:
    try:
        refuse()
    except UserError as error:
        return error
    raise AssertionError("not refused")


def test_each_advice_is_worded_by_the_command_line_and_the_page_from_one_definition(
    tmp_path: Path,
) -> None:
    """The page once rewrote the command line's refusals by regex and string replacement:
    a change of the CLI's wording would have put `use --add` on a page without flags. Each
    advice (edge_app.advice.Advice) is now worded by each surface: str() keeps the CLI's
    text, the page its forms', and no flag or command."""
    db = tmp_path / "gallery.db"
    with_people(db, "Ann", "-Dash")
    with Gallery.open(db) as gallery:
        sample = NewSample(np.eye(EMBEDDING_DIM, dtype=np.float32)[0], "x")
        existing = _refusal(lambda: gallery.enroll("ann", [sample]))
        matrix = gallery.load_matrix()
        dash = gallery.embeddings("-Dash")[0]
    others = enroll.OtherPeople(matrix.embeddings, tuple(matrix.names[p] for p in matrix.person))
    errors = [
        existing,
        _refusal(lambda: enroll.existing_samples(db, "\u0410nn", add=False)),
        _refusal(lambda: enroll.existing_samples(db, "Anne", add=True)),
    ]
    rejection = enroll.enrolled_as(dash, others)
    assert rejection is not None and isinstance(rejection.said, Advised)
    lookalike = (
        "'\u0410nn' looks like 'Ann', who is already enrolled: the names differ only in "
        "characters that look alike (letters of another alphabet, full-width or other "
        "compatibility forms); choose a name that reads differently, or if this is 'Ann', "
    )
    near_duplicate = (
        "the same face as '-Dash', already enrolled (cosine 1.000 > 0.98 to one of their "
        "samples): one person under two names is let in as either; drop this photo, or add it "
        "to them with "
    )
    said = [(str(error), page_error(error)) for error in errors]
    said.append((rejection.message, advice.web(rejection.said)))
    assert said == [
        (
            "'ann' is already enrolled (as 'Ann'); use --add to add photos to them",
            "'ann' is already enrolled (as 'Ann'); add photos to them below",
        ),
        (lookalike + "use --add to add photos to them", lookalike + "add photos to them below"),
        (
            "nobody named 'Anne' is enrolled (did you mean 'Ann'?); drop --add to enrol them",
            "nobody named 'Anne' is enrolled (did you mean 'Ann'?); enrol them with the form above",
        ),
        (
            near_duplicate + "`edge-app enroll --add -- -Dash PHOTO`",
            near_duplicate + "Add photos in their panel below",
        ),
    ]
    for _, page in said:
        assert "--add" not in page and "edge-app" not in page, page
    kinds = {error.args[0].advice for error in errors} | {rejection.said.advice}
    # The gallery file's own advice: tests/test_gallery_advice.py.
    assert kinds == {advice.Advice.ADD_PHOTOS, advice.Advice.ENROL_NEW, advice.Advice.ADD_PHOTO_TO}


def test_a_name_with_the_words_of_advice_is_shown_as_typed(tmp_path: Path) -> None:
    """Found while moving the advice to its own values: the page's rewrite changed the words
    wherever they were, a person's name in the message included."""
    db = tmp_path / "gallery.db"
    with_people(db, "Ann")
    name = "Zed, use --add to add photos to them"
    error = _refusal(lambda: enroll.existing_samples(db, name, add=True))
    assert page_error(error) == (
        "nobody named 'Zed, use --add to add photos to them' is enrolled; enrol them with the "
        "form above"
    )


def test_a_rename_to_a_name_that_looks_like_an_enrolled_one_is_refused(
    site: Site, user: httpx.Client
) -> None:
    db = Path(site.config.gallery.path)
    with_people(db, "Already Here", "Someone Else To Rename")
    renamed = user.post(
        "/people/rename",
        data={
            "name": "Someone Else To Rename",
            "new_name": "\uff21lready Here",  # a full-width A
            "csrf_token": site.token(user),
        },
    )
    assert renamed.status_code == 422
    assert "looks like 'Already Here', who is already enrolled" in html.unescape(renamed.text)
    assert "Someone Else To Rename" in names_in(db)


def test_camera_enrolment_without_a_door_says_why(site: Site, user: httpx.Client) -> None:
    db = Path(site.config.gallery.path)
    before = names_in(db)
    reply = user.post(
        "/people/enroll-camera", data={"name": "Camera Person", "csrf_token": site.token(user)}
    )
    assert reply.status_code == 422
    assert "the door has no fresh camera frame" in reply.text
    assert names_in(db) == before


# --- events and snapshots -------------------------------------------------------------------


def test_events_filter_paginate_and_csv_is_injection_safe(site: Site, user: httpx.Client) -> None:
    config = site.config
    clock = iter(np.arange(1_700_000_000.0, 1_700_100_000.0, 60.0))
    events = EventLog(config.events.db, clock=lambda: float(next(clock)))
    for _ in range(60):
        events.record("unknown", score=0.1, track=1)
    events.record("recognized", name='=HYPERLINK("http://x")', score=0.8, track=2)
    events.record("unlock", name='=HYPERLINK("http://x")', score=0.8, track=2)
    events.close()

    first = user.get("/events")
    assert first.text.count("data-event-type=") == 50
    assert "page 1 of 2" in first.text
    second = user.get("/events", params={"page": 2})
    assert second.text.count("data-event-type=") == 12
    only = user.get("/events", params={"type": "unlock"})
    assert only.text.count('data-event-type="unlock"') == 1
    assert 'data-event-type="unknown"' not in only.text
    by_person = user.get("/events", params={"person": UNKNOWN_PERSON})
    assert by_person.text.count('data-event-type="unknown"') == 50
    none = user.get("/events", params={"from": "2001-01-01", "to": "2001-01-02"})
    assert "No events match these filters" in none.text
    bad = user.get("/events", params={"from": "yesterday"})
    assert bad.status_code == 400 and "is not a date" in bad.text
    assert bad.text.count("data-event-type=") == 50  # the other filters still apply

    exported = user.get("/events.csv", params={"type": "unlock"})
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0] == ["id", "time_utc", "type", "name", "score", "track", "reason"]
    assert rows[1][3] == '\'=HYPERLINK("http://x")'
    assert rows[1][2] == "unlock" and len(rows) == 2


def test_the_polled_events_part_reads_no_filter_menus(
    site: Site, user: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An audit: each refresh of the Events page (every 3 s) read the whole history for
    the filter menus it does not show: 0.6 s of the hub's CPU with a million events."""
    assert site.config.events.db is not None
    menus: list[tuple[list[tuple[str, str]], list[str]]] = []
    choices = History.choices

    def counted(self: History) -> tuple[list[tuple[str, str]], list[str]]:
        menus.append(choices(self))
        return menus[-1]

    monkeypatch.setattr(History, "choices", counted)
    events = EventLog(site.config.events.db)
    events.record("recognized", name="Polled Person", score=0.9, track=1)
    events.close()
    polled = user.get("/events", params={"fragment": "1"})
    assert polled.status_code == 200 and 'data-event-type="recognized"' in polled.text
    assert menus == []
    whole = user.get("/events")
    assert '<option value="Polled Person"' in whole.text
    assert '<option value="relock"' in whole.text  # every type, seen or not
    assert len(menus) == 1


NO_NAME = (UNKNOWN_PERSON, UNKNOWN_LABEL)


def test_a_person_named_like_the_no_name_entry_keeps_their_own_history(
    site: Site, user: httpx.Client
) -> None:
    """Found by an audit: the person menu's entry for events without a name was the value
    "(unknown)", a name one can enrol: a person so named had two identical entries, and
    filtering by them showed the nameless events and none of theirs."""
    from edge_app.gallery import GalleryError, check_name

    with pytest.raises(GalleryError):
        check_name(UNKNOWN_PERSON)  # so no one can be enrolled under the menu's value
    events = EventLog(site.config.events.db)
    events.record("recognized", name=UNKNOWN_LABEL, score=0.9, track=1)
    events.record("unknown", score=0.1, track=2)
    events.record("unknown", score=0.1, track=3)
    events.close()
    page = user.get("/events").text
    assert f'<option value="{UNKNOWN_LABEL}" >{UNKNOWN_LABEL}</option>' in page
    assert f'<option value="{UNKNOWN_PERSON}" >{UNKNOWN_LABEL}</option>' in page
    theirs = user.get("/events", params={"person": UNKNOWN_LABEL}).text
    assert theirs.count('data-event-type="recognized"') == 1
    assert 'data-event-type="unknown"' not in theirs
    nameless = user.get("/events", params={"person": UNKNOWN_PERSON}).text
    assert nameless.count('data-event-type="unknown"') >= 2  # (the site's other tests add more)
    assert 'data-event-type="recognized"' not in nameless
    exported = user.get("/events.csv", params={"person": UNKNOWN_LABEL})
    assert [row[2] for row in csv.reader(io.StringIO(exported.text))][1:] == ["recognized"]


def test_an_events_database_that_cannot_be_read_is_explained_by_what_is_wrong(
    tmp_path: Path,
) -> None:
    """Found by an audit: a locked or a damaged events.db was blamed on the hub's access to
    its folder. Locked: try again; not a database: check the path; a folder it may not
    write: that access."""
    db = tmp_path / "events.db"
    EventLog(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(HistoryError) as locked:
            History(db).page(Filters())
    finally:
        holder.close()
    assert "try again in a moment" in str(locked.value)
    assert "access to its folder" not in str(locked.value)
    (tmp_path / "noise.db").write_bytes(np.random.default_rng(1).bytes(8192))
    with pytest.raises(HistoryError) as noise:
        History(tmp_path / "noise.db").page(Filters())
    assert "not an events database, or it is damaged" in str(noise.value)
    assert "sudo -u edge-app edge-app events" in History(db, command_line=True)._fix(
        sqlite3.OperationalError("unable to open database file")
    )


def test_the_csv_export_holds_every_event_the_filters_select(tmp_path: Path) -> None:
    """Found by an audit: the export held the 100,000 oldest events and silently left the
    newer ones out. Now every one, read and sent a piece at a time; the pieces stop at the
    newest event when the export began."""
    db = tmp_path / "events.db"
    events = EventLog(db)
    for track in range(25):
        events.record("unknown" if track % 5 else "recognized", name=None, score=0.1, track=track)
    history = History(db)
    pieces = history.csv(Filters(type="unknown"), rows=4)
    events.record("unknown", score=0.1, track=99)  # recorded once the export began
    events.close()
    texts = list(pieces)
    assert len(texts) == 6  # 20 rows, 4 a piece, then the empty piece that finds the end
    rows = list(csv.reader(io.StringIO("".join(texts))))
    assert rows[0] == list(CSV_HEADER)
    assert [int(row[5]) for row in rows[1:]] == [t for t in range(25) if t % 5]
    assert list(history.csv(Filters(type="unlock"))) == [",".join(CSV_HEADER) + "\r\n"]


def test_an_export_the_database_fails_part_way_through_ends_as_a_failed_download(
    site: Site,
    user: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A shorter file that looks whole is what the cap did; a piece that cannot be read ends
    the answer without its last chunk, so the browser says the download failed."""
    db = site.config.events.db
    assert db is not None
    events = EventLog(db)
    for track in range(10):
        events.record("unknown", score=0.1, track=track)
    events.close()
    csv_of = History.csv
    monkeypatch.setattr(History, "csv", lambda self, filters: csv_of(self, filters, rows=3))
    rest_of = History._csv_rest

    def breaks_after_the_first(self: History, *args: Any) -> Iterator[str]:
        pieces = rest_of(self, *args)
        yield next(pieces)
        for name in (db.name, f"{db.name}-wal", f"{db.name}-shm"):
            (db.parent / name).unlink(missing_ok=True)
        db.write_bytes(b"this is not a database" * 100)
        yield from pieces

    monkeypatch.setattr(History, "_csv_rest", breaks_after_the_first)
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(httpx.RemoteProtocolError):
            user.get("/events.csv")
    finally:
        db.unlink()  # the site's other tests record events afresh
    assert any(
        "web events.csv cut short: events.db: cannot read" in r.getMessage() for r in caplog.records
    )
    assert not any(r.exc_info for r in caplog.records)


def test_the_names_menu_reads_only_the_events_written_since(tmp_path: Path) -> None:
    """The person menu is every name in the history, read in full once; then only the
    events written since are read, unless some were deleted (an erased name leaves it)."""
    from edge_app.events import TYPES, erase_history

    class Traced(History):
        def __init__(self, path: Path) -> None:
            super().__init__(path)
            self.statements: list[str] = []

        @contextmanager
        def _connect(self) -> Iterator[sqlite3.Connection]:
            with super()._connect() as db:
                db.set_trace_callback(self.statements.append)
                yield db

    db = tmp_path / "events.db"
    events = EventLog(db)
    events.record("recognized", name="Ann", score=0.9, track=1)
    events.record("unknown", score=0.1, track=2)
    history = Traced(db)
    assert history.choices() == ([("Ann", "Ann"), NO_NAME], sorted(TYPES))
    for name in ("Cid", "Bea", "Cid"):
        events.record("unlock", name=name, score=0.9, track=3)
    history.statements.clear()
    assert [v for v, _ in history.choices()[0]] == ["Ann", "Bea", "Cid", UNKNOWN_PERSON]
    assert not [s for s in history.statements if "DISTINCT" in s.upper()], history.statements
    events.close()
    erase_history(db, None, ["Ann"])
    assert history.choices()[0] == [("Bea", "Bea"), ("Cid", "Cid"), NO_NAME]
    erase_history(db, None, ["Cid"])  # the newest event's name
    assert history.choices()[0] == [("Bea", "Bea"), NO_NAME]


def test_safe_cell_neutralises_every_formula_start() -> None:
    for start in "=+-@\t\r":
        assert safe_cell(start + "1+1").startswith("'")
    assert safe_cell("Alice") == "Alice"


def test_snapshots_are_served_only_from_their_folder(site: Site, user: httpx.Client) -> None:
    import sqlite3

    config = site.config
    assert config.events.db is not None and config.events.snapshots is not None
    events = EventLog(config.events.db, snapshots=config.events.snapshots)
    crop = np.full((60, 60, 3), 128, np.uint8)
    good = events.record("recognized", name="Snap Shot", score=0.9, track=7, crop=crop)
    events.close()
    assert good.snapshot is not None

    with sqlite3.connect(config.events.db) as db:
        (event_id,) = db.execute("SELECT max(id) FROM events").fetchone()
        reply = user.get(f"/snapshots/{event_id}")
        assert reply.status_code == 200 and reply.headers["content-type"] == "image/jpeg"
        assert reply.content[:2] == b"\xff\xd8"
        assert (
            httpx.get(f"{site.url}/snapshots/{event_id}", follow_redirects=False).status_code == 303
        )

        outside = site.folder / "secret.jpg"
        outside.write_bytes(b"\xff\xd8secret")
        link = Path(config.events.snapshots) / "link.jpg"
        link.symlink_to(outside)
        own = Path(config.events.snapshots) / "holiday.jpg"  # the owner's photo, not the door's
        own.write_bytes(b"\xff\xd8holiday")
        for stored in (str(outside), "../secret.jpg", str(link), "/etc/passwd", str(own)):
            db.execute("UPDATE events SET snapshot = ? WHERE id = ?", (stored, event_id))
            db.commit()
            assert user.get(f"/snapshots/{event_id}").status_code == 404, stored
    assert user.get("/snapshots/999999").status_code == 404
    assert user.get("/snapshots/abc").status_code == 404


HUGE_ID = "9" * 30
OUTSIDE = "is not between 1970-01-01 and 2999-12-31"


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        (f"/snapshots/{HUGE_ID}", 404, "no such snapshot"),
        (f"/snapshots/{2**63}", 404, "no such snapshot"),  # just past SQLite's integers
        (f"/snapshots/{2**63 - 1}", 404, "no such snapshot"),
        ("/snapshots/%C2%B2", 404, "no such snapshot"),  # a superscript digit
        ("/snapshots/%D9%A3", 404, "no such snapshot"),  # an Arabic-Indic digit
        ("/snapshots/-1", 404, "no such snapshot"),
        ("/events?from=0001-01-01", 400, f"from: '0001-01-01' {OUTSIDE}; ignored"),
        ("/events?to=9999-12-31", 400, f"to: '9999-12-31' {OUTSIDE}; ignored"),
        ("/events?from=1969-12-31&to=3000-01-01", 400, f"to: '3000-01-01' {OUTSIDE}"),
        ("/events?from=yesterday", 400, "from: 'yesterday' is not a date (YYYY-MM-DD); ignored"),
        ("/events.csv?to=9999-12-31", 400, f"to: '9999-12-31' {OUTSIDE}"),
        ("/events.csv?from=0001-01-01", 400, f"from: '0001-01-01' {OUTSIDE}"),
        ("/events.csv?from=yesterday", 400, "from: 'yesterday' is not a date"),
        ("/events?page=%C2%B2", 400, "page: '²' is not a page number"),
        ("/events?page=%D9%A3", 400, "page: '٣' is not a page number"),
        ("/events?page=-2", 400, "page: '-2' is not a page number"),
        ("/events?page=1_0", 400, "page: '1_0' is not a page number"),
    ],
)
def test_hostile_ids_dates_and_pages_are_refused(
    site: Site, user: httpx.Client, path: str, status: int, message: str
) -> None:
    assert site.config.events.db is not None
    EventLog(site.config.events.db).close()  # the database exists: the queries really run
    reply = user.get(path)
    assert reply.status_code == status, reply.text
    assert message in html.unescape(reply.text)
    assert "Traceback" not in reply.text and "Internal Server Error" not in reply.text


@pytest.mark.parametrize("page", ["12345678", "9" * 5000])
def test_a_page_number_past_the_last_page_shows_the_last(
    site: Site, user: httpx.Client, page: str
) -> None:
    """Found by an audit: 8 digits and more were "not a page number", which they are."""
    assert site.config.events.db is not None
    events = EventLog(site.config.events.db)
    for track in range(120):  # three pages of 50
        events.record("unknown", score=0.1, track=track)
    events.close()
    reply = user.get("/events", params={"page": page})
    assert reply.status_code == 200 and "not a page number" not in reply.text
    found = re.search(r"page (\d+) of (\d+)", reply.text)
    assert found is not None and found[1] == found[2]


def test_dates_at_the_ends_of_the_range_are_accepted(site: Site, user: httpx.Client) -> None:
    assert site.config.events.db is not None
    EventLog(site.config.events.db).close()
    query = {"from": "1970-01-01", "to": "2999-12-31"}
    page = user.get("/events", params={**query, "page": "1"})
    assert page.status_code == 200 and "is not between" not in page.text
    exported = user.get("/events.csv", params=query)
    assert exported.status_code == 200 and exported.text.startswith("id,time_utc,")


# --- the door link ------------------------------------------------------------------------------


def test_pages_work_without_a_door(site: Site, user: httpx.Client) -> None:
    dashboard = user.get("/")
    assert dashboard.status_code == 200 and "not reachable" in dashboard.text
    assert "Live view off: the door is not reachable" in dashboard.text
    assert user.get("/live.jpg").status_code == 404
    health = user.get("/health")
    # doctor's door row: a warning with the fix (a door not running yet is not one that
    # cannot run, which is what a failure means there)
    assert 'data-check="door" data-status="warn"' in health.text
    assert "sudo systemctl start edge-app" in health.text
    assert 'data-check="config"' in health.text  # the doctor's own checks
    # The door is not running: the unlock page says so before it asks for the password, and
    # after, rather than "The door refused" (it refused nothing).
    form = user.get("/unlock").text
    assert 'id="door-down"' in form and "The door is not running" in form
    unlock = user.post("/unlock", data={"password": PASSWORD, **unlock_fields(user)})
    assert unlock.status_code == 502 and "The door refused" not in unlock.text
    assert "The door is not running, or not answering: nothing was unlocked." in unlock.text


def test_an_unlock_the_door_refuses_shows_the_door_s_reason_once(tmp_path: Path) -> None:
    """Found by a review: a refusal read "The door refused: door refused unlock: already
    unlocked: ...", the socket client's own prefix inside the page's. The page says the
    door's reason once, from a real door's socket."""
    from test_control import Door, make_daemon

    daemon = make_daemon(
        tmp_path / "door", allow_unlock=True, pulse=2.0, socket_path=tmp_path / "door.sock"
    )
    door = Door(daemon)
    page = serve(tmp_path / "web", door_socket=door.path)
    try:
        with logged_in(page) as client:
            fields = unlock_fields(client)
            assert door.client.unlock("remote", "mqtt:alice")["unlocked"] is True  # 2 s open
            refused = client.post("/unlock", data={"password": PASSWORD, **fields})
    finally:
        page.server.stop()
        door.close()
    said = html.unescape(refused.text)
    assert refused.status_code == 502, said
    assert "The door refused: already unlocked: a remote unlock opened the door" in said
    assert "door refused unlock" not in said


def test_an_unlock_a_running_door_does_not_answer_in_time_may_have_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running door whose relay process hangs answers the unlock only after the page's
    timeout (the pulse may have opened before the child hung). The page said "The door
    refused" (it refused nothing), or "nothing was unlocked" while the door's socket waited
    on the relay; it says the unlock may have opened and where to look."""
    from test_control import hung_relay_process

    with hung_relay_process(monkeypatch, tmp_path / "door", tmp_path / "door.sock") as door:
        page = serve(tmp_path / "web", door_socket=door.path)
        try:
            with logged_in(page) as client:
                fields = unlock_fields(client)
                unanswered = client.post("/unlock", data={"password": PASSWORD, **fields})
        finally:
            page.server.stop()
    said = html.unescape(unanswered.text)
    assert unanswered.status_code == 502, said
    assert "The door did not answer the unlock in time: it may have opened." in said
    assert "The door refused" not in said and "nothing was unlocked" not in said


def test_remote_unlock_asks_for_the_password_again(site: Site, user: httpx.Client) -> None:
    reply = user.post("/unlock", data={"password": "wrong", **unlock_fields(user)})
    assert reply.status_code == 401 and "Wrong password." in reply.text
    site.reset_limits()


def test_an_unlock_form_is_good_for_one_post(site: Site, user: httpx.Client) -> None:
    """The same unlock request sent again (a captured copy, a browser's resubmit) is refused
    before its password is checked; the page that refuses it carries a fresh form."""
    site.reset_limits()
    fields = unlock_fields(user)
    first = user.post("/unlock", data={"password": "wrong", **fields})
    assert first.status_code == 401
    again = user.post("/unlock", data={"password": PASSWORD, **fields})
    assert again.status_code == 409 and "nothing was done" in again.text
    fresh = re.search(r'name="unlock_form" value="([^"]+)"', again.text)
    assert fresh is not None and fresh.group(1) != fields["unlock_form"]
    retry = {**fields, "unlock_form": fresh.group(1)}  # the form the refusal carries works
    assert user.post("/unlock", data={"password": "wrong", **retry}).status_code == 401
    replaced = unlock_fields(user)
    unlock_fields(user)  # opening the page again replaces the form
    assert user.post("/unlock", data={"password": "wrong", **replaced}).status_code == 409
    site.reset_limits()


def test_remote_unlock_is_off_unless_enabled(tmp_path: Path) -> None:
    off = serve(tmp_path, remote_unlock=False)
    try:
        with off.client() as client:
            off.login(client)
            assert ">Unlock<" not in client.get("/").text
            assert client.get("/unlock").status_code == 404
            token = off.token(client)
            reply = client.post("/unlock", data={"password": PASSWORD, "csrf_token": token})
            assert reply.status_code == 404 and "Remote unlock is off" in reply.text
    finally:
        off.server.stop()


# --- the password and where the page listens ------------------------------------------------


def test_password_file_is_private_and_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "state" / "web-password"
    auth.write_password_file(path, "first password")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    assert first.startswith("scrypt$") and "first password" not in first
    assert auth.verify_password("first password", first)
    assert not auth.verify_password("first passwort", first)
    auth.write_password_file(path, "second password")
    assert auth.verify_password("second password", path.read_text())
    assert [p.name for p in path.parent.iterdir()] == ["web-password"]  # no temp left
    with pytest.raises(auth.PasswordError, match="at least 8 characters"):
        auth.write_password_file(path, "short")
    with pytest.raises(auth.PasswordError, match="only spaces"):  # an audit: it was taken
        auth.write_password_file(path, " " * 12)
    assert auth.verify_password("second password", path.read_text())
    os.chmod(path, 0o644)
    with pytest.raises(auth.PasswordError, match=r"mode 0644\); run `chmod 600"):
        auth.read_password_hash(path)


def test_a_password_file_that_is_not_text_is_refused_without_quoting_it(tmp_path: Path) -> None:
    """A review: the refusal of a password file that is not ASCII gave the codec's words,
    which quote a byte of the file and where it is (a password written there by hand)."""
    path = tmp_path / "web-password"
    path.write_bytes("pässwörd-typed-here\n".encode("latin-1"))
    path.chmod(0o600)
    with pytest.raises(auth.PasswordError) as refused:
        auth.read_password_hash(path)
    said = str(refused.value)
    assert f"{path} is not ASCII text, so it holds no password hash" in said
    assert "edge-app hub passwd" in said and "0xe4" not in said and "position" not in said


def test_lan_listen_is_refused_until_a_password_exists(tmp_path: Path) -> None:
    config = web_config(tmp_path, 8080, listen="0.0.0.0:8080")
    with pytest.raises(WebError, match="no admin password is set: run `sudo -u edge-app edge-"):
        check_settings(config)
    # A walkthrough found the command named for the default config, whatever --config said:
    # run as written, it set another door's password.
    with pytest.raises(WebError) as refused:
        check_settings(config, tmp_path / "lan door.toml")
    command = f"sudo -u edge-app edge-app hub passwd --config '{tmp_path / 'lan door.toml'}'"
    assert f"run `{command}` first" in str(refused.value)
    assert check_settings(web_config(tmp_path, 8080))[:2] == ("127.0.0.1", 8080)
    assert check_settings(web_config(tmp_path, 8080, listen="[::1]:8080"))[0] == "::1"
    auth.write_password_file(config.web.password_file, PASSWORD)
    assert check_settings(config) == ("0.0.0.0", 8080, False)


def test_serving_the_lan_over_plain_http_is_said_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The page may serve the LAN without TLS (a password exists), but it says at start what
    then crosses the network in clear text, and how to stop it; over TLS, or on this machine
    only, it says nothing of the kind."""
    cert, key = self_signed(tmp_path)
    for folder, web, warned in (
        ("lan", {"listen": f"0.0.0.0:{free_port()}"}, True),
        (
            "lan-tls",
            {"listen": f"0.0.0.0:{free_port()}", "tls_cert": str(cert), "tls_key": str(key)},
            False,
        ),
        ("loopback", {}, False),
    ):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edge_app.web"):
            served = serve(tmp_path / folder, HEAD_TIMEOUT_S, None, None, **web)
            served.server.stop()
        said = [r.getMessage() for r in caplog.records if "over plain HTTP" in r.getMessage()]
        if warned:
            listen = web["listen"]
            assert said == [
                f"the web page serves {listen} over plain HTTP: the admin password, the "
                "session cookie, face snapshots, the live camera frame, uploaded photos and "
                "gallery exports cross the network in clear text; set web.tls_cert and "
                "web.tls_key, or keep web.listen on 127.0.0.1 behind a TLS reverse proxy "
                "(docs/WEB.md)"
            ], said
        else:
            assert said == [], (folder, said)


def test_tls_serves_https_with_a_secure_host_only_cookie(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    served = serve(tmp_path, tls_cert=str(cert), tls_key=str(key))
    try:
        assert served.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=served.url, verify=context) as client:
            token = csrf_of(client.get("/login").text)
            reply = client.post(
                "/login", data={"password": PASSWORD, "csrf_token": token}, follow_redirects=False
            )
            cookie, device = reply.headers.get_list("set-cookie")
            assert cookie.startswith("__Host-edge_door_session=")
            assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
            # The trusted device's: as Secure, but __Secure- (Path=/login rules out __Host-).
            assert device.startswith("__Secure-edge_door_device=")
            attributes = sorted(part.strip() for part in device.split(";")[1:])
            assert attributes == [
                "HttpOnly",
                "Max-Age=2592000",
                "Path=/login",
                "SameSite=strict",
                "Secure",
            ]
            assert client.get("/people").status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(served.url.replace("https://", "http://") + "/login", timeout=5)
    finally:
        served.server.stop()


def _read_all(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def test_one_address_cannot_hold_every_connection(tmp_path: Path) -> None:
    served = serve(tmp_path, head_timeout_s=2.0)
    address = (served.server.host, served.server.port)
    opened: list[socket.socket] = []

    def connect() -> socket.socket:
        opened.append(socket.create_connection(address, timeout=10))
        return opened[-1]

    try:
        held = [connect() for _ in range(PER_ADDRESS_CONNECTIONS - 2)]
        for sock in held:  # half-sent requests, never finished
            sock.sendall(b"GET /login HTTP/1.1\r\nHost: door\r\nX-Slow: ")
        idle = connect()  # sends nothing at all
        kept = connect()  # a whole request, then half of the next one
        kept.sendall(b"GET /login HTTP/1.1\r\nHost: door\r\n\r\n")
        first = kept.makefile("rb")
        assert first.readline() == b"HTTP/1.1 200 OK\r\n"
        head = b"".join(iter(first.readline, b"\r\n")).lower()
        length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
        assert b"log in" in first.read(length).lower()
        kept.sendall(b"GET /login HTTP/1.1\r\n")

        refused = _read_all(connect())
        assert refused.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), refused
        assert b"too many connections from 127.0.0.1 (at most 16 at a time)" in refused

        # Each connection gets 2 s for a request's head: the half-sent ones get 408.
        for answer in [*map(_read_all, held), first.read()]:
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
            assert answer.endswith(b"the request's headers took longer than 2 s\n")
        assert _read_all(idle) == b""  # closed without an answer to a request never begun
        first.close()
        with served.client() as client:
            assert client.get("/login").status_code == 200
    finally:
        for sock in opened:
            sock.close()
        served.server.stop()


def test_tls_needs_readable_cert_and_key(tmp_path: Path) -> None:
    config = web_config(
        tmp_path, 8443, tls_cert=str(tmp_path / "no.pem"), tls_key=str(tmp_path / "no.key")
    )
    with pytest.raises(WebError, match="web.tls_cert: cannot read"):
        check_settings(config)
    # Found by an audit: /dev/zero as the key grew the hub to 2.4 GB and a MemoryError
    # traceback; a named pipe hung it at start. Both are refused before they are read.
    pipe = tmp_path / "cert.pipe"
    os.mkfifo(pipe)
    certificate = tmp_path / "cert.pem"
    certificate.write_text("-----BEGIN CERTIFICATE-----\n")
    for cert, key, said in (
        (certificate, "/dev/zero", "web.tls_key: /dev/zero is a device, not a TLS file"),
        (pipe, "/dev/zero", f"web.tls_cert: {pipe} is a named pipe, not a TLS file"),
    ):
        config = web_config(tmp_path, 8443, tls_cert=str(cert), tls_key=str(key))
        with pytest.raises(WebError) as refused:
            check_settings(config)
        assert str(refused.value) == said


def test_web_config_is_validated() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {"web": {"listen": "8080", "tls_cert": "/etc/cert.pem", "max_upload_files": 0}}
        )
    text = str(caught.value)
    assert "web.listen: '8080' is not host:port" in text
    assert "web.tls_cert: give both web.tls_cert and web.tls_key" in text
    assert "web.max_upload_files: 0 is out of range" in text
    assert parse_config({}).web.listen == "127.0.0.1:8080"
    assert parse_config({}).web.enabled is False


def test_an_unwritable_gallery_folder_is_a_message_not_a_crash(tmp_path: Path) -> None:
    from edge_app.config import DetectionConfig, ModelsConfig
    from edge_app.web.forms import Upload
    from edge_app.web.people import EngineHolder, enroll_uploads

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    holder = EngineHolder(ModelsConfig(), DetectionConfig())
    report = enroll_uploads(
        blocker / "gallery.db", holder, "Someone", [Upload("a.jpg", b"x")], add=False
    )
    assert not report.ok and "the hub needs write access there to enrol" in report.summary
    assert not holder.loaded


def test_an_unreadable_events_database_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    broken = serve(tmp_path)
    try:
        events_db = broken.config.events.db
        assert events_db is not None
        events_db.parent.mkdir(parents=True, exist_ok=True)
        events_db.write_bytes(b"this is not a database" * 100)
        with broken.client() as client:
            broken.login(client)
            for path, status in (("/", 200), ("/events", 503), ("/events.csv", 503)):
                reply = client.get(path)
                assert reply.status_code == status, path
                assert "events.db: cannot read" in html.unescape(reply.text)
                assert "Traceback" not in reply.text
            assert "Door" in client.get("/").text  # the status is still shown
    finally:
        broken.server.stop()


def test_a_refusal_the_page_has_no_handler_for_is_worded_for_the_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A review: the handler of a UserError no route catches showed str(error), the command
    line's words, on the page and in the hub's journal: a refusal with advice said `sudo -u`
    there. The page and its log line now give the page's words."""
    from edge_app.gallery import GalleryError
    from edge_app.web.history import History

    refusal = Advised(
        "cannot read the gallery /x/gallery.db (no -shm), ", advice.Advice.READ_AS_OWNER
    )

    def refuse(*args: object, **kwargs: object) -> None:
        raise GalleryError(refusal)

    monkeypatch.setattr(History, "page", refuse)
    caplog.set_level(logging.ERROR, "edge_app.web.app")
    with running(tmp_path) as own, logged_in(own) as client:
        reply = client.get("/events")
    page = html.unescape(reply.text)
    assert reply.status_code == 503 and refusal.web() in page
    assert "sudo" not in page and "Traceback" not in page
    logged = [r.getMessage() for r in caplog.records if "web request failed" in r.getMessage()]
    assert logged and refusal.web() in logged[0] and "sudo" not in logged[0]


def test_web_enrolment_detects_with_the_doors_models_and_detection_settings() -> None:
    """A review: the web page's engine took loose values copied from [models] and never
    [detection]: it found faces down to the manifest's smallest, the door only to its own."""
    from edge_app.config import DetectionConfig, ModelsConfig
    from edge_app.web.people import EngineHolder

    holder = EngineHolder(ModelsConfig(cascade="int8"), DetectionConfig(min_face=80))
    try:
        found = holder.use(lambda engine: (engine.cascade.min_face, engine.backend.kind))
    finally:
        holder.release()
    assert found == (80.0, "cpu")


@pytest.mark.parametrize("path", [p for p in POSTS if p != "/logout"])
def test_a_visitor_with_the_login_forms_token_cannot_post(site: Site, path: str) -> None:
    """Every action but the login needs a logged-in session: the token any visitor of the
    login page gets opens none of them, and changes nothing."""
    db = Path(site.config.gallery.path)
    if "Csrf Target" not in names_in(db):
        add_person(db, "Csrf Target")
    before = names_in(db)
    with site.client() as visitor:
        token = csrf_of(visitor.get("/login").text)
        fields = {"name": "Csrf Target", "new_name": "Taken", "confirm": "yes", "allowed": "no"}
        reply = visitor.post(path, data={"csrf_token": token, **fields})
    assert reply.status_code == 403, (reply.status_code, reply.text[:200])
    assert "no session" in reply.text or "not logged in" in reply.text
    assert names_in(db) == before
