"""`edge-app doctor`: is this machine ready to run the door, and if not, what to do."""

from __future__ import annotations

import argparse
import glob
import importlib
import json
import platform
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_app.config import Config


@dataclass(frozen=True)
class Check:
    area: str
    status: str  # "ok", "warn" or "fail"
    detail: str
    fix: str = ""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check runtime, accelerator, models, camera, GPIO, gallery and config",
        description="Report each part the door needs as ok, or what is missing and how to "
        "fix it. Exit code 1 when any part fails.",
    )
    parser.add_argument("--config", type=Path, help="TOML config (default /etc/edge-app/...)")
    parser.add_argument("--models", type=Path, help="models folder (default from the config)")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.set_defaults(handler=_run)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _runtime_checks() -> list[Check]:
    from edge_app.runtime import RuntimeUnavailable, select_backend  # noqa: PLC0415

    try:
        backend = select_backend("auto")
    except RuntimeUnavailable as error:
        return [Check("runtime", "fail", str(error), "pip install ai-edge-litert")]
    runtime = backend.runtime
    checks = [Check("runtime", "ok", f"{runtime.module} {runtime.version}")]
    try:
        importlib.import_module("pycoral")
        pycoral = "pycoral importable"
    except ImportError:
        pycoral = "pycoral not importable (optional; the delegate is loaded directly)"
    if backend.kind == "edgetpu":
        checks.append(Check("edge tpu", "ok", f"{backend.reason}; {pycoral}"))
    else:
        checks.append(
            Check(
                "edge tpu",
                "warn",
                f"running on the CPU ({backend.threads} threads): {backend.reason}; {pycoral}",
                "plug in the Coral and install libedgetpu built for this runtime "
                "(feranick's libedgetpu 16.0TF2.x packages); see docs/INSTALL.md",
            )
        )
    return checks


def _model_checks(models: Path | None) -> list[Check]:
    from edge_app.manifest import (  # noqa: PLC0415
        ManifestError,
        load_manifest,
        verify_files,
        verify_float_cascade,
    )
    from edge_app.paths import default_models_dir  # noqa: PLC0415

    folder = models or default_models_dir()
    try:
        manifest = load_manifest(folder)
    except ManifestError as error:
        return [Check("models", "fail", str(error), "copy models/tflite or run edge-convert build")]
    problems = verify_files(manifest, folder, edgetpu=True)
    if problems:
        return [Check("models", "fail", "; ".join(problems), "rebuild or re-copy the models")]
    files = ", ".join(f"{s.file} {s.sha256[:12]}" for s in manifest.models.values())
    tpu = sum(1 for s in manifest.models.values() if s.edgetpu)
    floats = manifest.float_cascade
    float_problems = verify_float_cascade(manifest, folder)
    float_check = Check(
        "float cascade",
        "warn" if floats is None or float_problems else "ok",
        "; ".join(float_problems)
        if float_problems
        else "none in the manifest: the CPU runs the int8 P/R/O-Net"
        if floats is None
        else f"{len(floats.models)} float P/R/O-Net and the probe frame verified",
        "edge-convert float-cascade --models MODELS, or re-copy models/tflite"
        if floats is None or float_problems
        else "",
    )
    return [
        float_check,
        Check("models", "ok", f"{folder}: {len(manifest.models)} models verified ({files})"),
        Check(
            "edge tpu models",
            "ok" if tpu else "warn",
            f"{tpu} of {len(manifest.models)} models compiled for the Edge TPU",
            "" if tpu else "run `edge-convert build --edgetpu` on an x86-64 Debian/Ubuntu desktop",
        ),
        Check(
            "converter",
            "ok",
            f"TensorFlow {manifest.converter.get('tensorflow')}, camera "
            f"{manifest.camera[0]}x{manifest.camera[1]}, min face {manifest.min_face} px",
        ),
    ]


def _cascade_checks(models: Path | None, config: Config) -> list[Check]:
    """Which MTCNN cascade the engine runs with this config, and why: opens it as the daemon
    does (with cascade = "auto" that times both cascades, a fraction of a second)."""
    from edge_app.engine import Engine  # noqa: PLC0415
    from edge_app.errors import UserError  # noqa: PLC0415

    settings = config.models
    try:
        engine = Engine.open(
            models_dir=models,
            backend=settings.backend,
            threads=settings.threads,
            min_face=config.detection.min_face,
            cascade=settings.cascade,
        )
    except UserError as error:
        return [Check("cascade", "fail", str(error), "fix the models or set models.cascade")]
    choice = engine.cascade_choice
    if choice is None:
        return []
    degraded = choice.requested != "int8" and choice.reason.startswith("no usable float")
    return [
        Check(
            "cascade",
            "warn" if degraded and choice.requested == "auto" else "ok",
            f"{choice.describe()}; the daemon measures again at each start",
            "edge-convert float-cascade --models MODELS, or re-copy models/tflite"
            if degraded
            else "",
        )
    ]


def _device_checks() -> list[Check]:
    checks = []
    try:
        importlib.import_module("picamera2")
        checks.append(Check("camera", "ok", "picamera2 importable"))
    except ImportError:
        videos = sorted(glob.glob("/dev/video*"))
        checks.append(
            Check(
                "camera",
                "ok" if videos else "warn",
                f"picamera2 not importable; V4L2 devices: {', '.join(videos) or 'none'}",
                ""
                if videos
                else "sudo apt install python3-picamera2 and create the venv with "
                "--system-site-packages, or plug in a USB camera",
            )
        )
    chips = sorted(glob.glob("/dev/gpiochip*"))
    checks.append(
        Check(
            "gpio",
            "ok" if chips else "warn",
            f"GPIO chips: {', '.join(chips) or 'none'} (gpiozero {_version('gpiozero')})",
            "" if chips else "not a Raspberry Pi: use --gpio mock to simulate the relay",
        )
    )
    return checks


def _config_checks(config_path: Path | None) -> tuple[list[Check], Config | None]:
    from edge_app.config import load_config  # noqa: PLC0415
    from edge_app.errors import UserError  # noqa: PLC0415

    try:
        config = load_config(config_path)
    except UserError as error:
        return [Check("config", "fail", str(error), "fix the named keys")], None
    return [
        Check("config", "ok", str(config_path or "defaults / /etc/edge-app/config.toml"))
    ], config


def _gallery_checks(config) -> list[Check]:
    from edge_app.errors import UserError  # noqa: PLC0415
    from edge_app.gallery import Gallery  # noqa: PLC0415

    path = Path(config.gallery.path)
    if not path.exists():
        return [
            Check("gallery", "warn", f"{path} does not exist yet", "edge-app enroll NAME PHOTO...")
        ]
    mode = path.stat().st_mode & 0o777
    try:
        with Gallery.open(path) as gallery:
            people = gallery.people()
    except UserError as error:
        return [Check("gallery", "fail", str(error), "check the file's owner and permissions")]
    status = "ok" if people and mode == 0o600 else "warn"
    fix = "" if people else "edge-app enroll NAME PHOTO..."
    if mode != 0o600:
        fix = f"chmod 600 {path} (biometric templates)"
    return [Check("gallery", status, f"{path}: {len(people)} people, mode {mode:o}", fix)]


def _run(args: argparse.Namespace) -> int:
    versions = ", ".join(
        f"{p} {_version(p)}" for p in ("numpy", "opencv-python-headless", "gpiozero", "edge-door")
    )
    checks = [Check("python", "ok", f"{platform.python_version()} ({versions})")]
    checks += _runtime_checks()
    config_checks, config = _config_checks(args.config)
    models = args.models or (config.models.dir if config is not None else None)
    checks += _model_checks(models)
    checks += _device_checks()
    checks += config_checks
    if config is not None:
        if not any(c.area == "models" and c.status == "fail" for c in checks):
            checks += _cascade_checks(models, config)
        checks += _gallery_checks(config)
    if args.json:
        sys.stdout.write(json.dumps([asdict(c) for c in checks], indent=2) + "\n")
    else:
        for check in checks:
            line = f"{check.status.upper():5} {check.area:16} {check.detail}"
            if check.fix:
                line += f"\n{'':22}-> {check.fix}"
            sys.stdout.write(line + "\n")
    return 1 if any(c.status == "fail" for c in checks) else 0
