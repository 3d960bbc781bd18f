"""Choosing the TFLite runtime and the accelerator, once, and saying why in the log.

Order of preference follows what a Pi actually has: ai-edge-litert (maintained, numpy 2),
then tflite-runtime 2.14 (the last release), then full TensorFlow on a desktop. The Edge TPU
delegate must come from a libedgetpu built for the same TF version as the runtime
(docs/INSTALL.md); a mismatched pair fails at load, which we report rather than crash on.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

RUNTIME_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow")
EDGETPU_LIBRARY = "libedgetpu.so.1"
BACKENDS = ("auto", "cpu", "edgetpu")
MAX_THREADS = 64  # CPU threads one may ask for: models.threads and every --threads
# The runtime's C++ logger writes "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
# straight to file descriptor 2, once per process, when the first CPU interpreter is made.
# No setting reaches that logger (TF_CPP_MIN_LOG_LEVEL is absl's, and its level variable is
# not exported), so -q drops the line at the descriptor: _native_info_dropped.
NATIVE_INFO = b"INFO: "
_native_info_lock = threading.Lock()
_native_info_seen = False


class RuntimeUnavailable(RuntimeError):
    """No TFLite runtime is importable, or a forced Edge TPU is absent."""


@dataclass(frozen=True)
class Runtime:
    module: str
    version: str
    interpreter_class: Any
    load_delegate: Any


@dataclass(frozen=True)
class Backend:
    """Where the models run: 'edgetpu' (delegate set) or 'cpu' (threads set)."""

    kind: str
    runtime: Runtime
    delegate: Any
    threads: int
    reason: str


def _import_runtime(module_name: str) -> Runtime:
    module = importlib.import_module(module_name)
    if module_name == "tensorflow":
        return Runtime(
            "tensorflow.lite",
            module.__version__,
            module.lite.Interpreter,
            module.lite.experimental.load_delegate,
        )
    package = importlib.import_module(module_name.split(".")[0])
    version = getattr(package, "__version__", None) or getattr(module, "__version__", "unknown")
    return Runtime(module_name, str(version), module.Interpreter, module.load_delegate)


def find_runtime() -> Runtime:
    missing = []
    for name in RUNTIME_MODULES:
        try:
            return _import_runtime(name)
        except ImportError as error:
            missing.append(f"{name} ({error})")
    raise RuntimeUnavailable(
        "no TFLite runtime is importable; install one with `pip install ai-edge-litert` "
        "(tried: " + "; ".join(missing) + ")"
    )


def edgetpu_library_problem() -> str | None:
    """Why libedgetpu cannot be used, or None when it loads and exports the delegate API.

    Asked before any delegate is built: the runtimes' Delegate constructor, when the library
    does not load, leaves an object whose destructor then prints "Exception ignored in ...
    AttributeError: 'Delegate' object has no attribute '_library'" on every CPU-only machine.
    """
    try:
        library = ctypes.CDLL(EDGETPU_LIBRARY)
    except OSError as error:
        return f"{EDGETPU_LIBRARY} cannot be loaded ({error})"
    if not hasattr(library, "tflite_plugin_create_delegate"):
        return f"{EDGETPU_LIBRARY} loads but is not an Edge TPU delegate library"
    return None


def _load_edgetpu_delegate(runtime: Runtime) -> Any:
    """The Edge TPU delegate, built by the runtime whose interpreters will use it.

    Not through pycoral's load_edgetpu_delegate, even where pycoral is installed: that is
    tflite_runtime's load_delegate("libedgetpu.so.1") (pycoral/utils/edgetpu.py), which
    would load a second TensorFlow Lite runtime into the process beside ai-edge-litert, and
    whose import can fail with more than ImportError (a pycoral built for numpy 1.x).
    """
    problem = edgetpu_library_problem()
    if problem is not None:
        raise OSError(problem)
    return runtime.load_delegate(EDGETPU_LIBRARY)


def select_backend(
    requested: str = "auto", threads: int | None = None, *, why_cpu: str = "the CPU was requested"
) -> Backend:
    """Pick the Edge TPU when its delegate loads, otherwise the CPU; log the choice and reason
    (`why_cpu`: why the CPU was asked for)."""
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {requested!r}")
    runtime = find_runtime()
    cores = os.cpu_count() or 1
    cpu_threads = threads or cores
    if cpu_threads > cores:  # each interpreter has a pool this large: more only contend
        log.warning("threads=%d is more than the %d cores here: using %d", threads, cores, cores)
        cpu_threads = cores
    reason = why_cpu
    if requested != "cpu":
        try:
            delegate = _load_edgetpu_delegate(runtime)
        except (ValueError, OSError, RuntimeError) as error:
            # one line: a delegate's own message can hold line breaks
            said = " ".join(str(error).split()) or type(error).__name__
            reason = f"the Edge TPU delegate did not load: {said}"
            if requested == "edgetpu":
                raise RuntimeUnavailable(
                    f"{reason}. Install libedgetpu built for {runtime.module} {runtime.version} "
                    "(feranick's libedgetpu packages) and plug in the Coral"
                ) from None
        else:
            backend = Backend("edgetpu", runtime, delegate, 1, f"{EDGETPU_LIBRARY} loaded")
            log.info(
                "backend=edgetpu runtime=%s version=%s reason=%r",
                runtime.module,
                runtime.version,
                backend.reason,
            )
            return backend
    log.info(
        "backend=cpu runtime=%s version=%s threads=%d reason=%r",
        runtime.module,
        runtime.version,
        cpu_threads,
        reason,
    )
    return Backend("cpu", runtime, None, cpu_threads, reason)


def make_interpreter(model: bytes, backend: Backend) -> Any:
    """An allocated interpreter of a model's bytes (the caller read and checked them, so the
    runtime never reads a file the checks did not see); created once per model and kept (USB
    set-up takes seconds)."""
    with _native_info_dropped():
        if backend.kind == "edgetpu":
            interpreter = backend.runtime.interpreter_class(
                model_content=model, experimental_delegates=[backend.delegate]
            )
        else:
            interpreter = backend.runtime.interpreter_class(
                model_content=model, num_threads=backend.threads
            )
        interpreter.allocate_tensors()
    return interpreter


@contextmanager
def _native_info_dropped() -> Iterator[None]:
    """With warnings-only logging (-q), until the runtime's INFO line has been seen: what is
    written to file descriptor 2 meanwhile is held in a file, then passed on without the
    lines that start "INFO: ". The runtime's warnings and errors, and anything else written
    there meanwhile, still reach stderr (after the block, in their order)."""
    global _native_info_seen
    if _native_info_seen or log.isEnabledFor(logging.INFO):
        yield
        return
    with _native_info_lock:
        try:
            held = tempfile.TemporaryFile()  # noqa: SIM115 (closed by `with held` below)
        except OSError:  # nowhere to hold it: the line is printed
            yield
            return
        with held:
            sys.stderr.flush()
            try:
                saved = os.dup(2)
            except OSError:  # no standard error at all: nothing to keep quiet
                yield
                return
            os.dup2(held.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                held.seek(0)
                kept: list[bytes] = []
                for line in held:
                    if line.startswith(NATIVE_INFO):
                        _native_info_seen = True
                    else:
                        kept.append(line)
                _write_all(2, b"".join(kept))


def _write_all(descriptor: int, data: bytes) -> None:
    while data:
        try:
            written = os.write(descriptor, data)
        except OSError:  # standard error went away: nothing more can be said
            return
        data = data[written:]
