"""`foleyscope worker --queue redis://...`: one Dramatiq worker (one job at a time, no prefetch) around one
FoleyWorker whose pipeline is loaded before the first message is taken.

Exactly-once completion on an at-least-once queue: Dramatiq re-delivers the job of a worker that died
before acknowledging it, so a job can start more than once; its end is committed with SET NX on a
`done` key and only the first commit is told. A delivery that finds the key (the previous worker died
between finishing and acknowledging) is acknowledged without running; a job delivered more than
MAX_ATTEMPTS times fails with the reason instead of killing workers for ever."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from foleyscope.engine.jobs import CancelToken
from foleyscope.progress import notice
from foleyscope.server.config import MAX_ATTEMPTS, EngineSpec
from foleyscope.server.redis_queue import (
    ACTOR,
    EVENTS,
    KEY_TTL_S,
    QUEUE,
    STREAM_MAXLEN,
    RedisLink,
    attempts_key,
    cancel_key,
    done_key,
)
from foleyscope.server.worker import FoleyWorker

HEARTBEAT_S = 5.0
CANCEL_POLL_S = 0.1
CONSUMER_POLL_MS = 200  # the longest an idle worker waits before it sees a new message
STOP_GRACE_MS = 30_000


class RedisWorker:
    def __init__(self, link: RedisLink, engine: EngineSpec, data_dir: Path) -> None:
        self.link = link
        self.client = link.client()
        self.foley = FoleyWorker(engine, data_dir, self._emit)
        self.current: str | None = None
        self.stopped = threading.Event()

    def _emit(self, event: dict[str, Any]) -> None:
        self.client.xadd(EVENTS, {"e": json.dumps(event, separators=(",", ":"))}, maxlen=STREAM_MAXLEN,
                         approximate=True)

    def handle(self, spec: dict[str, Any]) -> None:
        """One delivery of a job message (the Dramatiq actor)."""
        job_id = spec["id"]
        if self.client.exists(done_key(job_id)):
            return  # finished by a worker that died before acknowledging
        if self.client.exists(cancel_key(job_id)):
            self._commit({"type": "canceled", "id": job_id})  # cancelled while queued: never starts
            return
        attempt = int(self.client.incr(attempts_key(job_id)))
        self.client.expire(attempts_key(job_id), KEY_TTL_S)
        if attempt > MAX_ATTEMPTS:
            self._commit({"type": "failed", "id": job_id,
                          "error": f"its worker died {attempt - 1} times while running it"})
            return
        token = CancelToken()
        self.current = job_id
        watcher = threading.Thread(target=self._watch_cancel, args=(job_id, token), daemon=True)
        watcher.start()
        try:
            end = self.foley.run(spec, token, attempt)
        finally:
            self.current = None
            token.cancel()  # ends the watcher
        self._commit(end)

    def _commit(self, end: dict[str, Any]) -> None:
        end = {"worker": self.foley.name, "ts": time.time(), **end}
        if self.client.set(done_key(end["id"]), end["type"], nx=True, ex=KEY_TTL_S):
            self._emit(end)

    def _watch_cancel(self, job_id: str, token: CancelToken) -> None:
        while not token.cancelled:
            if self.client.exists(cancel_key(job_id)):
                token.cancel()
                return
            time.sleep(CANCEL_POLL_S)

    def _heartbeat(self) -> None:
        """Tell the server this worker is alive and what it runs (it forgets silent workers)."""
        while not self.stopped.wait(HEARTBEAT_S):
            try:
                self.foley.emit({"type": "worker", "state": "ready", "job": self.current, **self.foley.info})
            except Exception:  # noqa: BLE001 - Redis away for a moment; the next beat tries again
                pass

    def serve(self) -> None:
        """Load, then take jobs until interrupted (SIGINT/SIGTERM: the running job may finish, 30 s)."""
        import dramatiq

        self.foley.load()
        info = self.foley.info
        notice(f"foleyscope: worker {self.foley.name} ready ({info['preset']} on {info['device']}, {info['mode']}; "
               f"loaded in {info['load_s']:.1f} s)")
        broker = self.link.broker()

        def foleyscope_job(spec: dict[str, Any]) -> None:
            self.handle(spec)

        dramatiq.Actor(foleyscope_job, broker=broker, actor_name=ACTOR, queue_name=QUEUE, priority=0, options={})
        worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=CONSUMER_POLL_MS)
        worker.queue_prefetch = 1  # take a job only when idle: no job waits behind a busy worker
        threading.Thread(target=self._heartbeat, daemon=True).start()
        worker.start()
        try:
            while True:
                time.sleep(3600)
        finally:
            self.stopped.set()
            worker.stop(timeout=STOP_GRACE_MS)
            self.foley.emit({"type": "worker", "state": "stopped"})
