"""Time the TTFS dense and conv2d layers: compiled kernel vs pure-PyTorch reference vs the
ReLU twin (F.linear/F.conv2d + relu on activations x = t_min - t_in, same shapes).

    python benchmarks/bench_layers.py [--device cpu|cuda] [--dtype float32|float64] [--quick]

Times come from paired cycles (ttfs_ext.bench.time_paired: one block of calls of every
implementation and mode back to back, synchronised; medians over the cycles) and every ratio
is the median of the per-cycle ratios. The NaN/inf data check of ttfs_ext is turned off
while timing. FLOPs count only the GEMM-like part (2*M*N*K forward; 3x that for
forward+backward); bytes are a lower bound (each tensor read or written once), so GFLOP/s and
GB/s show how far each run is from the floor.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

import ttfs_ext
from ttfs_ext import functional as TF
from ttfs_ext.bench import Context, device_name, paired_ratio, time_paired
from suite.host import tune_cpu_allocator  # benchmarks/suite: this script's folder is on sys.path

T_MIN, WIDTH = 1.0, 10.0
T_MAX = T_MIN + WIDTH
IMPLS = ("kernel", "reference", "relu")


@dataclass
class Case:
    name: str
    kind: str                      # "linear" or "conv2d"
    t_shape: tuple[int, ...]       # input spike times
    w_shape: tuple[int, ...]       # weight, as in nn.Linear / nn.Conv2d
    padding: int = 0

    def gemm(self) -> tuple[int, int, int]:
        """(M, N, K) of the equivalent GEMM (im2col for conv2d, stride 1)."""
        if self.kind == "linear":
            return self.t_shape[0], self.w_shape[0], self.w_shape[1]
        n, _, h, w = self.t_shape
        c_out, c_in, kh, kw = self.w_shape
        h_out, w_out = h + 2 * self.padding - kh + 1, w + 2 * self.padding - kw + 1
        return n * h_out * w_out, c_out, c_in * kh * kw


def cases(quick: bool) -> list[Case]:
    if quick:
        return [Case("dense 64x128->64", "linear", (64, 128), (64, 128)),
                Case("conv 4x16->16 8x8 k3", "conv2d", (4, 16, 8, 8), (16, 16, 3, 3), padding=1)]
    return [Case("dense 256x784->512", "linear", (256, 784), (512, 784)),
            Case("dense 1024x1024->1024", "linear", (1024, 1024), (1024, 1024)),
            Case("conv 32x64->64 32x32 k3", "conv2d", (32, 64, 32, 32), (64, 64, 3, 3), padding=1)]


Fn = Callable[..., torch.Tensor]


def make_fns(case: Case, device: str, dtype: torch.dtype) -> tuple[dict[str, Fn], list[torch.Tensor]]:
    """Per implementation, a function of (input, weight, bias); and the shared tensors."""
    gen = torch.Generator().manual_seed(0)
    fan_in = case.gemm()[2]
    t_in = torch.rand(case.t_shape, generator=gen, dtype=dtype)          # spike times in [0, 1]
    w = torch.randn(case.w_shape, generator=gen, dtype=dtype) / fan_in ** 0.5
    b = 0.1 * torch.randn(case.w_shape[0], generator=gen, dtype=dtype)
    tensors = [x.to(device) for x in (t_in, w, b)]
    if case.kind == "linear":
        fns = {"kernel": lambda t, w, b: TF.linear(t, w, b, T_MIN, T_MAX, backend=device),
               "reference": lambda t, w, b: TF.linear(t, w, b, T_MIN, T_MAX, backend="reference"),
               "relu": lambda x, w, b: F.relu(F.linear(x, w, b))}
    else:
        p = case.padding
        fns = {"kernel": lambda t, w, b: TF.conv2d(t, w, b, T_MIN, T_MAX, padding=p, backend=device),
               "reference": lambda t, w, b: TF.conv2d(t, w, b, T_MIN, T_MAX, padding=p, backend="reference"),
               "relu": lambda x, w, b: F.relu(F.conv2d(x, w, b, padding=p))}
    return fns, tensors


def check(fns: dict[str, Fn], tensors: list[torch.Tensor]) -> dict[str, float]:
    """Kernel vs reference: values must be allclose (raises); gradient errors are reported."""
    dtype = tensors[0].dtype
    rtol, atol = (1e-4, 1e-4 * T_MAX) if dtype == torch.float32 else (1e-10, 1e-10 * T_MAX)
    outs, grads = {}, {}
    for impl in ("kernel", "reference"):
        leaves = [x.detach().clone().requires_grad_() for x in tensors]
        out = fns[impl](*leaves)
        grads[impl] = torch.autograd.grad(out, leaves, torch.ones_like(out))
        outs[impl] = out.detach()
    if not torch.allclose(outs["kernel"], outs["reference"], rtol=rtol, atol=atol):
        err = float((outs["kernel"] - outs["reference"]).abs().max())
        raise SystemExit(f"kernel and reference disagree: max abs error {err:.3g} (rtol={rtol}, atol={atol})")
    rel = lambda a, e: float((a - e).abs().max()) / max(1.0, float(e.abs().max()))  # noqa: E731
    return {"max_rel_err_out": rel(outs["kernel"], outs["reference"]),
            "max_rel_err_grad": max(rel(a, e) for a, e in zip(grads["kernel"], grads["reference"]))}


def bench(case: Case, device: str, dtype: torch.dtype, ctx: Context) -> list[dict[str, Any]]:
    fns, (t_in, w, b) = make_fns(case, device, dtype)
    errors = check(fns, [t_in, w, b])
    inputs = {"kernel": t_in, "reference": t_in, "relu": T_MIN - t_in}    # ReLU twin: activations
    m, n, k = case.gemm()
    size = t_in.element_size()
    io = (t_in.numel() + w.numel() + b.numel() + m * n) * size            # read t_in, W, b; write out
    calls = {}
    for impl in IMPLS:
        fn, x = fns[impl], inputs[impl]

        def fwd(fn=fn, x=x) -> Any:
            with torch.no_grad():
                return fn(x, w, b)
        leaves = [y.detach().clone().requires_grad_() for y in (x, w, b)]
        g = torch.ones(fn(*leaves).shape, dtype=dtype, device=device)

        def fwd_bwd(fn=fn, leaves=leaves, g=g) -> Any:
            return torch.autograd.grad(fn(*leaves), leaves, g)
        calls[impl, "fwd"], calls[impl, "fwd+bwd"] = fwd, fwd_bwd
    timed = time_paired(calls, ctx)
    rows = []
    for mode in ("fwd", "fwd+bwd"):
        flops = 2 * m * n * k * (1 if mode == "fwd" else 3)                   # bwd: grad_in + grad_W GEMMs
        nbytes = io if mode == "fwd" else 2 * io + m * n * size               # + read g, out; write grads
        samples = {impl: timed[impl, mode] for impl in IMPLS}
        ms = {impl: statistics.median(v) * 1e3 for impl, v in samples.items()}
        times = {impl: {"median_ms": ms[impl], "cycles": len(samples[impl])} for impl in IMPLS}
        rows.append({"case": case.name, "kind": case.kind, "mode": mode, "t_in_shape": list(case.t_shape),
                     "weight_shape": list(case.w_shape), "padding": case.padding, "gemm_mnk": [m, n, k],
                     "flops": flops, "min_bytes": nbytes, "times": times,
                     "gflops": {i: flops / ms[i] / 1e6 for i in IMPLS},
                     "gbytes_per_s": {i: nbytes / ms[i] / 1e6 for i in IMPLS},
                     "speedup_vs_reference": paired_ratio(samples, ["reference"], ["kernel"]),
                     "overhead_vs_relu": paired_ratio(samples, ["kernel"], ["relu"]), **errors})
    return rows


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'case':<24} {'mode':<8} {'kernel ms':>10} {'ref ms':>10} {'relu ms':>10} "
            f"{'ref/kern':>9} {'kern/relu':>9} {'kern GF/s':>10} {'relu GF/s':>10} {'kern GB/s':>10}")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        t = {i: r["times"][i]["median_ms"] for i in IMPLS}
        print(f"{r['case']:<24} {r['mode']:<8} {t['kernel']:>10.3f} {t['reference']:>10.3f} {t['relu']:>10.3f} "
              f"{r['speedup_vs_reference']:>8.2f}x {r['overhead_vs_relu']:>8.2f}x "
              f"{r['gflops']['kernel']:>10.1f} {r['gflops']['relu']:>10.1f} {r['gbytes_per_s']['kernel']:>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, short timing (smoke test)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op CPU threads")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default: benchmarks/results/layers_<device>.json)")
    args = parser.parse_args()
    if args.device not in ttfs_ext.kernel_devices():
        raise SystemExit(f"no compiled ttfs_ext kernel for {args.device!r}; status: {ttfs_ext.status()}")
    out = args.out or Path(__file__).parent / "results" / f"layers_{args.device}.json"
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(args.threads)
    cpu_allocator = tune_cpu_allocator() if args.device == "cpu" else None  # as the suite: no page-fault noise
    ttfs_ext.set_input_checks(False)  # the NaN/inf check reads the data (and syncs on a GPU)
    load = os.getloadavg()  # other work on the machine skews CPU timings: recorded before and after
    print(f"ttfs_ext {ttfs_ext.__version__} on {device_name(args.device)} ({args.device}, {args.dtype}, "
          f"{args.threads} threads), window [{T_MIN}, {T_MAX}], input checks off, load {load[0]:.2f}")
    ctx = Context(device=args.device, threads=args.threads, min_run_time=0.05 if args.quick else 0.5, warmup=2,
                  compile=False, precisions=[], reference_budget=0, rounds=2 if args.quick else 5)
    rows = [r for case in cases(args.quick) for r in bench(case, args.device, dtype, ctx)]
    print_table(rows)
    report = {"device": args.device, "device_name": device_name(args.device), "torch_version": torch.__version__,
              "ttfs_ext_status": ttfs_ext.status(), "git_commit": git_commit(), "dtype": args.dtype,
              "threads": args.threads, "loadavg_1min_before_after": [load[0], os.getloadavg()[0]],
              "quick": args.quick, "input_checks": False, "cpu_allocator": cpu_allocator, "window": [T_MIN, T_MAX],
              "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "notes": "medians over paired cycles, ratios the median of per-cycle ratios "
                       "(ttfs_ext.bench.time_paired); flops = 2*M*N*K GEMM part (x3 for fwd+bwd); min_bytes = "
                       "each tensor read/written once; relu = F.linear/F.conv2d + relu on x = t_min - t_in",
              "results": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
