"""Reading POST bodies with limits checked while the bytes arrive, never after.

Starlette's own form parser spools large uploads to a temporary file on disk; photos are
biometric data and must not land anywhere but the gallery, so uploads are parsed here, in
memory, by python-multipart's streaming parser. The request is refused as soon as its declared
length, its running length, its number of files or parts or the size of a plain field goes
over the limit, so a hostile client cannot make the hub buffer more than the limit (nor keep
the server's event loop busy parsing hundreds of thousands of empty parts). A plain field's
limit (FIELD_MAX_BYTES) is the same in both encodings, so no field of any form carries more
than that into the handlers (the gallery's name rules, for one, refuse longer input before
normalising it: edge_app.gallery.MAX_TYPED_NAME). A form whose text is not UTF-8, or a
multipart body that ends before its closing boundary, is refused (400) rather than read as
something else than what was sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

FIELD_MAX_BYTES = 16 * 1024  # a name, a reason, a token: never more
URLENCODED_MAX_BYTES = 64 * 1024
MAX_FIELDS = 100  # plain fields in one form (a multipart one may have its files on top)


class FormError(Exception):
    """The body breaks a limit or is malformed; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Upload:
    filename: str
    # The bytes as they were read (never copied: an upload of max_upload_mb is held once).
    data: bytes | bytearray


@dataclass
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: list[Upload] = field(default_factory=list)

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[0] if values else default


@dataclass(frozen=True)
class Limits:
    max_bytes: int = URLENCODED_MAX_BYTES
    max_files: int = 0


def _declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not (declared.isascii() and declared.isdigit()):  # "²" is a digit to isdigit()
        raise FormError("bad Content-Length", 400)
    if int(declared) > limit:
        raise FormError(f"the request is larger than the limit of {_megabytes(limit)}", 413)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.0f} MB" if size >= 1_000_000 else f"{size // 1000} kB"


async def read_form(request: Request, limits: Limits) -> Form:
    """The POST body as fields (and files, when `limits.max_files` allows any)."""
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    if kind == b"multipart/form-data":
        limit = URLENCODED_MAX_BYTES if limits.max_files == 0 else limits.max_bytes
        _declared_length(request, limit)
        boundary = params.get(b"boundary")
        if not boundary:
            raise FormError("multipart body without a boundary", 400)
        return await _read_multipart(request, boundary, limit, limits.max_files)
    if kind in (b"application/x-www-form-urlencoded", b""):
        _declared_length(request, URLENCODED_MAX_BYTES)
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > URLENCODED_MAX_BYTES:
                    raise FormError("the form is too large", 413)
        except ClientDisconnect:
            raise FormError("the client went away before the form ended", 400) from None
        form = Form()
        try:
            # errors="strict": a %-escape that is not UTF-8 is refused, not turned into U+FFFD.
            pairs = parse_qsl(
                body.decode("utf-8"),
                keep_blank_values=True,
                max_num_fields=MAX_FIELDS,
                errors="strict",
            )
        except (UnicodeDecodeError, ValueError) as error:
            raise FormError(f"malformed form ({error})", 400) from None
        for key, value in pairs:
            if len(value.encode("utf-8")) > FIELD_MAX_BYTES:
                raise _field_too_long(key)
            form.fields.setdefault(key, []).append(value)
        return form
    raise FormError(f"unsupported content type {kind.decode('latin-1')!r}", 415)


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)


def _field_too_long(name: str) -> FormError:
    """A plain field over FIELD_MAX_BYTES, in either encoding."""
    return FormError(f"the field {name[:100]!r} is too long", 413)


def _utf8(data: bytes | bytearray, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FormError(f"malformed upload ({what} is not UTF-8)", 400) from None


async def _read_multipart(request: Request, boundary: bytes, limit: int, max_files: int) -> Form:
    form = Form()
    part = _Part()
    parts = 0
    ended = False
    headers: dict[bytes, bytes] = {}
    name = bytearray()
    value = bytearray()

    def on_part_begin() -> None:
        nonlocal part, parts
        parts += 1
        if parts > max_files + MAX_FIELDS:
            raise FormError(f"more than {max_files + MAX_FIELDS} parts in one form", 413)
        headers.clear()
        part = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(name).lower()] = bytes(value)
        name.clear()
        value.clear()

    def on_headers_finished() -> None:
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise FormError("a form part without a name", 400)
        part.name = _utf8(options[b"name"], "a field's name")
        filename = options.get(b"filename")
        if filename is not None:
            if max_files == 0:
                raise FormError("this form takes no files", 400)
            if len(form.files) >= max_files:
                raise FormError(f"at most {max_files} photos per upload", 413)
            part.filename = filename.decode("utf-8", "replace")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part.data.extend(data[start:end])
        if part.filename is None and len(part.data) > FIELD_MAX_BYTES:
            raise _field_too_long(part.name)

    def on_part_end() -> None:
        data = part.data  # the next part gets a buffer of its own (on_part_begin)
        if part.filename is not None:
            # A file input left empty still sends one nameless, empty part.
            if part.filename or data:
                form.files.append(Upload(part.filename, data))
        else:
            form.fields.setdefault(part.name, []).append(_utf8(data, f"the field {part.name!r}"))

    def on_end() -> None:
        nonlocal ended
        ended = True

    received = 0
    try:
        # Inside the try: the parser refuses some boundaries (longer than 256 bytes) at once.
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": on_part_begin,
                "on_part_data": on_part_data,
                "on_part_end": on_part_end,
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_headers_finished": on_headers_finished,
                "on_end": on_end,
            },
        )
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise FormError(f"the upload is larger than the limit of {_megabytes(limit)}", 413)
            parser.write(chunk)
        parser.finalize()
    except FormError:
        raise
    except Exception as error:  # python-multipart raises its own errors on malformed bodies
        raise FormError(f"malformed upload ({error})", 400) from None
    if not ended:  # python-multipart's finalize() does not check this itself
        raise FormError("malformed upload (it ends before its closing boundary)", 400)
    return form
