"""How the benchmarks time: warm-up, synchronised blocks of calls in interleaved cycles,
ratios paired per cycle, peak memory of one call, precision and backend switches.

A ratio of two medians taken one after the other on a shared machine measures the machine as
much as the code; timing every implementation once per cycle and taking the median of the
per-cycle ratios (paired_ratio) cancels interference that lasts longer than a cycle.
"""
from __future__ import annotations

import contextlib
import gc
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch.utils.benchmark import Timer

import ttfs_ext

__all__ = ["MODES", "Precision", "PRECISIONS", "Context", "measure", "time_runs", "peak_memory", "PEAK_MEMORY_METHOD",
           "precision_context", "autocast", "use_backend", "compile_fresh", "no_grad", "release_memory",
           "time_paired", "time_interleaved", "paired_ratio", "unavailable", "BLOCK_SECONDS"]

MODES = ("fwd", "bwd", "fwd+bwd")


@dataclass(frozen=True)
class Precision:
    name: str                                  # "float32", "tf32", "bfloat16"
    tf32: bool = False
    autocast: Optional[torch.dtype] = None


PRECISIONS = {"float32": Precision("float32"), "tf32": Precision("tf32", tf32=True),
              "bfloat16": Precision("bfloat16", autocast=torch.bfloat16)}


@dataclass
class Context:
    """The settings of a run: where and how long to time, and what the cases include."""
    device: str
    threads: int
    min_run_time: float
    warmup: int
    compile: bool
    precisions: list[Precision]
    reference_budget: int                       # bytes the sort-and-gather reference may use
    only: list[str] = field(default_factory=list)
    rounds: int = 1                             # interleaved rounds of time_interleaved
    log: Callable[[str], None] = print
    channels_last: bool = False                 # conv layers: inputs and weights in channels_last memory

    def selected(self, section: str, name: str) -> bool:
        label = f"{section}/{name}".lower()
        return not self.only or any(s.lower() in label for s in self.only)

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()


def unavailable(err: BaseException) -> dict[str, str]:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return {"na": f"{type(err).__name__}: {text[:200]}"}


def measure(fn: Callable[[], Any], ctx: Context) -> dict[str, Any]:
    """Median time of fn() in ms after ctx.warmup calls (fewer for calls longer than
    min_run_time) with blocked_autorange (CUDA synchronised)."""
    for _ in range(ctx.warmup):
        start = time.perf_counter()
        fn()
        ctx.sync()
        if time.perf_counter() - start > ctx.min_run_time:
            break
    m = Timer("fn()", globals={"fn": fn}, num_threads=ctx.threads).blocked_autorange(min_run_time=ctx.min_run_time)
    return {"median_ms": m.median * 1e3, "iqr_ms": m.iqr * 1e3, "runs": len(m.times),
            "calls_per_run": m.number_per_run}


def time_runs(fn: Callable[[], Any], ctx: Context, repeats: int) -> dict[str, Any]:
    """For calls of seconds: `repeats` timed calls (after whatever warm-up the caller did)."""
    times = []
    for _ in range(max(1, repeats)):
        ctx.sync()
        start = time.perf_counter()
        fn()
        ctx.sync()
        times.append(time.perf_counter() - start)
    times.sort()
    return {"median_ms": times[len(times) // 2] * 1e3, "iqr_ms": None, "range_ms": (times[-1] - times[0]) * 1e3,
            "runs": len(times), "calls_per_run": 1}


def peak_memory(fn: Callable[[], Any], ctx: Context) -> Optional[int]:
    """Bytes allocated at the peak of one call of fn beyond those allocated before it, or None
    where it cannot be measured."""
    if ctx.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity, profile
        with _filtered_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        allocations = []
        stack = list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            event = stack.pop()
            if event.tag == _EventType.Allocation:
                allocations.append((event.start_time_ns, int(event.extra_fields.alloc_size)))
            stack.extend(event.children)
    except Exception:
        return None
    allocations.sort()
    current = peak = 0
    for _, size in allocations:
        current += size
        peak = max(peak, current)
    return peak


@contextlib.contextmanager
def _filtered_stderr(drop: str = "USDT:") -> Iterator[None]:
    """Run with file descriptor 2 captured, then pass on every line but the profiler's
    start/stop chatter (lines starting with `drop`, written by the C++ side)."""
    import tempfile
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode(errors="replace").splitlines(keepends=True)
                    if not line.startswith(drop)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


PEAK_MEMORY_METHOD = {
    "cuda": "torch.cuda.max_memory_allocated during one fwd+bwd call, minus memory_allocated before it",
    "cpu": "peak of the running sum of the allocation events of torch.profiler(profile_memory=True) during one "
           "fwd+bwd call (torch's CPU allocator only); None where the profiler could not say",
}


@contextlib.contextmanager
def precision_context(p: Precision, device: str) -> Iterator[None]:
    """TF32 on or off for CUDA matmuls and cuDNN convolutions (float32 means IEEE float32:
    cuDNN's TF32 default is turned off too), restored afterwards. No-op on CPU."""
    if device != "cuda":
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    value = "tf32" if p.tf32 else "ieee"
    try:  # the fp32_precision API (torch >= 2.9); mixing it with allow_tf32 raises, so one or the other
        old = (matmul.fp32_precision, cudnn.conv.fp32_precision)
        new_api = True
    except (AttributeError, RuntimeError):
        old = (matmul.allow_tf32, cudnn.allow_tf32)
        new_api = False
    try:
        if new_api:
            matmul.fp32_precision, cudnn.conv.fp32_precision = value, value
        else:
            matmul.allow_tf32, cudnn.allow_tf32 = p.tf32, p.tf32
        yield
    finally:
        if new_api:
            matmul.fp32_precision, cudnn.conv.fp32_precision = old
        else:
            matmul.allow_tf32, cudnn.allow_tf32 = old


def autocast(p: Precision, device: str) -> contextlib.AbstractContextManager:
    if p.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=p.autocast)


@contextlib.contextmanager
def use_backend(name: Optional[str]) -> Iterator[None]:
    previous = ttfs_ext.get_backend()
    ttfs_ext.set_backend(name)
    try:
        yield
    finally:
        ttfs_ext.set_backend(previous)


def compile_fresh(fn: Callable) -> Callable:
    torch._dynamo.reset()  # fresh caches: no recompile limit across shapes, no stale guards
    return torch.compile(fn, dynamic=False)


@contextlib.contextmanager
def _compile_config() -> Iterator[None]:
    """Compiled backward graphs keep their saved tensors (donated buffers would forbid the
    retain_graph that times the backward pass alone)."""
    try:
        import torch._functorch.config as functorch_config
        patch = functorch_config.patch(donated_buffer=False) if hasattr(functorch_config, "donated_buffer") \
            else contextlib.nullcontext()
    except ImportError:
        patch = contextlib.nullcontext()
    with patch:
        yield


def no_grad(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with torch.no_grad():
            return fn()
    return run


def release_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


Forward = Callable[[], torch.Tensor]
Backward = Callable[[torch.Tensor, bool], Any]


# A timed block holds enough calls to last this long, so that a synchronisation and the timer
# weigh little against it.
BLOCK_SECONDS = 2e-3


def _block(fn: Callable[[], Any], calls: int, ctx: Context) -> float:
    """Seconds per call of `calls` back-to-back calls of fn (synchronised before and after)."""
    ctx.sync()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    ctx.sync()
    return (time.perf_counter() - start) / calls


def _quantiles(values: Sequence[float]) -> dict[str, Any]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {"median_ms": statistics.median(values) * 1e3, "iqr_ms": (q[2] - q[0]) * 1e3,
            "min_ms": min(values) * 1e3, "max_ms": max(values) * 1e3}


Key = Any  # a hashable name of a timed call


def time_paired(calls: dict[Key, Callable[[], Any]], ctx: Context,
                on_error: Optional[Callable[[Key, BaseException], Sequence[Key]]] = None) -> dict[Key, list[float]]:
    """Seconds per call of every function, one sample per cycle. After ctx.warmup calls each
    function gets a block size (BLOCK_SECONDS of calls, or one call); a cycle then times one
    block of every function back to back, in an order reversed from cycle to cycle, so that
    interference lasting longer than a cycle hits every function of it alike (compare them with
    paired_ratio). Cycles run until every function had ctx.min_run_time, and at least
    ctx.rounds of them. Where a function raises, on_error(key, err) names the keys to stop
    timing (without on_error it raises); the samples of the others stay aligned by cycle."""
    block: dict[Key, int] = {}
    live = dict(calls)

    def failed(key: Key, err: BaseException) -> None:
        if on_error is None:
            raise err
        for k in on_error(key, err):
            live.pop(k, None)

    for key, fn in calls.items():
        if key not in live:
            continue
        try:
            seconds = 0.0
            for _ in range(max(1, ctx.warmup)):
                seconds = _block(fn, 1, ctx)
                if seconds > ctx.min_run_time:
                    break
            block[key] = max(1, int(BLOCK_SECONDS / max(seconds, 1e-9)))
        except Exception as err:
            failed(key, err)
    samples: dict[Key, list[float]] = {key: [] for key in live}
    budget = ctx.min_run_time * len(live)
    spent, cycle = 0.0, 0
    while live and (cycle < max(1, ctx.rounds) or spent < budget):
        start = time.perf_counter()
        keys = list(live)
        for key in keys if cycle % 2 == 0 else keys[::-1]:
            if key not in live:
                continue
            try:
                samples[key].append(_block(live[key], block[key], ctx))
            except Exception as err:
                failed(key, err)
        spent += time.perf_counter() - start
        cycle += 1
    return {key: samples[key] for key in live}


def time_interleaved(builders: dict[str, Callable[[], tuple[Forward, Backward]]], ctx: Context
                     ) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, Optional[int]],
                                dict[str, dict[str, list[float]]]]:
    """Times fwd, fwd+bwd and bwd of every implementation (builders: name -> () -> (fwd, grad))
    with time_paired: an implementation's time is the median over cycles, a ratio of two the
    median of their per-cycle ratios (paired_ratio). bwd is the backward alone, with
    retain_graph on one forward, or where the graph cannot be kept the per-cycle difference
    fwd+bwd - fwd. An implementation that fails (to build, compile or run) is recorded as n/a
    with the reason. Returns (times[mode][impl], bwd method per implementation, peak memory of
    one fwd+bwd per implementation, seconds per call samples[mode][impl], one per cycle)."""
    times: dict[str, dict[str, Any]] = {mode: {} for mode in MODES}
    methods: dict[str, str] = {}
    memory: dict[str, Optional[int]] = {}
    live: dict[str, tuple[Forward, Backward]] = {}
    graphs: dict[str, Any] = {}  # per implementation one forward, its graph kept for the timed backward passes
    calls: dict[tuple[str, str], Callable[[], Any]] = {}

    def fail(impl: str, err: BaseException) -> list[tuple[str, str]]:
        live.pop(impl, None)
        graphs.pop(impl, None)
        methods.pop(impl, None)
        for mode in MODES:
            times[mode][impl] = unavailable(err)
        memory[impl] = None
        return [(impl, mode) for mode in MODES]

    def on_error(key: tuple[str, str], err: BaseException) -> list[tuple[str, str]]:
        impl, mode = key
        if mode == "bwd" and isinstance(err, RuntimeError):  # the graph cannot be kept
            methods[impl] = "difference"
            graphs.pop(impl, None)
            return [key]
        return fail(impl, err)

    with _compile_config():
        for impl, build in builders.items():
            try:
                fwd, grad = live[impl] = build()
                graphs[impl] = fwd()
            except Exception as err:  # compile set-up failures, out of memory, ...
                fail(impl, err)
                continue
            methods[impl] = "retain_graph"
            calls[impl, "fwd"] = fwd
            calls[impl, "fwd+bwd"] = lambda fwd=fwd, grad=grad: grad(fwd(), False)
            calls[impl, "bwd"] = lambda impl=impl, grad=grad: grad(graphs[impl], True)
        timed = time_paired(calls, ctx, on_error)
        graphs.clear()
        samples: dict[str, dict[str, list[float]]] = {mode: {} for mode in MODES}
        for (impl, mode), values in timed.items():  # only implementations still live
            samples[mode][impl] = values
        for impl, (fwd, grad) in list(live.items()):
            if methods[impl] == "difference":
                samples["bwd"][impl] = [max(fb - f, 1e-9) for fb, f in
                                        zip(samples["fwd+bwd"][impl], samples["fwd"][impl])]
            for mode in MODES:
                times[mode][impl] = {**_quantiles(samples[mode][impl]), "cycles": len(samples[mode][impl])}
            try:
                memory[impl] = peak_memory(lambda fwd=fwd, grad=grad: grad(fwd(), False), ctx)
            except Exception:
                memory[impl] = None
    live.clear()
    release_memory(ctx.device)
    return times, methods, memory, samples


def paired_ratio(samples: dict[str, list[float]], num: Sequence[str], den: Sequence[str]) -> Optional[float]:
    """The median over cycles of (the fastest of `num`) / (the fastest of `den`) in the same
    cycle; None where either side has no samples."""
    nums = [samples[i] for i in num if samples.get(i)]
    dens = [samples[i] for i in den if samples.get(i)]
    if not nums or not dens:
        return None
    return statistics.median(min(a) / min(b) for a, b in zip(zip(*nums), zip(*dens)))

