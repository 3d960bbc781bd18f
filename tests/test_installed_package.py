"""Run from an installed package (site-packages, no checkout around it), the commands whose
options default into the source checkout (models/, demo/, docs/, ../shared) ask for those
options instead of defaulting to folders that cannot exist inside site-packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from needs import unavailable

from edge_app.paths import REPO_ROOT, SHARED_DATA


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two packages copied alone into a folder, as pip installs them into site-packages."""
    site = tmp_path_factory.mktemp("site-packages")
    for package in ("edge_app", "converter"):
        shutil.copytree(
            REPO_ROOT / package, site / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return site


def _run(site: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=site.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _refused(site: Path, module: str, *args: str) -> str:
    """The one line a command refused with (exit code 2, no traceback, no site-packages path)."""
    done = _run(site, module, *args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "site-packages" not in done.stderr
    return done.stderr.splitlines()[-1]


def test_the_copy_runs_as_an_installed_package(site: Path) -> None:
    code = "import converter, edge_app.paths as p; print(converter.__file__, p.IN_CHECKOUT)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=site.parent,  # `python -c` puts the working folder, the checkout here, first
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.stdout.split() == [str(site / "converter" / "__init__.py"), "False"]


@pytest.mark.parametrize(
    ("module", "args", "required"),
    [
        ("converter.cli", ["build"], "--out, --calib, --lfw"),
        ("converter.cli", ["validate"], "--models, --data, --json, --report, --liveness-frames"),
        ("converter.cli", ["float-cascade"], "--models"),
        ("edge_app.cli", ["demo"], "--clip, --enroll"),
        ("edge_app.cli", ["eval", "lfw"], "--pairs, --images"),
        ("edge_app.cli", ["eval", "visits"], "--lfw"),
        ("edge_app.cli", ["eval", "liveness"], "--data"),
    ],
)
def test_options_that_default_into_the_checkout_are_required(
    site: Path, module: str, args: list[str], required: str
) -> None:
    done = _run(site, module, *args)

    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].endswith(
        f"error: the following arguments are required: {required}"
    )
    assert "site-packages" not in done.stderr
    assert "Traceback" not in done.stderr


def test_help_says_why_there_is_no_default(site: Path) -> None:
    done = _run(site, "converter.cli", "build", "--help")

    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "--out DIR int8 models folder" in text
    assert text.count("(required: installed, not run from a checkout)") == 3  # out, calib, lfw
    # --liveness-calib matters only with --liveness, which refuses to run without it
    assert "searched recursively (no default: installed, not run from a checkout)" in text
    assert str(site) not in done.stdout


def test_a_liveness_build_without_its_calibration_photos_is_refused_up_front(
    site: Path, tmp_path: Path
) -> None:
    weights = SHARED_DATA / "liveness" / "minifasnet"
    if not weights.is_dir():
        unavailable(f"no MiniFASNet weights in {weights} (../shared/data)")
    lfw = tmp_path / "lfw"
    lfw.mkdir()
    out = tmp_path / "models"

    build = ("build", "--out", str(out), "--calib", str(lfw), "--lfw", str(lfw))
    said = _refused(site, "converter.cli", *build, "--liveness", str(weights))

    assert said.endswith("--liveness needs --liveness-calib DIR: photos to calibrate on")
    assert not out.exists()


def test_the_float_reference_needs_its_folder_named(site: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1\n")
    lfw = ("eval", "lfw", "--pairs", str(pairs), "--images", str(tmp_path))
    said = _refused(site, "edge_app.cli", *lfw, "--reference", "float")

    assert said.endswith(
        "--reference float needs --models DIR, the float reference models "
        "(`edge-convert build` writes them beside the int8 models)"
    )
