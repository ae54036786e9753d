"""The element-wise CPU kernels one by one (linear's prologue/epilogue around its GEMM, fs_activation
forward and backward, the two spide neuron steps), one thread, median of 15 calls after warm-up:
for A/B comparisons of two builds, run alternately by two interpreters, as after the move of the
element math into csrc/kernels/element_math.h:

    python benchmarks/bench_element_kernels.py --ab OTHER_PYTHON --pairs 3 --json out.json

prints and writes each build's medians per pair (this interpreter's build is "new", OTHER's "old").
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time


def measure() -> dict:
    import torch

    import ttfs_ext
    from ttfs_ext import fs
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    n = 4_000_000
    t_in = torch.rand(64, n // 64, generator=g)
    w = torch.randn(256, n // 64, generator=g) * 0.01
    ops = torch.ops.ttfs_ext
    x, gy = torch.randn(n, generator=g), torch.randn(n, generator=g)
    tab = fs.FSActivation.relu(K=10)
    h, d, T = tab.h.float(), tab.d.float(), tab.T.float()
    u, rate, cur = torch.randn(n, generator=g), torch.zeros(n), torch.randn(n, generator=g)
    cases = {
        "linear_fwd": lambda: ops.linear(t_in, w, None, 1.0, 3.0),
        "fs_fwd": lambda: ops.fs_activation(x, h, d, T, 0, False),
        "fs_bwd": lambda: ops._fs_activation_backward(gy, None, x, h, d, T, [True, True, True, True]),
        "spide_fwd": lambda: ops.spide_forward_step(u, rate, cur, None, None, 1.0, 1.0, 1.0),
        "spide_bwd": lambda: ops.spide_backward_step(u, rate, cur, None, None, None, 0.5, 1.0, 1.0, 1.0),
    }
    out = {}
    for name, fn in cases.items():
        for _ in range(3):
            fn()
        ts = []
        for _ in range(15):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        out[name] = sorted(ts)[len(ts) // 2]
    out["_cpu_isa"] = ttfs_ext.status()["cpu_isa"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ab", help="another interpreter whose ttfs_ext build is compared (run alternately)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one or not args.ab:
        print(json.dumps(measure()))
        return
    runs = []
    for _ in range(args.pairs):
        pair = {}
        for label, python in (("new", sys.executable), ("old", args.ab)):
            res = subprocess.run([python, __file__, "--one"], capture_output=True, text=True, check=True)
            pair[label] = json.loads(res.stdout.strip().splitlines()[-1])
        runs.append(pair)
        print(json.dumps(pair))
    ratios = {k: sorted(p["new"][k] / p["old"][k] for p in runs)[len(runs) // 2] for k in runs[0]["new"] if not k.startswith("_")}
    print("median new/old time ratio:", json.dumps({k: round(v, 3) for k, v in ratios.items()}))
    if args.json:
        import torch
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git_commit": commit or "unknown",
                "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
                "threads": 1, "note": "paired, alternated processes; median of 15 calls each"}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "pairs": runs, "median_new_over_old": ratios}, f, indent=1)


if __name__ == "__main__":
    main()
