"""Crafted photos whose header says one thing while the decoder would do another (network
audit 2, findings 6, 7, 9 and 10). Each is built here, small on disk, and refused before
OpenCV is asked to decode it, or decoded without the memory or the noise it used to cost.
Memory is measured in a child process (ru_maxrss is a high-water mark: the test process's
own peak would hide a decode's)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_app.images import ImageError, decode_image, read_header, read_image

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "tests" / "data" / "lfw_sample" / "Rick_Perry" / "Rick_Perry_0001.jpg"
SOF0, SOF2, SOS, APP15 = 0xC0, 0xC2, 0xDA, 0xEF
DAMAGED_FIX = "save or export the photo again from the original"
# MB a decode may grow the child's peak RSS by and still count as "never allocated the frame".
SMALL_GROWTH_MB = 40


# --- JPEG files, from segments -----------------------------------------------------------


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def segments(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """A well-formed JPEG's segments before its first scan, and the rest from that scan on."""
    at, found = 2, []
    while data[at + 1] != SOS:
        length = struct.unpack_from(">H", data, at + 2)[0]
        found.append((data[at + 1], data[at + 4 : at + 2 + length]))
        at += 2 + length
    return found, data[at:]


def jpeg(parts: list[tuple[int, bytes]], rest: bytes, before_marker: bytes = b"") -> bytes:
    return b"\xff\xd8" + b"".join(before_marker + segment(m, p) for m, p in parts) + rest


def sized(sof: bytes, width: int, height: int) -> bytes:
    return sof[:1] + struct.pack(">HH", height, width) + sof[5:]


def with_frame_size(data: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header declaring width x height (its scans unchanged:
    for files that must be refused before anything decodes them)."""
    parts, rest = segments(data)
    return jpeg([(m, sized(p, width, height) if m in (SOF0, SOF2) else p) for m, p in parts], rest)


def hidden_frame(width: int, height: int) -> bytes:
    """Finding 6: `FF 00` where the first marker must be, read by a strict walk as a segment
    of length 8 that lands on a 100x100 frame header inside an APP15 segment; libjpeg drops
    the `FF 00` as stuffing, skips APP15 whole and decodes the real frame, width x height."""
    parts, rest = segments(PHOTO.read_bytes())
    sof = next(p for m, p in parts if m == SOF0)
    app15 = segment(APP15, b"\x00\x00" + segment(SOF0, sized(sof, 100, 100)) + b"\x00\x00")
    head = b"\xff\xd8\xff\x00" + struct.pack(">H", 8) + app15
    assert head[12:14] == b"\xff\xc0"  # where the strict walk lands
    return (
        head + jpeg([(m, sized(p, width, height) if m == SOF0 else p) for m, p in parts], rest)[2:]
    )


def encoded(width: int, height: int, params: list[int]) -> bytes:
    pixels = np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", pixels, params)
    assert ok
    return data.tobytes()


def progressive(sampling: int) -> bytes:
    return encoded(
        64, 48, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling]
    )


def flat_jpeg(width: int, height: int, interleaved: bool) -> bytes:
    """A flat grey baseline 4:4:4 JPEG. One-bit Huffman codes (DC difference 0, AC end of
    block) make every 8x8 block two zero bits. Not interleaved: one scan per component, which
    makes libjpeg keep the whole frame's coefficients like a progressive JPEG (7008x7008:
    +316 MB against +71 MB interleaved, measured)."""
    components = (1, 2, 3)
    frame = bytes([8]) + struct.pack(">HH", height, width) + bytes([len(components)])
    frame += b"".join(bytes([c, 0x11, 0]) for c in components)
    one_code = bytes([1]) + bytes(15) + b"\x00"  # one code of length 1, for symbol 0
    blocks = -(-width // 8) * -(-height // 8)

    def scan(ids: tuple[int, ...]) -> bytes:
        bits = 2 * blocks * len(ids)
        data = bytes(bits // 8) + (bytes([(1 << (8 - bits % 8)) - 1]) if bits % 8 else b"")
        header = bytes([len(ids)]) + b"".join(bytes([c, 0]) for c in ids) + b"\x00\x3f\x00"
        return segment(SOS, header) + data

    scans = scan(components) if interleaved else b"".join(scan((c,)) for c in components)
    tables = segment(0xDB, b"\x00" + b"\x01" * 64) + segment(SOF0, frame)
    tables += segment(0xC4, b"\x00" + one_code + b"\x10" + one_code)
    return b"\xff\xd8" + tables + scans + b"\xff\xd9"


# --- TIFF files ----------------------------------------------------------------------------


def tiff(
    width: int,
    height: int,
    pixels: bytes,
    *,
    tile: tuple[int, int] | None = None,
    rows_per_strip: int | None = None,
    loop: bool = False,
) -> bytes:
    """A little-endian 8-bit RGB TIFF, uncompressed, its one strip (or tile) at offset 8.
    loop: the IFD names itself as the next one."""
    ifd_at = 8 + len(pixels) + len(pixels) % 2
    tags: dict[int, tuple[int, list[int]]] = {
        256: (4, [width]),
        257: (4, [height]),
        258: (3, [8, 8, 8]),
        259: (3, [1]),
        262: (3, [2]),
        277: (3, [3]),
    }
    if tile:
        tags.update({322: (4, [tile[0]]), 323: (4, [tile[1]]), 324: (4, [8])})
        tags[325] = (4, [len(pixels)])
    else:
        tags.update({273: (4, [8]), 278: (4, [rows_per_strip or height]), 279: (4, [len(pixels)])})
    extra_at = ifd_at + 2 + 12 * len(tags) + 4
    entries, extra = b"", b""
    for tag in sorted(tags):
        kind, values = tags[tag]
        packed = struct.pack("<" + ("H" if kind == 3 else "I") * len(values), *values)
        if len(packed) > 4:
            packed, extra = struct.pack("<I", extra_at + len(extra)), extra + packed
        entries += struct.pack("<HHI", tag, kind, len(values)) + packed.ljust(4, b"\x00")
    body = pixels + bytes(len(pixels) % 2) + struct.pack("<H", len(tags)) + entries
    return b"II*\x00" + struct.pack("<I", ifd_at) + body + struct.pack("<I", ifd_at * loop) + extra


def rgb(width: int, height: int) -> np.ndarray:
    return np.random.default_rng(9).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --- helpers -----------------------------------------------------------------------------


@pytest.fixture
def never_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The header check must refuse the file: OpenCV is not even asked."""

    def asked(*args: object, **kwargs: object) -> None:
        pytest.fail("cv2.imdecode was asked to decode a file the header check must refuse")

    monkeypatch.setattr(cv2, "imdecode", asked)


def refused(path: Path, message: str) -> None:
    with pytest.raises(ImageError) as caught:
        read_image(path)
    assert str(caught.value) == f"{path}: {message}"


DECODE_ELSEWHERE = textwrap.dedent(
    """
    import resource, sys
    assert "cv2" not in sys.modules
    import edge_app.quality  # loads cv2 before edge_app.images, as every edge-app command does
    from edge_app import images
    if sys.argv[2] == "fooled":  # a header check led astray, as finding 6's was
        fooled = images.ImageHeader("JPEG", 100, 100)
        images._header = lambda data: fooled
    data = open(sys.argv[1], "rb").read()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        outcome = "decoded %dx%d" % images.decode_image(data, "photo").shape[1::-1]
    except images.ImageError as error:
        outcome = "refused: %s" % error
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    print(outcome)
    """
)


def decode_elsewhere(path: Path, mode: str = "") -> tuple[int, str]:
    """decode_image(path) in a fresh interpreter where another module of the package loads
    cv2 first (and the environment does not set OpenCV's cap): how many MB its peak RSS
    grew, and the outcome."""
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", DECODE_ELSEWHERE, str(path), mode],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    grew, outcome = done.stdout.splitlines()
    return int(grew), outcome


# --- finding 6: the JPEG header is read as libjpeg reads it -------------------------------


def test_a_frame_hidden_behind_a_stuffed_zero_is_refused_before_decoding(
    tmp_path: Path, never_decoded: None
) -> None:
    path = tmp_path / "crafted.jpg"
    path.write_bytes(hidden_frame(12000, 12000))
    assert path.stat().st_size < 20_000
    assert read_header(path.read_bytes()) is None  # was JPEG 100x100
    refused(path, f"damaged JPEG header (at byte 2: ff 00 where a marker must be); {DAMAGED_FIX}")


@pytest.mark.parametrize(
    ("between", "what"),
    [(b"\x00\x00\x00", "byte 00 where a marker must be"), (b"\xff\x00", "ff 00 where")],
    ids=["garbage", "stuffed-zero"],
)
def test_bytes_libjpeg_would_skip_between_segments_are_a_damaged_header(
    tmp_path: Path, never_decoded: None, between: bytes, what: str
) -> None:
    """libjpeg skips them with a warning ("extraneous bytes before marker"); skipping is
    where two walks can part, so the header is refused rather than guessed at."""
    parts, rest = segments(PHOTO.read_bytes())
    at = 2 + len(segment(*parts[0]))
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg(parts[:1], b"") + between + jpeg(parts[1:], rest)[2:])
    with pytest.raises(ImageError, match=rf"damaged JPEG header \(at byte {at}: {what}"):
        read_image(path)


def test_fill_bytes_before_markers_are_still_a_photo(tmp_path: Path) -> None:
    """FF FF ... before a marker is legal padding: the same photo, pixel for pixel."""
    parts, rest = segments(PHOTO.read_bytes())
    path = tmp_path / "padded.jpg"
    path.write_bytes(jpeg(parts, b"\xff\xff\xff" + rest, before_marker=b"\xff\xff"))
    np.testing.assert_array_equal(read_image(path), read_image(PHOTO))


@pytest.mark.parametrize(
    ("keep", "message"),
    [
        (200, "truncated JPEG (cut inside its header): the file was cut short; copy or save"),
        (None, "the JPEG ends before its image (no scan); " + DAMAGED_FIX),
    ],
    ids=["cut", "end-before-scan"],
)
def test_a_jpeg_without_its_first_scan_says_so(
    tmp_path: Path, never_decoded: None, keep: int | None, message: str
) -> None:
    """The header is read up to the first scan (whether libjpeg keeps the whole frame is
    decided there), so a file that stops before it is named as cut, or as having no image."""
    parts, _ = segments(PHOTO.read_bytes())
    path = tmp_path / "photo.jpg"
    path.write_bytes(PHOTO.read_bytes()[:keep] if keep else jpeg(parts, b"\xff\xd9"))
    with pytest.raises(ImageError) as caught:
        read_image(path)
    assert str(caught.value).startswith(f"{path}: {message}")


def test_opencv_refuses_a_frame_the_header_check_missed_before_allocating_it(
    tmp_path: Path,
) -> None:
    """The second guard: OPENCV_IO_MAX_IMAGE_PIXELS, set by the edge_app package before
    any of its modules loads cv2. With the header check fooled (finding 6's 100x100 decoy),
    an 8000x8000 frame (192 MB of BGR) is refused by OpenCV before allocation, in one line."""
    path = tmp_path / "crafted.jpg"
    path.write_bytes(hidden_frame(8000, 8000))
    grew, outcome = decode_elsewhere(path, "fooled")
    assert outcome == (
        "refused: photo: the JPEG holds a frame larger than its header's 100x100 and than "
        f"the 50 megapixels allowed (a damaged or crafted file); {DAMAGED_FIX}"
    )
    assert grew < SMALL_GROWTH_MB


# --- finding 7: tiled TIFF ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "tile"), [(16, (16000, 16000)), (512, (256, 256))], ids=["bomb", "ordinary"]
)
def test_a_tiled_tiff_is_refused_before_decoding(
    tmp_path: Path, never_decoded: None, size: int, tile: tuple[int, int]
) -> None:
    """One 16000x16000 tile for a 16x16 image cost ~1 GB to decode (libtiff allocates the
    tile); no camera or phone writes tiles, so every tiled TIFF is refused."""
    path = tmp_path / "tiled.tif"
    path.write_bytes(tiff(size, size, bytes(3 * 16 * 16), tile=tile))
    assert read_header(path.read_bytes()) is None
    refused(
        path,
        "tiled TIFF is not supported (its tiles, not its size, set what decoding it takes); "
        "save the photo as JPEG or PNG",
    )


def test_a_strip_tiff_still_decodes_and_rows_per_strip_costs_nothing(tmp_path: Path) -> None:
    """Why RowsPerStrip needs no check (module docstring, rule 2): OpenCV reads at most the
    image's height of rows, whatever the tag declares."""
    pixels = rgb(16, 16)
    path = tmp_path / "strips.tif"
    path.write_bytes(tiff(16, 16, pixels.tobytes(), rows_per_strip=4_000_000))
    np.testing.assert_array_equal(read_image(path), pixels)
    grew, outcome = decode_elsewhere(path)
    assert outcome == "decoded 16x16" and grew < SMALL_GROWTH_MB


# --- finding 9: OpenCV's warnings ----------------------------------------------------------


def test_opencv_warnings_are_held_back_during_a_decode(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A TIFF whose IFD names itself as the next made libtiff print two raw "[ WARN:0@...]
    TIFF_Warning ... IFD looping" lines per decode; the photo itself is fine."""
    pixels = rgb(10, 10)
    path = tmp_path / "loop.tif"
    path.write_bytes(tiff(10, 10, pixels.tobytes(), loop=True))
    level = cv2.utils.logging.getLogLevel()
    np.testing.assert_array_equal(read_image(path), pixels)
    assert "WARN" not in capfd.readouterr().err
    # The camera's warnings (same logger) come through again once the decode is done.
    assert cv2.utils.logging.getLogLevel() == level


def test_the_log_level_comes_back_after_decodes_in_several_threads(tmp_path: Path) -> None:
    data = tiff(10, 10, rgb(10, 10).tobytes(), loop=True)
    level = cv2.utils.logging.getLogLevel()
    workers = [
        threading.Thread(target=lambda: [decode_image(data) for _ in range(30)]) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert cv2.utils.logging.getLogLevel() == level


# --- finding 10: progressive and multi-scan JPEGs ----------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # 875x875 blocks x 3 components x 128 bytes: the audit measured +318 MB.
        (
            with_frame_size(progressive(cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444), 7000, 7000),
            294_000_000,
        ),
        # 4:2:0: 750x500 luma blocks, 375x250 for each chroma: under the limit.
        (
            with_frame_size(progressive(cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420), 6000, 4000),
            72_000_000,
        ),
        # One scan per component: 876x876 blocks x 3 x 128 (measured +316 MB).
        (flat_jpeg(7008, 7008, interleaved=False), 294_672_384),
        # Baseline, interleaved: decoded as read, nothing kept.
        (flat_jpeg(7008, 7008, interleaved=True), 0),
        (with_frame_size(encoded(64, 48, []), 7000, 7000), 0),
    ],
    ids=["progressive-444", "progressive-420", "three-scans", "interleaved", "baseline"],
)
def test_the_header_says_what_libjpeg_keeps_of_the_frame(data: bytes, expected: int) -> None:
    header = read_header(data)
    assert header is not None and header.coefficient_bytes == expected


@pytest.mark.parametrize(
    "data",
    [
        with_frame_size(progressive(cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444), 7000, 7000),
        with_frame_size(flat_jpeg(64, 64, interleaved=False), 7000, 7000),
    ],
    ids=["progressive", "three-scans"],
)
def test_a_progressive_jpeg_is_bounded_by_the_coefficients_it_keeps(
    tmp_path: Path, never_decoded: None, data: bytes
) -> None:
    """49 MP is within MAX_PIXELS, and decoded at 1/4 scale, but libjpeg keeps the whole
    frame's coefficients first: 280 MB, refused from the header."""
    path = tmp_path / "progressive.jpg"
    path.write_bytes(data)
    assert len(data) < 20_000
    refused(
        path,
        "7000x7000 progressive (multi-scan) JPEG needs 280 MB to decode, more than the 100 MB "
        "allowed; resize the photo",
    )


def test_a_progressive_photo_within_the_limits_still_decodes() -> None:
    data = encoded(640, 480, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert decode_image(data).shape == (480, 640, 3)


def test_opencvs_cap_is_the_headers_limit() -> None:
    from edge_app import image_limits, images

    assert images.MAX_PIXELS == image_limits.MAX_PIXELS
    assert os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] == str(image_limits.MAX_PIXELS)
