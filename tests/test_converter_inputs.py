"""`edge-convert` against a demanding user and a hostile input: bad numbers, outputs that
would overwrite inputs, damaged files, interrupted writes. Every refusal is one line (exit
2) and happens before the minutes of work; nothing here builds a model.
"""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from edge_app.manifest import MANIFEST_NAME

REPO_MANIFEST = Path(__file__).resolve().parent.parent / "models" / "tflite" / MANIFEST_NAME
DEEP_JSON = "[" * 100_000 + "]" * 100_000  # json.loads: RecursionError, not ValueError


class Reached(RuntimeError):
    """Raised by a stub where the real work would start: a check came too late."""


def edge_convert(*argv: str) -> int:
    """converter.cli.main as the console script runs it; SystemExit (argparse) as its code."""
    from converter.cli import main

    try:
        return main(list(argv))
    except SystemExit as stop:
        return int(stop.code or 0)


def one_error(err: str) -> str:
    """The single error line of a run's stderr (no traceback)."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "ERROR" in line or "error:" in line]
    assert len(errors) == 1, err
    return errors[0]


def fake_lfw(folder: Path) -> Path:
    """A folder that passes build's --lfw check (pairsDevTrain.txt, images/)."""
    (folder / "images" / "Rick_Perry").mkdir(parents=True)
    (folder / "images" / "Rick_Perry" / "Rick_Perry_0001.jpg").write_bytes(b"a photo")
    (folder / "pairsDevTrain.txt").write_text(
        "1\nRick_Perry\t1\t2\nRick_Perry\t1\tJoe_Nichols\t1\n"
    )
    return folder


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------------- options and --help


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    "argv",
    [
        ["build", "--frames", "0"],
        ["build", "--faces", "5"],
        ["build", "--liveness-frames", "-5"],
        ["train-head", "--cache", "{tmp}/c.npz", "--out", "{tmp}/o", "--threads", "-4"],
        ["train-head", "--cache", "{tmp}/c.npz", "--out", "{tmp}/o", "--jitters", "-1"],
        ["train-head", "--cache", "{tmp}/c.npz", "--out", "{tmp}/o", "--steps", "0"],
        ["train-head", "--cache", "{tmp}/c.npz", "--out", "{tmp}/o", "--learning-rate", "inf"],
        ["train-head", "--cache", "{tmp}/c.npz", "--out", "{tmp}/o", "--weight-decay", "nan"],
        ["train-head", "--cache", "{tmp}/c.npz", "--out", "{tmp}/o", "--holdout", "1"],
    ],
    ids=lambda argv: " ".join(argv[:1] + argv[-2:]),
)
def test_bad_numbers_are_refused_when_parsing(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every path in tmp_path: were a number let through, the command must not touch the
    # repository's models or docs (a build with the default --out replaces models/tflite).
    nowhere = str(tmp_path / "nowhere")
    safe = {
        "build": ["--out", str(tmp_path / "out"), "--calib", nowhere, "--lfw", nowhere],
        "train-head": ["--lfw", nowhere, "--models", nowhere],
    }[argv[0]]
    argv = [argv[0], *safe, *(a.replace("{tmp}", str(tmp_path)) for a in argv[1:])]
    assert edge_convert(*argv) == 2
    error = one_error(capsys.readouterr().err)
    option = argv[-2]
    assert error.startswith(f"edge-convert {argv[0]}: error: argument {option}")


def test_every_option_says_what_it_does_and_its_default() -> None:
    from converter.cli import build_parser

    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    silent = []
    for name, sub in commands.choices.items():
        for action in sub._actions:
            if not action.option_strings or action.required or action.dest == "help":
                continue
            if "default" not in (action.help or ""):
                silent.append(f"{name} {action.option_strings[-1]}")
    assert silent == []


# ----------------------------------------------------------------------- build's outputs


@pytest.fixture
def stop_before_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """The build's first real work (reading the calibration photos) raises Reached."""
    pytest.importorskip("tensorflow", reason="edge-convert build needs the converter extra")
    import converter.build

    def reached(source: Path) -> list[Path]:
        raise Reached("the build started")

    monkeypatch.setattr(converter.build, "calibration_paths", reached)


@pytest.mark.usefixtures("restore_logging", "stop_before_work")
@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (["--out", "{lfw}"], "--out {lfw} overlaps --calib"),
        (["--out", "{tmp}"], "--out {tmp} overlaps --calib"),
        (["--out", "{lfw}/images/models"], "overlaps --calib"),
        (["--out", "{tmp}/m", "--float-out", "{tmp}/m"], "overlaps --float-out"),
        (["--out", "{tmp}/m", "--float-out", "{tmp}/m/float"], "overlaps --float-out"),
        (["--out", "{tmp}/home"], "holds files a build does not write (notes.txt)"),
        (["--out", "{tmp}/home/notes.txt"], "is not a folder"),
        (["--out", "{tmp}/home/notes.txt/models"], "is a file, so no folder can be made"),
    ],
    ids=[
        "out is the LFW folder",
        "out holds the inputs",
        "out inside an input",
        "out is float-out",
        "float-out inside out",
        "out is a folder of other files",
        "out is a file",
        "out below a file",
    ],
)
def test_build_refuses_outputs_that_would_replace_other_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], outputs: list[str], message: str
) -> None:
    """The output folders are swapped in whole and the old ones deleted, after the build:
    an input (the LFW photos), another output or someone's files there would be lost."""
    lfw = fake_lfw(tmp_path / "lfw")
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("keep me")
    before = tree(tmp_path)
    argv = [a.format(tmp=tmp_path, lfw=lfw) for a in outputs]
    code = edge_convert("build", "--calib", str(lfw), "--lfw", str(lfw), *argv)
    assert code == 2
    assert message.format(tmp=tmp_path, lfw=lfw) in one_error(capsys.readouterr().err)
    assert tree(tmp_path) == before


@pytest.mark.usefixtures("restore_logging", "stop_before_work")
def test_build_accepts_a_models_folder_to_replace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An earlier build's folder (models, manifest, the float cascade) passes the checks."""
    lfw = fake_lfw(tmp_path / "lfw")
    out = tmp_path / "models" / "tflite"
    (out / "float").mkdir(parents=True)
    for name in (MANIFEST_NAME, "pnet_0.tflite", "cohort.npy", "float/probe.jpg"):
        (out / name).write_bytes(b"x")
    with pytest.raises(Reached):
        edge_convert("build", "--calib", str(lfw), "--lfw", str(lfw), "--out", str(out))
    assert "ERROR" not in capsys.readouterr().err


@pytest.mark.usefixtures("restore_logging", "stop_before_work")
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00not a protobuf" * 50, "not a TensorFlow frozen graph"),
        (b"", "a graph without 'input'"),
    ],
    ids=["garbage", "empty"],
)
def test_a_damaged_facenet_graph_is_refused_before_the_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    lfw = fake_lfw(tmp_path / "lfw")
    graph = tmp_path / "facenet.pb"
    graph.write_bytes(content)
    out = tmp_path / "models" / "tflite"
    code = edge_convert(
        "build", "--facenet", str(graph), "--calib", str(lfw), "--lfw", str(lfw), "--out", str(out)
    )
    assert code == 2
    assert message in one_error(capsys.readouterr().err)
    assert not (tmp_path / "models").exists()


def test_staged_folder_below_a_file_is_a_build_error(tmp_path: Path) -> None:
    from converter.build import BuildError, staged_folder

    (tmp_path / "file").write_text("x")
    with (
        pytest.raises(BuildError, match="cannot create the folder"),
        staged_folder(tmp_path / "file" / "models"),
    ):
        pass


def test_staged_copy_keeps_the_float_cascade_folder(tmp_path: Path) -> None:
    """`build --only liveness` works on a copy of the models folder: the float cascade
    (MODELS/float, listed in the manifest) must survive it."""
    from converter.build import staged_copy

    models = tmp_path / "tflite"
    (models / "float").mkdir(parents=True)
    (models / MANIFEST_NAME).write_text("{}")
    (models / "float" / "pnet_0.tflite").write_bytes(b"float p-net")
    with staged_copy(models) as staging:
        (staging / "minifasnet_v2.tflite").write_bytes(b"liveness")
    assert tree(models) == ["float", "float/pnet_0.tflite", MANIFEST_NAME, "minifasnet_v2.tflite"]
    assert (models / "float" / "pnet_0.tflite").read_bytes() == b"float p-net"


def test_a_build_interrupted_between_its_renames_gets_its_old_folder_back(tmp_path: Path) -> None:
    """The swap renames the old folder aside, then the new one in: stopped in between, the
    models folder is missing. The next build (or a failing one) puts the old one back."""
    from converter.build import staged_folder

    models = tmp_path / "tflite"
    previous = tmp_path / ".tflite.previous"
    previous.mkdir()
    (previous / MANIFEST_NAME).write_text("old")
    with pytest.raises(RuntimeError), staged_folder(models):
        raise RuntimeError("this build fails")
    assert (models / MANIFEST_NAME).read_text() == "old" and not previous.exists()
    with staged_folder(models) as staging:
        (staging / MANIFEST_NAME).write_text("new")
    assert (models / MANIFEST_NAME).read_text() == "new" and not previous.exists()


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    "manifest", [DEEP_JSON, '{"format_version": 1' + "0" * 5000 + "}", "[]"], ids=str.__len__
)
def test_only_liveness_reads_the_manifest_as_untrusted_json_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], manifest: str
) -> None:
    pytest.importorskip("tensorflow", reason="edge-convert build needs the converter extra")
    out = tmp_path / "models" / "tflite"
    out.mkdir(parents=True)
    (out / MANIFEST_NAME).write_text(manifest)
    weights = tmp_path / "minifasnet"
    weights.mkdir()
    (weights / "2.7_80x80_MiniFASNetV2.pth").write_bytes(b"not read: the manifest is first")
    code = edge_convert(
        "build", "--only", "liveness", "--liveness", str(weights), "--out", str(out)
    )
    assert code == 2
    assert f"{out / MANIFEST_NAME} is not usable" in one_error(capsys.readouterr().err)


@pytest.mark.usefixtures("restore_logging")
def test_a_failing_edgetpu_compiler_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`build --edgetpu`: the compiler failing (or leaving ops on the CPU) is reported, not a
    traceback."""
    import converter.build

    compiler = tmp_path / "bin" / "edgetpu_compiler"
    compiler.parent.mkdir()
    compiler.write_text("#!/bin/sh\necho 'Compilation failed: model not quantized'\nexit 1\n")
    compiler.chmod(compiler.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{compiler.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    (tmp_path / "pnet_0.tflite").write_bytes(b"TFL3")

    def build_that_compiles(options: object) -> Path:
        converter.build._compile(tmp_path, {"pnet_0": {"file": "pnet_0.tflite", "role": "pnet"}})
        return tmp_path

    monkeypatch.setattr(converter.build, "build", build_that_compiles)
    nowhere = str(tmp_path / "nowhere")
    code = edge_convert(
        "build", "--edgetpu", "--out", str(tmp_path / "out"), "--calib", nowhere, "--lfw", nowhere
    )
    assert code == 2
    assert "edgetpu_compiler failed (exit 1)" in one_error(capsys.readouterr().err)


@pytest.mark.usefixtures("restore_logging")
def test_float_cascade_checks_the_probe_photo_before_converting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tensorflow", reason="edge-convert needs the converter extra")
    import converter.build

    def reached(*args: object, **kwargs: object) -> bytes:
        raise Reached("converting")

    monkeypatch.setattr(converter.build, "convert_keras", reached)
    models = tmp_path / "models"
    models.mkdir()
    (models / MANIFEST_NAME).write_bytes(REPO_MANIFEST.read_bytes())
    missing = tmp_path / "missing.jpg"
    code = edge_convert("float-cascade", "--models", str(models), "--probe-photo", str(missing))
    assert code == 2
    assert str(missing) in one_error(capsys.readouterr().err)
    assert tree(models) == [MANIFEST_NAME]


# ----------------------------------------------------------------------------- train-head


@pytest.fixture
def head_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A tiny LFW folder (both pair lists, images/) and an embeddings cache that fits it;
    the jittered crops' embedding (minutes of FaceNet) raises Reached."""
    import converter.head

    lfw = tmp_path / "lfw"
    (lfw / "images").mkdir(parents=True)
    pairs = "1\nA\t1\t2\nA\t1\tB\t1\n"
    (lfw / "pairsDevTrain.txt").write_text(pairs)
    (lfw / "pairsDevTest.txt").write_text(pairs)
    names = ["A/A_0001.jpg", "A/A_0002.jpg", "B/B_0001.jpg"]
    cache = tmp_path / "raw.npz"
    rng = np.random.default_rng(0)
    np.savez(
        cache,
        names=np.array(names),
        raw=rng.normal(size=(3, 512)).astype(np.float32),
        mirror=rng.normal(size=(3, 512)).astype(np.float32),
    )

    def reached(*args: object, **kwargs: object) -> np.ndarray:
        raise Reached("embedding the jittered crops")

    monkeypatch.setattr(converter.head, "embed_jitters", reached)
    return lfw, cache


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--jitter-cache", "{tmp}"], "--jitter-cache {tmp} is a folder"),
        (["--jitter-cache", "{cache}"], "--jitter-cache {cache} is also --cache"),
        (["--jitter-cache", "{tmp}/j.npz", "--json", "{cache}"], "--json {cache} is also --cache"),
    ],
    ids=["jitter cache is a folder", "jitter cache is the cache", "json is the cache"],
)
def test_train_head_refuses_outputs_before_training(
    tmp_path: Path,
    head_inputs: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    lfw, cache = head_inputs
    before = cache.read_bytes()
    argv = [a.format(tmp=tmp_path, cache=cache) for a in extra]
    code = edge_convert(
        "train-head", "--cache", str(cache), "--lfw", str(lfw), "--out", str(tmp_path / "h"), *argv
    )
    assert code == 2
    assert message.format(tmp=tmp_path, cache=cache) in one_error(capsys.readouterr().err)
    assert cache.read_bytes() == before


def test_an_interrupted_jitter_cache_write_leaves_the_old_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from converter.head import _save_npz

    path = tmp_path / "jitter.npz"
    path.write_bytes(b"the cache of the last run")

    def interrupted(file: object, **arrays: object) -> None:
        if isinstance(file, str | Path):
            Path(file).write_bytes(b"half")
        else:
            file.write(b"half")  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _save_npz(path, jitter=np.zeros(3))
    assert tree(tmp_path) == ["jitter.npz"]
    assert path.read_bytes() == b"the cache of the last run"


# ------------------------------------------------------------------------------- validate


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    "earlier", ["", DEEP_JSON, "[]", '{"cascade": {}}'], ids=["empty", "deep", "list", "partial"]
)
def test_validate_only_liveness_checks_the_earlier_results_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], earlier: str
) -> None:
    """--only liveness adds to an earlier --json: a missing, hostile or foreign one is refused
    before the models are even opened (here there are none), not after minutes of work."""
    results = tmp_path / "quantization.json"
    results.write_text(earlier)
    code = edge_convert(
        "validate",
        "--only",
        "liveness",
        "--models",
        str(tmp_path / "no-models"),
        "--json",
        str(results),
        "--report",
        str(tmp_path / "q.md"),
        "--liveness-frames",
        "",
    )
    assert code == 2
    assert f"--only liveness adds to {results}" in one_error(capsys.readouterr().err)
    assert results.read_text() == earlier and not (tmp_path / "q.md").exists()


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (["--report", "{models}/manifest.json"], "--report {models}/manifest.json is inside"),
        (["--json", "{tmp}/r", "--report", "{tmp}/r"], "--report {tmp}/r is also --json"),
    ],
    ids=["report over the manifest", "report is the json"],
)
def test_validate_refuses_outputs_over_models_or_each_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], outputs: list[str], message: str
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / MANIFEST_NAME).write_text("{}")
    argv = [a.format(tmp=tmp_path, models=models) for a in outputs]
    code = edge_convert("validate", "--models", str(models), "--liveness-frames", "", *argv)
    assert code == 2
    assert message.format(tmp=tmp_path, models=models) in one_error(capsys.readouterr().err)
    assert (models / MANIFEST_NAME).read_text() == "{}"


def test_validate_writes_neither_file_when_the_report_cannot_be_made(tmp_path: Path) -> None:
    from converter.validate import _write_results

    json_out, report = tmp_path / "q.json", tmp_path / "q.md"
    json_out.write_text('{"old": true}\n')
    report.write_text("old report\n")
    figures = {"reproduced": 1.0, "landmark_error_of_box_mean": 0.01}
    broken = {"cascade": {"lfw": figures, "detection": figures}}  # no "models", "tensorflow"
    with pytest.raises(KeyError):
        _write_results(broken, json_out, report)
    assert json_out.read_text() == '{"old": true}\n' and report.read_text() == "old report\n"


def test_mtcnn_weights_that_are_not_the_pinned_files_are_never_unpickled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The package's weights are pickles: a replaced file is refused before joblib reads it."""
    import pickle

    from converter import mtcnn_models
    from converter.mtcnn_models import SourceError, load_mtcnn_weights

    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[()]]:
            return (marker.touch, ())

    (tmp_path / "pnet.lz4").write_bytes(pickle.dumps(Payload()))
    monkeypatch.setattr(mtcnn_models, "mtcnn_weights_dir", lambda: tmp_path)
    with pytest.raises(SourceError, match="not the file mtcnn 1.0.0 ships"):
        load_mtcnn_weights("pnet")
    assert not marker.exists()
