"""Build the bundled demo assets from LFW: a door-camera clip and the photos to enrol.

    .venv/bin/python scripts/make_demo_clip.py [--lfw DIR] [--out DIR]

Writes demo/door.mp4 (640x480, 10 fps, MPEG-4 part 2: any OpenCV build decodes it) in which
the enrolled person walks up, a stranger walks up, then the enrolled person comes back inside
the cooldown; and demo/enroll/<Name>/ with three other photos of that person. `edge-app demo`
enrols the folder into a temporary gallery and runs the door on the clip with a mock relay.
The clip is deterministic, so rebuilding it gives the same frames.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import cv2

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from clips import Visit, build_clip  # noqa: E402

from edge_app.paths import SHARED_DATA  # noqa: E402

PERSON = "Ricardo_Lagos"
ENROL_PHOTOS = (1, 2, 3)
VISIT_PHOTOS = (22, 23)
STRANGER = ("John_Bolton", 10)
MAX_BYTES = 4 * 1024 * 1024

log = logging.getLogger("make_demo_clip")


def photo(lfw: Path, name: str, number: int) -> Path:
    return lfw / name / f"{name}_{number:04d}.jpg"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw", type=Path, default=SHARED_DATA / "lfw" / "images")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "demo")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.lfw.is_dir():
        log.error("LFW images not found at %s (pass --lfw)", args.lfw)
        return 2

    enrol_dir = args.out / "enroll" / PERSON
    if enrol_dir.exists():
        shutil.rmtree(enrol_dir)
    enrol_dir.mkdir(parents=True)
    for number in ENROL_PHOTOS:
        source = photo(args.lfw, PERSON, number)
        shutil.copyfile(source, enrol_dir / source.name)

    clip = build_clip(
        args.out / "door.mp4",
        [
            Visit(photo(args.lfw, PERSON, VISIT_PHOTOS[0]), start=0.5, stay=2.5),
            Visit(photo(args.lfw, *STRANGER), start=4.8, stay=2.5),
            Visit(photo(args.lfw, PERSON, VISIT_PHOTOS[1]), start=9.1, stay=2.0),
        ],
        fourcc="mp4v",
    )
    capture = cv2.VideoCapture(str(clip.path))
    decoded = 0
    while capture.read()[0]:
        decoded += 1
    capture.release()
    size = clip.path.stat().st_size
    if decoded != clip.frames or size > MAX_BYTES:
        log.error("bad clip: %d of %d frames decode, %d bytes", decoded, clip.frames, size)
        return 1
    log.info(
        "wrote %s: %d frames, %.1f s, %.2f MB; faces fully in view at %s s",
        clip.path,
        clip.frames,
        clip.duration,
        size / 1e6,
        ", ".join(f"{t:.1f}" for t in clip.appear),
    )
    log.info("wrote %s: %d photos", enrol_dir, len(ENROL_PHOTOS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
