"""The converter's expected failures: printed as one line by the CLI, never a traceback."""

from converter.build import BuildError
from converter.calibration import CalibrationError
from converter.edgetpu import EdgeTpuError
from converter.mtcnn_models import SourceError
from edge_app.errors import UserError

CONVERTER_ERRORS = (
    BuildError,
    CalibrationError,
    EdgeTpuError,
    SourceError,
    UserError,
    PermissionError,
)
