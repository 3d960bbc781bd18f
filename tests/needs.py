"""The rule for a test whose tool or precondition is missing, in one place.

Elsewhere it skips, saying what is missing and how to get it. Under CI (`CI=1`, set by
.ci/run, which installs every tool the tests drive and runs as root) it fails instead: there
a skip would hide a gap.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"CI: {reason}")
    pytest.skip(reason)


def missing_from_models(folder: Path, what: str) -> NoReturn:
    """The models in `folder` lack `what`, which a test needs. The committed models ship
    it, so there the gap is unavailable() (a failure under CI, not a quiet skip); a folder
    given in EDGE_TEST_MODELS may be built without it, and the test skips."""
    reason = f"{folder} has no {what}"
    if os.environ.get("EDGE_TEST_MODELS"):
        pytest.skip(reason)
    unavailable(f"{reason}: the committed models ship it (`make models`, `make models-liveness`)")


def need_command(name: str, package: str) -> None:
    """unavailable() unless the command `name` is on PATH (Debian's `package` has it)."""
    if shutil.which(name) is None:
        unavailable(f"needs {name} (apt install {package})")
