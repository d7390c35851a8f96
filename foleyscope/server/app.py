"""The FastAPI app factory. Start-up opens the store (SQLite under the data directory), puts back on the
queue the jobs a previous run left running (embedded queue: their worker died with that server), and
starts the queue's workers; shutdown stops them. Nothing here loads a model: workers do, once each."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from foleyscope import __version__
from foleyscope.server import errors
from foleyscope.server.api import public, router
from foleyscope.server.config import MAX_ATTEMPTS, ServerConfig
from foleyscope.server.hub import JobHub
from foleyscope.server.metrics import Metrics
from foleyscope.server.queues import JobQueue, make_queue
from foleyscope.server.store import JobStore

STATIC = Path(__file__).parent / "static"


@dataclass
class ServerState:
    config: ServerConfig
    store: JobStore
    metrics: Metrics
    hub: JobHub
    queue: JobQueue
    started: float


def create_app(config: ServerConfig) -> FastAPI:
    """`app.state.closing` (a threading.Event): set it when a stop is asked for, so that event streams
    and `?wait=` requests end at once instead of holding the graceful shutdown up."""
    closing = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = _start(config, closing)
        app.state.server = s
        s.queue.start(asyncio.get_running_loop(), s.hub.apply)
        try:
            yield
        finally:
            await s.queue.stop()
            s.store.close()

    app = FastAPI(title="foleyscope", version=__version__, lifespan=lifespan,
                  description="Foley audio for videos (HunyuanVideo-Foley models) as asynchronous jobs. "
                              "See docs/server.md for curl examples.")
    app.state.closing = closing
    errors.install(app, lambda code: _count(app, code))
    app.include_router(public)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    return app


def _start(config: ServerConfig, closing: threading.Event) -> ServerState:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    for stale in (config.data_dir / "uploads").glob("*.part"):  # uploads cut off by the last stop
        stale.unlink(missing_ok=True)
    store = JobStore(config.data_dir / "jobs.sqlite3")
    if not config.redis:  # with Redis, a running job's message is re-delivered by the broker instead
        store.recover(MAX_ATTEMPTS, "the server stopped while it ran")
    metrics = Metrics(store)
    hub = JobHub(store, metrics, closing)
    return ServerState(config, store, metrics, hub, make_queue(config, store), time.time())


def _count(app: FastAPI, code: str) -> None:
    s = getattr(app.state, "server", None)
    if s is not None:
        s.metrics.errors.labels(code).inc()
