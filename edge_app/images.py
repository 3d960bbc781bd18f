"""Reading photos from disk into the engine's frame convention: RGB uint8, (H, W, 3).

Every photo the app reads (enroll, identify, the folder camera, eval, the converter) and every
face crop an import carries goes through this module, because a photo is untrusted input: a
few kilobytes can declare a 30000x30000 image, a path can name a pipe that never ends or
/dev/zero, and a cut-off JPEG decodes without complaint. The rules, in order:

1. Regular files only, of at most MAX_IMAGE_BYTES, read by edge_app.bounded_read: a FIFO, a
   device or a socket is refused without being opened, and what was opened is checked again
   (so a swap in between cannot slip a pipe in).
2. The header is parsed here, before any decoder runs: PNG (IHDR), JPEG (the first SOF,
   read on to the first scan), BMP, WebP (VP8, VP8L, VP8X) and TIFF (the first IFD). Any
   other format is refused, and so is an image declaring more than MAX_PIXELS. The size must
   be the one the decoder will use, so JPEG markers are found as libjpeg's next_marker finds
   them: fill bytes (FF FF ...) before a marker are fine, but where libjpeg would skip bytes
   to find the next marker (FF 00, or anything else where a marker must be) the header is
   refused as damaged. A walk that goes on differently from there can be led onto a small
   frame header hidden in an APP segment that libjpeg skips whole, and libjpeg then
   allocates the real frame (a 14 kB file "of 100x100" decoded at 12000x12000: about 1 GB).
   A tiled TIFF is refused: libtiff allocates a whole tile whatever the image's size (a
   16x16 image with one 16000x16000 tile: about 1 GB), and no camera or phone writes tiles,
   so bounding them would keep a code path no photo needs. RowsPerStrip needs no check:
   OpenCV reads at most the image's height of rows per strip (a 16x16 TIFF declaring
   4,000,000 rows per strip decodes in 1 MB).
   Behind the header check, OpenCV's own cap (OPENCV_IO_MAX_IMAGE_PIXELS, set to MAX_PIXELS
   by the edge_app package unless the environment sets it) refuses a larger frame before
   allocating it. OpenCV reads it once, when cv2 loads, so it holds where cv2 was first
   imported after the edge_app package (every edge-app command, the door, the hub).
3. Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself (IMREAD_REDUCED_*), so
   that the decoded image has at most MAX_DECODED_PIXELS. That bounds the memory of a
   baseline JPEG, which libjpeg decodes as it reads, but not of a progressive one (or any
   JPEG whose first scan holds only some of its colour components): libjpeg keeps all its
   DCT coefficients at full resolution, 2 bytes each, until the last scan, whatever the
   scale (a 7000x7000 4:4:4 progressive JPEG: about 300 MB for a 3500x3500 decode). Those are
   refused when the coefficients would take more than MAX_COEFFICIENT_BYTES. Decoder
   failures and a decoded size that disagrees with the header are refusals, not tracebacks;
   OpenCV's warnings are held back during a decode (its errors still print); libjpeg's own
   one-line warnings ("Corrupt JPEG data: ...") go to standard error regardless.
4. Truncation: libjpeg fills what a cut-off JPEG lacks with exactly (128, 128, 128) grey and
   only warns, with or without an end-of-image marker appended to hide the cut (and data
   after the marker, such as a phone's motion-photo video, is legitimate, so the marker
   proves nothing). A JPEG whose last 8x8 pixels (scaled with the decode) are exactly that
   grey, the last as the file stores them, is decoded a second time with _CUT_PROBE's bytes
   inserted where its image data ends (before the end-of-image marker, or at the end of a
   file without one). A whole JPEG has decoded every block by then and skips them, so the
   picture is the same: its corner really is that grey (a backdrop of #808080). A cut one
   decodes them into the blocks it lacks, so the picture changes: refused as truncated.
   A JPEG is decoded as stored (IMREAD_IGNORE_ORIENTATION), checked, then
   turned as its EXIF orientation says (_TURNS, from this module's own reading of the first
   EXIF segment it can read, whatever integer type the tag is written as). None of the 7,607
   real JPEGs in ../shared/data ends in that grey, every baseline JPEG cut at 30, 60, 90 or
   99.9% of its length does. A progressive JPEG cut short decodes at lower detail instead of
   grey (its first scans hold the whole image coarsely); enrolment's blur gate judges it.
6. Transparency: what a viewer shows of a transparent PNG, WebP or TIFF is its pixels laid on
   a background, but OpenCV's colour decode drops the alpha and keeps the colour stored
   under it, which no viewer shows (a fully transparent PNG can hide a face, which would be
   enrolled). Such an image is decoded with its alpha (IMREAD_UNCHANGED) and laid on white,
   so a cut-out portrait enrols as its face on white and a hidden face is not there. It is
   used as stored: OpenCV applies no EXIF orientation to an image decoded with its alpha.
7. load_photo() also downscales to at most max_side pixels on the long side before detection,
   and says by how much, so callers can report boxes in the photo's own pixels.
"""

from __future__ import annotations

import hashlib
import logging
import re
import stat
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from edge_app import image_limits
from edge_app.bounded_read import NotRegularFile, TooLarge, read_bounded
from edge_app.errors import UserError, first_few

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
FORMATS = ("JPEG", "PNG", "BMP", "WebP", "TIFF")
# A 48-megapixel phone photo is 12 MB as JPEG; nothing the door needs comes near these.
MAX_IMAGE_BYTES = 64 * 1024 * 1024
# Also OpenCV's own cap, OPENCV_IO_MAX_IMAGE_PIXELS (rule 2; set by edge_app/__init__.py).
MAX_PIXELS = image_limits.MAX_PIXELS
# Larger JPEGs decode reduced (rule 3); other formats above it are refused (PNG, BMP, WebP
# and TIFF decoders cannot reduce).
MAX_DECODED_PIXELS = image_limits.MAX_DECODED_PIXELS
# What libjpeg may keep of a progressive (or multi-scan) JPEG before it decodes (rule 3): 2
# bytes per DCT coefficient of the whole frame, at any scale. A 16-megapixel 4:4:4 frame keeps
# 96 MB (up to 3% more in whole 8x8 blocks), so every JPEG decoded at full scale passes; a
# progressive 4:2:0 photo (1.5 coefficients per pixel) passes up to about 34 megapixels.
MAX_COEFFICIENT_BYTES = 100 * 1024 * 1024
# Scans one JPEG may have. An encoder writes 1 (baseline) or about 10 (progressive: libjpeg's
# script has 10 for colour, 6 for grey); libjpeg walks every block of the frame for each, so
# a 100 kB file of thousands of tiny scans kept it busy for a minute, unstoppable by Ctrl-C.
MAX_JPEG_SCANS = 100
# Photos for enroll and identify are brought down to this long side before detection: faces
# stay far above the 64 px enrolment minimum and the P-Net pyramid stays small.
MAX_SIDE = 2048
GREY_FILL = 128  # libjpeg's value for data it never received
# A PNG ends with this chunk (length 0, type IEND, its CRC); without it the file was cut.
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# What a user does about a photo cut short (an interrupted copy, download or card write).
CUT_FIX = "the file was cut short; copy or save the photo again"
# What a user does about a photo whose header is malformed or crafted.
DAMAGED_FIX = "save or export the photo again from the original"
TRUNCATION_BLOCK = 8
# Entropy-coded bytes for the truncation probe (rule 4): varied, so that they decode to
# coefficients, not to runs of zeros that would leave a block grey; never 0xff, which
# would start a marker and end the scan.
_CUT_PROBE = bytes((index * 151 + 89) % 255 for index in range(256))

_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}
_REDUCED[8] = cv2.IMREAD_REDUCED_COLOR_8
# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}
_JPEG_SOI, _JPEG_EOI, _JPEG_SOS, _JPEG_APP1 = 0xD8, 0xD9, 0xDA, 0xE1
_EXIF = b"Exif\0\0"
_EXIF_ORIENTATION = 274
# How a JPEG's EXIF orientation turns its pixels as stored for display (libjpeg decodes them
# as stored, IMREAD_IGNORE_ORIENTATION, so that the truncation check sees the file's last block
# where the file has it; the turn is then this module's, from its own reading of the EXIF).
_TURNS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda image: cv2.flip(image, 1),  # mirrored left to right
    3: lambda image: cv2.rotate(image, cv2.ROTATE_180),
    4: lambda image: cv2.flip(image, 0),  # mirrored top to bottom
    5: lambda image: cv2.transpose(image),
    6: lambda image: cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE),
    7: lambda image: cv2.rotate(cv2.transpose(image), cv2.ROTATE_180),
    8: lambda image: cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE),
}
# The sizes of the TIFF value types an Orientation may be written as (struct formats).
_TIFF_VALUES = {1: "B", 3: "H", 4: "I", 6: "b", 7: "B", 8: "h", 9: "i"}
# A marker: ff, then a byte other than 00 (a stuffed ff in scan data), a restart marker (which
# stays inside a scan) or ff (a fill byte before the marker).
_JPEG_NEXT_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
_JPEG_BLOCK_BYTES = 64 * 2  # one 8x8 block of 16-bit DCT coefficients
# TIFF tags, and the colour samples of each photometric interpretation: white or black is
# zero (grey), RGB, palette, CMYK (4, none of them alpha), YCbCr.
_TIFF_PHOTOMETRIC, _TIFF_SAMPLES_PER_PIXEL, _TIFF_EXTRA_SAMPLES = 262, 277, 338
_TIFF_COLOURS = {0: 1, 1: 1, 2: 3, 3: 1, 5: 4, 6: 3}
# PNG colour types with an alpha channel: grey and alpha (4), RGBA (6).
_PNG_ALPHA_COLOUR_TYPES = {4, 6}
WHITE = 255  # what a transparent image is laid on (rule 6)
_FLATTEN_ROWS = 512
# TileWidth, TileLength, TileOffsets, TileByteCounts: any of them makes libtiff read tiles.
_TIFF_TILE_TAGS = {322, 323, 324, 325}


class ImageError(UserError):
    """A file that is not a readable, complete, reasonably sized image."""


class _HeaderRefused(Exception):
    """A header read_header cannot vouch for; the message says why and what to do (without
    the photo's name). read_header() returns None for it, decode_image() says it."""


@dataclass(frozen=True)
class ImageHeader:
    """format, and the size the decoder will use; coefficient_bytes: what libjpeg keeps for
    the whole frame before decoding a progressive or multi-scan JPEG (rule 3), else 0."""

    format: str
    width: int
    height: int
    coefficient_bytes: int = 0
    orientation: int = 1  # a JPEG's EXIF orientation (1-8), which _decode applies
    # A JPEG's offset where its image data ends: its end-of-image marker, or the file's end
    # when it has none (a cut file); the truncation probe goes there (rule 4).
    image_end: int = 0
    transparent: bool = False  # declares transparency, laid on white by _decode (rule 6)


@dataclass(frozen=True)
class Photo:
    """A photo as loaded for detection.

    pixels: RGB uint8 (H, W, 3), possibly smaller than the file's image; scale: pixels per
    pixel of the original (1.0 when not reduced), so a box in `pixels` / scale is in the
    photo's own coordinates; sha256: of the file's bytes.
    """

    pixels: np.ndarray
    sha256: str
    width: int
    height: int
    scale: float


def _u16be(data: bytes, at: int) -> int:
    return int(struct.unpack_from(">H", data, at)[0])


def _jpeg_damaged(at: int, what: str) -> _HeaderRefused:
    return _HeaderRefused(f"damaged JPEG header (at byte {at}: {what}); {DAMAGED_FIX}")


def _jpeg_header(data: bytes) -> ImageHeader:
    """The frame libjpeg will decode: its first SOF, read up to the first scan (rule 2).

    Markers are found as libjpeg's next_marker finds them, except that what it skips with a
    warning is refused here, so that this walk and libjpeg's never part. A second SOF or SOI,
    or an EOI before any scan, is refused as libjpeg refuses it; so is running out of bytes.
    """
    cut = _HeaderRefused(f"truncated JPEG (cut inside its header): {CUT_FIX}")
    at, frame = 2, None  # frame: the first SOF's marker, segment and offset
    orientation: int | None = None  # from the first EXIF segment that can be read
    while True:
        if at >= len(data):
            raise cut
        if data[at] != 0xFF:
            raise _jpeg_damaged(at, f"byte {data[at]:02x} where a marker must be")
        while at + 1 < len(data) and data[at + 1] == 0xFF:  # fill bytes before a marker
            at += 1
        if at + 1 >= len(data):
            raise cut
        marker = data[at + 1]
        if marker == 0x00:
            raise _jpeg_damaged(at, "ff 00 where a marker must be")
        if marker == _JPEG_SOI:
            raise _jpeg_damaged(at, "a second start-of-image marker")
        if marker == _JPEG_EOI:
            raise _HeaderRefused(f"the JPEG ends before its image (no scan); {DAMAGED_FIX}")
        at += 2
        if marker in _JPEG_STANDALONE:
            continue
        if at + 2 > len(data):
            raise cut
        length = _u16be(data, at)
        if length < 2:
            raise _jpeg_damaged(at, f"segment length {length}")
        if at + length > len(data):
            raise cut
        segment = data[at + 2 : at + length]
        if marker == _JPEG_APP1 and orientation is None and segment.startswith(_EXIF):
            orientation = _exif_orientation(segment[len(_EXIF) :])
        if marker in _JPEG_SOF:
            if frame is not None:
                raise _jpeg_damaged(at - 2, "a second frame header")
            frame = (marker, segment, at - 2)
        elif marker == _JPEG_SOS:
            if frame is None:
                raise _jpeg_damaged(at - 2, "a scan before the frame header")
            scans, image_end = _jpeg_scans(data, at - 2)
            if scans > MAX_JPEG_SCANS:
                raise _HeaderRefused(
                    f"a JPEG of {scans} scans (a photo has at most about 10; more than "
                    f"{MAX_JPEG_SCANS} takes the decoder minutes): {DAMAGED_FIX}"
                )
            header = _jpeg_frame(*frame, scan_components=segment[0] if segment else 0)
            return replace(header, orientation=orientation or 1, image_end=image_end)
        at += length


def _exif_orientation(tiff: bytes) -> int | None:
    """The Orientation tag (274) of an EXIF segment's first image directory, whatever integer
    type it is written as; 1 (as stored) when it has none or holds no value from 1 to 8;
    None when the segment's TIFF header or directory cannot be read (the next one is)."""
    directory = _tiff_directory(tiff)
    if directory is None:
        return None
    order, entries, _ = directory
    for tag, kind, value_at in entries:
        if tag == _EXIF_ORIENTATION and kind in _TIFF_VALUES:
            (value,) = struct.unpack_from(order + _TIFF_VALUES[kind], tiff, value_at)
            return value if 1 <= value <= 8 else 1
    return 1


def _jpeg_scans(data: bytes, at: int) -> tuple[int, int]:
    """How many scans the JPEG has, from its first scan's marker at `at` to its end-of-image
    marker (what follows, a phone's motion-photo video say, is not the image), counting only
    up to MAX_JPEG_SCANS + 1; and where its image data ends: the offset of that marker, or
    the file's length when it has none. Segments are stepped over by their length; a scan's
    data is skipped to the next marker (inside it an ff byte is followed by 00 or a restart
    marker)."""
    scans = 0
    while scans <= MAX_JPEG_SCANS:
        marker = data[at + 1]
        if marker == _JPEG_EOI:
            return scans, at
        following = at + 2
        if marker not in _JPEG_STANDALONE:
            if following + 2 > len(data):
                break
            following += _u16be(data, following)
        if marker == _JPEG_SOS:
            scans += 1
        found = _JPEG_NEXT_MARKER.search(data, following)
        if found is None:  # cut short: the decoder says so
            break
        at = found.start()
    return scans, len(data)


def _jpeg_frame(marker: int, sof: bytes, at: int, scan_components: int) -> ImageHeader:
    """The header a SOF segment (after its length; at: its marker's offset) describes, with
    the coefficient memory libjpeg allocates when it must keep the whole frame (jdcoefct.c:
    each component's blocks, rounded up to whole MCUs, 64 coefficients of 2 bytes each)."""
    count = sof[5] if len(sof) > 5 else 0
    if count == 0 or len(sof) != 6 + 3 * count:
        raise _jpeg_damaged(at, "a frame header of the wrong length")
    height, width = _u16be(sof, 1), _u16be(sof, 3)
    factors = [(sof[7 + 3 * index] >> 4, sof[7 + 3 * index] & 0x0F) for index in range(count)]
    if any(not (1 <= h <= 4 and 1 <= v <= 4) for h, v in factors):
        raise _jpeg_damaged(at, "a frame header with bad sampling factors")
    coefficient_bytes = 0
    # libjpeg keeps every coefficient when the image is not decoded in one interleaved scan.
    if marker in _JPEG_PROGRESSIVE or scan_components < count:
        max_h, max_v = max(h for h, _ in factors), max(v for _, v in factors)
        for h, v in factors:
            blocks_wide = -(-width * h // (max_h * 8))
            blocks_high = -(-height * v // (max_v * 8))
            blocks_wide, blocks_high = -(-blocks_wide // h) * h, -(-blocks_high // v) * v
            coefficient_bytes += blocks_wide * blocks_high * _JPEG_BLOCK_BYTES
    return ImageHeader("JPEG", width, height, coefficient_bytes)


def _tiff_directory(tiff: bytes) -> tuple[str, list[tuple[int, int, int]], bool] | None:
    """A TIFF's byte order (a struct prefix), its first image directory's entries that lie
    wholly in `tiff` as (tag, value type, offset of the value field), and whether every
    entry did; None without a TIFF header or a directory. (A TIFF file, and a JPEG's EXIF
    segment after its "Exif\0\0", are both this.)"""
    if len(tiff) < 8 or tiff[:4] not in (b"II*\0", b"MM\0*"):
        return None
    order = "<" if tiff[:2] == b"II" else ">"
    (offset,) = struct.unpack_from(order + "I", tiff, 4)
    if offset + 2 > len(tiff):
        return None
    (count,) = struct.unpack_from(order + "H", tiff, offset)
    whole = min(count, (len(tiff) - offset - 2) // 12)
    entries = [
        (*struct.unpack_from(order + "HH", tiff, at), at + 8)
        for at in range(offset + 2, offset + 2 + 12 * whole, 12)
    ]
    return order, entries, whole == count


# A TIFF's first image directory as _tiff_tags reads it: tag -> values, and whether whole.
_TiffTags = tuple[dict[int, list[int | None]], bool]


def _tiff_tags(data: bytes) -> _TiffTags | None:
    """A TIFF's first image directory as tag -> the values of its entries (a tag may be
    written twice), each an integer when of type SHORT or LONG, else None; and whether every
    entry lay wholly in `data`. None without a directory."""
    directory = _tiff_directory(data)
    if directory is None:
        return None
    order, entries, complete = directory
    tags: dict[int, list[int | None]] = {}
    for tag, kind, value_at in entries:
        value_format = {3: "H", 4: "I"}.get(kind)
        value = None
        if value_format is not None:
            value = int(struct.unpack_from(order + value_format, data, value_at)[0])
        tags.setdefault(tag, []).append(value)
    return tags, complete


def _tiff_size(read: _TiffTags | None) -> tuple[int, int] | None:
    """The size in a TIFF's directory as _tiff_tags read it."""
    if read is None:
        return None
    tags, complete = read
    if _TIFF_TILE_TAGS & tags.keys():
        raise _HeaderRefused(
            "tiled TIFF is not supported (its tiles, not its size, set what decoding it "
            "takes); save the photo as JPEG or PNG"
        )
    width, height = tags.get(256, []), tags.get(257, [])
    # A second size (which one is read?) or one of another type: no size.
    if not complete or len(width) != 1 or len(height) != 1:
        return None
    if width[0] is None or height[0] is None:
        return None
    return width[0], height[0]


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return struct.unpack_from("<H", data, 26)[0] & 0x3FFF, struct.unpack_from("<H", data, 28)[
            0
        ] & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


# Whether the file declares transparency (rule 6), by format: a PNG with an alpha channel
# or a tRNS chunk before its pixels, a WebP with alpha, a TIFF with extra samples
# (_tiff_extra_samples). BMP is left out: OpenCV reads a 32-bit BMP's fourth byte, which
# most writers leave 0, as opaque pixels.


def _png_transparent(data: bytes) -> bool:
    if len(data) > 25 and data[25] in _PNG_ALPHA_COLOUR_TYPES:
        return True
    return b"tRNS" in _chunk_types(data, 8, png=True, stop=b"IDAT")


def _webp_transparent(data: bytes) -> bool:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) > 20 and data[20] & 0x10:
        return True
    if chunk == b"VP8L":
        return len(data) >= 25 and bool(int.from_bytes(data[21:25], "little") >> 28 & 1)
    # libwebp decodes an ALPH chunk's alpha whatever the VP8X flags say
    return b"ALPH" in _chunk_types(data, 12, png=False)


def _chunk_types(data: bytes, at: int, *, png: bool, stop: bytes | None = None) -> set[bytes]:
    """The types of the chunks from `at` on, walked by their lengths as a decoder walks
    them (a type's bytes inside another chunk's data are no chunk), up to the first `stop`:
    a PNG's (big-endian length, type, data, CRC) or a RIFF file's (type, little-endian
    length, data padded to an even length)."""
    types: set[bytes] = set()
    while at + 8 <= len(data):
        if png:
            (length,) = struct.unpack_from(">I", data, at)
            kind, length = data[at + 4 : at + 8], length + 4
        else:
            (length,) = struct.unpack_from("<I", data, at + 4)
            kind, length = data[at : at + 4], length + (length & 1)
        if kind == stop:
            break
        types.add(kind)
        at += 8 + length
    return types


def _tiff_extra_samples(read: _TiffTags | None) -> bool:
    """Whether a TIFF (its directory as _tiff_tags read it) has samples besides its colour
    ones: an ExtraSamples tag, or more samples per pixel than its photometric
    interpretation's colours (OpenCV writes RGBA so, and libtiff then reads the fourth as an
    extra sample)."""
    if read is None:
        return False
    tags = read[0]
    if _TIFF_EXTRA_SAMPLES in tags:
        return True
    photometric = tags.get(_TIFF_PHOTOMETRIC, [None])[0]
    samples = tags.get(_TIFF_SAMPLES_PER_PIXEL, [1])[0]
    colours = _TIFF_COLOURS.get(photometric if photometric is not None else -1)
    return colours is not None and samples is not None and samples > colours


def _flattened(image: np.ndarray, name: str) -> np.ndarray:
    """A transparent image (decoded IMREAD_UNCHANGED: BGRA, grey and alpha, or without alpha
    after all) as 3-channel BGR uint8, laid on white (rule 6)."""
    if image.dtype == np.uint16:  # as libpng strips 16-bit samples to 8: the high byte
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(
            f"{name}: a transparent image of {image.dtype} samples; save it as 8-bit, or "
            "without transparency"
        )
    if image.ndim == 2:
        image = image[:, :, np.newaxis]
    channels = image.shape[2]
    if channels not in (1, 2, 3, 4):
        raise ImageError(f"{name}: an image of {channels} channels; save it as RGB or RGBA")
    if channels == 3:  # no alpha after all (a WebP whose ALPH chunk libwebp does not use)
        return image
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    colour = image[:, :, :3] if channels == 4 else image[:, :, :1]
    alpha = image[:, :, -1:]
    out = np.empty((*image.shape[:2], 3), np.uint8)
    for top in range(0, image.shape[0], _FLATTEN_ROWS):  # bounded temporaries
        rows = slice(top, top + _FLATTEN_ROWS)
        a = alpha[rows].astype(np.uint16)
        # colour * a + white * (255 - a), rounded: at most 65,152, within uint16
        out[rows] = (colour[rows] * a + WHITE * (255 - a) + 127) // 255
    return out


def read_header(data: bytes) -> ImageHeader | None:
    """The format and declared size from the first bytes, or None for anything else.

    None also covers a known format whose header is cut, malformed or refused (a tiled
    TIFF): a file is only handed to a decoder once its size is known.
    """
    try:
        return _header(data)
    except _HeaderRefused:
        return None


def _header(data: bytes) -> ImageHeader | None:
    """read_header(), but a header this module refuses raises _HeaderRefused saying why."""
    size: tuple[int, int] | None = None
    name = ""
    transparent = False
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
            name, size = "PNG", struct.unpack_from(">II", data, 16)
            transparent = _png_transparent(data)
        elif data[:3] == b"\xff\xd8\xff":
            return _jpeg_header(data)
        elif data[:2] == b"BM" and len(data) >= 26:
            header_size = struct.unpack_from("<I", data, 14)[0]
            name = "BMP"
            if header_size == 12:
                size = struct.unpack_from("<HH", data, 18)
            else:
                width, height = struct.unpack_from("<ii", data, 18)
                size = (width, abs(height))
        elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            name, size = "WebP", _webp_size(data)
            transparent = _webp_transparent(data)
        elif data[:4] in (b"II*\x00", b"MM\x00*") and len(data) >= 8:
            tags = _tiff_tags(data)
            name, size = "TIFF", _tiff_size(tags)
            transparent = _tiff_extra_samples(tags)
    except struct.error:
        return None
    if size is None:
        return None
    return ImageHeader(name, int(size[0]), int(size[1]), transparent=transparent)


def _read_regular_file(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (module docstring, rule 1)."""
    try:
        return read_bounded(path, limit)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except NotRegularFile as error:
        if error.kind == "folder":
            raise ImageError(f"{path}: is a folder, not an image") from None
        raise ImageError(
            f"{path}: not a regular file (a device, pipe or socket); give a photo file"
        ) from None
    except TooLarge as error:
        size = "" if error.size is None else f"{error.size} bytes, "
        raise ImageError(f"{path}: {size}more than the {limit} bytes allowed") from None
    except OSError as error:
        raise unreadable(path, error) from None


def unreadable(path: Path, error: OSError, what: str = "") -> ImageError:
    """The refusal of a photo, or of a folder of them (`what`: "the folder"), that the system
    would not let us reach: no permission, a name too long, an I/O error."""
    thing = f" {what}" if what else ""
    return ImageError(f"{path}: cannot read{thing} ({error.strerror or error})")


# OpenCV's log level is one setting for the whole process; decodes may run in several threads.
_quiet_lock = threading.Lock()
_quiet_decodes = 0
_loud_level = 0


@contextmanager
def _opencv_quiet() -> Iterator[None]:
    """OpenCV's logger at errors only while a decode runs: a damaged or crafted photo makes
    libtiff and OpenCV print raw warning lines, without the photo's name, before the one
    line that refuses it. Only for the decode: the door's camera warnings (a V4L2 select()
    timeout, a GStreamer pipeline) go through the same logger and are worth keeping."""
    global _quiet_decodes, _loud_level
    with _quiet_lock:
        if _quiet_decodes == 0:
            _loud_level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(min(_loud_level, cv2.utils.logging.LOG_LEVEL_ERROR))
        _quiet_decodes += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_decodes -= 1
            if _quiet_decodes == 0:
                cv2.utils.logging.setLogLevel(_loud_level)


def _decoder_refusal(name: str, header: ImageHeader, error: cv2.error) -> ImageError:
    """One line for an OpenCV exception: its own size cap (rule 2) said plainly, anything
    else as OpenCV's message without its source path or line breaks."""
    text = " ".join(str(error).split())
    if "validateInputImageSize" in text:
        return ImageError(
            f"{name}: the {header.format} holds a frame larger than its header's "
            f"{header.width}x{header.height} and than the {MAX_PIXELS // 1_000_000} megapixels "
            f"allowed (a damaged or crafted file); {DAMAGED_FIX}"
        )
    return ImageError(
        f"{name}: the {header.format} decoder failed ({text.partition(' error: ')[2] or text})"
    )


def _looks_truncated(rgb: np.ndarray, block: int) -> bool:
    """Whether the decoded image's last block, as the file stores it (bottom right, before
    any EXIF turn), is all the decoder's grey fill."""
    return bool(np.all(rgb[-block:, -block:] == GREY_FILL))


def _cut_short(data: bytes, header: ImageHeader, flags: int, decoded: np.ndarray) -> bool:
    """Whether a JPEG that looks truncated is: decoded again with _CUT_PROBE's bytes where
    its image data ends, a whole one gives the same picture and a cut one another (rule 4).
    libjpeg warns of the probe's bytes on standard error when it skips them, as for any
    bytes between a scan and the next marker."""
    probe = data[: header.image_end] + _CUT_PROBE + data[header.image_end :]
    try:
        with _opencv_quiet():
            again = cv2.imdecode(np.frombuffer(probe, np.uint8), flags)
    except (cv2.error, MemoryError):
        return True
    return again is None or not np.array_equal(again, decoded)


def decode_image(data: bytes, name: str = "image", max_side: int | None = None) -> np.ndarray:
    """Checked decode of an image file's bytes to RGB uint8 (module docstring, rules 2-7).

    max_side: shrink so that the longer side is at most this many pixels (None: keep).
    """
    return _decode(data, name, max_side)[0]


def _decode(data: bytes, name: str, max_side: int | None) -> tuple[np.ndarray, ImageHeader]:
    if not data:
        raise ImageError(f"{name}: empty file")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"{name}: {len(data)} bytes, more than the {MAX_IMAGE_BYTES} allowed")
    try:
        header = _header(data)
    except _HeaderRefused as problem:
        raise ImageError(f"{name}: {problem}") from None
    if header is None:
        raise ImageError(
            f"{name}: cannot decode: not a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} image "
            "(or its header is damaged)"
        )
    width, height = header.width, header.height
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: {header.format} header declares a {width}x{height} image")
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{name}: {header.format} header declares {width}x{height} pixels, more than the "
            f"{MAX_PIXELS // 1_000_000} megapixels allowed; resize the photo"
        )
    if header.coefficient_bytes > MAX_COEFFICIENT_BYTES:
        raise ImageError(
            f"{name}: {width}x{height} progressive (multi-scan) JPEG needs "
            f"{header.coefficient_bytes // 2**20} MB to decode, more than the "
            f"{MAX_COEFFICIENT_BYTES // 2**20} MB allowed; resize the photo"
        )
    reduction = 1
    if header.format == "JPEG":
        while width * height > MAX_DECODED_PIXELS * reduction * reduction and reduction < 8:
            reduction *= 2
    if width * height > MAX_DECODED_PIXELS * reduction * reduction:
        raise ImageError(
            f"{name}: {width}x{height} {header.format} is too large to decode here "
            f"(at most {MAX_DECODED_PIXELS // 1_000_000} megapixels); resize the photo"
        )
    if header.format == "PNG" and PNG_END not in data:
        # Refused before libpng sees it, which would print its own "libpng error" line.
        raise ImageError(f"{name}: truncated PNG (no IEND end chunk): {CUT_FIX}")
    flags = _REDUCED[reduction]
    if header.format == "JPEG":  # as stored: turned below, after the truncation check
        flags |= cv2.IMREAD_IGNORE_ORIENTATION
    transparent = header.transparent
    if transparent:  # with its alpha, laid on white below (rule 6)
        flags = cv2.IMREAD_UNCHANGED
    try:
        with _opencv_quiet():
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as error:
        raise _decoder_refusal(name, header, error) from None
    except MemoryError:
        raise ImageError(
            f"{name}: not enough memory to decode this {header.format}; resize the photo"
        ) from None
    if bgr is None and header.format == "JPEG" and b"\xff\xd9" not in data[-1024:]:
        raise ImageError(f"{name}: truncated JPEG (no end-of-image marker): {CUT_FIX}")
    if bgr is not None and transparent:
        bgr = _flattened(bgr, name)
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ImageError(f"{name}: not a {header.format} image OpenCV can decode")
    expected = (-(-height // reduction), -(-width // reduction))
    # Another format's EXIF orientation may have turned the decoded image by 90 degrees
    # (not a transparent one: IMREAD_UNCHANGED decodes as stored).
    turned = (expected,) if header.format == "JPEG" or transparent else (expected, expected[::-1])
    if bgr.shape[:2] not in turned:
        raise ImageError(
            f"{name}: decoded {bgr.shape[1]}x{bgr.shape[0]}, but the header says "
            f"{width}x{height}: the file is damaged"
        )
    block = max(1, TRUNCATION_BLOCK // reduction)
    if (
        header.format == "JPEG"
        and _looks_truncated(bgr, block)
        and _cut_short(data, header, flags, bgr)
    ):
        raise ImageError(f"{name}: truncated JPEG (its end is the decoder's grey fill): {CUT_FIX}")
    if header.orientation in _TURNS:
        bgr = _TURNS[header.orientation](bgr)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)
    if max_side is not None and max(rgb.shape[:2]) > max_side:
        factor = max_side / max(rgb.shape[:2])
        size = (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return rgb, header


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes | None:
    """An RGB image as JPEG bytes at `quality` (0-100); None when OpenCV cannot encode it."""
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    return data.tobytes() if ok else None


def is_photo_name(path: Path) -> bool:
    """Whether a folder's entry is one of its photos by name: an image suffix, and not hidden
    (macOS leaves a "._NAME.jpg" of metadata beside each photo it copies)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_image(path: Path | str, max_side: int | None = None) -> np.ndarray:
    """A photo file as RGB uint8, checked as the module docstring says."""
    return load_photo(path, max_side).pixels


def load_photo(path: Path | str, max_side: int | None = MAX_SIDE) -> Photo:
    """A photo file, checked, decoded and brought down to max_side, with its file hash."""
    path = Path(path)
    data = _read_regular_file(path, MAX_IMAGE_BYTES)
    pixels, header = _decode(data, str(path), max_side)
    # The longer decoded side against the longer declared side: EXIF may have rotated it.
    scale = max(pixels.shape[:2]) / max(header.width, header.height)
    return Photo(pixels, hashlib.sha256(data).hexdigest(), header.width, header.height, scale)


def expand_image_paths(paths: Iterable[Path | str]) -> Iterator[Path]:
    """Files as given, and the images inside folders (sorted, one level deep: the folders
    inside are left out, whatever their names). Hidden files in a folder are left out: macOS
    writes `._IMG_0001.jpg` beside each photo on a FAT or exFAT card, metadata that is not an
    image and would fail the whole enrolment.

    A path the system will not look at (no permission on its folder, a name too long) is
    yielded as a file: reading it is then that photo's refusal, as for any unreadable photo.
    A folder that cannot be listed is an ImageError."""
    for raw in paths:
        path = Path(raw)
        try:
            folder = stat.S_ISDIR(path.stat().st_mode)
        except OSError:
            folder = False
        if not folder:
            yield path
            continue
        try:
            # A folder inside named like a photo ("2019.jpg") is a folder, left out as any
            # other: enroll expands the list again, which would read the photos in it (two
            # levels deep) or, were it empty, refuse the whole enrolment ("no images found").
            names = sorted(p for p in path.iterdir() if is_photo_name(p) and not p.is_dir())
        except OSError as error:
            raise unreadable(path, error, "the folder") from None
        yield from names


def image_files(paths: Sequence[Path | str]) -> list[Path]:
    """expand_image_paths as a list; a UserError when a folder given holds no image (a
    mistyped folder beside photos that do exist was skipped without a word). Files of a
    folder left out as not photos by their name (a phone's .heic) are named in a warning."""
    found: list[Path] = []
    for path in paths:
        images = list(expand_image_paths([path]))
        if not images:
            raise UserError(
                f"no images found in {path}: give photo files or folders holding "
                f"{', '.join(sorted(IMAGE_SUFFIXES))} files"
            )
        others = _not_photos(Path(path))
        if others:
            log.warning(
                "left out %d file(s) of %s that are not photos by their name: %s (photos end "
                "in %s; convert the others, or name a file to have it read whatever its name)",
                len(others),
                path,
                first_few(others, 3),
                ", ".join(sorted(IMAGE_SUFFIXES)),
            )
        found += images
    return found


def _not_photos(folder: Path) -> list[str]:
    """The names of a folder's visible regular files that are not photos by name (empty for a
    file, or a folder that cannot be listed: expand_image_paths says so)."""
    try:
        entries = sorted(folder.iterdir()) if folder.is_dir() else []
    except OSError:
        return []
    return [
        entry.name
        for entry in entries
        if not entry.name.startswith(".") and not is_photo_name(entry) and entry.is_file()
    ]
