"""The `--edgetpu` step: co-compile the int8 models with edgetpu_compiler and read its report.

The compiler (16.0, the last release) runs only on x86-64 Debian/Ubuntu from Coral's apt
repository, so it is used when it is on PATH and otherwise reported as absent.
All models go through ONE compiler call: co-compiled models share the ~8 MB of on-chip SRAM
and the first listed gets its parameters cached first, so the caller lists the MTCNN models
before FaceNet. The compiler's stdout is the only place that says how much of each model is
cached on chip, how much streams over USB/PCIe per inference, and whether every op mapped;
`parse_compiler_log` turns it into numbers the manifest records and the build can gate on.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path

log = logging.getLogger(__name__)

COMPILER = "edgetpu_compiler"
COMPILER_LOG_NAME = "edgetpu_compiler.log"
DEFAULT_TIMEOUT_S = 600
_GRACE_S = 60
MAPPED_STATUS = "Mapped to Edge TPU"
INSTALL_HINT = (
    "it installs only on x86-64 Debian/Ubuntu, from Coral's apt repository "
    "(https://coral.ai/docs/edgetpu/compiler/); without it the CPU int8 models are still "
    "built, and `edge-convert lint` checks them against the Edge TPU rules"
)

_UNIT_MIB = {"B": 1 / (1 << 20), "KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0}
_SIZE = re.compile(r"([\d.]+)\s*(B|KiB|MiB|GiB)")
_BLOCK_START = re.compile(r"^Input model: ", re.M)
_TABLE_HEADER = re.compile(r"^Operator\s+Count\s+Status\s*$", re.M)
_TABLE_ROW = re.compile(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")


class EdgeTpuError(RuntimeError):
    """Compiling for the Edge TPU failed, or its result cannot be used."""


class CompilerNotFoundError(EdgeTpuError):
    """edgetpu_compiler is not on PATH."""


class NotFullyMappedError(EdgeTpuError):
    """Part of a model would run on the CPU, which costs most of the accelerator's gain."""


@dataclass(frozen=True)
class CompiledModel:
    """One model's lines of the compiler report; sizes in MiB as the manifest stores them."""

    source: Path
    compiled: Path
    on_chip_mib: float
    off_chip_mib: float
    subgraphs: int
    ops_total: int
    ops_mapped: int
    ops_cpu: int
    unmapped: tuple[str, ...] = ()  # "OP xCOUNT: status" rows of ops left on the CPU

    @property
    def fully_mapped(self) -> bool:
        return self.subgraphs == 1 and self.ops_cpu == 0 and self.ops_mapped == self.ops_total


def find_compiler() -> str | None:
    return shutil.which(COMPILER)


def _value(block: str, label: str) -> str | None:
    """The text after "label: " on its own line of the block."""
    match = re.search(rf"^{re.escape(label)}: (.+?)\s*$", block, re.M)
    return match.group(1) if match else None


def _required(block: str, label: str) -> str:
    value = _value(block, label)
    if value is None:
        model = _value(block, "Input model") or "(unknown model)"
        raise EdgeTpuError(f"compiler log: no '{label}:' line for {model}")
    return value


def _count(block: str, label: str) -> int:
    value = _required(block, label)
    if not value.isascii() or not value.isdigit():
        raise EdgeTpuError(f"compiler log: '{label}:' is {value!r}, not a number")
    return int(value)


def _mib(size: str) -> float:
    match = _SIZE.fullmatch(size)
    if match is None:
        raise EdgeTpuError(f"compiler log: unreadable size {size!r}")
    return float(match.group(1)) * _UNIT_MIB[match.group(2)]


def _operator_rows(block: str) -> list[tuple[str, int, str]]:
    """The `-s` table: (op, count, status) rows after the "Operator Count Status" header."""
    header = _TABLE_HEADER.search(block)
    if header is None:
        return []
    rows = (_TABLE_ROW.match(line) for line in block[header.end() :].splitlines())
    return [(row.group(1), int(row.group(2)), row.group(3)) for row in rows if row]


def _op_counts(block: str, total: int, rows: list[tuple[str, int, str]]) -> tuple[int, int]:
    """(mapped, on CPU): the compiler's own totals when it prints them, else the table's."""
    on_tpu = _value(block, "Number of operations that will run on Edge TPU")
    on_cpu = _value(block, "Number of operations that will run on CPU")
    if on_tpu is not None and on_cpu is not None:
        return (
            _count(block, "Number of operations that will run on Edge TPU"),
            _count(block, "Number of operations that will run on CPU"),
        )
    if not rows:
        raise EdgeTpuError(
            "compiler log: no per-operation counts; the log must come from `edgetpu_compiler -s`"
        )
    mapped = sum(count for _, count, status in rows if status == MAPPED_STATUS)
    return mapped, total - mapped


def _parse_block(block: str) -> CompiledModel:
    """One model's report; lines are read in the order the compiler prints them."""
    source = Path(_required(block, "Input model"))
    compiled = Path(_required(block, "Output model"))
    on_chip = _mib(_required(block, "On-chip memory used for caching model parameters"))
    off_chip = _mib(
        _required(block, "Off-chip memory used for streaming uncached model parameters")
    )
    subgraphs = _count(block, "Number of Edge TPU subgraphs")
    total = _count(block, "Total number of operations")
    rows = _operator_rows(block)
    mapped, cpu = _op_counts(block, total, rows)
    unmapped = tuple(f"{op} x{n}: {status}" for op, n, status in rows if status != MAPPED_STATUS)
    return CompiledModel(
        source, compiled, on_chip, off_chip, subgraphs, total, mapped, cpu, unmapped
    )


def parse_compiler_log(text: str) -> list[CompiledModel]:
    """One report per "Input model:" block, in the order the compiler printed them."""
    starts = [match.start() for match in _BLOCK_START.finditer(text)]
    blocks = [text[start:end] for start, end in pairwise([*starts, len(text)])]
    return [_parse_block(block) for block in blocks]


def check_fully_mapped(report: CompiledModel) -> None:
    """Raise unless the whole model is one Edge TPU subgraph with every op on the TPU."""
    if report.fully_mapped:
        return
    detail = "; ".join(report.unmapped) or "see the compiler's operation log"
    raise NotFullyMappedError(
        f"{report.source.name}: {report.ops_mapped} of {report.ops_total} ops mapped to the "
        f"Edge TPU in {report.subgraphs} subgraph(s), {report.ops_cpu} left on the CPU "
        f"({detail}); every op must map, in one subgraph. Run `edge-convert lint` on it."
    )


def _command(compiler: str, models: list[Path], out_dir: Path, timeout_s: int) -> list[str]:
    # -s prints the per-op table, -o puts every output in out_dir, -t is the compiler's own
    # timer (its default of 180 s is tight for FaceNet co-compiled with the cascade).
    return [compiler, "-s", "-o", str(out_dir), "-t", str(timeout_s), *map(str, models)]


def _run(command: list[str], timeout_s: int) -> tuple[int, str]:
    """Exit code and combined output. The compiler enforces -t in its own child process;
    the extra grace here only catches a compiler that hangs outright."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s + _GRACE_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise EdgeTpuError(f"{COMPILER} did not finish within {timeout_s + _GRACE_S} s") from None
    except OSError as error:  # not a program for this machine, not executable, gone
        raise EdgeTpuError(
            f"cannot run {command[0]} ({error.strerror or error}): install Coral's "
            f"{COMPILER} for this machine (x86-64 Debian/Ubuntu), or build without --edgetpu"
        ) from None
    return done.returncode, done.stdout + done.stderr


def _check_inputs(models: list[Path]) -> None:
    if not models:
        raise ValueError("no models to compile")
    missing = [str(model) for model in models if not model.is_file()]
    if missing:
        raise FileNotFoundError(f"models to compile are missing: {', '.join(missing)}")
    stems = [model.stem for model in models]
    clashes = sorted({stem for stem in stems if stems.count(stem) > 1})
    if clashes:
        raise ValueError(f"models share a file name, so their outputs would clash: {clashes}")


def _anchor(report: CompiledModel, model: Path, out_dir: Path) -> CompiledModel:
    """The report with absolute paths, checked against what was asked and what was written."""
    if report.source.name != model.name:
        raise EdgeTpuError(f"compiler reported {report.source.name} where {model.name} was due")
    compiled = out_dir / report.compiled.name
    if not compiled.is_file():
        raise EdgeTpuError(f"compiler reported {compiled} but did not write it")
    return replace(report, source=model, compiled=compiled)


def compile_models(
    models: list[Path], out_dir: Path, timeout_s: int = DEFAULT_TIMEOUT_S
) -> list[CompiledModel]:
    """Co-compile `models` in one call, in the given order (first listed is cached first).

    Writes `<stem>_edgetpu.tflite` and the compiler's per-model operation logs into out_dir,
    plus its full stdout as edgetpu_compiler.log. Mapping is not checked here: call
    `check_fully_mapped` on each report.
    """
    compiler = find_compiler()
    if compiler is None:
        raise CompilerNotFoundError(f"{COMPILER} is not on PATH: {INSTALL_HINT}")
    models = [Path(model).resolve() for model in models]
    _check_inputs(models)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    command = _command(compiler, models, out_dir, timeout_s)
    log.info("compiling %d models for the Edge TPU: %s", len(models), " ".join(command))
    code, output = _run(command, timeout_s)
    log_path = out_dir / COMPILER_LOG_NAME
    log_path.write_text(output)
    if code != 0 or "Compilation failed" in output:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise EdgeTpuError(f"{COMPILER} failed (exit {code}), full log in {log_path}:\n{tail}")
    reports = parse_compiler_log(output)
    if len(reports) != len(models):
        raise EdgeTpuError(
            f"{COMPILER} reported {len(reports)} models for {len(models)} inputs; see {log_path}"
        )
    reports = [
        _anchor(report, model, out_dir) for report, model in zip(reports, models, strict=True)
    ]
    for report in reports:
        log.info(
            "%s: %.2f MiB cached on chip, %.2f MiB streamed, %d/%d ops on the TPU",
            report.compiled.name,
            report.on_chip_mib,
            report.off_chip_mib,
            report.ops_mapped,
            report.ops_total,
        )
    return reports
