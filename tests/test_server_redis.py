"""Redis scale-out against a real redis-server: 20 short jobs, 2 `foleyscope worker` processes, a worker
SIGKILLed mid-job 3 times (and restarted), the server itself restarted with jobs still queued. Every
job must end succeeded (a killed worker's job re-delivered to another) or failed with a reason; none
lost, none completed twice (one end event per job on the stream). Then cancelling works through Redis:
a queued job never starts, running ones stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import soundfile as sf
from test_server_support import ENGINE, ROOT, TERMINAL, Served, redis_server

pytest_plugins = ["test_server_support"]  # its session fixtures: one server for all these modules

# a silent worker is dead after 2 s; maintenance runs on a fifth of queue commands (the defaults take minutes)
QUEUE_OPTIONS = "heartbeat_s=2&maintenance=0.2"
N_JOBS, KILLS = 20, 3


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


class Workers:
    """`foleyscope worker` processes the test can kill by pid and replace."""

    def __init__(self, queue: str, data: Path, log: Path) -> None:
        self.queue, self.data, self.log = queue, data, log.open("ab")
        self.procs: dict[int, subprocess.Popen] = {}

    def start(self) -> None:
        cmd = [sys.executable, "-m", "foleyscope", "worker", "--queue", self.queue, "--data-dir", str(self.data),
               *ENGINE]
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=self.log, start_new_session=True)
        self.procs[p.pid] = p

    def kill(self, pid: int) -> bool:
        p = self.procs.pop(pid, None)
        if p is None:
            return False
        p.send_signal(signal.SIGKILL)
        p.wait()
        return True

    def close(self) -> None:
        for pid in list(self.procs):
            self.kill(pid)
        self.log.close()


def test_killed_workers_and_a_server_restart_lose_no_job_and_complete_none_twice(redis_url, clip, tmp_path):
    queue, data = f"{redis_url}?{QUEUE_OPTIONS}", tmp_path / "data"
    server = Served(data, "--queue", queue, "--workers", "0")
    workers = Workers(queue, data, tmp_path / "workers.log")
    try:
        for _ in range(2):
            workers.start()
        ids = [server.submit(clip, steps=16, seed=i).json()["id"] for i in range(N_JOBS)]
        server.wait_ready(2)
        victims = kill_mid_job(server, workers, KILLS)
        assert server.client.get("/health").json()["queued"] > 0, "the restart must find jobs still queued"
        assert server.stop() == 143
        server = Served(data, "--queue", queue, "--workers", "0")
        final = {i: server.wait(i, timeout=120) for i in ids}
        server.wait_ready(2)
        cancelled = cancel_queued_and_running(server, clip, redis_url)
    finally:
        server.stop()
        workers.close()

    assert all(j["status"] == "succeeded" or (j["status"] == "failed" and j["error"]) for j in final.values())
    for job_id in victims:
        assert final[job_id]["status"] == "succeeded" and final[job_id]["attempts"] >= 2, final[job_id]
    ends = Counter(e["id"] for e in stream_events(redis_url) if e["type"] in TERMINAL)
    assert ends == dict.fromkeys(ids + cancelled, 1), "a job ended more than once, or never"
    for job_id, job in final.items():
        if job["status"] == "succeeded":
            assert abs(sf.info(data / "jobs" / job_id / "audio.wav").duration - 1.2) < 1e-3


def kill_mid_job(server: Served, workers: Workers, kills: int, timeout: float = 60) -> list[str]:
    """SIGKILL the worker of a job in its denoising steps, start a fresh worker, `kills` times."""
    victims: list[str] = []
    deadline = time.monotonic() + timeout
    while len(victims) < kills and time.monotonic() < deadline:
        for job in server.client.get("/v1/jobs", params={"limit": N_JOBS}).json()["jobs"]:
            pid = int(job["worker"].rsplit(":", 1)[1]) if job["worker"] else None
            if job["status"] == "running" and (job["step"] or 0) >= 1 and workers.kill(pid):
                victims.append(job["id"])
                workers.start()
                break
        time.sleep(0.02)
    assert len(victims) == kills, f"only {len(victims)} workers killed mid-job"
    return victims


def cancel_queued_and_running(server: Served, clip: Path, redis_url: str) -> list[str]:
    """Both workers on long jobs and a third waiting: the waiting one is cancelled at once and never
    starts, the running ones stop at their next step."""
    jobs = [server.submit(clip, steps=1000).json()["id"] for _ in range(3)]
    for job_id in jobs[:2]:
        server.wait(job_id, lambda j: (j["step"] or 0) >= 1)
    assert server.job(jobs[2])["status"] == "queued"
    assert server.client.post(f"/v1/jobs/{jobs[2]}/cancel").json()["status"] == "canceled"
    for job_id in jobs[:2]:
        assert server.client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    done = [server.wait(j) for j in jobs]
    assert [j["status"] for j in done] == ["canceled"] * 3 and all(j["step"] is None for j in done)
    assert done[2]["started"] is None and done[2]["attempts"] == 0
    assert all(j["attempts"] == 1 for j in done[:2])
    deadline = time.monotonic() + 20  # a worker takes the cancelled job's message, and skips it
    while not [e for e in stream_events(redis_url) if e.get("id") == jobs[2]] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [e["type"] for e in stream_events(redis_url) if e.get("id") == jobs[2]] == ["canceled"]
    return jobs


def stream_events(url: str) -> list[dict]:
    client = redis.Redis.from_url(url)
    try:
        return [json.loads(fields[b"e"]) for _, fields in client.xrange("foleyscope:events")]
    finally:
        client.close()


def test_a_worker_without_redis_queue_is_refused(tmp_path):
    r = subprocess.run([sys.executable, "-m", "foleyscope", "worker", "--data-dir", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 2 and "--queue redis://HOST:PORT/DB is required" in r.stderr
