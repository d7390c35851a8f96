"""The doctor's GPU checks, run for real (issue 10, item 7): on a CUDA machine, diagnose

  1. the engine on the CPU while a GPU is visible            -> expect `gpu_visible_unused`
  2. host-to-device copies from pageable memory, blocking     -> expect `pageable_h2d_copies`,
     and the same copies from pinned memory, non_blocking     -> expect it quiet
  3. the engine on CUDA with torch.compile off               -> expect `compile_off`

and record what fired (ids, severities, estimates, each twin's time) in gpu_doctor.json and
gpu_doctor.log under --out ($OUT, else ./gpu-results). Without CUDA (or with --dry-run) scenario 1
runs on the CPU (nothing GPU-related may fire there) and the CUDA parts are skipped with the reason;
the exit status is 0 when every scenario that ran met its expectation, else 1. scripts/gpu_check.sh
runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

COPY_MIB = 256  # per copy; 8 copies: 2 GiB crosses the bus in each twin
COPIES = 8


class Log:
    """Lines to stdout and to gpu_doctor.log, as they happen (a killed run keeps what it printed)."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("w", encoding="utf-8")

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


def summary(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": f["id"], "severity": f["severity"], "est_saving_s": round(f["est_saving_s"], 4),
             "title": f["title"]} for f in findings]


def outcome(expect: str | None, findings: list[dict[str, Any]], *, quiet: str | None = None,
            quiet_findings: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What fired against what was expected: `expect` must fire; `quiet` must not in `quiet_findings`."""
    ids = [f["id"] for f in findings]
    out: dict[str, Any] = {"fired": summary(findings), "expected": expect}
    ok = expect is None or expect in ids
    if expect is not None:
        out["rank_of_expected"] = ids.index(expect) + 1 if expect in ids else None
    if quiet is not None:
        clean_ids = [f["id"] for f in quiet_findings or []]
        out.update(clean_fired=summary(quiet_findings or []), quiet_expected=quiet,
                   quiet_ok=quiet not in clean_ids)
        ok = ok and quiet not in clean_ids
    out["ok"] = ok
    return out


def make_clip(folder: Path) -> Path:
    from foleyscope.media.synth import SynthSpec, make_video

    return make_video(folder / "clip.mp4", SynthSpec(width=320, height=180, fps=25, seconds=1.0))


def doctor_json(clip: Path, folder: Path, name: str, *args: str) -> dict[str, Any]:
    """`foleyscope doctor` in this process on the tiny engine; its JSON report."""
    from foleyscope.cli import main

    report = folder / f"{name}.json"
    argv = ["doctor", str(clip), "--prompt", "rain on a tin roof", "--preset", "tiny", "--steps", "2",
            "--top", "5", "--json", str(report), *args]
    if main(argv) != 0:
        raise RuntimeError(f"foleyscope {' '.join(argv)} failed")
    return json.loads(report.read_text())


def ran(report: dict[str, Any]) -> dict[str, Any]:
    """What the diagnosed run was: its time, stages and the device the doctor saw it on."""
    return {"total_s": round(report["total_s"], 3), "stages": [k for k in report["stages"] if k != "other"],
            "device": report["environment"].get("device")}


def engine_on_cpu(clip: Path, folder: Path, cuda: bool) -> dict[str, Any]:
    """Scenario 1: the engine on the CPU. With a GPU visible the doctor must say so; without one,
    nothing GPU-related may fire."""
    report = doctor_json(clip, folder, "cpu_with_gpu", "--device", "cpu", "--dtype", "fp32")
    findings = report["findings"]
    if cuda:
        return outcome("gpu_visible_unused", findings) | {"run": ran(report)}
    res = outcome(None, findings) | {"run": ran(report)}
    gpu_ids = {"gpu_visible_unused", "torch_cpu_build_with_gpu", "cuda_unavailable_with_gpu"}
    res["ok"] = not gpu_ids & {f["id"] for f in findings}
    res["note"] = "no GPU: gpu_visible_unused is not expected, and no GPU finding may fire"
    return res


def copies(pinned: bool) -> Callable[[], None]:
    """The planted pair: the same bytes to the GPU, from pageable memory with blocking copies, or from
    pinned memory with non_blocking ones (the buffers are made before the traced run)."""
    import torch

    from foleyscope.trace import stage

    host = [torch.full((COPY_MIB * 2**20 // 4,), float(i)) for i in range(COPIES)]
    if pinned:
        host = [h.pin_memory() for h in host]
    dev = torch.empty_like(host[0], device="cuda")

    def run() -> None:
        with stage("upload"):
            for h in host:
                dev.copy_(h, non_blocking=pinned)
            torch.cuda.synchronize()
        with stage("compute"):
            (dev * 2).sum().item()

    return run


def pageable_vs_pinned() -> dict[str, Any]:
    """Scenario 2: the copy pair under the doctor (the pinned twin first, so it never gets warmer caches)."""
    from foleyscope.doctor.api import diagnose

    clean = diagnose(copies(pinned=True))
    planted = diagnose(copies(pinned=False))
    res = outcome("pageable_h2d_copies", [f.to_dict() for f in planted.findings], quiet="pageable_h2d_copies",
                  quiet_findings=[f.to_dict() for f in clean.findings])
    est = next((f.est_saving_s for f in planted.findings if f.id == "pageable_h2d_copies"), None)
    res.update(planted_s=round(planted.total_s, 4), pinned_s=round(clean.total_s, 4),
               measured_saving_s=round(planted.total_s - clean.total_s, 4), est_saving_s=est,
               bytes=COPIES * COPY_MIB * 2**20)
    return res


def engine_on_cuda_uncompiled(clip: Path, folder: Path) -> dict[str, Any]:
    """Scenario 3: the engine on CUDA, compile off (the default)."""
    report = doctor_json(clip, folder, "cuda_uncompiled", "--device", "cuda")
    return outcome("compile_off", report["findings"]) | {"run": ran(report)}


def run_scenario(log: Log, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    log(f"--- {name}")
    t0 = time.perf_counter()
    try:
        res = fn()
    except Exception as exc:  # noqa: BLE001 - recorded, and the other scenarios still run
        res = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    res["wall_s"] = round(time.perf_counter() - t0, 2)
    fired = ", ".join(f"{f['id']} ({f['est_saving_s']:.3f} s)" for f in res.get("fired", [])) or "nothing"
    log(f"{name}: {'ok' if res['ok'] else 'FAILED'} in {res['wall_s']} s; fired: {fired}")
    if "clean_fired" in res:
        log(f"{name} (clean twin): fired: {', '.join(f['id'] for f in res['clean_fired']) or 'nothing'}")
    if "error" in res:
        log(res["traceback"])
    return res


def environment(cuda: bool) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": cuda}
    if cuda:
        major, minor = torch.cuda.get_device_capability(0)
        env.update(gpu=torch.cuda.get_device_name(0), capability=f"{major}.{minor}")
    try:
        import av

        env["pyav"] = av.__version__
    except ImportError:
        env["pyav"] = None
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="run on the CPU and skip the CUDA parts")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-results"))
    args = p.parse_args(argv)
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / "gpu_doctor.log")
    cuda = torch.cuda.is_available() and not args.dry_run
    why = "--dry-run" if args.dry_run else None if cuda else "no CUDA device (torch.cuda.is_available() is False)"
    env = environment(cuda)
    log(f"gpu_doctor: {json.dumps(env)}" + (f"; CUDA parts skipped: {why}" if why else ""))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gpu-doctor-") as tmp:
        folder = Path(tmp)
        clip = make_clip(folder) if env["pyav"] else None
        no_clip = {"ok": False, "skipped": "PyAV is not installed: no clip to run the engine on"}
        results["engine_on_cpu"] = (run_scenario(log, "engine_on_cpu", lambda: engine_on_cpu(clip, folder, cuda))
                                    if clip else no_clip)
        if cuda:
            results["pageable_vs_pinned"] = run_scenario(log, "pageable_vs_pinned", pageable_vs_pinned)
            results["engine_on_cuda_uncompiled"] = (
                run_scenario(log, "engine_on_cuda_uncompiled", lambda: engine_on_cuda_uncompiled(clip, folder))
                if clip else no_clip)
        else:
            results["pageable_vs_pinned"] = results["engine_on_cuda_uncompiled"] = {"ok": None, "skipped": why}
    ok = all(r["ok"] is not False for r in results.values())
    (args.out / "gpu_doctor.json").write_text(json.dumps({"environment": env, "skipped": why, "ok": ok,
                                                          "scenarios": results}, indent=2))
    log(f"gpu_doctor: {'all expectations met' if ok else 'SOME EXPECTATIONS FAILED'}; wrote {args.out}/gpu_doctor.json")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
