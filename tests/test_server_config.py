"""The server's plain-data pieces, without a server: engine settings survive the trip to a worker's
command line, the Redis URL's own options are read and stripped, exposure rules, and a job record that
ends only once whatever events arrive late."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import pytest

from foleyscope.commands import serve, worker
from foleyscope.engine.modes import Mode
from foleyscope.errors import FoleyscopeError
from foleyscope.server.config import EngineSpec, is_loopback, read_token
from foleyscope.server.redis_queue import RedisLink
from foleyscope.server.store import JobStore


def parse(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_every_engine_setting_survives_the_trip_to_a_worker_command_line():
    args = parse(serve, ["serve", "--preset", "tiny", "--dtype", "bf16", "--attention", "math", "--encoders", "dtype",
                         "--compile", "--cache", "0.1", "--frames", "exact", "--threads", "3", "--device", "cpu"])
    spec = EngineSpec.from_args(args, "tiny")
    changed = {f.name for f in fields(Mode) if spec.mode[f.name] != f.default}
    assert changed >= {"dtype", "attention", "encoders", "compile", "cache"}
    again = EngineSpec.from_args(parse(worker, ["worker", "--queue", "redis://h:1/0", *spec.argv()]), "tiny")
    assert again == spec and EngineSpec.from_json(spec.to_json()) == spec


def test_the_redis_url_s_own_options_are_read_and_stripped():
    link = RedisLink.parse("redis://127.0.0.1:6390/2?heartbeat_s=3&maintenance=0.5")
    assert (link.url, link.heartbeat_s, link.maintenance) == ("redis://127.0.0.1:6390/2", 3.0, 0.5)
    assert RedisLink.parse("redis://h:1/0").heartbeat_s == 15.0
    for bad in ("redis://h:1/0?heartbeat_s=x", "redis://h:1/0?maintenance=2", "redis://h:1/0?heartbeat_s=0.1"):
        with pytest.raises(FoleyscopeError, match="--queue"):
            RedisLink.parse(bad)
    for bad in ("redis://h:abc/0", "redis://h:1/x"):  # refused by redis-py's own parser: one line, no traceback
        with pytest.raises(FoleyscopeError, match="--queue"):
            RedisLink.parse(bad).client()


def test_only_loopback_may_go_without_a_token(tmp_path: Path):
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "example.com"))
    assert read_token(None, "127.0.0.1") is None
    with pytest.raises(FoleyscopeError, match="exposes the server"):
        read_token(None, "0.0.0.0")
    (tmp_path / "t").write_text("  a-long-enough-token-1234  \n")
    assert read_token(tmp_path / "t", "0.0.0.0") == "a-long-enough-token-1234"
    with pytest.raises(FoleyscopeError, match="cannot read"):
        read_token(tmp_path / "missing", "0.0.0.0")


def test_a_job_ends_once_and_late_or_repeated_end_events_change_nothing(tmp_path: Path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    store.insert("b" * 32, {"id": "b" * 32, "steps": 4}, {})
    assert store.finish("b" * 32, "succeeded", processing_s=1.5)
    assert not store.finish("b" * 32, "failed", error="a re-delivered copy")
    job = store.get("b" * 32)
    assert (job["status"], job["processing_s"], job["error"]) == ("succeeded", 1.5, None)
    assert not store.cancel_queued("b" * 32)
    store.close()
