"""What a Tracer observes without the traced code's help: host-to-device copies (wrapped Tensor.to/cuda/copy_),
the modules each stage runs (global forward hooks: parameter devices/dtypes, autocast, rebuilt models)
and weight-file reads (torch.load, safetensors, load_state_dict). Each installer returns its undo."""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from foleyscope.hardware import norm_dtype
from foleyscope.trace.events import WeightsRead

# -- host-to-device copies --------------------------------------------------------------------------


class CopyCounter:
    """Counts copies from a CPU tensor to `target` (device type), with bytes, pinned and non_blocking.

    It wraps the three Python entry points that start such a copy (Tensor.to, Tensor.cuda, Tensor.copy_)
    rather than installing a dispatch mode: a mode would put a Python call in front of every op of the
    traced run and so slow down, and distort, the very GPU timings the doctor reads. Copies started from
    C++ are not seen; model code starts its host-to-device copies from Python."""

    def __init__(self, target: str = "cuda") -> None:
        self.target = target
        self.copies = self.bytes = self.pageable = self.blocking = 0

    def snapshot(self) -> tuple[int, int, int, int]:
        return self.copies, self.bytes, self.pageable, self.blocking

    def _count(self, src: Any, non_blocking: bool) -> None:
        self.copies += 1
        self.bytes += src.numel() * src.element_size()
        try:
            pinned = bool(src.is_pinned())
        except (RuntimeError, NotImplementedError):  # no accelerator runtime to ask
            pinned = False
        self.pageable += not pinned
        self.blocking += not non_blocking

    def _seen(self, src: Any, out: Any, non_blocking: bool) -> None:
        if out is not src and getattr(out, "device", None) is not None and src.device.type == "cpu" \
                and out.device.type == self.target:
            self._count(src, non_blocking)

    def install(self) -> Callable[[], None]:
        import torch

        counter = self
        orig_to, orig_cuda, orig_copy = torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.copy_

        def to(self: Any, *args: Any, **kwargs: Any) -> Any:
            out = orig_to(self, *args, **kwargs)
            nb = kwargs.get("non_blocking", any(a is True for a in args if isinstance(a, bool)))
            counter._seen(self, out, bool(nb))
            return out

        def cuda(self: Any, *args: Any, **kwargs: Any) -> Any:
            out = orig_cuda(self, *args, **kwargs)
            counter._seen(self, out, bool(kwargs.get("non_blocking", len(args) > 1 and args[1])))
            return out

        def copy_(self: Any, src: Any, non_blocking: bool = False) -> Any:
            if self.device.type == counter.target and getattr(src, "device", None) is not None \
                    and src.device.type == "cpu":
                counter._count(src, bool(non_blocking))
            return orig_copy(self, src, non_blocking)

        torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.copy_ = to, cuda, copy_

        def undo() -> None:
            torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.copy_ = orig_to, orig_cuda, orig_copy

        return undo


# -- modules each stage runs ------------------------------------------------------------------------


class ModuleLog:
    """Per stage: parameter elements by (device, dtype) and by (device, effective compute dtype, i.e. the
    autocast dtype when autocast is on); per root model: how many distinct objects were built."""

    def __init__(self) -> None:
        self.params: dict[str | None, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
        self.compute: dict[str | None, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
        self.builds: dict[str, int] = defaultdict(int)  # root model signature -> distinct objects
        self.root_calls: dict[str, int] = defaultdict(int)
        # per stage: calls of each Linear shape (tokens, in, out, device, compute dtype), the work the
        # doctor's A/B probes time to price a dtype or thread change at the model's own shapes
        self.linears: dict[str | None, dict[tuple[int, int, int, str, str], int]] = \
            defaultdict(lambda: defaultdict(int))
        self.compiled = False
        # when each parameter was registered (a model being built), and per new root object: (signature,
        # its parameters' first registration, its first forward): the whole load, whatever read the weights
        self.clock: Callable[[], float] = time.perf_counter
        self.registered_at: dict[int, float] = {}
        self.loads: list[tuple[str, float, float]] = []
        # wall seconds inside CPU Linear calls per stage: what the run's matmuls took as it ran, beside which
        # the doctor re-times the same shapes (an idle machine, another dtype, other threads)
        self.linear_s: dict[str | None, float] = defaultdict(float)
        # per stage: calls of scaled_dot_product_attention per (q shape, k shape, device, dtype)
        self.attention: dict[str | None, dict[tuple, int]] = defaultdict(lambda: defaultdict(int))
        self._linear_t0 = threading.local()
        self._seen: set[tuple[str | None, int]] = set()
        self._roots: dict[int, weakref.ref] = {}
        self._depth = threading.local()

    def to_dict(self) -> dict[str, Any]:
        def flat(d: dict) -> dict[str, dict[str, int]]:
            return {str(s): {f"{dev}/{dt}": n for (dev, dt), n in v.items()} for s, v in d.items()}

        return {"params": flat(self.params), "compute": flat(self.compute), "builds": dict(self.builds),
                "root_calls": dict(self.root_calls), "compiled": self.compiled,
                "linears": {str(s): [[*k, n] for k, n in v.items()] for s, v in self.linears.items()}}

    def _signature(self, module: Any) -> str:
        n = count = 0
        for p in module.parameters():
            n += p.numel()
            count += 1
        return f"{type(module).__qualname__}[{count} tensors, {n} params]"

    def _linear(self, module: Any, args: Any, stage: str | None, torch: Any) -> None:
        x = args[0] if args else None
        w = module.weight
        if not isinstance(x, torch.Tensor) or x.dim() == 0 or w.dim() != 2:
            return
        dev, dt = w.device.type, norm_dtype(w.dtype)
        if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev):
            dt = norm_dtype(torch.get_autocast_dtype(dev))
        self.linears[stage][(x.numel() // max(1, x.shape[-1]), w.shape[1], w.shape[0], dev, dt)] += 1

    def pre(self, module: Any, stage: str | None, torch: Any, args: Any = ()) -> None:
        if isinstance(module, torch.nn.Linear):
            self._linear(module, args, stage, torch)
            if module.weight.device.type == "cpu":  # on a GPU the call only queues work: no time to read
                self._linear_t0.t, self._linear_t0.m = time.perf_counter(), module
        depth = getattr(self._depth, "d", 0)
        self._depth.d = depth + 1
        if depth == 0:
            ref = self._roots.get(id(module))
            if ref is None or ref() is not module:  # a new object (or a dead one's reused id)
                self._roots[id(module)] = weakref.ref(module)
                sig = self._signature(module)
                self.builds[sig] += 1
                born = [self.registered_at[id(p)] for p in module.parameters() if id(p) in self.registered_at]
                if born:
                    self.loads.append((sig, min(born), self.clock()))
                if type(module).__name__ == "OptimizedModule":
                    self.compiled = True
            self.root_calls[type(module).__qualname__] += 1
        key = (stage, id(module))
        if key in self._seen:
            return
        self._seen.add(key)
        for p in module.parameters(recurse=False):
            if not p.is_floating_point():
                continue
            dev, dt = p.device.type, norm_dtype(p.dtype)
            self.params[stage][(dev, dt)] += p.numel()
            eff = dt
            if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev):
                eff = norm_dtype(torch.get_autocast_dtype(dev))
            self.compute[stage][(dev, eff)] += p.numel()

    def post(self, module: Any = None, stage: str | None = None) -> None:
        self._depth.d = max(0, getattr(self._depth, "d", 1) - 1)
        if module is not None and getattr(self._linear_t0, "m", None) is module:
            self.linear_s[stage] += time.perf_counter() - self._linear_t0.t
            self._linear_t0.m = None


def watch_modules(log: ModuleLog, current_stage: Callable[[], str | None]) -> Callable[[], None]:
    import torch
    from torch.nn.modules import module as nn_module

    is_compiling = torch.compiler.is_compiling

    def pre_hook(module: Any, args: Any) -> None:
        if is_compiling():
            return
        log.pre(module, current_stage(), torch, args)

    def post_hook(module: Any, args: Any, output: Any) -> None:
        if is_compiling():
            return
        log.post(module, current_stage())

    def registered(module: Any, name: str, param: Any) -> None:
        if param is not None:
            log.registered_at[id(param)] = log.clock()  # overwritten: a reused id is a new parameter

    h1 = nn_module.register_module_forward_pre_hook(pre_hook)
    h2 = nn_module.register_module_forward_hook(post_hook, always_call=True)
    h3 = nn_module.register_module_parameter_registration_hook(registered)
    functional = torch.nn.functional
    sdpa = functional.scaled_dot_product_attention

    def attention(q: Any, k: Any, v: Any, *args: Any, **kwargs: Any) -> Any:
        if not is_compiling() and not args and kwargs.get("attn_mask") is None:  # the plain calls: timeable
            key = (tuple(q.shape), tuple(k.shape), q.device.type, norm_dtype(q.dtype))
            log.attention[current_stage()][key] += 1
        return sdpa(q, k, v, *args, **kwargs)

    functional.scaled_dot_product_attention = attention

    def undo() -> None:
        h1.remove()
        h2.remove()
        h3.remove()
        functional.scaled_dot_product_attention = sdpa

    return undo


# -- weight-file reads ------------------------------------------------------------------------------

_LOAD_PATCH: dict[str, Any] = {"depth": 0, "originals": []}


def _path_and_size(obj: Any) -> tuple[str | None, int | None]:
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        try:
            return path, os.path.getsize(path)
        except OSError:
            return path, None
    return None, None


def _timed(fn: Callable, loader: str) -> Callable:
    from foleyscope.trace.tracer import emit

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        path, size = _path_and_size(args[0] if args else kwargs.get("f", kwargs.get("filename")))
        emit(WeightsRead(loader, time.perf_counter() - t, path=path, bytes=size))
        return out

    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


def _timed_load_state_dict(fn: Callable) -> Callable:
    from foleyscope.trace.tracer import emit

    def load_state_dict(self: Any, state_dict: Any, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = fn(self, state_dict, *args, **kwargs)
        n = sum(getattr(v, "numel", lambda: 0)() for v in state_dict.values())
        emit(WeightsRead("load_state_dict", time.perf_counter() - t, module=type(self).__qualname__, params=n))
        return out

    load_state_dict.__wrapped__ = fn  # type: ignore[attr-defined]
    return load_state_dict


class _TimedSafeOpen:
    """safe_open(...) as a context manager that notes the file, its size and the time from open to close
    (the tensor reads happen in between)."""

    def __init__(self, orig: Callable, args: tuple, kwargs: dict) -> None:
        self._t = time.perf_counter()
        self._args = args
        self._kwargs = kwargs
        self._handle = orig(*args, **kwargs)

    def __enter__(self) -> Any:
        return self._handle.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        from foleyscope.trace.tracer import emit

        out = self._handle.__exit__(*exc)
        path, size = _path_and_size(self._args[0] if self._args else self._kwargs.get("filename"))
        emit(WeightsRead("safetensors.safe_open", time.perf_counter() - self._t, path=path, bytes=size))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _timed_safe_open(orig: Callable) -> Callable:
    def safe_open(*args: Any, **kwargs: Any) -> _TimedSafeOpen:
        return _TimedSafeOpen(orig, args, kwargs)

    safe_open.__wrapped__ = orig  # type: ignore[attr-defined]
    return safe_open


def watch_loads() -> Callable[[], None]:
    """Time torch.load, numpy.load, safetensors' safe_open (behind load_file, however it was imported)
    and Module.load_state_dict while any tracer runs."""
    if _LOAD_PATCH["depth"] == 0:
        originals = _LOAD_PATCH["originals"]
        torch = sys.modules.get("torch")
        if torch is None:
            import torch
        originals.append((torch, "load", torch.load))
        torch.load = _timed(torch.load, "torch.load")
        np = sys.modules.get("numpy")
        if np is not None:  # a numpy-based checkpoint loader (np.load of .npy/.npz)
            originals.append((np, "load", np.load))
            np.load = _timed(np.load, "numpy.load")
        originals.append((torch.nn.Module, "load_state_dict", torch.nn.Module.load_state_dict))
        torch.nn.Module.load_state_dict = _timed_load_state_dict(torch.nn.Module.load_state_dict)
        try:
            import safetensors
            import safetensors.torch as st
        except ImportError:
            st = None
        if st is not None:
            originals.append((st, "safe_open", st.safe_open))
            st.safe_open = _timed_safe_open(st.safe_open)
            originals.append((safetensors, "safe_open", safetensors.safe_open))
            safetensors.safe_open = _timed_safe_open(safetensors.safe_open)
    _LOAD_PATCH["depth"] += 1

    def undo() -> None:
        _LOAD_PATCH["depth"] -= 1
        if _LOAD_PATCH["depth"] == 0:
            for owner, name, fn in reversed(_LOAD_PATCH["originals"]):
                setattr(owner, name, fn)
            _LOAD_PATCH["originals"].clear()

    return undo
