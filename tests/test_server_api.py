"""The job API against a real `foleyscope serve` (embedded queue, two tiny workers): 202 and a job that
ends with audio exactly as long as the video, SSE with every stage and step (late clients first get the
current state), downloads, cancel at the next step, a cancelled queued job that never starts, delete,
Idempotency-Key, metrics, health and Server-Timing."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import av
import soundfile as sf
from test_server_support import events

pytest_plugins = ["test_server_support"]  # its session fixtures: one server for all these modules

STAGES = ["decode", "visual_encode", "text_encode", "sync_encode", "denoise", "vae_decode", "postprocess"]


def test_health_says_ready_with_the_load_time_and_the_mode(server):
    h = server.client.get("/health").json()
    assert h["status"] in ("READY", "BUSY")
    assert h["load_s"] > 0 and h["warmup_s"] > 0
    assert h["mode"].startswith("fp32") and h["preset"] == "tiny" and h["device"] == "cpu"
    assert len(h["workers"]) == 2 and h["queue"] == "embedded"


def test_the_api_is_described_in_openapi(server):
    paths = server.client.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events", "/v1/jobs/{job_id}/audio",
            "/v1/jobs/{job_id}/video", "/v1/jobs/{job_id}/cancel", "/health", "/metrics"} <= set(paths)
    form = paths["/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    headers = {p["name"] for p in paths["/v1/jobs"]["post"]["parameters"] if p["in"] == "header"}
    assert form["required"] == ["video", "prompt"] and headers == {"Idempotency-Key", "Prefer"}


def test_a_submitted_job_answers_202_and_ends_with_audio_as_long_as_the_video(server, clip, tmp_path):
    r = server.submit(clip, seed=7)
    assert r.status_code == 202
    body = r.json()
    assert re.fullmatch(r"[0-9a-f]{32}", body["id"]) and body["status"] == "queued"
    assert body["queue_position"] == 0 and r.headers["location"] == f"/v1/jobs/{body['id']}"
    job = server.wait(body["id"])
    assert job["status"] == "succeeded", job
    assert set(job["stage_times"]) == set(STAGES) and job["processing_s"] > 0 and job["upload_s"] >= 0
    assert job["settings"]["seed"] == 7 and job["attempts"] == 1

    audio = server.client.get(f"/v1/jobs/{body['id']}/audio")
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    (tmp_path / "a.wav").write_bytes(audio.content)
    info = sf.info(tmp_path / "a.wav")
    assert info.samplerate == 48000 and abs(info.duration - 1.2) < 1e-3

    video = server.client.get(f"/v1/jobs/{body['id']}/video")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    (tmp_path / "v.mp4").write_bytes(video.content)
    with av.open(str(tmp_path / "v.mp4")) as c:
        assert len(c.streams.video) == 1 and c.streams.audio[0].codec_context.name == "aac"


def test_finished_jobs_carry_server_timing_with_their_stage_times(server, clip):
    job = server.wait(server.submit(clip).json()["id"])
    for path in ("", "/audio"):
        timing = server.client.get(f"/v1/jobs/{job['id']}{path}").headers["server-timing"]
        entries = dict(re.findall(r"(\w+);dur=([\d.]+)", timing))
        assert list(entries) == STAGES
        assert float(entries["denoise"]) / 1000 == round(job["stage_times"]["denoise"] * 1000, 1) / 1000


def test_wait_answers_when_the_job_is_done(server, clip):
    r = server.client.post("/v1/jobs?wait=60", data={"prompt": "rain"},
                           files={"video": ("c.mp4", clip.read_bytes(), "video/mp4")})
    assert r.status_code == 200 and r.json()["status"] == "succeeded"
    assert "denoise;dur=" in r.headers["server-timing"]


@contextmanager
def workers_busy(server, clip) -> Iterator[list[str]]:
    """Both workers on long jobs, so the next job waits in the queue; cancelled on the way out."""
    busy = [server.submit(clip, steps=1000).json()["id"] for _ in range(2)]
    try:
        for job_id in busy:
            server.wait(job_id, lambda j: j["status"] == "running")
        yield busy
    finally:
        for job_id in busy:
            server.client.post(f"/v1/jobs/{job_id}/cancel")


def test_events_stream_every_stage_and_step_then_the_end(server, clip):
    with workers_busy(server, clip):
        job_id = server.submit(clip, steps=12).json()["id"]
        stream = events(server.url, job_id)
        first = next(stream)
    got = [first, *stream]
    assert got[0][0] == "state" and got[0][1]["id"] == job_id and got[0][1]["status"] == "queued"
    starts = [d["stage"] for n, d in got if n == "stage" and d["state"] == "start"]
    ends = {d["stage"]: d["seconds"] for n, d in got if n == "stage" and d["state"] == "end"}
    assert starts == STAGES and set(ends) == set(STAGES) and all(s > 0 for s in ends.values())
    steps = [d for n, d in got if n == "step" and d["stage"] == "denoise"]
    assert [d["step"] for d in steps] == list(range(1, 13)) and all(d["steps"] == 12 for d in steps)
    assert all(d["seconds"] > 0 for d in steps) and steps[-1]["eta_s"] is not None
    assert got[-1][0] == "end" and got[-1][1]["status"] == "succeeded"


def test_a_late_client_gets_the_current_state_first(server, clip):
    job_id = server.submit(clip, steps=300).json()["id"]
    server.wait(job_id, lambda j: (j["step"] or 0) >= 5)
    name, first = next(events(server.url, job_id))
    assert name == "state" and first["status"] == "running" and first["stage"] == "denoise"
    assert first["step"] >= 5 and first["eta_s"] > 0
    server.client.post(f"/v1/jobs/{job_id}/cancel")
    done = server.wait(job_id)
    late = list(events(server.url, job_id))
    assert [n for n, _ in late] == ["state", "end"] and late[1][1]["status"] == done["status"] == "canceled"


def test_cancel_stops_a_running_job_at_the_next_step_and_leaves_no_file(server, clip):
    job_id = server.submit(clip, steps=1000).json()["id"]
    stream = events(server.url, job_id)
    for name, data in stream:
        if name == "step" and data.get("step", 0) >= 3:
            break
    r = server.client.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    rest = list(stream)
    assert rest[-1][0] == "end" and rest[-1][1]["status"] == "canceled"
    last_step = max(d["step"] for n, d in rest if n == "step" and "step" in d)
    assert last_step <= r.json()["step"] + 3, "steps kept running after the cancel reached the worker"
    assert not any(p.name.startswith(("audio", "video", ".")) for p in (server.data_dir / "jobs" / job_id).iterdir())


def test_a_queued_job_cancelled_never_starts(server, clip):
    with workers_busy(server, clip) as busy:
        queued = server.submit(clip).json()
        assert queued["status"] == "queued" and queued["queue_position"] == 0
        stream = events(server.url, queued["id"])
        assert next(stream)[1]["status"] == "queued"
        r = server.client.post(f"/v1/jobs/{queued['id']}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "canceled"
    seen = [(n, d.get("status")) for n, d in stream]
    assert seen == [("end", "canceled")]
    for job_id in busy:
        server.wait(job_id)
    time.sleep(0.3)  # workers are idle again: the cancelled job would have been claimed by now
    job = server.job(queued["id"])
    assert job["status"] == "canceled" and job["started"] is None and job["attempts"] == 0


def test_delete_removes_a_finished_job_and_its_files(server, clip):
    job_id = server.submit(clip, steps=50).json()["id"]
    refused = server.client.delete(f"/v1/jobs/{job_id}")
    assert refused.status_code == 409 and "cancel it" in refused.json()["detail"]
    server.wait(job_id)
    folder = server.data_dir / "jobs" / job_id
    assert (folder / "audio.wav").is_file()
    assert server.client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert not folder.exists()
    r = server.client.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_the_same_idempotency_key_and_body_give_the_same_job(server, clip, make_clip):
    key = {"Idempotency-Key": f"k-{time.time_ns()}"}
    first = server.submit(clip, headers=key, seed=1)
    again = server.submit(clip, headers=key, seed=1)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    other = server.submit(clip, headers=key, seed=2)
    assert other.status_code == 409 and other.json()["error"] == "idempotency_conflict"
    assert server.submit(clip, seed=1).json()["id"] != first.json()["id"]  # no key: a new job
    listed = [j["id"] for j in server.client.get("/v1/jobs?limit=5").json()["jobs"]]
    assert listed.count(first.json()["id"]) == 1


def test_metrics_count_jobs_stages_steps_uploads_and_errors(server, clip):
    job_id = server.submit(clip, steps=6).json()["id"]
    server.wait(job_id)
    server.client.get("/v1/jobs/" + "0" * 32)
    text = server.client.get("/metrics").text
    value = lambda name: float(re.search(rf"^{re.escape(name)} ([\d.e+]+)$", text, re.M).group(1))
    assert value('foleyscope_jobs{status="succeeded"}') >= 1 and value("foleyscope_queue_depth") >= 0
    assert value('foleyscope_stage_seconds_count{stage="denoise"}') >= 1
    assert value("foleyscope_step_seconds_count") >= 6
    assert value("foleyscope_upload_bytes_total") > clip.stat().st_size
    assert value('foleyscope_errors_total{error="not_found"}') >= 1


def test_status_polls_stay_fast_while_a_job_runs(server, clip):
    job_id = server.submit(clip, steps=1000).json()["id"]
    server.wait(job_id, lambda j: j["stage"] == "denoise")
    times = []
    for _ in range(100):  # one keep-alive connection, as a polling client uses
        t0 = time.perf_counter()
        assert server.client.get(f"/v1/jobs/{job_id}").status_code == 200
        times.append(time.perf_counter() - t0)
    assert server.job(job_id)["status"] == "running"
    server.client.post(f"/v1/jobs/{job_id}/cancel")
    assert sorted(times)[50] < 0.02, f"median poll {sorted(times)[50] * 1000:.0f} ms: the event loop is blocked"
