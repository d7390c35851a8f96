"""No job is lost: records live in SQLite (WAL) under the data directory, so jobs queued before a restart
run after it; a job running when its server stopped goes back to the queue (failed with the reason
after MAX_ATTEMPTS); a worker process killed mid-job has its job put back at the head of the queue."""

from __future__ import annotations

import signal
import time

import psutil
from test_server_support import Served

from foleyscope.server.config import MAX_ATTEMPTS
from foleyscope.server.store import JobStore

pytest_plugins = ["test_server_support"]  # its session fixtures: one server for all these modules


def test_jobs_queued_before_a_restart_run_after_it(tmp_path, clip):
    data = tmp_path / "data"
    first = Served(data, "--workers", "0")
    try:
        ids = [first.submit(clip, seed=i).json()["id"] for i in range(3)]
        assert [first.job(i)["queue_position"] for i in ids] == [0, 1, 2]
    finally:
        assert first.stop() == 143  # SIGTERM: a graceful stop, exit code as every command
    second = Served(data, "--workers", "1")
    try:
        done = [second.wait(i, timeout=90) for i in ids]
        assert [j["status"] for j in done] == ["succeeded"] * 3
        assert [j["settings"]["seed"] for j in done] == [0, 1, 2]
        assert all((data / "jobs" / i / "audio.wav").is_file() for i in ids)

        victim = second.submit(clip, steps=1000).json()["id"]  # a worker killed mid-job
        second.wait(victim, lambda j: (j["step"] or 0) >= 2)
        [worker] = psutil.Process(second.proc.pid).children()
        worker.send_signal(signal.SIGKILL)
        job = second.wait(victim, lambda j: j["status"] != "running", timeout=30)
        assert job["status"] == "queued" and job["queue_position"] == 0 and job["attempts"] == 1
        assert job["error"] == "re-queued: its worker process died (signal SIGKILL)"
        assert second.client.post(f"/v1/jobs/{victim}/cancel").json()["status"] == "canceled"
    finally:
        second.stop()


def test_a_job_running_when_the_server_stopped_is_requeued_then_failed_with_the_reason(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    spec = {"id": "a" * 32, "steps": 4}
    store.insert("a" * 32, spec, {})
    reason = "the server stopped while it ran"
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert store.claim_next("w")["attempts"] == attempt
        store.close()
        store = JobStore(tmp_path / "jobs.sqlite3")  # a restart
        requeued, failed = store.recover(MAX_ATTEMPTS, reason)
        assert (requeued, failed) == (([], ["a" * 32]) if attempt == MAX_ATTEMPTS else (["a" * 32], []))
    job = store.get("a" * 32)
    assert job["status"] == "failed" and job["error"] == f"{reason} ({MAX_ATTEMPTS} attempts)"
    assert job["finished"] <= time.time()
    store.close()
