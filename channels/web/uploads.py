"""Photos and documents attached to the web form: read within limits, then recognised by
their content.

A file is what its bytes say, not what its name or the browser claim: JPEG, PNG and
WebP photos and PDF documents are taken, anything else is refused, and a file whose name
or declared type says one kind while its content is another is refused too (a script
named ``anh.jpg``, a PDF named ``anh.png``). Photos are opened with Pillow only after
their size in pixels is known to be within ``[web] max_image_pixels``: a small file can
claim a picture that takes gigabytes to decode. File names with a path in them are
refused. Every problem is told beside the file field, with the citizen's text kept.

The body is read as a stream, so the limits hold without a Content-Length: the form's
fields within ``max_body_bytes``, each file within ``max_attachment_bytes``. A file past
its limit is read to its end without being kept, so the form can come back with a
message; a body past everything the form could hold is refused with 413.
"""

from __future__ import annotations

import io
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import unquote

from aiohttp import MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from contract.messages import Attachment

FIELD = "attachments"
MAX_PARTS = 40  # the form has about ten fields; more parts is not our form
CHUNK = 64 * 1024
KINDS = {  # content type: (what citizens call it, the extensions a file of it may have)
    "image/jpeg": ("JPEG", (".jpg", ".jpeg", ".jpe", ".jfif")),
    "image/png": ("PNG", (".png",)),
    "image/webp": ("WebP", (".webp",)),
    "application/pdf": ("PDF", (".pdf",)),
}
ACCEPT = ",".join(KINDS)  # the file input's accept attribute
_PILLOW_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
# Declared types that say nothing about the file; other declared types must fit the content.
_UNSAID = {"", "application/octet-stream", "binary/octet-stream", "application/x-download"}
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "application/x-pdf": "application/pdf"}
# Separators and drive or stream marks (a path, "C:x", "a.jpg:evil"), and control characters.
_BAD_NAME = re.compile(r"[/\\:\x00-\x1f\x7f]")


class TooLarge(Exception):
    """The body is larger than anything the form could hold: answer 413."""


class BadForm(Exception):
    """The body is not a form our page sends (malformed, unknown file field): answer 400."""


@dataclass(frozen=True)
class Problem:
    """Why the attached files cannot be taken: a text key under ``web.`` and its parameters."""

    key: str
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Upload:
    """A file as the browser sent it, not yet checked."""

    filename: str
    declared_type: str
    data: bytes


@dataclass
class PostedForm:
    """The form's text fields, its files, and the first problem found with the files."""

    fields: dict[str, str]
    files: list[Upload]
    problem: Problem | None = None


@dataclass(frozen=True)
class Limits:
    """How much the form may carry."""

    max_field_bytes: int
    max_files: int
    max_file_bytes: int
    max_pixels: int

    @property
    def max_total_bytes(self) -> int:
        """The largest body the form could need, with room for the multipart framing."""
        return self.max_field_bytes + self.max_files * (self.max_file_bytes + 4096)


def _shown(name: str) -> str:
    """A file name fit to quote in a message: printable, and short."""
    printable = "".join(c if c.isprintable() else "?" for c in name)
    return printable if len(printable) <= 60 else printable[:57] + "..."


async def _read(part, keep: int, cap: int) -> tuple[bytes, int]:
    """The first ``keep`` bytes of a part and its whole size, read to its end; TooLarge past ``cap``."""
    kept = bytearray()
    total = 0
    while chunk := await part.read_chunk(CHUNK):
        total += len(chunk)
        if total > cap:
            raise TooLarge
        if len(kept) < keep:
            kept += chunk[:keep - len(kept)]
    return bytes(kept), total


async def read_multipart(request: web.Request, limits: Limits) -> PostedForm:
    """Read a multipart form as a stream within the limits; raise TooLarge or BadForm."""
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError, LookupError) as error:
        raise BadForm(str(error)) from None
    form = PostedForm({}, [])
    field_bytes = 0
    body_bytes = 0
    parts = 0
    try:
        async for part in reader:
            parts += 1
            if isinstance(part, MultipartReader) or parts > MAX_PARTS or not part.name:
                raise BadForm("not the form's layout")
            if part.filename is None:
                remaining = limits.max_field_bytes - field_bytes
                data, size = await _read(part, remaining, remaining)
                field_bytes += size
                body_bytes += size
                charset = part.get_charset(default="utf-8")
                form.fields.setdefault(part.name, data.decode(charset, errors="replace"))
                continue
            if part.name != FIELD or limits.max_files == 0:
                raise BadForm(f"unexpected file field {part.name[:40]!r}")
            data, size = await _read(part, limits.max_file_bytes, limits.max_total_bytes - body_bytes)
            body_bytes += size
            if not part.filename and size == 0:
                continue  # the empty part a browser sends when no file was chosen
            if form.problem is not None:
                continue
            # Browsers escape only '"' and line ends (as %22, %0A); other clients percent-encode
            # every non-ASCII byte. Decoding both, then checking the name, catches "..%2F" too.
            name = unicodedata.normalize("NFC", unquote(part.filename, errors="replace"))
            if len(form.files) >= limits.max_files:
                form.problem = Problem("error_attachment_count", {"count": limits.max_files})
            elif size > limits.max_file_bytes:
                form.problem = Problem("error_attachment_large", {"name": _shown(name),
                                                                  "max_mb": megabytes(limits.max_file_bytes)})
            else:
                form.files.append(Upload(name, (part.headers.get("Content-Type") or "").lower(), data))
    # aiohttp's words for a malformed body: bad part headers, a bad boundary, a bad charset.
    except (ValueError, AssertionError, LookupError, HttpProcessingError) as error:
        raise BadForm(str(error)) from None
    return form


def megabytes(size: int) -> str:
    """A size in MB as citizens read it: 5, 2.5."""
    return f"{size / 1_048_576:.1f}".removesuffix(".0")


def sniff(data: bytes) -> str | None:
    """The content type the bytes are, among the kinds taken, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    return None


def _check_name(name: str) -> Problem | None:
    stem = name.strip()
    if not stem or stem in (".", "..") or _BAD_NAME.search(name) or len(name) > 200:
        return Problem("error_attachment_name", {"name": _shown(name)})
    return None


def _check_image(data: bytes, kind: str, name: str, max_pixels: int) -> Problem | None:
    """Open a photo only as far as needed: its header first, then its pixels within limits."""
    # Pillow is loaded with the first photo, not with the service: a process that never sees
    # one does not carry it (bench/README.md, "Memory").
    from PIL import Image

    damaged = Problem("error_attachment_damaged", {"name": _shown(name)})
    too_big = Problem("error_attachment_pixels", {"name": _shown(name), "max_mp": f"{max_pixels / 1e6:g}"})
    try:
        with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[kind]]) as image:
            width, height = image.size
            if width * height > max_pixels:
                return too_big
            if kind == "image/jpeg":
                # Decoding at an eighth of the size still reads every byte of the picture,
                # so a truncated or corrupt photo shows, in a fraction of the memory.
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                image.load()
            elif kind == "image/png":
                image.verify()  # every chunk's checksum, without inflating the pixels
            else:
                image.load()
    except Image.DecompressionBombError:
        return too_big
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombWarning):
        return damaged
    return None


def inspect(upload: Upload, max_pixels: int) -> Attachment | Problem:
    """The file as an Attachment of the type its content is, or the Problem with it.

    CPU work (decoding a photo): call it in a worker thread.
    """
    name = upload.filename
    problem = _check_name(name)
    if problem:
        return problem
    if not upload.data:
        return Problem("error_attachment_empty", {"name": _shown(name)})
    kind = sniff(upload.data)
    if kind is None:
        return Problem("error_attachment_type", {"name": _shown(name)})
    label, extensions = KINDS[kind]
    declared = upload.declared_type.split(";")[0].strip()
    declared = _ALIASES.get(declared, declared)
    suffix = PurePosixPath(name).suffix.lower()
    if (declared not in _UNSAID and declared != kind) or (suffix and suffix not in extensions):
        return Problem("error_attachment_mismatch", {"name": _shown(name), "kind": label})
    if kind == "application/pdf":
        # A PDF ends with %%EOF (give or take a line end); without it the file was cut short.
        if b"%%EOF" not in upload.data[-1024:]:
            return Problem("error_attachment_damaged", {"name": _shown(name)})
    else:
        problem = _check_image(upload.data, kind, name, max_pixels)
        if problem:
            return problem
    return Attachment(filename=name if suffix else name + extensions[0], content_type=kind, data=upload.data)
