"""Report outputs (`--json` of `edge-app eval`, the benchmarks' side files): a report never
replaces what is not a regular file (a device, a named pipe, a socket, a symbolic link), never
an input or a file in an input folder, and a models folder stays usable whatever stops a
benchmark that updates it. Every refusal is one line (exit 2), before the work.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from needs import unavailable

from edge_app.centering import MEAN_FILE, MEAN_KEY, load_mean
from edge_app.cohort import COHORT_FILE, COHORT_KEY
from edge_app.errors import UserError
from edge_app.manifest import MANIFEST_NAME, side_file
from edge_app.paths import REPO_MODELS

LFW_SAMPLE = Path(__file__).resolve().parent / "data" / "lfw_sample"


class Reached(RuntimeError):
    """Raised by a stub where the real work would start: a check came too late."""


def one_error(err: str) -> str:
    """The single error line of a run's stderr (no traceback)."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "ERROR" in line or "error:" in line]
    assert len(errors) == 1, err
    return errors[0]


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _device(path: Path) -> None:
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # as /dev/null
    except PermissionError:
        unavailable("making a device node needs root")


def _symlink(path: Path) -> None:
    target = path.parent / "target.txt"
    target.write_text("the file a link points to\n")
    path.symlink_to(target)


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


MAKERS: dict[str, Callable[[Path], None]] = {
    "named pipe": _fifo,
    "device": _device,
    "symbolic link": _symlink,
}


def _what(path: Path) -> tuple[int, str]:
    """What is at `path` (lstat's file type, and a link's target): unchanged after a refusal."""
    info = os.lstat(path)
    return stat.S_IFMT(info.st_mode), os.readlink(path) if path.is_symlink() else ""


# ---------------------------------------------------------------------------- the writers


@pytest.mark.parametrize("kind", list(MAKERS))
def test_a_report_never_replaces_what_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    from edge_app.reports import check_output, write_json, write_report

    path = tmp_path / "report.json"
    MAKERS[kind](path)
    before = _what(path)
    with pytest.raises(UserError) as refused:
        check_output(path, "--json")
    assert str(refused.value).startswith(f"--json {path}: it is a")
    assert "not a regular file" in str(refused.value)
    assert str(refused.value).endswith("(remove it or choose another path)")
    with pytest.raises(UserError, match=f"^--json {path}: it is a"):
        write_report(path, {"accuracy": 0.99})
    with pytest.raises(OSError, match="not a regular file"):
        write_json(path, {"accuracy": 0.99})
    assert _what(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["report.json", *(["target.txt"] if kind == "symbolic link" else [])]
    )


def test_a_socket_is_refused_as_a_report(tmp_path: Path, sockets: list[socket.socket]) -> None:
    from edge_app.reports import check_output

    path = tmp_path / "s"
    sock = socket.socket(socket.AF_UNIX)
    sockets.append(sock)
    sock.bind(str(path))
    with pytest.raises(UserError, match="it is a socket, not a regular file"):
        check_output(path, "--json")
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_reports_written_together_replace_none_when_one_cannot_be_written(
    tmp_path: Path,
) -> None:
    from edge_app.reports import write_reports

    first, second = tmp_path / "a.json", tmp_path / "b.md"
    first.write_text("old a\n")
    os.mkfifo(second)
    with pytest.raises(UserError, match=f"^--report {second}: it is a named pipe"):
        write_reports({"--json": (first, "new a\n"), "--report": (second, "new b\n")})
    assert first.read_text() == "old a\n" and stat.S_ISFIFO(os.lstat(second).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.md"]


# -------------------------------------------------------------------------- edge-app eval


@pytest.fixture
def stop_before_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every evaluation's first real work (reading the pair lists, opening the models)
    raises Reached; the default models folder is a copy's place in tmp_path (returned)."""
    import edge_app.commands.eval
    import edge_app.evaluate

    def reached(*args: object, **kwargs: object) -> Any:
        raise Reached("the evaluation started")

    monkeypatch.setattr(edge_app.evaluate, "lfw_job", reached)
    monkeypatch.setattr(edge_app.commands.eval, "_open_engine", reached)
    models = tmp_path / "default-models"
    models.mkdir()
    (models / MANIFEST_NAME).write_text("{}\n")
    monkeypatch.setattr(edge_app.commands.eval, "default_models_dir", lambda: models, raising=False)
    return models


def edge_app_cli(*argv: str) -> int:
    from edge_app.cli import main

    try:
        return main(list(argv))
    except SystemExit as stop:
        return int(stop.code or 0)


def _lfw_inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Copies of the sample pair list (as --pairs and --train) and an --images folder."""
    pairs, train = tmp_path / "pairs.txt", tmp_path / "train.txt"
    shutil.copy(LFW_SAMPLE / "pairs.txt", pairs)
    shutil.copy(LFW_SAMPLE / "pairs.txt", train)
    images = tmp_path / "images"
    images.mkdir()
    (images / "photo.jpg").write_bytes(b"a photo")
    return pairs, train, images


@pytest.mark.usefixtures("restore_logging", "stop_before_work")
@pytest.mark.parametrize("kind", list(MAKERS))
def test_eval_lfw_refuses_a_json_that_is_not_a_regular_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """`--json mynull` (a device node made with mknod) became a regular file, as a named pipe
    or a link did: run as root, `--json /dev/null` would have replaced the system's."""
    pairs, train, images = _lfw_inputs(tmp_path)
    out = tmp_path / "out.json"
    MAKERS[kind](out)
    before = _what(out)
    code = edge_app_cli(
        "eval", "lfw", "--pairs", str(pairs), "--train", str(train), "--images", str(images),
        "--json", str(out),
    )  # fmt: skip
    assert code == 2
    error = one_error(capsys.readouterr().err)
    assert f"--json {out}: it is a" in error and "not a regular file" in error
    assert _what(out) == before


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    ("json_at", "message"),
    [
        ("{pairs}", "--json {pairs} is also --pairs; each needs its own file"),
        ("{train}", "--json {train} is also --train; each needs its own file"),
        ("{tmp}/link-to-pairs.txt", "--json {tmp}/link-to-pairs.txt is also --pairs"),
        ("{images}/lfw.json", "--json {images}/lfw.json is inside --images {images}"),
        ("{models}/manifest.json", "--json {models}/manifest.json is inside --models {models}"),
        ("{default}/manifest.json", "--json {default}/manifest.json is inside --models"),
    ],
    ids=[
        "json is the pair list",
        "json is the train list",
        "json is a hard link to the pair list",
        "json in the images",
        "json is the models' manifest",
        "json is the default models' manifest",
    ],
)
def test_eval_lfw_refuses_a_json_over_its_inputs(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    stop_before_work: Path,
    json_at: str,
    message: str,
) -> None:
    """`--pairs p2.txt --json p2.txt` replaced the pair list (rc 0), `--models mcopy --json
    mcopy/manifest.json` left the models folder unusable."""
    pairs, train, images = _lfw_inputs(tmp_path)
    os.link(pairs, tmp_path / "link-to-pairs.txt")
    models = tmp_path / "models"
    models.mkdir()
    (models / MANIFEST_NAME).write_text("{}\n")
    names = {
        "pairs": pairs, "train": train, "images": images, "models": models, "tmp": tmp_path,
        "default": stop_before_work,
    }  # fmt: skip
    out = json_at.format(**names)
    argv = ["--pairs", str(pairs), "--train", str(train), "--images", str(images)]
    if "default" not in json_at:
        argv += ["--models", str(models)]
    before = {p: p.read_bytes() for p in (pairs, train, models / MANIFEST_NAME)}
    code = edge_app_cli("eval", "lfw", *argv, "--json", out)
    assert code == 2
    assert message.format(**names) in one_error(capsys.readouterr().err)
    assert {p: p.read_bytes() for p in before} == before


@pytest.mark.usefixtures("restore_logging", "stop_before_work")
@pytest.mark.parametrize(
    ("command", "folder", "inside"),
    [
        ("visits", "--lfw", "pairsDevTrain.txt"),
        ("visits", "--models", MANIFEST_NAME),
        ("liveness", "--data", "live/0001/0001_00_00_01_0.jpg"),
        ("liveness", "--models", MANIFEST_NAME),
        ("door", "--data", "report.json"),
        ("door", "--models", MANIFEST_NAME),
    ],
)
def test_every_evaluation_refuses_a_json_in_its_data_or_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, folder: str, inside: str
) -> None:
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "live" / "0001").mkdir(parents=True)
    (data / "pairsDevTrain.txt").write_text("1\nA\t1\t2\nA\t1\tB\t1\n")
    models = tmp_path / "models"
    models.mkdir()
    (models / MANIFEST_NAME).write_text("{}\n")
    where = data if folder != "--models" else models
    out = where / inside
    data_flag = "--lfw" if command == "visits" else "--data"
    code = edge_app_cli(
        "eval", command, data_flag, str(data), "--models", str(models), "--json", str(out)
    )
    assert code == 2
    assert f"--json {out} is inside {folder} {where}" in one_error(capsys.readouterr().err)
    assert (models / MANIFEST_NAME).read_text() == "{}\n"


@pytest.mark.usefixtures("restore_logging", "stop_before_work")
def test_eval_lfw_still_takes_a_json_apart_from_its_inputs(tmp_path: Path) -> None:
    pairs, train, images = _lfw_inputs(tmp_path)
    out = tmp_path / "old.json"
    out.write_text("{}\n")  # a regular file is replaced, as before
    with pytest.raises(Reached):
        edge_app_cli(
            "eval", "lfw", "--pairs", str(pairs), "--train", str(train), "--images",
            str(images), "--json", str(out),
        )  # fmt: skip


# ------------------------------------------------- benchmarks that update a models folder


def _models_copy(folder: Path) -> Path:
    """manifest.json, the centring mean and the cohort of the shipped models, in `folder`."""
    folder.mkdir()
    for name in (MANIFEST_NAME, MEAN_FILE, COHORT_FILE):
        shutil.copy(REPO_MODELS / name, folder / name)
    return folder


def _consistent(models: Path) -> None:
    """The models folder as the engine checks it: the mean and the cohort the manifest names
    are there and match their sha256; no file but those the manifest names is left over."""
    manifest = json.loads((models / MANIFEST_NAME).read_text())
    assert load_mean(models, manifest["preprocessing"]) is not None
    cohort = manifest["recognition"][COHORT_KEY]
    side_file(models, cohort["file"], cohort["sha256"], "cohort", "make cohort")
    named = {manifest["preprocessing"][MEAN_KEY]["file"], cohort["file"]}
    assert sorted(p.name for p in models.iterdir()) == sorted(
        {MANIFEST_NAME, MEAN_FILE, COHORT_FILE} | named
    )


def stopped(main: Callable[[list[str]], int], argv: list[str]) -> int | None:
    """main(argv)'s exit code; None when the KeyboardInterrupt escaped it (a traceback)."""
    try:
        return main(argv)
    except KeyboardInterrupt:  # caught: pytest would take it for the tester's Ctrl-C
        return None


class Stop:
    """os.replace that raises KeyboardInterrupt (Ctrl-C) at its `at`-th call, before or after
    doing it: a stop at any point of the writes."""

    def __init__(self, at: int, after: bool) -> None:
        self.at, self.after, self.calls = at, after, 0
        self.real = os.replace

    def __call__(self, src: Any, dst: Any, **kwargs: Any) -> None:
        self.calls += 1
        if self.calls == self.at and not self.after:
            raise KeyboardInterrupt
        self.real(src, dst, **kwargs)
        if self.calls == self.at:
            raise KeyboardInterrupt


STOPS = [(at, after) for at in (1, 2, 3, 4) for after in (False, True)]
STOP_IDS = [f"stop at replace {at} {'after' if after else 'before'}" for at, after in STOPS]


def _mean_inputs(root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`benchmarks.centering mean`'s arguments on a tiny LFW and cache; the threshold's
    derivation (the simulated doors) returns the shipped block."""
    import converter.recognition

    lfw = root / "data" / "lfw"
    lfw.mkdir(parents=True)
    pairs = "1\nA\t1\t2\nA\t1\tB\t1\n"
    (lfw / "pairsDevTrain.txt").write_text(pairs)
    (lfw / "pairsDevTest.txt").write_text(pairs)
    rng = np.random.default_rng(0)
    cache = root / "raw.npz"
    np.savez(
        cache,
        names=np.array(["A/A_0001.jpg", "A/A_0002.jpg", "B/B_0001.jpg"]),
        raw=rng.normal(size=(3, 512)).astype(np.float32),
        mirror=rng.normal(size=(3, 512)).astype(np.float32),
    )
    shipped = json.loads((REPO_MODELS / MANIFEST_NAME).read_text())["recognition"]
    monkeypatch.setattr(converter.recognition, "derive_from_embeddings", lambda *a, **k: shipped)
    return ["--data", str(root / "data"), "--cache", str(cache)]


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(("at", "after"), STOPS, ids=STOP_IDS)
def test_a_stopped_centring_mean_leaves_a_models_folder_that_matches_its_manifest(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    at: int,
    after: bool,
) -> None:
    """SIGINT during `make centring-mean` left facenet_mean.npy replaced and manifest.json not:
    the models folder failed its sha256 check, after a KeyboardInterrupt traceback."""
    from benchmarks.centering import main

    models = _models_copy(tmp_path / "models")
    argv = _mean_inputs(tmp_path, monkeypatch)
    monkeypatch.setattr(os, "replace", Stop(at, after))
    code = stopped(main, [*argv, "--models", str(models), "mean"])
    _consistent(models)
    assert code == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.strip().endswith("interrupted")


@pytest.mark.usefixtures("restore_logging")
def test_centring_mean_names_its_file_and_leaves_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.centering import main

    models = _models_copy(tmp_path / "models")
    # as an interrupted run leaves it: the manifest naming the mean by its content's name
    manifest = json.loads((models / MANIFEST_NAME).read_text())
    manifest["preprocessing"][MEAN_KEY]["file"] = "facenet_mean.0123456789ab.npy"
    shutil.copy(models / MEAN_FILE, models / "facenet_mean.0123456789ab.npy")
    (models / MANIFEST_NAME).write_text(json.dumps(manifest))
    argv = _mean_inputs(tmp_path, monkeypatch)
    assert main([*argv, "--models", str(models), "mean"]) == 0
    manifest = json.loads((models / MANIFEST_NAME).read_text())
    assert manifest["preprocessing"][MEAN_KEY]["file"] == MEAN_FILE
    assert manifest["preprocessing"][MEAN_KEY]["images"] == 3
    _consistent(models)


def _stub_cohort(monkeypatch: pytest.MonkeyPatch, models: Path) -> None:
    """`benchmarks.cohort ship` with its measurements stubbed: a cohort of 40 random unit
    rows, the shipped recognition block as the derived one."""
    import benchmarks.cohort as cohort

    shipped = json.loads((models / MANIFEST_NAME).read_text())["recognition"]
    rows = np.random.default_rng(1).normal(size=(40, 512)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)

    class Data:
        cohort_names = sim_names = ["x"]
        embedding_model = shipped[COHORT_KEY]["embedding_model"]

        def __init__(self, *args: object) -> None:
            pass

        def rows(self, names: object) -> np.ndarray:
            return rows

    class Normaliser:
        top_k = 10

    monkeypatch.setattr(cohort, "Data", Data)
    monkeypatch.setattr(cohort, "shipped_choice", lambda out: {"mode": "s-norm", "size": 40})
    monkeypatch.setattr(cohort, "normaliser_of", lambda data, chosen: Normaliser())
    monkeypatch.setattr(cohort, "derive", lambda *a, **k: dict(shipped))


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(("at", "after"), STOPS, ids=STOP_IDS)
def test_a_stopped_cohort_ship_leaves_a_models_folder_that_matches_its_manifest(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    at: int,
    after: bool,
) -> None:
    """`benchmarks.cohort ship` wrote cohort.npy, then the manifest (a stop between the two:
    a folder failing its check), and left cohort.tmp.npy behind on a failure."""
    from benchmarks.cohort import main

    models = _models_copy(tmp_path / "models")
    _stub_cohort(monkeypatch, models)
    cache = tmp_path / "raw.npz"
    cache.write_bytes(b"checked to exist only")
    monkeypatch.setattr(os, "replace", Stop(at, after))
    code = stopped(main, ["--cache", str(cache), "--models", str(models), "ship"])
    _consistent(models)
    assert code == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.usefixtures("restore_logging")
def test_cohort_ship_names_its_file_and_leaves_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.cohort import main

    models = _models_copy(tmp_path / "models")
    _stub_cohort(monkeypatch, models)
    cache = tmp_path / "raw.npz"
    cache.write_bytes(b"checked to exist only")
    assert main(["--cache", str(cache), "--models", str(models), "ship"]) == 0
    manifest = json.loads((models / MANIFEST_NAME).read_text())
    assert manifest["recognition"][COHORT_KEY]["file"] == COHORT_FILE
    assert manifest["recognition"][COHORT_KEY]["people"] == 40
    _consistent(models)


@pytest.mark.usefixtures("restore_logging")
def test_a_benchmark_report_that_cannot_be_written_is_refused_before_the_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`benchmarks.centering report --out nodir/c.json`: a traceback after the work."""
    import benchmarks.centering

    def reached(*args: object) -> Any:
        raise Reached("the report started")

    monkeypatch.setattr(benchmarks.centering, "load_cache", reached)
    out = tmp_path / "nodir" / "centering.json"
    code = benchmarks.centering.main(["--out", str(out), "report"])
    assert code == 2
    assert f"--out {out}: cannot write in {out.parent}" in capsys.readouterr().err


def test_a_full_disk_is_one_line_naming_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    from edge_app.reports import write_report

    def full(*args: object, **kwargs: object) -> Any:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tempfile, "mkstemp", full)
    out = tmp_path / "r.json"
    with pytest.raises(UserError, match=f"^--out {out}: cannot write it \\(No space left"):
        write_report(out, {}, "--out")
    assert not out.exists()


def test_reports_are_on_disk_before_their_renames_and_their_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An audit: `edge-app eval --json` renamed its report into place unsynced, and a power
    cut soon after the success left an empty file under the report's name. Each report is
    synced whole before any is renamed, the folder after each rename; a folder's fsync that
    fails (EINVAL on some file systems) does not fail the report."""
    from edge_app.reports import write_reports

    folder = tmp_path.resolve()
    first, second = folder / "a.json", folder / "b.md"
    steps: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        path, info = os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            steps.append(f"sync folder {path}")
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        steps.append(f"sync {Path(path).name.split('.')[1]} of {info.st_size} bytes")
        real_fsync(fd)

    def replace(source: str | Path, target: str | Path) -> None:
        real_replace(source, target)
        steps.append(f"rename {Path(target).name}")

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_reports({"--json": (first, "new a\n"), "--report": (second, "the new b\n")})

    assert steps == [
        "sync a of 6 bytes",  # all of it, flushed before the sync
        "sync b of 10 bytes",
        "rename a.json",
        f"sync folder {folder}",
        "rename b.md",
        f"sync folder {folder}",
    ]
    assert first.read_text() == "new a\n" and second.read_text() == "the new b\n"
    assert sorted(p.name for p in folder.iterdir()) == ["a.json", "b.md"]
