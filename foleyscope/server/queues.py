"""One queue interface, two back ends: `embedded` (worker processes this server starts and feeds itself,
nothing else to run) and `redis://` (Dramatiq over Redis: workers anywhere, a dead worker's job
re-delivered). Both report what workers do as event dicts through `on_event`, called on the event loop;
the hub applies them. docs/server.md says why Dramatiq."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from foleyscope.server.config import ServerConfig
from foleyscope.server.store import JobStore

OnEvent = Callable[[dict[str, Any]], None]


class JobQueue(Protocol):
    name: str

    def start(self, loop: asyncio.AbstractEventLoop, on_event: OnEvent) -> None:
        """Start the workers (or the link to them); queued jobs on record are picked up."""

    def submit(self, job: dict[str, Any]) -> None:
        """A new job (already in the store, status queued)."""

    def cancel(self, job: dict[str, Any]) -> None:
        """Stop a running job at its next step; make sure a queued one never starts."""

    async def stop(self) -> None:
        """Stop this server's workers; jobs on record stay for the next start."""


def make_queue(config: ServerConfig, store: JobStore) -> JobQueue:
    if config.redis:
        from foleyscope.server.redis_queue import RedisQueue

        return RedisQueue(config, store)
    from foleyscope.server.embedded import EmbeddedQueue

    return EmbeddedQueue(config, store)
