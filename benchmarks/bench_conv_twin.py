"""A TTFS conv layer against its ReLU twin, forward + backward, at VGG16's 3x3 shapes: the
kernel op (ttfs_ext.functional.conv2d, spike times in and out) against F.conv2d + ReLU on the
activations, same batch and weights, in {float32, bfloat16 autocast} x {NCHW, channels_last}.
Paired: every cycle runs both in alternating order; the ratio is per cycle (median).

Beside the times, the bytes each side must move (each tensor read or written once per pass,
the convolution's own traffic left out as it is the same on both sides), from the passes the
layer code makes (csrc/layers/conv2d.cpp): the floor the element-wise passes set.

    python benchmarks/bench_conv_twin.py [--batch 4] [--image-size 112] [--cycles 7]
        [--out benchmarks/results/conv_twin_cpu.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import ttfs_ext
from ttfs_ext import functional as TF

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite.host import ROOT, git, replace_between_markers  # noqa: E402

T_MIN, T_MAX = 1.0, 3.0
# (name, C_in, C_out, spatial divisor of the image size): VGG16's last conv of each block
LAYERS = [("conv1_2", 64, 64, 1), ("conv2_2", 128, 128, 2), ("conv3_3", 256, 256, 4), ("conv4_3", 512, 512, 8),
          ("conv5_3", 512, 512, 16)]


def passes_bytes(n: int, c_in: int, c_out: int, hw: int, low: bool) -> dict[str, int]:
    """Bytes of the element-wise passes around the convolution, forward + backward (the
    convolution's own traffic is the same on both sides and left out). m: the matrix dtype's
    size (2 under bfloat16 autocast), 4: float32 spike times."""
    m = 2 if low else 4
    a_in, a_out = n * c_in * hw, n * c_out * hw
    ttfs = ((4 + m) * a_in               # prologue: read t_in, write x
            + (m + 4) * a_out            # epilogue: read u (+bias), write t_out
            + (4 + 4 + m) * a_out        # backward gate: read grad_out and t_out, write the gated gradient
            + (4 + m) * a_in             # the delays t_in - t_min for the weight gradient
            + ((m + 4) * a_in if low else 0))  # the input gradient cast to float32
    # (the bias gradient: summed by the convolution's backward, on both sides)
    relu = (2 * m * a_out                # ReLU: read u, write y (the bias is fused in the convolution)
            + 3 * m * a_out)             # threshold_backward: read the gradient and y, write
    return {"ttfs": ttfs, "relu": relu}


def paired(fns: dict, cycles: int, min_time: float = 0.2) -> dict:
    reps = {}
    for name, fn in fns.items():
        fn()
        t0 = time.perf_counter()
        fn()
        reps[name] = max(1, int(min_time / max(time.perf_counter() - t0, 1e-6)))
    times = {n: [] for n in fns}
    names = list(fns)
    for c in range(cycles):
        for name in (names if c % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            for _ in range(reps[name]):
                fns[name]()
            times[name].append((time.perf_counter() - t0) / reps[name])
    ratio = statistics.median(r / t for t, r in zip(times["ttfs"], times["relu"]))
    return {"ttfs_ms": 1e3 * statistics.median(times["ttfs"]), "relu_ms": 1e3 * statistics.median(times["relu"]),
            "relu_over_ttfs_time": ratio}


def case(name, c_in, c_out, size, batch, low, channels_last, cycles) -> dict:
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    t_in = (T_MIN - 1.0 + torch.rand(batch, c_in, size, size, generator=g)).contiguous(memory_format=fmt)
    x = (T_MIN - t_in).detach().contiguous(memory_format=fmt)  # the twin's activations
    w = (torch.randn(c_out, c_in, 3, 3, generator=g) / (9 * c_in) ** 0.5).contiguous(memory_format=fmt)
    b = 0.1 * torch.randn(c_out, generator=g)
    leaves = {k: v.clone().requires_grad_() for k, v in (("t", t_in), ("x", x))}
    params = {k: (w.clone().requires_grad_(), b.clone().requires_grad_()) for k in ("ttfs", "relu")}
    gy = torch.randn(batch, c_out, size, size, generator=g).contiguous(memory_format=fmt)

    def ttfs():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
            out = TF.conv2d(leaves["t"], *params["ttfs"], T_MIN, T_MAX, padding=1)
        torch.autograd.grad(out, [leaves["t"], *params["ttfs"]], gy)

    def relu():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
            out = F.relu(F.conv2d(leaves["x"], *params["relu"], padding=1))
        torch.autograd.grad(out, [leaves["x"], *params["relu"]], gy)

    r = paired({"ttfs": ttfs, "relu": relu}, cycles)
    nbytes = passes_bytes(batch, c_in, c_out, size * size, low)
    return {"layer": name, "c_in": c_in, "c_out": c_out, "size": size, "batch": batch,
            "precision": "bf16" if low else "fp32", "layout": "channels_last" if channels_last else "NCHW",
            **r, "passes_bytes": nbytes}


def readme_table(report: dict) -> str:
    m = report["meta"]
    rows = ["| layer | C, H x W | precision | layout | TTFS ms | twin ms | twin / TTFS time "
            "| element-wise MB, TTFS / twin |", "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        b = r["passes_bytes"]
        rows.append(f"| {r['layer']} | {r['c_out']}, {r['size']}x{r['size']} | {r['precision']} | {r['layout']} | "
                    f"{r['ttfs_ms']:.1f} | {r['relu_ms']:.1f} | {r['relu_over_ttfs_time']:.3f} | "
                    f"{b['ttfs'] / 1e6:.1f} / {b['relu'] / 1e6:.1f} |")
    rows += ["", f"Forward + backward of one layer, batch {m['batch']} at VGG16's {m['image_size']}x{m['image_size']} "
                 f"scale, {m['threads']} threads ({m['cpu_isa']}), torch {m['torch']}, commit "
                 f"{(m['git_commit'] or '?')[:7]}, {m['cycles']} paired cycles (median of per-cycle ratios); "
                 "`benchmarks/results/conv_twin_cpu.json`."]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--cycles", type=int, default=7)
    ap.add_argument("--layers", default=",".join(n for n, *_ in LAYERS))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "conv_twin_cpu.json")
    ap.add_argument("--readme", action="store_true", help="write the table of --out into README.md and exit")
    args = ap.parse_args()
    if args.readme:
        ok = replace_between_markers(ROOT / "README.md", "<!-- conv-twin:begin -->", "<!-- conv-twin:end -->",
                                     readme_table(json.loads(args.out.read_text())))
        print("README table updated:", ok)
        return
    ttfs_ext.set_input_checks(False)  # as the twin: no NaN/inf check (it costs a reduction on CUDA)
    rows = []
    for name, c_in, c_out, div in LAYERS:
        if name not in args.layers.split(","):
            continue
        for low in (False, True):
            for cl in (False, True):
                rows.append(case(name, c_in, c_out, args.image_size // div, args.batch, low, cl, args.cycles))
                r = rows[-1]
                print(f"{name} {r['precision']} {r['layout']}: ttfs {r['ttfs_ms']:.2f} ms, relu {r['relu_ms']:.2f} "
                      f"ms, relu/ttfs time {r['relu_over_ttfs_time']:.3f}; passes MB ttfs "
                      f"{r['passes_bytes']['ttfs'] / 1e6:.1f} relu {r['passes_bytes']['relu'] / 1e6:.1f}", flush=True)
    st = ttfs_ext.status()
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": git("rev-parse", "HEAD"), "torch": torch.__version__, "ttfs_ext": ttfs_ext.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(), "cpu_isa": st["cpu_isa"],
            "cycles": args.cycles, "batch": args.batch, "image_size": args.image_size,
            "note": "forward+backward per layer, paired alternated cycles; relu_over_ttfs_time = twin time / TTFS "
                    "time per cycle (median), >= 1: the TTFS layer is as fast as its twin"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
