"""Reading edgetpu_compiler 16 logs, and driving the compiler through a stand-in on PATH.

The sample logs follow the compiler's stdout with `-s` as users quote it in
google-coral/edgetpu issues (e.g. #458 for a co-compile, #490 and #512 for ops left on the
CPU); the models and numbers are this project's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from converter.edgetpu import (
    COMPILER_LOG_NAME,
    CompiledModel,
    CompilerNotFoundError,
    EdgeTpuError,
    NotFullyMappedError,
    check_fully_mapped,
    compile_models,
    find_compiler,
    parse_compiler_log,
)
from edge_app import runtime

CO_COMPILED = """\
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 600 seconds.

Models compiled successfully in 6412 ms.

Input model: /build/models/pnet_0.tflite
Input size: 9.63KiB
Output model: /build/models/edgetpu/pnet_0_edgetpu.tflite
Output size: 86.02KiB
On-chip memory used for caching model parameters: 10.75KiB
On-chip memory remaining for caching model parameters: 6.90MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 9
Operation log: /build/models/edgetpu/pnet_0_edgetpu.log

Operator                       Count      Status

CONV_2D                        5          Mapped to Edge TPU
PRELU                          3          Mapped to Edge TPU
MAX_POOL_2D                    1          Mapped to Edge TPU

Input model: /build/models/onet.tflite
Input size: 385.20KiB
Output model: /build/models/edgetpu/onet_edgetpu.tflite
Output size: 467.16KiB
On-chip memory used for caching model parameters: 379.25KiB
On-chip memory remaining for caching model parameters: 6.52MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 18
Operation log: /build/models/edgetpu/onet_edgetpu.log

Operator                       Count      Status

CONV_2D                        4          Mapped to Edge TPU
PRELU                          5          Mapped to Edge TPU
MAX_POOL_2D                    3          Mapped to Edge TPU
RESHAPE                        1          Mapped to Edge TPU
FULLY_CONNECTED                4          Mapped to Edge TPU
CONCATENATION                  1          Mapped to Edge TPU

Input model: /build/models/facenet.tflite
Input size: 23.41MiB
Output model: /build/models/edgetpu/facenet_edgetpu.tflite
Output size: 23.66MiB
On-chip memory used for caching model parameters: 6.25MiB
On-chip memory remaining for caching model parameters: 0.00B
Off-chip memory used for streaming uncached model parameters: 17.04MiB
Number of Edge TPU subgraphs: 1
Total number of operations: 181
Operation log: /build/models/edgetpu/facenet_edgetpu.log

Operator                       Count      Status

CONV_2D                        132        Mapped to Edge TPU
CONCATENATION                  21         Mapped to Edge TPU
ADD                            21         Mapped to Edge TPU
MAX_POOL_2D                    3          Mapped to Edge TPU
AVERAGE_POOL_2D                1          Mapped to Edge TPU
RESHAPE                        1          Mapped to Edge TPU
FULLY_CONNECTED                1          Mapped to Edge TPU
L2_NORMALIZATION               1          Mapped to Edge TPU
Compilation child process completed within timeout period.
Compilation succeeded!
"""

OPS_ON_CPU = """\
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 600 seconds.

Model compiled successfully in 287 ms.

Input model: /build/models/pnet_softmax.tflite
Input size: 9.90KiB
Output model: /build/models/edgetpu/pnet_softmax_edgetpu.tflite
Output size: 81.45KiB
On-chip memory used for caching model parameters: 10.75KiB
On-chip memory remaining for caching model parameters: 7.74MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 11
Operation log: /build/models/edgetpu/pnet_softmax_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage \
of the model will instead run on the CPU, which is slower. If possible, consider updating your \
model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 9
Number of operations that will run on CPU: 2

Operator                       Count      Status

CONV_2D                        5          Mapped to Edge TPU
PRELU                          3          Mapped to Edge TPU
MAX_POOL_2D                    1          Mapped to Edge TPU
SOFTMAX                        1          Operation is otherwise supported, but not mapped due \
to some unspecified limitation
DEQUANTIZE                     1          Operation is working on an unsupported data type
Compilation child process completed within timeout period.
Compilation succeeded!
"""

# With -a the compiler may cut the model around a CPU op into several TPU subgraphs.
TWO_SUBGRAPHS = """\
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 402 ms.

Input model: rnet_leaky.tflite
Input size: 104.66KiB
Output model: rnet_leaky_edgetpu.tflite
Output size: 186.31KiB
On-chip memory used for caching model parameters: 98.50KiB
On-chip memory remaining for caching model parameters: 7.65MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 2
Total number of operations: 12
Operation log: rnet_leaky_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage \
of the model will instead run on the CPU, which is slower. If possible, consider updating your \
model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 11
Number of operations that will run on CPU: 1

Operator                       Count      Status

CONV_2D                        3          Mapped to Edge TPU
LEAKY_RELU                     1          Operation not supported
PRELU                          3          Mapped to Edge TPU
MAX_POOL_2D                    2          Mapped to Edge TPU
RESHAPE                        1          Mapped to Edge TPU
FULLY_CONNECTED                2          Mapped to Edge TPU
Compilation child process completed within timeout period.
Compilation succeeded!
"""


def test_co_compiled_log_gives_one_report_per_model_in_order() -> None:
    reports = parse_compiler_log(CO_COMPILED)

    assert [r.source for r in reports] == [
        Path("/build/models/pnet_0.tflite"),
        Path("/build/models/onet.tflite"),
        Path("/build/models/facenet.tflite"),
    ]
    assert reports[0].compiled == Path("/build/models/edgetpu/pnet_0_edgetpu.tflite")
    facenet = reports[2]
    assert facenet.on_chip_mib == pytest.approx(6.25)
    assert facenet.off_chip_mib == pytest.approx(17.04)
    assert (facenet.subgraphs, facenet.ops_total, facenet.ops_mapped, facenet.ops_cpu) == (
        1,
        181,
        181,
        0,
    )
    assert reports[0].on_chip_mib == pytest.approx(10.75 / 1024)
    assert reports[0].off_chip_mib == 0.0
    assert [(r.ops_total, r.ops_mapped) for r in reports] == [(9, 9), (18, 18), (181, 181)]
    for report in reports:
        check_fully_mapped(report)


def test_ops_left_on_the_cpu_fail_the_check_and_are_named() -> None:
    (report,) = parse_compiler_log(OPS_ON_CPU)

    assert (report.subgraphs, report.ops_total, report.ops_mapped, report.ops_cpu) == (
        1,
        11,
        9,
        2,
    )
    assert report.unmapped == (
        "SOFTMAX x1: Operation is otherwise supported, but not mapped due to some "
        "unspecified limitation",
        "DEQUANTIZE x1: Operation is working on an unsupported data type",
    )
    with pytest.raises(NotFullyMappedError, match=r"9 of 11 ops .* 2 left on the CPU") as error:
        check_fully_mapped(report)
    assert "pnet_softmax.tflite" in str(error.value)
    assert "SOFTMAX x1" in str(error.value)


def test_two_tpu_subgraphs_fail_the_check() -> None:
    (report,) = parse_compiler_log(TWO_SUBGRAPHS)

    assert (report.subgraphs, report.ops_mapped, report.ops_cpu) == (2, 11, 1)
    assert report.unmapped == ("LEAKY_RELU x1: Operation not supported",)
    with pytest.raises(NotFullyMappedError, match=r"in 2 subgraph\(s\)"):
        check_fully_mapped(report)


def test_split_model_fails_even_with_every_op_mapped() -> None:
    (report,) = parse_compiler_log(OPS_ON_CPU)
    split = replace(report, subgraphs=2, ops_mapped=11, ops_cpu=0, unmapped=())

    with pytest.raises(NotFullyMappedError, match="in 2 subgraph"):
        check_fully_mapped(split)


def test_counts_come_from_the_table_when_the_totals_are_not_printed() -> None:
    without_totals = "\n".join(
        line for line in OPS_ON_CPU.splitlines() if not line.startswith("Number of operations")
    )
    (report,) = parse_compiler_log(without_totals)

    assert (report.ops_mapped, report.ops_cpu) == (9, 2)


def test_log_without_the_operation_table_is_rejected() -> None:
    no_table = CO_COMPILED.split("\nOperator ")[0]

    with pytest.raises(EdgeTpuError, match="edgetpu_compiler -s"):
        parse_compiler_log(no_table)


def test_truncated_log_names_the_missing_line() -> None:
    truncated = CO_COMPILED.split("Number of Edge TPU subgraphs")[0]

    with pytest.raises(
        EdgeTpuError,
        match="no 'Number of Edge TPU subgraphs:' line for /build/models/pnet_0.tflite",
    ):
        parse_compiler_log(truncated)


def test_a_count_that_is_not_a_number_is_a_log_error_not_a_traceback() -> None:
    """A converter audit: "Number of Edge TPU subgraphs: one" was a ValueError traceback."""
    odd = CO_COMPILED.replace(
        "Number of Edge TPU subgraphs: 1", "Number of Edge TPU subgraphs: one"
    )
    with pytest.raises(
        EdgeTpuError, match="'Number of Edge TPU subgraphs:' is 'one', not a number"
    ):
        parse_compiler_log(odd)


def test_log_of_a_failed_run_has_no_reports() -> None:
    failed = (
        "Edge TPU Compiler version 16.0.384591198\n"
        "ERROR: Didn't find op for builtin opcode 'CONV_2D' version '6'\n"
        "Invalid model: pnet.tflite\nModel could not be parsed\n"
    )
    assert parse_compiler_log(failed) == []


# ---- the compiler on PATH ------------------------------------------------------------------

FAKE_COMPILER = """\
#!{python}
# Stand-in for edgetpu_compiler 16: records its arguments, writes each <stem>_edgetpu.tflite
# into -o, and prints the real log format, fully mapped.
import json, os, pathlib, sys
args = sys.argv[1:]
out = pathlib.Path(args[args.index("-o") + 1])
models = [pathlib.Path(a) for a in args if a.endswith(".tflite")]
(out / "argv.json").write_text(json.dumps(args))
if os.environ.get("FAKE_COMPILER_FAIL"):
    print("Edge TPU Compiler version 16.0.384591198")
    print("Internal compiler error. Aborting!")
    print("Compilation failed! ")
    sys.exit(1)
print("Edge TPU Compiler version 16.0.384591198")
print("Started a compilation timeout timer of 600 seconds.\\n")
print("Models compiled successfully in 812 ms.\\n")
for model in models:
    compiled = out / (model.stem + "_edgetpu.tflite")
    compiled.write_bytes(model.read_bytes())
    print(f"Input model: {{model}}\\nInput size: 9.63KiB\\nOutput model: {{compiled}}")
    print("Output size: 86.02KiB")
    print("On-chip memory used for caching model parameters: 1.50MiB")
    print("On-chip memory remaining for caching model parameters: 5.40MiB")
    print("Off-chip memory used for streaming uncached model parameters: 512.00KiB")
    print("Number of Edge TPU subgraphs: 1\\nTotal number of operations: 4")
    print(f"Operation log: {{out / (model.stem + '_edgetpu.log')}}\\n")
    print("Operator                       Count      Status\\n")
    print("CONV_2D                        4          Mapped to Edge TPU\\n")
print("Compilation child process completed within timeout period.")
print("Compilation succeeded! ")
"""


@pytest.fixture
def fake_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    compiler = bin_dir / "edgetpu_compiler"
    compiler.write_text(FAKE_COMPILER.format(python=sys.executable))
    compiler.chmod(compiler.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bin_dir))
    return compiler


@pytest.fixture
def cascade(tmp_path: Path) -> list[Path]:
    """MTCNN first, FaceNet last: the order the build passes them in."""
    folder = tmp_path / "models"
    folder.mkdir()
    paths = [folder / f"{name}.tflite" for name in ("pnet_0", "rnet", "onet", "facenet")]
    for path in paths:
        path.write_bytes(b"TFL3" + path.stem.encode())
    return paths


@pytest.mark.skipif(
    shutil.which("edgetpu_compiler") is not None, reason="edgetpu_compiler is installed here"
)
def test_this_machine_has_no_compiler_and_says_so(cascade: list[Path], tmp_path: Path) -> None:
    assert find_compiler() is None
    out_dir = tmp_path / "edgetpu"

    with pytest.raises(CompilerNotFoundError, match="edgetpu_compiler is not on PATH") as error:
        compile_models(cascade, out_dir)
    assert "edge-convert lint" in str(error.value)
    assert not out_dir.exists()


def test_find_compiler_follows_path(fake_compiler: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_compiler() == str(fake_compiler)
    monkeypatch.setenv("PATH", os.pathsep.join([str(fake_compiler.parent.parent)]))
    assert find_compiler() is None


def test_compile_models_runs_one_call_in_order(
    fake_compiler: Path, cascade: list[Path], tmp_path: Path
) -> None:
    out_dir = tmp_path / "edgetpu"
    reports = compile_models(cascade, out_dir, timeout_s=120)

    argv = json.loads((out_dir / "argv.json").read_text())
    assert argv == ["-s", "-o", str(out_dir), "-t", "120", *map(str, cascade)]
    assert [r.source for r in reports] == cascade
    assert [r.compiled for r in reports] == [
        out_dir / f"{path.stem}_edgetpu.tflite" for path in cascade
    ]
    assert all(r.compiled.read_bytes() == r.source.read_bytes() for r in reports)
    assert reports[0] == CompiledModel(
        source=cascade[0],
        compiled=out_dir / "pnet_0_edgetpu.tflite",
        on_chip_mib=1.5,
        off_chip_mib=0.5,
        subgraphs=1,
        ops_total=4,
        ops_mapped=4,
        ops_cpu=0,
    )
    assert "Compilation succeeded!" in (out_dir / COMPILER_LOG_NAME).read_text()


def test_compiler_failure_is_reported_with_its_output(
    fake_compiler: Path, cascade: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_COMPILER_FAIL", "1")

    out_dir = tmp_path / "edgetpu"

    with pytest.raises(EdgeTpuError, match=r"failed \(exit 1\)") as error:
        compile_models(cascade, out_dir)
    assert "Internal compiler error" in str(error.value)
    assert "Internal compiler error" in (out_dir / COMPILER_LOG_NAME).read_text()


def test_a_compiler_that_cannot_run_here_is_one_clear_error(
    fake_compiler: Path, cascade: list[Path], tmp_path: Path
) -> None:
    """A converter audit: an edgetpu_compiler built for another machine ("Exec format
    error") was reported as "cannot write the models", after the whole conversion."""
    fake_compiler.write_bytes(bytes(range(256)) * 4)  # executable, not a program
    with pytest.raises(EdgeTpuError, match=r"cannot run .*edgetpu_compiler \(Exec format error\)"):
        compile_models(cascade, tmp_path / "edgetpu")


def test_models_with_the_same_name_are_refused(fake_compiler: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "pnet.tflite", tmp_path / "b" / "pnet.tflite"
    for path in (first, second):
        path.parent.mkdir()
        path.write_bytes(b"TFL3")

    with pytest.raises(ValueError, match="outputs would clash"):
        compile_models([first, second], tmp_path / "edgetpu")


# ---- the runtime's Edge TPU delegate, on machines with and without libedgetpu ----------------


def test_absent_libedgetpu_means_the_cpu_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "EDGETPU_LIBRARY", "libedgetpu-absent.so.1")

    backend = runtime.select_backend("auto")

    assert backend.kind == "cpu"
    assert backend.delegate is None
    assert "libedgetpu-absent.so.1 cannot be loaded" in backend.reason


def test_a_library_without_the_delegate_api_is_not_taken_for_libedgetpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    libm = ctypes.util.find_library("m")
    assert libm, "the C maths library is on every Linux"
    monkeypatch.setattr(runtime, "EDGETPU_LIBRARY", libm)

    assert "is not an Edge TPU delegate library" in (runtime.edgetpu_library_problem() or "")
    assert runtime.select_backend("auto").kind == "cpu"


def test_forcing_the_edge_tpu_without_libedgetpu_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "EDGETPU_LIBRARY", "libedgetpu-absent.so.1")

    with pytest.raises(runtime.RuntimeUnavailable, match="Install libedgetpu built for"):
        runtime.select_backend("edgetpu")


def test_choosing_the_backend_prints_nothing_to_stderr() -> None:
    """The runtimes' Delegate destructor complains ("Exception ignored in ...") when a delegate
    is built from a library that does not load; the probe keeps that from happening."""
    code = "from edge_app.runtime import select_backend; print(select_backend('auto').kind)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in {"cpu", "edgetpu"}
    assert done.stderr == ""


def test_a_delegate_error_of_several_lines_is_refused_in_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fails(_runtime: object) -> object:
        raise ValueError("Failed to load delegate from libedgetpu.so.1\nNo device found\n")

    monkeypatch.setattr(runtime, "_load_edgetpu_delegate", fails)

    with pytest.raises(runtime.RuntimeUnavailable) as raised:
        runtime.select_backend("edgetpu")
    assert "\n" not in str(raised.value)
    assert "did not load: Failed to load delegate from libedgetpu.so.1 No device found." in str(
        raised.value
    )


def test_models_not_compiled_for_the_edge_tpu_are_refused_when_it_is_asked_for(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A Coral present (its delegate loads: a stand-in here) and CPU-only models: `edgetpu`
    ran them on the CPU with a warning (and logged "the CPU was requested"); it now refuses,
    as the config documents, and `auto` says why it runs the CPU."""
    from edge_app.engine import Engine
    from edge_app.errors import UserError
    from edge_app.manifest import load_manifest

    assert all(spec.edgetpu is None for spec in load_manifest(models_dir).models.values())
    monkeypatch.setattr(runtime, "_load_edgetpu_delegate", lambda _runtime: object())

    with pytest.raises(UserError, match="not compiled for the Edge TPU") as raised:
        Engine.open(models_dir, backend="edgetpu")
    assert "edge-convert build --edgetpu" in str(raised.value)

    engine = Engine.open(models_dir, backend="auto", threads=1)
    assert engine.backend.kind == "cpu"
    assert engine.backend.reason == "the models are not compiled for the Edge TPU"
    assert "manifest has no Edge TPU models" in caplog.text


def test_more_threads_than_cores_are_cut_to_the_cores(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`--threads 64` on a 2-core machine peaked at 2,399 OS threads (a pool per interpreter,
    resized P-Nets included): an outside audit's finding."""
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)

    assert runtime.select_backend("cpu", 64).threads == 2
    assert "threads=64 is more than the 2 cores here: using 2" in caplog.text
    assert runtime.select_backend("cpu", 1).threads == 1
    assert runtime.select_backend("cpu").threads == 2
