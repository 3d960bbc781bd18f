"""The web page: Starlette routes, Jinja2 templates, htmx for the parts that refresh.

Security model (docs/WEB.md):
  - every page but /login and /static needs a logged-in session, else it redirects to /login;
  - every POST carries the session's CSRF token (form field or X-CSRF-Token header) and, when
    the browser sends an Origin, comes from this site; otherwise 403, before anything happens;
  - a login from a browser that logged in before (its device cookie, auth.LoginLimiter's
    trust_device) is rate-limited for that browser alone, not with everyone at its address;
  - with [web] public_origin (a TLS proxy), a request whose Host is not the public host, a
    loopback address or the listen address gets 421 (edge_app.web.origins);
  - responses carry a Content-Security-Policy without inline script, frame-ancestors 'none',
    nosniff and a same-origin Referrer-Policy (no-referrer would make Chromium send
    "Origin: null" on form posts, which the origin check refuses); pages are not cached;
  - uploads are bounded while they stream (edge_app.web.forms) and enrolled through the CLI's
    own code (edge_app.web.people).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import re
import secrets
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_app.advice import web_message
from edge_app.commands import as_door
from edge_app.config import Config, split_listen
from edge_app.control import REFUSAL_LOG_SECONDS, frame_age, frame_is_fresh
from edge_app.enroll import CAMERA_SAMPLES
from edge_app.errors import UserError
from edge_app.logs import Throttle
from edge_app.web import auth
from edge_app.web.door import DoorStatus, WebDoor, is_live, picture_explained
from edge_app.web.forms import Form, FormError, Limits, read_form
from edge_app.web.history import (
    Filters,
    History,
    HistoryError,
    parse_event_id,
    read_snapshot,
    shown_time,
    utc_iso,
)
from edge_app.web.listing import PEOPLE_PER_PAGE, find_refused, listing
from edge_app.web.origins import Origins
from edge_app.web.people import (
    WEB_CAMERA_TIMEOUT_S,
    EngineHolder,
    EnrolmentReport,
    enroll_from_door,
    enroll_uploads,
    page_error,
    remove_stale_uploads,
)
from edge_app.web.server import is_loopback

log = logging.getLogger(__name__)
# Lines logged for a kind of refusal an unauthenticated client can repeat at will, per
# REFUSAL_LOG_SECONDS; the next after them says how many were held back.
REFUSAL_LINES = 10
# python-multipart logs a warning of its own for each malformed body, which the page
# refuses with its own one-line answer: one line a request for anyone who can reach it.
logging.getLogger("python_multipart").setLevel(logging.ERROR)
logging.getLogger("multipart").setLevel(logging.ERROR)

HERE = Path(__file__).resolve().parent
COOKIE = "edge_door_session"
SECURE_COOKIE = "__Host-edge_door_session"  # over https: Secure, host-only, path /
# A browser that logged in (auth.LoginLimiter.trust_device): only the login form reads it.
DEVICE_COOKIE = "edge_door_device"
SECURE_DEVICE_COOKIE = "__Secure-edge_door_device"  # over https: Secure (__Host- needs path /)
LOGIN_FORM_PATH = "/login"  # the login form's cookies are sent here only
# The login form's CSRF token, kept by the browser (a double-submit cookie): the page keeps
# no state for a visitor who has not logged in, so a flood of login-page visits cannot push
# the owner's half-done login out of a bounded store. Sent to the login form only.
LOGIN_COOKIE = "edge_door_login"
SECURE_LOGIN_COOKIE = "__Secure-edge_door_login"  # over https (__Host- needs path /)
LOGIN_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
RECENT_EVENTS = 10
EXPORT_CHUNK = 1024 * 1024  # bytes of a gallery export sent at a time
UNLOCK_REASON = "remote unlock from the web page"  # when the form's reason is left empty
UNLOCK_FORM_FIELD = "unlock_form"
UNLOCK_FORM_USED = (
    "This unlock form was sent already, or a newer one was opened since: nothing was done. "
    "Enter the password again below to unlock."
)
DOOR_DOWN = "The door is not running, or not answering: an unlock cannot be sent now."
DOOR_DOWN_AFTER = "The door is not running, or not answering: nothing was unlocked."
# The door runs, but its answer to the unlock did not come in time (a relay that is slow to
# answer): it may have opened, and its events say whether it did.
UNLOCK_UNANSWERED = (
    "The door did not answer the unlock in time: it may have opened. The events page shows "
    "whether it did; check there before trying again."
)
# The login page's line for a form sent after its session ended (LOGIN_NOTICES key).
SESSION_ENDED = "ended"
LOGIN_NOTICES = {
    SESSION_ENDED: "Your session ended before that form was sent, so nothing was changed: "
    "log in again, then repeat the change.",
}
# Never a page to come back to after the login: parts of a page (htmx fragments, images).
FRAGMENT_PATHS = ("/fragments/", "/live.jpg", "/snapshots/", "/static/")
MAX_FLASHES = auth.MAX_SESSIONS

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


@dataclass(frozen=True)
class Flash:
    """What the People page shows once, after an action redirected to it."""

    notice: str = ""
    report: EnrolmentReport | None = None


@dataclass(frozen=True)
class KeptForm:
    """A refused People form's input, put back into that form for the retry: which form,
    the name typed and the "known visitor" tick (dropped, the retry gave door access)."""

    form: str  # "enroll", "enroll-camera", "add" or "rename"
    name: str = ""
    visitor: bool = False
    person: str = ""  # add, rename: whose panel (it stays open)


@dataclass
class WebState:
    """Everything the routes share; built once by create_app."""

    config: Config
    config_path: Path | None
    door: WebDoor
    tls: bool
    origins: Origins
    sessions: auth.SessionStore
    limiter: auth.LoginLimiter
    password: auth.PasswordCheck
    history: History
    engine: EngineHolder
    enrol_lock: threading.Lock = field(default_factory=threading.Lock)
    # Logins refused by the rate limit: a few lines per REFUSAL_LOG_SECONDS, then a count
    # (one a request flooded the journal until journald dropped the hub's other lines too).
    rate_limited_lines: Throttle = field(
        default_factory=lambda: Throttle(REFUSAL_LOG_SECONDS, burst=REFUSAL_LINES)
    )
    # The Health check running, which requests that come meanwhile share: each opens the
    # models, as doctor does (about 100 MB), so one runs at a time, on one worker thread.
    health_check: asyncio.Future[list[dict[str, str]]] | None = None
    # Each session's People result, shown once after the redirect (post/redirect/get).
    flashes: dict[str, Flash] = field(default_factory=dict)

    def secure(self, request: Request) -> bool:
        """The browser uses https for this request: the hub's own TLS, or a TLS proxy's
        public origin (the session cookie is then Secure, whatever the hub serves)."""
        return self.origins.secure(request.headers.get("host"))

    def cookie(self, request: Request) -> str:
        return SECURE_COOKIE if self.secure(request) else COOKIE

    def device_cookie(self, request: Request) -> str:
        return SECURE_DEVICE_COOKIE if self.secure(request) else DEVICE_COOKIE

    def login_cookie(self, request: Request) -> str:
        return SECURE_LOGIN_COOKIE if self.secure(request) else LOGIN_COOKIE

    def login_token(self, request: Request) -> str | None:
        """The login form's token from the browser's cookie, if it is one this page made."""
        token = request.cookies.get(self.login_cookie(request))
        return token if token is not None and LOGIN_TOKEN.fullmatch(token) else None


class TrustedHosts:
    """421 for a request whose Host this page does not answer to (edge_app.web.origins)."""

    def __init__(self, app: ASGIApp, origins: Origins) -> None:
        self.app = app
        self.origins = origins
        self.refusal_lines = Throttle(REFUSAL_LOG_SECONDS, burst=REFUSAL_LINES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = Request(scope).headers.get("host")
            if self.origins.refuses(host):
                if (held_back := self.refusal_lines.due()) is not None:
                    log.warning(
                        "web request refused host=%r reason=not-this-door held_back=%d",
                        (host or "")[:100],
                        held_back,
                    )
                response = PlainTextResponse(
                    "421 Misdirected Request: this door's page answers at "
                    f"{self.origins.public} (web.public_origin), not at that Host\n",
                    status_code=421,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Adds the security headers to every response, and no-store to every non-static one.

    A Cookie header with a backslash is dropped before anything reads it: the page's own
    cookies never hold one, and Python's cookie unquoting (which Starlette's parser uses)
    takes time quadratic in a value of escaped quotes before 3.11.10 (CVE-2024-7592): 16 kB
    cost 167 ms of the page's one thread per request, with no login."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        if any(name == b"cookie" and b"\\" in value for name, value in headers):
            scope = {**scope, "headers": [(n, v) for n, v in headers if n != b"cookie"]}
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                if not static and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _state(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


def _background(request: Request) -> bool:
    """A request the open page makes by itself: htmx's polling, and the images it swaps in
    (the live frame, snapshot thumbnails). It is not activity: a page left open still ends
    its session after session_idle_minutes."""
    return bool(request.headers.get("hx-request")) or (
        request.headers.get("sec-fetch-dest") == "image"
    )


def _session(request: Request) -> auth.Session | None:
    """The request's session. A logged-in one lasts only as long as the admin password it
    logged in with: `edge-app hub passwd` ends every session at once."""
    state = _state(request)
    cookie = request.cookies.get(state.cookie(request))
    session = state.sessions.get(cookie, touch=not _background(request))
    if (
        session is not None
        and session.logged_in
        and session.password_hash != state.password.current_hash()
    ):
        state.sessions.drop(session.id)
        log.info("web session ended user=%s reason=password-changed", session.user)
        return None
    return session


def _set_cookie(
    response: Response, state: WebState, request: Request, session: auth.Session
) -> None:
    response.set_cookie(
        state.cookie(request),
        session.id,
        httponly=True,
        samesite="strict",
        secure=state.secure(request),
        path="/",
    )


def _set_login_form_cookie(
    response: Response,
    state: WebState,
    request: Request,
    name: str,
    value: str,
    max_age: int | None = None,
) -> None:
    """A cookie only the login form reads: as the session's (HttpOnly, SameSite=Strict,
    Secure when the browser is on https) but sent to LOGIN_FORM_PATH alone. The trusted
    device's lasts TRUSTED_ADDRESS_S; the form's token, the browser's session."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=state.secure(request),
        path=LOGIN_FORM_PATH,
    )


def _safe_next(target: str | None) -> str:
    """Only a page on this site (no //host, no backslash tricks) may follow the login; not a
    part of one (a fragment, the live frame, a snapshot): landing on that after the login
    shows a bare picture or list with no page around it."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    fragment = "fragment=" in parts.query  # /events?...&fragment=1: the table alone
    if parts.path.startswith(FRAGMENT_PATHS) or fragment:
        return "/"
    return target


def _login_url(target: str, notice: str = "") -> str:
    query = {"next": _safe_next(target), **({"notice": notice} if notice else {})}
    return "/login?" + urlencode(query)


def _to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.headers.get("hx-request"):
        # The request is the open page's refresh: come back to that page, not to the part
        # of it htmx asked for. htmx swaps the body of a redirect into the page; make it
        # load the login page instead.
        try:
            current = urlsplit(request.headers.get("hx-current-url", ""))
            target = current.path + (f"?{current.query}" if current.query else "")
        except ValueError:  # not a URL ("http://[", an IPv6 host left open): the dashboard
            target = "/"
        return Response(status_code=401, headers={"HX-Redirect": _login_url(target)})
    return RedirectResponse(_login_url(target), status_code=303)


def _form_page(path: str) -> str:
    """The page a form posting to `path` lives on: /people/... is on /people (or a page
    that leads back there), /unlock on /unlock."""
    if path.startswith("/people"):
        return "/people"
    if path == "/unlock":
        return "/unlock"
    return "/"


def _session_ended(request: Request) -> Response:
    """A browser's form sent after its session ended (idle, logged out in another tab, the
    password changed): the login page, which says so and leads back to the form's page.
    It changes nothing, so it is no help to another site (its request never gets here)."""
    if request.url.path == "/logout":
        return RedirectResponse("/login", status_code=303)
    location = _login_url(_form_page(request.url.path), SESSION_ENDED)
    return RedirectResponse(location, status_code=303)


def _forbidden(message: str) -> Response:
    return PlainTextResponse(f"403 Forbidden: {message}\n", status_code=403)


Handler = Callable[..., Awaitable[Response]]


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A GET for a logged-in user; anyone else is sent to the login page."""

    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        session = _session(request)
        if session is None or not session.logged_in:
            return _to_login(request)
        return await handler(request, session)

    return wrapper


def action(
    *, login: bool = True, files: bool = False
) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """A POST: same-origin, the session's CSRF token, then the (bounded) form.

    Without a valid session and token the answer is 403 and the handler never runs. A
    logged-in session is required unless login=False (the login form itself).
    """

    def decorate(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def wrapper(request: Request) -> Response:
            state = _state(request)
            refused = state.origins.origin_problem(
                request.headers.get("origin"), request.headers.get("host")
            )
            if refused is not None:
                return _forbidden(refused)
            session = _session(request)
            # The login form's token is the browser's login cookie (it posts without a
            # session); every other form's is its session's.
            token = None if login else state.login_token(request)
            if token is None and session is not None:
                token = session.csrf
            logged_out = session is None or not session.logged_in
            if login and logged_out and request.headers.get("origin") is not None:
                # A browser on this very page (its Origin passed above) whose session
                # ended: a bare 403 lost the form without saying what to do.
                return _session_ended(request)
            if token is None:
                return _forbidden("no session; reload the page and try again")
            if login and logged_out:
                return _forbidden("not logged in")
            header = request.headers.get(CSRF_HEADER)
            if header is not None and not auth.same_token(token, header):
                return _forbidden("wrong CSRF token; reload the page and try again")
            web = state.config.web
            limits = Limits(
                max_bytes=web.max_upload_mb * 1_000_000 if files else 64 * 1024,
                max_files=web.max_upload_files if files else 0,
            )
            try:
                form = await read_form(request, limits)
            except FormError as error:
                # A refusal changes nothing, so it needs no token: say what was wrong.
                return await _form_refused(request, session, error)
            if header is None and not auth.same_token(token, form.get(CSRF_FIELD)):
                return _forbidden("missing or wrong CSRF token; reload the page and try again")
            return await handler(request, session, form)

        return wrapper

    return decorate


async def _form_refused(
    request: Request, session: auth.Session | None, error: FormError
) -> Response:
    return render(request, session, "error.html", {"message": str(error)}, error.status)


def render(
    request: Request,
    session: auth.Session | None,
    template: str,
    context: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    state = _state(request)
    values = {
        "session": session,
        "csrf": session.csrf if session else "",
        "remote_unlock": state.config.web.remote_unlock,
        "path": request.url.path,
        **(context or {}),
    }
    templates: Jinja2Templates = request.app.state.templates
    response = templates.TemplateResponse(request, template, values, status_code=status)
    if session is not None and request.cookies.get(state.cookie(request)) != session.id:
        _set_cookie(response, state, request, session)
    return response


# --- login ---------------------------------------------------------------------------------


async def login_form(request: Request) -> Response:
    state = _state(request)
    session = _session(request)
    if session is not None and session.logged_in:
        return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
    # No session before the login: the form's token lives in the browser (LOGIN_COOKIE), the
    # same one in every tab, so a second tab does not spoil the first one's form.
    token = state.login_token(request) or secrets.token_urlsafe(32)
    context = {**_login_context(request, next_page=request.query_params.get("next")), "csrf": token}
    response = render(request, None, "login.html", context)
    _set_login_form_cookie(response, state, request, state.login_cookie(request), token)
    return response


def _login_context(
    request: Request, next_page: str | None, error: str = "", wrong_password: bool = False
) -> dict[str, Any]:
    """The login page's values; `next_page` is where the login leads (the query's on the
    form, the form's own field when a password was refused: it was forgotten after one)."""
    state = _state(request)
    try:
        ready = state.password.is_set()
        problem = ""
    except UserError as failure:
        ready, problem = False, str(failure)
    return {
        "error": error,
        # The password field is marked invalid only when it was checked and wrong (a rate
        # limit's refusal did not look at it).
        "wrong_password": wrong_password,
        "problem": problem,
        "no_password": not ready and not problem,  # login.html says how to set one:
        "passwd_command": auth.passwd_command(state.config_path),
        "ready": ready,
        "next": _safe_next(next_page),
        "notice": LOGIN_NOTICES.get(request.query_params.get("notice", ""), ""),
    }


async def _check_password(
    state: WebState,
    address: str,
    password: str,
    session: auth.Session | None = None,
    device: str | None = None,
) -> tuple[int, str]:
    """One admin password check under the rate limit: (HTTP status, message for the page).

    200 for the right password; 401 a wrong one; 429 refused by the rate limit, nothing
    hashed; 503 the password file cannot be read. The attempt counts before the hash runs
    (auth.LoginLimiter.attempt), so parallel requests cannot outrun the limit. With a
    logged-in `session` (the unlock form) the check counts for that session only, with a
    trusted `device` (the login form, from a browser that logged in before) for that device
    only: failures from its address, or from anywhere, cannot keep its owner out.
    """
    key = session.id if session is not None else None
    refused = state.limiter.attempt(address, key, device=device)
    if refused is not None:
        return 429, refused
    try:
        ok = await run_in_threadpool(state.password.verify, password)
    except UserError as error:  # raised before any hash: the attempt does not count
        state.limiter.refund(address, key, device=device)
        return 503, str(error)
    if not ok:
        return 401, "Wrong password."
    state.limiter.succeeded(address, key, device=device)
    return 200, ""


@action(login=False)
async def login_submit(request: Request, session: auth.Session | None, form: Form) -> Response:
    state = _state(request)
    address = client_address(request)
    # Read before the check: a password set while it runs ends the new session at once.
    password_hash = state.password.current_hash()
    state.limiter.password_is(password_hash)  # trust given with an older one ends
    # A device cookie that is not valid (forged, changed, forgotten) counts as none.
    device = state.limiter.device(request.cookies.get(state.device_cookie(request)))
    status, problem = await _check_password(state, address, form.get("password"), device=device)
    if status != 200:
        if status == 429:
            if (held_back := state.rate_limited_lines.due()) is not None:
                log.warning(
                    "web login refused address=%s reason=rate-limit held_back=%d",
                    address,
                    held_back,
                )
        elif status == 401:
            log.warning("web login failed address=%s", address)
        context = {
            **_login_context(request, form.get("next"), problem, wrong_password=status == 401),
            "csrf": state.login_token(request),
        }
        if context["no_password"]:
            context["error"] = ""  # the page says so already, with the command that sets one
        return render(request, None, "login.html", context, status)
    fresh = state.sessions.login(session, auth.ADMIN, address, password_hash)
    known = "known" if device else "new"
    log.info("web login user=%s address=%s device=%s", auth.ADMIN, address, known)
    response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
    _set_cookie(response, state, request, fresh)
    # Logging out keeps it: it names the browser, not the session.
    _set_login_form_cookie(
        response,
        state,
        request,
        state.device_cookie(request),
        state.limiter.trust_device(device),
        max_age=int(auth.TRUSTED_ADDRESS_S),
    )
    return response


@action()
async def logout(request: Request, session: auth.Session, form: Form) -> Response:
    state = _state(request)
    state.sessions.drop(session.id)
    log.info("web logout user=%s address=%s", session.user, client_address(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        state.cookie(request), path="/", secure=state.secure(request), httponly=True
    )
    return response


# --- dashboard -------------------------------------------------------------------------------


def _status_context(state: WebState, status: DoorStatus) -> dict[str, Any]:
    running = status.reachable and bool(status.get("running"))
    return {
        "status": status,
        "running": running,
        "frame_age": frame_age(status),
        "fresh": frame_is_fresh(status),  # the door's own limit (control.frame_limit)
        "live": state.config.web.live_view and is_live(status),
        "picture_problem": picture_explained(status),
    }


async def _recent(state: WebState) -> tuple[list[Any], str]:
    """The latest events, or none and why (the dashboard still shows the door's status)."""
    try:
        return await run_in_threadpool(state.history.latest, RECENT_EVENTS), ""
    except UserError as error:
        return [], str(error)


@page
async def dashboard(request: Request, session: auth.Session) -> Response:
    state = _state(request)
    status = await run_in_threadpool(state.door.status)
    recent, problem = await _recent(state)
    context = {
        **_status_context(state, status),
        "events": recent,
        "events_error": problem,
        "snapshots": state.config.events.snapshots is not None,
        "live_view": state.config.web.live_view,
        "stamp": datetime.now().strftime("%H%M%S%f"),
    }
    return render(request, session, "dashboard.html", context)


@page
async def status_fragment(request: Request, session: auth.Session) -> Response:
    state = _state(request)
    status = await run_in_threadpool(state.door.status)
    return render(request, session, "_status.html", _status_context(state, status))


@page
async def recent_fragment(request: Request, session: auth.Session) -> Response:
    state = _state(request)
    recent, problem = await _recent(state)
    context = {
        "events": recent,
        "events_error": problem,
        "snapshots": state.config.events.snapshots is not None,
    }
    return render(request, session, "_events_table.html", context)


@page
async def live_fragment(request: Request, session: auth.Session) -> Response:
    state = _state(request)
    status = await run_in_threadpool(state.door.status)
    context = _status_context(state, status)
    context["stamp"] = datetime.now().strftime("%H%M%S%f")
    return render(request, session, "_live.html", context)


@page
async def live_frame(request: Request, session: auth.Session) -> Response:
    state = _state(request)
    if not state.config.web.live_view:
        return PlainTextResponse("live view is off ([web] live_view)", status_code=404)
    jpeg = await run_in_threadpool(state.door.frame)
    return _jpeg(jpeg, "no frame: the door is idle or not running")


@page
async def snapshot(request: Request, session: auth.Session) -> Response:
    state = _state(request)
    event_id = parse_event_id(request.path_params["event_id"])
    data = None
    if event_id is not None:
        stored = await run_in_threadpool(state.history.snapshot_of, event_id)
        data = await run_in_threadpool(read_snapshot, state.config.events.snapshots, stored)
    return _jpeg(data, "no such snapshot")


def _jpeg(data: bytes | None, missing: str) -> Response:
    """A picture the pages show (the live frame, an event's snapshot) as a JPEG, or, when
    there is none, a plain 404 saying why (`missing`)."""
    if data is None:
        return PlainTextResponse(missing, status_code=404)
    return Response(data, media_type="image/jpeg")


@page
async def event_page(request: Request, session: auth.Session) -> Response:
    """One event on a page of its own: its snapshot at full size, with its details."""
    state = _state(request)
    event_id = parse_event_id(request.path_params["event_id"])
    event = None if event_id is None else await run_in_threadpool(state.history.event, event_id)
    if event is None:
        message = "No such event: it may have been pruned from the history."
        return render(
            request, session, "error.html", {"title": "Not found", "message": message}, 404
        )
    snapshot = await run_in_threadpool(read_snapshot, state.config.events.snapshots, event.snapshot)
    context = {"event": event, "has_snapshot": snapshot is not None}
    return render(request, session, "event.html", context)


# --- people ----------------------------------------------------------------------------------


def _people(state: WebState) -> list[Any]:
    from edge_app.gallery import Gallery

    path = Path(state.config.gallery.path)
    if not path.exists():
        return []
    with Gallery.open(path, read_only=True) as gallery:
        return gallery.people()


async def _people_page(
    request: Request,
    session: auth.Session,
    report: EnrolmentReport | None = None,
    notice: str = "",
    error: str = "",
    status: int = 200,
    kept: KeptForm | None = None,
    find: str = "",
    number: int = 1,
    show: str = "",
) -> Response:
    """The People page: page `number` of those `find` finds, or the page that holds `show`,
    or with `kept` (a refused form's input) the page that holds the person it was for."""
    state = _state(request)
    try:
        people = await run_in_threadpool(_people, state)
    except UserError as failure:
        people, error = [], error or page_error(failure)
    shown = listing(people, find, number, show or (kept.person if kept else ""))

    def link(page: int) -> str:
        return "/people?" + urlencode(
            {"find": shown.find, "page": page} if shown.find else {"page": page}
        )

    context = {
        "listing": shown,
        "people": shown.rows,
        "per_page": PEOPLE_PER_PAGE,
        "prev_link": link(shown.number - 1),
        "next_link": link(shown.number + 1),
        "report": report,
        "notice": notice,
        "error": error,
        # After a refusal the input stays in its own form, for the retry.
        "kept": kept or KeptForm(""),
        "camera_samples": CAMERA_SAMPLES,
        "camera_seconds": int(WEB_CAMERA_TIMEOUT_S),
        "max_files": state.config.web.max_upload_files,
        "max_mb": state.config.web.max_upload_mb,
    }
    return render(request, session, "people.html", context, status)


@page
async def people(request: Request, session: auth.Session) -> Response:
    number = _page_number(request)
    find = request.query_params.get("find", "")
    if number is None:
        message = f"page: {request.query_params['page'][:40]!r} is not a page number"
        return render(request, session, "error.html", {"message": message}, 400)
    if problem := find_refused(find):
        return render(request, session, "error.html", {"message": problem}, 400)
    flash = _state(request).flashes.pop(session.id, None) or Flash()
    return await _people_page(
        request,
        session,
        report=flash.report,
        notice=flash.notice,
        find=find,
        number=number,
        show=request.query_params.get("show", ""),
    )


def _people_done(request: Request, session: auth.Session, flash: Flash, show: str) -> Response:
    """Post/redirect/get for the People actions that changed something: the result is shown
    once by GET /people, on the page that holds `show` (the person changed, or where they
    were), so a reload shows the page, where it re-sent the form and answered a success with
    an error ("already enrolled", "not enrolled"). Refusals change nothing and are answered
    directly, with the input kept."""
    flashes = _state(request).flashes
    flashes.pop(session.id, None)
    flashes[session.id] = flash
    while len(flashes) > MAX_FLASHES:  # the oldest first; at most one a session
        del flashes[next(iter(flashes))]
    return RedirectResponse("/people?" + urlencode({"show": show}), status_code=303)


async def _enrol(request: Request, session: auth.Session, form: Form, add: bool) -> Response:
    state = _state(request)
    enrol = functools.partial(
        enroll_uploads,
        Path(state.config.gallery.path),
        state.engine,
        form.get("name"),
        form.files,
        add=add,
        access=form.get("visitor") != "yes",
        recognition=state.config.recognition,
    )
    if add:  # the person's panel stays open
        kept = KeptForm("add", person=form.get("name"))
    else:
        kept = KeptForm("enroll", form.get("name"), form.get("visitor") == "yes")
    return await _enrol_locked(request, session, "web enrol", enrol, kept)


@action()
async def enrol_camera(request: Request, session: auth.Session, form: Form) -> Response:
    state = _state(request)
    enrol = functools.partial(
        enroll_from_door,
        Path(state.config.gallery.path),
        state.engine,
        form.get("name"),
        state.door,
        add=form.get("add") == "yes",
        access=form.get("visitor") != "yes",
        recognition=state.config.recognition,
    )
    kept = KeptForm("enroll-camera", form.get("name"), form.get("visitor") == "yes")
    return await _enrol_locked(request, session, "web camera enrol", enrol, kept)


async def _enrol_locked(
    request: Request,
    session: auth.Session,
    what: str,
    enrol: Callable[[], EnrolmentReport],
    kept: KeptForm | None,
) -> Response:
    """Run one enrolment at a time (409 while another runs), log it, show the people page:
    the report once after a redirect when it enrolled, else directly with `kept` (the form's
    input) back in its form."""
    state = _state(request)
    if not state.enrol_lock.acquire(blocking=False):
        return await _people_page(
            request,
            session,
            error="another enrolment is running; try again in a moment",
            status=409,
            kept=kept,
        )
    try:
        report = await run_in_threadpool(enrol)
    finally:
        state.enrol_lock.release()
    log.info(
        "%s user=%s address=%s name=%r ok=%s",
        what,
        session.user,
        client_address(request),
        report.name,
        report.ok,
    )
    if report.ok:
        return _people_done(request, session, Flash(report=report), report.name)
    return await _people_page(request, session, report=report, status=422, kept=kept)


@action(files=True)
async def enrol_new(request: Request, session: auth.Session, form: Form) -> Response:
    return await _enrol(request, session, form, add=False)


@action(files=True)
async def enrol_add(request: Request, session: auth.Session, form: Form) -> Response:
    return await _enrol(request, session, form, add=True)


@action()
async def rename(request: Request, session: auth.Session, form: Form) -> Response:
    from edge_app.gallery import Gallery

    state = _state(request)
    old, new = form.get("name"), form.get("new_name")

    def work() -> str:
        with Gallery.open(state.config.gallery.path) as gallery:
            return gallery.rename(old, new)

    try:
        new = await run_in_threadpool(work)  # as stored: check_name's form
    except UserError as error:
        # In the person's panel, open, with the name as typed.
        kept = KeptForm("rename", new, person=old)
        return await _people_page(request, session, error=page_error(error), status=422, kept=kept)
    log.info("web rename user=%s old=%r new=%r", session.user, old, new)
    return _people_done(request, session, Flash(notice=f"renamed {old!r} to {new!r}"), new)


@action()
async def access(request: Request, session: auth.Session, form: Form) -> Response:
    """Let an enrolled person open the door, or make them a known visitor (`edge-app access`)."""
    from edge_app.gallery import Gallery, describe_access

    state = _state(request)
    name, allowed = form.get("name"), form.get("allowed")
    if allowed not in ("yes", "no"):
        return await _people_page(request, session, error="access must be yes or no", status=422)

    def work() -> str:
        with Gallery.open(state.config.gallery.path) as gallery:
            return gallery.set_access(name, allowed == "yes")[0]

    try:
        name = await run_in_threadpool(work)
    except UserError as error:
        return await _people_page(request, session, error=page_error(error), status=422)
    log.info("web access user=%s name=%r allowed=%s", session.user, name, allowed)
    notice = f"{name!r} {describe_access(allowed == 'yes')}"
    return _people_done(request, session, Flash(notice=notice), name)


@page
async def remove_confirm(request: Request, session: auth.Session) -> Response:
    name = request.query_params.get("name", "")
    known = {p.name: p for p in await run_in_threadpool(_people, _state(request))}
    if name not in known:
        return await _people_page(request, session, error=f"not enrolled: {name!r}", status=404)
    # The command that erases their history, for this door's config.
    erase = as_door("remove --history", _state(request).config_path, "--", name)
    context = {"person": known[name], "erase_command": erase}
    return render(request, session, "remove.html", context)


@action()
async def remove(request: Request, session: auth.Session, form: Form) -> Response:
    from edge_app.gallery import Gallery

    state = _state(request)
    name = form.get("name")
    if form.get("confirm") != "yes":
        return await _people_page(request, session, error="removal not confirmed", status=422)

    def work() -> int:
        with Gallery.open(state.config.gallery.path) as gallery:
            return gallery.remove([name])

    try:
        samples = await run_in_threadpool(work)
    except UserError as error:
        return await _people_page(request, session, error=page_error(error), status=422)
    log.info("web remove user=%s name=%r samples=%d", session.user, name, samples)
    notice = f"removed {name!r} ({samples} samples)"
    return _people_done(request, session, Flash(notice=notice), name)


@action()
async def export(request: Request, session: auth.Session, form: Form) -> Response:
    try:
        handle, size = await run_in_threadpool(_export_file, _state(request).config.gallery.path)
    except UserError as error:
        return await _people_page(request, session, error=page_error(error), status=422)
    log.info("web export user=%s address=%s", session.user, client_address(request))
    stamp = datetime.now().strftime("%Y%m%d-%H%M")
    return StreamingResponse(
        _chunks_of(handle),
        media_type="application/x-ndjson",
        headers={
            "content-disposition": f'attachment; filename="edge-door-gallery-{stamp}.jsonl"',
            "content-length": str(size),
        },
    )


def _export_file(gallery_path: Path) -> tuple[IO[bytes], int]:
    """The gallery's export (docs/GALLERY.md) in a temporary file beside the gallery, open at
    its start, and its size. The file has no name (it is gone once closed, or if the hub
    stops) and is written once, not held in the hub's memory. Where that file cannot be
    written (a full or read-only disk, when a backup matters most) the export is built in
    memory instead, at most MAX_IMPORT_BYTES. An export `edge-app import` would refuse is
    refused as `edge-app export FILE` refuses it (UserError), where it passes the limit."""
    from edge_app.gallery import Gallery

    with Gallery.open(gallery_path, read_only=True) as gallery:
        folder = gallery.path.parent
        try:
            # Mode 0600; closed here on a failure, else by the response that sends it.
            handle: IO[bytes] = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115
            _export_into(gallery, handle)
        except OSError as error:  # not made, or the disk filled while it was written
            handle = _in_memory(folder, error)
            _export_into(gallery, handle)
    size = handle.tell()
    handle.seek(0)
    return handle, size  # the response closes it


def _in_memory(folder: Path, error: OSError) -> IO[bytes]:
    log.warning(
        "web export built in memory: a temporary file in %s could not be made or written (%s)",
        folder,
        error.strerror or error,
    )
    return io.BytesIO()


def _export_into(gallery: Any, handle: IO[bytes]) -> None:
    """gallery.export() into `handle` from its start, stopped past MAX_IMPORT_BYTES; on any
    failure `handle` is closed (a buffered file whose last bytes found no room still lets go
    of its descriptor) and the error raised."""
    from edge_app.gallery import MAX_IMPORT_BYTES, CountedWriter, ExportTooLarge

    try:
        text = io.TextIOWrapper(handle, encoding="utf-8")
        gallery.export(CountedWriter(text, MAX_IMPORT_BYTES))
        text.detach()  # flushed first (an OSError here: the disk filled); `handle` stays open
    except BaseException as error:
        with contextlib.suppress(OSError):
            handle.close()  # and with it `text`, which wraps it
        if isinstance(error, ExportTooLarge):
            raise UserError(f"{error}; nothing was downloaded") from None
        raise


def _chunks_of(handle: IO[bytes]) -> Iterator[bytes]:
    """A file's bytes, EXPORT_CHUNK at a time; closed at its end, or with the generator
    when the download stops before that."""
    with handle:
        while chunk := handle.read(EXPORT_CHUNK):
            yield chunk


# --- events ----------------------------------------------------------------------------------


def _page_number(request: Request) -> int | None:
    """The page asked for (1 when none), or None when `page` is not ASCII digits. Any number
    of digits is a page number: one past the last page shows the last (History.page), so a
    number too long to read whole is read as one that is surely past it."""
    text = request.query_params.get("page", "") or "1"
    if not (text.isascii() and text.isdigit()):
        return None
    return int(text) if len(text) <= 9 else 10**9


@page
async def events(request: Request, session: auth.Session) -> Response:
    state = _state(request)
    filters, problems = Filters.parse(dict(request.query_params))
    number = _page_number(request)
    if number is None:
        message = f"page: {request.query_params['page'][:40]!r} is not a page number"
        return render(request, session, "error.html", {"message": message}, 400)
    result = await run_in_threadpool(state.history.page, filters, number)
    fragment = bool(request.query_params.get("fragment"))
    # The filter menus are the whole page's: the part that refreshes every 3 s has none.
    names, types = ([], []) if fragment else await run_in_threadpool(state.history.choices)
    query = filters.query()
    context = {
        "filters": filters,
        "problems": problems,
        "result": result,
        "names": names,
        "types": types,
        "events": result.rows,
        "snapshots": state.config.events.snapshots is not None,
        "query": urlencode(query),
        "prev_link": "/events?" + urlencode({**query, "page": result.number - 1}),
        "next_link": "/events?" + urlencode({**query, "page": result.number + 1}),
        "csv_link": "/events.csv" + (f"?{urlencode(query)}" if query else ""),
        "history_missing": not state.history.available,
    }
    template = "_events_page.html" if fragment else "events.html"
    # A refused filter is named on the page, which shows the events without it.
    return render(request, session, template, context, 400 if problems else 200)


@page
async def events_csv(request: Request, session: auth.Session) -> Response:
    state = _state(request)
    filters, problems = Filters.parse(dict(request.query_params))
    if problems:
        # A download cannot show the message: nothing is exported rather than more than asked.
        text = "".join(f"{message}\n" for _, message in problems)
        return PlainTextResponse(text, status_code=400)
    pieces = await run_in_threadpool(state.history.csv, filters)
    stamp = datetime.now().strftime("%Y%m%d-%H%M")
    return _CsvDownload(
        pieces,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="edge-door-events-{stamp}.csv"'},
    )


class _CsvDownload(StreamingResponse):
    """The events export, sent as it is read. An events database that fails part way ends
    the answer without its last chunk, so the browser reports the download failed rather
    than keep a shorter file that looks whole; one line says why."""

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        except HistoryError as error:
            log.warning("web events.csv cut short: %s", error)


# --- remote unlock ---------------------------------------------------------------------------


@page
async def unlock_form(request: Request, session: auth.Session) -> Response:
    if not _state(request).config.web.remote_unlock:
        return _unlock_off(request, session)
    done, session.unlock_done = session.unlock_done, None  # shown once, after the redirect
    return await _unlock_page(request, session, {"done": done, "reason": ""})


async def _unlock_page(
    request: Request, session: auth.Session, context: dict[str, Any], status: int = 200
) -> Response:
    """The unlock page with a fresh single-use form token: a form is good for one POST, so
    the same request sent again (a captured one, a browser's resubmit) opens nothing. A
    door that does not answer is said before the password is asked for."""
    door = await run_in_threadpool(_state(request).door.status)
    session.unlock_form = token = secrets.token_urlsafe(32)
    context = {**context, "unlock_form": token, "door_down": "" if door.reachable else DOOR_DOWN}
    return render(request, session, "unlock.html", context, status)


def _unlock_off(request: Request, session: auth.Session) -> Response:
    message = "Remote unlock is off; an admin can enable it with [web] remote_unlock = true."
    return render(request, session, "error.html", {"message": message}, 404)


@action()
async def unlock_submit(request: Request, session: auth.Session, form: Form) -> Response:
    from edge_app.control import ControlError, DoorRefused, Refused, clean_text

    state = _state(request)
    if not state.config.web.remote_unlock:
        return _unlock_off(request, session)
    # Single use, whatever follows: taken before anything awaits, so two copies of one
    # request sent at once cannot both get past it.
    expected, session.unlock_form = session.unlock_form, None
    # A refused form comes back with its reason as typed (the password is asked again);
    # `error_field` names the field at fault, which unlock.html marks invalid.
    typed = {"reason": form.get("reason")}
    if expected is None or not auth.same_token(expected, form.get(UNLOCK_FORM_FIELD)):
        log.warning(
            "web unlock refused user=%s address=%s reason=form-used",
            session.user,
            client_address(request),
        )
        return await _unlock_page(request, session, {"error": UNLOCK_FORM_USED, **typed}, 409)
    # The form is checked whole before the password, by the door's own rule for a reason
    # (edge_app.control): a refused form spends no attempt and says nothing of the password.
    try:
        reason = clean_text(form.get("reason").strip() or UNLOCK_REASON, "reason")
    except Refused as error:
        context = {"error": f"The {error}.", "error_field": "reason", **typed}
        return await _unlock_page(request, session, context, 400)
    address = client_address(request)
    status, problem = await _check_password(state, address, form.get("password"), session)
    if status != 200:
        if status == 401:
            log.warning(
                "web unlock refused user=%s address=%s reason=password", session.user, address
            )
        context = {"error": problem, **typed}
        if status == 401:
            context["error_field"] = "password"
        return await _unlock_page(request, session, context, status)
    origin = f"web:{session.user}@{address}"
    try:
        reply = await run_in_threadpool(state.door.unlock, reason, origin)
    except (ControlError, OSError, RuntimeError) as error:
        log.warning("web unlock failed origin=%s error=%s", origin, error)
        # A door that is not running did not refuse: say which it was.
        down = not (await run_in_threadpool(state.door.status)).reachable
        if down:  # what the socket said, folded away under the plain sentence
            context = {"error": DOOR_DOWN_AFTER, "detail": str(error), **typed}
        elif isinstance(error, DoorRefused):  # its own reason, once (not "door refused unlock")
            context = {"error": f"The door refused: {error.reason}", **typed}
        else:  # it runs, and did not say no: the unlock may have been carried out
            context = {"error": UNLOCK_UNANSWERED, "detail": str(error), **typed}
        return await _unlock_page(request, session, context, 502)
    log.info("web unlock origin=%s reason=%r", origin, reason)
    # Post/redirect/get: reloading the page that says "unlocked" sends nothing again.
    session.unlock_done = reply
    return RedirectResponse("/unlock?done=1", status_code=303)


# --- health ----------------------------------------------------------------------------------


def _health_checks(state: WebState) -> list[dict[str, str]]:
    from edge_app.commands.doctor import Check, collect_checks

    # The door row is doctor's, asked through the socket this page uses.
    checks = collect_checks(state.config_path, state.config.models.dir, state.door.socket_path)
    web = state.config.web
    host, _ = split_listen(web.listen)
    proxy = f"; public origin {web.public_origin}" if web.public_origin else ""
    if state.tls:
        checks.append(Check("web", "ok", f"serving {web.listen} over HTTPS{proxy}"))
    elif is_loopback(host):
        checks.append(
            Check("web", "ok", f"serving {web.listen}, this machine only (plain HTTP){proxy}")
        )
    else:
        checks.append(
            Check(
                "web",
                "warn",
                f"serving {web.listen} to the network over plain HTTP",
                "set web.tls_cert and web.tls_key (docs/WEB.md)",
            )
        )
    return [asdict(check) for check in checks]


@page
async def health(request: Request, session: auth.Session) -> Response:
    state = _state(request)

    def check() -> list[dict[str, str]]:
        from edge_app import heap

        try:
            return _health_checks(state)
        finally:
            heap.give_back()  # the models the checks opened, freed (edge_app/heap.py)

    # Tabs reloading the page share the check under way (started a moment before they
    # came) rather than queue their own, each holding a worker thread the other pages need.
    if state.health_check is None or state.health_check.done():
        state.health_check = asyncio.ensure_future(run_in_threadpool(check))
        # Its failure is every waiting request's; if none is left, it is dropped here.
        state.health_check.add_done_callback(lambda done: done.cancelled() or done.exception())
    # Shielded: a request whose client went away does not cancel the others' check.
    checks = await asyncio.shield(state.health_check)
    failed = sum(1 for c in checks if c["status"] == "fail")
    warned = sum(1 for c in checks if c["status"] == "warn")
    return render(
        request, session, "health.html", {"checks": checks, "failed": failed, "warned": warned}
    )


async def not_found(request: Request, exc: Exception) -> Response:
    """A page with the way back for the owner; a bare 404 for anyone else, who learns
    nothing of the page from it."""
    session = _session(request)
    if session is None or not session.logged_in:
        return PlainTextResponse("404 Not Found\n", status_code=404)
    path = request.url.path
    shown = path if len(path) <= 80 else path[:80] + "..."
    message = f"There is no page at {shown}: the address may be mistyped or out of date."
    return render(request, session, "error.html", {"title": "Not found", "message": message}, 404)


async def user_error(request: Request, exc: Exception) -> Response:
    """A problem the admin can fix (an unreadable database...): its message, not a traceback."""
    message = web_message(exc)  # the page's words for advice, never a flag or a command
    log.error("web request failed path=%s error=%s", request.url.path, message)
    return render(request, _session(request), "error.html", {"message": message}, 503)


# --- the application ---------------------------------------------------------------------------


def _localtime(value: float | None) -> str:
    if value is None:
        return "-"
    return shown_time(float(value))


def create_app(
    config: Config,
    *,
    config_path: Path | None = None,
    socket_path: Path | None = None,
    tls: bool = False,
) -> Starlette:
    web = config.web
    remove_stale_uploads(Path(config.gallery.path))
    state = WebState(
        config=config,
        config_path=config_path,
        door=WebDoor(socket_path),
        tls=tls,
        origins=Origins(config, tls=tls),
        sessions=auth.SessionStore(web.session_idle_minutes * 60.0, web.session_max_hours * 3600.0),
        limiter=auth.LoginLimiter(),
        password=auth.PasswordCheck(web.password_file, config_path),
        history=History(config.events.db),
        engine=EngineHolder(config.models, config.detection),
    )
    routes = [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login_submit, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", dashboard, methods=["GET"]),
        Route("/fragments/status", status_fragment, methods=["GET"]),
        Route("/fragments/recent", recent_fragment, methods=["GET"]),
        Route("/fragments/live", live_fragment, methods=["GET"]),
        Route("/live.jpg", live_frame, methods=["GET"]),
        Route("/snapshots/{event_id}", snapshot, methods=["GET"]),
        Route("/events/{event_id}", event_page, methods=["GET"]),
        Route("/people", people, methods=["GET"]),
        Route("/people/enroll", enrol_new, methods=["POST"]),
        Route("/people/add", enrol_add, methods=["POST"]),
        Route("/people/enroll-camera", enrol_camera, methods=["POST"]),
        Route("/people/rename", rename, methods=["POST"]),
        Route("/people/access", access, methods=["POST"]),
        Route("/people/remove", remove_confirm, methods=["GET"]),
        Route("/people/remove", remove, methods=["POST"]),
        Route("/people/export", export, methods=["POST"]),
        Route("/events", events, methods=["GET"]),
        Route("/events.csv", events_csv, methods=["GET"]),
        Route("/unlock", unlock_form, methods=["GET"]),
        Route("/unlock", unlock_submit, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={404: not_found, UserError: user_error},
        middleware=[Middleware(TrustedHosts, origins=state.origins)],
    )
    # Starlette answers /people/ with a redirect to an absolute URL built from what the hub
    # sees: behind a TLS proxy that is http:// on the proxy's name, off TLS. No page here
    # needs it; a trailing slash is a 404 like any other unknown URL.
    app.router.redirect_slashes = False
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["localtime"] = _localtime
    templates.env.filters["utc_iso"] = utc_iso
    app.state.templates = templates
    app.state.web = state
    return app


def wrap(app: Starlette) -> ASGIApp:
    """The app with its security headers, as served."""
    return SecurityHeaders(app)
