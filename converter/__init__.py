"""Desktop converter: MTCNN and FaceNet to full-int8 TFLite, linted and compiled for the TPU."""

__version__ = "0.1.0"
