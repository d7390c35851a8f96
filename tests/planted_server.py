"""A tiny HTTP "Foley server" with problems planted on purpose, for the service-audit tests.

It accepts the request shape the doctor sends to foreign servers (multipart: `video` file, `prompt`
text), probes the uploaded clip's duration with PyAV, and "generates" for a time that scales with it.
Planted problems, each a switch: a global lock (requests serialised), a model re-read from disk on
every request (a real torch.load of a real state-dict file, plus a visible sleep), and a slow body
reader (an upload that takes time). Everything runs on 127.0.0.1 with a random port and is shut down
by the context manager, whatever happens.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import torch


@dataclass(frozen=True)
class PlantedConfig:
    serialise: bool = False  # one global lock around the model work
    reload_per_request: bool = False  # torch.load the weights on every request (else once at start)
    lazy_load: bool = False  # load once, but at the first request instead of at start-up
    load_sleep_s: float = 0.2  # added to each load so it is visible next to the tiny real load
    process_base_s: float = 0.03  # fixed part of "generation"
    process_per_video_s: float = 0.06  # per second of uploaded video
    report: str | None = "header"  # how it tells its processing time: "header" (X-Process-Time,
    # load excluded), "server-timing" (load and infer entries), "json" (processing_s field), None
    read_bytes_per_s: float | None = None  # throttle reading the request body (a slow upload)


CLEAN = PlantedConfig()
BAD = PlantedConfig(serialise=True, reload_per_request=True)
BAD_SILENT = replace(BAD, serialise=False, report=None)  # reloads, tells nothing
SLOW_UPLOAD = PlantedConfig(read_bytes_per_s=2e6)


def write_weights(path: Path) -> Path:
    """A real state dict (about 4 MB of fp32) the server loads like a model."""
    g = torch.Generator().manual_seed(0)
    torch.save({"proj.weight": torch.randn(1024, 512, generator=g), "proj.bias": torch.zeros(1024),
                "out.weight": torch.randn(512, 1024, generator=g)}, path)
    return path


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, config: PlantedConfig, weights: Path) -> None:
        self.config = config
        self.weights = weights
        self.lock = threading.Lock()
        self.requests = 0
        self._count_lock = threading.Lock()
        self.model = None if config.reload_per_request or config.lazy_load else self.load_model()
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        if self.config.read_bytes_per_s:  # small receive window so the throttle reaches the sender
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        super().server_bind()

    def load_model(self) -> dict[str, torch.Tensor]:
        state = torch.load(self.weights, weights_only=True)
        time.sleep(self.config.load_sleep_s)
        return state


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        cfg = self.server.config
        if self.path != "/generate":
            self._reply(404, {"error": f"no route {self.path}"})
            return
        body = self._read_body(int(self.headers.get("Content-Length", "0")), cfg.read_bytes_per_s)
        fields = _parse_multipart(self.headers.get("Content-Type", ""), body)
        if "video" not in fields or "prompt" not in fields:
            self._reply(400, {"error": "need multipart fields video and prompt"})
            return
        if cfg.serialise:
            with self.server.lock:
                result, load_s, processing_s = self._work(fields["video"])
        else:
            result, load_s, processing_s = self._work(fields["video"])
        headers = {}
        if cfg.report == "header":
            headers["X-Process-Time"] = f"{processing_s:.4f}"
        elif cfg.report == "server-timing":
            headers["Server-Timing"] = f"load;dur={load_s * 1000:.1f}, infer;dur={processing_s * 1000:.1f}"
        elif cfg.report == "json":
            result["processing_s"] = processing_s
        self._reply(200, result, headers)

    def _work(self, video: bytes) -> tuple[dict[str, float], float, float]:
        cfg = self.server.config
        t0 = time.perf_counter()
        if cfg.lazy_load and self.server.model is None:
            with self.server.lock:
                if self.server.model is None:
                    self.server.model = self.server.load_model()
        model = self.server.load_model() if cfg.reload_per_request else self.server.model
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with av.open(io.BytesIO(video)) as c:
            duration = float(c.duration or 0) / av.time_base
        x = torch.ones(1, 512)
        y = x @ model["proj.weight"].T  # a touch of real work with the loaded weights
        target = cfg.process_base_s + cfg.process_per_video_s * duration
        time.sleep(max(0.0, target - (time.perf_counter() - t0)))
        with self.server._count_lock:
            self.server.requests += 1
        return {"duration_s": duration, "checksum": float(y.sum())}, load_s, time.perf_counter() - t0

    def _read_body(self, n: int, rate: float | None) -> bytes:
        if not rate:
            return self.rfile.read(n)
        chunks, got, t0 = [], 0, time.perf_counter()
        while got < n:
            chunk = self.rfile.read(min(16384, n - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
            time.sleep(max(0.0, got / rate - (time.perf_counter() - t0)))
        return b"".join(chunks)

    def _reply(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


def _parse_multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not msg.is_multipart():
        return {}
    out = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            out[str(name)] = part.get_payload(decode=True) or b""
    return out


@contextmanager
def running(config: PlantedConfig, weights: Path) -> Iterator[tuple[str, _Server]]:
    """Start the planted server; yield (url, server); always shut it down."""
    server = _Server(config, weights)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}/generate", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
