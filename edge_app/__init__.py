"""On-device face recognition for a door: int8 MTCNN + FaceNet on the Edge TPU or the CPU."""

import os

from edge_app.image_limits import MAX_PIXELS

__version__ = "0.1.0"

# OpenCV's own cap on the frame a decoder may allocate, behind edge_app.images' header
# checks (its rule 2). OpenCV reads it once, when cv2 loads: set here, before any module of
# the package imports cv2, unless the environment already says.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))
