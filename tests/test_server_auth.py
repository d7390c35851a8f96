"""Exposure: the server binds loopback by default, refuses any other host without --token-file, and with
a token every API route wants `Authorization: Bearer <token>` (only /health and the page do not)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_server_support import ROOT, Served

pytest_plugins = ["test_server_support"]  # its session fixtures: one server for all these modules

TOKEN = "s3cret-token-for-the-tests-0123456789"


def serve_fails(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "foleyscope", "serve", "--port", "0", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_a_non_loopback_host_without_a_token_file_is_refused_before_starting(tmp_path):
    r = serve_fails("--host", "0.0.0.0", "--data-dir", str(tmp_path))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "foleyscope: error: --host 0.0.0.0 exposes the server beyond this machine: give --token-file F "
        "(a file holding the bearer token clients must send)"]


def test_a_short_token_and_a_per_job_option_are_refused(tmp_path):
    short = tmp_path / "t"
    short.write_text("abc\n")
    r = serve_fails("--token-file", str(short), "--data-dir", str(tmp_path))
    assert r.returncode == 2 and "at least 16 characters" in r.stderr
    r = serve_fails("--prompt", "rain", "--data-dir", str(tmp_path))
    assert r.returncode == 2 and "--prompt is set per job" in r.stderr


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("guarded")
    (folder / "token").write_text(TOKEN + "\n")
    s = Served(folder / "data", "--workers", "0", "--token-file", str(folder / "token"))
    try:
        yield s
    finally:
        s.stop()


@pytest.mark.parametrize("header", [None, "Bearer wrong-token-wrong-token-wrong", f"Basic {TOKEN}", TOKEN])
def test_without_the_right_bearer_token_every_api_route_is_401(guarded, clip: Path, header):
    headers = {"Authorization": header} if header else {}
    for method, path in [("GET", "/v1/jobs"), ("GET", "/v1/jobs/" + "0" * 32), ("GET", "/metrics"),
                         ("POST", "/v1/jobs/" + "0" * 32 + "/cancel"), ("GET", "/v1/jobs/" + "0" * 32 + "/events")]:
        r = guarded.client.request(method, path, headers=headers)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized", (method, path)
        assert r.headers["www-authenticate"] == "Bearer"
    r = guarded.submit(clip, headers=headers)
    assert r.status_code == 401 and not list((guarded.data_dir / "uploads").glob("*"))


def test_with_the_token_the_api_works_and_health_and_the_page_need_none(guarded, clip: Path):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = guarded.submit(clip, headers=auth)
    assert r.status_code == 202 and r.json()["status"] == "queued"  # no workers here: it waits
    assert guarded.client.get(f"/v1/jobs/{r.json()['id']}", headers=auth).json()["queue_position"] == 0
    assert guarded.client.get("/health").json()["auth"] is True
    assert guarded.client.get("/").status_code == 200 and guarded.client.get("/static/app.js").status_code == 200
