"""Where the camera-picture check draws its lines (edge_app/picture.py), measured.

    python -m benchmarks.picture

1. Darkness against detection: NUAA live webcam frames (every tenth) darkened by a factor,
   with Gaussian sensor noise (sigma 1.5 grey levels) added, through the shipped detector on
   the CPU. For each factor: the frames' mean grey level (as the check measures it) and how
   many frames still have a face found.
2. Real photos against both limits: the mean and the spread of every NUAA frame (live and
   print), every detection photo and every fifth LFW image, and how many of them the check
   would call dark or featureless (it must be none).

Needs ../shared/data. Writes benchmarks/picture.json.
"""

from __future__ import annotations

import argparse
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from benchmarks import outputs
from edge_app.engine import Engine
from edge_app.paths import REPO_ROOT, SHARED_DATA
from edge_app.picture import DARK_MEAN, FLAT_SPREAD, SAMPLE_SIZE, grey_levels, picture_problem
from edge_app.reports import check_output

RESULT = REPO_ROOT / "benchmarks" / "picture.json"
FACTORS = (1.0, 0.3, 0.2, 0.12, 0.08, 0.05, 0.03)
NOISE = 1.5


def _rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    if image is None:
        raise SystemExit(f"cannot read {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def darkness(engine: Engine, frames: list[Path]) -> list[dict[str, float]]:
    rng = np.random.default_rng(0)
    images = [_rgb(path).astype(np.float32) for path in frames]
    rows = []
    for factor in tqdm(FACTORS, desc="darkness", unit="factor"):
        means, found = [], 0
        for image in images:
            noisy = image * factor + rng.normal(0.0, NOISE, image.shape)
            dark = np.clip(noisy, 0, 255).astype(np.uint8)
            means.append(grey_levels(dark)[0])
            found += len(engine.detect(dark)) > 0
        rows.append(
            {
                "factor": factor,
                "mean_grey": round(float(np.mean(means)), 1),
                "faces_found": found,
                "frames": len(images),
            }
        )
    return rows


def real_photos(sets: dict[str, list[Path]]) -> dict[str, dict[str, float]]:
    rows = {}
    for name, paths in sets.items():
        stats, flagged = [], 0
        for path in tqdm(paths, desc=name, unit="image"):
            image = _rgb(path)
            stats.append(grey_levels(image))
            flagged += picture_problem(image) is not None
        values = np.array(stats)
        rows[name] = {
            "images": len(paths),
            "lowest_mean": round(float(values[:, 0].min()), 1),
            "lowest_spread": round(float(values[:, 1].min()), 1),
            "flagged": flagged,
        }
    return rows


@outputs.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="../shared/data")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    check_output(args.out, "--out")  # before the work, not with a traceback after
    nuaa = args.data / "liveness" / "nuaa"
    if not nuaa.is_dir():
        print(f"no NUAA frames in {nuaa}: this benchmark needs ../shared/data", file=sys.stderr)
        return 2
    engine = Engine.open(backend="cpu")
    live = sorted((nuaa / "live").glob("*/*.jpg"))
    sets = {
        "NUAA live": live,
        "NUAA print": sorted((nuaa / "print").glob("*/*.jpg")),
        "detection photos": sorted((args.data / "detection").glob("*/*.jpg")),
        "LFW (every fifth)": sorted((args.data / "lfw" / "images").glob("*/*.jpg"))[::5],
    }
    dark_rows = darkness(engine, live[::10])
    photo_rows = real_photos(sets)
    result = {
        "limits": {"dark_mean": DARK_MEAN, "flat_spread": FLAT_SPREAD, "sample": SAMPLE_SIZE},
        "darkness": dark_rows,
        "real_photos": photo_rows,
        "machine": platform.processor() or platform.machine(),
        "date": datetime.now(UTC).date().isoformat(),
    }
    print("| darkened by | mean grey | frames with a face found |")
    print("|---|---|---|")
    for row in dark_rows:
        print(f"| x{row['factor']} | {row['mean_grey']} | {row['faces_found']}/{row['frames']} |")
    print("\n| photos | images | lowest mean grey | lowest spread | called dark or featureless |")
    print("|---|---|---|---|---|")
    for name, photos in photo_rows.items():
        print(
            f"| {name} | {photos['images']} | {photos['lowest_mean']} "
            f"| {photos['lowest_spread']} | {photos['flagged']} |"
        )
    outputs.write_json(args.out, result, "--out")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
