"""`foleyscope worker --queue redis://HOST:PORT/DB --data-dir DIR [engine options]`: one worker for a
`foleyscope serve --queue redis://...` server, on this machine or another that reaches Redis and the
shared data directory (inputs and results). Run one per GPU. It loads the model once, before taking its
first job; a worker that dies mid-job has that job re-delivered to another. SIGINT/SIGTERM stop it
after the running job (30 s at most)."""

from __future__ import annotations

import argparse

from foleyscope.commands.generate import add_engine_args, check_engine_args
from foleyscope.commands.serve import add_server_args, hide, refuse_per_job
from foleyscope.errors import FoleyscopeError
from foleyscope.progress import notice

PER_JOB = ("prompt", "seed", "negative_prompt")
DEFAULTED = ("steps", "cfg", "solver")  # the server's defaults, sent with each job


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("worker", help="run jobs for a Redis-queued `foleyscope serve`", description=__doc__)
    add_server_args(p)
    add_engine_args(p)
    hide(p, *PER_JOB, *DEFAULTED)
    return p


def run(args: argparse.Namespace) -> int:
    from foleyscope.server.config import EngineSpec
    from foleyscope.server.redis_queue import RedisLink

    refuse_per_job(args, PER_JOB)
    preset = check_engine_args(args)
    if not args.queue.startswith("redis://"):
        raise FoleyscopeError("--queue redis://HOST:PORT/DB is required: the embedded queue's workers run inside "
                              "`foleyscope serve`")
    if not args.data_dir.is_dir():
        raise FoleyscopeError(f"--data-dir {args.data_dir}: not a folder (give the server's shared data folder)")
    link = RedisLink.parse(args.queue)
    from foleyscope.server.redis_worker import RedisWorker

    worker = RedisWorker(link, EngineSpec.from_args(args, preset), args.data_dir.resolve())
    notice(f"foleyscope: worker {worker.foley.name} loading {preset} for {link.url} ...")
    worker.serve()
    return 0
