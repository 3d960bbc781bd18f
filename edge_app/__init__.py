"""On-device face recognition for a door: int8 MTCNN + FaceNet on the Edge TPU or the CPU."""

__version__ = "0.1.0"
