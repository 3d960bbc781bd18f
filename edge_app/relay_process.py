"""The relay in a process of its own, so that nothing the door process does can hold it open.

The relay's timer ends every pulse (edge_app/relay.py). In the door process it is a Python
thread, and a native call that hangs while holding the interpreter lock stops every Python
thread, that one too: a pulse under way would stay open until the call returned, or until the
systemd watchdog killed the process. Here the relay runs in a small child process with its own
interpreter: the door process asks it for pulses over a pipe, and the child's own timer ends
them, whatever the door process is doing.

The child also locks the door when the door process dies: SIGKILL, the OOM killer (which
picks the largest process: the one holding the models) or a crash close the pipe, and the
child drives the pin low at once and exits. That matters on kernels that keep a released
output at its level (docs/WIRING.md): without the child only `ExecStopPost=`'s relay_off
would end the pulse, after systemd noticed.

The door process holds the child to its word. Each pulse has a deadline the door process
knows too; once it has passed (by RELEASE_GRACE_SECONDS), check(), called every 0.2 s, asks
the child whether the pin is low. A child that says it is not, or does not answer (stopped,
hung, its timer gone), is killed, and the door process claims the pin and drives it low
itself, as relay_off does, then exits (systemd restarts it). The same happens when the child
dies, and when it leaves HEARTBEATS_MISSED questions in a row unanswered, asked after
HEARTBEAT_SECONDS without a word (a relay that hung while the door was locked is found before
the next unlock needs it; one late answer on a loaded Pi is forgiven).

The pipe protocol is one line per message; every request carries a number that its answer
repeats, so an answer that comes too late is never taken for the answer to a later request.
Door to child: `N pulse SECONDS`, `N state`, `N history`, `N close`. Child to door: `0 ready`
(or `0 error MESSAGE`) once, `N opened 1|0`, `N state 1|0`, `N history JSON` (MockFactory
only, for tests), `N closed`, `N error MESSAGE`, and, unasked, `released REASON` each time the
pin goes back low. The child ignores the signals a terminal or `systemctl kill` would send it
(SIGKILL aside): locking is the door process's to ask for, or the end of the pipe's.

The door process starts it as `python -c BOOT PACKAGE_ROOT SETTINGS_JSON`: BOOT imports this
module from the package the door process runs (never from the working directory), SETTINGS
are its `[gpio]` section, its log level and, for tests, a file for the pin history. It is not
a command for people.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import IO

from edge_app.config import GpioConfig
from edge_app.relay import (
    ClosedOnExit,
    PulseUnanswered,
    Relay,
    RelayError,
    ReleaseEvents,
    check_pulse_seconds,
)

# Imported here, not when the child fails: an upgrade switches the installed program under
# the running door, and locking the pin must not depend on importing the new release then.
from edge_app.relay_off import drive_locked

log = logging.getLogger(__name__)

# How long the door process waits for the child to claim the pin (a Pi imports gpiozero and
# lgpio in about a second; a loaded Pi 3 takes longer).
START_SECONDS = 20.0
# How long it waits for any other answer: the child answers within a millisecond, so one that
# takes a second is taken for a hung one.
REPLY_SECONDS = 1.0
# How late past a pulse's deadline check() asks the child whether the pin is low.
RELEASE_GRACE_SECONDS = 0.5
# How long check() lets the child go without a word before it asks: a child that hangs while
# the door is locked is found within this, not only at the next unlock.
HEARTBEAT_SECONDS = 5.0
# How long it waits for the child to exit once it has locked the door.
EXIT_SECONDS = 2.0
# Past an answer's deadline, one short wait more: a reader thread kept from running by a
# native call in the door process that held the interpreter lock hands over an answer that
# was already in the pipe, instead of a healthy child being taken for a hung one.
ANSWER_GRACE_SECONDS = 0.05
# Heartbeats in a row a child may leave unanswered while no pulse is under way before it is
# taken for hung: one late answer on a loaded Pi must not restart the door (a pulse past its
# deadline gets no second chance).
HEARTBEATS_MISSED = 2
# The environment variables the child must not inherit: systemd's notification socket and
# watchdog belong to the door process alone.
_NOT_INHERITED = ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_PID")
# Every signal a terminal (hangup, Ctrl-C, Ctrl-\, Ctrl-Z) or `systemctl kill` may send the
# child; SIGHUP is the door's reload and must not end its relay.
_IGNORED_SIGNALS = (
    *("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGTSTP", "SIGTTIN", "SIGTTOU"),
    *("SIGUSR1", "SIGUSR2", "SIGPIPE"),
)
_BOOT = (
    "import sys; sys.path[0] = sys.argv.pop(1); "
    "from edge_app.relay_process import main; sys.exit(main())"
)
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


class RelayProcess(ClosedOnExit):
    """The door's relay, driven through a child process (the module docstring says why).

    The same interface as edge_app.relay.Relay: pulse(), check(), close(), is_active, and
    on_release(reason) called on a thread of its own each time the pin goes back low.
    """

    def __init__(
        self,
        gpio: GpioConfig,
        *,
        on_release: Callable[[str], None] | None = None,
        history: Path | None = None,
        start_seconds: float = START_SECONDS,
        cancel: threading.Event | None = None,
    ) -> None:
        self.pin = gpio.pin
        self._gpio = gpio
        self._lock = threading.Lock()  # one request at a time; guards the fields below
        self._ids = itertools.count(1)
        self._replies: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._due: float | None = None  # by when the child must have locked the pin again
        self._heard = time.monotonic()  # when the child last answered
        self._silent = False  # the child did not answer: asking it to close is pointless
        # Why the door process had to lock the pin itself (the child failed), the first
        # time: the door then exits non-zero, even when that was found only as it stopped.
        self.locked_from_here: str | None = None
        self._pin_locked_here = False  # ... and whether that lock was done (else: again)
        self._missed = 0  # heartbeats in a row the child left unanswered
        self._opened = 0  # pulses the child said it opened
        self._relocked = 0  # relocks it reported (the reader thread counts them)
        self._closing = False
        self._closed = False
        self._events = ReleaseEvents(on_release, self.pin)
        settings = {
            "gpio": asdict(gpio),
            "log_level": logging.getLogger().getEffectiveLevel(),  # -q and -v apply here too
            "history": None if history is None else str(history),
        }
        command = [sys.executable, "-c", _BOOT, _PACKAGE_ROOT, json.dumps(settings)]
        env = {key: value for key, value in os.environ.items() if key not in _NOT_INHERITED}
        try:
            self._child = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                bufsize=1,
                env=env,
                close_fds=True,
                start_new_session=True,  # out of the terminal's process group and its signals
            )
        except OSError as error:
            raise RelayError(f"relay: cannot start the relay process ({error})") from None
        self._pipe_closed = threading.Event()  # the child's end of the pipe closed
        self._reader = threading.Thread(target=self._read, name="relay-process", daemon=True)
        self._reader.start()
        first = self._answer(0, start_seconds, cancel)
        if first != "ready":
            if self._pipe_closed.is_set():  # it is exiting: its status comes moments after
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._child.wait(timeout=EXIT_SECONDS)
            exited = self._child.poll()  # before the kill below, which would set it
            self._end_child()
            self._events.close()
            if first is not None and first.startswith("error "):
                raise RelayError(first[len("error ") :])
            if cancel is not None and cancel.is_set():
                why = "a stop was asked for first"
            elif exited is not None:
                why = f"it exited with status {exited} before it was ready"
            else:
                why = f"no answer in {start_seconds:.0f} s" if first is None else repr(first)
            raise RelayError(f"relay: the relay process for GPIO{self.pin} did not start ({why})")
        atexit.register(self.close)

    @classmethod
    def from_config(
        cls,
        gpio: GpioConfig,
        *,
        on_release: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> RelayProcess:
        """cancel: set it (the door's stop) to give up waiting for the child to start."""
        return cls(gpio, on_release=on_release, cancel=cancel)

    @property
    def is_active(self) -> bool:
        """Whether a pulse is under way, by the deadline this process knows (the child
        relocks no later). Not asked of the child: a status poll or an unlock must neither
        wait on a child that is slow or hung nor take one late answer for a failure (check()
        asks, and forgives one). Nor does it wait for the lock: close(), check() and pulse()
        hold it while they wait on the child (REPLY_SECONDS, and seconds more to end a hung
        one), and a status asked meanwhile held up the control socket's thread, every
        client's reply with it. Each field is read once, whole."""
        if self._closed or self._silent:
            return False
        due = self._due
        return due is not None and time.monotonic() < due

    def pulse(self, seconds: float) -> bool:
        """Open for `seconds` from now (Relay.pulse's rule); True if this opened it.

        RelayError when the child does not answer in REPLY_SECONDS or cannot pulse: it might
        still open the pin later (a slow child carries out the request it answers too late),
        so it is killed and this process locks the pin at once; check() then ends the run.
        """
        seconds = check_pulse_seconds(seconds)
        with self._lock:
            if self._closing:
                raise RuntimeError("relay is closed")
            if self._silent:  # failed, and locked from here: not asked again
                raise self._known_failure()
            locked = self._opened <= self._relocked  # no opening whose relock is still due
            answer = self._ask(f"pulse {seconds!r}")
            # The child's deadline is its clock when it read the request plus `seconds`:
            # no later than now plus `seconds`.
            due = time.monotonic() + seconds
            self._due = due if self._due is None else max(self._due, due)
            if answer in ("opened 1", "opened 0"):
                self._opened += answer == "opened 1"
                return answer == "opened 1"
            if answer == "error relay is closed":
                raise RuntimeError("relay is closed")
            if answer is not None and answer.startswith("error "):  # refused: nothing opened
                self._lock_from_here(self._failed("pulse", answer))
                raise self._known_failure()
            # No answer (or a garbled one): the child may have opened the pin before it
            # failed, so this counts as an opening, whose relock _lock_from_here reports.
            self._opened += locked
            self._lock_from_here(self._failed("pulse", answer))
            raise PulseUnanswered(str(self._known_failure()), opened=locked)

    def check(self) -> None:
        """RelayError when nothing would end a pulse: the child is gone; a pulse's deadline
        has passed and the child does not say the pin is low again; or the child, asked after
        HEARTBEAT_SECONDS without a word, leaves HEARTBEATS_MISSED questions in a row
        unanswered (or says the pin is open with no pulse under way). It kills the child and
        locks the pin from this process first. The door process's relay guard calls it every
        RELAY_CHECK_EVERY (edge_app/daemon.py), whatever its frame loop is doing; it asks the
        child only when one of those is due."""
        if self._closed or self._closing:
            return
        if self._silent:  # found failed by another call
            raise self._known_failure()
        if self._child.poll() is not None or not self._reader.is_alive():
            with self._lock:
                if self._closed or self._closing:  # a clean close ended it meanwhile
                    return
                if not self._silent:  # it may have died with the pin open: locked from here
                    self._lock_from_here(self._failed("check", None))
            raise RelayError(
                f"relay: the process that drives GPIO{self.pin} has ended; refusing to open a "
                "door nothing would close (the process locks it and exits)"
            )
        now = time.monotonic()
        due = self._due
        overdue = due is not None and now > due + RELEASE_GRACE_SECONDS
        if not overdue and now - self._heard <= HEARTBEAT_SECONDS:
            return
        with self._lock:
            if self._closing:
                return
            answer = self._ask("state")
            due = self._due
            if answer == "state 0":
                self._due = None
                return
            if answer is None and due is None and self._child.poll() is None:
                self._missed += 1  # no pulse under way: asked again on the next check
                if self._missed < HEARTBEATS_MISSED:
                    return
            running = due is not None and time.monotonic() <= due + RELEASE_GRACE_SECONDS
            if answer == "state 1" and running:
                return  # a pulse under way (asked for the heartbeat)
            # Locked now, from here, not by whoever closes the relay next: that waits for the
            # door's lock, which an unlock asking the silent child may hold for seconds.
            self._lock_from_here(self._failed("check", answer))
        if answer is None:
            why = "the relay process does not answer"
        elif answer == "state 1" and due is not None:
            late = time.monotonic() - due
            why = f"GPIO{self.pin} was due to lock {late:.1f} s ago and is still open"
        elif answer == "state 1":
            why = f"the relay process says GPIO{self.pin} is open with no pulse under way"
        else:
            why = f"the relay process answered {answer[:60]!r}"
        raise RelayError(f"relay: {why}; the process locks it itself and exits")

    def history(self) -> list[tuple[float, bool]]:
        """The child's MockFactory pin history, (seconds since the previous change, state)."""
        with self._lock:
            answer = self._ask("history")
        if answer is None or not answer.startswith("history "):
            raise RelayError(self._failed("history", answer))
        return [(float(t), bool(s)) for t, s in json.loads(answer[len("history ") :])]

    def close(self) -> None:
        """Pin low, then the child exits. Idempotent; safe from any thread or exit path.

        If the child cannot say it locked the pin (it died, hung or its pin driver failed),
        it is killed and this process claims the pin and drives it low itself, as relay_off
        does; RelayError only if that fails too (a later close() tries again).
        """
        with self._lock:
            if self._closed:
                return
            self._closing = True
            # A child that failed, or left a heartbeat unanswered just now, is not asked to
            # close (another second's wait at a stop): the pin is locked from here.
            answer = None if self._silent or self._missed else self._ask("close")
            if answer == "closed":
                self._wait_for_exit()
            elif not self._pin_locked_here:
                # RelayError if that fails too: close() may be called again.
                self._lock_from_here(self._failed("close", answer))
            self._closed = True
            self._due = None
            atexit.unregister(self.close)
        self._events.close()  # the release callbacks still due, then that thread ends

    # --- the pipe ------------------------------------------------------------------------------

    def _ask(self, request: str) -> str | None:
        """Send one request (self._lock held) and return its answer; None if the child is gone
        or does not answer in REPLY_SECONDS."""
        number = next(self._ids)
        try:
            assert self._child.stdin is not None, "Popen with stdin=PIPE"
            self._child.stdin.write(f"{number} {request}\n")
            self._child.stdin.flush()
        except (OSError, ValueError):  # a closed pipe: the child is gone
            return None
        return self._answer(number, REPLY_SECONDS)

    def _answer(
        self, number: int, timeout: float, cancel: threading.Event | None = None
    ) -> str | None:
        """The answer to request `number`; answers to earlier requests (late) are dropped.
        None when none comes within `timeout`, or once `cancel` is set."""
        deadline = time.monotonic() + timeout
        graced = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if graced:
                    return None
                graced = True  # once: a late answer of an earlier question must not use it up
                deadline = time.monotonic() + ANSWER_GRACE_SECONDS
                continue
            if cancel is not None and cancel.is_set():
                return None
            try:
                line = self._replies.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                continue
            if line is None:  # the child's end of the pipe closed
                self._replies.put(None)  # for every later request too
                return None
            tag, _, answer = line.partition(" ")
            if tag == str(number):
                self._heard = time.monotonic()
                self._missed = 0
                return answer
            log.warning("relay process: dropped a late answer %r", line[:80])

    def _read(self) -> None:
        """The child's messages: relocks go to the relay-events thread, the rest answer
        requests. Nothing here calls out, so no callback can delay an answer."""
        assert self._child.stdout is not None, "Popen with stdout=PIPE"
        try:
            for raw in self._child.stdout:
                line = raw.rstrip("\n")
                if line.startswith("released "):
                    self._relocked += 1
                    self._events.put(line[len("released ") :])
                else:
                    self._replies.put(line)
        except (OSError, ValueError):
            pass
        finally:
            self._pipe_closed.set()
            self._replies.put(None)

    def _failed(self, request: str, answer: str | None) -> str:
        if answer is None:
            why = "no answer" if self._child.poll() is None else "it has ended"
        elif answer.startswith("error "):
            why = answer[len("error ") :]
        else:
            why = f"unexpected answer {answer!r}"
        return f"relay: the relay process for GPIO{self.pin} failed a {request} ({why})"

    def _wait_for_exit(self) -> None:
        try:
            self._child.wait(timeout=EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            self._end_child()

    def _end_child(self) -> None:
        with contextlib.suppress(OSError):
            self._child.kill()  # SIGKILL ends a stopped child too
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._child.wait(timeout=EXIT_SECONDS)

    def _lock_from_here(self, failed: str) -> None:
        """The child failed (self._lock held): kill it and lock the pin from this process,
        then say so and record the relock of a pulse the child opened and never reported
        ended. Acted on first: a stalled journal must not hold the strike open. The first
        failure's reason is kept; a later call (close() after check()) drives the pin again
        only if the first could not (RelayError then: a later close() tries again)."""
        if self.locked_from_here is None:  # the first reason is the one the run ends with
            self.locked_from_here = failed
        self._silent = True
        self._due = None
        if not self._pin_locked_here:
            self._end_child()
            try:
                self._lock_here()
            except BaseException:
                log.error("%s; GPIO%d could not be locked from this process", failed, self.pin)
                raise
            self._pin_locked_here = True
            log.error("%s; GPIO%d locked from this process", failed, self.pin)
            self._reader.join(timeout=EXIT_SECONDS)  # the relocks it reported before it died
            if self._opened > self._relocked:
                self._relocked = self._opened
                self._events.put("close")

    def _known_failure(self) -> RelayError:
        """The error for the failure found first (locked_from_here), saying whether this
        process has locked the pin yet."""
        how = "locked" if self._pin_locked_here else "not yet locked"
        return RelayError(f"{self.locked_from_here}; GPIO{self.pin} {how} from the door process")

    def _lock_here(self) -> None:
        """Claim the pin in this process and drive it locked, as relay_off does (the child is
        gone)."""
        if self._gpio.factory == "mock":  # this process's MockFactory is not the child's pin
            return
        drive_locked(self._gpio)


# --- the child --------------------------------------------------------------------------------


def _serve(relay: Relay, history: Path | None, send: Callable[[str], None], lines: IO[str]) -> int:
    """Answer the door process's requests until `close` or the end of the pipe (the door
    process closed it or died); then lock the door and return the exit status."""
    number = "0"
    for raw in lines:
        if not raw.endswith("\n"):
            break  # cut short by the end of the pipe: not a request anyone finished sending
        number, _, request = raw.strip().partition(" ")
        verb, _, argument = request.partition(" ")
        if verb == "pulse":
            try:
                send(f"{number} opened {int(relay.pulse(float(argument)))}")
            # closed, a bad length, its timer gone, the pin driver failing (lgpio raises
            # OSError): refused with the reason, never a crash the door can only guess at
            except (RuntimeError, ValueError, RelayError, OSError) as error:
                send(f"{number} error {_said(error)}")
        elif verb == "state":
            try:
                send(f"{number} state {int(relay.is_active)}")
            except OSError as error:  # the pin cannot be read
                send(f"{number} error {_said(error)}")
        elif verb == "history":
            send(f"{number} history {json.dumps(_pin_history(relay))}")
        elif verb == "close":
            break
        else:
            send(f"{number} error unknown request {request[:40]!r}")
    try:
        relay.close()
    except (RelayError, OSError) as error:  # not low, or the pin not freed
        log.error("%s", _said(error))
        send(f"{number} error {_said(error)}")
        return 1
    if history is not None:
        history.write_text(json.dumps(_pin_history(relay)))
    send(f"{number} closed")
    return 0


def _said(error: Exception) -> str:
    """An error as the child reports it: a pin driver's OSError with its type."""
    return f"{type(error).__name__}: {error}" if isinstance(error, OSError) else str(error)


def _pin_history(relay: Relay) -> list[tuple[float, bool]]:
    """A MockFactory pin's changes; [] for a real pin, which keeps no history."""
    pin = getattr(relay.pin_factory, "pin", None)
    states = getattr(pin(relay.pin), "states", None) if pin is not None else None
    return [(state.timestamp, bool(state.state)) for state in states or []]


def main(argv: list[str] | None = None) -> int:
    from edge_app.logs import setup_logging

    args = sys.argv[1:] if argv is None else argv
    for name in _IGNORED_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    out = sys.stdout
    out_lock = threading.Lock()

    def send(message: str) -> None:
        with out_lock, contextlib.suppress(OSError, ValueError):  # the door process is gone
            out.write(message + "\n")
            out.flush()

    try:
        settings = json.loads(args[0])
        gpio = GpioConfig(**settings["gpio"])
        history = None if settings["history"] is None else Path(settings["history"])
        setup_logging()
        logging.getLogger().setLevel(int(settings["log_level"]))
        relay = Relay.from_config(gpio, on_release=lambda reason: send(f"released {reason}"))
    except RelayError as error:
        send(f"0 error {error}")
        return 2
    except (IndexError, KeyError, TypeError, ValueError) as error:
        send(f"0 error relay process: bad arguments ({error})")
        return 2
    send("0 ready")
    return _serve(relay, history, send, sys.stdin)
