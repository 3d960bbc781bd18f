"""Peer pipelines, run on the same frames with the same thread count and minimum face size.

- facenet-pytorch 2.6.0: its MTCNN (pretrained P/R/O-Net weights ship in the wheel) and
  InceptionResnetV1 with random weights (its pretrained checkpoint is a download, impossible
  offline; random weights of the same architecture cost the same).
- mtcnn 1.0.0 (Keras/TensorFlow): detection only.
- face_recognition 1.3.0 on dlib (dlib-bin wheel): HOG detector upsampled once (so its 80 px
  window finds 40 px faces) and dlib's ResNet encoder; pretrained weights from the
  face_recognition_models package.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time
import types
from typing import Any

import numpy as np

from benchmarks.systems import BenchSystem


def _gallery(dim: int) -> np.ndarray:
    """One enrolled person, three samples: the peers' match step is one product and a max."""
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(3, dim)).astype(np.float32)
    return samples / np.linalg.norm(samples, axis=1, keepdims=True)


def _match(embeddings: np.ndarray, gallery: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    return (embeddings @ gallery.T).max(axis=1) >= threshold


def torchvision_status() -> str:
    """'real' when torchvision imports; else why the stand-in below is used."""
    if importlib.util.find_spec("torchvision") is None:
        return "not installed"
    try:
        importlib.import_module("torchvision.ops")
    except Exception as error:  # a CUDA torchvision beside a CPU torch fails at import
        return f"does not import ({type(error).__name__}: {str(error)[:80]})"
    return "real"


def install_torchvision_stand_in() -> None:
    """The two torchvision calls facenet-pytorch's detector makes, for when torchvision cannot
    load beside the CPU torch wheel (PyPI's torchvision is built for CUDA torch).

    batched_nms uses the same offset trick as torchvision (boxes of different images never
    overlap) and OpenCV's C++ greedy NMS as the kernel, so the peer keeps a compiled NMS
    rather than being slowed by a Python loop. to_tensor is torchvision's HWC->CHW /255 rule.
    """
    import cv2
    import torch

    def batched_nms(boxes, scores, idxs, iou_threshold):
        if boxes.numel() == 0:
            return torch.empty((0,), dtype=torch.int64)
        offsets = idxs.to(boxes) * (boxes.max() + 1)
        shifted = (boxes + offsets[:, None]).double().numpy()
        xywh = np.column_stack([shifted[:, :2], shifted[:, 2:] - shifted[:, :2]])
        ranks = scores.double().numpy()
        found = cv2.dnn.NMSBoxes(
            xywh.tolist(), (ranks - ranks.min()).tolist(), 0.0, float(iou_threshold)
        )
        keep = np.asarray(found, np.int64).reshape(-1)
        keep = keep[np.argsort(-ranks[keep], kind="stable")]
        return torch.from_numpy(keep)

    def to_tensor(picture):
        array = np.asarray(picture, dtype=np.float32)
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        return tensor.div(255) if np.asarray(picture).dtype == np.uint8 else tensor

    # Any: attributes are added to these bare modules below
    root: Any = types.ModuleType("torchvision")
    ops: Any = types.ModuleType("torchvision.ops")
    boxes: Any = types.ModuleType("torchvision.ops.boxes")
    transforms: Any = types.ModuleType("torchvision.transforms")
    functional: Any = types.ModuleType("torchvision.transforms.functional")
    boxes.batched_nms = batched_nms
    functional.to_tensor = to_tensor
    root.ops, ops.boxes = ops, boxes
    root.transforms, transforms.functional = transforms, functional
    for name, module in (
        ("torchvision", root),
        ("torchvision.ops", ops),
        ("torchvision.ops.boxes", boxes),
        ("torchvision.transforms", transforms),
        ("torchvision.transforms.functional", functional),
    ):
        sys.modules[name] = module


class FacenetPytorch(BenchSystem):
    name = "facenet-pytorch"
    label = "facenet-pytorch 2.6.0 (float, PyTorch)"

    def __init__(self, threads: int, min_face: int) -> None:
        self.threads = threads
        self.min_face = min_face
        self.torchvision = "unknown"
        self.notes = ()

    def prepare(self) -> None:
        import torch

        torch.set_num_threads(self.threads)
        torch.set_num_interop_threads(1)
        self.torchvision = torchvision_status()
        if self.torchvision != "real":
            for name in [m for m in sys.modules if m.startswith("torchvision")]:
                del sys.modules[name]
            install_torchvision_stand_in()
        import facenet_pytorch  # noqa: F401

        self.torch = torch

    def load(self) -> None:
        from facenet_pytorch import MTCNN, InceptionResnetV1

        self.mtcnn = MTCNN(
            image_size=160, margin=0, min_face_size=self.min_face, keep_all=True, device="cpu"
        )
        # pretrained=None: random weights, the same architecture and cost (module docstring)
        self.resnet = InceptionResnetV1(pretrained=None, classify=False).eval()
        self.gallery = _gallery(512)
        notes = ["InceptionResnetV1 with random weights (its checkpoint is a download)"]
        if self.torchvision != "real":
            notes.append(
                f"torchvision {self.torchvision}: batched_nms/to_tensor from the harness's "
                "stand-in (OpenCV C++ NMS)"
            )
        self.notes = tuple(notes)

    def detect(self, frame: np.ndarray) -> int:
        with self.torch.inference_mode():
            boxes, _ = self.mtcnn.detect(frame)
        return 0 if boxes is None else len(boxes)

    def e2e(self, frame: np.ndarray) -> tuple[int, dict[str, float]]:
        torch = self.torch
        with torch.inference_mode():
            start = time.perf_counter()
            boxes, _ = self.mtcnn.detect(frame)
            detect = time.perf_counter() - start
            if boxes is None:
                return 0, {"detect": detect, "embed": 0.0, "match": 0.0}
            start = time.perf_counter()
            crops = self.mtcnn.extract(frame, boxes, None)
            embeddings = self.resnet(crops).numpy()
            embed = time.perf_counter() - start
        start = time.perf_counter()
        _match(embeddings, self.gallery)
        return len(boxes), {"detect": detect, "embed": embed, "match": time.perf_counter() - start}

    def info(self) -> dict[str, Any]:
        info = super().info()
        info.update(torchvision=self.torchvision, threads=self.threads, min_face=self.min_face)
        torch = getattr(self, "torch", None)
        if torch is not None:
            info["torch"] = torch.__version__
        return info


def mtcnn_scales(
    width: int, height: int, min_face_size: float, scale_factor: float, min_size: int = 12
) -> np.ndarray:
    """The package's own pyramid rule (first scale 12 / min_face_size, times scale_factor) with
    its level count fixed: 1.0.0 counts levels as if min_face_size were 12 px, so any larger
    minimum face adds levels smaller than P-Net's 12 px window and the call returns no face at
    all. Stopping where the image side drops below 12 px, as the MTCNN paper and the other
    implementations do, gives the same 8 levels at 640x480 and 40 px as ours."""
    first = min_size / min_face_size
    count = int(np.floor(np.log(min(width, height) * first / min_size) / -np.log(scale_factor)))
    return first * scale_factor ** np.arange(max(count + 1, 0))


class MtcnnPackage(BenchSystem):
    name = "mtcnn"
    label = "mtcnn 1.0.0 (float, Keras/TensorFlow)"
    modes = ("detect",)
    notes = (
        "detection only. Its 1.0.0 pyramid counts levels as if min_face_size were 12 px, so "
        "with 40 px it adds levels below P-Net's window and finds no face at all; the harness "
        "stops the pyramid at 12 px as the paper does (peers.mtcnn_scales), same 8 levels as ours",
    )

    def __init__(self, threads: int, min_face: int) -> None:
        self.threads = threads
        self.min_face = min_face

    def prepare(self) -> None:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(self.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        import mtcnn  # noqa: F401
        from mtcnn.stages import stage_pnet

        stage_pnet.build_scale_pyramid = mtcnn_scales
        self.tf_version = tf.__version__

    def load(self) -> None:
        from mtcnn import MTCNN

        self.detector = MTCNN(device="CPU:0")

    def detect(self, frame: np.ndarray) -> int:
        return len(self.detector.detect_faces(frame, min_face_size=self.min_face))

    def info(self) -> dict[str, Any]:
        info = super().info()
        info.update(tensorflow=getattr(self, "tf_version", None), threads=self.threads)
        info["min_face"] = self.min_face
        return info


class FaceRecognitionDlib(BenchSystem):
    name = "dlib"
    label = "face_recognition 1.3.0 / dlib (HOG + ResNet)"
    notes = ("HOG upsampled once (40 px faces); 128-d encoder; dlib's HOG runs single-threaded",)

    def __init__(self, threads: int, min_face: int) -> None:
        self.threads = threads
        # dlib's HOG window is 80 px; each upsample halves the smallest face it finds.
        self.upsample = 1 if min_face >= 40 else 2

    def prepare(self) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import face_recognition
        import dlib

        self.fr = face_recognition
        self.dlib_version = dlib.__version__

    def load(self) -> None:
        face_recognition = self.fr
        # The first calls build the detector and load the encoder's weights.
        blank = np.zeros((64, 64, 3), np.uint8)
        face_recognition.face_locations(blank, number_of_times_to_upsample=self.upsample)
        face_recognition.face_encodings(blank, known_face_locations=[(8, 56, 56, 8)])
        self.gallery = _gallery(128)

    def detect(self, frame: np.ndarray) -> int:
        return len(self.fr.face_locations(frame, number_of_times_to_upsample=self.upsample))

    def e2e(self, frame: np.ndarray) -> tuple[int, dict[str, float]]:
        start = time.perf_counter()
        locations = self.fr.face_locations(frame, number_of_times_to_upsample=self.upsample)
        detect = time.perf_counter() - start
        start = time.perf_counter()
        encodings = self.fr.face_encodings(frame, known_face_locations=locations, model="small")
        embed = time.perf_counter() - start
        start = time.perf_counter()
        if encodings:
            _match(np.asarray(encodings, np.float32), self.gallery)
        return len(locations), {
            "detect": detect,
            "embed": embed,
            "match": time.perf_counter() - start,
        }

    def info(self) -> dict[str, Any]:
        info = super().info()
        info.update(dlib=getattr(self, "dlib_version", None), upsample=self.upsample)
        return info
