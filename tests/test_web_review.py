"""A security review of the web page: each test shows one hole, closed, through the real page
(uvicorn serving the app on a loopback port, httpx or a raw socket as the client).

Sessions: a new admin password ends every session, and the page's own refreshes do not keep
an abandoned page logged in. Forms: a hostile body is a 400 or 413 with its reason, never a
500, a logged traceback, a stalled server or text other than what was sent. Photos: those of
an enrolment the hub never finished are removed when it starts again.
"""

from __future__ import annotations

import html
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_web import Site, add_person, names_in, serve
from web_support import PASSWORD, csrf_of

from edge_app.web import auth
from edge_app.web.forms import FIELD_MAX_BYTES, MAX_FIELDS


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    served = serve(tmp_path)
    try:
        yield served
    finally:
        served.server.stop()


def _multipart(boundary: str, fields: list[tuple[str, bytes]], *, close: bool = True) -> bytes:
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value
        + b"\r\n"
        for name, value in fields
    )
    return body + (f"--{boundary}--\r\n".encode() if close else b"")


def _multipart_post(
    client: httpx.Client, path: str, body: bytes, boundary: str, token: str = ""
) -> httpx.Response:
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    if token:
        headers["x-csrf-token"] = token
    return client.post(path, content=body, headers=headers)


# --- sessions ----------------------------------------------------------------------------------


def test_a_new_admin_password_ends_every_session(site: Site) -> None:
    db = Path(site.config.gallery.path)
    add_person(db, "Kept Person")
    with site.client() as phone, site.client() as laptop:
        site.login(phone)
        site.login(laptop)
        token = site.token(phone)

        # The admin fears a session was stolen and sets a new password, without a restart.
        auth.write_password_file(site.config.web.password_file, "a brand new password")

        removal = phone.post(
            "/people/remove",
            data={"name": "Kept Person", "confirm": "yes", "csrf_token": token},
        )
        assert removal.status_code == 403 and "no session" in removal.text
        assert "Kept Person" in names_in(db)
        page = laptop.get("/people", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")

        login = csrf_of(laptop.get("/login").text)
        old = laptop.post("/login", data={"password": PASSWORD, "csrf_token": login})
        assert old.status_code == 401
        new = laptop.post("/login", data={"password": "a brand new password", "csrf_token": login})
        assert new.status_code == 200 and new.url.path == "/"
        assert laptop.get("/people", follow_redirects=False).status_code == 200


def test_a_longest_password_followed_by_more_is_a_wrong_password(site: Site) -> None:
    """Found by a review: the check cut what was typed to PASSWORD_MAX_LENGTH characters, so
    a password of exactly that length let in anything that began with it."""
    longest = "p" * auth.PASSWORD_MAX_LENGTH  # `hub passwd` takes it
    auth.write_password_file(site.config.web.password_file, longest)
    with site.client() as browser:
        token = csrf_of(browser.get("/login").text)
        for typed in (longest + "x", longest + " anything at all"):
            reply = browser.post("/login", data={"password": typed, "csrf_token": token})
            assert reply.status_code == 401 and reply.url.path == "/login", typed
        assert browser.get("/people", follow_redirects=False).status_code == 303
        right = browser.post("/login", data={"password": longest, "csrf_token": token})
        assert right.status_code == 200 and right.url.path == "/"


def test_the_pages_own_refreshes_do_not_keep_an_abandoned_page_logged_in(site: Site) -> None:
    now = [1_000.0]
    site.server.app.state.web.sessions.clock = lambda: now[0]
    idle = site.config.web.session_idle_minutes * 60.0
    poll = {"HX-Request": "true"}  # what htmx sends with its `every 2s` refreshes
    image = {"Sec-Fetch-Dest": "image"}  # the live frame and thumbnails it swaps in
    with site.client() as client:
        site.login(client)
        now[0] += idle * 0.6
        assert client.get("/fragments/status", headers=poll).status_code == 200
        assert client.get("/live.jpg", headers=image, follow_redirects=False).status_code == 404
        now[0] += idle * 0.6  # 1.2 idle periods since the last thing the user did
        ended = client.get("/fragments/recent", headers=poll)
        assert ended.status_code == 401 and ended.headers["hx-redirect"].startswith("/login?")

        site.login(client)
        for _ in range(3):  # pages the user opens are activity
            now[0] += idle * 0.6
            assert client.get("/events", follow_redirects=False).status_code == 200


# --- forms -------------------------------------------------------------------------------------


def test_an_overlong_multipart_boundary_is_a_400_not_a_server_error(site: Site) -> None:
    boundary = "b" * 300  # python-multipart refuses more than 256 bytes in its constructor
    with site.client() as anonymous:  # only the login page's own token is needed
        token = csrf_of(anonymous.get("/login").text)
        body = _multipart(boundary, [("csrf_token", token.encode()), ("password", b"x")])
        reply = _multipart_post(anonymous, "/login", body, boundary)
    assert reply.status_code == 400, reply.text
    assert "malformed upload (Boundary length 300 exceeds maximum of 256)" in reply.text


def test_a_client_leaving_mid_form_logs_no_traceback(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    with site.client() as anonymous:
        anonymous.get("/login")
        cookie = f"edge_door_login={anonymous.cookies['edge_door_login']}"
    head = (
        f"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
    )
    with caplog.at_level(logging.ERROR):
        with socket.create_connection((site.server.host, site.server.port), timeout=10) as sock:
            sock.sendall(head.encode() + b"password=half")
            time.sleep(0.3)  # the page is reading the body when the client goes
        time.sleep(1.0)
        with site.client() as client:
            assert client.get("/login").status_code == 200
    tracebacks = [r for r in caplog.records if r.exc_info or "Exception in ASGI" in r.message]
    assert not tracebacks, [r.getMessage() for r in tracebacks]


def test_a_form_of_countless_empty_parts_is_refused_while_it_streams(site: Site) -> None:
    with site.client() as client:
        site.login(client)
        token = site.token(client)
        boundary = "edge"
        fields = [("csrf_token", token.encode()), ("name", b"Parts")]
        fields += [("x", b"")] * (MAX_FIELDS + 10)
        reply = _multipart_post(
            client, "/people/enroll", _multipart(boundary, fields), boundary, token
        )
    allowed = site.config.web.max_upload_files + MAX_FIELDS
    assert reply.status_code == 413
    assert f"more than {allowed} parts in one form" in reply.text


def test_form_text_that_is_not_utf8_is_refused_not_altered(site: Site) -> None:
    db = Path(site.config.gallery.path)
    add_person(db, "Zoe")
    with site.client() as client:
        site.login(client)
        token = site.token(client)
        urlencoded = client.post(
            "/people/rename",
            content=f"csrf_token={token}&name=Zoe&new_name=Zo%EB".encode(),  # Latin-1 ë
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert urlencoded.status_code == 400, urlencoded.text
        assert "malformed form" in urlencoded.text
        boundary = "edge"
        fields = [("csrf_token", token.encode()), ("name", b"Zoe"), ("new_name", b"Zo\xeb")]
        multipart = _multipart_post(
            client, "/people/rename", _multipart(boundary, fields), boundary, token
        )
        assert multipart.status_code == 400, multipart.text
        assert "malformed upload (the field &#39;new_name&#39; is not UTF-8)" in multipart.text
    assert names_in(db) == ["Zoe"]  # not renamed to "Zo\ufffd"


def test_a_plain_field_over_16_kb_is_refused_in_an_urlencoded_form_too(site: Site) -> None:
    """FIELD_MAX_BYTES holds for urlencoded forms (every form but the photo uploads) as for
    multipart ones: a 64 KiB body cannot carry a 63 kB name (U+0F73, whose normalisation
    takes time quadratic in its count, with the interpreter lock held: the whole hub, its
    MQTT thread too, would stand still for seconds). Both encodings refuse the field, 413,
    before any handler."""
    db = Path(site.config.gallery.path)
    add_person(db, "Yann")
    longest = "y" * FIELD_MAX_BYTES
    # Sent as raw UTF-8, as a script may: 3 bytes a character, 21,000 in the form's 64 KiB.
    over = "\u0f73" * (FIELD_MAX_BYTES // 3 + 1)
    with site.client() as client:
        site.login(client)
        token = site.token(client)

        def rename(name: str, new_name: str) -> httpx.Response:
            body = f"csrf_token={token}&name={name}&new_name={new_name}".encode()
            headers = {"content-type": "application/x-www-form-urlencoded"}
            return client.post("/people/rename", content=body, headers=headers)

        for name, new_name in ((over, "Yves"), ("Yann", over), ("Yann", longest + "y")):
            reply = rename(name, new_name)
            assert reply.status_code == 413, reply.text
            field = "name" if name == over else "new_name"
            assert f"the field &#39;{field}&#39; is too long" in reply.text
        at_the_limit = rename("Yann", longest)  # the form takes it; the name rules do not
        assert at_the_limit.status_code == 422
        assert "longer than 100 characters" in at_the_limit.text
        boundary = "edge"
        fields = [("csrf_token", token.encode()), ("name", b"Yann")]
        fields.append(("new_name", over.encode()))
        multipart = _multipart_post(
            client, "/people/rename", _multipart(boundary, fields), boundary, token
        )
        assert multipart.status_code == 413  # the same refusal as before, in its words
        assert "the field &#39;new_name&#39; is too long" in multipart.text
    assert names_in(db) == ["Yann"]


def test_a_form_in_a_shape_no_form_of_the_page_has_is_refused_and_changes_nothing(
    site: Site,
) -> None:
    """Another content type, a file sent to a form that takes none, a part without a name or
    whose name is not UTF-8: each a 4xx naming what is wrong, with a valid token and session,
    and the rename they carry is not done."""
    db = Path(site.config.gallery.path)
    add_person(db, "Una")
    with site.client() as client:
        site.login(client)
        token = site.token(client)
        fields = f"csrf_token={token}&name=Una&new_name=Uma"
        for kind in ("application/json", "text/plain", "application/xml"):
            reply = client.post(
                "/people/rename", content=fields.encode(), headers={"content-type": kind}
            )
            assert reply.status_code == 415, (kind, reply.text)
            assert f"unsupported content type &#39;{kind}&#39;" in reply.text
        boundary = "edge"
        start = f"--{boundary}\r\nContent-Disposition: form-data"
        named = _multipart(boundary, [("name", b"Una"), ("new_name", b"Uma")])
        shapes = {
            "this form takes no files": f'{start}; name="x"; filename="a.jpg"\r\n\r\nv\r\n',
            "a form part without a name": f"{start}\r\n\r\nv\r\n",
            "a field&#39;s name is not UTF-8": f'{start}; name="\xff"\r\n\r\nv\r\n',
        }
        for said, part in shapes.items():
            body = part.encode("latin-1") + named
            reply = _multipart_post(client, "/people/rename", body, boundary, token)
            assert reply.status_code == 400, (said, reply.text)
            assert said in reply.text
    assert names_in(db) == ["Una"]


def test_a_multipart_body_cut_before_its_closing_boundary_is_refused(site: Site) -> None:
    db = Path(site.config.gallery.path)
    add_person(db, "Ann")
    with site.client() as client:
        site.login(client)
        token = site.token(client)
        boundary = "edge"
        fields = [("csrf_token", token.encode()), ("name", b"Ann"), ("new_name", b"Ann Lee")]
        cut = _multipart(boundary, fields, close=False)[:-12]  # new_name's part, cut short
        reply = _multipart_post(client, "/people/rename", cut, boundary, token)
    assert reply.status_code == 400, reply.text
    assert "ends before its closing boundary" in html.unescape(reply.text)
    assert names_in(db) == ["Ann"]


# --- photos ------------------------------------------------------------------------------------


def test_photos_of_an_interrupted_enrolment_are_removed_at_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    left = state / ".web-upload-k1ll3d"
    left.mkdir(parents=True, mode=0o700)
    (left / "000.jpg").write_bytes(b"\xff\xd8 a face")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.jpg").write_bytes(b"\xff\xd8")
    (state / ".web-upload-link").symlink_to(elsewhere, target_is_directory=True)

    served = serve(tmp_path)
    try:
        assert not left.exists()
        assert (elsewhere / "keep.jpg").exists()  # a symlink is not followed
        assert (state / "web-password").exists()  # nothing else goes
    finally:
        served.server.stop()
