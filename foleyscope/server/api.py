"""The HTTP API (/v1/jobs ...), /health and /metrics. Handlers never run inference and never block on
it: they read and write job records and hand jobs to the queue, so a status poll answers in
milliseconds while a job runs. Finished jobs' answers carry `Server-Timing` with their stage times."""

from __future__ import annotations

import asyncio
import hmac
import re
import shutil
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.requests import ClientDisconnect

from foleyscope import __version__
from foleyscope.server import submit
from foleyscope.server.errors import ApiError
from foleyscope.server.metrics import CONTENT_TYPE
from foleyscope.server.sse import job_events
from foleyscope.server.store import TERMINAL
from foleyscope.server.upload import FORM_OVERHEAD, receive_upload

if TYPE_CHECKING:
    from foleyscope.server.app import ServerState

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
VIDEO_TYPES = {".mp4": "video/mp4", ".mkv": "video/x-matroska", ".webm": "video/webm"}
_SUBMIT_DOC = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["video", "prompt"], "properties": {
        "video": {"type": "string", "format": "binary"}, "prompt": {"type": "string"},
        "negative_prompt": {"type": "string"}, "steps": {"type": "integer"}, "cfg": {"type": "number"},
        "seed": {"type": "integer"}, "solver": {"type": "string", "enum": ["euler", "heun"]},
        "mux": {"type": "string", "enum": ["auto", "true", "false"]}}}}}},
    "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"},
                    "description": "the same key with the same body gives back the same job"},
                   {"name": "Prefer", "in": "header", "required": False, "schema": {"type": "string"},
                    "description": "wait=S: answer when the job has ended, up to S seconds"}]}


def state(request: Request) -> ServerState:
    return request.app.state.server


async def require_token(request: Request) -> None:
    """Bearer token, compared in constant time (only when the server was given one)."""
    token = state(request).config.token
    if token is None:
        return
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise ApiError(401, "unauthorized", "send the server's token as `Authorization: Bearer <token>`",
                       headers={"WWW-Authenticate": "Bearer"})


public = APIRouter()
router = APIRouter(dependencies=[Depends(require_token)])


@public.get("/health", summary="STARTING, READY or BUSY, with the model's load time and mode")
async def health(request: Request) -> dict[str, Any]:
    s = state(request)
    counts = s.store.counts()
    return s.hub.health() | {
        "queue": s.queue.name, "queued": counts["queued"], "running": counts["running"], "version": __version__,
        "auth": s.config.token is not None, "max_upload_mb": s.config.max_upload_bytes >> 20,
        "max_seconds": s.config.max_seconds, "defaults": {"steps": s.config.defaults.steps,
                                                          "cfg": s.config.defaults.cfg}}


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    return Response(state(request).metrics.render(), media_type=CONTENT_TYPE)


@router.post("/v1/jobs", status_code=202, openapi_extra=_SUBMIT_DOC,
             summary="Submit a video and a prompt; 202 with the job id (?wait=S: answer when done, up to S s)")
async def create_job(request: Request, wait: float = Query(0, ge=0, le=600)) -> Response:
    s = state(request)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > s.config.max_upload_bytes + FORM_OVERHEAD:
        raise ApiError(413, "too_large", f"the upload is {int(length) >> 20} MB; this server takes up to "
                                         f"{s.config.max_upload_bytes >> 20} MB (prep the video smaller)")
    try:
        upload = await receive_upload(request.stream(), request.headers.get("content-type", ""),
                                      s.config.data_dir / "uploads", s.config.max_upload_bytes,
                                      s.metrics.upload_bytes)
    except ClientDisconnect:  # the client went away mid-upload; its partial file is already removed
        s.metrics.errors.labels("client_disconnected").inc()
        return Response(status_code=400)
    try:
        if upload.path is None:
            raise ApiError(422, "missing_video", "the form needs a `video` file field")
        settings = submit.parse_settings(upload.fields, s.config.defaults)
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 200:
            raise ApiError(422, "invalid", "Idempotency-Key must be 1 to 200 characters")
        job = submit.replay(s.store, key, upload) if key else None
        created = job is None
        if job is None:
            info = await submit.probe_upload(upload, s.config.max_seconds)
            job, created = await submit.create_job(s.store, s.config.data_dir, upload, settings, info, key)
    finally:
        if upload.path is not None:
            upload.path.unlink(missing_ok=True)  # moved into the job's folder, or not wanted
    if created:
        s.queue.submit(job)
        s.hub.notify_queued()
    wait = wait or _prefer_wait(request.headers.get("prefer", ""))
    if wait:
        job = await s.hub.wait_end(job["id"], wait) or s.store.get(job["id"]) or job
    status = 200 if job["status"] in TERMINAL else 202
    headers = {"Location": f"/v1/jobs/{job['id']}", **_timing(job)}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(s.hub.view(job), status_code=status, headers=headers)


def _prefer_wait(prefer: str) -> float:
    """RFC 7240 `Prefer: wait=N` (as Replicate's API takes it)."""
    m = re.search(r"\bwait=(\d+(?:\.\d+)?)", prefer)
    return min(600.0, float(m.group(1))) if m else 0.0


@router.get("/v1/jobs", summary="Recent jobs, newest first")
async def list_jobs(request: Request, limit: int = Query(50, ge=1, le=1000)) -> dict[str, Any]:
    s = state(request)
    return {"jobs": [s.hub.view(j) for j in s.store.recent(limit)]}


def _job(request: Request, job_id: str) -> dict[str, Any]:
    job = state(request).store.get(job_id) if JOB_ID.match(job_id) else None
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id[:64]!r}")
    return job


def _timing(job: dict[str, Any]) -> dict[str, str]:
    """W3C Server-Timing from the worker's stage times (no load entry: the model was loaded at start)."""
    times = job.get("stage_times") or {}
    if job["status"] != "succeeded" or not times:
        return {}
    return {"Server-Timing": ", ".join(f"{stage};dur={sec * 1000:.1f}" for stage, sec in times.items())}


@router.get("/v1/jobs/{job_id}", summary="Status, stage, step k of N, ETA, queue position; stage times when done")
async def get_job(request: Request, job_id: str) -> JSONResponse:
    job = _job(request, job_id)
    return JSONResponse(state(request).hub.view(job), headers=_timing(job))


@router.get("/v1/jobs/{job_id}/events", summary="Server-sent events: state first, then stages, steps, end")
async def job_events_route(request: Request, job_id: str) -> StreamingResponse:
    _job(request, job_id)
    return StreamingResponse(job_events(state(request).hub, job_id), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _output(request: Request, job_id: str, which: str) -> FileResponse:
    job = _job(request, job_id)
    if job["status"] != "succeeded":
        raise ApiError(409, "not_ready", f"job {job_id} is {job['status']}; its files exist once it has succeeded")
    rel = job["spec"].get(which)
    if not rel:
        raise ApiError(404, "not_found", f"job {job_id} was submitted without mux; it has no video")
    path = state(request).config.data_dir / rel
    if not path.is_file():
        raise ApiError(404, "not_found", f"job {job_id}'s {which} file is gone")
    kind = "audio/wav" if which == "audio" else VIDEO_TYPES.get(path.suffix, "application/octet-stream")
    return FileResponse(path, media_type=kind, filename=f"{job_id}{path.suffix}", headers=_timing(job))


@router.get("/v1/jobs/{job_id}/audio", summary="The generated 48 kHz WAV")
async def get_audio(request: Request, job_id: str) -> FileResponse:
    return _output(request, job_id, "audio")


@router.get("/v1/jobs/{job_id}/video", summary="The input video with the generated audio")
async def get_video(request: Request, job_id: str) -> FileResponse:
    return _output(request, job_id, "video")


@router.post("/v1/jobs/{job_id}/cancel", summary="Cancel: a queued job never starts, a running one stops at its "
                                                 "next step")
async def cancel_job(request: Request, job_id: str) -> JSONResponse:
    s, job = state(request), _job(request, job_id)
    if job["status"] in TERMINAL:
        raise ApiError(409, "conflict", f"job {job_id} has already {job['status']}; there is nothing to cancel")
    s.queue.cancel(job)  # first: when Redis is away (503) nothing is recorded; a queued job's message is skipped
    if s.store.cancel_queued(job_id):
        s.hub.ended_while_queued(job_id)
        return JSONResponse(s.hub.view(s.store.get(job_id) or job))
    s.store.update(job_id, cancel_requested=1)
    return JSONResponse(s.hub.view(s.store.get(job_id) or job), status_code=202)


@router.delete("/v1/jobs/{job_id}", status_code=204, summary="Remove a finished job and its files")
async def delete_job(request: Request, job_id: str) -> Response:
    s, job = state(request), _job(request, job_id)
    if job["status"] not in TERMINAL:
        raise ApiError(409, "conflict", f"job {job_id} is {job['status']}; cancel it before deleting it")
    await asyncio.to_thread(shutil.rmtree, s.config.data_dir / "jobs" / job_id, True)
    s.store.delete(job_id)
    return Response(status_code=204)
