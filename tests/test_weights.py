"""Checkpoint reading, loading with named key checks and no second copy, safetensors conversion,
finding the official files in a --weights folder, and the `convert` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from foleyscope.cli import main as cli_main
from foleyscope.engine.weights import (
    LoadReport,
    convert_to_safetensors,
    load_module,
    locate_weights,
    parameters_on_meta,
    read_checkpoint,
    read_hf_weights,
    read_state_dict,
    write_safetensors,
)
from foleyscope.errors import FoleyscopeError

ROOT = Path(__file__).resolve().parents[1]


class Small(nn.Module):
    """Parameters, a persistent buffer from the file, and a non-persistent buffer the module derives."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.proj = nn.Linear(width, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(2))
        self.empty_feat = nn.Parameter(torch.randn(1, width))
        self.register_buffer("scale", torch.ones(width))
        self.register_buffer("rope", torch.arange(width, dtype=torch.float32) * 0.5, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x) * self.scale + self.rope.to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return x + self.empty_feat


def trained_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    ref = Small()
    for p in ref.parameters():
        nn.init.normal_(p)
    ref.scale.uniform_(0.5, 2.0)
    return {k: v.clone() for k, v in ref.state_dict().items()}


# ------------------------------------------------------------------------------------------ reading


def test_pth_and_wrapped_pth_read_back_with_metadata(tmp_path: Path) -> None:
    state = trained_state()
    torch.save(state, tmp_path / "flat.pth")
    kwargs = {"encoder_dim": 128, "encoder_rates": [2, 3, 4, 5, 8], "latent_dim": 128, "sample_rate": 48000}
    torch.save({"state_dict": state, "metadata": {"kwargs": kwargs}}, tmp_path / "vae.pth")

    flat, meta = read_checkpoint(tmp_path / "flat.pth")
    assert meta is None and flat.keys() == state.keys()
    wrapped, meta = read_checkpoint(tmp_path / "vae.pth")
    assert meta == {"kwargs": kwargs}
    for k, v in state.items():
        assert torch.equal(wrapped[k], v)


def test_read_refuses_pickled_code_and_junk(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2), "cfg": Path("x")}, tmp_path / "code.pth")  # needs an unsafe global
    with pytest.raises(FoleyscopeError, match="pickled pathlib.PosixPath, and only tensors"):
        read_checkpoint(tmp_path / "code.pth")
    torch.save({"w": torch.ones(2), "step": 5}, tmp_path / "mixed.pth")
    with pytest.raises(FoleyscopeError, match="non-tensor entries: step"):
        read_checkpoint(tmp_path / "mixed.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(FoleyscopeError, match="junk.pth: .*not a torch checkpoint"):
        read_checkpoint(tmp_path / "junk.pth")
    torch.save(trained_state(), tmp_path / "full.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "full.pth").read_bytes()[:300])
    with pytest.raises(FoleyscopeError, match="cut.pth: .*truncated"):
        read_checkpoint(tmp_path / "cut.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(FoleyscopeError, match="safetensors"):
        read_checkpoint(tmp_path / "junk.safetensors")
    with pytest.raises(FoleyscopeError, match="not found"):
        read_checkpoint(tmp_path / "absent.pth")


def test_convert_keeps_every_tensor_bit_exact_and_the_metadata(tmp_path: Path) -> None:
    state = {
        "a.weight": torch.randn(3, 5).to(torch.bfloat16),
        "b.bias": torch.randn(7),
        "c.table": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "d.view": torch.randn(4, 6).t(),  # non-contiguous
        "e.empty": torch.zeros(0),
    }
    meta = {"kwargs": {"latent_dim": 128, "rates": [2, 3]}}
    torch.save({"state_dict": state, "metadata": meta}, tmp_path / "vae.pth")
    seen: list[tuple[int, int]] = []
    convert_to_safetensors(
        tmp_path / "vae.pth", tmp_path / "vae.safetensors", progress=lambda d, t: seen.append((d, t))
    )

    with safe_open(tmp_path / "vae.safetensors", "pt") as f:  # the reference reader agrees
        assert set(f.keys()) == set(state)
        for k, v in state.items():
            assert f.get_tensor(k).dtype == v.dtype and torch.equal(f.get_tensor(k), v)
        assert f.metadata()["foleyscope.source"] == "vae.pth"
    back, back_meta = read_checkpoint(tmp_path / "vae.safetensors")
    assert back_meta == meta and all(torch.equal(back[k], v) for k, v in state.items())
    assert seen[-1][0] == seen[-1][1] == sum(v.numel() * v.element_size() for v in state.values())
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    def boom(done: int, total: int) -> None:
        raise KeyboardInterrupt

    dst = tmp_path / "out.safetensors"
    with pytest.raises(KeyboardInterrupt):
        write_safetensors({"a": torch.ones(10), "b": torch.ones(3)}, dst, progress=boom)
    assert list(tmp_path.iterdir()) == []


def test_sharded_hf_folder_is_merged(tmp_path: Path) -> None:
    write_safetensors({"x.w": torch.ones(2)}, tmp_path / "model-00001-of-00002.safetensors")
    write_safetensors({"y.w": torch.zeros(3)}, tmp_path / "model-00002-of-00002.safetensors")
    shards = {"x.w": "model-00001-of-00002.safetensors", "y.w": "model-00002-of-00002.safetensors"}
    index = {"weight_map": shards}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert sorted(read_hf_weights(tmp_path)) == ["x.w", "y.w"]
    with pytest.raises(FoleyscopeError, match="no weights file"):
        read_hf_weights(tmp_path / "nothing-here")


# ------------------------------------------------------------------------------------------ loading


def test_load_module_gives_the_same_outputs_and_follows_the_buffer_rules(tmp_path: Path) -> None:
    state = trained_state()
    torch.save(state, tmp_path / "small.pth")
    torch.manual_seed(1)
    ref = Small()
    ref.load_state_dict(state)
    x = torch.randn(4, 8)

    mapped = read_state_dict(tmp_path / "small.pth")
    model, report = load_module(Small, mapped, dtype=torch.float32, component="small")
    assert report.ok and report.loaded == len(state) and report.ignored == [] and report.defaulted == []
    torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)
    # same dtype on CPU: the parameters ARE the memory-mapped file tensors, no copy
    assert model.proj.weight.data_ptr() == mapped["proj.weight"].data_ptr()
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    # the derived buffer holds what the constructor computed; it never came from the file
    assert torch.equal(model.rope, torch.arange(8, dtype=torch.float32) * 0.5)

    steps: list[tuple[int, int]] = []
    half, _ = load_module(Small, mapped, dtype=torch.bfloat16, progress=lambda d, t: steps.append((d, t)))
    assert steps[-1][0] == steps[-1][1] == sum(v.numel() * 4 for v in state.values()) + 8 * 4  # + rope
    assert half.proj.weight.dtype == torch.bfloat16 and half.scale.dtype == torch.bfloat16
    assert half.rope.dtype == torch.float32  # module-derived buffers keep their own dtype
    want = ref(x)
    assert (half(x.bfloat16()).float() - want).norm() / want.norm() < 0.03


def test_build_allocates_no_parameters() -> None:
    with parameters_on_meta():
        big = nn.Sequential(nn.Linear(20_000, 20_000), nn.LayerNorm(20_000))  # 1.6 GB if it were real
        big.register_buffer("ids", torch.arange(3))
    assert all(p.is_meta for p in big.parameters())
    assert not big.ids.is_meta
    assert not nn.Linear(2, 2).weight.is_meta  # the patch is gone afterwards

    seen = {}

    def other_thread() -> None:
        seen["meta"] = nn.Linear(2, 2).weight.is_meta

    with parameters_on_meta():  # another thread building a module meanwhile gets real parameters
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
    assert seen == {"meta": False}


def test_key_problems_are_reported_by_name() -> None:
    state = trained_state()
    missing = {k: v for k, v in state.items() if k != "blocks.1.weight"}
    with pytest.raises(FoleyscopeError, match=r"small checkpoint .* 1 missing key\(s\): blocks.1.weight"):
        load_module(Small, missing, component="small")

    extra = dict(state, **{"repa_proj.0.weight": torch.ones(2), "stray.bias": torch.ones(2)})
    with pytest.raises(FoleyscopeError, match=r"1 unexpected key\(s\): stray.bias"):
        load_module(Small, extra, ignored_prefixes=("repa_",))
    extra.pop("stray.bias")
    extra["rope"] = torch.zeros(8)  # a derived buffer some versions saved: ignored, constructor value kept
    model, report = load_module(Small, extra, ignored_prefixes=("repa_",))
    assert report.ignored == ["repa_proj.0.weight", "rope"] and torch.equal(model.rope, torch.arange(8) * 0.5)

    wrong = dict(state, **{"proj.weight": torch.ones(8, 9)})
    with pytest.raises(FoleyscopeError, match=r"proj.weight \[8, 9\] vs model \[8, 8\]"):
        load_module(Small, wrong)

    no_scale = {k: v for k, v in state.items() if k != "scale"}
    with pytest.raises(FoleyscopeError, match="missing key.*scale"):
        load_module(Small, no_scale)
    model, report = load_module(Small, no_scale, derived_buffers=("scale",))
    assert report.defaulted == ["scale"] and torch.equal(model.scale, torch.ones(8))


def test_report_names_only_the_first_few() -> None:
    report = LoadReport("denoiser", missing=[f"k{i}" for i in range(12)])
    with pytest.raises(FoleyscopeError, match=r"12 missing key\(s\): k0, k1, k2, k3, k4 \(\+7 more\)$"):
        report.raise_if_bad()
    ok = LoadReport("denoiser", loaded=3, ignored=["repa_head.0.weight", "repa_head.0.bias", "ssl_proj"])
    ok.raise_if_bad()
    assert ok.summary() == "denoiser: 3 tensors loaded, 3 ignored (repa_head.*, ssl_proj)"


RSS_SCRIPT = """
import json, sys
import psutil, torch
from torch import nn
from foleyscope.engine.weights import load_module, read_state_dict

class Big(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(1000, 1000, bias=False) for _ in range(50))
        self.register_buffer("table", torch.arange(8.0), persistent=False)

path, mode = sys.argv[1], sys.argv[2]
base = psutil.Process().memory_info().rss
with torch.no_grad():
    if mode == "naive":  # the usual way: random init, then a full read, then a copy
        model = Big()
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        dtype = torch.float32 if mode == "fp32" else torch.bfloat16
        model, _ = load_module(Big, read_state_dict(path), dtype=dtype)
    touched = sum(float(p.float().sum()) for p in model.parameters())  # fault in every weight
# VmHWM is this process's own peak; ru_maxrss would start at the parent's peak (vfork + exec)
status = open("/proc/self/status").read()
peak = int(status.split("VmHWM:")[1].split()[0]) * 1024
print(json.dumps({"delta": peak - base}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from Linux /proc")
def test_loading_does_not_keep_a_second_copy_in_ram(tmp_path: Path) -> None:
    torch.save({f"layers.{i}.weight": torch.randn(1000, 1000) for i in range(50)}, tmp_path / "big.pth")
    size = (tmp_path / "big.pth").stat().st_size  # ~200 MB of fp32
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    # one process per mode (a peak only grows), run side by side: VmHWM is each process's own peak
    procs = [subprocess.Popen([sys.executable, "-c", RSS_SCRIPT, str(tmp_path / "big.pth"), mode],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for mode in ("naive", "fp32", "bf16")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    naive, fp32, bf16 = (json.loads(out.strip().splitlines()[-1])["delta"] / size for out, _ in outs)
    assert naive > 1.8, f"measurement is not seeing copies (naive load peaked at {naive:.2f}x)"
    assert fp32 < 1.3, f"fp32 load peaked at {fp32:.2f}x the file size"
    assert bf16 < 1.7, f"bf16 load peaked at {bf16:.2f}x the file size (mapped file + half-size cast)"


# --------------------------------------------------------------------------------- finding the files


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_locate_weights_finds_official_names_and_prefers_safetensors(tmp_path: Path) -> None:
    for name in ("hunyuanvideo_foley.pth", "hunyuanvideo_foley_xl.pth", "hunyuanvideo_foley_xl.safetensors",
                 "vae_128d_48k.pth", "synchformer_state_dict.pth", "siglip2-base-patch16-512/config.json",
                 "clap/config.json"):
        touch(tmp_path / name)
    xxl = locate_weights(tmp_path, "xxl")
    assert xxl.denoiser == tmp_path / "hunyuanvideo_foley.pth"
    assert xxl.siglip == tmp_path / "siglip2-base-patch16-512" and xxl.clap == tmp_path / "clap"
    assert locate_weights(tmp_path, "xl").denoiser == tmp_path / "hunyuanvideo_foley_xl.safetensors"

    # a Hugging Face hub cache entry resolves to the snapshot refs/main points at
    entry = tmp_path / "models--laion--larger_clap_general"
    touch(entry / "snapshots" / "abc123" / "config.json")
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text("abc123\n")
    (tmp_path / "clap" / "config.json").unlink()
    assert locate_weights(tmp_path, "xxl").clap == entry / "snapshots" / "abc123"


def test_locate_weights_lists_everything_missing(tmp_path: Path) -> None:
    touch(tmp_path / "vae_128d_48k.pth")
    (tmp_path / "siglip2").mkdir()  # a folder without config.json does not count
    with pytest.raises(FoleyscopeError) as err:
        locate_weights(tmp_path, "xl")
    msg = str(err.value)
    for expected in ("hunyuanvideo_foley_xl.safetensors or .pth", "synchformer_state_dict", "SigLIP2",
                     "CLAP"):
        assert expected in msg
    assert "vae_128d_48k" not in msg
    with pytest.raises(FoleyscopeError, match="no official weights"):
        locate_weights(tmp_path, "small")
    with pytest.raises(FoleyscopeError, match="not a folder"):
        locate_weights(tmp_path / "nope", "xxl")


# ------------------------------------------------------------------------------------ convert command


def test_convert_command_writes_loadable_safetensors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    state = trained_state()
    torch.save(state, tmp_path / "synchformer_state_dict.pth")
    vae = {"state_dict": state, "metadata": {"kwargs": {"latent_dim": 128}}}
    torch.save(vae, tmp_path / "vae_128d_48k.pth")
    out = tmp_path / "converted"
    assert cli_main(["convert", "--weights", str(tmp_path), "-o", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["synchformer_state_dict.safetensors", "vae_128d_48k.safetensors"]
    sd, meta = read_checkpoint(out / "vae_128d_48k.safetensors")
    assert meta == {"kwargs": {"latent_dim": 128}}
    model, _ = load_module(Small, read_state_dict(out / "synchformer_state_dict.safetensors"))
    assert torch.equal(model.proj.weight, state["proj.weight"])

    before = (out / "vae_128d_48k.safetensors").stat().st_mtime_ns
    assert cli_main(["convert", "--weights", str(tmp_path), "-o", str(out)]) == 0
    assert (out / "vae_128d_48k.safetensors").stat().st_mtime_ns == before
    assert "exists, skipped" in capsys.readouterr().err


def test_convert_command_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["convert", "--weights", str(tmp_path)]) == 2
    assert "no official checkpoint found" in capsys.readouterr().err
    (tmp_path / "vae_128d_48k.pth").write_bytes(b"\x00" * 64)  # truncated download
    assert cli_main(["convert", "--weights", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("foleyscope: error: ") and "vae_128d_48k.pth" in err and err.count("\n") == 1
    assert not (tmp_path / "vae_128d_48k.safetensors").exists()


def test_a_pth_cut_anywhere_is_named_and_called_truncated(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Cut inside the tensor data, torch's zip reader fails with a bare `[Errno 22] Invalid argument`."""
    torch.save({"w": torch.arange(4096.0), "b": torch.ones(512)}, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    cut = tmp_path / "synchformer_state_dict.pth"
    for n in range(100, len(data), len(data) // 60):
        cut.write_bytes(data[:n])
        with pytest.raises(FoleyscopeError, match=r"synchformer_state_dict.pth: .*truncated"):
            read_checkpoint(cut)
    cut.write_bytes(data[: len(data) // 2])
    assert cli_main(["convert", "--weights", str(tmp_path), "-o", str(tmp_path / "st")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "synchformer_state_dict.pth" in err and "truncated" in err
    assert "Errno" not in err
