"""Serving benchmark (issue 12, item 7): `foleyscope serve` as a real process on loopback, tiny preset.

  poll     status-poll latency (GET /v1/jobs/{id}, keep-alive) p50/p99 while a long job runs on the
           worker: inference must never block the event loop (target p99 < 50 ms on 2 cores)
  jobs     jobs per minute with 1 and 2 embedded workers (serve's default threads, cores / workers, and
           1 worker with 1 thread): N jobs submitted at once, from the first submit to the last job's end
  upload   the server's RSS while a 500 MB upload streams in (target: grows by < 50 MB): the body is
           parsed as it arrives and written to disk in chunks

Usage: python benchmarks/serve.py [--polls 1000] [--jobs 16] [--steps 25] [--upload-mb 500] [--only poll,jobs,upload]
Prints one markdown table (the one in benchmarks/RESULTS.md, section "Serving").
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from foleyscope.media.synth import SynthSpec, make_video  # noqa: E402

ENGINE = ["--dtype", "fp32"]


class Server:
    def __init__(self, data: Path, *args: str) -> None:
        self.log = data.parent / f"{data.name}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "foleyscope", "serve", "--port", "0", "--data-dir",
                                          str(data), *ENGINE, *args], cwd=ROOT, stdout=log, stderr=log,
                                         start_new_session=True)
        deadline = time.monotonic() + 60
        while not (m := re.search(r"serving on (http://\S+)", self.log.read_text())):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"server did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        self.url = m.group(1)
        self.client = httpx.Client(base_url=self.url, timeout=600)

    def ready(self, workers: int) -> None:
        while sum(w["state"] == "ready" for w in self.client.get("/health").json()["workers"]) < workers:
            time.sleep(0.1)

    def submit(self, clip: Path, **fields: object) -> str:
        with clip.open("rb") as f:
            r = self.client.post("/v1/jobs", data={"prompt": "rain", **{k: str(v) for k, v in fields.items()}},
                                 files={"video": (clip.name, f, "video/mp4")})
        r.raise_for_status()
        return r.json()["id"]

    def wait(self, job_id: str) -> dict:
        while (job := self.client.get(f"/v1/jobs/{job_id}").json())["status"] not in ("succeeded", "failed",
                                                                                        "canceled"):
            time.sleep(0.02)
        return job

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)


def poll_latency(tmp: Path, clip: Path, polls: int) -> list[tuple[str, str]]:
    s = Server(tmp / "poll", "--workers", "1")
    try:
        s.ready(1)
        job_id = s.submit(clip, steps=1000)
        while s.client.get(f"/v1/jobs/{job_id}").json()["stage"] != "denoise":
            time.sleep(0.01)
        times = []
        for _ in range(polls):
            t0 = time.perf_counter()
            assert s.client.get(f"/v1/jobs/{job_id}").status_code == 200
            times.append(time.perf_counter() - t0)
        running = s.client.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
        s.client.post(f"/v1/jobs/{job_id}/cancel")
    finally:
        s.stop()
    q = statistics.quantiles(times, n=100)
    note = "" if running else " (the job ended before the last poll)"
    return [("status poll while a job runs, p50", f"{q[49] * 1000:.1f} ms"),
            ("status poll while a job runs, p99", f"{q[98] * 1000:.1f} ms{note}"),
            ("status poll while a job runs, max", f"{max(times) * 1000:.1f} ms ({polls} polls)")]


def jobs_per_minute(tmp: Path, clip: Path, n: int, steps: int, workers: int, threads: int) -> tuple[str, str]:
    s = Server(tmp / f"jobs{workers}x{threads}", "--workers", str(workers), "--threads", str(threads))
    try:
        s.ready(workers)
        t0 = time.perf_counter()
        ids = [s.submit(clip, steps=steps, seed=i) for i in range(n)]
        done = [s.wait(i) for i in ids]
        wall = time.perf_counter() - t0
    finally:
        s.stop()
    assert all(j["status"] == "succeeded" for j in done), [j["error"] for j in done]
    mean = statistics.mean(j["processing_s"] for j in done)
    return (f"jobs per minute, {workers} worker{'s' if workers > 1 else ''} x {threads} torch thread"
            f"{'s' if threads > 1 else ''}",
            f"{n / wall * 60:.1f} ({n} jobs in {wall:.1f} s; {mean:.2f} s of processing each)")


def upload_rss(tmp: Path, megabytes: int) -> list[tuple[str, str]]:
    s = Server(tmp / "upload", "--workers", "0", "--max-upload-mb", str(megabytes + 10))
    proc = psutil.Process(s.proc.pid)
    peak, stop = [proc.memory_info().rss], threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak.append(proc.memory_info().rss)

    def body():  # the prompt, then `megabytes` of video bytes, as a browser's FormData would send them
        yield b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nrain\r\n--b\r\nContent-Disposition: ' \
              b'form-data; name="video"; filename="big.mp4"\r\nContent-Type: video/mp4\r\n\r\n'
        chunk = os.urandom(1 << 20)
        for _ in range(megabytes):
            yield chunk
        yield b"\r\n--b--\r\n"

    try:
        time.sleep(0.5)
        base = proc.memory_info().rss
        threading.Thread(target=sample, daemon=True).start()
        t0 = time.perf_counter()
        r = s.client.post("/v1/jobs", content=body(), headers={"Content-Type": "multipart/form-data; boundary=b"})
        wall = time.perf_counter() - t0
        stop.set()
    finally:
        s.stop()
    growth = (max(peak) - base) / 2**20
    return [(f"server RSS while a {megabytes} MB upload streams in",
             f"+{growth:.1f} MB over {base / 2**20:.0f} MB ({megabytes / wall:.0f} MB/s; answered {r.status_code}: "
             f"{r.json()['error']})")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--polls", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--upload-mb", type=int, default=500)
    ap.add_argument("--only", default="poll,jobs,upload")
    args = ap.parse_args()
    only = set(args.only.split(","))
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="foleyscope-bench-serve-") as tmp_name:
        tmp = Path(tmp_name)
        clip = make_video(tmp / "clip.mp4", SynthSpec(width=320, height=180, seconds=2.0))
        if "poll" in only:
            rows += poll_latency(tmp, clip, args.polls)
        if "jobs" in only:
            cores = os.cpu_count() or 1  # serve's default: cores / workers threads each; 1 thread for comparison
            rows += [jobs_per_minute(tmp, clip, args.jobs, args.steps, w, t)
                     for w, t in ((1, cores), (1, 1), (2, max(1, cores // 2)))]
        if "upload" in only:
            rows += upload_rss(tmp, args.upload_mb)
    print(f"tiny preset, fp32, 2 s 320x180 H.264 clip, {args.steps} steps; {os.cpu_count()} CPUs\n")
    print("| measure | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
