"""Which MTCNN cascade the CPU runs, int8 or its float twin: chosen by measurement.

XNNPACK, TFLite's CPU delegate, has no int8 PRELU kernel, so each int8 P/R/O-Net is split
into several delegate partitions with PRELU on TFLite's reference kernel between them. On the
x86 machine the benchmarks ran on, that makes the int8 cascade several times slower than its
float twin (docs/BENCHMARKS.md); on another CPU the balance may differ. The machine decides:

    [models] cascade = "auto"    # default: time both on the probe frame, keep the faster
    [models] cascade = "int8"    # always the int8 models (what the Edge TPU runs)
    [models] cascade = "float"   # always the float twins (CPU only)

With "auto" on the CPU, the engine opens both cascades, runs each on a probe frame shipped
with the models (one face on a 640x480 canvas), a warm-up call then interleaved timed calls
within a fraction of a second, keeps the faster and logs both timings. FaceNet is the int8
model whichever cascade runs, and one FaceNet interpreter serves both. The Edge TPU always
runs int8: its compiled models are the int8 ones.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_app.errors import UserError
from edge_app.manifest import Manifest, verify_float_cascade

if TYPE_CHECKING:
    from edge_app.engine import Engine
    from edge_app.runtime import Backend

log = logging.getLogger(__name__)

CASCADES = ("auto", "int8", "float")
INT8, FLOAT = "int8", "float"
# Timing on the probe frame: one untimed call each (XNNPACK packs its weights on the first
# invoke), then calls alternating between the cascades until each has RUNS timed calls or
# BUDGET_SECONDS have passed since the first warm-up, whichever comes first; at least one
# timed call each. On this machine: about 0.15 s in all (docs/BENCHMARKS.md, start-up).
WARMUP = 1
RUNS = 3
BUDGET_SECONDS = 0.5
# The float cascade is kept only when its median is this much below int8's: a tie keeps
# int8, the calibrated default and the cascade the Edge TPU runs.
MIN_SPEEDUP = 0.05


@dataclass(frozen=True)
class CascadeChoice:
    """What the engine runs, what was asked for, why, and the timings that decided."""

    requested: str
    chosen: str
    reason: str
    ms: dict[str, float] = field(default_factory=dict)  # median ms per probe frame
    runs: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # spent measuring, warm-up included

    def describe(self) -> str:
        timing = ", ".join(
            f"{name} {self.ms[name]:.1f} ms ({self.runs.get(name, 0)} runs)" for name in self.ms
        )
        measured = f"; probe frame: {timing}; measured in {self.seconds:.2f} s" if timing else ""
        return f"{self.chosen} (cascade = {self.requested!r}): {self.reason}{measured}"


def measure(
    candidates: Mapping[str, Callable[[], Any]],
    *,
    warmup: int = WARMUP,
    runs: int = RUNS,
    budget: float = BUDGET_SECONDS,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[dict[str, list[float]], float]:
    """Seconds per call of each candidate, and the seconds the whole measurement took.

    Calls alternate between candidates (A B A B ...), so a burst of other work on a shared
    machine slows both alike instead of whichever happened to be running.
    """
    started = clock()
    for run in candidates.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    while True:
        for name, run in candidates.items():
            start = clock()
            run()
            times[name].append(clock() - start)
        done = min(len(t) for t in times.values())
        if done >= runs or clock() - started >= budget:
            return times, clock() - started


def pick(times: Mapping[str, list[float]]) -> tuple[str, str]:
    """(cascade, reason) from the measured seconds per call of "int8" and "float"."""
    int8, flt = statistics.median(times[INT8]), statistics.median(times[FLOAT])
    if flt < int8 * (1 - MIN_SPEEDUP):
        return FLOAT, f"float is {int8 / flt:.1f}x faster than int8 on this CPU"
    if int8 < flt:
        return INT8, f"int8 is {flt / int8:.1f}x faster than float on this CPU"
    return INT8, f"float is not {100 * MIN_SPEEDUP:.0f}% faster than int8: int8 kept"


def probe_frame(manifest: Manifest, models_dir: Path) -> Any:
    """The probe frame shipped with the float cascade, as an RGB uint8 array."""
    from edge_app.images import read_image

    assert manifest.float_cascade is not None
    return read_image(Path(models_dir) / manifest.float_cascade.probe)


def _float_problem(manifest: Manifest, models_dir: Path, verify: bool) -> str | None:
    if manifest.float_cascade is None:
        return (
            "the models manifest ships no float cascade (add one with `edge-convert float-cascade`)"
        )
    if verify:
        problems = verify_float_cascade(manifest, models_dir)
        if problems:
            return "; ".join(problems)
    return None


def open_engine(
    engine_class: type[Engine],
    manifest: Manifest,
    models_dir: Path,
    backend: Backend,
    requested: str,
    *,
    verify: bool = True,
    **options: Any,
) -> Engine:
    """An engine running the requested cascade ("auto": the faster one, measured here)."""
    engine = _choose(engine_class, manifest, models_dir, backend, requested, verify, options)
    assert engine.cascade_choice is not None
    log.info(
        "engine ready backend=%s cascade=%s models=%s camera=%dx%d min_face=%g",
        backend.kind,
        engine.cascade_choice.chosen,
        models_dir,
        *engine.camera,
        engine.cascade.min_face,
    )
    return engine


def _choose(
    engine_class: type[Engine],
    manifest: Manifest,
    models_dir: Path,
    backend: Backend,
    requested: str,
    verify: bool,
    options: dict[str, Any],
) -> Engine:
    if requested not in CASCADES:
        raise UserError(
            f"models.cascade: {requested!r} is not one of {', '.join(map(repr, CASCADES))}"
        )

    def int8_engine(reason: str, engine: Engine | None = None) -> Engine:
        """The int8 engine (`engine`, when one is open already), with why it runs."""
        engine = engine or engine_class(manifest, models_dir, backend, **options)
        engine.cascade_choice = CascadeChoice(requested, INT8, reason)
        log.info("cascade=int8 requested=%s reason=%r", requested, reason)
        return engine

    if backend.kind == "edgetpu":
        if requested == FLOAT:
            log.warning("cascade=float ignored: the Edge TPU runs the int8 models only")
        return int8_engine("the Edge TPU runs the int8 models only")
    if requested == INT8:
        return int8_engine("int8 was requested")
    problem = _float_problem(manifest, models_dir, verify)
    if problem is not None:
        if requested == FLOAT:
            raise UserError(
                f'models.cascade = "float" but {problem}. Rebuild or re-copy the models, '
                'or set cascade = "int8"'
            )
        if manifest.float_cascade is not None:  # shipped but broken: say so loudly
            log.warning("float cascade unusable, running int8: %s", problem)
        return int8_engine(f"no usable float cascade: {problem}")
    float_manifest = manifest.with_float_cascade()
    if requested == FLOAT:
        engine = engine_class(float_manifest, models_dir, backend, **options)
        engine.cascade_choice = CascadeChoice(requested, FLOAT, "float was requested")
        log.info("cascade=float requested=float reason='float was requested'")
        return engine
    int8 = engine_class(manifest, models_dir, backend, **options)
    try:
        flt = engine_class(float_manifest, models_dir, backend, facenet=int8._facenet, **options)
        frame = probe_frame(manifest, models_dir)
    except UserError as error:  # a float model the runtime refuses, or not the twin: as above
        log.warning("float cascade unusable, running int8: %s", error)
        return int8_engine(f"no usable float cascade: {error}", int8)
    times, seconds = measure({INT8: lambda: int8.detect(frame), FLOAT: lambda: flt.detect(frame)})
    chosen, reason = pick(times)
    choice = CascadeChoice(
        requested,
        chosen,
        reason,
        ms={name: 1000 * statistics.median(t) for name, t in times.items()},
        runs={name: len(t) for name, t in times.items()},
        seconds=seconds,
    )
    log.info(
        "cascade=%s requested=auto int8_ms=%.2f float_ms=%.2f runs=%d measured_s=%.2f reason=%r",
        chosen,
        choice.ms[INT8],
        choice.ms[FLOAT],
        min(choice.runs.values()),
        seconds,
        reason,
    )
    winner = flt if chosen == FLOAT else int8
    winner.cascade_choice = choice
    winner.embed(frame, winner.detect(frame))  # FaceNet's first invoke here, not on a visitor
    return winner
