"""Real LFW photos and the built models, for the tests that need both (imported like clips)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_app.paths import INSTALLED_MODELS, REPO_MODELS, SHARED_DATA, default_models_dir

LFW = SHARED_DATA / "lfw" / "images"
MODELS = default_models_dir()

NEEDS_LFW_AND_MODELS = [
    pytest.mark.skipif(not LFW.is_dir(), reason=f"LFW photos not found at {LFW}"),
    pytest.mark.skipif(
        not (MODELS / "manifest.json").is_file(),
        reason=f"no built models in {REPO_MODELS} or {INSTALLED_MODELS}: run `make models`",
    ),
]


def lfw(name: str, number: int) -> Path:
    return LFW / name / f"{name}_{number:04d}.jpg"
