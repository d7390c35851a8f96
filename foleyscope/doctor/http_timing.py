"""Timing one HTTP generation request from the client: upload, server wait and download, apart.

The body counts as uploaded when the kernel's send queue is empty (Linux SIOCOUTQ: every byte
acknowledged by the server), not when `send` returns into a multi-megabyte socket buffer; otherwise
a slow upload is booked as server time. Used by the doctor's service audit (checks/service.py); the
request itself is a pluggable `RequestShape` so foleyscope's own job API can be timed the same way.
"""

from __future__ import annotations

import http.client
import json
import mimetypes
import os
import select
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from foleyscope import __version__
from foleyscope.errors import FoleyscopeError

CHUNK = 64 * 1024


@dataclass
class Timing:
    """One request, split at the moments the client can observe."""

    status: int
    body_bytes: int
    upload_s: float  # connect + send the body until every byte is acknowledged
    wait_s: float  # body acknowledged -> first byte of the answer: the server's time
    download_s: float  # the answer's body
    total_s: float
    start: float = 0.0  # perf_counter, for concurrency analysis
    end: float = 0.0
    reported_processing_s: float | None = None
    reported_load_s: float | None = None
    upload_clock: str = "acked"  # "acked" (send queue drained) or "sent" (send returned; an underestimate)
    label: str = ""


class RequestShape(Protocol):
    """How one generation request is made. The doctor's default is MultipartShape (any server); a
    job-API shape for foleyscope's own server (submit, then follow the job) plugs in here."""

    name: str

    def send(self, url: str, video_path: str, prompt: str, timeout_s: float) -> Timing: ...


@dataclass
class MultipartShape:
    """POST multipart/form-data: a text field with the prompt and a file field with the video."""

    video_field: str = "video"
    prompt_field: str = "prompt"
    extra_fields: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    name: str = "multipart"

    def send(self, url: str, video_path: str, prompt: str, timeout_s: float) -> Timing:
        boundary = "foleyscope-" + uuid.uuid4().hex
        head, tail = self._frame(boundary, video_path, prompt)
        size = os.path.getsize(video_path)
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Accept": "*/*",
                   "User-Agent": f"foleyscope-doctor/{__version__}", "Connection": "close", **self.headers}

        def body(conn: http.client.HTTPConnection) -> None:
            conn.send(head)
            with open(video_path, "rb") as f:
                while chunk := f.read(CHUNK):
                    conn.send(chunk)
            conn.send(tail)

        return timed_request(url, "POST", headers, len(head) + size + len(tail), body, timeout_s)

    def _frame(self, boundary: str, video_path: str, prompt: str) -> tuple[bytes, bytes]:
        fields = {self.prompt_field: prompt, **self.extra_fields}
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{_q(k)}"\r\n\r\n{v}\r\n'
                 for k, v in fields.items()]
        ctype = mimetypes.guess_type(video_path)[0] or "application/octet-stream"
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{_q(self.video_field)}"; '
                     f'filename="{_q(Path(video_path).name)}"\r\nContent-Type: {ctype}\r\n\r\n')
        return "".join(parts).encode(), f"\r\n--{boundary}--\r\n".encode()


def timed_request(url: str, method: str, headers: dict[str, str], length: int,
                  write_body: Callable[[http.client.HTTPConnection], None], timeout_s: float) -> Timing:
    """Send one request and time upload, server wait and download separately. Non-2xx -> FoleyscopeError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FoleyscopeError(f"{url}: not an http(s) URL")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=timeout_s)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    start = time.perf_counter()
    try:
        conn.connect()
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in {**headers, "Content-Length": str(length)}.items():
            conn.putheader(k, v)
        conn.endheaders()
        try:
            write_body(conn)
            clock = _wait_acked(conn.sock, start + timeout_s)
        except (BrokenPipeError, ConnectionResetError) as exc:
            clock, cut = "sent", exc  # a server may answer (404, 413, 401) before reading the body
        else:
            cut = None
        acked = time.perf_counter()
        try:
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException):
            if cut is not None:
                raise cut from None
            raise
        first = time.perf_counter()
        data = resp.read()
        end = time.perf_counter()
    except TimeoutError:
        raise FoleyscopeError(f"{url}: no answer within {timeout_s:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise FoleyscopeError(f"{url}: request failed ({type(exc).__name__}: {exc})") from None
    finally:
        conn.close()
    if not 200 <= resp.status < 300:
        line = data[:200].decode("utf-8", "replace").strip().splitlines()
        raise FoleyscopeError(f"{url}: server answered {resp.status} {resp.reason}"
                              + (f": {line[0]}" if line else ""))
    processing, load = reported_times(resp.headers, data)
    return Timing(resp.status, length, acked - start, first - acked, end - first, end - start, start, end,
                  processing, load, clock)


def reported_times(headers: Any, body: bytes) -> tuple[float | None, float | None]:
    """(processing_s, load_s) as the server reports them, if it does (see docs/doctor-service.md)."""
    for name in ("X-Process-Time", "X-Processing-Time", "X-Inference-Time"):
        value = headers.get(name)
        if value:
            try:
                return float(value.strip().rstrip("s")), None
            except ValueError:
                pass
    timing = headers.get("Server-Timing")
    if timing:
        load, other = 0.0, 0.0
        for entry in timing.split(","):
            name, *params = [p.strip() for p in entry.split(";")]
            for p in params:
                if p.startswith("dur="):
                    try:
                        dur = float(p[4:]) / 1000
                    except ValueError:
                        continue
                    if "load" in name.lower():
                        load += dur
                    else:
                        other += dur
        return other, (load or None)
    if "json" in (headers.get("Content-Type") or "") and len(body) < 1_000_000:
        try:
            doc = json.loads(body)
        except ValueError:
            return None, None
        if isinstance(doc, dict):
            for key in ("processing_s", "processing_time", "inference_s", "inference_time", "elapsed_s"):
                if isinstance(doc.get(key), int | float):
                    return float(doc[key]), None
    return None, None


def _wait_acked(sock: Any, deadline: float) -> str:
    """Wait until the kernel send queue is empty (Linux SIOCOUTQ) or the server starts answering."""
    try:
        import fcntl
        import termios

        fd = sock.fileno()
        while time.perf_counter() < deadline:
            left = struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
            if left == 0:
                return "acked"
            if select.select([fd], [], [], 0.0005)[0]:
                return "acked"  # the server answers: it has what it wanted
        return "acked"
    except (ImportError, AttributeError, OSError):
        return "sent"


def _q(s: str) -> str:
    """A form-data name or filename, safe inside quotes."""
    return "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in s)
