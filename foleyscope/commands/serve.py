"""`foleyscope serve`: Foley jobs over HTTP (FastAPI + uvicorn): a job API with step progress as
server-sent events, a web page at /, Prometheus metrics. Workers load the model once, at start; the
embedded queue runs them as processes of this server, `--queue redis://...` also takes workers started
with `foleyscope worker` on any machine. Binds 127.0.0.1 unless given --token-file. See docs/server.md."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from foleyscope.commands.generate import add_engine_args, check_engine_args
from foleyscope.errors import FoleyscopeError
from foleyscope.progress import notice

PER_JOB = ("prompt", "seed")  # engine options that only mean something for one video


def hide(p: argparse.ArgumentParser, *dests: str) -> None:
    """Keep shared engine options out of a command's help when they are per job there."""
    for action in p._actions:
        if action.dest in dests:
            action.help = argparse.SUPPRESS


def refuse_per_job(args: argparse.Namespace, dests: tuple[str, ...]) -> None:
    for dest in dests:
        if getattr(args, dest, None) is not None:
            flag = "--" + dest.replace("_", "-")
            raise FoleyscopeError(f"{flag} is set per job (a form field of POST /v1/jobs), not for the server")


def add_server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queue", default="embedded", metavar="embedded|redis://HOST:PORT/DB",
                   help="where jobs wait: embedded (default; worker processes of this server) or Redis")
    p.add_argument("--data-dir", type=Path, default=Path("out/server"),
                   help="job records (SQLite), uploads and results; shared with Redis workers (default out/server)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: cores / workers)")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="serve Foley jobs over HTTP: API, web page, metrics", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --token-file)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    add_server_args(p)
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes to start, each with its own model (default 1; redis: 0 = none here)")
    p.add_argument("--token-file", type=Path, default=None, help="file holding the bearer token clients must send")
    p.add_argument("--max-upload-mb", type=int, default=500, help="largest video accepted (default 500)")
    p.add_argument("--max-seconds", type=float, default=120.0, help="longest video accepted (default 120)")
    add_engine_args(p)
    hide(p, *PER_JOB)
    return p


def run(args: argparse.Namespace) -> int:
    from foleyscope.server.config import EngineSpec, JobDefaults, ServerConfig, check_queue_url, read_token

    refuse_per_job(args, PER_JOB)
    preset = check_engine_args(args)
    if args.workers < 0 or args.max_upload_mb < 1 or not args.max_seconds > 0:
        raise FoleyscopeError("--workers must be >= 0, --max-upload-mb >= 1 and --max-seconds > 0")
    token = read_token(args.token_file, args.host)
    queue = check_queue_url(args.queue)
    if args.workers == 0 and queue == "embedded":
        notice("--workers 0 with the embedded queue: jobs are accepted and wait for a server with workers.")
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.workers))
    config = ServerConfig(
        data_dir=args.data_dir.resolve(), engine=EngineSpec.from_args(args, preset),
        defaults=JobDefaults(args.steps, args.cfg, args.solver, args.negative_prompt), queue=queue,
        workers=args.workers, max_upload_bytes=args.max_upload_mb << 20, max_seconds=args.max_seconds,
        token=token)
    check_data_dir(config.data_dir)
    if config.redis:
        from foleyscope.server.redis_queue import RedisLink

        RedisLink.parse(queue).client().close()  # unreachable Redis: one line now, not a traceback later
    sock = bind(args.host, args.port)
    return serve(config, sock)


def check_data_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FoleyscopeError(f"--data-dir {path}: cannot create ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise FoleyscopeError(f"--data-dir {path}: not writable")


def bind(host: str, port: int) -> socket.socket:
    """Bind before anything starts, so a busy port is one line (and --port 0 can say which it got)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto given explicitly: asyncio sets TCP_NODELAY only on sockets whose proto is TCP, and without it
    # every keep-alive request waits out a 40 ms delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise FoleyscopeError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


def serve(config, sock: socket.socket) -> int:  # noqa: ANN001 - ServerConfig, imported lazily
    import uvicorn

    from foleyscope.server.app import create_app

    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    queue = "embedded" if not config.redis else config.queue.split("?")[0]
    notice(f"foleyscope: serving on http://{shown}:{port} (queue {queue}, {config.workers} worker"
           f"{'s' if config.workers != 1 else ''}, data in {config.data_dir})")
    app = create_app(config)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            app.state.closing.set()  # event streams and ?wait= requests end now, not after the grace period
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)).run(sockets=[sock])
    return 0
