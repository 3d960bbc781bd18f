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

The other way round: if the child dies, RelayProcess.check() raises, the door process locks
the pin itself (the same way relay_off does) and exits, and systemd restarts it.

The pipe protocol is one line per message. Door to child: `pulse SECONDS`, `close`,
`history`. Child to door: `ready`, `opened 1|0`, `released REASON`, `closed`, `history JSON`
(MockFactory only, for tests), `error MESSAGE`.

Run by the door process as `python -m edge_app.relay_process SETTINGS_JSON` (its `[gpio]`
section, its log level, and for tests a file for the pin history); it is
not a command for people.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import IO

from edge_app.config import GpioConfig
from edge_app.relay import ClosedOnExit, Relay, RelayError, make_pin_factory

log = logging.getLogger(__name__)

# How long the door process waits for the child to claim the pin (a Pi imports gpiozero and
# lgpio in about a second; a loaded Pi 3 takes longer).
START_SECONDS = 20.0
# How long it waits for the answer to a pulse or a close: the child answers at once, so a
# child that does not is taken for a hung one.
REPLY_SECONDS = 2.0
# How long it waits for the child to exit once it has locked the door.
EXIT_SECONDS = 2.0
# The environment variables the child must not inherit: systemd's notification socket and
# watchdog belong to the door process alone.
_NOT_INHERITED = ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_PID")


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
    ) -> None:
        self.pin = gpio.pin
        self._gpio = gpio
        self._on_release = on_release
        self._lock = threading.Lock()  # one request at a time
        self._replies: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._active = False
        self._closing = False
        self._closed = False
        settings = {
            "gpio": asdict(gpio),
            "log_level": logging.getLogger().getEffectiveLevel(),  # -q and -v apply here too
            "history": None if history is None else str(history),
        }
        command = [sys.executable, "-m", "edge_app.relay_process", json.dumps(settings)]
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
            )
        except OSError as error:
            raise RelayError(f"relay: cannot start the relay process ({error})") from None
        self._reader = threading.Thread(target=self._read, name="relay-process", daemon=True)
        self._reader.start()
        first = self._reply(start_seconds)
        if first != "ready":
            self._end_child()
            if first is not None and first.startswith("error "):
                raise RelayError(first[len("error ") :])
            why = f"no answer in {start_seconds:.0f} s" if first is None else repr(first)
            raise RelayError(f"relay: the relay process for GPIO{self.pin} did not start ({why})")
        atexit.register(self.close)

    @classmethod
    def from_config(
        cls, gpio: GpioConfig, *, on_release: Callable[[str], None] | None = None
    ) -> RelayProcess:
        return cls(gpio, on_release=on_release)

    @property
    def is_active(self) -> bool:
        """Whether the pin is open, as the child last reported it."""
        return self._active

    def pulse(self, seconds: float) -> bool:
        """Open for `seconds` from now (Relay.pulse's rule); True if this opened it."""
        with self._lock:
            if self._closing:
                raise RuntimeError("relay is closed")
            answer = self._ask(f"pulse {seconds!r}")
            if answer in ("opened 1", "opened 0"):
                self._active = True
                return answer == "opened 1"
            if answer == "error relay is closed":
                raise RuntimeError("relay is closed")
            raise RelayError(self._failed("pulse", answer))

    def check(self) -> None:
        """RelayError when the child is gone or cannot answer: nothing would end a pulse."""
        if self._closed or self._closing:
            return
        if self._child.poll() is not None or not self._reader.is_alive():
            raise RelayError(
                f"relay: the process that drives GPIO{self.pin} has ended; refusing to open a "
                "door nothing would close (the process locks it and exits)"
            )

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
        this process claims the pin and drives it low itself, as relay_off does; RelayError
        only if that fails too.
        """
        with self._lock:
            if self._closed:
                return
            self._closing = True
            answer = self._ask("close")
            if answer == "closed":
                self._closed = True
                self._active = False
                self._wait_for_exit()
                atexit.unregister(self.close)
                return
            failed = self._failed("close", answer)
            log.error("%s; locking GPIO%d from this process", failed, self.pin)
            self._end_child()
            self._lock_here()  # RelayError if that fails: close() may be called again
            self._closed = True
            self._active = False
            atexit.unregister(self.close)

    # --- the pipe ------------------------------------------------------------------------------

    def _ask(self, request: str) -> str | None:
        """Send one request and wait for its answer; None if the child is gone or silent."""
        try:
            assert self._child.stdin is not None, "Popen with stdin=PIPE"
            self._child.stdin.write(request + "\n")
            self._child.stdin.flush()
        except (OSError, ValueError):  # a closed pipe: the child is gone
            return None
        return self._reply(REPLY_SECONDS)

    def _reply(self, timeout: float) -> str | None:
        try:
            return self._replies.get(timeout=timeout)
        except queue.Empty:
            return None

    def _read(self) -> None:
        """The child's messages: relocks go to on_release, the rest answer requests."""
        assert self._child.stdout is not None, "Popen with stdout=PIPE"
        try:
            for raw in self._child.stdout:
                line = raw.rstrip("\n")
                if line.startswith("released "):
                    self._active = False
                    if self._on_release is not None:
                        try:
                            self._on_release(line[len("released ") :])
                        except Exception:  # the pin is already low; the callback loses its work
                            log.exception("relay release callback failed pin=GPIO%d", self.pin)
                else:
                    self._replies.put(line)
        except (OSError, ValueError):
            pass
        finally:
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
            self._child.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._child.wait(timeout=EXIT_SECONDS)

    def _lock_here(self) -> None:
        """Claim the pin in this process and drive it low (the child is gone)."""
        factory = self._gpio.factory
        if factory == "mock":  # a MockFactory of this process has no tie to the child's pin
            return
        Relay.from_config(self._gpio, pin_factory=make_pin_factory(factory)).close()


# --- the child --------------------------------------------------------------------------------


def _serve(relay: Relay, history: Path | None, send: Callable[[str], None], lines: IO[str]) -> int:
    """Answer the door process's requests until `close` or the end of the pipe (the door
    process closed it or died); then lock the door and return the exit status."""
    for raw in lines:
        request = raw.strip()
        if request.startswith("pulse "):
            try:
                send(f"opened {int(relay.pulse(float(request[len('pulse ') :])))}")
            except (RuntimeError, ValueError) as error:
                send(f"error {error}")
        elif request == "history":
            send(f"history {json.dumps(_pin_history(relay))}")
        elif request == "close":
            break
        else:
            send(f"error unknown request {request[:40]!r}")
    try:
        relay.close()
    except RelayError as error:
        log.error("%s", error)
        send(f"error {error}")
        return 1
    if history is not None:
        history.write_text(json.dumps(_pin_history(relay)))
    send("closed")
    return 0


def _pin_history(relay: Relay) -> list[tuple[float, bool]]:
    """A MockFactory pin's changes; [] for a real pin, which keeps no history."""
    pin = getattr(relay.pin_factory, "pin", None)
    states = getattr(pin(relay.pin), "states", None) if pin is not None else None
    return [(state.timestamp, bool(state.state)) for state in states or []]


def main(argv: list[str] | None = None) -> int:
    from edge_app.logs import setup_logging

    args = sys.argv[1:] if argv is None else argv
    # Signals are the door process's to handle: it closes this one (`close`) on its way out,
    # and if it dies the end of the pipe locks the door. SIGTERM to the whole service must not
    # end this process before the door process has asked it to lock.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
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
        send(f"error {error}")
        return 2
    except (IndexError, KeyError, TypeError, ValueError) as error:
        send(f"error relay process: bad arguments ({error})")
        return 2
    send("ready")
    return _serve(relay, history, send, sys.stdin)


if __name__ == "__main__":
    sys.exit(main())
