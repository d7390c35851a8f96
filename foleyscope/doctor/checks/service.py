"""Step 5 of the diagnosis: is the serving layer, not the model, what makes requests slow?

Against any running HTTP endpoint (see docs/doctor-service.md for the request shape), it measures:
- cold versus warm latency, and the server time not explained by processing: a model reloaded on
  every request shows up as a fixed cost that never goes away after the first request. It is read
  from the server's own processing time when it reports one (X-Process-Time, Server-Timing, a JSON
  field), otherwise from a second, shorter clip: latency = fixed + per-second x duration, and the
  fixed part is what every request pays whatever the clip;
- N requests sent together versus one: serialised handling takes N x as long, and the answers come
  back one after another (staggered), which tells a lock or queue from a shared saturated device;
- upload versus processing: the body counts as uploaded when the kernel's send queue is empty
  (every byte acknowledged by the server), not when `send` returns into a multi-megabyte buffer.
"""

from __future__ import annotations

import os
import shlex
import statistics
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import av

from foleyscope.doctor.checks.input import ARTICLE, target_size
from foleyscope.doctor.finding import Finding, rank
from foleyscope.doctor.http_timing import MultipartShape, RequestShape, Timing
from foleyscope.doctor.registry import Found, check
from foleyscope.doctor.run import RunData
from foleyscope.errors import FoleyscopeError, MediaError
from foleyscope.media.container import open_input, video_stream

__all__ = ["MultipartShape", "RequestShape", "Timing", "check_service", "clip_duration", "cut_head",
           "measure_service", "service_findings"]

Progress = Callable[[int, int, str], None]
MIN_RELOAD_S = 0.15  # a fixed cost per request below this is parsing and writing, not a model load
MIN_RELOAD_SHARE = 0.1
BITS_PER_PIXEL_AFTER_PREP = 0.1  # x264 crf 23 on camera footage: about 0.05-0.15 bits per pixel per frame


def check_service(url: str, video_path: str, prompt: str, *, n_parallel: int = 4, timeout_s: float = 120.0,
                  warm_requests: int = 2, shape: RequestShape | None = None,
                  progress: Progress | None = None) -> tuple[dict, list[Finding]]:
    """measure_service, then the step 5 checks on its measurements: (measurements, ranked findings)."""
    m = measure_service(url, video_path, prompt, n_parallel=n_parallel, timeout_s=timeout_s,
                        warm_requests=warm_requests, shape=shape, progress=progress)
    return m, service_findings(m)


def service_findings(m: dict[str, Any]) -> list[Finding]:
    """What the registered step 5 checks find in measure_service's measurements, ranked."""
    return rank(service_reloads_model.findings(_reload(m)) + service_serialises_requests.findings(_serialised(m))
                + service_upload_dominates.findings(_upload(m)) + service_cold_start.findings(_cold_start(m)))


def measure_service(url: str, video_path: str, prompt: str, *, n_parallel: int = 4, timeout_s: float = 120.0,
                    warm_requests: int = 2, shape: RequestShape | None = None,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Measure a running endpoint with 1 cold + `warm_requests` warm + `n_parallel` concurrent requests
    (+1 short-clip request when the server reports no processing time). A diagnosis takes the result as
    `DiagnoseContext.service`; its step 5 checks read it there."""
    if n_parallel < 1 or warm_requests < 1 or timeout_s <= 0:
        raise FoleyscopeError("service check needs n_parallel >= 1, warm_requests >= 1 and timeout_s > 0")
    shape = shape or MultipartShape()
    clip = Path(video_path)
    duration = clip_duration(video_path)  # also rejects a missing or unreadable file
    total = 1 + warm_requests + 2
    done = 0

    def step(label: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total, label)

    cold = shape.send(url, video_path, prompt, timeout_s)
    cold.label = "cold"
    step("cold request")
    warm = []
    for i in range(warm_requests):
        t = shape.send(url, video_path, prompt, timeout_s)
        t.label = f"warm{i + 1}"
        warm.append(t)
        step(f"warm request {i + 1}")
    reported = all(t.reported_processing_s is not None for t in (cold, *warm))
    short = None
    short_s = None
    if not reported and duration > 0.6:
        with tempfile.TemporaryDirectory(prefix="foleyscope-doctor-") as tmp:
            short_path = Path(tmp) / ("head" + clip.suffix)
            try:
                short_s = cut_head(video_path, short_path, min(1.0, duration / 4))
            except (MediaError, av.error.FFmpegError, ValueError):
                short_s = None  # cannot stream-copy this file: the reload check then has no data
            if short_s:
                short = shape.send(url, str(short_path), prompt, timeout_s)
                short.label = "short"
    step("short-clip request" if short else "no short clip needed")
    batch = _parallel(shape, url, video_path, prompt, n_parallel, timeout_s)
    step(f"{n_parallel} concurrent requests")
    return _measurements(url, shape, video_path, duration, cold, warm, short, short_s, batch)


# --- measurements ------------------------------------------------------------------------------------

def _parallel(shape: RequestShape, url: str, video_path: str, prompt: str, n: int,
              timeout_s: float) -> list[Timing]:
    barrier = threading.Barrier(n)
    results: list[Timing | BaseException | None] = [None] * n

    def one(i: int) -> None:
        try:
            barrier.wait(timeout=timeout_s)
            results[i] = shape.send(url, video_path, prompt, timeout_s)
            results[i].label = f"parallel{i + 1}"
        except BaseException as exc:  # re-raised in the caller's thread
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        if isinstance(r, BaseException):
            raise r if isinstance(r, FoleyscopeError) else FoleyscopeError(f"{url}: {r}")
    return [r for r in results if isinstance(r, Timing)]


def _measurements(url: str, shape: RequestShape, clip: str, duration: float, cold: Timing, warm: list[Timing],
                  short: Timing | None, short_s: float | None, batch: list[Timing]) -> dict[str, Any]:
    med = lambda xs: statistics.median(xs) if xs else 0.0
    w = warm or [cold]
    m: dict[str, Any] = {
        "url": url, "request_shape": shape.name, "clip": str(clip), "clip_duration_s": round(duration, 3),
        "body_bytes": cold.body_bytes, "upload_clock": cold.upload_clock,
        "cold": _row(cold), "warm": [_row(t) for t in warm],
        "cold_wait_s": cold.wait_s, "warm_wait_s": med([t.wait_s for t in w]),
        "warm_total_s": med([t.total_s for t in w]), "warm_upload_s": med([t.upload_s for t in w]),
        "upload_share": med([t.upload_s / t.total_s for t in w if t.total_s > 0]),
    }
    if all(t.reported_processing_s is not None for t in (cold, *w)):
        m["reported_processing_s"] = med([t.reported_processing_s for t in w])
        m["cold_overhead_s"] = cold.wait_s - cold.reported_processing_s - (cold.reported_load_s or 0)
        m["warm_overhead_s"] = med([t.wait_s - t.reported_processing_s - (t.reported_load_s or 0) for t in w])
        loads = [t.reported_load_s for t in w if t.reported_load_s is not None]
        if loads:
            m["reported_load_s"] = med(loads)
    if short is not None and short_s is not None and duration > short_s:
        slope = max(0.0, (m["warm_wait_s"] - short.wait_s) / (duration - short_s))
        m["short"] = _row(short) | {"clip_duration_s": round(short_s, 3)}
        m["per_video_second_s"] = slope
        m["fixed_cost_s"] = max(0.0, min(short.wait_s, short.wait_s - slope * short_s))
    n = len(batch)
    if n:
        wall = max(t.end for t in batch) - min(t.start for t in batch)
        lat = sorted(t.total_s for t in batch)
        m["parallel"] = {
            "n": n, "wall_s": wall, "latencies_s": [round(x, 4) for x in lat],
            "effective_concurrency": n * m["warm_total_s"] / wall if wall > 0 else float(n),
            "first_to_last_latency": lat[0] / lat[-1] if lat[-1] > 0 else 1.0,
        }
    return _rounded(m)


def _row(t: Timing) -> dict[str, Any]:
    d = asdict(t)
    for k in ("start", "end", "body_bytes", "upload_clock"):
        d.pop(k)
    return d


def _rounded(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


# --- rules: each check reads the measurements a diagnosis carries in `context.service` ----------------

def _measured(run: RunData) -> dict[str, Any] | None:
    return getattr(run.context, "service", None)


@check("service_reloads_model", step=5,
       doc="every request pays a fixed cost outside processing, warm as much as cold: the model is loaded per "
           "request; load it once at start-up")
def service_reloads_model(run: RunData) -> Found | None:
    m = _measured(run)
    return _reload(m) if m else None


@check("service_serialises_requests", step=5,
       doc="N concurrent requests take about N x one request, answered one after another: a global lock or "
           "synchronous handler; use an async server with a job queue")
def service_serialises_requests(run: RunData) -> Found | None:
    m = _measured(run)
    return _serialised(m) if m else None


@check("service_upload_dominates", step=5,
       doc="sending the video takes a large share of each request: prep it smaller before upload, upload "
           "separately with a progress bar")
def service_upload_dominates(run: RunData) -> Found | None:
    m = _measured(run)
    return _upload(m) if m else None


@check("service_cold_start", step=5,
       doc="the first request pays model loading once: load and warm up at start-up")
def service_cold_start(run: RunData) -> Found | None:
    m = _measured(run)
    return _cold_start(m) if m else None


def _reload(m: dict[str, Any]) -> Found | None:
    warm_wait = m["warm_wait_s"]
    if "warm_overhead_s" in m:
        over, cold_over = m["warm_overhead_s"], m["cold_overhead_s"]
        if "reported_load_s" in m:
            over = m["reported_load_s"]
        how = ("server time not covered by its reported processing time (wait - reported), median of warm "
               "requests" if "reported_load_s" not in m else "the server's own Server-Timing load entry")
        severity = "critical"
    elif "fixed_cost_s" in m:
        # the cold request's own fixed part (its wait less the per-second cost of its clip), not its whole
        # wait: processing longer than the load must not hide a load paid by every request
        over = m["fixed_cost_s"]
        cold_over = max(0.0, m["cold_wait_s"] - m["per_video_second_s"] * m["clip_duration_s"])
        how = (f"no processing time reported: a {m['short']['clip_duration_s']} s clip and the full clip, "
               "wait = fixed + per-second x duration; the fixed part is paid by every request (a server that "
               "always processes a fixed-length window would look the same)")
        severity = "warning"
    else:
        return None
    if over < max(MIN_RELOAD_S, MIN_RELOAD_SHARE * warm_wait) or over < 0.5 * cold_over:
        return None
    return Found(
        severity=severity,
        title=f"Every request pays {over:.2f} s before processing, warm as much as cold: "
              "model loaded per request",
        evidence={"per_request_overhead_s": over, "cold_wait_s": m["cold_wait_s"], "warm_wait_s": warm_wait,
                  "reported_processing_s": m.get("reported_processing_s"), "how": how},
        fix=("Load the model once at server start-up and keep it in memory (a module-level or app-state "
             "object, not inside the request handler)"),
        est_saving_s=round(over, 4),
        extra={"saving_unit": "per request"},
    )


def _cold_start(m: dict[str, Any]) -> Found | None:
    extra = m["cold_wait_s"] - m["warm_wait_s"]
    if extra < max(0.5, 0.5 * m["warm_wait_s"]):
        return None
    return Found(
        severity="info",
        title=f"The first request took {extra:.2f} s longer than the next ones: lazy model loading",
        evidence={"cold_wait_s": m["cold_wait_s"], "warm_wait_s": m["warm_wait_s"]},
        fix="Load the model and run one warm-up request at start-up, and report ready only after it",
        est_saving_s=round(extra, 4), extra={"saving_unit": "once per server start"},
    )


def _serialised(m: dict[str, Any]) -> Found | None:
    p = m.get("parallel")
    if not p or p["n"] < 2:
        return None
    eff, stagger = p["effective_concurrency"], p["first_to_last_latency"]
    if eff >= 1.5 or stagger > 0.6:
        return None  # concurrent, or all finished together (a shared saturated device: batch instead)
    saving = max(0.0, p["wall_s"] - m["warm_total_s"])
    return Found(
        severity="critical",
        title=f"{p['n']} concurrent requests took {p['wall_s']:.2f} s, {eff:.2f} at a time: "
              "requests are serialised",
        evidence={"n": p["n"], "batch_wall_s": p["wall_s"], "one_request_s": m["warm_total_s"],
                  "effective_concurrency": eff, "latencies_s": p["latencies_s"],
                  "how": "answers came back one after another (first/last latency "
                         f"{stagger:.2f}): a lock or a synchronous handler, not a shared busy device. "
                         "Saving = batch wall - one request, assuming one request leaves the device "
                         "spare capacity"},
        fix=("Use an async server (FastAPI + Uvicorn) that accepts jobs into a queue and runs them on a "
             "worker that owns the model, batching requests where the device has room; a Redis-backed "
             "queue to scale out across GPUs"),
        est_saving_s=round(saving, 4), extra={"saving_unit": f"per batch of {p['n']} requests"},
    )


def _upload(m: dict[str, Any]) -> Found | None:
    share, up, video_path = m["upload_share"], m["warm_upload_s"], m["clip"]
    if share < 0.3 or up < 0.05:
        return None
    try:
        ratio, how = _size_ratio_after_prep(video_path)
    except MediaError as exc:
        ratio, how = 1.0, f"size after prep unknown ({exc})"
    return Found(
        severity="warning" if share >= 0.5 else "info",
        title=f"Uploading the video takes {share:.0%} of each request ({up:.2f} s)",
        evidence={"upload_s": up, "server_wait_s": m["warm_wait_s"], "request_s": m["warm_total_s"],
                  "upload_share": share, "body_bytes": m["body_bytes"],
                  "throughput_MBps": m["body_bytes"] / up / 1e6 if up > 0 else None,
                  "estimate": f"saving = upload_s x (1 - size after prep / size now); {how}"},
        fix=(f"Prep before upload (`foleyscope prep {shlex.quote(Path(video_path).name)} -o small.mp4 "
             "--height 720 --fps 25`), "
             "upload once and reference it by id, and show an upload progress bar so upload time is not "
             "mistaken for inference time"),
        est_saving_s=round(up * (1 - ratio), 4), extra={"saving_unit": "per request"},
    )


def _size_ratio_after_prep(video_path: str) -> tuple[float, str]:
    from foleyscope.media.probe import probe

    info = probe(video_path)
    w, h = target_size(info, ARTICLE)
    fps = min(float(info.fps or ARTICLE.target_fps), ARTICLE.target_fps)
    after = BITS_PER_PIXEL_AFTER_PREP * w * h * fps * float(info.duration_s or 0) / 8
    size = float(info.size_bytes or os.path.getsize(video_path))
    ratio = min(1.0, after / size) if size > 0 else 1.0
    return ratio, (f"size after prep assumed {BITS_PER_PIXEL_AFTER_PREP} bits/pixel at {w}x{h} {fps:g} fps "
                   f"= {after / 1e6:.2f} MB vs {size / 1e6:.2f} MB now")


# --- helpers -----------------------------------------------------------------------------------------

def clip_duration(path: str | os.PathLike[str]) -> float:
    """Duration in seconds (container, else video stream); MediaError if unreadable."""
    with open_input(path) as c:
        if c.duration:
            return float(c.duration) / 1_000_000
        s = video_stream(c)
        return float(s.duration * s.time_base) if s.duration and s.time_base else 0.0


def cut_head(src: str | os.PathLike[str], dst: str | os.PathLike[str], seconds: float) -> float:
    """Copy the first `seconds` of the video stream (no re-encode) into `dst`; return its duration."""
    with open_input(src) as inp:
        ins = video_stream(inp)
        with av.open(str(dst), "w") as out:
            outs = out.add_stream_from_template(ins)
            for pkt in inp.demux(ins):
                if pkt.dts is None:
                    continue
                if float(pkt.dts * ins.time_base) >= seconds:
                    break
                pkt.stream = outs
                out.mux(pkt)
    return clip_duration(dst)
