"""Helpers for the web page tests: Debian's headless Chromium, a served page, forged images.

The browser is the system's (apt: chromium, chromium-driver), never downloaded. Tests that
need it fail when the CI environment variable is set and it is missing, and are skipped with
the reason otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from needs import unavailable

from benchmarks import loopback
from benchmarks.loopback import free_port
from edge_app.paths import REPO_ROOT

if TYPE_CHECKING:
    from edge_app.web.server import WebServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
)
PASSWORD = "correct horse battery"
# EDGE_WEB_SCREENSHOTS=DIR keeps every page's screenshot there too (docs/img comes from it).
SCREENSHOTS_ENV = "EDGE_WEB_SCREENSHOTS"


def missing_browser() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.is_file():
            return f"{path} not found: sudo apt install {package}"
    return None


def require_browser() -> None:
    reason = missing_browser()
    if reason is None:
        return
    unavailable(reason)


def open_browser(width: int = 1280, height: int = 900):  # -> selenium WebDriver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors (CSP)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    driver.implicitly_wait(5)
    return driver


def browser_session() -> Iterator:
    """For a module's `browser` fixture: one headless Chromium, quit at the end."""
    require_browser()
    driver = open_browser()
    try:
        yield driver
    finally:
        driver.quit()


def self_signed(folder: Path) -> tuple[Path, Path]:
    """benchmarks.loopback.self_signed, skipping the test where openssl is missing."""
    if shutil.which("openssl") is None:
        unavailable("openssl not found (needed to make a test certificate)")
    return loopback.self_signed(folder)


def screenshot(driver, folder: Path, name: str) -> Path:
    """A full-page PNG of what the browser shows, in `folder` (and $EDGE_WEB_SCREENSHOTS)."""
    folder.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, max(600, min(int(height) + 120, 3000)))
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    extra = os.environ.get(SCREENSHOTS_ENV)
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path


def forged_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose data is a few bytes: a
    decompression bomb's signature, harmless unless a reader trusts the header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    data = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def unlock_fields(client: httpx.Client) -> dict[str, str]:
    """A fresh unlock form's hidden fields (its CSRF token and single-use form token), from
    GET /unlock in `client`'s session."""
    page = client.get("/unlock").text
    match = re.search(r'name="unlock_form" value="([^"]+)"', page)
    assert match, "no unlock form token in the page"
    return {"csrf_token": csrf_of(page), "unlock_form": match.group(1)}


def hub_environment() -> dict[str, str]:
    python_path = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}


def web_section(state: Path, port: int) -> str:
    """The [web] section of a test config: on, loopback, a password file, remote unlock on."""
    return f"""[web]
enabled = true
listen = "127.0.0.1:{port}"
password_file = "{state / "web-password"}"
remote_unlock = true
"""


def write_door_config(
    folder: Path, port: int, *, sections: str = "", events: str = "", hub: str = ""
) -> Path:
    """FOLDER/door.toml for a test door: its gallery, events and web password under
    FOLDER/state, its control socket FOLDER/door.sock, its web page on loopback `port`.
    `sections` adds whole sections; `events` and `hub` add lines to those two."""
    state = folder / "state"
    state.mkdir(mode=0o700, parents=True, exist_ok=True)  # as the installer makes it
    config = folder / "door.toml"
    config.write_text(
        f"""{sections}
[gallery]
path = "{state / "gallery.db"}"
[events]
db = "{state / "events.db"}"
{events}[hub]
socket = "{folder / "door.sock"}"
{hub}{web_section(state, port)}"""
    )
    return config


def set_password(config: Path) -> None:
    """`edge-app hub passwd --stdin` with PASSWORD, as an admin would set it."""
    subprocess.run(
        [sys.executable, "-m", "edge_app.cli", "hub", "passwd", "--stdin", "--config", str(config)],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
        env=hub_environment(),
    )


def start_hub(config: Path, url: str, log: Path) -> subprocess.Popen:
    """`edge-app hub --config CONFIG`, returned once its web page answers."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "edge_app.cli", "hub", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=hub_environment(),
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the hub exited: {log.read_text()}")
        try:
            httpx.get(url + "/login", timeout=2)
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"the hub's web page never answered: {log.read_text()}")


@contextmanager
def served_hub(config: Path, url: str, log: Path) -> Iterator[subprocess.Popen]:
    """The hub of `config` with PASSWORD set, serving `url` until the block ends."""
    set_password(config)
    process = start_hub(config, url, log)
    try:
        yield process
    finally:
        loopback.stop(process)


_OLD_PAGE_MARK = "__edgeAppOldPage"


def submit(driver, form) -> None:
    """Click the form's submit button and wait for the next page to replace this one.

    The old page's ``window`` carries a mark; the next page is loaded once the mark is gone
    and its document is complete. Waiting for the form to go stale instead is racy: while the
    page is being replaced chromedriver may answer with a generic inspector error ("Node with
    given id does not belong to the document") rather than a stale-element one. Errors met
    mid-navigation therefore mean "not yet", never a failure.
    """
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script(f"window.{_OLD_PAGE_MARK} = true;")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    def replaced(drv) -> bool:
        return bool(
            drv.execute_script(
                f"return window.{_OLD_PAGE_MARK} === undefined"
                " && document.readyState === 'complete';"
            )
        )

    WebDriverWait(driver, 120, ignored_exceptions=(WebDriverException,)).until(replaced)


def log_in(driver, url: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/login")
    driver.delete_all_cookies()  # a fresh, logged-out session
    driver.get(url + "/login")
    form = driver.find_element(By.CSS_SELECTOR, "#login")
    field = form.find_element(By.CSS_SELECTOR, "input[name=password]")
    field.clear()
    field.send_keys(password)
    submit(driver, form)


def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


def connect(
    server: WebServer,
    source: str = "127.0.0.1",
    context: ssl.SSLContext | None = None,
    receive_buffer: int | None = None,
) -> socket.socket:
    """A connection to the page from `source`, over TLS with `context`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    if receive_buffer is not None:  # before connecting: it sets the window offered
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.bind((source, 0))
    sock.connect((server.host, server.port))
    if context is None:
        return sock
    return context.wrap_socket(sock, server_hostname=server.host)


def big_answer(size: int) -> Any:  # a Starlette endpoint
    """An endpoint answering `size` zero bytes in 64 KiB chunks: more than socket buffers."""
    from starlette.responses import StreamingResponse

    async def answer(request: Any) -> Any:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(size // 65536):
                yield bytes(65536)

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    return answer


@contextmanager
def pages(
    tmp_path: Path,
    monkeypatch: Any,
    request: Any,
    routes: list[Any],
    defaults: dict[str, float],
) -> Iterator[Any]:
    """A `serve(tls=..., NAME=value...)` for a test module: starts the real page (its door
    socket absent) with edge_app.web.server.NAME set to value over `defaults`, `routes`
    added in front of the page's, over TLS with the `certificate` fixture when asked; stops
    every page it started afterwards."""
    from test_web import web_config

    from edge_app.web import auth
    from edge_app.web import server as web_server
    from edge_app.web.server import WebServer

    started: list[WebServer] = []

    def start(tls: bool = False, **limits: float) -> WebServer:
        for name, value in {**defaults, **limits}.items():
            assert hasattr(web_server, name), name
            monkeypatch.setattr(web_server, name, value)
        pair = {}
        if tls:
            cert, key = request.getfixturevalue("certificate")
            pair = {"tls_cert": str(cert), "tls_key": str(key)}
        config = web_config(tmp_path, free_port(), **pair)
        auth.write_password_file(config.web.password_file, PASSWORD)
        server = WebServer(config, socket_path=tmp_path / "absent-door.sock")
        server.app.router.routes[:0] = routes
        server.start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Wait for a browser-side condition (polled every 0.25 s); AssertionError naming it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout:g} s: {what}")
