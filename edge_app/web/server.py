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


class WebError(UserError):
    """The web page cannot be served as configured; the message names the key and the fix."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
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
    ) -> None:
        import uvicorn

        from edge_app.web.app import create_app, wrap

        self.host, self.port, self.tls = check_settings(config)
        app = create_app(config, config_path=config_path, socket_path=socket_path, tls=self.tls)
        self.app = app
        web = config.web
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
                limit_concurrency=64,
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
