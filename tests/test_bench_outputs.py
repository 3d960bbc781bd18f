"""The benchmarks' output files (benchmarks/outputs.py): an output path that cannot be written
is refused before the work, in one line and exit code 2, and a result is written whole or not
at all.

An audit: a missing folder, a folder, a symbolic link or a named pipe (or a device, /dev/null
as root: edge_app.reports refuses it, tests/test_report_outputs.py) given as a benchmark's
--out, --json or --docs was a traceback at the end of minutes of work, and a full disk or a
stop part way through the write left half a JSON in place of the last good one.

Every script is run as `make bench` runs it (`python -m benchmarks.X`), its inputs pointing
at paths that do not exist or are not what they claim, and with an audit hook that ends it
(exit 97) the moment it opens a file of the models, of ../shared/data or of those inputs:
a refusal must come before any of that.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from needs import unavailable
from test_bench_report import write_samples_cache

from edge_app.errors import UserError
from edge_app.paths import REPO_MODELS, SHARED_DATA

REPO = Path(__file__).resolve().parents[1]  # the checkout these tests belong to
TIMEOUT = 120  # seconds; a refusal takes well under one
TOUCHED = 97  # the exit code of a run that opened a watched file (the work had started)
WATCH = "EDGE_BENCH_TEST_WATCHED"
# An audit hook for the benchmark's process (sitecustomize runs before the module does).
GUARD = f"""
import os
import sys

_watched = [p for p in os.environ.get({WATCH!r}, "").split(os.pathsep) if p]


def _hook(event, args):
    if event != "open" or not _watched or isinstance(args[0], int) or args[0] is None:
        return
    path = os.path.abspath(os.fsdecode(args[0]))
    if any(path == w or path.startswith(w + os.sep) for w in _watched):
        os.write(2, ("opened " + path + " before the refusal\\n").encode())
        os._exit({TOUCHED})


if _watched:
    sys.addaudithook(_hook)
"""

# Each benchmark that writes a file: its arguments (but the output), and its output's flag.
# {absent} is a folder that does not exist, {cache} a file that is no cache: what they name
# is read only once the work starts.
SCRIPTS: dict[str, tuple[list[str], str]] = {
    "alignment": (
        ["--data", "{absent}", "report", "--upright", "{cache}", "--roll", "{cache}"],
        "--out",
    ),
    "camera_domain": (["--data", "{absent}", "--cache", "{cache}"], "--out"),
    "centering": (["--data", "{absent}", "--cache", "{absent}/c.npz", "report"], "--out"),
    "centroid": (
        ["--data", "{absent}", "--cache", "{cache}", "--models", "{absent}"],
        "--out",
    ),
    "cohort": (
        ["--data", "{absent}", "--cache", "{cache}", "--models", "{absent}", "report"],
        "--out",
    ),
    "crowd": (["--data", "{absent}"], "--out"),
    "decision_cost": (["--data", "{absent}"], "--out"),
    "edge_cut": (["--data", "{absent}"], "--out"),
    "enrol_crops": (
        ["--data", "{absent}", "report", "--shipped", "{cache}", "--crops", "{cache}"]
        + ["--models", "{absent}"],
        "--out",
    ),
    "fastpath": (
        ["--accuracy", "auto", "--data", "{absent}", "--models", "{absent}"]
        + ["--float-models", "{absent}"],
        "--out",
    ),
    "gallery_scale": (["--models", "{absent}", "--sizes", "2"], "--out"),
    "gallery_targets": (["--data", "{absent}"], "--out"),
    "import_scale": (["--people", "2", "--rounds", "1"], "--out"),
    "gates": (
        ["--data", "{absent}", "--cache", "{absent}/g.npz", "--raw", "{absent}/r.npz"]
        + ["--models", "{absent}", "report"],
        "--out",
    ),
    "learned_site": (["--data", "{absent}", "--nuaa-cache", "{absent}/n.npz"], "--out"),
    "liveness_cost": (["--data", "{absent}", "--models", "{absent}"], "--out"),
    "lookalike_cost": ([], "--out"),
    "peer_accuracy": (
        ["--data", "{absent}", "--cache", "{absent}/p.npz", "--ours-cache", "{absent}/o.npz"]
        + ["--models", "{absent}"],
        "--out",
    ),
    "picture": (["--data", "{absent}"], "--out"),
    "pnet_layout": ([], "--out"),
    "projection": (
        ["--data", "{absent}", "--cache", "{cache}", "--models", "{absent}"],
        "--out",
    ),
    "relay_process": ([], "--json"),
    "run": (
        ["--no-docs", "--data", "{absent}", "--models", "{absent}"]
        + ["--float-models", "{absent}"],
        "--out",
    ),
    "same_person": (["--data", "{absent}", "--cache", "{absent}/s.npz", "report"], "--out"),
    "samples_per_person": (["--raw", "{absent}/r.npz", "--models", "{absent}"], "--out"),
    "site_centring": (
        ["--data", "{absent}", "--nuaa-cache", "{absent}/n.npz", "--cache", "{absent}/c.npz"],
        "--out",
    ),
    "site_poisoning": (["--data", "{absent}", "--cache", "{cache}"], "--out"),
    "site_restarts": (["--data", "{absent}", "--cache", "{cache}"], "--out"),
    "soak": (["--loops", "1"], "--out"),
    "tracker_cost": ([], "--out"),
    "web_connections": ([], "--json"),
}


def _missing_folder(work: Path) -> Path:
    return work / "no-such-folder" / "result.json"


def _folder(work: Path) -> Path:
    (work / "result.json").mkdir()
    return work / "result.json"


def _named_pipe(work: Path) -> Path:
    os.mkfifo(work / "result.json")  # writing to it would wait for a reader, for ever
    return work / "result.json"


def _symbolic_link(work: Path) -> Path:
    target = work / "target.json"
    target.write_text('{"the file the link points to": true}\n')
    (work / "result.json").symlink_to(target)
    return work / "result.json"


BAD: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing folder": (_missing_folder, "cannot write in"),
    "folder": (_folder, "is a folder"),
    "symbolic link": (_symbolic_link, "it is a symbolic link"),
    "named pipe": (_named_pipe, "it is a named pipe"),
}


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for PYTHONPATH whose sitecustomize installs the audit hook; checked to work
    (a run that opens a watched file ends with TOUCHED), or every "before the work" below
    would prove nothing."""
    folder = tmp_path_factory.mktemp("guard")
    (folder / "sitecustomize.py").write_text(GUARD)
    watched = folder / "watched.txt"
    watched.write_text("a watched file\n")
    env = {**os.environ, "PYTHONPATH": str(folder), WATCH: str(watched)}
    tried = subprocess.run(
        [sys.executable, "-c", f"open({str(watched)!r}).read(); print('read it')"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert tried.returncode == TOUCHED and tried.stdout == "", tried
    return folder


def bench(
    guard: Path,
    tmp: Path,
    module: str,
    argv: list[str],
    preexec_fn: Callable[[], None] | None = None,
    watch: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`python -m benchmarks.<module> argv` from the checkout, ended (TOUCHED) if it opens a
    file of the models, of ../shared/data or under tmp/absent or tmp/cache.npz (`watch`)."""
    data = [REPO / "models", REPO_MODELS, SHARED_DATA]  # REPO_MODELS: the scripts' default
    watched = [*data, tmp / "absent", tmp / "cache.npz"] if watch else []
    env = {
        **os.environ,
        "PYTHONPATH": str(guard),
        WATCH: os.pathsep.join(str(p) for p in watched),
    }
    return subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        preexec_fn=preexec_fn,
    )


def arguments(module: str, tmp: Path) -> list[str]:
    (tmp / "cache.npz").write_bytes(b"not a cache: the scripts check only that it is there\n")
    args, _ = SCRIPTS[module]
    return [a.format(absent=tmp / "absent", cache=tmp / "cache.npz") for a in args]


def tree(root: Path) -> dict[str, tuple[str, str]]:
    """Everything under `root`: kind, and a link's target or a file's text."""
    found: dict[str, tuple[str, str]] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            found[name] = ("link", os.readlink(path))
        elif stat.S_ISFIFO(path.lstat().st_mode):
            found[name] = ("named pipe", "")
        elif path.is_dir():
            found[name] = ("folder", "")
        else:
            found[name] = ("file", path.read_text(errors="replace"))
    return found


def refusal(run: subprocess.CompletedProcess[str], named: str) -> str:
    """The one error line of a refused run: exit code 2, `named` (the flag and the path) in
    it, no traceback, nothing on stdout (no work was started)."""
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert named in lines[0], lines[0]
    assert run.stdout == ""
    return lines[0]


@pytest.mark.parametrize("kind", list(BAD))
@pytest.mark.parametrize("module", list(SCRIPTS))
def test_a_benchmark_refuses_an_output_it_could_not_write_before_the_work(
    guard: Path, tmp_path: Path, module: str, kind: str
) -> None:
    make, says = BAD[kind]
    work = tmp_path / "work"
    work.mkdir()
    out = make(work)
    argv = arguments(module, tmp_path)
    before = tree(tmp_path)
    _, flag = SCRIPTS[module]
    line = refusal(bench(guard, tmp_path, module, [*argv, flag, str(out)]), f"{flag} {out}")
    assert says in line
    assert tree(tmp_path) == before  # nothing made, nothing replaced


# The scripts that write no file: what they measure is printed.
PRINT_ONLY = {
    "web_rss": "prints the table of docs/WEB.md",
    "worker": "answers run.py on stdout",
    "proc_subset": "prints the table of docs/BENCHMARKS.md",
}


def test_every_benchmark_that_writes_a_file_is_checked_here_and_refuses_in_one_line() -> None:
    """A new benchmark script is added to SCRIPTS (or to the --docs and folder cases below,
    or to PRINT_ONLY), and its main() runs under outputs.command."""
    scripts = {
        path.stem: path.read_text(encoding="utf-8")
        for path in (REPO / "benchmarks").glob("*.py")
        if 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")
    }
    writers = set(scripts) - set(PRINT_ONLY)
    assert writers == set(SCRIPTS) | set(DOCS_RUNS) | {"visits_variants"}
    assert sorted(n for n in writers if "@outputs.command\ndef main(" not in scripts[n]) == []


# ------------------------------------------------------------------- --docs and a folder


def _docs_file(work: Path) -> Path:
    (work / "docs").write_text("a file, not a folder\n")
    return work / "docs"


def _docs_with(name: str, make: Callable[[Path], None]) -> Callable[[Path], Path]:
    def made(work: Path) -> Path:
        (work / "docs").mkdir()
        make(work / "docs" / name)
        return work / "docs"

    return made


def _link(path: Path) -> None:
    path.parent.parent.joinpath("target.md").write_text("the file the link points to\n")
    path.symlink_to(path.parent.parent / "target.md")


DOCS = {
    "a file": (_docs_file, "Not a directory"),
    "BENCHMARKS.md a link": (_docs_with("BENCHMARKS.md", _link), "symbolic link"),
    "BENCHMARKS.md a folder": (_docs_with("BENCHMARKS.md", Path.mkdir), "is a folder"),
}
DOCS_RUNS = {
    "run": ["--data", "{absent}", "--models", "{absent}", "--float-models", "{absent}"],
    "report": ["--results", "{absent}/results.json"],
    "liveness_cost": ["--data", "{absent}", "--models", "{absent}"],
}


@pytest.mark.parametrize("case", list(DOCS))
@pytest.mark.parametrize("module", list(DOCS_RUNS))
def test_a_docs_folder_that_cannot_be_written_is_refused_before_the_work(
    guard: Path, tmp_path: Path, module: str, case: str
) -> None:
    make, says = DOCS[case]
    work = tmp_path / "work"
    work.mkdir()
    docs = make(work)
    argv = [a.format(absent=tmp_path / "absent") for a in DOCS_RUNS[module]]
    if module != "report":
        argv += ["--out", str(work / "result.json")]  # a good one
    before = tree(tmp_path)
    run = bench(guard, tmp_path, module, [*argv, "--docs", str(docs)])
    assert says in refusal(run, f"--docs {docs}")
    assert tree(tmp_path) == before


def test_liveness_cost_refuses_a_docs_folder_that_does_not_exist(
    guard: Path, tmp_path: Path
) -> None:
    """benchmarks.run and .report make the folder; liveness_cost never did, and failed at the
    end of the work."""
    docs = tmp_path / "no-such-docs"
    argv = ["--data", str(tmp_path / "absent"), "--models", str(tmp_path / "absent")]
    out = tmp_path / "result.json"
    run = bench(guard, tmp_path, "liveness_cost", [*argv, "--out", str(out), "--docs", str(docs)])
    assert "cannot write in" in refusal(run, f"--docs {docs}/BENCHMARKS.md")
    assert not docs.exists() and not out.exists()


VISITS = ["--population", "devtrain", "--evidence", "frame"]  # one report:
VISITS_REPORT = "visits_devtrain_frame.json"


@pytest.mark.parametrize(
    ("case", "says"),
    [("a file", "Not a directory"), ("a link", "symbolic link"), ("a folder", "is a folder")],
)
def test_visits_variants_refuses_a_report_it_could_not_write_before_the_work(
    guard: Path, tmp_path: Path, case: str, says: str
) -> None:
    """Its --out is a folder (made when missing), one report in it per variant."""
    out = tmp_path / "work"
    if case == "a file":
        out.write_text("a file, not a folder\n")
    else:
        out.mkdir()
        if case == "a link":
            (tmp_path / "target.json").write_text("{}\n")
            (out / VISITS_REPORT).symlink_to(tmp_path / "target.json")
        else:
            (out / VISITS_REPORT).mkdir()
    before = tree(tmp_path)
    argv = ["--lfw", str(tmp_path / "absent"), *VISITS, "--out", str(out)]
    line = refusal(bench(guard, tmp_path, "visits_variants", argv), f"--out {out}")
    assert says in line and VISITS_REPORT in line
    assert tree(tmp_path) == before


# ---------------------------------------------------------------- written whole, or not


def _files_of(limit: int) -> Callable[[], None]:
    def limited() -> None:  # in the child, before it runs: no file grows past `limit` bytes
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    return limited


def test_a_result_that_cannot_be_written_whole_leaves_the_last_one(
    guard: Path, tmp_path: Path
) -> None:
    """A file size limit stands in for a full disk: the write fails (EFBIG) part way through
    the JSON. The previous result was truncated and half replaced, after a traceback; it is
    now left as it was, with no temporary file beside it, and the failure is one line."""
    cache = tmp_path / "inputs" / "cache.npz"
    cache.parent.mkdir()
    write_samples_cache(cache)
    results = tmp_path / "results"
    results.mkdir()
    out = results / "samples_per_person.json"
    out.write_text('{"the last good result": true}\n')
    argv = ["--raw", str(cache), "--models", str(REPO_MODELS), "--out", str(out)]
    ok = bench(guard, tmp_path, "samples_per_person", argv, watch=False)  # it is written
    assert ok.returncode == 0, ok.stderr
    assert len(out.read_text()) > 1024
    out.write_text('{"the last good result": true}\n')

    run = bench(guard, tmp_path, "samples_per_person", argv, _files_of(1024), watch=False)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    (line,) = [line for line in run.stderr.splitlines() if line.strip()]
    assert line.startswith(f"error: --out {out}: ") and "File too large" in line, line
    assert out.read_text() == '{"the last good result": true}\n'
    assert sorted(p.name for p in results.iterdir()) == ["samples_per_person.json"]


# ---------------------------------------------------------------------------- the helper


def test_a_refusal_is_one_error_line_and_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import outputs

    @outputs.command
    def main(argv: list[str]) -> int:
        raise UserError(f"--out {argv[0]}: cannot write in nowhere (No such file or directory)")

    assert main(["x.json"]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "error: --out x.json: cannot write in nowhere (No such file or directory)\n"
    )
    assert captured.out == ""


@pytest.mark.parametrize("stop", ["Ctrl-C", "SIGTERM"])
def test_a_benchmark_stopped_while_it_writes_is_one_line_and_exit_code_130(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stop: str,
) -> None:
    """A stop once the new result is written beside the last one, before it replaces it
    (Ctrl-C, or a kill by `timeout` or systemd): the last result is left as it was, the
    temporary file is removed, and the stop is one "interrupted" line, exit code 130."""
    from benchmarks import outputs

    out = tmp_path / "result.json"
    out.write_text('{"the last good result": true}\n')
    staged: list[str] = []
    handler = signal.getsignal(signal.SIGTERM)

    def stopped(source: str, target: object) -> None:
        staged.append(Path(source).read_text())
        if stop == "Ctrl-C":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)  # its handler raises before the kill returns
        raise AssertionError("SIGTERM did not stop the benchmark")

    monkeypatch.setattr(os, "replace", stopped)

    @outputs.command
    def main() -> int:
        outputs.write_json(out, {"rows": [1, 2]}, "--out")
        return 0

    assert main() == 130
    assert staged == ['{\n  "rows": [\n    1,\n    2\n  ]\n}\n']  # it was written in full
    assert capsys.readouterr().err == "interrupted\n"
    assert out.read_text() == '{"the last good result": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
    assert signal.getsignal(signal.SIGTERM) is handler  # put back


def test_a_benchmark_writes_its_json_as_before(tmp_path: Path) -> None:
    """The text is json.dumps(data, indent) and a newline, as the committed results were
    written (a rerun with the same command gives the same file)."""
    import json

    from benchmarks import outputs

    data = {"rows": [{"n": 1, "rate": 0.5}], "when": "2026-01-01"}
    for indent in (1, 2):
        out = tmp_path / f"r{indent}.json"
        outputs.write_json(out, data, "--out", indent=indent)
        assert out.read_text() == json.dumps(data, indent=indent) + "\n"
    with pytest.raises(UserError, match="^" + re.escape(f"--json {tmp_path}/no/r.json: cannot")):
        outputs.write_json(tmp_path / "no" / "r.json", data, "--json")


@pytest.mark.parametrize("given", [["ours"], []], ids=["unknown system", "none"])
def test_a_system_run_does_not_know_is_refused_naming_the_ones_it_does(
    guard: Path, tmp_path: Path, given: list[str]
) -> None:
    """`--systems ours` (no such system) ran nothing and ended in a ZeroDivisionError."""
    run = bench(guard, tmp_path, "run", ["--no-docs", "--systems", *given])
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert "argument --systems" in run.stderr
    if given:
        assert "ours-auto" in run.stderr  # the choices are named


def test_a_run_with_no_system_it_can_measure_says_why_in_one_line(
    guard: Path, tmp_path: Path
) -> None:
    """Found by a review: with only systems that cannot run here (no Coral for ours-edgetpu)
    the run measured nothing and ended in a ZeroDivisionError, its work folder left in /tmp."""
    if not (SHARED_DATA / "lfw").is_dir():
        unavailable(f"no LFW photos at {SHARED_DATA / 'lfw'} (the run builds its frames first)")
    temp = tmp_path / "temp"
    temp.mkdir()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--no-docs",
            "--systems",
            "ours-edgetpu",
            "--out",
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(temp)},
        timeout=TIMEOUT,
        check=False,
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.startswith("error: no system to measure (ours-edgetpu: "), run.stderr
    assert list(temp.iterdir()) == [] and not (tmp_path / "out.json").exists()
