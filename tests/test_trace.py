"""The tracer and the sampler measure what really happened: times, nesting, CPU, peak memory, copies,
modules, weight reads, threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import torch
from safetensors.torch import load_file, save_file

from foleyscope.doctor.resources import ResourceSampler
from foleyscope.stages import Stage
from foleyscope.trace import ModelLoad, StageFlops, Tracer, emit, stage, step
from foleyscope.trace import tracer as trace


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_inactive_calls_record_nothing_and_return_values() -> None:
    assert trace.active() is None

    @stage("decorated")
    def f(x: int) -> int:
        return x + 1

    with stage(Stage.DECODE), step(0, 1):
        emit(ModelLoad("ignored", 1.0))
    assert f(1) == 2


def test_nested_stages_steps_notes_and_decorator() -> None:
    @stage("inner_fn")
    def inner() -> str:
        time.sleep(0.05)
        return "ok"

    with Tracer() as tr:
        with stage(Stage.DENOISE):
            for i in range(3):
                with step(i, 3):
                    time.sleep(0.02)
            assert inner() == "ok"
            emit(StageFlops("denoise", 123))
        with pytest.raises(ValueError), stage("fails"):
            raise ValueError("boom")
    names = [s.name for s in tr.stages]
    assert names == ["denoise", "inner_fn", "fails"]
    den, inn, fails = tr.stages
    assert inn.parent == "denoise" and inn.depth == 1 and inn.parent_index == den.index
    assert den.parent is None and fails.end_s is not None  # closed by the exception
    assert den.start_s <= inn.start_s < inn.end_s <= den.end_s
    assert inn.seconds >= 0.05 and den.seconds >= 0.06 + 0.05
    assert [(s.index, s.stage, s.total) for s in tr.steps] == [(0, "denoise", 3), (1, "denoise", 3),
                                                              (2, "denoise", 3)]
    assert all(s.seconds >= 0.02 for s in tr.steps)
    assert tr.events[0].kind == "flops" and tr.events[0].stage == "denoise"
    assert tr.events[0].fields == {"stage": "denoise", "flops": 123}
    assert trace.active() is None  # stop() restored the context


def test_cpu_time_tells_busy_from_idle() -> None:
    with Tracer() as tr:
        with stage("busy"):
            _spin(0.3)
        with stage("idle"):
            time.sleep(0.3)
    busy, idle = tr.stages
    # A spinning thread may lose its core to other processes, but it never gets more than its wall time.
    assert 0.0 < busy.cpu_s <= busy.seconds * 1.05 + 0.01
    assert busy.cpu_s + (busy.cpu_wait_s or 0.0) > 0.5 * busy.seconds  # ran, or was ready to run
    assert idle.cpu_s < 0.05 and (idle.cpu_wait_s or 0.0) < 0.05


def test_peak_rss_is_per_stage() -> None:
    with Tracer() as tr:
        with stage("big"):
            block = torch.ones(64 * 2**20 // 4 * 4)  # 256 MiB, touched
            del block
        with stage("small"):
            small = torch.ones(1024)
            del small
    big, small = tr.stages
    assert big.mem_kind == "rss" and big.peak_mem_bytes == big.peak_rss_bytes
    assert big.peak_rss_bytes - small.peak_rss_bytes > 200 * 2**20  # the reset between stages worked


def test_host_to_device_copies_are_counted() -> None:
    # No GPU here: the same counting runs against the meta device, which real .to() calls also reach.
    x = torch.randn(1000)
    with Tracer(count_h2d=True, h2d_target="meta") as tr:
        with stage("copy"):
            x.to("meta")
            x.to("meta", non_blocking=True)
            torch.empty(1000, device="meta").copy_(x)
        with stage("no_copy"):
            x.to(torch.float64)
    copy, no_copy = tr.stages
    assert copy.h2d_copies == 3 and copy.h2d_bytes == 3 * 4000
    assert copy.pageable_h2d == 3 and copy.blocking_h2d == 2
    assert no_copy.h2d_copies == 0 and no_copy.h2d_bytes == 0
    with Tracer() as tr_cpu, stage("x"):  # off by default without CUDA: no device to copy to
        x.to("meta")
    assert tr_cpu.stages[0].h2d_copies is None


def test_modules_seen_per_stage_with_dtype_autocast_and_rebuilds() -> None:
    def make() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))

    m = make()
    x = torch.randn(2, 8)
    with Tracer() as tr:
        with stage("fp32"):
            m(x)
            m(x)
        with stage("autocast"), torch.autocast("cpu", dtype=torch.bfloat16):
            m(x)
        with stage("rebuilt"):
            make()(x)
    log = tr.modules
    n = 8 * 16 + 16 + 16 * 4 + 4
    assert dict(log.params["fp32"]) == {("cpu", "fp32"): n}
    assert dict(log.compute["autocast"]) == {("cpu", "bf16"): n}
    assert dict(log.params["autocast"]) == {("cpu", "fp32"): n}
    assert list(log.builds.values()) == [2]  # m, then a second object with the same signature
    assert log.root_calls["Sequential"] == 4


def test_weight_reads_are_timed_and_unpatched_after(tmp_path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.randn(256, 256)}, str(path))
    torch.save({"w": torch.randn(16)}, tmp_path / "w.pt")
    original = torch.load
    with Tracer() as tr, stage(Stage.LOAD):
        import safetensors.torch as st

        st.load_file(str(path))
        torch.load(tmp_path / "w.pt", weights_only=True)
        torch.nn.Linear(256, 256).load_state_dict({"weight": torch.zeros(256, 256), "bias": torch.zeros(256)})
    reads = [e.fields for e in tr.events if e.kind == "weights_read"]
    assert [r["loader"] for r in reads] == ["safetensors.safe_open", "torch.load", "load_state_dict"]
    assert reads[0]["path"] == str(path) and reads[0]["bytes"] == path.stat().st_size
    assert reads[2]["params"] == 256 * 256 + 256 and all(r["seconds"] >= 0 for r in reads)
    assert all(e.stage == "load" for e in tr.events)
    assert torch.load is original and load_file(str(path))["w"].shape == (256, 256)


def _in_a_thread(fn) -> None:
    t = threading.Thread(target=fn)
    t.start()
    t.join()


def _worker() -> None:
    with stage("worker"):
        time.sleep(0.05)


def test_worker_threads_are_traced_under_the_stage_that_started_them_when_asked() -> None:
    with Tracer(capture_threads=True) as tr, stage("main"):
        _in_a_thread(_worker)
    main, worker = tr.stages
    assert worker.thread == 1 and worker.parent == "main" and worker.seconds >= 0.05


def test_other_threads_are_not_captured_by_default() -> None:
    """A server running two jobs on two threads: one job's tracer must not record the other's stages."""
    with Tracer() as tr, stage("main"):
        _in_a_thread(_worker)
    assert [s.name for s in tr.stages] == ["main"]


def test_sampler_tags_samples_with_the_running_stage() -> None:
    def until_samples(n: int, wait: Callable[[float], None]) -> None:
        """Sleep or spin until the sampler has taken n samples (a loaded machine samples late)."""
        end = time.perf_counter() + 5.0
        while len(sampler.samples) < n and time.perf_counter() < end:
            wait(0.02)

    with Tracer() as tr:
        sampler = ResourceSampler(hz=20, tracer=tr).start()
        start = time.perf_counter()
        with stage("a"):
            until_samples(6, time.sleep)
        n_a = len(sampler.samples)
        with stage("b"):
            until_samples(n_a + 6, _spin)
            sampler.stop()
        elapsed = time.perf_counter() - start
    tags = [s.stage for s in sampler.samples]
    assert len(tags) <= 20 * elapsed + 2, "never faster than the asked rate"
    assert set(tags[1 : n_a - 1]) == {"a"} and set(tags[n_a + 1 :]) == {"b"}, tags  # boundaries may go either way
    s = sampler.samples[-1]
    assert s.rss_bytes > 0 and len(s.cpu_percent_per_core) >= 1
    assert s.gpu_util is None and s.gpu_mem_bytes is None  # no GPU on this machine
    ts = [x.t for x in sampler.samples]
    assert ts == sorted(ts) and 0 < ts[0] < 0.5
    a = [x.proc_cpu_percent for x in sampler.samples if x.stage == "a"][1:]
    assert max(a) < 30  # sleeping: this process is (nearly) idle


def test_stopping_inside_a_stage_closes_it_with_its_measurements() -> None:
    tr = Tracer().start()
    cm = stage("left_open")
    cm.__enter__()
    _spin(0.05)
    tr.stop()
    rec = tr.stages[0]
    assert rec.end_s is not None and rec.end_s <= tr.total_s and rec.seconds >= 0.05
    assert 0.0 <= rec.cpu_s <= rec.seconds + 0.01
    end = rec.end_s
    cm.__exit__(None, None, None)  # the late exit is harmless
    assert len(tr.stages) == 1 and rec.end_s == end
