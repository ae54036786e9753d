"""fs_activation: the fused kernel against the K-step loop of the reference (eager, and
torch.compile of the same loop) and against a plain copy of the tensor (the memory floor:
the fused forward reads x once and writes y once, as a copy does). Forward and
forward+backward, K = 10, 12, 16, 1M to 100M float32 elements (the copy both into a new
tensor, as the op writes its result, and into a kept one); and a converted CNN's
inference time against its ANN. Paired: in each cycle every implementation runs once, in
alternating order, and the ratios are per cycle (median over cycles), so that load from
other processes affects both sides. Writes benchmarks/results/fs_<device>.json.

Each fused kernel also runs in the code of every lower ISA this CPU can run (fused_x86-64-v3:
AVX2, fused_baseline: SSE2), paired in the same cycles; over_eager_loop is each one's speed-up
over the loop.

    python benchmarks/bench_fs.py [--device cpu] [--sizes 1e6,1e7,1e8] [--ks 10,12,16] [--cycles 5]
    THP_MEM_ALLOC_ENABLE=1 python benchmarks/bench_fs.py ...   # large tensors on 2 MB pages
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import ttfs_ext
from ttfs_ext import fs
from ttfs_ext.fs import reference as ref

from suite.host import ROOT, git

ops = torch.ops.ttfs_ext
C = ttfs_ext._backend._C


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def paired(fns: dict, device, cycles: int, min_time: float = 0.05) -> dict:
    """Median seconds per call of each fn, and per-cycle ratios to the first ('fused')."""
    reps = {}
    for name, fn in fns.items():  # warm up (compiles) and pick repetitions per timing
        fn()
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        dt = time.perf_counter() - t0
        reps[name] = max(1, int(min_time / max(dt, 1e-6)))
    times = {n: [] for n in fns}
    ratios = {n: [] for n in fns}
    names = list(fns)
    for c in range(cycles):
        order = names if c % 2 == 0 else names[::-1]
        cycle = {}
        for name in order:
            sync(device)
            t0 = time.perf_counter()
            for _ in range(reps[name]):
                fns[name]()
            sync(device)
            cycle[name] = (time.perf_counter() - t0) / reps[name]
            times[name].append(cycle[name])
        for name in names:
            ratios[name].append(cycle[name] / cycle[names[0]])
    out = {n: {"median_s": statistics.median(times[n]), "min_s": min(times[n]),
               "ratio_to_fused": statistics.median(ratios[n])} for n in names}
    if "eager_loop" in fns:  # every fused kernel's speed-up over the loop, per cycle (median)
        for n in names:
            if n.startswith("fused"):
                out[n]["over_eager_loop"] = statistics.median(e / f for e, f in zip(times["eager_loop"], times[n]))
    return out


def in_isa(isa: str, fn):
    """fn with the CPU loops in one ISA's code (x86-64-v4, x86-64-v3, baseline), as
    TTFS_EXT_CPU_ISA sets it for a process: the AVX2 and SSE2 figures on an AVX-512 machine."""
    def run():
        C._set_cpu_isa(isa)
        try:
            return fn()
        finally:
            C._set_cpu_isa(os.environ.get("TTFS_EXT_CPU_ISA", ""))
    return run


def other_isas(args) -> list[str]:
    """The ISAs below the one the loops run, which this CPU can run too (CPU only)."""
    if args.device != "cpu" or args.no_other_isas:
        return []
    order = ["x86-64-v4", "x86-64-v3", "baseline"]
    current = ttfs_ext.status()["cpu_isa"]
    return order[order.index(current) + 1:] if current in order else []


def loop_forward(x, h, d, T):
    return ref.fs_activation_full(x, h, d, T, 0, False)[0]


def activation_cases(args, device, dtype) -> list:
    results = []
    # One compiled graph per (K, size, grad mode): more than dynamo's default of 8 per function.
    for name in ("cache_size_limit", "recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 256)
    compiled = torch.compile(loop_forward, dynamic=False) if not args.no_compile else None
    for numel in args.sizes:
        gen = torch.Generator().manual_seed(0)
        x = (torch.randn(numel, generator=gen, dtype=dtype) * 1.5).to(device)
        y = torch.empty_like(x)
        elem = x.element_size()
        for K in args.ks:
            table = {10: fs.FSActivation.relu, 12: fs.FSActivation.sigmoid, 16: fs.FSActivation.silu}.get(K)
            act = table() if table else fs.FSActivation(*[torch.linspace(1, 0.1, K)] * 3)
            h, d, T = [p.to(device=device, dtype=dtype) for p in (act.h, act.d, act.T)]
            # correctness first
            n_check = min(numel, 1 << 20)
            torch.testing.assert_close(ops.fs_activation(x[:n_check], h, d, T, 0, False)[0],
                                       loop_forward(x[:n_check], h, d, T), rtol=0, atol=0)
            # the floor, twice: a copy into a new tensor (what the op does: allocate y, read x,
            # write y) and into a kept one (no page faults of a fresh allocation)
            fwd = {"fused": lambda: ops.fs_activation(x, h, d, T, 0, False)}
            for isa in other_isas(args):
                fwd[f"fused_{isa}"] = in_isa(isa, fwd["fused"])
            fwd.update({"clone": lambda: x.clone(), "copy": lambda: y.copy_(x)})
            eager_bytes = numel * elem * 8  # the loop's live temporaries, roughly
            if numel <= args.max_eager and eager_bytes < args.memory_budget:
                fwd["eager_loop"] = lambda: loop_forward(x, h, d, T)
                if compiled is not None and (args.compile_sizes is None or numel in args.compile_sizes):
                    fwd["compiled_loop"] = lambda: compiled(x, h, d, T)
            with torch.no_grad():
                r = paired(fwd, device, args.cycles)
            for name, v in r.items():
                v["GB_per_s"] = 2 * numel * elem / v["median_s"] / 1e9  # read x, write y
            results.append({"mode": "forward", "numel": numel, "K": K, "dtype": str(dtype).split(".")[-1],
                            "fused_over_clone": 1 / r["clone"]["ratio_to_fused"],
                            "fused_over_copy": 1 / r["copy"]["ratio_to_fused"], "impls": r})
            print(json.dumps(results[-1]), flush=True)
            # forward + backward (x, h, d, T): the fused pair reads x twice, gy once, writes y, gx
            if numel > args.max_backward:
                continue
            xg = x.detach().requires_grad_()
            hg, dg, Tg = [p.detach().requires_grad_() for p in (h, d, T)]
            gy = torch.ones_like(x)

            def fused_fb():
                out = ops.fs_activation(xg, hg, dg, Tg, 0, False)[0]
                return torch.autograd.grad(out, (xg, hg, dg, Tg), gy)

            def eager_fb():
                out = ref.fs_activation_full(xg, hg, dg, Tg, 0, False)[0]
                return torch.autograd.grad(out, (xg, hg, dg, Tg), gy)
            fb = {"fused": fused_fb}
            for isa in other_isas(args):
                fb[f"fused_{isa}"] = in_isa(isa, fused_fb)
            saved_bytes = numel * elem * K * 5
            if saved_bytes < args.memory_budget:
                fb["eager_loop"] = eager_fb
                if compiled is not None and (args.compile_sizes is None or numel in args.compile_sizes):
                    def compiled_fb():
                        out = compiled(xg, hg, dg, Tg)
                        return torch.autograd.grad(out, (xg, hg, dg, Tg), gy)
                    fb["compiled_loop"] = compiled_fb
            r = paired(fb, device, args.cycles)
            for name, v in r.items():
                v["GB_per_s"] = 5 * numel * elem / v["median_s"] / 1e9
            results.append({"mode": "forward+backward", "numel": numel, "K": K, "dtype": str(dtype).split(".")[-1],
                            "impls": r})
            print(json.dumps(results[-1]), flush=True)
    return results


def network_case(args, device) -> dict:
    """The `ttfs fs` CNN on Fashion-MNIST-sized images (1x28x28), batch 256, inference."""
    from ttfs_ext.cli.fs import build_model
    out = {}
    for act in ("relu", "silu"):
        torch.manual_seed(0)
        model = build_model(act, (1, 28, 28), 10).to(device).eval()
        net = fs.convert(model, count_spikes=False).eval()
        x = torch.rand(256, 1, 28, 28, device=device)
        with torch.no_grad():
            r = paired({"fs": lambda: net(x), "ann": lambda: model(x)}, device, args.cycles)
        out[act] = {"batch": 256, "fs_s": r["fs"]["median_s"], "ann_s": r["ann"]["median_s"],
                    "fs_over_ann": 1.0 / r["ann"]["ratio_to_fused"]}
        print(act, json.dumps(out[act]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="1e6,1e7,1e8")
    ap.add_argument("--ks", default="10,12,16")
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--max-eager", type=float, default=1e8, help="largest numel for the loop")
    ap.add_argument("--max-backward", type=float, default=1e7, help="largest numel for forward+backward")
    ap.add_argument("--memory-budget", type=float, default=3e9, help="bytes the loop may hold")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile-sizes", default=None,
                    help="compile the loop only at these sizes (default: every size; each size and K compiles anew)")
    ap.add_argument("--no-network", action="store_true")
    ap.add_argument("--no-other-isas", action="store_true",
                    help="time only the ISA the loops run (default on CPU: also each lower one this CPU runs, "
                         "fused_x86-64-v3 for AVX2, fused_baseline for SSE2)")
    ap.add_argument("--no-input-checks", action="store_true",
                    help="time without the NaN/inf check of x (ttfs_ext.set_input_checks(False)); on CUDA the "
                         "check is a reduction over x and a host synchronisation per call")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.sizes = [int(float(s)) for s in args.sizes.split(",")]
    args.ks = [int(k) for k in args.ks.split(",")]
    if args.compile_sizes is not None:
        args.compile_sizes = {int(float(s)) for s in args.compile_sizes.split(",")}
    device = torch.device(args.device)
    if args.no_input_checks:
        ttfs_ext.set_input_checks(False)
    st = ttfs_ext.status()
    meta = {"date": datetime.datetime.utcnow().isoformat(timespec="seconds") + "Z", "git_commit": git("rev-parse", "HEAD"),
            "torch": torch.__version__, "ttfs_ext": ttfs_ext.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor(), "threads": torch.get_num_threads(),
            "cpu_isa": st["cpu_isa"], "device": args.device, "gpu": st["gpu"], "cycles": args.cycles,
            # PyTorch's CPU allocator takes 2 MB pages for large tensors when this is 1 (fewer faults)
            "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
            "input_checks": not args.no_input_checks, "compile": not args.no_compile,
            "compile_sizes": sorted(args.compile_sizes) if args.compile_sizes else None,
            # the loops run only up to these sizes (their temporaries, and their time)
            "max_eager": args.max_eager, "max_backward": args.max_backward, "memory_budget": args.memory_budget,
            "note": "paired, alternated cycles; ratio_to_fused = time / fused time in the same cycle (median)"}
    result = {"meta": meta, "activation": activation_cases(args, device, torch.float32)}
    if not args.no_network:
        result["network"] = network_case(args, device)
    out = args.out or str(ROOT / "benchmarks" / "results" / f"fs_{device.type}.json")
    with open(out, "w") as fh:
        json.dump(result, fh, indent=2)
    print("wrote", out)


if __name__ == "__main__":
    main()
