"""What the server and its workers are told, as plain data: workers run in other processes (or on other
machines), so the engine settings travel as JSON or as the command-line flags they came from."""

from __future__ import annotations

import argparse
import ipaddress
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from foleyscope.engine.modes import Mode
from foleyscope.errors import FoleyscopeError

MAX_ATTEMPTS = 3  # a job whose worker dies this many times is failed, not re-run forever (a poison pill)


@dataclass(frozen=True)
class EngineSpec:
    """How a worker loads its pipeline: once, at start."""

    preset: str = "tiny"
    weights: str | None = None
    device: str = "auto"
    mode: dict[str, Any] = field(default_factory=dict)  # Mode's fields (unset: Mode's defaults)
    frames: str = "official"
    threads: int | None = None  # torch threads per worker (None: torch's default)

    @classmethod
    def from_args(cls, args: argparse.Namespace, preset: str) -> EngineSpec:
        mode = {f.name: getattr(args, f.name) for f in fields(Mode)}
        weights = str(args.weights) if args.weights is not None else None
        return cls(preset, weights, args.device, mode, args.frames, getattr(args, "threads", None))

    def to_mode(self) -> Mode:
        return Mode(**self.mode)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> EngineSpec:
        return cls(**json.loads(text))

    def argv(self) -> list[str]:
        """The engine flags that make `foleyscope worker` load this same pipeline."""
        out = ["--preset", self.preset, "--device", self.device, "--frames", self.frames]
        out += ["--weights", self.weights] if self.weights else []
        out += ["--threads", str(self.threads)] if self.threads else []
        for f in fields(Mode):
            value, action = self.mode.get(f.name, f.default), f.metadata.get("action")
            if action in ("store_true", "store_false"):
                out += [f.metadata["flag"]] if value != f.default else []
            elif value != f.default:
                out += [f.metadata["flag"], str(value)]
        return out


@dataclass(frozen=True)
class JobDefaults:
    """What a request that leaves a field out gets (from `serve`'s engine options)."""

    steps: int = 50
    cfg: float = 4.5
    solver: str = "euler"
    negative_prompt: str | None = None


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path
    engine: EngineSpec = EngineSpec()
    defaults: JobDefaults = JobDefaults()
    queue: str = "embedded"  # or redis://HOST:PORT/DB[?heartbeat_s=S&maintenance=P]
    workers: int = 1  # worker processes this server starts (redis: 0 = workers run elsewhere)
    max_upload_bytes: int = 500 << 20
    max_seconds: float = 120.0
    token: str | None = None  # bearer token; required unless bound to loopback

    @property
    def redis(self) -> bool:
        return self.queue.startswith("redis://")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: Path | None, host: str) -> str | None:
    """The bearer token from --token-file; refusing to expose the server beyond loopback without one."""
    if path is None:
        if not is_loopback(host):
            raise FoleyscopeError(f"--host {host} exposes the server beyond this machine: give --token-file F "
                                  "(a file holding the bearer token clients must send)")
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise FoleyscopeError(f"--token-file {path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise FoleyscopeError(f"--token-file {path}: the token must be one word of at least 16 characters")
    return token


def check_queue_url(url: str) -> str:
    if url == "embedded" or url.startswith("redis://"):
        return url
    raise FoleyscopeError(f"--queue {url}: expected embedded or redis://HOST:PORT/DB")
