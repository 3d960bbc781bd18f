"""The door's control socket: the only way another process reaches a running door.

`edge-app run` keeps no network socket. Processes on the same machine that need the door
(`edge-app hub`: MQTT and the web page) talk to it over a Unix stream socket at `[hub]
socket` (default /run/edge-app/door.sock, mode 0660, so the service user and group only).

Protocol, version 1: one JSON object per line each way, UTF-8.

  request   {"v": 1, "op": "status" | "subscribe" | "frame" | "reload" | "unlock", ...}
  response  {"v": 1, "ok": true, ...}   or   {"v": 1, "ok": false, "error": "..."}

  status     -> {"status": {running, source, backend, last_frame_time, relay_active, ...}}
  subscribe  -> {"subscribed": true}, then the connection is an event stream: one event
                object per line (the JSONL event fields plus "timestamp", Unix seconds;
                never embeddings), and {"v": 1, "keepalive": <time>} lines when idle.
                The stream begins with the events no subscriber was connected for (the
                door started, or the hub restarted, a moment before it subscribed): the
                last HELD_EVENTS of them, at most HELD_SECONDS old, each sent once
  frame      -> {"frame": "<base64 JPEG>" | null, "time": ...}: the latest detection frame,
                or null when no frame came for `[hub] stale_seconds`
  reload     -> the same as SIGHUP (config and gallery)
  unlock     {"reason": "...", "origin": "..."} -> pulses the relay through the path a
                recognition uses and records an `unlock` event with the reason, the origin
                and the caller's uid/pid; refused unless `[hub] allow_unlock = true`,
                refused for a second unlock in one read (a client waits for each reply),
                while another connection's unlock is still being carried out, and
                ("already unlocked"), from any connection, until the pulse of the last
                remote unlock has ended and UNLOCK_SPACING_SECONDS have passed. It is
                carried out on a thread of its own (the relay may take seconds to answer,
                and no other client's reply waits for it); its client's reply comes when
                it is done, and that client's next requests are answered after it

Hostile or broken clients get an error reply and, for framing errors, the connection is
closed; nothing they send can stall the frame loop: the server runs on its own thread,
events reach it through a bounded queue, every client's output is bounded (a subscriber
that does not keep up is dropped) and so is the number of clients. Each client's
uid/gid/pid comes from the kernel (SO_PEERCRED), is logged, and is stamped on its unlocks.

Every exchange has one overall deadline, REQUEST_SECONDS, on both sides, whatever the peer
sends meanwhile: a timeout per `recv` alone let a peer that trickles a byte now and then hold
a request (the server: one of the MAX_CLIENTS slots; the client: the hub's poll or unlock
thread) for as long as it liked.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import selectors
import socket
import stat
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from edge_app import __version__, images, unlock_text, untrusted_json
from edge_app.camera import describe_source
from edge_app.errors import UserError
from edge_app.logs import Throttle

if TYPE_CHECKING:
    from edge_app.daemon import Daemon
    from edge_app.events import Event

log = logging.getLogger(__name__)

VERSION = 1
OPS = ("status", "subscribe", "frame", "reload", "unlock")
MAX_LINE = 64 * 1024  # bytes in one request line
# Requests refused out of one read before the client is closed: a client waits for each
# reply, so several refused at once are a flood (60,000 bare newlines in one 64 KiB read were
# 60,000 refusals: 140 ms of the server thread, status replies to others 0.6 s late).
REFUSED_PER_READ = 4
# Requests answered out of one read before the client is closed, for the same reason: 2,978
# status requests in one 64 KiB read held the server thread 0.3 s (others' replies as late).
# The hub sends one request per connection; a tool may send a few without waiting.
REQUESTS_PER_READ = 16
# Remote unlocks across every connection: one carried out holds off the next until its pulse
# (gpio.pulse_seconds) has ended, and for at least this long; one asked for sooner is refused
# and pulses nothing. A group member looping connect, unlock, close had ~1,100 unlocks a
# second carried out, each an `unlock` event: more than the queues to the hub's stream hold,
# so a resident's unlock or a spoof in that second could be lost to MQTT.
UNLOCK_SPACING_SECONDS = 1.0
# What close() waits, at most, for the server thread and then an unlock being carried out
# (its event recorded before the door closes its events log); neither holds a stop longer.
CLOSE_SECONDS = 2.0
MAX_CLIENTS = 16
# Slots only the door's own user may take: the hub runs as that user (systemd/) and needs at
# most 4 at once (its status poll, live-view frame, event stream and an unlock). Any other
# member of the socket's group (an admin running `edge-app status`) shares the rest, so
# holding them all does not cut the hub off.
OWN_USER_SLOTS = 4
# The hub keeps one of them for its event stream; every other request of a process (the
# hub's status poll, MQTT and web unlocks, the web page's status and frames from up to 40
# threads) waits for one of the rest, so the hub never asks for more than its share and
# group members holding theirs cannot make the door "unreachable" to it (ControlClient).
SHORT_REQUEST_SLOTS = OWN_USER_SLOTS - 1
QUEUE_EVENTS = 256  # events waiting for a subscriber before it counts as too slow
PENDING_EVENTS = 1024  # events between the frame loop and the server thread
# Events published while no client was subscribed, kept for the next subscriber: a door that
# recognises someone in its first second, before the hub's next poll found it up, or while
# the hub restarts, lost that unlock for MQTT. Older ones are not news any more.
HELD_EVENTS = 64
HELD_SECONDS = 30.0
MAX_OUTPUT = 4 * 1024 * 1024  # bytes queued for one client before it is dropped
IDLE_SECONDS = 60.0  # a client that neither asks nor subscribes is closed after this
# One exchange, end to end: the server closes a client that has not sent a complete request
# line this long after connecting (or after starting the line), or not read its whole reply
# this long after asking; the client gives up on a reply (connect, send and read together)
# after this long, unless given its own timeout. A request is at most MAX_LINE bytes and a
# reply at most about 1.4 MB (a base64 frame) over a local socket, answered in milliseconds
# (the slowest, `frame`, encodes one 640 px JPEG: tens of ms on a Pi), so 5 s is two orders
# of magnitude of slack for a loaded machine, yet bounds how long a stuck or trickling peer
# holds a client slot (MAX_CLIENTS of them) or a hub thread.
REQUEST_SECONDS = 5.0
KEEPALIVE_SECONDS = 5.0  # an idle event stream gets a keepalive line this often
FRAME_MAX_WIDTH = 640
FRAME_QUALITY = 80
FRAME_MAX_BYTES = 1024 * 1024  # JPEG bytes; larger frames are refused, never sent
# Reloads asked for over the socket start at most once per this long: each one reads the
# config and the gallery and builds a matcher beside the frame loop. One asked for sooner is
# not refused (a command that changed a file must reach the door) but held, and the requests
# held together start one reload once the second has passed.
RELOAD_SECONDS = 1.0
# A refusal (a request refused, a client refused or dropped) is logged, then at most one line
# of its kind per this long, with how many more there were: a group member repeating a
# refused request 20 times a second writes a line every 10 s, not 20 a second, to the journal.
REFUSAL_LOG_SECONDS = 10.0
MAX_RESPONSE = 8 * 1024 * 1024  # what the client accepts in one line (a frame fits)
# Keys never sent over the socket, whatever an event or a status carries.
PRIVATE_KEYS = frozenset({"embedding", "embeddings", "vector", "template"})
SOCKET_MODE = 0o660
DIRECTORY_MODE = 0o750
# How to get a socket folder of one's own: every refusal to make or use it ends with this.
_AS_SERVICE = (
    'run as the service (systemd makes /run/edge-app) or set hub.socket = "" to turn it off'
)


class ControlError(UserError):
    """The control socket cannot be reached or refused the request; the message says why."""


class DoorRefused(ControlError):
    """The door answered, and refused the request: `reason` is the door's own words; the
    message names the request too ("door refused unlock: <reason>")."""

    def __init__(self, op: str, reason: str) -> None:
        super().__init__(f"door refused {op}: {reason}")
        self.reason = reason


class Unanswered(ControlError):
    """The request reached the door whole and no reply came back in time (or the connection
    ended first): the door may have carried it out, so an unlock may have opened the door.
    Its recorded events say whether it did."""


class _Unread(ControlError):
    """The door closed the connection with the request still unread (ECONNRESET on a Unix
    socket: its receive queue held our bytes): it never carried it out."""


TOO_MANY_CLIENTS = "too many clients"


class Refused(Exception):
    """A request the door understood and declined; the message goes back to the client."""


@dataclass(frozen=True)
class Peer:
    """Who is on the other end, as the kernel saw it when the client connected."""

    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"uid={self.uid} gid={self.gid} pid={self.pid}"


def peer_credentials(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


def event_payload(event: Event) -> dict[str, Any]:
    """An event as the socket sends it: the JSONL fields plus `timestamp` (Unix seconds)."""
    data = json.loads(event.to_json())
    data["timestamp"] = round(event.time, 3)
    return _public(data)


def _public(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in PRIVATE_KEYS}


def clean_text(value: Any, name: str) -> str:
    """An unlock's reason or origin as the door records it (edge_app.unlock_text); Refused,
    saying why, when the door would not record it. The web page's unlock form applies it
    too, before its password check."""
    try:
        return unlock_text.clean(value, name)
    except ValueError as error:
        raise Refused(str(error)) from None


class DoorPort(Protocol):
    """What the server needs from a door; `DaemonPort` is the real one."""

    def status(self) -> dict[str, Any]: ...

    def reload(self) -> None: ...

    def reloads(self) -> bool:
        """Whether a reload applies: a door inside another command (the demo, an
        evaluation) has no config file of its own to read again."""
        ...

    def unlock_allowed(self) -> bool: ...

    def unlock(self, reason: str, origin: str) -> float:
        """Pulse the relay; the pulse's length in seconds (Refused when nothing opened).
        Called on a thread of its own (`control-unlock`), one unlock at a time."""
        ...


@dataclass
class _Client:
    sock: socket.socket
    peer: Peer
    inbox: bytearray = field(default_factory=bytearray)
    outbox: deque[bytes] = field(default_factory=deque)
    queued: int = 0  # bytes in outbox
    subscribed: bool = False
    closing: bool = False  # close once the outbox is sent
    last_active: float = field(default_factory=time.monotonic)
    last_sent: float = field(default_factory=time.monotonic)
    # When the exchange under way must be over (a request fully received, its reply fully
    # sent); None while the connection is idle between requests or subscribed.
    deadline: float | None = None
    # An unlock was carried out for a request of the read being answered (_read): a client
    # waits for each reply, so another unlock in the same read is a flood, refused.
    unlocked_in_read: bool = False
    # Requests answered and refused out of the read being answered (REQUESTS_PER_READ,
    # REFUSED_PER_READ); kept here, as the read goes on after its unlock's reply.
    handled: int = 0
    refused: int = 0
    # Its unlock is being carried out (_Unlock): its other requests wait for that reply.
    unlocking: bool = False
    # It shut its side down (end of file) meanwhile, as a tool does once it has written its
    # requests (`socat`): out of the selector, whose end of file would wake it at once, until
    # its unlock is answered (_finish_unlock).
    hung_up: bool = False

    @property
    def fileno_alive(self) -> bool:
        return self.sock.fileno() != -1


@dataclass
class _LatestFrame:
    image: np.ndarray
    index: int
    monotonic: float
    wall: float


@dataclass(eq=False)
class _Unlock:
    """A remote unlock carried out on the `control-unlock` thread, and its outcome once `done`
    is set: the reply, or the refusal; pulse, when it pulsed: (answered, pulse ends)."""

    client: _Client
    reason: str
    stamped: str
    done: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] | None = None
    refusal: str = "internal error (the unlock did not finish)"
    pulse: tuple[float, float] | None = None


ECHO_CHARS = 40  # of a refused request's value, in the reply and the door's journal


def _echo(value: object) -> str:
    """A refused request's value as the refusal shows it: repr, cut to ECHO_CHARS (a request
    line may be 64 KiB, and the refusal goes to the door's journal too)."""
    text = repr(value)
    return text if len(text) <= ECHO_CHARS else f"{text[:ECHO_CHARS]}... ({len(text)} characters)"


class ControlServer:
    """The socket server. `start()` binds and runs a thread; `close()` stops and unlinks.

    Thread-safe entry points for the door: `publish(event)` and `offer_frame(image, index)`;
    both only store a reference and return at once.
    """

    def __init__(self, path: Path, port: DoorPort, stale_seconds: float | None = None) -> None:
        self.path = Path(path)
        self.port = port
        if stale_seconds is None:
            from edge_app.config import HubConfig

            stale_seconds = HubConfig().stale_seconds
        self.stale_seconds = stale_seconds
        self.started = time.monotonic()
        self.counters: Counter[str] = Counter()
        self.dropped_events = 0
        self._pending: deque[dict[str, Any]] = deque(maxlen=PENDING_EVENTS)
        self._held: deque[tuple[float, dict[str, Any]]] = deque(maxlen=HELD_EVENTS)
        self._frame: _LatestFrame | None = None
        self._jpeg: tuple[int, bytes] | None = None  # (frame index, JPEG) cache
        self._clients: dict[int, _Client] = {}
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of our socket file
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # One line per kind of refusal now and then, not per attempt (REFUSAL_LOG_SECONDS;
        # accept() failing, once a minute, not 10 times a second).
        self._not_accepted = Throttle(IDLE_SECONDS)
        self._too_many = Throttle(REFUSAL_LOG_SECONDS)
        self._unlock_refused = Throttle(REFUSAL_LOG_SECONDS)
        self._refused = Throttle(REFUSAL_LOG_SECONDS)
        self._dropped = Throttle(REFUSAL_LOG_SECONDS)
        self._own_uid = os.geteuid()  # the service user, whom OWN_USER_SLOTS are kept for
        self._reloaded = -RELOAD_SECONDS  # when a reload over the socket last started
        self._reload_due: float | None = None  # when the reload held back starts
        self._reload_asked = 0  # requests since the last reload started
        # The last remote unlock carried out: when it was answered, and when its pulse ends
        # (UNLOCK_SPACING_SECONDS); None before the first.
        self._unlocked: tuple[float, float] | None = None
        # The remote unlock being carried out (one at a time), until the server thread has
        # taken its outcome (_finish_unlock).
        self._unlock: _Unlock | None = None

    # --- door side --------------------------------------------------------------------------

    def publish(self, event: dict[str, Any]) -> None:
        """Queue one event for the subscribers (from any thread; never blocks)."""
        if len(self._pending) == self._pending.maxlen:
            self.dropped_events += 1
        self._pending.append(_public(event))
        self.counters[str(event.get("type"))] += 1
        self._wake()

    def offer_frame(self, image: np.ndarray, index: int) -> None:
        """The frame loop's latest RGB frame; encoded only if a client asks for it."""
        self._frame = _LatestFrame(image, index, time.monotonic(), time.time())

    @property
    def subscribers(self) -> int:
        return sum(1 for client in list(self._clients.values()) if client.subscribed)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._listener = self._bind()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()
        log.info("control socket listening path=%s mode=%o", self.path, SOCKET_MODE)

    def close(self) -> None:
        self._stop.set()
        self._wake()
        deadline = time.monotonic() + CLOSE_SECONDS
        if self._thread is not None:
            self._thread.join(timeout=CLOSE_SECONDS)
        unlock = self._unlock  # read once the server thread has stopped taking outcomes
        # A relay that does not answer holds it for seconds. Done meanwhile, its client hears
        # the outcome before it is closed (the strike may have opened), unless the server
        # thread is still running (it would take the outcome itself).
        done = unlock is not None and unlock.done.wait(max(0.0, deadline - time.monotonic()))
        if done and (self._thread is None or not self._thread.is_alive()):
            self._finish_unlock(answer_rest=False)
        for client in list(self._clients.values()):
            self._drop(client, None)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            self._unlink_own()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _bind(self) -> socket.socket:
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=DIRECTORY_MODE)
        except OSError as error:
            raise ControlError(
                f"hub.socket: cannot create the folder {path.parent} ({error}); {_AS_SERVICE}"
            ) from None
        try:
            self._remove_stale()
        except OSError as error:  # the folder exists but is not ours: root's /run/edge-app
            raise ControlError(f"hub.socket: cannot use {path} ({error}); {_AS_SERVICE}") from None
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Linux makes the socket file with this mode (less the umask), so it is never more
        # open than SOCKET_MODE, not even between bind() and the chmod() that sets it exactly.
        with contextlib.suppress(OSError):
            os.fchmod(listener.fileno(), SOCKET_MODE)
        try:
            listener.bind(str(path))
            os.chmod(path, SOCKET_MODE)
            listener.listen(MAX_CLIENTS)
        except OSError as error:
            listener.close()
            raise ControlError(f"hub.socket: cannot listen on {path} ({error})") from None
        listener.setblocking(False)
        info = os.stat(path)
        self._identity = (info.st_dev, info.st_ino)
        return listener

    def _remove_stale(self) -> None:
        """A socket file left by a crash is removed; a live one or any other file is not."""
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise ControlError(
                f"hub.socket: {self.path} exists and is not a socket; remove it or choose "
                "another hub.socket"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink(missing_ok=True)  # nobody listens: left over from a crash
            return
        finally:
            probe.close()
        raise ControlError(
            f"hub.socket: another door is already listening on {self.path}; stop it or give "
            "this one another hub.socket"
        )

    def _unlink_own(self) -> None:
        """Unlink the socket file only if it is still ours (not a newer door's)."""
        with contextlib.suppress(OSError):
            info = os.lstat(self.path)
            if (info.st_dev, info.st_ino) == self._identity:
                self.path.unlink()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # --- server thread ----------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                ready = self._selector.select(timeout=self._select_timeout())
            except OSError:
                if self._stop.is_set():
                    return
                raise
            for key, mask in ready:
                if key.fileobj is self._listener:
                    try:
                        self._accept()
                    except Exception:  # a failed accept never ends the server either
                        log.exception("control socket accept failed")
                elif key.fileobj is self._wake_r:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                else:
                    client = key.data
                    try:
                        if mask & selectors.EVENT_READ:
                            self._read(client)
                        if mask & selectors.EVENT_WRITE and client.sock.fileno() != -1:
                            self._flush(client)
                    except Exception as error:  # one client's trouble never ends the server
                        log.exception("control client failed %s", client.peer)
                        self._drop(client, f"internal error ({type(error).__name__})")
            self._finish_unlock()
            self._fan_out()
            self._housekeeping()

    def _select_timeout(self) -> float:
        """Wake up by the earliest client deadline or held reload, and at least once a second."""
        deadlines = [c.deadline for c in self._clients.values() if c.deadline is not None]
        if self._reload_due is not None:
            deadlines.append(self._reload_due)
        if not deadlines:
            return 1.0
        return min(1.0, max(0.0, min(deadlines) - time.monotonic()))

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:  # out of descriptors (EMFILE), or the client gave up
            held_back = self._not_accepted.due()
            if held_back is not None:
                log.warning("control client not accepted (%s) held_back=%d", error, held_back)
            time.sleep(0.1)  # the listener stays readable: do not spin on it
            return
        try:
            sock.setblocking(False)
            peer = peer_credentials(sock)
        except OSError as error:
            log.warning("control client not accepted (%s)", error)
            sock.close()
            return
        # The first request must arrive, complete, within the deadline too: a client that
        # connects and says nothing is closed after REQUEST_SECONDS, not IDLE_SECONDS.
        client = _Client(sock, peer, deadline=time.monotonic() + REQUEST_SECONDS)
        if self._full_for(peer):
            # A client that has closed still holds its slot until the selector reports the
            # close, after this accept: the hub, which lets a connection go and opens the
            # next at once, would be refused for its own last one.
            self._drop_hung_up()
        if self._full_for(peer):
            held_back = self._too_many.due()
            if held_back is not None:
                others = sum(c.peer.uid != self._own_uid for c in self._clients.values())
                log.warning(
                    "control client refused: too many clients (%d, %d of other users) %s "
                    "held_back=%d",
                    len(self._clients),
                    others,
                    peer,
                    held_back,
                )
            with contextlib.suppress(OSError):
                sock.send(self._line({"v": VERSION, "ok": False, "error": TOO_MANY_CLIENTS}))
            sock.close()
            return
        self._clients[sock.fileno()] = client
        self._selector.register(sock, selectors.EVENT_READ, client)
        # A hub polls the status every few seconds and fetches a frame a second for the live
        # view, each on a connection of its own: at info level that was two journal lines
        # every poll, all day. Subscriptions and every request that acts are logged below.
        log.debug("control client connected %s", peer)

    def _full_for(self, peer: Peer) -> bool:
        """Whether every slot `peer` may take is taken (OWN_USER_SLOTS kept for the door's
        own user)."""
        others = sum(c.peer.uid != self._own_uid for c in self._clients.values())
        return len(self._clients) >= MAX_CLIENTS or (
            peer.uid != self._own_uid and others >= MAX_CLIENTS - OWN_USER_SLOTS
        )

    def _drop_hung_up(self) -> None:
        """Drop the clients whose peer has closed, which the selector has not reported yet."""
        for client in list(self._clients.values()):
            try:
                data = client.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                continue  # open, with nothing to read yet
            except OSError:
                data = b""
            if not data:
                self._drop(client, None)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            if client.unlocking and not client.closing:
                # It may still read: its unlock's reply, and the requests it sent behind it,
                # are answered before it is closed (or dropped if it is gone).
                client.hung_up = True
                self._selector.unregister(client.sock)
                return
            self._drop(client, None)
            return
        client.last_active = time.monotonic()
        if client.closing:
            return
        client.inbox += data
        if client.unlocking:
            # Sent without waiting for its unlock's reply: part of the read under way,
            # answered after that reply under the same per-read rules.
            if len(client.inbox) > 2 * MAX_LINE:
                self._drop(client, f"sent over {2 * MAX_LINE} bytes while its unlock was under way")
            return
        client.unlocked_in_read = False
        client.refused = client.handled = 0
        self._answer(client)

    def _answer(self, client: _Client) -> None:
        """Answer the complete request lines in the inbox, up to the per-read limits; stop at
        an unlock being carried out (_finish_unlock goes on once it has been answered)."""
        # Not past a drop either: a client dropped for its output (_send) asks nothing more.
        while not client.closing and not client.subscribed and client.fileno_alive:
            if client.refused >= REFUSED_PER_READ:
                self._refuse(client, f"{client.refused} requests refused at once", close=True)
                return
            if client.unlocking:
                break
            end = client.inbox.find(b"\n")
            if end < 0:
                break
            if client.handled >= REQUESTS_PER_READ:
                self._refuse(
                    client,
                    f"more than {REQUESTS_PER_READ} requests at once: wait for each reply",
                    close=True,
                )
                return
            client.handled += 1
            line = bytes(client.inbox[:end])
            del client.inbox[: end + 1]
            if len(line) > MAX_LINE:
                self._refuse(client, f"request line longer than {MAX_LINE} bytes", close=True)
                return
            client.deadline = None  # this request is in; what follows has a deadline of its own
            client.refused += not self._handle(client, line)
        if not client.fileno_alive or client.closing:
            return
        if client.unlocking:
            self._arm(client)
            return
        if client.subscribed:
            client.inbox.clear()  # a stream only listens; whatever else comes is ignored
        elif len(client.inbox) > MAX_LINE:
            self._refuse(client, f"request line longer than {MAX_LINE} bytes", close=True)
            return
        self._arm(client)

    def _arm(self, client: _Client) -> None:
        """Start the deadline when an exchange begins (part of a request in, or a reply not
        yet sent); clear it once the connection is idle or a subscription."""
        if client.subscribed or (client.unlocking and not client.outbox):
            client.deadline = None  # (waiting on the door, not on the client)
        elif client.inbox or client.outbox or client.closing:
            if client.deadline is None:
                client.deadline = time.monotonic() + REQUEST_SECONDS
        else:
            client.deadline = None

    def _expire(self, client: _Client) -> None:
        """The exchange under way took longer than REQUEST_SECONDS: refuse it and close."""
        if client.outbox or client.closing:
            self._drop(client, f"reply not read within {REQUEST_SECONDS:g} s")
            return
        self._refuse(client, f"no complete request within {REQUEST_SECONDS:g} s", close=True)
        self._drop(client, None)  # the refusal went out whole, or it never will

    def _handle(self, client: _Client, line: bytes) -> bool:
        """Answer one request line; False when it was refused."""
        try:
            request = untrusted_json.loads(line)
        except untrusted_json.BadJSON as error:
            self._refuse(client, str(error))
            return False
        if not isinstance(request, dict):
            self._refuse(client, "a request is a JSON object")
            return False
        version = request.get("v")
        if type(version) is not int or version != VERSION:  # not true, nor 1.0
            shown = _echo(version)
            self._refuse(client, f"unsupported protocol version {shown}; use 1")
            return False
        op = request.get("op")
        if op not in OPS:
            self._refuse(client, f"unknown op {_echo(op)}; ops: {', '.join(OPS)}")
            return False
        try:
            reply = getattr(self, f"_op_{op}")(client, request)
        except Refused as error:
            self._refuse(client, str(error))
            return False
        except Exception as error:  # a bug here must never take the door down
            log.exception("control request failed op=%s %s", op, client.peer)
            self._refuse(client, f"internal error ({type(error).__name__})")
            return False
        if reply is None:  # an unlock being carried out: answered when done (_finish_unlock)
            return True
        self._send(client, {"v": VERSION, "ok": True, **reply})
        if op == "subscribe":
            self._send_held(client)
        return True

    def _send_held(self, client: _Client) -> None:
        """The events no subscriber was there for, to the one that just subscribed."""
        now = time.monotonic()
        held, self._held = self._held, deque(maxlen=HELD_EVENTS)
        for at, event in held:
            if now - at <= HELD_SECONDS and client.fileno_alive:
                self._send(client, event)

    def _op_status(self, client: _Client, request: dict[str, Any]) -> dict[str, Any]:
        status = dict(self.port.status())
        latest = self._frame
        now = time.monotonic()
        status.update(
            running=True,
            uptime=round(now - self.started, 1),
            last_frame_time=None if latest is None else round(latest.wall, 3),
            last_frame_age=None if latest is None else round(now - latest.monotonic, 3),
            stale_seconds=self.stale_seconds,
            events=dict(self.counters),
            clients=len(self._clients),
            version=__version__,
        )
        return {"status": _public(status)}

    def _op_subscribe(self, client: _Client, request: dict[str, Any]) -> dict[str, Any]:
        client.subscribed = True
        log.info("control client subscribed %s", client.peer)
        return {"subscribed": True}

    def _op_frame(self, client: _Client, request: dict[str, Any]) -> dict[str, Any]:
        latest = self._frame
        if latest is None or time.monotonic() - latest.monotonic > self.stale_seconds:
            return {"frame": None, "time": None}
        cached = self._jpeg
        if cached is None or cached[0] != latest.index:
            cached = self._jpeg = (latest.index, encode_jpeg(latest.image))
        if len(cached[1]) > FRAME_MAX_BYTES:
            raise Refused(f"frame is {len(cached[1])} bytes, over the {FRAME_MAX_BYTES} limit")
        return {
            "frame": base64.b64encode(cached[1]).decode("ascii"),
            "time": round(latest.wall, 3),
            "index": latest.index,
        }

    def _op_reload(self, client: _Client, request: dict[str, Any]) -> dict[str, Any]:
        if not self.port.reloads():
            raise Refused(
                "this door runs inside another command (edge-app demo or eval), whose own "
                "settings it keeps: there is no config file to reload"
            )
        now = time.monotonic()
        self._reload_asked += 1
        if self._reload_due is None and now - self._reloaded >= RELOAD_SECONDS:
            self._start_reload(now, client.peer)
            return {"reload": "requested"}
        if self._reload_due is None:
            self._reload_due = self._reloaded + RELOAD_SECONDS
        return {"reload": "requested", "starts_in": round(max(0.0, self._reload_due - now), 3)}

    def _start_reload(self, now: float, peer: Peer | None = None) -> None:
        """One line per reload started, not per request: a client asking 20 times a second
        writes one a second."""
        log.info(
            "reload requested over the control socket %s",
            peer if peer is not None else f"(requests held together={self._reload_asked})",
        )
        self._reloaded = now
        self._reload_due = None
        self._reload_asked = 0
        self.port.reload()

    def _op_unlock(self, client: _Client, request: dict[str, Any]) -> None:
        reason = clean_text(request.get("reason"), "reason")
        origin = clean_text(request.get("origin"), "origin")
        stamped = f"{origin} {client.peer}"
        if not self.port.unlock_allowed():
            held_back = self._unlock_refused.due()
            if held_back is not None:
                log.warning(
                    "remote unlock refused (disabled) origin=%r %s held_back=%d",
                    origin,
                    client.peer,
                    held_back,
                )
            raise Refused(
                "remote unlock is disabled on this door: set hub.allow_unlock = true in the "
                "door's config and reload it"
            )
        if client.unlocked_in_read:
            raise Refused(
                "one unlock at a time: this read already carried one out; wait for its reply "
                "before asking again"
            )
        if self._unlock is not None:  # (never this client's: its requests wait for it)
            raise Refused(
                "one unlock at a time: another connection's remote unlock is still being "
                "carried out; ask again in a few seconds"
            )
        self._space_unlocks(time.monotonic())
        client.unlocked_in_read = True  # also when it fails: the relay is not asked twice
        unlock = _Unlock(client, reason, stamped)
        worker = threading.Thread(
            target=self._carry_out, args=(unlock,), name="control-unlock", daemon=True
        )
        try:
            worker.start()
        except RuntimeError as error:  # no thread to be had: nothing was pulsed
            raise Refused(f"the door cannot carry out an unlock now ({error})") from None
        self._unlock = unlock
        client.unlocking = True

    def _carry_out(self, unlock: _Unlock) -> None:
        """The `control-unlock` thread: one remote unlock through the door's open_door, whose
        relay may take seconds to answer (REPLY_SECONDS, and more to end a hung relay
        process): not on the server thread, where every other client's reply would wait for
        it. Its outcome goes back to the server thread (_finish_unlock), which answers the
        client."""
        try:
            seconds = self.port.unlock(unlock.reason, unlock.stamped)
            done = time.monotonic()  # the pulse started before this: it ends by done + seconds
            unlock.pulse = (done, done + seconds)
            unlock.reply = {"unlocked": True, "reason": unlock.reason, "origin": unlock.stamped}
        except Refused as error:
            unlock.refusal = str(error)
        except Exception as error:  # a bug here must never take the door down
            log.exception("control request failed op=unlock %s", unlock.client.peer)
            unlock.refusal = f"internal error ({type(error).__name__})"
        finally:
            unlock.done.set()
            self._wake()

    def _finish_unlock(self, *, answer_rest: bool = True) -> None:
        """On the server thread (or close(), once it has ended): the unlock carried out
        counts for the spacing once it pulsed, its client gets its reply (unless it was
        dropped meanwhile) and, unless the socket is closing, the rest of the read it came in
        is answered."""
        unlock = self._unlock
        if unlock is None or not unlock.done.is_set():
            return
        self._unlock = None
        if unlock.pulse is not None:
            self._unlocked = unlock.pulse
        client = unlock.client
        client.unlocking = False
        if not client.fileno_alive:
            return
        try:
            if client.hung_up:  # back in the selector: its end of file closes it once answered
                client.hung_up = False
                self._selector.register(client.sock, selectors.EVENT_READ, client)
            if unlock.reply is not None:
                self._send(client, {"v": VERSION, "ok": True, **unlock.reply})
            else:
                self._refuse(client, unlock.refusal)
                client.refused += 1
            if answer_rest:
                self._answer(client)
        except Exception as error:  # one client's trouble never ends the server
            log.exception("control client failed %s", client.peer)
            self._drop(client, f"internal error ({type(error).__name__})")

    def _space_unlocks(self, now: float) -> None:
        """Refused (UNLOCK_SPACING_SECONDS) while the last remote unlock's pulse is under way,
        or was carried out less than that long ago: nothing is pulsed or recorded."""
        if self._unlocked is None:
            return
        done, ends = self._unlocked
        free = max(ends, done + UNLOCK_SPACING_SECONDS)
        if now >= free:
            return
        ago = now - done
        if now < ends:
            raise Refused(
                f"already unlocked: a remote unlock opened the door {ago:.1f} s ago and its "
                f"pulse ends in {ends - now:.1f} s; ask again once the door has locked"
            )
        raise Refused(
            f"a remote unlock was carried out {ago:.1f} s ago: at most one every "
            f"{UNLOCK_SPACING_SECONDS:g} s; ask again in {free - now:.1f} s"
        )

    def _refuse(self, client: _Client, message: str, *, close: bool = False) -> None:
        held_back = self._refused.due()
        if held_back is not None:
            log.warning(
                "control request refused %s error=%r held_back=%d", client.peer, message, held_back
            )
        self._send(client, {"v": VERSION, "ok": False, "error": message})
        if close:
            client.closing = True
            client.inbox.clear()
            if not client.outbox:
                self._drop(client, None)

    @staticmethod
    def _line(data: dict[str, Any]) -> bytes:
        return (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    def _send(self, client: _Client, data: dict[str, Any]) -> None:
        line = self._line(data)
        if client.queued + len(line) > MAX_OUTPUT or (
            client.subscribed and len(client.outbox) >= QUEUE_EVENTS
        ):
            self._drop(client, "too slow: its output queue is full")
            return
        client.outbox.append(line)
        client.queued += len(line)
        client.last_sent = time.monotonic()
        self._flush(client)

    def _flush(self, client: _Client) -> None:
        sock = client.sock
        while client.outbox:
            chunk = client.outbox[0]
            try:
                sent = sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._drop(client, None)
                return
            client.queued -= sent
            if sent < len(chunk):
                client.outbox[0] = chunk[sent:]
                break
            client.outbox.popleft()
        if client.fileno_alive and not client.outbox and client.closing:
            self._drop(client, None)
            return
        if client.fileno_alive:
            self._arm(client)
            if client.hung_up:  # out of the selector until its unlock is answered
                return
            mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.outbox else 0)
            self._selector.modify(sock, mask, client)

    def _drop(self, client: _Client, why: str | None) -> None:
        if not client.fileno_alive:
            return
        if why is not None:
            held_back = self._dropped.due()
            if held_back is not None:
                log.warning(
                    "control client dropped %s reason=%r held_back=%d", client.peer, why, held_back
                )
        else:
            log.log(
                logging.INFO if client.subscribed else logging.DEBUG,
                "control client disconnected %s",
                client.peer,
            )
        self._clients.pop(client.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(client.sock)
        client.sock.close()

    def _fan_out(self) -> None:
        while self._pending:
            event = self._pending.popleft()
            heard = False
            for client in list(self._clients.values()):
                if client.subscribed and client.fileno_alive:
                    self._send(client, event)
                    heard = True
            if not heard:
                self._held.append((time.monotonic(), event))

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self._reload_due is not None and now >= self._reload_due:
            self._start_reload(now)
        for client in list(self._clients.values()):
            if not client.fileno_alive:
                continue
            if client.deadline is not None and now >= client.deadline:
                self._expire(client)
            elif client.subscribed:
                if now - client.last_sent >= KEEPALIVE_SECONDS and not client.outbox:
                    self._send(client, {"v": VERSION, "keepalive": round(time.time(), 3)})
            elif now - client.last_active > IDLE_SECONDS:
                self._drop(client, f"idle for {IDLE_SECONDS:.0f} s")


def encode_jpeg(image: np.ndarray) -> bytes:
    """RGB frame -> JPEG, scaled down to FRAME_MAX_WIDTH."""
    height, width = image.shape[:2]
    if width > FRAME_MAX_WIDTH:
        scale = FRAME_MAX_WIDTH / width
        size = (FRAME_MAX_WIDTH, round(height * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    data = images.encode_jpeg(image, FRAME_QUALITY)
    if data is None:
        raise Refused("the frame could not be encoded as JPEG")
    return data


# --- the door's side: the daemon behind the socket ------------------------------------------


class DaemonPort:
    """The running Daemon as the server sees it; reads its state, never changes it except
    through `Daemon.open_door` (the relay path recognitions use) and `request_reload`."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def status(self) -> dict[str, Any]:
        daemon = self.daemon
        relay = daemon.relay
        reader = daemon.reader
        engine = daemon.engine
        matcher = getattr(daemon.recognizer, "matcher", None)
        backend = getattr(engine, "backend", None)
        return {
            "pid": os.getpid(),
            # Redacted again here (idempotent): the reply reaches the hub, MQTT's retained
            # state and the web page, none of which may see a stream's password.
            "source": None if reader is None else describe_source(reader.source.name),
            "backend": getattr(backend, "kind", None),
            "relay_active": bool(relay is not None and relay.is_active),
            "pulse_seconds": daemon.pulse_seconds,
            "gallery_people": None if matcher is None else len(matcher.matrix.names),
            "frames": daemon.metrics.frames,
            "unlocks": daemon.metrics.unlocks,
            "allow_unlock": self.unlock_allowed(),
            # The rule the door applies ("auto" resolved against its models), not the config's.
            "liveness": daemon.live_rule.mode,
            # "dark" or "featureless" once the camera has shown nothing usable for a while.
            "picture": daemon.picture.reported,
        }

    def reload(self) -> None:
        self.daemon.request_reload()

    def reloads(self) -> bool:
        return self.daemon.reloads

    def unlock_allowed(self) -> bool:
        return bool(self.daemon.config.hub.allow_unlock)

    def unlock(self, reason: str, origin: str) -> float:
        from edge_app.policy import UNLOCK
        from edge_app.relay import RelayError  # here: the hub imports this module, not gpiozero

        daemon = self.daemon
        if daemon.relay is None or daemon.events is None:
            raise Refused("the door is not running yet")
        events = daemon.events
        seconds = daemon.pulse_seconds  # what open_door asks the relay for
        try:
            opened = daemon.open_door(
                None, lambda: events.record(UNLOCK, reason=f"{reason}; origin={origin}")
            )
        except RelayError as error:  # the relay failed: locked, and the door process exits
            log.error("%s", error)
            raise Refused(f"the relay failed; the door is locked and restarts ({error})") from None
        if not opened:
            raise Refused("the door is stopping")
        return max(seconds, daemon.pulse_seconds)  # a reload meanwhile may have changed it


def attach(daemon: Daemon) -> ControlServer | None:
    """Start the control socket for a daemon (after its relay and events exist) and copy
    each recorded event to it. None when `[hub] socket = ""`, or when the socket cannot be
    made: the door itself keeps working without it, and the log says why."""
    settings = daemon.config.hub
    if settings.socket is None:
        log.info('control socket off (hub.socket = "")')
        return None
    server = ControlServer(settings.socket, DaemonPort(daemon), settings.stale_seconds)
    try:
        server.start()
    except ControlError as error:
        log.warning("control socket off, the door runs without it: %s", error)
        server.close()
        return None
    if daemon.events is not None:
        daemon.events.add_listener(lambda event: server.publish(event_payload(event)))
    return server


# --- the client -----------------------------------------------------------------------------


class StatusReply(Protocol):
    """A door's status as a client holds it: the reply's dict, or a wrapper with `get`."""

    def get(self, key: str, default: Any = None) -> Any: ...


def frame_age(status: StatusReply) -> float | None:
    """Seconds since the door's last camera frame, when its status says (a JSON number)."""
    age = status.get("last_frame_age")
    if not isinstance(age, (int, float)) or isinstance(age, bool):
        return None
    return float(age)


def frame_limit(status: StatusReply) -> float:
    """The door's own limit for a fresh frame (`[hub] stale_seconds`) as its status says;
    the default when it does not say it as a number (an older door)."""
    from edge_app.config import HubConfig

    limit = status.get("stale_seconds")
    if not isinstance(limit, (int, float)) or isinstance(limit, bool):
        return HubConfig().stale_seconds
    return float(limit)


def frame_is_fresh(status: StatusReply, limit: float | None = None) -> bool:
    """Whether the door's last camera frame is younger than `limit`, by default the door's
    own (frame_limit): what the hub, the web page and doctor call a door that sees."""
    age = frame_age(status)
    return age is not None and age <= (frame_limit(status) if limit is None else limit)


def reported_picture(status: StatusReply) -> str | None:
    """What the door says is wrong with its camera's picture ("dark", "featureless"), or None,
    also for a value it never sends (edge_app/picture.py)."""
    from edge_app.picture import EXPLAIN

    value = status.get("picture")
    return value if isinstance(value, str) and value in EXPLAIN else None


# Process-wide: every ControlClient of a process shares SHORT_REQUEST_SLOTS connections.
_SHORT_REQUESTS = threading.BoundedSemaphore(SHORT_REQUEST_SLOTS)


class ControlClient:
    """A client of the door's socket, for `edge-app hub` and tools.

    Each request uses its own short connection, and `timeout` bounds it as a whole (waiting
    for one of the process's SHORT_REQUEST_SLOTS, connect, send and the complete reply),
    however the other end trickles its bytes. `events()` keeps one open until the door goes
    away (ControlError) or `close()` is called from another thread.
    """

    def __init__(self, path: Path | str, timeout: float = REQUEST_SECONDS) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._stream: socket.socket | None = None
        self._closed = False

    def status(self) -> dict[str, Any]:
        return self.request("status")["status"]

    def frame(self) -> bytes | None:
        encoded = self.request("frame")["frame"]
        if encoded is None:
            return None
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ControlError(f"{self.path}: the door sent a bad frame ({error})") from None

    def reload(self) -> dict[str, Any]:
        return self.request("reload")

    def unlock(self, reason: str, origin: str) -> dict[str, Any]:
        return self.request("unlock", reason=reason, origin=origin)

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        if not _SHORT_REQUESTS.acquire(timeout=self.timeout):
            raise ControlError(
                f"{self.path}: {SHORT_REQUEST_SLOTS} requests to the door already under way "
                f"in this process for {self.timeout:.0f} s"
            )
        try:
            return self._request(op, deadline, fields)
        finally:
            _SHORT_REQUESTS.release()

    def _request(self, op: str, deadline: float, fields: dict[str, Any]) -> dict[str, Any]:
        with self._connect() as sock:
            reader = _LineReader(sock, self.path, self.timeout)
            try:
                self._write(sock, {"v": VERSION, "op": op, **fields}, deadline)
            except ControlError as error:
                # The door may have answered and closed before reading the request (a
                # connection it refuses: "too many clients"); its reason beats a broken pipe.
                try:
                    said = reader.read(deadline)
                except ControlError:
                    raise error from None
                return self._check(said, op)
            try:
                said = reader.read(deadline)
            except _Unread:
                raise  # never read, so never carried out: a refusal, not unanswered
            except ControlError as error:
                raise Unanswered(str(error)) from None
            return self._check(said, op)

    def events(self, opened: Callable[[], object] | None = None) -> Iterator[dict[str, Any]]:
        """Events as the door records them; keepalives are consumed here. Raises
        ControlError when the door goes away or falls silent for 3 keepalive periods.
        opened: called once the door has accepted the subscription (before any event)."""
        sock = self._connect()
        self._stream = sock
        try:
            # Each line, the subscription's reply and then every event or keepalive, must be
            # complete within this: a door that trickles bytes counts as silent.
            silence = max(self.timeout, 3 * KEEPALIVE_SECONDS)
            self._write(sock, {"v": VERSION, "op": "subscribe"}, time.monotonic() + self.timeout)
            reader = _LineReader(sock, self.path, silence)
            self._check(reader.read(time.monotonic() + silence), "subscribe")
            if opened is not None:
                opened()
            while True:
                message = reader.read(time.monotonic() + silence)
                if "keepalive" in message and "type" not in message:
                    continue
                yield message
        except ControlError:
            if self._closed:
                return
            raise
        finally:
            self._stream = None
            sock.close()

    def close(self) -> None:
        """End a running `events()` from another thread."""
        self._closed = True
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.shutdown(socket.SHUT_RDWR)

    def _connect(self) -> socket.socket:
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as error:
            # Out of file descriptors (EMFILE/ENFILE: a connection flood on the hub's web page)
            # or of memory: a door this process cannot reach now, not a bug to die of.
            raise ControlError(
                f"{self.path}: cannot open a socket to reach the door ({error})"
            ) from None
        try:
            sock.settimeout(self.timeout)
            sock.connect(str(self.path))
        except FileNotFoundError:
            sock.close()
            raise ControlError(
                f"{self.path}: no door socket (is `edge-app run` running, with hub.socket "
                "set to this path?)"
            ) from None
        except PermissionError:
            sock.close()
            raise ControlError(
                f"{self.path}: permission denied; run as the service user or a member of its "
                "group (edge-app)"
            ) from None
        except OSError as error:
            sock.close()
            raise ControlError(f"{self.path}: cannot connect to the door ({error})") from None
        return sock

    def _write(self, sock: socket.socket, data: dict[str, Any], deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ControlError(
                f"{self.path}: the door did not answer in time (connecting took {self.timeout:g} s)"
            )
        sock.settimeout(remaining)  # bounds the whole sendall, not each send
        try:
            sock.sendall((json.dumps(data) + "\n").encode())
        except TimeoutError:
            raise ControlError(
                f"{self.path}: the door did not answer in time (it took no request within "
                f"{self.timeout:g} s)"
            ) from None
        except OSError as error:
            raise ControlError(f"{self.path}: cannot send to the door ({error})") from None

    def _check(self, reply: dict[str, Any], op: str) -> dict[str, Any]:
        if reply.get("v") != VERSION:
            raise ControlError(f"{self.path}: unsupported reply version {reply.get('v')!r}")
        if not reply.get("ok"):
            raise DoorRefused(op, str(reply.get("error", "no reason given")))
        return reply


class _LineReader:
    """Reads reply lines; `seconds` is the deadline's length, for the message only."""

    def __init__(self, sock: socket.socket, path: Path, seconds: float) -> None:
        self.sock = sock
        self.path = path
        self.seconds = seconds
        self.buffer = bytearray()

    def read(self, deadline: float) -> dict[str, Any]:
        """The next line as a JSON object, complete by `deadline` (time.monotonic()) however
        the bytes arrive; ControlError otherwise."""
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                try:
                    data = untrusted_json.loads(line)
                except untrusted_json.BadJSON as error:
                    raise ControlError(f"{self.path}: the door sent bad JSON ({error})") from None
                if not isinstance(data, dict):
                    raise ControlError(f"{self.path}: the door sent a non-object reply")
                return data
            if len(self.buffer) > MAX_RESPONSE:
                raise ControlError(f"{self.path}: reply longer than {MAX_RESPONSE} bytes")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ControlError(self._late())
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(262144)
            except TimeoutError:
                raise ControlError(self._late()) from None
            except ConnectionResetError as error:
                raise _Unread(
                    f"{self.path}: the door closed the connection without reading the request "
                    f"({error})"
                ) from None
            except OSError as error:
                raise ControlError(f"{self.path}: connection to the door lost ({error})") from None
            if not chunk:
                raise ControlError(f"{self.path}: the door closed the connection")
            self.buffer += chunk

    def _late(self) -> str:
        return (
            f"{self.path}: the door did not answer in time (no complete reply within "
            f"{self.seconds:g} s)"
        )


__all__ = [
    "OPS",
    "VERSION",
    "ControlClient",
    "ControlError",
    "ControlServer",
    "DaemonPort",
    "DoorRefused",
    "Unanswered",
    "Peer",
    "attach",
    "event_payload",
]
