"""A job's server-sent events: `state` (the whole job, first, so a client that connects late starts from
the current stage, step and ETA; again whenever the status or queue position changes), `stage` (a stage
starts or ends, with its time), `step` (a denoising step with its time and the ETA; decode progress in
seconds of video) and `end` (the final job; then the stream closes). A stopping server closes its
streams at once (clients reconnect to the next one and get the state first)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from foleyscope.server.hub import JobHub
from foleyscope.server.store import TERMINAL

KEEPALIVE_S = 15.0
RETRY_MS = 2000


def event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def job_events(hub: JobHub, job_id: str) -> AsyncIterator[bytes]:
    q = hub.subscribe(job_id)  # before the snapshot, so nothing falls between the two
    try:
        job = hub.store.get(job_id)
        if job is None:
            return
        view = hub.view(job)
        yield f"retry: {RETRY_MS}\n".encode() + event("state", view)
        if job["status"] in TERMINAL:
            yield event("end", view)
            return
        while not hub.closing.is_set():
            got = await hub.next_event(q, KEEPALIVE_S)
            if got is None:
                yield b": keep-alive\n\n"
                continue
            name, data = got
            yield event(name, data)
            if name == "end":
                return
    finally:
        hub.unsubscribe(job_id, q)
