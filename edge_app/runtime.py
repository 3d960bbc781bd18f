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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RUNTIME_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow")
EDGETPU_LIBRARY = "libedgetpu.so.1"
BACKENDS = ("auto", "cpu", "edgetpu")
MAX_THREADS = 64  # CPU threads one may ask for: models.threads and every --threads


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
    """pycoral's loader when it is importable (it knows the platform's library name)."""
    problem = edgetpu_library_problem()
    if problem is not None:
        raise OSError(problem)
    try:
        from pycoral.utils.edgetpu import load_edgetpu_delegate
    except ImportError:
        return runtime.load_delegate(EDGETPU_LIBRARY)
    return load_edgetpu_delegate()


def select_backend(requested: str = "auto", threads: int | None = None) -> Backend:
    """Pick the Edge TPU when its delegate loads, otherwise the CPU; log the choice and reason."""
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {requested!r}")
    runtime = find_runtime()
    cpu_threads = threads or os.cpu_count() or 1
    reason = "the CPU was requested"
    if requested != "cpu":
        try:
            delegate = _load_edgetpu_delegate(runtime)
        except (ValueError, OSError, RuntimeError) as error:
            reason = f"the Edge TPU delegate did not load: {error}"
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


def make_interpreter(path: Path, backend: Backend) -> Any:
    """An allocated interpreter; created once per model and kept (USB set-up takes seconds)."""
    if backend.kind == "edgetpu":
        interpreter = backend.runtime.interpreter_class(
            model_path=str(path), experimental_delegates=[backend.delegate]
        )
    else:
        interpreter = backend.runtime.interpreter_class(
            model_path=str(path), num_threads=backend.threads
        )
    interpreter.allocate_tensors()
    return interpreter
