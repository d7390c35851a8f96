"""A job submission's multipart body, parsed as it streams in: the `video` part goes straight to a file in
chunks (never whole in memory), text fields are bounded, and the upload is refused the moment it passes
the size limit, not after it has all arrived. The client's file name is kept as a label only; the file
is written under a random name the server chose."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from foleyscope.server.errors import ApiError

FIELDS = frozenset({"prompt", "negative_prompt", "steps", "cfg", "seed", "solver", "mux", "video"})
MAX_FIELD_BYTES = 16 << 10
FORM_OVERHEAD = 64 << 10  # multipart framing and text fields, allowed on top of the video


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    path: Path | None = None  # the video, under a server-chosen name
    filename: str = ""  # the client's name for it, as a label
    size: int = 0  # bytes of video
    sha256: str = ""  # of the fields and the video, for Idempotency-Key checks
    seconds: float = 0.0  # from the first body byte to the last


class _Parser:
    def __init__(self, folder: Path, limit: int) -> None:
        self.folder, self.limit = folder, limit
        self.out = Upload()
        self.hash = hashlib.sha256()
        self._file: IO[bytes] | None = None
        self._headers: dict[bytes, bytes] = {}
        self._hname, self._hvalue = b"", b""
        self._name: str | None = None
        self._text = bytearray()
        self.ended = False

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self._part_begin, "on_header_field": self._hfield, "on_header_value": self._hval,
                "on_header_end": self._hend, "on_headers_finished": self._headers_done,
                "on_part_data": self._data, "on_part_end": self._part_end, "on_end": self._end}

    def _part_begin(self) -> None:
        self._headers, self._name, self._text = {}, None, bytearray()

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def _hval(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def _hend(self) -> None:
        self._headers[self._hname.strip().lower()] = self._hvalue.strip()
        self._hname, self._hvalue = b"", b""

    def _headers_done(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name not in FIELDS:
            raise ApiError(422, "unknown_field", f"unknown form field {name!r}; expected {', '.join(sorted(FIELDS))}")
        if name == "video":
            if self.out.path is not None:
                raise ApiError(422, "bad_request", "send one video per job")
            self.out.filename = options.get(b"filename", b"").decode("utf-8", "replace")[-200:]
            self.out.path = self.folder / f"{secrets.token_hex(16)}.part"
            self._file = self.out.path.open("wb")
        elif name in self.out.fields:
            raise ApiError(422, "bad_request", f"form field {name!r} given twice")
        self._name = name
        self.hash.update(name.encode() + b"\0")

    def _data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        self.hash.update(chunk)
        if self._file is not None:
            self.out.size += len(chunk)
            if self.out.size > self.limit:
                raise ApiError(413, "too_large", f"the video is over the server's limit of {self.limit >> 20} MB")
            self._file.write(chunk)
        else:
            self._text += chunk
            if len(self._text) > MAX_FIELD_BYTES:
                raise ApiError(422, "bad_request", f"form field {self._name!r} is over {MAX_FIELD_BYTES >> 10} KB")

    def _part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self._name is not None:
            try:
                self.out.fields[self._name] = self._text.decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(422, "bad_request", f"form field {self._name!r} is not UTF-8 text") from None
        self.hash.update(b"\0")

    def _end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def boundary_of(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise ApiError(415, "unsupported_media_type",
                       "send multipart/form-data with a `video` file field and a `prompt` field")
    return options[b"boundary"]


async def receive_upload(stream: Any, content_type: str, folder: Path, limit: int,
                         metrics_bytes: Any = None) -> Upload:
    """Parse the body from `stream` (request.stream()); the video lands in `folder` as `<random>.part`.
    On any error the partial file is removed and ApiError (or the client's disconnect) propagates."""
    boundary = boundary_of(content_type)
    folder.mkdir(parents=True, exist_ok=True)
    p = _Parser(folder, limit)
    parser = MultipartParser(boundary, p.callbacks())
    start: float | None = None
    try:
        async for chunk in stream:
            if not chunk:
                continue
            start = start or time.perf_counter()
            if metrics_bytes is not None:
                metrics_bytes.inc(len(chunk))
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        _discard(p)
        raise ApiError(400, "bad_request", f"malformed multipart body ({exc})") from None
    except BaseException:
        _discard(p)
        raise
    p.close()
    p.out.seconds = time.perf_counter() - start if start else 0.0
    p.out.sha256 = p.hash.hexdigest()
    if not p.ended:
        _discard(p)
        raise ApiError(400, "bad_request", "the multipart body ended early (no closing boundary)")
    return p.out


def _discard(p: _Parser) -> None:
    p.close()
    if p.out.path is not None:
        p.out.path.unlink(missing_ok=True)
