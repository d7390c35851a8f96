"""Real processes: SIGTERM removes temp files and exits 143, a closed stdout pipe (`| head`) neither
hides a traceback nor loses the report files, and a missing input is answered before torch is imported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1",
       "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _start(*argv: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "foleyscope", *map(str, argv)], env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(condition, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.005)


def _collect(stream, into: list[str]) -> threading.Thread:
    thread = threading.Thread(target=lambda: into.extend(iter(stream.readline, "")), daemon=True)
    thread.start()
    return thread


def test_sigterm_mid_generate_exits_143_and_leaves_nothing(make_clip, tmp_path):
    clip = make_clip(width=160, height=90, seconds=2.0, fps=25)
    out = tmp_path / "out"
    proc = _start("generate", clip, "--prompt", "rain", "--steps", "1000", "--dtype", "fp32",
                  "-o", out / "a.wav", "--mux", out / "a.mp4")
    err: list[str] = []
    reader = _collect(proc.stderr, err)
    _wait_for(lambda: any(line.startswith("denoise:") for line in err) or proc.poll() is not None)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=60)
    reader.join(timeout=10)
    assert rc == 143, (rc, err)
    assert err[-1] == "foleyscope: terminated\n" and not any("Traceback" in line for line in err)
    assert not out.exists() or list(out.iterdir()) == []


def test_sigterm_mid_prep_removes_its_temp_file(make_clip, tmp_path):
    clip = make_clip(width=640, height=360, seconds=8.0, fps=25)
    out = tmp_path / "out"
    out.mkdir()
    proc = _start("prep", clip, "-o", out / "p.mp4", "--preset", "veryslow")
    _wait_for(lambda: any(out.iterdir()) or proc.poll() is not None)
    assert [p.name.startswith(".p.") for p in out.iterdir()] == [True], "the temp file was being written"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert stderr == "foleyscope: terminated\n" and stdout == ""
    assert list(out.iterdir()) == []


def test_doctor_report_files_survive_a_closed_stdout_pipe(make_clip, tmp_path):
    clip = make_clip(width=160, height=90, seconds=1.0, fps=25)
    report = tmp_path / "r.json"
    proc = _start("doctor", clip, "--prompt", "x", "--steps", "1", "--dtype", "fp32", "--json", report)
    proc.stdout.close()  # `| head -0`: the reader is gone before the terminal report is printed
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, stderr
    assert "Traceback" not in stderr and "Error" not in stderr
    assert isinstance(json.loads(report.read_text())["findings"], list)


@pytest.mark.parametrize("command", ["generate", "doctor"])
def test_a_missing_input_is_answered_before_torch_is_imported(command, tmp_path):
    code = ("import sys, time; start = time.perf_counter(); from foleyscope.cli import main; "
            f"rc = main([{command!r}, 'nope.mp4', '--prompt', 'x']); "
            "print(rc, 'torch' in sys.modules, 'transformers' in sys.modules, time.perf_counter() - start)")
    r = subprocess.run([sys.executable, "-c", code], env=ENV, cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    rc, torch_loaded, transformers_loaded, seconds = r.stdout.split()
    assert (rc, torch_loaded, transformers_loaded) == ("2", "False", "False"), r
    assert r.stderr == "foleyscope: error: nope.mp4: no such file\n"
    assert float(seconds) < 2.0


@pytest.mark.parametrize("quiet", [False, True], ids=["bar", "quiet"])
def test_prep_on_a_terminal_draws_a_bar_unless_quiet(make_clip, tmp_path, quiet):
    import pty

    clip = make_clip(width=320, height=180, seconds=2.0, fps=25)
    argv = [sys.executable, "-m", "foleyscope", *(["-q"] if quiet else []), "prep", str(clip),
            "-o", str(tmp_path / "p.mp4")]
    leader, follower = pty.openpty()  # stdout and stderr are a terminal, as in a shell
    proc = subprocess.Popen(argv, env=ENV, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert "wrote" in text
    assert ("\x1b[" in text) is not quiet, text  # cursor and colour codes are the bar's
