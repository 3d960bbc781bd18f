"""The rule for a test whose tool or precondition is missing, in one place.

Elsewhere it skips, saying what is missing and how to get it. Under CI (`CI=1`, set by
.ci/run, which installs every tool the tests drive and runs as root) it fails instead: there
a skip would hide a gap.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"CI: {reason}")
    pytest.skip(reason)
