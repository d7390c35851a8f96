"""The embedded queue: N worker processes started by the server, fed one job at a time from the store.

Processes, not threads: inference never holds the server's GIL (status polls stay fast while a job
runs), and a worker that crashes takes no request with it. The queue itself is the store: an idle,
ready worker claims the oldest queued job, so a restart re-reads the queue from disk. A worker that
dies mid-job has its job put back at the head of the queue (failed, with the reason, after
MAX_ATTEMPTS) and is started again; one that cannot even load is not restarted for ever."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from foleyscope.server.config import MAX_ATTEMPTS, ServerConfig
from foleyscope.server.queues import OnEvent
from foleyscope.server.store import JobStore

MAX_LOAD_FAILURES = 3
RESPAWN_DELAY_S = 0.5
STOP_GRACE_S = 5.0


@dataclass
class _Proc:
    slot: int
    popen: subprocess.Popen
    name: str = ""
    ready: bool = False
    job: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, msg: dict[str, Any]) -> None:
        try:
            with self.lock:
                assert self.popen.stdin is not None
                self.popen.stdin.write((json.dumps(msg) + "\n").encode())
                self.popen.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it died; the reader thread reports that


class EmbeddedQueue:
    name = "embedded"

    def __init__(self, config: ServerConfig, store: JobStore) -> None:
        self.config, self.store = config, store
        self.procs: dict[int, _Proc] = {}
        self.load_failures = 0
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.on_event: OnEvent = lambda ev: None

    def start(self, loop: asyncio.AbstractEventLoop, on_event: OnEvent) -> None:
        self.loop, self.on_event = loop, on_event
        for slot in range(self.config.workers):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        if self.stopping:
            return
        cmd = [sys.executable, "-m", "foleyscope.server.stdio_worker", self.config.engine.to_json(),
               str(self.config.data_dir), f"embedded{slot}"]
        popen = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        proc = _Proc(slot, popen, name=f"embedded{slot}")
        self.procs[slot] = proc
        threading.Thread(target=self._read, args=(proc,), daemon=True, name=f"worker{slot}-reader").start()

    def _read(self, proc: _Proc) -> None:
        """The worker's events, handed to the event loop; at EOF its exit."""
        assert proc.popen.stdout is not None and self.loop is not None
        for line in proc.popen.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            self.loop.call_soon_threadsafe(self._on_message, proc, ev)
        rc = proc.popen.wait()
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._on_exit, proc, rc)

    def _on_message(self, proc: _Proc, ev: dict[str, Any]) -> None:
        freed = False  # a worker became free: only then can a queued job start (not on every step event)
        if ev.get("type") == "worker" and ev.get("state") == "ready":
            proc.ready, self.load_failures, freed = True, 0, True
        elif ev.get("type") in ("succeeded", "failed", "canceled"):
            proc.job, freed = None, True
        self.on_event(ev)
        if freed:
            self._dispatch()

    def _dispatch(self) -> None:
        for proc in self.procs.values():
            if not proc.ready or proc.job is not None or proc.popen.poll() is not None:
                continue
            job = self.store.claim_next(proc.name)
            if job is None:
                return
            proc.job = job["id"]
            proc.send({"op": "run", "spec": job["spec"], "attempt": job["attempts"]})

    def submit(self, job: dict[str, Any]) -> None:
        self._dispatch()

    def cancel(self, job: dict[str, Any]) -> None:
        for proc in self.procs.values():
            if proc.job == job["id"]:
                proc.send({"op": "cancel", "id": job["id"]})

    def _on_exit(self, proc: _Proc, rc: int) -> None:
        if self.stopping:
            return
        self.on_event({"type": "worker", "worker": proc.name, "state": "died", "exit": rc})
        if proc.job is not None:
            self._job_lost(proc.job, f"its worker process died ({_exit_text(rc)})")
        if not proc.ready:
            self.load_failures += 1
            if self.load_failures >= MAX_LOAD_FAILURES:
                print(f"foleyscope: error: a worker failed to start {MAX_LOAD_FAILURES} times; not restarting it",
                      file=sys.stderr)
                return
        assert self.loop is not None
        self.loop.call_later(RESPAWN_DELAY_S, self._spawn, proc.slot)

    def _job_lost(self, job_id: str, reason: str) -> None:
        job = self.store.get(job_id)
        if job is None:
            return
        if job["attempts"] >= MAX_ATTEMPTS:
            self.on_event({"type": "failed", "id": job_id, "error": f"{reason}, {job['attempts']} times"})
        else:
            self.on_event({"type": "requeued", "id": job_id, "reason": reason})
        self._dispatch()

    async def stop(self) -> None:
        self.stopping = True
        for proc in self.procs.values():
            proc.send({"op": "stop"})
        for proc in self.procs.values():
            try:
                await asyncio.to_thread(proc.popen.wait, STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                await asyncio.to_thread(proc.popen.wait)


def _exit_text(rc: int) -> str:
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit code {rc}"
