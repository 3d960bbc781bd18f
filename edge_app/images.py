"""Reading photos from disk into the engine's frame convention: RGB uint8, (H, W, 3).

Every photo the app reads (enroll, identify, the folder camera, eval, the converter) and every
face crop an import carries goes through this module, because a photo is untrusted input: a
few kilobytes can declare a 30000x30000 image, a path can name a pipe that never ends or
/dev/zero, and a cut-off JPEG decodes without complaint. The rules, in order:

1. Regular files only, of at most MAX_IMAGE_BYTES, read by edge_app.bounded_read: a FIFO, a
   device or a socket is refused without being opened, and what was opened is checked again
   (so a swap in between cannot slip a pipe in).
2. The header is parsed here, before any decoder runs: PNG (IHDR), JPEG (the SOF marker),
   BMP, WebP (VP8, VP8L, VP8X) and TIFF (the first IFD). Any other format is refused, and so
   is an image declaring more than MAX_PIXELS.
3. Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself (IMREAD_REDUCED_*), so
   that no more than MAX_DECODED_PIXELS are ever allocated; decoder failures and a decoded
   size that disagrees with the header are refusals, not tracebacks.
4. Truncation: libjpeg fills what a cut-off JPEG lacks with exactly (128, 128, 128) grey and
   only warns, with or without an end-of-image marker appended to hide the cut (and data
   after the marker, such as a phone's motion-photo video, is legitimate, so the marker
   proves nothing). The last
   8x8 pixels (scaled with the decode) being exactly that grey is refused: none of the 7,607
   real JPEGs in ../shared/data ends that way, every baseline JPEG cut at 30, 60, 90 or
   99.9% of its length does. A progressive JPEG cut short decodes at lower detail instead of
   grey (its first scans hold the whole image coarsely); enrolment's blur gate judges it.
5. load_photo() also downscales to at most max_side pixels on the long side before detection,
   and says by how much, so callers can report boxes in the photo's own pixels.
"""

from __future__ import annotations

import hashlib
import stat
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_app.bounded_read import NotRegularFile, TooLarge, read_bounded
from edge_app.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
FORMATS = ("JPEG", "PNG", "BMP", "WebP", "TIFF")
# A 48-megapixel phone photo is 12 MB as JPEG; nothing the door needs comes near these.
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_PIXELS = 50_000_000
# What a decode may allocate: 16 MP is 48 MB of RGB. Larger JPEGs decode reduced (rule 3);
# other formats above it are refused (PNG, BMP, WebP and TIFF decoders cannot reduce).
MAX_DECODED_PIXELS = 16_000_000
# Photos for enroll and identify are brought down to this long side before detection: faces
# stay far above the 64 px enrolment minimum and the P-Net pyramid stays small.
MAX_SIDE = 2048
GREY_FILL = 128  # libjpeg's value for data it never received
# A PNG ends with this chunk (length 0, type IEND, its CRC); without it the file was cut.
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# What a user does about a photo cut short (an interrupted copy, download or card write).
CUT_FIX = "the file was cut short; copy or save the photo again"
TRUNCATION_BLOCK = 8

_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}
_REDUCED[8] = cv2.IMREAD_REDUCED_COLOR_8
# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}


class ImageError(UserError):
    """A file that is not a readable, complete, reasonably sized image."""


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int


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


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker in _JPEG_STANDALONE:
            at += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        if marker in _JPEG_SOF:
            if at + 9 > len(data):
                return None
            return _u16be(data, at + 7), _u16be(data, at + 5)
        at += 2 + _u16be(data, at + 2)
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack_from(order + "I", data, 4)
    if offset + 2 > len(data):
        return None
    (count,) = struct.unpack_from(order + "H", data, offset)
    found: dict[int, int] = {}
    for index in range(count):
        entry = offset + 2 + 12 * index
        if entry + 12 > len(data):
            return None
        tag, kind, _ = struct.unpack_from(order + "HHI", data, entry)
        if tag in (256, 257):
            value_format = {3: "H", 4: "I"}.get(kind)
            if value_format is None:
                return None
            found[tag] = int(struct.unpack_from(order + value_format, data, entry + 8)[0])
    if 256 not in found or 257 not in found:
        return None
    return found[256], found[257]


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


def read_header(data: bytes) -> ImageHeader | None:
    """The format and declared size from the first bytes, or None for anything else.

    None also covers a known format whose header is cut or malformed: a file is only
    handed to a decoder once its size is known.
    """
    size: tuple[int, int] | None = None
    name = ""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
            name, size = "PNG", struct.unpack_from(">II", data, 16)
        elif data[:3] == b"\xff\xd8\xff":
            name, size = "JPEG", _jpeg_size(data)
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
        elif data[:4] in (b"II*\x00", b"MM\x00*") and len(data) >= 8:
            name, size = "TIFF", _tiff_size(data)
    except struct.error:
        return None
    if size is None:
        return None
    return ImageHeader(name, int(size[0]), int(size[1]))


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


def _looks_truncated(rgb: np.ndarray, block: int) -> bool:
    corner = rgb[-block:, -block:]
    return bool(np.all(corner == GREY_FILL))


def decode_image(data: bytes, name: str = "image", max_side: int | None = None) -> np.ndarray:
    """Checked decode of an image file's bytes to RGB uint8 (module docstring, rules 2-5).

    max_side: shrink so that the longer side is at most this many pixels (None: keep).
    """
    return _decode(data, name, max_side)[0]


def _decode(data: bytes, name: str, max_side: int | None) -> tuple[np.ndarray, ImageHeader]:
    if not data:
        raise ImageError(f"{name}: empty file")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"{name}: {len(data)} bytes, more than the {MAX_IMAGE_BYTES} allowed")
    header = read_header(data)
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
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED[reduction])
    except (cv2.error, MemoryError) as error:
        raise ImageError(f"{name}: the {header.format} decoder failed ({error})") from None
    if bgr is None and header.format == "JPEG" and b"\xff\xd9" not in data[-1024:]:
        raise ImageError(f"{name}: truncated JPEG (no end-of-image marker): {CUT_FIX}")
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ImageError(f"{name}: not a {header.format} image OpenCV can decode")
    expected = (-(-height // reduction), -(-width // reduction))
    # EXIF orientation may have turned the decoded image by 90 degrees.
    if bgr.shape[:2] not in (expected, expected[::-1]):
        raise ImageError(
            f"{name}: decoded {bgr.shape[1]}x{bgr.shape[0]}, but the header says "
            f"{width}x{height}: the file is damaged"
        )
    if header.format == "JPEG" and _looks_truncated(bgr, max(1, TRUNCATION_BLOCK // reduction)):
        raise ImageError(f"{name}: truncated JPEG (its end is the decoder's grey fill): {CUT_FIX}")
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
    """Files as given, and the images inside folders (sorted, one level deep). Hidden files
    in a folder are left out: macOS writes `._IMG_0001.jpg` beside each photo on a FAT or
    exFAT card, metadata that is not an image and would fail the whole enrolment.

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
            names = sorted(p for p in path.iterdir() if is_photo_name(p))
        except OSError as error:
            raise unreadable(path, error, "the folder") from None
        yield from names


def image_files(paths: Sequence[Path | str]) -> list[Path]:
    """expand_image_paths as a list; a UserError when there is none (only empty folders)."""
    found = list(expand_image_paths(paths))
    if not found:
        raise UserError(
            f"no images found in {', '.join(map(str, paths))}: give photo files or folders "
            f"holding {', '.join(sorted(IMAGE_SUFFIXES))} files"
        )
    return found
