"""Where worker events land, on the server's event loop: status changes go to the store, every stage and
step to the live state (memory only: a step is not worth a disk write) and to the job's SSE
subscribers, durations to the metrics. Events of a job that already ended are dropped, so a re-delivered
or late message can never finish a job twice."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from foleyscope.server.metrics import Metrics
from foleyscope.server.store import TERMINAL, JobStore

WORKER_GONE_S = 30.0  # a Redis worker silent this long is no longer counted (it heartbeats every 5 s)
SUBSCRIBER_BACKLOG = 10000  # events held for one slow SSE client before its step events are dropped
CLOSING_POLL_S = 0.25  # how often long waits (SSE, ?wait=) look whether the server is stopping


@dataclass
class Live:
    """A running job's progress, as fine as the events."""

    stage: str | None = None
    step: int = 0
    steps: int = 0
    step_sum: float = 0.0
    step_count: int = 0
    denoise_end: float | None = None
    decode: tuple[float, float] | None = None  # seconds of video decoded, of total
    times: dict[str, float] = field(default_factory=dict)


class JobHub:
    def __init__(self, store: JobStore, metrics: Metrics, closing: threading.Event | None = None) -> None:
        self.store, self.metrics = store, metrics
        self.closing = closing or threading.Event()  # set on SIGTERM/SIGINT: long waits give up at once
        self.live: dict[str, Live] = {}
        self.workers: dict[str, dict[str, Any]] = {}
        self.tail_s: float | None = None  # recent jobs' time after the last step (VAE decode + writing)
        self._subs: dict[str, set[asyncio.Queue]] = defaultdict(set)

    # --- events in -------------------------------------------------------------------------------------
    def apply(self, ev: dict[str, Any]) -> None:
        handler = getattr(self, f"_on_{ev.get('type')}", None)
        if handler is not None:
            handler(ev)

    def _on_worker(self, ev: dict[str, Any]) -> None:
        name = ev["worker"]
        if ev["state"] in ("died", "stopped"):
            if self.workers.get(name, {}).get("state") != "broken":  # kept: health tells why it failed
                self.workers.pop(name, None)
            return
        w = self.workers.setdefault(name, {"job": None})
        w.update({k: v for k, v in ev.items() if k not in ("type", "worker", "ts")}, seen=time.time())

    def _on_running(self, ev: dict[str, Any]) -> None:
        job = self.store.get(ev["id"])
        if job is None or job["status"] in TERMINAL:
            return
        if job["status"] != "running" or job["worker"] != ev["worker"]:
            self.store.update(ev["id"], status="running", started=ev["ts"], worker=ev["worker"],
                              attempts=max(job["attempts"], ev.get("attempt", 1)), stage=None)
        self.live[ev["id"]] = Live(steps=job["spec"]["steps"])
        self._worker_job(ev["worker"], ev["id"])
        self._notify_state(ev["id"])
        self.notify_queued()

    def _on_progress(self, ev: dict[str, Any]) -> None:
        live = self.live.get(ev["id"])
        if live is None:
            return
        stage, kind = ev["stage"], ev["kind"]
        if kind == "start":
            live.stage = stage
            self.store.update(ev["id"], stage=stage)
            self.notify(ev["id"], "stage", {"stage": stage, "state": "start"})
        elif kind == "end":
            live.times[stage] = ev["seconds"]
            self.metrics.stage.labels(stage).observe(ev["seconds"])
            if stage == "denoise":
                live.denoise_end = time.monotonic()
            self.notify(ev["id"], "stage", {"stage": stage, "state": "end", "seconds": ev["seconds"]})
        elif ev.get("unit", "steps") == "steps":
            live.step, live.steps = int(ev["done"]), int(ev["total"])
            live.step_sum += ev["seconds"]
            live.step_count += 1
            self.metrics.step.observe(ev["seconds"])
            self.notify(ev["id"], "step", {"stage": stage, "step": live.step, "steps": live.steps,
                                           "seconds": ev["seconds"], "eta_s": self.eta(live)})
        else:
            live.decode = (ev["done"], ev["total"])
            self.notify(ev["id"], "step", {"stage": stage, "done": ev["done"], "total": ev["total"],
                                           "unit": ev.get("unit")})

    def _on_succeeded(self, ev: dict[str, Any]) -> None:
        times = ev.get("stage_times") or {}
        if self._finish(ev, "succeeded", stage_times=times, processing_s=ev.get("processing_s"), error=None):
            self.metrics.job.observe(ev.get("processing_s") or 0.0)
            tail = times.get("vae_decode", 0.0) + times.get("postprocess", 0.0)
            self.tail_s = tail if self.tail_s is None else 0.7 * self.tail_s + 0.3 * tail

    def _on_failed(self, ev: dict[str, Any]) -> None:
        if self._finish(ev, "failed", error=ev.get("error") or "failed (no reason given)"):
            self.metrics.errors.labels("job_failed").inc()

    def _on_canceled(self, ev: dict[str, Any]) -> None:
        self._finish(ev, "canceled", error=None)

    def _on_requeued(self, ev: dict[str, Any]) -> None:
        """Its worker died mid-job (embedded queue): back to the queue, ahead of newer jobs."""
        self.live.pop(ev["id"], None)
        self.store.update(ev["id"], status="queued", started=None, worker=None, stage=None,
                          error=f"re-queued: {ev['reason']}")
        self._notify_state(ev["id"])

    def ended_while_queued(self, job_id: str) -> None:
        """A queued job was cancelled by the API (it never started): tell its watchers."""
        self.metrics.finished.labels("canceled").inc()
        job = self.store.get(job_id)
        if job is not None:
            self.notify(job_id, "end", self.view(job))
        self.notify_queued()

    def _finish(self, ev: dict[str, Any], status: str, **values: Any) -> bool:
        live = self.live.pop(ev["id"], None)
        if live and live.times and "stage_times" not in values:
            values["stage_times"] = live.times
        self._worker_job(ev.get("worker"), None)
        if not self.store.finish(ev["id"], status, **values):
            return False
        self.metrics.finished.labels(status).inc()
        job = self.store.get(ev["id"])
        if job is not None:
            self.notify(ev["id"], "end", self.view(job))
        self.notify_queued()
        return True

    def _worker_job(self, worker: str | None, job_id: str | None) -> None:
        if worker in self.workers:
            self.workers[worker]["job"] = job_id

    # --- what clients see ------------------------------------------------------------------------------
    def eta(self, live: Live) -> float | None:
        """Seconds left: the remaining steps at their mean time, plus recent jobs' decode-and-write time."""
        tail = self.tail_s or 0.0
        if live.stage == "denoise" and live.step_count:
            return round((live.steps - live.step) * live.step_sum / live.step_count + tail, 3)
        if live.denoise_end is not None:
            return round(max(0.0, tail - (time.monotonic() - live.denoise_end)), 3)
        return None

    def view(self, job: dict[str, Any]) -> dict[str, Any]:
        spec, live = job["spec"], self.live.get(job["id"])
        started, created = job["started"], job["created"]
        base = f"/v1/jobs/{job['id']}"
        urls = {"self": base, "events": f"{base}/events"}
        if job["status"] == "succeeded":
            urls["audio"] = f"{base}/audio"
            if spec.get("video"):
                urls["video"] = f"{base}/video"
        return {
            "id": job["id"], "status": job["status"], "queue_position": self.store.queue_position(job),
            "stage": live.stage if live else job["stage"], "step": live.step if live else None,
            "steps": spec["steps"], "eta_s": self.eta(live) if live else None,
            "decoded": list(live.decode) if live and live.decode else None,
            "created": created, "started": started, "finished": job["finished"],
            "queued_s": round((started or time.time()) - created, 3) if job["status"] != "canceled" else None,
            "upload_s": job["upload_s"], "processing_s": job["processing_s"], "stage_times": job["stage_times"],
            "attempts": job["attempts"], "worker": job["worker"], "error": job["error"],
            "cancel_requested": bool(job["cancel_requested"]), "input": job["input"],
            "settings": {k: spec[k] for k in ("prompt", "negative_prompt", "steps", "cfg", "solver", "seed")}
            | {"mux": bool(spec.get("video"))},
            "urls": urls,
        }

    def health(self) -> dict[str, Any]:
        now = time.time()
        workers = [dict(w, name=n) for n, w in self.workers.items() if now - w["seen"] < WORKER_GONE_S]
        ready = [w for w in workers if w.get("state") == "ready"]
        status = "STARTING" if not ready else ("BUSY" if all(w["job"] for w in ready) else "READY")
        broken = [w["error"] for w in workers if w.get("state") == "broken"]
        if broken and not any(w.get("state") in ("ready", "starting") for w in workers):
            status = "SETUP_FAILED"
        first = ready[0] if ready else {}
        return {"status": status, "error": broken[0] if broken else None, "load_s": first.get("load_s"),
                "warmup_s": first.get("warmup_s"),
                "mode": first.get("mode"), "preset": first.get("preset"), "device": first.get("device"),
                "workers": workers}

    # --- subscribers -----------------------------------------------------------------------------------
    def subscribe(self, job_id: str) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(SUBSCRIBER_BACKLOG)
        self._subs[job_id].add(q)
        return q

    def unsubscribe(self, job_id: str, q: asyncio.Queue) -> None:
        subs = self._subs.get(job_id)
        if subs is not None:
            subs.discard(q)
            if not subs:
                del self._subs[job_id]

    def notify(self, job_id: str, name: str, data: dict[str, Any]) -> None:
        for q in self._subs.get(job_id, ()):
            try:
                q.put_nowait((name, data))
            except asyncio.QueueFull:  # a client that stopped reading misses steps; its `end` still comes
                if name == "end":
                    q.get_nowait()
                    q.put_nowait((name, data))

    def _notify_state(self, job_id: str) -> None:
        if job_id in self._subs:
            job = self.store.get(job_id)
            if job is not None:
                self.notify(job_id, "state", self.view(job))

    def notify_queued(self) -> None:
        """Queue positions moved: tell the clients watching queued jobs."""
        for job_id in list(self._subs):
            job = self.store.get(job_id)
            if job is not None and job["status"] == "queued":
                self.notify(job_id, "state", self.view(job))

    async def next_event(self, q: asyncio.Queue, timeout_s: float) -> tuple[str, dict[str, Any]] | None:
        """The next event for a subscriber, or None after `timeout_s` or as soon as the server is stopping."""
        deadline = time.monotonic() + timeout_s
        while not self.closing.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                return await asyncio.wait_for(q.get(), min(left, CLOSING_POLL_S))
            except TimeoutError:
                continue
        return None

    async def wait_end(self, job_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The job's record once it has ended, or None if it has not within `timeout_s` (or the server stops)."""
        q = self.subscribe(job_id)
        try:
            job = self.store.get(job_id)
            deadline = time.monotonic() + timeout_s
            while job is not None and job["status"] not in TERMINAL:
                got = await self.next_event(q, deadline - time.monotonic())
                if got is None:
                    return None
                if got[0] in ("end", "state"):
                    job = self.store.get(job_id)
            return job
        finally:
            self.unsubscribe(job_id, q)
