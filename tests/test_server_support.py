"""What the server tests share (no tests here; modules import the fixtures by their `*_fixture` names):
`foleyscope serve` as a real subprocess on a free loopback port, stopped at the end whatever happens; a
real redis-server on a random loopback port; an SSE reader. The session's `server` runs the tiny preset
in fp32 with one thread per worker, so a job takes a few tenths of a second on a 2-core CPU."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ["--dtype", "fp32", "--threads", "1", "--steps", "4"]
TERMINAL = {"succeeded", "failed", "canceled"}


class Served:
    """A `foleyscope serve` process; `url` once it listens."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir.parent / f"{data_dir.name}-serve.log"
        self.log = self.log_path.open("ab")
        self._log_start = self.log.tell()  # a restart in the same folder appends to the same log
        cmd = [sys.executable, "-m", "foleyscope", "serve", "--port", "0", "--data-dir", str(data_dir), *ENGINE, *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=self.log, start_new_session=True)
        self.url = self._listening()
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def _listening(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"serving on (http://\S+)", self.log_path.read_text(errors="replace")[self._log_start:])
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"the server did not start: {self.log_path.read_text(errors='replace')[-2000:]}")

    def wait_ready(self, workers: int, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.client.get("/health").json()
            if sum(w.get("state") == "ready" for w in h["workers"]) >= workers:
                return h
            assert self.proc.poll() is None, self.log_path.read_text(errors="replace")[-2000:]
            time.sleep(0.1)
        raise AssertionError(f"workers not ready in {timeout} s: {h}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)  # the server and the workers it started (its own session)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        _kill_group(self.proc.pid)
        self.log.close()
        return self.proc.returncode

    def submit(self, clip: Path, prompt: str = "rain", headers: dict[str, str] | None = None,
               name: str | None = None, **fields: Any) -> httpx.Response:
        data = {"prompt": prompt, **{k: str(v) for k, v in fields.items()}}
        with clip.open("rb") as f:
            return self.client.post("/v1/jobs", data=data, files={"video": (name or clip.name, f, "video/mp4")},
                                    headers=headers)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.client.get(f"/v1/jobs/{job_id}").json()

    def wait(self, job_id: str, until: Callable[[dict], bool] = lambda j: j["status"] in TERMINAL,
             timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if until(job):
                return job
            time.sleep(0.02)
        raise AssertionError(f"job {job_id} did not get there in {timeout} s: {job}")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def events(url: str, job_id: str, *, until: str = "end", timeout: float = 60,
           headers: dict[str, str] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """A job's server-sent events as (name, data), until (and including) the event named `until`."""
    with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", timeout=timeout, headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name:
                yield name, json.loads(line[6:])
                if name == until:
                    return
                name = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server on a random loopback port, no persistence; killed at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (`make test` installs it as root: apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session", name="server")
def server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Two embedded workers; uploads up to 2 MB, videos up to 5 s."""
    s = Served(tmp_path_factory.mktemp("server") / "data", "--workers", "2", "--max-upload-mb", "2",
               "--max-seconds", "5")
    try:
        s.wait_ready(2)
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session", name="clip")
def clip_fixture(make_clip: Callable[..., Path]) -> Path:
    return make_clip(width=160, height=90, seconds=1.2, fps=25)
