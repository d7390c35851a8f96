"""The `redis://` queue, server side: jobs go out as Dramatiq messages; worker events come back through a
Redis stream, read from the last id this server applied (kept in the store), so events sent while the
server was down are applied when it is back. Cancelling sets a key the worker checks before it starts
and watches while it runs. `--workers N` also starts N local `foleyscope worker` processes and restarts
any that die; more can run on any machine that reaches Redis and the shared data directory.

URL: redis://HOST:PORT/DB[?heartbeat_s=15&maintenance=0.02]: a worker silent for heartbeat_s is dead
and its unacknowledged job is re-delivered by the next queue maintenance, which runs on that fraction
of the workers' queue commands (Dramatiq's defaults, 60 s and 0.001, take minutes to notice)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from foleyscope.errors import FoleyscopeError
from foleyscope.server.config import ServerConfig
from foleyscope.server.errors import ApiError
from foleyscope.server.queues import OnEvent
from foleyscope.server.store import JobStore

NAMESPACE = "foleyscope"
QUEUE = "foleyscope-jobs"
ACTOR = "foleyscope_job"
EVENTS = "foleyscope:events"
STREAM_MAXLEN = 200_000
KEY_TTL_S = 7 * 86400
STREAM_ID_KEY = "redis_stream_id"
STOP_GRACE_S = 10.0
RESEND_S = 5.0  # how often jobs that could not be sent (Redis away) are tried again


def cancel_key(job_id: str) -> str:
    return f"foleyscope:cancel:{job_id}"


def done_key(job_id: str) -> str:
    return f"foleyscope:done:{job_id}"


def attempts_key(job_id: str) -> str:
    return f"foleyscope:attempts:{job_id}"


@dataclass(frozen=True)
class RedisLink:
    url: str  # without our own query parameters
    heartbeat_s: float = 15.0
    maintenance: float = 0.02

    @classmethod
    def parse(cls, url: str) -> RedisLink:
        parts = urlsplit(url)
        ours = {"heartbeat_s", "maintenance"}
        query = parse_qsl(parts.query)
        try:
            opts = {k: float(v) for k, v in query if k in ours}
        except ValueError:
            raise FoleyscopeError(f"--queue {url}: heartbeat_s and maintenance must be numbers") from None
        if not 0 < opts.get("maintenance", 0.02) <= 1 or opts.get("heartbeat_s", 15.0) < 1:
            raise FoleyscopeError(f"--queue {url}: expected heartbeat_s >= 1 and 0 < maintenance <= 1")
        rest = urlencode([(k, v) for k, v in query if k not in ours])
        return cls(urlunsplit(parts._replace(query=rest)), **opts)

    def client(self) -> Any:
        import redis

        try:
            client = redis.Redis.from_url(self.url, socket_timeout=10, socket_connect_timeout=2)
        except ValueError as exc:  # a bad port, database number or scheme
            raise FoleyscopeError(f"--queue {self.url}: {exc}") from None
        try:
            client.ping()
        except redis.RedisError as exc:
            raise FoleyscopeError(f"--queue {self.url}: cannot reach Redis ({exc})") from None
        return client

    def broker(self) -> Any:
        """No Dramatiq middleware: no retries (a failed job is reported, not re-run), no 10-minute time limit."""
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(client=self.client(), namespace=NAMESPACE, middleware=[],
                             heartbeat_timeout=int(self.heartbeat_s * 1000),
                             maintenance_chance=int(self.maintenance * 1_000_000))
        broker.declare_queue(QUEUE)
        return broker


class RedisQueue:
    name = "redis"

    def __init__(self, config: ServerConfig, store: JobStore) -> None:
        self.config, self.store = config, store
        self.link = RedisLink.parse(config.queue)
        self.client = self.link.client()
        self.broker = self.link.broker()
        self.stopped = threading.Event()
        self._send_lock = threading.Lock()
        self.pump: threading.Thread | None = None
        self.local: list[subprocess.Popen] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.on_event: OnEvent = lambda ev: None

    def start(self, loop: asyncio.AbstractEventLoop, on_event: OnEvent) -> None:
        self.loop, self.on_event = loop, on_event
        self._send_unsent()
        self.pump = threading.Thread(target=self._pump, daemon=True, name="redis-events")
        self.pump.start()
        for _ in range(self.config.workers):
            self.local.append(self._spawn())
        if self.local:
            threading.Thread(target=self._supervise, daemon=True, name="redis-workers").start()

    def submit(self, job: dict[str, Any]) -> None:
        """Send the job's message; if Redis is away the job stays recorded and is sent when it is back."""
        import redis
        from dramatiq import Message

        with self._send_lock:  # the API and the resend loop never send one job twice
            current = self.store.get(job["id"])
            if current is None or current["enqueued"] or current["status"] != "queued":
                return
            try:
                self.broker.enqueue(Message(queue_name=QUEUE, actor_name=ACTOR, args=(job["spec"],), kwargs={},
                                            options={}))
            except redis.RedisError as exc:
                print(f"foleyscope: warning: job {job['id']} not sent to Redis yet ({exc})", file=sys.stderr)
                return
            self.store.update(job["id"], enqueued=1)

    def _send_unsent(self) -> None:
        """Queued jobs whose message never reached Redis (it was away, or the server stopped in between)."""
        for job in self.store.with_status("queued"):
            if not job["enqueued"]:
                self.submit(job)

    def cancel(self, job: dict[str, Any]) -> None:
        import redis

        try:
            self.client.set(cancel_key(job["id"]), 1, ex=KEY_TTL_S)
        except redis.RedisError as exc:
            raise ApiError(503, "queue_unavailable", f"cannot reach Redis to cancel the job ({exc})") from None

    def _pump(self) -> None:
        """Worker events from the stream, in order, to the event loop; the last id applied is kept."""
        import redis

        last = self.store.meta_get(STREAM_ID_KEY) or "0-0"
        resend_at = time.monotonic() + RESEND_S
        while not self.stopped.is_set():
            try:
                batch = self.client.xread({EVENTS: last}, count=1000, block=500)
                if time.monotonic() > resend_at:
                    self._send_unsent()
                    resend_at = time.monotonic() + RESEND_S
            except redis.RedisError as exc:
                print(f"foleyscope: warning: reading worker events from Redis failed ({exc}); retrying",
                      file=sys.stderr)
                self.stopped.wait(1.0)
                continue
            for _, entries in batch or ():
                events = [json.loads(fields[b"e"]) for _, fields in entries]
                last = entries[-1][0].decode()
                assert self.loop is not None
                self.loop.call_soon_threadsafe(self._apply, events, last)

    def _apply(self, events: list[dict[str, Any]], last: str) -> None:
        for ev in events:
            self.on_event(ev)
        if any(ev.get("type") != "progress" for ev in events):  # not a database write per denoising step:
            self.store.meta_set(STREAM_ID_KEY, last)  # progress replayed after a restart is harmless

    def _spawn(self) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "foleyscope", "worker", "--queue", self.config.queue,
               "--data-dir", str(self.config.data_dir), *self.config.engine.argv()]
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)

    def _supervise(self) -> None:
        """Restart local workers that die (a killed worker's job is re-delivered by Redis, not by us)."""
        while not self.stopped.wait(0.5):
            for i, proc in enumerate(self.local):
                if proc.poll() is not None and not self.stopped.is_set():
                    self.local[i] = self._spawn()

    async def stop(self) -> None:
        self.stopped.set()
        for proc in self.local:
            proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.local:
            try:
                await asyncio.to_thread(proc.wait, max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.pump is not None:
            await asyncio.to_thread(self.pump.join, 5.0)  # its read blocks at most 0.5 s
        self.client.close()
