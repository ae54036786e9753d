"""Where the CPU one-pass kernels of linear layers pay: the linear op's forward and backward
against the ReLU twin's, over weight sizes and row counts (benchmarks/NOTES.md, v4).

    python benchmarks/bench_one_pass.py            # ~5 min on 2 cores
    python benchmarks/bench_one_pass.py --quick    # seconds: checks the script
    python benchmarks/bench_one_pass.py --isa x86-64-v3   # the AVX2 code on an AVX-512 CPU

The ops are called directly (torch.ops.ttfs_ext.linear and _linear_backward: no Python layer
on top); the twin's forward is relu(F.linear(x, W, b)), its backward what autograd runs for
it: threshold_backward, grad_in = g W, grad_w = g^T x, grad_b = sum(g). Every (shape, rows)
case times the four functions in paired cycles (ttfs_ext.bench.time_paired: medians over the
cycles; a ratio is the median of the per-cycle ratios). The policy in force
(ttfs_ext.status()["cpu_dense_one_pass"]) is recorded with each case, so the table shows the
one-pass cases next to the vendor-GEMM ones. With --isa, the kernels run that ISA's code
(vector width and blocking) on any CPU that can: the vendor GEMMs of the twin keep the CPU's
own. Writes benchmarks/results/one_pass_cpu.json
(one_pass_cpu_<isa>.json with --isa).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

import ttfs_ext
from ttfs_ext.bench import Context, environment, paired_ratio, time_paired

T_MIN, T_MAX = 1.0, 11.0
# (in_features, out_features): 1 MB (FC2) to 400 MB (VGG16's first dense layer) in float32
SHAPES = [(784, 340), (1024, 1024), (2048, 2048), (4096, 4096), (25088, 4096)]
ROWS = [1, 8, 16, 32, 64]
QUICK_SHAPES, QUICK_ROWS = [(256, 64), (2048, 2051)], [1, 3]  # the second weight is over 16 MiB


def _functions(n_in: int, n_out: int, rows: int) -> dict[str, Callable[[], Any]]:
    gen = torch.Generator().manual_seed(0)
    t = torch.rand(rows, n_in, generator=gen)
    w = torch.randn(n_out, n_in, generator=gen) / n_in ** 0.5
    b = 0.1 * torch.randn(n_out, generator=gen)
    x = T_MIN - t
    t_out = torch.ops.ttfs_ext.linear(t, w, b, T_MIN, T_MAX)
    act = T_MAX - t_out
    torch.testing.assert_close(act, F.relu(F.linear(x, w, b)), rtol=1e-4, atol=1e-4)  # the twin's values
    g = torch.randn(rows, n_out, generator=gen)
    backward = torch.ops.ttfs_ext._linear_backward.default

    def twin_backward() -> None:
        gm = torch.ops.aten.threshold_backward(g, act, 0.0)
        torch.mm(gm, w), torch.mm(gm.t(), x), gm.sum(0)

    return {"kernel_fwd": lambda: torch.ops.ttfs_ext.linear(t, w, b, T_MIN, T_MAX),
            "twin_fwd": lambda: F.relu(F.linear(x, w, b)),
            "kernel_bwd": lambda: backward(g, t, w, t_out, T_MIN, T_MAX, [True, True, True]),
            "twin_bwd": twin_backward}


def measure(n_in: int, n_out: int, rows: int, ctx: Context) -> dict[str, Any]:
    fns = _functions(n_in, n_out, rows)
    samples = time_paired(fns, ctx)
    ms = {name: statistics.median(v) * 1e3 for name, v in samples.items()}
    policy = ttfs_ext.status()["cpu_dense_one_pass"] or {}
    weight_bytes = n_in * n_out * 4
    large = policy.get("enabled", False) and weight_bytes >= policy["min_weight_bytes"]
    return {"in_features": n_in, "out_features": n_out, "rows": rows, "weight_bytes": weight_bytes,
            "one_pass_forward": large and policy["min_rows"] <= rows <= policy["forward_max_rows"],
            "one_pass_backward": large and policy["min_rows"] <= rows <= policy["max_rows"],
            "median_ms": ms, "cycles": len(samples["kernel_fwd"]),
            "fwd_kernel/twin": paired_ratio(samples, ["kernel_fwd"], ["twin_fwd"]),
            "bwd_kernel/twin": paired_ratio(samples, ["kernel_bwd"], ["twin_bwd"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two small shapes, two row counts")
    parser.add_argument("--rounds", type=int, default=5, help="at least this many cycles per case")
    parser.add_argument("--min-run-time", type=float, default=1.5, help="seconds of timing per function and case")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--isa", choices=["x86-64-v4", "x86-64-v3", "baseline"], default=None,
                        help="run the one-pass kernels with this ISA's code (default: the CPU's)")
    args = parser.parse_args(argv)
    if not ttfs_ext.status()["compiled"]:
        print("bench_one_pass: the compiled extension is not loaded", file=sys.stderr)
        return 1
    from ttfs_ext import _backend

    _backend._C._set_one_pass_isa(args.isa or "")
    try:
        return _run(args)
    finally:
        _backend._C._set_one_pass_isa("")


def _run(args: argparse.Namespace) -> int:
    shapes, row_counts = (QUICK_SHAPES, QUICK_ROWS) if args.quick else (SHAPES, ROWS)
    rounds, min_run_time = (2, 0.02) if args.quick else (args.rounds, args.min_run_time)
    ctx = Context(device="cpu", threads=torch.get_num_threads(), min_run_time=min_run_time, warmup=1, compile=False,
                  precisions=[], reference_budget=0, rounds=rounds)
    results = []
    print(f"{'in x out':>12} {'rows':>4} {'one-pass':>9} {'fwd ms':>9} {'twin':>9} {'ratio':>6} "
          f"{'bwd ms':>9} {'twin':>9} {'ratio':>6}")
    for n_in, n_out in shapes:
        for rows in row_counts:
            with torch.no_grad():
                r = measure(n_in, n_out, rows, ctx)
            results.append(r)
            ms = r["median_ms"]
            which = "/".join(k for k, on in (("fwd", r["one_pass_forward"]), ("bwd", r["one_pass_backward"])) if on)
            print(f"{n_in:>6}x{n_out:<5} {rows:>4} {which or '-':>9} {ms['kernel_fwd']:9.3f} {ms['twin_fwd']:9.3f} "
                  f"{r['fwd_kernel/twin']:6.3f} {ms['kernel_bwd']:9.3f} {ms['twin_bwd']:9.3f} {r['bwd_kernel/twin']:6.3f}",
                  flush=True)
    report = {"environment": environment("cpu", "quick" if args.quick else "one_pass", torch.get_num_threads()),
              "window": {"t_min": T_MIN, "t_max": T_MAX}, "dtype": "float32", "rounds": rounds,
              "min_run_time_s": min_run_time, "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = ("_quick" if args.quick else "") + (f"_{args.isa}" if args.isa else "")
    path = args.out / f"one_pass_cpu{suffix}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
