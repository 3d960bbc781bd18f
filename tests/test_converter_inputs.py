"""`edge-convert` against a demanding user and a hostile input: bad numbers, outputs that
would overwrite inputs, damaged files, interrupted writes. Every refusal is one line (exit
2) and happens before the minutes of work; nothing here builds a model.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_app.manifest import MANIFEST_NAME, ManifestError

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


def fake_lfw(folder: Path, people: int = 40) -> Path:
    """A folder that passes build's --lfw checks (pairsDevTrain.txt naming `people` people
    with 3 photos each, images/): 40 are enough for the threshold's simulated doors (20
    enrolled, 20 strangers)."""
    (folder / "images" / "Rick_Perry").mkdir(parents=True)
    (folder / "images" / "Rick_Perry" / "Rick_Perry_0001.jpg").write_bytes(b"a photo")
    names = [f"Person_{i:02d}" for i in range(people)]
    same = [f"{name}\t1\t2" for name in names]
    different = [f"{name}\t3\t{names[(i + 1) % people]}\t3" for i, name in enumerate(names)]
    (folder / "pairsDevTrain.txt").write_text("\n".join([str(people), *same, *different]) + "\n")
    for name in names:
        (folder / "images" / name).mkdir()
        for number in (1, 2, 3):
            (folder / "images" / name / f"{name}_{number:04d}.jpg").write_bytes(b"a photo")
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
        (["--out", "{tmp}/photos"], "holds files a build does not write (dog.jpg, family.jpg)"),
        (["--out", "{tmp}/m", "--float-out", "{tmp}/photos"], "--float-out {tmp}/photos holds"),
        (["--out", "{tmp}/album"], "is not empty and not a models folder (a build writes a"),
        (["--out", "{tmp}/fakes"], "its manifest.json is not usable"),
        (["--out", "{tmp}/m2"], "holds files a build does not write (float/notes.txt)"),
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
        "out is a folder of photos and their notes",
        "float-out is a folder of photos",
        "out holds only names a build writes, and no manifest",
        "out has a manifest that is not one",
        "out's float folder holds other files",
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
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("family.jpg", "dog.jpg", "album.json"):
        (photos / name).write_text("keep me")
    # Only names a build writes too: no manifest says it is a models folder.
    (tmp_path / "album").mkdir()
    for name in ("album.json", "faces.npy", "import.log"):
        (tmp_path / "album" / name).write_text("keep me")
    (tmp_path / "fakes").mkdir()
    (tmp_path / "fakes" / MANIFEST_NAME).write_text('{"my": "settings"}')
    (tmp_path / "m2" / "float").mkdir(parents=True)
    (tmp_path / "m2" / MANIFEST_NAME).write_bytes(REPO_MANIFEST.read_bytes())
    (tmp_path / "m2" / "float" / "notes.txt").write_text("keep me")
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
    for name in ("pnet_0.tflite", "cohort.npy", "float/probe.jpg"):
        (out / name).write_bytes(b"x")
    (out / MANIFEST_NAME).write_bytes(REPO_MANIFEST.read_bytes())
    with pytest.raises(Reached):
        edge_convert(
            "build", "--calib", str(lfw), "--lfw", str(lfw), "--out", str(out), "--no-liveness"
        )
    err = capsys.readouterr().err
    assert "ERROR" not in err
    assert f"--out {out} has cohort.npy, which a build does not make" in err


@pytest.mark.usefixtures("restore_logging", "stop_before_work")
def test_a_build_that_would_drop_the_liveness_models_is_refused_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Defect: rebuilding the shipped folder without --liveness silently removed its liveness
    models, and with them the door's check against printed photos."""
    lfw = fake_lfw(tmp_path / "lfw")
    out = tmp_path / "models" / "tflite"
    out.mkdir(parents=True)
    (out / MANIFEST_NAME).write_bytes(REPO_MANIFEST.read_bytes())  # lists two liveness models
    before = tree(tmp_path)
    code = edge_convert("build", "--calib", str(lfw), "--lfw", str(lfw), "--out", str(out))
    assert code == 2
    error = one_error(capsys.readouterr().err)
    assert "minifasnet_v1se.tflite, minifasnet_v2.tflite) and this build" in error
    assert "Pass --liveness DIR to build them again, or --no-liveness to drop them" in error
    assert tree(tmp_path) == before


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


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_build_removes_the_folders_it_made_and_only_those(
    tmp_path: Path, stop: type[BaseException]
) -> None:
    """`edge-convert build --out /new/a/b` stopped by Ctrl-C (or failing) removed its
    staging folders but left /new and /new/a, empty. Now the folders it made are removed
    when empty; a folder that was there before, and anything in it, stays."""
    from converter.build import float_dir_for, staged_folders

    kept = tmp_path / "kept"
    (kept / "notes").mkdir(parents=True)
    out = kept / "new" / "a" / "b"
    with pytest.raises(stop), staged_folders(float_dir_for(out), out) as stagings:
        assert all(staging.is_dir() for staging in stagings)  # in kept/new/a, made for them
        raise stop()
    assert tree(tmp_path) == ["kept", "kept/notes"]

    # Another output beside the new folders keeps them (and its parents) where it is.
    (kept / "new" / "other").mkdir(parents=True)
    with pytest.raises(stop), staged_folders(out):
        raise stop()
    assert tree(tmp_path) == ["kept", "kept/new", "kept/new/other", "kept/notes"]


def test_a_build_keeps_the_folders_it_made_for_its_models(tmp_path: Path) -> None:
    from converter.build import float_dir_for, staged_folders

    out = tmp_path / "new" / "a" / "b"
    with staged_folders(float_dir_for(out), out) as (new_float, new_out):
        (new_float / MANIFEST_NAME).write_text("float")
        (new_out / MANIFEST_NAME).write_text("int8")
    assert (out / MANIFEST_NAME).read_text() == "int8"
    assert (float_dir_for(out) / MANIFEST_NAME).read_text() == "float"
    assert sorted(p.name for p in (tmp_path / "new" / "a").iterdir()) == ["b", "float"]


def test_staged_copy_keeps_the_float_cascade_folder(tmp_path: Path) -> None:
    """`build --only liveness` works on a copy of the models folder: the float cascade
    (MODELS/float, listed in the manifest) must survive it."""
    from converter.build import staged_folders

    models = tmp_path / "tflite"
    (models / "float").mkdir(parents=True)
    (models / MANIFEST_NAME).write_text("{}")
    (models / "float" / "pnet_0.tflite").write_bytes(b"float p-net")
    with staged_folders(models, copy=True) as (staging,):
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
    line = one_error(capsys.readouterr().err)
    assert f"the probe photo {missing} does not exist; give a photo of one face" in line
    # A sweep: a mistyped --probe-photo was said to be "part of the source checkout
    # (tests/data)", the default photo's words, which sent the user to reinstall.
    assert "source checkout" not in line
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


def test_validate_only_liveness_takes_the_results_a_full_validate_wrote(tmp_path: Path) -> None:
    """--only liveness refused every full result that had a liveness section, the committed
    docs/quantization.json too ("not a validation result"): its check rendered the report
    without liveness but with the verdicts of the result with it. So `make validate` then
    `make validate-liveness` could never work."""
    from converter.validate import _earlier_results
    from edge_app.paths import REPO_ROOT

    committed = REPO_ROOT / "docs" / "quantization.json"
    copy = tmp_path / "quantization.json"
    shutil.copy(committed, copy)
    results = _earlier_results(copy)
    assert results["liveness"]["decision_agreement"] > 0.9  # a full result, liveness in it


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


@pytest.mark.usefixtures("restore_logging")
def test_validate_refuses_float_models_that_are_not_there_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by an audit: a mistyped --float-models fell back to the float models beside
    --models and ran for minutes, comparing against models the user did not name."""
    code = edge_convert(
        "validate", "--float-models", str(tmp_path / "flaot"), "--json", str(tmp_path / "r")
    )
    assert code == 2
    assert f"--float-models {tmp_path / 'flaot'}: does not exist" in one_error(
        capsys.readouterr().err
    )
    assert sorted(tmp_path.iterdir()) == []


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


# ------------------------------------------------------- what an outside audit of the build found

SAMPLE_PHOTOS = sorted((Path(__file__).resolve().parent / "data" / "lfw_sample").rglob("*.jpg"))


@pytest.mark.usefixtures("restore_logging", "stop_before_work")
def test_an_lfw_list_too_small_for_the_threshold_is_refused_before_the_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Defect: an --lfw of 12 people built "successfully" with threshold -1.0 and NaN in the
    manifest, which the door then refused to load: the working models were replaced by
    unusable ones. Too few people is refused before anything is built."""
    lfw = fake_lfw(tmp_path / "lfw", people=12)
    out = tmp_path / "models" / "tflite"
    code = edge_convert("build", "--calib", str(lfw), "--lfw", str(lfw), "--out", str(out))
    assert code == 2
    error = one_error(capsys.readouterr().err)
    assert "pairsDevTrain.txt names 12 people, 12 of them with more than 2 photos" in error
    assert "a simulated door enrols 12 and leaves 0 as strangers" in error
    assert not (tmp_path / "models").exists()


@pytest.mark.usefixtures("restore_logging", "stop_before_work")
def test_an_lfw_folder_without_the_images_its_list_names_is_refused_before_the_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A converter audit: --lfw holding the pair lists but no images/ was refused only at
    step 5, when the threshold's images are read, after minutes of conversion."""
    lfw = fake_lfw(tmp_path / "lfw")
    shutil.rmtree(lfw / "images" / "Person_07")
    out = tmp_path / "models" / "tflite"
    code = edge_convert("build", "--calib", str(lfw), "--lfw", str(lfw), "--out", str(out))
    assert code == 2
    error = one_error(capsys.readouterr().err)
    assert f"3 of the 120 images pairsDevTrain.txt names are not in {lfw / 'images'}" in error
    assert "Person_07/Person_07_0001.jpg" in error
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize(
    ("threshold", "identified"), [(-1.0, 0.9), (1.0001, 0.0), (0.58, 0.1), (float("nan"), 0.9)]
)
def test_a_threshold_no_door_could_use_is_refused(threshold: float, identified: float) -> None:
    """A FaceNet that ignores its input (threshold above 1, nobody identified), no strangers
    to set it on (-1: everybody), or one identifying few people: never written."""
    from converter.recognition import check_recognition
    from edge_app.errors import UserError

    with pytest.raises(UserError, match="does not tell people apart"):
        check_recognition(
            {"threshold": threshold, "candidates": [{"identified": identified}]}, "facenet.pb"
        )
    check_recognition({"threshold": 0.584, "candidates": [{"identified": 0.95}]}, "facenet.pb")


def test_a_population_without_strangers_is_refused() -> None:
    from converter.recognition import GALLERY_SIZE, derive_from_embeddings
    from edge_app.errors import UserError

    rng = np.random.default_rng(0)
    names = [f"P{p:02d}/P{p:02d}_{i:04d}.jpg" for p in range(GALLERY_SIZE) for i in range(4)]
    rows = rng.standard_normal((len(names), 512)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    with pytest.raises(UserError, match="no strangers or no genuine probes"):
        derive_from_embeddings(rows, names)


def test_a_manifest_with_a_number_that_is_not_finite_is_never_written(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow", reason="converter.build needs the converter extra")
    import json

    from converter.build import BuildError, _write_manifest

    data = json.loads(REPO_MANIFEST.read_text())
    data["calibration"]["note"] = float("nan")  # a section the device reads unchecked
    with pytest.raises(BuildError, match="would not be valid JSON"):
        _write_manifest(tmp_path, data)
    data["calibration"]["note"] = 0.0
    data["recognition"]["threshold"] = float("nan")  # the device's own check refuses it
    with pytest.raises(ManifestError, match="recognition.threshold: nan is not a finite number"):
        _write_manifest(tmp_path, data)
    assert list(tmp_path.iterdir()) == []


def two_built_folders(tmp_path: Path) -> tuple[Path, Path]:
    """An int8 folder and its float twin from an earlier build (one file each: "old")."""
    pytest.importorskip("tensorflow", reason="converter.build needs the converter extra")
    out, float_out = tmp_path / "tflite", tmp_path / "float"
    for folder in (out, float_out):
        folder.mkdir()
        (folder / MANIFEST_NAME).write_text("old")
    return out, float_out


def test_a_write_that_fails_replaces_nothing_and_is_one_line(tmp_path: Path) -> None:
    """Defect: a full disk ended the build with an OSError traceback. It is a BuildError
    naming the file and the reason; the old folders stay and no staging is left."""
    import errno

    out, float_out = two_built_folders(tmp_path)
    before = tree(tmp_path)
    from converter.build import BuildError, staged_folders

    full = OSError(errno.ENOSPC, "No space left on device", str(out / "facenet.tflite"))
    with pytest.raises(BuildError) as caught, staged_folders(float_out, out) as stagings:
        (stagings[1] / "facenet.tflite").write_bytes(b"half")
        raise full
    assert str(caught.value).startswith(
        f"cannot write the models ({out / 'facenet.tflite'}: No space left on device); "
        "nothing was replaced"
    )
    assert tree(tmp_path) == before


def test_two_folders_are_swapped_in_together_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect: with --float-out a mount point, its rename failed after the int8 folder was
    already replaced: the two folders came from two builds, and a 27 MB staging folder was
    left. A rename that fails now puts back every folder already swapped."""
    import errno

    out, float_out = two_built_folders(tmp_path)
    before = tree(tmp_path)
    from converter.build import BuildError, staged_folders

    rename = Path.rename

    def busy_for_out(self: Path, target: Any) -> Path:
        if Path(target) == out and self.name.startswith(".tflite.") and "previous" not in self.name:
            raise OSError(errno.EBUSY, "Device or resource busy", str(self))
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", busy_for_out)
    with (
        pytest.raises(BuildError, match="Device or resource busy.*the old folders are as"),
        staged_folders(float_out, out) as (new_float, new_out),
    ):
        (new_float / MANIFEST_NAME).write_text("new")
        (new_out / MANIFEST_NAME).write_text("new")
    assert tree(tmp_path) == before
    assert (float_out / MANIFEST_NAME).read_text() == (out / MANIFEST_NAME).read_text() == "old"


def test_a_mount_point_is_refused_as_an_output_folder() -> None:
    pytest.importorskip("tensorflow", reason="converter.build needs the converter extra")
    from converter.build import BuildError, check_model_folder

    proc = Path("/proc")  # a mount point on every Linux (the door runs on Linux only)
    assert os.path.ismount(proc)
    with pytest.raises(BuildError, match="is a mount point"):
        check_model_folder(proc, "--out", {}, replaced=True)


@pytest.mark.parametrize("camera", [(480, 640), (160, 96), (48, 48), (640, 480)])
def test_door_frames_fit_every_camera_the_option_accepts(camera: tuple[int, int]) -> None:
    """Defect: a portrait camera (480x640) or a low one (160x96) crashed step 2 with
    ValueError from the random face size."""
    pytest.importorskip("tensorflow", reason="converter.calibration needs the converter extra")
    from converter.calibration import door_frames

    frames = door_frames(SAMPLE_PHOTOS, camera, 6)
    assert len(frames) == 6
    assert all(frame.shape == (camera[1], camera[0], 3) for frame in frames)


def test_fewer_calibration_photos_than_a_door_frame_needs_are_refused(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow", reason="converter.calibration needs the converter extra")
    from converter.calibration import CalibrationError, calibration_paths, door_frames

    for photo in SAMPLE_PHOTOS[:2]:
        (tmp_path / photo.name).write_bytes(photo.read_bytes())
    with pytest.raises(CalibrationError, match="2 calibration image\\(s\\); a door frame is made"):
        calibration_paths(tmp_path)
    with pytest.raises(CalibrationError, match="give at least 3"):
        door_frames(SAMPLE_PHOTOS[:2], (640, 480), 4)


@pytest.mark.usefixtures("restore_logging")
def test_sigterm_stops_a_command_as_ctrl_c_does(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Defect: SIGTERM or SIGHUP (systemd, `timeout`, a closed terminal) killed a build and
    left its 92 MB staging folder behind. They now end it as Ctrl-C does (the staging folders
    are removed on the way out), and the handlers are restored afterwards."""
    import signal
    import time

    import converter.cli

    def stopped(args: argparse.Namespace) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr(converter.cli, "_lint", stopped)
    before = signal.getsignal(signal.SIGTERM)
    assert edge_convert("lint", "x.tflite") == 130
    assert "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before


def test_ctrl_c_in_a_conversion_prints_no_converter_output(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("tensorflow", reason="converter.build needs the converter extra")
    from converter.build import _quiet

    with pytest.raises(KeyboardInterrupt), _quiet():
        os.write(1, b"TensorFlow banner\n")
        raise KeyboardInterrupt
    assert "converter output" not in caplog.text
    with pytest.raises(RuntimeError), _quiet():
        os.write(1, b"TensorFlow banner\n")
        raise RuntimeError("conversion failed")
    assert "converter output:\nTensorFlow banner" in caplog.text


def test_a_full_disk_in_a_conversion_names_the_file_without_the_converter_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A converter audit: a build on a full disk printed 76 lines of TensorFlow's output
    before its one-line error, which named no file."""
    pytest.importorskip("tensorflow", reason="converter.build needs the converter extra")
    from converter.build import _quiet, _save
    from edge_app.errors import os_reason as _os_reason

    def full(path: Path, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError) as raised, _quiet():
        os.write(1, b"TensorFlow banner\n")
        _save(tmp_path, "rnet", b"a model", "rnet", None)
    assert "converter output" not in caplog.text
    assert _os_reason(raised.value) == f"{tmp_path / 'rnet.tflite'}: No space left on device"


@pytest.mark.usefixtures("restore_logging", "stop_before_work")
def test_out_dot_is_the_folder_it_is_run_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Defect: `--out .` failed with "ValueError: PosixPath('.') has an empty name"."""
    lfw = fake_lfw(tmp_path / "lfw")
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path / "models")
    with pytest.raises(Reached):
        edge_convert("build", "--calib", str(lfw), "--lfw", str(lfw), "--out", ".")
    assert "Traceback" not in capsys.readouterr().err


def test_a_second_build_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    """Two builds into one folder at once both said "built into" and the later one silently
    replaced the earlier's models."""
    from converter.build import BuildError, staged_folders

    out, float_out = two_built_folders(tmp_path)
    before = tree(tmp_path)
    with staged_folders(float_out, out) as (new_float, new_out):
        with (
            pytest.raises(BuildError, match="another edge-convert build is writing into"),
            staged_folders(out),
        ):
            pass
        (new_float / MANIFEST_NAME).write_text("first")
        (new_out / MANIFEST_NAME).write_text("first")
    assert (out / MANIFEST_NAME).read_text() == "first"
    assert sorted(tree(tmp_path)) == sorted(before)  # no lock file, no staging left


def test_staging_left_by_a_killed_build_is_removed_by_the_next(tmp_path: Path) -> None:
    """SIGKILL leaves a build's staging folders (28 MB), and every later build left them."""
    from converter.build import staged_folder

    out, _ = two_built_folders(tmp_path)
    left = out.with_name(f".{out.name}.k1ll3d00")
    left.mkdir()
    (left / "pnet_0.tflite").write_bytes(b"half")
    with staged_folder(out) as new_out:
        (new_out / MANIFEST_NAME).write_text("new")
    assert not left.exists() and (out / MANIFEST_NAME).read_text() == "new"


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("faces", [0, 2])
def test_float_cascade_refuses_a_probe_photo_without_exactly_one_face(
    faces: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An audit: a dog, or a photo of 24 people, was taken as the probe: on a frame without a
    face R-Net and O-Net never run, so `cascade = auto` was timed on the wrong work."""
    pytest.importorskip("tensorflow", reason="edge-convert needs the converter extra")
    import cv2

    import converter.build
    from edge_app.paths import REPO_MODELS, REPO_ROOT

    def reached(*args: object, **kwargs: object) -> bytes:
        raise Reached("converting")

    monkeypatch.setattr(converter.build, "convert_keras", reached)
    models = tmp_path / "models"
    shutil.copytree(REPO_MODELS, models)
    before = tree(models)
    face = cv2.imread(str(REPO_ROOT / "tests/data/lfw_sample/Donald_Pettit/Donald_Pettit_0001.jpg"))
    photo = tmp_path / "probe.png"
    assert face is not None
    grey = np.full_like(face, 100)
    cv2.imwrite(str(photo), np.hstack([face if faces else grey, face if faces == 2 else grey]))
    code = edge_convert("float-cascade", "--models", str(models), "--probe-photo", str(photo))
    assert code == 2
    assert f"shows {faces} faces the int8 cascade finds: it must show one" in one_error(
        capsys.readouterr().err
    )
    assert tree(models) == before


@pytest.mark.usefixtures("restore_logging")
def test_a_float_cascade_manifest_cut_by_a_full_disk_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An audit: the disk filled while the new manifest was written to .manifest.json.new,
    outside the cleanup that removes it: the half file stayed. The conversions are stubbed
    (the float models are those of the repository's manifest); the write fails half way."""
    pytest.importorskip("tensorflow", reason="edge-convert needs the converter extra")

    models = tmp_path / "models"
    models.mkdir()
    data = json.loads(REPO_MANIFEST.read_text())
    section = data.pop("float_cascade")  # a models folder from before the float cascade
    (models / MANIFEST_NAME).write_text(json.dumps(data, indent=2) + "\n")
    before = (models / MANIFEST_NAME).read_bytes()
    _stub_float_conversions(monkeypatch, section)
    write_text = Path.write_text

    def full_disk(path: Path, text: str, *args: Any, **kwargs: Any) -> int:
        if path.name != f".{MANIFEST_NAME}.new":
            return write_text(path, text, *args, **kwargs)
        write_text(path, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(Path, "write_text", full_disk)
    code = edge_convert("float-cascade", "--models", str(models))
    assert code == 2
    assert "No space left on device" in one_error(capsys.readouterr().err)
    assert (models / MANIFEST_NAME).read_bytes() == before
    assert tree(models) == [MANIFEST_NAME]  # no .manifest.json.new, no float folder


def _stub_float_conversions(monkeypatch: pytest.MonkeyPatch, section: dict) -> None:
    """float-cascade's conversions stubbed: the float models are those of `section`."""
    import converter.build

    def shipped(float_dir: Path, built: dict, staging: Path, *args: object) -> dict:
        (staging / "pnet_0.tflite").write_bytes(b"a float model")
        return section

    for stub, value in [
        ("_check_probe_face", None),
        ("build_pnet", None),
        ("build_rnet", None),
        ("build_onet", None),
        ("convert_keras", b""),
        ("_same_shapes", None),
    ]:
        monkeypatch.setattr(converter.build, stub, lambda *args, value=value: value)
    monkeypatch.setattr(converter.build, "_save", lambda *args: {"file": f"{args[1]}.tflite"})
    monkeypatch.setattr(converter.build, "ship_float_cascade", shipped)


@pytest.mark.usefixtures("restore_logging")
def test_float_cascade_waits_for_no_build_and_never_writes_over_a_new_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An audit: float-cascade run while a build wrote into the same folder read the old
    manifest, and replaced the build's new one with it: every model a sha256 mismatch, and
    the door refused to start. It now holds the folder as a build does (a build under way
    refuses it), and a manifest changed under it by anything else is left as it is."""
    pytest.importorskip("tensorflow", reason="edge-convert needs the converter extra")
    from converter.build import staged_folders

    models = tmp_path / "models"
    models.mkdir()
    data = json.loads(REPO_MANIFEST.read_text())
    section = data.pop("float_cascade")
    (models / MANIFEST_NAME).write_text(json.dumps(data, indent=2) + "\n")
    _stub_float_conversions(monkeypatch, section)
    before = tree(models)
    with staged_folders(models, copy=True):  # a build into tmp_path/models is under way
        code = edge_convert("float-cascade", "--models", str(models))
    assert code == 2
    assert "another edge-convert build is writing into" in one_error(capsys.readouterr().err)
    assert tree(models) == before

    import converter.build

    changed = json.dumps({**data, "created_utc": "2099-01-01T00:00:00Z"}, indent=2) + "\n"
    shipped = converter.build.ship_float_cascade

    def meanwhile(*args: Any) -> dict:  # a writer that holds no lock, during the conversion
        (models / MANIFEST_NAME).write_text(changed)
        return shipped(*args)

    monkeypatch.setattr(converter.build, "ship_float_cascade", meanwhile)
    code = edge_convert("float-cascade", "--models", str(models))
    assert code == 2
    assert "changed while the float cascade was built" in one_error(capsys.readouterr().err)
    assert (models / MANIFEST_NAME).read_text() == changed
    assert tree(models) == [MANIFEST_NAME]


def test_a_failed_copy_names_the_file_it_was_writing() -> None:
    """An audit: a full disk during float-cascade named the float model in /tmp it was
    copying from (shutil sets filename to the source), not the file it could not write."""
    from edge_app.errors import os_reason as _os_reason

    copy = OSError(errno.ENOSPC, "No space left on device", "/tmp/edge-float-x/rnet.tflite")
    copy.filename2 = "/models/.float.abc/rnet.tflite"
    assert _os_reason(copy) == "/models/.float.abc/rnet.tflite: No space left on device"
    one = OSError(errno.EACCES, "Permission denied", "/models/manifest.json")
    assert _os_reason(one) == "/models/manifest.json: Permission denied"
    assert _os_reason(OSError(errno.EIO, "Input/output error")) == "Input/output error"


@pytest.mark.usefixtures("restore_logging")
def test_build_refuses_only_liveness_with_no_liveness(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An audit: `build --only liveness --no-liveness` started building."""
    code = edge_convert(
        "build", "--only", "liveness", "--no-liveness", "--out", str(tmp_path / "m")
    )
    assert code == 2
    assert "--only liveness builds the liveness models, which --no-liveness drops" in one_error(
        capsys.readouterr().err
    )
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_whose_archive_unpacks_to_more_than_a_checkpoint_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by fuzzing: a 3 MB .pt whose one zip record inflates to 3 GiB took 3.9 GB before
    torch refused it (the size checked was the file's, not what its records declare). Here the
    limit is lowered to 1 MB and the record is 2 MB of zeros, a few kB deflated; torch is never
    asked (a stand-in with no attributes would fail any use)."""
    import types
    import zipfile

    from converter import torch_weights
    from converter.mtcnn_models import SourceError

    monkeypatch.setattr(torch_weights, "MAX_CHECKPOINT_BYTES", 1024 * 1024)
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/data/0", bytes(2 * 1024 * 1024))
    assert path.stat().st_size < 20_000
    with pytest.raises(SourceError, match=r"its archive unpacks to 2097\d+ bytes, more than"):
        torch_weights.load_checkpoint(types.SimpleNamespace(), path)  # type: ignore[arg-type]


def test_validate_without_float_models_says_to_build_them_all(tmp_path: Path) -> None:
    """Found by a walkthrough: with no models/float at all, validate said to rebuild the
    liveness models only (`edge-convert build --only liveness`), which writes none of the
    other float models it compares with. It names the whole build."""
    from converter.validate import _float_twin
    from edge_app.errors import UserError

    spec = argparse.Namespace(file="minifasnet_v2.tflite")
    with pytest.raises(UserError) as refused:
        _float_twin(spec, tmp_path / "float", engine=None)  # type: ignore[arg-type]
    assert str(refused.value) == (
        f"{tmp_path / 'float'}: no float models to compare the int8 ones with; build them with "
        "`make models` (edge-convert build writes both)"
    )


def test_a_special_file_given_as_an_input_is_named_for_what_it_is(tmp_path: Path) -> None:
    """Found by an audit: a device or named pipe given as the calibration folder, the FaceNet
    file or the embeddings cache was said not to exist (and the cache's message suggested
    writing into the pipe)."""
    from converter.calibration import CalibrationError, calibration_paths
    from converter.head import HeadError, load_cache
    from converter.mtcnn_models import SourceError
    from converter.sources import facenet_source

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(CalibrationError, match="/dev/zero is a device, not a folder"):
        calibration_paths(Path("/dev/zero"))
    with pytest.raises(CalibrationError, match="absent does not exist"):
        calibration_paths(tmp_path / "absent")
    with pytest.raises(SourceError, match="/dev/zero: is a device, not a file"):
        facenet_source(Path("/dev/zero"))
    with pytest.raises(HeadError, match="fifo: is a named pipe, not a file; give the embeddings"):
        load_cache(fifo)
    with pytest.raises(HeadError, match="absent.npz: no such embeddings cache; build it"):
        load_cache(tmp_path / "absent.npz")


def _refused_before_tensorflow_loads(tmp_path: Path, arguments: list[str], refusal: str) -> None:
    """`edge-convert build ARGUMENTS` exits 2 saying `refusal`, with TensorFlow never imported."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from converter.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print('tensorflow loaded:', 'tensorflow' in sys.modules)\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "build", *arguments, "--out", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert refusal in done.stderr
    assert "tensorflow loaded: False" in done.stdout
    assert "cuda" not in done.stderr.lower() and "oneDNN" not in done.stderr


def test_a_build_s_missing_calibration_folder_is_refused_before_tensorflow_loads(
    tmp_path: Path, shared_data: Path
) -> None:
    """Found by an audit: `edge-convert build --calib MISSING` imported TensorFlow first (the
    mtcnn package's source identity, and the check that it is installed): seconds of waiting
    and its start-up lines before the one line that said what was wrong. (The LFW folder
    must be a real one: it is checked before the calibration folder.)"""
    missing = tmp_path / "missing"
    arguments = ["--lfw", str(shared_data / "lfw"), "--calib", str(missing)]
    _refused_before_tensorflow_loads(
        tmp_path, arguments, f"calibration folder {missing} does not exist"
    )


def test_a_build_s_missing_lfw_is_refused_before_tensorflow_loads(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    arguments = ["--lfw", str(missing), "--calib", str(tmp_path)]
    _refused_before_tensorflow_loads(tmp_path, arguments, "no pairsDevTrain.txt there")


def test_calibration_photos_are_found_through_linked_folders_once(tmp_path: Path) -> None:
    """A --calib folder assembled from links to other trees lost every linked folder without
    a word (Path.rglob does not follow them); a link back up the tree is not followed round."""
    from converter.calibration import calibration_paths

    elsewhere = tmp_path / "elsewhere" / "people"
    elsewhere.mkdir(parents=True)
    for name in ("a.jpg", "b.png", "notes.txt"):
        (elsewhere / name).write_bytes(b"x")
    calib = tmp_path / "calib"
    (calib / "own").mkdir(parents=True)
    (calib / "own" / "c.JPG").write_bytes(b"x")
    (calib / "linked").symlink_to(elsewhere)
    (calib / "own" / "loop").symlink_to(calib)  # back up the tree
    found = calibration_paths(calib)
    assert sorted(p.name for p in found) == ["a.jpg", "b.png", "c.JPG"]


# ------------------------------------------- calibration photos that cannot be read, and defaults


def unreadable_photos(folder: Path, count: int) -> list[Path]:
    """`count` files named as photos that no decoder reads: empty, cut short, not an image."""
    folder.mkdir(parents=True, exist_ok=True)
    whole = SAMPLE_PHOTOS[0].read_bytes()
    kinds = [b"", whole[: len(whole) // 3], b"not a photo at all"]
    paths = []
    for index in range(count):
        path = folder / f"junk_{index:03d}{('.jpg', '.jpg', '.png')[index % 3]}"
        path.write_bytes(kinds[index % 3])
        paths.append(path)
    return paths


def readable_photos(folder: Path, count: int) -> None:
    """`count` readable photos (the sample photos, copied round under new names)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        photo = SAMPLE_PHOTOS[index % len(SAMPLE_PHOTOS)]
        (folder / f"{index:03d}_{photo.name}").write_bytes(photo.read_bytes())


@pytest.fixture
def no_model_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building the float models, or reading the liveness weights, raises Reached."""
    pytest.importorskip("tensorflow", reason="edge-convert build needs the converter extra")
    import converter.build

    def reached(*args: object, **kwargs: object) -> None:
        raise Reached("a model was built")

    monkeypatch.setattr(converter.build, "_float_models", reached)
    monkeypatch.setattr(converter.build, "liveness_source", reached)


@pytest.mark.usefixtures("restore_logging", "no_model_is_built")
@pytest.mark.parametrize(("readable", "junk"), [(0, 3), (0, 30), (12, 30)])
def test_calibration_photos_that_cannot_be_read_are_refused_before_any_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], readable: int, junk: int
) -> None:
    """A converter audit: a --calib folder of files that are not photos (empty, cut short,
    text) was refused only after the float models were built, 45 s in. Fewer readable photos
    than the calibration needs (20 faces for FaceNet) is now one line, before any model."""
    lfw = fake_lfw(tmp_path / "lfw")
    calib = tmp_path / "calib"
    unreadable_photos(calib, junk)
    readable_photos(calib, readable)
    out = tmp_path / "models" / "tflite"
    code = edge_convert("build", "--calib", str(calib), "--lfw", str(lfw), "--out", str(out))
    assert code == 2
    error = one_error(capsys.readouterr().err)
    found = readable + junk
    assert f"--calib {calib}: {found} photo file(s) found, {readable} can be read" in error
    assert "needs at least 20: give a folder of at least 20 readable photos" in error
    assert not (tmp_path / "models").exists()


@pytest.mark.usefixtures("restore_logging", "no_model_is_built")
def test_enough_readable_calibration_photos_among_damaged_ones_go_on_to_the_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lfw = fake_lfw(tmp_path / "lfw")
    calib = tmp_path / "calib"
    unreadable_photos(calib, 30)
    readable_photos(calib, 20)
    with pytest.raises(Reached):
        edge_convert(
            "build", "--calib", str(calib), "--lfw", str(lfw), "--out", str(tmp_path / "m")
        )
    assert "ERROR" not in capsys.readouterr().err


@pytest.mark.usefixtures("restore_logging", "no_model_is_built")
@pytest.mark.parametrize(
    ("live", "printed", "message"),
    [
        ((0, 25), (0, 25), "--liveness-calib {calib}: 50 photo file(s) found, 0 can be read"),
        ((25, 0), (5, 20), "--liveness-calib {calib} (print/): 25 photo file(s) found, 5 can"),
    ],
    ids=["none readable", "too few prints readable"],
)
@pytest.mark.parametrize("only", [False, True], ids=["build", "only liveness"])
def test_liveness_calibration_photos_that_cannot_be_read_are_refused_before_any_model(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    live: tuple[int, int],
    printed: tuple[int, int],
    message: str,
    only: bool,
) -> None:
    """The same for --liveness-calib: its calibration sample and the live/ and print/ frames
    the threshold is checked on need 20 readable photos each, before the weights are read."""
    lfw = fake_lfw(tmp_path / "lfw")
    calib = tmp_path / "nuaa"
    for kind, (readable, junk) in (("live", live), ("print", printed)):
        readable_photos(calib / kind, readable)
        unreadable_photos(calib / kind, junk)
    out = tmp_path / "models" / "tflite"
    if only:  # a built folder to add the liveness models to
        out.mkdir(parents=True)
        (out / MANIFEST_NAME).write_bytes(REPO_MANIFEST.read_bytes())
    before = tree(tmp_path)
    code = edge_convert(
        "build",
        *(["--only", "liveness"] if only else []),
        *("--calib", str(lfw), "--lfw", str(lfw), "--out", str(out)),
        *("--liveness", str(tmp_path / "weights"), "--liveness-calib", str(calib)),
    )
    assert code == 2
    error = one_error(capsys.readouterr().err)
    assert message.format(calib=calib) in error
    assert "give a folder of at least 20 readable photos" in error
    assert tree(tmp_path) == before


# Options whose default is a folder of the source checkout (checkout_default), where
# BuildOptions has none (or, for --out and --float-out, needs one given).
CHECKOUT_FOLDERS = {"out", "float_out", "calib", "lfw", "liveness_calib"}
FIELD_OF = {"no_liveness": "drop_liveness"}  # option dest -> BuildOptions field, where not alike


def test_build_options_defaults_are_build_options_own() -> None:
    """The build's defaults live once, in BuildOptions: each option's default and the default
    its help states are BuildOptions', and a build with no options runs with BuildOptions'
    defaults (the two could drift apart when they were written twice)."""
    from dataclasses import fields

    from converter.build_options import BuildOptions, default
    from converter.cli import build_options, build_parser

    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    build = commands.choices["build"]
    with_default = {f.name for f in fields(BuildOptions) if f.name not in ("out", "float_out")}
    checked = set()
    for action in build._actions:
        name = FIELD_OF.get(action.dest, action.dest)
        if name not in with_default or name in CHECKOUT_FOLDERS:
            continue
        checked.add(name)
        value = default(name)
        assert action.default == value, action.dest
        if value is not None and not isinstance(value, bool):  # a number: --help states it
            shown = "x".join(map(str, value)) if isinstance(value, tuple) else str(value)
            assert f"(default {shown}" in (action.help or "") % vars(action), action.dest
    assert checked == {
        "camera",
        "min_face",
        "facenet",
        "edgetpu",
        "frames",
        "faces",
        "liveness",
        "liveness_frames",
        "drop_liveness",
    }
    # A build given only its folders runs with BuildOptions' defaults for everything else.
    args = parser.parse_args(["build", "--out", "/m/tflite", "--calib", "/c", "--lfw", "/l"])
    expected = BuildOptions(
        Path("/m/tflite"),
        Path("/m/float"),
        calib=Path("/c"),
        lfw=Path("/l"),
        liveness_calib=Path(args.liveness_calib) if args.liveness_calib else None,
    )
    assert build_options(args) == expected
