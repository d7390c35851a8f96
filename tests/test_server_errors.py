"""Bad input and abuse: every refusal is a 4xx with a JSON body {error, detail} (one line), found before
any worker sees the job; an upload over the limit is refused as soon as it passes it, with nothing left
on disk; the client's file name is never used as a path."""

from __future__ import annotations

import json
import re
import select
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytest_plugins = ["test_server_support"]  # its session fixtures: one server for all these modules


def refused(r, status: int, error: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"] == error
    assert body["detail"] and "\n" not in body["detail"]
    return body["detail"]


def no_partial_uploads(server) -> None:
    uploads = server.data_dir / "uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []


def test_a_text_file_is_refused_as_not_a_video(server, tmp_path):
    notes = tmp_path / "notes.mp4"
    notes.write_text("these are my notes, not a video\n" * 20)
    detail = refused(server.submit(notes), 422, "bad_video")
    assert detail.startswith("'notes.mp4': ") and str(server.data_dir) not in detail
    no_partial_uploads(server)


def test_a_truncated_video_is_refused(server, make_clip, tmp_path):
    whole = make_clip(width=160, height=90, seconds=2.0).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: len(whole) // 2])
    detail = refused(server.submit(cut), 422, "bad_video")
    assert "cut.mp4" in detail and ".part" not in detail


def test_a_video_over_max_seconds_is_refused(server, make_clip):
    detail = refused(server.submit(make_clip(width=64, height=48, seconds=6.0, fps=10)), 422, "too_long")
    assert "6.0 s" in detail and "5 s" in detail


def test_missing_prompt_or_video_and_unknown_fields_are_refused(server, clip):
    with clip.open("rb") as f:
        r = server.client.post("/v1/jobs", files={"video": ("c.mp4", f, "video/mp4")})
    refused(r, 422, "missing_prompt")
    refused(server.client.post("/v1/jobs", files={"prompt": (None, "rain")}), 422, "missing_video")
    assert "stepz" in refused(server.submit(clip, stepz=3), 422, "unknown_field")
    refused(server.client.post("/v1/jobs", json={"prompt": "rain"}), 415, "unsupported_media_type")


@pytest.mark.parametrize(("field", "value", "says"), [
    ("steps", "abc", "steps must be an integer"), ("steps", "0", "steps must be 1 to 1000"),
    ("steps", "1001", "steps must be 1 to 1000"), ("cfg", "nan", "cfg must be 1.0 to 100"),
    ("cfg", "0.5", "cfg must be 1.0"), ("seed", "-1", "seed must be 0 to 2**63-1"),
    ("solver", "rk4", "solver must be euler or heun"), ("mux", "maybe", "mux must be true, false or auto"),
])
def test_bad_numbers_are_refused_with_the_allowed_range(server, clip, field, value, says):
    assert says in refused(server.submit(clip, **{field: value}), 422, "invalid")


def test_unknown_and_malformed_job_ids_are_404(server):
    refused(server.client.get("/v1/jobs/" + "ab" * 16), 404, "not_found")
    refused(server.client.get("/v1/jobs/..%2F..%2Fjobs.sqlite3"), 404, "not_found")
    refused(server.client.post("/v1/jobs/nope/cancel"), 404, "not_found")
    refused(server.client.get("/v1/nothing-here"), 404, "not_found")


def test_cancelling_a_finished_job_is_a_conflict(server, clip):
    job = server.wait(server.submit(clip).json()["id"])
    assert job["status"] == "succeeded"
    assert "already succeeded" in refused(server.client.post(f"/v1/jobs/{job['id']}/cancel"), 409, "conflict")


def test_the_client_file_name_is_never_a_path(server, clip):
    r = server.submit(clip, name="../../escape.mp4")
    job = server.wait(r.json()["id"])
    assert job["status"] == "succeeded" and job["input"]["name"] == "../../escape.mp4"
    assert not list(server.data_dir.parent.rglob("escape.mp4"))
    assert sorted(p.name for p in (server.data_dir / "jobs" / job["id"]).iterdir()) == \
        ["audio.wav", "input", "video.mp4"]


def _send_big(url: str, *, chunked: bool, total: int) -> tuple[int, dict, int]:
    """Stream a `total`-byte video; stop as soon as the server answers. (status, body, bytes sent)."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    b = "bound"
    head = (f'--{b}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nrain\r\n--{b}\r\nContent-Disposition: '
            f'form-data; name="video"; filename="big.mp4"\r\nContent-Type: video/mp4\r\n\r\n').encode()
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(head) + total}"
    frame = (lambda d: b"%x\r\n%s\r\n" % (len(d), d)) if chunked else (lambda d: d)
    sent, chunk = 0, b"\0" * 65536
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={b}\r\n"
                  f"{length}\r\n\r\n".encode() + frame(head))
        while sent < total and not select.select([s], [], [], 0)[0]:
            s.sendall(frame(chunk))
            sent += len(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            answer += s.recv(65536)
    status = int(answer.split(b" ", 2)[1])
    return status, json.loads(answer.split(b"\r\n\r\n", 1)[1]), sent


def _length(answer: bytes) -> int:
    m = re.search(rb"content-length: (\d+)", answer.split(b"\r\n\r\n")[0], re.I)
    return int(m.group(1)) if m else 0


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_upload_over_the_limit_is_refused_early_and_leaves_nothing(server, chunked):
    total = 256 << 20  # the server's limit is 2 MB
    status, body, sent = _send_big(server.url, chunked=chunked, total=total)
    assert status == 413 and body["error"] == "too_large" and "2 MB" in body["detail"]
    assert sent < 32 << 20, f"the client got to send {sent >> 20} MB before the refusal"
    no_partial_uploads(server)


def test_errors_are_counted_in_the_metrics(server, tmp_path: Path):
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"\0" * 100)
    server.submit(bad)
    text = server.client.get("/metrics").text
    assert re.search(r'^foleyscope_errors_total\{error="bad_video"\} [1-9]', text, re.M)


def test_a_client_that_goes_away_mid_upload_leaves_no_partial_file(server):
    host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
    head = (b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nrain\r\n--b\r\nContent-Disposition: '
            b'form-data; name="video"; filename="x.mp4"\r\n\r\n')
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: 1000000\r\n\r\n" + head + b"\0" * 300_000)
        time.sleep(0.3)  # the server has started writing the video part
    deadline = time.monotonic() + 5
    while list((server.data_dir / "uploads").glob("*.part")) and time.monotonic() < deadline:
        time.sleep(0.05)
    no_partial_uploads(server)
    assert server.client.get("/health").status_code == 200
