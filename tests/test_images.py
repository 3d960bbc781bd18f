"""Photo loading under hostile input: real files made in the test, refused before any decoder
allocates, never a traceback, never a hang."""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_app import images
from edge_app.images import (
    MAX_DECODED_PIXELS,
    MAX_JPEG_SCANS,
    ImageError,
    expand_image_paths,
    image_files,
    load_photo,
    read_header,
    read_image,
)

TESTS_DATA = Path(__file__).resolve().parent / "data"
PHOTO = TESTS_DATA / "lfw_sample" / "Rick_Perry" / "Rick_Perry_0001.jpg"


def encode(suffix: str, rgb: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, data = cv2.imencode(suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params or [])
    assert ok
    return data.tobytes()


def textured(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def forged_png(width: int, height: int) -> bytes:
    """A small real PNG whose IHDR is rewritten to declare width x height (CRC fixed up)."""
    data = bytearray(encode(".png", textured(64, 64)))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def cut_jpeg(fraction: float, end_marker: bool = True) -> bytes:
    data = PHOTO.read_bytes()
    return data[: int(len(data) * fraction)] + (b"\xff\xd9" if end_marker else b"")


def refused(path: Path | str, match: str) -> None:
    with pytest.raises(ImageError, match=match):
        read_image(path)


@pytest.mark.parametrize(
    ("suffix", "params"),
    [
        (".png", []),
        (".jpg", []),
        (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        (".bmp", []),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),  # lossy: VP8
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),  # lossless: VP8L
        (".tiff", []),
    ],
)
def test_header_sizes_of_every_accepted_format(suffix: str, params: list[int]) -> None:
    data = encode(suffix, textured(37, 23), params)
    header = read_header(data)
    assert header is not None and (header.width, header.height) == (37, 23)
    assert images.decode_image(data, "x").shape == (23, 37, 3)


def test_a_real_photo_loads_with_its_hash() -> None:
    photo = load_photo(PHOTO)
    assert photo.pixels.shape == (250, 250, 3) and photo.pixels.dtype == np.uint8
    assert (photo.width, photo.height, photo.scale) == (250, 250, 1.0)
    assert photo.sha256 == hashlib.sha256(PHOTO.read_bytes()).hexdigest()
    # RGB, not OpenCV's BGR.
    bgr = cv2.imread(str(PHOTO))
    assert bgr is not None
    np.testing.assert_array_equal(photo.pixels, bgr[:, :, ::-1])


def test_a_forged_png_header_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(forged_png(30000, 30000))
    assert path.stat().st_size < 20_000
    refused(path, "declares 30000x30000 pixels, more than the 50 megapixels")


def test_a_png_too_large_to_decode_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(forged_png(5000, 4000))  # 20 MP: allowed as JPEG (reduced), not as PNG
    refused(path, "too large to decode")


def test_dev_zero_is_refused_without_reading() -> None:
    refused("/dev/zero", "not a regular file")


def test_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            read_image(fifo)
        except BaseException as error:  # handed to the main thread
            outcome.append(error)
        else:
            outcome.append(None)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(5)
    if worker.is_alive():
        # Unblock the reader so the test run can go on, then fail.
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO hung")
    assert isinstance(outcome[0], ImageError) and "not a regular file" in str(outcome[0])


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty file"),
        (
            b'[gallery]\npath = "/var/lib/edge-app/gallery.db"\n',
            "not a JPEG, PNG, BMP, WebP or TIFF image",
        ),
        # No frame header: the walk meets garbage where a marker must be, or runs off the end.
        (
            b"\xff\xd8\xff\xe0" + os.urandom(5000),
            r"damaged JPEG header \(at byte|truncated JPEG \(cut inside its header\)",
        ),
        (b"P6\n4 4\n255\n" + bytes(48), "not a JPEG, PNG"),  # PPM: OpenCV reads it, we do not
    ],
    ids=["empty", "toml", "jpeg-garbage", "ppm"],
)
def test_files_that_are_not_photos(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    refused(path, match)


def test_a_folder_and_a_missing_file(tmp_path: Path) -> None:
    refused(tmp_path, "is a folder")
    refused(tmp_path / "missing.jpg", "no such file")


def test_a_png_with_garbage_pixel_data_is_a_decoder_refusal(tmp_path: Path) -> None:
    data = bytearray(encode(".png", textured(64, 64)))
    start = data.index(b"IDAT") + 4
    data[start + 10 : start + 200] = os.urandom(190)
    path = tmp_path / "broken.png"
    path.write_bytes(bytes(data))
    refused(path, "OpenCV can decode|damaged|decoder failed")


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9, 0.995])
@pytest.mark.parametrize("end_marker", [True, False])
def test_a_cut_jpeg_is_refused_with_or_without_an_end_marker(
    tmp_path: Path, fraction: float, end_marker: bool
) -> None:
    path = tmp_path / "cut.jpg"
    path.write_bytes(cut_jpeg(fraction, end_marker))
    refused(path, "truncated JPEG")


def grey_cornered(progressive: bool) -> bytes:
    """A whole JPEG whose lower half is exactly the decoder's grey fill, (128, 128, 128): a
    photo against a #808080 backdrop."""
    image = np.full((96, 128, 3), 128, np.uint8)
    image[:40] = textured(128, 40, seed=3)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    if progressive:
        params += [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    return encode(".jpg", image, params)


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_a_whole_jpeg_whose_corner_is_the_grey_fill_loads_and_a_cut_one_does_not(
    tmp_path: Path, progressive: bool
) -> None:
    """A whole JPEG whose last 8x8 pixels were exactly (128, 128, 128) was refused as
    truncated: the grey libjpeg gives a cut file's missing blocks was the only sign read. A
    second decode with bytes inserted where its data ends tells the two apart: a whole file
    skips them, a cut one decodes them into the blocks it lacks."""
    whole = grey_cornered(progressive)
    path = tmp_path / "backdrop.jpg"
    path.write_bytes(whole)
    shown = read_image(path)
    assert np.all(shown[64:] == 128) and shown[:32].std() > 40  # the corner: the fill's grey
    path.write_bytes(whole + os.urandom(4096))  # and with a motion photo's video after it
    assert np.array_equal(read_image(path), shown)
    # Cut anywhere, the blocks it lacks would have been that grey too: refused all the same.
    for fraction in (0.3, 0.6, 0.9, 0.995):
        for end in (b"\xff\xd9", b""):
            path.write_bytes(whole[: int(len(whole) * fraction)] + end)
            if progressive and fraction < 0.9:
                continue  # its first scans hold the whole picture coarsely: no grey to find
            refused(path, "truncated JPEG")


def with_orientation(
    jpeg: bytes, orientation: int, big_endian: bool, kind: int = 3, damaged_first: bool = False
) -> bytes:
    """`jpeg` with an EXIF segment right after its start marker saying how to turn it, the
    tag of TIFF type `kind` (3 SHORT, 4 LONG, 8 SSHORT, 9 SLONG, 1 BYTE); damaged_first: after
    an EXIF segment whose TIFF header cannot be read."""
    order = ">" if big_endian else "<"
    tiff = (b"MM\0*" if big_endian else b"II*\0") + struct.pack(order + "I", 8)
    tiff += struct.pack(order + "H", 2)  # two entries: ImageWidth (a LONG), Orientation
    tiff += struct.pack(order + "HHII", 256, 4, 1, 640)
    value = {3: "H", 8: "h", 4: "I", 9: "i", 1: "B"}[kind]
    field = struct.pack(order + value, orientation).ljust(4, b"\0")
    tiff += struct.pack(order + "HHI", 274, kind, 1) + field + b"\0\0\0\0"

    def segment(body: bytes) -> bytes:
        return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body

    first = segment(b"Exif\0\0ZZ*\0" + bytes(20)) if damaged_first else b""
    return jpeg[:2] + first + segment(b"Exif\0\0" + tiff) + jpeg[2:]


# How each EXIF orientation turns the stored pixels for display (numpy on an (H, W) array).
DISPLAYED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a.transpose(1, 0, 2), 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("big_endian", [True, False])
def test_a_cut_jpeg_turned_by_its_exif_orientation_is_refused(
    tmp_path: Path, orientation: int, big_endian: bool
) -> None:
    """Found by an audit: the decoder turns the photo as its EXIF says, taking the cut file's
    grey fill from the bottom-right corner, the only one checked, and a photo cut at 60%
    with the eyes under grey was enrolled."""
    rows, columns = np.mgrid[0:128, 0:192]
    # Smooth, so that JPEG keeps it, and unlike itself turned or mirrored any way.
    stored = np.dstack([columns, rows * 2, (rows * columns) // 96]).astype(np.uint8)
    whole = encode(".jpg", stored, [cv2.IMWRITE_JPEG_QUALITY, 95])
    path = tmp_path / "turned.jpg"
    cut = whole[: int(len(whole) * 0.7)] + b"\xff\xd9"  # the decoder fills in what is cut
    path.write_bytes(with_orientation(cut, orientation, big_endian))
    refused(path, "truncated JPEG")
    # Whole, it loads turned as its EXIF says, the decoder's turn as the check's.
    path.write_bytes(with_orientation(whole, orientation, big_endian))
    shown = read_image(path)
    assert shown.shape == DISPLAYED[orientation](stored).shape
    assert np.abs(shown.astype(int) - DISPLAYED[orientation](stored)).mean() < 20


@pytest.mark.parametrize("orientation", [3, 6])
@pytest.mark.parametrize(
    ("kind", "damaged_first"),
    [(4, False), (8, False), (9, False), (1, False), (3, True)],
    ids=["long", "sshort", "slong", "byte", "after_a_damaged_segment"],
)
def test_a_cut_jpeg_is_refused_however_its_exif_orientation_is_written(
    tmp_path: Path, orientation: int, kind: int, damaged_first: bool
) -> None:
    """Found by a review: OpenCV turned photos whose Orientation was written as another
    integer type than SHORT, or in a second EXIF segment after a damaged one, which the
    check's own reading of the EXIF ignored: it looked in the wrong corner. The photo is now
    decoded as stored, checked, and turned by this reading alone."""
    rows, columns = np.mgrid[0:128, 0:192]
    stored = np.dstack([columns, rows * 2, (rows * columns) // 96]).astype(np.uint8)
    whole = encode(".jpg", stored, [cv2.IMWRITE_JPEG_QUALITY, 95])
    path = tmp_path / "turned.jpg"
    cut = whole[: int(len(whole) * 0.7)] + b"\xff\xd9"
    path.write_bytes(with_orientation(cut, orientation, False, kind, damaged_first))
    refused(path, "truncated JPEG")
    path.write_bytes(with_orientation(whole, orientation, True, kind, damaged_first))
    shown = read_image(path)
    assert np.abs(shown.astype(int) - DISPLAYED[orientation](stored)).mean() < 20


def scan_bomb(scans: int, side: int = 2000) -> bytes:
    """A progressive grey JPEG of `scans` copies of one tiny AC scan (runs of empty blocks):
    a few dozen bytes each, and libjpeg walks every block of the frame for each one."""

    def segment(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body

    blocks = (-(-side // 8)) ** 2
    head = b"\xff\xd8" + segment(0xDB, b"\x00" + bytes([1] * 64))
    head += segment(0xC2, struct.pack(">BHHB", 8, side, side, 1) + b"\x01\x11\x00")
    head += segment(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\xe0")  # symbol e0: 0, 14 bits
    bits = ("0" + "1" * 14) * -(-blocks // 32767)  # end-of-band runs of 32767 blocks
    bits += "1" * (-len(bits) % 8)
    data = bytearray()
    for start in range(0, len(bits), 8):
        data.append(int(bits[start : start + 8], 2))
        if data[-1] == 0xFF:
            data.append(0)
    scan = segment(0xDA, b"\x01\x01\x00\x01\x3f\x00") + bytes(data)
    return head + scan * scans + b"\xff\xd9"


def test_a_jpeg_of_thousands_of_scans_is_refused_before_decoding(tmp_path: Path) -> None:
    """Found by fuzzing: 100 kB of 55-byte scans kept libjpeg busy for 30-50 s (a 64 MB photo,
    hours), deaf to Ctrl-C, on every path that decodes a photo (enrol, identify, the web upload,
    an import's face crop); it was then refused as "truncated". A progressive photo has about
    10 scans, and one of MAX_JPEG_SCANS still loads."""
    path = tmp_path / "scans.jpg"
    path.write_bytes(scan_bomb(MAX_JPEG_SCANS + 1))
    refused(path, f"a JPEG of {MAX_JPEG_SCANS + 1} scans")
    header = read_header(scan_bomb(MAX_JPEG_SCANS))  # as many as allowed: past the header
    assert header is not None and (header.width, header.height) == (2000, 2000)
    progressive = encode(".jpg", textured(64, 64), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert progressive.count(b"\xff\xda") == 10
    path.write_bytes(progressive)
    assert read_image(path).shape == (64, 64, 3)
    # A phone's motion photo: a video after the end-of-image marker, whose bytes hold ff da
    # about once in 64 kB: not scans of the picture (8 MB of them held 136).
    trailer = np.random.default_rng(1).integers(0, 256, 8_000_000, dtype=np.uint8).tobytes()
    assert trailer.count(b"\xff\xda") > MAX_JPEG_SCANS
    path.write_bytes(progressive + trailer)
    assert read_image(path).shape == (64, 64, 3)


def test_data_after_the_end_marker_is_not_truncation(tmp_path: Path) -> None:
    """Phones append a motion-photo video after the JPEG: the picture itself is whole."""
    path = tmp_path / "motion.jpg"
    path.write_bytes(PHOTO.read_bytes() + os.urandom(4096))
    assert read_image(path).shape == (250, 250, 3)


def test_large_jpegs_decode_reduced_and_are_downscaled_for_detection(tmp_path: Path) -> None:
    big = cv2.resize(read_image(PHOTO), (6000, 4000), interpolation=cv2.INTER_LINEAR)
    assert MAX_DECODED_PIXELS < 6000 * 4000
    path = tmp_path / "big.jpg"
    path.write_bytes(encode(".jpg", big))
    full = read_image(path)
    assert full.shape == (2000, 3000, 3)  # libjpeg decoded it at 1/2
    photo = load_photo(path, max_side=1024)
    assert photo.pixels.shape == (683, 1024, 3)
    assert (photo.width, photo.height) == (6000, 4000)
    assert photo.scale == pytest.approx(1024 / 6000)


def test_a_file_over_the_size_cap_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 1000)
    path = tmp_path / "photo.jpg"
    path.write_bytes(PHOTO.read_bytes())
    refused(path, "more than the 1000 bytes allowed")


def test_folders_list_every_image_name_even_a_fifo(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(PHOTO.read_bytes())
    os.mkfifo(tmp_path / "b.jpg")
    (tmp_path / "notes.txt").write_text("x")
    paths = list(expand_image_paths([tmp_path]))
    assert [p.name for p in paths] == ["a.jpg", "b.jpg"]
    refused(paths[1], "not a regular file")


def test_folders_inside_a_folder_are_left_out_whatever_their_names(tmp_path: Path) -> None:
    """A sweep: a folder named like a photo inside the folder given ("2019.jpg/") was listed
    as a photo; `enroll` expands its list a second time, so it then enrolled the photos two
    levels deep, or, that folder empty, refused the whole enrolment with "no images found in
    2019.jpg", a folder the user never named. The listing is one level deep."""
    (tmp_path / "a.jpg").write_bytes(PHOTO.read_bytes())
    (tmp_path / "2019.jpg").mkdir()
    (tmp_path / "2020.png").mkdir()
    (tmp_path / "2020.png" / "b.jpg").write_bytes(PHOTO.read_bytes())
    assert [p.name for p in expand_image_paths([tmp_path])] == ["a.jpg"]
    listed = image_files([tmp_path])
    assert [p.name for p in listed] == ["a.jpg"]
    assert image_files(listed) == listed  # what enroll_photos does with the command's list


def test_folders_leave_out_hidden_files_but_a_named_one_is_read(tmp_path: Path) -> None:
    """macOS writes `._NAME.jpg` metadata beside each photo on a FAT card: not an image."""
    (tmp_path / "a.jpg").write_bytes(PHOTO.read_bytes())
    (tmp_path / "._a.jpg").write_bytes(b"\x00\x05\x16\x07" + bytes(100))
    assert [p.name for p in expand_image_paths([tmp_path])] == ["a.jpg"]
    named = tmp_path / "._a.jpg"
    assert list(expand_image_paths([named])) == [named]  # named explicitly: read, and refused


def test_files_a_folder_holds_that_are_not_photos_by_name_are_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by a walkthrough: a phone's folder of .JPG and .HEIC photos enrolled from the
    JPEGs alone, the others left out without a word. They are named in one warning (hidden
    files, metadata, are not); a folder of photos only says nothing."""
    (tmp_path / "a.JPG").write_bytes(PHOTO.read_bytes())
    (tmp_path / "b.HEIC").write_bytes(b"heic")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "._a.JPG").write_bytes(b"\x00")
    (tmp_path / "sub").mkdir()
    with caplog.at_level(logging.WARNING, logger="edge_app.images"):
        assert [p.name for p in image_files([tmp_path])] == ["a.JPG"]
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"left out 2 file(s) of {tmp_path} that are not photos by their name: ")
    assert "b.HEIC, notes.txt (photos end in .bmp, .jpeg, .jpg" in line
    caplog.clear()
    (tmp_path / "b.HEIC").unlink()
    (tmp_path / "notes.txt").unlink()
    with caplog.at_level(logging.WARNING, logger="edge_app.images"):
        image_files([tmp_path, tmp_path / "a.JPG"])
    assert caplog.records == []


# --- transparency (rule 6) ------------------------------------------------------------------


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def handmade_png(pixels: np.ndarray, colour_type: int, *chunks: tuple[bytes, bytes]) -> bytes:
    """A PNG written byte by byte (OpenCV writes no grey-and-alpha or palette PNG): 8-bit
    samples, rows unfiltered, `chunks` (PLTE, tRNS) before the pixels."""
    height, width = pixels.shape[:2]
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    rows = pixels.reshape(height, -1)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + b"".join(_png_chunk(kind, body) for kind, body in chunks)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


def _with_alpha(suffix: str, rgb: np.ndarray, alpha: int) -> bytes:
    """`rgb` with every pixel's alpha `alpha` (0 to 255), written as `suffix` describes."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    bgra = np.dstack([bgr, np.full(rgb.shape[:2], alpha, np.uint8)])
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if suffix == "png16":
        return cv2.imencode(".png", bgra.astype(np.uint16) * 257)[1].tobytes()
    if suffix == "png-grey-alpha":
        return handmade_png(np.dstack([grey, np.full(grey.shape, alpha, np.uint8)]), 4)
    if suffix == "png-palette-trns":  # a palette of the 256 greys, each of that alpha
        palette = bytes(np.repeat(np.arange(256, dtype=np.uint8), 3))
        return handmade_png(grey, 3, (b"PLTE", palette), (b"tRNS", bytes([alpha]) * 256))
    if suffix == "webp-lossy":
        return cv2.imencode(".webp", bgra, [cv2.IMWRITE_WEBP_QUALITY, 90])[1].tobytes()
    if suffix == "webp-lossless":
        return cv2.imencode(".webp", bgra, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
    return cv2.imencode(suffix, bgra)[1].tobytes()


TRANSPARENT_KINDS = [
    ".png", "png16", "png-grey-alpha", "png-palette-trns", "webp-lossy", "webp-lossless", ".tiff"
]  # fmt: skip


@pytest.mark.parametrize("kind", TRANSPARENT_KINDS)
def test_a_transparent_image_is_laid_on_white_so_nothing_hidden_under_it_is_read(
    kind: str,
) -> None:
    """Found by an audit: OpenCV's colour decode dropped the alpha and kept the colour
    stored under it, so a PNG that every viewer shows blank enrolled the face hidden in it."""
    photo = read_image(PHOTO)
    header = images.read_header(_with_alpha(kind, photo, 0))
    assert header is not None and header.transparent  # read with the size, in one pass
    clear = images.decode_image(_with_alpha(kind, photo, 0), "clear")
    assert clear.shape == photo.shape and np.all(clear == 255)  # what a viewer shows: nothing

    grey = kind in ("png-grey-alpha", "png-palette-trns")
    seen = np.repeat(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)[:, :, None], 3, 2) if grey else photo
    opaque = images.decode_image(_with_alpha(kind, photo, 255), "opaque")
    lossy = kind == "webp-lossy"
    assert np.abs(opaque.astype(int) - seen).mean() < (3 if lossy else 0.01)

    half = images.decode_image(_with_alpha(kind, photo, 128), "half")
    blend = seen.astype(float) * 128 / 255 + 255 * 127 / 255
    assert np.abs(half - blend).mean() < (3 if lossy else 0.51)


def test_images_without_transparency_decode_as_before() -> None:
    """Only files that declare transparency take the alpha decode: the rest are decoded by
    OpenCV's colour decode as they always were, pixel for pixel."""
    photo = read_image(PHOTO)
    for suffix, params in [(".png", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 90]), (".tiff", [])]:
        data = encode(suffix, photo, params)
        header = images.read_header(data)
        assert header is not None and not header.transparent, suffix
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert decoded is not None
        expected = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
        assert np.array_equal(images.decode_image(data), expected), suffix


def test_transparency_is_found_as_the_decoder_finds_it_not_by_bytes_that_look_like_it() -> None:
    """A PNG whose palette transparency (tRNS) follows a text chunk holding the bytes "IDAT",
    and a WebP with alpha whose header flag says none: found by walking the chunks, as the
    decoders do. A WebP whose decoder then gives no alpha decodes as OpenCV's colour decode."""
    photo = read_image(PHOTO)
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    palette = bytes(np.repeat(np.arange(256, dtype=np.uint8), 3))
    decoy = (b"tEXt", b"Comment\0IDAT before the palette's transparency")
    hidden = handmade_png(grey, 3, decoy, (b"PLTE", palette), (b"tRNS", bytes(256)))
    assert hidden.index(b"IDAT") < hidden.index(b"tRNS")  # a search for IDAT stops too soon
    assert np.all(images.decode_image(hidden, "hidden") == 255)

    flagged = bytearray(_with_alpha("webp-lossy", photo, 0))
    assert flagged[12:16] == b"VP8X" and b"ALPH" in flagged
    flagged[20] &= ~0x10  # the alpha flag cleared; the ALPH chunk left
    unflagged = bytes(flagged)
    decoded = images.decode_image(unflagged, "unflagged")
    colour = cv2.imdecode(np.frombuffer(unflagged, np.uint8), cv2.IMREAD_COLOR)
    assert colour is not None
    assert np.array_equal(decoded, cv2.cvtColor(colour, cv2.COLOR_BGR2RGB))
