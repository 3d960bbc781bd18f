"""`edge-convert validate` and `train-head` outputs: every one checked before the work (not a
device, a named pipe or a link; not an input, nor inside an input folder, the models or
--out), written whole and together, and a seed numpy cannot take refused while parsing.
Every refusal is one line (exit 2); nothing here runs a model.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from needs import unavailable
from test_converter_inputs import Reached, edge_convert, one_error

from edge_app.errors import UserError
from edge_app.manifest import MANIFEST_NAME
from edge_app.paths import REPO_ROOT


def _what(path: Path) -> int:
    return stat.S_IFMT(os.lstat(path).st_mode)


# ------------------------------------------------------------------------------- validate


@pytest.fixture
def validate_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A models folder, a data folder (lfw/pairsDevTest.txt) and an earlier --json; opening
    the models (the first real work) raises Reached."""
    import converter.validate

    class NoEngine:
        @staticmethod
        def open(*args: object, **kwargs: object) -> Any:
            raise Reached("the validation started")

    monkeypatch.setattr(converter.validate, "Engine", NoEngine)
    models = tmp_path / "models"
    models.mkdir()
    (models / MANIFEST_NAME).write_text("{}\n")
    data = tmp_path / "data"
    (data / "lfw" / "images").mkdir(parents=True)
    (data / "liveness" / "nuaa").mkdir(parents=True)
    (data / "lfw" / "pairsDevTest.txt").write_text("1\nA\t1\t2\nA\t1\tB\t1\n")
    results = tmp_path / "quantization.json"
    results.write_text('{"old": true}\n')
    return {"models": models, "data": data, "json": results, "tmp": tmp_path}


def _validate(paths: dict[str, Path], *argv: str) -> int:
    return edge_convert(
        "validate", "--models", str(paths["models"]), "--data", str(paths["data"]), *argv
    )


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (
            ["--json", "{data}/lfw/pairsDevTest.txt", "--report", "{tmp}/q.md"],
            "--json {data}/lfw/pairsDevTest.txt is inside --data (LFW) {data}/lfw; write it "
            "elsewhere",
        ),
        (
            ["--json", "{json}", "--report", "{data}/lfw/images/QUANTIZATION.md"],
            "--report {data}/lfw/images/QUANTIZATION.md is inside --data (LFW) {data}/lfw",
        ),
        (
            ["--json", "{json}", "--report", "{tmp}/q.md", "--liveness-frames",
             "{data}/liveness/nuaa/f.json"],
            "--liveness-frames {data}/liveness/nuaa/f.json is inside --data (NUAA frames)",
        ),
        (
            ["--json", "{json}", "--report", "{tmp}/q.md", "--liveness-frames", "{models}/f.json"],
            "--liveness-frames {models}/f.json is inside --models {models}",
        ),
        (
            ["--json", "{json}", "--report", "{tmp}/q.md", "--liveness-frames", "{json}"],
            "--liveness-frames {json} is also --json; each needs its own file",
        ),
    ],
    ids=[
        "json over an input",
        "report in the images",
        "frames in the NUAA frames",
        "frames in the models",
        "frames are json",
    ],
)  # fmt: skip
def test_validate_refuses_outputs_in_its_inputs_before_the_work(
    validate_inputs: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    outputs: list[str],
    message: str,
) -> None:
    """`--json vdata/lfw/pairsDevTest.txt` replaced the pair list the validation reads."""
    before = (validate_inputs["data"] / "lfw" / "pairsDevTest.txt").read_bytes()
    code = _validate(validate_inputs, *[a.format(**validate_inputs) for a in outputs])
    assert code == 2
    assert message.format(**validate_inputs) in one_error(capsys.readouterr().err)
    assert (validate_inputs["data"] / "lfw" / "pairsDevTest.txt").read_bytes() == before
    assert validate_inputs["json"].read_text() == '{"old": true}\n'


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("lfw", ["no lfw folder", "no pair list", "an empty pair list"])
def test_validate_refuses_data_without_lfw_before_the_work(
    validate_inputs: dict[str, Path], capsys: pytest.CaptureFixture[str], lfw: str
) -> None:
    """`--data DIR` without lfw/ ran the liveness comparison (minutes on NUAA) before its
    refusal for the missing LFW pairs. Now refused before the models are opened."""
    data = validate_inputs["data"]
    pairs = data / "lfw" / "pairsDevTest.txt"
    if lfw == "an empty pair list":
        pairs.write_text("")
    else:
        pairs.unlink()
        if lfw == "no lfw folder":
            (data / "lfw" / "images").rmdir()
            (data / "lfw").rmdir()
    code = _validate(
        validate_inputs, "--json", str(validate_inputs["json"]), "--report",
        str(validate_inputs["tmp"] / "q.md"), "--liveness-frames", "",
    )  # fmt: skip
    assert code == 2
    error = one_error(capsys.readouterr().err)
    assert f"--data {data}: no LFW DevTest to validate on ({pairs}" in error
    assert "--only liveness" in error
    assert validate_inputs["json"].read_text() == '{"old": true}\n'
    assert not (validate_inputs["tmp"] / "q.md").exists()


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("option", ["--report", "--liveness-frames", "--json"])
@pytest.mark.parametrize("kind", ["named pipe", "device", "symbolic link"])
def test_validate_refuses_an_output_that_is_not_a_regular_file_before_the_work(
    validate_inputs: dict[str, Path], capsys: pytest.CaptureFixture[str], option: str, kind: str
) -> None:
    """A FIFO as --report was refused only after ~20 s of work, --json already replaced."""
    odd = validate_inputs["tmp"] / "odd"
    if kind == "named pipe":
        os.mkfifo(odd)
    elif kind == "device":
        try:
            os.mknod(odd, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            unavailable("making a device node needs root")
    else:
        odd.symlink_to(validate_inputs["json"])
    before = _what(odd)
    outputs = {
        "--json": str(validate_inputs["json"]),
        "--report": str(validate_inputs["tmp"] / "q.md"),
        "--liveness-frames": str(validate_inputs["tmp"] / "frames.json"),
    }
    outputs[option] = str(odd)
    code = _validate(validate_inputs, *[x for pair in outputs.items() for x in pair])
    assert code == 2
    error = one_error(capsys.readouterr().err)
    assert f"{option} {odd}: it is a" in error and "not a regular file" in error
    assert _what(odd) == before
    assert validate_inputs["json"].read_text() == '{"old": true}\n'


def test_validate_writes_its_two_reports_together_or_neither(tmp_path: Path) -> None:
    """A report that cannot be written after the work (here a named pipe put there during
    it) left the new --json beside the old --report: a half-updated pair."""
    from converter.validate import _write_results

    json_out, report = tmp_path / "q.json", tmp_path / "q.md"
    json_out.write_text('{"old": true}\n')
    os.mkfifo(report)
    results = json.loads((REPO_ROOT / "docs" / "quantization.json").read_text())
    with pytest.raises(UserError) as failed:
        _write_results(results, json_out, report)
    assert f"--report {report}: it is a named pipe" in str(failed.value)
    assert json_out.read_text() == '{"old": true}\n'
    assert stat.S_ISFIFO(os.lstat(report).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.json", "q.md"]


@pytest.mark.usefixtures("restore_logging")
def test_validate_replaces_no_liveness_frames_when_the_rest_of_the_work_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--liveness-frames was written as soon as the liveness comparison ended, before the
    minutes of cascade and FaceNet comparisons: one that then failed (here: --data has no
    LFW) or was stopped left new per-frame scores beside the old --json and --report they
    belong with. Real models and frames; the committed int8 liveness models stand in for
    their float twins."""
    from edge_app.manifest import LIVENESS_ROLE, load_manifest

    models = REPO_ROOT / "models" / "tflite"
    specs = load_manifest(models).by_role(LIVENESS_ROLE)
    if not specs:
        unavailable(f"{models} has no liveness models (`make models-liveness`)")
    twins = tmp_path / "float"
    twins.mkdir()
    for _, spec in specs:
        (twins / spec.file).write_bytes((models / spec.file).read_bytes())
    nuaa = tmp_path / "data" / "liveness" / "nuaa"
    photos = sorted((REPO_ROOT / "tests" / "data" / "lfw_sample").rglob("*.jpg"))[:2]
    for kind, photo in zip(("live", "print"), photos, strict=True):
        (nuaa / kind / "0001").mkdir(parents=True)
        (nuaa / kind / "0001" / "0001_00_01_01_0.jpg").write_bytes(photo.read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    (out / "q.json").write_text('{"old": true}\n')
    (out / "liveness_frames.json").write_text("[]\n")

    code = edge_convert(
        "validate",
        "--models", str(models),
        "--float-models", str(twins),
        "--data", str(tmp_path / "data"),
        "--json", str(out / "q.json"),
        "--report", str(out / "q.md"),
    )  # fmt: skip

    assert code == 2
    assert "pairsDevTest.txt" in one_error(capsys.readouterr().err)
    assert (out / "liveness_frames.json").read_text() == "[]\n"
    assert (out / "q.json").read_text() == '{"old": true}\n'
    assert sorted(p.name for p in out.iterdir()) == ["liveness_frames.json", "q.json"]


@pytest.mark.usefixtures("restore_logging")
def test_validate_puts_the_liveness_frames_beside_its_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--liveness-frames defaulted to docs/liveness_frames.json in the checkout whatever
    --json said: a validation written to /tmp still replaced a file in the source tree."""
    import converter.validate

    called: dict[str, Any] = {}

    def validate(*args: object, **kwargs: object) -> dict:
        called.update(kwargs)
        return {}

    monkeypatch.setattr(converter.validate, "validate", validate)
    out = tmp_path / "q.json"
    assert edge_convert("validate", "--json", str(out), "--report", str(tmp_path / "q.md")) == 0
    assert called["frames_out"] == tmp_path / "liveness_frames.json"
    assert edge_convert("validate", "--json", str(out), "--liveness-frames", "") == 0
    assert called["frames_out"] is None


# ----------------------------------------------------------------------------- train-head


@pytest.fixture
def head_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A tiny LFW folder (both pair lists, images/), an embeddings cache that fits it and a
    head folder from an earlier run; embedding the jittered crops (minutes) raises Reached."""
    import converter.head

    lfw = tmp_path / "lfw"
    (lfw / "images").mkdir(parents=True)
    pairs = "1\nA\t1\t2\nA\t1\tB\t1\n"
    (lfw / "pairsDevTrain.txt").write_text(pairs)
    (lfw / "pairsDevTest.txt").write_text(pairs)
    cache = tmp_path / "raw.npz"
    rng = np.random.default_rng(0)
    np.savez(
        cache,
        names=np.array(["A/A_0001.jpg", "A/A_0002.jpg", "B/B_0001.jpg"]),
        raw=rng.normal(size=(3, 512)).astype(np.float32),
        mirror=rng.normal(size=(3, 512)).astype(np.float32),
    )
    out = tmp_path / "head"
    out.mkdir()
    (out / "head.tflite").write_bytes(b"the head of the last run")

    def reached(*args: object, **kwargs: object) -> np.ndarray:
        raise Reached("embedding the jittered crops")

    monkeypatch.setattr(converter.head, "embed_jitters", reached)
    return {"lfw": lfw, "cache": cache, "out": out, "tmp": tmp_path}


def _train_head(paths: dict[str, Path], *argv: str) -> int:
    return edge_convert(
        "train-head", "--cache", str(paths["cache"]), "--lfw", str(paths["lfw"]),
        "--out", str(paths["out"]), *argv,
    )  # fmt: skip


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("seed", ["-1", "99999999999999999999999", str(2**32)])
def test_train_head_refuses_a_seed_numpy_cannot_take_when_parsing(
    head_inputs: dict[str, Path], capsys: pytest.CaptureFixture[str], seed: str
) -> None:
    """`--seed -1` and `--seed 99999999999999999999999` were ValueError tracebacks."""
    code = _train_head(head_inputs, "--seed", seed)
    assert code == 2
    assert "argument --seed: must be" in one_error(capsys.readouterr().err)


@pytest.mark.usefixtures("restore_logging")
def test_train_head_takes_the_largest_seed_numpy_takes(head_inputs: dict[str, Path]) -> None:
    with pytest.raises(Reached):
        _train_head(head_inputs, "--seed", str(2**32 - 1), "--jitters", "1")


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    ("json_at", "message"),
    [
        ("{out}/head.tflite", "--json {out}/head.tflite is inside --out {out}; write it elsewhere"),
        ("{out}/report.json", "--json {out}/report.json is inside --out {out}"),
        ("{lfw}/pairsDevTrain.txt", "--json {lfw}/pairsDevTrain.txt is inside --lfw {lfw}"),
        ("{tmp}/fifo", "--json {tmp}/fifo: it is a named pipe (FIFO), not a regular file"),
    ],
    ids=["json is the head", "json in out", "json over a pair list", "json is a named pipe"],
)
def test_train_head_refuses_a_json_over_its_files_before_training(
    head_inputs: dict[str, Path], capsys: pytest.CaptureFixture[str], json_at: str, message: str
) -> None:
    """`--json out/head.tflite` replaced the model it reported on with the report."""
    os.mkfifo(head_inputs["tmp"] / "fifo")
    out = json_at.format(**head_inputs)
    code = _train_head(head_inputs, "--json", out, "--jitters", "1")
    assert code == 2
    assert message.format(**head_inputs) in one_error(capsys.readouterr().err)
    assert (head_inputs["out"] / "head.tflite").read_bytes() == b"the head of the last run"
    assert stat.S_ISFIFO(os.lstat(head_inputs["tmp"] / "fifo").st_mode)


@pytest.mark.slow
def test_train_head_on_a_full_disk_is_one_line_after_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report written after the training on a full disk was an OSError traceback."""
    pytest.importorskip("tensorflow")
    import tempfile

    from test_train_head import _write_dataset

    from converter.head import HeadOptions, TrainSettings, run

    lfw, cache = _write_dataset(tmp_path)
    reports = tmp_path / "reports"
    reports.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*args: Any, **kwargs: Any) -> Any:
        if Path(kwargs.get("dir") or ".") == reports:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    options = HeadOptions(
        cache=cache,
        lfw=lfw,
        out=tmp_path / "head",
        jitters=0,
        json=reports / "head.json",
        settings=TrainSettings(rank=8, steps=20, people=10, learning_rate=1e-2),
    )
    with pytest.raises(UserError) as failed:
        run(options)
    assert str(failed.value) == (
        f"--json {reports / 'head.json'}: cannot write it (No space left on device)"
    )
    assert list(reports.iterdir()) == []
